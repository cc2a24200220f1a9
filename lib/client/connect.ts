/**
 * {@linkcode connect}: opens a JSON-RPC session with an executor, either
 * directly (`outpost serve`, one WebSocket text message per JSON-RPC message)
 * or through a rendezvous (one reliable virtual stream over a harness relay
 * socket that reconnects and resumes after a dropped connection).
 *
 * @module
 */

import { abortable } from "../_abortable.ts";
import { RelayClosedError } from "../errors.ts";
import { RESET_DETACH_EXPIRED, RESET_SHUTDOWN } from "../mux/reset_reasons.ts";
import type { MuxStream } from "../mux/stream_mux.ts";
import type { RelaySocket } from "../relay/relay_socket.ts";
import { binaryProcessId, decodeBinaryOutput, encodeBinaryWrite } from "../rpc/binary_messages.ts";
import { JsonRpcPeer } from "../rpc/json_rpc_peer.ts";
import { GatedChannel } from "./_gated_channel.ts";
import { openWebSocketChannel } from "./_websocket_channel.ts";
import { RemoteFs } from "./remote_fs.ts";
import type { ProcessTransport } from "./remote_process.ts";
import { shownUnparsedUrl } from "../_userinfo.ts";
import { MAX_TIMER_MS } from "../_limits.ts";

/** Default timeout of connect plus `initialize`, in milliseconds. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/**
 * How long a reconnected socket must stay up before a loss starts from the
 * shortest delay again: one that closes sooner (a proxy that accepts and
 * drops, at once or after some frames) is reconnected after a growing delay,
 * up to 5 s, so flapping never spins; and if it received nothing, not even
 * the answer to its resume, the detach window still runs from the first loss.
 */
export const STABLE_SOCKET_MS = 5_000;
/**
 * How long before the detach window ends its last reconnect attempt is made
 * (at most a quarter of the window).
 */
export const LAST_ATTEMPT_LEAD_MS = 250;

/** Something the connection did, for logs. Never carries a token. */
export type ConnectionEvent =
  | { type: "disconnected"; code: number; reason: string }
  | { type: "reconnecting"; attempt: number; delayMs: number; error?: Error }
  | { type: "reconnected"; attempt: number };

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /** Bearer token (rendezvous harness sockets; a local server started with a token). */
  token?: string;
  /** Connect through a rendezvous to this executor id. */
  executorId?: string;
  /** Cancels connecting. */
  signal?: AbortSignal;
  /**
   * Deadline for connecting and `initialize`, in ms: more than 0, at most
   * 2147483647 (a timer's limit). @default {10000}
   */
  timeoutMs?: number;
  /** Sent as `clientName` in `initialize`. @default {"outpost"} */
  clientName?: string;
  /**
   * Rendezvous mode: how long to keep reconnecting after the socket drops
   * before the session is given up (the executor keeps it as long). An
   * integer from 1 to 2147483647 (a timer's limit). @default {30000}
   */
  detachWindowMs?: number;
  /**
   * Local mode: the most bytes of received messages held unread. While a slow
   * output reader holds the connection, reading from the socket pauses at 1
   * MiB (or half this bound, if less) and goes on at half that, so the
   * executor's sends wait and the program blocks on its output, as through a
   * rendezvous; the unread messages then take at most the pause point plus
   * one message. A single message larger than this bound closes the
   * connection with `inbox overflow` (outpost's executor sends output in
   * messages of up to about 61 KB, so keep it well above that). More than 0
   * and finite. @default {134217728}
   */
  maxInboxBytes?: number;
  /**
   * A socket on which nothing arrives for this long (a ping goes out halfway)
   * counts as lost: through a rendezvous it is replaced and the session
   * resumes; a local connection closes. Without it a connection that went
   * silent without closing would wait forever. 0 turns the check off.
   * @default {30000}
   */
  idleTimeoutMs?: number;
  /** Receives reconnect events (rendezvous mode). */
  onEvent?: (event: ConnectionEvent) => void;
  /**
   * Offer binary output messages in `initialize` (outpost's extension: process
   * output without JSON or base64). An executor that does not know it (Codex)
   * ignores the offer and output arrives as `process/output` notifications.
   * @default {true}
   */
  binaryOutput?: boolean;
  /**
   * Offer binary write requests in `initialize` (outpost's extension: stdin
   * bytes without JSON or base64). Declined (Codex), `process/write` stays JSON.
   * @default {true}
   */
  binaryInput?: boolean;
}

/** Options of {@linkcode Connection.request}. */
export interface ConnectionRequestOptions {
  /** Cancels waiting for the answer. */
  signal?: AbortSignal;
  /** Rejects when no answer arrives in time. */
  timeoutMs?: number;
}

type NotificationListener = (method: string, params: unknown) => void;

/** What a connection's peer reports to it. */
interface PeerHandlers {
  onNotification: NotificationListener;
  onBinary: (message: Uint8Array) => void;
}

interface Resources {
  peer: JsonRpcPeer;
  channel: GatedChannel;
  stop: () => Promise<void>;
  closeReason: () => string | undefined;
}

let newConnection: (
  url: string,
  mode: "local" | "rendezvous",
  resources: (handlers: PeerHandlers) => Resources,
) => Connection;

/**
 * Makes a {@linkcode Connection} over a channel that is already open (the
 * benchmark opens many streams of one socket this way). Internal: not in
 * `mod.ts`. The class's constructor is private, so that only this module
 * makes one and the internal types it takes stay out of the public API.
 *
 * @param url The URL shown as the connection's.
 * @param channel The open channel; closing the connection does not close what carries it.
 * @returns The connection, not yet initialized.
 */
export function connectionOver(url: string, channel: GatedChannel): Connection {
  return newConnection(url, "rendezvous", (handlers) => ({
    peer: new JsonRpcPeer(channel, handlers),
    channel,
    stop: async () => {},
    closeReason: () => undefined,
  }));
}

/**
 * An initialized JSON-RPC session with one executor, from {@linkcode connect}.
 *
 * @example
 * ```ts
 * import { connect, serveLocal } from "@outpost/exec";
 * await using server = await serveLocal(); // an executor on a free loopback port
 * await using conn = await connect(server.url);
 * const info = await conn.request<{ shell: unknown }>("environment/info");
 * console.log(conn.sessionId, info.shell !== undefined); // UUID true
 * ```
 */
export class Connection implements AsyncDisposable, ProcessTransport {
  /** The URL connected to (a harness URL in rendezvous mode). */
  readonly url: string;
  /** `"local"` for a direct socket, `"rendezvous"` through a relay. */
  readonly mode: "local" | "rendezvous";
  /** File helpers on the executor's machine. */
  readonly fs: RemoteFs;
  #sessionId = "";
  #binaryOutput = false;
  #binaryInput = false;
  /** Whether a binary message is taken now: offered and unanswered, or negotiated. */
  #binaryAccepted = false;
  #resources!: Resources;
  #processListeners = new Map<string, NotificationListener>();
  #listeners = new Set<NotificationListener>();
  #closing: Promise<void> | null = null;

  static {
    newConnection = (url, mode, resources) => {
      const connection = new Connection(url, mode);
      connection.#wire(resources);
      return connection;
    };
  }

  /** Made by {@linkcode connect} only. */
  private constructor(url: string, mode: "local" | "rendezvous") {
    this.url = url;
    this.mode = mode;
    this.fs = new RemoteFs(this);
  }

  #wire(resources: (handlers: PeerHandlers) => Resources): void {
    this.#resources = resources({
      onNotification: (method, params) => this.#dispatch(method, params),
      onBinary: (message) => this.#dispatchBinary(message),
    });
    // When the session ends on its own (server gone, detach window passed),
    // release the socket, the mux and the reconnect loop too.
    this.#resources.peer.closed.then(() => this.close());
  }

  /** The executor's session id, from `initialize`. */
  get sessionId(): string {
    return this.#sessionId;
  }

  /** True when `initialize` negotiated binary output messages. */
  get binaryOutput(): boolean {
    return this.#binaryOutput;
  }

  /** True when `initialize` negotiated binary write requests. */
  get binaryInput(): boolean {
    return this.#binaryInput;
  }

  /**
   * Writes to a process's stdin (`process/write`): as a binary request when
   * negotiated and the processId fits one, else as JSON with base64.
   *
   * @param processId The process id.
   * @param data The bytes (copied before this returns).
   * @param eof Whether stdin closes after them.
   * @returns The executor's answer, e.g. `{status: "accepted"}`.
   * @throws {RpcError} When the executor answers with an error.
   * @throws {RelayClosedError} When the connection closes first.
   */
  writeStdin(processId: string, data: Uint8Array, eof = false): Promise<{ status: string }> {
    const id = this.#binaryInput ? binaryProcessId(processId) : null;
    if (id === null) {
      const params: Record<string, unknown> = { processId, chunk: data.toBase64() };
      if (eof) params.eof = true;
      return this.request("process/write", params);
    }
    return this.#resources.peer.requestBinary<{ status: string }>(
      "process/write",
      (requestId) => encodeBinaryWrite(id, requestId, eof, data),
    ).catch((error) => {
      throw this.#explainClosed(error, "Cannot finish request process/write");
    });
  }

  /** Settles once the connection has closed, by either side. */
  get closed(): Promise<void> {
    return this.#resources.peer.closed;
  }

  /** Why the connection closed (e.g. `inbox overflow: ...`), once known. */
  get closeReason(): string | undefined {
    return this.#resources.closeReason();
  }

  /**
   * Sends a JSON-RPC request.
   *
   * @param method The method, e.g. `"environment/info"`.
   * @param params The params.
   * @param options Signal and timeout.
   * @returns The result.
   * @throws {RpcError} When the executor answers with an error.
   * @throws {RelayClosedError} When the connection closes first; its message
   * ends with {@linkcode Connection.closeReason} (e.g. a reset reason such as
   * `stream_in_use`) and its `cause` chain holds the transport's error (a
   * `StreamResetError` when the relay reset the session's stream).
   * @throws {DOMException} `TimeoutError` when `options.timeoutMs` passes;
   *   the signal's reason (`AbortError`) when `options.signal` aborts.
   */
  request<T = unknown>(
    method: string,
    params?: unknown,
    options?: ConnectionRequestOptions,
  ): Promise<T> {
    return this.#resources.peer.request<T>(method, params, options).catch((error) => {
      throw this.#explainClosed(error, `Cannot finish request ${method}`);
    });
  }

  /**
   * Names the close reason in a closed-channel error, so that callers (and
   * the CLI, which prints the message) learn why without walking `cause`.
   */
  #explainClosed(error: unknown, action: string): unknown {
    if (!(error instanceof RelayClosedError)) return error;
    const reason = this.closeReason;
    if (reason === undefined) return error;
    return new RelayClosedError(`${action}: the connection closed: ${reason}`, { cause: error });
  }

  /**
   * Listens to every notification the executor sends.
   *
   * @param listener Called with the method and params.
   * @returns A function that removes the listener.
   */
  onNotification(listener: (method: string, params: unknown) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Routes `process/*` notifications of one process to `listener`.
   *
   * @param processId The process id.
   * @param listener Called with the method and params.
   * @returns A function that removes the route.
   */
  subscribeProcess(
    processId: string,
    listener: (method: string, params: unknown) => void,
  ): () => void {
    this.#processListeners.set(processId, listener);
    return () => {
      if (this.#processListeners.get(processId) === listener) {
        this.#processListeners.delete(processId);
      }
    };
  }

  /**
   * Pauses reading from the executor until the returned function is called;
   * used by `RemoteProcess` when a reader falls behind, so output
   * is slowed at its source instead of buffered without bound.
   *
   * @returns Releases the hold; idempotent.
   */
  holdInbound(): () => void {
    return this.#resources.channel.hold();
  }

  /** Closes the session and its socket; idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#resources.peer.close().catch(() => {});
      await this.#resources.channel.close("client_close").catch(() => {});
      await this.#resources.stop();
    })();
    return this.#closing;
  }

  /** Same as `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Sends `initialize` and `initialized`.
   *
   * @param clientName The client name.
   * @param options Signal and timeout.
   * @param offer Which binary messages to offer (both by default).
   */
  async initialize(
    clientName: string,
    options: ConnectionRequestOptions,
    offer: { binaryOutput?: boolean; binaryInput?: boolean } = {},
  ): Promise<void> {
    const { binaryOutput = true, binaryInput = true } = offer;
    // Offered and not yet answered, binary output is accepted: a resumed
    // session's retained output may be sent before the answer.
    this.#binaryAccepted = binaryOutput;
    type Answer = { sessionId?: string; binaryOutput?: boolean; binaryInput?: boolean };
    let result: Answer | undefined;
    const params: Record<string, unknown> = { clientName };
    if (binaryOutput) params.binaryOutput = true;
    if (binaryInput) params.binaryInput = true;
    try {
      result = await this.request<Answer>("initialize", params, options);
    } finally {
      this.#binaryOutput = binaryOutput && result?.binaryOutput === true;
      this.#binaryAccepted = this.#binaryOutput;
      this.#binaryInput = binaryInput && result?.binaryInput === true;
    }
    this.#sessionId = typeof result?.sessionId === "string" ? result.sessionId : "";
    await this.#resources.peer.notify("initialized", {});
  }

  /**
   * A binary output message: its process gets the bytes as they are
   * (`params.bytes`); other listeners get the `process/output` params of the
   * JSON form, base64 included, built only when someone listens.
   * Throws on a message that was not negotiated or is malformed (the peer
   * answers it with an error).
   */
  #dispatchBinary(message: Uint8Array): void {
    if (!this.#binaryAccepted) {
      throw new TypeError("binary output was not negotiated in initialize");
    }
    const { processId, seq, stream, chunk } = decodeBinaryOutput(message);
    try {
      this.#processListeners.get(processId)?.("process/output", {
        processId,
        seq,
        stream,
        bytes: chunk,
      });
    } catch {
      // A failing listener must not break the session or hide the output from others.
    }
    if (this.#listeners.size === 0) return;
    const params = { processId, seq, stream, chunk: chunk.toBase64() };
    for (const listener of this.#listeners) {
      try {
        listener("process/output", params);
      } catch {
        // A failing listener must not break the session.
      }
    }
  }

  #dispatch(method: string, params: unknown): void {
    const processId = (params as { processId?: unknown } | null)?.processId;
    if (typeof processId === "string" && method.startsWith("process/")) {
      try {
        this.#processListeners.get(processId)?.(method, params);
      } catch {
        // A failing listener must not break the session or hide the message from others.
      }
    }
    for (const listener of this.#listeners) {
      try {
        listener(method, params);
      } catch {
        // A failing listener must not break the session.
      }
    }
  }
}

/**
 * Whether a URL names a rendezvous's harness socket: `role=harness`, or the
 * path `/harness/{id}` alone (a `serve` URL has no path).
 */
/** A harness path, after any prefix a path-stripping proxy serves the rendezvous under. */
const HARNESS_PATH = /\/harness\/[^/]+\/?$/;
/**
 * A rendezvous route at the end of a path (a harness or executor socket, a
 * registry call); what comes before is a proxy's prefix, which may itself
 * hold such words (`/cloud/outpost`).
 */
const RENDEZVOUS_ROUTE =
  /\/(?:harness\/[^/]+|executor\/[^/]+|cloud\/(?:executor|environment)\/[^/]+\/[^/]+)\/?$/;

function isHarnessUrl(url: URL): boolean {
  return url.searchParams.get("role") === "harness" || HARNESS_PATH.test(url.pathname);
}

/**
 * Builds the harness socket URL for `executorId` on a rendezvous.
 *
 * @param url The rendezvous URL or a full harness URL. Its path is kept as a
 *   prefix (a rendezvous behind a proxy that serves it under a path and strips
 *   it, as `--public-url` allows), less a route of the rendezvous's own it
 *   ends with (`/harness/ID`, `/executor/ID`, `/cloud/executor/ID/connect`).
 * @param executorId The executor id, or undefined when `url` already is a harness URL.
 * @returns The harness URL.
 * @throws {TypeError} When neither an executor id nor a harness URL
 *   (`/harness/{id}`, `role=harness`) is given.
 */
export function harnessUrl(url: URL, executorId: string | undefined): string {
  if (executorId === undefined) {
    if (!isHarnessUrl(url)) {
      throw new TypeError(
        "Cannot build harness URL: no executor id and no role=harness in the URL",
      );
    }
    return url.href;
  }
  if (executorId === "" || !/^[A-Za-z0-9_-]{1,256}$/.test(executorId)) {
    throw new TypeError(
      `Cannot use executor id "${executorId}": only 1..256 ASCII letters, digits, "-" and "_" are allowed`,
    );
  }
  const prefix = url.pathname.replace(RENDEZVOUS_ROUTE, "").replace(/\/+$/, "");
  return `${url.protocol}//${url.host}${prefix}/harness/${executorId}?role=harness`;
}

/** Refuses a set option that is not an integer from 1 to `max`. */
function checkPositiveInteger(name: string, value: number | undefined, max: number): void {
  if (value === undefined) return;
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new RangeError(`Cannot connect: ${name} ${value} is not an integer from 1 to ${max}`);
  }
}

/** Refuses a set option that is not a number above 0 and at most `max` (and finite). */
function checkPositive(name: string, value: number | undefined, max: number): void {
  if (value === undefined) return;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || value > max) {
    const limit = max === Infinity ? "" : ` and at most ${max}`;
    throw new RangeError(`Cannot connect: ${name} ${value} is not a finite number above 0${limit}`);
  }
}

function parseUrl(raw: string | URL): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TypeError(`Cannot connect: "${shownUnparsedUrl(String(raw))}" is not a URL`);
  }
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new TypeError(`Cannot connect: scheme ${url.protocol} is not ws or wss`);
  }
  if (url.username !== "" || url.password !== "") {
    // They would be sent as Basic credentials in place of the bearer token,
    // and echoed in every error that names the URL.
    throw new TypeError(
      "Cannot connect: the URL must not carry credentials (user:password@); the token is sent as a bearer token",
    );
  }
  return url;
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** The executor id in a harness URL (`/harness/{id}?role=harness`). */
function executorIdOf(harness: string): string {
  return decodeURIComponent(new URL(harness).pathname.split("/").at(-1) ?? "");
}

/** What the server answered a refused WebSocket upgrade, if `error` is one. */
function refusalOf(error: unknown): RelayClosedError["refusal"] {
  return error instanceof RelayClosedError ? error.refusal : undefined;
}

/** Turns a refused harness socket upgrade (HTTP 403, say) into a clear error. */
function explainRefusal(error: unknown, url: string): unknown {
  const refusal = refusalOf(error);
  const status = refusal?.status;
  const where = new URL(url);
  const target = `executor ${executorIdOf(url)}`;
  let why: string | undefined;
  if (refusal?.code === "url_expired") {
    why = "the signed harness URL has expired (HTTP 401 url_expired); ask the rendezvous for a " +
      "new one (POST /cloud/executor/{id}/connect)";
  } else if (refusal?.code === "bad_signature") {
    why = "the rendezvous refused the URL's signature (HTTP 403 bad_signature): it is not a " +
      "harness URL for this executor, or the rendezvous restarted with a new signing key " +
      "(set OUTPOST_SIGNING_KEY to keep it)";
  } else if ((status === 401 || status === 403) && where.searchParams.has("sig")) {
    // A token sent with it would have admitted it: the URL itself was refused.
    why = `the rendezvous refused the signed URL (HTTP ${status}${
      refusal?.code === undefined ? "" : ` ${refusal.code}`
    }); ask the rendezvous for a new one (POST /cloud/executor/{id}/connect)`;
  } else if (status === 401) {
    why =
      "the rendezvous requires a token (HTTP 401); pass `token` (the CLI: OUTPOST_TOKEN or --token-file)";
  } else if (status === 403) why = "the rendezvous refused the token (HTTP 403)";
  else if (status === 503) why = busyRendezvous(refusal?.code);
  else if (status === 404) {
    const prefix = where.pathname.replace(HARNESS_PATH, "");
    why = prefix === ""
      ? "no rendezvous route answers there (HTTP 404); for a local executor (outpost serve), " +
        "connect without an executor id"
      : `no rendezvous route answers at ${where.pathname} (HTTP 404): the URL's path ${prefix} ` +
        "is kept as the prefix of a rendezvous behind a proxy that strips it; for a local " +
        "executor (outpost serve), connect without an executor id";
  } else if (status !== undefined) why = `the rendezvous answered HTTP ${status}`;
  if (why === undefined) return error;
  return new RelayClosedError(`Cannot connect to ${target} at ${where.host}: ${why}`, {
    cause: error,
    refusal,
  });
}

/** Why a rendezvous answered 503, from the code it gave (see README "Rendezvous and registry"). */
function busyRendezvous(code: string | undefined): string {
  if (code === "shutdown") return "the rendezvous is shutting down (HTTP 503 shutdown)";
  if (code === "too_many_harness_sockets") {
    return "the rendezvous holds as many harness sockets for this executor as it allows " +
      "(HTTP 503 too_many_harness_sockets)";
  }
  if (code === "too_many_executors") {
    return "the rendezvous serves as many executors as it allows (HTTP 503 too_many_executors)";
  }
  return `the rendezvous is at a limit (HTTP 503${code === undefined ? "" : ` ${code}`})`;
}

/** A rendezvous's executor socket path (`/executor/{id}`), under any prefix. */
const EXECUTOR_PATH = /\/executor\/[^/]+\/?$/;

/** The same for a local executor's socket (`outpost serve`, no executor id). */
function explainLocalRefusal(error: unknown, url: URL, tokenSent: boolean): unknown {
  const refusal = refusalOf(error);
  const status = refusal?.status;
  let why: string | undefined;
  if (status === 401 && EXECUTOR_PATH.test(url.pathname)) {
    // Not a local executor: a rendezvous's executor socket, which takes only a signed URL.
    why = "that is a rendezvous's executor path (HTTP 401), which takes only the signed URL an " +
      "executor registers for; a harness connects to the rendezvous URL with an executor id " +
      "(--executor-id)";
  } else if (status === 401) {
    why = tokenSent
      ? "the executor refused the token (HTTP 401)"
      : "the executor requires a token (HTTP 401); pass `token` (the CLI: OUTPOST_TOKEN or --token-file)";
  } else if (status === 404) {
    // A rendezvous answers 404 outside its routes; serve answers any other path.
    why = "no executor answers there (HTTP 404); a rendezvous URL needs an executor id " +
      "(--executor-id)";
  } else if (status !== undefined) why = `the server answered HTTP ${status}`;
  if (why === undefined) return error;
  return new RelayClosedError(`Cannot connect to ${url.host}: ${why}`, { cause: error, refusal });
}

async function openRendezvous(
  url: string,
  options: ConnectOptions,
  deadline: AbortSignal,
): Promise<{ resources: (handlers: PeerHandlers) => Resources; abandon: () => void }> {
  const detachWindowMs = options.detachWindowMs ?? 30_000;
  // Loaded here, not at the top: the relay codec pulls in protobufjs, which
  // costs a local-mode `outpost exec` about 60 ms of start-up for nothing.
  const [{ RelaySocket }, { StreamMux }] = await Promise.all([
    import("../relay/relay_socket.ts"),
    import("../mux/stream_mux.ts"),
  ]);
  const connectOnce = (signal: AbortSignal, timeoutMs: number): Promise<RelaySocket> =>
    RelaySocket.connect(url, {
      signal,
      timeoutMs,
      ...(options.token !== undefined ? { token: options.token } : {}),
      ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    });
  let socket: RelaySocket;
  try {
    socket = await connectOnce(deadline, options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
  } catch (error) {
    throw explainRefusal(error, url);
  }
  // Only giving up (or the caller's close) ends the stream, and says why: the
  // mux's own expiry would race it, so the mux keeps the stream for good.
  const mux = new StreamMux({ role: "harness", detachWindowMs: MAX_TIMER_MS });
  mux.attach(socket);
  const stream: MuxStream = mux.open();
  const stop = new AbortController();
  // A reset (or any end) of the session's stream ends the session: nothing
  // is left to resume, so stop reconnecting at once instead of retrying for
  // the rest of the detach window.
  stream.closed.then(() => stop.abort());
  const emit = (event: ConnectionEvent): void => {
    try {
      options.onEvent?.(event);
    } catch {
      // Listeners cannot break the connection.
    }
  };

  let gaveUp: string | undefined;
  // Keeps the physical socket up: on loss, reconnect with backoff within the detach window.
  const supervise = (async () => {
    /** When the socket last went up (Date.now()). */
    let upSince = Date.now();
    /**
     * The outage's start and the backoff. Only a socket that received a frame
     * (the peer's answer to the resume, at least) shows the link and the
     * session alive and starts the window over; only one that stayed up
     * STABLE_SOCKET_MS resets the backoff. Every wait is at most half the
     * window, so an attempt always fits in it.
     */
    let outageSince: number | null = null;
    let wait = 100;
    /** Why the last socket did not hold, for the reason given on giving up. */
    let lastFlap: string | undefined;
    /** Closes a reconnected socket that brought no frame by the window's end. */
    let silentUntil: ReturnType<typeof setTimeout> | undefined;
    const backoff = (): number => {
      const jittered = Math.round(wait * (0.8 + 0.4 * Math.random()));
      wait = Math.min(5_000, wait * 2);
      return Math.min(jittered, detachWindowMs / 2);
    };
    while (!stop.signal.aborted) {
      // abortable, not a race with a fresh abort listener: one listener per
      // reconnect would pile up on `stop.signal` for the connection's life.
      const info = await abortable(socket.closed, stop.signal).catch(() => null);
      clearTimeout(silentUntil);
      if (info === null || stop.signal.aborted) return;
      emit({ type: "disconnected", code: info.code, reason: info.reason });
      const lived = Date.now() - upSince;
      // The first loss is retried at once, however young the connection.
      const flapped = outageSince !== null && lived < STABLE_SOCKET_MS;
      if (!flapped) wait = 100;
      if (outageSince === null || socket.framesReceived > 0) outageSince = Date.now();
      lastFlap = socket.framesReceived > 0
        ? undefined
        : `every socket closed without a frame, the last ${lived} ms after it opened`;
      const giveUpAt = outageSince + detachWindowMs;
      let attempt = 0;
      let next: RelaySocket | undefined;
      let lastError: Error | undefined;
      let refused: Error | undefined;
      /** No attempt fits in what is left of the window. */
      let exhausted = false;
      /** Waits `ms`, or until just before the window ends; false once no attempt fits. */
      const pause = async (ms: number, error: Error): Promise<boolean> => {
        const room = giveUpAt - Date.now() - Math.min(LAST_ATTEMPT_LEAD_MS, detachWindowMs / 4);
        if (room <= 0) return false;
        const delayMs = Math.min(ms, room);
        emit({ type: "reconnecting", attempt, delayMs, error });
        await delay(delayMs, stop.signal);
        return true;
      };
      if (flapped) {
        // The last socket did not hold: wait before the next, as after a failed connect.
        const error = new Error(`the socket closed ${lived} ms after it opened`);
        exhausted = !(await pause(backoff(), error));
      }
      while (!exhausted && !stop.signal.aborted && Date.now() < giveUpAt) {
        attempt++;
        try {
          next = await connectOnce(
            stop.signal,
            Math.max(1, Math.min(DEFAULT_CONNECT_TIMEOUT_MS, giveUpAt - Date.now())),
          );
          break;
        } catch (error) {
          if (stop.signal.aborted) return;
          lastError = error as Error;
          // A refused credential (an expired signed URL, a token no longer
          // valid) is refused again on every try: say so now.
          const status = refusalOf(error)?.status;
          if (status === 401 || status === 403) {
            refused = explainRefusal(error, url) as Error;
            break;
          }
          exhausted = !(await pause(backoff(), lastError));
        }
      }
      if (next === undefined) {
        if (!stop.signal.aborted) {
          // Set before the stream ends: what fails on its end reads the reason.
          const why = lastError?.message ?? lastFlap;
          gaveUp = refused
            ? `refused: the rendezvous refused to take the connection back (${refused.message})`
            : `detach_expired: the rendezvous could not be reached again within ${detachWindowMs} ms` +
              (why ? ` (${why})` : "");
          stream.reset(RESET_DETACH_EXPIRED);
        }
        return;
      }
      if (stop.signal.aborted) {
        await next.close("client_close");
        return;
      }
      socket = next;
      upSince = Date.now();
      mux.attach(socket);
      emit({ type: "reconnected", attempt });
      // A socket that stays open but brings nothing (a front end whose
      // upstream hangs, answering pings itself) must not hold the outage open:
      // closed at the window's end if no frame came, the loop gives up.
      const silent = next;
      silentUntil = setTimeout(() => {
        if (silent.framesReceived === 0) {
          silent.close("no frame within the detach window").catch(() => {});
        }
      }, Math.max(0, giveUpAt - Date.now()));
    }
  })();

  const resources = (handlers: PeerHandlers): Resources => {
    const channel = new GatedChannel(stream);
    const peer = new JsonRpcPeer(channel, handlers);
    return {
      peer,
      channel,
      stop: async () => {
        stop.abort();
        await supervise;
        await mux.close();
        await socket.close("client_close");
      },
      closeReason: () => gaveUp ?? stream.resetReason,
    };
  };
  // A connect that failed has nothing to deliver: a graceful close would wait
  // up to its close timeout for acks that an absent executor never sends.
  const abandon = (): void => stream.reset(RESET_SHUTDOWN);
  return { resources, abandon };
}

/**
 * Connects to an executor and initializes a JSON-RPC session.
 *
 * Local mode (a `serve` URL): one WebSocket whose text messages are JSON-RPC
 * messages. Rendezvous mode (when `executorId` is given, or the URL is a
 * harness socket's: `/harness/{id}` or `role=harness`): a relay socket to
 * `/harness/{executorId}?role=harness` with the bearer token, one reliable
 * virtual stream on it, reconnected and resumed within `detachWindowMs` when
 * the socket drops. A full harness URL
 * may be a signed one from the rendezvous (`POST /cloud/executor/{id}/connect`),
 * which needs no token until its `exp` (a token given too is sent, and
 * admits a reconnect after `exp`); with `executorId` the URL is only the
 * rendezvous's base, and its query is not used.
 *
 * @param url The `serve` URL, the rendezvous URL, or a full (maybe signed) harness URL.
 * @param options Token, executor id, signal, timeout and client name.
 * @returns The initialized connection.
 * @throws {TypeError} When the URL or executor id is unusable.
 * @throws {RangeError} When `timeoutMs` or `maxInboxBytes` is not a positive
 * finite number (`timeoutMs` also at most 2147483647).
 * @throws {RelayClosedError} When the socket cannot be opened or is refused.
 * @throws {RpcError} When the executor refuses `initialize`.
 * @throws {DOMException} `TimeoutError` when `timeoutMs` passes first (no
 *   answer to `initialize`, a silent server); the signal's reason
 *   (`AbortError`) when `signal` aborts.
 * @example
 * ```ts
 * import { connect, runExecutor, serveRendezvous } from "@outpost/exec";
 * const token = crypto.randomUUID(); // in real use: from OUTPOST_TOKEN or a file
 * await using rendezvous = await serveRendezvous({ token });
 * await using executor = runExecutor({
 *   registry: rendezvous.registryUrl,
 *   executorId: "build-box",
 *   token,
 * });
 * // Through the rendezvous: the executor id picks the executor.
 * await using conn = await connect(rendezvous.url, { executorId: "build-box", token });
 * console.log(conn.mode, executor.status); // rendezvous connected
 * ```
 */
export async function connect(
  url: string | URL,
  options: ConnectOptions = {},
): Promise<Connection> {
  options.signal?.throwIfAborted();
  checkPositive("timeoutMs", options.timeoutMs, MAX_TIMER_MS);
  checkPositive("maxInboxBytes", options.maxInboxBytes, Infinity);
  // Checked before any socket opens (the stream mux would refuse it only after).
  checkPositiveInteger("detachWindowMs", options.detachWindowMs, MAX_TIMER_MS);
  const parsed = parseUrl(url);
  const rendezvous = options.executorId !== undefined || isHarnessUrl(parsed);
  const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const timeout = new AbortController();
  let connection: Connection | undefined;
  let abandon: (() => void) | undefined;
  // Once the socket is open, silence comes from the executor, not the server
  // we dialled: a rendezvous holds a stream for an executor that is not
  // connected (yet) for its startup grace.
  const timer = setTimeout(() => {
    let what = `no answer within ${timeoutMs} ms`;
    if (connection !== undefined) {
      const executor = rendezvous ? ` ${executorIdOf(connection.url)}` : "";
      what = `the executor${executor} did not answer initialize within ${timeoutMs} ms`;
      if (rendezvous) what += " (it may be offline or not yet connected to the rendezvous)";
    }
    timeout.abort(new DOMException(`Cannot connect to ${parsed.host}: ${what}`, "TimeoutError"));
  }, timeoutMs);
  const deadline = options.signal
    ? AbortSignal.any([options.signal, timeout.signal])
    : timeout.signal;
  try {
    if (rendezvous) {
      const target = harnessUrl(parsed, options.executorId);
      const opened = await openRendezvous(target, options, deadline);
      abandon = opened.abandon;
      connection = newConnection(target, "rendezvous", opened.resources);
    } else {
      const channel = await openWebSocketChannel(parsed.href, {
        signal: deadline,
        timeoutMs,
        ...(options.token !== undefined ? { token: options.token } : {}),
        ...(options.maxInboxBytes !== undefined ? { maxInboxChars: options.maxInboxBytes } : {}),
        ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
      }).catch((error) => {
        throw explainLocalRefusal(error, parsed, options.token !== undefined);
      });
      const gated = new GatedChannel(channel);
      connection = newConnection(parsed.href, "local", (handlers) => ({
        peer: new JsonRpcPeer(gated, handlers),
        channel: gated,
        stop: async () => {
          await channel.close("client_close");
        },
        closeReason: () => channel.closeReason,
      }));
    }
    await connection.initialize(options.clientName ?? "outpost", { signal: deadline }, {
      binaryOutput: options.binaryOutput,
      binaryInput: options.binaryInput,
    });
    return connection;
  } catch (error) {
    if (error instanceof RelayClosedError && connection?.closeReason === undefined) {
      // A send can fail on a socket whose close frame arrived before its
      // close event, which carries the reason: wait for it, briefly.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        connection?.closed.catch(() => {}),
        new Promise((resolve) => timer = setTimeout(resolve, 1_000)),
      ]);
      clearTimeout(timer);
    }
    const reason = connection?.closeReason;
    abandon?.();
    await connection?.close();
    if (error instanceof RelayClosedError && reason !== undefined) {
      const target = options.executorId !== undefined
        ? `executor ${options.executorId} at ${parsed.host}`
        : parsed.host;
      throw new RelayClosedError(
        `Cannot connect to ${target}: the session ended before initialize answered: ${reason}`,
        { cause: error },
      );
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
