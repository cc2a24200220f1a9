import assert from "node:assert/strict";
import { MAX_USED_URLS, UsedUrls } from "../lib/server/_used_urls.ts";

Deno.test("UsedUrls takes a signature once until its URL expires", () => {
  const used = new UsedUrls();
  assert.equal(used.claim("a", 2_000, 1_000), true);
  assert.equal(used.claim("a", 2_000, 1_500), false, "a replay");
  assert.equal(used.claim("b", 2_500, 1_500), true, "another URL");
  // Expired URLs are forgotten (their signatures are refused as expired before this).
  assert.equal(used.claim("c", 3_100, 2_100), true);
  assert.equal(used.size, 2, "a's entry went at its expiry");
});

Deno.test("UsedUrls remembers at most MAX_USED_URLS signatures: at the limit all, past it the oldest goes", () => {
  assert.equal(MAX_USED_URLS, 65_536);
  const used = new UsedUrls(4);
  for (const sig of ["a", "b", "c", "d"]) assert.equal(used.claim(sig, 10_000, 0), true);
  assert.equal(used.size, 4);
  for (const sig of ["a", "b", "c", "d"]) assert.equal(used.claim(sig, 10_000, 0), false);
  assert.equal(used.claim("e", 10_000, 0), true, "one past the limit");
  assert.equal(used.size, 4);
  assert.equal(used.claim("b", 10_000, 0), false, "kept");
  assert.equal(used.claim("a", 10_000, 0), true, "the oldest was forgotten");
});
