/**
 * One JSON-RPC connection to the executor: the Codex exec-server lifecycle
 * (`initialize`, `initialized`, then methods), method dispatch, error
 * mapping, and `process/*` notifications while attached. It knows nothing of
 * sockets or frames: it speaks over a {@linkcode MessageChannel}.
 *
 * @module
 */

import { RpcError, SandboxDeniedError } from "../errors.ts";
import { MAX_TERMINAL_SIDE, MAX_TIMER_MS } from "../_limits.ts";
import {
  INTERNAL_ERROR,
  INVALID_PARAMS,
  INVALID_REQUEST,
  METHOD_NOT_FOUND,
  NOT_FOUND,
  SANDBOX_DENIED,
} from "../rpc/error_codes.ts";
import {
  type BinaryRequest,
  DEFAULT_MAX_MESSAGE_BYTES,
  JsonResult,
  JsonRpcPeer,
  type RequestContext,
} from "../rpc/json_rpc_peer.ts";
import {
  binaryProcessId,
  binaryWriteRequestId,
  decodeBinaryWrite,
  encodeBinaryOutput,
  SEGMENT_FIT_DATA_BYTES,
} from "../rpc/binary_messages.ts";
import type { MessageChannel } from "../rpc/message_channel.ts";
import type { EnvironmentInfo } from "./environment_info.ts";
import type { EnvPolicy } from "./child_env.ts";
import { FS_METHODS, type FsOps } from "./fs_ops.ts";
import { shownPath } from "./sandbox_policy.ts";
import type {
  Confinement,
  DenoPermissions,
  ProcessEvent,
  ReadChunk,
  ReadResult,
} from "./process_table.ts";
import type { SessionAttachment, SessionRecord, SessionRegistry } from "./session_registry.ts";
import { CallSlots } from "./_call_slots.ts";
import {
  absolutePath,
  base64Bytes,
  invalidParam,
  optionalBoolean,
  optionalInteger,
  optionalString,
  type Params,
  paramsObject,
  refuseCodexSandbox,
  requiredString,
  stringArray,
  stringRecord,
  wellFormed,
} from "./_params.ts";

/**
 * The most fs calls one connection has in flight; more wait their turn. With
 * the executor's own bound (see {@linkcode SessionContext.fsSlots}) this keeps
 * calls that do not return (a confined write waiting out a file lease in its
 * sandbox, a file on a mount that stopped answering) from taking every
 * blocking thread of the executor.
 */
export const MAX_FS_CALLS_PER_CONNECTION = 8;

/**
 * fs calls per connection that do not count against its 64-request cap while
 * they run or wait for a slot (their replies do); past this many they count.
 */
export const MAX_UNCOUNTED_FS_CALLS = 32;

/** The default cap on `waitMs` of `process/read`: 30 s. */
export const DEFAULT_MAX_WAIT_MS: number = 30_000;

/**
 * Long polls (`process/read` with `waitMs`) per connection whose wait does
 * not count against its request cap (64): a harness polling each of its 64
 * processes can still be read when it asks to end one. Past this many they
 * count again, so waiting replies (each up to a message) stay bounded.
 */
export const MAX_UNCOUNTED_READ_WAITS = 64;

/** Signal names accepted by `process/signal`: upstream words and Deno names. */
const SIGNALS: Record<string, Deno.Signal> = {
  interrupt: "SIGINT",
  terminate: "SIGTERM",
  kill: "SIGKILL",
  hangup: "SIGHUP",
  quit: "SIGQUIT",
  SIGINT: "SIGINT",
  SIGTERM: "SIGTERM",
  SIGKILL: "SIGKILL",
  SIGHUP: "SIGHUP",
  SIGQUIT: "SIGQUIT",
  SIGUSR1: "SIGUSR1",
  SIGUSR2: "SIGUSR2",
  SIGCONT: "SIGCONT",
  SIGSTOP: "SIGSTOP",
  SIGTSTP: "SIGTSTP",
  SIGWINCH: "SIGWINCH",
};

const CONFINEMENT_NAMES: readonly string[] = ["none", "deno", "os"];
/** The requests `#dispatch` serves besides the `fs/*` ones: sent without an id, they are misuse. */
const REQUEST_METHODS: ReadonlySet<string> = new Set([
  "initialize",
  "environment/info",
  "process/start",
  "process/read",
  "process/write",
  "process/signal",
  "process/terminate",
  "process/resize",
  "process/closeOutput",
  "process/list",
]);
const DENO_PERMISSION_NAMES: readonly string[] = [
  "read",
  "write",
  "net",
  "env",
  "run",
  "sys",
  "ffi",
];

/**
 * Bytes of a `process/read` result besides its chunks: nextSeq, the exit
 * fields and a failure message, with room to spare.
 */
const READ_FIELDS_BYTES = 1024;
/** Bytes around one chunk's base64 in a `process/read` result: `{"seq":…,"stream":…,"chunk":""},`. */
const CHUNK_FIELDS_BYTES = 64;
/** What one output byte can cost in a `process/read` result at worst: a 1-byte chunk. */
const WORST_CHUNK_BYTES_PER_BYTE = 4 + CHUNK_FIELDS_BYTES;
/** The reply bytes of the largest output chunk the process table makes. */
const LARGEST_CHUNK_REPLY_BYTES = chunkReplyBytes(SEGMENT_FIT_DATA_BYTES);

/** The bytes a chunk of `size` output bytes takes in a `process/read` result, at most. */
function chunkReplyBytes(size: number): number {
  return Math.ceil(size / 3) * 4 + CHUNK_FIELDS_BYTES;
}

const utf8 = new TextEncoder();

/** The bytes a reply to request `id` takes besides its result. */
function replyEnvelopeBytes(id: string | number): number {
  return utf8.encode(JSON.stringify({ jsonrpc: "2.0", id, result: null })).length - "null".length;
}

/** What a session needs from its executor. */
export interface SessionContext {
  /** The executor's sessions. */
  registry: SessionRegistry;
  /** The fs method handler. */
  fs: FsOps;
  /**
   * The executor's bound on fs calls in flight, all connections together
   * (each connection also keeps to {@linkcode MAX_FS_CALLS_PER_CONNECTION}).
   */
  fsSlots?: CallSlots;
  /** Produces the `environment/info` result. */
  environmentInfo: () => Promise<EnvironmentInfo>;
  /** The message size limit of the connection. */
  maxMessageBytes?: number;
  /** The cap applied to `waitMs`. @default {30000} */
  maxWaitMs?: number;
}

type Phase = "new" | "initialized-pending" | "ready" | "evicted";

/**
 * Maps an error thrown while serving a request to a JSON-RPC error.
 *
 * @param error What was thrown.
 * @param method The method being served.
 * @returns The error to reply with.
 */
export function toRpcError(error: unknown, method: string): RpcError {
  if (error instanceof RpcError) return error;
  if (error instanceof SandboxDeniedError) return new RpcError(SANDBOX_DENIED, error.message);
  if (error instanceof Deno.errors.NotCapable) {
    return new RpcError(SANDBOX_DENIED, `Cannot complete "${method}": ${error.message}`);
  }
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.AlreadyExists) {
    return new RpcError(INVALID_REQUEST, message);
  }
  if (error instanceof TypeError || error instanceof RangeError) {
    return new RpcError(INVALID_PARAMS, message);
  }
  return new RpcError(INTERNAL_ERROR, message.length > 0 ? message : `Cannot complete "${method}"`);
}

/**
 * A spawn that failed with NotFound blames "program or working directory":
 * when the request's cwd is what is missing (or not a directory), says so
 * with -32004, the code of a missing path; when it is a path the system
 * cannot take (too long, a link loop), with -32602. Other errors pass through.
 */
async function missingCwdError(
  error: unknown,
  program: string | undefined,
  cwd: string | undefined,
): Promise<unknown> {
  if (cwd === undefined || !(error instanceof Error)) return error;
  if (!(error.cause instanceof Deno.errors.NotFound)) return error;
  let problem: string;
  let code = NOT_FOUND;
  try {
    if ((await Deno.stat(cwd)).isDirectory) return error;
    problem = "is not a directory";
  } catch (statError) {
    // A path the system cannot take is the request's fault (-32602), as the fs methods answer.
    if (
      statError instanceof Deno.errors.NotFound || statError instanceof Deno.errors.NotADirectory
    ) {
      problem = "does not exist";
    } else if (statError instanceof Deno.errors.FilesystemLoop) {
      [code, problem] = [INVALID_PARAMS, "has too many levels of symbolic links"];
    } else if ((statError as { code?: unknown } | null)?.code === "ENAMETOOLONG") {
      [code, problem] = [
        INVALID_PARAMS,
        "is too long (a name or the whole path exceeds the system's limit)",
      ];
    } else {
      return error;
    }
  }
  return new RpcError(
    code,
    `Cannot start ${JSON.stringify(program)}: working directory "${shownPath(cwd)}" ${problem}`,
    undefined,
    { cause: error },
  );
}

function denoPermissions(params: Params): DenoPermissions | undefined {
  const value = params.denoPermissions;
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw invalidParam("denoPermissions", "must be an object", value);
  }
  const result: DenoPermissions = {};
  for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
    if (!DENO_PERMISSION_NAMES.includes(key)) {
      throw invalidParam(
        `denoPermissions.${key}`,
        `is not one of ${DENO_PERMISSION_NAMES.join(", ")}`,
      );
    }
    if (
      typeof item !== "boolean" &&
      !(Array.isArray(item) && item.every((entry) => typeof entry === "string"))
    ) {
      throw invalidParam(
        `denoPermissions.${key}`,
        "must be a boolean or an array of strings",
        item,
      );
    }
    result[key as keyof DenoPermissions] = item as boolean | string[];
  }
  return result;
}

/**
 * Codex's `envPolicy`, checked for shape here; its values (inherit modes,
 * pattern limits, `set` entries) are checked where the environment is built.
 */
function envPolicyParam(value: unknown): EnvPolicy {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalidParam("envPolicy", "must be an object", value);
  }
  const policy = value as Record<string, unknown>;
  for (const key of Object.keys(policy)) {
    if (!ENV_POLICY_KEYS.includes(key)) {
      throw invalidParam(`envPolicy.${key}`, `is not one of ${ENV_POLICY_KEYS.join(", ")}`);
    }
  }
  return policy as EnvPolicy;
}

const ENV_POLICY_KEYS = ["inherit", "ignoreDefaultExcludes", "exclude", "includeOnly", "set"];

/**
 * The params of a `process/output` notification as JSON text, built directly:
 * the base64 chunk (the bulk of the message) needs no escaping, so it is not
 * scanned and copied again by `JSON.stringify`.
 */
function outputParamsJson(
  event: Extract<ProcessEvent, { type: "output" }>,
): string {
  return `{"processId":${
    JSON.stringify(event.processId)
  },"seq":${event.seq},"stream":"${event.stream}","chunk":"${event.chunk.toBase64()}"}`;
}

function encodeEvent(
  event: Exclude<ProcessEvent, { type: "output" }>,
): [string, Record<string, unknown>] {
  switch (event.type) {
    case "exited": {
      const params: Record<string, unknown> = {
        processId: event.processId,
        seq: event.seq,
        exitCode: event.exitCode,
      };
      if (event.signal !== undefined) params.signal = event.signal;
      if (event.timedOut) params.timedOut = true;
      return ["process/exited", params];
    }
    case "closed": {
      const params: Record<string, unknown> = { processId: event.processId, seq: event.seq };
      // outpost's extension: output dropped while the executor stopped.
      if (event.droppedOutputBytes) params.droppedOutputBytes = event.droppedOutputBytes;
      return ["process/closed", params];
    }
  }
}

/**
 * Serves one JSON-RPC connection until its channel closes; the session it
 * created or resumed then detaches (and lives on for the registry's TTL).
 *
 * @param channel The connection's message channel.
 * @param context The executor's registry, fs handler and info.
 * @returns Once the connection has ended and the session has detached.
 */
export async function serveSession(
  channel: MessageChannel,
  context: SessionContext,
): Promise<void> {
  const connection = new SessionConnection(channel, context);
  connections.set(channel, connection);
  await connection.closed;
}

/**
 * Why a connection was ended to make room at the session limit (its channel's
 * close reason; on a mux stream, the reset's).
 */
export const SESSION_LIMIT_REASON = "session_limit";

/** The connection served on each channel (see {@linkcode isQuietChannel}). */
const connections = new WeakMap<MessageChannel, SessionConnection>();

/**
 * Whether the connection served on `channel` could be dropped without cutting
 * anything short: no request of its harness is being answered, and its
 * session has no process that has not closed (a harness may wait quietly for
 * a long poll's answer or a silent program's output). True for a channel
 * not served here.
 *
 * @param channel A channel given to {@linkcode serveSession}.
 * @returns Whether it is quiet.
 */
export function isQuietChannel(channel: MessageChannel): boolean {
  return connections.get(channel)?.quiet ?? true;
}

/**
 * Whether the connection served on `channel` has a session: its `initialize`
 * was answered. False for a channel not served here.
 *
 * @param channel A channel given to {@linkcode serveSession}.
 * @returns Whether it has initialized.
 */
export function hasSessionChannel(channel: MessageChannel): boolean {
  return connections.get(channel)?.hasSession ?? false;
}

class SessionConnection implements SessionAttachment {
  #context: SessionContext;
  #channel: MessageChannel;
  #peer: JsonRpcPeer;
  #phase: Phase = "new";
  #session: SessionRecord | null = null;
  #maxWaitMs: number;
  /** This connection's fs calls in flight (see {@linkcode MAX_FS_CALLS_PER_CONNECTION}). */
  #fsSlots = new CallSlots(MAX_FS_CALLS_PER_CONNECTION);
  /** fs calls not counted against the request cap now (see {@linkcode MAX_UNCOUNTED_FS_CALLS}). */
  #uncountedFsCalls = 0;
  /** Long polls waiting uncounted (see {@linkcode MAX_UNCOUNTED_READ_WAITS}). */
  #uncountedReadWaits = 0;
  #starting = new Set<string>();
  /** True once the channel has closed (the session, if any, is detached). */
  #channelClosed = false;
  /** True once `initialize` negotiated binary output messages. */
  #binaryOutput = false;
  /** True once `initialize` negotiated binary write requests. */
  #binaryInput = false;
  /**
   * Events that reached this connection while its resume's reply was not yet
   * sent (the session's retained ones, and any new): sent right after it.
   */
  #heldEvents:
    | { event: ProcessEvent; delivered: () => void; sent: PromiseWithResolvers<void> }[]
    | null = null;
  readonly closed: Promise<void>;
  readonly sink: (event: ProcessEvent, delivered: () => void) => Promise<void>;
  /** True on a channel that knows when the harness has a message (a mux stream). */
  readonly confirmsDelivery: boolean;
  /** When a message last went either way (the registry's clock). */
  activeAt: number;

  constructor(channel: MessageChannel, context: SessionContext) {
    this.#context = context;
    this.#channel = channel;
    this.#maxWaitMs = context.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
    this.confirmsDelivery = channel.tracksDelivery === true;
    this.activeAt = context.registry.now();
    this.sink = (event, delivered) => {
      if (this.#heldEvents === null) return this.#send(event, delivered);
      const held = Promise.withResolvers<void>();
      this.#heldEvents.push({ event, delivered, sent: held });
      return held.promise;
    };
    this.#peer = new JsonRpcPeer(channel, {
      maxMessageBytes: context.maxMessageBytes,
      onRequest: (method, params, request) => this.#handle(method, params, request),
      onNotification: (method) => this.#notification(method),
      onBinary: (message) => this.#binaryRequest(message),
      binaryRequestId: binaryWriteRequestId,
    });
    const detach = (): void => {
      this.#channelClosed = true;
      if (this.#session) context.registry.detach(this.#session.id, this);
    };
    // Detach as soon as the channel closes: handlers still in flight must not
    // keep the session from being resumed by another connection.
    channel.closed.then(detach, detach);
    this.closed = this.#peer.closed.then(detach);
  }

  /**
   * The registry gave this connection's session to a new one: end it, saying
   * why (on a mux stream the reset's reason, on a WebSocket the close reason).
   */
  evict(): void {
    this.#channel.close(SESSION_LIMIT_REASON).catch(() => {});
  }

  /** See {@linkcode hasSessionChannel}. */
  get hasSession(): boolean {
    return this.#session !== null;
  }

  /** See {@linkcode isQuietChannel}. */
  get quiet(): boolean {
    if (this.#peer.answering > 0 || this.#starting.size > 0) return false;
    const session = this.#session;
    return session === null || session.attachment !== this || !session.table.busy;
  }

  /**
   * The largest reply this connection can send: the executor's message limit,
   * or less where the channel carries less (a Codex v1 stream: one relay frame).
   */
  #replyLimit(): number {
    const limit = this.#context.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    return Math.min(limit, this.#channel.maxMessageBytes ?? Infinity);
  }

  #notification(method: string): void {
    this.#stamp();
    if (method === "initialized") {
      if (this.#phase === "new") {
        this.#peer.sendError(
          INVALID_REQUEST,
          "Cannot accept initialized: must call initialize first",
        ).catch(() => {});
      } else if (this.#phase === "initialized-pending") {
        this.#phase = "ready";
      }
      return;
    }
    if (REQUEST_METHODS.has(method) || FS_METHODS.has(method)) {
      this.#peer.sendError(
        INVALID_REQUEST,
        `Cannot accept "${method}" as a notification: it is a request; give it an id`,
      ).catch(() => {});
      return;
    }
    this.#peer.sendError(METHOD_NOT_FOUND, `Method not found: "${method}" (notification)`)
      .catch(() => {});
  }

  async #handle(method: string, params: unknown, request: RequestContext): Promise<unknown> {
    this.#stamp();
    // Until its reply has gone to the channel the request counts as being
    // answered; from then on the connection is idle.
    request.afterReply(() => this.#stamp());
    try {
      return await this.#dispatch(method, params, request);
    } catch (error) {
      throw toRpcError(error, method);
    }
  }

  /** Notes a message going either way (see `activeAt`). */
  #stamp(): void {
    this.activeAt = this.#context.registry.now();
  }

  #requireReady(method: string): SessionRecord {
    const family = method.slice(0, method.indexOf("/"));
    if (this.#phase === "new") {
      throw new RpcError(
        INVALID_REQUEST,
        `Cannot call "${method}": must call initialize before using ${family} methods`,
      );
    }
    if (this.#phase === "initialized-pending") {
      throw new RpcError(
        INVALID_REQUEST,
        `Cannot call "${method}": must send initialized before using ${family} methods`,
      );
    }
    const session = this.#session!;
    if (this.#phase === "evicted" || session.attachment !== this) {
      this.#evict();
      throw new RpcError(
        INVALID_REQUEST,
        `Cannot call "${method}": session has been resumed by another connection`,
      );
    }
    return session;
  }

  #evict(): void {
    if (this.#phase === "evicted") return;
    this.#phase = "evicted";
    // Let the error reply go out first, then drop the connection.
    setTimeout(() => this.#peer.close(), 0);
  }

  #dispatch(method: string, raw: unknown, request: RequestContext): unknown {
    // Keep REQUEST_METHODS in step with these cases (it tells a request sent as a notification).
    switch (method) {
      case "initialize":
        return this.#initialize(paramsObject(raw), request);
      case "environment/info":
        paramsObject(raw);
        return this.#context.environmentInfo();
      case "process/start": {
        const session = this.#requireReady(method);
        const params = paramsObject(raw);
        refuseCodexSandbox(params);
        return this.#start(session, params);
      }
      case "process/read":
        return this.#read(this.#requireReady(method), paramsObject(raw), request);
      case "process/write":
        return this.#write(this.#requireReady(method), paramsObject(raw), request);
      case "process/signal":
        return this.#signal(this.#requireReady(method), paramsObject(raw));
      case "process/terminate":
        return this.#terminate(this.#requireReady(method), paramsObject(raw));
      case "process/resize":
        return this.#resize(this.#requireReady(method), paramsObject(raw));
      case "process/closeOutput":
        return this.#closeOutput(this.#requireReady(method), paramsObject(raw));
      case "process/list":
        paramsObject(raw);
        return { processes: this.#requireReady(method).table.list() };
    }
    if (FS_METHODS.has(method)) {
      this.#requireReady(method);
      if (raw !== null && typeof raw === "object") refuseCodexSandbox(raw as Params);
      const call = (): Promise<unknown> => {
        if (method === "fs/readFile") return this.#readFile(raw, request.id, request.signal);
        if (method === "fs/readDirectory") return this.#readDirectory(raw, request.id);
        return this.#context.fs.call(method, raw, request.signal);
      };
      return this.#boundedFsCall(call, request);
    }
    throw new RpcError(
      METHOD_NOT_FOUND,
      `Method not found: "${method.length > 200 ? method.slice(0, 200) + "..." : method}"`,
    );
  }

  #initialize(
    params: Params,
    request: RequestContext,
  ): { sessionId: string; binaryOutput?: true; binaryInput?: true } {
    if (this.#phase !== "new") {
      throw new RpcError(
        INVALID_REQUEST,
        "Cannot initialize: initialize may only be sent once per connection",
      );
    }
    optionalString(params, "clientName");
    const resumeId = optionalString(params, "resumeSessionId");
    // A message read after the close would attach a session nothing detaches.
    if (this.#channelClosed) {
      throw new RpcError(INVALID_REQUEST, "Cannot initialize: the connection is closed");
    }
    // outpost's extension: output as binary messages when the harness offers
    // it and the channel carries them; a Codex harness never offers it.
    this.#binaryOutput = optionalBoolean(params, "binaryOutput", false) &&
      this.#peer.canSendBinary;
    this.#binaryInput = optionalBoolean(params, "binaryInput", false) &&
      this.#peer.canSendBinary;
    const registry = this.#context.registry;
    if (resumeId !== undefined) {
      // The session's retained events go to this connection as it attaches:
      // they follow the reply, which tells the harness what it resumed.
      this.#heldEvents = [];
      request.afterReply(() => this.#releaseHeldEvents());
    }
    this.#session = resumeId === undefined
      ? registry.create(this)
      : registry.resume(resumeId, this);
    this.#phase = "initialized-pending";
    const result: { sessionId: string; binaryOutput?: true; binaryInput?: true } = {
      sessionId: this.#session.id,
    };
    if (this.#binaryOutput) result.binaryOutput = true;
    if (this.#binaryInput) result.binaryInput = true;
    return result;
  }

  /** Sends one process event as its notification (or binary output message). */
  #send(event: ProcessEvent, delivered: () => void): Promise<void> {
    this.#stamp();
    // Stamped again once the harness has it (a harness still receiving output
    // on a slow link is not idle): when it acknowledges it on a channel that
    // confirms delivery, else when the channel takes it. One of the two only.
    const confirms = this.confirmsDelivery;
    const onDelivered = confirms
      ? () => {
        this.#stamp();
        delivered();
      }
      : delivered;
    let sent: Promise<void>;
    if (event.type === "output") {
      const id = this.#binaryOutput ? binaryProcessId(event.processId) : null;
      sent = id !== null
        ? this.#peer.sendBinary(
          encodeBinaryOutput(id, event.seq, event.stream, event.chunk, event.headroom),
          onDelivered,
        )
        : this.#peer.notifyJson("process/output", outputParamsJson(event), onDelivered);
    } else {
      const [method, params] = encodeEvent(event);
      sent = this.#peer.notify(method, params, onDelivered);
    }
    if (!confirms) sent.then(this.#stamped, this.#stamped);
    return sent;
  }

  /** `#stamp` as a callback, made once. */
  readonly #stamped = (): void => this.#stamp();

  /** Sends the events held while a resume's reply was on its way, in order. */
  #releaseHeldEvents(): void {
    const held = this.#heldEvents;
    this.#heldEvents = null;
    for (const { event, delivered, sent } of held ?? []) {
      this.#send(event, delivered).then(sent.resolve, sent.reject);
    }
  }

  /**
   * A binary message from the harness: a `process/write` request when binary
   * input was negotiated (served like the JSON method, answered in JSON).
   */
  #binaryRequest(message: Uint8Array): BinaryRequest {
    this.#stamp();
    if (!this.#binaryInput) {
      throw new TypeError(
        "binary messages were not negotiated; send each JSON-RPC message as text",
      );
    }
    const { requestId, processId, eof, data } = decodeBinaryWrite(message);
    return { id: requestId, method: "process/write", params: { processId, eof, data } };
  }

  async #start(session: SessionRecord, params: Params): Promise<{ processId: string }> {
    const processId = requiredString(params, "processId");
    const argv = stringArray(params, "argv");
    const cwd = params.cwd === undefined || params.cwd === null
      ? undefined
      : absolutePath(params, "cwd");
    const env = stringRecord(params, "env");
    const tty = optionalBoolean(params, "tty", false);
    const pipeStdin = optionalBoolean(params, "pipeStdin", false);
    // outpost's extension: output the harness will not read stays on the executor.
    const pipeStdout = optionalBoolean(params, "pipeStdout", true);
    const pipeStderr = optionalBoolean(params, "pipeStderr", true);
    const arg0 = optionalString(params, "arg0");
    if (arg0 !== undefined) wellFormed("arg0", arg0);
    const timeoutMs = optionalInteger(params, "timeoutMs", { min: 1, max: MAX_TIMER_MS });
    const confinement = optionalString(params, "confinement");
    if (confinement !== undefined && !CONFINEMENT_NAMES.includes(confinement)) {
      throw invalidParam(
        "confinement",
        `must be one of ${CONFINEMENT_NAMES.join(", ")}`,
        confinement,
      );
    }
    const permissions = denoPermissions(params);
    // As Codex: without envPolicy the child gets exactly `env`, unless the
    // request asks to inherit (outpost's client does by default).
    const inheritEnv = optionalBoolean(params, "inheritEnv", false);
    const envPolicy = params.envPolicy === undefined || params.envPolicy === null
      ? undefined
      : envPolicyParam(params.envPolicy);
    const cols = optionalInteger(params, "cols", { min: 1, max: MAX_TERMINAL_SIDE });
    const rows = optionalInteger(params, "rows", { min: 1, max: MAX_TERMINAL_SIDE });
    if (
      this.#starting.has(processId) || session.table.has(processId)
    ) {
      throw new RpcError(
        INVALID_REQUEST,
        `Cannot start process "${processId}": process already exists`,
      );
    }
    this.#starting.add(processId);
    try {
      await session.table.start({
        processId,
        argv,
        tty,
        pipeStdin,
        pipeStdout,
        pipeStderr,
        inheritEnv,
        ...(envPolicy !== undefined ? { envPolicy } : {}),
        ...(cwd !== undefined ? { cwd } : {}),
        ...(env !== undefined ? { env } : {}),
        ...(arg0 !== undefined ? { arg0 } : {}),
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        ...(confinement !== undefined ? { confinement: confinement as Confinement } : {}),
        ...(permissions !== undefined ? { denoPermissions: permissions } : {}),
        ...(cols !== undefined ? { cols } : {}),
        ...(rows !== undefined ? { rows } : {}),
      });
    } catch (error) {
      throw await missingCwdError(error, argv[0], cwd);
    } finally {
      this.#starting.delete(processId);
    }
    return { processId };
  }

  /**
   * Runs an fs call within this connection's and the executor's bounds on
   * calls in flight. Up to {@linkcode MAX_UNCOUNTED_FS_CALLS} of them do not
   * count against the connection's request cap meanwhile (their replies do):
   * calls queued behind ones a program keeps waiting (a lease against a
   * confined write) must not keep the connection from reading the request
   * that ends that program.
   */
  async #boundedFsCall(call: () => Promise<unknown>, request: RequestContext): Promise<unknown> {
    const uncounted = this.#uncountedFsCalls < MAX_UNCOUNTED_FS_CALLS;
    if (uncounted) {
      this.#uncountedFsCalls++;
      request.release();
    }
    try {
      const executorWide = this.#context.fsSlots;
      return await this.#fsSlots.run(
        () => executorWide ? executorWide.run(call, request.signal) : call(),
        request.signal,
      );
    } finally {
      if (uncounted) this.#uncountedFsCalls--;
    }
  }

  /**
   * `fs/readFile` limited to what fits one reply on this connection (no
   * partial reads upstream; a Codex v1 stream carries one relay frame per
   * message): a larger file is refused with -32602 before it is read.
   */
  async #readFile(raw: unknown, id: string | number, signal?: AbortSignal): Promise<JsonResult> {
    const path = absolutePath(paramsObject(raw), "path");
    const limit = this.#replyLimit();
    const envelope = replyEnvelopeBytes(id) + '{"dataBase64":""}'.length;
    const { dataBase64 } = await this.#context.fs.readFile(path, {
      limit: {
        maxBytes: Math.max(0, Math.floor((limit - envelope) / 4) * 3),
        why: `on this stream, whose message limit is ${limit} bytes (base64 grows 4/3)`,
      },
      signal,
    });
    // Base64 needs no escaping and is ASCII: up to 16 MiB of it is not
    // serialized and measured again (about 50 ms of the event loop).
    return new JsonResult(`{"dataBase64":"${dataBase64}"}`, { ascii: true });
  }

  /** `fs/readDirectory` limited to what fits one reply on this connection. */
  #readDirectory(raw: unknown, id: string | number): Promise<unknown> {
    const path = absolutePath(paramsObject(raw), "path");
    const limit = this.#replyLimit();
    return this.#context.fs.readDirectory(path, {
      maxBytes: Math.max(0, limit - replyEnvelopeBytes(id) - '{"entries":[]}'.length),
      why: `on this stream, whose message limit is ${limit} bytes`,
    });
  }

  /**
   * `process/read` whose reply fits this connection's message limit. It reads
   * in steps, each asking for no more than surely fits the room left (a tiny
   * chunk costs its JSON fields), so nothing is consumed that is not sent.
   * The first chunk is always returned, as upstream; one chunk always fits.
   */
  async #read(session: SessionRecord, params: Params, request: RequestContext): Promise<unknown> {
    const processId = requiredString(params, "processId");
    const afterSeq = optionalInteger(params, "afterSeq", { min: 0, max: Number.MAX_SAFE_INTEGER });
    // 0 returns exactly one chunk: upstream always includes the first.
    const maxBytes = optionalInteger(params, "maxBytes", { min: 0, max: Number.MAX_SAFE_INTEGER });
    const waitMs = optionalInteger(params, "waitMs", { min: 0, max: Number.MAX_SAFE_INTEGER });
    if (this.#starting.has(processId)) {
      throw new RpcError(
        INVALID_REQUEST,
        `Cannot read process "${processId}": it is still starting`,
      );
    }
    let room = this.#replyLimit() - replyEnvelopeBytes(request.id) - READ_FIELDS_BYTES;
    let wanted = maxBytes ?? Infinity;
    let cursor = afterSeq ?? 0;
    const chunks: ReadChunk[] = [];
    let result: ReadResult;
    const step = (waitMs: number) =>
      session.table.read(processId, {
        afterSeq: cursor,
        maxBytes: Math.min(wanted, Math.max(1, Math.floor(room / WORST_CHUNK_BYTES_PER_BYTE))),
        waitMs,
        signal: request.signal,
      });
    const firstWaitMs = Math.min(waitMs ?? 0, this.#maxWaitMs);
    // The wait, not the reply, is uncounted: the reply counts again until sent.
    const uncounted = firstWaitMs > 0 && this.#uncountedReadWaits < MAX_UNCOUNTED_READ_WAITS;
    if (uncounted) {
      this.#uncountedReadWaits++;
      request.release();
    }
    try {
      result = await step(firstWaitMs);
    } finally {
      if (uncounted) this.#uncountedReadWaits--;
    }
    for (let first = true;; first = false) {
      if (!first) result = await step(0);
      for (const chunk of result.chunks) {
        chunks.push(chunk);
        room -= chunkReplyBytes(chunk.chunk.byteLength);
        wanted -= chunk.chunk.byteLength;
      }
      if (result.chunks.length === 0) break;
      cursor = result.nextSeq - 1;
      // Another step returns at least one chunk: go on only while any fits.
      if (result.closed || room < LARGEST_CHUNK_REPLY_BYTES) break;
      if (wanted < SEGMENT_FIT_DATA_BYTES) break;
    }
    const reply: Record<string, unknown> = {
      chunks: chunks.map((c) => ({
        seq: c.seq,
        stream: c.stream,
        chunk: c.chunk.toBase64(),
      })),
      nextSeq: chunks.length > 0 ? cursor + 1 : result.nextSeq,
      exited: result.exited,
      exitCode: result.exitCode,
      closed: result.closed,
      failure: result.failure,
    };
    // As in `process/exited`: only when a signal ended it (upstream has no such field).
    if (result.signal) reply.signal = result.signal;
    if (result.timedOut) reply.timedOut = true;
    return reply;
  }

  /**
   * Stops waiting when the connection closes: a child that never reads must
   * not hold it. Nor does the wait for the child count against the
   * connection's request cap (the reply does again): writes to children that
   * do not read yet must not keep it from reading the kill that would end
   * them. The session's stdin queues bound them.
   */
  async #write(
    session: SessionRecord,
    params: Params,
    request: RequestContext,
  ): Promise<{ status: string }> {
    const processId = requiredString(params, "processId");
    // `data` holds the bytes of a binary write request; JSON cannot make a Uint8Array.
    const chunk = params.data instanceof Uint8Array ? params.data : base64Bytes(params, "chunk");
    const eof = optionalBoolean(params, "eof", false);
    if (this.#starting.has(processId)) return { status: "starting" };
    const status = await session.table.write(processId, chunk, {
      eof,
      signal: request.signal,
      // Queued: it may wait for the child now, uncounted until its reply.
      onQueued: () => request.release(),
    });
    return { status };
  }

  async #signal(session: SessionRecord, params: Params): Promise<{ delivered: boolean }> {
    const processId = requiredString(params, "processId");
    const name = requiredString(params, "signal");
    const signal = Object.hasOwn(SIGNALS, name) ? SIGNALS[name] : undefined;
    if (signal === undefined) {
      throw invalidParam("signal", `must be one of ${Object.keys(SIGNALS).join(", ")}`, name);
    }
    return { delivered: await session.table.signal(processId, signal) };
  }

  async #terminate(session: SessionRecord, params: Params): Promise<{ running: boolean }> {
    const processId = requiredString(params, "processId");
    return { running: await session.table.terminate(processId) };
  }

  async #resize(session: SessionRecord, params: Params): Promise<Record<string, never>> {
    const processId = requiredString(params, "processId");
    const cols = optionalInteger(params, "cols", { min: 1, max: MAX_TERMINAL_SIDE });
    const rows = optionalInteger(params, "rows", { min: 1, max: MAX_TERMINAL_SIDE });
    if (cols === undefined) throw invalidParam("cols", "is required");
    if (rows === undefined) throw invalidParam("rows", "is required");
    await session.table.resize(processId, cols, rows);
    return {};
  }

  async #closeOutput(session: SessionRecord, params: Params): Promise<{ closed: boolean }> {
    const processId = requiredString(params, "processId");
    const stream = requiredString(params, "stream");
    if (stream !== "stdout" && stream !== "stderr") {
      throw invalidParam("stream", "must be stdout or stderr", stream);
    }
    return { closed: await session.table.closeOutput(processId, stream) };
  }
}
