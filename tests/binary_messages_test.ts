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
  decodeBinaryOutput,
  encodeBinaryOutput,
  isBinaryMessage,
} from "../lib/rpc/binary_messages.ts";
import { runExecutor } from "../lib/server/executor_loop.ts";
import { serveLocal } from "../lib/server/local_server.ts";
import { serveRendezvous } from "../lib/server/rendezvous_server.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { serveExecutor } from "./_support/ws_channel.ts";

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

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return new Uint8Array(digest).toHex();
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
  for (const id of ["p", "😀".repeat(63) + "€", ID_255]) {
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
  const random = new Uint8Array(4 * 1024 * 1024 + 12_345);
  for (let at = 0; at < random.length; at += 65_536) {
    crypto.getRandomValues(random.subarray(at, at + 65_536));
  }
  await using file = await dataFile(random);
  await using rendezvous = await serveRendezvous({ token });
  await using executor = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-binary",
    token,
  });
  await until(() => executor.status === "connected", D, "executor connected");
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
