/**
 * Escape attempts against an executor started as a subprocess under
 * restricted Deno permissions (`--allow-read=ROOT --allow-write=ROOT/w
 * --allow-run=<a few programs>`). Each attempt must be denied with a clear
 * error (-32003 for the sandbox) and leave no file behind.
 *
 * What the code guarantees about symbolic links (lib/exec/sandbox_policy.ts):
 * a path is resolved the way the OS will (every existing component's links
 * and `..` followed, a dangling final link followed to its target), the
 * permission check runs on the resolved path, and the operation then acts on
 * the resolved path, not on the path as given. So a link swapped after the
 * check cannot redirect the operation through that link. What it cannot
 * guarantee (Deno has no openat/O_NOFOLLOW) below the `os` minimum: a real
 * directory inside a write root replaced by a link between the check and the
 * operation. The TOCTOU step below measures both races and reports the
 * counts; with `--min-confinement os` fs writes run in bubblewrap with only
 * the write roots writable, and the os race test asserts 0 escapes.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type RawResponse, RawRpc } from "./_support/raw_rpc.ts";
import { withDeadline } from "./_support/deadline.ts";
import { record } from "./_support/report.ts";

const SANDBOX_DENIED = -32003;
const NOT_FOUND = -32004;
const SECRET_ENV = "OUTPOST_ESCAPE_SECRET";
const SECRET_VALUE = "hunter2-executor-only-7f3a";
const SECRET_FILE_TEXT = "TOP-SECRET-FILE-CONTENT";
const RUN_GRANT = ["cat", "true", "sh", "bash", "bwrap", "kill", "deno", "script"];

interface World {
  base: string;
  root: string;
  w: string;
  outside: string;
}

async function makeWorld(): Promise<World> {
  // Not under /tmp: the os level gives children a fresh /tmp, which would
  // hide the real files from them.
  const base = await Deno.realPath(
    await Deno.makeTempDir({ dir: "/var/tmp", prefix: "outpost_escape_" }),
  );
  const root = `${base}/root`;
  const w = `${root}/w`;
  const outside = `${base}/outside`;
  await Deno.mkdir(`${w}/bin`, { recursive: true });
  await Deno.mkdir(`${w}/safe`);
  await Deno.mkdir(outside);
  await Deno.writeTextFile(`${outside}/secret.txt`, SECRET_FILE_TEXT);
  await Deno.writeTextFile(`${root}/readable.txt`, "readable but not writable");
  await Deno.symlink(outside, `${w}/link_out`);
  await Deno.symlink(`${outside}/secret.txt`, `${w}/link_file`);
  await Deno.symlink(`${outside}/new.txt`, `${w}/dangling`);
  await Deno.symlink("../..", `${w}/up`);
  // A fake `cat` on a request-controlled PATH: must never run.
  await Deno.writeTextFile(`${w}/bin/cat`, `#!/bin/sh\necho ran > ${w}/fake_cat_ran\n`);
  await Deno.chmod(`${w}/bin/cat`, 0o755);
  await Deno.writeTextFile(
    `${w}/child.ts`,
    `try { console.log(Deno.readTextFileSync(${JSON.stringify(`${outside}/secret.txt`)})); } ` +
      `catch (e) { console.log("child denied:", e.name); Deno.exit(3); }\n`,
  );
  return { base, root, w, outside };
}

async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) out.push(entry.name);
  return out.sort();
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

function denied(r: RawResponse, context: string, names?: string): void {
  assert.ok(r.error, `${context}: not denied: ${JSON.stringify(r).slice(0, 300)}`);
  assert.equal(
    r.error.code,
    SANDBOX_DENIED,
    `${context}: code ${r.error.code}: ${r.error.message}`,
  );
  assert.match(r.error.message, /^Cannot /, `${context}: ${r.error.message}`);
  if (names) assert.ok(r.error.message.includes(names), `${context}: ${r.error.message}`);
  assert.ok(!JSON.stringify(r).includes(SECRET_FILE_TEXT), `${context}: secret leaked`);
  assert.ok(!JSON.stringify(r).includes(btoa(SECRET_FILE_TEXT)), `${context}: secret leaked (b64)`);
}

/** Runs a process to completion; returns its output and exit code. */
async function run(
  rpc: RawRpc,
  id: string,
  params: Record<string, unknown>,
): Promise<{ out: string; exitCode: number | null; error?: RawResponse["error"] }> {
  const started = await rpc.request("process/start", { processId: id, ...params }, 10_000);
  if (started.error) return { out: "", exitCode: null, error: started.error };
  let out = "";
  let afterSeq = 0;
  let exitCode: number | null = null;
  const end = performance.now() + 15_000;
  while (performance.now() < end) {
    const r = await rpc.request("process/read", { processId: id, afterSeq, waitMs: 2000 }, 5000);
    if (r.error) throw new Error(`read ${id}: ${r.error.message}`);
    const res = r.result as {
      chunks: { seq: number; chunk: string }[];
      nextSeq: number;
      exited: boolean;
      exitCode: number | null;
      closed: boolean;
    };
    for (const c of res.chunks) {
      out += new TextDecoder().decode(Uint8Array.from(atob(c.chunk), (ch) => ch.charCodeAt(0)));
    }
    afterSeq = res.nextSeq - 1;
    exitCode = res.exitCode;
    if (res.closed) return { out, exitCode };
  }
  throw new Error(`process ${id} did not finish`);
}

/** Helpers fs writes need under the `os` minimum, on top of {@linkcode RUN_GRANT}. */
const CONFINED_FS_RUN = ["mkdir", "rm"];

async function startExecutor(
  world: World,
  options: { minConfinement?: string; run?: string[] } = {},
): Promise<{
  child: Deno.ChildProcess;
  url: string;
  pid: number;
  stop: () => Promise<void>;
}> {
  const command = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--allow-read=${world.root}`,
      `--allow-write=${world.w}`,
      "--allow-net=127.0.0.1",
      `--allow-run=${(options.run ?? RUN_GRANT).join(",")}`,
      "--allow-env",
      "--allow-sys=hostname,osRelease",
      "--no-prompt",
      new URL("./_support/escape_executor.ts", import.meta.url).pathname,
      world.w,
      world.w,
      ...(options.minConfinement ? [options.minConfinement] : []),
    ],
    env: { [SECRET_ENV]: SECRET_VALUE },
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  });
  const child = command.spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await withDeadline(reader.read(), 20_000, "executor start");
    if (done) throw new Error(`executor exited before serving: ${text}`);
    text += value;
  }
  const info = JSON.parse(text.slice(0, text.indexOf("\n")));
  const drain = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  const stop = async (): Promise<void> => {
    await child.stdin.close();
    await withDeadline(child.status, 10_000, "executor exit");
    await drain;
  };
  return { child, url: info.url, pid: info.pid, stop };
}

/** What a directory swap race did. */
interface RaceOutcome {
  /** Entries that landed outside the write root. */
  escaped: number;
  /** Requests refused with -32003. */
  denied: number;
  /** Requests that found the directory moved away mid-swap (-32004). */
  missing: number;
  /** Requests that failed otherwise. */
  failed: number;
  /** The errors of those, as JSON. */
  unexpected: string[];
}

/**
 * Writes (or creates directories) into a real directory inside the write root
 * while another task swaps that directory for a link to outside and back;
 * counts what landed outside.
 */
async function directorySwapRace(
  rpc: RawRpc,
  world: World,
  rounds: number,
  method: "fs/writeFile" | "fs/createDirectory" = "fs/writeFile",
): Promise<RaceOutcome> {
  const dir = `${world.w}/swap`;
  await Deno.mkdir(dir);
  let flipping = true;
  const swapper = (async () => {
    while (flipping) {
      await Deno.rename(dir, `${dir}.real`);
      await Deno.symlink(world.outside, dir);
      await new Promise((resolve) => setTimeout(resolve, 0));
      await Deno.remove(dir);
      await Deno.rename(`${dir}.real`, dir);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  })();
  let denied = 0;
  let missing = 0;
  let failed = 0;
  const unexpected: string[] = [];
  for (let i = 0; i < rounds; i++) {
    const r = method === "fs/writeFile"
      ? await rpc.request(method, { path: `${dir}/s${i}.txt`, dataBase64: btoa("x") })
      : await rpc.request(method, { path: `${dir}/s${i}`, recursive: false });
    if (r.error?.code === SANDBOX_DENIED) denied++;
    else if (r.error?.code === NOT_FOUND) missing++;
    else if (r.error) {
      failed++;
      unexpected.push(JSON.stringify(r.error));
    }
  }
  flipping = false;
  await swapper;
  await Deno.remove(dir, { recursive: true });
  // Only the race's own names: `outside` also holds secret.txt.
  const escaped = (await listTree(world.outside)).filter((n) => /^s\d+(\.txt)?$/.test(n)).length;
  return { escaped, denied, missing, failed, unexpected };
}

Deno.test({
  name: "a directory swapped for a link between check and write cannot redirect fs/writeFile",
  // DEFECT (known limitation below the os minimum, not fixable in place):
  // sandbox_policy resolves and checks the path, then fs_ops acts on the
  // resolved path; if a real directory on that path (inside a write root, so
  // the client itself can swap it, e.g. with fs/remove + a process) is
  // replaced by a symlink in between, the write follows the link outside the
  // root. Deno's own --allow-write check is on the path string and does not
  // stop it, and Deno has no openat/O_NOFOLLOW-style handles. Measured: 1-4
  // escapes per 150 racing writes. Closed for executors run with
  // `--min-confinement os`: their fs writes run in bubblewrap with only the
  // write roots writable (see the next test, 0 escapes); this test runs an
  // executor below that minimum and stays ignored.
  ignore: true,
  async fn() {
    const world = await makeWorld();
    const executor = await startExecutor(world);
    const rpc = await RawRpc.open(executor.url);
    await rpc.call("initialize", { clientName: "escape-race" });
    rpc.notify("initialized");
    const { escaped } = await directorySwapRace(rpc, world, 150);
    await rpc.close();
    await executor.stop();
    await Deno.remove(world.base, { recursive: true });
    assert.equal(escaped, 0, `${escaped} writes escaped through a swapped directory`);
  },
});

Deno.test("under --min-confinement os a directory swapped for a link cannot redirect fs writes", async (t) => {
  const world = await makeWorld();
  const outsideBefore = await listTree(world.outside);
  const executor = await startExecutor(world, {
    minConfinement: "os",
    run: [...RUN_GRANT, ...CONFINED_FS_RUN],
  });
  const rpc = await RawRpc.open(executor.url);
  await rpc.call("initialize", { clientName: "escape-race-os" });
  rpc.notify("initialized");
  const info = await rpc.call("environment/info", {}) as {
    sandbox: { confinements: string[]; confinedFs: boolean };
  };
  const osWorks = info.sandbox.confinements.includes("os");

  await t.step({
    name: "fs writes work inside the write root and are reported confined",
    ignore: !osWorks,
    fn: async () => {
      assert.equal(info.sandbox.confinedFs, true);
      const ok = (r: RawResponse, what: string) =>
        assert.ok(r.result, `${what}: ${JSON.stringify(r.error)}`);
      ok(
        await rpc.request("fs/writeFile", { path: `${world.w}/a.txt`, dataBase64: btoa("a") }),
        "writeFile",
      );
      ok(await rpc.request("fs/createDirectory", { path: `${world.w}/d/e` }), "createDirectory");
      ok(
        await rpc.request("fs/copy", {
          sourcePath: `${world.w}/a.txt`,
          destinationPath: `${world.w}/d/e/b.txt`,
          recursive: false,
        }),
        "copy",
      );
      assert.equal(await Deno.readTextFile(`${world.w}/d/e/b.txt`), "a");
      ok(await rpc.request("fs/remove", { path: `${world.w}/d` }), "remove");
      assert.equal(await exists(`${world.w}/d`), false);
      // Outside the write root: refused by the policy before the sandbox runs.
      denied(
        await rpc.request("fs/writeFile", {
          path: `${world.w}/link_out/new.txt`,
          dataBase64: btoa("x"),
        }),
        "writeFile through a link",
      );
      denied(
        await rpc.request("fs/remove", { path: `${world.root}/readable.txt` }),
        "remove outside the write root",
      );
      assert.deepEqual(await listTree(world.outside), outsideBefore);
    },
  });

  await t.step({
    name: "TOCTOU race 2 at the os minimum: writeFile and createDirectory, 0 escapes",
    ignore: !osWorks,
    fn: async () => {
      const rounds = 150;
      const writes = await directorySwapRace(rpc, world, rounds, "fs/writeFile");
      const dirs = await directorySwapRace(rpc, world, rounds, "fs/createDirectory");
      for (const name of await listTree(world.outside)) {
        if (!outsideBefore.includes(name)) {
          await Deno.remove(`${world.outside}/${name}`, { recursive: true });
        }
      }
      record({
        area: "escape",
        name: "TOCTOU at --min-confinement os: real directory swapped for a symlink during " +
          "writeFile and createDirectory (fs writes in bubblewrap)",
        cases: rounds * 2,
        result: `writeFile: ${writes.escaped} escapes (${writes.denied} denied, ` +
          `${writes.missing} not found mid-swap, rest written inside); createDirectory: ` +
          `${dirs.escaped} escapes (${dirs.denied} denied, ${dirs.missing} not found mid-swap)`,
        details: {
          writeEscapes: writes.escaped,
          writeDenied: writes.denied,
          mkdirEscapes: dirs.escaped,
          mkdirDenied: dirs.denied,
        },
      });
      assert.equal(
        writes.escaped,
        0,
        `${writes.escaped} writes escaped through a swapped directory`,
      );
      assert.equal(dirs.escaped, 0, `${dirs.escaped} directories escaped through a swap`);
      // Every failure is a clear refusal or a missing directory, nothing else.
      assert.equal(
        writes.failed + dirs.failed,
        0,
        `racing requests failed unexpectedly: ${[...writes.unexpected, ...dirs.unexpected]}`,
      );
      // The race was really run: some requests met the link and were refused.
      assert.ok(writes.denied + dirs.denied > 0, "no request met a swapped directory");
    },
  });

  await rpc.close();
  await executor.stop();
  assert.deepEqual(await listTree(world.outside), outsideBefore, "something was left outside");
  await Deno.remove(world.base, { recursive: true });
});

Deno.test("under --min-confinement os fs writes whose helper is not granted are refused, never run unconfined", async () => {
  const world = await makeWorld();
  const executor = await startExecutor(world, { minConfinement: "os" }); // no mkdir, rm
  const rpc = await RawRpc.open(executor.url);
  await rpc.call("initialize", { clientName: "escape-helpers" });
  rpc.notify("initialized");
  const info = await rpc.call("environment/info", {}) as { sandbox: { confinedFs: boolean } };
  assert.equal(info.sandbox.confinedFs, false);
  denied(
    await rpc.request("fs/createDirectory", { path: `${world.w}/nodir` }),
    "createDirectory without mkdir",
    '"mkdir"',
  );
  await Deno.writeTextFile(`${world.w}/keep.txt`, "keep");
  denied(
    await rpc.request("fs/remove", { path: `${world.w}/keep.txt` }),
    "remove without rm",
    '"rm"',
  );
  assert.equal(await exists(`${world.w}/nodir`), false);
  assert.equal(await Deno.readTextFile(`${world.w}/keep.txt`), "keep");
  await rpc.close();
  await executor.stop();
  await Deno.remove(world.base, { recursive: true });
});

Deno.test("a restricted executor denies every escape attempt and leaves nothing behind", async (t) => {
  const world = await makeWorld();
  const outsideBefore = await listTree(world.outside);
  const executor = await startExecutor(world);
  const rpc = await RawRpc.open(executor.url);
  await rpc.call("initialize", { clientName: "escape-test" });
  rpc.notify("initialized");
  const info = await rpc.call("environment/info", {}) as Record<string, unknown>;
  const counts: Record<string, number> = {};

  await t.step(
    "programs outside --allow-run are refused, and PATH cannot redirect a granted one",
    async () => {
      const programs = [
        "ls",
        "/bin/ls",
        "/usr/bin/ls",
        "../../../../../../usr/bin/ls",
        "env",
        "python3",
        "perl",
        "nc",
        "cat ",
        "CAT",
        `${world.w}/bin/cat`,
      ];
      for (const program of programs) {
        const r = await rpc.request("process/start", {
          processId: `run-${program}`,
          argv: [program],
        });
        denied(r, `run ${program}`);
      }
      // A granted name with PATH pointing at a fake binary: the real program runs.
      const viaPath = await run(rpc, "path-cat", {
        argv: ["cat", "/dev/null"],
        env: { PATH: `${world.w}/bin` },
        inheritEnv: false,
      });
      assert.equal(await exists(`${world.w}/fake_cat_ran`), false, "the fake cat on PATH ran");
      assert.equal(viaPath.error, undefined, `granted cat refused: ${viaPath.error?.message}`);
      counts.run = programs.length + 1;
    },
  );

  await t.step(
    "reads outside the granted roots are refused (.., absolute, symlinks, /proc)",
    async () => {
      const paths = [
        `${world.outside}/secret.txt`,
        `${world.root}/../outside/secret.txt`,
        `${world.w}/../../outside/secret.txt`,
        `${world.w}/link_file`,
        `${world.w}/link_out/secret.txt`,
        `${world.w}/up/outside/secret.txt`,
        "/etc/passwd",
        "/proc/self/environ",
        `/proc/${executor.pid}/environ`,
      ];
      for (const path of paths) {
        denied(await rpc.request("fs/readFile", { path }), `readFile ${path}`);
        // getMetadata inspects a final link itself (inside the root): allowed.
        if (path !== `${world.w}/link_file`) {
          denied(await rpc.request("fs/getMetadata", { path }), `getMetadata ${path}`);
        }
      }
      denied(
        await rpc.request("fs/readDirectory", { path: world.outside }),
        "readDirectory outside",
      );
      denied(
        await rpc.request("fs/readDirectory", { path: `${world.w}/link_out` }),
        "readDirectory via link",
      );
      denied(
        await rpc.request("fs/copy", {
          sourcePath: `${world.w}/link_file`,
          destinationPath: `${world.w}/copied_secret.txt`,
          recursive: false,
        }),
        "copy a linked secret into the root",
      );
      assert.equal(await exists(`${world.w}/copied_secret.txt`), false);
      // Positive control: inside the root works.
      const ok = await rpc.request("fs/readFile", { path: `${world.root}/readable.txt` });
      assert.ok(ok.result, JSON.stringify(ok));
      counts.read = paths.length * 2 + 3;
    },
  );

  await t.step("writes outside the write roots are refused and create nothing", async () => {
    const data = btoa("escaped");
    const writes = [
      `${world.root}/escape.txt`,
      `${world.w}/../escape2.txt`,
      `${world.outside}/new.txt`,
      `${world.w}/link_out/new.txt`,
      `${world.w}/dangling`,
      `${world.w}/up/outside/up.txt`,
      `${world.w}/link_file`,
      `/tmp/outpost_escape_${executor.pid}.txt`,
    ];
    for (const path of writes) {
      denied(await rpc.request("fs/writeFile", { path, dataBase64: data }), `writeFile ${path}`);
    }
    const others: [string, Record<string, unknown>][] = [
      ["fs/createDirectory", { path: `${world.w}/link_out/dir`, recursive: true }],
      ["fs/createDirectory", { path: `${world.root}/dir2` }],
      ["fs/remove", { path: `${world.w}/link_out/secret.txt` }],
      ["fs/remove", { path: `${world.root}/readable.txt` }],
      ["fs/remove", { path: `${world.w}/..`, recursive: true }],
      ["fs/copy", {
        sourcePath: `${world.root}/readable.txt`,
        destinationPath: `${world.w}/link_out/copied.txt`,
        recursive: false,
      }],
      ["fs/copy", {
        sourcePath: `${world.w}/safe`,
        destinationPath: `${world.outside}/tree`,
        recursive: true,
      }],
    ];
    for (const [method, params] of others) {
      denied(await rpc.request(method, params), `${method} ${JSON.stringify(params).slice(0, 80)}`);
    }
    // Positive control.
    const ok = await rpc.request("fs/writeFile", { path: `${world.w}/ok.txt`, dataBase64: data });
    assert.ok(ok.result, JSON.stringify(ok));
    assert.equal(await exists(`${world.root}/escape.txt`), false);
    assert.equal(await exists(`${world.root}/escape2.txt`), false);
    assert.equal(await exists(`${world.root}/dir2`), false);
    assert.equal(await exists(`/tmp/outpost_escape_${executor.pid}.txt`), false);
    assert.equal(await Deno.readTextFile(`${world.outside}/secret.txt`), SECRET_FILE_TEXT);
    assert.equal(
      await Deno.readTextFile(`${world.root}/readable.txt`),
      "readable but not writable",
    );
    assert.deepEqual(await listTree(world.outside), outsideBefore);
    counts.write = writes.length + others.length;
  });

  await t.step(
    "TOCTOU: a swapped link cannot redirect a write; a swapped directory is measured",
    async () => {
      const rounds = 150;
      // Race 1: the final link flips between inside and outside.
      const race = `${world.w}/race`;
      await Deno.symlink(`${world.w}/safe`, race);
      let flipping = true;
      const flipper = (async () => {
        let out = false;
        while (flipping) {
          const tmp = `${world.w}/race.tmp`;
          await Deno.symlink(out ? world.outside : `${world.w}/safe`, tmp);
          await Deno.rename(tmp, race);
          out = !out;
          await new Promise((resolve) => setTimeout(resolve, 0));
        }
      })();
      let deniedCount = 0;
      for (let i = 0; i < rounds; i++) {
        const r = await rpc.request("fs/writeFile", {
          path: `${race}/t${i}.txt`,
          dataBase64: btoa("x"),
        });
        if (r.error) deniedCount++;
      }
      flipping = false;
      await flipper;
      const escapedLink = (await listTree(world.outside)).filter((n) => /^t\d+\.txt$/.test(n))
        .length;
      // Race 2: a real directory inside the root swapped for a link to outside.
      const { escaped: escapedDir } = await directorySwapRace(rpc, world, rounds);
      for (const name of await listTree(world.outside)) {
        if (!outsideBefore.includes(name)) await Deno.remove(`${world.outside}/${name}`);
      }
      record({
        area: "escape",
        name: "TOCTOU: final symlink flipped inside/outside during writeFile (race 1); " +
          "real directory swapped for a symlink during writeFile (race 2)",
        cases: rounds * 2,
        result: `race 1: ${escapedLink} escapes (${deniedCount} denied, rest written inside); ` +
          `race 2: ${escapedDir} escapes (documented limitation below --min-confinement os: ` +
          `needs write access inside the root and a won race; the os minimum closes it)`,
        details: { race1Escapes: escapedLink, race1Denied: deniedCount, race2Escapes: escapedDir },
      });
      // The guarantee: a swapped link never redirects the operation.
      assert.equal(escapedLink, 0, `${escapedLink} writes escaped through a flipped link`);
      counts.toctou = rounds * 2;
    },
  );

  await t.step("the executor's own environment does not reach children", async () => {
    const env = await run(rpc, "env-leak", { argv: ["sh", "-c", "env; echo END"] });
    assert.match(env.out, /END/);
    assert.ok(!env.out.includes(SECRET_VALUE), "the executor's secret is in the child's env");
    assert.ok(!env.out.includes(SECRET_ENV), "the executor's variable name is in the child's env");
    const inherit = await run(rpc, "env-leak2", {
      argv: ["sh", "-c", "env"],
      inheritEnv: true,
      env: { OTHER: "1" },
    });
    assert.ok(!inherit.out.includes(SECRET_VALUE));
    // Under `none` a same-user child can read its parent's initial environment
    // from /proc: recorded, not claimed as a protection of that level.
    const proc = await run(rpc, "env-proc", {
      argv: [
        "sh",
        "-c",
        `cat /proc/${executor.pid}/environ 2>/dev/null | tr '\\0' '\\n'; echo END`,
      ],
    });
    const noneLeaks = proc.out.includes(SECRET_VALUE);
    record({
      area: "escape",
      name: "env leaks: child env (default and inheritEnv) and /proc/<executor>/environ under none",
      cases: 3,
      result: `child env clean; /proc/<executor pid>/environ under none ${
        noneLeaks ? "LEAKS the executor env (same-user child; use os confinement)" : "not readable"
      }`,
      details: { noneProcEnvironLeaks: noneLeaks },
    });
    counts.env = 3;
  });

  const confinements = (info.sandbox as { confinements?: string[] } | undefined)?.confinements ??
    [];
  await t.step({
    name:
      "os level: no writes outside the write roots, no network, no view of the executor's processes",
    ignore: !confinements.includes("os"),
    fn: async () => {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      let connections = 0;
      const accepting = (async () => {
        for await (const conn of listener) {
          connections++;
          conn.close();
        }
      })();
      const port = listener.addr.port;
      const script = [
        `echo x > ${world.outside}/os.txt 2>/dev/null && echo WROTE_OUTSIDE`,
        `echo x > ${world.root}/os_root.txt 2>/dev/null && echo WROTE_ROOT`,
        `echo ok > ${world.w}/os_ok.txt`,
        `(echo hi > /dev/tcp/127.0.0.1/${port}) 2>/dev/null && echo NET_OK`,
        `kill -0 ${executor.pid} 2>/dev/null && echo SEES_EXECUTOR`,
        `cat /proc/${executor.pid}/environ 2>/dev/null | tr '\\0' '\\n'`,
        `echo PIDS $(ls /proc | grep -c '^[0-9]')`,
        `echo END`,
      ].join("; ");
      const r = await run(rpc, "os-1", { argv: ["bash", "-c", script], confinement: "os" });
      assert.equal(r.error, undefined, `os start refused: ${r.error?.message}`);
      assert.match(r.out, /END/);
      assert.ok(!r.out.includes("WROTE_OUTSIDE"), "os child wrote outside");
      assert.ok(!r.out.includes("WROTE_ROOT"), "os child wrote into the read-only root");
      assert.ok(!r.out.includes("NET_OK"), "os child reached the network");
      assert.ok(!r.out.includes("SEES_EXECUTOR"), "os child can signal the executor");
      assert.ok(!r.out.includes(SECRET_VALUE), "os child read the executor's environment");
      assert.equal(await exists(`${world.outside}/os.txt`), false);
      assert.equal(await exists(`${world.root}/os_root.txt`), false);
      assert.equal(await exists(`${world.w}/os_ok.txt`), true, "the write root is not writable");
      const pids = Number(/PIDS (\d+)/.exec(r.out)?.[1] ?? "999");
      assert.ok(pids < 10, `os child sees ${pids} processes`);
      listener.close();
      await accepting.catch(() => {});
      assert.equal(connections, 0, "a connection reached the listener");
      counts.os = 6;
    },
  });

  await t.step("deno level: a child asking for more than the executor has is refused", async () => {
    const module = `${world.w}/child.ts`;
    const asks: Record<string, unknown>[] = [
      { write: ["/"] },
      { write: true },
      { read: ["/etc"] },
      { read: true },
      { net: true },
      { net: ["example.com"] },
      { run: true },
      { run: ["ls"] },
      { ffi: true },
      { sys: true },
    ];
    for (const denoPermissions of asks) {
      const r = await rpc.request("process/start", {
        processId: `deno-${JSON.stringify(denoPermissions)}`,
        argv: [module],
        confinement: "deno",
        denoPermissions,
      });
      denied(r, `deno child asking ${JSON.stringify(denoPermissions)}`);
    }
    // Within its grant it runs, and Deno holds it there.
    const inside = await run(rpc, "deno-ok", {
      argv: [module],
      confinement: "deno",
      denoPermissions: { read: [world.w] },
    });
    assert.equal(inside.error, undefined, `deno child refused: ${inside.error?.message}`);
    assert.ok(!inside.out.includes(SECRET_FILE_TEXT), "the deno child read outside its grant");
    assert.notEqual(inside.exitCode, 0);
    counts.deno = asks.length + 1;
  });

  await rpc.close();
  await executor.stop();
  assert.deepEqual(await listTree(world.outside), outsideBefore, "something was left outside");
  await Deno.remove(world.base, { recursive: true });
  // toctou and env have their own rows with what actually happened.
  for (const [what, cases] of Object.entries(counts)) {
    if (what === "toctou" || what === "env") continue;
    record({
      area: "escape",
      name: {
        run: "programs outside --allow-run (names, absolute and relative paths, PATH redirect)",
        read:
          "reads outside the read grant: .., absolute, symlinks (file, dir, ../..), /proc, copy",
        write:
          "writes outside the write root: .., absolute, symlinks, dangling link, mkdir, remove, copy",
        toctou: "symlink/directory swap races (see TOCTOU row)",
        env: "executor env reaching children",
        os: "os level: write outside, network, signal/see executor, read its env",
        deno: "deno level: child asking for more than the executor has",
      }[what] ?? what,
      cases,
      result: "all denied with -32003 (or blocked by the confinement); nothing left behind",
    });
  }
});
