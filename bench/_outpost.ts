/**
 * The outpost workloads of the peer comparison.
 *
 * The servers run as child processes built from the library entry points
 * (`serveRendezvous`, `runExecutor`, `serveLocal`, each with an `Executor`),
 * so their memory can be read from /proc and after a forced GC; the harness
 * (client) runs in the benchmark process over an open connection, which is
 * what "over an open connection" in the targets means.
 *
 * - rendezvous mode: harness -> rendezvous -> executor (three processes, two
 *   WebSocket hops, reliable mux streams on both relay sockets);
 * - serve mode: harness -> `serveLocal` (two processes, one WebSocket per
 *   session, one JSON-RPC message per text message).
 *
 * Run as a script it is one of those servers:
 * `deno run -A --v8-flags=--expose-gc bench/_outpost.ts host-rendezvous|host-executor URL ID|host-serve`
 * (token in `OUTPOST_BENCH_TOKEN`). Each prints `READY {json}`, then answers
 * `mem` lines on stdin with `MEM {"rss":N,"heap":N}` after a full GC.
 *
 * @module
 */

import { GatedChannel } from "../lib/client/_gated_channel.ts";
import { connect, type Connection, connectionOver } from "../lib/client/connect.ts";
import { RemoteCommand } from "../lib/client/remote_command.ts";
import { StreamMux } from "../lib/mux/stream_mux.ts";
import { RelaySocket } from "../lib/relay/relay_socket.ts";
import {
  type AnnouncedChild,
  drainCounting,
  type Latency,
  READY_PREFIX,
  spawnAnnounced,
  summarize,
  type Throughput,
  throughput,
  timeEchoes,
  timeStdinFromReady,
  withDeadline,
} from "./_util.ts";

/** How the harness reaches the executor. */
export type OutpostMode = "rendezvous" | "serve";

/** Memory cost of idle items, measured in the executor process. */
export interface MemoryFigure {
  /** Items opened. */
  n: number;
  /** RSS growth per item, bytes. */
  rssPerItem: number;
  /** V8 heap (used + external) growth per item after a full GC, bytes. */
  heapPerItem: number;
}

/** Result of the concurrent streams workload. */
export interface ConcurrentFigure {
  /** Streams (or sessions) opened. */
  streams: number;
  /** Streams whose command failed or printed the wrong thing. */
  errors: number;
  /** Wall time for all of them, ms. */
  ms: number;
  /** The first error, for the log. */
  firstError?: string;
}

/** A running outpost deployment to measure. */
export interface OutpostTarget {
  /** Runs `sh -c command` and counts its stdout. */
  bulkOutput(command: string): Promise<Throughput>;
  /**
   * Runs `sh -c command` with `data` written to its stdin, timed from when
   * the command is running (it prints a ready byte first, as the ssh peer's
   * does) to its exit.
   */
  bulkStdin(command: string, data: Uint8Array): Promise<Throughput>;
  /** One byte to a remote `cat` and back, `count` times. */
  roundTrip(count: number): Promise<Latency>;
  /**
   * {@linkcode OutpostTarget.roundTrip} while a second session, on a harness
   * socket of its own, streams `cat /dev/zero`: through the rendezvous both
   * sessions share the executor's one socket. Also reports that stream's
   * throughput over the same time.
   */
  roundTripBesideBulk(count: number): Promise<{ latency: Latency; bulk: Throughput }>;
  /** Start-to-exit of `true`, `count` times. */
  startToExit(count: number): Promise<Latency>;
  /** `n` sessions at once, each running `sh -c "echo hi"`. */
  concurrentStreams(n: number): Promise<ConcurrentFigure>;
  /** Executor memory per idle stream (rendezvous only). */
  idleStreamMemory(n: number): Promise<MemoryFigure>;
  /** Executor memory per idle initialized session. */
  idleSessionMemory(n: number): Promise<MemoryFigure>;
  /**
   * CPU time (user + system) each server process has used so far, in ms, by
   * role (`rendezvous`, `executor`; `serve`), read from /proc.
   */
  serverCpuMs(): Record<string, number>;
  /** Stops everything this target started. */
  close(): Promise<void>;
}

const SELF = new URL(import.meta.url).pathname;
const EXECUTOR_ID = "bench-executor";
const WRITE_SLICE = 65536;
const IDLE_SETTLE_MS = 1000;
/** Output the bulk stream beside the round trips delivers before they start (past its ramp-up). */
const BESIDE_WARM_BYTES = 32 * 1024 * 1024;
/** USER_HZ: Linux reports /proc CPU times in these ticks (100 on every common build). */
const CLOCK_TICKS_PER_SECOND = 100;

type Mem = { rss: number; heap: number };

async function readMem(host: AnnouncedChild<unknown>): Promise<Mem> {
  const line = await host.request("mem", "MEM ");
  return JSON.parse(line.slice(4)) as Mem;
}

function hostArgs(...rest: string[]): string[] {
  // `compare.ts --profile=DIR` asks for CPU profiles of the server processes too.
  const dir = Deno.env.get("OUTPOST_BENCH_PROFILE_DIR");
  const prof = dir ? ["--cpu-prof", `--cpu-prof-dir=${dir}`] : [];
  return ["run", "-A", "--v8-flags=--expose-gc", ...prof, SELF, ...rest];
}

/**
 * Starts outpost in a mode: the server processes and one open client connection.
 *
 * @param mode `rendezvous` or `serve`.
 * @returns The target to measure.
 * @throws Error when a server does not come up or the client cannot connect.
 */
export async function startOutpost(mode: OutpostMode): Promise<OutpostTarget> {
  const token = crypto.randomUUID().replaceAll("-", "");
  const env = { OUTPOST_BENCH_TOKEN: token };
  const children: AnnouncedChild<unknown>[] = [];
  const stopAll = async (): Promise<void> => {
    for (const child of children.reverse()) await child.stop();
  };
  try {
    let url: string;
    let executorHost: AnnouncedChild<unknown>;
    let open: () => Promise<Connection>;
    let openMany: (n: number) => Promise<{ conns: Connection[]; close: () => Promise<void> }>;
    if (mode === "rendezvous") {
      const rz = await spawnAnnounced<{ url: string; registry: string }>(
        Deno.execPath(),
        hostArgs("host-rendezvous"),
        { env },
      );
      children.push(rz);
      url = rz.info.url;
      executorHost = await spawnAnnounced(
        Deno.execPath(),
        hostArgs("host-executor", rz.info.registry, EXECUTOR_ID),
        { env, stdin: true },
      );
      children.push(executorHost);
      open = () => connect(url, { executorId: EXECUTOR_ID, token, clientName: "bench" });
      openMany = (n) => openStreamsOnOneSocket(url, token, n);
    } else {
      const sv = await spawnAnnounced<{ url: string }>(Deno.execPath(), hostArgs("host-serve"), {
        env,
        stdin: true,
      });
      children.push(sv);
      url = sv.info.url;
      executorHost = sv;
      open = () => connect(url, { clientName: "bench" });
      openMany = async (n) => {
        const settled = await Promise.allSettled(Array.from({ length: n }, () => open()));
        const conns = settled.flatMap((s) => s.status === "fulfilled" ? [s.value] : []);
        const failed = settled.find((s) => s.status === "rejected");
        if (failed) {
          await Promise.allSettled(conns.map((c) => c.close()));
          throw (failed as PromiseRejectedResult).reason;
        }
        return {
          conns,
          close: async () => void await Promise.allSettled(conns.map((c) => c.close())),
        };
      };
    }
    const conn = await open();
    const roles = new Map<string, number>(
      children.map((c, i) => [
        mode === "serve" ? "serve" : i === 0 ? "rendezvous" : "executor",
        c.child.pid,
      ]),
    );
    const serverCpuMs = () => Object.fromEntries([...roles].map(([r, pid]) => [r, cpuMs(pid)]));
    return makeTarget(mode, conn, executorHost, url, token, serverCpuMs, openMany, async () => {
      await conn.close();
      await stopAll();
    });
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/**
 * Opens `n` initialized sessions as `n` reliable streams of one harness relay socket.
 */
async function openStreamsOnOneSocket(
  url: string,
  token: string,
  n: number,
): Promise<{ conns: Connection[]; close: () => Promise<void> }> {
  const harness = `${
    url.replace(/^http/, "ws").replace(/\/+$/, "")
  }/harness/${EXECUTOR_ID}?role=harness`;
  const socket = await RelaySocket.connect(harness, { token });
  const mux = new StreamMux({ role: "harness" });
  mux.attach(socket);
  const conns = Array.from({ length: n }, () => {
    // Wired as connect() wires its one stream, but many streams share one socket.
    return connectionOver(harness, new GatedChannel(mux.open()));
  });
  const close = async (): Promise<void> => {
    await Promise.allSettled(conns.map((c) => c.close()));
    await mux.close();
    await socket.close("client_close");
  };
  const settled = await Promise.allSettled(
    conns.map((c) => c.initialize("bench", { timeoutMs: 60_000 })),
  );
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) {
    await close();
    throw (failed as PromiseRejectedResult).reason;
  }
  return { conns, close };
}

/** CPU time (user + system) a process has used, in ms, from /proc (NaN when unreadable). */
function cpuMs(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the parenthesized command name; utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 1000 / CLOCK_TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

function makeTarget(
  mode: OutpostMode,
  conn: Connection,
  executorHost: AnnouncedChild<unknown>,
  url: string,
  token: string,
  serverCpuMs: () => Record<string, number>,
  openMany: (n: number) => Promise<{ conns: Connection[]; close: () => Promise<void> }>,
  close: () => Promise<void>,
): OutpostTarget {
  const sh = (command: string, options: ConstructorParameters<typeof RemoteCommand>[2] = {}) =>
    new RemoteCommand(conn, "sh", { args: ["-c", command], ...options });

  async function idleMemory(
    n: number,
    open: (n: number) => Promise<() => Promise<void>>,
  ): Promise<MemoryFigure> {
    // Warm up the code paths (lazy module state, JIT) before the baseline.
    await (await open(Math.min(n, 20)))();
    await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
    const before = await readMem(executorHost);
    const release = await open(n);
    try {
      // Let the executor finish setting up what the last frames asked for.
      await new Promise((r) => setTimeout(r, IDLE_SETTLE_MS));
      const after = await readMem(executorHost);
      return {
        n,
        rssPerItem: (after.rss - before.rss) / n,
        heapPerItem: (after.heap - before.heap) / n,
      };
    } finally {
      await release();
    }
  }

  return {
    async bulkOutput(command) {
      const child = sh(command, { stdout: "piped", stderr: "null" }).spawn();
      const r = await drainCounting(child.stdout);
      const status = await child.status;
      if (!status.success) throw new Error(`${command} exited with ${status.code}`);
      return throughput(r.bytes, r.lastAt - r.firstAt);
    },

    async bulkStdin(command, data) {
      const child = sh(READY_PREFIX + command, {
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      try {
        return await timeStdinFromReady(child, data, WRITE_SLICE, 120_000, command);
      } catch (error) {
        await child.kill("SIGKILL").catch(() => {});
        throw error;
      }
    },

    async roundTrip(count) {
      const child = new RemoteCommand(conn, "cat", {
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const samples = await timeEchoes(child, count, "remote cat");
      return summarize(samples);
    },

    async roundTripBesideBulk(count) {
      const { conns, close: release } = await openMany(1);
      const bulk = new RemoteCommand(conns[0], "cat", {
        args: ["/dev/zero"],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const reader = bulk.stdout.getReader();
      let bytes = 0;
      let warmed!: () => void;
      const warm = new Promise<void>((resolve) => warmed = resolve);
      const draining = (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          bytes += value.byteLength;
          if (bytes >= BESIDE_WARM_BYTES) warmed();
        }
      })();
      try {
        await withDeadline(Promise.race([warm, draining]), 60_000, "bulk stream warm-up");
        if (bytes < BESIDE_WARM_BYTES) throw new Error("the bulk stream ended early");
        const echo = new RemoteCommand(conn, "cat", {
          stdin: "piped",
          stdout: "piped",
          stderr: "null",
        }).spawn();
        const from = bytes;
        const t0 = performance.now();
        const samples = await timeEchoes(echo, count, "remote cat beside bulk");
        const during = throughput(bytes - from, performance.now() - t0);
        return { latency: summarize(samples), bulk: during };
      } finally {
        bulk.kill("SIGKILL").catch(() => {});
        await reader.cancel().catch(() => {});
        await draining.catch(() => {});
        await bulk.status.catch(() => {});
        await release();
      }
    },

    async startToExit(count) {
      const samples: number[] = [];
      for (let i = 0; i < count + 5; i++) {
        const t0 = performance.now();
        const status = await new RemoteCommand(conn, "true", { stdout: "null", stderr: "null" })
          .spawn().status;
        if (!status.success) throw new Error(`true exited with ${status.code}`);
        if (i >= 5) samples.push(performance.now() - t0);
      }
      return summarize(samples);
    },

    async concurrentStreams(n) {
      const t0 = performance.now();
      const { conns, close: release } = await openMany(n);
      let errors = 0;
      let firstError: string | undefined;
      try {
        await Promise.all(conns.map(async (c) => {
          try {
            const out = await new RemoteCommand(c, "sh", { args: ["-c", "echo hi"] }).output();
            const text = new TextDecoder().decode(out.stdout);
            if (out.code !== 0 || text !== "hi\n") {
              throw new Error(`exit ${out.code}, stdout ${JSON.stringify(text)}`);
            }
          } catch (error) {
            errors++;
            firstError ??= String(error);
          }
        }));
      } finally {
        await release();
      }
      return { streams: conns.length, errors, ms: performance.now() - t0, firstError };
    },

    idleStreamMemory(n) {
      if (mode !== "rendezvous") {
        return Promise.reject(new Error("idle streams exist only via the rendezvous"));
      }
      return idleMemory(n, async (n) => {
        // A resume frame makes the executor create a stream (mode still pending) without a session.
        const harness = `${
          url.replace(/^http/, "ws").replace(/\/+$/, "")
        }/harness/${EXECUTOR_ID}?role=harness`;
        const socket = await RelaySocket.connect(harness, { token });
        for (let i = 0; i < n; i++) {
          await socket.send({
            version: 1,
            streamId: crypto.randomUUID(),
            ack: 0,
            ackBits: 0,
            body: { kind: "resume", nextSeq: 1 },
          });
        }
        return async () => void await socket.close("client_close");
      });
    },

    idleSessionMemory(n) {
      return idleMemory(n, async (n) => (await openMany(n)).close);
    },

    serverCpuMs,
    close,
  };
}

// ---------------------------------------------------------------------------
// Server hosts (child processes)

async function serveMemRequests(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of Deno.stdin.readable) {
    pending += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (line === "mem") {
        gc?.();
        await new Promise((r) => setTimeout(r, 50));
        gc?.();
        const m = Deno.memoryUsage();
        console.log(`MEM ${JSON.stringify({ rss: m.rss, heap: m.heapUsed + m.external })}`);
      }
    }
  }
}

/**
 * The bench's executor limits, library options only: `outpost executor` runs
 * with the defaults (256 sessions, 256 processes, 64 per session). They are
 * raised so that the concurrent streams workload can open 1,000 sessions at
 * once; compare.ts says so beside that workload.
 */
export const EXECUTOR_LIMITS = {
  maxSessions: 100_000,
  maxProcesses: 100_000,
  maxProcessesPerSession: 100_000,
} as const;

function executorOptions(): Record<string, unknown> {
  return {
    sessionTtlMs: 1_000,
    ...EXECUTOR_LIMITS,
  };
}

async function hostMain(mode: string, args: string[]): Promise<void> {
  const token = Deno.env.get("OUTPOST_BENCH_TOKEN") ?? "";
  const stop = new AbortController();
  // SIGINT too: Ctrl-C reaches the whole process group, and the executor must
  // stop its own children (each in a process group of its own) on the way out.
  Deno.addSignalListener("SIGTERM", () => stop.abort());
  Deno.addSignalListener("SIGINT", () => stop.abort());
  if (mode === "host-rendezvous") {
    const { serveRendezvous } = await import("../lib/server/rendezvous_server.ts");
    const server = await serveRendezvous({
      listen: "ws://127.0.0.1:0",
      token,
      maxStreams: 100_000,
      maxHarnessSockets: 100_000,
    });
    console.log(`READY ${JSON.stringify({ url: server.url, registry: server.registryUrl })}`);
    await new Promise((r) => stop.signal.addEventListener("abort", r, { once: true }));
    await server.close();
  } else if (mode === "host-executor") {
    const { Executor } = await import("../lib/exec/executor.ts");
    const { runExecutor } = await import("../lib/server/executor_loop.ts");
    const executor = new Executor(executorOptions() as ConstructorParameters<typeof Executor>[0]);
    let announced = false;
    const handle = runExecutor({
      registry: args[0],
      executorId: args[1],
      token,
      executor,
      maxStreams: 100_000,
      signal: stop.signal,
      onEvent: (event) => {
        if (event.type === "connected" && !announced) {
          announced = true;
          console.log(`READY ${JSON.stringify({ executorId: args[1] })}`);
        } else if (event.type === "stream_error") {
          console.error(`stream error ${event.streamId}: ${event.error.message}`);
        }
      },
    });
    serveMemRequests();
    await handle.closed.catch((e) => console.error(String(e)));
    await executor.close();
  } else if (mode === "host-serve") {
    const { Executor } = await import("../lib/exec/executor.ts");
    const { serveLocal } = await import("../lib/server/local_server.ts");
    const executor = new Executor(executorOptions() as ConstructorParameters<typeof Executor>[0]);
    const server = await serveLocal({ listen: "ws://127.0.0.1:0", executor, signal: stop.signal });
    console.log(`READY ${JSON.stringify({ url: server.url })}`);
    serveMemRequests();
    await server.closed;
    await executor.close();
  } else {
    console.error("usage: _outpost.ts host-rendezvous | host-executor REGISTRY ID | host-serve");
    Deno.exit(2);
  }
  Deno.exit(0);
}

if (import.meta.main) {
  await hostMain(Deno.args[0], Deno.args.slice(1));
}
