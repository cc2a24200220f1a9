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
