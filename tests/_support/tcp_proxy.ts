/**
 * A plain TCP proxy on 127.0.0.1 that can cut every connection through it,
 * for tests of reconnects after a socket is lost.
 *
 * @module
 */

/** A TCP proxy on 127.0.0.1 that can cut every connection through it. */
export class TcpProxy implements AsyncDisposable {
  #listener: Deno.Listener;
  #pairs = new Set<[Deno.Conn, Deno.Conn]>();
  #tasks = new Set<Promise<void>>();
  #accepting: Promise<void>;
  /** Connections accepted and forwarded so far. */
  connections = 0;
  /** The port it listens on. */
  readonly port: number;

  /**
   * Starts listening on a free port and forwards each connection to `targetPort`.
   *
   * @param targetPort The port on 127.0.0.1 to forward to.
   */
  constructor(targetPort: number) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#accepting = (async () => {
      for await (const inbound of listener) {
        let outbound: Deno.Conn;
        try {
          outbound = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
        } catch {
          inbound.close();
          continue;
        }
        this.connections++;
        const pair: [Deno.Conn, Deno.Conn] = [inbound, outbound];
        this.#pairs.add(pair);
        const task = Promise.all([copy(inbound, outbound), copy(outbound, inbound)]).then(() => {
          this.#closePair(pair);
        });
        this.#tasks.add(task);
        task.finally(() => this.#tasks.delete(task));
      }
    })().catch(() => {});
  }

  #closePair(pair: [Deno.Conn, Deno.Conn]): void {
    if (!this.#pairs.delete(pair)) return;
    for (const conn of pair) {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }
  }

  /**
   * Cuts every connection through the proxy; new ones are still accepted.
   *
   * @returns How many connections were cut.
   */
  cut(): number {
    const n = this.#pairs.size;
    for (const pair of [...this.#pairs]) this.#closePair(pair);
    return n;
  }

  /** Stops listening, cuts every connection and waits for the copies to end. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    this.cut();
    await Promise.allSettled([...this.#tasks]);
  }
}

async function copy(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    while (true) {
      const n = await from.read(buffer);
      if (n === null) break;
      let offset = 0;
      while (offset < n) offset += await to.write(buffer.subarray(offset, n));
    }
  } catch {
    // Cut or reset.
  }
  try {
    await to.closeWrite();
  } catch {
    // Already closed.
  }
}
