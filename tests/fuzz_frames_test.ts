/**
 * Seeded, reproducible, bounded-time fuzzing of everything that reads relay
 * frames from a peer. CI runs a small seeded set; `OUTPOST_SOAK=1` (or
 * `deno task soak`) runs at least 100,000 cases per target. Replay one run
 * with `OUTPOST_SEED=<seed>`.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  decodeFrame,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  type RelayFrame,
} from "../lib/relay/frame_codec.ts";
import { ProtocolError } from "../lib/errors.ts";
import { Prng, seedFromEnv, soakMode } from "./_support/prng.ts";
import {
  mutatedFrame,
  randomRawFrame,
  randomValidFrame,
  RawProto,
  ruleBreakingFrame,
} from "./_support/frame_gen.ts";
import { record } from "./_support/report.ts";
import { withDeadline } from "./_support/deadline.ts";
import { RelaySocket, type RelaySocketOptions } from "../lib/relay/relay_socket.ts";

const SOAK = soakMode();
const SEED = seedFromEnv(0x5eed_f00d);
/** Cases per target: small in CI, >= 100,000 in the soak. */
const CASES = SOAK ? 120_000 : 5_000;

/** Generates one hostile input of a random family; returns the family name too. */
function hostileBytes(rng: Prng): [string, Uint8Array] {
  switch (rng.int(0, 4)) {
    case 0:
      return ["random bytes", rng.bytes(rng.int(0, 64))];
    case 1:
      return ["raw protobuf", randomRawFrame(rng)];
    case 2:
      return ["rule breaking", ruleBreakingFrame(rng)];
    case 3:
      return ["valid", encodeFrame(randomValidFrame(rng))];
    default:
      return ["mutated", mutatedFrame(rng)];
  }
}

/** The frame with payloads as plain Uint8Array (protobufjs may hand out Buffer views). */
function plain(frame: RelayFrame): unknown {
  const body = frame.body;
  if (body.kind === "data" || body.kind === "handshake") {
    return { ...frame, body: { ...body, payload: Uint8Array.from(body.payload) } };
  }
  return frame;
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("decodeFrame throws only ProtocolError and accepts only valid frames, on fuzzed input", () => {
  const rng = new Prng(SEED);
  let accepted = 0;
  let rejected = 0;
  let slowest = 0;
  const families = new Map<string, number>();
  const started = performance.now();
  for (let i = 0; i < CASES; i++) {
    const [family, bytes] = hostileBytes(rng);
    families.set(family, (families.get(family) ?? 0) + 1);
    const t0 = performance.now();
    let frame: RelayFrame | undefined;
    try {
      frame = decodeFrame(bytes);
    } catch (error) {
      if (!(error instanceof ProtocolError)) {
        assert.fail(
          `case ${i} (seed ${SEED}, ${family}) threw ${
            (error as Error)?.name
          } instead of ProtocolError: ${(error as Error)?.message}; input ${hex(bytes)}`,
        );
      }
      assert.match(error.message, /^Cannot decode frame: /);
      rejected++;
    }
    slowest = Math.max(slowest, performance.now() - t0);
    if (frame !== undefined) {
      accepted++;
      // An accepted frame is valid: it re-encodes without error and round-trips.
      const again = decodeFrame(encodeFrame(frame));
      assert.deepEqual(
        plain(again),
        plain(frame),
        `case ${i} (seed ${SEED}) does not round-trip: ${hex(bytes)}`,
      );
    }
  }
  const elapsed = performance.now() - started;
  // Generous: one decode of < 1 KiB must never take 50 ms (no quadratic paths).
  assert.ok(slowest < 50, `slowest decode took ${slowest.toFixed(1)} ms`);
  record({
    area: "bad input",
    name: "frame decoder: random, raw protobuf, rule-breaking, mutated frames",
    cases: CASES,
    result: "no crash; only ProtocolError thrown; every accepted frame valid and round-trips",
    details: {
      seed: SEED,
      accepted,
      rejected,
      slowestMs: Number(slowest.toFixed(2)),
      elapsedMs: Math.round(elapsed),
      ...Object.fromEntries(families),
    },
  });
});

Deno.test("decodeFrame refuses oversize length prefixes without allocating them", () => {
  const claims = [1, 1000, 0x7fff_ffff, 0xffff_ffff, 2 ** 40, 2 ** 53 - 1];
  let cases = 0;
  for (const field of [2, 5, 8, 10, 11, 12, 99]) {
    for (const claimed of claims) {
      const bytes = new RawProto().key(1, 0).varint(1).key(field, 2).varint(claimed).raw([1, 2, 3])
        .finish();
      assert.throws(() => decodeFrame(bytes), ProtocolError, `field ${field} claimed ${claimed}`);
      cases++;
    }
  }
  // A payload length inside the data body that claims more than is there.
  for (const claimed of claims) {
    const inner = new RawProto().key(1, 0).varint(1).key(3, 0).varint(1).key(4, 2).varint(
      claimed + 3,
    ).raw([1, 2, 3]).finish();
    const bytes = new RawProto().key(1, 0).varint(1).lengthDelimited(2, [0x73]).lengthDelimited(
      5,
      inner,
    ).finish();
    assert.throws(() => decodeFrame(bytes), ProtocolError);
    cases++;
  }
  record({
    area: "bad input",
    name: "frame decoder: length prefixes past the end (up to 2^53)",
    cases,
    result: "all rejected with ProtocolError, no allocation of the claimed size",
  });
});

Deno.test("decodeFrame takes a frame of exactly the limit and refuses one byte more", () => {
  const streamId = "s-1";
  const frameOf = (payloadBytes: number): Uint8Array =>
    encodeFrame({
      version: 1,
      streamId,
      ack: 0,
      ackBits: 0,
      body: {
        kind: "data",
        seq: 1,
        segmentIndex: 0,
        segmentCount: 1,
        payload: new Uint8Array(payloadBytes),
      },
    });
  // Find the payload size whose encoding is exactly the limit.
  let size = DEFAULT_MAX_FRAME_BYTES - 32;
  while (frameOf(size + 1).length <= DEFAULT_MAX_FRAME_BYTES) size++;
  const atLimit = frameOf(size);
  assert.equal(atLimit.length, DEFAULT_MAX_FRAME_BYTES);
  assert.equal(decodeFrame(atLimit).streamId, streamId);
  const over = new Uint8Array(DEFAULT_MAX_FRAME_BYTES + 1);
  over.set(atLimit);
  assert.throws(() => decodeFrame(over), (e: unknown) =>
    e instanceof ProtocolError &&
    e.message ===
      `Cannot decode frame: length ${
        DEFAULT_MAX_FRAME_BYTES + 1
      } exceeds the ${DEFAULT_MAX_FRAME_BYTES} byte limit`);
  // A custom, smaller limit is honoured the same way.
  const small = encodeFrame({ version: 1, streamId, ack: 0, ackBits: 0, body: { kind: "ack" } });
  assert.ok(decodeFrame(small, { maxFrameBytes: small.length }));
  assert.throws(() => decodeFrame(small, { maxFrameBytes: small.length - 1 }), ProtocolError);
  record({
    area: "bad input",
    name: "frame decoder: frame size at the limit and one past",
    cases: 4,
    result: "at the limit accepted, one past rejected with a clear ProtocolError",
  });
});

/** A server that wraps every accepted socket in a RelaySocket. */
function startRelayServer(
  options: RelaySocketOptions,
  onSocket: (relay: RelaySocket) => void,
): { server: Deno.HttpServer<Deno.NetAddr>; url: string } {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    onSocket(RelaySocket.accept(socket, options));
    return response;
  });
  return { server, url: `ws://127.0.0.1:${server.addr.port}/` };
}

Deno.test("RelaySocket drops and reports every hostile message and keeps delivering valid frames", async () => {
  const rng = new Prng(SEED ^ 0x1234);
  const errors: ProtocolError[] = [];
  let relay!: RelaySocket;
  const accepted = Promise.withResolvers<void>();
  const { server, url } = startRelayServer({ onProtocolError: (e) => errors.push(e) }, (r) => {
    relay = r;
    accepted.resolve();
  });
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await withDeadline(new Promise((resolve) => ws.onopen = resolve), 3000, "open");
  await withDeadline(accepted.promise, 3000, "accept");
  // Consume while sending, as a real reader does.
  const got: Uint8Array[] = [];
  const consumer = (async () => {
    for await (const frame of relay) {
      if (frame.streamId === "end") break;
      got.push(Uint8Array.from(frame.bytes));
    }
  })();
  const expected: Uint8Array[] = [];
  let hostile = 0;
  let texts = 0;
  const cases = SOAK ? 100_000 : 5_000;
  for (let i = 0; i < cases; i++) {
    if (rng.chance(0.02)) {
      ws.send(rng.chance(0.5) ? '{"jsonrpc":"2.0"}' : "");
      texts++;
      continue;
    }
    const [, bytes] = hostileBytes(rng);
    let valid = true;
    try {
      decodeFrame(bytes);
    } catch {
      valid = false;
    }
    if (valid) expected.push(bytes);
    else hostile++;
    ws.send(bytes);
    // Let the server read now and then, as a real sender would under backpressure.
    if (i % 1000 === 999) await new Promise((resolve) => setTimeout(resolve, 0));
  }
  // A sentinel marks the end.
  const sentinel = encodeFrame({
    version: 1,
    streamId: "end",
    ack: 0,
    ackBits: 0,
    body: { kind: "heartbeat" },
  });
  ws.send(sentinel);
  await withDeadline(consumer, 60_000, "relay delivery");
  assert.equal(got.length, expected.length);
  for (let i = 0; i < got.length; i++) assert.deepEqual(got[i], Uint8Array.from(expected[i]));
  assert.equal(errors.length, hostile + texts);
  assert.ok(errors.every((e) => e instanceof ProtocolError && e.message.startsWith("Cannot ")));
  const closed = new Promise((resolve) => ws.onclose = resolve);
  await relay.close();
  await withDeadline(closed, 3000, "client close");
  await server.shutdown();
  record({
    area: "bad input",
    name:
      "RelaySocket over a real WebSocket: hostile binary and text messages mixed with valid frames",
    cases: cases + 1,
    result:
      "every invalid message dropped and reported, every valid frame delivered in order, byte-identical",
    details: { seed: SEED ^ 0x1234, valid: expected.length, invalid: hostile, text: texts },
  });
});

Deno.test("RelaySocket refuses a frame one byte over its limit and keeps serving", async () => {
  const errors: ProtocolError[] = [];
  let relay!: RelaySocket;
  const accepted = Promise.withResolvers<void>();
  const limit = 1024;
  const { server, url } = startRelayServer(
    { maxFrameBytes: limit, onProtocolError: (e) => errors.push(e) },
    (r) => {
      relay = r;
      accepted.resolve();
    },
  );
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await withDeadline(new Promise((resolve) => ws.onopen = resolve), 3000, "open");
  await withDeadline(accepted.promise, 3000, "accept");
  const frameOf = (n: number, id: string): Uint8Array =>
    encodeFrame({
      version: 1,
      streamId: id,
      ack: 0,
      ackBits: 0,
      body: { kind: "data", seq: 1, segmentIndex: 0, segmentCount: 1, payload: new Uint8Array(n) },
    });
  let n = limit - 20;
  while (frameOf(n + 1, "a").length <= limit) n++;
  assert.equal(frameOf(n, "a").length, limit);
  ws.send(frameOf(n + 1, "b")); // one over: dropped
  ws.send(frameOf(n, "a")); // at the limit: delivered
  const it = relay[Symbol.asyncIterator]();
  const first = await withDeadline(it.next(), 3000, "frame");
  assert.equal(first.value?.streamId, "a");
  assert.equal(errors.length, 1);
  assert.match(
    errors[0].message,
    new RegExp(`length ${limit + 1} exceeds the ${limit} byte limit`),
  );
  const closed = new Promise((resolve) => ws.onclose = resolve);
  await relay.close();
  await withDeadline(closed, 3000, "client close");
  await server.shutdown();
});
