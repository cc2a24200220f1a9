import assert from "node:assert/strict";
import { openRegularFile } from "../lib/_regular_file.ts";
import { copyAll, readableOf, writeAll } from "../lib/exec/_file_io.ts";

async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "outpost_file_io_" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

Deno.test("readableOf streams a whole file in chunks and closes it at the end", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/a`;
  const data = new Uint8Array(100_000).map((_, i) => i % 251);
  await Deno.writeFile(path, data);
  const file = await openRegularFile(path, "read");
  const read = new Uint8Array(data.length);
  let length = 0;
  for await (const chunk of readableOf(file.handle, 4096)) {
    assert.ok(chunk.length <= 4096);
    read.set(chunk, length);
    length += chunk.length;
  }
  assert.equal(length, data.length);
  assert.deepEqual(read, data);
  assert.equal(file.handle.fd, -1, "closed once read to the end");
});

Deno.test("readableOf closes the file when the stream is cancelled", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/a`;
  await Deno.writeFile(path, new Uint8Array(10_000));
  const file = await openRegularFile(path, "read");
  const stream = readableOf(file.handle, 1000);
  const reader = stream.getReader();
  assert.equal((await reader.read()).value?.length, 1000);
  await reader.cancel();
  assert.equal(file.handle.fd, -1, "closed on cancel");
});

Deno.test("copyAll copies the rest of a file through its buffer, whatever its size", async () => {
  await using dir = await tempDir();
  for (const size of [0, 1, 4095, 4096, 4097, 100_000]) {
    const data = new Uint8Array(size).map((_, i) => (i * 7) % 256);
    await Deno.writeFile(`${dir.path}/from`, data);
    const from = await openRegularFile(`${dir.path}/from`, "read");
    const to = await openRegularFile(`${dir.path}/to`, "write");
    try {
      await copyAll(from.handle, to.handle, 4096);
    } finally {
      await from.handle.close();
      await to.handle.close();
    }
    assert.deepEqual(await Deno.readFile(`${dir.path}/to`), data, `${size} bytes`);
  }
});

Deno.test("writeAll writes all of its bytes, one call after another, in order", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/a`;
  const large = new Uint8Array(8 * 1024 * 1024).map((_, i) => i % 253);
  const file = await openRegularFile(path, "write");
  try {
    await writeAll(file.handle, new TextEncoder().encode("one,"));
    await writeAll(file.handle, new Uint8Array());
    await writeAll(file.handle, large);
  } finally {
    await file.handle.close();
  }
  const written = await Deno.readFile(path);
  assert.equal(new TextDecoder().decode(written.subarray(0, 4)), "one,");
  assert.equal(written.length, 4 + large.length);
  assert.deepEqual(written.subarray(4), large);
});
