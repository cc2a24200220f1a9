/**
 * The `fs/*` methods of the Codex exec-server, with upstream param and result
 * names, every path checked by the {@linkcode SandboxPolicy} first and acted
 * on in its resolved form.
 *
 * Under the `os` confinement minimum the writing methods (`fs/writeFile`,
 * `fs/createDirectory`, `fs/remove`, the destination side of `fs/copy`) run
 * inside a bubblewrap sandbox that binds only the write roots writable, so a
 * directory swapped for a symbolic link after the check cannot lead a write
 * outside them (Deno has no `openat`/`O_NOFOLLOW`). Below that minimum they
 * run in the executor itself and that race remains (see SECURITY_TESTS.md).
 *
 * Only regular files are read or written: opening a FIFO blocks until its
 * other end opens, holding one of Deno's blocking threads (shared by the fs
 * and process work of every session), and a device such as `/dev/zero` never
 * ends, so the other kinds are refused with -32602: by a stat first, for a
 * clear answer before anything is touched, and on the open file itself, which
 * is opened without waiting on a FIFO or a lease (see `lib/_regular_file.ts`).
 *
 * @module
 */

import { RpcError, SandboxDeniedError } from "../errors.ts";
import { DEFAULT_MAX_FILE_BYTES } from "../_limits.ts";
import { INTERNAL_ERROR, INVALID_PARAMS, NOT_FOUND, SANDBOX_DENIED } from "../rpc/error_codes.ts";
import {
  isTooLong,
  lexicalParts,
  MAX_PATH_BYTES,
  type SandboxPolicy,
  shownPath,
} from "./sandbox_policy.ts";
import type { Confinement } from "./confinement.ts";
import { isInside } from "./_paths.ts";
import {
  FileLeasedError,
  kindOf,
  LEASE_WAIT_MS,
  NotRegularFileError,
  openRegularFile,
} from "../_regular_file.ts";
import { copyAll, readableOf, writeAll } from "./_file_io.ts";
import { ConfinedFs, pathError, type PathErrorCode } from "./_confined_fs.ts";
import {
  absolutePath,
  base64Bytes,
  invalidParam,
  optionalBoolean,
  type Params,
  paramsObject,
  wellFormed,
} from "./_params.ts";

export { DEFAULT_MAX_FILE_BYTES };

/** The fs methods served by {@linkcode FsOps}. */
export const FS_METHODS: ReadonlySet<string> = new Set([
  "fs/readFile",
  "fs/writeFile",
  "fs/createDirectory",
  "fs/getMetadata",
  "fs/readDirectory",
  "fs/remove",
  "fs/copy",
  "fs/canonicalize",
  "fs/join",
  "fs/parent",
]);

/** Result of `fs/getMetadata`. */
export interface FileMetadata {
  isDirectory: boolean;
  isFile: boolean;
  isSymlink: boolean;
  size: number;
  createdAtMs: number;
  modifiedAtMs: number;
}

/** One entry of `fs/readDirectory`. */
export interface DirectoryEntry {
  fileName: string;
  isDirectory: boolean;
  isFile: boolean;
  isSymlink: boolean;
}

/** Options of {@linkcode FsOps}. */
export interface FsOpsOptions {
  /** The largest file `fs/readFile` returns. @default {DEFAULT_MAX_FILE_BYTES} */
  maxFileBytes?: number;
  /**
   * The executor's minimum confinement. At `os` the writing methods run inside
   * a bubblewrap sandbox limited to the policy's write roots (helpers `bwrap`,
   * `sh`, `cat`, `mkdir`, `rm` must be granted; without them those methods are
   * refused, never done unconfined).
   * @default {"none"}
   */
  minConfinement?: Confinement;
  /**
   * About the most a `fs/readDirectory` reply may take, in bytes (its JSON,
   * estimated): a larger listing is refused as soon as it passes this, not
   * after it was all read.
   * @default {DEFAULT_MAX_LISTING_BYTES}
   */
  maxListingBytes?: number;
}

/** The default bound of a directory listing: what fits a 16 MiB message. */
export const DEFAULT_MAX_LISTING_BYTES: number = 16 * 1024 * 1024 - 1024;

const utf8 = new TextEncoder();

/**
 * The most one entry adds to a `fs/readDirectory` reply besides its name's
 * JSON: `{"fileName":,"isDirectory":false,"isFile":false,"isSymlink":false},`
 * (a FIFO or device is none of the three).
 */
export const LISTING_ENTRY_BYTES = 67;

/** Directories the remove's pre-walk reads at once (each read waits on a blocking thread). */
const WALK_READS_AT_ONCE = 8;

/**
 * The first name of a listing that does not name its entry: Deno lists a
 * name that is not valid UTF-8 with U+FFFD in place of the bad bytes, so
 * that name leads nowhere, or to another entry (`x\xff` listed beside a real
 * `x\ufffd`). Such an entry cannot be walked, copied or removed by name.
 *
 * @param directory The directory listed.
 * @param entries What it listed.
 * @param which The entries that matter (all, by default).
 * @returns The first such name among them, or null.
 */
async function unnamableEntry(
  directory: string,
  entries: Deno.DirEntry[],
  which: (entry: Deno.DirEntry) => boolean = () => true,
): Promise<string | null> {
  // Duplicates among all the names: a directory listed as `t\ufffd` beside a
  // real file `t\ufffd` is as unnamable as one that leads nowhere.
  const counts = new Map<string, number>();
  for (const { name } of entries) {
    if (name.includes("\uFFFD")) counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  for (const entry of entries) {
    if (!counts.has(entry.name) || !which(entry)) continue;
    if (counts.get(entry.name)! > 1) return entry.name;
    const info = await Deno.lstat(`${directory}/${entry.name}`).catch(() => null);
    if (info === null || info.isDirectory !== entry.isDirectory) return entry.name;
  }
  return null;
}

/** Refuses a tree that holds an entry the fs methods cannot name (see `unnamableEntry`). */
function unnamableError(action: string, shown: string, name: string): RpcError {
  return new RpcError(
    INVALID_PARAMS,
    `Cannot ${action} "${shownPath(shown)}": it holds ${
      JSON.stringify(name)
    }, a name that is not valid UTF-8, which the fs methods cannot name; use a program (cp, rm)`,
  );
}

/**
 * Refuses a recursive remove of a tree whose paths grow past the 4,095 bytes
 * the system takes, before anything is removed: Deno's recursive remove
 * reaches deeper (relative to each directory) but recurses once per level on
 * a thread whose stack overflows past about 10,000 levels, which aborts the
 * whole executor; paths within the system's limit stay near 2,000 levels.
 * Walks directories only, never through a link (a link, even to a directory,
 * is removed as a link: nothing below it is read), {@linkcode
 * WALK_READS_AT_ONCE} at a time. (A program that deepens the tree meanwhile
 * could still crash an executor it could kill anyway: below `os` it runs as
 * the executor's user; at `os` the remove runs `rm`.)
 */
async function checkRemoveDepth(shown: string, root: string): Promise<void> {
  const info = await Deno.lstat(root).catch(() => null);
  if (info === null || !info.isDirectory) return; // a link, a file, or gone: the remove says
  const pending = [root];
  let tooDeep = false;
  let unnamable: string | null = null;
  const read = async (directory: string): Promise<void> => {
    try {
      const entries: Deno.DirEntry[] = [];
      for await (const entry of Deno.readDir(directory)) {
        entries.push(entry);
        if (entry.isDirectory) pending.push(`${directory}/${entry.name}`);
      }
      // A directory under a name that leads nowhere would go unwalked: its
      // depth unchecked, the remove could overflow the stack (it aborted the
      // executor). Files have no depth: the remove takes them by their bytes.
      unnamable ??= await unnamableEntry(directory, entries, (entry) => entry.isDirectory);
    } catch (error) {
      // Anything else, or the path itself too long: the remove says why.
      if (directory !== root && (error as { code?: string })?.code === "ENAMETOOLONG") {
        tooDeep = true;
      }
    }
  };
  // A pool: each finished read starts as many more as are pending, up to the width.
  await new Promise<void>((done) => {
    let active = 0;
    const fill = (): void => {
      while (!tooDeep && unnamable === null && active < WALK_READS_AT_ONCE && pending.length > 0) {
        active++;
        read(pending.pop()!).then(() => {
          active--;
          if (active === 0 && (tooDeep || unnamable !== null || pending.length === 0)) done();
          else fill();
        });
      }
    };
    fill();
  });
  if (unnamable !== null) throw unnamableError("remove", shown, unnamable);
  if (tooDeep) {
    throw new RpcError(
      INVALID_PARAMS,
      `Cannot remove "${shownPath(shown)}": paths in it pass the system's 4,095 bytes, ` +
        "deeper than fs/remove takes apart; remove it with a program (rm -r)",
    );
  }
}

/**
 * Runs a filesystem action, turning its failure into a JSON-RPC error whose
 * message names the action and path.
 */
async function io<T>(action: string, path: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw fsError(action, path, error);
  }
}

function fsError(action: string, path: string, error: unknown): unknown {
  if (error instanceof RpcError || error instanceof SandboxDeniedError) return error;
  if (error instanceof NotRegularFileError) return notRegularFile(action, path, error.kind);
  if (error instanceof FileLeasedError) {
    return new RpcError(
      INTERNAL_ERROR,
      `Cannot ${action} "${shownPath(path)}": another process holds a lease on it and did not ` +
        `let go within ${LEASE_WAIT_MS} ms; try again later`,
    );
  }
  if (error instanceof Deno.errors.NotCapable) {
    return new RpcError(
      SANDBOX_DENIED,
      `Cannot ${action} "${shownPath(path)}": access is not granted`,
    );
  }
  const code = pathErrorCode(error);
  if (code !== undefined) return pathError(action, path, code);
  // Deno's text is the C library's, then "(os error N)" and the (possibly huge) path, which
  // the message names already: keep the C text only. node:fs says "CODE: text, open 'path'",
  // its text in lower case: it is given the C library's capital.
  const text = error instanceof Error ? error.message : String(error);
  const nodeText = /^[A-Z0-9]+: (.*?), [a-z]+ '/s.exec(text)?.[1];
  const detail = /^(.*?) \(os error \d+\)/s.exec(text)?.[1] ??
    (nodeText === undefined ? text : nodeText.charAt(0).toUpperCase() + nodeText.slice(1));
  return new RpcError(
    INTERNAL_ERROR,
    `Cannot ${action} "${shownPath(path)}": ${shownPath(detail)}`,
  );
}

const NODE_PATH_ERROR_CODES: ReadonlySet<string> = new Set<PathErrorCode>([
  "ENOENT",
  "ENOTDIR",
  "EEXIST",
  "ELOOP",
  "ENAMETOOLONG",
  "ENOTEMPTY",
]);

function pathErrorCode(error: unknown): PathErrorCode | undefined {
  if (error instanceof Deno.errors.NotFound) return "ENOENT";
  if (error instanceof Deno.errors.NotADirectory) return "ENOTDIR";
  if (error instanceof Deno.errors.AlreadyExists) return "EEXIST";
  if (error instanceof Deno.errors.FilesystemLoop) return "ELOOP";
  // node:fs (see lib/_regular_file.ts) reports every failure by its code.
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && NODE_PATH_ERROR_CODES.has(code)
    ? code as PathErrorCode
    : undefined;
}

/** `fs/join`'s `path`: any string without NUL, empty included; absolute replaces the base. */
function relativePart(params: Params): string {
  const path = params.path;
  if (path === undefined) throw invalidParam("path", "is required");
  if (typeof path !== "string") throw invalidParam("path", "must be a string", path);
  if (path.includes("\0")) throw invalidParam("path", "must not contain NUL characters");
  return wellFormed("path", path);
}

/** Refuses a path the system would not take, as every fs method does. */
function withinPathLimit(name: string, path: string): string {
  if (isTooLong(path)) {
    throw invalidParam(name, `is longer than the system's ${MAX_PATH_BYTES} bytes`);
  }
  return path;
}

/** A path normalized as text, as Codex's `AbsolutePathBuf` does (see `lexicalParts`). */
function normalized(path: string): string {
  return "/" + lexicalParts(path).join("/");
}

/**
 * `fs/join` (some Codex versions): `path` appended to `basePath`, an
 * absolute `path` replacing it, normalized as text (see `normalized`).
 */
function joinPaths(basePath: string, path: string): { path: string } {
  return { path: normalized(path.startsWith("/") ? path : `${basePath}/${path}`) };
}

/**
 * `fs/parent` (some Codex versions): the normalized path without its last
 * component; `null` for `/`.
 */
function parentPath(path: string): string | null {
  const full = normalized(path);
  if (full === "/") return null;
  return full.slice(0, full.lastIndexOf("/")) || "/";
}

function notRegularFile(action: string, path: string, kind: string): RpcError {
  return new RpcError(
    INVALID_PARAMS,
    `Cannot ${action} "${shownPath(path)}": it is ${kind}, not a regular file ` +
      `(fs methods read and write regular files only)`,
  );
}

function notDirectory(action: string, path: string, info: Deno.FileInfo): RpcError {
  return new RpcError(
    INVALID_PARAMS,
    `Cannot ${action} "${shownPath(path)}": it is ${kindOf(info)}, not a directory`,
  );
}

/**
 * Refuses a path that is not a regular file, with a clear answer before
 * anything is opened or created; {@linkcode openRegularFile} checks again on
 * the file it opens, since the path can change in between.
 *
 * @param mayBeMissing A missing path passes (a write creates it).
 */
async function requireRegularFile(
  action: string,
  shown: string,
  resolved: string,
  mayBeMissing: boolean,
): Promise<void> {
  if (endsInSlash(shown)) {
    throw new RpcError(
      INVALID_PARAMS,
      `Cannot ${action} "${shownPath(shown)}": a path that ends in "/" names a directory, ` +
        "not a regular file",
    );
  }
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(resolved);
  } catch (error) {
    if (mayBeMissing && error instanceof Deno.errors.NotFound) return;
    throw fsError(action, shown, error);
  }
  if (!info.isFile) throw notRegularFile(action, shown, kindOf(info));
}

/** Whether a path ends in "/" after a name: the system reads it as a directory. */
function endsInSlash(path: string): boolean {
  return path.length > 1 && path.endsWith("/");
}

/**
 * The sandbox resolves a path without its trailing "/"; the system would
 * take "x/" to mean the directory x (ENOTDIR when x is a file or, where links
 * are not followed, a link). So does this, before acting on `resolved`.
 */
async function requireDirectoryForSlash(
  action: string,
  shown: string,
  resolved: string,
  follow: boolean,
): Promise<void> {
  if (!endsInSlash(shown)) return;
  const info = await (follow ? Deno.stat(resolved) : Deno.lstat(resolved)).catch(() => null);
  if (info !== null && !info.isDirectory) {
    // The system's ENOTDIR, said of what it is.
    const kind = info.isSymlink ? "a symbolic link" : kindOf(info);
    throw new RpcError(
      NOT_FOUND,
      `Cannot ${action} "${shownPath(shown)}": it ends in "/" but is ${kind}, not a directory`,
    );
  }
}

/**
 * Serves the `fs/*` methods for one executor.
 *
 * @example Read a file through the sandbox
 * ```ts
 * import { FsOps } from "./fs_ops.ts";
 * import { SandboxPolicy } from "./sandbox_policy.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "hi");
 * const fs = new FsOps(new SandboxPolicy());
 * const { dataBase64 } = await fs.call("fs/readFile", { path }) as { dataBase64: string };
 * console.log(atob(dataBase64)); // hi
 * await Deno.remove(path);
 * ```
 */
export class FsOps {
  #policy: SandboxPolicy;
  #maxFileBytes: number;
  #maxListingBytes: number;
  #confined: ConfinedFs | null;

  /**
   * Creates the handler.
   *
   * @param policy The sandbox policy every path is checked against.
   * @param options Limits.
   */
  constructor(policy: SandboxPolicy, options: FsOpsOptions = {}) {
    this.#policy = policy;
    this.#maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    this.#maxListingBytes = options.maxListingBytes ?? DEFAULT_MAX_LISTING_BYTES;
    this.#confined = options.minConfinement === "os" ? new ConfinedFs(policy.writeRoots) : null;
  }

  /**
   * Whether the writing methods run inside the `os` sandbox: the minimum
   * confinement is `os` and every helper they need is granted. (Under the `os`
   * minimum a method whose helper is missing is refused, not run unconfined.)
   *
   * @returns True when fs writes are confined.
   */
  async confinedWrites(): Promise<boolean> {
    return this.#confined !== null && await this.#confined.available();
  }

  /**
   * Kills the confined (`os`) helpers still at work, at once, without the
   * grace a closed connection gives them: for an executor that is closing.
   */
  stopHelpers(): void {
    this.#confined?.stopAll();
  }

  /**
   * Serves one fs method.
   *
   * @param method One of {@linkcode FS_METHODS}.
   * @param rawParams The request params.
   * @returns The method's result object.
   * @throws {RpcError} -32602 for bad params, a path too long, not a regular file where one is
   *   read or written, not a directory where one is listed, or a non-empty directory removed
   *   without `recursive`; -32004 for a missing path; -32603 for I/O failures.
   * @throws {SandboxDeniedError} When the sandbox refuses the path.
   */
  call(method: string, rawParams: unknown, signal?: AbortSignal): Promise<unknown> {
    try {
      return this.#call(method, rawParams, signal);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #call(method: string, rawParams: unknown, signal?: AbortSignal): Promise<unknown> {
    const params = paramsObject(rawParams);
    switch (method) {
      case "fs/readFile":
        return this.readFile(absolutePath(params, "path"), { signal });
      case "fs/writeFile":
        return this.writeFile(
          absolutePath(params, "path"),
          base64Bytes(params, "dataBase64"),
          signal,
        );
      case "fs/createDirectory":
        return this.createDirectory(
          absolutePath(params, "path"),
          optionalBoolean(params, "recursive", true),
          signal,
        );
      case "fs/getMetadata":
        return this.getMetadata(absolutePath(params, "path"));
      case "fs/readDirectory":
        return this.readDirectory(absolutePath(params, "path"));
      case "fs/remove":
        return this.remove(
          absolutePath(params, "path"),
          optionalBoolean(params, "recursive", true),
          optionalBoolean(params, "force", true),
          signal,
        );
      case "fs/copy":
        return this.copy(
          absolutePath(params, "sourcePath"),
          absolutePath(params, "destinationPath"),
          optionalBoolean(params, "recursive", false),
          signal,
        );
      case "fs/canonicalize":
        return this.canonicalize(absolutePath(params, "path"));
      case "fs/join": {
        const joined = joinPaths(
          withinPathLimit("basePath", absolutePath(params, "basePath")),
          withinPathLimit("path", relativePart(params)),
        );
        if (isTooLong(joined.path)) {
          throw new RpcError(
            INVALID_PARAMS,
            `Cannot join paths: the result is longer than the system's ${MAX_PATH_BYTES} bytes`,
          );
        }
        return Promise.resolve(joined);
      }
      case "fs/parent":
        return Promise.resolve({
          path: parentPath(withinPathLimit("path", absolutePath(params, "path"))),
        });
    }
    return Promise.reject(new TypeError(`Cannot serve "${method}": not an fs method`));
  }

  /**
   * `fs/readFile`: reads a whole file.
   *
   * @param path Absolute path.
   * @param options `limit`: a smaller size limit for this read (e.g. what fits
   *   the caller's connection) and why it applies, for the refusal; `signal`
   *   ends a wait for another process's lease on the file.
   * @returns `{dataBase64}`.
   */
  async readFile(
    path: string,
    { limit, signal }: { limit?: { maxBytes: number; why: string }; signal?: AbortSignal } = {},
  ): Promise<{ dataBase64: string }> {
    const tooLarge = (size: number) => this.#tooLarge(path, size, limit);
    const resolved = await this.#checkRead("read", path);
    await requireRegularFile("read", path, resolved, false);
    const data = await io("read", path, async () => {
      const { handle, size } = await openRegularFile(resolved, "read", { signal });
      try {
        const max = Math.min(this.#maxFileBytes, limit?.maxBytes ?? Infinity);
        if (size > max) throw tooLarge(size);
        let buffer = new Uint8Array(size + 1); // one spare byte detects growth
        let length = 0;
        while (true) {
          if (length === buffer.length) {
            if (length > max) throw tooLarge(length);
            const grown = new Uint8Array(Math.min(length * 2, max + 1));
            grown.set(buffer);
            buffer = grown;
          }
          const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
          if (bytesRead === 0) break;
          length += bytesRead;
        }
        return buffer.subarray(0, length);
      } finally {
        await handle.close();
      }
    });
    return { dataBase64: data.toBase64() };
  }

  /**
   * `fs/writeFile`: creates or replaces a file.
   *
   * @param path Absolute path.
   * @param data The content.
   * @param signal Stops a confined helper (`os`) still at work, or a wait for
   *   a lease, when it aborts.
   * @returns `{}`.
   */
  async writeFile(
    path: string,
    data: Uint8Array,
    signal?: AbortSignal,
  ): Promise<Record<string, never>> {
    const resolved = await this.#checkWrite("write", path);
    await requireRegularFile("write", path, resolved, true);
    await this.#write("write", path, resolved, data, signal);
    return {};
  }

  /**
   * `fs/createDirectory`.
   *
   * @param path Absolute path.
   * @param recursive Create missing parents (and accept an existing directory).
   * @param signal Stops a confined helper (`os`) still at work when it aborts.
   * @returns `{}`.
   */
  async createDirectory(
    path: string,
    recursive: boolean,
    signal?: AbortSignal,
  ): Promise<Record<string, never>> {
    const resolved = await this.#checkWrite("create directory", path);
    await this.#mkdir(path, resolved, recursive, signal);
    return {};
  }

  /**
   * `fs/getMetadata`: about the path itself (`isSymlink`), and about the
   * link's target for the other fields when the target may be read.
   *
   * @param path Absolute path.
   * @returns The metadata.
   */
  async getMetadata(path: string): Promise<FileMetadata> {
    const own = await this.#checkRead("inspect", path, false);
    await requireDirectoryForSlash("inspect", path, own, true);
    let info = await io("inspect", path, () => Deno.lstat(own));
    const isSymlink = info.isSymlink;
    if (isSymlink) {
      try {
        const target = await this.#policy.checkRead(path, { action: "inspect" });
        info = await Deno.stat(target);
      } catch (error) {
        if (!(error instanceof SandboxDeniedError) && !(error instanceof Deno.errors.NotFound)) {
          throw fsError("inspect", path, error);
        }
        // A dangling or unreadable target: describe the link itself.
      }
    }
    return {
      isDirectory: info.isDirectory,
      isFile: info.isFile,
      isSymlink,
      size: info.size,
      createdAtMs: info.birthtime?.getTime() ?? 0,
      modifiedAtMs: info.mtime?.getTime() ?? 0,
    };
  }

  /**
   * `fs/readDirectory`: entries sorted by name.
   *
   * @param path Absolute path of a directory (anything else is refused with -32602).
   * @returns `{entries}`.
   */
  async readDirectory(
    path: string,
    limit?: { maxBytes: number; why: string },
  ): Promise<{ entries: DirectoryEntry[] }> {
    const resolved = await this.#checkRead("list", path);
    const own = limit === undefined || limit.maxBytes >= this.#maxListingBytes;
    const maxBytes = own ? this.#maxListingBytes : limit.maxBytes;
    const entries = await io("list", path, async () => {
      const list: DirectoryEntry[] = [];
      let bytes = 0;
      try {
        for await (const entry of Deno.readDir(resolved)) {
          bytes += utf8.encode(JSON.stringify(entry.name)).length + LISTING_ENTRY_BYTES;
          if (bytes > maxBytes) {
            throw new RpcError(
              INVALID_PARAMS,
              `Cannot list "${shownPath(path)}": it holds more entries than one reply carries ` +
                `(over ${maxBytes} bytes after ${list.length}${own ? "" : ` ${limit.why}`}); ` +
                "list it in parts with a program (ls, find)",
            );
          }
          list.push({
            fileName: entry.name,
            isDirectory: entry.isDirectory,
            isFile: entry.isFile,
            isSymlink: entry.isSymlink,
          });
        }
      } catch (error) {
        if (error instanceof Deno.errors.NotADirectory) {
          // When the path itself exists, it is what is not a directory (not a parent: -32004).
          const info = await Deno.stat(resolved).catch(() => null);
          if (info !== null && !info.isDirectory) throw notDirectory("list", path, info);
        }
        throw error;
      }
      return list;
    });
    entries.sort((a, b) => (a.fileName < b.fileName ? -1 : a.fileName > b.fileName ? 1 : 0));
    return { entries };
  }

  /**
   * `fs/remove`: removes a file, a symbolic link (not its target) or a directory.
   *
   * @param path Absolute path.
   * @param recursive Remove a non-empty directory with its content.
   * @param force Succeed when the path does not exist.
   * @param signal Stops a confined helper (`os`) still at work when it aborts.
   * @returns `{}`.
   */
  async remove(
    path: string,
    recursive: boolean,
    force: boolean,
    signal?: AbortSignal,
  ): Promise<Record<string, never>> {
    const resolved = await this.#checkWrite("remove", path, false);
    if (/\/\.\.?\/*$/.test(path)) {
      // After the grant check, so a path outside it is refused as such. The
      // system refuses too (rmdir: EINVAL), and so does `rm`; read as the
      // directory it names, "a/sub/.." would remove "a", "link/." the link.
      throw new RpcError(
        INVALID_PARAMS,
        `Cannot remove "${shownPath(path)}": a path that ends in "." or ".." cannot be removed ` +
          "(as with rm); give the directory's own path",
      );
    }
    await requireDirectoryForSlash("remove", path, resolved, false);
    if (this.#confined) {
      const root = this.#policy.writeRoots?.find((root) => isInside(root, resolved));
      if (root !== undefined) {
        // Bound into the sandbox as a mount point: `rm -r` would empty it, then fail.
        throw new RpcError(
          INVALID_PARAMS,
          `Cannot remove "${shownPath(path)}": ${
            root === resolved
              ? "it is a write root"
              : `it holds the write root "${shownPath(root)}"`
          }, which the os sandbox binds as a whole; remove what is inside it`,
        );
      }
      // The helper's message on a huge path is cut short: let the OS judge the path here first.
      await Deno.lstat(resolved).catch((error) => {
        const missing = error instanceof Deno.errors.NotFound;
        if (!missing && !(error instanceof Deno.errors.NotCapable)) {
          throw fsError("remove", path, error);
        }
      });
      await this.#confined.remove(path, resolved, recursive, force, signal);
      return {};
    }
    if (recursive) await checkRemoveDepth(path, resolved);
    try {
      await Deno.remove(resolved, { recursive });
    } catch (error) {
      if (!(force && error instanceof Deno.errors.NotFound)) throw fsError("remove", path, error);
    }
    return {};
  }

  /**
   * `fs/copy`: copies a file, or a directory tree when `recursive`.
   * Symbolic links inside a copied tree are refused (never followed).
   *
   * @param sourcePath Absolute source path.
   * @param destinationPath Absolute destination path.
   * @param recursive Copy a directory with its content.
   * @param signal Stops a confined helper (`os`) still at work, or a wait for
   *   a lease, when it aborts.
   * @returns `{}`.
   */
  async copy(
    sourcePath: string,
    destinationPath: string,
    recursive: boolean,
    signal?: AbortSignal,
  ): Promise<Record<string, never>> {
    const source = await this.#checkRead("copy", sourcePath);
    const destination = await this.#checkWrite("copy to", destinationPath);
    const info = await io("copy", sourcePath, () => Deno.stat(source));
    if (!info.isDirectory) {
      await this.#copyFile(sourcePath, source, destinationPath, destination, signal);
      return {};
    }
    if (!recursive) {
      throw invalidParam(
        "recursive",
        `must be true to copy the directory "${shownPath(sourcePath)}"`,
      );
    }
    if (isInside(destination, source)) {
      throw new RpcError(
        INVALID_PARAMS,
        `Cannot copy "${shownPath(sourcePath)}": the destination "${
          shownPath(destinationPath)
        }" is inside it`,
      );
    }
    await this.#copyTree(source, destination, destinationPath, signal);
    return {};
  }

  async #copyTree(
    source: string,
    destination: string,
    shown: string,
    signal?: AbortSignal,
  ): Promise<void> {
    // Each destination is checked again: an existing tree may hold links that lead elsewhere.
    const target = await this.#checkWrite("copy to", destination);
    await this.#mkdir(shown, target, true, signal);
    const entries: Deno.DirEntry[] = [];
    await io("list", source, async () => {
      for await (const entry of Deno.readDir(source)) entries.push(entry);
    });
    // Else such files were copied under another file's name, or not at all, and reported done.
    const unnamable = await unnamableEntry(source, entries);
    if (unnamable !== null) throw unnamableError("copy", source, unnamable);
    for (const entry of entries) {
      const from = `${source}/${entry.name}`;
      const to = `${target}/${entry.name}`;
      if (entry.isSymlink) {
        throw new RpcError(
          INTERNAL_ERROR,
          `Cannot copy "${shownPath(from)}": symbolic links inside a directory are not copied`,
        );
      }
      if (entry.isDirectory) {
        signal?.throwIfAborted();
        await this.#copyTree(from, to, `${shown}/${entry.name}`, signal);
      } else {
        const checked = await this.#checkWrite("copy to", to);
        signal?.throwIfAborted();
        await this.#copyFile(from, from, `${shown}/${entry.name}`, checked, signal);
      }
    }
  }

  /**
   * `fs/canonicalize`: the real path (the path must exist).
   *
   * @param path Absolute path.
   * @returns `{path}`.
   */
  async canonicalize(path: string): Promise<{ path: string }> {
    const resolved = await this.#checkRead("canonicalize", path);
    await requireDirectoryForSlash("canonicalize", path, resolved, true);
    return { path: await io("canonicalize", path, () => Deno.realPath(resolved)) };
  }

  /** The policy's read check, its lookup failures mapped like the action's own. */
  #checkRead(action: string, path: string, followFinal = true): Promise<string> {
    return io(action, path, () => this.#policy.checkRead(path, { action, followFinal }));
  }

  /** The policy's write check, its lookup failures mapped like the action's own. */
  #checkWrite(action: string, path: string, followFinal = true): Promise<string> {
    return io(action, path, () => this.#policy.checkWrite(path, { action, followFinal }));
  }

  #write(
    action: string,
    shown: string,
    resolved: string,
    data: Uint8Array,
    signal?: AbortSignal,
  ): Promise<void> {
    if (this.#confined) return this.#confined.writeFile(action, shown, resolved, data, signal);
    return io(action, shown, async () => {
      const { handle } = await openRegularFile(resolved, "write", { signal });
      try {
        await writeAll(handle, data);
      } finally {
        await handle.close();
      }
    });
  }

  #mkdir(shown: string, resolved: string, recursive: boolean, signal?: AbortSignal): Promise<void> {
    if (this.#confined) return this.#confined.mkdir(shown, resolved, recursive, signal);
    return io("create directory", shown, () => Deno.mkdir(resolved, { recursive }));
  }

  /** Copies one file; confined, the source is read here and streamed into the sandbox. */
  async #copyFile(
    sourceShown: string,
    source: string,
    destinationShown: string,
    destination: string,
    signal?: AbortSignal,
  ): Promise<void> {
    await requireRegularFile("copy", sourceShown, source, false);
    await requireRegularFile("copy to", destinationShown, destination, true);
    const [sourceInfo, destinationInfo] = await Promise.all([
      Deno.stat(source).catch(() => null),
      Deno.stat(destination).catch(() => null),
    ]);
    if (
      sourceInfo !== null && destinationInfo !== null &&
      sourceInfo.dev === destinationInfo.dev && sourceInfo.ino === destinationInfo.ino
    ) {
      // Copying would truncate the source before reading it (the confined
      // copy streams it into `cat > destination`).
      throw new RpcError(
        INVALID_PARAMS,
        `Cannot copy "${shownPath(sourceShown)}" to "${shownPath(destinationShown)}": ` +
          "they are the same file",
      );
    }
    const from = await io("copy", sourceShown, () => openRegularFile(source, "read", { signal }));
    if (this.#confined) {
      const data = readableOf(from.handle); // it closes the source
      await this.#confined.writeFile(
        "copy to",
        destinationShown,
        destination,
        data,
        signal,
        from.permissions,
      );
      return;
    }
    try {
      // Created with the source's permission bits, so a private file's copy is never readable
      // by others, not even before the chmod.
      const to = await io(
        "copy to",
        destinationShown,
        () => openRegularFile(destination, "write", { createMode: from.permissions, signal }),
      );
      try {
        await io("copy to", destinationShown, async () => {
          // An existing destination takes them too, as Deno.copyFile did, but no set-id or
          // sticky bits: a copy made by the executor is not a privileged program.
          await to.handle.chmod(from.permissions);
          await copyAll(from.handle, to.handle);
        });
      } finally {
        await to.handle.close();
      }
    } finally {
      await from.handle.close();
    }
  }

  #tooLarge(path: string, size: number, limit?: { maxBytes: number; why: string }): RpcError {
    const own = limit === undefined || limit.maxBytes >= this.#maxFileBytes;
    const max = own ? this.#maxFileBytes : limit.maxBytes;
    return new RpcError(
      INVALID_PARAMS,
      `Cannot read "${shownPath(path)}": its ${size} bytes exceed the ${max} byte limit of ` +
        `fs/readFile${own ? "" : ` ${limit.why}`}`,
    );
  }
}
