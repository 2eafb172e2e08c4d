/**
 * The design card's pipeline end to end at the scale users bring: a VGG-16-BN-sized model (138M parameters,
 * 553 MB, 224x224) and a ResNet-50-sized one (25.6M parameters, 102 MB) are built in memory, written as ONNX to a
 * temporary folder, and compiled by the CLI in a child process as a user runs it (`deno run --allow-read
 * --allow-write compile.ts MODEL --passes ... --target ... --out DIR`, as `deno task compile`), under
 * `/usr/bin/time -f %M`: wall time (with Deno's start) and peak resident memory of the child.
 *
 *   deno run -A bench/scale_bench.ts                          (both models, with and without svd, target onnx)
 *   deno run -A bench/scale_bench.ts --model vgg16 --no-svd --target c
 *   deno run -A bench/scale_bench.ts --model vgg16 --passes fold-bn     (any other pipeline)
 *   deno run -A bench/scale_bench.ts --baseline /work/main   (each run again with another checkout's CLI)
 *   deno run -A bench/scale_bench.ts --model vgg16 --passes fold-bn,bfp --calib 256   (256 seeded random
 *                                                 calibration images, uniform in [-2, 2), batch dimension symbolic)
 *   SCALE_BENCH_TIMEOUT_S=600 deno run -A bench/scale_bench.ts   (give up on a run after 10 min; default 1800 s)
 *
 * Goal (issue 17): VGG-16 under 3 min, peak resident memory at most 2.5x the model's bytes.
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { attr } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { Module } from "../ir/module.ts";
import { saveOnnx } from "../ir/onnx/export.ts";
import { addConstant } from "../ir/rewriter.ts";
import { inferShapes } from "../ir/shape.ts";
import { type Tensor, tensor } from "../ir/tensor.ts";
import { writeNpy } from "../data/npy.ts";

/** VGG-16 configuration D: conv widths, `M` = 2x2 max-pool. */
const VGG16: readonly (number | "M")[] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M"];
const VGG16_TAIL: readonly (number | "M")[] = [512, 512, 512, "M", 512, 512, 512, "M"];

/** Deterministic uniform values in `[-scale/2, scale/2)` (a linear congruential generator seeded by `seed`). */
function randomTensor(shape: number[], seed: number, scale: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    data[i] = (s / 4294967296 - 0.5) * scale;
  }
  return tensor("f32", shape, data);
}

/** Builds a graph op by op: `add` appends an op with int/ints attributes and returns its result. */
class Builder {
  readonly graph: Graph;
  #layer = 0;

  constructor(name: string, input: (number | string)[]) {
    this.graph = new Graph(name);
    this.x = this.graph.addInput(new Value("input", { elem: "f32", shape: input }));
  }

  /** The current activation. */
  x: Value;

  add(type: string, operands: Value[], attrs: [string, number | number[]][] = []): Value {
    const out = new Value(this.graph.freshName(type.toLowerCase()));
    const op = new Op({ name: out.name, type, operands, results: [out] });
    for (const [k, v] of attrs) op.attributes.set(k, Array.isArray(v) ? attr.ints(v) : attr.int(v));
    this.graph.addOp(op);
    return out;
  }

  /**
   * Conv (with bias) + BatchNormalization (+ Relu) from `x`; BN gammas spread over decades, as after L1 training,
   * so that pruning finds channels to remove.
   */
  convBn(x: Value, cin: number, cout: number, k: number, stride: number, relu: boolean): Value {
    const layer = ++this.#layer;
    const g = this.graph;
    const w = addConstant(
      g,
      `conv${layer}.weight`,
      randomTensor([cout, cin, k, k], layer, Math.sqrt(2 / (k * k * cin))),
    );
    const b = addConstant(g, `conv${layer}.bias`, randomTensor([cout], layer + 1000, 0.1));
    const p = (k - 1) >> 1;
    let y = this.add("Conv", [x, w, b], [["pads", [p, p, p, p]], ["kernel_shape", [k, k]], ["strides", [
      stride,
      stride,
    ]]]);
    const gamma = randomTensor([cout], layer + 2000, 1);
    const gd = gamma.data as Float32Array;
    for (let i = 0; i < cout; i++) gd[i] = 10 ** (-8 * Math.abs(gd[i]));
    const params = [
      gamma,
      randomTensor([cout], layer + 3000, 0.2),
      randomTensor([cout], layer + 4000, 0.1),
      tensor("f32", [cout], new Float32Array(cout).fill(1)),
    ];
    const names = ["scale", "bias", "mean", "var"];
    y = this.add("BatchNormalization", [y, ...params.map((t, i) => addConstant(g, `bn${layer}.${names[i]}`, t))]);
    return relu ? this.add("Relu", [y]) : y;
  }

  /** A fully connected layer `[N,fin] -> [N,fout]` (Gemm with transB). */
  fc(x: Value, fin: number, fout: number): Value {
    const layer = ++this.#layer;
    const w = addConstant(this.graph, `fc${layer}.weight`, randomTensor([fout, fin], layer, Math.sqrt(2 / fin)));
    const b = addConstant(this.graph, `fc${layer}.bias`, randomTensor([fout], layer + 1000, 0.1));
    return this.add("Gemm", [x, w, b], [["transB", 1]]);
  }

  finish(output: Value): Module {
    this.graph.outputs.push(output);
    const m = new Module(this.graph);
    inferShapes(m);
    return m;
  }
}

/**
 * VGG-16 (configuration D) with BatchNormalization after every conv, 224x224x3 input, 1000 classes: 138M parameters.
 *
 * @example
 * ```ts ignore
 * const m = buildVgg16(); // 553 MB of weights
 * ```
 */
export function buildVgg16(batch: number | string = 1): Module {
  const b = new Builder("vgg16", [batch, 3, 224, 224]);
  let x = b.x;
  let c = 3;
  for (const v of [...VGG16, ...VGG16_TAIL]) {
    if (v === "M") {
      x = b.add("MaxPool", [x], [["kernel_shape", [2, 2]], ["strides", [2, 2]]]);
      continue;
    }
    x = b.convBn(x, c, v, 3, 1, true);
    c = v;
  }
  x = b.add("Flatten", [x], [["axis", 1]]);
  x = b.add("Relu", [b.fc(x, 512 * 7 * 7, 4096)]);
  x = b.add("Relu", [b.fc(x, 4096, 4096)]);
  return b.finish(b.fc(x, 4096, 1000));
}

/** ResNet-50 (bottleneck blocks 3-4-6-3, 224x224x3 input, 1000 classes): 25.6M parameters. */
export function buildResnet50(batch: number | string = 1): Module {
  const b = new Builder("resnet50", [batch, 3, 224, 224]);
  let x = b.convBn(b.x, 3, 64, 7, 2, true);
  x = b.add("MaxPool", [x], [["kernel_shape", [3, 3]], ["strides", [2, 2]], ["pads", [1, 1, 1, 1]]]);
  let c = 64;
  for (const [stage, [blocks, width]] of [[3, 64], [4, 128], [6, 256], [3, 512]].entries()) {
    for (let i = 0; i < blocks; i++) {
      const stride = i === 0 && stage > 0 ? 2 : 1;
      const out = width * 4;
      let y = b.convBn(x, c, width, 1, 1, true);
      y = b.convBn(y, width, width, 3, stride, true);
      y = b.convBn(y, width, out, 1, 1, false);
      const shortcut = i === 0 ? b.convBn(x, c, out, 1, stride, false) : x;
      x = b.add("Relu", [b.add("Add", [y, shortcut])]);
      c = out;
    }
  }
  x = b.add("Flatten", [b.add("GlobalAveragePool", [x])], [["axis", 1]]);
  return b.finish(b.fc(x, 2048, 1000));
}

/** Bytes of every constant of a module (its weights). */
function weightBytes(m: Module): number {
  let n = 0;
  for (const v of m.graph.constants) n += (v.constant!.data as Float32Array).byteLength;
  return n;
}

/** Wall time and peak resident memory of one CLI run, or why it did not finish. */
interface RunResult {
  seconds: number;
  peakBytes: number;
  failure?: string;
}

/**
 * Run the CLI on `model` under `/usr/bin/time -f %M`, stopping it after `timeoutS` seconds (SIGTERM: `timeout -s KILL`
 * would kill `timeout` itself, and with it the record of the child's peak memory).
 */
async function timeCompile(
  cli: string,
  model: string,
  passes: string,
  target: string,
  out: string,
  timeoutS: number,
  calib: string | null,
) {
  const args = [
    "-f",
    "%M",
    "timeout",
    "-k",
    "10",
    String(timeoutS),
    Deno.execPath(),
    "run",
    "--allow-read",
    "--allow-write",
    cli,
    model,
  ];
  args.push("--passes", passes, "--target", target, "--out", out, "--quiet", "--force");
  if (calib !== null) args.push("--calib", calib);
  const t0 = performance.now();
  const { code, stderr } = await new Deno.Command("/usr/bin/time", { args, stdout: "null", stderr: "piped" }).output();
  const seconds = (performance.now() - t0) / 1000;
  const lines = new TextDecoder().decode(stderr).trim().split("\n");
  const peakBytes = Number(lines.at(-1)) * 1024;
  const result: RunResult = { seconds, peakBytes };
  if (code !== 0) {
    result.failure = seconds >= timeoutS
      ? `stopped after ${timeoutS} s (peak so far)`
      : lines.slice(0, -1).join(" | ").slice(0, 300);
  }
  return result;
}

const DESIGN_CARD = "prune{ratio=0.5},fold-bn,canonicalize,dce,svd{energy=0.9},bfp";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string", default: "all" },
      target: { type: "string", multiple: true },
      "no-svd": { type: "boolean", default: false },
      "only-svd": { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
      baseline: { type: "string" },
      passes: { type: "string" },
      calib: { type: "string" },
    },
  });
  const calibSamples = values.calib === undefined ? 0 : Number(values.calib);
  if (!Number.isInteger(calibSamples) || calibSamples < 0) {
    throw new Error(`--calib takes a number of calibration images, got "${values.calib}"`);
  }
  const timeoutS = Number(Deno.env.get("SCALE_BENCH_TIMEOUT_S") ?? 1800);
  const targets = values.target ?? ["onnx"];
  const pipelines = values.passes !== undefined
    ? [values.passes]
    : [DESIGN_CARD, DESIGN_CARD.replace(",svd{energy=0.9}", "")]
      .filter((p) => !(values["no-svd"] && p.includes("svd")) && !(values["only-svd"] && !p.includes("svd")));
  // With calibration images the batch dimension is symbolic, so the calibration batch fits the model's input.
  const batch = calibSamples > 0 ? "N" : 1;
  const builders: [string, () => Module][] = [["vgg16", () => buildVgg16(batch)], [
    "resnet50",
    () => buildResnet50(batch),
  ]];
  // --baseline /path/to/other/checkout: run its CLI on the same file right after ours, as the anchor.
  const clis: [string, string][] = [["", join(import.meta.dirname!, "..", "compile.ts")]];
  if (values.baseline !== undefined) clis.push(["baseline ", join(values.baseline, "compile.ts")]);
  const dir = Deno.makeTempDirSync({ prefix: "cnnc_scale_bench_" });
  try {
    let calib: string | null = null;
    if (calibSamples > 0) {
      calib = join(dir, "calib.npy");
      Deno.writeFileSync(calib, writeNpy(randomTensor([calibSamples, 3, 224, 224], 7, 4)));
    }
    for (const [name, build] of builders.filter(([n]) => values.model === "all" || values.model === n)) {
      const path = join(dir, `${name}.onnx`);
      let bytes: number;
      {
        const m = build();
        bytes = weightBytes(m);
        saveOnnx(m, path);
      }
      const fileBytes = Deno.statSync(path).size;
      console.log(
        `${name}: ${(bytes / 4 / 1e6).toFixed(1)}M params, ${(fileBytes / 1e6).toFixed(0)} MB (${path})` +
          (calib === null ? "" : `, ${calibSamples} calibration images`),
      );
      for (const target of targets) {
        for (const passes of pipelines) {
          for (const [label, cli] of clis) {
            const r = await timeCompile(cli, path, passes, target, join(dir, `out_${name}`), timeoutS, calib);
            const ratio = (r.peakBytes / fileBytes).toFixed(2);
            console.log(
              `  ${label}${passes} -> ${target}: ${r.seconds.toFixed(1)} s, peak RSS ${
                (r.peakBytes / 1e6).toFixed(0)
              } MB ` +
                `(${ratio}x the model)${r.failure === undefined ? "" : `  FAILED: ${r.failure}`}`,
            );
          }
        }
      }
    }
  } finally {
    if (!values.keep) Deno.removeSync(dir, { recursive: true });
    else console.log(`kept ${dir}`);
  }
}
