import assert from "node:assert/strict";
import { MAX_KILL_ROUNDS, SessionSweeper } from "../lib/exec/_session_sweeper.ts";
import { resolveGrantedProgram } from "../lib/exec/confinement.ts";
import { MAX_PIDS_PER_KILL } from "../lib/exec/tree_kill.ts";
import {
  assertNoneLeft,
  killPids,
  livePidsWith,
  uniqueSleep,
  waitForPids,
} from "./_process_helpers.ts";
import { until } from "./_support/deadline.ts";

/** The `ps`, `kill` and `setsid` the sweeper and these tests use, and a log of their runs. */
interface Helpers {
  dir: string;
  /** `ps` that logs each run to `dir/ps.log`, then runs the real one. */
  ps: string;
  /** `kill` that logs its arguments, one run a line, to `dir/kill.log`, then runs the real one. */
  kill: string;
}

async function helpers(): Promise<Helpers> {
  const dir = await Deno.makeTempDir({ prefix: "outpost_sweeper_" });
  const wrap = async (name: string, log: string) => {
    const real = await resolveGrantedProgram(name);
    assert.ok(real !== null && real.startsWith("/"), `${name} is installed`);
    const path = `${dir}/${name}`;
    await Deno.writeTextFile(
      path,
      `#!/bin/sh\necho "${log}" >> ${dir}/${name}.log\nexec ${real} "$@"\n`,
    );
    await Deno.chmod(path, 0o755);
    return path;
  };
  return { dir, ps: await wrap("ps", "run"), kill: await wrap("kill", "$*") };
}

async function lines(path: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((line) => line !== "");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

/**
 * Starts `bash` as the leader of a session of its own with two jobs, each in
 * a group of its own (job control without a terminal), and returns the
 * session id and the jobs' groups.
 */
async function sessionWithJobs(
  token: string,
): Promise<{ child: Deno.ChildProcess; sid: number; jobs: number[] }> {
  const child = new Deno.Command("setsid", {
    args: ["bash", "-c", `set -m; sleep ${token} & sleep ${token} & wait`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  // setsid execs in place: the child leads the session (it is no group leader when spawned).
  const sid = child.pid;
  const jobs = await waitForPids(`sleep ${token}`, 2);
  for (const pid of jobs) {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const [pgid, session] = stat.slice(stat.lastIndexOf(")") + 2).split(" ").slice(2, 4).map(
      Number,
    );
    assert.equal(session, sid, "the job stays in the program's session");
    assert.equal(pgid, pid, "the job leads a group of its own");
  }
  return { child, sid, jobs: jobs.sort((a, b) => a - b) };
}

Deno.test("SessionSweeper signals every group of the sessions asked for but the skipped ones, one listing and one kill run for a burst", async () => {
  const { dir, ps, kill } = await helpers();
  const tokens = [uniqueSleep(), uniqueSleep(), uniqueSleep()];
  const sessions: Awaited<ReturnType<typeof sessionWithJobs>>[] = [];
  try {
    for (const token of tokens) sessions.push(await sessionWithJobs(token));
    const sweeper = new SessionSweeper(() => Promise.resolve(ps), () => Promise.resolve(kill));
    await Promise.all(
      sessions.map(({ sid }) => sweeper.signal({ sid, signal: "SIGTERM", skip: [sid] })),
    );
    assert.equal((await lines(`${dir}/ps.log`)).length, 1, "one listing");
    const runs = await lines(`${dir}/kill.log`);
    assert.equal(runs.length, 1, "one kill run");
    const [flag, dashes, ...targets] = runs[0].split(" ");
    assert.deepEqual([flag, dashes], ["-TERM", "--"]);
    assert.deepEqual(
      targets.map((target) => -Number(target)).sort((a, b) => a - b),
      sessions.flatMap(({ jobs }) => jobs).sort((a, b) => a - b),
      "every job's group, not the skipped leaders'",
    );
    for (const { child } of sessions) {
      // The leaders, skipped, are alive; they exit once their jobs are gone.
      assert.equal((await child.status).signal, null, "bash was not signalled");
    }
    for (const token of tokens) assert.deepEqual(livePidsWith(`sleep ${token}`), []);
  } finally {
    for (const token of tokens) killPids(livePidsWith(`sleep ${token}`));
    for (const { child } of sessions) {
      killPids([child.pid]);
      await child.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SessionSweeper counts a group gone before its kill run as done, and serves a request made during a run with the next listing", async () => {
  const { dir, ps, kill } = await helpers();
  const token = uniqueSleep();
  const { child, sid, jobs } = await sessionWithJobs(token);
  try {
    // A group whose members are all gone: `kill` reports the failure (exit 1).
    const gone = new Deno.Command("true").spawn();
    await gone.status;
    // The first run, once started, waits here: a request made meanwhile is the next batch's.
    let started!: () => void;
    const running = new Promise<void>((resolve) => started = resolve);
    let release!: () => void;
    const released = new Promise<void>((resolve) => release = resolve);
    const sweeper = new SessionSweeper(() => Promise.resolve(ps), () => {
      started();
      return released.then(() => kill);
    });
    const first = sweeper.signal({ sid: gone.pid, signal: "SIGTERM", include: [gone.pid] });
    await running;
    const second = sweeper.signal({ sid, signal: "SIGKILL", skip: [sid] });
    release();
    await Promise.all([first, second]);
    // The KILL found jobs, so it lists once more (for jobs forked meanwhile: none).
    assert.equal((await lines(`${dir}/ps.log`)).length, 3, "a listing each, and the KILL's second");
    assert.deepEqual(await lines(`${dir}/kill.log`), [
      `-TERM -- -${gone.pid}`,
      `-KILL -- ${jobs.map((pid) => `-${pid}`).join(" ")}`,
    ]);
    assert.equal((await child.status).signal, null, "bash, skipped, ends with its jobs");
    assert.deepEqual(livePidsWith(`sleep ${token}`), [], "the jobs were killed");
  } finally {
    killPids([...livePidsWith(`sleep ${token}`), child.pid]);
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SessionSweeper signals only the included groups without a listing, at most MAX_PIDS_PER_KILL a kill run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost_sweeper_" });
  try {
    // Far sides faked: a `ps` that lists nothing usable, a `kill` that only logs.
    await Deno.writeTextFile(`${dir}/ps`, "#!/bin/sh\necho garbage\n");
    await Deno.writeTextFile(`${dir}/kill`, `#!/bin/sh\necho $(($# - 2)) >> ${dir}/kill.log\n`);
    await Deno.chmod(`${dir}/ps`, 0o755);
    await Deno.chmod(`${dir}/kill`, 0o755);
    const sweeper = new SessionSweeper(
      () => Promise.resolve(`${dir}/ps`),
      () => Promise.resolve(`${dir}/kill`),
    );
    const groups = (count: number) => Array.from({ length: count }, (_, i) => 1_000_000 + i);
    const runs = async (count: number) => {
      await Deno.writeTextFile(`${dir}/kill.log`, "");
      await sweeper.signal({ sid: 999_999, signal: "SIGTERM", include: groups(count) });
      // The runs of one batch go side by side: their order is not kept.
      return (await lines(`${dir}/kill.log`)).map(Number).sort((a, b) => b - a).join(",");
    };
    assert.equal(await runs(MAX_PIDS_PER_KILL), "1024");
    assert.equal(await runs(MAX_PIDS_PER_KILL + 1), "1024,1");
    assert.equal(await runs(0), "", "nothing to signal, no run");
    const none = new SessionSweeper(
      () => Promise.resolve(`${dir}/ps`),
      () => Promise.resolve(null),
    );
    await Deno.writeTextFile(`${dir}/kill.log`, "");
    await none.signal({ sid: 999_999, signal: "SIGTERM", include: [1_000_000] });
    assert.deepEqual(await lines(`${dir}/kill.log`), [], "without kill, nothing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SessionSweeper's KILL lists a session with jobs again for jobs forked between the listing and the kill run", async () => {
  const { dir, ps, kill } = await helpers();
  const token = uniqueSleep();
  // A TERM-proof job that starts a job of its own (a group each) every 3 ms;
  // bounded (3,000 jobs at most), so a failure cannot fill the process table.
  const loop = `for i in {1..3000}; do sleep ${token} & sleep 0.003; done`;
  const child = new Deno.Command("setsid", {
    args: ["bash", "-c", `set -m; bash -c "trap '' TERM; set -m; ${loop}" & wait`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitForPids(`sleep ${token}`, 3);
    const sweeper = new SessionSweeper(() => Promise.resolve(ps), () => Promise.resolve(kill));
    await sweeper.signal({ sid: child.pid, signal: "SIGKILL", skip: [child.pid] });
    await assertNoneLeft(`sleep ${token}`);
    const listings = (await lines(`${dir}/ps.log`)).length;
    assert.ok(listings >= 2 && listings <= MAX_KILL_ROUNDS, `${listings} listings`);
    assert.equal((await child.status).signal, null, "bash, skipped, ends with its jobs");
  } finally {
    await killSession(child.pid);
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

/** Test cleanup: KILLs every process of session `sid`, found in /proc, until none is left (5 s at most). */
async function killSession(sid: number): Promise<void> {
  const members = (): number[] => {
    const pids: number[] = [];
    for (const entry of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      try {
        const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
        const [state, , , session] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        if (Number(session) === sid && state !== "Z") pids.push(Number(entry.name));
      } catch {
        // It went away while we looked.
      }
    }
    return pids;
  };
  await until(
    () => {
      const pids = members();
      killPids(pids);
      return pids.length === 0;
    },
    5_000,
    `session ${sid} emptied`,
  ).catch(() => {});
}

Deno.test("SessionSweeper's KILL stops listing again after MAX_KILL_ROUNDS listings", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost_sweeper_" });
  try {
    // Far sides faked: every listing shows one more group in session 999999; `kill` only logs.
    await Deno.writeTextFile(
      `${dir}/ps`,
      `#!/bin/sh\necho run >> ${dir}/ps.log\nn=$(wc -l < ${dir}/ps.log)\n` +
        `i=0; while [ $i -lt $n ]; do echo "$((2000000 + i)) $((2000000 + i)) 999999 -1"; i=$((i + 1)); done\n`,
    );
    await Deno.writeTextFile(`${dir}/kill`, `#!/bin/sh\necho "$*" >> ${dir}/kill.log\n`);
    await Deno.chmod(`${dir}/ps`, 0o755);
    await Deno.chmod(`${dir}/kill`, 0o755);
    const sweeper = new SessionSweeper(
      () => Promise.resolve(`${dir}/ps`),
      () => Promise.resolve(`${dir}/kill`),
    );
    await sweeper.signal({ sid: 999_999, signal: "SIGKILL" });
    assert.equal((await lines(`${dir}/ps.log`)).length, MAX_KILL_ROUNDS);
    assert.deepEqual(
      await lines(`${dir}/kill.log`),
      ["-KILL -- -2000000", "-KILL -- -2000001", "-KILL -- -2000002"].slice(0, MAX_KILL_ROUNDS),
      "each round the groups the one before did not kill",
    );
    await Deno.writeTextFile(`${dir}/ps.log`, "");
    await Deno.writeTextFile(`${dir}/kill.log`, "");
    await sweeper.signal({ sid: 999_999, signal: "SIGTERM" });
    assert.equal((await lines(`${dir}/ps.log`)).length, 1, "a TERM lists once");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
