import assert from "node:assert/strict";
import {
  BAD_FRAME_REPORT_INTERVAL_MS,
  BadFrameReporter,
} from "../lib/server/_bad_frame_reporter.ts";
import { ProtocolError } from "../lib/errors.ts";
import { withDeadline } from "./_support/deadline.ts";

/** A reporter whose reports the test can await, one by one. */
function recording(intervalMs: number) {
  const reports: [string, number][] = [];
  let next = Promise.withResolvers<void>();
  const reporter = new BadFrameReporter((error, dropped) => {
    reports.push([error.message, dropped]);
    next.resolve();
    next = Promise.withResolvers<void>();
  }, intervalMs);
  return { reporter, reports, nextReport: () => withDeadline(next.promise, 5_000, "a report") };
}

Deno.test("BadFrameReporter reports the first bad frame at once and the rest of a burst once its interval ends, with the count", async () => {
  assert.equal(BAD_FRAME_REPORT_INTERVAL_MS, 10_000);
  const { reporter, reports, nextReport } = recording(200);
  reporter.onProtocolError(new ProtocolError("a"));
  assert.deepEqual(reports, [["a", 1]]);
  const started = performance.now();
  const trailing = nextReport();
  for (const name of ["b", "c", "d"]) reporter.onProtocolError(new ProtocolError(name));
  assert.deepEqual(reports, [["a", 1]], "held within the interval");
  await trailing;
  assert.deepEqual(reports, [["a", 1], ["d", 3]], "the latest, with b, c and d");
  assert.ok(performance.now() - started >= 150, "not before the interval ends");
  reporter.close();
  assert.equal(reports.length, 2, "nothing left to report at close");
});

Deno.test("BadFrameReporter reports what is held when its socket closes, and nothing after", () => {
  const { reporter, reports } = recording(60_000);
  reporter.onProtocolError(new ProtocolError("a"));
  reporter.onProtocolError(new ProtocolError("b"));
  reporter.onProtocolError(new ProtocolError("c"));
  assert.deepEqual(reports, [["a", 1]]);
  reporter.close(); // the sanitizer checks its timer is gone too
  assert.deepEqual(reports, [["a", 1], ["c", 2]]);
  reporter.onProtocolError(new ProtocolError("late"));
  reporter.close();
  assert.deepEqual(reports, [["a", 1], ["c", 2]]);
});
