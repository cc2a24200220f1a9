/**
 * {@linkcode RemoteProcess}: a handle to a program running on an executor,
 * shaped like `Deno.ChildProcess`. Output arrives as `process/output`
 * notifications; a gap in their sequence numbers is filled from the
 * executor's retained output with `process/read`, so no byte is lost or
 * repeated. A reader that falls behind holds the connection's inbound side
 * (see {@linkcode ProcessTransport.holdInbound}) instead of buffering
 * without bound; once the process is being killed (SIGTERM or SIGKILL),
 * output that does not fit its stream's queue is dropped instead, so the
 * kill's reply and the exit can arrive.
 *
 * @module
 */

import { RelayClosedError } from "../errors.ts";
import { concatBytes } from "../_bytes.ts";
import { checkTerminalSide, MAX_TIMER_MS } from "../_limits.ts";
import type { RequestOptions } from "../rpc/json_rpc_peer.ts";
import { abortable } from "../_abortable.ts";

/** How a remote process ended, like `Deno.CommandStatus`. */
export interface RemoteProcessStatus {
  /** True when the exit code is 0. */
  success: boolean;
  /**
   * The exit code; 128 + n when killed by signal n (Linux numbers, see
   * {@linkcode signalExitCode}). A process the executor ended for its
   * `timeoutMs` reports 124 instead, with the signal that ended it:
   * `"SIGTERM"`, or `"SIGKILL"` when it outlived the executor's kill grace
   * (2 s by default), so that status can come up to `timeoutMs` + 2 s after
   * the start. Under `tty` the status is the terminal helper's (`script`
   * reports its program's end as an exit code): 128 + n and `signal` null
   * for a signal, and 124 with `signal` null for a timeout.
   */
  code: number;
  /** The signal that ended the process, or null (always null under `tty`). */
  signal: Deno.Signal | null;
}

/** Everything a finished process wrote, with its status. */
export interface RemoteProcessOutput extends RemoteProcessStatus {
  /** All stdout bytes (with `tty`, the terminal output). */
  stdout: Uint8Array;
  /** All stderr bytes (empty with `tty`). */
  stderr: Uint8Array;
}

/** What a {@linkcode RemoteProcess} needs from its connection. */
export interface ProcessTransport {
  /** Sends one JSON-RPC request; `options` may abandon it or time it out. */
  request<T = unknown>(method: string, params?: unknown, options?: RequestOptions): Promise<T>;
  /** Routes notifications for one process id to `listener`; returns the unsubscribe function. */
  subscribeProcess(
    processId: string,
    listener: (method: string, params: unknown) => void,
  ): () => void;
  /**
   * Writes to a process's stdin (`process/write`), choosing the encoding
   * (binary when negotiated). Optional: without it, JSON `process/write`
   * requests with base64 are sent through `request`.
   */
  writeStdin?(processId: string, data: Uint8Array, eof?: boolean): Promise<{ status: string }>;
  /** Settles when the connection closes. */
  readonly closed: Promise<void>;
  /** Why the connection closed, once it has (optional). */
  readonly closeReason?: string;
  /**
   * Pauses reading the connection until the returned function is called
   * (backpressure from a slow output reader). Optional.
   */
  holdInbound?(): () => void;
}

/** Options of {@linkcode RemoteProcess.kill}. */
export interface KillOptions extends RequestOptions {
  /**
   * Keep every byte of output even for `SIGTERM` and `SIGKILL` (which
   * otherwise drop what does not fit a stream's queue): for a caller that
   * reads everything. @default {false}
   */
  keepOutput?: boolean;
}

/** Why a `process/write` was not accepted, from its status (kept in the text for matching). */
function writeRefusal(status: string | undefined): string {
  switch (status) {
    case "stdinClosed":
      return "its stdin is closed (the program exited or closed it): stdinClosed";
    case "unknownProcess":
      return "the executor does not know it (it ended and was forgotten): unknownProcess";
    case "starting":
      return "it is still starting: starting";
    default:
      return status ?? "no status";
  }
}

/** The request's own options out of a call's options. */
function requestOptions(options: KillOptions | undefined): RequestOptions | undefined {
  if (options === undefined) return undefined;
  const { keepOutput: _keepOutput, ...rest } = options;
  return rest;
}

/** How each stdio stream of a {@linkcode RemoteProcess} is set up. */
export interface RemoteProcessStdio {
  /** Whether stdin is writable. */
  stdin: "piped" | "null";
  /** Whether stdout is readable or discarded. */
  stdout: "piped" | "null";
  /** Whether stderr is readable or discarded. */
  stderr: "piped" | "null";
}

interface OutputParams {
  seq: number;
  stream?: "stdout" | "stderr" | "pty";
  chunk?: string;
  /** The output bytes of a binary output message (then `chunk` is absent). */
  bytes?: Uint8Array;
  exitCode?: number | null;
  signal?: string | null;
  /** `process/closed`: output the executor dropped as it stopped. */
  droppedOutputBytes?: number;
}

interface ReadResult {
  chunks: { seq: number; stream: "stdout" | "stderr" | "pty"; chunk: string }[];
  nextSeq: number;
  exited: boolean;
  exitCode: number | null;
  closed: boolean;
  failure: string | null;
  signal?: string | null;
}

/** Bytes queued in a piped output stream before the connection's reading is held. */
export const OUTPUT_HIGH_WATER_BYTES = 4 * 1024 * 1024;
/**
 * What each queued output chunk counts for besides its bytes: a chunk's record
 * costs memory of its own, so many tiny chunks reach the high-water mark (and
 * hold the connection) long before their bytes alone would.
 */
export const OUTPUT_CHUNK_OVERHEAD_BYTES = 256;
/** Largest `process/read` answer asked for while catching up. */
const READ_MAX_BYTES = 1024 * 1024;
/**
 * Largest stdin piece sent in one `process/write`. Not cut to one relay
 * segment as output is: writers commonly hand over 64 KiB, and a tiny second
 * piece per write costs more than reassembling two segments (measured with
 * 64 KiB writes through the rendezvous: 119-139 MiB/s against 83-103).
 */
const WRITE_CHUNK_BYTES = 64 * 1024;
/**
 * Most `process/write` requests sent and not yet answered (at most 1 MiB of
 * stdin with full pieces). A stdin write resolves once its pieces are sent
 * within this window; a piece the executor refuses errors the stream, and the
 * error shows on the next write or on close.
 */
export const MAX_WRITES_IN_FLIGHT = 16;

/**
 * Linux signal numbers (x86-64, arm64) of every `Deno.Signal` name; null for
 * the names Linux lacks (Windows' SIGBREAK, BSD's SIGEMT and SIGINFO), which
 * a Linux executor never reports.
 */
const SIGNAL_NUMBERS: Record<Deno.Signal, number | null> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGSTKFLT: 16,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPOLL: 29,
  SIGPWR: 30,
  SIGSYS: 31,
  SIGUNUSED: 31,
  SIGBREAK: null,
  SIGEMT: null,
  SIGINFO: null,
};

/**
 * The conventional exit code for a process killed by `signal`: 128 + its
 * Linux number.
 *
 * @param signal A signal name such as `"SIGINT"`.
 * @returns 128 + the signal number, or 128 + 15 for a name Linux lacks or does not know.
 */
export function signalExitCode(signal: string): number {
  const number = Object.hasOwn(SIGNAL_NUMBERS, signal)
    ? SIGNAL_NUMBERS[signal as Deno.Signal]
    : null;
  return 128 + (number ?? 15);
}

function decodeBase64(text: string): Uint8Array {
  return (Uint8Array as unknown as { fromBase64(s: string): Uint8Array }).fromBase64(text);
}

function encodeBase64(bytes: Uint8Array): string {
  return (bytes as unknown as { toBase64(): string }).toBase64();
}

function toStatus(
  exitCode: number | null | undefined,
  signal: string | null | undefined,
): RemoteProcessStatus {
  const sig = (signal ?? null) as Deno.Signal | null;
  let code = typeof exitCode === "number" && exitCode >= 0 ? exitCode : -1;
  if (sig !== null && code < 0) code = signalExitCode(sig);
  return { success: code === 0, code, signal: sig };
}

/**
 * A program running on an executor, from {@linkcode RemoteCommand.spawn}.
 * Shaped like `Deno.ChildProcess`: `status`, `stdin`, `stdout`, `stderr`,
 * `output()`, `kill()` and `await using`; `resize()` sizes its terminal.
 *
 * @example
 * ```ts
 * import { connect, RemoteCommand, serveLocal } from "@outpost/exec";
 * await using server = await serveLocal();
 * await using conn = await connect(server.url);
 * const child = new RemoteCommand(conn, "sh", { args: ["-c", "echo hi"] }).spawn();
 * const { code, stdout } = await child.output();
 * console.log(code, new TextDecoder().decode(stdout)); // 0 "hi\n"
 * ```
 */
export class RemoteProcess implements AsyncDisposable {
  /**
   * The processes still followed on each transport. One reaction to a
   * transport's `closed` serves them all: a reaction per process would keep
   * every process (and its unread output) alive until the connection closes.
   */
  static #following = new WeakMap<ProcessTransport, Set<RemoteProcess>>();

  /** The process id on the executor (chosen by this client). */
  readonly id: string;
  #transport: ProcessTransport;
  #nextSeq = 1;
  #maxSeenSeq = 0;
  #recovering = false;
  #release: (() => void) | null = null;
  /** Set by kill() with SIGTERM or SIGKILL: output that does not fit a stream's queue is dropped, never held. */
  #dropWhenFull = false;
  #droppedOutputBytes = 0;
  #finished = false;
  #exited = false;
  /** Set by dispose: its cancels are followed by a kill, not by `process/closeOutput`. */
  #disposing = false;
  #unsubscribe: (() => void) | null = null;
  #status: Promise<RemoteProcessStatus>;
  #resolveStatus!: (status: RemoteProcessStatus) => void;
  #rejectStatus!: (error: unknown) => void;
  #stdout: ReadableStream<Uint8Array> | null = null;
  #stderr: ReadableStream<Uint8Array> | null = null;
  #stdin: WritableStream<Uint8Array> | null = null;
  #stdoutController: ReadableStreamDefaultController<Uint8Array> | null = null;
  #stderrController: ReadableStreamDefaultController<Uint8Array> | null = null;
  #started: Promise<void>;
  #startFailed = false;
  #stdinController: WritableStreamDefaultController | null = null;
  #writesInFlight = 0;
  #writeSettled: PromiseWithResolvers<void> | null = null;
  #writeError: unknown = undefined;
  /** Why following failed; each output stream errors with it once its queue is read. */
  #failure: { error: unknown } | null = null;

  /**
   * Starts tracking a process; `start` performs the `process/start` request.
   * Use {@linkcode RemoteCommand.spawn} instead of calling this directly.
   *
   * @param transport The connection.
   * @param id The process id.
   * @param stdio Which stdio streams are piped.
   * @param start Sends `process/start`; called after notifications are routed here.
   */
  constructor(
    transport: ProcessTransport,
    id: string,
    stdio: RemoteProcessStdio,
    start: () => Promise<unknown>,
  ) {
    this.#transport = transport;
    this.id = id;
    this.#status = new Promise<RemoteProcessStatus>((resolve, reject) => {
      this.#resolveStatus = resolve;
      this.#rejectStatus = reject;
    });
    this.#status.catch(() => {});
    const strategy: QueuingStrategy<Uint8Array> = {
      highWaterMark: OUTPUT_HIGH_WATER_BYTES,
      size: (chunk) => chunk.byteLength + OUTPUT_CHUNK_OVERHEAD_BYTES,
    };
    if (stdio.stdout === "piped") {
      this.#stdout = this.#outputStream("stdout", strategy, (controller) => {
        this.#stdoutController = controller;
      });
    }
    if (stdio.stderr === "piped") {
      this.#stderr = this.#outputStream("stderr", strategy, (controller) => {
        this.#stderrController = controller;
      });
    }
    if (stdio.stdin === "piped") {
      this.#stdin = new WritableStream<Uint8Array>({
        start: (controller) => void (this.#stdinController = controller),
        write: (chunk) => this.#write(chunk),
        close: () => this.#closeStdin(),
        abort: () => this.#closeStdin().catch(() => {}),
      });
    }
    this.#unsubscribe = transport.subscribeProcess(id, (method, params) => {
      this.#onNotification(method, params as OutputParams);
    });
    this.#started = start().then(() => {}, (error) => {
      this.#startFailed = true;
      this.#fail(error);
      throw error;
    });
    this.#started.catch(() => {});
    RemoteProcess.#follow(transport, this);
  }

  /** Fails `process` when its transport closes, unless it finished first. */
  static #follow(transport: ProcessTransport, process: RemoteProcess): void {
    let live = RemoteProcess.#following.get(transport);
    if (live === undefined) {
      const followed = new Set<RemoteProcess>();
      live = followed;
      RemoteProcess.#following.set(transport, followed);
      transport.closed.then(() => {
        const reason = transport.closeReason;
        for (const orphan of [...followed]) {
          orphan.#fail(
            new RelayClosedError(
              `Cannot follow process: the connection closed${reason ? `: ${reason}` : ""}`,
            ),
          );
        }
      });
    }
    live.add(process);
  }

  /** Resolves once `process/start` succeeded; rejects with the start error. */
  get started(): Promise<void> {
    return this.#started;
  }

  /**
   * Output bytes dropped: here, because they arrived after
   * {@linkcode RemoteProcess.kill} while their stream's queue was full (nobody
   * was reading); and by the executor, past the 1 MiB a program may print
   * while the executor stops (counted once the process has closed).
   */
  get droppedOutputBytes(): number {
    return this.#droppedOutputBytes;
  }

  /** Resolves with the exit status once the process has exited. */
  get status(): Promise<RemoteProcessStatus> {
    return this.#status;
  }

  /**
   * The process's stdin.
   *
   * @throws {TypeError} When stdin is not `"piped"`.
   */
  get stdin(): WritableStream<Uint8Array> {
    if (!this.#stdin) throw new TypeError("Cannot get stdin: it is not piped");
    return this.#stdin;
  }

  /**
   * The process's stdout (with `tty`, everything the terminal shows).
   * Cancelling it closes the program's stdout pipe on the executor, as for a
   * local child: its next write there fails (SIGPIPE); under `tty` the
   * terminal is hung up (SIGHUP). Output still arriving is discarded. Read
   * or cancel it: left unread, once its queue holds 4 MiB it holds the
   * connection's output for every process (nothing is lost meanwhile).
   *
   * @throws {TypeError} When stdout is not `"piped"`.
   */
  get stdout(): ReadableStream<Uint8Array> {
    if (!this.#stdout) throw new TypeError("Cannot get stdout: it is not piped");
    return this.#stdout;
  }

  /**
   * The process's stderr. Cancelling it closes the program's stderr pipe on
   * the executor (as stdout's cancel does; under `tty` stderr carries nothing).
   * Read or cancel it, as stdout.
   *
   * @throws {TypeError} When stderr is not `"piped"`.
   */
  get stderr(): ReadableStream<Uint8Array> {
    if (!this.#stderr) throw new TypeError("Cannot get stderr: it is not piped");
    return this.#stderr;
  }

  /**
   * Collects all output and waits for the exit status.
   *
   * @returns The status with the complete stdout and stderr bytes.
   * @throws {TypeError} When stdout or stderr is locked (by a reader); nothing is read then.
   * @throws {RelayClosedError} When the connection closes first.
   */
  async output(): Promise<RemoteProcessOutput> {
    // Both checked before either is read: a failed call must not lock one.
    if (this.#stdout?.locked) throw new TypeError("Cannot collect output: 'stdout' is locked");
    if (this.#stderr?.locked) throw new TypeError("Cannot collect output: 'stderr' is locked");
    const collect = async (stream: ReadableStream<Uint8Array> | null): Promise<Uint8Array> => {
      if (!stream) return new Uint8Array(0);
      // Left locked, as Deno's: the output is spent, and a second call says so.
      const reader = stream.getReader();
      const chunks: Uint8Array[] = [];
      for (let next = await reader.read(); !next.done; next = await reader.read()) {
        chunks.push(next.value);
      }
      return concatBytes(chunks);
    };
    const [stdout, stderr, status] = await Promise.all([
      collect(this.#stdout),
      collect(this.#stderr),
      this.#status,
    ]);
    return { ...status, stdout, stderr };
  }

  /**
   * Sends a signal to the process (its process group, on the executor).
   *
   * With `SIGTERM` or `SIGKILL`, the signals that end a program, this is
   * like `Deno.ChildProcess.kill` with an unread pipe: it does not wait for a
   * reader. From this call on, output that does not fit its stream's queue
   * (4 MiB) is dropped and counted in {@linkcode RemoteProcess.droppedOutputBytes}
   * instead of holding the connection's reading, which would also hold back
   * this request's reply and the exit. Output already queued stays readable.
   * Other signals (`SIGINT`, which a program may trap and live on) keep every
   * byte, so their reply can wait for a reader that has fallen 4 MiB behind.
   * A caller that reads every byte anyway (a CLI forwarding a signal to its
   * program) passes `keepOutput` to keep that behaviour for these two as well;
   * it cannot undo the dropping an earlier plain `SIGTERM`/`SIGKILL` began.
   * Unlike Deno, a process that has already exited is not an error: nothing
   * is sent. A program that ended on its own but whose exit is still queued
   * behind the unread output has not exited as far as this call can tell, so
   * its output past the queue is dropped all the same (the exit's answer is
   * behind it); `droppedOutputBytes` counts it, and `keepOutput` keeps it.
   *
   * @param signal The signal. @default {"SIGTERM"}
   * @param options A signal that abandons waiting for the answer, a timeout,
   *   and `keepOutput`.
   * @returns When the executor has delivered it.
   * @throws {RpcError} When the executor refuses; among Deno's signals it
   *   takes SIGINT, SIGTERM, SIGKILL, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
   *   SIGCONT, SIGSTOP, SIGTSTP and SIGWINCH (-32602 for the others).
   * @throws {RelayClosedError} When the connection closes first.
   * @throws {DOMException} `TimeoutError` when `options.timeoutMs` passes;
   *   the signal's reason (`AbortError`) when `options.signal` aborts.
   */
  async kill(signal: Deno.Signal = "SIGTERM", options?: KillOptions): Promise<void> {
    options?.signal?.throwIfAborted();
    const ends = signal === "SIGTERM" || signal === "SIGKILL";
    if (!this.#exited && ends && options?.keepOutput !== true) {
      this.#dropWhenFull = true;
      this.#releaseHold();
    }
    const left = await this.#startedWithin(requestOptions(options));
    if (this.#exited) return;
    try {
      await this.#transport.request(
        "process/signal",
        { processId: this.id, signal },
        left,
      );
    } catch (error) {
      // The program often ends of this very signal before the answer comes
      // back, and a connection closed meanwhile fails the request: an exit
      // seen by then is what was asked for.
      if (this.#exited) return;
      throw error;
    }
  }

  /**
   * Resizes the process's terminal (`process/resize`); the program gets
   * `SIGWINCH`. Does nothing once the process has exited.
   *
   * @param cols Columns, 1..65535.
   * @param rows Rows, 1..65535.
   * @param options A signal that abandons waiting for the answer, and a timeout.
   * @returns When the executor has applied the size (at once, applying
   *   nothing, once the process has exited).
   * @throws {RangeError} When a size is out of range.
   * @throws {RpcError} When the executor refuses (no terminal, or no resize helper).
   * @throws {RelayClosedError} When the connection closes first.
   * @throws {DOMException} `TimeoutError` or `AbortError`, as for `kill`.
   */
  async resize(cols: number, rows: number, options?: RequestOptions): Promise<void> {
    checkTerminalSide("cols", cols);
    checkTerminalSide("rows", rows);
    const left = await this.#startedWithin(options);
    if (this.#exited) return;
    await this.#transport.request("process/resize", { processId: this.id, cols, rows }, left);
  }

  /**
   * Discards unread output (cancels each stream no reader holds), kills the
   * process (SIGKILL) unless it has exited, then waits for its status.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#disposing = true;
    for (const stream of [this.#stdout, this.#stderr]) {
      // Cancelling runs the stream's cancel at once, which releases a hold.
      if (stream && !stream.locked) stream.cancel().catch(() => {});
    }
    if (!this.#exited && !this.#startFailed) await this.kill("SIGKILL").catch(() => {});
    await this.#status.catch(() => {});
    await Promise.allSettled([this.#stdout?.cancel(), this.#stderr?.cancel()]);
  }

  /**
   * Sends `chunk` as `process/write` pieces without waiting for their replies
   * (up to {@linkcode MAX_WRITES_IN_FLIGHT} unanswered). The executor applies
   * a session's writes to the child's stdin in the order they arrive, and the
   * channel keeps the order they are sent in.
   */
  async #write(chunk: Uint8Array): Promise<void> {
    await this.#started;
    this.#throwIfStdinFailed();
    for (let offset = 0; offset < chunk.byteLength;) {
      while (this.#writesInFlight >= MAX_WRITES_IN_FLIGHT) await this.#nextWriteSettled();
      this.#throwIfStdinFailed();
      const piece = chunk.subarray(offset, offset + WRITE_CHUNK_BYTES);
      offset += piece.byteLength;
      this.#writesInFlight++;
      // Encoded now: the caller may reuse its buffer once this write resolves.
      this.#sendStdin(piece, false).then((result) => {
        if (result?.status !== "accepted") {
          this.#failStdin(
            new TypeError(`Cannot write to process ${this.id}: ${writeRefusal(result?.status)}`),
          );
        }
      }, (error) => this.#failStdin(error)).finally(() => {
        this.#writesInFlight--;
        const settled = this.#writeSettled;
        this.#writeSettled = null;
        settled?.resolve();
      });
    }
  }

  /** Waits for every piece in flight, then closes stdin with an `eof` write. */
  async #closeStdin(): Promise<void> {
    await this.#started;
    while (this.#writesInFlight > 0) await this.#nextWriteSettled();
    this.#throwIfStdinFailed();
    const result = await this.#sendStdin(new Uint8Array(0), true);
    // Already closed (the program exited, say) is what close asked for.
    if (result?.status !== "accepted" && result?.status !== "stdinClosed") {
      throw new TypeError(`Cannot write to process ${this.id}: ${writeRefusal(result?.status)}`);
    }
  }

  /** One `process/write`; the bytes are encoded (copied) before it returns. */
  #sendStdin(data: Uint8Array, eof: boolean): Promise<{ status: string }> {
    if (this.#transport.writeStdin) return this.#transport.writeStdin(this.id, data, eof);
    const params: Record<string, unknown> = { processId: this.id, chunk: encodeBase64(data) };
    if (eof) params.eof = true;
    return this.#transport.request<{ status: string }>("process/write", params);
  }

  #nextWriteSettled(): Promise<void> {
    this.#writeSettled ??= Promise.withResolvers<void>();
    return this.#writeSettled.promise;
  }

  #throwIfStdinFailed(): void {
    if (this.#writeError !== undefined) throw this.#writeError;
  }

  #failStdin(error: unknown): void {
    if (this.#writeError !== undefined) return;
    this.#writeError = error;
    this.#stdinController?.error(error);
  }

  #onNotification(method: string, params: OutputParams): void {
    if (this.#finished || typeof params?.seq !== "number") return;
    const seq = params.seq;
    if (seq < this.#nextSeq) return;
    if (seq > this.#maxSeenSeq) this.#maxSeenSeq = seq;
    if (this.#recovering || seq > this.#nextSeq) {
      this.#recover();
      return;
    }
    this.#nextSeq = seq + 1;
    if (method === "process/output") {
      this.#deliver(params.stream ?? "stdout", params.bytes ?? decodeBase64(params.chunk ?? ""));
    } else if (method === "process/exited") {
      this.#onExit(params.exitCode, params.signal);
    } else if (method === "process/closed") {
      const dropped = params.droppedOutputBytes;
      if (Number.isSafeInteger(dropped) && dropped! > 0) this.#droppedOutputBytes += dropped!;
      this.#finish();
    }
  }

  /**
   * A piped output stream: `setController` keeps its controller (null once
   * cancelled), and a read or a cancel may resume held inbound output. A
   * cancel also closes the program's pipe on the executor (see
   * {@linkcode RemoteProcess.stdout}).
   */
  #outputStream(
    pipe: "stdout" | "stderr",
    strategy: QueuingStrategy<Uint8Array>,
    setController: (controller: ReadableStreamDefaultController<Uint8Array> | null) => void,
  ): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      start: (controller) => setController(controller),
      pull: (controller) => {
        if (this.#failure !== null) this.#errorWhenRead(controller);
        this.#maybeResume();
      },
      cancel: () => {
        setController(null);
        this.#maybeResume();
        this.#closeOutput(pipe);
      },
    }, strategy);
  }

  /**
   * Asks the executor to close a pipe whose reader was cancelled, so the
   * program hears that no one reads it, as a local child would, instead of
   * running on with its output sent only to be dropped. Not awaited, and a
   * failure is ignored (an executor without the method, a process that
   * ended meanwhile): the output is discarded here either way.
   */
  #closeOutput(pipe: "stdout" | "stderr"): void {
    if (this.#finished || this.#disposing) return;
    this.#started
      .then(() =>
        this.#transport.request("process/closeOutput", { processId: this.id, stream: pipe })
      )
      .catch(() => {});
  }

  #deliver(stream: "stdout" | "stderr" | "pty", bytes: Uint8Array): void {
    const controller = stream === "stderr" ? this.#stderrController : this.#stdoutController;
    if (!controller || bytes.byteLength === 0) return;
    if (this.#dropWhenFull && (controller.desiredSize ?? 1) <= 0) {
      this.#droppedOutputBytes += bytes.byteLength;
      return;
    }
    controller.enqueue(bytes);
    if ((controller.desiredSize ?? 1) <= 0 && this.#release === null && !this.#dropWhenFull) {
      this.#release = this.#transport.holdInbound?.() ?? null;
    }
  }

  #maybeResume(): void {
    if (this.#release === null) return;
    const blocked = [this.#stdoutController, this.#stderrController].some(
      (c) => c !== null && (c.desiredSize ?? 1) <= 0,
    );
    if (blocked) return;
    this.#releaseHold();
  }

  #releaseHold(): void {
    const release = this.#release;
    this.#release = null;
    release?.();
  }

  #onExit(exitCode: number | null | undefined, signal: string | null | undefined): void {
    if (this.#exited) return;
    this.#exited = true;
    this.#resolveStatus(toStatus(exitCode, signal));
  }

  /** Catches up from the executor's retained output until no known event is missing. */
  #recover(): void {
    if (this.#recovering || this.#finished) return;
    this.#recovering = true;
    (async () => {
      try {
        while (!this.#finished) {
          const result = await this.#transport.request<ReadResult>("process/read", {
            processId: this.id,
            afterSeq: this.#nextSeq - 1,
            maxBytes: READ_MAX_BYTES,
          });
          if (this.#finished) return;
          if (result.failure) throw new Error(`Cannot read process output: ${result.failure}`);
          for (const chunk of result.chunks) {
            if (chunk.seq < this.#nextSeq) continue;
            if (chunk.seq > this.#nextSeq) {
              throw new Error(
                `Cannot read process output: seq ${this.#nextSeq}..${
                  chunk.seq - 1
                } is no longer retained by the executor`,
              );
            }
            this.#deliver(chunk.stream, decodeBase64(chunk.chunk));
            this.#nextSeq = chunk.seq + 1;
          }
          const before = this.#nextSeq;
          this.#nextSeq = Math.max(this.#nextSeq, result.nextSeq);
          if (result.chunks.length === 0) {
            if (result.exited) this.#onExit(result.exitCode, result.signal);
            if (result.closed) {
              this.#finish();
              return;
            }
            if (this.#nextSeq > this.#maxSeenSeq || this.#nextSeq === before) return;
          }
        }
      } catch (error) {
        this.#fail(error);
      } finally {
        this.#recovering = false;
      }
    })();
  }

  /**
   * Waits for the start's answer within a call's signal and timeout (a call
   * made before the start was answered must not wait longer than asked).
   *
   * @returns The options left for the call's own request: the rest of the timeout.
   */
  async #startedWithin(options?: RequestOptions): Promise<RequestOptions | undefined> {
    if (options?.signal === undefined && options?.timeoutMs === undefined) {
      await this.#started;
      return options;
    }
    const timeoutMs = options.timeoutMs;
    if (timeoutMs !== undefined && (!(timeoutMs >= 0) || timeoutMs > MAX_TIMER_MS)) {
      // As the request itself would refuse it.
      throw new RangeError(
        `Cannot send request: timeoutMs must be a number from 0 to ${MAX_TIMER_MS}`,
      );
    }
    const begun = performance.now();
    const gaveUp = new AbortController();
    const onAbort = (): void => gaveUp.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.signal?.aborted) onAbort();
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(
      () => gaveUp.abort(new DOMException("Signal timed out.", "TimeoutError")),
      options.timeoutMs,
    );
    try {
      await abortable(this.#started, gaveUp.signal);
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
    }
    if (timeoutMs === undefined) return options;
    return {
      ...options,
      timeoutMs: Math.max(0, Math.ceil(timeoutMs - (performance.now() - begun))),
    };
  }

  /** Marks the process finished and stops following it; false when it already was. */
  #stopFollowing(): boolean {
    if (this.#finished) return false;
    this.#finished = true;
    this.#releaseHold();
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    RemoteProcess.#following.get(this.#transport)?.delete(this);
    return true;
  }

  #finish(): void {
    if (!this.#stopFollowing()) return;
    for (const controller of [this.#stdoutController, this.#stderrController]) {
      try {
        controller?.close();
      } catch {
        // Cancelled by the reader.
      }
    }
    if (!this.#exited) {
      this.#rejectStatus(new Error("Cannot get status: the process closed without an exit status"));
    }
  }

  #fail(error: unknown): void {
    if (!this.#stopFollowing()) return;
    this.#failure = { error };
    // An idle writer hears it too: its next write must not look delivered.
    this.#failStdin(error);
    for (const controller of [this.#stdoutController, this.#stderrController]) {
      if (controller !== null) this.#errorWhenRead(controller);
    }
    if (!this.#exited) this.#rejectStatus(error);
  }

  /**
   * Errors an output stream with the failure once nothing received is left
   * in its queue: output that arrived before the connection closed stays
   * readable (as a `Deno.ChildProcess`'s does), and the error then says the
   * rest, if any, is lost. Called again from `pull` as the queue is read.
   */
  #errorWhenRead(controller: ReadableStreamDefaultController<Uint8Array>): void {
    if (controller.desiredSize !== OUTPUT_HIGH_WATER_BYTES) return; // chunks left, or ended
    try {
      controller.error(this.#failure!.error);
    } catch {
      // Already closed.
    }
  }
}
