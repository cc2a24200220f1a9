/**
 * Signed executor URLs already used, so each opens one socket. A signed URL
 * travels in a request line that proxies and access logs keep, and its
 * signature stays good until its `exp`; replayed, it would replace the
 * executor's socket and take its streams (and a second replacement within a
 * minute stops the real executor for good). An executor registers afresh for
 * every connect, and the rendezvous gives each URL it issues a later expiry
 * than the one before (even after its clock steps back), so for each
 * executor id only a URL issued after the last one used is taken: one
 * number per id, whatever the URLs' lifetime.
 *
 * @module
 */

/** The most executor ids remembered; past it the one used longest ago is forgotten. */
export const MAX_USED_URLS = 65_536;

/** Remembers, per executor id, the expiry of the last signed URL used, until it passes. */
export class UsedUrls {
  /** Executor id -> the last used URL's `exp` (ms since the epoch), least recently used first. */
  readonly #lastExp = new Map<string, number>();
  readonly #max: number;

  /** @param max The most ids kept (tests use a small one). */
  constructor(max = MAX_USED_URLS) {
    this.#max = max;
  }

  /** How many ids are remembered now. */
  get size(): number {
    return this.#lastExp.size;
  }

  /**
   * Takes a verified URL for an executor id, unless a URL issued no earlier
   * (expiring no earlier) was used for that id.
   *
   * @param id The executor id the URL is signed for.
   * @param exp The URL's expiry, ms since the epoch (verified: it is signed).
   * @param now The time now, ms since the epoch.
   * @returns False when this URL, or a later one, was used before.
   */
  claim(id: string, exp: number, now: number): boolean {
    // Least recently used first; those whose last URL has expired lead.
    for (const [each, expires] of this.#lastExp) {
      if (expires > now) break;
      this.#lastExp.delete(each);
    }
    const last = this.#lastExp.get(id);
    if (last !== undefined && exp <= last) return false;
    this.#lastExp.delete(id);
    if (this.#lastExp.size >= this.#max) {
      this.#lastExp.delete(this.#lastExp.keys().next().value!);
    }
    this.#lastExp.set(id, exp);
    return true;
  }
}
