/**
 * `abortable`: wait for a promise, but stop waiting when a signal aborts (the
 * promise itself runs on). Shared by the layers that wait on work they do not
 * own.
 *
 * @module
 */

/** The waits on each signal, and the one listener that ends them all. */
const waits = new WeakMap<AbortSignal, { ends: Set<() => void>; onAbort: () => void }>();

/**
 * Settles like `promise`, or rejects with the signal's reason once it aborts.
 * However many waits share a signal (every stdin write of a connection), it
 * carries one listener: adding one costs time in the number it already has.
 * The listener goes with the last wait.
 *
 * @param promise What to wait for; it is not cancelled.
 * @param signal Ends the wait.
 * @returns The promise's value.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  let entry = waits.get(signal);
  if (entry === undefined) {
    const ends = new Set<() => void>();
    const onAbort = (): void => {
      waits.delete(signal);
      for (const end of ends) end();
    };
    entry = { ends, onAbort };
    waits.set(signal, entry);
    signal.addEventListener("abort", onAbort, { once: true });
  }
  const { ends, onAbort } = entry;
  return new Promise<T>((resolve, reject) => {
    const end = (): void => reject(signal.reason);
    ends.add(end);
    promise.then(resolve, reject).finally(() => {
      ends.delete(end);
      if (ends.size === 0 && waits.get(signal)?.ends === ends) {
        waits.delete(signal);
        signal.removeEventListener("abort", onAbort);
      }
    });
  });
}
