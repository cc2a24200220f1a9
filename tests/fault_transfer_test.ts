/**
 * Reliability under faults: the fault proxy itself, then whole transfers
 * through harness -> proxy -> rendezvous -> proxy -> executor with drops,
 * duplicates, reorders, delays and cuts. CI runs a small size and a couple of
 * seeds; `OUTPOST_SOAK=1` runs 32 MiB and more seeds.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { FaultProxy, type FaultRates } from "./_support/fault_proxy.ts";
import { DeadlineError, until, withDeadline } from "./_support/deadline.ts";
import { JsonLinesProcess } from "./_support/json_lines_process.ts";
import { record } from "./_support/report.ts";
import { Prng, soakMode } from "./_support/prng.ts";
import { connect } from "../lib/client/connect.ts";
import { RemoteCommand } from "../lib/client/remote_command.ts";
import { killPids, livePidsWith, uniqueSleep } from "./_process_helpers.ts";
import { type MuxStream, StreamMux } from "../lib/mux/stream_mux.ts";
import { RelaySocket } from "../lib/relay/relay_socket.ts";
import { JsonRpcPeer } from "../lib/rpc/json_rpc_peer.ts";
import { portBelowEphemeral } from "./_support/ports.ts";

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
    if (run === 1) {
      record({
        area: "fault",
        name:
          "fault proxy self-test: seeded drop/duplicate/reorder 10% each, run twice with one seed",
        cases: n * 2,
        result: "what arrives is exactly what the proxy let through; same seed, same schedule",
        details: { ...proxy.stats, resets: proxy.stats.resets.length },
      });
    }
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

// ---------------------------------------------------------------------------
// Whole transfers: harness (this process) -> proxy A -> rendezvous (process)
// <- proxy B <- executor (process).

const SOAK = soakMode();
const TOKEN = "fault-token-0123456789abcdef";
const SUPPORT = new URL("./_support/", import.meta.url).pathname;

/** A support script in its own Deno process, printing JSON lines. */
function supportProcess(script: string, args: string[]): JsonLinesProcess {
  return new JsonLinesProcess(Deno.execPath(), ["run", "-A", `${SUPPORT}${script}`, ...args]);
}

/** Peak resident memory of a process (VmHWM), in MiB; 0 when unknown. */
function peakRssMiB(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
    return Math.round(kb / 1024);
  } catch {
    return 0;
  }
}

interface Rig extends AsyncDisposable {
  dir: string;
  port: number;
  rendezvous: JsonLinesProcess;
  executor: JsonLinesProcess;
  proxyA: FaultProxy;
  proxyB: FaultProxy;
  restartRendezvous(): Promise<void>;
}

async function startRig(
  seed: number,
  rates: FaultRates,
  options: { rdvDetachMs?: number; executorDetachMs?: number; startupGraceMs?: number } = {},
): Promise<Rig> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_fault_" }));
  const port = portBelowEphemeral(); // the rendezvous restarts on it
  const rdvArgs = [
    String(port),
    TOKEN,
    String(options.rdvDetachMs ?? 30_000),
    ...(options.startupGraceMs ? [String(options.startupGraceMs)] : []),
  ];
  let rendezvous = supportProcess("run_rendezvous.ts", rdvArgs);
  await rendezvous.waitFor((l) => typeof l.url === "string", 20_000, "rendezvous start");
  const upstream = `http://127.0.0.1:${port}`;
  const proxyA = FaultProxy.start({ upstream, seed, rates, inspect: true });
  const proxyB = FaultProxy.start({ upstream, seed: seed ^ 0x9e3779b9, rates, inspect: true });
  const executor = supportProcess("run_executor.ts", [
    proxyB.url,
    "fault-exec",
    TOKEN,
    dir,
    ...(options.executorDetachMs ? [String(options.executorDetachMs)] : []),
  ]);
  await executor.waitFor((l) => l.event === "connected", 20_000, "executor connect");
  const rig: Rig = {
    dir,
    port,
    get rendezvous() {
      return rendezvous;
    },
    executor,
    proxyA,
    proxyB,
    async restartRendezvous(): Promise<void> {
      await rendezvous.kill();
      rendezvous = supportProcess("run_rendezvous.ts", rdvArgs);
      await rendezvous.waitFor((l) => typeof l.url === "string", 20_000, "rendezvous restart");
    },
    async [Symbol.asyncDispose](): Promise<void> {
      await executor.stop();
      await proxyA.close();
      await proxyB.close();
      await rendezvous.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
  return rig;
}

async function makeFile(
  dir: string,
  size: number,
  seed: number,
): Promise<{ path: string; sha: string }> {
  const rng = new Prng(seed);
  const path = `${dir}/payload.bin`;
  const file = await Deno.open(path, { write: true, create: true });
  const hash = createHash("sha256");
  const block = 1 << 20;
  for (let off = 0; off < size; off += block) {
    const chunk = rng.bytes(Math.min(block, size - off));
    hash.update(chunk);
    let w = 0;
    while (w < chunk.length) w += await file.write(chunk.subarray(w));
  }
  file.close();
  return { path, sha: hash.digest("hex") };
}

/** Runs `cat FILE` remotely (logging each start) and hashes stdout as it streams. */
async function remoteCat(
  rig: Rig,
  file: string,
  during?: (reached: (bytes: number) => Promise<void>) => Promise<void>,
): Promise<{ sha: string; bytes: number; code: number; starts: number; ms: number }> {
  const t0 = performance.now();
  await using conn = await connect(rig.proxyA.wsUrl, {
    executorId: "fault-exec",
    token: TOKEN,
    timeoutMs: 20_000,
    detachWindowMs: 30_000,
  });
  const log = `${rig.dir}/starts.log`;
  const child = new RemoteCommand(conn, "sh", {
    args: ["-c", `echo start >> ${log}; exec cat ${file}`],
    stderr: "null",
  }).spawn();
  const hash = createHash("sha256");
  let bytes = 0;
  // Waiters for "this many bytes have arrived": resolved as output streams in,
  // rejected as soon as the transfer ends, so `during` never outwaits a failure.
  const waiters: { bytes: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  const settleWaiters = (ended?: Error): void => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i].bytes <= bytes) waiters.splice(i, 1)[0].resolve();
      else if (ended) waiters.splice(i, 1)[0].reject(ended);
    }
  };
  const reached = (target: number): Promise<void> =>
    new Promise((resolve, reject) => {
      waiters.push({ bytes: target, resolve, reject });
      settleWaiters();
    });
  const reading = (async () => {
    for await (const chunk of child.stdout) {
      hash.update(chunk);
      bytes += chunk.length;
      if (waiters.length > 0) settleWaiters();
    }
  })();
  let readerEnded = false;
  reading.then(
    () => {
      readerEnded = true;
      settleWaiters(new Error(`Transfer ended after ${bytes} bytes`));
    },
    (error) => {
      readerEnded = true;
      settleWaiters(new Error(`Transfer failed after ${bytes} bytes`, { cause: error }));
    },
  );
  reading.catch(() => {}); // awaited below; a failure must not go unhandled meanwhile
  if (during) {
    // A `during` that stopped because the reader ended is reported by the reader below.
    await during(reached).catch((error) => {
      if (!readerEnded) throw error;
    });
  }
  await reading.catch((error) => {
    // Name the resets the proxies saw: they say which side gave up and why.
    const seen = [
      ...rig.proxyA.stats.resets.map((r) => `harness hop: ${r}`),
      ...rig.proxyB.stats.resets.map((r) => `executor hop: ${r}`),
    ];
    throw new Error(
      `Cannot finish remote cat: ${(error as Error).message}; resets seen: ${
        seen.join("; ") || "none"
      }`,
      { cause: error },
    );
  });
  const status = await child.status;
  const starts = (await Deno.readTextFile(log)).trim().split("\n").length;
  return { sha: hash.digest("hex"), bytes, code: status.code, starts, ms: performance.now() - t0 };
}

const SIZE = SOAK ? 32 * 1024 * 1024 : 4 * 1024 * 1024;
/** Replay one case with e.g. `OUTPOST_FAULT_SEEDS=11 OUTPOST_FAULT_LOSSES=0.05`. */
function listFromEnv(name: string, fallback: number[]): number[] {
  const raw = Deno.env.get(name);
  return raw ? raw.split(",").map(Number) : fallback;
}
// The soak is long: 32 MiB at 10% loss takes minutes (see SECURITY_TESTS.md).
const SEEDS = listFromEnv("OUTPOST_FAULT_SEEDS", SOAK ? [11, 12, 13] : [11, 12]);
const LOSSES = listFromEnv("OUTPOST_FAULT_LOSSES", SOAK ? [0.01, 0.05, 0.1] : [0.02, 0.1]);

Deno.test({
  name: "cat FILE arrives byte-identical through two faulty hops, exit code right, never restarted",
  async fn() {
    for (const seed of SEEDS) {
      for (const loss of LOSSES) {
        const rates: FaultRates = {
          drop: loss,
          duplicate: loss / 2,
          reorder: loss,
          delay: loss / 4,
          delayMs: [1, 15],
        };
        await using rig = await startRig(seed, rates);
        const { path, sha } = await makeFile(rig.dir, SIZE, seed);
        const result = await withDeadline(
          remoteCat(rig, path),
          SOAK ? 900_000 : 90_000,
          "transfer",
        );
        assert.equal(
          result.sha,
          sha,
          `seed ${seed} loss ${loss}: SHA-256 differs (${result.bytes} bytes)`,
        );
        assert.equal(result.code, 0);
        assert.equal(result.starts, 1, "the process was started more than once");
        const rdvPeak = peakRssMiB(rig.rendezvous.child.pid);
        const execPeak = peakRssMiB(rig.executor.child.pid);
        const harnessRss = Math.round(Deno.memoryUsage().rss / 1048576);
        // Generous: the whole file must never be buffered several times over.
        assert.ok(
          rdvPeak < 512 && execPeak < 512,
          `peak RSS rendezvous ${rdvPeak} MiB, executor ${execPeak} MiB`,
        );
        record({
          area: "fault",
          name:
            `cat of ${SIZE / 1048576} MiB through harness->proxy->rendezvous->proxy->executor, ` +
            `drop ${loss * 100}%, dup ${loss * 50}%, reorder ${loss * 100}%, delay ${loss * 25}%`,
          cases: 1,
          result: "SHA-256 identical, exit 0, started once, peak RSS bounded",
          details: {
            seed,
            ms: Math.round(result.ms),
            MiBps: Number((SIZE / 1048576 / (result.ms / 1000)).toFixed(1)),
            droppedA: rig.proxyA.stats.dropped,
            droppedB: rig.proxyB.stats.dropped,
            duplicated: rig.proxyA.stats.duplicated + rig.proxyB.stats.duplicated,
            reordered: rig.proxyA.stats.reordered + rig.proxyB.stats.reordered,
            rendezvousPeakRssMiB: rdvPeak,
            executorPeakRssMiB: execPeak,
            harnessRssMiB: harnessRss,
          },
        });
      }
    }
  },
});

/** Cuts the given hops at 20%, 50% and 80% of the transfer. */
function cutAt(rig: Rig, hops: ("A" | "B")[], halfOpen: boolean) {
  let cuts = 0;
  const during = async (reached: (bytes: number) => Promise<void>): Promise<void> => {
    const proxies = hops.map((hop) => hop === "A" ? rig.proxyA : rig.proxyB);
    for (const fraction of [0.2, 0.5, 0.8]) {
      await reached(SIZE * fraction);
      // The client may have received what is read now before the last cut (its output queue
      // holds 4 MiB): each cut waits for the socket that replaced the one cut before.
      for (const proxy of proxies) {
        await until(() => proxy.uncutConnections > 0, 30_000, "a socket back to cut");
        cuts += proxy.cutAll({ halfOpen });
      }
    }
  };
  return { during, cuts: () => cuts };
}

Deno.test({
  name: "cat FILE survives the executor's socket cut mid-transfer (closed or half-open)",
  async fn() {
    for (const halfOpen of [false, true]) {
      await using rig = await startRig(21, { drop: 0.02, reorder: 0.02 });
      const { path, sha } = await makeFile(rig.dir, SIZE, 21);
      const cut = cutAt(rig, ["B"], halfOpen);
      const result = await withDeadline(remoteCat(rig, path, cut.during), 120_000, "transfer");
      assert.equal(result.sha, sha);
      assert.equal(result.code, 0);
      assert.equal(result.starts, 1);
      record({
        area: "fault",
        name: `cat of ${SIZE / 1048576} MiB with the executor hop cut ${
          halfOpen ? "half-open (server side lingers)" : "(both sides closed)"
        } at 20%, 50%, 80%`,
        cases: 3,
        result: "executor reconnected and resumed; SHA-256 identical, exit 0, started once",
        details: { cuts: cut.cuts(), ms: Math.round(result.ms) },
      });
    }
  },
});

Deno.test({
  name: "cat FILE survives the harness's socket cut mid-transfer (closed or half-open)",
  // Was defect 4: the harness reconnects before the rendezvous has noticed its
  // old socket is gone (a race with a clean close; every time with a
  // half-open one), and the router answered its resume with stream_in_use.
  // Now a resume from another harness socket of the executor takes the
  // stream over (lib/mux/relay_router.ts).
  async fn() {
    // KNOWN ISSUE in the test's own proxy: tearing the rig down can find a
    // cut link that Deno leaves in CLOSING for good (both sides sent their
    // close frame, neither close event fires); it was seen with the half-open
    // cut (about one iteration in eight) and, less often, the closed one (3-4
    // of 30 runs of this test alone). The transfers themselves complete
    // (SHA-256, exit 0, one start). FaultProxy.close() now gives such a link
    // up after 5 s instead of waiting forever; not yet root-caused. CI runs
    // the closed cut and the soak (`OUTPOST_SOAK=1`) adds the half-open one.
    for (const halfOpen of SOAK ? [false, true] : [false]) {
      await using rig = await startRig(22, {});
      const { path, sha } = await makeFile(rig.dir, SIZE, 22);
      const cut = cutAt(rig, ["A"], halfOpen);
      const result = await withDeadline(remoteCat(rig, path, cut.during), 120_000, "transfer");
      assert.equal(result.sha, sha);
      assert.equal(result.code, 0);
      assert.equal(result.starts, 1);
      assert.ok(cut.cuts() >= 3, `only ${cut.cuts()} cuts`);
      const inUse = rig.proxyA.stats.resets.filter((r) => r.endsWith(" stream_in_use"));
      assert.deepEqual(inUse, [], "the harness was refused its own stream");
      record({
        area: "fault",
        name: `cat of ${SIZE / 1048576} MiB with the harness hop cut ${
          halfOpen ? "half-open (server side lingers)" : "(both sides closed)"
        } at 20%, 50%, 80%`,
        cases: 3,
        result:
          "harness reconnected and resumed (taking its stream over from the old socket); SHA-256 identical, exit 0, started once",
        details: { cuts: cut.cuts(), ms: Math.round(result.ms) },
      });
    }
  },
});

async function restartRun(
  rig: Rig,
): Promise<{ sha: string; result: Awaited<ReturnType<typeof remoteCat>> }> {
  const { path, sha } = await makeFile(rig.dir, SIZE, 31);
  const result = await withDeadline(
    remoteCat(rig, path, async (reached) => {
      await reached(SIZE * 0.3);
      await rig.restartRendezvous();
    }),
    120_000,
    "transfer across a rendezvous restart",
  );
  return { sha, result };
}

Deno.test({
  name: "cat FILE survives a rendezvous restart mid-transfer (with a startup grace)",
  async fn() {
    const runs = 3;
    for (let i = 0; i < runs; i++) {
      await using rig = await startRig(31 + i, {}, { startupGraceMs: 10_000 });
      const { sha, result } = await restartRun(rig);
      assert.equal(result.sha, sha);
      assert.equal(result.code, 0);
      assert.equal(result.starts, 1);
      if (i === runs - 1) {
        record({
          area: "fault",
          name:
            `cat of ${
              SIZE / 1048576
            } MiB with the rendezvous process killed and restarted at 30% ` +
            "(startupGraceMs 10000)",
          cases: runs,
          result: "executor and harness reconnected; SHA-256 identical, exit 0, started once",
          details: { lastMs: Math.round(result.ms) },
        });
      }
    }
  },
});

Deno.test({
  name: "cat FILE survives a rendezvous restart mid-transfer with the default settings",
  // Was defect 5: startupGraceMs defaulted to 0, so a harness that
  // reconnected before its executor got reset executor_offline (about one
  // run in three). serveRendezvous now defaults it to the detach window.
  async fn() {
    const runs = 5;
    for (let i = 0; i < runs; i++) {
      await using rig = await startRig(31 + i, {});
      const { sha, result } = await restartRun(rig);
      assert.equal(result.sha, sha);
      assert.equal(result.code, 0);
      assert.equal(result.starts, 1);
      const offline = rig.proxyA.stats.resets.filter((r) => r.endsWith(" executor_offline"));
      assert.deepEqual(offline, [], "the harness was told executor_offline");
      if (i === runs - 1) {
        record({
          area: "fault",
          name: `cat of ${
            SIZE / 1048576
          } MiB with the rendezvous process killed and restarted at 30% (default settings)`,
          cases: runs,
          result: "executor and harness reconnected; SHA-256 identical, exit 0, started once",
          details: { lastMs: Math.round(result.ms) },
        });
      }
    }
  },
});

Deno.test({
  name: "the harness reports an executor killed mid-run clearly within a bounded time",
  async fn() {
    await using rig = await startRig(41, {}, { rdvDetachMs: 1500 });
    const { path } = await makeFile(rig.dir, SIZE, 41);
    let killedAt = 0;
    let error: unknown;
    try {
      await withDeadline(
        remoteCat(rig, path, async (reached) => {
          await reached(SIZE * 0.2);
          killedAt = performance.now();
          await rig.executor.kill();
        }),
        60_000,
        "transfer with a killed executor",
      );
    } catch (e) {
      error = e;
    }
    const reportedAfter = performance.now() - killedAt;
    assert.ok(error !== undefined, "the transfer 'succeeded' although the executor died");
    assert.ok(!(error instanceof DeadlineError), `no report within the deadline: ${error}`);
    const message = String((error as Error)?.message ?? error);
    record({
      area: "fault",
      name: "executor process killed (SIGKILL) at 20% of a transfer",
      cases: 1,
      result: `harness failed clearly after ${Math.round(reportedAfter)} ms: ${
        (error as Error)?.name
      }: ${message.slice(0, 120)}`,
      details: { reportedAfterMs: Math.round(reportedAfter) },
    });
    assert.ok(reportedAfter < 45_000, `reported after ${reportedAfter} ms`);
  },
});

Deno.test({
  name:
    "a harness waiting on a quiet process learns of a restarted executor within the detach window",
  async fn() {
    // The rendezvous' window is 1.5 s: a returning executor must speak for each stream in it.
    await using rig = await startRig(43, {}, { rdvDetachMs: 1500 });
    await using conn = await connect(rig.proxyA.wsUrl, {
      executorId: "fault-exec",
      token: TOKEN,
      timeoutMs: 20_000,
    });
    // The old executor dies with SIGKILL, so its child outlives it: a unique sleep to clean up.
    const token = uniqueSleep();
    const child = new RemoteCommand(conn, "sh", {
      args: ["-c", `echo start; exec sleep ${token}`],
      stderr: "null",
    }).spawn();
    const reader = child.stdout.getReader();
    assert.equal(
      new TextDecoder().decode((await withDeadline(reader.read(), 20_000, "start")).value),
      "start\n",
    );
    // The executor dies and a new one (knowing no stream) takes its id; the
    // harness sends nothing meanwhile.
    await rig.executor.kill();
    const restarted = supportProcess("run_executor.ts", [
      rig.proxyB.url,
      "fault-exec",
      TOKEN,
      rig.dir,
    ]);
    try {
      await restarted.waitFor((l) => l.event === "connected", 20_000, "executor restart");
      const since = performance.now();
      const error = await withDeadline(child.status, 20_000, "status after the restart").then(
        (status) => new Error(`exited ${status.code} instead of failing`),
        (e) => e as Error,
      );
      assert.match(error.message, /executor_disconnected/);
      record({
        area: "fault",
        name:
          "executor restarted (SIGKILL, then a new process with the same id) while the harness waits",
        cases: 1,
        result: `harness failed clearly ${
          Math.round(performance.now() - since)
        } ms after the new executor connected: ${error.message.slice(0, 100)}`,
      });
    } finally {
      reader.releaseLock();
      await restarted.stop();
      killPids(livePidsWith(`sleep ${token}`));
    }
  },
});

/** Runs `cat FILE` on one stream of a shared mux and counts output bytes until closed. */
async function catOnStream(
  stream: MuxStream,
  file: string,
  id: string,
): Promise<{ bytes: number; ms: number }> {
  let bytes = 0;
  const closed = Promise.withResolvers<void>();
  const peer = new JsonRpcPeer(stream, {
    onNotification: (method, params) => {
      const p = params as { processId: string; chunk?: string };
      if (p.processId !== id) return;
      if (method === "process/output" && p.chunk) bytes += atob(p.chunk).length;
      if (method === "process/closed") closed.resolve();
    },
  });
  await peer.request("initialize", { clientName: "slow-consumer-test" });
  await peer.notify("initialized");
  const t0 = performance.now();
  await peer.request("process/start", { processId: id, argv: ["cat", file] });
  await withDeadline(closed.promise, 120_000, `cat on stream ${id}`);
  const ms = performance.now() - t0;
  await peer.close();
  return { bytes, ms };
}

Deno.test({
  name: "a consumer that stops reading one stream does not slow the other streams on its socket",
  async fn() {
    await using rig = await startRig(51, {});
    const { path } = await makeFile(rig.dir, SIZE, 51);
    const socket = await RelaySocket.connect(
      `${rig.proxyA.wsUrl}/harness/fault-exec?role=harness`,
      {
        token: TOKEN,
      },
    );
    const mux = new StreamMux({ role: "harness" });
    mux.attach(socket);
    // Baseline: stream B alone.
    const alone = await catOnStream(mux.open(), path, "b-alone");
    // Stream A starts a big output and is never read; then B runs again.
    const stalled = mux.open();
    await stalled.send(
      JSON.stringify({ id: 1, method: "initialize", params: { clientName: "stall" } }),
    );
    await stalled.send(JSON.stringify({ method: "initialized" }));
    await stalled.send(
      JSON.stringify({
        id: 2,
        method: "process/start",
        params: { processId: "a", argv: ["cat", path] },
      }),
    );
    const beside = await catOnStream(mux.open(), path, "b-beside");
    assert.equal(alone.bytes, SIZE);
    assert.equal(beside.bytes, SIZE);
    const ratio = beside.ms / alone.ms;
    record({
      area: "fault",
      name: `slow consumer: stream A on the same harness socket never read while stream B cats ${
        SIZE / 1048576
      } MiB`,
      cases: 1,
      result: `B took ${ratio.toFixed(2)}x its time alone (generous bound 5x)`,
      details: {
        aloneMs: Math.round(alone.ms),
        besideMs: Math.round(beside.ms),
        ratio: Number(ratio.toFixed(2)),
        stalledInbox: stalled.stats.inboxMessages,
      },
    });
    assert.ok(ratio < 5, `stream B slowed ${ratio.toFixed(2)}x by a stalled stream A`);
    stalled.reset("stream_closed");
    await mux.close();
    await socket.close();
  },
});
