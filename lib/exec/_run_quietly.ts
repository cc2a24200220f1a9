/**
 * Runs a short helper program (a probe, `kill`) and reports only whether it
 * succeeded.
 *
 * @module
 */

/**
 * Runs a program with a cleared environment and no stdio, and waits for it.
 *
 * @param program The program's path.
 * @param args Its arguments.
 * @returns Whether it exited with status 0; false when it could not be spawned.
 */
export async function runQuietly(program: string, args: string[]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(program, {
      args,
      clearEnv: true,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}
