/**
 * The remote executor loop (reference §5.1): register with the registry,
 * connect to the signed rendezvous URL it returns, serve every virtual stream
 * on that socket, and when the socket goes away register afresh and
 * reconnect with backoff. One {@linkcode StreamMux} lives for the whole run,
 * so streams resume on the new socket within the mux's detach window.
 *
 * @module
 */

import { MAX_TIMER_MS } from "../_limits.ts";
import { type ProtocolError, refusalText, RelayClosedError } from "../errors.ts";
import { Executor } from "../exec/executor.ts";
import { CLOSE_REPLACED } from "../mux/relay_router.ts";
import { DEFAULT_MAX_MESSAGE_BYTES as MAX_STREAM_MESSAGE_BYTES } from "../mux/reliable_stream.ts";
import {
  DEFAULT_DETACH_WINDOW_MS,
  DEFAULT_RECEIVE_BUDGET_BYTES,
  StreamMux,
} from "../mux/stream_mux.ts";
import type { MuxStream } from "../mux/stream_mux.ts";
import { RelaySocket } from "../relay/relay_socket.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, MIN_MAX_MESSAGE_BYTES } from "../rpc/json_rpc_peer.ts";
import {
  DEFAULT_REGISTER_TIMEOUT_MS,
  normalizeRegistryUrl,
  registerExecutor,
  RegistrationError,
  validateExecutorId,
} from "./_registration.ts";
import { abortable } from "../_abortable.ts";
import { BadFrameReporter } from "./_bad_frame_reporter.ts";

export { RegistrationError } from "./_registration.ts";

/** Where a {@linkcode RemoteExecutorHandle} is in its life. */
export type RemoteExecutorStatus =
  | "registering"
  | "connecting"
  | "connected"
  | "waiting"
  | "closed";

/** Something the executor loop did, for logs and tests. Never carries a token or signed URL. */
export type RemoteExecutorEvent =
  | { type: "registered"; executorId: string }
  | { type: "connected"; executorId: string }
  | { type: "disconnected"; code: number; reason: string }
  | { type: "retrying"; delayMs: number; error?: Error }
  | { type: "stream_error"; streamId: string; error: Error }
  /**
   * The rendezvous socket carried frames that are not valid relay frames
   * (dropped; the socket keeps serving): at most one report per 10 s, with
   * how many were dropped since the last one and the latest's error; what a
   * burst leaves unreported comes when its 10 s end, or when the socket closes.
   */
  | { type: "bad_frames"; dropped: number; error: ProtocolError }
  | { type: "closed"; error?: Error };

/**
 * A second `replaced` socket within this long stops the loop (see
 * {@linkcode runExecutor}); longer when the backoff is (two executors
 * replace each other about once per backoff delay).
 */
const REPLACED_AGAIN_MS = 60_000;
/**
 * The longest reconnect delay while a lost socket's streams can still resume
 * (within the detach window): the backoff may have grown to 30 s, and one
 * such wait would outlast the window.
 */
export const RESUME_RETRY_MS = 5_000;

/** Options of {@linkcode runExecutor}. */
export interface RunExecutorOptions {
  /** Registry base URL (`http(s)://` or the rendezvous `ws(s)://` URL). */
  registry: string;
  /** The executor id: 1..256 ASCII letters, digits, `-` or `_`. */
  executorId: string;
  /** Bearer token for the registry. Never logged. */
  token: string;
  /** Display name sent at registration. @default {"outpost"} */
  name?: string;
  /** The executor serving the streams; created (and closed at the end) when absent. */
  executor?: Executor;
  /** Stops the loop; equivalent to `close()`. */
  signal?: AbortSignal;
  /** First reconnect delay. @default {1000} */
  initialBackoffMs?: number;
  /** Largest reconnect delay. @default {30000} */
  maxBackoffMs?: number;
  /** Relative jitter applied to each delay, 0..1 (0.2 means ±20%). @default {0.2} */
  jitter?: number;
  /** Timeout of one registration request. @default {10000} */
  registerTimeoutMs?: number;
  /** Timeout of one WebSocket connect. @default {10000} */
  connectTimeoutMs?: number;
  /**
   * A connected socket on which nothing arrives for this long (a ping goes
   * out halfway) is dropped and the executor reconnects: a connection that
   * went silent without closing would otherwise keep it offline for good.
   * 0 turns the check off. @default {30000}
   */
  idleTimeoutMs?: number;
  /** How long streams survive a lost socket. @default {30000} */
  detachWindowMs?: number;
  /** Most concurrent streams; beyond it new streams are reset. Mux default when absent. */
  maxStreams?: number;
  /**
   * Bytes all streams together may hold for their sessions (see
   * `StreamMuxOptions.receiveBudgetBytes`): past it streams are reset with
   * `inbox_overflow`, those whose sessions stopped reading first. At least
   * `maxMessageBytes`.
   * @default {268435456}
   */
  receiveBudgetBytes?: number;
  /**
   * The largest JSON-RPC message, in bytes: a stream is reset with
   * `message_too_large` as soon as a message grows past it, before it is
   * reassembled. Also the limit of the executor created when `executor` is
   * absent. Defaults to the given executor's `maxMessageBytes`, else 16 MiB.
   * @default {16777216}
   */
  maxMessageBytes?: number;
  /** Receives loop events (for logs). */
  onEvent?: (event: RemoteExecutorEvent) => void;
  /** Sleep used between attempts (tests inject a fake). Must reject when `signal` aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Random source in [0, 1) for jitter. @default {Math.random} */
  random?: () => number;
}

/** A running executor loop, from {@linkcode runExecutor}. */
export interface RemoteExecutorHandle extends AsyncDisposable {
  /** The executor id. */
  readonly executorId: string;
  /** Current state of the loop. */
  readonly status: RemoteExecutorStatus;
  /**
   * Settles when the loop has stopped and everything is released: resolves
   * after `close()` or an abort, rejects with the fatal error otherwise (a
   * refused registration, a registry answer naming another executor).
   */
  readonly closed: Promise<void>;
  /** Stops the loop, closes the socket and every stream; idempotent. */
  close(): Promise<void>;
}

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Says why the executor socket did not connect, so the retry log shows it: a
 * refused upgrade with the rendezvous' own code and message when it sent
 * them; a bare 401 is its answer to a signed URL that expired or lost its
 * signature. The URL's query (the signature) is left out.
 */
function connectError(url: string, error: unknown): Error {
  const parsed = new URL(url);
  const where = `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  const refusal = error instanceof RelayClosedError ? error.refusal : undefined;
  let why: string;
  if (refusal !== undefined) {
    const detail = refusal.code === undefined && refusal.status === 401
      ? " (the signed URL expired before the socket connected, or arrived unsigned)"
      : refusalText(refusal);
    why = `the rendezvous refused it with HTTP ${refusal.status}${detail}`;
  } else {
    why = String((error as Error)?.message ?? error)
      .replace(/^Cannot connect relay socket to \S+: /, "");
  }
  return new Error(`Cannot connect executor socket to ${where}: ${why}`, { cause: error });
}

/** When a signed socket URL expires (its `exp`, ms since the epoch); a minute from now without one. */
function urlExpiry(url: string): number {
  const exp = Number(new URL(url).searchParams.get("exp") ?? NaN);
  return Number.isFinite(exp) ? exp : Date.now() + 60_000;
}

function checkRange(name: string, value: number, min: number, max: number): number {
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new RangeError(`Cannot run executor: ${name} ${value} is outside ${min}..${max}`);
  }
  return value;
}

/**
 * Runs an executor that registers with a registry and serves the streams a
 * rendezvous routes to it, reconnecting until closed.
 *
 * Retry policy: a lost or failed socket, a registry that cannot be reached,
 * and registry answers 5xx/408/429 are retried with backoff (1 s doubling to
 * 30 s, jittered, reset after a good connect), registering afresh each time;
 * for the detach window after a lost socket, while its streams can still
 * resume, at most {@linkcode RESUME_RETRY_MS} (5 s) apart.
 * A refused token (401/403), any other 4xx, an answer naming another
 * executor, and a registry host Deno grants no net access to are fatal:
 * `closed` rejects with the error. So is a second socket within a minute
 * (or two of the longest first backoff delays plus 30 s, if longer) that
 * the rendezvous closed as `replaced`: another executor connected with the
 * same id (this loop opens a new socket only once its last one has
 * closed), and two executors taking the id from each other would each keep
 * reconnecting for ever; one of them stops, the other keeps the id. A first
 * `replaced` only reconnects, and so does any while a connect attempt of
 * this loop's own that timed out may still reach the rendezvous (until its
 * signed URL's `exp`): it may be that attempt, arriving late.
 *
 * @param options Registry, id, token and tuning.
 * @returns A handle to the running loop.
 * @throws {TypeError} When the registry URL, executor id or token is unusable.
 * @throws {RangeError} When a backoff option, `maxMessageBytes` or
 * `receiveBudgetBytes` is out of range.
 * @example
 * ```ts ignore
 * import { runExecutor } from "@outpost/exec";
 * await using handle = runExecutor({
 *   registry: "http://127.0.0.1:8700",
 *   executorId: "build-box",
 *   token: Deno.env.get("OUTPOST_TOKEN")!,
 * });
 * await handle.closed;
 * ```
 */
export function runExecutor(options: RunExecutorOptions): RemoteExecutorHandle {
  const registry = normalizeRegistryUrl(options.registry);
  const executorId = validateExecutorId(options.executorId);
  const token = options.token.trim();
  if (token === "") throw new TypeError("Cannot run executor: the token is empty");
  const initialBackoffMs = checkRange(
    "initialBackoffMs",
    options.initialBackoffMs ?? 1000,
    0,
    3_600_000,
  );
  const maxBackoffMs = checkRange(
    "maxBackoffMs",
    options.maxBackoffMs ?? 30_000,
    initialBackoffMs,
    3_600_000,
  );
  const jitter = checkRange("jitter", options.jitter ?? 0.2, 0, 1);
  // Two executors swap the id about once per first delay (jittered), plus
  // the time a registration and a connect take.
  const replacedWindowMs = Math.max(
    REPLACED_AGAIN_MS,
    2 * (1 + jitter) * initialBackoffMs + 30_000,
  );
  // Checked here, not only by the socket: a bad value would fail every connect and retry forever.
  if (options.idleTimeoutMs !== undefined) {
    checkRange("idleTimeoutMs", options.idleTimeoutMs, 0, MAX_TIMER_MS);
  }
  const registerTimeoutMs = checkRange(
    "registerTimeoutMs",
    options.registerTimeoutMs ?? DEFAULT_REGISTER_TIMEOUT_MS,
    1,
    MAX_TIMER_MS,
  );
  const connectTimeoutMs = checkRange(
    "connectTimeoutMs",
    options.connectTimeoutMs ?? 10_000,
    1,
    MAX_TIMER_MS,
  );
  const maxMessageBytes = checkRange(
    "maxMessageBytes",
    options.maxMessageBytes ??
      Math.min(
        options.executor?.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
        MAX_STREAM_MESSAGE_BYTES,
      ),
    MIN_MAX_MESSAGE_BYTES,
    MAX_STREAM_MESSAGE_BYTES,
  );
  // Checked here, before anything is started: the mux would refuse it too.
  const receiveBudgetBytes = Math.floor(checkRange(
    "receiveBudgetBytes",
    options.receiveBudgetBytes ?? Math.max(DEFAULT_RECEIVE_BUDGET_BYTES, maxMessageBytes),
    maxMessageBytes,
    Number.MAX_SAFE_INTEGER,
  ));
  const detachWindowMs = options.detachWindowMs ?? DEFAULT_DETACH_WINDOW_MS;
  const sleep = options.sleep ?? defaultSleep;
  const random = options.random ?? Math.random;
  const emit = (event: RemoteExecutorEvent): void => {
    try {
      options.onEvent?.(event);
    } catch {
      // A failing listener must not stop the executor.
    }
  };

  const stop = new AbortController();
  const onOuterAbort = (): void => stop.abort(options.signal?.reason);
  if (options.signal?.aborted) stop.abort(options.signal.reason);
  else options.signal?.addEventListener("abort", onOuterAbort, { once: true });

  const ownsExecutor = options.executor === undefined;
  const executor = options.executor ?? new Executor({ maxMessageBytes });
  const serving = new Set<Promise<void>>();
  const mux = new StreamMux({
    role: "executor",
    // Refuse an oversized message while it arrives, not after reassembly and decoding.
    stream: { maxMessageBytes },
    ...(options.detachWindowMs !== undefined ? { detachWindowMs: options.detachWindowMs } : {}),
    ...(options.maxStreams !== undefined ? { maxStreams: options.maxStreams } : {}),
    receiveBudgetBytes,
    // At the stream limit an idle stream gives its place only when its
    // session waits on nothing (no request, no live process).
    canReplace: (stream: MuxStream) => executor.isQuiet(stream),
    onStream: (stream: MuxStream) => {
      const run = executor.serve(stream).catch((error: Error) => {
        emit({ type: "stream_error", streamId: stream.id, error });
      });
      serving.add(run);
      run.finally(() => serving.delete(run));
    },
  });

  let status: RemoteExecutorStatus = "registering";
  let socket: RelaySocket | undefined;

  /** When the last socket was lost (performance.now()), while no new one is up. */
  let lostAt: number | null = null;
  /** The delays waited since then: the time that passed, as far as the waits tell. */
  let waitedSinceLoss = 0;

  async function wait(delayMs: number, error?: Error): Promise<void> {
    // While the lost socket's streams can still resume, retry often enough
    // to come back inside the detach window, however far the backoff grew.
    const sinceLoss = lostAt === null
      ? Infinity
      : Math.max(performance.now() - lostAt, waitedSinceLoss);
    const cap = sinceLoss < detachWindowMs ? Math.min(maxBackoffMs, RESUME_RETRY_MS) : maxBackoffMs;
    const capped = Math.min(delayMs, cap);
    const spread = capped * jitter * (2 * random() - 1);
    const actual = Math.max(0, Math.min(cap, Math.round(capped + spread)));
    status = "waiting";
    emit({ type: "retrying", delayMs: actual, ...(error ? { error } : {}) });
    await sleep(actual, stop.signal);
    if (lostAt !== null) waitedSinceLoss += actual;
  }

  async function loop(): Promise<void> {
    let delayMs = initialBackoffMs;
    let replacedAt = -Infinity;
    /** Until when (ms since the epoch) a timed-out connect attempt may still reach the rendezvous. */
    let lateUntil = 0;
    const grow = (): void => {
      delayMs = Math.min(maxBackoffMs, Math.max(delayMs * 2, 1));
    };
    while (!stop.signal.aborted) {
      status = "registering";
      let url: string;
      try {
        const registration = await registerExecutor(registry, executorId, token, {
          signal: stop.signal,
          timeoutMs: registerTimeoutMs,
          ...(options.name !== undefined ? { name: options.name } : {}),
        });
        url = registration.url;
      } catch (error) {
        if (stop.signal.aborted) return;
        if (error instanceof RegistrationError && error.retryable) {
          await wait(delayMs, error);
          grow();
          continue;
        }
        throw error;
      }
      emit({ type: "registered", executorId });
      status = "connecting";
      const badFrames = new BadFrameReporter((error, dropped) =>
        emit({ type: "bad_frames", dropped, error })
      );
      try {
        socket = await RelaySocket.connect(url, {
          signal: stop.signal,
          timeoutMs: connectTimeoutMs,
          onProtocolError: badFrames.onProtocolError,
          ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
        });
        socket.closed.then(() => badFrames.close());
      } catch (error) {
        badFrames.close();
        if (stop.signal.aborted) return;
        // Refused, it never arrives; timed out, it may yet, until its URL expires.
        if (error instanceof DOMException && error.name === "TimeoutError") {
          lateUntil = Math.max(lateUntil, urlExpiry(url));
        }
        await wait(delayMs, connectError(url, error));
        grow();
        continue;
      }
      delayMs = initialBackoffMs;
      lostAt = null;
      status = "connected";
      mux.attach(socket);
      emit({ type: "connected", executorId });
      let info;
      try {
        info = await abortable(socket.closed, stop.signal);
      } catch {
        return; // stopping: `done` resets the streams on this socket, then closes it
      }
      socket = undefined;
      lostAt = performance.now();
      waitedSinceLoss = 0;
      emit({ type: "disconnected", code: info.code, reason: info.reason });
      if (info.reason === CLOSE_REPLACED) {
        const now = performance.now();
        if (now - replacedAt < replacedWindowMs && Date.now() >= lateUntil) {
          throw new Error(
            `Cannot keep executor id ${executorId}: another executor connected with it, and the ` +
              `rendezvous replaced this one twice within ${
                Math.round(replacedWindowMs / 1000)
              } s ` +
              "(give each executor its own id)",
          );
        }
        replacedAt = now;
      }
      await wait(delayMs);
      grow();
    }
  }

  const done = (async () => {
    let failure: unknown;
    try {
      await loop();
    } catch (error) {
      if (!stop.signal.aborted) failure = error;
    }
    status = "closed";
    options.signal?.removeEventListener("abort", onOuterAbort);
    stop.abort(new Error("Executor loop stopped"));
    // An executor of its own ends its programs while their streams are up.
    if (ownsExecutor) await executor.endPrograms();
    // While the socket is still up: every stream is reset `shutdown`, so each
    // harness learns now instead of after the rendezvous' detach window; the
    // mux then closes the socket.
    await mux.close();
    await socket?.close("shutdown");
    await Promise.allSettled([...serving]);
    if (ownsExecutor) await executor.close();
    emit({ type: "closed", ...(failure ? { error: failure as Error } : {}) });
    if (failure !== undefined) throw failure;
  })();
  done.catch(() => {});

  const close = async (): Promise<void> => {
    stop.abort(new Error("Executor loop closed"));
    await done.catch(() => {});
  };
  return {
    executorId,
    get status(): RemoteExecutorStatus {
      return status;
    },
    closed: done,
    close,
    [Symbol.asyncDispose]: close,
  };
}
