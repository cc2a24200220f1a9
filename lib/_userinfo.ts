/**
 * Keeps a URL's user and password out of messages, for strings that may not
 * even parse as a URL (`ws://alice:pa/ss@host` does not): whatever stands
 * between the scheme's `//` and the last `@` before the path.
 *
 * @module
 */

const USERINFO = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^@]*@/;

/**
 * The text with a URL's user information replaced by `[redacted]`.
 *
 * @param raw A URL, or what was meant to be one.
 * @returns `raw` without its user information.
 * @example
 * ```ts ignore
 * withoutUserinfo("ws://alice:s3cret@host:1/x"); // "ws://[redacted]@host:1/x"
 * ```
 */
export function withoutUserinfo(raw: string): string {
  return raw.replace(USERINFO, "$1[redacted]@");
}
