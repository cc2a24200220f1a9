/**
 * Path helpers shared by the sandbox policy, the confinement levels and the
 * process table.
 *
 * @module
 */

/**
 * Whether `path` is `dir` or lies below it (lexically).
 *
 * @param path An absolute path.
 * @param dir An absolute directory.
 * @returns Whether it is inside.
 */
export function isInside(path: string, dir: string): boolean {
  return dir === "/" || path === dir || path.startsWith(dir + "/");
}

/**
 * The real path (links resolved), or null when it is unknown: missing, or no
 * read access to resolve it.
 *
 * @param path An absolute path, or null.
 * @returns The real path, or null.
 */
export async function realPathOrNull(path: string | null): Promise<string | null> {
  if (path === null) return null;
  try {
    return await Deno.realPath(path);
  } catch {
    return null;
  }
}
