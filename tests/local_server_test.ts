import assert from "node:assert/strict";
import { Executor, type ExecutorOptions } from "../lib/exec/executor.ts";
import { connect } from "../lib/client/connect.ts";
import { RemoteCommand } from "../lib/client/remote_command.ts";
import { RelayClosedError } from "../lib/errors.ts";
import type { MessageChannel } from "../lib/rpc/message_channel.ts";
import { MAX_UNCOUNTED_READ_WAITS } from "../lib/exec/session.ts";
import { MAX_QUEUED_BYTES, MAX_QUEUED_MESSAGES, serveLocal } from "../lib/server/local_server.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { killPids, livePidsWith, uniqueSleep } from "./_process_helpers.ts";
import { type Message, text, WsRpc } from "./_fixtures/ws_rpc.ts";
import { rawHttp, upgradeHead } from "./_support/raw_http.ts";

const D = 10_000;
const SECRET = "outpost-secret-value-7f3a";
const FIXTURE = new URL("./_fixtures/serve_restricted.ts", import.meta.url).pathname;

interface Restricted extends AsyncDisposable {
  url: string;
  dir: string;
}

/** Runs the executor in a subprocess with the acceptance permissions, granting only DIR. */
async function startRestricted(): Promise<Restricted> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_local_" }));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-net=127.0.0.1",
      "--allow-run=sh,cat,kill,bwrap,script,setsid",
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      "--allow-env",
      "--allow-sys",
      FIXTURE,
      dir,
    ],
    env: { OUTPOST_TEST_SECRET: SECRET },
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { value, done } = await withDeadline(reader.read(), D, "server URL");
    if (done) throw new Error("Cannot start the restricted executor: it exited");
    line += value;
  }
  return {
    url: line.trim(),
    dir,
    async [Symbol.asyncDispose]() {
      await child.stdin.close();
      await reader.cancel();
      const status = await withDeadline(child.status, D, "executor exit");
      await Deno.remove(dir, { recursive: true });
      assert.equal(status.code, 0);
    },
  };
}

function isNote(method: string, processId: string, extra?: (m: Message) => boolean) {
  return (m: Message): boolean =>
    m.method === method && m.params?.processId === processId && (extra?.(m) ?? true);
}

/** Collects a process's output from its notifications until process/closed. */
async function outputOf(rpc: WsRpc, processId: string): Promise<Record<string, string>> {
  await rpc.waitFor(isNote("process/closed", processId), D);
  const out: Record<string, string> = {};
  for (const m of rpc.received) {
    if (m.method !== "process/output" || m.params?.processId !== processId) continue;
    const stream = m.params.stream as string;
    out[stream] = (out[stream] ?? "") + text(m.params.chunk);
  }
  return out;
}

function assertDenied(reply: Message, ...mentions: string[]): void {
  assert.ok(reply.error, `expected an error, got ${JSON.stringify(reply)}`);
  assert.equal(reply.error.code, -32003, reply.error.message);
  for (const word of mentions) {
    assert.ok(reply.error.message.includes(word), `${reply.error.message} should name ${word}`);
  }
}

async function pidGone(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

Deno.test("serveLocal under restricted permissions serves processes and files and refuses what is not granted", async (t) => {
  await using server = await startRestricted();
  await using rpc = await WsRpc.open(server.url);
  await rpc.initialize();

  await t.step("sh -c with separate stdout and stderr and its exit code", async () => {
    await rpc.call("process/start", {
      processId: "sh1",
      argv: ["sh", "-c", "echo out; echo err >&2; exit 3"],
    });
    const exited = await rpc.waitFor(isNote("process/exited", "sh1"), D);
    assert.equal(exited.params!.exitCode, 3);
    assert.deepEqual(await outputOf(rpc, "sh1"), { stdout: "out\n", stderr: "err\n" });
  });

  await t.step("process/read replays the retained output", async () => {
    const read = await rpc.call("process/read", { processId: "sh1", afterSeq: 0 });
    const chunks = read.chunks as { seq: number; stream: string; chunk: string }[];
    const streams = Object.fromEntries(chunks.map((c) => [c.stream, text(c.chunk)]));
    assert.deepEqual(streams, { stdout: "out\n", stderr: "err\n" });
    assert.equal(read.exited, true);
    assert.equal(read.exitCode, 3);
    const rest = await rpc.call("process/read", { processId: "sh1", afterSeq: read.nextSeq });
    assert.deepEqual(rest.chunks, []);
    assert.equal(rest.closed, true);
  });

  await t.step("cat is fed and its stdin closed with eof", async () => {
    await rpc.call("process/start", { processId: "cat1", argv: ["cat"], pipeStdin: true });
    const chunk = new TextEncoder().encode("hello cat\n").toBase64();
    assert.deepEqual(await rpc.call("process/write", { processId: "cat1", chunk }), {
      status: "accepted",
    });
    assert.deepEqual(
      await rpc.call("process/write", { processId: "cat1", chunk: "", eof: true }),
      { status: "accepted" },
    );
    assert.deepEqual(await outputOf(rpc, "cat1"), { stdout: "hello cat\n" });
    const exited = rpc.received.find(isNote("process/exited", "cat1"))!;
    assert.equal(exited.params!.exitCode, 0);
    assert.deepEqual(await rpc.call("process/write", { processId: "cat1", chunk }), {
      status: "stdinClosed",
    });
  });

  await t.step("terminate kills a shell and all its background sleep children", async () => {
    await rpc.call("process/start", {
      processId: "tree",
      argv: ["sh", "-c", "sleep 100 & echo $!; sleep 100 & echo $!; wait"],
    });
    let pids: number[] = [];
    await until(
      () => {
        const out = rpc.received
          .filter(isNote("process/output", "tree"))
          .map((m) => text(m.params!.chunk))
          .join("");
        pids = out.split("\n").filter(Boolean).map(Number);
        return pids.length === 2;
      },
      D,
      "two sleep pids",
    );
    for (const pid of pids) assert.equal(await pidGone(pid), false);
    assert.deepEqual(await rpc.call("process/terminate", { processId: "tree" }), { running: true });
    await rpc.waitFor(isNote("process/closed", "tree"), D);
    await until(async () => (await pidGone(pids[0])) && (await pidGone(pids[1])), D, "sleeps gone");
    assert.deepEqual(await rpc.call("process/terminate", { processId: "tree" }), {
      running: false,
    });
  });

  await t.step(
    "a program that is not granted is refused and the server keeps serving",
    async () => {
      assertDenied(
        await rpc.request("process/start", { processId: "ls", argv: ["ls"] }),
        '"ls"',
        "run",
      );
      assert.equal((await rpc.call("environment/info")).cwd, server.dir);
    },
  );

  await t.step("reads and writes outside DIR are refused: absolute, .., symlink", async () => {
    const { dir } = server;
    assertDenied(await rpc.request("fs/readFile", { path: "/etc/passwd" }), "/etc/passwd", "read");
    assertDenied(
      await rpc.request("fs/readFile", { path: `${dir}/../../etc/passwd` }),
      "read access is not granted",
    );
    await Deno.symlink("/etc/passwd", `${dir}/link`);
    assertDenied(await rpc.request("fs/readFile", { path: `${dir}/link` }), "/etc/passwd");
    await Deno.symlink("/etc", `${dir}/etc`);
    assertDenied(await rpc.request("fs/readDirectory", { path: `${dir}/etc` }), "/etc");
    const outside = `${dir}-outside-target`;
    await Deno.symlink(outside, `${dir}/dangling`);
    assertDenied(
      await rpc.request("fs/writeFile", { path: `${dir}/dangling`, dataBase64: "YQ==" }),
      outside,
      "write",
    );
    assertDenied(
      await rpc.request("fs/writeFile", { path: `${dir}/../escape.txt`, dataBase64: "YQ==" }),
      "write access is not granted",
    );
    assertDenied(
      await rpc.request("fs/writeFile", { path: "/tmp/outpost-escape.txt", dataBase64: "YQ==" }),
      "write access is not granted",
    );
    assertDenied(
      await rpc.request("fs/createDirectory", { path: `${dir}/etc/evil` }),
      "/etc/evil",
    );
    await assert.rejects(Deno.stat(outside), Deno.errors.NotFound);
    // Removing the link itself (inside DIR) is allowed; its target is untouched.
    assert.deepEqual(await rpc.call("fs/remove", { path: `${dir}/etc` }), {});
    assert.ok((await Deno.stat("/etc")).isDirectory);
    assert.equal((await rpc.call("environment/info")).cwd, dir);
  });

  await t.step("a child does not inherit the executor's environment", async () => {
    await rpc.call("process/start", {
      processId: "env1",
      argv: ["sh", "-c", 'echo "[$OUTPOST_TEST_SECRET]"; env'],
      env: { MINE: "yes" },
    });
    const { stdout } = await outputOf(rpc, "env1");
    assert.ok(stdout.startsWith("[]\n"), stdout);
    assert.ok(!stdout.includes(SECRET));
    assert.ok(stdout.includes("MINE=yes"));
  });

  await t.step("fs methods round trip inside DIR", async () => {
    const { dir } = server;
    const data = new Uint8Array([0, 1, 2, 250, 255]).toBase64();
    await rpc.call("fs/createDirectory", { path: `${dir}/a/b`, recursive: true });
    await rpc.call("fs/writeFile", { path: `${dir}/a/b/f.bin`, dataBase64: data });
    assert.deepEqual(await rpc.call("fs/readFile", { path: `${dir}/a/b/f.bin` }), {
      dataBase64: data,
    });
    const meta = await rpc.call("fs/getMetadata", { path: `${dir}/a/b/f.bin` });
    assert.equal(meta.isFile, true);
    assert.equal(meta.size, 5);
    await rpc.call("fs/copy", {
      sourcePath: `${dir}/a`,
      destinationPath: `${dir}/c`,
      recursive: true,
    });
    const listing = await rpc.call("fs/readDirectory", { path: `${dir}/c/b` });
    assert.deepEqual(listing.entries, [
      { fileName: "f.bin", isDirectory: false, isFile: true, isSymlink: false },
    ]);
    assert.deepEqual(await rpc.call("fs/canonicalize", { path: `${dir}/c/../a/./b` }), {
      path: `${dir}/a/b`,
    });
    await rpc.call("fs/remove", { path: `${dir}/c`, recursive: true });
    const missing = await rpc.request("fs/getMetadata", { path: `${dir}/c` });
    assert.equal(missing.error?.code, -32004);
  });
});

Deno.test("serveLocal checks the bearer token when one is set", async () => {
  const token = "local-token-0123456789abcdef";
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor, token });
  const http = server.url.replace("ws://", "http://");
  const missing = await fetch(http);
  assert.equal(missing.status, 401);
  assert.ok(!(await missing.text()).includes(token));
  const wrong = await fetch(http, {
    headers: { authorization: "Bearer local-token-0123456789abcdeX" },
  });
  assert.equal(wrong.status, 401);
  await wrong.body?.cancel();
  await using rpc = await WsRpc.open(server.url, { authorization: `Bearer ${token}` });
  assert.ok((await rpc.call("environment/info")).shell);
});

Deno.test("serveLocal refuses a non-loopback address unless allowRemote and a token are given", async () => {
  await assert.rejects(serveLocal({ listen: "ws://0.0.0.0:0" }), /not a loopback address/);
  await assert.rejects(
    serveLocal({ listen: "ws://0.0.0.0:0", allowRemote: true }),
    /not a loopback address/,
  );
  await assert.rejects(
    serveLocal({ listen: "ws://0.0.0.0:0", token: "local-token-0123456789abcdef" }),
    /not a loopback address/,
  );
  // A flag given as the string "false" is refused, not taken as set.
  await assert.rejects(
    serveLocal({
      listen: "ws://0.0.0.0:0",
      allowRemote: "false" as unknown as boolean,
      token: "local-token-0123456789abcdef",
    }),
    /allowRemote must be a boolean/,
  );
  await assert.rejects(serveLocal({ listen: "wss://127.0.0.1:0" }), /only ws:/);
  await assert.rejects(serveLocal({ listen: "ws://127.0.0.1:0/path" }), /without a path/);
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({
    listen: "0.0.0.0:0",
    allowRemote: true,
    token: "local-token-0123456789abcdef",
    executor,
  });
  assert.match(server.url, /^ws:\/\/0\.0\.0\.0:\d+$/);
});

Deno.test("serveLocal reads a listen address without a port as ws's port 80, as the rendezvous does", async () => {
  for (const listen of ["ws://127.0.0.1", "ws://127.0.0.1:80"]) {
    try {
      await using server = await serveLocal({ listen });
      assert.equal(server.url, "ws://127.0.0.1:80");
    } catch (error) {
      // Port 80 may be taken or not allowed on this machine: then it fails, naming no other port.
      assert.ok(
        error instanceof Deno.errors.AddrInUse || error instanceof Deno.errors.PermissionDenied,
        String(error),
      );
    }
  }
});

Deno.test("serveLocal with an executor that closed closes each new connection at once, naming why", async () => {
  const executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor });
  await executor.close();
  // Long enough that a connection left open shows as the deadline, not as a timeout of connect.
  const refused = await withDeadline(
    connect(server.url, { timeoutMs: 60_000 }).catch((e) => e),
    20_000,
    "the refusal",
  );
  assert.ok(refused instanceof RelayClosedError, String(refused));
  assert.match(refused.message, /the session ended before initialize answered: executor closed/);
});

Deno.test("Executor refuses options every request would fail under, at and one past each limit", async () => {
  for (
    const [options, message] of [
      [{ maxMessageBytes: 1023 }, /maxMessageBytes 1023 is not an integer of at least 1024/],
      [{ maxMessageBytes: 2048.5 }, /maxMessageBytes 2048.5 is not an integer/],
      [{ maxFileBytes: 0 }, /maxFileBytes 0 is not an integer of at least 1/],
      [{ inheritEnv: ["PATH", "A=B"] }, /inheritEnv names a variable "A=B"/],
      [{ inheritEnv: [""] }, /inheritEnv names a variable ""/],
      // A string would be taken a character at a time ("PATH" as P, A, T, H; "/srv" as /, s, r, v).
      [{ inheritEnv: "PATH" }, /inheritEnv must be an array of strings/],
      [{ writeRoots: "/tmp" }, /writeRoots must be an array of strings/],
      [{ writeRoots: ["/tmp", 1] }, /writeRoots must be an array of strings/],
      // deno-lint-ignore no-sparse-arrays -- a hole is what is checked
      [{ writeRoots: [, "/tmp"] }, /writeRoots must be an array of strings/],
      // "false" would count as set: the network for `os` programs.
      [{ allowNetwork: "false" }, /allowNetwork must be a boolean/],
      // Past 2^31 - 1 ms a timer fires at once: a detached session would be
      // killed at once, a long poll would answer at once.
      [{ sessionTtlMs: 2 ** 31 }, /sessionTtlMs 2147483648 is not a number from 0 to 2147483647/],
      [{ sessionTtlMs: -1 }, /sessionTtlMs -1 is not an integer of at least 0/],
      [{ maxWaitMs: 2 ** 31 }, /maxWaitMs 2147483648 is not a number from 1 to 2147483647/],
      [{ maxWaitMs: 0 }, /maxWaitMs 0 is not an integer of at least 1/],
      [{ maxClosedOutputBytes: 0 }, /maxClosedOutputBytes 0 is not an integer of at least 1/],
      [{ maxQueuedStdinBytes: 0 }, /maxQueuedStdinBytes 0 is not an integer of at least 1/],
    ] as [ExecutorOptions, RegExp][]
  ) {
    assert.throws(() => new Executor(options), message, JSON.stringify(options));
  }
  await using atLimits = new Executor({
    maxMessageBytes: 1024,
    maxFileBytes: 1,
    sessionTtlMs: 2 ** 31 - 1,
    maxWaitMs: 2 ** 31 - 1,
    maxClosedOutputBytes: 1,
    maxQueuedStdinBytes: 1,
  });
  assert.equal(atLimits.maxMessageBytes, 1024);
});

Deno.test("serveLocal refuses allowed origins a browser never sends: a path, a trailing slash, *", async () => {
  const never = [
    "*",
    "null",
    "",
    "https://ok.example/",
    "https://ok.example/app",
    "https://ok.example?x=1",
    "https://OK.example",
    "https://ok.example:443",
    "https://user@ok.example",
    "ok.example",
  ];
  for (const origin of never) {
    await assert.rejects(
      serveLocal({ allowedOrigins: [origin] }),
      (error: Error) =>
        error instanceof TypeError &&
        error.message.includes(`Cannot allow origin ${JSON.stringify(origin)}`) &&
        error.message.includes("scheme://host[:port]"),
      `allowedOrigins [${JSON.stringify(origin)}]`,
    );
  }
  await assert.rejects(
    serveLocal({ allowedOrigins: ["https://ok.example/"] }),
    /; write https:\/\/ok\.example$/,
  );
  // Exactly what browsers send is accepted and matches.
  const exact = ["https://ok.example", "http://127.0.0.1:3000", "chrome-extension://abcdef"];
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor, allowedOrigins: exact });
  const port = Number(new URL(server.url).port);
  for (const origin of exact) {
    const answer = await rawHttp(port, upgradeHead("/", [`Origin: ${origin}`]));
    assert.equal(answer.status, 101, origin);
  }
});

Deno.test("serveLocal reports each refused request to onEvent, never the token", async () => {
  const token = "local-token-0123456789abcdef";
  const events: unknown[] = [];
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({
    executor,
    token,
    allowedOrigins: ["https://tool.example"],
    onEvent: (event) => events.push(event),
  });
  const port = Number(new URL(server.url).port);
  const bearer = `Authorization: Bearer ${token}`;
  const page = await rawHttp(port, upgradeHead("/", ["Origin: https://evil.example", bearer]));
  assert.equal(page.status, 403);
  assert.match(
    JSON.parse(page.body).error.message,
    /or origins allowed with --allow-origin \(allowedOrigins\)$/,
  );
  assert.equal((await rawHttp(port, upgradeHead("/"))).status, 401);
  const wrong = await rawHttp(port, upgradeHead("/", [`Authorization: Bearer ${token}X`]));
  assert.equal(wrong.status, 401);
  assert.equal((await rawHttp(port, upgradeHead("/harness/box-1", [bearer]))).status, 404);
  assert.equal((await rawHttp(port, `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n${bearer}`)).status, 426);
  assert.equal((await rawHttp(port, upgradeHead("/", [bearer]))).status, 101);
  assert.deepEqual(events, [
    { type: "refused", status: 403, code: "forbidden_origin", origin: "https://evil.example" },
    { type: "refused", status: 401, code: "unauthorized" },
    { type: "refused", status: 401, code: "unauthorized" },
    { type: "refused", status: 404, code: "not_a_rendezvous" },
    { type: "refused", status: 426, code: "upgrade_required" },
  ]);
  assert.ok(!JSON.stringify(events).includes(token));
});

Deno.test("serveLocal answers a request whose Host header is no URL's 400 bad_request in its JSON shape, and reports the refusal", async () => {
  const events: unknown[] = [];
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor, onEvent: (event) => events.push(event) });
  const port = Number(new URL(server.url).port);
  // Deno builds request.url from a Host header it does not check: "http://a b/" is no URL.
  const r = await rawHttp(port, upgradeHead("/").replace("Host: 127.0.0.1", "Host: a b"));
  assert.equal(r.status, 400);
  assert.equal(r.headers.get("cache-control"), "no-store");
  assert.deepEqual(JSON.parse(r.body).error, {
    code: "bad_request",
    message: "Cannot serve the request: its Host header is not valid",
  });
  assert.deepEqual(events, [{ type: "refused", status: 400, code: "bad_request" }]);
  assert.equal((await rawHttp(port, upgradeHead("/"))).status, 101, "still serving");
});

Deno.test("serveLocal refuses binary messages and plain HTTP, and keeps the connection", async () => {
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor, listen: "127.0.0.1:0" });
  const plain = await fetch(server.url.replace("ws://", "http://"));
  assert.equal(plain.status, 426);
  // The same refusal shape as the rendezvous', so clients show code and message.
  assert.equal(plain.headers.get("cache-control"), "no-store");
  assert.deepEqual((await plain.json()).error, {
    code: "upgrade_required",
    message: "Cannot serve plain HTTP: connect with a WebSocket",
  });
  await using rpc = await WsRpc.open(server.url);
  rpc.send(new TextEncoder().encode('{"id":1,"method":"environment/info"}'));
  const refusal = await rpc.waitFor((m) => m.id === null && m.error !== undefined);
  assert.equal(refusal.error!.code, -32600);
  assert.match(refusal.error!.message, /binary message/);
  assert.ok((await rpc.call("environment/info")).cwd);
});

Deno.test("serveLocal closes its connections on close and on abort", async () => {
  await using executor = new Executor({ sessionTtlMs: 0 });
  const controller = new AbortController();
  const server = await serveLocal({ executor, signal: controller.signal });
  const rpc = await WsRpc.open(server.url);
  await rpc.initialize();
  controller.abort();
  await withDeadline(server.closed, D, "server closed");
  await withDeadline(rpc.closed, D, "client closed");
  await server.close();
  await rpc.close();
});

/** Initializes and sends 64 long polls on an idle process: every request slot is busy. */
async function fillRequestSlots(rpc: WsRpc): Promise<void> {
  await rpc.initialize();
  await rpc.call("process/start", { processId: "idle", argv: ["sleep", "100"] });
  // Up to MAX_UNCOUNTED_READ_WAITS long polls wait uncounted; the next 64 fill the slots.
  for (let i = 0; i < MAX_UNCOUNTED_READ_WAITS + 64; i++) {
    rpc.send(
      JSON.stringify({
        id: `poll${i}`,
        method: "process/read",
        params: { processId: "idle", waitMs: 30_000 },
      }),
    );
  }
}

Deno.test("serveLocal closes a connection that floods past its inbound queue, and only that one", async () => {
  await using executor = new Executor({ sessionTtlMs: 0, killGraceMs: 200 });
  await using server = await serveLocal({ executor });
  await using flood = await WsRpc.open(server.url);
  await using calm = await WsRpc.open(server.url);
  // Fill every request slot with a long poll, then queue more than the limit.
  await fillRequestSlots(flood);
  for (let i = 0; i < MAX_QUEUED_MESSAGES + 64; i++) {
    flood.send(JSON.stringify({ id: `q${i}`, method: "environment/info" }));
  }
  // The server closes it with 1008 "Cannot keep up: too many queued messages";
  // the client may see an abnormal close instead, as it is still sending.
  const event = await withDeadline(flood.closed, D, "flooded connection closed");
  assert.ok(event.code === 1008 || !event.wasClean, `close code ${event.code}`);
  assert.ok((await calm.call("environment/info")).shell);
});

Deno.test("serveLocal under the smallest message limit delivers every output byte in notifications and reads that fit it", async () => {
  const limit = 1024;
  await using executor = new Executor({ sessionTtlMs: 0, maxMessageBytes: limit });
  await using server = await serveLocal({ executor, listen: "127.0.0.1:0" });
  await using rpc = await WsRpc.open(server.url);
  await rpc.initialize();
  const size = (m: unknown) => new TextEncoder().encode(JSON.stringify(m)).length;
  // A short id; a long one (256 UTF-8 bytes) that leaves less room for the chunk;
  // the longest (256 characters, 512 UTF-8 bytes), which leaves none: read a byte at a time.
  const cases: [string, number][] = [["p", 5000], ["é".repeat(128), 5000], ["é".repeat(256), 40]];
  for (const [processId, total] of cases) {
    await rpc.call("process/start", {
      processId,
      argv: ["head", "-c", String(total), "/dev/zero"],
    });
    await rpc.waitFor(isNote("process/closed", processId), D);
    const notes = rpc.received.filter((m) =>
      m.method === "process/output" && m.params?.processId === processId
    );
    assert.ok(notes.length > 1, "the output came in several notifications");
    for (const note of notes) {
      assert.ok(size(note) <= limit, `a notification of ${size(note)} bytes`);
    }
    const streamed = notes.reduce(
      (n, m) => n + Uint8Array.fromBase64(m.params!.chunk as string).length,
      0,
    );
    assert.equal(streamed, total, "every byte arrived as a notification");
    if (processId.length === 256) assert.equal(notes.length, total, "one byte per notification");
    // The same bytes again through process/read, one reply within the limit at a time.
    let afterSeq = 0;
    let read = 0;
    for (;;) {
      const reply = await rpc.request("process/read", { processId, afterSeq });
      assert.ok(size(reply) <= limit, `a read reply of ${size(reply)} bytes`);
      const result = reply.result as { chunks: { chunk: string }[]; nextSeq: number };
      if (result.chunks.length === 0) break;
      for (const c of result.chunks) read += Uint8Array.fromBase64(c.chunk).length;
      afterSeq = result.nextSeq - 1;
    }
    assert.equal(read, total, "every byte was readable");
  }
  // A file still fits its reply: the default file limit leaves room for the envelope, not 0.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/small`, "x".repeat(300));
    const reply = await rpc.request("fs/readFile", { path: `${dir}/small` });
    assert.ok(size(reply) <= limit, `a readFile reply of ${size(reply)} bytes`);
    const result = reply.result as { dataBase64: string };
    assert.equal(
      new TextDecoder().decode(Uint8Array.fromBase64(result.dataBase64)),
      "x".repeat(300),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Stands in for the executor: reads the first `readFirst` messages of each
 * connection at once (then says so), the rest only after the connection has
 * closed, so everything in between waits in the server's queue.
 */
function lateReader(readFirst = 0) {
  const read: string[][] = [];
  const served: Promise<void>[] = [];
  const executor = {
    serve(channel: MessageChannel): Promise<void> {
      const got: string[] = [];
      read.push(got);
      const done = (async () => {
        const messages = channel[Symbol.asyncIterator]();
        for (let i = 0; i < readFirst; i++) got.push((await messages.next()).value);
        if (readFirst > 0) await channel.send(`took ${readFirst}`);
        await channel.closed;
        for (let next = await messages.next(); !next.done; next = await messages.next()) {
          got.push(next.value);
        }
      })();
      served.push(done);
      return done;
    },
    // Never initialized, but not to be closed for it within a test.
    hasSession: () => true,
  } as unknown as Executor;
  return { executor, read, served };
}

/** Opens a plain WebSocket, sends `messages`, and returns its close event (closing it if `close`). */
async function sendAll(url: string, messages: string[], close: boolean): Promise<CloseEvent> {
  const ws = new WebSocket(url);
  const closed = new Promise<CloseEvent>((resolve) => (ws.onclose = resolve));
  await withDeadline(new Promise((resolve) => (ws.onopen = resolve)), D, "open");
  for (const message of messages) ws.send(message);
  if (close) ws.close(1000, "done");
  return await withDeadline(closed, D, "close");
}

Deno.test("serveLocal queues inbound messages up to maxQueuedBytes and closes with 1009 one byte past", async () => {
  const budget = 64 * 1024;
  const { executor, read, served } = lateReader();
  await using server = await serveLocal({ executor, maxQueuedBytes: budget });
  const quarter = "q".repeat(budget / 4);

  // Exactly the budget: all four are queued; the client's own close ends the connection.
  const atLimit = await sendAll(server.url, [quarter, quarter, quarter, quarter], true);
  assert.equal(atLimit.code, 1000);
  await withDeadline(served[0], D, "first connection read");
  assert.deepEqual(read[0].map((m) => m.length), [budget / 4, budget / 4, budget / 4, budget / 4]);

  // One byte past it: the server drops that message and closes with 1009.
  const past = await sendAll(server.url, [quarter, quarter, quarter, quarter + "x"], false);
  assert.equal(past.code, 1009);
  assert.equal(past.reason, `Cannot keep up: queued messages exceed ${budget} bytes`);
  await withDeadline(served[1], D, "second connection read");
  assert.equal(read[1].length, 3);

  // A lone message over the budget is still taken (the executor's size limit answers it).
  const lone = await sendAll(server.url, ["L".repeat(budget + 1)], true);
  assert.equal(lone.code, 1000);
  await withDeadline(served[2], D, "third connection read");
  assert.deepEqual(read[2].map((m) => m.length), [budget + 1]);
  assert.equal(MAX_QUEUED_BYTES, 32 * 1024 * 1024);
});

Deno.test("serveLocal frees a message's share of the queue budget once it is read", async () => {
  const budget = 64 * 1024;
  const { executor, read, served } = lateReader(4);
  await using server = await serveLocal({ executor, maxQueuedBytes: budget });
  const quarter = "q".repeat(budget / 4);
  const ws = new WebSocket(server.url);
  const closed = new Promise<CloseEvent>((resolve) => (ws.onclose = resolve));
  const took = new Promise<unknown>((resolve) => (ws.onmessage = (event) => resolve(event.data)));
  await withDeadline(new Promise((resolve) => (ws.onopen = resolve)), D, "open");
  // A full budget read at once, then a full budget more left queued.
  for (let i = 0; i < 4; i++) ws.send(quarter);
  assert.equal(await withDeadline(took, D, "first four read"), "took 4");
  for (let i = 0; i < 4; i++) ws.send(quarter);
  ws.close(1000, "done");
  assert.equal((await withDeadline(closed, D, "close")).code, 1000);
  await withDeadline(served[0], D, "connection read");
  assert.equal(read[0].length, 8);
});

Deno.test("serveLocal closes a connection whose queued bytes pass the budget while the executor is busy, and only that one", async () => {
  await using executor = new Executor({ sessionTtlMs: 0, killGraceMs: 200 });
  await using server = await serveLocal({ executor, maxQueuedBytes: 1024 * 1024 });
  await using flood = await WsRpc.open(server.url);
  await using calm = await WsRpc.open(server.url);
  // Long polls fill every request slot, so the executor stops reading.
  await fillRequestSlots(flood);
  // 16 messages of 65,600 bytes: 15 fit the 1 MiB budget (with room for polls
  // not yet taken), the 16th, the last sent, passes it.
  const message = (i: number) => {
    const head = JSON.stringify({ id: `big${i}`, method: "environment/info", params: { pad: "" } });
    return head.replace('"pad":""', `"pad":"${"a".repeat(65_600 - head.length)}"`);
  };
  for (let i = 0; i < 16; i++) flood.send(message(i));
  const event = await withDeadline(flood.closed, D, "flooded connection closed");
  assert.equal(event.code, 1009);
  assert.match(event.reason, /queued messages exceed 1048576 bytes/);
  assert.ok((await calm.call("environment/info")).shell);
});

/**
 * Kills the test's `sleep token` on exit. Disposed before the server and the
 * executor, so that a failing test does not leave them waiting on its write.
 */
function killedOnExit(token: string): Disposable {
  return { [Symbol.dispose]: () => killPids(livePidsWith(`sleep ${token}`)) };
}

/** Starts `sleep token` with a stdin it never reads and sends it 1 MiB: the write blocks. */
async function startStuckWrite(rpc: WsRpc, token: string): Promise<void> {
  await rpc.call("process/start", {
    processId: "p",
    argv: ["sh", "-c", `exec sleep ${token}`],
    pipeStdin: true,
  });
  const chunk = new Uint8Array(1024 * 1024).toBase64();
  rpc.send(
    JSON.stringify({ id: "stuck", method: "process/write", params: { processId: "p", chunk } }),
  );
  await rpc.call("process/list"); // served after the write began
}

Deno.test("serveLocal: a write the child never reads does not keep a closed connection's session attached", async () => {
  const token = uniqueSleep();
  await using executor = new Executor({ sessionTtlMs: 5_000, killGraceMs: 200 });
  await using server = await serveLocal({ executor });
  using _cleanup = killedOnExit(token);
  const first = await WsRpc.open(server.url);
  const sessionId = await first.initialize();
  await startStuckWrite(first, token);
  await first.close();
  await using second = await WsRpc.open(server.url);
  // The server may see the close a moment after the client: retry while it is still attached.
  await until(
    async () => {
      const reply = await second.request("initialize", { resumeSessionId: sessionId });
      if (reply.error?.code === -32010) return false;
      assert.deepEqual(reply.result, { sessionId }, JSON.stringify(reply));
      return true;
    },
    D,
    "resume",
  );
  second.notify("initialized");
  const { processes } = await second.call("process/list");
  assert.deepEqual(
    (processes as { processId: string; running: boolean }[]).map((p) => [p.processId, p.running]),
    [["p", true]],
  );
  assert.equal(livePidsWith(`sleep ${token}`).length, 1);
});

Deno.test("Executor close settles while a process/write waits on a child that never reads, and kills the child", async () => {
  const token = uniqueSleep();
  await using executor = new Executor({ sessionTtlMs: 5_000, killGraceMs: 200 });
  await using server = await serveLocal({ executor });
  await using rpc = await WsRpc.open(server.url);
  using _cleanup = killedOnExit(token);
  await rpc.initialize();
  await startStuckWrite(rpc, token);
  await withDeadline(executor.close(), 5_000, "executor close");
  assert.deepEqual(livePidsWith(`sleep ${token}`), []);
  await withDeadline(rpc.closed, D, "connection closed");
});

Deno.test("serveLocal with an executor of its own ends the programs first on close: their last output and exit reach the harness", async () => {
  const server = await serveLocal({ listen: "ws://127.0.0.1:0" });
  let closed = false;
  try {
    await using conn = await connect(server.url);
    const child = new RemoteCommand(conn, "sh", {
      args: ["-c", 'trap "echo bye; exit 7" TERM; echo hi; while :; do sleep 0.1; done'],
      stdout: "piped",
    }).spawn();
    const reader = child.stdout!.getReader();
    let text = "";
    while (!text.includes("hi\n")) {
      const { value, done } = await withDeadline(reader.read(), 10_000, "the program's first line");
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    const closing = server.close();
    for (;;) {
      const { value, done } = await withDeadline(reader.read(), 10_000, "the program's last line");
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    assert.equal(text, "hi\nbye\n");
    assert.equal((await withDeadline(child.status, 10_000, "the exit")).code, 7);
    await withDeadline(closing, 10_000, "the close");
    closed = true;
  } finally {
    if (!closed) await server.close();
  }
});

Deno.test("serveLocal lets maxUninitialized connections wait for initialize, closes the one waiting longest one past it (1013), and counts initialized ones no more", async () => {
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor, maxUninitialized: 2 });
  await using session = await WsRpc.open(server.url);
  await session.initialize();
  await using a = await WsRpc.open(server.url);
  await using b = await WsRpc.open(server.url);
  // At the bound: both wait, and are served (a request before initialize is refused, not dropped).
  assert.equal(server.stats().uninitialized, 2);
  for (const rpc of [a, b]) {
    assert.match((await rpc.request("process/list")).error!.message, /must call initialize/);
  }
  // One past: the one waiting longest is closed, the others go on.
  await using c = await WsRpc.open(server.url);
  const event = await withDeadline(a.closed, D, "the longest waiting connection closed");
  assert.equal(event.code, 1013);
  assert.equal(
    event.reason,
    "Cannot wait for initialize: 2 connections wait, this one the longest",
  );
  await b.initialize();
  await c.initialize();
  // Initialized, they count as sessions: two more may wait, and nobody is closed.
  await using d = await WsRpc.open(server.url);
  await using e = await WsRpc.open(server.url);
  assert.equal(server.stats().uninitialized, 2);
  for (const rpc of [session, b, c]) {
    assert.deepEqual(await rpc.call("process/list"), { processes: [] });
  }
  await d.initialize();
  await e.initialize();
  assert.equal(server.stats().uninitialized, 0);
});

Deno.test("serveLocal lets a burst of honest clients wait for initialize up to the executor's session limit, not only 256", async () => {
  await using executor = new Executor({ sessionTtlMs: 0, maxSessions: 400 });
  await using server = await serveLocal({ executor });
  // 300 connections open before any initialize is read, as a burst of clients does.
  const clients: WsRpc[] = [];
  try {
    for (let i = 0; i < 300; i++) clients.push(await WsRpc.open(server.url));
    assert.equal(server.stats().uninitialized, 300);
    await Promise.all(clients.map((rpc) => rpc.initialize()));
    assert.equal(server.stats().uninitialized, 0);
    assert.equal(server.stats().connections, 300);
  } finally {
    await Promise.all(clients.map((rpc) => rpc[Symbol.asyncDispose]()));
  }
});

Deno.test("serveLocal closes a connection that has not initialized within initializeTimeoutMs (1008), and not one that has", async () => {
  await using executor = new Executor({ sessionTtlMs: 0 });
  await using server = await serveLocal({ executor, initializeTimeoutMs: 200 });
  await using prompt = await WsRpc.open(server.url);
  await prompt.initialize();
  await using idle = await WsRpc.open(server.url);
  const event = await withDeadline(idle.closed, D, "the idle connection closed");
  assert.equal(event.code, 1008);
  assert.equal(event.reason, "Cannot serve: no initialize within 200 ms");
  // The prompt one's deadline passed before the idle one's: it is served on.
  assert.deepEqual(await prompt.call("process/list"), { processes: [] });
  assert.equal(server.stats().uninitialized, 0);
  for (
    const options of [
      { initializeTimeoutMs: 0 },
      { initializeTimeoutMs: 2 ** 31 },
      { maxUninitialized: 0 },
      { maxUninitialized: 1.5 },
      { queueBudgetBytes: 1024, maxQueuedBytes: 1025 },
    ]
  ) {
    await assert.rejects(serveLocal({ executor, ...options }), RangeError);
  }
});

/** A plain WebSocket that sends what it is told, with its close event. */
async function openSocket(url: string): Promise<{ ws: WebSocket; closed: Promise<CloseEvent> }> {
  const ws = new WebSocket(url);
  const closed = new Promise<CloseEvent>((resolve) => (ws.onclose = resolve));
  await withDeadline(new Promise((resolve) => (ws.onopen = resolve)), D, "open");
  return { ws, closed };
}

Deno.test("serveLocal bounds what all connections queue together: at queueBudgetBytes all stay, one byte past it the one queueing the most is closed (1009) and only that one", async () => {
  const per = 64 * 1024;
  const { executor, read, served } = lateReader();
  await using server = await serveLocal({
    executor,
    maxQueuedBytes: per,
    queueBudgetBytes: 2 * per,
  });
  const flood = await openSocket(server.url);
  const calm = [await openSocket(server.url), await openSocket(server.url)];
  flood.ws.send("f".repeat(per));
  calm[0].ws.send("a".repeat(per / 2));
  calm[1].ws.send("b".repeat(per / 2));
  // Exactly the budget: every message stays queued.
  await until(() => server.stats().queuedBytes === 2 * per, D, "the budget full");
  assert.equal(server.stats().connections, 3);
  // One byte past it: the connection queueing the most goes, with what it queued.
  calm[1].ws.send("x");
  const event = await withDeadline(flood.closed, D, "the flood closed");
  assert.equal(event.code, 1009);
  assert.equal(
    event.reason,
    `Cannot keep up: queued messages over all connections exceed ${2 * per} bytes`,
  );
  assert.equal(server.stats().queuedBytes, per + 1);
  // The others go on: everything they sent is read.
  for (const { ws, closed } of calm) {
    ws.close(1000, "done");
    assert.equal((await withDeadline(closed, D, "close")).code, 1000);
  }
  await withDeadline(Promise.all(served), D, "every connection read");
  assert.deepEqual(read.map((messages) => messages.map((m) => m.length)), [
    [],
    [per / 2],
    [per / 2, 1],
  ]);
  assert.equal(server.stats().queuedBytes, 0);
});

Deno.test("serveLocal counts a queued text message as it takes memory: two bytes a code unit once one is past U+00FF, one below", async () => {
  const budget = 64 * 1024;
  const { executor, read, served } = lateReader();
  await using server = await serveLocal({ executor, maxQueuedBytes: budget });
  // 16,384 euro signs take 32 KiB: two fill the budget.
  const euros = "€".repeat(budget / 4);
  const atLimit = await sendAll(server.url, [euros, euros], true);
  assert.equal(atLimit.code, 1000);
  await withDeadline(served[0], D, "first connection read");
  assert.equal(read[0].length, 2);
  // One byte past it: closed with 1009.
  const past = await sendAll(server.url, [euros, euros, "x"], false);
  assert.equal(past.code, 1009);
  assert.equal(past.reason, `Cannot keep up: queued messages exceed ${budget} bytes`);
  // Latin-1 letters past ASCII take a byte each, as ASCII does.
  const latin = "é".repeat(budget / 2);
  const fits = await sendAll(server.url, [latin, latin], true);
  assert.equal(fits.code, 1000);
  await withDeadline(served[2], D, "third connection read");
  assert.equal(read[2].length, 2);
});
