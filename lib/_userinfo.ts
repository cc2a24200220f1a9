/**
 * Keeps a URL's user and password out of messages, for strings that may not
 * even parse as a URL (`ws://alice:pa/ss@host` does not, nor `ws:/a:b@host`),
 * where no rule can tell reliably which part is a password: such a string is
 * not shown at all when it holds an `@`.
 *
 * @module
 */

/**
 * `raw` as it may appear in a message.
 *
 * @param raw What was meant to be a URL (and did not parse).
 * @returns `raw` when it holds no `@`; otherwise a note in its place.
 * @example
 * ```ts ignore
 * shownUnparsedUrl("ws://host:99999"); // "ws://host:99999"
 * shownUnparsedUrl("ws://alice:pa/ss@host"); // "(not shown: it holds an @, as a password would)"
 * ```
 */
export function shownUnparsedUrl(raw: string): string {
  return raw.includes("@") ? "(not shown: it holds an @, as a password would)" : raw;
}
