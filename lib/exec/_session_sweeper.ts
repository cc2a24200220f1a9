/**
 * Whole-session signals, batched. Job control puts a program's jobs in
 * process groups of their own (a terminal's shell; `bash -c 'set -m; …'`
 * without one), out of a group kill's reach but never out of the program's
 * session, and finding them takes a process listing. One listing per
 * program made a close of 100 programs cost 100 `ps` runs, so a signal asked
 * for while a listing is under way waits for the next one, which serves
 * every request made meanwhile: a burst costs at most two listings, and one
 * `kill` run per signal (per 1,024 groups) each.
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
    const sids = [...new Set(batch.map((each) => each.sid))];
    const listed = await sessionsGroups(await this.#ps(), sids).catch(() => null);
    const bySignal = new Map<Deno.Signal, Set<number>>();
    for (const { sid, signal, include = [], skip = [] } of batch) {
      let groups = bySignal.get(signal);
      if (groups === undefined) bySignal.set(signal, groups = new Set());
      for (const group of include) groups.add(group);
      for (const group of listed?.get(sid) ?? []) {
        if (!skip.includes(group)) groups.add(group);
      }
    }
    const runs: Promise<boolean>[] = [];
    for (const [signal, groups] of bySignal) {
      const all = [...groups];
      for (let i = 0; i < all.length; i += MAX_PIDS_PER_KILL) {
        runs.push(killProcessGroups(kill, all.slice(i, i + MAX_PIDS_PER_KILL), signal));
      }
    }
    await Promise.all(runs);
  }
}
