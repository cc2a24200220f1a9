/**
 * {@linkcode RemoteCommand}: describes a program to run on an executor, shaped
 * like `Deno.Command`.
 *
 * @module
 */

import { checkTerminalSize, RemoteProcess } from "./remote_process.ts";
import type { ProcessTransport, RemoteProcessOutput } from "./remote_process.ts";

/** Options of {@linkcode RemoteCommand}. */
export interface RemoteCommandOptions {
  /** Arguments after the program. @default {[]} */
  args?: string[];
  /** Working directory on the executor (absolute). Executor default when absent. */
  cwd?: string;
  /** Environment for the program; the executor adds only its small inherited allowlist. */
  env?: Record<string, string>;
  /** `"piped"` gives a writable `stdin`; `"null"` closes it. @default {"null"} */
  stdin?: "piped" | "null";
  /** `"piped"` gives a readable `stdout`; `"null"` discards it. @default {"piped"} */
  stdout?: "piped" | "null";
  /** `"piped"` gives a readable `stderr`; `"null"` discards it. @default {"piped"} */
  stderr?: "piped" | "null";
  /** Run under a terminal; stdout then carries everything the terminal shows. @default {false} */
  tty?: boolean;
  /** Initial terminal columns (1..65535), with `tty`. Executor default (80) when absent. */
  cols?: number;
  /** Initial terminal rows (1..65535), with `tty`. Executor default (24) when absent. */
  rows?: number;
  /** Kills the process (SIGKILL) when aborted. */
  signal?: AbortSignal;
  /** The executor kills the process after this long. No limit when absent. */
  timeoutMs?: number;
  /** Confinement the executor must apply (`"none"`, `"deno"` or `"os"`). Executor default when absent. */
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
 * ```ts ignore
 * import { connect, RemoteCommand } from "@outpost/exec";
 * await using conn = await connect("ws://127.0.0.1:8765");
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
   *
   * @param connection The connection to the executor.
   * @param program The program name or path on the executor.
   * @param options Arguments, cwd, env, stdio, tty, signal and timeout.
   * @throws {TypeError} When the program is empty or an option has the wrong type.
   * @throws {RangeError} When `timeoutMs` is not a positive number, or `cols` or
   * `rows` is not an integer from 1 to 65535.
   */
  constructor(connection: ProcessTransport, program: string, options: RemoteCommandOptions = {}) {
    if (typeof program !== "string" || program === "") {
      throw new TypeError("Cannot create command: the program is empty");
    }
    if (options.args !== undefined && !options.args.every((a) => typeof a === "string")) {
      throw new TypeError("Cannot create command: every argument must be a string");
    }
    if (options.timeoutMs !== undefined && !(options.timeoutMs > 0)) {
      throw new RangeError(
        `Cannot create command: timeoutMs ${options.timeoutMs} is not a positive number`,
      );
    }
    if (options.cols !== undefined) checkTerminalSize("cols", options.cols);
    if (options.rows !== undefined) checkTerminalSize("rows", options.rows);
    this.#transport = connection;
    this.#program = program;
    this.#options = options;
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
      const onAbort = (): void => void process.kill("SIGKILL").catch(() => {});
      signal.addEventListener("abort", onAbort, { once: true });
      process.status.finally(() => signal.removeEventListener("abort", onAbort)).catch(() => {});
    }
    return process;
  }

  /**
   * Runs the program to completion and collects its output. stdin is closed.
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
