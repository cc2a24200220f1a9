/**
 * Opening a regular file without waiting on a FIFO, or on another process's
 * lease longer than {@linkcode LEASE_WAIT_MS}.
 *
 * A plain open blocks on a FIFO until its other end opens, and on a file
 * under another process's write lease (`fcntl F_SETLEASE`) for the kernel's
 * lease-break time (45 s by default), in both cases on one of Deno's few
 * blocking threads. A stat before the open cannot rule that out: the path can
 * change in between. So the open here is `O_NONBLOCK` (on a FIFO it returns
 * at once, or fails with ENXIO for writing with no reader; on a leased file
 * it fails with EWOULDBLOCK; on a regular file under no lease it changes
 * nothing), and the kind is checked on the open descriptor.
 *
 * A failed open starts the lease break, and a holder that cooperates lets go
 * on its signal (a test holder that does: opened in about 4 ms), so a leased
 * file is tried again, with timers in between that hold no thread, for up to
 * {@linkcode LEASE_WAIT_MS}.
 *
 * Deno's `open` takes no flags, so this uses `node:fs`, which checks Deno's
 * permissions the same way and opens with close-on-exec.
 *
 * @module
 */

import { constants, promises as fsPromises } from "node:fs";
import type { FileHandle } from "node:fs/promises";

/** What kind of file a path is; `Deno.FileInfo` has this shape. */
export interface FileKind {
  readonly isFile: boolean;
  readonly isDirectory: boolean;
  readonly isFifo: boolean | null;
  readonly isSocket: boolean | null;
  readonly isCharDevice: boolean | null;
  readonly isBlockDevice: boolean | null;
}

/** A file's kind in words, for refusals: "a regular file", "a FIFO", … */
export function kindOf(info: FileKind): string {
  if (info.isFile) return "a regular file";
  if (info.isDirectory) return "a directory";
  if (info.isFifo) return "a FIFO";
  if (info.isSocket) return "a socket";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  return "a special file";
}

/** The path opened is not a regular file; `kind` says what it is. */
export class NotRegularFileError extends Error {
  /** @param kind As {@linkcode kindOf} words it. */
  constructor(readonly kind: string) {
    super(`it is ${kind}, not a regular file`);
    this.name = "NotRegularFileError";
  }
}

/** Another process holds a lease on the file, and kept it while the open tried again. */
export class FileLeasedError extends Error {
  /** The message names no path: the caller's refusal does. */
  constructor() {
    super("another process holds a lease on it");
    this.name = "FileLeasedError";
  }
}

/** An open regular file, with its size and permission bits when opened. */
export interface RegularFile {
  readonly handle: FileHandle;
  readonly size: number;
  /** The permission bits (`0o777`), without set-id and sticky bits. */
  readonly permissions: number;
}

/**
 * How long an open waits, at most, for another process to let go of its
 * lease on the file (the kernel itself would wait 45 s by default).
 */
export const LEASE_WAIT_MS = 2_000;

/** The pause before the first retry of a leased file; it doubles from there. */
const FIRST_LEASE_RETRY_MS = 2;

/** The longest pause between tries of a leased file. */
const MAX_LEASE_RETRY_MS = 250;

/** How {@linkcode openRegularFile} creates a file and how long it may wait. */
export interface OpenOptions {
  /**
   * The permission bits of a file `"write"` creates, less the umask; a copy
   * passes its source's, so a private file's copy is never readable by
   * others, not even for a moment.
   *
   * @default {0o666}
   */
  createMode?: number;
  /** Ends a wait for a lease at once (the request's connection closed). */
  signal?: AbortSignal;
}

const FLAGS = {
  read: constants.O_RDONLY | constants.O_NONBLOCK,
  // Truncated, like Deno.writeFile's files.
  write: constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NONBLOCK,
} as const;

/**
 * Opens `path` for reading, or for writing (created or truncated), only if it
 * is a regular file, without waiting on a FIFO and waiting for a lease only
 * as long as {@linkcode LEASE_WAIT_MS}, on timers.
 *
 * @param path A path already checked against the sandbox policy.
 * @param purpose `"write"` creates a missing file and empties an existing one.
 * @param options The new file's mode, and a signal that ends a lease wait.
 * @throws {NotRegularFileError} for a FIFO, socket, device or directory.
 * @throws {FileLeasedError} when another process kept its lease on the file.
 * @throws The signal's reason when it aborts while the open waits for a lease.
 * @throws Node's error (with its `code`, e.g. `ENOENT`) or `Deno.errors.NotCapable`.
 */
export async function openRegularFile(
  path: string,
  purpose: "read" | "write",
  { createMode = 0o666, signal }: OpenOptions = {},
): Promise<RegularFile> {
  let handle: FileHandle;
  const giveUpAt = performance.now() + LEASE_WAIT_MS;
  for (let pause = FIRST_LEASE_RETRY_MS;; pause = Math.min(pause * 2, MAX_LEASE_RETRY_MS)) {
    try {
      handle = await fsPromises.open(path, FLAGS[purpose], createMode);
      break;
    } catch (error) {
      const failure = await openFailure(path, error);
      const left = giveUpAt - performance.now();
      if (!(failure instanceof FileLeasedError) || left <= 0) throw failure;
      signal?.throwIfAborted(); // the request's connection closed: nobody waits for the answer
      await pauseUnlessAborted(Math.min(pause, left), signal);
      signal?.throwIfAborted();
    }
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new NotRegularFileError(kindOf(kindOfStats(info)));
    return { handle, size: info.size, permissions: info.mode & 0o777 };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Resolves after `ms`, or as soon as `signal` aborts (the caller looks which). */
export function pauseUnlessAborted(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** The open's failure in the terms of this module where it has one. */
async function openFailure(path: string, error: unknown): Promise<unknown> {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "EAGAIN" || code === "EWOULDBLOCK") return new FileLeasedError();
  if (code === "EISDIR") return new NotRegularFileError("a directory");
  if (code === "ENXIO") {
    // Writing to a FIFO with no reader, or opening a socket or a device with
    // nothing behind it; never a regular file. Say which, if it still is one.
    const info = await Deno.stat(path).catch(() => null);
    return new NotRegularFileError(info === null || info.isFile ? "a special file" : kindOf(info));
  }
  return error;
}

/** A `node:fs` stat's kind, in `Deno.FileInfo`'s shape for {@linkcode kindOf}. */
function kindOfStats(info: Awaited<ReturnType<FileHandle["stat"]>>): FileKind {
  return {
    isFile: info.isFile(),
    isDirectory: info.isDirectory(),
    isFifo: info.isFIFO(),
    isSocket: info.isSocket(),
    isCharDevice: info.isCharacterDevice(),
    isBlockDevice: info.isBlockDevice(),
  };
}
