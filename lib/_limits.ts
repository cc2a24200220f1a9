/**
 * Limits that the harness and the executor check alike, kept in one place so
 * the two sides cannot drift apart.
 *
 * @module
 */

/** The longest delay a timer takes (2^31 - 1 ms): the bound of every `timeoutMs`. */
export const MAX_TIMER_MS = 2_147_483_647;

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
