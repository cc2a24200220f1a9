/**
 * A map with a size bound that forgets its least recently used entry when a
 * new one would cross the bound.
 *
 * @module
 */

/**
 * A least-recently-used cache holding at most `max` entries.
 *
 * @example
 * ```ts
 * import { BoundedCache } from "./_bounded_cache.ts";
 * const cache = new BoundedCache<string, number>(2);
 * cache.set("a", 1);
 * cache.set("b", 2);
 * cache.get("a");
 * cache.set("c", 3); // forgets "b", the least recently used
 * console.log(cache.get("b"), cache.size); // undefined 2
 * ```
 */
export class BoundedCache<K, V> {
  readonly #max: number;
  readonly #map = new Map<K, V>();

  /**
   * Creates an empty cache.
   *
   * @param max The most entries held.
   * @throws {RangeError} When `max` is not a positive integer.
   */
  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`Cannot create cache: ${max} is not a positive integer`);
    }
    this.#max = max;
  }

  /** The number of entries held. */
  get size(): number {
    return this.#map.size;
  }

  /**
   * Looks an entry up and marks it as the most recently used.
   *
   * @param key The key.
   * @returns The value, or undefined when absent.
   */
  get(key: K): V | undefined {
    const value = this.#map.get(key);
    if (value === undefined) return undefined;
    // Map keeps insertion order: move the entry to the end.
    this.#map.delete(key);
    this.#map.set(key, value);
    return value;
  }

  /**
   * Stores an entry, forgetting the least recently used one when full.
   *
   * @param key The key.
   * @param value The value.
   */
  set(key: K, value: V): void {
    this.#map.delete(key);
    if (this.#map.size >= this.#max) {
      this.#map.delete(this.#map.keys().next().value as K);
    }
    this.#map.set(key, value);
  }

  /** Forgets every entry. */
  clear(): void {
    this.#map.clear();
  }
}
