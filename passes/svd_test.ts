import assert from "node:assert/strict";
import type { Attribute } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { interpret } from "../ir/interpreter.ts";
import { Module } from "../ir/module.ts";
import { inferShapes } from "../ir/shape.ts";
import { float32Tensor, type Tensor } from "../ir/tensor.ts";
import type { Dim } from "../ir/types.ts";
import { verifyModule } from "../ir/verifier.ts";
import { runPipeline } from "./manager.ts";
import { defaultOptions, type OptionValues } from "./options.ts";
import { builtinPasses } from "./builtin.ts";
import { type Diagnostic, passLookup, type StatValue } from "./pass.ts";
import { parsePipeline, printPipeline } from "./pipeline.ts";
import { factorizeOp, svdOptions, svdPass } from "./svd.ts";
import { testPassContext } from "./testing.ts";

function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 16807) % 2147483647;
    return s / 2147483647 - 0.5;
  };
}

function randomTensor(shape: number[], seed: number): Tensor {
  const r = random(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return float32Tensor(shape, Float32Array.from({ length: n }, r));
}

type Attrs = [string, Attribute][];
const ints = (value: number[]): Attribute => ({ kind: "ints", value });
const int = (value: number): Attribute => ({ kind: "int", value });

/** One-layer module `y = op(x, w[, b])`, shapes inferred. */
function oneLayer(type: string, xShape: Dim[], weight: Tensor, bias: Tensor | null, attributes: Attrs): Module {
  const g = new Graph();
  const x = g.addInput(new Value("x", { elem: "f32", shape: xShape }));
  const w = g.addConstant("fc.weight", weight, { elem: "f32", shape: [...weight.shape] });
  const operands = [x, w];
  if (bias !== null) operands.push(g.addConstant("fc.bias", bias, { elem: "f32", shape: [...bias.shape] }));
  const op = g.addOp(new Op({ name: "fc", type, operands, results: [new Value("y")], attributes }));
  g.outputs.push(op.result);
  const m = new Module(g);
  inferShapes(m);
  return m;
}

function relativeError(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.data.length; i++) {
    num += (Number(a.data[i]) - Number(b.data[i])) ** 2;
    den += Number(a.data[i]) ** 2;
  }
  return Math.sqrt(num / den);
}

/** Factor the only layer at full rank and compare outputs before and after. */
function checkFullRank(m: Module, x: Tensor, mode: "channel" | "spatial" = "channel"): void {
  const before = interpret(m, { x }).y;
  const op = m.graph.ops[0];
  const rank = Math.min(...fullRankDims(m, mode));
  const weightError = factorizeOp(m, op, rank, mode);
  inferShapes(m);
  verifyModule(m);
  assert.equal(m.graph.ops.length, 2);
  const after = interpret(m, { x }).y;
  assert.ok(weightError < 1e-6, `weight error ${weightError}`);
  const err = relativeError(before, after);
  assert.ok(err < 1e-4, `output error ${err}`);
}

function fullRankDims(m: Module, mode: string): number[] {
  const op = m.graph.ops[0];
  const w = op.operand(1)!.constant!.shape;
  if (op.type !== "Conv") return [...w];
  return mode === "channel" ? [w[0], w[1] * w[2] * w[3]] : [w[1] * w[2], w[0] * w[3]];
}

Deno.test("factorizeOp() at full rank reproduces Gemm with transB=1, alpha, beta and bias", () => {
  const m = oneLayer("Gemm", ["N", 12], randomTensor([7, 12], 1), randomTensor([7], 2), [
    ["transB", int(1)],
    ["alpha", { kind: "float", value: 0.5 }],
    ["beta", { kind: "float", value: 2 }],
  ]);
  checkFullRank(m, randomTensor([5, 12], 3));
});

Deno.test("factorizeOp() gives the first Gemm a zero C before opset 11, where C is required", () => {
  const m = oneLayer("Gemm", ["N", 6], randomTensor([6, 4], 16), randomTensor([4], 17), []);
  m.opsets.set("", 9);
  checkFullRank(m, randomTensor([3, 6], 18));
  assert.deepEqual(m.graph.ops[0].operands.map((v) => v?.name), ["x", "fc.svd.v", "fc.svd.zero"]);
  assert.deepEqual(m.graph.ops[0].operand(2)!.constant!.shape, [4]);
});

Deno.test("factorizeOp() at full rank reproduces Gemm with transB=0 and transA=1", () => {
  const m = oneLayer("Gemm", [12, "N"], randomTensor([12, 9], 4), randomTensor([9], 5), [["transA", int(1)]]);
  checkFullRank(m, randomTensor([12, 4], 6));
});

Deno.test("factorizeOp() at full rank reproduces MatMul by a constant weight (batched input)", () => {
  const m = oneLayer("MatMul", [2, "N", 10], randomTensor([10, 6], 7), null, []);
  checkFullRank(m, randomTensor([2, 3, 10], 8));
});

const convAttrs = (strides: number[], pads: number[], dilations: number[], k: number[]): Attrs => [
  ["kernel_shape", ints(k)],
  ["strides", ints(strides)],
  ["pads", ints(pads)],
  ["dilations", ints(dilations)],
];

Deno.test("factorizeOp() at full rank reproduces Conv in channel mode with strides, pads and dilations", () => {
  const m = oneLayer(
    "Conv",
    ["N", 3, 11, 10],
    randomTensor([5, 3, 3, 2], 9),
    randomTensor([5], 10),
    convAttrs([2, 1], [1, 0, 2, 1], [2, 1], [3, 2]),
  );
  checkFullRank(m, randomTensor([2, 3, 11, 10], 11), "channel");
});

Deno.test("factorizeOp() at full rank reproduces Conv in spatial mode with strides, pads and dilations", () => {
  const m = oneLayer(
    "Conv",
    ["N", 3, 11, 10],
    randomTensor([5, 3, 3, 2], 12),
    randomTensor([5], 13),
    convAttrs([2, 3], [1, 2, 0, 1], [2, 2], [3, 2]),
  );
  checkFullRank(m, randomTensor([2, 3, 11, 10], 14), "spatial");
  const [first, second] = m.graph.ops;
  assert.deepEqual(first.ints("kernel_shape"), [3, 1]);
  assert.deepEqual(first.ints("strides"), [2, 1]);
  assert.deepEqual(first.ints("pads"), [1, 0, 0, 0]);
  assert.deepEqual(second.ints("kernel_shape"), [1, 2]);
  assert.deepEqual(second.ints("strides"), [1, 3]);
  assert.deepEqual(second.ints("pads"), [0, 2, 0, 1]);
  assert.deepEqual(second.ints("dilations"), [1, 2]);
});

Deno.test("factorizeOp() rejects a grouped conv, naming it", () => {
  const m = oneLayer("Conv", ["N", 4, 5, 5], randomTensor([4, 2, 3, 3], 15), null, [
    ["group", int(2)],
    ["kernel_shape", ints([3, 3])],
  ]);
  assert.throws(() => factorizeOp(m, m.graph.ops[0], 2), {
    message: 'op "fc" (Conv): not a decomposable FC or groups=1 Conv with a constant weight',
  });
});

/** A `m x n` weight (transB layout) with singular values `s` (left/right vectors: permuted identities). */
function spectrumWeight(m: number, n: number, s: number[]): Tensor {
  const data = new Float32Array(m * n);
  s.forEach((v, i) => (data[i * n + ((i * 3) % n)] = v));
  return float32Tensor([m, n], data);
}

interface Run {
  changed: boolean;
  stats: Record<string, StatValue>;
  diagnostics: Diagnostic[];
  logs: string[];
}

function runSvd(
  m: Module,
  options: Partial<OptionValues<typeof svdOptions>>,
  calibration: Record<string, Tensor> | null = null,
): Run {
  const ctx = testPassContext({ module: m, calibration, pass: "svd" });
  const changed = svdPass.run(m, { ...defaultOptions(svdOptions), keepLast: false, ...options }, ctx) as boolean;
  return { changed, stats: ctx.stats, diagnostics: ctx.diagnostics, logs: ctx.logs };
}

function rankOf(run: Run, name = "fc"): number | undefined {
  const layers = run.stats.layers as Record<string, Record<string, number>>;
  return layers[name]?.rank;
}

const spectrum = [10, 8, 6, 4, 2, 1, 0.5, 0.25];
const energyOf = (k: number): number => spectrum.slice(0, k).reduce((a, v) => a + v * v, 0);
const gemm16 = (): Module => oneLayer("Gemm", ["N", 16], spectrumWeight(16, 16, spectrum), null, [["transB", int(1)]]);

Deno.test("svd energy=e keeps the fewest singular values holding e of the squared spectrum", () => {
  const total = energyOf(8);
  for (const energy of [0.5, 0.9, 0.99, 0.999]) {
    const expected = [1, 2, 3, 4, 5, 6, 7, 8].find((k) => energyOf(k) >= energy * total)!;
    const run = runSvd(gemm16(), { energy });
    assert.equal(rankOf(run), expected, `energy ${energy}`);
  }
});

Deno.test("svd rank=N keeps N values and reports params, MACs and the weight error", () => {
  const run = runSvd(gemm16(), { rank: 3 });
  const layer = (run.stats.layers as Record<string, Record<string, StatValue>>).fc;
  assert.equal(layer.rank, 3);
  assert.equal(layer["params-before"], 256);
  assert.equal(layer["params-after"], 3 * 32);
  assert.equal(layer["macs-after"], 3 * 32);
  const expected = Math.sqrt((energyOf(8) - energyOf(3)) / energyOf(8));
  assert.ok(Math.abs((layer["weight-error"] as number) - expected) < 1e-6);
  assert.deepEqual((layer.spectrum as number[]).slice(0, 3).map((x) => Math.round(x)), [10, 8, 6]);
  assert.equal(run.stats["params-after"], 96);
});

Deno.test("svd speedup=s picks the largest rank with MACs at most 1/s of the layer", () => {
  // 16x16: rank k costs 32k; speedup 2 → k ≤ 4; speedup 3 → k ≤ 2 (85.3 / 32).
  assert.equal(rankOf(runSvd(gemm16(), { speedup: 2 })), 4);
  assert.equal(rankOf(runSvd(gemm16(), { speedup: 3 })), 2);
});

Deno.test("svd leaves a layer alone when the rank is not cheaper (k >= m n / (m + n))", () => {
  // 16x16: breakeven 8; rank 8 costs 256 = m n.
  const run = runSvd(gemm16(), { rank: 8 });
  assert.equal(run.changed, false);
  assert.equal(run.stats["layers-decomposed"], 0);
  assert.ok(run.logs.some((l) => l.includes("rank 8 is not cheaper than the layer (at most 7)")));
  assert.equal(rankOf(runSvd(gemm16(), { rank: 7 })), 7);
});

/** Two FC layers, `a` (16x16, fast-decaying spectrum) and `b` (16x16, flat spectrum). */
function twoLayers(): Module {
  const g = new Graph();
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 16] }));
  const wa = spectrumWeight(16, 16, [10, 1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.01]);
  const wb = spectrumWeight(16, 16, [1, 1, 1, 1, 1, 1, 1, 1]);
  const a = g.addConstant("a.weight", wa, { elem: "f32", shape: [16, 16] });
  const b = g.addConstant("b.weight", wb, { elem: "f32", shape: [16, 16] });
  const opA = g.addOp(
    new Op({ name: "a", type: "Gemm", operands: [x, a], results: [new Value("ya")], attributes: [["transB", int(1)]] }),
  );
  const opB = g.addOp(
    new Op({
      name: "b",
      type: "Gemm",
      operands: [opA.result, b],
      results: [new Value("y")],
      attributes: [["transB", int(1)]],
    }),
  );
  g.outputs.push(opB.result);
  const m = new Module(g);
  inferShapes(m);
  return m;
}

Deno.test("svd budget=b cuts the layer with the least energy per parameter first", () => {
  // Original 512 params; budget 0.5 → at most 256. Layer a loses almost nothing at rank 1 (32 params),
  // so the greedy rule takes a down to 1 before it touches b (b stays whole: 32 + 256 = 288 > 256 → b to 7 = 224).
  const run = runSvd(twoLayers(), { budget: 0.5 });
  assert.equal(rankOf(run, "a"), 1);
  assert.equal(rankOf(run, "b"), 7);
  assert.ok((run.stats["params-after"] as number) <= 256);
  const macs = runSvd(twoLayers(), { budget: 0.5, budgetMetric: "macs" });
  assert.equal(rankOf(macs, "a"), 1);
});

Deno.test("svd skip=[names] and keep-last leave layers alone", () => {
  const skipped = runSvd(twoLayers(), { energy: 0.9, skip: ["a", "nope"] });
  assert.equal(rankOf(skipped, "a"), undefined);
  assert.ok(skipped.diagnostics.some((d) => d.severity === "warning" && d.message === 'skip names no op: "nope"'));
  const kept = runSvd(twoLayers(), { energy: 0.9, keepLast: true });
  assert.equal(rankOf(kept, "a"), 1);
  assert.equal(rankOf(kept, "b"), undefined);
  assert.ok(kept.logs.includes('keeping the last layer "b" (keep-last=true)'));
});

Deno.test("svd reports a layer with NaN or Inf weights by name and leaves it alone", () => {
  const w = spectrumWeight(16, 16, spectrum);
  (w.data as Float32Array)[5] = NaN;
  const m = oneLayer("Gemm", ["N", 16], w, null, [["transB", int(1)]]);
  const run = runSvd(m, { rank: 2 });
  assert.equal(run.changed, false);
  assert.deepEqual(run.diagnostics, [{
    severity: "warning",
    message: 'op "fc" (Gemm): weights hold NaN or Inf; layer left alone',
    op: "fc",
    pass: "svd",
  }, {
    severity: "note",
    message: "nothing decomposed: 1 candidate layer(s), 1 skipped (skip, keep-last, non-finite weights), 0 with no " +
      "rank that is cheaper and meets the selection rule (see the log)",
    pass: "svd",
  }]);
});

Deno.test("svd refuses two rank rules at once", () => {
  const run = runSvd(gemm16(), { rank: 2, speedup: 2 });
  assert.equal(run.changed, false);
  assert.equal(
    run.diagnostics[0].message,
    "give at most one of rank, speedup and budget (energy is used when none is given)",
  );
});

Deno.test("svd rank, speedup and budget are optional: unset by default and left out of the canonical pipeline", () => {
  const registry = passLookup(builtinPasses);
  const [step] = parsePipeline("svd", registry);
  assert.equal(step.options.rank, undefined);
  assert.equal(step.options.speedup, undefined);
  assert.equal(step.options.budget, undefined);
  assert.equal(
    printPipeline([step]),
    "svd{energy=0.9,budget-metric=params,mode=channel,large=estimate,skip=[],keep-last=true,bias-correct=true}",
  );
  assert.equal(
    printPipeline(parsePipeline("svd{budget=1}", registry)),
    "svd{energy=0.9,budget=1,budget-metric=params,mode=channel,large=estimate,skip=[],keep-last=true,bias-correct=true}",
  );
  // speedup=1 and budget=1 are values like any other now, not "off".
  assert.equal(runSvd(gemm16(), { budget: 1 }).changed, false);
  assert.match(runSvd(gemm16(), { rank: 2, speedup: 1 }).diagnostics[0].message, /^give at most one of rank/);
});

Deno.test("svd options reject bad energy, rank and mode with the valid range", () => {
  const registry = passLookup(builtinPasses);
  const bad: [string, string][] = [
    ["svd{energy=0}", "must be a number in (0, 1]"],
    ["svd{energy=1.5}", "must be a number in (0, 1]"],
    ["svd{rank=0}", "must be an integer in [1, inf)"],
    ["svd{rank=2.5}", "must be an integer in [1, inf)"],
    ["svd{rank=-3}", "must be an integer in [1, inf)"],
    ["svd{mode=diagonal}", "must be one of channel, spatial"],
  ];
  for (const [text, message] of bad) {
    assert.throws(() => parsePipeline(text, registry), (e: Error) => {
      assert.ok(e.message.includes(message), `${text}: ${e.message}`);
      return true;
    });
  }
});

Deno.test("svd with data is data-aware by default: lower output error on calibration data than the weight SVD", () => {
  // Inputs with very unequal feature scales: the weight SVD keeps directions the data never excites.
  const n = 16;
  const w = randomTensor([12, n], 21);
  const r = random(22);
  const rows = 200;
  const x = new Float32Array(rows * n);
  for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) x[i * n + j] = r() * (j < 4 ? 10 : 0.1);
  const calibration = { x: float32Tensor([rows, n], x) };
  const plain = runSvd(
    oneLayer("Gemm", ["N", n], w, null, [["transB", int(1)]]),
    { rank: 4, dataAware: false },
    calibration,
  );
  const aware = runSvd(oneLayer("Gemm", ["N", n], w, null, [["transB", int(1)]]), { rank: 4 }, calibration);
  const stat = (run: Run): Record<string, number> => (run.stats.layers as Record<string, Record<string, number>>).fc;
  assert.ok(
    stat(aware)["output-error"] < 0.5 * stat(plain)["output-error"],
    JSON.stringify([stat(aware), stat(plain)]),
  );
  assert.ok(stat(aware)["weight-error"] > stat(plain)["weight-error"]);
  assert.equal(stat(aware)["data-aware"] as unknown, true);
  // The energy rule keeps the weight spectrum's meaning by default (whitened, it would count output energy).
  const energy = runSvd(oneLayer("Gemm", ["N", n], w, null, [["transB", int(1)]]), { energy: 0.5 }, calibration);
  assert.equal(stat(energy)["data-aware"] as unknown, false);
});

Deno.test("svd with data: inputs in a 2-D subspace make the data-aware rank-2 truncation exact on them", () => {
  // A full-rank 8x8 layer; every input is a mix of two fixed directions, so W restricted to the data has rank 2.
  const n = 8;
  const w = randomTensor([n, n], 41);
  const [u, v] = [randomTensor([n], 42).data, randomTensor([n], 43).data];
  const r = random(44);
  const rows = 64;
  const x = new Float32Array(rows * n);
  for (let i = 0; i < rows; i++) {
    const [a, b] = [r(), r()];
    for (let j = 0; j < n; j++) x[i * n + j] = a * Number(u[j]) + b * Number(v[j]);
  }
  const calibration = { x: float32Tensor([rows, n], x) };
  const layer = () => oneLayer("Gemm", ["N", n], w, null, [["transB", int(1)]]);
  const reference = interpret(layer(), calibration).y;
  const error = (options: Partial<OptionValues<typeof svdOptions>>): number => {
    const m = layer();
    runSvd(m, { rank: 2, reconstruct: false, ...options }, calibration);
    const y = interpret(m, calibration).y;
    let [num, den] = [0, 0];
    for (let i = 0; i < y.data.length; i++) {
      num += (Number(y.data[i]) - Number(reference.data[i])) ** 2;
      den += Number(reference.data[i]) ** 2;
    }
    return Math.sqrt(num / den);
  };
  assert.ok(error({}) < 1e-4, `data-aware ${error({})}`);
  assert.ok(error({ dataAware: false }) > 0.1, `weight SVD ${error({ dataAware: false })}`);
});

Deno.test("svd data-aware conv (channel mode) lowers output error and the pipeline result verifies", async () => {
  const m = () =>
    oneLayer("Conv", ["N", 4, 8, 8], randomTensor([8, 4, 3, 3], 31), randomTensor([8], 32), [
      ["kernel_shape", ints([3, 3])],
      ["pads", ints([1, 1, 1, 1])],
    ]);
  const r = random(33);
  const x = new Float32Array(16 * 4 * 64);
  for (let i = 0; i < x.length; i++) x[i] = r() * (Math.floor(i / 64) % 4 === 0 ? 10 : 0.1);
  const calibration = { x: float32Tensor([16, 4, 8, 8], x) };
  const plain = runSvd(m(), { rank: 3, dataAware: false }, calibration);
  const aware = runSvd(m(), { rank: 3, dataAware: true }, calibration);
  const stat = (run: Run): Record<string, number> => (run.stats.layers as Record<string, Record<string, number>>).fc;
  assert.ok(stat(aware)["output-error"] < stat(plain)["output-error"]);
  // Through the pass manager: shapes inferred and verified after the pass.
  const module = m();
  const registry = passLookup(builtinPasses);
  const records = await runPipeline(module, parsePipeline("svd{rank=3,keep-last=false,mode=spatial}", registry), {
    registry,
    calibration,
  });
  assert.equal(records[0].changed, true);
  assert.deepEqual(module.graph.ops.map((op) => op.name), ["fc.svd", "fc"]);
  const diagnostics: Diagnostic[] = records[0].diagnostics;
  assert.deepEqual(diagnostics, []);
});

Deno.test("svd energy on a large layer: a flat spectrum is left alone, a decaying one gets the exact rule's rank", () => {
  // 1040 x 1100: the smaller side is past the exact Gram path, so the estimate and the growth decide.
  const [rows, cols] = [1040, 1100];
  const large = (s: number[]): Module =>
    oneLayer("Gemm", ["N", cols], spectrumWeight(rows, cols, s), null, [["transB", int(1)]]);
  const flat = runSvd(large(new Array(rows).fill(1)), { energy: 0.9 });
  assert.equal(rankOf(flat), undefined);
  const decaying = Array.from({ length: rows }, (_, i) => 0.9 ** i);
  const total = decaying.reduce((a, v) => a + v * v, 0);
  let kept = 0;
  const exact = decaying.findIndex((v) => (kept += v * v) >= 0.9 * total) + 1;
  assert.equal(rankOf(runSvd(large(decaying), { energy: 0.9 })), exact);
});

Deno.test("svd large=estimate leaves whole a layer the estimate puts out of reach; large=exact factors it at the exact rule's rank", () => {
  // 1040 x 1100 (largest useful rank 534), squared spectrum: 400 ones, then 640 values t = 0.0704, so the
  // rank-534 truncation holds about 0.92 < 1 - 0.5 (1 - 0.9) = 0.95, and 0.9 is reached at rank 408.
  const [rows, cols] = [1040, 1100];
  const s = Array.from({ length: rows }, (_, i) => (i < 400 ? 1 : Math.sqrt(0.0704)));
  const large = (): Module => oneLayer("Gemm", ["N", cols], spectrumWeight(rows, cols, s), null, [["transB", int(1)]]);
  const total = s.reduce((a, v) => a + v * v, 0);
  let kept = 0;
  const exact = s.findIndex((v) => (kept += v * v) >= 0.9 * total) + 1;
  assert.equal(exact, 408);
  assert.equal(rankOf(runSvd(large(), { energy: 0.9 })), undefined);
  assert.equal(rankOf(runSvd(large(), { energy: 0.9, large: "exact" })), exact);
  const registry = passLookup(builtinPasses);
  assert.match(printPipeline(parsePipeline("svd{large=exact}", registry)), /,large=exact,/);
  assert.throws(() => parsePipeline("svd{large=always}", registry), /must be one of estimate, exact/);
});
