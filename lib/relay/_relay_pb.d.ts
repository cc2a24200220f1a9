// Hand-written types for the generated `_gen/relay_pb.js` (pbjs emits plain
// JavaScript). Only what `frame_codec.ts` uses is declared.

/** A protobufjs writer, as returned by `encode`. */
export interface PbWriter {
  finish(): Uint8Array;
}

/** The generated message object for `RelayMessageFrame` (camelCase fields). */
export interface PbFrame {
  version?: number;
  streamId?: string;
  ack?: number;
  ackBits?: number;
  data?:
    | { seq?: number; segmentIndex?: number; segmentCount?: number; payload?: Uint8Array }
    | null;
  ackFrame?: Record<string, never> | null;
  resume?: { nextSeq?: number } | null;
  reset?: { reason?: string } | null;
  heartbeat?: Record<string, never> | null;
  handshake?: { payload?: Uint8Array } | null;
  traceparent?: string | null;
  tracestate?: string | null;
  body?: string;
}

/** The generated codec for `RelayMessageFrame`. */
export interface PbFrameType {
  encode(message: PbFrame): PbWriter;
  decode(bytes: Uint8Array): PbFrame;
}

/** The generated namespace root. */
export const codex: {
  exec_server: { relay: { v1: { RelayMessageFrame: PbFrameType } } };
};
