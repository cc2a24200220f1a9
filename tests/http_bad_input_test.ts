/**
 * Hostile HTTP against the rendezvous and its registry: missing, wrong,
 * expired and replayed tokens and signed URLs, registration for another
 * executor id, path traversal in ids, oversized headers and bodies. Each gets
 * a clear refusal, no token is echoed, and the server keeps serving.
 *
 * @module
 */

import assert from "node:assert/strict";
import { serveRendezvous } from "../lib/server/rendezvous_server.ts";
import { serveLocal } from "../lib/server/local_server.ts";
import { Executor } from "../lib/exec/executor.ts";
import { UrlSigner } from "../lib/server/_signed_url.ts";
import { rawHttp, type RawHttpResponse, upgradeHead } from "./_support/raw_http.ts";
import { record } from "./_support/report.ts";

const TOKEN = "adversarial-token-0123456789abcdef";
const KEY = new Uint8Array(32).fill(7);

async function start(options: { urlTtlMs?: number; maxRequestBodyBytes?: number } = {}) {
  const server = await serveRendezvous({ token: TOKEN, signingKey: KEY, ...options });
  const port = Number(new URL(server.registryUrl).port);
  return { server, port };
}

function assertRefusal(r: RawHttpResponse, statuses: number[], context: string): void {
  assert.ok(
    statuses.includes(r.status),
    `${context}: status ${r.status} not in ${statuses}: ${r.body.slice(0, 200)}`,
  );
  assert.ok(!r.body.includes(TOKEN), `${context}: the token is echoed`);
  if (r.status !== 0 && r.headers.get("content-type")?.includes("json")) {
    const body = JSON.parse(r.body);
    assert.equal(typeof body.error?.code, "string", `${context}: no error code`);
    assert.match(body.error.message, /^Cannot /, `${context}: message ${body.error.message}`);
  }
}

function register(id: string, auth?: string, extra: string[] = [], body = ""): string {
  return [
    `POST /cloud/executor/${id}/register HTTP/1.1`,
    "Host: 127.0.0.1",
    ...(auth === undefined ? [] : [`Authorization: ${auth}`]),
    `Content-Length: ${new TextEncoder().encode(body).length}`,
    ...extra,
  ].join("\r\n");
}

async function assertStillServing(port: number, context: string): Promise<void> {
  const r = await rawHttp(port, register("still-ok", `Bearer ${TOKEN}`));
  assert.equal(r.status, 200, `${context}: a valid registration now fails: ${r.body}`);
}

Deno.test("registration refuses missing, malformed and wrong tokens without echoing them", async () => {
  const { server, port } = await start();
  const auths: [string | undefined, number[]][] = [
    [undefined, [401]],
    ["", [401]],
    ["Bearer", [401]],
    ["Bearer ", [401]],
    [`Basic ${btoa(`user:${TOKEN}`)}`, [401]],
    [`Token ${TOKEN}`, [401]],
    [`Bearer ${TOKEN.slice(0, -1)}`, [403]],
    [`Bearer ${TOKEN}x`, [403]],
    [`Bearer ${TOKEN.toUpperCase()}`, [403]],
    [`Bearer ${TOKEN} ${TOKEN}`, [401, 403]],
    [`Bearer ${"a".repeat(5000)}`, [403]],
    ["Bearer \u00e9\u00e9", [401, 403, 400]],
    [`Bearer ${TOKEN}\u0000`, [400, 401, 403]],
  ];
  for (const [auth, statuses] of auths) {
    const r = await rawHttp(port, register("e1", auth));
    assertRefusal(r, statuses, `auth ${JSON.stringify(auth?.slice(0, 30))}`);
    if (r.status === 401) assert.match(r.headers.get("www-authenticate") ?? "", /Bearer/);
  }
  // Lower-case scheme is the same scheme (RFC 7235).
  const lower = await rawHttp(port, register("e1", `bearer ${TOKEN}`));
  assert.equal(lower.status, 200);
  // Wrong method.
  const get = await rawHttp(
    port,
    `GET /cloud/executor/e1/register HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}`,
  );
  assertRefusal(get, [405], "GET register");
  assert.equal(get.headers.get("allow"), "POST");
  await assertStillServing(port, "bad tokens");
  await server.close();
  record({
    area: "bad input",
    name:
      "registry: missing, malformed, wrong-scheme, near-miss, oversized and non-ASCII tokens; wrong method",
    cases: auths.length + 2,
    result:
      "401 (with WWW-Authenticate) or 403, JSON error, token never echoed; server kept serving",
  });
});

Deno.test("ids with path traversal or odd characters are refused on every route", async () => {
  const { server, port } = await start();
  const ids = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2E%2F",
    "..%2f..%2fetc",
    "a%2Fb",
    "a%00b",
    "%00",
    "a b",
    "a%20b",
    "é",
    "%C3%A9",
    "x".repeat(257),
    "",
    "a;b",
    "<script>",
  ];
  let cases = 0;
  for (const id of ids) {
    const reg = await rawHttp(port, register(id, `Bearer ${TOKEN}`));
    assertRefusal(reg, [400, 404], `register id ${JSON.stringify(id.slice(0, 20))}`);
    const harness = await rawHttp(
      port,
      upgradeHead(`/harness/${id}?role=harness`, [`Authorization: Bearer ${TOKEN}`]),
    );
    assertRefusal(harness, [400, 404], `harness id ${JSON.stringify(id.slice(0, 20))}`);
    const executor = await rawHttp(port, upgradeHead(`/executor/${id}?role=executor&exp=1&sig=00`));
    assertRefusal(executor, [400, 401, 403, 404], `executor id ${JSON.stringify(id.slice(0, 20))}`);
    cases += 3;
  }
  // Traversal in the route itself.
  for (
    const path of [
      "/cloud/executor/../../etc/passwd",
      "/cloud/executor/e1/../e2/register",
      "//cloud/executor/e1/register",
      "/harness/e1/../../cloud/executor/e1/register",
    ]
  ) {
    const r = await rawHttp(
      port,
      register("x", `Bearer ${TOKEN}`).replace(
        "/cloud/executor/x/register",
        path,
      ),
    );
    // Either refused, or normalised to a route that then answers as that route would.
    assert.ok(r.status !== 500, `${path}: internal error`);
    assert.ok(!r.body.includes("root:"), `${path}: file contents leaked`);
    cases++;
  }
  await assertStillServing(port, "odd ids");
  await server.close();
  record({
    area: "bad input",
    name: "registry and sockets: path traversal and odd characters in executor ids",
    cases,
    result:
      "every odd id refused 400/404 on register, harness and executor routes; no 500, nothing leaked",
  });
});

Deno.test("executor sockets refuse unsigned, forged, expired and other-id URLs, and a replay (url_used)", async () => {
  const { server, port } = await start({ urlTtlMs: 60_000 });
  const reg = await rawHttp(port, register("exec-a", `Bearer ${TOKEN}`));
  assert.equal(reg.status, 200, reg.body);
  const url = new URL(JSON.parse(reg.body).url);
  assert.equal(url.pathname, "/executor/exec-a");
  assert.equal(url.searchParams.get("role"), "executor");
  const exp = url.searchParams.get("exp")!;
  const sig = url.searchParams.get("sig")!;
  const signer = await UrlSigner.create(KEY);
  const expiredExp = Date.now() - 1000;
  const expiredSig = await signer.sign("executor", "exec-a", expiredExp);
  const harnessSig = await signer.sign("harness", "exec-a", Number(exp));
  const flipped = (sig[0] === "0" ? "1" : "0") + sig.slice(1);
  const cases: [string, number[], string][] = [
    ["/executor/exec-a?role=executor", [401], "unsigned"],
    [`/executor/exec-a?role=executor&exp=${exp}`, [401], "no sig"],
    [`/executor/exec-a?role=executor&sig=${sig}`, [401], "no exp"],
    [`/executor/exec-a?role=executor&exp=${exp}&sig=${flipped}`, [403], "flipped sig"],
    [`/executor/exec-a?role=executor&exp=${Number(exp) + 1}&sig=${sig}`, [403], "extended exp"],
    [`/executor/exec-b?role=executor&exp=${exp}&sig=${sig}`, [403], "other executor id"],
    [`/executor/exec-a?role=executor&exp=${expiredExp}&sig=${expiredSig}`, [401], "expired"],
    [
      `/executor/exec-a?role=executor&exp=${exp}&sig=${harnessSig}`,
      [403],
      "signed for another role",
    ],
    [`/executor/exec-a?role=harness&exp=${exp}&sig=${sig}`, [400], "role mismatch"],
    [
      `/executor/exec-a?role=executor&exp=${exp}&sig=${sig.toUpperCase()}`,
      [400, 403],
      "upper-case sig",
    ],
    [`/executor/exec-a?role=executor&exp=1e99&sig=${sig}`, [400, 403], "exp not digits"],
    [`/executor/exec-a?role=executor&exp=${exp}&sig=${sig}${sig}`, [400, 403], "sig too long"],
    [
      `/harness/exec-a?role=harness&exp=${exp}&sig=${sig}`,
      [403],
      "an executor URL's signature on a harness URL (the role is signed)",
    ],
  ];
  for (const [path, statuses, what] of cases) {
    const r = await rawHttp(port, upgradeHead(path));
    assertRefusal(r, statuses, what);
  }
  // The real URL works (101), once: a replay within its lifetime (from a
  // proxy's log, say) is refused, and cannot replace the executor's socket.
  // An upgrade Deno would refuse (no key) is refused before the URL counts as used.
  const keyless = upgradeHead(`${url.pathname}${url.search}`)
    .replace(/\r\nSec-WebSocket-Key: [^\r]*/, "");
  const malformed = await rawHttp(port, keyless);
  assertRefusal(malformed, [400], "no Sec-WebSocket-Key");
  assert.equal(JSON.parse(malformed.body).error.code, "bad_upgrade");
  const first = await rawHttp(port, upgradeHead(`${url.pathname}${url.search}`));
  assert.equal(first.status, 101);
  const replay = await rawHttp(port, upgradeHead(`${url.pathname}${url.search}`));
  assertRefusal(replay, [403], "replay");
  assert.equal(JSON.parse(replay.body).error.code, "url_used");
  await assertStillServing(port, "signed URL abuse");
  await server.close();
  record({
    area: "bad input",
    name:
      "executor sockets: unsigned, forged, extended, expired, other-id, other-role signed URLs; replay",
    cases: cases.length + 2,
    result:
      "401/403/400 with JSON errors; a replay within the URL lifetime is refused 403 url_used " +
      "(each signed executor URL opens one socket)",
  });
});

Deno.test("harness sockets refuse missing and wrong tokens", async () => {
  const { server, port } = await start();
  const cases: [string[], number[]][] = [
    [[], [401]],
    [["Authorization: Bearer wrong-token-wrong-token"], [403]],
    [[`Authorization: Bearer ${TOKEN.slice(1)}`], [403]],
    [[`Authorization: Basic ${btoa(TOKEN)}`], [401]],
    [[`Sec-WebSocket-Protocol: ${TOKEN}`], [401]],
  ];
  for (const [extra, statuses] of cases) {
    const r = await rawHttp(port, upgradeHead("/harness/exec-a?role=harness", extra));
    assertRefusal(r, statuses, `harness ${extra.join(" ").slice(0, 40)}`);
  }
  // Token in the query string is not accepted (it would end up in logs).
  const q = await rawHttp(port, upgradeHead(`/harness/exec-a?role=harness&token=${TOKEN}`));
  assertRefusal(q, [401], "token in query");
  const ok = await rawHttp(
    port,
    upgradeHead("/harness/exec-a?role=harness", [`Authorization: Bearer ${TOKEN}`]),
  );
  assert.equal(ok.status, 101);
  await server.close();
  record({
    area: "bad input",
    name:
      "harness sockets: missing, wrong, truncated, wrong-scheme tokens; token in subprotocol or query",
    cases: cases.length + 2,
    result: "401/403 with JSON errors; only a correct bearer header upgrades",
  });
});

Deno.test("serve refuses WebSocket upgrades from web pages (an Origin header) unless the origin is allowed, and rendezvous paths", async () => {
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({
    executor,
    allowedOrigins: ["https://tool.example"],
  });
  const port = Number(new URL(server.url).port);
  const refusedOrigins = [
    "https://evil.example",
    "null",
    "http://127.0.0.1",
    "https://tool.example.",
  ];
  for (const origin of refusedOrigins) {
    const r = await rawHttp(port, upgradeHead("/", [`Origin: ${origin}`]));
    assert.equal(r.status, 403, `Origin ${origin}`);
    const body = JSON.parse(r.body) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "forbidden_origin");
    assert.match(body.error.message, /Cannot connect from a web page/);
  }
  // A client that takes serve for a rendezvous is told so at once.
  for (
    const path of ["/harness/box-1?role=harness", "/executor/box-1", "/cloud/executor/x/register"]
  ) {
    const r = await rawHttp(port, upgradeHead(path));
    assert.equal(r.status, 404, path);
    assert.match(r.body, /"not_a_rendezvous".*not a rendezvous/, path);
  }
  // An allowed origin and a client that sends none (Deno's WebSocket, outpost's client) upgrade.
  assert.equal(
    (await rawHttp(port, upgradeHead("/", ["Origin: https://tool.example"]))).status,
    101,
  );
  assert.equal((await rawHttp(port, upgradeHead("/"))).status, 101);
  const ws = new WebSocket(server.url);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  const closed = new Promise((resolve) => ws.onclose = resolve);
  ws.close();
  await closed;
  record({
    area: "bad input",
    name: "serve: WebSocket upgrades carrying an Origin header (a web page's cross-site request)",
    cases: refusedOrigins.length + 3,
    result: "403 forbidden_origin unless listed in allowedOrigins; clients without Origin connect",
  });
});

/** Upgrade requests Deno cannot upgrade: no `Sec-WebSocket-Key`, or `Connection` without `Upgrade`. */
function malformedUpgrades(path: string, extra: string[]): string[] {
  const head = upgradeHead(path, extra).split("\r\n");
  return [
    head.filter((line) => !line.startsWith("Sec-WebSocket-Key:")).join("\r\n"),
    head.map((line) => line === "Connection: Upgrade" ? "Connection: keep-alive" : line).join(
      "\r\n",
    ),
  ];
}

Deno.test("serve and the rendezvous answer a malformed WebSocket upgrade 400 bad_upgrade in their JSON shape", async () => {
  const events: unknown[] = [];
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using local = await serveLocal({ executor, onEvent: (event) => events.push(event) });
  const { server, port } = await start();
  const targets: [string, number, string, string[]][] = [
    ["serve", Number(new URL(local.url).port), "/", []],
    ["rendezvous", port, "/harness/exec-a?role=harness", [`Authorization: Bearer ${TOKEN}`]],
  ];
  for (const [name, at, path, extra] of targets) {
    for (const head of malformedUpgrades(path, extra)) {
      const r = await rawHttp(at, head);
      assertRefusal(r, [400], `${name}: ${head.split("\r\n").slice(2, 4).join(" ")}`);
      assert.match(r.headers.get("content-type") ?? "", /json/, name);
      const body = JSON.parse(r.body) as { error: { code: string; message: string } };
      assert.equal(body.error.code, "bad_upgrade", name);
      assert.match(body.error.message, /^Cannot upgrade to a WebSocket: '[a-z-]+' header must/);
    }
    // A well-formed upgrade still succeeds.
    assert.equal((await rawHttp(at, upgradeHead(path, extra))).status, 101, name);
  }
  await server.close();
  assert.deepEqual(events, [
    { type: "refused", status: 400, code: "bad_upgrade" },
    { type: "refused", status: 400, code: "bad_upgrade" },
  ]);
  record({
    area: "bad input",
    name: "serve and rendezvous: upgrades without Sec-WebSocket-Key, or Connection without Upgrade",
    cases: 4,
    result: "400 bad_upgrade with JSON errors (was a plain-text 500 and a stack trace)",
  });
});

Deno.test("serve refuses WebSocket upgrades with any method but GET (405), as the rendezvous does", async () => {
  const token = "serve-token-0123456789abcdef";
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using local = await serveLocal({ executor, token });
  const at = Number(new URL(local.url).port);
  const bearer = `Authorization: Bearer ${token}`;
  const methods = ["POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"];
  for (const method of methods) {
    // Connection: close ends the answer to HEAD, which has a length but no body.
    const head = upgradeHead("/", [bearer]).replace(/^GET /, `${method} `)
      .replace("Connection: Upgrade", "Connection: Upgrade, close");
    const r = await rawHttp(at, head);
    assert.equal(r.status, 405, method);
    assert.equal(r.headers.get("allow"), "GET", method);
    if (method !== "HEAD") {
      assert.deepEqual(JSON.parse(r.body).error, {
        code: "method_not_allowed",
        message: `Cannot ${method} a WebSocket: use GET`,
      });
    }
  }
  assert.equal((await rawHttp(at, upgradeHead("/", [bearer]))).status, 101);
  record({
    area: "bad input",
    name: "serve: WebSocket upgrades with POST, PUT, DELETE, OPTIONS, HEAD, PATCH",
    cases: methods.length,
    result:
      "405 method_not_allowed with Allow: GET (PUT, DELETE, OPTIONS and HEAD were upgraded: 101)",
  });
});

Deno.test("oversized headers and bodies are refused and the server keeps serving", async () => {
  const limit = 1024;
  const { server, port } = await start({ maxRequestBodyBytes: limit });
  let cases = 0;
  // Body at the limit is fine; one byte over is 413.
  const atLimit = "x".repeat(limit);
  const r1 = await rawHttp(port, register("e1", `Bearer ${TOKEN}`, [], atLimit), atLimit);
  assert.equal(r1.status, 200, r1.body);
  const over = "x".repeat(limit + 1);
  const r2 = await rawHttp(port, register("e1", `Bearer ${TOKEN}`, [], over), over);
  assertRefusal(r2, [413], "body one over the limit");
  cases += 2;
  // A content-length that lies about a huge body.
  const r3 = await rawHttp(
    port,
    `POST /cloud/executor/e1/register HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 99999999999`,
  );
  assertRefusal(r3, [400, 413], "content-length 99999999999");
  cases++;
  // Chunked body over the limit (no content-length).
  const chunk = "x".repeat(600);
  const chunked = `${(600).toString(16)}\r\n${chunk}\r\n`.repeat(3) + "0\r\n\r\n";
  const r4 = await rawHttp(
    port,
    `POST /cloud/executor/e1/register HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nTransfer-Encoding: chunked`,
    chunked,
  );
  assertRefusal(r4, [413], "chunked body over the limit");
  cases++;
  // Oversized headers: one huge header, many headers.
  for (
    const extra of [
      [`X-Big: ${"a".repeat(100 * 1024)}`],
      Array.from({ length: 2000 }, (_, i) => `X-H${i}: v`),
    ]
  ) {
    const r = await rawHttp(port, register("e1", `Bearer ${TOKEN}`, extra)).catch(() => ({
      status: 0,
      headers: new Map(),
      body: "",
    }));
    assert.ok(
      r.status === 0 || r.status === 431 || r.status === 400 || r.status === 200,
      `headers: ${r.status}`,
    );
    cases++;
  }
  // A huge Authorization header.
  const r5 = await rawHttp(port, register("e1", `Bearer ${"t".repeat(64 * 1024)}`)).catch(() => ({
    status: 0,
    headers: new Map(),
    body: "",
  }));
  assert.ok([0, 400, 403, 431].includes(r5.status), `huge token: ${r5.status}`);
  cases++;
  await assertStillServing(port, "oversized input");
  await server.close();
  record({
    area: "bad input",
    name:
      "registry: body at/over the limit, lying content-length, chunked over-limit, 100 KiB header, 2,000 headers, 64 KiB token",
    cases,
    result:
      "at the limit accepted; over refused 413/400/431 or connection closed; server kept serving",
  });
});

Deno.test("the rendezvous answers a request whose Host header is no URL's 400 bad_request in its JSON shape, and serves on", async () => {
  const { server, port } = await start();
  try {
    for (const path of ["/", "/harness/exec-a?role=harness", "/cloud/executor/exec-a/register"]) {
      const r = await rawHttp(port, upgradeHead(path).replace("Host: 127.0.0.1", "Host: a b"));
      assert.equal(r.status, 400, `${path}: ${r.body}`);
      assert.deepEqual(JSON.parse(r.body).error, {
        code: "bad_request",
        message: "Cannot serve the request: its Host header is not valid",
      });
    }
    await assertStillServing(port, "bad Host");
  } finally {
    await server.close();
  }
});
