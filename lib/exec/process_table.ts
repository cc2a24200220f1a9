/**
 * The per-session process table: spawning (with run-permission checks,
 * confinement, a terminal when asked), stdin, output retention with one seq
 * counter per process, long-poll reads, events for an attached session,
 * process-tree signals and kills, timeouts, and limits.
 *
 * Process model, in short (details in the README section "Processes"):
 * - Every child is spawned with `clearEnv: true` as the leader of a session
 *   and process group of its own: through the util-linux `setsid` helper when
 *   it is granted (`setsid` execs in place, so the spawned pid is the leader),
 *   else with `detached: true` (which makes Deno fork the whole executor, far
 *   slower in a large process); terminate and timeouts signal the group (TERM,
 *   then KILL after a grace period) through the granted `kill` helper, and
 *   the other groups of its session too (a terminal's, else its own: jobs
 *   job control put in groups of their own; see `tree_kill.ts`).
 * - Output is never cut off at exit: `closed` is emitted only once both
 *   output streams reached end-of-file and the exit status is known.
 * - Unread output is never evicted: at the retention cap the table stops
 *   reading the child's pipes until a reader or the event sink consumes.
 *
 * @module
 */

import { SandboxDeniedError } from "../errors.ts";
import {
  BINARY_OUTPUT_FIXED_BYTES,
  MAX_BINARY_PROCESS_ID_BYTES,
  SEGMENT_FIT_DATA_BYTES,
} from "../rpc/binary_messages.ts";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../rpc/json_rpc_peer.ts";
import {
  buildChildEnv,
  DEFAULT_INHERITED_ENV,
  DEFAULT_MAX_ENV_BYTES,
  type EnvPolicy,
  utf8Length,
} from "./child_env.ts";
import {
  bwrapArgs,
  type Capabilities,
  checkConfinedEnv,
  checkDenoProgramEnv,
  checkProgramFile,
  type Confinement,
  CONFINEMENTS,
  type DenoPermissions,
  denoRunFlags,
  detectCapabilities,
  detectSessionHelper,
  forgetResolvedPrograms,
  grantedWriteRoots,
  hiddenInSandbox,
  requireProgram,
  resolveGrantedProgram,
} from "./confinement.ts";
import { isInside, realPathOrNull } from "./_paths.ts";
import { SessionSweeper } from "./_session_sweeper.ts";
import { clipped } from "./_params.ts";
import { DEFAULT_RETAINED_OUTPUT_BYTES, OutputBuffer, type OutputStream } from "./output_buffer.ts";
import {
  type EndedProgramGroups,
  foregroundGroup,
  killProcesses,
  killProcessGroups,
  leftoverPids,
} from "./tree_kill.ts";
import {
  checkTtySize,
  DEFAULT_TTY_COLS,
  DEFAULT_TTY_ROWS,
  type PtyMarker,
  PtyMarkerParser,
  resizePty,
  ttyCommand,
} from "./tty.ts";
import { abortable } from "../_abortable.ts";
import type { BudgetHolder, ByteBudget } from "../_byte_budget.ts";
import { checkTimerMs, counted, MAX_ARG_STRING_BYTES, MAX_TIMER_MS } from "../_limits.ts";
import { booleanOption, stringListOption } from "../_options.ts";

export type { Capabilities, Confinement, DenoPermissions, OutputStream };

/** The default cap on live processes per table (session). */
export const DEFAULT_MAX_PROCESSES = 64;
/** The default grace between TERM and KILL. */
export const DEFAULT_KILL_GRACE_MS = 2_000;
/** The default time a closed process stays readable. */
export const DEFAULT_EXITED_RETENTION_MS = 30_000;
/** The default cap on argv: 256 KiB counting each argument plus a NUL. */
export const DEFAULT_MAX_ARGV_BYTES = 256 * 1024;
/** The default cap on one read's long-poll wait; longer waits are shortened to it. */
export const DEFAULT_MAX_WAIT_MS = 300_000;
/** The exit code reported for a process killed by its timeout (as `timeout(1)`). */
export const TIMEOUT_EXIT_CODE = 124;
/** The longest process id accepted, in UTF-16 code units. */
export const MAX_PROCESS_ID_LENGTH = 256;
/**
 * Stdin bytes a process may have waiting for its child to read. A write
 * whose wait ended (its connection closed) leaves its bytes queued, so
 * without a bound a harness that reconnects and writes again to a child
 * that never reads would grow the executor without end.
 */
export const MAX_QUEUED_STDIN_BYTES = 16 * 1024 * 1024;
/**
 * The most writes that may wait for a session's children to read their
 * stdin, all processes together. Such waits do not count against the
 * connection's request cap (so that they cannot keep a kill from being
 * read), so this bounds many tiny ones, as {@linkcode MAX_QUEUED_STDIN_BYTES}
 * bounds their bytes per process.
 */
export const MAX_QUEUED_STDIN_WRITES = 4096;

/**
 * The most a pipe holds on Linux (`/proc/sys/fs/pipe-max-size`, 1 MiB by
 * default; a program may enlarge its pipe up to it). More than this read
 * after a process's end was written after it, by a descendant.
 */
const MAX_PIPE_BYTES = 1024 * 1024;
/**
 * The most forgotten processes (retention ended, or evicted) whose groups the
 * table's close still looks at: numbers only, so a long session that ran
 * many short programs keeps a bounded list, and its end a bounded kill.
 */
export const MAX_FORGOTTEN_GROUPS = 1024;
/**
 * For this long after a program's leader exited, its group (and session)
 * number is taken to be its own still: a newcomer could have it only if the
 * pids wrapped around (pid_max of them, 32,768 by default) since. Later, only
 * members that prove the group never emptied are signalled (see `leftoverPids`).
 */
export const GROUP_REUSE_SAFE_MS = 10_000;
/** The end-of-file key a terminal's line discipline reads (`VEOF`, Ctrl-D). */
const CTRL_D = new Uint8Array([0x04]);
/**
 * Output is read in pieces of SEGMENT_FIT_DATA_BYTES, which with a binary
 * output header in front fill one relay segment and no more: a chunk then
 * travels as one frame and is never reassembled. Each read buffer keeps the
 * header's room free before the chunk, so the header is written there
 * instead of copying.
 */
const OUTPUT_HEADROOM_BYTES = BINARY_OUTPUT_FIXED_BYTES + MAX_BINARY_PROCESS_ID_BYTES;
/**
 * Bytes around the base64 chunk in a `process/output` notification or a
 * one-chunk `process/read` reply, besides the processId: field names, seq,
 * stream, exit fields and a failure message, with room to spare.
 */
const OUTPUT_ENVELOPE_BYTES = 512;
const utf8 = new TextEncoder();
/** The `delivered` callback given to a sink that does not confirm delivery. */
const NO_CONFIRMATION = (): void => {};

/** A copy of `bytes` with the binary header's room free in front of it. */
function withHeadroom(bytes: Uint8Array): Uint8Array {
  const copy = new Uint8Array(
    new ArrayBuffer(OUTPUT_HEADROOM_BYTES + bytes.byteLength),
    OUTPUT_HEADROOM_BYTES,
  );
  copy.set(bytes);
  return copy;
}

/** Options for {@linkcode ProcessTable.start}. */
export interface StartProcessOptions {
  /** The client-chosen id, unique within the table (1 to 256 characters, well-formed Unicode). */
  processId: string;
  /** The program and its arguments (non-empty; for `deno` confinement argv[0] is the module). */
  argv: string[];
  /** Absolute working directory. @default {the table's `cwd`, else the executor's} */
  cwd?: string;
  /** Variables the request names; overlaid on the inherited allowlist. */
  env?: Record<string, string>;
  /** Run in a pseudo-terminal (stream `pty`). @default {false} */
  tty?: boolean;
  /** Keep stdin open for writes (always true with a tty). @default {false} */
  pipeStdin?: boolean;
  /**
   * Keep stdout for the harness; false sends it to `/dev/null` on the
   * executor, as `Deno.Command`'s `stdout: "null"` does (no pipe, nothing
   * sent). Ignored under a tty. @default {true}
   */
  pipeStdout?: boolean;
  /** As {@linkcode StartProcessOptions.pipeStdout}, for stderr. @default {true} */
  pipeStderr?: boolean;
  /** argv[0] as the program sees it (needs the `bash` helper: `exec -a`). */
  arg0?: string | null;
  /** Kill the process tree after this many milliseconds; the exit is reported as timed out. */
  timeoutMs?: number;
  /** The confinement level. @default {the table's `minConfinement` (except `deno`, which must be asked for)} */
  confinement?: Confinement;
  /** What a `deno`-confined program may do; each must be granted to the executor. */
  denoPermissions?: DenoPermissions;
  /** Inherit the table's env allowlist (ignored when `envPolicy` is given). @default {true} */
  inheritEnv?: boolean;
  /** Codex's env policy: what to inherit and set beneath `env` (see {@linkcode EnvPolicy}). */
  envPolicy?: EnvPolicy;
  /** Initial terminal columns. @default {80} */
  cols?: number;
  /** Initial terminal rows. @default {24} */
  rows?: number;
}

/** An event for the attached session; `seq` is the process's shared counter. */
export type ProcessEvent =
  | {
    type: "output";
    processId: string;
    seq: number;
    stream: OutputStream;
    chunk: Uint8Array;
    /**
     * Bytes just before `chunk` in its buffer that belong to nobody (absent:
     * none): a sink may write a message header there instead of copying.
     */
    headroom?: number;
  }
  | {
    type: "exited";
    processId: string;
    seq: number;
    exitCode: number;
    signal?: string;
    timedOut?: boolean;
  }
  | {
    type: "closed";
    processId: string;
    seq: number;
    /**
     * Output bytes dropped while the table closed, past the retention's worth
     * (absent: none). They took no seqs, so the seqs a harness saw have no gap.
     */
    droppedOutputBytes?: number;
  };

/**
 * Receives events. If it returns a promise, the event counts as consumed (for
 * backpressure) once the promise fulfils; a rejected delivery is redelivered
 * to the next sink attached. A sink attached with `confirmsDelivery` calls
 * `delivered` once its far end has the event: until then the event stays
 * retained, and a later sink gets it again if this one ends first (see
 * {@linkcode ProcessTable.setEventSink}).
 */
export type ProcessEventSink = (
  event: ProcessEvent,
  delivered: () => void,
) => void | Promise<void>;

/** How a sink attached with {@linkcode ProcessTable.setEventSink} reports delivery. */
export interface EventSinkOptions {
  /**
   * True when the sink calls `delivered` for every event once its far end has
   * it (a reliable mux stream: the peer acknowledged it). Otherwise an event
   * counts as delivered once the sink took it.
   *
   * @default {false}
   */
  confirmsDelivery?: boolean;
}

/** A chunk in a {@linkcode ReadResult}. */
export interface ReadChunk {
  /** The chunk's seq. */
  seq: number;
  /** Its stream. */
  stream: OutputStream;
  /** Its bytes. */
  chunk: Uint8Array;
}

/** What {@linkcode ProcessTable.read} returns (upstream `process/read`). */
export interface ReadResult {
  /** Retained chunks after `afterSeq`, within `maxBytes` (the first always included). */
  chunks: ReadChunk[];
  /** The `afterSeq` for the next read. */
  nextSeq: number;
  /** The exit status is known. */
  exited: boolean;
  /** The exit code (124 after a timeout), or null while running. */
  exitCode: number | null;
  /** The process closed and this read returned all its remaining retained output (not cut short by `maxBytes`). */
  closed: boolean;
  /** Why reading the process failed, or null. */
  failure: string | null;
  /** The signal that ended the process (`SIGTERM`), or null. */
  signal: string | null;
  /** The process was killed by its timeout. */
  timedOut?: boolean;
}

/** Options for {@linkcode ProcessTable.read}. */
export interface ReadOptions {
  /** Return chunks after this seq. @default {0} */
  afterSeq?: number;
  /** Byte budget (the first chunk is always included). @default {unlimited} */
  maxBytes?: number;
  /** Wait up to this long for something new (capped at the table's `maxWaitMs`). @default {0} */
  waitMs?: number;
  /** Ends the wait early (the read then returns what it has). */
  signal?: AbortSignal;
}

/** A row of {@linkcode ProcessTable.list}. */
export interface ProcessInfo {
  /** The id. */
  processId: string;
  /** The argv as requested. */
  argv: string[];
  /** Started and not yet exited. */
  running: boolean;
  /** The exit code once known. */
  exitCode: number | null;
}

/**
 * A counter of live processes shared by every table of one executor.
 *
 * @example
 * ```ts
 * import { ProcessLimiter } from "@outpost/exec";
 * const limiter = new ProcessLimiter(1);
 * console.log(limiter.tryAcquire(), limiter.tryAcquire()); // true false
 * limiter.release();
 * ```
 */
export class ProcessLimiter {
  readonly #max: number;
  #active = 0;

  /**
   * Creates a limiter.
   *
   * @param max The most live processes at once.
   * @throws {RangeError} When `max` is not a positive integer.
   */
  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`Cannot create process limiter: ${max} is not a positive integer`);
    }
    this.#max = max;
  }

  /** The limit. */
  get max(): number {
    return this.#max;
  }

  /** Live processes counted now. */
  get active(): number {
    return this.#active;
  }

  /**
   * Takes a slot.
   *
   * @returns False when the limit is reached.
   */
  tryAcquire(): boolean {
    if (this.#active >= this.#max) return false;
    this.#active++;
    return true;
  }

  /** Returns a slot. */
  release(): void {
    if (this.#active > 0) this.#active--;
  }
}

/**
 * Stdin bytes waiting for children to read, counted across every table of
 * one executor: each table bounds its own processes' queues, and this bounds
 * their sum.
 *
 * @example
 * ```ts
 * import { QueuedStdinLimit } from "@outpost/exec";
 * const limit = new QueuedStdinLimit(100);
 * console.log(limit.tryTake(60), limit.tryTake(41), limit.used); // true false 60
 * limit.give(60);
 * ```
 */
export class QueuedStdinLimit {
  /** The most bytes that may wait, all tables together. */
  readonly max: number;
  #used = 0;

  /**
   * Creates a limit.
   *
   * @param max Bytes that may wait at once: a positive safe integer.
   * @throws {RangeError} If `max` is not a positive safe integer.
   */
  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`Cannot create stdin limit: ${max} is not a positive integer`);
    }
    this.max = max;
  }

  /** Bytes waiting now. */
  get used(): number {
    return this.#used;
  }

  /**
   * Counts `bytes` more if they fit.
   *
   * @returns False (counting nothing) when they would pass the limit.
   */
  tryTake(bytes: number): boolean {
    if (this.#used + bytes > this.max) return false;
    this.#used += bytes;
    return true;
  }

  /** Stops counting `bytes` (they were written, or given up). */
  give(bytes: number): void {
    this.#used -= bytes;
  }
}

/** Options for {@linkcode ProcessTable}. */
export interface ProcessTableOptions {
  /** Live processes per table. @default {64} */
  maxProcesses?: number;
  /** A counter shared across tables (the executor-wide limit). */
  limiter?: ProcessLimiter;
  /**
   * Bounds the output that closed processes keep, shared across tables (the
   * executor-wide bound): a closed process counts what its retained output
   * keeps alive when it closes (`OutputBuffer.footprintBytes`; a
   * later eviction is not subtracted) until it is forgotten, and past the
   * limit the processes that closed first (in any table) are forgotten.
   * Without it only each table's own bounds apply.
   */
  closedOutputBudget?: ByteBudget;
  /**
   * Bounds the stdin waiting for children to read, shared across tables (the
   * executor-wide bound): a write past it is refused, as one past a
   * process's own {@linkcode MAX_QUEUED_STDIN_BYTES} is.
   */
  stdinLimit?: QueuedStdinLimit;
  /** Retained output per process, also the unread cap that pauses the child. @default {1048576} */
  retainedOutputBytes?: number;
  /** Grace between TERM and KILL. @default {2000} */
  killGraceMs?: number;
  /** How long a closed process stays readable. @default {30000} */
  exitedRetentionMs?: number;
  /**
   * Programs that closed before their `timeoutMs` came due whose groups are
   * kept to kill what they left when it does; past it the one due last is
   * dropped (what it left waits for the table's close).
   * @default {1024}
   */
  maxTimeoutKills?: number;
  /** Directories bound writable for `os` confinement (only those that exist and the executor may write; others are dropped silently). @default {[]} */
  writeRoots?: readonly string[];
  /** Give `os`-confined processes the network. @default {false} */
  allowNetwork?: boolean;
  /** The weakest level a request may use (`os` also accepts `deno` without `run`/`ffi`). @default {"none"} */
  minConfinement?: Confinement;
  /** Names copied from the executor's environment when a request inherits. @default {DEFAULT_INHERITED_ENV} */
  inheritEnv?: readonly string[];
  /** The default working directory for children; `os` confinement shows it read-only when its private `/tmp`, `/dev` or `/run` would hide it. @default {the executor's} */
  cwd?: string;
  /** argv cap in bytes. @default {262144} */
  maxArgvBytes?: number;
  /** env cap in bytes. @default {262144} */
  maxEnvBytes?: number;
  /** Longest read wait. @default {300000} */
  maxWaitMs?: number;
  /**
   * The JSON-RPC message limit the output is sent under: output is read in
   * chunks small enough that a chunk's `process/output` notification (base64
   * and the processId included) fits it, so no chunk is ever undeliverable.
   * @default {16777216}
   */
  maxMessageBytes?: number;
  /** The initial event sink (it does not confirm delivery). */
  onEvent?: ProcessEventSink | null;
}

interface ProcessRecord {
  readonly id: string;
  /** Output bytes sent on since the table began to close (bounded: see `#output`). */
  closingBytes: number;
  /** Output bytes dropped while closing, past that bound. */
  droppedOutputBytes: number;
  /**
   * When its leader's exit was seen (`performance.now()`), null until then:
   * its group cannot have emptied, and gone to a newcomer, before that.
   */
  exitedAt: number | null;
  /** Counts its retained output against the closed-output budget once closed. */
  budgetHolder: BudgetHolder | null;
  readonly argv: string[];
  readonly buffer: OutputBuffer;
  readonly tty: boolean;
  state: "starting" | "running" | "exited" | "closed";
  child: Deno.ChildProcess | null;
  pid: number;
  pty: PtyMarker | null;
  ptyReady: Promise<void>;
  resolvePtyReady: () => void;
  /** Settles once the start has spawned the process or failed. */
  spawned: Promise<void>;
  resolveSpawned: () => void;
  writer: WritableStreamDefaultWriter<Uint8Array> | null;
  stdinClosed: boolean;
  /** Bytes handed to `writer` that the child has not taken yet (with the buffers they are views on). */
  stdinQueued: number;
  /** Under a terminal: the last byte written to stdin left a line unfinished. */
  ttyLineOpen: boolean;
  /** Under a terminal: the size a resize still has to apply, and the resize under way. */
  wantedSize: { cols: number; rows: number } | null;
  resizing: Promise<void> | null;
  /** The readers of its stdout and stderr (or terminal), each with its state. */
  pumps: Pump[];
  openStreams: number;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  exitSeq: number | null;
  closedSeq: number | null;
  failure: string | null;
  terminating: boolean;
  /** When (`performance.now()`) a terminate's KILL is due; null once sent or when none is. */
  killDueAt: number | null;
  /** When (`performance.now()`) its `timeoutMs` comes due; null once it has or when none was set. */
  timeoutDueAt: number | null;
  timers: Set<ReturnType<typeof setTimeout>>;
  done: Promise<void>;
  resolveDone: () => void;
  holdsSlot: boolean;
}

/** One output pipe's reader, as a terminate's cancel of it needs to know it. */
interface Pump {
  /** The child's pipe it reads (under a terminal, `stdout` carries the terminal's output). */
  pipe: "stdout" | "stderr";
  reader: ReadableStreamBYOBReader;
  /** Its reading is over: the pipe ended, or `closeOutput` cancelled the reader. */
  ended: boolean;
  /** Waiting for room in the output buffer, not reading the pipe. */
  paused: boolean;
  /** To be looked at again once it reads again: the pipe may still hold output. */
  cancelOnResume: boolean;
  /** Bytes read since a terminate's cancel of it came due, or null before. */
  readSinceCancelDue: number | null;
}

/**
 * The processes of one session.
 *
 * @example Run a command and read its output
 * ```ts
 * import { ProcessTable } from "@outpost/exec";
 * await using table = new ProcessTable({});
 * await table.start({ processId: "p1", argv: ["sh", "-c", "echo hi"] });
 * const result = await table.read("p1", { waitMs: 1000 });
 * console.log(result.chunks.length > 0);
 * ```
 */
export class ProcessTable implements AsyncDisposable {
  readonly #records = new Map<string, ProcessRecord>();
  readonly #maxProcesses: number;
  readonly #limiter: ProcessLimiter | undefined;
  readonly #closedOutputBudget: ByteBudget | undefined;
  readonly #stdinLimit: QueuedStdinLimit | undefined;
  readonly #retainedOutputBytes: number;
  readonly #maxMessageBytes: number;
  readonly #killGraceMs: number;
  /** Writes handed to a child's stdin writer that have not settled, all processes together. */
  #stdinWrites = 0;
  /**
   * The KILLs due for what closed processes left in their groups (see
   * `#maybeClosed`). Made when first needed: an idle session's memory is a
   * figure kept low (an empty `Map` is about 130 bytes).
   */
  #leftoverKills?: Map<ReturnType<typeof setTimeout>, ProcessRecord>;
  readonly #exitedRetentionMs: number;
  readonly #maxTimeoutKills: number;
  readonly #writeRoots: readonly string[];
  readonly #allowNetwork: boolean;
  readonly #minConfinement: Confinement;
  readonly #inheritEnv: readonly string[];
  readonly #cwd: string | undefined;
  readonly #maxArgvBytes: number;
  readonly #maxEnvBytes: number;
  readonly #maxWaitMs: number;
  readonly #pending = new Set<Promise<unknown>>();
  #sink: ProcessEventSink | null;
  /** Whether {@linkcode ProcessTable.#sink} confirms delivery. */
  #sinkConfirms = false;
  #killHelper: Promise<string | null> | undefined;
  #ps: Promise<string | null> | undefined;
  /** Signals the other groups of programs' sessions, one listing per batch. */
  readonly #sweeper = new SessionSweeper(() => this.#psHelper(), () => this.#helper());
  #closing: Promise<void> | undefined;
  /**
   * The closed records still held, in the order they closed (a `Set` keeps
   * insertion order): eviction takes the first, without scanning the table.
   */
  #closedInOrder = new Set<ProcessRecord>();
  /**
   * The groups (and sessions) of forgotten processes, newest last,
   * at most {@linkcode MAX_FORGOTTEN_GROUPS}: the table's close kills what is
   * left in them, as it does for the processes it still holds.
   */
  #forgotten: { groups: readonly number[]; session: number | null; exitedAt: number }[] = [];
  /**
   * Programs that closed before their `timeoutMs` came due (a child left
   * running with its output redirected, or not piped at all, holds nothing
   * open): what they left is killed when it does, as the timeout promised.
   * Their groups only, not the records; at most `maxTimeoutKills` (past it
   * the one due last goes, and what it left waits for the table's close).
   * One timer, for the earliest due.
   */
  #timeoutKills?: {
    groups: readonly number[];
    session: number | null;
    exitedAt: number;
    dueAt: number;
  }[];
  #timeoutKillTimer?: ReturnType<typeof setTimeout>;

  /**
   * Creates an empty table.
   *
   * @param options Limits, sandbox settings and the initial event sink.
   * @throws {RangeError} When a limit is not a positive integer.
   * @throws {TypeError} When `minConfinement` or `cwd` is malformed.
   */
  constructor(options: ProcessTableOptions = {}) {
    this.#maxProcesses = positive("maxProcesses", options.maxProcesses ?? DEFAULT_MAX_PROCESSES);
    this.#limiter = options.limiter;
    this.#closedOutputBudget = options.closedOutputBudget;
    this.#stdinLimit = options.stdinLimit;
    this.#retainedOutputBytes = positive(
      "retainedOutputBytes",
      options.retainedOutputBytes ?? DEFAULT_RETAINED_OUTPUT_BYTES,
    );
    this.#killGraceMs = positive("killGraceMs", options.killGraceMs ?? DEFAULT_KILL_GRACE_MS);
    this.#maxMessageBytes = positive(
      "maxMessageBytes",
      options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    );
    this.#exitedRetentionMs = positive(
      "exitedRetentionMs",
      options.exitedRetentionMs ?? DEFAULT_EXITED_RETENTION_MS,
    );
    this.#maxTimeoutKills = positive(
      "maxTimeoutKills",
      options.maxTimeoutKills ?? MAX_FORGOTTEN_GROUPS,
    );
    this.#maxArgvBytes = positive("maxArgvBytes", options.maxArgvBytes ?? DEFAULT_MAX_ARGV_BYTES);
    this.#maxEnvBytes = positive("maxEnvBytes", options.maxEnvBytes ?? DEFAULT_MAX_ENV_BYTES);
    this.#maxWaitMs = checkTimerMs(
      "Cannot create process table",
      "maxWaitMs",
      positive("maxWaitMs", options.maxWaitMs ?? DEFAULT_MAX_WAIT_MS),
      1,
    );
    this.#writeRoots = [
      ...(stringListOption("process table", "writeRoots", options.writeRoots) ?? []),
    ];
    this.#allowNetwork = booleanOption("process table", "allowNetwork", options.allowNetwork) ??
      false;
    const min = options.minConfinement ?? "none";
    if (!CONFINEMENTS.includes(min)) {
      throw new TypeError(
        `Cannot create process table: unknown confinement ${JSON.stringify(min)}`,
      );
    }
    this.#minConfinement = min;
    this.#inheritEnv = [
      ...(stringListOption("process table", "inheritEnv", options.inheritEnv) ??
        DEFAULT_INHERITED_ENV),
    ];
    if (options.cwd !== undefined && !options.cwd.startsWith("/")) {
      throw new TypeError(
        `Cannot create process table: cwd ${JSON.stringify(options.cwd)} is not absolute`,
      );
    }
    this.#cwd = options.cwd;
    this.#sink = options.onEvent ?? null;
  }

  /**
   * Starts a process.
   *
   * @param options What to run and how.
   * @returns Once the process has been spawned.
   * @throws {SandboxDeniedError} When run access (to the program or a needed helper) or a confinement is not granted, or an `os` program's cwd is hidden by its private `/tmp`, `/dev` or `/run`.
   * @throws {RangeError} When a limit is reached (processes, argv, env, timeout).
   * @throws {TypeError} When the options are malformed (empty argv, relative cwd, ...).
   * @throws {Deno.errors.AlreadyExists} When the process id is in use.
   * @throws {Error} When spawning fails (e.g. the cwd does not exist) or the table is closed.
   */
  async start(options: StartProcessOptions): Promise<void> {
    const id = checkProcessId(options?.processId);
    // Named by its program too: a client's process id may be a UUID the user never saw.
    const program = Array.isArray(options.argv) && typeof options.argv[0] === "string"
      ? options.argv[0]
      : undefined;
    const what = program === undefined
      ? `Cannot start process ${JSON.stringify(id)}`
      : `Cannot start ${JSON.stringify(clipped(program, 256))} (process ${JSON.stringify(id)})`;
    if (this.#closing) throw new Error(`${what}: the process table is closed`);
    const argv = this.#checkArgv(options.argv, what);
    const cwd = options.cwd ?? this.#cwd;
    if (cwd !== undefined && (typeof cwd !== "string" || !cwd.startsWith("/"))) {
      throw new TypeError(`${what}: cwd ${JSON.stringify(cwd)} is not an absolute path`);
    }
    if (cwd !== undefined && !cwd.isWellFormed()) {
      throw new TypeError(`${what}: cwd is not well-formed Unicode (it has a lone surrogate)`);
    }
    const tty = options.tty === true;
    const cols = options.cols ?? DEFAULT_TTY_COLS;
    const rows = options.rows ?? DEFAULT_TTY_ROWS;
    if (tty) checkTtySize(cols, rows);
    const timeoutMs = options.timeoutMs;
    if (
      timeoutMs !== undefined &&
      (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMER_MS)
    ) {
      throw new RangeError(
        `${what}: timeoutMs ${timeoutMs} is not an integer from 1 to ${MAX_TIMER_MS}`,
      );
    }
    const arg0 = options.arg0 ?? null;
    if (
      arg0 !== null && (typeof arg0 !== "string" || arg0.includes("\0") || !arg0.isWellFormed())
    ) {
      throw new TypeError(`${what}: arg0 is not a well-formed string without NUL`);
    }
    if (arg0 !== null) checkArgString(what, "arg0", utf8Length(arg0));
    const confinement = this.#chooseConfinement(options, what);
    if (this.#records.has(id)) {
      throw new Deno.errors.AlreadyExists(`${what}: process already exists`);
    }
    this.#evictClosed();
    let live = 0;
    for (const record of this.#records.values()) if (record.state !== "closed") live++;
    if (live >= this.#maxProcesses) {
      throw new RangeError(
        `${what}: the limit of ${
          counted(this.#maxProcesses, "process", "processes")
        } per session is reached`,
      );
    }
    if (this.#limiter && !this.#limiter.tryAcquire()) {
      throw new RangeError(
        `${what}: the executor-wide limit of ${
          counted(this.#limiter.max, "process", "processes")
        } is reached`,
      );
    }
    const record = this.#newRecord(id, argv, tty);
    this.#records.set(id, record);
    try {
      const planOptions = {
        cwd,
        tty,
        cols,
        rows,
        arg0: arg0 !== null && arg0 !== argv[0] ? arg0 : null,
        confinement,
        env: options.env,
        inheritEnv: options.inheritEnv ?? true,
        envPolicy: options.envPolicy,
        denoPermissions: options.denoPermissions,
      };
      let plan = await this.#plan(argv, planOptions);
      const setsid = await detectSessionHelper();
      const stdio = {
        stdin: tty || options.pipeStdin === true,
        stdout: tty || options.pipeStdout !== false,
        stderr: tty || options.pipeStderr !== false,
      };
      for (let attempt = 1;; attempt++) {
        if (this.#closing) throw new Error(`${what}: the process table is closed`);
        try {
          // Through setsid a missing program would only show as exit code 127: look first.
          if (setsid !== null) await checkProgramFile(plan.program);
          // close() may have begun during the await: it terminates only spawned processes.
          if (this.#closing) break;
          this.#spawn(record, plan, setsid, stdio, timeoutMs);
          break;
        } catch (error) {
          if (error instanceof Deno.errors.NotCapable) throw error;
          if (!(error instanceof Deno.errors.NotFound) || attempt > 1) {
            throw spawnError(argv[0], error);
          }
          // A remembered PATH lookup may be stale (the program moved): search once more.
          forgetResolvedPrograms();
          plan = await this.#plan(argv, planOptions);
        }
      }
      if (record.state === "starting") throw new Error(`${what}: the process table is closed`);
    } catch (error) {
      this.#records.delete(id);
      this.#releaseSlot(record);
      record.buffer.wake();
      // Requests waiting for the start (signal, terminate, resize) see it failed.
      record.resolveSpawned();
      record.resolvePtyReady();
      record.resolveDone();
      if (error instanceof Deno.errors.NotCapable) {
        // Deno also refuses loader variables (LD_PRELOAD, ...) unless run access is unrestricted.
        const variable = /with (\S+) environment variable/.exec(error.message)?.[1];
        const why = variable === undefined
          ? "run access is not granted"
          : `Deno passes ${variable} to a child only when run access is unrestricted; unset it`;
        throw new SandboxDeniedError(`Cannot start ${JSON.stringify(argv[0])}: ${why}`, {
          cause: error,
        });
      }
      throw error;
    }
  }

  /**
   * Reads retained output per upstream `process/read` (§6.6): chunks after
   * `afterSeq`, at most `maxBytes` (the first chunk always), waiting up to
   * `waitMs` when there is nothing new. Returned chunks count as consumed.
   *
   * @param processId The process.
   * @param options Cursor, budget, wait and signal.
   * @returns The chunks and the process state.
   * @throws {Deno.errors.NotFound} For an unknown (or already removed) process.
   * @throws {RangeError} When `afterSeq`, `maxBytes` or `waitMs` is out of range.
   */
  async read(processId: string, options: ReadOptions = {}): Promise<ReadResult> {
    const afterSeq = options.afterSeq ?? 0;
    const maxBytes = options.maxBytes ?? Infinity;
    const waitMs = Math.min(options.waitMs ?? 0, this.#maxWaitMs);
    if (!Number.isSafeInteger(afterSeq) || afterSeq < 0) {
      throw new RangeError(
        `Cannot read process: afterSeq ${afterSeq} is not a non-negative integer`,
      );
    }
    if (maxBytes !== Infinity && (!Number.isSafeInteger(maxBytes) || maxBytes < 0)) {
      throw new RangeError(
        `Cannot read process: maxBytes ${maxBytes} is not a non-negative integer`,
      );
    }
    if (!(waitMs >= 0)) {
      throw new RangeError(
        `Cannot read process: waitMs ${options.waitMs} is not a non-negative number`,
      );
    }
    let record = this.#get(processId, "read");
    const ready = (r: ProcessRecord): boolean =>
      r.buffer.nextSeq - 1 > afterSeq || r.state === "closed";
    if (!ready(record) && waitMs > 0) {
      if (options.signal?.aborted) throw options.signal.reason;
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), waitMs);
      const onAbort = (): void => controller.abort();
      options.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        while (!ready(record) && !controller.signal.aborted) {
          await record.buffer.waitChange(record.buffer.nextSeq - 1, controller.signal);
          record = this.#get(processId, "read");
        }
      } finally {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
      }
    }
    const slice = record.buffer.read(afterSeq, maxBytes);
    return {
      chunks: slice.chunks.map(({ seq, stream, chunk }) => ({ seq, stream, chunk })),
      nextSeq: slice.nextSeq,
      exited: record.exitCode !== null,
      exitCode: record.exitCode,
      signal: record.signal,
      closed: record.closedSeq !== null && slice.complete,
      failure: record.failure,
      timedOut: record.timedOut,
    };
  }

  /**
   * Writes to the process's stdin; `eof` closes it afterwards.
   *
   * @param processId The process.
   * @param chunk The bytes.
   * @param options `eof: true` closes stdin after the bytes; `signal` stops
   *   the wait (the bytes stay queued and are written in order); `onQueued`
   *   is called once the bytes are queued, before the wait for the child.
   * @returns `accepted`, `unknownProcess`, `stdinClosed` (no stdin, closed, or the process ended) or `starting`.
   * @throws {RangeError} When the bytes would take what waits for the child past
   *   {@linkcode MAX_QUEUED_STDIN_BYTES}, or {@linkcode MAX_QUEUED_STDIN_WRITES}
   *   writes already wait for the table's children; nothing is queued then.
   * @throws {unknown} The signal's reason when it aborts before the bytes are taken.
   */
  async write(
    processId: string,
    chunk: Uint8Array,
    options: { eof?: boolean; signal?: AbortSignal; onQueued?: () => void } = {},
  ): Promise<"accepted" | "unknownProcess" | "stdinClosed" | "starting"> {
    const record = this.#records.get(processId);
    if (!record) return "unknownProcess";
    if (record.state === "starting") return "starting";
    const writer = record.writer;
    if (!writer || record.stdinClosed || record.state !== "running") return "stdinClosed";
    // A chunk may be a view on the message it came in (a binary write): what
    // it keeps alive is that whole buffer, so that is what counts.
    const held = Math.max(chunk.byteLength, chunk.buffer.byteLength);
    if (this.#stdinWrites >= MAX_QUEUED_STDIN_WRITES) {
      throw new RangeError(
        `Cannot write to process ${JSON.stringify(clipped(processId, 64))}: ` +
          `${this.#stdinWrites} writes already wait for this session's processes to read, ` +
          "the limit; wait for earlier writes' replies",
      );
    }
    if (record.stdinQueued + held > MAX_QUEUED_STDIN_BYTES) {
      throw new RangeError(
        `Cannot write to process ${JSON.stringify(clipped(processId, 64))}: ` +
          `${record.stdinQueued} bytes already wait for it to read, and ${held} ` +
          `more would pass the limit of ${MAX_QUEUED_STDIN_BYTES}; wait for earlier writes' replies`,
      );
    }
    const shared = this.#stdinLimit;
    if (shared !== undefined && !shared.tryTake(held)) {
      throw new RangeError(
        `Cannot write to process ${JSON.stringify(clipped(processId, 64))}: ` +
          `${shared.used} bytes of stdin already wait for this executor's processes to read, and ` +
          `${held} more would pass its limit of ${shared.max}; wait for earlier writes' replies`,
      );
    }
    const eof = options.eof === true;
    if (eof) record.stdinClosed = true;
    if (record.tty && chunk.byteLength > 0) {
      const last = chunk[chunk.byteLength - 1];
      record.ttyLineOpen = last !== 0x0a && last !== 0x0d && last !== CTRL_D[0];
    }
    // A terminal takes Ctrl-D as end of input only at the start of a line;
    // within one it only hands the line over, so then it is typed twice
    // (`script` types the second when its stdin closes).
    const written = this.#writeStdin(record, writer, chunk, held, eof, eof && record.ttyLineOpen);
    options.onQueued?.();
    return options.signal ? await abortable(written, options.signal) : await written;
  }

  /** Queues the bytes on the stdin writer, which keeps writes in call order. */
  async #writeStdin(
    record: ProcessRecord,
    writer: WritableStreamDefaultWriter<Uint8Array>,
    chunk: Uint8Array,
    held: number,
    eof: boolean,
    endLine: boolean,
  ): Promise<"accepted" | "stdinClosed"> {
    record.stdinQueued += held;
    this.#stdinWrites++;
    try {
      await record.ptyReady;
      if (chunk.byteLength > 0) await writer.write(chunk);
      if (endLine) await writer.write(CTRL_D.slice());
      if (eof) await writer.close();
      return "accepted";
    } catch {
      record.stdinClosed = true;
      return "stdinClosed";
    } finally {
      record.stdinQueued -= held;
      this.#stdinWrites--;
      this.#stdinLimit?.give(held);
    }
  }

  /**
   * Sends a signal to the process tree (its process group; in a terminal, the
   * terminal's foreground process group, as the terminal's own keys do).
   *
   * @param processId The process.
   * @param signal The signal.
   * @returns True when the process was running and the signal was sent.
   */
  async signal(processId: string, signal: Deno.Signal): Promise<boolean> {
    const record = await this.#started(processId);
    if (!record || record.state !== "running") return false;
    // A terminal's signal goes where its Ctrl-C would: the foreground group
    // (a shell's job, say), known once the terminal has reported its session.
    // Before that it would reach `script`, which ends the whole session.
    if (record.tty) await record.ptyReady;
    let groups = this.#groups(record);
    if (record.tty && record.pty) {
      const ps = await this.#psHelper();
      const foreground = await foregroundGroup(ps, record.pty.pid);
      groups = [foreground ?? record.pty.pid];
    }
    return await this.#signalGroups(record, groups, signal);
  }

  /**
   * Terminates the process tree: TERM to the group now, KILL after the grace
   * period if it has not closed by then. Lingering descendants of a process
   * that already exited are killed too. A process that closed but is still
   * retained may have left children in its group (`cmd &` that outlives
   * `sh`): they are killed.
   *
   * @param processId The process.
   * @returns True only if the process was running and had not exited (upstream `{running}`).
   */
  async terminate(processId: string): Promise<boolean> {
    const record = await this.#started(processId);
    if (!record) return false;
    if (record.state === "closed") {
      this.#killLeftovers(record);
      return false;
    }
    const running = record.state === "running";
    this.#terminate(record);
    return running;
  }

  /**
   * Closes the executor's end of a process's stdout or stderr pipe, for a
   * harness that will read no more of it: the program's next write there
   * fails (SIGPIPE, which ends most programs), as a `Deno.ChildProcess`'s
   * does once its reader is cancelled, and its output stops costing the
   * connection. What was read before stays readable. Under a terminal,
   * `stdout` is the terminal's output: closing it hangs the terminal up
   * (SIGHUP to its session leader and its foreground group, as the kernel
   * does when a terminal goes away), since the terminal helper would go on
   * reading and discarding; its `stderr` carries no program output.
   *
   * @param processId The process.
   * @param pipe `stdout` or `stderr`.
   * @returns True when the pipe was open and this call closed it; false for
   *   an unknown or closed process, a pipe already ended or closed, and a
   *   terminal's `stderr`.
   */
  async closeOutput(processId: string, pipe: "stdout" | "stderr"): Promise<boolean> {
    const record = await this.#started(processId);
    if (!record || record.state === "closed" || (record.tty && pipe === "stderr")) return false;
    // A terminal's session leader is known from the wrapper's marker, its
    // first output on this very pipe: read it before the pipe closes, or the
    // hang-up below would have no one to reach.
    if (record.tty) await record.ptyReady;
    const pump = record.pumps.find((each) => each.pipe === pipe);
    if (pump === undefined || pump.ended) return false;
    pump.ended = true;
    this.#track(pump.reader.cancel().catch(() => {}));
    if (record.tty && record.state === "running") {
      const leader = record.pty?.pid;
      if (leader !== undefined) {
        const ps = await this.#psHelper();
        const foreground = await foregroundGroup(ps, leader);
        const groups = foreground === null || foreground === leader
          ? [leader]
          : [leader, foreground];
        await this.#signalGroups(record, groups, "SIGHUP");
      }
    }
    return true;
  }

  /**
   * The record of a process, once its start has spawned it: a signal or
   * terminate sent right after `process/start`, before its reply, applies to
   * the process instead of being dropped. Undefined when unknown or the
   * start failed.
   */
  async #started(processId: string): Promise<ProcessRecord | undefined> {
    const record = this.#records.get(processId);
    if (record?.state !== "starting") return record;
    await record.spawned;
    return this.#records.get(processId) === record ? record : undefined;
  }

  /**
   * Resizes a process's terminal (needs the `stty` or `sh` helper).
   *
   * @param processId The process.
   * @param cols Columns.
   * @param rows Rows.
   * @throws {Deno.errors.NotFound} For an unknown process.
   * @throws {TypeError} When the process has no terminal.
   * @throws {RangeError} When the size is out of range.
   * @throws {SandboxDeniedError} When no resize helper is granted.
   * @throws {Error} When the process has exited or its terminal is unknown.
   */
  async resize(processId: string, cols: number, rows: number): Promise<void> {
    const record = this.#get(processId, "resize");
    const what = `Cannot resize process ${JSON.stringify(processId)}`;
    checkTtySize(cols, rows);
    if (!record.tty) throw new TypeError(`${what}: it has no terminal`);
    await record.ptyReady;
    if (this.#records.get(processId) !== record) {
      throw new Deno.errors.NotFound(`${what}: it did not start`);
    }
    if (record.state !== "running") throw new Error(`${what}: it has exited`);
    const device = record.pty?.device;
    if (!device) throw new Error(`${what}: its terminal device is unknown`);
    // One `stty` at a time, each for the latest size asked for: concurrent
    // ones may finish in any order and leave an older size behind.
    record.wantedSize = { cols, rows };
    record.resizing ??= (async () => {
      try {
        for (let size = record.wantedSize; size !== null; size = record.wantedSize) {
          record.wantedSize = null;
          // Exited meanwhile: its terminal device may be gone, or someone else's.
          if (record.state !== "running") throw new Error(`${what}: it has exited`);
          await resizePty(device, size.cols, size.rows);
        }
      } finally {
        record.resizing = null;
      }
    })();
    await record.resizing;
  }

  /**
   * Tells whether a process id is taken: a process starting, running, or
   * closed and still retained (a cheap check, unlike scanning {@linkcode ProcessTable.list}).
   *
   * @param processId The id.
   * @returns True when a start with this id would fail as already existing.
   */
  has(processId: string): boolean {
    return this.#records.has(processId);
  }

  /**
   * A process is not yet closed: starting, running, or exited while a child it
   * started still holds its output open (`sh -c 'sleep 9 & echo'`); closing
   * the table would kill that child. Or a terminated one closed within its
   * grace and what it left still has the rest of it: closing would cut that
   * short. Other closed ones only keep their output.
   */
  get busy(): boolean {
    if ((this.#leftoverKills?.size ?? 0) > 0) return true;
    for (const record of this.#records.values()) {
      if (record.state !== "closed") return true;
    }
    return false;
  }

  /**
   * Lists the processes (started ones, including closed ones still retained).
   *
   * @returns One row per process.
   */
  list(): ProcessInfo[] {
    const rows: ProcessInfo[] = [];
    for (const record of this.#records.values()) {
      if (record.state === "starting") continue;
      rows.push({
        processId: record.id,
        argv: [...record.argv],
        running: record.state === "running",
        exitCode: record.exitCode,
      });
    }
    return rows;
  }

  /**
   * Attaches (or with null detaches) the event sink. A newly attached sink
   * first receives, per process in seq order, every retained event not yet
   * delivered: not consumed, or taken by an earlier sink that confirms
   * delivery and never confirmed it (at-least-once delivery: dedupe by seq).
   *
   * @param sink The sink, or null.
   * @param options Whether the sink confirms delivery.
   */
  setEventSink(sink: ProcessEventSink | null, options: EventSinkOptions = {}): void {
    const changed = sink !== this.#sink;
    this.#sink = sink;
    this.#sinkConfirms = sink !== null && options.confirmsDelivery === true;
    if (!sink || !changed) return;
    for (const record of this.#records.values()) {
      const after = record.buffer.deliveredSeq;
      const events: ProcessEvent[] = record.buffer.retainedAfter(after).map((c) => ({
        type: "output",
        processId: record.id,
        seq: c.seq,
        stream: c.stream,
        chunk: c.chunk,
      }));
      if (record.exitSeq !== null && record.exitSeq > after) events.push(this.#exitEvent(record));
      if (record.closedSeq !== null && record.closedSeq > after) {
        events.push(this.#closedEvent(record, record.closedSeq));
      }
      events.sort((a, b) => a.seq - b.seq);
      for (const event of events) this.#deliver(record, event);
    }
  }

  /**
   * What this executor offers: confinement levels, tree kill, terminals.
   *
   * @returns The capabilities (detected once per executor process).
   */
  async capabilities(): Promise<Capabilities> {
    const caps = await detectCapabilities();
    return { ...caps, confinements: [...caps.confinements] };
  }

  /**
   * Kills every process (group TERM, KILL after the grace period) and waits
   * until all have closed. Idempotent.
   *
   * @returns Once everything is gone.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  /** Same as {@linkcode ProcessTable.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    // The sink stays while the programs end: their last output and exit reach
    // a connected harness. Output is no longer kept for reading (nor waited
    // for: a harness that does not read cannot hold the close up).
    const records = [...this.#records.values()];
    // What closed processes left, retained, forgotten or kept for a timeout:
    // killed in one go (a `kill` run for the groups, a `ps` listing for the
    // sessions' other groups and one for the proof), not runs per process.
    const ended: ProcessRecord[] = [];
    for (const record of records) {
      record.buffer.discard();
      if (record.state === "running" || record.state === "exited") this.#terminate(record);
      else if (record.state === "closed") ended.push(record);
    }
    for (const [timer, record] of this.#leftoverKills ?? []) {
      clearTimeout(timer);
      ended.push(record); // the programs below are keyed: once each
    }
    this.#leftoverKills?.clear();
    clearTimeout(this.#timeoutKillTimer);
    const now = performance.now();
    const programs = new Map<string, EndedProgramGroups>();
    const add = (program: EndedProgramGroups): void => {
      const key = `${program.groups.join(",")}/${program.session}`;
      if (program.groups.length > 0 && !programs.has(key)) programs.set(key, program);
    };
    for (const record of ended) add(this.#endedProgram(record));
    // Forgotten ones, and ones kept for their timeouts (which may be forgotten past the last 1,024).
    for (const { groups, session, exitedAt } of [...this.#forgotten, ...this.#timeoutKills ?? []]) {
      add({ groups, session, exitedAgoMs: now - exitedAt });
    }
    this.#forgotten = [];
    this.#timeoutKills = undefined;
    if (programs.size > 0) {
      this.#track(this.#killLeftoversOf([...programs.values()]).catch(() => {}));
    }
    // A start in progress sees #closing before it would spawn and settles `done` by failing.
    await Promise.all(records.map((record) => record.done));
    for (const record of records) {
      for (const timer of record.timers) clearTimeout(timer);
      record.timers.clear();
    }
    for (const record of this.#closedInOrder) this.#uncountClosedOutput(record);
    this.#records.clear();
    this.#closedInOrder.clear();
    this.#sink = null;
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  #chooseConfinement(options: StartProcessOptions, what: string): Confinement {
    const asked = options.confinement;
    if (asked !== undefined && !CONFINEMENTS.includes(asked)) {
      throw new TypeError(`${what}: unknown confinement ${JSON.stringify(asked)}`);
    }
    const min = this.#minConfinement;
    if (asked === undefined) {
      if (min === "deno") {
        throw new SandboxDeniedError(
          `${what}: the executor requires "deno" confinement, and the request does not ask for ` +
            `it (a Deno module run with confinement "deno"; outpost exec --confinement deno)`,
        );
      }
      return min;
    }
    if (min === "none" || asked === min) return asked;
    if (min === "os" && asked === "deno") {
      // A Deno program is held to what `os` would allow: no writes (`os`
      // writes only the write roots), no network unless the operator allows
      // it, and nothing that escapes Deno (run, ffi). It runs in bubblewrap
      // too (see #plan), so it reads only what `os` shows.
      const p = options.denoPermissions ?? {};
      const held: (keyof DenoPermissions)[] = ["write", "run", "ffi"];
      if (!this.#allowNetwork) held.push("net");
      const weaker = held.filter((name) => asks(p[name]));
      if (weaker.length === 0) return asked;
      throw new SandboxDeniedError(
        `${what}: the executor requires "os" confinement, and a "deno" program with ${
          weaker.join(", ")
        } access is weaker (use "os")`,
      );
    }
    throw new SandboxDeniedError(
      `${what}: the executor requires "${min}" confinement, and the request asks for "${asked}"`,
    );
  }

  async #plan(argv: string[], p: {
    cwd: string | undefined;
    tty: boolean;
    cols: number;
    rows: number;
    arg0: string | null;
    confinement: Confinement;
    env: Record<string, string> | undefined;
    inheritEnv: boolean;
    envPolicy: EnvPolicy | undefined;
    denoPermissions: DenoPermissions | undefined;
  }): Promise<{ program: string; args: string[]; env: Record<string, string>; cwd?: string }> {
    const subject = argv[0];
    const env = buildChildEnv(p.env, {
      inherit: p.inheritEnv,
      allowlist: this.#inheritEnv,
      maxEnvBytes: this.#maxEnvBytes,
      policy: p.envPolicy,
    });
    const asked = { ...p.envPolicy?.set, ...p.env };
    if (p.confinement !== "none") {
      checkConfinedEnv(asked, subject);
      const caps = await detectCapabilities();
      if (!caps.confinements.includes(p.confinement)) {
        throw new SandboxDeniedError(
          `Cannot start ${
            JSON.stringify(subject)
          }: "${p.confinement}" confinement is not available on this executor`,
        );
      }
    }
    let base: string[];
    if (p.confinement === "deno") {
      if (p.arg0 !== null) {
        throw new TypeError(
          `Cannot start ${JSON.stringify(subject)}: arg0 is not supported for Deno programs`,
        );
      }
      const deno = await requireProgram(
        "deno",
        undefined,
        '"deno" confinement needs the "deno" helper',
        subject,
      );
      checkDenoProgramEnv(asked, subject);
      const flags = await denoRunFlags(p.denoPermissions, subject, p.cwd);
      base = [deno, ...flags, subject, ...argv.slice(1)];
    } else {
      if (p.denoPermissions !== undefined) {
        throw new TypeError(
          `Cannot start ${JSON.stringify(subject)}: denoPermissions needs "deno" confinement`,
        );
      }
      const program = await requireProgram(subject, p.cwd);
      base = [program, ...argv.slice(1)];
      if (p.arg0 !== null) {
        const bash = await requireProgram(
          "bash",
          undefined,
          'arg0 needs the "bash" helper',
          subject,
        );
        base = [bash, "-c", 'exec -a "$0" "$@"', p.arg0, ...base];
      }
    }
    // Under an `os` minimum a Deno program runs in bubblewrap too, so what it
    // may read is what `os` shows (not the host's /tmp, /run or /dev).
    if (
      p.confinement === "os" || (p.confinement === "deno" && this.#minConfinement === "os")
    ) {
      const bwrap = await requireProgram(
        "bwrap",
        undefined,
        '"os" confinement needs the "bwrap" helper',
        subject,
      );
      const roots = await grantedWriteRoots(this.#writeRoots);
      const dirs = await this.#sandboxDirs(subject, p.cwd, roots);
      base = [
        bwrap,
        ...bwrapArgs({
          writeRoots: roots,
          readOnlyDirs: dirs.readOnlyDirs,
          allowNetwork: this.#allowNetwork,
          cwd: dirs.cwd,
        }),
        ...base,
      ];
    }
    if (p.tty) {
      const script = await requireProgram(
        "script",
        undefined,
        'tty needs the "script" helper',
        subject,
      );
      const args = ttyCommand(base, { cols: p.cols, rows: p.rows, shell: env.SHELL });
      // The whole command, quoted, is one argument of `script`.
      const line = utf8Length(args[1]);
      if (line > MAX_ARG_STRING_BYTES) {
        throw new RangeError(
          `Cannot start ${JSON.stringify(clipped(subject, 256))}: under tty its argv runs as ` +
            `one shell command line (quoted, for script), here ${line} bytes, over the ` +
            `${MAX_ARG_STRING_BYTES} byte limit of one argument (Linux's MAX_ARG_STRLEN)`,
        );
      }
      return { program: script, args, env: { ...env, SHELL: "/bin/sh" }, cwd: p.cwd };
    }
    return { program: base[0], args: base.slice(1), env, cwd: p.cwd };
  }

  /**
   * Keeps the working directory visible under `os` confinement, whose private
   * `/tmp` (and `/run`) would hide it. The table's own directory (the
   * operator's) is bound read-only then. A request's directory elsewhere
   * under them is refused rather than bound: a read-only bind still lets the
   * program connect to the Unix sockets in it (tmux, ssh-agent, the D-Bus
   * user bus in /run/user), which the private mounts exist to hide.
   */
  async #sandboxDirs(
    subject: string,
    cwd: string | undefined,
    writeRoots: readonly string[],
  ): Promise<{ readOnlyDirs: string[]; cwd?: string }> {
    const network = this.#allowNetwork;
    const own = await realPathOrNull(this.#cwd ?? currentDir());
    const readOnlyDirs = own !== null && hiddenInSandbox(own, network) !== null &&
        !writeRoots.some((root) => isInside(own, root))
      ? [own]
      : [];
    if (cwd === undefined) return { readOnlyDirs };
    let real = cwd;
    try {
      real = await Deno.realPath(cwd);
    } catch (error) {
      // A missing directory fails the spawn itself, as without confinement.
      if (error instanceof Deno.errors.NotFound) return { readOnlyDirs, cwd };
    }
    const hiddenBy = hiddenInSandbox(real, network);
    if (
      hiddenBy !== null &&
      ![...writeRoots, ...readOnlyDirs].some((dir) => isInside(real, dir))
    ) {
      const resolved = real === cwd ? "" : ` (it resolves to ${JSON.stringify(real)})`;
      throw new SandboxDeniedError(
        `Cannot start ${JSON.stringify(subject)}: cwd ${JSON.stringify(cwd)}${resolved} lies ` +
          `under the private ${hiddenBy} of "os" ` +
          `confinement; use a directory outside it, inside a write root, or inside the ` +
          `executor's working directory`,
      );
    }
    return { readOnlyDirs, cwd: real };
  }

  #spawn(
    record: ProcessRecord,
    plan: { program: string; args: string[]; env: Record<string, string>; cwd?: string },
    setsid: string | null,
    stdio: { stdin: boolean; stdout: boolean; stderr: boolean },
    timeoutMs: number | undefined,
  ): void {
    // Either way the child leads a new session and process group (see the module doc).
    const child = new Deno.Command(setsid ?? plan.program, {
      args: setsid === null ? plan.args : ["--", plan.program, ...plan.args],
      cwd: plan.cwd,
      clearEnv: true,
      env: plan.env,
      stdin: stdio.stdin ? "piped" : "null",
      stdout: stdio.stdout ? "piped" : "null",
      stderr: stdio.stderr ? "piped" : "null",
      detached: setsid === null,
    }).spawn();
    record.child = child;
    record.pid = child.pid;
    record.state = "running";
    record.writer = stdio.stdin ? child.stdin.getWriter() : null;
    record.openStreams = Number(stdio.stdout) + Number(stdio.stderr);
    record.resolveSpawned();
    if (!record.tty) record.resolvePtyReady();
    const parser = record.tty ? new PtyMarkerParser() : undefined;
    if (stdio.stdout) {
      this.#pump(record, "stdout", child.stdout, record.tty ? "pty" : "stdout", parser);
    }
    if (stdio.stderr) this.#pump(record, "stderr", child.stderr, record.tty ? "pty" : "stderr");
    if (timeoutMs !== undefined) {
      record.timeoutDueAt = performance.now() + timeoutMs;
      this.#timer(record, timeoutMs, () => {
        record.timeoutDueAt = null;
        // A terminate asked for earlier is not a timeout.
        if (record.state === "running" && !record.terminating) record.timedOut = true;
        this.#terminate(record);
      });
    }
    child.status.then(
      (status) => this.#onExit(record, status.code, status.signal),
      (error) => {
        record.failure ??= `Cannot wait for the process: ${error?.message ?? error}`;
        this.#onExit(record, -1, null);
      },
    );
  }

  async #pump(
    record: ProcessRecord,
    pipe: "stdout" | "stderr",
    stream: ReadableStream<Uint8Array>,
    name: OutputStream,
    parser?: PtyMarkerParser,
  ): Promise<void> {
    const reader = stream.getReader({ mode: "byob" });
    const pump: Pump = {
      pipe,
      reader,
      ended: false,
      paused: false,
      cancelOnResume: false,
      readSinceCancelDue: null,
    };
    record.pumps.push(pump);
    const readBytes = this.#outputReadBytes(record.id);
    let buffer = new ArrayBuffer(OUTPUT_HEADROOM_BYTES + readBytes);
    try {
      for (;;) {
        pump.paused = true;
        await record.buffer.waitWritable();
        pump.paused = false;
        if (pump.cancelOnResume) {
          pump.cancelOnResume = false;
          this.#timer(record, this.#killGraceMs, () => this.#cancelPump(pump));
        }
        const { value, done } = await reader.read(
          new Uint8Array(buffer, OUTPUT_HEADROOM_BYTES, readBytes),
        );
        if (done || value === undefined) break;
        if (pump.readSinceCancelDue !== null) pump.readSinceCancelDue += value.byteLength;
        let bytes: Uint8Array = value;
        if (parser && !parser.done) {
          bytes = parser.push(value);
          if (parser.done) this.#onMarker(record, parser.marker);
        }
        if (value.byteLength * 2 < readBytes) {
          // A short read keeps a right-sized copy: a retained chunk must not
          // hold a whole read buffer (a line at a time would cost ~60 KiB per
          // line). The read buffer, now unreferenced, takes the next read.
          buffer = value.buffer;
          if (bytes.byteLength > 0) {
            this.#output(record, name, withHeadroom(bytes), OUTPUT_HEADROOM_BYTES);
          }
        } else {
          buffer = new ArrayBuffer(OUTPUT_HEADROOM_BYTES + readBytes);
          if (bytes.byteLength > 0) {
            this.#output(record, name, bytes, bytes === value ? OUTPUT_HEADROOM_BYTES : 0);
          }
        }
      }
    } catch (error) {
      if (!record.terminating) {
        record.failure ??= `Cannot read ${name}: ${error instanceof Error ? error.message : error}`;
      }
    } finally {
      if (parser && !parser.done) {
        const rest = parser.flush();
        this.#onMarker(record, null);
        if (rest.byteLength > 0) this.#output(record, name, rest);
      }
      pump.ended = true;
      reader.releaseLock();
      record.openStreams--;
      this.#maybeClosed(record);
    }
  }

  /**
   * The most bytes one output read takes: one relay segment's worth, less
   * under a small message limit, where the chunk's JSON notification (base64
   * grows 4/3; the envelope, seq and JSON-escaped processId around it) must
   * still fit. At least 1.
   */
  #outputReadBytes(processId: string): number {
    const envelope = OUTPUT_ENVELOPE_BYTES + utf8.encode(JSON.stringify(processId)).length;
    const fitting = Math.floor((this.#maxMessageBytes - envelope) / 4) * 3;
    return Math.max(1, Math.min(SEGMENT_FIT_DATA_BYTES, fitting));
  }

  #onMarker(record: ProcessRecord, marker: PtyMarker | null): void {
    record.pty = marker;
    record.resolvePtyReady();
  }

  #output(record: ProcessRecord, stream: OutputStream, chunk: Uint8Array, headroom = 0): void {
    // Closing, output is no longer held back for a harness (it could hold the
    // close up): what a program prints as it stops is sent on up to the
    // retention's worth, as much as a harness may have waiting anyway; the
    // rest is dropped, not queued toward one that does not read. A dropped
    // chunk takes no seq: a gap would send a harness to `process/read` for
    // it, which fails once the table has closed, and the exit with it.
    if (this.#closing !== undefined) {
      // Once a chunk is dropped, so is all that follows: no hole in what is sent.
      const over = record.closingBytes + chunk.byteLength > this.#retainedOutputBytes;
      if (over || record.droppedOutputBytes > 0) {
        record.droppedOutputBytes += chunk.byteLength;
        return;
      }
      record.closingBytes += chunk.byteLength;
    }
    const seq = record.buffer.pushOutput(stream, chunk);
    this.#deliver(record, { type: "output", processId: record.id, seq, stream, chunk, headroom });
  }

  #onExit(record: ProcessRecord, code: number, signal: string | null): void {
    record.state = "exited";
    record.exitedAt = performance.now();
    record.exitCode = record.timedOut ? TIMEOUT_EXIT_CODE : code;
    record.signal = signal;
    record.exitSeq = record.buffer.takeSeq();
    this.#deliver(record, this.#exitEvent(record));
    this.#maybeClosed(record);
  }

  #exitEvent(record: ProcessRecord): ProcessEvent {
    const event: ProcessEvent = {
      type: "exited",
      processId: record.id,
      seq: record.exitSeq!,
      exitCode: record.exitCode!,
    };
    if (record.signal) event.signal = record.signal;
    if (record.timedOut) event.timedOut = true;
    return event;
  }

  #closedEvent(record: ProcessRecord, seq: number): ProcessEvent {
    const event: ProcessEvent = { type: "closed", processId: record.id, seq };
    if (record.droppedOutputBytes > 0) event.droppedOutputBytes = record.droppedOutputBytes;
    return event;
  }

  #maybeClosed(record: ProcessRecord): void {
    if (record.state !== "exited" || record.openStreams > 0) return;
    record.state = "closed";
    this.#closedInOrder.add(record);
    record.closedSeq = record.buffer.takeSeq();
    record.resolvePtyReady();
    if (record.writer) {
      const writer = record.writer;
      record.stdinClosed = true;
      this.#track(writer.abort().catch(() => {}));
    }
    for (const timer of record.timers) clearTimeout(timer);
    record.timers.clear();
    this.#releaseSlot(record);
    if (record.killDueAt !== null) {
      // Terminated, and closed within the grace: what is left in its group
      // (a TERM-ignoring child with its output redirected) still gets the KILL.
      const due = record.killDueAt;
      record.killDueAt = null;
      if (this.#closing) this.#killLeftovers(record);
      else {
        // Kept by the table, not the record: an eviction must not drop it or send it early.
        const timer = setTimeout(() => {
          this.#leftoverKills?.delete(timer);
          this.#killLeftovers(record);
        }, Math.max(0, due - performance.now()));
        (this.#leftoverKills ??= new Map()).set(timer, record);
      }
    }
    if (record.timeoutDueAt !== null && !this.#closing) this.#killAtTimeout(record);
    this.#deliver(record, this.#closedEvent(record, record.closedSeq));
    record.resolveDone();
    if (!this.#closing) {
      this.#timer(record, this.#exitedRetentionMs, () => {
        if (this.#records.get(record.id) === record) this.#forget(record);
        record.buffer.wake();
      });
      this.#countClosedOutput(record);
    }
  }

  /**
   * Counts a closed record's retained output against the executor-wide
   * budget, last (the budget may forget records of any table, this one's
   * included, before it returns): the budget forgets the records that
   * closed first.
   */
  #countClosedOutput(record: ProcessRecord): void {
    const budget = this.#closedOutputBudget;
    if (budget === undefined) return;
    const closedAt = performance.now();
    const holder: BudgetHolder = {
      // The key orders within a tier, highest first: the earliest closed.
      shedOrder: () => [0, -closedAt],
      shed: () => {
        if (this.#records.get(record.id) === record) this.#drop(record);
        budget.hold(holder, 0);
      },
    };
    record.budgetHolder = holder;
    // What its chunks keep alive, not only their bytes: a child writing a
    // byte at a time leaves a few hundred bytes per chunk.
    budget.hold(holder, record.buffer.footprintBytes);
  }

  #deliver(record: ProcessRecord, event: ProcessEvent): void {
    const sink = this.#sink;
    if (!sink) return;
    const buffer = record.buffer;
    const seq = event.seq;
    const confirms = this.#sinkConfirms;
    let result: void | Promise<void>;
    try {
      result = sink(event, confirms ? () => buffer.confirm(seq) : NO_CONFIRMATION);
    } catch {
      return;
    }
    if (result && typeof (result as Promise<void>).then === "function") {
      (result as Promise<void>).then(
        confirms ? () => buffer.take(seq) : () => buffer.consume(seq),
        () => {},
      );
    } else if (confirms) {
      buffer.take(seq);
    } else {
      buffer.consume(seq);
    }
  }

  #terminate(record: ProcessRecord): void {
    if (record.terminating || record.state === "closed" || record.state === "starting") return;
    record.terminating = true;
    this.#track(this.#signalTree(record, "SIGTERM"));
    record.killDueAt = performance.now() + this.#killGraceMs;
    this.#timer(record, this.#killGraceMs, () => {
      record.killDueAt = null;
      this.#track(this.#signalTree(record, "SIGKILL"));
      // Pipes held by a descendant that escaped the group: stop waiting for them.
      this.#timer(record, this.#killGraceMs, () => {
        for (const pump of record.pumps) this.#cancelPump(pump);
      });
    });
  }

  /**
   * Stops waiting for a pipe that a descendant outside the group keeps open.
   * A reader paused for room in the output buffer is not cancelled yet: the
   * pipe may still hold what the program wrote before it ended, which would
   * be lost. It is looked at again a grace period after it reads again, and
   * cancelled then even if paused once it has read more since than any pipe
   * holds ({@linkcode MAX_PIPE_BYTES}): what comes after that is fed by the
   * descendant.
   */
  #cancelPump(pump: Pump): void {
    pump.readSinceCancelDue ??= 0;
    if (pump.paused && pump.readSinceCancelDue <= MAX_PIPE_BYTES) {
      pump.cancelOnResume = true;
      return;
    }
    this.#track(pump.reader.cancel().catch(() => {}));
  }

  /**
   * Kills what is left in a closed process's group (and session):
   * background children that outlived it with the output redirected
   * (`sh -c 'daemon >/dev/null &'`), as `#killLeftoversOf` does; for a
   * terminate of a closed process, and a terminate's KILL due after the
   * process closed (its record may be forgotten by then). An empty group
   * gets nothing (the helper's kill fails quietly).
   */
  #killLeftovers(record: ProcessRecord): void {
    const program = this.#endedProgram(record);
    if (program.groups.length === 0) return;
    this.#track(this.#killLeftoversOf([program]).catch(() => {}));
  }

  /**
   * KILLs what ended programs left: within {@linkcode GROUP_REUSE_SAFE_MS}
   * of a leader's exit its groups and its session's other groups whole,
   * since their numbers cannot name a newcomer's yet, so members that
   * started after the exit (a worker a leftover forked later) are its own
   * too (its groups need no `ps`; the session's take a listing a batch);
   * later, only what {@linkcode leftoverPids} proves theirs (one listing for
   * all).
   */
  async #killLeftoversOf(programs: readonly EndedProgramGroups[]): Promise<void> {
    const recent = programs.filter((each) => each.exitedAgoMs < GROUP_REUSE_SAFE_MS);
    const older = programs.filter((each) => each.exitedAgoMs >= GROUP_REUSE_SAFE_MS);
    const kills: Promise<unknown>[] = [];
    const helper = recent.length > 0 ? await this.#helper() : null;
    if (helper !== null) {
      kills.push(killProcessGroups(helper, recent.flatMap((each) => each.groups), "SIGKILL"));
      for (const { session, groups } of recent) {
        if (session !== null) {
          kills.push(this.#sweeper.signal({ sid: session, signal: "SIGKILL", skip: groups }));
        }
      }
    }
    if (older.length > 0) kills.push(this.#signalLeftovers(older, "SIGKILL"));
    await Promise.all(kills);
  }

  /**
   * The program's session: a terminal's (its leader's pid, from the marker;
   * null until known), else the program's own, since every child starts as
   * the leader of a session of its own (`setsid`, or `detached`). Job control
   * puts jobs in groups of their own, with a terminal or without one
   * (`bash -c 'set -m; job & wait'`); they stay in the session.
   */
  #session(record: ProcessRecord): number | null {
    if (record.tty) return record.pty?.pid ?? null;
    return record.pid > 1 ? record.pid : null;
  }

  /** What {@linkcode leftoverPids} needs to know of a closed record. */
  #endedProgram(record: ProcessRecord): EndedProgramGroups {
    return {
      groups: this.#groups(record),
      session: this.#session(record),
      exitedAgoMs: performance.now() - (record.exitedAt ?? performance.now()),
    };
  }

  /** Signals what ended programs left (see {@linkcode leftoverPids}): one listing, one kill run. */
  async #signalLeftovers(programs: EndedProgramGroups[], signal: Deno.Signal): Promise<boolean> {
    const helper = await this.#helper();
    if (helper === null) return false;
    const pids = await leftoverPids(await this.#psHelper(), programs);
    if (pids === null || pids.length === 0) return false;
    await killProcesses(helper, pids, signal);
    return true;
  }

  /**
   * Signals the process's groups and the other groups of its session (jobs
   * job control put in groups of their own; see {@linkcode SessionSweeper}). A
   * terminal's program is asked to end through that session only (known
   * once the terminal has reported it; a signal sent earlier waits for
   * that): `script`, signalled itself, prints a notice of its own into the
   * output, waits 2 s and exits 0 without its child's status (util-linux
   * 2.38), while left alone it exits with its child. Each process of the
   * session gets the signal once, by a group kill of each of its groups
   * (found by the `ps` helper, or in `/proc` under `--allow-all`; else its own). Without the `kill`
   * helper nothing but `script` could be reached, so nothing is: SIGKILL,
   * the end of the grace, takes `script`, and its terminal's hangup ends a
   * program that does not ignore SIGHUP.
   */
  async #signalTree(record: ProcessRecord, signal: Deno.Signal): Promise<void> {
    const ended = record.state === "exited" ? this.#endedProgram(record) : null;
    if (ended !== null && ended.exitedAgoMs >= GROUP_REUSE_SAFE_MS) {
      // The leader is long gone (a descendant holds its output open): its
      // group's number may belong to a newcomer now, so only what is provably
      // its own is signalled.
      await this.#signalLeftovers([ended], signal);
      return;
    }
    const helper = await this.#helper();
    if (record.tty && signal !== "SIGKILL") {
      if (record.pty === null) await record.ptyReady;
      if (record.state === "closed" || record.state === "starting") return;
      if (record.pty !== null) {
        if (helper === null) return;
        // Every group of the session as a whole (job control puts jobs in
        // groups of their own; a child forked in one meanwhile is a member):
        // each process gets the signal once.
        const sid = record.pty.pid;
        await this.#sweeper.signal({ sid, signal, include: [sid] });
        return;
      }
    }
    const groups = this.#groups(record);
    const session = this.#session(record);
    await Promise.all([
      this.#signalGroups(record, groups, signal),
      // The session's other groups: jobs job control put in groups of their own.
      helper === null || session === null
        ? undefined
        : this.#sweeper.signal({ sid: session, signal, skip: groups }),
    ]);
  }

  #groups(record: ProcessRecord): number[] {
    const groups = [record.pid];
    if (record.pty && record.pty.pid !== record.pid) groups.push(record.pty.pid);
    return groups.filter((pid) => pid > 1);
  }

  async #signalGroups(
    record: ProcessRecord,
    groups: number[],
    signal: Deno.Signal,
  ): Promise<boolean> {
    if (record.state === "closed" || record.state === "starting") return false;
    const helper = await this.#helper();
    if (helper !== null && groups.length > 0 && (record.state as string) !== "closed") {
      if (await killProcessGroups(helper, groups, signal)) return true;
    }
    if (record.state !== "running" || !record.child) return false;
    try {
      record.child.kill(signal);
      return true;
    } catch {
      return false;
    }
  }

  #helper(): Promise<string | null> {
    this.#killHelper ??= detectCapabilities().then((caps) =>
      caps.treeKill ? resolveGrantedProgram("kill") : null
    );
    return this.#killHelper;
  }

  /**
   * The granted `ps`, which finds a session's groups and tells a
   * pid free; null reads `/proc` instead (Deno allows it under `--allow-all`).
   */
  #psHelper(): Promise<string | null> {
    this.#ps ??= resolveGrantedProgram("ps");
    return this.#ps;
  }

  #timer(record: ProcessRecord, ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      record.timers.delete(timer);
      fn();
    }, Math.min(ms, MAX_TIMER_MS));
    record.timers.add(timer);
  }

  #track(promise: Promise<unknown>): void {
    this.#pending.add(promise);
    promise.finally(() => this.#pending.delete(promise));
  }

  #releaseSlot(record: ProcessRecord): void {
    if (!record.holdsSlot) return;
    record.holdsSlot = false;
    this.#limiter?.release();
  }

  /** Drops a closed record, keeping its groups for the close's leftover kill. */
  #forget(record: ProcessRecord): void {
    this.#records.delete(record.id);
    this.#closedInOrder.delete(record);
    this.#uncountClosedOutput(record);
    const { groups, session } = this.#endedProgram(record);
    if (groups.length === 0) return;
    this.#forgotten.push({ groups, session, exitedAt: record.exitedAt ?? performance.now() });
    if (this.#forgotten.length > MAX_FORGOTTEN_GROUPS) this.#forgotten.shift();
  }

  /** Keeps a closed program's groups for its timeout (see `#timeoutKills`). */
  #killAtTimeout(record: ProcessRecord): void {
    const { groups, session } = this.#endedProgram(record);
    if (groups.length === 0) return;
    const pending = this.#timeoutKills ??= [];
    const exitedAt = record.exitedAt ?? performance.now();
    // Due times rounded up to the next whole second: programs that closed
    // together share one kill run (a `ps` listing once their exits are old),
    // at most a second after their timeouts.
    const dueAt = Math.ceil(record.timeoutDueAt! / 1000) * 1000;
    record.timeoutDueAt = null;
    pending.push({ groups, session, exitedAt, dueAt });
    if (pending.length > this.#maxTimeoutKills) {
      // The one due last goes: the table's close may well come first.
      let latest = 0;
      for (let i = 1; i < pending.length; i++) {
        if (pending[i].dueAt > pending[latest].dueAt) latest = i;
      }
      pending.splice(latest, 1);
    }
    this.#armTimeoutKills();
  }

  #armTimeoutKills(): void {
    clearTimeout(this.#timeoutKillTimer);
    this.#timeoutKillTimer = undefined;
    const pending = this.#timeoutKills ?? [];
    if (pending.length === 0) return;
    const next = pending.reduce((earliest, each) => Math.min(earliest, each.dueAt), Infinity);
    const wait = Math.min(Math.max(0, next - performance.now()), MAX_TIMER_MS);
    this.#timeoutKillTimer = setTimeout(() => this.#killDueTimeouts(), wait);
  }

  /** Kills what the programs whose timeouts are due left (see `#killLeftoversOf`). */
  #killDueTimeouts(): void {
    this.#timeoutKillTimer = undefined;
    const now = performance.now();
    const pending = this.#timeoutKills ?? [];
    const due = pending.filter((each) => each.dueAt <= now);
    this.#timeoutKills = pending.filter((each) => each.dueAt > now);
    this.#armTimeoutKills();
    if (due.length === 0) return;
    const programs = due.map(({ groups, session, exitedAt }) => ({
      groups,
      session,
      exitedAgoMs: now - exitedAt,
    }));
    this.#track(this.#killLeftoversOf(programs).catch(() => {}));
  }

  /** Forgets the processes that closed first (not started first) until there is room. */
  #evictClosed(): void {
    if (this.#records.size < this.#maxProcesses * 2) return;
    for (const record of this.#closedInOrder) {
      this.#drop(record);
      if (this.#records.size < this.#maxProcesses * 2) return;
    }
  }

  #uncountClosedOutput(record: ProcessRecord): void {
    if (record.budgetHolder === null) return;
    this.#closedOutputBudget?.hold(record.budgetHolder, 0);
    record.budgetHolder = null;
  }

  /** Forgets a closed record before its time: its timers go, and readers waiting on it wake. */
  #drop(record: ProcessRecord): void {
    for (const timer of record.timers) clearTimeout(timer);
    record.timers.clear();
    this.#forget(record);
    record.buffer.wake();
  }

  #get(processId: string, action: string): ProcessRecord {
    const record = this.#records.get(processId);
    if (!record) {
      throw new Deno.errors.NotFound(
        `Cannot ${action} process ${
          JSON.stringify(clipped(processId, MAX_PROCESS_ID_LENGTH))
        }: unknown process (a closed process is kept ${
          Math.round(this.#exitedRetentionMs / 1000)
        } s, and only the latest while a session holds ${this.#maxProcesses * 2}${
          this.#closedOutputBudget === undefined
            ? ""
            : ` or closed processes' output passes ${this.#closedOutputBudget.limit} bytes`
        })`,
      );
    }
    return record;
  }

  #checkArgv(argv: unknown, what: string): string[] {
    if (!Array.isArray(argv) || argv.length === 0) {
      throw new TypeError(`${what}: argv must be a non-empty array of strings`);
    }
    let bytes = 0;
    for (const [index, arg] of argv.entries()) {
      // A lone surrogate would reach the program as U+FFFD: another file name.
      if (typeof arg !== "string" || arg.includes("\0") || !arg.isWellFormed()) {
        throw new TypeError(`${what}: argv must hold well-formed strings without NUL`);
      }
      const length = utf8Length(arg);
      checkArgString(what, `argv[${index}]`, length);
      bytes += length + 1;
    }
    if (argv[0].length === 0) throw new TypeError(`${what}: argv[0] is empty`);
    if (bytes > this.#maxArgvBytes) {
      throw new RangeError(
        `${what}: argv is ${bytes} bytes, over the ${this.#maxArgvBytes} byte limit`,
      );
    }
    return [...argv];
  }

  #newRecord(id: string, argv: string[], tty: boolean): ProcessRecord {
    let resolvePtyReady!: () => void;
    let resolveSpawned!: () => void;
    let resolveDone!: () => void;
    const ptyReady = new Promise<void>((resolve) => resolvePtyReady = resolve);
    const spawned = new Promise<void>((resolve) => resolveSpawned = resolve);
    const done = new Promise<void>((resolve) => resolveDone = resolve);
    return {
      id,
      closingBytes: 0,
      droppedOutputBytes: 0,
      exitedAt: null,
      budgetHolder: null,
      argv,
      buffer: new OutputBuffer({ capBytes: this.#retainedOutputBytes }),
      tty,
      state: "starting",
      child: null,
      pid: 0,
      pty: null,
      ptyReady,
      resolvePtyReady,
      spawned,
      resolveSpawned,
      writer: null,
      stdinClosed: false,
      stdinQueued: 0,
      ttyLineOpen: false,
      wantedSize: null,
      resizing: null,
      pumps: [],
      openStreams: 2,
      exitCode: null,
      signal: null,
      timedOut: false,
      exitSeq: null,
      closedSeq: null,
      failure: null,
      terminating: false,
      killDueAt: null,
      timeoutDueAt: null,
      timers: new Set(),
      done,
      resolveDone,
      holdsSlot: this.#limiter !== undefined,
    };
  }
}

/** The executor's working directory, or null when it may not be read. */
function currentDir(): string | null {
  try {
    return Deno.cwd();
  } catch {
    return null;
  }
}

/** Wraps a spawn failure in an error naming the program. */
function spawnError(program: string, error: unknown): Error {
  const detail = error instanceof Deno.errors.NotFound
    ? "program or working directory not found"
    : error instanceof Error
    ? error.message
    : String(error);
  return new Error(`Cannot start ${JSON.stringify(program)}: ${detail}`, { cause: error });
}

/** Whether a Deno permission value grants anything (`true` or a non-empty list). */
function asks(value: boolean | string[] | undefined): boolean {
  return value === true || (Array.isArray(value) && value.length > 0);
}

function checkProcessId(id: unknown): string {
  if (typeof id !== "string" || id.length === 0 || id.length > MAX_PROCESS_ID_LENGTH) {
    throw new TypeError(
      `Cannot start process: processId must be a string of 1 to ${MAX_PROCESS_ID_LENGTH} characters`,
    );
  }
  // Binary output carries the id as UTF-8, where a lone surrogate would turn
  // into U+FFFD and collide with another process's id.
  if (!id.isWellFormed()) {
    throw new TypeError(
      "Cannot start process: processId must be well-formed Unicode (it has a lone surrogate)",
    );
  }
  return id;
}

/**
 * Refuses a string the system would refuse to exec with (see
 * {@linkcode MAX_ARG_STRING_BYTES}), naming it.
 */
function checkArgString(what: string, name: string, bytes: number): void {
  if (bytes > MAX_ARG_STRING_BYTES) {
    throw new RangeError(
      `${what}: ${name} is ${bytes} bytes, over the ${MAX_ARG_STRING_BYTES} byte limit of ` +
        "one argument (Linux's MAX_ARG_STRLEN)",
    );
  }
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`Cannot create process table: ${name} ${value} is not a positive integer`);
  }
  return value;
}
