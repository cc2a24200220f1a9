/**
 * Encode and decode `codex.exec_server.relay.v1.RelayMessageFrame`, the relay
 * envelope, with the protobufjs code generated from `proto/relay.proto`
 * (`deno task gen`). Decoding validates every frame (see {@linkcode decodeFrame});
 * nothing reads `.proto` files at run time.
 *
 * @module
 */

// @ts-types="./_relay_pb.d.ts"
import { codex } from "./_gen/relay_pb.js";
import type { PbFrame } from "./_relay_pb.d.ts";
import { ProtocolError } from "../errors.ts";

const PbRelayMessageFrame = codex.exec_server.relay.v1.RelayMessageFrame;

/** The only envelope version outpost and Codex speak. */
export const RELAY_FRAME_VERSION = 1;
/** Default upper bound on one encoded frame, in bytes (256 KiB, as upstream). */
export const DEFAULT_MAX_FRAME_BYTES = 256 * 1024;
/** Upper bound on `stream_id`, in UTF-8 bytes. */
export const MAX_STREAM_ID_BYTES = 128;
/** Upper bound on a reset reason, in UTF-8 bytes. */
export const MAX_RESET_REASON_BYTES = 256;
/** The largest value of a protobuf `uint32`. */
export const MAX_UINT32 = 0xffff_ffff;

/** Application payload: one segment of one message. */
export interface DataBody {
  /** Discriminant. */
  kind: "data";
  /** Segment sequence number in this direction of this stream. */
  seq: number;
  /** 0-based index of this segment inside its message. */
  segmentIndex: number;
  /** Number of segments of the message (at least 1). */
  segmentCount: number;
  /** The segment bytes; never empty. */
  payload: Uint8Array;
}

/** A standalone acknowledgement; the ack itself is in the frame's `ack`/`ackBits`. */
export interface AckBody {
  /** Discriminant. */
  kind: "ack";
}

/** A stream claim or resume marker. */
export interface ResumeBody {
  /** Discriminant. */
  kind: "resume";
  /** The next sequence number the sender will use. */
  nextSeq: number;
}

/** Tears down one stream. */
export interface ResetBody {
  /** Discriminant. */
  kind: "reset";
  /** Why, 1..256 bytes; outpost uses the fixed set in PROTOCOL.md. */
  reason: string;
}

/** Reserved liveness frame; every receiver ignores it. */
export interface HeartbeatBody {
  /** Discriminant. */
  kind: "heartbeat";
}

/** An opaque handshake message (Codex Noise relays); carried, never interpreted. */
export interface HandshakeBody {
  /** Discriminant. */
  kind: "handshake";
  /** The handshake bytes; never empty. */
  payload: Uint8Array;
}

/** The body of a relay frame, discriminated by `kind`. */
export type FrameBody =
  | DataBody
  | AckBody
  | ResumeBody
  | ResetBody
  | HeartbeatBody
  | HandshakeBody;

/** One relay frame: the envelope fields plus exactly one body. */
export interface RelayFrame {
  /** Envelope version; always {@linkcode RELAY_FRAME_VERSION}. */
  version: number;
  /** The virtual stream this frame belongs to. */
  streamId: string;
  /** Highest contiguous peer seq received (0: none). */
  ack: number;
  /** Bit i acknowledges seq `ack + 1 + i`. */
  ackBits: number;
  /** The frame's body. */
  body: FrameBody;
  /** W3C trace context, when the sender propagates one. */
  traceparent?: string;
  /** W3C trace state, companion of `traceparent`. */
  tracestate?: string;
}

/** Options for {@linkcode decodeFrame}. */
export interface DecodeFrameOptions {
  /**
   * Frames longer than this many bytes are refused before decoding.
   * @default {262144}
   */
  maxFrameBytes?: number;
}

const utf8 = new TextEncoder();

/**
 * UTF-8 length of a well-formed string, counted without allocating. (Lone
 * surrogates are refused before this is used, see `stringDefect`.)
 */
function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (c >= 0xd800 && c <= 0xdbff) {
      bytes += 2; // a surrogate pair: 2 code units, 4 bytes
      i++;
    } else bytes += 2;
  }
  return bytes;
}

/** Why a string field cannot be sent as UTF-8, or `undefined` when it can. */
function stringDefect(name: string, text: string): string | undefined {
  if (typeof text !== "string") return `${name} is not a string`;
  if (!text.isWellFormed()) return `${name} is not valid UTF-16 (lone surrogate)`;
  return undefined;
}

function isUint32(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 &&
    value <= MAX_UINT32;
}

/**
 * Returns what is wrong with a frame, or `undefined` when it is valid. Shared
 * by the encoder (caller mistakes) and the decoder (peer mistakes).
 */
function frameDefect(frame: RelayFrame): string | undefined {
  if (frame.version !== RELAY_FRAME_VERSION) {
    return `version ${frame.version} is not ${RELAY_FRAME_VERSION}`;
  }
  const id = frame.streamId;
  if (typeof id !== "string" || id.length === 0) return "stream_id is empty";
  if (id.trim() !== id) return "stream_id has surrounding whitespace";
  const idDefect = stringDefect("stream_id", id);
  if (idDefect !== undefined) return idDefect;
  const idBytes = utf8Length(id);
  if (idBytes > MAX_STREAM_ID_BYTES) {
    return `stream_id is ${idBytes} bytes, over the ${MAX_STREAM_ID_BYTES} byte limit`;
  }
  if (!isUint32(frame.ack)) return `ack ${frame.ack} is not a uint32`;
  if (!isUint32(frame.ackBits)) return `ack_bits ${frame.ackBits} is not a uint32`;
  if (frame.traceparent !== undefined) {
    const defect = stringDefect("traceparent", frame.traceparent);
    if (defect !== undefined) return defect;
  }
  if (frame.tracestate !== undefined) {
    const defect = stringDefect("tracestate", frame.tracestate);
    if (defect !== undefined) return defect;
  }
  const body = frame.body;
  switch (body?.kind) {
    case "data":
      if (!isUint32(body.seq)) return `seq ${body.seq} is not a uint32`;
      if (!isUint32(body.segmentCount) || body.segmentCount === 0) {
        return `segment_count ${body.segmentCount} is not at least 1`;
      }
      if (!isUint32(body.segmentIndex) || body.segmentIndex >= body.segmentCount) {
        return `segment_index ${body.segmentIndex} is not below segment_count ${body.segmentCount}`;
      }
      if (!(body.payload instanceof Uint8Array) || body.payload.length === 0) {
        return "data payload is empty";
      }
      return undefined;
    case "reset": {
      if (typeof body.reason !== "string" || body.reason.length === 0) {
        return "reset reason is empty";
      }
      const reasonDefect = stringDefect("reset reason", body.reason);
      if (reasonDefect !== undefined) return reasonDefect;
      const reasonBytes = utf8Length(body.reason);
      if (reasonBytes > MAX_RESET_REASON_BYTES) {
        return `reset reason is ${reasonBytes} bytes, over the ${MAX_RESET_REASON_BYTES} byte limit`;
      }
      return undefined;
    }
    case "handshake":
      if (!(body.payload instanceof Uint8Array) || body.payload.length === 0) {
        return "handshake payload is empty";
      }
      return undefined;
    case "resume":
      return isUint32(body.nextSeq) ? undefined : `next_seq ${body.nextSeq} is not a uint32`;
    case "ack":
    case "heartbeat":
      return undefined;
    default:
      return "no body";
  }
}

/**
 * A `reset` frame for a stream, with no ack: what a mux or the rendezvous
 * sends to end a stream it holds no sequence state for.
 *
 * @param streamId The stream.
 * @param reason Why, e.g. `unknown_stream`.
 * @returns The frame, to encode with {@linkcode encodeFrame}.
 */
export function resetFrame(streamId: string, reason: string): RelayFrame {
  return {
    version: RELAY_FRAME_VERSION,
    streamId,
    ack: 0,
    ackBits: 0,
    body: { kind: "reset", reason },
  };
}

/**
 * Encodes a frame as canonical proto3 bytes (zero scalars omitted, the body
 * always present), ready to send as one binary WebSocket message.
 *
 * @example Encode a resume frame
 * ```ts
 * import { encodeFrame } from "@outpost/exec";
 * const bytes = encodeFrame({
 *   version: 1,
 *   streamId: "s-1",
 *   ack: 0,
 *   ackBits: 0,
 *   body: { kind: "resume", nextSeq: 0 },
 * });
 * console.log(bytes); // Uint8Array [8, 1, 18, 3, 115, 45, 49, 58, 0]
 * ```
 *
 * @param frame The frame to encode.
 * @returns The encoded bytes.
 * @throws {TypeError} If the frame is not valid (the message names the defect).
 */
export function encodeFrame(frame: RelayFrame): Uint8Array {
  const defect = frameDefect(frame);
  if (defect !== undefined) throw new TypeError(`Cannot encode frame: ${defect}`);
  if (frame.body.kind === "data") return encodeDataFrame(frame, frame.body);
  return encodeWithProtobufjs(frame);
}

/**
 * Encodes a data frame without trace fields as the bytes that precede its
 * payload: the whole frame is `head` followed by `frame.body.payload`, so a
 * writer can send the two parts without first copying the payload into one
 * buffer. Other frames return `undefined` (use {@linkcode encodeFrame}).
 *
 * @example
 * ```ts
 * import { encodeDataFrameHead, encodeFrame } from "./frame_codec.ts";
 * const frame = {
 *   version: 1, streamId: "s-1", ack: 0, ackBits: 0,
 *   body: { kind: "data" as const, seq: 1, segmentIndex: 0, segmentCount: 1, payload: new Uint8Array([104, 105]) },
 * };
 * const head = encodeDataFrameHead(frame)!;
 * console.log(head.length + 2 === encodeFrame(frame).length); // true
 * ```
 *
 * @param frame The frame.
 * @returns The head bytes, or `undefined` for a frame that is not plain data.
 * @throws {TypeError} If the frame is invalid.
 */
export function encodeDataFrameHead(frame: RelayFrame): Uint8Array | undefined {
  const body = frame.body;
  if (
    body.kind !== "data" || frame.traceparent !== undefined || frame.tracestate !== undefined
  ) return undefined;
  const defect = frameDefect(frame);
  if (defect !== undefined) throw new TypeError(`Cannot encode frame: ${defect}`);
  return encodeDataFrame(frame, body, true);
}

function varintLength(value: number): number {
  return value < 0x80
    ? 1
    : value < 0x4000
    ? 2
    : value < 0x20_0000
    ? 3
    : value < 0x1000_0000
    ? 4
    : 5;
}

function writeVarint(out: Uint8Array, at: number, value: number): number {
  while (value > 0x7f) {
    out[at++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  out[at++] = value;
  return at;
}

/** Writes a string whose UTF-8 length is `bytes`; ASCII without allocating. */
function writeString(out: Uint8Array, at: number, text: string, bytes: number): number {
  if (bytes === text.length) {
    for (let i = 0; i < bytes; i++) out[at + i] = text.charCodeAt(i);
  } else {
    utf8.encodeInto(text, out.subarray(at, at + bytes));
  }
  return at + bytes;
}

/**
 * The hot path: a data frame written straight into one exactly sized buffer,
 * byte for byte what the protobufjs encoder produces (fields in number order,
 * zero scalars omitted); `tests/frame_codec_test.ts` checks that.
 */
function encodeDataFrame(frame: RelayFrame, body: DataBody, headOnly = false): Uint8Array {
  const idBytes = utf8Length(frame.streamId);
  const payloadLength = body.payload.length;
  // Tags of segment_count (always >= 1) and payload, one byte of the count.
  let inner = 3 + varintLength(payloadLength) + payloadLength;
  if (body.seq !== 0) inner += 1 + varintLength(body.seq);
  if (body.segmentIndex !== 0) inner += 1 + varintLength(body.segmentIndex);
  inner += varintLength(body.segmentCount) - 1;
  let total = 2 + 1 + varintLength(idBytes) + idBytes + 1 + varintLength(inner) + inner;
  if (frame.ack !== 0) total += 1 + varintLength(frame.ack);
  if (frame.ackBits !== 0) total += 1 + varintLength(frame.ackBits);
  let parentBytes = 0;
  let stateBytes = 0;
  if (frame.traceparent !== undefined) {
    parentBytes = utf8Length(frame.traceparent);
    total += 1 + varintLength(parentBytes) + parentBytes;
  }
  if (frame.tracestate !== undefined) {
    stateBytes = utf8Length(frame.tracestate);
    total += 1 + varintLength(stateBytes) + stateBytes;
  }
  const out = new Uint8Array(headOnly ? total - payloadLength : total);
  out[0] = 0x08;
  out[1] = RELAY_FRAME_VERSION;
  out[2] = 0x12;
  let at = writeString(out, writeVarint(out, 3, idBytes), frame.streamId, idBytes);
  if (frame.ack !== 0) {
    out[at++] = 0x18;
    at = writeVarint(out, at, frame.ack);
  }
  if (frame.ackBits !== 0) {
    out[at++] = 0x20;
    at = writeVarint(out, at, frame.ackBits);
  }
  out[at++] = 0x2a;
  at = writeVarint(out, at, inner);
  if (body.seq !== 0) {
    out[at++] = 0x08;
    at = writeVarint(out, at, body.seq);
  }
  if (body.segmentIndex !== 0) {
    out[at++] = 0x10;
    at = writeVarint(out, at, body.segmentIndex);
  }
  out[at++] = 0x18;
  at = writeVarint(out, at, body.segmentCount);
  out[at++] = 0x22;
  at = writeVarint(out, at, payloadLength);
  if (headOnly) return out;
  out.set(body.payload, at);
  at += payloadLength;
  if (frame.traceparent !== undefined) {
    out[at++] = 0x5a;
    at = writeString(out, writeVarint(out, at, parentBytes), frame.traceparent, parentBytes);
  }
  if (frame.tracestate !== undefined) {
    out[at++] = 0x62;
    at = writeString(out, writeVarint(out, at, stateBytes), frame.tracestate, stateBytes);
  }
  return out;
}

/**
 * Encodes any valid frame with the generated protobufjs code, into a plain
 * `Uint8Array` that owns its memory (protobufjs hands out Node `Buffer`
 * slices of a shared pool under Deno). Used for every body except data, and
 * by the tests as the reference for the data fast path.
 *
 * @param frame A frame that passed validation.
 * @returns The encoded bytes.
 */
export function encodeWithProtobufjs(frame: RelayFrame): Uint8Array {
  const message: PbFrame = {
    version: frame.version,
    streamId: frame.streamId,
    ack: frame.ack,
    ackBits: frame.ackBits,
  };
  const body = frame.body;
  switch (body.kind) {
    case "data":
      message.data = {
        seq: body.seq,
        segmentIndex: body.segmentIndex,
        segmentCount: body.segmentCount,
        payload: body.payload,
      };
      break;
    case "ack":
      message.ackFrame = {};
      break;
    case "resume":
      message.resume = { nextSeq: body.nextSeq };
      break;
    case "reset":
      message.reset = { reason: body.reason };
      break;
    case "heartbeat":
      message.heartbeat = {};
      break;
    case "handshake":
      message.handshake = { payload: body.payload };
      break;
  }
  if (frame.traceparent !== undefined) message.traceparent = frame.traceparent;
  if (frame.tracestate !== undefined) message.tracestate = frame.tracestate;
  return new Uint8Array(PbRelayMessageFrame.encode(message).finish());
}

function toBody(message: PbFrame): FrameBody | undefined {
  switch (message.body) {
    case "data": {
      const data = message.data!;
      return {
        kind: "data",
        seq: data.seq ?? 0,
        segmentIndex: data.segmentIndex ?? 0,
        segmentCount: data.segmentCount ?? 0,
        payload: data.payload ?? new Uint8Array(0),
      };
    }
    case "ackFrame":
      return { kind: "ack" };
    case "resume":
      return { kind: "resume", nextSeq: message.resume!.nextSeq ?? 0 };
    case "reset":
      return { kind: "reset", reason: message.reset!.reason ?? "" };
    case "heartbeat":
      return { kind: "heartbeat" };
    case "handshake":
      return { kind: "handshake", payload: message.handshake!.payload ?? new Uint8Array(0) };
    default:
      return undefined;
  }
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Reads the `stream_id` of a frame without decoding the rest: its other
 * fields are skipped by their lengths, nothing is copied. Used for a frame
 * refused for its size, so that its stream can be told instead of waiting
 * for a reply that will never come.
 *
 * @example
 * ```ts
 * import { peekStreamId } from "./frame_codec.ts";
 * console.log(peekStreamId(new Uint8Array([8, 1, 18, 3, 115, 45, 49, 58, 0]))); // "s-1"
 * ```
 *
 * @param bytes One binary WebSocket message.
 * @returns The stream id (the last one, as protobuf reads it), or `undefined`
 *   when the bytes are malformed or the id is empty, padded or over 128 bytes.
 */
export function peekStreamId(bytes: Uint8Array): string | undefined {
  let at = 0;
  const varint = (): number | undefined => {
    let value = 0;
    for (let scale = 1, i = 0; i < 10 && at < bytes.length; i++, scale *= 128) {
      const byte = bytes[at++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
    }
    return undefined;
  };
  let id: string | null | undefined; // null: present but not a valid id
  // A frame has at most a dozen fields; a flood of tiny ones is not a frame.
  for (let fields = 0; at < bytes.length; fields++) {
    const tag = varint();
    if (tag === undefined || fields >= 64) return undefined;
    const wire = tag % 8;
    if (wire === 0) {
      if (varint() === undefined) return undefined;
    } else if (wire === 1 || wire === 5) {
      at += wire === 1 ? 8 : 4;
    } else if (wire === 2) {
      const length = varint();
      if (length === undefined || length > bytes.length - at) return undefined;
      if (tag === 18) { // field 2, stream_id; one too long is not decoded
        try {
          id = length <= MAX_STREAM_ID_BYTES
            ? strictUtf8.decode(bytes.subarray(at, at + length))
            : null;
        } catch {
          id = null;
        }
      }
      at += length;
    } else {
      return undefined;
    }
  }
  if (at !== bytes.length || id == null || id.length === 0 || id.trim() !== id) {
    return undefined;
  }
  return id;
}

/**
 * Decodes and validates one frame. Unknown fields are skipped. The frame is
 * refused when it is longer than the limit, truncated or malformed, has a
 * version other than 1, a `stream_id` that is empty, whitespace-padded or over
 * 128 bytes, no body, a data frame with an empty payload or a bad segment
 * index or count, a reset reason empty or over 256 bytes, or an empty
 * handshake payload.
 *
 * @example Decode the upstream example frame
 * ```ts
 * import { decodeFrame } from "@outpost/exec";
 * const frame = decodeFrame(new Uint8Array([8, 1, 18, 3, 115, 45, 49, 58, 0]));
 * console.log(frame.streamId, frame.body); // "s-1" { kind: "resume", nextSeq: 0 }
 * ```
 *
 * @param bytes One binary WebSocket message.
 * @param options The size limit.
 * @returns The decoded frame.
 * @throws {ProtocolError} If the bytes are not a valid frame; the message names the defect.
 */
export function decodeFrame(bytes: Uint8Array, options: DecodeFrameOptions = {}): RelayFrame {
  const limit = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (bytes.length > limit) {
    throw new ProtocolError(
      `Cannot decode frame: length ${bytes.length} exceeds the ${limit} byte limit`,
    );
  }
  let message: PbFrame;
  try {
    message = PbRelayMessageFrame.decode(bytes);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new ProtocolError(`Cannot decode frame: malformed protobuf: ${detail}`, {
      cause: error,
    });
  }
  const body = toBody(message);
  if (body === undefined) throw new ProtocolError("Cannot decode frame: no body");
  const frame: RelayFrame = {
    version: message.version ?? 0,
    streamId: message.streamId ?? "",
    ack: message.ack ?? 0,
    ackBits: message.ackBits ?? 0,
    body,
  };
  if (message.traceparent != null) frame.traceparent = message.traceparent;
  if (message.tracestate != null) frame.tracestate = message.tracestate;
  const defect = frameDefect(frame);
  if (defect !== undefined) throw new ProtocolError(`Cannot decode frame: ${defect}`);
  return frame;
}
