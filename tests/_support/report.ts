/**
 * Records what an adversarial test tried and what happened, so that
 * SECURITY_TESTS.md is filled from a real run: each call prints one line and,
 * when `OUTPOST_REPORT_FILE` is set, appends it as JSON to that file
 * (`deno run -A tests/_support/security_report.ts` sets it and prints the table).
 *
 * @module
 */

/** One row of the adversarial report. */
export interface ReportRow {
  /** "fault", "bad input" or "escape". */
  area: "fault" | "bad input" | "escape";
  /** What was tried. */
  name: string;
  /** How many cases were run. */
  cases: number;
  /** What happened, e.g. "all rejected with ProtocolError". */
  result: string;
  /** Optional measurements. */
  details?: Record<string, number | string | boolean>;
}

/**
 * Records a row: prints it and appends it to `OUTPOST_REPORT_FILE` when set.
 *
 * @param row The row.
 */
export function record(row: ReportRow): void {
  const line = JSON.stringify(row);
  console.log(`[adversarial] ${line}`);
  let file: string | undefined;
  try {
    file = Deno.env.get("OUTPOST_REPORT_FILE");
  } catch {
    file = undefined; // no env permission: print only
  }
  if (file) Deno.writeTextFileSync(file, line + "\n", { append: true });
}
