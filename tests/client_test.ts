/**
 * The client: RemoteProcess plumbing against a scripted far side (sequence
 * gaps, duplicates, slow readers, stdin chunking), and connect /
 * RemoteCommand / fs against a real local executor (serveLocal) over a real
 * WebSocket on 127.0.0.1.
 */

import assert from "node:assert/strict";
import { RemoteCommand } from "../lib/client/remote_command.ts";
import { signalExitCode } from "../lib/client/remote_process.ts";
import type { RemoteProcess } from "../lib/client/remote_process.ts";
import type { ProcessTransport } from "../lib/client/remote_process.ts";
import { RelayClosedError } from "../lib/errors.ts";
import { until, withDeadline } from "./_support/deadline.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function b64(text: string | Uint8Array): string {
  const bytes = typeof text === "string" ? encoder.encode(text) : text;
  return (bytes as unknown as { toBase64(): string }).toBase64();
}

interface Event {
  method: string;
  params: Record<string, unknown>;
}

/**
 * The far side of the connection, scripted: it answers process/* requests
 * from a retained event log and delivers notifications only when told to.
 */
class ScriptedExecutor implements ProcessTransport {
  requests: { method: string; params: Record<string, unknown> }[] = [];
  events: Event[] = [];
  #listeners = new Map<string, (method: string, params: unknown) => void>();
  #closeConnection!: () => void;
  closed: Promise<void> = new Promise((resolve) => (this.#closeConnection = resolve));
  writeStatus = "accepted";
  processId = "";
  holds = 0;
  evictedThrough = 0;

  holdInbound(): () => void {
    this.holds++;
    let released = false;
    return () => {
      if (!released) this.holds--;
      released = true;
    };
  }

  subscribeProcess(id: string, listener: (m: string, p: unknown) => void): () => void {
    this.#listeners.set(id, listener);
    return () => this.#listeners.delete(id);
  }

  request<T>(method: string, params?: unknown): Promise<T> {
    const p = (params ?? {}) as Record<string, unknown>;
    this.requests.push({ method, params: p });
    if (method === "process/start") {
      this.processId = p.processId as string;
      return Promise.resolve({ processId: p.processId } as T);
    }
    if (method === "process/write") return Promise.resolve({ status: this.writeStatus } as T);
    if (method === "process/signal") return Promise.resolve({} as T);
    if (method === "process/read") return Promise.resolve(this.#read(p) as T);
    return Promise.reject(new Error(`unexpected ${method}`));
  }

  #read(p: Record<string, unknown>) {
    const after = (p.afterSeq as number) ?? 0;
    const maxBytes = (p.maxBytes as number) ?? Infinity;
    const chunks: { seq: number; stream: string; chunk: string }[] = [];
    let bytes = 0;
    let nextSeq = this.events.length + 1;
    for (const event of this.events) {
      const seq = event.params.seq as number;
      if (seq <= after || seq <= this.evictedThrough || event.method !== "process/output") continue;
      const size = (event.params.chunk as string).length;
      if (chunks.length > 0 && bytes + size > maxBytes) {
        nextSeq = seq;
        break;
      }
      chunks.push({
        seq,
        stream: event.params.stream as string,
        chunk: event.params.chunk as string,
      });
      bytes += size;
      nextSeq = seq + 1;
    }
    const exit = this.events.find((e) => e.method === "process/exited");
    return {
      chunks,
      nextSeq: chunks.length > 0 ? nextSeq : this.events.length + 1,
      exited: exit !== undefined,
      exitCode: exit ? exit.params.exitCode : null,
      closed: this.events.some((e) => e.method === "process/closed"),
      failure: null,
    };
  }

  /** Appends an event to the log (seq assigned in order) without delivering it. */
  record(method: string, params: Record<string, unknown> = {}): Event {
    const event = {
      method,
      params: { processId: this.processId, seq: this.events.length + 1, ...params },
    };
    this.events.push(event);
    return event;
  }

  deliver(event: Event): void {
    this.#listeners.get(this.processId)?.(event.method, event.params);
  }

  emit(method: string, params: Record<string, unknown> = {}): Event {
    const event = this.record(method, params);
    this.deliver(event);
    return event;
  }

  dropConnection(): void {
    this.#closeConnection();
  }
}

async function spawnScripted(
  options: ConstructorParameters<typeof RemoteCommand>[2] = {},
): Promise<{ far: ScriptedExecutor; child: RemoteProcess }> {
  const far = new ScriptedExecutor();
  const child = new RemoteCommand(far, "prog", options).spawn();
  await child.started;
  return { far, child };
}

Deno.test("RemoteCommand sends process/start with argv, env, cwd, stdio and timeout", async () => {
  const { far, child } = await spawnScripted({
    args: ["-c", "echo hi"],
    cwd: "/tmp",
    env: { A: "1" },
    stdin: "piped",
    timeoutMs: 500,
  });
  assert.deepEqual(far.requests[0], {
    method: "process/start",
    params: {
      processId: child.id,
      argv: ["prog", "-c", "echo hi"],
      env: { A: "1" },
      tty: false,
      pipeStdin: true,
      cwd: "/tmp",
      timeoutMs: 500,
    },
  });
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  await child.stdin.close();
  await child.output();
});

Deno.test("RemoteCommand refuses an empty program and a non-positive timeout", () => {
  const far = new ScriptedExecutor();
  assert.throws(() => new RemoteCommand(far, ""), TypeError);
  assert.throws(() => new RemoteCommand(far, "x", { timeoutMs: 0 }), RangeError);
  assert.throws(() => new RemoteCommand(far, "x", { args: [1 as unknown as string] }), TypeError);
});

Deno.test("RemoteProcess delivers stdout and stderr in order and resolves status", async () => {
  const { far, child } = await spawnScripted();
  far.emit("process/output", { stream: "stdout", chunk: b64("hello ") });
  far.emit("process/output", { stream: "stderr", chunk: b64("oops") });
  far.emit("process/output", { stream: "stdout", chunk: b64("world") });
  far.emit("process/exited", { exitCode: 3 });
  far.emit("process/closed");
  const output = await withDeadline(child.output(), 2000, "output");
  assert.equal(decoder.decode(output.stdout), "hello world");
  assert.equal(decoder.decode(output.stderr), "oops");
  assert.deepEqual(
    { success: output.success, code: output.code, signal: output.signal },
    { success: false, code: 3, signal: null },
  );
});

Deno.test("RemoteProcess fills a sequence gap from process/read and ignores duplicates", async () => {
  const { far, child } = await spawnScripted();
  const first = far.emit("process/output", { stream: "stdout", chunk: b64("a") });
  far.record("process/output", { stream: "stdout", chunk: b64("b") }); // lost notification
  far.record("process/output", { stream: "stdout", chunk: b64("c") }); // lost notification
  far.emit("process/output", { stream: "stdout", chunk: b64("d") }); // gap seen here
  far.deliver(first); // duplicate
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  const output = await withDeadline(child.output(), 2000, "output");
  assert.equal(decoder.decode(output.stdout), "abcd");
  assert.equal(output.code, 0);
  assert.ok(far.requests.some((r) => r.method === "process/read" && r.params.afterSeq === 1));
});

Deno.test("RemoteProcess recovers a lost exit and close from process/read", async () => {
  const { far, child } = await spawnScripted();
  far.emit("process/output", { stream: "stdout", chunk: b64("x") });
  far.record("process/output", { stream: "stdout", chunk: b64("y") });
  far.record("process/exited", { exitCode: 7 });
  far.emit("process/closed"); // only the close arrives, past the gap
  const output = await withDeadline(child.output(), 2000, "output");
  assert.equal(decoder.decode(output.stdout), "xy");
  assert.equal(output.code, 7);
});

Deno.test("RemoteProcess holds the connection for a slow reader and releases it after", async () => {
  const { far, child } = await spawnScripted();
  const piece = new Uint8Array(1024 * 1024).fill(7);
  // 6 MiB delivered while nobody reads: past the 4 MiB high-water mark.
  for (let i = 0; i < 6; i++) far.emit("process/output", { stream: "stdout", chunk: b64(piece) });
  assert.equal(far.holds, 1, "reading the connection is held");
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  const output = await withDeadline(child.output(), 5000, "output");
  assert.equal(output.stdout.byteLength, 6 * 1024 * 1024);
  assert.ok(output.stdout.every((b) => b === 7));
  assert.equal(far.holds, 0, "the hold is released once the reader caught up");
});

Deno.test("RemoteProcess fails clearly when missing output is no longer retained", async () => {
  const { far, child } = await spawnScripted();
  far.emit("process/output", { stream: "stdout", chunk: b64("a") });
  far.record("process/output", { stream: "stdout", chunk: b64("b") });
  far.record("process/output", { stream: "stdout", chunk: b64("c") });
  far.evictedThrough = 2;
  far.emit("process/output", { stream: "stdout", chunk: b64("d") });
  await assert.rejects(
    withDeadline(child.status, 2000, "status"),
    /Cannot read process output: seq 2\.\.2 is no longer retained/,
  );
  await assert.rejects(child.output(), /no longer retained/);
});

Deno.test("RemoteProcess writes stdin in 64 KiB pieces and closes it with eof", async () => {
  const { far, child } = await spawnScripted({ stdin: "piped" });
  const writer = child.stdin.getWriter();
  await writer.write(new Uint8Array(64 * 1024 + 1).fill(1));
  await writer.write(new Uint8Array(64 * 1024));
  await writer.close();
  const writes = far.requests.filter((r) => r.method === "process/write").map((r) => r.params);
  assert.equal(writes.length, 4);
  assert.equal(writes[0].chunk, b64(new Uint8Array(64 * 1024).fill(1)));
  assert.equal(writes[1].chunk, b64(new Uint8Array([1])));
  assert.equal(writes[2].chunk, b64(new Uint8Array(64 * 1024)));
  assert.deepEqual(writes[3], { processId: child.id, chunk: "", eof: true });
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  await child.output();
});

Deno.test("RemoteProcess stdin write fails clearly when the executor reports stdinClosed", async () => {
  const { far, child } = await spawnScripted({ stdin: "piped" });
  far.writeStatus = "stdinClosed";
  const writer = child.stdin.getWriter();
  await assert.rejects(
    writer.write(encoder.encode("x")),
    /Cannot write to process .*: stdinClosed/,
  );
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  await child.output();
});

Deno.test("RemoteProcess getters refuse streams that are not piped", async () => {
  const { far, child } = await spawnScripted({ stdout: "null", stderr: "null" });
  assert.throws(() => child.stdin, /stdin: it is not piped/);
  assert.throws(() => child.stdout, /stdout: it is not piped/);
  assert.throws(() => child.stderr, /stderr: it is not piped/);
  far.emit("process/output", { stream: "stdout", chunk: b64("discarded") });
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  const output = await child.output();
  assert.equal(output.stdout.byteLength, 0);
});

Deno.test("RemoteProcess maps a signal exit to 128+n and kill sends process/signal", async () => {
  const { far, child } = await spawnScripted();
  await child.kill("SIGINT");
  assert.deepEqual(far.requests.at(-1), {
    method: "process/signal",
    params: { processId: child.id, signal: "SIGINT" },
  });
  far.emit("process/exited", { exitCode: null, signal: "SIGINT" });
  far.emit("process/closed");
  const status = await child.status;
  assert.deepEqual(status, { success: false, code: 130, signal: "SIGINT" });
  assert.equal(signalExitCode("SIGKILL"), 137);
  await child.output();
});

Deno.test("RemoteProcess fails its streams and status when the connection closes", async () => {
  const { far, child } = await spawnScripted();
  far.dropConnection();
  await assert.rejects(withDeadline(child.status, 2000, "status"), RelayClosedError);
  await assert.rejects(child.output(), RelayClosedError);
});

Deno.test("RemoteProcess dispose kills a running process and waits for it", async () => {
  const { far, child } = await spawnScripted();
  const disposed = child[Symbol.asyncDispose]();
  await until(() => far.requests.some((r) => r.method === "process/signal"), 2000, "kill request");
  assert.equal(far.requests.at(-1)?.params.signal, "SIGKILL");
  far.emit("process/exited", { exitCode: null, signal: "SIGKILL" });
  far.emit("process/closed");
  await withDeadline(disposed, 2000, "dispose");
});
