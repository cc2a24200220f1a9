/**
 * The answer to `environment/info`: the shell a client should use, the
 * executor's working directory and platform, and the sandbox levels this
 * executor can really offer (probed, never assumed).
 *
 * @module
 */

import { type Capabilities, type Confinement, resolveGrantedProgram } from "./confinement.ts";

/** The shell a client should wrap commands in. */
export interface ShellInfo {
  /** Its name, e.g. `bash` or `sh`. */
  name: string;
  /** The absolute path the executor would spawn. */
  path: string;
}

/** What the executor's sandbox offers. */
export interface SandboxInfo {
  /** Confinement levels that work here (`none` always; `deno`, `os` when probed to work). */
  confinements: Confinement[];
  /** The weakest level a request may use. */
  minConfinement: Confinement;
  /** A whole process tree can be killed (the `kill` helper is granted and works). */
  treeKill: boolean;
  /** `tty: true` works (the `script` helper is granted and works). */
  tty: boolean;
  /** A terminal can be resized with `process/resize`. */
  resize: boolean;
  /**
   * The writing fs methods run inside the `os` sandbox (minimum confinement
   * `os`, bubblewrap works, and `bwrap`, `sh`, `cat`, `mkdir`, `rm` are
   * granted), so a directory swapped for a link cannot lead a write outside
   * the write roots. Under the `os` minimum a write whose helper is missing is
   * refused, never done unconfined.
   */
  confinedFs: boolean;
}

/** The result of `environment/info`. */
export interface EnvironmentInfo {
  /** The shell (upstream field). */
  shell: ShellInfo;
  /** The default working directory of processes (upstream field). */
  cwd: string;
  /** `Deno.build.os`, e.g. `linux`. */
  platform: string;
  /** Operating system details. */
  os: { name: string; arch: string; release: string | null };
  /** What the sandbox offers. */
  sandbox: SandboxInfo;
}

/** Options of {@linkcode environmentInfo}. */
export interface EnvironmentInfoOptions {
  /** The executor's default working directory. */
  cwd: string;
  /** The probed capabilities. */
  capabilities: Capabilities;
  /** The operator's minimum confinement. */
  minConfinement: Confinement;
  /** Whether fs writes run inside the `os` sandbox. @default {false} */
  confinedFs?: boolean;
}

async function envGranted(variable: string): Promise<boolean> {
  return (await Deno.permissions.query({ name: "env", variable })).state === "granted";
}

/**
 * Picks the shell: the executor's `$SHELL` when it may be run, else `bash`,
 * else `sh` (the first one run access is granted for).
 *
 * @returns The shell, or `sh` at `/bin/sh` when none is granted.
 */
export async function detectShell(): Promise<ShellInfo> {
  const candidates: string[] = [];
  if (await envGranted("SHELL")) {
    const shell = Deno.env.get("SHELL");
    if (shell && shell.startsWith("/")) candidates.push(shell);
  }
  candidates.push("bash", "sh");
  for (const candidate of candidates) {
    const path = await resolveGrantedProgram(candidate);
    if (path !== null) return { name: candidate.split("/").at(-1)!, path };
  }
  return { name: "sh", path: "/bin/sh" };
}

/**
 * Reads the operating system release when `--allow-sys=osRelease` is granted.
 *
 * @returns The release string or null.
 */
export async function osRelease(): Promise<string | null> {
  const state = (await Deno.permissions.query({ name: "sys", kind: "osRelease" })).state;
  if (state !== "granted") return null;
  try {
    return Deno.osRelease();
  } catch {
    return null;
  }
}

/**
 * Builds the `environment/info` result.
 *
 * @param options The executor's cwd, capabilities and minimum confinement.
 * @param shell The shell (from {@linkcode detectShell}).
 * @param release The OS release (from {@linkcode osRelease}).
 * @returns The info.
 */
export function environmentInfo(
  options: EnvironmentInfoOptions,
  shell: ShellInfo,
  release: string | null,
): EnvironmentInfo {
  const { capabilities } = options;
  return {
    shell,
    cwd: options.cwd,
    platform: Deno.build.os,
    os: { name: Deno.build.os, arch: Deno.build.arch, release },
    sandbox: {
      confinements: [...capabilities.confinements],
      minConfinement: options.minConfinement,
      treeKill: capabilities.treeKill,
      tty: capabilities.tty,
      resize: capabilities.resize,
      confinedFs: options.confinedFs ?? false,
    },
  };
}
