/**
 * The executor: one per executor process. It serves JSON-RPC sessions over
 * any message channel (a local WebSocket connection, a virtual stream of the
 * mux) and owns the sessions, their processes and the sandbox policy.
 *
 * @module
 */

import { isEnvName } from "../_env.ts";
import { checkTimerMs } from "../_limits.ts";
import type { MessageChannel } from "../rpc/message_channel.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, MIN_MAX_MESSAGE_BYTES } from "../rpc/json_rpc_peer.ts";
import { type Capabilities, type Confinement, detectCapabilities } from "./confinement.ts";
import {
  detectShell,
  type EnvironmentInfo,
  environmentInfo,
  osRelease,
  type ShellInfo,
} from "./environment_info.ts";
import { FsOps } from "./fs_ops.ts";
import { ProcessLimiter, ProcessTable, QueuedStdinLimit } from "./process_table.ts";
import { ByteBudget } from "../_byte_budget.ts";
import { SandboxPolicy } from "./sandbox_policy.ts";
import { CallSlots } from "./_call_slots.ts";
import { DEFAULT_MAX_WAIT_MS, hasSessionChannel, isQuietChannel, serveSession } from "./session.ts";
import {
  DEFAULT_MAX_SESSIONS,
  DEFAULT_SESSION_TTL_MS,
  SessionRegistry,
} from "./session_registry.ts";
import { booleanOption, stringListOption } from "../_options.ts";

/**
 * The most fs calls in flight on one executor, all connections together.
 * Deno 2.9 runs at most 32 blocking file operations at once (measured: with
 * 32 opens waiting out a file lease, every `Deno.stat` of the process
 * waited too), so calls that never return may take half of them, and the
 * executor's own file work (starting programs, checking paths) keeps the rest.
 */
export const MAX_FS_CALLS_IN_FLIGHT = 16;

/** The default number of live processes per executor, over all sessions. */
export const DEFAULT_MAX_EXECUTOR_PROCESSES: number = 256;
/**
 * Default {@linkcode ExecutorOptions.maxQueuedStdinBytes}: 512 MiB, twice what
 * outpost's client can leave waiting for every live process at the default
 * limit (16 binary writes of 64 KiB each, counted with their headers).
 */
export const DEFAULT_MAX_QUEUED_STDIN_BYTES: number = 512 * 1024 * 1024;
/** Default {@linkcode ExecutorOptions.maxClosedOutputBytes}: 256 MiB. */
export const DEFAULT_MAX_CLOSED_OUTPUT_BYTES: number = 256 * 1024 * 1024;

/** Options of {@linkcode Executor}. */
export interface ExecutorOptions {
  /** How long a detached session keeps its processes, in ms. @default {30000} */
  sessionTtlMs?: number;
  /** Sessions held at once (attached or detached). @default {256} */
  maxSessions?: number;
  /** Live processes per session. @default {64} */
  maxProcessesPerSession?: number;
  /** Live processes per executor. @default {256} */
  maxProcesses?: number;
  /** Unread output retained per process before the child is paused, in bytes. @default {1048576} */
  retainedOutputBytes?: number;
  /**
   * Directories writes must stay inside (fs methods), also bound writable for
   * `os` confinement. Unset: the executor's write permission alone decides fs
   * writes, and `os`-confined processes get no writable directory.
   */
  writeRoots?: string[];
  /** The weakest confinement a request may use. @default {"none"} */
  minConfinement?: Confinement;
  /** Environment variable names children inherit from the executor when a request asks. @default {["PATH","HOME","LANG","LC_ALL","TERM","USER","SHELL","TMPDIR"] (DEFAULT_INHERITED_ENV)} */
  inheritEnv?: string[];
  /** The default working directory of processes. @default {Deno.cwd()} */
  cwd?: string;
  /** The largest JSON-RPC message, in UTF-8 bytes. @default {16777216} */
  maxMessageBytes?: number;
  /** The cap on `waitMs` of `process/read`. @default {30000} */
  maxWaitMs?: number;
  /** Grace between TERM and KILL when terminating. @default {2000} */
  killGraceMs?: number;
  /** How long a closed process stays readable. @default {30000} */
  exitedRetentionMs?: number;
  /**
   * Output that closed processes keep for reading after their exit, all
   * sessions together, in bytes: past it the processes that closed first
   * are forgotten (each session's own bounds still apply). @default {268435456}
   */
  maxClosedOutputBytes?: number;
  /**
   * Stdin waiting for children to read, all sessions together, in bytes: a
   * `process/write` past it is refused (each process's own 16 MiB still
   * applies; outpost's client leaves at most 16 writes of 64 KiB waiting per
   * process, each counted with its message's header).
   * @default {536870912}
   */
  maxQueuedStdinBytes?: number;
  /** Give `os`-confined processes the network. @default {false} */
  allowNetwork?: boolean;
  /** The largest file `fs/readFile` returns. @default {about 3/4 of maxMessageBytes} */
  maxFileBytes?: number;
}

const CONSERVATIVE_CAPABILITIES: Capabilities = {
  confinements: ["none"],
  treeKill: false,
  tty: false,
  resize: false,
};

function defaultCwd(): string {
  try {
    return Deno.cwd();
  } catch {
    return "/";
  }
}

/**
 * Refuses options that would make every later request fail obscurely: a
 * message limit no session can work under, a file limit below one byte, an
 * inherited variable name the system cannot hold. (Whether `cwd` and the
 * write roots exist is checked by the CLI; they may appear later.)
 */
function checkOptions(options: ExecutorOptions): void {
  const integerFrom = (name: string, value: number | undefined, min: number): void => {
    if (value !== undefined && (!Number.isSafeInteger(value) || value < min)) {
      throw new RangeError(
        `Cannot create executor: ${name} ${value} is not an integer of at least ${min}`,
      );
    }
  };
  integerFrom("maxMessageBytes", options.maxMessageBytes, MIN_MAX_MESSAGE_BYTES);
  integerFrom("maxFileBytes", options.maxFileBytes, 1);
  integerFrom("maxClosedOutputBytes", options.maxClosedOutputBytes, 1);
  integerFrom("maxQueuedStdinBytes", options.maxQueuedStdinBytes, 1);
  // These become timers: past MAX_TIMER_MS one fires at once (a detached
  // session would be killed at once, a long poll would return at once).
  for (
    const [name, value, min] of [
      ["sessionTtlMs", options.sessionTtlMs, 0],
      ["maxWaitMs", options.maxWaitMs, 1],
    ] as const
  ) {
    if (value !== undefined) {
      integerFrom(name, value, min);
      checkTimerMs("Cannot create executor", name, value, min);
    }
  }
  stringListOption("executor", "writeRoots", options.writeRoots);
  booleanOption("executor", "allowNetwork", options.allowNetwork);
  for (const name of stringListOption("executor", "inheritEnv", options.inheritEnv) ?? []) {
    if (typeof name !== "string" || !isEnvName(name)) {
      throw new TypeError(
        `Cannot create executor: inheritEnv names a variable ${JSON.stringify(name)} the system ` +
          'cannot hold (empty, or with "=" or NUL)',
      );
    }
  }
}

/**
 * Serves JSON-RPC sessions: processes, files and environment info, inside
 * the sandbox of the executor's own Deno permissions.
 *
 * @example Serve one session over a channel
 * ```ts
 * import { connect, Executor, RemoteCommand, serveLocal } from "@outpost/exec";
 * await using executor = new Executor({ sessionTtlMs: 30_000 });
 * // serveLocal (or a stream mux, runExecutor) calls executor.serve(channel)
 * // for each connection; it returns when the channel closes.
 * await using server = await serveLocal({ executor });
 * await using conn = await connect(server.url);
 * const { code } = await new RemoteCommand(conn, "true").output();
 * console.log(code); // 0
 * ```
 */
export class Executor implements AsyncDisposable {
  #registry: SessionRegistry;
  #maxSessions: number;
  #fs: FsOps;
  /** fs calls in flight over all connections (see {@linkcode MAX_FS_CALLS_IN_FLIGHT}). */
  #fsSlots = new CallSlots(MAX_FS_CALLS_IN_FLIGHT);
  #cwd: string;
  #minConfinement: Confinement;
  #maxMessageBytes: number;
  #maxWaitMs: number;
  #capabilities: Capabilities = CONSERVATIVE_CAPABILITIES;
  #shell: ShellInfo = { name: "sh", path: "/bin/sh" };
  #release: string | null = null;
  #confinedFs = false;
  #probe: Promise<void>;
  #serving = new Set<Promise<void>>();
  #channels = new Set<MessageChannel>();
  #closing: Promise<void> | null = null;

  /** The largest JSON-RPC message a session accepts or sends, in bytes. */
  get maxMessageBytes(): number {
    return this.#maxMessageBytes;
  }

  /**
   * Creates the executor and starts probing what its sandbox can offer.
   *
   * @param options Limits, sandbox settings and the default working directory.
   * @throws {RangeError} When a limit is out of range.
   * @throws {TypeError} When a path option is not absolute.
   */
  constructor(options: ExecutorOptions = {}) {
    checkOptions(options);
    this.#cwd = options.cwd ?? defaultCwd();
    this.#minConfinement = options.minConfinement ?? "none";
    this.#maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.#maxWaitMs = options.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
    // A reply's envelope takes up to 1 KiB (half of the smallest limits, so
    // that they still carry a file or a listing).
    const replyRoom = this.#maxMessageBytes - Math.min(1024, this.#maxMessageBytes / 2);
    const policy = new SandboxPolicy(options.writeRoots ? { writeRoots: options.writeRoots } : {});
    this.#fs = new FsOps(policy, {
      // Base64 grows 4/3.
      maxFileBytes: options.maxFileBytes ?? Math.floor(replyRoom / 4) * 3,
      maxListingBytes: replyRoom,
      minConfinement: this.#minConfinement,
    });
    const limiter = new ProcessLimiter(options.maxProcesses ?? DEFAULT_MAX_EXECUTOR_PROCESSES);
    const closedOutputBudget = new ByteBudget(
      options.maxClosedOutputBytes ?? DEFAULT_MAX_CLOSED_OUTPUT_BYTES,
    );
    const stdinLimit = new QueuedStdinLimit(
      options.maxQueuedStdinBytes ?? DEFAULT_MAX_QUEUED_STDIN_BYTES,
    );
    const tableOptions = {
      limiter,
      closedOutputBudget,
      stdinLimit,
      cwd: this.#cwd,
      minConfinement: this.#minConfinement,
      maxWaitMs: this.#maxWaitMs,
      maxMessageBytes: this.#maxMessageBytes,
      ...(options.maxProcessesPerSession !== undefined
        ? { maxProcesses: options.maxProcessesPerSession }
        : {}),
      ...(options.retainedOutputBytes !== undefined
        ? { retainedOutputBytes: options.retainedOutputBytes }
        : {}),
      ...(options.writeRoots !== undefined ? { writeRoots: options.writeRoots } : {}),
      ...(options.inheritEnv !== undefined ? { inheritEnv: options.inheritEnv } : {}),
      ...(options.killGraceMs !== undefined ? { killGraceMs: options.killGraceMs } : {}),
      ...(options.exitedRetentionMs !== undefined
        ? { exitedRetentionMs: options.exitedRetentionMs }
        : {}),
      ...(options.allowNetwork !== undefined ? { allowNetwork: options.allowNetwork } : {}),
    };
    // Fail fast on bad table options rather than at the first initialize.
    new ProcessTable(tableOptions).close();
    this.#maxSessions = options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    this.#registry = new SessionRegistry({
      createTable: () => new ProcessTable(tableOptions),
      ttlMs: options.sessionTtlMs ?? DEFAULT_SESSION_TTL_MS,
      maxSessions: this.#maxSessions,
    });
    this.#probe = Promise.all([
      detectCapabilities(),
      detectShell(),
      osRelease(),
      this.#fs.confinedWrites(),
    ]).then(
      ([capabilities, shell, release, confinedFs]) => {
        this.#capabilities = capabilities;
        this.#shell = shell;
        this.#release = release;
        this.#confinedFs = confinedFs && capabilities.confinements.includes("os");
      },
      () => {},
    );
  }

  /** The most sessions this executor holds at once (`maxSessions`). */
  get maxSessions(): number {
    return this.#maxSessions;
  }

  /**
   * Whether the connection served on `channel` could be dropped without
   * cutting anything short: no request being answered, and no process of its
   * session that has not closed. A stream mux at its stream limit asks this
   * before it gives a new stream the place of an idle one.
   *
   * @param channel A channel passed to {@linkcode Executor.serve}.
   * @returns Whether it is quiet (true for a channel not served here).
   */
  isQuiet(channel: MessageChannel): boolean {
    return isQuietChannel(channel);
  }

  /**
   * Whether the connection served on `channel` has initialized: its
   * `initialize` was answered with a session (which counts against
   * `maxSessions`). `serveLocal` closes connections that take too long.
   *
   * @param channel A channel passed to {@linkcode Executor.serve}.
   * @returns Whether it has a session (false for a channel not served here).
   */
  hasSession(channel: MessageChannel): boolean {
    return hasSessionChannel(channel);
  }

  /**
   * Serves one JSON-RPC session over `channel` until the channel closes; the
   * session then detaches and keeps its processes for `sessionTtlMs`.
   *
   * @param channel The connection (the executor closes it when it closes).
   * @returns Once the connection has ended.
   */
  async serve(channel: MessageChannel): Promise<void> {
    if (this.#closing) {
      await channel.close("executor closed").catch(() => {});
      return;
    }
    this.#channels.add(channel);
    const served = serveSession(channel, {
      registry: this.#registry,
      fs: this.#fs,
      fsSlots: this.#fsSlots,
      environmentInfo: () => this.#info(),
      maxMessageBytes: this.#maxMessageBytes,
      maxWaitMs: this.#maxWaitMs,
    });
    this.#serving.add(served);
    try {
      await served;
    } finally {
      this.#serving.delete(served);
      this.#channels.delete(channel);
    }
  }

  /**
   * The `environment/info` answer. Until the sandbox probe has finished it
   * reports only what is certain (confinement `none`, no tree kill, no tty).
   *
   * @returns The environment info.
   */
  info(): EnvironmentInfo {
    return environmentInfo(
      {
        cwd: this.#cwd,
        capabilities: this.#capabilities,
        minConfinement: this.#minConfinement,
        confinedFs: this.#confinedFs,
      },
      this.#shell,
      this.#release,
    );
  }

  /**
   * Resolves once the sandbox probe has finished (then {@linkcode Executor.info}
   * reports the real capabilities).
   *
   * @returns When ready.
   */
  ready(): Promise<void> {
    return this.#probe;
  }

  async #info(): Promise<EnvironmentInfo> {
    await this.#probe;
    return this.info();
  }

  /**
   * Ends every session's programs (SIGTERM, then SIGKILL after the grace)
   * while the sessions stay attached and their connections up, so what a
   * program prints as it stops (up to 1 MiB each) and its exit reach the
   * harness; no program starts after this. A server stopping calls this,
   * then closes its connections, then {@linkcode Executor.close}. Idempotent.
   *
   * @returns Once every program has ended.
   */
  endPrograms(): Promise<void> {
    return this.#registry.close();
  }

  /**
   * Ends every program as {@linkcode Executor.endPrograms} does, then closes
   * every connection. Idempotent.
   *
   * @returns Once everything is gone.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      // Handlers waiting on a process end with it.
      await this.endPrograms();
      await Promise.allSettled([...this.#channels].map((c) => c.close("executor closed")));
      // Nobody waits for their answers now: no grace for confined fs helpers.
      this.#fs.stopHelpers();
      while (this.#serving.size > 0) await Promise.allSettled([...this.#serving]);
      await this.#probe;
    })();
    return this.#closing;
  }

  /** Same as {@linkcode Executor.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
