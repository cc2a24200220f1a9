import assert from "node:assert/strict";
import { RpcError, SandboxDeniedError } from "../lib/errors.ts";
import { FsOps } from "../lib/exec/fs_ops.ts";
import { type PermissionQuery, SandboxPolicy } from "../lib/exec/sandbox_policy.ts";

/** Grants read and write below `dir` only (Deno permissions are the far side of the boundary). */
function grantsOnly(dir: string): PermissionQuery {
  return (d) =>
    Promise.resolve(
      (d.name === "read" || d.name === "write") &&
        ((d.path as string) === dir || (d.path as string).startsWith(dir + "/"))
        ? "granted"
        : "prompt",
    );
}

async function fixture(maxFileBytes?: number) {
  const dir = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_fs_" }));
  const outside = await Deno.realPath(await Deno.makeTempDir({ prefix: "outpost_fs_out_" }));
  const fs = new FsOps(
    new SandboxPolicy({ query: grantsOnly(dir) }),
    maxFileBytes === undefined ? {} : { maxFileBytes },
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

Deno.test("FsOps writes, reads and inspects files with upstream names", async () => {
  await using f = await fixture();
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
  await rpcFails(f.call("fs/readFile", { path: f.dir }), -32603, "directory");
  await rpcFails(f.call("fs/readFile", { path: `${f.dir}/missing` }), -32004, "does not exist");
});

Deno.test("FsOps creates, lists and removes directories", async () => {
  await using f = await fixture();
  assert.deepEqual(await f.call("fs/createDirectory", { path: `${f.dir}/a/b/c` }), {});
  await f.call("fs/createDirectory", { path: `${f.dir}/a/b/c` }); // recursive accepts existing
  await rpcFails(f.call("fs/createDirectory", { path: `${f.dir}/x/y`, recursive: false }), -32004);
  await rpcFails(
    f.call("fs/createDirectory", { path: `${f.dir}/a`, recursive: false }),
    -32603,
    `${f.dir}/a`,
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
    -32603,
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
});

Deno.test("FsOps copies files and trees and never writes through links out of the sandbox", async () => {
  await using f = await fixture();
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
});
