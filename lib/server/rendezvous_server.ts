/**
 * The rendezvous: an HTTP registry and a WebSocket relay in one `Deno.serve`.
 *
 * - `POST /cloud/executor/{id}/register` with `Authorization: Bearer <token>`
 *   answers `{"id": id, "executor_id": id, "url": "ws://HOST:PORT/executor/{id}?role=executor&exp=…&sig=…"}`,
 *   a URL signed with HMAC-SHA256 that expires after `urlTtlMs`.
 * - `GET /executor/{id}?role=executor&exp=…&sig=…` upgrades the executor
 *   socket (the signed URL is its credential, good for one socket; no token
 *   on this socket).
 * - `POST /cloud/executor/{id}/connect` with the token answers
 *   `{"executor_id": id, "url": "ws://HOST:PORT/harness/{id}?role=harness&exp=…&sig=…"}`:
 *   a signed harness URL, for a harness that is handed a URL and sends no headers.
 * - `GET /harness/{id}?role=harness` with `Authorization: Bearer <token>`, or
 *   with the `exp` and `sig` of such a URL, upgrades a harness socket.
 *
 * Frames are routed by the mux layer's `RelayRouter`. Every refusal happens before
 * the upgrade, as JSON `{"error": {"code", "message"}}`.
 *
 * Running out of file descriptors does not stop it. Deno.serve (2.9) ends its
 * accept loop at the first failed accept (`Too many open files`) while the
 * connections it holds go on being served; the rendezvous then reports a
 * `listener_failed` event and listens again on the same address (100 ms
 * doubling to 2 s) until it can (see `_listener.ts`, which `serve` shares). Deno offers no header-read or idle timeout
 * and no connection limit, and a handler cannot close a kept-alive
 * connection, so connections that never complete a request are not bounded
 * here: see the README for what to put in front.
 *
 * @module
 */

import { RelaySocket } from "../relay/relay_socket.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../relay/frame_codec.ts";
import {
  RelayRouter,
  type RelayRouterOptions,
  type RelayRouterStats,
  type RouterEvent,
} from "../mux/relay_router.ts";
import { BadFrameReporter } from "./_bad_frame_reporter.ts";
import { BAD_UPGRADE, badUpgradeMessage, errorResponse } from "./_error_response.ts";
import { BAD_HOST_MESSAGE, requestUrl } from "./_request_url.ts";
import { Listener, type ListenerEvent } from "./_listener.ts";
import { UsedUrls } from "./_used_urls.ts";
import { UrlSigner } from "./_signed_url.ts";
import { checkBearer, validateToken } from "./_token.ts";

export type { ListenerEvent } from "./_listener.ts";
export type {
  RelayRouterOptions,
  RelayRouterStats,
  RouterEvent,
  RouterRole,
} from "../mux/relay_router.ts";

/** Longest executor id accepted. */
const MAX_EXECUTOR_ID_LENGTH = 256;
const EXECUTOR_ID = /^[A-Za-z0-9_-]{1,256}$/;
const HOST_HEADER = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$/;
const REGISTER_PATH = /^\/cloud\/(executor|environment)\/([^/]*)\/(register|connect)\/?$/;
const SOCKET_PATH = /^\/(executor|harness)\/([^/]*)\/?$/;
const BODY_READ_TIMEOUT_MS = 10_000;
/** Close code and reason for a socket that sent text: relay sockets carry binary frames. */
const UNSUPPORTED_DATA = 1003;
const NOT_RELAY_FRAMES =
  "relay sockets carry binary relay frames, not JSON-RPC text: connect with an executor id";
/** The router's default detach window; also the default startup grace. */
const DEFAULT_DETACH_WINDOW_MS = 30_000;
/**
 * Shortest signed-URL lifetime accepted: the URL must outlive the executor's
 * registration answer and its socket connect, or it is refused `url_expired`
 * on every attempt and the executor never comes online.
 */
export const MIN_URL_TTL_MS = 1_000;
/**
 * Longest signed-URL lifetime accepted (a day): a signed URL is a credential
 * that cannot be revoked short of changing the signing key, so it must not
 * outlive its use by years.
 */
export const MAX_URL_TTL_MS = 24 * 60 * 60 * 1000;

/**
 * Something the rendezvous did: a router event, a registration, a refusal, or
 * its listener failing and coming back.
 */
export type RendezvousEvent =
  | RouterEvent
  | { type: "registered"; executorId: string }
  | {
    /**
     * A socket carried frames that are not valid relay frames (dropped; the
     * socket keeps serving): at most one report per socket per 10 s; what a
     * burst leaves unreported comes when its 10 s end, or when the socket
     * closes.
     */
    type: "bad_frames";
    /** Which side's socket. */
    role: "executor" | "harness";
    /** The executor id the socket is for. */
    id: string;
    /** Frames dropped since the socket's last report, this one included. */
    dropped: number;
    /** Why the latest was refused. */
    message: string;
  }
  | ListenerEvent
  | {
    type: "refused";
    /** What was asked for. */
    target: "register" | "connect" | "executor" | "harness" | "other";
    /** The HTTP status of the answer. */
    status: number;
    /** The error code of the answer. */
    code: string;
  };

/**
 * Options of {@linkcode serveRendezvous}: the router's limits and timing
 * (see {@linkcode RelayRouterOptions}) plus those of the HTTP side.
 */
export interface RendezvousOptions extends Omit<RelayRouterOptions, "onEvent" | "startupGraceMs"> {
  /**
   * Where to listen, as a `ws://` (or `http://`) URL; port 0 picks a free port.
   * @default {"ws://127.0.0.1:0"}
   */
  listen?: string;
  /** The bearer token executors register with and harnesses connect with (16..4096 visible ASCII characters). */
  token: string;
  /**
   * HMAC-SHA256 key (at least 16 bytes) signing executor and harness URLs.
   * When omitted a random key is made, so URLs do not survive a restart
   * (executors re-register, harnesses ask again).
   */
  signingKey?: Uint8Array;
  /**
   * How long a signed executor or harness URL stays valid, in milliseconds;
   * at least 1000, so the executor can connect with it after registering, and
   * at most a day ({@linkcode MAX_URL_TTL_MS}).
   * @default {60000}
   */
  urlTtlMs?: number;
  /**
   * Base of the URLs given to executors (e.g. `wss://relay.example.com` behind
   * a TLS proxy). By default the request's `Host` header over `ws://`.
   */
  publicUrl?: string;
  /**
   * For this long after start, harness streams for an executor id with no
   * executor socket wait for the detach window instead of being reset
   * `executor_offline`, so sessions survive a rendezvous restart even when a
   * harness reconnects before its executor does. The default is the detach
   * window, the longest either side keeps a session to resume.
   *
   * The trade-off: during that first window a harness naming an executor id
   * that is not coming (a typo, an executor that is down) waits up to the
   * detach window and then gets `executor_disconnected`, instead of failing
   * fast with `executor_offline`. After the grace, new streams for an id
   * with no executor fail fast again, also for an id asked about during it. Set 0 for a rendezvous that is never restarted under live
   * sessions, or when fast failure matters more.
   * @default {detachWindowMs}
   */
  startupGraceMs?: number;
  /**
   * Seconds between server pings; a socket that does not answer one in time is closed.
   * @default {30}
   */
  idleTimeoutSeconds?: number;
  /**
   * Largest registration request body, in bytes.
   * @default {16384}
   */
  maxRequestBodyBytes?: number;
  /** Receives attach, detach, registration and refusal events (never tokens or payloads). */
  onEvent?: (event: RendezvousEvent) => void;
  /** Closes the server when aborted. */
  signal?: AbortSignal;
}

/** A running rendezvous. */
export interface RendezvousServer extends AsyncDisposable {
  /** The WebSocket base URL it listens on, e.g. `ws://127.0.0.1:8080`. */
  readonly url: string;
  /** The registry base URL (same port), e.g. `http://127.0.0.1:8080`. */
  readonly registryUrl: string;
  /** Settles once the server and every socket are closed. */
  readonly closed: Promise<void>;
  /**
   * Counts executors, sockets and streams.
   *
   * @returns The counts.
   */
  stats(): RelayRouterStats;
  /**
   * Closes every socket and stops listening. Idempotent.
   *
   * @returns Once everything is closed.
   */
  close(): Promise<void>;
}

/** The request's path; a `Host` header that makes it no URL is refused 400. */
function requestPath(request: Request): string {
  const url = requestUrl(request);
  if (url === null) throw new HttpError(400, "bad_request", BAD_HOST_MESSAGE);
  return url.pathname;
}

class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function parseListen(listen: string): { hostname: string; port: number } {
  let url: URL;
  try {
    url = new URL(listen);
  } catch {
    throw new TypeError(`Cannot listen: "${listen}" is not a URL`);
  }
  if (url.protocol !== "ws:" && url.protocol !== "http:") {
    throw new TypeError(
      `Cannot listen: scheme ${url.protocol} is not ws or http (terminate TLS in a proxy and set publicUrl)`,
    );
  }
  if (url.pathname !== "/" || url.search !== "" || url.username !== "") {
    throw new TypeError(`Cannot listen: "${listen}" must be a bare ws://HOST:PORT`);
  }
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = url.port === "" ? 80 : Number(url.port);
  return { hostname, port };
}

function parsePublicUrl(publicUrl: string): string {
  let url: URL;
  try {
    url = new URL(publicUrl);
  } catch {
    throw new TypeError(`Cannot use public URL: "${publicUrl}" is not a URL`);
  }
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new TypeError(
      `Cannot use public URL: scheme ${url.protocol} is not ws, wss, http or https`,
    );
  }
  url.search = "";
  url.hash = "";
  return url.href.replace(/\/+$/, "");
}

function hostUrl(hostname: string, port: number): string {
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  return `${host}:${port}`;
}

function positiveOption(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v <= 0) {
    throw new RangeError(`Cannot serve rendezvous: ${name} must be a positive number, got ${v}`);
  }
  return v;
}

function checkExecutorId(id: string): void {
  if (!EXECUTOR_ID.test(id)) {
    const detail = id.length === 0
      ? "it is empty"
      : id.length > MAX_EXECUTOR_ID_LENGTH
      ? `length ${id.length} exceeds ${MAX_EXECUTOR_ID_LENGTH}`
      : 'only ASCII letters, digits, "-" and "_" are allowed';
    throw new HttpError(400, "invalid_executor_id", `Cannot use executor id: ${detail}`);
  }
}

/** Reads and discards a request body, refusing one over the limit or too slow. */
async function drainBody(request: Request, limit: number, what: string): Promise<void> {
  const length = request.headers.get("content-length");
  if (length !== null && Number(length) > limit) {
    await request.body?.cancel().catch(() => {});
    throw new HttpError(
      413,
      "payload_too_large",
      `Cannot ${what}: body of ${length} bytes exceeds the ${limit} byte limit`,
    );
  }
  const body = request.body;
  if (body === null) return;
  const reader = body.getReader();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    reader.cancel().catch(() => {});
  }, BODY_READ_TIMEOUT_MS);
  let total = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (timedOut) {
        throw new HttpError(
          408,
          "request_timeout",
          `Cannot ${what}: the body did not arrive within ${BODY_READ_TIMEOUT_MS} ms`,
        );
      }
      if (done) return;
      total += value.length;
      if (total > limit) {
        await reader.cancel().catch(() => {});
        throw new HttpError(
          413,
          "payload_too_large",
          `Cannot ${what}: body exceeds the ${limit} byte limit`,
        );
      }
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

/**
 * Starts a rendezvous: the executor registry and the relay that routes frames
 * between executor and harness sockets, on one port.
 *
 * @example Start a rendezvous on a free loopback port
 * ```ts
 * import { serveRendezvous } from "@outpost/exec";
 * await using rendezvous = await serveRendezvous({ token: crypto.randomUUID() });
 * console.log(rendezvous.url); // e.g. "ws://127.0.0.1:39127"
 * ```
 *
 * @param options The token, listen address, signing key, limits and signal.
 * @returns The running server.
 * @throws {TypeError} When the token, listen URL or public URL is unusable.
 * @throws {RangeError} When a limit is not a positive number, `urlTtlMs` is below
 *   1000 ms or above a day, or the signing key is too short.
 * @throws {Deno.errors.AddrInUse} When the port is taken.
 */
export async function serveRendezvous(options: RendezvousOptions): Promise<RendezvousServer> {
  options.signal?.throwIfAborted();
  const token = validateToken(options.token, "rendezvous token");
  const { hostname, port } = parseListen(options.listen ?? "ws://127.0.0.1:0");
  const publicUrl = options.publicUrl === undefined ? undefined : parsePublicUrl(options.publicUrl);
  const urlTtlMs = positiveOption("urlTtlMs", options.urlTtlMs, 60_000);
  if (urlTtlMs < MIN_URL_TTL_MS) {
    throw new RangeError(
      `Cannot serve rendezvous: urlTtlMs ${urlTtlMs} is below ${MIN_URL_TTL_MS} ms, too short for an executor to connect after registering`,
    );
  }
  if (urlTtlMs > MAX_URL_TTL_MS) {
    throw new RangeError(
      `Cannot serve rendezvous: urlTtlMs ${urlTtlMs} is above ${MAX_URL_TTL_MS} ms (a day): a signed URL is a credential that cannot be revoked`,
    );
  }
  const idleTimeout = positiveOption("idleTimeoutSeconds", options.idleTimeoutSeconds, 30);
  const maxBody = positiveOption("maxRequestBodyBytes", options.maxRequestBodyBytes, 16 * 1024);
  const maxFrameBytes = positiveOption(
    "maxFrameBytes",
    options.maxFrameBytes,
    DEFAULT_MAX_FRAME_BYTES,
  );
  const signer = await UrlSigner.create(options.signingKey);
  // Each signed executor URL opens one socket (a replayed one would take the executor's id).
  const usedUrls = new UsedUrls();
  const onEvent = options.onEvent;
  const emit = (event: RendezvousEvent): void => {
    if (onEvent === undefined) return;
    try {
      onEvent(event);
    } catch {
      // An event sink must not break serving.
    }
  };
  const detachWindowMs = options.detachWindowMs ?? DEFAULT_DETACH_WINDOW_MS;
  const router = new RelayRouter({
    detachWindowMs,
    maxExecutors: options.maxExecutors,
    maxHarnessSockets: options.maxHarnessSockets,
    maxStreams: options.maxStreams,
    maxStreamsPerHarness: options.maxStreamsPerHarness,
    reservedStreamsPerHarness: options.reservedStreamsPerHarness,
    maxFrameBytes,
    peerHighWaterBytes: options.peerHighWaterBytes,
    maxPeerQueueBytes: options.maxPeerQueueBytes,
    slowPeerTimeoutMs: options.slowPeerTimeoutMs,
    maxOfflineQueueBytes: options.maxOfflineQueueBytes,
    queueBudgetBytes: options.queueBudgetBytes,
    startupGraceMs: options.startupGraceMs ?? detachWindowMs,
    onEvent: emit,
  });
  // Frames received and not yet routed count against the router's budget too.
  const socketOptions = { maxFrameBytes, budget: router.queueBudget };

  function baseUrl(request: Request, server: string): string {
    if (publicUrl !== undefined) return publicUrl;
    const host = request.headers.get("host");
    return host !== null && HOST_HEADER.test(host) ? `ws://${host}` : server;
  }

  /**
   * `register` gives an executor its signed socket URL; `connect` gives a
   * harness one for that executor, so a harness that cannot send headers (a
   * Codex harness handed a URL) connects without holding the token.
   */
  async function register(
    request: Request,
    naming: string,
    id: string,
    action: string,
    server: string,
  ): Promise<Response> {
    const role = action === "connect" ? "harness" : "executor";
    const what = action === "connect" ? "issue a harness URL" : "register";
    if (request.method !== "POST") {
      throw new HttpError(
        405,
        "method_not_allowed",
        `Cannot ${request.method} ${naming} ${
          action === "connect" ? "connect" : "registration"
        }: use POST`,
      );
    }
    const auth = checkBearer(request.headers.get("authorization"), token);
    if (auth === "missing") {
      throw new HttpError(401, "unauthorized", `Cannot ${what}: a bearer token is required`);
    }
    if (auth === "wrong") {
      throw new HttpError(403, "forbidden", `Cannot ${what}: the token is not valid`);
    }
    checkExecutorId(id);
    await drainBody(request, maxBody, what);
    const refusal = router.admits(role, id);
    if (refusal !== undefined) {
      throw new HttpError(
        503,
        refusal,
        `Cannot ${what}: ${refusal.replaceAll("_", " ")}`,
      );
    }
    // An executor's URLs expire later one after another, and later than any
    // used for its id (see UsedUrls); a harness URL needs no order.
    const exp = role === "executor"
      ? usedUrls.issue(id, Date.now(), urlTtlMs)
      : Date.now() + urlTtlMs;
    const sig = await signer.sign(role, id, exp);
    const url = `${baseUrl(request, server)}/${role}/${id}?role=${role}&exp=${exp}&sig=${sig}`;
    if (role === "executor") emit({ type: "registered", executorId: id });
    return Response.json(
      // The earliest Codex executors also read `id`.
      naming === "environment"
        ? { environment_id: id, url }
        : role === "executor"
        ? { id, executor_id: id, url }
        : { executor_id: id, url },
      { headers: { "cache-control": "no-store" } },
    );
  }

  /** Refuses a socket URL whose signature is missing, expired or wrong. */
  async function checkSignedUrl(
    role: "executor" | "harness",
    id: string,
    params: URLSearchParams,
  ): Promise<void> {
    const defect = await signer.verify(role, id, params, Date.now());
    const again = role === "executor" ? "register again" : "ask for a new one";
    if (defect === "missing") {
      throw new HttpError(
        401,
        "unauthorized",
        role === "executor"
          ? "Cannot open executor socket: the URL is not signed; register first"
          : "Cannot open harness socket: the URL's signature is incomplete (exp and sig " +
            "come together from POST /cloud/executor/{id}/connect); or send the bearer token",
      );
    }
    if (defect === "expired") {
      throw new HttpError(
        401,
        "url_expired",
        `Cannot open ${role} socket: the signed URL has expired; ${again}`,
      );
    }
    if (defect !== undefined) {
      throw new HttpError(
        403,
        "bad_signature",
        `Cannot open ${role} socket: the URL signature is not valid`,
      );
    }
  }

  async function upgrade(
    request: Request,
    role: "executor" | "harness",
    id: string,
  ): Promise<Response> {
    if (request.method !== "GET") {
      throw new HttpError(
        405,
        "method_not_allowed",
        `Cannot ${request.method} a ${role} socket: use GET`,
      );
    }
    checkExecutorId(id);
    const url = new URL(request.url);
    const requestedRole = url.searchParams.get("role");
    if (requestedRole !== null && requestedRole !== role) {
      throw new HttpError(
        400,
        "invalid_role",
        `Cannot open a ${role} socket with role=${requestedRole}`,
      );
    }
    if (role === "executor") {
      await checkSignedUrl(role, id, url.searchParams);
    } else {
      // A harness comes with the token or with a URL from /connect; either
      // admits it (the token outlives the URL; a URL works whatever header
      // a proxy or a stale environment adds).
      const auth = checkBearer(request.headers.get("authorization"), token);
      if (auth !== "ok" && url.searchParams.has("sig")) {
        await checkSignedUrl(role, id, url.searchParams);
      } else if (auth === "missing") {
        throw new HttpError(
          401,
          "unauthorized",
          "Cannot open harness socket: a bearer token is required",
        );
      } else if (auth === "wrong") {
        throw new HttpError(403, "forbidden", "Cannot open harness socket: the token is not valid");
      }
    }
    // From here to the router everything is synchronous, so the admission holds.
    const refusal = router.admits(role, id);
    if (refusal !== undefined) {
      throw new HttpError(
        503,
        refusal,
        `Cannot open ${role} socket: ${refusal.replaceAll("_", " ")}`,
      );
    }
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      throw new HttpError(
        426,
        "upgrade_required",
        `Cannot open ${role} socket: a WebSocket upgrade is required`,
      );
    }
    // What Deno's upgrade checks besides, so a request it would refuse does not use a URL up.
    const connection = request.headers.get("connection")?.toLowerCase().split(",") ?? [];
    if (!connection.some((each) => each.trim() === "upgrade")) {
      throw new HttpError(
        400,
        BAD_UPGRADE,
        "Cannot upgrade to a WebSocket: 'connection' header must contain 'Upgrade'",
      );
    }
    if (!request.headers.get("sec-websocket-key")) {
      throw new HttpError(
        400,
        BAD_UPGRADE,
        "Cannot upgrade to a WebSocket: 'sec-websocket-key' header must be set",
      );
    }
    if (role === "executor") {
      if (!usedUrls.claim(id, Number(url.searchParams.get("exp")), Date.now(), urlTtlMs)) {
        throw new HttpError(
          403,
          "url_used",
          "Cannot open executor socket: this signed URL, or a later one for the executor, was used already; register again",
        );
      }
    }
    let upgraded: { socket: WebSocket; response: Response };
    try {
      upgraded = Deno.upgradeWebSocket(request, { idleTimeout });
    } catch (error) {
      // A header missing or wrong: the client's mistake, not an internal error.
      throw new HttpError(400, BAD_UPGRADE, badUpgradeMessage(error));
    }
    const { socket, response } = upgraded;
    const badFrames = new BadFrameReporter((error, dropped) =>
      emit({ type: "bad_frames", role, id, dropped, message: error.message })
    );
    const relay = RelaySocket.accept(socket, {
      ...socketOptions,
      onProtocolError: badFrames.onProtocolError,
    });
    relay.closed.then(() => badFrames.close());
    // A JSON-RPC client dialled a relay path (a `serve` URL's way of talking):
    // tell it at once instead of dropping its messages until it times out.
    socket.addEventListener("message", (event) => {
      if (typeof event.data === "string") {
        relay.close(NOT_RELAY_FRAMES, UNSUPPORTED_DATA).catch(() => {});
      }
    });
    if (role === "executor") router.addExecutor(id, relay);
    else router.addHarness(id, relay);
    return response;
  }

  let serverUrl = "";
  const handler = async (request: Request): Promise<Response> => {
    let target: "register" | "connect" | "executor" | "harness" | "other" = "other";
    try {
      const path = requestPath(request);
      const registration = REGISTER_PATH.exec(path);
      if (registration !== null) {
        target = registration[3] === "connect" ? "connect" : "register";
        return await register(
          request,
          registration[1],
          registration[2],
          registration[3],
          serverUrl,
        );
      }
      const socket = SOCKET_PATH.exec(path);
      if (socket !== null) {
        target = socket[1] as "executor" | "harness";
        return await upgrade(request, target, socket[2]);
      }
      throw new HttpError(404, "not_found", `Cannot find ${path}`);
    } catch (error) {
      await request.body?.cancel().catch(() => {});
      if (error instanceof HttpError) {
        emit({ type: "refused", target, status: error.status, code: error.code });
        const headers: Record<string, string> = {};
        if (error.status === 405) {
          headers.allow = target === "register" || target === "connect" ? "POST" : "GET";
        }
        if (error.status === 401) headers["www-authenticate"] = 'Bearer realm="outpost"';
        return errorResponse(error.status, error.code, error.message, headers);
      }
      emit({ type: "refused", target, status: 500, code: "internal_error" });
      return errorResponse(500, "internal_error", "Cannot serve the request: internal error");
    }
  };

  // Out of file descriptors, it keeps serving what it has and listens again (see `Listener`).
  let listener: Listener;
  try {
    listener = new Listener({ hostname, port, handler, onEvent: emit });
  } catch (error) {
    await router.close();
    throw error;
  }
  const addr = listener.addr;
  serverUrl = `ws://${hostUrl(addr.hostname, addr.port)}`;
  const url = serverUrl;
  const registryUrl = `http://${hostUrl(addr.hostname, addr.port)}`;

  const signal = options.signal;
  const onAbort = (): void => {
    close();
  };
  const closedSignal = Promise.withResolvers<void>();
  let closing: Promise<void> | undefined;
  function close(): Promise<void> {
    closing ??= (async () => {
      signal?.removeEventListener("abort", onAbort);
      await router.close();
      await listener.close();
      closedSignal.resolve();
    })();
    return closing;
  }
  signal?.addEventListener("abort", onAbort, { once: true });
  const closed = closedSignal.promise;

  return {
    url,
    registryUrl,
    closed,
    stats: () => router.stats(),
    close,
    [Symbol.asyncDispose]: close,
  };
}
