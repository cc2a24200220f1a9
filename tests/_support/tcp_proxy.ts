/**
 * A plain TCP proxy on 127.0.0.1 that can cut every connection through it,
 * or silence them (a black hole that keeps them open), for tests of
 * reconnects after a socket is lost.
 *
 * @module
 */

type Pair = [Deno.Conn, Deno.Conn];

/** A TCP proxy on 127.0.0.1 that can cut or silence every connection through it. */
export class TcpProxy implements AsyncDisposable {
  #listener: Deno.Listener;
  #pairs = new Set<Pair>();
  #silenced = new WeakSet<Pair>();
  #tasks = new Set<Promise<void>>();
  #accepting: Promise<void>;
  /** Connections accepted and forwarded so far. */
  connections = 0;
  /** The port it listens on. */
  readonly port: number;
  /** While true, new connections are closed at once, as by a target that is down. */
  refusing = false;
  /** While true, new connections are held open and never answered (closed on dispose). */
  stalling = false;
  #held = new Set<Deno.Conn>();

  /**
   * Starts listening on `port` (a free one by default) and forwards each
   * connection to `targetPort`.
   *
   * @param targetPort The port on 127.0.0.1 to forward to.
   * @param port The port to listen on.
   */
  constructor(targetPort: number, port = 0) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port });
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#accepting = (async () => {
      for await (const inbound of listener) {
        if (this.refusing) {
          inbound.close();
          continue;
        }
        if (this.stalling) {
          this.#held.add(inbound);
          continue;
        }
        let outbound: Deno.Conn;
        try {
          outbound = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
        } catch {
          inbound.close();
          continue;
        }
        this.connections++;
        const pair: Pair = [inbound, outbound];
        this.#pairs.add(pair);
        const silent = () => this.#silenced.has(pair);
        const task = Promise.all([
          copy(inbound, outbound, silent),
          copy(outbound, inbound, silent),
        ]).then(() => {
          this.#closePair(pair);
        });
        this.#tasks.add(task);
        task.finally(() => this.#tasks.delete(task));
      }
    })().catch(() => {});
  }

  #closePair(pair: Pair): void {
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

  /**
   * Silences every connection through the proxy without closing it: from now
   * on their bytes are read and dropped both ways, as on a route that went
   * dead (no FIN, no RST). New connections are forwarded as usual.
   *
   * @returns How many connections were silenced.
   */
  silence(): number {
    for (const pair of this.#pairs) this.#silenced.add(pair);
    return this.#pairs.size;
  }

  /** Stops listening, cuts every connection and waits for the copies to end. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const conn of this.#held) conn.close();
    this.#held.clear();
    this.cut();
    await Promise.allSettled([...this.#tasks]);
  }
}

async function copy(from: Deno.Conn, to: Deno.Conn, silent: () => boolean): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    while (true) {
      const n = await from.read(buffer);
      if (n === null) break;
      if (silent()) continue;
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
