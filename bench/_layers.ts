/**
 * Layer figures that locate a gap between raw WebSocket and `exec`: the relay
 * socket alone (protobuf data frames through `RelaySocket`, one hop, child
 * process -> this process), at the same payload size as the raw peer.
 *
 * As a script: `deno run -A bench/_layers.ts relay-send URL SIZE TOTAL`.
 *
 * @module
 */

import { RelaySocket } from "../lib/relay/relay_socket.ts";
import { ArrivalCounter, type Arrivals, type Throughput, timeChildSender } from "./_util.ts";

const SELF = new URL(import.meta.url).pathname;

/**
 * Relay socket throughput: a child sends `total` payload bytes as reliable-style
 * data frames of `size` payload bytes; this process accepts and iterates frames.
 *
 * @param size Payload bytes per frame.
 * @param total Payload bytes in all.
 * @param timeoutMs Deadline.
 * @returns Payload throughput from the first to the last frame.
 */
export async function relaySocketThroughput(
  size: number,
  total: number,
  timeoutMs = 60_000,
): Promise<Throughput> {
  let resolveDone: (v: Arrivals) => void = () => {};
  const done = new Promise<Arrivals>((r) => resolveDone = r);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    const relay = RelaySocket.accept(socket);
    (async () => {
      const counter = new ArrivalCounter();
      for await (const frame of relay) {
        if (frame.body.kind === "data") counter.add(frame.body.payload.byteLength);
      }
      resolveDone(counter.arrivals);
    })();
    return response;
  });
  try {
    const url = `ws://127.0.0.1:${server.addr.port}/relay`;
    return await timeChildSender(
      SELF,
      ["relay-send", url, size, total],
      done,
      timeoutMs,
      "relay socket transfer",
    );
  } finally {
    await server.shutdown();
  }
}

async function relaySend(url: string, size: number, total: number): Promise<void> {
  const socket = await RelaySocket.connect(url);
  const payload = new Uint8Array(size);
  let seq = 1;
  for (let sent = 0; sent < total; sent += size) {
    await socket.send({
      version: 1,
      streamId: "bench-stream",
      ack: 0,
      ackBits: 0,
      body: { kind: "data", seq: seq++, segmentIndex: 0, segmentCount: 1, payload },
    });
  }
  await socket.close("done");
}

if (import.meta.main) {
  const [mode, ...rest] = Deno.args;
  if (mode === "relay-send") {
    await relaySend(rest[0], Number(rest[1]), Number(rest[2]));
  } else {
    console.error("usage: _layers.ts relay-send URL SIZE TOTAL");
    Deno.exit(2);
  }
}
