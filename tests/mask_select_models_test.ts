/**
 * `mask-select` on the trained models: masknet's mask layers (remove the
 * near-zero masks, fold the rest), the chapter's combination with `fc-corr`,
 * and LASSO selection from calibration data on `vgg_dense` against
 * `prune{ratio=0.5}`. Top-1 on the 2,000 MNIST test images, verification,
 * the ONNX checker, and onnxruntime-node against the interpreter.
 * @module
 */
import assert from "node:assert/strict";
import { readNpyFile } from "../data/npy.ts";
import { compile, defaultRegistry } from "../driver/compile.ts";
import { evaluate } from "../driver/evaluate.ts";
import { runOnnxruntime } from "../driver/onnxruntime.ts";
import { costOf } from "../ir/cost.ts";
import { interpret, Interpreter } from "../ir/interpreter.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnxFile } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import type { Tensor } from "../ir/tensor.ts";
import { verifyModule } from "../ir/verifier.ts";
import { runPipeline } from "../passes/manager.ts";
import { parsePipeline } from "../passes/pipeline.ts";
import { calibrationTensor, seedModels } from "./fuzz.ts";
import { onnxChecker, onnxCheckerAvailable } from "./onnx_checks.ts";
import { compareTensors } from "./tensor_compare.ts";

const MODELS = decodeURIComponent(new URL("../examples/models/", import.meta.url).pathname);
const testX = readNpyFile(`${MODELS}mnist_test_x.npy`);
const testY = readNpyFile(`${MODELS}mnist_test_y.npy`);
const calibX = readNpyFile(`${MODELS}mnist_calib_x.npy`);
const registry = defaultRegistry();
const checker = await onnxCheckerAvailable();

/** Model, pipeline, largest allowed accuracy drop in points (measured, with slack except the exact cases). */
const CASES: readonly [string, string, number][] = [
  ["masknet.onnx", "mask-select", 0.1],
  ["masknet.onnx", "mask-select,fc-corr{threshold=0.1}", 1],
  ["vgg_dense.onnx", "mask-select{mode=data,ratio=0.5}", 1.5],
  ["vgg_dense.onnx", "mask-select{mode=data,ratio=0.5},fc-corr{threshold=0.1}", 2],
];

for (const [file, pipeline, maxDrop] of CASES) {
  Deno.test(`${pipeline} on ${file}: accuracy, no mask Mul, onnx.checker and onnxruntime`, async () => {
    const module = importOnnxFile(`${MODELS}${file}`);
    inferShapes(module);
    const before = evaluate(module, testX, testY, { batchSize: 500 }).accuracy;
    const cost = costOf(module).totals;
    await runPipeline(module, parsePipeline(pipeline, registry), {
      registry,
      calibration: { input: calibX },
      verifyEach: true,
    });
    verifyModule(module);
    const after = evaluate(module, testX, testY, { batchSize: 500 }).accuracy;
    const now = costOf(module).totals;
    assert.ok(100 * (before - after) <= maxDrop, `accuracy ${before} -> ${after}`);
    assert.ok(now.macs < cost.macs, `MACs ${cost.macs} -> ${now.macs}`);
    assert.equal(module.graph.ops.filter((op) => op.type === "Mul").length, 0, "every mask folded");
    const bytes = exportOnnx(module);
    if (checker) assert.match(await onnxChecker(bytes), /^(OK|SKIP)/);
    const n = 64;
    const x: Tensor = {
      dtype: "f32",
      shape: [n, ...testX.shape.slice(1)],
      data: (testX.data as Float32Array).subarray(0, n * 784),
    };
    const output = module.graph.outputs[0].name;
    const ours = new Interpreter(module).run({ input: x })[output].data as Float32Array;
    const theirs = (await runOnnxruntime(bytes, { input: x }))[output].data as Float32Array;
    let worst = 0;
    for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs(ours[i] - theirs[i]));
    assert.ok(worst < 1e-3, `largest logit difference ${worst}`);
  });
}

Deno.test("data-mode mask-select beats prune{ratio=0.5} on vgg_dense (no BN sparsity) at half the channels", async () => {
  const accuracyAfter = async (pipeline: string): Promise<number> => {
    const module = importOnnxFile(`${MODELS}vgg_dense.onnx`);
    inferShapes(module);
    await runPipeline(module, parsePipeline(pipeline, registry), { registry, calibration: { input: calibX } });
    return evaluate(module, testX, testY, { batchSize: 500 }).accuracy;
  };
  const lasso = await accuracyAfter("mask-select{mode=data,ratio=0.5}");
  // The slimming recipe (|gamma| choice, no refit, no BN re-estimation; with data prune now chooses channels by data
  // and refits by default).
  const slim = await accuracyAfter("prune{ratio=0.5,select=gamma,reconstruct=false,recalibrate-bn=false}");
  assert.ok(lasso > slim + 0.5, `mask-select ${lasso}, prune ${slim}`);
});

Deno.test("mask-select data mode keeps a channel of every producer of a Concat-joined group; onnxruntime loads the result", async () => {
  // The fuzzer's "cnn" seed: a residual pair and a third conv joined by Concat before the classifier (one group of 16
  // channels over three producers); at ratio 0.5 the LASSO once chose all 8 of conv3's for removal.
  const model = seedModels().get("cnn")!;
  const calibration = calibrationTensor({ dtype: "f32", shape: [4, 3, 16, 16] });
  const { module, artifacts } = await compile(model, { passes: "mask-select{mode=data,ratio=0.5}", calibration });
  for (const name of ["conv1.w", "conv2.w", "conv3.w"]) {
    const w = module.graph.constants.find((c) => c.name === name)!;
    assert.ok(w.constant!.shape[0] >= 1, `${name} keeps ${w.constant!.shape[0]} channels`);
  }
  const x = calibrationTensor({ dtype: "f32", shape: [2, 3, 16, 16] });
  const ours = interpret(module, { x }).y;
  assert.equal(
    compareTensors((await runOnnxruntime(artifacts.get("model.onnx")!, { x })).y, ours, { rtol: 1e-4, atol: 1e-5 }),
    null,
  );
});
