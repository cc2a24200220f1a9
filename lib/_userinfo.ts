/**
 * Keeps credentials out of messages: a URL's user and password, and its
 * query (a signed URL's `sig`, a `token`). Also for strings that may not
 * even parse as a URL (`ws://alice:pa/ss@host` does not, nor `ws:/a:b@host`),
 * where no rule can tell reliably which part is a password: such a string is
 * not shown at all when it holds an `@`.
 *
 * @module
 */

/**
 * A URL as error messages show it: scheme, host and path, without its query
 * (which may hold a `sig` or `token`) or credentials.
 *
 * @param url The URL.
 * @returns The printable part, or `<invalid url>`.
 * @example
 * ```ts
 * import { printableUrl } from "./_userinfo.ts";
 * console.log(printableUrl("ws://h:1/harness/b?role=harness&sig=ab")); // "ws://h:1/harness/b"
 * ```
 */
export function printableUrl(url: string | URL): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  } catch {
    return "<invalid url>";
  }
}

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
