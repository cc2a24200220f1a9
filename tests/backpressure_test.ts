import assert from "node:assert/strict";
import { DrainPoller } from "../lib/relay/_backpressure.ts";
import { withDeadline } from "./_support/deadline.ts";

/** A buffered count that plays back `values` (the last one repeats). */
function counter(values: number[]): { read: () => number; reads: () => number } {
  let i = 0;
  return {
    read: () => values[Math.min(i++, values.length - 1)],
    reads: () => i,
  };
}

Deno.test("DrainPoller calls back once the count is at the low watermark, and not while one above", async () => {
  const low = 1024;
  // start() reads once; then polls see low + 1 twice (falling stops), then exactly low.
  const count = counter([4096, low + 1, low + 1, low]);
  const drained = Promise.withResolvers<void>();
  let calls = 0;
  const poller = new DrainPoller(count.read, low, () => {
    calls++;
    drained.resolve();
  });
  poller.start();
  assert.equal(poller.polling, true);
  await withDeadline(drained.promise, 2_000, "drain");
  assert.equal(calls, 1);
  assert.equal(count.reads(), 4);
  assert.equal(poller.polling, false, "no timer runs once drained");
});

Deno.test("DrainPoller start while polling keeps one timer, and stop cancels without a callback", async () => {
  const poller = new DrainPoller(
    () => 10,
    0,
    () => assert.fail("stopped pollers do not call back"),
  );
  poller.start();
  poller.start();
  assert.equal(poller.polling, true);
  poller.stop();
  assert.equal(poller.polling, false);
  // A second start/stop round works the same (the op sanitizer checks no timer leaks).
  poller.start();
  poller.stop();
  await Promise.resolve();
});

Deno.test("DrainPoller can be started again for the next wait", async () => {
  let buffered = 0;
  let calls = 0;
  let next = Promise.withResolvers<void>();
  const poller = new DrainPoller(() => buffered, 0, () => {
    calls++;
    next.resolve();
  });
  for (let round = 1; round <= 2; round++) {
    next = Promise.withResolvers<void>();
    buffered = 1;
    poller.start();
    buffered = 0;
    await withDeadline(next.promise, 2_000, `drain ${round}`);
    assert.equal(calls, round);
  }
});
