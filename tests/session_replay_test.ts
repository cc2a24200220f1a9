/**
 * A session resumed on a new stream after its old stream was lost gets every
 * event the old stream's peer had not acknowledged: output the lost stream
 * took but never delivered stays retained (past the 1 MiB retention) and is
 * replayed, so the harness sees no gap in the seqs.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Executor } from "../lib/exec/executor.ts";
import { type MuxStream, StreamMux } from "../lib/mux/stream_mux.ts";
import { RelaySocket } from "../lib/relay/relay_socket.ts";
import { JsonRpcPeer } from "../lib/rpc/json_rpc_peer.ts";
import { loopback } from "./_mux_loopback.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { TcpProxy } from "./_support/tcp_proxy.ts";

const D = 10_000;
/** `seq 1 LINES` writes about 6.9 MB: several times the retention and the send window. */
const LINES = 1_000_000;

/** Output chunks by seq, as a harness collects them from `process/output` notifications. */
function outputCollector() {
  const chunks = new Map<number, Uint8Array>();
  let closed = false;
  let bytes = 0;
  const onNotification = (method: string, params: unknown): void => {
    const p = params as { processId: string; seq: number; chunk?: string };
    if (method === "process/closed") closed = true;
    if (method !== "process/output" || chunks.has(p.seq)) return;
    const chunk = Uint8Array.fromBase64(p.chunk!);
    chunks.set(p.seq, chunk);
    bytes += chunk.length;
  };
  return {
    chunks,
    onNotification,
    get closed() {
      return closed;
    },
    get bytes() {
      return bytes;
    },
  };
}

Deno.test("a session resumed on a new stream after its stream was lost with output unacknowledged gets all of it again: no seq is missing", async () => {
  await using executor = new Executor({ sessionTtlMs: 20_000, killGraceMs: 200 });
  const served: MuxStream[] = [];
  await using lb = loopback({
    detachWindowMs: 200,
    onStream: (stream) => {
      served.push(stream);
      executor.serve(stream).catch(() => {});
    },
  });
  await using proxy = new TcpProxy(Number(new URL(lb.url).port));
  const seen = outputCollector();

  // The first connection runs the program through a proxy that goes dead mid-output.
  const first = new StreamMux({ role: "harness" });
  first.attach(await RelaySocket.connect(`ws://127.0.0.1:${proxy.port}/`));
  const firstPeer = new JsonRpcPeer(first.open(), { onNotification: seen.onNotification });
  const { sessionId } = await withDeadline(
    firstPeer.request<{ sessionId: string }>("initialize", { clientName: "replay" }),
    D,
    "initialize",
  );
  await firstPeer.notify("initialized");
  await withDeadline(
    firstPeer.request("process/start", { processId: "p", argv: ["seq", "1", String(LINES)] }),
    D,
    "start",
  );
  await until(() => seen.bytes > 256 * 1024, D, "output flowing");
  // Silenced, the route takes the executor's frames and acknowledges none, so
  // what the stream sends from now on stays unacknowledged; then it is cut.
  proxy.silence();
  await until(
    () => served[0].stats.unackedBytes >= 1024 * 1024,
    D,
    "a MiB unacknowledged",
  );
  proxy.cut();
  await first.close();

  // The executor's stream outlives the socket by its detach window, then the
  // session detaches; the program goes on until its retention is full.
  const second = await lb.harness();
  const secondPeer = new JsonRpcPeer(second.open(), { onNotification: seen.onNotification });
  await until(
    async () => {
      const resumed = await secondPeer.request<{ sessionId: string }>("initialize", {
        clientName: "replay",
        resumeSessionId: sessionId,
      }).catch(() => null);
      return resumed?.sessionId === sessionId;
    },
    D,
    "the session resumed",
  );
  await secondPeer.notify("initialized");
  await until(() => seen.closed, D, "the program's output closed");

  const seqs = [...seen.chunks.keys()].sort((a, b) => a - b);
  const missing = seqs.filter((seq, i) => i > 0 && seq !== seqs[i - 1] + 1);
  assert.deepEqual(missing, [], "every seq from the first to the last arrived");
  assert.equal(seqs[0], 1);
  const text = new TextDecoder().decode(
    new Uint8Array(seqs.flatMap((seq) => [...seen.chunks.get(seq)!])),
  );
  assert.equal(text.length, expectedSeqOutput().length);
  assert.ok(text === expectedSeqOutput(), "the output is `seq 1 LINES`, byte for byte");
  await secondPeer.close();
});

function expectedSeqOutput(): string {
  let out = "";
  for (let i = 1; i <= LINES; i++) out += `${i}\n`;
  return out;
}
