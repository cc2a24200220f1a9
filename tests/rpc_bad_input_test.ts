/**
 * Hostile JSON-RPC against a real local server over a real WebSocket:
 * malformed JSON, wrong types for every param of every method, huge and
 * deeply nested messages, unknown methods, lifecycle misuse, out-of-range
 * `afterSeq`/`maxBytes`/`waitMs`, base64 that is not base64. Each gets a clear
 * JSON-RPC error, and the session keeps serving.
 *
 * @module
 */

import assert from "node:assert/strict";
import { MAX_DENO_PERMISSION_VALUES, resolveGrantedProgram } from "../lib/exec/confinement.ts";
import { ttyCommand } from "../lib/exec/tty.ts";
import { MAX_ARG_STRING_BYTES } from "../lib/_limits.ts";
import { clipped } from "../lib/exec/_params.ts";
import { Executor } from "../lib/exec/executor.ts";
import { serveExecutor } from "./_support/ws_channel.ts";
import { type RawResponse, RawRpc } from "./_support/raw_rpc.ts";
import { withDeadline } from "./_support/deadline.ts";
import { record } from "./_support/report.ts";

const PARSE_ERROR = -32700;
const INVALID_REQUEST = -32600;
const METHOD_NOT_FOUND = -32601;
const INVALID_PARAMS = -32602;

interface Harness extends AsyncDisposable {
  url: string;
  dir: string;
  connect(): Promise<RawRpc>;
  session(): Promise<RawRpc>;
}

async function startServer(): Promise<Harness> {
  const dir = await Deno.makeTempDir({ prefix: "outpost_rpc_bad_" });
  const executor = new Executor({ writeRoots: [dir], cwd: dir, sessionTtlMs: 200 });
  const server = serveExecutor(executor);
  const open: RawRpc[] = [];
  const connect = async (): Promise<RawRpc> => {
    const rpc = await RawRpc.open(server.url);
    open.push(rpc);
    return rpc;
  };
  return {
    url: server.url,
    dir,
    connect,
    async session(): Promise<RawRpc> {
      const rpc = await connect();
      await rpc.call("initialize", { clientName: "bad-input-test" });
      rpc.notify("initialized");
      return rpc;
    },
    async [Symbol.asyncDispose](): Promise<void> {
      await Promise.all(open.map((r) => r.close()));
      await server.close();
      await executor.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** The session still answers a cheap request. */
async function assertServing(rpc: RawRpc, context: string): Promise<void> {
  const r = await rpc.request("environment/info", {}, 5000);
  assert.ok(
    r.result !== undefined,
    `session stopped serving after ${context}: ${JSON.stringify(r)}`,
  );
}

function assertError(r: RawResponse, codes: number[], context: string, mentions?: string): void {
  assert.ok(r.error, `${context}: expected an error, got ${JSON.stringify(r).slice(0, 300)}`);
  assert.ok(
    codes.includes(r.error.code),
    `${context}: code ${r.error.code} not in ${codes}: ${r.error.message}`,
  );
  assert.equal(typeof r.error.message, "string");
  assert.ok(
    r.error.message.length > 0 && r.error.message.length < 2000,
    `${context}: message length`,
  );
  assert.ok(!r.error.message.endsWith("."), `${context}: message ends with a period`);
  if (mentions !== undefined) {
    assert.ok(
      r.error.message.includes(mentions),
      `${context}: message does not name ${mentions}: ${r.error.message}`,
    );
  }
}

Deno.test("malformed JSON-RPC messages get a parse or invalid-request error and the session keeps serving", async () => {
  await using h = await startServer();
  const rpc = await h.session();
  const inputs = [
    "{",
    "",
    " ",
    "nul",
    '{"id":1,"method":"environment/info"',
    "\u0000",
    "null",
    "42",
    '"text"',
    "true",
    "[]",
    "{}",
    '{"id":7}',
    '{"id":8,"method":5}',
    '{"id":9,"method":null}',
    '{"id":10,"method":["environment/info"]}',
    '{"id":{"x":1},"method":"environment/info"}',
    '{"id":[1],"method":"environment/info"}',
    '{"id":true,"method":"environment/info"}',
  ];
  let cases = 0;
  for (const text of inputs) {
    const r = await rpc.sendRawExpectingReply(text);
    assertError(r, [PARSE_ERROR, INVALID_REQUEST], `input ${JSON.stringify(text)}`);
    await assertServing(rpc, JSON.stringify(text));
    cases++;
  }
  assert.deepEqual(rpc.garbage, []);
  record({
    area: "bad input",
    name: "JSON-RPC: malformed JSON and invalid request shapes",
    cases,
    result: "each answered -32700/-32600; session kept serving",
  });
});

/** Param kinds and values of the wrong type or out of range for each. */
const WRONG: Record<string, unknown[]> = {
  string: [42, true, [], {}, null, ""],
  // A lone surrogate would reach the system as U+FFFD: another file.
  path: [42, true, [], {}, null, "", "/tmp/a\ud800", "/tmp/\udc00b"],
  optPath: [42, true, [], {}, "/tmp/\ud800"],
  nullableString: [42, true, [], {}, "a\ud800"],
  uint: ["1", true, [], {}, -1, 1.5, 1e300, -0.5],
  optUint: ["1", true, [], {}, -1, 1.5, 1e300],
  optBool: ["true", 1, [], {}],
  argv: ["cat", [], [1], [null], [""], {}, 1, null, ["a\udfff"]],
  env: [[], "A=1", 1, { A: 1 }, { A: null }, { A: {} }, { A: "\udc00" }, { "\ud800": "x" }],
  base64: [42, [], {}, "a", "!!!!", "ab=c", "YQ==YQ==", "-_-_", "éééé"],
  signal: [42, [], {}, "", "SIGNOPE", "KILL; rm -rf /"],
  confinement: [42, [], {}, "root", "NONE "],
  pipe: [42, [], {}, null, "", "pty", "STDOUT", "stdin"],
};

interface MethodSpec {
  method: string;
  base: (id: string) => Record<string, unknown>;
  params: Record<string, keyof typeof WRONG>;
}

function methodSpecs(dir: string): MethodSpec[] {
  const file = `${dir}/f.txt`;
  return [
    {
      method: "process/start",
      base: (id) => ({ processId: id, argv: ["true"] }),
      params: {
        processId: "string",
        argv: "argv",
        cwd: "optPath",
        env: "env",
        tty: "optBool",
        pipeStdin: "optBool",
        pipeStdout: "optBool",
        pipeStderr: "optBool",
        arg0: "nullableString",
        timeoutMs: "optUint",
        confinement: "confinement",
      },
    },
    {
      method: "process/read",
      base: () => ({ processId: "live", waitMs: 0 }),
      params: { processId: "string", afterSeq: "optUint", maxBytes: "optUint", waitMs: "optUint" },
    },
    {
      method: "process/write",
      base: () => ({ processId: "live", chunk: "" }),
      params: { processId: "string", chunk: "base64", eof: "optBool" },
    },
    {
      method: "process/signal",
      base: () => ({ processId: "live", signal: "interrupt" }),
      params: { processId: "string", signal: "signal" },
    },
    {
      method: "process/terminate",
      base: () => ({ processId: "live" }),
      params: { processId: "string" },
    },
    {
      method: "process/resize",
      base: () => ({ processId: "live", cols: 80, rows: 24 }),
      params: { processId: "string", cols: "uint", rows: "uint" },
    },
    {
      method: "process/closeOutput",
      base: () => ({ processId: "live", stream: "stderr" }),
      params: { processId: "string", stream: "pipe" },
    },
    { method: "fs/readFile", base: () => ({ path: file }), params: { path: "path" } },
    {
      method: "fs/writeFile",
      base: () => ({ path: file, dataBase64: "YQ==" }),
      params: { path: "path", dataBase64: "base64" },
    },
    {
      method: "fs/createDirectory",
      base: () => ({ path: `${dir}/d`, recursive: true }),
      params: { path: "path", recursive: "optBool" },
    },
    { method: "fs/getMetadata", base: () => ({ path: file }), params: { path: "path" } },
    { method: "fs/readDirectory", base: () => ({ path: dir }), params: { path: "path" } },
    {
      method: "fs/remove",
      base: () => ({ path: `${dir}/nothing`, force: true }),
      params: { path: "path", recursive: "optBool", force: "optBool" },
    },
    {
      method: "fs/copy",
      base: () => ({ sourcePath: file, destinationPath: `${dir}/copy.txt`, recursive: false }),
      params: { sourcePath: "path", destinationPath: "path", recursive: "optBool" },
    },
    { method: "fs/canonicalize", base: () => ({ path: file }), params: { path: "path" } },
  ];
}

Deno.test("every param of every method refuses wrong types and out-of-range values with -32602 naming it", async () => {
  await using h = await startServer();
  await Deno.writeTextFile(`${h.dir}/f.txt`, "x");
  const rpc = await h.session();
  // A live process for the process/* methods.
  await rpc.call("process/start", { processId: "live", argv: ["cat"], pipeStdin: true });
  let cases = 0;
  const failures: string[] = [];
  let n = 0;
  for (const spec of methodSpecs(h.dir)) {
    // Params that are not an object at all.
    for (const params of [[], "x", 42, true]) {
      // Primitive params are an invalid request; an array is invalid params.
      const r = await rpc.request(spec.method, params);
      if (!r.error || ![INVALID_PARAMS, INVALID_REQUEST].includes(r.error.code)) {
        failures.push(`${spec.method} params=${JSON.stringify(params)} -> ${JSON.stringify(r)}`);
      }
      cases++;
    }
    for (const [name, kind] of Object.entries(spec.params)) {
      const values = [...WRONG[kind]];
      for (const value of values) {
        const params = { ...spec.base(`bad-${n++}`), [name]: value };
        const r = await rpc.request(spec.method, params, 3000).catch((e) => ({
          id: null,
          error: { code: 0, message: `no reply: ${e.message}` },
        }));
        cases++;
        if (!r.error || r.error.code !== INVALID_PARAMS || !r.error.message.includes(name)) {
          failures.push(
            `${spec.method} ${name}=${JSON.stringify(value)} -> ${JSON.stringify(r).slice(0, 200)}`,
          );
        }
      }
      // A required param left out.
      if (
        kind === "string" || kind === "path" || kind === "argv" || kind === "base64" ||
        kind === "uint" ||
        kind === "signal" || kind === "pipe"
      ) {
        const params: Record<string, unknown> = spec.base(`bad-${n++}`);
        delete params[name];
        const r = await rpc.request(spec.method, params, 3000).catch((e) => ({
          id: null,
          error: { code: 0, message: `no reply: ${e.message}` },
        }));
        cases++;
        if (!r.error || r.error.code !== INVALID_PARAMS || !r.error.message.includes(name)) {
          failures.push(`${spec.method} without ${name} -> ${JSON.stringify(r).slice(0, 200)}`);
        }
      }
    }
    await assertServing(rpc, spec.method);
  }
  // Nothing started by a refused process/start.
  const listed = await rpc.request("process/read", { processId: "bad-0", waitMs: 0 });
  assert.ok(listed.error, "a refused process/start left a process behind");
  await rpc.call("process/terminate", { processId: "live" });
  record({
    area: "bad input",
    name: "JSON-RPC: wrong types and out-of-range values for every param of every method",
    cases,
    result: failures.length === 0
      ? "each answered -32602 naming the param; session kept serving"
      : `${failures.length} not refused correctly`,
  });
  assert.deepEqual(failures, [], `${failures.length} of ${cases} cases misbehaved`);
});

Deno.test("unknown methods get -32601 naming the method, also for prototype names", async () => {
  await using h = await startServer();
  const rpc = await h.session();
  const methods = [
    "nope",
    "process/",
    "process/startx",
    "PROCESS/START",
    "__proto__",
    "constructor",
    "toString",
    "hasOwnProperty",
    "fs/readFile/../x",
    "initialized/",
  ];
  for (const method of methods) {
    const r = await rpc.request(method, {});
    assertError(r, [METHOD_NOT_FOUND], method, method);
  }
  const long = "m".repeat(100_000);
  const r = await rpc.request(long, {});
  assertError(r, [METHOD_NOT_FOUND, INVALID_REQUEST], "100 KB method name");
  const empty = await rpc.sendRawExpectingReply(
    JSON.stringify({ jsonrpc: "2.0", id: "empty", method: "", params: {} }),
  );
  assertError(empty, [METHOD_NOT_FOUND, INVALID_REQUEST], "empty method name");
  await assertServing(rpc, "unknown methods");
  // Prototype names as ids of processes do not reach Object.prototype.
  for (const processId of ["__proto__", "constructor", "toString"]) {
    const read = await rpc.request("process/read", { processId, waitMs: 0 });
    assert.ok(read.error, `process/read of ${processId} must fail as unknown`);
    assert.notEqual(read.error.code, -32603, `${processId}: internal error ${read.error.message}`);
  }
  await rpc.call("process/start", { processId: "__proto__", argv: ["true"] });
  const read = await rpc.request("process/read", { processId: "__proto__", waitMs: 2000 });
  assert.ok(read.result, `process named __proto__: ${JSON.stringify(read)}`);
  record({
    area: "bad input",
    name:
      "JSON-RPC: unknown methods (incl. prototype names, 100 KB name) and prototype-named process ids",
    cases: methods.length + 2 + 4,
    result: "each answered -32601 naming the method (or -32600); no prototype pollution",
  });
});

Deno.test("lifecycle misuse gets -32600 and the connection keeps serving", async () => {
  await using h = await startServer();
  const rpc = await h.connect();
  // Wrong types in initialize, before it has succeeded.
  for (const params of [{ clientName: 5 }, { clientName: "x", resumeSessionId: 5 }, [], "x"]) {
    const r = await rpc.request("initialize", params);
    assertError(r, [INVALID_PARAMS, INVALID_REQUEST], `initialize ${JSON.stringify(params)}`);
  }
  // Work before initialize.
  for (const method of ["process/start", "fs/readFile", "process/read"]) {
    const r = await rpc.request(method, { processId: "p", argv: ["true"], path: h.dir });
    assertError(r, [INVALID_REQUEST], `${method} before initialize`, "initialize");
  }
  // Resuming a session that does not exist.
  const unknown = await rpc.request("initialize", {
    clientName: "t",
    resumeSessionId: "00000000-0000-4000-8000-000000000000",
  });
  assertError(unknown, [INVALID_REQUEST, -32004], "resume unknown session");
  await rpc.call("initialize", { clientName: "t" });
  const twice = await rpc.request("initialize", { clientName: "t" });
  assertError(twice, [INVALID_REQUEST], "initialize twice");
  rpc.notify("initialized");
  await assertServing(rpc, "initialize twice");
  // A response object from the client, and a stray notification: ignored or
  // the connection closed; the server keeps serving other connections.
  rpc.sendText(JSON.stringify({ jsonrpc: "2.0", id: 12345, result: {} }));
  rpc.notify("process/output", { processId: "x" });
  const other = await h.session();
  await assertServing(other, "a client-sent response on another connection");
  record({
    area: "bad input",
    name:
      "JSON-RPC: lifecycle misuse (work before initialize, initialize twice, bad resume, client responses)",
    cases: 11,
    result: "each answered -32600/-32602; other connections unaffected",
  });
});

Deno.test("denoPermissions lists are bounded: 1,024 values are taken, one more is refused, and each must be well-formed", async () => {
  await using h = await startServer();
  const rpc = await h.session();
  const module = `${h.dir}/m.ts`;
  await Deno.writeTextFile(module, "");
  const start = (read: string[]) =>
    rpc.request("process/start", {
      processId: `dp-${read.length}`,
      argv: [module],
      confinement: "deno",
      denoPermissions: { read },
    });
  const paths = (n: number) => Array.from({ length: n }, (_, i) => `/tmp/outpost-dp-${i}`);
  const atLimit = await start(paths(MAX_DENO_PERMISSION_VALUES));
  assert.ok(atLimit.result, `1,024 values: ${JSON.stringify(atLimit.error)}`);
  const past = await start(paths(MAX_DENO_PERMISSION_VALUES + 1));
  assertError(past, [INVALID_PARAMS], "1,025 values", "more than 1024 values");
  const lone = await start(["/tmp/a\ud800"]);
  assertError(lone, [INVALID_PARAMS], "a lone surrogate", "well-formed");
  await assertServing(rpc, "denoPermissions");
});

/** Reads a process's output (stdout, or pty) until it closed; returns it and the exit code. */
async function output(rpc: RawRpc, processId: string): Promise<{ text: string; exitCode: number }> {
  let text = "";
  let afterSeq = 0;
  const decoder = new TextDecoder();
  for (let reads = 1;; reads++) {
    assert.ok(reads <= 1_000, `${processId}: reads end`);
    const r = await rpc.request("process/read", { processId, afterSeq, waitMs: 2000 }, 10_000);
    assert.ok(r.result, `${processId}: ${JSON.stringify(r.error)}`);
    const result = r.result as {
      chunks: { stream: string; chunk: string }[];
      nextSeq: number;
      closed: boolean;
      exitCode: number;
    };
    for (const { stream, chunk } of result.chunks) {
      if (stream !== "stderr") text += decoder.decode(Uint8Array.fromBase64(chunk));
    }
    afterSeq = result.nextSeq - 1;
    if (result.closed) return { text, exitCode: result.exitCode };
  }
}

/**
 * A session for the tests of {@linkcode MAX_ARG_STRING_BYTES}: `runs` starts
 * a process and checks its output, `refused` checks a start gets -32602
 * naming the string and that the session still serves.
 */
async function argStringRig() {
  const h = await startServer();
  const rpc = await h.session();
  let n = 0;
  const start = (params: Record<string, unknown>) =>
    rpc.request("process/start", { processId: `arg-${n++}`, ...params }, 30_000);
  return {
    dir: h.dir,
    async runs(params: Record<string, unknown>, expected: string, context: string): Promise<void> {
      const r = await start(params);
      assert.ok(r.result, `${context}: ${JSON.stringify(r.error)}`);
      const { text, exitCode } = await output(rpc, (r.result as { processId: string }).processId);
      assert.equal(exitCode, 0, `${context}: ${text.slice(0, 300)}`);
      assert.equal(text.trim(), expected, context);
    },
    async refused(params: Record<string, unknown>, context: string, names: string): Promise<void> {
      assertError(await start(params), [INVALID_PARAMS], context, names);
      await assertServing(rpc, context);
    },
    [Symbol.asyncDispose]: () => h[Symbol.asyncDispose](),
  };
}

const LIMIT = MAX_ARG_STRING_BYTES;
const PAST = `${LIMIT + 1} bytes, over the ${LIMIT} byte limit`;
/** Prints the byte count of its first argument. */
const COUNT = 'printf %s "$1" | wc -c';

Deno.test("one argv string is at most 131,071 bytes (Linux's MAX_ARG_STRLEN less the NUL): it runs at the limit, one byte past is refused with -32602 naming it", async () => {
  assert.equal(LIMIT, 131_071);
  await using rig = await argStringRig();
  // UTF-8 bytes count: "é" is 2.
  const at = "é".repeat(1000) + "x".repeat(LIMIT - 2000);
  await rig.runs({ argv: ["sh", "-c", COUNT, "sh", at] }, String(LIMIT), "argv at the limit");
  await rig.refused(
    { argv: ["sh", "-c", COUNT, "sh", at + "x"] },
    "argv past",
    `argv[4] is ${PAST}`,
  );
});

Deno.test("arg0 (passed through bash's exec -a) is at most 131,071 bytes: it runs at the limit, one byte past is refused with -32602 naming it", async () => {
  await using rig = await argStringRig();
  const zero = "z".repeat(LIMIT);
  const show = 'printf %s "$0" | wc -c';
  await rig.runs({ argv: ["sh", "-c", show], arg0: zero }, String(LIMIT), "arg0 at the limit");
  await rig.refused({ argv: ["sh", "-c", show], arg0: zero + "z" }, "arg0 past", `arg0 is ${PAST}`);
});

Deno.test("one environment entry (NAME=value) is at most 131,071 bytes: it runs at the limit, one byte past is refused with -32602 naming it", async () => {
  await using rig = await argStringRig();
  const value = "v".repeat(LIMIT - "BIG=".length);
  const show = 'printf %s "$BIG" | wc -c';
  await rig.runs({ argv: ["sh", "-c", show], env: { BIG: value } }, String(value.length), "env at");
  await rig.refused(
    { argv: ["sh", "-c", show], env: { BIG: value + "v" } },
    "env past",
    `"BIG" (NAME=value) is ${PAST}`,
  );
});

Deno.test("a deno program's --allow-read=a,b,… flag is at most 131,071 bytes: it runs at the limit, one byte past is refused with -32602 naming the permission", async () => {
  await using rig = await argStringRig();
  const module = `${rig.dir}/ran.ts`;
  await Deno.writeTextFile(module, 'console.log("ran");\n');
  // About 1,016 values of some 128 bytes each, making a flag of `flagBytes`.
  const readValues = (flagBytes: number) => {
    const values = Math.ceil((flagBytes - "--allow-read=".length + 1) / 129);
    const total = flagBytes - "--allow-read=".length - (values - 1);
    const base = Math.floor(total / values);
    return Array.from({ length: values }, (_, i) => {
      const prefix = `/tmp/outpost-argmax-${i}-`;
      return prefix + "p".repeat(base + (i < total % values ? 1 : 0) - prefix.length);
    });
  };
  const deno = (read: string[]) => ({
    argv: [module],
    confinement: "deno",
    denoPermissions: { read },
  });
  const at = readValues(LIMIT);
  assert.equal(`--allow-read=${at.join(",")}`.length, LIMIT);
  await rig.runs(deno(at), "ran", "deno flag at the limit");
  const past = readValues(LIMIT + 1);
  assert.equal(`--allow-read=${past.join(",")}`.length, LIMIT + 1);
  await rig.refused(
    deno(past),
    "deno flag past",
    `denoPermissions.read makes the flag --allow-read=… ${LIMIT + 1} bytes long, over the ${LIMIT}`,
  );
});

Deno.test("under tty the argv, quoted into one command line for script, is at most 131,071 bytes: it runs at the limit, one byte past is refused with -32602 saying so", async () => {
  await using rig = await argStringRig();
  const sh = await resolveGrantedProgram("sh");
  assert.ok(sh !== null);
  const line = (pad: string) =>
    ttyCommand([sh, "-c", COUNT, "sh", pad], { cols: 80, rows: 24 })[1].length;
  const pad = "t".repeat(LIMIT - line("t") + 1);
  assert.equal(line(pad), LIMIT);
  await rig.runs({ argv: [sh, "-c", COUNT, "sh", pad], tty: true }, String(pad.length), "tty at");
  await rig.refused(
    { argv: [sh, "-c", COUNT, "sh", pad + "t"], tty: true },
    "tty past",
    `one shell command line (quoted, for script), here ${PAST}`,
  );
});

Deno.test("unknown ids are not echoed whole: a 100,000-character processId or resumeSessionId gets a short error", async () => {
  await using h = await startServer();
  const rpc = await h.session();
  const long = '"'.repeat(100_000);
  for (const method of ["process/read", "process/resize"]) {
    const r = await rpc.request(method, {
      processId: long,
      waitMs: 0,
      cols: 80,
      rows: 24,
    });
    // assertError bounds the message at 2,000 characters.
    assertError(r, [INVALID_REQUEST], `${method} of a long unknown id`, "unknown process");
  }
  const fresh = await h.connect();
  const resume = await fresh.request("initialize", { clientName: "t", resumeSessionId: long });
  assertError(resume, [INVALID_REQUEST], "resume of a long unknown id", "unknown session id");
  await assertServing(rpc, "long unknown ids");
});

Deno.test("Codex's sandbox fields are refused (-32602), not ignored: nothing runs or is written without the sandbox asked for", async () => {
  await using h = await startServer();
  const rpc = await h.session();
  const target = `${h.dir}/written`;
  const readOnly = { type: "read-only" };
  const cases: [string, Record<string, unknown>, string][] = [
    ["process/start", { processId: "s1", argv: ["true"], sandbox: readOnly }, "sandbox"],
    [
      "process/start",
      { processId: "s2", argv: ["true"], enforceManagedNetwork: true },
      "enforceManagedNetwork",
    ],
    [
      "process/start",
      { processId: "s3", argv: ["true"], managedNetwork: { loopbackPorts: [] } },
      "managedNetwork",
    ],
    ["fs/writeFile", { path: target, dataBase64: "eA==", sandbox: readOnly }, "sandbox"],
    ["fs/readFile", { path: target, sandbox: readOnly }, "sandbox"],
    ["fs/remove", { path: h.dir, sandbox: readOnly }, "sandbox"],
  ];
  for (const [method, params, field] of cases) {
    const r = await rpc.request(method, params);
    assertError(
      r,
      [INVALID_PARAMS],
      `${method} with ${field}`,
      `"${field}" asks for Codex's sandbox`,
    );
  }
  const listed = await rpc.request("process/list", {});
  assert.deepEqual((listed.result as { processes: unknown[] }).processes, [], "nothing started");
  await assert.rejects(Deno.stat(target), Deno.errors.NotFound);
  // Absent, null and false are no request for a sandbox.
  const plain = await rpc.request("process/start", {
    processId: "plain",
    argv: ["true"],
    sandbox: null,
    managedNetwork: null,
    enforceManagedNetwork: false,
  });
  assert.deepEqual(plain.result, { processId: "plain" });
  await assertServing(rpc, "sandbox fields");
});

Deno.test("a process/start whose cwd cannot be used says why: missing or a file -32004, too long or a link loop -32602", async () => {
  await using h = await startServer();
  const rpc = await h.session();
  await Deno.writeTextFile(`${h.dir}/file`, "x");
  await Deno.symlink(`${h.dir}/loop-b`, `${h.dir}/loop-a`);
  await Deno.symlink(`${h.dir}/loop-a`, `${h.dir}/loop-b`);
  const cases: [string, number, string][] = [
    [`${h.dir}/missing`, -32004, "does not exist"],
    [`${h.dir}/file`, -32004, "is not a directory"],
    [`${h.dir}/${"a".repeat(300)}`, INVALID_PARAMS, "is too long"],
    [`${h.dir}/loop-a`, INVALID_PARAMS, "too many levels of symbolic links"],
  ];
  let n = 0;
  for (const [cwd, code, why] of cases) {
    const r = await rpc.request("process/start", { processId: `cwd-${n++}`, argv: ["true"], cwd });
    assertError(r, [code], `cwd ${cwd.slice(-20)}`, why);
  }
  await assertServing(rpc, "unusable cwd");
});

Deno.test("a notification gets an error with id null: -32601 for an unknown method, -32600 for a request sent without an id", async () => {
  await using h = await startServer();
  const rpc = await h.session();
  const note = (method: string) => JSON.stringify({ jsonrpc: "2.0", method, params: {} });
  const unknown = await rpc.sendRawExpectingReply(note("process/output"));
  assert.equal(unknown.id, null);
  assertError(unknown, [METHOD_NOT_FOUND], "unknown notification", "process/output");
  for (const method of ["process/start", "fs/readFile", "initialize"]) {
    const r = await rpc.sendRawExpectingReply(note(method));
    assert.equal(r.id, null);
    assertError(r, [INVALID_REQUEST], `${method} as a notification`, "give it an id");
  }
  await assertServing(rpc, "notifications");
});

Deno.test("out-of-range afterSeq, maxBytes and waitMs are refused or bounded, and a long poll never blocks the session", async () => {
  await using h = await startServer();
  const rpc = await h.session();
  await rpc.call("process/start", { processId: "p", argv: ["cat"], pipeStdin: true });
  let cases = 0;
  for (
    const params of [
      { afterSeq: -1 },
      { afterSeq: 2 ** 64 },
      { afterSeq: 0.5 },
      { maxBytes: -1 },
      { maxBytes: 2 ** 64 },
      { waitMs: -1 },
      { waitMs: Number.MAX_VALUE },
    ]
  ) {
    const r = await rpc.request("process/read", { processId: "p", ...params });
    assertError(r, [INVALID_PARAMS], `process/read ${JSON.stringify(params)}`);
    cases++;
  }
  // The largest safe afterSeq is valid and simply has nothing after it.
  const far = await rpc.request("process/read", {
    processId: "p",
    afterSeq: Number.MAX_SAFE_INTEGER,
    waitMs: 0,
  });
  assert.ok(far.result, JSON.stringify(far));
  cases++;
  // A very long poll (if accepted) must not hold up other requests on the session.
  const poll = rpc.request("process/read", { processId: "p", waitMs: 3_600_000 }, 10_000);
  const t0 = performance.now();
  await assertServing(rpc, "a long poll");
  const meanwhile = performance.now() - t0;
  await rpc.call("process/write", { processId: "p", chunk: btoa("hi"), eof: true });
  const polled = await poll;
  assert.ok(polled.result || polled.error, "the long poll answered");
  cases++;
  await rpc.call("process/terminate", { processId: "p" });
  record({
    area: "bad input",
    name: "JSON-RPC: out-of-range afterSeq/maxBytes/waitMs; hour-long poll beside other requests",
    cases,
    result: "out-of-range refused with -32602; long poll returned on output; session kept serving",
    details: { otherRequestDuringPollMs: Math.round(meanwhile) },
  });
});

Deno.test("huge and deeply nested messages get a clear error and the session keeps serving", async () => {
  await using h = await startServer();
  const rpc = await h.session();
  // Deep nesting in params: valid JSON, wrong shape.
  const depth = 100_000;
  const deepArray = `{"jsonrpc":"2.0","id":"deep1","method":"environment/info","params":${
    "[".repeat(depth)
  }${"]".repeat(depth)}}`;
  const r1 = await rpc.sendRawExpectingReply(deepArray, 10_000).catch((e) => e);
  let deepObject = "1";
  for (let i = 0; i < depth; i++) deepObject = `{"a":${deepObject}}`;
  const r2 = await rpc.request("fs/readFile", JSON.parse(`{"path":${deepObject}}`), 10_000)
    .catch((e) => e);
  for (const [r, what] of [[r1, "deep array params"], [r2, "deep object param"]] as const) {
    assert.ok(!(r instanceof Error), `${what}: no reply: ${r}`);
    assertError(r as RawResponse, [INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR], what);
  }
  await assertServing(rpc, "deep nesting");
  // Over the 16 MiB message limit: refused with a clear error, connection kept.
  const huge = JSON.stringify({
    jsonrpc: "2.0",
    id: "huge",
    method: "fs/writeFile",
    params: { path: `${h.dir}/huge.bin`, dataBase64: "A".repeat(17 * 1024 * 1024) },
  });
  const r3 = await rpc.sendRawExpectingReply(huge, 20_000).catch((e) => e);
  let hugeOutcome: string;
  if (r3 instanceof Error) {
    // Closing the connection is acceptable for an oversize message, as long as it is not silent.
    const ev = await withDeadline(rpc.closed, 5000, "close after oversize message");
    hugeOutcome = `connection closed ${ev.code} ${ev.reason}`;
  } else {
    assertError(r3, [INVALID_REQUEST, PARSE_ERROR], "17 MiB message");
    assert.match(r3.error!.message, /limit/);
    hugeOutcome = `error ${r3.error!.code}: ${r3.error!.message}`;
    await assertServing(rpc, "a 17 MiB message");
  }
  assert.equal(
    await Deno.stat(`${h.dir}/huge.bin`).then(() => true, () => false),
    false,
    "the oversize write left a file behind",
  );
  // A large message under the limit works.
  const rpc2 = await h.session();
  const big = "A".repeat(8 * 1024 * 1024);
  await rpc2.call("fs/writeFile", { path: `${h.dir}/big.bin`, dataBase64: big }, 20_000);
  assert.equal((await Deno.stat(`${h.dir}/big.bin`)).size, 6 * 1024 * 1024);
  record({
    area: "bad input",
    name: "JSON-RPC: 100,000-deep arrays/objects, 17 MiB message, 8 MiB message under the limit",
    cases: 4,
    result:
      `deep nesting refused with a JSON-RPC error; oversize: ${hugeOutcome}; under-limit accepted`,
  });
});

Deno.test({
  name: "an invalid request with a valid id is answered with that id",
  // Found by this suite: an invalid request with a valid id (empty method,
  // primitive params) was answered with id null. Fixed in c1299e4.
  async fn() {
    await using h = await startServer();
    const rpc = await h.session();
    for (const params of ["x", 42, true]) {
      const r = await rpc.request("process/start", params, 2000);
      assertError(r, [INVALID_REQUEST, INVALID_PARAMS], `params ${JSON.stringify(params)}`);
    }
    const r = await rpc.request("", {}, 2000);
    assertError(r, [INVALID_REQUEST, METHOD_NOT_FOUND], "empty method");
  },
});

Deno.test("clipped cuts a peer's string for an error message, never between the halves of a surrogate pair", () => {
  assert.equal(clipped("short", 10), "short");
  assert.equal(clipped("abcdef", 3), "abc\u2026");
  // "a" then pairs: index 3 is a pair's first half, so the cut falls before it.
  const cut = clipped("a\u{1F600}\u{1F600}\u{1F600}", 4);
  assert.equal(cut, "a\u{1F600}\u2026");
  assert.ok(cut.isWellFormed());
});
