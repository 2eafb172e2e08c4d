/**
 * The golden model's speed on lowered (BFP or fixed-point) networks: each of
 * the project's trained models compiled with a pipeline and the 256
 * calibration images, then run by the interpreter on the first N MNIST test
 * images (batches of 100), median CPU time of several runs. With
 * `--baseline=DIR` the interpreter of another checkout (its
 * `ir/interpreter.ts`, e.g. `git worktree add DIR <commit>`) runs the same
 * module in the same process, interleaved run by run; its outputs must equal
 * this checkout's bit for bit (the kernel is the golden model), and the
 * speedup is the ratio of CPU times.
 *
 *   deno run -A bench/bfp_interpreter_bench.ts [--pipeline=fold-bn,canonicalize,dce,bfp] [--images=500] [--runs=3] [--models=densenet,mobilenet] [--baseline=DIR]
 * @module
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { readNpyFile } from "../data/npy.ts";
import { compile } from "../driver/compile.ts";
import { Interpreter } from "../ir/interpreter.ts";
import { type Tensor, tensor } from "../ir/tensor.ts";
import { cpuMs, median } from "./measure.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    pipeline: { type: "string", default: "fold-bn,canonicalize,dce,bfp" },
    images: { type: "string", default: "500" },
    runs: { type: "string", default: "3" },
    models: { type: "string" },
    baseline: { type: "string" },
  },
});
const MODELS = new URL("../examples/models/", import.meta.url).pathname;
const BATCH = 100;
const images = Number(flags.images), runs = Number(flags.runs);
const testX = readNpyFile(`${MODELS}mnist_test_x.npy`);
const calibration = readNpyFile(`${MODELS}mnist_calib_x.npy`);
const per = testX.shape.slice(1).reduce((a, b) => a * b, 1);
const batches: Tensor[] = [];
for (let i = 0; i < images; i += BATCH) {
  const n = Math.min(BATCH, images - i);
  const data = (testX.data as Float32Array).subarray(i * per, (i + n) * per);
  batches.push(tensor("f32", [n, ...testX.shape.slice(1)], data));
}

type InterpreterClass = typeof Interpreter;
const Baseline: InterpreterClass | null = flags.baseline === undefined
  ? null
  : (await import(new URL(`file://${resolve(flags.baseline, "ir/interpreter.ts")}`).href)).Interpreter;
const names = flags.models?.split(",") ??
  [...Deno.readDirSync(MODELS)].map((e) => e.name).filter((n) => n.endsWith(".onnx")).map((n) => n.slice(0, -5)).sort();

console.log(`pipeline ${flags.pipeline}, ${images} images in batches of ${BATCH}, median of ${runs} runs (CPU time)\n`);
console.log(`| model | interpreter ms/image |${Baseline === null ? "" : " baseline ms/image | speedup | outputs |"}`);
console.log(`| --- | ---: |${Baseline === null ? "" : " ---: | ---: | --- |"}`);
for (const name of names) {
  const { module } = await compile(Deno.readFileSync(`${MODELS}${name}.onnx`), {
    passes: flags.pipeline,
    calibration: { input: calibration },
    modelName: name,
  });
  const input = module.graph.inputs[0].name, output = module.graph.outputs[0].name;
  const ours = new Interpreter(module), theirs = Baseline === null ? null : new Baseline(module);
  const time = (run: (x: Tensor) => Tensor): { ms: number; outputs: Tensor[] } => {
    const c0 = cpuMs();
    const outputs = batches.map(run);
    return { ms: cpuMs() - c0, outputs };
  };
  const oursMs: number[] = [], theirsMs: number[] = [];
  let identical = true;
  for (let r = 0; r < runs; r++) {
    const a = time((x) => ours.run({ [input]: x })[output]);
    oursMs.push(a.ms);
    if (theirs === null) continue;
    const b = time((x) => theirs.run({ [input]: x })[output]);
    theirsMs.push(b.ms);
    identical &&= a.outputs.every((t, i) => t.data.every((v, j) => Object.is(v, b.outputs[i].data[j])));
  }
  const perImage = (ms: number[]): string => (median(ms) / images).toFixed(2);
  console.log(
    `| ${name} | ${perImage(oursMs)} |` +
      (theirs === null
        ? ""
        : ` ${perImage(theirsMs)} | ${(median(theirsMs) / median(oursMs)).toFixed(2)}x | ${
          identical ? "bit-identical" : "DIFFER"
        } |`),
  );
}
