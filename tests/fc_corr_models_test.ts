/**
 * The `fc-corr` pass on the project's trained models with FC layers: top-1 on
 * the 2,000 MNIST test images before and after (printed as a table, with
 * floors from measured runs), dense and CSR bytes, verification of every
 * pruned or merged model, ONNX-checker validity of its export, and agreement
 * of onnxruntime-node with the interpreter on it. Calibration: the 256 images
 * of `mnist_calib_x.npy`.
 * @module
 */
import assert from "node:assert/strict";
import { readNpyFile } from "../data/npy.ts";
import { defaultRegistry } from "../driver/compile.ts";
import { evaluate } from "../driver/evaluate.ts";
import { runOnnxruntime } from "../driver/onnxruntime.ts";
import { costOf } from "../ir/cost.ts";
import { Interpreter } from "../ir/interpreter.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnxFile } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import type { Tensor } from "../ir/tensor.ts";
import { verifyModule } from "../ir/verifier.ts";
import { runPipeline } from "../passes/manager.ts";
import type { StatValue } from "../passes/pass.ts";
import { parsePipeline } from "../passes/pipeline.ts";

const MODELS = decodeURIComponent(new URL("../examples/models/", import.meta.url).pathname);
const PYTHON = "/usr/bin/python3";
const testX = readNpyFile(`${MODELS}mnist_test_x.npy`);
const testY = readNpyFile(`${MODELS}mnist_test_y.npy`);
const calibX = readNpyFile(`${MODELS}mnist_calib_x.npy`);
const registry = defaultRegistry();

/** Model, pipeline and the accuracy floor (measured, less about half a point of slack). */
const CASES: readonly [string, string, number][] = [
  ["mlp.onnx", "fc-corr{threshold=0.05}", 0.95],
  ["mlp.onnx", "fc-corr{threshold=0.1}", 0.935],
  ["mlp.onnx", "fc-corr{granularity=neuron}", 0.96],
  ["mlp.onnx", "fc-corr{granularity=neuron,merge-threshold=0.9}", 0.955],
  ["vgg_dense.onnx", "fc-corr{threshold=0.1}", 0.98],
  ["vgg_dense.onnx", "fc-corr{threshold=0.2}", 0.975],
  ["vgg_dense.onnx", "fc-corr{granularity=neuron,merge-threshold=0.9}", 0.98],
  ["vgg_sparse.onnx", "fc-corr{threshold=0.2}", 0.965],
  ["vgg_sparse.onnx", "fc-corr{ratio=0.5}", 0.975],
  ["vgg_sparse.onnx", "fc-corr{granularity=neuron}", 0.98],
];

async function onnxChecker(bytes: Uint8Array): Promise<string> {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/model.onnx`;
    await Deno.writeFile(path, bytes);
    const out = await new Deno.Command(PYTHON, {
      args: ["-c", "import onnx,sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)", path],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return out.success ? "OK" : new TextDecoder().decode(out.stderr).trim().split("\n").pop()!;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const baseline = new Map<string, number>();
function accuracyOf(file: string): number {
  if (!baseline.has(file)) {
    const module = importOnnxFile(`${MODELS}${file}`);
    inferShapes(module);
    baseline.set(file, evaluate(module, testX, testY, { batchSize: 500 }).accuracy);
  }
  return baseline.get(file)!;
}

const rows: string[] = [];

for (const [file, pipeline, floor] of CASES) {
  Deno.test(`fc-corr on ${file} with ${pipeline}: accuracy, bytes, onnx.checker and onnxruntime`, async () => {
    const original = importOnnxFile(`${MODELS}${file}`);
    inferShapes(original);
    const module = importOnnxFile(`${MODELS}${file}`);
    inferShapes(module);
    const records = await runPipeline(module, parsePipeline(pipeline, registry), {
      registry,
      calibration: { input: calibX },
      verifyEach: true,
    });
    verifyModule(module);
    const stats = records[0].stats as Record<string, StatValue>;
    const before = costOf(original).totals;
    const after = costOf(module).totals;
    const accuracy = evaluate(module, testX, testY, { batchSize: 500 }).accuracy;
    const neuron = pipeline.includes("neuron");
    if (neuron) {
      assert.ok((stats["neurons-removed"] as number) > 0, "some neurons merged");
      assert.ok(after.params < before.params, `params ${after.params} >= ${before.params}`);
      assert.equal(after.sparseWeightBytes, after.weightBytes, "merging leaves the weights dense");
    } else {
      assert.ok((stats["connections-removed"] as number) > 0, "some connections removed");
      assert.equal(after.weightBytes, before.weightBytes, "zeroed weights still take their dense bytes");
      assert.ok(after.sparseWeightBytes <= after.weightBytes);
    }
    rows.push(
      `| ${file} | \`${pipeline}\` | ${
        neuron ? `${stats["neurons-removed"]} neurons` : `${stats["connections-removed"]} / ${stats["connections"]}`
      } | ${before.weightBytes} | ${after.weightBytes} | ${after.sparseWeightBytes} | ${
        (100 * accuracyOf(file)).toFixed(2)
      }% | ${(100 * accuracy).toFixed(2)}% | ${records[0].ms.toFixed(0)} |`,
    );
    assert.ok(accuracy >= floor, `accuracy ${accuracy} < ${floor}`);

    const bytes = exportOnnx(module);
    assert.equal(await onnxChecker(bytes), "OK");
    const n = 64;
    const x: Tensor = {
      dtype: "f32",
      shape: [n, ...testX.shape.slice(1)],
      data: (testX.data as Float32Array).subarray(0, n * testX.shape.slice(1).reduce((a, b) => a * b, 1)),
    };
    const output = module.graph.outputs[0].name;
    const ours = new Interpreter(module).run({ input: x })[output].data as Float32Array;
    const theirs = (await runOnnxruntime(bytes, { input: x }))[output].data as Float32Array;
    assert.equal(ours.length, theirs.length);
    let worst = 0;
    for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs(ours[i] - theirs[i]));
    assert.ok(worst < 1e-4, `largest logit difference ${worst}`);
  });
}

Deno.test("fc-corr on the trained models: the table", () => {
  console.log(
    "\n| model | pipeline | removed | weight B before | weight B after (dense) | after (CSR where smaller) | " +
      "acc before | acc after | pass ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const r of rows) console.log(r);
});
