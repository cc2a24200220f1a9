import assert from "node:assert/strict";
import { SandboxDeniedError } from "../lib/errors.ts";
import { detectSessionHelper, resolveGrantedProgram } from "../lib/exec/confinement.ts";
import {
  DEFAULT_MAX_ARGV_BYTES,
  GROUP_REUSE_SAFE_MS,
  MAX_FORGOTTEN_GROUPS,
  MAX_QUEUED_STDIN_BYTES,
  MAX_QUEUED_STDIN_WRITES,
  type ProcessEvent,
  ProcessLimiter,
  ProcessTable,
  type ProcessTableOptions,
  QueuedStdinLimit,
  type ReadResult,
  TIMEOUT_EXIT_CODE,
} from "../lib/exec/process_table.ts";
import {
  foregroundGroup,
  killProcesses,
  leftoverPids,
  MAX_PIDS_PER_KILL,
  PS_DEADLINE_MS,
  sessionPids,
} from "../lib/exec/tree_kill.ts";
import {
  assertNoneLeft,
  collect,
  killPids,
  livePidsWith,
  readUntil,
  runProcessFixture,
  sha256,
  uniqueSleep,
  waitForPids,
  withDeadline,
} from "./_process_helpers.ts";
import { until } from "./_support/deadline.ts";
import { ByteBudget } from "../lib/_byte_budget.ts";
import { SandboxPolicy } from "../lib/exec/sandbox_policy.ts";

const encoder = new TextEncoder();

/** pid, ppid, process group and session of a /proc/PID/stat line. */
function parseStat(text: string): { pid: number; ppid: number; pgrp: number; session: number } {
  const pid = Number(text.slice(0, text.indexOf(" ")));
  const [, ppid, pgrp, session] = text.slice(text.lastIndexOf(")") + 2).split(" ").map(Number);
  return { pid, ppid, pgrp, session };
}

Deno.test("ProcessTable starts each child through setsid as the leader of its own session and group", async () => {
  assert.match(String(await detectSessionHelper()), /\/setsid$/, "this test runs with -A");
  await using table = new ProcessTable();
  await table.start({ processId: "p", argv: ["sh", "-c", "cat /proc/$$/stat"] });
  const stat = parseStat((await collect(table, "p")).text.stdout);
  // setsid execs in place: the process the executor spawned is the leader, not a forked child.
  assert.equal(stat.ppid, Deno.pid);
  assert.equal(stat.pgrp, stat.pid);
  assert.equal(stat.session, stat.pid);
});

Deno.test("ProcessTable separates stdout and stderr and reports the exit code", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "p", argv: ["sh", "-c", "echo out; echo err >&2; exit 3"] });
  const { text, last } = await collect(table, "p");
  assert.equal(text.stdout, "out\n");
  assert.equal(text.stderr, "err\n");
  assert.equal(last.exitCode, 3);
  assert.equal(last.exited, true);
  assert.equal(last.closed, true);
  assert.equal(last.failure, null);
  assert.equal(last.timedOut, false);
});

Deno.test("ProcessTable sends output no one will read to /dev/null on the executor (pipeStdout, pipeStderr false): no pipe, no chunks, closed at the exit", async () => {
  await using table = new ProcessTable();
  // Each reports where its other stream goes, on the stream that is kept.
  await table.start({
    processId: "no-out",
    argv: ["sh", "-c", "echo lost; readlink /proc/self/fd/3 3>&1 >&2; exit 3"],
    pipeStdout: false,
  });
  await table.start({
    processId: "no-err",
    argv: ["sh", "-c", "echo lost >&2; readlink /proc/self/fd/3 3>&2"],
    pipeStderr: false,
  });
  await table.start({
    processId: "neither",
    argv: ["sh", "-c", "echo lost; echo lost >&2; exit 4"],
    pipeStdout: false,
    pipeStderr: false,
  });
  const noOut = await collect(table, "no-out");
  assert.deepEqual(noOut.text, { stderr: "/dev/null\n" });
  assert.equal(noOut.last.exitCode, 3);
  assert.equal((await collect(table, "no-err")).text.stdout, "/dev/null\n");
  assert.equal((await collect(table, "no-err")).text.stderr, undefined);
  const neither = await collect(table, "neither");
  assert.equal(neither.chunks.length, 0);
  assert.equal(neither.last.exitCode, 4);
  // Numbered as ever: the exit is seq 1, the close seq 2.
  assert.equal(neither.last.nextSeq, 3);
  assert.equal(await table.closeOutput("neither", "stdout"), false);
  // A terminal's output is one stream: kept whatever is asked.
  await table.start({ processId: "t", argv: ["echo", "shown"], tty: true, pipeStdout: false });
  assert.match((await collect(table, "t")).text.pty, /shown/);
});

Deno.test("ProcessTable numbers output, exit and closed with one counter from 1", async () => {
  const events: ProcessEvent[] = [];
  await using table = new ProcessTable({ onEvent: (e) => void events.push(e) });
  await table.start({ processId: "p", argv: ["sh", "-c", "echo a; echo b >&2; echo c"] });
  await collect(table, "p");
  assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
  assert.equal(events.at(-1)!.type, "closed");
  const exited = events.find((e) => e.type === "exited");
  assert.ok(exited && exited.type === "exited" && exited.exitCode === 0);
  const bytes = events.filter((e) => e.type === "output").reduce(
    (n, e) => n + (e.type === "output" ? e.chunk.byteLength : 0),
    0,
  );
  assert.equal(bytes, 6);
});

Deno.test("ProcessTable replays retained output with afterSeq and maxBytes", async () => {
  await using table = new ProcessTable();
  await table.start({
    processId: "p",
    argv: ["sh", "-c", "printf one; read x; printf two; read x; printf three"],
    pipeStdin: true,
  });
  await readUntil(table, "p", "one");
  assert.equal(await table.write("p", encoder.encode("\n")), "accepted");
  await readUntil(table, "p", "two");
  assert.equal(await table.write("p", encoder.encode("\n"), { eof: true }), "accepted");
  const all = await collect(table, "p");
  assert.equal(all.text.stdout, "onetwothree");
  // Replay from the start: the same chunks again.
  const replay = await table.read("p", {});
  assert.deepEqual(replay.chunks.map((c) => c.seq), all.chunks.map((c) => c.seq));
  // maxBytes 0 (as upstream's usize allows): exactly the first chunk.
  const zero = await table.read("p", { maxBytes: 0 });
  assert.deepEqual(zero.chunks.map((c) => new TextDecoder().decode(c.chunk)), ["one"]);
  // maxBytes 1: the first chunk is always included, whole.
  const first = await table.read("p", { maxBytes: 1 });
  assert.equal(first.chunks.length, 1);
  assert.equal(new TextDecoder().decode(first.chunks[0].chunk), "one");
  assert.equal(first.nextSeq, first.chunks[0].seq + 1);
  assert.equal(first.closed, false, "a read cut short by maxBytes is not the end");
  // maxBytes 6: stops once the total reaches the budget.
  const two = await table.read("p", { maxBytes: 6 });
  assert.deepEqual(two.chunks.map((c) => new TextDecoder().decode(c.chunk)), ["one", "two"]);
  // Continue after the first chunk.
  const rest = await table.read("p", { afterSeq: first.chunks[0].seq });
  assert.deepEqual(rest.chunks.map((c) => new TextDecoder().decode(c.chunk)), ["two", "three"]);
  assert.equal(rest.closed, true);
  // Past everything: no chunks, nextSeq is the process's next seq.
  const none = await table.read("p", { afterSeq: 1000 });
  assert.equal(none.chunks.length, 0);
  assert.equal(none.nextSeq, all.last.nextSeq);
});

Deno.test("ProcessTable read long-polls until output arrives", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "p", argv: ["sh", "-c", "read x; echo got $x"], pipeStdin: true });
  const pending = table.read("p", { waitMs: 5_000 });
  assert.equal(await table.write("p", encoder.encode("hi\n")), "accepted");
  const result = await withDeadline(pending, 3_000, "long-poll");
  assert.equal(new TextDecoder().decode(result.chunks[0].chunk), "got hi\n");
  await collect(table, "p");
});

Deno.test("ProcessTable read with a short wait returns empty while nothing happens", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "p", argv: ["sh", "-c", "read x"], pipeStdin: true });
  const result = await withDeadline(table.read("p", { waitMs: 50 }), 2_000, "short wait");
  assert.deepEqual(result.chunks, []);
  assert.equal(result.exited, false);
  assert.equal(result.nextSeq, 1);
  const controller = new AbortController();
  const aborted = table.read("p", { waitMs: 60_000, signal: controller.signal });
  controller.abort();
  assert.deepEqual((await withDeadline(aborted, 2_000, "aborted wait")).chunks, []);
  await table.write("p", encoder.encode("\n"), { eof: true });
  await collect(table, "p");
});

Deno.test("ProcessTable feeds stdin and closes it with eof", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "cat", argv: ["cat"], pipeStdin: true });
  assert.equal(await table.write("cat", encoder.encode("hello ")), "accepted");
  assert.equal(await table.write("cat", encoder.encode("world"), { eof: true }), "accepted");
  assert.equal(await table.write("cat", encoder.encode("late")), "stdinClosed");
  const { text, last } = await collect(table, "cat");
  assert.equal(text.stdout, "hello world");
  assert.equal(last.exitCode, 0);
});

/** Starts a process that reads no stdin until SIGHUP, then prints how many bytes waited and exits. */
async function startStdinCounter(table: ProcessTable, processId = "p"): Promise<void> {
  await table.start({
    processId,
    argv: ["sh", "-c", 'trap "wc -c; exit 0" HUP; echo ready; while :; do sleep 1 & wait $!; done'],
    pipeStdin: true,
  });
  await readUntil(table, processId, "ready");
}

Deno.test("ProcessTable queues stdin for a child that does not read up to its limit and refuses a byte more", async () => {
  await using table = new ProcessTable();
  await startStdinCounter(table);
  // A view counts with the buffer it keeps alive (a binary write's message).
  const view = new Uint8Array(MAX_QUEUED_STDIN_BYTES + 1).subarray(0, 16);
  await assert.rejects(
    withDeadline(table.write("p", view), 10_000, "the refusal of a view"),
    (e: Error) =>
      e instanceof RangeError && e.message.includes(`${MAX_QUEUED_STDIN_BYTES + 1} more`),
  );
  const atLimit = table.write("p", new Uint8Array(MAX_QUEUED_STDIN_BYTES));
  await assert.rejects(
    withDeadline(table.write("p", new Uint8Array(1)), 10_000, "the refusal"),
    (e: Error) =>
      e instanceof RangeError &&
      e.message.includes(`the limit of ${MAX_QUEUED_STDIN_BYTES}`) &&
      e.message.includes(`${MAX_QUEUED_STDIN_BYTES} bytes already wait`),
  );
  assert.equal(await table.signal("p", "SIGHUP"), true);
  assert.equal(await atLimit, "accepted");
  // Taken: the queue is empty again.
  assert.equal(await table.write("p", new Uint8Array(1), { eof: true }), "accepted");
  const { text } = await collect(table, "p");
  assert.equal(
    text.stdout,
    `ready\n${MAX_QUEUED_STDIN_BYTES + 1}\n`,
    "the refused byte was not queued",
  );
});

Deno.test("ProcessTable queues at most MAX_QUEUED_STDIN_WRITES writes for its children, all together, and refuses one more", async () => {
  await using table = new ProcessTable();
  await startStdinCounter(table, "p");
  await startStdinCounter(table, "q");
  // The first to each overflows its pipe and waits; the rest wait behind it.
  const half = MAX_QUEUED_STDIN_WRITES / 2;
  const writes: Record<string, Promise<string>[]> = { p: [], q: [] };
  for (const id of ["p", "q"]) {
    writes[id].push(table.write(id, new Uint8Array(256 * 1024)));
    for (let i = 1; i < half; i++) writes[id].push(table.write(id, new Uint8Array(1)));
  }
  for (const id of ["p", "q"]) {
    await assert.rejects(
      withDeadline(table.write(id, new Uint8Array(1)), 10_000, "the refusal"),
      (e: Error) =>
        e instanceof RangeError &&
        e.message.includes(`${MAX_QUEUED_STDIN_WRITES} writes already wait for this session's`),
    );
  }
  for (const id of ["p", "q"]) {
    assert.equal(await table.signal(id, "SIGHUP"), true);
    const statuses = await withDeadline(Promise.all(writes[id]), 10_000, "the queued writes");
    assert.ok(statuses.every((status) => status === "accepted"));
    assert.equal(await table.write(id, new Uint8Array(0), { eof: true }), "accepted");
    const { text } = await collect(table, id);
    assert.equal(text.stdout, `ready\n${256 * 1024 + half - 1}\n`);
  }
});

Deno.test("ProcessTable write reports stdinClosed without pipeStdin and unknownProcess", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "p", argv: ["sh", "-c", "cat; echo done"] });
  assert.equal(await table.write("p", encoder.encode("x")), "stdinClosed");
  assert.equal(await table.write("nope", encoder.encode("x")), "unknownProcess");
  const { text } = await collect(table, "p");
  assert.equal(text.stdout, "done\n", "stdin is /dev/null");
  assert.equal(await table.write("p", encoder.encode("x")), "stdinClosed");
});

Deno.test("ProcessTable delivers output bigger than the retention cap whole to a slow reader", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const data = new Uint8Array(8 * 1024 * 1024);
    for (let i = 0; i < data.length; i += 65536) {
      crypto.getRandomValues(data.subarray(i, i + 65536));
    }
    await Deno.writeFile(`${dir}/data`, data);
    await using table = new ProcessTable({ retainedOutputBytes: 256 * 1024 });
    await table.start({ processId: "big", argv: ["cat", `${dir}/data`] });
    // Nobody reads: the child must block instead of the table evicting unread bytes.
    const peek = await table.read("big", { afterSeq: 1_000_000, waitMs: 300 });
    assert.equal(peek.exited, false, "cat is blocked on a full pipe");
    const { bytes, chunks, last } = await collect(table, "big", { maxBytes: 65536, ms: 30_000 });
    assert.equal(bytes.stdout.byteLength, data.byteLength);
    assert.equal(await sha256(bytes.stdout), await sha256(data));
    // Seqs are consecutive but for at most one gap of one: the exit event
    // takes a seq of the same counter, between chunks when cat exits before
    // its last bytes are read from the pipe.
    const gaps = chunks.slice(1).map((chunk, i) => chunk.seq - chunks[i].seq).filter((d) =>
      d !== 1
    );
    assert.ok(
      gaps.length === 0 || (gaps.length === 1 && gaps[0] === 2),
      `no chunk was skipped or evicted (gaps between seqs: ${gaps.join(", ")})`,
    );
    assert.equal(last.exitCode, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable retains short reads in right-sized buffers, not whole read buffers", async () => {
  await using table = new ProcessTable();
  // One short line every 2 ms: the reader keeps up and sees each line alone.
  await table.start({
    processId: "p",
    argv: ["sh", "-c", "i=0; while [ $i -lt 100 ]; do echo line-$i; sleep 0.002; i=$((i+1)); done"],
  });
  const { chunks, text } = await collect(table, "p");
  assert.equal(text.stdout.split("\n").length, 101);
  assert.ok(chunks.length >= 20, `${chunks.length} chunks: the lines were not read one by one`);
  let payload = 0;
  let backing = 0;
  for (const { chunk } of chunks) {
    payload += chunk.byteLength;
    backing += chunk.buffer.byteLength;
  }
  // A read buffer is about 60 KiB; a right-sized chunk holds its bytes and the
  // binary header's room (under 300 bytes).
  assert.ok(
    backing <= 2 * payload + 300 * chunks.length,
    `${chunks.length} chunks of ${payload} bytes hold ${backing} bytes of buffers`,
  );
});

Deno.test("ProcessTable never cuts output off when the exit races it", async () => {
  await using table = new ProcessTable();
  const expected = 300_000;
  const runs = 12;
  for (let i = 0; i < runs; i++) {
    // The shell exits while a background writer still holds the pipes.
    await table.start({
      processId: `r${i}`,
      argv: ["sh", "-c", `head -c ${expected - 5} /dev/zero & printf tail1 >&2; exit ${i % 3}`],
    });
  }
  for (let i = 0; i < runs; i++) {
    const { bytes, last } = await collect(table, `r${i}`);
    assert.equal(bytes.stdout.byteLength, expected - 5);
    assert.equal(new TextDecoder().decode(bytes.stderr), "tail1");
    assert.equal(last.exitCode, i % 3);
  }
});

Deno.test("ProcessTable emits closed only after every output event", async () => {
  const events: ProcessEvent[] = [];
  await using table = new ProcessTable({ onEvent: (e) => void events.push(e) });
  await table.start({ processId: "p", argv: ["sh", "-c", "head -c 500000 /dev/zero & exit 0"] });
  await collect(table, "p");
  const closed = events.findIndex((e) => e.type === "closed");
  assert.equal(closed, events.length - 1);
  const total = events.reduce((n, e) => n + (e.type === "output" ? e.chunk.byteLength : 0), 0);
  assert.equal(total, 500000);
});

Deno.test("ProcessTable closeOutput closes the program's pipe: its next write there fails (SIGPIPE); what was read before stays readable, the other pipe stays open", async () => {
  await using table = new ProcessTable();
  for (const pipe of ["stdout", "stderr"] as const) {
    const id = `close-${pipe}`;
    const other = pipe === "stdout" ? "stderr" : "stdout";
    // It prints a line on each pipe, then floods the one closed.
    const flood = pipe === "stdout" ? "exec yes" : "exec yes >&2";
    await table.start({
      processId: id,
      argv: ["sh", "-c", `echo first; echo second >&2; ${flood}`],
    });
    await readUntil(table, id, "second");
    assert.equal(await table.closeOutput(id, pipe), true);
    assert.equal(await table.closeOutput(id, pipe), false, "already closed");
    const { text, last } = await collect(table, id);
    assert.equal(last.signal, "SIGPIPE", `${pipe}: ${JSON.stringify(last)}`);
    assert.equal(last.exitCode, 141);
    assert.ok(text.stdout.startsWith("first\n"), text.stdout.slice(0, 20));
    assert.ok(text.stderr.startsWith("second\n"), text.stderr.slice(0, 20));
    assert.equal(text[other], pipe === "stdout" ? "second\n" : "first\n", "the other pipe");
    assert.equal(await table.closeOutput(id, other), false, "a closed process");
  }
  assert.equal(await table.closeOutput("nope", "stdout"), false);
});

Deno.test("ProcessTable timeoutMs still reaches a child the program left behind once the program has closed (output not piped, or redirected): killed when the timeout comes due, not before", async () => {
  await using table = new ProcessTable({ killGraceMs: 300 });
  const cases = [
    { pipeStdout: false, pipeStderr: false, redirect: "" },
    { pipeStdout: true, pipeStderr: true, redirect: " >/dev/null 2>&1" },
  ];
  for (const [i, { redirect, ...pipes }] of cases.entries()) {
    const token = uniqueSleep();
    const started = performance.now();
    await table.start({
      processId: `left-${i}`,
      argv: ["sh", "-c", `sleep ${token}${redirect} & exit 0`],
      timeoutMs: 1_500,
      ...pipes,
    });
    const { last } = await collect(table, `left-${i}`);
    assert.equal(last.exitCode, 0);
    assert.equal(last.timedOut, false);
    await waitForPids(`sleep ${token}`, 1);
    // Closed, and the timeout not yet due: the child is left alone.
    if (performance.now() - started < 1_000) assert.equal(livePidsWith(`sleep ${token}`).length, 1);
    await assertNoneLeft(`sleep ${token}`);
    assert.ok(performance.now() - started >= 1_500, "killed before the timeout");
  }
});

Deno.test('ProcessTable and SandboxPolicy refuse a list option given as a string, which would be read a character at a time ("/srv" as the write roots /, s, r, v)', () => {
  // List options given as a string are refused, not read a character at a time.
  for (const name of ["writeRoots", "inheritEnv"]) {
    assert.throws(
      () => new ProcessTable({ [name]: "/srv" } as unknown as ProcessTableOptions),
      new RegExp(`${name} must be an array of strings`),
    );
  }
  assert.throws(
    () => new SandboxPolicy({ writeRoots: "/srv" } as unknown as { writeRoots: string[] }),
    /writeRoots must be an array of strings/,
  );
  assert.throws(
    () => new ProcessTable({ allowNetwork: "false" } as unknown as ProcessTableOptions),
    /allowNetwork must be a boolean/,
  );
});

Deno.test("ProcessTable keeps the timeouts of maxTimeoutKills closed programs for what they left, not one more: past it the one due last is dropped, and what it left waits for the close", async () => {
  assert.throws(
    () => new ProcessTable({ maxTimeoutKills: 0 }),
    /maxTimeoutKills 0 is not a positive integer/,
  );
  for (const [others, killedAtTimeout] of [[1, true], [2, false]] as const) {
    const token = uniqueSleep();
    const table = new ProcessTable({ maxTimeoutKills: 2 });
    try {
      const started = performance.now();
      await table.start({
        processId: "first",
        argv: ["sh", "-c", `sleep ${token} >/dev/null 2>&1 & exit 0`],
        timeoutMs: 1_500,
      });
      await collect(table, "first");
      await waitForPids(`sleep ${token}`, 1);
      // Quick ones due before "first" (each closes long before its own timeout).
      for (let i = 0; i < others; i++) {
        await table.start({ processId: `q${i}`, argv: ["true"], timeoutMs: 200 });
        await collect(table, `q${i}`);
      }
      const killed = await until(() => livePidsWith(`sleep ${token}`).length === 0, 4_000)
        .then(() => true, () => false);
      assert.equal(killed, killedAtTimeout, `${others} others`);
      if (killed) assert.ok(performance.now() - started >= 1_500, "killed before its timeout");
      await withDeadline(table.close(), 10_000, "close");
      await until(() => livePidsWith(`sleep ${token}`).length === 0, 5_000, "killed by the close");
    } finally {
      killPids(livePidsWith(`sleep ${token}`));
      await table.close();
    }
  }
});

Deno.test("ProcessTable timeoutMs due soon after a closed program's exit kills its groups whole: a worker forked after the exit is killed too, with no `ps` proof needed", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable();
  try {
    // The worker starts two seconds after the program exits (past the second
    // `leftoverPids` allows), its parent gone by then.
    await table.start({
      processId: "late",
      argv: ["sh", "-c", `(sleep 2; sleep ${token} >/dev/null 2>&1 &) >/dev/null 2>&1 & exit 0`],
      timeoutMs: 4_000,
    });
    await collect(table, "late");
    await waitForPids(`sleep ${token}`, 1);
    await assertNoneLeft(`sleep ${token}`, 6_000);
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
  }
});

Deno.test("ProcessTable terminate kills the whole process tree", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable();
  await table.start({
    processId: "tree",
    argv: ["sh", "-c", `sleep ${token} & sleep ${token} & (sleep ${token} &) ; echo ready; wait`],
  });
  await readUntil(table, "tree", "ready");
  assert.equal((await waitForPids(`sleep ${token}`, 3)).length, 3);
  assert.equal(await table.terminate("tree"), true);
  const { last } = await collect(table, "tree");
  assert.equal(last.exitCode, 143);
  await assertNoneLeft(`sleep ${token}`);
  assert.equal(await table.terminate("tree"), false, "closed: not running");
  assert.equal(await table.terminate("nope"), false);
});

Deno.test("ProcessTable terminate, a timeout and the close reach a job a program put in a group of its own without a terminal (job control): it stays in the program's session", async () => {
  for (const how of ["terminate", "timeout", "close"] as const) {
    const token = uniqueSleep();
    const table = new ProcessTable({ killGraceMs: 300 });
    try {
      await table.start({
        processId: "jobs",
        argv: ["bash", "-c", `set -m; sleep ${token} >/dev/null 2>&1 & echo ready; wait`],
        ...(how === "timeout" ? { timeoutMs: 1_000 } : {}),
      });
      await readUntil(table, "jobs", "ready");
      await waitForPids(`sleep ${token}`, 1);
      if (how === "terminate") await table.terminate("jobs");
      if (how === "close") await withDeadline(table.close(), 10_000, "close");
      await assertNoneLeft(`sleep ${token}`);
    } finally {
      killPids(livePidsWith(`sleep ${token}`));
      await table.close();
    }
  }
});

Deno.test("ProcessTable close lists the sessions of many programs in a few ps runs, not one per program, and kills their jobs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost_sweep_" });
  const token = uniqueSleep();
  const programs = 30;
  try {
    // `ps` and `kill` that log each run, ahead of what else the table needs on PATH.
    await Deno.mkdir(`${dir}/bin`);
    for (const name of ["bash", "setsid", "sleep", "ps", "kill"]) {
      const path = await resolveGrantedProgram(name);
      assert.ok(path !== null && path.startsWith("/"), name);
      if (name === "ps" || name === "kill") {
        const script = `#!/bin/sh\necho run >> ${dir}/${name}.log\nexec ${path} "$@"\n`;
        await Deno.writeTextFile(`${dir}/bin/${name}`, script, { mode: 0o755 });
      } else await Deno.symlink(path, `${dir}/bin/${name}`);
    }
    const table = new URL("../lib/exec/process_table.ts", import.meta.url).href;
    await Deno.writeTextFile(
      `${dir}/probe.ts`,
      `import { ProcessTable } from ${JSON.stringify(table)};
const table = new ProcessTable({ killGraceMs: 500 });
for (let i = 0; i < ${programs}; i++) {
  await table.start({ processId: "p" + i, argv: ["bash", "-c", "set -m; sleep ${token} & wait"] });
}
// Every job running (bounded by the test's deadline on this probe).
const jobs = () => [...Deno.readDirSync("/proc")].filter((entry) => {
  try {
    return Deno.readTextFileSync("/proc/" + entry.name + "/cmdline").startsWith("sleep\\u0000${token}");
  } catch {
    return false;
  }
}).length;
while (jobs() < ${programs}) await new Promise((resolve) => setTimeout(resolve, 10));
await Deno.writeTextFile(${JSON.stringify(`${dir}/ps.log`)}, "");
await table.close();
console.log("closed");
`,
    );
    const printed = await runProbe(["--no-prompt", "--no-config", "-A", `${dir}/probe.ts`], {
      env: { PATH: `${dir}/bin` },
    });
    assert.equal(printed, "closed");
    await assertNoneLeft(`sleep ${token}`);
    const psRuns = (await Deno.readTextFile(`${dir}/ps.log`)).split("\n").filter(Boolean).length;
    // A listing for the TERM's batch, and the next for what asked meanwhile; a few for the
    // KILLs of programs that closed within the grace, as they close.
    assert.ok(psRuns >= 1 && psRuns <= 8, `${psRuns} ps runs for ${programs} programs`);
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable terminate and signal sent before the start settles apply to the process", async () => {
  await using table = new ProcessTable();
  for (const how of ["terminate", "signal"] as const) {
    const token = uniqueSleep();
    const id = `early-${how}`;
    // Neither waits for the start: a harness may send them before its reply.
    const start = table.start({ processId: id, argv: ["sleep", token] });
    const sent = how === "terminate" ? table.terminate(id) : table.signal(id, "SIGKILL");
    await start;
    assert.equal(await sent, true, `${how} reached the process`);
    const { last } = await collect(table, id);
    assert.equal(last.exitCode, how === "terminate" ? 143 : 137);
    assert.deepEqual(livePidsWith(`sleep ${token}`), []);
  }
  // A start that fails answers the waiting request with "not running".
  const failing = table.start({ processId: "gone", argv: ["true"], cwd: "/nonexistent-outpost" });
  const terminated = table.terminate("gone");
  await assert.rejects(failing);
  assert.equal(await terminated, false);
});

Deno.test("ProcessTable kills what a closed process left in its group on terminate and close", async () => {
  const token = uniqueSleep();
  const table = new ProcessTable();
  try {
    // The leader exits at once; its background child keeps no pipe open, so
    // the process closes while the child lives on in its group.
    for (const id of ["a", "b"]) {
      await table.start({
        processId: id,
        argv: ["sh", "-c", `sleep ${token} >/dev/null 2>&1 </dev/null & exit 0`],
      });
      const { last } = await collect(table, id);
      assert.equal(last.exitCode, 0);
    }
    assert.equal((await waitForPids(`sleep ${token}`, 2)).length, 2);
    assert.equal(await table.terminate("a"), false, "closed: not running");
    await until(() => livePidsWith(`sleep ${token}`).length === 1, 5_000, "a's child killed");
    await table.close();
    // Signalled by now; dying takes its turn on a busy machine.
    await until(
      () => livePidsWith(`sleep ${token}`).length === 0,
      5_000,
      "b's child killed on close",
    );
  } finally {
    await table.close();
    killPids(livePidsWith(`sleep ${token}`));
  }
});

Deno.test("ProcessTable escalates to KILL after the grace period", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable({ killGraceMs: 200 });
  await table.start({
    processId: "stubborn",
    argv: ["sh", "-c", `trap '' TERM; sleep ${token} & echo ready; wait; wait`],
  });
  await readUntil(table, "stubborn", "ready");
  await table.terminate("stubborn");
  const { last } = await collect(table, "stubborn");
  assert.equal(last.exitCode, 137);
  await assertNoneLeft(`sleep ${token}`);
});

/**
 * Starts a shell that dies of a TERM, with a child `sleep TOKEN` that
 * ignores it and holds no pipe (so the process closes before a terminate's
 * grace ends), once the child runs.
 */
async function startWithStubbornChild(
  table: ProcessTable,
  processId: string,
  token: string,
): Promise<void> {
  await table.start({
    processId,
    argv: ["sh", "-c", `(trap '' TERM; exec sleep ${token}) >/dev/null 2>&1 & echo ready; wait`],
  });
  await readUntil(table, processId, "ready");
  await waitForPids(`sleep ${token}`, 1);
}

Deno.test("ProcessTable terminate still KILLs a TERM-ignoring child left in the group when the program closed within the grace", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable({ killGraceMs: 200 });
  try {
    await startWithStubbornChild(table, "p", token);
    assert.equal(await table.terminate("p"), true);
    const { last } = await collect(table, "p");
    assert.equal(last.exitCode, 143);
    await until(
      () => livePidsWith(`sleep ${token}`).length === 0,
      5_000,
      "the child killed at the end of the grace",
    );
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
  }
});

Deno.test("ProcessTable terminate keeps a program's own output in the pipe for a reader slower than a pipe per grace", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const grace = 100;
    const cap = 16 * 1024;
    // Small messages make small reads (about 2.9 KB): draining a pipe takes many of them.
    await using table = new ProcessTable({
      killGraceMs: grace,
      retainedOutputBytes: cap,
      maxMessageBytes: 4096,
    });
    const total = cap + 64 * 1024; // the cap, and what the pipe holds (see the late reader's test)
    await writeThenTerminate(table, dir, total);
    // Pacing: the reader starts once the pipe's cancel is due (KILL plus a grace),
    await new Promise((resolve) => setTimeout(resolve, grace * 3));
    // then takes 8 KiB every 50 ms (pacing): 160 KB/s, slower than a 64 KiB pipe per 100 ms grace.
    const got = await readSlowly(table, "p", 50);
    assert.equal(got.bytes, total);
    assert.equal(got.result.failure, null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable is busy while a closed process's due KILL waits, so its session is not replaced early", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable({ killGraceMs: 500 });
  try {
    await startWithStubbornChild(table, "p", token);
    await table.terminate("p");
    await collect(table, "p");
    assert.equal(table.busy, true, "closed, with the KILL for its leftover still due");
    await until(() => !table.busy, 5_000, "the KILL sent");
    await until(() => livePidsWith(`sleep ${token}`).length === 0, 5_000, "the child killed");
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
  }
});

Deno.test("ProcessTable still sends a closed process's due KILL when a start evicts its record", async () => {
  const token = uniqueSleep();
  // Two live processes per table: a fourth record evicts the oldest closed one.
  await using table = new ProcessTable({ killGraceMs: 1_000, maxProcesses: 2 });
  try {
    await startWithStubbornChild(table, "t", token);
    await table.terminate("t");
    assert.equal((await collect(table, "t")).last.exitCode, 143);
    for (const id of ["a", "b", "c", "d"]) {
      await table.start({ processId: id, argv: ["true"] });
      await collect(table, id);
    }
    await assert.rejects(table.read("t", {}), Deno.errors.NotFound, "t was evicted");
    await until(() => livePidsWith(`sleep ${token}`).length === 0, 5_000, "the child killed");
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
  }
});

Deno.test("ProcessTable forgets the processes that closed first, not those started first, when its records are full", async () => {
  // Two live processes per table, four records: a start past them evicts one closed record.
  await using table = new ProcessTable({ maxProcesses: 2 });
  await table.start({ processId: "long", argv: ["cat"], pipeStdin: true });
  for (const id of ["q1", "q2"]) {
    await table.start({ processId: id, argv: ["true"] });
    await collect(table, id);
  }
  // Started first, closed last, its output unread.
  await table.write("long", encoder.encode("late"), { eof: true });
  await until(async () => (await table.read("long", { maxBytes: 0 })).closed, 5_000, "long closed");
  await table.start({ processId: "q3", argv: ["true"] });
  await collect(table, "q3");
  // Four records: q1 (closed first) is forgotten at the next start.
  await table.start({ processId: "next", argv: ["true"] });
  await assert.rejects(table.read("q1", {}), Deno.errors.NotFound, "q1 closed first");
  assert.equal((await collect(table, "long")).text.stdout, "late", "long is still readable");
  await collect(table, "q2");
  await collect(table, "next");
});

Deno.test("ProcessTables sharing a stdin limit queue stdin for children that do not read up to it, and refuse a byte more in either table", async () => {
  const size = 200_000;
  const limit = new QueuedStdinLimit(2 * size);
  await using first = new ProcessTable({ stdinLimit: limit });
  await using second = new ProcessTable({ stdinLimit: limit });
  await startStdinCounter(first);
  await startStdinCounter(second);
  // More than a pipe holds, so each write waits for its child: at the limit together.
  const waiting = [first.write("p", new Uint8Array(size)), second.write("p", new Uint8Array(size))];
  assert.equal(limit.used, 2 * size);
  for (const table of [first, second]) {
    await assert.rejects(
      withDeadline(table.write("p", new Uint8Array(1)), 10_000, "the refusal"),
      (e: Error) =>
        e instanceof RangeError &&
        e.message.includes(`${2 * size} bytes of stdin already wait for this executor's`) &&
        e.message.includes(`its limit of ${2 * size}`),
    );
  }
  for (const table of [first, second]) assert.equal(await table.signal("p", "SIGHUP"), true);
  assert.deepEqual(await Promise.all(waiting), ["accepted", "accepted"]);
  assert.equal(limit.used, 0, "written: counted no more");
  for (const table of [first, second]) {
    assert.equal(await table.write("p", new Uint8Array(0), { eof: true }), "accepted");
    assert.equal(
      (await collect(table, "p")).text.stdout,
      `ready\n${size}\n`,
      "nothing refused was queued",
    );
  }
});

Deno.test("ProcessTables sharing a closed-output budget keep closed processes' output up to its limit, and past it forget the one that closed first, in whichever table", async () => {
  // 4,000 bytes come in one write (under PIPE_BUF), so in one chunk: each
  // such process costs the same, its bytes plus its chunk's buffer and overhead.
  const size = 4_000;
  const run = async (table: ProcessTable, id: string, bytes: number) => {
    await table.start({ processId: id, argv: ["head", "-c", String(bytes), "/dev/zero"] });
    assert.equal((await collect(table, id)).bytes.stdout.length, bytes);
  };
  const probe = new ByteBudget(1024 * 1024);
  let cost: number;
  {
    await using table = new ProcessTable({ closedOutputBudget: probe });
    await run(table, "probe", size);
    cost = probe.used;
  }
  assert.equal(probe.used, 0, "given back at the table's close");
  assert.ok(cost > size, `${cost} counts the chunk's buffer and overhead too`);
  const budget = new ByteBudget(3 * cost);
  await using first = new ProcessTable({ closedOutputBudget: budget });
  await using second = new ProcessTable({ closedOutputBudget: budget });
  await run(first, "a", size);
  await run(second, "b", size);
  await run(first, "c", size);
  // At the limit: all three keep their output for a reader that comes back.
  assert.equal(budget.used, 3 * cost);
  for (const [table, id] of [[first, "a"], [second, "b"], [first, "c"]] as const) {
    assert.equal((await table.read(id, { afterSeq: 0 })).chunks.length, 1, id);
  }
  // Past it: "a" closed first and is forgotten; the others are kept.
  await run(second, "d", 1);
  await assert.rejects(
    first.read("a", {}),
    Deno.errors.NotFound,
    `closed processes' output passes ${3 * cost} bytes`,
  );
  assert.ok(budget.used > 2 * cost && budget.used < 3 * cost, `${budget.used}`);
  assert.equal((await collect(first, "c")).bytes.stdout.length, size);
  assert.equal((await collect(second, "b")).bytes.stdout.length, size);
  assert.equal(budget.shedCount, 1);
});

Deno.test("ProcessTable gives its closed processes' share of the budget back when they are forgotten or it closes", async () => {
  const budget = new ByteBudget(1024 * 1024);
  const table = new ProcessTable({ closedOutputBudget: budget, exitedRetentionMs: 100 });
  await table.start({ processId: "x", argv: ["head", "-c", "1000", "/dev/zero"] });
  await collect(table, "x");
  assert.ok(budget.used > 1000, `${budget.used}`);
  await until(() => budget.used === 0, 5_000, "x forgotten after its retention");
  await table.start({ processId: "y", argv: ["head", "-c", "2000", "/dev/zero"] });
  await collect(table, "y");
  assert.ok(budget.used > 2000, `${budget.used}`);
  await table.close();
  assert.equal(budget.used, 0);
});

/**
 * Starts "p": a helper (started before the exit) forks the worker `sleep
 * TOKEN` 1.5 s after the leader has exited, marks it, and exits, so no member
 * that started before the exit is left, and the worker holds stdout.
 *
 * @returns When the test saw the leader's exit (`performance.now()`), once the worker runs.
 */
async function startLateWorker(table: ProcessTable, token: string, dir: string): Promise<number> {
  await table.start({
    processId: "p",
    argv: [
      "sh",
      "-c",
      `(while [ ! -e ${dir}/go ]; do sleep 0.05; done; sleep ${token} & : > ${dir}/forked) & echo ready`,
    ],
  });
  await until(
    async () => (await table.read("p", { maxBytes: 0 })).exited,
    5_000,
    "the leader exited",
  );
  const exitSeen = performance.now();
  // Pacing, not a wait for an event: the worker starts over a second after the exit, so no
  // start time proves the group the program's (what counts once the exit is long past).
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  await Deno.writeTextFile(`${dir}/go`, "");
  await until(() => exists(`${dir}/forked`), 5_000, "the worker forked");
  await waitForPids(`sleep ${token}`, 1);
  assert.equal((await table.read("p", { maxBytes: 0 })).closed, false, "its stdout still held");
  return exitSeen;
}

Deno.test("ProcessTable terminate soon after the leader exited kills a worker its leftover forked after the exit", async () => {
  const token = uniqueSleep();
  const dir = await Deno.makeTempDir({ prefix: "outpost_late_" });
  await using table = new ProcessTable({ killGraceMs: 500 });
  try {
    await startLateWorker(table, token, dir);
    await table.terminate("p");
    await until(() => livePidsWith(`sleep ${token}`).length === 0, 5_000, "the worker killed");
    assert.equal((await collect(table, "p")).last.closed, true);
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable terminate past GROUP_REUSE_SAFE_MS after the leader exited leaves a worker forked after the exit: nothing proves its group the program's", async () => {
  const token = uniqueSleep();
  const dir = await Deno.makeTempDir({ prefix: "outpost_late_" });
  const killGraceMs = 500;
  await using table = new ProcessTable({ killGraceMs });
  try {
    const exitSeen = await startLateWorker(table, token, dir);
    // Pacing: past the limit (seen from here, later than the exit itself), the group number
    // could be a newcomer's, and its only member started well after the exit.
    const past = exitSeen + GROUP_REUSE_SAFE_MS + 1_000 - performance.now();
    await new Promise((resolve) => setTimeout(resolve, past));
    await table.terminate("p");
    // An observation window: the TERM, and the KILL at the end of the grace, leave it alone.
    await new Promise((resolve) => setTimeout(resolve, killGraceMs + 1_000));
    assert.equal(livePidsWith(`sleep ${token}`).length, 1, "the worker was left alone");
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable close kills what forgotten processes left: a background child and a terminal's job", async () => {
  const plain = uniqueSleep();
  const job = uniqueSleep();
  // Retention shorter than any wait here: both records are forgotten long before the close.
  const table = new ProcessTable({ exitedRetentionMs: 50 });
  try {
    await table.start({
      processId: "plain",
      argv: ["sh", "-c", `sleep ${plain} >/dev/null 2>&1 &`],
    });
    await table.start({
      processId: "job",
      argv: ["bash", "-c", `set -m; sleep ${job} >/dev/null 2>&1 & echo started`],
      tty: true,
    });
    await waitForPids(`sleep ${plain}`, 1);
    await waitForPids(`sleep ${job}`, 1);
    for (const id of ["plain", "job"]) {
      await until(
        () => table.read(id, {}).then(() => false, (e) => e instanceof Deno.errors.NotFound),
        10_000,
        `${id} forgotten`,
      );
    }
    assert.equal(livePidsWith(`sleep ${plain}`).length, 1, "the child outlived its record");
    await withDeadline(table.close(), 10_000, "close");
    // Signalled by the close (not our children: their end is not awaited), they die soon after.
    await until(() => livePidsWith(`sleep ${plain}`).length === 0, 5_000, "the child killed");
    await until(() => livePidsWith(`sleep ${job}`).length === 0, 5_000, "the job killed");
  } finally {
    killPids([...livePidsWith(`sleep ${plain}`), ...livePidsWith(`sleep ${job}`)]);
    await table.close();
  }
});

/**
 * Starts a program that leaves a background child (with `timeoutMs`, if
 * given), then `more` quick ones
 * (each start past the second forgets the record that closed first), then
 * one more; closes the table and says whether the child died within 2 s
 * (the close signals it; it is not the table's child, so its end is not awaited).
 */
async function leftoverKilledAfter(more: number, timeoutMs?: number): Promise<boolean> {
  const token = uniqueSleep();
  // One live process, two records: every start forgets the record before the last.
  const table = new ProcessTable({ maxProcesses: 1 });
  try {
    await table.start({
      processId: "first",
      argv: ["sh", "-c", `sleep ${token} >/dev/null 2>&1 &`],
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    });
    await collect(table, "first");
    await waitForPids(`sleep ${token}`, 1);
    for (let i = 0; i < more; i++) {
      await table.start({ processId: `q${i}`, argv: ["true"] });
      await collect(table, `q${i}`);
    }
    await table.start({ processId: "last", argv: ["true"] });
    await withDeadline(table.close(), 10_000, "close");
    return await until(() => livePidsWith(`sleep ${token}`).length === 0, 2_000)
      .then(() => true, () => false);
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
    await table.close();
  }
}

Deno.test("ProcessTable close kills the leftovers of the last MAX_FORGOTTEN_GROUPS forgotten processes, not one more", async () => {
  // With `more` quick ones, `more` records are forgotten ("first" among them); two are held.
  assert.equal(await leftoverKilledAfter(MAX_FORGOTTEN_GROUPS), true, "at the limit");
  assert.equal(await leftoverKilledAfter(MAX_FORGOTTEN_GROUPS + 1), false, "one past it");
  // One whose timeout is still pending is kept for it, and the close kills for it too.
  assert.equal(
    await leftoverKilledAfter(MAX_FORGOTTEN_GROUPS + 1, 600_000),
    true,
    "kept for its timeout",
  );
});

Deno.test("ProcessTable keeps a terminate's grace for what a closed process left even when its record is evicted", async () => {
  const dir = await Deno.makeTempDir();
  const token = uniqueSleep();
  // A grace long enough that the TERM (a helper spawn) and the cleanup fit in it on a loaded
  // machine: the test ends as soon as the cleanup is seen, and the table's close kills the rest.
  await using table = new ProcessTable({ killGraceMs: 5_000, maxProcesses: 2 });
  try {
    const mark = `${dir}/cleaned`;
    const trapped = `${dir}/trapped`;
    // The child cleans up for 300 ms on TERM; the shell dies of it at once.
    const child =
      `trap 'sleep 0.3; : > ${mark}; exit 0' TERM; : > ${trapped}; while :; do sleep ${token}; done`;
    await table.start({
      processId: "t",
      argv: ["sh", "-c", `(${child}) >/dev/null 2>&1 & echo ready; wait`],
    });
    await readUntil(table, "t", "ready");
    // Its trap is set (a TERM before that would end it at once, with no cleanup), and its sleep
    // has started: a TERM to the group before then misses the sleep, and the shell runs its trap
    // only once its foreground command ends.
    await until(() => exists(trapped), 5_000, "the child's trap set");
    await waitForPids(`sleep ${token}`, 1);
    await table.terminate("t");
    await collect(table, "t");
    for (const id of ["a", "b", "c", "d"]) {
      await table.start({ processId: id, argv: ["true"] });
      await collect(table, id);
    }
    await assert.rejects(table.read("t", {}), Deno.errors.NotFound, "t was evicted");
    await until(
      () => exists(mark),
      10_000,
      "the child's cleanup finished: no early KILL",
    );
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable write leaves no listener on a signal once the write settles", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "p", argv: ["cat"], pipeStdin: true });
  const signal = new AbortController().signal;
  const added: unknown[] = [];
  const removed: unknown[] = [];
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = ((type: string, listener: EventListener, options?: unknown) => {
    added.push(listener);
    add(type, listener, options as AddEventListenerOptions);
  }) as typeof signal.addEventListener;
  signal.removeEventListener = ((type: string, listener: EventListener) => {
    removed.push(listener);
    remove(type, listener);
  }) as typeof signal.removeEventListener;
  await Promise.all([1, 2, 3].map(() => table.write("p", encoder.encode("x"), { signal })));
  assert.equal(added.length, 1, "one listener for all the writes on the signal");
  assert.deepEqual(removed, added, "and it is removed once none waits");
  await table.write("p", new Uint8Array(0), { eof: true });
  assert.equal((await collect(table, "p")).text.stdout, "xxx");
});

Deno.test("ProcessTable closes a terminated process whose escaped writer keeps its pipe full for a slow reader", async () => {
  const token = `outpost-escaped-${crypto.randomUUID()}`;
  const grace = 100;
  await using table = new ProcessTable({ killGraceMs: grace, retainedOutputBytes: 64 * 1024 });
  try {
    // `yes` leaves the group (its own session) and keeps writing into the pipe.
    await table.start({
      processId: "p",
      argv: ["sh", "-c", `setsid sh -c 'exec yes ${token}' & exec sleep 600`],
    });
    await waitForPids("yes", 1);
    await table.terminate("p");
    // A reader slower than `yes`: 16 KiB every 10 ms (pacing), until the process closes.
    const closed = withDeadline(
      (async () => {
        let afterSeq = 0;
        for (;;) {
          const result = await table.read("p", { afterSeq, maxBytes: 16384, waitMs: 1_000 });
          afterSeq = result.nextSeq - 1;
          if (result.closed) return result;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })(),
      20_000,
      "the process closing",
    );
    assert.equal((await closed).exitCode, 143);
  } finally {
    killPids(livePidsWith(`yes ${token}`));
  }
});

/**
 * Reads a process to its close, 8 KiB at a time with `pauseMs` between reads
 * (pacing: a reader slower than the pipe), within 20 s.
 */
function readSlowly(
  table: ProcessTable,
  processId: string,
  pauseMs: number,
): Promise<{ bytes: number; result: ReadResult }> {
  return withDeadline(
    (async () => {
      let afterSeq = 0;
      let bytes = 0;
      for (;;) {
        const result = await table.read(processId, { afterSeq, maxBytes: 8192, waitMs: 1_000 });
        for (const chunk of result.chunks) bytes += chunk.chunk.byteLength;
        afterSeq = result.nextSeq - 1;
        if (result.closed) return { bytes, result };
        await new Promise((resolve) => setTimeout(resolve, pauseMs));
      }
    })(),
    20_000,
    "reading it all",
  );
}

/** Whether a path exists (a mark file a test's program leaves). */
async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts "p", which writes `total` bytes (unread, they fill the retained
 * output and the pipe) and then sleeps; once it has written them all (a mark
 * file says so), terminates it.
 */
async function writeThenTerminate(table: ProcessTable, dir: string, total: number): Promise<void> {
  const mark = `${dir}/written`;
  await table.start({
    processId: "p",
    argv: ["sh", "-c", `head -c ${total} /dev/zero; : > ${mark}; exec sleep 60`],
  });
  await until(
    () => exists(mark),
    10_000,
    "everything written",
  );
  assert.equal(await table.terminate("p"), true);
}

Deno.test("ProcessTable terminate keeps output still in the pipe for a reader that comes back after the grace", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const grace = 100;
    const cap = 64 * 1024;
    await using table = new ProcessTable({ killGraceMs: grace, retainedOutputBytes: cap });
    // Reading stops at the cap or at most one read (under 64 KiB) past it, so
    // the pipe keeps 4 to 64 KiB (all it holds): the program finishes writing.
    const total = cap + 64 * 1024;
    await writeThenTerminate(table, dir, total);
    // Pacing, not a wait for an event: the reader comes back after the KILL
    // and the grace after it, when the pipe readers would be cancelled.
    await new Promise((resolve) => setTimeout(resolve, grace * 5));
    const { bytes, last } = await collect(table, "p");
    assert.equal(bytes.stdout.byteLength, total);
    assert.equal(last.exitCode, 143);
    assert.equal(last.failure, null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable terminate keeps a full 1 MiB pipe, the most a program may give its own, for a slow reader", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const grace = 50;
    const cap = 64 * 1024;
    // /proc/sys/fs/pipe-max-size's default, the table's MAX_PIPE_BYTES. Past it: the escaped
    // writer's test, whose reader is cut off once it has read more than a pipe holds.
    const pipeBytes = 1024 * 1024;
    // Small messages make small reads (about 2.9 KB), so the table looks at the pipe often
    // while its last 64 KiB are still in it.
    await using table = new ProcessTable({
      killGraceMs: grace,
      retainedOutputBytes: cap,
      maxMessageBytes: 4096,
    });
    // perl (Debian's perl-base) enlarges the output pipe (F_SETPIPE_SZ) before writing into it.
    const mark = `${dir}/written`;
    const total = cap + pipeBytes;
    await table.start({
      processId: "p",
      argv: [
        "sh",
        "-c",
        `perl -e 'fcntl(STDOUT, 1031, ${pipeBytes}) or die "F_SETPIPE_SZ: $!"' && ` +
        `head -c ${total} /dev/zero && : > ${mark}; exec sleep 60`,
      ],
    });
    await until(() => exists(mark), 10_000, "everything written");
    assert.equal(await table.terminate("p"), true);
    // Pacing: the reader starts once the pipe's cancel is due (KILL plus a grace),
    await new Promise((resolve) => setTimeout(resolve, grace * 3));
    // then takes 8 KiB every 10 ms (pacing): the 1 MiB in the pipe lasts many graces.
    const got = await readSlowly(table, "p", 10);
    assert.equal(got.bytes, total, "all of the program's own output, the full pipe included");
    assert.equal(got.result.exitCode, 143);
    assert.equal(got.result.failure, null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable terminate kills descendants that outlive an exited leader", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable();
  await table.start({ processId: "p", argv: ["sh", "-c", `sleep ${token} & echo ready`] });
  await readUntil(table, "p", "ready");
  const exited = await withDeadline(
    (async () => {
      for (;;) {
        const r = await table.read("p", { afterSeq: 1, waitMs: 1000 });
        if (r.exited) return r;
      }
    })(),
    5_000,
    "leader exit",
  );
  assert.equal(exited.closed, false, "the background sleep holds the pipes");
  assert.equal(await table.terminate("p"), false, "the leader is no longer running");
  await collect(table, "p");
  await assertNoneLeft(`sleep ${token}`);
});

/** Whether this machine lets us run in a new user and pid namespace (`unshare -Urpf`). */
const canUnshare = (() => {
  try {
    return new Deno.Command("unshare", { args: ["-Urpf", "--mount-proc", "true"] }).outputSync()
      .success;
  } catch {
    return false;
  }
})();

Deno.test({
  name:
    "killProcessGroups reaches a group whose id is 64 or less (a pid namespace's first programs)",
  ignore: !canUnshare,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "outpost_small_pgid_" });
    try {
      const treeKill = new URL("../lib/exec/tree_kill.ts", import.meta.url).href;
      const probe = `${dir}/probe.ts`;
      // In a new pid namespace the first ids are small; procps-ng 4.0.2 read `-s TERM -- -10`
      // as a signal number. The probe is pid 1 there: what it kills stays a zombie (state Z).
      await Deno.writeTextFile(
        probe,
        `import { killProcessGroups } from ${JSON.stringify(treeKill)};
const out = new Deno.Command("setsid", {
  args: ["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $! $$"],
  stdout: "piped",
}).outputSync();
const [child, group] = new TextDecoder().decode(out.stdout).trim().split(" ").map(Number);
const state = () =>
  new TextDecoder().decode(
    new Deno.Command("ps", { args: ["-o", "stat=", "-p", String(child)], stdout: "piped" })
      .outputSync().stdout,
  ).trim();
const sent = await killProcessGroups("/usr/bin/kill", [group], "SIGTERM");
for (let i = 0; i < 100 && !state().startsWith("Z") && state() !== ""; i++) {
  await new Promise((r) => setTimeout(r, 20));
}
console.log(JSON.stringify({ group, sent, state: state() }));
`,
      );
      const result = JSON.parse(
        await runProbe(["-A", probe], { via: ["unshare", "-Urpf", "--mount-proc"] }),
      );
      assert.ok(result.group <= 64, `a small group id: ${result.group}`);
      assert.equal(result.sent, true);
      assert.ok(result.state === "" || result.state.startsWith("Z"), `killed: ${result.state}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("leftoverPids lists a group's members only when one started before the program closed, from ps and /proc", async () => {
  const token = uniqueSleep();
  try {
    // A group whose leader (sh) has gone, leaving its background child.
    const out = await new Deno.Command("setsid", {
      args: ["sh", "-c", `sleep ${token} >/dev/null 2>&1 & echo $$`],
      stdout: "piped",
    }).output();
    const group = Number(new TextDecoder().decode(out.stdout).trim());
    const [child] = await waitForPids(`sleep ${token}`, 1);
    for (const ps of [await psPath(), null]) {
      const closedJustNow = { groups: [group], session: null, exitedAgoMs: 0 };
      assert.deepEqual(await leftoverPids(ps, [closedJustNow]), [child], `${ps}: ours`);
      // Had its program closed 5 s ago, a member started since would be a newcomer's, whose
      // group took over the number once the program's own had emptied: left alone.
      const closedBefore = { groups: [group], session: null, exitedAgoMs: 5_000 };
      assert.deepEqual(await leftoverPids(ps, [closedBefore]), [], `${ps}: a newcomer's`);
      assert.deepEqual(
        await leftoverPids(ps, [closedBefore, closedJustNow]),
        [child],
        `${ps}: the latest close of a number decides`,
      );
      const asSession = { groups: [], session: group, exitedAgoMs: 0 };
      assert.deepEqual(await leftoverPids(ps, [asSession]), [child], `${ps}: its session`);
    }
    // A ps without `etimes` (procps before 3.3): from /proc, which this test may read (-A).
    const oldPs = `${await Deno.makeTempDir({ prefix: "outpost_old_ps_" })}/ps`;
    await Deno.writeTextFile(
      oldPs,
      `#!/bin/sh\nfor a in "$@"; do case "$a" in *etimes*) echo "unknown format" >&2; exit 1;; esac; done\n` +
        `exec ${await psPath()} "$@"\n`,
    );
    await Deno.chmod(oldPs, 0o755);
    try {
      const closedJustNow = { groups: [group], session: null, exitedAgoMs: 0 };
      assert.deepEqual(await leftoverPids(oldPs, [closedJustNow]), [child], "ps without etimes");
    } finally {
      await Deno.remove(oldPs.replace(/\/ps$/, ""), { recursive: true });
    }
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
  }
});

Deno.test("foregroundGroup needs a session with a terminal, and a live leader", async () => {
  const ps = await psPath();
  const child = new Deno.Command("true").spawn();
  await child.status; // reaped: the pid is free now
  // A process that leads a session without a terminal has no foreground group.
  const leader = new Deno.Command("setsid", { args: ["sleep", "30"], stdout: "null" }).spawn();
  try {
    await until(
      async () => (await Deno.readTextFile(`/proc/${leader.pid}/cmdline`)).startsWith("sleep"),
      5_000,
      "setsid to exec sleep",
    );
    assert.equal(await foregroundGroup(ps, leader.pid), null);
    assert.equal(await foregroundGroup(null, leader.pid), null);
    assert.equal(await foregroundGroup(ps, child.pid), null, "a freed pid");
  } finally {
    leader.kill("SIGKILL");
    await leader.status;
  }
});

Deno.test("sessionPids lists exactly a session's processes, never the executor's own session", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable();
  // The child leads a session of its own; its jobs stay in it.
  await table.start({
    processId: "p",
    argv: ["sh", "-c", `echo $$; sleep ${token} & sleep ${token} & wait`],
  });
  const leader = Number((await readUntil(table, "p", "\n")).text.trim());
  const jobs = await waitForPids(`sleep ${token}`, 2);
  const ps = await psPath();
  const members = await sessionPids(ps, leader);
  assert.deepEqual(members?.sort(), [leader, ...jobs].sort());
  assert.deepEqual((await sessionPids(null, leader))?.sort(), members, "the same from /proc");
  const own = parseStat(Deno.readTextFileSync("/proc/self/stat")).session;
  if (own > 1) {
    assert.deepEqual(await sessionPids(ps, own), [], "the executor's session is never listed");
  }
  await assert.rejects(sessionPids(ps, 1), RangeError);
  await assert.rejects(sessionPids(ps, 0), RangeError);
  assert.equal(await table.terminate("p"), true);
  await collect(table, "p");
});

Deno.test("ProcessTable closing sends on a program's last output up to the retention's worth, not all of it toward a sink that does not keep up", async () => {
  const cap = 64 * 1024;
  const table = new ProcessTable({ killGraceMs: 300, retainedOutputBytes: cap });
  let outputBytes = 0;
  const ends: string[] = [];
  const seqs: number[] = [];
  let dropped: number | undefined;
  // A harness that never takes what it is sent.
  table.setEventSink((event) => {
    seqs.push(event.seq);
    if (event.type === "output") outputBytes += event.chunk.byteLength;
    else ends.push(event.type);
    if (event.type === "closed") dropped = event.droppedOutputBytes;
    return new Promise<void>(() => {});
  });
  await table.start({ processId: "p", argv: ["sh", "-c", 'trap "" TERM; exec cat /dev/zero'] });
  await until(() => outputBytes >= cap, 5_000, "the output held at the retention");
  const before = outputBytes;
  await withDeadline(table.close(), 10_000, "close");
  // What it printed while it stopped (a grace of full-speed writing) was sent up to the cap only.
  assert.ok(
    outputBytes - before <= cap + 64 * 1024,
    `${outputBytes - before} bytes sent while closing`,
  );
  assert.deepEqual(ends, ["exited", "closed"], "its end was still sent");
  // The dropped output took no seqs: a harness sees no gap to ask `process/read` for.
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
  assert.ok(dropped !== undefined && dropped > 0, `closed counts the dropped bytes: ${dropped}`);
});

Deno.test("ProcessTable kills leftovers and a terminal's jobs under the executor's permission set, which may not read /proc", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost_leftover_" });
  const token = uniqueSleep();
  try {
    const table = new URL("../lib/exec/process_table.ts", import.meta.url).href;
    const probe = `${dir}/probe.ts`;
    // A closed program's background child (its output redirected), and a
    // terminal's job in a group of its own: both must go.
    await Deno.writeTextFile(
      probe,
      `import { ProcessTable } from ${JSON.stringify(table)};
const table = new ProcessTable({ killGraceMs: 200 });
// Reads until the output holds \`want\`, or to the end.
const read = async (id, want) => {
  let afterSeq = 0, text = "";
  for (;;) {
    const r = await table.read(id, { afterSeq, waitMs: 1000 });
    for (const c of r.chunks) text += new TextDecoder().decode(c.chunk);
    afterSeq = r.nextSeq - 1;
    if (r.closed || (want && text.includes(want))) return text;
  }
};
await table.start({ processId: "bg", argv: ["sh", "-c", "sleep ${token} >/dev/null 2>&1 & echo started"] });
await read("bg");
await table.terminate("bg");
await table.start({ processId: "tty", tty: true, argv: ["bash", "--norc", "-ic", "sleep ${token} & echo job-started; wait"] });
await read("tty", "job-started");
await table.terminate("tty");
await read("tty");
await table.close();
console.log("done");
`,
    );
    const config = new URL("../deno.json", import.meta.url).pathname;
    const printed = await runProbe(["--no-prompt", "-P=executor", "--config", config, probe], {
      cwd: dir,
    });
    assert.equal(printed, "done");
    await until(() => livePidsWith(`sleep ${token}`).length === 0, 5_000, "no sleep left");
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable kills a closed program's leftover under --allow-all on a host without ps, from /proc", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost_nops_" });
  const token = uniqueSleep();
  try {
    // A PATH with what the table needs and no ps: a whole run grant resolves
    // the missing program to its bare name, which cannot be spawned.
    await Deno.mkdir(`${dir}/bin`);
    for (const name of ["sh", "kill", "setsid", "sleep"]) {
      const path = await resolveGrantedProgram(name);
      assert.ok(path !== null && path.startsWith("/"), name);
      await Deno.symlink(path, `${dir}/bin/${name}`);
    }
    const table = new URL("../lib/exec/process_table.ts", import.meta.url).href;
    await Deno.writeTextFile(
      `${dir}/probe.ts`,
      `import { ProcessTable } from ${JSON.stringify(table)};
const table = new ProcessTable({ killGraceMs: 200 });
await table.start({ processId: "bg", argv: ["sh", "-c", "sleep ${token} >/dev/null 2>&1 & echo started"] });
for (let afterSeq = 0;;) {
  const r = await table.read("bg", { afterSeq, waitMs: 1000 });
  afterSeq = r.nextSeq - 1;
  if (r.closed) break;
}
await table.terminate("bg");
await table.close();
console.log("done");
`,
    );
    const printed = await runProbe(["--no-prompt", "--no-config", "-A", `${dir}/probe.ts`], {
      env: { PATH: `${dir}/bin` },
    });
    assert.equal(printed, "done");
    await until(() => livePidsWith(`sleep ${token}`).length === 0, 5_000, "no sleep left");
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sessionPids answers null when ps cannot run or lists something else, and without ps outside --allow-all", async () => {
  assert.deepEqual(await sessionPids("/nonexistent/ps", 12345), [], "from /proc instead");
  const probeDir = await Deno.makeTempDir({ prefix: "outpost_session_" });
  try {
    const treeKill = new URL("../lib/exec/tree_kill.ts", import.meta.url).href;
    await Deno.writeTextFile(
      `${probeDir}/probe.ts`,
      `import { foregroundGroup, sessionPids } from ${JSON.stringify(treeKill)};\n` +
        "console.log(JSON.stringify([await sessionPids(null, Deno.pid), " +
        "await foregroundGroup(null, Deno.pid)]));\n",
    );
    // Read granted whole, as under -P=executor: Deno still refuses /proc.
    const printed = await runProbe([
      "--no-prompt",
      "--no-config",
      "--allow-read",
      `${probeDir}/probe.ts`,
    ]);
    // Nothing listed, and no foreground group told.
    assert.equal(printed, "[null,null]");
  } finally {
    await Deno.remove(probeDir, { recursive: true });
  }
  const dir = await Deno.makeTempDir({ prefix: "outpost_ps_" });
  try {
    // A stand-in whose rows are not four numbers: nothing is trusted.
    const fake = `${dir}/ps`;
    await Deno.writeTextFile(fake, "#!/bin/sh\necho '12 12 12345 -1 extra'\n", { mode: 0o755 });
    assert.equal(await sessionPids(fake, 12345), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "sessionPids takes a ps listing that answers within PS_DEADLINE_MS, and counts one that hangs past it as none, leaving nothing pending",
  // On explicitly (Deno 2.9 runs them only when asked): the hung `ps`'s pipe and exit must not leak.
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "outpost_ps_" });
    const token = uniqueSleep();
    try {
      const slow = `${dir}/slow-ps`;
      const seconds = (PS_DEADLINE_MS - 1_500) / 1000;
      await Deno.writeTextFile(slow, `#!/bin/sh\nsleep ${seconds}\necho '12345 12345 12345 -1'\n`, {
        mode: 0o755,
      });
      assert.deepEqual(await sessionPids(slow, 12345), [12345], "late, but within the deadline");
      // One that hangs, and one whose child holds its output open after it is killed.
      const hung = `${dir}/hung-ps`;
      await Deno.writeTextFile(hung, `#!/bin/sh\nexec sleep ${token}\n`, { mode: 0o755 });
      const forked = `${dir}/forked-ps`;
      await Deno.writeTextFile(forked, `#!/bin/sh\nsleep ${token} &\nexec sleep ${token}\n`, {
        mode: 0o755,
      });
      for (const ps of [hung, forked]) {
        const started = performance.now();
        assert.equal(await sessionPids(ps, 12345), null, "no listing");
        const waited = performance.now() - started;
        assert.ok(
          waited >= PS_DEADLINE_MS - 50 && waited < PS_DEADLINE_MS + 1_000,
          `gave up after ${waited} ms`,
        );
      }
      // The hung ones were killed; the forked one's child is not ours to find (it is cleaned up below).
      assert.equal(livePidsWith(`sleep ${token}`).length, 1);
    } finally {
      killPids(livePidsWith(`sleep ${token}`));
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("killProcesses runs the kill helper with at most MAX_PIDS_PER_KILL pids at a time", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost_kill_" });
  try {
    // A stand-in for the helper that records how many pids each run got (after `-TERM --`).
    const helper = `${dir}/kill`;
    await Deno.writeTextFile(helper, `#!/bin/sh\necho $(($# - 2)) >> ${dir}/runs\n`, {
      mode: 0o755,
    });
    const runs = async (count: number): Promise<string> => {
      await Deno.writeTextFile(`${dir}/runs`, "");
      const pids = Array.from({ length: count }, (_, i) => i + 2);
      await killProcesses(helper, pids, "SIGTERM");
      return (await Deno.readTextFile(`${dir}/runs`)).trim().replaceAll("\n", ",");
    };
    assert.equal(MAX_PIDS_PER_KILL, 1024);
    assert.equal(await runs(MAX_PIDS_PER_KILL), "1024");
    assert.equal(await runs(MAX_PIDS_PER_KILL + 1), "1024,1");
    assert.equal(await runs(0), "");
    await assert.rejects(killProcesses(helper, [1], "SIGTERM"), RangeError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable enforces timeoutMs and reports the exit as timed out", async () => {
  const token = uniqueSleep();
  const events: ProcessEvent[] = [];
  await using table = new ProcessTable({ onEvent: (e) => void events.push(e) });
  await table.start({ processId: "slow", argv: ["sh", "-c", `sleep ${token}`], timeoutMs: 200 });
  const { last } = await collect(table, "slow");
  assert.equal(last.exitCode, TIMEOUT_EXIT_CODE);
  assert.equal(last.timedOut, true);
  const exited = events.find((e) => e.type === "exited");
  assert.deepEqual(exited, {
    type: "exited",
    processId: "slow",
    seq: 1,
    exitCode: 124,
    signal: "SIGTERM",
    timedOut: true,
  });
  assert.deepEqual(livePidsWith(`sleep ${token}`), []);
  // A process that finishes in time is not marked.
  await table.start({ processId: "fast", argv: ["sh", "-c", "exit 0"], timeoutMs: 10_000 });
  assert.equal((await collect(table, "fast")).last.timedOut, false);
});

Deno.test("ProcessTable reports a terminate whose grace outlasts timeoutMs as terminated, not timed out", async () => {
  // The timeout passes within the grace, well after the start on a busy machine.
  await using table = new ProcessTable({ killGraceMs: 3_000 });
  await table.start({
    processId: "p",
    argv: ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
    timeoutMs: 1_500,
  });
  await readUntil(table, "p", "ready");
  await table.terminate("p");
  const { last } = await collect(table, "p");
  assert.equal(last.exitCode, 137);
  assert.equal(last.signal, "SIGKILL");
  assert.equal(last.timedOut, false);
});

Deno.test("ProcessTable validates timeoutMs at and past its limits", async () => {
  await using table = new ProcessTable();
  await assert.rejects(table.start({ processId: "a", argv: ["true"], timeoutMs: 0 }), RangeError);
  await assert.rejects(
    table.start({ processId: "a", argv: ["true"], timeoutMs: 2_147_483_648 }),
    RangeError,
  );
  await table.start({ processId: "a", argv: ["sh", "-c", "exit 0"], timeoutMs: 2_147_483_647 });
  await collect(table, "a");
});

Deno.test("ProcessTable sends signals to the process group", async () => {
  await using table = new ProcessTable();
  await table.start({
    processId: "p",
    argv: ["sh", "-c", "trap 'echo got; exit 5' INT; echo ready; while :; do sleep 0.05; done"],
  });
  await readUntil(table, "p", "ready");
  assert.equal(await table.signal("p", "SIGINT"), true);
  const { text, last } = await collect(table, "p");
  assert.match(text.stdout, /got/);
  assert.equal(last.exitCode, 5);
  assert.equal(await table.signal("p", "SIGINT"), false);
  assert.equal(await table.signal("nope", "SIGINT"), false);
});

Deno.test("ProcessTable children never see the executor's environment", async () => {
  Deno.env.set("OUTPOST_TEST_SECRET_TOKEN", "hunter2");
  try {
    await using table = new ProcessTable();
    await table.start({ processId: "env", argv: ["sh", "-c", "env"], env: { GREETING: "hi" } });
    const { text } = await collect(table, "env");
    assert.doesNotMatch(text.stdout, /hunter2|OUTPOST_TEST_SECRET_TOKEN/);
    assert.match(text.stdout, /^GREETING=hi$/m);
    assert.match(text.stdout, /^PATH=/m, "PATH is on the default allowlist");
    await table.start({
      processId: "bare",
      argv: ["sh", "-c", "env"],
      env: { ONLY: "1" },
      inheritEnv: false,
    });
    const bare = await collect(table, "bare");
    const names = bare.text.stdout.trim().split("\n").map((line) => line.split("=")[0]).sort();
    // sh itself adds PWD (and may add OLDPWD); nothing else beyond the request.
    assert.deepEqual(names.filter((n) => n !== "PWD" && n !== "OLDPWD"), ["ONLY"]);
  } finally {
    Deno.env.delete("OUTPOST_TEST_SECRET_TOKEN");
  }
});

Deno.test("ProcessTable runs the granted program, not one the request's PATH names", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/sh`, "#!/bin/sh\necho impostor\n", { mode: 0o755 });
    await using table = new ProcessTable();
    await table.start({
      processId: "p",
      argv: ["sh", "-c", "echo real"],
      env: { PATH: dir },
      tty: false,
      arg0: "custom-name",
    });
    assert.equal((await collect(table, "p")).text.stdout, "real\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable applies arg0", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "p", argv: ["sh", "-c", "echo $0", "ignored"], arg0: "x" });
  // `sh -c CMD NAME`: $0 is the first operand; arg0 replaces argv[0] itself.
  assert.equal((await collect(table, "p")).text.stdout, "ignored\n");
  await table.start({
    processId: "q",
    argv: ["bash", "-c", 'cat /proc/$$/cmdline | tr "\\0" " "'],
    arg0: "renamed",
  });
  assert.match((await collect(table, "q")).text.stdout, /^renamed -c /);
});

Deno.test("ProcessTable rejects bad starts with clear errors", async () => {
  await using table = new ProcessTable();
  await assert.rejects(table.start({ processId: "a", argv: [] }), TypeError);
  await assert.rejects(table.start({ processId: "", argv: ["true"] }), TypeError);
  await assert.rejects(table.start({ processId: "x".repeat(257), argv: ["true"] }), TypeError);
  await assert.rejects(table.start({ processId: "a", argv: ["a\0b"] }), TypeError);
  await assert.rejects(table.start({ processId: "a", argv: ["true"], cwd: "relative" }), TypeError);
  await assert.rejects(
    table.start({ processId: "a", argv: ["sh"], cwd: "/definitely/not/here" }),
    /Cannot start "sh": program or working directory not found/,
  );
  await assert.rejects(
    table.start({ processId: "a", argv: ["sh"], confinement: "bogus" as "os" }),
    TypeError,
  );
  await table.start({ processId: "dup", argv: ["sh", "-c", "exit 0"] });
  await assert.rejects(
    table.start({ processId: "dup", argv: ["sh"] }),
    (e: Error) =>
      e instanceof Deno.errors.AlreadyExists && /process already exists/.test(e.message),
  );
  await collect(table, "dup");
  await assert.rejects(
    table.read("nope", {}),
    (e: Error) => e instanceof Deno.errors.NotFound && /unknown process/.test(e.message),
  );
  await assert.rejects(table.read("dup", { afterSeq: -1 }), RangeError);
  await assert.rejects(table.read("dup", { maxBytes: -1 }), RangeError);
});

Deno.test("ProcessTable limits argv bytes at and past the limit", async () => {
  await using table = new ProcessTable({ maxArgvBytes: 64 });
  // "sh" + NUL + "-c" + NUL + "exit 0" + NUL = 13 bytes; pad the last argument.
  const pad = "x".repeat(64 - 13 - 1);
  await table.start({ processId: "at", argv: ["sh", "-c", "exit 0", pad] });
  await collect(table, "at");
  await assert.rejects(
    table.start({ processId: "past", argv: ["sh", "-c", "exit 0", pad + "x"] }),
    /argv is 65 bytes, over the 64 byte limit/,
  );
  assert.equal(DEFAULT_MAX_ARGV_BYTES, 262144);
});

Deno.test("ProcessTable limits env bytes at and past the limit", async () => {
  await using table = new ProcessTable({ maxEnvBytes: 16 });
  // "A=" + value + NUL: 16 bytes with a 13 byte value.
  await table.start({ processId: "at", argv: ["sh", "-c", "exit 0"], env: { A: "x".repeat(13) } });
  await collect(table, "at");
  await assert.rejects(
    table.start({ processId: "past", argv: ["sh"], env: { A: "x".repeat(14) } }),
    RangeError,
  );
  await assert.rejects(
    table.start({ processId: "bad", argv: ["sh"], env: { "A=B": "x" } }),
    TypeError,
  );
});

Deno.test("ProcessTable limits live processes per table and executor-wide", async () => {
  const limiter = new ProcessLimiter(3);
  await using one = new ProcessTable({ maxProcesses: 2, limiter });
  await using two = new ProcessTable({ maxProcesses: 2, limiter });
  const hold = { argv: ["sh", "-c", "read x"], pipeStdin: true };
  await one.start({ processId: "a", ...hold });
  await one.start({ processId: "b", ...hold });
  await assert.rejects(
    one.start({ processId: "c", ...hold }),
    /Cannot start "sh" \(process "c"\): the limit of 2 processes per session is reached/,
  );
  await two.start({ processId: "a", ...hold });
  assert.equal(limiter.active, 3);
  await assert.rejects(
    two.start({ processId: "b", ...hold }),
    /the executor-wide limit of 3 processes is reached/,
  );
  await one.write("a", encoder.encode("\n"), { eof: true });
  await collect(one, "a");
  assert.equal(limiter.active, 2);
  await two.start({ processId: "b", ...hold });
  assert.equal(limiter.active, 3);
  await one.close();
  await two.close();
  assert.equal(limiter.active, 0);
});

Deno.test("ProcessTable removes a closed process after the retention time", async () => {
  await using table = new ProcessTable({ exitedRetentionMs: 25 });
  await table.start({ processId: "p", argv: ["sh", "-c", "echo x"] });
  await collect(table, "p");
  // Removal at retention expiry has no event of its own (`closed` fired
  // before the retention timer started): poll the list, bounded.
  await until(() => table.list().length === 0, 2_000, "retention expiry");
  await assert.rejects(table.read("p", {}), Deno.errors.NotFound);
});

Deno.test("ProcessTable list shows running and exited processes", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "run", argv: ["sh", "-c", "read x"], pipeStdin: true });
  await table.start({ processId: "done", argv: ["sh", "-c", "exit 7"] });
  await collect(table, "done");
  const rows = table.list().sort((a, b) => a.processId.localeCompare(b.processId));
  assert.deepEqual(rows, [
    { processId: "done", argv: ["sh", "-c", "exit 7"], running: false, exitCode: 7 },
    { processId: "run", argv: ["sh", "-c", "read x"], running: true, exitCode: null },
  ]);
  assert.deepEqual([table.has("run"), table.has("done"), table.has("never")], [true, true, false]);
  const starting = table.start({ processId: "new", argv: ["true"] });
  assert.equal(table.has("new"), true, "a starting process already holds its id");
  await starting;
});

Deno.test("ProcessTable close kills everything and refuses new starts", async () => {
  const token = uniqueSleep();
  const table = new ProcessTable({ killGraceMs: 200 });
  await table.start({ processId: "a", argv: ["sh", "-c", `sleep ${token} & sleep ${token}`] });
  await table.start({ processId: "b", argv: ["sh", "-c", `trap '' TERM; sleep ${token}`] });
  await table.start({ processId: "c", argv: ["cat"], pipeStdin: true });
  await withDeadline(table.close(), 5_000, "close");
  await table.close();
  await assertNoneLeft(`sleep ${token}`);
  await assert.rejects(table.start({ processId: "d", argv: ["true"] }), /process table is closed/);
});

Deno.test("ProcessTable close does not wait on unread output it stopped reading", async () => {
  const table = new ProcessTable({ retainedOutputBytes: 1024 });
  await table.start({ processId: "flood", argv: ["sh", "-c", "exec cat /dev/zero"] });
  await table.read("flood", { afterSeq: 1_000_000, waitMs: 100 });
  await withDeadline(table.close(), 5_000, "close with a blocked child");
});

Deno.test("ProcessTable event sink backpressure pauses the child until deliveries settle", async () => {
  const held: (() => void)[] = [];
  let delivered = 0;
  await using table = new ProcessTable({
    retainedOutputBytes: 64 * 1024,
    onEvent: (e) => {
      if (e.type !== "output") return;
      delivered += e.chunk.byteLength;
      return new Promise<void>((resolve) => held.push(resolve));
    },
  });
  await table.start({ processId: "p", argv: ["head", "-c", "1048576", "/dev/zero"] });
  const stalled = await table.read("p", { afterSeq: 1_000_000, waitMs: 300 });
  assert.equal(stalled.exited, false, "unacknowledged deliveries hold the child");
  assert.ok(delivered < 1048576);
  const release = setInterval(() => held.splice(0).forEach((resolve) => resolve()), 5);
  try {
    await withDeadline(
      (async () => {
        for (;;) {
          const r = await table.read("p", { afterSeq: 1_000_000, waitMs: 500 });
          if (r.closed || r.exited) return;
        }
      })(),
      10_000,
      "drain through the sink",
    );
  } finally {
    clearInterval(release);
    held.splice(0).forEach((resolve) => resolve());
  }
  await collect(table, "p", { afterSeq: 1_000_000 });
  assert.equal(delivered, 1048576);
});

Deno.test("ProcessTable redelivers unconsumed events to a newly attached sink", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "p", argv: ["sh", "-c", "echo one; exit 2"] });
  // Detached: wait for the close without consuming (afterSeq far ahead).
  await withDeadline(
    (async () => {
      for (;;) {
        if ((await table.read("p", { afterSeq: 1_000, waitMs: 500 })).closed) return;
      }
    })(),
    5_000,
    "close",
  );
  const events: ProcessEvent[] = [];
  table.setEventSink((e) => void events.push(e));
  assert.deepEqual(events.map((e) => e.type), ["output", "exited", "closed"]);
  assert.deepEqual(events.map((e) => e.seq), [1, 2, 3]);
  const again: ProcessEvent[] = [];
  table.setEventSink((e) => void again.push(e));
  assert.deepEqual(again, [], "consumed events are not redelivered");
});

Deno.test("ProcessTable redelivers events a confirming sink took but never confirmed, and not those it confirmed", async () => {
  await using table = new ProcessTable();
  const first: { event: ProcessEvent; delivered: () => void }[] = [];
  table.setEventSink((event, delivered) => void first.push({ event, delivered }), {
    confirmsDelivery: true,
  });
  await table.start({ processId: "p", argv: ["sh", "-c", "echo one; echo two >&2; exit 2"] });
  await until(() => first.some((f) => f.event.type === "closed"), 5_000, "close");
  first[0].delivered(); // the first sink's far end has the first event only
  const again: ProcessEvent[] = [];
  table.setEventSink((e) => void again.push(e), { confirmsDelivery: true });
  assert.deepEqual(
    again.map((e) => e.seq),
    first.slice(1).map((f) => f.event.seq),
    "everything after the confirmed event, again, in order",
  );
  assert.equal(again.at(-1)?.type, "closed");
  const third: ProcessEvent[] = [];
  table.setEventSink((e) => void third.push(e));
  assert.equal(
    third.length,
    again.length,
    "a sink that took them without confirming confirmed nothing",
  );
  const fourth: ProcessEvent[] = [];
  table.setEventSink((e) => void fourth.push(e));
  assert.deepEqual(fourth, [], "a sink that does not confirm delivery delivers as it takes");
});

Deno.test("ProcessTable refuses programs the executor may not run", async () => {
  const results = JSON.parse(await runProcessFixture(["--allow-run=sh"], ["run"]));
  assert.deepEqual(results.ls, {
    error: "SandboxDeniedError",
    message: 'Cannot start "ls": run access is not granted',
  });
  assert.equal(results.lsPath.error, "SandboxDeniedError");
  assert.match(results.tty.message, /tty needs the "script" helper/);
  assert.match(results.os.message, /"os" confinement is not available/);
  assert.match(results.arg0.message, /arg0 needs the "bash" helper/);
  // A granted program refused for a loader variable says so, not "not granted".
  assert.deepEqual(results.preload, {
    error: "SandboxDeniedError",
    message:
      'Cannot start "sh": Deno passes LD_PRELOAD to a child only when run access is unrestricted; unset it',
  });
  assert.deepEqual(results.sh, { ok: "ok\n" });
  // Without the setsid helper the child is spawned detached: still its own leader.
  assert.deepEqual(results.standing, {
    ok: { setsid: false, childOfExecutor: true, groupLeader: true, sessionLeader: true },
  });
  assert.deepEqual(results.capabilities, {
    confinements: ["none"],
    treeKill: false,
    tty: false,
    resize: false,
  });
  // Without the kill helper the direct child is still signalled.
  assert.deepEqual(results.terminate, { ok: { running: true, exitCode: 143, closed: true } });
  assert.ok(SandboxDeniedError);
});

for (const setsid of [false, true]) {
  Deno.test(
    `ProcessTable kills trees, gives terminals and confines under scoped run grants (${
      setsid ? "with" : "without"
    } setsid)`,
    async () => {
      const token = uniqueSleep();
      const grant = setsid ? "sh,kill,script,bwrap,setsid" : "sh,kill,script,bwrap";
      const results = JSON.parse(
        await runProcessFixture([`--allow-run=${grant}`], ["scoped", token]),
      );
      assert.deepEqual(results.capabilities, {
        confinements: ["none", "os"],
        treeKill: true,
        tty: true,
        resize: true,
      });
      assert.deepEqual(results.standing, {
        ok: { setsid, childOfExecutor: true, groupLeader: true, sessionLeader: true },
      });
      assert.deepEqual(results.tree, { ok: { running: true, exitCode: 143 } });
      await assertNoneLeft(`sleep ${token}`);
      assert.deepEqual(results.tty, { ok: "tty\r\n" });
      assert.match(results.os.ok, /Read-only file system/);
    },
  );
}

Deno.test("ProcessTable refuses a missing or non-executable program at start, not as an exit code", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost_prog_" });
  try {
    await using table = new ProcessTable();
    await Deno.writeTextFile(`${dir}/plain`, "#!/bin/sh\necho hi\n", { mode: 0o644 });
    await assert.rejects(
      table.start({ processId: "a", argv: [`${dir}/missing`] }),
      /Cannot start ".*\/missing": program or working directory not found/,
    );
    await assert.rejects(
      table.start({ processId: "b", argv: [`${dir}/plain`] }),
      /Cannot start ".*\/plain": Permission denied/,
    );
    await assert.rejects(
      table.start({ processId: "c", argv: [dir] }),
      /Cannot start ".*": Permission denied/,
    );
    assert.deepEqual(table.list(), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ProcessTable remembers PATH lookups and searches again when a program moved", async () => {
  const dir = await Deno.makeTempDir({ prefix: "outpost_path_" });
  try {
    const results = JSON.parse(
      await runProcessFixture(["-A"], ["path", dir], {
        env: { PATH: `${dir}/a:${dir}/b:/usr/bin:/bin` },
      }),
    );
    assert.deepEqual(results.first, { ok: "a\n" });
    // The program moved from a/ to b/: the remembered path is stale and searched again.
    assert.deepEqual(results.moved, { ok: "b\n" });
    // A program appearing earlier in PATH is not noticed while the remembered one exists.
    assert.deepEqual(results.shadowed, { ok: "b\n" });
    assert.deepEqual(results.backAgain, { ok: "a\n" });
    assert.deepEqual(results.gone, {
      error: "Error",
      message: 'Cannot start "outpost_probe": program or working directory not found',
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Makes a named pipe in a new temp dir (removed by the returned disposer). */
async function tempFifo(): Promise<{ path: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "outpost_fifo_" });
  const path = `${dir}/gate`;
  const made = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(made.success, "mkfifo");
  return { path, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

Deno.test("ProcessTable write stops waiting when its signal aborts, and later writes keep their order", async () => {
  await using gate = await tempFifo();
  await using table = new ProcessTable({ killGraceMs: 200 });
  // The child reads stdin only once the gate opens: 1 MiB overflows the pipe and blocks.
  await table.start({
    processId: "p",
    argv: ["sh", "-c", `read go < ${gate.path}; exec cat`],
    pipeStdin: true,
  });
  const big = new Uint8Array(1024 * 1024).fill(0x61);
  const controller = new AbortController();
  const stuck = table.write("p", big, { signal: controller.signal });
  controller.abort(new Error("connection closed"));
  await assert.rejects(withDeadline(stuck, 5_000, "aborted write"), /connection closed/);
  const tail = table.write("p", encoder.encode("tail"), { eof: true });
  await Deno.writeTextFile(gate.path, "go\n");
  assert.equal(await withDeadline(tail, 5_000, "later write"), "accepted");
  const { bytes } = await collect(table, "p");
  assert.equal(bytes.stdout.byteLength, big.byteLength + 4);
  assert.ok(bytes.stdout.subarray(0, big.byteLength).every((b) => b === 0x61));
  assert.equal(new TextDecoder().decode(bytes.stdout.subarray(big.byteLength)), "tail");
});

Deno.test("ProcessTable close racing start spawns nothing it does not kill, at every offset", async () => {
  const token = uniqueSleep();
  const offsets: { label: string; wait: () => Promise<void> }[] = [
    { label: "same turn", wait: () => Promise.resolve() },
  ];
  for (let n = 1; n <= 100; n++) {
    offsets.push({
      label: `${n} microtasks`,
      wait: async () => {
        for (let i = 0; i < n; i++) await Promise.resolve();
      },
    });
  }
  for (let n = 1; n <= 5; n++) {
    offsets.push({
      label: `${n} macrotasks`,
      wait: async () => {
        for (let i = 0; i < n; i++) await new Promise((resolve) => setTimeout(resolve, 0));
      },
    });
  }
  try {
    for (const { label, wait } of offsets) {
      const table = new ProcessTable({ killGraceMs: 200 });
      const started = table.start({ processId: "p", argv: ["sleep", token] }).then(
        () => "started",
        (error: Error) => error.message,
      );
      if (label === "same turn") {
        await withDeadline(table.close(), 3_000, `close (${label})`);
      } else {
        await wait();
        await withDeadline(table.close(), 3_000, `close after ${label}`);
      }
      const outcome = await withDeadline(started, 3_000, `start (${label})`);
      assert.ok(
        outcome === "started" || /the process table is closed/.test(outcome),
        `${label}: ${outcome}`,
      );
      assert.deepEqual(livePidsWith(`sleep ${token}`), [], `a child survived close (${label})`);
    }
  } finally {
    killPids(livePidsWith(`sleep ${token}`));
  }
});

Deno.test("ProcessTable refuses a processId that is not well-formed Unicode", async () => {
  await using table = new ProcessTable();
  await assert.rejects(
    table.start({ processId: "\ud800", argv: ["true"] }),
    (e: Error) => e instanceof TypeError && /processId must be well-formed Unicode/.test(e.message),
  );
  await assert.rejects(table.start({ processId: "a\udc00b", argv: ["true"] }), TypeError);
  assert.equal(table.has("\ud800"), false);
  await table.start({ processId: "\uFFFD", argv: ["sh", "-c", "echo ok"] });
  assert.equal((await collect(table, "\uFFFD")).text.stdout, "ok\n");
  await table.start({ processId: "\ud83d\ude00", argv: ["true"] });
  await collect(table, "\ud83d\ude00");
});

/** The `ps` program the table would use. */
async function psPath(): Promise<string> {
  const path = await resolveGrantedProgram("ps");
  assert.ok(path !== null, "ps (procps) is installed");
  return path;
}

/**
 * Runs `deno run ARGS` (a probe module), under the `via` command when given,
 * and returns what it printed, failing on a non-zero exit.
 */
async function runProbe(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; via?: string[] } = {},
): Promise<string> {
  const { via = [], ...spawn } = options;
  const argv = [...via, Deno.execPath(), "run", ...args];
  const { code, stdout, stderr } = await withDeadline(
    new Deno.Command(argv[0], {
      args: argv.slice(1),
      ...spawn,
      stdout: "piped",
      stderr: "piped",
    }).output(),
    30_000,
    "probe",
  );
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  return new TextDecoder().decode(stdout).trim();
}
