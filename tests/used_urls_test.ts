import assert from "node:assert/strict";
import { MAX_USED_URLS, UsedUrls } from "../lib/server/_used_urls.ts";

Deno.test("UsedUrls takes a URL for an executor id once, and only one issued later after it", () => {
  const used = new UsedUrls();
  assert.equal(used.claim("a", 2_000, 1_000), true);
  assert.equal(used.claim("a", 2_000, 1_500), false, "a replay");
  assert.equal(used.claim("a", 1_900, 1_500), false, "an older URL, replayed late");
  assert.equal(used.claim("a", 2_001, 1_500), true, "the next registration's");
  assert.equal(used.claim("b", 2_000, 1_500), true, "another executor id");
  assert.equal(used.size, 2, "one number per id");
  // Expired entries are forgotten (an expired URL is refused before this).
  assert.equal(used.claim("c", 3_100, 2_050), true);
  assert.equal(used.size, 1, "a's and b's entries went at their expiry");
});

Deno.test("UsedUrls remembers at most MAX_USED_URLS executor ids: at the limit all, past it the one used longest ago goes", () => {
  assert.equal(MAX_USED_URLS, 65_536);
  const used = new UsedUrls(4);
  for (const id of ["a", "b", "c", "d"]) assert.equal(used.claim(id, 10_000, 0), true);
  assert.equal(used.size, 4);
  for (const id of ["a", "b", "c", "d"]) assert.equal(used.claim(id, 10_000, 0), false);
  assert.equal(used.claim("a", 10_001, 0), true, "a used again, with a later URL: now the newest");
  assert.equal(used.claim("e", 10_000, 0), true, "one past the limit");
  assert.equal(used.size, 4);
  assert.equal(used.claim("a", 10_001, 0), false, "kept");
  assert.equal(used.claim("b", 10_000, 0), true, "the one used longest ago was forgotten");
});
