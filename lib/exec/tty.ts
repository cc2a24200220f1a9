/**
 * Terminals for children. Deno has no PTY, so a `tty: true` process runs
 * under `script -qfec CMD /dev/null` (util-linux), which gives it a real
 * pseudo-terminal; everything it prints arrives on `script`'s stdout and is
 * reported as stream `pty`.
 *
 * CMD is a tiny POSIX shell wrapper that runs inside the terminal before the
 * program: it applies the initial size (`stty cols C rows R`), prints one
 * marker `ESC ] outpost;PID;DEVICE BEL` (its own pid, which is the terminal
 * session's process group, and the terminal device), and then `exec`s the
 * program by absolute path. The process table strips the marker from the
 * output and uses it to (1) signal the terminal's process group, which
 * `script` placed in a session of its own (the pid is also that session's id,
 * whose every process terminate reaches), and (2) resize later by running
 * `stty -F DEVICE cols C rows R` through the granted `stty` helper (or `sh`),
 * which makes the kernel send `SIGWINCH` to the program. Input is held back
 * until the marker has been seen, so terminal echo can never forge it.
 *
 * @module
 */

import { SandboxDeniedError } from "../errors.ts";
import { resolveGrantedProgram, shellQuote } from "./confinement.ts";
import { checkTerminalSide } from "../_limits.ts";

/** The default terminal width when the request names none. */
export const DEFAULT_TTY_COLS = 80;
/** The default terminal height when the request names none. */
export const DEFAULT_TTY_ROWS = 24;

const MARKER_PREFIX = new TextEncoder().encode("\x1b]outpost;");
const BEL = 0x07;
const MAX_MARKER_SEARCH_BYTES = 4096;

/**
 * Checks a terminal size.
 *
 * @param cols Columns.
 * @param rows Rows.
 * @throws {RangeError} When either is not an integer from 1 to 65535.
 */
export function checkTtySize(cols: number, rows: number): void {
  checkTerminalSide("cols", cols);
  checkTerminalSide("rows", rows);
}

/** Options for {@linkcode ttyCommand}. */
export interface TtyCommandOptions {
  /** Initial columns. */
  cols: number;
  /** Initial rows. */
  rows: number;
  /** The program's `SHELL` (script itself is told to use `/bin/sh`); undefined unsets it. */
  shell?: string;
}

/**
 * Builds the `script` arguments that run `argv` (absolute program path first)
 * in a new terminal. Spawn `script` with the child environment plus
 * `SHELL=/bin/sh`; the wrapper restores the program's own `SHELL`.
 *
 * @param argv The command to exec inside the terminal.
 * @param options Size and the program's `SHELL`.
 * @returns The arguments for `script`.
 * @example
 * ```ts
 * import { ttyCommand } from "./tty.ts";
 * const args = ttyCommand(["/usr/bin/sh", "-c", "tty"], { cols: 80, rows: 24 });
 * console.log(args[0]); // "-qfec"
 * ```
 */
export function ttyCommand(argv: readonly string[], options: TtyCommandOptions): string[] {
  checkTtySize(options.cols, options.rows);
  const restoreShell = options.shell === undefined
    ? "unset SHELL"
    : `SHELL=${shellQuote(options.shell)}; export SHELL`;
  const wrapper = [
    `PATH=/usr/bin:/bin stty cols ${options.cols} rows ${options.rows} 2>/dev/null`,
    `printf '\\033]outpost;%s;%s\\007' "$$" "$(PATH=/usr/bin:/bin tty 2>/dev/null)"`,
    restoreShell,
    `exec ${argv.map(shellQuote).join(" ")}`,
  ].join("; ");
  return ["-qfec", wrapper, "/dev/null"];
}

/** The marker the wrapper prints: the terminal session's pid and device. */
export interface PtyMarker {
  /** The wrapper's pid: the process group (and session) of the terminal. */
  readonly pid: number;
  /** The terminal device, e.g. `/dev/pts/3`, or null when unknown. */
  readonly device: string | null;
}

/**
 * Strips the wrapper's marker from the start of a terminal's output.
 *
 * @example
 * ```ts
 * import { PtyMarkerParser } from "./tty.ts";
 * const parser = new PtyMarkerParser();
 * const out = parser.push(new TextEncoder().encode("\x1b]outpost;42;/dev/pts/1\x07hi"));
 * console.log(parser.marker?.pid, new TextDecoder().decode(out)); // 42 "hi"
 * ```
 */
export class PtyMarkerParser {
  #pending: Uint8Array | null = new Uint8Array(0);
  #marker: PtyMarker | null = null;

  /** The marker, once seen. */
  get marker(): PtyMarker | null {
    return this.#marker;
  }

  /** True once the marker was seen or the search gave up. */
  get done(): boolean {
    return this.#pending === null;
  }

  /**
   * Feeds terminal output.
   *
   * @param chunk Bytes read from the terminal.
   * @returns The bytes to report as output (possibly empty).
   */
  push(chunk: Uint8Array): Uint8Array {
    if (this.#pending === null) return chunk;
    const data = concat(this.#pending, chunk);
    const start = indexOf(data, MARKER_PREFIX);
    if (start >= 0) {
      const end = data.indexOf(BEL, start + MARKER_PREFIX.byteLength);
      if (end >= 0) {
        const text = new TextDecoder().decode(data.subarray(start + MARKER_PREFIX.byteLength, end));
        const match = /^(\d+);(\/dev\/pts\/\d+)?$/.exec(text);
        const pid = match ? Number(match[1]) : NaN;
        if (match && pid > 1) this.#marker = { pid, device: match[2] ?? null };
        this.#pending = null;
        return concat(data.subarray(0, start), data.subarray(end + 1));
      }
    }
    if (data.byteLength > MAX_MARKER_SEARCH_BYTES) {
      this.#pending = null;
      return data;
    }
    this.#pending = data;
    return new Uint8Array(0);
  }

  /**
   * Ends the search (the stream ended) and returns what was held back.
   *
   * @returns The held bytes.
   */
  flush(): Uint8Array {
    const rest = this.#pending ?? new Uint8Array(0);
    this.#pending = null;
    return rest;
  }
}

/**
 * Resizes a terminal from outside by running `stty -F DEVICE cols C rows R`
 * through the granted `stty` helper, or through `sh` when only that is
 * granted. The kernel then sends `SIGWINCH` to the terminal's foreground
 * process group.
 *
 * @param device The terminal device (`/dev/pts/N`).
 * @param cols Columns.
 * @param rows Rows.
 * @throws {RangeError} When the size is out of range.
 * @throws {SandboxDeniedError} When neither `stty` nor `sh` is granted.
 * @throws {Error} When `stty` fails.
 */
export async function resizePty(device: string, cols: number, rows: number): Promise<void> {
  checkTtySize(cols, rows);
  if (!/^\/dev\/pts\/\d+$/.test(device)) {
    throw new TypeError(
      `Cannot resize terminal: ${JSON.stringify(device)} is not a pseudo-terminal`,
    );
  }
  const sizeArgs = ["-F", device, "cols", String(cols), "rows", String(rows)];
  const stty = await resolveGrantedProgram("stty");
  let program: string;
  let args: string[];
  if (stty !== null) {
    program = stty;
    args = sizeArgs;
  } else {
    const sh = await resolveGrantedProgram("sh");
    if (sh === null) {
      throw new SandboxDeniedError(
        'Cannot resize terminal: needs the "stty" or "sh" helper, and run access to neither is granted',
      );
    }
    program = sh;
    args = ["-c", 'PATH=/usr/bin:/bin exec stty "$@"', "sh", ...sizeArgs];
  }
  const { success, stderr } = await new Deno.Command(program, {
    args,
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    const detail = new TextDecoder().decode(stderr).trim().slice(0, 200);
    throw new Error(`Cannot resize terminal ${device}: stty failed${detail ? `: ${detail}` : ""}`);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.byteLength === 0) return b;
  if (b.byteLength === 0) return a;
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.byteLength <= haystack.byteLength; i++) {
    for (let j = 0; j < needle.byteLength; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}
