/**
 * Reliability under faults: the fault proxy itself, then whole transfers
 * through harness -> proxy -> rendezvous -> proxy -> executor with drops,
 * duplicates, reorders, delays and cuts. CI runs a small size and a couple of
 * seeds; `OUTPOST_SOAK=1` runs 32 MiB and more seeds.
 *
 * @module
 */

import assert from "node:assert/strict";
import { FaultProxy } from "./_support/fault_proxy.ts";
import { withDeadline } from "./_support/deadline.ts";
import { record } from "./_support/report.ts";

/** An upstream that echoes every message back and counts connections. */
function startEcho(): { server: Deno.HttpServer<Deno.NetAddr>; url: string; headers: Headers[] } {
  const headers: Headers[] = [];
  const server: Deno.HttpServer<Deno.NetAddr> = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, (req): Response => {
    if (req.headers.get("upgrade") !== "websocket") {
      return Response.json({ url: `ws://127.0.0.1:${server.addr.port}/x?sig=1`, path: req.url });
    }
    headers.push(new Headers(req.headers));
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (ev) => socket.send(ev.data);
    return response;
  });
  return { server, url: `http://127.0.0.1:${server.addr.port}`, headers };
}

async function openSocket(url: string, headers?: HeadersInit): Promise<WebSocket> {
  const ws = new WebSocket(url, { headers });
  ws.binaryType = "arraybuffer";
  await withDeadline(
    new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error("cannot open socket"));
    }),
    3000,
    "socket open",
  );
  return ws;
}

async function closeSocket(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return;
  const closed = new Promise<void>((resolve) => ws.addEventListener("close", () => resolve()));
  ws.close();
  await withDeadline(closed, 3000, "socket close");
}

/** Sends `n` numbered 4-byte messages and collects what comes back until `quietMs` of silence after the last. */
async function roundTrip(
  ws: WebSocket,
  n: number,
  expect: (got: number[]) => boolean,
): Promise<number[]> {
  const got: number[] = [];
  const done = new Promise<void>((resolve) => {
    ws.onmessage = (ev) => {
      got.push(new DataView(ev.data as ArrayBuffer).getUint32(0));
      if (expect(got)) resolve();
    };
  });
  for (let i = 0; i < n; i++) {
    const buf = new ArrayBuffer(4);
    new DataView(buf).setUint32(0, i);
    ws.send(buf);
  }
  await withDeadline(done, 5000, "echo round trip");
  return got;
}

Deno.test("FaultProxy forwards path, query, headers and messages untouched at zero rates", async () => {
  const echo = startEcho();
  const proxy = FaultProxy.start({ upstream: echo.url, seed: 1 });
  const ws = await openSocket(`${proxy.wsUrl}/harness/e1?role=harness`, {
    authorization: "Bearer secret-token",
  });
  const got = await roundTrip(ws, 500, (g) => g.length === 500);
  assert.deepEqual(got, Array.from({ length: 500 }, (_, i) => i));
  assert.equal(echo.headers[0].get("authorization"), "Bearer secret-token");
  // HTTP goes through, and the upstream's ws URL is rewritten to the proxy.
  const res = await fetch(`${proxy.url}/cloud/executor/e1/register`, { method: "POST" });
  const body = await res.json();
  assert.equal(body.url, `${proxy.wsUrl}/x?sig=1`);
  assert.match(body.path, /\/cloud\/executor\/e1\/register$/);
  await closeSocket(ws);
  await proxy.close();
  await echo.server.shutdown();
});

Deno.test("FaultProxy drops, duplicates and reorders reproducibly for a seed", async () => {
  const echo = startEcho();
  const runs: number[][] = [];
  for (let run = 0; run < 2; run++) {
    const proxy = FaultProxy.start({
      upstream: echo.url,
      seed: 42,
      up: { drop: 0.1, duplicate: 0.1, reorder: 0.1 },
    });
    const ws = await openSocket(`${proxy.wsUrl}/e`);
    const n = 400;
    const expected = () => n - proxy.stats.dropped + proxy.stats.duplicated;
    // The upstream echoes without faults, so what comes back is exactly what the proxy let through.
    const got = await roundTrip(ws, n, (g) => g.length === expected());
    assert.ok(proxy.stats.dropped > 0 && proxy.stats.duplicated > 0 && proxy.stats.reordered > 0);
    assert.ok(got.some((v, i) => i > 0 && v < got[i - 1]), "something arrived out of order");
    runs.push(got);
    record({
      area: "fault",
      name: "fault proxy self-test: seeded drop/duplicate/reorder 10% each",
      cases: n,
      result: "what arrives is exactly what the proxy let through; same seed, same schedule",
      details: { ...proxy.stats },
    });
    await closeSocket(ws);
    await proxy.close();
  }
  assert.deepEqual(runs[0], runs[1], "the same seed gives the same schedule");
  await echo.server.shutdown();
});

Deno.test("FaultProxy cuts both sockets on command and at random, and bounds its queue", async () => {
  const echo = startEcho();
  const proxy = FaultProxy.start({ upstream: echo.url, seed: 7 });
  const ws = await openSocket(`${proxy.wsUrl}/e`);
  const closed = new Promise<CloseEvent>((resolve) =>
    ws.addEventListener("close", (e) => resolve(e))
  );
  assert.equal(proxy.cutAll(), 1);
  const ev = await withDeadline(closed, 3000, "cut");
  assert.equal(ev.code, 4000);
  await withDeadline(proxy.drained(), 3000, "proxy drained");
  // Random cut: with rate 1 the first message cuts.
  proxy.setRates({ both: { cut: 1 } });
  const ws2 = await openSocket(`${proxy.wsUrl}/e`);
  const closed2 = new Promise<void>((resolve) => ws2.addEventListener("close", () => resolve()));
  ws2.send(new Uint8Array([1]));
  await withDeadline(closed2, 3000, "random cut");
  // A direction paused by a long delay holding more than maxQueue messages is cut.
  await proxy.close();
  const small = FaultProxy.start({
    upstream: echo.url,
    seed: 9,
    maxQueue: 8,
    up: { delay: 1, delayMs: [2000, 2000] },
  });
  const ws3 = await openSocket(`${small.wsUrl}/e`);
  const closed3 = new Promise<void>((resolve) => ws3.addEventListener("close", () => resolve()));
  for (let i = 0; i < 20; i++) ws3.send(new Uint8Array([i]));
  await withDeadline(closed3, 3000, "queue bound cut");
  assert.ok(small.stats.cuts >= 1);
  await small.close();
  await echo.server.shutdown();
});
