/**
 * Small validators for JSON-RPC params. Each throws an `RpcError` with code
 * -32602 whose message names the param and says what was wrong.
 *
 * @module
 */

import { isEnvName } from "../_env.ts";
import { RpcError } from "../errors.ts";
import { INVALID_PARAMS } from "../rpc/error_codes.ts";

/** Params as an object with named members. */
export type Params = Record<string, unknown>;

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return value.length > 40 ? "a long string" : JSON.stringify(value);
  if (typeof value === "number") return String(value);
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}

/**
 * Builds the -32602 error for one param.
 *
 * @param name The param name.
 * @param why What it must be.
 * @param value The value received.
 * @returns The error to throw.
 */
export function invalidParam(name: string, why: string, value?: unknown): RpcError {
  const got = arguments.length > 2 ? `, got ${describe(value)}` : "";
  return new RpcError(INVALID_PARAMS, `Invalid params: "${name}" ${why}${got}`);
}

/**
 * Refuses Codex's later sandbox fields (`sandbox` on `process/start` and the
 * fs methods, `enforceManagedNetwork`, `managedNetwork`), which outpost does
 * not implement: a request that asks for a sandbox must not run without it.
 * outpost's own `confinement` and `denoPermissions` say how to confine.
 *
 * @param params The request's params.
 * @throws {RpcError} -32602 naming the field, when one is set (not null, not false).
 */
export function refuseCodexSandbox(params: Params): void {
  for (const name of ["sandbox", "managedNetwork", "enforceManagedNetwork"]) {
    const value = params[name];
    if (value === undefined || value === null || value === false) continue;
    throw new RpcError(
      INVALID_PARAMS,
      `Invalid params: "${name}" asks for Codex's sandbox, which outpost does not implement; ` +
        `refused rather than run unconfined (outpost confines with "confinement" and ` +
        `"denoPermissions" on process/start, and with the executor's own grant)`,
    );
  }
}

/**
 * Accepts missing or null params as `{}` and otherwise requires an object.
 *
 * @param params The raw params.
 * @returns The params object.
 */
export function paramsObject(params: unknown): Params {
  if (params === undefined || params === null) return {};
  if (typeof params !== "object" || Array.isArray(params)) {
    throw new RpcError(
      INVALID_PARAMS,
      `Invalid params: expected an object, got ${describe(params)}`,
    );
  }
  return params as Params;
}

/**
 * A peer-chosen string as an error message shows it: whole up to `max`
 * characters, else cut there with an ellipsis, so a huge unknown id is not
 * echoed back in full.
 *
 * @param text The string.
 * @param max The most characters kept.
 * @returns The string, or its start and an ellipsis.
 */
export function clipped(text: string, max: number): string {
  if (text.length <= max) return text;
  // Not between the halves of a surrogate pair: the cut would leave a lone one.
  const code = text.charCodeAt(max - 1);
  const end = code >= 0xd800 && code <= 0xdbff ? max - 1 : max;
  return `${text.slice(0, end)}\u2026`;
}

/**
 * Refuses a string that is not well-formed Unicode: a lone surrogate (a
 * Python harness's `surrogateescape` of an undecodable file name, say) would
 * reach the system as U+FFFD and name another file, program or variable.
 *
 * @param name The param name, for the error.
 * @param value The string.
 * @returns The string.
 */
export function wellFormed(name: string, value: string): string {
  if (!value.isWellFormed()) {
    throw invalidParam(name, "must be well-formed Unicode (it has a lone surrogate)");
  }
  return value;
}

/**
 * Reads a required non-empty string.
 *
 * @param params The params object.
 * @param name The param name.
 * @returns The string.
 */
export function requiredString(params: Params, name: string): string {
  const value = params[name];
  if (value === undefined) throw invalidParam(name, "is required");
  if (typeof value !== "string" || value.length === 0) {
    throw invalidParam(name, "must be a non-empty string", value);
  }
  return value;
}

/**
 * Reads an optional string (`null` counts as absent).
 *
 * @param params The params object.
 * @param name The param name.
 * @returns The string or undefined.
 */
export function optionalString(params: Params, name: string): string | undefined {
  const value = params[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw invalidParam(name, "must be a string", value);
  return value;
}

/**
 * Reads an optional boolean (`null` counts as absent).
 *
 * @param params The params object.
 * @param name The param name.
 * @param fallback The value when absent.
 * @returns The boolean.
 */
export function optionalBoolean(params: Params, name: string, fallback: boolean): boolean {
  const value = params[name];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "boolean") throw invalidParam(name, "must be a boolean", value);
  return value;
}

/**
 * Reads an optional integer within `[min, max]` (`null` counts as absent).
 *
 * @param params The params object.
 * @param name The param name.
 * @param range Inclusive bounds.
 * @returns The integer or undefined.
 */
export function optionalInteger(
  params: Params,
  name: string,
  range: { min: number; max: number },
): number | undefined {
  const value = params[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw invalidParam(name, "must be an integer", value);
  }
  if (value < range.min || value > range.max) {
    throw invalidParam(name, `must be between ${range.min} and ${range.max}`, value);
  }
  return value;
}

/**
 * Reads a required absolute path.
 *
 * @param params The params object.
 * @param name The param name.
 * @returns The path.
 */
export function absolutePath(params: Params, name: string): string {
  const value = requiredString(params, name);
  if (!value.startsWith("/")) throw invalidParam(name, "must be an absolute path", value);
  if (value.includes("\0")) throw invalidParam(name, "must not contain NUL characters");
  return wellFormed(name, value);
}

/**
 * Reads a required non-empty array of strings.
 *
 * @param params The params object.
 * @param name The param name.
 * @returns The strings.
 */
export function stringArray(params: Params, name: string): string[] {
  const value = params[name];
  if (value === undefined) throw invalidParam(name, "is required");
  if (!Array.isArray(value) || value.length === 0) {
    throw invalidParam(name, "must be a non-empty array of strings", value);
  }
  for (const [i, item] of value.entries()) {
    if (typeof item !== "string") throw invalidParam(`${name}[${i}]`, "must be a string", item);
    if (item.includes("\0")) throw invalidParam(`${name}[${i}]`, "must not contain NUL characters");
    wellFormed(`${name}[${i}]`, item);
  }
  return value as string[];
}

/**
 * Reads an optional object of string values (`null` counts as absent).
 *
 * @param params The params object.
 * @param name The param name.
 * @returns The record or undefined.
 */
export function stringRecord(params: Params, name: string): Record<string, string> | undefined {
  const value = params[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw invalidParam(name, "must be an object of strings", value);
  }
  const record: Record<string, string> = {};
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    if (typeof item !== "string") throw invalidParam(`${name}.${key}`, "must be a string", item);
    if (!isEnvName(key) || item.includes("\0")) {
      throw invalidParam(`${name}.${key}`, "must be a valid environment variable");
    }
    wellFormed(`${name} names`, key);
    record[key] = wellFormed(`${name}.${key}`, item);
  }
  return record;
}

/**
 * Reads a required standard base64 string and decodes it.
 *
 * @param params The params object.
 * @param name The param name.
 * @returns The decoded bytes.
 */
export function base64Bytes(params: Params, name: string): Uint8Array {
  const value = params[name];
  if (value === undefined) throw invalidParam(name, "is required");
  if (typeof value !== "string") throw invalidParam(name, "must be a base64 string", value);
  const invalid = () => invalidParam(name, "must be valid standard base64 (padded, no whitespace)");
  if (value.length % 4 !== 0) throw invalid();
  let bytes: Uint8Array;
  try {
    // Strict: padding required, no bits left over; the alphabet is checked natively.
    bytes = Uint8Array.fromBase64(value, { lastChunkHandling: "strict" });
  } catch {
    throw invalid();
  }
  // fromBase64 skips ASCII whitespace; with none, every 4 characters make 3
  // bytes less the padding, so any skipped character shows in the length.
  const padding = value.endsWith("==") ? 2 : value.endsWith("=") ? 1 : 0;
  if (bytes.length !== (value.length / 4) * 3 - padding) throw invalid();
  return bytes;
}
