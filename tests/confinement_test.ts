import assert from "node:assert/strict";
import { SandboxDeniedError } from "../lib/errors.ts";
import {
  bwrapArgs,
  denoRunFlags,
  detectCapabilities,
  grantedWriteRoots,
  hiddenInSandbox,
  MAX_DENO_PERMISSION_VALUES,
  resolveGrantedProgram,
  writeRootProblem,
} from "../lib/exec/confinement.ts";
import { type DenoPermissions, ProcessTable } from "../lib/exec/process_table.ts";
import {
  assertNoneLeft,
  collect,
  readUntil,
  runProcessFixture,
  uniqueSleep,
  waitForPids,
  withDeadline,
} from "./_process_helpers.ts";

const CHILD_MODULE = `
for (const path of Deno.args) {
  try {
    Deno.readTextFileSync(path);
    console.log("ok:" + path);
  } catch (error) {
    console.log("denied:" + path + ":" + error.name);
  }
}
`;

/** bubblewrap works here: the tests that need it are reported ignored otherwise. */
const OS_WORKS = (await detectCapabilities()).confinements.includes("os");

async function tempDirs(): Promise<
  { root: string; outside: string; cleanup: () => Promise<void> }
> {
  const root = await Deno.makeTempDir({ prefix: "outpost_root_" });
  // Outside /tmp, so the sandbox sees it (read-only) instead of its private /tmp.
  const outside = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "outpost_outside_" });
  return {
    root,
    outside,
    cleanup: async () => {
      await Deno.remove(root, { recursive: true });
      await Deno.remove(outside, { recursive: true });
    },
  };
}

Deno.test("detectCapabilities reports what works on this machine", async () => {
  const caps = await detectCapabilities();
  assert.deepEqual(caps.confinements, ["none", "deno", "os"]);
  assert.equal(caps.treeKill, true);
  assert.equal(caps.tty, true);
  assert.equal(caps.resize, true);
  await using table = new ProcessTable();
  assert.deepEqual(await table.capabilities(), caps);
});

Deno.test("os confinement makes everything but the write roots read-only", async () => {
  const dirs = await tempDirs();
  try {
    await using table = new ProcessTable({
      writeRoots: [dirs.root, "/does/not/exist", "relative"],
    });
    await table.start({
      processId: "w",
      confinement: "os",
      cwd: dirs.root,
      argv: [
        "sh",
        "-c",
        `echo in > ${dirs.root}/inside && echo wrote-inside
         echo out > ${dirs.outside}/outside || echo refused-outside
         echo etc > /etc/outpost-test || echo refused-etc
         echo tmp > /tmp/private && echo wrote-private-tmp
         pwd`,
      ],
    });
    const { text, last } = await collect(table, "w");
    assert.match(text.stdout, /wrote-inside/);
    assert.match(text.stdout, /refused-outside/);
    assert.match(text.stdout, /refused-etc/);
    assert.match(text.stdout, /wrote-private-tmp/);
    assert.match(text.stdout, new RegExp(`^${dirs.root}$`, "m"));
    assert.match(text.stderr, /Read-only file system/);
    assert.equal(last.exitCode, 0);
    assert.equal(await Deno.readTextFile(`${dirs.root}/inside`), "in\n");
    await assert.rejects(Deno.stat(`${dirs.outside}/outside`), Deno.errors.NotFound);
    await assert.rejects(Deno.stat("/tmp/private"), Deno.errors.NotFound);
  } finally {
    await dirs.cleanup();
  }
});

Deno.test({
  name: "os confinement shows the executor's working directory under /tmp, read-only",
  ignore: !OS_WORKS,
  fn: async () => {
    // Under /tmp, where the sandbox mounts a private tmpfs.
    const dir = await Deno.realPath(
      await Deno.makeTempDir({ dir: "/tmp", prefix: "outpost_cwd_" }),
    );
    try {
      await Deno.writeTextFile(`${dir}/data.txt`, "visible");
      await Deno.mkdir(`${dir}/sub`);
      await using table = new ProcessTable({ cwd: dir });
      const script = (target: string) =>
        `pwd; cat ${dir}/data.txt; echo; echo x > ${target} && echo wrote || echo refused`;
      // No cwd in the request: the table's own.
      await table.start({ processId: "own", confinement: "os", argv: ["sh", "-c", script("new")] });
      const own = await collect(table, "own");
      assert.equal(own.text.stdout, `${dir}\nvisible\nrefused\n`, own.text.stderr);
      assert.match(own.text.stderr ?? "", /Read-only file system/);
      // Below it, and elsewhere ("/"): still visible, still read-only.
      for (const cwd of [`${dir}/sub`, "/"]) {
        await table.start({
          processId: cwd,
          confinement: "os",
          cwd,
          argv: ["sh", "-c", script(`${dir}/new`)],
        });
        assert.equal((await collect(table, cwd)).text.stdout, `${cwd}\nvisible\nrefused\n`);
      }
      await assert.rejects(Deno.stat(`${dir}/new`), Deno.errors.NotFound);
      await assert.rejects(Deno.stat(`${dir}/sub/new`), Deno.errors.NotFound);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "os confinement keeps a write root inside or around the working directory writable",
  ignore: !OS_WORKS,
  fn: async () => {
    const dir = await Deno.realPath(
      await Deno.makeTempDir({ dir: "/tmp", prefix: "outpost_cwd_" }),
    );
    try {
      await Deno.mkdir(`${dir}/w`);
      const script =
        `pwd; echo x > ${dir}/w/in && echo wrote-root; echo x > ${dir}/out && echo wrote-dir`;
      {
        // The write root lies inside the read-only working directory: it is bound after it.
        await using table = new ProcessTable({ cwd: dir, writeRoots: [`${dir}/w`] });
        await table.start({ processId: "inside", confinement: "os", argv: ["sh", "-c", script] });
        const { text } = await collect(table, "inside");
        assert.equal(text.stdout, `${dir}\nwrote-root\n`, text.stderr);
        assert.equal(await Deno.readTextFile(`${dir}/w/in`), "x\n");
        await assert.rejects(Deno.stat(`${dir}/out`), Deno.errors.NotFound);
      }
      {
        // The working directory is a write root: writable, as bound.
        await using table = new ProcessTable({ cwd: dir, writeRoots: [dir] });
        await table.start({ processId: "root", confinement: "os", argv: ["sh", "-c", script] });
        const { text } = await collect(table, "root");
        assert.equal(text.stdout, `${dir}\nwrote-root\nwrote-dir\n`, text.stderr);
        assert.equal(await Deno.readTextFile(`${dir}/out`), "x\n");
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "os confinement refuses a request cwd hidden by its private /tmp, and a missing one as none does",
  ignore: !OS_WORKS,
  fn: async () => {
    const own = await Deno.realPath(
      await Deno.makeTempDir({ dir: "/tmp", prefix: "outpost_cwd_" }),
    );
    // Another directory under /tmp with a Unix socket in it (like tmux's or ssh-agent's):
    // binding it, even read-only, would let the program connect to that socket.
    const other = await Deno.realPath(
      await Deno.makeTempDir({ dir: "/tmp", prefix: "outpost_other_" }),
    );
    try {
      using _service = Deno.listen({ transport: "unix", path: `${other}/agent.sock` });
      await Deno.symlink(other, `${own}/link`);
      await using table = new ProcessTable({ cwd: own });
      await assert.rejects(
        table.start({ processId: "o", confinement: "os", cwd: other, argv: ["true"] }),
        (e: Error) =>
          e instanceof SandboxDeniedError &&
          e.message ===
            `Cannot start "true": cwd "${other}" lies under the private /tmp of "os" confinement; use a directory outside it, inside a write root, or inside the executor's working directory`,
      );
      // A symlink inside the shown directory does not lead out of it.
      await assert.rejects(
        table.start({ processId: "l", confinement: "os", cwd: `${own}/link`, argv: ["true"] }),
        (e: Error) =>
          e instanceof SandboxDeniedError &&
          e.message.includes(`cwd "${own}/link" (it resolves to "${other}") lies under`),
      );
      // The sandbox's /dev is fresh too: a directory under the host's /dev/shm is not there.
      const shm = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "outpost_cwd_" })
        .catch(() => own); // no /dev/shm here: the /tmp case above covers the rule
      if (shm !== own) {
        try {
          await assert.rejects(
            table.start({ processId: "s", confinement: "os", cwd: shm, argv: ["true"] }),
            (e: Error) =>
              e instanceof SandboxDeniedError &&
              e.message.includes(`cwd "${shm}" lies under the private /dev of "os" confinement`),
          );
        } finally {
          await Deno.remove(shm, { recursive: true });
        }
      }
      const missing = `${own}/missing`;
      const none = await table.start({
        processId: "n",
        confinement: "none",
        cwd: missing,
        argv: ["true"],
      })
        .then(() => "started", (e: Error) => e.message);
      assert.equal(none, 'Cannot start "true": program or working directory not found');
      await assert.rejects(
        table.start({ processId: "m", confinement: "os", cwd: missing, argv: ["true"] }),
        (e: Error) => e.message === none,
      );
    } finally {
      await Deno.remove(own, { recursive: true });
      await Deno.remove(other, { recursive: true });
    }
  },
});

Deno.test({
  name: "os confinement keeps the kernel's settings read-only, also for a program running as root",
  ignore: !OS_WORKS || Deno.uid() !== 0,
  async fn() {
    await using table = new ProcessTable();
    // `test -w` asks without writing: as uid 0 without capabilities the
    // owner's write bit grants it, unless the mount is read-only.
    const files = [
      "/proc/sys/kernel/core_pattern",
      "/proc/sys/kernel/printk",
      "/proc/sys/vm/overcommit_memory",
    ];
    await table.start({
      processId: "sys",
      confinement: "os",
      argv: [
        "sh",
        "-c",
        'for f in "$@"; do test -w "$f" && echo "writable:$f" || echo "read-only:$f"; done',
        "sh",
        ...files,
      ],
    });
    const { text, last } = await collect(table, "sys");
    assert.equal(last.exitCode, 0);
    assert.deepEqual(text.stdout.trim().split("\n"), files.map((file) => `read-only:${file}`));
  },
});

Deno.test("os confinement has no network unless the operator allows it", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const script =
    `exec 3<>/dev/tcp/127.0.0.1/${listener.addr.port} && echo connected || echo unreachable`;
  // A system service's Unix socket, where services keep them (/var/run links to /run).
  const socketPath = `/run/outpost-test-${crypto.randomUUID()}.sock`;
  using _service = Deno.listen({ transport: "unix", path: socketPath });
  const probe = (path: string) => `test -S ${path} && echo socket-visible || echo socket-hidden`;
  const run = async (table: ProcessTable, processId: string, command: string) => {
    await table.start({ processId, confinement: "os", argv: ["bash", "-c", command] });
    return (await collect(table, processId)).text.stdout;
  };
  try {
    {
      await using table = new ProcessTable();
      assert.match(await run(table, "n", script), /unreachable/);
      assert.match(await run(table, "s", probe(socketPath)), /socket-hidden/);
      assert.match(
        await run(table, "vs", probe(socketPath.replace("/run/", "/var/run/"))),
        /socket-hidden/,
      );
      await table.start({ processId: "ifaces", confinement: "os", argv: ["cat", "/proc/net/dev"] });
      const ifaces = (await collect(table, "ifaces")).text.stdout;
      assert.deepEqual(
        ifaces.split("\n").slice(2).filter(Boolean).map((line) => line.trim().split(":")[0]),
        ["lo"],
      );
    }
    {
      await using table = new ProcessTable({ allowNetwork: true });
      const accepted = listener.accept();
      const connected = run(table, "n", script);
      const conn = await withDeadline(accepted, 5_000, "accept");
      conn.close();
      assert.match(await connected, /connected/);
      assert.match(await run(table, "s", probe(socketPath)), /socket-visible/);
    }
  } finally {
    await Deno.remove(socketPath).catch(() => {});
  }
});

Deno.test("os confinement cannot see or signal host processes", async () => {
  await using table = new ProcessTable();
  await table.start({
    processId: "ps",
    confinement: "os",
    argv: [
      "sh",
      "-c",
      `ls /proc | grep -c '^[0-9]'; kill -0 ${Deno.pid} 2>/dev/null && echo visible || echo invisible`,
    ],
  });
  const { text } = await collect(table, "ps");
  const [count, visibility] = text.stdout.trim().split("\n");
  assert.ok(Number(count) <= 5, `sandbox sees ${count} processes`);
  assert.equal(visibility, "invisible");
});

Deno.test("os confinement kills even descendants that left the process group", async () => {
  const token = uniqueSleep();
  await using table = new ProcessTable({ killGraceMs: 300 });
  await table.start({
    processId: "escape",
    confinement: "os",
    argv: ["sh", "-c", `setsid sleep ${token} & sleep ${token} & echo ready; wait`],
  });
  await readUntil(table, "escape", "ready");
  await waitForPids(`sleep ${token}`, 2);
  assert.equal(await table.terminate("escape"), true);
  await collect(table, "escape");
  await assertNoneLeft(`sleep ${token}`);
});

Deno.test("os confinement works with a terminal and arg0", async () => {
  await using table = new ProcessTable();
  await table.start({
    processId: "t",
    confinement: "os",
    tty: true,
    argv: ["sh", "-c", "test -t 1 && echo tty-in-sandbox; ls /proc | grep -c '^[0-9]'"],
  });
  const { text } = await collect(table, "t");
  assert.match(text.pty, /tty-in-sandbox/);
  await table.start({
    processId: "a",
    confinement: "os",
    arg0: "renamed",
    argv: ["sh", "-c", 'tr "\\0" " " < /proc/$$/cmdline'],
  });
  assert.match((await collect(table, "a")).text.stdout, /^renamed -c /);
});

Deno.test("minConfinement upgrades default requests and refuses weaker ones", async () => {
  await using table = new ProcessTable({ minConfinement: "os" });
  await table.start({ processId: "d", argv: ["sh", "-c", "ls /proc | grep -c '^[0-9]'"] });
  assert.ok(Number((await collect(table, "d")).text.stdout) <= 5, "ran inside bubblewrap");
  await assert.rejects(
    table.start({ processId: "n", argv: ["sh"], confinement: "none" }),
    (e: Error) =>
      e instanceof SandboxDeniedError &&
      e.message ===
        'Cannot start "sh" (process "n"): the executor requires "os" confinement, and the request asks for "none"',
  );
  // A Deno program is held to what os allows: no write, run, ffi, or (without
  // the operator's network) net; reading is as open as os's read-only /.
  const weaker: [DenoPermissions, string][] = [
    [{ run: ["sh"] }, "run"],
    [{ write: ["/var/tmp"] }, "write"],
    [{ write: true, read: true }, "write"],
    [{ net: ["127.0.0.1"] }, "net"],
    [{ ffi: true, net: true }, "ffi, net"],
  ];
  for (const [denoPermissions, named] of weaker) {
    await assert.rejects(
      table.start({ processId: "r", argv: ["/x.ts"], confinement: "deno", denoPermissions }),
      (e: Error) =>
        e instanceof SandboxDeniedError &&
        e.message ===
          `Cannot start "/x.ts" (process "r"): the executor requires "os" confinement, and a "deno" program with ${named} access is weaker (use "os")`,
      JSON.stringify(denoPermissions),
    );
  }
  // Outside /tmp, which the sandbox replaces with its own.
  const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "outpost_minos_" });
  const hidden = await Deno.makeTempFile({ prefix: "outpost_hidden_" }); // in the host's /tmp
  try {
    await Deno.writeTextFile(`${dir}/child.ts`, CHILD_MODULE);
    // At the rule: reads are accepted and run, inside bubblewrap, so even a
    // whole read grant does not reach the host's /tmp.
    await table.start({
      processId: "ok",
      argv: [`${dir}/child.ts`, `${dir}/child.ts`, hidden],
      confinement: "deno",
      denoPermissions: { read: true, net: false },
    });
    assert.equal(
      (await collect(table, "ok")).text.stdout,
      `ok:${dir}/child.ts\ndenied:${hidden}:NotFound\n`,
    );
    await using networked = new ProcessTable({ minConfinement: "os", allowNetwork: true });
    await networked.start({
      processId: "net",
      argv: [`${dir}/child.ts`],
      confinement: "deno",
      denoPermissions: { net: ["127.0.0.1"] },
    });
    assert.equal((await collect(networked, "net")).last.exitCode, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(hidden);
  }
  await using denoOnly = new ProcessTable({ minConfinement: "deno" });
  await assert.rejects(denoOnly.start({ processId: "x", argv: ["sh"] }), SandboxDeniedError);
  assert.throws(() => new ProcessTable({ minConfinement: "strict" as "os" }), TypeError);
});

Deno.test("deno confinement runs a module with exactly the asked permissions", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/child.ts`, CHILD_MODULE);
    await Deno.writeTextFile(`${dir}/data.txt`, "data");
    await using table = new ProcessTable();
    await table.start({
      processId: "d",
      confinement: "deno",
      argv: [`${dir}/child.ts`, `${dir}/data.txt`, "/etc/hostname"],
      denoPermissions: { read: [dir] },
      cwd: dir,
    });
    const { text, last } = await collect(table, "d", { ms: 30_000 });
    assert.match(text.stdout, new RegExp(`ok:${dir}/data.txt`));
    assert.match(text.stdout, /denied:\/etc\/hostname:NotCapable/);
    assert.equal(last.exitCode, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno confinement refuses env that configures the Deno runtime of the program", async () => {
  const dir = await Deno.makeTempDir();
  // Outside /tmp and outside any grant: where DENO_COVERAGE_DIR would write.
  const coverage = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "outpost_cov_" });
  try {
    await Deno.writeTextFile(`${dir}/child.ts`, 'console.log(Deno.env.get("GREETING"));');
    await using table = new ProcessTable();
    const start = (processId: string, env: Record<string, string>) =>
      table.start({
        processId,
        confinement: "deno",
        argv: [`${dir}/child.ts`],
        denoPermissions: { env: ["GREETING"] },
        env,
      });
    const refused = [
      "DENO_COVERAGE_DIR",
      "DENO_V8_FLAGS",
      "deno_dir",
      "SSLKEYLOGFILE",
      "HTTPS_PROXY",
      "npm_config_registry",
      "NODE_OPTIONS",
      "HOME", // with XDG_CACHE_HOME, places the cache the runtime writes
      "XDG_CACHE_HOME",
    ];
    for (const name of refused) {
      await assert.rejects(
        start(name, { [name]: name === "DENO_V8_FLAGS" ? "--allow-natives-syntax" : coverage }),
        (e: Error) =>
          e instanceof SandboxDeniedError &&
          e.message.endsWith(
            `env ${
              JSON.stringify(name)
            } configures the Deno runtime, which a "deno" program may not set`,
          ),
        name,
      );
    }
    assert.deepEqual([...Deno.readDirSync(coverage)], [], "nothing was written there");
    // Other variables reach the program.
    await start("ok", { GREETING: "hi", DENOMINATOR: "2" });
    assert.equal((await collect(table, "ok")).text.stdout, "hi\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(coverage, { recursive: true });
  }
});

Deno.test({
  name:
    "a confined program's env may not carry loader variables, which its helpers would load outside the sandbox",
  ignore: !OS_WORKS,
  fn: async () => {
    const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "outpost_loader_" });
    try {
      await Deno.writeTextFile(`${dir}/child.ts`, "console.log('ran');");
      await using table = new ProcessTable();
      const names = [
        "LD_PRELOAD",
        "LD_AUDIT",
        "LD_LIBRARY_PATH",
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        "BASH_FUNC_stty%%", // for script's sh -c when /bin/sh is bash
        "BASH_ENV",
        "ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
      ];
      let n = 0;
      for (const name of names) {
        for (const confinement of ["os", "deno"] as const) {
          const argv = confinement === "deno" ? [`${dir}/child.ts`] : ["true"];
          for (const where of ["env", "envPolicy"] as const) {
            const vars = { [name]: `${dir}/nothing.so` };
            await assert.rejects(
              table.start({
                processId: `p${n++}`,
                argv,
                confinement,
                ...(where === "env" ? { env: vars } : { envPolicy: { set: vars } }),
              }),
              (e: Error) =>
                e instanceof SandboxDeniedError &&
                e.message.includes(`env "${name}" is read by the loader or shell`),
              `${name} ${confinement} ${where}`,
            );
          }
        }
      }
      // At "none" the program is not confined: its environment is its own.
      await table.start({
        processId: "none",
        argv: ["sh", "-c", 'echo "$LD_LIBRARY_PATH"'],
        env: { LD_LIBRARY_PATH: dir },
      });
      assert.equal((await collect(table, "none")).text.stdout, `${dir}\n`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("deno confinement refuses a program that asks for more than the executor has", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/child.ts`, CHILD_MODULE);
    await Deno.writeTextFile(`${dir}/data.txt`, "data");
    const results = JSON.parse(
      await runProcessFixture(["--allow-run=deno", `--allow-read=${dir}`], ["deno", dir]),
    );
    assert.deepEqual(results.moreRead, {
      error: "SandboxDeniedError",
      message:
        `Cannot start Deno program "${dir}/child.ts": read access to "/etc" is not granted to the executor`,
    });
    assert.match(results.allNet.message, /net access to everything is not granted/);
    assert.match(results.env.message, /env access to "SECRET" is not granted/);
    assert.match(results.inside.ok, new RegExp(`ok:${dir}/data.txt`));
    assert.match(results.inside.ok, /denied:\/etc\/hostname:NotCapable/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("denoRunFlags validates what a program asks for", async () => {
  assert.deepEqual(await denoRunFlags(undefined, "/m.ts"), [
    "run",
    "--no-prompt",
    "--no-config",
    "--no-remote",
    "--no-npm",
    "--no-lock",
  ]);
  assert.deepEqual(
    (await denoRunFlags({ read: ["data"], net: ["127.0.0.1"] }, "/m.ts", "/srv")).slice(6),
    [
      "--allow-read=/srv/data",
      "--allow-net=127.0.0.1",
    ],
  );
  await assert.rejects(denoRunFlags({ read: ["a,b"] }, "/m.ts"), TypeError);
  await assert.rejects(denoRunFlags({ read: [] }, "/m.ts"), TypeError);
  await assert.rejects(
    denoRunFlags({ bogus: true } as never, "/m.ts"),
    /unknown Deno permission "bogus"/,
  );
  await assert.rejects(denoRunFlags(undefined, "https://example.com/m.ts"), /only local modules/);
  await assert.rejects(denoRunFlags(undefined, "--allow-all"), TypeError);
  await assert.rejects(denoRunFlags({ read: ["/tmp/a\ud800"] }, "/m.ts"), /well-formed/);
  // At most MAX_DENO_PERMISSION_VALUES values per list: at the bound the
  // values are checked (here refused for their commas), past it refused for the count.
  const values = (n: number) => Array.from({ length: n }, (_, i) => `/tmp/${i},x`);
  await assert.rejects(
    denoRunFlags({ read: values(MAX_DENO_PERMISSION_VALUES) }, "/m.ts"),
    /without commas/,
  );
  await assert.rejects(
    denoRunFlags({ read: values(MAX_DENO_PERMISSION_VALUES + 1) }, "/m.ts"),
    /holds more than 1024 values/,
  );
});

Deno.test("ProcessTable refuses argv, arg0 and cwd with a lone surrogate, which would reach the system as U+FFFD", async () => {
  await using table = new ProcessTable();
  const starts: [string, Record<string, unknown>][] = [
    ["argv", { argv: ["echo", "x\ud800"] }],
    ["arg0", { argv: ["true"], arg0: "\udc00" }],
    ["cwd", { argv: ["true"], cwd: "/tmp/\ud800" }],
  ];
  for (const [what, options] of starts) {
    await assert.rejects(
      table.start({ processId: what, ...options } as never),
      (e: Error) => e instanceof TypeError && /well-formed/.test(e.message),
      what,
    );
  }
  assert.equal(table.list().length, 0);
});

Deno.test("resolveGrantedProgram and grantedWriteRoots resolve to real paths", async () => {
  const sh = await resolveGrantedProgram("sh");
  assert.ok(sh?.startsWith("/") && sh.endsWith("/sh"));
  assert.equal(await resolveGrantedProgram("/usr/bin/env"), "/usr/bin/env");
  assert.equal(await resolveGrantedProgram(""), null);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.symlink(dir, `${dir}-link`);
    assert.deepEqual(await grantedWriteRoots([`${dir}-link`, dir, "/nope/nope", "rel"]), [
      await Deno.realPath(dir),
    ]);
  } finally {
    await Deno.remove(`${dir}-link`);
    await Deno.remove(dir, { recursive: true });
  }
  const args = bwrapArgs({ writeRoots: ["/w"], allowNetwork: false, cwd: "/w" });
  assert.ok(args.includes("--unshare-net") && args.includes("--die-with-parent"));
  assert.deepEqual(args.slice(-3), ["--chdir", "/w", "--"]);
  // Mounts apply in order: read-only dirs over the private /tmp, write roots over those.
  const layered = bwrapArgs({
    writeRoots: ["/tmp/d/w"],
    readOnlyDirs: ["/tmp/d"],
    allowNetwork: false,
  })
    .join(" ");
  assert.match(
    layered,
    /--tmpfs \/tmp --tmpfs \/run --ro-bind \/tmp\/d \/tmp\/d --bind \/tmp\/d\/w /,
  );
  assert.deepEqual(
    [
      ["/tmp/x", false],
      ["/tmp", false],
      ["/run/x", false],
      ["/run/x", true],
      ["/dev/shm/x", true],
      ["/var/x", false],
    ].map(([path, network]) => hiddenInSandbox(path as string, network as boolean)),
    ["/tmp", null, "/run", null, "/dev", null],
  );
  assert.ok(!bwrapArgs({ writeRoots: [], allowNetwork: true }).includes("--unshare-net"));
});

Deno.test("writeRootProblem says why a write root would be dropped", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/file`, "");
    assert.equal(await writeRootProblem(dir), null);
    assert.equal(await writeRootProblem("/nonexistent-xyz"), "it does not exist");
    assert.equal(await writeRootProblem(`${dir}/file`), "it is not a directory");
    assert.equal(await writeRootProblem("rel"), "it must be an absolute path");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
