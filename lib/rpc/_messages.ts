/**
 * Tells the four JSON-RPC message shapes apart by their keys (Codex's
 * JSON-RPC lite: the `"jsonrpc"` member is optional on input).
 *
 * @module
 */

/** A request or response id: a string or an integer. */
export type RpcId = string | number;

/** The error object of an error reply. */
export interface RpcErrorObject {
  code: number;
  message: string;
  data?: unknown;
}

/** One classified inbound message. */
export type ClassifiedMessage =
  | { kind: "request"; id: RpcId; method: string; params: unknown }
  | { kind: "notification"; method: string; params: unknown }
  | { kind: "response"; id: RpcId; result: unknown }
  | { kind: "error"; id: RpcId | null; error: RpcErrorObject }
  | { kind: "invalid"; reason: string; id: RpcId | null };

function isId(value: unknown): value is RpcId {
  return typeof value === "string" || (typeof value === "number" && Number.isSafeInteger(value));
}

function isErrorObject(value: unknown): value is RpcErrorObject {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const error = value as Record<string, unknown>;
  return Number.isInteger(error.code) && typeof error.message === "string";
}

/**
 * Classifies a parsed JSON value as a request, notification, response or
 * error, or says why it is none of them.
 *
 * @param value The parsed JSON value (not an array: batches are refused before this).
 * @returns The classified message.
 */
export function classifyMessage(value: unknown): ClassifiedMessage {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { kind: "invalid", reason: "a message must be a JSON object", id: null };
  }
  const message = value as Record<string, unknown>;
  // JSON-RPC 2.0: an error reply carries the id whenever it can be detected.
  const id = isId(message.id) ? message.id : null;
  // Only a request is answered with its id: answering a malformed response or
  // error with an id could fail an unrelated request of the other side.
  const invalid = (reason: string, replyId: RpcId | null = id): ClassifiedMessage => ({
    kind: "invalid",
    reason,
    id: replyId,
  });
  if (message.jsonrpc !== undefined && message.jsonrpc !== "2.0") {
    return invalid('"jsonrpc" must be "2.0" when present');
  }
  const hasId = "id" in message;
  if ("method" in message) {
    if (typeof message.method !== "string" || message.method.length === 0) {
      return invalid('"method" must be a non-empty string');
    }
    if ("result" in message || "error" in message) {
      return invalid('a message cannot have both "method" and "result" or "error"');
    }
    const params = message.params ?? null;
    // A notification's params are its handler's to judge, unanswered: Codex
    // ignores `initialized`'s, whatever they are.
    if (!hasId) return { kind: "notification", method: message.method, params };
    if (typeof params !== "object") {
      return invalid('"params" must be an object or an array when present');
    }
    if (!isId(message.id)) {
      return invalid('"id" must be a string or an integer');
    }
    return { kind: "request", id: message.id, method: message.method, params };
  }
  if ("result" in message) {
    if ("error" in message) {
      return invalid('a response cannot have both "result" and "error"', null);
    }
    if (!isId(message.id)) {
      return invalid('"id" must be a string or an integer', null);
    }
    return { kind: "response", id: message.id, result: message.result };
  }
  if ("error" in message) {
    if (!isErrorObject(message.error)) {
      return invalid(
        '"error" must be an object with an integer "code" and a string "message"',
        null,
      );
    }
    const errorId = message.id ?? null;
    if (errorId !== null && !isId(errorId)) {
      return invalid('"id" must be a string, an integer or null', null);
    }
    return { kind: "error", id: errorId, error: message.error };
  }
  return invalid('a message needs "method", "result" or "error"', null);
}

/**
 * Measures the UTF-8 byte length of a string, stopping early once it is known
 * to exceed `limit` (so a huge message costs no more than the limit).
 *
 * @param text The string.
 * @param limit The byte limit of interest.
 * @returns A value above `limit` exactly when the byte length exceeds it (the
 *   exact length is not computed when it cannot matter).
 */
export function utf8Length(text: string, limit: number): number {
  if (text.length > limit) return text.length;
  if (text.length * 3 <= limit) return text.length; // cannot exceed: a code unit is at most 3 bytes
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
    if (bytes > limit) return bytes;
  }
  return bytes;
}

/** What {@linkcode peekEnvelope} finds at the top level of a message. */
export interface Envelope {
  /** The `id` member, when it is a valid id. */
  id: RpcId | null;
  /** Whether a `method` member is present (a request, not a response). */
  hasMethod: boolean;
}

/**
 * Finds the top-level `id` and whether there is a `method` in a JSON object
 * text without parsing it: for a message refused unparsed, for its size, so
 * that a request is still answered by its id. One pass; strings are skipped
 * whole and nested values only counted. The first `id` wins (a parse takes
 * the last; a message that repeats it is not worth more). Null id when the
 * text is not an object or its `id` is not a valid one.
 *
 * @param text The message text.
 * @returns The envelope.
 */
export function peekEnvelope(text: string): Envelope {
  const envelope: Envelope = { id: null, hasMethod: false };
  let depth = 0;
  let keyNext = false;
  let key: string | null = null;
  let idFound = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) { // a string: a key, a value, or nested
      const end = stringEnd(text, i);
      if (end < 0) break;
      if (depth === 1 && keyNext) {
        key = text.slice(i + 1, end);
        keyNext = false;
        if (key === "method") envelope.hasMethod = true;
      } else if (depth === 1 && key === "id" && !idFound) {
        idFound = true;
        envelope.id = parsedId(text.slice(i, end + 1));
      }
      i = end;
    } else if (c === 0x7b || c === 0x5b) { // { [
      if (depth === 0 && c !== 0x7b) break;
      depth++;
      if (depth === 1) keyNext = true;
      else if (depth === 2 && key === "id") idFound = true; // an object or array: not an id
    } else if (c === 0x7d || c === 0x5d) { // } ]
      depth--;
      if (depth === 0) break;
    } else if (depth === 1) {
      if (c === 0x2c) { // ,
        keyNext = true;
        key = null;
      } else if (key === "id" && !idFound && c !== 0x3a && !isJsonSpace(c)) {
        // A number or literal, up to the next delimiter.
        let end = i;
        while (end < text.length && !isValueEnd(text.charCodeAt(end))) end++;
        idFound = true;
        envelope.id = parsedId(text.slice(i, end));
        i = end - 1;
      }
    } else if (depth === 0 && !isJsonSpace(c)) {
      break; // not an object
    }
  }
  return envelope;
}

/** The index of the quote that closes the string opening at `start`, or -1. */
function stringEnd(text: string, start: number): number {
  for (let at = start + 1;;) {
    const quote = text.indexOf('"', at);
    if (quote < 0) return -1;
    let backslashes = 0;
    while (text.charCodeAt(quote - 1 - backslashes) === 0x5c) backslashes++;
    if (backslashes % 2 === 0) return quote;
    at = quote + 1;
  }
}

/** A longer string id is not echoed from an unparsed message: its answer must stay small. */
const MAX_PEEKED_ID_CHARS = 1024;

function parsedId(token: string): RpcId | null {
  if (token.length > MAX_PEEKED_ID_CHARS * 6 + 2) return null; // even all escapes would be too long
  try {
    const value: unknown = JSON.parse(token);
    if (typeof value === "string" && value.length > MAX_PEEKED_ID_CHARS) return null;
    return isId(value) ? value : null;
  } catch {
    return null;
  }
}

function isJsonSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

function isValueEnd(c: number): boolean {
  return c === 0x2c || c === 0x7d || c === 0x5d || isJsonSpace(c);
}
