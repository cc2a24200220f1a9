/**
 * outpost's binary output messages: the codec, the `initialize` negotiation
 * against a real local server and through a real rendezvous, the JSON
 * fallback (Codex harnesses, processIds over 255 UTF-8 bytes), and refusals
 * of binary messages nobody negotiated or that are malformed.
 */
import assert from "node:assert/strict";
import { connect } from "../lib/client/connect.ts";
import { RemoteCommand } from "../lib/client/remote_command.ts";
import { Executor } from "../lib/exec/executor.ts";
import {
  binaryProcessId,
  binaryWriteRequestId,
  decodeBinaryOutput,
  decodeBinaryWrite,
  encodeBinaryOutput,
  encodeBinaryWrite,
  isBinaryMessage,
} from "../lib/rpc/binary_messages.ts";
import { runExecutor } from "../lib/server/executor_loop.ts";
import { serveLocal } from "../lib/server/local_server.ts";
import { serveRendezvous } from "../lib/server/rendezvous_server.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { serveExecutor } from "./_support/ws_channel.ts";
import { sha256 } from "./_process_helpers.ts";

const D = 10_000;
const encoder = new TextEncoder();
/** 255 UTF-8 bytes in 128 characters; "é" is 2 bytes. */
const ID_255 = "é".repeat(127) + "x";
/** 256 UTF-8 bytes in 128 characters: the executor accepts it, a binary message cannot carry it. */
const ID_256 = "é".repeat(128);

interface Json {
  id?: unknown;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { code: number; message: string };
}
interface Output {
  seq: number;
  stream: string;
  chunk: Uint8Array;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

/** Every byte value, many times over, in an order that differs between chunks. */
function pattern(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i ^ (i >> 8)) & 0xff);
}

/** Compares bytes with a short message (deepEqual's diff of large arrays takes minutes). */
function assertBytes(actual: Uint8Array, expected: Uint8Array, label: string): void {
  const at = actual.findIndex((b, i) => b !== expected[i]);
  assert.ok(
    actual.length === expected.length && at === -1,
    `${label}: got ${actual.length} bytes for ${expected.length}, first difference at ${at}`,
  );
}

/** Random bytes (getRandomValues fills at most 64 KiB per call). */
function randomBytes(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let at = 0; at < length; at += 65_536) {
    crypto.getRandomValues(bytes.subarray(at, at + 65_536));
  }
  return bytes;
}

/** An in-process rendezvous with one executor registered and connected as `executorId`. */
async function rendezvousWithExecutor(token: string, executorId: string) {
  const rendezvous = await serveRendezvous({ token });
  const executor = runExecutor({ registry: rendezvous.registryUrl, executorId, token });
  const closeAll = async () => {
    await executor[Symbol.asyncDispose]();
    await rendezvous[Symbol.asyncDispose]();
  };
  try {
    await until(() => executor.status === "connected", D, "executor connected");
  } catch (error) {
    await closeAll();
    throw error;
  }
  return { url: rendezvous.url, [Symbol.asyncDispose]: closeAll };
}

async function dataFile(bytes: Uint8Array) {
  const dir = await Deno.makeTempDir({ prefix: "outpost_binary_" });
  const path = `${dir}/data.bin`;
  await Deno.writeFile(path, bytes);
  return { path, bytes, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** A raw WebSocket JSON-RPC harness that keeps text and binary messages apart. */
class RawClient implements AsyncDisposable {
  readonly json: Json[] = [];
  readonly binary: Uint8Array[] = [];
  #ws: WebSocket;
  #nextId = 1;
  #changed = Promise.withResolvers<void>();
  #closed: Promise<unknown>;

  static async open(url: string): Promise<RawClient> {
    const ws = new WebSocket(url);
    await withDeadline(new Promise((resolve) => (ws.onopen = resolve)), D, "open");
    return new RawClient(ws);
  }

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    this.#closed = new Promise((resolve) => (ws.onclose = resolve));
    ws.onmessage = (event) => {
      if (typeof event.data === "string") this.json.push(JSON.parse(event.data));
      else this.binary.push(new Uint8Array(event.data));
      this.#changed.resolve();
      this.#changed = Promise.withResolvers();
    };
  }

  /** Awaits (with a deadline) until `find` returns something. */
  until<T>(find: () => T | undefined, label: string): Promise<T> {
    return withDeadline(
      (async () => {
        for (let found = find();; found = find()) {
          if (found !== undefined) return found;
          await this.#changed.promise;
        }
      })(),
      D,
      label,
    );
  }

  request(method: string, params?: unknown): Promise<Json> {
    const id = this.#nextId++;
    this.#ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    return this.until(() => this.json.find((m) => m.id === id), `reply to ${method}`);
  }

  async call(method: string, params?: unknown): Promise<Record<string, unknown>> {
    const reply = await this.request(method, params);
    assert.equal(reply.error, undefined, `${method}: ${reply.error?.message}`);
    return reply.result!;
  }

  notify(method: string, params?: unknown): void {
    this.#ws.send(JSON.stringify({ jsonrpc: "2.0", method, params }));
  }

  /** Sends one binary WebSocket message and awaits the next error with id null. */
  refusalOf(bytes: Uint8Array): Promise<Json> {
    const seen = this.json.filter((m) => m.id === null).length;
    this.#ws.send(bytes);
    return this.until(() => this.json.filter((m) => m.id === null)[seen], "id-null error");
  }

  /** Sends one binary WebSocket message. */
  sendBinary(bytes: Uint8Array): void {
    this.#ws.send(bytes);
  }

  /** Sends one binary WebSocket message and awaits the next JSON message with `id`. */
  binaryCall(bytes: Uint8Array, id: number | null): Promise<Json> {
    const seen = this.json.filter((m) => m.id === id).length;
    this.sendBinary(bytes);
    return this.until(() => this.json.filter((m) => m.id === id)[seen], `reply with id ${id}`);
  }

  /** Starts a process and awaits its `process/closed`. */
  async run(processId: string, argv: string[], tty = false): Promise<void> {
    await this.call("process/start", { processId, argv, tty });
    await this.until(() => this.closedOf(processId), `process/closed of ${processId}`);
  }

  closedOf(processId: string): Json | undefined {
    return this.json.find((m) =>
      m.method === "process/closed" && m.params?.processId === processId
    );
  }

  jsonOutput(processId: string): Output[] {
    return this.json
      .filter((m) => m.method === "process/output" && m.params?.processId === processId)
      .map(({ params: p }) => ({
        seq: p!.seq as number,
        stream: p!.stream as string,
        chunk: Uint8Array.fromBase64(p!.chunk as string),
      }));
  }

  binaryOutput(processId: string): Output[] {
    return this.binary.map(decodeBinaryOutput).filter((o) => o.processId === processId);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#ws.close();
    await withDeadline(this.#closed, D, "close");
  }
}

/** Output of one stream, checked to come in strictly increasing seqs. */
function bytesOf(outputs: Output[], stream = "stdout"): Uint8Array {
  outputs.forEach((o, i) => assert.ok(i === 0 || o.seq > outputs[i - 1].seq, "seqs increase"));
  return concat(outputs.filter((o) => o.stream === stream).map((o) => o.chunk));
}

Deno.test("binary output codec round-trips every stream, seq edge and processId size", () => {
  const body = pattern(256);
  // A leading U+FEFF is part of the id (a decoder that drops it would name another process).
  for (const id of ["p", "\uFEFFp", "😀".repeat(63) + "€", ID_255]) {
    const idBytes = binaryProcessId(id);
    assert.ok(idBytes !== null, id);
    for (const stream of ["stdout", "stderr", "pty"] as const) {
      for (const seq of [0, 1, 2 ** 32, 2 ** 53 - 1]) {
        for (const chunk of [body, new Uint8Array(0)]) {
          const message = encodeBinaryOutput(idBytes, seq, stream, chunk);
          assert.equal(message.length, 12 + idBytes.length + chunk.length);
          assert.ok(isBinaryMessage(message));
          assert.deepEqual(decodeBinaryOutput(message), { processId: id, seq, stream, chunk });
        }
      }
    }
  }
  // The documented layout, big-endian seq.
  const one = encodeBinaryOutput(encoder.encode("p"), 0x01_0203_0405, "stderr", Uint8Array.of(9));
  assert.deepEqual([...one], [0, 1, 1, 1, 0, 0, 0, 1, 2, 3, 4, 5, 0x70, 9]);
  assert.equal(binaryProcessId(ID_255)?.length, 255);
  assert.equal(binaryProcessId(ID_256), null);
  assert.equal(binaryProcessId(""), null);
  assert.equal(isBinaryMessage(new Uint8Array(0)), false);
  assert.equal(isBinaryMessage(encoder.encode("{}")), false);
});

Deno.test("encodeBinaryOutput writes the header into the headroom when it fits, else copies", () => {
  const id = binaryProcessId(ID_255)!;
  const header = 12 + id.length; // 267, the process table's headroom
  const body = pattern(1000);
  const expected = encodeBinaryOutput(id, 42, "stdout", body);
  for (const room of [header, header + 5, header - 1]) {
    const buffer = new ArrayBuffer(room + body.length);
    const all = new Uint8Array(buffer).fill(0xaa);
    const chunk = new Uint8Array(buffer, room, body.length);
    chunk.set(body);
    const message = encodeBinaryOutput(id, 42, "stdout", chunk, room);
    assert.deepEqual(message, expected);
    assert.deepEqual(decodeBinaryOutput(message).chunk, body);
    if (room >= header) {
      assert.equal(message.buffer, chunk.buffer, `in place with ${room} bytes of room`);
      assert.equal(message.byteOffset, room - header);
      assert.ok(all.subarray(0, room - header).every((b) => b === 0xaa), "nothing before it");
    } else {
      assert.notEqual(message.buffer, chunk.buffer, "copied when one byte short");
      assert.ok(all.subarray(0, room).every((b) => b === 0xaa), "the headroom is untouched");
    }
  }
  // A headroom claim the chunk's offset cannot back is not trusted.
  const short = new Uint8Array(new ArrayBuffer(body.length + 4), 4, body.length);
  short.set(body);
  const copied = encodeBinaryOutput(id, 42, "stdout", short, header);
  assert.notEqual(copied.buffer, short.buffer);
  assert.deepEqual(copied, expected);
});

Deno.test("decodeBinaryOutput throws a TypeError naming each defect, at and past each limit", () => {
  const good = encodeBinaryOutput(encoder.encode("p1"), 3, "pty", Uint8Array.of(1, 2)); // 16 bytes
  const edit = (at: number, ...values: number[]) => {
    const m = good.slice();
    m.set(values, at);
    return m;
  };
  const refused: [Uint8Array, RegExp][] = [
    [good.subarray(0, 11), /11 bytes is shorter than the 12 byte header/],
    [good.subarray(0, 12), /12 bytes cannot hold a 2 byte processId/],
    [good.subarray(0, 13), /13 bytes cannot hold a 2 byte processId/],
    [edit(0, 1), /first byte 1 is not the marker 0/],
    [edit(1, 2), /kind 2 is not 1 \(output\)/],
    [edit(2, 3), /stream 3 is not 0, 1 or 2/],
    [edit(3, 0), /the processId is empty/],
    [edit(3, 5), /16 bytes cannot hold a 5 byte processId/],
    [edit(4, 0x00, 0x20, 0, 0), /seq is past 2\^53 - 1/],
    [edit(12, 0xff), /the processId is not valid UTF-8/],
    [edit(12, 0xc3), /the processId is not valid UTF-8/],
  ];
  for (const [message, reason] of refused) {
    assert.throws(() => decodeBinaryOutput(message), {
      name: "TypeError",
      message: new RegExp(`^Cannot decode binary output message: ${reason.source}`),
    });
  }
  // One step inside each limit decodes.
  assert.deepEqual(decodeBinaryOutput(good.subarray(0, 14)).chunk, new Uint8Array(0));
  assert.equal(decodeBinaryOutput(edit(3, 4)).processId, "p1\x01\x02");
  assert.equal(
    decodeBinaryOutput(edit(4, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)).seq,
    2 ** 53 - 1,
  );
  assert.equal(decodeBinaryOutput(edit(12, 0xc3, 0xa9)).processId, "é");
});

Deno.test("connect to serveLocal negotiates binary output by default, not when told; output is byte-identical either way", async () => {
  await using file = await dataFile(pattern(256 * 700));
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor });
  for (const binaryOutput of [undefined, false]) {
    await using conn = await connect(
      server.url,
      binaryOutput === undefined ? {} : { binaryOutput },
    );
    assert.equal(conn.binaryOutput, binaryOutput ?? true);
    const seen: Record<string, unknown>[] = [];
    conn.onNotification((method, params) => {
      if (method === "process/output") seen.push(params as Record<string, unknown>);
    });
    const args = ["-c", 'cat "$1"; cat "$1" >&2', "sh", file.path];
    const out = await withDeadline(new RemoteCommand(conn, "sh", { args }).output(), D, "cat");
    assert.equal(out.code, 0);
    assertBytes(out.stdout, file.bytes, "stdout");
    assertBytes(out.stderr, file.bytes, "stderr");
    // Listeners get the JSON form (base64 chunk) whichever way the bytes came.
    const chunks = seen.map((p) => ({ ...p, chunk: Uint8Array.fromBase64(p.chunk as string) }));
    assertBytes(bytesOf(chunks as unknown as Output[], "stderr"), file.bytes, "listener");
  }
});

Deno.test("serveLocal: a Codex harness gets JSON output; an offering one gets binary messages, JSON past 255 id bytes", async () => {
  await using file = await dataFile(pattern(256 * 300));
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor });
  {
    await using codex = await RawClient.open(server.url);
    const init = await codex.call("initialize", { clientName: "codex" });
    assert.deepEqual(Object.keys(init), ["sessionId"]);
    codex.notify("initialized", {});
    await codex.run("p1", ["cat", file.path]);
    assertBytes(bytesOf(codex.jsonOutput("p1")), file.bytes, "JSON output");
    assert.equal(codex.binary.length, 0, "no binary WebSocket message");
  }
  await using c = await RawClient.open(server.url);
  const bad = await c.request("initialize", { binaryOutput: 1 });
  assert.equal(bad.error?.code, -32602);
  assert.match(bad.error!.message, /binaryOutput/);
  const init = await c.call("initialize", { clientName: "t", binaryOutput: true });
  assert.deepEqual(init, { sessionId: init.sessionId, binaryOutput: true });
  c.notify("initialized", {});
  for (const id of ["p1", ID_255]) {
    await c.run(id, ["cat", file.path]);
    const outputs = c.binaryOutput(id);
    assert.ok(outputs.length >= 2, "several chunks");
    assert.ok(outputs.every((o) => o.chunk.length <= 61_173), "read in pieces of 61,173 bytes");
    assert.ok(c.binary.every((m) => m.length <= 61_440), "a message fits one relay segment");
    assertBytes(bytesOf(outputs), file.bytes, `binary output of ${id.length} chars`);
    assert.equal(c.jsonOutput(id).length, 0);
    assert.ok((c.closedOf(id)!.params!.seq as number) > outputs.at(-1)!.seq);
  }
  for (const id of [ID_256, "😀".repeat(128)]) {
    await c.run(id, ["cat", file.path]);
    assertBytes(bytesOf(c.jsonOutput(id)), file.bytes, `JSON fallback of ${id.length} chars`);
  }
  assert.equal(c.binary.length, c.binaryOutput("p1").length + c.binaryOutput(ID_255).length);
  await c.run("tty", ["printf", "pty-ok"], true);
  const pty = c.binaryOutput("tty");
  assert.ok(pty.length > 0 && pty.every((o) => o.stream === "pty"), "pty output is stream 2");
  assert.match(new TextDecoder().decode(bytesOf(pty, "pty")), /pty-ok/);
});

Deno.test("an executor channel without a binary lane declines the offer and sends JSON", async () => {
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = serveExecutor(executor);
  await using c = await RawClient.open(server.url);
  const init = await c.call("initialize", { binaryOutput: true });
  assert.deepEqual(Object.keys(init), ["sessionId"]);
  c.notify("initialized", {});
  await c.run("p", ["printf", "\\000\\377ok"]);
  assert.deepEqual(bytesOf(c.jsonOutput("p")), Uint8Array.of(0, 255, 111, 107));
  assert.equal(c.binary.length, 0);
});

Deno.test("serveLocal refuses binary messages from a harness with -32600, at and past the size limit, and keeps serving", async () => {
  await using executor = new Executor({ sessionTtlMs: 0, maxMessageBytes: 1024 });
  await using server = await serveLocal({ executor });
  await using c = await RawClient.open(server.url);
  const shaped = (size: number) =>
    encodeBinaryOutput(encoder.encode("p"), 1, "stdout", new Uint8Array(size - 13));
  const before = await c.refusalOf(shaped(20));
  assert.equal(before.error?.code, -32600);
  assert.match(before.error!.message, /^Cannot accept binary message: .*not negotiated/);
  const init = await c.call("initialize", { binaryOutput: true });
  assert.equal(init.binaryOutput, true);
  c.notify("initialized", {});
  const atLimit = await c.refusalOf(shaped(1024));
  assert.equal(atLimit.error?.code, -32600);
  assert.match(atLimit.error!.message, /^Cannot accept binary message: .*not negotiated/);
  const past = await c.refusalOf(shaped(1025));
  assert.equal(past.error?.code, -32600);
  assert.match(
    past.error!.message,
    /^Cannot accept binary message: it exceeds the 1024 byte limit/,
  );
  await c.run("p", ["printf", "still"]);
  assert.equal(new TextDecoder().decode(bytesOf(c.binaryOutput("p"))), "still");
});

/** A fake executor (the far side of the client's socket) that scripts binary messages. */
function fakeExecutor(answerBinary: boolean) {
  const received: Json[] = [];
  const sockets: WebSocket[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    sockets.push(socket);
    const reply = (id: unknown, result: unknown) =>
      socket.send(JSON.stringify({ jsonrpc: "2.0", id, result }));
    socket.onmessage = (event) => {
      const m = JSON.parse(event.data as string) as Json;
      received.push(m);
      if (m.method === "initialize") {
        reply(m.id, answerBinary ? { sessionId: "s", binaryOutput: true } : { sessionId: "s" });
      } else if (m.method === "test/send") {
        const ok = encodeBinaryOutput(encoder.encode("p9"), 5, "stderr", Uint8Array.of(0, 255, 10));
        const kind9 = ok.slice();
        kind9[1] = 9;
        socket.send(kind9);
        socket.send(ok);
        reply(m.id, {});
      } else if (m.id !== undefined && m.id !== null) reply(m.id, { echo: m.method });
    };
    return response;
  });
  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    received,
    async [Symbol.asyncDispose]() {
      const closed = sockets.map((s) =>
        s.readyState === WebSocket.CLOSED ? null : new Promise((r) => (s.onclose = r))
      );
      for (const s of sockets) s.close();
      await withDeadline(Promise.all(closed), D, "fake sockets closed");
      await server.shutdown();
    },
  };
}

Deno.test("connect: a malformed binary message from the executor gets -32600 naming the defect; the session goes on", async () => {
  await using fake = fakeExecutor(true);
  await using conn = await connect(fake.url);
  assert.equal(conn.binaryOutput, true);
  assert.equal(fake.received[0].params?.binaryOutput, true, "offered by default");
  const seen: unknown[] = [];
  conn.onNotification((method, params) => seen.push({ method, params }));
  await conn.request("test/send");
  const errors = () => fake.received.filter((m) => m.id === null);
  await until(() => errors().length > 0, D, "error at the fake executor");
  assert.equal(errors()[0].error?.code, -32600);
  assert.match(errors()[0].error!.message, /^Cannot accept binary message: .*kind 9 is not 1/);
  // The well-formed message that followed reached listeners in its JSON form.
  const chunk = Uint8Array.of(0, 255, 10).toBase64();
  const params = { processId: "p9", seq: 5, stream: "stderr", chunk };
  assert.deepEqual(seen, [{ method: "process/output", params }]);
  assert.deepEqual(await conn.request("test/echo"), { echo: "test/echo" });
  assert.equal(errors().length, 1, "only the malformed message was refused");
});

Deno.test("connect: binary messages that were not negotiated are refused with -32600, and the session goes on", async () => {
  await using fake = fakeExecutor(false);
  await using conn = await connect(fake.url);
  assert.equal(conn.binaryOutput, false);
  const seen: unknown[] = [];
  conn.onNotification((method, params) => seen.push({ method, params }));
  await conn.request("test/send");
  const errors = () => fake.received.filter((m) => m.id === null);
  await until(() => errors().length === 2, D, "two errors at the fake executor");
  for (const error of errors()) {
    assert.equal(error.error?.code, -32600);
    assert.match(error.error!.message, /^Cannot accept binary message: .*not negotiated/);
  }
  assert.deepEqual(seen, [], "nothing un-negotiated reached a listener");
  assert.deepEqual(await conn.request("test/echo"), { echo: "test/echo" });
});

Deno.test("connect: a process listener that throws on binary output neither refuses it nor hides it from other listeners", async () => {
  await using fake = fakeExecutor(true);
  await using conn = await connect(fake.url);
  let calls = 0;
  conn.subscribeProcess("p9", () => {
    calls++;
    throw new Error("listener boom");
  });
  const seen: string[] = [];
  conn.onNotification((method) => seen.push(method));
  await conn.request("test/send");
  await until(() => seen.length === 1, D, "the well-formed output reached the other listener");
  assert.equal(calls, 1);
  assert.deepEqual(await conn.request("test/echo"), { echo: "test/echo" });
  const errors = fake.received.filter((m) => m.id === null);
  assert.equal(errors.length, 1, "only the malformed message was refused");
  assert.doesNotMatch(errors[0].error!.message, /listener boom/);
});

Deno.test("connect: binaryOutput is false when the executor does not accept the offer or it is not made", async () => {
  for (const [answerBinary, offer] of [[false, true], [true, false]]) {
    await using fake = fakeExecutor(answerBinary);
    await using conn = await connect(fake.url, { binaryOutput: offer });
    assert.equal(conn.binaryOutput, false);
    assert.equal(fake.received[0].params?.binaryOutput, offer ? true : undefined);
  }
});

Deno.test("connect through a rendezvous carries binary output on the mux stream byte-identical", async () => {
  const token = "binary-test-token-0123456789";
  const random = randomBytes(4 * 1024 * 1024 + 12_345);
  await using file = await dataFile(random);
  await using rendezvous = await rendezvousWithExecutor(token, "box-binary");
  for (const binaryOutput of [true, false]) {
    await using conn = await connect(rendezvous.url, {
      executorId: "box-binary",
      token,
      binaryOutput,
    });
    assert.equal(conn.mode, "rendezvous");
    assert.equal(conn.binaryOutput, binaryOutput);
    const cat = new RemoteCommand(conn, "cat", { args: [file.path] });
    const out = await withDeadline(cat.output(), D, "cat through the rendezvous");
    assert.equal(out.code, 0);
    assert.equal(out.stdout.length, random.length);
    assert.equal(await sha256(out.stdout), await sha256(random));
  }
});

// ---- Binary write requests (kind 2): stdin bytes harness → executor, answered in JSON by id ----

const decoder = new TextDecoder();

/** A kind-2 message for `processId` (its UTF-8 bytes, any length up to 255). */
function writeMessage(
  processId: string,
  requestId: number,
  eof: boolean,
  data: string | Uint8Array,
) {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  return encodeBinaryWrite(encoder.encode(processId), requestId, eof, bytes);
}

/** `message` with `values` written from byte `at` on (a copy). */
function edited(message: Uint8Array, at: number, ...values: number[]): Uint8Array {
  const copy = message.slice();
  copy.set(values, at);
  return copy;
}

/** Request id bytes 4..11 of the header for 2^53 - 1 and for 2^53. */
const ID_MAX = [0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const ID_PAST = [0x00, 0x20, 0, 0, 0, 0, 0, 0];

/** Pipes `data` through a remote `cat` (stdin piped) and collects its output. */
async function throughCat(
  transport: ConstructorParameters<typeof RemoteCommand>[0],
  data: Uint8Array,
) {
  const child = new RemoteCommand(transport, "cat", { stdin: "piped" }).spawn();
  const writing = (async () => {
    const writer = child.stdin.getWriter();
    await writer.write(data);
    await writer.close();
  })();
  const [out] = await withDeadline(Promise.all([child.output(), writing]), D, "cat of stdin");
  return out;
}

/** Asserts that the session still answers a JSON request. */
async function stillServes(c: RawClient, after: string): Promise<void> {
  const info = await c.request("environment/info");
  assert.equal(info.error, undefined, `environment/info after ${after}: ${info.error?.message}`);
  assert.equal(typeof info.result, "object", `environment/info after ${after}`);
}

Deno.test("binary write codec round-trips eof, request id edges, processId sizes and empty data", () => {
  const body = pattern(300);
  for (const id of ["p", "😀".repeat(63) + "€", ID_255]) {
    const idBytes = binaryProcessId(id)!;
    for (const eof of [false, true]) {
      for (const requestId of [0, 1, 2 ** 32, 2 ** 53 - 1]) {
        for (const data of [body, new Uint8Array(0)]) {
          const message = encodeBinaryWrite(idBytes, requestId, eof, data);
          assert.equal(message.length, 12 + idBytes.length + data.length);
          assert.ok(isBinaryMessage(message));
          assert.deepEqual(decodeBinaryWrite(message), { requestId, processId: id, eof, data });
          assert.equal(binaryWriteRequestId(message), requestId);
        }
      }
    }
  }
  // The documented layout: kind 2, flags bit 0 = eof, big-endian request id.
  const one = encodeBinaryWrite(encoder.encode("p"), 0x01_0203_0405, true, Uint8Array.of(9));
  assert.deepEqual([...one], [0, 2, 1, 1, 0, 0, 0, 1, 2, 3, 4, 5, 0x70, 9]);
  assert.equal(encodeBinaryWrite(encoder.encode("p"), 7, false, new Uint8Array(0))[2], 0);
  // The data is copied: the caller may reuse its buffer.
  const data = Uint8Array.of(1, 2, 3);
  const message = encodeBinaryWrite(encoder.encode("p"), 1, false, data);
  data.fill(0);
  assert.deepEqual(decodeBinaryWrite(message).data, Uint8Array.of(1, 2, 3));
});

Deno.test("decodeBinaryWrite throws a TypeError naming each defect, at and past each limit; each decoder refuses the other kind", () => {
  const good = writeMessage("p1", 3, true, Uint8Array.of(1, 2)); // 16 bytes
  const refused: [Uint8Array, RegExp][] = [
    [good.subarray(0, 11), /11 bytes is shorter than the 12 byte header/],
    [good.subarray(0, 12), /12 bytes cannot hold a 2 byte processId/],
    [good.subarray(0, 13), /13 bytes cannot hold a 2 byte processId/],
    [edited(good, 0, 1), /first byte 1 is not the marker 0/],
    [edited(good, 1, 1), /kind 1 is not 2 \(write\)/],
    [edited(good, 1, 3), /kind 3 is not 2 \(write\)/],
    [edited(good, 2, 2), /flags 2 has bits other than eof \(1\)/],
    [edited(good, 2, 3), /flags 3 has bits other than eof \(1\)/],
    [edited(good, 2, 0x80), /flags 128 has bits other than eof \(1\)/],
    [edited(good, 3, 0), /the processId is empty/],
    [edited(good, 3, 5), /16 bytes cannot hold a 5 byte processId/],
    [edited(good, 4, ...ID_PAST), /the request id is past 2\^53 - 1/],
    [edited(good, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), /the request id is past/],
    [edited(good, 12, 0xff), /the processId is not valid UTF-8/],
    [edited(good, 12, 0xc3), /the processId is not valid UTF-8/],
  ];
  for (const [message, reason] of refused) {
    assert.throws(() => decodeBinaryWrite(message), {
      name: "TypeError",
      message: new RegExp(`^Cannot decode binary write message: ${reason.source}`),
    });
  }
  // One step inside each limit decodes.
  assert.deepEqual(decodeBinaryWrite(good.subarray(0, 14)).data, new Uint8Array(0));
  assert.equal(decodeBinaryWrite(edited(good, 2, 0)).eof, false);
  assert.equal(decodeBinaryWrite(edited(good, 2, 1)).eof, true);
  assert.equal(decodeBinaryWrite(edited(good, 3, 4)).processId, "p1\x01\x02");
  assert.equal(decodeBinaryWrite(edited(good, 4, ...ID_MAX)).requestId, 2 ** 53 - 1);
  assert.equal(decodeBinaryWrite(edited(good, 12, 0xc3, 0xa9)).processId, "é");
  // Each decoder names the other's kind.
  assert.throws(() => decodeBinaryOutput(good), {
    name: "TypeError",
    message: /^Cannot decode binary output message: kind 2 is not 1 \(output\)/,
  });
  const output = encodeBinaryOutput(encoder.encode("p1"), 3, "stdout", Uint8Array.of(1, 2));
  assert.throws(() => decodeBinaryWrite(output), {
    name: "TypeError",
    message: /^Cannot decode binary write message: kind 1 is not 2 \(write\)/,
  });
});

Deno.test("binaryWriteRequestId reads the id from a marked kind-2 header even when the rest is malformed, else null", () => {
  const good = writeMessage("p1", 3, false, Uint8Array.of(1, 2));
  const readable: [Uint8Array, number][] = [
    [good, 3],
    [edited(good, 2, 2), 3], // bad flags
    [edited(good, 2, 0xff), 3],
    [good.subarray(0, 12), 3], // the header alone: the processId is cut off
    [good.subarray(0, 13), 3],
    [edited(good, 3, 0), 3], // empty processId
    [edited(good, 3, 200), 3], // a processId longer than the message
    [edited(good, 12, 0xff), 3], // invalid UTF-8
    [edited(good, 4, ...ID_MAX), 2 ** 53 - 1],
    [edited(good, 4, 0, 0, 0, 1, 0, 0, 0, 0), 2 ** 32],
    [edited(good, 4, 0, 0, 0, 0, 0, 0, 0, 0), 0],
  ];
  for (const [message, id] of readable) assert.equal(binaryWriteRequestId(message), id);
  const unreadable: Uint8Array[] = [
    good.subarray(0, 11), // shorter than the header: the id is cut off
    new Uint8Array(0),
    Uint8Array.of(0, 2),
    edited(good, 4, ...ID_PAST), // 2^53
    edited(good, 4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
    edited(good, 1, 1), // kind 1
    edited(good, 1, 3), // a reserved kind
    edited(good, 0, 7), // no marker: not a binary message at all
    encodeBinaryOutput(encoder.encode("p1"), 3, "stdout", Uint8Array.of(1, 2)),
  ];
  for (const message of unreadable) assert.equal(binaryWriteRequestId(message), null);
});

Deno.test("connect to serveLocal negotiates binary input by default, not when told; 1 MiB of stdin through cat is byte-identical", async () => {
  const data = pattern(1024 * 1024 + 7);
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor });
  const cases: [{ binaryInput?: boolean; binaryOutput?: boolean }, boolean, boolean][] = [
    [{}, true, true],
    [{ binaryInput: false }, false, true],
    [{ binaryOutput: false }, true, false], // each direction is offered on its own
  ];
  for (const [options, binaryInput, binaryOutput] of cases) {
    await using conn = await connect(server.url, options);
    assert.equal(conn.binaryInput, binaryInput, JSON.stringify(options));
    assert.equal(conn.binaryOutput, binaryOutput, JSON.stringify(options));
    // Records the pieces remote_process hands to writeStdin (the connection picks the encoding).
    const pieces: { length: number; eof: boolean }[] = [];
    const transport = new Proxy(conn, {
      get(target, key) {
        if (key === "writeStdin") {
          return (id: string, bytes: Uint8Array, eof?: boolean) => {
            pieces.push({ length: bytes.length, eof: eof === true });
            return target.writeStdin(id, bytes, eof);
          };
        }
        const value = Reflect.get(target, key);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const out = await throughCat(transport, data);
    assert.equal(out.code, 0);
    assertBytes(out.stdout, data, `stdout with ${JSON.stringify(options)}`);
    assert.equal(out.stderr.length, 0);
    // 64 KiB pieces (1 MiB is exactly 16 of them), the 7 left over, then an empty eof write.
    const full = { length: 65_536, eof: false };
    assert.deepEqual(pieces, [
      ...Array.from({ length: 16 }, () => full),
      { length: 7, eof: false },
      { length: 0, eof: true },
    ]);
  }
});

Deno.test("serveLocal echoes binaryInput to a harness that offers it, per direction; not to a Codex harness or without a binary lane", async () => {
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor });
  const cases: [Record<string, unknown>, Record<string, unknown>][] = [
    [{ clientName: "codex" }, {}],
    [{ binaryInput: true }, { binaryInput: true }],
    [{ binaryInput: false }, {}],
    [{ binaryOutput: true }, { binaryOutput: true }],
    [{ binaryInput: true, binaryOutput: true }, { binaryOutput: true, binaryInput: true }],
  ];
  for (const [offer, echo] of cases) {
    await using c = await RawClient.open(server.url);
    const init = await c.call("initialize", offer);
    assert.deepEqual(init, { sessionId: init.sessionId, ...echo }, JSON.stringify(offer));
  }
  {
    await using c = await RawClient.open(server.url);
    for (const binaryInput of ["yes", 1, {}]) {
      const bad = await c.request("initialize", { binaryInput });
      assert.equal(bad.error?.code, -32602, JSON.stringify(binaryInput));
      assert.match(bad.error!.message, /binaryInput/);
    }
    assert.equal((await c.call("initialize", { binaryInput: true })).binaryInput, true);
  }
  await using laneless = serveExecutor(executor);
  await using c = await RawClient.open(laneless.url);
  const init = await c.call("initialize", { binaryInput: true, binaryOutput: true });
  assert.deepEqual(Object.keys(init), ["sessionId"]);
});

Deno.test("serveLocal serves binary writes on a negotiated session and answers each in JSON by its id", async () => {
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor });
  await using c = await RawClient.open(server.url);
  // Before initialize nothing is negotiated: refused, by the write's id.
  const early = await c.binaryCall(writeMessage("cat", 70, false, "x"), 70);
  assert.equal(early.error?.code, -32600);
  assert.match(
    early.error!.message,
    /^Cannot accept binary message: binary messages were not negotiated/,
  );
  // A binary WebSocket message that is not outpost's is -32600 whatever its
  // bytes: not UTF-8 text (that -32700 is for a mux stream's text).
  for (const bytes of [[0x7b, 0x7d], [0xff, 0xfe]]) {
    const stray = await c.binaryCall(Uint8Array.from(bytes), null);
    assert.equal(stray.error?.code, -32600, JSON.stringify(stray));
  }
  const init = await c.call("initialize", { clientName: "t", binaryInput: true });
  assert.deepEqual(init, { sessionId: init.sessionId, binaryInput: true });
  // Served like process/write: before `initialized` it gets that method's refusal.
  const pending = await c.binaryCall(writeMessage("cat", 71, false, "x"), 71);
  assert.equal(pending.error?.code, -32600);
  assert.match(pending.error!.message, /process\/write.*must send initialized/);
  c.notify("initialized", {});
  await c.call("process/start", { processId: "cat", argv: ["cat"], pipeStdin: true });
  const text = () => decoder.decode(bytesOf(c.jsonOutput("cat")));

  const hello = await c.binaryCall(writeMessage("cat", 77, false, "hello"), 77);
  assert.deepEqual(hello.result, { status: "accepted" });
  assert.equal(hello.error, undefined);
  await c.until(() => text() === "hello" || undefined, "hello echoed");
  // The largest request id.
  const max = await c.binaryCall(
    writeMessage("cat", 2 ** 53 - 1, false, " \x00world"),
    2 ** 53 - 1,
  );
  assert.deepEqual(max.result, { status: "accepted" });
  await c.until(() => text() === "hello \x00world" || undefined, "world echoed");
  assert.equal(c.binary.length, 0, "binaryOutput was not offered: output stays JSON");
  // eof with data: the bytes are written, then stdin closes and cat ends.
  const eof = await c.binaryCall(writeMessage("cat", 78, true, "!"), 78);
  assert.deepEqual(eof.result, { status: "accepted" });
  await c.until(() => c.closedOf("cat"), "cat closed after eof");
  assert.equal(text(), "hello \x00world!");
  const exited = c.json.find((m) => m.method === "process/exited" && m.params?.processId === "cat");
  assert.equal(exited?.params?.exitCode, 0);

  const after = await c.binaryCall(writeMessage("cat", 79, false, "late"), 79);
  assert.deepEqual(after.result, { status: "stdinClosed" });
  const unknown = await c.binaryCall(writeMessage("nope", 80, false, "x"), 80);
  assert.deepEqual(unknown.result, { status: "unknownProcess" });
  await c.call("process/start", { processId: "nopipe", argv: ["cat"] });
  const nopipe = await c.binaryCall(writeMessage("nopipe", 81, false, "x"), 81);
  assert.deepEqual(nopipe.result, { status: "stdinClosed" });
  await stillServes(c, "the answered writes");

  // Malformed writes with a readable id are refused by that id, naming the defect.
  const good = writeMessage("cat", 0, false, "x");
  const refusedById: [Uint8Array, number, RegExp][] = [
    [edited(good, 2, 2), 82, /flags 2 has bits other than eof/],
    [edited(good, 2, 3), 83, /flags 3 has bits other than eof/],
    [edited(good, 3, 0), 84, /the processId is empty/],
    [edited(good, 3, 200), 85, /16 bytes cannot hold a 200 byte processId/],
    [edited(good, 12, 0xff), 86, /the processId is not valid UTF-8/],
  ];
  for (const [message, id, reason] of refusedById) {
    const reply = await c.binaryCall(edited(message, 4, 0, 0, 0, 0, 0, 0, 0, id), id);
    assert.equal(reply.error?.code, -32600, reason.source);
    assert.match(
      reply.error!.message,
      new RegExp(
        `^Cannot accept binary message: Cannot decode binary write message: ${reason.source}`,
      ),
    );
    await stillServes(c, reason.source);
  }
  // Without a readable id the refusal has id null.
  const refusedNull: [Uint8Array, RegExp][] = [
    [edited(good, 4, ...ID_PAST), /the request id is past 2\^53 - 1/],
    [good.subarray(0, 11), /11 bytes is shorter than the 12 byte header/],
    [encodeBinaryOutput(encoder.encode("cat"), 1, "stdout", Uint8Array.of(1)), /kind 1 is not 2/],
    [edited(good, 1, 3), /kind 3 is not 2/],
    [edited(good, 0, 7), /first byte 7 is not the marker 0/],
  ];
  for (const [message, reason] of refusedNull) {
    const reply = await c.refusalOf(message);
    assert.equal(reply.error?.code, -32600, reason.source);
    assert.match(
      reply.error!.message,
      new RegExp(`^Cannot accept binary message: .*${reason.source}`),
    );
    await stillServes(c, reason.source);
  }
  assert.equal(text(), "hello \x00world!", "no refused write reached a process");
});

Deno.test("serveLocal refuses binary writes on sessions that did not negotiate binaryInput, by the write's id, and keeps serving", async () => {
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor });
  for (const offer of [{ clientName: "codex" }, { binaryOutput: true }, { binaryInput: false }]) {
    const label = JSON.stringify(offer);
    await using c = await RawClient.open(server.url);
    const init = await c.call("initialize", offer);
    assert.equal(init.binaryInput, undefined, label);
    c.notify("initialized", {});
    await c.call("process/start", { processId: "cat", argv: ["cat"], pipeStdin: true });
    for (const id of [90, 0, 2 ** 53 - 1]) {
      const reply = await c.binaryCall(writeMessage("cat", id, false, "lost"), id);
      assert.equal(reply.error?.code, -32600, label);
      assert.match(
        reply.error!.message,
        /^Cannot accept binary message: binary messages were not negotiated/,
      );
      assert.equal(reply.result, undefined);
    }
    const malformed = await c.binaryCall(edited(writeMessage("cat", 91, false, "x"), 2, 2), 91);
    assert.match(malformed.error!.message, /not negotiated/, "not negotiated comes first");
    for (
      const message of [
        edited(writeMessage("cat", 1, false, "x"), 4, ...ID_PAST),
        Uint8Array.of(0, 2, 0),
        encodeBinaryOutput(encoder.encode("cat"), 1, "stdout", Uint8Array.of(1)),
      ]
    ) {
      const reply = await c.refusalOf(message);
      assert.equal(reply.error?.code, -32600, label);
      assert.match(reply.error!.message, /not negotiated/);
    }
    await stillServes(c, `refusals with ${label}`);
    // The refused writes never reached cat; JSON writes still do.
    const json = await c.call("process/write", {
      processId: "cat",
      chunk: encoder.encode("json").toBase64(),
      eof: true,
    });
    assert.deepEqual(json, { status: "accepted" });
    await c.until(() => c.closedOf("cat"), "cat closed");
    const out = c.binary.length > 0 ? bytesOf(c.binaryOutput("cat")) : bytesOf(c.jsonOutput("cat"));
    assert.equal(decoder.decode(out), "json", label);
  }
});

Deno.test("serveLocal: a binary write at the message size limit is served, one byte past it is refused with -32600", async () => {
  await using executor = new Executor({ sessionTtlMs: 0, maxMessageBytes: 1024 });
  await using server = await serveLocal({ executor });
  await using c = await RawClient.open(server.url);
  assert.equal((await c.call("initialize", { binaryInput: true })).binaryInput, true);
  c.notify("initialized", {});
  // wc counts what reaches stdin; its output fits the small limit, unlike an echo.
  await c.call("process/start", { processId: "wc", argv: ["wc", "-c"], pipeStdin: true });
  const header = 12 + 2;
  const atLimit = writeMessage("wc", 5, false, pattern(1024 - header));
  assert.equal(atLimit.length, 1024);
  assert.deepEqual((await c.binaryCall(atLimit, 5)).result, { status: "accepted" });
  const past = writeMessage("wc", 6, false, pattern(1025 - header));
  assert.equal(past.length, 1025);
  c.sendBinary(past);
  const refusal = await c.until(
    () => c.json.find((m) => /exceeds the 1024 byte limit/.test(m.error?.message ?? "")),
    "refusal of the oversized write",
  );
  assert.equal(refusal.error?.code, -32600);
  assert.match(
    refusal.error!.message,
    /^Cannot accept binary message: it exceeds the 1024 byte limit/,
  );
  assert.equal(refusal.id, 6, "an oversized write is refused by its readable id");
  assert.equal(c.json.filter((m) => m.id === 6 && m.result !== undefined).length, 0);
  await stillServes(c, "the oversized write");
  assert.deepEqual((await c.binaryCall(writeMessage("wc", 7, true, ""), 7)).result, {
    status: "accepted",
  });
  await c.until(() => c.closedOf("wc"), "wc closed");
  assert.equal(decoder.decode(bytesOf(c.jsonOutput("wc"))).trim(), String(1024 - header));
});

Deno.test("connection.writeStdin on serveLocal: binary up to 255 processId bytes, JSON past them; stdin arrives either way", async () => {
  const data = pattern(200_000);
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor });
  await using conn = await connect(server.url);
  assert.equal(conn.binaryInput, true);
  const output = new Map<string, Uint8Array[]>();
  const closed = new Set<string>();
  conn.onNotification((method, raw) => {
    const params = raw as { processId: string; chunk?: string };
    if (method === "process/output") {
      output.get(params.processId)?.push(Uint8Array.fromBase64(params.chunk!));
    } else if (method === "process/closed") closed.add(params.processId);
  });
  for (const id of [ID_255, ID_256, "😀".repeat(64)]) {
    output.set(id, []);
    await conn.request("process/start", { processId: id, argv: ["cat"], pipeStdin: true });
    assert.deepEqual(await conn.writeStdin(id, data.subarray(0, 65_536)), { status: "accepted" });
    assert.deepEqual(await conn.writeStdin(id, data.subarray(65_536), true), {
      status: "accepted",
    });
    await until(() => closed.has(id), D, `process/closed of ${encoder.encode(id).length} bytes`);
    assertBytes(concat(output.get(id)!), data, `stdin of a ${encoder.encode(id).length} byte id`);
    assert.deepEqual(await conn.writeStdin(id, Uint8Array.of(1)), { status: "stdinClosed" });
  }
  assert.deepEqual(await conn.writeStdin(ID_256, Uint8Array.of(1)), { status: "stdinClosed" });
  assert.deepEqual(await conn.writeStdin("nobody", Uint8Array.of(1)), { status: "unknownProcess" });
  assert.deepEqual(await conn.writeStdin(ID_256 + "x", Uint8Array.of(1)), {
    status: "unknownProcess",
  });
});

/** A fake executor (the far side of the client's socket) that records how writes arrive. */
function fakeInputExecutor(echo: Record<string, boolean>) {
  const text: Json[] = [];
  const binary: Uint8Array[] = [];
  const sockets: WebSocket[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.binaryType = "arraybuffer";
    sockets.push(socket);
    const send = (message: Record<string, unknown>) =>
      socket.send(JSON.stringify({ jsonrpc: "2.0", ...message }));
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") {
        const message = new Uint8Array(event.data as ArrayBuffer);
        binary.push(message);
        const write = decodeBinaryWrite(message);
        if (write.processId === "refuse") {
          send({ id: write.requestId, error: { code: -32602, message: "refused by the fake" } });
        } else send({ id: write.requestId, result: { status: "accepted" } });
        return;
      }
      const m = JSON.parse(event.data) as Json;
      text.push(m);
      if (m.method === "initialize") send({ id: m.id, result: { sessionId: "s", ...echo } });
      else if (m.id !== undefined) send({ id: m.id, result: { status: "accepted" } });
    };
    return response;
  });
  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    text,
    binary,
    async [Symbol.asyncDispose]() {
      const closed = sockets.map((s) =>
        s.readyState === WebSocket.CLOSED ? null : new Promise((r) => (s.onclose = r))
      );
      for (const s of sockets) s.close();
      await withDeadline(Promise.all(closed), D, "fake sockets closed");
      await server.shutdown();
    },
  };
}

Deno.test("connect: writeStdin is a binary request when negotiated and the processId fits, else JSON base64; ids never collide", async () => {
  const data = Uint8Array.of(0, 255, 10, 13, 0x7b);
  const chunk = data.toBase64();
  const cases: [Record<string, boolean>, { binaryInput?: boolean }, boolean][] = [
    [{ binaryInput: true }, {}, true],
    [{ binaryInput: true }, { binaryInput: false }, false], // not offered
    [{ binaryOutput: true }, {}, false], // declined
  ];
  for (const [echo, options, binary] of cases) {
    const label = JSON.stringify([echo, options]);
    await using fake = fakeInputExecutor(echo);
    await using conn = await connect(fake.url, options);
    assert.equal(conn.binaryInput, binary, label);
    assert.equal(
      fake.text[0].params?.binaryInput,
      options.binaryInput === false ? undefined : true,
    );
    const writes: [string, boolean][] = [["p", false], [ID_255, true], [ID_256, false], [
      ID_256,
      true,
    ]];
    for (const [id, eof] of writes) {
      const bytes = data.slice();
      const reply = conn.writeStdin(id, bytes, eof);
      bytes.fill(0); // copied before writeStdin returned
      assert.deepEqual(await withDeadline(reply, D, "write"), { status: "accepted" }, label);
      assert.deepEqual(await conn.request("test/json"), { status: "accepted" });
    }
    const inBinary = fake.binary.map(decodeBinaryWrite);
    const inJson = fake.text.filter((m) => m.method === "process/write");
    const json = (id: string, eof: boolean) => ({ processId: id, chunk, ...(eof ? { eof } : {}) });
    if (binary) {
      assert.deepEqual(
        inBinary.map(({ processId, eof, data }) => ({ processId, eof, data })),
        [{ processId: "p", eof: false, data }, { processId: ID_255, eof: true, data }],
      );
      assert.deepEqual(inJson.map((m) => m.params), [json(ID_256, false), json(ID_256, true)]);
    } else {
      assert.equal(fake.binary.length, 0, label);
      assert.deepEqual(inJson.map((m) => m.params), writes.map(([id, eof]) => json(id, eof)));
    }
    // Binary and JSON requests draw from one id sequence.
    const ids = [...inBinary.map((w) => w.requestId), ...fake.text.map((m) => m.id)];
    assert.equal(new Set(ids).size, ids.length, `distinct ids ${ids}`);
    if (binary) {
      await assert.rejects(conn.writeStdin("refuse", data), { message: /refused by the fake/ });
      assert.deepEqual(await conn.request("test/after"), { status: "accepted" });
    }
  }
});

Deno.test("connect through a rendezvous carries binary stdin on the mux stream byte-identical", async () => {
  const token = "binary-input-test-token-0123456789";
  const random = randomBytes(3 * 1024 * 1024 + 4_321);
  const digest = await sha256(random);
  await using rendezvous = await rendezvousWithExecutor(token, "box-binary-input");
  for (const binaryInput of [true, false]) {
    await using conn = await connect(rendezvous.url, {
      executorId: "box-binary-input",
      token,
      binaryInput,
    });
    assert.equal(conn.mode, "rendezvous");
    assert.equal(conn.binaryInput, binaryInput);
    assert.equal(conn.binaryOutput, true);
    const out = await throughCat(conn, random);
    assert.equal(out.code, 0);
    assert.equal(out.stdout.length, random.length);
    assert.equal(await sha256(out.stdout), digest, `binaryInput ${binaryInput}`);
  }
});
