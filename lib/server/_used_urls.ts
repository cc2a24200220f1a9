/**
 * Signed executor URLs already used, so each opens one socket. A signed URL
 * travels in a request line that proxies and access logs keep, and its
 * signature stays good until its `exp`; replayed, it would replace the
 * executor's socket and take its streams (and a second replacement within a
 * minute stops the real executor for good). An executor registers afresh for
 * every connect, so it never needs a URL twice.
 *
 * @module
 */

/** The most used URLs remembered; past it the oldest is forgotten (its replay needs a flood of registrations, each with the token). */
export const MAX_USED_URLS = 65_536;

/** Remembers used signatures until their URLs expire, at most {@linkcode MAX_USED_URLS}. */
export class UsedUrls {
  /** Signature -> its URL's `exp` (ms since the epoch), in the order they were used. */
  readonly #used = new Map<string, number>();
  readonly #max: number;

  /** @param max The most signatures kept (tests use a small one). */
  constructor(max = MAX_USED_URLS) {
    this.#max = max;
  }

  /** How many signatures are remembered now. */
  get size(): number {
    return this.#used.size;
  }

  /**
   * Marks a verified URL's signature used.
   *
   * @param sig The URL's signature (verified: one spelling per URL).
   * @param exp The URL's expiry, ms since the epoch.
   * @param now The time now, ms since the epoch.
   * @returns False when it was used before (and has not expired since).
   */
  claim(sig: string, exp: number, now: number): boolean {
    // Used in about the order they were issued, so the expired ones lead.
    for (const [each, expires] of this.#used) {
      if (expires > now) break;
      this.#used.delete(each);
    }
    if (this.#used.has(sig)) return false;
    if (this.#used.size >= this.#max) {
      this.#used.delete(this.#used.keys().next().value!);
    }
    this.#used.set(sig, exp);
    return true;
  }
}
