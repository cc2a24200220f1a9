/**
 * outpost against its peers, side by side in one run: raw Deno WebSocket on
 * loopback (the transport's limit), local `Deno.Command` (the spawn limit) and
 * ssh to a throwaway sshd on 127.0.0.1 (what people use instead).
 *
 * ```sh
 * deno task bench                       # full run, writes bench/RESULTS.md
 * deno run -A bench/compare.ts --quick  # small sizes (smoke check), writes nothing
 * deno run -A bench/compare.ts --quick --write --out=/tmp/quick.md
 * deno run -A bench/compare.ts --no-write         # full run, table on stdout only
 * deno run -A bench/compare.ts --only=bulk,rtt   # a subset of workloads, writes nothing
 * ```
 *
 * Workloads: bulk output (`head -c` of /dev/zero and `cat` of a file of random
 * bytes), bulk stdin, one-byte round trip through `cat` (idle, and beside a
 * bulk stream of another session), start-to-exit of `true` over an open
 * connection, concurrent streams on one executor socket, memory per idle
 * stream and per idle session. Every outpost workload runs via the rendezvous
 * (harness -> rendezvous -> executor, three processes) and via `serve`
 * (harness -> local executor, two processes). The figures are printed as a
 * markdown table and written to `bench/RESULTS.md` (or `--out=FILE`), except
 * with `--no-write`, and with `--quick` or `--only` unless `--write` is given:
 * quick or partial figures must not replace the tracked full-run results.
 *
 * SIGINT (Ctrl-C) and SIGTERM stop the child processes and the throwaway sshd
 * and remove the temporary directories, then exit with 130 or 143.
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import {
  localCommandLatency,
  rawWebSocketForwardedThroughput,
  rawWebSocketRoundTrip,
  rawWebSocketThroughput,
  sshBulkOutput,
  sshBulkStdin,
  sshRoundTrip,
  sshTrueLatency,
  sshTrueOverOpenConnection,
} from "./_peers.ts";
import { startSshd, type ThrowawaySshd } from "./_sshd.ts";
import {
  cleanUpAll,
  fmt,
  type Latency,
  leftovers,
  makeTrackedTempDir,
  removeTrackedTempDir,
  type Throughput,
  withDeadline,
} from "./_util.ts";
import type { OutpostMode, OutpostTarget } from "./_outpost.ts";

/** Sizes and counts of one run. */
interface Plan {
  zeroBytes: number;
  randomBytes: number;
  stdinBytes: number;
  wsSizes: number[];
  wsBytes: number;
  roundTrips: number;
  /** Round trips timed beside a bulk stream (each waits behind its queued output). */
  besideRoundTrips: number;
  trueRuns: number;
  sshTrueRuns: number;
  streams: number;
  idleStreams: number;
  idleSessions: number;
  workloadTimeoutMs: number;
}

const MiB = 1024 * 1024;
const SEGMENT_BYTES = 61_440;

const FULL: Plan = {
  zeroBytes: 256 * MiB,
  randomBytes: 64 * MiB,
  stdinBytes: 64 * MiB,
  wsSizes: [1024, 16384, SEGMENT_BYTES, 262144],
  wsBytes: 256 * MiB,
  roundTrips: 2000,
  besideRoundTrips: 500,
  trueRuns: 300,
  sshTrueRuns: 20,
  streams: 1000,
  idleStreams: 1000,
  idleSessions: 200,
  workloadTimeoutMs: 180_000,
};

const QUICK: Plan = {
  zeroBytes: 8 * MiB,
  randomBytes: 4 * MiB,
  stdinBytes: 4 * MiB,
  wsSizes: [SEGMENT_BYTES],
  wsBytes: 16 * MiB,
  roundTrips: 50,
  besideRoundTrips: 20,
  trueRuns: 10,
  sshTrueRuns: 2,
  streams: 50,
  idleStreams: 50,
  idleSessions: 10,
  workloadTimeoutMs: 30_000,
};

/** A measured figure, or why there is none. */
type Figure<T> = { ok: true; value: T } | { ok: false; reason: string };

/** One line of the results table. */
interface Row {
  workload: string;
  outpost: string;
  peer: string;
  peerFigure: string;
  ratio: string;
  target: string;
  met: string;
}

const flags = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    "no-write": { type: "boolean", default: false },
    write: { type: "boolean", default: false },
    "no-ssh": { type: "boolean", default: false },
    only: { type: "string" },
    profile: { type: "string" },
    out: { type: "string" },
    help: { type: "boolean", default: false },
  },
});

if (flags.values.help) {
  console.log(
    "usage: deno run -A bench/compare.ts [--quick] [--write|--no-write] [--no-ssh] [--only=a,b] [--out=FILE] [--profile=DIR]\n" +
      "writes bench/RESULTS.md (or --out) unless --no-write; --quick and --only write only with --write\n" +
      "workload groups for --only: peers, layers, bulk, stdin, rtt, true, streams, memory",
  );
  Deno.exit(0);
}

if (flags.values.write && flags.values["no-write"]) {
  console.error("Cannot use --write with --no-write: choose one");
  Deno.exit(2);
}
const plan = flags.values.quick ? QUICK : FULL;
const only = flags.values.only ? new Set(flags.values.only.split(",")) : undefined;
/**
 * Quick figures are indicative only, and a partial run (`--only`) leaves the
 * other workloads and most targets empty: they replace RESULTS.md only when
 * asked to.
 */
const write = flags.values.write ||
  (!flags.values.quick && !only && !flags.values["no-write"]);
if (flags.values.profile) {
  // The outpost server processes write CPU profiles there (see profile_summary.ts).
  await Deno.mkdir(flags.values.profile, { recursive: true });
  Deno.env.set("OUTPOST_BENCH_PROFILE_DIR", flags.values.profile);
}
const want = (group: string): boolean => !only || only.has(group);
const log = (msg: string): void => console.error(`[bench] ${msg}`);

// ---------------------------------------------------------------------------
// Interruption: Ctrl-C reaches the whole process group, SIGTERM maybe only this
// process. Either way the server processes, sshd (and its keys) and the
// temporary files (a random file of plan.randomBytes) must not stay behind.

let interrupted = false;
const EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
const signalHandlers = (Object.keys(EXIT_CODES) as (keyof typeof EXIT_CODES)[]).map(
  (signal) => {
    const handler = (): void => {
      if (interrupted) {
        log(`${signal} again: exiting without waiting for the clean-up`);
        Deno.exit(EXIT_CODES[signal]);
      }
      interrupted = true;
      log(`${signal}: stopping child processes and sshd, removing temporary files`);
      withDeadline(cleanUpAll(3000), 10_000, "clean-up")
        .catch((error) => log(`clean-up: ${(error as Error).message}`))
        .finally(() => {
          const left = leftovers();
          if (left.pids.length || left.dirs.length) log(`left behind: ${JSON.stringify(left)}`);
          Deno.exit(EXIT_CODES[signal]);
        });
    };
    Deno.addSignalListener(signal, handler);
    return { signal, handler };
  },
);

/** Once interrupted, the run goes no further (the signal handler exits the process). */
function stopIfInterrupted(): Promise<void> {
  return interrupted ? new Promise(() => {}) : Promise.resolve();
}

async function measure<T>(what: string, fn: () => Promise<T>): Promise<Figure<T>> {
  await stopIfInterrupted();
  const t0 = performance.now();
  try {
    const value = await withDeadline(fn(), plan.workloadTimeoutMs, what);
    log(`${what}: ${JSON.stringify(value)} (${(performance.now() - t0).toFixed(0)} ms)`);
    return { ok: true, value };
  } catch (error) {
    // Interrupted: the failure is the clean-up's doing, not a figure.
    await stopIfInterrupted();
    const reason = `failed: ${oneLine((error as Error).message ?? String(error))}`;
    log(`${what}: ${reason}`);
    return { ok: false, reason };
  }
}

const ANSI = new RegExp("\u001b\\[[0-9;]*m", "g");

function oneLine(text: string): string {
  const line = text.replace(ANSI, "").replace(/\s+/g, " ").trim();
  return line.length > 160 ? line.slice(0, 157) + "..." : line;
}

function skipped<T>(reason: string): Figure<T> {
  return { ok: false, reason };
}

// ---------------------------------------------------------------------------
// Fixtures

const tmp = await makeTrackedTempDir("outpost_bench_");
const randomFile = `${tmp}/random.bin`;
{
  const file = await Deno.open(randomFile, { write: true, create: true });
  const block = new Uint8Array(65536);
  for (let off = 0; off < plan.randomBytes; off += block.byteLength) {
    crypto.getRandomValues(block);
    await file.write(block);
  }
  file.close();
}
const stdinData = new Uint8Array(plan.stdinBytes);
for (let off = 0; off < stdinData.byteLength; off += 65536) {
  crypto.getRandomValues(stdinData.subarray(off, Math.min(stdinData.byteLength, off + 65536)));
}

const zeroCmd = `head -c ${plan.zeroBytes} /dev/zero`;
const randomCmd = `cat ${randomFile}`;

// ---------------------------------------------------------------------------
// Peers

const peers: {
  ws: Map<number, Figure<Throughput>>;
  /** Raw WebSocket through a forwarding process, at the segment size. */
  wsForwarded: Figure<Throughput>;
  wsRtt: Figure<Latency>;
  localTrue: Figure<Latency>;
  sshTrue: Figure<Latency>;
  /** `ssh host true` as new sessions on one open (master) connection. */
  sshTrueOpen: Figure<Latency>;
  sshZero: Figure<Throughput>;
  sshRandom: Figure<Throughput>;
  sshStdin: Figure<Throughput>;
  sshRtt: Figure<Latency>;
} = {
  ws: new Map(),
  wsForwarded: skipped("not run"),
  wsRtt: skipped("not run"),
  localTrue: skipped("not run"),
  sshTrue: skipped("not run"),
  sshTrueOpen: skipped("not run"),
  sshZero: skipped("not run"),
  sshRandom: skipped("not run"),
  sshStdin: skipped("not run"),
  sshRtt: skipped("not run"),
};

if (want("peers") || want("bulk")) {
  for (const size of plan.wsSizes) {
    peers.ws.set(
      size,
      await measure(
        `raw WebSocket ${size} B messages`,
        () => rawWebSocketThroughput(size, plan.wsBytes),
      ),
    );
  }
  peers.wsForwarded = await measure(
    `raw WebSocket ${SEGMENT_BYTES} B messages through a forwarding process`,
    () => rawWebSocketForwardedThroughput(SEGMENT_BYTES, plan.wsBytes),
  );
}
if (want("peers") || want("rtt")) {
  peers.wsRtt = await measure(
    "raw WebSocket 1-byte echo",
    () => rawWebSocketRoundTrip(plan.roundTrips),
  );
}
if (want("peers") || want("true")) {
  peers.localTrue = await measure(
    "local Deno.Command true",
    () => localCommandLatency(plan.trueRuns),
  );
}

let sshd: ThrowawaySshd | undefined;
let sshSkip = "skipped: --no-ssh";
if (!flags.values["no-ssh"]) {
  try {
    sshd = await startSshd();
    log(`sshd on 127.0.0.1:${sshd.port}`);
  } catch (error) {
    sshSkip = `skipped: ${oneLine((error as Error).message)}`;
    log(`ssh ${sshSkip}`);
  }
}
try {
  if (sshd) {
    const s = sshd;
    if (want("peers") || want("true")) {
      peers.sshTrue = await measure("ssh host true", () => sshTrueLatency(s, plan.sshTrueRuns));
      peers.sshTrueOpen = await measure(
        "ssh host true over an open connection",
        () => sshTrueOverOpenConnection(s, plan.trueRuns),
      );
    }
    if (want("peers") || want("bulk")) {
      peers.sshZero = await measure("ssh head /dev/zero", () => sshBulkOutput(s, zeroCmd));
      peers.sshRandom = await measure("ssh cat random", () => sshBulkOutput(s, randomCmd));
    }
    if (want("peers") || want("stdin")) {
      peers.sshStdin = await measure(
        "ssh stdin",
        () => sshBulkStdin(s, "cat > /dev/null", stdinData),
      );
    }
    if (want("peers") || want("rtt")) {
      peers.sshRtt = await measure("ssh cat round trip", () => sshRoundTrip(s, plan.roundTrips));
    }
  } else {
    peers.sshTrue = skipped(sshSkip);
    peers.sshTrueOpen = skipped(sshSkip);
    peers.sshZero = skipped(sshSkip);
    peers.sshRandom = skipped(sshSkip);
    peers.sshStdin = skipped(sshSkip);
    peers.sshRtt = skipped(sshSkip);
  }
} finally {
  await sshd?.stop();
}

// ---------------------------------------------------------------------------
// Layers (where a gap between raw WebSocket and exec comes from)

let relayLayer: Figure<Throughput> = skipped("not run");
if (want("bulk") || want("layers")) {
  relayLayer = await measure(`relay socket ${SEGMENT_BYTES} B data frames`, async () => {
    const { relaySocketThroughput } = await import("./_layers.ts");
    return await relaySocketThroughput(SEGMENT_BYTES, plan.wsBytes);
  });
}

// ---------------------------------------------------------------------------
// outpost

interface OutpostFigures {
  zero: Figure<Throughput>;
  /** CPU time per process (ms) during the zero run, and the run's wall time. */
  zeroCpu: Figure<CpuSpent>;
  random: Figure<Throughput>;
  stdin: Figure<Throughput>;
  /** The same during the stdin run. */
  stdinCpu: Figure<CpuSpent>;
  rtt: Figure<Latency>;
  rttBesideBulk: Figure<{ latency: Latency; bulk: Throughput }>;
  trueLatency: Figure<Latency>;
  streams: Figure<{ streams: number; errors: number; ms: number; firstError?: string }>;
  idleStream: Figure<{ n: number; rssPerItem: number; heapPerItem: number }>;
  idleSession: Figure<{ n: number; rssPerItem: number; heapPerItem: number }>;
}

/** CPU time per process (ms) over a run, and the run's wall time. */
interface CpuSpent {
  cpuMs: Record<string, number>;
  wallMs: number;
}

/** The bench executor's raised limits (library options), once _outpost.ts has loaded. */
let executorLimits: { maxSessions: number; maxProcesses: number } | undefined;

async function runOutpost(mode: OutpostMode): Promise<OutpostFigures> {
  const figures: OutpostFigures = {
    zero: skipped("not run"),
    zeroCpu: skipped("not run"),
    random: skipped("not run"),
    stdin: skipped("not run"),
    stdinCpu: skipped("not run"),
    rtt: skipped("not run"),
    rttBesideBulk: skipped("not run"),
    trueLatency: skipped("not run"),
    streams: skipped("not run"),
    idleStream: skipped("not run"),
    idleSession: skipped("not run"),
  };
  let target: OutpostTarget;
  try {
    // Loaded on demand: a library that does not load yet skips the outpost rows.
    const { startOutpost, EXECUTOR_LIMITS } = await import("./_outpost.ts");
    executorLimits = EXECUTOR_LIMITS;
    target = await withDeadline(startOutpost(mode), 30_000, `start outpost ${mode}`);
  } catch (error) {
    const reason = `skipped: ${oneLine((error as Error).message)}`;
    log(`outpost ${mode} ${reason}`);
    for (const key of Object.keys(figures) as (keyof OutpostFigures)[]) {
      (figures as unknown as Record<string, Figure<unknown>>)[key] = skipped(reason);
    }
    return figures;
  }
  const t = target;
  try {
    // Memory first, while the executor holds nothing else.
    if (want("memory") && mode === "rendezvous") {
      figures.idleStream = await measure(
        `outpost ${mode} idle streams`,
        () => t.idleStreamMemory(plan.idleStreams),
      );
    }
    if (want("memory")) {
      figures.idleSession = await measure(
        `outpost ${mode} idle sessions`,
        () => t.idleSessionMemory(plan.idleSessions),
      );
    }
    // Where the CPU goes: on two cores, every process of the path competes for them.
    const withCpu = async <T>(label: string, run: () => Promise<T>) => {
      const servers0 = t.serverCpuMs();
      const harness0 = process.cpuUsage();
      const wall0 = performance.now();
      const figure = await measure(`outpost ${mode} ${label}`, run);
      if (!figure.ok) return { figure, cpu: skipped<CpuSpent>(figure.reason) };
      const harness = process.cpuUsage(harness0);
      const cpuMs: Record<string, number> = { harness: (harness.user + harness.system) / 1000 };
      for (const [role, ms] of Object.entries(t.serverCpuMs())) cpuMs[role] = ms - servers0[role];
      const value = { cpuMs, wallMs: performance.now() - wall0 };
      log(`outpost ${mode} CPU during ${label}: ${JSON.stringify(value)}`);
      return { figure, cpu: { ok: true, value } as Figure<CpuSpent> };
    };
    if (want("bulk")) {
      ({ figure: figures.zero, cpu: figures.zeroCpu } = await withCpu(
        "head /dev/zero",
        () => t.bulkOutput(zeroCmd),
      ));
      figures.random = await measure(`outpost ${mode} cat random`, () => t.bulkOutput(randomCmd));
    }
    if (want("stdin")) {
      ({ figure: figures.stdin, cpu: figures.stdinCpu } = await withCpu(
        "stdin",
        () => t.bulkStdin("cat > /dev/null", stdinData),
      ));
    }
    if (want("rtt")) {
      figures.rtt = await measure(
        `outpost ${mode} cat round trip`,
        () => t.roundTrip(plan.roundTrips),
      );
      figures.rttBesideBulk = await measure(
        `outpost ${mode} cat round trip beside bulk output`,
        () => t.roundTripBesideBulk(plan.besideRoundTrips),
      );
    }
    if (want("true")) {
      figures.trueLatency = await measure(
        `outpost ${mode} start-to-exit true`,
        () => t.startToExit(plan.trueRuns),
      );
    }
    if (want("streams")) {
      figures.streams = await measure(
        `outpost ${mode} ${plan.streams} concurrent streams`,
        () => t.concurrentStreams(plan.streams),
      );
    }
  } finally {
    await t.close().catch((e) => log(`outpost ${mode} close: ${e}`));
  }
  return figures;
}

const outpost: Record<OutpostMode, OutpostFigures> = {
  rendezvous: await runOutpost("rendezvous"),
  serve: await runOutpost("serve"),
};

await removeTrackedTempDir(tmp);
{
  // Everything above stops what it starts; anything still registered is a bug.
  const left = leftovers();
  if (left.pids.length || left.dirs.length) {
    log(`still running or present after the workloads, now removed: ${JSON.stringify(left)}`);
    await cleanUpAll();
  }
}

// ---------------------------------------------------------------------------
// Table

const rows: Row[] = [];
const wsRef = peers.ws.get(SEGMENT_BYTES) ?? skipped<Throughput>("not run");

function reasonOf(f: Figure<unknown>): string {
  return f.ok ? "" : f.reason;
}

function mibs(f: Figure<Throughput>): string {
  return f.ok ? `${fmt(f.value.mibPerSec)} MiB/s` : reasonOf(f);
}

function lat(f: Figure<Latency>): string {
  return f.ok ? `p50 ${fmt(f.value.p50)} ms, p99 ${fmt(f.value.p99)} ms` : reasonOf(f);
}

function verdict(ok: boolean | undefined): string {
  return ok === undefined ? "n/a" : ok ? "met" : "missed";
}

/** A row of the CPU each process spent on a workload, when it was measured. */
function cpuRow(workload: string, cpu: Figure<CpuSpent>): void {
  if (!cpu.ok) return;
  const parts = Object.entries(cpu.value.cpuMs).map(([role, ms]) => `${role} ${fmt(ms)} ms`);
  const total = Object.values(cpu.value.cpuMs).reduce((a, b) => a + b, 0);
  rows.push({
    workload: `CPU time during ${workload}`,
    outpost: `${parts.join(", ")}; ${fmt(total / cpu.value.wallMs)} cores busy over ${
      fmt(cpu.value.wallMs)
    } ms`,
    peer: "",
    peerFigure: "",
    ratio: "",
    target: "",
    met: "",
  });
}

function bulkRows(
  label: string,
  mode: OutpostMode,
  mine: Figure<Throughput>,
  ssh: Figure<Throughput>,
  targets: boolean,
): void {
  const both = mine.ok && ssh.ok;
  const r = both ? mine.value.mibPerSec / ssh.value.mibPerSec : NaN;
  rows.push({
    workload: `${label} via ${mode}`,
    outpost: mibs(mine),
    peer: "ssh",
    peerFigure: mibs(ssh),
    ratio: both ? `${fmt(r)}x` : "n/a",
    target: targets ? ">= 2x" : "",
    met: targets ? verdict(both ? r >= 2 : undefined) : "",
  });
  const bothWs = mine.ok && wsRef.ok;
  const w = bothWs ? mine.value.mibPerSec / wsRef.value.mibPerSec : NaN;
  rows.push({
    workload: `${label} via ${mode}`,
    outpost: mibs(mine),
    peer: `raw WebSocket (${SEGMENT_BYTES} B msgs)`,
    peerFigure: mibs(wsRef),
    ratio: bothWs ? `${fmt(w * 100)}%` : "n/a",
    target: targets ? ">= 50%" : "",
    met: targets ? verdict(bothWs ? w >= 0.5 : undefined) : "",
  });
  if (mode !== "rendezvous") return;
  // Context, no target: the same bytes over the rendezvous' topology with nothing but WebSocket in it.
  const fwd = peers.wsForwarded;
  const bothFwd = mine.ok && fwd.ok;
  rows.push({
    workload: `${label} via ${mode}`,
    outpost: mibs(mine),
    peer: `raw WebSocket through a forwarding process (${SEGMENT_BYTES} B msgs, two hops)`,
    peerFigure: mibs(fwd),
    ratio: bothFwd ? `${fmt((mine.value.mibPerSec / fwd.value.mibPerSec) * 100)}%` : "n/a",
    target: "",
    met: "",
  });
}

function rttRows(mode: OutpostMode, mine: Figure<Latency>): void {
  const targets = mode === "rendezvous";
  for (
    const [peer, f] of [["raw WebSocket echo", peers.wsRtt], ["ssh cat", peers.sshRtt]] as const
  ) {
    const both = mine.ok && f.ok;
    rows.push({
      workload: `1-byte round trip via ${mode}`,
      outpost: lat(mine),
      peer,
      peerFigure: lat(f),
      ratio: both ? `${fmt(mine.value.p50 / f.value.p50)}x (p50)` : "n/a",
      target: targets && peer !== "ssh cat" ? "p50 < 1 ms" : "",
      met: targets && peer !== "ssh cat" ? verdict(mine.ok ? mine.value.p50 < 1 : undefined) : "",
    });
  }
}

function besideRows(
  mode: OutpostMode,
  idle: Figure<Latency>,
  beside: Figure<{ latency: Latency; bulk: Throughput }>,
): void {
  const both = idle.ok && beside.ok;
  const shared = mode === "rendezvous"
    ? "another harness socket, the same executor socket"
    : "another WebSocket to the same executor";
  rows.push({
    workload:
      `1-byte round trip via ${mode} beside bulk output (cat /dev/zero) of a session on ${shared}`,
    outpost: beside.ok
      ? `${lat({ ok: true, value: beside.value.latency })}; the bulk stream ran at ${
        fmt(beside.value.bulk.mibPerSec)
      } MiB/s`
      : reasonOf(beside),
    peer: "the same round trip, idle",
    peerFigure: lat(idle),
    ratio: both ? `${fmt(beside.value.latency.p50 / idle.value.p50)}x (p50)` : "n/a",
    target: "",
    met: "",
  });
}

function trueRows(mode: OutpostMode, mine: Figure<Latency>): void {
  const local = peers.localTrue;
  const both = mine.ok && local.ok;
  rows.push({
    workload: `start-to-exit of true via ${mode}`,
    outpost: lat(mine),
    peer: "local Deno.Command",
    peerFigure: lat(local),
    ratio: both ? `${fmt(mine.value.p50 / local.value.p50)}x (p50)` : "n/a",
    target: "<= 2x local + 2 ms",
    met: verdict(both ? mine.value.p50 <= 2 * local.value.p50 + 2 : undefined),
  });
  // Both ssh peers: a new connection each time (the issue's target) and new
  // sessions on one open connection (what outpost's own figure runs over).
  for (
    const [peer, ssh, targets] of [
      ["ssh host true (new connection each)", peers.sshTrue, true],
      ["ssh host true over an open connection (ControlMaster)", peers.sshTrueOpen, false],
    ] as const
  ) {
    const bothSsh = mine.ok && ssh.ok;
    rows.push({
      workload: `start-to-exit of true via ${mode}`,
      outpost: lat(mine),
      peer,
      peerFigure: lat(ssh),
      ratio: bothSsh
        ? `${fmt(mine.value.p50 / ssh.value.p50)}x (p50): ${
          fmt(ssh.value.p50 / mine.value.p50)
        }x faster`
        : "n/a",
      target: targets ? ">= 20x faster" : "",
      met: targets ? verdict(bothSsh ? ssh.value.p50 / mine.value.p50 >= 20 : undefined) : "",
    });
  }
}

for (const mode of ["rendezvous", "serve"] as const) {
  const o = outpost[mode];
  bulkRows("bulk output head -c /dev/zero", mode, o.zero, peers.sshZero, mode === "rendezvous");
  cpuRow(`bulk output head -c /dev/zero via ${mode}`, o.zeroCpu);
  bulkRows("bulk output cat random file", mode, o.random, peers.sshRandom, false);
  const stdin = o.stdin;
  const sshStdin = peers.sshStdin;
  rows.push({
    workload: `bulk stdin into cat > /dev/null via ${mode}`,
    outpost: mibs(stdin),
    peer: "ssh",
    peerFigure: mibs(sshStdin),
    ratio: stdin.ok && sshStdin.ok
      ? `${fmt(stdin.value.mibPerSec / sshStdin.value.mibPerSec)}x`
      : "n/a",
    target: "",
    met: "",
  });
  cpuRow(`bulk stdin into cat > /dev/null via ${mode}`, o.stdinCpu);
  rttRows(mode, o.rtt);
  besideRows(mode, o.rtt, o.rttBesideBulk);
  trueRows(mode, o.trueLatency);
}

{
  const s = outpost.rendezvous.streams;
  rows.push({
    workload:
      `${plan.streams} concurrent streams on one executor socket (one harness socket, sh -c "echo hi" each; ${limitsNote()})`,
    outpost: streamsText(s),
    peer: "",
    peerFigure: "",
    ratio: "",
    target: "no errors",
    met: verdict(s.ok ? s.value.errors === 0 && s.value.streams === plan.streams : undefined),
  });
  const ss = outpost.serve.streams;
  rows.push({
    workload: `${plan.streams} concurrent sessions on serve (one WebSocket each; the same limits)`,
    outpost: streamsText(ss),
    peer: "",
    peerFigure: "",
    ratio: "",
    target: "",
    met: "",
  });
}

/** The concurrent workloads run with raised executor limits: say so beside them. */
function limitsNote(): string {
  const l = executorLimits;
  const raised = l
    ? `maxSessions ${l.maxSessions.toLocaleString("en")} and maxProcesses ${
      l.maxProcesses.toLocaleString("en")
    }`
    : "maxSessions and maxProcesses";
  return `the bench's executor raises ${raised} through library options; ` +
    "`outpost executor` runs with the defaults, 256 sessions";
}

function streamsText(f: OutpostFigures["streams"]): string {
  if (!f.ok) return reasonOf(f);
  const v = f.value;
  const first = v.firstError ? ` (first: ${oneLine(v.firstError).replaceAll("|", "/")})` : "";
  return `${v.streams} streams, ${v.errors} errors${first}, ${fmt(v.ms)} ms total`;
}

function memText(
  f: Figure<{ n: number; rssPerItem: number; heapPerItem: number }>,
): string {
  return f.ok
    ? `${fmt(f.value.heapPerItem / 1024)} KiB heap, ${
      fmt(f.value.rssPerItem / 1024)
    } KiB RSS (n=${f.value.n})`
    : reasonOf(f);
}

for (const mode of ["rendezvous", "serve"] as const) {
  const o = outpost[mode];
  if (mode === "rendezvous") {
    const f = o.idleStream;
    rows.push({
      workload: "memory per idle stream (executor process)",
      outpost: memText(f),
      peer: "",
      peerFigure: "",
      ratio: "",
      target: "< 16 KiB (heap)",
      // Judged on what an idle stream retains (V8 heap used + external after a
      // full GC); RSS growth also counts heap pages V8 reserves, shown beside it.
      met: verdict(f.ok ? f.value.heapPerItem < 16384 : undefined),
    });
  }
  rows.push({
    workload: `memory per idle session via ${mode} (executor process)`,
    outpost: memText(o.idleSession),
    peer: "",
    peerFigure: "",
    ratio: "",
    target: "",
    met: "",
  });
}

const peerLines: string[] = [];
for (const [size, f] of peers.ws) {
  peerLines.push(
    `| raw WebSocket, ${size} B binary messages, child process -> this one | ${mibs(f)} |`,
  );
}
{
  const ratio = relayLayer.ok && wsRef.ok
    ? ` (${fmt((relayLayer.value.mibPerSec / wsRef.value.mibPerSec) * 100)}% of raw)`
    : "";
  peerLines.push(
    `| outpost layer: RelaySocket, ${SEGMENT_BYTES} B payload data frames, child -> this one | ${
      mibs(relayLayer)
    }${ratio} |`,
  );
}
peerLines.push(
  `| raw WebSocket, ${SEGMENT_BYTES} B binary messages, child -> forwarding child -> this one | ${
    mibs(peers.wsForwarded)
  } |`,
);
peerLines.push(`| raw WebSocket, 1-byte echo round trip | ${lat(peers.wsRtt)} |`);
peerLines.push(`| local Deno.Command start-to-exit of true | ${lat(peers.localTrue)} |`);
peerLines.push(`| ssh host true (new connection each) | ${lat(peers.sshTrue)} |`);
peerLines.push(
  `| ssh host true over an open connection (ControlMaster, a new session each) | ${
    lat(peers.sshTrueOpen)
  } |`,
);
peerLines.push(`| ssh head -c /dev/zero | ${mibs(peers.sshZero)} |`);
peerLines.push(`| ssh cat random file | ${mibs(peers.sshRandom)} |`);
peerLines.push(
  `| ssh stdin into cat > /dev/null (from the remote command's ready byte) | ${
    mibs(peers.sshStdin)
  } |`,
);
peerLines.push(`| ssh cat 1-byte round trip | ${lat(peers.sshRtt)} |`);

function machine(): string {
  const cpuinfo = (() => {
    try {
      return Deno.readTextFileSync("/proc/cpuinfo");
    } catch {
      return "";
    }
  })();
  const model = cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown CPU";
  const mhz = cpuinfo.match(/^cpu MHz\s*:\s*(.*)$/m)?.[1];
  const meminfo = (() => {
    try {
      return Deno.readTextFileSync("/proc/meminfo");
    } catch {
      return "";
    }
  })();
  const memKb = Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? NaN);
  const load = (() => {
    try {
      return Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
    } catch {
      return "n/a";
    }
  })();
  return [
    `- CPU: ${model}${
      mhz ? ` (${Number(mhz).toFixed(0)} MHz)` : ""
    }, ${navigator.hardwareConcurrency} logical CPUs (nproc)`,
    `- Memory: ${Number.isFinite(memKb) ? (memKb / 1048576).toFixed(1) + " GiB" : "unknown"}`,
    `- OS: ${Deno.build.os} ${Deno.osRelease()} ${Deno.build.arch}`,
    `- Deno ${Deno.version.deno} (V8 ${Deno.version.v8}, TypeScript ${Deno.version.typescript})`,
    `- Date: ${new Date().toISOString()}`,
    `- Load average at the end of the run: ${load}`,
    `- Mode: ${flags.values.quick ? "quick (small sizes; figures are indicative only)" : "full"}${
      only ? `, only ${[...only].join(",")} (a partial run: the other workloads did not run)` : ""
    }`,
  ].join("\n");
}

function targetLines(): string {
  return rows
    .filter((r) => r.target !== "")
    .map((r) =>
      `- ${r.workload}${r.peer ? ` vs ${r.peer}` : ""}, target ${r.target}: **${r.met}** (${
        r.ratio && r.ratio !== "n/a" ? r.ratio : r.outpost
      })`
    )
    .join("\n");
}

const table = [
  "| Workload | outpost | Peer | Peer figure | outpost/peer | Target | Met |",
  "| --- | --- | --- | --- | --- | --- | --- |",
  ...rows.map((r) =>
    `| ${r.workload} | ${r.outpost} | ${r.peer} | ${r.peerFigure} | ${r.ratio} | ${r.target} | ${r.met} |`
  ),
].join("\n");

const report = `# outpost benchmark results

Written by \`deno task bench\` (\`bench/compare.ts\`); do not edit by hand.

## Machine

${machine()}

## Sizes

bulk output ${plan.zeroBytes / MiB} MiB of /dev/zero and ${
  plan.randomBytes / MiB
} MiB of random bytes;
bulk stdin ${
  plan.stdinBytes / MiB
} MiB; ${plan.roundTrips} one-byte round trips (${plan.besideRoundTrips} beside a bulk stream); ${plan.trueRuns} runs of
\`true\` (${plan.sshTrueRuns} over new ssh connections, ${plan.trueRuns} over an open one); ${plan.streams} concurrent streams; ${plan.idleStreams} idle streams;
${plan.idleSessions} idle sessions. Bulk output is counted from the first to the last byte the client
receives, output discarded; bulk stdin from when the command is running (it prints one byte first,
then execs the reader) to its exit. ssh's handshake and login are therefore excluded from both.
Round trips and start-to-exit run over an already open connection; ssh true is measured both with a
new connection each time, as people use it (the issue's target), and as new sessions on one open
connection (OpenSSH connection sharing), the fair peer of outpost's figure. The throwaway sshd's
commands skip the login user's shell start-up files (the client sends SHLVL=1, so bash does not
source ~/.bashrc). The concurrent streams and sessions run on an executor whose maxSessions and
maxProcesses are raised through library options (see their rows); \`outpost executor\` runs with
the defaults, 256 sessions.

## Targets

${targetLines()}

## outpost against its peers

${table}

## Peers alone

| Peer | Figure |
| --- | --- |
${peerLines.join("\n")}
`;

// An interrupted run prints and writes nothing (the signal handler exits).
await stopIfInterrupted();
console.log(table);
const out = flags.values.out ?? new URL("./RESULTS.md", import.meta.url).pathname;
if (write) {
  await Deno.writeTextFile(out, report);
  log(`wrote ${out}`);
} else if (!flags.values["no-write"]) {
  const why = flags.values.quick ? "quick run" : "partial run (--only)";
  log(`${why}: ${out} left as it is (pass --write to write it)`);
}
for (const { signal, handler } of signalHandlers) Deno.removeSignalListener(signal, handler);
