/**
 * A small seeded pseudo-random generator (mulberry32) for reproducible tests:
 * the same seed always yields the same sequence, so a failing fuzz case or
 * fault schedule can be replayed from its seed alone.
 *
 * @module
 */

/** A seeded random source with the helpers the adversarial tests need. */
export class Prng {
  #state: number;
  /** The seed this generator started from. */
  readonly seed: number;

  /**
   * Creates a generator.
   *
   * @param seed Any 32-bit integer; the same seed gives the same sequence.
   */
  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.#state = this.seed;
  }

  /**
   * Returns the next unsigned 32-bit value (mulberry32).
   *
   * @returns An integer in [0, 2^32).
   */
  nextUint32(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /**
   * Returns a float in [0, 1).
   *
   * @returns The next value.
   */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /**
   * Returns an integer in [min, max] (both inclusive).
   *
   * @param min Lower bound.
   * @param max Upper bound.
   * @returns The value.
   */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /**
   * Returns true with the given probability.
   *
   * @param probability In [0, 1].
   * @returns The outcome.
   */
  chance(probability: number): boolean {
    return probability > 0 && this.next() < probability;
  }

  /**
   * Picks one element of a non-empty array.
   *
   * @param items The candidates.
   * @returns One of them.
   */
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }

  /**
   * Returns `length` random bytes.
   *
   * @param length How many.
   * @returns The bytes.
   */
  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.nextUint32() & 0xff;
    return out;
  }

  /**
   * Returns a "interesting" uint32: boundaries, small values or random ones.
   *
   * @returns The value.
   */
  edgeUint32(): number {
    switch (this.int(0, 7)) {
      case 0:
        return 0;
      case 1:
        return 1;
      case 2:
        return 0xffff_ffff;
      case 3:
        return 0x7fff_ffff + this.int(0, 2);
      case 4:
        return this.int(2, 64);
      case 5:
        return 0xffff_ffff - this.int(0, 64);
      default:
        return this.nextUint32();
    }
  }
}

/**
 * Reads a seed from an environment variable, or returns the fallback. Lets a
 * failing case be replayed with `OUTPOST_SEED=123 deno test ...`.
 *
 * @param fallback The seed to use when the variable is not set.
 * @param name The variable name.
 * @returns The seed.
 */
export function seedFromEnv(fallback: number, name = "OUTPOST_SEED"): number {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value)) {
    throw new TypeError(`Cannot read ${name}: "${raw}" is not an integer`);
  }
  return value >>> 0;
}

/**
 * Whether the long soak run was requested (`OUTPOST_SOAK=1`).
 *
 * @returns True in soak mode.
 */
export function soakMode(): boolean {
  return Deno.env.get("OUTPOST_SOAK") === "1";
}
