/**
 * A minimal `MessageChannel` over a server-side WebSocket (one text message
 * per JSON-RPC message) and a loopback server that hands every accepted
 * socket to `Executor.serve`. The adversarial tests use it to reach a real
 * Executor over a real socket without depending on the local server module.
 *
 * @module
 */

import type { MessageChannel } from "../../lib/rpc/message_channel.ts";
import type { Executor } from "../../lib/exec/executor.ts";

const MAX_QUEUED = 1024;

/** A MessageChannel over one WebSocket; bounded inbound queue. */
export class WebSocketChannel implements MessageChannel {
  #ws: WebSocket;
  #queue: string[] = [];
  #waiting: ((r: IteratorResult<string>) => void)[] = [];
  #done = false;
  #closed: Promise<void>;

  /**
   * Wraps a socket (may still be connecting).
   *
   * @param ws The socket.
   */
  constructor(ws: WebSocket) {
    this.#ws = ws;
    this.#closed = new Promise((resolve) =>
      ws.addEventListener("close", () => {
        this.#done = true;
        for (const w of this.#waiting.splice(0)) w({ done: true, value: undefined });
        resolve();
      }, { once: true })
    );
    ws.addEventListener("message", (ev) => {
      const data = typeof ev.data === "string" ? ev.data : "";
      const waiter = this.#waiting.shift();
      if (waiter) waiter({ done: false, value: data });
      else if (this.#queue.length >= MAX_QUEUED) ws.close(1008, "inbound queue overflow");
      else this.#queue.push(data);
    });
  }

  /** Settles once closed. */
  get closed(): Promise<void> {
    return this.#closed;
  }

  /**
   * Sends one message.
   *
   * @param message The text.
   * @returns When handed to the socket.
   */
  async send(message: string): Promise<void> {
    if (this.#ws.readyState === WebSocket.CONNECTING) {
      await new Promise((resolve) => this.#ws.addEventListener("open", resolve, { once: true }));
    }
    if (this.#ws.readyState !== WebSocket.OPEN) throw new Error("Cannot send: channel closed");
    this.#ws.send(message);
  }

  /**
   * Closes the socket.
   *
   * @param reason The close reason.
   * @returns When closed.
   */
  close(reason = ""): Promise<void> {
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.close(1000, reason.slice(0, 100));
    else if (this.#ws.readyState === WebSocket.CONNECTING) {
      this.#ws.addEventListener("open", () => this.#ws.close(1000), { once: true });
    }
    return this.#closed;
  }

  /**
   * Iterates inbound messages.
   *
   * @returns The iterator.
   */
  [Symbol.asyncIterator](): AsyncIterator<string> {
    return {
      next: (): Promise<IteratorResult<string>> => {
        const item = this.#queue.shift();
        if (item !== undefined) return Promise.resolve({ done: false, value: item });
        if (this.#done) return Promise.resolve({ done: true, value: undefined });
        return new Promise((resolve) => this.#waiting.push(resolve));
      },
    };
  }
}

/** A loopback server handing each WebSocket to an Executor. */
export interface ExecutorServer extends AsyncDisposable {
  /** `ws://127.0.0.1:PORT/`. */
  url: string;
  /** Stops serving and closes every session. */
  close(): Promise<void>;
}

/**
 * Serves an executor on a free loopback port.
 *
 * @param executor The executor.
 * @returns The server.
 */
export function serveExecutor(executor: Executor): ExecutorServer {
  const sessions = new Set<Promise<void>>();
  const channels = new Set<WebSocketChannel>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    const channel = new WebSocketChannel(socket);
    channels.add(channel);
    const session = executor.serve(channel).catch(() => {}).finally(() => {
      channels.delete(channel);
      sessions.delete(session);
    });
    sessions.add(session);
    return response;
  });
  const close = async (): Promise<void> => {
    await Promise.all([...channels].map((c) => c.close()));
    await Promise.allSettled([...sessions]);
    await server.shutdown();
  };
  return { url: `ws://127.0.0.1:${server.addr.port}/`, close, [Symbol.asyncDispose]: close };
}
