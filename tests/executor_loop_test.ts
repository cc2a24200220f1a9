/**
 * runExecutor against a small fake registry (a real HTTP server on
 * 127.0.0.1): registration, which failures are fatal and which are retried,
 * backoff growth, cap and reset, and shutdown. The end-to-end path through a
 * real rendezvous is in cli_e2e_test.ts.
 */

import assert from "node:assert/strict";
import { ProtocolError, RelayClosedError, StreamResetError } from "../lib/errors.ts";
import { RESET_MESSAGE_TOO_LARGE } from "../lib/mux/reset_reasons.ts";
import { StreamMux } from "../lib/mux/stream_mux.ts";
import { RelaySocket } from "../lib/relay/relay_socket.ts";
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, type RelayFrame } from "../lib/relay/frame_codec.ts";
import { dataFrame } from "./_support/frames.ts";
import {
  MIN_URL_TTL_MS,
  type RendezvousOptions,
  type RendezvousServer,
  serveRendezvous,
} from "../lib/server/rendezvous_server.ts";
import { RegistrationError, RESUME_RETRY_MS, runExecutor } from "../lib/server/executor_loop.ts";
import type {
  RemoteExecutorEvent,
  RemoteExecutorHandle,
  RunExecutorOptions,
} from "../lib/server/executor_loop.ts";
import { Executor } from "../lib/exec/executor.ts";
import {
  MAX_ANSWER_BYTES,
  MAX_ERROR_BODY_BYTES,
  normalizeRegistryUrl,
  registerExecutor,
  validateExecutorId,
} from "../lib/server/_registration.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { TcpProxy } from "./_support/tcp_proxy.ts";
import { connect } from "../lib/client/connect.ts";
import { UrlSigner } from "../lib/server/_signed_url.ts";
import { RemoteCommand } from "../lib/client/remote_command.ts";

const TOKEN = "test-token-0123456789abcdef";

interface Seen {
  path: string;
  authorization: string | null;
  method: string;
}

/** A registry on 127.0.0.1 whose answers come from `answer`, recording each request. */
function fakeRegistry(answer: (request: Request, n: number) => Response | Promise<Response>) {
  const seen: Seen[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    seen.push({
      path: new URL(request.url).pathname,
      authorization: request.headers.get("authorization"),
      method: request.method,
    });
    return answer(request, seen.length);
  });
  const url = `http://127.0.0.1:${server.addr.port}`;
  return {
    url,
    seen,
    server,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/**
 * A registry on 127.0.0.1 that streams `head` and then filler bytes up to
 * `total`, 64 KiB at a time, recording how much it sent and whether the
 * client cancelled the body.
 */
function streamingRegistry(status: number, head: string, total: number) {
  const first = new TextEncoder().encode(head);
  const filler = new Uint8Array(64 * 1024).fill(0x61);
  const cancelled = Promise.withResolvers<void>();
  const state = { sent: 0, cancelled: cancelled.promise };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (state.sent >= total) return controller.close();
        const chunk = state.sent === 0 && first.length > 0 ? first : filler;
        const part = chunk.subarray(0, Math.min(chunk.length, total - state.sent));
        controller.enqueue(part);
        state.sent += part.length;
      },
      cancel() {
        cancelled.resolve();
      },
    });
    return new Response(body, { status, headers: { "content-type": "application/json" } });
  });
  return Object.assign(state, {
    url: `http://127.0.0.1:${server.addr.port}`,
    [Symbol.asyncDispose]: () => server.shutdown(),
  });
}

/** A registration answer for box-1 padded to exactly `size` bytes. */
function answerOfSize(size: number): string {
  const head = JSON.stringify({ executor_id: "box-1", url: "ws://127.0.0.1:1/e", pad: "" });
  return head.replace('"pad":""', `"pad":"${"p".repeat(size - head.length)}"`);
}

/** A sleep that records each delay and returns at once (no real waiting). */
function recordingSleep(delays: number[], stopAfter: number, stop: () => void) {
  return (ms: number, signal: AbortSignal): Promise<void> => {
    delays.push(ms);
    if (delays.length >= stopAfter) stop();
    if (signal.aborted) return Promise.reject(signal.reason);
    return Promise.resolve();
  };
}

/**
 * Runs an executor for box-1 (no jitter unless `options` sets it) until it
 * has waited `count` times, and returns those waits; nothing really waits.
 */
async function waitsTaken(
  options: Partial<RunExecutorOptions> & { registry: string },
  count: number,
): Promise<number[]> {
  const delays: number[] = [];
  const stop = new AbortController();
  const handle = runExecutor({
    executorId: "box-1",
    token: TOKEN,
    jitter: 0,
    signal: stop.signal,
    sleep: recordingSleep(delays, count, () => stop.abort()),
    ...options,
  });
  await withDeadline(handle.closed, 10_000, `stop after ${count} waits`);
  return delays;
}

/** A rendezvous stand-in that accepts each WebSocket and closes it as it opens; counts them. */
function closingRendezvous(): {
  server: Deno.HttpServer<Deno.NetAddr>;
  url: string;
  accepted: () => number;
} {
  let accepted = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    accepted++;
    socket.onopen = () => socket.close(1000, "bye");
    return response;
  });
  const url = `ws://127.0.0.1:${server.addr.port}/executor/box-1?role=executor&sig=s`;
  return { server, url, accepted: () => accepted };
}

/** A free loopback port with nothing listening on it. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test("registerExecutor posts to /cloud/executor/{id}/register with the bearer token", async () => {
  await using registry = fakeRegistry(() =>
    json({ executor_id: "box-1", url: "ws://127.0.0.1:1/executor/box-1?role=executor&sig=x" })
  );
  const result = await registerExecutor(registry.url, "box-1", TOKEN);
  assert.equal(result.executorId, "box-1");
  assert.equal(result.url, "ws://127.0.0.1:1/executor/box-1?role=executor&sig=x");
  assert.deepEqual(registry.seen, [{
    path: "/cloud/executor/box-1/register",
    authorization: `Bearer ${TOKEN}`,
    method: "POST",
  }]);
});

Deno.test("registerExecutor refuses a 401 as fatal with the registry's message", async () => {
  await using registry = fakeRegistry(() =>
    json({ error: { code: "unauthorized", message: "Token is not valid" } }, 401)
  );
  const error = await registerExecutor(registry.url, "box-1", TOKEN).catch((e) => e);
  assert.ok(error instanceof RegistrationError);
  assert.equal(error.status, 401);
  assert.equal(error.code, "unauthorized");
  assert.equal(error.retryable, false);
  assert.match(error.message, /refused the token \(401 unauthorized\): Token is not valid/);
  assert.ok(!error.message.includes(TOKEN));
});

Deno.test("registerExecutor does not follow redirects", async () => {
  await using target = fakeRegistry(() => json({ executor_id: "box-1", url: "ws://x/" }));
  await using registry = fakeRegistry(() =>
    new Response(null, { status: 307, headers: { location: `${target.url}/elsewhere` } })
  );
  const error = await registerExecutor(registry.url, "box-1", TOKEN).catch((e) => e);
  assert.ok(error instanceof RegistrationError);
  assert.equal(error.status, 307);
  assert.equal(error.retryable, false);
  assert.equal(target.seen.length, 0);
});

Deno.test("registerExecutor rejects an answer naming another executor", async () => {
  await using registry = fakeRegistry(() => json({ executor_id: "other", url: "ws://x/" }));
  const error = await registerExecutor(registry.url, "box-1", TOKEN).catch((e) => e);
  assert.ok(error instanceof ProtocolError);
  assert.match(error.message, /confirmed another id "other"/);
});

Deno.test("registerExecutor rejects malformed answers", async () => {
  const bodies: (string | unknown)[] = [
    "not json",
    { executor_id: "box-1" },
    { executor_id: "box-1", url: "http://127.0.0.1/x" },
    { executor_id: "box-1", url: "::" },
  ];
  for (const body of bodies) {
    await using registry = fakeRegistry(() =>
      typeof body === "string" ? new Response(body) : json(body)
    );
    const error = await registerExecutor(registry.url, "box-1", TOKEN).catch((e) => e);
    assert.ok(error instanceof ProtocolError, String(error));
  }
});

Deno.test("registerExecutor reads an answer of up to 64 KiB and refuses a longer one unread", async () => {
  const atCap = answerOfSize(MAX_ANSWER_BYTES);
  await using exact = streamingRegistry(200, atCap, atCap.length);
  const result = await registerExecutor(exact.url, "box-1", TOKEN);
  assert.equal(result.url, "ws://127.0.0.1:1/e");

  const onePast = answerOfSize(MAX_ANSWER_BYTES + 1);
  await using past = streamingRegistry(200, onePast, onePast.length);
  const error = await registerExecutor(past.url, "box-1", TOKEN).catch((e) => e);
  assert.ok(error instanceof ProtocolError, String(error));
  assert.match(error.message, /the registry's answer exceeds 65536 bytes/);

  // An endless-looking answer: the client stops reading and cancels the body.
  const total = 64 * 1024 * 1024;
  await using huge = streamingRegistry(200, '{"executor_id":"box-1","pad":"', total);
  const refused = await registerExecutor(huge.url, "box-1", TOKEN).catch((e) => e);
  assert.ok(refused instanceof ProtocolError, String(refused));
  assert.match(refused.message, /exceeds 65536 bytes/);
  await withDeadline(huge.cancelled, 5000, "the registry sees its body cancelled");
  assert.ok(huge.sent < total, `the registry sent all ${huge.sent} bytes`);
});

Deno.test("registerExecutor quotes at most 4 KiB of an error body and cancels the rest", async () => {
  const body = JSON.stringify({ error: { code: "busy", message: "" } });
  const atCap = body.replace(
    '"message":""',
    `"message":"${"m".repeat(MAX_ERROR_BODY_BYTES - body.length)}"`,
  );
  await using exact = streamingRegistry(503, atCap, atCap.length);
  const quoted = await registerExecutor(exact.url, "box-1", TOKEN).catch((e) => e);
  assert.ok(quoted instanceof RegistrationError);
  assert.equal(quoted.code, "busy");
  assert.ok(quoted.message.endsWith(`: ${"m".repeat(MAX_ERROR_BODY_BYTES - body.length)}`));

  const onePast = "e".repeat(MAX_ERROR_BODY_BYTES + 1);
  await using past = streamingRegistry(503, onePast, onePast.length);
  const cut = await registerExecutor(past.url, "box-1", TOKEN).catch((e) => e);
  assert.ok(cut instanceof RegistrationError);
  assert.ok(
    cut.message.endsWith(`: ${"e".repeat(MAX_ERROR_BODY_BYTES)}`),
    cut.message.slice(0, 80),
  );

  const total = 64 * 1024 * 1024;
  await using huge = streamingRegistry(503, "", total);
  const error = await registerExecutor(huge.url, "box-1", TOKEN).catch((e) => e);
  assert.ok(error instanceof RegistrationError);
  assert.equal(error.status, 503);
  assert.equal(error.retryable, true);
  assert.ok(error.message.length < MAX_ERROR_BODY_BYTES + 200, `${error.message.length} chars`);
  await withDeadline(huge.cancelled, 5000, "the registry sees its body cancelled");
  assert.ok(huge.sent < total, `the registry sent all ${huge.sent} bytes`);
});

Deno.test("registerExecutor times out a silent registry as retryable", async () => {
  let release!: () => void;
  const hold = new Promise<void>((resolve) => (release = resolve));
  await using registry = fakeRegistry(async () => {
    await hold;
    return json({});
  });
  const error = await registerExecutor(registry.url, "box-1", TOKEN, { timeoutMs: 100 })
    .catch((e) => e);
  release();
  assert.ok(error instanceof RegistrationError);
  assert.equal(error.retryable, true);
  assert.match(error.message, /timed out after 100 ms/);
});

Deno.test("normalizeRegistryUrl and validateExecutorId check their input", () => {
  assert.equal(normalizeRegistryUrl(" ws://127.0.0.1:8700/// "), "http://127.0.0.1:8700");
  assert.equal(normalizeRegistryUrl("https://r.example/base/"), "https://r.example/base");
  assert.throws(() => normalizeRegistryUrl(""), TypeError);
  assert.throws(() => normalizeRegistryUrl("ftp://x"), /scheme ftp: is not/);
  assert.equal(validateExecutorId("a".repeat(256)), "a".repeat(256));
  assert.throws(() => validateExecutorId("a".repeat(257)), /length 257 exceeds 256/);
  assert.throws(() => validateExecutorId(""), /empty/);
  assert.throws(() => validateExecutorId("a/b"), /only ASCII letters/);
  assert.throws(() => validateExecutorId(" a"), /only ASCII letters/);
});

/** `runExecutor` for box-1 at `registry`, recording its events. */
function recordedExecutor(registry: string) {
  const events: RemoteExecutorEvent[] = [];
  const handle = runExecutor({
    registry,
    executorId: "box-1",
    token: TOKEN,
    onEvent: (event) => events.push(event),
  });
  return { handle, events };
}

Deno.test("runExecutor stops with a clear error when the registry refuses the token", async () => {
  await using registry = fakeRegistry(() =>
    json({ error: { code: "forbidden", message: "Wrong token" } }, 403)
  );
  const { handle, events } = recordedExecutor(registry.url);
  const error = await withDeadline(handle.closed.catch((e) => e), 5000, "fatal stop");
  assert.ok(error instanceof RegistrationError);
  assert.match(error.message, /refused the token \(403 forbidden\): Wrong token/);
  assert.equal(registry.seen.length, 1, "a refused token is not retried");
  assert.equal(handle.status, "closed");
  assert.equal(events.at(-1)?.type, "closed");
  assert.ok(!JSON.stringify(events.map((e) => ({ ...e }))).includes(TOKEN));
  await handle.close();
});

Deno.test("runExecutor treats an answer for another executor id as fatal", async () => {
  await using registry = fakeRegistry(() => json({ executor_id: "box-2", url: "ws://x/" }));
  const handle = runExecutor({ registry: registry.url, executorId: "box-1", token: TOKEN });
  const error = await withDeadline(handle.closed.catch((e) => e), 5000, "fatal stop");
  assert.ok(error instanceof ProtocolError);
  assert.equal(registry.seen.length, 1);
});

Deno.test("runExecutor retries 5xx answers with doubling backoff capped at the maximum", async () => {
  await using registry = fakeRegistry(() =>
    json({ error: { code: "unavailable", message: "busy" } }, 503)
  );
  const delays = await waitsTaken({ registry: registry.url }, 7);
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  assert.equal(registry.seen.length, 7);
});

Deno.test("runExecutor retries an unreachable registry and applies jitter within bounds", async () => {
  let flip = 0;
  const delays = await waitsTaken({
    registry: `http://127.0.0.1:${closedPort()}`,
    jitter: 0.2,
    random: () => (flip++ % 2 === 0 ? 0 : 0.999999),
  }, 4);
  assert.deepEqual(delays, [800, 2400, 3200, 9600]);
});

Deno.test("runExecutor retries a failed socket connect and resets backoff after a good connect", async () => {
  // The rendezvous side: a WebSocket endpoint that accepts and then closes at once.
  const { server: ws, url: good, accepted } = closingRendezvous();
  const bad = `ws://127.0.0.1:${closedPort()}/executor/box-1?role=executor&sig=s`;
  // Registrations 1 and 2 hand out a dead URL, 3 a good one, 4 a dead one again.
  await using registry = fakeRegistry((_request, n) =>
    json({ executor_id: "box-1", url: n === 3 ? good : bad })
  );
  const events: string[] = [];
  const delays = await waitsTaken(
    { registry: registry.url, onEvent: (event) => events.push(event.type) },
    4,
  );
  await ws.shutdown();
  assert.equal(accepted(), 1);
  // dead, dead (doubling), good connect then loss (reset to 1 s), dead (doubling from 1 s).
  assert.deepEqual(delays, [1000, 2000, 1000, 2000]);
  assert.ok(events.includes("connected"));
  assert.ok(events.includes("disconnected"));
});

Deno.test("runExecutor retries at most RESUME_RETRY_MS apart for the detach window after a lost socket, then backs off to the maximum", async () => {
  // A rendezvous that accepts the socket and loses it at once, then a registry that is down.
  const { server: ws, url: good } = closingRendezvous();
  await using registry = fakeRegistry((_request, n) =>
    n === 1
      ? json({ executor_id: "box-1", url: good })
      : json({ error: { code: "unavailable", message: "down" } }, 503)
  );
  const delays = await waitsTaken({ registry: registry.url }, 10);
  await ws.shutdown();
  assert.equal(RESUME_RETRY_MS, 5_000);
  // Within 30 s of the loss (by the waits): doubling, capped at 5 s; past it, the grown backoff.
  assert.deepEqual(delays, [1000, 2000, 4000, 5000, 5000, 5000, 5000, 5000, 30000, 30000]);
});

Deno.test("runExecutor says why the rendezvous refused its socket: HTTP 401 for a signed URL that expired on the way", async () => {
  await using rendezvous = await serveRendezvous({ token: TOKEN, urlTtlMs: MIN_URL_TTL_MS });
  // A registry front whose first answer arrives after the URL's lifetime (a slow path).
  let answers = 0;
  const front = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const upstream = await fetch(`${rendezvous.registryUrl}${new URL(req.url).pathname}`, {
      method: "POST",
      headers: { authorization: req.headers.get("authorization")! },
      body: await req.arrayBuffer(),
    });
    const body = await upstream.json();
    if (++answers === 1) {
      const exp = Number(new URL(body.url).searchParams.get("exp"));
      await until(() => Date.now() > exp, 5_000, "the signed URL to expire");
    }
    return Response.json(body, { status: upstream.status });
  });
  const retries: RemoteExecutorEvent[] = [];
  const connected = Promise.withResolvers<void>();
  const handle = runExecutor({
    registry: `http://127.0.0.1:${front.addr.port}`,
    executorId: "box-ttl",
    token: TOKEN,
    onEvent: (event) => {
      if (event.type === "retrying") retries.push(event);
      if (event.type === "connected") connected.resolve();
    },
    sleep: () => Promise.resolve(),
  });
  try {
    await withDeadline(connected.promise, 10_000, "the executor connecting on its second try");
  } finally {
    await handle.close();
    await front.shutdown();
  }
  assert.equal(retries.length, 1);
  const message = (retries[0] as { error?: Error }).error?.message ?? "";
  // The rendezvous' own code and message, from the body of the refused upgrade.
  assert.match(
    message,
    /^Cannot connect executor socket to ws:\/\/127\.0\.0\.1:\d+\/executor\/box-ttl: the rendezvous refused it with HTTP 401 url_expired: Cannot open executor socket: the signed URL has expired; register again$/,
  );
});

Deno.test("runExecutor hints at an expired signed URL for a bare 401 and leaves the signature out", async () => {
  // A socket endpoint that refuses every upgrade with 401 and no body.
  const refuser = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response(null, { status: 401 }),
  );
  const url = `ws://127.0.0.1:${refuser.addr.port}/executor/box-1?role=executor&sig=secret-sig`;
  await using registry = fakeRegistry(() => json({ executor_id: "box-1", url }));
  const errors: string[] = [];
  const stop = new AbortController();
  const handle = runExecutor({
    registry: registry.url,
    executorId: "box-1",
    token: TOKEN,
    signal: stop.signal,
    onEvent: (event) => {
      if (event.type === "retrying") errors.push(event.error?.message ?? "");
    },
    sleep: recordingSleep([], 1, () => stop.abort()),
  });
  await withDeadline(handle.closed, 10_000, "stop after the first retry");
  await refuser.shutdown();
  assert.deepEqual(errors, [
    `Cannot connect executor socket to ws://127.0.0.1:${refuser.addr.port}/executor/box-1: ` +
    "the rendezvous refused it with HTTP 401 (the signed URL expired before the socket connected, or arrived unsigned)",
  ]);
});

Deno.test("runExecutor validates its options", () => {
  const base = { registry: "http://127.0.0.1:1", executorId: "box-1", token: TOKEN };
  assert.throws(() => runExecutor({ ...base, executorId: "bad id" }), TypeError);
  assert.throws(() => runExecutor({ ...base, registry: "nope" }), TypeError);
  assert.throws(() => runExecutor({ ...base, token: "  " }), /token is empty/);
  assert.throws(() => runExecutor({ ...base, jitter: 2 }), RangeError);
  assert.throws(
    () => runExecutor({ ...base, initialBackoffMs: 5000, maxBackoffMs: 1000 }),
    RangeError,
  );
});

Deno.test("runExecutor stops promptly when closed during a backoff wait", async () => {
  await using registry = fakeRegistry(() => json({ error: { code: "x", message: "y" } }, 502));
  const events: RemoteExecutorEvent[] = [];
  let waiting!: () => void;
  const inWait = new Promise<void>((resolve) => (waiting = resolve));
  const handle = runExecutor({
    registry: registry.url,
    executorId: "box-1",
    token: TOKEN,
    onEvent: (event) => {
      events.push(event);
      if (event.type === "retrying") waiting();
    },
  });
  await withDeadline(inWait, 5000, "first retry");
  assert.equal(handle.status, "waiting");
  await withDeadline(handle.close(), 2000, "close during a 1 s wait");
  await handle.closed;
  assert.equal(handle.status, "closed");
});

/** A rendezvous with executor "box-1" registered and connected to it; both closed on dispose. */
async function box1(
  rendezvousOptions: Partial<RendezvousOptions> = {},
  executorOptions: Partial<RunExecutorOptions> = {},
): Promise<{ rendezvous: RendezvousServer; handle: RemoteExecutorHandle } & AsyncDisposable> {
  const rendezvous = await serveRendezvous({ token: TOKEN, ...rendezvousOptions });
  const handle = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-1",
    token: TOKEN,
    ...executorOptions,
  });
  const dispose = async () => {
    await handle[Symbol.asyncDispose]();
    await rendezvous[Symbol.asyncDispose]();
  };
  try {
    await until(() => handle.status === "connected", 10_000, "executor connected");
  } catch (error) {
    await dispose();
    throw error;
  }
  return { rendezvous, handle, [Symbol.asyncDispose]: dispose };
}

const STREAM_LIMIT = 100_000; // two segments

for (
  const [how, limits] of [
    ["maxMessageBytes", () => ({ maxMessageBytes: STREAM_LIMIT })],
    ["the given executor's limit", () => ({
      executor: new Executor({ maxMessageBytes: STREAM_LIMIT }),
    })],
  ] as const
) {
  Deno.test(`runExecutor answers a message at ${how} and resets a stream whose message passes it`, async () => {
    await checkStreamLimit(limits());
  });
}

async function checkStreamLimit(limits: Partial<RunExecutorOptions>): Promise<void> {
  const limit = STREAM_LIMIT;
  await using _executor = limits.executor; // a given executor is the caller's to close
  await using box = await box1({}, limits);
  const rendezvous = box.rendezvous;
  const socket = await RelaySocket.connect(`${rendezvous.url}/harness/box-1?role=harness`, {
    token: TOKEN,
  });
  await using mux = new StreamMux({ role: "harness" });
  mux.attach(socket);
  /** An environment/info request of exactly `size` bytes. */
  const request = (size: number): string => {
    const head = JSON.stringify({ id: 1, method: "environment/info", params: { pad: "" } });
    return head.replace('"pad":""', `"pad":"${"x".repeat(size - head.length)}"`);
  };

  const atLimit = mux.open();
  await atLimit.send(request(limit));
  const reply = await withDeadline(atLimit[Symbol.asyncIterator]().next(), 10_000, "reply");
  assert.ok(JSON.parse(reply.value).result.shell, reply.value.slice(0, 200));
  await atLimit.close();

  const past = mux.open();
  await past.send(request(limit + 1));
  const error = await withDeadline(past[Symbol.asyncIterator]().next(), 10_000, "reset")
    .then((r) => new Error(`expected a reset, got ${String(r.value).slice(0, 200)}`), (e) => e);
  assert.ok(error instanceof StreamResetError, String(error));
  assert.equal(error.reason, RESET_MESSAGE_TOO_LARGE);
}

Deno.test("a relay stream's message that is not valid UTF-8 gets -32700 and the stream goes on", async () => {
  await using box = await box1();
  const rendezvous = box.rendezvous;
  const socket = await RelaySocket.connect(`${rendezvous.url}/harness/box-1?role=harness`, {
    token: TOKEN,
  });
  await using mux = new StreamMux({ role: "harness" });
  mux.attach(socket);
  await using stream = mux.open();
  const replies = stream[Symbol.asyncIterator]();
  const utf8 = new TextEncoder();
  /** An environment/info request whose `pad` string holds `middle` as raw bytes. */
  const request = (id: number, middle: number[]): Uint8Array =>
    Uint8Array.from([
      ...utf8.encode(`{"id":${id},"method":"environment/info","params":{"pad":"`),
      ...middle,
      ...utf8.encode('"}}'),
    ]);
  // Sent as bytes: a lone 0xFF, a truncated 2-byte sequence, an overlong "/".
  for (const bad of [[0xff], [0x61, 0xc3], [0xc0, 0xaf]]) {
    await stream.binary.send(request(1, bad));
    const reply = JSON.parse((await withDeadline(replies.next(), 10_000, "reply")).value);
    assert.equal(reply.id, null, JSON.stringify(reply));
    assert.equal(reply.error.code, -32700);
    assert.match(reply.error.message, /not valid UTF-8/);
  }
  // Well-formed text, U+FFFD itself included, is still read.
  await stream.binary.send(request(2, [...utf8.encode("\uFFFDé")]));
  const good = JSON.parse((await withDeadline(replies.next(), 10_000, "reply")).value);
  assert.equal(good.id, 2, JSON.stringify(good));
  assert.ok(good.result.shell);
});

/**
 * A Codex v1 harness (one frame per message, no acks) sends a request frame
 * one byte past a socket's 256 KiB limit: the side that refuses it (the
 * rendezvous, or with a larger rendezvous limit the executor) resets that
 * stream `message_too_large` at once, and a frame at the limit, and the
 * socket's other streams, are served.
 */
for (const refuser of ["rendezvous", "executor"] as const) {
  Deno.test(`a harness frame past the ${refuser}'s frame limit resets its stream message_too_large`, async () => {
    const limit = DEFAULT_MAX_FRAME_BYTES;
    await using box = await box1({ maxFrameBytes: refuser === "executor" ? 2 * limit : limit });
    const rendezvous = box.rendezvous;
    await using socket = await RelaySocket.connect(
      `${rendezvous.url}/harness/box-1?role=harness`,
      { token: TOKEN, maxFrameBytes: 2 * limit },
    );
    const frames = socket[Symbol.asyncIterator]();
    /** A legacy data frame of exactly `size` bytes carrying an environment/info request. */
    const request = (streamId: string, size: number): RelayFrame => {
      const build = (pad: number) =>
        dataFrame(
          streamId,
          0,
          `{"id":1,"method":"environment/info","params":{"p":"${"x".repeat(pad)}"}}`,
        );
      let pad = size - encodeFrame(build(0)).length;
      // The payload's length prefix grows with the padding: settle it.
      while (encodeFrame(build(pad)).length > size) pad--;
      return build(pad);
    };
    const next = async (what: string): Promise<RelayFrame> =>
      (await withDeadline(frames.next(), 10_000, what)).value;
    const past = request("past", limit + 1);
    assert.equal(encodeFrame(past).length, limit + 1);
    await socket.send(past);
    const reset = await next("reset of the stream past the limit");
    assert.equal(reset.streamId, "past");
    assert.deepEqual(reset.body, { kind: "reset", reason: RESET_MESSAGE_TOO_LARGE });
    // The executor's limit applies to its replies' frames, so at the limit the
    // request is answered (an environment/info reply is small).
    const at = request("at", limit);
    assert.equal(encodeFrame(at).length, limit);
    await socket.send(at);
    const reply = await next("reply at the limit");
    assert.equal(reply.streamId, "at");
    assert.equal(reply.body.kind, "data");
  });
}

Deno.test("runExecutor refuses a maxMessageBytes outside 1 KiB..64 MiB", () => {
  const base = { registry: "http://127.0.0.1:1", executorId: "box-1", token: TOKEN };
  assert.throws(() => runExecutor({ ...base, maxMessageBytes: 1023 }), RangeError);
  assert.throws(() => runExecutor({ ...base, maxMessageBytes: 64 * 1024 * 1024 + 1 }), RangeError);
});

Deno.test("runExecutor refuses a receiveBudgetBytes below its maxMessageBytes at once, and takes one at it", async () => {
  const base = { registry: "http://127.0.0.1:1", executorId: "box-1", token: TOKEN };
  assert.throws(
    () => runExecutor({ ...base, maxMessageBytes: 4096, receiveBudgetBytes: 4095 }),
    /receiveBudgetBytes 4095 is outside 4096\.\.9007199254740991/,
  );
  assert.throws(
    () => runExecutor({ ...base, receiveBudgetBytes: 16 * 1024 * 1024 - 1 }),
    /receiveBudgetBytes 16777215 is outside 16777216\./,
  );
  const handle = runExecutor({ ...base, maxMessageBytes: 4096, receiveBudgetBytes: 4096 });
  await withDeadline(handle.close(), 5_000, "close");
  await withDeadline(handle.closed, 5_000, "closed resolves");
});

Deno.test("runExecutor refuses an idleTimeoutMs outside 0..2^31-1 at once, instead of failing every connect", () => {
  const base = { registry: "http://127.0.0.1:1", executorId: "box-1", token: TOKEN };
  for (const bad of [-1, 2 ** 31]) {
    assert.throws(
      () => runExecutor({ ...base, idleTimeoutMs: bad }),
      new RegExp(`idleTimeoutMs ${bad} is outside 0\\.\\.2147483647`),
    );
  }
});

Deno.test("runExecutor refuses a registerTimeoutMs or connectTimeoutMs outside 1..2^31-1 at once", () => {
  const base = { registry: "http://127.0.0.1:1", executorId: "box-1", token: TOKEN };
  for (const name of ["registerTimeoutMs", "connectTimeoutMs"]) {
    for (const bad of [0, -1, NaN, 2 ** 31]) {
      assert.throws(
        () => runExecutor({ ...base, [name]: bad }),
        new RegExp(`${name} ${bad} is outside 1\\.\\.2147483647`),
      );
    }
  }
});

Deno.test("registerExecutor says why a connection failed, and gives up on a port fetch never connects to", async () => {
  const refused = await registerExecutor(`http://127.0.0.1:${closedPort()}`, "box-1", TOKEN)
    .catch((e) => e);
  assert.ok(refused instanceof RegistrationError);
  assert.equal(refused.retryable, true);
  assert.match(refused.message, /Connection refused/);
  const blocked = await registerExecutor("http://127.0.0.1:10080", "box-1", TOKEN)
    .catch((e) => e);
  assert.ok(blocked instanceof RegistrationError);
  assert.equal(blocked.retryable, false);
  assert.match(blocked.message, /port 10080.*run the rendezvous on another/);
});

Deno.test("runExecutor reports bad frames from its rendezvous (the first at once, the rest when the socket closes), and keeps serving the socket", async () => {
  // A rendezvous (not outpost's) that sends three frames that are not relay frames.
  const sent = Promise.withResolvers<void>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onopen = () => {
      for (let i = 0; i < 3; i++) socket.send(new Uint8Array([0xff, 0xff, 0xff]));
      sent.resolve();
    };
    return response;
  });
  const url = `ws://127.0.0.1:${server.addr.port}/executor/box-1?role=executor&sig=s`;
  await using registry = fakeRegistry(() => json({ executor_id: "box-1", url }));
  const { handle, events } = recordedExecutor(registry.url);
  await withDeadline(sent.promise, 10_000, "garbage sent");
  await until(() => events.some((e) => e.type === "bad_frames"), 10_000, "bad_frames");
  const reports = events.filter((e) => e.type === "bad_frames");
  assert.equal(reports.length, 1);
  assert.equal(reports[0].type === "bad_frames" && reports[0].dropped, 1);
  assert.equal(handle.status, "connected", "the socket is still served");
  await handle.close();
  const dropped = events.flatMap((e) => e.type === "bad_frames" ? [e.dropped] : []);
  assert.deepEqual(dropped, [1, 2], "all three reported, in two reports");
  await server.shutdown();
});

Deno.test("runExecutor replaces a socket that went silent without closing and is reachable again", async () => {
  await using rendezvous = await serveRendezvous({ token: TOKEN });
  // Registered through the proxy, the executor's signed URL points through it too.
  await using proxy = new TcpProxy(Number(new URL(rendezvous.url).port));
  const events: string[] = [];
  await using handle = runExecutor({
    registry: `http://127.0.0.1:${proxy.port}`,
    executorId: "box-silent",
    token: TOKEN,
    idleTimeoutMs: 400,
    initialBackoffMs: 50,
    jitter: 0,
    onEvent: (event) => events.push(event.type),
  });
  await until(() => handle.status === "connected", 10_000, "executor connected");
  const before = proxy.connections;
  assert.ok(proxy.silence() > 0);
  // Nothing closes the silenced socket: only the executor's own check can notice.
  await until(() => events.includes("disconnected"), 10_000, "the silent socket dropped");
  await until(
    () => handle.status === "connected" && proxy.connections > before,
    10_000,
    "a new executor socket",
  );
  await using conn = await connect(rendezvous.url, { executorId: "box-silent", token: TOKEN });
  const output = await withDeadline(
    new RemoteCommand(conn, "sh", { args: ["-c", "echo back"] }).output(),
    10_000,
    "a command on the returned executor",
  );
  assert.equal(new TextDecoder().decode(output.stdout), "back\n");
});

Deno.test("a harness given a signed URL from /connect runs a command without holding the token", async () => {
  await using box = await box1();
  const rendezvous = box.rendezvous;
  const answer = await fetch(`${rendezvous.registryUrl}/cloud/environment/box-1/connect`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  assert.equal(answer.status, 200);
  const { url } = await answer.json();
  await using conn = await connect(url); // no token, no executor id: the URL says it all
  const output = await withDeadline(
    new RemoteCommand(conn, "sh", { args: ["-c", "echo signed"] }).output(),
    10_000,
    "a command over a signed harness URL",
  );
  assert.equal(new TextDecoder().decode(output.stdout), "signed\n");
});

Deno.test("connect() says why a signed harness URL is refused: expired, or not signed for this executor", async () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  await using box = await box1({ signingKey: key });
  const exp = Date.now() - 1;
  const sig = await (await UrlSigner.create(key)).sign("harness", "box-1", exp);
  const url = `${box.rendezvous.url}/harness/box-1?role=harness&exp=${exp}&sig=${sig}`;
  await assert.rejects(connect(url), /signed harness URL has expired \(HTTP 401 url_expired\)/);
  const other = url.replace("/harness/box-1", "/harness/box-2");
  await assert.rejects(connect(other), /refused the URL's signature \(HTTP 403 bad_signature\)/);
});

/**
 * A harness on a signed URL whose socket drops after `exp`: without a token
 * the rendezvous refuses it back (401), and the connection says so at once
 * instead of retrying for the detach window; with a token, the token counts
 * and it reconnects.
 */
for (const withToken of [false, true]) {
  Deno.test(`a signed harness URL past its exp ${withToken ? "reconnects on the token" : "is refused back at once"}`, async () => {
    const key = crypto.getRandomValues(new Uint8Array(32));
    await using box = await box1({ signingKey: key });
    await using proxy = new TcpProxy(Number(new URL(box.rendezvous.url).port));
    const exp = Date.now() + 1_500;
    const sig = await (await UrlSigner.create(key)).sign("harness", "box-1", exp);
    const url = `ws://127.0.0.1:${proxy.port}/harness/box-1?role=harness&exp=${exp}&sig=${sig}`;
    const events: string[] = [];
    await using conn = await connect(url, {
      ...(withToken ? { token: TOKEN } : {}),
      detachWindowMs: 60_000,
      onEvent: (event) => events.push(event.type),
    });
    assert.ok((await conn.request<{ shell: unknown }>("environment/info")).shell);
    await until(() => Date.now() > exp, 5_000, "the URL's expiry");
    assert.equal(proxy.cut() > 0, true, "a socket to cut");
    if (withToken) {
      await until(() => events.includes("reconnected"), 10_000, "reconnected");
      assert.ok((await conn.request<{ shell: unknown }>("environment/info")).shell);
      return;
    }
    await withDeadline(conn.closed, 10_000, "the refused connection's close");
    assert.match(conn.closeReason ?? "", /^refused: .*url_expired/);
  });
}

Deno.test("runExecutor closed while a harness runs a program ends it first (the harness hears its exit), then resets the stream `shutdown` at once, not after the rendezvous' detach window", async () => {
  await using box = await box1();
  await using conn = await connect(box.rendezvous.url, { executorId: "box-1", token: TOKEN });
  const child = new RemoteCommand(conn, "sleep", { args: ["60"] }).spawn();
  await child.started;
  await box.handle.close();
  // The program ends first (SIGTERM) while the stream is up, and the harness
  // hears its exit; then the rendezvous, which keeps a stream 30 s for an
  // executor that went away, is told of the shutdown at once.
  const status = await withDeadline(child.status, 5_000, "the harness hearing of the exit");
  assert.equal(status.code, 143);
  await withDeadline(conn.closed, 5_000, "the harness hearing of the shutdown");
  assert.equal(conn.closeReason, "shutdown");
});

Deno.test("a harness asking for an executor that shut down gets executor_offline within SHUTDOWN_WAIT_MS, not the rendezvous' detach window of silence; one that restarts by then serves it", async () => {
  // A detach window longer than the connect's timeout: waited for, the
  // connect would fail on its timeout, not with the reset. (No startup grace:
  // a rendezvous in its first detach window waits for any executor.)
  await using box = await box1({ detachWindowMs: 60_000, startupGraceMs: 0 });
  await box.handle.close();
  await withDeadline(
    assert.rejects(
      connect(box.rendezvous.url, { executorId: "box-1", token: TOKEN, timeoutMs: 30_000 }),
      (error: unknown) => {
        assert.ok(error instanceof RelayClosedError, String(error));
        assert.match(error.message, /executor_offline/);
        return true;
      },
    ),
    20_000,
    "connect refused",
  );
  // Shut down again, and asked for before a new executor of the id arrives.
  await using again = runExecutor({
    registry: box.rendezvous.registryUrl,
    executorId: "box-1",
    token: TOKEN,
  });
  await until(() => again.status === "connected", 10_000, "the executor back");
  await again.close();
  const asking = connect(box.rendezvous.url, { executorId: "box-1", token: TOKEN });
  await using restarted = runExecutor({
    registry: box.rendezvous.registryUrl,
    executorId: "box-1",
    token: TOKEN,
  });
  await using conn = await withDeadline(asking, 10_000, "served by the restarted executor");
  assert.equal(conn.mode, "rendezvous");
  assert.equal(restarted.status, "connected");
});

Deno.test("runExecutor stops with a clear error when another executor takes its id, instead of taking it back for ever", async () => {
  await using box = await box1();
  const events: string[] = [];
  await using second = runExecutor({
    registry: box.rendezvous.registryUrl,
    executorId: "box-1",
    token: TOKEN,
    onEvent: (event) => events.push(event.type),
  });
  await assert.rejects(
    withDeadline(box.handle.closed, 10_000, "the first executor stopping"),
    /Cannot keep executor id box-1: another executor connected with it/,
  );
  assert.equal(box.handle.status, "closed");
  await until(() => second.status === "connected", 10_000, "the second executor connected");
  // The first took the id back once (a first `replaced` only reconnects);
  // replaced again, it stopped.
  assert.ok(events.filter((e) => e === "disconnected").length <= 1, events.join(","));
  // The one that stayed serves the id.
  await using conn = await connect(box.rendezvous.url, { executorId: "box-1", token: TOKEN });
  const output = await new RemoteCommand(conn, "sh", { args: ["-c", "echo kept"] }).output();
  assert.equal(new TextDecoder().decode(output.stdout), "kept\n");
});

Deno.test("runExecutor replaced once (a late connect attempt of its own, say) reconnects and keeps serving", async () => {
  await using box = await box1();
  // A socket for the same id, as a timed-out attempt reaching the rendezvous late.
  const { url } = await registerExecutor(box.rendezvous.registryUrl, "box-1", TOKEN);
  await using stale = await RelaySocket.connect(url);
  // The executor is replaced, reconnects (replacing the stale socket) and serves.
  await withDeadline(stale.closed, 10_000, "the stale socket replaced in turn");
  await until(() => box.handle.status === "connected", 10_000, "the executor back");
  await using conn = await connect(box.rendezvous.url, { executorId: "box-1", token: TOKEN });
  const output = await new RemoteCommand(conn, "sh", { args: ["-c", "echo back"] }).output();
  assert.equal(new TextDecoder().decode(output.stdout), "back\n");
});

/**
 * A rendezvous whose signed socket URLs lead through a proxy, an executor
 * whose first connects fail there (`fault`: "refusing" or "stalling") until
 * one has failed, then connected; and `replace()`, a socket for the same id
 * that the executor then replaces in turn, as a late connect attempt would.
 */
async function executorBehindFaultyProxy(fault: "refusing" | "stalling") {
  const reserved = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (reserved.addr as Deno.NetAddr).port;
  reserved.close();
  const rendezvous = await serveRendezvous({ token: TOKEN, publicUrl: `ws://127.0.0.1:${port}` });
  const proxy = new TcpProxy(Number(new URL(rendezvous.url).port), port);
  proxy[fault] = true;
  const events: RemoteExecutorEvent[] = [];
  const handle = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-1",
    token: TOKEN,
    initialBackoffMs: 100,
    connectTimeoutMs: 300,
    onEvent: (event) => events.push(event),
  });
  const dispose = async () => {
    await handle.close();
    await proxy[Symbol.asyncDispose]();
    await rendezvous.close();
  };
  try {
    await until(
      () => events.some((e) => e.type === "retrying" && e.error !== undefined),
      10_000,
      "a failed connect attempt",
    );
    proxy[fault] = false;
    await until(() => handle.status === "connected", 10_000, "the executor connected");
  } catch (error) {
    await dispose();
    throw error;
  }
  return {
    rendezvous,
    handle,
    /** Connects a socket for the same id; `replaced` waits for the executor to take the id back. */
    replace: async (replaced = true) => {
      const { url } = await registerExecutor(rendezvous.registryUrl, "box-1", TOKEN);
      const stale = await RelaySocket.connect(url);
      if (!replaced) return stale;
      await withDeadline(stale.closed, 10_000, "the stale socket replaced in turn");
      return stale;
    },
    [Symbol.asyncDispose]: dispose,
  };
}

Deno.test("runExecutor takes replacements while a connect attempt of its own that timed out may still arrive (until its URL expires)", async () => {
  await using box = await executorBehindFaultyProxy("stalling");
  // Without the timed-out attempt the second would stop the executor.
  for (let i = 0; i < 2; i++) {
    await box.replace();
    await until(() => box.handle.status === "connected", 10_000, "the executor back");
  }
  await using conn = await connect(box.rendezvous.url, { executorId: "box-1", token: TOKEN });
  const output = await new RemoteCommand(conn, "sh", { args: ["-c", "echo kept"] }).output();
  assert.equal(new TextDecoder().decode(output.stdout), "kept\n");
});

Deno.test("runExecutor is not excused by a refused connect attempt (it can never arrive): a second replacement stops it", async () => {
  await using box = await executorBehindFaultyProxy("refusing");
  await box.replace();
  await until(() => box.handle.status === "connected", 10_000, "the executor back");
  await using _stays = await box.replace(false);
  await assert.rejects(
    withDeadline(box.handle.closed, 10_000, "the executor stopping"),
    /Cannot keep executor id box-1: another executor connected with it/,
  );
  // The other socket keeps the id.
  await until(() => box.rendezvous.stats().executorSockets === 1, 5_000, "one executor socket");
});
