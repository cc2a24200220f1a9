/**
 * The rendezvous router: forwards relay frames by `stream_id` between one
 * executor socket per executor id and many harness sockets. It reads only a
 * frame's `stream_id`, its body kind (reset, resume, data) and the seq of a
 * stream's first data frame or the `next_seq` of a resume from the harness
 * (0 marks a Codex v1 legacy stream), and forwards the bytes it received untouched; it never acks,
 * retries, reorders or reassembles (the endpoints do, see PROTOCOL.md).
 *
 * Ownership: a stream belongs to the harness socket that first sent a frame
 * for it. When a socket goes away its streams are parked for the detach
 * window; a returning socket of the same party takes them back by sending
 * frames for them (e.g. `resume`), and when the window passes the other side
 * gets a reset naming why.
 *
 * Takeover: a harness often reconnects before the router has seen its old
 * socket go (a close still in flight, or a half-open socket after a network
 * drop that lingers until the ping timeout). So a `resume` for a stream owned
 * by another, still-open harness socket of the same executor id moves the
 * stream to the resuming socket; the old socket loses it, and frames it sends
 * for the stream afterwards get `reset{stream_in_use}`. Any other frame from
 * a non-owner (data, ack, heartbeat) gets `stream_in_use` as before, and its
 * resets are dropped. This does not widen who can act: every harness socket
 * authenticates with the same bearer token, and whoever holds it can already
 * open its own sessions on that executor and do everything a session can;
 * a party without the token cannot attach a harness socket at all. (A
 * takeover also needs the stream id, a random UUIDv4 from our harness.)
 *
 * Everything is bounded: executors, harness sockets
 * per executor, streams per executor, frame size, frames held for an offline
 * executor, and each socket's outbound queue (a socket that stays behind is
 * dropped, never buffered without end). The queues count each frame as its
 * length plus {@linkcode ROUTER_FRAME_OVERHEAD_BYTES}, so tiny frames cannot
 * hold far more memory than the byte limits say. Those bounds are per socket
 * and per id; their sum has a bound of its own: all queues (a socket's
 * unread received frames too, when it was given {@linkcode
 * RelayRouter.queueBudget}) share one budget
 * ({@linkcode RelayRouterOptions.queueBudgetBytes}), and past it the socket
 * or offline queue holding the most is dropped. What a WebSocket has taken
 * to send (up to its high water mark) and the kernel's buffers are outside it.
 *
 * Shedding: one harness socket may carry many busy reliable streams, each
 * with up to a send window (2 MiB) in flight, more in sum than a queue
 * holds when the harness reads slower than the executor writes. Dropping
 * the socket would end every session on it. So once a harness socket's
 * queue is past half of `maxPeerQueueBytes`, the executor's data frames on
 * its reliable streams are dropped instead, as a lossy network would, and
 * their senders resend them; acks, resets and legacy streams' data (nothing
 * resends those) still queue up to the full bound.
 *
 * @module
 */

import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, resetFrame } from "../relay/frame_codec.ts";
import type { ReceivedFrame, RelaySocket } from "../relay/relay_socket.ts";
import { type BudgetHolder, ByteBudget } from "../_byte_budget.ts";
import { checkTimerMs } from "../_limits.ts";
import {
  RESET_EXECUTOR_DISCONNECTED,
  RESET_EXECUTOR_OFFLINE,
  RESET_HARNESS_DISCONNECTED,
  RESET_MESSAGE_TOO_LARGE,
  RESET_STREAM_IN_USE,
  RESET_TOO_MANY_STREAMS,
  RESET_UNKNOWN_STREAM,
} from "./reset_reasons.ts";

/** Close reason of an executor socket replaced by a newer one for the same id. */
export const CLOSE_REPLACED = "replaced";
/** Close reason of a socket that stayed behind on its outbound frames. */
export const CLOSE_SLOW_PEER = "slow_peer";
/** Close reason of every socket when the router shuts down. */
export const CLOSE_SHUTDOWN = "shutdown";
/**
 * Close reason of the socket queueing the most when the router's queue
 * budget ran out (see {@linkcode RelayRouterOptions.queueBudgetBytes}).
 */
export const CLOSE_OVER_BUDGET = "over_budget";

/** WebSocket close code for {@linkcode CLOSE_REPLACED} (application range). */
export const CLOSE_CODE_REPLACED = 4000;
/** WebSocket close code for {@linkcode CLOSE_SLOW_PEER} (application range). */
export const CLOSE_CODE_SLOW_PEER = 4001;
/** WebSocket close code for {@linkcode CLOSE_OVER_BUDGET} (application range). */
export const CLOSE_CODE_OVER_BUDGET = 4002;
/** WebSocket close code for {@linkcode CLOSE_SHUTDOWN} (going away). */
export const CLOSE_CODE_SHUTDOWN = 1001;

/**
 * What the router charges each queued frame on top of its length, against
 * every queue limit and watermark. A queued frame costs far more than its
 * bytes (about 220 bytes of heap for the Uint8Array, its ArrayBuffer and the
 * queue slot, measured in Deno 2); without this charge a flood of 7-byte
 * heartbeats held 400 MiB under a 16 MiB limit.
 */
export const ROUTER_FRAME_OVERHEAD_BYTES = 256;

/** A frame's charge against the queue limits: its length plus the per-frame overhead. */
function chargeOf(bytes: Uint8Array): number {
  return bytes.length + ROUTER_FRAME_OVERHEAD_BYTES;
}

type Timer = ReturnType<typeof setTimeout>;

/** Which party a socket speaks for. */
export type RouterRole = "executor" | "harness";

/** Something the router did, for logs and metrics. Never carries payloads or credentials. */
export type RouterEvent =
  | { type: "executor_attached"; executorId: string; replaced: boolean }
  | { type: "executor_detached"; executorId: string }
  | { type: "executor_expired"; executorId: string; streams: number }
  | { type: "harness_attached"; executorId: string; harnessSockets: number }
  | { type: "harness_detached"; executorId: string; parkedStreams: number }
  | { type: "streams_expired"; executorId: string; streams: number }
  | { type: "streams_not_resumed"; executorId: string; streams: number }
  | { type: "peer_dropped"; executorId: string; role: RouterRole; reason: string }
  | { type: "frames_dropped"; executorId: string; reason: string };

/** Limits and timing of the rendezvous' router (`RelayRouter`); every field is optional. */
export interface RelayRouterOptions {
  /**
   * How long a departed socket's streams stay parked, waiting for it to
   * return, in milliseconds.
   * @default {30000}
   */
  detachWindowMs?: number;
  /**
   * Most executor ids routed at once (connected, or with parked streams).
   * @default {1024}
   */
  maxExecutors?: number;
  /**
   * Most harness sockets per executor id.
   * @default {64}
   */
  maxHarnessSockets?: number;
  /**
   * Most streams per executor id, parked ones included; past it a new
   * stream gets reset `too_many_streams`.
   * @default {4096}
   */
  maxStreams?: number;
  /**
   * Most streams one harness socket may own; taking back its own parked
   * streams is always allowed.
   * @default {1024}
   */
  maxStreamsPerHarness?: number;
  /**
   * Streams every harness socket may own even when the executor is at
   * `maxStreams`, so one busy harness cannot lock the others out. The router
   * then holds at most `maxStreams + maxHarnessSockets * reservedStreamsPerHarness`
   * streams per executor id.
   * @default {4}
   */
  reservedStreamsPerHarness?: number;
  /**
   * Largest frame forwarded, in bytes (the sockets should enforce it too).
   * @default {262144}
   */
  maxFrameBytes?: number;
  /**
   * Bytes waiting for one socket (queued plus the socket's own buffer) above
   * which the socket counts as behind. Harness sockets wait while the
   * executor is behind (backpressure); the executor never waits for a harness.
   * Queued frames count as their length plus {@linkcode ROUTER_FRAME_OVERHEAD_BYTES}.
   * @default {1048576}
   */
  peerHighWaterBytes?: number;
  /**
   * Bytes queued for one socket past which it is dropped at once; each frame
   * counts as its length plus {@linkcode ROUTER_FRAME_OVERHEAD_BYTES}. The
   * executor's data on a harness socket's reliable streams is shed instead
   * of queued past half of it (see the module doc).
   * @default {16777216}
   */
  maxPeerQueueBytes?: number;
  /**
   * How long a socket may stay over the high water mark while draining
   * nothing before it is dropped (closed `slow_peer`), in milliseconds.
   * @default {15000}
   */
  slowPeerTimeoutMs?: number;
  /**
   * Bytes of harness frames held per executor id while its executor is away
   * (within the detach window); they are delivered in order when it returns.
   * Each frame counts as its length plus {@linkcode ROUTER_FRAME_OVERHEAD_BYTES}.
   * Past the bound frames are dropped (reported as `frames_dropped`):
   * reliable streams recover them by retransmission and resume.
   * @default {4194304}
   */
  maxOfflineQueueBytes?: number;
  /**
   * Bytes all queues together may hold: every socket's outbound queue, the
   * frames held for offline executors, and, for sockets given
   * `RelayRouter.queueBudget` (the rendezvous does), their
   * received frames not yet routed. The per-socket and per-id bounds above
   * would otherwise add up over every socket and id. Past it the socket (or
   * offline queue) holding the most is dropped (closed
   * {@linkcode CLOSE_OVER_BUDGET}; an offline queue's frames are dropped and
   * reported as `frames_dropped`) until the sum is back within it. At least
   * `maxPeerQueueBytes`.
   * @default {1073741824}
   */
  queueBudgetBytes?: number;
  /**
   * For this long after the router starts, a harness stream for an executor
   * id that has no executor socket is held for the detach window (as if the
   * executor were reconnecting) instead of being reset `executor_offline`, so
   * sessions survive a restart of the rendezvous. 0 turns this off.
   * `serveRendezvous` sets it to the detach window by default (see there for
   * the trade-off); a bare router answers unknown ids at once.
   * @default {0}
   */
  startupGraceMs?: number;
  /** Receives an event for every attach, detach, expiry and drop. */
  onEvent?: (event: RouterEvent) => void;
}

/** A snapshot of what the router holds: counts of ids, sockets and streams (not bytes). */
export interface RelayRouterStats {
  /** Executor ids routed (connected or with parked streams). */
  executors: number;
  /** Connected executor sockets. */
  executorSockets: number;
  /** Connected harness sockets. */
  harnessSockets: number;
  /** Routed streams, parked ones included. */
  streams: number;
  /** Streams whose harness socket is away. */
  parkedStreams: number;
}

/** Streams parked together (one departed socket), and the timer that expires them. */
interface Parking {
  timer: Timer | undefined;
  /** Its streams still parked; the timer is cleared when none is left. */
  streams: number;
}

/** A stream's route: its owning harness socket, or none while parked. */
interface Route {
  owner: Peer | undefined;
  /** The parking that a window timer may expire. */
  parking: Parking | undefined;
  /**
   * Set when a new executor socket arrives: cleared by the first frame the
   * executor sends for the stream (a reconnecting executor resumes every
   * stream at once); still set when the window ends, the stream is gone.
   */
  unconfirmed?: boolean;
  /** The harness sent data for it while the executor was away (held for it, to be answered). */
  heldWhileAway?: boolean;
  /**
   * Set by the harness's first data frame or resume: true for a reliable
   * stream (seq or next_seq 1 and up), whose data may be shed when its
   * harness falls behind; false for a legacy one (0), whose data nothing
   * would resend.
   */
  reliable?: boolean;
}

/** Everything routed for one executor id. */
interface Site {
  readonly id: string;
  executor: Peer | undefined;
  /** An executor was here and its detach window has not passed. */
  executorAway: boolean;
  /**
   * The wait began in the startup grace with no executor seen since: past
   * the grace, new streams are answered `executor_offline` at once, while
   * those held go on waiting their window.
   */
  graceWait: boolean;
  executorTimer: Timer | undefined;
  /** Ends the window in which a newly attached executor must resume the routed streams. */
  confirmTimer: Timer | undefined;
  readonly harnesses: Set<Peer>;
  readonly routes: Map<string, Route>;
  offline: Uint8Array[];
  /** What `offline` is charged: each frame's length plus {@linkcode ROUTER_FRAME_OVERHEAD_BYTES}. */
  offlineCharge: number;
  offlineOverflowReported: boolean;
  /** What reports `offlineCharge` to the router's queue budget. */
  readonly offlineHolder: BudgetHolder;
  /** Pending harness-parking timers. */
  readonly parkTimers: Set<Timer>;
  /**
   * Streams this rendezvous ended (a harness reset, a parked stream that
   * expired, one the executor did not resume), newest last, at most
   * {@linkcode MAX_ENDED_STREAMS}: an executor frame sent before it saw the
   * end is answered with `reset{unknown_stream}` instead of parking the
   * stream again for a detach window.
   */
  readonly ended: Set<string>;
}

/** Numbers peers in the order their sockets were attached (see `Peer.serial`). */
let peerSerial = 0;

/** One socket and its bounded outbound queue. */
class Peer implements BudgetHolder {
  readonly role: RouterRole;
  readonly socket: RelaySocket;
  readonly site: Site;
  /** Attach order: a larger serial is a newer socket. */
  readonly serial = ++peerSerial;
  /** Streams this harness socket owns. */
  readonly streams = new Set<string>();
  /** What the queue is charged: each frame's length plus {@linkcode ROUTER_FRAME_OVERHEAD_BYTES}. */
  queuedCharge = 0;
  overSince = 0;
  /**
   * Data frames are being shed for this harness socket: set by the first
   * frame shed (reported then), cleared by the slow-peer check once the
   * queue is under a quarter of its bound, so one episode is reported once.
   */
  shedding = false;
  /** A frame was handed to the socket since the last slow-peer check. */
  sentSinceCheck = false;
  /** No more frames go to or come from this socket. */
  dead = false;
  /** The router has cleaned up after this socket. */
  gone = false;
  #queue: Uint8Array[] = [];
  #head = 0;
  #pumping = false;
  #lowWater: number;
  #drain: PromiseWithResolvers<void> | undefined;
  #onSendFailure: (peer: Peer) => void;
  #budget: ByteBudget;
  /** The charge of the frame the socket is sending now (0 between sends). */
  #inFlight = 0;
  #onShed: (peer: Peer) => void;

  constructor(
    role: RouterRole,
    socket: RelaySocket,
    site: Site,
    lowWater: number,
    budget: ByteBudget,
    onSendFailure: (peer: Peer) => void,
    onShed: (peer: Peer) => void,
  ) {
    this.role = role;
    this.socket = socket;
    this.site = site;
    this.#lowWater = lowWater;
    this.#budget = budget;
    this.#onSendFailure = onSendFailure;
    this.#onShed = onShed;
  }

  /**
   * The router's queue budget ran out and this queue held the most: the
   * queue goes at once, the socket a moment later (`onShed`), since the
   * router may be in the middle of routing when the budget sheds.
   */
  shed(): void {
    if (this.dead) return;
    this.kill();
    this.#onShed(this);
  }

  /** Bytes waiting for this socket: the queue's charge plus the socket's buffer. */
  get pendingBytes(): number {
    return this.queuedCharge + this.socket.bufferedAmount;
  }

  enqueue(bytes: Uint8Array): void {
    if (this.dead) return;
    this.#queue.push(bytes);
    this.queuedCharge += chargeOf(bytes);
    this.#budget.hold(this, this.queuedCharge + this.#inFlight);
    if (this.dead) return; // shed: the frame went with the queue
    if (!this.#pumping) this.#pump();
  }

  /** Resolves once the queue is under the low water mark or the peer is dead. */
  drained(): Promise<void> {
    if (this.dead || this.queuedCharge <= this.#lowWater) return Promise.resolve();
    this.#drain ??= Promise.withResolvers<void>();
    return this.#drain.promise;
  }

  kill(): void {
    if (this.dead) return;
    this.dead = true;
    this.#queue = [];
    this.#head = 0;
    this.queuedCharge = 0;
    this.#budget.hold(this, 0);
    this.#releaseDrain();
  }

  #releaseDrain(): void {
    const drain = this.#drain;
    if (drain !== undefined) {
      this.#drain = undefined;
      drain.resolve();
    }
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      while (!this.dead && this.#head < this.#queue.length) {
        const bytes = this.#queue[this.#head];
        this.#queue[this.#head++] = EMPTY;
        if (this.#head >= 1024 && this.#head * 2 >= this.#queue.length) {
          this.#queue.splice(0, this.#head);
          this.#head = 0;
        }
        const charge = chargeOf(bytes);
        this.queuedCharge -= charge;
        // The frame in the socket's hands still counts against the budget until it is sent.
        this.#inFlight = charge;
        this.#budget.hold(this, this.queuedCharge + charge);
        this.sentSinceCheck = true;
        if (this.#drain !== undefined && this.queuedCharge <= this.#lowWater) this.#releaseDrain();
        await this.socket.sendBytes(bytes);
        // The next turn (or `finally`, once the queue is empty) reports it sent.
        this.#inFlight = 0;
      }
    } catch {
      if (!this.dead) this.#onSendFailure(this);
    } finally {
      this.#inFlight = 0;
      if (!this.dead) this.#budget.hold(this, this.queuedCharge);
      this.#pumping = false;
      if (this.#head >= this.#queue.length) {
        this.#queue.length = 0;
        this.#head = 0;
      }
    }
  }
}

const EMPTY = new Uint8Array(0);
/**
 * How long streams for an executor that closed its socket `shutdown` wait for
 * it to come back (a restart) before `executor_offline`: 5 s, under a
 * harness's 10 s connect timeout.
 */
export const SHUTDOWN_WAIT_MS = 5_000;

/** Ended streams remembered per executor id (see `Site.ended`): late frames come within a round trip. */
const MAX_ENDED_STREAMS = 1024;

function positive(value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v <= 0) {
    throw new RangeError(`Cannot create router: ${name} must be a positive number, got ${v}`);
  }
  return v;
}

/** A {@linkcode positive} option that becomes a timer's delay: 1 ms to `MAX_TIMER_MS`. */
function timerOption(value: number | undefined, fallback: number, name: string): number {
  return checkTimerMs("Cannot create router", name, value ?? fallback, 1);
}

function resetBytes(streamId: string, reason: string): Uint8Array {
  return encodeFrame(resetFrame(streamId, reason));
}

/**
 * Routes relay frames between executor and harness sockets by `stream_id`.
 *
 * @example Route the sockets of a rendezvous
 * ```ts ignore
 * import { RelayRouter } from "./relay_router.ts";
 * import { RelaySocket } from "../relay/relay_socket.ts";
 * const router = new RelayRouter({ detachWindowMs: 30_000 });
 * Deno.serve((req) => {
 *   const { socket, response } = Deno.upgradeWebSocket(req);
 *   router.addExecutor("exec-1", RelaySocket.accept(socket));
 *   return response;
 * });
 * ```
 */
export class RelayRouter implements AsyncDisposable {
  #detachWindowMs: number;
  #maxExecutors: number;
  #maxHarnessSockets: number;
  #maxStreams: number;
  #maxStreamsPerHarness: number;
  #reservedStreams: number;
  #maxFrameBytes: number;
  #highWater: number;
  #maxQueue: number;
  #slowMs: number;
  #maxOffline: number;
  #budget: ByteBudget;
  #onEvent: ((event: RouterEvent) => void) | undefined;
  #sites = new Map<string, Site>();
  #peers = new Set<Peer>();
  #loops = new Set<Promise<void>>();
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #closing = false;
  #startedAt = performance.now();
  #startupGraceMs: number;
  #closed = Promise.withResolvers<void>();

  /**
   * Creates a router.
   *
   * @param options Limits, detach window and event sink.
   * @throws {RangeError} When a limit is not a positive number.
   */
  constructor(options: RelayRouterOptions = {}) {
    this.#detachWindowMs = timerOption(options.detachWindowMs, 30_000, "detachWindowMs");
    this.#maxExecutors = positive(options.maxExecutors, 1024, "maxExecutors");
    this.#maxHarnessSockets = positive(options.maxHarnessSockets, 64, "maxHarnessSockets");
    this.#maxStreams = positive(options.maxStreams, 4096, "maxStreams");
    this.#maxStreamsPerHarness = positive(
      options.maxStreamsPerHarness,
      Math.min(this.#maxStreams, 1024),
      "maxStreamsPerHarness",
    );
    this.#reservedStreams = options.reservedStreamsPerHarness ?? 4;
    if (!Number.isInteger(this.#reservedStreams) || this.#reservedStreams < 0) {
      throw new RangeError(
        `Cannot create router: reservedStreamsPerHarness must be a non-negative integer, got ${this.#reservedStreams}`,
      );
    }
    this.#maxFrameBytes = positive(
      options.maxFrameBytes,
      DEFAULT_MAX_FRAME_BYTES,
      "maxFrameBytes",
    );
    this.#highWater = positive(options.peerHighWaterBytes, 1 << 20, "peerHighWaterBytes");
    this.#maxQueue = positive(options.maxPeerQueueBytes, 16 << 20, "maxPeerQueueBytes");
    this.#slowMs = timerOption(options.slowPeerTimeoutMs, 15_000, "slowPeerTimeoutMs");
    this.#maxOffline = positive(options.maxOfflineQueueBytes, 4 << 20, "maxOfflineQueueBytes");
    const budgetBytes = positive(options.queueBudgetBytes, 1 << 30, "queueBudgetBytes");
    if (!Number.isSafeInteger(budgetBytes) || budgetBytes < this.#maxQueue) {
      throw new RangeError(
        `Cannot create router: queueBudgetBytes ${budgetBytes} is not an integer of at least maxPeerQueueBytes (${this.#maxQueue})`,
      );
    }
    this.#budget = new ByteBudget(budgetBytes);
    this.#startupGraceMs = options.startupGraceMs ?? 0;
    if (!Number.isFinite(this.#startupGraceMs) || this.#startupGraceMs < 0) {
      throw new RangeError(
        `Cannot create router: startupGraceMs must be a non-negative number, got ${this.#startupGraceMs}`,
      );
    }
    this.#onEvent = options.onEvent;
  }

  /**
   * The budget all queues share. Give it to each socket's
   * `RelaySocketOptions.budget` so that frames received and not yet routed
   * count too (the rendezvous does).
   */
  get queueBudget(): ByteBudget {
    return this.#budget;
  }

  /** Settles once {@linkcode RelayRouter.close} has closed every socket. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  /**
   * Says whether a socket of this role for this executor id would be
   * admitted now, so a server can refuse it before the WebSocket upgrade.
   *
   * @param role The socket's role.
   * @param executorId The executor id.
   * @returns undefined when admitted, else a reason: "shutdown",
   * "too_many_executors" or "too_many_harness_sockets".
   */
  admits(role: RouterRole, executorId: string): string | undefined {
    if (this.#closing) return "shutdown";
    const site = this.#sites.get(executorId);
    if (site === undefined) {
      return this.#sites.size >= this.#maxExecutors ? "too_many_executors" : undefined;
    }
    if (role === "harness" && site.harnesses.size >= this.#maxHarnessSockets) {
      return "too_many_harness_sockets";
    }
    return undefined;
  }

  /**
   * Attaches the executor socket for an executor id. A previous executor
   * socket for the same id is closed (`replaced`); routes and parked streams
   * carry over to the new one, and frames held while the executor was away
   * are sent to it first.
   *
   * @param executorId The executor id.
   * @param socket The executor's relay socket (from `RelaySocket.accept`).
   * @throws {RangeError} When the executor limit is reached or the router is closed;
   * the socket is closed first.
   */
  addExecutor(executorId: string, socket: RelaySocket): void {
    const site = this.#admit("executor", executorId, socket);
    const peer = this.#newPeer("executor", socket, site);
    const previous = site.executor;
    const returning = previous !== undefined || site.executorAway;
    site.executor = peer;
    if (previous !== undefined) this.#dropPeer(previous, CLOSE_REPLACED, CLOSE_CODE_REPLACED);
    if (site.executorTimer !== undefined) {
      clearTimeout(site.executorTimer);
      site.executorTimer = undefined;
    }
    site.executorAway = false;
    site.graceWait = false;
    // The socket may come from the same executor (it resumes every stream at
    // once) or from a restarted one that knows none of them: a harness
    // waiting on such a stream would wait forever, so streams the executor
    // has not spoken for within the detach window are reset.
    // A stream with data held for the executor needs no check: the executor
    // answers it (or resets the stream), and so does the harness learn.
    if (returning && site.routes.size > 0) {
      let unconfirmed = 0;
      for (const route of site.routes.values()) {
        route.unconfirmed = route.heldWhileAway ? undefined : true;
        route.heldWhileAway = undefined;
        if (route.unconfirmed) unconfirmed++;
      }
      clearTimeout(site.confirmTimer);
      site.confirmTimer = unconfirmed > 0
        ? setTimeout(() => this.#confirmExpired(site), this.#detachWindowMs)
        : undefined;
    }
    const held = site.offline;
    this.#clearOffline(site);
    site.offlineOverflowReported = false;
    for (const bytes of held) peer.enqueue(bytes);
    this.#emit({ type: "executor_attached", executorId, replaced: previous !== undefined });
    this.#track(this.#readPeer(peer));
  }

  /**
   * Attaches a harness socket for an executor id.
   *
   * @param executorId The executor id the harness wants to reach.
   * @param socket The harness's relay socket (from `RelaySocket.accept`).
   * @throws {RangeError} When the executor or harness socket limit is reached or
   * the router is closed; the socket is closed first.
   */
  addHarness(executorId: string, socket: RelaySocket): void {
    const site = this.#admit("harness", executorId, socket);
    const peer = this.#newPeer("harness", socket, site);
    site.harnesses.add(peer);
    this.#emit({ type: "harness_attached", executorId, harnessSockets: site.harnesses.size });
    this.#track(this.#readPeer(peer));
  }

  /**
   * Counts what the router holds.
   *
   * @returns The counts.
   */
  stats(): RelayRouterStats {
    let executorSockets = 0;
    let harnessSockets = 0;
    let streams = 0;
    let parkedStreams = 0;
    for (const site of this.#sites.values()) {
      if (site.executor !== undefined) executorSockets++;
      harnessSockets += site.harnesses.size;
      streams += site.routes.size;
      for (const route of site.routes.values()) if (route.owner === undefined) parkedStreams++;
    }
    return { executors: this.#sites.size, executorSockets, harnessSockets, streams, parkedStreams };
  }

  /**
   * Closes every socket (`shutdown`), forgets every route and stops every
   * timer. Idempotent.
   *
   * @returns Once every socket's reader has finished.
   */
  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      for (const site of this.#sites.values()) {
        if (site.executorTimer !== undefined) clearTimeout(site.executorTimer);
        clearTimeout(site.confirmTimer);
        for (const timer of site.parkTimers) clearTimeout(timer);
        site.parkTimers.clear();
        site.executorTimer = undefined;
        site.confirmTimer = undefined;
      }
      const closing: Promise<unknown>[] = [];
      for (const peer of this.#peers) {
        peer.kill();
        closing.push(peer.socket.close(CLOSE_SHUTDOWN, CLOSE_CODE_SHUTDOWN));
      }
      await Promise.allSettled(closing);
      while (this.#loops.size > 0) await Promise.allSettled([...this.#loops]);
      for (const site of this.#sites.values()) this.#clearOffline(site);
      this.#sites.clear();
      this.#stopWatchdog();
      this.#closed.resolve();
    }
    await this.#closed.promise;
  }

  /** Same as {@linkcode RelayRouter.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #emit(event: RouterEvent): void {
    if (this.#onEvent === undefined) return;
    try {
      this.#onEvent(event);
    } catch {
      // An event sink must not break routing.
    }
  }

  #track(loop: Promise<void>): void {
    this.#loops.add(loop);
    loop.finally(() => this.#loops.delete(loop));
  }

  #admit(role: RouterRole, executorId: string, socket: RelaySocket): Site {
    const refusal = this.admits(role, executorId);
    if (refusal !== undefined) {
      socket.close(refusal, 1008).catch(() => {});
      throw new RangeError(`Cannot attach ${role} socket for ${executorId}: ${refusal}`);
    }
    let site = this.#sites.get(executorId);
    if (site === undefined) {
      const created: Site = {
        id: executorId,
        executor: undefined,
        executorAway: false,
        graceWait: false,
        executorTimer: undefined,
        confirmTimer: undefined,
        harnesses: new Set(),
        routes: new Map(),
        offline: [],
        offlineCharge: 0,
        offlineOverflowReported: false,
        offlineHolder: { shed: () => this.#shedOffline(created) },
        parkTimers: new Set(),
        ended: new Set(),
      };
      site = created;
      this.#sites.set(executorId, site);
    }
    return site;
  }

  #clearOffline(site: Site): void {
    site.offline = [];
    site.offlineCharge = 0;
    this.#budget.hold(site.offlineHolder, 0);
  }

  /** The queue budget ran out and this offline queue held the most: drop its frames. */
  #shedOffline(site: Site): void {
    this.#clearOffline(site);
    this.#emit({ type: "frames_dropped", executorId: site.id, reason: "over_budget" });
  }

  #newPeer(role: RouterRole, socket: RelaySocket, site: Site): Peer {
    const peer = new Peer(
      role,
      socket,
      site,
      this.#highWater / 2,
      this.#budget,
      (p) => {
        // The socket closed under a pending send; its reader loop cleans up.
        p.kill();
        p.socket.close().catch(() => {});
      },
      (p) => queueMicrotask(() => this.#closeDropped(p, CLOSE_OVER_BUDGET, CLOSE_CODE_OVER_BUDGET)),
    );
    // The socket shed its own unread frames (given `queueBudget`): drop the peer with them.
    socket.onShed = () => peer.shed();
    socket.onOversizedFrame = (streamId) => {
      if (!peer.dead) this.#oversize(peer, streamId);
    };
    this.#peers.add(peer);
    this.#startWatchdog();
    return peer;
  }

  /** Closes a socket on the router's initiative; its reader loop then cleans up. */
  #dropPeer(peer: Peer, reason: string, code: number): void {
    if (peer.dead) return;
    peer.kill();
    this.#closeDropped(peer, reason, code);
  }

  /** Reports, closes and forgets a socket whose queue was killed. */
  #closeDropped(peer: Peer, reason: string, code: number): void {
    if (peer.gone) return;
    if (reason !== CLOSE_REPLACED) {
      this.#emit({ type: "peer_dropped", executorId: peer.site.id, role: peer.role, reason });
    }
    peer.socket.close(reason, code).catch(() => {});
    // Do not wait for a stalled peer's closing handshake: it is gone now.
    this.#peerGone(peer);
  }

  /**
   * Queues bytes for a harness socket, dropping the socket when it is too far
   * behind; `sheddable` (reliable data) that would take it past half the
   * bound is dropped instead.
   */
  #toHarness(peer: Peer, bytes: Uint8Array, sheddable = false): void {
    if (sheddable && peer.queuedCharge + chargeOf(bytes) > this.#maxQueue / 2) {
      if (!peer.shedding && !peer.dead) {
        peer.shedding = true;
        this.#emit({ type: "frames_dropped", executorId: peer.site.id, reason: "harness_behind" });
      }
      return;
    }
    peer.enqueue(bytes);
    if (peer.queuedCharge > this.#maxQueue) {
      this.#dropPeer(peer, CLOSE_SLOW_PEER, CLOSE_CODE_SLOW_PEER);
    }
  }

  /** Queues bytes for the executor, or holds them while it is away within its window. */
  #toExecutor(site: Site, bytes: Uint8Array): void {
    const executor = site.executor;
    if (executor !== undefined) {
      executor.enqueue(bytes);
      if (executor.queuedCharge > this.#maxQueue) {
        this.#dropPeer(executor, CLOSE_SLOW_PEER, CLOSE_CODE_SLOW_PEER);
      }
      return;
    }
    if (!site.executorAway) return;
    const charge = chargeOf(bytes);
    if (site.offlineCharge + charge > this.#maxOffline) {
      if (!site.offlineOverflowReported) {
        site.offlineOverflowReported = true;
        this.#emit({ type: "frames_dropped", executorId: site.id, reason: "offline_queue_full" });
      }
      return;
    }
    site.offline.push(bytes);
    site.offlineCharge += charge;
    this.#budget.hold(site.offlineHolder, site.offlineCharge);
  }

  /**
   * Routes a socket's frames until it ends, then cleans up after it. A
   * harness waits while the executor is behind (backpressure); the executor
   * never waits for a harness.
   */
  async #readPeer(peer: Peer): Promise<void> {
    const site = peer.site;
    const fromExecutor = peer.role === "executor";
    try {
      for await (const frame of peer.socket) {
        if (peer.dead) break;
        if (frame.bytes.length > this.#maxFrameBytes) {
          this.#oversize(peer, frame.streamId);
          continue;
        }
        if (fromExecutor) {
          this.#routeFromExecutor(site, frame);
          continue;
        }
        if (!this.#routeFromHarness(site, peer, frame)) continue;
        const executor = site.executor;
        if (executor !== undefined && executor.queuedCharge > this.#highWater) {
          await executor.drained();
        }
      }
    } catch {
      // The socket failed; treat it as gone.
    } finally {
      // Nobody reads this socket again: what it still holds goes (and stops counting).
      peer.socket.dropUnread();
      this.#peerGone(peer);
    }
  }

  #routeFromExecutor(site: Site, frame: ReceivedFrame): void {
    const streamId = frame.streamId;
    const isReset = frame.body.kind === "reset";
    const route = site.routes.get(streamId);
    if (route === undefined) {
      // Nothing to end; and a reset is never answered (nor does the executor
      // answer ours), so the answer below cannot loop.
      if (isReset) return;
      if (site.ended.has(streamId)) {
        // Not parked again, but answered: the reset that ended it may never
        // have reached the executor (dropped past the offline queue bound, or
        // queued on a socket that died), and the executor would hold the
        // stream forever. `unknown_stream`: the router holds no state for it
        // any more (the first reset's reason is gone). One small frame per
        // late frame, through the executor queue's bound.
        this.#toExecutor(site, resetBytes(streamId, RESET_UNKNOWN_STREAM));
        return;
      }
      if (site.routes.size >= this.#maxStreams) {
        this.#toExecutor(site, resetBytes(streamId, RESET_UNKNOWN_STREAM));
        return;
      }
      // No harness holds this stream (e.g. the rendezvous restarted): park it
      // so a returning harness can take it back; the frame itself is dropped.
      const parking: Parking = { timer: undefined, streams: 1 };
      site.routes.set(streamId, { owner: undefined, parking });
      this.#park(site, [streamId], parking);
      return;
    }
    route.unconfirmed = undefined;
    const owner = route.owner;
    // The executor ended it, and knows: nothing to remember.
    if (isReset) this.#endRoute(site, streamId, route, false);
    // A parked stream's frames are dropped: its reliable endpoints resend after resume.
    if (owner !== undefined) {
      this.#toHarness(owner, frame.bytes, route.reliable === true && frame.body.kind === "data");
    }
  }

  /** Routes one harness frame; returns true when it was forwarded or held. */
  #routeFromHarness(site: Site, peer: Peer, frame: ReceivedFrame): boolean {
    const streamId = frame.streamId;
    const isReset = frame.body.kind === "reset";
    let route = site.routes.get(streamId);
    if (route === undefined) {
      if (isReset) {
        // Nothing routed: pass it on so an executor holding state can drop it
        // (after a rendezvous restart the executor may hold streams the
        // router never saw). Forwarded, it counts toward backpressure as data
        // does: a harness flooding resets for ids nobody routes must wait for
        // a briefly slow executor, not fill its queue until it is dropped
        // `slow_peer`, which would end every other harness's legacy streams.
        if (site.executor === undefined) return false;
        this.#toExecutor(site, frame.bytes);
        return true;
      }
      // A frame its socket sent before it closed, read late (the reader waited
      // for the executor's queue to drain): its harness is on another socket
      // by now, or gone, and the stream would be owned by a socket nobody reads.
      if (peer.socket.closeInfo !== undefined) return false;
      if (site.executor === undefined && (!site.executorAway || site.graceWait)) {
        if (performance.now() - this.#startedAt >= this.#startupGraceMs) {
          this.#toHarness(peer, resetBytes(streamId, RESET_EXECUTOR_OFFLINE));
          return false;
        }
        if (!site.executorAway) {
          // Just started (perhaps restarted): the executor may be on its way back.
          this.#awaitExecutor(site);
          site.graceWait = true;
        }
      }
      const owned = peer.streams.size;
      if (
        owned >= this.#maxStreamsPerHarness ||
        (site.routes.size >= this.#maxStreams && owned >= this.#reservedStreams)
      ) {
        this.#toHarness(peer, resetBytes(streamId, RESET_TOO_MANY_STREAMS));
        return false;
      }
      route = { owner: peer, parking: undefined };
      site.routes.set(streamId, route);
      site.ended.delete(streamId);
      peer.streams.add(streamId);
    } else if (route.owner !== peer) {
      // A closed socket's late frames take nothing (see above).
      if (peer.socket.closeInfo !== undefined) return false;
      const previous = route.owner;
      if (previous !== undefined) {
        // A harness that reconnected before its old socket was seen to go
        // resumes on the new one: the new socket takes the stream over and the
        // old one loses it. Any frame does once the old socket has closed (its
        // reader may not have caught up with the close yet); while it looks
        // open (half-open, a close still in flight) only a resume from a
        // newer socket does. Never the other way: a resume the old socket
        // sent before it went, read late, would hand the stream back to a
        // socket nobody reads, and the live one would get `stream_in_use`.
        const takesOver = previous.socket.closeInfo !== undefined ||
          (frame.body.kind === "resume" && peer.serial > previous.serial);
        if (!takesOver) {
          if (!isReset) this.#toHarness(peer, resetBytes(streamId, RESET_STREAM_IN_USE));
          return false;
        }
        previous.streams.delete(streamId);
      }
      // A parked or resumed stream: this socket takes it (back).
      route.owner = peer;
      this.#unpark(site, route);
      peer.streams.add(streamId);
    }
    if (isReset) this.#endRoute(site, streamId, route, true);
    // The mode shows in the harness's first data frame, or in a resume (a
    // harness back after a rendezvous restart may resume without data):
    // seq and next_seq 0 are Codex v1's, 1 and up reliable streams'.
    if (route.reliable === undefined) {
      if (frame.body.kind === "data") route.reliable = frame.body.seq !== 0;
      else if (frame.body.kind === "resume") route.reliable = frame.body.nextSeq !== 0;
    }
    // The executor answers data (a reply, an ack or a reset), so the harness
    // learns the stream's fate either way. Not so an ack, a resume or a
    // heartbeat: an executor that restarted may ignore those (Codex's does),
    // and only the window would end the stream then.
    if (frame.body.kind === "data") {
      route.unconfirmed = undefined;
      if (site.executor === undefined) route.heldWhileAway = true;
    }
    this.#toExecutor(site, frame.bytes);
    return true;
  }

  /**
   * A frame too large to carry: its stream ends both ways with
   * `message_too_large`, so neither end waits for what was dropped (a Codex
   * v1 harness would wait forever for the reply). Another harness's stream is
   * not touched: only the sender hears of it.
   */
  #oversize(peer: Peer, streamId: string): void {
    this.#emit({ type: "frames_dropped", executorId: peer.site.id, reason: "frame_too_large" });
    const site = peer.site;
    const reset = resetBytes(streamId, RESET_MESSAGE_TOO_LARGE);
    const route = site.routes.get(streamId);
    if (peer.role === "harness") {
      this.#toHarness(peer, reset);
      if (route === undefined || route.owner !== peer) return;
    } else if (route?.owner !== undefined) {
      this.#toHarness(route.owner, reset);
    }
    if (route !== undefined) this.#endRoute(site, streamId, route, true);
    this.#toExecutor(site, reset);
  }

  #peerGone(peer: Peer): void {
    if (peer.role === "executor") this.#executorGone(peer);
    else this.#harnessGone(peer);
  }

  #executorGone(peer: Peer): void {
    if (peer.gone) return;
    peer.gone = true;
    peer.kill();
    this.#peers.delete(peer);
    const site = peer.site;
    if (site.executor !== peer) return; // replaced by a newer socket
    site.executor = undefined;
    // The detach window takes over; the next executor socket starts a new confirmation.
    clearTimeout(site.confirmTimer);
    site.confirmTimer = undefined;
    this.#emit({ type: "executor_detached", executorId: site.id });
    if (this.#closing) return;
    // An executor that said it is shutting down (outpost's closes its socket
    // `shutdown` once its streams are reset) is waited for briefly, not for
    // the detach window: a restart that brings it back at once still serves
    // a harness that asked meanwhile, and otherwise the harness gets
    // `executor_offline` in seconds instead of timing out in silence.
    if (peer.socket.closeInfo?.reason === CLOSE_SHUTDOWN) {
      // Its streams were reset: what waits now are new streams, which never
      // reached an executor.
      this.#awaitExecutor(
        site,
        Math.min(SHUTDOWN_WAIT_MS, this.#detachWindowMs),
        RESET_EXECUTOR_OFFLINE,
      );
    } else {
      this.#awaitExecutor(site);
    }
  }

  /**
   * Holds the site's streams for `waitMs` (the detach window by default),
   * waiting for an executor socket; then resets them with `reason`.
   */
  #awaitExecutor(
    site: Site,
    waitMs = this.#detachWindowMs,
    reason = RESET_EXECUTOR_DISCONNECTED,
  ): void {
    site.executorAway = true;
    site.executorTimer = setTimeout(() => this.#executorExpired(site, reason), waitMs);
  }

  #executorExpired(site: Site, reason: string): void {
    site.executorTimer = undefined;
    site.executorAway = false;
    site.graceWait = false;
    this.#clearOffline(site);
    const streams = site.routes.size;
    for (const [streamId, route] of site.routes) {
      this.#unpark(site, route);
      const owner = route.owner;
      if (owner !== undefined) {
        owner.streams.delete(streamId);
        this.#toHarness(owner, resetBytes(streamId, reason));
      }
    }
    site.routes.clear();
    this.#emit({ type: "executor_expired", executorId: site.id, streams });
    this.#maybeForget(site);
  }

  /** Resets the streams a newly attached executor did not resume in time. */
  #confirmExpired(site: Site): void {
    site.confirmTimer = undefined;
    let streams = 0;
    for (const [streamId, route] of site.routes) {
      if (!route.unconfirmed) continue;
      streams++;
      this.#endRoute(site, streamId, route, true);
      const reset = resetBytes(streamId, RESET_EXECUTOR_DISCONNECTED);
      if (route.owner !== undefined) this.#toHarness(route.owner, reset);
      // The executor does not hold it either way: a reset keeps it from appearing later.
      if (site.executor !== undefined) this.#toExecutor(site, reset);
    }
    if (streams > 0) this.#emit({ type: "streams_not_resumed", executorId: site.id, streams });
    this.#maybeForget(site);
  }

  #harnessGone(peer: Peer): void {
    if (peer.gone) return;
    peer.gone = true;
    peer.kill();
    this.#peers.delete(peer);
    const site = peer.site;
    site.harnesses.delete(peer);
    const parked = [...peer.streams];
    peer.streams.clear();
    this.#emit({ type: "harness_detached", executorId: site.id, parkedStreams: parked.length });
    if (this.#closing) return;
    const parking: Parking = { timer: undefined, streams: 0 };
    for (const streamId of parked) {
      const route = site.routes.get(streamId);
      if (route === undefined || route.owner !== peer) continue;
      if (route.reliable === false) {
        // A Codex v1 stream is never resumed (its harness opens new streams
        // on its next socket): the executor hears of its end at once, as
        // Codex's rendezvous tells it, so the session detaches now and can be
        // resumed, rather than a detach window later.
        this.#endRoute(site, streamId, route, true);
        this.#toExecutor(site, resetBytes(streamId, RESET_HARNESS_DISCONNECTED));
        continue;
      }
      route.owner = undefined;
      route.parking = parking;
      parking.streams++;
    }
    if (parking.streams > 0) this.#park(site, parked, parking);
    this.#maybeForget(site);
  }

  /** Expires parked streams after the detach window unless taken back by then. */
  #park(site: Site, streamIds: string[], parking: Parking): void {
    const timer = setTimeout(() => {
      site.parkTimers.delete(timer);
      parking.timer = undefined;
      this.#harnessExpired(site, streamIds, parking);
    }, this.#detachWindowMs);
    parking.timer = timer;
    site.parkTimers.add(timer);
  }

  /**
   * A parked stream was taken back or is gone: once none of its parking is
   * left, the parking's timer goes too, so a flapping harness does not pile
   * up one live timer per reconnect.
   */
  #unpark(site: Site, route: Route): void {
    const parking = route.parking;
    if (parking === undefined) return;
    route.parking = undefined;
    if (--parking.streams > 0 || parking.timer === undefined) return;
    clearTimeout(parking.timer);
    site.parkTimers.delete(parking.timer);
    parking.timer = undefined;
  }

  #harnessExpired(site: Site, streamIds: string[], parking: Parking): void {
    let expired = 0;
    for (const streamId of streamIds) {
      const route = site.routes.get(streamId);
      if (route === undefined || route.parking !== parking) continue;
      this.#endRoute(site, streamId, route, true);
      expired++;
      this.#toExecutor(site, resetBytes(streamId, RESET_HARNESS_DISCONNECTED));
    }
    if (expired > 0) this.#emit({ type: "streams_expired", executorId: site.id, streams: expired });
    this.#maybeForget(site);
  }

  /**
   * Ends one stream's route: its owner loses it, its parking lets go, and a
   * stream this rendezvous ended (`remember`) is remembered, the oldest
   * forgotten past the bound.
   */
  #endRoute(site: Site, streamId: string, route: Route, remember: boolean): void {
    site.routes.delete(streamId);
    route.owner?.streams.delete(streamId);
    this.#unpark(site, route);
    if (!remember) return;
    site.ended.delete(streamId);
    site.ended.add(streamId);
    if (site.ended.size > MAX_ENDED_STREAMS) site.ended.delete(site.ended.values().next().value!);
  }

  /** Drops a site that holds nothing any more. */
  #maybeForget(site: Site): void {
    if (
      site.executor === undefined && site.executorTimer === undefined &&
      site.harnesses.size === 0 && site.routes.size === 0 && site.parkTimers.size === 0 &&
      this.#sites.get(site.id) === site
    ) {
      this.#clearOffline(site);
      this.#sites.delete(site.id);
    }
    if (this.#peers.size === 0) this.#stopWatchdog();
  }

  #startWatchdog(): void {
    if (this.#watchdog !== undefined) return;
    const period = Math.max(5, Math.floor(this.#slowMs / 4));
    this.#watchdog = setInterval(() => this.#checkSlowPeers(), period);
  }

  #stopWatchdog(): void {
    if (this.#watchdog === undefined) return;
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
  }

  /**
   * Drops every socket that has stayed over the high water mark, draining
   * nothing, for too long. A socket that keeps draining is slow, not stuck:
   * its queue is bounded anyway (and a harness's reliable data is shed past
   * half the bound), so it stays.
   */
  #checkSlowPeers(): void {
    const now = Date.now();
    for (const peer of this.#peers) {
      if (peer.dead) continue;
      if (peer.shedding && peer.queuedCharge < this.#maxQueue / 4) peer.shedding = false;
      const drained = peer.sentSinceCheck;
      peer.sentSinceCheck = false;
      if (peer.pendingBytes <= this.#highWater || drained) {
        peer.overSince = 0;
      } else if (peer.overSince === 0) {
        peer.overSince = now;
      } else if (now - peer.overSince >= this.#slowMs) {
        this.#dropPeer(peer, CLOSE_SLOW_PEER, CLOSE_CODE_SLOW_PEER);
      }
    }
    if (this.#peers.size === 0) this.#stopWatchdog();
  }
}
