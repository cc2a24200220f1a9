import assert from "node:assert/strict";
import { MAX_USED_URLS, UsedUrls } from "../lib/server/_used_urls.ts";

const TTL = 1_000;

Deno.test("UsedUrls takes a URL for an executor id once, and only one issued later after it", () => {
  const used = new UsedUrls();
  const first = used.issue("a", 1_000, TTL);
  assert.equal(first, 2_000);
  assert.equal(used.claim("a", first, 1_000, TTL), true);
  assert.equal(used.claim("a", first, 1_500, TTL), false, "a replay");
  assert.equal(used.claim("a", 1_900, 1_500, TTL), false, "an older URL, replayed late");
  const next = used.issue("a", 1_500, TTL);
  assert.equal(used.claim("a", next, 1_500, TTL), true, "the next one's");
  assert.equal(used.claim("b", used.issue("b", 1_500, TTL), 1_500, TTL), true, "another id");
  assert.equal(used.size, 2, "two numbers per id");
  // Expired entries are forgotten (an expired URL is refused before this).
  assert.equal(used.claim("c", used.issue("c", 2_600, TTL), 2_600, TTL), true);
  assert.equal(used.size, 1, "a's and b's entries went at their expiry");
});

Deno.test("UsedUrls issues each id's URLs strictly later one after another, and later than any used: in one millisecond, after the clock steps back, after a restart", () => {
  const used = new UsedUrls();
  const exps = [1, 2, 3].map(() => used.issue("a", 1_000, 60_000));
  assert.deepEqual(exps, [61_000, 61_001, 61_002], "three in one millisecond");
  assert.equal(used.issue("a", 500, 60_000), 61_003, "the clock stepped back");
  assert.equal(used.claim("a", 61_003, 500, 60_000), true, "and its URL is taken");
  assert.equal(used.issue("b", 1_000, 60_000), 61_000, "another id has its own order");
  // A fresh record (a restarted rendezvous, the key kept) takes an old URL within its own
  // lifetime once; the executor's next URL outranks it, so it takes its id back.
  const restarted = new UsedUrls();
  assert.equal(restarted.claim("a", 50_000, 1_000, 60_000), true, "an old URL, taken once");
  const next = restarted.issue("a", 1_000, 60_000);
  assert.equal(next, 61_000);
  assert.equal(restarted.claim("a", next, 1_000, 60_000), true);
});

Deno.test("UsedUrls refuses a URL that expires later than the run could have issued (an older run's longer lifetime, another clock), at the bound and past it", () => {
  const used = new UsedUrls();
  assert.equal(used.claim("a", 61_001, 1_000, 60_000), false, "one past now + lifetime");
  assert.equal(used.claim("a", 61_000, 1_000, 60_000), true, "at it");
  const issued = used.issue("b", 1_000, 60_000);
  assert.equal(used.issue("b", 1_000, 60_000), issued + 1);
  assert.equal(used.claim("b", issued + 1, 1_000, 60_000), true, "at the last issued");
  assert.equal(used.claim("b", issued + 2, 1_000, 60_000), false, "past it");
});

Deno.test("UsedUrls remembers at most MAX_USED_URLS executor ids: at the limit all, past it the one touched longest ago goes", () => {
  assert.equal(MAX_USED_URLS, 65_536);
  const used = new UsedUrls(4);
  const ttl = 20_000;
  for (const id of ["a", "b", "c", "d"]) assert.equal(used.claim(id, 10_000, 0, ttl), true);
  assert.equal(used.size, 4);
  for (const id of ["a", "b", "c", "d"]) assert.equal(used.claim(id, 10_000, 0, ttl), false);
  assert.equal(used.claim("a", 10_001, 0, ttl), true, "a used again, a later URL: now the newest");
  assert.equal(used.claim("e", 10_000, 0, ttl), true, "one past the limit");
  assert.equal(used.size, 4);
  assert.equal(used.claim("a", 10_001, 0, ttl), false, "kept");
  assert.equal(used.claim("b", 10_000, 0, ttl), true, "the one touched longest ago was forgotten");
});
