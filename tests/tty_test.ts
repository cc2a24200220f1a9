import assert from "node:assert/strict";
import { ProcessTable } from "../lib/exec/process_table.ts";
import { PtyMarkerParser, ttyCommand } from "../lib/exec/tty.ts";
import { until } from "./_support/deadline.ts";
import {
  assertNoneLeft,
  collect,
  killPids,
  livePidsWith,
  readUntil,
  uniqueSleep,
  waitForPids,
  withDeadline,
} from "./_process_helpers.ts";

const encoder = new TextEncoder();

Deno.test("tty gives the child a real terminal and reports stream pty", async () => {
  await using table = new ProcessTable();
  await table.start({
    processId: "t",
    argv: ["sh", "-c", "test -t 0 && test -t 1 && test -t 2 && echo is-a-tty; echo err >&2"],
    tty: true,
  });
  const { chunks, text, last } = await collect(table, "t");
  assert.ok(chunks.length > 0);
  assert.ok(chunks.every((c) => c.stream === "pty"));
  assert.equal(text.pty, "is-a-tty\r\nerr\r\n");
  assert.doesNotMatch(text.pty, /outpost;/, "the wrapper's marker is stripped");
  assert.equal(last.exitCode, 0);
});

Deno.test("tty closeOutput of stdout hangs the terminal up, also right after the start (before the terminal has reported in): a program that prints nothing more ends too; stderr carries nothing to close", async () => {
  for (const early of [false, true]) {
    const token = uniqueSleep();
    await using table = new ProcessTable();
    await table.start({
      processId: "t",
      argv: ["sh", "-c", `echo ready; exec sleep ${token}`],
      tty: true,
    });
    if (!early) {
      await readUntil(table, "t", "ready");
      await waitForPids(`sleep ${token}`, 1);
    }
    assert.equal(await table.closeOutput("t", "stderr"), false);
    assert.equal(await table.closeOutput("t", "stdout"), true);
    const { last } = await collect(table, "t");
    assert.equal(last.exited, true, `early ${early}`);
    assert.notEqual(last.exitCode, 0);
    await assertNoneLeft(`sleep ${token}`);
  }
  // One that ignores the hang-up is still within reach of terminate.
  const token = uniqueSleep();
  await using table = new ProcessTable();
  await table.start({
    processId: "deaf",
    argv: ["sh", "-c", `trap '' HUP; sleep ${token} & wait`],
    tty: true,
  });
  assert.equal(await table.closeOutput("deaf", "stdout"), true);
  await waitForPids(`sleep ${token}`, 1);
  await table.terminate("deaf");
  await collect(table, "deaf");
  await assertNoneLeft(`sleep ${token}`);
});

Deno.test("tty applies the initial size and resizes on request", async () => {
  await using table = new ProcessTable();
  await table.start({
    processId: "t",
    argv: ["sh", "-c", "stty size; echo ready; read x; stty size"],
    tty: true,
    cols: 100,
    rows: 30,
  });
  const first = await readUntil(table, "t", "ready");
  assert.match(first.text, /^30 100\r\n/);
  await table.resize("t", 132, 43);
  assert.equal(await table.write("t", encoder.encode("\n")), "accepted");
  const { text } = await collect(table, "t", { afterSeq: first.afterSeq });
  assert.match(text.pty, /43 132/);
  await assert.rejects(table.resize("t", 0, 10), RangeError);
  await assert.rejects(table.resize("t", 80, 65536), RangeError);
  await assert.rejects(table.resize("t", 80, 24), /has exited/);
});

Deno.test("tty delivers SIGWINCH to the program on resize", async () => {
  await using table = new ProcessTable();
  await table.start({
    processId: "t",
    // A resize comes as two steps (columns, then rows), each with its SIGWINCH.
    argv: [
      "sh",
      "-c",
      `trap 's=$(stty size); echo $s; [ "$s" = "20 90" ] && exit 0' WINCH; echo ready; ` +
      "while :; do sleep 0.05; done",
    ],
    tty: true,
  });
  const first = await readUntil(table, "t", "ready");
  await table.resize("t", 90, 20);
  const { text } = await collect(table, "t", { afterSeq: first.afterSeq });
  assert.match(text.pty, /20 90/);
});

Deno.test("tty accepts input right after start without forging the marker", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "t", argv: ["sh", "-c", 'read x; echo "got $x"'], tty: true });
  // Echoed input could look like the marker; input is held until the marker arrived.
  const forged = "\x1b]outpost;1;/dev/pts/0\x07";
  assert.equal(await table.write("t", encoder.encode(`${forged}\n`)), "accepted");
  const { text } = await collect(table, "t");
  assert.match(text.pty, /got /);
  assert.ok(await table.terminate("t") === false);
});

Deno.test("tty input reaches cat and eof ends it", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "cat", argv: ["cat"], tty: true });
  assert.equal(await table.write("cat", encoder.encode("hello\n")), "accepted");
  await readUntil(table, "cat", "hello\r\nhello\r\n");
  assert.equal(await table.write("cat", new Uint8Array(0), { eof: true }), "accepted");
  const { last } = await collect(table, "cat");
  assert.equal(last.closed, true);
});

Deno.test("tty input that ends without a newline still ends cat at eof (Ctrl-D typed twice)", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "cat", argv: ["cat"], tty: true });
  assert.equal(
    await table.write("cat", encoder.encode("no newline"), { eof: true }),
    "accepted",
  );
  const { text, last } = await collect(table, "cat");
  assert.match(text.pty, /no newline/);
  assert.equal(last.closed, true);
  assert.equal(last.exitCode, 0);
});

Deno.test("tty terminate ends the program with SIGTERM's 143, and script adds nothing to the output", async () => {
  // A long grace: only the SIGTERM can end it in time.
  await using table = new ProcessTable({ killGraceMs: 30_000 });
  await table.start({
    processId: "t",
    argv: ["sh", "-c", "echo ready; exec sleep 60"],
    tty: true,
  });
  const first = await readUntil(table, "t", "ready");
  assert.equal(await table.terminate("t"), true);
  const { text, last } = await collect(table, "t", { afterSeq: first.afterSeq });
  assert.equal(last.exitCode, 143);
  assert.doesNotMatch(text.pty ?? "", /Session terminated|killing shell/);
});

Deno.test("tty terminate or timeout before the terminal has reported its session still goes to the session, not script", async () => {
  // A long grace: only the TERM can end these in time. `script` handles TERM
  // from about 1 ms after the start, and the session is known from about
  // 8 ms: the requests are spread over that window (a deliberate spread, not
  // a wait for an event).
  await using table = new ProcessTable({ killGraceMs: 30_000 });
  for (const delay of [1, 2, 3, 4, 5]) {
    await table.start({ processId: `early${delay}`, argv: ["sleep", "60"], tty: true });
    await new Promise((resolve) => setTimeout(resolve, delay));
    assert.equal(await table.terminate(`early${delay}`), true);
    await table.start({
      processId: `timed${delay}`,
      argv: ["sleep", "60"],
      tty: true,
      timeoutMs: delay,
    });
  }
  for (const delay of [1, 2, 3, 4, 5]) {
    for (const [id, code] of [[`early${delay}`, 143], [`timed${delay}`, 124]] as const) {
      const { text, last } = await collect(table, id);
      assert.equal(last.exitCode, code, id);
      assert.doesNotMatch(text.pty ?? "", /Session terminated|killing shell/, id);
    }
  }
});

for (
  const [where, script] of [
    ["the session's own group", (t: string) => `trap '' HUP; echo ready; ${forkLoop(t)}; wait`],
    // `set -m`: the loop runs as a job, in a group of its own.
    [
      "a job's group",
      (t: string) =>
        `set -m; trap '' HUP; ( trap '' HUP; ${forkLoop(t)}; wait ) & echo ready; wait`,
    ],
  ] as const
) {
  Deno.test(`tty terminate reaches children forked while it runs, in ${where}: each group is signalled as a whole`, async () => {
    const token = uniqueSleep();
    // A long grace: the record closes when the shell dies, and its KILL with it.
    await using table = new ProcessTable({ killGraceMs: 30_000 });
    await table.start({ processId: "t", argv: ["sh", "-c", script(token)], tty: true });
    await readUntil(table, "t", "ready");
    await waitForPids(`sleep ${token}`, 20);
    assert.equal(await table.terminate("t"), true);
    await collect(table, "t");
    // Hundreds got the TERM; some may still be on their way out. One that
    // missed it would sleep for 15 minutes.
    try {
      await until(() => livePidsWith(`sleep ${token}`).length === 0, 5_000, "every child gone");
    } finally {
      killPids(livePidsWith(`sleep ${token}`));
    }
  });
}

/** A shell loop that keeps forking `sleep TOKEN` into the background. */
function forkLoop(token: string): string {
  return `i=0; while [ $i -lt 100000 ]; do sleep ${token} & i=$((i+1)); done`;
}

Deno.test("tty resizes sent together leave the last size asked for", async () => {
  await using table = new ProcessTable();
  await table.start({
    processId: "t",
    argv: ["sh", "-c", "echo ready; while read x; do stty size; done"],
    tty: true,
  });
  let afterSeq = (await readUntil(table, "t", "ready")).afterSeq;
  const decoder = new TextDecoder();
  /** The next `stty size` line the program prints. */
  const nextSize = () =>
    withDeadline(
      (async () => {
        let text = "";
        for (;;) {
          const result = await table.read("t", { afterSeq, waitMs: 1_000 });
          for (const c of result.chunks) text += decoder.decode(c.chunk, { stream: true });
          afterSeq = result.nextSeq - 1;
          const size = /(\d+) (\d+)\r\n/.exec(text);
          if (size) return `${size[1]} ${size[2]}`;
        }
      })(),
      5_000,
      "a size line",
    );
  // Each stty runs on its own: without ordering, one of a burst may finish
  // last with an older size (1 or 2 bursts in 10-20 did).
  for (let burst = 0; burst < 10; burst++) {
    const sizes = Array.from({ length: 8 }, (_, i) => [100 + burst * 8 + i, 20 + i] as const);
    await Promise.all(sizes.map(([cols, rows]) => table.resize("t", cols, rows)));
    assert.equal(await table.write("t", encoder.encode("\n")), "accepted");
    const [cols, rows] = sizes.at(-1)!;
    assert.equal(await nextSize(), `${rows} ${cols}`, `burst ${burst}`);
  }
});

Deno.test("tty terminate kills the terminal's whole session", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable({ killGraceMs: 300 });
  await table.start({
    processId: "t",
    argv: ["sh", "-c", `trap '' HUP; sleep ${token} & sleep ${token} & echo ready; wait`],
    tty: true,
  });
  await readUntil(table, "t", "ready");
  assert.equal((await waitForPids(`sleep ${token}`, 2)).length, 2);
  assert.equal(await table.terminate("t"), true);
  await collect(table, "t");
  await assertNoneLeft(`sleep ${token}`);
});

/** Starts an interactive bash whose two jobs job control puts in process groups of their own. */
async function startJobControlShell(
  table: ProcessTable,
  token: string,
  timeoutMs?: number,
): Promise<number[]> {
  await table.start({
    processId: "t",
    argv: ["bash", "--norc", "-ic", `sleep ${token} & sleep ${token} & echo ready; wait`],
    tty: true,
    timeoutMs,
  });
  await readUntil(table, "t", "ready");
  const jobs = await waitForPids(`sleep ${token}`, 2);
  const groups = jobs.map((pid) => statFields(pid).pgrp);
  assert.equal(new Set(groups).size, 2, "each job leads a process group of its own");
  assert.ok(jobs.every((pid) => statFields(pid).pgrp === pid));
  return jobs;
}

/** Fields 5 and 6 of /proc/PID/stat. */
function statFields(pid: number): { pgrp: number; session: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const [, , pgrp, session] = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
  return { pgrp, session };
}

Deno.test("tty program leads the terminal's session (the marker's pid is its session id)", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "t", argv: ["sh", "-c", "cat /proc/$$/stat"], tty: true });
  const { text } = await collect(table, "t");
  const pid = Number(text.pty.slice(0, text.pty.indexOf(" ")));
  const [, , pgrp, session] = text.pty.slice(text.pty.lastIndexOf(")") + 2).split(" ").map(Number);
  assert.ok(pid > 1);
  assert.deepEqual({ pgrp, session }, { pgrp: pid, session: pid });
});

Deno.test("tty terminate kills the jobs of an interactive shell (groups of their own, same session)", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable({ killGraceMs: 300 });
  await startJobControlShell(table, token);
  assert.equal(await table.terminate("t"), true);
  await collect(table, "t");
  await assertNoneLeft(`sleep ${token}`);
});

Deno.test("tty timeout kills the jobs of an interactive shell", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable({ killGraceMs: 300 });
  // Long enough for bash to start its jobs and say ready on a loaded machine.
  await startJobControlShell(table, token, 3_000);
  const { last } = await collect(table, "t");
  assert.equal(last.timedOut, true);
  await assertNoneLeft(`sleep ${token}`);
});

Deno.test("tty close kills the jobs of an interactive shell", async () => {
  const token = uniqueSleep();
  const table = new ProcessTable({ killGraceMs: 300 });
  try {
    await startJobControlShell(table, token);
  } catch (error) {
    await table.close();
    throw error;
  }
  await withDeadline(table.close(), 5_000, "close");
  await assertNoneLeft(`sleep ${token}`);
});

Deno.test("tty process/signal reaches the terminal's foreground job, as Ctrl-C does, and not the shell", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable({ killGraceMs: 300 });
  await table.start({
    processId: "t",
    argv: ["bash", "--norc", "-i"],
    tty: true,
    pipeStdin: true,
  });
  // A foreground job: bash gives it its own group and the terminal.
  assert.equal(
    await table.write("t", encoder.encode(`sleep ${token}; echo after-$?\n`)),
    "accepted",
  );
  const [job] = await waitForPids(`sleep ${token}`, 1);
  assert.equal(statFields(job).pgrp, job, "the job leads its own group");
  assert.equal(await table.signal("t", "SIGINT"), true);
  await assertNoneLeft(`sleep ${token}`);
  // The shell lives on and still answers.
  assert.equal(await table.write("t", encoder.encode("echo shell-$((20+22))\n")), "accepted");
  await readUntil(table, "t", "shell-42");
  assert.equal(await table.terminate("t"), true);
  await collect(table, "t");
});

Deno.test("tty process/signal sent before the start settles reaches the program, not script", async () => {
  await using table = new ProcessTable();
  const start = table.start({ processId: "t", argv: ["sleep", "30"], tty: true });
  const signalled = table.signal("t", "SIGINT"); // before the start's answer
  await start;
  assert.equal(await signalled, true);
  const { text, last } = await collect(table, "t");
  // script, signalled instead, would end the session ("Session terminated") and exit 0.
  assert.doesNotMatch(text.pty ?? "", /Session terminated/);
  assert.equal(last.exitCode, 130, "sleep itself died of SIGINT");
});

Deno.test("tty resize sent during a start that fails answers instead of waiting forever", async () => {
  await using table = new ProcessTable();
  const start = table.start({
    processId: "t",
    argv: ["sh"],
    tty: true,
    cwd: "/nonexistent-outpost",
  });
  const resize = table.resize("t", 100, 30); // before the start settles
  await assert.rejects(start);
  await assert.rejects(
    withDeadline(resize, 5_000, "resize after a failed start"),
    (e: Error) => e instanceof Deno.errors.NotFound && /it did not start/.test(e.message),
  );
});

Deno.test("tty resize is refused for a process without a terminal", async () => {
  await using table = new ProcessTable();
  await table.start({ processId: "p", argv: ["sh", "-c", "exit 0"] });
  await assert.rejects(table.resize("p", 80, 24), TypeError);
  await assert.rejects(table.resize("nope", 80, 24), Deno.errors.NotFound);
  await collect(table, "p");
  await assert.rejects(
    table.start({ processId: "big", argv: ["sh"], tty: true, cols: 65536 }),
    RangeError,
  );
});

Deno.test("PtyMarkerParser strips the marker across chunk boundaries", () => {
  const parser = new PtyMarkerParser();
  const bytes = encoder.encode("\x1b]outpost;4242;/dev/pts/7\x07hello");
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    out += new TextDecoder().decode(parser.push(bytes.subarray(i, i + 3)));
  }
  assert.equal(out, "hello");
  assert.deepEqual(parser.marker, { pid: 4242, device: "/dev/pts/7" });
  assert.equal(parser.done, true);
});

Deno.test("PtyMarkerParser rejects pids 0 and 1 and gives up on long output", () => {
  const parser = new PtyMarkerParser();
  parser.push(encoder.encode("\x1b]outpost;1;/dev/pts/1\x07"));
  assert.equal(parser.marker, null);
  assert.equal(parser.done, true);
  const long = new PtyMarkerParser();
  const out = long.push(new Uint8Array(5000).fill(0x61));
  assert.equal(out.byteLength, 5000);
  assert.equal(long.done, true);
});

Deno.test("ttyCommand quotes every argument for the shell", () => {
  const args = ttyCommand(["/bin/echo", "it's", "$HOME", "a b"], {
    cols: 80,
    rows: 24,
    shell: "/bin/zsh",
  });
  assert.equal(args[0], "-qfec");
  assert.equal(args[2], "/dev/null");
  assert.ok(args[1].endsWith(`exec '/bin/echo' 'it'\\''s' '$HOME' 'a b'`));
  assert.match(args[1], /SHELL='\/bin\/zsh'; export SHELL/);
});
