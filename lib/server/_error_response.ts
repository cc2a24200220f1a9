/**
 * The one shape of an HTTP refusal from a rendezvous or `serve`:
 * `{"error": {"code", "message"}}`, never cached. Clients read the code and
 * message from the body of a refused WebSocket upgrade and show both.
 *
 * @module
 */

/** A JSON error answer with `status`, a machine-readable `code` and a message for people. */
export function errorResponse(
  status: number,
  code: string,
  message: string,
  headers?: Record<string, string>,
): Response {
  return Response.json({ error: { code, message } }, {
    status,
    headers: { "cache-control": "no-store", ...headers },
  });
}

/** The code of a WebSocket upgrade Deno refuses: a client's mistake, answered 400. */
export const BAD_UPGRADE = "bad_upgrade";

/**
 * Why Deno refused a WebSocket upgrade (no `Sec-WebSocket-Key`, a `Connection`
 * without `Upgrade`), as the message of a 400 `bad_upgrade`.
 */
export function badUpgradeMessage(error: unknown): string {
  const why = (error instanceof Error ? error.message : String(error)).replace(
    /^Invalid Header: /,
    "",
  );
  return `Cannot upgrade to a WebSocket: ${why}`;
}
