/**
 * Process-tree kill. Every child starts as the leader of a session and
 * process group of its own (spawned through the util-linux `setsid` helper,
 * or with `Deno.Command`'s `detached: true`, which calls `setsid()` after a
 * fork), so its descendants share its process group id. Deno lets a
 * scoped `--allow-run` signal only its own `ChildProcess`; signalling a group
 * (`Deno.kill(-pgid)`) needs the unscoped grant. outpost therefore signals
 * groups through the `kill` helper program (`kill -TERM -- -PGID`) when the
 * operator grants it (`--allow-run=kill`), and falls back to signalling the
 * direct child only, reporting `treeKill: false`.
 *
 * Job control moves a program's jobs to groups of their own (a terminal's
 * shell; `bash -c 'set -m; …'` without one), but never out of its session
 * (a terminal's, else the program's own): outpost also signals every group
 * of that session, found by the `ps` helper ({@linkcode sessionsGroups};
 * `SessionSweeper` batches the listings) when it is granted
 * (`--allow-run=ps`), else in `/proc`, which Deno lets only `--allow-all` read.
 *
 * What that does not reach: a descendant that started a session of its own
 * (`setsid`). The `os` level closes that gap: bubblewrap's pid namespace dies
 * with it, taking every process inside along.
 *
 * @module
 */

import { isGrantedValue } from "./_permissions.ts";
import { concatBytes } from "../_bytes.ts";
import { runQuietly } from "./_run_quietly.ts";

/**
 * Signals whole process groups through the `kill` helper.
 *
 * @param helper The absolute path of the granted `kill` program.
 * @param pgids Process group ids (each must be greater than 1).
 * @param signal The signal.
 * @returns True when the helper reported success (at least one group signalled).
 * @throws {RangeError} When a pgid is not an integer greater than 1 (0 and 1 would hit the caller's own group or every process).
 * @example
 * ```ts ignore
 * import { killProcessGroups } from "./tree_kill.ts";
 * await killProcessGroups("/usr/bin/kill", [12345], "SIGTERM");
 * ```
 */
export async function killProcessGroups(
  helper: string,
  pgids: readonly number[],
  signal: Deno.Signal,
): Promise<boolean> {
  checkIds(pgids, "process group");
  if (pgids.length === 0) return false;
  return await runQuietly(helper, [signalFlag(signal), "--", ...pgids.map((pgid) => `-${pgid}`)]);
}

/** The most pids one run of the `kill` helper is given (keeps its argv small). */
export const MAX_PIDS_PER_KILL = 1024;

/**
 * Signals single processes through the `kill` helper, at most
 * {@linkcode MAX_PIDS_PER_KILL} per run. Pids that are gone by now are
 * skipped quietly.
 *
 * @param helper The absolute path of the granted `kill` program.
 * @param pids Process ids (each must be greater than 1).
 * @param signal The signal.
 * @throws {RangeError} When a pid is not an integer greater than 1.
 * @example
 * ```ts ignore
 * import { killProcesses } from "./tree_kill.ts";
 * await killProcesses("/usr/bin/kill", [12345, 12346], "SIGKILL");
 * ```
 */
export async function killProcesses(
  helper: string,
  pids: readonly number[],
  signal: Deno.Signal,
): Promise<void> {
  checkIds(pids, "process");
  for (let i = 0; i < pids.length; i += MAX_PIDS_PER_KILL) {
    const batch = pids.slice(i, i + MAX_PIDS_PER_KILL).map(String);
    await runQuietly(helper, [signalFlag(signal), "--", ...batch]);
  }
}

/**
 * The processes of session `sid`, from one run of the `ps` helper (every
 * process's pid, group and session: numbers only, so no process can forge a
 * row through its name). A pid is not reused while a process still carries
 * it as its session id, so every match belongs to that very session. Pid 1
 * and the executor are never listed, and nothing is when the executor itself
 * belongs to the session.
 *
 * `ps` rather than reading `/proc`: Deno 2 refuses every `/proc` read without
 * `--allow-all`, whatever `--allow-read` says. Without `ps`, `/proc` is read,
 * which works under `--allow-all` only.
 *
 * @param ps The granted `ps` program, or null to read `/proc` instead.
 * @param sid The session id (greater than 1).
 * @returns The pids, or null when neither `ps` nor `/proc` could list them.
 * @throws {RangeError} When `sid` is not an integer greater than 1.
 * @example
 * ```ts ignore
 * import { sessionPids } from "./tree_kill.ts";
 * console.log(await sessionPids("/usr/bin/ps", 12345)); // e.g. [12345, 12350]
 * ```
 */
export async function sessionPids(ps: string | null, sid: number): Promise<number[] | null> {
  const members = await sessionMembers(ps, [sid]);
  return members === null ? null : members.map((row) => row.pid);
}

/**
 * The process groups of several sessions, from one listing (see
 * {@linkcode sessionPids}). A group never spans two sessions, so a group
 * kill of each reaches every member once, a child forked after the scan
 * into one of them included.
 *
 * @param ps The granted `ps` program, or null to read `/proc` instead.
 * @param sids The session ids (each greater than 1).
 * @returns Each listed session's group ids (a session with no process is
 *   missing), or null when neither `ps` nor `/proc` could list them.
 * @throws {RangeError} When a session id is not an integer greater than 1.
 */
export async function sessionsGroups(
  ps: string | null,
  sids: readonly number[],
): Promise<Map<number, number[]> | null> {
  const members = await sessionMembers(ps, sids);
  if (members === null) return null;
  const groups = new Map<number, Set<number>>();
  for (const row of members) {
    if (row.pgid <= 1) continue;
    let ofSession = groups.get(row.sid);
    if (ofSession === undefined) groups.set(row.sid, ofSession = new Set());
    ofSession.add(row.pgid);
  }
  return new Map([...groups].map(([sid, ofSession]) => [sid, [...ofSession]]));
}

async function sessionMembers(
  ps: string | null,
  sids: readonly number[],
): Promise<ProcessRow[] | null> {
  checkIds(sids, "session");
  if (sids.length === 0) return [];
  const rows = await listProcesses(ps);
  if (rows === null) return null;
  const wanted = new Set(sids);
  // A session that holds the executor itself is never ours to end.
  const ours = new Set(rows.filter((row) => row.pid === Deno.pid).map((row) => row.sid));
  return rows.filter((row) => wanted.has(row.sid) && !ours.has(row.sid) && row.pid > 1);
}

/** The process groups and session an ended program had, and when its leader exited. */
export interface EndedProgramGroups {
  /** Its process groups (their leaders' pids). */
  readonly groups: readonly number[];
  /** Its session (a terminal's, else its own: the session leader's pid), or null. */
  readonly session: number | null;
  /** How long ago its leader exited, in ms of a monotonic clock. */
  readonly exitedAgoMs: number;
}

/**
 * What ended programs left in their process groups and sessions:
 * the members of each group (or session) whose leader's pid no process has,
 * provided one of them started no later than a second after the leader
 * exited. A group or session id is reused only once it has emptied, which is
 * not before its leader exits, so such a member proves it never did: the
 * group is still the program's, and every member is a descendant (a
 * leftover's later workers too). A group that emptied and went to a newcomer
 * holds only processes started after that (pids do not wrap around within a
 * second), and is left alone. One process listing for all; pid 1, the executor, and groups or
 * sessions the executor belongs to are never listed.
 *
 * @param ps The granted `ps` program, or null to read `/proc` instead.
 * @param programs The ended programs.
 * @returns The pids, or null when neither `ps` nor `/proc` could list them.
 */
export async function leftoverPids(
  ps: string | null,
  programs: readonly EndedProgramGroups[],
): Promise<number[] | null> {
  if (programs.length === 0) return [];
  const rows = await listProcesses(ps, true);
  if (rows === null) return null;
  const live = new Set(rows.map((row) => row.pid));
  const own = rows.find((row) => row.pid === Deno.pid);
  /** Group (or session) id -> the fewest seconds a member proving it ours has run. */
  const groups = new Map<number, number>();
  const sessions = new Map<number, number>();
  const note = (ids: Map<number, number>, id: number, exitedAgoMs: number, ownId?: number) => {
    if (id <= 1 || live.has(id) || id === ownId) return;
    const seconds = Math.floor(exitedAgoMs / 1000);
    ids.set(id, Math.min(ids.get(id) ?? Infinity, seconds));
  };
  for (const program of programs) {
    for (const id of program.groups) note(groups, id, program.exitedAgoMs, own?.pgid);
    if (program.session !== null) note(sessions, program.session, program.exitedAgoMs, own?.sid);
  }
  const proven = (ids: Map<number, number>, idOf: (row: ProcessRow) => number) => {
    const ours = new Set<number>();
    for (const row of rows) {
      const seconds = ids.get(idOf(row));
      if (seconds !== undefined && (row.elapsedS ?? -1) >= seconds) ours.add(idOf(row));
    }
    return ours;
  };
  const ourGroups = proven(groups, (row) => row.pgid);
  const ourSessions = proven(sessions, (row) => row.sid);
  return rows
    .filter((row) => ourGroups.has(row.pgid) || ourSessions.has(row.sid))
    .map((row) => row.pid)
    .filter((pid) => pid > 1 && pid !== Deno.pid);
}

/**
 * The foreground process group of the terminal that session `sid` controls
 * (`ps`'s `tpgid` of its leader): where the terminal's Ctrl-C goes. Null
 * when it cannot be told or the session has no terminal.
 *
 * @param ps The granted `ps` program, or null to read `/proc` instead.
 * @param sid The session id (its leader's pid, greater than 1).
 * @returns The process group id, or null.
 */
export async function foregroundGroup(ps: string | null, sid: number): Promise<number | null> {
  checkIds([sid], "session");
  const leader = (await listProcesses(ps))?.find((row) => row.pid === sid);
  if (leader === undefined || leader.sid !== sid) return null;
  return leader.tpgid > 1 ? leader.tpgid : null;
}

/**
 * How long a `ps` listing may take before it counts as none: the kills
 * that wait for it, and a close that waits for them, are held up by a `ps`
 * that hangs for this long a batch, not for ever. A listing takes
 * milliseconds on a quiet machine, and a review measured up to 1.6 s with
 * 2,800 processes on a loaded one.
 */
export const PS_DEADLINE_MS = 5_000;

/** One process as `ps` lists it. */
interface ProcessRow {
  pid: number;
  pgid: number;
  sid: number;
  /** The foreground group of its controlling terminal; -1 without one. */
  tpgid: number;
  /** Whole seconds since it started (only when asked for). */
  elapsedS?: number;
}

/**
 * Every process, from `ps`, or when it is missing from `/proc` (`elapsed`:
 * with each one's `etimes`). Null when neither can be read.
 */
async function listProcesses(ps: string | null, elapsed = false): Promise<ProcessRow[] | null> {
  const rows = ps === null ? undefined : await runPs(ps, elapsed);
  // A `ps` that prints something else (one without `etimes`: procps before
  // 3.3) leaves `/proc`, readable under `--allow-all`.
  return rows === undefined || (rows === null && elapsed) ? await readProc(elapsed) : rows;
}

/**
 * The rows from `ps`; null when it prints something else, undefined when it
 * cannot be run (not installed: a whole run grant resolves a missing program
 * to its bare name).
 */
async function runPs(ps: string, elapsed: boolean): Promise<ProcessRow[] | null | undefined> {
  const columns = ["-o", `pid=,pgid=,sid=,tpgid=${elapsed ? ",etimes=" : ""}`];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(ps, {
      args: ["-e", ...columns],
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn();
  } catch {
    return undefined;
  }
  // Read through a reader, so a `ps` that hangs can be let go of: a child
  // of it may hold the pipe open after it is killed.
  const reader = child.stdout.getReader();
  const chunks: Uint8Array[] = [];
  const reading = (async () => {
    for (let next = await reader.read(); !next.done; next = await reader.read()) {
      chunks.push(next.value);
    }
    return await child.status;
  })();
  const status = await withinMs(reading, PS_DEADLINE_MS);
  if (status === undefined) {
    // A hung `ps` counts as no listing: killed, its output let go, its exit
    // waited for a moment (one stuck in the kernel cannot die yet).
    try {
      child.kill("SIGKILL");
    } catch {
      // It ended meanwhile.
    }
    await reader.cancel().catch(() => {});
    await withinMs(reading.catch(() => {}), 1_000);
    return null;
  }
  if (!status.success) return null;
  const text = new TextDecoder().decode(concatBytes(chunks)).trim();
  const rows: ProcessRow[] = [];
  for (const line of text === "" ? [] : text.split("\n")) {
    const fields = line.trim().split(/\s+/).map(Number);
    if (fields.length !== (elapsed ? 5 : 4) || !fields.every(Number.isSafeInteger)) return null;
    const [rowPid, pgid, sid, tpgid, elapsedS] = fields;
    rows.push(
      elapsed ? { pid: rowPid, pgid, sid, tpgid, elapsedS } : { pid: rowPid, pgid, sid, tpgid },
    );
  }
  return rows;
}

/**
 * The rows from `/proc/PID/stat` (one file per process, read whole, the
 * fields taken after the name's last `)`, so no name can forge them). Deno
 * allows that only under `--allow-all`; null when it refuses.
 */
async function readProc(elapsed: boolean): Promise<ProcessRow[] | null> {
  // Asked first: reading without the grant would stop an executor run from a
  // terminal at Deno's permission prompt.
  if (!(await isGrantedValue({ name: "read", path: "/proc" }))) return null;
  const rows: ProcessRow[] = [];
  try {
    // Seconds since boot, as `ps` computes `etimes` (start times are in clock ticks, 100 a second).
    const uptime = elapsed ? Number((await Deno.readTextFile("/proc/uptime")).split(" ")[0]) : 0;
    const pids: number[] = [];
    for await (const entry of Deno.readDir("/proc")) {
      if (/^\d+$/.test(entry.name)) pids.push(Number(entry.name));
    }
    for (const each of pids) {
      let stat: string;
      try {
        stat = await Deno.readTextFile(`/proc/${each}/stat`);
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) continue; // it exited, or never was
        throw error;
      }
      // After the name: state, ppid, pgrp, session, tty_nr, tpgid, ...; starttime is the 20th.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
      const row: ProcessRow = { pid: each, pgid: fields[2], sid: fields[3], tpgid: fields[5] };
      if (elapsed) row.elapsedS = Math.floor(uptime - fields[19] / 100);
      rows.push(row);
    }
  } catch {
    return null;
  }
  return rows;
}

function checkIds(ids: readonly number[], what: string): void {
  for (const id of ids) {
    // 0 and 1 would hit the caller's own group or every process.
    if (!Number.isSafeInteger(id) || id <= 1) {
      throw new RangeError(`Cannot kill ${what}: ${id} is not a ${what} id`);
    }
  }
}

/**
 * The signal as `kill`'s `-NAME` option. Not `-s NAME`: procps-ng 4.0.2's
 * `kill -s TERM -- -10` reads a group id of 64 or less as a signal number and
 * fails (usage, exit 1), so in a pid namespace, where programs get small
 * ids, group signals missed every early program.
 */
function signalFlag(signal: Deno.Signal): string {
  return `-${signal.startsWith("SIG") ? signal.slice(3) : signal}`;
}

/** What `promise` settles with, or undefined once `ms` pass first. */
async function withinMs<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((resolve) =>
    timer = setTimeout(() => resolve(undefined), ms)
  );
  return await Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
