/**
 * The domain errors outpost throws for conditions callers catch. Caller
 * mistakes (bad arguments) use the built-ins `TypeError` and `RangeError`.
 *
 * @module
 */

/** A peer sent bytes or a frame that break the relay or JSON-RPC protocol. */
export class ProtocolError extends Error {
  /**
   * Creates the error.
   *
   * @param message What was wrong, e.g. `Cannot decode frame: no body`.
   * @param options Standard error options; `cause` chains the underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
  }
}

/** A virtual stream was reset by either side; `reason` is the reset reason. */
export class StreamResetError extends Error {
  /** The reset reason carried by the `reset` frame (see PROTOCOL.md). */
  readonly reason: string;
  /**
   * Creates the error.
   *
   * @param reason The reset reason.
   * @param options Standard error options.
   */
  constructor(reason: string, options?: ErrorOptions) {
    super(`Stream reset: ${reason}`, options);
    this.name = "StreamResetError";
    this.reason = reason;
  }
}

/**
 * A refused upgrade's code and message as logs and errors show them after the
 * status: " code: message", " code", or "" when the server gave no code.
 *
 * @param refusal What the server answered.
 * @returns The text to append.
 */
export function refusalText(refusal: { code?: string; message?: string }): string {
  const { code, message } = refusal;
  if (code === undefined) return "";
  return message === undefined ? ` ${code}` : ` ${code}: ${message}`;
}

/** The relay socket (or the connection built on it) closed; `cause` says why. */
export class RelayClosedError extends Error {
  /**
   * Set when the server refused the WebSocket upgrade: its HTTP `status`,
   * and the `code` and `message` of its `{"error": {"code", "message"}}`
   * body when it sent one (a rendezvous does, e.g. `url_expired` for a
   * signed URL that expired; `code` is cut at 64 characters and `message`
   * at 300). Deno's built-in WebSocket (`transport: "native"`) reports the
   * status only. Unset for every other failure (no answer, a lost connection).
   */
  readonly refusal?: { readonly status: number; readonly code?: string; readonly message?: string };
  /**
   * Creates the error.
   *
   * @param message What closed, e.g. `Relay socket closed: peer_close`.
   * @param options Standard error options (`cause` carries the close reason),
   * plus `refusal` for a refused upgrade.
   */
  constructor(
    message = "Relay socket closed",
    options?: ErrorOptions & { refusal?: RelayClosedError["refusal"] },
  ) {
    super(message, options);
    this.name = "RelayClosedError";
    if (options?.refusal !== undefined) this.refusal = options.refusal;
  }
}

/** The executor's sandbox refused an action (a program, path or env not granted). */
export class SandboxDeniedError extends Error {
  /**
   * Creates the error.
   *
   * @param message What was refused and why, e.g. `Cannot start "ls": run access is not granted`.
   * @param options Standard error options.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SandboxDeniedError";
  }
}

/** A JSON-RPC request failed with an error object from the peer. */
export class RpcError extends Error {
  /** The JSON-RPC error code, e.g. -32601. */
  readonly code: number;
  /** The optional `data` member of the error object. */
  readonly data?: unknown;
  /**
   * Creates the error.
   *
   * @param code The JSON-RPC error code.
   * @param message The error message.
   * @param data The optional `data` member.
   * @param options Standard error options.
   */
  constructor(code: number, message: string, data?: unknown, options?: ErrorOptions) {
    super(message, options);
    this.name = "RpcError";
    this.code = code;
    if (data !== undefined) this.data = data;
  }
}
