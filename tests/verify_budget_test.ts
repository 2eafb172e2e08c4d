/**
 * `--verify` and `--budget` on the trained models: every target's artifacts run in their runtimes against the
 * interpreter (onnxruntime, host gcc, the FPGA image reader and iverilog), a deliberately corrupted artifact of each
 * target fails naming it, the per-pass SQNR lands in the report, and `--budget weight-bytes=16KB` on the bundled
 * model fits with its accuracy next to the hand-written pipeline's.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readNpy } from "../data/npy.ts";
import { BudgetError, parseBudget } from "../driver/budget.ts";
import { compile, type CompileResult } from "../driver/compile.ts";
import { checkVerified, VERIFY_TOLERANCES, verifyArtifacts, VerifyError } from "../driver/verify.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { cloneModule } from "../ir/rewriter.ts";
import { type Tensor, tensor } from "../ir/tensor.ts";
import { type Run, runCli } from "./cli_run.ts";
import { randomInput } from "./tensor_compare.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const MODELS = join(ROOT, "examples/models");
const model = (name: string): Promise<Uint8Array> => Deno.readFile(join(MODELS, `${name}.onnx`));
const calibration = readNpy(await Deno.readFile(join(MODELS, "mnist_calib_x.npy")));
const testX = readNpy(await Deno.readFile(join(MODELS, "mnist_test_x.npy")));
const testY = readNpy(await Deno.readFile(join(MODELS, "mnist_test_y.npy")));

/** The first `n` samples of a data set. */
function head(t: Tensor, n: number): Tensor {
  const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return tensor(t.dtype, [n, ...t.shape.slice(1)], (t.data as Float32Array | BigInt64Array).slice(0, n * per));
}

const hasTool = (cmd: string, arg: string): boolean => {
  try {
    return new Deno.Command(cmd, { args: [arg], stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
};
const GCC = hasTool("gcc", "--version");
const IVERILOG = hasTool("iverilog", "-V");

async function compiled(name: string, passes: string, target: string, samples = 16): Promise<CompileResult> {
  return await compile(await model(name), {
    passes,
    target,
    modelName: name,
    calibration,
    verify: { samples },
  });
}

Deno.test("--verify: onnx float and BFP models in onnxruntime within the stated tolerances", async () => {
  for (
    const [passes, tolerance] of [["", VERIFY_TOLERANCES.onnx], ["prune,svd,bfp", VERIFY_TOLERANCES.onnxQuantized]]
  ) {
    const { report } = await compiled("vgg_sparse", passes as string, "onnx");
    const v = report.verify!;
    assert.equal(v.ok, true);
    assert.equal(v.inputs, "calibration");
    const [check] = v.checks;
    assert.equal(check.runtime, "onnxruntime");
    assert.equal(check.artifact, "vgg_sparse.onnx");
    assert.equal(check.samples, 16);
    assert.equal(check.compared, 16 * 10);
    assert.equal(check.tolerance, tolerance);
    assert.equal(check.mismatches, 0);
    assert.match(check.tools["onnxruntime-node"], /^\d+\.\d+/);
    // Measured (16 samples): float 5e-7 relative, BFP 1e-7; far inside the tolerance, which is for larger models.
    assert.ok(check.maxRelError! < 1e-5, `max rel error ${check.maxRelError}`);
    assert.ok(typeof check.sqnrDb === "number" && check.sqnrDb > 100, `SQNR ${check.sqnrDb}`);
  }
});

Deno.test("--verify: an ONNX model with external data runs from a folder with its data file", async () => {
  const { report, artifacts } = await compiled("mlp", "", "onnx{external-data=true,threshold=1}", 4);
  assert.deepEqual([...artifacts.keys()], ["mlp.onnx", "mlp.onnx.data"]);
  assert.equal(report.verify!.ok, true);
  assert.equal(report.verify!.checks[0].compared, 40);
});

Deno.test("--verify: a batch-1 model runs sample by sample; a target without a runtime is reported, not failed", async () => {
  // The torchvision ResNet-18 fixture declares x: [1,3,32,32].
  const bytes = await Deno.readFile(join(ROOT, "tests/fixtures/zoo/resnet18.onnx"));
  const x = randomInput([3, 3, 32, 32], 7);
  const { report, module, artifacts } = await compile(bytes, {
    passes: "bfp",
    modelName: "resnet18",
    calibration: { x },
    verify: true,
  });
  const [check] = report.verify!.checks;
  assert.equal(check.samples, 3);
  assert.equal(check.compared, 3 * 10);
  assert.equal(check.ok, true);
  const other = await verifyArtifacts(module, artifacts, { target: "tflite", modelName: "resnet18", inputs: { x } });
  assert.equal(other.ok, true);
  assert.equal(other.checks[0].skipped, 'no runtime is known for target "tflite"');
});

Deno.test({
  name: "--verify: C from bfp is bit-exact on the host gcc; float C within 1e-5",
  ignore: !GCC,
  async fn() {
    const exact = (await compiled("mlp", "bfp", "c")).report.verify!.checks[0];
    assert.equal(exact.runtime, "gcc (host)");
    assert.equal(exact.artifact, "mlp.c");
    assert.equal(exact.exact, true);
    assert.equal(exact.bitExact, true);
    assert.equal(exact.compared, 16 * 10);
    assert.equal(exact.sqnrDb, "inf");
    assert.match(exact.tools.gcc, /gcc/);
    const float = (await compiled("mlp", "", "c")).report.verify!.checks[0];
    assert.equal(float.exact, false);
    assert.equal(float.tolerance, VERIFY_TOLERANCES.cFloat);
    assert.equal(float.ok, true);
    assert.ok(float.maxRelError! <= 1e-5);
  },
});

Deno.test("--verify: the FPGA image through its reader, and in iverilog when installed", async () => {
  // No vectors asked for: verify emits the image again with one sample's for the simulation.
  const { report, artifacts } = await compiled("mlp", "prune,svd,bfp", "fpga");
  assert.ok(![...artifacts.keys()].some((k) => k.includes("vectors")));
  const [reader, rtl] = report.verify!.checks;
  assert.equal(reader.runtime, "fpga image reader");
  assert.equal(reader.bitExact, true);
  assert.ok(reader.compared > 100_000, `${reader.compared} integers`); // every mantissa, exponent and bias
  assert.equal(rtl.runtime, "iverilog (rtl)");
  if (IVERILOG) {
    assert.equal(rtl.skipped, null);
    assert.equal(rtl.bitExact, true);
    assert.equal(rtl.samples, 1);
    assert.ok(rtl.compared > 0);
    assert.match(rtl.tools.iverilog, /Icarus Verilog/);
  } else assert.match(rtl.skipped!, /iverilog not found/);
});

Deno.test("--verify: per-pass output SQNR against the original model goes into the report", async () => {
  const { report } = await compiled("mlp", "svd,bfp", "onnx");
  const sqnr = report.passSqnr!;
  assert.deepEqual(sqnr.map((s) => s.pass), ["svd", "bfp"]);
  assert.ok(sqnr.every((s) => s.samples === 32));
  const [svd, bfp] = sqnr.map((s) => s.sqnrDb as number);
  assert.ok(svd > 20 && svd < 60, `svd ${svd} dB`);
  // BFP adds error on top of the SVD's: never better than what it starts from by more than noise.
  assert.ok(bfp > 20 && bfp <= svd + 0.5, `bfp ${bfp} dB after svd ${svd} dB`);
});

Deno.test("--verify: a corrupted artifact of each target fails, naming it and the first differing output", async () => {
  const inputs = { input: head(calibration, 8) };
  // ONNX: one weight of the classifier scaled.
  {
    const { module, artifacts } = await compiled("mlp", "", "onnx");
    const broken = cloneModule(module);
    const weight = broken.graph.constants.filter((v) => v.constant!.dtype === "f32").at(-1)!;
    const data = Float32Array.from(weight.constant!.data as Float32Array, (x, i) => i === 0 ? x + 1 : x);
    weight.constant = tensor("f32", weight.constant!.shape, data);
    artifacts.set("mlp.onnx", exportOnnx(broken));
    const input = module.graph.inputs[0].name;
    const report = await verifyArtifacts(module, artifacts, {
      target: "onnx",
      modelName: "mlp",
      inputs: { [input]: inputs.input },
    });
    assert.equal(report.ok, false);
    assert.throws(
      () => checkVerified(report),
      (e: Error) =>
        e instanceof VerifyError &&
        /^verify: "mlp\.onnx" in onnxruntime differs from the interpreter/.test(e.message) &&
        /first at output "[^"]+" sample 0 output \d+: got/.test(e.message),
    );
  }
  // C: the last constant array's first element moved by 64.
  if (GCC) {
    const { module, artifacts } = await compiled("mlp", "bfp", "c");
    const source = new TextDecoder().decode(artifacts.get("mlp.c"));
    const arrays = [...source.matchAll(/static const [^=;]+=\s*[{\s]*(-?[0-9][0-9.eE+-]*)(f?)/g)];
    const last = arrays.at(-1)!;
    const at = last.index! + last[0].length - last[1].length - last[2].length;
    const n = Number(last[1]);
    const changed = `${n >= 0 ? n - 64 : n + 64}${last[1].includes(".") && !String(n - 64).includes(".") ? ".0" : ""}`;
    artifacts.set("mlp.c", new TextEncoder().encode(source.slice(0, at) + changed + source.slice(at + last[1].length)));
    const input = module.graph.inputs[0].name;
    const report = await verifyArtifacts(module, artifacts, {
      target: "c",
      modelName: "mlp",
      inputs: { [input]: inputs.input },
    });
    assert.throws(
      () => checkVerified(report),
      /^VerifyError: verify: "mlp\.c" in gcc \(host\) differs from the interpreter \(bit-exact\): \d+ mismatch(es)?, first at sample \d+ output \d+: got 0x/,
    );
  }
  // FPGA: one byte of the last segment flipped; the reader's CRC names it.
  {
    const { module, artifacts } = await compiled("mlp", "bfp", "fpga");
    const image = artifacts.get("mlp.fpga.bin")!.slice();
    image[image.length - 1] ^= 0x40;
    artifacts.set("mlp.fpga.bin", image);
    const report = await verifyArtifacts(module, artifacts, { target: "fpga", modelName: "mlp", inputs, rtl: false });
    assert.throws(
      () => checkVerified(report),
      /^VerifyError: verify: "mlp\.fpga\.bin" in fpga image reader differs from the interpreter \(bit-exact\): 1 mismatch, first at FPGA image: .*CRC-32 mismatch/,
    );
  }
});

const READ_WRITE = ["--allow-read", "--allow-write"];
const cli = (permissions: readonly string[], ...args: string[]): Promise<Run> => runCli(permissions, args);

Deno.test("--verify without inputs, or without permission to run programs, is one line", async () => {
  await assert.rejects(
    () => compile(Deno.readFileSync(join(MODELS, "mlp.onnx")), { target: "onnx", verify: true }),
    /^Error: verify needs inputs to run the artifacts on: give calibration or evaluation data \(--calib, --eval\)$/,
  );
  const dir = await Deno.makeTempDir();
  try {
    const calib = join(MODELS, "mnist_calib_x.npy");
    const run = await cli(
      READ_WRITE,
      join(MODELS, "mlp.onnx"),
      "--target",
      "c",
      "--calib",
      calib,
      "--verify",
      "--out",
      dir,
    );
    assert.equal(run.code, 1);
    assert.equal(run.stderr, "compile: error: verify: needs permission to run gcc (--allow-run; run the CLI with -A)");
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing written");
    const noCalib = await cli(READ_WRITE, join(MODELS, "mlp.onnx"), "--passes", "bfp", "--sqnr-each", "--out", dir);
    assert.equal(noCalib.code, 1);
    assert.equal(
      noCalib.stderr,
      "compile: error: --sqnr-each needs --calib FILE.npy (the inputs the SQNR is measured on)",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "compile.ts --budget --verify prints the chosen pipeline, the per-pass SQNR and the verification",
  ignore: !GCC,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const calib = join(MODELS, "mnist_calib_x.npy");
      const run = await cli(
        ["-A"],
        join(MODELS, "mlp.onnx"),
        ...["--passes", "bfp", "--target", "c", "--calib", calib, "--out", dir],
        ...["--budget", "weight-bytes=200KB", "--verify"],
      );
      assert.equal(run.code, 0, run.stderr);
      assert.match(
        run.stdout,
        /^budget: 3 settings explored, 2 fit; chosen \([\d,]+ weight bytes, .*SQNR [\d.]+ dB\):$/m,
      );
      assert.match(run.stdout, /^ {2}bfp\{mantissa=6,.*\}$/m);
      assert.match(run.stdout, /^ {2}as written: 236,328 weight bytes, does not fit$/m);
      assert.match(run.stdout, /^ {2}SQNR after bfp +[\d.]+ dB$/m);
      assert.match(run.stdout, /^ {2}verify gcc \(host\) mlp\.c: bit-exact, 320 values of 32 samples \[gcc gcc/m);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("--budget: limits parse with SI and binary units; bad ones are one line", () => {
  assert.deepEqual(parseBudget("weight-bytes=64KB,macs=2M,arena=32KiB"), {
    weightBytes: 64_000,
    macs: 2_000_000,
    arenaBytes: 32_768,
  });
  assert.deepEqual(parseBudget("macs=1.5M"), { macs: 1_500_000 });
  for (
    const [text, message] of [
      ["", /expected NAME=AMOUNT/],
      ["weight-bytes", /"weight-bytes" is not NAME=AMOUNT/],
      ["flash=1K", /unknown limit "flash" \(expected weight-bytes, macs, arena\)/],
      ["macs=2X", /unknown unit "X"/],
      ["macs=1M,macs=2M", /macs is given twice/],
    ] as const
  ) {
    assert.throws(() => parseBudget(text), (e: Error) => e instanceof BudgetError && message.test(e.message), text);
  }
});

Deno.test("--budget weight-bytes=16KB on the bundled model fits, with accuracy next to the hand-written pipeline's", async () => {
  // The bundled compilation (README): vgg_sparse with prune,svd,bfp; the first 500 test images and 64 calibration images
  // keep the test short (every setting runs with the calibration data: recovery and bias correction).
  const evaluation = { inputs: head(testX, 500), labels: head(testY, 500) };
  const options = {
    passes: "prune,svd,bfp",
    target: "onnx",
    calibration: head(calibration, 64),
    evaluation,
    budget: "weight-bytes=16KB",
  };
  const { report } = await compile(await model("vgg_sparse"), options);
  const budget = report.budget!;
  assert.equal(budget.objective, "accuracy");
  assert.equal(budget.samples, 500);
  assert.equal(budget.points.length, 5 * 3 * 3);
  const chosen = budget.points[budget.chosen];
  assert.equal(report.pipeline, budget.pipeline);
  assert.equal(chosen.pipeline, budget.pipeline);
  assert.ok(chosen.fits && chosen.weightBytes <= 16_000);
  assert.equal(report.totals.after.weightBytes, chosen.weightBytes);
  assert.ok(report.totals.after.weightBytes <= 16_000, `${report.totals.after.weightBytes} weight bytes`);
  const hand = budget.points[budget.handWritten];
  assert.equal(hand.handWritten, true);
  assert.match(hand.pipeline, /^prune\{ratio=0\.5,.*svd\{energy=0\.9,.*bfp\{mantissa=8,/);
  assert.ok(hand.fits && hand.accuracy !== null);
  assert.ok(chosen.accuracy! >= hand.accuracy!, `chosen ${chosen.accuracy} vs hand-written ${hand.accuracy}`);
  assert.equal(report.accuracy!.after, chosen.accuracy);
  // Points that do not fit are costed but not measured.
  assert.ok(budget.points.some((p) => !p.fits));
  assert.ok(budget.points.filter((p) => !p.fits).every((p) => p.accuracy === null));
  console.log(
    `budget weight-bytes=16KB: chosen ${chosen.weightBytes} B, ${(100 * chosen.accuracy!).toFixed(2)}% ` +
      `(${budget.pipeline}); hand-written ${hand.weightBytes} B, ${(100 * hand.accuracy!).toFixed(2)}% (500 images)`,
  );
});

Deno.test("--budget: the same inputs give the same choice; no fitting setting is one line naming the smallest", async () => {
  const bytes = await model("mlp");
  const options = { passes: "bfp", target: "c", calibration, budget: "weight-bytes=200KB" };
  const a = (await compile(bytes, options)).report.budget!;
  const b = (await compile(bytes, options)).report.budget!;
  assert.deepEqual(a, b);
  assert.equal(a.objective, "sqnr");
  // mantissa 4, 6, 8: 118,952 / 177,640 / 236,328 bytes; the two that fit are measured, 6 bits lose less.
  assert.deepEqual(a.points.map((p) => p.weightBytes), [118_952, 177_640, 236_328]);
  assert.deepEqual(a.points.map((p) => p.fits), [true, true, false]);
  assert.equal(a.chosen, 1);
  assert.ok((a.points[1].sqnrDb as number) > (a.points[0].sqnrDb as number));
  assert.equal(a.points[2].sqnrDb, null);
  await assert.rejects(
    () => compile(bytes, { ...options, budget: "weight-bytes=1KB" }),
    /^BudgetError: budget: no setting of 3 explored fits weight-bytes<=1000; the smallest has \d+ weight bytes/,
  );
  // The arena limit is the C target's arena: the chosen point's is the emitted code's.
  const { report } = await compile(bytes, { ...options, budget: "weight-bytes=200KB,arena=100KB" });
  const arena = (report.target.stats!.memory as { arenaBytes: number }).arenaBytes;
  assert.equal(report.budget!.points[report.budget!.chosen].arenaBytes, arena);
  await assert.rejects(
    () => compile(bytes, { ...options, budget: `arena=${arena - 1}` }),
    new RegExp(`no setting of 3 explored fits arena<=${arena - 1}; .* ${arena} activation bytes`),
  );
  await assert.rejects(
    () => compile(bytes, { ...options, passes: "dce", budget: "macs=1M" }),
    /budget: the pipeline "dce" has no searchable pass/,
  );
});
