/**
 * What the system takes as an environment variable: shared by the request
 * checks, the executor's options and the client's command options, so that
 * each refuses the same names.
 *
 * @module
 */

/**
 * A name the system can hold: not empty, without `=` (which ends a name) or
 * NUL (which ends an entry).
 *
 * @param name The name.
 * @returns True when it can be a variable's name.
 */
export function isEnvName(name: string): boolean {
  return name.length > 0 && !name.includes("=") && !name.includes("\0");
}
