/**
 * Test support: an executor-side {@linkcode StreamMux} behind a real loopback
 * WebSocket server, and harness muxes (or raw relay sockets) connecting to it.
 *
 * @module
 */

import { RelaySocket } from "../lib/relay/relay_socket.ts";
import { StreamMux, type StreamMuxOptions } from "../lib/mux/stream_mux.ts";

/** A loopback server whose accepted sockets feed one executor mux. */
export interface Loopback extends AsyncDisposable {
  /** The executor side. */
  executor: StreamMux;
  /** `ws://127.0.0.1:PORT/`. */
  url: string;
  /** Every server-side socket accepted so far, in order. */
  accepted: RelaySocket[];
  /** Resolves with the next accepted server-side socket. */
  nextAccepted(): Promise<RelaySocket>;
  /** Harness muxes made by {@linkcode Loopback.harness}, closed on dispose. */
  harnesses: StreamMux[];
  /** Connects a new harness mux. */
  harness(options?: Partial<StreamMuxOptions>): Promise<StreamMux>;
}

/**
 * Starts the server and the executor mux.
 *
 * @param options Executor mux options (role is set).
 * @param attachAccepted Whether accepted sockets are attached to the executor mux.
 * @returns The loopback; dispose it to close everything.
 */
export function loopback(
  options: Partial<StreamMuxOptions> = {},
  attachAccepted = true,
): Loopback {
  const executor = new StreamMux({ ...options, role: "executor" });
  const accepted: RelaySocket[] = [];
  let waiting: ((socket: RelaySocket) => void)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    const relay = RelaySocket.accept(socket);
    accepted.push(relay);
    if (attachAccepted) executor.attach(relay);
    const wake = waiting;
    waiting = [];
    for (const w of wake) w(relay);
    return response;
  });
  const url = `ws://127.0.0.1:${server.addr.port}/`;
  const harnesses: StreamMux[] = [];
  return {
    executor,
    url,
    accepted,
    harnesses,
    nextAccepted: () => new Promise((resolve) => waiting.push(resolve)),
    async harness(harnessOptions = {}) {
      const mux = new StreamMux({ ...harnessOptions, role: "harness" });
      harnesses.push(mux);
      mux.attach(await RelaySocket.connect(url));
      return mux;
    },
    async [Symbol.asyncDispose]() {
      for (const mux of harnesses) await mux.close();
      await executor.close();
      for (const socket of accepted) await socket.close();
      await server.shutdown();
    },
  };
}

/** Executor `onStream` that echoes every message back with a prefix. */
export function echo(
  prefix = "echo:",
): (stream: import("../lib/mux/stream_mux.ts").MuxStream) => void {
  return (stream) => {
    (async () => {
      try {
        for await (const message of stream) await stream.send(prefix + message);
      } catch {
        // reset or closed: the test asserts on the other side
      }
    })();
  };
}
