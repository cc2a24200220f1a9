/**
 * The outpost workloads (placeholder until the library lands).
 *
 * @module
 */
import type { Latency, Throughput } from "./_util.ts";

/** How the harness reaches the executor. */
export type OutpostMode = "rendezvous" | "serve";

/** Memory figure. */
export interface MemoryFigure {
  n: number;
  rssPerItem: number;
  heapPerItem: number;
}

/** A running outpost deployment to measure. */
export interface OutpostTarget {
  bulkOutput(command: string): Promise<Throughput>;
  bulkStdin(command: string, data: Uint8Array): Promise<Throughput>;
  roundTrip(count: number): Promise<Latency>;
  startToExit(count: number): Promise<Latency>;
  concurrentStreams(n: number): Promise<{ streams: number; errors: number; ms: number }>;
  idleStreamMemory(n: number): Promise<MemoryFigure>;
  idleSessionMemory(n: number): Promise<MemoryFigure>;
  close(): Promise<void>;
}

/**
 * Starts outpost in a mode.
 *
 * @param mode rendezvous or serve.
 * @returns The target.
 */
export function startOutpost(mode: OutpostMode): Promise<OutpostTarget> {
  return Promise.reject(new Error(`outpost ${mode} is not built yet`));
}
