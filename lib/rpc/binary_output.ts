/**
 * outpost's binary output message: the bytes of a `process/output`
 * notification without JSON or base64, for sessions that negotiated it in
 * `initialize` (`binaryOutput: true` both ways; see PROTOCOL.md). A Codex peer
 * never offers it and keeps getting JSON notifications.
 *
 * Layout (all integers big-endian):
 *
 * | bytes | field |
 * | --- | --- |
 * | 1 | marker `0x00` (never the first byte of a JSON text) |
 * | 1 | kind `0x01` (process output) |
 * | 1 | stream: 0 stdout, 1 stderr, 2 pty |
 * | 1 | processId length in UTF-8 bytes, 1..255 |
 * | 8 | seq (u64, at most 2^53 - 1) |
 * | n | processId (UTF-8) |
 * | rest | the output bytes, exactly as read from the child |
 *
 * Encoding writes the header into free room before the chunk when the reader
 * left some (no copy), else copies the chunk once; decoding copies nothing.
 *
 * @module
 */

/** First byte of every binary message; a JSON text never starts with NUL. */
export const BINARY_MARKER = 0x00;
/** The kind byte of a process output message. */
export const BINARY_KIND_OUTPUT = 0x01;
/** Bytes before the processId. */
export const BINARY_OUTPUT_FIXED_BYTES = 12;
/** The longest processId (UTF-8 bytes) a binary output message carries. */
export const MAX_BINARY_PROCESS_ID_BYTES = 255;

/** The stream an output chunk came from. */
export type BinaryOutputStream = "stdout" | "stderr" | "pty";

const STREAMS: readonly BinaryOutputStream[] = ["stdout", "stderr", "pty"];
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

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
 * import { binaryProcessId, decodeBinaryOutput, encodeBinaryOutput } from "./binary_output.ts";
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
  message[0] = BINARY_MARKER;
  message[1] = BINARY_KIND_OUTPUT;
  message[2] = STREAMS.indexOf(stream);
  message[3] = processId.length;
  const high = Math.floor(seq / 0x1_0000_0000);
  const low = seq >>> 0;
  message[4] = high >>> 24;
  message[5] = (high >>> 16) & 0xff;
  message[6] = (high >>> 8) & 0xff;
  message[7] = high & 0xff;
  message[8] = low >>> 24;
  message[9] = (low >>> 16) & 0xff;
  message[10] = (low >>> 8) & 0xff;
  message[11] = low & 0xff;
  message.set(processId, BINARY_OUTPUT_FIXED_BYTES);
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
  const defect = (what: string) => new TypeError(`Cannot decode binary output message: ${what}`);
  if (message.length < BINARY_OUTPUT_FIXED_BYTES) {
    throw defect(
      `${message.length} bytes is shorter than the ${BINARY_OUTPUT_FIXED_BYTES} byte header`,
    );
  }
  if (message[0] !== BINARY_MARKER) throw defect(`first byte ${message[0]} is not the marker 0`);
  if (message[1] !== BINARY_KIND_OUTPUT) throw defect(`kind ${message[1]} is not 1 (output)`);
  const stream = STREAMS[message[2]];
  if (stream === undefined) throw defect(`stream ${message[2]} is not 0, 1 or 2`);
  const idLength = message[3];
  if (idLength === 0) throw defect("the processId is empty");
  const start = BINARY_OUTPUT_FIXED_BYTES + idLength;
  if (message.length < start) {
    throw defect(`${message.length} bytes cannot hold a ${idLength} byte processId`);
  }
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const high = view.getUint32(4);
  if (high > 0x1f_ffff) throw defect("seq is past 2^53 - 1");
  const seq = high * 0x1_0000_0000 + view.getUint32(8);
  let processId: string;
  try {
    processId = decoder.decode(message.subarray(BINARY_OUTPUT_FIXED_BYTES, start));
  } catch {
    throw defect("the processId is not valid UTF-8");
  }
  return { processId, seq, stream, chunk: message.subarray(start) };
}
