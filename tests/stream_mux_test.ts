/**
 * StreamMux over real loopback WebSockets: an executor-side mux behind a
 * `Deno.serve` listener and harness muxes connecting with `RelaySocket`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { RelaySocket } from "../lib/relay/relay_socket.ts";
import { Executor } from "../lib/exec/executor.ts";
import { JsonRpcPeer } from "../lib/rpc/json_rpc_peer.ts";
import { DEFAULT_IDLE_STREAM_MS, type MuxStream, StreamMux } from "../lib/mux/stream_mux.ts";
import { RelayClosedError, StreamResetError } from "../lib/errors.ts";
import {
  RESET_CLOSE_TIMEOUT,
  RESET_EXECUTOR_DISCONNECTED,
  RESET_MESSAGE_TOO_LARGE,
  RESET_STREAM_CLOSED,
  RESET_TOO_MANY_STREAMS,
  RESET_UNKNOWN_STREAM,
} from "../lib/mux/reset_reasons.ts";
import type { ReceivedFrame } from "../lib/relay/relay_socket.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { bodyFrame, dataFrame } from "./_support/frames.ts";
import { echo, type Loopback, loopback } from "./_mux_loopback.ts";

async function nextMessage(stream: MuxStream): Promise<string> {
  const result = await stream[Symbol.asyncIterator]().next();
  if (result.done) throw new Error(`Stream ${stream.id} ended`);
  return result.value;
}

Deno.test("StreamMux carries a request and its reply over a real WebSocket", async () => {
  await using lb = loopback({ onStream: echo() });
  const harness = await lb.harness();
  const stream = harness.open();
  assert.match(stream.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(stream.mode, "reliable");
  await stream.send('{"id":1,"method":"initialize"}');
  assert.equal(
    await withDeadline(nextMessage(stream), 5_000, "reply"),
    'echo:{"id":1,"method":"initialize"}',
  );
  assert.equal(harness.streams, 1);
  assert.equal(lb.executor.streams, 1);
});

Deno.test("StreamMux serves 1,000 concurrent streams over one socket with no cross-talk", async () => {
  await using lb = loopback({ onStream: echo(), maxStreams: 1000 });
  const harness = await lb.harness();
  const streams = Array.from({ length: 1000 }, () => harness.open());
  const work = streams.map(async (stream, i) => {
    const got: string[] = [];
    const reader = (async () => {
      for await (const message of stream) {
        got.push(message);
        if (got.length === 3) break;
      }
    })();
    for (let k = 0; k < 3; k++) await stream.send(`${stream.id}/${i}/${k}`);
    await reader;
    assert.deepEqual(got, [0, 1, 2].map((k) => `echo:${stream.id}/${i}/${k}`));
  });
  await withDeadline(Promise.all(work), 20_000, "1,000 streams");
  assert.equal(lb.executor.streams, 1000);
  // Closing each stream flushes and resets it on both sides.
  await withDeadline(Promise.all(streams.map((s) => s.close())), 10_000, "close all");
  assert.equal(harness.streams, 0);
});

Deno.test("StreamMux carries a multi-segment message byte-identical", async () => {
  await using lb = loopback({ onStream: echo("") });
  const harness = await lb.harness();
  const stream = harness.open();
  const big = "x".repeat(3 * 61_440 + 17) + "é".repeat(1000);
  await stream.send(big);
  assert.equal(await withDeadline(nextMessage(stream), 10_000, "big echo"), big);
  assert.ok(stream.stats.segmentsSent >= 4);
});

Deno.test("StreamMux keeps small messages flowing beside a bulk stream (fairness)", async () => {
  let bulkDone = false;
  await using lb = loopback({
    onStream: (stream) => {
      (async () => {
        try {
          for await (const message of stream) {
            if (message === "bulk") {
              const chunk = "b".repeat(60_000);
              for (let i = 0; i < 3000; i++) await stream.send(chunk);
              await stream.send("end");
            } else {
              await stream.send("pong:" + message);
            }
          }
        } catch { /* closed */ }
      })();
    },
  });
  const harness = await lb.harness();
  const bulk = harness.open();
  const small = harness.open();
  await bulk.send("bulk");
  const bulkReader = (async () => {
    for await (const message of bulk) if (message === "end") break;
    bulkDone = true;
  })();
  // 20 round trips on the small stream complete while 180 MB flow on the bulk one.
  for (let i = 0; i < 20; i++) {
    await small.send(`ping${i}`);
    assert.equal(await withDeadline(nextMessage(small), 5_000, "pong"), `pong:ping${i}`);
  }
  assert.equal(bulkDone, false, "small exchanges finished before the bulk transfer");
  await withDeadline(bulkReader, 20_000, "bulk");
});

Deno.test("StreamMux lets one stalled consumer stall only its own stream", async () => {
  const inboxMessages = 4;
  const windowSegments = 8;
  const stalled: MuxStream[] = [];
  await using lb = loopback({
    inboxMessages,
    onStream: (stream) => {
      stream.send("hello").catch(() => {});
      // The first stream's consumer never reads; the others echo.
      if (stalled.length === 0) stalled.push(stream);
      else echo()(stream);
    },
  });
  const harness = await lb.harness({ windowSegments, stream: { sendBufferBytes: 1024 } });
  const slow = harness.open();
  await slow.send("first");
  assert.equal(
    await withDeadline(nextMessage(slow), 5_000, "hello on the stalled stream"),
    "hello",
  );
  const consumer = stalled[0];
  // Nothing can move until the consumer reads: its inbox is full, it holds
  // every segment in flight unacknowledged, and the sender's window is full.
  const stuck = () =>
    consumer.stats.inboxMessages === inboxMessages &&
    slow.stats.unackedSegments === windowSegments &&
    consumer.stats.heldSegments === windowSegments;
  // Fill the stalled stream: sends stop being accepted once inbox + window + buffer are full.
  let accepted = 0;
  let blocked: Promise<void> | undefined;
  for (let i = 0; i < 200 && blocked === undefined; i++) {
    let done = false;
    const sent = slow.send("m".repeat(500)).then(() => {
      accepted++;
      done = true;
    });
    // A send is accepted at once or as the window opens; once the stream is
    // stuck nothing opens it, so a send not accepted by then is blocked.
    await until(() => done || stuck(), 5_000, `send ${i} accepted, or the stream stuck`);
    if (!done) {
      blocked = sent;
      // Awaited below; if the test fails first, teardown rejects it.
      blocked.catch(() => {});
    }
  }
  assert.ok(blocked !== undefined, `sends kept being accepted (${accepted})`);
  assert.ok(accepted < 40, `${accepted} accepted`);
  // Another stream on the same socket is served normally.
  const other = harness.open();
  await other.send("ping");
  assert.equal(await withDeadline(nextMessage(other), 5_000, "hello on the other stream"), "hello");
  assert.equal(await withDeadline(nextMessage(other), 5_000, "echo"), "echo:ping");
  // The stalled consumer drains and the blocked sender completes.
  const drained: string[] = [];
  const expected = accepted + 2; // "first", the accepted ones, the blocked one
  await withDeadline(
    (async () => {
      for await (const message of consumer) {
        drained.push(message);
        if (drained.length === expected) break;
      }
    })(),
    10_000,
    `drain of ${expected} messages`,
  );
  await withDeadline(blocked, 5_000, "the blocked send accepted");
  assert.equal(slow.stats.retransmits <= slow.stats.timeouts, true);
  assert.deepEqual(drained, ["first", ...Array(expected - 1).fill("m".repeat(500))]);
  slow.reset("test_done");
});

Deno.test("StreamMux resets new streams past maxStreams, and serves at the limit", async () => {
  await using lb = loopback({ onStream: echo(), maxStreams: 2 });
  const harness = await lb.harness();
  const [a, b, c] = [harness.open(), harness.open(), harness.open()];
  for (const s of [a, b]) {
    await s.send("hi");
    assert.equal(await withDeadline(nextMessage(s), 5_000, "echo"), "echo:hi");
  }
  await c.send("hi");
  const error = await withDeadline(nextMessage(c).catch((e) => e), 5_000, "reset");
  assert.ok(error instanceof StreamResetError);
  assert.equal(error.reason, RESET_TOO_MANY_STREAMS);
  assert.equal(c.resetReason, RESET_TOO_MANY_STREAMS);
  await withDeadline(c.closed, 1_000, "closed");
  assert.equal(lb.executor.streams, 2);
  assert.equal(harness.streams, 2);
});

Deno.test("StreamMux at maxStreams lets a new stream take the place of one idle for idleStreamMs (a harness gone without a reset), and refuses it while each was active within that", async () => {
  const clock = { skew: 0 };
  await using lb = loopback({
    onStream: echo(),
    maxStreams: 2,
    now: () => performance.now() + clock.skew,
  });
  const harness = await lb.harness();
  const echoes = async (stream: MuxStream) => {
    await stream.send("hi");
    return await withDeadline(nextMessage(stream), 5_000, "echo");
  };
  const [gone, busy] = [harness.open(), harness.open()];
  assert.equal(await echoes(gone), "echo:hi");
  assert.equal(await echoes(busy), "echo:hi");
  const refusedAfter = async (skew: number) => {
    clock.skew = skew;
    const late = harness.open();
    await late.send("hi");
    const error = await withDeadline(nextMessage(late).catch((e) => e), 5_000, "reset");
    assert.ok(error instanceof StreamResetError, String(error));
    assert.equal(error.reason, RESET_TOO_MANY_STREAMS);
  };
  // `gone` is silent from now on; `busy` goes on 30 s later.
  await refusedAfter(DEFAULT_IDLE_STREAM_MS / 2);
  assert.equal(await echoes(busy), "echo:hi");
  // Just under idleStreamMs since `gone`'s last frame: still refused.
  await refusedAfter(DEFAULT_IDLE_STREAM_MS - 1_000);
  // Past it: the new stream takes `gone`'s place, which is reset; `busy` goes on.
  clock.skew = DEFAULT_IDLE_STREAM_MS + 1_000;
  const fresh = harness.open();
  assert.equal(await echoes(fresh), "echo:hi");
  const error = await withDeadline(nextMessage(gone).catch((e) => e), 5_000, "gone reset");
  assert.ok(error instanceof StreamResetError, String(error));
  assert.equal(error.reason, RESET_TOO_MANY_STREAMS);
  assert.equal(await echoes(busy), "echo:hi");
  assert.equal(lb.executor.streams, 2);
  // `busy` and `fresh` were both active just now: the next one is refused.
  await refusedAfter(DEFAULT_IDLE_STREAM_MS + 1_000);
});

Deno.test("StreamMux at maxStreams counts only frames from the harness as a stream's activity: one whose replies are never acknowledged goes idle though the executor keeps resending them", async () => {
  const clock = { skew: 0 };
  await using lb = loopback({
    onStream: echo(),
    maxStreams: 1,
    now: () => performance.now() + clock.skew,
  });
  await using raw = await RelaySocket.connect(lb.url);
  const frames = raw[Symbol.asyncIterator]();
  const nextData = async (what: string) => {
    for (;;) {
      const { value } = await withDeadline(frames.next(), 10_000, what);
      if (value?.body.kind === "data" || value?.body.kind === "reset") return value;
    }
  };
  await raw.send(dataFrame("hog", 1, "hi"));
  const first = await nextData("the echo");
  assert.equal(first.streamId, "hog");
  // The harness never acks; past idleStreamMs the executor resends the echo.
  clock.skew = DEFAULT_IDLE_STREAM_MS + 1_000;
  const resent = await nextData("the resent echo");
  assert.ok(resent.body.kind === "data" && resent.body.seq === 1, "a retransmission");
  await raw.send(dataFrame("new", 1, "hi"));
  const seen = new Map<string, string>();
  // Bounded: the hog's resends keep coming until it is reset.
  for (let frames = 0; frames < 20 && seen.size < 2; frames++) {
    const frame = await nextData("the new stream's echo and the hog's reset");
    if (frame.body.kind === "reset") seen.set(frame.streamId, `reset:${frame.body.reason}`);
    else if (frame.streamId === "new") seen.set("new", "data");
    if (seen.get("new")?.startsWith("reset")) break;
  }
  assert.deepEqual(Object.fromEntries(seen), {
    hog: `reset:${RESET_TOO_MANY_STREAMS}`,
    new: "data",
  });
});

Deno.test("StreamMux at maxStreams does not replace an idle stream whose session waits on a long poll or a live program (Executor.isQuiet), only a quiet one", async () => {
  const clock = { skew: 0 };
  const served: MuxStream[] = [];
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using lb = loopback({
    maxStreams: 2,
    now: () => performance.now() + clock.skew,
    canReplace: (stream) => executor.isQuiet(stream),
    onStream: (stream) => {
      served.push(stream);
      executor.serve(stream).catch(() => {});
    },
  });
  const harness = await lb.harness();
  const opened: MuxStream[] = [];
  const session = async () => {
    const stream = harness.open();
    opened.push(stream);
    const peer = new JsonRpcPeer(stream);
    await withDeadline(peer.request("initialize", { clientName: "quiet" }), 5_000, "initialize");
    await peer.notify("initialized");
    return peer;
  };
  const waiting = await session();
  await withDeadline(
    waiting.request("process/start", { processId: "p", argv: ["sleep", "30"] }),
    5_000,
    "start",
  );
  const poll = waiting.request<{ exited: boolean }>("process/read", {
    processId: "p",
    afterSeq: 0,
    waitMs: 20_000,
  });
  poll.catch(() => {}); // awaited below; a failure before must not go unhandled
  // The quiet session's last frame comes after the waiting one's: the
  // waiting one is the idlest.
  await until(() => !executor.isQuiet(served[0]), 5_000, "the long poll waiting");
  const quiet = await session();
  // Nothing left to acknowledge either way: no frame stamps them active later.
  await until(
    () => [...served, ...opened].every((stream) => stream.stats.unackedSegments === 0),
    5_000,
    "quiet links",
  );
  // Both have been silent for longer than idleStreamMs.
  clock.skew = DEFAULT_IDLE_STREAM_MS + 1_000;
  const fresh = await session();
  await withDeadline(quiet.closed, 5_000, "the quiet session's stream replaced");
  // The waiting one stays; with the fresh one active, a fourth is refused.
  await assert.rejects(
    withDeadline(session(), 5_000, "refused"),
    (error) => error instanceof Error && /too_many_streams/.test(String(error.cause ?? error)),
  );
  await withDeadline(waiting.request("process/terminate", { processId: "p" }), 5_000, "terminate");
  assert.equal((await withDeadline(poll, 5_000, "the long poll answered")).exited, true);
  await waiting.close();
  await fresh.close();
});

Deno.test("StreamMux (harness) sends every stream's resume on a new socket before any of its data, also for data queued while detached", async () => {
  await using lb = loopback({}, false);
  const harness = new StreamMux({ role: "harness" });
  try {
    let accepted = lb.nextAccepted();
    harness.attach(await RelaySocket.connect(lb.url));
    const first = await accepted;
    const streams = Array.from({ length: 8 }, () => harness.open());
    for (const stream of streams) await stream.send("before");
    const seenFirst = new Set<string>();
    const frames = first[Symbol.asyncIterator]();
    while (seenFirst.size < streams.length) {
      const frame = await withDeadline(frames.next(), 5_000, "first socket's frames");
      seenFirst.add(frame.value.streamId);
    }
    // The socket is lost; data queued meanwhile waits for the next one.
    await first.close();
    await withDeadline(harness.detached, 5_000, "detached");
    for (const stream of streams.slice(1)) void stream.send("while detached").catch(() => {});
    accepted = lb.nextAccepted();
    harness.attach(await RelaySocket.connect(lb.url));
    const second = await accepted;
    const firstKinds = new Map<string, string>();
    const next = second[Symbol.asyncIterator]();
    while (firstKinds.size < streams.length) {
      const frame = (await withDeadline(next.next(), 5_000, "second socket's frames")).value;
      if (!firstKinds.has(frame.streamId)) firstKinds.set(frame.streamId, frame.body.kind);
    }
    assert.deepEqual([...new Set(firstKinds.values())], ["resume"]);
  } finally {
    await harness.close();
  }
});

Deno.test("StreamMux reset ends one stream on both sides and leaves the others", async () => {
  const executorSide = new Map<string, Promise<unknown>>();
  await using lb = loopback({
    onStream: (stream) => {
      executorSide.set(
        stream.id,
        (async () => {
          for await (const message of stream) await stream.send("echo:" + message);
        })().catch((e) => e),
      );
    },
  });
  const harness = await lb.harness();
  const a = harness.open();
  const b = harness.open();
  for (const s of [a, b]) {
    await s.send("x");
    await withDeadline(nextMessage(s), 5_000, "echo");
  }
  const pendingRead = nextMessage(a).catch((e) => e);
  a.reset("test_reset");
  const local = await pendingRead;
  assert.ok(local instanceof StreamResetError && local.reason === "test_reset");
  await assert.rejects(a.send("late"), StreamResetError);
  const remote = await withDeadline(executorSide.get(a.id)!, 5_000, "executor reset");
  assert.ok(remote instanceof StreamResetError && remote.reason === "test_reset");
  await b.send("still");
  assert.equal(await withDeadline(nextMessage(b), 5_000, "b"), "echo:still");
  assert.throws(() => b.reset(""), TypeError);
  assert.throws(() => b.reset("r".repeat(257)), TypeError);
});

Deno.test("StreamMux close flushes, then ends the peer's reads cleanly", async () => {
  const received: string[] = [];
  let ended!: () => void;
  const endedCleanly = new Promise<void>((r) => ended = r);
  await using lb = loopback({
    onStream: (stream) => {
      (async () => {
        for await (const message of stream) received.push(message);
        ended();
      })();
    },
  });
  const harness = await lb.harness();
  const stream = harness.open();
  const n = 50;
  for (let i = 0; i < n; i++) await stream.send(`m${i}-${"p".repeat(10_000)}`);
  await withDeadline(stream.close(), 5_000, "close");
  assert.equal(stream.resetReason, RESET_STREAM_CLOSED);
  await withDeadline(endedCleanly, 5_000, "peer end");
  assert.equal(received.length, n);
  assert.ok(received.every((m, i) => m.startsWith(`m${i}-`)));
  // Local reads end, sends fail.
  const after = await stream[Symbol.asyncIterator]().next();
  assert.equal(after.done, true);
  await assert.rejects(stream.send("x"), StreamResetError);
});

Deno.test("StreamMux close that times out with data unacknowledged resets close_timeout: neither side sees a clean end", async () => {
  let accepted!: (stream: MuxStream) => void;
  const serverStream = new Promise<MuxStream>((resolve) => accepted = resolve);
  // The executor's consumer does not read: its inbox (128 messages) fills and the rest stays unacked.
  await using lb = loopback({ onStream: (stream) => accepted(stream) });
  const harness = await lb.harness({ closeTimeoutMs: 300 });
  const stream = harness.open();
  const n = 300;
  for (let i = 0; i < n; i++) await stream.send(`m${i}`);
  const peer = await withDeadline(serverStream, 5_000, "the stream reaching the executor");
  await assert.rejects(
    withDeadline(stream.close(), 5_000, "close"),
    (error) => error instanceof StreamResetError && error.reason === RESET_CLOSE_TIMEOUT,
  );
  let read = 0;
  await assert.rejects(
    withDeadline(
      (async () => {
        for await (const _ of peer) read++;
      })(),
      5_000,
      "the executor's reads",
    ),
    (error) => error instanceof StreamResetError && error.reason === RESET_CLOSE_TIMEOUT,
  );
  assert.ok(read > 0 && read < n, `the executor read ${read} of ${n} before the error`);
});

Deno.test("StreamMux resets a stream whose segment its socket refuses as too large; the other streams go on", async () => {
  await using lb = loopback({ onStream: echo() });
  // A segment size past the socket's 256 KiB frame limit: a misconfiguration, caught per stream.
  const harness = await lb.harness({ segmentBytes: 300_000 });
  const small = harness.open();
  await small.send("before");
  assert.equal(await withDeadline(nextMessage(small), 5_000, "echo"), "echo:before");
  const big = harness.open();
  const fits = "f".repeat(250_000);
  await big.send(fits);
  assert.equal(await withDeadline(nextMessage(big), 5_000, "echo at the limit"), "echo:" + fits);
  await big.send("y".repeat(280_000)).catch(() => {});
  const error = await withDeadline(nextMessage(big).catch((e) => e), 5_000, "the stream's end");
  assert.ok(error instanceof StreamResetError, String(error));
  assert.equal(error.reason, RESET_MESSAGE_TOO_LARGE);
  await small.send("after");
  assert.equal(await withDeadline(nextMessage(small), 5_000, "echo"), "echo:after");
});

Deno.test("StreamMux resumes every stream on a new socket with no gap and no duplicate", async () => {
  await using lb = loopback({ onStream: echo() });
  const harness = await lb.harness();
  const streams = Array.from({ length: 8 }, () => harness.open());
  const total = 200;
  // Resolved by stream 0's consumer once 40 echoes came back: at least 40
  // segments went out and the transfer is under way on the first socket.
  const progress = Promise.withResolvers<void>();
  const results = streams.map(async (stream, index) => {
    const got: string[] = [];
    for await (const message of stream) {
      got.push(message);
      if (index === 0 && got.length === 40) progress.resolve();
      if (got.length === total) break;
    }
    return got;
  });
  const senders = streams.map(async (stream) => {
    for (let i = 0; i < total; i++) await stream.send(`${i}:${"z".repeat(i * 37)}`);
  });
  // Cut the physical socket in the middle (from the server side), then reconnect.
  await withDeadline(progress.promise, 5_000, "progress");
  const detached = harness.detached;
  const executorDetached = lb.executor.detached;
  await lb.accepted[0].close("test cut", 4000);
  await withDeadline(detached, 5_000, "harness detached");
  await withDeadline(executorDetached, 5_000, "executor detached");
  assert.equal(harness.attached, false);
  assert.equal(harness.streams, 8);
  harness.attach(await RelaySocket.connect(lb.url));
  await withDeadline(Promise.all(senders), 20_000, "senders");
  const all = await withDeadline(Promise.all(results), 20_000, "receivers");
  for (const got of all) {
    assert.deepEqual(
      got,
      Array.from({ length: total }, (_, i) => `echo:${i}:${"z".repeat(i * 37)}`),
    );
  }
  assert.equal(lb.accepted.length, 2);
});

Deno.test("StreamMux fails streams with RelayClosedError after the detach window", async () => {
  const executorStreams: MuxStream[] = [];
  await using lb = loopback({
    detachWindowMs: 150,
    onStream: (stream) => {
      executorStreams.push(stream);
      echo()(stream);
    },
  });
  const harness = await lb.harness({ detachWindowMs: 150 });
  const stream = harness.open();
  await stream.send("x");
  await withDeadline(nextMessage(stream), 5_000, "echo");
  const read = nextMessage(stream).catch((e) => e);
  await lb.accepted[0].close("gone", 4001);
  await withDeadline(harness.detached, 5_000, "detached");
  const error = await withDeadline(read, 5_000, "expiry");
  assert.ok(error instanceof RelayClosedError, String(error));
  assert.match(error.message, /150 ms detach window/);
  await withDeadline(stream.closed, 1_000, "closed");
  assert.equal(harness.streams, 0);
  // The executor side expires on its own detach window: its stream's `closed`
  // settles once the stream has left the executor mux's table.
  assert.equal(executorStreams.length, 1);
  await withDeadline(executorStreams[0].closed, 5_000, "executor expiry");
  assert.equal(lb.executor.streams, 0);
});

Deno.test("StreamMux harness answers data for a stream it never opened with unknown_stream", async () => {
  await using lb = loopback({}, false);
  const harness = await lb.harness();
  const raw = lb.accepted[0] ?? await lb.nextAccepted();
  const frames = raw[Symbol.asyncIterator]();
  await raw.send({
    version: 1,
    streamId: "stranger",
    ack: 0,
    ackBits: 0,
    body: { kind: "data", seq: 1, segmentIndex: 0, segmentCount: 1, payload: new Uint8Array([1]) },
  });
  const reply = await withDeadline(frames.next(), 5_000, "reset");
  assert.equal(reply.value?.streamId, "stranger");
  assert.deepEqual(reply.value?.body, { kind: "reset", reason: RESET_UNKNOWN_STREAM });
  // The harness's own streams start reliable: data seq 1.
  const own = harness.open({ id: "mine" });
  await own.send("hello");
  const frame = await withDeadline(frames.next(), 5_000, "data");
  assert.equal(frame.value?.streamId, "mine");
  assert.ok(frame.value?.body.kind === "data" && frame.value.body.seq === 1);
  assert.throws(() => harness.open({ id: "mine" }), /already open/);
  assert.throws(() => harness.open({ id: " padded" }), TypeError);
  assert.throws(() => lb.executor.open(), TypeError);
});

Deno.test("StreamMux executor answers a resume of unknown state with unknown_stream", async () => {
  await using lb = loopback({ onStream: echo() });
  const raw = await RelaySocket.connect(lb.url);
  const frames = raw[Symbol.asyncIterator]();
  await raw.send(bodyFrame("lost", { kind: "resume", nextSeq: 7 }));
  await raw.send({
    version: 1,
    streamId: "lost",
    ack: 0,
    ackBits: 0,
    body: { kind: "data", seq: 5, segmentIndex: 0, segmentCount: 1, payload: new Uint8Array([1]) },
  });
  const reply = await withDeadline(frames.next(), 5_000, "reset");
  assert.deepEqual(reply.value?.body, { kind: "reset", reason: RESET_UNKNOWN_STREAM });
  assert.equal(lb.executor.streams, 0);
  await raw.close();
});

Deno.test("StreamMux executor answers an ack, or a resume that acks its data, for a stream it does not hold (a restarted executor)", async () => {
  await using lb = loopback({ onStream: echo() });
  const raw = await RelaySocket.connect(lb.url);
  const frames = raw[Symbol.asyncIterator]();
  // A resume that acks nothing waits for resent data: no answer. The data
  // frame sent after it proves the order (the relay is ordered).
  await raw.send(bodyFrame("early", { kind: "resume", nextSeq: 3 }));
  // An ack that acknowledges nothing is not answered either; ack_bits alone counts.
  await raw.send(bodyFrame("empty", { kind: "ack" }));
  await raw.send({ ...bodyFrame("bits", { kind: "ack" }), ackBits: 1 });
  await raw.send(bodyFrame("acked", { kind: "ack" }, 4));
  await raw.send(bodyFrame("resumed", { kind: "resume", nextSeq: 3 }, 2));
  await raw.send(bodyFrame("beat", { kind: "heartbeat" }));
  await raw.send(bodyFrame("probe", {
    kind: "data",
    seq: 9,
    segmentIndex: 0,
    segmentCount: 1,
    payload: new Uint8Array([1]),
  }));
  const answers: ([string, string] | string)[] = [];
  for (let i = 0; i < 4; i++) {
    answers.push(resetOf((await withDeadline(frames.next(), 5_000, `answer ${i}`)).value));
  }
  assert.deepEqual(answers, [
    ["bits", RESET_UNKNOWN_STREAM],
    ["acked", RESET_UNKNOWN_STREAM],
    ["resumed", RESET_UNKNOWN_STREAM],
    ["probe", RESET_UNKNOWN_STREAM],
  ]);
  assert.equal(lb.executor.streams, 0);
  // Data seq 0 opens a legacy stream whatever its ack fields say (Codex v1 ignores them).
  await raw.send({ ...dataFrame("legacy", 0, "hi"), ack: 3 });
  const echoed = await withDeadline(frames.next(), 5_000, "the legacy echo");
  assert.equal(echoed.value?.streamId, "legacy");
  assert.equal(echoed.value?.body.kind, "data");
  await raw.close();
});

/** The reason of a reset frame, or a description of what came instead. */
function resetOf(frame: ReceivedFrame | undefined): [string, string] | string {
  if (frame?.body.kind !== "reset") return `not a reset: ${frame?.body.kind}`;
  return [frame.streamId, frame.body.reason];
}

/**
 * Opens `count` Codex v1 streams on one raw socket (resume{next_seq 0}, then
 * data from seq 0) and waits until the executor serves each in legacy mode.
 */
async function openLegacyStreams(
  lb: Loopback,
  served: MuxStream[],
  count: number,
): Promise<{ raw: RelaySocket; ids: string[] }> {
  const raw = await RelaySocket.connect(lb.url);
  const ids = Array.from({ length: count }, (_, i) => `v1-${i}`);
  for (const id of ids) {
    await raw.send(bodyFrame(id, { kind: "resume", nextSeq: 0 }));
    await raw.send(dataFrame(id, 0, '{"id":1,"method":"initialize","params":{}}'));
  }
  await until(
    () => served.length === count && served.every((s) => s.mode === "legacy"),
    10_000,
    `${count} legacy streams`,
  );
  return { raw, ids };
}

/** Cuts the executor's socket from the server side and waits until the mux saw it go. */
async function cutExecutorSocket(lb: Loopback): Promise<void> {
  const detached = lb.executor.detached;
  await lb.accepted[lb.accepted.length - 1].close("test cut", 4000);
  await withDeadline(detached, 5_000, "executor detached");
}

Deno.test("StreamMux tells a legacy stream lost with its socket executor_disconnected at once on the next socket", async () => {
  const served: MuxStream[] = [];
  // A 30 s detach window: the reset must not wait for it (nor for the rendezvous's).
  await using lb = loopback({ detachWindowMs: 30_000, onStream: (s) => served.push(s) });
  const { raw: first } = await openLegacyStreams(lb, served, 1);
  await cutExecutorSocket(lb);
  // The legacy stream cannot resume: it ended with the socket.
  await withDeadline(served[0].closed, 1_000, "legacy stream ended");
  await first.close();

  // The executor's next socket (here: the harness again) is told at once.
  await using second = await RelaySocket.connect(lb.url);
  const frames = second[Symbol.asyncIterator]();
  const told = await withDeadline(frames.next(), 2_000, "reset on the next socket");
  assert.deepEqual(resetOf(told.value), ["v1-0", RESET_EXECUTOR_DISCONNECTED]);
  // A later request on the id gets the same reason, not stream_closed.
  await second.send(dataFrame("v1-0", 1, '{"id":2,"method":"process/start","params":{}}'));
  const answer = await withDeadline(frames.next(), 2_000, "answer to later data");
  assert.deepEqual(resetOf(answer.value), ["v1-0", RESET_EXECUTOR_DISCONNECTED]);
  // So do an ack and a resume for it: the peer may never have seen the first reset.
  for (const body of [{ kind: "ack" }, { kind: "resume", nextSeq: 2 }] as const) {
    await second.send(bodyFrame("v1-0", body));
    const again = await withDeadline(frames.next(), 2_000, `answer to ${body.kind}`);
    assert.deepEqual(resetOf(again.value), ["v1-0", RESET_EXECUTOR_DISCONNECTED]);
  }
  // The id may start over from seq 0 (a Codex v1 restart): a new stream. Its
  // claim (resume{next_seq 0}) is not answered with the old end.
  await second.send(bodyFrame("v1-0", { kind: "resume", nextSeq: 0 }));
  await second.send(dataFrame("v1-0", 0, '{"id":1,"method":"initialize","params":{}}'));
  await until(() => served.length === 2 && served[1].mode === "legacy", 5_000, "restart");
  await served[1].send("served again");
  const reply = await withDeadline(frames.next(), 2_000, "reply on the restarted stream");
  assert.equal(reply.value?.body.kind, "data");
  assert.equal(lb.executor.streams, 1);
});

Deno.test("StreamMux tells at most 4,096 lost legacy streams, the newest ones, on the next socket", async () => {
  for (const count of [4096, 4097]) {
    const served: MuxStream[] = [];
    await using lb = loopback({ maxStreams: 5000, onStream: (s) => served.push(s) });
    const { raw: first, ids } = await openLegacyStreams(lb, served, count);
    await cutExecutorSocket(lb);
    await first.close();
    await using second = await RelaySocket.connect(lb.url);
    const frames = second[Symbol.asyncIterator]();
    const told: ([string, string] | string)[] = [];
    for (let i = 0; i < 4096; i++) {
      told.push(resetOf((await withDeadline(frames.next(), 5_000, `reset ${i}`)).value));
    }
    // Oldest first; past the bound the oldest is dropped (its harness still
    // learns from the rendezvous, or from the answer to its next request).
    const expected = ids.slice(count - 4096).map((id) => [id, RESET_EXECUTOR_DISCONNECTED]);
    assert.deepEqual(told, expected, `${count} lost`);
    // Nothing more: the answer to a probe comes next.
    await second.send(dataFrame("probe", 5, "x"));
    const next = await withDeadline(frames.next(), 5_000, "probe answer");
    assert.deepEqual(resetOf(next.value), ["probe", RESET_UNKNOWN_STREAM], `${count} lost`);
  }
});

Deno.test("MuxStream reports its mode's message limit once the mode is known, and sends up to it", async () => {
  const limits = { legacyMessageBytes: 4096, maxMessageBytes: 1 << 20 };
  const served: MuxStream[] = [];
  const atCreation: (number | undefined)[] = [];
  await using lb = loopback({
    onStream: (stream) => {
      served.push(stream);
      atCreation.push(stream.maxMessageBytes);
    },
    stream: limits,
  });
  // A Codex v1 harness: data from seq 0 makes the stream legacy.
  const raw = await RelaySocket.connect(lb.url);
  try {
    await raw.send({
      version: 1,
      streamId: "v1",
      ack: 0,
      ackBits: 0,
      body: {
        kind: "data",
        seq: 0,
        segmentIndex: 0,
        segmentCount: 1,
        payload: new Uint8Array([123]),
      },
    });
    await until(() => served.length === 1, 5_000, "legacy stream");
    const legacy = served[0];
    assert.equal(await withDeadline(nextMessage(legacy), 5_000, "first message"), "{");
    assert.deepEqual(atCreation, [undefined], "unknown while pending");
    assert.equal(legacy.mode, "legacy");
    assert.equal(legacy.maxMessageBytes, 4096);
    await legacy.send("x".repeat(4096));
    await assert.rejects(legacy.send("x".repeat(4097)), RangeError);

    // Our harness opens reliable streams: the reliable limit on both sides.
    const harness = await lb.harness({ stream: limits });
    const own = harness.open();
    assert.equal(own.maxMessageBytes, 1 << 20);
    await own.send("hello");
    await until(() => served.length === 2, 5_000, "reliable stream");
    assert.equal(await withDeadline(nextMessage(served[1]), 5_000, "hello"), "hello");
    assert.equal(served[1].mode, "reliable");
    assert.equal(served[1].maxMessageBytes, 1 << 20);
  } finally {
    await raw.close();
  }
});

Deno.test("StreamMux close is idempotent and fails later opens", async () => {
  const mux = new StreamMux({ role: "harness" });
  const stream = mux.open();
  const read = nextMessage(stream).catch((e) => e);
  await Promise.all([mux.close(), mux.close()]);
  assert.ok((await read) instanceof StreamResetError);
  assert.throws(() => mux.open(), RelayClosedError);
  await mux.closed;
});

Deno.test("StreamMux takes its timer options up to 2^31 - 1 ms and refuses one more (a timer's limit)", async () => {
  for (const name of ["detachWindowMs", "closeTimeoutMs"] as const) {
    const mux = new StreamMux({ role: "harness", [name]: 2 ** 31 - 1 });
    await mux.close();
    for (const value of [0, 1.5, 2 ** 31]) {
      assert.throws(
        () => new StreamMux({ role: "harness", [name]: value }),
        (e: Error) => e instanceof RangeError && e.message.includes(`${name} ${value}`),
        `${name} ${value}`,
      );
    }
  }
});

/**
 * An executor mux serving stream "r", opened by a raw relay socket with the
 * data "hello". `nextReset` takes the next reset, past the ack of "hello".
 */
async function oneServedStream() {
  const served: MuxStream[] = [];
  const lb = loopback({ onStream: (s) => served.push(s) });
  const raw = await RelaySocket.connect(lb.url);
  const frames = raw[Symbol.asyncIterator]();
  await raw.send(dataFrame("r", 1, "hello"));
  await until(() => served.length === 1, 5_000, "the stream served");
  return {
    stream: served[0],
    raw,
    nextReset: async (label: string) => {
      let frame = await withDeadline(frames.next(), 5_000, label);
      if (frame.value?.body.kind !== "reset") {
        frame = await withDeadline(frames.next(), 5_000, label);
      }
      return resetOf(frame.value);
    },
    [Symbol.asyncDispose]: async () => {
      await raw.close();
      await lb[Symbol.asyncDispose]();
    },
  };
}

Deno.test("StreamMux answers later frames for a stream it reset with that reset's reason, not stream_closed", async () => {
  await using r = await oneServedStream();
  r.stream.reset("custom_reason");
  assert.deepEqual(await r.nextReset("the reset"), ["r", "custom_reason"]);
  // A late ack: the peer may have missed the reset, and a repeat could overtake
  // it while queued, so the repeat says the same.
  await r.raw.send(bodyFrame("r", { kind: "ack" }, 1));
  assert.deepEqual(await r.nextReset("the repeat"), ["r", "custom_reason"]);
});

Deno.test("StreamMux answers later frames for a stream a received reset ended with that reset's reason (a harness back after the rendezvous' window hears harness_disconnected, not stream_closed)", async () => {
  await using r = await oneServedStream();
  // The rendezvous ends the stream (its harness stayed away too long).
  await r.raw.send(bodyFrame("r", { kind: "reset", reason: "harness_disconnected" }));
  await withDeadline(r.stream.closed, 5_000, "the stream ended");
  // The harness comes back and resumes it.
  await r.raw.send(bodyFrame("r", { kind: "resume", nextSeq: 1 }));
  assert.deepEqual(await r.nextReset("the answer"), ["r", "harness_disconnected"]);
});
