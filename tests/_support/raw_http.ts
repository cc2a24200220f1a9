/**
 * Raw HTTP/1.1 over a TCP socket, for requests `fetch` will not send (forged
 * WebSocket upgrades, oversized headers, lying content lengths) and for
 * reading the status of a refused WebSocket upgrade.
 *
 * @module
 */

import { withDeadline } from "./deadline.ts";

/** What came back. */
export interface RawHttpResponse {
  /** Status code, or 0 when the server closed without an answer. */
  status: number;
  /** Header map, lower-case names. */
  headers: Map<string, string>;
  /** The body as text (up to what was read). */
  body: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Sends one request and reads the answer (headers, then the body by
 * content-length, or until close). A 101 answer is returned at once and the
 * socket closed.
 *
 * @param port The server port on 127.0.0.1.
 * @param head The request line and headers, without the final blank line.
 * @param body Optional body bytes.
 * @param ms Deadline.
 * @returns The response.
 */
export async function rawHttp(
  port: number,
  head: string,
  body: Uint8Array | string = "",
  ms = 5000,
): Promise<RawHttpResponse> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    return await withDeadline(exchange(conn, head, body), ms, "raw HTTP exchange");
  } finally {
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

async function exchange(
  conn: Deno.Conn,
  head: string,
  body: Uint8Array | string,
): Promise<RawHttpResponse> {
  const bodyBytes = typeof body === "string" ? encoder.encode(body) : body;
  const request = encoder.encode(`${head}\r\n\r\n`);
  try {
    await writeAll(conn, request);
    if (bodyBytes.length > 0) await writeAll(conn, bodyBytes);
  } catch {
    // The server may refuse early (e.g. headers too large) and close; read what it said.
  }
  let buffer = new Uint8Array(0);
  const chunk = new Uint8Array(64 * 1024);
  let headerEnd = -1;
  let contentLength = -1;
  let status = 0;
  const headers = new Map<string, string>();
  while (true) {
    let n: number | null;
    try {
      n = await conn.read(chunk);
    } catch {
      n = null;
    }
    if (n === null) break;
    const next = new Uint8Array(buffer.length + n);
    next.set(buffer);
    next.set(chunk.subarray(0, n), buffer.length);
    buffer = next;
    if (headerEnd < 0) {
      const text = decoder.decode(buffer);
      headerEnd = text.indexOf("\r\n\r\n");
      if (headerEnd >= 0) {
        const lines = text.slice(0, headerEnd).split("\r\n");
        status = Number(lines[0].split(" ")[1] ?? 0);
        for (const line of lines.slice(1)) {
          const i = line.indexOf(":");
          if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
        }
        if (status === 101) break;
        contentLength = Number(headers.get("content-length") ?? -1);
      }
    }
    if (headerEnd >= 0 && contentLength >= 0) {
      const have = buffer.length -
        (encoder.encode(decoder.decode(buffer).slice(0, headerEnd + 4)).length);
      if (have >= contentLength) break;
    }
  }
  const text = decoder.decode(buffer);
  return { status, headers, body: headerEnd >= 0 ? text.slice(headerEnd + 4) : "" };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/**
 * The headers of a WebSocket upgrade request.
 *
 * @param path Request target.
 * @param extra Extra header lines.
 * @returns The request head.
 */
export function upgradeHead(path: string, extra: string[] = []): string {
  return [
    `GET ${path} HTTP/1.1`,
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    ...extra,
  ].join("\r\n");
}
