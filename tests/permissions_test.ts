/**
 * The executor's questions to Deno's permission system, asked in child Deno
 * processes run with the flags under test (the permission flags of this test
 * process are fixed by `deno test -A`).
 */

import assert from "node:assert/strict";
import { underFlags } from "./_support/under_flags.ts";

const CONFINEMENT = new URL("../lib/exec/confinement.ts", import.meta.url).href;

Deno.test("a deno program gets no whole permission the executor holds only in part (--allow-read --deny-read=DIR)", async () => {
  const secret = await Deno.makeTempDir({ prefix: "outpost_secret_" });
  try {
    const result = await underFlags(
      ["--allow-read", `--deny-read=${secret}`],
      `import { denoRunFlags } from ${JSON.stringify(CONFINEMENT)};
const asked = async (permissions: Record<string, unknown>) => {
  try { return (await denoRunFlags(permissions, "/tmp/m.ts")).filter((f) => f.startsWith("--allow")); }
  catch (e) { return (e as Error).name + ": " + (e as Error).message; }
};
console.log(JSON.stringify([await asked({ read: true }), await asked({ read: ["/etc"] })]));`,
    );
    assert.deepEqual(result, [
      'SandboxDeniedError: Cannot start Deno program "/tmp/m.ts": read access to everything is not granted to the executor',
      ["--allow-read=/etc"],
    ]);
  } finally {
    await Deno.remove(secret, { recursive: true });
  }
});

Deno.test("checking 5,000 distinct program names under a whole run grant does not grow the heap", async () => {
  // Deno keeps a status object per distinct descriptor queried, so asking
  // about each name would keep about 0.45 KB per name for good.
  const result = await underFlags(
    ["--allow-run", "--allow-read", "--allow-env", "--v8-flags=--expose-gc"],
    `import { resolveGrantedProgram } from ${JSON.stringify(CONFINEMENT)};
const gc = (globalThis as unknown as { gc: () => void }).gc;
const heap = () => { gc(); gc(); return Deno.memoryUsage().heapUsed; };
for (let i = 0; i < 100; i++) await resolveGrantedProgram("warm-" + i);
const before = heap();
let found = 0;
for (let i = 0; i < 5000; i++) if (await resolveGrantedProgram("no-such-program-outpost-" + i) !== null) found++;
console.log(JSON.stringify({ grownBytes: heap() - before, found }));`,
  ) as { grownBytes: number; found: number };
  // An unscoped grant allows any name; these are resolved as given.
  assert.equal(result.found, 5000);
  // Measured when the test was written (Deno 2.9.6): about 0.19 MB with the
  // whole grant asked first, 2.3 MB without.
  assert.ok(result.grownBytes < 1024 * 1024, `heap grew ${result.grownBytes} bytes`);
});

Deno.test("a write root with a path denied inside it is not bound writable, and the CLI's check says why", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_root_" }));
  const whole = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_root_" }));
  try {
    await Deno.mkdir(`${root}/secret`);
    const result = await underFlags(
      ["--allow-read", "--allow-write", `--deny-write=${root}/secret`],
      `import { grantedWriteRoots, writeRootProblem } from ${JSON.stringify(CONFINEMENT)};
console.log(JSON.stringify([
  await grantedWriteRoots([${JSON.stringify(root)}, ${JSON.stringify(whole)}]),
  await writeRootProblem(${JSON.stringify(root)}),
]));`,
    );
    assert.deepEqual(result, [
      [whole],
      "write access to part of it is denied (--deny-write), and a sandbox can only make a whole root writable",
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
    await Deno.remove(whole, { recursive: true });
  }
});

/** Module code defining `asked(permissions, cwd?)`: the `--allow` flags denoRunFlags builds, or its refusal. */
const ASKED = `import { denoRunFlags } from ${JSON.stringify(CONFINEMENT)};
const asked = async (permissions: Record<string, unknown>, cwd?: string) => {
  try { return (await denoRunFlags(permissions, "/tmp/m.ts", cwd)).filter((f) => f.startsWith("--allow")); }
  catch (e) { return (e as Error).name + ": " + (e as Error).message; }
};
`;

/** Writes an executable shell script at `path`. */
async function writeProgram(path: string, text = "#!/bin/sh\necho planted\n"): Promise<void> {
  await Deno.writeTextFile(path, text);
  await Deno.chmod(path, 0o755);
}

Deno.test("under a whole run grant with a program denied, names resolve to existing files (-A --deny-run=curl)", async () => {
  // First on PATH: a directory without sh (Deno grants any path there but curl's).
  const empty = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_path_" }));
  try {
    const result = await underFlags(
      ["-A", "--deny-run=curl"],
      `import { resolveGrantedProgram } from ${JSON.stringify(CONFINEMENT)};
Deno.env.set("PATH", ${JSON.stringify(`${empty}:`)} + Deno.env.get("PATH"));
const sh = await resolveGrantedProgram("sh");
let shIsFile = false;
try { shIsFile = sh !== null && Deno.statSync(sh).isFile; } catch { /* missing */ }
console.log(JSON.stringify({ sh, shIsFile, curl: await resolveGrantedProgram("curl") }));`,
    ) as { sh: string; shIsFile: boolean; curl: string | null };
    assert.ok(result.shIsFile, `sh resolved to ${result.sh}`);
    assert.equal(result.curl, null);
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("under a whole net grant with a host denied, a deno program gets only single IP:port values (--allow-net --deny-net=127.0.0.2)", async () => {
  const values = [
    "127.0.0.0/8",
    "127.0.0.2",
    "127.0.0.2:80",
    "127.0.0.3",
    "localhost:8080",
    "0177.0.0.2:80",
    "127.0.0.3:8080",
    "[::1]:8080",
    "0.0.0.0:8080",
    "[::]:8080",
    "[::ffff:0.0.0.0]:8080",
    "[::ffff:0:0]:8080",
  ];
  const body = `${ASKED}
const values = ${JSON.stringify(values)};
console.log(JSON.stringify(await Promise.all(values.map(async (v) => [v, await asked({ net: [v] })]))));`;
  const partial = Object.fromEntries(
    await underFlags(["--allow-read", "--allow-net", "--deny-net=127.0.0.2"], body) as [
      string,
      unknown,
    ][],
  );
  const refused = (v: string) =>
    `SandboxDeniedError: Cannot start Deno program "/tmp/m.ts": net access to "${v}" is not granted to the executor`;
  assert.deepEqual(partial, {
    // A range holding the denied host, a host on every port, a name Deno checks by address on use.
    "127.0.0.0/8": refused("127.0.0.0/8"),
    "127.0.0.2": refused("127.0.0.2"),
    "127.0.0.2:80": refused("127.0.0.2:80"),
    "127.0.0.3": refused("127.0.0.3"),
    "localhost:8080": refused("localhost:8080"),
    // getaddrinfo reads it as 127.0.0.2; Deno as a host name.
    "0177.0.0.2:80": refused("0177.0.0.2:80"),
    "127.0.0.3:8080": ["--allow-net=127.0.0.3:8080"],
    "[::1]:8080": ["--allow-net=[::1]:8080"],
    // Connecting to the unspecified address reaches this host's loopback.
    "0.0.0.0:8080": refused("0.0.0.0:8080"),
    "[::]:8080": refused("[::]:8080"),
    // IPv4-mapped: the same addresses in IPv6 spelling.
    "[::ffff:0.0.0.0]:8080": refused("[::ffff:0.0.0.0]:8080"),
    "[::ffff:0:0]:8080": refused("[::ffff:0:0]:8080"),
  });
  // A whole grant covers every value.
  const whole = Object.fromEntries(
    await underFlags(["--allow-read", "--allow-net"], body) as [string, unknown][],
  );
  assert.deepEqual(whole["127.0.0.0/8"], ["--allow-net=127.0.0.0/8"]);
  assert.deepEqual(whole["localhost:8080"], ["--allow-net=localhost:8080"]);
});

Deno.test("a deno program's relative run value is checked in the request's cwd and passed absolute", async () => {
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_run_" }));
  try {
    await Deno.mkdir(`${base}/bin`);
    await Deno.mkdir(`${base}/a/bin`, { recursive: true });
    await writeProgram(`${base}/bin/tool`);
    await writeProgram(`${base}/a/bin/tool`);
    // The executor runs in base, where bin/tool is granted.
    const result = await underFlags(
      ["--allow-read", `--allow-run=${base}/bin/tool`],
      `${ASKED}
console.log(JSON.stringify([
  await asked({ run: ["bin/tool"] }, ${JSON.stringify(`${base}/a`)}),
  await asked({ run: ["bin/tool"] }, ${JSON.stringify(base)}),
]));`,
      base,
    );
    assert.deepEqual(result, [
      'SandboxDeniedError: Cannot start Deno program "/tmp/m.ts": run access to "bin/tool" is not granted to the executor',
      [`--allow-run=${base}/bin/tool`],
    ]);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("a deno program's run name is passed as the path the executor's PATH gives (--allow-run=true)", async () => {
  let expected: string | undefined;
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir.startsWith("/")) continue;
    try {
      if (Deno.statSync(`${dir}/true`).isFile) {
        expected = `${dir}/true`;
        break;
      }
    } catch { /* not here */ }
  }
  assert.ok(expected, "no true on PATH");
  const result = await underFlags(
    ["--allow-read", "--allow-env", "--allow-run=true"],
    `${ASKED}
console.log(JSON.stringify([await asked({ run: ["true"] }), await asked({ run: ["no-such-program-outpost"] })]));`,
  );
  assert.deepEqual(result, [
    [`--allow-run=${expected}`],
    'SandboxDeniedError: Cannot start Deno program "/tmp/m.ts": run access to "no-such-program-outpost" is not granted to the executor',
  ]);
});

Deno.test("a write root given through a link is not bound writable when a path under the link is denied", async () => {
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_root_" }));
  try {
    await Deno.mkdir(`${base}/w/x`, { recursive: true });
    await Deno.symlink(`${base}/w`, `${base}/wlink`);
    const result = await underFlags(
      ["-A", `--deny-write=${base}/wlink/x`],
      `import { grantedWriteRoots, writeRootProblem } from ${JSON.stringify(CONFINEMENT)};
const link = ${JSON.stringify(`${base}/wlink`)};
console.log(JSON.stringify([await grantedWriteRoots([link]), await writeRootProblem(link)]));`,
    );
    assert.deepEqual(result, [
      [],
      `write access to it as written is not wholly granted (it resolves to ${base}/w); give --write-root ${base}/w, or grant --allow-write=${base}/wlink`,
    ]);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("under a whole run grant a deno program's run name stays as asked, for its own PATH to find (-A)", async () => {
  // Pinning guards nothing when the executor may run anything, and a pinned
  // /usr/bin/sh would refuse the child's PATH finding /bin/sh.
  const result = await underFlags(
    ["-A"],
    `${ASKED}
console.log(JSON.stringify(await asked({ run: ["sh", "bin/tool"] }, "/tmp")));`,
  );
  assert.deepEqual(result, ["--allow-run=sh,bin/tool"]);
});

Deno.test("a write root given through a link is bound only when granted as written too, and the refusal names the fix", async () => {
  // Under a scoped grant Deno answers "prompt" for a path it does not cover,
  // so it cannot say whether a deny is spelled below the link.
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_root_" }));
  try {
    await Deno.mkdir(`${base}/real`);
    await Deno.symlink(`${base}/real`, `${base}/link`);
    const body = `import { grantedWriteRoots, writeRootProblem } from ${
      JSON.stringify(CONFINEMENT)
    };
const link = ${JSON.stringify(`${base}/link`)};
console.log(JSON.stringify([await grantedWriteRoots([link]), await writeRootProblem(link)]));`;
    assert.deepEqual(
      await underFlags(["--allow-read", `--allow-write=${base}/real`], body),
      [
        [],
        `write access to it as written is not wholly granted (it resolves to ${base}/real); give --write-root ${base}/real, or grant --allow-write=${base}/link`,
      ],
    );
    assert.deepEqual(
      await underFlags(["--allow-read", `--allow-write=${base}/real,${base}/link`], body),
      [[`${base}/real`], null],
    );
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("a deno program run by an executor with a scoped run grant cannot be redirected by the request's PATH", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_pin_" }));
  try {
    await Deno.mkdir(`${dir}/bin`);
    await writeProgram(`${dir}/bin/true`);
    await Deno.writeTextFile(
      `${dir}/child.ts`,
      `try {
  const out = new Deno.Command("true", { stdout: "piped" }).outputSync();
  console.log("ran:" + new TextDecoder().decode(out.stdout).trim());
} catch (error) {
  console.log("refused:" + error.name);
}`,
    );
    const table = new URL("../lib/exec/process_table.ts", import.meta.url).href;
    const helpers = new URL("./_process_helpers.ts", import.meta.url).href;
    const result = await underFlags(
      // What a process start needs, and run granted for `true` only.
      [
        "--allow-read",
        "--allow-write=/tmp",
        "--allow-env",
        "--allow-sys",
        `--allow-run=deno,${Deno.execPath()},true,setsid,kill,sh`,
      ],
      `import { ProcessTable } from ${JSON.stringify(table)};
import { collect } from ${JSON.stringify(helpers)};
await using table = new ProcessTable();
await table.start({
  processId: "d",
  confinement: "deno",
  argv: [${JSON.stringify(`${dir}/child.ts`)}],
  denoPermissions: { run: ["true"] },
  env: { PATH: ${JSON.stringify(`${dir}/bin:/usr/bin:/bin`)} },
  inheritEnv: false,
});
const { text } = await collect(table, "d", { ms: 30_000 });
console.log(JSON.stringify(text.stdout));`,
    );
    // The child may run only the executor's own `true`; the planted one, first
    // on the request's PATH, is refused.
    assert.equal(result, "refused:NotCapable\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a deno program's read value through a link is checked where it leads (--deny-read=DIR/x, value DIR/lnx -> x)", async () => {
  const base = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_denolink_" }));
  try {
    await Deno.mkdir(`${base}/x`);
    await Deno.mkdir(`${base}/y`);
    await Deno.symlink(`${base}/x`, `${base}/lnx`);
    await Deno.symlink(`${base}/y`, `${base}/lny`);
    const result = await underFlags(
      ["--allow-read", "--allow-env", `--deny-read=${base}/x`],
      `${ASKED}
console.log(JSON.stringify([
  await asked({ read: [${JSON.stringify(`${base}/lnx`)}] }),
  await asked({ read: [${JSON.stringify(`${base}/lny`)}] }),
]));`,
    );
    assert.deepEqual(result, [
      `SandboxDeniedError: Cannot start Deno program "/tmp/m.ts": read access to "${base}/lnx" is not granted to the executor`,
      [`--allow-read=${base}/lny`],
    ]);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("a child inherits only the allowlisted variables Deno grants the executor: whole, partly denied, or scoped", async () => {
  const CHILD_ENV = new URL("../lib/exec/child_env.ts", import.meta.url).href;
  const body = `import { buildChildEnv } from ${JSON.stringify(CHILD_ENV)};
console.log(JSON.stringify(Object.keys(buildChildEnv({}, { allowlist: ["OUTPOST_T_A", "OUTPOST_T_B", "OUTPOST_T_C"] })).sort()));`;
  const env = { OUTPOST_T_A: "a", OUTPOST_T_B: "b", OUTPOST_T_C: "c" };
  const run = (flags: string[]) => {
    for (const [name, value] of Object.entries(env)) Deno.env.set(name, value);
    return underFlags(flags, body);
  };
  try {
    assert.deepEqual(await run(["--allow-env"]), ["OUTPOST_T_A", "OUTPOST_T_B", "OUTPOST_T_C"]);
    assert.deepEqual(await run(["--allow-env", "--deny-env=OUTPOST_T_B"]), [
      "OUTPOST_T_A",
      "OUTPOST_T_C",
    ]);
    assert.deepEqual(await run(["--allow-env=OUTPOST_T_C"]), ["OUTPOST_T_C"]);
  } finally {
    for (const name of Object.keys(env)) Deno.env.delete(name);
  }
});
