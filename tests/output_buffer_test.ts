import assert from "node:assert/strict";
import {
  DEFAULT_RETAINED_OUTPUT_BYTES,
  OUTPUT_CHUNK_OVERHEAD_BYTES,
  OutputBuffer,
} from "../lib/exec/output_buffer.ts";
import { withDeadline } from "./_process_helpers.ts";

function bytes(n: number, fill = 0x61): Uint8Array {
  return new Uint8Array(n).fill(fill);
}

Deno.test("OutputBuffer shares one seq counter starting at 1 between output and events", () => {
  const buffer = new OutputBuffer();
  assert.equal(buffer.nextSeq, 1);
  assert.equal(buffer.pushOutput("stdout", bytes(1)), 1);
  assert.equal(buffer.pushOutput("stderr", bytes(1)), 2);
  assert.equal(buffer.takeSeq(), 3);
  assert.equal(buffer.pushOutput("stdout", bytes(1)), 4);
  assert.equal(buffer.takeSeq(), 5);
  assert.equal(buffer.nextSeq, 6);
  assert.deepEqual(buffer.read(0, Infinity).chunks.map((c) => c.seq), [1, 2, 4]);
  assert.equal(DEFAULT_RETAINED_OUTPUT_BYTES, 1048576);
});

Deno.test("OutputBuffer read follows afterSeq and maxBytes as upstream", () => {
  const buffer = new OutputBuffer();
  buffer.pushOutput("stdout", bytes(10)); // 1
  buffer.pushOutput("stdout", bytes(10)); // 2
  buffer.pushOutput("stdout", bytes(10)); // 3
  // The first chunk is always included, even over the budget.
  let slice = buffer.read(0, 5);
  assert.deepEqual(slice.chunks.map((c) => c.seq), [1]);
  assert.equal(slice.nextSeq, 2);
  assert.equal(slice.complete, false);
  // Stops before a chunk that would exceed the budget.
  slice = buffer.read(0, 25);
  assert.deepEqual(slice.chunks.map((c) => c.seq), [1, 2]);
  // Stops once the total reaches the budget exactly.
  slice = buffer.read(0, 20);
  assert.deepEqual(slice.chunks.map((c) => c.seq), [1, 2]);
  assert.equal(slice.nextSeq, 3);
  slice = buffer.read(1, Infinity);
  assert.deepEqual(slice.chunks.map((c) => c.seq), [2, 3]);
  assert.equal(slice.complete, true);
  // Nothing after: nextSeq is the buffer's next seq.
  slice = buffer.read(3, Infinity);
  assert.deepEqual(slice.chunks, []);
  assert.equal(slice.nextSeq, 4);
});

Deno.test("OutputBuffer counts returned chunks as consumed, empty reads consume nothing", () => {
  const buffer = new OutputBuffer({ capBytes: 100 });
  buffer.pushOutput("stdout", bytes(10));
  buffer.pushOutput("stdout", bytes(10));
  assert.equal(buffer.unreadBytes, 20);
  buffer.read(1_000, Infinity);
  assert.equal(buffer.unreadBytes, 20);
  buffer.read(0, 1);
  assert.equal(buffer.unreadBytes, 10);
  assert.equal(buffer.consumedSeq, 1);
  buffer.read(0, Infinity);
  assert.equal(buffer.unreadBytes, 0);
  assert.equal(buffer.retainedBytes, 20, "consumed output stays for replay");
});

Deno.test("OutputBuffer pauses the producer at the cap and never evicts unread bytes", async () => {
  const buffer = new OutputBuffer({ capBytes: 20 });
  buffer.pushOutput("stdout", bytes(10));
  assert.equal(buffer.writable, true, "10 of 20");
  buffer.pushOutput("stdout", bytes(9));
  assert.equal(buffer.writable, true, "19 of 20: still writable");
  buffer.pushOutput("stdout", bytes(1));
  assert.equal(buffer.writable, false, "20 of 20: at the cap");
  let resumed = false;
  const waiting = buffer.waitWritable().then(() => resumed = true);
  await Promise.resolve();
  assert.equal(resumed, false);
  // A producer that read one chunk more still loses nothing.
  buffer.pushOutput("stdout", bytes(5));
  assert.equal(buffer.retainedBytes, 25);
  assert.deepEqual(buffer.read(0, Infinity).chunks.map((c) => c.seq), [1, 2, 3, 4]);
  await withDeadline(waiting, 1_000, "writable");
  assert.equal(resumed, true);
  // Now everything is consumed; newer output evicts the oldest consumed chunks.
  buffer.pushOutput("stdout", bytes(10));
  assert.ok(buffer.retainedBytes <= 20 + 10);
  assert.equal(buffer.read(0, Infinity).chunks[0].seq > 1, true, "oldest consumed chunk evicted");
  assert.equal(buffer.unreadBytes, 0);
});

Deno.test("OutputBuffer evicts consumed output oldest first down to the cap", () => {
  const buffer = new OutputBuffer({ capBytes: 30 });
  for (let i = 0; i < 10; i++) {
    buffer.pushOutput("stdout", bytes(10, i));
    buffer.read(i, Infinity);
  }
  assert.equal(buffer.retainedBytes, 30);
  assert.deepEqual(buffer.read(0, Infinity).chunks.map((c) => c.seq), [8, 9, 10]);
  assert.deepEqual(buffer.retainedAfter(8).map((c) => c.seq), [9, 10]);
});

Deno.test("OutputBuffer caps chunks too: the producer pauses at maxChunks unread, consumed chunks are evicted past it", async () => {
  const buffer = new OutputBuffer({ capBytes: 1_000, maxChunks: 4 });
  for (let i = 0; i < 3; i++) buffer.pushOutput("stdout", bytes(1, i));
  assert.equal(buffer.writable, true, "3 of 4 chunks unread");
  buffer.pushOutput("stdout", bytes(1, 3));
  assert.equal(buffer.writable, false, "4 of 4 chunks unread: at the cap, though 4 of 1000 bytes");
  const waiting = buffer.waitWritable();
  // One past: nothing unread is evicted.
  buffer.pushOutput("stdout", bytes(1, 4));
  assert.equal(buffer.retainedChunks, 5);
  assert.deepEqual(buffer.read(0, Infinity).chunks.map((c) => c.seq), [1, 2, 3, 4, 5]);
  await withDeadline(waiting, 1_000, "writable after the read");
  // Everything is consumed: the next push evicts the oldest down to 4 chunks.
  buffer.pushOutput("stdout", bytes(1, 5));
  assert.equal(buffer.retainedChunks, 4);
  assert.deepEqual(buffer.retainedAfter(0).map((c) => c.seq), [3, 4, 5, 6]);
  assert.equal(buffer.writable, true, "one chunk unread");
});

Deno.test("OutputBuffer derives its default chunk cap from the byte cap and rejects a bad one", () => {
  assert.equal(new OutputBuffer().maxChunks, 8192, "1 MiB / 128");
  assert.equal(
    new OutputBuffer({ capBytes: 20 }).maxChunks,
    1024,
    "never fewer than 1024 by default",
  );
  assert.equal(new OutputBuffer({ maxChunks: 1 }).maxChunks, 1);
  assert.throws(() => new OutputBuffer({ maxChunks: 0 }), /maxChunks 0 is not a positive integer/);
  assert.throws(() => new OutputBuffer({ maxChunks: 2.5 }), RangeError);
});

Deno.test("OutputBuffer waitChange resolves on new items, wake, or abort", async () => {
  const buffer = new OutputBuffer();
  await withDeadline(buffer.waitChange(-1), 1_000, "already newer");
  const change = buffer.waitChange(0);
  buffer.takeSeq();
  await withDeadline(change, 1_000, "change");
  const woken = buffer.waitChange(10);
  buffer.wake();
  await withDeadline(woken, 1_000, "wake");
  const controller = new AbortController();
  const aborted = buffer.waitChange(10, controller.signal);
  controller.abort();
  await withDeadline(aborted, 1_000, "abort");
});

Deno.test("OutputBuffer discard releases backpressure and consumes everything", async () => {
  const buffer = new OutputBuffer({ capBytes: 4 });
  buffer.pushOutput("stdout", bytes(8));
  const waiting = buffer.waitWritable();
  buffer.discard();
  await withDeadline(waiting, 1_000, "discard");
  buffer.pushOutput("stdout", bytes(8));
  assert.equal(buffer.unreadBytes, 0);
  assert.equal(buffer.writable, true);
});

Deno.test("OutputBuffer rejects a non-positive cap", () => {
  assert.throws(() => new OutputBuffer({ capBytes: 0 }), RangeError);
  assert.throws(() => new OutputBuffer({ capBytes: 1.5 }), RangeError);
  assert.equal(new OutputBuffer({ capBytes: 1 }).capBytes, 1);
});

Deno.test("OutputBuffer compacts a long history without losing order", () => {
  const buffer = new OutputBuffer({ capBytes: 50 });
  for (let i = 1; i <= 5000; i++) {
    buffer.pushOutput(i % 2 ? "stdout" : "stderr", bytes(1, i & 0xff));
    if (i % 7 === 0) buffer.read(buffer.consumedSeq, Infinity);
  }
  buffer.read(buffer.consumedSeq, Infinity);
  const seqs = buffer.read(0, Infinity).chunks.map((c) => c.seq);
  assert.equal(seqs.length, 50);
  assert.deepEqual(seqs, Array.from({ length: 50 }, (_, i) => 4951 + i));
});

Deno.test("OutputBuffer keeps output taken but not delivered past its cap, and evicts it once confirmed", () => {
  const buffer = new OutputBuffer({ capBytes: 10 });
  buffer.pushOutput("stdout", bytes(6)); // 1
  buffer.pushOutput("stdout", bytes(6)); // 2
  buffer.take(2); // a sink took both; its far end has confirmed neither
  assert.equal(buffer.consumedSeq, 2);
  assert.equal(buffer.deliveredSeq, 0);
  assert.equal(buffer.unreadBytes, 0);
  assert.ok(buffer.writable, "taking frees room for the producer");
  buffer.pushOutput("stdout", bytes(6)); // 3
  assert.equal(buffer.retainedBytes, 18, "nothing taken and unconfirmed is evicted");
  assert.deepEqual(buffer.retainedAfter(buffer.deliveredSeq).map((c) => c.seq), [1, 2, 3]);
  buffer.confirm(1);
  assert.deepEqual(buffer.retainedAfter(0).map((c) => c.seq), [2, 3], "seq 1, confirmed, goes");
  assert.equal(buffer.deliveredSeq, 1);
  buffer.confirm(2);
  assert.deepEqual(buffer.retainedAfter(0).map((c) => c.seq), [3], "back within the cap");
  // Confirming implies taking; a read consumes and delivers at once.
  buffer.confirm(3);
  assert.equal(buffer.consumedSeq, 3);
  buffer.pushOutput("stdout", bytes(6)); // 4
  assert.deepEqual(buffer.read(3, Infinity).chunks.map((c) => c.seq), [4]);
  assert.equal(buffer.deliveredSeq, 4);
});

Deno.test("OutputBuffer counts the footprint of what it retains: each chunk's whole buffer plus its overhead, until evicted", () => {
  const buffer = new OutputBuffer({ capBytes: 4 });
  buffer.pushOutput("stdout", new Uint8Array(1));
  assert.equal(buffer.footprintBytes, 1 + OUTPUT_CHUNK_OVERHEAD_BYTES);
  // A view keeps its whole buffer alive (a chunk with room for a header).
  buffer.pushOutput("stdout", new Uint8Array(100).subarray(96));
  assert.equal(buffer.retainedBytes, 5);
  assert.equal(buffer.footprintBytes, 1 + 100 + 2 * OUTPUT_CHUNK_OVERHEAD_BYTES);
  // Delivered, the first chunk is evicted past the 4-byte cap.
  buffer.consume(2);
  assert.equal(buffer.retainedBytes, 4);
  assert.equal(buffer.footprintBytes, 100 + OUTPUT_CHUNK_OVERHEAD_BYTES);
});
