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
