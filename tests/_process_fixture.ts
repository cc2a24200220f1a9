// Runs a ProcessTable under the permissions the test gives this subprocess
// (e.g. `--allow-run=sh` only) and prints what happened as one JSON line.
import { detectSessionHelper } from "../lib/exec/confinement.ts";
import { ProcessTable } from "../lib/exec/process_table.ts";

const scenario = Deno.args[0];
const results: Record<string, unknown> = {};
const table = new ProcessTable({ killGraceMs: 200 });

async function attempt(name: string, fn: () => Promise<unknown>): Promise<void> {
  try {
    results[name] = { ok: await fn() };
  } catch (error) {
    results[name] = { error: (error as Error).name, message: (error as Error).message };
  }
}

async function output(processId: string): Promise<string> {
  let text = "";
  let afterSeq = 0;
  for (;;) {
    const r = await table.read(processId, { afterSeq, waitMs: 1000 });
    for (const c of r.chunks) text += new TextDecoder().decode(c.chunk);
    afterSeq = r.nextSeq - 1;
    if (r.closed) return text;
  }
}

/** Where a child stands: /proc/PID/stat as the child itself reads it. */
async function standing(processId: string): Promise<Record<string, boolean>> {
  await table.start({ processId, argv: ["sh", "-c", "cat /proc/$$/stat"] });
  const text = await output(processId);
  const pid = Number(text.slice(0, text.indexOf(" ")));
  const [, ppid, pgrp, session] = text.slice(text.lastIndexOf(")") + 2).split(" ").map(Number);
  return {
    setsid: (await detectSessionHelper()) !== null,
    childOfExecutor: ppid === Deno.pid,
    groupLeader: pgrp === pid,
    sessionLeader: session === pid,
  };
}

if (scenario === "run") {
  await attempt("standing", () => standing("standing"));
  results.capabilities = await table.capabilities();
  await attempt("ls", () => table.start({ processId: "ls", argv: ["ls", "/"] }));
  await attempt("lsPath", () => table.start({ processId: "ls2", argv: ["/usr/bin/ls"] }));
  await attempt("tty", () => table.start({ processId: "t", argv: ["sh"], tty: true }));
  await attempt("os", () => table.start({ processId: "o", argv: ["sh"], confinement: "os" }));
  await attempt("arg0", () => table.start({ processId: "a", argv: ["sh"], arg0: "fake" }));
  await attempt(
    "preload",
    () => table.start({ processId: "p", argv: ["sh"], env: { LD_PRELOAD: "/nonexistent.so" } }),
  );
  await attempt("sh", async () => {
    await table.start({ processId: "sh", argv: ["sh", "-c", "echo ok"] });
    return await output("sh");
  });
  await attempt("terminate", async () => {
    await table.start({
      processId: "w",
      argv: ["sh", "-c", "echo ready; read x"],
      pipeStdin: true,
    });
    const first = await table.read("w", { waitMs: 2000 });
    const running = await table.terminate("w");
    await output("w");
    const last = await table.read("w", { afterSeq: first.nextSeq - 1 });
    return { running, exitCode: last.exitCode, closed: last.closed };
  });
} else if (scenario === "scoped") {
  const token = Deno.args[1];
  results.capabilities = await table.capabilities();
  await attempt("standing", () => standing("standing"));
  await attempt("tree", async () => {
    await table.start({
      processId: "tree",
      argv: ["sh", "-c", `sleep ${token} & sleep ${token} & echo ready; wait`],
    });
    const first = await table.read("tree", { waitMs: 2000 });
    const running = await table.terminate("tree");
    await output("tree");
    const last = await table.read("tree", { afterSeq: first.nextSeq - 1 });
    return { running, exitCode: last.exitCode };
  });
  await attempt("tty", async () => {
    await table.start({ processId: "t", argv: ["sh", "-c", "test -t 1 && echo tty"], tty: true });
    return await output("t");
  });
  await attempt("os", async () => {
    await table.start({
      processId: "o",
      argv: ["sh", "-c", "echo x > /etc/nope"],
      confinement: "os",
    });
    return await output("o");
  });
} else if (scenario === "path") {
  // PATH is DIR/a:DIR/b:...; one program moves between the two.
  const dir = Deno.args[1];
  await Deno.mkdir(`${dir}/a`);
  await Deno.mkdir(`${dir}/b`);
  const put = (where: string) =>
    Deno.writeTextFile(`${dir}/${where}/outpost_probe`, `#!/bin/sh\necho ${where}\n`, {
      mode: 0o755,
    });
  const run = async (processId: string) => {
    await table.start({ processId, argv: ["outpost_probe"] });
    return await output(processId);
  };
  await put("a");
  await attempt("first", () => run("first"));
  await Deno.remove(`${dir}/a/outpost_probe`);
  await put("b");
  await attempt("moved", () => run("moved"));
  await put("a");
  await attempt("shadowed", () => run("shadowed"));
  await Deno.remove(`${dir}/b/outpost_probe`);
  await attempt("backAgain", () => run("backAgain"));
  await Deno.remove(`${dir}/a/outpost_probe`);
  await attempt("gone", () => run("gone"));
} else if (scenario === "deno") {
  const dir = Deno.args[1];
  const module = `${dir}/child.ts`;
  await attempt(
    "moreRead",
    () =>
      table.start({
        processId: "d1",
        argv: [module],
        confinement: "deno",
        denoPermissions: { read: ["/etc"] },
      }),
  );
  await attempt(
    "allNet",
    () =>
      table.start({
        processId: "d2",
        argv: [module],
        confinement: "deno",
        denoPermissions: { net: true },
      }),
  );
  await attempt(
    "env",
    () =>
      table.start({
        processId: "d3",
        argv: [module],
        confinement: "deno",
        denoPermissions: { env: ["SECRET"] },
      }),
  );
  await attempt("inside", async () => {
    await table.start({
      processId: "d4",
      argv: [module, "/etc/hostname", `${dir}/data.txt`],
      confinement: "deno",
      denoPermissions: { read: [dir] },
    });
    return await output("d4");
  });
}
await table.close();
console.log(JSON.stringify(results));
