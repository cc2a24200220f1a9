/**
 * Generators of hostile relay frames for the fuzz tests: raw protobuf bytes
 * (wrong wire types, oversize lengths, over-long varints, unknown fields,
 * truncation, bit flips) and valid frames with absurd field values (seqs,
 * acks, ack_bits for unsent seqs, segment indexes, reassembly bombs).
 *
 * @module
 */

import { encodeFrame, type FrameBody, type RelayFrame } from "../../lib/relay/frame_codec.ts";
import type { Prng } from "./prng.ts";

/** A minimal protobuf writer that can also write what a real encoder never would. */
export class RawProto {
  #bytes: number[] = [];

  /**
   * Appends a base-128 varint (up to 64 bits via two halves).
   *
   * @param value A non-negative integer (<= 2^53).
   * @returns this
   */
  varint(value: number): this {
    let v = value;
    while (v >= 0x80) {
      this.#bytes.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.#bytes.push(v);
    return this;
  }

  /**
   * Appends a field key.
   *
   * @param field Field number.
   * @param wireType 0..7.
   * @returns this
   */
  key(field: number, wireType: number): this {
    return this.varint(field * 8 + wireType);
  }

  /**
   * Appends raw bytes.
   *
   * @param bytes What to append.
   * @returns this
   */
  raw(bytes: ArrayLike<number>): this {
    for (let i = 0; i < bytes.length; i++) this.#bytes.push(bytes[i] & 0xff);
    return this;
  }

  /**
   * Appends a length-delimited field.
   *
   * @param field Field number.
   * @param bytes Content.
   * @param claimedLength A length to write instead of the real one.
   * @returns this
   */
  lengthDelimited(field: number, bytes: ArrayLike<number>, claimedLength?: number): this {
    this.key(field, 2).varint(claimedLength ?? bytes.length);
    return this.raw(bytes);
  }

  /**
   * Returns the bytes written.
   *
   * @returns A new array.
   */
  finish(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }
}

const encoder = new TextEncoder();

/** Stream ids used by the generators: some valid, some not. */
export const HOSTILE_STREAM_IDS: readonly string[] = [
  "s-1",
  "",
  " s",
  "s ",
  "\u0000",
  "x".repeat(128),
  "x".repeat(129),
  "é".repeat(64),
  "é".repeat(65),
  "../../etc/passwd",
  "\ud800",
  "%2e%2e",
];

/**
 * A valid frame body of a random kind with random (possibly absurd) values.
 *
 * @param rng Random source.
 * @param maxPayload Upper bound on payload length.
 * @returns A body that passes validation.
 */
export function randomValidBody(rng: Prng, maxPayload = 64): FrameBody {
  switch (rng.int(0, 5)) {
    case 0:
    case 1: {
      const count = rng.chance(0.5) ? 1 : Math.max(1, rng.edgeUint32());
      return {
        kind: "data",
        seq: rng.edgeUint32(),
        segmentIndex: rng.int(0, Math.min(count - 1, 0xffff_fffe)),
        segmentCount: count,
        payload: rng.bytes(rng.int(1, maxPayload)),
      };
    }
    case 2:
      return { kind: "ack" };
    case 3:
      return { kind: "resume", nextSeq: rng.edgeUint32() };
    case 4:
      return { kind: "reset", reason: "r".repeat(rng.int(1, 256)) };
    default:
      return rng.chance(0.5)
        ? { kind: "heartbeat" }
        : { kind: "handshake", payload: rng.bytes(rng.int(1, maxPayload)) };
  }
}

/**
 * A valid frame with random values on the given stream.
 *
 * @param rng Random source.
 * @param streamId The stream.
 * @returns The frame.
 */
export function randomValidFrame(rng: Prng, streamId = "s-1"): RelayFrame {
  const frame: RelayFrame = {
    version: 1,
    streamId,
    ack: rng.edgeUint32(),
    ackBits: rng.edgeUint32(),
    body: randomValidBody(rng),
  };
  if (rng.chance(0.05)) frame.traceparent = "00-" + "a".repeat(rng.int(0, 80));
  if (rng.chance(0.05)) frame.tracestate = "k=v";
  return frame;
}

/**
 * Raw protobuf bytes that a correct encoder would never produce: wrong wire
 * types, oversize length prefixes, over-long varints, groups, unknown fields,
 * missing or duplicated bodies, bodies with wrong inner types.
 *
 * @param rng Random source.
 * @returns The bytes.
 */
export function randomRawFrame(rng: Prng): Uint8Array {
  const w = new RawProto();
  const fields = rng.int(0, 8);
  for (let i = 0; i < fields; i++) {
    const field = rng.chance(0.8) ? rng.int(1, 12) : rng.pick([0, 13, 99, 536870911, 19000]);
    const wireType = rng.chance(0.7) ? rng.pick([0, 2]) : rng.int(0, 7);
    w.key(field, wireType);
    switch (wireType) {
      case 0:
        if (rng.chance(0.1)) w.raw(new Array(rng.int(10, 14)).fill(0xff)); // over-long varint
        else w.varint(rng.chance(0.5) ? rng.edgeUint32() : rng.int(0, 2 ** 53 - 1));
        break;
      case 1:
        w.raw(rng.bytes(rng.chance(0.9) ? 8 : rng.int(0, 7)));
        break;
      case 2: {
        const inner = rng.chance(0.5) ? randomInnerMessage(rng) : rng.bytes(rng.int(0, 40));
        const claimed = rng.chance(0.2)
          ? rng.pick([inner.length + 1, inner.length + 1000, 0x7fff_ffff, 0xffff_ffff, 2 ** 40])
          : undefined;
        w.varint(claimed ?? inner.length).raw(inner);
        break;
      }
      case 3:
      case 4:
        // start/end group: deprecated, protobufjs should reject or skip
        if (rng.chance(0.5)) w.raw(rng.bytes(rng.int(0, 6)));
        break;
      case 5:
        w.raw(rng.bytes(rng.chance(0.9) ? 4 : rng.int(0, 3)));
        break;
      default:
        w.raw(rng.bytes(rng.int(0, 4)));
    }
  }
  return w.finish();
}

/** A random inner (body) message: a RelayData-like message with odd values. */
function randomInnerMessage(rng: Prng): Uint8Array {
  const w = new RawProto();
  const n = rng.int(0, 5);
  for (let i = 0; i < n; i++) {
    const field = rng.int(1, 5);
    const wireType = rng.chance(0.8) ? (field === 4 ? 2 : 0) : rng.int(0, 5);
    w.key(field, wireType);
    if (wireType === 0) w.varint(rng.edgeUint32());
    else if (wireType === 2) w.lengthDelimited(field, rng.bytes(rng.int(0, 20))); // nested key twice: garbage on purpose
    else if (wireType === 1) w.raw(rng.bytes(8));
    else if (wireType === 5) w.raw(rng.bytes(4));
  }
  return w.finish();
}

/**
 * Mutates encoded bytes: bit flips, truncation, insertion, deletion,
 * duplication of a slice, or splicing random bytes.
 *
 * @param rng Random source.
 * @param input The original bytes (not modified).
 * @returns The mutated copy.
 */
export function mutate(rng: Prng, input: Uint8Array): Uint8Array {
  let bytes: Uint8Array = input.slice();
  const steps = rng.int(1, 4);
  for (let s = 0; s < steps; s++) {
    const op = rng.int(0, 6);
    if (bytes.length === 0 && op !== 3) {
      bytes = rng.bytes(rng.int(1, 8));
      continue;
    }
    const at = rng.int(0, Math.max(0, bytes.length - 1));
    switch (op) {
      case 0:
      case 1: // bit flip
        bytes[at] ^= 1 << rng.int(0, 7);
        break;
      case 2: // truncate
        bytes = bytes.slice(0, at);
        break;
      case 3: { // insert
        const extra = rng.bytes(rng.int(1, 6));
        const next = new Uint8Array(bytes.length + extra.length);
        next.set(bytes.subarray(0, at));
        next.set(extra, at);
        next.set(bytes.subarray(at), at + extra.length);
        bytes = next;
        break;
      }
      case 4: { // delete
        const n = rng.int(1, Math.min(6, bytes.length - at));
        const next = new Uint8Array(bytes.length - n);
        next.set(bytes.subarray(0, at));
        next.set(bytes.subarray(at + n), at);
        bytes = next;
        break;
      }
      case 5: // set a byte to a boundary value
        bytes[at] = rng.pick([0x00, 0x7f, 0x80, 0xff]);
        break;
      default: { // duplicate a slice
        const end = rng.int(at, bytes.length);
        const slice = bytes.slice(at, end);
        const next = new Uint8Array(bytes.length + slice.length);
        next.set(bytes.subarray(0, end));
        next.set(slice, end);
        next.set(bytes.subarray(end), end + slice.length);
        bytes = next;
      }
    }
  }
  return bytes;
}

/**
 * Encodes a valid random frame, then mutates it.
 *
 * @param rng Random source.
 * @returns Mutated bytes.
 */
export function mutatedFrame(rng: Prng): Uint8Array {
  const streamId = rng.chance(0.8) ? "s-1" : rng.pick(["x".repeat(128), "é".repeat(64), "a b"]);
  return mutate(rng, encodeFrame(randomValidFrame(rng, streamId)));
}

/**
 * A hand-built frame whose one field breaks a rule: a hostile stream id, a
 * version other than 1, an empty payload, a segment index past its count, a
 * zero count, an empty or oversize reset reason, a body-less frame.
 *
 * @param rng Random source.
 * @returns The bytes.
 */
export function ruleBreakingFrame(rng: Prng): Uint8Array {
  const w = new RawProto();
  const version = rng.chance(0.7) ? 1 : rng.pick([0, 2, 0xffff_ffff]);
  if (version !== 0) w.key(1, 0).varint(version);
  const id = rng.pick(HOSTILE_STREAM_IDS);
  if (id.length > 0) w.lengthDelimited(2, encoder.encode(id));
  w.key(3, 0).varint(rng.edgeUint32());
  w.key(4, 0).varint(rng.edgeUint32());
  switch (rng.int(0, 5)) {
    case 0: { // data with a bad segment layout or empty payload
      const d = new RawProto();
      d.key(1, 0).varint(rng.edgeUint32());
      const count = rng.pick([0, 1, 2, 0xffff_ffff]);
      const index = rng.pick([0, 1, count, count + 1, 0xffff_ffff]);
      if (index) d.key(2, 0).varint(index);
      if (count) d.key(3, 0).varint(count);
      if (rng.chance(0.7)) d.lengthDelimited(4, rng.bytes(rng.int(1, 16)));
      w.lengthDelimited(5, d.finish());
      break;
    }
    case 1: { // reset with an empty, limit or over-limit reason
      const reason = "r".repeat(rng.pick([0, 1, 256, 257, 4096]));
      w.lengthDelimited(
        8,
        reason.length ? new RawProto().lengthDelimited(1, encoder.encode(reason)).finish() : [],
      );
      break;
    }
    case 2: // handshake with or without payload
      w.lengthDelimited(10, rng.chance(0.5) ? [] : new RawProto().lengthDelimited(1, [1]).finish());
      break;
    case 3: // two bodies: the last one wins in proto3 oneof semantics
      w.lengthDelimited(6, []).lengthDelimited(9, []);
      break;
    case 4: // no body at all
      break;
    default: // body field with wrong wire type
      w.key(rng.int(5, 10), 0).varint(1);
  }
  return w.finish();
}
