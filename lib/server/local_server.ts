/**
 * The local transport (`outpost serve`): a WebSocket listener where each text
 * message is one JSON-RPC message, each connection one executor session.
 * Loopback only unless the operator both allows remote clients and sets a
 * token. It prints nothing.
 *
 * What it holds is bounded: each connection's unread inbound messages, and
 * all connections' together ({@linkcode ServeLocalOptions.queueBudgetBytes});
 * connections that have not sent `initialize` (so hold no session, which
 * `maxSessions` would bound) are closed after a deadline, and at most
 * {@linkcode ServeLocalOptions.maxUninitialized} wait at once. Running out of
 * file descriptors does not stop it: it keeps serving its connections and
 * listens again (see `_listener.ts`, shared with the rendezvous).
 *
 * @module
 */

import { Executor } from "../exec/executor.ts";
import { type BudgetHolder, ByteBudget } from "../_byte_budget.ts";
import { checkTimerMs } from "../_limits.ts";
import { DrainPoller } from "../relay/_backpressure.ts";
import type { BinaryLane, MessageChannel } from "../rpc/message_channel.ts";
import { INVALID_REQUEST } from "../rpc/error_codes.ts";
import { BAD_UPGRADE, badUpgradeMessage, errorResponse } from "./_error_response.ts";
import { BAD_HOST_MESSAGE, requestUrl } from "./_request_url.ts";
import { checkBearer, validateToken } from "./_token.ts";
import { booleanOption } from "../_options.ts";
import { Listener, type ListenerEvent } from "./_listener.ts";

export type { ListenerEvent } from "./_listener.ts";

/** The default listen address: loopback, a free port. */
export const DEFAULT_LOCAL_LISTEN: string = "ws://127.0.0.1:0";
/** Inbound messages queued per connection before it is closed as overloaded. */
export const MAX_QUEUED_MESSAGES: number = 1024;
/**
 * Default {@linkcode ServeLocalOptions.maxQueuedBytes}: twice the executor's
 * default message limit, so a count cap alone cannot let 1024 large messages
 * pile up while the executor is busy.
 */
export const MAX_QUEUED_BYTES: number = 32 * 1024 * 1024;
/**
 * Default {@linkcode ServeLocalOptions.queueBudgetBytes}: eight connections'
 * full queues, so a few busy harnesses never meet it and a flood over many
 * connections stays bounded.
 */
export const QUEUE_BUDGET_BYTES: number = 256 * 1024 * 1024;
/** Default {@linkcode ServeLocalOptions.initializeTimeoutMs}, as long as the ping check. */
export const INITIALIZE_TIMEOUT_MS: number = 30_000;
/**
 * The least {@linkcode ServeLocalOptions.maxUninitialized} defaults to (the
 * executor's default session limit); an executor with more sessions raises it.
 */
export const MAX_UNINITIALIZED: number = 256;

/** Sends wait once a connection's send buffer holds more than this. */
const HIGH_WATER_BYTES = 8 * 1024 * 1024;
/** Waiting sends resume once the send buffer is at or below this. */
const LOW_WATER_BYTES = 1024 * 1024;
const IDLE_TIMEOUT_S = 30;
const BINARY_REFUSAL = JSON.stringify({
  jsonrpc: "2.0",
  id: null,
  error: {
    code: INVALID_REQUEST,
    message: "Cannot accept binary message: send each JSON-RPC message as a text WebSocket message",
  },
});

/** Options of {@linkcode serveLocal}. */
export interface ServeLocalOptions {
  /**
   * Where to listen: `ws://HOST:PORT` or `HOST:PORT`. A non-loopback host
   * needs `allowRemote` and a `token`.
   * @default {"ws://127.0.0.1:0"}
   */
  listen?: string;
  /** The executor to serve; when absent one is created and closed with the server. */
  executor?: Executor;
  /** When set, clients must send `Authorization: Bearer <token>` (compared in constant time). */
  token?: string;
  /** Allow a non-loopback listen address (needs `token`). @default {false} */
  allowRemote?: boolean;
  /** Closes the server when aborted. */
  signal?: AbortSignal;
  /**
   * Bytes of inbound messages queued per connection before it is closed with
   * 1009. Counted as they take memory: a text message one byte per UTF-16
   * code unit when every character is below U+0100, two otherwise (as the
   * JavaScript engine stores it); a binary message its length. A message
   * into an empty queue is always taken, so the executor's own message limit
   * answers a single oversized one.
   * @default {33554432}
   */
  maxQueuedBytes?: number;
  /**
   * Bytes of inbound messages queued over all connections together, counted
   * as for `maxQueuedBytes` (at least that). Past it the connection queueing
   * the most is closed with 1009 and its queued messages dropped, until the
   * sum is back within it; the others go on.
   * @default {268435456}
   */
  queueBudgetBytes?: number;
  /**
   * Milliseconds a connection may stay open without its `initialize` answered
   * (a session made); then it is closed with 1008. Until then it holds no
   * session, so `maxSessions` does not bound it.
   * @default {30000}
   */
  initializeTimeoutMs?: number;
  /**
   * Connections open at once without their `initialize` answered. One more
   * closes the one that has waited longest, with 1013: refusing newcomers
   * instead would let whoever holds the bound lock every new client out until
   * the deadline. Honest clients that connect in a burst wait too, for their
   * `initialize` to be read, so the default follows the executor's session
   * limit: a burst that passes it would pass that limit as well.
   * @default {Math.max(256, executor.maxSessions)}
   */
  maxUninitialized?: number;
  /**
   * Web origins allowed to connect (exact `Origin` header values, e.g.
   * `https://tool.example`). A request carrying any other `Origin` is refused
   * with 403: browsers let any page open a WebSocket to loopback, and a
   * tokenless `serve` would then run programs for that page. Non-browser
   * clients send no `Origin` and are not affected. Each entry must be an
   * origin as browsers send it, `scheme://host[:port]` without a path or a
   * trailing slash (`*` is not a wildcard), or `serveLocal` throws.
   * @default {[]}
   */
  allowedOrigins?: string[];
  /**
   * Receives each refused request (a wrong or missing token, a foreign
   * `Origin`, a rendezvous path, plain HTTP, a method other than GET, a
   * malformed upgrade): its HTTP status and error code, and the `Origin` it
   * carried when that was the reason. Never the token. A request the server
   * failed on (answered 500 `internal_error`) comes as `failed` with the
   * error's message, for the caller's log: the server prints nothing. So
   * do the listener failing (out of file descriptors) and accepting again.
   */
  onEvent?: (event: LocalServerEvent) => void;
}

/** What {@linkcode ServeLocalOptions.onEvent} receives. */
export type LocalServerEvent =
  | { type: "refused"; status: number; code: string; origin?: string }
  | { type: "failed"; message: string }
  | ListenerEvent;

/** What {@linkcode LocalServer.stats} counts. */
export interface LocalServerStats {
  /** Open connections. */
  connections: number;
  /** Open connections whose `initialize` has not been answered. */
  uninitialized: number;
  /** Bytes of inbound messages queued over all connections (see `maxQueuedBytes`). */
  queuedBytes: number;
}

/** A running local server, from {@linkcode serveLocal}. */
export interface LocalServer extends AsyncDisposable {
  /** The URL clients connect to, e.g. `ws://127.0.0.1:41234`. */
  readonly url: string;
  /** Settles once the server has stopped and its connections have ended. */
  readonly closed: Promise<void>;
  /** Stops listening, closes every connection (their sessions detach). Idempotent. */
  close(): Promise<void>;
  /**
   * Counts connections and what they queue.
   *
   * @returns The counts.
   */
  stats(): LocalServerStats;
}

function isLoopback(host: string): boolean {
  const bare = host.startsWith("[") ? host.slice(1, -1) : host;
  return bare === "localhost" || bare === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare);
}

/**
 * Checks an allowed origin: a browser's `Origin` header is exactly
 * `scheme://host[:port]` (lower-case host, default port left out), so any
 * other spelling, `*` included, would never match and only mislead.
 */
function checkOrigin(origin: string): string {
  let url: URL | undefined;
  try {
    url = new URL(origin);
  } catch {
    // Reported below.
  }
  const canonical = url !== undefined && url.host !== "" ? `${url.protocol}//${url.host}` : "";
  if (canonical === "" || canonical !== origin) {
    const suggestion = canonical !== "" ? `; write ${canonical}` : "";
    throw new TypeError(
      `Cannot allow origin ${
        JSON.stringify(origin)
      }: an origin is scheme://host[:port] as a browser sends it, without a path or a trailing slash (e.g. https://tool.example)${suggestion}`,
    );
  }
  return origin;
}

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1) {
    throw new RangeError(`Cannot serve: ${name} ${v} is not a positive integer`);
  }
  return v;
}

function parseListen(listen: string): { hostname: string; port: number } {
  const text = listen.includes("://") ? listen : `ws://${listen}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TypeError(`Cannot listen on "${listen}": expected ws://HOST:PORT`);
  }
  if (url.protocol !== "ws:") {
    throw new TypeError(`Cannot listen on "${listen}": only ws:// is supported (put TLS in front)`);
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.username) {
    throw new TypeError(`Cannot listen on "${listen}": expected ws://HOST:PORT without a path`);
  }
  // No port is ws's own, 80 (the URL parser drops ":80"), as the rendezvous reads it.
  const port = url.port === "" ? 80 : Number(url.port);
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  return { hostname, port };
}

/** A string with a UTF-16 code unit above U+00FF, which the engine stores in two bytes each. */
const TWO_BYTE_TEXT = /[\u0100-\uffff]/;

/**
 * What a queued message takes in memory: a binary one its length; a text one
 * a byte per UTF-16 code unit when every character is below U+0100, two
 * otherwise (V8 keeps a string in one byte per character only then; a
 * message padded with `€` held 87.6 MiB under a 32 MiB count of code units).
 */
function memoryBytes(message: string | Uint8Array): number {
  if (typeof message !== "string") return message.byteLength;
  return TWO_BYTE_TEXT.test(message) ? message.length * 2 : message.length;
}

/**
 * Adapts a server-side WebSocket into a MessageChannel: text messages are
 * JSON-RPC; binary messages are outpost's negotiated binary messages, refused
 * here unless the reader iterates `binary.messages()`. What it queues counts
 * against its own bound and the server's budget, which may shed it.
 */
class WebSocketChannel implements MessageChannel, BudgetHolder {
  #socket: WebSocket;
  #queue: { message: string | Uint8Array; bytes: number }[] = [];
  #queuedBytes = 0;
  #maxQueuedBytes: number;
  #budget: ByteBudget;
  /** True once read through `binary.messages()`: binary messages are then queued, not refused. */
  #binaryIterated = false;
  #waiter: PromiseWithResolvers<void> | null = null;
  #done = false;
  #closed = Promise.withResolvers<void>();
  #opened = Promise.withResolvers<void>();
  #open = false;
  #drain: DrainPoller;
  #drained: PromiseWithResolvers<void> | null = null;

  readonly binary: BinaryLane = {
    send: (message) => this.#send(message),
    messages: () => this.#messages(true),
  };

  constructor(socket: WebSocket, maxQueuedBytes: number, budget: ByteBudget) {
    this.#socket = socket;
    this.#maxQueuedBytes = maxQueuedBytes;
    this.#budget = budget;
    socket.binaryType = "arraybuffer";
    this.#drain = new DrainPoller(
      () => this.#socket.bufferedAmount,
      LOW_WATER_BYTES,
      () => this.#releaseSenders(),
    );
    if (socket.readyState === WebSocket.OPEN) this.#onOpen();
    socket.addEventListener("open", () => this.#onOpen(), { once: true });
    socket.addEventListener("message", (event) => this.#onMessage(event.data));
    socket.addEventListener("close", () => this.#finish(), { once: true });
    socket.addEventListener("error", () => this.#finish(), { once: true });
  }

  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  #onMessage(data: unknown): void {
    if (this.#done) return;
    let message: string | Uint8Array;
    if (typeof data === "string") {
      message = data;
    } else if (this.#binaryIterated && data instanceof ArrayBuffer) {
      message = new Uint8Array(data);
    } else {
      this.#socket.send(BINARY_REFUSAL);
      return;
    }
    if (this.#queue.length >= MAX_QUEUED_MESSAGES) {
      this.#closeSocket(1008, "Cannot keep up: too many queued messages");
      return;
    }
    const bytes = memoryBytes(message);
    if (this.#queue.length > 0 && this.#queuedBytes + bytes > this.#maxQueuedBytes) {
      this.#closeSocket(
        1009,
        `Cannot keep up: queued messages exceed ${this.#maxQueuedBytes} bytes`,
      );
      return;
    }
    this.#queuedBytes += bytes;
    this.#queue.push({ message, bytes });
    this.#waiter?.resolve();
    // Past the budget this sheds the connection queueing the most, maybe this one.
    this.#budget.hold(this, this.#queuedBytes);
  }

  /** The server's budget ran out and this connection queues the most: drop it and its queue. */
  shed(): void {
    this.release();
    this.#closeSocket(
      1009,
      `Cannot keep up: queued messages over all connections exceed ${this.#budget.limit} bytes`,
    );
    this.#finish();
  }

  /** Drops what is queued (the connection's session has ended, or it was shed). */
  release(): void {
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#budget.hold(this, 0);
  }

  /** Closes with `code` (1008, 1013): the server gave up waiting for its `initialize`. */
  closeWith(code: number, reason: string): void {
    this.#closeSocket(code, reason);
  }

  #onOpen(): void {
    this.#open = true;
    this.#opened.resolve();
  }

  #releaseSenders(): void {
    const drained = this.#drained;
    this.#drained = null;
    drained?.resolve();
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    this.#drain.stop();
    this.#releaseSenders();
    this.#opened.resolve();
    this.#waiter?.resolve();
    this.#closed.resolve();
  }

  #closeSocket(code: number, reason: string): void {
    if (this.#socket.readyState === WebSocket.CONNECTING) {
      // Not open yet (an executor that closed refuses the channel at once):
      // closing now would throw and leave the client waiting.
      this.#opened.promise.then(() => this.#closeSocket(code, reason));
      return;
    }
    try {
      this.#socket.close(code, reason);
    } catch {
      // Already closing.
    }
  }

  /**
   * Sends at once (so messages go out in call order); once the send buffer is
   * over the high watermark, resolves only when it has drained to the low
   * watermark (polled, see `DrainPoller`) or the socket has closed.
   */
  send(message: string): Promise<void> {
    return this.#send(message);
  }

  async #send(message: string | Uint8Array): Promise<void> {
    if (!this.#open) await this.#opened.promise;
    if (this.#done || this.#socket.readyState !== WebSocket.OPEN) {
      throw new Error("Cannot send message: the WebSocket is closed");
    }
    this.#socket.send(message);
    if (this.#socket.bufferedAmount <= HIGH_WATER_BYTES) return;
    if (this.#drained === null) {
      this.#drained = Promise.withResolvers<void>();
      this.#drain.start();
    }
    await this.#drained.promise;
  }

  close(reason = "closed"): Promise<void> {
    if (!this.#done) {
      const bytes = new TextEncoder().encode(reason);
      this.#closeSocket(1000, bytes.length > 123 ? "closed" : reason);
    }
    return this.#closed.promise;
  }

  [Symbol.asyncIterator](): AsyncIterator<string> {
    return this.#messages(false) as AsyncGenerator<string>;
  }

  async *#messages(binary: boolean): AsyncGenerator<string | Uint8Array> {
    this.#binaryIterated = binary;
    while (true) {
      if (this.#queue.length > 0) {
        const { message, bytes } = this.#queue.shift()!;
        this.#queuedBytes -= bytes;
        this.#budget.hold(this, this.#queuedBytes);
        yield message;
        continue;
      }
      if (this.#done) return;
      this.#waiter = Promise.withResolvers<void>();
      await this.#waiter.promise;
      this.#waiter = null;
    }
  }
}

/**
 * Serves an executor over local WebSockets: one JSON-RPC message per text
 * message, one session per connection.
 *
 * @example Serve on a free loopback port
 * ```ts
 * import { serveLocal } from "@outpost/exec";
 * await using server = await serveLocal();
 * console.log(server.url); // ws://127.0.0.1:PORT
 * ```
 *
 * @param options Listen address, executor, token and abort signal.
 * @returns The running server.
 * @throws {TypeError} For a bad listen address, a non-loopback address without
 *   `allowRemote` and a token, an unusable token, or an allowed origin that is
 *   not `scheme://host[:port]`.
 * @throws {RangeError} When `maxQueuedBytes`, `queueBudgetBytes` (at least
 *   `maxQueuedBytes`) or `maxUninitialized` is not a positive integer, or
 *   `initializeTimeoutMs` is not from 1 to 2^31 - 1.
 */
export async function serveLocal(options: ServeLocalOptions = {}): Promise<LocalServer> {
  const listen = options.listen ?? DEFAULT_LOCAL_LISTEN;
  const { hostname, port } = parseListen(listen);
  const token = options.token === undefined ? undefined : validateToken(options.token);
  const allowRemote = booleanOption("local server", "allowRemote", options.allowRemote);
  if (!isLoopback(hostname)) {
    if (!allowRemote || token === undefined) {
      throw new TypeError(
        `Cannot listen on "${listen}": ${hostname} is not a loopback address; pass allowRemote and a token to expose the executor`,
      );
    }
  }
  const maxQueuedBytes = positiveInteger(
    "maxQueuedBytes",
    options.maxQueuedBytes,
    MAX_QUEUED_BYTES,
  );
  const queueBudgetBytes = positiveInteger(
    "queueBudgetBytes",
    options.queueBudgetBytes,
    Math.max(QUEUE_BUDGET_BYTES, maxQueuedBytes),
  );
  if (queueBudgetBytes < maxQueuedBytes) {
    throw new RangeError(
      `Cannot serve: queueBudgetBytes ${queueBudgetBytes} is below maxQueuedBytes ${maxQueuedBytes}`,
    );
  }
  const maxUninitialized = positiveInteger(
    "maxUninitialized",
    options.maxUninitialized,
    Math.max(MAX_UNINITIALIZED, options.executor?.maxSessions ?? MAX_UNINITIALIZED),
  );
  const initializeTimeoutMs = checkTimerMs(
    "Cannot serve",
    "initializeTimeoutMs",
    options.initializeTimeoutMs ?? INITIALIZE_TIMEOUT_MS,
    1,
  );
  const allowedOrigins = new Set((options.allowedOrigins ?? []).map(checkOrigin));
  options.signal?.throwIfAborted();
  const ownsExecutor = options.executor === undefined;
  const executor = options.executor ?? new Executor();
  const channels = new Set<WebSocketChannel>();
  const serving = new Set<Promise<void>>();
  const budget = new ByteBudget(queueBudgetBytes);
  /** Connections not known to have initialized, oldest first, with their deadline's timer. */
  const uninitialized = new Map<WebSocketChannel, ReturnType<typeof setTimeout>>();
  let stopping = false;

  const report = (event: LocalServerEvent): void => {
    try {
      options.onEvent?.(event);
    } catch {
      // An event sink must not break serving.
    }
  };
  /** Answers a refused request and tells the event sink (code and status, never the token). */
  const refuse = (
    status: number,
    code: string,
    message: string,
    extra: { origin?: string; headers?: Record<string, string> } = {},
  ): Response => {
    report({ type: "refused", status, code, ...(extra.origin ? { origin: extra.origin } : {}) });
    return errorResponse(status, code, message, extra.headers);
  };
  /** Forgets a connection's deadline (it initialized, or ended). */
  const settled = (channel: WebSocketChannel): void => {
    clearTimeout(uninitialized.get(channel));
    uninitialized.delete(channel);
  };
  /** Forgets the connections that have initialized since: they count as sessions now. */
  const pruneInitialized = (): void => {
    for (const channel of uninitialized.keys()) {
      if (executor.hasSession(channel)) settled(channel);
    }
  };
  /** Gives a new connection its deadline, closing the longest waiting past the bound. */
  const awaitInitialize = (channel: WebSocketChannel): void => {
    pruneInitialized();
    for (const oldest of uninitialized.keys()) {
      if (uninitialized.size < maxUninitialized) break;
      settled(oldest);
      oldest.closeWith(
        1013,
        `Cannot wait for initialize: ${maxUninitialized} connections wait, this one the longest`,
      );
    }
    uninitialized.set(
      channel,
      setTimeout(() => {
        uninitialized.delete(channel);
        if (!executor.hasSession(channel)) {
          channel.closeWith(1008, `Cannot serve: no initialize within ${initializeTimeoutMs} ms`);
        }
      }, initializeTimeoutMs),
    );
  };
  const handler = (request: Request): Response => {
    if (stopping) return errorResponse(503, "shutdown", "Cannot connect: the server is closing");
    const origin = request.headers.get("origin");
    if (origin !== null && !allowedOrigins.has(origin)) {
      const shown = origin.slice(0, 200);
      return refuse(
        403,
        "forbidden_origin",
        `Cannot connect from a web page (Origin ${
          JSON.stringify(shown)
        }): serve accepts clients that send no Origin, or origins allowed with --allow-origin (allowedOrigins)`,
        { origin: shown },
      );
    }
    if (token !== undefined) {
      const verdict = checkBearer(request.headers.get("authorization"), token);
      if (verdict !== "ok") {
        return refuse(
          401,
          "unauthorized",
          verdict === "missing"
            ? "Cannot connect: send Authorization: Bearer <token>"
            : "Cannot connect: the bearer token is not valid",
          { headers: { "www-authenticate": "Bearer" } },
        );
      }
    }
    // A client that thinks this is a rendezvous (`exec --executor-id` on a
    // serve URL) would otherwise speak relay frames into a JSON-RPC session.
    const url = requestUrl(request);
    if (url === null) return refuse(400, "bad_request", BAD_HOST_MESSAGE);
    const path = url.pathname;
    if (/^\/(harness|executor|cloud)\//.test(path)) {
      return refuse(
        404,
        "not_a_rendezvous",
        `Cannot serve ${
          JSON.stringify(path.slice(0, 100))
        }: this is a local executor (outpost serve), not a rendezvous; connect to its URL without an executor id`,
      );
    }
    // Deno upgrades any method; a WebSocket opens with GET (RFC 6455), as the rendezvous requires.
    if (request.method !== "GET") {
      return refuse(
        405,
        "method_not_allowed",
        `Cannot ${request.method.slice(0, 20)} a WebSocket: use GET`,
        { headers: { allow: "GET" } },
      );
    }
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return refuse(426, "upgrade_required", "Cannot serve plain HTTP: connect with a WebSocket", {
        headers: { upgrade: "websocket" },
      });
    }
    let upgraded: { socket: WebSocket; response: Response };
    try {
      upgraded = Deno.upgradeWebSocket(request, { idleTimeout: IDLE_TIMEOUT_S });
    } catch (error) {
      // A header missing or wrong: the client's mistake, not a 500 with a stack trace.
      return refuse(400, BAD_UPGRADE, badUpgradeMessage(error));
    }
    const { socket, response } = upgraded;
    const channel = new WebSocketChannel(socket, maxQueuedBytes, budget);
    channels.add(channel);
    awaitInitialize(channel);
    const served = executor.serve(channel).catch(() => {}).finally(() => {
      settled(channel);
      // Nothing reads it any more: what it still queues is freed, and uncounted.
      channel.release();
      channels.delete(channel);
      serving.delete(served);
    });
    serving.add(served);
    return response;
  };

  /** Deno's own `onError` prints the stack and answers plain text: a 500 in the one shape instead. */
  const onError = (error: unknown): Response => {
    report({ type: "failed", message: error instanceof Error ? error.message : String(error) });
    return errorResponse(500, "internal_error", "Cannot serve the request: internal error");
  };
  let listener: Listener;
  try {
    // Out of file descriptors, it keeps serving what it has and listens again.
    listener = new Listener({ hostname, port, handler, onError, onEvent: report });
  } catch (error) {
    if (ownsExecutor) await executor.close();
    throw error;
  }
  const address = listener.addr;
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  const url = `ws://${host}:${address.port}`;

  let closing: Promise<void> | null = null;
  const closed = Promise.withResolvers<void>();
  const close = (): Promise<void> => {
    closing ??= (async () => {
      stopping = true;
      options.signal?.removeEventListener("abort", onAbort);
      // An executor of its own ends its programs while their connections are
      // up, so their last output and exit reach the harnesses.
      if (ownsExecutor) await executor.endPrograms();
      const stopped = listener.close();
      for (const channel of [...uninitialized.keys()]) settled(channel);
      await Promise.allSettled([...channels].map((c) => c.close("server closed")));
      while (serving.size > 0) await Promise.allSettled([...serving]);
      await stopped;
      if (ownsExecutor) await executor.close();
      closed.resolve();
    })();
    return closing;
  };
  const onAbort = (): void => void close();
  options.signal?.addEventListener("abort", onAbort, { once: true });

  return {
    url,
    closed: closed.promise,
    close,
    stats: () => {
      pruneInitialized();
      return {
        connections: channels.size,
        uninitialized: uninitialized.size,
        queuedBytes: budget.used,
      };
    },
    [Symbol.asyncDispose]: close,
  };
}
