/**
 * Replies too large for a Codex v1 (legacy) stream, where each message is one
 * relay frame (at most 261,120 bytes): the executor sizes what it can to fit
 * and answers with an error what cannot, never with silence. The harness side
 * is raw legacy frames (seq from 0, acks 0, one segment) over real
 * WebSockets, to the real executor behind a real rendezvous or mux.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Executor } from "../lib/exec/executor.ts";
import { DEFAULT_LEGACY_MESSAGE_BYTES } from "../lib/mux/reliable_stream.ts";
import { RelaySocket } from "../lib/relay/relay_socket.ts";
import type { ReceivedFrame } from "../lib/relay/relay_socket.ts";
import { serveRendezvous } from "../lib/server/rendezvous_server.ts";
import { runExecutor } from "../lib/server/executor_loop.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { dataFrame } from "./_support/frames.ts";
import { loopback } from "./_mux_loopback.ts";

const TOKEN = "test-token-0123456789abcdef";
const D = 10_000;

type Message = Record<string, unknown>;
interface ReadReply {
  chunks: { seq: number; stream: string; chunk: string }[];
  nextSeq: number;
  closed: boolean;
}

/** A Codex v1 harness on one stream: legacy frames, one JSON-RPC message each. */
class LegacyHarness {
  /** Request ids count from here. */
  nextId = 1;
  /** Notifications received so far. */
  notifications: Message[] = [];
  /** The largest data frame payload received, in bytes. */
  largestPayload = 0;
  #relay: RelaySocket;
  #frames: AsyncIterator<ReceivedFrame>;
  #streamId: string;
  #seq = 0;

  constructor(relay: RelaySocket, streamId: string) {
    this.#relay = relay;
    this.#frames = relay[Symbol.asyncIterator]();
    this.#streamId = streamId;
  }

  send(message: Message): Promise<void> {
    return this.#relay.send(dataFrame(this.#streamId, this.#seq++, JSON.stringify(message)));
  }

  /** Sends a request and returns its reply (result or error), keeping notifications. */
  async request(method: string, params: Message): Promise<Message> {
    const id = this.nextId++;
    await this.send({ id, method, params });
    while (true) {
      const message = await this.#next(`reply to ${method} #${id}`);
      if (message.id === id) return message;
      if (message.method !== undefined) this.notifications.push(message);
    }
  }

  /** Waits for a notification that `match` accepts. */
  async notification(label: string, match: (message: Message) => boolean): Promise<Message> {
    while (true) {
      const seen = this.notifications.find(match);
      if (seen) return seen;
      const message = await this.#next(label);
      if (message.method !== undefined) this.notifications.push(message);
    }
  }

  async start(): Promise<void> {
    const reply = await this.request("initialize", { clientName: "legacy-test" });
    assert.ok(reply.result, JSON.stringify(reply));
    await this.send({ method: "initialized", params: {} });
  }

  async #next(label: string): Promise<Message> {
    while (true) {
      const step = await withDeadline(this.#frames.next(), D, label);
      if (step.done) throw new Error(`Relay socket closed while waiting for ${label}`);
      const frame = step.value;
      if (frame.streamId !== this.#streamId || frame.body.kind !== "data") continue;
      assert.equal(frame.body.segmentCount, 1, "legacy replies are one frame each");
      this.largestPayload = Math.max(this.largestPayload, frame.body.payload.length);
      return JSON.parse(new TextDecoder().decode(frame.body.payload));
    }
  }
}

/** The executor behind a real rendezvous (runExecutor), with a legacy harness on it. */
async function throughRendezvous(cwd: string) {
  const rendezvous = await serveRendezvous({ token: TOKEN });
  const executor = new Executor({ cwd, writeRoots: [cwd] });
  const handle = runExecutor({
    registry: rendezvous.registryUrl,
    executorId: "box-1",
    token: TOKEN,
    executor,
  });
  await until(() => handle.status === "connected", D, "executor connected");
  const relay = await RelaySocket.connect(`${rendezvous.url}/harness/box-1?role=harness`, {
    token: TOKEN,
  });
  const harness = new LegacyHarness(relay, "legacy-1");
  await harness.start();
  return {
    harness,
    async [Symbol.asyncDispose]() {
      await relay.close();
      await handle.close();
      await executor.close();
      await rendezvous[Symbol.asyncDispose]();
    },
  };
}

function pattern(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 7 + (i >> 8)) & 0xff;
  return bytes;
}

function join(parts: Uint8Array[]): Uint8Array {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    all.set(part, offset);
    offset += part.length;
  }
  return all;
}

/** Reads a process from seq 0 until `done`, checking each reply is a result with seqs in order. */
async function readAll(
  harness: LegacyHarness,
  processId: string,
  done: (reply: ReadReply, chunks: number) => boolean,
): Promise<{ reads: number; seqs: number[]; bytes: Uint8Array }> {
  const seqs: number[] = [];
  const parts: Uint8Array[] = [];
  let afterSeq = 0;
  for (let reads = 1;; reads++) {
    assert.ok(reads <= 1_000, "reads end");
    const reply = await harness.request("process/read", { processId, afterSeq });
    assert.ok(reply.result, `read ${reads}: ${JSON.stringify(reply).slice(0, 300)}`);
    const result = reply.result as ReadReply;
    for (const chunk of result.chunks) {
      seqs.push(chunk.seq);
      parts.push(Uint8Array.fromBase64(chunk.chunk));
    }
    afterSeq = result.nextSeq - 1;
    if (done(result, seqs.length)) return { reads, seqs, bytes: join(parts) };
  }
}

Deno.test("legacy stream: fs/readFile answers the largest file that fits one frame and refuses one byte more with -32602", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await using rig = await throughRendezvous(dir);
    const { harness } = rig;
    const limit = DEFAULT_LEGACY_MESSAGE_BYTES;
    const largestFor = (id: number) => {
      const envelope = JSON.stringify({ jsonrpc: "2.0", id, result: { dataBase64: "" } }).length;
      return Math.floor((limit - envelope) / 4) * 3;
    };

    const fits = largestFor(harness.nextId);
    const content = pattern(fits);
    await Deno.writeFile(`${dir}/fits.bin`, content);
    const answer = await harness.request("fs/readFile", { path: `${dir}/fits.bin` });
    assert.ok(answer.result, JSON.stringify(answer).slice(0, 300));
    const data = Uint8Array.fromBase64((answer.result as { dataBase64: string }).dataBase64);
    assert.deepEqual(data, content);
    assert.ok(harness.largestPayload <= limit, `${harness.largestPayload} > ${limit}`);
    assert.ok(harness.largestPayload > limit - 4, "the file filled the frame");

    const over = largestFor(harness.nextId) + 1;
    await Deno.writeFile(`${dir}/over.bin`, pattern(over));
    const refusal = await harness.request("fs/readFile", { path: `${dir}/over.bin` });
    const error = refusal.error as { code: number; message: string };
    assert.ok(error, JSON.stringify(refusal).slice(0, 300));
    assert.equal(error.code, -32602);
    assert.match(error.message, new RegExp(`its ${over} bytes`));
    assert.match(error.message, new RegExp(`${limit} bytes`));
    assert.match(error.message, /over\.bin/);

    // The stream still serves.
    const again = await harness.request("fs/readFile", { path: `${dir}/fits.bin` });
    assert.ok(again.result);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("legacy stream: process/read of 400,000 retained bytes returns them all across several reads", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await using rig = await throughRendezvous(dir);
    const { harness } = rig;
    const content = pattern(400_000);
    await Deno.writeFile(`${dir}/out.bin`, content);
    const started = await harness.request("process/start", {
      processId: "p1",
      argv: ["cat", `${dir}/out.bin`],
    });
    assert.ok(started.result, JSON.stringify(started));
    // All output is retained before the first read.
    await harness.notification(
      "process/closed",
      (m) => m.method === "process/closed" && (m.params as Message).processId === "p1",
    );

    const { reads, seqs, bytes } = await readAll(harness, "p1", (reply) => reply.closed);
    assert.ok(reads > 1, `${reads} read(s)`);
    assert.equal(bytes.length, content.length);
    assert.deepEqual(bytes, content);
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "every chunk once, in order");
    assert.ok(harness.largestPayload <= DEFAULT_LEGACY_MESSAGE_BYTES);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("legacy stream: process/read fits hundreds of tiny chunks, whose JSON outweighs their bytes", async () => {
  // A smaller legacy limit (8 KiB) makes 300 three-byte chunks (~13 KB of JSON) too many for one reply.
  const limit = 8 * 1024;
  const executor = new Executor();
  await using rig = loopback({
    onStream: (stream) => void executor.serve(stream),
    stream: { legacyMessageBytes: limit },
  });
  const relay = await RelaySocket.connect(rig.url);
  try {
    const harness = new LegacyHarness(relay, "legacy-tiny");
    await harness.start();
    const started = await harness.request("process/start", {
      processId: "cat",
      argv: ["cat"],
      pipeStdin: true,
    });
    assert.ok(started.result, JSON.stringify(started));
    // One chunk per line: each is echoed before the next is written.
    const lines = 300;
    for (let i = 1; i <= lines; i++) {
      const written = await harness.request("process/write", {
        processId: "cat",
        chunk: btoa(`${i % 10}${i % 7}\n`),
      });
      assert.deepEqual(written.result, { status: "accepted" });
      await harness.notification(
        `output seq ${i}`,
        (m) => m.method === "process/output" && (m.params as { seq: number }).seq === i,
      );
    }

    const { reads, seqs, bytes } = await readAll(harness, "cat", (_, n) => n >= lines);
    assert.ok(reads > 1, `${reads} read(s)`);
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "every chunk once, in order");
    const expected = Array.from({ length: lines }, (_, i) => `${(i + 1) % 10}${(i + 1) % 7}\n`);
    assert.equal(new TextDecoder().decode(bytes), expected.join(""));
    assert.ok(harness.largestPayload <= limit, `${harness.largestPayload} > ${limit}`);

    await harness.request("process/terminate", { processId: "cat" });
  } finally {
    await relay.close();
    await executor.close();
  }
});
