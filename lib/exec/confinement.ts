/**
 * Confinement levels for spawned programs, the run-permission checks that
 * decide what may be spawned, capability detection, and the wrapper command
 * lines (`bwrap`, `deno run`) that apply a level.
 *
 * Levels:
 * - `none`: the program runs as the executor's user with the child
 *   environment only; Deno does not confine children.
 * - `deno`: the program is a Deno module run by the granted `deno` binary
 *   with permission flags that the request names and the executor itself
 *   holds (checked with `Deno.permissions.query`; asking for more is refused).
 * - `os`: bubblewrap: read-only root, the granted write roots writable, fresh
 *   `/dev`, `/proc` and `/tmp`, own pid, ipc and uts namespaces, no network
 *   unless the operator allows it, every capability dropped, dies with its
 *   parent. The executor's working directory stays visible (read-only) when
 *   it lies under the private `/tmp`, `/dev` or `/run`.
 *
 * Helper programs (`bwrap`, `script`, `bash`, `deno`) can start any program;
 * outpost therefore checks the requested program against the executor's run
 * grant itself and passes the helper an absolute path that the grant covers,
 * so the request's `PATH` cannot redirect it.
 *
 * @module
 */

import { SandboxDeniedError } from "../errors.ts";
import { MAX_ARG_STRING_BYTES } from "../_limits.ts";
import { utf8Length } from "./child_env.ts";
import { BoundedCache } from "./_bounded_cache.ts";
import { realPathOrNull } from "./_paths.ts";
import { grantOf, isGranted, isGrantedValue, isGrantedValueSync } from "./_permissions.ts";
import { runQuietly } from "./_run_quietly.ts";

/** A confinement level for a spawned program. */
export type Confinement = "none" | "deno" | "os";

/** All levels, weakest first. */
export const CONFINEMENTS: readonly Confinement[] = Object.freeze(["none", "deno", "os"]);

/**
 * Deno permissions a `deno`-confined program asks for, in Deno's own
 * vocabulary: `true` for the whole permission, or a list of values (paths,
 * hosts, variable names, commands, sys kinds). Each must be granted to the
 * executor itself.
 */
export interface DenoPermissions {
  /** Paths to read (`--allow-read`). */
  read?: boolean | string[];
  /** Paths to write (`--allow-write`). */
  write?: boolean | string[];
  /** Hosts to reach (`--allow-net`); only `IP:port` values when the executor has hosts denied. */
  net?: boolean | string[];
  /** Environment variables (`--allow-env`); the child only sees its own environment anyway. */
  env?: boolean | string[];
  /**
   * Programs to run (`--allow-run`), pinned to the path the executor resolves
   * (its `PATH`, the request's `cwd`); those children are not confined by Deno.
   */
  run?: boolean | string[];
  /** System information kinds (`--allow-sys`). */
  sys?: boolean | string[];
  /** Dynamic libraries (`--allow-ffi`); FFI escapes every sandbox. */
  ffi?: boolean | string[];
}

/** What this executor can offer, as found once per executor process (`environment/info` reports it). */
export interface Capabilities {
  /** Levels that work here, `none` always included. */
  confinements: Confinement[];
  /** A process tree (the process group) can be signalled: the `kill` helper is granted and works. */
  treeKill: boolean;
  /** `tty: true` works: the `script` helper (util-linux) is granted and works. */
  tty: boolean;
  /** A terminal can be resized later: the `stty` helper (or `sh`) is granted. */
  resize: boolean;
}

/** The search path used when the executor may not read its own `PATH`. */
export const DEFAULT_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The most program name lookups remembered (per search path and name). */
export const MAX_RESOLVED_PROGRAMS = 256;

/** Program name lookups, keyed by search path and name; see {@linkcode forgetResolvedPrograms}. */
const resolvedPrograms = new BoundedCache<string, string>(MAX_RESOLVED_PROGRAMS);

/**
 * Forgets every remembered program lookup, so the next start searches `PATH`
 * again. The process table calls it when a spawn finds a program missing.
 */
export function forgetResolvedPrograms(): void {
  resolvedPrograms.clear();
}

/**
 * Finds the absolute path of a program the executor may run, as Deno resolves
 * `--allow-run` names: a name without `/` is looked up in the executor's
 * `PATH`, and the first candidate the run grant covers wins: under a whole
 * grant the first existing file, under a scoped one (`--allow-run=sh`) the
 * path Deno granted, and under a whole grant with programs denied
 * (`--allow-run --deny-run=curl`) the first existing file Deno does not deny
 * (Deno grants any other path there, existing or not). A name lookup is
 * remembered per search path (a bounded cache; the run grant is re-checked on
 * every call), so a start does not search `PATH` again until
 * {@linkcode forgetResolvedPrograms} is called.
 *
 * @param command A program name or path.
 * @param cwd The directory a relative path is resolved against.
 * @returns The path to spawn, or `null` when run access is not granted.
 * @example
 * ```ts
 * import { resolveGrantedProgram } from "./confinement.ts";
 * console.log(await resolveGrantedProgram("sh")); // e.g. "/usr/bin/sh", or null
 * ```
 */
export async function resolveGrantedProgram(
  command: string,
  cwd?: string,
): Promise<string | null> {
  if (command.length === 0 || command.includes("\0")) return null;
  if (command.includes("/")) {
    const path = command.startsWith("/") || cwd === undefined ? command : joinPath(cwd, command);
    return (await queryRun(path)) ? path : null;
  }
  if (!(await queryRun(command))) return null;
  const path = await searchPath();
  const key = `${path}\0${command}`;
  const known = resolvedPrograms.get(key);
  if (known !== undefined && (await queryRun(known))) return known;
  const grant = await grantOf({ name: "run" });
  for (const dir of path.split(":")) {
    if (!dir.startsWith("/")) continue;
    const candidate = joinPath(dir, command);
    const found = grant === "whole"
      ? await isFile(candidate)
      : grant === "partial"
      ? (await isFile(candidate)) && (await queryRun(candidate))
      : await queryRun(candidate);
    if (found) {
      resolvedPrograms.set(key, candidate);
      return candidate;
    }
  }
  // Whole grant but PATH unreadable: any program is allowed anyway.
  return grant === "whole" ? command : null;
}

/**
 * Resolves a program or throws the sandbox refusal.
 *
 * @param command The program name or path.
 * @param cwd The directory a relative path is resolved against.
 * @param purpose Why it is needed; prefixed to the refusal (e.g. `tty needs the "script" helper`).
 * @param subject The program the refusal is about (defaults to `command`).
 * @returns The path to spawn.
 * @throws {SandboxDeniedError} When run access is not granted.
 */
export async function requireProgram(
  command: string,
  cwd?: string,
  purpose?: string,
  subject?: string,
): Promise<string> {
  const path = await resolveGrantedProgram(command, cwd);
  if (path !== null) return path;
  const who = JSON.stringify(subject ?? command);
  throw new SandboxDeniedError(
    purpose === undefined
      ? `Cannot start ${who}: run access is not granted`
      : `Cannot start ${who}: ${purpose}, and run access to "${command}" is not granted`,
  );
}

let capabilities: Promise<Capabilities> | undefined;

/**
 * Detects, once per executor process, which levels and features work here:
 * each helper must be granted and must run (bubblewrap is probed with a real
 * sandbox, so a kernel without user namespaces is reported honestly).
 *
 * @returns The capabilities.
 * @example
 * ```ts
 * import { detectCapabilities } from "./confinement.ts";
 * const caps = await detectCapabilities();
 * console.log(caps.confinements.includes("none")); // true
 * ```
 */
export function detectCapabilities(): Promise<Capabilities> {
  capabilities ??= probeCapabilities();
  return capabilities;
}

let sessionHelper: Promise<string | null> | undefined;

/**
 * Finds, once per executor process, the util-linux `setsid` helper when the
 * executor may run it and it works. Spawning `setsid -- PROGRAM ARGS` plainly
 * gives the same process model as `Deno.Command`'s `detached: true` at a
 * fraction of the cost: the new child is not a process group leader, so
 * `setsid` calls `setsid()` and execs PROGRAM in place (no fork), and the
 * spawned pid is the leader of a new session and process group. Deno forks
 * the whole executor process for `detached: true` (tens of milliseconds in a
 * large process), while a plain spawn uses `posix_spawn`.
 *
 * Like `bash`, `script` and `bwrap`, a granted `setsid` can start any
 * program; outpost checks every requested program against the run grant
 * itself before handing its absolute path to a helper.
 *
 * @returns The absolute path of `setsid`, or null (spawn with `detached: true` then).
 * @example
 * ```ts
 * import { detectSessionHelper } from "./confinement.ts";
 * console.log(await detectSessionHelper()); // e.g. "/usr/bin/setsid", or null
 * ```
 */
export function detectSessionHelper(): Promise<string | null> {
  sessionHelper ??= probeSessionHelper();
  return sessionHelper;
}

async function probeSessionHelper(): Promise<string | null> {
  const setsid = await resolveGrantedProgram("setsid");
  if (setsid === null) return null;
  try {
    const { success, stdout } = await new Deno.Command(setsid, {
      args: ["--version"],
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    // Only util-linux's setsid is known to exec in place when it need not fork.
    return success && new TextDecoder().decode(stdout).includes("util-linux") ? setsid : null;
  } catch {
    return null;
  }
}

/**
 * Checks a program path that is about to be spawned through a helper, when
 * the executor may read it: a helper reports a missing or non-executable
 * program only through its exit code (127 or 126), while a direct spawn
 * throws. Paths the executor may not read are not checked.
 *
 * The stat is asynchronous although its trip through Deno's blocking pool
 * adds about 0.15 ms to every start (timed around it during `deno task bench
 * --only=true`): the spawn execs the helper, not the program, so a program on
 * a hung mount would otherwise stop the executor's whole event loop here.
 *
 * @param path The absolute program path.
 * @throws {Deno.errors.NotFound} When the path does not exist.
 * @throws {Deno.errors.PermissionDenied} When it is a directory or has no execute bit.
 */
export async function checkProgramFile(path: string): Promise<void> {
  if (!isGrantedValueSync({ name: "read", path })) return;
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) throw error;
    return;
  }
  if (info.isDirectory || (info.mode !== null && (info.mode & 0o111) === 0)) {
    throw new Deno.errors.PermissionDenied(`Permission denied: ${path} is not executable`);
  }
}

async function probeCapabilities(): Promise<Capabilities> {
  const [kill, script, bwrap, deno, stty, sh] = await Promise.all(
    ["kill", "script", "bwrap", "deno", "stty", "sh"].map((name) => resolveGrantedProgram(name)),
  );
  // The session helper probe runs alongside (every start needs it) and settles with these.
  const [treeKill, tty, os, denoOk] = await Promise.all([
    kill ? runQuietly(kill, ["-l"]) : false,
    script ? runQuietly(script, ["--version"]) : false,
    bwrap
      ? runQuietly(bwrap, [
        ...bwrapArgs({ writeRoots: [], allowNetwork: false }),
        bwrap,
        "--version",
      ])
      : false,
    deno ? runQuietly(deno, ["--version"]) : false,
    detectSessionHelper(),
  ]);
  const confinements: Confinement[] = ["none"];
  if (denoOk) confinements.push("deno");
  if (os) confinements.push("os");
  return { confinements, treeKill, tty, resize: tty && (stty !== null || sh !== null) };
}

/** Options for {@linkcode bwrapArgs}. */
export interface BwrapOptions {
  /** Directories bound writable (absolute, existing, write-granted). */
  writeRoots: readonly string[];
  /** Keep the host network (otherwise a fresh network namespace with only loopback). */
  allowNetwork: boolean;
  /**
   * Directories bound read-only over the private `/tmp`, `/dev` and `/run` at
   * the same path (the executor's working directory), before the write roots,
   * so a write root inside one stays writable.
   */
  readOnlyDirs?: readonly string[];
  /** Working directory inside the sandbox. */
  cwd?: string;
}

/**
 * The private mount that hides `path` in the `os` sandbox: `/tmp`, `/dev`
 * (a fresh one, so e.g. `/dev/shm` is empty), or `/run` without network; null
 * when the path is visible. The mount points themselves are not hidden: they
 * exist inside.
 *
 * @param path An absolute path, symlinks resolved.
 * @param allowNetwork Whether the sandbox keeps the host network (and `/run`).
 * @returns The hiding mount point, or null.
 */
export function hiddenInSandbox(path: string, allowNetwork: boolean): string | null {
  for (const mount of allowNetwork ? ["/tmp", "/dev"] : ["/tmp", "/dev", "/run"]) {
    if (path.startsWith(`${mount}/`)) return mount;
  }
  return null;
}

/** The host-wide parts of `/proc` an `os` program sees read-only (those that exist). */
const PROC_READ_ONLY = ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"];

/**
 * The bubblewrap arguments for the `os` level, ending with `--`; append the
 * program's absolute path and arguments.
 *
 * `--new-session` is deliberately not used: outpost already starts every
 * child in a session of its own (no controlling terminal of the executor is
 * reachable, so TIOCSTI injection is moot), and keeping the sandboxed program
 * in bubblewrap's process group lets a group `SIGTERM` reach the program
 * itself for a graceful stop; the pid namespace is the backstop that kills
 * everything once bubblewrap dies.
 *
 * @param options Write roots, read-only dirs, network, cwd. (`--argv0` is not used: bubblewrap 0.8
 * lacks it; arg0 goes through `bash -c 'exec -a'` inside the sandbox.)
 * @returns The arguments.
 */
export function bwrapArgs(options: BwrapOptions): string[] {
  const args = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"];
  // A fresh /proc still holds the kernel's settings for the whole host, which
  // a program running as uid 0 may write, capabilities dropped or not
  // (`kernel.core_pattern` runs a program as root on the host): read-only.
  for (const path of PROC_READ_ONLY) args.push("--ro-bind-try", path, path);
  args.push("--tmpfs", "/tmp");
  // Without network, also no system services: their Unix sockets (D-Bus,
  // Docker, ...) live under /run (and /var/run, a link to it), and connecting
  // to a socket file needs no write access. With network allowed /run stays,
  // since name resolution may depend on it (systemd-resolved).
  if (!options.allowNetwork) args.push("--tmpfs", "/run");
  // Mounts apply in order: these go over the private mounts above.
  for (const dir of options.readOnlyDirs ?? []) args.push("--ro-bind", dir, dir);
  for (const root of options.writeRoots) args.push("--bind", root, root);
  args.push("--unshare-pid", "--unshare-ipc", "--unshare-uts");
  if (!options.allowNetwork) args.push("--unshare-net");
  args.push("--die-with-parent", "--cap-drop", "ALL");
  if (options.cwd !== undefined) args.push("--chdir", options.cwd);
  args.push("--");
  return args;
}

/**
 * Keeps the write roots that exist and that the executor may write wholly, as
 * real paths (symlinks resolved). A root with a path denied inside it
 * (`--deny-write=ROOT/x`, a "partial" grant) is dropped: bubblewrap binds a
 * root writable as a whole and cannot keep the denied path out. Others are
 * dropped silently too (the library API has always accepted them); callers
 * that take roots from an operator should refuse them first with
 * {@linkcode writeRootProblem}, as the CLI does.
 *
 * @param roots Candidate roots from the operator.
 * @returns The roots to bind writable.
 */
export async function grantedWriteRoots(roots: readonly string[]): Promise<string[]> {
  // Deno matches --deny-write literally: a denied path spelled through a link
  // to the root is only seen when asking about the root as given, and only
  // when the grant covers it as given (a scoped grant answers "prompt" above
  // a deny it does not cover). So the root must be wholly granted both ways.
  const result: string[] = [];
  for (const root of roots) {
    if (!root.startsWith("/")) continue;
    let real: string;
    try {
      real = await Deno.realPath(root);
    } catch {
      continue;
    }
    const granted = (await isGrantedValue({ name: "write", path: real })) &&
      (real === root || (await isGrantedValue({ name: "write", path: root })));
    if (granted && !result.includes(real)) {
      result.push(real);
    }
  }
  return result;
}

/**
 * Says why a write root would not take effect: it is not absolute, does not
 * exist, is not a directory, cannot be resolved (no read access), or the
 * executor may not write it wholly: granted as resolved, and denied in no
 * part as given (Deno matches `--deny-write` paths literally, links
 * unresolved).
 *
 * @param root A write root from the operator.
 * @returns The reason (completes "Cannot use --write-root ROOT: "), or null when it is usable.
 * @example
 * ```ts
 * import { writeRootProblem } from "./confinement.ts";
 * console.log(await writeRootProblem("/nonexistent")); // "it does not exist"
 * ```
 */
export async function writeRootProblem(root: string): Promise<string | null> {
  if (!root.startsWith("/")) return "it must be an absolute path";
  let real: string;
  try {
    real = await Deno.realPath(root);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "it does not exist";
    if (error instanceof Deno.errors.NotCapable) {
      return `read access to it is not granted (needed to resolve it); add --allow-read=${root} to the deno command`;
    }
    return `it cannot be resolved: ${error instanceof Error ? error.message : String(error)}`;
  }
  const shown = real === root ? "" : ` (it resolves to ${real})`;
  if (!(await Deno.stat(real)).isDirectory) return `it is not a directory${shown}`;
  const status = await Deno.permissions.query({ name: "write", path: real });
  if (status.state !== "granted") {
    return `write access to it is not granted${shown}; add --allow-write=${real} to the deno command`;
  }
  if (status.partial) {
    return `write access to part of it is denied (--deny-write)${shown}, and a sandbox can only ` +
      "make a whole root writable";
  }
  if (real !== root && !(await isGrantedValue({ name: "write", path: root }))) {
    // Deno matches --deny-write as spelled, and can only say what it denies
    // below a path it grants: a root through a link is taken when its
    // spelling is wholly granted too.
    return `write access to it as written is not wholly granted (it resolves to ${real}); ` +
      `give --write-root ${real}, or grant --allow-write=${root}`;
  }
  return null;
}

/**
 * Environment variables the Deno runtime itself reads, which would let a
 * `deno`-level program step around its permissions: DENO_V8_FLAGS weakens
 * V8, DENO_COVERAGE_DIR and SSLKEYLOGFILE write files and DENO_CERT reads one
 * without any grant, DENO_DIR (and HOME or XDG_CACHE_HOME, which place it
 * when it is unset) moves the cache the runtime writes without any grant,
 * proxies and registries change where code comes from.
 */
const DENO_RUNTIME_ENV =
  /^(DENO_.*|NPM_CONFIG_.*|NODE_.*|SSLKEYLOGFILE|(HTTPS?|ALL|NO)_PROXY|RUST_.*|HOME|XDG_CACHE_HOME)$/i;

/**
 * Environment variables that make a program run code or write files on its
 * own: glibc's loader and libc's (LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH,
 * GCONV_PATH, ..., LD_DEBUG_OUTPUT, MALLOC_TRACE) and the shell's, for
 * `script`'s `/bin/sh -c` wrapper in a tty when /bin/sh is bash, which reads
 * exported functions (`BASH_FUNC_*`) and SHELLOPTS or BASHOPTS (xtrace with
 * a PS4 that runs a command) even as `sh`; BASH_ENV and ENV, which shells
 * started under other names read, go with them. A confined program's environment is also the
 * environment of the helpers that start it (`setsid`, `script` and its
 * shell, `bwrap`, and `deno` itself, the `deno` level's sandbox), which run
 * outside its sandbox, so these would run the harness's code there.
 */
const LOADER_ENV =
  /^(LD_.*|DYLD_.*|GCONV_PATH|GLIBC_TUNABLES|LOCPATH|NLSPATH|MALLOC_TRACE|BASH_FUNC_.*|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PS4)$/;

/**
 * Refuses a request environment that the dynamic loader of a confined
 * program's helpers would act on (see the list above). Inside the sandbox
 * the program may still set them, e.g. `sh -c 'LD_PRELOAD=… exec prog'`
 * under `os`.
 *
 * @param env The variables the request names.
 * @param subject The program, for the message.
 * @throws {SandboxDeniedError} Naming the first such variable.
 */
export function checkConfinedEnv(
  env: Record<string, string> | undefined,
  subject: string,
): void {
  refuseEnv(
    env,
    subject,
    LOADER_ENV,
    "is read by the loader or shell of the helpers that start a confined program " +
      "(setsid, script, bwrap, deno), outside its sandbox; set it inside the program's own " +
      "command instead (under \"os\": sh -c 'NAME=value exec PROGRAM')",
  );
}

/**
 * Refuses a request environment that configures the Deno runtime of a
 * `deno`-level program (see the list above).
 *
 * @param env The variables the request names.
 * @param subject The program, for the message.
 * @throws {SandboxDeniedError} Naming the first such variable.
 */
export function checkDenoProgramEnv(
  env: Record<string, string> | undefined,
  subject: string,
): void {
  refuseEnv(
    env,
    subject,
    DENO_RUNTIME_ENV,
    'configures the Deno runtime, which a "deno" program may not set',
  );
}

/** Refuses the first variable whose name matches `names`, saying `why`. */
function refuseEnv(
  env: Record<string, string> | undefined,
  subject: string,
  names: RegExp,
  why: string,
): void {
  for (const name of Object.keys(env ?? {})) {
    if (names.test(name)) {
      throw new SandboxDeniedError(
        `Cannot start ${JSON.stringify(subject)}: env ${JSON.stringify(name)} ${why}`,
      );
    }
  }
}

const DENO_PERMISSION_NAMES = ["read", "write", "net", "env", "run", "sys", "ffi"] as const;

/** The most values one `denoPermissions` list may hold. */
export const MAX_DENO_PERMISSION_VALUES = 1024;

/**
 * Builds the `deno run` flags for a `deno`-confined program, refusing any
 * permission the executor does not hold itself. Programs in `run` are passed
 * as the absolute paths the executor would spawn ({@linkcode
 * resolveGrantedProgram}); under a net grant with hosts denied, a `net` value
 * must name one IP address and port.
 *
 * @param permissions What the program asks for.
 * @param module The module to run (its path is checked for read access).
 * @param cwd The directory relative paths are resolved against.
 * @returns The flags, `--no-prompt` and friends first.
 * @throws {TypeError} When a permission value is malformed.
 * @throws {RangeError} When a list holds too many values, or makes a flag
 * longer than {@linkcode MAX_ARG_STRING_BYTES}.
 * @throws {SandboxDeniedError} When the program asks for more than the executor holds.
 */
export async function denoRunFlags(
  permissions: DenoPermissions | undefined,
  module: string,
  cwd?: string,
): Promise<string[]> {
  const subject = `Cannot start Deno program ${JSON.stringify(module)}`;
  if (module.length === 0 || module.startsWith("-")) {
    throw new TypeError(`${subject}: the module must be a path or file URL`);
  }
  const modulePath = module.startsWith("file://")
    ? decodeURIComponent(new URL(module).pathname)
    : /^[a-z][a-z0-9+.-]*:/i.test(module)
    ? null
    : module.startsWith("/") || cwd === undefined
    ? module
    : joinPath(cwd, module);
  if (modulePath === null) {
    throw new TypeError(`${subject}: only local modules can be run`);
  }
  if (!(await isGrantedValue({ name: "read", path: modulePath }))) {
    throw new SandboxDeniedError(`${subject}: read access to the module is not granted`);
  }
  const flags = ["run", "--no-prompt", "--no-config", "--no-remote", "--no-npm", "--no-lock"];
  if (permissions === undefined || permissions === null) return flags;
  if (typeof permissions !== "object" || Array.isArray(permissions)) {
    throw new TypeError(`${subject}: denoPermissions is not an object`);
  }
  for (const key of Object.keys(permissions)) {
    if (!(DENO_PERMISSION_NAMES as readonly string[]).includes(key)) {
      throw new TypeError(`${subject}: unknown Deno permission "${key}"`);
    }
  }
  for (const name of DENO_PERMISSION_NAMES) {
    const asked = permissions[name];
    if (asked === undefined || asked === false) continue;
    if (asked === true) {
      // Not when partly denied: the program would get what the executor may not have.
      if (!(await isGranted({ name }))) {
        throw new SandboxDeniedError(
          `${subject}: ${name} access to everything is not granted to the executor`,
        );
      }
      flags.push(`--allow-${name}`);
      continue;
    }
    if (!Array.isArray(asked) || asked.length === 0) {
      throw new TypeError(`${subject}: denoPermissions.${name} must be true or a non-empty list`);
    }
    // Each value costs permission checks (and a path lookup) before the spawn.
    if (asked.length > MAX_DENO_PERMISSION_VALUES) {
      throw new RangeError(
        `${subject}: denoPermissions.${name} holds more than ${MAX_DENO_PERMISSION_VALUES} values`,
      );
    }
    const values: string[] = [];
    for (const raw of asked) {
      if (
        typeof raw !== "string" || raw.length === 0 || raw.includes(",") || raw.includes("\0") ||
        !raw.isWellFormed()
      ) {
        throw new TypeError(
          `${subject}: denoPermissions.${name} holds ${
            JSON.stringify(raw)
          }, not a non-empty well-formed string without commas`,
        );
      }
      if (name === "run") {
        values.push(await denoRunValue(raw, cwd, subject));
        continue;
      }
      const isPath = name === "read" || name === "write" || name === "ffi";
      const value = isPath && !raw.startsWith("/") && cwd !== undefined ? joinPath(cwd, raw) : raw;
      // The child's Deno checks the value as spelled; a deny spelled at the
      // link's target shows only when asking about the resolved path too.
      const resolved = isPath ? await realPathOrNull(value) : null;
      if (
        !(await queryOne(name, value)) ||
        (resolved !== null && resolved !== value && !(await queryOne(name, resolved)))
      ) {
        throw new SandboxDeniedError(
          `${subject}: ${name} access to ${JSON.stringify(value)} is not granted to the executor`,
        );
      }
      values.push(value);
    }
    const flag = `--allow-${name}=${values.join(",")}`;
    const bytes = utf8Length(flag);
    if (bytes > MAX_ARG_STRING_BYTES) {
      throw new RangeError(
        `${subject}: denoPermissions.${name} makes the flag --allow-${name}=… ${bytes} bytes ` +
          `long, over the ${MAX_ARG_STRING_BYTES} byte limit of one argument (Linux's ` +
          "MAX_ARG_STRLEN); grant fewer or shorter values (a parent directory, say)",
      );
    }
    flags.push(flag);
  }
  return flags;
}

/**
 * A program a `deno` program may run, as the path the executor itself would
 * spawn: the child's Deno would otherwise resolve a relative path against the
 * request's directory and a name with the request's `PATH`.
 */
async function denoRunValue(
  raw: string,
  cwd: string | undefined,
  subject: string,
): Promise<string> {
  // Under a whole run grant the executor may run anything, so pinning guards
  // nothing, and a pinned /usr/bin/sh would refuse the child's own PATH
  // finding /bin/sh: the value stays as asked.
  if ((await grantOf({ name: "run" })) === "whole") return raw;
  const program = await resolveGrantedProgram(raw, cwd);
  if (program === null) {
    throw new SandboxDeniedError(
      `${subject}: run access to ${JSON.stringify(raw)} is not granted to the executor`,
    );
  }
  // A bare name comes back only under a whole grant when PATH has no such file.
  if (!program.includes("/")) {
    throw new SandboxDeniedError(
      `${subject}: run: ${JSON.stringify(raw)} is not found in the executor's PATH`,
    );
  }
  return program;
}

/**
 * 0.0.0.0, [::] and IPv4-mapped IPv6 ([::ffff:…]): the first two reach this
 * host's loopback whatever a deny names, the last reaches an IPv4 address a
 * deny names in its IPv4 form.
 */
const UNSPECIFIED_HOST = /^(?:0\.0\.0\.0|\[[0:]*\]|\[[0:]*ffff:[^\]]*\]):/i;
/**
 * A net value Deno's answer covers exactly: one IP address (IPv4 in plain
 * decimal, or IPv6) and one port. Deno answers for a value as written, so
 * under `--allow-net --deny-net=X` it grants a range holding X
 * (`127.0.0.0/8`), a host name that resolves to X (Deno checks addresses
 * only on use) and a host without a port where X names one (every port).
 */
const ONE_NET_ENDPOINT =
  /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}|\[[0-9a-f:.]+\]):[1-9]\d{0,4}$/i;

async function queryOne(
  name: (typeof DENO_PERMISSION_NAMES)[number],
  value: string,
): Promise<boolean> {
  let descriptor: Deno.PermissionDescriptor;
  switch (name) {
    case "read":
    case "write":
    case "ffi":
      descriptor = { name, path: value };
      break;
    case "net": {
      const grant = await grantOf({ name: "net" });
      if (grant === "whole") return true;
      // A range is never granted by a scoped grant; under a partial one only a single endpoint is safe.
      if (
        value.includes("/") ||
        (grant === "partial" && (!ONE_NET_ENDPOINT.test(value) || UNSPECIFIED_HOST.test(value)))
      ) {
        return false;
      }
      descriptor = { name, host: value };
      break;
    }
    case "env":
      descriptor = { name, variable: value };
      break;
    case "run":
      descriptor = { name, command: value };
      break;
    case "sys":
      descriptor = { name, kind: value as Deno.SysPermissionDescriptor["kind"] };
      break;
  }
  return await isGrantedValue(descriptor);
}

function queryRun(command: string): Promise<boolean> {
  return isGrantedValue({ name: "run", command });
}

async function searchPath(): Promise<string> {
  const status = await Deno.permissions.query({ name: "env", variable: "PATH" });
  return (status.state === "granted" ? Deno.env.get("PATH") : undefined) ?? DEFAULT_SEARCH_PATH;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/**
 * Quotes a string for a POSIX shell command line.
 *
 * @param word The word.
 * @returns The quoted word.
 */
export function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}
