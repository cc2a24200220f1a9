import assert from "node:assert/strict";

/**
 * Runs `body` (module code that prints one JSON line) in a child Deno process
 * under `flags`, in `cwd` when given, and returns what it printed: the way to
 * test code against permission flags other than this test process's `-A`.
 */
export async function underFlags(flags: string[], body: string, cwd?: string): Promise<unknown> {
  const dir = await Deno.makeTempDir({ prefix: "outpost_flags_" });
  try {
    const script = `${dir}/probe.ts`;
    await Deno.writeTextFile(script, body);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-lock", ...flags, script],
      cwd,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    return JSON.parse(new TextDecoder().decode(out.stdout));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
