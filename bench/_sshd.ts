/**
 * A throwaway OpenSSH server for the peer comparison: Debian's `sshd` on a
 * free 127.0.0.1 port with a fresh host key, a fresh client key and an
 * `authorized_keys` file, all in a temporary directory that is removed when
 * the server stops. Nothing in `/etc/ssh` or `~/.ssh` is read or changed.
 *
 * Remote commands skip the login user's shell start-up files: sshd runs them
 * through the user's shell, and bash sources `~/.bashrc` when it sees it was
 * started by sshd, unless `SHLVL` is already set on entry (here root's
 * `~/.bashrc` runs `pyenv init`, 0.18–0.23 s per command). The client sends
 * `SHLVL=1` (`-o SetEnv=SHLVL=1`) and this server's config accepts it
 * (`AcceptEnv SHLVL`), so the figures are ssh's, not the shell's.
 *
 * @module
 */

import { makeTrackedTempDir, removeTrackedTempDir, spawnTracked } from "./_util.ts";

/** A running throwaway sshd and the client arguments that reach it. */
export interface ThrowawaySshd extends AsyncDisposable {
  /** The TCP port sshd listens on (127.0.0.1 only). */
  readonly port: number;
  /**
   * `ssh` arguments up to and including the destination; append the remote
   * command, e.g. `[...sshd.sshArgs, "true"]`.
   */
  readonly sshArgs: readonly string[];
  /**
   * A path in the server's temporary directory for a client's `ControlPath`
   * (connection sharing); removed with the directory.
   */
  readonly controlPath: string;
  /** Stops sshd and removes the temporary directory; idempotent. */
  stop(): Promise<void>;
}

const SSHD = "/usr/sbin/sshd";
const START_DEADLINE_MS = 10_000;

/**
 * Starts a throwaway sshd on 127.0.0.1.
 *
 * @param options `sshd`: path of the sshd binary (default `/usr/sbin/sshd`).
 * @returns The running server; stop it with `stop()` or `await using`.
 * @throws Error when sshd or ssh-keygen is missing or sshd does not come up;
 *   the message says why (the caller reports ssh as skipped with it).
 */
export async function startSshd(options: { sshd?: string } = {}): Promise<ThrowawaySshd> {
  const sshd = options.sshd ?? SSHD;
  try {
    await Deno.stat(sshd);
  } catch {
    throw new Error(`Cannot start sshd: ${sshd} is not installed`);
  }
  const dir = await makeTrackedTempDir("outpost_bench_sshd_");
  let child: Deno.ChildProcess | undefined;
  try {
    // Privilege separation needs its empty root-owned directory.
    await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 }).catch(() => {});
    await keygen(`${dir}/host_ed25519`);
    await keygen(`${dir}/client_ed25519`);
    await Deno.copyFile(`${dir}/client_ed25519.pub`, `${dir}/authorized_keys`);
    await Deno.chmod(`${dir}/authorized_keys`, 0o600);
    const port = await freePort();
    const config = [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${dir}/host_ed25519`,
      `PidFile ${dir}/sshd.pid`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      "UsePAM no",
      "StrictModes no",
      "PrintMotd no",
      "UseDNS no",
      // The client sends SHLVL=1 so that bash skips ~/.bashrc (see the module doc).
      "AcceptEnv SHLVL",
      "X11Forwarding no",
      "MaxStartups 200:30:400",
      "MaxSessions 100",
      "LogLevel ERROR",
    ].join("\n") + "\n";
    await Deno.writeTextFile(`${dir}/sshd_config`, config);
    child = spawnTracked(sshd, {
      args: ["-D", "-e", "-f", `${dir}/sshd_config`],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    });
    const stderr = collect(child.stderr);
    const sshArgs = [
      "-F",
      "/dev/null",
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "BatchMode=yes",
      "-o",
      "LogLevel=ERROR",
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "SetEnv=SHLVL=1",
      "-i",
      `${dir}/client_ed25519`,
      "-p",
      String(port),
      "root@127.0.0.1",
    ];
    const exited = child.status.then((s) => s);
    const deadline = Date.now() + START_DEADLINE_MS;
    let lastError = "no answer";
    while (true) {
      const probe = await Promise.resolve().then(() =>
        spawnTracked("ssh", {
          args: ["-o", "ConnectTimeout=2", ...sshArgs, "true"],
          stdin: "null",
          stdout: "null",
          stderr: "piped",
        }).output()
      ).catch((e) => ({ success: false, stderr: new TextEncoder().encode(String(e)) }));
      if (probe.success) break;
      lastError = new TextDecoder().decode(probe.stderr).trim() || "ssh failed";
      const done = await Promise.race([exited, delay(100).then(() => null)]);
      if (done !== null) {
        throw new Error(
          `Cannot start sshd: it exited with code ${done.code}: ${(await stderr).trim()}`,
        );
      }
      if (Date.now() > deadline) {
        throw new Error(`Cannot start sshd: no login within ${START_DEADLINE_MS} ms: ${lastError}`);
      }
    }
    const running = child;
    let stopped: Promise<void> | undefined;
    const stop = (): Promise<void> =>
      stopped ??= (async () => {
        try {
          running.kill("SIGTERM");
        } catch { /* already gone */ }
        await running.status;
        await stderr;
        await removeTrackedTempDir(dir);
      })();
    const controlPath = `${dir}/control`;
    return { port, sshArgs, controlPath, stop, [Symbol.asyncDispose]: stop };
  } catch (error) {
    if (child) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
    }
    await removeTrackedTempDir(dir);
    throw error;
  }
}

async function keygen(path: string): Promise<void> {
  const out = await Promise.resolve().then(() =>
    spawnTracked("ssh-keygen", {
      args: ["-q", "-t", "ed25519", "-N", "", "-C", "outpost-bench", "-f", path],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output()
  ).catch((e) => {
    throw new Error(`Cannot generate an ssh key: ${e}`);
  });
  if (!out.success) {
    throw new Error(`Cannot generate an ssh key: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

async function freePort(): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return await Promise.resolve(port);
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    if (text.length < 8192) text += decoder.decode(chunk, { stream: true });
  }
  return text;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
