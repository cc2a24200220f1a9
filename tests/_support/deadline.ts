/**
 * Await an event with a deadline instead of sleeping: tests never wait on a
 * fixed delay, and nothing waits forever.
 *
 * @module
 */

/** Thrown by {@linkcode withDeadline} when the deadline passes first. */
export class DeadlineError extends Error {
  /**
   * Creates the error.
   *
   * @param label What was awaited.
   * @param ms The deadline.
   */
  constructor(label: string, ms: number) {
    super(`Cannot finish ${label}: deadline of ${ms} ms passed`);
    this.name = "DeadlineError";
  }
}

/**
 * Resolves or rejects like `promise`, or rejects with a {@linkcode DeadlineError}
 * after `ms` milliseconds. The timer is always cleared, so the op sanitizer
 * stays quiet.
 *
 * @param promise What to await.
 * @param ms The deadline in milliseconds.
 * @param label Names the awaited thing in the error message.
 * @returns The value of `promise`.
 * @throws {DeadlineError} When the deadline passes first.
 */
export function withDeadline<T>(
  promise: Promise<T> | PromiseLike<T>,
  ms: number,
  label = "operation",
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError(label, ms)), ms);
  });
  return Promise.race([Promise.resolve(promise), timeout]).finally(() => clearTimeout(timer));
}

/**
 * Polls `condition` on each macrotask turn until it holds, with a deadline.
 * For conditions with no event to await (e.g. a counter in another object).
 *
 * @param condition Returns true once the awaited state is reached.
 * @param ms The deadline in milliseconds.
 * @param label Names the condition in the error message.
 * @returns When the condition holds.
 * @throws {DeadlineError} When the deadline passes first.
 */
export async function until(
  condition: () => boolean | Promise<boolean>,
  ms: number,
  label = "condition",
): Promise<void> {
  const end = performance.now() + ms;
  while (!(await condition())) {
    if (performance.now() > end) throw new DeadlineError(label, ms);
    await new Promise<void>((resolve) => setTimeout(resolve, 5));
  }
}
