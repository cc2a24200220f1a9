/**
 * An executor run as a subprocess under restricted Deno permissions, for the
 * escape tests: `deno run <flags> escape_executor.ts WRITE_ROOT CWD`. It
 * serves JSON-RPC on a loopback WebSocket, prints `{"url": ..., "pid": ...}`
 * on stdout, and exits when stdin closes.
 *
 * @module
 */

import { Executor } from "../../lib/exec/executor.ts";
import { serveExecutor } from "./ws_channel.ts";

const [writeRoot, cwd, minConfinement] = Deno.args;
const executor = new Executor({
  writeRoots: [writeRoot],
  cwd,
  killGraceMs: 200,
  ...(minConfinement ? { minConfinement: minConfinement as "os" } : {}),
});
const server = serveExecutor(executor);
console.log(JSON.stringify({ url: server.url, pid: Deno.pid }));
// Run until the test closes our stdin.
for await (const _ of Deno.stdin.readable) { /* ignore input */ }
await server.close();
await executor.close();
