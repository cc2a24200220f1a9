/**
 * Runs the adversarial suite and prints the SECURITY_TESTS.md table from
 * what the tests recorded (`record()` rows), so the numbers come from a run.
 *
 * ```sh
 * deno run -A tests/_support/security_report.ts            # CI-sized run
 * OUTPOST_SOAK=1 deno run -A tests/_support/security_report.ts  # soak run
 * deno run -A tests/_support/security_report.ts --write    # also rewrite the table in SECURITY_TESTS.md
 * ```
 *
 * @module
 */

import type { ReportRow } from "./report.ts";

const FILES = [
  "tests/fuzz_frames_test.ts",
  "tests/fault_transfer_test.ts",
  "tests/rpc_bad_input_test.ts",
  "tests/http_bad_input_test.ts",
  "tests/escape_test.ts",
];
const SOAK = Deno.env.get("OUTPOST_SOAK") === "1";
const BEGIN = `<!-- BEGIN GENERATED TABLE ${SOAK ? "SOAK" : "CI"} -->`;
const END = `<!-- END GENERATED TABLE ${SOAK ? "SOAK" : "CI"} -->`;

const root = new URL("../../", import.meta.url).pathname;
const reportFile = await Deno.makeTempFile({ prefix: "outpost_security_" });
const started = performance.now();
const child = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", ...FILES],
  cwd: root,
  env: { OUTPOST_REPORT_FILE: reportFile, ...(SOAK ? { OUTPOST_SOAK: "1" } : {}) },
  stdout: "piped",
  stderr: "piped",
});
const output = await child.output();
// deno-lint-ignore no-control-regex -- strips the ANSI colours of deno test output
const text = new TextDecoder().decode(output.stdout).replaceAll(/\x1b\[[0-9;]*m/g, "");
const summary = text.split("\n").filter((l) => /^(ok|FAILED) \| \d+ passed/.test(l)).at(-1) ?? "";
const rows: ReportRow[] = (await Deno.readTextFile(reportFile)).split("\n").filter(Boolean).map((
  line,
) => JSON.parse(line));
await Deno.remove(reportFile);

function cell(text: string): string {
  return text.replaceAll("|", "\\|").replaceAll("\n", " ");
}

const mode = SOAK ? "soak (OUTPOST_SOAK=1)" : "CI";
const lines = [
  `Run: ${new Date().toISOString()}, ${mode}, ${
    Math.round((performance.now() - started) / 1000)
  } s, \`deno test\` summary: \`${summary.trim() || "(none)"}\``,
  "",
  "| area | what was tried | cases | result | details |",
  "| --- | --- | ---: | --- | --- |",
  ...rows.map((r) =>
    `| ${r.area} | ${cell(r.name)} | ${r.cases.toLocaleString("en-US")} | ${cell(r.result)} | ${
      r.details ? cell(Object.entries(r.details).map(([k, v]) => `${k}=${v}`).join(", ")) : ""
    } |`
  ),
  "",
  `Total cases: ${
    rows.reduce((n, r) => n + r.cases, 0).toLocaleString("en-US")
  } in ${rows.length} rows.`,
];
const table = lines.join("\n");
console.log(table);
if (Deno.args.includes("--write")) {
  const path = `${root}SECURITY_TESTS.md`;
  const doc = await Deno.readTextFile(path);
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  if (a < 0 || b < 0) throw new Error(`Cannot write table: markers missing in ${path}`);
  await Deno.writeTextFile(
    path,
    doc.slice(0, a + BEGIN.length) + "\n" + table + "\n" + doc.slice(b),
  );
}
if (!output.success) {
  console.error(new TextDecoder().decode(output.stderr).slice(-4000));
  console.error(text.slice(-4000));
  Deno.exit(1);
}
