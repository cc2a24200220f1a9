/**
 * The receive budget: one bound on what all streams of a mux hold for their
 * consumers. The class on its own, then an executor mux behind a real
 * loopback WebSocket whose consumers stop reading.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type BudgetHolder, ReceiveBudget } from "../lib/mux/receive_budget.ts";
import { type MuxStream, StreamMux } from "../lib/mux/stream_mux.ts";
import { StreamResetError } from "../lib/errors.ts";
import { RESET_INBOX_OVERFLOW } from "../lib/mux/reset_reasons.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { echo, loopback } from "./_mux_loopback.ts";

/** A holder that reports 0 to `budget` when shed, and remembers it was. */
function holder(budget: ReceiveBudget): BudgetHolder & { shedded: boolean } {
  const self = {
    shedded: false,
    shed() {
      self.shedded = true;
      budget.hold(self, 0);
    },
  };
  return self;
}

async function nextMessage(stream: MuxStream): Promise<string> {
  const result = await stream[Symbol.asyncIterator]().next();
  if (result.done) throw new Error(`Stream ${stream.id} ended`);
  return result.value;
}

Deno.test("ReceiveBudget sheds nothing at its limit and the largest holder one byte past it", () => {
  const budget = new ReceiveBudget(100);
  const [a, b, c] = [holder(budget), holder(budget), holder(budget)];
  budget.hold(a, 50);
  budget.hold(b, 30);
  budget.hold(c, 20);
  assert.equal(budget.used, 100);
  assert.equal(budget.shedCount, 0);
  // Growth by the smallest holder sheds the largest, not the one that grew.
  budget.hold(c, 21);
  assert.deepEqual([a.shedded, b.shedded, c.shedded], [true, false, false]);
  assert.equal(budget.used, 51);
  assert.equal(budget.shedCount, 1);
  // A holder that reports less is counted at what it reports.
  budget.hold(b, 0);
  assert.equal(budget.used, 21);
});

Deno.test("ReceiveBudget sheds as many holders as it takes, the one that grew too when it holds the most", () => {
  const budget = new ReceiveBudget(100);
  const holders = [holder(budget), holder(budget), holder(budget)];
  holders.forEach((h, i) => budget.hold(h, 30 + i)); // 30, 31, 32
  const grower = holders[0];
  budget.hold(grower, 99); // 99 + 31 + 32: shed 99, then 63 is within
  assert.deepEqual(holders.map((h) => h.shedded), [true, false, false]);
  assert.equal(budget.used, 63);
  const big = holder(budget);
  budget.hold(big, 200); // alone past the limit: shed, and then within
  assert.ok(big.shedded);
  assert.equal(budget.used, 63);
  assert.equal(budget.shedCount, 2);
});

Deno.test("ReceiveBudget stops counting a holder whose shed neither reports 0 nor returns", () => {
  const budget = new ReceiveBudget(10);
  const stubborn: BudgetHolder = {
    shed() {
      throw new Error("stubborn holder");
    },
  };
  const quiet = holder(budget);
  budget.hold(quiet, 4);
  assert.throws(() => budget.hold(stubborn, 11), /stubborn holder/);
  assert.equal(budget.used, 4);
  assert.equal(quiet.shedded, false);
  // The budget still works afterwards.
  budget.hold(quiet, 11);
  assert.ok(quiet.shedded);
  assert.equal(budget.used, 0);
});

Deno.test("ReceiveBudget refuses a limit that is not a positive safe integer", () => {
  for (const limit of [0, -1, 1.5, Number.NaN, 2 ** 53]) {
    assert.throws(() => new ReceiveBudget(limit), RangeError, `limit ${limit}`);
  }
  assert.equal(new ReceiveBudget(1).limit, 1);
});

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
  assert.deepEqual(mux.receiveBudget, { used: 0, limit: 65_536, shedCount: 0 });
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
