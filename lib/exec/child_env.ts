/**
 * The environment a child process gets. Children are always spawned with
 * `clearEnv: true`: they see the variables the request names plus, when the
 * request inherits, the operator's allowlist of harmless variables copied from
 * the executor's own environment. Nothing else from the executor (tokens,
 * keys) ever reaches a child.
 *
 * @module
 */

/**
 * The default inherited allowlist: variables a program commonly needs to find
 * programs, its home, locale and terminal type. None of them carries secrets.
 */
export const DEFAULT_INHERITED_ENV: readonly string[] = Object.freeze([
  "PATH",
  "HOME",
  "LANG",
  "LC_ALL",
  "TERM",
  "USER",
  "SHELL",
  "TMPDIR",
]);

/** The default cap on the request's environment: 256 KiB of `NAME=value\0`. */
export const DEFAULT_MAX_ENV_BYTES = 256 * 1024;

/** Options for {@linkcode buildChildEnv}. */
export interface ChildEnvOptions {
  /**
   * Copy the allowlisted variables from the executor's environment (the
   * request's own values win).
   *
   * @default {true}
   */
  inherit?: boolean;
  /**
   * Variable names that may be inherited. Each is copied only if Deno grants
   * the executor env access to it.
   *
   * @default {DEFAULT_INHERITED_ENV}
   */
  allowlist?: readonly string[];
  /**
   * Cap on the request's environment, counting each entry as
   * `NAME=value` plus a terminating NUL (UTF-8).
   *
   * @default {262144}
   */
  maxEnvBytes?: number;
}

const ENCODER = new TextEncoder();

/**
 * Validates the request's environment and builds the complete environment for
 * a child spawned with `clearEnv: true`.
 *
 * @param env The variables the request names (may be undefined).
 * @param options Inheritance and size limit.
 * @returns The child's environment.
 * @throws {TypeError} When a name is empty or holds `=` or NUL, or a value holds NUL.
 * @throws {RangeError} When the request's environment exceeds `maxEnvBytes`.
 * @example
 * ```ts
 * import { buildChildEnv } from "./child_env.ts";
 * const env = await buildChildEnv({ GREETING: "hi" }, { inherit: false });
 * console.log(env); // { GREETING: "hi" }
 * ```
 */
export async function buildChildEnv(
  env: Record<string, string> | undefined,
  options: ChildEnvOptions = {},
): Promise<Record<string, string>> {
  const maxBytes = options.maxEnvBytes ?? DEFAULT_MAX_ENV_BYTES;
  const result: Record<string, string> = {};
  if (options.inherit ?? true) {
    for (const name of options.allowlist ?? DEFAULT_INHERITED_ENV) {
      const status = await Deno.permissions.query({ name: "env", variable: name });
      if (status.state !== "granted") continue;
      const value = Deno.env.get(name);
      if (value !== undefined) result[name] = value;
    }
  }
  if (env === undefined || env === null) return result;
  if (typeof env !== "object" || Array.isArray(env)) {
    throw new TypeError("Cannot build child environment: env is not an object of strings");
  }
  let bytes = 0;
  for (const [name, value] of Object.entries(env)) {
    if (typeof value !== "string") {
      throw new TypeError(`Cannot build child environment: the value of "${name}" is not a string`);
    }
    if (name.length === 0 || name.includes("=") || name.includes("\0")) {
      throw new TypeError(
        `Cannot build child environment: variable name ${
          JSON.stringify(name)
        } is empty or holds "=" or NUL`,
      );
    }
    if (value.includes("\0")) {
      throw new TypeError(`Cannot build child environment: the value of "${name}" holds NUL`);
    }
    bytes += utf8Length(name) + utf8Length(value) + 2;
    if (bytes > maxBytes) {
      throw new RangeError(
        `Cannot build child environment: it exceeds the ${maxBytes} byte limit`,
      );
    }
    result[name] = value;
  }
  return result;
}

/**
 * The UTF-8 length of a string, without allocating when it is ASCII.
 *
 * @param text The string.
 * @returns Its length in UTF-8 bytes.
 */
export function utf8Length(text: string): number {
  // deno-lint-ignore no-control-regex -- checking for the ASCII range on purpose
  if (/^[\x00-\x7f]*$/.test(text)) return text.length;
  return ENCODER.encode(text).byteLength;
}
