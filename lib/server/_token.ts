/**
 * Bearer tokens: parsing the `Authorization` header, constant-time
 * comparison, and loading a token from `OUTPOST_TOKEN` or a token file.
 * Tokens are never logged and never part of an error message.
 *
 * @module
 */

import {
  FileLeasedError,
  NotRegularFileError,
  openRegularFile,
  type RegularFile,
} from "../_regular_file.ts";

/** The environment variable a token is read from when no token file is given. */
export const TOKEN_ENV_VAR = "OUTPOST_TOKEN";
/** Longest token accepted, in bytes. */
export const MAX_TOKEN_BYTES = 4096;
/** Shortest token accepted, in bytes (a guessable token is a mistake). */
export const MIN_TOKEN_BYTES = 16;
/**
 * Longest token file read, in bytes: the longest token plus a UTF-8 byte
 * order mark and a CRLF, as an editor may save it. A longer file is refused
 * before it is read whole (a 1 GiB file, `/dev/zero` through a symlink).
 */
export const MAX_TOKEN_FILE_BYTES = MAX_TOKEN_BYTES + 5;

/** Visible ASCII without spaces: what can ride in an `Authorization` header unchanged. */
const TOKEN_CHARS = /^[\x21-\x7e]+$/;
const BEARER = /^Bearer[ \t]+([^ \t]+)[ \t]*$/i;
const utf8 = new TextEncoder();

/**
 * Checks that a token is usable: 16..4096 visible ASCII characters.
 *
 * @param token The token.
 * @param source Where the token came from, for the error message (never the token itself).
 * @returns The token, unchanged.
 * @throws {TypeError} When the token is too short, too long or has other characters.
 */
export function validateToken(token: string, source = "token"): string {
  if (typeof token !== "string" || token.length === 0) {
    throw new TypeError(`Cannot use ${source}: it is empty`);
  }
  if (token.length > MAX_TOKEN_BYTES) {
    throw new TypeError(
      `Cannot use ${source}: length ${token.length} exceeds the ${MAX_TOKEN_BYTES} byte limit`,
    );
  }
  if (!TOKEN_CHARS.test(token)) {
    throw new TypeError(
      `Cannot use ${source}: only visible ASCII characters without spaces are allowed`,
    );
  }
  if (token.length < MIN_TOKEN_BYTES) {
    throw new TypeError(
      `Cannot use ${source}: length ${token.length} is below the ${MIN_TOKEN_BYTES} byte minimum`,
    );
  }
  return token;
}

/**
 * Extracts the token of an `Authorization: Bearer <token>` header.
 *
 * @param header The header value, or null when absent.
 * @returns The token, or undefined when the header is absent or not a bearer credential.
 */
export function parseBearer(header: string | null | undefined): string | undefined {
  if (!header) return undefined;
  const match = BEARER.exec(header);
  return match?.[1];
}

/**
 * Compares a presented token with the expected one in time that depends only
 * on the expected token's length, so a peer cannot learn the token byte by
 * byte from response times.
 *
 * @param presented What the peer sent.
 * @param expected The configured token.
 * @returns True when both are identical.
 */
export function tokensEqual(presented: string, expected: string): boolean {
  const a = utf8.encode(presented);
  const b = utf8.encode(expected);
  let diff = a.length ^ b.length;
  const n = b.length;
  const m = a.length === 0 ? 1 : a.length;
  for (let i = 0; i < n; i++) diff |= (a[i % m] ?? 0) ^ b[i];
  return diff === 0;
}

/**
 * Checks an `Authorization` header against the expected token.
 *
 * @param header The header value, or null when absent.
 * @param expected The configured token.
 * @returns "ok", "missing" (no bearer credential) or "wrong".
 */
export function checkBearer(
  header: string | null | undefined,
  expected: string,
): "ok" | "missing" | "wrong" {
  const presented = parseBearer(header);
  if (presented === undefined) return "missing";
  return tokensEqual(presented, expected) ? "ok" : "wrong";
}

/** Options of {@linkcode readToken}. */
export interface ReadTokenOptions {
  /** Read the token from this file (surrounding whitespace is trimmed) instead of the environment. */
  tokenFile?: string;
  /**
   * The environment variable to read when no file is given.
   * @default {"OUTPOST_TOKEN"}
   */
  envVar?: string;
  /** Throw when no token is configured, instead of returning undefined. */
  required?: boolean;
}

/**
 * Loads the token from a token file when one is given, else from
 * `OUTPOST_TOKEN`. Tokens never come from command-line flags, which other
 * users of the machine can read.
 *
 * @example Read the token of a rendezvous
 * ```ts ignore
 * import { readToken } from "./_token.ts";
 * const token = await readToken({ required: true });
 * ```
 *
 * @param options The token file, the variable name, and whether a token is required.
 * @returns The token, or undefined when none is configured and none is required.
 * @throws {TypeError} When the file or variable holds an unusable token (a set but blank
 *   variable included), the file is not a regular file or is longer than
 *   {@linkcode MAX_TOKEN_FILE_BYTES}, or a required token is missing.
 * @throws {Deno.errors.NotFound} When the token file does not exist.
 */
export async function readToken(options: ReadTokenOptions = {}): Promise<string | undefined> {
  const envVar = options.envVar ?? TOKEN_ENV_VAR;
  if (options.tokenFile !== undefined) {
    const text = await readTokenFile(options.tokenFile);
    return validateToken(text.trim(), `token file ${options.tokenFile}`);
  }
  let value: string | undefined;
  const permission = await Deno.permissions.query({ name: "env", variable: envVar });
  if (permission.state === "granted") value = Deno.env.get(envVar);
  if (value !== undefined && value.trim() === "") {
    // Set but blank (an unfilled template): running without a token instead would be unseen.
    throw new TypeError(
      `Cannot use ${envVar}: it is set but blank; set a token, or unset it` +
        (options.required ? " and pass --token-file FILE" : ""),
    );
  }
  if (value === undefined) {
    if (options.required) {
      throw new TypeError(
        `Cannot find a token: set ${envVar} or pass --token-file FILE` +
          (permission.state === "granted" ? "" : ` (env access to ${envVar} is not granted)`),
      );
    }
    return undefined;
  }
  return validateToken(value.trim(), envVar);
}

/**
 * Reads a token file: only a regular file (a symlink is followed), opened
 * without waiting on a FIFO, and at most {@linkcode MAX_TOKEN_FILE_BYTES}.
 */
async function readTokenFile(path: string): Promise<string> {
  let file: RegularFile;
  try {
    file = await openRegularFile(path, "read");
  } catch (error) {
    const code = (error as { code?: unknown } | null)?.code;
    if (code === "ENOENT") {
      throw new Deno.errors.NotFound(`Cannot read token file: ${path} does not exist`, {
        cause: error,
      });
    }
    if (error instanceof NotRegularFileError || error instanceof FileLeasedError) {
      throw new TypeError(`Cannot read token file ${path}: ${error.message}`, { cause: error });
    }
    throw error;
  }
  try {
    const buffer = new Uint8Array(MAX_TOKEN_FILE_BYTES + 1);
    let length = 0;
    while (length < buffer.length) {
      const { bytesRead } = await file.handle.read(buffer, length, buffer.length - length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > MAX_TOKEN_FILE_BYTES) {
      throw new TypeError(
        `Cannot use token file ${path}: it is longer than ${MAX_TOKEN_FILE_BYTES} bytes (a token is at most ${MAX_TOKEN_BYTES})`,
      );
    }
    return new TextDecoder().decode(buffer.subarray(0, length));
  } finally {
    await file.handle.close();
  }
}
