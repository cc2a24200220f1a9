/**
 * Stream mux benchmark: throughput of one reliable stream and of 16 parallel
 * streams over one loopback relay socket, each as a ratio to a raw WebSocket
 * carrying the same message sizes in the same run; and memory per idle
 * stream. Run: `deno run -A bench/mux_bench.ts [--quick]`.
 *
 * @module
 */

import { RelaySocket } from "../lib/relay/relay_socket.ts";
import { type MuxStream, StreamMux } from "../lib/mux/stream_mux.ts";

const QUICK = Deno.args.includes("--quick");
const TOTAL_BYTES = (QUICK ? 32 : 256) * 1024 * 1024;
const SIZES = [1024, 16 * 1024, 60 * 1024, 1024 * 1024];

function mib(bytes: number, ms: number): number {
  return bytes / 1024 / 1024 / (ms / 1000);
}

/** Raw WebSocket: the client sends `count` text messages, the server counts them. */
async function raw(size: number, count: number): Promise<number> {
  let done!: () => void;
  const finished = new Promise<void>((r) => done = r);
  let received = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => {
      if ((e.data as string).length === size && ++received === count) done();
    };
    return response;
  });
  const ws = new WebSocket(`ws://127.0.0.1:${server.addr.port}/`);
  await new Promise((r) => ws.onopen = r);
  const message = "r".repeat(size);
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    ws.send(message);
    // Same backpressure policy as RelaySocket: wait while over 1 MiB buffered.
    while (ws.bufferedAmount > 1024 * 1024) await new Promise((r) => setTimeout(r, 1));
  }
  await finished;
  const ms = performance.now() - start;
  const closed = new Promise((r) => ws.onclose = r);
  ws.close();
  await closed;
  await server.shutdown();
  return mib(size * count, ms);
}

/** The mux: `streams` harness streams send `count / streams` messages each. */
async function mux(size: number, count: number, streams: number): Promise<number> {
  const perStream = Math.ceil(count / streams);
  let remaining = streams;
  let done!: () => void;
  const finished = new Promise<void>((r) => done = r);
  const executor = new StreamMux({
    role: "executor",
    onStream: (stream: MuxStream) => {
      (async () => {
        let n = 0;
        for await (const message of stream) {
          if (message.length === size && ++n === perStream) break;
        }
        if (--remaining === 0) done();
      })();
    },
  });
  const accepted: RelaySocket[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    const relay = RelaySocket.accept(socket);
    accepted.push(relay);
    executor.attach(relay);
    return response;
  });
  const harness = new StreamMux({ role: "harness" });
  harness.attach(await RelaySocket.connect(`ws://127.0.0.1:${server.addr.port}/`));
  const message = "m".repeat(size);
  const start = performance.now();
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const stream = harness.open();
      for (let i = 0; i < perStream; i++) await stream.send(message);
    }),
  );
  await finished;
  const ms = performance.now() - start;
  await harness.close();
  await executor.close();
  for (const socket of accepted) await socket.close();
  await server.shutdown();
  return mib(size * perStream * streams, ms);
}

/** Heap bytes per idle stream, both endpoints, after one message each. */
async function idleMemory(count: number): Promise<{ harness: number; both: number }> {
  const detachedMux = new StreamMux({ role: "harness" });
  (globalThis as { gc?: () => void }).gc?.();
  let before = Deno.memoryUsage().heapUsed;
  const kept: MuxStream[] = [];
  for (let i = 0; i < count; i++) kept.push(detachedMux.open());
  (globalThis as { gc?: () => void }).gc?.();
  const harnessOnly = (Deno.memoryUsage().heapUsed - before) / count;
  await detachedMux.close();

  let seen = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => done = r);
  const executor = new StreamMux({
    role: "executor",
    maxStreams: count,
    onStream: (stream) => {
      (async () => {
        for await (const _ of stream) {
          if (++seen === count) done();
          break;
        }
      })();
    },
  });
  const accepted: RelaySocket[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    const relay = RelaySocket.accept(socket);
    accepted.push(relay);
    executor.attach(relay);
    return response;
  });
  const harness = new StreamMux({ role: "harness" });
  harness.attach(await RelaySocket.connect(`ws://127.0.0.1:${server.addr.port}/`));
  (globalThis as { gc?: () => void }).gc?.();
  before = Deno.memoryUsage().heapUsed;
  const streams: MuxStream[] = [];
  for (let i = 0; i < count; i++) {
    const stream = harness.open();
    streams.push(stream);
    await stream.send("{}");
  }
  await all;
  await new Promise((r) => setTimeout(r, 100)); // let acks settle
  (globalThis as { gc?: () => void }).gc?.();
  const both = (Deno.memoryUsage().heapUsed - before) / count;
  await harness.close();
  await executor.close();
  for (const socket of accepted) await socket.close();
  await server.shutdown();
  return { harness: harnessOnly, both };
}

const rows: string[][] = [[
  "message size",
  "raw WebSocket MiB/s",
  "1 stream MiB/s",
  "ratio",
  "16 streams MiB/s",
  "ratio",
]];
for (const size of SIZES) {
  const count = Math.max(64, Math.floor(TOTAL_BYTES / size / (size < 16384 ? 8 : 1)));
  const rawRate = await raw(size, count);
  const one = await mux(size, count, 1);
  const sixteen = await mux(size, count, 16);
  rows.push([
    size >= 1024 * 1024 ? `${size / 1024 / 1024} MiB` : `${size / 1024} KiB`,
    rawRate.toFixed(0),
    one.toFixed(0),
    (one / rawRate).toFixed(2),
    sixteen.toFixed(0),
    (sixteen / rawRate).toFixed(2),
  ]);
}
const memory = await idleMemory(QUICK ? 1000 : 5000);

console.log("| " + rows[0].join(" | ") + " |");
console.log("|" + rows[0].map(() => " --- ").join("|") + "|");
for (const row of rows.slice(1)) console.log("| " + row.join(" | ") + " |");
console.log();
console.log(
  `Memory per idle stream: ${(memory.harness / 1024).toFixed(1)} KiB (harness side, detached); ` +
    `${(memory.both / 1024).toFixed(1)} KiB for both endpoints after one message each`,
);
