/**
 * Runs a local executor for integration tests, under whatever (restricted)
 * permissions the test grants, and prints its URL as the first stdout line.
 * Exits when stdin closes.
 *
 * Usage: deno run <permissions> serve_restricted.ts DIR [TTL_MS]
 *
 * @module
 */

import { Executor } from "../../lib/exec/executor.ts";
import { serveLocal } from "../../lib/server/local_server.ts";

const [dir, ttl] = Deno.args;
const executor = new Executor({
  cwd: dir,
  writeRoots: [dir],
  sessionTtlMs: ttl ? Number(ttl) : 30_000,
  killGraceMs: 500,
  exitedRetentionMs: 5_000,
});
await executor.ready();
const server = await serveLocal({ executor });
await Deno.stdout.write(new TextEncoder().encode(server.url + "\n"));
// The test ends the server by closing our stdin.
for await (const _ of Deno.stdin.readable) { /* drain */ }
await server.close();
await executor.close();
