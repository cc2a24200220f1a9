import assert from "node:assert/strict";
import { underFlags } from "./_support/under_flags.ts";
import { SandboxDeniedError } from "../lib/errors.ts";
import {
  MAX_SHOWN_PATH_CHARS,
  type PermissionQuery,
  SandboxPolicy,
  shownPath,
} from "../lib/exec/sandbox_policy.ts";

/**
 * Deno permissions are the far side of this boundary: the oracle grants read
 * and write below `dir` only (as `--allow-read=DIR --allow-write=DIR` would)
 * and run for `sh`. The filesystem, links included, is real.
 */
function grantsOnly(dir: string): PermissionQuery {
  return (descriptor) => {
    if (descriptor.name === "run") {
      return Promise.resolve(descriptor.command === "sh" ? "granted" : "prompt");
    }
    if (descriptor.name === "read" || descriptor.name === "write") {
      const path = descriptor.path as string | undefined;
      if (path === undefined) return Promise.resolve("prompt"); // not the whole file system
      return Promise.resolve(path === dir || path.startsWith(dir + "/") ? "granted" : "prompt");
    }
    return Promise.resolve("prompt");
  };
}

async function fixture(): Promise<{ dir: string; policy: SandboxPolicy } & AsyncDisposable> {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_policy_" }));
  await Deno.mkdir(`${dir}/sub/deep`, { recursive: true });
  await Deno.writeTextFile(`${dir}/sub/file.txt`, "x");
  await Deno.symlink("/etc/passwd", `${dir}/to_passwd`);
  await Deno.symlink("/etc", `${dir}/to_etc`);
  await Deno.symlink("sub", `${dir}/to_sub`);
  await Deno.symlink(`${dir}-outside/new.txt`, `${dir}/dangling`);
  await Deno.symlink("loop_b", `${dir}/loop_a`);
  await Deno.symlink("loop_a", `${dir}/loop_b`);
  return {
    dir,
    policy: new SandboxPolicy({ query: grantsOnly(dir) }),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

async function denied(promise: Promise<unknown>, ...mentions: string[]): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof SandboxDeniedError, String(error));
    for (const word of mentions) {
      assert.ok(error.message.includes(word), `${error.message} should mention ${word}`);
    }
    return true;
  });
}

Deno.test("SandboxPolicy grants paths inside the granted directory and returns them resolved", async () => {
  await using f = await fixture();
  assert.equal(await f.policy.checkRead(`${f.dir}/sub/file.txt`), `${f.dir}/sub/file.txt`);
  assert.equal(await f.policy.checkRead(`${f.dir}/to_sub/file.txt`), `${f.dir}/sub/file.txt`);
  assert.equal(await f.policy.checkRead(`${f.dir}/sub/deep/../file.txt`), `${f.dir}/sub/file.txt`);
  assert.equal(await f.policy.checkWrite(`${f.dir}//sub/./new.txt`), `${f.dir}/sub/new.txt`);
  assert.equal(await f.policy.checkWrite(`${f.dir}/a/b/../c`), `${f.dir}/a/c`);
});

Deno.test("SandboxPolicy refuses absolute paths and .. escapes outside the grant", async () => {
  await using f = await fixture();
  await denied(
    f.policy.checkRead("/etc/passwd"),
    'Cannot read "/etc/passwd": read access is not granted',
  );
  await denied(f.policy.checkRead(`${f.dir}/../x`), "read access is not granted");
  await denied(f.policy.checkWrite(`${f.dir}/sub/../../x`), "write access is not granted");
  await denied(f.policy.checkWrite(`${f.dir}/missing/../../x`), "write access is not granted");
  await denied(f.policy.checkWrite("/"), "write");
});

Deno.test("SandboxPolicy follows symbolic links before checking", async () => {
  await using f = await fixture();
  await denied(f.policy.checkRead(`${f.dir}/to_passwd`), 'resolves to "/etc/passwd"');
  await denied(f.policy.checkRead(`${f.dir}/to_etc/hostname`), '"/etc/hostname"');
  await denied(f.policy.checkWrite(`${f.dir}/to_etc/new/deeper`), "/etc/new/deeper");
  // A dangling link would let a write create its target: the target is checked.
  await denied(f.policy.checkWrite(`${f.dir}/dangling`), `${f.dir}-outside/new.txt`);
  // Physical `..`: to_etc/.. is "/", not the granted directory.
  await denied(f.policy.checkRead(`${f.dir}/to_etc/../tmp`), '"/tmp"');
  // Removing or inspecting the link itself stays inside the grant.
  assert.equal(
    await f.policy.checkWrite(`${f.dir}/to_etc`, { followFinal: false }),
    `${f.dir}/to_etc`,
  );
  await denied(
    f.policy.checkWrite(`${f.dir}/to_etc/passwd`, { followFinal: false }),
    "/etc/passwd",
  );
});

Deno.test("SandboxPolicy reports a symbolic link loop", async () => {
  await using f = await fixture();
  await assert.rejects(f.policy.checkRead(`${f.dir}/loop_a`), Error);
  await assert.rejects(f.policy.checkWrite(`${f.dir}/loop_a/x`), Error);
});

Deno.test("SandboxPolicy write roots narrow the write permission", async () => {
  await using f = await fixture();
  const policy = new SandboxPolicy({ query: grantsOnly(f.dir), writeRoots: [`${f.dir}/sub`] });
  assert.equal(await policy.checkWrite(`${f.dir}/sub/x`), `${f.dir}/sub/x`);
  assert.equal(await policy.checkWrite(`${f.dir}/sub`), `${f.dir}/sub`);
  await denied(policy.checkWrite(`${f.dir}/x`), "outside the write roots");
  await denied(policy.checkWrite(`${f.dir}/subway`), "outside the write roots");
  assert.equal(await policy.checkRead(`${f.dir}/x`), `${f.dir}/x`);
  assert.throws(() => new SandboxPolicy({ writeRoots: ["relative"] }), TypeError);
});

Deno.test("SandboxPolicy takes a write root given through a symbolic link as where it leads", async () => {
  await using f = await fixture();
  // to_sub -> sub: a write under either spelling lands in sub, inside the root.
  const policy = new SandboxPolicy({ query: grantsOnly(f.dir), writeRoots: [`${f.dir}/to_sub`] });
  assert.equal(await policy.checkWrite(`${f.dir}/to_sub/new.txt`), `${f.dir}/sub/new.txt`);
  assert.equal(await policy.checkWrite(`${f.dir}/sub/new.txt`), `${f.dir}/sub/new.txt`);
  await denied(
    policy.checkWrite(`${f.dir}/new.txt`),
    `Cannot write "${f.dir}/new.txt": it is outside the write roots`,
  );
});

Deno.test("SandboxPolicy checks run access and refuses relative paths", async () => {
  await using f = await fixture();
  await f.policy.checkRun("sh");
  await denied(f.policy.checkRun("ls"), 'Cannot start "ls": run access is not granted');
  await assert.rejects(f.policy.checkRead("relative/path"), TypeError);
});

Deno.test("SandboxPolicy uses the real Deno permissions by default", async () => {
  // Under `deno test -A` everything is granted; the check must pass through.
  const policy = new SandboxPolicy();
  assert.equal(await policy.checkRead("/etc/../etc/hostname"), "/etc/hostname");
  await policy.checkRun("sh");
});

Deno.test("SandboxPolicy asks about a path only when the whole file system is not granted", async () => {
  // Deno keeps a status object per distinct descriptor for good, so a
  // question per path would grow the executor with every new path.
  for (const wholeGranted of [true, false]) {
    const asked: Deno.PermissionDescriptor[] = [];
    const policy = new SandboxPolicy({
      query: (descriptor) => {
        asked.push(descriptor);
        const whole = (descriptor as { path?: string }).path === undefined;
        return Promise.resolve(whole && !wholeGranted ? "prompt" : "granted");
      },
    });
    for (let i = 0; i < 100; i++) await policy.checkRead(`/no-such-dir-outpost/file-${i}`);
    await policy.checkWrite("/no-such-dir-outpost/new");
    const perPath = asked.filter((d) => (d as { path?: string }).path !== undefined).length;
    assert.equal(perPath, wholeGranted ? 0 : 101, `whole file system granted: ${wholeGranted}`);
  }
});

/**
 * Runs `checks` (expressions on `policy`, a default {@linkcode SandboxPolicy})
 * in a child Deno under the permission `flags`, so the real permissions
 * decide. Each outcome is "granted" (with `paths`, the path the check
 * returned) or the error's `name: message`.
 */
async function outcomesUnder(
  flags: string[],
  checks: string[],
  { paths = false } = {},
): Promise<string[]> {
  const policyModule = new URL("../lib/exec/sandbox_policy.ts", import.meta.url).href;
  return await underFlags(
    flags,
    `import { SandboxPolicy } from ${JSON.stringify(policyModule)};
const policy = new SandboxPolicy();
const outcome = async (check: () => Promise<unknown>) => {
  try { const path = await check(); return ${paths} ? String(path) : "granted"; } catch (e) { return \`\${(e as Error).name}: \${(e as Error).message}\`; }
};
const outcomes = [];
${checks.map((check) => `outcomes.push(await outcome(() => ${check}));`).join("\n")}
console.log(JSON.stringify(outcomes));`,
  ) as string[];
}

Deno.test("SandboxPolicy under a scoped grant (--allow-read=DIR) resolves a missing path below DIR, and refuses one whose existing part lies above it", async () => {
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_scoped_" }));
  // Deep, so that a search from the middle of the path starts above it.
  const dir = `${base}/p/q/r/s/t/u/v/granted`;
  try {
    await Deno.mkdir(`${dir}/a/b`, { recursive: true });
    await Deno.symlink("a", `${dir}/to_a`);
    const outcomes = await outcomesUnder([`--allow-read=${dir}`, `--allow-write=${dir}`], [
      // Missing below DIR: the prefixes above DIR are not Deno's to show, and
      // the search finds the deepest existing one below it.
      `policy.checkWrite(${JSON.stringify(`${dir}/to_a/b/m/x`)})`,
      `policy.checkRead(${JSON.stringify(`${dir}/gone/x`)})`,
      `policy.checkWrite(${JSON.stringify(`${dir}/to_a/${"m/".repeat(40)}x`)})`,
      `policy.checkRead(${JSON.stringify(`${dir}-sibling/x`)})`,
    ]);
    assert.deepEqual(outcomes.slice(0, 3), ["granted", "granted", "granted"]);
    assert.match(
      outcomes[3],
      /^SandboxDeniedError: Cannot read .*-sibling\/x": read access is not granted/,
    );
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test('SandboxPolicy resolves ".." after a link the way the system does, from where the link leads, under scoped grants too', async () => {
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_dotdot_" }));
  try {
    await Deno.mkdir(`${base}/real/sub`, { recursive: true });
    await Deno.writeTextFile(`${base}/real/x`, "inner");
    await Deno.writeTextFile(`${base}/x`, "outer");
    await Deno.symlink("real/sub", `${base}/link`);
    assert.equal(await Deno.readTextFile(`${base}/link/../x`), "inner", "what the system does");
    for (const flags of [["-A"], [`--allow-read=${base}`, `--allow-write=${base}`]]) {
      const outcomes = await outcomesUnder(flags, [
        `policy.checkRead(${JSON.stringify(`${base}/link/../x`)})`,
        `policy.checkWrite(${JSON.stringify(`${base}/link/../new/../y`)})`,
        `policy.checkWrite(${JSON.stringify(`${base}/real/../link/../z`)})`,
        // At "/" a ".." stays there; under a scoped grant that is not a refusal.
        `policy.checkRead(${JSON.stringify(`/../..${base}/x`)})`,
        // Above a scoped grant Deno will not look, and takes ".." as text itself.
        `policy.checkRead(${JSON.stringify(`/tmp/..${base}/x`)})`,
        // Past a missing name the system would stop (ENOENT); a ".." there
        // climbs back, and what follows is looked up again, links included.
        `policy.checkWrite(${JSON.stringify(`${base}/missing/../link/../w`)})`,
      ], { paths: true });
      assert.deepEqual(outcomes, [
        `${base}/real/x`,
        `${base}/real/y`,
        `${base}/real/z`,
        `${base}/x`,
        `${base}/x`,
        `${base}/real/w`,
      ], flags.join(" "));
    }
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test('SandboxPolicy looks up what follows a missing name and a "..": a link there to outside the grant is refused', async () => {
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_climb_" }));
  try {
    await Deno.mkdir(`${base}/granted`);
    await Deno.mkdir(`${base}/outside`);
    await Deno.writeTextFile(`${base}/outside/secret`, "s");
    await Deno.symlink(`${base}/outside`, `${base}/granted/out`);
    const flags = [`--allow-read=${base}/granted`, `--allow-write=${base}/granted`];
    const outcomes = await outcomesUnder(flags, [
      `policy.checkRead(${JSON.stringify(`${base}/granted/missing/../out/secret`)})`,
      `policy.checkWrite(${JSON.stringify(`${base}/granted/m/n/../../out/new`)})`,
    ]);
    assert.match(outcomes[0], /^SandboxDeniedError: .*resolves to ".*\/outside\/secret"/);
    assert.match(outcomes[1], /^SandboxDeniedError: .*resolves to ".*\/outside\/new"/);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test('SandboxPolicy walks on from the real path after a "..": a run of x/.. under a deep directory stays within the lookup budget', async () => {
  await using f = await fixture();
  const deep = f.dir + "/d".repeat(300);
  await Deno.mkdir(`${deep}/x`, { recursive: true });
  // Once resolved, the deep part is not resolved again for every "..": the
  // walk goes on from the real path.
  assert.equal(await f.policy.checkRead(`${deep}${"/x/..".repeat(100)}/x`), `${deep}/x`);
  // Past a link a realPath is charged its depth (about 300 here), so here
  // resolving the path again at every ".." would take some 30,000 lookups,
  // past the budget; the walk takes about 700. (The link's missing part
  // keeps the system from following it for us.)
  await Deno.symlink(`${deep}/missing/..`, `${f.dir}/via`);
  assert.equal(await f.policy.checkRead(`${f.dir}/via${"/x/..".repeat(100)}/x`), `${deep}/x`);
  // A new name in a directory 1,000 deep is fine (its parent is looked at first).
  const deeper = `${deep}${"/e".repeat(700)}`;
  await Deno.mkdir(deeper, { recursive: true });
  assert.equal(await f.policy.checkWrite(`${deeper}/new`), `${deeper}/new`);
  // Past a link a realPath counts the components it walks: a chain of links
  // through the deep directory is charged for its depth.
  for (let i = 0; i < 20; i++) await Deno.symlink(`${deep}/x/l${i + 1}`, `${deep}/x/l${i}`);
  await assert.rejects(
    f.policy.checkWrite(`${deep}/x/l0`),
    (e: Error) => e.message.includes("more than 4096 lookups"),
  );
});

Deno.test('SandboxPolicy takes a ".." as text where Deno will not look, anywhere in the walk, as Deno does', async () => {
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_text_dotdot_" }));
  try {
    await Deno.mkdir(`${base}/G`);
    await Deno.mkdir(`${base}/O`);
    await Deno.writeTextFile(`${base}/G/f`, "f");
    for (
      const flags of [
        [`--allow-read=${base}/G`, `--allow-write=${base}/G`],
        ["--allow-read", "--allow-write", `--deny-read=${base}/O`],
      ]
    ) {
      const outcomes = await outcomesUnder(flags, [
        `policy.checkRead(${JSON.stringify(`${base}/G/../O/../G/f`)})`,
      ], { paths: true });
      assert.deepEqual(outcomes, [`${base}/G/f`], flags.join(" "));
    }
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test('SandboxPolicy resolves with at most 4,096 lookups: a chain of dangling links through runs of "d/.." that takes exactly 4,096 resolves, one more is refused', async () => {
  await using f = await fixture();
  await Deno.mkdir(`${f.dir}/d`);
  // A dangling link is resolved part by part (a write would follow it). The
  // count: 3 for the path as written (the path, its parent, the link); then
  // for each of the 6 links, its "d" by realPath (charged the depth of
  // `dir/d`, as past a link), one lstat per further "d", and one for the name
  // it leads to. The "d"s make up the rest of the 4,096.
  const depth = f.dir.split("/").filter(Boolean).length + 1;
  const chain = async (detours: number) => {
    let left = detours;
    for (let i = 0; i < 6; i++) {
      const k = i < 5 ? Math.min(800, left - 1) : left;
      left -= k;
      const name = `${f.dir}/c${i}`;
      await Deno.remove(name).catch(() => {});
      await Deno.symlink(`${"d/../".repeat(k)}${i < 5 ? `c${i + 1}` : "nothing"}`, name);
    }
    return f.policy.checkWrite(`${f.dir}/c0`);
  };
  const atLimit = 4096 - 3 - 6 * depth;
  assert.equal(await chain(atLimit), `${f.dir}/nothing`);
  await assert.rejects(
    chain(atLimit + 1),
    (e: Error) =>
      (e as { code?: string }).code === "ELOOP" && e.message.includes("more than 4096 lookups"),
  );
});

Deno.test("SandboxPolicy under a global grant with a path denied (--deny-write=DIR --deny-read=DIR): refuses it, writes above it, and reads above it as Deno does", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_deny_" }));
  try {
    await Deno.mkdir(`${dir}/open`);
    await Deno.mkdir(`${dir}/secret`);
    const outcomes = await outcomesUnder([
      "--allow-read",
      "--allow-write",
      `--deny-write=${dir}/secret`,
      `--deny-read=${dir}/secret`,
    ], [
      `policy.checkWrite(${JSON.stringify(`${dir}/open/x`)})`,
      `policy.checkWrite(${JSON.stringify(`${dir}/secret/x`)})`,
      // Above the denied directory. A write there (a recursive remove, a copy
      // onto it) would reach inside, and an os-confined write runs where Deno
      // does not watch: refused, saying why (Deno itself would allow it).
      `policy.checkWrite(${JSON.stringify(dir)}, { action: "create directory" })`,
      // A read there is granted, as Deno grants it: the executor reads itself,
      // and Deno refuses what lies in the denied directory.
      `policy.checkRead(${JSON.stringify(dir)})`,
    ]);
    assert.deepEqual(outcomes, [
      "granted",
      `SandboxDeniedError: Cannot write "${dir}/secret/x": write access is not granted`,
      `SandboxDeniedError: Cannot create directory "${dir}": write access is denied to a path inside it`,
      "granted",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SandboxPolicy refuses a path denied as spelled through a symbolic link (--deny-write=DIR/link), as Deno does", async () => {
  // Deno matches a denied path as spelled: it refuses dir/link/x but not the
  // resolved dir/real/x, so the spelling as given must be asked about too.
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_deny_link_" }));
  try {
    await Deno.mkdir(`${dir}/real`);
    await Deno.writeTextFile(`${dir}/real/file`, "x");
    await Deno.symlink(`${dir}/real`, `${dir}/link`);
    const outcomes = await outcomesUnder([
      "--allow-read",
      "--allow-write",
      `--deny-write=${dir}/link`,
      `--deny-read=${dir}/link/file`,
    ], [
      // Deno itself, under the same flags.
      `Deno.writeTextFile(${JSON.stringify(`${dir}/link/new`)}, "")`,
      `Deno.lstat(${JSON.stringify(`${dir}/link/file`)})`,
      `policy.checkWrite(${JSON.stringify(`${dir}/link/new`)})`,
      `policy.checkWrite(${JSON.stringify(`${dir}/link/./sub/../new`)})`,
      `policy.checkWrite(${JSON.stringify(`${dir}/link/file`)}, { followFinal: false })`,
      // The same directory spelled without the link is not denied.
      `policy.checkWrite(${JSON.stringify(`${dir}/real/new`)})`,
      // Reading resolves through realPath, which Deno checks as spelled;
      // inspecting a path itself (no realPath of it) must not skip that.
      `policy.checkRead(${JSON.stringify(`${dir}/link/file`)})`,
      `policy.checkRead(${JSON.stringify(`${dir}/link/file`)}, { followFinal: false })`,
      `policy.checkRead(${JSON.stringify(`${dir}/real/file`)}, { followFinal: false })`,
    ]);
    const refused = (verb: string, path: string) =>
      `SandboxDeniedError: Cannot ${verb} "${path}": ${verb} access is not granted`;
    const [denoWrite, denoLstat, ...policy] = outcomes;
    assert.match(denoWrite, /^NotCapable: /);
    assert.match(denoLstat, /^NotCapable: /);
    assert.deepEqual(policy, [
      refused("write", `${dir}/link/new`),
      refused("write", `${dir}/link/./sub/../new`),
      refused("write", `${dir}/link/file`),
      "granted",
      refused("read", `${dir}/link/file`),
      refused("read", `${dir}/link/file`),
      "granted",
    ]);
    assert.equal(await Deno.readTextFile(`${dir}/real/file`), "x");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SandboxPolicy takes a path through a link into a granted directory, and refuses a read through a link above a denied path", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_spelled_" }));
  try {
    await Deno.mkdir(`${dir}/real`);
    await Deno.writeTextFile(`${dir}/real/file`, "secret");
    await Deno.symlink(`${dir}/real`, `${dir}/link`);
    // Scoped: write is granted on real/ only. Spelled through the link the path
    // is not granted, but not denied either: the write lands in real/.
    const scoped = await outcomesUnder(["--allow-read", `--allow-write=${dir}/real`], [
      `policy.checkWrite(${JSON.stringify(`${dir}/link/x`)})`,
    ]);
    assert.deepEqual(scoped, ["granted"]);
    // Denied as spelled through the link: reading the link itself (as a
    // recursive copy does) would reach link/file by its resolved path, which
    // the deny does not name. Through the real path Deno enforces the deny.
    const denied = await outcomesUnder([
      "--allow-read",
      "--allow-write",
      `--deny-read=${dir}/link/file`,
    ], [
      `policy.checkRead(${JSON.stringify(`${dir}/link`)})`,
      `policy.checkRead(${JSON.stringify(`${dir}/real`)})`,
    ]);
    assert.match(denied[0], /^SandboxDeniedError: .*read access is denied to a path inside it$/);
    assert.equal(denied[1], "granted");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SandboxPolicy shows a path whole up to the limit and elides its middle past it", async () => {
  await using f = await fixture();
  const limit = MAX_SHOWN_PATH_CHARS;
  assert.equal(shownPath("p".repeat(limit)), "p".repeat(limit));
  assert.equal(shownPath("p".repeat(limit + 1)).length, limit);
  /** `/etc/passwd` padded with `/.` to `length` characters (it resolves the same). */
  const padded = (length: number) => {
    const pad = length - "/etc/passwd".length;
    return `/etc${"/.".repeat(Math.floor(pad / 2))}${pad % 2 ? "/" : ""}/passwd`;
  };
  const resolves = '(it resolves to "/etc/passwd")';
  const at = padded(limit);
  assert.equal(at.length, limit);
  await denied(
    f.policy.checkRead(at),
    `Cannot read "${at}": read access is not granted ${resolves}`,
  );
  const writeRooted = new SandboxPolicy({
    query: () => Promise.resolve("granted"),
    writeRoots: [f.dir],
  });
  for (const length of [limit + 1, 4_095]) { // 4,095: the longest path taken at all
    const past = padded(length);
    const checks = [
      [() => f.policy.checkRead(past), "read access is not granted"],
      [() => writeRooted.checkWrite(past), "it is outside the write roots"],
    ] as const;
    for (const [check, why] of checks) {
      await assert.rejects(check(), (error: unknown) => {
        assert.ok(error instanceof SandboxDeniedError, String(error));
        const message = new RegExp(
          `^Cannot \\w+ "(.*)": ${why} \\(it resolves to "/etc/passwd"\\)$`,
          "s",
        );
        const shown = message.exec(error.message)?.[1];
        assert.equal(shown?.length, limit, error.message.slice(0, 1000));
        assert.ok(shown.startsWith("/etc/./.") && shown.endsWith("/passwd"), shown);
        assert.ok(shown.includes("\u2026"), shown);
        return true;
      });
    }
  }
});
