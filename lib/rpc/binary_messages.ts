/**
 * outpost's binary messages: `process/output` notifications and
 * `process/write` requests without JSON or base64, for sessions that
 * negotiated them in `initialize` (`binaryOutput` / `binaryInput`: true both
 * ways; see PROTOCOL.md §9). A Codex peer never offers them and keeps JSON.
 *
 * Layout (all integers big-endian); both kinds share the first 12 bytes:
 *
 * | bytes | output (kind 1, executor → harness) | write (kind 2, harness → executor) |
 * | --- | --- | --- |
 * | 1 | marker `0x00` (never the first byte of a JSON text) | marker `0x00` |
 * | 1 | kind `0x01` | kind `0x02` |
 * | 1 | stream: 0 stdout, 1 stderr, 2 pty | flags: bit 0 `eof`, others 0 |
 * | 1 | processId length in UTF-8 bytes, 1..255 | the same |
 * | 8 | seq (u64, at most 2^53 - 1) | JSON-RPC request id (u64, at most 2^53 - 1) |
 * | n | processId (UTF-8) | processId (UTF-8) |
 * | rest | the output bytes, exactly as read from the child | the bytes for the child's stdin |
 *
 * A write is a request: its reply is an ordinary JSON-RPC response (or error)
 * with that id, exactly as for `process/write`.
 *
 * Encoding output writes the header into free room before the chunk when the
 * reader left some (no copy), else copies the chunk once; decoding copies nothing.
 *
 * @module
 */

/** First byte of every binary message; a JSON text never starts with NUL. */
export const BINARY_MARKER = 0x00;
/** The kind byte of a process output message. */
export const BINARY_KIND_OUTPUT = 0x01;
/** The kind byte of a process write request. */
export const BINARY_KIND_WRITE = 0x02;
/** Bytes before the processId, in every kind. */
export const BINARY_OUTPUT_FIXED_BYTES = 12;
/** The longest processId (UTF-8 bytes) a binary message carries. */
export const MAX_BINARY_PROCESS_ID_BYTES = 255;
/**
 * The most data bytes a binary message carries while still fitting one
 * 61,440-byte relay segment whatever its processId: output is read in pieces
 * of this size, so each chunk travels as one frame and is never reassembled.
 * (Stdin is not cut to it: see the client's write piece size.)
 */
export const SEGMENT_FIT_DATA_BYTES = 61_440 - BINARY_OUTPUT_FIXED_BYTES -
  MAX_BINARY_PROCESS_ID_BYTES;

/** The stream an output chunk came from. */
export type BinaryOutputStream = "stdout" | "stderr" | "pty";

const STREAMS: readonly BinaryOutputStream[] = ["stdout", "stderr", "pty"];
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A decoded binary output message. */
export interface BinaryOutput {
  /** The process the output belongs to. */
  processId: string;
  /** The chunk's sequence number (shared with the process's exit and close events). */
  seq: number;
  /** Which stream the bytes came from. */
  stream: BinaryOutputStream;
  /** The output bytes (a view into the message). */
  chunk: Uint8Array;
}

/**
 * The processId's UTF-8 bytes when a binary message can carry it, else
 * `null` (the sender then falls back to the JSON notification).
 *
 * @param processId The process id.
 * @returns Its UTF-8 bytes, or null when empty or over 255 bytes.
 */
export function binaryProcessId(processId: string): Uint8Array | null {
  const bytes = encoder.encode(processId);
  return bytes.length >= 1 && bytes.length <= MAX_BINARY_PROCESS_ID_BYTES ? bytes : null;
}

/**
 * Encodes one output chunk as a binary message.
 *
 * @param processId The processId's UTF-8 bytes, from {@linkcode binaryProcessId}.
 * @param seq The chunk's seq, a safe non-negative integer.
 * @param stream The stream the bytes came from.
 * @param chunk The output bytes.
 * @param headroom Bytes just before `chunk` in its buffer that are free to
 *   write (the process table reads output with room for this header); when
 *   they hold the header, the message is a view over them and the chunk.
 * @returns The message.
 * @example
 * ```ts
 * import { binaryProcessId, decodeBinaryOutput, encodeBinaryOutput } from "@outpost/exec";
 * const message = encodeBinaryOutput(binaryProcessId("p1")!, 7, "stdout", new Uint8Array([104, 105]));
 * console.log(decodeBinaryOutput(message).seq); // 7
 * ```
 */
export function encodeBinaryOutput(
  processId: Uint8Array,
  seq: number,
  stream: BinaryOutputStream,
  chunk: Uint8Array,
  headroom = 0,
): Uint8Array {
  const start = BINARY_OUTPUT_FIXED_BYTES + processId.length;
  let message: Uint8Array;
  if (headroom >= start && chunk.byteOffset >= start) {
    // The header goes into the free bytes before the chunk: no copy.
    message = new Uint8Array(chunk.buffer, chunk.byteOffset - start, start + chunk.length);
  } else {
    message = new Uint8Array(start + chunk.length);
    message.set(chunk, start);
  }
  writeHeader(message, BINARY_KIND_OUTPUT, STREAMS.indexOf(stream), processId, seq);
  return message;
}

/**
 * True when a received message is a binary message (its first byte is the
 * marker) rather than JSON text.
 *
 * @param message The message bytes.
 * @returns Whether it starts with the marker.
 */
export function isBinaryMessage(message: Uint8Array): boolean {
  return message.length > 0 && message[0] === BINARY_MARKER;
}

/** A decoded binary write request. */
export interface BinaryWrite {
  /** The JSON-RPC id the reply carries. */
  requestId: number;
  /** The process whose stdin gets the bytes. */
  processId: string;
  /** Whether stdin closes after the bytes. */
  eof: boolean;
  /** The bytes (a view into the message). */
  data: Uint8Array;
}

/**
 * Encodes a `process/write` request as a binary message (one copy of `data`).
 *
 * @param processId The processId's UTF-8 bytes, from {@linkcode binaryProcessId}.
 * @param requestId The JSON-RPC request id, a safe non-negative integer.
 * @param eof Whether stdin closes after `data`.
 * @param data The bytes to write.
 * @returns The message.
 * @example
 * ```ts
 * import { binaryProcessId, decodeBinaryWrite, encodeBinaryWrite } from "@outpost/exec";
 * const message = encodeBinaryWrite(binaryProcessId("p1")!, 3, false, new Uint8Array([104, 105]));
 * console.log(decodeBinaryWrite(message).requestId); // 3
 * ```
 */
export function encodeBinaryWrite(
  processId: Uint8Array,
  requestId: number,
  eof: boolean,
  data: Uint8Array,
): Uint8Array {
  const start = BINARY_OUTPUT_FIXED_BYTES + processId.length;
  const message = new Uint8Array(start + data.length);
  message.set(data, start);
  writeHeader(message, BINARY_KIND_WRITE, eof ? 1 : 0, processId, requestId);
  return message;
}

/**
 * Decodes a binary output message.
 *
 * @param message The message bytes.
 * @returns The output it carries; `chunk` is a view into `message`.
 * @throws {TypeError} Naming the defect: no marker, an unknown kind or
 *   stream, a bad processId length or encoding, a seq past 2^53 - 1, or a
 *   message shorter than its header.
 */
export function decodeBinaryOutput(message: Uint8Array): BinaryOutput {
  const header = readHeader(message, "output", BINARY_KIND_OUTPUT);
  const stream = STREAMS[header.byte2];
  if (stream === undefined) throw defect("output", `stream ${header.byte2} is not 0, 1 or 2`);
  return {
    processId: header.processId,
    seq: header.number,
    stream,
    chunk: message.subarray(header.start),
  };
}

/**
 * Decodes a binary write request.
 *
 * @param message The message bytes.
 * @returns The request; `data` is a view into `message`.
 * @throws {TypeError} Naming the defect, as {@linkcode decodeBinaryOutput},
 *   or flags other than `eof`.
 */
export function decodeBinaryWrite(message: Uint8Array): BinaryWrite {
  const header = readHeader(message, "write", BINARY_KIND_WRITE);
  if ((header.byte2 & ~1) !== 0) {
    throw defect("write", `flags ${header.byte2} has bits other than eof (1)`);
  }
  return {
    requestId: header.number,
    processId: header.processId,
    eof: header.byte2 === 1,
    data: message.subarray(header.start),
  };
}

/**
 * Reads the request id of a binary write request when its first 12 bytes
 * hold one, so a malformed request can still be answered by id.
 *
 * @param message The message bytes.
 * @returns The id, or null when the message is not a write with a readable id.
 */
export function binaryWriteRequestId(message: Uint8Array): number | null {
  if (
    message.length < BINARY_OUTPUT_FIXED_BYTES || message[0] !== BINARY_MARKER ||
    message[1] !== BINARY_KIND_WRITE
  ) return null;
  const high = readUint32(message, 4);
  return high > 0x1f_ffff ? null : high * 0x1_0000_0000 + readUint32(message, 8);
}

function defect(kind: string, what: string): TypeError {
  return new TypeError(`Cannot decode binary ${kind} message: ${what}`);
}

function readUint32(message: Uint8Array, at: number): number {
  return (message[at] * 0x100_0000) +
    ((message[at + 1] << 16) | (message[at + 2] << 8) | message[at + 3]);
}

function writeHeader(
  message: Uint8Array,
  kind: number,
  byte2: number,
  processId: Uint8Array,
  number: number,
): void {
  message[0] = BINARY_MARKER;
  message[1] = kind;
  message[2] = byte2;
  message[3] = processId.length;
  const high = Math.floor(number / 0x1_0000_0000);
  const low = number >>> 0;
  message[4] = high >>> 24;
  message[5] = (high >>> 16) & 0xff;
  message[6] = (high >>> 8) & 0xff;
  message[7] = high & 0xff;
  message[8] = low >>> 24;
  message[9] = (low >>> 16) & 0xff;
  message[10] = (low >>> 8) & 0xff;
  message[11] = low & 0xff;
  message.set(processId, BINARY_OUTPUT_FIXED_BYTES);
}

function readHeader(
  message: Uint8Array,
  kind: string,
  kindByte: number,
): { byte2: number; number: number; processId: string; start: number } {
  if (message.length < BINARY_OUTPUT_FIXED_BYTES) {
    throw defect(
      kind,
      `${message.length} bytes is shorter than the ${BINARY_OUTPUT_FIXED_BYTES} byte header`,
    );
  }
  if (message[0] !== BINARY_MARKER) {
    throw defect(kind, `first byte ${message[0]} is not the marker 0`);
  }
  if (message[1] !== kindByte) {
    throw defect(kind, `kind ${message[1]} is not ${kindByte} (${kind})`);
  }
  const idLength = message[3];
  if (idLength === 0) throw defect(kind, "the processId is empty");
  const start = BINARY_OUTPUT_FIXED_BYTES + idLength;
  if (message.length < start) {
    throw defect(kind, `${message.length} bytes cannot hold a ${idLength} byte processId`);
  }
  const high = readUint32(message, 4);
  if (high > 0x1f_ffff) {
    throw defect(kind, `${kind === "output" ? "seq" : "the request id"} is past 2^53 - 1`);
  }
  const number = high * 0x1_0000_0000 + readUint32(message, 8);
  let processId: string;
  try {
    processId = decoder.decode(message.subarray(BINARY_OUTPUT_FIXED_BYTES, start));
  } catch {
    throw defect(kind, "the processId is not valid UTF-8");
  }
  return { byte2: message[2], number, processId, start };
}
