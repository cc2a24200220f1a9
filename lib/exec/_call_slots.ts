/**
 * A bound on calls in flight, with a first-come queue for the rest. The fs
 * methods run on Deno's blocking file operations (at most 32 at once in Deno
 * 2.9): a call that does not return holds one as long as it waits (a file on
 * a mount that stopped answering; before opens were made non-blocking, an
 * open waiting out a file lease, 45 s at a time), and 32 of them froze every
 * file operation of the executor. Bounded, such calls only make later fs
 * calls wait.
 *
 * @module
 */

/**
 * Runs at most `max` calls at once; the others wait their turn.
 *
 * @example
 * ```ts
 * import { CallSlots } from "./_call_slots.ts";
 * const slots = new CallSlots(1);
 * const first = slots.run(() => new Promise((r) => setTimeout(() => r("first"), 10)));
 * const second = slots.run(() => Promise.resolve("second")); // starts once the first is done
 * console.log(await first, await second, slots.running); // "first" "second" 0
 * ```
 */
export class CallSlots {
  readonly #max: number;
  #running = 0;
  #waiting: (() => void)[] = [];

  /**
   * @param max The most calls running at once.
   * @throws {RangeError} When `max` is not a positive integer.
   */
  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`Cannot bound calls: ${max} is not a positive integer`);
    }
    this.#max = max;
  }

  /** Calls running now. */
  get running(): number {
    return this.#running;
  }

  /** Calls waiting for a slot now. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Runs `call` once a slot is free, and frees the slot when it settles.
   *
   * @param call The call.
   * @param signal Gives up waiting (rejecting with its reason) when it aborts
   *   first; a call already running is the call's own to stop.
   * @returns What the call returns.
   */
  async run<T>(call: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    if (this.#running < this.#max) this.#running++;
    else await this.#turn(signal);
    try {
      return await call();
    } finally {
      // The slot goes to the first waiter as it is, so no newcomer can take it in between.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#running--;
    }
  }

  /** Waits until a finished call hands its slot on (still counted), or the signal aborts. */
  #turn(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const wake = (): void => {
        signal?.removeEventListener("abort", leave);
        resolve();
      };
      const leave = (): void => {
        const at = this.#waiting.indexOf(wake);
        if (at >= 0) this.#waiting.splice(at, 1);
        reject(signal!.reason);
      };
      this.#waiting.push(wake);
      signal?.addEventListener("abort", leave, { once: true });
    });
  }
}
