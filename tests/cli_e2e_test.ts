/**
 * End to end: the real `outpost` commands started as subprocesses with their
 * least-privilege permission sets (`deno run -P=<set> cli.ts ...`), talking
 * over real sockets on 127.0.0.1. Each test kills every subprocess it started.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createLogger } from "../lib/server/_logger.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { TcpProxy } from "./_support/tcp_proxy.ts";
import { dataFrame } from "./_support/frames.ts";
import { RelaySocket } from "../lib/relay/relay_socket.ts";
import { rawHttp, upgradeHead } from "./_support/raw_http.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const TOKEN = "e2e-token-0123456789abcdef";
const decoder = new TextDecoder();

/** Environment for subprocesses: enough to find Deno's cache, plus `extra`. */
function childEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const name of ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return { ...env, ...extra };
}

interface CliOptions {
  env?: Record<string, string>;
  stdin?: "piped" | "null";
  /** Hash stdout instead of keeping it (large transfers). */
  hashStdout?: boolean;
  /** Runs the `deno run ... cli.ts` argv through a wrapper (a shell pipeline, `script`). */
  via?: (argv: string[]) => string[];
}

/** One `cli.ts` subprocess with its output collected as it arrives. */
class Cli implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  #stdout: Uint8Array[] = [];
  stdoutBytes = 0;
  #stderr = "";
  #hash = createHash("sha256");
  #hashing: boolean;
  #changed: (() => void)[] = [];
  #pumps: Promise<void>;
  #status: Deno.CommandStatus | undefined;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(set: string, args: string[], options: CliOptions = {}) {
    this.#hashing = options.hashStdout ?? false;
    const argv = [Deno.execPath(), "run", "-q", `-P=${set}`, "cli.ts", ...args];
    const [program, ...programArgs] = options.via ? options.via(argv) : argv;
    this.child = new Deno.Command(program, {
      args: programArgs,
      cwd: ROOT,
      clearEnv: true,
      env: childEnv(options.env ?? {}),
      stdin: options.stdin ?? "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.status = this.child.status.then((status) => (this.#status = status));
    this.#pumps = Promise.all([
      this.#pump(this.child.stdout, (chunk) => {
        this.stdoutBytes += chunk.byteLength;
        if (this.#hashing) this.#hash.update(chunk);
        else this.#stdout.push(chunk);
      }),
      this.#pump(this.child.stderr, (chunk) => (this.#stderr += decoder.decode(chunk))),
    ]).then(() => {});
  }

  async #pump(stream: ReadableStream<Uint8Array>, sink: (chunk: Uint8Array) => void) {
    for await (const chunk of stream) {
      sink(chunk);
      for (const wake of this.#changed.splice(0)) wake();
    }
  }

  get stdout(): string {
    return decoder.decode(concat(this.#stdout));
  }

  get stdoutRaw(): Uint8Array {
    return concat(this.#stdout);
  }

  get stderr(): string {
    return this.#stderr;
  }

  digest(): string {
    return this.#hash.digest("hex");
  }

  /** Waits until `condition` holds on the output seen so far. */
  async waitFor(condition: () => boolean, ms: number, label: string): Promise<void> {
    const deadline = performance.now() + ms;
    while (!condition()) {
      if (this.#status !== undefined) {
        await this.#pumps;
        if (condition()) return;
        throw new Error(
          `Cannot see ${label}: the process exited with ${this.#status.code}; stderr:\n${this.#stderr}`,
        );
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new Error(`Cannot see ${label} within ${ms} ms; stderr:\n${this.#stderr}`);
      }
      await withDeadline(
        Promise.race([new Promise<void>((r) => this.#changed.push(r)), this.status]),
        left,
        label,
      ).catch(() => {});
    }
  }

  /** The first stdout line (the URL a server prints). */
  async firstLine(ms = 15_000): Promise<string> {
    await this.waitFor(() => this.stdout.includes("\n"), ms, "the printed URL");
    return this.stdout.split("\n")[0].trim();
  }

  /** Waits for the exit and for all output. */
  async finished(ms = 30_000): Promise<Deno.CommandStatus> {
    const status = await withDeadline(this.status, ms, "process exit");
    await this.#pumps;
    return status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#status === undefined) {
      try {
        this.child.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      const ended = await withDeadline(this.status, 5000, "graceful stop").then(
        () => true,
        () => false,
      );
      if (!ended) {
        try {
          this.child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }
    }
    await this.status;
    await this.#stdinClose();
    await this.#pumps;
  }

  async #stdinClose(): Promise<void> {
    try {
      await this.child.stdin.close();
    } catch {
      // Not piped, or already closed.
    }
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

async function startRendezvous(
  extraArgs: string[] = [],
): Promise<{ cli: Cli; url: string }> {
  const cli = new Cli("rendezvous", ["rendezvous", "--listen", "ws://127.0.0.1:0", ...extraArgs], {
    env: { OUTPOST_TOKEN: TOKEN },
  });
  return { cli, url: await cli.firstLine() };
}

function startExecutor(registry: string, executorId: string, token = TOKEN): Cli {
  return new Cli("executor", ["executor", "--registry", registry, "--executor-id", executorId], {
    env: { OUTPOST_TOKEN: token },
  });
}

async function waitConnected(executor: Cli): Promise<void> {
  await executor.waitFor(
    () => executor.stderr.includes("connected to rendezvous"),
    15_000,
    "the executor connecting",
  );
}

/**
 * A CLI rendezvous with a CLI executor connected to it as `executorId`.
 * Disposing stops the executor, then the rendezvous.
 */
async function startBox(executorId: string, rendezvousArgs: string[] = []): Promise<
  { rendezvous: { cli: Cli; url: string }; executor: Cli } & AsyncDisposable
> {
  const rendezvous = await startRendezvous(rendezvousArgs);
  const executor = startExecutor(rendezvous.url, executorId);
  const stop = async () => {
    await executor[Symbol.asyncDispose]();
    await rendezvous.cli[Symbol.asyncDispose]();
  };
  try {
    await waitConnected(executor);
  } catch (error) {
    await stop();
    throw error;
  }
  return { rendezvous, executor, [Symbol.asyncDispose]: stop };
}

function exec(args: string[], options: CliOptions = {}): Cli {
  return new Cli("client", ["exec", ...args], {
    ...options,
    env: { OUTPOST_TOKEN: TOKEN, ...options.env },
  });
}

/** Pids of live (not zombie) processes whose command line mentions `marker`. */
function pidsMentioning(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`);
      if (!cmdline.includes(marker)) continue;
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
      if (state !== "Z" && state !== "X") pids.push(Number(entry.name));
    } catch {
      // The process went away while we looked.
    }
  }
  return pids;
}

/** Kills what a failed test left behind (cleanup only; assertions come first). */
function killLeftovers(marker: string): void {
  for (const pid of pidsMentioning(marker)) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

/** Quotes `word` for a POSIX shell command line. */
function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** Runs `sh -c script` by exec on a fresh serve for `drive`; then the remote program must end. */
async function execLeavingNoProgram(
  script: string,
  options: CliOptions,
  drive: (run: Cli) => Promise<void>,
): Promise<void> {
  await using serve = new Cli("executor", ["serve"]);
  const url = await serve.firstLine();
  // An argument of the remote program, to find it in /proc.
  const marker = `outpost-e2e-${crypto.randomUUID()}`;
  try {
    const args = ["exec", "--url", url, "--log-level", "info", "--", "sh", "-c", script, marker];
    await using run = new Cli("client", args, options);
    await drive(run);
    // Left running, the program would go on until the session expires (30 s).
    await until(() => pidsMentioning(marker).length === 0, 5_000, "the remote program to end");
  } finally {
    killLeftovers(marker);
  }
}

/** A file of `bytes` pseudo-random bytes, and its SHA-256. */
async function makeBlob(bytes: number): Promise<{ dir: string; path: string; sha256: string }> {
  const dir = await Deno.makeTempDir({ prefix: "outpost_e2e_" });
  const path = `${dir}/blob`;
  const hash = createHash("sha256");
  const file = await Deno.open(path, { write: true, create: true });
  const piece = new Uint8Array(1024 * 1024);
  let state = 0x9e3779b9;
  for (let written = 0; written < bytes; written += piece.byteLength) {
    for (let i = 0; i < piece.length; i += 4) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      piece[i] = state & 0xff;
      piece[i + 1] = (state >>> 8) & 0xff;
      piece[i + 2] = (state >>> 16) & 0xff;
      piece[i + 3] = (state >>> 24) & 0xff;
    }
    hash.update(piece);
    let offset = 0;
    while (offset < piece.byteLength) offset += await file.write(piece.subarray(offset));
  }
  file.close();
  return { dir, path, sha256: hash.digest("hex") };
}

// ---------------------------------------------------------------------------

Deno.test("cli: exec through rendezvous to executor returns output and exit code", async () => {
  await using box = await startBox("box-1");
  const { rendezvous, executor } = box;
  await using run = exec([
    "--url",
    rendezvous.url,
    "--executor-id",
    "box-1",
    "--env",
    "GREETING=hello there",
    "--log-level",
    "info",
    "--",
    "sh",
    "-c",
    'echo "$GREETING"; echo to-stderr >&2; exit 3',
  ]);
  const status = await run.finished();
  assert.equal(run.stdout, "hello there\n");
  assert.match(run.stderr, /to-stderr\n/);
  assert.equal(status.code, 3, run.stderr);
  assert.match(run.stderr, /ended with exit 3/);
  assert.ok(!run.stderr.includes(TOKEN) && !executor.stderr.includes(TOKEN));
  assert.ok(!rendezvous.cli.stderr.includes(TOKEN));
});

Deno.test("cli: a harness that reaches a fresh rendezvous before its executor waits for it (restart grace)", async () => {
  // As after a rendezvous restart: the harness is back first. Within the
  // startup grace (the detach window) its stream waits instead of failing
  // executor_offline.
  const rendezvous = await startRendezvous(["--log-level", "debug"]);
  await using _r = rendezvous.cli;
  await using run = exec([
    "--url",
    rendezvous.url,
    "--executor-id",
    "box-late",
    "--",
    "sh",
    "-c",
    "echo late but served",
  ]);
  await rendezvous.cli.waitFor(
    () => /harness_attached.*box-late/.test(rendezvous.cli.stderr),
    15_000,
    "the harness attaching",
  );
  await using executor = startExecutor(rendezvous.url, "box-late");
  const status = await run.finished();
  assert.equal(status.code, 0, run.stderr);
  assert.equal(run.stdout, "late but served\n");
  assert.ok(!rendezvous.cli.stderr.includes(TOKEN));
  void executor;
});

Deno.test("cli: exec pipes stdin to the remote program and closes it at EOF", async () => {
  await using box = await startBox("box-stdin");
  const { rendezvous } = box;
  await using run = exec(
    ["--url", rendezvous.url, "--executor-id", "box-stdin", "--", "sh", "-c", "wc -c; cat"],
    { stdin: "piped" },
  );
  const input = new Uint8Array(300 * 1024).map((_, i) => 97 + (i % 26));
  const writer = run.child.stdin.getWriter();
  await writer.write(input);
  await writer.close();
  const status = await run.finished();
  assert.equal(status.code, 0, run.stderr);
  // wc consumed everything; cat then sees EOF at once.
  assert.equal(run.stdout.trim(), String(input.byteLength));
});

Deno.test("cli: Ctrl-C on exec reaches the remote program and exits 130", async () => {
  await using box = await startBox("box-int");
  const { rendezvous } = box;
  await using run = exec([
    "--url",
    rendezvous.url,
    "--executor-id",
    "box-int",
    "--",
    "sh",
    "-c",
    'trap "echo got-sigint; exit 130" INT; echo ready; while :; do sleep 0.05; done',
  ]);
  await run.waitFor(() => run.stdout.includes("ready"), 15_000, "the program starting");
  run.child.kill("SIGINT");
  const status = await run.finished(10_000);
  assert.equal(status.code, 130, run.stderr);
  assert.match(run.stdout, /got-sigint/);
});

Deno.test("cli: a 64 MiB output arrives byte-identical through the rendezvous", async () => {
  const blob = await makeBlob(64 * 1024 * 1024);
  try {
    await using box = await startBox("box-big");
    const { rendezvous } = box;
    await using run = exec(
      ["--url", rendezvous.url, "--executor-id", "box-big", "--", "cat", blob.path],
      { hashStdout: true },
    );
    const status = await run.finished(60_000);
    assert.equal(status.code, 0, run.stderr);
    assert.equal(run.stdoutBytes, 64 * 1024 * 1024);
    assert.equal(run.digest(), blob.sha256);
  } finally {
    await Deno.remove(blob.dir, { recursive: true });
  }
});

Deno.test("cli: exec against serve runs a program on the local executor", async () => {
  await using serve = new Cli("executor", ["serve"]);
  const url = await serve.firstLine();
  assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+/);
  await using run = new Cli("client", [
    "exec",
    "--url",
    url,
    "--",
    "sh",
    "-c",
    "echo local; echo to-stderr >&2; exit 0",
  ]);
  const status = await run.finished();
  assert.equal(status.code, 0, run.stderr);
  assert.equal(run.stdout, "local\n");
  assert.equal(run.stderr, "to-stderr\n", "at the default level stderr is the program's alone");
});

Deno.test("cli: serve stopped by SIGTERM ends its programs first: their last output and exit code reach exec", async () => {
  await using serve = new Cli("executor", ["serve"]);
  const url = await serve.firstLine();
  await using run = exec([
    "--url",
    url,
    "--",
    "sh",
    "-c",
    'trap "echo got term; exit 9" TERM; echo before; while :; do sleep 0.1; done',
  ]);
  await run.waitFor(() => run.stdout.includes("before\n"), 10_000, "the program running");
  serve.child.kill("SIGTERM");
  const status = await run.finished();
  assert.equal(run.stdout, "before\ngot term\n", run.stderr);
  assert.equal(status.code, 9, run.stderr);
  assert.equal((await serve.finished()).code, 0, serve.stderr);
});

Deno.test("cli: serve stopped by SIGTERM while its program prints 3 MB as it stops: 1 MiB of it, the count of the rest and the exit code reach exec", async () => {
  await using serve = new Cli("executor", ["serve"]);
  const url = await serve.firstLine();
  const total = 3_000_000;
  await using run = exec([
    "--url",
    url,
    "--",
    "sh",
    "-c",
    `trap "head -c ${total} /dev/zero; exit 5" TERM; echo before; while :; do sleep 0.1; done`,
  ]);
  await run.waitFor(() => run.stdout.includes("before\n"), 10_000, "the program running");
  serve.child.kill("SIGTERM");
  const status = await run.finished();
  assert.equal(status.code, 5, run.stderr);
  const sent = run.stdoutBytes - "before\n".length;
  assert.ok(sent > 0 && sent <= 1024 * 1024, `${sent} B sent while serve stopped`);
  const dropped = run.stderr.match(
    /WARN {2}outpost exec: (\d+) B of output were dropped as the executor stopped\n/,
  );
  assert.ok(dropped, run.stderr);
  assert.equal(sent + Number(dropped[1]), total, "what was sent and what was dropped add up");
  assert.equal((await serve.finished()).code, 0, serve.stderr);
});

Deno.test("cli: credentials in exec's --url or executor's --registry are a usage error that does not print them", async () => {
  await using run = exec(["--url", "ws://user:hunter2pw@127.0.0.1:9", "--", "true"]);
  assert.equal((await run.finished()).code, 2, run.stderr);
  assert.match(run.stderr, /^Cannot use --url: it must not carry credentials \(user:password@\)/);
  await using executor = startExecutor("ws://user:hunter2pw@127.0.0.1:9", "box-cred");
  assert.equal((await executor.finished()).code, 2, executor.stderr);
  assert.match(executor.stderr, /Cannot use registry URL: it must not carry credentials/);
  for (const log of [run.stderr, executor.stderr]) assert.doesNotMatch(log, /hunter2pw/);
  // Nor when the password makes the URL unparsable, or the scheme is wrong too.
  for (
    const url of [
      "ws://user:hunter2/pw@127.0.0.1:9",
      "ws:user:hunter2/pw@127.0.0.1:9",
      "ws://user:a@b:hunter2/pw@127.0.0.1:9",
      "ftp://user:hunter2pw@127.0.0.1:9",
      "user:hunter2pw@127.0.0.1:9",
    ]
  ) {
    await using bad = exec(["--url", url, "--", "true"]);
    assert.equal((await bad.finished()).code, 2, bad.stderr);
    assert.doesNotMatch(bad.stderr, /hunter2/);
    await using badRegistry = startExecutor(url, "box-cred");
    assert.equal((await badRegistry.finished()).code, 2, badRegistry.stderr);
    assert.doesNotMatch(badRegistry.stderr, /hunter2/);
  }
});

Deno.test("cli: serve --max-sessions and --max-processes hold the executor to them, and refuse what is not a positive integer", async () => {
  for (const [flag, value] of [["--max-sessions", "0"], ["--max-processes", "1.5"]]) {
    await using bad = new Cli("executor", ["serve", flag, value]);
    assert.equal((await bad.finished()).code, 2, bad.stderr);
    assert.ok(
      bad.stderr.startsWith(`Cannot use ${flag} ${value}: expected a positive integer`),
      bad.stderr,
    );
  }
  const program = ["--", "sh", "-c", "echo ready; sleep 30"];
  for (
    const [flag, refusal] of [
      ["--max-sessions", /the limit of 1 session is reached/],
      ["--max-processes", /the executor-wide limit of 1 process is reached/],
    ] as const
  ) {
    await using serve = new Cli("executor", ["serve", flag, "1"]);
    const url = await serve.firstLine();
    await using first = exec(["--url", url, ...program]);
    await first.waitFor(() => first.stdout.includes("ready\n"), 10_000, "the first program");
    await using second = exec(["--url", url, ...program]);
    assert.equal((await second.finished()).code, 255, second.stderr);
    assert.match(second.stderr, refusal);
  }
});

Deno.test("cli: serve --initialize-timeout-ms closes a connection that has not initialized by then, and refuses what is not a timer's delay", async () => {
  await using bad = new Cli("executor", ["serve", "--initialize-timeout-ms", "0"]);
  assert.equal((await bad.finished()).code, 2, bad.stderr);
  assert.ok(
    bad.stderr.startsWith(
      "Cannot use --initialize-timeout-ms 0: expected an integer from 1 to 2147483647",
    ),
    bad.stderr,
  );
  await using serve = new Cli("executor", ["serve", "--initialize-timeout-ms", "300"]);
  const ws = new WebSocket(await serve.firstLine());
  const closed = new Promise<CloseEvent>((resolve) => (ws.onclose = resolve));
  const event = await withDeadline(closed, 10_000, "the idle connection closed");
  assert.equal(event.code, 1008);
  assert.equal(event.reason, "Cannot serve: no initialize within 300 ms");
});

Deno.test("cli: serve stopped by SIGTERM exits though a client no longer answers", async () => {
  await using serve = new Cli("executor", ["serve"]);
  const url = new URL(await serve.firstLine());
  // A WebSocket client that upgrades, then neither reads nor answers a close.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(url.port) });
  try {
    await conn.write(new TextEncoder().encode(upgradeHead("/") + "\r\n\r\n"));
    const head = new Uint8Array(1024);
    assert.ok((await withDeadline(conn.read(head), 5_000, "the upgrade")) !== null);
    assert.match(new TextDecoder().decode(head), /^HTTP\/1\.1 101/);
    serve.child.kill("SIGTERM");
    assert.equal((await serve.finished(10_000)).code, 0, serve.stderr);
  } finally {
    conn.close();
  }
});

Deno.test("cli: exec prints a refused start once, and a missing --cwd as -32004 naming it", async () => {
  await using serve = new Cli("executor", ["serve"]);
  const url = await serve.firstLine();
  // The executor permission set does not grant run access to tr.
  await using refused = new Cli("client", ["exec", "--url", url, "--", "tr", "a", "b"]);
  assert.equal((await refused.finished()).code, 255, refused.stderr);
  assert.match(
    refused.stderr,
    /ERROR Cannot start "tr": run access is not granted \(code -32003\)\n/,
  );
  assert.doesNotMatch(refused.stderr, /Cannot start tr:/);
  const cwd = `/nonexistent-outpost-${crypto.randomUUID()}`;
  await using missing = new Cli("client", ["exec", "--url", url, "--cwd", cwd, "--", "true"]);
  assert.equal((await missing.finished()).code, 255, missing.stderr);
  assert.match(
    missing.stderr,
    new RegExp(
      `ERROR Cannot start "true": working directory "${cwd}" does not exist \\(code -32004\\)\\n`,
    ),
  );
});

Deno.test("cli: a Ctrl-C whose program ends before the executor answers it is no warning", async () => {
  // A scripted executor (the far side): process/signal ends the program at
  // once and its answer never comes, as when the program dies of the signal
  // before the executor replies and exec then closes the connection.
  const started = Promise.withResolvers<void>();
  const signals: unknown[] = [];
  const closed = Promise.withResolvers<void>();
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    const send = (message: unknown): void => socket.send(JSON.stringify(message));
    socket.onclose = () => closed.resolve();
    socket.onmessage = (event) => {
      const { id, method, params } = JSON.parse(event.data);
      if (id === undefined) return;
      if (method === "initialize") send({ jsonrpc: "2.0", id, result: { sessionId: "s1" } });
      else if (method === "process/start") {
        send({ jsonrpc: "2.0", id, result: { processId: params.processId } });
        started.resolve();
      } else if (method === "process/write") {
        send({ jsonrpc: "2.0", id, result: { status: "accepted" } });
      } else if (method === "process/signal") {
        signals.push(params.signal);
        const processId = params.processId;
        send({
          jsonrpc: "2.0",
          method: "process/exited",
          params: { processId, seq: 1, exitCode: 130, signal: "SIGINT" },
        });
        send({ jsonrpc: "2.0", method: "process/closed", params: { processId, seq: 2 } });
      } else send({ jsonrpc: "2.0", id, error: { code: -32601, message: `no ${method}` } });
    };
    return response;
  });
  await using run = new Cli("client", [
    "exec",
    "--url",
    `ws://127.0.0.1:${server.addr.port}`,
    "--log-level",
    "info",
    "--",
    "sleep",
    "30",
  ]);
  await withDeadline(started.promise, 15_000, "process/start");
  run.child.kill("SIGINT");
  const status = await run.finished(10_000);
  await withDeadline(closed.promise, 5_000, "the socket closing");
  assert.deepEqual(signals, ["SIGINT"]);
  assert.equal(status.code, 130, run.stderr);
  assert.match(run.stderr, /sleep ended with signal SIGINT \(exit 130\)/);
  assert.doesNotMatch(run.stderr, /WARN|cannot forward signal/);
});

Deno.test("cli: exec --tty runs the program under a terminal and forwards stdin", async () => {
  await using serve = new Cli("executor", ["serve"]);
  const url = await serve.firstLine();
  await using run = new Cli("client", [
    "exec",
    "--url",
    url,
    "--tty",
    "--",
    "sh",
    "-c",
    "test -t 0 && test -t 1 && echo is-a-tty; read line; echo got:$line",
  ], { stdin: "piped" });
  const writer = run.child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("hello\n"));
  await writer.close();
  const status = await run.finished();
  assert.equal(status.code, 0, run.stderr);
  assert.match(run.stdout, /is-a-tty\r?\n/);
  assert.match(run.stdout, /got:hello\r?\n/);
});

Deno.test("cli: exec piped into a reader that closes early exits 141 and stops the program", async () => {
  // As `yes | head -n 1`: the program writes on after head has gone.
  await execLeavingNoProgram("while :; do echo line; sleep 0.05; done", {
    via: (argv) => [
      "bash",
      "-c",
      '"$@" | head -n 1; echo "exec exited ${PIPESTATUS[0]}"',
      "bash",
      ...argv,
    ],
  }, async (run) => {
    assert.equal((await run.finished()).code, 0, run.stderr);
    assert.equal(run.stdout, "line\nexec exited 141\n", run.stderr);
    assert.match(run.stderr, /stdout is a closed pipe; stopped sh with SIGTERM/);
  });
});

Deno.test("cli: exec whose stdout cannot be written (/dev/full) stops the program and exits 1", async () => {
  await execLeavingNoProgram("while :; do echo line; sleep 0.05; done", {
    via: (argv) => ["bash", "-c", '"$@" >/dev/full; echo "exec exited $?"', "bash", ...argv],
  }, async (run) => {
    assert.equal((await run.finished()).code, 0, run.stderr);
    assert.equal(run.stdout, "exec exited 1\n", run.stderr);
    assert.match(
      run.stderr,
      /Cannot write to stdout: No space left on device \(os error 28\); stopped sh with SIGTERM/,
    );
  });
});

/**
 * SIGINTs closer together than this count as one Ctrl-C in `exec` (cli.ts's
 * INTERRUPT_REPEAT_MS, 200 ms, with room): separate presses must be further apart.
 */
const PRESS_GAP_MS = 300;

/** Waits until `since` lies a press gap behind (the rule under test is timed). */
async function pastPressGap(since: number): Promise<void> {
  const left = PRESS_GAP_MS - (performance.now() - since);
  if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
}

Deno.test("cli: a third Ctrl-C kills a program that traps SIGINT and exits 130", async () => {
  const program = 'trap "echo got-int" INT; echo ready; while :; do sleep 0.05; done';
  await execLeavingNoProgram(program, {}, async (run) => {
    await run.waitFor(() => run.stdout.includes("ready"), 15_000, "the program starting");
    // Each gap counts from when the program showed the press (exec handled it
    // by then), not from the send, which a loaded exec may handle late.
    let seenAt = -Infinity;
    for (let i = 1; i <= 2; i++) {
      await pastPressGap(seenAt);
      run.child.kill("SIGINT");
      await run.waitFor(
        () => (run.stdout.match(/got-int/g)?.length ?? 0) >= i,
        10_000,
        `interrupt ${i} reaching the program`,
      );
      seenAt = performance.now();
    }
    await pastPressGap(seenAt);
    run.child.kill("SIGINT");
    assert.equal((await run.finished(10_000)).code, 130, run.stderr);
    assert.match(run.stderr, /third interrupt: killing the program/);
  });
});

Deno.test("cli: a Ctrl-C that reaches exec twice at once (as deno task passes it on) counts as one press", async () => {
  // The program answers each stdin line, so it can show it is still there.
  const program =
    'trap "echo got-int" INT; echo ready; while :; do if read -r line; then echo "pong $line"; fi; done';
  await execLeavingNoProgram(program, { stdin: "piped" }, async (run) => {
    await run.waitFor(() => run.stdout.includes("ready"), 15_000, "the program starting");
    const writer = run.child.stdin.getWriter();
    // Press 1 arrives twice, 40 ms apart (back to back, Deno would see one
    // signal), press 2 once: two presses, not three.
    run.child.kill("SIGINT");
    await new Promise((resolve) => setTimeout(resolve, 40));
    run.child.kill("SIGINT");
    await run.waitFor(() => run.stdout.includes("got-int"), 10_000, "press 1");
    await pastPressGap(performance.now());
    run.child.kill("SIGINT");
    await run.waitFor(
      () => (run.stdout.match(/got-int/g)?.length ?? 0) >= 2,
      10_000,
      "press 2",
    );
    await pastPressGap(performance.now());
    // Still running: counted as a third press, the program would have been killed.
    await writer.write(new TextEncoder().encode("alive\n"));
    await run.waitFor(() => run.stdout.includes("pong alive"), 10_000, "the program answering");
    assert.doesNotMatch(run.stderr, /third interrupt/);
    run.child.kill("SIGINT");
    assert.equal((await run.finished(10_000)).code, 130, run.stderr);
    assert.match(run.stderr, /third interrupt: killing the program/);
    writer.releaseLock();
  });
});

Deno.test("cli: exec kills a program that outlives a SIGTERM by 2 s (SIGKILL, exit 137: timeout, service managers)", async () => {
  const program = 'trap "echo got-term" TERM; echo ready; while :; do sleep 0.05; done';
  await execLeavingNoProgram(program, {}, async (run) => {
    await run.waitFor(() => run.stdout.includes("ready"), 15_000, "the program starting");
    run.child.kill("SIGTERM");
    await run.waitFor(
      () => run.stdout.includes("got-term"),
      10_000,
      "SIGTERM reaching the program",
    );
    assert.equal((await run.finished(15_000)).code, 137, run.stderr);
    assert.match(run.stderr, /no end of the program seen 2000 ms after SIGTERM: SIGKILL/);
  });
});

Deno.test("cli: exec --tty gives the program the local terminal's size and forwards SIGWINCH", async () => {
  await using serve = new Cli("executor", ["serve"]);
  const url = await serve.firstLine();
  // stty sets columns and rows in two steps, each with its SIGWINCH: the first shows 40 100.
  const program =
    `trap 's=$(stty size); echo resized-to $s; [ "$s" = "30 100" ] && exit 0' WINCH; ` +
    "echo started-at $(stty size); while :; do sleep 0.05; done";
  // exec runs in a 120x40 terminal of its own (script's), which this test can resize.
  await using run = new Cli("client", ["exec", "--url", url, "--tty", "--", "sh", "-c", program], {
    stdin: "piped",
    via: (argv) => [
      "script",
      "-qfec",
      `tty; stty cols 120 rows 40; exec ${argv.map(shellQuote).join(" ")}`,
      "/dev/null",
    ],
  });
  await run.waitFor(() => /started-at \d+ \d+/.test(run.stdout), 15_000, "the program starting");
  assert.match(run.stdout, /started-at 40 120/);
  const device = run.stdout.split(/\r?\n/)[0].trim();
  assert.match(device, /^\/dev\/pts\/\d+$/);
  // Resizing a terminal sends SIGWINCH to its foreground processes, exec among them.
  const resized = await new Deno.Command("stty", {
    args: ["-F", device, "cols", "100", "rows", "30"],
  }).output();
  assert.equal(resized.code, 0, decoder.decode(resized.stderr));
  await run.waitFor(() => run.stdout.includes("resized-to 30 100"), 10_000, "the new size");
  assert.equal((await run.finished()).code, 0, run.stdout);
});

Deno.test("cli: exec --tty sends a resize that came while the program was starting (before exec listened for SIGWINCH)", async () => {
  // A fake executor (the far side) that holds the start's reply until the test has resized
  // exec's terminal, and records every request.
  const requests: { method: string; params: Record<string, unknown> }[] = [];
  let releaseStart!: () => void;
  const startHeld = new Promise<void>((resolve) => releaseStart = resolve);
  let startSeen!: () => void;
  const startArrived = new Promise<void>((resolve) => startSeen = resolve);
  let resizeSeen!: () => void;
  const resizeArrived = new Promise<void>((resolve) => resizeSeen = resolve);
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onmessage = async (event) => {
      const message = JSON.parse(event.data as string);
      if (message.id === undefined) return;
      requests.push({ method: message.method, params: message.params ?? {} });
      const reply = (result: unknown) => socket.send(JSON.stringify({ id: message.id, result }));
      if (message.method === "initialize") return reply({ sessionId: "fake" });
      if (message.method === "process/start") {
        startSeen();
        await startHeld;
        return reply({});
      }
      reply({});
      if (message.method === "process/resize") {
        resizeSeen();
        const processId = message.params.processId;
        for (const [method, seq] of [["process/exited", 1], ["process/closed", 2]] as const) {
          socket.send(JSON.stringify({ method, params: { processId, seq, exitCode: 0 } }));
        }
      }
    };
    return response;
  });
  const url = `ws://127.0.0.1:${server.addr.port}`;
  await using run = new Cli("client", ["exec", "--url", url, "--tty", "--", "true"], {
    stdin: "piped",
    via: (argv) => [
      "script",
      "-qfec",
      `tty; stty cols 120 rows 40; exec ${argv.map(shellQuote).join(" ")}`,
      "/dev/null",
    ],
  });
  await withDeadline(startArrived, 15_000, "the start");
  await run.waitFor(() => /\/dev\/pts\/\d+/.test(run.stdout), 5_000, "the terminal's name");
  const start = requests.find((each) => each.method === "process/start")!;
  assert.deepEqual([start.params.cols, start.params.rows], [120, 40]);
  const device = run.stdout.split(/\r?\n/)[0].trim();
  assert.match(device, /^\/dev\/pts\/\d+$/);
  const resized = await new Deno.Command("stty", {
    args: ["-F", device, "cols", "100", "rows", "30"],
  }).output();
  assert.equal(resized.code, 0, decoder.decode(resized.stderr));
  releaseStart();
  await withDeadline(resizeArrived, 10_000, "the resize after the start");
  const resize = requests.find((each) => each.method === "process/resize")!;
  assert.deepEqual([resize.params.cols, resize.params.rows], [100, 30]);
  assert.equal((await run.finished()).code, 0, run.stderr);
});

Deno.test("cli: exec --confinement deno runs a Deno module on a serve that requires it; without it the refusal names the program", async () => {
  await using serve = new Cli("executor", ["serve", "--min-confinement", "deno"]);
  const url = await serve.firstLine();
  const dir = await Deno.makeTempDir({ prefix: "outpost_e2e_" });
  try {
    await Deno.writeTextFile(`${dir}/hello.ts`, 'console.log("hello from deno");\n');
    await using refused = exec(["--url", url, "--", "sh", "-c", "true"]);
    assert.equal((await refused.finished()).code, 255, refused.stderr);
    assert.match(
      refused.stderr,
      /Cannot start "sh" \(process "[^"]+"\): the executor requires "deno" confinement, .*--confinement deno/,
    );
    await using run = exec(["--url", url, "--confinement", "deno", "--", `${dir}/hello.ts`]);
    assert.equal((await run.finished()).code, 0, run.stderr);
    assert.equal(run.stdout, "hello from deno\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: bad exec flag values are usage errors (exit 2), as missing ones are", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["--url", "ws://127.0.0.1:1", "--executor-id", "bad id", "--", "true"],
      /Cannot use executor id "bad id": only 1\.\.256 ASCII letters/,
    ],
    [["--url", "not a url", "--", "true"], /Cannot use --url not a url: it is not a URL/],
    [["--url", "ftp://127.0.0.1:1", "--", "true"], /the scheme must be ws, wss, http or https/],
    [
      ["--url", "ws://127.0.0.1:1", "--cwd", "relative/dir", "--", "true"],
      /Cannot use --cwd relative\/dir: it must be an absolute path/,
    ],
    [
      ["--url", "ws://127.0.0.1:1", "--confinement", "strict", "--", "true"],
      /Cannot use --confinement strict: expected none, deno or os/,
    ],
  ];
  for (const [args, message] of cases) {
    await using run = exec(args);
    assert.equal((await run.finished()).code, 2, run.stderr);
    assert.match(run.stderr, message);
    assert.match(run.stderr, /Run "outpost exec --help" for usage/);
  }
});

Deno.test("cli: serve refuses web pages (an Origin header) except --allow-origin ones", async () => {
  await using serve = new Cli("executor", ["serve", "--allow-origin", "https://tool.example"]);
  const port = Number(new URL(await serve.firstLine()).port);
  const page = await rawHttp(port, upgradeHead("/", ["Origin: https://evil.example"]));
  assert.equal(page.status, 403);
  assert.match(page.body, /forbidden_origin/);
  assert.equal(
    (await rawHttp(port, upgradeHead("/", ["Origin: https://tool.example"]))).status,
    101,
  );
});

Deno.test("cli: serve refuses a non-loopback --listen without --allow-remote", async () => {
  await using refused = new Cli("executor", ["serve", "--listen", "ws://0.0.0.0:0"]);
  const status = await refused.finished();
  assert.equal(status.code, 2);
  assert.match(
    refused.stderr,
    /Cannot listen on ws:\/\/0\.0\.0\.0:0: 0\.0\.0\.0 is not a loopback address; pass --allow-remote/,
  );
  await using noToken = new Cli("executor", [
    "serve",
    "--listen",
    "ws://0.0.0.0:0",
    "--allow-remote",
  ]);
  assert.equal((await noToken.finished()).code, 2);
  assert.match(noToken.stderr, /with --allow-remote: set OUTPOST_TOKEN or --token-file/);
});

Deno.test("cli: serve and executor refuse a --write-root that would not take effect", async () => {
  // The library drops such a root silently; the operator must hear of it at start.
  const listen = ["--listen", "ws://127.0.0.1:0"];
  const cases: [string[], RegExp][] = [
    [
      ["serve", ...listen, "--write-root", "/nonexistent-xyz"],
      /^Cannot use --write-root \/nonexistent-xyz: it does not exist\n/,
    ],
    [
      ["serve", ...listen, "--write-root", "/etc/hostname"],
      /^Cannot use --write-root \/etc\/hostname: it is not a directory\n/,
    ],
    // The executor permission set grants write to the checkout's workspace/ only: not to
    // the executor's own code and permission sets, which a harness could otherwise rewrite.
    [
      ["serve", ...listen, "--write-root", `${ROOT}workspace`, "--write-root", "/var/tmp"],
      /^Cannot use --write-root \/var\/tmp: write access to it is not granted; add --allow-write=\/var\/tmp to the deno command\n/,
    ],
    [
      ["serve", ...listen, "--write-root", ROOT],
      /^Cannot use --write-root \S+: write access to it is not granted/,
    ],
    [
      [
        "executor",
        "--registry",
        "http://127.0.0.1:1",
        "--executor-id",
        "e",
        "--write-root",
        "/nonexistent-xyz",
      ],
      /^Cannot use --write-root \/nonexistent-xyz: it does not exist\n/,
    ],
    // So does a --cwd that every program's start would fail on.
    [
      ["serve", ...listen, "--cwd", "/nonexistent-xyz"],
      /^Cannot use --cwd \/nonexistent-xyz: it does not exist\n/,
    ],
    [
      ["serve", ...listen, "--cwd", "/etc/hostname"],
      /^Cannot use --cwd \/etc\/hostname: it is not a directory\n/,
    ],
    [["serve", ...listen, "--cwd", "tmp"], /^Cannot use --cwd tmp: it must be an absolute path\n/],
  ];
  for (const [args, message] of cases) {
    await using cli = new Cli("executor", args, { env: { OUTPOST_TOKEN: TOKEN } });
    assert.equal((await cli.finished()).code, 2, `${args.join(" ")}: ${cli.stderr}`);
    assert.match(cli.stderr, message);
  }
});

Deno.test("cli: a wrong token at registration is fatal and not retried", async () => {
  const rendezvous = await startRendezvous();
  await using _r = rendezvous.cli;
  await using executor = startExecutor(rendezvous.url, "box-bad", "wrong-token-0123456789abcdef");
  const status = await executor.finished(15_000);
  assert.equal(status.code, 1);
  assert.match(
    executor.stderr,
    /Cannot register executor box-bad: the registry refused the token \(403 forbidden\): Cannot register: the token is not valid/,
  );
  assert.ok(!executor.stderr.includes("retrying"));
  assert.ok(!executor.stderr.includes("wrong-token-0123456789abcdef"));
});

Deno.test("cli: a wrong token at the harness socket is refused", async () => {
  await using box = await startBox("box-h");
  const { rendezvous } = box;
  await using run = exec(
    ["--url", rendezvous.url, "--executor-id", "box-h", "--", "true"],
    { env: { OUTPOST_TOKEN: "wrong-token-0123456789abcdef" } },
  );
  const status = await run.finished();
  assert.equal(status.code, 255);
  assert.match(run.stderr, /the rendezvous refused the token \(HTTP 403\)/);
  assert.ok(!run.stderr.includes("wrong-token-0123456789abcdef"));
});

Deno.test("cli: tampered and expired signed URLs are refused with the documented errors", async () => {
  const rendezvous = await startRendezvous(["--url-ttl-ms", "1000"]);
  await using _r = rendezvous.cli;
  const registry = rendezvous.url.replace(/^ws:/, "http:");
  const register = async () => {
    const response = await fetch(`${registry}/cloud/executor/box-sig/register`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(response.status, 200);
    return (await response.json()).url as string;
  };
  const probe = async (url: string) => {
    const response = await fetch(url.replace(/^ws:/, "http:"));
    return { status: response.status, body: await response.json() };
  };
  const signed = new URL(await register());
  const tampered = new URL(signed);
  const sig = tampered.searchParams.get("sig")!;
  tampered.searchParams.set("sig", (sig[0] === "A" ? "B" : "A") + sig.slice(1));
  assert.deepEqual(await probe(tampered.href), {
    status: 403,
    body: {
      error: {
        code: "bad_signature",
        message: "Cannot open executor socket: the URL signature is not valid",
      },
    },
  });
  const moved = new URL(signed);
  moved.searchParams.set("exp", String(Number(signed.searchParams.get("exp")) + 60_000));
  assert.equal((await probe(moved.href)).body.error.code, "bad_signature");
  const unsigned = new URL(signed);
  unsigned.search = "?role=executor";
  assert.equal((await probe(unsigned.href)).status, 401);
  // Let the 1000 ms lifetime pass (the expiry is a wall-clock time in the URL).
  const exp = Number(signed.searchParams.get("exp"));
  await until(() => Date.now() > exp + 5, 5000, "the URL to expire");
  assert.deepEqual(await probe(signed.href), {
    status: 401,
    body: {
      error: {
        code: "url_expired",
        message: "Cannot open executor socket: the signed URL has expired; register again",
      },
    },
  });
});

Deno.test("cli: the executor keeps retrying when its signed URL is refused", async () => {
  const rendezvous = await startRendezvous();
  await using _r = rendezvous.cli;
  const target = new URL(rendezvous.url);
  // A registry front that spoils the signature of the first two answers.
  let registrations = 0;
  const front = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const upstream = await fetch(`http://${target.host}${new URL(request.url).pathname}`, {
        method: request.method,
        headers: request.headers,
        body: await request.arrayBuffer(),
      });
      const body = await upstream.json();
      registrations++;
      if (registrations <= 2 && typeof body.url === "string") {
        const url = new URL(body.url);
        url.searchParams.set("sig", "AAAA" + url.searchParams.get("sig")!.slice(4));
        body.url = url.href;
      }
      return Response.json(body, { status: upstream.status });
    },
  );
  try {
    await using executor = startExecutor(`http://127.0.0.1:${front.addr.port}`, "box-retry");
    await waitConnected(executor);
    assert.equal(registrations, 3);
    assert.equal(executor.stderr.match(/retrying/g)?.length, 2);
    // The retry says what the rendezvous answered, and the signature stays out of the log.
    assert.match(
      executor.stderr,
      /retrying .*error="Cannot connect executor socket to ws:\/\/127\.0\.0\.1:\d+\/executor\/box-retry: the rendezvous refused it with HTTP 403( bad_signature: [^"]*)?"/,
    );
    assert.doesNotMatch(executor.stderr, /sig=[0-9a-f]/);
    await using run = exec([
      "--url",
      rendezvous.url,
      "--executor-id",
      "box-retry",
      "--",
      "sh",
      "-c",
      "echo ok",
    ]);
    assert.equal((await run.finished()).code, 0, run.stderr);
    assert.equal(run.stdout, "ok\n");
  } finally {
    await front.shutdown();
  }
});

Deno.test("cli: a transfer completes intact after the executor's socket is cut", async () => {
  const blob = await makeBlob(48 * 1024 * 1024);
  try {
    const rendezvous = await startRendezvous();
    await using _r = rendezvous.cli;
    await using proxy = new TcpProxy(Number(new URL(rendezvous.url).port));
    // Registering through the proxy makes the signed URL point at the proxy too.
    await using executor = startExecutor(`ws://127.0.0.1:${proxy.port}`, "box-cut");
    await waitConnected(executor);
    await using run = exec(
      [
        "--url",
        rendezvous.url,
        "--executor-id",
        "box-cut",
        "--",
        "sh",
        "-c",
        `head -c 8388608 ${blob.path}; sleep 1; tail -c +8388609 ${blob.path}`,
      ],
      { hashStdout: true },
    );
    await run.waitFor(() => run.stdoutBytes >= 4 * 1024 * 1024, 30_000, "4 MiB of output");
    assert.ok(proxy.cut() >= 1, "the executor socket went through the proxy");
    await executor.waitFor(
      () => (executor.stderr.match(/connected to rendezvous/g)?.length ?? 0) >= 2,
      15_000,
      "the executor reconnecting",
    );
    const status = await run.finished(60_000);
    assert.equal(status.code, 0, run.stderr);
    assert.equal(run.stdoutBytes, 48 * 1024 * 1024);
    assert.equal(run.digest(), blob.sha256);
    assert.match(executor.stderr, /lost rendezvous socket/);
  } finally {
    await Deno.remove(blob.dir, { recursive: true });
  }
});

Deno.test("cli: rendezvous refuses a --url-ttl-ms under 1000 (exit 2); with 1000 an executor connects", async () => {
  await using short = new Cli("rendezvous", ["rendezvous", "--url-ttl-ms", "999"], {
    env: { OUTPOST_TOKEN: TOKEN },
  });
  assert.equal((await short.finished()).code, 2, short.stderr);
  assert.match(
    short.stderr,
    /Cannot use --url-ttl-ms 999: expected an integer from 1000 to 86400000/,
  );
  await using box = await startBox("box-ttl", ["--url-ttl-ms", "1000"]);
  const { executor } = box;
  assert.doesNotMatch(executor.stderr, /retrying/);
});

Deno.test("cli: a rendezvous that may not read OUTPOST_SIGNING_KEY says so instead of using a random key unseen; under its permission set it reads it", async () => {
  const key = "k".repeat(32);
  // A narrower grant than the rendezvous set: the token only.
  const narrow = (argv: string[]) =>
    argv.flatMap((arg) =>
      arg === "-P=rendezvous" ? ["--allow-env=OUTPOST_TOKEN", "--allow-net=127.0.0.1"] : [arg]
    );
  await using without = new Cli("rendezvous", ["rendezvous", "--listen", "ws://127.0.0.1:0"], {
    env: { OUTPOST_TOKEN: TOKEN, OUTPOST_SIGNING_KEY: key },
    via: narrow,
  });
  await without.firstLine();
  await without.waitFor(
    () => without.stderr.includes("Cannot read OUTPOST_SIGNING_KEY"),
    10_000,
    "the warning",
  );
  assert.match(without.stderr, /signed URLs use a random key and end with this process/);
  assert.doesNotMatch(without.stderr, new RegExp(key));
  const granted = await startRendezvous();
  await using _g = granted.cli;
  assert.doesNotMatch(granted.cli.stderr, /OUTPOST_SIGNING_KEY/);
});

Deno.test("cli: rendezvous --public-url hands out signed URLs on that base; a bad one is a usage error (exit 2)", async () => {
  const rendezvous = await startRendezvous(["--public-url", "wss://relay.example.com/outpost/"]);
  await using _r = rendezvous.cli;
  const registry = rendezvous.url.replace("ws:", "http:");
  for (
    const [action, role] of [["register", "executor"], ["connect", "harness"]] as const
  ) {
    // As a TLS proxy in front would forward it: the Host header no longer decides.
    const response = await fetch(`${registry}/cloud/executor/box-1/${action}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, host: "relay.example.com" },
    });
    assert.equal(response.status, 200);
    const { url } = await response.json();
    assert.match(
      url,
      new RegExp(
        `^wss://relay\\.example\\.com/outpost/${role}/box-1\\?role=${role}&exp=\\d+&sig=[0-9a-f]{64}$`,
      ),
    );
  }
  await using help = new Cli("client", ["rendezvous", "--help"]);
  assert.equal((await help.finished()).code, 0);
  assert.match(help.stdout, /--public-url URL {4}Base of the signed URLs handed out/);
  for (
    const [value, why] of [
      ["https://relay.example.com", "the scheme must be ws:// or wss://, not https://"],
      ["relay.example.com", "it is not a URL"],
      ["wss://relay.example.com/?a=1", "it must not have a query"],
      ["wss://relay.example.com/#top", "it must not have a fragment"],
      ["wss://user:pw@relay.example.com", "it must not carry credentials"],
      ["ws://relay.example.com:0", "port 0 is not one clients can reach"],
    ]
  ) {
    await using bad = new Cli("rendezvous", ["rendezvous", "--public-url", value], {
      env: { OUTPOST_TOKEN: TOKEN },
    });
    assert.equal((await bad.finished()).code, 2, bad.stderr);
    // A value holding an @ (a password's, maybe) is not repeated.
    const shown = value.includes("@") ? "(not shown: it holds an @, as a password would)" : value;
    assert.ok(bad.stderr.startsWith(`Cannot use --public-url ${shown}: ${why}`), bad.stderr);
    assert.doesNotMatch(bad.stderr, /:pw@/);
  }
});

/** Waits until a connect to `port` succeeds again (the listener is back). */
async function listenerBack(port: number): Promise<void> {
  await until(
    async () => {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        return true;
      } catch {
        return false;
      }
    },
    15_000,
    "the listener back",
  );
}

/**
 * Opens connections that send nothing to a CLI server started under
 * `ulimit -n 128` until it warns that it stopped accepting, and checks the
 * warning; returns the connections (the caller closes them).
 */
async function exhaustDescriptors(cli: Cli, port: number): Promise<Deno.TcpConn[]> {
  const idle: Deno.TcpConn[] = [];
  const warned = () => cli.stderr.includes("stopped accepting connections");
  try {
    for (let i = 0; i < 1_000 && !warned(); i++) {
      try {
        idle.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      } catch {
        break; // refused: the listener is gone
      }
    }
    await cli.waitFor(warned, 15_000, "the warning");
    assert.match(
      cli.stderr,
      /WARN {2}stopped accepting connections, still serving open ones; listening again error="Too many open files \(os error 24\)" retryInMs=100\n/,
    );
    return idle;
  } catch (error) {
    for (const conn of idle) conn.close();
    throw error;
  }
}

Deno.test("cli: the rendezvous outlives running out of file descriptors: it warns, keeps its executor and accepts again", async () => {
  // A small descriptor limit (`ulimit -n` sets the hard one too, which Deno
  // raises its soft limit to), and connections that send nothing, as anyone
  // who can reach the port may open.
  const cli = new Cli("rendezvous", ["rendezvous", "--listen", "ws://127.0.0.1:0"], {
    env: { OUTPOST_TOKEN: TOKEN },
    via: (argv) => ["sh", "-c", 'ulimit -n 128 && exec "$@"', "sh", ...argv],
  });
  await using _r = cli;
  const url = await cli.firstLine();
  const port = Number(new URL(url).port);
  await using executor = startExecutor(url, "box-fd");
  await waitConnected(executor);
  const idle = await exhaustDescriptors(cli, port);
  for (const conn of idle) conn.close();
  // The listener comes back at its next attempt (100 ms, doubled after each
  // one that found the descriptors still taken): until then a connect is refused.
  await listenerBack(port);
  // Free again: an exec opens a new harness socket through the same process,
  // to the executor that stayed connected.
  await using run = exec([
    "--url",
    url,
    "--executor-id",
    "box-fd",
    "--",
    "sh",
    "-c",
    "echo still here",
  ]);
  assert.equal((await run.finished()).code, 0, run.stderr);
  assert.equal(run.stdout, "still here\n");
  await cli.waitFor(
    () => cli.stderr.includes("accepting connections again"),
    15_000,
    "accepting again",
  );
  assert.doesNotMatch(executor.stderr, /lost rendezvous socket/);
  cli.child.kill("SIGTERM");
  assert.equal((await cli.finished()).code, 0, cli.stderr);
});

Deno.test("cli: serve outlives running out of file descriptors: it warns, its session's program runs on, and it accepts again", async () => {
  // As for the rendezvous: a small descriptor limit, and connections that send nothing.
  const cli = new Cli("executor", ["serve", "--listen", "ws://127.0.0.1:0"], {
    via: (argv) => ["sh", "-c", 'ulimit -n 128 && exec "$@"', "sh", ...argv],
  });
  await using _s = cli;
  const url = await cli.firstLine();
  const port = Number(new URL(url).port);
  const dir = await Deno.makeTempDir({ prefix: "outpost_e2e_fd_" });
  const go = `${dir}/go`;
  try {
    // A session whose program waits for the test: it must outlive the exhaustion.
    await using run = exec([
      "--url",
      url,
      "--",
      "sh",
      "-c",
      `echo ready; while [ ! -e ${go} ]; do sleep 0.05; done; echo after`,
    ]);
    await run.waitFor(() => run.stdout.includes("ready\n"), 10_000, "the program");
    const idle = await exhaustDescriptors(cli, port);
    try {
      // Still out of descriptors: the session's connection is served all the same.
      await Deno.writeTextFile(go, "");
      assert.equal((await run.finished()).code, 0, run.stderr);
      assert.equal(run.stdout, "ready\nafter\n");
    } finally {
      for (const conn of idle) conn.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  await listenerBack(port);
  await using again = exec(["--url", url, "--", "sh", "-c", "echo still here"]);
  assert.equal((await again.finished()).code, 0, again.stderr);
  assert.equal(again.stdout, "still here\n");
  await cli.waitFor(
    () => cli.stderr.includes("accepting connections again"),
    15_000,
    "accepting again",
  );
  cli.child.kill("SIGTERM");
  assert.equal((await cli.finished()).code, 0, cli.stderr);
});

Deno.test("cli: the rendezvous warns, with the reason, when it drops a harness socket that fell behind", async () => {
  await using box = await startBox("box-slow");
  const { rendezvous, executor } = box;
  // A Codex v1 harness (legacy frames, seq from 0, never acked) starts an
  // endless output and reads nothing: its socket stops reading once its queue
  // is half full.
  const harness = await RelaySocket.connect(`${rendezvous.url}/harness/box-slow?role=harness`, {
    token: TOKEN,
  });
  try {
    const messages = [
      { id: 1, method: "initialize", params: { clientName: "slow" } },
      { method: "initialized" },
      { id: 2, method: "process/start", params: { processId: "z", argv: ["cat", "/dev/zero"] } },
    ];
    for (const [seq, message] of messages.entries()) {
      await harness.send(dataFrame("s", seq, JSON.stringify(message)));
    }
    const dropped = () => rendezvous.cli.stderr.includes("dropped a socket");
    await rendezvous.cli.waitFor(dropped, 30_000, "the drop");
    assert.match(
      rendezvous.cli.stderr,
      /WARN {2}dropped a socket that fell behind executorId=box-slow role=harness reason=slow_peer\n/,
    );
  } finally {
    await harness.close().catch(() => {});
  }
  // The executor stays connected and its session ends with the socket.
  assert.doesNotMatch(executor.stderr, /lost rendezvous socket/);
});

Deno.test("cli: a --listen URL with a path or query is a usage error (exit 2) for serve and rendezvous", async () => {
  for (
    const [set, args] of [
      ["executor", ["serve", "--listen", "ws://127.0.0.1:0/path"]],
      ["rendezvous", ["rendezvous", "--listen", "ws://127.0.0.1:0/path"]],
      ["rendezvous", ["rendezvous", "--listen", "ws://127.0.0.1:0?x=1"]],
      ["executor", ["serve", "--listen", "ws://user:hunter2pw@127.0.0.1:0"]],
    ] as const
  ) {
    await using run = new Cli(set, [...args], { env: { OUTPOST_TOKEN: TOKEN } });
    assert.equal((await run.finished()).code, 2, run.stderr);
    assert.match(
      run.stderr,
      /: it must be a bare ws:\/\/HOST:PORT, without a path, query or credentials\n/,
    );
    assert.doesNotMatch(run.stderr, /hunter2pw/);
  }
});

Deno.test("cli: a listen host the permission set does not grant is a usage error (exit 2) naming --allow-net", async () => {
  for (
    const [set, args, host] of [
      ["executor", ["serve", "--listen", "ws://[::1]:0"], "[::1]"],
      ["executor", ["serve", "--allow-remote", "--listen", "ws://0.0.0.0:0"], "0.0.0.0"],
      ["rendezvous", ["rendezvous", "--listen", "ws://[::1]:0"], "[::1]"],
    ] as const
  ) {
    await using run = new Cli(set, [...args], { env: { OUTPOST_TOKEN: TOKEN } });
    assert.equal((await run.finished()).code, 2, run.stderr);
    assert.ok(
      run.stderr.includes(
        `this deno process has no net access to ${host}; run deno with --allow-net=${host} (`,
      ),
      run.stderr,
    );
    assert.doesNotMatch(run.stderr, /Requires net access/);
  }
});

Deno.test("cli: serve refuses --allow-origin values a browser never sends (exit 2)", async () => {
  for (const origin of ["*", "https://ok.example/"]) {
    await using run = new Cli("executor", ["serve", "--allow-origin", origin]);
    assert.equal((await run.finished()).code, 2, run.stderr);
    assert.ok(
      run.stderr.includes(
        `Cannot allow origin ${
          JSON.stringify(origin)
        }: an origin is scheme://host[:port] as a browser sends it, without a path or a trailing slash`,
      ),
      run.stderr,
    );
  }
});

Deno.test("cli: serve logs each refused request as the rendezvous does, never the token", async () => {
  await using serve = new Cli(
    "executor",
    ["serve", "--log-format", "json", "--allow-origin", "https://tool.example"],
    { env: { OUTPOST_TOKEN: TOKEN } },
  );
  const port = Number(new URL(await serve.firstLine()).port);
  const bearer = `Authorization: Bearer ${TOKEN}`;
  assert.equal(
    (await rawHttp(port, upgradeHead("/", ["Origin: https://evil.example", bearer]))).status,
    403,
  );
  assert.equal((await rawHttp(port, upgradeHead("/", [`${bearer}x`]))).status, 401);
  const refusals = () =>
    serve.stderr.split("\n").filter((line) => line.includes('"msg":"refused a request"'));
  await serve.waitFor(() => refusals().length >= 2, 5_000, "two refusals logged");
  const [origin, token] = refusals().map((line) => JSON.parse(line));
  assert.deepEqual(
    { level: origin.level, status: origin.status, code: origin.code, origin: origin.origin },
    { level: "warn", status: 403, code: "forbidden_origin", origin: "https://evil.example" },
  );
  assert.deepEqual(
    { level: token.level, status: token.status, code: token.code },
    { level: "warn", status: 401, code: "unauthorized" },
  );
  assert.ok(!serve.stderr.includes(TOKEN));
});

Deno.test("cli: serve answers malformed upgrades and a bad Host 400 in its JSON shape, and its JSON log stays JSON", async () => {
  await using serve = new Cli("executor", ["serve", "--log-format", "json"]);
  const port = Number(new URL(await serve.firstLine()).port);
  const head = upgradeHead("/").split("\r\n");
  const noKey = head.filter((line) => !line.startsWith("Sec-WebSocket-Key:")).join("\r\n");
  const noUpgrade = upgradeHead("/").replace("Connection: Upgrade", "Connection: keep-alive");
  const badHost = upgradeHead("/").replace("Host: 127.0.0.1", "Host: a b");
  for (
    const [request, status, code] of [
      [noKey, 400, "bad_upgrade"],
      [noUpgrade, 400, "bad_upgrade"],
      [badHost, 400, "bad_request"],
    ] as const
  ) {
    const r = await rawHttp(port, request);
    assert.equal(r.status, status, r.body);
    assert.match(r.headers.get("content-type") ?? "", /^application\/json/);
    assert.equal(JSON.parse(r.body).error.code, code);
  }
  const logged = () => serve.stderr.split("\n").filter((line) => line !== "");
  await serve.waitFor(
    () => serve.stderr.includes('"code":"bad_request"'),
    5_000,
    "the refusals logged",
  );
  await serve[Symbol.asyncDispose](); // stopped: all of stderr is in
  // Each line is one JSON object: no stack trace, no plain text.
  const lines = logged().map((line) => JSON.parse(line));
  const refused = lines.filter((line) => line.msg === "refused a request");
  assert.deepEqual(refused.map((line) => [line.status, line.code]), [
    [400, "bad_upgrade"],
    [400, "bad_upgrade"],
    [400, "bad_request"],
  ]);
  assert.ok(!lines.some((line) => line.msg === "cannot serve a request"), "nothing failed");
});

Deno.test("cli: the executor's log never carries the token a registry echoes, in JSON and text", async () => {
  // A registry (or another service at --registry) that quotes the token it was sent.
  const answers: Record<string, (token: string) => Response> = {
    "echo-400": (token) =>
      Response.json({ error: { code: "bad_request", message: `unknown ${token}` } }, {
        status: 400,
      }),
    "echo-401": (token) =>
      Response.json({ error: { code: "x", message: `token ${token} refused` } }, { status: 401 }),
    "other-id": (token) => Response.json({ executor_id: `box-${token}`, url: "ws://x" }),
  };
  const abort = new AbortController();
  const registry = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    signal: abort.signal,
    onListen: () => {},
  }, async (request) => {
    await request.body?.cancel();
    const id = new URL(request.url).pathname.split("/")[3];
    const token = request.headers.get("authorization")?.replace(/^Bearer /, "") ?? "";
    return answers[id]?.(token) ?? new Response(null, { status: 404 });
  });
  try {
    const url = `http://127.0.0.1:${registry.addr.port}`;
    for (const format of ["json", "text"]) {
      for (const id of Object.keys(answers)) {
        await using executor = new Cli(
          "executor",
          ["executor", "--registry", url, "--executor-id", id, "--log-format", format],
          { env: { OUTPOST_TOKEN: TOKEN } },
        );
        assert.equal((await executor.finished(15_000)).code, 1, executor.stderr);
        assert.match(executor.stderr, /Cannot register executor/, `${format} ${id}`);
        assert.ok(!executor.stderr.includes(TOKEN), `${format} ${id}: ${executor.stderr}`);
        assert.match(executor.stderr, /\[redacted\]/, `${format} ${id}`);
      }
    }
  } finally {
    abort.abort();
    await registry.finished;
  }
});

Deno.test("cli: a set but blank OUTPOST_TOKEN or OUTPOST_SIGNING_KEY is a usage error (exit 2) in every command that reads it", async () => {
  const commands: [string, string[]][] = [
    ["executor", ["serve"]],
    ["rendezvous", ["rendezvous"]],
    ["executor", ["executor", "--registry", "http://127.0.0.1:1", "--executor-id", "box-1"]],
    ["client", ["exec", "--url", "ws://127.0.0.1:1", "--", "true"]],
  ];
  const runs: Promise<void>[] = [];
  for (const blank of ["", "   ", "\t\n"]) {
    for (const [set, args] of commands) {
      runs.push((async () => {
        await using cli = new Cli(set, args, { env: { OUTPOST_TOKEN: blank } });
        const label = `${args[0]} with OUTPOST_TOKEN=${JSON.stringify(blank)}`;
        assert.equal((await cli.finished()).code, 2, `${label}: ${cli.stderr}`);
        assert.match(cli.stderr, /^Cannot use OUTPOST_TOKEN: it is set but blank; set a token/);
      })());
    }
    runs.push((async () => {
      await using cli = new Cli("rendezvous", ["rendezvous"], {
        env: { OUTPOST_TOKEN: TOKEN, OUTPOST_SIGNING_KEY: blank },
      });
      assert.equal((await cli.finished()).code, 2, cli.stderr);
      assert.match(cli.stderr, /^Cannot use OUTPOST_SIGNING_KEY: it is set but blank/);
    })());
  }
  await Promise.all(runs);
});

Deno.test("cli: a token file is read only when it is a regular file of at most 4101 bytes: a FIFO, a device or a longer file is a usage error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const longest = "t".repeat(4096);
    // The longest token with a byte order mark and a CRLF: 4101 bytes, taken.
    await Deno.writeTextFile(`${dir}/at-limit`, `\ufeff${longest}\r\n`);
    await Deno.writeTextFile(`${dir}/one-past`, `\ufeff${longest}\r\n\n`);
    await Deno.symlink(`${dir}/at-limit`, `${dir}/link`);
    await Deno.symlink("/dev/zero", `${dir}/zero`);
    await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] }).output();
    for (const name of ["at-limit", "link"]) {
      await Deno.chmod(`${dir}/${name}`, 0o600);
      await using serve = new Cli("executor", ["serve", "--token-file", `${dir}/${name}`]);
      assert.match(await serve.firstLine(), /^ws:\/\/127\.0\.0\.1:\d+/, name);
    }
    for (
      const [name, why] of [
        ["one-past", "it is longer than 4101 bytes \\(a token is at most 4096\\)"],
        ["zero", "it is a character device, not a regular file"],
        ["fifo", "it is a FIFO, not a regular file"],
      ]
    ) {
      await using serve = new Cli("executor", ["serve", "--token-file", `${dir}/${name}`]);
      assert.equal((await serve.finished()).code, 2, `${name}: ${serve.stderr}`);
      assert.match(
        serve.stderr,
        new RegExp(`^Cannot (use|read) token file ${dir}/${name}: ${why}\n`),
      );
      assert.ok(!serve.stderr.includes("ttttttttttttttttt"), "the content is never printed");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Runs `exec … -- sh -c program` with its stdout read by the test itself
 * (the Cli helper reads as fast as it can), and reads up to the program's
 * "ready" line.
 */
async function execReadByHand(url: string, program: string): Promise<{
  child: Deno.ChildProcess;
  reader: ReadableStreamDefaultReader<Uint8Array>;
  stderr: Promise<string>;
  /** What exec has written to its stderr so far. */
  stderrSoFar: () => string;
  headBytes: number;
}> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-q", "-P=client", "cli.ts", "exec", "--url", url, "--", "sh", "-c", program],
    cwd: ROOT,
    clearEnv: true,
    env: childEnv({}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let stderrText = "";
  const stderr = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) stderrText += text;
    return stderrText;
  })();
  const reader = child.stdout.getReader();
  let head = "";
  let headBytes = 0;
  while (!head.includes("ready")) {
    const { value, done } = await withDeadline(reader.read(), 15_000, "the program starting");
    if (done) break;
    headBytes += value.byteLength;
    head += new TextDecoder().decode(value);
  }
  return { child, reader, stderr, stderrSoFar: () => stderrText, headBytes };
}

Deno.test("cli: exec keeps every byte and the exit code of a program that answers SIGTERM by exiting while its output drains slowly", async () => {
  await using serve = new Cli("executor", ["serve"]);
  const url = await serve.firstLine();
  // Well past the client's 4 MiB output queue: a forwarded SIGTERM must not
  // drop any of it, and the exit, queued behind it, arrives after the grace.
  const { child, reader, stderr, headBytes } = await execReadByHand(
    url,
    'trap "head -c 8000000 /dev/zero; exit 7" TERM; echo ready; while :; do sleep 0.05; done',
  );
  let bytes = headBytes;
  child.kill("SIGTERM");
  // A reader that keeps taking output, slowly, for longer than the 2 s grace:
  // exec must deliver all of it and keep the program's code.
  const t0 = performance.now();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    bytes += value.byteLength;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.ok(performance.now() - t0 > 2_000, "the drain outlasted the grace");
  const status = await child.status;
  const log = await stderr;
  assert.equal(status.code, 7, log);
  // Its exit waited behind the output, so it may have got a (late, harmless) SIGKILL: still code 7.
  assert.equal(bytes, "ready\n".length + 8_000_000);
});

Deno.test("cli: exec leaves after SIGTERM when its program has ended but our stdout takes nothing for 2 s", async () => {
  await using serve = new Cli("executor", ["serve"]);
  const url = await serve.firstLine();
  const { child, reader, stderr, stderrSoFar } = await execReadByHand(
    url,
    // `wait`, not a sleep in the foreground: a TERM that comes before the sleep has started
    // would be held until it ends (a shell runs its trap after the foreground command).
    'trap "exit 7" TERM; echo ready; head -c 3000000 /dev/zero; echo sent >&2; sleep 30 & wait',
  );
  // From here on nothing reads exec's stdout: a stalled pipe, as behind a stuck consumer.
  // Once the program has sent it all, exec holds far more than its stdout pipe takes (a TERM
  // sooner could end the program before its output fills the pipe, and exec would just finish).
  await until(() => stderrSoFar().includes("sent"), 15_000, "the program's output sent");
  child.kill("SIGTERM");
  const status = await withDeadline(child.status, 15_000, "exec leaving");
  await reader.cancel();
  const log = await stderr;
  assert.equal(status.code, 143, log);
  assert.match(log, /after SIGTERM our output made no progress for 2000 ms: leaving/);
});

Deno.test("cli: a second Ctrl-C while serve stops does not cut its close short: programs are still stopped", async () => {
  await using serve = new Cli("executor", ["serve"]);
  const url = await serve.firstLine();
  const marker = `outpost-e2e-${crypto.randomUUID()}`;
  try {
    // A program that outlives SIGTERM (it only says so): the close takes its
    // 2 s grace, then SIGKILL.
    await using run = new Cli("client", [
      "exec",
      "--url",
      url,
      "--",
      "sh",
      "-c",
      'trap "echo got-term" TERM; echo ready; while :; do sleep 0.05; done',
      marker,
    ]);
    await run.waitFor(() => run.stdout.includes("ready"), 15_000, "the program starting");
    serve.child.kill("SIGINT");
    // The close has begun once the program has its TERM; it is in its grace.
    await run.waitFor(() => run.stdout.includes("got-term"), 10_000, "the program's TERM");
    serve.child.kill("SIGINT");
    assert.equal((await run.finished(10_000)).code, 137, "killed at the end of the grace");
    const status = await serve.finished(15_000);
    assert.equal(status.code, 0, serve.stderr);
    assert.match(serve.stderr, /already stopping \(SIGINT ignored\)/);
    assert.match(serve.stderr, /outpost serve: stopped \(SIGINT\)/);
    assert.deepEqual(pidsMentioning(marker), [], "the program outlived serve");
  } finally {
    killLeftovers(marker);
  }
});

Deno.test("cli: the executor's exit summary names the signal it stopped on", async () => {
  await using box = await startBox("box-sig");
  const { executor } = box;
  executor.child.kill("SIGTERM");
  assert.equal((await executor.finished()).code, 0, executor.stderr);
  assert.match(executor.stderr, /outpost executor: stopped \(SIGTERM\) after [\d.]+ s, 1 connects/);
});

Deno.test("cli: a registry host the permission set does not grant is fatal, not retried", async () => {
  await using executor = startExecutor("http://10.255.255.1:8700", "box-net");
  assert.equal((await executor.finished(15_000)).code, 1, executor.stderr);
  assert.match(
    executor.stderr,
    /Cannot register executor box-net at http:\/\/10\.255\.255\.1:8700: Requires net access to "10\.255\.255\.1:8700"/,
  );
  assert.match(
    executor.stderr,
    /\(run deno with --allow-net=10\.255\.255\.1:8700: the executor permission set grants only 127\.0\.0\.1 and localhost\)/,
  );
  assert.doesNotMatch(executor.stderr, /retrying/);
});

Deno.test("cli: --help on each command, bad flags and token flags fail clearly", async () => {
  for (const command of ["serve", "rendezvous", "executor", "exec"]) {
    await using help = new Cli("client", [command, "--help"]);
    assert.equal((await help.finished()).code, 0);
    assert.match(help.stdout, new RegExp(`^Usage: outpost ${command}`));
  }
  await using top = new Cli("client", ["--help"]);
  assert.equal((await top.finished()).code, 0);
  assert.match(top.stdout, /Commands:\n {2}serve/);

  await using bad = new Cli("client", ["exec", "--nope", "x"]);
  assert.equal((await bad.finished()).code, 2);
  assert.match(bad.stderr, /Cannot parse exec options: Unknown option '--nope'/);

  await using unknown = new Cli("client", ["frobnicate"]);
  assert.equal((await unknown.finished()).code, 2);
  assert.match(unknown.stderr, /Cannot run "frobnicate": unknown command/);

  await using tokenFlag = new Cli("client", ["exec", "--token", "abc", "--url", "ws://x"]);
  assert.equal((await tokenFlag.finished()).code, 2);
  assert.match(tokenFlag.stderr, /tokens are never taken from flags/);

  await using noDashes = new Cli("client", ["exec", "--url", "ws://127.0.0.1:1", "ls"]);
  assert.equal((await noDashes.finished()).code, 2);
  assert.match(noDashes.stderr, /put the program after "--"/);

  // The program's own flags before "--" look like exec's: the hint says where they go.
  await using flagsNoDashes = new Cli("client", [
    "exec",
    "--url",
    "ws://127.0.0.1:1",
    "sh",
    "-c",
    "true",
  ]);
  assert.equal((await flagsNoDashes.finished()).code, 2);
  assert.match(
    flagsNoDashes.stderr,
    /Unknown option '-c'; put the program and its arguments after "--"/,
  );

  // A host the client set does not grant: how to grant it, not Deno's bare --allow-net advice.
  await using farHost = new Cli("client", ["exec", "--url", "ws://example.com:8700", "--", "true"]);
  assert.equal((await farHost.finished()).code, 255);
  assert.match(farHost.stderr, /deno run -P=client --allow-net=example\.com:8700 cli\.ts exec/);
  // An IPv6 host is quoted for the shell (its brackets would glob).
  await using farHost6 = new Cli("client", [
    "exec",
    "--url",
    "ws://[2001:db8::1]:8700",
    "--",
    "true",
  ]);
  assert.equal((await farHost6.finished()).code, 255);
  assert.match(farHost6.stderr, /--allow-net='\[2001:db8::1\]:8700' cli\.ts exec/);

  // exec usage errors, each exit 2 with its message.
  for (
    const [args, message] of [
      // A token file the client set may not read.
      [
        ["--url", "ws://127.0.0.1:1", "--token-file", "/tmp/outpost-no-such-token"],
        /Cannot read token file \/tmp\/outpost-no-such-token: read access is not granted; run deno run -P=NAME --allow-read=\/tmp\/outpost-no-such-token cli\.ts/,
      ],
      // A signed harness URL names its executor: --executor-id with it is a mistake, said so.
      [
        ["--url", "ws://127.0.0.1:1/harness/b6?role=harness&exp=1&sig=00", "--executor-id", "b6"],
        /Cannot use --executor-id with a signed harness URL: .*drop --executor-id/,
      ],
      [
        ["--url", "ws://127.0.0.1:1", "--executor-id", "b6"],
        /Cannot find a token: set OUTPOST_TOKEN or pass --token-file FILE/,
      ],
    ] as const
  ) {
    await using run = new Cli("client", ["exec", ...args, "--", "true"]);
    assert.equal((await run.finished()).code, 2, run.stderr);
    assert.match(run.stderr, message);
  }

  // A token file the set may read (serve: read all) that is missing, or a directory.
  for (
    const [file, why] of [
      ["/tmp/outpost-no-such-token", "does not exist"],
      ["/tmp", "it is a directory, not a regular file"],
    ]
  ) {
    await using serveFile = new Cli("executor", ["serve", "--token-file", file]);
    assert.equal((await serveFile.finished()).code, 2, serveFile.stderr);
    assert.match(serveFile.stderr, new RegExp(`Cannot read token file:? ${file}:? ${why}\n`));
  }

  await using missing = new Cli("executor", ["executor", "--registry", "http://127.0.0.1:1"]);
  assert.equal((await missing.finished()).code, 2);
  assert.match(missing.stderr, /--executor-id ID is required/);
});

Deno.test("cli: integer flags take decimal digits only, within their range: at each bound and one past it", async () => {
  const cases: [string, string, string[], string, string][] = [
    // [set, command, other args, flag, the range the refusal names]
    [
      "client",
      "exec",
      ["--url", "ws://127.0.0.1:1", "--", "true"],
      "--timeout-ms",
      "an integer from 1 to 2147483647",
    ],
    ["rendezvous", "rendezvous", [], "--url-ttl-ms", "an integer from 1000 to 86400000"],
    ["executor", "serve", [], "--max-sessions", "a positive integer"],
  ];
  for (const [set, command, rest, flag, range] of cases) {
    const past = flag === "--timeout-ms"
      ? "2147483648"
      : flag === "--url-ttl-ms"
      ? "86400001"
      : "0";
    for (const value of ["1e3", "0x10", "+5", " 5", "5.0", past]) {
      await using bad = new Cli(set, [command, flag, value, ...rest], {
        env: { OUTPOST_TOKEN: TOKEN },
      });
      assert.equal((await bad.finished()).code, 2, `${flag} ${value}: ${bad.stderr}`);
      assert.ok(
        bad.stderr.startsWith(`Cannot use ${flag} ${value}: expected ${range}`),
        bad.stderr,
      );
    }
  }
  // At the bounds: a day of URL lifetime and the longest timer are taken.
  await using box = await startBox("box-day", ["--url-ttl-ms", "86400000"]);
  const { rendezvous } = box;
  await using longest = exec([
    "--url",
    rendezvous.url,
    "--executor-id",
    "box-day",
    "--timeout-ms",
    "2147483647",
    "--",
    "sh",
    "-c",
    "exit 3",
  ], { env: { OUTPOST_TOKEN: TOKEN } });
  assert.equal((await longest.finished()).code, 3, longest.stderr);
});

Deno.test("cli: serve and rendezvous on a port in use exit 1 naming the port", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const listen = `ws://127.0.0.1:${taken.addr.port}`;
  for (const [set, command] of [["executor", "serve"], ["rendezvous", "rendezvous"]]) {
    await using server = new Cli(set, [command, "--listen", listen], {
      env: { OUTPOST_TOKEN: TOKEN },
    });
    assert.equal((await server.finished()).code, 1, server.stderr);
    assert.match(
      server.stderr,
      new RegExp(`Cannot listen on ${listen}: port ${taken.addr.port} is in use`),
    );
  }
});

Deno.test("cli: a token file other users may read gets a warning naming its mode; a private one none", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const mode of [0o644, 0o600]) {
      const file = `${dir}/token-${mode.toString(8)}`;
      await Deno.writeTextFile(file, `${"t".repeat(32)}\n`);
      await Deno.chmod(file, mode);
      const serve = new Cli("executor", ["serve", "--token-file", file]);
      assert.match(await serve.firstLine(), /^ws:\/\/127\.0\.0\.1:\d+/);
      await serve[Symbol.asyncDispose](); // stopped: all of stderr is in
      const warned = /WARN +token file \S+ is open to other users \(mode 0644\).*chmod 600 it/;
      if (mode === 0o644) assert.match(serve.stderr, warned);
      else assert.doesNotMatch(serve.stderr, /open to other users/);
      assert.ok(!serve.stderr.includes("t".repeat(32)), "the token is never printed");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("logger keeps a text line one line: control characters in a message are escaped", () => {
  const lines: string[] = [];
  const log = createLogger({ write: (l) => lines.push(l), now: () => new Date(0) });
  // As a registry's error body might read, forging a line and coloring the terminal.
  log.error("HTTP 404: <html>\n1970-01-01T00:00:00.000Z INFO  all fine\r\x1b[2J\u2028\u0085\ttab", {
    body: "x\ny",
    // Field values too: a close reason with terminal escapes and no space, C1 and U+2028.
    reason: "\x1b]0;pwned\x07\x1b[2J",
    origin: "a\u009bb\u2028",
    registry: "http://user:pw@h:1/",
  });
  assert.deepEqual(lines, [
    "1970-01-01T00:00:00.000Z ERROR HTTP 404: <html>\\n1970-01-01T00:00:00.000Z INFO  all fine" +
    '\\r\\u001b[2J\\u2028\\u0085\\ttab body="x\\ny" reason="\\u001b]0;pwned\\u0007\\u001b[2J"' +
    ' origin="a\\u009bb\\u2028" registry=http://[redacted]@h:1/',
  ]);
});

Deno.test("logger redacts credentials in text and JSON lines", () => {
  const lines: string[] = [];
  const now = () => new Date(0);
  const text = createLogger({ write: (l) => lines.push(l), now });
  const json = createLogger({ format: "json", write: (l) => lines.push(l), now });
  for (const log of [text, json]) {
    log.info("connecting to ws://h/executor/e?role=executor&exp=1&sig=SECRETSIG", {
      token: "SECRETTOKEN",
      authorization: "Bearer SECRETBEARER",
      note: "Bearer SECRETBEARER2",
      n: 3,
    });
    log.debug("hidden at info level");
  }
  assert.equal(lines.length, 2);
  for (const line of lines) assert.ok(!/SECRET/.test(line), line);
  assert.equal(
    lines[0],
    '1970-01-01T00:00:00.000Z INFO  connecting to ws://h/executor/e?role=executor&exp=1&sig=[redacted] token=[redacted] authorization=[redacted] note="Bearer [redacted]" n=3',
  );
  assert.deepEqual(JSON.parse(lines[1]), {
    time: "1970-01-01T00:00:00.000Z",
    level: "info",
    msg: "connecting to ws://h/executor/e?role=executor&exp=1&sig=[redacted]",
    token: "[redacted]",
    authorization: "[redacted]",
    note: "Bearer [redacted]",
    n: 3,
  });
});

Deno.test("cli: exec runs through a rendezvous on a signed harness URL alone, OUTPOST_TOKEN set or not", async () => {
  await using box = await startBox("box-1");
  const { rendezvous } = box;
  const response = await fetch(
    `${rendezvous.url.replace("ws:", "http:")}/cloud/executor/box-1/connect`,
    { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } },
  );
  assert.equal(response.status, 200);
  const { url } = await response.json();
  for (const env of [{}, { OUTPOST_TOKEN: TOKEN }] as Record<string, string>[]) {
    await using run = new Cli(
      "client",
      ["exec", "--url", url, "--", "sh", "-c", "echo hi; exit 3"],
      {
        env,
      },
    );
    assert.equal((await run.finished()).code, 3, run.stderr);
    assert.equal(run.stdout, "hi\n");
  }
});

Deno.test("cli: exec sends no token with a signed harness URL (the URL may name someone else's host), and refuses --token-file with one", async () => {
  const seen: (string | null)[] = [];
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    seen.push(request.headers.get("authorization"));
    return Response.json({ error: { code: "forbidden", message: "no" } }, { status: 403 });
  });
  const base = `ws://127.0.0.1:${server.addr.port}/harness/b6?role=harness`;
  const signed = `${base}&exp=99999999999999&sig=${"0".repeat(64)}`;
  for (const url of [signed, base]) {
    await using run = new Cli("client", ["exec", "--url", url, "--", "true"], {
      env: { OUTPOST_TOKEN: TOKEN },
    });
    assert.equal((await run.finished()).code, 255, run.stderr);
    assert.match(run.stderr, /refused the (signed URL|token) \(HTTP 403/);
  }
  assert.deepEqual(seen, [null, `Bearer ${TOKEN}`], "the token went only with the unsigned URL");
  await using withFile = new Cli("client", [
    "exec",
    "--url",
    signed,
    "--token-file",
    "/tmp/outpost-no-such-token",
    "--",
    "true",
  ]);
  assert.equal((await withFile.finished()).code, 2, withFile.stderr);
  assert.match(
    withFile.stderr,
    /Cannot use --token-file with a signed harness URL: .*drop --token-file/,
  );
  assert.deepEqual(seen.length, 2, "nothing was sent");
});

Deno.test("logger masks its secrets as a JSON body quotes them and as a URL percent-encodes them", () => {
  const lines: string[] = [];
  const token = 'ab"cd\\ef+gh/ij=klmnopqrstuv';
  const log = createLogger({ write: (l) => lines.push(l), now: () => new Date(0) });
  log.addSecret(token);
  // As a registry's raw error body and a redirect's query would carry them.
  log.warn(`HTTP 400: ${JSON.stringify({ detail: `token ${token} is not known` })}`);
  log.warn(`moved to http://h/x?next=${encodeURIComponent(token)}`);
  // Other encoders' spellings: `/` escaped in JSON, URLSearchParams, lowercase hex.
  const other = "tok~en!('x')/0123456789abcdef";
  log.addSecret(other);
  log.warn(JSON.stringify(other).replaceAll("/", "\\/"));
  log.warn(new URLSearchParams({ q: other }).toString());
  log.warn(encodeURIComponent(other).replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase()));
  // Go's encoding/json escapes <, > and & as \u00XX; a WHATWG URL's path, encodeURI.
  const go = "t<o>k&en'0123456789abcdef";
  log.addSecret(go);
  log.warn(JSON.stringify(go).replace(/[<>&']/g, (c) => `\\u00${c.charCodeAt(0).toString(16)}`));
  log.warn(new URL(`http://h/${go}`).pathname);
  log.warn(encodeURI(go));
  assert.deepEqual(lines, [
    '1970-01-01T00:00:00.000Z WARN  HTTP 400: {"detail":"token [redacted] is not known"}',
    "1970-01-01T00:00:00.000Z WARN  moved to http://h/x?next=[redacted]",
    '1970-01-01T00:00:00.000Z WARN  "[redacted]"',
    "1970-01-01T00:00:00.000Z WARN  q=[redacted]",
    "1970-01-01T00:00:00.000Z WARN  [redacted]",
    '1970-01-01T00:00:00.000Z WARN  "[redacted]"',
    "1970-01-01T00:00:00.000Z WARN  /[redacted]",
    "1970-01-01T00:00:00.000Z WARN  [redacted]",
  ]);
});

Deno.test("logger masks the literal values of its secrets in every format, level and field", () => {
  const lines: string[] = [];
  const now = () => new Date(0);
  // A token may hold `"` and a backslash, which JSON escapes.
  const token = 'tok"en\\0123456789abcdef';
  const key = "signing-key-0123456789abcdef0123456789";
  const text = createLogger({ write: (l) => lines.push(l), now, secrets: [token] });
  const json = createLogger({ format: "json", level: "debug", write: (l) => lines.push(l), now });
  json.addSecret(token);
  json.addSecret("");
  for (const log of [text, json]) {
    log.addSecret(key);
    log.error(`registry said: unknown credential ${token}`, {
      executorId: `box-${token}`,
      error: new Error(`key ${key} refused`),
      url: new URL(`http://h/${encodeURIComponent("x")}?k=${key}`),
      nested: { echoed: [token, key] },
    });
    log.debug(`${key}${token}`);
  }
  assert.equal(lines.length, 3);
  for (const line of lines) {
    for (const form of [token, JSON.stringify(token).slice(1, -1), key, "0123456789abcdef"]) {
      assert.ok(!line.includes(form), line);
    }
  }
  assert.equal(
    lines[0],
    '1970-01-01T00:00:00.000Z ERROR registry said: unknown credential [redacted] executorId=box-[redacted] error="key [redacted] refused" url="http://h/x?k=[redacted]" nested="{\\"echoed\\":[\\"[redacted]\\",\\"[redacted]\\"]}"',
  );
  assert.deepEqual(JSON.parse(lines[1]), {
    time: "1970-01-01T00:00:00.000Z",
    level: "error",
    msg: "registry said: unknown credential [redacted]",
    executorId: "box-[redacted]",
    error: "key [redacted] refused",
    url: "http://h/x?k=[redacted]",
    nested: { echoed: ["[redacted]", "[redacted]"] },
  });
  assert.equal(JSON.parse(lines[2]).msg, "[redacted][redacted]");
});
