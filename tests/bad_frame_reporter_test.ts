import assert from "node:assert/strict";
import {
  BAD_FRAME_REPORT_INTERVAL_MS,
  badFrameReporter,
} from "../lib/server/_bad_frame_reporter.ts";
import { ProtocolError } from "../lib/errors.ts";

Deno.test("badFrameReporter reports the first bad frame at once, then at most once per interval with the count since", () => {
  const clock = { t: 1_000 };
  const reports: [string, number][] = [];
  const onProtocolError = badFrameReporter(
    (error, dropped) => reports.push([error.message, dropped]),
    () => clock.t,
  );
  onProtocolError(new ProtocolError("a"));
  assert.deepEqual(reports, [["a", 1]]);
  onProtocolError(new ProtocolError("b"));
  clock.t += BAD_FRAME_REPORT_INTERVAL_MS - 1;
  onProtocolError(new ProtocolError("c"));
  assert.deepEqual(reports, [["a", 1]], "one millisecond short of the interval: held");
  clock.t += 1;
  onProtocolError(new ProtocolError("d"));
  assert.deepEqual(reports, [["a", 1], ["d", 3]], "at the interval: the latest, with b, c and d");
});
