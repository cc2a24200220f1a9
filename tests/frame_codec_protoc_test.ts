// Cross-check of the relay frame codec against an independent protobuf
// implementation: protoc (Debian's protobuf-compiler) encodes text-format test
// vectors, and decodes our bytes back to text. Our decoder must read protoc's
// bytes as the same frame, our encoder must write the same bytes, and protoc
// must print our bytes as the expected text.
import assert from "node:assert/strict";
import { decodeFrame, encodeFrame, MAX_UINT32, type RelayFrame } from "../lib/relay/frame_codec.ts";

const ROOT = new URL("../", import.meta.url);
const MESSAGE = "codex.exec_server.relay.v1.RelayMessageFrame";
const INSTALL_HINT = "Cannot run protoc: install it with `apt-get install -y protobuf-compiler` " +
  "(Debian/Ubuntu; .ci/run does this) or put `protoc` on PATH";
const utf8 = new TextEncoder();

async function protoc(mode: "--encode" | "--decode", input: Uint8Array): Promise<Uint8Array> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("protoc", {
      args: [`${mode}=${MESSAGE}`, "-I", "proto", "proto/relay.proto"],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw new Error(INSTALL_HINT, { cause: error });
    throw error;
  }
  const writer = child.stdin.getWriter();
  await writer.write(input);
  await writer.close();
  const { success, stdout, stderr } = await child.output();
  if (!success) {
    throw new Error(`Cannot ${mode.slice(2)} with protoc: ${new TextDecoder().decode(stderr)}`);
  }
  return stdout;
}

/** protoc's C-style escaping of a string or bytes field in text format. */
function cEscape(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) {
    if (b === 0x0a) out += "\\n";
    else if (b === 0x0d) out += "\\r";
    else if (b === 0x09) out += "\\t";
    else if (b === 0x22) out += '\\"';
    else if (b === 0x27) out += "\\'";
    else if (b === 0x5c) out += "\\\\";
    else if (b < 0x20 || b >= 0x7f) out += "\\" + b.toString(8).padStart(3, "0");
    else out += String.fromCharCode(b);
  }
  return `"${out}"`;
}

function quote(value: string | Uint8Array): string {
  return cEscape(typeof value === "string" ? utf8.encode(value) : value);
}

/** The frame in protoc's text format, as `protoc --decode` prints it. */
function toText(frame: RelayFrame): string {
  const lines = [`version: ${frame.version}`, `stream_id: ${quote(frame.streamId)}`];
  if (frame.ack !== 0) lines.push(`ack: ${frame.ack}`);
  if (frame.ackBits !== 0) lines.push(`ack_bits: ${frame.ackBits}`);
  const body = frame.body;
  const inner: string[] = [];
  let name: string;
  switch (body.kind) {
    case "data":
      name = "data";
      if (body.seq !== 0) inner.push(`seq: ${body.seq}`);
      if (body.segmentIndex !== 0) inner.push(`segment_index: ${body.segmentIndex}`);
      inner.push(`segment_count: ${body.segmentCount}`);
      inner.push(`payload: ${quote(body.payload)}`);
      break;
    case "ack":
      name = "ack_frame";
      break;
    case "resume":
      name = "resume";
      if (body.nextSeq !== 0) inner.push(`next_seq: ${body.nextSeq}`);
      break;
    case "reset":
      name = "reset";
      inner.push(`reason: ${quote(body.reason)}`);
      break;
    case "heartbeat":
      name = "heartbeat";
      break;
    case "handshake":
      name = "handshake";
      inner.push(`payload: ${quote(body.payload)}`);
      break;
  }
  lines.push(`${name} {`, ...inner.map((line) => `  ${line}`), "}");
  if (frame.traceparent !== undefined) lines.push(`traceparent: ${quote(frame.traceparent)}`);
  if (frame.tracestate !== undefined) lines.push(`tracestate: ${quote(frame.tracestate)}`);
  return lines.join("\n") + "\n";
}

function vectors(): RelayFrame[] {
  const base = { version: 1, streamId: "s-1", ack: 0, ackBits: 0 };
  const list: RelayFrame[] = [
    { ...base, body: { kind: "resume", nextSeq: 0 } },
    { ...base, body: { kind: "resume", nextSeq: MAX_UINT32 } },
    { ...base, ack: MAX_UINT32, ackBits: MAX_UINT32, body: { kind: "ack" } },
    { ...base, body: { kind: "heartbeat" } },
    { ...base, body: { kind: "reset", reason: "stream_closed" } },
    { ...base, body: { kind: "reset", reason: "r".repeat(256) } },
    { ...base, body: { kind: "reset", reason: "é\n\"quoted\" \\ 'x' 😀" } },
    { ...base, body: { kind: "handshake", payload: Uint8Array.from([0, 1, 0x7f, 0x80, 0xff]) } },
    {
      ...base,
      streamId: "x".repeat(128),
      body: { kind: "data", seq: 0, segmentIndex: 0, segmentCount: 1, payload: utf8.encode("{}") },
    },
    {
      ...base,
      streamId: crypto.randomUUID(),
      ack: 300,
      ackBits: 0x8000_0001,
      body: {
        kind: "data",
        seq: MAX_UINT32,
        segmentIndex: MAX_UINT32 - 1,
        segmentCount: MAX_UINT32,
        payload: Uint8Array.from({ length: 256 }, (_, i) => i),
      },
      traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      tracestate: "congo=t61rcWkgMzE",
    },
    {
      ...base,
      streamId: "ü-ñ",
      body: {
        kind: "data",
        seq: 1,
        segmentIndex: 0,
        segmentCount: 1,
        payload: new Uint8Array(70_000).fill(0x41),
      },
      traceparent: "",
      tracestate: "",
    },
    { ...base, body: { kind: "ack" }, tracestate: "only" },
  ];
  // Seeded random frames of every kind.
  let state = 0x2545f491;
  const next = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  const num = (): number => [0, 1, 127, 128, 16_384, MAX_UINT32, next()][next() % 7];
  const bytes = (): Uint8Array => Uint8Array.from({ length: 1 + next() % 40 }, () => next() & 0xff);
  for (let i = 0; i < 24; i++) {
    const frame: RelayFrame = {
      ...base,
      streamId: `s-${next()}`,
      ack: num(),
      ackBits: num(),
      body: { kind: "ack" },
    };
    switch (i % 6) {
      case 0: {
        const count = Math.max(1, num());
        frame.body = {
          kind: "data",
          seq: num(),
          segmentIndex: next() % count,
          segmentCount: count,
          payload: bytes(),
        };
        break;
      }
      case 1:
        frame.body = { kind: "resume", nextSeq: num() };
        break;
      case 2:
        frame.body = { kind: "reset", reason: `reason-${next()}` };
        break;
      case 3:
        frame.body = { kind: "handshake", payload: bytes() };
        break;
      case 4:
        frame.body = { kind: "heartbeat" };
        break;
    }
    if (next() % 2 === 0) frame.traceparent = `tp-${next()}`;
    list.push(frame);
  }
  return list;
}

Deno.test("protoc encodes the upstream example to the bytes we decode and re-encode", async () => {
  const bytes = await protoc("--encode", utf8.encode('version: 1 stream_id: "s-1" resume {}'));
  assert.deepEqual([...bytes], [0x08, 0x01, 0x12, 0x03, 0x73, 0x2d, 0x31, 0x3a, 0x00]);
  assert.deepEqual(encodeFrame(decodeFrame(bytes)), bytes);
});

Deno.test("protoc and our codec agree on every test vector, both ways", async () => {
  for (const frame of vectors()) {
    const text = toText(frame);
    const ours = encodeFrame(frame);
    const theirs = await protoc("--encode", utf8.encode(text));
    assert.deepEqual(decodeFrame(theirs), frame, `decode protoc bytes of:\n${text}`);
    assert.deepEqual(ours, theirs, `same bytes as protoc for:\n${text}`);
    const printed = new TextDecoder().decode(await protoc("--decode", ours));
    assert.equal(printed, text);
  }
});
