/**
 * A request's URL, for both servers. Deno builds `request.url` from the
 * `Host` header without checking it, so a host that is no URL's (`Host: a b`)
 * makes it unparsable: the client's mistake, answered 400 `bad_request`
 * ({@linkcode BAD_HOST_MESSAGE}), not a failure of the server.
 *
 * @module
 */

/** The message of the 400 `bad_request` for such a request. */
export const BAD_HOST_MESSAGE = "Cannot serve the request: its Host header is not valid";

/** The request's URL, or null when its `Host` header makes it no URL. */
export function requestUrl(request: Request): URL | null {
  try {
    return new URL(request.url);
  } catch {
    return null;
  }
}
