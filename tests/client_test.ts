/**
 * The client: RemoteProcess plumbing against a scripted far side (sequence
 * gaps, duplicates, slow readers, stdin chunking), and connect /
 * RemoteCommand / fs against a real local executor (serveLocal) over a real
 * WebSocket on 127.0.0.1.
 */

import assert from "node:assert/strict";
import { DEFAULT_MAX_FILE_BYTES } from "../lib/_limits.ts";
import { MAX_COMMAND_TIMEOUT_MS, RemoteCommand } from "../lib/client/remote_command.ts";
import {
  MAX_WRITES_IN_FLIGHT,
  OUTPUT_CHUNK_OVERHEAD_BYTES,
  OUTPUT_HIGH_WATER_BYTES,
  signalExitCode,
} from "../lib/client/remote_process.ts";
import type { RemoteProcess } from "../lib/client/remote_process.ts";
import type { ProcessTransport } from "../lib/client/remote_process.ts";
import {
  connect,
  type Connection,
  LAST_ATTEMPT_LEAD_MS,
  STABLE_SOCKET_MS,
} from "../lib/client/connect.ts";
import { openWebSocketChannel } from "../lib/client/_websocket_channel.ts";
import { GatedChannel } from "../lib/client/_gated_channel.ts";
import { loopback } from "./_mux_loopback.ts";
import { RelayClosedError, RpcError, StreamResetError } from "../lib/errors.ts";
import { type MuxStream, StreamMux } from "../lib/mux/stream_mux.ts";
import { RelaySocket } from "../lib/relay/relay_socket.ts";
import { JsonRpcPeer } from "../lib/rpc/json_rpc_peer.ts";
import { runExecutor } from "../lib/server/executor_loop.ts";
import { serveLocal } from "../lib/server/local_server.ts";
import { serveRendezvous } from "../lib/server/rendezvous_server.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { TcpProxy } from "./_support/tcp_proxy.ts";
import { PathPrefixProxy } from "./_support/path_prefix_proxy.ts";
import { underFlags } from "./_support/under_flags.ts";

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
  /** When set, `process/write` replies wait here until released. */
  heldWrites: (() => void)[] | null = null;
  /** When set, `process/signal` answers as this settles. */
  signalAnswer: Promise<unknown> | null = null;
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
    if (method === "process/write") {
      const reply = { status: this.writeStatus } as T;
      if (this.heldWrites === null) return Promise.resolve(reply);
      return new Promise<T>((resolve) => this.heldWrites!.push(() => resolve(reply)));
    }
    if (method === "process/signal") {
      return (this.signalAnswer ?? Promise.resolve({})) as Promise<T>;
    }
    if (method === "process/resize") return Promise.resolve({} as T);
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
      inheritEnv: true,
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

Deno.test("RemoteCommand sends a terminal size (1..65535) with process/start", async () => {
  const { far, child } = await spawnScripted({ tty: true, cols: 65_535, rows: 1 });
  assert.equal(far.requests[0].params.cols, 65_535);
  assert.equal(far.requests[0].params.rows, 1);
  assert.throws(() => new RemoteCommand(far, "x", { tty: true, cols: 65_536 }), RangeError);
  assert.throws(() => new RemoteCommand(far, "x", { tty: true, rows: 0 }), RangeError);
  assert.throws(() => new RemoteCommand(far, "x", { tty: true, cols: 80.5 }), RangeError);
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  await child.output();
});

Deno.test("RemoteProcess.resize sends process/resize, checks the size and skips an exited process", async () => {
  const { far, child } = await spawnScripted({ tty: true });
  await child.resize(65_535, 1);
  assert.deepEqual(far.requests.at(-1), {
    method: "process/resize",
    params: { processId: child.id, cols: 65_535, rows: 1 },
  });
  await assert.rejects(child.resize(0, 30), RangeError);
  await assert.rejects(child.resize(100, 65_536), RangeError);
  far.emit("process/exited", { exitCode: 0 });
  const sent = far.requests.length;
  await child.resize(100, 30);
  assert.equal(far.requests.length, sent, "no resize after the exit");
  far.emit("process/closed");
  await child.output();
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

Deno.test("RemoteProcess counts a per-chunk overhead: one-byte chunks hold the connection at the limit", async () => {
  const { far, child } = await spawnScripted();
  // Each one-byte chunk counts 1 + overhead; the hold comes once the queue reaches the mark.
  const holdAt = Math.ceil(OUTPUT_HIGH_WATER_BYTES / (1 + OUTPUT_CHUNK_OVERHEAD_BYTES));
  const oneByte = b64("x");
  for (let i = 0; i < holdAt - 1; i++) {
    far.emit("process/output", { stream: "stdout", chunk: oneByte });
  }
  assert.equal(far.holds, 0, `${holdAt - 1} chunks queued: not held yet`);
  far.emit("process/output", { stream: "stdout", chunk: oneByte });
  assert.equal(far.holds, 1, `${holdAt} chunks queued: reading the connection is held`);
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  const output = await withDeadline(child.output(), 5000, "output");
  assert.equal(output.stdout.byteLength, holdAt);
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
  // Writes are pipelined: the refusal errors the stream once the reply is in.
  const wrote = writer.write(encoder.encode("x")).catch((error) => error);
  await assert.rejects(
    withDeadline(writer.closed, 2000, "stdin errored"),
    /Cannot write to process .*: its stdin is closed \(the program exited or closed it\): stdinClosed/,
  );
  await wrote;
  await assert.rejects(writer.write(encoder.encode("y")), /stdinClosed/);
  assert.equal(far.requests.filter((r) => r.method === "process/write").length, 1);
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  await child.output();
});

Deno.test("RemoteProcess keeps at most MAX_WRITES_IN_FLIGHT stdin writes unanswered, eof last", async () => {
  const { far, child } = await spawnScripted({ stdin: "piped" });
  far.heldWrites = [];
  const writer = child.stdin.getWriter();
  const writes = () => far.requests.filter((r) => r.method === "process/write");
  // At the limit: every write resolves without any reply.
  for (let i = 0; i < MAX_WRITES_IN_FLIGHT; i++) {
    await withDeadline(writer.write(new Uint8Array([i])), 2000, `write ${i}`);
  }
  assert.equal(writes().length, MAX_WRITES_IN_FLIGHT);
  // One past it: the write waits until a reply frees a slot.
  let pastDone = false;
  const past = writer.write(new Uint8Array([MAX_WRITES_IN_FLIGHT])).then(() => (pastDone = true));
  await until(() => far.heldWrites!.length === MAX_WRITES_IN_FLIGHT, 2000, "held replies");
  assert.equal(pastDone, false);
  assert.equal(writes().length, MAX_WRITES_IN_FLIGHT);
  far.heldWrites.shift()!();
  await withDeadline(past, 2000, "write past the limit");
  assert.equal(writes().length, MAX_WRITES_IN_FLIGHT + 1);
  // Close sends eof only after every write has been answered.
  const closing = writer.close();
  await until(() => far.heldWrites!.length === MAX_WRITES_IN_FLIGHT, 2000, "held replies");
  assert.equal(writes().some((w) => w.params.eof === true), false);
  const held = far.heldWrites;
  far.heldWrites = null;
  for (const release of held) release();
  await withDeadline(closing, 2000, "close");
  const sent = writes().map((w) => w.params);
  assert.deepEqual(sent.at(-1), { processId: child.id, chunk: "", eof: true });
  assert.deepEqual(
    sent.slice(0, -1).map((p) => p.chunk),
    [...Array(MAX_WRITES_IN_FLIGHT + 1).keys()].map((i) => b64(new Uint8Array([i]))),
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

Deno.test("RemoteProcess.kill releases its hold and then drops only the output that does not fit the queue", async () => {
  const { far, child } = await spawnScripted();
  const piece = new Uint8Array(1024 * 1024).fill(7);
  for (let i = 0; i < 4; i++) far.emit("process/output", { stream: "stdout", chunk: b64(piece) });
  assert.equal(far.holds, 1, "4 MiB unread holds the connection");
  const killed = child.kill("SIGKILL");
  assert.equal(far.holds, 0, "kill releases the hold at once, before its reply");
  // Past the full queue: dropped and counted, never held again.
  for (let i = 0; i < 3; i++) far.emit("process/output", { stream: "stdout", chunk: b64(piece) });
  assert.equal(far.holds, 0);
  assert.equal(child.droppedOutputBytes, 3 * piece.byteLength);
  await withDeadline(killed, 2000, "kill");
  far.emit("process/exited", { exitCode: null, signal: "SIGKILL" });
  far.emit("process/closed");
  assert.deepEqual(await withDeadline(child.status, 2000, "status"), {
    success: false,
    code: 137,
    signal: "SIGKILL",
  });
  // What was queued before the kill is still there, whole.
  const output = await withDeadline(child.output(), 2000, "output");
  assert.equal(output.stdout.byteLength, 4 * piece.byteLength);
  assert.ok(output.stdout.every((b) => b === 7));
});

for (
  const [what, kill] of [
    ["a signal a program may survive (SIGINT)", (c: RemoteProcess) => c.kill("SIGINT")],
    [
      "SIGTERM and keepOutput (a reader of everything)",
      (c: RemoteProcess) => c.kill("SIGTERM", { keepOutput: true }),
    ],
  ] as const
) {
  Deno.test(`RemoteProcess.kill with ${what} keeps every byte and the hold`, async () => {
    await killKeepingOutput(kill);
  });
}

async function killKeepingOutput(kill: (child: RemoteProcess) => Promise<void>): Promise<void> {
  const { far, child } = await spawnScripted();
  const piece = new Uint8Array(1024 * 1024).fill(3);
  for (let i = 0; i < 4; i++) far.emit("process/output", { stream: "stdout", chunk: b64(piece) });
  assert.equal(far.holds, 1, "4 MiB unread holds the connection");
  const interrupted = kill(child);
  assert.equal(far.holds, 1, "the hold stays: nothing may be dropped");
  // The program traps SIGINT and prints on; a reader drains everything.
  far.emit("process/output", { stream: "stdout", chunk: b64(piece) });
  const reader = child.stdout.getReader();
  let received = 0;
  while (received < 5 * piece.byteLength) {
    const { value } = await withDeadline(reader.read(), 2000, "read");
    received += value?.byteLength ?? 0;
  }
  assert.equal(child.droppedOutputBytes, 0);
  await withDeadline(interrupted, 2000, "kill");
  reader.releaseLock();
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  await child.output();
}

Deno.test("RemoteProcess.kill keeps holding nothing while its queue has room, and after the exit sends nothing", async () => {
  const { far, child } = await spawnScripted();
  await child.kill("SIGTERM");
  // A reader that keeps up loses nothing after a kill.
  const reader = child.stdout.getReader();
  const piece = new Uint8Array(1024 * 1024).fill(1);
  for (let i = 0; i < 8; i++) {
    far.emit("process/output", { stream: "stdout", chunk: b64(piece) });
    const { value } = await reader.read();
    assert.equal(value?.byteLength, piece.byteLength);
    assert.equal(far.holds, 0, `chunk ${i}: the queue has room, nothing is held`);
  }
  assert.equal(child.droppedOutputBytes, 0);
  reader.releaseLock();
  far.emit("process/exited", { exitCode: 0 });
  const sent = far.requests.length;
  await child.kill("SIGKILL");
  assert.equal(far.requests.length, sent, "kill after the exit is a silent no-op (Deno throws)");
  far.emit("process/closed");
  await child.output();
});

Deno.test("RemoteProcess.kill is quiet when the program exits before a failed answer, and fails otherwise", async () => {
  const { far, child } = await spawnScripted();
  // No exit: a failed request is the caller's error.
  const refused = Promise.withResolvers<unknown>();
  far.signalAnswer = refused.promise;
  const failing = child.kill("SIGINT");
  refused.reject(new Error("the connection closed"));
  await assert.rejects(failing, /the connection closed/);
  // The program ends of the signal, and the connection closes before the answer.
  const answer = Promise.withResolvers<unknown>();
  far.signalAnswer = answer.promise;
  const killed = child.kill("SIGTERM");
  await until(
    () => far.requests.some((r) => r.method === "process/signal" && r.params.signal === "SIGTERM"),
    5_000,
    "the signal request sent",
  );
  far.emit("process/exited", { exitCode: 143 });
  answer.reject(new Error("the connection closed"));
  await killed;
  far.emit("process/closed");
  assert.equal((await child.output()).code, 143);
});

Deno.test("RemoteProcess dispose cancels unread output first, so a full queue does not hold the kill", async () => {
  const { far, child } = await spawnScripted();
  const piece = new Uint8Array(1024 * 1024);
  for (let i = 0; i < 5; i++) far.emit("process/output", { stream: "stdout", chunk: b64(piece) });
  assert.equal(far.holds, 1);
  const disposed = child[Symbol.asyncDispose]();
  assert.equal(far.holds, 0, "the hold is released");
  assert.equal((await child.stdout.getReader().read()).done, true, "unread stdout is discarded");
  await until(() => far.requests.some((r) => r.method === "process/signal"), 2000, "kill request");
  far.emit("process/output", { stream: "stdout", chunk: b64(piece) });
  assert.equal(far.holds, 0);
  far.emit("process/exited", { exitCode: null, signal: "SIGKILL" });
  far.emit("process/closed");
  await withDeadline(disposed, 2000, "dispose");
});

Deno.test("RemoteCommand's aborted signal discards unread output and kills, leaving a reader's stream alone", async () => {
  const abort = new AbortController();
  const { far, child } = await spawnScripted({ signal: abort.signal });
  const piece = new Uint8Array(1024 * 1024);
  for (let i = 0; i < 5; i++) far.emit("process/output", { stream: "stdout", chunk: b64(piece) });
  far.emit("process/output", { stream: "stderr", chunk: b64("kept for its reader") });
  assert.equal(far.holds, 1);
  const stderrReader = child.stderr.getReader();
  abort.abort();
  assert.equal(far.holds, 0, "the hold is released");
  assert.equal((await child.stdout.getReader().read()).done, true, "unread stdout is discarded");
  await until(() => far.requests.some((r) => r.method === "process/signal"), 2000, "kill request");
  assert.equal(far.requests.at(-1)?.params.signal, "SIGKILL");
  far.emit("process/exited", { exitCode: null, signal: "SIGKILL" });
  far.emit("process/closed");
  assert.equal((await withDeadline(child.status, 2000, "status")).code, 137);
  const { value } = await stderrReader.read();
  assert.equal(decoder.decode(value), "kept for its reader", "a held stream keeps its output");
});

Deno.test("RemoteProcess.output refuses a locked stream before reading either", async () => {
  const { far, child } = await spawnScripted();
  const stdoutReader = child.stdout.getReader();
  await assert.rejects(child.output(), {
    name: "TypeError",
    message: "Cannot collect output: 'stdout' is locked",
  });
  assert.equal(child.stderr.locked, false, "the failed call left stderr alone");
  stdoutReader.releaseLock();
  const stderrReader = child.stderr.getReader();
  await assert.rejects(child.output(), {
    name: "TypeError",
    message: "Cannot collect output: 'stderr' is locked",
  });
  assert.equal(child.stdout.locked, false, "the failed call left stdout alone");
  stderrReader.releaseLock();
  far.emit("process/output", { stream: "stdout", chunk: b64("out") });
  far.emit("process/output", { stream: "stderr", chunk: b64("err") });
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  const output = await withDeadline(child.output(), 2000, "output");
  assert.equal(decoder.decode(output.stdout), "out");
  assert.equal(decoder.decode(output.stderr), "err");
  // Spent, as Deno's: a second call is refused, not answered with nothing.
  assert.equal(child.stdout.locked, true);
  await assert.rejects(child.output(), {
    name: "TypeError",
    message: "Cannot collect output: 'stdout' is locked",
  });
});

Deno.test("signalExitCode gives 128 + the Linux number of every Deno.Signal name", async () => {
  // Every name Deno knows (the Deno.Signal type, spelled out so a new one fails to compile).
  const names: Record<Deno.Signal, true> = {
    SIGABRT: true,
    SIGALRM: true,
    SIGBREAK: true,
    SIGBUS: true,
    SIGCHLD: true,
    SIGCONT: true,
    SIGEMT: true,
    SIGFPE: true,
    SIGHUP: true,
    SIGILL: true,
    SIGINFO: true,
    SIGINT: true,
    SIGIO: true,
    SIGPOLL: true,
    SIGUNUSED: true,
    SIGKILL: true,
    SIGPIPE: true,
    SIGPROF: true,
    SIGPWR: true,
    SIGQUIT: true,
    SIGSEGV: true,
    SIGSTKFLT: true,
    SIGSTOP: true,
    SIGSYS: true,
    SIGTERM: true,
    SIGTRAP: true,
    SIGTSTP: true,
    SIGTTIN: true,
    SIGTTOU: true,
    SIGURG: true,
    SIGUSR1: true,
    SIGUSR2: true,
    SIGVTALRM: true,
    SIGWINCH: true,
    SIGXCPU: true,
    SIGXFSZ: true,
  };
  // The numbers come from the system, not from a copy of the table under test:
  // bash's kill prints a name's number, and nothing for a name Linux lacks.
  const script = 'for s in "$@"; do echo "$s $(kill -l "$s" 2>/dev/null)"; done';
  const { stdout } = await new Deno.Command("bash", {
    args: ["-c", script, "bash", ...Object.keys(names)],
  }).output();
  const linux = new Map(
    new TextDecoder().decode(stdout).trim().split("\n").map((line) => {
      const [name, number = ""] = line.trim().split(" ");
      return [name, /^\d+$/.test(number) ? Number(number) : null] as const;
    }),
  );
  // Linux aliases bash does not name: SIGPOLL is SIGIO, SIGUNUSED an old name of SIGSYS.
  if (linux.get("SIGPOLL") === null) linux.set("SIGPOLL", linux.get("SIGIO")!);
  if (linux.get("SIGUNUSED") === null) linux.set("SIGUNUSED", linux.get("SIGSYS")!);
  assert.equal(linux.size, Object.keys(names).length);
  for (const [name, number] of linux) {
    // A name Linux lacks (SIGBREAK, SIGEMT, SIGINFO) falls back to SIGTERM's code.
    assert.equal(signalExitCode(name), 128 + (number ?? 15), name);
  }
  assert.equal(signalExitCode("SIGNOPE"), 143);
  assert.equal(signalExitCode("toString"), 143, "no inherited property counts as a signal");
});

Deno.test("RemoteCommand checks each option's type and range", () => {
  const far = new ScriptedExecutor();
  const bad = (options: Record<string, unknown>, error: typeof TypeError, message: RegExp) =>
    assert.throws(
      () => new RemoteCommand(far, "x", options as ConstructorParameters<typeof RemoteCommand>[2]),
      (e: Error) => e instanceof error && message.test(e.message),
      JSON.stringify(options),
    );
  for (const name of ["stdin", "stdout", "stderr"]) {
    bad({ [name]: "inherit" }, TypeError, new RegExp(`${name} "inherit" is not supported`));
    bad({ [name]: "pipe" }, TypeError, new RegExp(`${name} must be "piped" or "null"`));
    bad({ [name]: true }, TypeError, new RegExp(`${name} must be "piped" or "null"`));
  }
  bad({ args: "-c" }, TypeError, /args must be an array of strings/);
  bad({ args: ["-c", 1] }, TypeError, /args must be an array of strings/);
  bad({ env: "A=1" }, TypeError, /env must be an object of strings/);
  bad({ env: ["A=1"] }, TypeError, /env must be an object of strings/);
  bad({ env: { A: 1 } }, TypeError, /env must be an object of strings/);
  bad({ env: { "A=B": "x" } }, TypeError, /env name "A=B" is empty or holds "=" or NUL/);
  bad({ env: { "": "x" } }, TypeError, /env name "" is empty/);
  bad({ env: { A: "x\0y" } }, TypeError, /env value of A holds NUL/);
  bad({ cwd: 7 }, TypeError, /cwd must be a string/);
  bad({ cwd: "work/dir" }, TypeError, /cwd "work\/dir" must be an absolute path/);
  bad({ signal: { aborted: false } }, TypeError, /signal must be an AbortSignal/);
  bad({ tty: "yes" }, TypeError, /tty must be a boolean/);
  bad({ inheritEnv: 0 }, TypeError, /inheritEnv must be a boolean/);
  bad({ confinement: "strict" }, TypeError, /confinement must be "none", "deno" or "os"/);
  bad({ cols: 80 }, TypeError, /cols needs tty: true/);
  bad({ tty: false, rows: 24 }, TypeError, /rows needs tty: true/);
  bad({ tty: true, cols: "80" }, TypeError, /cols must be a number/);
  bad({ timeoutMs: "100" }, TypeError, /timeoutMs must be a number/);
  for (const timeoutMs of [0, -1, 1.5, NaN, Infinity, MAX_COMMAND_TIMEOUT_MS + 1, 1e12]) {
    bad({ timeoutMs }, RangeError, /timeoutMs .* is not an integer from 1 to 2147483647/);
  }
  // At the limits: accepted.
  new RemoteCommand(far, "x", { timeoutMs: 1 });
  new RemoteCommand(far, "x", { timeoutMs: MAX_COMMAND_TIMEOUT_MS });
  new RemoteCommand(far, "x", { stdin: "null", stdout: "null", stderr: "piped", tty: false });
  assert.throws(() => new RemoteCommand(far, "x", null as unknown as undefined), TypeError);
});

Deno.test("RemoteCommand copies its options: a later change to the caller's object is not seen", async () => {
  const options = {
    args: ["-c", "true"],
    env: { A: "1" },
    stdout: "piped" as "piped" | "null",
    timeoutMs: 1000,
  };
  const far = new ScriptedExecutor();
  const command = new RemoteCommand(far, "prog", options);
  options.args.push("extra");
  options.env.A = "2";
  (options as Record<string, unknown>).stdout = "inherit";
  options.timeoutMs = 1.5;
  const child = command.spawn();
  await child.started;
  const params = far.requests[0].params;
  assert.deepEqual(params.argv, ["prog", "-c", "true"]);
  assert.deepEqual(params.env, { A: "1" });
  assert.equal(params.timeoutMs, 1000);
  assert.ok(child.stdout instanceof ReadableStream, "stdout stays piped");
  far.emit("process/exited", { exitCode: 0 });
  far.emit("process/closed");
  await child.output();
});

Deno.test("RemoteCommand types nothing into a tty program's input on its own", async () => {
  // An eof on a terminal is the Ctrl-D key: a full-screen program would take it as a key press.
  for (const options of [{ tty: true }, { tty: true, stdin: "null" }, { tty: false }] as const) {
    const { far, child } = await spawnScripted(options);
    assert.deepEqual(far.requests.map((r) => r.method), ["process/start"], JSON.stringify(options));
    far.emit("process/exited", { exitCode: 0 });
    far.emit("process/closed");
    await child.output();
  }
});

// ---------------------------------------------------------------------------
// Against real servers on 127.0.0.1 (in-process), over real WebSockets.

const SERVER_TOKEN = "client-test-token-0123456789";

Deno.test("connect (local) runs a command, pipes stdin and reports the exit code", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  assert.equal(conn.mode, "local");
  assert.match(conn.sessionId, /^[0-9a-f-]{36}$/);
  const child = new RemoteCommand(conn, "sh", {
    args: ["-c", "tr a-z A-Z; echo done >&2; exit 5"],
    stdin: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(encoder.encode("hello "));
  await writer.write(encoder.encode("remote"));
  await writer.close();
  const output = await withDeadline(child.output(), 10_000, "output");
  assert.equal(decoder.decode(output.stdout), "HELLO REMOTE");
  assert.equal(decoder.decode(output.stderr), "done\n");
  assert.equal(output.code, 5);
  assert.equal(output.success, false);
});

/** Pipes `size` patterned bytes in uneven writes through `cat` and checks they come back intact. */
async function pipeThroughCat(conn: ProcessTransport, size: number): Promise<void> {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7 + (i >> 16)) & 0xff;
  const child = new RemoteCommand(conn, "cat", { stdin: "piped", stderr: "null" }).spawn();
  const writing = (async () => {
    const writer = child.stdin.getWriter();
    const sizes = [1, 65_536, 100_000, 7, 200_000, 65_535, 300_000];
    for (let offset = 0, i = 0; offset < size; i++) {
      const end = Math.min(size, offset + sizes[i % sizes.length]);
      await writer.write(data.subarray(offset, end));
      offset = end;
    }
    await writer.close();
  })();
  const [output] = await withDeadline(
    Promise.all([child.output(), writing]),
    20_000,
    "piping through cat",
  );
  assert.equal(output.code, 0);
  assert.equal(output.stdout.byteLength, size);
  assert.ok(output.stdout.every((byte, i) => byte === data[i]), "stdin arrived out of order");
}

Deno.test("connect (local) pipes 8 MiB of pipelined stdin writes in order", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  await pipeThroughCat(conn, 8 * 1024 * 1024);
});

Deno.test("connect (local) refuses a missing or wrong token with a clear error", async () => {
  await using server = await serveLocal({ token: SERVER_TOKEN });
  await assert.rejects(
    connect(server.url),
    /^RelayClosedError: Cannot connect to 127\.0\.0\.1:\d+: the executor requires a token \(HTTP 401\); pass `token` \(the CLI: OUTPOST_TOKEN or --token-file\)$/,
  );
  await assert.rejects(
    connect(server.url, { token: "wrong-token-0123456789abc" }),
    /^RelayClosedError: Cannot connect to 127\.0\.0\.1:\d+: the executor refused the token \(HTTP 401\)$/,
  );
  const refused = await connect(server.url).catch((e) => e);
  assert.ok(refused instanceof RelayClosedError, String(refused));
  assert.equal(refused.refusal?.status, 401);
  await using conn = await connect(server.url, { token: SERVER_TOKEN });
  const { code } = await new RemoteCommand(conn, "true").output();
  assert.equal(code, 0);
});

Deno.test("RemoteCommand reports a program the executor cannot start", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  const child = new RemoteCommand(conn, "/no/such/program").spawn();
  await assert.rejects(child.started, RpcError);
  await assert.rejects(child.status, RpcError);
  await assert.rejects(new RemoteCommand(conn, "/no/such/program").output(), RpcError);
});

Deno.test("RemoteProcess.kill delivers a signal and status reports it", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  const child = new RemoteCommand(conn, "sh", {
    args: ["-c", "echo ready; exec sleep 30"],
  }).spawn();
  const reader = child.stdout.getReader();
  const first = await withDeadline(reader.read(), 10_000, "ready line");
  assert.equal(decoder.decode(first.value), "ready\n");
  reader.releaseLock();
  await child.kill("SIGTERM");
  const status = await withDeadline(child.status, 10_000, "status");
  assert.equal(status.success, false);
  assert.equal(status.code, 143);
  assert.equal(status.signal, "SIGTERM");
  await child.output();
});

Deno.test("a terminal gets the size RemoteCommand asks for and RemoteProcess.resize changes it", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  const child = new RemoteCommand(conn, "sh", {
    args: ["-c", "stty size; read line; stty size"],
    tty: true,
    cols: 120,
    rows: 40,
    stdin: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  const readUntil = async (pattern: RegExp, label: string): Promise<void> => {
    while (!pattern.test(text)) {
      const { value, done } = await withDeadline(reader.read(), 10_000, label);
      if (done) throw new Error(`Cannot see ${label}: the output ended: ${text}`);
      text += decoder.decode(value, { stream: true });
    }
  };
  await readUntil(/\d+ \d+\r?\n/, "the first size");
  assert.match(text, /^40 120\r?\n/);
  await child.resize(100, 30);
  const writer = child.stdin.getWriter();
  await writer.write(encoder.encode("\n"));
  await writer.close();
  await readUntil(/\d+ \d+\r?\n[^]*\d+ \d+\r?\n/, "the second size");
  assert.match(text, /30 100\r?\n$/);
  reader.releaseLock();
  const status = await withDeadline(child.status, 10_000, "status");
  assert.equal(status.code, 0);
  await child.output();
});

Deno.test("RemoteCommand kills the process when its signal aborts", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  const abort = new AbortController();
  const child = new RemoteCommand(conn, "sh", {
    args: ["-c", "echo ready; exec sleep 30"],
    signal: abort.signal,
  }).spawn();
  const reader = child.stdout.getReader();
  await withDeadline(reader.read(), 10_000, "ready line");
  reader.releaseLock();
  abort.abort();
  const status = await withDeadline(child.status, 10_000, "status");
  assert.equal(status.code, 137);
  await child.output();
});

Deno.test("await using a RemoteProcess kills it and waits", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  let status: Promise<unknown>;
  {
    await using child = new RemoteCommand(conn, "sh", { args: ["-c", "exec sleep 30"] }).spawn();
    await child.started;
    status = child.status;
  }
  assert.equal(((await status) as { code: number }).code, 137);
});

/** `conn` as a process transport that also counts the output holds its processes take. */
function countingHolds(conn: Connection): { transport: ProcessTransport; holds: () => number } {
  let holds = 0;
  const transport = new Proxy(conn, {
    get(target, key) {
      if (key === "holdInbound") {
        return () => {
          const release = target.holdInbound();
          holds++;
          let released = false;
          return () => {
            if (released) return;
            released = true;
            holds--;
            release();
          };
        };
      }
      const value = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { transport, holds: () => holds };
}

const UNREAD_BYTES = 20_000_000;

/**
 * With 20 MB of stdout nobody reads (the process holds the connection's
 * reading), kill() and status, `await using` and an aborted signal each
 * settle, and what was queued before the kill stays readable.
 */
async function unreadOutputDoesNotBlockTheEnd(conn: Connection): Promise<void> {
  const { transport, holds } = countingHolds(conn);
  const spawnUnread = (signal?: AbortSignal): RemoteProcess =>
    new RemoteCommand(transport, "sh", {
      args: ["-c", `head -c ${UNREAD_BYTES} /dev/zero; exec sleep 30`],
      stderr: "null",
      ...(signal ? { signal } : {}),
    }).spawn();
  const held = (): Promise<void> => until(() => holds() === 1, 10_000, "the unread output holds");

  const killed = spawnUnread();
  await held();
  await withDeadline(killed.kill("SIGKILL"), 10_000, "kill with 20 MB unread");
  const status = await withDeadline(killed.status, 10_000, "status after kill");
  assert.equal(status.code, 137);
  assert.equal(holds(), 0);
  let queued = 0;
  for await (const chunk of killed.stdout) {
    assert.ok(chunk.every((b) => b === 0));
    queued += chunk.byteLength;
  }
  assert.ok(queued >= 3 * 1024 * 1024, `the queued output stays readable (${queued} B)`);
  assert.ok(queued <= OUTPUT_HIGH_WATER_BYTES + 1024 * 1024, `queued ${queued} B`);
  assert.ok(killed.droppedOutputBytes > 0, "output past the full queue was dropped");
  assert.ok(queued + killed.droppedOutputBytes <= UNREAD_BYTES);

  let disposedStatus: Promise<unknown> | undefined;
  await withDeadline(
    (async () => {
      await using disposed = spawnUnread();
      disposedStatus = disposed.status;
      await held();
    })(),
    20_000,
    "await using with 20 MB unread",
  );
  assert.equal(((await disposedStatus) as { code: number }).code, 137);
  assert.equal(holds(), 0);

  const abort = new AbortController();
  const aborted = spawnUnread(abort.signal);
  await held();
  abort.abort();
  const abortedStatus = await withDeadline(aborted.status, 10_000, "status after abort");
  assert.equal(abortedStatus.code, 137);
  assert.equal(holds(), 0);
}

Deno.test("connect (local): kill, status, await using and abort settle with 20 MB of unread output", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  await unreadOutputDoesNotBlockTheEnd(conn);
});

Deno.test("connect (rendezvous): kill, status, await using and abort settle with 20 MB of unread output", async () => {
  await using rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  await using executor = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-unread",
    token: SERVER_TOKEN,
  });
  await until(() => executor.status === "connected", 10_000, "executor connected");
  await using conn = await connect(rendezvous.url, {
    executorId: "box-unread",
    token: SERVER_TOKEN,
  });
  await unreadOutputDoesNotBlockTheEnd(conn);
});

Deno.test("connect to a rendezvous's executor path with a good token says it takes a signed URL, not that the token was refused", async () => {
  await using rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  await assert.rejects(
    connect(`${rendezvous.url}/executor/box-1`, { token: SERVER_TOKEN }),
    /: that is a rendezvous's executor path \(HTTP 401\), which takes only the signed URL an executor registers for; a harness connects to the rendezvous URL with an executor id \(--executor-id\)$/,
  );
});

Deno.test("connect refuses a URL with credentials, without naming them", async () => {
  await assert.rejects(
    connect("ws://user:hunter2pw@127.0.0.1:9"),
    (error: unknown) =>
      error instanceof TypeError && /must not carry credentials/.test(error.message) &&
      !error.message.includes("hunter2pw"),
  );
});

Deno.test("connect keeps the path of a rendezvous served under a prefix by a proxy that strips it", async () => {
  // A prefix may hold the rendezvous's own words: only a route at the end is one.
  await using proxy = new PathPrefixProxy("/cloud/outpost");
  // Signed URLs are handed out under the prefix, as clients reach the rendezvous.
  await using rendezvous = await serveRendezvous({ token: SERVER_TOKEN, publicUrl: proxy.url });
  proxy.upstreamPort = Number(new URL(rendezvous.url).port);
  // The executor registers through the proxy too.
  await using executor = runExecutor({
    registry: proxy.url,
    executorId: "px",
    token: SERVER_TOKEN,
  });
  await until(() => executor.status === "connected", 10_000, "executor connected");
  for (
    const [url, executorId] of [
      [proxy.url, "px"],
      [`${proxy.url}/`, "px"],
      [`${proxy.url}/harness/other?role=harness`, "px"],
      // The rendezvous's own routes end the prefix, whatever follows.
      [`${proxy.url}/executor/px`, "px"],
      [`${proxy.url}/cloud/executor/px/connect`, "px"],
      [`${proxy.url}/harness/px`, undefined],
    ] as const
  ) {
    await using conn = await connect(url, {
      token: SERVER_TOKEN,
      ...(executorId !== undefined ? { executorId } : {}),
    });
    const out = await new RemoteCommand(conn, "sh", { args: ["-c", "echo ok"] }).output();
    assert.equal(new TextDecoder().decode(out.stdout), "ok\n", url);
  }
  assert.ok(
    proxy.seen.includes("/cloud/outpost/harness/px?role=harness"),
    `the harness path kept its prefix: ${proxy.seen.join(" ")}`,
  );
});

Deno.test("a tty program's piped stdin, closed, ends its input: cat and read finish", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  const cat = new RemoteCommand(conn, "cat", { tty: true, stdin: "piped" }).spawn();
  await cat.stdin.close();
  const output = await withDeadline(cat.output(), 10_000, "cat under a terminal");
  assert.equal(output.code, 0);
  const reader = new RemoteCommand(conn, "sh", {
    args: ["-c", "read line; echo read-status:$?"],
    tty: true,
    stdin: "piped",
  }).spawn();
  await reader.stdin.close();
  const read = await withDeadline(reader.output(), 10_000, "read under a terminal");
  assert.match(decoder.decode(read.stdout), /read-status:1/);
});

Deno.test("a process the executor times out reports code 124 and the signal that ended it", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  const child = new RemoteCommand(conn, "sh", { args: ["-c", "exec sleep 30"], timeoutMs: 200 })
    .spawn();
  const status = await withDeadline(child.status, 10_000, "status after the timeout");
  assert.deepEqual(status, { success: false, code: 124, signal: "SIGTERM" });
  await child.output();
});

Deno.test("Connection.fs reads, writes, lists and removes files on the executor", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_client_fs_" }));
  try {
    await using server = await serveLocal();
    // The longest connect timeout a timer takes is accepted.
    await using conn = await connect(server.url, { timeoutMs: 2_147_483_647 });
    await conn.fs.mkdir(`${dir}/sub/deeper`, { recursive: true });
    await conn.fs.writeTextFile(`${dir}/sub/a.txt`, "alpha");
    await conn.fs.writeFile(`${dir}/sub/b.bin`, new Uint8Array([0, 255, 7]));
    assert.equal(await conn.fs.readTextFile(`${dir}/sub/a.txt`), "alpha");
    assert.deepEqual(await conn.fs.readFile(`${dir}/sub/b.bin`), new Uint8Array([0, 255, 7]));
    const info = await conn.fs.stat(`${dir}/sub/a.txt`);
    assert.equal(info.isFile, true);
    assert.equal(info.isDirectory, false);
    await Deno.symlink(`${dir}/sub/a.txt`, `${dir}/sub/link`);
    const entries = (await conn.fs.readDir(`${dir}/sub`))
      .sort((a, b) => a.fileName.localeCompare(b.fileName));
    assert.deepEqual(entries.map((e) => [e.fileName, e.isFile, e.isDirectory, e.isSymlink]), [
      ["a.txt", true, false, false],
      ["b.bin", true, false, false],
      ["deeper", false, true, false],
      ["link", false, false, true],
    ]);
    await conn.fs.copy(`${dir}/sub/a.txt`, `${dir}/copy.txt`);
    assert.equal(await conn.fs.readTextFile(`${dir}/copy.txt`), "alpha");
    assert.equal(await conn.fs.realPath(`${dir}/sub/../copy.txt`), `${dir}/copy.txt`);
    await conn.fs.remove(`${dir}/sub`, { recursive: true });
    await assert.rejects(conn.fs.stat(`${dir}/sub`), RpcError);
    await conn.fs.remove(`${dir}/sub`, { recursive: true, force: true });
    // One 16 MiB message carries the base64, and what is written can be read back: exactly
    // DEFAULT_MAX_FILE_BYTES (fs/readFile's limit) fits and reads back; one byte more does not,
    // though its base64 would fit the message (a review wrote 12,582,712 bytes it could not read).
    await conn.fs.writeFile(`${dir}/big`, new Uint8Array(DEFAULT_MAX_FILE_BYTES));
    assert.equal((await conn.fs.readFile(`${dir}/big`)).byteLength, DEFAULT_MAX_FILE_BYTES);
    for (const size of [DEFAULT_MAX_FILE_BYTES + 1, 12 * 1024 * 1024]) {
      await assert.rejects(
        conn.fs.writeFile(`${dir}/big`, new Uint8Array(size)),
        (e: Error) =>
          e instanceof RangeError &&
          new RegExp(
            `${size} bytes do not fit one fs/writeFile message .*at most ` +
              `${DEFAULT_MAX_FILE_BYTES} bytes of data, what fs/readFile returns`,
          ).test(e.message),
      );
    }
    // Text given where bytes go is refused clearly (a JavaScript caller's mistake).
    await assert.rejects(
      conn.fs.writeFile(`${dir}/text`, "hi" as unknown as Uint8Array),
      (e: Error) =>
        e instanceof TypeError &&
        /must be a Uint8Array \(text: use writeTextFile\)/.test(e.message),
    );
    // Another RangeError keeps its own reason.
    await assert.rejects(
      conn.fs.writeFile(`${dir}/small`, new Uint8Array(1), { timeoutMs: -1 }),
      (e: Error) =>
        e instanceof RangeError &&
        /timeoutMs must be a number from 0 to 2147483647/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RemoteFs calls, kill and resize take a signal and a timeout: an executor gone silent does not hold them", async () => {
  await using server = await serveLocal();
  await using proxy = new TcpProxy(Number(new URL(server.url).port));
  const conn = await connect(`ws://127.0.0.1:${proxy.port}`);
  const dir = await Deno.makeTempDir({ prefix: "outpost_client_fs_" });
  try {
    const child = new RemoteCommand(conn, "sleep", { args: ["30"] }).spawn();
    await child.started;
    // An aborted signal: nothing is sent (the write does not happen).
    const aborted = { signal: AbortSignal.abort() };
    const calls: [string, () => Promise<unknown>][] = [
      ["readFile", () => conn.fs.readFile(`${dir}/x`, aborted)],
      ["readTextFile", () => conn.fs.readTextFile(`${dir}/x`, aborted)],
      ["writeFile", () => conn.fs.writeFile(`${dir}/x`, new Uint8Array(1), aborted)],
      ["writeTextFile", () => conn.fs.writeTextFile(`${dir}/x`, "x", aborted)],
      ["mkdir", () => conn.fs.mkdir(`${dir}/d`, { recursive: true, ...aborted })],
      ["stat", () => conn.fs.stat(dir, aborted)],
      ["readDir", () => conn.fs.readDir(dir, aborted)],
      ["remove", () => conn.fs.remove(`${dir}/x`, { force: true, ...aborted })],
      ["copy", () => conn.fs.copy(`${dir}/x`, `${dir}/y`, aborted)],
      ["realPath", () => conn.fs.realPath(dir, aborted)],
      ["kill", () => child.kill("SIGINT", aborted)],
      ["resize", () => child.resize(80, 24, aborted)],
    ];
    for (const [name, call] of calls) {
      await assert.rejects(call(), (e: Error) => e.name === "AbortError", name);
    }
    assert.deepEqual([...Deno.readDirSync(dir)], [], "an aborted call reached the executor");
    // A timeout: the executor goes silent, the call ends in time anyway.
    proxy.silence();
    const started = performance.now();
    await assert.rejects(
      conn.fs.stat(dir, { timeoutMs: 200 }),
      (e: Error) => e.name === "TimeoutError",
    );
    await assert.rejects(
      child.kill("SIGTERM", { timeoutMs: 200 }),
      (e: Error) => e.name === "TimeoutError",
    );
    // A timeout the request would refuse is refused as such: below 0, and
    // past 2^31 - 1 ms, where a timer would fire at once.
    for (const timeoutMs of [-1, 2 ** 31]) {
      await assert.rejects(
        child.kill("SIGTERM", { timeoutMs }),
        (e: Error) =>
          e instanceof RangeError &&
          /timeoutMs must be a number from 0 to 2147483647/.test(e.message),
      );
      await assert.rejects(
        conn.fs.stat(dir, { timeoutMs }),
        (e: Error) => e instanceof RangeError,
      );
    }
    // Also while the start itself is unanswered.
    const unstarted = new RemoteCommand(conn, "sleep", { args: ["30"] }).spawn();
    for (
      const call of [
        () => unstarted.kill("SIGTERM", { timeoutMs: 200 }),
        () => unstarted.resize(80, 24, { timeoutMs: 200 }),
      ]
    ) {
      await assert.rejects(call(), (e: Error) => e.name === "TimeoutError");
    }
    assert.ok(performance.now() - started < 5_000, "the timeouts held");
  } finally {
    proxy.cut();
    await conn.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test('RemoteCommand stdout or stderr "null" is /dev/null on the executor: the program\'s writes succeed and nothing crosses the connection', async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  const noOut = await new RemoteCommand(conn, "sh", {
    args: ["-c", "head -c 1000000 /dev/zero; readlink /proc/self/fd/3 3>&1 >&2"],
    stdout: "null",
  }).output();
  assert.equal(noOut.code, 0);
  assert.equal(decoder.decode(noOut.stderr), "/dev/null\n");
  const noErr = await new RemoteCommand(conn, "sh", {
    args: ["-c", "readlink /proc/self/fd/3 3>&2"],
    stderr: "null",
  }).output();
  assert.equal(decoder.decode(noErr.stdout), "/dev/null\n");
  // Under a terminal the output is one stream: still shown when stdout is piped.
  const tty = await new RemoteCommand(conn, "echo", { args: ["shown"], tty: true, stderr: "null" })
    .output();
  assert.match(decoder.decode(tty.stdout), /shown/);
});

Deno.test("RemoteProcess: cancelling a piped output stream closes the program's pipe on the executor, as for a local child: a program flooding it ends (SIGPIPE) instead of streaming to no one", async () => {
  await using server = await serveLocal();
  await using conn = await connect(server.url);
  for (const pipe of ["stdout", "stderr"] as const) {
    const child = new RemoteCommand(conn, "sh", {
      args: ["-c", pipe === "stdout" ? "exec yes" : "exec yes >&2"],
    }).spawn();
    const reader = child[pipe].getReader();
    assert.equal((await withDeadline(reader.read(), 5_000, "the first output")).done, false);
    await reader.cancel();
    const status = await withDeadline(child.status, 5_000, `the exit after ${pipe}'s cancel`);
    assert.deepEqual(status, { success: false, code: 141, signal: "SIGPIPE" });
    await child[pipe === "stdout" ? "stderr" : "stdout"].cancel();
  }
  // Disposing still kills: its own cancels do not close pipes first.
  const disposed = new RemoteCommand(conn, "sh", { args: ["-c", "exec yes"] }).spawn();
  await disposed.started;
  await disposed[Symbol.asyncDispose]();
  assert.equal((await disposed.status).signal, "SIGKILL");
  // The connection goes on serving.
  const { stdout } = await new RemoteCommand(conn, "echo", { args: ["still here"] }).output();
  assert.equal(decoder.decode(stdout), "still here\n");
});

Deno.test("RemoteProcess stdin errors when the connection closes with no write in flight: an idle writer's closed rejects and its next write is refused, not taken as delivered", async () => {
  await using server = await serveLocal();
  await using proxy = new TcpProxy(Number(new URL(server.url).port));
  await using conn = await connect(`ws://127.0.0.1:${proxy.port}`);
  const child = new RemoteCommand(conn, "cat", { stdin: "piped", stderr: "null" }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(encoder.encode("x"));
  const reader = child.stdout.getReader();
  const echoed = await withDeadline(reader.read(), 5_000, "the echo");
  assert.equal(decoder.decode(echoed.value), "x"); // the write was applied: none is in flight
  proxy.cut();
  await withDeadline(conn.closed, 5_000, "connection closed");
  await withDeadline(
    assert.rejects(writer.closed, /Cannot follow process: the connection closed/),
    5_000,
    "the idle writer's closed",
  );
  await assert.rejects(writer.write(encoder.encode("lost")), RelayClosedError);
  await assert.rejects(child.status, RelayClosedError);
  await reader.cancel().catch(() => {});
});

Deno.test("connect's errors show the URL without its query or credentials: a token or signature in it is never in a message", async () => {
  using unused = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = unused.addr.port;
  unused.close(); // nothing listens there now
  const error = await connect(`ws://127.0.0.1:${port}/?token=SECRETQUERY&sig=SECRETSIG`, {
    timeoutMs: 5_000,
  }).catch((e) => e);
  assert.ok(error instanceof RelayClosedError, String(error));
  assert.ok(error.message.startsWith(`Cannot connect to ws://127.0.0.1:${port}/: `), error.message);
  assert.doesNotMatch(error.message, /SECRET/);
});

Deno.test("Connection requests fail with RelayClosedError once the server goes away", async () => {
  const server = await serveLocal();
  await using conn = await connect(server.url);
  await server.close();
  await withDeadline(conn.closed, 5000, "connection closed");
  await assert.rejects(conn.request("environment/info"), RelayClosedError);
});

Deno.test("connect validates its URL and times out a silent server", async () => {
  await assert.rejects(connect("not a url"), TypeError);
  await assert.rejects(connect("ftp://127.0.0.1/"), /scheme ftp: is not ws or wss/);
  await assert.rejects(connect("ws://127.0.0.1:1", { executorId: "a/b" }), TypeError);
  for (const timeoutMs of [0, -1, NaN, Infinity, 2_147_483_648]) {
    await assert.rejects(
      connect("ws://127.0.0.1:1", { timeoutMs }),
      (e: Error) =>
        e instanceof RangeError && /timeoutMs .* is not a finite number/.test(e.message),
      `timeoutMs ${timeoutMs}`,
    );
  }
  for (const maxInboxBytes of [0, -1, NaN, Infinity]) {
    await assert.rejects(
      connect("ws://127.0.0.1:1", { maxInboxBytes }),
      (e: Error) =>
        e instanceof RangeError && /maxInboxBytes .* is not a finite number/.test(e.message),
      `maxInboxBytes ${maxInboxBytes}`,
    );
  }
  // Refused before any socket opens: nothing listens on port 1, so a check
  // made after connecting would fail with a connection error instead.
  for (const detachWindowMs of [0, -5, 1.5, NaN, 2_147_483_648]) {
    await assert.rejects(
      connect("ws://127.0.0.1:1", { executorId: "e", detachWindowMs }),
      (e: Error) =>
        e instanceof RangeError && /detachWindowMs .* is not an integer from 1 to/.test(e.message),
      `detachWindowMs ${detachWindowMs}`,
    );
  }
  // At the limit the value passes, and the connect fails only at the socket.
  await assert.rejects(
    connect("ws://127.0.0.1:1", { executorId: "e", detachWindowMs: 2_147_483_647 }),
    (e: Error) => !(e instanceof RangeError),
  );
  // A TCP listener that never answers the WebSocket handshake.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) accepted.push(conn);
  })();
  const port = (listener.addr as Deno.NetAddr).port;
  await assert.rejects(connect(`ws://127.0.0.1:${port}`, { timeoutMs: 200 }), /200 ms/);
  listener.close();
  await accepting;
  for (const conn of accepted) conn.close();
});

Deno.test("connect with an executor id to a serve URL fails at once with a clear error", async () => {
  await using server = await serveLocal();
  const started = performance.now();
  await assert.rejects(
    connect(server.url, { executorId: "box-1", token: SERVER_TOKEN, timeoutMs: 10_000 }),
    /HTTP 404\); for a local executor \(outpost serve\), connect without an executor id/,
  );
  assert.ok(performance.now() - started < 5_000, "refused at once, not at the deadline");
});

Deno.test("connect without an executor id to a rendezvous URL says it needs one", async () => {
  await using rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  await assert.rejects(
    connect(rendezvous.url, { token: SERVER_TOKEN }),
    /: no executor answers there \(HTTP 404\); a rendezvous URL needs an executor id \(--executor-id\)$/,
  );
});

Deno.test("connect that times out on an open socket blames the executor, not the server", async () => {
  // Within its startup grace a rendezvous holds the stream for an executor
  // that never came: the socket opened, only initialize goes unanswered.
  // The timeout leaves the socket room to open on a loaded machine (else the
  // error would rightly blame the server instead).
  const timeoutMs = 1_000;
  await using rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  const started = performance.now();
  await assert.rejects(
    connect(rendezvous.url, { executorId: "box-ghost", token: SERVER_TOKEN, timeoutMs }),
    /^TimeoutError: Cannot connect to 127\.0\.0\.1:\d+: the executor box-ghost did not answer initialize within 1000 ms \(it may be offline or not yet connected to the rendezvous\)$/,
  );
  // Gives up at the deadline: no graceful close waiting for acks nobody sends
  // (that waits up to the stream's 5 s close timeout).
  assert.ok(performance.now() - started < 4_000, `took ${performance.now() - started} ms`);
  // A local socket that opens and then stays silent.
  const sockets: WebSocket[] = [];
  await using silent = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    sockets.push(socket);
    return response;
  });
  await assert.rejects(
    connect(`ws://127.0.0.1:${silent.addr.port}`, { timeoutMs }),
    /^TimeoutError: Cannot connect to 127\.0\.0\.1:\d+: the executor did not answer initialize within 1000 ms$/,
  );
  await until(() => sockets.every((s) => s.readyState === WebSocket.CLOSED), 5_000, "closed");
});

Deno.test("connect through a rendezvous runs a command on an executor", async () => {
  await using rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  await using executor = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-client",
    token: SERVER_TOKEN,
  });
  await until(() => executor.status === "connected", 10_000, "executor connected");
  await using conn = await connect(rendezvous.url, {
    executorId: "box-client",
    token: SERVER_TOKEN,
  });
  assert.equal(conn.mode, "rendezvous");
  assert.match(conn.url, /\/harness\/box-client\?role=harness$/);
  const output = await new RemoteCommand(conn, "sh", { args: ["-c", "printf relay"] }).output();
  assert.equal(decoder.decode(output.stdout), "relay");
  assert.equal(output.code, 0);
  await pipeThroughCat(conn, 4 * 1024 * 1024);
  const refused = await connect(rendezvous.url, {
    executorId: "box-client",
    token: "wrong-token-0123456789abc",
  }).catch((e) => e);
  assert.ok(refused instanceof RelayClosedError, String(refused));
  assert.match(refused.message, /the rendezvous refused the token \(HTTP 403\)/);
  // What the rendezvous answered, for a harness to act on without parsing the message.
  assert.deepEqual(refused.refusal, {
    status: 403,
    code: "forbidden",
    message: "Cannot open harness socket: the token is not valid",
  });
});

Deno.test("connect names the limit a rendezvous answered 503 for, from its code", async () => {
  await using rendezvous = await serveRendezvous({ token: SERVER_TOKEN, maxHarnessSockets: 1 });
  await using executor = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-full",
    token: SERVER_TOKEN,
  });
  await until(() => executor.status === "connected", 10_000, "executor connected");
  // At the limit: the one harness socket allowed.
  await using first = await connect(rendezvous.url, {
    executorId: "box-full",
    token: SERVER_TOKEN,
  });
  assert.equal(first.mode, "rendezvous");
  // One past it.
  const refused = await connect(rendezvous.url, { executorId: "box-full", token: SERVER_TOKEN })
    .catch((e) => e);
  assert.ok(refused instanceof RelayClosedError, String(refused));
  assert.match(
    refused.message,
    /: the rendezvous holds as many harness sockets for this executor as it allows \(HTTP 503 too_many_harness_sockets\)$/,
  );
  assert.equal(refused.refusal?.code, "too_many_harness_sockets");
});

Deno.test("connect resumes its stream after the harness socket is cut mid-transfer", async () => {
  await using rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  await using executor = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-resume",
    token: SERVER_TOKEN,
  });
  await until(() => executor.status === "connected", 10_000, "executor connected");
  await using proxy = new TcpProxy(Number(new URL(rendezvous.url).port));
  const events: string[] = [];
  await using conn = await connect(`ws://127.0.0.1:${proxy.port}`, {
    executorId: "box-resume",
    token: SERVER_TOKEN,
    onEvent: (event) => events.push(event.type),
  });
  const total = 8 * 1024 * 1024;
  const child = new RemoteCommand(conn, "sh", {
    args: ["-c", `head -c ${total} /dev/zero | tr '\\0' 'x'`],
  }).spawn();
  let received = 0;
  let cut = false;
  let intact = true;
  for await (const chunk of child.stdout) {
    received += chunk.byteLength;
    if (!chunk.every((b) => b === 120)) intact = false;
    if (!cut && received >= 1024 * 1024) cut = proxy.cut() > 0;
  }
  const status = await withDeadline(child.status, 20_000, "status");
  assert.ok(cut, "the harness socket was cut");
  assert.equal(received, total);
  assert.ok(intact);
  assert.equal(status.code, 0);
  assert.ok(events.includes("disconnected"));
  assert.ok(events.includes("reconnected"));
  await child.output();
});

Deno.test("connect says why it closed when the rendezvous stays unreachable past the detach window", async () => {
  const rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  await using executor = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-gone",
    token: SERVER_TOKEN,
  });
  await until(() => executor.status === "connected", 10_000, "executor connected");
  await using conn = await connect(rendezvous.url, {
    executorId: "box-gone",
    token: SERVER_TOKEN,
    detachWindowMs: 500,
  });
  const child = new RemoteCommand(conn, "sleep", { args: ["30"] }).spawn();
  await child.started;
  await rendezvous.close();
  await assert.rejects(
    withDeadline(child.status, 10_000, "status"),
    /the connection closed: detach_expired: the rendezvous could not be reached again within 500 ms/,
  );
  assert.match(conn.closeReason ?? "", /^detach_expired: /);
});

/**
 * A rendezvous with executor `executorId` connected to it, and a
 * PathPrefixProxy under `/p` in front of it for the harness to connect
 * through (`rig.proxy.url`), whose faults the test sets.
 */
async function executorBehindProxy(
  executorId: string,
): Promise<{ proxy: PathPrefixProxy } & AsyncDisposable> {
  const proxy = new PathPrefixProxy("/p");
  const rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  proxy.upstreamPort = Number(new URL(rendezvous.url).port);
  const executor = runExecutor({
    registry: rendezvous.registryUrl,
    executorId,
    token: SERVER_TOKEN,
  });
  const dispose = async (): Promise<void> => {
    await executor[Symbol.asyncDispose]();
    await rendezvous[Symbol.asyncDispose]();
    await proxy[Symbol.asyncDispose]();
  };
  try {
    await until(() => executor.status === "connected", 10_000, "executor connected");
  } catch (error) {
    await dispose();
    throw error;
  }
  return { proxy, [Symbol.asyncDispose]: dispose };
}

Deno.test("connect backs off, and gives up at the detach window, when every new socket closes as it opens", async () => {
  await using rig = await executorBehindProxy("box-flap");
  const proxy = rig.proxy;
  let reconnected = 0;
  await using conn = await connect(proxy.url, {
    executorId: "box-flap",
    token: SERVER_TOKEN,
    detachWindowMs: 3_000,
    onEvent: (event) => {
      if (event.type === "reconnected") reconnected++;
    },
  });
  const child = new RemoteCommand(conn, "sleep", { args: ["30"] }).spawn();
  await child.started;
  proxy.acceptAndDrop = true;
  const before = proxy.upgrades;
  proxy.cut();
  await assert.rejects(withDeadline(child.status, 15_000, "status"), /detach_expired/);
  assert.match(conn.closeReason ?? "", /^detach_expired: /);
  // 100 ms doubling while the sockets keep dropping: a handful in 3 s, where it used to reconnect
  // at once, 500-1,200 times a second, and never give up.
  const sockets = proxy.upgrades - before;
  assert.ok(sockets >= 2 && sockets <= 12, `${sockets} sockets in the window`);
  assert.ok(reconnected <= sockets);
});

Deno.test("connect makes its last reconnect attempt LAST_ATTEMPT_LEAD_MS before the detach window ends, and none after", async () => {
  await using rig = await executorBehindProxy("box-lead");
  const proxy = rig.proxy;
  const windowMs = 3_000; // a lead of 250 ms is under a quarter of it
  let lostAt: number | undefined;
  /** When each reconnect attempt was planned for, in ms after the loss. */
  const attemptsAt: number[] = [];
  await using conn = await connect(proxy.url, {
    executorId: "box-lead",
    token: SERVER_TOKEN,
    detachWindowMs: windowMs,
    onEvent: (event) => {
      // Events are emitted synchronously, as the client decides: this clock is its clock.
      if (event.type === "disconnected") lostAt ??= performance.now();
      if (event.type === "reconnecting" && lostAt !== undefined) {
        attemptsAt.push(performance.now() - lostAt + event.delayMs);
      }
    },
  });
  const child = new RemoteCommand(conn, "sleep", { args: ["30"] }).spawn();
  await child.started;
  // Every new socket closes as it opens (no frame): the window runs from the first loss.
  proxy.acceptAndDrop = true;
  proxy.cut();
  await assert.rejects(withDeadline(child.status, 15_000, "status"), /detach_expired/);
  const last = Math.max(...attemptsAt);
  const due = windowMs - LAST_ATTEMPT_LEAD_MS;
  // At the lead: the backoff's next wait would overshoot, so the last one is cut to end there.
  assert.ok(Math.abs(last - due) <= 25, `last attempt at ${last.toFixed(0)} ms, due at ${due}`);
  // Past it: no attempt planned later.
  assert.ok(attemptsAt.every((at) => at <= due + 25), `attempts at ${attemptsAt.join(", ")}`);
});

for (const delayMs of [0, 600]) {
  Deno.test(`connect keeps the session, reconnecting no faster than its backoff, when every new socket passes one frame and drops ${delayMs} ms later`, async () => {
    await using rig = await executorBehindProxy("box-one-frame");
    const proxy = rig.proxy;
    await using conn = await connect(proxy.url, {
      executorId: "box-one-frame",
      token: SERVER_TOKEN,
      detachWindowMs: 2_000,
    });
    const child = new RemoteCommand(conn, "sh", {
      args: ["-c", "read line; echo got $line"],
      stdin: "piped",
    })
      .spawn();
    await child.started;
    // Each new socket gets the executor's answer to its resume, then goes: the
    // link is alive, so the session stays past its 2 s window; the backoff
    // (100 ms doubling to 5 s, not reset by sockets that do not stay 5 s) paces it.
    proxy.dropAfterMessagesDown = 1;
    proxy.dropDelayMs = delayMs;
    const before = proxy.upgrades;
    proxy.cut();
    await new Promise((resolve) => setTimeout(resolve, 5_000)); // pacing: an observation window
    const sockets = proxy.upgrades - before;
    assert.ok(sockets >= 2 && sockets <= 10, `${sockets} sockets in 5 s`);
    assert.equal(conn.closeReason, undefined, "the session is kept");
    // The link heals: the session goes on where it was.
    proxy.dropAfterMessagesDown = null;
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode("hello\n"));
    await writer.close();
    const out = await withDeadline(child.output(), 20_000, "the program's answer");
    assert.equal(new TextDecoder().decode(out.stdout), "got hello\n");
  });
}

Deno.test("connect resets its backoff after a socket that stayed up STABLE_SOCKET_MS, not after one a second short of it", async () => {
  await using rig = await executorBehindProxy("box-stable");
  const proxy = rig.proxy;
  let reconnected = 0;
  /** Waits taken because the last socket did not stay up long enough. */
  const flapWaits: number[] = [];
  await using conn = await connect(proxy.url, {
    executorId: "box-stable",
    token: SERVER_TOKEN,
    detachWindowMs: 30_000,
    onEvent: (event) => {
      if (event.type === "reconnected") reconnected++;
      if (event.type === "reconnecting" && /after it opened/.test(event.error?.message ?? "")) {
        flapWaits.push(event.delayMs);
      }
    },
  });
  const child = new RemoteCommand(conn, "sleep", { args: ["30"] }).spawn();
  await child.started;
  proxy.cut(); // the first loss: retried at once
  await until(() => reconnected === 1, 10_000, "the first reconnect");
  assert.deepEqual(flapWaits, []);
  // Pacing, not a wait for an event: how long each socket stays up before its cut.
  await new Promise((resolve) => setTimeout(resolve, STABLE_SOCKET_MS - 1_000));
  proxy.cut(); // short of the limit: a flap, so a backoff wait comes first
  await until(() => reconnected === 2, 10_000, "the second reconnect");
  assert.equal(flapWaits.length, 1, "a socket up less than STABLE_SOCKET_MS is a flap");
  await new Promise((resolve) => setTimeout(resolve, STABLE_SOCKET_MS + 1_000));
  proxy.cut(); // past the limit: the link held, so the backoff starts over and no wait comes first
  await until(() => reconnected === 3, 10_000, "the third reconnect");
  assert.equal(flapWaits.length, 1, "a socket up past STABLE_SOCKET_MS resets the backoff");
  assert.equal(conn.closeReason, undefined);
});

Deno.test("connect gives up at the detach window on a reconnected socket that stays open but brings nothing", async () => {
  await using rig = await executorBehindProxy("box-silent");
  const proxy = rig.proxy;
  await using conn = await connect(proxy.url, {
    executorId: "box-silent",
    token: SERVER_TOKEN,
    detachWindowMs: 2_000,
  });
  const child = new RemoteCommand(conn, "sleep", { args: ["30"] }).spawn();
  await child.started;
  // A front end whose upstream hangs: it takes the socket, answers its pings, passes nothing.
  proxy.holdSilent = true;
  proxy.cut();
  await assert.rejects(withDeadline(child.status, 10_000, "status"), /detach_expired/);
  assert.match(conn.closeReason ?? "", /^detach_expired: .*every socket closed without a frame/);
});

Deno.test("connect keeps a session whose sockets carry output but drop every second, past the detach window", async () => {
  await using rig = await executorBehindProxy("box-drops");
  const proxy = rig.proxy;
  await using conn = await connect(proxy.url, {
    executorId: "box-drops",
    token: SERVER_TOKEN,
    detachWindowMs: 2_000,
  });
  // 12 lines, 0.5 s apart: 6 s, three windows; the socket is cut after every second line.
  const child = new RemoteCommand(conn, "sh", {
    args: ["-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo $i; sleep 0.5; done"],
  }).spawn();
  let text = "";
  let cuts = 0;
  for await (const chunk of child.stdout) {
    text += new TextDecoder().decode(chunk);
    const lines = text.split("\n").length - 1;
    if (lines >= 2 * (cuts + 1) && lines < 12) {
      cuts++;
      proxy.cut();
    }
  }
  assert.equal((await withDeadline(child.status, 10_000, "status")).code, 0);
  assert.equal(text, "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n");
  assert.ok(cuts >= 4, `${cuts} cuts`);
  assert.equal(conn.closeReason, undefined);
});

Deno.test("connect claims no outage while it reconnects, nor after the caller closes it meanwhile", async () => {
  const rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  await using executor = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-away",
    token: SERVER_TOKEN,
  });
  await until(() => executor.status === "connected", 10_000, "executor connected");
  let reconnecting = 0;
  const conn = await connect(rendezvous.url, {
    executorId: "box-away",
    token: SERVER_TOKEN,
    detachWindowMs: 30_000,
    onEvent: (event) => {
      if (event.type === "reconnecting") reconnecting++;
    },
  });
  const child = new RemoteCommand(conn, "sleep", { args: ["30"] }).spawn();
  await child.started;
  await rendezvous.close();
  await until(() => reconnecting > 0, 10_000, "a failed reconnect");
  assert.equal(conn.closeReason, undefined, "still within the window");
  await conn.close();
  const error = await child.status.then(() => undefined, (e: Error) => e);
  assert.ok(error instanceof Error, "the process fails with its connection");
  assert.doesNotMatch(error.message, /detach_expired/);
});

Deno.test("connect replaces a harness socket that went silent without closing, and the session resumes", async () => {
  await using rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  await using executor = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-silent",
    token: SERVER_TOKEN,
  });
  await until(() => executor.status === "connected", 10_000, "executor connected");
  await using proxy = new TcpProxy(Number(new URL(rendezvous.url).port));
  const events: string[] = [];
  await using conn = await connect(`ws://127.0.0.1:${proxy.port}`, {
    executorId: "box-silent",
    token: SERVER_TOKEN,
    idleTimeoutMs: 400,
    onEvent: (event) => events.push(event.type),
  });
  const child = new RemoteCommand(conn, "cat", { stdin: "piped", stdout: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  const reader = child.stdout.getReader();
  const echo = async (text: string): Promise<void> => {
    await writer.write(new TextEncoder().encode(text));
    let got = "";
    while (got.length < text.length) {
      const { value, done } = await withDeadline(reader.read(), 10_000, `echo of ${text}`);
      assert.ok(!done, "stdout ended early");
      got += decoder.decode(value);
    }
    assert.equal(got, text);
  };
  await echo("before\n");
  assert.ok(proxy.silence() > 0);
  // Sent into the silent socket; it arrives once the socket is replaced.
  await echo("after\n");
  assert.ok(events.includes("disconnected"), events.join());
  assert.ok(events.includes("reconnected"), events.join());
  await writer.close();
  reader.releaseLock();
  assert.equal((await withDeadline(child.status, 10_000, "status")).code, 0);
});

/** Counts abort listeners on AbortSignals that are still registered, until disposed. */
function liveAbortListeners(): { readonly count: number } & Disposable {
  const live = new Map<EventTarget, Set<unknown>>();
  const proto = EventTarget.prototype;
  const realAdd = proto.addEventListener;
  const realRemove = proto.removeEventListener;
  const forget = (target: EventTarget, listener: unknown) => live.get(target)?.delete(listener);
  proto.addEventListener = function (this: EventTarget, type, listener, options) {
    if (type === "abort" && this instanceof AbortSignal && listener !== null) {
      if (!live.has(this)) live.set(this, new Set());
      live.get(this)!.add(listener);
      // A once listener leaves when the signal fires.
      if (typeof options === "object" && options.once) {
        realAdd.call(this, type, () => forget(this, listener), { once: true });
      }
    }
    return realAdd.call(this, type, listener, options);
  } as typeof proto.addEventListener;
  proto.removeEventListener = function (this: EventTarget, type, listener, options) {
    if (type === "abort") forget(this, listener);
    return realRemove.call(this, type, listener, options);
  } as typeof proto.removeEventListener;
  return {
    get count() {
      let n = 0;
      for (const listeners of live.values()) n += listeners.size;
      return n;
    },
    [Symbol.dispose]() {
      proto.addEventListener = realAdd;
      proto.removeEventListener = realRemove;
    },
  };
}

Deno.test("connect holds no more abort listeners after 10 reconnects than after 1", async () => {
  await using rendezvous = await serveRendezvous({ token: SERVER_TOKEN });
  await using executor = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-flap",
    token: SERVER_TOKEN,
  });
  await until(() => executor.status === "connected", 10_000, "executor connected");
  await using proxy = new TcpProxy(Number(new URL(rendezvous.url).port));
  using listeners = liveAbortListeners();
  let reconnects = 0;
  await using conn = await connect(`ws://127.0.0.1:${proxy.port}`, {
    executorId: "box-flap",
    token: SERVER_TOKEN,
    onEvent: (event) => {
      if (event.type === "reconnected") reconnects++;
    },
  });
  const flap = async (times: number): Promise<void> => {
    for (let i = 0; i < times; i++) {
      const before = reconnects;
      assert.ok(proxy.cut() > 0);
      await until(() => reconnects > before, 10_000, "reconnected");
      // A request round trip: the reconnect is complete, not just dialed.
      await withDeadline(conn.request("environment/info"), 10_000, "info");
    }
  };
  await flap(1);
  const afterOne = listeners.count;
  await flap(9);
  assert.equal(listeners.count, afterOne, "abort listeners grew with reconnects");
});

Deno.test("connect (local) closes a connection that went silent instead of waiting forever", async () => {
  await using server = await serveLocal();
  await using proxy = new TcpProxy(Number(new URL(server.url).port));
  // Long enough that a stalled loop on a loaded machine does not drop it early.
  await using conn = await connect(`ws://127.0.0.1:${proxy.port}`, { idleTimeoutMs: 1_500 });
  const child = new RemoteCommand(conn, "sh", { args: ["-c", "sleep 30"] }).spawn();
  await child.started;
  assert.ok(proxy.silence() > 0);
  await withDeadline(conn.closed, 10_000, "the silent connection closed");
  await assert.rejects(
    withDeadline(child.status, 10_000, "status"),
    /the connection closed: nothing received for 1500 ms \(no answer to a ping\) \(code 1006\)/,
  );
  assert.match(conn.closeReason ?? "", /^nothing received for 1500 ms/);
});

Deno.test("connect (local) pauses reading for a slow reader: 16 MiB pass through a 100 KB inbox bound, in order, and the connection lives", async () => {
  await using server = await serveLocal();
  // Before reading paused, such an inbox overflowed within the first MiB a
  // reader fell behind (at about 30 MiB/s here, against the program's
  // hundreds). Now the program's output waits on the executor. (Reading
  // pauses at 50 KB, half the bound, and no message is delivered while
  // paused, so the inbox holds at most that plus one ~61 KB message.)
  await using conn = await connect(server.url, { maxInboxBytes: 100_000 });
  const child = new RemoteCommand(conn, "sh", {
    args: ["-c", "head -c 16777216 /dev/zero | tr '\\0' x"],
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  let bytes = 0;
  let wrong = 0;
  await withDeadline(
    (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        bytes += value.byteLength;
        for (const byte of value) if (byte !== 0x78) wrong++;
        // The reader's pace (about 30 MiB/s), not a wait for an event.
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })(),
    60_000,
    "reading 16 MiB slowly",
  );
  assert.equal(bytes, 16777216);
  assert.equal(wrong, 0);
  assert.equal((await child.status).code, 0);
  assert.equal(conn.closeReason, undefined);
  assert.equal((await new RemoteCommand(conn, "true").output()).code, 0);
});

/** A server sending `count` numbered messages of `size` characters as fast as it may. */
function floodingServer(count: number, size: number) {
  const filler = "x".repeat(size - 8);
  let sender: WebSocket | undefined;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onopen = () => {
      sender = socket;
      for (let i = 0; i < count; i++) socket.send(String(i).padStart(8, "0") + filler);
    };
    return response;
  });
  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    /** Bytes the server still holds for the client. */
    get unsent(): number {
      return sender?.bufferedAmount ?? 0;
    },
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

Deno.test("WebSocketChannel (tcp) stops reading at its pause point while nobody reads, and delivers every message after", async () => {
  // 32 MiB sent at once into a channel bounded at 2 MB (reading pauses at
  // 1 MB): more than loopback's socket buffers hold, so the server keeps
  // some while the channel does not read.
  const count = 512;
  await using server = floodingServer(count, 64 * 1024);
  const channel = await openWebSocketChannel(server.url, { maxInboxChars: 2_000_000 });
  try {
    await until(() => server.unsent > 8 * 1024 * 1024, 10_000, "the server holding output back");
    assert.equal(channel.closeReason, undefined);
    const received: string[] = [];
    for await (const message of channel) {
      received.push(message.slice(0, 8));
      if (received.length === count) break;
    }
    assert.deepEqual(received, [...Array(count).keys()].map((i) => String(i).padStart(8, "0")));
    assert.equal(channel.closeReason, undefined);
  } finally {
    await channel.close();
  }
});

Deno.test("WebSocketChannel (tcp) pauses at half maxInboxMessages too: 20,000 tiny messages pass a 100-message bound", async () => {
  const count = 20_000;
  await using server = floodingServer(count, 8);
  const channel = await openWebSocketChannel(server.url, { maxInboxMessages: 100 });
  try {
    let received = 0;
    for await (const message of channel) {
      assert.equal(message, String(received).padStart(8, "0"));
      if (++received === count) break;
    }
    assert.equal(channel.closeReason, undefined);
  } finally {
    await channel.close();
  }
});

Deno.test("WebSocketChannel (tcp) takes a message as large as maxInboxChars and closes on one a byte larger, saying so", async () => {
  for (const [size, closes] of [[100_000, false], [100_001, true]] as const) {
    await using server = floodingServer(1, size);
    const channel = await openWebSocketChannel(server.url, { maxInboxChars: 100_000 });
    try {
      if (closes) {
        await withDeadline(channel.closed, 10_000, "the channel closed");
        assert.equal(
          channel.closeReason,
          "inbox overflow: a message of 100001 bytes is larger than the inbox (100000 bytes)",
        );
      } else {
        const next = await withDeadline(channel[Symbol.asyncIterator]().next(), 10_000, "it");
        assert.equal(next.value.length, size);
      }
    } finally {
      await channel.close();
    }
  }
});

Deno.test("WebSocketChannel (native) cannot pause: past maxInboxChars unread it closes with inbox overflow", async () => {
  await using server = floodingServer(128, 64 * 1024);
  const channel = await openWebSocketChannel(server.url, {
    maxInboxChars: 2_000_000,
    transport: "native",
  });
  await withDeadline(channel.closed, 10_000, "the overflowing channel closed");
  assert.match(channel.closeReason ?? "", /^inbox overflow: the reader fell more than/);
});

for (const transport of ["tcp", "native"] as const) {
  Deno.test(`WebSocketChannel (${transport}) keeps send order while sends wait for the buffer to drain`, async () => {
    const received: string[] = [];
    const count = 120;
    const allReceived = Promise.withResolvers<void>();
    await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (event) => {
        received.push((event.data as string).slice(0, 8));
        if (received.length === count) allReceived.resolve();
      };
      return response;
    });
    const channel = await openWebSocketChannel(`ws://127.0.0.1:${server.addr.port}`, {
      highWaterMark: 1,
      transport,
    });
    try {
      const filler = "x".repeat(256 * 1024);
      const sends: Promise<void>[] = [];
      for (let i = 0; i < count; i++) {
        sends.push(channel.send(String(i).padStart(8, "0") + filler));
        // Let earlier waiting sends and new ones interleave: a new send may
        // find the buffer drained while older ones still wait.
        if (i % 8 === 7) await sends[i - 4];
      }
      await withDeadline(Promise.all(sends), 10_000, "sends");
      await withDeadline(allReceived.promise, 10_000, "all messages received");
      assert.deepEqual(received, [...Array(count).keys()].map((i) => String(i).padStart(8, "0")));
    } finally {
      await channel.close();
    }
  });
}

/**
 * A fake rendezvous on 127.0.0.1 (the far side of the harness socket): every
 * accepted harness socket feeds one executor-side mux whose sessions answer
 * `initialize` and `process/start` and hold `process/read` until the stream
 * ends. With `refuseWith` set, newly accepted sockets instead answer every
 * frame with `reset{refuseWith}`, as the router does for a stream it will not
 * route (`stream_in_use`, `unknown_stream`, ...).
 */
class FakeRendezvous implements AsyncDisposable {
  readonly url: string;
  readonly sockets: RelaySocket[] = [];
  readonly streams: MuxStream[] = [];
  refuseWith: string | undefined;
  /** When set, the session's stream is reset with this reason on `initialize`. */
  resetOnInitialize: string | undefined;
  #mux = new StreamMux({ role: "executor", onStream: (stream) => this.#serve(stream) });
  #server: Deno.HttpServer<Deno.NetAddr>;
  #peers: JsonRpcPeer[] = [];
  #tasks: Promise<void>[] = [];
  #reads: (() => void)[] = [];
  #readCount = 0;

  constructor() {
    this.#server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
      const { socket, response } = Deno.upgradeWebSocket(request);
      const relay = RelaySocket.accept(socket);
      this.sockets.push(relay);
      if (this.refuseWith === undefined) {
        this.#mux.attach(relay);
      } else {
        this.#tasks.push(this.#refuse(relay, this.refuseWith));
      }
      return response;
    });
    this.url = `ws://127.0.0.1:${this.#server.addr.port}`;
  }

  /** Resolves once the far side holds `n` `process/read` requests in total. */
  reads(n: number): Promise<void> {
    if (this.#readCount >= n) return Promise.resolve();
    return new Promise((resolve) => this.#reads.push(() => this.#readCount >= n && resolve()));
  }

  /** Closes every accepted socket (a cut, as seen by the harness). */
  async cut(): Promise<void> {
    await Promise.all(this.sockets.map((socket) => socket.close("cut")));
  }

  async #refuse(relay: RelaySocket, reason: string): Promise<void> {
    for await (const frame of relay) {
      if (frame.body.kind === "reset") continue;
      await relay.send({
        version: 1,
        streamId: frame.streamId,
        ack: 0,
        ackBits: 0,
        body: { kind: "reset", reason },
      }).catch(() => {});
    }
  }

  /** Sends `process/output` notifications of 16 KiB until the session ends. */
  async #flood(peer: JsonRpcPeer, processId: string): Promise<void> {
    const chunk = b64("x".repeat(16 * 1024));
    try {
      for (let seq = 1;; seq++) {
        await peer.notify("process/output", { processId, seq, stream: "stdout", chunk });
      }
    } catch {
      // The session ended.
    }
  }

  #serve(stream: MuxStream): void {
    this.streams.push(stream);
    const peer: JsonRpcPeer = new JsonRpcPeer(stream, {
      onRequest: (method, params, context) => {
        const p = params as Record<string, unknown>;
        if (method === "initialize") {
          if (this.resetOnInitialize !== undefined) stream.reset(this.resetOnInitialize);
          return { sessionId: "fake-session" };
        }
        if (method === "process/start") {
          if ((p.argv as string[])[0] === "flood") {
            this.#tasks.push(this.#flood(peer, p.processId as string));
          }
          return { processId: p.processId };
        }
        if (method === "process/read") {
          this.#readCount++;
          for (const wake of this.#reads) wake();
          return new Promise((resolve) =>
            context.signal.addEventListener("abort", () => resolve(null), { once: true })
          );
        }
        return {};
      },
    });
    this.#peers.push(peer);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#mux.close();
    await Promise.all(this.#peers.map((peer) => peer.close()));
    await this.cut();
    await Promise.all(this.#tasks);
    await this.#server.shutdown();
  }
}

/** Asserts that `error` is the one typed error a reset of the session's stream gives. */
function assertResetError(error: unknown, reason: string): true {
  const reset = error instanceof StreamResetError
    ? error
    : error instanceof RelayClosedError
    ? findCause(error, StreamResetError)
    : undefined;
  assert.ok(
    reset,
    `expected a StreamResetError (or a RelayClosedError caused by one), got ${error}`,
  );
  assert.equal(reset.reason, reason);
  assert.match(
    (error as Error).message,
    new RegExp(`: ${reason}$`),
    "the message names the reason",
  );
  return true;
}

function findCause<T extends Error>(
  error: unknown,
  type: new (...args: never[]) => T,
): T | undefined {
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    if (e instanceof type) return e;
  }
  return undefined;
}

for (const reason of ["executor_disconnected", "unknown_stream", "stream_in_use"]) {
  Deno.test(`connect (rendezvous) fails fast when the relay resets its stream: ${reason}`, async () => {
    await using fake = new FakeRendezvous();
    const events: string[] = [];
    await using conn = await connect(fake.url, {
      executorId: "fake",
      token: SERVER_TOKEN,
      timeoutMs: 5_000,
      onEvent: (event) => events.push(event.type),
    });
    const child = new RemoteCommand(conn, "prog").spawn();
    await withDeadline(child.started, 5_000, "started");
    const pending = conn.request("process/read", { processId: child.id, afterSeq: 0 });
    pending.catch(() => {});
    await withDeadline(fake.reads(1), 5_000, "process/read held");
    fake.streams[0].reset(reason);
    await withDeadline(
      assert.rejects(pending, (error) => assertResetError(error, reason)),
      3_000,
      "pending request rejected",
    );
    await withDeadline(conn.closed, 3_000, "connection closed");
    assert.equal(conn.closeReason, reason);
    await withDeadline(
      assert.rejects(child.status, new RegExp(`connection closed: .*${reason}`)),
      3_000,
      "status rejected",
    );
    await withDeadline(assert.rejects(child.output()), 3_000, "output rejected");
    await assert.rejects(conn.request("environment/info"), (error) => {
      assert.ok(error instanceof RelayClosedError);
      return assertResetError(error, reason);
    });
    assert.deepEqual(events, []);
  });
}

Deno.test("connect (rendezvous) fails fast when its stream is reset after a reconnect and resume", async () => {
  await using fake = new FakeRendezvous();
  const events: string[] = [];
  await using conn = await connect(fake.url, {
    executorId: "fake",
    token: SERVER_TOKEN,
    timeoutMs: 5_000,
    onEvent: (event) => events.push(event.type),
  });
  const child = new RemoteCommand(conn, "prog").spawn();
  await withDeadline(child.started, 5_000, "started");
  const pending = conn.request("process/read", { processId: child.id, afterSeq: 0 });
  pending.catch(() => {});
  await withDeadline(fake.reads(1), 5_000, "process/read held");
  // The router no longer routes the stream to this harness (e.g. another
  // socket holds it): the resume after the reconnect is answered with a reset.
  fake.refuseWith = "stream_in_use";
  await fake.cut();
  await withDeadline(
    assert.rejects(pending, (error) => assertResetError(error, "stream_in_use")),
    5_000,
    "pending request rejected",
  );
  await withDeadline(conn.closed, 3_000, "connection closed");
  assert.equal(conn.closeReason, "stream_in_use");
  await withDeadline(
    assert.rejects(child.status, /connection closed: .*stream_in_use/),
    3_000,
    "status rejected",
  );
  await withDeadline(assert.rejects(child.output()), 3_000, "output rejected");
  assert.ok(events.includes("disconnected"));
  assert.ok(events.includes("reconnected"));
  // No reconnecting after the stream itself ended.
  const accepted = fake.sockets.length;
  await conn.close();
  assert.equal(fake.sockets.length, accepted);
  assert.equal(accepted, 2);
});

for (const reader of ["reading", "not reading"] as const) {
  Deno.test(`connect (rendezvous) fails fast when its stream is reset mid-output, reader ${reader}`, async () => {
    await using fake = new FakeRendezvous();
    await using conn = await connect(fake.url, {
      executorId: "fake",
      token: SERVER_TOKEN,
      timeoutMs: 5_000,
    });
    const child = new RemoteCommand(conn, "flood").spawn();
    await withDeadline(child.started, 5_000, "started");
    let received = 0;
    const flowing = Promise.withResolvers<void>();
    const reading = reader === "reading"
      ? (async () => {
        for await (const chunk of child.stdout) {
          received += chunk.byteLength;
          if (received >= 1024 * 1024) flowing.resolve();
        }
      })()
      : (flowing.resolve(), Promise.resolve());
    reading.catch(() => {});
    await withDeadline(flowing.promise, 5_000, "output flowing");
    fake.streams[0].reset("executor_disconnected");
    await withDeadline(conn.closed, 3_000, "connection closed");
    assert.equal(conn.closeReason, "executor_disconnected");
    await withDeadline(
      assert.rejects(child.status, /connection closed: .*executor_disconnected/),
      3_000,
      "status rejected",
    );
    if (reader === "reading") {
      await withDeadline(assert.rejects(reading, /executor_disconnected/), 3_000, "reader failed");
    } else {
      await withDeadline(assert.rejects(child.output()), 3_000, "output rejected");
    }
  });
}

Deno.test("connect (rendezvous) names the reset reason when the stream is reset before initialize answers", async () => {
  await using fake = new FakeRendezvous();
  fake.resetOnInitialize = "executor_offline";
  await withDeadline(
    assert.rejects(
      connect(fake.url, { executorId: "fake", token: SERVER_TOKEN, timeoutMs: 5_000 }),
      (error) => {
        assert.ok(error instanceof RelayClosedError, `got ${error}`);
        assert.match(error.message, /^Cannot connect to executor fake at 127\.0\.0\.1:\d+: /);
        return assertResetError(error, "executor_offline");
      },
    ),
    3_000,
    "connect rejected",
  );
});

Deno.test("a finished RemoteProcess is not kept alive by its connection while the connection stays open", async () => {
  // A transport whose connection never closes: the far side, scripted.
  const LIB = new URL("../lib/client/remote_process.ts", import.meta.url).href;
  const result = await underFlags(
    ["--allow-read", "--v8-flags=--expose-gc"],
    `import { RemoteProcess } from ${JSON.stringify(LIB)};
const gc = (globalThis as unknown as { gc: () => void }).gc;
const listeners = new Map<string, (method: string, params: unknown) => void>();
const transport = {
  request: (method: string, params: { processId: string }) => {
    if (method === "process/start") {
      queueMicrotask(() => {
        listeners.get(params.processId)?.("process/exited", { seq: 1, exitCode: 0 });
        listeners.get(params.processId)?.("process/closed", { seq: 2 });
      });
    }
    return Promise.resolve({ processId: params.processId });
  },
  subscribeProcess: (id: string, listener: (method: string, params: unknown) => void) => {
    listeners.set(id, listener);
    return () => listeners.delete(id);
  },
  closed: new Promise<void>(() => {}),
};
const refs: WeakRef<RemoteProcess>[] = [];
const stdio = { stdin: "null", stdout: "piped", stderr: "null" } as const;
for (let i = 0; i < 1000; i++) {
  const id = "p" + i;
  const p = new RemoteProcess(transport as never, id, stdio, () => transport.request("process/start", { processId: id }));
  refs.push(new WeakRef(p));
  await p.status;
}
// A WeakRef keeps its target until the current job ends; then a full collection clears it.
await new Promise((resolve) => setTimeout(resolve, 0));
gc();
console.log(JSON.stringify({ collected: refs.filter((ref) => ref.deref() === undefined).length }));`,
  ) as { collected: number };
  // Before the fix each process stayed reachable from the connection's `closed` promise: 0 collected.
  assert.ok(result.collected >= 990, `${result.collected} of 1000 finished processes collected`);
});

Deno.test("the client's gated mux stream keeps the mux's rule: text from the executor that is not UTF-8 gets -32700", async () => {
  const opened = Promise.withResolvers<MuxStream>();
  await using lb = loopback({ onStream: (stream) => opened.resolve(stream) });
  const harness = await lb.harness();
  const peer = new JsonRpcPeer(new GatedChannel(harness.open()));
  try {
    await peer.notify("hello"); // makes the stream known on the far side
    const far = await withDeadline(opened.promise, 10_000, "the stream on the executor side");
    const messages = far[Symbol.asyncIterator]();
    await withDeadline(messages.next(), 10_000, "the hello");
    await far.binary.send(Uint8Array.from([0x7b, 0xff, 0x7d]));
    const reply = JSON.parse((await withDeadline(messages.next(), 10_000, "the refusal")).value);
    assert.equal(reply.id, null, JSON.stringify(reply));
    assert.equal(reply.error.code, -32700, JSON.stringify(reply));
  } finally {
    await peer.close();
  }
});

Deno.test("output received before the connection closed stays readable; the stream then errors with why", async () => {
  await using server = await serveLocal();
  const conn = await connect(server.url);
  // A background child keeps stdout open past the exit, so the output's end
  // (`process/closed`) is still to come when the connection closes.
  const child = new RemoteCommand(conn, "sh", {
    args: ["-c", "echo first; (sleep 30; echo late) & exit 0"],
    stderr: "null",
  }).spawn();
  assert.equal((await child.status).code, 0);
  await conn.close();
  const reader = child.stdout.getReader();
  const first = await withDeadline(reader.read(), 5_000, "the output received before");
  assert.equal(decoder.decode(first.value), "first\n");
  await assert.rejects(
    withDeadline(reader.read(), 5_000, "the end"),
    /Cannot follow process: the connection closed: client_close/,
  );
});

Deno.test("connect takes a harness URL by its path (/harness/{id}) without role=harness", async () => {
  await using rendezvous = await serveRendezvous({ token: "harness-path-token-0123456789" });
  await using handle = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "hp",
    token: "harness-path-token-0123456789",
  });
  await until(() => handle.status === "connected", 10_000, "executor connected");
  await using conn = await connect(`${rendezvous.url}/harness/hp`, {
    token: "harness-path-token-0123456789",
    timeoutMs: 5_000,
  });
  const output = await new RemoteCommand(conn, "sh", { args: ["-c", "echo via-path"] }).output();
  assert.equal(decoder.decode(output.stdout), "via-path\n");
});

Deno.test("connect says a refused signed harness URL was refused, not a token", async () => {
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    return Response.json({ error: { code: "unauthorized", message: "no" } }, { status: 401 });
  });
  const base = `ws://127.0.0.1:${server.addr.port}/harness/box-1?role=harness`;
  await assert.rejects(
    connect(`${base}&sig=${"0".repeat(64)}`, { timeoutMs: 5_000 }),
    /: the rendezvous refused the signed URL \(HTTP 401 unauthorized\); ask the rendezvous for a new one/,
  );
  await assert.rejects(
    connect(base, { timeoutMs: 5_000 }),
    /: the rendezvous requires a token \(HTTP 401\)/,
  );
});
