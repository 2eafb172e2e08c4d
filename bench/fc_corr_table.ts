/**
 * The `fc-corr` pass on the trained models with FC layers (the `fc-corr`
 * issue's table): per configuration, connections removed (or neurons merged),
 * the FC weight bytes dense and in CSR, whole-model weight bytes (dense and
 * with sparse matrices in CSR), top-1 on the 2,000 MNIST test images before
 * and after, and the pass time. Calibration: the 256 images of
 * `mnist_calib_x.npy`.
 *
 *   deno run -A bench/fc_corr_table.ts [model.onnx ...]
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
const PIPELINES = [
  "fc-corr{threshold=0.05}",
  "fc-corr{threshold=0.1}",
  "fc-corr{threshold=0.2}",
  "fc-corr{threshold=0.3}",
  "fc-corr{threshold=0.1,bias-correction=false}",
  "fc-corr{ratio=0.5}",
  "fc-corr{ratio=0.8}",
  "fc-corr{ratio=0.9}",
  "fc-corr{threshold=0.2,keep-last=false}",
  "fc-corr{granularity=neuron}",
  "fc-corr{granularity=neuron,merge-threshold=0.95}",
  "fc-corr{granularity=neuron,merge-threshold=0.9}",
];

const testX = readNpyFile(`${MODELS}mnist_test_x.npy`);
const testY = readNpyFile(`${MODELS}mnist_test_y.npy`);
const calibX = readNpyFile(`${MODELS}mnist_calib_x.npy`);
const files = Deno.args.length > 0 ? Deno.args : ["mlp.onnx", "vgg_dense.onnx", "vgg_sparse.onnx"];
const registry = defaultRegistry();
const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

console.log(
  "| model | pipeline | removed | FC dense B | FC CSR B | model B dense | model B sparse | params | acc before | acc after | pass ms |",
);
console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const file of files) {
  const original = importOnnxFile(`${MODELS}${file}`);
  inferShapes(original);
  const before = evaluate(original, testX, testY, { batchSize: 500 }).accuracy;
  const base = costOf(original).totals;
  console.log(
    `| ${file} | (original) | | | | ${base.weightBytes} | ${base.sparseWeightBytes} | ${base.params} | ${
      pct(before)
    } | | |`,
  );
  for (const pipeline of PIPELINES) {
    const module = importOnnxFile(`${MODELS}${file}`);
    inferShapes(module);
    const records = await runPipeline(module, parsePipeline(pipeline, registry), {
      registry,
      calibration: { input: calibX },
      verifyEach: true,
    });
    const record = records[records.length - 1];
    const s = record.stats as Record<string, number>;
    const cost = costOf(module).totals;
    const after = evaluate(module, testX, testY, { batchSize: 500 }).accuracy;
    const removed = pipeline.includes("neuron")
      ? `${s["neurons-removed"]} neurons`
      : `${s["connections-removed"]} / ${s["connections"]}`;
    const dense = pipeline.includes("neuron") ? "" : String(s["dense-bytes"]);
    const csr = pipeline.includes("neuron") ? "" : String(s["csr-bytes"]);
    console.log(
      `| ${file} | \`${pipeline}\` | ${removed} | ${dense} | ${csr} | ${cost.weightBytes} | ${cost.sparseWeightBytes} | ${cost.params} | ${
        pct(before)
      } | ${pct(after)} | ${record.ms.toFixed(0)} |`,
    );
  }
}
