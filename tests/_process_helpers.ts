// Helpers shared by the process table tests (real processes, bounded waits).
import assert from "node:assert/strict";
import type { ProcessTable, ReadChunk, ReadResult } from "../lib/exec/process_table.ts";
import { DeadlineError, until } from "./_support/deadline.ts";

/** Rejects when `promise` does not settle within `ms`; clears its timer either way. */
export async function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  label = "operation",
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Deadline of ${ms} ms passed: ${label}`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Everything a process produced, collected with reads until it closed. */
export interface Collected {
  chunks: ReadChunk[];
  last: ReadResult;
  text: Record<string, string>;
  bytes: Record<string, Uint8Array>;
}

/** Reads a process from `afterSeq` until it is closed (bounded by `ms`). */
export function collect(
  table: ProcessTable,
  processId: string,
  options: { maxBytes?: number; ms?: number; afterSeq?: number } = {},
): Promise<Collected> {
  return withDeadline(
    (async () => {
      const chunks: ReadChunk[] = [];
      let afterSeq = options.afterSeq ?? 0;
      for (;;) {
        const result = await table.read(processId, {
          afterSeq,
          maxBytes: options.maxBytes,
          waitMs: 1_000,
        });
        chunks.push(...result.chunks);
        afterSeq = result.nextSeq - 1;
        if (result.closed) return { chunks, last: result, ...join(chunks) };
      }
    })(),
    options.ms ?? 10_000,
    `collect ${processId}`,
  );
}

/** Reads until the concatenated output of any stream includes `needle`. */
export function readUntil(
  table: ProcessTable,
  processId: string,
  needle: string,
  ms = 5_000,
): Promise<{ text: string; afterSeq: number }> {
  return withDeadline(
    (async () => {
      let text = "";
      let afterSeq = 0;
      const decoder = new TextDecoder();
      for (;;) {
        const result = await table.read(processId, { afterSeq, waitMs: 1_000 });
        for (const c of result.chunks) text += decoder.decode(c.chunk, { stream: true });
        afterSeq = result.nextSeq - 1;
        if (text.includes(needle)) return { text, afterSeq };
        if (result.closed) throw new Error(`Process closed before printing ${needle}: ${text}`);
      }
    })(),
    ms,
    `read ${processId} until ${needle}`,
  );
}

function join(
  chunks: ReadChunk[],
): { text: Record<string, string>; bytes: Record<string, Uint8Array> } {
  const parts: Record<string, Uint8Array[]> = {};
  for (const c of chunks) (parts[c.stream] ??= []).push(c.chunk);
  const bytes: Record<string, Uint8Array> = {};
  const text: Record<string, string> = {};
  for (const [stream, list] of Object.entries(parts)) {
    const total = list.reduce((n, c) => n + c.byteLength, 0);
    const out = new Uint8Array(total);
    let offset = 0;
    for (const c of list) {
      out.set(c, offset);
      offset += c.byteLength;
    }
    bytes[stream] = out;
    text[stream] = new TextDecoder().decode(out);
  }
  return { text, bytes };
}

/** Pids of live (not zombie) processes whose command line starts with `token`. */
export function livePidsWith(token: string): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).replaceAll("\0", " ");
      if (!cmdline.startsWith(token)) continue;
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
      if (state !== "Z" && state !== "X") pids.push(Number(entry.name));
    } catch {
      // The process went away while we looked.
    }
  }
  return pids;
}

/** A `sleep` duration unique to this test run, to find its processes in /proc. */
export function uniqueSleep(): string {
  return `${900 + Math.floor(Math.random() * 99)}.${Date.now() % 100000}${
    Math.floor(Math.random() * 1000)
  }`;
}

/** SHA-256 hex digest. */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Kills leftovers by pid (test cleanup only; the assertions come first). */
export function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

/**
 * Asserts that no live process starts with `token` within `ms`: processes a
 * kill reached are dead soon after, not at once (a signalled process still has
 * to be scheduled to exit), so this waits for it. What is left is killed, and
 * named in the failure.
 */
export async function assertNoneLeft(token: string, ms = 5_000): Promise<void> {
  let pids: number[] = [];
  try {
    await until(() => (pids = livePidsWith(token)).length === 0, ms, `no "${token}" left`);
  } catch (error) {
    if (!(error instanceof DeadlineError)) throw error;
    killPids(pids);
    throw new Error(`Processes "${token}" outlived the kill: ${pids.join(", ")}`, { cause: error });
  }
}

/**
 * Polls /proc through `until()` (bounded by `ms`) until `count` live processes
 * start with `token`. These are grandchildren a test's shell spawns: the OS
 * gives no event for their start, so there is nothing to await.
 */
export async function waitForPids(token: string, count: number, ms = 3_000): Promise<number[]> {
  let pids: number[] = [];
  try {
    await until(
      () => (pids = livePidsWith(token)).length >= count,
      ms,
      `waiting for ${count} processes`,
    );
  } catch (error) {
    if (!(error instanceof DeadlineError)) throw error;
    throw new Error(`Expected ${count} processes "${token}", found ${pids.length}`, {
      cause: error,
    });
  }
  return pids;
}

/**
 * Runs `_process_fixture.ts` in a Deno subprocess (bounded by 30 s), with
 * `permissions` as its `deno run` flags and `args` after the script, and
 * returns what it printed; fails with its stderr when it exits non-zero.
 */
export async function runProcessFixture(
  permissions: string[],
  args: string[],
  options: { env?: Record<string, string> } = {},
): Promise<string> {
  const { code, stdout, stderr } = await withDeadline(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        ...permissions,
        new URL("./_process_fixture.ts", import.meta.url).pathname,
        ...args,
      ],
      env: options.env,
      stdout: "piped",
      stderr: "piped",
    }).output(),
    30_000,
    "fixture",
  );
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  return new TextDecoder().decode(stdout);
}
