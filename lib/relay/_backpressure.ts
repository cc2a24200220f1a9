/**
 * Waiting for a WebSocket's send buffer to drain. Deno's `WebSocket` has no
 * drain event, so the buffer is polled with a short timer: every millisecond
 * while `bufferedAmount` is falling, backing off (doubling up to 32 ms) while
 * it is stalled, so a dead peer costs little. No timer runs while nothing
 * waits.
 *
 * @module
 */

/** The poll interval while the buffer is falling, in milliseconds. */
export const MIN_DRAIN_POLL_MS = 1;
/** The longest poll interval while the buffer is stalled, in milliseconds. */
export const MAX_DRAIN_POLL_MS = 32;

/**
 * Polls a buffered byte count until it is at or below a low watermark, then
 * calls back once. Start it again for the next wait.
 *
 * @example
 * ```ts
 * import { DrainPoller } from "./_backpressure.ts";
 * let buffered = 2048;
 * const poller = new DrainPoller(() => (buffered -= 1024), 0, () => console.log("drained"));
 * poller.start(); // logs "drained" at the first poll
 * ```
 */
export class DrainPoller {
  readonly #read: () => number;
  readonly #low: number;
  readonly #onDrained: () => void;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #delay = MIN_DRAIN_POLL_MS;
  #last = 0;

  /**
   * Creates an idle poller.
   *
   * @param read Reads the buffered byte count (e.g. `() => ws.bufferedAmount`).
   * @param lowWaterMark The count at or below which the buffer counts as drained.
   * @param onDrained Called once per {@linkcode DrainPoller.start} when drained.
   */
  constructor(read: () => number, lowWaterMark: number, onDrained: () => void) {
    this.#read = read;
    this.#low = lowWaterMark;
    this.#onDrained = onDrained;
  }

  /** Whether a poll is scheduled. */
  get polling(): boolean {
    return this.#timer !== undefined;
  }

  /** Starts polling (no-op while already polling). */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#last = this.#read();
    this.#delay = MIN_DRAIN_POLL_MS;
    this.#timer = setTimeout(this.#poll, this.#delay);
  }

  /** Stops polling without calling back. */
  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #poll = (): void => {
    this.#timer = undefined;
    const buffered = this.#read();
    if (buffered <= this.#low) {
      this.#onDrained();
      return;
    }
    this.#delay = buffered < this.#last
      ? MIN_DRAIN_POLL_MS
      : Math.min(this.#delay * 2, MAX_DRAIN_POLL_MS);
    this.#last = buffered;
    this.#timer = setTimeout(this.#poll, this.#delay);
  };
}
