import assert from "node:assert/strict";
import { RpcError } from "../lib/errors.ts";
import { Executor, type ExecutorOptions, MAX_FS_CALLS_IN_FLIGHT } from "../lib/exec/executor.ts";
import { FsOps } from "../lib/exec/fs_ops.ts";
import { ProcessTable } from "../lib/exec/process_table.ts";
import { SandboxPolicy } from "../lib/exec/sandbox_policy.ts";
import {
  MAX_FS_CALLS_PER_CONNECTION,
  MAX_UNCOUNTED_FS_CALLS,
  MAX_UNCOUNTED_READ_WAITS,
  serveSession,
  SESSION_LIMIT_REASON,
  type SessionContext,
} from "../lib/exec/session.ts";
import { DEFAULT_IDLE_ATTACHED_MS, SessionRegistry } from "../lib/exec/session_registry.ts";
import type { EnvironmentInfo } from "../lib/exec/environment_info.ts";
import { DEFAULT_MAX_CONCURRENT_REQUESTS, JsonRpcPeer } from "../lib/rpc/json_rpc_peer.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { CAN_LEASE, type HeldLease, holdLease } from "./_support/file_lease.ts";
import { detectCapabilities } from "../lib/exec/confinement.ts";
import { LEASE_WAIT_MS } from "../lib/_regular_file.ts";
import { channelPair, nextJson } from "./_fixtures/channel_pair.ts";
import type { MessageChannel } from "../lib/rpc/message_channel.ts";
import { killPids, livePidsWith, uniqueSleep, waitForPids } from "./_process_helpers.ts";

/** The fs slot tests hold slots with confined writes that wait out a lease (bubblewrap, perl). */
const LEASED_WRITES_WAIT = CAN_LEASE &&
  (await detectCapabilities()).confinements.includes("os");

const D = 5_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

interface Note {
  method: string;
  params: Record<string, unknown>;
}

interface Conn extends AsyncDisposable {
  peer: JsonRpcPeer;
  notes: Note[];
  call(method: string, params?: unknown): Promise<Record<string, unknown>>;
  fails(method: string, params: unknown, code: number, ...mentions: string[]): Promise<void>;
  init(params?: Record<string, unknown>): Promise<string>;
  served: Promise<void>;
}

function connect(executor: Executor): Conn {
  const [a, b] = channelPair();
  const served = executor.serve(b);
  const notes: Note[] = [];
  const peer = new JsonRpcPeer(a, {
    onNotification: (method, params) => notes.push({ method, params: params as Note["params"] }),
  });
  const call = (method: string, params?: unknown) =>
    withDeadline(peer.request<Record<string, unknown>>(method, params), D, method);
  return {
    peer,
    notes,
    served,
    call,
    async fails(method, params, code, ...mentions) {
      await assert.rejects(call(method, params), (error: unknown) => {
        assert.ok(error instanceof RpcError, String(error));
        assert.equal(error.code, code, error.message);
        for (const word of mentions) {
          assert.ok(error.message.includes(word), `${error.message} should mention ${word}`);
        }
        assert.ok(!error.message.endsWith("."));
        return true;
      });
    },
    async init(params = {}) {
      const { sessionId } = await call("initialize", { clientName: "session-test", ...params });
      await peer.notify("initialized", {});
      return sessionId as string;
    },
    async [Symbol.asyncDispose]() {
      await peer.close();
      await withDeadline(served, D, "serve end");
    },
  };
}

function useExecutor(options: ExecutorOptions = {}): Executor {
  return new Executor({
    sessionTtlMs: 200,
    killGraceMs: 200,
    exitedRetentionMs: 2_000,
    ...options,
  });
}

/** Sessions whose environment/info hangs until `probe` settles (a sandbox probe's helper hangs). */
function hangingProbeSessions() {
  const registry = new SessionRegistry({ createTable: () => new ProcessTable() });
  const probe = Promise.withResolvers<EnvironmentInfo>();
  const context: SessionContext = {
    registry,
    fs: new FsOps(new SandboxPolicy()),
    environmentInfo: () => probe.promise,
  };
  return {
    probe,
    context,
    /** Serves a new connection: the client's peer, the end of serving, and a resume by the peer. */
    connect() {
      const [client, server] = channelPair();
      const served = serveSession(server, context);
      const peer = new JsonRpcPeer(client);
      const resume = (sessionId: string) =>
        withDeadline(peer.request("initialize", { resumeSessionId: sessionId }), D, "resume");
      return { peer, served, resume, [Symbol.asyncDispose]: () => peer.close() };
    },
    [Symbol.asyncDispose]: () => registry[Symbol.asyncDispose](),
  };
}

function outputText(notes: Note[], processId: string): string {
  return notes
    .filter((n) => n.method === "process/output" && n.params.processId === processId)
    .map((n) => new TextDecoder().decode(Uint8Array.fromBase64(n.params.chunk as string)))
    .join("");
}

function waitNote(conn: Conn, method: string, processId: string): Promise<Note> {
  let found: Note | undefined;
  return until(
    () => {
      found = conn.notes.find((n) => n.method === method && n.params.processId === processId);
      return found !== undefined;
    },
    D,
    `${method} of ${processId}`,
  ).then(() => found!);
}

Deno.test("Session lifecycle: every misuse gets the upstream error and the connection continues", async () => {
  await using executor = useExecutor();
  const [raw, server] = channelPair();
  const served = executor.serve(server);
  const it = raw[Symbol.asyncIterator]();
  const ask = async (message: unknown) => {
    await raw.send(JSON.stringify(message));
    return await withDeadline(nextJson(it), D, "reply");
  };
  const errorOf = (reply: Record<string, unknown>) =>
    reply.error as { code: number; message: string };

  let reply = await ask({
    id: 1,
    method: "process/start",
    params: { processId: "p", argv: ["true"] },
  });
  assert.equal(errorOf(reply).code, -32600);
  assert.match(errorOf(reply).message, /must call initialize before using process methods/);
  reply = await ask({ id: 2, method: "fs/readFile", params: { path: "/tmp" } });
  assert.match(errorOf(reply).message, /must call initialize before using fs methods/);
  await raw.send(JSON.stringify({ method: "initialized" }));
  reply = await withDeadline(nextJson(it), D);
  assert.equal(reply.id, null);
  assert.equal(errorOf(reply).code, -32600);
  assert.match(errorOf(reply).message, /must call initialize first/);
  reply = await ask({ id: 3, method: "environment/info" });
  assert.ok((reply.result as { shell: unknown }).shell, "environment/info works before initialize");
  reply = await ask({ id: 4, method: "test/unknown-a" });
  assert.equal(errorOf(reply).code, -32601);
  assert.match(errorOf(reply).message, /test\/unknown-a/);

  reply = await ask({ id: 5, method: "initialize", params: { clientName: "t" } });
  assert.match((reply.result as { sessionId: string }).sessionId, UUID);
  reply = await ask({ id: 6, method: "process/list" });
  assert.equal(errorOf(reply).code, -32600);
  assert.match(errorOf(reply).message, /must send initialized before using process methods/);
  reply = await ask({ id: 7, method: "initialize", params: { clientName: "t" } });
  assert.equal(errorOf(reply).code, -32600);
  assert.match(errorOf(reply).message, /may only be sent once/);
  await raw.send(JSON.stringify({ method: "initialized" }));
  await raw.send(JSON.stringify({ method: "initialized" })); // a second one is harmless
  await raw.send(JSON.stringify({ method: "test/note" }));
  reply = await withDeadline(nextJson(it), D);
  assert.equal(reply.id, null);
  assert.equal(errorOf(reply).code, -32601);
  assert.match(errorOf(reply).message, /test\/note/);
  await raw.send(JSON.stringify({ id: 99, result: {} })); // a stray response is ignored
  reply = await ask({ id: 8, method: "process/list" });
  assert.deepEqual(reply, { jsonrpc: "2.0", id: 8, result: { processes: [] } });
  reply = await ask({ id: 9, method: "initialize", params: { resumeSessionId: 5 } });
  assert.equal(errorOf(reply).code, -32600); // still "only once", checked first
  await raw.close();
  await withDeadline(served, D);
});

/**
 * Starts `quiet` (no output) and `target`, sends `uncounted` long polls on
 * `quiet` waiting 20 s and `counted` more waiting `countedWaitMs`, then
 * terminates `target`: resolves with how many polls had been answered when
 * the terminate was.
 */
async function terminateBehindLongPolls(
  uncounted: number,
  counted: number,
  countedWaitMs: number,
): Promise<number> {
  await using executor = useExecutor();
  await using conn = connect(executor);
  await conn.init();
  for (const processId of ["quiet", "target"]) {
    await conn.call("process/start", { processId, argv: ["sleep", "60"] });
  }
  let answered = 0;
  const poll = (waitMs: number) =>
    conn.peer.request("process/read", { processId: "quiet", afterSeq: 0, waitMs }, {
      timeoutMs: 60_000,
    }).then(() => answered++, () => {});
  const polls = [
    ...Array.from({ length: uncounted }, () => poll(20_000)),
    ...Array.from({ length: counted }, () => poll(countedWaitMs)),
  ];
  // Sent after them: answered at once while a request slot is free, else once a counted poll ends.
  await withDeadline(
    conn.peer.request("process/terminate", { processId: "target" }),
    30_000,
    "the terminate",
  );
  const seen = answered;
  await conn.peer.close();
  await Promise.all(polls);
  return seen;
}

Deno.test("Session: 64 long polls (MAX_UNCOUNTED_READ_WAITS) and 63 more that count leave room for a terminate", async () => {
  assert.equal(MAX_UNCOUNTED_READ_WAITS, 64);
  const answered = await terminateBehindLongPolls(
    MAX_UNCOUNTED_READ_WAITS,
    DEFAULT_MAX_CONCURRENT_REQUESTS - 1,
    20_000,
  );
  assert.equal(answered, 0, "the terminate was answered while every poll still waited");
});

Deno.test("Session: past MAX_UNCOUNTED_READ_WAITS long polls count, and 64 that count hold a terminate until one ends", async () => {
  const answered = await terminateBehindLongPolls(
    MAX_UNCOUNTED_READ_WAITS,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    1_000,
  );
  assert.ok(answered > 0, "the terminate waited for a counted poll to end");
});

/**
 * Whether `probe` is answered within 2 s (a watch: the lease is still held);
 * then ends the lease and waits for `probe` and every `pending` call.
 */
async function answeredWhileLeased(
  lease: HeldLease,
  probe: Promise<unknown>,
  pending: Promise<unknown>[],
): Promise<boolean> {
  let watch: ReturnType<typeof setTimeout> | undefined;
  try {
    const answered = await Promise.race([
      probe.then(() => true),
      new Promise<false>((resolve) => watch = setTimeout(() => resolve(false), 2_000)),
    ]);
    await lease.release();
    await withDeadline(Promise.all([...pending, probe]), 10_000, "every call once the lease ended");
    return answered;
  } finally {
    clearTimeout(watch);
  }
}

/**
 * Starts an executor whose writes run in bubblewrap (`os`), with a file under
 * another process's write lease in its write root: a write to that file waits
 * in its helper (`cat >`) until the lease ends, holding its fs slot. (The
 * executor's own opens give up on a lease after `LEASE_WAIT_MS`.)
 */
async function leasedFileExecutor() {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_lease_" }));
  await Deno.writeTextFile(`${dir}/leased`, "x");
  await Deno.writeTextFile(`${dir}/other`, "y");
  const executor = useExecutor({ minConfinement: "os", writeRoots: [dir] });
  return {
    executor,
    dir,
    lease: await holdLease(`${dir}/leased`),
    /** A write that waits out the lease. */
    blockedWrite: (conn: Conn) =>
      conn.peer.request("fs/writeFile", { path: `${dir}/leased`, dataBase64: "eQ==" }, {
        timeoutMs: 60_000,
      }),
    async [Symbol.asyncDispose]() {
      await this.lease.release();
      await executor[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test({
  name:
    "Session: fs calls waiting for a lease stop when their connection closes, freeing its slots",
  ignore: !CAN_LEASE,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_lease_" }));
    await Deno.writeTextFile(`${dir}/leased`, "x");
    await using executor = useExecutor();
    await using lease = await holdLease(`${dir}/leased`);
    try {
      for (
        const [method, params] of [
          ["fs/readFile", { path: `${dir}/leased` }],
          ["fs/writeFile", { path: `${dir}/leased`, dataBase64: "eQ==" }],
          ["fs/copy", { sourcePath: `${dir}/leased`, destinationPath: `${dir}/copy` }],
        ] as const
      ) {
        const conn = connect(executor);
        await conn.init();
        const waiting = conn.peer.request(method, params).catch(() => "refused");
        // A connection serves requests in order: once this is answered, the call is under way.
        await conn.call("process/list", {});
        const closed = performance.now();
        await conn[Symbol.asyncDispose]();
        await withDeadline(conn.served, D, `${method}: serving ends`);
        const took = performance.now() - closed;
        // Without the signal the call waits out LEASE_WAIT_MS before serving can end.
        assert.ok(took < LEASE_WAIT_MS / 2, `${method}: serving ended ${took} ms after the close`);
        await waiting;
      }
      await lease.release(); // a plain read of the file would wait the kernel's 45 s
      assert.equal(await Deno.readTextFile(`${dir}/leased`), "x");
    } finally {
      await lease.release();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * Blocks fs/writeFile calls on a leased file, `blocked[i]` on connection i,
 * then asks for another file's metadata on the first connection (or, with
 * `fresh`, on a new one): resolves with whether that was answered while the
 * writes stayed blocked (watched for 2 s: a stat takes milliseconds).
 */
async function metadataBesideBlockedWrites(blocked: number[], fresh = false): Promise<boolean> {
  await using leased = await leasedFileExecutor();
  const conns = Array.from(
    { length: blocked.length + (fresh ? 1 : 0) },
    () => connect(leased.executor),
  );
  try {
    for (const conn of conns) await conn.init();
    const writes = blocked.flatMap((count, i) =>
      Array.from({ length: count }, () => leased.blockedWrite(conns[i]))
    );
    // A connection serves its requests in order: once a later one is answered, its writes hold slots.
    for (let i = 0; i < blocked.length; i++) await conns[i].call("process/list", {});
    const asker = conns[fresh ? blocked.length : 0];
    const metadata = asker.peer.request("fs/getMetadata", { path: `${leased.dir}/other` });
    return await answeredWhileLeased(leased.lease, metadata, writes);
  } finally {
    await leased.lease.release();
    for (const conn of conns) await conn[Symbol.asyncDispose]();
  }
}

Deno.test({
  name:
    "Session: a connection's fs calls beyond MAX_FS_CALLS_PER_CONNECTION wait for a slot; below it they do not",
  ignore: !LEASED_WRITES_WAIT,
  async fn() {
    assert.equal(MAX_FS_CALLS_PER_CONNECTION, 8);
    assert.equal(
      await metadataBesideBlockedWrites([MAX_FS_CALLS_PER_CONNECTION - 1]),
      true,
      "with a slot free, answered while the writes were blocked",
    );
    assert.equal(
      await metadataBesideBlockedWrites([MAX_FS_CALLS_PER_CONNECTION]),
      false,
      "with every slot taken by a blocked write, it waited",
    );
  },
});

Deno.test({
  name:
    "Session: fs calls beyond the executor's MAX_FS_CALLS_IN_FLIGHT, all connections together, wait for a slot",
  ignore: !LEASED_WRITES_WAIT,
  async fn() {
    assert.equal(MAX_FS_CALLS_IN_FLIGHT, 16);
    const full = Array(MAX_FS_CALLS_IN_FLIGHT / MAX_FS_CALLS_PER_CONNECTION).fill(
      MAX_FS_CALLS_PER_CONNECTION,
    );
    const oneShort = [...full.slice(0, -1), MAX_FS_CALLS_PER_CONNECTION - 1];
    assert.equal(await metadataBesideBlockedWrites(oneShort, true), true, "one slot free");
    assert.equal(await metadataBesideBlockedWrites(full, true), false, "every slot taken");
  },
});

/**
 * Sends 8 writes that wait out a lease (the connection's fs slots) and
 * `total - 8` stats queued behind them, then `process/list`: resolves with
 * whether that was answered while they all waited (watched for 2 s).
 */
async function listAnsweredBesideQueuedFsCalls(total: number): Promise<boolean> {
  await using leased = await leasedFileExecutor();
  await using conn = connect(leased.executor);
  await conn.init();
  const blocked = Array.from(
    { length: total },
    (_, i) =>
      i < MAX_FS_CALLS_PER_CONNECTION
        ? leased.blockedWrite(conn)
        : conn.peer.request("fs/getMetadata", { path: `${leased.dir}/other` }, {
          timeoutMs: 60_000,
        }),
  );
  return await answeredWhileLeased(leased.lease, conn.peer.request("process/list", {}), blocked);
}

Deno.test({
  name:
    "Session: MAX_UNCOUNTED_FS_CALLS fs calls queued behind blocked ones leave the connection room for its other requests; past them they count",
  ignore: !LEASED_WRITES_WAIT,
  async fn() {
    assert.equal(MAX_UNCOUNTED_FS_CALLS, 32);
    // 32 uncounted and 63 counted: one of the 64 request slots is free.
    assert.equal(await listAnsweredBesideQueuedFsCalls(MAX_UNCOUNTED_FS_CALLS + 63), true);
    assert.equal(await listAnsweredBesideQueuedFsCalls(MAX_UNCOUNTED_FS_CALLS + 64), false);
  },
});

Deno.test("Session ids are UUIDs, one per connection", async () => {
  await using executor = useExecutor();
  await using a = connect(executor);
  await using b = connect(executor);
  const [idA, idB] = [await a.init(), await b.init()];
  assert.match(idA, UUID);
  assert.match(idB, UUID);
  assert.notEqual(idA, idB);
  await a.fails("initialize", { clientName: 3 }, -32600, "once");
});

Deno.test("Session takes initialized with any params, as Codex ignores them", async () => {
  await using executor = useExecutor();
  for (const params of ["x", 1, true, [], {}, null]) {
    const [raw, server] = channelPair();
    const served = executor.serve(server);
    const it = raw[Symbol.asyncIterator]();
    await raw.send(JSON.stringify({ id: 1, method: "initialize", params: {} }));
    assert.ok((await withDeadline(nextJson(it), D, "initialize")).result);
    await raw.send(JSON.stringify({ method: "initialized", params }));
    await raw.send(JSON.stringify({ id: 2, method: "process/list" }));
    const reply = await withDeadline(
      nextJson(it),
      D,
      `process/list after params ${JSON.stringify(params)}`,
    );
    assert.deepEqual(reply, { jsonrpc: "2.0", id: 2, result: { processes: [] } });
    await raw.close();
    await withDeadline(served, D, "served");
  }
});

Deno.test("Session resumes within its TTL: processes survive, output is caught up with process/read", async () => {
  await using executor = useExecutor({ sessionTtlMs: 5_000 });
  const first = connect(executor);
  const sessionId = await first.init();
  await first.call("process/start", { processId: "cat", argv: ["cat"], pipeStdin: true });
  await first[Symbol.asyncDispose]();
  await using second = connect(executor);
  assert.deepEqual(await second.call("initialize", { resumeSessionId: sessionId }), { sessionId });
  await second.peer.notify("initialized");
  const chunk = new TextEncoder().encode("after resume\n").toBase64();
  assert.deepEqual(await second.call("process/write", { processId: "cat", chunk, eof: true }), {
    status: "accepted",
  });
  await waitNote(second, "process/closed", "cat");
  assert.equal(outputText(second.notes, "cat"), "after resume\n");
  const read = await second.call("process/read", { processId: "cat" });
  assert.equal(read.exitCode, 0);
  // A third connection cannot take a session that is attached.
  await using third = connect(executor);
  await third.fails("initialize", { resumeSessionId: sessionId }, -32010, sessionId);
  await third.fails(
    "initialize",
    { resumeSessionId: crypto.randomUUID() },
    -32600,
    "unknown session id",
  );
});

Deno.test("Session resume answers initialize first, then sends the events retained while detached, in order", async () => {
  let table: ProcessTable | undefined;
  await using registry = new SessionRegistry({ createTable: () => table = new ProcessTable() });
  const context: SessionContext = {
    registry,
    fs: new FsOps(new SandboxPolicy()),
    environmentInfo: () => Promise.reject(new Error("not used")),
  };
  const [firstClient, firstServer] = channelPair();
  const firstServed = serveSession(firstServer, context);
  const first = new JsonRpcPeer(firstClient);
  const { sessionId } = await withDeadline(
    first.request<{ sessionId: string }>("initialize", {}),
    D,
    "initialize",
  );
  await first.notify("initialized");
  await first.close();
  await withDeadline(firstServed, D, "first connection served");
  // The session is detached: its program runs and ends with nobody attached.
  await withDeadline(
    table!.start({ processId: "p", argv: ["sh", "-c", "echo late"] }),
    D,
    "start",
  );
  await until(() => !table!.busy && table!.list().length === 1, D, "p closed, unread");
  const [raw, server] = channelPair();
  const served = serveSession(server, context);
  const it = raw[Symbol.asyncIterator]();
  await raw.send(
    JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { resumeSessionId: sessionId },
    }),
  );
  const order: string[] = [];
  for (let i = 0; i < 4; i++) {
    const message = await withDeadline(nextJson(it), D, `message ${i}`);
    const params = message.params as Record<string, unknown> | undefined;
    order.push(
      message.id === 1
        ? `reply ${(message.result as { sessionId?: string })?.sessionId === sessionId}`
        : `${message.method} ${params?.seq}`,
    );
  }
  assert.deepEqual(order, [
    "reply true",
    "process/output 1",
    "process/exited 2",
    "process/closed 3",
  ]);
  await raw.close();
  await withDeadline(served, D, "served");
});

Deno.test("Session detached past its TTL is gone and its processes are killed", async () => {
  await using executor = useExecutor({ sessionTtlMs: 100 });
  const first = connect(executor);
  const sessionId = await first.init();
  await first.call("process/start", {
    processId: "s",
    argv: ["sh", "-c", "echo $$; exec sleep 100"],
  });
  await until(() => outputText(first.notes, "s").endsWith("\n"), D, "pid");
  const pid = Number(outputText(first.notes, "s").trim());
  await first[Symbol.asyncDispose]();
  await until(
    async () => {
      try {
        const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
        return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
      } catch {
        return true;
      }
    },
    D,
    "sleep killed after the TTL",
  );
  await using second = connect(executor);
  await second.fails("initialize", { resumeSessionId: sessionId }, -32600, "unknown session id");
});

Deno.test("Session validates every param and names it", async () => {
  await using executor = useExecutor();
  await using c = connect(executor);
  await c.init();
  const P = -32602;
  await c.fails("process/start", [], P, "expected an object");
  await c.fails("process/start", { argv: ["true"] }, P, '"processId" is required');
  await c.fails("process/start", { processId: "", argv: ["true"] }, P, '"processId"');
  await c.fails("process/start", { processId: "p", argv: [] }, P, '"argv"');
  await c.fails("process/start", { processId: "p", argv: ["true", 1] }, P, '"argv[1]"');
  await c.fails(
    "process/start",
    { processId: "p", argv: ["true"], cwd: "rel" },
    P,
    '"cwd"',
    "absolute",
  );
  await c.fails("process/start", { processId: "p", argv: ["true"], env: { A: 1 } }, P, '"env.A"');
  await c.fails("process/start", { processId: "p", argv: ["true"], tty: "yes" }, P, '"tty"');
  await c.fails(
    "process/start",
    { processId: "p", argv: ["true"], timeoutMs: 0 },
    P,
    '"timeoutMs"',
  );
  await c.fails(
    "process/start",
    { processId: "p", argv: ["true"], confinement: "vm" },
    P,
    '"confinement"',
  );
  await c.fails("process/read", { processId: "p", afterSeq: -1 }, P, '"afterSeq"');
  await c.fails("process/read", { processId: "p", afterSeq: 1.5 }, P, '"afterSeq"');
  await c.fails("process/read", { processId: "p", maxBytes: -1 }, P, '"maxBytes"');
  await c.fails("process/read", { processId: "p", waitMs: "1" }, P, '"waitMs"');
  await c.fails("process/write", { processId: "p", chunk: "not base64!" }, P, '"chunk"', "base64");
  await c.fails("process/write", { processId: "p", chunk: "YQ" }, P, '"chunk"');
  await c.fails("process/write", { processId: "p", chunk: "YQ==", eof: 1 }, P, '"eof"');
  await c.fails("process/signal", { processId: "p", signal: "SIGFOO" }, P, '"signal"');
  await c.fails("process/resize", { processId: "p", cols: 0, rows: 1 }, P, '"cols"');
  await c.fails("fs/readFile", { path: "relative" }, P, '"path"', "absolute");
  await c.fails("fs/writeFile", { path: "/tmp/x", dataBase64: 5 }, P, '"dataBase64"');
  await c.fails("fs/copy", { sourcePath: "/tmp" }, P, '"destinationPath"');
  assert.deepEqual(await c.call("process/list"), { processes: [] });
});

Deno.test("Session process methods: unknown ids, duplicates, signals, list, limits, timeouts", async () => {
  await using executor = useExecutor({ maxProcessesPerSession: 2, maxWaitMs: 50 });
  await using c = connect(executor);
  await c.init();
  await c.fails("process/read", { processId: "nope" }, -32600, "unknown process");
  assert.deepEqual(await c.call("process/write", { processId: "nope", chunk: "" }), {
    status: "unknownProcess",
  });
  assert.deepEqual(await c.call("process/terminate", { processId: "nope" }), { running: false });
  await c.call("process/start", { processId: "a", argv: ["sleep", "100"] });
  await c.fails("process/start", { processId: "a", argv: ["true"] }, -32600, "already exists");
  await c.call("process/start", { processId: "b", argv: ["sleep", "100"] });
  // At the limit of 2 live processes; one past it is refused.
  await c.fails("process/start", { processId: "c", argv: ["true"] }, -32602, "limit");
  const listed = (await c.call("process/list")).processes as {
    processId: string;
    running: boolean;
  }[];
  assert.deepEqual(listed.map((p) => [p.processId, p.running]).sort(), [["a", true], ["b", true]]);
  // waitMs is capped by maxWaitMs (50 ms here): the long-poll returns empty, promptly.
  const started = performance.now();
  const idle = await c.call("process/read", { processId: "a", waitMs: 1_000_000 });
  assert.deepEqual(idle.chunks, []);
  assert.ok(performance.now() - started < 2_000);
  await c.fails("process/resize", { processId: "a", cols: 80, rows: 24 }, -32602, "terminal");
  assert.deepEqual(await c.call("process/signal", { processId: "a", signal: "SIGTERM" }), {
    delivered: true,
  });
  const exited = await waitNote(c, "process/exited", "a");
  assert.equal(exited.params.exitCode, 143);
  assert.equal(exited.params.signal, "SIGTERM");
  // A read tells the signal too (a client that missed the notification recovers it).
  assert.equal((await c.call("process/read", { processId: "a" })).signal, "SIGTERM");
  assert.deepEqual(await c.call("process/terminate", { processId: "b" }), { running: true });
  await waitNote(c, "process/closed", "b");
  await c.call("process/start", { processId: "t", argv: ["sleep", "100"], timeoutMs: 100 });
  const timed = await waitNote(c, "process/exited", "t");
  assert.equal(timed.params.timedOut, true);
  const read = await c.call("process/read", { processId: "t" });
  assert.equal(read.timedOut, true);
  // Exited on its own: no signal field, as in process/exited.
  await c.call("process/start", { processId: "ok", argv: ["true"] });
  await waitNote(c, "process/closed", "ok");
  assert.equal(Object.hasOwn(await c.call("process/read", { processId: "ok" }), "signal"), false);
});

Deno.test("Session delivers output bigger than the retention cap whole, in seq order", async () => {
  await using executor = useExecutor({ retainedOutputBytes: 64 * 1024 });
  await using c = connect(executor);
  await c.init();
  const size = 1024 * 1024;
  await c.call("process/start", {
    processId: "big",
    argv: ["head", "-c", String(size), "/dev/zero"],
  });
  await waitNote(c, "process/closed", "big");
  const outputs = c.notes.filter((n) => n.method === "process/output");
  const total = outputs.reduce(
    (sum, n) => sum + Uint8Array.fromBase64(n.params.chunk as string).length,
    0,
  );
  assert.equal(total, size);
  const seqs = c.notes.filter((n) => n.params.processId === "big").map((n) =>
    n.params.seq as number
  );
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
});

Deno.test("Session gives a child exactly env as Codex does, follows envPolicy, and inherits when asked", async () => {
  await using executor = useExecutor();
  await using c = connect(executor);
  await c.init();
  const envOf = async (processId: string, params: Record<string, unknown>) => {
    await c.call("process/start", { processId, argv: ["env"], ...params });
    await waitNote(c, "process/closed", processId);
    return outputText(c.notes, processId).trim().split("\n").filter(Boolean).sort();
  };
  // Without envPolicy: exactly env (upstream §6.5).
  assert.deepEqual(await envOf("exact", { env: { FOO: "1" } }), ["FOO=1"]);
  // envPolicy: "core" inherits from the allowlist, set lies beneath env.
  const policy = await envOf("policy", {
    env: { B: "env" },
    envPolicy: { inherit: "core", set: { A: "set", B: "set" }, exclude: ["SHELL"] },
  });
  assert.ok(policy.includes("A=set") && policy.includes("B=env"), policy.join(" "));
  assert.ok(policy.some((line) => line.startsWith("PATH=")), "PATH is a core variable");
  assert.ok(!policy.some((line) => /^(LANG|TERM|SHELL)=/.test(line)), policy.join(" "));
  // outpost's inheritEnv: the whole allowlist.
  const inherited = await envOf("inherit", { env: { FOO: "1" }, inheritEnv: true });
  assert.ok(inherited.includes("FOO=1") && inherited.some((l) => l.startsWith("PATH=")));
  await c.fails(
    "process/start",
    { processId: "bad", argv: ["env"], envPolicy: { inherit: "some" } },
    -32602,
    "inherit",
  );
  await c.fails(
    "process/start",
    { processId: "bad2", argv: ["env"], envPolicy: { keep: [] } },
    -32602,
    "envPolicy.keep",
  );
});

Deno.test("Executor limits sessions and live processes across sessions, at the limit and one past", async () => {
  await using executor = useExecutor({ maxSessions: 2, maxProcesses: 1 });
  await using a = connect(executor);
  await using b = connect(executor);
  await using c = connect(executor);
  await a.init();
  await b.init();
  await c.fails("initialize", { clientName: "third" }, -32600, "limit of 2 sessions");
  await a.call("process/start", { processId: "one", argv: ["sleep", "100"] });
  await b.fails("process/start", { processId: "two", argv: ["sleep", "100"] }, -32602, "limit");
  await a.call("process/terminate", { processId: "one" });
  await waitNote(a, "process/closed", "one");
  await b.call("process/start", { processId: "two", argv: ["true"] });
  await waitNote(b, "process/closed", "two");
});

Deno.test("Executor at its session limit replaces the oldest detached idle session, and refuses while each is attached or busy", async () => {
  // A long TTL: only the limit can end a detached session here.
  await using executor = useExecutor({ maxSessions: 2, sessionTtlMs: 30_000 });
  const busy = connect(executor);
  const busyId = await busy.init();
  await busy.call("process/start", { processId: "long", argv: ["sleep", "100"] });
  await busy[Symbol.asyncDispose](); // detached, its process running
  const idle = connect(executor);
  const idleId = await idle.init();
  await idle.call("process/start", { processId: "quick", argv: ["true"] });
  await waitNote(idle, "process/exited", "quick");
  await idle[Symbol.asyncDispose](); // detached, nothing running
  // At the limit (2 of 2): the idle detached session makes room.
  await using third = connect(executor);
  await third.init();
  await using late = connect(executor);
  await late.fails(
    "initialize",
    { resumeSessionId: idleId },
    -32600,
    "unknown session id",
  );
  // Past it: one session attached, the other running a process; nothing to replace.
  await late.fails("initialize", { clientName: "fourth" }, -32600, "limit of 2 sessions");
  // The busy one was kept, and resumes with its process.
  await using back = connect(executor);
  assert.equal(await back.init({ resumeSessionId: busyId }), busyId);
  assert.deepEqual(
    (await back.call("process/list")).processes,
    [{ processId: "long", argv: ["sleep", "100"], running: true, exitCode: null }],
  );
});

Deno.test("Executor at its session limit keeps a detached session whose exited process left a child holding its output", async () => {
  const token = uniqueSleep();
  await using executor = useExecutor({ maxSessions: 1, sessionTtlMs: 30_000 });
  const first = connect(executor);
  const sessionId = await first.init();
  // The shell exits at once; the `sleep` it left behind keeps its stdout open.
  await first.call("process/start", {
    processId: "bg",
    argv: ["sh", "-c", `sleep ${token} & echo started`],
  });
  await waitNote(first, "process/exited", "bg");
  const pids = await waitForPids(`sleep ${token}`, 1);
  await first[Symbol.asyncDispose](); // detached, its process exited but not closed
  await using second = connect(executor);
  await second.fails("initialize", { clientName: "second" }, -32600, "limit of 1 session ");
  assert.deepEqual(livePidsWith(`sleep ${token}`), pids, "the child outlives the refusal");
  // Once the child ends, the process closes and the session makes room.
  const back = connect(executor);
  assert.equal(await back.init({ resumeSessionId: sessionId }), sessionId);
  killPids(pids);
  await waitNote(back, "process/closed", "bg");
  await back[Symbol.asyncDispose]();
  await using third = connect(executor);
  await third.init();
});

/** Sessions up to `maxSessions` on a registry whose clock the test moves ahead (`clock.skew`, ms). */
function clockedSessions(maxSessions: number) {
  const clock = { skew: 0 };
  const registry = new SessionRegistry({
    createTable: () => new ProcessTable(),
    maxSessions,
    now: () => performance.now() + clock.skew,
  });
  const context: SessionContext = {
    registry,
    fs: new FsOps(new SandboxPolicy()),
    environmentInfo: () => Promise.reject(new Error("not used")),
  };
  return { clock, registry, context, [Symbol.asyncDispose]: () => registry.close() };
}

Deno.test("Executor at its session limit ends an attached session whose connection waited on nothing for idleAttachedMs, all its processes closed (a harness gone without closing), and no other", async () => {
  await using limited = clockedSessions(2);
  const { clock, context } = limited;
  const open = () => {
    const [client, server] = channelPair();
    const served = serveSession(server, context);
    const peer = new JsonRpcPeer(client);
    const init = peer.request("initialize", { clientName: "idle" });
    return { peer, served, init, server };
  };
  const refused = async () => {
    const late = open();
    await assert.rejects(withDeadline(late.init, D, "initialize"), /limit of 2 sessions/);
    await late.peer.close();
  };
  const gone = open();
  await withDeadline(gone.init, D, "gone's initialize");
  await gone.peer.notify("initialized");
  await withDeadline(
    gone.peer.request("process/start", { processId: "p", argv: ["true"] }),
    D,
    "gone's start",
  );
  const busy = open();
  await withDeadline(busy.init, D, "busy's initialize");
  await busy.peer.notify("initialized");
  await withDeadline(
    busy.peer.request("process/start", { processId: "p", argv: ["sleep", "30"] }),
    D,
    "busy's start",
  );
  // `gone`'s program has closed; its connection says nothing from now on.
  await withDeadline(
    gone.peer.request("process/read", { processId: "p", afterSeq: 0, waitMs: 5_000 }),
    D,
    "gone's program ran",
  );
  await until(
    async () => ((await gone.peer.request<{ closed: boolean }>("process/read", {
      processId: "p",
      afterSeq: 100,
    }))
      .closed),
    D,
    "gone's program closed",
  );
  clock.skew = DEFAULT_IDLE_ATTACHED_MS - 1_000;
  await refused();
  clock.skew = DEFAULT_IDLE_ATTACHED_MS + 1_000;
  const fresh = open();
  await withDeadline(fresh.init, D, "fresh's initialize: it took gone's place");
  await withDeadline(gone.served, D, "gone's connection ended");
  assert.equal(gone.server.closeReason, SESSION_LIMIT_REASON, "it is told why");
  // `busy` waits on a live program: it keeps its session.
  assert.equal(
    (await withDeadline(
      busy.peer.request<{ running: boolean }>("process/terminate", { processId: "p" }),
      D,
      "terminate",
    )).running,
    true,
  );
  await refused();
  for (const conn of [busy, fresh]) {
    await conn.peer.close();
    await withDeadline(conn.served, D, "served");
  }
});

Deno.test("Executor at its session limit counts a connection active until its output has gone to the channel: a harness still receiving on a slow link keeps its session", async () => {
  await using limited = clockedSessions(1);
  const { clock, context } = limited;
  // The executor's end of the slow link: while `held`, sends wait for release.
  const [client, server] = channelPair();
  let held: PromiseWithResolvers<void> | null = null;
  let waiting = 0;
  const slow: MessageChannel = {
    send: async (message) => {
      if (held !== null) {
        waiting++;
        await held.promise;
      }
      return await server.send(message);
    },
    close: (reason) => server.close(reason),
    get closed() {
      return server.closed;
    },
    [Symbol.asyncIterator]: () => server[Symbol.asyncIterator](),
  };
  const served = serveSession(slow, context);
  const peer = new JsonRpcPeer(client, {
    onNotification: (method) => method === "process/closed" && closed.resolve(),
  });
  const closed = Promise.withResolvers<void>();
  await withDeadline(peer.request("initialize", { clientName: "slow" }), D, "initialize");
  await peer.notify("initialized");
  held = Promise.withResolvers<void>();
  const started = peer.request("process/start", { processId: "p", argv: ["sh", "-c", "echo hi"] });
  // The start's reply, the output, the exit and the close wait on the slow
  // link, for longer than idleAttachedMs.
  await until(() => waiting === 4, D, "everything waiting on the link");
  clock.skew = DEFAULT_IDLE_ATTACHED_MS + 1_000;
  held.resolve();
  held = null;
  await withDeadline(started, D, "the start's reply");
  await withDeadline(closed.promise, D, "the output and the close delivered");
  const [otherClient, otherServer] = channelPair();
  const otherServed = serveSession(otherServer, context);
  const other = new JsonRpcPeer(otherClient);
  await assert.rejects(
    withDeadline(other.request("initialize", { clientName: "other" }), D, "other"),
    /limit of 1 session/,
  );
  assert.deepEqual(
    (await withDeadline(
      peer.request<{ exited: boolean }>("process/read", { processId: "p" }),
      D,
      "read",
    )).exited,
    true,
    "the slow harness keeps its session",
  );
  for (const [p, done] of [[peer, served], [other, otherServed]] as const) {
    await p.close();
    await withDeadline(done, D, "served");
  }
});

Deno.test("Executor at its session limit replaces the session detached the longest, not the oldest created", async () => {
  await using executor = useExecutor({ maxSessions: 2, sessionTtlMs: 30_000 });
  const older = connect(executor);
  const olderId = await older.init();
  const newer = connect(executor);
  const newerId = await newer.init();
  await newer[Symbol.asyncDispose](); // detached first
  await older[Symbol.asyncDispose]();
  await using third = connect(executor);
  await third.init();
  await using late = connect(executor);
  await late.fails("initialize", { resumeSessionId: newerId }, -32600, "unknown session id");
  assert.equal(await late.init({ resumeSessionId: olderId }), olderId);
});

Deno.test("Session: a process/write to a child that never reads ends with its connection, and the session resumes", async () => {
  const token = uniqueSleep();
  await using executor = useExecutor({ sessionTtlMs: 5_000 });
  const first = connect(executor);
  const sessionId = await first.init();
  await first.call("process/start", {
    processId: "p",
    argv: ["sh", "-c", `exec sleep ${token}`],
    pipeStdin: true,
  });
  // 1 MiB overflows the pipe the child never reads: the write blocks.
  const chunk = new Uint8Array(1024 * 1024).toBase64();
  const stuck = first.peer.request("process/write", { processId: "p", chunk }).catch((e) => e);
  await first.call("process/list"); // served after the write began
  await first[Symbol.asyncDispose](); // fails unless serve() ends with the connection
  assert.ok(await stuck instanceof Error, "the stuck write gets no reply");
  await using second = connect(executor);
  assert.deepEqual(await second.call("initialize", { resumeSessionId: sessionId }), { sessionId });
  await second.peer.notify("initialized");
  const { processes } = await second.call("process/list");
  assert.deepEqual(
    (processes as { processId: string; running: boolean }[]).map((p) => [p.processId, p.running]),
    [["p", true]],
  );
  // The shell may not have exec'd `sleep` yet: wait for it, then check there is one.
  assert.equal((await waitForPids(`sleep ${token}`, 1)).length, 1);
});

Deno.test("Session: writes waiting for children that do not read never keep a terminate from being served", async () => {
  await using executor = useExecutor();
  await using conn = connect(executor);
  await conn.init();
  await conn.call("process/start", {
    processId: "p",
    argv: ["sh", "-c", "exec sleep 60"],
    pipeStdin: true,
  });
  // Past the connection's 64 requests served at once, each write waiting on
  // the full pipe (the first one fills it).
  const chunk = new Uint8Array(128 * 1024).toBase64();
  const writes = [...Array(80)].map(() =>
    conn.peer.request<{ status: string }>("process/write", { processId: "p", chunk })
  );
  assert.deepEqual(await conn.call("process/terminate", { processId: "p" }), { running: true });
  const settled = await withDeadline(Promise.allSettled(writes), D, "writes end with the child");
  assert.equal(settled.length, 80);
  for (const result of settled) {
    assert.ok(
      result.status === "rejected" || result.value.status === "stdinClosed" ||
        result.value.status === "accepted",
      JSON.stringify(result),
    );
  }
  assert.ok(
    settled.some((r) => r.status === "fulfilled" && r.value.status === "stdinClosed"),
    "the writes after the kill report the closed stdin",
  );
});

Deno.test("Session limits fs/readDirectory to what one reply carries on its channel, refusing a larger listing early", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_session_" }));
  try {
    for (let i = 0; i < 5; i++) await Deno.mkdir(`${dir}/few/${i}`, { recursive: true });
    for (let i = 0; i < 100; i++) await Deno.mkdir(`${dir}/many/${i}`, { recursive: true });
    await using executor = useExecutor();
    const [a, b] = channelPair();
    // A channel that carries less than the executor's limit (a Codex v1 stream's 261,120, smaller).
    Object.defineProperty(b, "maxMessageBytes", { value: 2048 });
    const served = executor.serve(b);
    const peer = new JsonRpcPeer(a);
    try {
      await withDeadline(peer.request("initialize", { clientName: "t" }), D, "initialize");
      await peer.notify("initialized", {});
      const few = await withDeadline(
        peer.request<{ entries: unknown[] }>("fs/readDirectory", { path: `${dir}/few` }),
        D,
        "few",
      );
      assert.equal(few.entries.length, 5);
      await assert.rejects(
        withDeadline(peer.request("fs/readDirectory", { path: `${dir}/many` }), D, "many"),
        (error: unknown) =>
          error instanceof RpcError && error.code === -32602 &&
          error.message.includes("on this stream, whose message limit is 2048 bytes"),
      );
    } finally {
      await peer.close();
      await withDeadline(served, D, "serve end");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Session detaches as soon as its channel closes, while a request is still being served", async () => {
  await using sessions = hangingProbeSessions();
  const first = sessions.connect();
  const { sessionId } = await first.peer.request<{ sessionId: string }>("initialize", {});
  const info = first.peer.request("environment/info").catch((e) => e);
  await first.peer.close();
  await using second = sessions.connect();
  assert.deepEqual(await second.resume(sessionId), { sessionId });
  sessions.probe.reject(new Error("probe ended"));
  await withDeadline(first.served, D, "first connection served");
  assert.ok(await info instanceof Error, "the request gets no reply on a closed connection");
  await second.peer.close();
  await withDeadline(second.served, D, "second connection served");
});

Deno.test("Session: an initialize read after its channel closed attaches nothing", async () => {
  await using sessions = hangingProbeSessions();
  const first = sessions.connect();
  const { sessionId } = await first.peer.request<{ sessionId: string }>("initialize", {});
  await first.peer.close();
  await withDeadline(first.served, D, "first connection served");
  // A connection that queues a resume behind a request that hangs, then closes at once.
  const [raw, server] = channelPair();
  const served = serveSession(server, sessions.context);
  await raw.send(JSON.stringify({ id: 1, method: "environment/info" }));
  await raw.send(
    JSON.stringify({ id: 2, method: "initialize", params: { resumeSessionId: sessionId } }),
  );
  await raw.close();
  await using third = sessions.connect();
  assert.deepEqual(await third.resume(sessionId), { sessionId });
  sessions.probe.reject(new Error("probe ended"));
  await withDeadline(served, D, "closed connection served");
  await third.peer.close();
  await withDeadline(third.served, D, "third connection served");
});
