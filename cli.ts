/**
 * The `outpost` command line: `serve` (a local executor, the default),
 * `rendezvous` (relay and registry), `executor` (a remote executor that dials
 * a rendezvous) and `exec` (run one program on an executor). This is the only
 * module that parses arguments, prints, or calls `Deno.exit`; everything else
 * is the library in `mod.ts`.
 *
 * Tokens come from `OUTPOST_TOKEN` or `--token-file`, never from a flag, and
 * never appear in logs.
 *
 * @example Run the embedded default (a local executor on loopback)
 * ```sh
 * deno run -P=executor cli.ts serve
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connect, harnessUrl } from "./lib/client/connect.ts";
import type { Connection } from "./lib/client/connect.ts";
import { MAX_COMMAND_TIMEOUT_MS, RemoteCommand } from "./lib/client/remote_command.ts";
import { type RemoteProcess, signalExitCode } from "./lib/client/remote_process.ts";
import { RpcError } from "./lib/errors.ts";
import type { Executor } from "./lib/exec/executor.ts";
import { shellQuote } from "./lib/exec/confinement.ts";
import { shownUnparsedUrl } from "./lib/_userinfo.ts";
import { createLogger } from "./lib/server/_logger.ts";
import type { LogFormat, Logger, LogLevel } from "./lib/server/_logger.ts";
import { readToken } from "./lib/server/_token.ts";
import type { ListenerEvent } from "./lib/server/_listener.ts";
import { MAX_TIMER_MS } from "./lib/_limits.ts";

// The server modules are imported by the commands that run them: `exec`
// should not pay for loading the executor, the rendezvous and protobufjs.

const VERSION = "0.1.0";
const EXECUTOR_FLAGS = {
  cwd: { type: "string" },
  "write-root": { type: "string", multiple: true },
  "min-confinement": { type: "string" },
  "max-sessions": { type: "string" },
  "max-processes": { type: "string" },
} as const;

const EXECUTOR_FLAGS_HELP =
  `  --cwd DIR           Default working directory of programs (default: the current one)
  --write-root DIR    Confine fs writes (and os-confined programs) to DIR (repeatable)
  --min-confinement KIND
                      Weakest confinement a request may use: none, deno or os (default none)
  --max-sessions N    Sessions held at once, connected or waiting to resume (default 256)
  --max-processes N   Live processes over all sessions (default 256; 64 per session)`;

// Defect 7 (SECURITY_TESTS.md): a warning at start-up recommending
// --token-file would mislead, since a same-user program can read the token
// file as well as /proc/<pid>/environ; the help says what each choice exposes.
const TOKEN_EXPOSURE_HELP =
  `Programs run with confinement none run as this user and can read the token,
from this process's environment (/proc/PID/environ) or from the token file
alike. Under --min-confinement os they cannot see this process, so
OUTPOST_TOKEN stays hidden, but they can read the files this user can, a token
file included.`;

/** Exit code for bad usage (unknown flag, missing value). */
const EXIT_USAGE = 2;
/** Exit code when outpost itself fails (refused token, unreachable executor). */
const EXIT_FAILURE = 1;
/** Exit code of `exec` when the program could not be run at all (as ssh does). */
const EXIT_EXEC_FAILURE = 255;
/**
 * Exit code of `exec` when its stdout or stderr is a closed pipe: 128 + SIGPIPE,
 * what a shell reports for the writer of `yes | head`.
 */
const EXIT_BROKEN_PIPE = signalExitCode("SIGPIPE");
/** Exit code of `exec` after a third Ctrl-C: 128 + SIGINT. */
const EXIT_INTERRUPTED = signalExitCode("SIGINT");
/** Exit code of `exec` when its program outlives a SIGTERM by the grace: 128 + SIGTERM. */
const EXIT_TERMINATED = signalExitCode("SIGTERM");
/**
 * The most `exec` writes to its stdout or stderr at once: after a SIGTERM a
 * reader taking at least this much every 2 s counts as making progress.
 */
const WRITE_SLICE_BYTES = 16 * 1024;
/** SIGINTs closer together than this count as one Ctrl-C. */
const INTERRUPT_REPEAT_MS = 200;
/**
 * How long `exec` waits for a program it stops (its output cannot be written,
 * or a third Ctrl-C): after SIGTERM before SIGKILL, and after SIGKILL before
 * leaving anyway.
 */
const STOP_GRACE_MS = 2_000;

const encoder = new TextEncoder();

class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const GLOBAL_HELP = `outpost ${VERSION}: a Deno-native remote executor

Usage:
  outpost [serve] [--listen ws://127.0.0.1:0] [--allow-remote]
  outpost rendezvous [--listen ws://HOST:PORT] [--public-url URL] [--url-ttl-ms N]
  outpost executor --registry URL --executor-id ID [--name NAME]
  outpost exec --url URL [--executor-id ID] [--cwd DIR] [--env K=V]... [--tty] -- PROGRAM [ARGS...]

Commands:
  serve        Run a local executor on a loopback WebSocket (the default)
  rendezvous   Run the relay and executor registry in one server
  executor     Register with a rendezvous and serve the streams it routes here
  exec         Run one program on an executor and stream its output here

Options for every command:
  --token-file FILE       Read the bearer token from FILE (else OUTPOST_TOKEN)
  --log-format text|json  Log lines on stderr as human text or JSON (default text)
  --log-level LEVEL       debug, info, warn or error (default info; warn for exec,
                          so its stderr is the program's: info adds a summary)
  -h, --help              Show help for the command
  --version               Print the version

Tokens are never accepted as flags. Run "outpost COMMAND --help" for details.
`;

const HELP: Record<string, string> = {
  serve:
    `Usage: outpost serve [--listen URL] [--allow-remote] [--allow-origin ORIGIN]... [--token-file FILE]
                     [--initialize-timeout-ms N]

Runs a local executor: a WebSocket listener where each text message is one
JSON-RPC message (the Codex local transport). Prints the URL it listens on.

Options:
  --listen URL        ws://HOST:PORT to listen on (default ws://127.0.0.1:0, a free port)
  --allow-remote      Allow a non-loopback --listen address; requires a token
  --allow-origin ORIGIN
                      Accept WebSockets from this web origin (repeatable), written
                      as browsers send it: scheme://host[:port], no path, no
                      trailing slash, no "*"; any other request carrying an
                      Origin header (a web page) is refused
  --token-file FILE   Require this bearer token from clients (else OUTPOST_TOKEN, if set)
  --initialize-timeout-ms N
                      Close a connection whose initialize has not been answered
                      within N ms (default 30000; at most --max-sessions such
                      connections wait at once)
${EXECUTOR_FLAGS_HELP}
  --log-format, --log-level, -h/--help as for every command

Example:
  deno task start
`,
  rendezvous:
    `Usage: outpost rendezvous [--listen ws://HOST:PORT] [--public-url URL] [--url-ttl-ms N]
                          [--token-file FILE]

Runs the relay and the executor registry in one server. Executors register with
POST /cloud/executor/{id}/register and get a short-lived signed URL; harnesses
connect to /harness/{id}?role=harness. Both authenticate with the bearer token
(OUTPOST_TOKEN or --token-file); a harness may instead use a short-lived signed
URL from POST /cloud/executor/{id}/connect (asked for with the token). Set
OUTPOST_SIGNING_KEY (32+ characters) to keep signed URLs valid across restarts
(a random key is used otherwise). Prints the URL it listens on.

For the first 30 s after it starts (the detach window), a harness stream for an
executor id with no executor socket waits for that executor instead of failing
with executor_offline, so sessions survive a restart of the rendezvous whichever
side reconnects first. The price: in that window an unknown executor id waits
up to 30 s instead of failing fast.

Options:
  --listen URL        ws://HOST:PORT to listen on (default ws://127.0.0.1:0)
  --url-ttl-ms N      Lifetime of a signed executor or harness URL, from 1000 to
                      86400000 (a day; default 60000)
  --public-url URL    Base of the signed URLs handed out, as clients reach this
                      server: wss://HOST[:PORT][/PATH] behind a TLS proxy (ws://
                      or wss://, no query, fragment or credentials, not port 0;
                      a PATH is for a proxy that strips it; default ws:// and
                      the request's Host header)
  --token-file FILE   Read the token from FILE (else OUTPOST_TOKEN; required)
  --log-format, --log-level, -h/--help as for every command

Example:
  OUTPOST_TOKEN=$(cat ~/.outpost-token) deno task rendezvous --listen ws://127.0.0.1:8700
`,
  executor:
    `Usage: outpost executor --registry URL --executor-id ID [--name NAME] [--token-file FILE]

Registers with the registry, connects to the signed rendezvous URL it returns and
serves every stream routed to it. Reconnects with backoff (1 s doubling to 30 s,
jittered; at most 5 s apart for the 30 s after a lost socket) and registers
afresh each time; streams resume within 30 s. A refused token is fatal.

${TOKEN_EXPOSURE_HELP}

Options:
  --registry URL      The rendezvous/registry URL (http://, https://, ws:// or wss://)
  --executor-id ID    1..256 ASCII letters, digits, "-" or "_"
  --name NAME         Display name sent at registration (default outpost)
  --token-file FILE   Read the token from FILE (else OUTPOST_TOKEN; required)
${EXECUTOR_FLAGS_HELP}
  --log-format, --log-level, -h/--help as for every command

Example:
  OUTPOST_TOKEN=... deno task executor --registry ws://127.0.0.1:8700 --executor-id box-1
`,
  exec:
    `Usage: outpost exec --url URL [--executor-id ID] [--cwd DIR] [--env K=V]... [--tty] -- PROGRAM [ARGS...]

Runs PROGRAM on an executor: a local one (the URL "serve" printed) or, with
--executor-id, one behind a rendezvous. Its stdout and stderr are copied here
byte for byte; our stdin is forwarded when it is not a terminal (and closed at
EOF); Ctrl-C is forwarded as SIGINT, and a third Ctrl-C kills the program
(SIGKILL) and exits 130; SIGTERM is forwarded, a program still running 2 s
later gets SIGKILL, and exec leaves (exit 143) once its output copy is stuck
for 2 s. Exits with the program's exit code (128+n when a
signal n ended it), 2 for bad usage, or 255 when it could not be run. When
our stdout or stderr cannot be written, the program is stopped (SIGTERM,
SIGKILL after 2 s) and exec exits 141 for a closed pipe (as in "| head"),
1 for any other write error. With --tty and stdout a terminal, the program's
terminal gets our size and follows its changes.

Options:
  --url URL           The serve URL, the rendezvous URL with --executor-id, or a
                      signed harness URL from the rendezvous (no token needed,
                      and none is sent with it)
  --executor-id ID    Run through the rendezvous on this executor
  --cwd DIR           Working directory on the executor (absolute)
  --env K=V           Set an environment variable for the program (repeatable)
  --tty               Run under a terminal (stdout carries the terminal)
  --timeout-ms N      Have the executor kill the program after N ms (exit 124)
  --confinement LEVEL Ask for none, deno (PROGRAM is a Deno module) or os;
                      else the executor's minimum applies
  --token-file FILE   Read the token from FILE (else OUTPOST_TOKEN)
  --log-format, --log-level, -h/--help as for every command

Example:
  deno task exec --url ws://127.0.0.1:8700 --executor-id box-1 -- sh -c 'uname -a'
`,
};

const COMMON_OPTIONS = {
  "token-file": { type: "string" },
  "log-format": { type: "string" },
  "log-level": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} as const;

interface Context {
  log: Logger;
  startedAt: number;
  tokenFile: string | undefined;
}

function writeErr(text: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(text));
  } catch {
    // A closed or full stderr has nowhere to report to; the exit code tells.
  }
}

function writeOut(text: string): void {
  Deno.stdout.writeSync(encoder.encode(text));
}

function elapsed(context: Context): string {
  return `${((performance.now() - context.startedAt) / 1000).toFixed(1)} s`;
}

function parse<
  T extends Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }>,
>(
  command: string,
  args: string[],
  options: T,
) {
  try {
    return parseArgs({
      args,
      options: { ...COMMON_OPTIONS, ...options },
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    const message = (error as Error).message.replace(/\. To specify a positional.*$/s, "");
    // `exec --url U sh -c …` without `--`: the program's own flags look like exec's.
    const hint = command === "exec" && !args.includes("--")
      ? `; put the program and its arguments after "--", e.g. outpost exec --url URL -- sh -c '…'`
      : "";
    throw new UsageError(`Cannot parse ${command} options: ${message}${hint}`);
  }
}

function makeLogger(values: Record<string, unknown>, defaultLevel: LogLevel): Logger {
  const format = (values["log-format"] ?? "text") as string;
  if (format !== "text" && format !== "json") {
    throw new UsageError(`Cannot use --log-format ${format}: choose text or json`);
  }
  const level = (values["log-level"] ?? defaultLevel) as string;
  if (!["debug", "info", "warn", "error"].includes(level)) {
    throw new UsageError(`Cannot use --log-level ${level}: choose debug, info, warn or error`);
  }
  return createLogger({
    format: format as LogFormat,
    level: level as LogLevel,
    write: (line) => writeErr(line + "\n"),
  });
}

/**
 * Warns when other users may read or change the token file (as ssh refuses
 * such a key; a warning here, since the file may sit on a filesystem without
 * modes). Nothing is said when its mode cannot be read.
 */
async function warnIfShared(log: Logger, file: string): Promise<void> {
  const mode = (await Deno.stat(file).catch(() => null))?.mode;
  if (mode === null || mode === undefined || (mode & 0o077) === 0) return;
  const octal = (mode & 0o777).toString(8).padStart(4, "0");
  log.warn(
    `token file ${file} is open to other users (mode ${octal}): anyone who can read it can ` +
      `use the token; chmod 600 it`,
  );
}

/** A value as a hint shows it in a command: quoted for the shell unless plainly safe. */
function shellWord(value: string): string {
  return /^[\w.:\/@%+,-]+$/.test(value) ? value : shellQuote(value);
}

/** The `host:port` of a URL for a hint, or `HOST` when it does not parse. */
function urlHost(url: string): string {
  try {
    return new URL(url).host || "HOST";
  } catch {
    return "HOST";
  }
}

/** Reads the token from --token-file or OUTPOST_TOKEN, with a hint when read access is missing. */
async function loadToken(context: Context, required: boolean): Promise<string | undefined> {
  const file = context.tokenFile;
  try {
    const token = await readToken({ required, ...(file !== undefined ? { tokenFile: file } : {}) });
    // A registry's error body or the id it confirms may quote the token.
    if (token !== undefined) context.log.addSecret(token);
    if (file !== undefined) await warnIfShared(context.log, file);
    return token;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable && file !== undefined) {
      throw new UsageError(
        `Cannot read token file ${file}: read access is not granted; run deno run -P=NAME --allow-read=${
          shellWord(file)
        } cli.ts … (a deno task cannot take the flag)`,
      );
    }
    if (error instanceof TypeError || error instanceof Deno.errors.NotFound) {
      throw new UsageError(error.message);
    }
    if (file !== undefined && error instanceof Error) {
      // "Is a directory (os error 21): readfile '…'" says it twice.
      const why = /^(.*?) \(os error \d+\)/s.exec(error.message)?.[1] ?? error.message;
      throw new UsageError(`Cannot read token file ${file}: ${why}`);
    }
    throw error;
  }
}

async function makeExecutor(values: Record<string, unknown>): Promise<Executor> {
  const confinement = values["min-confinement"] as string | undefined;
  if (confinement !== undefined && !["none", "deno", "os"].includes(confinement)) {
    throw new UsageError(`Cannot use --min-confinement ${confinement}: choose none, deno or os`);
  }
  const writeRoots = values["write-root"] as string[] | undefined;
  const cwd = values.cwd as string | undefined;
  const maxSessions = positiveInteger(
    "--max-sessions",
    values["max-sessions"] as string | undefined,
  );
  const maxProcesses = positiveInteger(
    "--max-processes",
    values["max-processes"] as string | undefined,
  );
  if (cwd !== undefined) await checkCwd(cwd);
  // The library drops an unusable write root silently; an operator must hear of it.
  const { writeRootProblem } = await import("./lib/exec/confinement.ts");
  for (const root of writeRoots ?? []) {
    const problem = await writeRootProblem(root);
    if (problem !== null) throw new UsageError(`Cannot use --write-root ${root}: ${problem}`);
  }
  const { Executor } = await import("./lib/exec/executor.ts");
  try {
    return new Executor({
      ...(cwd !== undefined ? { cwd } : {}),
      ...(writeRoots !== undefined ? { writeRoots } : {}),
      ...(maxSessions !== undefined ? { maxSessions } : {}),
      ...(maxProcesses !== undefined ? { maxProcesses } : {}),
      ...(confinement !== undefined
        ? { minConfinement: confinement as "none" | "deno" | "os" }
        : {}),
    });
  } catch (error) {
    if (error instanceof TypeError || error instanceof RangeError) {
      throw new UsageError(error.message);
    }
    throw error;
  }
}

/**
 * Refuses a `--cwd` that cannot work, at start rather than at every program's
 * start. Without read access it is left to the spawn (asking would prompt).
 */
async function checkCwd(cwd: string): Promise<void> {
  if (!cwd.startsWith("/")) {
    throw new UsageError(`Cannot use --cwd ${cwd}: it must be an absolute path`);
  }
  const { isGrantedValue } = await import("./lib/exec/_permissions.ts");
  if (!(await isGrantedValue({ name: "read", path: cwd }))) return;
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(cwd);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory) {
      throw new UsageError(`Cannot use --cwd ${cwd}: it does not exist`);
    }
    return;
  }
  if (!info.isDirectory) throw new UsageError(`Cannot use --cwd ${cwd}: it is not a directory`);
}

function requireNoPositionals(command: string, positionals: string[]): void {
  if (positionals.length > 0) {
    throw new UsageError(`Cannot run ${command}: unexpected argument "${positionals[0]}"`);
  }
}

function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function parseListen(command: string, value: string | undefined): string {
  const listen = value ?? "ws://127.0.0.1:0";
  const shown = shownUnparsedUrl(listen); // an @ may be a password's
  let url: URL;
  try {
    url = new URL(listen);
  } catch {
    throw new UsageError(`Cannot use --listen ${shown}: it is not a ws://HOST:PORT URL`);
  }
  if (url.protocol !== "ws:") {
    throw new UsageError(`Cannot use --listen ${shown}: ${command} listens on ws:// only`);
  }
  if (
    url.pathname !== "/" || url.search !== "" || url.hash !== "" || url.username !== "" ||
    url.password !== ""
  ) {
    throw new UsageError(
      `Cannot use --listen ${shown}: it must be a bare ws://HOST:PORT, without a path, query or credentials`,
    );
  }
  return listen;
}

/**
 * Turns what a server library refuses at start into a usage error: a bad
 * option (TypeError, RangeError), or a listen address Deno grants no net
 * access to (the permission sets grant only 127.0.0.1 and localhost).
 */
function startError(listen: string, error: unknown): unknown {
  if (error instanceof Deno.errors.NotCapable) {
    const host = new URL(listen).hostname;
    return new UsageError(
      `Cannot listen on ${listen}: this deno process has no net access to ${host}; run deno with --allow-net=${host} (the executor and rendezvous permission sets grant only 127.0.0.1 and localhost)`,
    );
  }
  if (error instanceof TypeError || error instanceof RangeError) {
    return new UsageError(error.message);
  }
  const port = Number(new URL(listen).port || 80);
  if (error instanceof Deno.errors.AddrInUse) {
    return new Error(`Cannot listen on ${listen}: port ${port} is in use`, { cause: error });
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    const why = port < 1024
      ? `port ${port} is below 1024, which needs root or CAP_NET_BIND_SERVICE (a URL without a port means 80)`
      : "the system refused it";
    return new Error(`Cannot listen on ${listen}: ${why}`, { cause: error });
  }
  return error;
}

/** What closing an executor (`serve`, `executor`) does, for the second signal's log line. */
const PROGRAMS_STOPPING = "programs get SIGTERM, then SIGKILL after 2 s";

/**
 * Waits for SIGINT or SIGTERM (the first; later ones are logged and ignored);
 * returns the name and a cleanup. `stopping` says what the close does, for
 * that log line.
 */
function shutdownSignal(
  log: Logger,
  stopping: string,
): { promise: Promise<Deno.Signal>; dispose: () => void } {
  let started = false;
  let resolve!: (signal: Deno.Signal) => void;
  const promise = new Promise<Deno.Signal>((r) => (resolve = r));
  // Listening on until the close has finished: a second Ctrl-C (`deno task`
  // forwards one press more than once) would otherwise kill the process
  // mid-close and leave its programs running.
  const on = (signal: Deno.Signal) => (): void => {
    if (started) {
      log.warn(`already stopping (${signal} ignored): ${stopping}`);
      return;
    }
    started = true;
    resolve(signal);
  };
  const onInt = on("SIGINT");
  const onTerm = on("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  return {
    promise,
    dispose: () => {
      Deno.removeSignalListener("SIGINT", onInt);
      Deno.removeSignalListener("SIGTERM", onTerm);
    },
  };
}

async function runServe(args: string[], context: Context): Promise<number> {
  const { values, positionals } = parse("serve", args, {
    listen: { type: "string" },
    "allow-remote": { type: "boolean" },
    "allow-origin": { type: "string", multiple: true },
    "initialize-timeout-ms": { type: "string" },
    ...EXECUTOR_FLAGS,
  });
  requireNoPositionals("serve", positionals);
  const listen = parseListen("serve", values.listen);
  const initializeTimeoutMs = positiveInteger(
    "--initialize-timeout-ms",
    values["initialize-timeout-ms"],
    MAX_TIMER_MS,
  );
  const allowRemote = values["allow-remote"] ?? false;
  const token = await loadToken(context, false);
  const host = new URL(listen).hostname;
  if (!isLoopbackHost(host)) {
    if (!allowRemote) {
      throw new UsageError(
        `Cannot listen on ${listen}: ${host} is not a loopback address; pass --allow-remote (and a token) to expose the executor`,
      );
    }
    if (token === undefined) {
      throw new UsageError(
        `Cannot listen on ${listen} with --allow-remote: set OUTPOST_TOKEN or --token-file so clients must authenticate`,
      );
    }
  }
  const executor = await makeExecutor(values);
  const { serveLocal } = await import("./lib/server/local_server.ts");
  const signals = shutdownSignal(context.log, PROGRAMS_STOPPING);
  let server;
  try {
    server = await serveLocal({
      listen,
      allowRemote,
      allowedOrigins: values["allow-origin"] ?? [],
      executor,
      ...(token !== undefined ? { token } : {}),
      ...(initializeTimeoutMs !== undefined ? { initializeTimeoutMs } : {}),
      onEvent: (event) => {
        if (event.type === "failed") {
          context.log.error("cannot serve a request", { error: event.message });
        } else if (event.type === "refused") {
          const { type: _type, ...fields } = event;
          context.log.warn("refused a request", fields);
        } else {
          logListenerEvent(context.log, event);
        }
      },
    });
  } catch (error) {
    signals.dispose();
    await executor.close();
    throw startError(listen, error);
  }
  writeOut(server.url + "\n");
  context.log.info("serving local executor", { url: server.url, auth: token ? "token" : "none" });
  const why = await Promise.race([signals.promise, server.closed.then(() => "closed" as const)]);
  // The programs end first, while their connections are up: their last
  // output and exit reach the harnesses. Then the server drops every
  // connection (a client that no longer answers included), then the rest.
  await executor.endPrograms();
  await server.close();
  await executor.close();
  signals.dispose();
  context.log.info(`outpost serve: stopped (${why}) after ${elapsed(context)}`);
  return 0;
}

/**
 * Checks `--public-url`: the base of the signed URLs the rendezvous hands out,
 * as clients reach it (`wss://` behind a TLS proxy). Only ws:// or wss://, with
 * no query, fragment or credentials, since the rendezvous appends
 * `/ROLE/ID?role=…&exp=…&sig=…` to it.
 */
function parsePublicUrl(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const shown = shownUnparsedUrl(value); // an @ may be a password's
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(
      `Cannot use --public-url ${shown}: it is not a URL (expected wss://HOST[:PORT][/PATH])`,
    );
  }
  const fail = (why: string): never => {
    throw new UsageError(`Cannot use --public-url ${shown}: ${why}`);
  };
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    fail(`the scheme must be ws:// or wss://, not ${url.protocol}//`);
  }
  if (url.search !== "" || value.includes("?")) fail("it must not have a query");
  if (url.hash !== "" || value.includes("#")) fail("it must not have a fragment");
  if (url.username !== "" || url.password !== "") fail("it must not carry credentials");
  if (url.port === "0") fail("port 0 is not one clients can reach");
  return value;
}

/** Logs a server's listener failing (out of file descriptors) and coming back: `serve` and `rendezvous`. */
function logListenerEvent(log: Logger, event: ListenerEvent): void {
  if (event.type === "listener_failed") {
    // Out of file descriptors (idle connections nobody closes, see the
    // README), or the port taken meanwhile: open connections are still served.
    log.warn(
      "stopped accepting connections, still serving open ones; listening again",
      { error: event.message, retryInMs: event.retryInMs },
    );
  } else {
    // As loud as the warning it answers.
    log.warn("accepting connections again", { downMs: event.downMs, attempts: event.attempts });
  }
}

async function runRendezvousCommand(args: string[], context: Context): Promise<number> {
  const { values, positionals } = parse("rendezvous", args, {
    listen: { type: "string" },
    "url-ttl-ms": { type: "string" },
    "public-url": { type: "string" },
  });
  requireNoPositionals("rendezvous", positionals);
  const listen = parseListen("rendezvous", values.listen);
  const publicUrl = parsePublicUrl(values["public-url"]);
  const { MAX_URL_TTL_MS, MIN_URL_TTL_MS, serveRendezvous } = await import(
    "./lib/server/rendezvous_server.ts"
  );
  // At least a second, or the URL expires before the executor connects with it.
  const urlTtlMs = positiveInteger(
    "--url-ttl-ms",
    values["url-ttl-ms"],
    MAX_URL_TTL_MS,
    MIN_URL_TTL_MS,
  );
  const token = (await loadToken(context, true))!;
  let signingKey: Uint8Array | undefined;
  const keyPermission = await Deno.permissions.query({
    name: "env",
    variable: "OUTPOST_SIGNING_KEY",
  });
  let keyText: string | undefined;
  if (keyPermission.state === "granted") {
    keyText = Deno.env.get("OUTPOST_SIGNING_KEY")?.trim();
  } else {
    // Whether it is set cannot be told: say so rather than drop it unseen.
    context.log.warn(
      "Cannot read OUTPOST_SIGNING_KEY: env access to it is not granted (--allow-env=OUTPOST_SIGNING_KEY, " +
        "as the rendezvous permission set gives); signed URLs use a random key and end with this process",
    );
  }
  if (keyText === "") {
    // Set but blank (an unfilled template): a random key would end signed URLs at a restart, unseen.
    throw new UsageError(
      "Cannot use OUTPOST_SIGNING_KEY: it is set but blank; set 32+ characters, or unset it for a random key",
    );
  }
  if (keyText) {
    context.log.addSecret(keyText);
    if (keyText.length < 32) {
      throw new UsageError("Cannot use OUTPOST_SIGNING_KEY: it must be at least 32 characters");
    }
    signingKey = encoder.encode(keyText);
  }
  const signals = shutdownSignal(context.log, "closing the connections");
  let server;
  try {
    server = await serveRendezvous({
      listen,
      token,
      ...(signingKey ? { signingKey } : {}),
      ...(urlTtlMs !== undefined ? { urlTtlMs } : {}),
      ...(publicUrl !== undefined ? { publicUrl } : {}),
      onEvent: (event) => {
        if (event.type === "refused") {
          context.log.warn("refused a request", {
            target: event.target,
            status: event.status,
            code: event.code,
          });
        } else if (event.type === "registered") {
          context.log.info("executor registered", { executorId: event.executorId });
        } else if (event.type === "listener_failed" || event.type === "accepting_again") {
          logListenerEvent(context.log, event);
        } else if (event.type === "executor_attached" && event.replaced) {
          // A reconnect whose old socket was still open, or two executors
          // sharing an id (the replaced one stops).
          context.log.warn("executor socket replaced by a newer one for the same id", {
            executorId: event.executorId,
          });
        } else if (event.type === "bad_frames") {
          const { type: _, ...fields } = event;
          context.log.warn("dropped bad relay frames", fields);
        } else if (event.type === "peer_dropped" || event.type === "frames_dropped") {
          // A socket that fell too far behind, or data shed for one: what an
          // operator looks for when a harness says it was disconnected.
          const { type, ...fields } = event;
          context.log.warn(
            type === "peer_dropped" ? "dropped a socket that fell behind" : "dropped frames",
            fields,
          );
        } else {
          // Router events (attach, detach, expiry) carry ids and counts only.
          const { type, ...fields } = event;
          context.log.debug(type, fields);
        }
      },
    });
  } catch (error) {
    signals.dispose();
    throw startError(listen, error);
  }
  writeOut(server.url + "\n");
  context.log.info("serving rendezvous", { url: server.url });
  const why = await Promise.race([signals.promise, server.closed.then(() => "closed" as const)]);
  await server.close();
  signals.dispose();
  context.log.info(`outpost rendezvous: stopped (${why}) after ${elapsed(context)}`);
  return 0;
}

async function runExecutorCommand(args: string[], context: Context): Promise<number> {
  const { values, positionals } = parse("executor", args, {
    registry: { type: "string" },
    "executor-id": { type: "string" },
    name: { type: "string" },
    ...EXECUTOR_FLAGS,
  });
  requireNoPositionals("executor", positionals);
  if (!values.registry) throw new UsageError("Cannot run executor: --registry URL is required");
  if (!values["executor-id"]) {
    throw new UsageError("Cannot run executor: --executor-id ID is required");
  }
  const token = (await loadToken(context, true))!;
  const log = context.log;
  let connects = 0;
  const executor = await makeExecutor(values);
  const { runExecutor } = await import("./lib/server/executor_loop.ts");
  const signals = shutdownSignal(context.log, PROGRAMS_STOPPING);
  let handle;
  try {
    handle = runExecutor({
      executor,
      registry: values.registry,
      executorId: values["executor-id"],
      token,
      ...(values.name !== undefined ? { name: values.name } : {}),
      onEvent: (event) => {
        switch (event.type) {
          case "registered":
            log.debug("registered", { executorId: event.executorId });
            break;
          case "connected":
            connects++;
            log.info("connected to rendezvous", { executorId: event.executorId });
            break;
          case "disconnected":
            log.warn("lost rendezvous socket", { code: event.code, reason: event.reason });
            break;
          case "retrying":
            log.warn("retrying", {
              delayMs: event.delayMs,
              ...(event.error ? { error: event.error.message } : {}),
            });
            break;
          case "stream_error":
            log.warn("stream failed", { streamId: event.streamId, error: event.error.message });
            break;
          case "bad_frames":
            log.warn("dropped bad relay frames", {
              dropped: event.dropped,
              error: event.error.message,
            });
            break;
          case "closed":
            break;
        }
      },
    });
  } catch (error) {
    signals.dispose();
    await executor.close();
    if (error instanceof TypeError || error instanceof RangeError) {
      throw new UsageError(error.message);
    }
    throw error;
  }
  log.info("executor starting", { executorId: handle.executorId, registry: values.registry });
  const outcome = await Promise.race([
    signals.promise.then((signal) => ({ signal })),
    handle.closed.then(() => ({ error: undefined }), (error: Error) => ({ error })),
  ]);
  // As for serve: the programs end first, while their streams are up.
  await executor.endPrograms();
  await handle.close();
  await executor.close();
  signals.dispose();
  if ("error" in outcome && outcome.error) {
    log.error(outcome.error.message);
    log.info(`outpost executor: failed after ${elapsed(context)}, ${connects} connects`);
    return EXIT_FAILURE;
  }
  const why = "signal" in outcome ? outcome.signal : "closed";
  log.info(`outpost executor: stopped (${why}) after ${elapsed(context)}, ${connects} connects`);
  return 0;
}

/**
 * An integer flag written in decimal digits only (`1e3`, `0x10` or `+5`
 * would hide a typo), from `min` (1 unless given) to `max` when one is given.
 */
function positiveInteger(
  flag: string,
  value: string | undefined,
  max?: number,
  min = 1,
): number | undefined {
  if (value === undefined) return undefined;
  const n = /^[0-9]+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || (max !== undefined && n > max)) {
    const expected = max === undefined ? "a positive integer" : `an integer from ${min} to ${max}`;
    throw new UsageError(`Cannot use ${flag} ${value}: expected ${expected}`);
  }
  return n;
}

function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`Cannot use --env ${pair}: expected NAME=VALUE`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

/** Our own stdout or stderr failed a write: no fault of the program or the connection. */
class LocalOutputError extends Error {
  constructor(readonly streamName: "stdout" | "stderr", cause: unknown) {
    super(`Cannot write to ${streamName}: ${(cause as Error).message}`, { cause });
    this.name = "LocalOutputError";
  }

  /** True for EPIPE: the reader went away, as `head` does. */
  get brokenPipe(): boolean {
    return this.cause instanceof Deno.errors.BrokenPipe;
  }
}

/**
 * Copies a program's output to `file`. A failed write throws
 * {@linkcode LocalOutputError} (and cancels `stream`, so unread output stops
 * holding the connection).
 */
async function copyOut(
  stream: ReadableStream<Uint8Array>,
  file: typeof Deno.stdout,
  streamName: "stdout" | "stderr",
  onProgress: () => void = () => {},
): Promise<number> {
  let total = 0;
  for await (const chunk of stream) {
    total += chunk.byteLength;
    let offset = 0;
    while (offset < chunk.byteLength) {
      try {
        // In slices: into a full pipe a write returns only once the reader
        // took all of it, and a slow reader must still show as progress.
        offset += await file.write(chunk.subarray(offset, offset + WRITE_SLICE_BYTES));
      } catch (error) {
        throw new LocalOutputError(streamName, error);
      }
      onProgress();
    }
  }
  return total;
}

/** Resolves true when `promise` settles within `ms`, false when the time runs out first. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Stops a program whose output can no longer be delivered, so it does not
 * run on unseen until the session expires. The executor accepts no SIGPIPE,
 * so: SIGTERM, then SIGKILL after {@linkcode STOP_GRACE_MS}.
 *
 * @returns What happened, for the log ("stopped sh with SIGTERM").
 */
async function stopProgram(child: RemoteProcess, program: string, log: Logger): Promise<string> {
  if (await settlesWithin(child.status, 0)) return `${program} had already ended`;
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    const sent = child.kill(signal).catch((error) => {
      log.warn("cannot stop the program", { signal, error: error.message });
    });
    if (await settlesWithin(sent.then(() => child.status), STOP_GRACE_MS)) {
      return `stopped ${program} with ${signal}`;
    }
  }
  return `${program} did not stop within ${2 * STOP_GRACE_MS / 1000} s`;
}

/** The local terminal's size, when stdout is one. */
function localTerminalSize(): { cols: number; rows: number } | undefined {
  if (!Deno.stdout.isTerminal()) return undefined;
  try {
    const { columns, rows } = Deno.consoleSize();
    return columns > 0 && rows > 0 ? { cols: columns, rows } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Forwards local terminal resizes (SIGWINCH) to `child`, at most one
 * `process/resize` in flight: sizes that arrive meanwhile collapse into the
 * latest. Returns the function that stops listening.
 */
function forwardResizes(
  child: RemoteProcess,
  log: Logger,
  sent: { cols: number; rows: number },
): () => void {
  let sending = false;
  let pending = false;
  const send = async (): Promise<void> => {
    sending = true;
    try {
      while (pending) {
        pending = false;
        const size = localTerminalSize();
        if (size === undefined) continue;
        await child.resize(size.cols, size.rows).catch((error) => {
          log.debug("cannot resize the terminal", { error: error.message });
        });
      }
    } finally {
      sending = false;
    }
  };
  const onResize = (): void => {
    pending = true;
    if (!sending) void send();
  };
  Deno.addSignalListener("SIGWINCH", onResize);
  // A resize while the program started (before this listener) went unheard:
  // the size the start carried may be stale already.
  const now = localTerminalSize();
  if (now !== undefined && (now.cols !== sent.cols || now.rows !== sent.rows)) onResize();
  return () => Deno.removeSignalListener("SIGWINCH", onResize);
}

/** Checks the exec flags that name the far side, so a bad value is a usage error. */
function checkExecTarget(url: string, executorId: string | undefined, cwd: string | undefined) {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`Cannot use --url ${shownUnparsedUrl(url)}: it is not a URL`);
  }
  if (parsed.username !== "" || parsed.password !== "") {
    // Not echoed: the message would print the password.
    throw new UsageError(
      "Cannot use --url: it must not carry credentials (user:password@); the token comes from OUTPOST_TOKEN or --token-file",
    );
  }
  if (!["ws:", "wss:", "http:", "https:"].includes(parsed.protocol)) {
    throw new UsageError(
      `Cannot use --url ${shownUnparsedUrl(url)}: the scheme must be ws, wss, http or https`,
    );
  }
  if (executorId !== undefined) {
    if (parsed.searchParams.has("sig")) {
      throw new UsageError(
        "Cannot use --executor-id with a signed harness URL: the URL names its executor and needs no token; drop --executor-id",
      );
    }
    try {
      harnessUrl(parsed, executorId);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  }
  if (cwd !== undefined && !cwd.startsWith("/")) {
    throw new UsageError(`Cannot use --cwd ${cwd}: it must be an absolute path`);
  }
}

async function runExec(args: string[], context: Context): Promise<number> {
  const split = args.indexOf("--");
  const flagArgs = split === -1 ? args : args.slice(0, split);
  const command = split === -1 ? [] : args.slice(split + 1);
  const { values, positionals } = parse("exec", flagArgs, {
    url: { type: "string" },
    "executor-id": { type: "string" },
    cwd: { type: "string" },
    env: { type: "string", multiple: true },
    tty: { type: "boolean" },
    "timeout-ms": { type: "string" },
    confinement: { type: "string" },
  });
  if (positionals.length > 0 && command.length === 0) {
    throw new UsageError(
      `Cannot run exec: put the program after "--", e.g. outpost exec --url URL -- ${
        positionals[0]
      }`,
    );
  }
  requireNoPositionals("exec", positionals);
  if (!values.url) throw new UsageError("Cannot run exec: --url URL is required");
  if (command.length === 0) {
    throw new UsageError("Cannot run exec: no program given after --");
  }
  const env = parseEnv((values.env ?? []) as string[]);
  const timeoutMs = positiveInteger("--timeout-ms", values["timeout-ms"], MAX_COMMAND_TIMEOUT_MS);
  const confinement = values.confinement;
  if (confinement !== undefined && !["none", "deno", "os"].includes(confinement)) {
    throw new UsageError(`Cannot use --confinement ${confinement}: expected none, deno or os`);
  }
  const executorId = values["executor-id"];
  checkExecTarget(values.url, executorId, values.cwd);
  // A signed harness URL is its own credential, and may come from someone
  // else: the token (OUTPOST_TOKEN, or a --token-file) never goes to the
  // host it names.
  const signed = new URL(values.url!).searchParams.has("sig");
  if (signed && context.tokenFile !== undefined) {
    throw new UsageError(
      "Cannot use --token-file with a signed harness URL: the URL is its own credential and is sent no token; drop --token-file",
    );
  }
  const token = signed ? undefined : await loadToken(context, executorId !== undefined);
  const log = context.log;
  const tty = values.tty ?? false;
  const stdinIsTerminal = Deno.stdin.isTerminal();
  const forwardStdin = !stdinIsTerminal || tty;

  let connection: Connection;
  try {
    connection = await connect(values.url, {
      ...(token !== undefined ? { token } : {}),
      ...(executorId !== undefined ? { executorId } : {}),
      clientName: "outpost-exec",
      onEvent: (event) => {
        if (event.type === "disconnected") {
          log.warn("lost connection, reconnecting", { code: event.code, reason: event.reason });
        } else if (event.type === "reconnected") {
          // As loud as the warning it answers.
          log.warn("reconnected", { attempt: event.attempt });
        }
      },
    });
  } catch (error) {
    // Deno's refusal reaches us as an error event's text, not a NotCapable.
    const notGranted = error instanceof Deno.errors.NotCapable ||
      /Requires net access to/.test((error as Error).message);
    const hint = notGranted
      ? ` (run deno run -P=client --allow-net=${
        shellWord(urlHost(values.url))
      } cli.ts exec …: the client permission set grants only 127.0.0.1 and localhost)`
      : "";
    log.error(`${(error as Error).message}${hint}`);
    return EXIT_EXEC_FAILURE;
  }
  const [program, ...programArgs] = command;
  let child: RemoteProcess | undefined;
  let interrupts = 0;
  let lastInterruptAt = -Infinity;
  let termTimer: ReturnType<typeof setTimeout> | undefined;
  // Once the program has ended, only its output is left to copy: after a
  // SIGTERM that may take as long as it makes progress, no longer.
  let programEnded = false;
  let lastOutputAt = performance.now();
  const onOutput = (): void => void (lastOutputAt = performance.now());
  let leaving = false;
  let rawMode = false;
  let stopResizes = (): void => {};
  const forward = (signal: Deno.Signal): void => {
    // kill() is quiet when the program ends of the signal before the answer.
    // exec reads every byte: a forwarded SIGTERM must not drop output past the queue.
    child?.kill(signal, { keepOutput: true }).catch((error) => {
      log.warn("cannot forward signal", { error: error.message });
    });
  };
  // A program that traps the signal would outlive us until its session expires.
  const killAndLeave = (code: number, why: string): void => {
    if (leaving) return;
    leaving = true;
    log.warn(programEnded ? `${why}: leaving` : `${why}: killing the program and leaving`);
    const killed = child ? child.kill("SIGKILL") : Promise.resolve();
    void settlesWithin(killed, STOP_GRACE_MS).then(() => {
      if (rawMode) Deno.stdin.setRaw(false);
      Deno.exit(code);
    });
  };
  const onInt = (): void => {
    // One Ctrl-C can arrive more than once: `deno task` passes on the one
    // the terminal already sent us (twice, as seen with strace).
    const now = performance.now();
    if (now - lastInterruptAt < INTERRUPT_REPEAT_MS) return;
    lastInterruptAt = now;
    if (++interrupts === 3) killAndLeave(EXIT_INTERRUPTED, "third interrupt");
    else if (interrupts < 3) forward("SIGINT");
  };
  const onTerm = (): void => {
    forward("SIGTERM");
    if (termTimer !== undefined) return;
    // As a third Ctrl-C: `timeout` or a service manager must be able to stop
    // us. 2 s after SIGTERM a program not seen to end gets SIGKILL; its end may
    // also just wait behind output our reader has not taken, so every byte is
    // still kept, and we leave only once the output makes no progress for 2 s.
    let killed = false;
    const check = (): void => {
      if (!programEnded && !killed) {
        killed = true;
        log.warn(`no end of the program seen ${STOP_GRACE_MS} ms after SIGTERM: SIGKILL`);
        child?.kill("SIGKILL", { keepOutput: true }).catch(() => {});
        lastOutputAt = performance.now();
      }
      const idle = performance.now() - lastOutputAt;
      if (idle >= STOP_GRACE_MS) {
        killAndLeave(
          EXIT_TERMINATED,
          `after SIGTERM our output made no progress for ${STOP_GRACE_MS} ms`,
        );
        return;
      }
      termTimer = setTimeout(check, STOP_GRACE_MS - idle);
    };
    termTimer = setTimeout(check, STOP_GRACE_MS);
  };

  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  try {
    const size = tty ? localTerminalSize() : undefined;
    try {
      child = new RemoteCommand(connection, program, {
        args: programArgs,
        ...(values.cwd !== undefined ? { cwd: values.cwd } : {}),
        env,
        tty,
        ...(size ?? {}),
        stdin: forwardStdin ? "piped" : "null",
        stdout: "piped",
        stderr: "piped",
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        ...(confinement !== undefined
          ? { confinement: confinement as "none" | "deno" | "os" }
          : {}),
      }).spawn();
    } catch (error) {
      if (error instanceof TypeError || error instanceof RangeError) {
        throw new UsageError(error.message);
      }
      throw error;
    }
    child.status.finally(() => void (programEnded = true)).catch(() => {});
    try {
      await child.started;
    } catch (error) {
      const detail = error instanceof RpcError ? ` (code ${error.code})` : "";
      const message = (error as Error).message;
      // The executor's messages already say "Cannot start "tr": ...".
      const text = message.startsWith("Cannot start")
        ? message
        : `Cannot start ${program}: ${message}`;
      log.error(`${text}${detail}`);
      return EXIT_EXEC_FAILURE;
    }
    if (forwardStdin) {
      if (stdinIsTerminal && tty) {
        Deno.stdin.setRaw(true);
        rawMode = true;
      }
      Deno.stdin.readable.pipeTo(child.stdin).catch(() => {});
    }
    if (size !== undefined) stopResizes = forwardResizes(child, log, size);
    let outcome;
    try {
      outcome = await Promise.all([
        copyOut(child.stdout, Deno.stdout, "stdout", onOutput),
        copyOut(child.stderr, Deno.stderr, "stderr", onOutput),
        child.status,
      ]);
    } catch (error) {
      if (!(error instanceof LocalOutputError)) throw error;
      const stopped = await stopProgram(child, program, log);
      if (error.brokenPipe) {
        log.info(`outpost exec: ${error.streamName} is a closed pipe; ${stopped}`);
        return EXIT_BROKEN_PIPE;
      }
      log.error(`${error.message}; ${stopped}`);
      return EXIT_FAILURE;
    }
    const [stdoutBytes, stderrBytes, status] = outcome;
    if (child.droppedOutputBytes > 0) {
      // Past the 1 MiB a program may print while its executor stops.
      log.warn(
        `outpost exec: ${child.droppedOutputBytes} B of output were dropped as the executor stopped`,
      );
    }
    const how = status.signal
      ? `signal ${status.signal} (exit ${status.code})`
      : `exit ${status.code}`;
    log.info(
      `outpost exec: ${program} ended with ${how} after ${
        elapsed(context)
      }, ${stdoutBytes} B stdout, ${stderrBytes} B stderr`,
    );
    return status.code;
  } catch (error) {
    if (error instanceof UsageError) throw error;
    log.error(`Cannot run ${program}: ${(error as Error).message}`);
    return EXIT_EXEC_FAILURE;
  } finally {
    stopResizes();
    if (rawMode) Deno.stdin.setRaw(false);
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
    clearTimeout(termTimer);
    await connection.close();
  }
}

const COMMANDS: Record<string, (args: string[], context: Context) => Promise<number>> = {
  serve: runServe,
  rendezvous: runRendezvousCommand,
  executor: runExecutorCommand,
  exec: runExec,
};

/**
 * Runs the command line.
 *
 * @param argv The arguments after the program name.
 * @returns The process exit code.
 */
export async function main(argv: string[]): Promise<number> {
  const first = argv[0];
  let name = "serve";
  let rest = argv;
  if (first !== undefined && !first.startsWith("-")) {
    if (!(first in COMMANDS)) {
      writeErr(`Cannot run "${first}": unknown command (serve, rendezvous, executor, exec)\n`);
      writeErr(`Run "outpost --help" for usage\n`);
      return EXIT_USAGE;
    }
    name = first;
    rest = argv.slice(1);
  }
  const beforeDashes = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  if (beforeDashes.includes("--version")) {
    writeOut(`outpost ${VERSION}\n`);
    return 0;
  }
  if (beforeDashes.includes("--help") || beforeDashes.includes("-h")) {
    writeOut(first === undefined || first.startsWith("-") ? GLOBAL_HELP : HELP[name]);
    return 0;
  }
  for (const flag of ["--token", "--bearer-token"]) {
    if (beforeDashes.some((arg) => arg === flag || arg.startsWith(`${flag}=`))) {
      writeErr(
        `Cannot use ${flag}: tokens are never taken from flags (other users can read them); set OUTPOST_TOKEN or pass --token-file FILE\n`,
      );
      return EXIT_USAGE;
    }
  }
  let log: Logger;
  try {
    const { values } = parseArgs({
      args: beforeDashes,
      options: COMMON_OPTIONS,
      strict: false,
      allowPositionals: true,
    });
    // exec's stderr carries the program's stderr: only problems of its own join it.
    log = makeLogger(values, name === "exec" ? "warn" : "info");
    const context: Context = {
      log,
      startedAt: performance.now(),
      tokenFile: typeof values["token-file"] === "string" ? values["token-file"] : undefined,
    };
    return await COMMANDS[name](rest, context);
  } catch (error) {
    if (error instanceof UsageError) {
      writeErr(`${error.message}\nRun "outpost ${name} --help" for usage\n`);
      return EXIT_USAGE;
    }
    writeErr(`outpost ${name}: ${(error as Error).message}\n`);
    return name === "exec" ? EXIT_EXEC_FAILURE : EXIT_FAILURE;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
