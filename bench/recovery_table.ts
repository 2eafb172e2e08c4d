/**
 * The accuracy-recovery issue's table: top-1 on the 2,000 MNIST test images (no fine-tuning) per model and
 * pipeline, without calibration data (the old default, `compensation=beta` / no bias correction, and the new
 * data-free default) and with the 256 calibration images of `mnist_calib_x.npy` (the new default: refit and BN
 * re-estimation, prune's data-driven channel choice, svd's data-aware truncation), with the weight bytes of the
 * data run and its pipeline time.
 *
 *   deno run -A bench/recovery_table.ts [--only SUBSTRING]
 *   deno run -A bench/recovery_table.ts --cv MODEL PIPELINE...
 *
 * `--cv` picks settings without the test set: 4-fold cross-validation on the 256 calibration images (recovery on
 * 192, top-1 on the other 64 with `mnist_calib_y.npy`, summed over the folds).
 * @module
 */
import { readNpyFile } from "../data/npy.ts";
import { defaultRegistry } from "../driver/compile.ts";
import { evaluate } from "../driver/evaluate.ts";
import { costOf } from "../ir/cost.ts";
import type { Module } from "../ir/module.ts";
import { importOnnxFile } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import { float32Tensor, int64Tensor, type Tensor } from "../ir/tensor.ts";
import { runPipeline } from "../passes/manager.ts";
import { parsePipeline } from "../passes/pipeline.ts";

const MODELS = decodeURIComponent(new URL("../examples/models/", import.meta.url).pathname);

/** Model, the new pipeline, and the old default's spelling of it (the data-free recovery of before this issue). */
export const RECOVERY_CASES: readonly [string, string, string][] = [
  ["vgg_sparse", "prune{ratio=0.5}", "prune{ratio=0.5,compensation=beta}"],
  ["vgg_sparse", "prune{ratio=0.7}", "prune{ratio=0.7,compensation=beta}"],
  ["vgg_dense", "prune{ratio=0.5}", "prune{ratio=0.5,compensation=beta}"],
  ["vgg_dense", "prune{ratio=0.7}", "prune{ratio=0.7,compensation=beta}"],
  ["mobilenet", "prune{ratio=0.5}", "prune{ratio=0.5,compensation=beta}"],
  ["resnet_preact", "prune{ratio=0.5}", "prune{ratio=0.5,compensation=beta}"],
  ["densenet", "prune{ratio=0.5}", "prune{ratio=0.5,compensation=beta}"],
  ["vgg_dense", "prune{ratio=0.7,layer-cap=0.75}", "prune{ratio=0.7,layer-cap=0.75,compensation=beta}"],
  ["vgg_dense", "svd{speedup=3}", "svd{speedup=3,bias-correct=false}"],
  [
    "vgg_dense",
    "svd{budget=0.3333,budget-metric=macs}",
    "svd{budget=0.3333,budget-metric=macs,bias-correct=false}",
  ],
  ["mlp", "svd{speedup=4}", "svd{speedup=4,bias-correct=false}"],
  [
    "vgg_sparse",
    "prune{ratio=0.7},svd{speedup=2},bfp{mantissa=6}",
    "prune{ratio=0.7,compensation=beta},svd{speedup=2,bias-correct=false},bfp{mantissa=6}",
  ],
  [
    "vgg_sparse",
    "prune{ratio=0.7},svd{budget=0.5},bfp{mantissa=6}",
    "prune{ratio=0.7,compensation=beta},svd{budget=0.5,bias-correct=false},bfp{mantissa=6}",
  ],
  [
    "vgg_sparse",
    "prune{ratio=0.7},svd{energy=0.9},bfp{mantissa=6}",
    "prune{ratio=0.7,compensation=beta},svd{energy=0.9,bias-correct=false},bfp{mantissa=6}",
  ],
];

/** Top-1 of `model` after `pipeline` (with `calibration` when given), its weight bytes and the pipeline time. */
export async function recoveryRow(
  model: string,
  pipeline: string | null,
  calibration: Tensor | null,
  testX: Tensor,
  testY: Tensor,
): Promise<{ top1: number; weightBytes: number; ms: number }> {
  const registry = defaultRegistry();
  const module: Module = importOnnxFile(`${MODELS}${model}.onnx`);
  inferShapes(module);
  const t0 = performance.now();
  if (pipeline !== null) {
    const input = module.graph.inputs[0].name;
    await runPipeline(module, parsePipeline(pipeline, registry), {
      registry,
      calibration: calibration === null ? null : { [input]: calibration },
    });
  }
  const ms = performance.now() - t0;
  const top1 = evaluate(module, testX, testY, { batchSize: 500 }).accuracy;
  return { top1, weightBytes: costOf(module).totals.weightBytes, ms };
}

/** Samples `indices` of `t` (first axis). */
function take(t: Tensor, indices: readonly number[]): Tensor {
  const inner = t.shape.slice(1).reduce((a, b) => a * b, 1);
  const data = t.data as Float32Array | BigInt64Array;
  if (data instanceof BigInt64Array) return int64Tensor(indices.map((i) => Number(data[i])), [indices.length]);
  const out = new Float32Array(indices.length * inner);
  indices.forEach((i, j) => out.set(data.subarray(i * inner, (i + 1) * inner), j * inner));
  return float32Tensor([indices.length, ...t.shape.slice(1)], out);
}

/** 4-fold cross-validated top-1 of `model` after `pipeline` on the calibration images (see the module doc). */
export async function crossValidate(model: string, pipeline: string, calibX: Tensor, calibY: Tensor): Promise<number> {
  const n = calibX.shape[0];
  let correct = 0;
  for (let fold = 0; fold < 4; fold++) {
    const held = [...Array(n).keys()].filter((i) => i % 4 === fold);
    const fit = [...Array(n).keys()].filter((i) => i % 4 !== fold);
    const row = await recoveryRow(model, pipeline, take(calibX, fit), take(calibX, held), take(calibY, held));
    correct += Math.round(row.top1 * held.length);
  }
  return correct / n;
}

if (import.meta.main && Deno.args[0] === "--cv") {
  const calibX = readNpyFile(`${MODELS}mnist_calib_x.npy`);
  const calibY = readNpyFile(`${MODELS}mnist_calib_y.npy`);
  for (const pipeline of Deno.args.slice(2)) {
    const top1 = await crossValidate(Deno.args[1], pipeline, calibX, calibY);
    console.log(`${Deno.args[1]} \`${pipeline}\`: ${(100 * top1).toFixed(2)}% (4-fold, calibration images)`);
  }
} else if (import.meta.main) {
  const only = Deno.args[0] === "--only" ? Deno.args[1] : "";
  const testX = readNpyFile(`${MODELS}mnist_test_x.npy`);
  const testY = readNpyFile(`${MODELS}mnist_test_y.npy`);
  const calibX = readNpyFile(`${MODELS}mnist_calib_x.npy`);
  const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
  console.log(
    "| model | pipeline | original | old default, no data | new, no data | new, with data | weight bytes | ms (data) |",
  );
  console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  const originals = new Map<string, { top1: number; weightBytes: number }>();
  for (const [model, pipeline, old] of RECOVERY_CASES) {
    if (!`${model} ${pipeline}`.includes(only)) continue;
    if (!originals.has(model)) originals.set(model, await recoveryRow(model, null, null, testX, testY));
    const base = originals.get(model)!;
    const before = await recoveryRow(model, old, null, testX, testY);
    const free = await recoveryRow(model, pipeline, null, testX, testY);
    const data = await recoveryRow(model, pipeline, calibX, testX, testY);
    const ratio = (base.weightBytes / data.weightBytes).toFixed(1);
    console.log(
      `| ${model} | \`${pipeline}\` | ${pct(base.top1)} | ${pct(before.top1)} | ${pct(free.top1)} | ${
        pct(data.top1)
      } | ${data.weightBytes} (${ratio}x) | ${data.ms.toFixed(0)} |`,
    );
  }
}
