/**
 * Small helpers shared by the benchmark scripts: statistics, formatting,
 * deadlines, child processes that announce themselves, process memory, and
 * a registry of what a run must not leave behind (child processes, temporary
 * directories) so that an interrupted run can clean up.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// What a run must not leave behind

const liveChildren = new Set<Deno.ChildProcess>();
const tempDirs = new Set<string>();
let cleaningUp = false;

/**
 * Registers a child process so that {@linkcode cleanUpAll} stops it if the
 * run is interrupted; it leaves the registry when it exits. A child spawned
 * after the clean-up began is killed at once.
 *
 * @param child The spawned child.
 * @returns The same child.
 */
export function track(child: Deno.ChildProcess): Deno.ChildProcess {
  if (cleaningUp) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }
  liveChildren.add(child);
  const forget = (): void => void liveChildren.delete(child);
  child.status.then(forget, forget);
  return child;
}

/**
 * Spawns a command and {@linkcode track}s it.
 *
 * @param cmd Program.
 * @param options `Deno.Command` options.
 * @returns The running child.
 */
export function spawnTracked(cmd: string, options: Deno.CommandOptions): Deno.ChildProcess {
  if (cleaningUp) throw new Error(`Cannot start ${cmd}: the run is being stopped`);
  return track(new Deno.Command(cmd, options).spawn());
}

/**
 * Makes a temporary directory that {@linkcode cleanUpAll} removes.
 *
 * @param prefix Name prefix (under the system's temporary directory).
 * @returns The directory's path.
 * @throws Error once the clean-up has begun.
 */
export async function makeTrackedTempDir(prefix: string): Promise<string> {
  if (cleaningUp) throw new Error("Cannot make a temporary directory: the run is being stopped");
  const dir = await Deno.makeTempDir({ prefix });
  tempDirs.add(dir);
  return dir;
}

/**
 * Removes a directory made by {@linkcode makeTrackedTempDir}; errors are ignored.
 *
 * @param dir The directory.
 */
export async function removeTrackedTempDir(dir: string): Promise<void> {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  tempDirs.delete(dir);
}

/**
 * What is still registered: live child processes (pids) and temporary directories.
 *
 * @returns The leftovers (empty arrays after a clean run).
 */
export function leftovers(): { pids: number[]; dirs: string[] } {
  return { pids: [...liveChildren].map((c) => c.pid), dirs: [...tempDirs] };
}

/**
 * Stops every registered child process (SIGTERM, then SIGKILL after
 * `graceMs`) and removes every registered temporary directory. From then on
 * nothing new can be spawned or made through this module.
 *
 * @param graceMs How long children get to exit after SIGTERM.
 */
export async function cleanUpAll(graceMs = 3000): Promise<void> {
  cleaningUp = true;
  const children = [...liveChildren];
  for (const child of children) {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
  }
  const all = Promise.allSettled(children.map((c) => c.status));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const graceOver = new Promise<"late">((r) => timer = setTimeout(() => r("late"), graceMs));
  if (await Promise.race([all, graceOver]) === "late") {
    for (const child of liveChildren) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    await Promise.race([all, new Promise((r) => setTimeout(r, 1000))]);
  }
  clearTimeout(timer);
  for (const dir of [...tempDirs]) await removeTrackedTempDir(dir);
}

/** Latency summary in milliseconds. */
export interface Latency {
  /** Number of samples. */
  n: number;
  /** Median, ms. */
  p50: number;
  /** 99th percentile, ms. */
  p99: number;
  /** Mean, ms. */
  mean: number;
}

/** Throughput of one bulk transfer. */
export interface Throughput {
  /** Bytes received. */
  bytes: number;
  /** Seconds from the first to the last byte. */
  seconds: number;
  /** MiB per second. */
  mibPerSec: number;
}

/**
 * Summarizes latency samples.
 *
 * @param samples Samples in milliseconds.
 * @returns n, p50, p99 and mean.
 */
export function summarize(samples: number[]): Latency {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number): number =>
    sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  const mean = sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length);
  return { n: sorted.length, p50: at(0.5), p99: at(0.99), mean };
}

/**
 * Computes MiB/s.
 *
 * @param bytes Bytes moved.
 * @param ms Milliseconds taken.
 * @returns The throughput record.
 */
export function throughput(bytes: number, ms: number): Throughput {
  const seconds = ms / 1000;
  return { bytes, seconds, mibPerSec: bytes / 1048576 / Math.max(seconds, 1e-9) };
}

/**
 * Counts the bytes of a stream and when the first and the last arrived.
 *
 * @param stream The stream to drain.
 * @returns Byte count and the time from the first to the last byte.
 */
export async function drainCounting(
  stream: ReadableStream<Uint8Array>,
): Promise<{ bytes: number; firstAt: number; lastAt: number }> {
  let bytes = 0;
  let firstAt = 0;
  let lastAt = 0;
  for await (const chunk of stream) {
    const now = performance.now();
    if (bytes === 0) firstAt = now;
    bytes += chunk.byteLength;
    lastAt = now;
  }
  return { bytes, firstAt, lastAt };
}

/**
 * Rejects when a promise takes longer than `ms`.
 *
 * @param promise The promise to bound.
 * @param ms The deadline in milliseconds.
 * @param what A description for the error message.
 * @returns The promise's value.
 * @throws Error `Timed out ...` after `ms`.
 */
export async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** What a sink saw of a transfer: the bytes, and when the first and last message arrived. */
export interface Arrivals {
  /** Bytes received. */
  bytes: number;
  /** `performance.now()` at the first message. */
  firstAt: number;
  /** `performance.now()` at the last message. */
  lastAt: number;
}

/**
 * Runs `deno run -A SELF MODE URL SIZE TOTAL` as the sending child of a sink
 * that resolves `done`, and measures throughput from the first to the last
 * message (the first message's bytes arrived at `firstAt`, so they are not
 * counted).
 *
 * @param self The bench module that implements MODE when run as a script.
 * @param args MODE, URL, SIZE and TOTAL.
 * @param done Resolves when the sink has seen the whole transfer.
 * @param timeoutMs Deadline for the transfer.
 * @param what A description for errors.
 * @returns The measured throughput.
 */
export async function timeChildSender(
  self: string,
  args: [mode: string, url: string, size: number, total: number],
  done: Promise<Arrivals>,
  timeoutMs: number,
  what: string,
): Promise<Throughput> {
  const [mode, url, size, total] = args;
  const out = spawnTracked(Deno.execPath(), {
    args: ["run", "-A", self, mode, url, String(size), String(total)],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  const r = await withDeadline(done, timeoutMs, what);
  const o = await out;
  if (!o.success) throw new Error(new TextDecoder().decode(o.stderr));
  return throughput(r.bytes - size, r.lastAt - r.firstAt);
}

/** Counts what a sink receives and when the first and last message arrived. */
export class ArrivalCounter {
  #arrivals: Arrivals = { bytes: 0, firstAt: 0, lastAt: 0 };

  /**
   * Records one received message.
   *
   * @param byteLength Its size in bytes.
   */
  add(byteLength: number): void {
    const now = performance.now();
    if (this.#arrivals.bytes === 0) this.#arrivals.firstAt = now;
    this.#arrivals.bytes += byteLength;
    this.#arrivals.lastAt = now;
  }

  /** What has arrived so far. */
  get arrivals(): Arrivals {
    return { ...this.#arrivals };
  }
}

/** An echoing program (`cat`) with piped stdin and stdout, local or remote. */
export interface EchoChild {
  /** The program's stdin. */
  stdin: WritableStream<Uint8Array>;
  /** The program's stdout. */
  stdout: ReadableStream<Uint8Array>;
  /** Settles when the program has ended. */
  status: Promise<unknown>;
}

/**
 * Times one-byte echoes through an echoing program after 20 warm-up rounds,
 * then closes its stdin, drains its stdout and awaits its end.
 *
 * @param child The echoing program.
 * @param count How many echoes to time.
 * @param what A description for errors.
 * @returns One sample per timed echo, in milliseconds.
 */
export async function timeEchoes(child: EchoChild, count: number, what: string): Promise<number[]> {
  const writer = child.stdin.getWriter();
  const reader = child.stdout.getReader();
  const one = new Uint8Array([42]);
  const samples: number[] = [];
  try {
    for (let i = 0; i < count + 20; i++) {
      const t0 = performance.now();
      await writer.write(one);
      const { done } = await withDeadline(reader.read(), 10_000, `${what} echo`);
      if (done) throw new Error(`${what} ended early`);
      if (i >= 20) samples.push(performance.now() - t0);
    }
  } finally {
    await writer.close().catch(() => {});
    while (!(await reader.read().catch(() => ({ done: true }))).done) { /* drain */ }
    await child.status.catch(() => {});
  }
  return samples;
}

/**
 * The shell prefix of a bulk stdin command: the command prints one byte (`R`)
 * on stdout once it is running, then becomes the command that reads stdin.
 * {@linkcode timeStdinFromReady} starts the clock at that byte, so connection
 * setup, login and the spawn are not in the figure (the same for every peer).
 */
export const READY_PREFIX = "printf R; exec ";

/** A program fed on stdin that first prints one ready byte (see {@linkcode READY_PREFIX}). */
export interface StdinChild {
  /** The program's stdin. */
  stdin: WritableStream<Uint8Array>;
  /** The program's stdout: the ready byte, then nothing. */
  stdout: ReadableStream<Uint8Array>;
  /** Settles with the exit status when the program has ended. */
  status: Promise<{ success: boolean; code: number }>;
}

/**
 * Bulk stdin timed from when the remote command is running: waits for the
 * ready byte, then writes `data` in `slice`-byte pieces, closes stdin and
 * waits for the program's exit.
 *
 * @param child A program started as `READY_PREFIX + command`.
 * @param data The bytes to feed.
 * @param slice Bytes per write.
 * @param timeoutMs Deadline for the whole transfer.
 * @param what A description for errors.
 * @returns Throughput from the ready byte to the program's exit.
 * @throws Error when no ready byte comes, the deadline passes or the program fails.
 */
export async function timeStdinFromReady(
  child: StdinChild,
  data: Uint8Array,
  slice: number,
  timeoutMs: number,
  what: string,
): Promise<Throughput> {
  const reader = child.stdout.getReader();
  const writer = child.stdin.getWriter();
  let finished = false;
  try {
    const first = await withDeadline(reader.read(), timeoutMs, `${what}: the ready byte`);
    if (first.done || first.value[0] !== 0x52) {
      throw new Error(`${what}: no ready byte (the command did not start)`);
    }
    const t0 = performance.now();
    const feed = async (): Promise<void> => {
      for (let off = 0; off < data.byteLength; off += slice) {
        await writer.write(data.subarray(off, Math.min(data.byteLength, off + slice)));
      }
      await writer.close();
    };
    await withDeadline(feed(), timeoutMs, what);
    const status = await withDeadline(child.status, timeoutMs, `${what}: exit`);
    const ms = performance.now() - t0;
    if (!status.success) throw new Error(`${what} exited with ${status.code}`);
    finished = true;
    return throughput(data.byteLength, ms);
  } finally {
    if (finished) {
      while (!(await reader.read().catch(() => ({ done: true }))).done) {
        // Nothing more comes after the ready byte; wait for the pipe's end.
      }
    } else {
      // A stuck write must not keep the caller waiting: drop both pipes.
      await writer.abort().catch(() => {});
      await reader.cancel().catch(() => {});
    }
  }
}

/**
 * Resident set size of a process from /proc/PID/status.
 *
 * @param pid The process id.
 * @returns VmRSS in bytes, or NaN when unreadable.
 */
export function rssBytes(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = status.match(/^VmRSS:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** A child process that printed a `READY <json>` line on stdout. */
export interface AnnouncedChild<T> extends AsyncDisposable {
  /** The child. */
  readonly child: Deno.ChildProcess;
  /** The JSON value that followed `READY `. */
  readonly info: T;
  /** Collected stderr text (bounded), for error messages. */
  stderrText(): string;
  /**
   * Writes one line to the child's stdin (only with `stdin: true`) and
   * resolves with the next stdout line that starts with `replyPrefix`.
   */
  request(line: string, replyPrefix: string, timeoutMs?: number): Promise<string>;
  /** Sends SIGTERM, then SIGKILL after 3 s, and awaits exit. */
  stop(): Promise<void>;
}

/**
 * Spawns a process and waits for it to print `READY <json>` (or, with
 * `match`, a stdout or stderr line matching the pattern).
 *
 * @param cmd Program.
 * @param args Arguments.
 * @param options `match`: a line pattern to wait for instead of READY;
 *   `timeoutMs` (default 15000); `env`.
 * @returns The announced child.
 * @throws Error when the child exits or times out before announcing.
 */
export async function spawnAnnounced<T = unknown>(
  cmd: string,
  args: string[],
  options: {
    match?: RegExp;
    timeoutMs?: number;
    env?: Record<string, string>;
    stdin?: boolean;
  } = {},
): Promise<AnnouncedChild<T>> {
  const child = spawnTracked(cmd, {
    args,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: options.env,
  });
  let stderrText = "";
  let resolveReady: (v: T) => void = () => {};
  const ready = new Promise<T>((r) => (resolveReady = r));
  const waiters: { prefix: string; resolve: (line: string) => void }[] = [];
  const onLine = (line: string): void => {
    const w = waiters.findIndex((x) => line.startsWith(x.prefix));
    if (w >= 0) {
      waiters.splice(w, 1)[0].resolve(line);
      return;
    }
    if (options.match) {
      const m = line.match(options.match);
      if (m) resolveReady(m as unknown as T);
    } else if (line.startsWith("READY ")) {
      resolveReady(JSON.parse(line.slice(6)) as T);
    }
  };
  const pump = async (stream: ReadableStream<Uint8Array>, keep: boolean): Promise<void> => {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true });
      if (keep && stderrText.length < 16384) stderrText += text;
      pending += text;
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        onLine(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
      if (pending.length > 65536) pending = "";
    }
  };
  const pumps = Promise.all([pump(child.stdout, false), pump(child.stderr, true)]);
  const status = child.status;
  const writer = options.stdin ? child.stdin.getWriter() : undefined;
  const encoder = new TextEncoder();
  const request = async (
    line: string,
    replyPrefix: string,
    timeoutMs = 30_000,
  ): Promise<string> => {
    if (!writer) throw new Error("Cannot send a request: the child has no stdin pipe");
    const reply = new Promise<string>((resolve) => waiters.push({ prefix: replyPrefix, resolve }));
    await writer.write(encoder.encode(line + "\n"));
    return await withDeadline(reply, timeoutMs, `reply to ${line}`);
  };
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    stopped ??= (async () => {
      await writer?.close().catch(() => {});
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 3000);
      await status;
      clearTimeout(timer);
      await pumps.catch(() => {});
    })();
  try {
    const info = await withDeadline(
      Promise.race([
        ready,
        status.then((s) => {
          throw new Error(`${cmd} exited with code ${s.code} before it was ready`);
        }),
      ]),
      options.timeoutMs ?? 15_000,
      `${cmd} ${args.join(" ")} to become ready`,
    );
    return {
      child,
      info,
      stderrText: () => stderrText,
      request,
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}: ${stderrText.trim().slice(0, 2000)}`);
  }
}

/**
 * Formats a number with a sensible precision.
 *
 * @param x The number.
 * @returns A short string.
 */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return "n/a";
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  if (Math.abs(x) >= 1) return x.toFixed(2);
  return x.toFixed(3);
}
