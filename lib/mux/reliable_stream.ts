/**
 * The per-stream endpoint of the relay protocol, as pure logic: sequencing,
 * acknowledgements, retransmission, duplicate suppression, segmentation,
 * reassembly, flow control and the legacy (Codex v1) mode. It does no I/O and
 * reads time only through an injected clock, so it can be driven by a real
 * socket ({@linkcode StreamMux}) or by a simulated link in tests.
 *
 * The owner feeds inbound frames to {@linkcode ReliableStream.receive}, pulls
 * outbound frames with {@linkcode ReliableStream.poll} when the stream says it
 * has output, calls {@linkcode ReliableStream.tick} at
 * {@linkcode ReliableStream.deadline}, and reads whole messages with
 * {@linkcode ReliableStream.read}. PROTOCOL.md describes the wire behaviour.
 *
 * @module
 */

import { MAX_UINT32, RELAY_FRAME_VERSION } from "../relay/frame_codec.ts";
import type { DataBody, FrameBody, RelayFrame } from "../relay/frame_codec.ts";
import { ProtocolError, StreamResetError } from "../errors.ts";
import type { ByteBudget } from "../_byte_budget.ts";
import {
  RESET_INBOX_OVERFLOW,
  RESET_MESSAGE_TOO_LARGE,
  RESET_PROTOCOL_ERROR,
  RESET_REORDER_OVERFLOW,
} from "./reset_reasons.ts";

/**
 * How a stream numbers and acknowledges its data: `pending` until the first
 * data frame, `legacy` (Codex v1: seq from 0, no acks) or `reliable`.
 */
export type StreamMode = "pending" | "legacy" | "reliable";

/** Default payload bytes per segment (60 KiB, as Codex's record size). */
export const DEFAULT_SEGMENT_BYTES = 61_440;
/** Default sender window: unacknowledged segments in flight. */
export const DEFAULT_WINDOW_SEGMENTS = 128;
/**
 * Default sender window: payload bytes of the seqs past the peer's cumulative
 * ack, selectively acknowledged or not (2 MiB). Half of
 * {@linkcode DEFAULT_REORDER_BYTES}, as {@linkcode DEFAULT_WINDOW_SEGMENTS} is
 * half of {@linkcode DEFAULT_REORDER_SEGMENTS}: a receiver holds only seqs in
 * the sender's window, so an honest sender never causes `reorder_overflow`.
 */
export const DEFAULT_WINDOW_BYTES = 2 * 1024 * 1024;
/** Default bound on whole messages waiting for the consumer. */
export const DEFAULT_INBOX_MESSAGES = 128;
/** Default bound on bytes of whole messages waiting for the consumer (8 MiB). */
export const DEFAULT_INBOX_BYTES = 8 * 1024 * 1024;
/** Default reorder window: how far past the expected seq a segment may arrive. */
export const DEFAULT_REORDER_SEGMENTS = 256;
/** Default bound on bytes of segments held out of order (4 MiB). */
export const DEFAULT_REORDER_BYTES = 4 * 1024 * 1024;
/** Default upper bound on one reassembled message (64 MiB, as Codex). */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Default upper bound on one legacy-mode message: one frame minus envelope room. */
export const DEFAULT_LEGACY_MESSAGE_BYTES = 256 * 1024 - 1024;
/** Default delay before a standalone ack when no data carries it, in ms. */
export const DEFAULT_ACK_DELAY_MS = 10;
/** Default count of accepted segments after which a standalone ack goes out at once. */
export const DEFAULT_ACK_EVERY_SEGMENTS = 4;
/** Default retransmission timeout before any RTT sample, in ms. */
export const DEFAULT_RTO_INITIAL_MS = 1_000;
/** Default floor of the retransmission timeout, in ms. */
export const DEFAULT_RTO_MIN_MS = 200;
/** Default cap of the retransmission timeout (also the backoff cap), in ms. */
export const DEFAULT_RTO_MAX_MS = 5_000;
/** A segment is resent early once this many later seqs were selectively acked. */
export const FAST_RETRANSMIT_THRESHOLD = 3;
/**
 * Smallest reorder allowance, in ms: a segment sent before one that was
 * acknowledged is deemed lost this long (or a quarter of the minimum RTT, if
 * more) after the time its acknowledgement was expected.
 */
export const MIN_REORDER_ALLOWANCE_MS = 2;
/** How far past the cumulative ack the selective bitmap reaches (`ack_bits`). */
export const SACK_SPAN = 32;

/** Options for {@linkcode ReliableStream}. All sizes are payload bytes. */
export interface ReliableStreamOptions {
  /**
   * The initial mode: `pending` (the executor side; the first data frame
   * decides) or `reliable` (the harness side, which opens reliable streams).
   * @default {"pending"}
   */
  mode?: "pending" | "reliable";
  /**
   * The clock, in milliseconds (any monotonic origin).
   * @default {performance.now}
   */
  now?: () => number;
  /** Payload bytes per segment. @default {61440} */
  segmentBytes?: number;
  /**
   * Seqs in flight past the peer's cumulative ack (selectively acked ones
   * included). Keep it within the peer's `reorderSegments`.
   * @default {128}
   */
  windowSegments?: number;
  /**
   * Payload bytes of the seqs in flight past the peer's cumulative ack
   * (selectively acked ones included). Keep it within the peer's `reorderBytes`.
   * @default {2097152}
   */
  windowBytes?: number;
  /**
   * Bytes queued but not yet in flight beyond which a write's acceptance
   * waits (backpressure on the writer).
   * @default {windowBytes}
   */
  sendBufferBytes?: number;
  /** Whole messages waiting for the consumer. @default {128} */
  inboxMessages?: number;
  /** Bytes of whole messages waiting for the consumer. @default {8388608} */
  inboxBytes?: number;
  /** How far ahead of the expected seq a segment may be. @default {256} */
  reorderSegments?: number;
  /** Bytes of segments held out of order or for a full inbox. @default {4194304} */
  reorderBytes?: number;
  /** Largest reassembled message. @default {67108864} */
  maxMessageBytes?: number;
  /** Largest message in legacy (and pending) mode. @default {261120} */
  legacyMessageBytes?: number;
  /** Standalone ack delay. @default {10} */
  ackDelayMs?: number;
  /** Accepted segments that trigger an immediate standalone ack. @default {4} */
  ackEverySegments?: number;
  /** Retransmission timeout before any RTT sample. @default {1000} */
  rtoInitialMs?: number;
  /** Retransmission timeout floor. @default {200} */
  rtoMinMs?: number;
  /** Retransmission timeout cap. @default {5000} */
  rtoMaxMs?: number;
  /** Called when output may be available or {@linkcode ReliableStream.deadline} moved. */
  onOutput?: () => void;
  /** Called when a message became readable or the stream ended. */
  onReadable?: () => void;
  /** Called once when the stream has ended and has nothing left to send. */
  onEnd?: () => void;
  /**
   * Shared with the other streams of an endpoint: this stream reports the
   * bytes it holds for its consumer (inbox, reassembly, held segments), and
   * the budget may shed it (see {@linkcode ReliableStream.shed}).
   */
  budget?: ByteBudget;
}

/** Counters of one stream, for tests, benchmarks and diagnostics. */
export interface ReliableStreamStats {
  /** Data frames sent for the first time. */
  segmentsSent: number;
  /** Data frames sent again (timeout, fast retransmit or resume). */
  retransmits: number;
  /**
   * Of those, sent early because later seqs, or segments sent later, were
   * acknowledged (loss detection by selective acks, not by the timer).
   */
  fastRetransmits: number;
  /** Retransmission timer expiries. */
  timeouts: number;
  /** Standalone ack frames sent. */
  acksSent: number;
  /** Inbound data frames dropped as duplicates. */
  duplicatesDropped: number;
  /**
   * Inbound data frames dropped unacknowledged while the stream waited for
   * its budget's room to start a message (the sender resends them).
   */
  deferredDropped: number;
  /** Entries waiting in the resend list (bounded: stale ones are compacted away). */
  resendQueued: number;
  /** Segments sent and not yet acknowledged. */
  unackedSegments: number;
  /** Their payload bytes. */
  unackedBytes: number;
  /**
   * Payload bytes of every seq past the peer's cumulative ack that was sent,
   * selectively acknowledged or not: what the peer may have to hold. The
   * sender keeps it within the byte window.
   */
  inFlightBytes: number;
  /** Segments held by the receiver (out of order, or waiting for inbox room). */
  heldSegments: number;
  /** Their payload bytes. */
  heldBytes: number;
  /** Whole messages waiting for the consumer. */
  inboxMessages: number;
  /** Their bytes. */
  inboxBytes: number;
  /** Current retransmission timeout in ms. */
  rtoMs: number;
  /** Smoothed round-trip time in ms, or -1 before any sample. */
  srttMs: number;
}

interface Segment {
  body: DataBody;
  sentAt: number;
  /** Transmission order of the last send (orders sends at the same instant). */
  xmit: number;
  retransmitted: boolean;
  queued: boolean;
}

interface Outgoing {
  bytes: Uint8Array;
  offset: number;
  index: number;
  count: number;
}

interface Waiter {
  end: number;
  done: (error?: Error) => void;
}

/** A message whose sender asked to hear when the peer has it (see `write`). */
interface DeliveryWaiter {
  end: number;
  delivered: () => void;
}

const ACK_BODY: FrameBody = Object.freeze({ kind: "ack" }) as FrameBody;
const NOOP = (): void => {};
const EMPTY = new Uint8Array(0);
/**
 * Reassembly grows to twice the first segment (or this, if more) at the
 * second and doubles as bytes arrive, so memory follows what was received,
 * not what `segment_count` claims.
 */
const REASSEMBLY_START_BYTES = 64 * 1024;
/**
 * A consumer that has left whole messages waiting this long unread has
 * stopped, not fallen a turn behind; a message still incomplete this long
 * after its first segment (at the least) has a sender that stopped (see
 * {@linkcode ReliableStream.shedOrder}).
 */
const STALLED_MS = 1_000;
/**
 * The slowest rate, in bytes per millisecond (1 MiB/s), at which a message
 * being reassembled still counts as arriving: growth alone proves nothing,
 * since a sender can trickle one byte at a time.
 */
const MIN_ARRIVAL_BYTES_PER_MS = 1024 * 1024 / 1000;

/**
 * A payload to keep past the current call. A decoded payload is a view into
 * its whole frame, which may be mostly other fields: one much smaller than its
 * buffer is copied, so what is held costs about what is counted.
 */
function ownBytes(payload: Uint8Array): Uint8Array {
  return payload.length * 2 < payload.buffer.byteLength ? payload.slice() : payload;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  const result = value ?? fallback;
  if (!Number.isSafeInteger(result) || result < 1) {
    throw new RangeError(`Cannot create stream: ${name} ${result} is not a positive integer`);
  }
  return result;
}

/**
 * One endpoint of one virtual stream. Pure logic: no sockets, no timers; time
 * comes from the injected clock and the owner calls {@linkcode tick} at
 * {@linkcode deadline}.
 *
 * @example Two endpoints joined by hand
 * ```ts
 * import { ReliableStream } from "@outpost/exec";
 * const a = new ReliableStream("s-1", { mode: "reliable" });
 * const b = new ReliableStream("s-1");
 * a.write(new TextEncoder().encode("hello"));
 * for (let frame = a.poll(); frame; frame = a.poll()) b.receive(frame);
 * console.log(b.mode, new TextDecoder().decode(b.read())); // "reliable" "hello"
 * a.close(); b.close();
 * ```
 */
export class ReliableStream {
  /** The stream id (`stream_id` of every frame). */
  readonly id: string;
  #mode: StreamMode;
  #now: () => number;
  #onOutput: () => void;
  #onReadable: () => void;
  #onEnd: () => void;
  #budget: ByteBudget | undefined;
  /** What this stream last reported to `#budget`: bytes held, and expected. */
  #budgeted = 0;
  #budgetedExpected = 0;
  /**
   * Bytes the budget admitted for the message starting at `#recvNext`, until
   * that message starts (see `#admit`); 0 when none was asked for.
   */
  #admittedBytes = 0;
  /** When `#admittedBytes` was admitted (`#now()`). */
  #admittedAt = 0;
  /** When the message being reassembled last got a segment (`#now()`). */
  #partialActiveAt = 0;
  /**
   * Since when segments have been held behind the missing `#gapAt`
   * (`#now()`), or NaN: a gap filled and another opened starts anew.
   */
  #gapSince = Number.NaN;
  #gapAt = 0;
  /**
   * Waiting for the budget's room to start a message of `#requestedBytes` at
   * `#recvNext`: meanwhile the stream holds none of it (its segments are
   * dropped unacknowledged, the first too), so a waiting stream costs the
   * budget nothing; once admitted, `resume` asks its sender for them again.
   */
  #awaitingRoom = false;
  #requestedBytes = 0;
  /** When the message being reassembled got its first segment (`#now()`). */
  #partialStartedAt = 0;
  /**
   * Since when whole messages have waited for the consumer without a read
   * (`#now()`), or NaN while none waits. Kept only with a budget.
   */
  #waitingSince = Number.NaN;
  /** The consumer reads no more: messages are dropped as they complete. */
  #discarding = false;
  // limits
  #segmentBytes: number;
  #windowSegments: number;
  #windowBytes: number;
  #sendBufferBytes: number;
  #inboxLimit: number;
  #inboxBytesLimit: number;
  #reorderSegments: number;
  #reorderBytesLimit: number;
  #maxMessageBytes: number;
  #legacyMessageBytes: number;
  #ackDelayMs: number;
  #ackEvery: number;
  #rtoMin: number;
  #rtoMax: number;
  // sender
  #queue: Outgoing[] = [];
  #queueHead = 0;
  #waiters: Waiter[] = [];
  #waitersHead = 0;
  #enqueuedTotal = 0;
  #admittedTotal = 0;
  /**
   * Bytes of written messages the peer has: cumulatively acknowledged in
   * reliable mode, handed to the socket in legacy mode (no acks there).
   */
  #deliveredTotal = 0;
  #deliveryWaiters: DeliveryWaiter[] = [];
  #deliveryWaitersHead = 0;
  #nextSeq = 1;
  #legacySeq = 0;
  #peerAck = 0;
  #unacked = new Map<number, Segment>();
  #unackedBytes = 0;
  /** Payload bytes of seqs past the peer's cumulative ack, sent or selectively acked. */
  #spanBytes = 0;
  /**
   * Selectively acknowledged seqs past the cumulative ack. Kept until the
   * cumulative ack passes them: if the ack that would have done so is lost,
   * the retransmission timer resends one as a probe, whose duplicate the
   * peer answers with its ack (see {@linkcode tick}); a `resume` of the peer
   * that no longer reports them makes them unacknowledged again (#unsack).
   */
  #sacked = new Map<number, Segment>();
  #xmitCounter = 0;
  /** Transmission order of the latest-sent acknowledged segment (RACK). */
  #rackXmit = 0;
  /** The RTT that segment saw. */
  #rackRtt = 0;
  #minRtt = Infinity;
  #lossDeadline = Infinity;
  /** Whether any segment was acknowledged since the last timeout. */
  #ackedSinceTimeout = false;
  /**
   * Whether the peer's latest ack reported holes (`ack_bits` not 0). Only then
   * are unacknowledged seqs in the bitmap's span known to be missing: a
   * receiver holding segments for a full inbox reports `ack_bits = 0`.
   */
  #peerHoles = false;
  #resend: number[] = [];
  #resendHead = 0;
  #srtt = -1;
  #rttvar = 0;
  #rtoBase: number;
  #rto: number;
  #rtoDeadline = Infinity;
  #resumePending = false;
  // receiver
  #recvNext = 1;
  #held = new Map<number, DataBody>();
  #heldBytes = 0;
  /**
   * When this stream sent the `resume` that asks for segments it dropped
   * while waiting for room (NaN when none is outstanding): if the sender then
   * only probes with the next seq a round of timeouts later, that `resume`
   * was lost (the rendezvous drops frames to a parked stream), and it is sent
   * again.
   */
  #resumeAskedAt = Number.NaN;
  #partial: Uint8Array = EMPTY;
  #partialIndex = 0;
  #partialCount = 0;
  #partialBytes = 0;
  /** What an honest sender's message can reach: segment_count × the first segment. */
  #partialExpected = 0;
  #inbox: Uint8Array[] = [];
  #inboxHead = 0;
  #inboxBytes = 0;
  #ackDue = false;
  #ackDeadline = Infinity;
  #sinceAck = 0;
  // lifecycle
  #error: Error | undefined;
  #resetReason: string | undefined;
  #resetPending = false;
  /** This endpoint ended the stream with a reset of its own (not the peer's, nor a local failure). */
  #resetSent = false;
  #endNotified = false;
  #stats = {
    segmentsSent: 0,
    retransmits: 0,
    fastRetransmits: 0,
    timeouts: 0,
    acksSent: 0,
    duplicatesDropped: 0,
    deferredDropped: 0,
  };

  /**
   * Creates an endpoint.
   *
   * @param id The stream id.
   * @param options Mode, clock, limits and hooks.
   * @throws {RangeError} If a limit is not a positive integer.
   */
  constructor(id: string, options: ReliableStreamOptions = {}) {
    this.id = id;
    this.#mode = options.mode ?? "pending";
    this.#now = options.now ?? (() => performance.now());
    this.#onOutput = options.onOutput ?? NOOP;
    this.#onReadable = options.onReadable ?? NOOP;
    this.#onEnd = options.onEnd ?? NOOP;
    this.#budget = options.budget;
    this.#segmentBytes = positive("segmentBytes", options.segmentBytes, DEFAULT_SEGMENT_BYTES);
    this.#windowSegments = positive(
      "windowSegments",
      options.windowSegments,
      DEFAULT_WINDOW_SEGMENTS,
    );
    this.#windowBytes = positive("windowBytes", options.windowBytes, DEFAULT_WINDOW_BYTES);
    this.#sendBufferBytes = positive(
      "sendBufferBytes",
      options.sendBufferBytes,
      this.#windowBytes,
    );
    this.#inboxLimit = positive("inboxMessages", options.inboxMessages, DEFAULT_INBOX_MESSAGES);
    this.#inboxBytesLimit = positive("inboxBytes", options.inboxBytes, DEFAULT_INBOX_BYTES);
    this.#reorderSegments = positive(
      "reorderSegments",
      options.reorderSegments,
      DEFAULT_REORDER_SEGMENTS,
    );
    this.#reorderBytesLimit = positive(
      "reorderBytes",
      options.reorderBytes,
      DEFAULT_REORDER_BYTES,
    );
    this.#maxMessageBytes = positive(
      "maxMessageBytes",
      options.maxMessageBytes,
      DEFAULT_MAX_MESSAGE_BYTES,
    );
    this.#legacyMessageBytes = positive(
      "legacyMessageBytes",
      options.legacyMessageBytes,
      DEFAULT_LEGACY_MESSAGE_BYTES,
    );
    this.#ackDelayMs = Math.max(0, options.ackDelayMs ?? DEFAULT_ACK_DELAY_MS);
    this.#ackEvery = positive(
      "ackEverySegments",
      options.ackEverySegments,
      DEFAULT_ACK_EVERY_SEGMENTS,
    );
    this.#rtoMin = positive("rtoMinMs", options.rtoMinMs, DEFAULT_RTO_MIN_MS);
    this.#rtoMax = Math.max(
      this.#rtoMin,
      positive("rtoMaxMs", options.rtoMaxMs, DEFAULT_RTO_MAX_MS),
    );
    this.#rtoBase = Math.min(
      this.#rtoMax,
      Math.max(
        this.#rtoMin,
        positive("rtoInitialMs", options.rtoInitialMs, DEFAULT_RTO_INITIAL_MS),
      ),
    );
    this.#rto = this.#rtoBase;
  }

  /** The stream's mode; `pending` until the first data frame on the executor side. */
  get mode(): StreamMode {
    return this.#mode;
  }

  /** Whether the stream has ended (reset by either side, closed, or failed). */
  get ended(): boolean {
    return this.#error !== undefined;
  }

  /** Why the stream ended, or `undefined` while it is open. */
  get error(): Error | undefined {
    return this.#error;
  }

  /** The reset reason sent or received, or `undefined`. */
  get resetReason(): string | undefined {
    return this.#resetReason;
  }

  /** The reason of the reset this endpoint sent, or queued, when it ended the stream itself. */
  get sentResetReason(): string | undefined {
    return this.#resetSent ? this.#resetReason : undefined;
  }

  /**
   * Whether all written messages were sent and (in reliable mode) acknowledged
   * by the peer's cumulative ack. A segment acknowledged only in `ack_bits`
   * is held by the peer behind a missing one, or for a full inbox: not yet
   * delivered, and lost if the stream ends now.
   */
  get flushed(): boolean {
    return this.#queueHead === this.#queue.length && this.#unacked.size === 0 &&
      this.#sacked.size === 0;
  }

  /** Whether the consumer has a whole message to {@linkcode read}. */
  get readable(): boolean {
    return this.#inboxHead < this.#inbox.length;
  }

  /** The next time {@linkcode tick} must run (clock units), or `Infinity`. */
  get deadline(): number {
    if (this.#error !== undefined) return Infinity;
    return Math.min(this.#ackDeadline, this.#rtoDeadline, this.#lossDeadline);
  }

  /** A snapshot of the stream's counters. */
  get stats(): ReliableStreamStats {
    return {
      ...this.#stats,
      resendQueued: this.#resend.length - this.#resendHead,
      unackedSegments: this.#unacked.size,
      unackedBytes: this.#unackedBytes,
      inFlightBytes: this.#spanBytes,
      heldSegments: this.#held.size,
      heldBytes: this.#heldBytes,
      inboxMessages: this.#inbox.length - this.#inboxHead,
      inboxBytes: this.#inboxBytes,
      rtoMs: this.#rto,
      srttMs: this.#srtt,
    };
  }

  /** Whether {@linkcode poll} may return a frame now. */
  get hasOutput(): boolean {
    if (this.#error !== undefined) return this.#resetPending;
    if (this.#resumePending || this.#resendHead < this.#resend.length) return true;
    if (this.#mode === "legacy") return this.#queueHead < this.#queue.length;
    if (this.#mode !== "reliable") return false;
    return this.#ackDue || (this.#queueHead < this.#queue.length && this.#windowOpen());
  }

  /**
   * Queues one whole message. `done` is called (once) when the message is
   * accepted: when the bytes queued ahead of its end fit the send buffer, or
   * with an error if the stream ends first. `delivered`, when given, is
   * called once the peer has the whole message: when its last segment is
   * cumulatively acknowledged (reliable mode), or when it is handed to the
   * socket (legacy mode, which has no acks). It is never called if the
   * stream ends first.
   *
   * @param message The message bytes (not copied; do not modify them afterwards).
   * @param done Acceptance callback; receives an error if the stream ended.
   * @param delivered Delivery callback.
   * @throws {RangeError} If the message is empty, or too large for the mode.
   */
  write(
    message: Uint8Array,
    done: (error?: Error) => void = NOOP,
    delivered?: () => void,
  ): void {
    if (this.#error !== undefined) {
      done(this.#error);
      return;
    }
    if (message.length === 0) {
      throw new RangeError("Cannot send message: it is empty");
    }
    if (this.#mode !== "reliable" && message.length > this.#legacyMessageBytes) {
      throw new RangeError(
        `Cannot send message: ${message.length} bytes exceeds the ${this.#legacyMessageBytes} byte limit of a ${this.#mode} stream`,
      );
    }
    if (this.#mode === "reliable" && message.length > this.#maxMessageBytes) {
      throw new RangeError(
        `Cannot send message: ${message.length} bytes exceeds the ${this.#maxMessageBytes} byte limit`,
      );
    }
    const count = this.#mode === "reliable" ? Math.ceil(message.length / this.#segmentBytes) : 1;
    this.#queue.push({ bytes: message, offset: 0, index: 0, count });
    this.#enqueuedTotal += message.length;
    this.#waiters.push({ end: this.#enqueuedTotal, done });
    if (delivered !== undefined) {
      this.#deliveryWaiters.push({ end: this.#enqueuedTotal, delivered });
    }
    this.#settleWaiters();
    this.#onOutput();
  }

  /**
   * Takes the next whole message from the inbox, making room (and possibly
   * acknowledging held segments).
   *
   * @returns The message, or `undefined` when the inbox is empty.
   */
  read(): Uint8Array | undefined {
    if (this.#inboxHead >= this.#inbox.length) return undefined;
    const message = this.#inbox[this.#inboxHead];
    this.#inbox[this.#inboxHead++] = undefined as unknown as Uint8Array;
    if (this.#inboxHead === this.#inbox.length) {
      this.#inbox.length = 0;
      this.#inboxHead = 0;
    } else if (this.#inboxHead > 64 && this.#inboxHead * 2 > this.#inbox.length) {
      this.#inbox = this.#inbox.slice(this.#inboxHead);
      this.#inboxHead = 0;
    }
    this.#inboxBytes -= message.length;
    // The consumer reads: whatever is left (or drained in below) waits from now.
    this.#waitingSince = Number.NaN;
    if (this.#error === undefined && this.#held.has(this.#recvNext)) {
      // The consumer made room: accept held segments and open the sender's window.
      if (this.#drain()) this.#ackNow();
    }
    this.#reportHeld();
    return message;
  }

  /**
   * Where this stream stands when its budget must shed (see
   * {@linkcode ByteBudget}). A stream that has stopped goes first: its
   * consumer has left whole messages waiting a second or more without
   * reading, or its sender has left a message incomplete for longer than the
   * message's size takes at 1 MiB/s (at least a second) since its first
   * segment. Among stopped streams, and among the others, the largest goes
   * first. A few milliseconds of waiting is a consumer that has not been
   * scheduled yet, not a reason to go first.
   *
   * Segments held behind a missing one for twice the retransmission
   * timeout's cap count as stopped too.
   *
   * @param bytes What the stream holds, as the budget counts it.
   * @returns Tier 1 (stopped) or 0, keyed by `bytes`.
   */
  shedOrder(bytes: number): readonly [tier: number, key: number] {
    const now = this.#now();
    if (!Number.isNaN(this.#waitingSince) && now - this.#waitingSince >= STALLED_MS) {
      return [1, bytes];
    }
    if (this.#partialCount > 0 && this.#senderStopped(now)) return [1, bytes];
    // A missing segment is resent within the sender's timeout cap (ours by
    // default): held behind it for twice that, the sender has stopped.
    if (!Number.isNaN(this.#gapSince) && now - this.#gapSince >= 2 * this.#rtoMax) {
      return [1, bytes];
    }
    return [0, bytes];
  }

  /**
   * What this stream still expects to take of what its budget admitted, now
   * (see {@linkcode ByteBudget.admit}): the rest of the message being
   * reassembled (at least a byte until it is whole) while segments keep
   * coming, 0 once none has come for a second or its sender counts as
   * stopped (see {@linkcode shedOrder}: a trickle does not keep the room);
   * or a message admitted and not yet begun, 0 once it has not begun for a
   * second (its room goes to others, and it asks again when it begins).
   *
   * @returns Bytes.
   */
  expecting(): number {
    const now = this.#now();
    if (this.#partialCount > 0) {
      if (now - this.#partialActiveAt >= STALLED_MS || this.#senderStopped(now)) return 0;
      return this.#partialLeft();
    }
    if (this.#admittedBytes > 0 && now - this.#admittedAt < STALLED_MS) return this.#admittedBytes;
    return 0;
  }

  /**
   * Whether the sender of the message being reassembled has stopped: it is
   * incomplete for longer than its size takes at 1 MiB/s, at least a second.
   */
  #senderStopped(now: number): boolean {
    const allowance = Math.max(STALLED_MS, this.#partialExpected / MIN_ARRIVAL_BYTES_PER_MS);
    return now - this.#partialStartedAt >= allowance;
  }

  /**
   * The consumer will read no more (it closed its end): drops the messages
   * waiting for it, and from now on each message as it completes. The stream
   * still accepts and acknowledges data, so its peer is not held back, and
   * what it dropped no longer counts against its budget. Idempotent.
   */
  discardUnread(): void {
    this.#discarding = true;
    this.#dropInbox();
    if (this.#error === undefined && this.#held.has(this.#recvNext)) {
      if (this.#drain()) this.#ackNow();
    }
    this.#reportHeld();
  }

  /**
   * The budget's call back when this stream waits to start a large message
   * and its turn came (see {@linkcode ByteBudget.admit}): asks again, and
   * once admitted has its sender resend what it dropped meanwhile.
   */
  retryAdmission(): void {
    // With its inbox full it could not accept the message yet: it gives up
    // its turn and asks again when a resend finds room.
    if (this.#error === undefined && this.#awaitingRoom && !this.#inboxFull()) {
      this.#askRoom(this.#requestedBytes);
    }
    this.#reportHeld();
  }

  /**
   * Drops the messages the consumer has not read and resets the stream with
   * `inbox_overflow` (the endpoint's {@linkcode ByteBudget} ran out and
   * this stream came first in its order, see {@linkcode shedOrder}). Reads
   * fail with that reset at once, also on a stream that had already ended
   * with messages left unread.
   */
  shed(): void {
    const error = new StreamResetError(RESET_INBOX_OVERFLOW);
    this.#dropInbox();
    if (this.#error === undefined) {
      this.#resetReason = RESET_INBOX_OVERFLOW;
      this.#finish(error, true);
    } else {
      this.#error = error;
      this.#reportHeld();
      this.#onReadable();
    }
  }

  #dropInbox(): void {
    this.#inbox = [];
    this.#inboxHead = 0;
    this.#inboxBytes = 0;
  }

  /**
   * Processes one inbound frame of this stream. Never throws: a frame that
   * breaks the protocol ends the stream and queues a reset for the peer.
   *
   * @param frame The frame (its `streamId` is not checked here).
   */
  receive(frame: RelayFrame): void {
    if (this.#error !== undefined) return;
    this.#receive(frame);
    this.#reportHeld();
  }

  #receive(frame: RelayFrame): void {
    const body = frame.body;
    switch (body.kind) {
      case "data":
        if (this.#mode === "pending") {
          this.#mode = body.seq === 0 ? "legacy" : "reliable";
          if (this.#queueHead < this.#queue.length) this.#restartQueueForMode();
          this.#onOutput();
        }
        if (this.#mode === "legacy") {
          this.#receiveLegacy(body);
          return;
        }
        if (!this.#receiveAck(frame)) return;
        this.#receiveData(body);
        return;
      case "ack":
        if (this.#mode === "reliable") this.#receiveAck(frame);
        return;
      case "resume":
        if (this.#mode !== "reliable" || body.nextSeq === 0) return;
        if (body.nextSeq < this.#recvNext) {
          // A stale copy: the peer has sent more since. Nothing to do.
          this.#stats.duplicatesDropped++;
          return;
        }
        if (!this.#receiveAck(frame)) return;
        this.#unsack(frame.ack, frame.ackBits >>> 0, true);
        this.#resendAll();
        this.#ackNow();
        return;
      case "reset":
        this.#resetReason = body.reason;
        this.#finish(new StreamResetError(body.reason), false);
        return;
      default:
        return; // heartbeat and handshake are ignored
    }
  }

  /**
   * Returns the next frame to send, or `undefined`. Priority: reset, resume,
   * retransmissions, new segments (within the window), standalone ack. Every
   * frame carries the current ack state.
   *
   * @returns A frame for the socket writer.
   */
  poll(): RelayFrame | undefined {
    if (this.#error !== undefined) {
      if (!this.#resetPending) return undefined;
      this.#resetPending = false;
      const frame = this.#frame({ kind: "reset", reason: this.#resetReason! });
      this.#notifyEnd();
      return frame;
    }
    if (this.#mode === "pending") return undefined;
    if (this.#mode === "legacy") return this.#pollLegacy();
    if (this.#resumePending) {
      this.#resumePending = false;
      return this.#frame({ kind: "resume", nextSeq: this.#nextSeq });
    }
    while (this.#resendHead < this.#resend.length) {
      const seq = this.#resend[this.#resendHead++];
      if (this.#resendHead === this.#resend.length) {
        this.#resend.length = 0;
        this.#resendHead = 0;
      }
      const segment = this.#unacked.get(seq) ?? this.#sacked.get(seq);
      if (segment === undefined || !segment.queued) continue;
      segment.queued = false;
      segment.retransmitted = true;
      segment.sentAt = this.#now();
      segment.xmit = ++this.#xmitCounter;
      this.#stats.retransmits++;
      if (this.#rtoDeadline === Infinity) this.#rtoDeadline = segment.sentAt + this.#rto;
      return this.#frame(segment.body);
    }
    if (this.#queueHead < this.#queue.length && this.#windowOpen()) {
      if (this.#nextSeq > MAX_UINT32) {
        this.#protocolError("the sequence space is exhausted");
        return this.poll();
      }
      const out = this.#queue[this.#queueHead];
      const length = Math.min(this.#segmentBytes, out.bytes.length - out.offset);
      const payload = out.offset === 0 && length === out.bytes.length
        ? out.bytes
        : out.bytes.subarray(out.offset, out.offset + length);
      const body: DataBody = {
        kind: "data",
        seq: this.#nextSeq++,
        segmentIndex: out.index++,
        segmentCount: out.count,
        payload,
      };
      out.offset += length;
      if (out.offset === out.bytes.length) this.#shiftQueue();
      const now = this.#now();
      this.#unacked.set(body.seq, {
        body,
        sentAt: now,
        xmit: ++this.#xmitCounter,
        retransmitted: false,
        queued: false,
      });
      this.#unackedBytes += length;
      this.#spanBytes += length;
      this.#admittedTotal += length;
      this.#stats.segmentsSent++;
      if (this.#rtoDeadline === Infinity) this.#rtoDeadline = now + this.#rto;
      this.#settleWaiters();
      return this.#frame(body);
    }
    if (this.#ackDue) {
      this.#stats.acksSent++;
      return this.#frame(ACK_BODY);
    }
    return undefined;
  }

  /** Runs due timers: the delayed ack and the retransmission timeout. */
  tick(): void {
    if (this.#error !== undefined) return;
    const now = this.#now();
    let output = false;
    if (now >= this.#ackDeadline) {
      this.#ackDeadline = Infinity;
      this.#ackDue = true;
      output = true;
    }
    if (now >= this.#lossDeadline) {
      this.#lossDeadline = Infinity;
      if (this.#detectLosses(now, this.#peerAck)) output = true;
    }
    if (now >= this.#rtoDeadline) {
      this.#rtoDeadline = Infinity;
      if (this.#unacked.size > 0) {
        this.#stats.timeouts++;
        this.#timeout(now);
        output = true;
      } else if (this.#sacked.size > 0) {
        this.#stats.timeouts++;
        this.#probeSacked(now);
        output = true;
      }
    }
    if (output) this.#onOutput();
  }

  /**
   * Prepares the stream for a new physical socket: a reliable stream queues
   * `resume{next_seq}` and the resend of everything unacknowledged.
   */
  resume(): void {
    if (this.#error !== undefined || this.#mode !== "reliable") return;
    this.#resumePending = true;
    this.#resendAll();
    this.#rto = this.#rtoBase;
    // Resends arm the timer as they go out; with only selectively acked seqs
    // left, nothing goes out, and the timer must still probe for the ack.
    this.#rtoDeadline = this.#unacked.size === 0 && this.#sacked.size > 0
      ? this.#now() + this.#rto
      : Infinity;
    this.#onOutput();
  }

  /**
   * Resets the stream: queues `reset{reason}` for the peer and ends it
   * locally; pending and later writes fail with a `StreamResetError`, reads
   * fail once the inbox is drained. Idempotent.
   *
   * @param reason The reset reason (see `reset_reasons.ts`).
   */
  reset(reason: string): void {
    if (this.#error !== undefined) return;
    this.#resetReason = reason;
    this.#finish(new StreamResetError(reason), true);
  }

  /**
   * Ends the stream locally without telling the peer (the socket is gone),
   * failing pending operations with `error`. Idempotent.
   *
   * @param error What pending and later operations fail with.
   */
  fail(error: Error): void {
    if (this.#error !== undefined) return;
    this.#finish(error, false);
  }

  /** Releases everything; the same as `fail` with a generic error. Idempotent. */
  close(): void {
    this.fail(new StreamResetError("shutdown"));
  }

  // ---- internals ----

  #frame(body: FrameBody): RelayFrame {
    let ack = 0;
    let ackBits = 0;
    if (this.#mode === "reliable") {
      ack = this.#recvNext - 1;
      ackBits = this.#ackBits();
      this.#ackDue = false;
      this.#ackDeadline = Infinity;
      this.#sinceAck = 0;
    }
    return { version: RELAY_FRAME_VERSION, streamId: this.id, ack, ackBits, body };
  }

  #ackBits(): number {
    if (this.#held.size === 0 || this.#held.has(this.#recvNext)) return 0;
    let bits = 0;
    for (const seq of this.#held.keys()) {
      const bit = seq - this.#recvNext;
      if (bit < 32) bits |= 1 << bit;
    }
    return bits >>> 0;
  }

  #pollLegacy(): RelayFrame | undefined {
    if (this.#queueHead >= this.#queue.length) return undefined;
    const out = this.#queue[this.#queueHead];
    this.#shiftQueue();
    const seq = this.#legacySeq;
    this.#legacySeq = (this.#legacySeq + 1) >>> 0;
    this.#admittedTotal += out.bytes.length;
    this.#deliveredTotal += out.bytes.length;
    this.#stats.segmentsSent++;
    this.#settleWaiters();
    this.#settleDeliveryWaiters();
    return this.#frame({
      kind: "data",
      seq,
      segmentIndex: 0,
      segmentCount: 1,
      payload: out.bytes,
    });
  }

  #shiftQueue(): void {
    this.#queue[this.#queueHead++] = undefined as unknown as Outgoing;
    if (this.#queueHead === this.#queue.length) {
      this.#queue.length = 0;
      this.#queueHead = 0;
    }
  }

  /** Messages queued while pending get segment counts for the decided mode. */
  #restartQueueForMode(): void {
    for (let i = this.#queueHead; i < this.#queue.length; i++) {
      const out = this.#queue[i];
      out.count = this.#mode === "reliable" ? Math.ceil(out.bytes.length / this.#segmentBytes) : 1;
    }
  }

  /**
   * The window counts every seq past the peer's cumulative ack, selectively
   * acknowledged or not: the peer holds the acknowledged ones until the gap
   * before them fills, so this is what its reorder limits must cover.
   */
  #windowOpen(): boolean {
    if (this.#nextSeq - 1 - this.#peerAck >= this.#windowSegments) return false;
    if (this.#spanBytes === 0) return true;
    const out = this.#queue[this.#queueHead];
    const next = Math.min(this.#segmentBytes, out.bytes.length - out.offset);
    return this.#spanBytes + next <= this.#windowBytes;
  }

  /**
   * The retransmission timer expired. The oldest segment is resent; when the
   * peer has selectively acknowledged later seqs (so there are holes), every
   * segment the bitmap can describe that has waited a whole timeout is resent
   * with it (a burst of at most {@linkcode SACK_SPAN}). Without selective
   * acks the resend is a probe: the receiver may just be holding segments for
   * a full inbox, which an ack does not tell from their loss. So when the
   * last segments in flight were all lost, each is resent at a timeout of
   * its own (a lost tail of n segments takes n timeouts; PROTOCOL.md §5,
   * SECURITY_TESTS row 240). The timeout keeps its value while
   * acks still arrive and doubles (up to its cap) only when nothing at all
   * was acknowledged since the last expiry.
   */
  #timeout(now: number): void {
    let queued = false;
    if (this.#peerHoles) {
      const limit = this.#peerAck + SACK_SPAN;
      const cutoff = now - this.#rto;
      for (const [seq, segment] of this.#unacked) {
        if (seq > limit) break;
        if (segment.sentAt <= cutoff && !segment.queued) {
          this.#queueResend(seq, segment);
          queued = true;
        }
      }
    }
    if (!this.#ackedSinceTimeout) this.#rto = Math.min(this.#rto * 2, this.#rtoMax);
    if (!queued) {
      const [seq, segment] = this.#unacked.entries().next().value!;
      this.#queueResend(seq, segment);
    }
    this.#ackedSinceTimeout = false;
    this.#rtoDeadline = now + this.#rto;
  }

  /**
   * The retransmission timer expired with nothing unacknowledged but seqs the
   * peer acknowledged only selectively: either the ack that passed them was
   * lost, or the peer still holds them (a full inbox). The lowest is resent;
   * the peer drops the duplicate and acks again. The timeout doubles while
   * nothing is acknowledged, as in {@linkcode #timeout}.
   */
  #probeSacked(now: number): void {
    let lowest = Infinity;
    for (const seq of this.#sacked.keys()) if (seq < lowest) lowest = seq;
    this.#queueResend(lowest, this.#sacked.get(lowest)!);
    if (!this.#ackedSinceTimeout) this.#rto = Math.min(this.#rto * 2, this.#rtoMax);
    this.#ackedSinceTimeout = false;
    this.#rtoDeadline = now + this.#rto;
  }

  /**
   * Loss detection by acknowledgements (in the spirit of RACK and SACK): a
   * segment the bitmap can describe is lost when a segment sent after it was
   * acknowledged and the segment's own acknowledgement is overdue by the
   * reorder allowance (its send time + the RTT the later one saw + the
   * allowance), or at once when it was sent once and
   * {@linkcode FAST_RETRANSMIT_THRESHOLD} later seqs were acknowledged. Every
   * such hole is resent, not only the oldest; a resent segment is deemed lost
   * again only once something sent after the resend is acknowledged, so at
   * most about once per RTT. Arms the loss timer for the earliest segment not
   * yet overdue.
   *
   * @returns Whether any segment was queued for resending.
   */
  #detectLosses(now: number, top: number): boolean {
    if (!this.#peerHoles) {
      // Unacknowledged may mean held for a full inbox, not lost: leave it to the timer.
      this.#lossDeadline = Infinity;
      return false;
    }
    const allowance = this.#minRtt === Infinity
      ? MIN_REORDER_ALLOWANCE_MS
      : Math.max(MIN_REORDER_ALLOWANCE_MS, this.#minRtt / 4);
    const limit = this.#peerAck + SACK_SPAN;
    let next = Infinity;
    let found = false;
    for (const [seq, segment] of this.#unacked) {
      if (seq > limit) break;
      if (segment.queued) continue;
      if (!segment.retransmitted && seq + FAST_RETRANSMIT_THRESHOLD <= top) {
        // lost: enough later seqs arrived
      } else if (segment.xmit < this.#rackXmit) {
        const due = segment.sentAt + this.#rackRtt + allowance;
        if (now < due) {
          if (due < next) next = due;
          continue;
        }
      } else {
        continue;
      }
      this.#stats.fastRetransmits++;
      this.#queueResend(seq, segment);
      found = true;
    }
    this.#lossDeadline = next;
    return found;
  }

  /** Notes an acknowledged segment for loss detection; returns its RTT sample or -1. */
  #delivered(segment: Segment, now: number): number {
    const rtt = now - segment.sentAt;
    // An ack sooner than any RTT seen after a resend is likely for an earlier
    // copy: it says nothing about when the resend was delivered.
    if (segment.retransmitted && rtt < this.#minRtt) return -1;
    if (segment.xmit > this.#rackXmit) {
      this.#rackXmit = segment.xmit;
      this.#rackRtt = rtt;
    }
    return segment.retransmitted ? -1 : rtt;
  }

  #settleWaiters(): void {
    while (this.#waitersHead < this.#waiters.length) {
      const waiter = this.#waiters[this.#waitersHead];
      if (waiter.end - this.#admittedTotal > this.#sendBufferBytes) break;
      this.#waiters[this.#waitersHead++] = undefined as unknown as Waiter;
      waiter.done();
    }
    if (this.#waitersHead === this.#waiters.length) {
      this.#waiters.length = 0;
      this.#waitersHead = 0;
    }
  }

  #settleDeliveryWaiters(): void {
    const waiters = this.#deliveryWaiters;
    while (this.#deliveryWaitersHead < waiters.length) {
      const waiter = waiters[this.#deliveryWaitersHead];
      if (waiter.end > this.#deliveredTotal) break;
      waiters[this.#deliveryWaitersHead++] = undefined as unknown as DeliveryWaiter;
      try {
        waiter.delivered();
      } catch {
        // A sender's callback must not break the stream's ack processing.
      }
    }
    if (this.#deliveryWaitersHead === waiters.length) {
      waiters.length = 0;
      this.#deliveryWaitersHead = 0;
    }
  }

  #receiveLegacy(body: DataBody): void {
    if (body.segmentCount !== 1) {
      this.#protocolError(`legacy data has segment_count ${body.segmentCount}`);
      return;
    }
    if (this.#inbox.length - this.#inboxHead >= this.#inboxLimit) {
      this.reset(RESET_INBOX_OVERFLOW);
      return;
    }
    this.#deliver(ownBytes(body.payload));
  }

  /** Validates and applies the frame's ack fields; false if the stream ended. */
  #receiveAck(frame: RelayFrame): boolean {
    const ack = frame.ack;
    const bits = frame.ackBits >>> 0;
    if (ack === this.#peerAck && bits === 0) {
      this.#peerHoles = false;
      return true;
    }
    const highest = this.#nextSeq - 1;
    if (ack > highest) {
      this.#protocolError(`ack ${ack} is past the highest sent seq ${highest}`);
      return false;
    }
    if (bits & 1) {
      this.#protocolError("ack_bits has bit 0 set");
      return false;
    }
    const top = bits === 0 ? 0 : ack + 1 + (31 - Math.clz32(bits));
    if (top > highest) {
      this.#protocolError(`ack_bits acknowledge seq ${top} past the highest sent seq ${highest}`);
      return false;
    }
    if (ack >= this.#peerAck) this.#peerHoles = bits !== 0;
    const advanced = ack > this.#peerAck;
    const now = this.#now();
    let sample = -1;
    let freed = false;
    let sackedPassed = false;
    if (ack > this.#peerAck) {
      for (let seq = this.#peerAck + 1; seq <= ack; seq++) {
        const segment = this.#unacked.get(seq);
        if (segment === undefined) {
          const sacked = this.#sacked.get(seq);
          if (sacked !== undefined) {
            this.#sacked.delete(seq);
            this.#spanBytes -= sacked.body.payload.length;
            this.#deliveredTotal += sacked.body.payload.length;
            sackedPassed = true;
          }
          continue;
        }
        const rtt = this.#delivered(segment, now);
        if (rtt >= 0) sample = rtt;
        this.#free(seq, segment);
        this.#spanBytes -= segment.body.payload.length;
        this.#deliveredTotal += segment.body.payload.length;
        freed = true;
      }
      this.#peerAck = ack;
      this.#settleDeliveryWaiters();
    }
    if (bits !== 0) {
      for (let rest = bits >>> 1, seq = ack + 2; rest !== 0; rest >>>= 1, seq++) {
        if ((rest & 1) === 0) continue;
        const segment = this.#unacked.get(seq);
        if (segment === undefined) continue;
        const rtt = this.#delivered(segment, now);
        if (rtt >= 0) sample = rtt;
        this.#free(seq, segment);
        // Still in the window until the cumulative ack passes it: the peer holds it.
        this.#sacked.set(seq, segment);
        freed = true;
      }
    }
    // A receiver that dropped what it reported (it waited for room) says so
    // by leaving it out of a later bitmap that reports something: a bitmap
    // of 0 may as well be one holding the next seq for a full inbox, which
    // reports nothing (a lost admission `resume` is asked again instead,
    // see #receiveData).
    if (advanced && bits !== 0) this.#unsack(ack, bits, false);
    if (freed) {
      this.#ackedSinceTimeout = true;
      if (sample >= 0) this.#sampleRtt(sample);
      this.#rto = this.#rtoBase;
      this.#rtoDeadline = this.#unacked.size > 0 || this.#sacked.size > 0
        ? now + this.#rto
        : Infinity;
      this.#detectLosses(now, top > ack ? top : ack);
      this.#onOutput();
    } else if (sackedPassed) {
      if (this.#unacked.size === 0 && this.#sacked.size === 0) this.#rtoDeadline = Infinity;
      this.#onOutput(); // may have become flushed
    }
    return true;
  }

  #free(seq: number, segment: Segment): void {
    this.#unacked.delete(seq);
    this.#unackedBytes -= segment.body.payload.length;
    segment.queued = false;
  }

  #sampleRtt(rtt: number): void {
    if (this.#srtt < 0) {
      this.#srtt = rtt;
      this.#rttvar = rtt / 2;
    } else {
      this.#rttvar = 0.75 * this.#rttvar + 0.25 * Math.abs(this.#srtt - rtt);
      this.#srtt = 0.875 * this.#srtt + 0.125 * rtt;
    }
    if (rtt < this.#minRtt) this.#minRtt = rtt;
    const rto = this.#srtt + Math.max(1, 4 * this.#rttvar);
    this.#rtoBase = Math.min(this.#rtoMax, Math.max(this.#rtoMin, rto));
  }

  #queueResend(seq: number, segment: Segment): void {
    if (segment.queued) return;
    segment.queued = true;
    this.#resend.push(seq);
    // A segment selectively acked, then made unacknowledged again, leaves a
    // stale entry behind: keep the list within what could be resent.
    const pending = this.#resend.length - this.#resendHead;
    if (pending > 2 * (this.#unacked.size + this.#sacked.size) + 64) this.#compactResend();
  }

  /** Drops entries of segments no longer queued for resending, and repeats. */
  #compactResend(): void {
    const kept = new Set<number>();
    for (let i = this.#resendHead; i < this.#resend.length; i++) {
      const seq = this.#resend[i];
      const segment = this.#unacked.get(seq) ?? this.#sacked.get(seq);
      if (segment?.queued) kept.add(seq);
    }
    this.#resend = [...kept];
    this.#resendHead = 0;
  }

  #resendAll(): void {
    for (const [seq, segment] of this.#unacked) this.#queueResend(seq, segment);
    if (this.#unacked.size > 0) this.#onOutput();
  }

  /**
   * The peer may have dropped segments it had acknowledged only in
   * `ack_bits` (while waiting for budget room it holds nothing, see #drain):
   * those an ack's bitmap could report and does not are unacknowledged again,
   * in seq order, and resent. After a `resume` every such seq counts (`all`);
   * after an ack that advanced and reports something, only those its bitmap
   * covers, and not the next seq.
   */
  #unsack(ack: number, bits: number, all: boolean): void {
    if (this.#sacked.size === 0) return;
    let moved = false;
    for (const [seq, segment] of this.#sacked) {
      const bit = seq - ack - 1;
      if (bit > 0 && bit < 32 && (bits >>> bit) & 1) continue; // still held there
      if (!all && (bit === 0 || bit >= 32)) continue;
      this.#sacked.delete(seq);
      this.#unacked.set(seq, segment);
      this.#unackedBytes += segment.body.payload.length;
      this.#queueResend(seq, segment);
      moved = true;
    }
    if (!moved) return;
    this.#unacked = new Map([...this.#unacked].sort(([a], [b]) => a - b));
    this.#onOutput();
  }

  #receiveData(body: DataBody): void {
    const seq = body.seq;
    if (!Number.isNaN(this.#resumeAskedAt) && !this.#awaitingRoom) {
      if (seq > this.#recvNext) {
        this.#resumeAskedAt = Number.NaN; // the sender resends past the next seq: it was heard
      } else if (seq === this.#recvNext && this.#now() - this.#resumeAskedAt >= this.#rtoMin) {
        // Only the next seq, a timeout later: a probe, so the resume was lost.
        this.#resumePending = true;
        this.#resumeAskedAt = this.#now();
        this.#onOutput();
      }
    }
    if (seq === 0) {
      this.#protocolError("data seq 0 on a reliable stream");
      return;
    }
    if (seq < this.#recvNext || this.#held.has(seq)) {
      this.#stats.duplicatesDropped++;
      this.#ackNow();
      return;
    }
    if (seq - this.#recvNext >= this.#reorderSegments) {
      this.reset(RESET_REORDER_OVERFLOW);
      return;
    }
    if (body.segmentIndex >= seq) {
      this.#protocolError(`segment_index ${body.segmentIndex} is not below seq ${seq}`);
      return;
    }
    if (this.#awaitingRoom && seq !== this.#recvNext) {
      this.#stats.deferredDropped++;
      return;
    }
    const length = body.payload.length;
    if (this.#heldBytes + length > this.#reorderBytesLimit) {
      this.reset(RESET_REORDER_OVERFLOW);
      return;
    }
    const payload = ownBytes(body.payload);
    this.#held.set(seq, payload === body.payload ? body : { ...body, payload });
    this.#heldBytes += length;
    if (seq !== this.#recvNext) {
      this.#ackNow(); // out of order: tell the sender at once
      return;
    }
    if (!this.#drain()) return;
    if (this.#error !== undefined) return;
    if (this.#sinceAck >= this.#ackEvery) {
      this.#ackNow();
    } else if (!this.#ackDue && this.#ackDeadline === Infinity) {
      this.#ackDeadline = this.#now() + this.#ackDelayMs;
      this.#onOutput();
    }
  }

  /** Accepts held segments in order while the inbox has room; true if any was. */
  #drain(): boolean {
    let progressed = false;
    while (this.#error === undefined) {
      const seq = this.#recvNext;
      const body = this.#held.get(seq);
      if (body === undefined || this.#inboxFull()) break;
      // Asked only once the segment could be accepted: a stream whose
      // consumer stopped must not hold room it cannot use.
      if (this.#partialCount === 0 && !this.#admit(body)) {
        // Wait holding nothing: every held segment is dropped, those already
        // acknowledged in `ack_bits` too. The sender keeps those until the
        // cumulative ack passes them, and the admission's `resume` has it
        // resend everything past that ack (see #unsack); until then its
        // timeouts resend the first, which asks again.
        this.#stats.deferredDropped += this.#held.size;
        this.#held.clear();
        this.#heldBytes = 0;
        break;
      }
      this.#held.delete(seq);
      this.#heldBytes -= body.payload.length;
      this.#recvNext++;
      this.#sinceAck++;
      progressed = true;
      this.#accept(body);
    }
    return progressed;
  }

  /** Whether the inbox has no room for another message (count or bytes). */
  #inboxFull(): boolean {
    return this.#inbox.length - this.#inboxHead >= this.#inboxLimit ||
      this.#inboxBytes >= this.#inboxBytesLimit;
  }

  /**
   * What the message being reassembled still announces past its buffer's
   * size: the budget counts the buffer as held and this as expected (at
   * least a byte until the message is whole).
   */
  #partialLeft(): number {
    return Math.max(1, this.#partialExpected - this.#partial.length);
  }

  /**
   * Asks the budget for room for the message `body` starts, when it has more
   * than one segment: its announced size (segments × the first one's bytes,
   * at most the message limit). Not admitted, the stream waits (see
   * `#awaitingRoom`) and the budget calls {@linkcode retryAdmission} at its turn.
   */
  #admit(body: DataBody): boolean {
    if (this.#budget === undefined || body.segmentCount <= 1) return true;
    if (this.#admittedBytes > 0) {
      // Admitted, and begun within a second; else its room went to others.
      if (this.#now() - this.#admittedAt < STALLED_MS) return true;
      this.#admittedBytes = 0;
    }
    // An empty first segment announces nothing: count it at the largest message.
    const bytes = Math.min(body.segmentCount * body.payload.length, this.#maxMessageBytes) ||
      this.#maxMessageBytes;
    return this.#askRoom(bytes);
  }

  #askRoom(bytes: number): boolean {
    const waited = this.#awaitingRoom;
    this.#requestedBytes = bytes;
    this.#awaitingRoom = !this.#budget!.admit(this, bytes);
    if (this.#awaitingRoom) return false;
    this.#admittedBytes = bytes;
    this.#admittedAt = this.#now();
    if (waited) {
      // `resume` makes the sender resend everything unacknowledged now (what
      // was dropped while waiting), not one segment per retransmission timeout.
      this.#resumePending = true;
      this.#resumeAskedAt = this.#now();
      this.#onOutput();
    }
    return true;
  }

  #accept(body: DataBody): void {
    const payload = body.payload;
    if (this.#partialCount === 0) {
      if (body.segmentIndex !== 0) {
        this.#protocolError(`segment_index ${body.segmentIndex} starts a message`);
        return;
      }
      if (body.segmentCount === 1) {
        this.#deliver(payload);
        return;
      }
      // The first segment is kept as received, not copied: the buffer is made
      // at the next one, of the exact size when that one is the last (a
      // 64 KiB stdin write is two segments).
      this.#partialCount = body.segmentCount;
      this.#partialStartedAt = this.#now();
      this.#admittedBytes = 0;
      this.#partialExpected = Math.min(body.segmentCount * payload.length, this.#maxMessageBytes);
      this.#partial = payload;
      this.#partialBytes = payload.length;
      this.#partialActiveAt = this.#partialStartedAt;
      this.#partialIndex = 1;
      return;
    } else if (
      body.segmentCount !== this.#partialCount || body.segmentIndex !== this.#partialIndex
    ) {
      this.#protocolError(
        `segment ${body.segmentIndex}/${body.segmentCount} does not continue segment ${
          this.#partialIndex - 1
        }/${this.#partialCount}`,
      );
      return;
    }
    const total = this.#partialBytes + payload.length;
    if (total > this.#maxMessageBytes) {
      this.reset(RESET_MESSAGE_TOO_LARGE);
      return;
    }
    if (total > this.#partial.length) {
      // One buffer per message, sized exactly by the last segment. Before it,
      // an honest sender's segments are equal, so growth stops at count ×
      // first; a claim is never allocated ahead of the bytes that back it.
      const doubled = Math.max(this.#partial.length * 2, REASSEMBLY_START_BYTES);
      const target = this.#partialIndex + 1 === this.#partialCount
        ? total
        : total <= this.#partialExpected
        ? Math.min(doubled, this.#partialExpected)
        : doubled;
      const grown = new Uint8Array(Math.min(Math.max(total, target), this.#maxMessageBytes));
      grown.set(this.#partial.subarray(0, this.#partialBytes));
      this.#partial = grown;
    }
    this.#partial.set(payload, this.#partialBytes);
    this.#partialBytes = total;
    this.#partialActiveAt = this.#now();
    this.#partialIndex++;
    if (this.#partialIndex === this.#partialCount) {
      // The inbox counts the message's length: copy it out of a buffer
      // more than 1.25 times as large rather than keep the slack.
      const bytes = this.#partialBytes;
      const message = this.#partial.length * 4 > bytes * 5
        ? this.#partial.slice(0, bytes)
        : this.#partial.subarray(0, bytes);
      this.#partial = EMPTY;
      this.#partialIndex = 0;
      this.#partialCount = 0;
      this.#partialBytes = 0;
      this.#partialExpected = 0;
      this.#deliver(message);
    }
  }

  #deliver(message: Uint8Array): void {
    if (this.#discarding) return;
    this.#inbox.push(message);
    this.#inboxBytes += message.length;
    this.#onReadable();
  }

  #ackNow(): void {
    if (this.#mode !== "reliable") return;
    this.#ackDeadline = Infinity;
    if (!this.#ackDue) {
      this.#ackDue = true;
      this.#onOutput();
    }
  }

  #protocolError(detail: string): void {
    if (this.#error !== undefined) return;
    this.#resetReason = RESET_PROTOCOL_ERROR;
    const cause = new ProtocolError(`Cannot accept frame on stream ${this.id}: ${detail}`);
    this.#finish(new StreamResetError(RESET_PROTOCOL_ERROR, { cause }), true);
  }

  #finish(error: Error, sendReset: boolean): void {
    this.#error = error;
    this.#resetPending = sendReset;
    this.#resetSent = sendReset;
    this.#resumePending = false;
    this.#queue = [];
    this.#queueHead = 0;
    this.#unacked.clear();
    this.#unackedBytes = 0;
    this.#sacked.clear();
    this.#spanBytes = 0;
    this.#lossDeadline = Infinity;
    this.#resend = [];
    this.#resendHead = 0;
    this.#held.clear();
    this.#heldBytes = 0;
    this.#partial = EMPTY;
    this.#partialIndex = 0;
    this.#partialCount = 0;
    this.#partialBytes = 0;
    this.#partialExpected = 0;
    this.#admittedBytes = 0;
    this.#awaitingRoom = false;
    this.#budget?.leave(this);
    this.#ackDue = false;
    this.#ackDeadline = Infinity;
    this.#rtoDeadline = Infinity;
    const waiters = this.#waiters;
    const head = this.#waitersHead;
    this.#waiters = [];
    this.#waitersHead = 0;
    for (let i = head; i < waiters.length; i++) waiters[i].done(error);
    this.#deliveryWaiters = [];
    this.#deliveryWaitersHead = 0;
    this.#reportHeld();
    this.#onReadable();
    if (sendReset) this.#onOutput();
    else this.#notifyEnd();
  }

  /**
   * Tells the budget what this stream holds for its consumer now: held
   * segments, whole messages, and the buffer of the message being
   * reassembled (its size, not just the bytes received so far).
   */
  #reportHeld(): void {
    if (this.#budget === undefined) return;
    if (this.#held.size === 0 || this.#held.has(this.#recvNext)) {
      this.#gapSince = Number.NaN;
    } else if (Number.isNaN(this.#gapSince) || this.#gapAt !== this.#recvNext) {
      this.#gapSince = this.#now();
      this.#gapAt = this.#recvNext;
    }
    // The consumer is left waiting on only while it has a whole message to
    // read: segments held behind a gap wait for the sender, not for it.
    if (this.#inboxHead === this.#inbox.length) this.#waitingSince = Number.NaN;
    else if (Number.isNaN(this.#waitingSince)) this.#waitingSince = this.#now();
    const held = this.#heldBytes + this.#inboxBytes + this.#partial.length;
    const expected = this.#partialCount > 0 ? this.#partialLeft() : this.#admittedBytes;
    if (held === this.#budgeted && expected === this.#budgetedExpected) return;
    this.#budgeted = held;
    this.#budgetedExpected = expected;
    this.#budget.hold(this, held, expected);
  }

  #notifyEnd(): void {
    if (this.#endNotified) return;
    this.#endNotified = true;
    this.#onEnd();
  }
}
