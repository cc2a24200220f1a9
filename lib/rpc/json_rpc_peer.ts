/**
 * A JSON-RPC peer over any {@linkcode MessageChannel}: it answers requests and
 * notifications with handlers, and sends its own requests with timeouts and
 * abort signals. It speaks Codex's JSON-RPC lite: inbound messages may omit
 * `"jsonrpc"`, outbound ones carry `"jsonrpc": "2.0"`.
 *
 * @module
 */

import { RelayClosedError, RpcError } from "../errors.ts";
import { MAX_TIMER_MS } from "../_limits.ts";
import type { MessageChannel } from "./message_channel.ts";
import { BINARY_MARKER } from "./binary_messages.ts";
import { classifyMessage, peekEnvelope, type RpcId, utf8Length } from "./_messages.ts";
import { INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR } from "./error_codes.ts";

/** The default limit on one JSON-RPC message, in UTF-8 bytes: 16 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES: number = 16 * 1024 * 1024;
/**
 * The smallest allowed `maxMessageBytes`: every error message the peer
 * generates fits well inside it, so two peers never answer each other's
 * errors with errors that are themselves too large.
 */
export const MIN_MAX_MESSAGE_BYTES: number = 1024;
/**
 * The default number of inbound requests served at once (each counted until
 * its reply is sent) before reading pauses.
 */
export const DEFAULT_MAX_CONCURRENT_REQUESTS: number = 64;
/** The default number of outbound requests awaiting a reply at once. */
export const DEFAULT_MAX_PENDING_REQUESTS: number = 1024;

/**
 * A request handler's result given as JSON text, spliced into the reply as is
 * instead of being serialized again: for a large result whose JSON the
 * handler has at hand (a file's base64), where serializing and measuring it
 * again would hold the event loop for tens of milliseconds.
 *
 * @example
 * ```ts
 * import { JsonResult } from "@outpost/exec";
 * const result = new JsonResult(`{"dataBase64":"aGk="}`, { ascii: true });
 * console.log(JSON.parse(result.json).dataBase64); // aGk=
 * ```
 */
export class JsonResult {
  /** The result's JSON text; the handler guarantees it is valid JSON. */
  readonly json: string;
  /** True when `json` is ASCII only, so its length is its size in UTF-8. */
  readonly ascii: boolean;

  /**
   * Wraps a result's JSON text.
   *
   * @param json Valid JSON text.
   * @param options `ascii`: the text is ASCII only (its size is not measured again).
   */
  constructor(json: string, options: { ascii?: boolean } = {}) {
    this.json = json;
    this.ascii = options.ascii ?? false;
  }
}

/** What a request handler learns besides the method and params. */
export interface RequestContext {
  /** The request id as the peer sent it. */
  readonly id: string | number;
  /** Aborted when the peer closes; long-running handlers stop early. */
  readonly signal: AbortSignal;
  /**
   * Stops counting this request against `maxConcurrentRequests` until the
   * handler returns, for a handler about to wait on something bounded
   * elsewhere (a child's stdin queue): such waits must not keep the peer from
   * reading the request that would end them (a kill). Its reply counts again
   * until sent, so a sender that does not take replies is still not read.
   */
  release(): void;
  /**
   * Runs `callback` once this request's reply (result or error) has been
   * handed to the channel, or given up on because the peer closed: what it
   * sends then goes out after the reply.
   */
  afterReply(callback: () => void): void;
}

/**
 * Serves one inbound request. Return the result (`undefined` becomes `null`);
 * throw an {@linkcode RpcError} for an error reply. Any other thrown error
 * becomes an internal error (-32603) carrying its message.
 */
export type RequestHandler = (
  method: string,
  params: unknown,
  context: RequestContext,
) => Promise<unknown> | unknown;

/** A binary message that stands for a request: served like one, answered in JSON. */
export interface BinaryRequest {
  /** The request id the reply carries. */
  id: number;
  /** The method it stands for. */
  method: string;
  /** The params the handler gets. */
  params: unknown;
}

/** Options of {@linkcode JsonRpcPeer}. */
export interface JsonRpcPeerOptions {
  /**
   * Serves inbound requests. Without it every request gets -32601.
   */
  onRequest?: RequestHandler;
  /** Receives inbound notifications (errors it throws are ignored). */
  onNotification?: (method: string, params: unknown) => void;
  /**
   * Receives inbound binary messages (outpost's negotiated extension, see
   * `binary_messages.ts`), in order with the JSON messages. When it returns a
   * request, the peer serves it as one (its reply is JSON). A message it
   * throws on gets a -32600 error naming the defect; without it every binary
   * message gets one, and the connection continues either way.
   */
  onBinary?: (message: Uint8Array) => void | BinaryRequest;
  /**
   * Reads the request id of a binary message that stands for a request, so
   * that its refusal (oversized, not negotiated, malformed) is answered with
   * that id and the sender's call fails instead of waiting; `null` when none
   * can be read (the refusal then has id `null`).
   */
  binaryRequestId?: (message: Uint8Array) => number | null;
  /**
   * The largest message accepted or sent, in UTF-8 bytes. A larger inbound
   * message gets a -32600 error (id `null`) and the connection continues; a
   * larger outbound request or notification is refused with a `RangeError`; a
   * larger result is replaced by a -32603 error. At least 1024.
   * @default {16777216}
   */
  maxMessageBytes?: number;
  /**
   * Inbound requests served at once; beyond it the peer stops reading the
   * channel until one finishes (backpressure on the sender). A request counts
   * until the channel has accepted its reply, and an error reply to bad input
   * counts until it is sent, so a sender that does not take replies stops
   * being read instead of growing the peer's send queue.
   * @default {64}
   */
  maxConcurrentRequests?: number;
  /**
   * Outbound requests awaiting a reply at once; `request` beyond it rejects
   * with a `RangeError`.
   * @default {1024}
   */
  maxPendingRequests?: number;
}

/** Options of {@linkcode JsonRpcPeer.request}. */
export interface RequestOptions {
  /** Abandons the request; it rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Rejects with a `TimeoutError` `DOMException` after this many ms. */
  timeoutMs?: number;
}

interface Pending {
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

function positiveInteger(
  name: string,
  value: number | undefined,
  fallback: number,
  min = 1,
): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new RangeError(
      `Cannot create JsonRpcPeer: ${name} must be an integer of at least ${min}, got ${value}`,
    );
  }
  return value;
}

/** The text of an error reply. */
function errorText(id: RpcId | null, code: number, message: string, data?: unknown): string {
  const error: Record<string, unknown> = { code, message };
  if (data !== undefined) error.data = data;
  return JSON.stringify({ jsonrpc: "2.0", id, error });
}

const utf8 = new TextEncoder();

/** Shortens a peer-chosen name for an error message (keeps replies small). */
function shown(name: string): string {
  return name.length > 200 ? `${name.slice(0, 200)}...` : name;
}

/**
 * One end of a JSON-RPC connection over a message channel. Used on the server
 * side by the executor (handlers) and on the client side (requests).
 *
 * @example Serve requests and make one
 * ```ts ignore
 * import { JsonRpcPeer } from "@outpost/exec";
 * const peer = new JsonRpcPeer(channel, {
 *   onRequest: (method, params) => ({ method, params }),
 * });
 * const result = await peer.request("environment/info", {}, { timeoutMs: 5_000 });
 * await peer.close();
 * ```
 */
export class JsonRpcPeer implements AsyncDisposable {
  #channel: MessageChannel;
  #onRequest?: RequestHandler;
  /** The channel yields text that is not UTF-8 as bytes (a mux stream). */
  #invalidTextAsBytes = false;
  #onNotification?: (method: string, params: unknown) => void;
  #onBinary?: (message: Uint8Array) => void | BinaryRequest;
  #binaryRequestId?: (message: Uint8Array) => number | null;
  #maxMessageBytes: number;
  #maxConcurrent: number;
  #maxPending: number;
  #pending = new Map<RpcId, Pending>();
  #nextId = 1;
  #inFlight = new Set<Promise<void>>();
  /** Requests still being served that no longer count against the cap (made when first needed). */
  #released?: Set<Promise<void>>;
  #slotFree: PromiseWithResolvers<void> | null = null;
  #abort = new AbortController();
  #closedError: RelayClosedError | null = null;
  #closed: Promise<void>;

  /**
   * Creates the peer and starts reading the channel at once.
   *
   * @param channel The message channel to speak over; the peer owns it.
   * @param options Handlers and limits.
   * @throws {RangeError} If a limit is not a positive integer.
   */
  constructor(channel: MessageChannel, options: JsonRpcPeerOptions = {}) {
    this.#channel = channel;
    this.#onRequest = options.onRequest;
    this.#onNotification = options.onNotification;
    this.#onBinary = options.onBinary;
    this.#binaryRequestId = options.binaryRequestId;
    this.#maxMessageBytes = positiveInteger(
      "maxMessageBytes",
      options.maxMessageBytes,
      DEFAULT_MAX_MESSAGE_BYTES,
      MIN_MAX_MESSAGE_BYTES,
    );
    this.#maxConcurrent = positiveInteger(
      "maxConcurrentRequests",
      options.maxConcurrentRequests,
      DEFAULT_MAX_CONCURRENT_REQUESTS,
    );
    this.#maxPending = positiveInteger(
      "maxPendingRequests",
      options.maxPendingRequests,
      DEFAULT_MAX_PENDING_REQUESTS,
    );
    this.#closed = this.#run();
  }

  /** Settles once the channel has closed, pending requests have failed and handlers have ended. */
  get closed(): Promise<void> {
    return this.#closed;
  }

  /** Requests from the peer being answered now (and error replies not yet sent). */
  get answering(): number {
    return this.#inFlight.size + (this.#released?.size ?? 0);
  }

  /**
   * Sends a request and awaits its result.
   *
   * @param method The method name.
   * @param params The params (omitted from the message when `undefined`).
   * @param options Abort signal and timeout.
   * @returns The `result` of the reply.
   * @throws {RpcError} When the peer replies with an error object.
   * @throws {RelayClosedError} When the channel closes before the reply.
   * @throws {RangeError} When the message exceeds `maxMessageBytes` or too many requests are pending.
   * @throws {DOMException} `TimeoutError` after `timeoutMs`, or `signal.reason` when aborted.
   */
  request<T = unknown>(method: string, params?: unknown, options: RequestOptions = {}): Promise<T> {
    return this.#call<T>(method, options, (id) => {
      const message: Record<string, unknown> = { jsonrpc: "2.0", id, method };
      if (params !== undefined) message.params = params;
      return this.#encode(message, `request "${method}"`);
    });
  }

  /**
   * Sends a request as a binary message (outpost's negotiated extension, e.g.
   * a binary `process/write`) and awaits its JSON reply, with the same
   * pending-request bookkeeping, limits, signal and timeout as
   * {@linkcode JsonRpcPeer.request}.
   *
   * @param method The method the message stands for (for errors and limits).
   * @param encode Builds the message for the request id it is given.
   * @param options Abort signal and timeout.
   * @returns The `result` of the reply.
   * @throws {TypeError} When the channel carries no binary messages.
   * @throws {RpcError} When the peer replies with an error object.
   * @throws {RelayClosedError} When the channel closes before the reply.
   * @throws {RangeError} When the message exceeds `maxMessageBytes` or too many requests are pending.
   * @throws {DOMException} `TimeoutError` after `timeoutMs`, or `signal.reason` when aborted.
   */
  requestBinary<T = unknown>(
    method: string,
    encode: (id: number) => Uint8Array,
    options: RequestOptions = {},
  ): Promise<T> {
    if (this.#channel.binary === undefined) {
      return Promise.reject(
        new TypeError(`Cannot send binary request "${method}": the channel carries only text`),
      );
    }
    return this.#call<T>(method, options, (id) => {
      const message = encode(id);
      if (message.length > this.#maxMessageBytes) {
        throw new RangeError(
          `Cannot send binary request "${method}": ${message.length} bytes exceeds the ${this.#maxMessageBytes} byte limit`,
        );
      }
      return message;
    });
  }

  #call<T>(
    method: string,
    options: RequestOptions,
    encode: (id: number) => string | Uint8Array,
  ): Promise<T> {
    const { signal, timeoutMs } = options;
    try {
      signal?.throwIfAborted();
      if (this.#closedError) throw this.#closedError;
      if (this.#pending.size >= this.#maxPending) {
        throw new RangeError(
          `Cannot send request "${method}": ${this.#maxPending} requests are already pending`,
        );
      }
      if (
        timeoutMs !== undefined && (!(timeoutMs >= 0) || timeoutMs > MAX_TIMER_MS)
      ) {
        // Past 2^31 - 1 ms a timer fires at once.
        throw new RangeError(
          `Cannot send request "${method}": timeoutMs must be a number from 0 to ${MAX_TIMER_MS}`,
        );
      }
    } catch (error) {
      return Promise.reject(error);
    }
    const id = this.#nextId++;
    let encoded: string | Uint8Array;
    try {
      encoded = encode(id);
    } catch (error) {
      return Promise.reject(error);
    }
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => settle(signal!.reason, false);
    const settle = (value: unknown, ok: boolean) => {
      if (!this.#pending.delete(id)) return;
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (ok) resolve(value as T);
      else reject(value);
    };
    this.#pending.set(id, {
      resolve: (value) => settle(value, true),
      reject: (error) => settle(error, false),
    });
    signal?.addEventListener("abort", onAbort, { once: true });
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        settle(
          new DOMException(`Request "${method}" timed out after ${timeoutMs} ms`, "TimeoutError"),
          false,
        );
      }, timeoutMs);
    }
    const sent = typeof encoded === "string"
      ? this.#channel.send(encoded)
      : this.#channel.binary!.send(encoded);
    sent.catch((cause) => {
      settle(
        this.#closedError ??
          new RelayClosedError("Cannot send request: the channel is closed", { cause }),
        false,
      );
    });
    return promise;
  }

  /**
   * Sends a notification (no reply expected).
   *
   * @param method The method name.
   * @param params The params (omitted when `undefined`).
   * @param onDelivered Called once the far end has the message, where the
   *   channel tracks delivery ({@linkcode MessageChannel.tracksDelivery}).
   * @returns Resolves once the channel has accepted the message.
   * @throws {RelayClosedError} When the channel is closed.
   * @throws {RangeError} When the message exceeds `maxMessageBytes`.
   */
  async notify(method: string, params?: unknown, onDelivered?: () => void): Promise<void> {
    if (this.#closedError) throw this.#closedError;
    const message: Record<string, unknown> = { jsonrpc: "2.0", method };
    if (params !== undefined) message.params = params;
    await this.#sendNotification(this.#encode(message, `notification "${method}"`), onDelivered);
  }

  /**
   * Sends a notification whose params are already JSON text, spliced into the
   * message as is instead of being serialized again (for hot paths such as
   * process output, where the params hold a large base64 string).
   *
   * @param method The method name.
   * @param paramsJson The params as the JSON text of one object; the caller
   *   guarantees it is valid JSON.
   * @param onDelivered Called once the far end has the message, where the
   *   channel tracks delivery ({@linkcode MessageChannel.tracksDelivery}).
   * @returns Resolves once the channel has accepted the message.
   * @throws {RelayClosedError} When the channel is closed.
   * @throws {RangeError} When the message exceeds `maxMessageBytes`.
   * @example
   * ```ts ignore
   * await peer.notifyJson("process/output", `{"processId":"p1","seq":1,"chunk":"aGk="}`);
   * ```
   */
  async notifyJson(
    method: string,
    paramsJson: string,
    onDelivered?: () => void,
  ): Promise<void> {
    if (this.#closedError) throw this.#closedError;
    const text = `{"jsonrpc":"2.0","method":${JSON.stringify(method)},"params":${paramsJson}}`;
    this.#checkSize(text, `notification "${method}"`);
    await this.#sendNotification(text, onDelivered);
  }

  /** True when the channel carries binary messages (see {@linkcode JsonRpcPeer.sendBinary}). */
  get canSendBinary(): boolean {
    return this.#channel.binary !== undefined;
  }

  /**
   * Sends one binary message (outpost's extension; only after the peer agreed
   * to it), in order with notifications and replies.
   *
   * @param message The message; its first byte is `0x00`.
   * @param onDelivered Called once the far end has the message, where the
   *   channel tracks delivery ({@linkcode MessageChannel.tracksDelivery}).
   * @returns Resolves once the channel has accepted it.
   * @throws {TypeError} When the channel carries no binary messages.
   * @throws {RelayClosedError} When the channel is closed.
   * @throws {RangeError} When the message exceeds `maxMessageBytes`.
   */
  async sendBinary(message: Uint8Array, onDelivered?: () => void): Promise<void> {
    if (this.#closedError) throw this.#closedError;
    const lane = this.#channel.binary;
    if (lane === undefined) {
      throw new TypeError("Cannot send binary message: the channel carries only text");
    }
    if (message.length > this.#maxMessageBytes) {
      throw new RangeError(
        `Cannot send binary message: ${message.length} bytes exceeds the ${this.#maxMessageBytes} byte limit`,
      );
    }
    try {
      await lane.send(message, onDelivered);
    } catch (cause) {
      throw this.#closedError ??
        new RelayClosedError("Cannot send binary message: the channel is closed", { cause });
    }
  }

  async #sendNotification(text: string, onDelivered?: () => void): Promise<void> {
    try {
      await this.#channel.send(text, onDelivered);
    } catch (cause) {
      throw this.#closedError ??
        new RelayClosedError("Cannot send notification: the channel is closed", { cause });
    }
  }

  /**
   * Sends an error object with id `null`: the reply to a message that had no
   * id to answer (a bad notification, say). The connection continues. Like
   * the replies to requests, it counts against the concurrency cap until the
   * channel takes it, so a peer that sends such messages and never reads is
   * held back instead of queued for.
   *
   * @param code The JSON-RPC error code.
   * @param message The error message.
   * @returns Resolves once the channel has accepted it.
   * @throws {RelayClosedError} When the channel is closed.
   */
  sendError(code: number, message: string): Promise<void> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    const text = JSON.stringify({
      jsonrpc: "2.0",
      id: null,
      error: { code, message: shown(message) },
    });
    const sent = this.#channel.send(text).catch((cause) => {
      throw this.#closedError ??
        new RelayClosedError("Cannot send error: the channel is closed", { cause });
    });
    this.#track(sent.catch(() => {}));
    return sent;
  }

  /**
   * Closes the channel; pending requests fail with {@linkcode RelayClosedError}.
   * Idempotent.
   *
   * @returns Resolves once {@linkcode JsonRpcPeer.closed} has settled.
   */
  async close(): Promise<void> {
    await this.#channel.close().catch(() => {});
    await this.#closed;
  }

  /** Same as {@linkcode JsonRpcPeer.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #encode(message: Record<string, unknown>, what: string): string {
    const text = JSON.stringify(message);
    this.#checkSize(text, what);
    return text;
  }

  /** The reply text for a {@linkcode JsonResult}, in the member order `#encode` gives. */
  #spliceResult(id: RpcId, result: JsonResult, method: string): string {
    const text = `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":${result.json}}`;
    const what = `result of "${shown(method)}"`;
    if (!result.ascii) this.#checkSize(text, what);
    else if (text.length > this.#maxMessageBytes) {
      throw new RangeError(
        `Cannot send ${what}: the message exceeds the ${this.#maxMessageBytes} byte limit`,
      );
    }
    return text;
  }

  #checkSize(text: string, what: string): void {
    if (utf8Length(text, this.#maxMessageBytes) > this.#maxMessageBytes) {
      throw new RangeError(
        `Cannot send ${what}: the message exceeds the ${this.#maxMessageBytes} byte limit`,
      );
    }
  }

  /** Sends a reply; settles (never rejects) once the channel has taken it or failed. */
  #sendQuietly(text: string): Promise<void> {
    if (this.#closedError) return Promise.resolve();
    return this.#channel.send(text).catch(() => {});
  }

  #sendError(id: RpcId | null, code: number, message: string, data?: unknown): Promise<void> {
    return this.#sendQuietly(errorText(id, code, message, data));
  }

  /**
   * Sends the reply to request `id`. A reply the channel refuses as too large
   * (a `RangeError`: a Codex v1 stream carries one relay frame per message) is
   * answered with a -32603 error instead, so the caller never waits in vain;
   * if that is refused too, the peer gives up quietly.
   */
  async #reply(id: RpcId, method: string, text: string): Promise<void> {
    if (this.#closedError) return;
    try {
      await this.#channel.send(text);
    } catch (error) {
      if (!(error instanceof RangeError) || this.#closedError) return;
      const bytes = utf8.encode(text).length;
      const limit = this.#channel.maxMessageBytes;
      const over = limit === undefined
        ? "more than this stream carries in one message"
        : `over this stream's ${limit}-byte message limit`;
      await this.#sendError(
        id,
        INTERNAL_ERROR,
        `Cannot reply to "${shown(method)}": the reply is ${bytes} bytes, ${over}`,
      );
    }
  }

  /** Answers bad input with an error reply that counts against the concurrency cap until sent. */
  #refuse(id: RpcId | null, code: number, message: string): void {
    this.#track(this.#sendError(id, code, message));
  }

  /** Counts `task` in flight until it settles (unless `released`); reading pauses while the cap is reached. */
  #track(task: Promise<void>, released = false): Promise<void> {
    const tracked = task.finally(() => {
      this.#inFlight.delete(tracked);
      this.#released?.delete(tracked);
      this.#freeSlot();
    });
    (released ? (this.#released ??= new Set()) : this.#inFlight).add(tracked);
    return tracked;
  }

  #freeSlot(): void {
    const slotFree = this.#slotFree;
    this.#slotFree = null;
    slotFree?.resolve();
  }

  async #run(): Promise<void> {
    let cause: unknown;
    // A closed channel must not wait for a slot: closing aborts the handlers.
    // Watched once here, not raced per wait (each race would leave a reaction
    // on the pending `closed` promise).
    let channelClosed = false;
    const onClosed = () => {
      channelClosed = true;
      this.#freeSlot();
    };
    this.#channel.closed.then(onClosed, onClosed);
    try {
      const lane = this.#channel.binary;
      this.#invalidTextAsBytes = lane?.invalidTextAsBytes === true;
      const messages = lane?.messages() ?? this.#channel;
      reading: for await (const message of messages) {
        if (typeof message === "string") this.#receive(message);
        else this.#receiveBinary(message);
        while (this.#inFlight.size >= this.#maxConcurrent) {
          if (channelClosed) break reading;
          this.#slotFree ??= Promise.withResolvers<void>();
          await this.#slotFree.promise;
        }
      }
    } catch (error) {
      cause = error;
    }
    await this.#channel.close().catch(() => {});
    this.#closedError = new RelayClosedError("JSON-RPC channel closed", { cause });
    this.#abort.abort(this.#closedError);
    for (const pending of [...this.#pending.values()]) pending.reject(this.#closedError);
    while (this.#inFlight.size > 0 || (this.#released?.size ?? 0) > 0) {
      await Promise.allSettled([...this.#inFlight, ...this.#released ?? []]);
    }
  }

  #receiveBinary(message: Uint8Array): void {
    const refuse = (reason: string) => {
      let id: number | null = null;
      try {
        id = this.#binaryRequestId?.(message) ?? null;
      } catch {
        // No readable id: refuse with null.
      }
      this.#refuse(id, INVALID_REQUEST, `Cannot accept binary message: ${reason}`);
    };
    if (message.length > this.#maxMessageBytes) {
      refuse(`it exceeds the ${this.#maxMessageBytes} byte limit`);
      return;
    }
    if (message[0] !== BINARY_MARKER && this.#invalidTextAsBytes) {
      // Text that is not UTF-8, which a mux stream yields as bytes: the same
      // refusal as text that is not JSON, rather than a lossy reading.
      this.#refuse(null, PARSE_ERROR, "Cannot parse message: it is not valid UTF-8");
      return;
    }
    if (this.#onBinary === undefined) {
      refuse("binary messages were not negotiated; send each JSON-RPC message as text");
      return;
    }
    let request: void | BinaryRequest;
    try {
      request = this.#onBinary(message);
    } catch (error) {
      refuse(shown(error instanceof Error ? error.message : String(error)));
      return;
    }
    if (request) this.#serve(request.id, request.method, request.params);
  }

  #receive(text: string): void {
    if (utf8Length(text, this.#maxMessageBytes) > this.#maxMessageBytes) {
      const why = `it exceeds the ${this.#maxMessageBytes} byte limit`;
      // Unparsed, but its caller must not wait in vain: a request is answered
      // by its id, and an answer to our own request fails that request.
      const { id, hasMethod } = peekEnvelope(text);
      const pending = id === null || hasMethod ? undefined : this.#pending.get(id);
      if (pending) {
        pending.reject(new RangeError(`Cannot accept the answer: ${why}`));
        return;
      }
      this.#refuse(hasMethod ? id : null, INVALID_REQUEST, `Cannot accept message: ${why}`);
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      this.#refuse(
        null,
        PARSE_ERROR,
        `Cannot parse message: ${shown((error as Error).message)}`,
      );
      return;
    }
    if (Array.isArray(value)) {
      this.#refuse(
        null,
        INVALID_REQUEST,
        "Cannot accept batch: send one JSON-RPC message at a time",
      );
      return;
    }
    const message = classifyMessage(value);
    switch (message.kind) {
      case "invalid":
        this.#refuse(message.id, INVALID_REQUEST, `Cannot accept message: ${message.reason}`);
        return;
      case "response":
        this.#pending.get(message.id)?.resolve(message.result);
        return;
      case "error":
        if (message.id !== null) {
          const { code, message: text, data } = message.error;
          this.#pending.get(message.id)?.reject(new RpcError(code, text, data));
        }
        return;
      case "notification":
        try {
          this.#onNotification?.(message.method, message.params);
        } catch {
          // A notification has no reply; a failing handler must not end the connection.
        }
        return;
      case "request":
        this.#serve(message.id, message.method, message.params);
        return;
    }
  }

  #serve(id: RpcId, method: string, params: unknown): void {
    const slot: { tracked?: Promise<void>; released: boolean; settled: boolean } = {
      released: false,
      settled: false,
    };
    const release = (): void => {
      if (slot.released || slot.settled) return;
      slot.released = true;
      // Released before it was tracked (synchronously, in the handler): `#track` sees the flag.
      if (slot.tracked && this.#inFlight.delete(slot.tracked)) {
        (this.#released ??= new Set()).add(slot.tracked);
        this.#freeSlot();
      }
    };
    /** The handler returned: the reply counts until sent. */
    const recount = (): void => {
      slot.settled = true;
      if (slot.tracked && this.#released?.delete(slot.tracked)) this.#inFlight.add(slot.tracked);
      slot.released = false;
    };
    // Arguments run in order: the handler's synchronous part first, then the flag is read.
    slot.tracked = this.#track(this.#answer(id, method, params, release, recount), slot.released);
  }

  /**
   * Runs the handler and sends its reply; settles once the reply is sent.
   * Callbacks the handler left with `afterReply` run then (or once the reply
   * is given up on), whichever way it ended.
   */
  async #answer(
    id: RpcId,
    method: string,
    params: unknown,
    release: () => void,
    recount: () => void,
  ): Promise<void> {
    let replied: (() => void)[] | undefined;
    try {
      let result: unknown;
      try {
        if (!this.#onRequest) {
          throw new RpcError(METHOD_NOT_FOUND, `Method not found: "${shown(method)}"`);
        }
        try {
          result = await this.#onRequest(method, params, {
            id,
            signal: this.#abort.signal,
            release,
            afterReply: (callback) => (replied ??= []).push(callback),
          });
        } finally {
          recount();
        }
      } catch (error) {
        if (error instanceof RpcError) {
          await this.#reply(id, method, errorText(id, error.code, error.message, error.data));
        } else {
          await this.#sendError(
            id,
            INTERNAL_ERROR,
            `Cannot complete "${shown(method)}": ${
              shown(error instanceof Error ? error.message : String(error))
            }`,
          );
        }
        return;
      }
      let text: string;
      try {
        text = result instanceof JsonResult ? this.#spliceResult(id, result, method) : this.#encode(
          { jsonrpc: "2.0", id, result: result ?? null },
          `result of "${shown(method)}"`,
        );
      } catch (error) {
        await this.#sendError(id, INTERNAL_ERROR, (error as Error).message);
        return;
      }
      await this.#reply(id, method, text);
    } finally {
      for (const callback of replied ?? []) {
        try {
          callback();
        } catch {
          // A callback's failure is its own; the reply has gone out.
        }
      }
    }
  }
}
