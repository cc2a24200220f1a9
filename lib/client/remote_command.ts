/**
 * {@linkcode RemoteCommand}: describes a program to run on an executor, shaped
 * like `Deno.Command`.
 *
 * @module
 */

import { isEnvName } from "../_env.ts";
import { RemoteProcess } from "./remote_process.ts";
import type { ProcessTransport, RemoteProcessOutput } from "./remote_process.ts";
import { checkTerminalSide, MAX_TIMER_MS } from "../_limits.ts";

/** Largest `timeoutMs` the executor takes (its timer's limit, 2^31 - 1 ms, about 24.8 days). */
export const MAX_COMMAND_TIMEOUT_MS: number = MAX_TIMER_MS;

/** Options of {@linkcode RemoteCommand}. */
export interface RemoteCommandOptions {
  /** Arguments after the program. @default {[]} */
  args?: string[];
  /** Working directory on the executor (absolute). Executor default when absent. */
  cwd?: string;
  /** Environment for the program; the executor adds only its small inherited allowlist. */
  env?: Record<string, string>;
  /**
   * `"piped"` gives a writable `stdin`; `"null"` gives the program none. Under
   * `tty` a terminal's input cannot be absent: `"null"` is then a terminal
   * nobody types on, so a program that reads it waits. To end its input,
   * pipe stdin and close it, which types the terminal's end-of-file key
   * (Ctrl-D): end of input for a line-reading program, a key press for a
   * full-screen one.
   * `"inherit"` is not supported: the program runs on another machine.
   * @default {"null"}
   */
  stdin?: "piped" | "null";
  /**
   * `"piped"` gives a readable `stdout`; `"null"` sends it to `/dev/null` on
   * the executor (`pipeStdout: false`; under `tty`, where the terminal's
   * output is one stream, it is discarded here instead). @default {"piped"}
   */
  stdout?: "piped" | "null";
  /** As `stdout`, for stderr (`pipeStderr: false`). @default {"piped"} */
  stderr?: "piped" | "null";
  /** Run under a terminal; stdout then carries everything the terminal shows. @default {false} */
  tty?: boolean;
  /** Initial terminal columns (1..65535); only with `tty`. Executor default (80) when absent. */
  cols?: number;
  /** Initial terminal rows (1..65535); only with `tty`. Executor default (24) when absent. */
  rows?: number;
  /**
   * Kills the process (SIGKILL) when aborted, discarding its unread output:
   * a stdout or stderr that no reader holds is cancelled.
   */
  signal?: AbortSignal;
  /**
   * The executor kills the process after this many ms, an integer from 1 to
   * {@linkcode MAX_COMMAND_TIMEOUT_MS}; its status then has code 124. No
   * limit when absent.
   */
  timeoutMs?: number;
  /**
   * Confinement the executor must apply (`"none"`, `"deno"` or `"os"`).
   * Absent, the executor's minimum applies (`"os"` confines the program
   * then); under a `"deno"` minimum a program that does not ask for `"deno"`
   * is refused, since only a Deno module can run so.
   */
  confinement?: "none" | "deno" | "os";
  /**
   * Start from the executor operator's allowlist of harmless variables (PATH,
   * HOME, LANG, ...) beneath `env`; `false` gives the program exactly `env`.
   * @default {true}
   */
  inheritEnv?: boolean;
}

/**
 * A program to run on an executor, like `Deno.Command` but remote.
 *
 * @example
 * ```ts
 * import { connect, RemoteCommand, serveLocal } from "@outpost/exec";
 * await using server = await serveLocal();
 * await using conn = await connect(server.url);
 * const { code, stdout } = await new RemoteCommand(conn, "sh", {
 *   args: ["-c", "echo hello"],
 * }).output();
 * console.log(code, new TextDecoder().decode(stdout));
 * ```
 */
export class RemoteCommand {
  #transport: ProcessTransport;
  #program: string;
  #options: RemoteCommandOptions;

  /**
   * Describes the command; nothing runs until {@linkcode RemoteCommand.spawn}.
   * The options are checked and copied here, so a later change to the
   * caller's object has no effect.
   *
   * @param connection The connection to the executor.
   * @param program The program name or path on the executor.
   * @param options Arguments, cwd, env, stdio, tty, signal and timeout.
   * @throws {TypeError} When the program is empty or an option has the wrong
   * type or value (`"inherit"` stdio, `cols` or `rows` without `tty`).
   * @throws {RangeError} When `timeoutMs` is not an integer from 1 to
   * {@linkcode MAX_COMMAND_TIMEOUT_MS}, or `cols` or `rows` is not an integer
   * from 1 to 65535.
   */
  constructor(connection: ProcessTransport, program: string, options: RemoteCommandOptions = {}) {
    if (typeof program !== "string" || program === "") {
      throw new TypeError("Cannot create command: the program is empty");
    }
    this.#transport = connection;
    this.#program = program;
    this.#options = checkedOptions(options);
  }

  /**
   * Starts the program.
   *
   * @returns The running process; `status` rejects if the start fails.
   * @throws {DOMException} When `signal` is already aborted.
   */
  spawn(): RemoteProcess {
    const options = this.#options;
    options.signal?.throwIfAborted();
    const processId = crypto.randomUUID();
    const stdin = options.stdin ?? "null";
    const params: Record<string, unknown> = {
      processId,
      argv: [this.#program, ...(options.args ?? [])],
      env: options.env ?? {},
      tty: options.tty ?? false,
      pipeStdin: stdin === "piped",
      inheritEnv: options.inheritEnv ?? true,
    };
    // Output no one reads goes to /dev/null on the executor, as a local
    // child's would (a terminal's output is one stream, and always kept).
    if (!options.tty) {
      if (options.stdout === "null") params.pipeStdout = false;
      if (options.stderr === "null") params.pipeStderr = false;
    }
    if (options.cwd !== undefined) params.cwd = options.cwd;
    if (options.timeoutMs !== undefined) params.timeoutMs = options.timeoutMs;
    if (options.confinement !== undefined) params.confinement = options.confinement;
    if (options.cols !== undefined) params.cols = options.cols;
    if (options.rows !== undefined) params.rows = options.rows;
    const process = new RemoteProcess(
      this.#transport,
      processId,
      { stdin, stdout: options.stdout ?? "piped", stderr: options.stderr ?? "piped" },
      () => this.#transport.request("process/start", params),
    );
    const signal = options.signal;
    if (signal) {
      // Dispose discards the unread output first: a reader that is not
      // reading must not hold back the kill and the exit.
      const onAbort = (): void => void process[Symbol.asyncDispose]();
      signal.addEventListener("abort", onAbort, { once: true });
      process.status.finally(() => signal.removeEventListener("abort", onAbort)).catch(() => {});
    }
    return process;
  }

  /**
   * Runs the program to completion and collects its output. stdin is closed
   * (under `tty` without piped stdin, nothing is typed: see `stdin`).
   *
   * @returns The exit status with all stdout and stderr bytes.
   * @throws {RpcError} When the executor refuses to start the program.
   * @throws {RelayClosedError} When the connection closes first.
   */
  async output(): Promise<RemoteProcessOutput> {
    const process = this.spawn();
    await process.started;
    if ((this.#options.stdin ?? "null") === "piped") await process.stdin.close();
    return await process.output();
  }
}

const STDIO_VALUES: readonly unknown[] = ["piped", "null"];
const CONFINEMENTS: readonly unknown[] = ["none", "deno", "os"];

/** Checks every option against its type and returns a copy the caller cannot change. */
function checkedOptions(options: RemoteCommandOptions): RemoteCommandOptions {
  const fail = (what: string): never => {
    throw new TypeError(`Cannot create command: ${what}`);
  };
  if (typeof options !== "object" || options === null) fail("options must be an object");
  const { args, cwd, env, tty, cols, rows, signal, timeoutMs, confinement, inheritEnv } = options;
  const copy: RemoteCommandOptions = {};
  if (args !== undefined) {
    if (!Array.isArray(args) || !args.every((a) => typeof a === "string")) {
      fail("args must be an array of strings");
    }
    copy.args = [...args];
  }
  if (cwd !== undefined) {
    if (typeof cwd !== "string") fail("cwd must be a string");
    // The executor would refuse it too, but only once the command is run.
    if (!cwd.startsWith("/")) fail(`cwd ${JSON.stringify(cwd)} must be an absolute path`);
    copy.cwd = cwd;
  }
  if (env !== undefined) {
    if (typeof env !== "object" || env === null || Array.isArray(env)) {
      fail("env must be an object of strings");
    }
    const entries = Object.entries(env);
    if (!entries.every(([, value]) => typeof value === "string")) {
      fail("env must be an object of strings");
    }
    // As the system takes them: a name is not empty and holds no `=` or NUL, a value no NUL.
    for (const [name, value] of entries) {
      if (!isEnvName(name)) {
        fail(`env name ${JSON.stringify(name)} is empty or holds "=" or NUL`);
      }
      if (value.includes("\0")) fail(`env value of ${name} holds NUL`);
    }
    copy.env = Object.fromEntries(entries);
  }
  for (const name of ["stdin", "stdout", "stderr"] as const) {
    const value = options[name];
    if (value === undefined) continue;
    if (value === ("inherit" as unknown)) {
      fail(`${name} "inherit" is not supported (the program runs on the executor)`);
    }
    if (!STDIO_VALUES.includes(value)) fail(`${name} must be "piped" or "null", not ${value}`);
    copy[name] = value;
  }
  if (tty !== undefined) {
    if (typeof tty !== "boolean") fail("tty must be a boolean");
    copy.tty = tty;
  }
  for (const [name, value] of [["cols", cols], ["rows", rows]] as const) {
    if (value === undefined) continue;
    if (copy.tty !== true) fail(`${name} needs tty: true`);
    if (typeof value !== "number") fail(`${name} must be a number`);
    checkTerminalSide(name, value);
    copy[name] = value;
  }
  if (signal !== undefined) {
    if (!(signal instanceof AbortSignal)) fail("signal must be an AbortSignal");
    copy.signal = signal;
  }
  if (timeoutMs !== undefined) {
    if (typeof timeoutMs !== "number") fail("timeoutMs must be a number");
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_COMMAND_TIMEOUT_MS) {
      throw new RangeError(
        `Cannot create command: timeoutMs ${timeoutMs} is not an integer from 1 to ${MAX_COMMAND_TIMEOUT_MS}`,
      );
    }
    copy.timeoutMs = timeoutMs;
  }
  if (confinement !== undefined) {
    if (!CONFINEMENTS.includes(confinement)) {
      fail(`confinement must be "none", "deno" or "os", not ${confinement}`);
    }
    copy.confinement = confinement;
  }
  if (inheritEnv !== undefined) {
    if (typeof inheritEnv !== "boolean") fail("inheritEnv must be a boolean");
    copy.inheritEnv = inheritEnv;
  }
  return copy;
}
