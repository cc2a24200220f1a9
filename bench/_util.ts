/**
 * Small helpers shared by the benchmark scripts: statistics, formatting,
 * deadlines, child processes that announce themselves, and process memory.
 *
 * @module
 */

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
  const out = new Deno.Command(Deno.execPath(), {
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
  const child = new Deno.Command(cmd, {
    args,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: options.env,
  }).spawn();
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
