/**
 * Summarizes V8 `.cpuprofile` files (from `deno run --cpu-prof`) as the
 * functions with the most self time, and the project files with the most
 * total self time.
 *
 * ```sh
 * deno run -A bench/compare.ts --quick --only=bulk --profile=/tmp/prof
 * deno run -A bench/profile_summary.ts /tmp/prof/*.cpuprofile
 * ```
 *
 * @module
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** Self time of one function, in milliseconds. */
export interface HotSpot {
  /** `function (file:line)`. */
  where: string;
  /** Self time, ms. */
  selfMs: number;
  /** Share of all samples. */
  share: number;
}

/**
 * Self time per function of one profile.
 *
 * @param profile The parsed `.cpuprofile`.
 * @param top How many entries to return.
 * @returns The hottest functions, hottest first.
 */
export function hotSpots(profile: CpuProfile, top = 25): HotSpot[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    // timeDeltas[i] precedes sample i; attribute the next delta to this sample.
    const dt = deltas[i + 1] ?? 0;
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + Math.max(0, dt));
  }
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0) || 1;
  const byWhere = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    const file = frame.url.replace(/^file:\/\/.*?\/(lib|bench|tests)\//, "$1/");
    const where = `${frame.functionName || "(anonymous)"} (${file || "native"}:${
      frame.lineNumber + 1
    })`;
    byWhere.set(where, (byWhere.get(where) ?? 0) + us);
  }
  return [...byWhere.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([where, us]) => ({ where, selfMs: us / 1000, share: us / total }));
}

if (import.meta.main) {
  for (const path of Deno.args) {
    const profile = JSON.parse(await Deno.readTextFile(path)) as CpuProfile;
    const ms = (profile.endTime - profile.startTime) / 1000;
    console.log(`\n## ${path} (${ms.toFixed(0)} ms profiled)\n`);
    for (const h of hotSpots(profile)) {
      console.log(
        `${(h.share * 100).toFixed(1).padStart(5)}%  ${
          h.selfMs.toFixed(1).padStart(8)
        } ms  ${h.where}`,
      );
    }
  }
}
