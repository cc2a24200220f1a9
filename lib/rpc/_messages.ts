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
    if (typeof params !== "object") {
      return invalid('"params" must be an object or an array when present');
    }
    if (!hasId) return { kind: "notification", method: message.method, params };
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
