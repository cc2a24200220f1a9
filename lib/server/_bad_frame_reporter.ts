/**
 * Turns a socket's stream of bad frames (`RelaySocket`'s `onProtocolError`)
 * into at most one report per interval, with how many were dropped since the
 * last one: an operator learns a peer sends garbage, and a peer sending a
 * flood of it cannot flood the log. What a burst leaves unreported is
 * reported when its interval ends, or when the socket closes.
 *
 * @module
 */

import type { ProtocolError } from "../errors.ts";

/** At most one report per socket this often. */
export const BAD_FRAME_REPORT_INTERVAL_MS = 10_000;

/** Rate-limited reports of one socket's bad frames. */
export class BadFrameReporter {
  readonly #report: (error: ProtocolError, dropped: number) => void;
  readonly #intervalMs: number;
  #reportedAt = -Infinity;
  #dropped = 0;
  #latest: ProtocolError | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  /**
   * Creates a reporter for one socket.
   *
   * @param report Called with the latest error and the frames dropped since
   *   the previous report (this one included).
   * @param intervalMs The least time between two reports.
   */
  constructor(
    report: (error: ProtocolError, dropped: number) => void,
    intervalMs: number = BAD_FRAME_REPORT_INTERVAL_MS,
  ) {
    this.#report = report;
    this.#intervalMs = intervalMs;
  }

  /** The socket's `onProtocolError`: reports now, or once the interval ends. */
  readonly onProtocolError = (error: ProtocolError): void => {
    if (this.#closed) return;
    this.#dropped++;
    this.#latest = error;
    const sinceReport = performance.now() - this.#reportedAt;
    if (sinceReport >= this.#intervalMs) {
      this.#flush();
    } else {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        this.#flush();
      }, this.#intervalMs - sinceReport);
    }
  };

  /** The socket closed: reports what is left unreported, and stops. Idempotent. */
  close(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#flush();
    this.#closed = true;
  }

  #flush(): void {
    if (this.#dropped === 0 || this.#latest === undefined) return;
    const dropped = this.#dropped;
    this.#dropped = 0;
    this.#reportedAt = performance.now();
    this.#report(this.#latest, dropped);
  }
}
