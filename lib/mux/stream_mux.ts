/**
 * Many virtual streams over one {@linkcode RelaySocket}: the executor side
 * serves every `stream_id` that appears, the harness side opens streams. Each
 * stream is a {@linkcode ReliableStream} endpoint wrapped as a
 * {@linkcode MuxStream} message channel. One reader dispatches inbound frames
 * without ever waiting on a consumer; one writer takes one frame per turn from
 * each stream that has output (round robin), so a bulk stream cannot starve
 * small messages. Stream state survives a dropped socket for the detach
 * window; {@linkcode StreamMux.attach} with a new socket resumes it.
 *
 * @module
 */

import { RelayClosedError, StreamResetError } from "../errors.ts";
import { MAX_TIMER_MS } from "../_limits.ts";
import { MAX_RESET_REASON_BYTES, MAX_STREAM_ID_BYTES, resetFrame } from "../relay/frame_codec.ts";
import type { RelayFrame } from "../relay/frame_codec.ts";
import type { ReceivedFrame, RelayCloseInfo, RelaySocket } from "../relay/relay_socket.ts";
import type { BinaryLane, MessageChannel } from "../rpc/message_channel.ts";
import {
  DEFAULT_LEGACY_MESSAGE_BYTES,
  DEFAULT_MAX_MESSAGE_BYTES,
  ReliableStream,
  type ReliableStreamOptions,
  type ReliableStreamStats,
  type StreamMode,
} from "./reliable_stream.ts";
import { ByteBudget } from "../_byte_budget.ts";
import {
  RESET_CLOSE_TIMEOUT,
  RESET_DETACH_EXPIRED,
  RESET_EXECUTOR_DISCONNECTED,
  RESET_MESSAGE_TOO_LARGE,
  RESET_SHUTDOWN,
  RESET_STREAM_CLOSED,
  RESET_TOO_MANY_STREAMS,
  RESET_UNKNOWN_STREAM,
} from "./reset_reasons.ts";

/** Default {@linkcode StreamMuxOptions.detachWindowMs}: 30 s. */
export const DEFAULT_DETACH_WINDOW_MS = 30_000;
/** How often the receive budget's line is looked at again while streams wait in it. */
export const BUDGET_RECHECK_MS = 250;
/** Default {@linkcode StreamMuxOptions.receiveBudgetBytes}: 256 MiB. */
export const DEFAULT_RECEIVE_BUDGET_BYTES = 256 * 1024 * 1024;
/** Default {@linkcode StreamMuxOptions.maxStreams} (executor side). */
export const DEFAULT_MAX_STREAMS = 1024;
/**
 * How long a stream must have gone without a frame, either way, before a new
 * stream at the limit may take its place: 60 s.
 */
export const DEFAULT_IDLE_STREAM_MS = 60_000;
/** How soon the stream limit looks again at idle streams that were busy. */
const BUSY_RECHECK_MS = 1_000;
/** Default {@linkcode StreamMuxOptions.closeTimeoutMs}: how long `close()` waits for acks. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 5_000;

/** Most ended stream ids remembered (and lost legacy streams waiting to be told). */
const RETIRED_IDS = 4096;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The message as text, or undefined when it is not valid UTF-8. */
function strictText(message: Uint8Array): string | undefined {
  try {
    return strictDecoder.decode(message);
  } catch {
    return undefined;
  }
}

/** Options for {@linkcode StreamMux}. */
export interface StreamMuxOptions {
  /** Which end this mux is: the executor serves streams, the harness opens them. */
  role: "executor" | "harness";
  /** Executor side: called with each new stream when its `stream_id` first appears. */
  onStream?: (stream: MuxStream) => void;
  /**
   * Executor side: most streams at once. At the limit a new stream takes the
   * place of the stream that has gone the longest without a frame from its peer,
   * once that is at least `idleStreamMs` and `canReplace` agrees (the old one
   * is reset `too_many_streams`: a Codex v1 harness that went away without a
   * reset, or a stream opened and never used; a Codex v1 stream whose harness
   * only listens counts as idle too, as legacy mode has no acks, hence
   * `canReplace`); otherwise the new stream gets `reset{too_many_streams}`.
   * @default {1024}
   */
  maxStreams?: number;
  /**
   * Executor side: how long a stream must have gone without a frame from its peer before a
   * new stream at `maxStreams` may take its place.
   * @default {60000}
   */
  idleStreamMs?: number;
  /**
   * Executor side: asked before an idle stream gives its place to a new one
   * at `maxStreams`; false keeps it (its session waits quietly on a request
   * or a live program). By default every idle stream may be replaced.
   */
  canReplace?: (stream: MuxStream) => boolean;
  /**
   * How long stream state survives a lost socket waiting for
   * {@linkcode StreamMux.attach}; then the streams fail with `RelayClosedError`.
   * @default {30000}
   */
  detachWindowMs?: number;
  /** Payload bytes per segment. @default {61440} */
  segmentBytes?: number;
  /** Whole messages a stream buffers for its consumer. @default {128} */
  inboxMessages?: number;
  /** Unacknowledged segments in flight per stream. @default {128} */
  windowSegments?: number;
  /** Unacknowledged bytes in flight per stream. @default {2097152} */
  windowBytes?: number;
  /** How long `MuxStream.close()` waits for its sent data to be acked. @default {5000} */
  closeTimeoutMs?: number;
  /**
   * Bytes all streams together may hold for their consumers (inboxes,
   * messages being reassembled, held segments). Each stream's own bounds add
   * up to its inbox (8 MiB) plus one message past it plus 4 MiB of held
   * segments: about 28 MiB with the executor's 16 MiB messages, about 76 MiB
   * with the 64 MiB default. Past this sum streams are reset with
   * `inbox_overflow` and their unread messages dropped, those whose
   * consumers stopped reading first (see `ReliableStream.shedOrder` and
   * {@linkcode ByteBudget}). At least the streams' `maxMessageBytes`.
   * @default {268435456}
   */
  receiveBudgetBytes?: number;
  /** Any other per-stream limit or timer of {@linkcode ReliableStreamOptions}. */
  stream?: Omit<
    ReliableStreamOptions,
    "mode" | "now" | "onOutput" | "onReadable" | "onEnd" | "budget"
  >;
  /**
   * The clock for the streams' timers, in milliseconds.
   * @default {performance.now}
   */
  now?: () => number;
}

/** Options for {@linkcode StreamMux.open}. */
export interface OpenStreamOptions {
  /**
   * The stream id: 1..128 bytes without surrounding whitespace.
   * @default {crypto.randomUUID()}
   */
  id?: string;
}

/** Options for a {@linkcode MuxStream}. */
export interface MuxStreamOptions {
  /** How long `close()` waits for sent data to be acked. @default {5000} */
  closeTimeoutMs?: number;
  /**
   * The endpoint's `legacyMessageBytes`, reported by
   * {@linkcode MuxStream.maxMessageBytes} on a legacy stream.
   * @default {261120}
   */
  legacyMessageBytes?: number;
  /**
   * The endpoint's `maxMessageBytes`, reported by
   * {@linkcode MuxStream.maxMessageBytes} on a reliable stream.
   * @default {67108864}
   */
  maxMessageBytes?: number;
}

interface Internals {
  readable(): void;
  output(): void;
}

/** ReliableStream -> the MuxStream wrapping it (hooks run before the handle exists). */
const internals = new WeakMap<ReliableStream, Internals>();

interface Slot {
  core: ReliableStream;
  handle: MuxStream;
  queued: boolean;
  armed: boolean;
  /**
   * When this stream last received a frame (`#now()`). What it sends does not
   * count: it resends unacknowledged data for as long as its peer stays away.
   */
  activeAt: number;
}

function idDefect(id: unknown): string | undefined {
  if (typeof id !== "string" || id.length === 0) return "it is empty";
  if (id.trim() !== id) return "it has surrounding whitespace";
  const bytes = encoder.encode(id).length;
  if (bytes > MAX_STREAM_ID_BYTES) return `it is ${bytes} bytes, over ${MAX_STREAM_ID_BYTES}`;
  return undefined;
}

/**
 * One virtual stream as a {@linkcode MessageChannel} of text messages (one
 * JSON-RPC message each). Created by {@linkcode StreamMux.open} (harness) or
 * handed to `onStream` (executor).
 *
 * Reads: async iteration yields whole messages in order; it ends when the
 * stream is closed gracefully (`stream_closed`) or locally, and throws
 * `StreamResetError` (other resets) or `RelayClosedError` (the socket stayed
 * away past the detach window, or the mux closed) once earlier messages are
 * read. Writes: `send` resolves when the message is accepted by the stream's
 * bounded send buffer (backpressure).
 *
 * @example Echo every message of a stream
 * ```ts ignore
 * for await (const message of stream) await stream.send(message);
 * ```
 */
export class MuxStream implements MessageChannel, AsyncDisposable {
  /** The stream id (`stream_id` on the wire). */
  readonly id: string;
  #core: ReliableStream;
  #closeTimeoutMs: number;
  #legacyMessageBytes: number;
  #reliableMessageBytes: number;
  #readers: (() => void)[] = [];
  #flushWaiters: (() => void)[] = [];
  #closedLocally = false;
  #closing: Promise<void> | undefined;
  #closed: Promise<void>;
  #resolveClosed!: () => void;

  /**
   * Wraps an endpoint as a message channel. {@linkcode StreamMux} does this;
   * use it directly only to drive a {@linkcode ReliableStream} by hand.
   *
   * @param core The endpoint.
   * @param options The close timeout and the endpoint's message limits.
   */
  constructor(core: ReliableStream, options: MuxStreamOptions = {}) {
    this.id = core.id;
    this.#core = core;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    this.#legacyMessageBytes = options.legacyMessageBytes ?? DEFAULT_LEGACY_MESSAGE_BYTES;
    this.#reliableMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.#closed = new Promise((resolve) => this.#resolveClosed = resolve);
    internals.set(core, { readable: () => this.#wakeReaders(), output: () => this.#wakeFlush() });
    if (core.ended) this.#resolveClosed();
  }

  /** `pending` until the first data frame decides, then `legacy` or `reliable`. */
  get mode(): StreamMode {
    return this.#core.mode;
  }

  /**
   * The largest message this stream sends, in bytes, once its mode is known:
   * a legacy (Codex v1) stream carries each message in one relay frame, a
   * reliable one segments it. `undefined` while the mode is `pending`.
   */
  get maxMessageBytes(): number | undefined {
    switch (this.#core.mode) {
      case "legacy":
        return this.#legacyMessageBytes;
      case "reliable":
        return this.#reliableMessageBytes;
      default:
        return undefined;
    }
  }

  /** The reset reason sent or received, or `undefined` while open. */
  get resetReason(): string | undefined {
    return this.#core.resetReason;
  }

  /** Counters of the underlying endpoint. */
  get stats(): ReliableStreamStats {
    return this.#core.stats;
  }

  /** Settles once the stream has ended, by either side or by its transport; never rejects. */
  get closed(): Promise<void> {
    return this.#closed;
  }

  /** Always true: `send` calls `onDelivered` (see {@linkcode MessageChannel.tracksDelivery}). */
  readonly tracksDelivery = true;

  /**
   * Sends one whole message (a reliable stream segments it as needed).
   *
   * @param message The message text.
   * @param onDelivered Called once the peer has the message: its endpoint
   *   acknowledged it (reliable mode), or it went to the socket (legacy mode,
   *   which has no acks). Never called if the stream ends first.
   * @returns Resolves once the stream's send buffer accepted the message.
   * @throws {TypeError} If `message` is not a string.
   * @throws {RangeError} If the message is empty or over the mode's size limit.
   * @throws {StreamResetError} If the stream was reset (the reason is on the error).
   * @throws {RelayClosedError} If the stream ended with its transport.
   */
  send(message: string, onDelivered?: () => void): Promise<void> {
    if (typeof message !== "string") {
      return Promise.reject(new TypeError("Cannot send message: it is not a string"));
    }
    if (this.#closedLocally && !this.#core.ended) {
      return Promise.reject(new StreamResetError(RESET_STREAM_CLOSED));
    }
    return this.#write(encoder.encode(message), onDelivered);
  }

  /**
   * Binary messages on this stream (outpost's negotiated extension): sent as
   * they are; `messages()` yields received ones starting with `0x00` as bytes,
   * and a text message that is not valid UTF-8 as bytes too, so the reader
   * can refuse it instead of reading a lossy decoding (the plain iterator
   * decodes such bytes as U+FFFD).
   */
  readonly binary: BinaryLane = {
    send: (message: Uint8Array, onDelivered?: () => void): Promise<void> => {
      if (!(message instanceof Uint8Array)) {
        return Promise.reject(new TypeError("Cannot send binary message: it is not a Uint8Array"));
      }
      if (this.#closedLocally && !this.#core.ended) {
        return Promise.reject(new StreamResetError(RESET_STREAM_CLOSED));
      }
      return this.#write(message, onDelivered);
    },
    invalidTextAsBytes: true,
    messages: (): AsyncIterable<string | Uint8Array> => ({
      [Symbol.asyncIterator]: () => ({
        next: () => this.#next(true),
        return: () => Promise.resolve({ done: true, value: undefined }),
      }),
    }),
  };

  #write(bytes: Uint8Array, onDelivered: (() => void) | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      try {
        this.#core.write(bytes, (error) => error ? reject(error) : resolve(), onDelivered);
      } catch (error) {
        reject(error);
      }
    });
  }

  /**
   * Resets the stream at once: sends `reset{reason}` to the peer, fails
   * pending sends with `StreamResetError`; reads end after buffered messages.
   * Idempotent.
   *
   * @param reason One of the reasons in `reset_reasons.ts`, or any 1..256 byte string.
   * @throws {TypeError} If the reason is empty or over 256 bytes.
   */
  reset(reason: string): void {
    const bytes = typeof reason === "string" ? encoder.encode(reason).length : 0;
    if (bytes === 0 || bytes > MAX_RESET_REASON_BYTES) {
      throw new TypeError(
        `Cannot reset stream: the reason must be 1..${MAX_RESET_REASON_BYTES} bytes, got ${bytes}`,
      );
    }
    this.#core.reset(reason);
  }

  /**
   * Closes gracefully: waits (up to the close timeout) until everything sent
   * is acknowledged, then sends `reset{reason}` (default `stream_closed`).
   * Local reads end: messages already received and not read are dropped,
   * and so is each later one. Idempotent. When the timeout passes first, the
   * peer may not have everything: the stream is reset `close_timeout`
   * instead, so the peer's reads fail rather than end cleanly, and this
   * rejects.
   *
   * @param reason The reset reason sent to the peer.
   * @returns Resolves once the stream has ended.
   * @throws {StreamResetError} `close_timeout`, when sent data was still
   *   unacknowledged at the close timeout.
   */
  close(reason: string = RESET_STREAM_CLOSED): Promise<void> {
    this.#closedLocally = true;
    // Nobody reads them now: unread messages must not keep holding memory and budget.
    this.#core.discardUnread();
    this.#wakeReaders();
    this.#closing ??= this.#close(reason);
    return this.#closing;
  }

  /** Closes the stream; same as `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Iterates whole messages in order.
   *
   * @returns An iterator of message texts.
   */
  [Symbol.asyncIterator](): AsyncIterator<string> {
    return {
      next: (): Promise<IteratorResult<string>> =>
        this.#next(false) as Promise<IteratorResult<string>>,
      return: (): Promise<IteratorResult<string>> =>
        Promise.resolve({ done: true, value: undefined }),
    };
  }

  async #close(reason: string): Promise<void> {
    const core = this.#core;
    if (!core.ended && !core.flushed) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#flushWaiters.push(resolve);
        timer = setTimeout(resolve, this.#closeTimeoutMs);
      });
      clearTimeout(timer);
    }
    if (core.ended) return await this.#closed;
    // A graceful reason would tell the peer it has everything: it has not.
    const lost = !core.flushed;
    this.reset(lost ? RESET_CLOSE_TIMEOUT : reason);
    await this.#closed;
    if (lost) throw new StreamResetError(RESET_CLOSE_TIMEOUT);
  }

  async #next(binary: boolean): Promise<IteratorResult<string | Uint8Array>> {
    while (true) {
      const message = this.#core.read();
      if (message !== undefined) {
        if (!binary) return { done: false, value: decoder.decode(message) };
        if (message[0] === 0) return { done: false, value: message };
        return { done: false, value: strictText(message) ?? message };
      }
      if (this.#closedLocally) return { done: true, value: undefined };
      const error = this.#core.error;
      if (error !== undefined) {
        if (error instanceof StreamResetError && error.reason === RESET_STREAM_CLOSED) {
          return { done: true, value: undefined };
        }
        throw error;
      }
      await new Promise<void>((resolve) => this.#readers.push(resolve));
    }
  }

  #wakeReaders(): void {
    if (this.#core.ended) {
      this.#resolveClosed();
      this.#wakeFlush();
    }
    if (this.#readers.length === 0) return;
    const readers = this.#readers;
    this.#readers = [];
    for (const wake of readers) wake();
  }

  #wakeFlush(): void {
    if (this.#flushWaiters.length === 0) return;
    if (!this.#core.flushed && !this.#core.ended) return;
    const waiters = this.#flushWaiters;
    this.#flushWaiters = [];
    for (const wake of waiters) wake();
  }
}

/**
 * Carries many {@linkcode MuxStream}s over one {@linkcode RelaySocket} at a
 * time. Hand it a socket with {@linkcode StreamMux.attach}; await
 * {@linkcode StreamMux.detached} to learn that the socket was lost, then
 * attach a new one within the detach window to resume every stream.
 *
 * @example Harness: open a stream and exchange a message
 * ```ts ignore
 * import { RelaySocket, StreamMux } from "@outpost/exec";
 * await using mux = new StreamMux({ role: "harness" });
 * mux.attach(await RelaySocket.connect(url, { token }));
 * const stream = mux.open();
 * await stream.send('{"id":1,"method":"initialize","params":{}}');
 * for await (const reply of stream) { console.log(reply); break; }
 * ```
 */
export class StreamMux implements AsyncDisposable {
  #role: "executor" | "harness";
  #onStream: ((stream: MuxStream) => void) | undefined;
  #maxStreams: number;
  #idleStreamMs: number;
  #canReplace: (stream: MuxStream) => boolean;
  /** No stream can have been idle `#idleStreamMs` before this time (`#now()`). */
  #noIdleStreamBefore = -Infinity;
  #detachWindowMs: number;
  #closeTimeoutMs: number;
  #streamOptions: ReliableStreamOptions;
  #budget: ByteBudget;
  #now: () => number;
  #streams = new Map<string, Slot>();
  #retired = new Map<string, string>();
  /**
   * Legacy streams lost with a socket whose peer has not been told yet: the
   * next socket carries `reset{executor_disconnected}` for each at once, so a
   * harness need not wait out the rendezvous's detach window. Bounded like
   * `#retired`; an id leaves as its reset is handed to the socket.
   */
  #lostLegacy = new Set<string>();
  #socket: RelaySocket | undefined;
  #control: RelayFrame[] = [];
  #ready: Slot[] = [];
  #readyHead = 0;
  #writing: Promise<void> | undefined;
  #armed = new Set<Slot>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #detachTimer: ReturnType<typeof setTimeout> | undefined;
  /** Has the receive budget's line looked at again while streams wait in it. */
  #budgetTimer: ReturnType<typeof setTimeout> | undefined;
  #detached: Promise<RelayCloseInfo> = Promise.resolve({
    code: 1006,
    reason: "not attached",
    wasClean: false,
  });
  #resolveDetached: ((info: RelayCloseInfo) => void) | undefined;
  #closing = false;
  #closed: Promise<void>;
  #resolveClosed!: () => void;

  /**
   * Creates a mux with no socket yet.
   *
   * @param options Role, limits and the executor's `onStream`.
   * @throws {RangeError} If a limit is not a positive integer.
   */
  constructor(options: StreamMuxOptions) {
    if (options.role !== "executor" && options.role !== "harness") {
      throw new TypeError(
        `Cannot create stream mux: role ${options.role} is not executor or harness`,
      );
    }
    this.#role = options.role;
    this.#onStream = options.onStream;
    this.#maxStreams = options.maxStreams ?? DEFAULT_MAX_STREAMS;
    this.#idleStreamMs = options.idleStreamMs ?? DEFAULT_IDLE_STREAM_MS;
    this.#canReplace = options.canReplace ?? (() => true);
    if (!(this.#idleStreamMs >= 0)) {
      throw new RangeError(
        `Cannot create stream mux: idleStreamMs ${this.#idleStreamMs} is not a non-negative number`,
      );
    }
    this.#detachWindowMs = options.detachWindowMs ?? DEFAULT_DETACH_WINDOW_MS;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    for (
      const [name, value, max] of [
        ["maxStreams", this.#maxStreams, Number.MAX_SAFE_INTEGER],
        // Timers: past 2^31 - 1 ms Deno fires at once.
        ["detachWindowMs", this.#detachWindowMs, MAX_TIMER_MS],
        ["closeTimeoutMs", this.#closeTimeoutMs, MAX_TIMER_MS],
      ] as const
    ) {
      if (!Number.isSafeInteger(value) || value < 1 || value > max) {
        throw new RangeError(
          `Cannot create stream mux: ${name} ${value} is not an integer from 1 to ${max}`,
        );
      }
    }
    this.#now = options.now ?? (() => performance.now());
    this.#streamOptions = {
      legacyMessageBytes: DEFAULT_LEGACY_MESSAGE_BYTES,
      ...options.stream,
      segmentBytes: options.segmentBytes ?? options.stream?.segmentBytes,
      inboxMessages: options.inboxMessages ?? options.stream?.inboxMessages,
      windowSegments: options.windowSegments ?? options.stream?.windowSegments,
      windowBytes: options.windowBytes ?? options.stream?.windowBytes,
      now: this.#now,
    };
    // Validate the stream limits once, up front.
    new ReliableStream("probe", this.#streamOptions);
    const maxMessageBytes = this.#streamOptions.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const budgetBytes = options.receiveBudgetBytes ?? DEFAULT_RECEIVE_BUDGET_BYTES;
    if (
      !Number.isSafeInteger(budgetBytes) || budgetBytes < maxMessageBytes
    ) {
      throw new RangeError(
        `Cannot create stream mux: receiveBudgetBytes ${budgetBytes} is not an integer of at least maxMessageBytes (${maxMessageBytes})`,
      );
    }
    this.#budget = new ByteBudget(budgetBytes);
    this.#streamOptions.budget = this.#budget;
    this.#closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  /**
   * The receive budget's state: bytes all streams hold for their consumers
   * now, its limit, how many streams were shed for it, the bytes of large
   * messages admitted but not yet arrived, and how many streams wait to
   * start one.
   */
  get receiveBudget(): {
    used: number;
    limit: number;
    shedCount: number;
    expected: number;
    waiting: number;
  } {
    const budget = this.#budget;
    return {
      used: budget.used,
      limit: budget.limit,
      shedCount: budget.shedCount,
      expected: budget.expected,
      waiting: budget.waiting,
    };
  }

  /** How many streams are open (including detached ones). */
  get streams(): number {
    return this.#streams.size;
  }

  /** Whether a socket is attached. */
  get attached(): boolean {
    return this.#socket !== undefined;
  }

  /**
   * Resolves with the socket's close info when the currently attached socket
   * is lost (or the mux closes); already resolved while no socket is attached.
   * Read it again after each {@linkcode attach}.
   */
  get detached(): Promise<RelayCloseInfo> {
    return this.#detached;
  }

  /** Settles once the mux has closed; never rejects. */
  get closed(): Promise<void> {
    return this.#closed;
  }

  /**
   * Attaches a physical socket; the mux owns it from now on (and closes it on
   * `close()`). A socket already attached is closed and replaced. Every live
   * reliable stream sends `resume{next_seq}` and resends what is unacked.
   *
   * @param socket The new socket (may still be connecting).
   * @throws {RelayClosedError} If the mux is closed.
   */
  attach(socket: RelaySocket): void {
    if (this.#closing) throw new RelayClosedError("Cannot attach socket: the stream mux is closed");
    const old = this.#socket;
    if (old !== undefined) {
      this.#lose(old, { code: 1000, reason: "replaced", wasClean: true });
      old.close("replaced").catch(() => {});
    }
    clearTimeout(this.#detachTimer);
    this.#detachTimer = undefined;
    // Every stream's resume is queued before the socket is: a resume wakes the
    // writer, which would otherwise start at once and could send a stream's
    // data (queued before the loss) ahead of that stream's resume, and the
    // rendezvous, still counting the old socket as the stream's owner,
    // would refuse it `stream_in_use`.
    for (const slot of this.#streams.values()) slot.core.resume();
    this.#socket = socket;
    socket.onOversizedFrame = (id) => {
      if (this.#socket === socket) this.#refuseOversized(id);
    };
    this.#detached = new Promise((resolve) => this.#resolveDetached = resolve);
    for (const slot of this.#streams.values()) this.#wake(slot);
    this.#read(socket);
    this.#pump();
  }

  /**
   * Harness side: opens a new reliable stream. Works while detached too (it
   * starts sending once a socket is attached).
   *
   * @param options The stream id.
   * @returns The stream.
   * @throws {TypeError} On the executor side, or if the id is invalid or in use.
   * @throws {RelayClosedError} If the mux is closed.
   */
  open(options: OpenStreamOptions = {}): MuxStream {
    if (this.#closing) throw new RelayClosedError("Cannot open stream: the stream mux is closed");
    if (this.#role !== "harness") {
      throw new TypeError("Cannot open stream: only the harness side opens streams");
    }
    const id = options.id ?? crypto.randomUUID();
    const defect = idDefect(id);
    if (defect !== undefined) throw new TypeError(`Cannot open stream "${id}": ${defect}`);
    if (this.#streams.has(id)) {
      throw new TypeError(`Cannot open stream "${id}": it is already open`);
    }
    this.#retired.delete(id);
    return this.#create(id, "reliable").handle;
  }

  /**
   * Closes the mux: resets every stream with `shutdown` (sent if a socket is
   * attached), then closes the socket. Idempotent.
   *
   * @returns Resolves once everything is released.
   */
  async close(): Promise<void> {
    if (this.#closing) return this.#closed;
    this.#closing = true;
    clearTimeout(this.#detachTimer);
    this.#detachTimer = undefined;
    clearTimeout(this.#budgetTimer);
    this.#budgetTimer = undefined;
    for (const slot of [...this.#streams.values()]) slot.core.reset(RESET_SHUTDOWN);
    const socket = this.#socket;
    if (socket !== undefined) {
      // Let the writer put the resets on the wire (briefly), then close.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const bound = new Promise<void>((resolve) => timer = setTimeout(resolve, 1_000));
      while (this.#writing !== undefined) {
        if (await Promise.race([this.#writing.then(() => false), bound.then(() => true)])) break;
      }
      clearTimeout(timer);
      this.#socket = undefined;
      this.#resolveDetached?.({ code: 1000, reason: "closed", wasClean: true });
      await socket.close("shutdown").catch(() => {});
    }
    const error = new RelayClosedError("Stream mux closed");
    for (const slot of [...this.#streams.values()]) slot.core.fail(error);
    this.#streams.clear();
    this.#lostLegacy.clear();
    this.#clearTimer();
    this.#resolveClosed();
  }

  /** Closes the mux; same as `close()`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- streams ----

  #create(id: string, mode: "pending" | "reliable"): Slot {
    const slot = { queued: false, armed: false, activeAt: this.#now() } as Slot;
    slot.core = new ReliableStream(id, {
      ...this.#streamOptions,
      mode,
      onOutput: () => {
        internals.get(slot.core)?.output();
        this.#wake(slot);
      },
      onReadable: () => {
        // An ended stream leaves the table at once; its reset may still be queued.
        if (slot.core.ended) this.#ended(slot);
        internals.get(slot.core)?.readable();
      },
      onEnd: () => this.#ended(slot),
    });
    slot.handle = new MuxStream(slot.core, {
      closeTimeoutMs: this.#closeTimeoutMs,
      legacyMessageBytes: this.#streamOptions.legacyMessageBytes,
      maxMessageBytes: this.#streamOptions.maxMessageBytes,
    });
    this.#streams.set(id, slot);
    return slot;
  }

  /**
   * Retires an ended stream's id with the reason later frames for it get: the
   * reset this side sent (a repeat may overtake that reset while it is still
   * queued, so it must say the same), else the one it received (the
   * rendezvous' `harness_disconnected`, say: a harness back after its window
   * learns why its session is gone, not that it closed), else `reason`.
   */
  #ended(
    slot: Slot,
    reason: string = slot.core.sentResetReason ?? slot.core.resetReason ?? RESET_STREAM_CLOSED,
  ): void {
    const id = slot.core.id;
    if (this.#streams.get(id) === slot) this.#streams.delete(id);
    this.#armed.delete(slot);
    this.#retired.delete(id);
    this.#retired.set(id, reason);
    if (this.#retired.size > RETIRED_IDS) {
      this.#retired.delete(this.#retired.keys().next().value!);
    }
  }

  // ---- reading ----

  async #read(socket: RelaySocket): Promise<void> {
    try {
      for await (const frame of socket) {
        if (this.#socket !== socket) break;
        this.#dispatch(frame);
      }
    } catch {
      // The iterator does not throw; a dispatch bug must not hang the mux.
    }
    const info = await socket.closed;
    this.#lose(socket, info);
  }

  #dispatch(frame: ReceivedFrame): void {
    const id = frame.streamId;
    let slot = this.#streams.get(id);
    if (slot === undefined) {
      const kind = frame.body.kind;
      // Resets, heartbeats and handshakes for a stream we do not hold need no answer.
      if (kind !== "data" && kind !== "resume" && kind !== "ack") return;
      if (this.#closing) return;
      const retired = this.#retired.get(id);
      // A Codex v1 harness may reuse an ended stream's id from seq 0: as
      // Codex's executor does, that is a new stream with a fresh session.
      const restart = this.#role === "executor" && frame.body.kind === "data" &&
        frame.body.seq === 0;
      // A Codex v1 claim (`resume{next_seq 0}`) comes before its data seq 0:
      // answered, the new stream's harness would take the old end for its own.
      const claim = kind === "resume" && frame.body.nextSeq === 0;
      if (retired !== undefined && !restart) {
        // Again: the peer may never have seen the first reset.
        if (!claim) this.#sendControl(id, retired);
        return;
      }
      // An ack or a resume that acknowledges our data: the peer holds state
      // we lost (e.g. this process restarted). Say so, or a peer that only
      // waits would wait forever.
      const acksOurData = frame.ack > 0 || frame.ackBits !== 0;
      if (kind === "ack" && !acksOurData) return;
      this.#retired.delete(id);
      if (this.#role === "harness") {
        this.#sendControl(id, RESET_UNKNOWN_STREAM);
        return;
      }
      // A new stream starts at seq 0 (legacy) or 1 (reliable); the relay is
      // ordered, so a first data frame past 1 means lost state too. A resume
      // past 1 that acks nothing waits for the resent data: a stream whose
      // first frames died with a socket starts over from seq 1.
      if (kind !== "data" && acksOurData) {
        this.#sendControl(id, RESET_UNKNOWN_STREAM);
        return;
      }
      if (kind === "resume" && frame.body.nextSeq > 1) return;
      if (frame.body.kind === "data" && frame.body.seq > 1) {
        this.#sendControl(id, RESET_UNKNOWN_STREAM);
        return;
      }
      if (this.#streams.size >= this.#maxStreams && !this.#replaceIdleStream()) {
        this.#sendControl(id, RESET_TOO_MANY_STREAMS);
        return;
      }
      slot = this.#create(id, "pending");
      try {
        this.#onStream?.(slot.handle);
      } catch {
        slot.core.reset(RESET_SHUTDOWN);
        return;
      }
    }
    slot.activeAt = this.#now();
    slot.core.receive(frame);
    if (this.#budget.waiting > 0 && this.#budgetTimer === undefined) this.#recheckBudgetSoon();
  }

  /**
   * While streams wait in the receive budget's line, has it look again every
   * {@linkcode BUDGET_RECHECK_MS}: room can come from time alone (a holder
   * counts as stopped after a second), which no frame announces.
   */
  #recheckBudgetSoon(): void {
    this.#budgetTimer = setTimeout(() => {
      this.#budgetTimer = undefined;
      if (this.#closing || this.#budget.waiting === 0) return;
      this.#budget.recheck();
      this.#recheckBudgetSoon();
    }, BUDGET_RECHECK_MS);
  }

  /**
   * At the stream limit: resets the stream that has gone the longest without
   * a frame, if that is at least `idleStreamMs` and `canReplace` agrees, to
   * make room. A Codex v1
   * harness that closes its socket sends no reset, and a rendezvous other
   * than outpost's may not send one for it either: without this its streams
   * would fill the table for good.
   *
   * @returns Whether a stream made room.
   */
  #replaceIdleStream(): boolean {
    const now = this.#now();
    if (now < this.#noIdleStreamBefore) return false;
    let idlest: Slot | undefined;
    let nextIdle = Infinity;
    for (const slot of this.#streams.values()) {
      if (now - slot.activeAt < this.#idleStreamMs) {
        nextIdle = Math.min(nextIdle, slot.activeAt + this.#idleStreamMs);
      } else if (idlest === undefined || slot.activeAt < idlest.activeAt) {
        if (this.#canReplace(slot.handle)) idlest = slot;
        // Busy now, it may be quiet in a moment (its program ends).
        else nextIdle = Math.min(nextIdle, now + BUSY_RECHECK_MS);
      }
    }
    if (idlest === undefined) {
      // Streams only become more recent: no need to look again before then.
      this.#noIdleStreamBefore = nextIdle;
      return false;
    }
    idlest.core.reset(RESET_TOO_MANY_STREAMS);
    return true;
  }

  /**
   * A frame of this stream was too large for the socket to take: end the
   * stream both ways, so its sender learns at once (a Codex v1 harness would
   * otherwise wait forever for the reply).
   */
  #refuseOversized(id: string): void {
    const slot = this.#streams.get(id);
    if (slot !== undefined) slot.core.reset(RESET_MESSAGE_TOO_LARGE);
    else this.#sendControl(id, RESET_MESSAGE_TOO_LARGE);
  }

  // ---- writing ----

  #sendControl(id: string, reason: string): void {
    // A flood of strangers: drop. Data is resent and answered then; a lone ack
    // or resume is not, and its stream ends at the rendezvous's window instead.
    if (this.#control.length >= 1024) return;
    this.#control.push(resetFrame(id, reason));
    this.#pump();
  }

  #wake(slot: Slot): void {
    const core = slot.core;
    if (!slot.queued && core.hasOutput) {
      slot.queued = true;
      this.#ready.push(slot);
      this.#pump();
    }
    this.#arm(slot);
  }

  #pump(): void {
    if (this.#writing !== undefined || this.#socket === undefined) return;
    if (
      this.#control.length === 0 && this.#lostLegacy.size === 0 &&
      this.#readyHead === this.#ready.length
    ) return;
    this.#writing = this.#write(this.#socket).finally(() => {
      this.#writing = undefined;
      if (this.#socket !== undefined) this.#pump();
    });
  }

  async #write(socket: RelaySocket): Promise<void> {
    try {
      while (this.#socket === socket) {
        let frame: RelayFrame | undefined;
        if (this.#control.length > 0) {
          frame = this.#control.shift()!;
        } else if (this.#lostLegacy.size > 0) {
          const id = this.#lostLegacy.values().next().value!;
          this.#lostLegacy.delete(id);
          // Skip an id reused since (a Codex v1 restart from seq 0).
          if (this.#retired.get(id) !== RESET_EXECUTOR_DISCONNECTED) continue;
          frame = resetFrame(id, RESET_EXECUTOR_DISCONNECTED);
        } else if (this.#readyHead < this.#ready.length) {
          const slot = this.#ready[this.#readyHead++];
          if (this.#readyHead === this.#ready.length) {
            this.#ready.length = 0;
            this.#readyHead = 0;
          } else if (this.#readyHead >= 1024 && this.#readyHead * 2 >= this.#ready.length) {
            this.#ready.splice(0, this.#readyHead);
            this.#readyHead = 0;
          }
          frame = slot.core.poll();
          if (frame !== undefined && slot.core.hasOutput) {
            this.#ready.push(slot); // round robin: back of the line
          } else {
            slot.queued = false;
          }
          this.#arm(slot);
          if (frame === undefined) continue;
        } else {
          return;
        }
        try {
          await socket.send(frame);
        } catch (error) {
          if (!(error instanceof RangeError)) throw error;
          // Over this socket's frame limit (a segment or legacy message
          // sized past it): that stream's fault alone, and its sends fail.
          this.#refuseOversized(frame.streamId);
        }
      }
    } catch {
      // The socket closed under us; the reader notices and detaches. Reliable
      // streams resend after the next attach.
    }
  }

  // ---- timers ----

  #arm(slot: Slot): void {
    const deadline = slot.core.deadline;
    if (deadline === Infinity) {
      if (slot.armed) {
        slot.armed = false;
        this.#armed.delete(slot);
      }
      return;
    }
    if (!slot.armed) {
      slot.armed = true;
      this.#armed.add(slot);
    }
    if (deadline < this.#timerAt) this.#schedule(deadline);
  }

  #schedule(at: number): void {
    if (this.#socket === undefined || this.#closing) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(this.#onTimer, Math.max(0, Math.ceil(at - this.#now())));
  }

  #clearTimer(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  #onTimer = (): void => {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (this.#socket === undefined) return;
    const now = this.#now();
    let next = Infinity;
    for (const slot of [...this.#armed]) {
      if (slot.core.deadline <= now) slot.core.tick();
      const deadline = slot.core.deadline;
      if (deadline === Infinity) {
        slot.armed = false;
        this.#armed.delete(slot);
      } else if (deadline < next) {
        next = deadline;
      }
    }
    if (next < this.#timerAt) this.#schedule(next);
  };

  // ---- socket loss ----

  #lose(socket: RelaySocket, info: RelayCloseInfo): void {
    if (this.#socket !== socket) return;
    this.#socket = undefined;
    this.#clearTimer();
    const resolve = this.#resolveDetached;
    this.#resolveDetached = undefined;
    if (this.#closing) {
      resolve?.(info);
      return;
    }
    // Legacy streams cannot resume (no acks, no resend): they end now, and
    // their ids answer `executor_disconnected`, not `stream_closed` (which
    // says everything was delivered).
    const lost = new RelayClosedError(`Relay socket closed: ${info.reason || info.code}`, {
      cause: info,
    });
    for (const slot of [...this.#streams.values()]) {
      if (slot.core.mode !== "legacy") continue;
      slot.core.fail(lost);
      this.#ended(slot, RESET_EXECUTOR_DISCONNECTED);
      this.#lostLegacy.add(slot.core.id);
      if (this.#lostLegacy.size > RETIRED_IDS) {
        this.#lostLegacy.delete(this.#lostLegacy.values().next().value!);
      }
    }
    this.#control.length = 0;
    this.#detachTimer = setTimeout(() => {
      this.#detachTimer = undefined;
      const error = new RelayClosedError(
        `Relay socket closed: no socket was attached within the ${this.#detachWindowMs} ms detach window`,
        { cause: info },
      );
      for (const slot of [...this.#streams.values()]) {
        slot.core.fail(error);
        this.#ended(slot, RESET_DETACH_EXPIRED);
      }
    }, this.#detachWindowMs);
    resolve?.(info);
  }
}
