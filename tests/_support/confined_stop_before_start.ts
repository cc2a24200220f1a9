/**
 * Run by `tests/fs_ops_test.ts` in a process of its own, with a `bwrap` on
 * PATH that waits 500 ms before it execs the real one: starts confined
 * writes over existing files, a removal and a directory creation, calls
 * `stopAll` 100 ms later (before any helper's sandbox is up), and prints
 * each call's outcome as JSON.
 *
 * Usage: `deno run -A confined_stop_before_start.ts ROOT [--no-stop]` (ROOT
 * holds `old0`..`old7` and `keep`; `made` does not exist). With `--no-stop`
 * nothing is stopped (for a `bwrap` on PATH that fails in its own way).
 *
 * @module
 */

import { ConfinedFs } from "../../lib/exec/_confined_fs.ts";

const root = Deno.args[0];
const confined = new ConfinedFs([root]);
const calls: Promise<void>[] = [];
for (let i = 0; i < 8; i++) {
  const path = `${root}/old${i}`;
  calls.push(confined.writeFile("write", path, path, new TextEncoder().encode("new content")));
}
calls.push(confined.remove(`${root}/keep`, `${root}/keep`, false, false));
calls.push(confined.mkdir(`${root}/made`, `${root}/made`, false));
if (!Deno.args.includes("--no-stop")) setTimeout(() => confined.stopAll(), 100);
const outcomes = await Promise.allSettled(calls);
console.log(
  JSON.stringify(
    outcomes.map((outcome) =>
      outcome.status === "fulfilled" ? "done" : String(outcome.reason?.message ?? outcome.reason)
    ),
  ),
);
