/**
 * One bound on the bytes many holders hold together, where each holder also
 * bounds its own: the streams of a mux (what each holds for its consumer),
 * the sockets of a rendezvous (what each queues, in and out), the
 * connections of `serve` (what each has received and not yet read).
 *
 * Per-holder bounds alone add up: a peer that keeps many consumers from
 * reading could make every holder reach its bound at once. The holders
 * therefore report what they hold to a shared budget; once the sum passes
 * the limit, a holder is shed (it drops what it holds and ends: a stream is
 * reset, a socket dropped) until the sum is back within it. Which goes first
 * is the holders' to say when asked ({@linkcode BudgetHolder.shedOrder}: a
 * stream whose reader stopped goes before one that keeps up); among equals,
 * and for holders that say nothing, the one holding the most. The sum stays
 * bounded whatever the order.
 *
 * A holder that knows ahead how much it is about to take (a stream whose
 * first segment announces a large message) asks first with
 * {@linkcode ByteBudget.admit}, and waits its turn while others that expect
 * more would not leave room: so many honest large messages at once are
 * taken in turn, not all at once and then shed.
 * @module
 */

/** What a {@linkcode ByteBudget} sheds: a stream or socket holding bytes. */
export interface BudgetHolder {
  /**
   * Where it stands in the order of shedding, asked only when the budget
   * must shed: holders in a higher tier go first, and within a tier the one
   * with the higher key. Absent: tier 0, keyed by the bytes it holds.
   *
   * @param bytes What it holds, as the budget counts it.
   * @returns Its tier and its key within the tier.
   */
  shedOrder?(bytes: number): readonly [tier: number, key: number];
  /**
   * Drops everything held and ends the holder; it must report 0 held bytes
   * before returning (the budget stops counting it either way).
   */
  shed(): void;
  /**
   * What it still expects to take of what it was admitted for, now: asked
   * when an admission is decided, so a holder whose bytes stopped coming can
   * say 0 (its room goes to others). Absent: what it last reported.
   */
  expecting?(): number;
  /**
   * Called, in a microtask, when this holder is first in line for
   * {@linkcode ByteBudget.admit} and its request now fits: it should ask
   * again at once (else it loses its turn).
   */
  retryAdmission?(): void;
}

/**
 * Counts the bytes a set of holders hold and sheds holders, first in their
 * own order and else the largest, while the sum is past the limit; admits
 * announced bytes first come, first served.
 *
 * @example Two holders sharing 100 bytes
 * ```ts
 * import { ByteBudget } from "@outpost/exec";
 * const budget = new ByteBudget(100);
 * const small = { shed: () => budget.hold(small, 0) };
 * const large = { shed: () => budget.hold(large, 0) };
 * budget.hold(small, 30);
 * budget.hold(large, 80); // 110 > 100: `large` holds the most and is shed
 * console.log(budget.used, budget.shedCount); // 30 1
 * ```
 */
export class ByteBudget {
  /** The most bytes all holders may hold together. */
  readonly limit: number;
  #used = 0;
  #held = new Map<BudgetHolder, number>();
  #shedding = false;
  #shedCount = 0;
  /**
   * Admitted holders whose announced bytes have not all arrived, with what
   * they still expect (at least 1 while they do).
   */
  #expected = new Map<BudgetHolder, number>();
  /** Holders waiting for admission with what each asked, first come first (in insertion order). */
  #waiting = new Map<BudgetHolder, number>();
  /** The first waiter, called back because its request fitted, until it asks again. */
  #granted: BudgetHolder | undefined;
  #wakeQueued = false;

  /**
   * Creates an empty budget.
   *
   * @param limit Bytes all holders may hold together: a positive safe integer.
   * @throws {RangeError} If the limit is not a positive safe integer.
   */
  constructor(limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new RangeError(
        `Cannot create byte budget: limit ${limit} is not a positive safe integer`,
      );
    }
    this.limit = limit;
  }

  /** Bytes held now, all holders together. */
  get used(): number {
    return this.#used;
  }

  /** How many holders were shed so far. */
  get shedCount(): number {
    return this.#shedCount;
  }

  /** Bytes admitted holders still expect to take now (see {@linkcode ByteBudget.admit}). */
  get expected(): number {
    return this.#expectedBy(undefined);
  }

  /** What admitted holders other than `except` expect now (as their `expecting` says). */
  #expectedBy(except: BudgetHolder | undefined): number {
    let sum = 0;
    for (const [holder, bytes] of this.#expected) {
      if (holder !== except) sum += holder.expecting?.() ?? bytes;
    }
    return sum;
  }

  /** How many holders wait for admission. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /**
   * Records that `holder` now holds `bytes`. Past the limit, sheds holders
   * (possibly `holder` itself) before returning.
   *
   * @param holder Who holds the bytes.
   * @param bytes What it holds now (not a change).
   * @param expected What it still expects of what it was admitted for (see
   *   {@linkcode ByteBudget.admit}), when it says: 0 once all has arrived.
   */
  hold(holder: BudgetHolder, bytes: number, expected?: number): void {
    if (expected !== undefined) this.#setExpected(holder, expected);
    const before = this.#held.get(holder) ?? 0;
    if (bytes === before) return;
    this.#used += bytes - before;
    if (bytes === 0) this.#held.delete(holder);
    else this.#held.set(holder, bytes);
    if (bytes > before && this.#used > this.limit && !this.#shedding) this.#shed();
    if (bytes < before) this.#queueWake();
  }

  /**
   * Asks room for `bytes` that `holder` is about to take (it then reports
   * what it still expects with each {@linkcode ByteBudget.hold}). It is
   * admitted when what all holders hold, plus what the other admitted
   * holders expect now (as their `expecting` says: one whose bytes stopped
   * coming says 0), plus `bytes`, stays within three quarters of the limit
   * (the rest is for bytes nobody announces); or, while no other admitted
   * holder expects more, within the whole limit, counting as free what
   * holders that have stopped (tier 1 or more in their `shedOrder`) hold:
   * the limit sheds those first once its bytes come. Admission itself sheds
   * nothing: it only decides who goes on, so holders that keep sending,
   * however slowly, are not cut short for newcomers.
   *
   * Refused, the holder joins the line (once) and its `retryAdmission` is
   * called when it is first and its request fits; a holder behind others
   * waits even if it would fit now (its asking again makes the first look
   * again).
   *
   * @param holder Who asks.
   * @param bytes How many bytes it is about to take (its earlier request,
   *   if any, is replaced).
   * @returns Whether it may take them now.
   */
  admit(holder: BudgetHolder, bytes: number): boolean {
    if (this.#granted === holder) {
      this.#granted = undefined;
    } else {
      const first = this.#waiting.keys().next().value;
      if (first !== undefined && first !== holder) {
        this.#waiting.set(holder, bytes);
        // Time may have made room (a holder counts as stopped after a
        // while, with no event to say so): the first in line looks again.
        this.#queueWake();
        return false;
      }
      if (!this.#fits(holder, bytes)) {
        this.#waiting.set(holder, bytes);
        return false;
      }
    }
    this.#waiting.delete(holder);
    this.#setExpected(holder, bytes);
    // The next in line may fit too.
    this.#queueWake();
    return true;
  }

  /**
   * Has the first in line look again: time alone can make room (a holder
   * counts as stopped after a while, with no event to say so), so an owner
   * calls this now and then while {@linkcode ByteBudget.waiting} is not 0.
   */
  recheck(): void {
    this.#queueWake();
  }

  /**
   * Takes `holder` out of the line and stops counting what it expected: for
   * a holder that will take no more. What it holds stays counted until it
   * reports otherwise.
   *
   * @param holder The holder.
   */
  leave(holder: BudgetHolder): void {
    this.#waiting.delete(holder);
    if (this.#granted === holder) this.#granted = undefined;
    this.#setExpected(holder, 0);
    this.#queueWake();
  }

  #setExpected(holder: BudgetHolder, bytes: number): void {
    const before = this.#expected.get(holder) ?? 0;
    if (bytes === before) return;
    if (bytes === 0) this.#expected.delete(holder);
    else this.#expected.set(holder, bytes);
    if (bytes < before) this.#queueWake();
  }

  /** Whether `bytes` for `holder` fit now (see {@linkcode ByteBudget.admit}). */
  #fits(holder: BudgetHolder, bytes: number): boolean {
    const others = this.#expectedBy(holder);
    if (this.#used + others + bytes <= this.limit - Math.floor(this.limit / 4)) return true;
    if (others > 0) return false;
    // Alone, it may take up to the limit, counting as free what holders that
    // have stopped hold: the limit sheds those first once its bytes come.
    if (this.#used + bytes <= this.limit) return true;
    let stopped = 0;
    for (const [other, held] of this.#held) {
      if (other !== holder && (other.shedOrder?.(held)[0] ?? 0) >= 1) stopped += held;
    }
    return this.#used - stopped + bytes <= this.limit;
  }

  #queueWake(): void {
    if (this.#wakeQueued || this.#waiting.size === 0) return;
    this.#wakeQueued = true;
    queueMicrotask(() => {
      this.#wakeQueued = false;
      this.#wake();
    });
  }

  /** Calls the first in line back if its request fits now (it asks again from there). */
  #wake(): void {
    if (this.#granted !== undefined) return;
    const next = this.#waiting.entries().next().value;
    if (next === undefined) return;
    const [first, bytes] = next;
    if (!this.#fits(first, bytes)) return;
    this.#waiting.delete(first);
    this.#granted = first;
    try {
      first.retryAdmission?.();
    } finally {
      // One that did not ask again (it ended) gives up its turn.
      if (this.#granted === first) {
        this.#granted = undefined;
        this.#queueWake();
      }
    }
  }

  #shed(): void {
    this.#shedding = true;
    try {
      while (this.#used > this.limit) {
        // Each holder is asked once per round; among equals the largest goes first.
        const ranked: { holder: BudgetHolder; bytes: number; tier: number; key: number }[] = [];
        for (const [holder, bytes] of this.#held) {
          const [tier, key] = holder.shedOrder?.(bytes) ?? [0, bytes];
          ranked.push({ holder, bytes, tier, key });
        }
        ranked.sort((a, b) => b.tier - a.tier || b.key - a.key || b.bytes - a.bytes);
        let shed = false;
        for (const { holder } of ranked) {
          if (this.#used <= this.limit) break;
          if (!this.#held.has(holder)) continue;
          shed = true;
          this.#shedCount++;
          try {
            holder.shed();
          } finally {
            // However the holder behaved, it is no longer counted: the loop ends.
            const left = this.#held.get(holder);
            if (left !== undefined) {
              this.#used -= left;
              this.#held.delete(holder);
            }
            this.leave(holder);
          }
        }
        if (!shed) break;
      }
    } finally {
      this.#shedding = false;
    }
  }
}
