/**
 * Keeps README.md true: its TypeScript example runs against this checkout
 * (with its deno.json, and from elsewhere importing mod.ts by path),
 * and every `deno task` it tells people to run exists in deno.json; and
 * PROTOCOL.md's table of reset reasons lists exactly the ones outpost sends.
 */
import assert from "node:assert/strict";
import { RESET_REASONS, RESET_SESSION_LIMIT } from "../lib/mux/reset_reasons.ts";
import { SESSION_LIMIT_REASON } from "../lib/exec/session.ts";

const root = new URL("../", import.meta.url);
const readme = await Deno.readTextFile(new URL("README.md", root));

Deno.test("README's TypeScript examples run against this checkout and print what they say, with its deno.json and from another project that imports mod.ts by path", async () => {
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.ok(blocks.length > 0, "README.md has no ```ts example");
  const modUrl = new URL("mod.ts", root).href;
  const configs = [["--config", new URL("deno.json", root).pathname], ["--no-config"]];
  for (const [block, config] of blocks.flatMap((b) => configs.map((c) => [b, c] as const))) {
    const expected = [...block.matchAll(/console\.log\(.*\); \/\/ (.*)$/gm)].map((m) => m[1]);
    const dir = await Deno.makeTempDir({ prefix: "outpost-readme-" });
    try {
      const file = `${dir}/example.ts`;
      await Deno.writeTextFile(file, block.replaceAll('"@outpost/exec"', JSON.stringify(modUrl)));
      const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", ...config, file],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).output();
      const out = new TextDecoder().decode(stdout);
      assert.equal(code, 0, `example failed:\n${block}\n${new TextDecoder().decode(stderr)}`);
      // Each `console.log(...); // 0 "hi\n"` comment names the printed values.
      for (const comment of expected) {
        const words = comment.replaceAll('"', "").replaceAll("\\n", "").split(/\s+/);
        for (const word of words) assert.ok(out.includes(word), `expected ${word} in ${out}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("every `deno task NAME` in README.md exists in deno.json", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const named = new Set([...readme.matchAll(/deno(?:@2)? task ([a-z:]+)/g)].map((m) => m[1]));
  assert.ok(named.has("start") && named.has("test"), "README must give deno task start and test");
  for (const name of named) assert.ok(name in config.tasks, `README names missing task ${name}`);
});

Deno.test("PROTOCOL.md's reset reason table lists exactly RESET_REASONS, in order", async () => {
  const protocol = await Deno.readTextFile(new URL("PROTOCOL.md", root));
  const rows = [...protocol.matchAll(/^\| `([a-z_]+)` +\| ([a-z, ]+?) +\|/gm)].map((m) => m[1]);
  assert.deepEqual(rows, [...RESET_REASONS]);
  // The session layer (which imports no mux code) names the same reason.
  assert.equal(SESSION_LIMIT_REASON, RESET_SESSION_LIMIT);
});
