/**
 * {@linkcode RemoteFs}: file helpers on the executor's machine over the
 * `fs/*` JSON-RPC methods, shaped like the matching `Deno.*` calls. Paths are
 * absolute paths on the executor.
 *
 * @module
 */

import { DEFAULT_MAX_MESSAGE_BYTES, type RequestOptions } from "../rpc/json_rpc_peer.ts";
import { DEFAULT_MAX_FILE_BYTES } from "../_limits.ts";

/**
 * What every {@linkcode RemoteFs} call takes besides its own options: a
 * signal that abandons the call, and a timeout. Without them a call waits as
 * long as the connection lives (through a rendezvous, a frozen executor is
 * noticed only after the idle check and the detach window). Besides the
 * errors each call lists, every call rejects with a `DOMException`
 * `TimeoutError` when the timeout passes, with the signal's reason
 * (`AbortError`) when it aborts, and with `RelayClosedError` when the
 * connection closes first.
 */
export type FsCallOptions = RequestOptions;

/** What {@linkcode RemoteFs} needs from its connection. */
export interface FsTransport {
  /** Sends one JSON-RPC request; `options` may abandon it or time it out. */
  request<T = unknown>(method: string, params?: unknown, options?: FsCallOptions): Promise<T>;
}

/**
 * Metadata of a path, from {@linkcode RemoteFs.stat}. As Codex's
 * `fs/getMetadata`: `isSymlink` is about the path itself, the other fields
 * about a link's target when it exists and may be read (so a link to a file
 * has `isFile` and `isSymlink` both true, which neither `Deno.stat` nor
 * `Deno.lstat` reports), else about the link.
 */
export interface RemoteFileInfo {
  /** True for a directory (a link's target, followed). */
  isDirectory: boolean;
  /** True for a regular file (a link's target, followed). */
  isFile: boolean;
  /** True when the path itself is a symbolic link. */
  isSymlink: boolean;
  /** Size in bytes, when the executor reports it. */
  size?: number;
  /** Creation time in ms since the epoch, when known. */
  createdAtMs?: number;
  /** Modification time in ms since the epoch, when known. */
  modifiedAtMs?: number;
}

/** One entry of {@linkcode RemoteFs.readDir}. */
export interface RemoteDirEntry {
  /** The entry's name. */
  fileName: string;
  /** True for a directory. */
  isDirectory: boolean;
  /** True for a regular file. */
  isFile: boolean;
  /** True for a symbolic link (the entry itself, not followed). */
  isSymlink: boolean;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function decodeBase64(text: string): Uint8Array {
  return (Uint8Array as unknown as { fromBase64(s: string): Uint8Array }).fromBase64(text);
}

function encodeBase64(bytes: Uint8Array): string {
  return (bytes as unknown as { toBase64(): string }).toBase64();
}

/**
 * File operations on the executor, each one `fs/*` request. Errors are
 * `RpcError`s from the executor (`-32003` when its sandbox denies the path,
 * `-32004` when the path does not exist).
 *
 * @example
 * ```ts
 * import { connect, serveLocal } from "@outpost/exec";
 * await using server = await serveLocal();
 * await using conn = await connect(server.url);
 * // Paths are the executor's, absolute, and within what its sandbox grants.
 * const dir = await Deno.makeTempDir();
 * await conn.fs.writeTextFile(`${dir}/hello.txt`, "hi");
 * console.log(await conn.fs.readTextFile(`${dir}/hello.txt`)); // hi
 * await conn.fs.remove(dir, { recursive: true });
 * ```
 */
export class RemoteFs {
  #transport: FsTransport;

  /**
   * Creates the helpers; use `connection.fs`.
   *
   * @param transport The connection.
   */
  constructor(transport: FsTransport) {
    this.#transport = transport;
  }

  #call<T>(method: string, params: unknown, options: FsCallOptions | undefined): Promise<T> {
    // Only the call's own options: a method's flags (recursive, force) stay in its params.
    const call: FsCallOptions = {};
    if (options?.signal !== undefined) call.signal = options.signal;
    if (options?.timeoutMs !== undefined) call.timeoutMs = options.timeoutMs;
    return this.#transport.request<T>(method, params, call);
  }

  /**
   * Reads a whole file.
   *
   * @param path Absolute path on the executor.
   * @param options A signal and a timeout for the call.
   * @returns The bytes.
   * @throws {RpcError} When the executor refuses or the file is missing.
   */
  async readFile(path: string, options?: FsCallOptions): Promise<Uint8Array> {
    const result = await this.#call<{ dataBase64: string }>("fs/readFile", { path }, options);
    return decodeBase64(result.dataBase64);
  }

  /**
   * Reads a whole file as UTF-8 text.
   *
   * @param path Absolute path on the executor.
   * @param options A signal and a timeout for the call.
   * @returns The text.
   * @throws {RpcError} When the executor refuses or the file is missing.
   */
  async readTextFile(path: string, options?: FsCallOptions): Promise<string> {
    return decoder.decode(await this.readFile(path, options));
  }

  /**
   * Writes a whole file, replacing it.
   *
   * @param path Absolute path on the executor.
   * @param data The bytes: at most {@linkcode DEFAULT_MAX_FILE_BYTES} (about
   *   12 MiB, what `readFile` returns), since they travel as base64 in one
   *   message of at most 16 MiB.
   * @param options A signal and a timeout for the call.
   * @returns When written.
   * @throws {RpcError} When the executor refuses.
   * @throws {RangeError} When the data does not fit one message.
   * @throws {TypeError} When `data` is not a `Uint8Array` (text goes through `writeTextFile`).
   */
  async writeFile(path: string, data: Uint8Array, options?: FsCallOptions): Promise<void> {
    if (!(data instanceof Uint8Array)) {
      throw new TypeError(
        `Cannot write ${
          JSON.stringify(path)
        }: the data must be a Uint8Array (text: use writeTextFile)`,
      );
    }
    // Checked here, not left to the peer's limit, so that only this case gets this advice;
    // no larger than fs/readFile returns, so what is written can be read back.
    const tooLarge = (): RangeError =>
      new RangeError(
        `Cannot write ${JSON.stringify(path)}: ${data.byteLength} bytes do not fit one ` +
          `fs/writeFile message (base64 in at most 16 MiB: at most ${DEFAULT_MAX_FILE_BYTES} ` +
          `bytes of data, what fs/readFile returns); write it through a program's stdin ` +
          `instead (e.g. cat > FILE)`,
      );
    if (data.byteLength > DEFAULT_MAX_FILE_BYTES) throw tooLarge();
    const dataBase64 = encodeBase64(data);
    const envelope = encoder.encode(JSON.stringify({
      jsonrpc: "2.0",
      id: Number.MAX_SAFE_INTEGER,
      method: "fs/writeFile",
      params: { path, dataBase64: "" },
    })).length;
    if (envelope + dataBase64.length > DEFAULT_MAX_MESSAGE_BYTES) throw tooLarge();
    await this.#call("fs/writeFile", { path, dataBase64 }, options);
  }

  /**
   * Writes a whole file as UTF-8 text.
   *
   * @param path Absolute path on the executor.
   * @param text The text.
   * @param options A signal and a timeout for the call.
   * @returns When written.
   * @throws {RpcError} When the executor refuses.
   */
  writeTextFile(path: string, text: string, options?: FsCallOptions): Promise<void> {
    return this.writeFile(path, encoder.encode(text), options);
  }

  /**
   * Creates a directory.
   *
   * @param path Absolute path on the executor.
   * @param options `recursive` creates missing parents; a signal and a timeout for the call.
   *   @default {{ recursive: false }}
   * @returns When created.
   * @throws {RpcError} When the executor refuses.
   */
  async mkdir(
    path: string,
    options: { recursive?: boolean } & FsCallOptions = {},
  ): Promise<void> {
    await this.#call(
      "fs/createDirectory",
      { path, recursive: options.recursive ?? false },
      options,
    );
  }

  /**
   * Reads a path's metadata: a link's target's, with `isSymlink` for the
   * path itself (see {@linkcode RemoteFileInfo}).
   *
   * @param path Absolute path on the executor.
   * @param options A signal and a timeout for the call.
   * @returns The metadata.
   * @throws {RpcError} When the executor refuses or the path is missing.
   */
  stat(path: string, options?: FsCallOptions): Promise<RemoteFileInfo> {
    return this.#call<RemoteFileInfo>("fs/getMetadata", { path }, options);
  }

  /**
   * Lists a directory.
   *
   * @param path Absolute path on the executor.
   * @param options A signal and a timeout for the call.
   * @returns The entries.
   * @throws {RpcError} When the executor refuses or the path is missing.
   */
  async readDir(path: string, options?: FsCallOptions): Promise<RemoteDirEntry[]> {
    const result = await this.#call<{ entries: RemoteDirEntry[] }>(
      "fs/readDirectory",
      { path },
      options,
    );
    return result.entries;
  }

  /**
   * Removes a file or directory.
   *
   * @param path Absolute path on the executor.
   * @param options `recursive` removes a non-empty directory; `force` ignores a missing path;
   *   a signal and a timeout for the call.
   * @returns When removed.
   * @throws {RpcError} When the executor refuses or the path is missing (without `force`).
   */
  async remove(
    path: string,
    options: { recursive?: boolean; force?: boolean } & FsCallOptions = {},
  ): Promise<void> {
    await this.#call("fs/remove", {
      path,
      recursive: options.recursive ?? false,
      force: options.force ?? false,
    }, options);
  }

  /**
   * Copies a file or directory.
   *
   * @param from Absolute source path on the executor.
   * @param to Absolute destination path on the executor.
   * @param options `recursive` copies a directory tree; a signal and a timeout for the call.
   *   @default {{ recursive: false }}
   * @returns When copied.
   * @throws {RpcError} When the executor refuses.
   */
  async copy(
    from: string,
    to: string,
    options: { recursive?: boolean } & FsCallOptions = {},
  ): Promise<void> {
    await this.#call("fs/copy", {
      sourcePath: from,
      destinationPath: to,
      recursive: options.recursive ?? false,
    }, options);
  }

  /**
   * Resolves a path to its canonical absolute form.
   *
   * @param path Absolute path on the executor.
   * @param options A signal and a timeout for the call.
   * @returns The canonical path.
   * @throws {RpcError} When the executor refuses or the path is missing.
   */
  async realPath(path: string, options?: FsCallOptions): Promise<string> {
    const result = await this.#call<{ path: string }>("fs/canonicalize", { path }, options);
    return result.path;
  }
}
