/**
 * The order of signed executor URLs, so each opens one socket. A signed URL
 * travels in a request line that proxies and access logs keep, and its
 * signature stays good until its `exp`; replayed, it would replace the
 * executor's socket and take its streams (and a second replacement within a
 * minute stops the real executor for good). An executor registers afresh for
 * every connect, so for each executor id the rendezvous issues URLs that
 * expire strictly later one after another, later too than any URL used for
 * the id, and takes only a URL that expires later than the last one used:
 * two numbers per id, whatever the URLs' lifetime. A URL that expires later
 * than this run could have issued one (a previous run's with a longer
 * lifetime, or another clock) is refused; after a restart (with the signing
 * key kept) a previous run's URL within this run's lifetime may be taken
 * once more, until the executor's next registration outranks it.
 *
 * @module
 */

/** The most executor ids remembered; past it the one used longest ago is forgotten. */
export const MAX_USED_URLS = 65_536;

/** What is remembered of an executor id's URLs (ms since the epoch). */
interface UrlOrder {
  /** The expiry of the last URL issued. */
  issued: number;
  /** The expiry of the last URL used, or 0. */
  used: number;
}

/** Issues and takes signed executor URLs in order, per executor id, until they expire. */
export class UsedUrls {
  /** Executor id -> its URLs' order, least recently touched first. */
  readonly #ids = new Map<string, UrlOrder>();
  readonly #max: number;

  /** @param max The most ids kept (tests use a small one). */
  constructor(max = MAX_USED_URLS) {
    this.#max = max;
  }

  /** How many ids are remembered now. */
  get size(): number {
    return this.#ids.size;
  }

  /**
   * The expiry of a new URL for `id`: `now + ttlMs`, or just after the last
   * URL issued or used for it when that expires later (registrations within
   * one millisecond, a clock that stepped back, a URL from before a restart
   * used since).
   *
   * @param id The executor id.
   * @param now The time now, ms since the epoch.
   * @param ttlMs The URL lifetime.
   * @returns The expiry, ms since the epoch.
   */
  issue(id: string, now: number, ttlMs: number): number {
    const order = this.#take(id, now);
    const exp = Math.max(now + ttlMs, order.issued + 1, order.used + 1);
    order.issued = exp;
    return exp;
  }

  /**
   * Takes a verified URL for an executor id, unless a URL expiring no
   * earlier was used for it.
   *
   * @param id The executor id the URL is signed for.
   * @param exp The URL's expiry, ms since the epoch (verified: it is signed).
   * @param now The time now, ms since the epoch.
   * @param ttlMs The URL lifetime this run issues.
   * @returns False when this URL, or a later one, was used before, or it
   *   expires later than this run could have issued it.
   */
  claim(id: string, exp: number, now: number, ttlMs: number): boolean {
    const order = this.#take(id, now);
    if (exp <= order.used) return false;
    // Expiring later than this run could have issued: an older run's URL
    // (a longer lifetime, another clock), which could outrank the executor's.
    if (exp > Math.max(now + ttlMs, order.issued)) return false;
    order.used = exp;
    order.issued = Math.max(order.issued, exp);
    return true;
  }

  /** The id's record, now the most recently touched; expired ones go first. */
  #take(id: string, now: number): UrlOrder {
    for (const [each, order] of this.#ids) {
      if (Math.max(order.issued, order.used) > now) break;
      this.#ids.delete(each);
    }
    const order = this.#ids.get(id) ?? { issued: 0, used: 0 };
    this.#ids.delete(id);
    if (this.#ids.size >= this.#max) this.#ids.delete(this.#ids.keys().next().value!);
    this.#ids.set(id, order);
    return order;
  }
}
