/**
 * `RelaySocket`: relay frames over one Deno `WebSocket`, one frame per binary
 * message, with backpressure on `bufferedAmount`, a bounded inbound queue and
 * typed close errors.
 *
 * Deno's `WebSocket` has no drain event and no way to pause reading, so:
 *
 * - Outbound: `send` resolves at once while `bufferedAmount` is at or below the
 *   high watermark. Once a send pushes it above, later sends queue in order
 *   and the socket polls `bufferedAmount` with a short timer (1 ms while it is
 *   falling, backing off to 32 ms while the peer is stalled; no timer runs
 *   when nothing is blocked) until it is at or below the low watermark.
 * - Inbound: frames wait in a queue bounded by a frame count and a byte budget.
 *   A consumer too slow to stay within it gets the socket closed with code
 *   1008 (policy violation; 4008 on the client side, where browsers' API
 *   allows only 1000 and 3000-4999) and a reason naming the overflow, rather
 *   than unbounded memory growth. Frames queued before the close are still
 *   delivered, then iteration ends.
 *
 * @module
 */

import { ProtocolError, RelayClosedError } from "../errors.ts";
import { DrainPoller } from "./_backpressure.ts";
import { checkTimerMs } from "../_limits.ts";
import { printableUrl } from "../_userinfo.ts";
import type { BudgetHolder, ByteBudget } from "../_byte_budget.ts";
import {
  decodeFrame,
  DEFAULT_MAX_FRAME_BYTES,
  encodeDataFrameHead,
  encodeFrame,
  peekStreamId,
  type RelayFrame,
} from "./frame_codec.ts";
import {
  DEFAULT_IDLE_TIMEOUT_MS,
  TcpWebSocket,
  type UpgradeRefusal,
  upgradeRefusal,
} from "./_tcp_websocket.ts";

/** A decoded frame together with the exact bytes it arrived as. */
export interface ReceivedFrame extends RelayFrame {
  /** The encoded frame as received (a view, not a copy); forward it untouched. */
  readonly bytes: Uint8Array;
}

/** How a relay socket ended. */
export interface RelayCloseInfo {
  /** The WebSocket close code (1005 when the peer sent none, 1006 when the connection dropped). */
  readonly code: number;
  /** The close reason, possibly empty. */
  readonly reason: string;
  /** Whether the closing handshake completed. */
  readonly wasClean: boolean;
}

/** Options shared by {@linkcode RelaySocket.accept} and {@linkcode RelaySocket.connect}. */
export interface RelaySocketOptions {
  /**
   * Largest frame accepted or sent, in bytes; larger inbound frames are
   * dropped and reported, larger outbound frames are refused.
   * @default {262144}
   */
  maxFrameBytes?: number;
  /**
   * Sends wait once `bufferedAmount` is above this many bytes.
   * @default {1048576}
   */
  highWaterMark?: number;
  /**
   * Waiting sends resume once `bufferedAmount` is at or below this many bytes.
   * @default {262144}
   */
  lowWaterMark?: number;
  /**
   * Byte budget of received frames not yet taken by the consumer; crossing it
   * closes the socket (code 1008, or 4008 on the client side). A socket from
   * {@linkcode RelaySocket.connect} on outpost's own client transport (not
   * `transport: "native"`) stops reading at half of either budget (and reads
   * again at a quarter), so a slow consumer holds the peer back instead; one
   * accepted on Deno's server WebSocket cannot. While it holds back, the
   * peer's close frame waits behind the unread frames too: `closed` settles
   * once the consumer has taken enough of them.
   * @default {16777216}
   */
  maxQueuedBytes?: number;
  /**
   * Count budget of received frames not yet taken by the consumer; crossing it
   * closes the socket like {@linkcode RelaySocketOptions.maxQueuedBytes}.
   * @default {4096}
   */
  maxQueuedFrames?: number;
  /**
   * Shared with other sockets (a rendezvous's router passes its queue
   * budget): received frames not yet taken count against it, each as its
   * length plus {@linkcode QUEUED_FRAME_OVERHEAD_BYTES}, also once the
   * socket has closed, until they are read or dropped
   * ({@linkcode RelaySocket.dropUnread}). When the budget sheds this socket
   * those frames are dropped and the socket closes like
   * {@linkcode RelaySocketOptions.maxQueuedBytes}.
   */
  budget?: ByteBudget;
  /**
   * How long `close()` waits for the closing handshake before it gives up and
   * reports code 1006.
   * @default {5000}
   */
  closeTimeoutMs?: number;
  /**
   * Called for every inbound message that is dropped: a text message, or bytes
   * that are not a valid frame. The socket keeps serving. Exceptions thrown by
   * the callback are ignored.
   */
  onProtocolError?: (error: ProtocolError) => void;
}

/** Options for {@linkcode RelaySocket.connect}. */
export interface RelayConnectOptions extends RelaySocketOptions {
  /** Sent as `Authorization: Bearer <token>`; never logged. */
  token?: string;
  /** Extra request headers for the WebSocket handshake. */
  headers?: HeadersInit;
  /** Aborts the connection attempt; the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
  /**
   * Connection attempt deadline in milliseconds.
   * @default {10000}
   */
  timeoutMs?: number;
  /** WebSocket subprotocols to offer. */
  protocols?: string[];
  /**
   * How to dial: `"tcp"` runs outpost's own WebSocket client over
   * `Deno.connect` with `TCP_NODELAY` set and same-turn frames coalesced into
   * one write; `"native"` uses Deno's built-in `WebSocket`, which leaves
   * Nagle's algorithm on (back-to-back small frames then wait for the peer's
   * delayed ACK, about 40 ms) but honours whatever the runtime adds, such as
   * proxies.
   * @default {"tcp"}
   */
  transport?: "tcp" | "native";
  /**
   * With the `"tcp"` transport: a connection on which nothing has arrived for
   * this long (a ping goes out halfway) is dropped, so a connection that went
   * silent without closing ends like a lost one (code 1006) instead of
   * waiting forever. 0 turns the check off; the `"native"` transport has no
   * such check. @default {30000}
   */
  idleTimeoutMs?: number;
}

/** Default {@linkcode RelaySocketOptions.highWaterMark}: 1 MiB. */
export const DEFAULT_HIGH_WATER_MARK: number = 1024 * 1024;
/** Default {@linkcode RelaySocketOptions.lowWaterMark}: 256 KiB. */
export const DEFAULT_LOW_WATER_MARK: number = 256 * 1024;
/**
 * What each unread frame counts against a shared
 * {@linkcode RelaySocketOptions.budget} besides its length: a queued frame
 * costs its decoded object too (the router charges its queued frames the
 * same).
 */
export const QUEUED_FRAME_OVERHEAD_BYTES = 256;
/** Default {@linkcode RelaySocketOptions.maxQueuedBytes}: 16 MiB. */
export const DEFAULT_MAX_QUEUED_BYTES: number = 16 * 1024 * 1024;
/** Default {@linkcode RelaySocketOptions.maxQueuedFrames}. */
export const DEFAULT_MAX_QUEUED_FRAMES: number = 4096;
/** Default {@linkcode RelayConnectOptions.timeoutMs}. */
export const DEFAULT_CONNECT_TIMEOUT_MS: number = 10_000;

const DEFAULT_CLOSE_TIMEOUT_MS = 5_000;
/** Messages up to this size are passed up (and dropped as oversize frames there); past it the transport closes. */
const DEFAULT_MAX_TRANSPORT_MESSAGE_BYTES = 16 * 1024 * 1024;
const MAX_CLOSE_REASON_BYTES = 123;
const RESOLVED: Promise<void> = Promise.resolve();
const utf8 = new TextEncoder();

interface PendingSend {
  bytes: Uint8Array;
  /** The payload of a data frame sent in two parts (`bytes` is then its head). */
  tail: Uint8Array | undefined;
  resolve: () => void;
  reject: (error: unknown) => void;
}

interface WaitingReader {
  resolve: (result: IteratorResult<ReceivedFrame>) => void;
}

type Role = "client" | "server";

/** Cuts a close reason to the 123 bytes WebSocket allows, on a character boundary. */
function clampCloseReason(reason: string): string {
  if (reason.length <= MAX_CLOSE_REASON_BYTES / 3) return reason;
  let bytes = utf8.encode(reason);
  if (bytes.length <= MAX_CLOSE_REASON_BYTES) return reason;
  let out = reason;
  while (bytes.length > MAX_CLOSE_REASON_BYTES) {
    out = Array.from(out).slice(0, -1).join("");
    bytes = utf8.encode(out);
  }
  return out;
}

/** A {@linkcode positiveOption} that becomes a timer's delay (at most `MAX_TIMER_MS`). */
function timerOption(name: string, value: number | undefined, fallback: number): number {
  return checkTimerMs("Cannot create relay socket", name, positiveOption(name, value, fallback), 0);
}

function positiveOption(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(
      `Cannot create relay socket: ${name} ${value} is not a non-negative number`,
    );
  }
  return value;
}

/** Where a frame refused for its size stood in the inbound queue. */
interface OversizeNotice {
  oversizedStreamId: string;
  bytes: Uint8Array;
}

const NO_BYTES = new Uint8Array(0);

/**
 * Relay frames over one WebSocket: the client side dials with
 * {@linkcode RelaySocket.connect}, the server side wraps the socket from
 * `Deno.upgradeWebSocket` with {@linkcode RelaySocket.accept}. Iterate it for
 * inbound frames; `send` and `sendBytes` respect backpressure.
 *
 * @example Echo frames back on the server side
 * ```ts ignore
 * import { RelaySocket } from "@outpost/exec";
 * Deno.serve((request) => {
 *   const { socket, response } = Deno.upgradeWebSocket(request);
 *   const relay = RelaySocket.accept(socket);
 *   (async () => {
 *     for await (const frame of relay) await relay.sendBytes(frame.bytes);
 *   })();
 *   return response;
 * });
 * ```
 */
export class RelaySocket implements AsyncIterable<ReceivedFrame>, AsyncDisposable {
  /**
   * Called with the `stream_id` of a frame refused for its size, when it can
   * be read (after the protocol error is reported), so the socket's owner can
   * reset that stream: its sender would otherwise wait for a reply that will
   * never come. The stream mux and the rendezvous router set it.
   */
  onOversizedFrame: ((streamId: string) => void) | undefined = undefined;
  /**
   * Called when the shared {@linkcode RelaySocketOptions.budget} shed this
   * socket (its unread frames were dropped and it is closing), so its owner
   * can say why. The rendezvous router sets it. Exceptions are ignored.
   */
  onShed: (() => void) | undefined = undefined;
  #ws: WebSocket;
  #role: Role;
  #maxFrameBytes: number;
  #high: number;
  #low: number;
  #maxQueuedBytes: number;
  #maxQueuedFrames: number;
  #budget: ByteBudget | undefined;
  /** This socket's unread frames, as the budget sees them. */
  #budgetHolder: BudgetHolder = { shed: () => this.#shedQueue() };
  #closeTimeoutMs: number;
  #onProtocolError: ((error: ProtocolError) => void) | undefined;

  #pending: PendingSend[] = [];
  #pendingHead = 0;
  #blocked = false;
  #drain: DrainPoller;
  /** The socket when it is our own transport: two-part sends, drain and message hooks. */
  #tcp: TcpWebSocket | undefined;

  /** Unread frames, and oversize notices kept in their place among them. */
  #queue: (ReceivedFrame | OversizeNotice)[] = [];
  /** Set while the client transport's reading is paused for a full queue. */
  #readingPaused = false;
  #queueHead = 0;
  #queuedBytes = 0;
  #framesReceived = 0;
  #readers: WaitingReader[] = [];

  #closeError: RelayClosedError | undefined;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #lastErrorMessage = "";
  #info: RelayCloseInfo | undefined;
  #closed: Promise<RelayCloseInfo>;
  #resolveClosed!: (info: RelayCloseInfo) => void;

  /**
   * Wraps a WebSocket; prefer {@linkcode RelaySocket.accept} or
   * {@linkcode RelaySocket.connect}.
   *
   * @param socket A `CONNECTING` or `OPEN` WebSocket.
   * @param options Limits, watermarks and the protocol error callback.
   * @param role `"server"` for sockets from `Deno.upgradeWebSocket`, `"client"` otherwise.
   * @throws {RangeError} If an option is negative or the low watermark is above the high one.
   */
  constructor(
    socket: WebSocket,
    options: RelaySocketOptions = {},
    role: "client" | "server" = "server",
  ) {
    this.#ws = socket;
    this.#role = role;
    this.#maxFrameBytes = positiveOption(
      "maxFrameBytes",
      options.maxFrameBytes,
      DEFAULT_MAX_FRAME_BYTES,
    );
    this.#high = positiveOption("highWaterMark", options.highWaterMark, DEFAULT_HIGH_WATER_MARK);
    this.#low = positiveOption(
      "lowWaterMark",
      options.lowWaterMark,
      Math.min(DEFAULT_LOW_WATER_MARK, this.#high),
    );
    if (this.#low > this.#high) {
      throw new RangeError(
        `Cannot create relay socket: lowWaterMark ${this.#low} is above highWaterMark ${this.#high}`,
      );
    }
    this.#drain = new DrainPoller(() => this.#ws.bufferedAmount, this.#low, this.#onDrained);
    this.#maxQueuedBytes = positiveOption(
      "maxQueuedBytes",
      options.maxQueuedBytes,
      DEFAULT_MAX_QUEUED_BYTES,
    );
    this.#maxQueuedFrames = positiveOption(
      "maxQueuedFrames",
      options.maxQueuedFrames,
      DEFAULT_MAX_QUEUED_FRAMES,
    );
    this.#budget = options.budget;
    this.#closeTimeoutMs = timerOption(
      "closeTimeoutMs",
      options.closeTimeoutMs,
      DEFAULT_CLOSE_TIMEOUT_MS,
    );
    this.#onProtocolError = options.onProtocolError;
    this.#closed = new Promise((resolve) => this.#resolveClosed = resolve);
    socket.binaryType = "arraybuffer";
    if (socket instanceof TcpWebSocket) {
      this.#tcp = socket;
      socket.onbinary = this.#onBytes;
      socket.ondrain = this.#onTransportDrain;
    }
    socket.addEventListener("open", this.#onOpen);
    socket.addEventListener("message", this.#onMessage);
    socket.addEventListener("error", this.#onError);
    socket.addEventListener("close", this.#onClose);
    if (socket.readyState === WebSocket.CLOSED) {
      this.#finish({ code: 1006, reason: "socket was already closed", wasClean: false });
    } else if (socket.readyState === WebSocket.CLOSING) {
      this.#closeError = new RelayClosedError("Relay socket closed: socket was already closing");
    }
  }

  /**
   * Wraps the server side of a WebSocket, as returned by `Deno.upgradeWebSocket`.
   * The socket may still be `CONNECTING`; sends wait until it opens.
   *
   * @example Accept a relay socket
   * ```ts ignore
   * import { RelaySocket } from "@outpost/exec";
   * Deno.serve((request) => {
   *   const { socket, response } = Deno.upgradeWebSocket(request);
   *   const relay = RelaySocket.accept(socket, { onProtocolError: console.warn });
   *   relay.closed.then((info) => console.log("closed", info.code));
   *   return response;
   * });
   * ```
   *
   * @param socket The server-side WebSocket.
   * @param options Limits, watermarks and the protocol error callback.
   * @returns The relay socket.
   * @throws {RangeError} If an option is out of range.
   */
  static accept(socket: WebSocket, options?: RelaySocketOptions): RelaySocket {
    return new RelaySocket(socket, options, "server");
  }

  /**
   * Dials a relay WebSocket, sending `Authorization: Bearer <token>` when a
   * token is given, and resolves once the socket is open.
   *
   * @example Connect with a token
   * ```ts ignore
   * import { RelaySocket } from "@outpost/exec";
   * await using relay = await RelaySocket.connect("ws://127.0.0.1:8080/harness/e1?role=harness", {
   *   token: Deno.env.get("OUTPOST_TOKEN"),
   *   timeoutMs: 5_000,
   * });
   * await relay.send({ version: 1, streamId: "s-1", ack: 0, ackBits: 0, body: { kind: "resume", nextSeq: 0 } });
   * ```
   *
   * @param url A `ws:` or `wss:` URL.
   * @param options The token, headers, deadline, abort signal and socket options.
   * @returns The open relay socket.
   * @throws {RelayClosedError} If the connection fails or is refused (e.g. HTTP
   * 401); for a refused upgrade its `refusal` holds the status and the body's error code.
   * @throws {DOMException} A `TimeoutError` when `timeoutMs` passes first.
   * @throws {SyntaxError} If the URL is not a valid WebSocket URL.
   * @throws {RangeError} If an option is out of range.
   * @throws {unknown} `signal.reason` when the signal aborts.
   */
  static connect(url: string | URL, options: RelayConnectOptions = {}): Promise<RelaySocket> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const timeoutMs = timerOption("timeoutMs", options.timeoutMs, DEFAULT_CONNECT_TIMEOUT_MS);
    const where = printableUrl(url);
    let ws: WebSocket;
    try {
      const headers = new Headers(options.headers);
      if (options.token !== undefined) headers.set("authorization", `Bearer ${options.token}`);
      ws = options.transport === "native"
        ? new WebSocket(url, { headers, protocols: options.protocols })
        : new TcpWebSocket(url, {
          headers,
          protocols: options.protocols,
          closeTimeoutMs: timerOption(
            "closeTimeoutMs",
            options.closeTimeoutMs,
            DEFAULT_CLOSE_TIMEOUT_MS,
          ),
          idleTimeoutMs: timerOption(
            "idleTimeoutMs",
            options.idleTimeoutMs,
            DEFAULT_IDLE_TIMEOUT_MS,
          ),
          maxMessageBytes: Math.max(
            DEFAULT_MAX_TRANSPORT_MESSAGE_BYTES,
            positiveOption("maxFrameBytes", options.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES),
          ),
        });
    } catch (error) {
      return Promise.reject(error);
    }
    ws.binaryType = "arraybuffer";
    return new Promise<RelaySocket>((resolve, reject) => {
      let errorMessage = "";
      let refusal: UpgradeRefusal | undefined;
      let failure: unknown;
      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        ws.removeEventListener("open", onOpen);
        ws.removeEventListener("error", onError);
        ws.removeEventListener("close", onClose);
      };
      const onOpen = (): void => {
        if (failure !== undefined) return; // the close event settles it
        cleanup();
        try {
          resolve(new RelaySocket(ws, options, "client"));
        } catch (error) {
          ws.close();
          reject(error);
        }
      };
      const onError = (event: Event): void => {
        errorMessage = (event as ErrorEvent).message ?? "";
        refusal = upgradeRefusal(event);
      };
      const onClose = (event: CloseEvent): void => {
        cleanup();
        reject(
          failure ?? new RelayClosedError(
            `Cannot connect relay socket to ${where}: ${
              errorMessage || `closed with code ${event.code}`
            }`,
            {
              cause: { code: event.code, reason: event.reason, wasClean: event.wasClean },
              refusal,
            },
          ),
        );
      };
      // Give up: close the attempt and reject once its close event has fired,
      // so no resource outlives the returned promise.
      const fail = (error: unknown): void => {
        if (failure !== undefined) return;
        failure = error;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        ws.close();
      };
      const onAbort = (): void => fail(signal!.reason);
      const timer = setTimeout(() =>
        fail(
          new DOMException(
            `Cannot connect relay socket to ${where}: no answer within ${timeoutMs} ms`,
            "TimeoutError",
          ),
        ), timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      ws.addEventListener("open", onOpen);
      ws.addEventListener("error", onError);
      ws.addEventListener("close", onClose);
    });
  }

  /** Bytes handed to the WebSocket but not yet written to the network. */
  get bufferedAmount(): number {
    return this.#ws.bufferedAmount;
  }

  /**
   * How the socket closed, once it has, by either side (the `closed`
   * promise's value); `undefined` while it is open. Frames it received before
   * may still be unread (the iterator yields them).
   */
  get closeInfo(): RelayCloseInfo | undefined {
    return this.#info;
  }

  /** Well-formed frames received so far (a socket that carried something, not only opened). */
  get framesReceived(): number {
    return this.#framesReceived;
  }

  /** Resolves once the socket has closed, by either side; never rejects. */
  get closed(): Promise<RelayCloseInfo> {
    return this.#closed;
  }

  /**
   * Encodes and sends one frame. Resolves once the frame is handed to the
   * WebSocket; waits first while `bufferedAmount` is over the high watermark.
   * Frames go out in call order.
   *
   * @param frame The frame to send.
   * @returns A promise that resolves when the frame is accepted.
   * @throws {TypeError} If the frame is invalid.
   * @throws {RangeError} If the encoded frame is over `maxFrameBytes`.
   * @throws {RelayClosedError} If the socket is closed or closes while the send waits.
   */
  send(frame: RelayFrame): Promise<void> {
    let bytes: Uint8Array | undefined;
    let tail: Uint8Array | undefined;
    try {
      // Our transport takes a data frame as head + payload: no joined copy.
      if (this.#tcp !== undefined) bytes = encodeDataFrameHead(frame);
      if (bytes === undefined) bytes = encodeFrame(frame);
      else tail = (frame.body as { payload: Uint8Array }).payload;
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#send(bytes, tail);
  }

  /**
   * Sends one already-encoded frame as is (the router forwards received bytes
   * untouched). Same ordering and backpressure as {@linkcode RelaySocket.send}.
   * The bytes must not be modified until the promise resolves.
   *
   * @param bytes One encoded frame.
   * @returns A promise that resolves when the frame is accepted.
   * @throws {RangeError} If the frame is over `maxFrameBytes`.
   * @throws {RelayClosedError} If the socket is closed or closes while the send waits.
   */
  sendBytes(bytes: Uint8Array): Promise<void> {
    return this.#send(bytes, undefined);
  }

  #send(bytes: Uint8Array, tail: Uint8Array | undefined): Promise<void> {
    if (this.#closeError !== undefined) return Promise.reject(this.#closeError);
    const length = bytes.length + (tail?.length ?? 0);
    if (length > this.#maxFrameBytes) {
      return Promise.reject(
        new RangeError(
          `Cannot send frame: length ${length} exceeds the ${this.#maxFrameBytes} byte limit`,
        ),
      );
    }
    if (
      !this.#blocked && this.#pendingHead === this.#pending.length &&
      this.#ws.readyState === WebSocket.OPEN
    ) {
      this.#write(bytes, tail);
      return RESOLVED;
    }
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ bytes, tail, resolve, reject });
    });
  }

  /**
   * Closes the socket: pending and later sends fail with
   * {@linkcode RelayClosedError}, frames already queued can still be read.
   * Idempotent; every call resolves once the socket has closed.
   *
   * @param reason The close reason sent to the peer (cut to 123 bytes).
   * @param code The close code: 1000, 1001, 1003, 1008, 1009, 1011 or 3000-4999.
   *   The client side sends 1001, 1003, 1008, 1009 and 1011 as 4001, 4003, 4008,
   *   4009 and 4011, because WebSocket clients may only send 1000 and 3000-4999.
   * @returns A promise that resolves when the socket has closed.
   * @throws {RangeError} If the code is not one of those.
   */
  close(reason = "", code = 1000): Promise<void> {
    if (this.#closeError === undefined) {
      const standard = code === 1001 || code === 1003 || code === 1008 || code === 1009 ||
        code === 1011;
      if (
        !Number.isInteger(code) || !(code === 1000 || standard || (code >= 3000 && code <= 4999))
      ) {
        return Promise.reject(
          new RangeError(
            `Cannot close relay socket: code ${code} is not 1000, 1001, 1003, 1008, 1009, 1011 or 3000-4999`,
          ),
        );
      }
      // Deno's client WebSocket (like browsers) may only send 1000 and 3000-4999.
      if (standard && this.#role === "client") code += 3000;
    }
    this.#startClose(reason, code);
    return this.#closed.then(() => {});
  }

  /** Closes the socket; same as `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Iterates inbound frames. Invalid messages are dropped and reported to
   * `onProtocolError`. Ends when the socket has closed and the queue is empty.
   * Leaving a loop early does not close the socket; frames keep queuing
   * (within the queue budget) for the next loop.
   *
   * @returns An iterator of received frames.
   */
  [Symbol.asyncIterator](): AsyncIterator<ReceivedFrame> {
    return {
      next: (): Promise<IteratorResult<ReceivedFrame>> => this.#next(),
      return: (): Promise<IteratorResult<ReceivedFrame>> =>
        Promise.resolve({ done: true, value: undefined }),
    };
  }

  #next(): Promise<IteratorResult<ReceivedFrame>> {
    while (this.#queueHead < this.#queue.length) {
      const item = this.#take();
      // A notice (its bytes are NO_BYTES; a frame's never are, frames are not
      // empty): the reader has dealt with every frame before it, its turn now.
      if (item.bytes === NO_BYTES) {
        this.#notifyOversized((item as OversizeNotice).oversizedStreamId);
        continue;
      }
      return Promise.resolve({ done: false, value: item as ReceivedFrame });
    }
    if (this.#info !== undefined) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve) => this.#readers.push({ resolve }));
  }

  #take(): ReceivedFrame | OversizeNotice {
    const frame = this.#queue[this.#queueHead];
    this.#queue[this.#queueHead++] = undefined as unknown as ReceivedFrame;
    this.#queuedBytes -= frame.bytes.length;
    if (this.#budget !== undefined) this.#reportQueued();
    if (
      this.#readingPaused && (this.#queue.length - this.#queueHead) * 4 <= this.#maxQueuedFrames &&
      this.#queuedBytes * 4 <= this.#maxQueuedBytes
    ) {
      this.#readingPaused = false;
      this.#tcp!.resumeReading();
    }
    if (this.#queueHead === this.#queue.length) {
      this.#queue.length = 0;
      this.#queueHead = 0;
    } else if (this.#queueHead >= 1024 && this.#queueHead * 2 >= this.#queue.length) {
      this.#queue.splice(0, this.#queueHead);
      this.#queueHead = 0;
    }
    return frame;
  }

  #write(bytes: Uint8Array, tail: Uint8Array | undefined): void {
    if (tail !== undefined) this.#tcp!.sendParts(bytes, tail);
    else this.#ws.send(bytes);
    if (this.#ws.bufferedAmount > this.#high) {
      this.#blocked = true;
      // Our transport says when its buffer falls; Deno's WebSocket is polled.
      if (this.#tcp === undefined) this.#drain.start();
    }
  }

  #onTransportDrain = (): void => {
    if (this.#blocked && this.#ws.bufferedAmount <= this.#low) this.#onDrained();
  };

  #onDrained = (): void => {
    if (this.#closeError !== undefined) return;
    this.#blocked = false;
    this.#flush();
  };

  /** Writes waiting sends in order until the socket blocks again. */
  #flush(): void {
    while (
      !this.#blocked && this.#pendingHead < this.#pending.length &&
      this.#ws.readyState === WebSocket.OPEN && this.#closeError === undefined
    ) {
      const next = this.#pending[this.#pendingHead];
      this.#pending[this.#pendingHead++] = undefined as unknown as PendingSend;
      this.#write(next.bytes, next.tail);
      next.resolve();
    }
    if (this.#pendingHead === this.#pending.length) {
      this.#pending.length = 0;
      this.#pendingHead = 0;
    }
  }

  #onOpen = (): void => {
    this.#flush();
  };

  #onMessage = (event: MessageEvent): void => {
    if (this.#info !== undefined) return;
    const data = event.data;
    if (!(data instanceof ArrayBuffer)) {
      const what = typeof data === "string"
        ? `text message of ${data.length} characters`
        : "message that is not binary";
      this.#reportProtocolError(
        new ProtocolError(`Cannot accept message: a ${what} is not a relay frame`),
      );
      return;
    }
    this.#onBytes(new Uint8Array(data));
  };

  /**
   * A frame refused for its size: its stream's owner hears of it in the
   * frame's place, after the reader has taken every frame that came before
   * (else a reset could overtake them, and a frame after it open the stream
   * again).
   */
  #oversized(bytes: Uint8Array): void {
    const streamId = this.onOversizedFrame === undefined ? undefined : peekStreamId(bytes);
    if (streamId === undefined) return;
    // A waiting reader has dealt with every frame it took; otherwise the
    // last frame taken may still be on its way through the reader.
    if (this.#readers.length > 0) {
      this.#notifyOversized(streamId);
      return;
    }
    if (this.#queue.length - this.#queueHead + 1 > this.#maxQueuedFrames) {
      this.#startClose(
        `inbound queue overflow: over ${this.#maxQueuedFrames} frames unread`,
        this.#role === "server" ? 1008 : 4008,
      );
      return;
    }
    this.#queue.push({ oversizedStreamId: streamId, bytes: NO_BYTES });
  }

  #notifyOversized(streamId: string): void {
    try {
      this.onOversizedFrame?.(streamId);
    } catch {
      // The owner's handler must not break reading.
    }
  }

  /** One binary message: decode, then hand to a waiting reader or queue it. */
  #onBytes = (bytes: Uint8Array): void => {
    if (this.#info !== undefined) return;
    let frame: RelayFrame;
    try {
      frame = decodeFrame(bytes, { maxFrameBytes: this.#maxFrameBytes });
    } catch (error) {
      this.#reportProtocolError(
        error instanceof ProtocolError
          ? error
          : new ProtocolError(`Cannot decode frame: ${String(error)}`, { cause: error }),
      );
      if (bytes.length > this.#maxFrameBytes) this.#oversized(bytes);
      return;
    }
    (frame as { bytes?: Uint8Array }).bytes = bytes;
    const received = frame as ReceivedFrame;
    this.#framesReceived++;
    const reader = this.#readers.shift();
    if (reader !== undefined) {
      reader.resolve({ done: false, value: received });
      return;
    }
    const frames = this.#queue.length - this.#queueHead + 1;
    const queuedBytes = this.#queuedBytes + bytes.length;
    if (frames > this.#maxQueuedFrames || queuedBytes > this.#maxQueuedBytes) {
      const reason = frames > this.#maxQueuedFrames
        ? `inbound queue overflow: over ${this.#maxQueuedFrames} frames unread`
        : `inbound queue overflow: over ${this.#maxQueuedBytes} bytes unread`;
      this.#startClose(reason, this.#role === "server" ? 1008 : 4008); // see close()
      return;
    }
    this.#queue.push(received);
    this.#queuedBytes = queuedBytes;
    if (this.#budget !== undefined) {
      this.#reportQueued();
      if (this.#queue.length === 0) return; // shed, this frame with the rest
    }
    // Our own client transport can stop reading: a slow reader then holds
    // the peer back (TCP flow control) instead of overflowing this queue.
    if (
      this.#tcp !== undefined && !this.#readingPaused &&
      (frames * 2 >= this.#maxQueuedFrames || queuedBytes * 2 >= this.#maxQueuedBytes)
    ) {
      this.#readingPaused = true;
      this.#tcp.pauseReading();
    }
  };

  /** What the unread frames count against the budget: their bytes and their overhead. */
  #reportQueued(): void {
    const frames = this.#queue.length - this.#queueHead;
    this.#budget!.hold(
      this.#budgetHolder,
      this.#queuedBytes + frames * QUEUED_FRAME_OVERHEAD_BYTES,
    );
  }

  /**
   * Drops the frames received and not yet read, for an owner that stops
   * reading before the end (the socket stays as it is): they no longer
   * count against {@linkcode RelaySocketOptions.budget}, which counts a
   * closed socket's unread frames until they are read or dropped.
   */
  dropUnread(): void {
    this.#queue = [];
    this.#queueHead = 0;
    this.#queuedBytes = 0;
    this.#budget?.hold(this.#budgetHolder, 0);
    if (this.#readingPaused) {
      // The peer's closing handshake must not wait behind frames that are gone.
      this.#readingPaused = false;
      this.#tcp!.resumeReading();
    }
  }

  /** The shared budget ran out and this socket's unread frames were the most: drop them. */
  #shedQueue(): void {
    this.dropUnread();
    this.#startClose(
      "inbound queue dropped: the shared queue budget ran out",
      this.#role === "server" ? 1008 : 4008,
    );
    try {
      this.onShed?.();
    } catch {
      // An observer must not break the budget's shedding.
    }
  }

  #reportProtocolError(error: ProtocolError): void {
    try {
      this.#onProtocolError?.(error);
    } catch {
      // A failing observer must not take the socket down.
    }
  }

  #onError = (event: Event): void => {
    const message = (event as ErrorEvent).message;
    if (typeof message === "string" && message !== "") this.#lastErrorMessage = message;
  };

  #onClose = (event: CloseEvent): void => {
    this.#finish({ code: event.code, reason: event.reason, wasClean: event.wasClean });
  };

  #startClose(reason: string, code: number): void {
    if (this.#closeError !== undefined) return;
    this.#failSends(new RelayClosedError(`Relay socket closed: ${reason || "closed locally"}`));
    try {
      this.#ws.close(code, clampCloseReason(reason));
    } catch {
      // Already closing; the close event or the timer below settles `closed`.
    }
    // Our own transport runs the same deadline itself and reports the close
    // only once its connection is released.
    if (this.#info === undefined && !(this.#ws instanceof TcpWebSocket)) {
      this.#closeTimer = setTimeout(() => {
        this.#finish({
          code: 1006,
          reason: `closing handshake not finished within ${this.#closeTimeoutMs} ms`,
          wasClean: false,
        });
      }, this.#closeTimeoutMs);
    }
  }

  #failSends(error: RelayClosedError): void {
    if (this.#closeError !== undefined) return;
    this.#closeError = error;
    this.#drain.stop();
    this.#blocked = false;
    const pending = this.#pending;
    const head = this.#pendingHead;
    this.#pending = [];
    this.#pendingHead = 0;
    for (let i = head; i < pending.length; i++) pending[i].reject(error);
  }

  #finish(info: RelayCloseInfo): void {
    if (this.#info !== undefined) return;
    this.#info = info;
    clearTimeout(this.#closeTimer);
    this.#closeTimer = undefined;
    const detail = info.reason !== ""
      ? info.reason
      : this.#lastErrorMessage !== ""
      ? this.#lastErrorMessage
      : `code ${info.code}`;
    this.#failSends(new RelayClosedError(`Relay socket closed: ${detail}`, { cause: info }));
    const readers = this.#readers;
    this.#readers = [];
    for (const reader of readers) reader.resolve({ done: true, value: undefined });
    if (this.#tcp !== undefined) {
      this.#tcp.onbinary = null;
      this.#tcp.ondrain = null;
    }
    this.#ws.removeEventListener("open", this.#onOpen);
    this.#ws.removeEventListener("message", this.#onMessage);
    this.#ws.removeEventListener("error", this.#onError);
    this.#ws.removeEventListener("close", this.#onClose);
    this.#resolveClosed(info);
  }
}
