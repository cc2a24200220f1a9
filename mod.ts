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
  QUEUED_FRAME_OVERHEAD_BYTES,
  RelaySocket,
} from "./lib/relay/relay_socket.ts";
export type {
  ReceivedFrame,
  RelayCloseInfo,
  RelayConnectOptions,
  RelaySocketOptions,
} from "./lib/relay/relay_socket.ts";

// JSON-RPC (lib/rpc)
export type { BinaryLane, MessageChannel } from "./lib/rpc/message_channel.ts";
export {
  DEFAULT_MAX_MESSAGE_BYTES,
  JsonResult,
  JsonRpcPeer,
  MIN_MAX_MESSAGE_BYTES,
} from "./lib/rpc/json_rpc_peer.ts";
export type {
  BinaryRequest,
  JsonRpcPeerOptions,
  RequestContext,
  RequestHandler,
  RequestOptions,
} from "./lib/rpc/json_rpc_peer.ts";
export {
  binaryProcessId,
  binaryWriteRequestId,
  decodeBinaryOutput,
  decodeBinaryWrite,
  encodeBinaryOutput,
  encodeBinaryWrite,
  isBinaryMessage,
} from "./lib/rpc/binary_messages.ts";
export type { BinaryOutput, BinaryOutputStream, BinaryWrite } from "./lib/rpc/binary_messages.ts";
export {
  INTERNAL_ERROR,
  INVALID_PARAMS,
  INVALID_REQUEST,
  METHOD_NOT_FOUND,
  NOT_FOUND,
  PARSE_ERROR,
  SANDBOX_DENIED,
  SESSION_ATTACHED_ELSEWHERE,
} from "./lib/rpc/error_codes.ts";

// Stream mux (lib/mux)
export {
  DEFAULT_DETACH_WINDOW_MS,
  DEFAULT_RECEIVE_BUDGET_BYTES,
  MuxStream,
  StreamMux,
} from "./lib/mux/stream_mux.ts";
export type {
  MuxStreamOptions,
  OpenStreamOptions,
  StreamMuxOptions,
} from "./lib/mux/stream_mux.ts";
export { DEFAULT_SEGMENT_BYTES, ReliableStream } from "./lib/mux/reliable_stream.ts";
export type {
  ReliableStreamOptions,
  ReliableStreamStats,
  StreamMode,
} from "./lib/mux/reliable_stream.ts";
export * from "./lib/mux/reset_reasons.ts";
export { type BudgetHolder, ByteBudget } from "./lib/_byte_budget.ts";

// Sandboxed executor (lib/exec)
export { Executor } from "./lib/exec/executor.ts";
export type { ExecutorOptions } from "./lib/exec/executor.ts";
export type { EnvironmentInfo, SandboxInfo, ShellInfo } from "./lib/exec/environment_info.ts";
export { SandboxPolicy } from "./lib/exec/sandbox_policy.ts";
export type {
  AccessKind,
  PathCheckOptions,
  PermissionQuery,
  SandboxPolicyOptions,
} from "./lib/exec/sandbox_policy.ts";
export type { Confinement } from "./lib/exec/confinement.ts";
export type { Capabilities, DenoPermissions } from "./lib/exec/confinement.ts";
export type { EnvPolicy } from "./lib/exec/child_env.ts";
export {
  MAX_QUEUED_STDIN_BYTES,
  MAX_QUEUED_STDIN_WRITES,
  ProcessLimiter,
  ProcessTable,
  QueuedStdinLimit,
  TIMEOUT_EXIT_CODE,
} from "./lib/exec/process_table.ts";
export type {
  EventSinkOptions,
  ProcessEvent,
  ProcessEventSink,
  ProcessInfo,
  ProcessTableOptions,
  ReadChunk,
  ReadOptions,
  ReadResult,
  StartProcessOptions,
} from "./lib/exec/process_table.ts";
export type { OutputStream } from "./lib/exec/output_buffer.ts";
export { CORE_ENV, DEFAULT_INHERITED_ENV } from "./lib/exec/child_env.ts";

// Servers (lib/server)
export { serveLocal } from "./lib/server/local_server.ts";
export type {
  ListenerEvent,
  LocalServer,
  LocalServerEvent,
  LocalServerStats,
  ServeLocalOptions,
} from "./lib/server/local_server.ts";
export { MAX_URL_TTL_MS, MIN_URL_TTL_MS, serveRendezvous } from "./lib/server/rendezvous_server.ts";
export type {
  RendezvousEvent,
  RendezvousOptions,
  RendezvousServer,
} from "./lib/server/rendezvous_server.ts";
export { CLOSE_OVER_BUDGET, ROUTER_FRAME_OVERHEAD_BYTES } from "./lib/mux/relay_router.ts";
export type {
  RelayRouterOptions,
  RelayRouterStats,
  RouterEvent,
  RouterRole,
} from "./lib/mux/relay_router.ts";
export { RegistrationError, RESUME_RETRY_MS, runExecutor } from "./lib/server/executor_loop.ts";
export type {
  RemoteExecutorEvent,
  RemoteExecutorHandle,
  RemoteExecutorStatus,
  RunExecutorOptions,
} from "./lib/server/executor_loop.ts";

// Client (lib/client)
export { connect, Connection } from "./lib/client/connect.ts";
export type {
  ConnectionEvent,
  ConnectionRequestOptions,
  ConnectOptions,
} from "./lib/client/connect.ts";
export { MAX_COMMAND_TIMEOUT_MS, RemoteCommand } from "./lib/client/remote_command.ts";
export type { RemoteCommandOptions } from "./lib/client/remote_command.ts";
export { RemoteProcess, signalExitCode } from "./lib/client/remote_process.ts";
export type {
  KillOptions,
  ProcessTransport,
  RemoteProcessOutput,
  RemoteProcessStatus,
  RemoteProcessStdio,
} from "./lib/client/remote_process.ts";
export { RemoteFs } from "./lib/client/remote_fs.ts";
export type {
  FsCallOptions,
  FsTransport,
  RemoteDirEntry,
  RemoteFileInfo,
} from "./lib/client/remote_fs.ts";
