/**
 * The executor's sandbox for paths and programs, stated in Deno's permission
 * vocabulary: a request may touch a path only if the executor itself was
 * granted that access, checked on the path as the operating system will
 * resolve it (symbolic links and `..` followed) and on the path as given
 * (Deno matches a `--deny-*` path as spelled), before acting. A refusal is a
 * {@linkcode SandboxDeniedError} naming the path or program, never a
 * `Deno.errors.NotCapable` from deep inside an operation.
 *
 * @module
 */

import { SandboxDeniedError } from "../errors.ts";
import { isInside } from "./_paths.ts";
import { stringListOption } from "../_options.ts";

/** The kind of file access checked. */
export type AccessKind = "read" | "write";

/**
 * Answers a permission query; defaults to `Deno.permissions.query`.
 * "partial": granted, but some paths below it are denied (`--deny-write=…`
 * inside the grant).
 */
export type PermissionQuery = (
  descriptor: Deno.PermissionDescriptor,
) => Promise<Deno.PermissionState | "partial">;

/** Options of {@linkcode SandboxPolicy}. */
export interface SandboxPolicyOptions {
  /**
   * Absolute directories that writes must stay inside, on top of the
   * executor's write permission. Unset: the write permission alone decides.
   */
  writeRoots?: string[];
  /**
   * Permission oracle, for tests. It is asked about a kind as a whole
   * (`{name: "read"}`) before a path; "granted" for the whole must mean no
   * path is denied. @default {Deno.permissions.query}
   */
  query?: PermissionQuery;
}

/** Options of one path check. */
export interface PathCheckOptions {
  /**
   * Follow a symbolic link in the last component (true for reading or writing
   * a file's content; false for removing or inspecting the link itself).
   * @default {true}
   */
  followFinal?: boolean;
  /** The verb used in a refusal, e.g. `remove`. @default {the access kind} */
  action?: string;
}

const MAX_SYMLINK_HOPS = 40;

/** The longest path (or other echoed text) an error message repeats whole. */
export const MAX_SHOWN_PATH_CHARS = 256;

/**
 * A path as error messages show it: whole up to {@linkcode MAX_SHOWN_PATH_CHARS},
 * else its start and end around an ellipsis, so a huge request path (e.g. one
 * padded with `/./`) is not echoed back in full.
 *
 * @param path The path as given.
 * @returns At most {@linkcode MAX_SHOWN_PATH_CHARS} characters.
 */
export function shownPath(path: string): string {
  if (path.length <= MAX_SHOWN_PATH_CHARS) return path;
  const head = Math.ceil((MAX_SHOWN_PATH_CHARS - 1) / 2);
  const tail = MAX_SHOWN_PATH_CHARS - 1 - head;
  return `${path.slice(0, head)}\u2026${path.slice(path.length - tail)}`;
}

/** Deno's answer, with a grant that has denied paths below it as "partial". */
function defaultQuery(
  descriptor: Deno.PermissionDescriptor,
): Promise<Deno.PermissionState | "partial"> {
  return Deno.permissions.query(descriptor).then((status) =>
    status.partial && status.state === "granted" ? "partial" : status.state
  );
}

/** A path a check refused, and whether only paths below it are denied. */
interface Refusal {
  path: string;
  partial: boolean;
}

/**
 * A write root as the paths checked against it are: resolved (symbolic links
 * followed), so a root given through a link still holds what lies under it.
 * A root that cannot be resolved yet (missing, unreadable) stays as given.
 */
function realRoot(root: string): string {
  try {
    return Deno.realPathSync(root);
  } catch {
    return root;
  }
}

function components(path: string): string[] {
  return path.split("/").filter((part) => part.length > 0 && part !== ".");
}

/**
 * The parts of a path with `.`, `..` and repeated slashes worked out as
 * text, touching nothing (`..` at `/` stays there).
 *
 * @param path The path.
 * @returns Its parts.
 */
export function lexicalParts(path: string): string[] {
  const out: string[] = [];
  for (const part of components(path)) {
    if (part === "..") out.pop();
    else out.push(part);
  }
  return out;
}

function isMissing(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory;
}

/** readlink's EINVAL: the entry exists but is not a symbolic link (any more). */
function isNoLongerALink(error: unknown): boolean {
  return (error as { code?: unknown })?.code === "EINVAL";
}

/** The longest path the system takes (Linux's PATH_MAX less the NUL), in UTF-8 bytes. */
export const MAX_PATH_BYTES = 4095;
const utf8 = new TextEncoder();

/**
 * Whether a path is longer than the system takes (PATH_MAX).
 *
 * @param path The path.
 * @returns True past {@linkcode MAX_PATH_BYTES} UTF-8 bytes.
 */
export function isTooLong(path: string): boolean {
  return path.length > MAX_PATH_BYTES || utf8.encode(path).length > MAX_PATH_BYTES;
}

/**
 * Refuses a path past PATH_MAX, as the system would: past it the system
 * answers ENOENT for every prefix, not ENAMETOOLONG, and a long path's work
 * would grow with its square.
 */
function refuseTooLong(path: string): void {
  if (!isTooLong(path)) return;
  throw Object.assign(
    new Error(
      `Cannot resolve "${shownPath(path)}": it is longer than the system's ${MAX_PATH_BYTES} bytes`,
    ),
    { code: "ENAMETOOLONG" },
  );
}

/**
 * Lookups one resolution may make: an `lstat` counts one, a `realPath` one
 * too, or, once a link has been followed, one per component it walks (the C
 * library's `realpath` looks up each one). A path as written takes a dozen
 * or so; chains of links through deep directories or with long runs of
 * `d/..` would take hundreds of thousands, which the system does in the
 * kernel but this does one await at a time.
 */
const MAX_LOOKUPS = 4096;

/** Lookups left for one resolution. */
interface Budget {
  left: number;
}

function spend(budget: Budget, path: string, components = 1): void {
  budget.left -= components;
  if (budget.left >= 0) return;
  throw Object.assign(
    new Error(
      `Cannot resolve "${shownPath(path)}": it takes more than ${MAX_LOOKUPS} lookups ` +
        "(path components, through its links)",
    ),
    { code: "ELOOP" },
  );
}

function tooManyLinks(path: string): Error {
  return new Deno.errors.FilesystemLoop(
    `Cannot resolve "${shownPath(path)}": too many symbolic links`,
  );
}

/** A resolution step was refused by Deno itself (no read access to resolve). */
class ResolveDenied extends Error {
  /** The (partly resolved) path Deno refused to look at. */
  readonly at: string;
  constructor(at: string) {
    super(`Cannot resolve "${shownPath(at)}"`);
    this.at = at;
  }
}

/**
 * Checks paths and programs against the executor's own Deno permissions.
 *
 * @example Refuse a read outside the granted directories
 * ```ts ignore
 * import { SandboxPolicy } from "@outpost/exec";
 * const policy = new SandboxPolicy();
 * await policy.checkRead("/etc/passwd"); // throws SandboxDeniedError unless read is granted there
 * ```
 */
export class SandboxPolicy {
  #writeRoots: string[] | undefined;
  #query: PermissionQuery;

  /**
   * Creates the policy.
   *
   * @param options Write roots and the permission oracle.
   * @throws {TypeError} If a write root is not absolute.
   */
  constructor(options: SandboxPolicyOptions = {}) {
    this.#query = options.query ?? defaultQuery;
    const writeRoots = stringListOption("sandbox policy", "writeRoots", options.writeRoots);
    if (writeRoots) {
      this.#writeRoots = writeRoots.map((root) => {
        if (!root.startsWith("/")) {
          throw new TypeError(`Cannot use write root "${root}": it must be an absolute path`);
        }
        return realRoot("/" + components(root).join("/"));
      });
    }
  }

  /** The write roots, if any were configured. */
  get writeRoots(): readonly string[] | undefined {
    return this.#writeRoots;
  }

  /**
   * Resolves an absolute path the way the operating system will: symbolic
   * links and `..` are followed through every existing component; a missing
   * tail is appended lexically.
   *
   * @param path An absolute path.
   * @param options Whether to follow a symbolic link in the last component.
   * @returns The resolved absolute path.
   * @throws {TypeError} If the path is not absolute.
   * @throws {SandboxDeniedError} If Deno refuses the reads needed to resolve it.
   */
  async resolve(path: string, options: PathCheckOptions = {}): Promise<string> {
    try {
      return await this.#resolve(path, options.followFinal ?? true);
    } catch (error) {
      if (error instanceof ResolveDenied) {
        throw new SandboxDeniedError(
          `Cannot ${options.action ?? "resolve"} "${shownPath(path)}": read access is not granted`,
        );
      }
      throw error;
    }
  }

  /**
   * Resolves a path and checks that reading it is granted.
   *
   * @param path An absolute path.
   * @param options Link handling and the verb for the message.
   * @returns The resolved path; act on it, not on `path`.
   * @throws {SandboxDeniedError} If read access is not granted on the resolved path.
   * @throws {Deno.errors.FilesystemLoop} If resolving meets too many symbolic links.
   * @throws {Error} The lookup's own error otherwise (e.g. code `ENAMETOOLONG`), for the
   *   caller to map with the action it names.
   */
  checkRead(path: string, options: PathCheckOptions = {}): Promise<string> {
    return this.#check("read", path, options);
  }

  /**
   * Resolves a path and checks that writing it is granted (and that it lies
   * inside a write root when roots are configured).
   *
   * @param path An absolute path.
   * @param options Link handling and the verb for the message.
   * @returns The resolved path; act on it, not on `path`.
   * @throws {SandboxDeniedError} If write access is not granted on the resolved path.
   * @throws {Error} A failed lookup, as for {@linkcode SandboxPolicy.checkRead}.
   */
  checkWrite(path: string, options: PathCheckOptions = {}): Promise<string> {
    return this.#check("write", path, options);
  }

  /**
   * Checks that running a program is granted.
   *
   * @param program The program name or path, as the request gave it.
   * @throws {SandboxDeniedError} If run access is not granted, e.g. `Cannot start "ls": run access is not granted`.
   */
  async checkRun(program: string): Promise<void> {
    const state = await this.#query({ name: "run", command: program });
    if (state !== "granted") {
      throw new SandboxDeniedError(`Cannot start "${program}": run access is not granted`);
    }
  }

  async #check(kind: AccessKind, path: string, options: PathCheckOptions): Promise<string> {
    const action = options.action ?? kind;
    let resolved: string;
    try {
      resolved = await this.#resolve(path, options.followFinal ?? true);
    } catch (error) {
      if (error instanceof ResolveDenied) {
        // Name the permission the caller asked for when it is missing where
        // the path leads (judged lexically from where resolution stopped; the
        // request is refused either way).
        const lexical = "/" + lexicalParts(error.at).join("/");
        const shown = lexical === path ? "" : ` (it resolves to "${shownPath(lexical)}")`;
        const missing = kind === "read" || (await this.#refusal(kind, lexical)) !== undefined
          ? `${kind} access is not granted${shown}`
          : `read access is not granted${shown}, and is needed to resolve the path`;
        throw new SandboxDeniedError(`Cannot ${action} "${shownPath(path)}": ${missing}`);
      }
      throw error;
    }
    const where = resolved === path ? "" : ` (it resolves to "${shownPath(resolved)}")`;
    // The spelling matters too: Deno refuses `--deny-write=/d/link` when asked
    // about /d/link/x, but not about the resolved /d/target/x.
    const given = "/" + lexicalParts(path).join("/");
    const refusal = await this.#refusal(kind, resolved, given);
    if (refusal) {
      const why = refusal.partial
        ? `${kind} access is denied to a path inside it`
        : `${kind} access is not granted`;
      const shown = refusal.path === resolved ? where : "";
      throw new SandboxDeniedError(`Cannot ${action} "${shownPath(path)}": ${why}${shown}`);
    }
    if (kind === "write" && this.#writeRoots && !this.#insideWriteRoot(resolved)) {
      throw new SandboxDeniedError(
        `Cannot ${action} "${shownPath(path)}": it is outside the write roots${where}`,
      );
    }
    return resolved;
  }

  /**
   * Why `kind` access to `resolved` (the path the action uses), spelled
   * `given` by the request, is refused, if it is. Asks about the whole file
   * system first and about the paths only when that is not wholly granted:
   * Deno keeps a status object for every distinct descriptor ever queried,
   * for the life of the process (about 0.5 KB each), so per-path questions
   * would grow the executor with each new path a harness names. Under a
   * global grant (`--allow-read`, `-A`) none is asked.
   *
   * `resolved` must be granted. A partial grant (paths below denied) counts
   * as not granted for a write: an `os`-confined write runs in a helper Deno
   * does not watch, and removing or copying onto a directory would reach the
   * denied paths inside it. A partial read of `resolved` is granted: the
   * executor reads below it by resolved paths itself, so Deno refuses the
   * denied ones.
   *
   * `given` matters only for what Deno denies as spelled (`--deny-*` matches
   * literally): refused when denied, or when partial and it differs from
   * `resolved` (the action reaches below it by resolved paths, which the
   * deny does not name). Not being granted as spelled is no refusal: a path
   * through a link into a granted directory is fine.
   */
  async #refusal(
    kind: AccessKind,
    resolved: string,
    given = resolved,
  ): Promise<Refusal | undefined> {
    if ((await this.#query({ name: kind })) === "granted") return undefined;
    const state = await this.#query({ name: kind, path: resolved });
    if (state !== "granted" && !(state === "partial" && kind === "read")) {
      return { path: resolved, partial: state === "partial" };
    }
    if (given === resolved) return undefined;
    const spelled = await this.#query({ name: kind, path: given });
    if (spelled === "denied" || spelled === "partial") {
      return { path: given, partial: spelled === "partial" };
    }
    return undefined;
  }

  #insideWriteRoot(path: string): boolean {
    return this.#writeRoots!.some((root) => isInside(path, root));
  }

  async #resolve(path: string, followFinal: boolean): Promise<string> {
    if (typeof path !== "string" || !path.startsWith("/")) {
      throw new TypeError(`Cannot resolve "${shownPath(path)}": the path must be absolute`);
    }
    refuseTooLong(path);
    const parts = components(path);
    const last = parts.at(-1);
    // "link/." and "link/.." go through the link, as the system reads them.
    if (!followFinal && last !== undefined && last !== ".." && !/\/\.\/*$/.test(path)) {
      const parent = await this.#resolveParts(parts.slice(0, -1), 0, { left: MAX_LOOKUPS });
      return parent === "/" ? `/${last}` : `${parent}/${last}`;
    }
    return await this.#resolveParts(parts, 0, { left: MAX_LOOKUPS });
  }

  /**
   * The deepest prefix (count of parts below `missing`, which does not
   * resolve) that resolves, and where it leads. The parts hold no "..", so
   * every prefix of a resolving prefix resolves, and this bisects. Deno will
   * not look above a scoped read grant (and a denied path would have made the
   * whole path refused already), so a prefix it refuses lies above every one
   * that resolves: the search goes deeper from it, and with nothing found
   * below it the path is refused, as a walk down from `missing` would be.
   */
  async #deepestResolved(
    missing: number,
    resolve: (n: number) => Promise<string | undefined>,
  ): Promise<[number, string]> {
    // Most often only the last name is missing (a file to create).
    if (missing > 1) {
      const parent = await resolve(missing - 1).catch((error) => {
        if (error instanceof ResolveDenied) return undefined;
        throw error;
      });
      if (parent !== undefined) return [missing - 1, parent];
    }
    let low = 0; // not yet looked at: "/" is not always readable
    let best: [number, string] | undefined;
    let denied: ResolveDenied | undefined;
    while (missing - low > 1) {
      const mid = (low + missing) >>> 1;
      let at: string | undefined;
      try {
        at = await resolve(mid);
      } catch (error) {
        if (!(error instanceof ResolveDenied)) throw error;
        // Above a scoped grant: what resolves, if anything, lies deeper.
        denied = error;
        low = mid;
        continue;
      }
      if (at === undefined) missing = mid;
      else [low, best] = [mid, [mid, at]];
    }
    if (best !== undefined) return best;
    if (denied !== undefined) throw denied;
    const root = await resolve(0);
    return [0, root ?? "/"];
  }

  /** Resolves `/` + parts, following links; `hops` counts symlinks followed. */
  async #resolveParts(parts: string[], hops: number, budget: Budget): Promise<string> {
    const first = parts.findIndex((part) => part !== "..");
    if (first !== 0) parts = first === -1 ? [] : parts.slice(first); // ".." at "/" stays there
    const spelled = "/" + parts.join("/");
    // Find the deepest existing prefix and let the OS resolve it. Only the
    // parts before the first "..": Deno (without -A) removes ".." as text
    // before asking the system, where the system goes to the parent of what
    // a link leads to; the walk below does that.
    const resolve = async (n: number): Promise<string | undefined> => {
      // Past a link the walk may be on a path deep through links of the
      // harness's making: there a realPath counts every component it walks.
      spend(budget, spelled, hops > 0 ? Math.max(1, n) : 1);
      try {
        return await Deno.realPath("/" + parts.slice(0, n).join("/"));
      } catch (error) {
        if (error instanceof Deno.errors.NotCapable) throw new ResolveDenied(spelled);
        if (!isMissing(error)) throw error;
        return undefined;
      }
    };
    const dots = parts.indexOf("..");
    let n = dots === -1 ? parts.length : dots;
    let real: string | undefined;
    try {
      real = await resolve(n);
      if (real === undefined) [n, real] = await this.#deepestResolved(n, resolve);
    } catch (error) {
      // Deno will not look above a scoped read grant; it takes ".." as text
      // there, and so would the action that follows: do the same.
      if (error instanceof ResolveDenied && dots !== -1) {
        return await this.#resolveParts(lexicalParts(spelled), hops, budget);
      }
      throw error;
    }
    const out = components(real);
    for (let i = n; i < parts.length; i++) {
      const part = parts[i];
      if (part === "..") {
        // `out` is a real path: its parent is where the system goes. (Not
        // realPath again from here: on a deep path each call costs lookups
        // in proportion to the depth, in the C library.)
        out.pop();
        continue;
      }
      // The first missing component may still be a dangling symbolic link,
      // which a write would follow: resolve its target.
      const candidate = "/" + [...out, part].join("/");
      let target: string | undefined;
      try {
        spend(budget, spelled);
        const info = await Deno.lstat(candidate);
        if (info.isSymlink) target = await Deno.readLink(candidate);
      } catch (error) {
        if (error instanceof Deno.errors.NotCapable) {
          // As above: where Deno will not look, a ".." still to come is text.
          if (parts.indexOf("..", i) !== -1) {
            return await this.#resolveParts(lexicalParts(spelled), hops, budget);
          }
          throw new ResolveDenied("/" + [...out, ...parts.slice(i)].join("/"));
        }
        if (isNoLongerALink(error)) {
          // Swapped for a non-link between lstat and readlink: the path is
          // changing under us, so resolve it again from the start. Counted as
          // a hop, so a path that never holds still ends as a loop error.
          if (hops >= MAX_SYMLINK_HOPS) throw tooManyLinks(candidate);
          return await this.#resolveParts(parts, hops + 1, budget);
        }
        if (!isMissing(error)) throw error;
        const rest = parts.slice(i + 1);
        // Nothing below a missing name exists, so the rest is text, unless a
        // ".." climbs back out: then what follows it is looked up again, or a
        // link there would stay in the result unresolved.
        if (!rest.includes("..")) return "/" + [...out, part, ...rest].join("/");
      }
      if (target === undefined) {
        out.push(part);
        continue;
      }
      if (hops >= MAX_SYMLINK_HOPS) throw tooManyLinks(candidate);
      const base = target.startsWith("/") ? [] : out;
      return await this.#resolveParts(
        [...base, ...components(target), ...parts.slice(i + 1)],
        hops + 1,
        budget,
      );
    }
    return "/" + out.join("/");
  }
}
