/**
 * Questions to Deno's permission system that do not grow the process.
 *
 * Deno keeps a status object for every distinct descriptor ever queried, for
 * the life of the process (about 0.5 KB each; in a review's measurement,
 * 50,000 distinct paths took a bare Deno 2.9 from 2.3 to 22.6 MB of heap).
 * Harnesses name paths, programs and values at will, so a question per value
 * would grow the executor with each new one. These helpers ask about the
 * permission as a whole first (one descriptor, asked once per kind) and about
 * the value only when the whole is not granted, so only a scoped grant
 * (`--allow-run=sh,cat`) or one with parts denied (`--deny-run=curl`) still
 * adds an entry per distinct value.
 *
 * A whole grant with parts denied (`--allow-read --deny-read=/secret`) is
 * `partial` in Deno's answer, and counts as not granted here.
 *
 * @module
 */

/**
 * How Deno grants `descriptor`: wholly, with parts denied
 * (`--allow-run --deny-run=curl` for `{name: "run"}`), or not at all.
 *
 * @param descriptor What to ask about.
 * @returns "none" also when the question is malformed.
 */
export async function grantOf(
  descriptor: Deno.PermissionDescriptor,
): Promise<"whole" | "partial" | "none"> {
  try {
    const status = await Deno.permissions.query(descriptor);
    return status.state !== "granted" ? "none" : status.partial ? "partial" : "whole";
  } catch {
    return "none";
  }
}

/**
 * Whether Deno grants `descriptor` wholly: "granted" and not partial.
 *
 * @param descriptor What to ask about.
 * @returns False when not granted, partly denied, or the question is malformed.
 */
export async function isGranted(descriptor: Deno.PermissionDescriptor): Promise<boolean> {
  return (await grantOf(descriptor)) === "whole";
}

/**
 * Whether Deno grants `descriptor`, asking about its kind as a whole first.
 *
 * @param descriptor A descriptor naming a value (a path, command, variable, host).
 * @returns True when the kind is wholly granted or the value is.
 */
export async function isGrantedValue(descriptor: Deno.PermissionDescriptor): Promise<boolean> {
  return await isGranted({ name: descriptor.name } as Deno.PermissionDescriptor) ||
    await isGranted(descriptor);
}

/** {@linkcode isGranted}, synchronously. */
export function isGrantedSync(descriptor: Deno.PermissionDescriptor): boolean {
  try {
    const status = Deno.permissions.querySync(descriptor);
    return status.state === "granted" && !status.partial;
  } catch {
    return false;
  }
}

/** {@linkcode isGrantedValue}, synchronously. */
export function isGrantedValueSync(descriptor: Deno.PermissionDescriptor): boolean {
  return isGrantedSync({ name: descriptor.name } as Deno.PermissionDescriptor) ||
    isGrantedSync(descriptor);
}
