/**
 * outpost: a Deno-native remote executor, wire-compatible with the Codex
 * exec-server relay. A machine runs an executor that dials out to a
 * rendezvous over one WebSocket; many independent JSON-RPC sessions ride that
 * socket as virtual streams, each able to start sandboxed processes and work
 * with files on that machine.
 *
 * This module re-exports the relay framing layer, the stream mux, the
 * sandboxed executor and the client. It holds no logic.
 *
 * @example Encode and decode a relay frame
 * ```ts
 * import { decodeFrame, encodeFrame } from "@outpost/exec";
 * const bytes = encodeFrame({
 *   version: 1,
 *   streamId: "s-1",
 *   ack: 0,
 *   ackBits: 0,
 *   body: { kind: "resume", nextSeq: 0 },
 * });
 * console.log(decodeFrame(bytes).streamId); // "s-1"
 * ```
 *
 * @module
 */

// Errors
export {
  ProtocolError,
  RelayClosedError,
  RpcError,
  SandboxDeniedError,
  StreamResetError,
} from "./lib/errors.ts";

// Relay framing layer (lib/relay)
export {
  decodeFrame,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  MAX_RESET_REASON_BYTES,
  MAX_STREAM_ID_BYTES,
  MAX_UINT32,
  RELAY_FRAME_VERSION,
} from "./lib/relay/frame_codec.ts";
export type {
  AckBody,
  DataBody,
  DecodeFrameOptions,
  FrameBody,
  HandshakeBody,
  HeartbeatBody,
  RelayFrame,
  ResetBody,
  ResumeBody,
} from "./lib/relay/frame_codec.ts";
export {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_HIGH_WATER_MARK,
  DEFAULT_LOW_WATER_MARK,
  DEFAULT_MAX_QUEUED_BYTES,
  DEFAULT_MAX_QUEUED_FRAMES,
  RelaySocket,
} from "./lib/relay/relay_socket.ts";
export type {
  ReceivedFrame,
  RelayCloseInfo,
  RelayConnectOptions,
  RelaySocketOptions,
} from "./lib/relay/relay_socket.ts";

// JSON-RPC (lib/rpc)
export type { MessageChannel } from "./lib/rpc/message_channel.ts";

// Stream mux (lib/mux)

// Sandboxed executor (lib/exec)

// Servers (lib/server)
export { serveRendezvous } from "./lib/server/rendezvous_server.ts";
export type {
  RendezvousEvent,
  RendezvousOptions,
  RendezvousServer,
} from "./lib/server/rendezvous_server.ts";
export type { RelayRouterStats, RouterEvent, RouterRole } from "./lib/mux/relay_router.ts";

// Client (lib/client)
