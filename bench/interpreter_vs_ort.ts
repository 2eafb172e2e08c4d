/**
 * The reference interpreter beside onnxruntime-node (1 thread) per image on
 * real networks: torchvision models exported at bench time (random weights,
 * opset 13, 1x3x224x224; cached in `$TMPDIR/cnnc_interp_bench/`, never
 * committed), and PaddleOCR's direction classifier (1x3x48x192) when a path to
 * `ch_ppocr_mobile_v2.0_cls_infer.onnx` is given. Both run the same input in
 * the same process; prints the median of each and their ratio per model, in
 * wall-clock time and in CPU time (the steadier figure on a loaded machine).
 *
 *   OPENBLAS_NUM_THREADS=1 deno run -A bench/interpreter_vs_ort.ts [--runs=5] [--warmup=3] [--models=resnet18,mobilenet_v2] [--paddle=/tmp/package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx] [--baseline=DIR]
 *
 * `--baseline=DIR` also runs the interpreter of another checkout (its
 * `ir/interpreter.ts`, e.g. `git archive <commit> | tar -x -C DIR`) on the
 * same module, the three interleaved run by run, and prints its CPU time and
 * the speedup of this checkout over it.
 *
 * Exporting needs /usr/bin/python3 with torch 1.13 and torchvision 0.14.
 * @module
 */
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { fromOrtTensor, loadOnnxruntime, toOrtTensor } from "../driver/onnxruntime.ts";
import { Interpreter } from "../ir/interpreter.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import { type Tensor, tensor } from "../ir/tensor.ts";

const PYTHON = "/usr/bin/python3";
const DIR = join(Deno.env.get("TMPDIR") ?? "/tmp", "cnnc_interp_bench");
const DEFAULT_MODELS = [
  "resnet18",
  "resnet50",
  "vgg16",
  "mobilenet_v2",
  "mobilenet_v3_small",
  "mobilenet_v3_large",
  "efficientnet_b0",
  "mnasnet1_0",
];
const EXPORT = `
import os, sys, torch, torchvision
torch.manual_seed(0)
m = getattr(torchvision.models, sys.argv[2])().eval()
torch.onnx.export(m, torch.randn(1, 3, 224, 224), sys.argv[1], opset_version=13,
                  input_names=["input"], output_names=["output"], do_constant_folding=True)
`;
import { cpuMs, median } from "./measure.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "5" },
    warmup: { type: "string", default: "3" },
    models: { type: "string" },
    paddle: { type: "string" },
    baseline: { type: "string" },
  },
});
const runs = Number(flags.runs);
const warmup = Number(flags.warmup);

async function torchvisionModel(name: string): Promise<string> {
  const path = join(DIR, `${name}.onnx`);
  try {
    await Deno.stat(path);
    return path;
  } catch { /* not exported yet */ }
  await Deno.mkdir(DIR, { recursive: true });
  const out = await new Deno.Command(PYTHON, { args: ["-c", EXPORT, path, name], stderr: "piped" }).output();
  if (!out.success) throw new Error(`exporting ${name} with ${PYTHON} failed: ${new TextDecoder().decode(out.stderr)}`);
  return path;
}

/** Deterministic input in [-1, 1). */
function input(shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = ((i * 2654435761) % 2000) / 1000 - 1;
  return tensor("f32", shape, data);
}

const ort = await loadOnnxruntime();
type InterpreterClass = typeof Interpreter;
const Baseline: InterpreterClass | null = flags.baseline === undefined
  ? null
  : (await import(new URL(`file://${resolve(flags.baseline, "ir/interpreter.ts")}`).href)).Interpreter;
const cases: [string, string, number[]][] = [];
for (const name of flags.models?.split(",") ?? DEFAULT_MODELS) {
  cases.push([name, await torchvisionModel(name), [1, 3, 224, 224]]);
}
if (flags.paddle !== undefined) cases.push(["paddleocr_cls", flags.paddle, [1, 3, 48, 192]]);

const baselineColumns = Baseline === null ? "" : " baseline CPU ms | speedup over baseline in CPU time |";
console.log(
  `| model | interpreter ms (median of ${runs}) | onnxruntime 1 thread ms | ratio | ratio in CPU time | max abs diff |${baselineColumns}`,
);
console.log(`|---|---|---|---|---|---|${Baseline === null ? "" : "---|---|"}`);
for (const [name, path, shape] of cases) {
  const bytes = Deno.readFileSync(path);
  const module = importOnnx(bytes);
  inferShapes(module);
  const inputName = module.graph.inputs[0].name;
  const outputName = module.graph.outputs[0].name;
  const x = input(shape);
  const interpreter = new Interpreter(module);
  const baseline = Baseline === null ? null : new Baseline(module);
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const feeds = { [inputName]: toOrtTensor(ort, x) };
  // Warm-up runs let V8 optimize the kernels for this model's shapes, as on the second image of a data set.
  let ours: Tensor = interpreter.run({ [inputName]: x })[outputName];
  let theirs: Tensor = fromOrtTensor((await session.run(feeds))[outputName]);
  for (let r = 1; r < warmup; r++) {
    interpreter.run({ [inputName]: x });
    baseline?.run({ [inputName]: x });
    await session.run(feeds);
  }
  const oursMs: number[] = [], ortMs: number[] = [], oursCpu: number[] = [], ortCpu: number[] = [];
  const baselineCpu: number[] = [];
  for (let r = 0; r < runs; r++) {
    if (baseline !== null) {
      const c0 = cpuMs();
      baseline.run({ [inputName]: x });
      baselineCpu.push(cpuMs() - c0);
    }
    let t0 = performance.now(), c0 = cpuMs();
    ours = interpreter.run({ [inputName]: x })[outputName];
    oursMs.push(performance.now() - t0);
    oursCpu.push(cpuMs() - c0);
    t0 = performance.now(), c0 = cpuMs();
    theirs = fromOrtTensor((await session.run(feeds))[outputName]);
    ortMs.push(performance.now() - t0);
    ortCpu.push(cpuMs() - c0);
  }
  await session.release();
  let diff = 0;
  for (let i = 0; i < ours.data.length; i++) {
    diff = Math.max(diff, Math.abs((ours.data[i] as number) - (theirs.data[i] as number)));
  }
  const a = median(oursMs), b = median(ortMs);
  const cpuRatio = median(oursCpu) / median(ortCpu);
  console.log(
    `| ${name} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(a / b).toFixed(1)}x | ${cpuRatio.toFixed(1)}x | ${
      diff.toExponential(1)
    } |${
      baseline === null
        ? ""
        : ` ${median(baselineCpu).toFixed(1)} | ${(median(baselineCpu) / median(oursCpu)).toFixed(2)}x |`
    }`,
  );
}
