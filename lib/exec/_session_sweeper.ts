/**
 * Whole-session signals, batched. Job control puts a program's jobs in
 * process groups of their own (a terminal's shell; `bash -c 'set -m; …'`
 * without one), out of a group kill's reach but never out of the program's
 * session, and finding them takes a process listing. One listing per
 * program made a close of 100 programs cost 100 `ps` runs, so a signal asked
 * for while a listing is under way waits for the next one, which serves
 * every request made meanwhile: a burst costs at most two batches, each one
 * listing and one `kill` run per signal (per 1,024 groups). A KILL of
 * sessions that had jobs lists again, up to {@linkcode MAX_KILL_ROUNDS}
 * listings, for jobs forked between the listing and the `kill` run.
 *
 * The listing and a caller's own signal to the program's groups run side by
 * side, so a process that moves to a group of its own in between (a job
 * being set up) can get a signal twice, or, when its group is listed before
 * it moves, none but the KILL: a window of microseconds for shells.
 *
 * @module
 */

import { killProcessGroups, MAX_PIDS_PER_KILL, sessionsGroups } from "./tree_kill.ts";

/** One session to signal. */
export interface SessionSignal {
  /** The session id (its leader's pid, greater than 1). */
  readonly sid: number;
  /** The signal. */
  readonly signal: Deno.Signal;
  /** Groups to signal whatever the listing finds (a terminal's leader's). */
  readonly include?: readonly number[];
  /** Groups the caller has signalled already: none gets the signal twice. */
  readonly skip?: readonly number[];
}

/**
 * Signals every process group of the sessions asked for, one listing and
 * one `kill` run per signal for all requests of a batch. A group that
 * vanished between the listing and the `kill` run is done, not a failure:
 * nothing is signalled again on another path. Without a listing (no `ps`,
 * and `/proc` unreadable outside `--allow-all`) only `include` is signalled.
 */
export class SessionSweeper {
  readonly #ps: () => Promise<string | null>;
  readonly #kill: () => Promise<string | null>;
  #queued: SessionSignal[] = [];
  /** The batch the queued requests will run in. */
  #next: Promise<void> | null = null;
  /** The batch running now. */
  #running: Promise<void> = Promise.resolve();

  /**
   * @param ps The granted `ps` program (null reads `/proc` instead).
   * @param kill The granted `kill` program (null: nothing can be signalled).
   */
  constructor(ps: () => Promise<string | null>, kill: () => Promise<string | null>) {
    this.#ps = ps;
    this.#kill = kill;
  }

  /**
   * Signals every group of a session, with the requests made meanwhile.
   *
   * @param request What to signal.
   * @returns Once the batch's `kill` runs have ended; never rejects.
   */
  signal(request: SessionSignal): Promise<void> {
    this.#queued.push(request);
    this.#next ??= this.#runNext();
    return this.#next;
  }

  async #runNext(): Promise<void> {
    await this.#running;
    const batch = this.#queued;
    this.#queued = [];
    this.#next = null;
    this.#running = this.#run(batch).catch(() => {});
    await this.#running;
  }

  async #run(batch: readonly SessionSignal[]): Promise<void> {
    const kill = await this.#kill();
    if (kill === null) return;
    const ps = await this.#ps();
    const sids = [...new Set(batch.map((each) => each.sid))];
    const listed = await sessionsGroups(ps, sids).catch(() => null);
    const bySignal = new Map<Deno.Signal, Set<number>>();
    for (const { sid, signal, include = [], skip = [] } of batch) {
      let groups = bySignal.get(signal);
      if (groups === undefined) bySignal.set(signal, groups = new Set());
      for (const group of include) groups.add(group);
      for (const group of listed?.get(sid) ?? []) {
        if (!skip.includes(group)) groups.add(group);
      }
    }
    await Promise.all(
      [...bySignal].map(([signal, groups]) => signalInRuns(kill, [...groups], signal)),
    );
    const kills = batch.filter((each) => each.signal === "SIGKILL");
    const killed = bySignal.get("SIGKILL");
    const hadJobs = kills.some(({ sid, skip = [] }) =>
      (listed?.get(sid) ?? []).some((group) => !skip.includes(group))
    );
    if (killed === undefined || !hadJobs) return;
    // A job forked into a new group between the listing and the kill run
    // escaped it, its parent did not: list again until a listing finds no new
    // group (each round takes the parents of the next one's), a few times.
    // Only where the first listing found jobs: a session without any costs
    // no second listing.
    for (let round = 1; round < MAX_KILL_ROUNDS; round++) {
      const again = await sessionsGroups(ps, [...new Set(kills.map((each) => each.sid))])
        .catch(() => null);
      const fresh: number[] = [];
      for (const { sid, skip = [] } of kills) {
        for (const group of again?.get(sid) ?? []) {
          if (!killed.has(group) && !skip.includes(group)) fresh.push(group);
        }
      }
      if (fresh.length === 0) return;
      for (const group of fresh) killed.add(group);
      await signalInRuns(kill, fresh, "SIGKILL");
    }
  }
}

/** How many listings a KILL of sessions takes at most (see `SessionSweeper`). */
export const MAX_KILL_ROUNDS = 3;

/** Signals groups, at most {@linkcode MAX_PIDS_PER_KILL} a `kill` run. */
async function signalInRuns(
  kill: string,
  groups: readonly number[],
  signal: Deno.Signal,
): Promise<void> {
  const runs: Promise<boolean>[] = [];
  for (let i = 0; i < groups.length; i += MAX_PIDS_PER_KILL) {
    runs.push(killProcessGroups(kill, groups.slice(i, i + MAX_PIDS_PER_KILL), signal));
  }
  await Promise.all(runs);
}
