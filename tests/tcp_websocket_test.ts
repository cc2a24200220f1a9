import assert from "node:assert/strict";
import { TcpWebSocket, UpgradeRefusedError } from "../lib/relay/_tcp_websocket.ts";
import { withDeadline } from "./_support/deadline.ts";
import { completeHandshake, RawTcpServer } from "./_support/raw_websocket.ts";

const DEADLINE = 5_000;
const utf8 = new TextEncoder();

/** A raw TCP server speaking WebSocket by hand, so tests control every byte. */
class RawWsServer implements AsyncDisposable {
  #raw = new RawTcpServer("/relay?x=1");
  #pending = new Uint8Array(0);

  get url(): string {
    return this.#raw.url;
  }

  /** Accepts one connection and completes the upgrade; resolves with the request head. */
  async accept(): Promise<{ conn: Deno.Conn; request: string }> {
    const conn = await this.#raw.accept();
    return { conn, request: await completeHandshake(conn) };
  }

  /** Reads one client frame, checking that it is masked, and unmasks it. */
  async readFrame(conn: Deno.Conn): Promise<{ fin: boolean; opcode: number; payload: Uint8Array }> {
    const need = async (n: number): Promise<void> => {
      while (this.#pending.length < n) {
        const chunk = new Uint8Array(65536);
        const got = await withDeadline(conn.read(chunk), DEADLINE, "client frame");
        if (got === null) throw new Error("Cannot read frame: connection closed");
        const merged = new Uint8Array(this.#pending.length + got);
        merged.set(this.#pending);
        merged.set(chunk.subarray(0, got), this.#pending.length);
        this.#pending = merged;
      }
    };
    await need(2);
    const b0 = this.#pending[0];
    const b1 = this.#pending[1];
    assert.ok(b1 & 0x80, "client frames are masked");
    let length = b1 & 0x7f;
    let at = 2;
    if (length === 126) {
      await need(4);
      length = (this.#pending[2] << 8) | this.#pending[3];
      at = 4;
    } else if (length === 127) {
      await need(10);
      length = new DataView(this.#pending.buffer).getUint32(6);
      at = 10;
    }
    await need(at + 4 + length);
    const mask = this.#pending.slice(at, at + 4);
    const payload = this.#pending.slice(at + 4, at + 4 + length);
    for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
    this.#pending = this.#pending.slice(at + 4 + length);
    return { fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, payload };
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.#raw[Symbol.asyncDispose]();
  }
}

/** An unmasked server frame. */
function serverFrame(opcode: number, payload: Uint8Array, fin = true, masked = false): Uint8Array {
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const out = new Uint8Array(header + (masked ? 4 : 0) + length);
  out[0] = (fin ? 0x80 : 0) | opcode;
  out[1] = (masked ? 0x80 : 0) | (length < 126 ? length : length < 65536 ? 126 : 127);
  if (header === 4) new DataView(out.buffer).setUint16(2, length);
  if (header === 10) new DataView(out.buffer).setUint32(6, length);
  out.set(payload, header + (masked ? 4 : 0));
  return out;
}

function nextEvent<T extends Event>(ws: TcpWebSocket, type: string): Promise<T> {
  return withDeadline(
    new Promise<T>((resolve) => ws.addEventListener(type, (e) => resolve(e as T), { once: true })),
    DEADLINE,
    `${type} event`,
  );
}

function collectMessages(ws: TcpWebSocket): (string | ArrayBuffer)[] {
  const messages: (string | ArrayBuffer)[] = [];
  ws.addEventListener("message", (e) => messages.push((e as MessageEvent).data));
  return messages;
}

async function openPair(
  server: RawWsServer,
  options: ConstructorParameters<typeof TcpWebSocket>[1] = {},
): Promise<{ ws: TcpWebSocket; conn: Deno.Conn; request: string }> {
  const ws = new TcpWebSocket(server.url, options);
  ws.binaryType = "arraybuffer";
  const opened = nextEvent(ws, "open");
  const { conn, request } = await server.accept();
  await opened;
  return { ws, conn, request };
}

Deno.test("TcpWebSocket sends the upgrade with headers and masks frames sent in one turn as separate messages", async () => {
  await using server = new RawWsServer();
  const { ws, conn, request } = await openPair(server, {
    headers: { authorization: "Bearer t0k" },
  });
  assert.match(request, /^GET \/relay\?x=1 HTTP\/1\.1\r\n/);
  assert.match(request, /\r\nauthorization: Bearer t0k\r\n/i);
  assert.equal(ws.readyState, TcpWebSocket.OPEN);
  const big = new Uint8Array(70_000).map((_, i) => i & 0xff);
  ws.send(new Uint8Array([1, 2, 3]));
  ws.send("héllo");
  ws.send(big);
  assert.equal(ws.bufferedAmount, 3 + utf8.encode("héllo").length + big.length);
  assert.deepEqual(await server.readFrame(conn), {
    fin: true,
    opcode: 2,
    payload: new Uint8Array([1, 2, 3]),
  });
  const text = await server.readFrame(conn);
  assert.equal(text.opcode, 1);
  assert.equal(new TextDecoder().decode(text.payload), "héllo");
  const large = await server.readFrame(conn);
  assert.deepEqual(large.payload, big);
  assert.equal(ws.bufferedAmount, 0);
  conn.close();
  const closed = await nextEvent<CloseEvent>(ws, "close");
  assert.equal(closed.code, 1006);
  assert.equal(closed.wasClean, false);
});

Deno.test("TcpWebSocket masks payloads of every length remainder at every alignment", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server);
  // Lengths 0..80 cover each byte remainder before and after the word loop and
  // each count of words left after the eight-word steps; frames packed one after
  // another in a chunk start at every alignment. Plus a few unaligned large ones.
  const lengths = [...Array.from({ length: 81 }, (_, n) => n), 1021, 4099, 65_537];
  const sent = lengths.map((n, k) => new Uint8Array(n).map((_, i) => (i * 31 + k) & 0xff));
  for (const payload of sent) ws.send(payload);
  for (const payload of sent) {
    const frame = await withDeadline(server.readFrame(conn), DEADLINE, `${payload.length} B frame`);
    assert.equal(frame.opcode, 2);
    assert.deepEqual(frame.payload, payload, `payload of ${payload.length} bytes`);
  }
  conn.close();
  await nextEvent(ws, "close");
});

Deno.test("TcpWebSocket reuses its write buffers across bursts without leaking bytes from an earlier one", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server);
  // Each burst waits for the last to be read, so the writer idles in between
  // and the next burst packs into buffers the earlier one filled. Later
  // bursts are shorter: a stale byte past a frame's end would show.
  for (const [burst, sizes] of [[200_000, 70_000, 3], [50_000, 9, 1], [61_440, 0, 100]].entries()) {
    const sent = sizes.map((n, k) => new Uint8Array(n).fill(burst * 16 + k + 1));
    for (const payload of sent) ws.send(payload);
    for (const payload of sent) {
      const frame = await server.readFrame(conn);
      assert.deepEqual(frame.payload, payload, `burst ${burst}: ${payload.length} B`);
    }
  }
  conn.close();
  await nextEvent(ws, "close");
});

/** The writer's chunk size: its pool holds chunks of this size. */
const CHUNK_BYTES = 256 * 1024;
/** 60 KiB messages: four fit one chunk, so a burst of 4n of them fills n chunks. */
const BURST_MESSAGE = new Uint8Array(60 * 1024);

/**
 * Sends `count` 60 KiB messages in one turn, has the server read them all,
 * and resolves once the writer is idle, with the most write memory the socket
 * kept for reuse meanwhile (sampled after each write).
 */
async function writeBurst(
  ws: TcpWebSocket,
  server: RawWsServer,
  conn: Deno.Conn,
  count: number,
): Promise<number> {
  let peak = 0;
  const idle = withDeadline(
    new Promise<void>((resolve) => {
      ws.ondrain = () => {
        peak = Math.max(peak, ws.retainedWriteBytes);
        // The writer goes idle (trims its pool) in the same turn as its last drain.
        if (ws.bufferedAmount === 0) resolve();
      };
    }),
    DEADLINE,
    "writer idle",
  );
  for (let i = 0; i < count; i++) ws.send(BURST_MESSAGE);
  for (let i = 0; i < count; i++) {
    assert.equal((await server.readFrame(conn)).payload.length, BURST_MESSAGE.length);
  }
  await idle;
  ws.ondrain = null;
  return peak;
}

Deno.test("TcpWebSocket keeps at most 8 write chunks for reuse during a burst", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server);
  // 52 messages (about 3 MiB) fill 13 chunks, each pooled once written.
  assert.equal(await writeBurst(ws, server, conn, 52), 8 * CHUNK_BYTES);
  await closeCleanly(ws, server, conn);
});

Deno.test("TcpWebSocket keeps 2 write chunks once idle: all of a burst that leaves 2, 2 of one that leaves 3 or more", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server);
  assert.equal(ws.retainedWriteBytes, 0, "nothing before the first burst");
  // A burst of n chunks leaves n (up to 9) for the pool when the writer goes idle.
  for (const [chunks, kept] of [[2, 2], [3, 2], [13, 2]]) {
    await writeBurst(ws, server, conn, 4 * chunks);
    assert.equal(ws.retainedWriteBytes, kept * CHUNK_BYTES, `after a burst of ${chunks} chunks`);
  }
  await closeCleanly(ws, server, conn);
});

Deno.test("TcpWebSocket keeps no write chunks once closed", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server);
  await writeBurst(ws, server, conn, 52);
  assert.equal(ws.retainedWriteBytes, 2 * CHUNK_BYTES);
  // The closed socket is still referenced here, as a caller may hold it.
  await closeCleanly(ws, server, conn);
  assert.equal(ws.retainedWriteBytes, 0);
});

Deno.test("TcpWebSocket delivers small, 16-bit and 64-bit length messages, fragments and answers pings", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server);
  const messages = collectMessages(ws);
  const mid = new Uint8Array(1000).fill(7);
  const large = new Uint8Array(100_000).fill(9);
  // All in one write: the client must split them by their headers.
  const parts = [
    serverFrame(2, new Uint8Array([5])),
    serverFrame(1, utf8.encode("text")),
    serverFrame(9, utf8.encode("ping!")),
    serverFrame(2, mid),
    serverFrame(2, utf8.encode("frag-"), false),
    serverFrame(0, utf8.encode("ment"), true),
    serverFrame(2, large),
  ];
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    all.set(part, at);
    at += part.length;
  }
  await conn.write(all.subarray(0, 3)); // a header split across reads
  await conn.write(all.subarray(3));
  const pong = await server.readFrame(conn);
  assert.equal(pong.opcode, 10);
  assert.equal(new TextDecoder().decode(pong.payload), "ping!");
  await withDeadline(
    (async () => {
      while (messages.length < 5) await nextEvent(ws, "message");
    })(),
    DEADLINE,
    "five messages",
  );
  assert.deepEqual(new Uint8Array(messages[0] as ArrayBuffer), new Uint8Array([5]));
  assert.equal(messages[1], "text");
  assert.deepEqual(new Uint8Array(messages[2] as ArrayBuffer), mid);
  assert.equal(new TextDecoder().decode(messages[3] as ArrayBuffer), "frag-ment");
  assert.deepEqual(new Uint8Array(messages[4] as ArrayBuffer), large);
  const closing = nextEvent<CloseEvent>(ws, "close");
  ws.close(1000, "done");
  const close = await server.readFrame(conn);
  assert.equal(close.opcode, 8);
  assert.equal(new DataView(close.payload.buffer).getUint16(0), 1000);
  assert.equal(new TextDecoder().decode(close.payload.subarray(2)), "done");
  await conn.write(serverFrame(8, close.payload));
  const event = await closing;
  assert.deepEqual([event.code, event.reason, event.wasClean], [1000, "done", true]);
  assert.equal(ws.readyState, TcpWebSocket.CLOSED);
});

Deno.test("TcpWebSocket echoes a close the server starts and reports it clean", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server);
  const closing = nextEvent<CloseEvent>(ws, "close");
  const payload = new Uint8Array([0x0f, 0xa0, ...utf8.encode("bye")]); // 4000
  await conn.write(serverFrame(8, payload));
  const echo = await server.readFrame(conn);
  assert.equal(echo.opcode, 8);
  assert.equal(new DataView(echo.payload.buffer).getUint16(0), 4000);
  const event = await closing;
  assert.deepEqual([event.code, event.reason, event.wasClean], [4000, "bye", true]);
});

Deno.test("TcpWebSocket closes with 1002 when the server masks a frame", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server);
  const messages = collectMessages(ws);
  const errored = nextEvent<ErrorEvent>(ws, "error");
  const closing = nextEvent<CloseEvent>(ws, "close");
  await conn.write(serverFrame(2, new Uint8Array([1, 2]), true, true));
  const close = await server.readFrame(conn);
  assert.equal(close.opcode, 8);
  assert.equal(new DataView(close.payload.buffer).getUint16(0), 1002);
  assert.match((await errored).message, /masked/);
  assert.equal((await closing).code, 1006);
  assert.equal(messages.length, 0);
});

Deno.test("TcpWebSocket closes with 1009 past its message limit and serves one at it", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server, { maxMessageBytes: 1000 });
  const messages = collectMessages(ws);
  const closing = nextEvent<CloseEvent>(ws, "close");
  await conn.write(serverFrame(2, new Uint8Array(1000)));
  await conn.write(serverFrame(2, new Uint8Array(1001)));
  const close = await server.readFrame(conn);
  assert.equal(new DataView(close.payload.buffer).getUint16(0), 1009);
  await closing;
  assert.equal(messages.length, 1);
  assert.equal((messages[0] as ArrayBuffer).byteLength, 1000);
});

Deno.test("TcpWebSocket reports a refused upgrade with its status code", async () => {
  await using server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    () => new Response("no", { status: 403 }),
  );
  const ws = new TcpWebSocket(`ws://127.0.0.1:${server.addr.port}/x`);
  const errored = nextEvent<ErrorEvent>(ws, "error");
  const closed = nextEvent<CloseEvent>(ws, "close");
  const event = await errored;
  assert.match(event.message, /Invalid status code: 403/);
  // The event's error carries the refusal, so no listener parses the message.
  assert.ok(event.error instanceof UpgradeRefusedError, String(event.error));
  assert.deepEqual(event.error.refusal, { status: 403 });
  assert.equal((await closed).code, 1006);
  assert.throws(() => new TcpWebSocket("http//nope"), SyntaxError);
  assert.throws(() => new TcpWebSocket("ftp://127.0.0.1/"), SyntaxError);
});

/** The error event of a connection refused with `status` and `body`. */
async function refusedEvent(status: number, body: string): Promise<ErrorEvent> {
  await using server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    () => new Response(body, { status, headers: { "content-type": "application/json" } }),
  );
  const ws = new TcpWebSocket(`ws://127.0.0.1:${server.addr.port}/x`);
  const errored = nextEvent<ErrorEvent>(ws, "error");
  await nextEvent<CloseEvent>(ws, "close");
  return await errored;
}

/** The error message of a connection refused with `status` and `body`. */
async function refusal(status: number, body: string): Promise<string> {
  return (await refusedEvent(status, body)).message;
}

/** A JSON error body of exactly `size` bytes, padded in its message. */
function errorBody(code: string, size: number): string {
  const empty = JSON.stringify({ error: { code, message: "" } });
  return JSON.stringify({ error: { code, message: "m".repeat(size - empty.length) } });
}

Deno.test("TcpWebSocket names a refusal's error code and message from a body of up to 4096 bytes", async () => {
  const atLimit = errorBody("url_expired", 4096);
  assert.equal(new TextEncoder().encode(atLimit).length, 4096);
  assert.match(
    await refusal(401, atLimit),
    new RegExp(`Invalid status code: 401 url_expired: ${"m".repeat(300)}$`),
    "the message is cut at 300 characters",
  );
  // The event's error carries the same pieces.
  assert.deepEqual((await refusedEvent(401, atLimit)).error.refusal, {
    status: 401,
    code: "url_expired",
    message: "m".repeat(300),
  });
  // One byte more is not read whole: no detail rather than a cut guess.
  assert.match(await refusal(401, errorBody("url_expired", 4097)), /Invalid status code: 401$/);
  // The code is cut at 64 characters.
  const code = (n: number) => "c".repeat(n);
  const short = JSON.stringify({ error: { code: code(64), message: "why" } });
  assert.match(await refusal(403, short), new RegExp(`Invalid status code: 403 ${code(64)}: why$`));
  const long = JSON.stringify({ error: { code: code(65), message: "why" } });
  assert.match(await refusal(403, long), new RegExp(`Invalid status code: 403 ${code(64)}: why$`));
  // A message of exactly 300 characters stays whole.
  const whole = JSON.stringify({ error: { code: "x", message: "w".repeat(300) } });
  assert.match(
    await refusal(403, whole),
    new RegExp(`Invalid status code: 403 x: ${"w".repeat(300)}$`),
  );
});

Deno.test("TcpWebSocket drops the connection when the closing handshake times out", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server, { closeTimeoutMs: 50 });
  const closing = nextEvent<CloseEvent>(ws, "close");
  ws.close(1000, "bye");
  assert.equal((await server.readFrame(conn)).opcode, 8);
  const event = await closing; // the server never answers
  assert.deepEqual([event.code, event.wasClean], [1006, false]);
  assert.throws(() => ws.close(1001), DOMException);
});

/** Server frames joined into one buffer, so a test can send them in one write. */
function joined(frames: Uint8Array[]): Uint8Array {
  const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const frame of frames) {
    all.set(frame, at);
    at += frame.length;
  }
  return all;
}

/** A binary message split into frames of the given payload sizes. */
function fragmented(message: Uint8Array, sizes: number[]): Uint8Array[] {
  let at = 0;
  return sizes.map((size, i) => {
    const frame = serverFrame(
      i === 0 ? 2 : 0,
      message.subarray(at, at + size),
      i === sizes.length - 1,
    );
    at += size;
    return frame;
  });
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/**
 * Closes from the client with 1000, answers the close frame (after any pings
 * the liveness check sent first) and asserts that the close was clean.
 */
async function closeCleanly(ws: TcpWebSocket, server: RawWsServer, conn: Deno.Conn): Promise<void> {
  const closing = nextEvent<CloseEvent>(ws, "close");
  ws.close(1000);
  let frame = await server.readFrame(conn);
  while (frame.opcode === 9) frame = await server.readFrame(conn);
  assert.equal(frame.opcode, 8);
  await writeAll(conn, serverFrame(8, new Uint8Array([0x03, 0xe8])));
  assert.equal((await closing).wasClean, true);
}

/** Reads and discards one client frame with a 64-bit length of `payloadBytes`. */
async function skipLargeFrame(conn: Deno.Conn, payloadBytes: number): Promise<void> {
  const buffer = new Uint8Array(1024 * 1024);
  let left = 10 + 4 + payloadBytes; // header, mask, payload
  while (left > 0) {
    const n = await withDeadline(
      conn.read(buffer.subarray(0, Math.min(buffer.length, left))),
      DEADLINE,
      "large client frame",
    );
    if (n === null) throw new Error("Cannot skip frame: connection closed");
    left -= n;
  }
}

Deno.test("TcpWebSocket delivers a message split into 1024 frames and closes with 1009 at 1025", async () => {
  await using server = new RawWsServer();
  const maxMessageBytes = 10_000;
  const { ws, conn } = await openPair(server, { maxMessageBytes });
  const messages = collectMessages(ws);
  const errored = nextEvent<ErrorEvent>(ws, "error");
  const closing = nextEvent<CloseEvent>(ws, "close");
  // 1024 frames of 0..12 bytes (empty ones too), the last filling the message to the byte limit.
  const sizes = Array.from({ length: 1023 }, (_, i) => i % 13);
  sizes.push(maxMessageBytes - sizes.reduce((n, s) => n + s, 0));
  const atLimit = new Uint8Array(maxMessageBytes).map((_, i) => (i * 7 + 3) & 0xff);
  const pastLimit = new Uint8Array(1025).fill(1);
  await writeAll(conn, joined(fragmented(atLimit, sizes)));
  await writeAll(conn, joined(fragmented(pastLimit, new Array(1025).fill(1))));
  // Awaited together, so a missing close fails the test rather than leaving a rejection behind.
  const [close, error] = await Promise.all([server.readFrame(conn), errored, closing]);
  assert.equal(close.opcode, 8);
  assert.equal(new DataView(close.payload.buffer).getUint16(0), 1009);
  assert.match(new TextDecoder().decode(close.payload.subarray(2)), /more than 1024 frames/);
  assert.match(error.message, /a message is split into more than 1024 frames/);
  assert.equal(messages.length, 1);
  assert.deepEqual(new Uint8Array(messages[0] as ArrayBuffer), atLimit);
});

Deno.test("TcpWebSocket delivers fragments that fill its message limit and closes with 1009 one byte past", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server, { maxMessageBytes: 1000 });
  const messages = collectMessages(ws);
  const closing = nextEvent<CloseEvent>(ws, "close");
  // 400 + 300 + 300: the assembly buffer doubles, capped at the limit on the last frame.
  const atLimit = new Uint8Array(1000).map((_, i) => i & 0xff);
  await writeAll(conn, joined(fragmented(atLimit, [400, 300, 300])));
  await writeAll(conn, joined(fragmented(new Uint8Array(1001), [600, 401])));
  const [close] = await Promise.all([server.readFrame(conn), closing]);
  assert.equal(new DataView(close.payload.buffer).getUint16(0), 1009);
  assert.equal(messages.length, 1);
  assert.deepEqual(new Uint8Array(messages[0] as ArrayBuffer), atLimit);
});

Deno.test("TcpWebSocket answers a ping flood during a stalled write with one pong, for the latest ping", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server);
  const messages = collectMessages(ws);
  // The server reads nothing, so this write stalls (loopback buffers took about 2 MiB here).
  const big = new Uint8Array(16 * 1024 * 1024);
  ws.send(big);
  const pings = Array.from(
    { length: 1000 },
    (_, i) => serverFrame(9, new Uint8Array(125).fill(i & 0xff)),
  );
  const latest = new Uint8Array(125).fill(999 & 0xff);
  // A message after the pings: once it arrives, every ping was handled.
  await writeAll(conn, joined([...pings, serverFrame(2, new Uint8Array([1]))]));
  await withDeadline(
    (async () => {
      while (messages.length < 1) await nextEvent(ws, "message");
    })(),
    DEADLINE,
    "message after the pings",
  );
  // Nothing but the stalled message is queued: one pending pong, not 1000 (125,000 bytes).
  assert.equal(ws.bufferedAmount, big.length, "the large write is stalled, no pong queued");
  await skipLargeFrame(conn, big.length);
  const pong = await server.readFrame(conn);
  assert.equal(pong.opcode, 10);
  assert.deepEqual(pong.payload, latest);
  const closing = nextEvent<CloseEvent>(ws, "close");
  ws.close(1000);
  assert.equal((await server.readFrame(conn)).opcode, 8, "the close follows the one pong");
  await conn.write(serverFrame(8, new Uint8Array([0x03, 0xe8])));
  assert.equal((await closing).wasClean, true);
});

Deno.test("TcpWebSocket pings a silent server halfway through idleTimeoutMs and stays open while pongs come back", async () => {
  await using server = new RawWsServer();
  // 1,000 ms leaves the pong 500 ms to come back: the test's server shares
  // this event loop, and a loaded CI machine has stalled it past 100 ms.
  const { ws, conn } = await openPair(server, { idleTimeoutMs: 1_000 });
  let closed = false;
  ws.addEventListener("close", () => closed = true);
  for (let round = 0; round < 3; round++) {
    const frame = await server.readFrame(conn);
    assert.equal(frame.opcode, 9, `round ${round}: a ping`);
    await writeAll(conn, serverFrame(0xa, frame.payload));
  }
  // Three pings answered span more than the whole timeout: the pongs kept it open.
  assert.equal(closed, false);
  assert.equal(ws.readyState, TcpWebSocket.OPEN);
  await closeCleanly(ws, server, conn);
});

Deno.test("TcpWebSocket drops a connection on which nothing arrives within idleTimeoutMs, ping unanswered", async () => {
  await using server = new RawWsServer();
  const openedAt = performance.now();
  const { ws, conn } = await openPair(server, { idleTimeoutMs: 200 });
  const error = nextEvent<ErrorEvent>(ws, "error");
  const closing = nextEvent<CloseEvent>(ws, "close");
  assert.equal((await server.readFrame(conn)).opcode, 9); // left unanswered
  const event = await closing;
  assert.ok(performance.now() - openedAt >= 200, "not before the whole timeout passed");
  assert.deepEqual([event.code, event.wasClean], [1006, false]);
  assert.match((await error).message, /nothing received for 200 ms \(no answer to a ping\)/);
  assert.equal(ws.readyState, TcpWebSocket.CLOSED);
});

/** Blocks this process's event loop: no timer, read or write runs meanwhile. */
function stallEventLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // A synchronous stall, as a long computation on the executor would cause.
  }
}

Deno.test("TcpWebSocket pings first after a stall of its own that outlasted idleTimeoutMs, and stays open on the pong", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server, { idleTimeoutMs: 1_000 });
  stallEventLoop(1_200);
  // The check, due at 500 ms, runs at 1,200: the peer was never asked, so it
  // gets a ping and half the timeout to answer, not a drop.
  const ping = await server.readFrame(conn);
  assert.equal(ping.opcode, 9);
  // A peer far away: its pong takes 250 ms, within the 500 ms the ping is
  // given and past the late check's second look (100 ms). (Paces the peer.)
  await new Promise((resolve) => setTimeout(resolve, 250));
  await writeAll(conn, serverFrame(0xa, ping.payload));
  // Still alive a round later: the next ping arrives.
  assert.equal((await server.readFrame(conn)).opcode, 9);
  assert.equal(ws.readyState, TcpWebSocket.OPEN);
  await closeCleanly(ws, server, conn);
});

Deno.test("TcpWebSocket reads a pong that arrived while its own loop stalled before it drops anything", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server, { idleTimeoutMs: 400 });
  const ping = await server.readFrame(conn);
  assert.equal(ping.opcode, 9);
  await writeAll(conn, serverFrame(0xa, ping.payload));
  // The pong is in the client's receive buffer, unread; the stall passes
  // the drop deadline, and Deno runs the due check before the read.
  stallEventLoop(600);
  assert.equal((await server.readFrame(conn)).opcode, 9, "a later ping: the pong counted");
  assert.equal(ws.readyState, TcpWebSocket.OPEN);
  await closeCleanly(ws, server, conn);
});

Deno.test("TcpWebSocket drops a silent peer within a bound while its own loop keeps running late", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server, { idleTimeoutMs: 400 });
  const openedAt = performance.now();
  let errorMessage = "";
  ws.addEventListener("error", (e) => errorMessage = (e as ErrorEvent).message);
  const closing = nextEvent<CloseEvent>(ws, "close");
  let closedAt = -1;
  ws.addEventListener("close", () => closedAt = performance.now(), { once: true });
  // The peer never answers (its ping stays unread). This process runs in
  // 130 ms blocks, so every liveness check fires late; each late check may
  // look again once, not forever: ping by ~330 ms, drop due by ~530, a late
  // check plus one second look (40 ms) and the stalls around it: under 1 s.
  const deadline = openedAt + 3_000;
  while (closedAt < 0 && performance.now() < deadline) {
    stallEventLoop(130);
    // Let timers and reads run between blocks.
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  const dropped = closedAt >= 0;
  if (!dropped) conn.close(); // ends the socket, so a failure leaves nothing open
  const event = await closing;
  assert.ok(dropped, "dropped within 3,000 ms of silence");
  assert.deepEqual([event.code, event.wasClean], [1006, false]);
  assert.ok(closedAt - openedAt >= 400, "not before the whole timeout passed");
  assert.match(errorMessage, /nothing received for 400 ms \(no answer to a ping\)/);
});

Deno.test("TcpWebSocket counts data as a sign of life: a server that sends but never answers pings stays connected", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server, { idleTimeoutMs: 1_500 });
  const messages = collectMessages(ws);
  // 20 messages 100 ms apart outlast the timeout; pings go unanswered, so
  // only the data can keep the connection. (The pause paces the sender; no
  // timer waits for an event. The gap leaves 1.4 s for a stalled loop.)
  const started = performance.now();
  for (let i = 0; i < 20; i++) {
    await writeAll(conn, serverFrame(2, new Uint8Array([i])));
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(performance.now() - started >= 1_500);
  assert.equal(messages.length, 20);
  assert.equal(ws.readyState, TcpWebSocket.OPEN);
  await closeCleanly(ws, server, conn);
});

Deno.test("TcpWebSocket takes an idleTimeoutMs and a closeTimeoutMs from 0 to 2^31 - 1 and refuses one outside", async () => {
  for (const name of ["idleTimeoutMs", "closeTimeoutMs"]) {
    for (const bad of [-1, 2 ** 31, Infinity, NaN]) {
      assert.throws(
        () => new TcpWebSocket("ws://127.0.0.1:9/", { [name]: bad }),
        new RegExp(`${name} ${bad} is not a number from 0 to 2147483647`),
      );
    }
  }
  // At the bound: taken, and no check fires while the connection is open.
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server, {
    idleTimeoutMs: 2 ** 31 - 1,
    closeTimeoutMs: 2 ** 31 - 1,
  });
  await writeAll(conn, serverFrame(2, new Uint8Array([1])));
  await nextEvent(ws, "message");
  assert.equal(ws.readyState, TcpWebSocket.OPEN);
  await closeCleanly(ws, server, conn);
});

/** A Deno server that sends a numbered message every 50 ms and counts them. */
function countingServer(idleTimeoutSeconds: number) {
  let sent = 0;
  let closed = false;
  const counted = new Map<number, () => void>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request, {
      idleTimeout: idleTimeoutSeconds,
    });
    const timer = setInterval(() => {
      if (socket.readyState !== WebSocket.OPEN) return;
      socket.send(String(sent++));
      counted.get(sent)?.();
    }, 50);
    socket.onclose = () => {
      closed = true;
      clearInterval(timer);
      for (const resolve of counted.values()) resolve();
    };
    return response;
  });
  return {
    url: `ws://127.0.0.1:${server.addr.port}`,
    get closed() {
      return closed;
    },
    /** Resolves once `n` messages went out (or the socket closed). */
    sent: (n: number) =>
      withDeadline(new Promise<void>((r) => counted.set(n, r)), 10_000, `${n} messages sent`),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

Deno.test("TcpWebSocket pauses reading without losing a message, and its heartbeat keeps a Deno server's idle check satisfied meanwhile", async () => {
  // Deno's server pings after half its idleTimeout of silence and closes
  // when no pong comes in the other half: 1 s here. 40 messages take 2 s.
  await using server = countingServer(1);
  const ws = new TcpWebSocket(server.url, { idleTimeoutMs: 400 });
  const messages = collectMessages(ws);
  await nextEvent(ws, "open");
  ws.pauseReading();
  const before = messages.length;
  await server.sent(40);
  assert.equal(server.closed, false, "the server dropped a paused client");
  assert.ok(messages.length - before <= 1, `${messages.length - before} delivered while paused`);
  ws.resumeReading();
  await withDeadline(
    (async () => {
      while (messages.length < 40) await nextEvent(ws, "message");
    })(),
    DEADLINE,
    "every message after resuming",
  );
  assert.deepEqual(messages.slice(0, 40), Array.from({ length: 40 }, (_, i) => String(i)));
  // Closing while paused still completes the closing handshake.
  ws.pauseReading();
  const closed = nextEvent<CloseEvent>(ws, "close");
  ws.close(1000, "done");
  assert.equal((await closed).wasClean, true);
});

Deno.test("TcpWebSocket paused with no heartbeat within the server's idle timeout is dropped by a Deno server", async () => {
  // idleTimeoutMs 0: the paused heartbeat is every 10 s, past the server's 1 s.
  await using server = countingServer(1);
  const ws = new TcpWebSocket(server.url, { idleTimeoutMs: 0 });
  await nextEvent(ws, "open");
  const closed = nextEvent<CloseEvent>(ws, "close");
  ws.pauseReading();
  await server.sent(40);
  assert.equal(server.closed, true);
  // A paused side learns of the close once it reads again.
  ws.resumeReading();
  assert.equal((await closed).code, 1001);
});

Deno.test("TcpWebSocket does not pause once closing: the closing handshake completes at once", async () => {
  await using server = countingServer(30);
  const ws = new TcpWebSocket(server.url);
  await nextEvent(ws, "open");
  const closed = new Promise<CloseEvent>((resolve) =>
    ws.addEventListener("close", (e) => resolve(e as CloseEvent), { once: true })
  );
  ws.close(1000, "bye");
  ws.pauseReading(); // too late: the server's close frame must be read
  // Well before the 5 s close timeout that a paused reader would wait out.
  const event = await withDeadline(closed, 2_500, "the clean close");
  assert.equal(event.wasClean, true);
});

Deno.test("TcpWebSocket resumed and paused again in one turn delivers nothing until resumed for good, then everything in order", async () => {
  await using server = new RawWsServer();
  const { ws, conn } = await openPair(server);
  const messages = collectMessages(ws);
  ws.pauseReading();
  const frames = Array.from({ length: 20 }, (_, i) => serverFrame(1, utf8.encode(`m${i}`)));
  await writeAll(conn, joined(frames));
  for (let i = 0; i < 5; i++) {
    ws.resumeReading();
    ws.pauseReading();
    // Let the read loop run (a turn of the event loop, not a wait for an event).
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  assert.equal(messages.length, 0, "delivered while paused");
  ws.resumeReading();
  await withDeadline(
    (async () => {
      while (messages.length < 20) await nextEvent(ws, "message");
    })(),
    DEADLINE,
    "the 20 messages",
  );
  assert.deepEqual(messages, Array.from({ length: 20 }, (_, i) => `m${i}`));
  await closeCleanly(ws, server, conn);
});
