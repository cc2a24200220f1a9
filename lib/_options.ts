/**
 * Checks on library options that TypeScript's types state but a JavaScript
 * caller (or a configuration file) can still get wrong, where the wrong
 * value would be taken silently in a way that weakens a bound: a string as a
 * list, `"false"` as a flag.
 *
 * @module
 */

/**
 * A list option, refused unless it is an array of strings with no holes: a
 * string would otherwise be taken one character at a time (`"/srv"` as the
 * write roots `/`, `s`, `r` and `v`; `"PATH"` as the variables `P`, `A`,
 * `T`, `H`).
 *
 * @param what What is being created, for the message ("Cannot create …").
 * @param name The option's name.
 * @param value The option as given.
 * @returns The list, or undefined when the option is absent.
 * @throws {TypeError} When it is present and not an array of strings.
 */
export function stringListOption(
  what: string,
  name: string,
  value: unknown,
): readonly string[] | undefined {
  if (value === undefined) return undefined;
  let strings = Array.isArray(value);
  // Indices, not `every`: it skips the holes of a sparse array.
  for (let i = 0; strings && i < (value as unknown[]).length; i++) {
    strings = typeof (value as unknown[])[i] === "string";
  }
  if (!strings) throw new TypeError(`Cannot create ${what}: ${name} must be an array of strings`);
  return value as string[];
}

/**
 * A flag option, refused unless it is a boolean: `"false"` would otherwise
 * count as set.
 *
 * @param what What is being created, for the message ("Cannot create …").
 * @param name The option's name.
 * @param value The option as given.
 * @returns The flag, or undefined when the option is absent.
 * @throws {TypeError} When it is present and not a boolean.
 */
export function booleanOption(what: string, name: string, value: unknown): boolean | undefined {
  if (value === undefined || typeof value === "boolean") return value;
  throw new TypeError(`Cannot create ${what}: ${name} must be a boolean`);
}
