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
 * What a group kill does not reach: a descendant that moved itself to another
 * process group or session (`setsid`, shell job control). The `os` level
 * closes that gap: bubblewrap's pid namespace dies with it, taking every
 * process inside along.
 *
 * @module
 */

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
  for (const pgid of pgids) {
    if (!Number.isSafeInteger(pgid) || pgid <= 1) {
      throw new RangeError(`Cannot kill process group: ${pgid} is not a process group id`);
    }
  }
  if (pgids.length === 0) return false;
  const name = signal.startsWith("SIG") ? signal.slice(3) : signal;
  return await runQuietly(helper, ["-s", name, "--", ...pgids.map((pgid) => `-${pgid}`)]);
}
