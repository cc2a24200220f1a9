/**
 * The fixed set of `reset{reason}` strings outpost sends. A reset ends one
 * stream on both sides; the reason tells the other side why (PROTOCOL.md,
 * "Reset reasons"). Peers may send other strings (Codex sends e.g.
 * `secure_relay_protocol_error`); outpost accepts any valid reason on receipt
 * and reports it unchanged in `StreamResetError.reason`.
 *
 * @module
 */

/** An endpoint closed the stream gracefully after its sent data was acknowledged. */
export const RESET_STREAM_CLOSED = "stream_closed";
/**
 * An endpoint closed the stream while some of its sent data was still
 * unacknowledged after the close timeout: the receiver may be missing some.
 */
export const RESET_CLOSE_TIMEOUT = "close_timeout";
/** A frame broke the protocol for this stream (bad ack, bad segment, seq 0 in reliable mode). */
export const RESET_PROTOCOL_ERROR = "protocol_error";
/** The executor refused a new stream because it already serves its maximum. */
export const RESET_TOO_MANY_STREAMS = "too_many_streams";
/**
 * A legacy stream's consumer fell behind and its bounded inbox overflowed,
 * or the stream came first in the order of shedding when its endpoint's
 * receive budget ran out (see `_byte_budget.ts`); its unread messages were
 * dropped.
 */
export const RESET_INBOX_OVERFLOW = "inbox_overflow";
/** A segment arrived too far ahead of the expected seq, or the reorder buffer was full. */
export const RESET_REORDER_OVERFLOW = "reorder_overflow";
/** A reassembled message grew over the receiver's message size limit. */
export const RESET_MESSAGE_TOO_LARGE = "message_too_large";
/** A resume or data frame named a stream the receiver holds no state for. */
export const RESET_UNKNOWN_STREAM = "unknown_stream";
/**
 * The stream ended at this endpoint because its socket stayed away longer
 * than the detach window; the answer to later frames for it.
 */
export const RESET_DETACH_EXPIRED = "detach_expired";
/** Router: the harness socket that owns the stream went away. */
export const RESET_HARNESS_DISCONNECTED = "harness_disconnected";
/**
 * The executor socket went away: the router tells harnesses, and an executor
 * tells them on its next socket for each legacy stream it lost with the old one.
 */
export const RESET_EXECUTOR_DISCONNECTED = "executor_disconnected";
/** Router: a harness opened a stream while no executor socket is connected. */
export const RESET_EXECUTOR_OFFLINE = "executor_offline";
/** Router: the stream belongs to another harness socket. */
export const RESET_STREAM_IN_USE = "stream_in_use";
/** The endpoint (its mux) is shutting down, or a harness gave up a stream it had just opened. */
export const RESET_SHUTDOWN = "shutdown";
/**
 * Executor: at its session limit it ended this stream's session connection
 * for a new session (the session layer's `SESSION_LIMIT_REASON`).
 */
export const RESET_SESSION_LIMIT = "session_limit";

/** Every reset reason outpost sends, in the order PROTOCOL.md lists them. */
export const RESET_REASONS: readonly string[] = Object.freeze([
  RESET_STREAM_CLOSED,
  RESET_CLOSE_TIMEOUT,
  RESET_PROTOCOL_ERROR,
  RESET_TOO_MANY_STREAMS,
  RESET_INBOX_OVERFLOW,
  RESET_REORDER_OVERFLOW,
  RESET_MESSAGE_TOO_LARGE,
  RESET_UNKNOWN_STREAM,
  RESET_DETACH_EXPIRED,
  RESET_HARNESS_DISCONNECTED,
  RESET_EXECUTOR_DISCONNECTED,
  RESET_EXECUTOR_OFFLINE,
  RESET_STREAM_IN_USE,
  RESET_SHUTDOWN,
  RESET_SESSION_LIMIT,
]);
