/**
 * Checks on library options that TypeScript's types state but a JavaScript
 * caller (or a configuration file) can still get wrong.
 *
 * @module
 */

/**
 * A list option, refused unless it is an array of strings: a string would
 * otherwise be taken one character at a time (`"/srv"` as the write roots
 * `/`, `s`, `r` and `v`; `"PATH"` as the variables `P`, `A`, `T`, `H`).
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
  if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) {
    throw new TypeError(`Cannot create ${what}: ${name} must be an array of strings`);
  }
  return value;
}
