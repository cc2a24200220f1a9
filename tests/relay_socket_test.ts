// RelaySocket over real loopback WebSockets: Deno.serve for well-behaved
// peers, and a raw TCP server that completes the WebSocket handshake by hand
// for peers that stop reading or never answer.
import assert from "node:assert/strict";
import { ProtocolError, RelayClosedError } from "../lib/errors.ts";
import { encodeFrame, type RelayFrame } from "../lib/relay/frame_codec.ts";
import {
  QUEUED_FRAME_OVERHEAD_BYTES,
  type ReceivedFrame,
  type RelayConnectOptions,
  RelaySocket,
} from "../lib/relay/relay_socket.ts";
import { ByteBudget } from "../lib/_byte_budget.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { dataFrame } from "./_support/frames.ts";
import { completeHandshake, RawTcpServer } from "./_support/raw_websocket.ts";

const DEADLINE = 5_000;
const utf8 = new TextEncoder();

/** A loopback WebSocket server whose upgraded sockets tests take one by one. */
class WsServer implements AsyncDisposable {
  readonly url: string;
  #server: Deno.HttpServer<Deno.NetAddr>;
  #sockets: WebSocket[] = [];
  #waiters: ((socket: WebSocket) => void)[] = [];

  /** Request headers of the latest upgrade. */
  headers: Headers | undefined;

  constructor(onSocket?: (socket: WebSocket) => void) {
    this.#server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, (request) => {
      this.headers = new Headers(request.headers);
      const { socket, response } = Deno.upgradeWebSocket(request);
      onSocket?.(socket);
      const waiter = this.#waiters.shift();
      if (waiter) waiter(socket);
      else this.#sockets.push(socket);
      return response;
    });
    this.url = `ws://127.0.0.1:${this.#server.addr.port}/relay?role=harness`;
  }

  /** The next upgraded socket (server side). */
  next(): Promise<WebSocket> {
    const socket = this.#sockets.shift();
    if (socket) return Promise.resolve(socket);
    return withDeadline(
      new Promise<WebSocket>((resolve) => this.#waiters.push(resolve)),
      DEADLINE,
      "server socket",
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#server.shutdown();
  }
}

async function take(iterator: AsyncIterator<ReceivedFrame>, label: string): Promise<ReceivedFrame> {
  const result = await withDeadline(iterator.next(), DEADLINE, label);
  assert.equal(result.done, false, `${label}: iteration ended early`);
  return result.value;
}

/**
 * Whether `promise` is still pending after `ms`: the one place a test waits a
 * fixed time, because it asserts that something does not happen.
 */
async function stillPending(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(true), ms));
  const settled = promise.then(() => false, () => false);
  try {
    return await Promise.race([pending, settled]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("RelaySocket carries frames both ways and sends the bearer token", async () => {
  await using server = new WsServer();
  const connecting = RelaySocket.connect(server.url, {
    token: "secret-token",
    headers: { "x-outpost-test": "1" },
  });
  const serverRelay = RelaySocket.accept(await server.next());
  await using client = await withDeadline(connecting, DEADLINE, "connect");
  await using _server = serverRelay;
  assert.equal(server.headers?.get("authorization"), "Bearer secret-token");
  assert.equal(server.headers?.get("x-outpost-test"), "1");

  const up = dataFrame("s-1", 1, "hello");
  await client.send(up);
  const serverFrames = serverRelay[Symbol.asyncIterator]();
  const got = await take(serverFrames, "frame at server");
  assert.equal(got.streamId, "s-1");
  assert.deepEqual(got.body, up.body);
  assert.deepEqual(got.bytes, encodeFrame(up));

  // The router path: forward the received bytes untouched.
  await serverRelay.sendBytes(got.bytes);
  const reset: RelayFrame = {
    version: 1,
    streamId: "s-2",
    ack: 7,
    ackBits: 5,
    body: { kind: "reset", reason: "stream_closed" },
    traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
  };
  await serverRelay.send(reset);
  const clientFrames = client[Symbol.asyncIterator]();
  const echoed = await take(clientFrames, "echo at client");
  assert.deepEqual(echoed.bytes, got.bytes);
  const { bytes: _bytes, ...resetGot } = await take(clientFrames, "reset at client");
  assert.deepEqual(resetGot, reset);
});

Deno.test("RelaySocket.accept on a connecting socket holds sends until it opens", async () => {
  let early: Promise<void> | undefined;
  let serverRelay: RelaySocket | undefined;
  await using server = new WsServer((socket) => {
    assert.equal(socket.readyState, WebSocket.CONNECTING);
    serverRelay = RelaySocket.accept(socket);
    early = serverRelay.send(dataFrame("s-1", 1, "sent while connecting"));
  });
  await using client = await RelaySocket.connect(server.url);
  await server.next();
  await using _server = serverRelay!;
  await withDeadline(early!, DEADLINE, "early send");
  const frame = await take(client[Symbol.asyncIterator](), "early frame");
  assert.equal(
    new TextDecoder().decode((frame.body as { payload: Uint8Array }).payload),
    "sent while connecting",
  );
});

Deno.test("RelaySocket drops a text message and garbage bytes and keeps serving", async () => {
  await using server = new WsServer();
  const errors: ProtocolError[] = [];
  const connecting = RelaySocket.connect(server.url, {
    maxFrameBytes: 64,
    onProtocolError: (error) => {
      errors.push(error);
      throw new Error("a failing observer must not hurt the socket");
    },
  });
  const raw = await server.next();
  await using client = await connecting;
  await new Promise((resolve) => {
    if (raw.readyState === WebSocket.OPEN) resolve(undefined);
    else raw.addEventListener("open", resolve, { once: true });
  });
  const overhead = encodeFrame(dataFrame("s-1", 2, new Uint8Array(1))).length - 1;
  const atLimit = encodeFrame(dataFrame("s-1", 2, new Uint8Array(64 - overhead)));
  assert.equal(atLimit.length, 64);
  const pastLimit = encodeFrame(dataFrame("s-1", 3, new Uint8Array(65 - overhead)));
  raw.send(encodeFrame(dataFrame("s-1", 1, "first")));
  raw.send('{"jsonrpc":"2.0"}');
  raw.send(new Uint8Array([0xff, 0xff, 0xff]));
  raw.send(pastLimit);
  raw.send(atLimit);
  raw.send(encodeFrame(dataFrame("s-1", 4, "last")));
  const frames = client[Symbol.asyncIterator]();
  assert.equal((await take(frames, "first")).body.kind, "data");
  assert.deepEqual((await take(frames, "at limit")).bytes, atLimit);
  const last = await take(frames, "last");
  assert.equal((last.body as { seq: number }).seq, 4);
  assert.equal(errors.length, 3);
  assert.ok(errors.every((error) => error instanceof ProtocolError));
  assert.match(errors[0].message, /^Cannot accept message: a text message of 17 characters/);
  assert.match(errors[1].message, /^Cannot decode frame: malformed protobuf/);
  assert.equal(
    errors[2].message,
    "Cannot decode frame: length 65 exceeds the 64 byte limit",
  );
  // Still serving in the other direction too.
  const echo = new Promise<MessageEvent>((resolve) =>
    raw.addEventListener("message", resolve, { once: true })
  );
  await client.send(dataFrame("s-1", 5, "after garbage"));
  assert.ok((await withDeadline(echo, DEADLINE, "raw receive")).data instanceof ArrayBuffer);
  raw.close();
  await withDeadline(client.closed, DEADLINE, "client closed");
});

Deno.test("RelaySocket refuses to send a frame over the limit or an invalid frame", async () => {
  await using server = new WsServer();
  const connecting = RelaySocket.connect(server.url, { maxFrameBytes: 64 });
  await using _server = RelaySocket.accept(await server.next());
  await using client = await connecting;
  const overhead = encodeFrame(dataFrame("s-1", 1, new Uint8Array(1))).length - 1;
  await client.sendBytes(encodeFrame(dataFrame("s-1", 1, new Uint8Array(64 - overhead))));
  await client.send(dataFrame("s-1", 1, new Uint8Array(64 - overhead)));
  await assert.rejects(
    client.send(dataFrame("s-1", 1, new Uint8Array(65 - overhead))),
    { name: "RangeError", message: "Cannot send frame: length 65 exceeds the 64 byte limit" },
  );
  await assert.rejects(client.send({ ...dataFrame("s-1", 1, ""), streamId: "" }), TypeError);
});

Deno.test("RelaySocket send waits while the peer stops reading and resumes when it reads", async () => {
  await using raw = new RawTcpServer();
  const accepted = raw.accept();
  const high = 1024 * 1024;
  const connecting = RelaySocket.connect(raw.url);
  const conn = await accepted;
  await completeHandshake(conn);
  await using client = await withDeadline(connecting, DEADLINE, "connect");
  const frame = encodeFrame(dataFrame("s-1", 1, new Uint8Array(200 * 1024)));

  // Fill the kernel buffers and then the WebSocket's own buffer, until a
  // send stays pending. A send may wait briefly while the kernel still takes
  // bytes; one pending for a whole second means the kernel is full, even on a
  // loaded machine (bufferedAmount then rests between the low and high marks,
  // so it cannot tell by itself).
  let acceptedBytes = 0;
  let blocked: Promise<void>;
  while (true) {
    blocked = client.sendBytes(frame);
    if (await stillPending(blocked, 1_000)) break;
    acceptedBytes += frame.length;
    assert.ok(acceptedBytes < 64 * 1024 * 1024, "send never blocked");
  }
  const more = [client.sendBytes(frame), client.sendBytes(frame), client.sendBytes(frame)];
  assert.ok(await stillPending(blocked, 200), "send resolved although the peer does not read");
  assert.ok(await stillPending(more[2], 100), "send resolved although the peer does not read");
  // Memory stays bounded: queued sends do not reach the WebSocket buffer.
  assert.ok(client.bufferedAmount <= high + frame.length, `buffered ${client.bufferedAmount}`);

  // The peer reads again: the waiting sends go out, in order.
  const readAccepted = Promise.withResolvers<void>();
  const drain = (async () => {
    const buffer = new Uint8Array(256 * 1024);
    let total = 0;
    while (true) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) return total;
      total += n;
      if (total >= acceptedBytes) readAccepted.resolve();
    }
  })();
  await withDeadline(Promise.all([blocked, ...more]), DEADLINE, "sends after drain");
  // Everything accepted before the stall reaches the peer.
  await withDeadline(readAccepted.promise, DEADLINE, "accepted bytes read by the peer");
  raw.closeConns();
  await withDeadline(client.closed, DEADLINE, "closed after peer vanished");
  assert.ok(await drain >= acceptedBytes);
});

Deno.test("RelaySocket close fails waiting sends with RelayClosedError", async () => {
  await using raw = new RawTcpServer();
  const accepted = raw.accept();
  const connecting = RelaySocket.connect(raw.url, { highWaterMark: 64 * 1024, lowWaterMark: 0 });
  await completeHandshake(await accepted);
  const client = await withDeadline(connecting, DEADLINE, "connect");
  const frame = encodeFrame(dataFrame("s-1", 1, new Uint8Array(128 * 1024)));
  let first: Promise<void>;
  do first = client.sendBytes(frame); while (!await stillPending(first, 500));
  const waiting = [first, client.sendBytes(frame), client.send(dataFrame("s-1", 2, "x"))];
  const closing = client.close("shutting down");
  for (const send of waiting) {
    await assert.rejects(withDeadline(send, DEADLINE, "waiting send"), (error: unknown) => {
      assert.ok(error instanceof RelayClosedError);
      assert.equal(error.message, "Relay socket closed: shutting down");
      return true;
    });
  }
  await assert.rejects(client.sendBytes(frame), RelayClosedError);
  // The peer never answers the close; it drops the connection instead.
  raw.closeConns();
  await withDeadline(closing, DEADLINE, "close");
  await withDeadline(client.close("again"), DEADLINE, "second close");
});

Deno.test("RelaySocket fails waiting sends when the peer drops the connection", async () => {
  await using raw = new RawTcpServer();
  const accepted = raw.accept();
  const connecting = RelaySocket.connect(raw.url, { highWaterMark: 64 * 1024, lowWaterMark: 0 });
  await completeHandshake(await accepted);
  await using client = await withDeadline(connecting, DEADLINE, "connect");
  const frame = encodeFrame(dataFrame("s-1", 1, new Uint8Array(128 * 1024)));
  let waiting: Promise<void>;
  do waiting = client.sendBytes(frame); while (!await stillPending(waiting, 500));
  raw.closeConns();
  await assert.rejects(withDeadline(waiting, DEADLINE, "waiting send"), (error: unknown) => {
    assert.ok(error instanceof RelayClosedError);
    assert.match(error.message, /^Relay socket closed: /);
    assert.equal(typeof (error.cause as { code?: unknown }).code, "number");
    return true;
  });
  const info = await withDeadline(client.closed, DEADLINE, "closed");
  assert.deepEqual(await client.closed, info);
});

Deno.test("RelaySocket close gives up after closeTimeoutMs when the peer never answers", async () => {
  let serverSocket: WebSocket | undefined;
  await using server = new WsServer((socket) => serverSocket = socket);
  // A hand-made client: completes the upgrade, then never reads or answers a close.
  const port = Number(new URL(server.url).port);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(utf8.encode(
    `GET /relay HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\n\r\n",
  ));
  const head = new Uint8Array(1024);
  const n = await withDeadline(conn.read(head), DEADLINE, "upgrade response");
  assert.match(new TextDecoder().decode(head.subarray(0, n ?? 0)), /^HTTP\/1\.1 101/);
  await server.next();
  const relay = RelaySocket.accept(serverSocket!, { closeTimeoutMs: 100 });
  const started = performance.now();
  await withDeadline(relay.close("bye"), DEADLINE, "close");
  assert.ok(performance.now() - started >= 90);
  assert.deepEqual(await relay.closed, {
    code: 1006,
    reason: "closing handshake not finished within 100 ms",
    wasClean: false,
  });
  // Dropping the connection releases the WebSocket.
  const released = new Promise((resolve) => serverSocket!.addEventListener("close", resolve));
  conn.close();
  await withDeadline(released, DEADLINE, "server socket released");
});

Deno.test("RelaySocket close is idempotent and both sides see the code and reason", async () => {
  await using server = new WsServer();
  const connecting = RelaySocket.connect(server.url);
  const serverRelay = RelaySocket.accept(await server.next());
  const client = await connecting;
  const serverFrames = serverRelay[Symbol.asyncIterator]();
  const pendingRead = serverFrames.next();
  for (const bad of [999, 1005, 1006, 2000, 5000, 4000.5]) {
    await assert.rejects(client.close("bad", bad), RangeError);
  }
  const first = client.close("bye", 4000);
  const second = client.close("ignored", 4001);
  await withDeadline(Promise.all([first, second]), DEADLINE, "close");
  assert.deepEqual(await client.closed, { code: 4000, reason: "bye", wasClean: true });
  assert.deepEqual(await withDeadline(serverRelay.closed, DEADLINE, "server closed"), {
    code: 4000,
    reason: "bye",
    wasClean: true,
  });
  assert.deepEqual(await withDeadline(pendingRead, DEADLINE, "read"), {
    done: true,
    value: undefined,
  });
  const clientFrames = client[Symbol.asyncIterator]();
  assert.equal((await clientFrames.next()).done, true);
  await assert.rejects(client.send(dataFrame("s-1", 1, "late")), RelayClosedError);
  await assert.rejects(serverRelay.send(dataFrame("s-1", 1, "late")), (error: unknown) => {
    assert.ok(error instanceof RelayClosedError);
    assert.equal(error.message, "Relay socket closed: bye");
    assert.deepEqual(error.cause, { code: 4000, reason: "bye", wasClean: true });
    return true;
  });
  await serverRelay.close();
});

Deno.test("RelaySocket client side sends a standard close code as 4000 + its last digits", async () => {
  await using server = new WsServer();
  const connecting = RelaySocket.connect(server.url);
  const serverRelay = RelaySocket.accept(await server.next());
  const client = await connecting;
  await withDeadline(client.close("going away", 1001), DEADLINE, "close");
  assert.equal((await withDeadline(serverRelay.closed, DEADLINE, "closed")).code, 4001);
  assert.equal((await client.closed).code, 4001);
});

Deno.test("RelaySocket is AsyncDisposable and a long close reason is cut to 123 bytes", async () => {
  await using server = new WsServer();
  const connecting = RelaySocket.connect(server.url);
  const serverRelay = RelaySocket.accept(await server.next());
  {
    await using _client = await connecting;
  }
  assert.equal((await withDeadline(serverRelay.closed, DEADLINE, "closed")).code, 1000);

  const connecting2 = RelaySocket.connect(server.url);
  const serverRelay2 = RelaySocket.accept(await server.next());
  const client2 = await connecting2;
  await serverRelay2.close("é".repeat(100), 1011);
  const info = await withDeadline(client2.closed, DEADLINE, "client closed");
  assert.equal(info.code, 1011);
  assert.equal(info.reason, "é".repeat(61));
});

Deno.test("RelaySocket leaving a loop early keeps the socket open", async () => {
  await using server = new WsServer();
  const connecting = RelaySocket.connect(server.url);
  await using serverRelay = RelaySocket.accept(await server.next());
  await using client = await connecting;
  for (let seq = 1; seq <= 3; seq++) await client.send(dataFrame("s-1", seq, "m"));
  const seen: number[] = [];
  for await (const frame of serverRelay) {
    seen.push((frame.body as { seq: number }).seq);
    if (seen.length === 1) break;
  }
  for await (const frame of serverRelay) {
    seen.push((frame.body as { seq: number }).seq);
    if (seen.length === 3) break;
  }
  assert.deepEqual(seen, [1, 2, 3]);
});

Deno.test("RelaySocket inbound queue holds exactly its frame budget", async () => {
  await using server = new WsServer();
  const connecting = RelaySocket.connect(server.url);
  const serverRelay = RelaySocket.accept(await server.next(), { maxQueuedFrames: 3 });
  const client = await connecting;
  for (let seq = 1; seq <= 3; seq++) await client.send(dataFrame("s-1", seq, "m"));
  await client.close("done", 4000);
  assert.equal((await withDeadline(serverRelay.closed, DEADLINE, "closed")).code, 4000);
  const seqs: number[] = [];
  for await (const frame of serverRelay) seqs.push((frame.body as { seq: number }).seq);
  assert.deepEqual(seqs, [1, 2, 3]);
});

Deno.test("RelaySocket closes with 1008 when a slow consumer overflows the frame budget", async () => {
  await using server = new WsServer();
  const connecting = RelaySocket.connect(server.url);
  const serverRelay = RelaySocket.accept(await server.next(), { maxQueuedFrames: 3 });
  const client = await connecting;
  for (let seq = 1; seq <= 4; seq++) await client.send(dataFrame("s-1", seq, "m"));
  const info = await withDeadline(client.closed, DEADLINE, "client closed");
  assert.equal(info.code, 1008);
  assert.equal(info.reason, "inbound queue overflow: over 3 frames unread");
  assert.equal((await withDeadline(serverRelay.closed, DEADLINE, "server closed")).code, 1008);
  // Frames queued before the overflow are still delivered.
  const seqs: number[] = [];
  for await (const frame of serverRelay) seqs.push((frame.body as { seq: number }).seq);
  assert.deepEqual(seqs, [1, 2, 3]);
});

Deno.test("RelaySocket inbound byte budget: at the limit it serves, one past it closes", async () => {
  await using server = new WsServer();
  const frame = encodeFrame(dataFrame("s-1", 1, new Uint8Array(100)));
  // At the limit: two frames fit exactly, and the socket ends only when the peer closes.
  {
    const connecting = RelaySocket.connect(server.url);
    const receiver = RelaySocket.accept(await server.next(), { maxQueuedBytes: 2 * frame.length });
    const sender = await connecting;
    await sender.sendBytes(frame);
    await sender.sendBytes(frame);
    await sender.close("done", 4000);
    assert.equal((await withDeadline(receiver.closed, DEADLINE, "receiver closed")).code, 4000);
    let count = 0;
    for await (const _ of receiver) count++;
    assert.equal(count, 2);
  }
  // One byte past it on the client side, in one frame (the client pauses its
  // reading for anything smaller): closed with 4008 (clients may not send 1008).
  {
    const connecting = RelaySocket.connect(server.url, { maxQueuedBytes: frame.length - 1 });
    const sender = RelaySocket.accept(await server.next());
    const receiver = await connecting;
    await sender.sendBytes(frame);
    const info = await withDeadline(sender.closed, DEADLINE, "sender closed");
    assert.equal(info.code, 4008);
    assert.equal(info.reason, `inbound queue overflow: over ${frame.length - 1} bytes unread`);
    await withDeadline(receiver.closed, DEADLINE, "receiver closed");
    let count = 0;
    for await (const _ of receiver) count++;
    assert.equal(count, 0);
  }
});

Deno.test("RelaySocket sockets sharing a budget: at its limit all keep their unread frames; one byte past it the socket holding the most drops them and closes, the others keep theirs", async () => {
  await using server = new WsServer();
  const frame = encodeFrame(dataFrame("s-1", 1, new Uint8Array(100)));
  const tiny = encodeFrame(dataFrame("s-1", 2, "x"));
  const charge = (bytes: Uint8Array) => bytes.length + QUEUED_FRAME_OVERHEAD_BYTES;
  const budget = new ByteBudget(3 * charge(frame));
  const pair = async () => {
    const connecting = RelaySocket.connect(server.url);
    const receiver = RelaySocket.accept(await server.next(), { budget });
    return { sender: await connecting, receiver };
  };
  const [large, small] = [await pair(), await pair()];
  let shed = 0;
  large.receiver.onShed = () => shed++;
  await large.sender.sendBytes(frame);
  await large.sender.sendBytes(frame);
  await small.sender.sendBytes(frame);
  await until(() => budget.used === 3 * charge(frame), DEADLINE, "three frames unread");
  assert.equal(shed, 0);
  await small.sender.sendBytes(tiny);
  const info = await withDeadline(large.receiver.closed, DEADLINE, "large closed");
  assert.equal(info.code, 1008);
  assert.equal(shed, 1);
  let dropped = 0;
  for await (const _ of large.receiver) dropped++;
  assert.equal(dropped, 0);
  assert.equal(budget.used, charge(frame) + charge(tiny));
  const frames = small.receiver[Symbol.asyncIterator]();
  assert.equal((await take(frames, "small's frame")).bytes.length, frame.length);
  assert.equal((await take(frames, "small's tiny frame")).bytes.length, tiny.length);
  assert.equal(budget.used, 0);
  await small.sender.close("done", 4000);
  assert.equal((await withDeadline(small.receiver.closed, DEADLINE, "small closed")).code, 4000);
});

Deno.test("RelaySocket counts a closed socket's unread frames against its budget until dropUnread drops them", async () => {
  await using server = new WsServer();
  const frame = encodeFrame(dataFrame("s-1", 1, new Uint8Array(100)));
  const budget = new ByteBudget(1024 * 1024);
  const connecting = RelaySocket.connect(server.url);
  const receiver = RelaySocket.accept(await server.next(), { budget });
  const sender = await connecting;
  await sender.sendBytes(frame);
  await sender.sendBytes(frame);
  await sender.close("done", 4000);
  assert.equal((await withDeadline(receiver.closed, DEADLINE, "closed")).code, 4000);
  assert.equal(budget.used, 2 * (frame.length + QUEUED_FRAME_OVERHEAD_BYTES));
  const frames = receiver[Symbol.asyncIterator]();
  await take(frames, "first frame");
  assert.equal(budget.used, frame.length + QUEUED_FRAME_OVERHEAD_BYTES);
  receiver.dropUnread();
  assert.equal(budget.used, 0);
  assert.equal((await withDeadline(frames.next(), DEADLINE, "end")).done, true);
});

for (const budget of ["frames", "bytes"] as const) {
  Deno.test(`RelaySocket.connect pauses reading at half its ${budget} budget instead of overflowing: a slow consumer gets every frame`, async () => {
    await using server = new WsServer();
    // 64 frames into a budget of 16 that nobody reads for now.
    const frameBytes = encodeFrame(dataFrame("s-1", 10, "m")).length;
    const connecting = RelaySocket.connect(
      server.url,
      budget === "frames" ? { maxQueuedFrames: 16 } : { maxQueuedBytes: 16 * frameBytes },
    );
    const sender = RelaySocket.accept(await server.next());
    const receiver = await connecting;
    for (let seq = 10; seq < 74; seq++) await sender.send(dataFrame("s-1", seq, "m"));
    const seqs: number[] = [];
    for await (const frame of receiver) {
      seqs.push((frame.body as { seq: number }).seq);
      if (seqs.length === 64) break;
    }
    assert.deepEqual(seqs, Array.from({ length: 64 }, (_, i) => i + 10));
    await sender.close("done", 4000);
    assert.equal((await withDeadline(receiver.closed, DEADLINE, "closed")).code, 4000);
  });
}

Deno.test("RelaySocket.connect reports a refused upgrade", async () => {
  await using _server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    () => new Response("no", { status: 401 }),
  );
  const url = `ws://127.0.0.1:${_server.addr.port}/relay?sig=secret`;
  await assert.rejects(RelaySocket.connect(url), (error: unknown) => {
    assert.ok(error instanceof RelayClosedError);
    assert.match(error.message, /^Cannot connect relay socket to ws:\/\/127\.0\.0\.1:\d+\/relay: /);
    assert.doesNotMatch(error.message, /secret/);
    return true;
  });
});

Deno.test("RelaySocket.connect puts a refused upgrade's status, code and message in error.refusal", async () => {
  await using server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    (request) =>
      new URL(request.url).pathname === "/bare"
        ? new Response(null, { status: 401 })
        : Response.json({ error: { code: "url_expired", message: "register again" } }, {
          status: 403,
        }),
  );
  const base = `ws://127.0.0.1:${server.addr.port}`;
  const refusal = async (path: string, options?: RelayConnectOptions) => {
    const error = await RelaySocket.connect(`${base}${path}`, options).catch((e) => e);
    assert.ok(error instanceof RelayClosedError, String(error));
    return error.refusal;
  };
  assert.deepEqual(await refusal("/json"), {
    status: 403,
    code: "url_expired",
    message: "register again",
  });
  assert.deepEqual(await refusal("/bare"), { status: 401 });
  // Deno's own WebSocket reports the status only.
  assert.deepEqual(await refusal("/json", { transport: "native" }), { status: 403 });
  assert.deepEqual(await refusal("/bare", { transport: "native" }), { status: 401 });
});

Deno.test("RelaySocket.connect times out when the server never answers", async () => {
  await using raw = new RawTcpServer();
  const accepted = raw.accept();
  const started = performance.now();
  await assert.rejects(RelaySocket.connect(raw.url, { timeoutMs: 150 }), (error: unknown) => {
    assert.ok(error instanceof DOMException);
    assert.equal(error.name, "TimeoutError");
    assert.match(error.message, /no answer within 150 ms$/);
    return true;
  });
  assert.ok(performance.now() - started < DEADLINE);
  await accepted;
});

Deno.test("RelaySocket.connect takes a timeoutMs and a closeTimeoutMs up to 2^31 - 1 and refuses one past it (its timer would fire at once)", async () => {
  for (const name of ["timeoutMs", "closeTimeoutMs"]) {
    await assert.rejects(
      async () => await RelaySocket.connect("ws://127.0.0.1:9/", { [name]: 2 ** 31 }),
      new RegExp(`${name} 2147483648 is not a number from 0 to 2147483647`),
    );
  }
  await using server = new WsServer();
  const socket = await RelaySocket.connect(server.url, {
    timeoutMs: 2 ** 31 - 1,
    closeTimeoutMs: 2 ** 31 - 1,
  });
  await socket.close();
});

Deno.test("RelaySocket.connect rejects with the abort reason", async () => {
  await using raw = new RawTcpServer();
  const reason = new Error("caller gave up");
  await assert.rejects(RelaySocket.connect(raw.url, { signal: AbortSignal.abort(reason) }), reason);
  const controller = new AbortController();
  const accepted = raw.accept();
  const connecting = RelaySocket.connect(raw.url, { signal: controller.signal });
  await accepted;
  controller.abort(reason);
  await assert.rejects(withDeadline(connecting, DEADLINE, "aborted connect"), reason);
});

Deno.test("RelaySocket tells its owner of an oversized frame in the frame's place, after the frames before it are read", async () => {
  await using server = new WsServer();
  let reportedError: () => void = () => {};
  const reported = new Promise<void>((resolve) => reportedError = resolve);
  let errors = 0;
  const connecting = RelaySocket.connect(server.url, {
    maxFrameBytes: 64,
    onProtocolError: () => {
      errors++;
      reportedError();
    },
  });
  const raw = await server.next();
  await using client = await connecting;
  const told: string[] = [];
  client.onOversizedFrame = (streamId) => told.push(streamId);
  await new Promise((resolve) => {
    if (raw.readyState === WebSocket.OPEN) resolve(undefined);
    else raw.addEventListener("open", resolve, { once: true });
  });
  raw.send(encodeFrame(dataFrame("s-1", 0, "before")));
  raw.send(encodeFrame(dataFrame("s-1", 0, new Uint8Array(100)))); // past 64 bytes
  raw.send(encodeFrame(dataFrame("s-2", 0, "after")));
  await withDeadline(reported, DEADLINE, "the oversized frame's report");
  assert.deepEqual(told, [], "not ahead of the unread frame before it");
  const frames = client[Symbol.asyncIterator]();
  assert.equal((await take(frames, "before")).streamId, "s-1");
  assert.deepEqual(told, []);
  const after = await take(frames, "after");
  assert.equal(after.streamId, "s-2");
  assert.deepEqual(told, ["s-1"], "told once the reader came to its place");
  // With the reader waiting (it has dealt with all it took), at once.
  const waiting = frames.next();
  raw.send(encodeFrame(dataFrame("s-3", 0, new Uint8Array(100))));
  await until(() => told.length === 2, DEADLINE, "told at once");
  assert.deepEqual(told, ["s-1", "s-3"]);
  raw.send(encodeFrame(dataFrame("s-4", 0, "last")));
  assert.equal((await withDeadline(waiting, DEADLINE, "last")).value.streamId, "s-4");
  // With nothing unread but the reader busy with the last frame it took, in
  // that frame's wake: at its next read.
  raw.send(encodeFrame(dataFrame("s-5", 0, new Uint8Array(100))));
  await until(() => errors === 3, DEADLINE, "the third oversized frame's report");
  assert.deepEqual(told, ["s-1", "s-3"], "not while the reader may still be on s-4");
  raw.send(encodeFrame(dataFrame("s-6", 0, "after")));
  assert.equal((await take(frames, "after s-5")).streamId, "s-6");
  assert.deepEqual(told, ["s-1", "s-3", "s-5"]);
});
