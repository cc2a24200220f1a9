/**
 * Writing fs operations run inside a bubblewrap sandbox, for executors whose
 * minimum confinement is `os`: the same mount layout as the `os` process
 * level (read-only `/`, only the write roots bound writable), a fresh session
 * and no capabilities. Deno has no `openat`/`O_NOFOLLOW`, so a real directory
 * on a checked path can be swapped for a symbolic link between the policy
 * check and the write; inside the sandbox such a link can only lead into a
 * read-only mount (or the sandbox's own `/tmp`), and the write fails with
 * `EROFS` instead of landing outside the write roots.
 *
 * Helpers: `bwrap` and `sh` for each operation, with `cat` (write), `mkdir`
 * (create directory) or `rm` (remove); each must be granted to the executor
 * (`--allow-run`). A missing grant refuses the operation; it never falls
 * back to an unconfined write.
 *
 * Each helper starts with a handshake: its shell prints one byte, then waits
 * for a line on stdin before it execs the operation. Until that byte
 * arrives bubblewrap may still be setting up, and killed then it leaves its
 * sandbox running: its `--die-with-parent` is armed only part way through
 * (measured: 29 of 30 sandboxes outlived a kill 2 to 5 ms after the spawn).
 * So a kill asked for earlier waits for the byte, and then the helper is
 * killed instead of being let go: the operation never begins (a kill as it
 * began would leave a file emptied by the shell's `>`, or a directory made
 * while the call reports failure).
 *
 * @module
 */

import { RpcError, SandboxDeniedError } from "../errors.ts";
import { INTERNAL_ERROR, INVALID_PARAMS, NOT_FOUND } from "../rpc/error_codes.ts";
import { bwrapArgs, grantedWriteRoots, resolveGrantedProgram } from "./confinement.ts";
import { shownPath } from "./sandbox_policy.ts";
import { isInside } from "./_paths.ts";

/** The helper programs confined fs writes use, by the operation that needs them. */
export const CONFINED_FS_HELPERS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  write: ["bwrap", "sh", "cat"],
  mkdir: ["bwrap", "sh", "mkdir"],
  remove: ["bwrap", "sh", "rm"],
});

/** The most stderr kept from a helper, for the error message. */
const MAX_STDERR_BYTES = 4096;

/** The path failures reported the same way in the executor and by a sandboxed helper. */
export type PathErrorCode =
  | "ENOENT"
  | "ENOTDIR"
  | "EEXIST"
  | "ENOTEMPTY"
  | "ENAMETOOLONG"
  | "ELOOP";

/** The C library's text for each {@linkcode PathErrorCode} (helpers run with `LC_ALL=C`). */
const PATH_ERROR_TEXTS: Readonly<Record<string, PathErrorCode>> = {
  "No such file or directory": "ENOENT",
  "Directory nonexistent": "ENOENT", // dash, for a redirection into a missing directory
  "Not a directory": "ENOTDIR",
  "File exists": "EEXIST",
  "Directory not empty": "ENOTEMPTY",
  "File name too long": "ENAMETOOLONG",
  "Too many levels of symbolic links": "ELOOP",
};

/**
 * The JSON-RPC error for a path failure: a missing path or a file where a
 * directory is needed is -32004, a path the system cannot take (too long,
 * a symbolic link loop) or a non-empty directory removed without `recursive`
 * is -32602, an existing path is -32603.
 *
 * @param action The verb, e.g. `read`.
 * @param shown The path as the request gave it (shortened here).
 * @param code The failure.
 * @returns The error to throw.
 */
export function pathError(action: string, shown: string, code: PathErrorCode): RpcError {
  const cannot = `Cannot ${action} "${shownPath(shown)}"`;
  switch (code) {
    case "ENOENT":
      return new RpcError(NOT_FOUND, `${cannot}: it does not exist`);
    case "ENOTDIR":
      return new RpcError(
        NOT_FOUND,
        `${cannot}: it does not exist (it or a parent in the path is not a directory)`,
      );
    case "EEXIST":
      return new RpcError(INTERNAL_ERROR, `${cannot}: it already exists`);
    case "ENOTEMPTY": // only removing a directory (rmdir) fails so
      return new RpcError(
        INVALID_PARAMS,
        `${cannot}: it is a directory that is not empty; pass recursive: true to remove it ` +
          `with its content`,
      );
    case "ENAMETOOLONG":
      return new RpcError(
        INVALID_PARAMS,
        `${cannot}: the path is too long (a name or the whole path exceeds the system's limit)`,
      );
    case "ELOOP":
      return new RpcError(
        INVALID_PARAMS,
        `${cannot}: too many levels of symbolic links (or over 4096 lookups to resolve it)`,
      );
  }
}

/** Data for a confined write: bytes, or a stream that is consumed (and cancelled on failure). */
export type ConfinedData = Uint8Array | ReadableStream<Uint8Array>;

/** Granted helper paths (in the order of {@linkcode CONFINED_FS_HELPERS}) and the roots to bind. */
interface Prepared {
  paths: string[];
  roots: string[];
}

/**
 * How long a helper still at work when its request's connection closed may
 * go on before it is killed: a write in progress finishes (killed, `cat >`
 * would leave the file cut short), one blocked for good (a FIFO) does not stay.
 */
export const ABORT_GRACE_MS = 5_000;

/** Runs writing fs operations inside a bubblewrap sandbox limited to the write roots. */
export class ConfinedFs {
  #writeRoots: readonly string[];
  /** The kill of each helper at work now (see {@linkcode ConfinedFs.stopAll}). */
  #running = new Set<() => void>();

  /** Set by {@linkcode ConfinedFs.stopAll}: no helper is started from then on. */
  #stopped = false;

  /** Kills every helper still at work, and refuses to start more (the executor is closing). */
  stopAll(): void {
    this.#stopped = true;
    for (const kill of this.#running) kill();
  }

  /**
   * @param writeRoots The configured write roots (only those that exist and
   *   are write-granted are bound writable).
   */
  constructor(writeRoots: readonly string[] | undefined) {
    this.#writeRoots = writeRoots ?? [];
  }

  /**
   * Whether every helper is granted (bubblewrap itself is probed by the
   * capability detection, not here).
   *
   * @returns True when writes, directory creation and removal can all run confined.
   */
  async available(): Promise<boolean> {
    const names = new Set(Object.values(CONFINED_FS_HELPERS).flat());
    const found = await Promise.all([...names].map((name) => resolveGrantedProgram(name)));
    return found.every((path) => path !== null);
  }

  /**
   * Creates or replaces the file at `resolved` with `data`.
   *
   * @param action The verb for messages, e.g. `write`.
   * @param shown The path as the request gave it.
   * @param resolved The checked, resolved path.
   * @param data The content.
   * @param signal Kills the helper when it aborts (the request's connection closed).
   * @param createMode The permission bits a file the write creates may have
   *   (a copy passes its source's); its owner always gets read and write, and
   *   `cat` sets no execute bits. An existing file keeps its own. By default
   *   the executor's umask decides.
   * @throws {SandboxDeniedError} When a helper is not granted or the sandbox refuses the write.
   * @throws {RpcError} -32004 when a parent is missing, -32603 for other failures.
   */
  async writeFile(
    action: string,
    shown: string,
    resolved: string,
    data: ConfinedData,
    signal?: AbortSignal,
    createMode?: number,
  ): Promise<void> {
    let prepared: Prepared;
    try {
      prepared = await this.#prepare(action, shown, resolved, "write");
    } catch (error) {
      if (!(data instanceof Uint8Array)) await data.cancel().catch(() => {});
      throw error;
    }
    const { paths: [bwrap, sh, cat], roots } = prepared;
    // The shell's umask is what the file is created with, so a copy of a
    // private file stays private; its owner keeps read and write, since the
    // sandbox has no capabilities and could not write a read-only copy again.
    const umask = createMode === undefined
      ? ""
      : `umask ${(~(createMode | 0o600) & 0o777).toString(8)} && `;
    const command = [sh, "-c", `${HANDSHAKE} && ${umask}exec "$1" > "$2"`, "sh", cat, resolved];
    await this.#run(action, shown, bwrap, roots, command, signal, data);
  }

  /**
   * Creates a directory.
   *
   * @param shown The path as the request gave it.
   * @param resolved The checked, resolved path.
   * @param recursive Create missing parents and accept an existing directory.
   * @param signal Kills the helper when it aborts.
   * @throws {SandboxDeniedError} When a helper is not granted or the sandbox refuses it.
   * @throws {RpcError} -32004 when a parent is missing, -32603 for other failures.
   */
  async mkdir(
    shown: string,
    resolved: string,
    recursive: boolean,
    signal?: AbortSignal,
  ): Promise<void> {
    const action = "create directory";
    const { paths: [bwrap, sh, mkdir], roots } = await this.#prepare(
      action,
      shown,
      resolved,
      "mkdir",
    );
    const command = [sh, "-c", `${HANDSHAKE} && exec "$@"`, "sh", mkdir];
    command.push(...(recursive ? ["-p"] : []), "--", resolved);
    await this.#run(action, shown, bwrap, roots, command, signal);
  }

  /**
   * Removes a file, a symbolic link (not its target) or a directory.
   *
   * @param shown The path as the request gave it.
   * @param resolved The checked path (its final link not followed).
   * @param recursive Remove a directory with its content.
   * @param force Succeed when the path does not exist.
   * @param signal Kills the helper when it aborts.
   * @throws {SandboxDeniedError} When a helper is not granted or the sandbox refuses it.
   * @throws {RpcError} -32004 when the path is missing (and not `force`), -32602 for a non-empty
   *   directory without `recursive`, -32603 for other failures.
   */
  async remove(
    shown: string,
    resolved: string,
    recursive: boolean,
    force: boolean,
    signal?: AbortSignal,
  ): Promise<void> {
    const action = "remove";
    const { paths: [bwrap, sh, rm], roots } = await this.#prepare(
      action,
      shown,
      resolved,
      "remove",
    );
    const flags = (recursive ? "-r" : "-d") + (force ? "f" : "");
    const command = [sh, "-c", `${HANDSHAKE} && exec "$@"`, "sh", rm, flags, "--", resolved];
    await this.#run(action, shown, bwrap, roots, command, signal);
  }

  async #prepare(
    action: string,
    shown: string,
    resolved: string,
    operation: keyof typeof CONFINED_FS_HELPERS,
  ): Promise<Prepared> {
    const names = CONFINED_FS_HELPERS[operation];
    const paths = await Promise.all(names.map((name) => resolveGrantedProgram(name)));
    const missing = names.filter((_, i) => paths[i] === null);
    if (missing.length > 0) {
      throw new SandboxDeniedError(
        `Cannot ${action} "${shownPath(shown)}": the os confinement minimum runs fs writes in ` +
          `a sandbox, and run access to ${missing.map((name) => `"${name}"`).join(", ")} ` +
          `is not granted`,
      );
    }
    const roots = await grantedWriteRoots(this.#writeRoots);
    if (
      !roots.some((root) => isInside(resolved, root))
    ) {
      const where = resolved === shown ? "" : ` (it resolves to "${shownPath(resolved)}")`;
      throw new SandboxDeniedError(
        `Cannot ${action} "${shownPath(shown)}": under the os confinement minimum fs writes ` +
          `stay inside the existing write roots${where}`,
      );
    }
    return { paths: paths as string[], roots };
  }

  async #run(
    action: string,
    shown: string,
    bwrap: string,
    roots: readonly string[],
    command: string[],
    signal: AbortSignal | undefined,
    data?: ConfinedData,
  ): Promise<void> {
    const args = bwrapArgs({ writeRoots: roots, allowNetwork: false });
    // A fresh session: no controlling terminal of the executor is reachable.
    args.splice(args.length - 1, 0, "--new-session");
    if (this.#stopped) {
      // A call that was still preparing when the executor began to close:
      // no helper now (one killed as it starts could leave its sandbox).
      if (data !== undefined && !(data instanceof Uint8Array)) await data.cancel().catch(() => {});
      throw new RpcError(
        INTERNAL_ERROR,
        `Cannot ${action} "${shownPath(shown)}": the executor is closing`,
      );
    }
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(bwrap, {
        args: [...args, ...command],
        clearEnv: true,
        env: { LC_ALL: "C" },
        stdin: "piped", // the go-ahead, then the data
        stdout: "piped", // the handshake's byte
        stderr: "piped",
      }).spawn();
    } catch (error) {
      if (data !== undefined && !(data instanceof Uint8Array)) await data.cancel().catch(() => {});
      const detail = error instanceof Error ? error.message : String(error);
      throw new RpcError(
        INTERNAL_ERROR,
        `Cannot ${action} "${shownPath(shown)}": cannot start the sandbox: ${detail}`,
      );
    }
    // Killed, bubblewrap's --die-with-parent takes the sandbox along, once
    // the helper has started (module doc): a kill asked for before waits, and
    // the helper is then killed before it is let go.
    let started = false, killAsked = false, stoppedHere = false, letGo = false;
    /** Stops feeding a data stream (one that stalls would otherwise hold the call). */
    const feedStop = new AbortController();
    const killNow = (): void => {
      feedStop.abort();
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    };
    const kill = (): void => {
      killAsked = true;
      if (started) killNow();
    };
    const stop = (): void => {
      stoppedHere = true;
      kill();
    };
    const feeding = awaitStarted(child.stdout).then((byte): Promise<unknown> => {
      started = true;
      if (killAsked || !byte) {
        // Stopped before it began, or the sandbox failed before its command.
        if (killAsked) killNow();
        return refuse(child.stdin, data);
      }
      letGo = true;
      return feed(child.stdin, data, feedStop.signal);
    });
    // A helper can block for good (a FIFO swapped in for the file: `cat >`
    // waits for a reader): once nobody waits for the answer, it is given
    // ABORT_GRACE_MS to finish (a write cut short would leave the file
    // truncated), then it goes.
    let graceTimer: ReturnType<typeof setTimeout> | undefined;
    const killAfterGrace = (): void => {
      graceTimer = setTimeout(kill, ABORT_GRACE_MS);
    };
    signal?.addEventListener("abort", killAfterGrace, { once: true });
    this.#running.add(stop);
    if (signal?.aborted) killAfterGrace();
    let stderr: string, status: Deno.CommandStatus, fed: unknown;
    try {
      [stderr, status, fed] = await Promise.all([readCapped(child.stderr), child.status, feeding]);
    } finally {
      signal?.removeEventListener("abort", killAfterGrace);
      clearTimeout(graceTimer);
      this.#running.delete(stop);
    }
    signal?.throwIfAborted();
    if (stoppedHere && !status.success) {
      throw new RpcError(
        INTERNAL_ERROR,
        `Cannot ${action} "${shownPath(shown)}": the executor is closing`,
      );
    }
    if (!status.success) throw helperError(action, shown, stderr, status.code);
    if (!letGo) {
      // Nothing ran, whatever the status says (a wrapper that hides bubblewrap's failure).
      throw new RpcError(
        INTERNAL_ERROR,
        `Cannot ${action} "${shownPath(shown)}": the sandbox ended before the operation started`,
      );
    }
    if (fed !== null) {
      // The helper wrote what it got, but the data did not all arrive (a source read failed).
      const detail = fed instanceof Error ? fed.message : String(fed);
      throw new RpcError(INTERNAL_ERROR, `Cannot ${action} "${shownPath(shown)}": ${detail}`);
    }
  }
}

/**
 * What each helper's shell runs first, once its sandbox is set up: one byte
 * to stdout, then one line from stdin, the go-ahead (a shell reads a pipe a
 * byte at a time, so the data after it is left to the operation).
 */
const HANDSHAKE = "printf . && read -r go";

/** The go-ahead line. */
const GO = new Uint8Array([0x0a]);

/**
 * Whether the helper's byte arrived; false when the stream ended without it
 * (the sandbox failed before its command). The stream is closed after the
 * byte: the operations write nothing to stdout (`cat`'s goes to the file).
 */
async function awaitStarted(stdout: ReadableStream<Uint8Array>): Promise<boolean> {
  try {
    for await (const _ of stdout) return true;
  } catch {
    // A failed read: the helper's status tells what happened.
  }
  return false;
}

/**
 * Lets the helper go: the go-ahead, then the data. Returns the failure, if
 * any, for the caller to judge with the helper's status: a helper that exits
 * early breaks the pipe, a source that fails to read leaves the helper a
 * short input.
 */
async function feed(
  stdin: WritableStream<Uint8Array>,
  data: ConfinedData | undefined,
  signal: AbortSignal,
): Promise<unknown> {
  const writer = stdin.getWriter();
  try {
    await writer.write(GO);
    if (data instanceof Uint8Array) await writer.write(data);
    if (data === undefined || data instanceof Uint8Array) {
      await writer.close();
      return null;
    }
  } catch (error) {
    await writer.abort().catch(() => {});
    if (data !== undefined && !(data instanceof Uint8Array)) await data.cancel().catch(() => {});
    return error ?? new Error("the data did not reach the sandbox");
  }
  writer.releaseLock();
  try {
    await data.pipeTo(stdin, { signal });
    return null;
  } catch (error) {
    return error ?? new Error("the data did not reach the sandbox");
  }
}

/** Holds the helper back: no go-ahead, stdin closed, a data stream cancelled. */
async function refuse(stdin: WritableStream<Uint8Array>, data?: ConfinedData): Promise<null> {
  await stdin.close().catch(() => {});
  if (data !== undefined && !(data instanceof Uint8Array)) await data.cancel().catch(() => {});
  return null;
}

/** Reads a stream to its end, keeping its first bytes only. */
async function readCapped(stream: ReadableStream<Uint8Array>): Promise<string> {
  const kept = new Uint8Array(MAX_STDERR_BYTES);
  let length = 0;
  for await (const chunk of stream) {
    const n = Math.min(chunk.length, kept.length - length);
    kept.set(chunk.subarray(0, n), length);
    length += n;
  }
  return new TextDecoder().decode(kept.subarray(0, length));
}

/**
 * Maps a helper's failure to the error for the caller. The helpers run with
 * `LC_ALL=C`, so their messages end with the C library's error text.
 */
function helperError(action: string, shown: string, stderr: string, code: number): Error {
  const cannot = `Cannot ${action} "${shownPath(shown)}"`;
  const line = stderr.split("\n").map((l) => l.trim()).find((l) => l.length > 0);
  if (line === undefined) {
    return new RpcError(INTERNAL_ERROR, `${cannot}: the sandboxed helper exited with code ${code}`);
  }
  if (line.startsWith("bwrap:")) {
    return new RpcError(INTERNAL_ERROR, `${cannot}: the sandbox failed: ${shownPath(line)}`);
  }
  const reason = shownPath(line.slice(line.lastIndexOf(": ") + 2));
  if (reason === "Read-only file system") {
    return new SandboxDeniedError(
      `${cannot}: the os sandbox refused it, the path leads outside the writable roots: ${reason}`,
    );
  }
  if (reason === "Permission denied" || reason === "Operation not permitted") {
    return new SandboxDeniedError(`${cannot}: the os sandbox refused it: ${reason}`);
  }
  const known = PATH_ERROR_TEXTS[reason];
  if (known !== undefined) return pathError(action, shown, known);
  return new RpcError(INTERNAL_ERROR, `${cannot}: ${reason}`);
}
