/**
 * The `mask-select` issue's table: per model and pipeline, channels removed,
 * MACs, parameters, weight bytes (dense, and with sparse matrices in CSR),
 * top-1 on the 2,000 MNIST test images (no fine-tuning) and the pipeline
 * time. Calibration: the 256 images of `mnist_calib_x.npy`.
 *
 *   deno run -A bench/mask_select_table.ts
 * @module
 */
import { readNpyFile } from "../data/npy.ts";
import { defaultRegistry } from "../driver/compile.ts";
import { evaluate } from "../driver/evaluate.ts";
import { costOf } from "../ir/cost.ts";
import { importOnnxFile } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import { runPipeline } from "../passes/manager.ts";
import { parsePipeline } from "../passes/pipeline.ts";

const MODELS = decodeURIComponent(new URL("../examples/models/", import.meta.url).pathname);
const CASES: readonly [string, string][] = [
  ["masknet.onnx", "mask-select"],
  ["masknet.onnx", "mask-select{threshold=0.05}"],
  ["masknet.onnx", "mask-select,fc-corr{threshold=0.1}"],
  ["masknet.onnx", "mask-select,fc-corr{threshold=0.2}"],
  ["vgg_dense.onnx", "mask-select{mode=data,ratio=0.5}"],
  ["vgg_dense.onnx", "prune{ratio=0.5}"],
  ["vgg_dense.onnx", "mask-select{mode=data,ratio=0.5},fc-corr{threshold=0.1}"],
  ["vgg_dense.onnx", "mask-select{mode=data,ratio=0.7}"],
];

const testX = readNpyFile(`${MODELS}mnist_test_x.npy`);
const testY = readNpyFile(`${MODELS}mnist_test_y.npy`);
const calibX = readNpyFile(`${MODELS}mnist_calib_x.npy`);
const registry = defaultRegistry();
const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

console.log("| model | pipeline | MACs | params | weight B dense | weight B sparse | top-1 | ms |");
console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
const seen = new Set<string>();
for (const [file, pipeline] of CASES) {
  const module = importOnnxFile(`${MODELS}${file}`);
  inferShapes(module);
  if (!seen.has(file)) {
    seen.add(file);
    const c = costOf(module).totals;
    const acc = evaluate(module, testX, testY, { batchSize: 500 }).accuracy;
    console.log(
      `| ${file} | (original) | ${c.macs} | ${c.params} | ${c.weightBytes} | ${c.sparseWeightBytes} | ${pct(acc)} | |`,
    );
  }
  const t0 = performance.now();
  await runPipeline(module, parsePipeline(pipeline, registry), { registry, calibration: { input: calibX } });
  const ms = performance.now() - t0;
  const c = costOf(module).totals;
  const acc = evaluate(module, testX, testY, { batchSize: 500 }).accuracy;
  console.log(
    `| ${file} | \`${pipeline}\` | ${c.macs} | ${c.params} | ${c.weightBytes} | ${c.sparseWeightBytes} | ${
      pct(acc)
    } | ${ms.toFixed(0)} |`,
  );
}
