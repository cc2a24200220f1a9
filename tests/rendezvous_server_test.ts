/**
 * serveRendezvous over real loopback HTTP and WebSockets: the registry, signed
 * executor URLs, harness authentication, limits, and routing end to end.
 */

import assert from "node:assert/strict";
import { RelayClosedError } from "../lib/errors.ts";
import { encodeFrame, type RelayFrame } from "../lib/relay/frame_codec.ts";
import { type ReceivedFrame, RelaySocket } from "../lib/relay/relay_socket.ts";
import { TcpWebSocket } from "../lib/relay/_tcp_websocket.ts";
import {
  MAX_URL_TTL_MS,
  MIN_URL_TTL_MS,
  type RendezvousEvent,
  type RendezvousOptions,
  type RendezvousServer,
  serveRendezvous,
} from "../lib/server/rendezvous_server.ts";
import { checkBearer, parseBearer, readToken, tokensEqual } from "../lib/server/_token.ts";
import { UrlSigner } from "../lib/server/_signed_url.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { JsonLinesProcess } from "./_support/json_lines_process.ts";
import { portBelowEphemeral } from "./_support/ports.ts";

const TOKEN = "test-token-0123456789abcdef";
const DEADLINE_MS = 5_000;
const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

function data(streamId: string, text: string): RelayFrame {
  return {
    version: 1,
    streamId,
    ack: 0,
    ackBits: 0,
    body: { kind: "data", seq: 1, segmentIndex: 0, segmentCount: 1, payload: utf8.encode(text) },
  };
}

function payloadOf(frame: RelayFrame): string {
  assert.equal(frame.body.kind, "data");
  return utf8d.decode((frame.body as { payload: Uint8Array }).payload);
}

async function nextFrame(socket: RelaySocket, label: string): Promise<ReceivedFrame> {
  const result = await withDeadline(socket[Symbol.asyncIterator]().next(), DEADLINE_MS, label);
  assert.ok(!result.done, `socket closed while waiting for ${label}`);
  return result.value;
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
}

async function call(
  url: string,
  init: RequestInit & { token?: string } = {},
): Promise<Answer> {
  const headers = new Headers(init.headers);
  if (init.token !== undefined) headers.set("authorization", `Bearer ${init.token}`);
  const response = await fetch(url, { ...init, headers });
  const text = await response.text();
  return {
    status: response.status,
    body: text === "" ? {} : JSON.parse(text),
    headers: response.headers,
  };
}

function register(
  rz: RendezvousServer,
  id: string,
  token: string | null = TOKEN,
  init: RequestInit = {},
): Promise<Answer> {
  return call(`${rz.registryUrl}/cloud/executor/${id}/register`, {
    method: "POST",
    token: token ?? undefined,
    ...init,
  });
}

function assertError(answer: Answer, status: number, code: string): void {
  assert.equal(answer.status, status, JSON.stringify(answer.body));
  const error = answer.body.error as { code: string; message: string };
  assert.equal(error.code, code);
  assert.equal(typeof error.message, "string");
  assert.ok(error.message.length > 0);
}

async function withRendezvous(
  options: Partial<RendezvousOptions>,
  body: (rz: RendezvousServer, events: RendezvousEvent[]) => Promise<void>,
): Promise<void> {
  const events: RendezvousEvent[] = [];
  const rz = await serveRendezvous({ token: TOKEN, onEvent: (e) => events.push(e), ...options });
  try {
    await body(rz, events);
    // Tokens never reach the event log.
    assert.ok(!JSON.stringify(events).includes(TOKEN));
  } finally {
    await rz.close();
  }
}

async function executorSocket(rz: RendezvousServer, id: string): Promise<RelaySocket> {
  const answer = await register(rz, id);
  assert.equal(answer.status, 200);
  return await RelaySocket.connect(answer.body.url as string);
}

function harnessUrl(rz: RendezvousServer, id: string): string {
  return `${rz.url}/harness/${id}?role=harness`;
}

Deno.test("serveRendezvous registers an executor with a signed URL and routes a harness to it", async () => {
  await withRendezvous({ urlTtlMs: 60_000 }, async (rz, events) => {
    assert.match(rz.url, /^ws:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(rz.registryUrl, rz.url.replace("ws:", "http:"));
    const before = Date.now();
    const answer = await register(rz, "exec-1", TOKEN, { body: '{"name":"box"}' });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.executor_id, "exec-1");
    assert.equal(answer.body.id, "exec-1", "the earliest Codex executors read id");
    const url = new URL(answer.body.url as string);
    assert.equal(`${url.protocol}//${url.host}`, rz.url);
    assert.equal(url.pathname, "/executor/exec-1");
    assert.equal(url.searchParams.get("role"), "executor");
    const exp = Number(url.searchParams.get("exp"));
    assert.ok(exp >= before + 60_000 && exp <= Date.now() + 60_000, `exp ${exp}`);
    assert.match(url.searchParams.get("sig")!, /^[0-9a-f]{64}$/);
    assert.equal(answer.headers.get("cache-control"), "no-store");

    await using executor = await RelaySocket.connect(url);
    await using harness = await RelaySocket.connect(harnessUrl(rz, "exec-1"), { token: TOKEN });
    await harness.send(data("s1", "ping"));
    assert.equal(payloadOf(await nextFrame(executor, "ping")), "ping");
    await executor.send(data("s1", "pong"));
    assert.equal(payloadOf(await nextFrame(harness, "pong")), "pong");
    assert.deepEqual(rz.stats(), {
      executors: 1,
      executorSockets: 1,
      harnessSockets: 1,
      streams: 1,
      parkedStreams: 0,
    });
    assert.ok(events.some((e) => e.type === "registered" && e.executorId === "exec-1"));
  });
});

Deno.test("serveRendezvous reports a socket's bad frames (dropped, the socket serving on): the first at once, the rest of the burst when the socket closes", async () => {
  await withRendezvous({}, async (rz, events) => {
    const executor = await executorSocket(rz, "exec-bad");
    const ws = new WebSocket(harnessUrl(rz, "exec-bad"), {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    ws.binaryType = "arraybuffer";
    await withDeadline(new Promise((resolve) => ws.onopen = resolve), 5_000, "harness open");
    for (let i = 0; i < 3; i++) ws.send(new Uint8Array([0xff, 0xff, 0xff]));
    ws.send(encodeFrame(data("s-1", "after")));
    assert.equal(payloadOf(await nextFrame(executor, "the good frame routed")), "after");
    const reports = events.filter((e) => e.type === "bad_frames");
    assert.deepEqual(reports.map((e) => e.type === "bad_frames" && [e.role, e.id, e.dropped]), [
      ["harness", "exec-bad", 1],
    ]);
    assert.match((reports[0] as { message: string }).message, /Cannot decode frame/);
    const closed = new Promise((resolve) => ws.onclose = resolve);
    ws.close();
    await withDeadline(closed, 5_000, "harness closed");
    await until(
      () => events.filter((e) => e.type === "bad_frames").length === 2,
      5_000,
      "the rest reported",
    );
    const rest = events.filter((e) => e.type === "bad_frames")[1];
    assert.deepEqual(rest.type === "bad_frames" && [rest.role, rest.dropped], ["harness", 2]);
    await executor.close();
  });
});

Deno.test("serveRendezvous issues signed harness URLs (POST .../connect) that open a harness socket without the token", async () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  await withRendezvous({ signingKey: key }, async (rz) => {
    const connect = (id: string, token: string | null = TOKEN, naming = "executor") =>
      call(`${rz.registryUrl}/cloud/${naming}/${id}/connect`, {
        method: "POST",
        token: token ?? undefined,
        body: '{"harness_public_key":"ignored"}',
      });
    assertError(await connect("exec-1", null), 401, "unauthorized");
    assertError(await connect("exec-1", `${TOKEN}x`), 403, "forbidden");
    assertError(await connect("bad.id"), 400, "invalid_executor_id");
    const answer = await connect("exec-1");
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.equal(answer.body.executor_id, "exec-1");
    assert.equal(answer.headers.get("cache-control"), "no-store");
    const url = new URL(answer.body.url as string);
    assert.equal(url.pathname, "/harness/exec-1");
    assert.equal(url.searchParams.get("role"), "harness");
    const environment = await connect("exec-1", TOKEN, "environment");
    assert.equal(environment.body.environment_id, "exec-1");

    await using executor = await executorSocket(rz, "exec-1");
    await using harness = await RelaySocket.connect(url); // no token
    // A token that is not valid (stale, another rendezvous's) does not undo the URL.
    await (await RelaySocket.connect(url, { token: "stale-token-0123456789abcdef" })).close();
    await harness.send(data("s1", "ping"));
    assert.equal(payloadOf(await nextFrame(executor, "ping")), "ping");
    await executor.send(data("s1", "pong"));
    assert.equal(payloadOf(await nextFrame(harness, "pong")), "pong");

    // The URL is for this executor, for harnesses, and until it expires.
    const refused = async (target: string | URL, status: number, code: string) => {
      const error = await RelaySocket.connect(target).then(
        (socket) => socket.close().then(() => new Error(`${target} was admitted`)),
        (e) => e,
      );
      assert.equal(error.refusal?.status, status, String(error));
      assert.equal(error.refusal?.code, code, String(error));
    };
    const other = new URL(url);
    other.pathname = "/harness/exec-2";
    await refused(other, 403, "bad_signature");
    const asExecutor = new URL(url);
    asExecutor.pathname = "/executor/exec-1";
    asExecutor.searchParams.set("role", "executor");
    await refused(asExecutor, 403, "bad_signature");
    const tampered = new URL(url);
    tampered.searchParams.set("exp", String(Number(url.searchParams.get("exp")) + 1));
    await refused(tampered, 403, "bad_signature");
    const exp = Date.now() - 1;
    const expired = new URL(url);
    expired.searchParams.set("exp", String(exp));
    expired.searchParams.set(
      "sig",
      await (await UrlSigner.create(key)).sign("harness", "exec-1", exp),
    );
    await refused(expired, 401, "url_expired");
  });
});

Deno.test("serveRendezvous refuses registration without a token (401) and with a wrong one (403)", async () => {
  await withRendezvous({}, async (rz, events) => {
    const missing = await register(rz, "exec-1", null);
    assertError(missing, 401, "unauthorized");
    assert.match(missing.headers.get("www-authenticate")!, /^Bearer/);
    assertError(await register(rz, "exec-1", `${TOKEN}x`), 403, "forbidden");
    assertError(await register(rz, "exec-1", TOKEN.slice(0, -1)), 403, "forbidden");
    assertError(
      await register(rz, "exec-1", null, { headers: { authorization: `Basic ${TOKEN}` } }),
      401,
      "unauthorized",
    );
    assert.equal(events.filter((e) => e.type === "refused").length, 4);
  });
});

Deno.test("serveRendezvous validates executor ids: 256 characters pass, 257 and bad characters do not", async () => {
  await withRendezvous({}, async (rz) => {
    const longest = "a".repeat(256);
    const ok = await register(rz, longest);
    assert.equal(ok.status, 200);
    assert.equal(ok.body.executor_id, longest);
    assertError(await register(rz, "a".repeat(257)), 400, "invalid_executor_id");
    assertError(await register(rz, "bad.id"), 400, "invalid_executor_id");
    assertError(await register(rz, "bad%20id"), 400, "invalid_executor_id");
    assertError(await register(rz, ""), 400, "invalid_executor_id");
    assertError(
      await call(`${rz.url.replace("ws:", "http:")}/harness/bad.id`, { token: TOKEN }),
      400,
      "invalid_executor_id",
    );
  });
});

Deno.test("serveRendezvous answers wrong methods with 405, unknown paths with 404, plain GETs with 426", async () => {
  await withRendezvous({}, async (rz) => {
    const get = await call(`${rz.registryUrl}/cloud/executor/e1/register`, { token: TOKEN });
    assertError(get, 405, "method_not_allowed");
    assert.equal(get.headers.get("allow"), "POST");
    const post = await call(`${rz.registryUrl}/harness/e1`, { method: "POST", token: TOKEN });
    assertError(post, 405, "method_not_allowed");
    assert.equal(post.headers.get("allow"), "GET");
    assertError(await call(`${rz.registryUrl}/nowhere`), 404, "not_found");
    assertError(
      await call(`${rz.registryUrl}/harness/e1`, { token: TOKEN }),
      426,
      "upgrade_required",
    );
    assertError(
      await call(`${rz.registryUrl}/harness/e1?role=executor`, { token: TOKEN }),
      400,
      "invalid_role",
    );
  });
});

Deno.test("serveRendezvous accepts a registration body at the size limit and refuses one byte more (413)", async () => {
  await withRendezvous({ maxRequestBodyBytes: 64 }, async (rz) => {
    assert.equal((await register(rz, "e1", TOKEN, { body: "x".repeat(64) })).status, 200);
    assertError(
      await register(rz, "e1", TOKEN, { body: "x".repeat(65) }),
      413,
      "payload_too_large",
    );
    // Without a Content-Length (a stream), the limit holds too.
    const stream = (n: number) =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new Uint8Array(n));
          controller.close();
        },
      });
    assert.equal((await register(rz, "e1", TOKEN, { body: stream(64) })).status, 200);
    assertError(await register(rz, "e1", TOKEN, { body: stream(65) }), 413, "payload_too_large");
  });
});

Deno.test("serveRendezvous refuses executor URLs that are unsigned, tampered with or for another id", async () => {
  await withRendezvous({}, async (rz) => {
    const answer = await register(rz, "exec-1");
    const good = new URL(answer.body.url as string);
    const http = (url: URL) => url.href.replace("ws:", "http:");

    const unsigned = new URL(good);
    unsigned.searchParams.delete("sig");
    assertError(await call(http(unsigned)), 401, "unauthorized");

    const tampered = new URL(good);
    const sig = tampered.searchParams.get("sig")!;
    tampered.searchParams.set("sig", (sig[0] === "0" ? "1" : "0") + sig.slice(1));
    assertError(await call(http(tampered)), 403, "bad_signature");

    const extended = new URL(good);
    extended.searchParams.set("exp", String(Number(good.searchParams.get("exp")) + 60_000));
    assertError(await call(http(extended)), 403, "bad_signature");

    const otherId = new URL(good);
    otherId.pathname = "/executor/exec-2";
    assertError(await call(http(otherId)), 403, "bad_signature");

    const garbage = new URL(good);
    garbage.searchParams.set("sig", "zz");
    assertError(await call(http(garbage)), 403, "bad_signature");

    await assert.rejects(RelaySocket.connect(tampered), /403|connect/i);
    // The untouched URL still works, and no token is needed on it.
    const executor = await RelaySocket.connect(good);
    await executor.close();
  });
});

Deno.test("serveRendezvous opens one executor socket per signed URL: a replay before it expires is refused 403 url_used, and the executor keeps its socket", async () => {
  await withRendezvous({ urlTtlMs: 60_000 }, async (rz, events) => {
    const answer = await register(rz, "exec-1");
    const url = new URL(answer.body.url as string);
    // Asking without upgrading does not use the URL up.
    assertError(await call(url.href.replace("ws:", "http:")), 426, "upgrade_required");
    await using executor = await RelaySocket.connect(url);
    // Replayed (from a proxy's log, say), with or without the query spelled another way.
    const respelled = new URL(url);
    respelled.searchParams.set("exp", `0${url.searchParams.get("exp")}`);
    for (const replay of [url, respelled]) {
      const refused = await RelaySocket.connect(replay).then(
        () => assert.fail("a replayed executor URL opened a socket"),
        (error) => error,
      );
      assert.ok(refused instanceof RelayClosedError, String(refused));
      assert.deepEqual([refused.refusal?.status, refused.refusal?.code], [403, "url_used"]);
    }
    assert.ok(
      !events.some((e) => e.type === "executor_attached" && e.replaced),
      "no socket was replaced",
    );
    // The executor's socket still carries its streams.
    await using harness = await RelaySocket.connect(harnessUrl(rz, "exec-1"), { token: TOKEN });
    await harness.send(data("s1", "ping"));
    assert.equal(payloadOf(await nextFrame(executor, "ping")), "ping");
    // A fresh registration gives a fresh URL, which opens a socket (replacing this one).
    const again = await register(rz, "exec-1");
    const next = await RelaySocket.connect(again.body.url as string);
    await next.close();
  });
});

Deno.test("serveRendezvous refuses an executor URL replayed after it expired (401 url_expired)", async () => {
  await withRendezvous({ urlTtlMs: MIN_URL_TTL_MS }, async (rz) => {
    const answer = await register(rz, "exec-1");
    const url = new URL(answer.body.url as string);
    const first = await RelaySocket.connect(url);
    await first.close();
    const exp = Number(url.searchParams.get("exp"));
    await until(() => Date.now() > exp, DEADLINE_MS, "URL expiry");
    assertError(await call(url.href.replace("ws:", "http:")), 401, "url_expired");
    await assert.rejects(RelaySocket.connect(url), /401|connect/i);
    // Registering again gives a fresh URL.
    const again = await register(rz, "exec-1");
    const executor = await RelaySocket.connect(again.body.url as string);
    await executor.close();
  });
});

Deno.test("serveRendezvous takes a URL lifetime of a day, and refuses a millisecond more: a signed URL cannot be revoked", async () => {
  assert.equal(MAX_URL_TTL_MS, 86_400_000);
  await assert.rejects(
    serveRendezvous({ token: TOKEN, urlTtlMs: MAX_URL_TTL_MS + 1 }),
    (error: Error) =>
      error instanceof RangeError &&
      /urlTtlMs 86400001 is above 86400000 ms \(a day\)/.test(error.message),
  );
  await withRendezvous({ urlTtlMs: MAX_URL_TTL_MS }, async (rz) => {
    const before = Date.now();
    const answer = await register(rz, "exec-1");
    const exp = Number(new URL(answer.body.url as string).searchParams.get("exp"));
    assert.ok(exp >= before + MAX_URL_TTL_MS, "the URL lives the whole day");
    const executor = await RelaySocket.connect(answer.body.url as string);
    await executor.close();
  });
});

Deno.test("serveRendezvous takes a URL lifetime of 1000 ms, which an executor connects within, and refuses 999", async () => {
  assert.equal(MIN_URL_TTL_MS, 1000);
  await assert.rejects(
    serveRendezvous({ token: TOKEN, urlTtlMs: MIN_URL_TTL_MS - 1 }),
    (error: Error) =>
      error instanceof RangeError && /urlTtlMs 999 is below 1000 ms/.test(error.message),
  );
  await withRendezvous({ urlTtlMs: MIN_URL_TTL_MS }, async (rz) => {
    // A loaded machine may take over a second from registering to connecting:
    // a connect refused once its URL has expired is tried again with a new
    // registration, one refused before that fails the test.
    const tries = 3;
    let connected = false;
    for (let attempt = 1; attempt <= tries && !connected; attempt++) {
      // Bounds from the clock around the registration, so a slow answer cannot fail them.
      const before = Date.now();
      const answer = await register(rz, "exec-1");
      const after = Date.now();
      const exp = Number(new URL(answer.body.url as string).searchParams.get("exp"));
      assert.ok(exp >= before + MIN_URL_TTL_MS, "the URL lives the whole lifetime");
      assert.ok(exp <= after + MIN_URL_TTL_MS, "the URL lives no longer than asked");
      try {
        const executor = await RelaySocket.connect(answer.body.url as string);
        await executor.close();
        connected = true;
      } catch (error) {
        if (Date.now() <= exp) throw error;
      }
    }
    assert.ok(connected, `no connect within the URL lifetime in ${tries} tries`);
  });
});

Deno.test("serveRendezvous refuses harness sockets without a token (401) or with a wrong one (403)", async () => {
  await withRendezvous({}, async (rz) => {
    const http = harnessUrl(rz, "e1").replace("ws:", "http:");
    assertError(await call(http), 401, "unauthorized");
    assertError(await call(http, { token: "wrong-token-0123456789" }), 403, "forbidden");
    await assert.rejects(RelaySocket.connect(harnessUrl(rz, "e1")), /401|connect/i);
    await assert.rejects(
      RelaySocket.connect(harnessUrl(rz, "e1"), { token: `${TOKEN}0` }),
      /403|connect/i,
    );
    assert.equal(rz.stats().harnessSockets, 0);
  });
});

Deno.test("serveRendezvous admits harness sockets up to the limit and answers 503 one past it", async () => {
  await withRendezvous({ maxHarnessSockets: 2 }, async (rz) => {
    await using a = await RelaySocket.connect(harnessUrl(rz, "e1"), { token: TOKEN });
    await using b = await RelaySocket.connect(harnessUrl(rz, "e1"), { token: TOKEN });
    assertError(
      await call(harnessUrl(rz, "e1").replace("ws:", "http:"), { token: TOKEN }),
      503,
      "too_many_harness_sockets",
    );
    await assert.rejects(RelaySocket.connect(harnessUrl(rz, "e1"), { token: TOKEN }));
    assert.equal(rz.stats().harnessSockets, 2);
    void a, b;
  });
});

Deno.test("serveRendezvous serves executor ids up to the limit and answers 503 one past it", async () => {
  await withRendezvous({ maxExecutors: 2 }, async (rz) => {
    await using one = await executorSocket(rz, "e1");
    await using two = await executorSocket(rz, "e2");
    assertError(await register(rz, "e3"), 503, "too_many_executors");
    // A known id can still register and reconnect.
    await using again = await executorSocket(rz, "e2");
    void one, two, again;
  });
});

Deno.test("serveRendezvous tells a harness executor_offline when nothing registered that id", async () => {
  // Without a startup grace (the default grace is covered below).
  await withRendezvous({ startupGraceMs: 0 }, async (rz) => {
    await using harness = await RelaySocket.connect(harnessUrl(rz, "ghost"), { token: TOKEN });
    await harness.send(data("s", "hello"));
    const frame = await nextFrame(harness, "executor_offline");
    assert.deepEqual(frame.body, { kind: "reset", reason: "executor_offline" });
  });
});

Deno.test("serveRendezvous by default holds a harness stream for one detach window after start (restart grace)", async () => {
  // The grace follows the window and runs from start: it must cover two
  // connects, a registration and three frames even on a loaded machine.
  const detachWindowMs = 1_500;
  await withRendezvous({ detachWindowMs }, async (rz) => {
    // As after a restart: the harness is back before its executor.
    await using harness = await RelaySocket.connect(harnessUrl(rz, "box"), { token: TOKEN });
    await harness.send(data("s", "held until the executor is back"));
    await using executor = await executorSocket(rz, "box");
    const held = await nextFrame(executor, "held frame");
    assert.equal(payloadOf(held), "held until the executor is back");
    await executor.send(data("s", "welcome back"));
    assert.equal(payloadOf(await nextFrame(harness, "reply")), "welcome back");
    // The trade-off: an id nobody serves waits out the window, then fails.
    await using other = await RelaySocket.connect(harnessUrl(rz, "ghost"), { token: TOKEN });
    const asked = performance.now();
    await other.send(data("t", "anyone?"));
    const frame = await nextFrame(other, "executor_disconnected");
    assert.deepEqual(frame.body, { kind: "reset", reason: "executor_disconnected" });
    assert.ok(performance.now() - asked >= detachWindowMs * 0.9, "failed before the window");
  });
});

Deno.test("serveRendezvous hands out publicUrl and the environment naming of the registry", async () => {
  await withRendezvous({ publicUrl: "https://relay.example.com/" }, async (rz) => {
    const answer = await call(`${rz.registryUrl}/cloud/environment/env-1/register`, {
      method: "POST",
      token: TOKEN,
    });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.environment_id, "env-1");
    assert.match(
      answer.body.url as string,
      /^wss:\/\/relay\.example\.com\/executor\/env-1\?role=executor&exp=\d+&sig=[0-9a-f]{64}$/,
    );
  });
});

Deno.test("serveRendezvous signs with a given key so URLs survive a restart", async () => {
  const signingKey = crypto.getRandomValues(new Uint8Array(32));
  // The second server takes the first one's port: one no client socket takes meanwhile.
  const first = await serveRendezvous({
    token: TOKEN,
    signingKey,
    listen: `ws://127.0.0.1:${portBelowEphemeral()}`,
  });
  const answer = await register(first, "exec-1");
  const port = new URL(first.url).port;
  await first.close();
  const second = await serveRendezvous({
    token: TOKEN,
    signingKey,
    listen: `ws://127.0.0.1:${port}`,
  });
  try {
    const executor = await RelaySocket.connect(answer.body.url as string);
    await executor.close();
  } finally {
    await second.close();
  }
  await assert.rejects(
    serveRendezvous({ token: TOKEN, signingKey: new Uint8Array(15) }),
    RangeError,
  );
  // A string of 32+ digits would pass the length check and key the HMAC with their values.
  await assert.rejects(
    serveRendezvous({ token: TOKEN, signingKey: "0".repeat(64) as unknown as Uint8Array }),
    /signing key: it must be a Uint8Array/,
  );
});

Deno.test("serveRendezvous checks its options", async () => {
  await assert.rejects(serveRendezvous({ token: "short" }), TypeError);
  await assert.rejects(serveRendezvous({ token: `${TOKEN} x` }), TypeError);
  await assert.rejects(serveRendezvous({ token: TOKEN, listen: "wss://127.0.0.1:0" }), TypeError);
  await assert.rejects(serveRendezvous({ token: TOKEN, urlTtlMs: 0 }), RangeError);
  await assert.rejects(serveRendezvous({ token: TOKEN, signal: AbortSignal.abort() }));
});

Deno.test("serveRendezvous closes on abort: sockets end, the port is released", async () => {
  const controller = new AbortController();
  const rz = await serveRendezvous({ token: TOKEN, signal: controller.signal });
  const executor = await executorSocket(rz, "e1");
  const harness = await RelaySocket.connect(harnessUrl(rz, "e1"), { token: TOKEN });
  const port = Number(new URL(rz.url).port);
  assert.equal(ownListeningSockets(port).length, 1, "the open rendezvous is seen listening");
  controller.abort();
  await withDeadline(rz.closed, DEADLINE_MS, "rendezvous closed");
  const info = await withDeadline(harness.closed, DEADLINE_MS, "harness closed");
  assert.equal(info.reason, "shutdown");
  await withDeadline(executor.closed, DEADLINE_MS, "executor closed");
  await rz.close();
  // Asked of /proc rather than by listening again: a parallel test may have
  // been given the freed port already.
  assert.deepEqual(ownListeningSockets(port), [], `port ${port} still listened on by this process`);
});

/**
 * Inodes of this process's sockets listening on `port` (IPv4 or IPv6), from
 * /proc/net/tcp{,6} matched against /proc/self/fd.
 */
function ownListeningSockets(port: number): string[] {
  const own = new Set<string>();
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const match = Deno.readLinkSync(`/proc/self/fd/${entry.name}`).match(/^socket:\[(\d+)\]$/);
      if (match) own.add(match[1]);
    } catch {
      // Closed while listing.
    }
  }
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const inodes: string[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of Deno.readTextFileSync(table).split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      // local_address is ADDR:PORT in hex; state 0A is LISTEN; field 9 is the inode.
      if (fields.length < 10 || !fields[1].endsWith(`:${hexPort}`) || fields[3] !== "0A") continue;
      if (own.has(fields[9])) inodes.push(fields[9]);
    }
  }
  return inodes;
}

Deno.test("parseBearer and tokensEqual accept exactly the configured bearer token", () => {
  assert.equal(parseBearer(`Bearer ${TOKEN}`), TOKEN);
  assert.equal(parseBearer(`bearer  ${TOKEN} `), TOKEN);
  assert.equal(parseBearer(null), undefined);
  assert.equal(parseBearer(""), undefined);
  assert.equal(parseBearer("Bearer"), undefined);
  assert.equal(parseBearer(`Basic ${TOKEN}`), undefined);
  assert.equal(parseBearer(`Bearer ${TOKEN} extra`), undefined);
  assert.ok(tokensEqual(TOKEN, TOKEN));
  assert.ok(!tokensEqual(`${TOKEN}x`, TOKEN));
  assert.ok(!tokensEqual(TOKEN.slice(1), TOKEN));
  assert.ok(!tokensEqual("", TOKEN));
  assert.ok(!tokensEqual(TOKEN.replace(/.$/, "X"), TOKEN));
  // A prefix repeated to the right length must not match.
  assert.ok(!tokensEqual("test", "testtest"));
  assert.equal(checkBearer(`Bearer ${TOKEN}`, TOKEN), "ok");
  assert.equal(checkBearer("Bearer nope", TOKEN), "wrong");
  assert.equal(checkBearer(undefined, TOKEN), "missing");
});

Deno.test("readToken reads a token file or the environment, and never echoes a bad token", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/token`;
    await Deno.writeTextFile(file, `${TOKEN}\n`);
    assert.equal(await readToken({ tokenFile: file }), TOKEN);
    await Deno.writeTextFile(file, "has space in-it-0123456789");
    const error = await readToken({ tokenFile: file }).catch((e) => e);
    assert.ok(error instanceof TypeError);
    assert.ok(!error.message.includes("in-it"), error.message);
    await Deno.writeTextFile(file, "  \n");
    await assert.rejects(readToken({ tokenFile: file }), /empty/);
    await assert.rejects(readToken({ tokenFile: `${dir}/missing` }), Deno.errors.NotFound);

    const envVar = "OUTPOST_TEST_TOKEN_RENDEZVOUS";
    Deno.env.delete(envVar);
    assert.equal(await readToken({ envVar }), undefined);
    await assert.rejects(readToken({ envVar, required: true }), /set OUTPOST_TEST_TOKEN/);
    Deno.env.set(envVar, ` ${TOKEN} `);
    try {
      assert.equal(await readToken({ envVar }), TOKEN);
    } finally {
      Deno.env.delete(envVar);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("UrlSigner signs role, id and expiry together", async () => {
  const key = crypto.getRandomValues(new Uint8Array(16));
  const signer = await UrlSigner.create(key);
  const other = await UrlSigner.create();
  const exp = Date.now() + 1_000;
  const sig = await signer.sign("executor", "e1", exp);
  const params = (e: number, s: string) => new URLSearchParams({ exp: String(e), sig: s });
  assert.equal(await signer.verify("executor", "e1", params(exp, sig), Date.now()), undefined);
  assert.equal(await signer.verify("executor", "e1", params(exp, sig), exp), "expired");
  assert.equal(await signer.verify("harness", "e1", params(exp, sig), 0), "bad_signature");
  assert.equal(await signer.verify("executor", "e2", params(exp, sig), 0), "bad_signature");
  assert.equal(await signer.verify("executor", "e1", params(exp + 1, sig), 0), "bad_signature");
  assert.equal(await other.verify("executor", "e1", params(exp, sig), 0), "bad_signature");
  assert.equal(
    await signer.verify("executor", "e1", params(exp, sig.toUpperCase()), 0),
    "malformed",
  );
  assert.equal(await signer.verify("executor", "e1", new URLSearchParams(), 0), "missing");
  // The key bytes given are not kept or zeroed by the signer.
  assert.ok(key.some((b) => b !== 0));
  await assert.rejects(UrlSigner.create(new Uint8Array(15)), RangeError);
});

Deno.test("serveRendezvous closes a relay socket that sends JSON-RPC text at once (1003), saying relay sockets carry binary frames", async () => {
  await withRendezvous({}, async (rz) => {
    const ws = new TcpWebSocket(`${rz.url}/harness/exec-1`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    await withDeadline(
      new Promise((resolve) => ws.addEventListener("open", resolve, { once: true })),
      5_000,
      "open",
    );
    const closed = withDeadline(
      new Promise<CloseEvent>((resolve) =>
        ws.addEventListener("close", (e) => resolve(e as CloseEvent), { once: true })
      ),
      5_000,
      "the close",
    );
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} }));
    const event = await closed;
    assert.equal(event.code, 1003);
    assert.match(event.reason, /^relay sockets carry binary relay frames, not JSON-RPC text/);
  });
});

/** A rendezvous in its own process (tests/_support/run_rendezvous.ts) under `ulimit -n`. */
function limitedRendezvous(maxFiles: number): JsonLinesProcess {
  const script = new URL("./_support/run_rendezvous.ts", import.meta.url).pathname;
  // `ulimit -n` sets the hard limit too, which is what Deno raises its soft limit to.
  return new JsonLinesProcess(
    "sh",
    ["-c", `ulimit -n ${maxFiles} && exec "$0" run -A "$1" 0 "$2"`, Deno.execPath(), script, TOKEN],
    { DENO_NO_UPDATE_CHECK: "1" },
  );
}

/** The first event of `type` that a rendezvous in its own process printed. */
async function printedEvent(rz: JsonLinesProcess, type: string): Promise<Record<string, unknown>> {
  const line = await rz.waitFor(
    (l) => (l.event as { type?: string } | undefined)?.type === type,
    15_000,
    type,
  );
  return line.event as Record<string, unknown>;
}

Deno.test("serveRendezvous outlives running out of file descriptors: open sockets stay served, and it accepts again once some are free", async () => {
  await using rz = limitedRendezvous(128);
  const started = await rz.waitFor((l) => typeof l.url === "string", 15_000, "the rendezvous URL");
  const url = started.url as string;
  const registryUrl = started.registryUrl as string;
  const port = Number(new URL(url).port);
  const registration = await call(`${registryUrl}/cloud/executor/e1/register`, {
    method: "POST",
    token: TOKEN,
  });
  assert.equal(registration.status, 200);
  await using executor = await RelaySocket.connect(registration.body.url as string);
  await using harness = await RelaySocket.connect(`${url}/harness/e1?role=harness`, {
    token: TOKEN,
  });
  await harness.send(data("s1", "before"));
  assert.equal(payloadOf(await nextFrame(executor, "before")), "before");

  // Connections that send nothing, as anyone who can reach the port may open,
  // until the rendezvous has no descriptor left to accept one more.
  const idle: Deno.TcpConn[] = [];
  try {
    const failed = printedEvent(rz, "listener_failed");
    let refused = false;
    failed.then(() => (refused = true), () => {});
    for (let i = 0; i < 1_000 && !refused; i++) {
      try {
        idle.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      } catch {
        break; // the listener is gone: refused
      }
    }
    const failure = await failed;
    assert.match(failure.message as string, /Too many open files/);
    // The sockets it had keep working, both ways.
    await harness.send(data("s1", "during"));
    assert.equal(payloadOf(await nextFrame(executor, "during")), "during");
    await executor.send(data("s1", "reply"));
    assert.equal(payloadOf(await nextFrame(harness, "reply")), "reply");
  } finally {
    for (const conn of idle) conn.close();
  }
  // Descriptors free again: a registration on a new connection (no pooled
  // one, which the failed listener would still serve) gets through within the
  // backoff (2 s at most).
  using fresh = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  let status = 0;
  await until(
    async () => {
      status = await fetch(`${registryUrl}/cloud/executor/e2/register`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}` },
        client: fresh,
      }).then(async (response) => {
        await response.body?.cancel();
        return response.status;
      }, () => 0);
      return status !== 0;
    },
    10_000,
    "a registration after the descriptors are free",
  );
  assert.equal(status, 200);
  const back = await printedEvent(rz, "accepting_again");
  assert.ok((back.attempts as number) >= 1);
  await harness.send(data("s1", "after"));
  assert.equal(payloadOf(await nextFrame(executor, "after")), "after");
});

Deno.test("serveRendezvous issues an executor's URLs expiring strictly later one after another, so its newest URL connects even when two were issued in one millisecond", async () => {
  await withRendezvous({ urlTtlMs: 60_000 }, async (rz) => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => register(rz, "exec-1")));
    const urls = answers.map((answer) => new URL(answer.body.url as string));
    const exps = urls.map((url) => Number(url.searchParams.get("exp")));
    assert.equal(new Set(exps).size, exps.length, `distinct expiries: ${exps}`);
    // Used in the order issued, each one outranks the last: every one connects.
    for (
      const url of [...urls].sort((a, b) =>
        Number(a.searchParams.get("exp")) - Number(b.searchParams.get("exp"))
      )
    ) {
      const socket = await RelaySocket.connect(url);
      await socket.close();
    }
  });
});

Deno.test("serveRendezvous restarted with the same signing key refuses an older run's URL that expires later than it issues, and takes one within its lifetime once, until the executor's next registration", async () => {
  const signingKey = crypto.getRandomValues(new Uint8Array(32));
  const oldUrls: URL[] = [];
  for (const urlTtlMs of [600_000, 60_000]) {
    // Earlier runs, one with a longer lifetime: each issued a URL that was used.
    await using before = await serveRendezvous({ token: TOKEN, signingKey, urlTtlMs });
    const url = new URL((await register(before, "exec-1")).body.url as string);
    await (await RelaySocket.connect(url)).close();
    oldUrls.push(url);
  }
  await using rz = await serveRendezvous({ token: TOKEN, signingKey, urlTtlMs: 60_000 });
  const here = (url: URL) => {
    const moved = new URL(url.href);
    moved.host = new URL(rz.url).host;
    return moved;
  };
  const [longer, within] = oldUrls.map(here);
  const refused = await RelaySocket.connect(longer).then(
    () => assert.fail("a URL expiring later than this run issues opened a socket"),
    (error) => error,
  );
  assert.deepEqual([refused.refusal?.status, refused.refusal?.code], [403, "url_used"]);
  await using taken = await RelaySocket.connect(within);
  const fresh = new URL((await register(rz, "exec-1")).body.url as string);
  assert.ok(Number(fresh.searchParams.get("exp")) > Number(within.searchParams.get("exp")));
  await using _honest = await RelaySocket.connect(fresh);
  await withDeadline(taken.closed, DEADLINE_MS, "the replayed socket replaced");
});
