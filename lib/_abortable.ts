/**
 * `abortable`: wait for a promise, but stop waiting when a signal aborts (the
 * promise itself runs on). Shared by the layers that wait on work they do not
 * own.
 *
 * @module
 */

/**
 * Settles like `promise`, or rejects with the signal's reason once it aborts.
 *
 * @param promise What to wait for; it is not cancelled.
 * @param signal Ends the wait.
 * @returns The promise's value.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
