/**
 * Limits that the harness and the executor check alike, kept in one place so
 * the two sides cannot drift apart.
 *
 * @module
 */

/** The longest delay a timer takes (2^31 - 1 ms): the bound of every `timeoutMs`. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * Checks a delay that is handed to a timer. Past {@linkcode MAX_TIMER_MS} a
 * timer fires after 1 ms, the opposite of the long delay asked for, so such a
 * value is refused instead.
 *
 * @param what What is being created, for the message ("Cannot create …").
 * @param name The option's name.
 * @param value The delay in milliseconds.
 * @param min The smallest delay the option takes.
 * @returns The value.
 * @throws {RangeError} When it is not a number from `min` to {@linkcode MAX_TIMER_MS}.
 */
export function checkTimerMs(what: string, name: string, value: number, min: number): number {
  if (!(value >= min && value <= MAX_TIMER_MS)) {
    throw new RangeError(
      `${what}: ${name} ${value} is not a number from ${min} to ${MAX_TIMER_MS}`,
    );
  }
  return value;
}

/**
 * A count with its noun, singular for one: "1 session", "2 sessions".
 *
 * @param n The count.
 * @param one The noun for one.
 * @param many The noun for other counts (default: `one` + "s").
 * @returns The phrase.
 */
export function counted(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The largest terminal side, in columns or rows (the winsize fields are 16-bit). */
export const MAX_TERMINAL_SIDE = 65_535;

/**
 * Checks one side of a terminal size.
 *
 * @param name `cols` or `rows`, for the message.
 * @param value The size.
 * @throws {RangeError} When it is not an integer from 1 to {@linkcode MAX_TERMINAL_SIDE}.
 */
export function checkTerminalSide(name: "cols" | "rows", value: number): void {
  if (!Number.isInteger(value) || value < 1 || value > MAX_TERMINAL_SIDE) {
    throw new RangeError(
      `Cannot size terminal: ${name} ${value} is not an integer from 1 to ${MAX_TERMINAL_SIDE}`,
    );
  }
}

/**
 * The largest file `fs/readFile` returns by default, and the largest
 * `RemoteFs.writeFile` sends: 12 MiB minus a little, so its base64 fits one
 * 16 MiB message with its envelope, and whatever the client writes it can
 * read back.
 */
export const DEFAULT_MAX_FILE_BYTES: number = Math.floor((16 * 1024 * 1024 - 1024) / 4) * 3;

/**
 * The longest single string a child's argv or environment can hold, in UTF-8
 * bytes: Linux refuses the exec (E2BIG, "Argument list too long") when any
 * one string with its NUL passes MAX_ARG_STRLEN (32 pages, 131,072 bytes),
 * however small the total. For an environment entry the string is the whole
 * `NAME=value`. The executor checks the request's strings and those it
 * builds from them (a `deno` program's `--allow-*=` flags, the one command
 * line `script` runs under tty) before spawning, so such a request is
 * refused naming the string rather than failing in the exec of a helper
 * (`setsid`) the request never named.
 */
export const MAX_ARG_STRING_BYTES = 131_071;
