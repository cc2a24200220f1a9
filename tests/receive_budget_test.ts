/**
 * The receive budget: one bound on what all streams of a mux hold for their
 * consumers, with an executor mux behind a real loopback WebSocket whose
 * consumers stop reading.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type MuxStream, StreamMux, type StreamMuxOptions } from "../lib/mux/stream_mux.ts";
import { StreamResetError } from "../lib/errors.ts";
import { RESET_INBOX_OVERFLOW } from "../lib/mux/reset_reasons.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { bodyFrame } from "./_support/frames.ts";
import { RelaySocket } from "../lib/relay/relay_socket.ts";
import { echo, loopback } from "./_mux_loopback.ts";
import { Executor } from "../lib/exec/executor.ts";
import { ByteBudget } from "../lib/_byte_budget.ts";
import { ReliableStream } from "../lib/mux/reliable_stream.ts";
import type { RelayFrame } from "../lib/relay/frame_codec.ts";

async function nextMessage(stream: MuxStream): Promise<string> {
  const result = await stream[Symbol.asyncIterator]().next();
  if (result.done) throw new Error(`Stream ${stream.id} ended`);
  return result.value;
}

Deno.test("StreamMux refuses a receive budget below its streams' message limit", () => {
  assert.throws(
    () =>
      new StreamMux({
        role: "executor",
        receiveBudgetBytes: 65_535,
        stream: { maxMessageBytes: 65_536 },
      }),
    /receiveBudgetBytes 65535 is not an integer of at least maxMessageBytes \(65536\)/,
  );
  const mux = new StreamMux({
    role: "executor",
    receiveBudgetBytes: 65_536,
    stream: { maxMessageBytes: 65_536 },
  });
  assert.deepEqual(mux.receiveBudget, {
    used: 0,
    limit: 65_536,
    shedCount: 0,
    expected: 0,
    waiting: 0,
  });
});

Deno.test("StreamMux holds its receive budget across streams whose consumers do not read: at the limit all keep their messages, one byte past it the stream holding the most is reset and the others go on", async () => {
  const size = 60_000; // one segment each
  const limit = 4 * size;
  const served = new Map<string, MuxStream>();
  await using lb = loopback({
    receiveBudgetBytes: limit,
    stream: { maxMessageBytes: 65_536 },
    onStream: (stream) => {
      served.set(stream.id, stream);
      if (stream.id === "echo") echo()(stream);
    },
  });
  const executor = lb.executor;
  const harness = await lb.harness();
  const [large, small, talker] = [
    harness.open({ id: "large" }),
    harness.open({ id: "small" }),
    harness.open({ id: "echo" }),
  ];
  await talker.send("ping");
  assert.equal(await withDeadline(nextMessage(talker), 5_000, "echo"), "echo:ping");
  const payload = (fill: string) => fill.repeat(size);
  for (let i = 0; i < 3; i++) await large.send(payload("a"));
  await small.send(payload("b"));
  await until(() => executor.receiveBudget.used === limit, 5_000, "both inboxes full to the limit");
  assert.equal(executor.receiveBudget.shedCount, 0);

  // One byte more, on the stream that holds the least.
  await small.send("c");
  const refused = await withDeadline(nextMessage(large).catch((e) => e), 5_000, "large reset");
  assert.ok(refused instanceof StreamResetError, String(refused));
  assert.equal(refused.reason, RESET_INBOX_OVERFLOW);
  await until(() => executor.receiveBudget.used === size + 1, 5_000, "small's two messages held");
  assert.equal(executor.receiveBudget.shedCount, 1);
  // The shed stream's consumer gets the reset at once, not the dropped messages.
  const shedConsumer = served.get("large")!;
  const dropped = await withDeadline(
    nextMessage(shedConsumer).catch((e) => e),
    1_000,
    "shed consumer's read",
  );
  assert.ok(dropped instanceof StreamResetError, String(dropped));
  assert.equal(dropped.reason, RESET_INBOX_OVERFLOW);
  // The other streams lost nothing.
  const smallConsumer = served.get("small")!;
  assert.equal(await withDeadline(nextMessage(smallConsumer), 1_000, "b"), payload("b"));
  assert.equal(await withDeadline(nextMessage(smallConsumer), 1_000, "c"), "c");
  assert.equal(executor.receiveBudget.used, 0);
  await talker.send("pong");
  assert.equal(await withDeadline(nextMessage(talker), 5_000, "echo after"), "echo:pong");
  await small.send("d");
  assert.equal(await withDeadline(nextMessage(smallConsumer), 5_000, "d"), "d");
});

Deno.test("StreamMux keeps streams flooding consumers that never read within its receive budget, and serves the others", async () => {
  const limit = 1024 * 1024;
  const floods = 6;
  await using lb = loopback({
    receiveBudgetBytes: limit,
    stream: { maxMessageBytes: 65_536 },
    onStream: (stream) => {
      if (stream.id === "echo") echo()(stream);
    },
  });
  const executor = lb.executor;
  // Each stream alone may hold 8 MiB of inbox plus 4 MiB of held segments.
  const harness = await lb.harness();
  const flooders = Array.from({ length: floods }, (_, i) => harness.open({ id: `flood-${i}` }));
  const chunk = "z".repeat(60_000);
  let peak = 0;
  const results = await withDeadline(
    Promise.all(flooders.map(async (stream) => {
      try {
        // 1.2 MiB each, 7.2 MiB in all against a 1 MiB budget.
        for (let i = 0; i < 20; i++) {
          await stream.send(chunk);
          peak = Math.max(peak, executor.receiveBudget.used);
        }
        await withDeadline(stream.closed, 10_000, `${stream.id} reset`);
        return stream.resetReason;
      } catch (error) {
        return error instanceof StreamResetError ? error.reason : String(error);
      }
    })),
    20_000,
    "floods",
  );
  const shed = results.filter((reason) => reason === RESET_INBOX_OVERFLOW).length;
  // Each stream alone ends up past the budget, so every one is shed in turn.
  assert.equal(shed, floods, `${results}`);
  assert.ok(peak <= limit, `peak ${peak}`);
  assert.ok(executor.receiveBudget.used <= limit);
  assert.equal(executor.receiveBudget.shedCount, shed);
  const talker = harness.open({ id: "echo" });
  await talker.send("still here");
  assert.equal(await withDeadline(nextMessage(talker), 5_000, "echo"), "echo:still here");
});

Deno.test("StreamMux sheds a stream that ended with messages its consumer has not read: the consumer gets inbox_overflow, not a clean end", async () => {
  const size = 60_000;
  const limit = 4 * size;
  const served = new Map<string, MuxStream>();
  await using lb = loopback({
    receiveBudgetBytes: limit,
    stream: { maxMessageBytes: 65_536 },
    onStream: (stream) => void served.set(stream.id, stream),
  });
  const executor = lb.executor;
  const harness = await lb.harness();
  const ended = harness.open({ id: "ended" });
  for (let i = 0; i < 3; i++) await ended.send("a".repeat(size));
  await withDeadline(ended.close(), 5_000, "graceful close");
  await until(() => executor.streams === 0, 5_000, "the executor saw the close");
  assert.equal(executor.receiveBudget.used, 3 * size);
  const other = harness.open({ id: "other" });
  await other.send("b".repeat(size + 1));
  await until(() => executor.receiveBudget.shedCount === 1, 5_000, "the ended stream shed");
  const read = await withDeadline(
    nextMessage(served.get("ended")!).catch((e) => e),
    1_000,
    "the ended stream's read",
  );
  assert.ok(read instanceof StreamResetError, String(read));
  assert.equal(read.reason, RESET_INBOX_OVERFLOW);
  assert.equal(
    await withDeadline(nextMessage(served.get("other")!), 1_000, "b"),
    "b".repeat(size + 1),
  );
  assert.equal(executor.receiveBudget.used, 0);
});

Deno.test("StreamMux stops counting a session's unread messages once the session closes its stream: an executor at its request cap whose harness resets the stream gives the budget back", async () => {
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using lb = loopback({ onStream: (stream) => void executor.serve(stream).catch(() => {}) });
  const budget = () => lb.executor.receiveBudget;
  const harness = await lb.harness();
  const stream = harness.open();
  const replies = stream[Symbol.asyncIterator]();
  let id = 1;
  const call = async (method: string, params: unknown) => {
    await stream.send(JSON.stringify({ jsonrpc: "2.0", id: id++, method, params }));
    return JSON.parse(await withDeadline(replies.next(), 5_000, method).then((r) => r.value));
  };
  assert.ok((await call("initialize", { clientName: "budget" })).result);
  await stream.send(JSON.stringify({ jsonrpc: "2.0", method: "initialized" }));
  assert.ok((await call("process/start", { processId: "p", argv: ["sleep", "30"] })).result);
  // Long polls up to the session's request cap and past it: it stops reading.
  for (let i = 0; i < 130; i++) {
    await stream.send(JSON.stringify({
      jsonrpc: "2.0",
      id: id++,
      method: "process/read",
      params: { processId: "p", afterSeq: 1000, waitMs: 20_000 },
    }));
  }
  const pad = "x".repeat(60_000);
  for (let i = 0; i < 20; i++) {
    await stream.send(JSON.stringify({ jsonrpc: "2.0", method: "noop", params: { pad } }));
  }
  await until(() => budget().used > 20 * 60_000, 5_000, "the unread messages counted");
  stream.reset("shutdown");
  await until(() => budget().used === 0, 5_000, "the session's unread messages given back");
  assert.equal(budget().shedCount, 0);
});

/**
 * An executor mux with a 1 MiB receive budget, a clock the test moves ahead
 * (`clock.skew`, ms), and its streams by id; `onStream` may read some.
 */
function budgeted(
  stream: StreamMuxOptions["stream"] = {},
  onStream?: (stream: MuxStream) => void,
) {
  const limit = 1024 * 1024;
  const clock = { skew: 0 };
  const served = new Map<string, MuxStream>();
  const lb = loopback({
    receiveBudgetBytes: limit,
    stream: { maxMessageBytes: limit, ...stream },
    now: () => performance.now() + clock.skew,
    onStream: (accepted) => {
      served.set(accepted.id, accepted);
      onStream?.(accepted);
    },
  });
  return { lb, served, clock, limit };
}

Deno.test("StreamMux sheds a stream whose consumer stopped (data waiting a second) before a larger one whose consumer keeps up", async () => {
  const uploads: string[] = [];
  const { lb, clock } = budgeted({ maxMessageBytes: 800 * 1024 }, (stream) => {
    if (stream.id !== "upload") return; // "stalled" is never read
    (async () => {
      for await (const message of stream) uploads.push(message);
    })().catch(() => {});
  });
  await using _ = lb;
  const harness = await lb.harness();
  const stalled = harness.open({ id: "stalled" });
  for (let i = 0; i < 5; i++) await stalled.send("s".repeat(60_000));
  await until(() => lb.executor.receiveBudget.used === 300_000, 5_000, "the stalled inbox");
  clock.skew = 1_000; // its messages have waited a second
  // 760 KiB in 13 segments: with the stalled 300,000 bytes, past the budget
  // while it is reassembled, though its consumer keeps up.
  const upload = harness.open({ id: "upload" });
  const big = "u".repeat(760 * 1024);
  await upload.send(big);
  const refused = await withDeadline(nextMessage(stalled).catch((e) => e), 5_000, "stalled reset");
  assert.ok(refused instanceof StreamResetError, String(refused));
  assert.equal(refused.reason, RESET_INBOX_OVERFLOW);
  await until(() => uploads.length === 1, 5_000, "the upload delivered");
  assert.equal(uploads[0], big);
  assert.equal(lb.executor.receiveBudget.shedCount, 1);
  assert.equal(lb.executor.receiveBudget.used, 0);
});

Deno.test("StreamMux sheds among stopped streams the largest first (one holding a message past its inbox bound), and keeps the others and an upload", async () => {
  const { lb, served, clock } = budgeted({ maxMessageBytes: 700 * 1024, inboxBytes: 128 * 1024 });
  await using _ = lb;
  const harness = await lb.harness();
  // Never read: one message past the inbox's byte bound, then small ones held behind it.
  const stalled = harness.open({ id: "stalled" });
  await stalled.send("s".repeat(700 * 1024));
  for (let i = 0; i < 20; i++) await stalled.send("t".repeat(1000));
  // Not read yet either: four messages.
  const slow = harness.open({ id: "slow" });
  for (let i = 0; i < 4; i++) await slow.send("w".repeat(60_000));
  await until(
    () => lb.executor.receiveBudget.used === 700 * 1024 + 20 * 1000 + 240_000,
    5_000,
    "both streams' bytes held",
  );
  clock.skew = 1_000; // both have left their data waiting a second
  const upload = harness.open({ id: "upload" });
  await upload.send("u".repeat(200 * 1024));
  const refused = await withDeadline(nextMessage(stalled).catch((e) => e), 5_000, "stalled reset");
  assert.ok(refused instanceof StreamResetError, String(refused));
  assert.equal(refused.reason, RESET_INBOX_OVERFLOW);
  assert.equal(lb.executor.receiveBudget.shedCount, 1);
  for (let i = 0; i < 4; i++) {
    assert.equal(
      await withDeadline(nextMessage(served.get("slow")!), 1_000, `slow ${i}`),
      "w".repeat(60_000),
    );
  }
  assert.equal(
    await withDeadline(nextMessage(served.get("upload")!), 1_000, "upload"),
    "u".repeat(200 * 1024),
  );
});

Deno.test("StreamMux counts a message still incomplete after its size takes at 1 MiB/s as stopped, though it keeps growing: the larger stopped stream goes first", async () => {
  const segment = 60 * 1024;
  const { lb, served, clock, limit } = budgeted();
  await using _ = lb;
  // One raw peer: a message on "partial" that stops after 8 of its 16
  // segments, and three whole messages on "slow" that nobody reads yet.
  await using raw = await RelaySocket.connect(lb.url);
  const send = (streamId: string, seq: number, index: number, count: number, size: number) =>
    raw.send(bodyFrame(streamId, {
      kind: "data",
      seq,
      segmentIndex: index,
      segmentCount: count,
      payload: new Uint8Array(size).fill(0x61),
    }));
  for (let seq = 1; seq <= 8; seq++) await send("partial", seq, seq - 1, 16, segment);
  for (let seq = 1; seq <= 3; seq++) await send("slow", seq, 0, 1, 60_000);
  await until(
    () => lb.executor.receiveBudget.used === 8 * segment + 180_000,
    5_000,
    "the partial message and the slow stream's messages",
  );
  clock.skew = 2_000; // the partial message (983,040 bytes claimed) started 2 s ago
  // It still grows (a trickling sender): that does not make it current. Its
  // buffer doubles for one more byte, which takes the sum past the budget.
  await send("partial", 9, 8, 16, 1);
  // "slow" has left its messages waiting 2 s too; without the arrival rule
  // it would have gone alone. It keeps them and takes a fourth.
  const rest = limit - 8 * segment - 180_000;
  for (let seq = 4, left = rest + 1; left > 0; seq++, left -= segment) {
    await send("slow", seq, seq - 4, Math.ceil((rest + 1) / segment), Math.min(segment, left));
  }
  await until(() => lb.executor.receiveBudget.shedCount === 1, 5_000, "one stream shed");
  assert.equal(served.get("partial")!.resetReason, RESET_INBOX_OVERFLOW);
  assert.equal(served.get("slow")!.resetReason, undefined);
  const slow = served.get("slow")!;
  for (let i = 0; i < 3; i++) {
    const message = await withDeadline(nextMessage(slow), 1_000, `slow ${i}`);
    assert.equal(message, "a".repeat(60_000));
  }
  assert.equal((await withDeadline(nextMessage(slow), 1_000, "slow's last")).length, rest + 1);
});

Deno.test("StreamMux counts a message being reassembled at its buffer's size, not the bytes received so far", async () => {
  const segment = 60 * 1024;
  await using lb = loopback({ onStream: () => {} });
  await using raw = await RelaySocket.connect(lb.url);
  // Five of sixteen segments: the buffer started at two segments and doubled to eight.
  for (let seq = 1; seq <= 5; seq++) {
    await raw.send(bodyFrame("partial", {
      kind: "data",
      seq,
      segmentIndex: seq - 1,
      segmentCount: 16,
      payload: new Uint8Array(segment),
    }));
  }
  await until(() => lb.executor.receiveBudget.used > 0, 5_000, "the partial message counted");
  await until(() => lb.executor.streams === 1, 5_000, "the stream");
  const expected = 8 * segment;
  await until(() => lb.executor.receiveBudget.used === expected, 5_000, `${expected} counted`);
});

Deno.test("StreamMux ranks streams whose data waited under a second by size with the rest: a consumer a turn behind does not go before a larger holder", async () => {
  const { lb, served, clock } = budgeted();
  await using _ = lb;
  const harness = await lb.harness();
  const earlier = harness.open({ id: "earlier" });
  await earlier.send("e".repeat(400_000));
  await until(() => lb.executor.receiveBudget.used >= 400_000, 5_000, "the earlier message");
  clock.skew = 500; // it has waited half a second: not yet a consumer that stopped
  const fresh = harness.open({ id: "fresh" });
  for (let i = 0; i < 12; i++) await fresh.send("f".repeat(60_000)); // 720,000: past the budget
  await until(() => lb.executor.receiveBudget.shedCount === 1, 5_000, "one stream shed");
  assert.equal(served.get("fresh")!.resetReason, RESET_INBOX_OVERFLOW);
  assert.equal(served.get("earlier")!.resetReason, undefined);
  assert.equal(
    await withDeadline(nextMessage(served.get("earlier")!), 1_000, "earlier"),
    "e".repeat(400_000),
  );
});

Deno.test("ReliableStream counts a consumer as stopped only once whole messages have waited a second: segments held behind a gap wait for the sender", () => {
  let now = 0;
  const budget = new ByteBudget(1024 * 1024);
  const stream = new ReliableStream("gap", { mode: "reliable", budget, now: () => now });
  const segment = (seq: number) =>
    bodyFrame("gap", {
      kind: "data",
      seq,
      segmentIndex: 0,
      segmentCount: 1,
      payload: new Uint8Array(1000),
    });
  stream.receive(segment(2)); // seq 1 is missing: nothing to read
  assert.equal(stream.readable, false);
  now = 1_100;
  assert.deepEqual(stream.shedOrder(budget.used), [0, budget.used]);
  stream.receive(segment(1)); // now two messages wait
  assert.equal(stream.readable, true);
  assert.deepEqual(stream.shedOrder(budget.used), [0, 2000]);
  now = 2_100;
  assert.deepEqual(stream.shedOrder(budget.used), [1, 2000]);
  stream.read(); // the consumer reads one: the other waits from now
  assert.deepEqual(stream.shedOrder(budget.used), [0, 1000]);
  now = 3_100;
  assert.deepEqual(stream.shedOrder(budget.used), [1, 1000]);
  stream.read();
  assert.equal(budget.used, 0);
  stream.close();
});

Deno.test("StreamMux slows concurrent large messages past its receive budget instead of resetting them: every one arrives whole", async () => {
  // Eight 1 MiB messages (18 segments each) at once against a 4 MiB budget:
  // reassembled together they would hold 8 MiB.
  const limit = 4 * 1024 * 1024;
  const uploads = 8;
  const size = 1024 * 1024;
  let peak = 0;
  const served: MuxStream[] = [];
  await using lb = loopback({
    receiveBudgetBytes: limit,
    stream: { maxMessageBytes: size },
    onStream: (stream) => {
      served.push(stream);
      (async () => {
        for await (const message of stream) {
          peak = Math.max(peak, lb.executor.receiveBudget.used);
          await stream.send(`${stream.id}:${message.length}:${message.at(-1)}`);
        }
      })().catch(() => {});
    },
  });
  const harness = await lb.harness();
  const streams = Array.from({ length: uploads }, (_, i) => harness.open({ id: `up-${i}` }));
  const replies = await withDeadline(
    Promise.all(streams.map(async (stream, i) => {
      const fill = String.fromCharCode(97 + i);
      await stream.send(fill.repeat(size));
      return await nextMessage(stream).catch((e) => `${stream.id} failed: ${e}`);
    })),
    20_000,
    "uploads",
  );
  assert.deepEqual(
    replies,
    streams.map((s, i) => `${s.id}:${size}:${String.fromCharCode(97 + i)}`),
  );
  assert.equal(lb.executor.receiveBudget.shedCount, 0);
  assert.ok(peak <= limit, `peak ${peak}`);
  // Some waited: each held one segment and dropped the rest of its sender's
  // window unacknowledged, and was sent it again once admitted.
  const deferred = served.reduce((sum, stream) => sum + stream.stats.deferredDropped, 0);
  assert.ok(deferred > 0, "no stream waited for room");
  // Asked again by `resume`, the senders resent those at once: not one
  // segment per retransmission timeout.
  const timeouts = streams.reduce((sum, stream) => sum + stream.stats.timeouts, 0);
  assert.ok(timeouts * 2 < deferred, `${timeouts} timeouts for ${deferred} dropped segments`);
  assert.deepEqual(lb.executor.receiveBudget, {
    used: 0,
    limit,
    shedCount: 0,
    expected: 0,
    waiting: 0,
  });
});

/**
 * A sender and a budgeted receiver joined by hand, on one clock: `pump`
 * moves frames both ways until neither has any (`drop` loses the sender's
 * data frames it matches).
 */
function joined(
  id: string,
  budget: ByteBudget,
  clock: () => number,
  options: { segmentBytes?: number; maxMessageBytes?: number } = {},
) {
  const sender = new ReliableStream(id, { mode: "reliable", now: clock, ...options });
  const receiver = new ReliableStream(id, { mode: "reliable", budget, now: clock, ...options });
  const pump = (drop: (seq: number) => boolean = () => false) => {
    for (let moved = true; moved;) {
      moved = false;
      for (let frame = sender.poll(); frame; frame = sender.poll()) {
        moved = true;
        if (frame.body.kind !== "data" || !drop(frame.body.seq)) receiver.receive(frame);
      }
      for (let frame = receiver.poll(); frame; frame = receiver.poll()) {
        moved = true;
        sender.receive(frame);
      }
    }
  };
  return { sender, receiver, pump };
}

/** Lets queued microtasks (the budget's call-backs) run. */
const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

Deno.test("ReliableStream admits messages as large as the whole budget one after another: each arrives whole, none is reset", async () => {
  const now = 0;
  const size = 4_000;
  const budget = new ByteBudget(size);
  const options = { segmentBytes: 1_000, maxMessageBytes: size };
  const [a, b] = [joined("a", budget, () => now, options), joined("b", budget, () => now, options)];
  a.sender.write(new Uint8Array(size).fill(1));
  b.sender.write(new Uint8Array(size).fill(2));
  a.pump();
  b.pump();
  assert.equal(budget.waiting, 1, "b waits for a's room");
  assert.equal(budget.used, size, "b holds nothing while it waits");
  assert.equal(a.receiver.read()?.length, size);
  await settle(); // b's turn: it asks its sender to resend
  b.pump();
  assert.deepEqual(b.receiver.read(), new Uint8Array(size).fill(2));
  assert.equal(budget.shedCount, 0);
  assert.equal(budget.used, 0);
  for (const pair of [a, b]) pair.sender.close(), pair.receiver.close();
});

Deno.test("ReliableStream lets the first in line in over messages whose sender stopped, and the limit sheds as many of those as its bytes need", async () => {
  let now = 0;
  const budget = new ByteBudget(11_000);
  const options = { segmentBytes: 1_000, maxMessageBytes: 4_000 };
  // Two senders stop one segment short of their 4,000-byte messages.
  const stale = [
    joined("s1", budget, () => now, options),
    joined("s2", budget, () => now, options),
  ];
  for (const pair of stale) {
    pair.sender.write(new Uint8Array(4_000));
    pair.pump((seq) => seq === 4);
  }
  const honest = joined("h", budget, () => now, options);
  honest.sender.write(new Uint8Array(4_000).fill(7));
  honest.pump();
  assert.equal(budget.waiting, 1, "8,000 held + 2 expected + 4,000 is past 11,000");
  now = 1_000; // the stale senders have stopped: the upload goes in, and one of them is shed for its bytes
  budget.recheck();
  await settle();
  honest.pump();
  assert.deepEqual(honest.receiver.read(), new Uint8Array(4_000).fill(7));
  assert.equal(budget.shedCount, 1);
  const reasons = stale.map((pair) => pair.receiver.resetReason);
  assert.deepEqual(reasons.filter((r) => r === RESET_INBOX_OVERFLOW).length, 1, `${reasons}`);
  for (const pair of [...stale, honest]) pair.sender.close(), pair.receiver.close();
});

Deno.test("ReliableStream gives the room of a message announced and not begun within a second to the next in line", async () => {
  let now = 0;
  const budget = new ByteBudget(6_000);
  const options = { segmentBytes: 1_000, maxMessageBytes: 4_000 };
  const holding = joined("holding", budget, () => now, options);
  holding.sender.write(new Uint8Array(4_000));
  holding.pump();
  // Announced (its first segment) and never sent again: it waits holding nothing.
  const silent = joined("silent", budget, () => now, options);
  silent.sender.write(new Uint8Array(4_000));
  silent.pump((seq) => seq > 1);
  const honest = joined("honest", budget, () => now, options);
  honest.sender.write(new Uint8Array(4_000).fill(9));
  honest.pump();
  assert.equal(budget.waiting, 2);
  assert.equal(budget.used, 4_000);
  holding.receiver.read(); // room: silent's turn; it is admitted, and asks for its message
  await settle();
  assert.equal(budget.waiting, 1, "honest still waits behind silent's admission");
  now = 1_000; // silent has not begun its message: its room goes to honest
  budget.recheck();
  await settle();
  honest.pump();
  assert.deepEqual(honest.receiver.read(), new Uint8Array(4_000).fill(9));
  assert.equal(budget.shedCount, 0);
  for (const pair of [holding, silent, honest]) pair.sender.close(), pair.receiver.close();
});

Deno.test("ReliableStream gives up the room of a message whose sender trickles slower than its size allows, so the next in line gets in", async () => {
  let now = 0;
  const budget = new ByteBudget(5 * 1024 * 1024);
  const size = 1024 * 1024;
  // Three messages announce 1 MiB each, then come a byte at a time.
  const trickles = ["t1", "t2", "t3"].map((id) =>
    new ReliableStream(id, { mode: "reliable", budget, now: () => now })
  );
  const segment = (id: string, seq: number, payload: number) =>
    bodyFrame(id, {
      kind: "data",
      seq,
      segmentIndex: seq - 1,
      segmentCount: Math.ceil(size / 61_440),
      payload: new Uint8Array(payload),
    });
  for (const stream of trickles) stream.receive(segment(stream.id, 1, 61_440));
  const honest = joined("honest", budget, () => now);
  honest.sender.write(new Uint8Array(size).fill(5));
  honest.pump();
  assert.equal(budget.waiting, 1, "three announced MiB and one more are past 3.75 MiB");
  now = 800;
  for (const stream of trickles) stream.receive(segment(stream.id, 2, 1));
  now = 1_100; // 18 segments' worth takes 1.05 s at 1 MiB/s: these count as stopped
  budget.recheck();
  await settle();
  honest.pump();
  const got = honest.receiver.read();
  assert.ok(got?.length === size && got.every((b) => b === 5), `honest got ${got?.length} bytes`);
  for (const stream of [...trickles, honest.sender, honest.receiver]) stream.close();
});

Deno.test("ReliableStream counts segments held behind a missing one for twice the retransmission timeout's cap as stopped, so they are shed for the next in line", async () => {
  let now = 0;
  const budget = new ByteBudget(4 * 1024 * 1024);
  // Three streams hold 18 segments each behind a seq that never comes.
  const gapped = ["g1", "g2", "g3"].map((id) =>
    new ReliableStream(id, { mode: "reliable", budget, now: () => now })
  );
  for (const stream of gapped) {
    for (let seq = 3; seq <= 20; seq++) {
      stream.receive(
        bodyFrame(stream.id, {
          kind: "data",
          seq,
          segmentIndex: 0,
          segmentCount: 1,
          payload: new Uint8Array(61_440),
        }),
      );
    }
  }
  const honest = joined("honest", budget, () => now);
  honest.sender.write(new Uint8Array(1024 * 1024).fill(3));
  honest.pump();
  assert.equal(budget.waiting, 1);
  now = 9_999;
  budget.recheck();
  await settle();
  assert.equal(budget.waiting, 1, "within twice the timeout's cap the sender may still resend");
  now = 10_000;
  budget.recheck();
  await settle();
  honest.pump();
  const got3 = honest.receiver.read();
  assert.ok(
    got3?.length === 1024 * 1024 && got3.every((b) => b === 3),
    `honest got ${got3?.length} bytes`,
  );
  assert.ok(budget.shedCount >= 1, "the limit shed held segments for the upload's bytes");
  assert.ok(budget.used <= budget.limit);
  for (const stream of [...gapped, honest.sender, honest.receiver]) stream.close();
});

Deno.test("ReliableStream asks for a large message's room only once its inbox could take it", () => {
  const now = 0;
  const budget = new ByteBudget(20_000);
  const options = { segmentBytes: 1_500, maxMessageBytes: 6_000, inboxMessages: 1 };
  const full = joined("full", budget, () => now, options);
  full.sender.write(new Uint8Array(10)); // one message nobody reads: the inbox is full
  full.sender.write(new Uint8Array(6_000));
  full.pump();
  // It holds its sender's window of segments, as a full inbox does, but no room for the message.
  assert.equal(budget.used, 10 + 6_000);
  assert.equal(budget.expected, 0, "no room taken for a message it cannot accept");
  const honest = joined("honest", budget, () => now, options);
  honest.sender.write(new Uint8Array(4_000).fill(4));
  honest.pump();
  assert.deepEqual(honest.receiver.read(), new Uint8Array(4_000).fill(4));
  full.receiver.read(); // room now: the held segment asks, and its message comes in
  full.pump();
  assert.equal(full.receiver.read()?.length, 6_000);
  for (const pair of [full, honest]) pair.sender.close(), pair.receiver.close();
});

Deno.test("StreamMux looks at its receive budget's line again on its own while streams wait: room that time alone frees (a sender that stopped) goes to the next in line with no frame to prompt it", async () => {
  const { lb, served, clock, limit } = budgeted();
  await using _ = lb;
  await using raw = await RelaySocket.connect(lb.url);
  const frames = raw[Symbol.asyncIterator]();
  const segment = 60 * 1024;
  const data = (id: string, seq: number, count: number) =>
    bodyFrame(id, {
      kind: "data",
      seq,
      segmentIndex: seq - 1,
      segmentCount: count,
      payload: new Uint8Array(segment).fill(seq),
    });
  // Admitted: it announces 12 segments (720 KiB) and stops after the first.
  await raw.send(data("stalled", 1, 12));
  await until(() => lb.executor.receiveBudget.expected > 0, 5_000, "the stalled message admitted");
  // 720 KiB expected and 600 KiB more are past three quarters of the 1 MiB
  // budget: the waiter waits, holding nothing.
  for (let seq = 1; seq <= 10; seq++) await raw.send(data("waiter", seq, 10));
  await until(() => lb.executor.receiveBudget.waiting === 1, 5_000, "the waiter in line");
  assert.equal(lb.executor.receiveBudget.used, segment);
  // A second on, the stalled sender counts as stopped. No frame moves: only
  // the mux's own re-check lets the waiter in, and it asks for a resend.
  clock.skew = 1_100;
  const resume = await withDeadline(
    (async () => {
      for (let next = await frames.next(); !next.done; next = await frames.next()) {
        if (next.value.streamId === "waiter" && next.value.body.kind === "resume") return true;
      }
      return false;
    })(),
    5_000,
    "the waiter's resume",
  );
  assert.equal(resume, true);
  for (let seq = 1; seq <= 10; seq++) await raw.send(data("waiter", seq, 10));
  const message = await withDeadline(
    served.get("waiter")![Symbol.asyncIterator]().next(),
    5_000,
    "the waiter's message",
  );
  assert.equal(message.value?.length, 10 * segment);
  assert.equal(served.get("stalled")!.resetReason, undefined);
  assert.equal(lb.executor.receiveBudget.waiting, 0);
  assert.ok(lb.executor.receiveBudget.used <= limit);
});

/**
 * A 1 MiB budget that another stream's consumer holds all but `free` bytes
 * of (it lets go with `budget.hold(other, 0)`), and stream options of
 * 1,000-byte segments.
 */
function crowdedBudget(free: number) {
  const limit = 1024 * 1024;
  const budget = new ByteBudget(limit);
  const other = { shed: () => budget.hold(other, 0), shedOrder: (b: number) => [0, b] as const };
  budget.hold(other, limit - free);
  return { budget, other, options: { segmentBytes: 1_000, maxMessageBytes: limit } };
}

Deno.test("ReliableStream waits for budget room holding nothing, segments it acknowledged in ack_bits included, and its sender resends those after the admission's resume", async () => {
  let now = 0;
  const { budget, other, options } = crowdedBudget(3_000);
  const { sender, receiver } = joined("sacked", budget, () => now, options);
  const text = new TextEncoder();
  sender.write(text.encode("A")); // seq 1
  sender.write(new Uint8Array(2_000).fill(66)); // seqs 2 and 3: one message
  sender.write(text.encode("C")); // seq 4
  const frames: RelayFrame[] = [];
  for (let frame = sender.poll(); frame; frame = sender.poll()) frames.push(frame);
  assert.equal(frames.length, 4);
  const toSender = () => {
    for (let frame = receiver.poll(); frame; frame = receiver.poll()) sender.receive(frame);
  };
  // The link reorders: seqs 2-4 come before seq 1, and are acknowledged in ack_bits.
  for (const frame of [frames[1], frames[2], frames[3]]) receiver.receive(frame), toSender();
  assert.equal(sender.stats.unackedSegments, 1, "the sender resends only seq 1");
  receiver.receive(frames[0]);
  toSender();
  const read: number[] = [];
  const readAll = () => {
    for (let message = receiver.read(); message; message = receiver.read()) {
      read.push(message.length);
    }
  };
  readAll();
  assert.deepEqual(read, [1], "the two-segment message waits for room");
  assert.equal(receiver.stats.heldSegments, 0, "holding nothing while it waits");
  budget.hold(other, 0); // room again
  await settle();
  for (let step = 0; step < 100 && read.length < 3; step++) {
    now += 100;
    sender.tick();
    receiver.tick();
    for (let frame = sender.poll(); frame; frame = sender.poll()) receiver.receive(frame);
    toSender();
    readAll();
  }
  assert.deepEqual(read, [1, 2_000, 1], "every message arrives once admitted");
  assert.equal(sender.stats.timeouts, 0, "resent at the admission's resume, not one per timeout");
  for (let step = 0; step < 100 && !sender.flushed; step++) {
    now += 100;
    receiver.tick();
    toSender();
  }
  assert.equal(receiver.stats.heldSegments, 0);
  assert.ok(sender.flushed);
  sender.close();
  receiver.close();
});

Deno.test("ReliableStream streams waiting for room hold nothing, so senders that stop with their large messages half sent, ahead of the small one before them, do not block the line", async () => {
  let now = 0;
  const clock = () => now;
  const segment = 61_440;
  const budget = new ByteBudget(8 * 1024 * 1024);
  const options = { now: clock, budget, maxMessageBytes: 8 * 1024 * 1024 };
  const frame = (id: string, seq: number, index: number, count: number, bytes: number) =>
    bodyFrame(id, {
      kind: "data",
      seq,
      segmentIndex: index,
      segmentCount: count,
      payload: new Uint8Array(bytes),
    });
  // Four senders that never answer: each sends 25 segments of a 68-segment
  // message ahead of the one-segment message before it, which comes last.
  const stuck = Array.from({ length: 4 }, (_, i) => new ReliableStream(`stuck${i}`, options));
  for (const [i, stream] of stuck.entries()) {
    for (let s = 0; s < 25; s++) stream.receive(frame(`stuck${i}`, 2 + s, s, 68, segment));
  }
  for (const [i, stream] of stuck.entries()) stream.receive(frame(`stuck${i}`, 1, 0, 1, 10));
  for (const stream of stuck) while (stream.read());
  await settle();
  assert.ok(budget.waiting >= 1, "the stuck streams wait in the line");
  assert.equal(budget.used, 0, "holding nothing");
  const honest = joined("honest", budget, clock);
  honest.sender.write(new Uint8Array(1024 * 1024).fill(7));
  let got: Uint8Array | undefined;
  for (let ms = 0; ms < 60_000 && got === undefined; ms += 10) {
    now += 10;
    for (const stream of [...stuck, honest.sender, honest.receiver]) stream.tick();
    for (const stream of stuck) while (stream.poll()); // their senders ignore every answer
    honest.pump();
    got = honest.receiver.read();
    if (budget.waiting > 0 && ms % 250 === 0) budget.recheck(); // as StreamMux does
    await settle();
  }
  assert.equal(got?.length, 1024 * 1024, "the honest message got in");
  for (const stream of [...stuck, honest.sender, honest.receiver]) stream.close();
});

Deno.test("ReliableStream resends selectively acked segments its waiting receiver dropped though the admission's resume was lost: the receiver asks again when the sender's probe arrives", async () => {
  let now = 0;
  const { budget, other, options } = crowdedBudget(30_000);
  const { sender, receiver } = joined("lost-resume", budget, () => now, options);
  sender.write(new TextEncoder().encode("A")); // seq 1
  sender.write(new Uint8Array(20_000).fill(5)); // seqs 2-21
  const frames: RelayFrame[] = [];
  for (let frame = sender.poll(); frame; frame = sender.poll()) frames.push(frame);
  const toSender = (dropResume: boolean) => {
    for (let frame = receiver.poll(); frame; frame = receiver.poll()) {
      if (dropResume && frame.body.kind === "resume") continue;
      sender.receive(frame);
    }
  };
  // Seqs 2-21 overtake seq 1 and are acknowledged in ack_bits; the message waits for room.
  for (const frame of frames.slice(1)) receiver.receive(frame), toSender(false);
  receiver.receive(frames[0]);
  toSender(false);
  assert.equal(receiver.read()?.length, 1);
  assert.equal(receiver.stats.heldSegments, 0, "it waits holding nothing");
  budget.hold(other, 0);
  await settle(); // admitted: its resume is lost on the way
  toSender(true);
  let got: Uint8Array | undefined;
  for (let step = 0; step < 300 && got === undefined; step++) {
    now += 100;
    sender.tick();
    receiver.tick();
    for (let frame = sender.poll(); frame; frame = sender.poll()) receiver.receive(frame);
    toSender(false);
    got = receiver.read();
  }
  assert.equal(got?.length, 20_000);
  assert.ok(sender.stats.timeouts <= 3, `${sender.stats.timeouts} timeouts, not one per segment`);
  sender.close();
  receiver.close();
});
