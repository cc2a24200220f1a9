/**
 * Turns a socket's stream of bad frames (`RelaySocket`'s `onProtocolError`)
 * into at most one report per interval, with how many were dropped since the
 * last one: an operator learns a peer sends garbage, and a peer sending a
 * flood of it cannot flood the log.
 *
 * @module
 */

import type { ProtocolError } from "../errors.ts";

/** At most one report per socket this often. */
export const BAD_FRAME_REPORT_INTERVAL_MS = 10_000;

/**
 * Makes an `onProtocolError` callback for one socket.
 *
 * @param report Called with the latest error and the frames dropped since the
 *   previous report (this one included).
 * @param now The clock.
 * @returns The callback.
 */
export function badFrameReporter(
  report: (error: ProtocolError, dropped: number) => void,
  now: () => number = () => performance.now(),
): (error: ProtocolError) => void {
  let reportedAt = -Infinity;
  let dropped = 0;
  return (error) => {
    dropped++;
    const at = now();
    if (at - reportedAt < BAD_FRAME_REPORT_INTERVAL_MS) return;
    reportedAt = at;
    const count = dropped;
    dropped = 0;
    report(error, count);
  };
}
