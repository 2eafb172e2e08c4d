/**
 * The command line end to end: pipelines, targets, plugins, reports and
 * listings; output byte-identical from run to run; and every bad input gets
 * one error line (plus the pipeline and a caret for pipeline errors), a
 * non-zero exit and no partial output.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import { type Run, runCli } from "./cli_run.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MODELS = join(ROOT, "examples/models");

function cli(...args: string[]): Promise<Run> {
  return runCli(["--allow-read", "--allow-write"], args);
}

function assertError(run: Run, pattern: RegExp, lines = 1): void {
  assert.notEqual(run.code, 0, "non-zero exit");
  assert.equal(run.stderr.split("\n").length, lines, `${lines} error line(s), got:\n${run.stderr}`);
  assert.match(run.stderr, /^compile: error: /);
  assert.match(run.stderr, pattern);
  assert.doesNotMatch(run.stderr, /^\s+at /m, "no stack trace");
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function listDir(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

Deno.test("compile.ts with no model runs prune,svd,bfp to the FPGA image on the bundled model and its data", async () => {
  await withTempDir(async (dir) => {
    const run = await cli("--out", dir);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /vgg_sparse: prune\{ratio=0\.5,.*\},svd\{.*\},bfp\{mantissa=8,.*\} -> fpga/);
    assert.match(run.stdout, /params +[\d,]+ -> [\d,]+/);
    assert.match(run.stdout, /accuracy +\d+\.\d+% -> \d+\.\d+%/); // the bundled test set
    const files = listDir(dir);
    assert.ok(files.includes("vgg_sparse.fpga.bin") && files.includes("vgg_sparse.manifest.json"), files.join(" "));
    // A model on the command line keeps the plain defaults: no passes, the onnx target.
    const plain = await cli(join(MODELS, "mlp.onnx"), "--out", join(dir, "plain"));
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /mlp: no passes -> onnx/);
    assert.deepEqual(listDir(join(dir, "plain")), ["mlp.onnx"]);
  });
});

Deno.test("compile.ts runs a pipeline, writes the report, and is byte-identical across runs", async () => {
  await withTempDir(async (dir) => {
    const model = join(MODELS, "vgg_dense.onnx");
    const args = (o: string) => [model, "--passes", "fold-bn,canonicalize,dce", "--out", join(dir, o)];
    const a = await cli(...args("a"), "--report", join(dir, "a.json"), "--timing");
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stdout, /pass fold-bn/);
    assert.match(a.stdout, /Timing \(slowest first\):/);
    const b = await cli(...args("b"));
    assert.equal(b.code, 0, b.stderr);
    const bytesA = await Deno.readFile(join(dir, "a", "vgg_dense.onnx"));
    assert.deepEqual(bytesA, await Deno.readFile(join(dir, "b", "vgg_dense.onnx")));
    assert.deepEqual(listDir(join(dir, "a")), ["vgg_dense.onnx"], "no temporary files left");
    const report = JSON.parse(await Deno.readTextFile(join(dir, "a.json")));
    assert.deepEqual(report.passes.map((p: { name: string }) => p.name), ["fold-bn", "canonicalize", "dce"]);
    assert.ok(report.passes.every((p: { ms: number; stats: object }) => p.ms >= 0 && typeof p.stats === "object"));
    assert.ok(report.totals.after.params < report.totals.before.params, "folding BN removes parameters");
    assert.equal(report.totals.after.macs, report.totals.before.macs);
    const { onnx } = onnxProto;
    const ops = onnx.ModelProto.decode(bytesA).graph!.node!.map((n) => n.opType);
    assert.ok(!ops.includes("BatchNormalization"), "BatchNormalization folded away");
  });
});

Deno.test("compile.ts prints the IR after a named pass and the canonical pipeline", async () => {
  await withTempDir(async (dir) => {
    const model = join(MODELS, "vgg_dense.onnx");
    const ir = await cli(model, "--passes", "fold-bn,dce", "--print-ir-after", "fold-bn", "--out", dir, "-q");
    assert.equal(ir.code, 0, ir.stderr);
    assert.match(ir.stdout, /^\/\/ ----- IR after fold-bn -----$/m);
    assert.match(ir.stdout, /= Conv\(/);
    assert.doesNotMatch(ir.stdout, /IR after dce/);
    const dump = await cli(model, "--passes", "fold-bn", "--dump-pipeline");
    assert.equal(dump.code, 0, dump.stderr);
    assert.equal(dump.stdout.trim(), "fold-bn");
  });
});

Deno.test("compile.ts lists passes and targets with their options", async () => {
  const run = await cli("--list-passes", "--list-targets");
  assert.equal(run.code, 0, run.stderr);
  for (const name of ["fold-bn", "dce", "canonicalize", "onnx"]) {
    assert.match(run.stdout, new RegExp(`^  ${name} `, "m"));
  }
  assert.match(run.stdout, /external-data=false/);
  // An optional option has no default to show.
  assert.match(run.stdout, /^ {6}rank \(optional\) {2}Keep N singular values/m);
  assert.match(run.stdout, /^ {6}energy=0\.9 {2}/m);
});

Deno.test("compile.ts loads a plugin and runs its pass", async () => {
  await withTempDir(async (dir) => {
    const plugin = join(ROOT, "examples/custom_pass.ts");
    const list = await cli("--plugin", plugin, "--list-passes");
    assert.match(list.stdout, /^ {2}clip-to-relu /m);
    const run = await cli(
      join(MODELS, "vgg_dense.onnx"),
      "--plugin",
      plugin,
      "--passes",
      "clip-to-relu{min-tolerance=0}",
      "--out",
      dir,
      "--report",
      join(dir, "r.json"),
    );
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(await Deno.readTextFile(join(dir, "r.json")));
    assert.equal(report.passes[0].name, "clip-to-relu");
  });
});

Deno.test("compile.ts reports pipeline errors with the pipeline and a caret", async () => {
  const run = await cli("--passes", "fold-bn,dec");
  assertError(run, /unknown pass "dec" \(did you mean "dce"\?\)/, 3);
  const [, pipeline, caret] = run.stderr.split("\n");
  assert.equal(caret.indexOf("^") - pipeline.indexOf("fold-bn"), "fold-bn,".length, "caret under the bad pass");
  assertError(await cli("--passes", "fold-bn{"), /Cannot parse pipeline/, 3);
  // A target is read by the same parser, so it gets the caret too.
  const target = await cli("--target", "onx{threshold=1}");
  assertError(target, /^compile: error: Cannot parse target: unknown target "onx" \(did you mean "onnx"\?\)$/m, 3);
  assert.deepEqual(target.stderr.split("\n").slice(1), ["onx{threshold=1}", "^"]);
});

Deno.test("compile.ts rejects bad input in one line and writes nothing", async () => {
  await withTempDir(async (dir) => {
    const out = join(dir, "o");
    assertError(
      await cli("/nonexistent/model.onnx", "--out", out),
      /cannot read model "\/nonexistent\/model.onnx": No such file or directory$/,
    );
    const junk = join(dir, "junk.onnx");
    await Deno.writeFile(junk, new TextEncoder().encode("\x89PNG\r\n\x1a\n not a model at all"));
    assertError(await cli(junk, "--out", out), /Cannot import ONNX model/);
    const model = await Deno.readFile(join(MODELS, "vgg_dense.onnx"));
    const truncated = join(dir, "truncated.onnx");
    await Deno.writeFile(truncated, model.subarray(0, model.length >> 1));
    assertError(await cli(truncated, "--out", out), /Cannot import ONNX model/);
    assertError(await cli("--frobnicate"), /Unknown option '--frobnicate'/);
    assertError(
      await cli("--plugin", join(dir, "missing.ts")),
      /cannot read plugin ".*missing.ts": No such file or directory$/,
    );
    const empty = join(dir, "empty_plugin.ts");
    await Deno.writeTextFile(empty, "export const plugin = { name: 'empty', apiVersion: 1 };\n");
    assertError(await cli("--plugin", empty), /contributes no passes, targets or ops/);
    const none = join(dir, "no_plugin.ts");
    await Deno.writeTextFile(none, "export const x = 1;\n");
    assertError(await cli("--plugin", none), /exports no plugin/);
    assert.deepEqual(listDir(out), [], "no partial output");
  });
});

Deno.test("compile.ts refuses to overwrite its input", async () => {
  await withTempDir(async (dir) => {
    const model = join(dir, "m.onnx");
    await Deno.copyFile(join(MODELS, "vgg_dense.onnx"), model);
    const before = await Deno.readFile(model);
    assertError(await cli(model, "--out", dir), /refusing to overwrite the input model/);
    assert.deepEqual(await Deno.readFile(model), before);
  });
});

Deno.test("compile.ts reports an unwritable output folder in one line", async () => {
  await withTempDir(async (dir) => {
    const file = join(dir, "file");
    await Deno.writeTextFile(file, "");
    assertError(
      await cli("--out", join(file, "sub")),
      /cannot write artifact "vgg_sparse\.fpga\.bin" ".*\/file\/sub\/vgg_sparse\.fpga\.bin": ".*\/file" is a file, not a folder$/,
    );
  });
});

Deno.test("compile.ts names the op when declared shapes are inconsistent", async () => {
  await withTempDir(async (dir) => {
    const { onnx } = onnxProto;
    const model = onnx.ModelProto.decode(await Deno.readFile(join(MODELS, "vgg_dense.onnx")));
    // Declare the logits 11 wide where the classifier gives 10.
    model.graph!.output![0].type!.tensorType!.shape!.dim![1] = { dimValue: 11 };
    const bad = join(dir, "bad.onnx");
    await Deno.writeFile(bad, onnx.ModelProto.encode(model).finish());
    assertError(await cli(bad, "--out", join(dir, "o")), /op "[^"]+" \(Gemm\)/);
  });
});

Deno.test("compile.ts measures accuracy before and after with --eval and accepts --calib", async () => {
  await withTempDir(async (dir) => {
    const x = join(MODELS, "mnist_test_x.npy");
    const y = join(MODELS, "mnist_test_y.npy");
    const run = await cli(
      join(MODELS, "mlp.onnx"),
      "--passes",
      "canonicalize,dce",
      "--eval",
      `${x},${y}`,
      "--calib",
      join(MODELS, "mnist_calib_x.npy"),
      "--out",
      dir,
      "--report",
      join(dir, "r.json"),
    );
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /accuracy +\d+\.\d\d% -> \d+\.\d\d%/);
    const { accuracy } = JSON.parse(await Deno.readTextFile(join(dir, "r.json")));
    assert.equal(accuracy.samples, 2000);
    assert.ok(accuracy.before > 0.9 && accuracy.before <= 1, `accuracy ${accuracy.before} is a fraction`);
    assert.equal(accuracy.after, accuracy.before, "semantics-preserving passes keep accuracy");
    assertError(await cli("--eval", x), /--eval takes X.npy,Y.npy/);
    assertError(
      await cli("--eval", `${x},${join(dir, "missing.npy")}`),
      /cannot read --eval file ".*missing.npy": No such file or directory$/,
    );
  });
});

Deno.test("compile.ts --target fpga writes the image, its companions and the manifest; bad input writes nothing", async () => {
  await withTempDir(async (dir) => {
    const model = join(MODELS, "mlp.onnx");
    const passes = ["--passes", "fold-bn,canonicalize,dce,bfp"];
    const run = await cli(model, ...passes, "--target", "fpga{pe=2,simd=4}", "--out", join(dir, "a"));
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /mlp: fold-bn,.*,bfp\{.* -> fpga\n/);
    const files = listDir(join(dir, "a"));
    assert.ok(files.includes("mlp.fpga.bin") && files.includes("mlp.manifest.json"), files.join(", "));
    // Three Gemm layers, each with mantissa, exponent and bias memories in three formats.
    assert.equal(files.filter((f) => /\.(coe|mif|mem)$/.test(f)).length, 3 * 3 * 3);
    const { readFpgaImage } = await import("../mod.ts");
    const image = readFpgaImage(await Deno.readFile(join(dir, "a", "mlp.fpga.bin")));
    assert.equal(image.layers.filter((l) => l.kind === "gemm").length, 3);
    const again = await cli(model, ...passes, "--target", "fpga{pe=2,simd=4}", "--out", join(dir, "b"));
    assert.equal(again.code, 0, again.stderr);
    for (const f of files) {
      assert.deepEqual(await Deno.readFile(join(dir, "a", f)), await Deno.readFile(join(dir, "b", f)), f);
    }

    assertError(
      await cli(model, "--target", "fpga", "--out", join(dir, "c")),
      /is still float: run bfp \(or fixed\) first/,
    );
    assertError(
      await cli(model, ...passes, "--target", "fpga{word-bits=4}", "--out", join(dir, "c")),
      /word-bits=4 is below the mantissa width of 8 bits/,
    );
    assert.deepEqual(listDir(join(dir, "c")), [], "nothing written on error");

    // A folder holding another build's image is refused, unchanged; the same build again is fine; --force replaces.
    const before = await Deno.readFile(join(dir, "a", "mlp.fpga.bin"));
    const other = ["--target", "fpga{pe=4,simd=4}", "--out", join(dir, "a")];
    assertError(
      await cli(model, ...passes, ...other),
      /--out ".*\/a" holds an image of a different build \(".*mlp\.fpga\.bin"\); choose another folder or pass --force/,
    );
    assert.deepEqual(await Deno.readFile(join(dir, "a", "mlp.fpga.bin")), before, "image untouched");
    assert.deepEqual(listDir(join(dir, "a")), files, "nothing added");
    const vgg = join(MODELS, "vgg_sparse.onnx");
    assertError(
      await cli(vgg, ...passes, "--target", "fpga", "--out", join(dir, "a")),
      /holds another model's image \(".*mlp\.fpga\.bin"\)/,
    );
    assert.equal((await cli(model, ...passes, "--target", "fpga{pe=2,simd=4}", "--out", join(dir, "a"))).code, 0);
    const forced = await cli(model, ...passes, ...other, "--force");
    assert.equal(forced.code, 0, forced.stderr);
    assert.notDeepEqual(await Deno.readFile(join(dir, "a", "mlp.fpga.bin")), before, "replaced with --force");
  });
});

Deno.test("compile.ts prints the sparse bytes of a model whose weight matrices fc-corr left with zeros", async () => {
  await withTempDir(async (dir) => {
    const run = await cli(
      join(MODELS, "mlp.onnx"),
      "--passes",
      "fc-corr{threshold=0.2}",
      "--calib",
      join(MODELS, "mnist_calib_x.npy"),
      "--out",
      dir,
    );
    assert.equal(run.code, 0, run.stderr);
    const m = /sparse bytes ([\d,]+) -> ([\d,]+) +[\d.]+x smaller \(matrices with zeros as CSR where smaller\)/.exec(
      run.stdout,
    );
    assert.ok(m !== null, run.stdout);
    const [before, after] = [m[1], m[2]].map((n) => Number(n.replaceAll(",", "")));
    assert.ok(after < before, `${after} < ${before}`);
    // A dense model prints no such line.
    const dense = await cli(join(MODELS, "mlp.onnx"), "--out", join(dir, "dense"));
    assert.doesNotMatch(dense.stdout, /sparse bytes/);
  });
});
