/**
 * The server side of a WebSocket upgrade done by hand over a raw TCP
 * connection, for tests that control every byte after it.
 *
 * @module
 */

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const utf8 = new TextEncoder();

/**
 * Reads one HTTP upgrade request from a raw connection and answers 101.
 *
 * @param conn The accepted connection.
 * @returns The request head as received.
 * @throws {Error} When the connection closes before the request head ends.
 */
export async function completeHandshake(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(8192);
  let request = "";
  while (!request.includes("\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("Cannot read upgrade request: connection closed");
    request += new TextDecoder().decode(buffer.subarray(0, n));
  }
  const key = /sec-websocket-key: *([^\r\n]*)/i.exec(request)?.[1]?.trim() ?? "";
  const digest = await crypto.subtle.digest("SHA-1", utf8.encode(key + WS_GUID));
  const accept = btoa(String.fromCharCode(...new Uint8Array(digest)));
  await conn.write(utf8.encode(
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
  ));
  return request;
}
