/**
 * The JSON-RPC error codes outpost sends and understands. The standard codes
 * come from JSON-RPC 2.0; `NOT_FOUND` and `SESSION_ATTACHED_ELSEWHERE` are the
 * Codex exec-server's; `SANDBOX_DENIED` is outpost's documented code for an
 * action the executor's sandbox refuses.
 *
 * | code | constant | meaning |
 * | --- | --- | --- |
 * | -32700 | `PARSE_ERROR` | the message is not valid JSON (reply id `null`) |
 * | -32600 | `INVALID_REQUEST` | not a valid message shape, batch, lifecycle misuse, unknown process or session |
 * | -32601 | `METHOD_NOT_FOUND` | unknown method (the message names it) |
 * | -32602 | `INVALID_PARAMS` | a param is missing or has the wrong type or range (the message names it) |
 * | -32603 | `INTERNAL_ERROR` | spawn, I/O or other failure while serving the request |
 * | -32004 | `NOT_FOUND` | a path does not exist |
 * | -32003 | `SANDBOX_DENIED` | the sandbox refused a program, path or other action |
 * | -32010 | `SESSION_ATTACHED_ELSEWHERE` | `resumeSessionId` names a session attached to another connection |
 *
 * @module
 */

/** The message is not valid JSON. */
export const PARSE_ERROR: number = -32700;
/** The message is not a valid request, or the request is not allowed now. */
export const INVALID_REQUEST: number = -32600;
/** The method does not exist. */
export const METHOD_NOT_FOUND: number = -32601;
/** A param is missing, of the wrong type or out of range. */
export const INVALID_PARAMS: number = -32602;
/** The request failed inside the server. */
export const INTERNAL_ERROR: number = -32603;
/** A path or object the request names does not exist. */
export const NOT_FOUND: number = -32004;
/** The executor's sandbox refused the action (outpost's documented code). */
export const SANDBOX_DENIED: number = -32003;
/** The session named by `resumeSessionId` is attached to another connection. */
export const SESSION_ATTACHED_ELSEWHERE: number = -32010;
