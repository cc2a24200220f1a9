/**
 * A rendezvous in its own process for the fault tests:
 * `deno run -A run_rendezvous.ts PORT TOKEN [DETACH_MS] [STARTUP_GRACE_MS]`. Prints its URL as a
 * JSON line, exits when stdin closes (or when killed).
 *
 * @module
 */

import { serveRendezvous } from "../../lib/server/rendezvous_server.ts";

const [port, token, detach, grace] = Deno.args;
const server = await serveRendezvous({
  listen: `ws://127.0.0.1:${port}`,
  token,
  ...(detach ? { detachWindowMs: Number(detach) } : {}),
  ...(grace ? { startupGraceMs: Number(grace) } : {}),
  onEvent: (event) => console.log(JSON.stringify({ event, t: Math.round(performance.now()) })),
});
console.log(
  JSON.stringify({
    url: server.url,
    registryUrl: server.registryUrl,
    pid: Deno.pid,
    args: Deno.args.slice(2),
  }),
);
for await (const _ of Deno.stdin.readable) { /* run until stdin closes */ }
await server.close();
