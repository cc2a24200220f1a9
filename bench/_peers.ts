/**
 * The peers outpost is compared with: raw Deno `WebSocket` over loopback
 * (the transport's limit), local `Deno.Command` (the spawn limit) and ssh to
 * a throwaway sshd (what people use instead).
 *
 * Run as a script it is the far side of the raw WebSocket measurements:
 * `deno run -A bench/_peers.ts ws-send URL SIZE TOTAL` connects as a client
 * and sends TOTAL bytes in SIZE-byte binary messages, and
 * `deno run -A bench/_peers.ts ws-echo` serves an echo endpoint and prints
 * `READY {"port":N}`; `ws-forward` serves `/sink` and `/source` and passes
 * every message from the source to the sink.
 *
 * @module
 */

import {
  ArrivalCounter,
  type Arrivals,
  drainCounting,
  type Latency,
  READY_PREFIX,
  spawnAnnounced,
  spawnTracked,
  summarize,
  type Throughput,
  throughput,
  timeChildSender,
  timeEchoes,
  timeStdinFromReady,
  withDeadline,
} from "./_util.ts";
import type { ThrowawaySshd } from "./_sshd.ts";

const SELF = new URL(import.meta.url).pathname;
const HIGH_WATER = 4 * 1024 * 1024;

/**
 * Raw WebSocket throughput: a child process (client) sends `total` bytes in
 * `size`-byte binary messages to a listener in this process, which counts them.
 *
 * @param size Message size in bytes.
 * @param total Bytes to send.
 * @param timeoutMs Deadline.
 * @returns Throughput from the first to the last message received.
 */
export async function rawWebSocketThroughput(
  size: number,
  total: number,
  timeoutMs = 60_000,
): Promise<Throughput> {
  let resolveDone: (v: Arrivals) => void = () => {};
  const done = new Promise<Arrivals>((r) => resolveDone = r);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    const counter = new ArrivalCounter();
    socket.onmessage = (e) => counter.add((e.data as ArrayBuffer).byteLength);
    socket.onclose = () => resolveDone(counter.arrivals);
    return response;
  });
  try {
    const url = `ws://127.0.0.1:${server.addr.port}/sink`;
    return await timeChildSender(
      SELF,
      ["ws-send", url, size, total],
      done,
      timeoutMs,
      "raw WebSocket transfer",
    );
  } finally {
    await server.shutdown();
  }
}

/**
 * Raw WebSocket through a forwarding process: the topology of the rendezvous
 * (three processes, two hops) with nothing but Deno's WebSocket in it. A child
 * sends `total` bytes in `size`-byte binary messages to a second child, which
 * passes each message on, unchanged, to a client in this process. It is the
 * transport's limit for any relay on this machine.
 *
 * @param size Message size in bytes.
 * @param total Bytes to send.
 * @param timeoutMs Deadline.
 * @returns Throughput from the first to the last message received.
 */
export async function rawWebSocketForwardedThroughput(
  size: number,
  total: number,
  timeoutMs = 60_000,
): Promise<Throughput> {
  await using forwarder = await spawnAnnounced<{ port: number }>(Deno.execPath(), [
    "run",
    "-A",
    SELF,
    "ws-forward",
  ]);
  const base = `ws://127.0.0.1:${forwarder.info.port}`;
  const sink = new WebSocket(`${base}/sink`);
  sink.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    sink.onopen = resolve;
    sink.onerror = reject;
  });
  const counter = new ArrivalCounter();
  const done = new Promise<Arrivals>((resolve) => {
    sink.onmessage = (e) => {
      counter.add((e.data as ArrayBuffer).byteLength);
      if (counter.arrivals.bytes >= total) resolve(counter.arrivals);
    };
  });
  const closed = new Promise((r) => (sink.onclose = r));
  try {
    return await timeChildSender(
      SELF,
      ["ws-send", `${base}/source`, size, total],
      done,
      timeoutMs,
      "forwarded raw WebSocket transfer",
    );
  } finally {
    sink.close();
    await closed;
  }
}

/**
 * Raw WebSocket round trip of one byte to an echo server in a child process.
 *
 * @param count Round trips to time.
 * @returns Latency summary.
 */
export async function rawWebSocketRoundTrip(count: number): Promise<Latency> {
  await using echo = await spawnAnnounced<{ port: number }>(Deno.execPath(), [
    "run",
    "-A",
    SELF,
    "ws-echo",
  ]);
  const ws = new WebSocket(`ws://127.0.0.1:${echo.info.port}/echo`);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  const one = new Uint8Array([42]);
  const samples: number[] = [];
  let resolveMsg: () => void = () => {};
  ws.onmessage = () => resolveMsg();
  for (let i = 0; i < count + 20; i++) {
    const got = new Promise<void>((r) => (resolveMsg = r));
    const t0 = performance.now();
    ws.send(one);
    await got;
    if (i >= 20) samples.push(performance.now() - t0);
  }
  const closed = new Promise((r) => (ws.onclose = r));
  ws.close();
  await closed;
  return summarize(samples);
}

/**
 * Start-to-exit of a local command through `Deno.Command`.
 *
 * @param count Runs to time.
 * @param argv Command (default `["true"]`).
 * @returns Latency summary.
 */
export async function localCommandLatency(count: number, argv = ["true"]): Promise<Latency> {
  const samples: number[] = [];
  for (let i = 0; i < count + 5; i++) {
    const t0 = performance.now();
    const status = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn().status;
    if (!status.success) throw new Error(`${argv.join(" ")} failed`);
    if (i >= 5) samples.push(performance.now() - t0);
  }
  return summarize(samples);
}

/**
 * Start-to-exit of `ssh host true` (a new connection each time: the
 * handshake and login are in every sample, as people use it).
 *
 * @param sshd The throwaway server.
 * @param count Runs to time.
 * @param extraArgs `ssh` options put before the server's arguments.
 * @returns Latency summary.
 */
export async function sshTrueLatency(
  sshd: ThrowawaySshd,
  count: number,
  extraArgs: readonly string[] = [],
): Promise<Latency> {
  const samples: number[] = [];
  for (let i = 0; i < count + 1; i++) {
    const t0 = performance.now();
    const out = await spawnTracked("ssh", {
      args: [...extraArgs, ...sshd.sshArgs, "true"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`ssh true failed: ${new TextDecoder().decode(out.stderr)}`);
    if (i >= 1) samples.push(performance.now() - t0);
  }
  return summarize(samples);
}

/**
 * Start-to-exit of `ssh host true` over an open connection: one master
 * connection (`ssh -M -N`, its control socket in the server's temporary
 * directory) is opened before the timing and closed after it with
 * `ssh -O exit`; each timed `ssh host true` runs as a new session on it
 * (OpenSSH connection sharing), so no handshake or login is in the samples.
 * It is the peer of outpost's start-to-exit over an open connection.
 *
 * @param sshd The throwaway server.
 * @param count Runs to time.
 * @returns Latency summary.
 * @throws Error when the master does not come up or is gone before the end
 *   (the samples would then be fresh connections).
 */
export async function sshTrueOverOpenConnection(
  sshd: ThrowawaySshd,
  count: number,
): Promise<Latency> {
  const control = ["-o", `ControlPath=${sshd.controlPath}`];
  const master = spawnTracked("ssh", {
    args: ["-M", "-N", "-o", "ControlPersist=no", ...control, ...sshd.sshArgs],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  });
  const masterErr = new Response(master.stderr).text();
  let ended = false;
  const masterEnded = master.status.then(() => void (ended = true));
  const ctl = async (op: "check" | "exit"): Promise<boolean> =>
    (await spawnTracked("ssh", {
      args: [...control, "-O", op, ...sshd.sshArgs],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).status).success;
  try {
    const deadline = Date.now() + 10_000;
    while (!(await ctl("check"))) {
      if (ended) throw new Error(`the ssh master connection ended: ${await masterErr}`);
      if (Date.now() > deadline) throw new Error("the ssh master connection did not come up");
      await new Promise((r) => setTimeout(r, 50));
    }
    // ControlMaster=no: the runs only use the master, they never become one.
    const latency = await sshTrueLatency(sshd, count, [...control, "-o", "ControlMaster=no"]);
    if (ended || !(await ctl("check"))) {
      throw new Error("the ssh master connection ended during the runs");
    }
    return latency;
  } finally {
    if (!ended) await ctl("exit").catch(() => false);
    await withDeadline(masterEnded, 5_000, "ssh -O exit").catch(() => {
      try {
        master.kill("SIGKILL");
      } catch { /* gone */ }
    });
    await masterEnded;
    await masterErr.catch(() => "");
  }
}

/**
 * Bulk output through ssh: `ssh host <remote>`, stdout counted and discarded.
 *
 * @param sshd The throwaway server.
 * @param remote The remote shell command, e.g. `head -c 268435456 /dev/zero`.
 * @param timeoutMs Deadline.
 * @returns Throughput from the first to the last byte received (connection
 *   setup and login come before the first byte, so they are excluded) and the
 *   total wall time including them.
 */
export async function sshBulkOutput(
  sshd: ThrowawaySshd,
  remote: string,
  timeoutMs = 120_000,
): Promise<Throughput & { wallMs: number }> {
  const t0 = performance.now();
  const child = spawnTracked("ssh", {
    args: [...sshd.sshArgs, remote],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
  const errText = new Response(child.stderr).text();
  const r = await withDeadline(drainCounting(child.stdout), timeoutMs, "ssh bulk output");
  const status = await child.status;
  const wallMs = performance.now() - t0;
  if (!status.success) throw new Error(`ssh ${remote} failed: ${await errText}`);
  await errText;
  return { ...throughput(r.bytes, r.lastAt - r.firstAt), wallMs };
}

/**
 * Bulk stdin through ssh: `ssh host '<READY_PREFIX><remote>'` with `data` fed
 * to stdin once the remote command has printed its ready byte, so connection
 * setup and login are not in the figure (see {@linkcode timeStdinFromReady}).
 *
 * @param sshd The throwaway server.
 * @param remote e.g. `cat > /dev/null`.
 * @param data The bytes to feed (fed in 64 KiB slices).
 * @param timeoutMs Deadline.
 * @returns Throughput from the ready byte to ssh's exit.
 */
export async function sshBulkStdin(
  sshd: ThrowawaySshd,
  remote: string,
  data: Uint8Array,
  timeoutMs = 120_000,
): Promise<Throughput> {
  const child = spawnTracked("ssh", {
    args: [...sshd.sshArgs, READY_PREFIX + remote],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const errText = new Response(child.stderr).text();
  try {
    return await timeStdinFromReady(child, data, 65536, timeoutMs, `ssh ${remote}`);
  } catch (error) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    throw new Error(`${(error as Error).message}: ${(await errText).trim()}`);
  } finally {
    await errText.catch(() => "");
  }
}

/**
 * One-byte round trip through `ssh host cat` (one connection, many bytes).
 *
 * @param sshd The throwaway server.
 * @param count Round trips to time.
 * @returns Latency summary.
 */
export async function sshRoundTrip(sshd: ThrowawaySshd, count: number): Promise<Latency> {
  const child = spawnTracked("ssh", {
    args: [...sshd.sshArgs, "cat"],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  });
  const samples = await timeEchoes(child, count, "ssh cat");
  return summarize(samples);
}

async function wsSend(url: string, size: number, total: number): Promise<void> {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  const message = new Uint8Array(size);
  for (let sent = 0; sent < total; sent += size) {
    ws.send(message);
    while (ws.bufferedAmount > HIGH_WATER) {
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  while (ws.bufferedAmount > 0) await new Promise((r) => setTimeout(r, 1));
  const closed = new Promise((r) => (ws.onclose = r));
  ws.close();
  await closed;
}

/**
 * Serves WebSockets on a free loopback port, announces it as `READY {"port":N}`
 * and stops on SIGTERM.
 */
function serveAnnounced(onSocket: (socket: WebSocket, path: string) => void): void {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => console.log(`READY ${JSON.stringify({ port })}`),
  }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    onSocket(socket, new URL(req.url).pathname);
    return response;
  });
  Deno.addSignalListener("SIGTERM", () => {
    server.shutdown().then(() => Deno.exit(0));
  });
}

/** Echoes every message back on its socket. */
function wsEcho(): void {
  serveAnnounced((socket) => socket.onmessage = (e) => socket.send(e.data));
}

/** Passes every message from the `/source` socket to the `/sink` socket, unchanged. */
function wsForward(): void {
  let sink: WebSocket | undefined;
  serveAnnounced((socket, path) => {
    if (path === "/sink") sink = socket;
    else socket.onmessage = (e) => sink?.send(e.data);
  });
}

if (import.meta.main) {
  const [mode, ...rest] = Deno.args;
  if (mode === "ws-send") {
    await wsSend(rest[0], Number(rest[1]), Number(rest[2]));
  } else if (mode === "ws-echo") {
    wsEcho();
  } else if (mode === "ws-forward") {
    wsForward();
  } else {
    console.error("usage: _peers.ts ws-send URL SIZE TOTAL | ws-echo | ws-forward");
    Deno.exit(2);
  }
}
