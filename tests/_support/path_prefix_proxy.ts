/**
 * A reverse proxy on 127.0.0.1 that serves an upstream under a path prefix
 * and strips the prefix before passing a request on, as a TLS proxy in front
 * of a rendezvous started with `--public-url wss://HOST/PREFIX` does. HTTP
 * requests are forwarded with `fetch`; WebSocket upgrades are bridged
 * message by message (the `Authorization` header passed on). It can also
 * cut every bridged socket, and accept new ones only to close them at once,
 * as a failing proxy does.
 *
 * @module
 */

/** A running path-prefix proxy. */
export class PathPrefixProxy implements AsyncDisposable {
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #sockets = new Set<WebSocket>();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  /** Paths (with query) of the requests it received, in order. */
  readonly seen: string[] = [];
  /**
   * The port on 127.0.0.1 to forward to; set once the upstream listens (it
   * may need the proxy's URL to start). Until then requests get 502.
   */
  upstreamPort: number | undefined;
  /** While true, a WebSocket upgrade is accepted and the socket closed as soon as it opens. */
  acceptAndDrop = false;
  /** While true, a WebSocket upgrade is accepted and held open, passing nothing (pings answered). */
  holdSilent = false;
  /** WebSocket upgrades accepted so far, dropped ones included. */
  upgrades = 0;
  /** When set, each new bridge closes after passing this many messages down... */
  dropAfterMessagesDown: number | null = null;
  /** ...and this many milliseconds more. */
  dropDelayMs = 0;

  /** @param prefix The path prefix, e.g. `/prefix` (no trailing slash). */
  constructor(readonly prefix: string) {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (request) => this.#handle(request),
    );
  }

  /** The proxy's base URL, prefix included: `ws://127.0.0.1:PORT/PREFIX`. */
  get url(): string {
    return `ws://127.0.0.1:${this.#server.addr.port}${this.prefix}`;
  }

  async #handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    this.seen.push(url.pathname + url.search);
    const upstreamPort = this.upstreamPort;
    if (upstreamPort === undefined) return new Response("no upstream yet", { status: 502 });
    if (!url.pathname.startsWith(`${this.prefix}/`)) {
      return new Response("not under the prefix", { status: 404 });
    }
    const path = url.pathname.slice(this.prefix.length) + url.search;
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      const headers = new Headers(request.headers);
      headers.delete("host");
      return await fetch(`http://127.0.0.1:${upstreamPort}${path}`, {
        method: request.method,
        headers,
        body: request.body,
      });
    }
    if (this.holdSilent) {
      const { socket, response } = Deno.upgradeWebSocket(request);
      this.upgrades++;
      this.#track(socket);
      return response;
    }
    if (this.acceptAndDrop) {
      const { socket, response } = Deno.upgradeWebSocket(request);
      this.upgrades++;
      this.#track(socket);
      socket.onopen = () => socket.close(1011, "proxy dropped it");
      return response;
    }
    const headers: Record<string, string> = {};
    const auth = request.headers.get("authorization");
    if (auth !== null) headers.authorization = auth;
    const upstream = new WebSocket(`ws://127.0.0.1:${upstreamPort}${path}`, { headers });
    upstream.binaryType = "arraybuffer";
    this.#track(upstream);
    const opened = await new Promise<boolean>((resolve) => {
      upstream.onopen = () => resolve(true);
      upstream.onclose = () => resolve(false);
    });
    if (!opened) return new Response("upstream refused", { status: 502 });
    const { socket, response } = Deno.upgradeWebSocket(request);
    this.upgrades++;
    socket.binaryType = "arraybuffer";
    this.#track(socket);
    socket.onmessage = (event) => {
      if (upstream.readyState === WebSocket.OPEN) upstream.send(event.data);
    };
    const limit = this.dropAfterMessagesDown;
    const delay = this.dropDelayMs;
    let down = 0;
    const drop = () => {
      if (socket.readyState === WebSocket.OPEN) socket.close(1011, "proxy dropped it");
    };
    upstream.onmessage = (event) => {
      if (socket.readyState !== WebSocket.OPEN || (limit !== null && down >= limit)) return;
      socket.send(event.data);
      if (limit !== null && ++down === limit) {
        if (delay === 0) drop();
        else this.#timers.add(setTimeout(drop, delay));
      }
    };
    socket.onclose = () => upstream.close();
    upstream.onclose = () => {
      if (socket.readyState === WebSocket.OPEN) socket.close();
    };
    return response;
  }

  /** Closes every socket it holds, both sides of each bridge. */
  cut(): void {
    for (const socket of this.#sockets) {
      try {
        socket.close();
      } catch {
        // Not open yet, or closing.
      }
    }
  }

  #track(socket: WebSocket): void {
    this.#sockets.add(socket);
    socket.addEventListener("close", () => this.#sockets.delete(socket));
  }

  /** Closes every bridged socket, waits for their close, and stops listening. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer);
    const closed = [...this.#sockets].map((socket) =>
      new Promise<void>((resolve) => {
        if (socket.readyState === WebSocket.CLOSED) return resolve();
        socket.addEventListener("close", () => resolve());
        try {
          socket.close();
        } catch {
          resolve();
        }
      })
    );
    await Promise.all(closed);
    await this.#server.shutdown();
  }
}
