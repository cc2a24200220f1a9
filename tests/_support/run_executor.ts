/**
 * A remote executor in its own process for the fault tests:
 * `deno run -A run_executor.ts REGISTRY EXECUTOR_ID TOKEN CWD [DETACH_MS]`.
 * Prints one JSON line per loop event (`{"event":"connected"}` etc.), exits
 * when stdin closes (or when killed).
 *
 * @module
 */

import { Executor } from "../../lib/exec/executor.ts";
import { runExecutor } from "../../lib/server/executor_loop.ts";

const [registry, executorId, token, cwd, detach] = Deno.args;
const executor = new Executor({ cwd, writeRoots: [cwd], sessionTtlMs: 60_000 });
const handle = runExecutor({
  registry,
  executorId,
  token,
  executor,
  initialBackoffMs: 100,
  maxBackoffMs: 1000,
  ...(detach ? { detachWindowMs: Number(detach) } : {}),
  onEvent: (event) => console.log(JSON.stringify({ event: event.type, pid: Deno.pid })),
});
const stdinDone = (async () => {
  for await (const _ of Deno.stdin.readable) { /* run until stdin closes */ }
})();
await Promise.race([stdinDone, handle.closed.catch(() => {})]);
await handle.close();
await executor.close();
