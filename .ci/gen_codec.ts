/**
 * Generates the protobuf codec `lib/relay/_gen/relay_pb.js` from
 * `proto/relay.proto` with pbjs. With `--check` it generates into a temporary
 * file and fails when the checked-in code differs, so the generated code can
 * never drift from the schema (a gate step). The protobufjs import is written
 * as the `npm:` specifier deno.json maps it to.
 */
const check = Deno.args.includes("--check");
const root = new URL("../", import.meta.url);
const checkedIn = new URL("lib/relay/_gen/relay_pb.js", root);
const dir = await Deno.makeTempDir({ prefix: "outpost-gen-" });
try {
  const out = `${dir}/relay_pb.js`;
  const gen = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "npm:protobufjs-cli@2.7.1/bin/pbjs",
      "-t",
      "static-module",
      "-w",
      "es6",
      "--no-create",
      "--no-verify",
      "--no-convert",
      "--no-delimited",
      "--no-comments",
      "-o",
      out,
      "proto/relay.proto",
    ],
    cwd: root,
    stdout: "inherit",
    stderr: "piped",
  });
  const { success, stderr } = await gen.output();
  if (!success) {
    console.error(new TextDecoder().decode(stderr));
    throw new Error("Cannot regenerate the codec: pbjs failed");
  }
  // pbjs imports protobufjs by its bare name; the code names the npm package
  // deno.json maps it to, so mod.ts also loads from another project that
  // imports it by path (without this checkout's import map).
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const bare = '"protobufjs/minimal.js"';
  const generated = await Deno.readTextFile(out);
  if (!generated.includes(`from ${bare};`)) {
    throw new Error(`Cannot regenerate the codec: pbjs no longer imports ${bare}`);
  }
  const fresh = generated.replace(
    `from ${bare};`,
    `from ${JSON.stringify(config.imports["protobufjs/minimal.js"])};`,
  );
  if (!check) {
    await Deno.writeTextFile(checkedIn, fresh);
    console.error("wrote lib/relay/_gen/relay_pb.js");
  } else if (fresh !== await Deno.readTextFile(checkedIn)) {
    console.error("lib/relay/_gen/relay_pb.js is stale: run `deno task gen` and commit it");
    Deno.exitCode = 1;
  } else {
    console.error("generated codec is fresh");
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
