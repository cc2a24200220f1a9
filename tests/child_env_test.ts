/**
 * The child environment builder: the operator's allowlist, Codex's
 * `envPolicy` (inherit, default excludes, exclude, includeOnly, set) and the
 * request's `env` on top, with their limits.
 */

import assert from "node:assert/strict";
import { buildChildEnv, CORE_ENV, type EnvPolicy, matchesPattern } from "../lib/exec/child_env.ts";

/** Sets variables in this process for the test's allowlist, and removes them after. */
function withVariables(vars: Record<string, string>): Disposable {
  for (const [name, value] of Object.entries(vars)) Deno.env.set(name, value);
  return { [Symbol.dispose]: () => Object.keys(vars).forEach((name) => Deno.env.delete(name)) };
}

const VARS = {
  OUTPOST_T_PLAIN: "plain",
  OUTPOST_T_API_KEY: "k",
  OUTPOST_T_SECRET_X: "s",
  outpost_t_token: "t",
  OUTPOST_T_PATHLIKE: "p",
};
const ALLOWLIST = [...Object.keys(VARS), "HOME"];

Deno.test("buildChildEnv without a policy inherits the allowlist unless told not to; env wins", () => {
  using _vars = withVariables(VARS);
  const inherited = buildChildEnv({ OUTPOST_T_PLAIN: "mine" }, { allowlist: ALLOWLIST });
  assert.equal(inherited.OUTPOST_T_PLAIN, "mine");
  assert.equal(inherited.OUTPOST_T_API_KEY, "k", "no default excludes without a policy");
  assert.deepEqual(buildChildEnv({ A: "1" }, { allowlist: ALLOWLIST, inherit: false }), {
    A: "1",
  });
});

Deno.test("buildChildEnv follows envPolicy: inherit modes, default excludes, exclude, includeOnly, set", () => {
  using _vars = withVariables(VARS);
  const build = (
    policy: EnvPolicy,
    env?: Record<string, string>,
  ) => buildChildEnv(env, { allowlist: ALLOWLIST, policy, inherit: false });
  // "all" starts from the allowlist, minus *KEY*, *SECRET*, *TOKEN* (case-insensitive).
  assert.deepEqual(Object.keys(build({})).sort(), [
    "HOME",
    "OUTPOST_T_PATHLIKE",
    "OUTPOST_T_PLAIN",
  ]);
  assert.equal(build({ ignoreDefaultExcludes: true }).outpost_t_token, "t");
  // "core" keeps only the core names; "none" nothing.
  assert.deepEqual(Object.keys(build({ inherit: "core" })), ["HOME"]);
  assert.ok(CORE_ENV.includes("PATH"));
  assert.deepEqual(build({ inherit: "none" }), {});
  // exclude and includeOnly patterns, case-insensitive.
  assert.deepEqual(Object.keys(build({ exclude: ["outpost_t_p?ain", "HOME"] })), [
    "OUTPOST_T_PATHLIKE",
  ]);
  assert.deepEqual(Object.keys(build({ includeOnly: ["*plain"] })), ["OUTPOST_T_PLAIN"]);
  // set lies over the inherited values, and the request's env over set.
  const layered = build(
    { inherit: "none", set: { A: "set", B: "set" } },
    { B: "env" },
  );
  assert.deepEqual(layered, { A: "set", B: "env" });
});

Deno.test("buildChildEnv refuses a malformed envPolicy, at and past its limits", () => {
  const build = (policy: unknown) =>
    buildChildEnv(undefined, { policy: policy as never, allowlist: [] });
  assert.throws(() => build("all"), /envPolicy is not an object/);
  assert.throws(() => build({ inherit: "some" }), /inherit must be "all", "core" or "none"/);
  assert.throws(() => build({ ignoreDefaultExcludes: "yes" }), /must be a boolean/);
  assert.throws(() => build({ exclude: "X" }), /exclude must be a list of patterns/);
  assert.throws(() => build({ set: ["A=1"] }), /env is not an object of strings/);
  assert.throws(() => build({ set: { "A=B": "1" } }), /holds "=" or NUL/);
  assert.throws(() => build({ set: { A: "x\ud800" } }), /lone surrogate/);
  assert.throws(() => build({ set: { "\udc00": "x" } }), /lone surrogate/);
  // 256 patterns of 1024 characters are accepted; one more pattern, or one more character, is not.
  const long = "*".repeat(1024);
  assert.deepEqual(build({ includeOnly: Array(256).fill(long) }), {});
  assert.throws(() => build({ includeOnly: Array(257).fill("A") }), /more than 256 patterns/);
  assert.throws(() => build({ exclude: [long + "*"] }), /at most 1024 characters/);
});

Deno.test("matchesPattern matches * and ? case-insensitively, in linear time on hostile patterns", () => {
  const cases: [string, string, boolean][] = [
    ["*KEY*", "api_key_x", true],
    ["p?th", "PATH", true],
    ["a*b*c", "abxxc", true],
    ["a*b*c", "acb", false],
    ["X", "XY", false],
    ["*", "", true],
    ["", "", true],
    ["", "A", false],
  ];
  for (const [pattern, name, expected] of cases) {
    assert.equal(matchesPattern(pattern, name), expected, `${pattern} ~ ${name}`);
  }
  // A pattern that sends a backtracking regex into exponential time.
  const hostile = "*a".repeat(512);
  const started = performance.now();
  for (let i = 0; i < 100; i++) assert.equal(matchesPattern(hostile, "a".repeat(200) + "b"), false);
  assert.ok(performance.now() - started < 5_000, "100 hostile matches took over 5 s");
});
