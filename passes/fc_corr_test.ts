import assert from "node:assert/strict";
import { costOf } from "../ir/cost.ts";
import { interpret } from "../ir/interpreter.ts";
import type { Module } from "../ir/module.ts";
import { parseModule } from "../ir/parser.ts";
import { inferShapes } from "../ir/shape.ts";
import { float32Tensor, type Tensor, toFloat64 } from "../ir/tensor.ts";
import { verifyModule } from "../ir/verifier.ts";
import { builtinPasses } from "./builtin.ts";
import { fcCorrOptions, fcCorrPass } from "./fc_corr.ts";
import { runPipeline } from "./manager.ts";
import { defaultOptions, type OptionValues } from "./options.ts";
import { passLookup } from "./pass.ts";
import { parsePipeline } from "./pipeline.ts";
import { testPassContext } from "./testing.ts";

type Options = OptionValues<typeof fcCorrOptions>;
const DEFAULTS: Options = defaultOptions(fcCorrOptions);

function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 16807) % 2147483647;
    return s / 2147483647 - 0.5;
  };
}

function randomInput(rows: number, cols: number, seed: number): Tensor {
  const r = random(seed);
  return float32Tensor([rows, cols], Float32Array.from({ length: rows * cols }, () => 4 * r()));
}

function constant(m: Module, name: string): number[] {
  const v = m.graph.constants.find((c) => c.name === name);
  assert.ok(v !== undefined, `no constant "${name}"`);
  return [...toFloat64(v.constant!)];
}

function maxDifference(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let d = 0;
  for (let i = 0; i < a.data.length; i++) d = Math.max(d, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return d;
}

function run(m: Module, options: Partial<Options>, calibration: Record<string, Tensor>) {
  const ctx = testPassContext({ calibration });
  const changed = fcCorrPass.run(m, { ...DEFAULTS, ...options }, ctx);
  inferShapes(m);
  verifyModule(m);
  return { changed, ctx };
}

/** x0 and x1 uncorrelated with mean 0; x2 constant 5. */
const X3 = float32Tensor([8, 3], [
  ...[1, 1, 5, -1, 1, 5, 1, -1, 5, -1, -1, 5],
  ...[2, 0, 5, -2, 0, 5, 0, 2, 5, 0, -2, 5],
]);

const ONE_GEMM = `module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,3]) -> (%y) {
  %w = const f32[2,3] dense<[1.0, 0.001, 2.0, 0.001, 1.0, 3.0]>
  %b = const f32[2] dense<[0.5, -0.5]>
  %y = Gemm(%x, %w, %b) {transB = 1} : f32[N,2]
  return %y
}
}`;

Deno.test("fc-corr removes weakly correlated and constant-input connections and moves their mean into the bias", () => {
  const m = parseModule(ONE_GEMM);
  const { changed, ctx } = run(m, { keepLast: false }, { x: X3 });
  assert.equal(changed, true);
  // y0 follows x0, y1 follows x1; x2 is constant (r = 0): 4 of 6 connections go.
  assert.deepEqual(constant(m, "w").map((v) => Math.fround(v)), [1, 0, 0, 0, 1, 0].map(Math.fround));
  // Bias correction: + W[o,2] * mean(x2) = 2*5 and 3*5 (mean(x0) = mean(x1) = 0).
  assert.deepEqual(constant(m, "b"), [10.5, 14.5]);
  assert.equal(ctx.stats["connections-removed"], 4);
  assert.deepEqual((ctx.stats.layers as Record<string, unknown>)["y"], {
    inputs: 3,
    outputs: 2,
    connections: 6,
    removed: 4,
    density: 2 / 6,
    cut: 0.1,
    "bias-corrected": true,
    "dense-bytes": 24,
    // 2 f32 values + 2 8-bit column indices + 3 8-bit row pointers.
    "csr-bytes": 2 * 4 + 2 + 3,
    "csr-index-bits": 8,
    "csr-pointer-bits": 8,
    // |r| in 20 bins over [0, 1]: the four weak connections near 0, the two followed ones at 1 (the last bin).
    "abs-r-histogram": [4, ...new Array(18).fill(0), 2],
  });
});

Deno.test("fc-corr with bias-correction=false only zeroes weights", () => {
  const m = parseModule(ONE_GEMM);
  run(m, { keepLast: false, biasCorrection: false }, { x: X3 });
  assert.deepEqual(constant(m, "b"), [0.5, -0.5]);
});

Deno.test("fc-corr ratio removes exactly that fraction of each layer's connections, lowest |r| first", () => {
  const m = parseModule(ONE_GEMM);
  const { ctx } = run(m, { keepLast: false, ratio: 0.5 }, { x: X3 });
  assert.equal(ctx.stats["connections-removed"], 3);
  const w = constant(m, "w");
  assert.ok(w[0] === 1 && w[4] === 1, "the strongly correlated diagonal stays");
  assert.equal(w[2], 0);
  assert.equal(w[5], 0);
});

Deno.test("fc-corr leaves the last FC layer alone by default and honours skip", () => {
  const text = `module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,3]) -> (%z) {
  %w1 = const f32[2,3] dense<[1.0, 0.001, 2.0, 0.001, 1.0, 3.0]>
  %w2 = const f32[2,2] dense<[1.0, 0.0001, 0.0001, 1.0]>
  %y = Gemm(%x, %w1) {transB = 1} : f32[N,2]
  %z = Gemm(%y, %w2) {transB = 1} : f32[N,2]
  return %z
}
}`;
  const m = parseModule(text);
  const { ctx } = run(m, {}, { x: X3 });
  assert.deepEqual(Object.keys(ctx.stats.layers as object), ["y"]);
  assert.deepEqual(constant(m, "w2"), [1, 0.0001, 0.0001, 1].map(Math.fround));
  // The first Gemm had no bias: one is added for the correction.
  assert.deepEqual(constant(m, "y.bias"), [10, 15]);
  const skipped = parseModule(text);
  const second = run(skipped, { skip: ["y"] }, { x: X3 });
  assert.equal(second.changed, false);
  assert.deepEqual(second.ctx.diagnostics.map((d) => d.message), [
    "nothing pruned: no FC layer (Gemm, MatMul by a constant 2-D weight) left after skip/keep-last",
  ]);
});

Deno.test("fc-corr on a MatMul adds an Add for the bias correction and keeps the output name", () => {
  const m = parseModule(`module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,3]) -> (%y) {
  %w = const f32[3,2] dense<[1.0, 0.001, 0.001, 1.0, 2.0, 3.0]>
  %y = MatMul(%x, %w) : f32[N,2]
  return %y
}
}`);
  const before = interpret(m, { x: X3 }).y;
  run(m, { keepLast: false }, { x: X3 });
  assert.deepEqual(m.graph.ops.map((op) => op.type), ["MatMul", "Add"]);
  assert.equal(m.graph.outputs[0].name, "y");
  assert.deepEqual(constant(m, "w").map((v) => Math.fround(v)), [1, 0, 0, 1, 0, 0].map(Math.fround));
  assert.ok(maxDifference(interpret(m, { x: X3 }).y, before) < 0.01);
});

const TWO_LAYERS = `module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,3]) -> (%z) {
  %w1 = const f32[4,3] dense<[1.0, 2.0, -1.0, 2.0, 4.0, -2.0, 0.5, 0.5, 0.5, 0.5, -1.0, 1.0]>
  %b1 = const f32[4] dense<[0.1, 0.2, -100.0, 0.3]>
  %w2 = const f32[2,4] dense<[1.0, 2.0, 3.0, 4.0, -1.0, 0.5, 2.0, 1.0]>
  %b2 = const f32[2] dense<[0.25, -0.25]>
  %h = Gemm(%x, %w1, %b1) {transB = 1} : f32[N,4]
  %a = Relu(%h) : f32[N,4]
  %z = Gemm(%a, %w2, %b2) {transB = 1} : f32[N,2]
  return %z
}
}`;

Deno.test("fc-corr granularity=neuron merges a scaled copy through ReLU and removes a dead neuron, exactly", () => {
  const m = parseModule(TWO_LAYERS);
  const calibration = { x: randomInput(32, 3, 7) };
  const probe = randomInput(64, 3, 11);
  const before = interpret(m, { x: probe }).z;
  const { changed, ctx } = run(m, { granularity: "neuron" }, calibration);
  assert.equal(changed, true);
  // Neuron 1 = 2 x neuron 0 (same sign: exact through ReLU for every input); neuron 2 is never positive.
  assert.equal(ctx.stats["neurons-removed"], 2);
  const layer = (ctx.stats.layers as Record<string, Record<string, unknown>>)["h"];
  assert.equal(layer["neurons-after"], 2);
  assert.equal(layer.merged, 1);
  assert.equal(layer.constant, 1);
  assert.match((layer.merges as string[])[1], /^1 -> 0 \(r=1\.0000, s=2\.000, t=/);
  assert.deepEqual(m.graph.constants.find((c) => c.name === "w2")!.constant!.shape, [2, 2]);
  assert.deepEqual(constant(m, "b1").map(Math.fround), [0.1, 0.3].map(Math.fround));
  // W2[:, 0] += 2 W2[:, 1].
  constant(m, "w2").forEach((v, i) => assert.ok(Math.abs(v - [5, 4, 0, 1][i]) < 1e-6, `w2[${i}] = ${v}`));
  assert.ok(maxDifference(interpret(m, { x: probe }).z, before) < 1e-4);
  assert.deepEqual((m.graph.ops[0].result.type as { shape: unknown }).shape, ["N", 2]);
});

Deno.test("fc-corr granularity=neuron does not change a next layer named in skip", () => {
  const m = parseModule(TWO_LAYERS);
  const ctx = testPassContext({ calibration: { x: randomInput(32, 3, 7) } });
  assert.equal(fcCorrPass.run(m, { ...DEFAULTS, granularity: "neuron", skip: ["z"] }, ctx), false);
  assert.ok(ctx.logs.includes('op "h": the next layer "z" is in skip; left alone'), ctx.logs.join("\n"));
});

Deno.test("fc-corr granularity=neuron slices a BatchNormalization between the layers", () => {
  const m = parseModule(`module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,3]) -> (%z) {
  %w1 = const f32[3,3] dense<[1.0, 2.0, -1.0, 1.0, 2.0, -1.0, 0.5, -1.0, 1.0]>
  %scale = const f32[3] dense<[1.0, 3.0, 1.0]>
  %bias = const f32[3] dense<[0.0, 0.0, 0.5]>
  %mean = const f32[3] dense<[0.0, 0.0, 0.1]>
  %var = const f32[3] dense<[1.0, 1.0, 2.0]>
  %w2 = const f32[2,3] dense<[1.0, 2.0, 3.0, -1.0, 0.5, 2.0]>
  %h = Gemm(%x, %w1) {transB = 1} : f32[N,3]
  %n = BatchNormalization(%h, %scale, %bias, %mean, %var) : f32[N,3]
  %a = Relu(%n) : f32[N,3]
  %z = Gemm(%a, %w2) {transB = 1} : f32[N,2]
  return %z
}
}`);
  const probe = randomInput(64, 3, 5);
  const before = interpret(m, { x: probe }).z;
  const { ctx } = run(m, { granularity: "neuron" }, { x: randomInput(32, 3, 3) });
  assert.equal(ctx.stats["neurons-removed"], 1);
  for (const name of ["scale", "bias", "mean", "var"]) assert.equal(constant(m, name).length, 2, name);
  assert.ok(maxDifference(interpret(m, { x: probe }).z, before) < 1e-4);
});

Deno.test("fc-corr granularity=neuron leaves a layer whose successor is not reached through per-feature ops", () => {
  const m = parseModule(`module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,3]) -> (%z) {
  %w1 = const f32[2,3] dense<[1.0, 2.0, -1.0, 2.0, 4.0, -2.0]>
  %w2 = const f32[2,2] dense<[1.0, 2.0, 3.0, 4.0]>
  %h = Gemm(%x, %w1) {transB = 1} : f32[N,2]
  %s = Softmax(%h) {axis = 1} : f32[N,2]
  %z = Gemm(%s, %w2) {transB = 1} : f32[N,2]
  return %z
}
}`);
  const ctx = testPassContext({ calibration: { x: randomInput(8, 3, 1) } });
  assert.equal(fcCorrPass.run(m, { ...DEFAULTS, granularity: "neuron" }, ctx), false);
  assert.ok(ctx.logs.some((l) => l.includes('"s" (Softmax) is not a supported per-feature op')), ctx.logs.join("\n"));
});

Deno.test("fc-corr without calibration data fails with one line saying what it needs", async () => {
  const registry = passLookup(builtinPasses);
  await assert.rejects(
    runPipeline(parseModule(ONE_GEMM), parsePipeline("fc-corr", registry), { registry }),
    {
      message: 'pass "fc-corr" failed: fc-corr needs calibration data to correlate each FC layer\'s inputs and ' +
        "outputs (--calib, or calibration in compile())",
    },
  );
});

Deno.test("fc-corr options out of range are rejected with the range", () => {
  const registry = passLookup(builtinPasses);
  const message = (pipeline: string): string => {
    try {
      parsePipeline(pipeline, registry);
    } catch (e) {
      return (e as Error).message.split("\n")[0];
    }
    return "(accepted)";
  };
  assert.equal(
    message("fc-corr{threshold=1.5}"),
    'Cannot configure pass "fc-corr": option "threshold" must be a number in [0, 1], found "1.5"',
  );
  assert.equal(
    message("fc-corr{ratio=1}"),
    'Cannot configure pass "fc-corr": option "ratio" must be a number in [0, 1), found "1"',
  );
  assert.equal(
    message("fc-corr{merge-threshold=0}"),
    'Cannot configure pass "fc-corr": option "merge-threshold" must be a number in (0, 1], found "0"',
  );
  assert.equal(
    message("fc-corr{granularity=kernel}"),
    'Cannot configure pass "fc-corr": option "granularity" must be one of connection, neuron, found "kernel"',
  );
});

Deno.test("costOf counts a weight matrix with zeros in CSR, and the totals take the smaller form", () => {
  const m = parseModule(ONE_GEMM);
  run(m, { keepLast: false }, { x: X3 });
  const { totals, layers } = costOf(m);
  assert.deepEqual(layers[0].sparse, { elements: 6, nonzeros: 2, csrBytes: 13, indexBits: 8, pointerBits: 8 });
  assert.equal(totals.weightBytes, 24 + 8);
  assert.equal(totals.sparseWeightBytes, 13 + 8);
  // A dense matrix has no sparse entry and the two totals agree.
  const dense = costOf(parseModule(ONE_GEMM));
  assert.equal(dense.layers[0].sparse, undefined);
  assert.equal(dense.totals.sparseWeightBytes, dense.totals.weightBytes);
});
