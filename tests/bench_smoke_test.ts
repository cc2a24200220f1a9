/**
 * Smoke check of the peer-comparison benchmark: `bench/compare.ts --quick
 * --no-write` completes within a deadline and prints the results table with
 * every expected row. No timing is asserted; figures live in bench/RESULTS.md.
 */

import assert from "node:assert/strict";

const COMPARE = new URL("../bench/compare.ts", import.meta.url).pathname;
const DEADLINE_MS = 150_000;

/** Every workload row the table must have (by the start of its first cell). */
const EXPECTED_ROWS = [
  "bulk output head -c /dev/zero via rendezvous",
  "bulk output cat random file via rendezvous",
  "bulk stdin into cat > /dev/null via rendezvous",
  "1-byte round trip via rendezvous",
  "1-byte round trip via rendezvous beside bulk output",
  "start-to-exit of true via rendezvous",
  "bulk output head -c /dev/zero via serve",
  "bulk output cat random file via serve",
  "bulk stdin into cat > /dev/null via serve",
  "1-byte round trip via serve",
  "1-byte round trip via serve beside bulk output",
  "start-to-exit of true via serve",
  "concurrent streams on one executor socket",
  "concurrent sessions on serve",
  "memory per idle stream",
  "memory per idle session via rendezvous",
  "memory per idle session via serve",
];

Deno.test("bench/compare.ts --quick completes and prints the table with every workload row", async () => {
  const signal = AbortSignal.timeout(DEADLINE_MS);
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", COMPARE, "--quick", "--no-write"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal,
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.ok(!signal.aborted, `compare.ts did not finish within ${DEADLINE_MS} ms:\n${stderr}`);
  assert.equal(output.code, 0, `compare.ts exited with ${output.code}:\n${stderr}`);

  const lines = stdout.split("\n").filter((line) => line.startsWith("| "));
  assert.ok(
    lines[0]?.startsWith(
      "| Workload | outpost | Peer | Peer figure | outpost/peer | Target | Met |",
    ),
    `missing table header in:\n${stdout}`,
  );
  const cells = lines.slice(2).map((line) => line.split(" | ").map((cell) => cell.trim()));
  for (const row of EXPECTED_ROWS) {
    assert.ok(
      cells.some((c) => c[0].replace(/^\|\s*/, "").replace(/^\d+ /, "").startsWith(row)),
      `missing row "${row}" in:\n${stdout}`,
    );
  }
  // The forwarded raw WebSocket peer (the rendezvous' topology) ran and gave a figure.
  const forwarded = cells.find((c) =>
    c[2].startsWith("raw WebSocket through a forwarding process")
  );
  assert.ok(forwarded, `missing the forwarded raw WebSocket row in:\n${stdout}`);
  assert.match(forwarded[3], /^[\d.]+ MiB\/s$/, `forwarded raw WebSocket: ${forwarded[3]}`);
  // Every row has all seven columns and a figure or a stated reason.
  for (const c of cells) {
    assert.equal(c.length, 7, `row with ${c.length} columns: ${c.join(" | ")}`);
    assert.ok(c[1].length > 0, `row without an outpost figure or reason: ${c.join(" | ")}`);
  }
});

/** Runs compare.ts with no workloads (`--only=none`, a few seconds) and these flags. */
async function runEmptyBench(flags: string[]): Promise<{ code: number; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", COMPARE, "--only=none", "--no-ssh", ...flags],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  return { code: output.code, stderr: new TextDecoder().decode(output.stderr) };
}

Deno.test("bench/compare.ts --quick writes its figures only with --write (quick ones must not replace RESULTS.md)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost_bench_out_" });
  try {
    const out = `${dir}/results.md`;
    const quick = await runEmptyBench(["--quick", `--out=${out}`]);
    assert.equal(quick.code, 0, quick.stderr);
    assert.match(
      quick.stderr,
      /quick run: .*results\.md left as it is \(pass --write to write it\)/,
    );
    await assert.rejects(Deno.stat(out), Deno.errors.NotFound, "--quick wrote the results");
    const written = await runEmptyBench(["--quick", "--write", `--out=${out}`]);
    assert.equal(written.code, 0, written.stderr);
    assert.match(await Deno.readTextFile(out), /- Mode: quick/);
    const both = await runEmptyBench(["--quick", "--write", "--no-write"]);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /Cannot use --write with --no-write/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
