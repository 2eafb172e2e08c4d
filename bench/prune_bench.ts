/**
 * `prune{ratio=0.5}` on a synthetic VGG-16 (13 conv + BN + ReLU, 5 max-pools,
 * 3 FC layers; 224x224x3 input; 138M parameters) built in memory with the IR
 * API. Records the pass's time and the process's peak resident memory.
 *
 *   deno bench -A bench/prune_bench.ts     (timing over a few runs)
 *   deno run -A bench/prune_bench.ts       (one run: time, peak RSS, params/MACs before and after)
 * @module
 */
import { defaultRegistry } from "../driver/compile.ts";
import { attr } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { Module } from "../ir/module.ts";
import { addConstant } from "../ir/rewriter.ts";
import { inferShapes } from "../ir/shape.ts";
import { type Tensor, tensor } from "../ir/tensor.ts";
import { tensorType } from "../ir/types.ts";
import { type PassRecord, runPipeline } from "../passes/manager.ts";
import { parsePipeline } from "../passes/pipeline.ts";

/** VGG-16 configuration D: conv widths, `M` = 2x2 max-pool. */
const VGG16: readonly (number | "M")[] = [
  64,
  64,
  "M",
  128,
  128,
  "M",
  256,
  256,
  256,
  "M",
  512,
  512,
  512,
  "M",
  512,
  512,
  512,
  "M",
];

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

/** Build VGG-16 with BatchNormalization after every conv (gammas spread over decades, as after L1 training). */
export function buildVgg16(): Module {
  const g = new Graph("vgg16");
  let x = g.addInput(new Value("input", tensorType("f32", [1, 3, 224, 224])));
  let c = 3;
  let layer = 0;
  const add = (type: string, operands: Value[], attrs: [string, number | number[]][] = []): Value => {
    const name = `${type.toLowerCase()}${layer}`;
    const out = new Value(g.freshName(name));
    const op = new Op({ name: out.name, type, operands, results: [out] });
    for (const [k, v] of attrs) op.attributes.set(k, Array.isArray(v) ? attr.ints(v) : attr.int(v));
    g.addOp(op);
    return out;
  };
  for (const v of VGG16) {
    layer++;
    if (v === "M") {
      x = add("MaxPool", [x], [["kernel_shape", [2, 2]], ["strides", [2, 2]]]);
      continue;
    }
    const w = addConstant(g, `conv${layer}.weight`, randomTensor([v, c, 3, 3], layer, Math.sqrt(2 / (9 * c))));
    const b = addConstant(g, `conv${layer}.bias`, randomTensor([v], layer + 100, 0.1));
    x = add("Conv", [x, w, b], [["pads", [1, 1, 1, 1]], ["kernel_shape", [3, 3]]]);
    const gamma = randomTensor([v], layer + 200, 1);
    const gd = gamma.data as Float32Array;
    for (let i = 0; i < v; i++) gd[i] = 10 ** (-4 * Math.abs(gd[i]) * 2);
    const params = [
      gamma,
      randomTensor([v], layer + 300, 0.2),
      randomTensor([v], layer + 400, 0.1),
      tensor("f32", [v], new Float32Array(v).fill(1)),
    ];
    const names = ["scale", "bias", "mean", "var"];
    x = add("BatchNormalization", [x, ...params.map((t, i) => addConstant(g, `bn${layer}.${names[i]}`, t))]);
    x = add("Relu", [x]);
    c = v;
  }
  x = add("Flatten", [x], [["axis", 1]]);
  for (const [i, [fin, fout]] of [[512 * 7 * 7, 4096], [4096, 4096], [4096, 1000]].entries()) {
    layer++;
    const w = addConstant(g, `fc${i + 1}.weight`, randomTensor([fout, fin], layer, Math.sqrt(2 / fin)));
    const b = addConstant(g, `fc${i + 1}.bias`, randomTensor([fout], layer + 100, 0.1));
    x = add("Gemm", [x, w, b], [["transB", 1]]);
    if (i < 2) x = add("Relu", [x]);
  }
  g.outputs.push(x);
  const m = new Module(g);
  inferShapes(m);
  return m;
}

const registry = defaultRegistry();
const steps = parsePipeline("prune{ratio=0.5}", registry);

/** Peak resident set size of this process so far (Linux VmHWM), in bytes; falls back to the current RSS. */
function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return Deno.memoryUsage().rss;
}

async function pruneOnce(m: Module): Promise<PassRecord> {
  const [rec] = await runPipeline(m, steps, { registry, verifyEach: false });
  return rec;
}

Deno.bench({
  name: "prune{ratio=0.5}, synthetic VGG-16 (138M params, 224x224)",
  n: 3,
  warmup: 1,
  async fn(b) {
    const m = buildVgg16();
    b.start();
    await pruneOnce(m);
    b.end();
  },
});

if (import.meta.main) {
  const m = buildVgg16();
  const rssBuilt = Deno.memoryUsage().rss;
  const peakBuilt = peakRss();
  const t0 = performance.now();
  const rec = await pruneOnce(m);
  const ms = performance.now() - t0;
  const mb = (n: number): string => `${(n / 2 ** 20).toFixed(0)} MiB`;
  console.log(`prune{ratio=0.5} on synthetic VGG-16: ${ms.toFixed(0)} ms`);
  console.log(
    `params ${rec.stats["params-before"]} -> ${rec.stats["params-after"]}, MACs ${rec.stats["macs-before"]} -> ${
      rec.stats["macs-after"]
    }`,
  );
  console.log(
    `channels ${rec.stats["channels-before"]} -> ${rec.stats["channels-after"]}, threshold ${rec.stats.threshold}`,
  );
  console.log(
    `RSS after build ${mb(rssBuilt)} (peak ${mb(peakBuilt)}); after prune ${mb(Deno.memoryUsage().rss)}, peak ${
      mb(peakRss())
    }`,
  );
}
