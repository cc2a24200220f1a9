/**
 * The environment a child process gets. Children are always spawned with
 * `clearEnv: true`: they see the variables the request names plus, when the
 * request inherits, the operator's allowlist of harmless variables copied from
 * the executor's own environment. Nothing else from the executor (tokens,
 * keys) ever reaches a child.
 *
 * @module
 */

import { isGrantedSync } from "./_permissions.ts";
import { isEnvName } from "../_env.ts";
import { MAX_ARG_STRING_BYTES } from "../_limits.ts";
import { clipped } from "./_params.ts";

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

/**
 * Codex's `envPolicy` for `process/start`: how the base environment is built
 * before the request's `env` is laid over it. outpost can only inherit what
 * the operator's allowlist names (the executor reads nothing else), so
 * `inherit: "all"` means the whole allowlist and `"core"` the part of it in
 * {@linkcode CORE_ENV}.
 */
export interface EnvPolicy {
  /** Which executor variables to start from. @default {"all"} */
  inherit?: "all" | "core" | "none";
  /** Keep names matching `*KEY*`, `*SECRET*` or `*TOKEN*`, which are otherwise dropped. @default {false} */
  ignoreDefaultExcludes?: boolean;
  /** Case-insensitive patterns (`*` and `?`) of inherited names to drop. */
  exclude?: string[];
  /** When non-empty, keep only inherited names matching one of these patterns. */
  includeOnly?: string[];
  /** Variables to set on top of the inherited ones (the request's `env` still wins). */
  set?: Record<string, string>;
}

/** The variables `inherit: "core"` keeps, as Codex's core set. */
export const CORE_ENV: readonly string[] = Object.freeze([
  "HOME",
  "LOGNAME",
  "PATH",
  "SHELL",
  "USER",
  "USERNAME",
  "TMPDIR",
  "TEMP",
  "TMP",
]);

/** Names Codex drops from an inherited environment unless `ignoreDefaultExcludes`. */
const DEFAULT_EXCLUDES = ["*KEY*", "*SECRET*", "*TOKEN*"];

/**
 * Whether `name` matches a `*`/`?` pattern, case-insensitively. A linear scan
 * with one backtrack point (no regular expression, so no pathological patterns).
 */
export function matchesPattern(pattern: string, name: string): boolean {
  const p = pattern.toUpperCase();
  const n = name.toUpperCase();
  let pi = 0;
  let ni = 0;
  let star = -1;
  let resume = 0;
  while (ni < n.length) {
    if (pi < p.length && (p[pi] === "?" || p[pi] === n[ni])) {
      pi++;
      ni++;
    } else if (pi < p.length && p[pi] === "*") {
      star = pi++;
      resume = ni;
    } else if (star >= 0) {
      pi = star + 1;
      ni = ++resume;
    } else {
      return false;
    }
  }
  while (pi < p.length && p[pi] === "*") pi++;
  return pi === p.length;
}

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
  /**
   * Codex's `envPolicy`; when given it decides what is inherited (`inherit`
   * is then ignored) and its `set` is applied before the request's `env`.
   */
  policy?: EnvPolicy;
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
 * @throws {RangeError} When the request's environment exceeds `maxEnvBytes`, or one
 * entry (`NAME=value`) exceeds {@linkcode MAX_ARG_STRING_BYTES}.
 * @example
 * ```ts
 * import { buildChildEnv } from "./child_env.ts";
 * const env = buildChildEnv({ GREETING: "hi" }, { inherit: false });
 * console.log(env); // { GREETING: "hi" }
 * ```
 */
export function buildChildEnv(
  env: Record<string, string> | undefined,
  options: ChildEnvOptions = {},
): Record<string, string> {
  const maxBytes = options.maxEnvBytes ?? DEFAULT_MAX_ENV_BYTES;
  const policy = options.policy;
  if (policy !== undefined) checkPolicy(policy);
  const result: Record<string, string> = {};
  const inherit = policy ? (policy.inherit ?? "all") : (options.inherit ?? true) ? "all" : "none";
  if (inherit !== "none") {
    const drop = [
      ...(policy && !policy.ignoreDefaultExcludes ? DEFAULT_EXCLUDES : []),
      ...(policy?.exclude ?? []),
    ];
    const only = policy?.includeOnly ?? [];
    // One question for the whole kind under a whole grant, rather than one per name.
    const everyVariable = isGrantedSync({ name: "env" });
    for (const name of options.allowlist ?? DEFAULT_INHERITED_ENV) {
      if (inherit === "core" && !CORE_ENV.includes(name)) continue;
      if (drop.some((pattern) => matchesPattern(pattern, name))) continue;
      if (only.length > 0 && !only.some((pattern) => matchesPattern(pattern, name))) continue;
      if (!everyVariable && !isGrantedSync({ name: "env", variable: name })) continue;
      const value = Deno.env.get(name);
      if (value !== undefined) result[name] = value;
    }
  }
  const requested = [policy?.set, env].filter((e) => e !== undefined && e !== null);
  if (requested.length === 0) return result;
  let bytes = 0;
  for (const entries of requested) bytes = addRequested(result, entries, bytes, maxBytes);
  return result;
}

function checkPolicy(policy: EnvPolicy): void {
  const fail = (why: string): never => {
    throw new TypeError(`Cannot build child environment: envPolicy.${why}`);
  };
  if (typeof policy !== "object" || policy === null || Array.isArray(policy)) {
    throw new TypeError("Cannot build child environment: envPolicy is not an object");
  }
  if (policy.inherit !== undefined && !["all", "core", "none"].includes(policy.inherit)) {
    fail(`inherit must be "all", "core" or "none"`);
  }
  if (
    policy.ignoreDefaultExcludes !== undefined && typeof policy.ignoreDefaultExcludes !== "boolean"
  ) {
    fail("ignoreDefaultExcludes must be a boolean");
  }
  for (const name of ["exclude", "includeOnly"] as const) {
    const list = policy[name];
    if (
      list !== undefined &&
      (!Array.isArray(list) || list.some((p) => typeof p !== "string" || p.length > 1024))
    ) {
      fail(`${name} must be a list of patterns (strings of at most 1024 characters)`);
    }
    if (list !== undefined && list.length > 256) fail(`${name} holds more than 256 patterns`);
  }
}

/** Validates `entries` and adds them to `result`; returns the byte count so far. */
function addRequested(
  result: Record<string, string>,
  env: Record<string, string> | undefined,
  bytesSoFar: number,
  maxBytes: number,
): number {
  if (typeof env !== "object" || env === null || Array.isArray(env)) {
    throw new TypeError("Cannot build child environment: env is not an object of strings");
  }
  let bytes = bytesSoFar;
  for (const [name, value] of Object.entries(env)) {
    if (typeof value !== "string") {
      throw new TypeError(`Cannot build child environment: the value of "${name}" is not a string`);
    }
    if (!isEnvName(name)) {
      throw new TypeError(
        `Cannot build child environment: variable name ${
          JSON.stringify(name)
        } is empty or holds "=" or NUL`,
      );
    }
    if (value.includes("\0")) {
      throw new TypeError(`Cannot build child environment: the value of "${name}" holds NUL`);
    }
    if (!name.isWellFormed() || !value.isWellFormed()) {
      // It would reach the child as U+FFFD: another name, or another value.
      throw new TypeError(
        `Cannot build child environment: the name or value of ${
          JSON.stringify(name)
        } has a lone surrogate`,
      );
    }
    const entryBytes = utf8Length(name) + 1 + utf8Length(value);
    if (entryBytes > MAX_ARG_STRING_BYTES) {
      throw new RangeError(
        `Cannot build child environment: ${
          JSON.stringify(clipped(name, 256))
        } (NAME=value) is ${entryBytes} bytes, over the ${MAX_ARG_STRING_BYTES} byte limit of ` +
          "one environment entry (Linux's MAX_ARG_STRLEN)",
      );
    }
    bytes += entryBytes + 1;
    if (bytes > maxBytes) {
      throw new RangeError(
        `Cannot build child environment: it exceeds the ${maxBytes} byte limit`,
      );
    }
    result[name] = value;
  }
  return bytes;
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
