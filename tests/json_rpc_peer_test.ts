import assert from "node:assert/strict";
import { RelayClosedError, RpcError } from "../lib/errors.ts";
import {
  DEFAULT_MAX_CONCURRENT_REQUESTS,
  JsonResult,
  JsonRpcPeer,
} from "../lib/rpc/json_rpc_peer.ts";
import type { MessageChannel } from "../lib/rpc/message_channel.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { channelPair, nextJson } from "./_fixtures/channel_pair.ts";

const D = 3_000;

function rejects(promise: Promise<unknown>, check: (error: unknown) => boolean): Promise<void> {
  return assert.rejects(() => withDeadline(promise, D), (error: unknown) => {
    assert(check(error), `unexpected error: ${error}`);
    return true;
  });
}

Deno.test("JsonRpcPeer answers a request and the reply carries jsonrpc 2.0", async () => {
  const [raw, server] = channelPair();
  const peer = new JsonRpcPeer(server, { onRequest: (method, params) => ({ method, params }) });
  const it = raw[Symbol.asyncIterator]();
  await raw.send(JSON.stringify({ id: 7, method: "echo", params: { a: 1 } }));
  assert.deepEqual(await withDeadline(nextJson(it), D), {
    jsonrpc: "2.0",
    id: 7,
    result: { method: "echo", params: { a: 1 } },
  });
  await raw.send(JSON.stringify({ jsonrpc: "2.0", id: "s", method: "echo" }));
  assert.deepEqual(await withDeadline(nextJson(it), D), {
    jsonrpc: "2.0",
    id: "s",
    result: { method: "echo", params: null },
  });
  await peer.close();
});

Deno.test("JsonRpcPeer requests round trip between two peers", async () => {
  const [a, b] = channelPair();
  const server = new JsonRpcPeer(b, {
    onRequest: (method, params) => {
      if (method === "fail") throw new RpcError(-32000, "Cannot fail: on purpose", { x: 1 });
      if (method === "crash") throw new Error("boom");
      return (params as { n: number }).n + 1;
    },
  });
  const client = new JsonRpcPeer(a);
  assert.deepEqual(await withDeadline(client.request("inc", { n: 41 }), D), 42);
  await rejects(
    client.request("fail"),
    (e) => e instanceof RpcError && e.code === -32000 && (e.data as { x: number }).x === 1,
  );
  await rejects(
    client.request("crash"),
    (e) => e instanceof RpcError && e.code === -32603 && e.message.includes("boom"),
  );
  await client.close();
  await server.closed;
});

Deno.test("JsonRpcPeer refuses bad JSON, bad shapes and batches with a clear error and keeps serving", async () => {
  const [raw, server] = channelPair();
  const peer = new JsonRpcPeer(server, { onRequest: () => "ok" });
  const it = raw[Symbol.asyncIterator]();
  const cases: [string, number, string][] = [
    ["{not json", -32700, "Cannot parse message"],
    ["5", -32600, "JSON object"],
    ['{"id":1}', -32600, '"method", "result" or "error"'],
    ['{"id":1,"result":1,"error":{"code":1,"message":"x"}}', -32600, '"result" and "error"'],
    ['{"id":{},"method":"x"}', -32600, '"id"'],
    ['{"id":1.5,"method":"x"}', -32600, '"id"'],
    ['[{"id":1,"method":"x"}]', -32600, "batch"],
    ["[]", -32600, "batch"],
  ];
  for (const [text, code, words] of cases) {
    await raw.send(text);
    const reply = await withDeadline(nextJson(it), D);
    assert.deepEqual(reply.id, null, text);
    const error = reply.error as { code: number; message: string };
    assert.deepEqual(error.code, code, text);
    assert(error.message.includes(words), `${text}: ${error.message}`);
  }
  // A request whose id can be detected is answered with that id.
  for (
    const [text, words] of [
      ['{"id":1,"method":3}', '"method"'],
      ['{"jsonrpc":"1.0","id":1,"method":"x"}', '"jsonrpc"'],
      ['{"id":"a","method":""}', '"method"'],
      ['{"id":2,"method":"x","params":3}', '"params"'],
      ['{"id":3,"method":"x","params":"s"}', '"params"'],
    ]
  ) {
    await raw.send(text);
    const reply = await withDeadline(nextJson(it), D);
    assert.equal(reply.id, JSON.parse(text).id, text);
    const error = reply.error as { code: number; message: string };
    assert.equal(error.code, -32600, text);
    assert.ok(error.message.includes(words), `${text}: ${error.message}`);
  }
  await raw.send('{"id":2,"method":"x"}');
  assert.deepEqual((await withDeadline(nextJson(it), D)).result, "ok");
  await peer.close();
});

Deno.test("JsonRpcPeer names an unknown method when it has no handler", async () => {
  const [a, b] = channelPair();
  const server = new JsonRpcPeer(b);
  const client = new JsonRpcPeer(a);
  await rejects(
    client.request("test/unknown-a"),
    (e) => e instanceof RpcError && e.code === -32601 && e.message.includes("test/unknown-a"),
  );
  await client.close();
  await server.closed;
});

Deno.test("JsonRpcPeer accepts a message at the size limit and refuses one byte past it", async () => {
  const limit = 1024;
  const [raw, server] = channelPair();
  const peer = new JsonRpcPeer(server, { maxMessageBytes: limit, onRequest: () => 1 });
  const it = raw[Symbol.asyncIterator]();
  const base = JSON.stringify({ id: 1, method: "m", params: { s: "" } });
  // "é" is two UTF-8 bytes: the limit counts bytes, not characters.
  const fill = "é".repeat((limit - base.length) >> 1) + "a".repeat((limit - base.length) & 1);
  const exact = JSON.stringify({ id: 1, method: "m", params: { s: fill } });
  assert.deepEqual(new TextEncoder().encode(exact).length, limit);
  await raw.send(exact);
  assert.deepEqual((await withDeadline(nextJson(it), D)).result, 1);
  // Refused unparsed, yet answered by its id, wherever the id stands.
  const over = JSON.stringify({ id: 2, method: "m", params: { s: fill + "a" } });
  const idLast = JSON.stringify({ method: "m", params: { id: 5, s: fill + "a" }, id: "last" });
  const notification = JSON.stringify({ method: "m", params: { id: 6, s: fill + "a" } });
  // An id is echoed from an unparsed message up to 1,024 characters, so the answer stays small.
  const longestId = "i".repeat(1024);
  const longId = JSON.stringify({ id: longestId, method: "m", params: { s: fill } });
  const tooLongId = JSON.stringify({ id: longestId + "i", method: "m", params: { s: fill } });
  for (
    const [message, id] of [
      [over, 2],
      [idLast, "last"],
      [notification, null],
      [longId, longestId],
      [tooLongId, null],
    ] as const
  ) {
    await raw.send(message);
    const reply = await withDeadline(nextJson(it), D);
    assert.deepEqual(reply.id, id);
    assert.deepEqual((reply.error as { code: number }).code, -32600);
    assert((reply.error as { message: string }).message.includes("1024 byte limit"));
  }
  await peer.close();
});

Deno.test("JsonRpcPeer takes a timeoutMs up to 2^31 - 1 ms and refuses one more (a timer's limit)", async () => {
  const [a, b] = channelPair();
  const server = new JsonRpcPeer(b, { onRequest: () => "ok" });
  const client = new JsonRpcPeer(a);
  assert.equal(await withDeadline(client.request("m", {}, { timeoutMs: 2 ** 31 - 1 }), D), "ok");
  await rejects(
    client.request("m", {}, { timeoutMs: 2 ** 31 }),
    (e) => e instanceof RangeError && e.message.includes("from 0 to 2147483647"),
  );
  await client.close();
  await server.closed;
});

Deno.test("JsonRpcPeer fails its own request at once when the answer is over its size limit", async () => {
  const [a, b] = channelPair();
  const server = new JsonRpcPeer(b, { onRequest: () => "x".repeat(2000) });
  const client = new JsonRpcPeer(a, { maxMessageBytes: 1024 });
  await rejects(
    withDeadline(client.request("m"), D, "the request's end"),
    (e) => e instanceof RangeError && e.message.includes("1024 byte limit"),
  );
  await client.close();
  await server.closed;
});

Deno.test("JsonRpcPeer refuses an oversized outbound request and replaces an oversized result", async () => {
  const [a, b] = channelPair();
  const server = new JsonRpcPeer(b, { maxMessageBytes: 1024, onRequest: () => "x".repeat(2000) });
  const client = new JsonRpcPeer(a, { maxMessageBytes: 1024 });
  await rejects(client.request("m", { s: "x".repeat(1024) }), (e) => e instanceof RangeError);
  await rejects(client.notify("m", { s: "x".repeat(1024) }), (e) => e instanceof RangeError);
  await rejects(
    client.request("m"),
    (e) => e instanceof RpcError && e.code === -32603 && e.message.includes("1024 byte limit"),
  );
  assert.throws(() => new JsonRpcPeer(a, { maxMessageBytes: 1023 }), RangeError);
  await client.close();
  await server.closed;
});

Deno.test("JsonRpcPeer times out and aborts requests and ignores their late replies", async () => {
  const [a, b] = channelPair();
  const release = Promise.withResolvers<void>();
  const server = new JsonRpcPeer(b, {
    onRequest: async (method) => {
      if (method === "slow") await release.promise;
      return method;
    },
  });
  const client = new JsonRpcPeer(a);
  await rejects(
    client.request("slow", undefined, { timeoutMs: 20 }),
    (e) => e instanceof DOMException && e.name === "TimeoutError" && e.message.includes("slow"),
  );
  const controller = new AbortController();
  const aborted = client.request("slow", undefined, { signal: controller.signal });
  controller.abort(new Error("stop"));
  await rejects(aborted, (e) => e instanceof Error && e.message === "stop");
  await rejects(
    client.request("slow", undefined, { signal: AbortSignal.abort(new Error("early")) }),
    (e) => e instanceof Error && e.message === "early",
  );
  release.resolve();
  assert.deepEqual(await withDeadline(client.request("fast"), D), "fast");
  await client.close();
  await server.closed;
});

Deno.test("JsonRpcPeer fails every pending request with one RelayClosedError when the channel closes", async () => {
  const [a, b] = channelPair();
  let sawAbort = 0;
  const server = new JsonRpcPeer(b, {
    onRequest: (_method, _params, { signal }) =>
      new Promise((_, reject) => {
        signal.addEventListener("abort", () => {
          sawAbort++;
          reject(signal.reason);
        }, { once: true });
      }),
  });
  const client = new JsonRpcPeer(a);
  const requests = [client.request("a"), client.request("b"), client.request("c")];
  const errors = requests.map((p) => p.catch((e) => e));
  await b.close();
  const [e1, e2, e3] = await withDeadline(Promise.all(errors), D);
  assert(e1 instanceof RelayClosedError);
  assert(e1 === e2 && e2 === e3);
  await withDeadline(server.closed, D);
  await withDeadline(client.closed, D);
  assert.deepEqual(sawAbort, 3);
  await rejects(client.request("late"), (e) => e instanceof RelayClosedError);
  await rejects(client.notify("late"), (e) => e instanceof RelayClosedError);
});

Deno.test("JsonRpcPeer delivers notifications and pauses reading at the concurrency limit", async () => {
  const [a, b] = channelPair();
  const notes: unknown[] = [];
  const started: string[] = [];
  // The handlers themselves signal: `entered` when a request handler starts,
  // `noted` when the notification arrives; `gates` hold each handler open.
  const entered = new Map([
    ["first", Promise.withResolvers<void>()],
    ["second", Promise.withResolvers<void>()],
  ]);
  const gates = new Map([
    ["first", Promise.withResolvers<void>()],
    ["second", Promise.withResolvers<void>()],
  ]);
  const noted = Promise.withResolvers<void>();
  const server = new JsonRpcPeer(b, {
    maxConcurrentRequests: 1,
    onNotification: (method, params) => {
      notes.push([method, params]);
      noted.resolve();
    },
    onRequest: async (method) => {
      started.push(method);
      entered.get(method)!.resolve();
      await gates.get(method)!.promise;
      return method;
    },
  });
  const client = new JsonRpcPeer(a);
  const first = client.request("first");
  const second = client.request("second");
  await client.notify("note", { n: 1 });
  await withDeadline(entered.get("first")!.promise, D, "first handler entered");
  assert.deepEqual(started, ["first"]); // the second waits for a free slot
  gates.get("first")!.resolve();
  assert.deepEqual(await withDeadline(first, D), "first");
  await withDeadline(entered.get("second")!.promise, D, "second handler entered");
  assert.deepEqual(started, ["first", "second"]);
  assert.deepEqual(notes, []); // still queued behind "second": reading is paused
  gates.get("second")!.resolve();
  assert.deepEqual(await withDeadline(second, D), "second");
  await withDeadline(noted.promise, D, "notification delivered");
  assert.deepEqual(notes, [["note", { n: 1 }]]);
  await client.close();
  await server.closed;
});

Deno.test("JsonRpcPeer does not count released requests against the concurrency limit", async () => {
  const [a, b] = channelPair();
  const gate = Promise.withResolvers<void>();
  let waiting = 0;
  const server = new JsonRpcPeer(b, {
    maxConcurrentRequests: 2,
    onRequest: async (method, _params, request) => {
      if (method !== "wait") return method;
      // Released before it waits (synchronously) or after a turn: both free the slot.
      if (waiting++ % 2 === 0) request.release();
      else await Promise.resolve().then(() => request.release());
      request.release(); // twice is harmless
      await gate.promise;
      return method;
    },
  });
  const client = new JsonRpcPeer(a);
  // Four times the limit wait at once, and the peer still reads and serves the next.
  const waits = [...Array(8)].map(() => client.request("wait"));
  assert.equal(await withDeadline(client.request("next"), D, "served past released waits"), "next");
  assert.equal(waiting, 8);
  gate.resolve();
  assert.deepEqual(await withDeadline(Promise.all(waits), D, "released replies"), [
    ...Array(8).fill("wait"),
  ]);
  // A closing peer still waits for released requests before `closed` settles.
  const late = Promise.withResolvers<void>();
  const held = Promise.withResolvers<void>();
  const [c, d] = channelPair();
  const closing = new JsonRpcPeer(d, {
    onRequest: async (_method, _params, request) => {
      request.release();
      held.resolve();
      await late.promise;
    },
  });
  const other = new JsonRpcPeer(c);
  other.request("hold").catch(() => {});
  await withDeadline(held.promise, D, "held");
  let closed = false;
  closing.closed.then(() => closed = true);
  await other.close();
  await new Promise((r) => setTimeout(r, 0)); // one turn: `closed` must not have settled
  assert.equal(closed, false, "closed waits for the released handler");
  late.resolve();
  await withDeadline(closing.closed, D, "closed after the handler");
  await client.close();
  await server.closed;
});

/**
 * The far side of a channel that never takes a reply: it offers `inbox` to the
 * peer, counting what the peer reads, and each send waits until the test
 * settles it (or the channel closes).
 */
class UnackedChannel implements MessageChannel {
  /** Messages the peer has read so far. */
  read = 0;
  /** Every send so far, unsettled until the test settles it. */
  sends: PromiseWithResolvers<void>[] = [];
  #inbox: string[];
  #done = false;
  #wake: (() => void) | null = null;
  #closed = Promise.withResolvers<void>();

  constructor(inbox: string[]) {
    this.#inbox = [...inbox];
  }

  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  send(_message: string): Promise<void> {
    if (this.#done) return Promise.reject(new Error("Cannot send: channel closed"));
    const send = Promise.withResolvers<void>();
    this.sends.push(send);
    return send.promise;
  }

  close(): Promise<void> {
    if (!this.#done) {
      this.#done = true;
      for (const send of this.sends) send.reject(new Error("Cannot send: channel closed"));
      this.#wake?.();
      this.#closed.resolve();
    }
    return Promise.resolve();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    while (!this.#done) {
      if (this.#inbox.length > 0) {
        this.read++;
        yield this.#inbox.shift()!;
        continue;
      }
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }
}

for (
  const [what, message] of [
    ["replies", (i: number) => JSON.stringify({ id: i, method: "m" })],
    ["error replies to bad input", (i: number) => `{not json ${i}`],
    ["error replies to notifications", (i: number) => JSON.stringify({ method: `n${i}` })],
  ] as const
) {
  Deno.test(`JsonRpcPeer stops reading at the concurrency limit while ${what} are unsent`, async () => {
    const limit = DEFAULT_MAX_CONCURRENT_REQUESTS;
    const channel = new UnackedChannel([...Array(limit + 2).keys()].map(message));
    const peer: JsonRpcPeer = new JsonRpcPeer(channel, {
      onRequest: () => "ok",
      // As the executor's session answers a notification it does not know.
      onNotification: (method) => void peer.sendError(-32601, `no ${method}`).catch(() => {}),
    });
    // At the limit: `limit` messages read, each reply handed to a send that never completes.
    await until(() => channel.sends.length >= limit, D, `${limit} replies sent`);
    assert.equal(channel.read, limit, "reading paused at the limit");
    // One past it: a settled send frees a slot for exactly one more message.
    channel.sends[0].resolve();
    await until(() => channel.sends.length >= limit + 1, D, "one more reply sent");
    assert.equal(channel.read, limit + 1);
    await withDeadline(peer.close(), D, "close");
  });
}

Deno.test("JsonRpcPeer counts a released request's reply again: a sender that takes no replies stops being read", async () => {
  const limit = DEFAULT_MAX_CONCURRENT_REQUESTS;
  const waits = 2 * limit;
  const gate = Promise.withResolvers<void>();
  const channel = new UnackedChannel([
    ...[...Array(waits).keys()].map((i) => JSON.stringify({ id: i, method: "wait" })),
    ...[...Array(limit + 5).keys()].map((i) => JSON.stringify({ id: waits + i, method: "now" })),
  ]);
  const peer = new JsonRpcPeer(channel, {
    onRequest: async (method, _params, request) => {
      if (method === "wait") {
        request.release();
        await gate.promise;
      }
      return method;
    },
  });
  // Released, the waits do not count: the peer reads past them, then `limit` answered at once.
  await until(() => channel.sends.length >= limit, D, `${limit} replies sent`);
  assert.equal(channel.read, waits + limit);
  // Answered, the waits' replies count until sent: settling as many sends
  // as they add frees no slot...
  gate.resolve();
  await until(() => channel.sends.length >= waits + limit, D, "the waits' replies sent");
  for (const send of channel.sends.slice(0, waits)) send.resolve();
  for (let turn = 0; turn < 5; turn++) await new Promise((r) => setTimeout(r, 0)); // pacing
  assert.equal(channel.read, waits + limit, "still paused");
  // ...and one more frees one.
  channel.sends[waits].resolve();
  await until(() => channel.read === waits + limit + 1, D, "one more read");
  await withDeadline(peer.close(), D, "close");
});

Deno.test("JsonRpcPeer allows maxPendingRequests outstanding requests and refuses one more", async () => {
  const [a, b] = channelPair();
  const release = Promise.withResolvers<void>();
  const server = new JsonRpcPeer(b, {
    onRequest: async () => {
      await release.promise;
      return "done";
    },
  });
  const client = new JsonRpcPeer(a, { maxPendingRequests: 2 });
  const first = client.request("a");
  const second = client.request("b");
  await rejects(
    client.request("c"),
    (e) => e instanceof RangeError && e.message.includes("2 requests"),
  );
  release.resolve();
  assert.deepEqual(await withDeadline(Promise.all([first, second]), D), ["done", "done"]);
  assert.equal(await withDeadline(client.request("d"), D), "done");
  await client.close();
  await server.closed;
});

Deno.test("JsonRpcPeer notifyJson splices ready JSON params and keeps the size limit at and one past it", async () => {
  const [raw, server] = channelPair();
  const limit = 1024;
  const peer = new JsonRpcPeer(server, { maxMessageBytes: limit });
  const it = raw[Symbol.asyncIterator]();
  await peer.notifyJson("process/output", '{"processId":"p\\"1","seq":3,"chunk":"aGk="}');
  assert.deepEqual(await withDeadline(nextJson(it), D), {
    jsonrpc: "2.0",
    method: "process/output",
    params: { processId: 'p"1', seq: 3, chunk: "aGk=" },
  });
  const overhead = '{"jsonrpc":"2.0","method":"m","params":{"x":""}}'.length;
  const fits = `{"x":"${"é".repeat((limit - overhead) / 2)}"}`; // 2 UTF-8 bytes each
  await peer.notifyJson("m", fits);
  const received = await withDeadline(nextJson(it), D) as { params: { x: string } };
  assert.equal(new TextEncoder().encode(JSON.stringify(received)).length, limit);
  await assert.rejects(
    peer.notifyJson("m", `{"x":"${"é".repeat((limit - overhead) / 2)}e"}`),
    RangeError,
  );
  await peer.close();
  await assert.rejects(peer.notifyJson("m", "{}"), RelayClosedError);
});

Deno.test("JsonRpcPeer splices a JsonResult into the reply as the serialized result would be, and keeps the size limit at and one past it", async () => {
  const [raw, server] = channelPair();
  const limit = 1024;
  const overhead = '{"jsonrpc":"2.0","id":1,"result":{"x":""}}'.length;
  const results = new Map<number, unknown>([
    [1, new JsonResult(`{"x":"${"a".repeat(limit - overhead)}"}`, { ascii: true })],
    [3, new JsonResult(`{"x":"${"é".repeat((limit - overhead) / 2)}"}`)],
    [4, new JsonResult(`{"x":"${"é".repeat((limit - overhead) / 2)}e"}`)],
    [5, new JsonResult(`{"x":"${"a".repeat(limit - overhead + 1)}"}`, { ascii: true })],
  ]);
  const peer = new JsonRpcPeer(server, {
    maxMessageBytes: limit,
    onRequest: (_method, _params, { id }) => results.get(id as number),
  });
  const it = raw[Symbol.asyncIterator]();
  const ask = async (id: number) => {
    await raw.send(JSON.stringify({ jsonrpc: "2.0", id, method: "m" }));
    return await withDeadline(nextJson(it), D) as Record<string, unknown>;
  };
  const atLimit = await ask(1);
  assert.equal(JSON.stringify(atLimit).length, limit);
  assert.deepEqual(atLimit, { jsonrpc: "2.0", id: 1, result: { x: "a".repeat(limit - overhead) } });
  const twoByte = await ask(3);
  assert.equal(
    new TextEncoder().encode(JSON.stringify(twoByte)).length,
    limit,
    "measured in UTF-8",
  );
  for (const id of [4, 5]) {
    const past = await ask(id);
    assert.equal((past.error as { code: number }).code, -32603, `id ${id}: one byte past`);
    assert.match((past.error as { message: string }).message, /exceeds the 1024 byte limit/);
  }
  await peer.close();
});

/**
 * A channel that, like a Codex v1 mux stream, refuses a message over its limit
 * with a `RangeError`, counting every send attempt.
 */
class LimitedChannel implements MessageChannel {
  readonly maxMessageBytes: number;
  /** Every send attempt, taken or refused. */
  attempts: string[] = [];
  #inner: MessageChannel;

  constructor(inner: MessageChannel, limit: number) {
    this.#inner = inner;
    this.maxMessageBytes = limit;
  }

  get closed(): Promise<void> {
    return this.#inner.closed;
  }

  send(message: string): Promise<void> {
    this.attempts.push(message);
    const bytes = new TextEncoder().encode(message).length;
    if (bytes > this.maxMessageBytes) {
      return Promise.reject(
        new RangeError(`Cannot send message: ${bytes} bytes exceeds the limit`),
      );
    }
    return this.#inner.send(message);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<string> {
    return this.#inner[Symbol.asyncIterator]();
  }
}

Deno.test("JsonRpcPeer sends a reply at the channel's limit and answers one past it with a -32603 error", async () => {
  const [raw, inner] = channelPair();
  const limit = 2048;
  const channel = new LimitedChannel(inner, limit);
  const overhead = JSON.stringify({ jsonrpc: "2.0", id: 1, result: "" }).length;
  const peer = new JsonRpcPeer(channel, {
    onRequest: (method, params) => {
      const size = (params as { size: number }).size;
      if (method === "fail") throw new RpcError(-32000, "Cannot fail", "d".repeat(size));
      return "r".repeat(size);
    },
  });
  const it = raw[Symbol.asyncIterator]();
  await raw.send(JSON.stringify({ id: 1, method: "big", params: { size: limit - overhead } }));
  const atLimit = await withDeadline(nextJson(it), D);
  assert.equal(JSON.stringify(atLimit).length, limit);
  assert.equal((atLimit.result as string).length, limit - overhead);

  await raw.send(JSON.stringify({ id: 2, method: "big", params: { size: limit - overhead + 1 } }));
  assert.deepEqual(await withDeadline(nextJson(it), D), {
    jsonrpc: "2.0",
    id: 2,
    error: {
      code: -32603,
      message: `Cannot reply to "big": the reply is ${
        limit + 1
      } bytes, over this stream's ${limit}-byte message limit`,
    },
  });
  // An error reply the channel refuses is answered the same way.
  await raw.send(JSON.stringify({ id: 3, method: "fail", params: { size: limit } }));
  const refused = await withDeadline(nextJson(it), D) as {
    id: number;
    error: { code: number; message: string };
  };
  assert.equal(refused.id, 3);
  assert.equal(refused.error.code, -32603);
  assert.match(
    refused.error.message,
    /^Cannot reply to "fail": the reply is \d+ bytes, over this stream's 2048-byte/,
  );
  await peer.close();
});

Deno.test("JsonRpcPeer gives up quietly when the error reply is refused too, and keeps serving", async () => {
  const [raw, inner] = channelPair();
  const channel = new LimitedChannel(inner, 1024);
  const peer = new JsonRpcPeer(channel, { onRequest: () => "ok" });
  const it = raw[Symbol.asyncIterator]();
  const hugeId = "i".repeat(2048); // no reply with this id fits
  const tries = () => channel.attempts.filter((text) => text.includes(hugeId));
  await raw.send(JSON.stringify({ id: hugeId, method: "m" }));
  await until(() => tries().length >= 2, D, "the reply and its error reply attempted");
  await raw.send(JSON.stringify({ id: 2, method: "m" }));
  assert.deepEqual(await withDeadline(nextJson(it), D), { jsonrpc: "2.0", id: 2, result: "ok" });
  assert.equal(tries().length, 2, "the reply, then one error reply, then nothing");
  assert.match(tries()[1], /"code":-32603/);
  await peer.close();
});
