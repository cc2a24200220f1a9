/**
 * Moving bytes between open files (`node:fs` handles, as
 * `openRegularFile` gives them): as a stream for a confined write's
 * helper, from bytes into a file, and from file to file.
 *
 * @module
 */

import type { FileHandle } from "node:fs/promises";

/**
 * The rest of an open file as a byte stream, closing the file when the
 * stream ends or is cancelled.
 *
 * @param chunkBytes The largest piece read at a time.
 */
export function readableOf(
  handle: FileHandle,
  chunkBytes = 256 * 1024,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const buffer = new Uint8Array(chunkBytes);
      try {
        const { bytesRead } = await handle.read(buffer, 0, chunkBytes, null);
        if (bytesRead === 0) {
          await handle.close();
          controller.close();
        } else {
          controller.enqueue(buffer.subarray(0, bytesRead));
        }
      } catch (error) {
        await handle.close().catch(() => {});
        controller.error(error);
      }
    },
    async cancel() {
      await handle.close();
    },
  });
}

/**
 * Copies the rest of one open file into another, through one reused buffer
 * (Deno has no `copy_file_range` on descriptors).
 *
 * @param chunkBytes The buffer's size.
 */
export async function copyAll(
  from: FileHandle,
  to: FileHandle,
  chunkBytes = 1024 * 1024,
): Promise<void> {
  const buffer = new Uint8Array(chunkBytes);
  while (true) {
    const { bytesRead } = await from.read(buffer, 0, chunkBytes, null);
    if (bytesRead === 0) return;
    await writeAll(to, buffer.subarray(0, bytesRead));
  }
}

/** Writes all of `bytes` at the file's position (a write may take only part). */
export async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, offset, bytes.length - offset, null);
    offset += bytesWritten;
  }
}
