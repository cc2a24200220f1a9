/**
 * The Codex multiplexed virtual streams scenario (reference §7,
 * `multiplexed_remote_executor_routes_independent_virtual_streams`) against
 * the executor-side StreamMux over a real loopback WebSocket. The test plays
 * rendezvous and two Codex v1 harnesses at once, writing legacy frames
 * (seq from 0, acks 0, segments 1/1) straight into the executor's socket. A
 * trivial per-stream JSON-RPC responder stands in for the executor session.
 *
 * @module
 */

import assert from "node:assert/strict";
import { RelaySocket } from "../lib/relay/relay_socket.ts";
import type { ReceivedFrame } from "../lib/relay/relay_socket.ts";
import type { RelayFrame } from "../lib/relay/frame_codec.ts";
import { type MuxStream, StreamMux } from "../lib/mux/stream_mux.ts";
import { withDeadline } from "./_support/deadline.ts";
import { bodyFrame, dataFrame } from "./_support/frames.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** One JSON-RPC session per stream: initialize -> sessionId, unknown -> -32601. */
function respond(stream: MuxStream): void {
  const sessionId = crypto.randomUUID();
  (async () => {
    try {
      for await (const text of stream) {
        const message = JSON.parse(text);
        if (message.id === undefined) continue; // notification
        if (message.method === "initialize") {
          await stream.send(
            JSON.stringify({ jsonrpc: "2.0", id: message.id, result: { sessionId } }),
          );
        } else {
          await stream.send(JSON.stringify({
            jsonrpc: "2.0",
            id: message.id,
            error: { code: -32601, message: `Method not found: ${message.method}` },
          }));
        }
      }
    } catch {
      // reset: the session ends
    }
  })();
}

function legacyData(streamId: string, seq: number, message: unknown): RelayFrame {
  return dataFrame(streamId, seq, JSON.stringify(message));
}

/** Reads the next data frame, skipping other bodies; 5 s per step as upstream. */
async function nextData(frames: AsyncIterator<ReceivedFrame>): Promise<ReceivedFrame> {
  while (true) {
    const result = await withDeadline(frames.next(), 5_000, "data frame");
    if (result.done) throw new Error("Relay socket closed while a data frame was expected");
    if (result.value.body.kind === "data") return result.value;
  }
}

function payloadOf(frame: ReceivedFrame): Record<string, unknown> {
  assert.ok(frame.body.kind === "data");
  assert.equal(frame.ack, 0);
  assert.equal(frame.ackBits, 0);
  assert.equal(frame.body.segmentIndex, 0);
  assert.equal(frame.body.segmentCount, 1);
  return JSON.parse(new TextDecoder().decode(frame.body.payload));
}

Deno.test("Codex mux scenario: two legacy streams with the same ids, no cross-talk, a reset leaves the other served", async () => {
  const executor = new StreamMux({ role: "executor", onStream: respond });
  let executorSocket!: RelaySocket;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    executorSocket = RelaySocket.accept(socket);
    executor.attach(executorSocket);
    return response;
  });
  // The test is the rendezvous side of the executor's socket.
  const relay = await RelaySocket.connect(`ws://127.0.0.1:${server.addr.port}/executor/e1`);
  const frames = relay[Symbol.asyncIterator]();
  try {
    // A Codex v1 harness may send resume{next_seq: 0} first; it does not fix the mode.
    await relay.send(bodyFrame("stream-a", { kind: "resume", nextSeq: 0 }));
    // 1. initialize on both streams, seq 0, the same request id 1.
    for (const [id, client] of [["stream-a", "relay-test-a"], ["stream-b", "relay-test-b"]]) {
      await relay.send(legacyData(id, 0, {
        id: 1,
        method: "initialize",
        params: { clientName: client },
      }));
    }
    // 2. exactly one response per stream, distinct session ids.
    const responses = new Map<string, Record<string, unknown>>();
    for (let i = 0; i < 2; i++) {
      const frame = await nextData(frames);
      assert.ok(!responses.has(frame.streamId), `second response on ${frame.streamId}`);
      assert.ok(frame.body.kind === "data" && frame.body.seq === 0, "legacy replies count from 0");
      responses.set(frame.streamId, payloadOf(frame));
    }
    assert.deepEqual([...responses.keys()].sort(), ["stream-a", "stream-b"]);
    const sessions = [...responses.values()].map((r) => {
      assert.equal(r.id, 1);
      const sessionId = (r.result as { sessionId: string }).sessionId;
      assert.match(sessionId, UUID);
      return sessionId;
    });
    assert.notEqual(sessions[0], sessions[1]);
    // 3. initialized notifications, seq 1.
    for (const id of ["stream-a", "stream-b"]) {
      await relay.send(legacyData(id, 1, { method: "initialized", params: {} }));
    }
    // 4. unknown methods named after their stream, seq 2.
    await relay.send(legacyData("stream-a", 2, { id: 2, method: "test/unknown-a" }));
    await relay.send(legacyData("stream-b", 2, { id: 2, method: "test/unknown-b" }));
    // 5. each error names its own stream's method.
    const errors = new Map<string, Record<string, unknown>>();
    for (let i = 0; i < 2; i++) {
      const frame = await nextData(frames);
      assert.ok(frame.body.kind === "data" && frame.body.seq === 1);
      errors.set(frame.streamId, payloadOf(frame));
    }
    for (const [id, method] of [["stream-a", "test/unknown-a"], ["stream-b", "test/unknown-b"]]) {
      const reply = errors.get(id)!;
      assert.equal(reply.id, 2);
      const error = reply.error as { code: number; message: string };
      assert.equal(error.code, -32601);
      assert.ok(error.message.includes(method), `${id}: ${error.message}`);
      assert.ok(!error.message.includes(method === "test/unknown-a" ? "unknown-b" : "unknown-a"));
    }
    // 6. reset stream a.
    await relay.send({
      version: 1,
      streamId: "stream-a",
      ack: 0,
      ackBits: 0,
      body: { kind: "reset", reason: "test_reset" },
    });
    // 7. stream b is still served.
    await relay.send(legacyData("stream-b", 3, { id: 3, method: "test/unknown-b-after-reset" }));
    // 8. the next data frame is b's error for id 3.
    const last = await nextData(frames);
    assert.equal(last.streamId, "stream-b");
    const reply = payloadOf(last);
    assert.equal(reply.id, 3);
    assert.ok((reply.error as { message: string }).message.includes("test/unknown-b-after-reset"));
    assert.equal(executor.streams, 1);
    // 10. (beyond the upstream test) a Codex v1 harness reusing the reset id
    // from seq 0 gets a new stream with a fresh session, as G1's executor
    // does (§4.2); a later seq of the old stream is still refused.
    await relay.send(legacyData("stream-a", 5, { id: 9, method: "test/old-stream" }));
    const refused = await withDeadline(frames.next(), 5_000, "reset of the old stream");
    assert.equal(refused.value?.streamId, "stream-a");
    // With the reason it ended with: the harness's own reset.
    assert.deepEqual(refused.value?.body, { kind: "reset", reason: "test_reset" });
    await relay.send(legacyData("stream-a", 0, { id: 1, method: "initialize", params: {} }));
    const fresh = await nextData(frames);
    assert.equal(fresh.streamId, "stream-a");
    assert.equal(fresh.body.kind === "data" && fresh.body.seq, 0);
    const renewed = payloadOf(fresh).result as { sessionId: string };
    assert.match(renewed.sessionId, UUID);
    assert.ok(!sessions.includes(renewed.sessionId), "a fresh session");
    assert.equal(executor.streams, 2);
  } finally {
    // 9. close the socket and stop the executor.
    await relay.close();
    await executor.close();
    await executorSocket?.close();
    await server.shutdown();
  }
});
