import assert from "node:assert/strict";
import { BoundedCache } from "../lib/exec/_bounded_cache.ts";

Deno.test("BoundedCache holds exactly its bound and forgets the least recently used past it", () => {
  const cache = new BoundedCache<string, number>(3);
  cache.set("a", 1);
  cache.set("b", 2);
  cache.set("c", 3);
  assert.equal(cache.size, 3);
  assert.deepEqual(["a", "b", "c"].map((k) => cache.get(k)), [1, 2, 3]);
  cache.get("a"); // now b is the least recently used
  cache.set("d", 4);
  assert.equal(cache.size, 3);
  assert.equal(cache.get("b"), undefined);
  assert.deepEqual(["a", "c", "d"].map((k) => cache.get(k)), [1, 3, 4]);
});

Deno.test("BoundedCache replaces a value without growing and clears", () => {
  const cache = new BoundedCache<string, number>(1);
  cache.set("a", 1);
  cache.set("a", 2);
  assert.equal(cache.size, 1);
  assert.equal(cache.get("a"), 2);
  cache.set("b", 3);
  assert.equal(cache.get("a"), undefined);
  cache.clear();
  assert.equal(cache.size, 0);
});

Deno.test("BoundedCache refuses a bound that is not a positive integer", () => {
  assert.throws(() => new BoundedCache(0), RangeError);
  assert.throws(() => new BoundedCache(1.5), RangeError);
});
