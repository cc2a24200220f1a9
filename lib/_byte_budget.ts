/**
 * One bound on the bytes many holders hold together, where each holder also
 * bounds its own: the streams of a mux (what each holds for its consumer),
 * the sockets of a rendezvous (what each queues, in and out).
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
}

/**
 * Counts the bytes a set of holders hold and sheds holders, first in their
 * own order and else the largest, while the sum is past the limit.
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

  /**
   * Records that `holder` now holds `bytes`. Past the limit, sheds holders
   * (possibly `holder` itself) before returning.
   *
   * @param holder Who holds the bytes.
   * @param bytes What it holds now (not a change).
   */
  hold(holder: BudgetHolder, bytes: number): void {
    const before = this.#held.get(holder) ?? 0;
    if (bytes === before) return;
    this.#used += bytes - before;
    if (bytes === 0) this.#held.delete(holder);
    else this.#held.set(holder, bytes);
    if (bytes > before && this.#used > this.limit && !this.#shedding) this.#shed();
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
          }
        }
        if (!shed) break;
      }
    } finally {
      this.#shedding = false;
    }
  }
}
