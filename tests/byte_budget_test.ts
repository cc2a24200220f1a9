/**
 * ByteBudget on its own: what it counts, whom it sheds and when.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type BudgetHolder, ByteBudget } from "../lib/_byte_budget.ts";

/** A holder that reports 0 to `budget` when shed, and remembers it was. */
function holder(budget: ByteBudget): BudgetHolder & { shedded: boolean } {
  const self = {
    shedded: false,
    shed() {
      self.shedded = true;
      budget.hold(self, 0);
    },
  };
  return self;
}

Deno.test("ByteBudget sheds nothing at its limit and the largest holder one byte past it", () => {
  const budget = new ByteBudget(100);
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

Deno.test("ByteBudget sheds as many holders as it takes, the one that grew too when it holds the most", () => {
  const budget = new ByteBudget(100);
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

Deno.test("ByteBudget stops counting a holder whose shed neither reports 0 nor returns", () => {
  const budget = new ByteBudget(10);
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

Deno.test("ByteBudget refuses a limit that is not a positive safe integer", () => {
  for (const limit of [0, -1, 1.5, Number.NaN, 2 ** 53]) {
    assert.throws(() => new ByteBudget(limit), RangeError, `limit ${limit}`);
  }
  assert.equal(new ByteBudget(1).limit, 1);
});

Deno.test("ByteBudget sheds in the holders' own order, tier first, then key, then size; the largest first among holders that give none", () => {
  const budget = new ByteBudget(100);
  const order = new Map<BudgetHolder, readonly [number, number]>();
  const ordered = () => {
    const self: BudgetHolder & { shedded: boolean } = {
      shedded: false,
      shedOrder: (bytes) => order.get(self) ?? [0, bytes],
      shed() {
        self.shedded = true;
        budget.hold(self, 0);
      },
    };
    return self;
  };
  const [stalled, waiting, large, plain] = [ordered(), ordered(), ordered(), holder(budget)];
  order.set(stalled, [2, 10]);
  order.set(waiting, [1, 500]);
  budget.hold(stalled, 10);
  budget.hold(waiting, 20);
  budget.hold(large, 50);
  budget.hold(plain, 20); // 100
  budget.hold(large, 51); // 101: the highest tier goes, though it holds the least
  assert.deepEqual([stalled.shedded, waiting.shedded, large.shedded, plain.shedded], [
    true,
    false,
    false,
    false,
  ]);
  budget.hold(large, 61); // 101 again: tier 1 next
  assert.equal(waiting.shedded, true);
  budget.hold(plain, 40); // 101: in tier 0 the largest key, here the bytes (61 against 40)
  assert.deepEqual([large.shedded, plain.shedded], [true, false]);
  assert.equal(budget.used, 40);
  assert.equal(budget.shedCount, 3);
});

Deno.test("ByteBudget asks each holder how far behind it is once per round, however many it sheds", () => {
  const count = 1_000;
  const budget = new ByteBudget(count);
  let asked = 0;
  const holders = Array.from({ length: count }, (_, i) => {
    const self: BudgetHolder = {
      shedOrder: (bytes) => {
        asked++;
        return i === 0 ? [0, bytes] : [2, bytes]; // the first keeps up; the others stopped
      },
      shed: () => budget.hold(self, 0),
    };
    budget.hold(self, 1);
    return self;
  });
  // 499 bytes more for the one keeping up: 499 of the others must go.
  budget.hold(holders[0], 500);
  assert.equal(budget.shedCount, 499);
  assert.equal(budget.used, count);
  assert.ok(asked <= 2 * count, `${asked} questions for ${budget.shedCount} sheds`);
});

/**
 * A holder that asks for admission as a stream does: called back, it asks
 * again at once for what it asked last (unless `gone`), and remembers the answer.
 */
function asker(budget: ByteBudget): BudgetHolder & {
  ask(bytes: number): boolean;
  retries: number;
  admitted: boolean;
  stopped: boolean;
  gone: boolean;
} {
  let asked = 0;
  const self = {
    retries: 0,
    admitted: false,
    stopped: false,
    gone: false,
    ask(bytes: number) {
      asked = bytes;
      self.admitted = budget.admit(self, bytes);
      return self.admitted;
    },
    shedOrder: (bytes: number) => [self.stopped ? 1 : 0, bytes] as const,
    shed() {
      budget.hold(self, 0);
    },
    retryAdmission() {
      self.retries++;
      if (!self.gone) self.ask(asked);
    },
  };
  return self;
}

/** Lets queued microtasks (the budget's call-backs) run. */
const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

Deno.test("ByteBudget admits announced bytes up to three quarters of its limit, and one byte past it waits", async () => {
  const budget = new ByteBudget(400);
  const [a, b, c] = [asker(budget), asker(budget), asker(budget)];
  budget.hold(a, 100);
  assert.equal(a.ask(100), true); // 100 held + 100 expected
  assert.equal(b.ask(100), true); // 300 of 300: at the bound
  assert.equal(budget.expected, 200);
  assert.equal(c.ask(1), false, "301 is past three quarters of 400");
  assert.equal(budget.waiting, 1);
  await settle();
  assert.equal(c.retries, 0, "no room came: no call-back");
  // a's bytes arrive (expected turns into held, the sum is unchanged): still no room.
  budget.hold(a, 200, 0);
  await settle();
  assert.equal(c.retries, 0);
  // b takes nothing after all: room for c, which is called back and gets in.
  budget.leave(b);
  await settle();
  assert.equal(c.retries, 1);
  assert.equal(c.admitted, true);
  assert.equal(budget.waiting, 0);
  assert.equal(budget.expected, 1);
  assert.equal(budget.shedCount, 0);
});

Deno.test("ByteBudget admits a request alone up to its whole limit, counting what stopped holders hold as free, and one byte past it waits", async () => {
  const budget = new ByteBudget(400);
  const [a, b] = [asker(budget), asker(budget)];
  budget.hold(a, 100);
  assert.equal(b.ask(300), true, "100 held + 300, nobody else expecting: at the limit");
  budget.leave(b);
  assert.equal(b.ask(301), false, "one byte past it waits");
  a.stopped = true; // a's 100 bytes will be shed once b's come
  budget.recheck();
  await settle();
  assert.equal(b.admitted, true);
  assert.equal(budget.shedCount, 0, "admission sheds nothing");
  budget.hold(b, 301, 0);
  assert.equal(budget.shedCount, 1, "the limit shed a");
  assert.equal(budget.used, 301);
});

Deno.test("ByteBudget admits first come first served: a small request waits behind a large one that does not fit yet", async () => {
  const budget = new ByteBudget(400);
  const [holding, large, small] = [asker(budget), asker(budget), asker(budget)];
  assert.equal(holding.ask(200), true);
  assert.equal(large.ask(200), false);
  assert.equal(small.ask(10), false, "10 would fit, but large came first");
  assert.equal(budget.waiting, 2);
  assert.equal(small.ask(10), false, "asking again keeps its place behind large");
  budget.leave(holding);
  await settle();
  assert.deepEqual([large.admitted, small.admitted], [true, true]);
  assert.deepEqual([large.retries, small.retries], [1, 1]);
  assert.equal(budget.expected, 210);
});

Deno.test("ByteBudget gives the turn of a waiter that does not ask again (it ended) to the next in line", async () => {
  const budget = new ByteBudget(400);
  const [holding, gone, next] = [asker(budget), asker(budget), asker(budget)];
  assert.equal(holding.ask(300), true);
  assert.equal(gone.ask(100), false);
  assert.equal(next.ask(100), false);
  gone.gone = true;
  budget.leave(holding);
  await settle();
  assert.equal(gone.retries, 1);
  assert.equal(next.admitted, true, "gone never asked again: next got its turn");
  assert.equal(budget.waiting, 0);
});

Deno.test("ByteBudget does not count what a holder no longer expects, and admission never sheds: the limit sheds a stopped holder once bytes pass it", () => {
  const budget = new ByteBudget(400);
  const [slow, idle, upload] = [asker(budget), asker(budget), asker(budget)];
  assert.equal(slow.ask(250), true);
  budget.hold(slow, 10, 240);
  // What it expects now, as a stream says: nothing once its bytes stopped coming.
  slow.expecting = () => slow.stopped ? 0 : 240;
  budget.hold(idle, 100);
  assert.equal(upload.ask(100), false, "110 held + 240 expected + 100 is past 300");
  slow.stopped = true;
  assert.equal(upload.ask(100), true, "slow expects nothing now: upload is let in");
  assert.equal(budget.shedCount, 0);
  budget.hold(upload, 291, 0); // 401: past the limit, and slow has stopped
  assert.equal(budget.shedCount, 1);
  assert.equal(budget.used, 391, "slow was shed first, though it held the least");
});
