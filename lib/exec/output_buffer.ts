/**
 * Output retention for one process: a single sequence counter shared by
 * output chunks, the exit event and the closed event (each consumes one seq,
 * starting at 1), a byte cap on retained output, and the consumption cursor
 * that drives backpressure on the child's pipes.
 *
 * Retention rule (documented in the README): a chunk counts as *consumed* once
 * a `read()` returned it or an event sink took it, and as *delivered* once a
 * `read()` returned it or the sink's far end confirmed it has it (a sink on a
 * channel that cannot tell confirms as it takes). Unread (unconsumed) output
 * is never evicted: when it reaches the cap, the producer waits in
 * {@linkcode OutputBuffer.waitWritable} (the child then blocks on its write).
 * Output taken but not delivered is never evicted either: it is what a lost
 * connection may not have passed on, replayed to the next sink (it is bounded
 * by what that connection had in flight). Delivered output stays retained for
 * replay until newer output pushes the retained total over the cap, oldest
 * first. The number of chunks is capped the same way, so a child writing a
 * byte at a time cannot make the bookkeeping of a million one-byte chunks
 * outweigh the bytes themselves.
 *
 * @module
 */

/** The stream a chunk came from; a terminal reports everything as `pty`. */
export type OutputStream = "stdout" | "stderr" | "pty";

/** One retained output chunk. */
export interface OutputChunk {
  /** The chunk's sequence number (1-based, shared with exit and closed). */
  readonly seq: number;
  /** The stream the bytes came from. */
  readonly stream: OutputStream;
  /** The bytes, exactly as read from the child. */
  readonly chunk: Uint8Array;
}

/** What {@linkcode OutputBuffer.read} returns. */
export interface OutputSlice {
  /** Retained chunks with `seq > afterSeq`, in order, within the byte budget. */
  readonly chunks: OutputChunk[];
  /** One past the last returned chunk, or the buffer's next seq when none was returned. */
  readonly nextSeq: number;
  /** True when no retained chunk was left out (the budget did not cut the read short). */
  readonly complete: boolean;
}

/** Options for `OutputBuffer`. */
export interface OutputBufferOptions {
  /**
   * Retained output cap in bytes; also the unread cap that pauses the producer.
   *
   * @default {1048576}
   */
  capBytes?: number;
  /**
   * Retained chunk cap; also the unread chunk count that pauses the producer.
   *
   * @default {Math.max(1024, Math.ceil(capBytes / 128))}
   */
  maxChunks?: number;
}

/** The default retention cap: 1 MiB per process, as upstream. */
export const DEFAULT_RETAINED_OUTPUT_BYTES = 1024 * 1024;
/** Fewest chunks a buffer may retain by default, however small its byte cap. */
const MIN_DEFAULT_CHUNKS = 1024;
/** Payload bytes per chunk the default chunk cap allows for on average. */
const BYTES_PER_DEFAULT_CHUNK = 128;

/**
 * What one retained chunk costs besides its buffer (the typed array, the
 * buffer object and the chunk record), as counted by
 * {@linkcode OutputBuffer.footprintBytes}: about what V8 takes for them.
 */
export const OUTPUT_CHUNK_OVERHEAD_BYTES = 256;

function footprint(chunk: Uint8Array): number {
  return chunk.buffer.byteLength + OUTPUT_CHUNK_OVERHEAD_BYTES;
}

const EVICTED: OutputChunk = Object.freeze({ seq: 0, stream: "stdout", chunk: new Uint8Array(0) });

/**
 * A bounded, seq-numbered retention buffer with a consumption cursor.
 *
 * @example Push, read, and see the cursor move
 * ```ts
 * import { OutputBuffer } from "./output_buffer.ts";
 * const buffer = new OutputBuffer({ capBytes: 16 });
 * buffer.pushOutput("stdout", new TextEncoder().encode("hello"));
 * const slice = buffer.read(0, Infinity);
 * console.log(slice.chunks.length, slice.nextSeq, buffer.unreadBytes); // 1 2 0
 * ```
 */
export class OutputBuffer {
  readonly #cap: number;
  readonly #maxChunks: number;
  #chunks: OutputChunk[] = [];
  #head = 0;
  #nextSeq = 1;
  #consumedSeq = 0;
  /** The highest seq delivered (at most #consumedSeq). */
  #deliveredSeq = 0;
  #retainedBytes = 0;
  /** What the retained chunks keep alive: see {@linkcode OutputBuffer.footprintBytes}. */
  #footprintBytes = 0;
  #unreadBytes = 0;
  /** Index into #chunks of the first chunk with seq > #consumedSeq. */
  #unreadIndex = 0;
  /** Index into #chunks of the first chunk with seq > #deliveredSeq (eviction stops there). */
  #undeliveredIndex = 0;
  #discarding = false;
  #changeWaiters: (() => void)[] = [];
  #writableWaiters: (() => void)[] = [];

  /**
   * Creates an empty buffer.
   *
   * @param options The retention caps.
   * @throws {RangeError} When `capBytes` or `maxChunks` is not a positive integer.
   */
  constructor(options: OutputBufferOptions = {}) {
    const cap = options.capBytes ?? DEFAULT_RETAINED_OUTPUT_BYTES;
    if (!Number.isSafeInteger(cap) || cap < 1) {
      throw new RangeError(
        `Cannot create output buffer: capBytes ${cap} is not a positive integer`,
      );
    }
    this.#cap = cap;
    const maxChunks = options.maxChunks ??
      Math.max(MIN_DEFAULT_CHUNKS, Math.ceil(cap / BYTES_PER_DEFAULT_CHUNK));
    if (!Number.isSafeInteger(maxChunks) || maxChunks < 1) {
      throw new RangeError(
        `Cannot create output buffer: maxChunks ${maxChunks} is not a positive integer`,
      );
    }
    this.#maxChunks = maxChunks;
  }

  /** The seq the next item will get. */
  get nextSeq(): number {
    return this.#nextSeq;
  }

  /** The highest seq consumed by a reader or an event sink. */
  get consumedSeq(): number {
    return this.#consumedSeq;
  }

  /** The highest seq delivered: read, or confirmed by a sink's far end. */
  get deliveredSeq(): number {
    return this.#deliveredSeq;
  }

  /** Bytes of output currently retained (consumed and unread). */
  get retainedBytes(): number {
    return this.#retainedBytes;
  }

  /**
   * What the retained chunks keep alive: each chunk's whole buffer (a chunk
   * may be a view with room for a header) plus
   * {@linkcode OUTPUT_CHUNK_OVERHEAD_BYTES} for the objects around it, so a
   * child writing a byte at a time is counted near what it costs.
   */
  get footprintBytes(): number {
    return this.#footprintBytes;
  }

  /** Bytes of retained output not yet consumed. */
  get unreadBytes(): number {
    return this.#unreadBytes;
  }

  /** The retention cap in bytes. */
  get capBytes(): number {
    return this.#cap;
  }

  /** The retention cap in chunks. */
  get maxChunks(): number {
    return this.#maxChunks;
  }

  /** Output chunks currently retained (consumed and unread). */
  get retainedChunks(): number {
    return this.#chunks.length - this.#head;
  }

  /** True while unread output is below both caps (the producer may read more). */
  get writable(): boolean {
    return this.#discarding ||
      (this.#unreadBytes < this.#cap && this.#chunks.length - this.#unreadIndex < this.#maxChunks);
  }

  /**
   * Appends an output chunk and gives it the next seq. In discard mode (see
   * {@linkcode OutputBuffer.discard}) the bytes are counted as consumed at once.
   *
   * @param stream The stream the bytes came from.
   * @param chunk The bytes; retained by reference, so the caller must not reuse it.
   * @returns The chunk's seq.
   */
  pushOutput(stream: OutputStream, chunk: Uint8Array): number {
    const seq = this.#nextSeq++;
    this.#chunks.push({ seq, stream, chunk });
    this.#retainedBytes += chunk.byteLength;
    this.#footprintBytes += footprint(chunk);
    this.#unreadBytes += chunk.byteLength;
    if (this.#discarding) this.consume(seq);
    this.#evict();
    this.#notifyChange();
    return seq;
  }

  /**
   * Takes the next seq for a non-output event (exit, closed).
   *
   * @returns The event's seq.
   */
  takeSeq(): number {
    const seq = this.#nextSeq++;
    this.#notifyChange();
    return seq;
  }

  /**
   * Collects retained chunks with `seq > afterSeq` per upstream §6.6: in order,
   * stopping before a chunk that would exceed `maxBytes` (the first chunk is
   * always included) and once the total reaches `maxBytes`. The returned
   * chunks (and anything older) count as consumed; a read that returns no
   * chunk consumes nothing, whatever its `afterSeq`.
   *
   * @param afterSeq Return chunks after this seq.
   * @param maxBytes The byte budget (`Infinity` for none).
   * @returns The chunks and the cursor for the next read.
   */
  read(afterSeq: number, maxBytes: number): OutputSlice {
    const chunks: OutputChunk[] = [];
    let total = 0;
    let i = this.#firstIndexAfter(afterSeq);
    for (; i < this.#chunks.length; i++) {
      const item = this.#chunks[i];
      const size = item.chunk.byteLength;
      if (chunks.length > 0 && total + size > maxBytes) break;
      chunks.push(item);
      total += size;
      if (total >= maxBytes) {
        i++;
        break;
      }
    }
    const nextSeq = chunks.length > 0 ? chunks[chunks.length - 1].seq + 1 : this.#nextSeq;
    if (chunks.length > 0) this.consume(nextSeq - 1);
    return { chunks, nextSeq, complete: i >= this.#chunks.length };
  }

  /**
   * Returns the retained items to (re)deliver to a sink: chunks with
   * `seq > afterSeq`, without marking them consumed.
   *
   * @param afterSeq Return chunks after this seq.
   * @returns The chunks, in order.
   */
  retainedAfter(afterSeq: number): OutputChunk[] {
    return this.#chunks.slice(this.#firstIndexAfter(afterSeq));
  }

  /**
   * Marks everything up to and including `seq` as consumed and delivered
   * (a read returned it): frees room for the producer and makes the chunks
   * eligible for eviction.
   *
   * @param seq The highest consumed seq.
   */
  consume(seq: number): void {
    this.take(seq);
    this.confirm(seq);
  }

  /**
   * Marks everything up to and including `seq` as consumed but not yet
   * delivered (an event sink took it): frees room for the producer; the
   * chunks stay retained until {@linkcode OutputBuffer.confirm}.
   *
   * @param seq The highest taken seq.
   */
  take(seq: number): void {
    if (seq <= this.#consumedSeq) return;
    this.#consumedSeq = Math.min(seq, this.#nextSeq - 1);
    while (
      this.#unreadIndex < this.#chunks.length &&
      this.#chunks[this.#unreadIndex].seq <= this.#consumedSeq
    ) {
      this.#unreadBytes -= this.#chunks[this.#unreadIndex].chunk.byteLength;
      this.#unreadIndex++;
    }
    if (this.writable) this.#notifyWritable();
  }

  /**
   * Marks everything up to and including `seq` as delivered (and so consumed):
   * the chunks become eligible for eviction.
   *
   * @param seq The highest delivered seq.
   */
  confirm(seq: number): void {
    if (seq > this.#consumedSeq) this.take(seq);
    if (seq <= this.#deliveredSeq) return;
    this.#deliveredSeq = Math.min(seq, this.#consumedSeq);
    while (
      this.#undeliveredIndex < this.#unreadIndex &&
      this.#chunks[this.#undeliveredIndex].seq <= this.#deliveredSeq
    ) {
      this.#undeliveredIndex++;
    }
    this.#evict();
  }

  /**
   * Resolves once the producer may read more (unread output below the cap).
   *
   * @returns A promise that resolves when writable.
   */
  waitWritable(): Promise<void> {
    if (this.writable) return Promise.resolve();
    return new Promise((resolve) => this.#writableWaiters.push(resolve));
  }

  /**
   * Resolves when an item with a seq greater than `afterSeq` exists (at once if
   * one already does), on {@linkcode OutputBuffer.wake}, or (without error)
   * when `signal` aborts.
   *
   * @param afterSeq The seq the caller has seen.
   * @param signal Ends the wait early.
   * @returns A promise that resolves on change.
   */
  waitChange(afterSeq: number, signal?: AbortSignal): Promise<void> {
    if (this.#nextSeq - 1 > afterSeq || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      const check = (): void => done();
      const onAbort = (): void => {
        this.#changeWaiters = this.#changeWaiters.filter((w) => w !== check);
        done();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#changeWaiters.push(check);
    });
  }

  /**
   * Wakes every waiter; used when the process record goes away so nothing
   * waits forever.
   */
  wake(): void {
    this.#notifyChange();
    this.#notifyWritable();
  }

  /**
   * Switches to discard mode: backpressure is released and new output counts
   * as consumed at once (used while the table shuts down).
   */
  discard(): void {
    this.#discarding = true;
    this.consume(this.#nextSeq - 1);
    this.wake();
  }

  #firstIndexAfter(afterSeq: number): number {
    let lo = this.#head;
    let hi = this.#chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#chunks[mid].seq <= afterSeq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #evict(): void {
    while (
      (this.#retainedBytes > this.#cap || this.#chunks.length - this.#head > this.#maxChunks) &&
      this.#head < this.#undeliveredIndex
    ) {
      this.#retainedBytes -= this.#chunks[this.#head].chunk.byteLength;
      this.#footprintBytes -= footprint(this.#chunks[this.#head].chunk);
      this.#chunks[this.#head] = EVICTED;
      this.#head++;
    }
    if (this.#head >= 64 && this.#head * 2 >= this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#unreadIndex -= this.#head;
      this.#undeliveredIndex -= this.#head;
      this.#head = 0;
    }
  }

  #notifyChange(): void {
    const waiters = this.#changeWaiters;
    if (waiters.length === 0) return;
    this.#changeWaiters = [];
    for (const waiter of waiters) waiter();
  }

  #notifyWritable(): void {
    const waiters = this.#writableWaiters;
    if (waiters.length === 0) return;
    this.#writableWaiters = [];
    for (const waiter of waiters) waiter();
  }
}
