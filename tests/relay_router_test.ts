/**
 * RelayRouter over real loopback WebSockets: a tiny Deno.serve hands upgraded
 * sockets to the router; RelaySockets in the test act as executor and harnesses.
 */

import assert from "node:assert/strict";
import { decodeFrame, encodeFrame, type RelayFrame } from "../lib/relay/frame_codec.ts";
import { type ReceivedFrame, RelaySocket } from "../lib/relay/relay_socket.ts";
import {
  CLOSE_CODE_OVER_BUDGET,
  CLOSE_CODE_REPLACED,
  CLOSE_CODE_SLOW_PEER,
  CLOSE_OVER_BUDGET,
  RelayRouter,
  type RelayRouterOptions,
  ROUTER_FRAME_OVERHEAD_BYTES,
  type RouterEvent,
} from "../lib/mux/relay_router.ts";
import { until, withDeadline } from "./_support/deadline.ts";

const DEADLINE_MS = 5_000;
const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

function data(streamId: string, text: string, seq = 1): RelayFrame {
  return {
    version: 1,
    streamId,
    ack: 0,
    ackBits: 0,
    body: { kind: "data", seq, segmentIndex: 0, segmentCount: 1, payload: utf8.encode(text) },
  };
}

function resume(streamId: string, nextSeq = 1): RelayFrame {
  return { version: 1, streamId, ack: 0, ackBits: 0, body: { kind: "resume", nextSeq } };
}

function reset(streamId: string, reason: string): RelayFrame {
  return { version: 1, streamId, ack: 0, ackBits: 0, body: { kind: "reset", reason } };
}

function heartbeat(streamId: string): RelayFrame {
  return { version: 1, streamId, ack: 0, ackBits: 0, body: { kind: "heartbeat" } };
}

function payloadOf(frame: RelayFrame): string {
  assert.equal(frame.body.kind, "data", `expected data on ${frame.streamId}`);
  return utf8d.decode((frame.body as { payload: Uint8Array }).payload);
}

function resetReason(frame: RelayFrame): string {
  assert.equal(frame.body.kind, "reset", `expected a reset on ${frame.streamId}`);
  return (frame.body as { reason: string }).reason;
}

/** Reads frames from a socket, one awaited frame at a time, with a deadline. */
class Inbox {
  #it: AsyncIterator<ReceivedFrame>;
  constructor(socket: RelaySocket) {
    this.#it = socket[Symbol.asyncIterator]();
  }
  async next(label = "frame", ms = DEADLINE_MS): Promise<ReceivedFrame> {
    const result = await withDeadline(this.#it.next(), ms, label);
    assert.ok(!result.done, `socket closed while waiting for ${label}`);
    return result.value;
  }
  async end(label = "socket end", ms = DEADLINE_MS): Promise<void> {
    const result = await withDeadline(this.#it.next(), ms, label);
    assert.ok(result.done, `expected ${label}, got a frame on ${result.value?.streamId}`);
  }
}

interface Peer {
  socket: RelaySocket;
  inbox: Inbox;
}

/** A router behind a minimal Deno.serve, with an event log. */
class RouterHost {
  readonly router: RelayRouter;
  readonly events: RouterEvent[] = [];
  readonly url: string;
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #waiters: {
    match: (e: RouterEvent) => boolean;
    resolve: (e: RouterEvent) => void;
    reject: (error: Error) => void;
  }[] = [];
  readonly #sockets: RelaySocket[] = [];

  /** `socketMaxFrameBytes`: the sockets' own limit, when it differs from the router's. */
  constructor(options: RelayRouterOptions = {}, socketMaxFrameBytes?: number) {
    this.router = new RelayRouter({
      ...options,
      onEvent: (event) => {
        this.events.push(event);
        for (const waiter of [...this.#waiters]) {
          if (waiter.match(event)) {
            this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
            waiter.resolve(event);
          }
        }
      },
    });
    const maxFrameBytes = socketMaxFrameBytes ?? options.maxFrameBytes;
    this.#server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
      const match = /^\/(executor|harness)\/([^/]+)$/.exec(new URL(req.url).pathname);
      if (match === null) return new Response("not found", { status: 404 });
      const role = match[1] as "executor" | "harness";
      const refusal = this.router.admits(role, match[2]);
      if (refusal !== undefined) return new Response(refusal, { status: 503 });
      const { socket, response } = Deno.upgradeWebSocket(req);
      // As the rendezvous does: unread received frames count against the router's budget.
      const relay = RelaySocket.accept(socket, { maxFrameBytes, budget: this.router.queueBudget });
      if (role === "executor") this.router.addExecutor(match[2], relay);
      else this.router.addHarness(match[2], relay);
      return response;
    });
    this.url = `ws://127.0.0.1:${this.#server.addr.port}`;
  }

  get port(): number {
    return this.#server.addr.port;
  }

  /** Resolves with the first event (past or future) that matches. */
  event(match: (e: RouterEvent) => boolean, label = "router event"): Promise<RouterEvent> {
    const seen = this.events.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return withDeadline(
      new Promise<RouterEvent>((resolve, reject) => this.#waiters.push({ match, resolve, reject })),
      DEADLINE_MS,
      label,
    );
  }

  async connect(
    role: "executor" | "harness",
    executorId = "e1",
    maxFrameBytes?: number,
  ): Promise<Peer> {
    const socket = await RelaySocket.connect(`${this.url}/${role}/${executorId}`, {
      maxFrameBytes,
    });
    this.#sockets.push(socket);
    return { socket, inbox: new Inbox(socket) };
  }

  async close(): Promise<void> {
    await Promise.all(this.#sockets.map((s) => s.close()));
    await this.router.close();
    await this.#server.shutdown();
    // An event that never came (a test proving its absence): its wait and timer end here.
    for (const waiter of this.#waiters.splice(0)) {
      waiter.reject(new Error("the router host closed"));
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

async function host(
  options: RelayRouterOptions = {},
  socketMaxFrameBytes?: number,
): Promise<RouterHost> {
  return await Promise.resolve(new RouterHost(options, socketMaxFrameBytes));
}

/** Sends a frame from a harness and waits for the executor to receive it. */
async function through(from: Peer, to: Peer, frame: RelayFrame): Promise<ReceivedFrame> {
  await from.socket.send(frame);
  return await to.inbox.next(`${frame.body.kind} on ${frame.streamId}`);
}

Deno.test("RelayRouter routes many streams between one executor and several harness sockets without cross-talk", async () => {
  await using h = await host();
  const executor = await h.connect("executor");
  const harnesses = [
    await h.connect("harness"),
    await h.connect("harness"),
    await h.connect(
      "harness",
    ),
  ];
  const sent = new Map<string, Uint8Array>();
  const sends: Promise<void>[] = [];
  for (let i = 0; i < harnesses.length; i++) {
    for (let j = 0; j < 20; j++) {
      const frame = data(`h${i}-s${j}`, `request ${i}/${j}`);
      sent.set(frame.streamId, encodeFrame(frame));
      sends.push(harnesses[i].socket.send(frame));
    }
  }
  await Promise.all(sends);
  for (let n = 0; n < sent.size; n++) {
    const frame = await executor.inbox.next(`request ${n}`);
    // Forwarded untouched: byte-identical to what the harness encoded.
    assert.deepEqual(frame.bytes, sent.get(frame.streamId));
    await executor.socket.send(data(frame.streamId, `reply to ${payloadOf(frame)}`));
  }
  for (let i = 0; i < harnesses.length; i++) {
    const seen = new Set<string>();
    for (let j = 0; j < 20; j++) {
      const frame = await harnesses[i].inbox.next(`reply ${i}/${j}`);
      assert.ok(frame.streamId.startsWith(`h${i}-`), `harness ${i} got ${frame.streamId}`);
      const [, j2] = frame.streamId.split("-s");
      assert.equal(payloadOf(frame), `reply to request ${i}/${j2}`);
      seen.add(frame.streamId);
    }
    assert.equal(seen.size, 20);
  }
  assert.deepEqual(h.router.stats(), {
    executors: 1,
    executorSockets: 1,
    harnessSockets: 3,
    streams: 60,
    parkedStreams: 0,
  });
});

Deno.test("RelayRouter resets a stream owned by another harness socket with stream_in_use", async () => {
  await using h = await host();
  const executor = await h.connect("executor");
  const a = await h.connect("harness");
  const b = await h.connect("harness");
  assert.equal(payloadOf(await through(a, executor, data("s", "from a"))), "from a");
  await b.socket.send(data("s", "from b"));
  const refused = await b.inbox.next("stream_in_use");
  assert.equal(refused.streamId, "s");
  assert.equal(resetReason(refused), "stream_in_use");
  // A reset from the intruder neither reaches the executor nor frees the stream.
  await b.socket.send(reset("s", "stream_closed"));
  assert.equal(payloadOf(await through(a, executor, data("s", "still a", 2))), "still a");
  await executor.socket.send(data("s", "to a"));
  assert.equal(payloadOf(await a.inbox.next("reply to a")), "to a");
});

Deno.test("RelayRouter moves a stream to a harness socket that resumes it while the old owner is still open", async () => {
  await using h = await host();
  const executor = await h.connect("executor");
  // `old` stands for a socket the harness gave up on (half-open after a
  // network drop): the router still sees it open.
  const old = await h.connect("harness");
  const fresh = await h.connect("harness");
  await through(old, executor, data("s", "before the drop"));
  await through(old, executor, data("t", "a stream the old socket keeps"));
  // Data from a non-owner is still refused, and changes nothing.
  await fresh.socket.send(data("s", "data first", 2));
  const refused = await fresh.inbox.next("stream_in_use to fresh");
  assert.deepEqual([refused.streamId, resetReason(refused)], ["s", "stream_in_use"]);
  // A resume takes the stream over; the executor gets the frame untouched.
  const sent = resume("s", 2);
  const resumed = await through(fresh, executor, sent);
  assert.deepEqual(resumed.bytes, encodeFrame(sent));
  assert.deepEqual(
    { streams: h.router.stats().streams, parked: h.router.stats().parkedStreams },
    { streams: 2, parked: 0 },
  );
  // The executor's frames for the stream now go to the new owner.
  await executor.socket.send(data("s", "to the new owner", 2));
  assert.equal(payloadOf(await fresh.inbox.next("reply to fresh")), "to the new owner");
  // The old socket lost it: its data is refused (the reset is its first
  // frame, so the executor's reply did not go there), its reset dropped.
  await old.socket.send(reset("s", "stream_closed"));
  await old.socket.send(data("s", "late from the old socket", 2));
  const lost = await old.inbox.next("stream_in_use to old");
  assert.deepEqual([lost.streamId, resetReason(lost)], ["s", "stream_in_use"]);
  assert.equal(
    payloadOf(await through(fresh, executor, data("s", "still flowing", 2))),
    "still flowing",
  );
  // The old socket keeps its other streams.
  assert.equal(payloadOf(await through(old, executor, data("t", "t again", 2))), "t again");
  // When the old socket finally goes, it parks only what it still owns.
  await old.socket.close();
  const detached = await h.event((e) => e.type === "harness_detached");
  assert.deepEqual(detached, { type: "harness_detached", executorId: "e1", parkedStreams: 1 });
  await executor.socket.send(data("s", "after the old socket left", 3));
  assert.equal(
    payloadOf(await fresh.inbox.next("reply after close")),
    "after the old socket left",
  );
  assert.equal(h.router.stats().parkedStreams, 1);
});

Deno.test("RelayRouter answers executor_offline when no executor has connected", async () => {
  await using h = await host();
  const harness = await h.connect("harness");
  await harness.socket.send(data("s", "anyone?"));
  const frame = await harness.inbox.next("executor_offline");
  assert.equal(frame.streamId, "s");
  assert.equal(resetReason(frame), "executor_offline");
  assert.equal(h.router.stats().streams, 0);
});

Deno.test("RelayRouter removes a route when a reset passes through, in either direction", async () => {
  await using h = await host();
  const executor = await h.connect("executor");
  const a = await h.connect("harness");
  const b = await h.connect("harness");
  await through(a, executor, data("s", "hello"));
  assert.equal(
    resetReason(await through(a, executor, reset("s", "stream_closed"))),
    "stream_closed",
  );
  // The id is free again: another socket may open it.
  assert.equal(payloadOf(await through(b, executor, data("s", "b now"))), "b now");
  await executor.socket.send(reset("s", "shutdown"));
  assert.equal(resetReason(await b.inbox.next("reset to b")), "shutdown");
  assert.equal(h.router.stats().streams, 0);
});

Deno.test("RelayRouter resets a departed harness's streams toward the executor after the detach window", async () => {
  const windowMs = 300;
  await using h = await host({ detachWindowMs: windowMs });
  const executor = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, executor, data("s1", "one"));
  await through(harness, executor, data("s2", "two"));
  const left = performance.now();
  await harness.socket.close();
  await h.event((e) => e.type === "harness_detached");
  assert.equal(h.router.stats().parkedStreams, 2);
  const first = await executor.inbox.next("harness_disconnected 1");
  const second = await executor.inbox.next("harness_disconnected 2");
  assert.ok(performance.now() - left >= windowMs * 0.9, "reset came before the window");
  assert.deepEqual(
    [first, second].map((f) => [f.streamId, resetReason(f)]).sort(),
    [["s1", "harness_disconnected"], ["s2", "harness_disconnected"]],
  );
  assert.equal(h.router.stats().streams, 0);
});

Deno.test("RelayRouter tells the executor at once of a departed harness's Codex v1 streams, which cannot resume, and parks its reliable ones", async () => {
  // A window far longer than the test: any reset seen now is not the window's.
  await using h = await host({ detachWindowMs: 60_000 });
  const executor = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, executor, data("legacy", "codex v1", 0));
  await through(harness, executor, data("reliable", "outpost"));
  await harness.socket.close();
  const told = await executor.inbox.next("harness_disconnected for the legacy stream");
  assert.deepEqual([told.streamId, resetReason(told)], ["legacy", "harness_disconnected"]);
  assert.equal(h.router.stats().parkedStreams, 1, "the reliable stream waits for its harness");
  // The reliable stream is still the harness's to take back.
  const back = await h.connect("harness");
  assert.equal(payloadOf(await through(back, executor, data("reliable", "again", 2))), "again");
});

Deno.test("RelayRouter lets a returning harness socket reclaim its parked streams within the window", async () => {
  // The test reconnects and resumes within the window: room for a loaded machine.
  const windowMs = 1_000;
  await using h = await host({ detachWindowMs: windowMs });
  const executor = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, executor, data("kept", "one"));
  await through(harness, executor, data("dropped", "two"));
  await harness.socket.close();
  await h.event((e) => e.type === "harness_detached");
  // While parked, executor frames for the stream are not delivered anywhere.
  await executor.socket.send(data("kept", "lost while away", 2));
  const back = await h.connect("harness");
  const claimed = await through(back, executor, resume("kept", 2));
  assert.equal(claimed.streamId, "kept");
  assert.equal(claimed.body.kind, "resume");
  // The stream that was not reclaimed expires; the reclaimed one does not.
  const expired = await executor.inbox.next("harness_disconnected");
  assert.deepEqual([expired.streamId, resetReason(expired)], ["dropped", "harness_disconnected"]);
  await executor.socket.send(data("kept", "after the window", 3));
  assert.equal(payloadOf(await back.inbox.next("reply after window")), "after the window");
  assert.deepEqual(h.router.stats().streams, 1);
  assert.deepEqual(h.router.stats().parkedStreams, 0);
});

/**
 * Counts the live timers of one delay (the router's detach window: pick a
 * value nothing else uses) by wrapping the global timer functions until disposed.
 */
function liveTimersOf(delayMs: number): { readonly count: number } & Disposable {
  type Timer = ReturnType<typeof setTimeout>;
  const live = new Set<Timer>();
  const realSet = globalThis.setTimeout;
  const realClear = globalThis.clearTimeout;
  globalThis.setTimeout = ((callback: () => void, ms?: number) => {
    const id = realSet(() => {
      live.delete(id);
      callback();
    }, ms);
    if (ms === delayMs) live.add(id);
    return id;
  }) as typeof setTimeout;
  globalThis.clearTimeout = ((id?: Timer) => {
    if (id !== undefined) live.delete(id);
    realClear(id);
  }) as typeof clearTimeout;
  return {
    get count() {
      return live.size;
    },
    [Symbol.dispose]() {
      globalThis.setTimeout = realSet;
      globalThis.clearTimeout = realClear;
    },
  };
}

Deno.test("RelayRouter leaves no detach timer behind when returning harness sockets take their stream back", async () => {
  const windowMs = 777;
  using timers = liveTimersOf(windowMs);
  await using h = await host({ detachWindowMs: windowMs });
  const executor = await h.connect("executor");
  let harness = await h.connect("harness");
  await through(harness, executor, data("s", "start"));
  const reconnects = 30;
  for (let i = 1; i <= reconnects; i++) {
    await harness.socket.close();
    await until(
      () => h.events.filter((e) => e.type === "harness_detached").length === i,
      DEADLINE_MS,
      `harness ${i} detached`,
    );
    assert.equal(h.router.stats().parkedStreams, 1);
    harness = await h.connect("harness");
    await through(harness, executor, resume("s", 2));
    assert.equal(timers.count, 0, `live detach timers after ${i} takeovers`);
  }
  // Past the window of every parking, the stream is still routed both ways.
  const expiry = h.event((e) => e.type === "streams_expired");
  await assert.rejects(withDeadline(expiry, windowMs * 2, "expiry"), /deadline/);
  assert.equal(
    payloadOf(await through(harness, executor, data("s", "still here", 2))),
    "still here",
  );
  await executor.socket.send(data("s", "and back", 2));
  assert.equal(payloadOf(await harness.inbox.next("reply")), "and back");
  assert.deepEqual(h.router.stats().streams, 1);
});

Deno.test("RelayRouter clears a parking's timer only once none of its streams is parked", async () => {
  // Long enough that b's parking cannot expire before the checks (the test never waits it out).
  const windowMs = 1_555;
  using timers = liveTimersOf(windowMs);
  await using h = await host({ detachWindowMs: windowMs });
  const executor = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, executor, data("a", "one"));
  await through(harness, executor, data("b", "two"));
  await harness.socket.close();
  await h.event((e) => e.type === "harness_detached");
  assert.equal(timers.count, 1);
  const back = await h.connect("harness");
  await through(back, executor, resume("a", 2));
  assert.equal(timers.count, 1, "b is still parked");
  // The executor ends b: nothing is parked any more.
  await executor.socket.send(reset("b", "shutdown"));
  await until(() => h.router.stats().streams === 1, DEADLINE_MS, "b gone");
  assert.equal(timers.count, 0);
});

Deno.test("RelayRouter resets every harness stream with executor_disconnected after the executor's window", async () => {
  const windowMs = 300;
  await using h = await host({ detachWindowMs: windowMs });
  const executor = await h.connect("executor");
  const a = await h.connect("harness");
  const b = await h.connect("harness");
  await through(a, executor, data("a1", "x"));
  await through(b, executor, data("b1", "y"));
  const left = performance.now();
  await executor.socket.close();
  const ra = await a.inbox.next("executor_disconnected to a");
  const rb = await b.inbox.next("executor_disconnected to b");
  assert.ok(performance.now() - left >= windowMs * 0.9, "reset came before the window");
  assert.deepEqual([ra.streamId, resetReason(ra)], ["a1", "executor_disconnected"]);
  assert.deepEqual([rb.streamId, resetReason(rb)], ["b1", "executor_disconnected"]);
  // After the window the executor counts as offline again.
  await a.socket.send(data("a2", "anyone?"));
  assert.equal(resetReason(await a.inbox.next("executor_offline")), "executor_offline");
});

Deno.test("RelayRouter keeps routes and delivers held frames when the executor reconnects within the window", async () => {
  // The test sends two frames and reconnects within the window: room for a loaded machine.
  const windowMs = 1_000;
  await using h = await host({ detachWindowMs: windowMs });
  const first = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, first, data("s", "before"));
  await first.socket.close();
  await h.event((e) => e.type === "executor_detached");
  await harness.socket.send(data("s", "while away", 2));
  await harness.socket.send(data("new", "opened while away"));
  const second = await h.connect("executor");
  assert.equal(payloadOf(await second.inbox.next("held 1")), "while away");
  assert.equal(payloadOf(await second.inbox.next("held 2")), "opened while away");
  const expiry = h.event((e) => e.type === "streams_expired" || e.type === "executor_expired");
  await second.socket.send(data("s", "from the new executor"));
  assert.equal(payloadOf(await harness.inbox.next("reply")), "from the new executor");
  // Past the old window nothing expires: prove absence by waiting it out once
  // (its timer started before now, so 1.5 windows leave room for a late timer).
  await assert.rejects(withDeadline(expiry, windowMs * 1.5, "expiry"), /deadline/);
  await second.socket.send(data("new", "still routed"));
  assert.equal(payloadOf(await harness.inbox.next("reply 2")), "still routed");
});

Deno.test("RelayRouter resets a stream the returning executor does not resume within the window (a restarted executor)", async () => {
  // The executor must reconnect and resume "kept" within the window: room for a loaded machine.
  const windowMs = 1_000;
  for (const replaced of [false, true]) {
    await using h = await host({ detachWindowMs: windowMs });
    const first = await h.connect("executor");
    const harness = await h.connect("harness");
    // Two quiet streams: the harness waits on both and sends nothing more.
    await through(harness, first, data("kept", "start"));
    await through(harness, first, data("lost", "start"));
    if (!replaced) {
      await first.socket.close();
      await h.event((e) => e.type === "executor_detached");
    }
    // Before the window opens (it opens when the executor attaches), so a slow
    // connect cannot make a correct reset look early.
    const started = performance.now();
    const second = await h.connect("executor");
    // The executor speaks for one stream (a reconnecting mux resumes each at once).
    await second.socket.send(resume("kept", 2));
    assert.equal((await harness.inbox.next("the executor's resume")).body.kind, "resume");
    const frame = await harness.inbox.next("reset of the stream nobody resumed", windowMs * 10);
    assert.equal(frame.streamId, "lost");
    assert.equal(resetReason(frame), "executor_disconnected");
    assert.ok(performance.now() - started >= windowMs * 0.9, "not before the window ends");
    assert.deepEqual(await h.event((e) => e.type === "streams_not_resumed"), {
      type: "streams_not_resumed",
      executorId: "e1",
      streams: 1,
    });
    assert.equal(
      resetReason(await second.inbox.next("reset toward the executor")),
      "executor_disconnected",
    );
    // The resumed stream still routes both ways.
    assert.equal(payloadOf(await through(harness, second, data("kept", "more", 2))), "more");
    await second.socket.send(data("kept", "back", 2));
    assert.equal(payloadOf(await harness.inbox.next("reply on kept")), "back");
  }
});

Deno.test("RelayRouter still resets a stream a returning executor does not resume when the harness sent only acks, resumes or heartbeats for it", async () => {
  // A restarted executor may ignore those (Codex's does): they prove nothing.
  const windowMs = 1_000;
  await using h = await host({ detachWindowMs: windowMs });
  const first = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, first, data("quiet", "start"));
  await first.socket.close();
  await h.event((e) => e.type === "executor_detached");
  await harness.socket.send({ ...heartbeat("quiet"), ack: 1 }); // held while away
  const started = performance.now();
  const second = await h.connect("executor");
  assert.equal((await second.inbox.next("held heartbeat")).body.kind, "heartbeat");
  await harness.socket.send({
    version: 1,
    streamId: "quiet",
    ack: 1,
    ackBits: 0,
    body: { kind: "ack" },
  });
  await harness.socket.send({ ...resume("quiet", 2), ack: 1 });
  assert.equal((await second.inbox.next("ack")).body.kind, "ack");
  assert.equal((await second.inbox.next("resume")).body.kind, "resume");
  const frame = await harness.inbox.next("reset of the stream nobody resumed", windowMs * 10);
  assert.equal(resetReason(frame), "executor_disconnected");
  assert.ok(performance.now() - started >= windowMs * 0.9, "not before the window ends");
});

Deno.test("RelayRouter replaces an executor socket with a newer one for the same id", async () => {
  await using h = await host();
  const old = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, old, data("s", "one"));
  const fresh = await h.connect("executor");
  const info = await withDeadline(old.socket.closed, DEADLINE_MS, "old executor closed");
  assert.equal(info.code, CLOSE_CODE_REPLACED);
  assert.equal(info.reason, "replaced");
  assert.equal(payloadOf(await through(harness, fresh, data("s", "two", 2))), "two");
  await fresh.socket.send(data("s", "back"));
  assert.equal(payloadOf(await harness.inbox.next("reply")), "back");
});

Deno.test("RelayRouter admits harness sockets up to the limit and refuses one past it", async () => {
  await using h = await host({ maxHarnessSockets: 2 });
  await h.connect("harness");
  await h.connect("harness");
  assert.equal(h.router.admits("harness", "e1"), "too_many_harness_sockets");
  await assert.rejects(h.connect("harness"), /503|closed|connect/i);
  // Another executor id has its own budget.
  await h.connect("harness", "e2");
});

Deno.test("RelayRouter admits executor ids up to the limit and refuses one past it", async () => {
  await using h = await host({ maxExecutors: 2 });
  await h.connect("executor", "e1");
  await h.connect("harness", "e2");
  assert.equal(h.router.admits("executor", "e3"), "too_many_executors");
  await assert.rejects(h.connect("executor", "e3"), /503|closed|connect/i);
  // Known ids are still admitted.
  assert.equal(h.router.admits("executor", "e2"), undefined);
  await h.connect("executor", "e2");
});

Deno.test("RelayRouter routes streams up to the limit and resets one past it with too_many_streams", async () => {
  await using h = await host({ maxStreams: 3, reservedStreamsPerHarness: 0 });
  const executor = await h.connect("executor");
  const harness = await h.connect("harness");
  for (const id of ["s1", "s2", "s3"]) await through(harness, executor, data(id, id));
  await harness.socket.send(data("s4", "one too many"));
  const refused = await harness.inbox.next("too_many_streams");
  assert.deepEqual([refused.streamId, resetReason(refused)], ["s4", "too_many_streams"]);
  // Ending a stream frees a slot.
  await through(harness, executor, reset("s1", "stream_closed"));
  assert.equal(payloadOf(await through(harness, executor, data("s4", "now fits"))), "now fits");
});

Deno.test("RelayRouter limits streams per harness socket: at the limit ok, one past reset", async () => {
  await using h = await host({ maxStreamsPerHarness: 2 });
  const executor = await h.connect("executor");
  const a = await h.connect("harness");
  const b = await h.connect("harness");
  await through(a, executor, data("a1", "1"));
  await through(a, executor, data("a2", "2"));
  await a.socket.send(data("a3", "3"));
  const refused = await a.inbox.next("too_many_streams");
  assert.deepEqual([refused.streamId, resetReason(refused)], ["a3", "too_many_streams"]);
  // Another socket has its own share.
  assert.equal(payloadOf(await through(b, executor, data("b1", "b"))), "b");
});

Deno.test("RelayRouter keeps a reserve of streams for every harness socket when one took them all", async () => {
  await using h = await host({ maxStreams: 4, reservedStreamsPerHarness: 1 });
  const executor = await h.connect("executor");
  const greedy = await h.connect("harness");
  for (let i = 0; i < 4; i++) await through(greedy, executor, data(`g${i}`, "x"));
  await greedy.socket.send(data("g4", "x"));
  assert.equal(resetReason(await greedy.inbox.next("greedy refused")), "too_many_streams");
  const polite = await h.connect("harness");
  assert.equal(payloadOf(await through(polite, executor, data("p1", "hi"))), "hi");
  // The reserve is one stream: the second is refused while the executor is full.
  await polite.socket.send(data("p2", "more"));
  assert.equal(resetReason(await polite.inbox.next("polite refused")), "too_many_streams");
  assert.equal(h.router.stats().streams, 5);
});

/** A data frame whose encoding is exactly `size` bytes. */
function frameOfSize(streamId: string, size: number): Uint8Array {
  let n = size - 16;
  for (;;) {
    const bytes = encodeFrame({
      version: 1,
      streamId,
      ack: 0,
      ackBits: 0,
      body: { kind: "data", seq: 1, segmentIndex: 0, segmentCount: 1, payload: new Uint8Array(n) },
    });
    if (bytes.length === size) return bytes;
    n += size - bytes.length;
  }
}

Deno.test("RelayRouter forwards a frame of exactly 256 KiB; one byte more ends its stream message_too_large both ways", async () => {
  const limit = 256 * 1024;
  await using h = await host();
  const executor = await h.connect("executor");
  const harness = await h.connect("harness", "e1", limit * 2);
  const atLimit = frameOfSize("s", limit);
  await harness.socket.sendBytes(atLimit);
  const got = await executor.inbox.next("frame at the limit");
  assert.equal(got.bytes.length, limit);
  assert.deepEqual(got.bytes, atLimit);
  await harness.socket.sendBytes(frameOfSize("s", limit + 1));
  // The oversize frame is dropped, and both ends hear that its stream ended.
  for (const [end, name] of [[harness, "harness"], [executor, "executor"]] as const) {
    const reset = await end.inbox.next(`reset to the ${name}`);
    assert.equal(reset.streamId, "s");
    assert.deepEqual(reset.body, { kind: "reset", reason: "message_too_large" });
  }
  // The socket's other streams go on.
  assert.equal(payloadOf(await through(harness, executor, data("t", "after"))), "after");
});

Deno.test("RelayRouter given a smaller limit than its sockets forwards a frame at its own limit; one byte more, from either side, ends the stream message_too_large both ways", async () => {
  const limit = 1024;
  await using h = await host({ maxFrameBytes: limit }, 256 * 1024);
  const executor = await h.connect("executor");
  const harness = await h.connect("harness");
  const atLimit = frameOfSize("s", limit);
  await harness.socket.sendBytes(atLimit);
  assert.deepEqual((await executor.inbox.next("frame at the limit")).bytes, atLimit);
  const endsBothWays = async (from: Peer, id: string) => {
    await from.socket.sendBytes(frameOfSize(id, limit + 1));
    for (const [end, name] of [[harness, "harness"], [executor, "executor"]] as const) {
      const reset = await end.inbox.next(`reset of ${id} to the ${name}`);
      assert.equal(reset.streamId, id);
      assert.deepEqual(reset.body, { kind: "reset", reason: "message_too_large" });
    }
  };
  await endsBothWays(harness, "s");
  assert.equal(payloadOf(await through(harness, executor, data("u", "open"))), "open");
  await endsBothWays(executor, "u");
  // The sockets' other streams go on.
  assert.equal(payloadOf(await through(harness, executor, data("t", "after"))), "after");
});

Deno.test("RelayRouter holds frames for an away executor up to the byte bound and drops past it", async () => {
  const frames = [data("s", "a", 2), data("s", "b", 3), data("s", "c", 4)];
  const bound = frames.reduce((n, f) => n + encodeFrame(f).length + ROUTER_FRAME_OVERHEAD_BYTES, 0);
  await using h = await host({ maxOfflineQueueBytes: bound, detachWindowMs: 5_000 });
  const first = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, first, data("s", "open"));
  await first.socket.close();
  await h.event((e) => e.type === "executor_detached");
  for (const f of frames) await harness.socket.send(f);
  await harness.socket.send(data("s", "one byte past", 5));
  const dropped = await h.event((e) => e.type === "frames_dropped");
  assert.deepEqual(dropped, {
    type: "frames_dropped",
    executorId: "e1",
    reason: "offline_queue_full",
  });
  const second = await h.connect("executor");
  for (const text of ["a", "b", "c"]) {
    assert.equal(payloadOf(await second.inbox.next(`held ${text}`)), text);
  }
  assert.equal(payloadOf(await through(harness, second, data("s", "live", 6))), "live");
});

Deno.test("RelayRouter charges held frames their overhead: many tiny frames up to the bound are held, one more is dropped", async () => {
  const count = 1000;
  const charge = encodeFrame(heartbeat("s")).length + ROUTER_FRAME_OVERHEAD_BYTES;
  await using h = await host({ maxOfflineQueueBytes: count * charge, detachWindowMs: 5_000 });
  const first = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, first, data("s", "open"));
  await first.socket.close();
  await h.event((e) => e.type === "executor_detached");
  for (let i = 0; i < count; i++) await harness.socket.send(heartbeat("s"));
  await harness.socket.send(heartbeat("s"));
  const dropped = await h.event((e) => e.type === "frames_dropped", "offline queue full");
  assert.deepEqual(dropped, {
    type: "frames_dropped",
    executorId: "e1",
    reason: "offline_queue_full",
  });
  // Exactly `count` were held: the returning executor gets them, then live frames.
  const second = await h.connect("executor");
  for (let i = 0; i < count; i++) {
    assert.equal((await second.inbox.next(`held heartbeat ${i}`)).body.kind, "heartbeat");
  }
  assert.equal(payloadOf(await through(harness, second, data("s", "live", 2))), "live");
});

/**
 * The router's end of a harness socket whose peer stopped reading: the first
 * send never completes, so every later frame stays in the router's queue. (A
 * real socket's kernel buffers would absorb an unknown number of frames.)
 */
class StalledHarnessSocket implements AsyncIterable<ReceivedFrame> {
  readonly bufferedAmount = 0;
  readonly sent: Uint8Array[] = [];
  readonly closeCall = Promise.withResolvers<{ reason?: string; code?: number }>();
  #inbound: ReceivedFrame[] = [];
  #wake: (() => void) | undefined;
  #closed = false;
  #released = false;
  /** Sends not yet completed, oldest first. */
  #pending: PromiseWithResolvers<void>[] = [];

  /** Delivers a frame to the router as if the harness had sent it. */
  receive(frame: RelayFrame): void {
    this.#inbound.push({ ...frame, bytes: encodeFrame(frame) });
    this.#wake?.();
  }

  sendBytes(bytes: Uint8Array): Promise<void> {
    this.sent.push(bytes);
    if (this.#released) return Promise.resolve();
    const send = Promise.withResolvers<void>();
    send.promise.catch(() => {});
    this.#pending.push(send);
    return send.promise;
  }

  /** The router stopped reading this socket: its unread frames go. */
  dropUnread(): void {
    this.#inbound.length = 0;
  }

  /** Completes the oldest send in progress (a harness reading one frame). */
  drainOne(): void {
    this.#pending.shift()?.resolve();
  }

  /** Ends the stall: the send in progress and every later one complete at once. */
  release(): void {
    this.#released = true;
    for (const send of this.#pending.splice(0)) send.resolve();
  }

  close(reason?: string, code?: number): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const send of this.#pending.splice(0)) send.reject(new Error("closed"));
      this.closeCall.resolve({ reason, code });
      this.#wake?.();
    }
    return Promise.resolve();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ReceivedFrame> {
    for (;;) {
      const frame = this.#inbound.shift();
      if (frame !== undefined) {
        yield frame;
      } else if (this.#closed) {
        return;
      } else {
        await new Promise<void>((resolve) => this.#wake = resolve);
        this.#wake = undefined;
      }
    }
  }
}

Deno.test("RelayRouter charges queued frames their overhead: many tiny frames up to the limit stay queued, one more drops the socket", async () => {
  const count = 2000;
  const charge = encodeFrame(heartbeat("s")).length + ROUTER_FRAME_OVERHEAD_BYTES;
  await using h = await host({ maxPeerQueueBytes: count * charge, slowPeerTimeoutMs: 60_000 });
  const executor = await h.connect("executor");
  const fast = await h.connect("harness");
  await through(fast, executor, data("marker", "hello"));
  const stalled = new StalledHarnessSocket();
  h.router.addHarness("e1", stalled as unknown as RelaySocket);
  stalled.receive(resume("s"));
  assert.equal(
    (await executor.inbox.next("resume from the stalled harness")).body.kind,
    "resume",
  );
  /** Returns once the router has routed every frame the executor sent before. */
  const routed = async (label: string) => {
    await executor.socket.send(data("marker", label));
    assert.equal(payloadOf(await fast.inbox.next(label)), label);
  };
  // The first frame is in the stalled send; `count` more fill the queue to the limit.
  for (let i = 0; i <= count; i++) await executor.socket.send(heartbeat("s"));
  await routed("at the limit");
  assert.equal(stalled.sent.length, 1);
  assert.ok(h.events.every((e) => e.type !== "peer_dropped"), "dropped at the limit");
  await executor.socket.send(heartbeat("s"));
  assert.deepEqual(await h.event((e) => e.type === "peer_dropped", "slow peer dropped"), {
    type: "peer_dropped",
    executorId: "e1",
    role: "harness",
    reason: "slow_peer",
  });
  assert.deepEqual(await withDeadline(stalled.closeCall.promise, DEADLINE_MS, "close"), {
    reason: "slow_peer",
    code: CLOSE_CODE_SLOW_PEER,
  });
  await routed("after the drop");
});

Deno.test("RelayRouter sheds reliable data for a harness socket past half its queue bound and keeps the socket", async () => {
  const frameBytes = 64 * 1024;
  const charge = frameBytes + ROUTER_FRAME_OVERHEAD_BYTES;
  const maxQueue = 32 * charge;
  await using h = await host({ maxPeerQueueBytes: maxQueue, slowPeerTimeoutMs: 60_000 });
  const executor = await h.connect("executor");
  const fast = await h.connect("harness");
  await through(fast, executor, data("marker", "hello"));
  const stalled = new StalledHarnessSocket();
  h.router.addHarness("e1", stalled as unknown as RelaySocket);
  stalled.receive(data("r", "hello", 1)); // a reliable stream
  stalled.receive(data("l", "hello", 0)); // a legacy stream
  assert.equal((await executor.inbox.next("reliable hello")).streamId, "r");
  assert.equal((await executor.inbox.next("legacy hello")).streamId, "l");
  const seen = (type: RouterEvent["type"]) => h.events.filter((e) => e.type === type).length;
  const routed = async (label: string) => {
    await executor.socket.send(data("marker", label));
    assert.equal(payloadOf(await fast.inbox.next(label)), label);
  };
  // One frame sits in the stalled send; 16 more fill the queue to half its bound.
  const reliable = frameOfSize("r", frameBytes);
  for (let i = 0; i <= 16; i++) await executor.socket.sendBytes(reliable);
  await routed("at half");
  assert.equal(seen("frames_dropped"), 0, "shed at half the bound");
  // Past half: 40 more reliable frames (more than the whole bound) are shed, the socket stays.
  for (let i = 0; i < 40; i++) await executor.socket.sendBytes(reliable);
  await routed("shedding");
  assert.deepEqual(h.events.filter((e) => e.type === "frames_dropped"), [
    { type: "frames_dropped", executorId: "e1", reason: "harness_behind" },
  ]);
  assert.equal(seen("peer_dropped"), 0, "the socket was dropped");
  // Legacy data is never shed (nothing resends it): it fills the rest of the bound...
  const legacy = frameOfSize("l", frameBytes);
  for (let i = 0; i < 16; i++) await executor.socket.sendBytes(legacy);
  await routed("legacy at the bound");
  assert.equal(seen("peer_dropped"), 0, "dropped at the bound");
  // ...and the stalled socket delivers all of it, in order, once it drains.
  stalled.release();
  await until(() => stalled.sent.length === 1 + 16 + 16, DEADLINE_MS, "the queue drained");
  const streams = stalled.sent.map((bytes) => decodeFrame(bytes).streamId);
  assert.deepEqual(streams, [...Array(17).fill("r"), ...Array(16).fill("l")]);
  // Drained, reliable data flows again.
  await executor.socket.sendBytes(reliable);
  await until(() => stalled.sent.length === 34, DEADLINE_MS, "reliable data after the drain");
});

/**
 * A harness socket that keeps reading, slower than the executor writes, for
 * twice the slow-peer timeout: the executor sends `perRead` frames of
 * stream `streamId` (seq 1: reliable, 0: legacy) for each one the harness
 * reads, after `backlog` frames to start over the high water mark. Returns
 * the router's events by then and checks that a harness that then stops
 * reading is dropped. (The pause paces the harness's reads; no timer waits
 * for an event.)
 */
async function drainSlowly(
  options: { seq: number; backlog: number; perRead: number; maxFrames: number },
): Promise<{ peerDropped: number; framesDropped: number }> {
  const frameBytes = 64 * 1024;
  const charge = frameBytes + ROUTER_FRAME_OVERHEAD_BYTES;
  // Long enough that a stall of the loaded test machine between two reads
  // does not look like a stuck harness.
  const slowMs = 1_000;
  await using h = await host({
    maxPeerQueueBytes: options.maxFrames * charge,
    peerHighWaterBytes: 2 * charge,
    slowPeerTimeoutMs: slowMs,
  });
  const executor = await h.connect("executor");
  const fast = await h.connect("harness");
  await through(fast, executor, data("marker", "hello"));
  const harness = new StalledHarnessSocket();
  h.router.addHarness("e1", harness as unknown as RelaySocket);
  harness.receive(data("s", "hello", options.seq));
  assert.equal((await executor.inbox.next("hello")).streamId, "s");
  const frame = frameOfSize("s", frameBytes);
  for (let i = 0; i < options.backlog; i++) await executor.socket.sendBytes(frame);
  const started = performance.now();
  // Twice the timeout: a harness judged stuck although it reads would be
  // dropped within one timeout plus one check period (a quarter of it).
  while (performance.now() - started < 2 * slowMs) {
    for (let i = 0; i < options.perRead; i++) await executor.socket.sendBytes(frame);
    await executor.socket.send(data("marker", "sync"));
    assert.equal(payloadOf(await fast.inbox.next("sync")), "sync");
    harness.drainOne();
    // Paces the harness's reads across the slow-peer window: elapsed time is
    // what is under test here, no event stands in for it.
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const seen = (type: RouterEvent["type"]) => h.events.filter((e) => e.type === type).length;
  const counts = { peerDropped: seen("peer_dropped"), framesDropped: seen("frames_dropped") };
  // A harness that stops reading altogether is still dropped.
  const dropped = h.event((e) => e.type === "peer_dropped", "stalled harness dropped");
  await executor.socket.sendBytes(frame);
  assert.deepEqual(await dropped, {
    type: "peer_dropped",
    executorId: "e1",
    role: "harness",
    reason: "slow_peer",
  });
  return counts;
}

Deno.test("RelayRouter keeps a harness socket that drains slowly while its data is shed, and reports the episode once", async () => {
  // Reliable data, three frames written per one read: the queue fills to half and sheds.
  const { peerDropped, framesDropped } = await drainSlowly({
    seq: 1,
    backlog: 0,
    perRead: 3,
    maxFrames: 16,
  });
  assert.equal(peerDropped, 0, "a reading harness was dropped as slow");
  assert.equal(framesDropped, 1, "one shedding episode, reported once");
});

Deno.test("RelayRouter keeps a harness socket over the high water mark while it keeps draining, without shedding", async () => {
  // Legacy data (nothing is shed): ten frames over the mark, then one in, one out.
  const { peerDropped, framesDropped } = await drainSlowly({
    seq: 0,
    backlog: 10,
    perRead: 1,
    maxFrames: 64,
  });
  assert.equal(peerDropped, 0, "a draining harness was dropped as slow");
  assert.equal(framesDropped, 0, "legacy data was shed");
});

Deno.test("RelayRouter sheds data of a reliable stream its harness only resumed (no data frame since a rendezvous restart)", async () => {
  const frameBytes = 64 * 1024;
  await using h = await host({
    maxPeerQueueBytes: 8 * (frameBytes + ROUTER_FRAME_OVERHEAD_BYTES),
    slowPeerTimeoutMs: 60_000,
  });
  const executor = await h.connect("executor");
  const fast = await h.connect("harness");
  await through(fast, executor, data("marker", "hello"));
  const stalled = new StalledHarnessSocket();
  h.router.addHarness("e1", stalled as unknown as RelaySocket);
  stalled.receive(resume("r", 5)); // all its data was acked before the restart
  assert.equal((await executor.inbox.next("resume")).body.kind, "resume");
  const reliable = frameOfSize("r", frameBytes);
  const shed = h.event((e) => e.type === "frames_dropped", "shedding");
  for (let i = 0; i < 20; i++) await executor.socket.sendBytes(reliable);
  assert.deepEqual(await shed, {
    type: "frames_dropped",
    executorId: "e1",
    reason: "harness_behind",
  });
  // Every frame is routed (the marker comes after them) and the socket stays.
  await executor.socket.send(data("marker", "after"));
  assert.equal(payloadOf(await fast.inbox.next("after")), "after");
  assert.equal(h.events.filter((e) => e.type === "peer_dropped").length, 0);
});

Deno.test("RelayRouter still drops a harness socket whose legacy data passes the whole queue bound", async () => {
  const frameBytes = 64 * 1024;
  const maxQueue = 8 * (frameBytes + ROUTER_FRAME_OVERHEAD_BYTES);
  await using h = await host({ maxPeerQueueBytes: maxQueue, slowPeerTimeoutMs: 60_000 });
  const executor = await h.connect("executor");
  const stalled = new StalledHarnessSocket();
  h.router.addHarness("e1", stalled as unknown as RelaySocket);
  stalled.receive(data("l", "hello", 0));
  assert.equal((await executor.inbox.next("legacy hello")).streamId, "l");
  const legacy = frameOfSize("l", frameBytes);
  // One in the stalled send, eight fill the bound, the ninth passes it.
  for (let i = 0; i < 10; i++) await executor.socket.sendBytes(legacy);
  assert.deepEqual(await h.event((e) => e.type === "peer_dropped", "slow peer dropped"), {
    type: "peer_dropped",
    executorId: "e1",
    role: "harness",
    reason: "slow_peer",
  });
});

Deno.test("RelayRouter holds back a harness flooding resets for streams it does not route while the executor is behind, instead of dropping the executor", async () => {
  const count = 256;
  const charge = encodeFrame(reset(`gone-${count}`, "cancelled")).length +
    ROUTER_FRAME_OVERHEAD_BYTES;
  // The flood is four times the executor's queue bound.
  await using h = await host({
    maxPeerQueueBytes: (count / 4) * charge,
    peerHighWaterBytes: 8 * charge,
    slowPeerTimeoutMs: 60_000,
  });
  // An executor that stopped reading for a moment (a GC pause, a busy loop).
  const executor = new StalledHarnessSocket();
  h.router.addExecutor("e1", executor as unknown as RelaySocket);
  const harness = await h.connect("harness");
  for (let i = 0; i < count; i++) await harness.socket.send(reset(`gone-${i}`, "cancelled"));
  await harness.socket.send(data("marker", "after the flood"));
  // The executor reads again, one frame at a time: everything arrives, in order.
  await until(
    () => {
      executor.drainOne();
      return executor.sent.length === count + 1 || h.events.some((e) => e.type === "peer_dropped");
    },
    DEADLINE_MS * 2,
    "the flood and the marker at the executor",
  );
  assert.deepEqual(h.events.filter((e) => e.type === "peer_dropped"), []);
  const received = executor.sent.map((bytes) => decodeFrame(bytes));
  assert.deepEqual(
    received.map((frame) => frame.streamId),
    [...Array.from({ length: count }, (_, i) => `gone-${i}`), "marker"],
  );
  assert.equal(payloadOf(received[count]), "after the flood");
});

/** A WebSocket client on raw TCP that sends one frame and then never reads. */
async function stalledHarness(port: number, path: string, frame: Uint8Array): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
  await conn.write(utf8.encode(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  ));
  let head = "";
  const buffer = new Uint8Array(4096);
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("Cannot upgrade: connection closed");
    head += utf8d.decode(buffer.subarray(0, n));
  }
  assert.match(head, /^HTTP\/1\.1 101/);
  // One masked binary frame (client frames must be masked).
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const header = frame.length < 126
    ? [0x82, 0x80 | frame.length]
    : [0x82, 0x80 | 126, frame.length >> 8, frame.length & 0xff];
  const out = new Uint8Array(header.length + 4 + frame.length);
  out.set(header);
  out.set(mask, header.length);
  for (let i = 0; i < frame.length; i++) out[header.length + 4 + i] = frame[i] ^ mask[i & 3];
  await conn.write(out);
  return conn;
}

for (const variant of ["stays behind too long", "overflows its queue"] as const) {
  Deno.test(`RelayRouter drops a harness socket that ${variant} and keeps serving the others`, async () => {
    const h = await host(
      variant === "stays behind too long"
        ? { peerHighWaterBytes: 256 * 1024, slowPeerTimeoutMs: 300, maxPeerQueueBytes: 256 << 20 }
        : { peerHighWaterBytes: 256 * 1024, slowPeerTimeoutMs: 60_000, maxPeerQueueBytes: 2 << 20 },
    );
    let conn: Deno.Conn | undefined;
    try {
      const executor = await h.connect("executor");
      const fast = await h.connect("harness");
      await through(fast, executor, data("fast", "hello"));
      // A legacy stream (seq 0): its data cannot be shed, so the bounds apply to it whole.
      conn = await stalledHarness(h.port, "/harness/e1", encodeFrame(data("slow", "hello", 0)));
      assert.equal((await executor.inbox.next("slow hello")).streamId, "slow");
      const dropped = h.event((e) => e.type === "peer_dropped", "slow peer dropped");
      // Flood the stalled socket: 48 MiB, beyond what the kernel buffers absorb.
      const chunk = frameOfSize("slow", 256 * 1024);
      for (let i = 0; i < 192 && h.events.every((e) => e.type !== "peer_dropped"); i++) {
        await executor.socket.sendBytes(chunk);
        if (i === 8) {
          // Fairness: the executor's frames for other harnesses are not held up.
          await executor.socket.send(data("fast", "not blocked"));
          assert.equal(payloadOf(await fast.inbox.next("fast reply")), "not blocked");
        }
      }
      assert.deepEqual(await dropped, {
        type: "peer_dropped",
        executorId: "e1",
        role: "harness",
        reason: "slow_peer",
      });
      await h.event((e) => e.type === "harness_detached");
      assert.equal(h.router.stats().harnessSockets, 1);
      // A legacy stream is never resumed: it ends at once instead of parking.
      assert.equal(h.router.stats().parkedStreams, 0);
      const ended = await executor.inbox.next("harness_disconnected for slow");
      assert.deepEqual([ended.streamId, resetReason(ended)], ["slow", "harness_disconnected"]);
      await executor.socket.send(data("fast", "still here"));
      assert.equal(payloadOf(await fast.inbox.next("fast after drop")), "still here");
    } finally {
      conn?.close();
      await h.close();
    }
  });
}

Deno.test("RelayRouter close ends every socket with shutdown and is idempotent", async () => {
  const h = await host();
  const executor = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, executor, data("s", "x"));
  await Promise.all([h.router.close(), h.router.close()]);
  const info = await withDeadline(harness.socket.closed, DEADLINE_MS, "harness closed");
  assert.equal(info.code, 1001);
  assert.equal(info.reason, "shutdown");
  await executor.inbox.end();
  assert.equal(h.router.admits("harness", "e1"), "shutdown");
  await h.close();
});

Deno.test("RelayRouter parks executor streams nobody holds, for a harness to take back (rendezvous restart)", async () => {
  // The harness connects and resumes "kept" within the window: room for a loaded machine.
  const windowMs = 1_000;
  await using h = await host({ detachWindowMs: windowMs, maxStreams: 2 });
  const executor = await h.connect("executor");
  // After a restart the executor resumes streams the new router never saw.
  await executor.socket.send(resume("kept", 4));
  await executor.socket.send(resume("orphan", 7));
  await executor.socket.send(resume("over the limit", 1));
  const refused = await executor.inbox.next("unknown_stream");
  assert.deepEqual(
    [refused.streamId, resetReason(refused)],
    ["over the limit", "unknown_stream"],
  );
  assert.equal(h.router.stats().parkedStreams, 2);
  const harness = await h.connect("harness");
  assert.equal((await through(harness, executor, resume("kept", 9))).body.kind, "resume");
  await executor.socket.send(data("kept", "resent after resume", 4));
  assert.equal(payloadOf(await harness.inbox.next("resent")), "resent after resume");
  // Nobody came back for the other one: the executor hears so after the window.
  const expired = await executor.inbox.next("harness_disconnected");
  assert.deepEqual([expired.streamId, resetReason(expired)], ["orphan", "harness_disconnected"]);
  assert.equal(h.router.stats().streams, 1);
});

Deno.test("RelayRouter holds harness streams during its startup grace until the executor returns", async () => {
  // The executor connects within the window: room for a loaded machine.
  const windowMs = 1_000;
  await using h = await host({ detachWindowMs: windowMs, startupGraceMs: 60_000 });
  const harness = await h.connect("harness");
  const other = await h.connect("harness", "never");
  // Just after a restart, no executor yet: frames wait instead of a reset.
  await harness.socket.send(resume("s", 3));
  await other.socket.send(resume("t", 3));
  const executor = await h.connect("executor");
  const held = await executor.inbox.next("held resume");
  assert.deepEqual([held.streamId, held.body.kind], ["s", "resume"]);
  await executor.socket.send(data("s", "welcome back", 3));
  assert.equal(payloadOf(await harness.inbox.next("reply")), "welcome back");
  // An executor that never returns: its streams end after the window.
  const gone = await other.inbox.next("executor_disconnected");
  assert.deepEqual([gone.streamId, resetReason(gone)], ["t", "executor_disconnected"]);
});
Deno.test("RelayRouter answers a new stream executor_offline once its startup grace has passed, while one asked during the grace still waits for the executor", async () => {
  const graceMs = 300;
  await using h = await host({ detachWindowMs: 60_000, startupGraceMs: graceMs });
  const graceEnds = performance.now() + graceMs;
  const harness = await h.connect("harness");
  await harness.socket.send(data("early", "asked in the grace"));
  // The grace is a span of time: wait it out.
  await new Promise((resolve) =>
    setTimeout(resolve, Math.max(0, graceEnds - performance.now()) + 20)
  );
  await harness.socket.send(data("late", "asked after it"));
  const answer = await harness.inbox.next("late's reset");
  assert.deepEqual([answer.streamId, resetReason(answer)], ["late", "executor_offline"]);
  const executor = await h.connect("executor");
  assert.equal(payloadOf(await executor.inbox.next("the held request")), "asked in the grace");
});
Deno.test("RelayRouter answers executor frames that crossed a harness's reset with unknown_stream, for the newest 1,024 ended streams, instead of parking them again", async () => {
  await using h = await host();
  const executor = await h.connect("executor");
  const harness = await h.connect("harness");
  const ids = Array.from({ length: 1025 }, (_, i) => `ended-${i}`);
  // In batches, as a busy harness would: within its own share of streams.
  for (let at = 0; at < ids.length; at += 100) {
    const batch = ids.slice(at, at + 100);
    for (const id of batch) await harness.socket.send(data(id, "request"));
    for (const id of batch) await harness.socket.send(reset(id, "client_reset"));
    for (let n = 0; n < batch.length * 2; n++) await executor.inbox.next(`frame ${at * 2 + n}`);
  }
  assert.equal(h.router.stats().streams, 0);
  // Routed in order on one socket: once the live stream's reply arrives, so have the late frames.
  const settled = async (label: string): Promise<void> => {
    assert.equal(
      payloadOf(await through(harness, executor, data(`live-${label}`, "ping"))),
      "ping",
    );
    await through(executor, harness, data(`live-${label}`, "pong"));
  };
  // At the bound: every late frame for the 1,024 newest ended streams is
  // answered with a reset (the executor may never have got the first one).
  for (const id of ids.slice(1)) await executor.socket.send(lateAck(id));
  const answers: string[] = [];
  for (let n = 1; n < ids.length; n++) {
    const frame = await executor.inbox.next(`answer ${n}`);
    answers.push(`${frame.streamId} ${resetReason(frame)}`);
  }
  assert.deepEqual(answers, ids.slice(1).map((id) => `${id} unknown_stream`));
  await settled("a");
  assert.deepEqual(
    [h.router.stats().streams, h.router.stats().parkedStreams],
    [1, 0],
    "only the live stream is routed",
  );
  // Past it: the oldest is forgotten, and its late frame parks it as an
  // unknown stream (unanswered: `settled` sees the ping come first).
  await executor.socket.send(lateAck(ids[0]));
  await settled("b");
  assert.equal(h.router.stats().parkedStreams, 1);
});

/** An executor frame for a stream whose end it has not seen yet. */
function lateAck(streamId: string): RelayFrame {
  return { version: 1, streamId, ack: 1, ackBits: 0, body: { kind: "ack" } };
}

Deno.test("RelayRouter answers an executor frame for a parked stream that expired with unknown_stream, without parking it again", async () => {
  // The test only waits for the window to pass: a short one.
  await using h = await host({ detachWindowMs: 200 });
  const executor = await h.connect("executor");
  const gone = await h.connect("harness");
  const staying = await h.connect("harness");
  await through(gone, executor, data("s", "request"));
  await through(staying, executor, data("live", "hello"));
  await gone.socket.close();
  await h.event((e) => e.type === "streams_expired", "parking expired");
  const expired = await executor.inbox.next("harness_disconnected");
  assert.deepEqual([expired.streamId, resetReason(expired)], ["s", "harness_disconnected"]);
  // The executor's reply crossed that reset.
  await executor.socket.send(data("s", "late reply"));
  await through(executor, staying, data("live", "routed after the late reply"));
  assert.equal(h.router.stats().parkedStreams, 0);
  const answer = await executor.inbox.next("answer to the late reply");
  assert.deepEqual([answer.streamId, resetReason(answer)], ["s", "unknown_stream"]);
});

Deno.test("RelayRouter answers an executor frame for a stream it did not resume in time with unknown_stream, without parking it again", async () => {
  // The test only waits for the window to pass: a short one. The new socket
  // replaces the old one, so nothing has to happen within the window.
  await using h = await host({ detachWindowMs: 200 });
  const first = await h.connect("executor");
  const harness = await h.connect("harness");
  await through(harness, first, data("s", "request"));
  const second = await h.connect("executor");
  await h.event((e) => e.type === "streams_not_resumed", "window to resume passed");
  const ended = await second.inbox.next("executor_disconnected");
  assert.deepEqual([ended.streamId, resetReason(ended)], ["s", "executor_disconnected"]);
  assert.equal(
    resetReason(await harness.inbox.next("reset to the harness")),
    "executor_disconnected",
  );
  await through(harness, second, data("live", "hello"));
  // A late frame for it (the executor resumed it just too late).
  await second.socket.send(resume("s", 2));
  await through(second, harness, data("live", "routed after the late resume"));
  assert.equal(h.router.stats().parkedStreams, 0);
  const answer = await second.inbox.next("answer to the late resume");
  assert.deepEqual([answer.streamId, resetReason(answer)], ["s", "unknown_stream"]);
});

Deno.test("RelayRouter queues its answers to late executor frames within the executor's queue bound: at it kept, one past dropped", async () => {
  const count = 100;
  const charge = (frame: RelayFrame) => encodeFrame(frame).length + ROUTER_FRAME_OVERHEAD_BYTES;
  const request = data("s", "request");
  const ended = reset("s", "client_reset");
  const queued = charge(request) + charge(ended);
  const answer = charge(reset("s", "unknown_stream"));
  await using h = await host({
    maxPeerQueueBytes: queued + count * answer,
    slowPeerTimeoutMs: 60_000,
  });
  // An executor that sends but reads nothing (the fake stands for its far end).
  const executor = new StalledHarnessSocket();
  h.router.addExecutor("e1", executor as unknown as RelaySocket);
  const harness = await h.connect("harness");
  await harness.socket.send(data("live", "hello"));
  await until(() => executor.sent.length === 1, DEADLINE_MS, "the send that stalls");
  await harness.socket.send(request);
  await until(() => h.router.stats().streams === 2, DEADLINE_MS, "s routed");
  await harness.socket.send(ended);
  await until(() => h.router.stats().streams === 1, DEADLINE_MS, "s ended");
  /** Returns once the router has routed every frame the executor sent before. */
  const routed = async (label: string) => {
    executor.receive(data("live", label));
    assert.equal(payloadOf(await harness.inbox.next(label)), label);
  };
  for (let i = 0; i < count; i++) executor.receive(lateAck("s"));
  await routed("at the limit");
  assert.ok(h.events.every((e) => e.type !== "peer_dropped"), "dropped at the limit");
  executor.receive(lateAck("s"));
  assert.deepEqual(await h.event((e) => e.type === "peer_dropped", "executor dropped"), {
    type: "peer_dropped",
    executorId: "e1",
    role: "executor",
    reason: "slow_peer",
  });
  assert.equal(h.router.stats().parkedStreams, 0);
});

Deno.test("RelayRouter takes a detachWindowMs and a slowPeerTimeoutMs up to 2^31 - 1 and refuses one past it (its timer would fire at once)", async () => {
  for (const name of ["detachWindowMs", "slowPeerTimeoutMs"]) {
    assert.throws(
      () => new RelayRouter({ [name]: 2 ** 31 }),
      new RegExp(`${name} 2147483648 is not a number from 1 to 2147483647`),
    );
    await new RelayRouter({ [name]: 2 ** 31 - 1 }).close();
  }
});

Deno.test("RelayRouter refuses a queue budget below one socket's queue bound", () => {
  assert.throws(
    () => new RelayRouter({ maxPeerQueueBytes: 1000, queueBudgetBytes: 999 }),
    /queueBudgetBytes 999 is not an integer of at least maxPeerQueueBytes \(1000\)/,
  );
  const router = new RelayRouter({ maxPeerQueueBytes: 1000, queueBudgetBytes: 1000 });
  assert.equal(router.queueBudget.limit, 1000);
});

Deno.test("RelayRouter holds one queue budget over all sockets: at the limit every queue is kept, one byte past it the socket queueing the most is dropped over_budget and the others go on", async () => {
  const charge = 64 * 1024 + ROUTER_FRAME_OVERHEAD_BYTES;
  const tiny = data("b", "x", 1);
  const tinyCharge = encodeFrame(tiny).length + ROUTER_FRAME_OVERHEAD_BYTES;
  const budget = 6 * charge;
  await using h = await host({
    queueBudgetBytes: budget,
    maxPeerQueueBytes: budget,
    slowPeerTimeoutMs: 60_000,
  });
  const executor = await h.connect("executor");
  const [a, b] = [new StalledHarnessSocket(), new StalledHarnessSocket()];
  h.router.addHarness("e1", a as unknown as RelaySocket);
  h.router.addHarness("e1", b as unknown as RelaySocket);
  // Legacy streams: their data is never shed, so it queues whole.
  a.receive(data("a", "hello", 0));
  b.receive(data("b", "hello", 0));
  const opened = [await executor.inbox.next("a"), await executor.inbox.next("b")];
  assert.deepEqual(opened.map((f) => f.streamId).sort(), ["a", "b"]);
  // The first frame to each stalls in its send (still counted); the rest queue:
  // four on `a`, two on `b`, exactly the budget.
  for (let i = 0; i < 4; i++) await executor.socket.sendBytes(frameOfSize("a", 64 * 1024));
  for (let i = 0; i < 2; i++) await executor.socket.sendBytes(frameOfSize("b", 64 * 1024));
  await until(() => h.router.queueBudget.used === budget, DEADLINE_MS, "queues at the budget");
  assert.deepEqual(h.events.filter((e) => e.type === "peer_dropped"), []);
  // One small frame more for `b`, the smaller queue: `a` holds the most and goes.
  await executor.socket.sendBytes(encodeFrame(tiny));
  assert.deepEqual(await h.event((e) => e.type === "peer_dropped", "a dropped"), {
    type: "peer_dropped",
    executorId: "e1",
    role: "harness",
    reason: CLOSE_OVER_BUDGET,
  });
  assert.deepEqual(await a.closeCall.promise, {
    reason: CLOSE_OVER_BUDGET,
    code: CLOSE_CODE_OVER_BUDGET,
  });
  const ended = await executor.inbox.next("a's stream ended");
  assert.deepEqual([ended.streamId, resetReason(ended)], ["a", "harness_disconnected"]);
  assert.equal(h.router.queueBudget.used, 2 * charge + tinyCharge);
  // `b` lost nothing: released, it gets its two frames and the small one.
  b.release();
  await until(() => b.sent.length === 3, DEADLINE_MS, "b's frames");
  assert.equal(payloadOf(decodeFrame(b.sent[2])), "x");
  assert.equal(h.router.stats().harnessSockets, 1);
  await until(() => h.router.queueBudget.used === 0, DEADLINE_MS, "b's queue drained");
});

Deno.test("RelayRouter's queue budget covers frames held for away executors: the id holding the most loses its held frames, the others keep theirs", async () => {
  const frames = 3;
  const charge = 32 * 1024 + ROUTER_FRAME_OVERHEAD_BYTES;
  const budget = 4 * charge;
  await using h = await host({
    queueBudgetBytes: budget,
    maxPeerQueueBytes: budget,
    maxOfflineQueueBytes: budget,
    detachWindowMs: 10_000,
  });
  const harness = await h.connect("harness", "big");
  const other = await h.connect("harness", "small");
  for (const [id, peer] of [["big", harness], ["small", other]] as const) {
    const executor = await h.connect("executor", id);
    await through(peer, executor, data(id, "open"));
    await executor.socket.close();
    await h.event((e) => e.type === "executor_detached" && e.executorId === id);
  }
  const held = (id: string, seq: number) => {
    const bytes = frameOfSize(id, 32 * 1024);
    const frame = decodeFrame(bytes);
    return { ...frame, body: { ...frame.body, seq } } as RelayFrame;
  };
  for (let i = 0; i < frames; i++) await harness.socket.send(held("big", 2 + i));
  await other.socket.send(held("small", 2));
  await until(() => h.router.queueBudget.used === budget, DEADLINE_MS, "held frames at the budget");
  assert.deepEqual(h.events.filter((e) => e.type === "frames_dropped"), []);
  await other.socket.send(data("small", "one more", 3));
  assert.deepEqual(await h.event((e) => e.type === "frames_dropped", "big's frames dropped"), {
    type: "frames_dropped",
    executorId: "big",
    reason: "over_budget",
  });
  const back = await h.connect("executor", "small");
  assert.equal((await back.inbox.next("small's held frame")).body.kind, "data");
  assert.equal(payloadOf(await back.inbox.next("small's last frame")), "one more");
});

/**
 * A router whose queue budget is `frames` 64 KiB frames, with a high water
 * mark of two, and an executor socket that never reads: the router stops
 * taking frames from harnesses, which then wait in their sockets.
 */
async function behindExecutor(frames: number) {
  const frameBytes = 64 * 1024;
  const budget = frames * (frameBytes + ROUTER_FRAME_OVERHEAD_BYTES);
  const h = await host({
    queueBudgetBytes: budget,
    maxPeerQueueBytes: budget,
    peerHighWaterBytes: 2 * frameBytes,
    slowPeerTimeoutMs: 60_000,
  });
  const executor = new StalledHarnessSocket();
  h.router.addExecutor("e1", executor as unknown as RelaySocket);
  return { h, executor, budget, frameBytes };
}

Deno.test("RelayRouter's queue budget covers frames a harness sent while the executor is behind: past it that harness socket is dropped, the executor kept", async () => {
  const { h, budget, frameBytes } = await behindExecutor(16);
  await using _ = h;
  const harness = await h.connect("harness");
  const flood = frameOfSize("f", frameBytes);
  const dropped = h.event((e) => e.type === "peer_dropped", "harness dropped");
  // 4 MiB: a quarter of the socket's own inbound bound, four times the budget.
  for (let i = 0; i < 64 && !h.events.some((e) => e.type === "peer_dropped"); i++) {
    await harness.socket.sendBytes(flood);
  }
  assert.deepEqual(await dropped, {
    type: "peer_dropped",
    executorId: "e1",
    role: "harness",
    reason: CLOSE_OVER_BUDGET,
  });
  // Its close frame (1008) may be lost behind the frames it was still sending (1006 then).
  await withDeadline(harness.socket.closed, DEADLINE_MS, "harness closed");
  assert.equal(h.router.stats().executorSockets, 1);
  assert.ok(h.router.queueBudget.used <= budget, `${h.router.queueBudget.used}`);
});

Deno.test("RelayRouter's queue budget still counts the frames of a harness socket that closed while the executor was behind, until they are routed", async () => {
  const { h, executor, budget, frameBytes } = await behindExecutor(24);
  await using _ = h;
  // Three harnesses, one after another, each sends 10 frames (under half the
  // budget) and closes: only together are they past it. The executor's queue
  // takes one frame from each (a few in all), the harness sockets the rest.
  for (let k = 0; k < 3; k++) {
    const harness = await h.connect("harness");
    const flood = frameOfSize(`f-${k}`, frameBytes);
    for (let i = 0; i < 10; i++) await harness.socket.sendBytes(flood);
    await withDeadline(harness.socket.close(), DEADLINE_MS, `harness ${k} closed`);
    assert.ok(h.router.queueBudget.used <= budget, `${h.router.queueBudget.used}`);
  }
  assert.deepEqual(
    await h.event(
      (e) => e.type === "peer_dropped" && e.reason === CLOSE_OVER_BUDGET,
      "a closed harness's frames shed",
    ),
    { type: "peer_dropped", executorId: "e1", role: "harness", reason: CLOSE_OVER_BUDGET },
  );
  executor.release();
  await until(() => h.router.queueBudget.used === 0, DEADLINE_MS, "everything routed or dropped");
  const routed = executor.sent.filter((bytes) => decodeFrame(bytes).streamId.startsWith("f-"));
  assert.ok(routed.length < 30, `${routed.length} of 30 frames routed`);
});

/**
 * The router's end of a harness socket the test scripts frame by frame, with
 * `closeInfo` set by the test: a socket that has closed while the router has
 * not read all it received yet (its reader waited for a slow executor).
 */
class ScriptedHarnessSocket implements AsyncIterable<ReceivedFrame> {
  readonly bufferedAmount = 0;
  readonly sent: RelayFrame[] = [];
  closeInfo: { code: number; reason: string; wasClean: boolean } | undefined;
  #inbound: ReceivedFrame[] = [];
  #wake: (() => void) | undefined;
  #ended = false;

  /** Delivers a frame to the router as if the harness had sent it. */
  receive(frame: RelayFrame): void {
    this.#inbound.push({ ...frame, bytes: encodeFrame(frame) });
    this.#wake?.();
  }

  sendBytes(bytes: Uint8Array): Promise<void> {
    this.sent.push(decodeFrame(bytes));
    return Promise.resolve();
  }

  dropUnread(): void {
    this.#inbound.length = 0;
  }

  /** The router reads no more after what it has (its close is processed). */
  end(): void {
    this.#ended = true;
    this.#wake?.();
  }

  close(): Promise<void> {
    this.closeInfo ??= { code: 1000, reason: "", wasClean: true };
    this.end();
    return Promise.resolve();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ReceivedFrame> {
    for (;;) {
      const frame = this.#inbound.shift();
      if (frame !== undefined) yield frame;
      else if (this.#ended) return;
      else {
        await new Promise<void>((resolve) => this.#wake = resolve);
        this.#wake = undefined;
      }
    }
  }
}

/** An executor socket, and a scripted harness socket that has opened stream `s` to it. */
async function streamOnScriptedSocket(h: RouterHost) {
  const executor = await h.connect("executor");
  const old = new ScriptedHarnessSocket();
  h.router.addHarness("e1", old as unknown as RelaySocket);
  old.receive(data("s", "first"));
  assert.equal(payloadOf(await executor.inbox.next("first")), "first");
  return { executor, old };
}

Deno.test("RelayRouter never hands a stream back to an older harness socket: its resume, read after a newer socket resumed, gets stream_in_use and the newer one keeps the stream", async () => {
  await using h = await host();
  const { executor, old } = await streamOnScriptedSocket(h);
  // The harness reconnected; the old socket looks open still (half-open).
  const fresh = await h.connect("harness");
  assert.equal((await through(fresh, executor, resume("s", 2))).body.kind, "resume");
  // A resume the old socket had sent before, read only now.
  old.receive(resume("s", 2));
  old.receive(data("marker", "after the stale resume"));
  assert.equal(payloadOf(await executor.inbox.next("marker")), "after the stale resume");
  assert.deepEqual(old.sent.map((f) => [f.streamId, resetReason(f)]), [["s", "stream_in_use"]]);
  assert.equal(payloadOf(await through(fresh, executor, data("s", "second", 2))), "second");
  await executor.socket.send(data("s", "to the newer socket"));
  assert.equal(payloadOf(await fresh.inbox.next("reply")), "to the newer socket");
  old.end();
});

Deno.test("RelayRouter: once a harness socket has closed, a newer one takes its streams with any frame, and the closed one's late frames open or take nothing", async () => {
  await using h = await host();
  const { executor, old } = await streamOnScriptedSocket(h);
  old.closeInfo = { code: 1006, reason: "", wasClean: false }; // closed; its reader has not caught up yet
  const fresh = await h.connect("harness");
  // Data before any resume (the resume was lost, say): taken, not refused.
  assert.equal(payloadOf(await through(fresh, executor, data("s", "second", 2))), "second");
  // What the closed socket still had unread: a frame for a new stream and a
  // resume for the taken one. Neither reaches the executor nor moves a stream.
  old.receive(data("t", "late"));
  old.receive(resume("s", 2));
  old.end();
  await h.event((e) => e.type === "harness_detached", "the old socket gone");
  assert.equal(payloadOf(await through(fresh, executor, data("marker", "after"))), "after");
  await executor.socket.send(data("s", "reply"));
  assert.equal(payloadOf(await fresh.inbox.next("reply")), "reply");
  assert.equal(h.router.stats().streams, 2, "s and marker; no route for t");
  assert.deepEqual(old.sent, [], "nothing answered to the closed socket");
});
