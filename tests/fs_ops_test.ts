import assert from "node:assert/strict";
import { RpcError, SandboxDeniedError } from "../lib/errors.ts";
import { type Confinement, detectCapabilities } from "../lib/exec/confinement.ts";
import { FsOps, LISTING_ENTRY_BYTES } from "../lib/exec/fs_ops.ts";
import { ABORT_GRACE_MS, ConfinedFs } from "../lib/exec/_confined_fs.ts";
import {
  MAX_PATH_BYTES,
  MAX_SHOWN_PATH_CHARS,
  type PermissionQuery,
  SandboxPolicy,
} from "../lib/exec/sandbox_policy.ts";
import { until, withDeadline } from "./_support/deadline.ts";
import { CAN_LEASE, holdLease } from "./_support/file_lease.ts";

/** bubblewrap works here: the `os` variants run (they are reported ignored otherwise). */
const OS_WORKS = (await detectCapabilities()).confinements.includes("os");
/** The writing tests run below the `os` minimum (in the executor) and at it (in bubblewrap). */
const LEVELS: Confinement[] = ["none", "os"];

/** Grants read and write below `dir` only (Deno permissions are the far side of the boundary). */
function grantsOnly(dir: string): PermissionQuery {
  return (d) => {
    const path = (d as { path?: string }).path;
    return Promise.resolve(
      (d.name === "read" || d.name === "write") && path !== undefined &&
        (path === dir || path.startsWith(dir + "/"))
        ? "granted"
        : "prompt",
    );
  };
}

async function fixture(maxFileBytes?: number, minConfinement: Confinement = "none") {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_fs_" }));
  const outside = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_fs_out_" }));
  // The os minimum confines writes to the write roots (bound writable in the sandbox).
  const roots = minConfinement === "os" ? { writeRoots: [dir] } : {};
  const fs = new FsOps(
    new SandboxPolicy({ query: grantsOnly(dir), ...roots }),
    { ...(maxFileBytes === undefined ? {} : { maxFileBytes }), minConfinement },
  );
  return {
    dir,
    outside,
    fs,
    call: (method: string, params: unknown) =>
      fs.call(method, params) as Promise<Record<string, unknown>>,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(outside, { recursive: true });
    },
  };
}

async function rpcFails(
  promise: Promise<unknown>,
  code: number,
  ...mentions: string[]
): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    const actual = error instanceof SandboxDeniedError ? -32003 : (error as RpcError).code;
    assert.ok(error instanceof RpcError || error instanceof SandboxDeniedError, String(error));
    assert.equal(actual, code, (error as Error).message);
    for (const word of mentions) {
      assert.ok(
        (error as Error).message.includes(word),
        `${(error as Error).message} should mention ${word}`,
      );
    }
    return true;
  });
}

const b64 = (text: string) => new TextEncoder().encode(text).toBase64();

for (const level of LEVELS) {
  Deno.test({
    name: `FsOps writes, reads and inspects files with upstream names (min confinement ${level})`,
    ignore: level === "os" && !OS_WORKS,
    async fn() {
      await using f = await fixture(undefined, level);
      const bytes = new Uint8Array(256).map((_, i) => i);
      assert.deepEqual(
        await f.call("fs/writeFile", { path: `${f.dir}/a.bin`, dataBase64: bytes.toBase64() }),
        {},
      );
      assert.deepEqual(await f.call("fs/readFile", { path: `${f.dir}/a.bin` }), {
        dataBase64: bytes.toBase64(),
      });
      const meta = await f.call("fs/getMetadata", { path: `${f.dir}/a.bin` });
      assert.equal(meta.isFile, true);
      assert.equal(meta.isDirectory, false);
      assert.equal(meta.isSymlink, false);
      assert.equal(meta.size, 256);
      assert.equal(typeof meta.modifiedAtMs, "number");
      assert.equal(typeof meta.createdAtMs, "number");
      await Deno.symlink(`${f.dir}/a.bin`, `${f.dir}/link`);
      const viaLink = await f.call("fs/getMetadata", { path: `${f.dir}/link` });
      assert.equal(viaLink.isSymlink, true);
      assert.equal(viaLink.isFile, true);
      assert.equal(viaLink.size, 256);
      await Deno.symlink(`${f.outside}/secret`, `${f.dir}/out_link`);
      const dangling = await f.call("fs/getMetadata", { path: `${f.dir}/out_link` });
      assert.equal(dangling.isSymlink, true); // describes the link, not the refused target
      assert.deepEqual(await f.call("fs/canonicalize", { path: `${f.dir}/link` }), {
        path: `${f.dir}/a.bin`,
      });
      await rpcFails(
        f.call("fs/writeFile", { path: `${f.dir}/x`, dataBase64: "%%%=" }),
        -32602,
        '"dataBase64"',
      );
    },
  });
}

Deno.test("FsOps removes a tree whose paths reach the system's 4,095 bytes and refuses one a byte deeper, removing nothing", async () => {
  await using f = await fixture();
  // Built by a program, as a build step would (relative mkdir goes past the limit).
  const chain = async (root: string, deepest: number): Promise<void> => {
    await Deno.mkdir(root);
    const levels = Math.floor((deepest - root.length) / 2);
    const rest = deepest - root.length - 2 * levels; // one longer last name makes it exact
    const path = "a/".repeat(levels - 1) + "a".repeat(1 + rest);
    const made = await new Deno.Command("mkdir", { args: ["-p", path], cwd: root }).output();
    assert.equal(made.code, 0, new TextDecoder().decode(made.stderr));
  };
  await chain(`${f.dir}/fits`, 4095);
  assert.deepEqual(await f.call("fs/remove", { path: `${f.dir}/fits`, recursive: true }), {});
  await assert.rejects(Deno.lstat(`${f.dir}/fits`), Deno.errors.NotFound);
  await chain(`${f.dir}/past`, 4096);
  await rpcFails(
    f.call("fs/remove", { path: `${f.dir}/past`, recursive: true }),
    -32602,
    "paths in it pass the system's 4,095 bytes",
  );
  assert.ok((await Deno.lstat(`${f.dir}/past/a`)).isDirectory, "nothing was removed");
  await new Deno.Command("rm", { args: ["-rf", "past"], cwd: f.dir }).output();
});

Deno.test("FsOps refuses to remove or copy a tree holding a name that is not valid UTF-8, and copies a real U+FFFD name", async () => {
  await using f = await fixture();
  // Made by a program (Deno's paths are strings): `t\xff/a`, and `x\xff` beside a real `x\ufffd`.
  const made = await new Deno.Command("sh", {
    args: [
      "-c",
      `mkdir -p "tree/t$(printf '\\377')/a" copied && : > "copied/x$(printf '\\377')" && ` +
      `printf real > "copied/x\u{FFFD}" && mkdir fine && printf ok > "fine/y\u{FFFD}"`,
    ],
    cwd: f.dir,
  }).output();
  assert.equal(made.code, 0, new TextDecoder().decode(made.stderr));
  // Listed as `t\ufffd`, which names nothing: its depth could not be checked.
  await rpcFails(
    f.call("fs/remove", { path: `${f.dir}/tree`, recursive: true }),
    -32602,
    "not valid UTF-8",
  );
  assert.ok((await Deno.lstat(`${f.dir}/tree`)).isDirectory, "nothing was removed");
  // Nor when a real file holds the name the directory is listed under.
  const mixed = await new Deno.Command("sh", {
    args: ["-c", `mkdir -p "mixed/t$(printf '\\377')/a" && : > "mixed/t\u{FFFD}"`],
    cwd: f.dir,
  }).output();
  assert.equal(mixed.code, 0);
  await rpcFails(
    f.call("fs/remove", { path: `${f.dir}/mixed`, recursive: true }),
    -32602,
    "not valid UTF-8",
  );
  // A file under such a name has no depth to check: removed with the rest.
  const file = await new Deno.Command("sh", {
    args: ["-c", `mkdir build && : > "build/caf$(printf '\\351').txt"`],
    cwd: f.dir,
  }).output();
  assert.equal(file.code, 0);
  assert.deepEqual(await f.call("fs/remove", { path: `${f.dir}/build`, recursive: true }), {});
  await assert.rejects(Deno.lstat(`${f.dir}/build`), Deno.errors.NotFound);
  // Two entries listed under one name: one would be lost, or copied as the other.
  await rpcFails(
    f.call("fs/copy", {
      sourcePath: `${f.dir}/copied`,
      destinationPath: `${f.dir}/to`,
      recursive: true,
    }),
    -32602,
    "not valid UTF-8",
  );
  assert.deepEqual(
    await f.call("fs/copy", {
      sourcePath: `${f.dir}/fine`,
      destinationPath: `${f.dir}/fine2`,
      recursive: true,
    }),
    {},
  );
  assert.equal(await Deno.readTextFile(`${f.dir}/fine2/y\u{FFFD}`), "ok");
});

/** How many processes name `root` in their arguments (a helper's `bwrap`, `sh` or `cat`). */
async function processesNaming(root: string): Promise<number> {
  const out = await new Deno.Command("ps", { args: ["-eo", "args="], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).split("\n")
    .filter((line) => line.includes(root)).length;
}

Deno.test({
  name: "ConfinedFs.stopAll at any moment of a helper's start leaves no sandbox behind (os)",
  ignore: !OS_WORKS,
  async fn() {
    const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_stopstart_" }));
    try {
      const made = await new Deno.Command("mkfifo", { args: [`${root}/f`] }).output();
      assert.equal(made.code, 0);
      // bubblewrap arms --die-with-parent part way through its set-up: a kill
      // 2 to 5 ms after the spawn used to leave its sandbox blocked on the FIFO.
      for (let delayMs = 0; delayMs <= 20; delayMs++) {
        const confined = new ConfinedFs([root]);
        const writing = confined.writeFile("write", `${root}/f`, `${root}/f`, new Uint8Array(4));
        const timer = setTimeout(() => confined.stopAll(), delayMs);
        try {
          await assert.rejects(
            withDeadline(writing, 5_000, `the write stopped after ${delayMs} ms`),
            /the executor is closing/,
          );
        } finally {
          clearTimeout(timer);
        }
        await until(
          async () => (await processesNaming(root)) === 0,
          5_000,
          `no sandbox left after a stop at ${delayMs} ms`,
        );
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

/**
 * Runs `tests/_support/confined_stop_before_start.ts` in a process whose PATH
 * finds `bwrapScript` as `bwrap` first, over files it prepares in `root`
 * (`old0`..`old7` holding "old content", `keep`), and returns its ten
 * calls' outcomes.
 */
async function confinedCallsWith(
  root: string,
  bwrapScript: string,
  args: string[] = [],
): Promise<string[]> {
  await Deno.mkdir(`${root}/bin`);
  await Deno.writeTextFile(`${root}/bin/bwrap`, bwrapScript, { mode: 0o755 });
  for (let i = 0; i < 8; i++) await Deno.writeTextFile(`${root}/old${i}`, "old content");
  await Deno.writeTextFile(`${root}/keep`, "keep");
  const run = await withDeadline(
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "-q", "tests/_support/confined_stop_before_start.ts", root, ...args],
      cwd: new URL("..", import.meta.url).pathname,
      env: { PATH: `${root}/bin:${Deno.env.get("PATH")}` },
      stdout: "piped",
      stderr: "piped",
    }).output(),
    30_000,
    "the confined calls",
  );
  assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
  const outcomes: string[] = JSON.parse(new TextDecoder().decode(run.stdout));
  assert.equal(outcomes.length, 10);
  return outcomes;
}

Deno.test({
  name: "ConfinedFs.stopAll before a helper's sandbox is up never begins its operation (os)",
  ignore: !OS_WORKS,
  async fn() {
    const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_notbegun_" }));
    try {
      // A bubblewrap slow to start: every stop comes before any sandbox is up. The stop used to
      // wait for the helper to report in, then land just as its shell opened the file (`>`).
      const real = await new Deno.Command("sh", { args: ["-c", "command -v bwrap"] }).output();
      const bwrap = new TextDecoder().decode(real.stdout).trim();
      const outcomes = await confinedCallsWith(root, `#!/bin/sh\nsleep 0.5\nexec ${bwrap} "$@"\n`);
      for (const outcome of outcomes) assert.match(outcome, /the executor is closing/);
      for (let i = 0; i < 8; i++) {
        assert.equal(await Deno.readTextFile(`${root}/old${i}`), "old content", `old${i}`);
      }
      assert.equal(await Deno.readTextFile(`${root}/keep`), "keep", "not removed");
      await assert.rejects(Deno.lstat(`${root}/made`), Deno.errors.NotFound, "not made");
      await until(async () => (await processesNaming(root)) === 0, 5_000, "no sandbox left");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "ConfinedFs reports a sandbox that ended before its operation started as a failure, even with status 0 (os)",
  ignore: !OS_WORKS,
  async fn() {
    const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_notstarted_" }));
    try {
      // A wrapper that hides bubblewrap's failure: it exits 0 and runs nothing.
      const outcomes = await confinedCallsWith(root, "#!/bin/sh\nexit 0\n", ["--no-stop"]);
      for (const outcome of outcomes) {
        assert.match(outcome, /the sandbox ended before the operation started/);
      }
      assert.equal(await Deno.readTextFile(`${root}/old0`), "old content");
      assert.equal(await Deno.readTextFile(`${root}/keep`), "keep", "not removed");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "ConfinedFs.stopAll settles a write whose data stream stalled (os)",
  ignore: !OS_WORKS,
  async fn() {
    const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_stall_" }));
    try {
      const confined = new ConfinedFs([root]);
      let pulls = 0;
      // One chunk, then a source that never produces again (nor ends).
      const stalled = new ReadableStream<Uint8Array>({
        pull(controller): Promise<void> | void {
          if (pulls++ > 0) return new Promise<void>(() => {});
          controller.enqueue(new Uint8Array(3));
        },
      });
      const writing = confined.writeFile("copy to", `${root}/f`, `${root}/f`, stalled);
      writing.catch(() => {});
      // The helper was let go and took the first chunk: the copy waits on its source.
      await until(() => pulls >= 2, 10_000, "the second pull");
      confined.stopAll();
      await assert.rejects(
        withDeadline(writing, 5_000, "the stalled write"),
        /the executor is closing/,
      );
      await until(async () => (await processesNaming(root)) === 0, 5_000, "no sandbox left");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "ConfinedFs.stopAll kills a blocked helper at once, without the abort's grace (os)",
  ignore: !OS_WORKS,
  async fn() {
    const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_stopall_" }));
    try {
      const made = await new Deno.Command("mkfifo", { args: [`${root}/f`] }).output();
      assert.equal(made.code, 0);
      const confined = new ConfinedFs([root]);
      const stop = new AbortController();
      const writing = confined.writeFile(
        "write",
        `${root}/f`,
        `${root}/f`,
        new Uint8Array(4),
        stop.signal,
      );
      writing.catch(() => {});
      stop.abort(new Error("the connection closed")); // the grace starts: 5 s
      // The helper runs, blocked on the FIFO.
      await until(async () => (await processesNaming(root)) > 0, 10_000, "the helper running");
      const stopped = performance.now();
      confined.stopAll(); // the executor closes
      await assert.rejects(withDeadline(writing, 10_000, "the write"), /the connection closed/);
      assert.ok(performance.now() - stopped < 3_000, "not after the 5 s grace");
      // A call that would start its helper after stopAll (it was still preparing) starts none.
      const later = new AbortController();
      later.abort(new Error("the connection closed"));
      const started = performance.now();
      await assert.rejects(
        withDeadline(
          confined.writeFile("write", `${root}/f`, `${root}/f`, new Uint8Array(4), later.signal),
          10_000,
          "the late write",
        ),
        /the executor is closing/,
      );
      assert.ok(performance.now() - started < 3_000, "the late call not left to a grace");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "ConfinedFs lets a write in progress finish when its request's signal aborts (os)",
  ignore: !OS_WORKS,
  async fn() {
    const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_abortwrite_" }));
    try {
      await Deno.writeTextFile(`${root}/f`, "old content");
      const stop = new AbortController();
      const piece = new Uint8Array(64 * 1024).fill(120);
      let sent = 0;
      // 16 pieces, the connection closing after the first: the file must not end up cut short.
      const data = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (sent === 1) stop.abort(new Error("the connection closed"));
          if (sent === 16) return controller.close();
          sent++;
          await new Promise((resolve) => setTimeout(resolve, 20)); // pacing: a slow source
          controller.enqueue(piece);
        },
      });
      const writing = new ConfinedFs([root]).writeFile(
        "write",
        `${root}/f`,
        `${root}/f`,
        data,
        stop.signal,
      );
      await assert.rejects(withDeadline(writing, 10_000, "the write"), /the connection closed/);
      assert.equal((await Deno.stat(`${root}/f`)).size, 16 * piece.length, "written in full");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "ConfinedFs kills a helper blocked on a FIFO when the request's signal aborts (os)",
  ignore: !OS_WORKS,
  async fn() {
    const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_fifo_" }));
    try {
      // What a program swapping a FIFO in for the file, after the regular-file check, leaves.
      const made = await new Deno.Command("mkfifo", { args: [`${root}/f`] }).output();
      assert.equal(made.code, 0);
      const bwraps = () => processesNaming(root);
      const stop = new AbortController();
      const writing = new ConfinedFs([root]).writeFile(
        "write",
        `${root}/f`,
        `${root}/f`,
        new TextEncoder().encode("data"),
        stop.signal,
      );
      writing.catch(() => {});
      // The helper waits for a reader that never comes.
      await until(async () => (await bwraps()) > 0, 10_000, "the helper running");
      const aborted = performance.now();
      stop.abort(new Error("the connection closed"));
      await assert.rejects(withDeadline(writing, 10_000, "the write"), /the connection closed/);
      // At the limit the helper still had its grace; past it, it is gone.
      const waited = performance.now() - aborted;
      assert.ok(waited >= ABORT_GRACE_MS - 5, `killed after ${waited} ms, within the grace`);
      await until(async () => (await bwraps()) === 0, 10_000, "the helper gone");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("FsOps removes a link to a directory as a link, reading nothing below it", async () => {
  await using f = await fixture();
  // The target is past the walk's limit and outside the grants: neither matters to the link.
  const target = `${f.outside}/deep`;
  await Deno.mkdir(target);
  // Past 4,095 bytes through the link too (its path is shorter than the target's).
  const levels = 2040;
  const made = await new Deno.Command("mkdir", {
    args: ["-p", "a/".repeat(levels)],
    cwd: target,
  }).output();
  assert.equal(made.code, 0);
  await Deno.symlink(target, `${f.dir}/link`);
  assert.deepEqual(await f.call("fs/remove", { path: `${f.dir}/link`, recursive: true }), {});
  await assert.rejects(Deno.lstat(`${f.dir}/link`), Deno.errors.NotFound);
  assert.ok((await Deno.lstat(`${target}/a`)).isDirectory, "the target is untouched");
  await new Deno.Command("rm", { args: ["-rf", "deep"], cwd: f.outside }).output();
});

Deno.test('FsOps reads "link/." as the directory it leads to, and refuses to remove a path ending in "." or ".."', async () => {
  await using f = await fixture();
  await Deno.mkdir(`${f.dir}/t/sub`, { recursive: true });
  await Deno.writeTextFile(`${f.dir}/t/keep`, "k");
  await Deno.symlink(`${f.dir}/t`, `${f.dir}/link`);
  const meta = await f.call("fs/getMetadata", { path: `${f.dir}/link/.` }) as Record<
    string,
    unknown
  >;
  assert.equal(meta.isDirectory, true);
  assert.equal(meta.isSymlink, false, "through the link, as the system reads it");
  const meta2 = await f.call("fs/getMetadata", { path: `${f.dir}/link/.//` }) as Record<
    string,
    unknown
  >;
  assert.equal(meta2.isSymlink, false, "with slashes after the dot too");
  for (
    const path of [
      `${f.dir}/link/.`,
      `${f.dir}/t/.`,
      `${f.dir}/t/sub/..`,
      `${f.dir}/t/./`,
      `${f.dir}/t/.//`,
      `${f.dir}/t/sub/../`,
      `${f.dir}/t/sub/..//`,
    ]
  ) {
    await rpcFails(f.call("fs/remove", { path, recursive: true }), -32602, "ends in");
  }
  await rpcFails(
    f.call("fs/remove", { path: `${f.dir}/link/`, recursive: true }),
    -32004,
    'ends in "/" but is a symbolic link',
  );
  assert.ok((await Deno.lstat(`${f.dir}/link`)).isSymlink, "the link stays");
  assert.equal(await Deno.readTextFile(`${f.dir}/t/keep`), "k", "the directory stays");
  assert.deepEqual(await f.call("fs/remove", { path: `${f.dir}/t/sub`, recursive: true }), {});
});

for (const level of LEVELS) {
  Deno.test({
    name:
      `FsOps names the destination when a copy's destination directory is missing (min confinement ${level})`,
    ignore: level === "os" && !OS_WORKS,
    async fn() {
      await using f = await fixture(undefined, level);
      await Deno.writeTextFile(`${f.dir}/source`, "s");
      const destination = `${f.dir}/missing/copy`;
      await assert.rejects(
        f.call("fs/copy", { sourcePath: `${f.dir}/source`, destinationPath: destination }),
        (error: unknown) => {
          const message = (error as Error).message;
          assert.ok(message.includes(`"${f.dir}/missing`), message);
          assert.ok(!message.includes(`"${f.dir}/source"`), `${message} blames the source`);
          return true;
        },
      );
    },
  });
}

Deno.test("FsOps refuses to copy the root directory, inside which every destination lies", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_fs_" }));
  try {
    // Read granted everywhere (the executor's own grant in this test), write below dir.
    const fs = new FsOps(new SandboxPolicy());
    await rpcFails(
      fs.call("fs/copy", { sourcePath: "/", destinationPath: `${dir}/copy`, recursive: true }),
      -32602,
      "is inside it",
    );
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing was copied");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FsOps walks a tree before removing it several directories at a time", async () => {
  await using f = await fixture();
  for (let i = 0; i < 40; i++) await Deno.mkdir(`${f.dir}/tree/b${i}/c`, { recursive: true });
  // Counts the walk's reads in flight (the remove itself lists nothing through Deno.readDir).
  const readDir = Deno.readDir;
  let active = 0;
  let most = 0;
  Deno.readDir = ((path: string | URL) => {
    const entries = readDir(path);
    return (async function* () {
      active++;
      most = Math.max(most, active);
      try {
        yield* entries;
      } finally {
        active--;
      }
    })();
  }) as typeof Deno.readDir;
  try {
    assert.deepEqual(await f.call("fs/remove", { path: `${f.dir}/tree`, recursive: true }), {});
  } finally {
    Deno.readDir = readDir;
  }
  await assert.rejects(Deno.lstat(`${f.dir}/tree`), Deno.errors.NotFound);
  assert.equal(most, 8, "eight reads at once");
});

Deno.test("FsOps lists a directory up to its listing bound and refuses one entry past it", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_fs_" }));
  try {
    for (let i = 0; i < 10; i++) await Deno.writeTextFile(`${dir}/f${i}`, "");
    // Each entry counts its name's JSON ("f0": 4 bytes) and LISTING_ENTRY_BYTES more.
    const bound = 10 * (4 + LISTING_ENTRY_BYTES);
    const policy = new SandboxPolicy({ query: grantsOnly(dir) });
    const fits = new FsOps(policy, { maxListingBytes: bound });
    const { entries } = await fits.call("fs/readDirectory", { path: dir }) as {
      entries: unknown[];
    };
    assert.equal(entries.length, 10);
    // The estimate is never short of the entries' own JSON (the array's brackets are the envelope's).
    const json = JSON.stringify(entries).length - 2;
    assert.ok(json <= bound, `${json} bytes`);
    const short = new FsOps(policy, { maxListingBytes: bound - 1 });
    await rpcFails(
      short.call("fs/readDirectory", { path: dir }),
      -32602,
      "more entries than one reply carries",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const level of LEVELS) {
  Deno.test({
    name:
      `FsOps refuses to copy a file onto itself, by path, link or hard link, and leaves it whole (min confinement ${level})`,
    ignore: level === "os" && !OS_WORKS,
    async fn() {
      await using f = await fixture(undefined, level);
      const data = new Uint8Array(256 * 1024).map((_, i) => i % 251);
      await Deno.writeFile(`${f.dir}/big`, data);
      await Deno.symlink(`${f.dir}/big`, `${f.dir}/alias`);
      await Deno.link(`${f.dir}/big`, `${f.dir}/hard`);
      for (const to of ["big", "alias", "hard"]) {
        await rpcFails(
          f.call("fs/copy", { sourcePath: `${f.dir}/big`, destinationPath: `${f.dir}/${to}` }),
          -32602,
          "they are the same file",
        );
      }
      assert.deepEqual(await Deno.readFile(`${f.dir}/big`), data);
      // A different file is still copied.
      assert.deepEqual(
        await f.call("fs/copy", { sourcePath: `${f.dir}/big`, destinationPath: `${f.dir}/copy` }),
        {},
      );
      assert.deepEqual(await Deno.readFile(`${f.dir}/copy`), data);
    },
  });
}

Deno.test({
  name: "FsOps under the os minimum refuses to remove a directory that holds a write root",
  ignore: !OS_WORKS,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_fs_" }));
    try {
      await Deno.mkdir(`${dir}/d/inner`, { recursive: true });
      await Deno.writeTextFile(`${dir}/d/inner/keep`, "kept");
      const fs = new FsOps(
        new SandboxPolicy({ query: grantsOnly(dir), writeRoots: [dir, `${dir}/d/inner`] }),
        { minConfinement: "os" },
      );
      await rpcFails(
        fs.call("fs/remove", { path: `${dir}/d`, recursive: true }),
        -32602,
        `it holds the write root "${dir}/d/inner"`,
      );
      assert.equal(await Deno.readTextFile(`${dir}/d/inner/keep`), "kept");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "FsOps under the os minimum refuses to remove a write root itself, and leaves it whole",
  ignore: !OS_WORKS,
  async fn() {
    await using f = await fixture(undefined, "os");
    await Deno.writeTextFile(`${f.dir}/keep`, "kept");
    await rpcFails(
      f.call("fs/remove", { path: f.dir, recursive: true }),
      -32602,
      "it is a write root",
    );
    assert.equal(await Deno.readTextFile(`${f.dir}/keep`), "kept");
    // What is inside it can still be removed.
    assert.deepEqual(await f.call("fs/remove", { path: `${f.dir}/keep` }), {});
  },
});

Deno.test("FsOps readFile allows a file at the size limit and refuses one byte past it", async () => {
  await using f = await fixture(1000);
  await Deno.writeFile(`${f.dir}/at`, new Uint8Array(1000));
  await Deno.writeFile(`${f.dir}/past`, new Uint8Array(1001));
  const at = await f.call("fs/readFile", { path: `${f.dir}/at` });
  assert.equal(Uint8Array.fromBase64(at.dataBase64 as string).length, 1000);
  await rpcFails(
    f.call("fs/readFile", { path: `${f.dir}/past` }),
    -32602,
    "1001 bytes",
    "1000 byte limit",
  );
  await rpcFails(f.call("fs/readFile", { path: f.dir }), -32602, "is a directory");
  await rpcFails(f.call("fs/readFile", { path: `${f.dir}/missing` }), -32004, "does not exist");
});

for (const level of LEVELS) {
  Deno.test({
    name: `FsOps creates, lists and removes directories (min confinement ${level})`,
    ignore: level === "os" && !OS_WORKS,
    async fn() {
      await using f = await fixture(undefined, level);
      assert.deepEqual(await f.call("fs/createDirectory", { path: `${f.dir}/a/b/c` }), {});
      await f.call("fs/createDirectory", { path: `${f.dir}/a/b/c` }); // recursive accepts existing
      await rpcFails(
        f.call("fs/createDirectory", { path: `${f.dir}/x/y`, recursive: false }),
        -32004,
      );
      await rpcFails(
        f.call("fs/createDirectory", { path: `${f.dir}/a`, recursive: false }),
        -32603,
        `"${f.dir}/a": it already exists`,
      );
      await Deno.writeTextFile(`${f.dir}/a/z.txt`, "z");
      await Deno.writeTextFile(`${f.dir}/a/m.txt`, "m");
      const { entries } = await f.call("fs/readDirectory", { path: `${f.dir}/a` });
      assert.deepEqual(entries, [
        { fileName: "b", isDirectory: true, isFile: false, isSymlink: false },
        { fileName: "m.txt", isDirectory: false, isFile: true, isSymlink: false },
        { fileName: "z.txt", isDirectory: false, isFile: true, isSymlink: false },
      ]);
      await rpcFails(
        f.call("fs/remove", { path: `${f.dir}/a`, recursive: false }),
        -32602,
        `${f.dir}/a`,
      );
      await f.call("fs/remove", { path: `${f.dir}/missing` }); // force defaults to true
      await rpcFails(f.call("fs/remove", { path: `${f.dir}/missing`, force: false }), -32004);
      await Deno.writeTextFile(`${f.outside}/keep.txt`, "keep");
      await Deno.symlink(f.outside, `${f.dir}/out`);
      await f.call("fs/remove", { path: `${f.dir}/out` }); // the link, not its target
      assert.equal(await Deno.readTextFile(`${f.outside}/keep.txt`), "keep");
      await f.call("fs/remove", { path: `${f.dir}/a` });
      await assert.rejects(Deno.stat(`${f.dir}/a`), Deno.errors.NotFound);
    },
  });
}

for (const level of LEVELS) {
  Deno.test({
    name:
      `FsOps copies files and trees and never writes through links out of the sandbox (min confinement ${level})`,
    ignore: level === "os" && !OS_WORKS,
    async fn() {
      await using f = await fixture(undefined, level);
      await Deno.mkdir(`${f.dir}/src/inner`, { recursive: true });
      await Deno.writeTextFile(`${f.dir}/src/one.txt`, "one");
      await Deno.writeTextFile(`${f.dir}/src/inner/two.txt`, "two");
      await f.call("fs/copy", {
        sourcePath: `${f.dir}/src/one.txt`,
        destinationPath: `${f.dir}/one.txt`,
        recursive: false,
      });
      assert.equal(await Deno.readTextFile(`${f.dir}/one.txt`), "one");
      await rpcFails(
        f.call("fs/copy", {
          sourcePath: `${f.dir}/src`,
          destinationPath: `${f.dir}/dst`,
          recursive: false,
        }),
        -32602,
        '"recursive"',
      );
      await f.call("fs/copy", {
        sourcePath: `${f.dir}/src`,
        destinationPath: `${f.dir}/dst`,
        recursive: true,
      });
      assert.equal(await Deno.readTextFile(`${f.dir}/dst/inner/two.txt`), "two");
      await rpcFails(
        f.call("fs/copy", {
          sourcePath: `${f.dir}/src`,
          destinationPath: `${f.dir}/src/inner/again`,
          recursive: true,
        }),
        -32602,
        "inside it",
      );
      // An existing destination tree holding a link that leads outside: refused.
      await Deno.mkdir(`${f.dir}/trap`);
      await Deno.symlink(f.outside, `${f.dir}/trap/inner`);
      await rpcFails(
        f.call("fs/copy", {
          sourcePath: `${f.dir}/src`,
          destinationPath: `${f.dir}/trap`,
          recursive: true,
        }),
        -32003,
        f.outside,
      );
      assert.deepEqual([...Deno.readDirSync(f.outside)], []);
      await Deno.symlink("/etc", `${f.dir}/src/link`);
      await rpcFails(
        f.call("fs/copy", {
          sourcePath: `${f.dir}/src`,
          destinationPath: `${f.dir}/dst2`,
          recursive: true,
        }),
        -32603,
        "symbolic links",
      );
      await rpcFails(
        f.call("fs/copy", {
          sourcePath: "/etc/hostname",
          destinationPath: `${f.dir}/h`,
          recursive: false,
        }),
        -32003,
        "/etc/hostname",
      );
      await rpcFails(
        f.call("fs/copy", {
          sourcePath: `${f.dir}/one.txt`,
          destinationPath: `${f.outside}/x`,
          recursive: false,
        }),
        -32003,
        "write access",
      );
      await f.call("fs/writeFile", { path: `${f.dir}/t.txt`, dataBase64: b64("t") });
    },
  });
}

/**
 * A world under /var/tmp (not /tmp: the sandbox has its own /tmp) whose
 * permission oracle swaps `root/swap` (a real directory) for a link to
 * `outside` right after the write check has resolved the path: the race
 * of SECURITY_TESTS.md defect 6, won every time.
 */
async function swapWorld(minConfinement: Confinement) {
  const base = await Deno.realPath(
    await Deno.makeTempDir({ dir: "/var/tmp", prefix: "outpost_fs_swap_" }),
  );
  const root = `${base}/root`;
  const outside = `${base}/outside`;
  const swap = `${root}/swap`;
  await Deno.mkdir(swap, { recursive: true });
  await Deno.mkdir(outside);
  let swaps = 0;
  const query: PermissionQuery = async (d) => {
    const path = (d as { path?: string }).path ?? "";
    const inRoot = path === root || path.startsWith(root + "/");
    if (d.name === "write" && path.startsWith(swap + "/")) {
      // The check resolved the path already; swap before the operation runs.
      await Deno.rename(swap, `${swap}.real`);
      await Deno.symlink(outside, swap);
      swaps++;
    }
    return (d.name === "read" && path.startsWith(base)) || (d.name === "write" && inRoot)
      ? "granted"
      : "prompt";
  };
  const fs = new FsOps(new SandboxPolicy({ query, writeRoots: [root] }), { minConfinement });
  return {
    root,
    outside,
    swap,
    fs,
    swaps: () => swaps,
    /** Puts the real directory back. */
    async restore(): Promise<void> {
      await Deno.remove(swap);
      await Deno.rename(`${swap}.real`, swap);
    },
    async [Symbol.asyncDispose]() {
      await Deno.remove(base, { recursive: true });
    },
  };
}

Deno.test({
  name: "FsOps below the os minimum: a directory swapped after the check still redirects writes " +
    "(the documented race the os minimum closes)",
  async fn() {
    await using w = await swapWorld("none");
    await Deno.writeTextFile(`${w.outside}/victim.txt`, "victim");
    await w.fs.call("fs/writeFile", { path: `${w.swap}/w.txt`, dataBase64: b64("x") });
    await w.restore();
    await w.fs.call("fs/createDirectory", { path: `${w.swap}/d`, recursive: false });
    await w.restore();
    await w.fs.call("fs/remove", { path: `${w.swap}/victim.txt`, recursive: false });
    await w.restore();
    assert.equal(w.swaps(), 3);
    // The swap hook really races: each operation landed outside.
    assert.deepEqual([...Deno.readDirSync(w.outside)].map((e) => e.name).sort(), ["d", "w.txt"]);
  },
});

Deno.test({
  name: "FsOps at the os minimum: a directory swapped after the check cannot lead " +
    "writeFile, createDirectory, remove or copy outside the write roots",
  ignore: !OS_WORKS,
  async fn() {
    await using w = await swapWorld("os");
    assert.equal(await w.fs.confinedWrites(), true);
    await Deno.writeTextFile(`${w.outside}/victim.txt`, "victim");
    await Deno.writeTextFile(`${w.root}/source.txt`, "source");
    const attempts: [string, Record<string, unknown>][] = [
      ["fs/writeFile", { path: `${w.swap}/w.txt`, dataBase64: b64("x") }],
      ["fs/createDirectory", { path: `${w.swap}/d`, recursive: false }],
      ["fs/createDirectory", { path: `${w.swap}/p/q`, recursive: true }],
      ["fs/remove", { path: `${w.swap}/victim.txt`, recursive: false }],
      ["fs/remove", { path: `${w.swap}/victim.txt`, recursive: true, force: true }],
      ["fs/copy", {
        sourcePath: `${w.root}/source.txt`,
        destinationPath: `${w.swap}/c.txt`,
        recursive: false,
      }],
    ];
    for (const [method, params] of attempts) {
      await rpcFails(w.fs.call(method, params), -32003, "Read-only file system", w.swap);
      await w.restore();
    }
    assert.equal(w.swaps(), attempts.length);
    assert.deepEqual([...Deno.readDirSync(w.outside)].map((e) => e.name), ["victim.txt"]);
    assert.equal(await Deno.readTextFile(`${w.outside}/victim.txt`), "victim");
    // Without a swap the same operations work.
    await w.fs.call("fs/writeFile", { path: `${w.root}/ok.txt`, dataBase64: b64("ok") });
    await w.fs.call("fs/copy", {
      sourcePath: `${w.root}/ok.txt`,
      destinationPath: `${w.root}/ok2.txt`,
      recursive: false,
    });
    assert.equal(await Deno.readTextFile(`${w.root}/ok2.txt`), "ok");
  },
});

Deno.test({
  name: "FsOps at the os minimum refuses writes outside existing write roots without running them",
  ignore: !OS_WORKS,
  async fn() {
    const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_fs_noroot_" }));
    try {
      // No write roots: the policy alone would allow the write; the os minimum does not.
      const fs = new FsOps(new SandboxPolicy({ query: grantsOnly(dir) }), {
        minConfinement: "os",
      });
      await rpcFails(
        fs.call("fs/writeFile", { path: `${dir}/a.txt`, dataBase64: b64("a") }),
        -32003,
        `${dir}/a.txt`,
        "write roots",
      );
      await assert.rejects(Deno.stat(`${dir}/a.txt`), Deno.errors.NotFound);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Makes a FIFO (Deno has no mkfifo). */
async function mkfifo(path: string): Promise<void> {
  const { success } = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(success, `mkfifo ${path}`);
}

/**
 * Opens the FIFO for reading and writing at once and closes it, which wakes
 * anything blocked opening either end: if a refusal regresses, the test fails
 * on its deadline instead of hanging.
 */
async function releaseFifo(path: string): Promise<void> {
  await new Deno.Command("sh", { args: ["-c", ': <> "$1"', "sh", path] }).output();
}

for (const level of LEVELS) {
  Deno.test({
    name:
      `FsOps refuses a FIFO promptly in readFile, writeFile and copy (min confinement ${level})`,
    ignore: level === "os" && !OS_WORKS,
    async fn() {
      await using f = await fixture(undefined, level);
      await Deno.mkdir(`${f.dir}/tree`);
      await Deno.mkdir(`${f.dir}/src`);
      const fifo = `${f.dir}/tree/fifo`;
      await mkfifo(fifo);
      await Deno.writeTextFile(`${f.dir}/src/fifo`, "plain"); // a regular file of the same name
      const attempts: [string, Record<string, unknown>][] = [
        ["fs/readFile", { path: fifo }],
        ["fs/writeFile", { path: fifo, dataBase64: b64("x") }],
        ["fs/copy", { sourcePath: fifo, destinationPath: `${f.dir}/copy`, recursive: false }],
        ["fs/copy", { sourcePath: `${f.dir}/src/fifo`, destinationPath: fifo, recursive: false }],
        // A FIFO inside a copied tree, and one in an existing destination tree.
        ["fs/copy", {
          sourcePath: `${f.dir}/tree`,
          destinationPath: `${f.dir}/c`,
          recursive: true,
        }],
        ["fs/copy", {
          sourcePath: `${f.dir}/src`,
          destinationPath: `${f.dir}/tree`,
          recursive: true,
        }],
      ];
      try {
        for (const [method, params] of attempts) {
          await withDeadline(
            rpcFails(f.call(method, params), -32602, `"${fifo}": it is a FIFO, not a regular file`),
            5_000,
            `${method} ${JSON.stringify(params)}`,
          );
        }
      } finally {
        await releaseFifo(fifo);
      }
      assert.equal((await Deno.lstat(fifo)).isFifo, true);
      await assert.rejects(Deno.lstat(`${f.dir}/copy`), Deno.errors.NotFound);
      // Regular files still work.
      await f.call("fs/writeFile", { path: `${f.dir}/tree/plain`, dataBase64: b64("ok") });
      assert.deepEqual(await f.call("fs/readFile", { path: `${f.dir}/tree/plain` }), {
        dataBase64: b64("ok"),
      });
    },
  });
}

Deno.test("FsOps names the kind of a non-regular file it refuses: directory, socket, device", async () => {
  await using f = await fixture();
  await rpcFails(
    f.call("fs/writeFile", { path: f.dir, dataBase64: b64("x") }),
    -32602,
    `"${f.dir}": it is a directory, not a regular file`,
  );
  const socket = `${f.dir}/socket`;
  using _listener = Deno.listen({ transport: "unix", path: socket });
  await rpcFails(f.call("fs/readFile", { path: socket }), -32602, "it is a socket");
  // Devices: /dev/zero would never end and /dev/null would swallow the write.
  const devices = new FsOps(new SandboxPolicy({ query: grantsOnly("/dev") }));
  await rpcFails(
    devices.call("fs/readFile", { path: "/dev/zero" }),
    -32602,
    '"/dev/zero": it is a character device',
  );
  await rpcFails(
    devices.call("fs/writeFile", { path: "/dev/null", dataBase64: b64("x") }),
    -32602,
    '"/dev/null": it is a character device',
  );
});

for (const level of LEVELS) {
  Deno.test({
    name:
      `FsOps gives up on a file whose lease is kept, after LEASE_WAIT_MS (min confinement ${level})`,
    ignore: !CAN_LEASE || (level === "os" && !OS_WORKS),
    async fn() {
      await using f = await fixture(undefined, level);
      const leased = `${f.dir}/leased`;
      await Deno.writeTextFile(leased, "kept");
      const attempts: [string, Record<string, unknown>][] = [
        ["fs/readFile", { path: leased }],
        ["fs/copy", { sourcePath: leased, destinationPath: `${f.dir}/copy` }],
      ];
      // Under `os` a write opens the file inside bubblewrap (`cat >`), which waits out the lease.
      if (level === "none") attempts.push(["fs/writeFile", { path: leased, dataBase64: b64("x") }]);
      {
        await using _lease = await holdLease(leased);
        for (const [method, params] of attempts) {
          // Before, each waited the kernel's lease-break time (45 s) on one of Deno's blocking threads.
          await withDeadline(
            rpcFails(f.call(method, params), -32603, `"${leased}": another process holds a lease`),
            5_000,
            method,
          );
        }
      }
      assert.equal(await Deno.readTextFile(leased), "kept");
      await assert.rejects(Deno.lstat(`${f.dir}/copy`), Deno.errors.NotFound);
    },
  });
}

for (const level of LEVELS) {
  Deno.test({
    name: `FsOps copies keep a private file private, and no set-id bits (min confinement ${level})`,
    ignore: level === "os" && !OS_WORKS,
    async fn() {
      await using f = await fixture(undefined, level);
      // [source, copy below os, copy under os]: under os `cat` in the sandbox creates the copy,
      // without execute bits, and its owner keeps read and write (without capabilities even root
      // could not write a read-only copy again). Below os the executor, when root, can.
      const modes: [number, number, number][] = [
        [0o600, 0o600, 0o600],
        [0o640, 0o640, 0o640],
        [0o755, 0o755, 0o644],
        [0o4755, 0o755, 0o644],
        [0o2750, 0o750, 0o640],
        [0o444, 0o444, 0o644],
        [0o400, 0o400, 0o600],
        [0o000, 0o000, 0o600],
      ];
      const cases = modes.map(([source, none, os]) => [source, level === "none" ? none : os]);
      const root = Deno.uid() === 0;
      for (const [source, copied] of cases) {
        // Not as root, a source its owner cannot read cannot be copied.
        if (!root && (source & 0o400) === 0) continue;
        const from = `${f.dir}/from_${source.toString(8)}`;
        await Deno.writeTextFile(from, "secret");
        await Deno.chmod(from, source);
        const to = `${f.dir}/to_${source.toString(8)}`;
        await f.call("fs/copy", { sourcePath: from, destinationPath: to });
        const mode = (await Deno.stat(to)).mode! & 0o7777;
        assert.equal(
          mode.toString(8),
          copied.toString(8),
          `a copy of a ${source.toString(8)} file`,
        );
        assert.equal(await Deno.readTextFile(to), "secret");
        // Written again, by a copy and by a write (not as root, a read-only copy below os is not).
        if (!root && level === "none" && (copied & 0o200) === 0) continue;
        await f.call("fs/copy", { sourcePath: from, destinationPath: to });
        await f.call("fs/writeFile", { path: to, dataBase64: b64("again") });
        assert.equal(await Deno.readTextFile(to), "again");
      }
    },
  });
}

/** Asserts the message does not carry Deno's raw text (which repeats the whole path). */
async function clearFailure(
  promise: Promise<unknown>,
  code: number,
  ...mentions: string[]
): Promise<void> {
  await rpcFails(promise, code, ...mentions);
  await promise.catch((error: Error) => {
    assert.ok(!error.message.includes("os error"), error.message);
    assert.ok(error.message.length < 2 * MAX_SHOWN_PATH_CHARS, error.message);
  });
}

for (const level of LEVELS) {
  Deno.test({
    name:
      `FsOps maps path failures to clear errors with the action named (min confinement ${level})`,
    ignore: level === "os" && !OS_WORKS,
    async fn() {
      await using f = await fixture(undefined, level);
      await Deno.writeTextFile(`${f.dir}/file`, "x");
      const data = b64("x");
      // A name at the system's 255-byte limit is merely missing; one byte more is too long.
      const atLimit = `${f.dir}/${"n".repeat(255)}`;
      await clearFailure(f.call("fs/readFile", { path: atLimit }), -32004, "does not exist");
      await clearFailure(
        f.call("fs/writeFile", { path: `${atLimit}/x`, dataBase64: data }),
        -32004,
      );
      const longName = `${f.dir}/${"n".repeat(256)}`;
      const longPath = `${f.dir}/${"a".repeat(5000)}`;
      for (const path of [longName, longPath]) {
        const tooLong = "the path is too long";
        await clearFailure(f.call("fs/readFile", { path }), -32602, "Cannot read", tooLong);
        await clearFailure(f.call("fs/getMetadata", { path }), -32602, "Cannot inspect", tooLong);
        await clearFailure(f.call("fs/writeFile", { path, dataBase64: data }), -32602, tooLong);
        await clearFailure(f.call("fs/createDirectory", { path }), -32602, tooLong);
        await clearFailure(f.call("fs/remove", { path }), -32602, "Cannot remove", tooLong);
      }
      // A whole path at the system's 4,095 bytes is merely missing; one byte
      // more, or 1 MB of short names, is too long, and said at once.
      const deep = (bytes: number) => {
        const head = `${f.dir}/${"d/".repeat((bytes - f.dir.length) / 2 - 2)}`;
        return head + "x".repeat(bytes - head.length);
      };
      assert.equal(deep(MAX_PATH_BYTES).length, MAX_PATH_BYTES);
      await clearFailure(f.call("fs/getMetadata", { path: deep(MAX_PATH_BYTES) }), -32004);
      const tooLong = [
        deep(MAX_PATH_BYTES + 1),
        `/${"a/".repeat(500_000)}`,
        `${f.dir}${"/.".repeat(2_100)}/x`, // as written: "." parts count, as for the system
      ];
      for (const path of tooLong) {
        await clearFailure(
          withDeadline(f.call("fs/getMetadata", { path }), 10_000, "a long path's refusal"),
          -32602,
          "Cannot inspect",
          "the path is too long",
        );
      }
      // A regular file used as a directory: not found.
      const under = `${f.dir}/file/x`;
      const notDir =
        `"${under}": it does not exist (it or a parent in the path is not a directory)`;
      await clearFailure(f.call("fs/getMetadata", { path: under }), -32004, "inspect", notDir);
      await clearFailure(f.call("fs/readFile", { path: under }), -32004, notDir);
      await clearFailure(f.call("fs/writeFile", { path: under, dataBase64: data }), -32004, notDir);
      await clearFailure(
        f.call("fs/createDirectory", { path: under, recursive: false }),
        -32004,
        notDir,
      );
      await clearFailure(f.call("fs/readDirectory", { path: under }), -32004, "list", notDir);
      // An existing path: its documented I/O code, a clear message.
      await clearFailure(
        f.call("fs/createDirectory", { path: `${f.dir}/file`, recursive: false }),
        -32603,
        `Cannot create directory "${f.dir}/file": it already exists`,
      );
      // A symbolic link loop: a path the system cannot take.
      await Deno.symlink("loop_b", `${f.dir}/loop_a`);
      await Deno.symlink("loop_a", `${f.dir}/loop_b`);
      await clearFailure(
        f.call("fs/readFile", { path: `${f.dir}/loop_a` }),
        -32602,
        "too many levels of symbolic links",
      );
    },
  });
}

for (const level of LEVELS) {
  Deno.test({
    name: `FsOps refuses listing a non-directory and removing a non-empty directory without ` +
      `recursive with -32602 and a clear message (min confinement ${level})`,
    ignore: level === "os" && !OS_WORKS,
    async fn() {
      await using f = await fixture(undefined, level);
      await Deno.writeTextFile(`${f.dir}/file`, "x");
      await mkfifo(`${f.dir}/fifo`);
      await Deno.mkdir(`${f.dir}/full/sub`, { recursive: true });
      await Deno.mkdir(`${f.dir}/empty`);
      // The path exists and is not a directory: an invalid target, not a missing one.
      await clearFailure(
        f.call("fs/readDirectory", { path: `${f.dir}/file` }),
        -32602,
        `Cannot list "${f.dir}/file": it is a regular file, not a directory`,
      );
      await clearFailure(
        f.call("fs/readDirectory", { path: `${f.dir}/fifo` }),
        -32602,
        `"${f.dir}/fifo": it is a FIFO, not a directory`,
      );
      // A missing path stays -32004.
      await clearFailure(
        f.call("fs/readDirectory", { path: `${f.dir}/missing` }),
        -32004,
        "does not exist",
      );
      const notEmpty =
        `Cannot remove "${f.dir}/full": it is a directory that is not empty; pass recursive: true`;
      for (const force of [true, false]) {
        await clearFailure(
          f.call("fs/remove", { path: `${f.dir}/full`, recursive: false, force }),
          -32602,
          notEmpty,
        );
      }
      assert.equal((await Deno.stat(`${f.dir}/full/sub`)).isDirectory, true);
      // An empty directory goes without recursive; the full one with it.
      await f.call("fs/remove", { path: `${f.dir}/empty`, recursive: false, force: false });
      await f.call("fs/remove", { path: `${f.dir}/full`, recursive: true, force: false });
      await assert.rejects(Deno.lstat(`${f.dir}/empty`), Deno.errors.NotFound);
      await assert.rejects(Deno.lstat(`${f.dir}/full`), Deno.errors.NotFound);
    },
  });
}

Deno.test("FsOps reports an OS refusal it has no mapping for by the C library's text alone", async () => {
  // procfs refuses unlinking and writing its files to every user (root included).
  const proc = new FsOps(new SandboxPolicy({ query: grantsOnly("/proc") }));
  await clearFailure(
    proc.call("fs/remove", { path: "/proc/version", recursive: false, force: false }),
    -32603,
    'Cannot remove "/proc/version": ',
  );
  await clearFailure(
    proc.call("fs/writeFile", { path: "/proc/version", dataBase64: b64("x") }),
    -32603,
    'Cannot write "/proc/version": ',
  );
  assert.ok((await Deno.readTextFile("/proc/version")).length > 0);
});

Deno.test("FsOps echoes a path whole up to the limit and elides its middle past it", async () => {
  await using f = await fixture();
  /** `${dir}/missing`, padded with `/.` to `length` characters (it resolves the same). */
  const padded = (length: number) => {
    const pad = length - `${f.dir}/missing`.length;
    return `${f.dir}${"/.".repeat(Math.floor(pad / 2))}${pad % 2 ? "/" : ""}/missing`;
  };
  const at = padded(MAX_SHOWN_PATH_CHARS);
  assert.equal(at.length, MAX_SHOWN_PATH_CHARS);
  await rpcFails(f.call("fs/readFile", { path: at }), -32004, `"${at}": it does not exist`);
  for (const length of [MAX_SHOWN_PATH_CHARS + 1, MAX_PATH_BYTES]) {
    const past = padded(length);
    assert.equal(past.length, length);
    await assert.rejects(f.call("fs/readFile", { path: past }), (error: RpcError) => {
      assert.equal(error.code, -32004);
      const shown = /^Cannot read "(.*)": it does not exist$/s.exec(error.message)?.[1];
      assert.equal(shown?.length, MAX_SHOWN_PATH_CHARS, error.message);
      assert.ok(shown.startsWith(past.slice(0, 100)) && shown.endsWith("/missing"), shown);
      assert.ok(shown.includes("\u2026"), shown);
      return true;
    });
  }
});

Deno.test("fs/join and fs/parent normalize the path as text, as Codex's AbsolutePathBuf does, and touch nothing", async () => {
  await using f = await fixture();
  const join = (basePath: unknown, path: unknown) => f.call("fs/join", { basePath, path });
  const parent = (path: unknown) => f.call("fs/parent", { path });
  const joins: [string, string, string][] = [
    ["/a", "b", "/a/b"],
    ["/a/", "b/c", "/a/b/c"],
    ["/", "b", "/b"],
    ["/a", "../b", "/b"],
    ["/a", "", "/a"],
    ["/a/./b", ".", "/a/b"],
    ["/", "../..", "/"],
    ["/a", "/etc//x/", "/etc/x"], // an absolute path replaces the base
    ["/missing/dir", "x", "/missing/dir/x"],
  ];
  for (const [base, path, joined] of joins) {
    assert.deepEqual(await join(base, path), { path: joined }, `${base} + ${path}`);
  }
  const parents: [string, string | null][] = [
    ["/a/b", "/a"],
    ["/a/b/", "/a"],
    ["/a/b/.", "/a"],
    ["/a/./b", "/a"],
    ["/a", "/"],
    ["/", null],
    ["//", null],
    ["/.", null],
    ["/a/..", null],
  ];
  for (const [path, up] of parents) assert.deepEqual(await parent(path), { path: up }, path);
  await rpcFails(join("a", "b"), -32602, "basePath", "absolute");
  await rpcFails(join("/a", 7), -32602, "path");
  await rpcFails(join("/a", undefined), -32602, "path", "required");
  await rpcFails(join("/a", "b\0"), -32602, "NUL");
  await rpcFails(join("/a", "\ud800"), -32602, "path");
  await rpcFails(parent("relative"), -32602, "absolute");
  // The system's 4,095 bytes bound them as every fs path.
  const longest = `/${"a".repeat(MAX_PATH_BYTES - 1)}`;
  assert.deepEqual(await parent(longest), { path: "/" });
  const half = "b".repeat(MAX_PATH_BYTES - 3); // "/a/" + it: exactly the limit
  assert.deepEqual(await join("/a", half), { path: `/a/${half}` });
  await rpcFails(join("/a", `${half}b`), -32602, "the result is longer", "4095 bytes");
  await rpcFails(join(longest, "b".repeat(MAX_PATH_BYTES)), -32602, "the result is longer");
  await rpcFails(parent(`${longest}b`), -32602, "path", "4095 bytes");
  await rpcFails(join(`${longest}b`, "c"), -32602, "basePath", "4095 bytes");
  await rpcFails(join("/", "b".repeat(MAX_PATH_BYTES + 1)), -32602, "path", "4095 bytes");
});

for (const level of LEVELS) {
  Deno.test({
    name:
      `a path that ends in "/" names a directory, as the system reads it (min confinement ${level})`,
    ignore: level === "os" && !OS_WORKS,
    async fn() {
      await using f = await fixture(undefined, level);
      await Deno.writeTextFile(`${f.dir}/a.txt`, "keep");
      await Deno.mkdir(`${f.dir}/d`);
      await Deno.symlink("a.txt", `${f.dir}/to_a`);
      const data = b64("x");
      const names = 'a path that ends in "/" names a directory';
      await rpcFails(
        f.call("fs/writeFile", { path: `${f.dir}/a.txt/`, dataBase64: data }),
        -32602,
        names,
      );
      await rpcFails(
        f.call("fs/writeFile", { path: `${f.dir}/new/`, dataBase64: data }),
        -32602,
        names,
      );
      await rpcFails(f.call("fs/readFile", { path: `${f.dir}/a.txt/` }), -32602, names);
      await rpcFails(
        f.call("fs/copy", { sourcePath: `${f.dir}/a.txt`, destinationPath: `${f.dir}/b.txt/` }),
        -32602,
        names,
      );
      const notDir = "not a directory";
      await rpcFails(f.call("fs/getMetadata", { path: `${f.dir}/a.txt/` }), -32004, notDir);
      await rpcFails(f.call("fs/getMetadata", { path: `${f.dir}/to_a/` }), -32004, notDir);
      await rpcFails(f.call("fs/canonicalize", { path: `${f.dir}/a.txt/` }), -32004, notDir);
      await rpcFails(f.call("fs/remove", { path: `${f.dir}/a.txt/` }), -32004, notDir);
      await rpcFails(f.call("fs/remove", { path: `${f.dir}/to_a/` }), -32004, notDir);
      assert.equal(await Deno.readTextFile(`${f.dir}/a.txt`), "keep", "untouched");
      assert.equal(await Deno.lstat(`${f.dir}/new`).catch(() => null), null, "nothing created");
      // A directory with its slash is fine.
      assert.equal((await f.call("fs/getMetadata", { path: `${f.dir}/d/` })).isDirectory, true);
      assert.deepEqual(await f.call("fs/canonicalize", { path: `${f.dir}/d/` }), {
        path: `${f.dir}/d`,
      });
      await f.call("fs/createDirectory", { path: `${f.dir}/e/` });
      await f.call("fs/remove", { path: `${f.dir}/d/` });
      assert.equal(await Deno.lstat(`${f.dir}/d`).catch(() => null), null);
      assert.equal((await Deno.stat(`${f.dir}/e`)).isDirectory, true);
    },
  });
}
