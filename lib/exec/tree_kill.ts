/**
 * Process-tree kill. Every child starts as the leader of a session and
 * process group of its own (spawned through the util-linux `setsid` helper,
 * or with `Deno.Command`'s `detached: true`, which calls `setsid()` after a
 * fork), so its descendants share its process group id. Deno lets a
 * scoped `--allow-run` signal only its own `ChildProcess`; signalling a group
 * (`Deno.kill(-pgid)`) needs the unscoped grant. outpost therefore signals
 * groups through the `kill` helper program (`kill -s TERM -- -PGID`) when the
 * operator grants it (`--allow-run=kill`), and falls back to signalling the
 * direct child only, reporting `treeKill: false`.
 *
 * A terminal's programs also move to groups of their own (shell job
 * control), but never out of the terminal's session: for a `tty` process
 * outpost also signals every member of that session, found by one scan of
 * `/proc` per signal ({@linkcode sessionPids}), when it may read `/proc`.
 *
 * What that does not reach: a descendant that started a session of its own
 * (`setsid`). The `os` level closes that gap: bubblewrap's pid namespace dies
 * with it, taking every process inside along.
 *
 * @module
 */

import { isGrantedValue } from "./_permissions.ts";
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
  return await runQuietly(helper, [
    "-s",
    signalName(signal),
    "--",
    ...pgids.map((pgid) => `-${pgid}`),
  ]);
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
    await runQuietly(helper, ["-s", signalName(signal), "--", ...batch]);
  }
}

/**
 * The processes of session `sid`, from one scan of `/proc` (field 6 of
 * `/proc/PID/stat`). A pid is not reused while a process still carries it as
 * its session id, so every match belongs to that very session. Pid 1 and the
 * executor are never listed, and nothing is when the executor itself belongs
 * to the session.
 *
 * @param sid The session id (greater than 1).
 * @returns The pids, or null when `/proc` may not be read (no read permission, no `/proc`).
 * @throws {RangeError} When `sid` is not an integer greater than 1.
 * @example
 * ```ts ignore
 * import { sessionPids } from "./tree_kill.ts";
 * console.log(await sessionPids(12345)); // e.g. [12345, 12350]
 * ```
 */
export async function sessionPids(sid: number): Promise<number[] | null> {
  const members = await sessionMembers(sid);
  return members === null ? null : members.map(([pid]) => pid);
}

/**
 * The process groups of session `sid`, from one scan of `/proc` (field 5 of
 * `/proc/PID/stat` for each of {@linkcode sessionPids}). A group never spans
 * two sessions, so a group kill of each reaches every member once, a child
 * forked after the scan into one of them included.
 *
 * @param sid The session id (greater than 1).
 * @returns The group ids, or null when `/proc` may not be read.
 * @throws {RangeError} When `sid` is not an integer greater than 1.
 */
export async function sessionGroups(sid: number): Promise<number[] | null> {
  const members = await sessionMembers(sid);
  if (members === null) return null;
  return [...new Set(members.map(([, pgrp]) => pgrp))].filter((pgrp) => pgrp > 1);
}

/** `[pid, pgrp]` of each process of session `sid` (see {@linkcode sessionPids}). */
async function sessionMembers(sid: number): Promise<[number, number][] | null> {
  checkIds([sid], "session");
  if (!(await mayReadProc())) return null;
  const members: [number, number][] = [];
  try {
    for await (const entry of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      const pid = Number(entry.name);
      let stat: string;
      try {
        stat = await Deno.readTextFile(`/proc/${pid}/stat`);
      } catch {
        continue; // It exited while we looked.
      }
      // After the command name: state, ppid, pgrp, session.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[3]) !== sid) continue;
      if (pid === Deno.pid) return [];
      if (pid > 1) members.push([pid, Number(fields[2])]);
    }
  } catch {
    return null;
  }
  return members;
}

/**
 * The foreground process group of the terminal that session `sid` controls
 * (field 8, `tpgid`, of its leader's `/proc/PID/stat`): where the terminal's
 * Ctrl-C goes. Null when it cannot be read or the session has no terminal.
 *
 * @param sid The session id (its leader's pid, greater than 1).
 * @returns The process group id, or null.
 */
export async function foregroundGroup(sid: number): Promise<number | null> {
  checkIds([sid], "session");
  if (!(await mayReadProc())) return null;
  try {
    const stat = await Deno.readTextFile(`/proc/${sid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // After the command name: state, ppid, pgrp, session, tty_nr, tpgid.
    const session = Number(fields[3]);
    const tpgid = Number(fields[5]);
    return session === sid && Number.isSafeInteger(tpgid) && tpgid > 1 ? tpgid : null;
  } catch {
    return null;
  }
}

/**
 * Whether a process `pid` exists now (a zombie counts). A closed process's
 * leader is gone and reaped, so a live process under its pid is a newcomer
 * that merely reuses the number: its group and session must not be signalled.
 * Unknown (no read access to `/proc`) counts as existing, to be safe.
 *
 * @param pid A process id.
 * @returns True when it exists or cannot be told.
 */
export async function pidExists(pid: number): Promise<boolean> {
  if (!(await mayReadProc())) return true;
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch (error) {
    return !(error instanceof Deno.errors.NotFound);
  }
}

/**
 * Whether `/proc` may be read. Asked first because reading without the grant
 * would stop an executor run from a terminal at Deno's permission prompt.
 */
function mayReadProc(): Promise<boolean> {
  return isGrantedValue({ name: "read", path: "/proc" });
}

function checkIds(ids: readonly number[], what: string): void {
  for (const id of ids) {
    // 0 and 1 would hit the caller's own group or every process.
    if (!Number.isSafeInteger(id) || id <= 1) {
      throw new RangeError(`Cannot kill ${what}: ${id} is not a ${what} id`);
    }
  }
}

function signalName(signal: Deno.Signal): string {
  return signal.startsWith("SIG") ? signal.slice(3) : signal;
}
