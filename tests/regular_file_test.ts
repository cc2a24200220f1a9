import assert from "node:assert/strict";
import { constants, promises as fsPromises } from "node:fs";
import {
  FileLeasedError,
  LEASE_WAIT_MS,
  NotRegularFileError,
  openRegularFile,
  pauseUnlessAborted,
} from "../lib/_regular_file.ts";
import { withDeadline } from "./_support/deadline.ts";
import { CAN_LEASE, holdLease } from "./_support/file_lease.ts";

/** An open that waits on a FIFO or a lease fails here instead of hanging the test. */
const PROMPTLY_MS = 5_000;

async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "outpost_regular_" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/** A file holding "kept", in a temporary directory removed on disposal. */
async function keptFile(): Promise<AsyncDisposable & { path: string }> {
  const dir = await tempDir();
  const path = `${dir.path}/leased`;
  await Deno.writeTextFile(path, "kept");
  return { path, [Symbol.asyncDispose]: () => dir[Symbol.asyncDispose]() };
}

async function mkfifo(path: string): Promise<void> {
  const { success } = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(success, `mkfifo ${path}`);
}

async function refusedAs(
  opening: Promise<unknown>,
  expected: new (...args: never[]) => Error,
  what: string,
  mention?: string,
): Promise<void> {
  await assert.rejects(withDeadline(opening, PROMPTLY_MS, what), (error: unknown) => {
    assert.ok(error instanceof expected, `${what}: ${error}`);
    if (mention !== undefined) assert.match(error.message, new RegExp(mention), what);
    return true;
  });
}

Deno.test("openRegularFile refuses a FIFO with no other end at once, to read and to write", async () => {
  await using dir = await tempDir();
  const fifo = `${dir.path}/fifo`;
  await mkfifo(fifo);
  await refusedAs(openRegularFile(fifo, "read"), NotRegularFileError, "read", "it is a FIFO");
  // The kernel refuses a non-blocking open for writing (ENXIO): the kind is looked up.
  await refusedAs(openRegularFile(fifo, "write"), NotRegularFileError, "write", "it is a FIFO");
});

Deno.test("openRegularFile refuses a FIFO whose reader is there, before writing a byte", async () => {
  await using dir = await tempDir();
  const fifo = `${dir.path}/fifo`;
  await mkfifo(fifo);
  const reader = await fsPromises.open(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    await refusedAs(openRegularFile(fifo, "write"), NotRegularFileError, "write", "it is a FIFO");
    // Nothing came through: with no writer left, the read end is at its end at once.
    const { bytesRead } = await reader.read(new Uint8Array(16), 0, 16, null);
    assert.equal(bytesRead, 0);
  } finally {
    await reader.close();
  }
});

Deno.test("openRegularFile names directories, sockets and devices", async () => {
  await using dir = await tempDir();
  await refusedAs(openRegularFile(dir.path, "read"), NotRegularFileError, "dir", "a directory");
  await refusedAs(openRegularFile(dir.path, "write"), NotRegularFileError, "dir", "a directory");
  const socketPath = `${dir.path}/socket`;
  using _listener = Deno.listen({ transport: "unix", path: socketPath });
  await refusedAs(openRegularFile(socketPath, "read"), NotRegularFileError, "socket", "a socket");
  await refusedAs(openRegularFile("/dev/null", "read"), NotRegularFileError, "null", "character");
  await refusedAs(openRegularFile("/dev/null", "write"), NotRegularFileError, "null", "character");
});

Deno.test("openRegularFile passes on a missing path's error with its code", async () => {
  await using dir = await tempDir();
  await assert.rejects(openRegularFile(`${dir.path}/missing`, "read"), { code: "ENOENT" });
  await assert.rejects(openRegularFile(`${dir.path}/missing/file`, "write"), { code: "ENOENT" });
});

Deno.test({
  name: "openRegularFile does not wait out a lease whose holder keeps it, to read or to write",
  ignore: !CAN_LEASE,
  async fn() {
    await using kept = await keptFile();
    const path = kept.path;
    {
      await using _lease = await holdLease(path);
      // A plain open waits the kernel's lease-break time here (45 s by default).
      for (const purpose of ["read", "write"] as const) {
        const started = performance.now();
        await refusedAs(openRegularFile(path, purpose), FileLeasedError, purpose, "holds a lease");
        const waited = performance.now() - started;
        assert.ok(waited >= LEASE_WAIT_MS - 1, `${purpose}: gave up after ${waited} ms`);
      }
    }
    assert.equal(await Deno.readTextFile(path), "kept", "the refused write truncated nothing");
  },
});

Deno.test({
  name: "openRegularFile gets a file whose lease holder lets go within LEASE_WAIT_MS, not past it",
  ignore: !CAN_LEASE,
  async fn() {
    assert.equal(LEASE_WAIT_MS, 2_000);
    await using kept = await keptFile();
    const path = kept.path;
    // The holder is told to let go at the first attempt; the margins cover a busy machine.
    for (const letGoAfterMs of [0, 1_400]) {
      await using _lease = await holdLease(path, letGoAfterMs);
      const opening = openRegularFile(path, "read");
      const opened = await withDeadline(opening, PROMPTLY_MS, `let go after ${letGoAfterMs} ms`);
      await opened.handle.close();
    }
    {
      await using _lease = await holdLease(path, 3_000);
      await refusedAs(openRegularFile(path, "write"), FileLeasedError, "past", "holds a lease");
    }
    assert.equal(await Deno.readTextFile(path), "kept");
  },
});

Deno.test({
  name: "openRegularFile stops waiting for a lease when its signal aborts, with its reason",
  ignore: !CAN_LEASE,
  async fn() {
    await using kept = await keptFile();
    const path = kept.path;
    await using _lease = await holdLease(path);
    const closed = new Error("the connection closed");
    // Aborted before it starts: one try, and the reason.
    await assert.rejects(
      openRegularFile(path, "read", { signal: AbortSignal.abort(closed) }),
      closed,
    );
    // Aborted while it waits between tries.
    const aborted = new AbortController();
    const started = performance.now();
    const opening = openRegularFile(path, "read", { signal: aborted.signal });
    const abortLater = setTimeout(() => aborted.abort(closed), 300);
    try {
      await assert.rejects(withDeadline(opening, PROMPTLY_MS, "aborted"), closed);
    } finally {
      clearTimeout(abortLater);
    }
    const waited = performance.now() - started;
    assert.ok(waited < LEASE_WAIT_MS / 2, `gave up ${waited} ms after its start, aborted at 300`);
  },
});

Deno.test("pauseUnlessAborted ends at its time, or at once when its signal aborts", async () => {
  const started = performance.now();
  await pauseUnlessAborted(20);
  assert.ok(performance.now() - started >= 19, "waited its time");
  const aborted = new AbortController();
  const pause = pauseUnlessAborted(60_000, aborted.signal);
  aborted.abort();
  // Without the abort this would pass its deadline; the pause's own timer is cleared.
  await withDeadline(pause, PROMPTLY_MS, "the aborted pause");
  await withDeadline(pauseUnlessAborted(60_000, aborted.signal), PROMPTLY_MS, "already aborted");
});

Deno.test("openRegularFile reads a regular file and reports its size", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/a`;
  await Deno.writeTextFile(path, "hello");
  const file = await openRegularFile(path, "read");
  try {
    assert.equal(file.size, 5);
    const buffer = new Uint8Array(8);
    const { bytesRead } = await file.handle.read(buffer, 0, 8, null);
    assert.equal(new TextDecoder().decode(buffer.subarray(0, bytesRead)), "hello");
  } finally {
    await file.handle.close();
  }
});

Deno.test("openRegularFile for writing creates or empties, and drops set-id bits from permissions", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/a`;
  await Deno.writeTextFile(path, "old content");
  await Deno.chmod(path, 0o4755);
  const file = await openRegularFile(path, "write");
  try {
    assert.equal(file.size, 0, "emptied");
    assert.equal(file.permissions, 0o755);
    await file.handle.write(new TextEncoder().encode("new"));
  } finally {
    await file.handle.close();
  }
  assert.equal(await Deno.readTextFile(path), "new");
  const created = await openRegularFile(`${dir.path}/b`, "write");
  await created.handle.close();
  assert.equal((await Deno.stat(`${dir.path}/b`)).size, 0);
});

Deno.test("openRegularFile creates a file with the mode asked for, less the umask", async () => {
  await using dir = await tempDir();
  const file = await openRegularFile(`${dir.path}/private`, "write", { createMode: 0o600 });
  await file.handle.close();
  assert.equal((await Deno.stat(`${dir.path}/private`)).mode! & 0o777, 0o600);
});
