/**
 * A raw TCP server and the server side of a WebSocket upgrade done by hand,
 * for tests that control every byte (or stop reading).
 *
 * @module
 */

import { withDeadline } from "./deadline.ts";

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

/** A raw TCP listener on 127.0.0.1; tests decide whether and when to read. */
export class RawTcpServer implements AsyncDisposable {
  /** A `ws://` URL of the listener with `path`. */
  readonly url: string;
  #listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
  #conns: Deno.Conn[] = [];

  /**
   * Listens on a free port.
   *
   * @param path The path (and query) of {@linkcode RawTcpServer.url}.
   */
  constructor(path = "/relay") {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.url = `ws://127.0.0.1:${this.#listener.addr.port}${path}`;
  }

  /**
   * Accepts one connection (within 5 s); it is closed with the server.
   *
   * @returns The connection, with nothing read from it.
   */
  async accept(): Promise<Deno.Conn> {
    const conn = await withDeadline(this.#listener.accept(), 5_000, "raw accept");
    this.#conns.push(conn);
    return conn;
  }

  /** Closes every accepted connection; the listener stays open. */
  closeConns(): void {
    for (const conn of this.#conns.splice(0)) {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }

  /** Closes every connection and the listener. */
  [Symbol.asyncDispose](): Promise<void> {
    this.closeConns();
    this.#listener.close();
    return Promise.resolve();
  }
}
