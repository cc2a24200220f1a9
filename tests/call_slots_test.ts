import assert from "node:assert/strict";
import { CallSlots } from "../lib/exec/_call_slots.ts";
import { withDeadline } from "./_support/deadline.ts";

/** A call that runs until `finish` is called. */
function held(): {
  call: () => Promise<string>;
  finish: (value: string) => void;
  started: boolean;
} {
  const done = Promise.withResolvers<string>();
  const handle = {
    started: false,
    call: () => {
      handle.started = true;
      return done.promise;
    },
    finish: (value: string) => done.resolve(value),
  };
  return handle;
}

Deno.test("CallSlots runs up to its bound at once, and the next in turn as each ends", async () => {
  const slots = new CallSlots(2);
  const [a, b, c, d] = [held(), held(), held(), held()];
  const runs = [a, b, c, d].map((h) => slots.run(h.call));
  await Promise.resolve();
  assert.deepEqual([a.started, b.started, c.started, d.started], [true, true, false, false]);
  assert.equal(slots.running, 2);
  assert.equal(slots.waiting, 2);
  // b's slot goes to c, the first waiting; a newcomer waits behind d.
  b.finish("b");
  await runs[1];
  const late = held();
  const lateRun = slots.run(late.call);
  for (let i = 0; i < 5; i++) await Promise.resolve();
  assert.deepEqual([c.started, d.started, late.started], [true, false, false]);
  assert.equal(slots.running, 2);
  for (const h of [a, c, d, late]) h.finish("x");
  await withDeadline(Promise.all([...runs, lateRun]), 5_000, "all runs");
  assert.ok(d.started && late.started);
  assert.equal(slots.running, 0);
  assert.equal(slots.waiting, 0);
});

Deno.test("CallSlots gives up a wait when its signal aborts, without taking or losing a slot", async () => {
  const slots = new CallSlots(1);
  const first = held();
  const running = slots.run(first.call);
  const stop = new AbortController();
  const waiting = held();
  const gaveUp = slots.run(waiting.call, stop.signal);
  stop.abort(new Error("the connection closed"));
  await assert.rejects(gaveUp, /the connection closed/);
  assert.equal(waiting.started, false);
  assert.equal(slots.waiting, 0);
  const next = held();
  const nextRun = slots.run(next.call);
  first.finish("first");
  assert.equal(await running, "first");
  next.finish("next");
  assert.equal(await withDeadline(nextRun, 5_000, "the next call"), "next");
  await assert.rejects(slots.run(() => Promise.resolve(1), AbortSignal.abort()), Error);
  assert.throws(() => new CallSlots(0), RangeError);
});
