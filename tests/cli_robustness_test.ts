/**
 * The command line on bad input (issue 14): every case gets one error line
 * naming the problem and a non-zero exit, never a stack trace, a hang, a
 * partial output or an overwritten input; a failed write leaves the --out
 * folder as it was, without temporary files.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import { writeFiles } from "../driver/write_files.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MODELS = join(ROOT, "examples/models");
const MLP = join(MODELS, "mlp.onnx");

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI, killed after `timeoutMs` (a hang fails the test instead of stalling it). */
async function cli(args: string[], timeoutMs = 60_000): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--quiet", join(ROOT, "compile.ts"), ...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  assert.ok(out.signal === null, `compile.ts ${args.join(" ")} hung (killed after ${timeoutMs} ms)`);
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  const stderr = text(out.stderr).split("\n").filter((l) => l !== "").join("\n");
  return { code: out.code, stdout: text(out.stdout), stderr };
}

/** One line, `compile: error: ` and the exact message after it. */
function assertError(run: Run, message: string | RegExp): void {
  assert.notEqual(run.code, 0, "non-zero exit");
  assert.equal(run.stderr.split("\n").length, 1, `one error line, got:\n${run.stderr}`);
  assert.ok(!run.stderr.includes("\x1b"), "no escape sequence");
  assert.doesNotMatch(run.stderr, /^\s+at /m, "no stack trace");
  if (typeof message === "string") assert.equal(run.stderr, `compile: error: ${message}`);
  else assert.match(run.stderr, message);
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Every file under `dir` with its bytes, by relative path (folders end in /). */
function snapshot(dir: string, prefix = ""): Map<string, string> {
  const files = new Map<string, string>();
  for (const entry of [...Deno.readDirSync(join(dir, prefix))].sort((a, b) => a.name < b.name ? -1 : 1)) {
    const path = join(prefix, entry.name);
    if (entry.isDirectory) {
      files.set(`${path}/`, "");
      for (const [p, b] of snapshot(dir, path)) files.set(p, b);
    } else {
      files.set(path, Deno.readFileSync(join(dir, path)).join(","));
    }
  }
  return files;
}

Deno.test("the input model is never overwritten, whether --out or the model path goes through a link", async () => {
  await withTempDir(async (dir) => {
    const models = join(dir, "models");
    Deno.mkdirSync(models);
    const model = join(models, "mlp.onnx");
    Deno.copyFileSync(MLP, model);
    const before = Deno.readFileSync(model);
    // --out is a link to the model's folder.
    Deno.symlinkSync(models, join(dir, "out-link"));
    assertError(
      await cli([model, "--out", join(dir, "out-link")]),
      `refusing to overwrite the input model "${model}": artifact "mlp.onnx" "${dir}/out-link/mlp.onnx" is the same file`,
    );
    // The model is read through a link to its folder and written into the folder itself.
    Deno.symlinkSync(models, join(dir, "model-link"));
    assertError(
      await cli([join(dir, "model-link", "mlp.onnx"), "--out", models]),
      /refusing to overwrite the input model/,
    );
    // A hard link to the model in --out is the same file too (same device and inode).
    const out = join(dir, "o");
    Deno.mkdirSync(out);
    Deno.linkSync(model, join(out, "mlp.onnx"));
    assertError(await cli([model, "--out", out]), /refusing to overwrite the input model .* is the same file$/);
    // --report over the model, over the --calib file or over an --eval file.
    assertError(
      await cli([model, "--out", join(dir, "r"), "--report", model]),
      /refusing to overwrite the input model/,
    );
    const calib = join(dir, "calib.npy");
    Deno.copyFileSync(join(MODELS, "mnist_calib_x.npy"), calib);
    assertError(
      await cli([model, "--calib", calib, "--out", join(dir, "r"), "--report", calib]),
      `refusing to overwrite the --calib file "${calib}": --report "${calib}" is the same file`,
    );
    assert.deepEqual(Deno.readFileSync(model), before, "the model is unchanged");
    assert.deepEqual(Deno.readFileSync(calib), Deno.readFileSync(join(MODELS, "mnist_calib_x.npy")));
    assert.deepEqual([...Deno.readDirSync(models)].map((e) => e.name), ["mlp.onnx"], "no temporary files");
  });
});

Deno.test("external data the model reads is never overwritten", async () => {
  await withTempDir(async (dir) => {
    const first = await cli([MLP, "--target", "onnx{external-data=true}", "--out", dir]);
    assert.equal(first.code, 0, first.stderr);
    const data = Deno.readFileSync(join(dir, "mlp.onnx.data"));
    // Compiling the written model with external data into its own folder would replace the data it reads.
    assertError(
      await cli([
        join(dir, "mlp.onnx"),
        "--target",
        "onnx{external-data=true}",
        "--out",
        join(dir, "o"),
        "--report",
        join(dir, "mlp.onnx.data"),
      ]),
      /^compile: error: refusing to overwrite the external data file ".*mlp\.onnx\.data": --report .* is the same file$/,
    );
    assert.deepEqual(Deno.readFileSync(join(dir, "mlp.onnx.data")), data);
  });
});

Deno.test("a bad output path fails before anything is written: --out keeps its contents, no temporary files", async () => {
  await withTempDir(async (dir) => {
    const out = join(dir, "out");
    const ok = await cli([MLP, "--target", "onnx{external-data=true}", "--out", out, "--report", join(out, "r.json")]);
    assert.equal(ok.code, 0, ok.stderr);
    Deno.writeTextFileSync(join(out, "keep.txt"), "mine");
    const before = snapshot(out);
    // Other passes change the artifacts, so a partial write would show.
    const args = [MLP, "--passes", "prune{ratio=0.5}", "--target", "onnx{external-data=true}", "--out", out];
    assertError(
      await cli([...args, "--report", join(out, "mlp.onnx")]),
      `cannot write --report "${out}/mlp.onnx": it is the same file as artifact "mlp.onnx" "${out}/mlp.onnx"`,
    );
    Deno.mkdirSync(join(dir, "folder"));
    assertError(
      await cli([...args, "--report", join(dir, "folder")]),
      `cannot write --report "${dir}/folder": it is an existing folder; expected a file path`,
    );
    assertError(await cli([...args, "--report", ""]), "--report is empty; expected a path");
    assertError(await cli([...args, "--report", join(out, "keep.txt", "r.json")]), /is a file, not a folder$/);
    // A folder where the external-data file goes: the report must not be written either.
    Deno.removeSync(join(out, "mlp.onnx.data"));
    Deno.mkdirSync(join(out, "mlp.onnx.data"));
    const withFolder = snapshot(out);
    assertError(
      await cli([...args, "--report", join(out, "r.json")]),
      `cannot write artifact "mlp.onnx.data" "${out}/mlp.onnx.data": it is an existing folder; expected a file path`,
    );
    assert.deepEqual(snapshot(out), withFolder, "--out unchanged");
    Deno.removeSync(join(out, "mlp.onnx.data"));
    assertError(
      await cli([...args, "--report", join(out, "mlp.onnx.data", "r.json")]),
      /its folder .* is also artifact "mlp\.onnx\.data"$/,
    );
    Deno.writeFileSync(join(out, "mlp.onnx.data"), new Uint8Array());
    // Byte for byte as before (the external data file emptied above aside).
    const after = snapshot(out);
    after.set("mlp.onnx.data", before.get("mlp.onnx.data")!);
    assert.deepEqual(after, before);
  });
});

Deno.test("writeFiles() puts every previous file back when a rename fails half way", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const old = new Uint8Array([1]);
    for (const name of ["a", "b", "c"]) Deno.writeFileSync(join(dir, name), old);
    let renames = 0;
    const files = ["a", "b", "c", "new/d"].map((name) => ({
      path: join(dir, name),
      bytes: new Uint8Array([2]),
      label: name,
    }));
    assert.throws(
      () =>
        writeFiles(files, {
          rename(from, to) {
            // a: aside and in; b: aside and in; c: aside, then the rename in fails.
            if (++renames === 6) throw new Error("disk full");
            Deno.renameSync(from, to);
          },
        }),
      { message: `cannot write c "${dir}/c": disk full` },
    );
    assert.deepEqual(snapshot(dir), new Map([["a", "1"], ["b", "1"], ["c", "1"]]), "all back, no new folder");
    writeFiles(files);
    assert.deepEqual(snapshot(dir), new Map([["a", "2"], ["b", "2"], ["c", "2"], ["new/", ""], ["new/d", "2"]]));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a target naming artifacts outside --out is refused, naming the target and the name", async () => {
  await withTempDir(async (dir) => {
    const plugin = join(dir, "escape.ts");
    Deno.writeTextFileSync(
      plugin,
      `export const plugin = { name: "escape", apiVersion: 1, targets: [{ name: "escape", summary: "", options: {},
        emit: () => new Map([["../../x", new Uint8Array(1)]]) }] };\n`,
    );
    assertError(
      await cli([MLP, "--plugin", plugin, "--target", "escape", "--out", join(dir, "o")]),
      'target "escape" returned artifact "../../x": it has a ".." part; expected a relative path of file names separated by "/"',
    );
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["escape.ts"]);
  });
});

Deno.test("FIFOs and devices as the model, data or plugin are refused at once", async () => {
  await withTempDir(async (dir) => {
    const fifo = join(dir, "fifo");
    const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.equal(mk.code, 0);
    const x = join(MODELS, "mnist_test_x.npy");
    assertError(await cli([fifo], 20_000), `cannot read model "${fifo}": it is a FIFO; expected a regular file`);
    assertError(
      await cli(["/dev/zero"], 20_000),
      'cannot read model "/dev/zero": it is a device; expected a regular file',
    );
    assertError(
      await cli([MLP, "--calib", fifo], 20_000),
      `cannot read --calib file "${fifo}": it is a FIFO; expected a regular file`,
    );
    assertError(
      await cli([MLP, "--eval", `${x},/dev/zero`], 20_000),
      'cannot read --eval file "/dev/zero": it is a device; expected a regular file',
    );
    assertError(
      await cli([MLP, "--plugin", fifo], 20_000),
      `cannot read plugin "${fifo}": it is a FIFO; expected a regular file`,
    );
    assertError(await cli([dir], 20_000), `cannot read model "${dir}": it is a folder; expected a regular file`);
  });
});

Deno.test("plugins: a bad record names the plugin and the field; Deno.exit() or process.exit() cannot end the run with 0", async () => {
  await withTempDir(async (dir) => {
    const write = (name: string, text: string) => {
      Deno.writeTextFileSync(join(dir, name), text);
      return join(dir, name);
    };
    const bad = write("bad.ts", 'export const plugin = { name: "bad", apiVersion: 1, passes: "prune" };\n');
    assertError(
      await cli([MLP, "--plugin", bad]),
      `plugin "bad" ("${bad}"): field "passes" must be an array, found a string ("prune")`,
    );
    const nul = write("null.ts", "export const plugin = null;\n");
    assertError(await cli([MLP, "--plugin", nul]), /exports no plugin/);
    const exit = write("exit.ts", "Deno.exit(0);\n");
    assertError(await cli([MLP, "--plugin", exit]), `plugin "${exit}" called Deno.exit() while loading (status 0)`);
    const proc = write("proc.ts", 'import process from "node:process";\nprocess.exit(0);\n');
    assertError(await cli([MLP, "--plugin", proc]), `plugin "${proc}" called Deno.exit() while loading (status 0)`);
    const pass = write(
      "pass.ts",
      `export const plugin = { name: "quit", apiVersion: 1, passes: [{ name: "quit", summary: "", options: {},
        run() { Deno.exit(0); } }] };\n`,
    );
    assertError(
      await cli([MLP, "--plugin", pass, "--passes", "quit", "--out", join(dir, "o")]),
      /^compile: error: pass "quit" failed: a plugin called Deno\.exit\(\) during the compilation \(status 0\)$/,
    );
    const late = write(
      "late.ts",
      'setTimeout(() => { throw new Error("late\\nline"); }, 0);\nawait new Promise((r) => setTimeout(r, 50));\n',
    );
    assertError(await cli([MLP, "--plugin", late]), "late\\nline");
  });
});

Deno.test("error lines escape control characters and are cut at 1000 characters", async () => {
  await withTempDir(async (dir) => {
    const long = await cli([MLP, "--passes", "p".repeat(100_000)]);
    assert.notEqual(long.code, 0);
    assert.ok(long.stderr.length < 1000, `${long.stderr.length} characters of stderr`);
    assert.match(
      long.stderr,
      /^compile: error: Cannot parse pipeline: unknown pass "p{80}"\.\.\. \(100000 characters\); passes are: /,
    );
    const { onnx } = onnxProto;
    const model = onnx.ModelProto.decode(await Deno.readFile(join(MODELS, "vgg_dense.onnx")));
    model.graph!.output![0].type!.tensorType!.shape!.dim![1] = { dimValue: 11 };
    const gemm = model.graph!.node!.findLast((n) => n.opType === "Gemm")!;
    gemm.name = `fc\n\x1b[2Jx${"y".repeat(2000)}`;
    const bad = join(dir, "bad.onnx");
    await Deno.writeFile(bad, onnx.ModelProto.encode(model).finish());
    const run = await cli([bad, "--out", join(dir, "o")]);
    assertError(run, /^compile: error: .*fc\\n\\x1b\[2Jxyyy.*\.\.\. \(\d+ more characters\)$/);
    assert.ok(run.stderr.length <= "compile: error: ".length + 1000 + 30, `${run.stderr.length} characters`);
  });
});

Deno.test("bad --calib and --eval data is an error naming the file and what was expected", async () => {
  await withTempDir(async (dir) => {
    const y = join(MODELS, "mnist_test_y.npy");
    const x = join(MODELS, "mnist_test_x.npy");
    assertError(
      await cli([MLP, "--passes", "prune", "--calib", y, "--out", dir]),
      `--calib "${y}": input "input" must be f32, found i64`,
    );
    const npy = (name: string, header: string, data: Uint8Array) => {
      const dict = `{'descr': ${header}, }`;
      const pad = 64 - ((10 + dict.length + 1) % 64);
      const text = `\x93NUMPY\x01\x00${
        String.fromCharCode((dict.length + pad + 1) & 255, (dict.length + pad + 1) >> 8)
      }${dict}${" ".repeat(pad)}\n`;
      const bytes = new Uint8Array([...text].map((c) => c.charCodeAt(0)).concat([...data]));
      Deno.writeFileSync(join(dir, name), bytes);
      return join(dir, name);
    };
    const noBatch = npy("nobatch.npy", "'<f4', 'fortran_order': False, 'shape': (1, 28, 28)", new Uint8Array(784 * 4));
    assertError(
      await cli([MLP, "--calib", noBatch, "--out", dir]),
      `--calib "${noBatch}": input "input" must have shape [batch,1,28,28] (first axis: the samples), found [1,28,28]`,
    );
    const empty = npy("empty.npy", "'<f4', 'fortran_order': False, 'shape': (0, 1, 28, 28)", new Uint8Array());
    assertError(
      await cli([MLP, "--calib", empty, "--out", dir]),
      `--calib "${empty}": no samples for input "input" (shape [0,1,28,28]); expected at least one`,
    );
    const channels = npy(
      "ch.npy",
      "'<f4', 'fortran_order': False, 'shape': (1, 3, 28, 28)",
      new Uint8Array(3 * 784 * 4),
    );
    assertError(
      await cli([MLP, "--calib", channels, "--out", dir]),
      `--calib "${channels}": input "input" must have shape [batch,1,28,28], found [1,3,28,28]`,
    );
    const labels = npy(
      "labels.npy",
      "'<i8', 'fortran_order': False, 'shape': (2,)",
      new Uint8Array([12, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]),
    );
    const two = npy("two.npy", "'<f4', 'fortran_order': False, 'shape': (2, 1, 28, 28)", new Uint8Array(2 * 784 * 4));
    assertError(
      await cli([MLP, "--eval", `${two},${labels}`, "--out", dir]),
      `--eval "${two},${labels}": label 12 of sample 0 is outside [0, 10): the model scores 10 classes`,
    );
    assertError(await cli([MLP, "--eval", `${x},`]), `--eval takes X.npy,Y.npy (inputs and labels), found "${x},"`);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => !n.endsWith(".npy")), []);
  });
});

Deno.test("a refused write gives one line without Deno's permission advice; spaced target options are read", async () => {
  await withTempDir(async (dir) => {
    const proc = await cli([MLP, "--out", "/proc/cnnc-test"]);
    assertError(proc, /^compile: error: cannot write artifact "mlp\.onnx" "\/proc\/cnnc-test\/mlp\.onnx": /);
    assert.doesNotMatch(proc.stderr, /--allow|run again/);
    const spaced = await cli([MLP, "--target", " onnx { external-data = true , threshold = 64 } ", "--out", dir]);
    assert.equal(spaced.code, 0, spaced.stderr);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["mlp.onnx", "mlp.onnx.data"]);
  });
});
