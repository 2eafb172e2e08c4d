import assert from "node:assert/strict";
import { interpret } from "../../ir/interpreter.ts";
import type { Module } from "../../ir/module.ts";
import { parseModule } from "../../ir/parser.ts";
import { cloneModule } from "../../ir/rewriter.ts";
import { inferShapes } from "../../ir/shape.ts";
import { float32Tensor, type Tensor } from "../../ir/tensor.ts";
import { defaultOptions } from "../options.ts";
import { factorizeOp, svdOptions, svdPass } from "../svd.ts";
import { testPassContext } from "../testing.ts";
import {
  eliminateChannels,
  expectedClip,
  normalCdf,
  rankInputChannels,
  recalibrateBn,
  reconstruct,
  ridgeSolve,
} from "./recovery.ts";

/** Deterministic values in [-1, 1). */
function uniform(n: number, seed: number): number[] {
  let s = seed;
  return Array.from({ length: n }, () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1);
}

/** `x[N,4] -> h = Gemm(x, w1) -> Relu -> y = Gemm(., w2, b2)`. */
function mlp(w1: number[], w2: number[]): Module {
  const m = parseModule(`module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,4]) -> (%y) {
  %w1 = const f32[4,4] dense<[${w1.join(", ")}]>
  %w2 = const f32[3,4] dense<[${w2.join(", ")}]>
  %b2 = const f32[3] dense<[0.1, -0.2, 0.3]>
  %h = Gemm(%x, %w1) {transB = 1} : f32[N,4]
  %r = Relu(%h) : f32[N,4]
  %y = Gemm(%r, %w2, %b2) {transB = 1} : f32[N,3]
  return %y
}
}`);
  inferShapes(m);
  return m;
}

function relError(a: Tensor, b: Tensor): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.data.length; i++) {
    num += (Number(a.data[i]) - Number(b.data[i])) ** 2;
    den += Number(b.data[i]) ** 2;
  }
  return Math.sqrt(num / den);
}

const op = (m: Module, name: string) => m.graph.ops.find((o) => o.name === name)!;

Deno.test("ridgeSolve solves the normal equations, and pulls toward the prior", () => {
  // X = I (2x2), Y = [[1], [2]]: M = Y / (1 + lambda) with lambda = ridge * mean diagonal = ridge.
  const m = ridgeSolve(new Float64Array([1, 0, 0, 1]), new Float64Array([1, 2]), 2, 1, 0.5);
  assert.ok(Math.abs(m[0] - 1 / 1.5) < 1e-12 && Math.abs(m[1] - 2 / 1.5) < 1e-12);
  const p = ridgeSolve(new Float64Array([1, 0, 0, 1]), new Float64Array([1, 2]), 2, 1, 0.5, new Float64Array([1, 2]));
  assert.ok(Math.abs(p[0] - 1) < 1e-12 && Math.abs(p[1] - 2) < 1e-12);
});

Deno.test("expectedClip is the truncated-normal mean: ReLU closed form, ReLU6, identity and the gamma -> 0 limit", () => {
  assert.ok(Math.abs(normalCdf(0.6) - 0.7257469) < 2e-7);
  const [mu, s] = [0.3, 0.5];
  const relu = mu * normalCdf(mu / s) + s * Math.exp(-0.5 * (mu / s) ** 2) / Math.sqrt(2 * Math.PI);
  assert.ok(Math.abs(expectedClip(mu, s, 0, Infinity) - relu) < 1e-12);
  assert.equal(expectedClip(mu, s, -Infinity, Infinity), mu);
  assert.equal(expectedClip(-2, 0, 0, 6), 0);
  assert.equal(expectedClip(7, 0, 0, 6), 6);
  // ReLU6 on N(3, 2^2): by a fine Riemann sum.
  let sum = 0;
  for (let t = -10; t <= 10; t += 1e-4) sum += Math.min(6, Math.max(0, 3 + 2 * t)) * Math.exp(-t * t / 2) * 1e-4;
  assert.ok(Math.abs(expectedClip(3, 2, 0, 6) - sum / Math.sqrt(2 * Math.PI)) < 1e-6);
});

Deno.test("reconstruct: a rank-deficient second factor is refit exactly when the inputs span the kept subspace", () => {
  const w1 = uniform(16, 3).map(Math.abs); // positive: the Relu passes the line through
  const original = mlp(w1, uniform(12, 5));
  const m = cloneModule(original);
  // Rank 1 of w2: the second factor (named y, like the layer) has one input; the inputs r lie on one line, so
  // a 1-dimensional bottleneck loses nothing there once the second factor is refit.
  factorizeOp(m, op(m, "y"), 1);
  const t = uniform(32, 9);
  const x = float32Tensor([32, 4], t.flatMap((v) => [v, 2 * v, -v, 0.5 * v]).map((v) => Math.abs(v)));
  const ctx = testPassContext({ module: m, calibration: { x } });
  const before = relError(interpret(m, { x }).y, interpret(original, { x }).y);
  const fit = reconstruct(original, m, [op(m, "y")], ctx, { ridge: 1e-12 }).get("y")!;
  const after = relError(interpret(m, { x }).y, interpret(original, { x }).y);
  assert.ok(before > 0.05, `before ${before}`);
  assert.ok(after < 1e-5 && fit.errorAfter < 1e-5, `after ${after}`);
  assert.equal(fit.unknowns, 2);
});

Deno.test("reconstruct is sequential: a later layer is refit on what the compressed network feeds it", () => {
  const original = mlp(uniform(16, 3), uniform(12, 5));
  const x = float32Tensor([64, 4], uniform(256, 11));
  const damaged = cloneModule(original);
  factorizeOp(damaged, op(damaged, "h"), 1); // the first layer loses rank for good (its first factor is not refit)
  const sequential = cloneModule(damaged);
  const ctx = testPassContext({ module: sequential, calibration: { x } });
  reconstruct(original, sequential, [op(sequential, "h"), op(sequential, "y")], ctx, { ridge: 1e-9 });
  // Independent: each layer fit on the original network's inputs; the second one is already exact there.
  const independent = cloneModule(damaged);
  reconstruct(
    original,
    independent,
    [op(independent, "h")],
    testPassContext({ module: independent, calibration: { x } }),
    {
      ridge: 1e-9,
    },
  );
  const truth = interpret(original, { x }).y;
  const eSeq = relError(interpret(sequential, { x }).y, truth);
  const eInd = relError(interpret(independent, { x }).y, truth);
  assert.ok(eSeq < 0.95 * eInd, `sequential ${eSeq} vs independent ${eInd}`);
});

Deno.test("reconstruct with fewer samples than unknowns warns naming the layer and stays finite", () => {
  const original = mlp(uniform(16, 3), uniform(12, 5));
  const m = mlp(uniform(16, 3), uniform(12, 6));
  const x = float32Tensor([2, 4], uniform(8, 13));
  const ctx = testPassContext({ module: m, calibration: { x } });
  const fit = reconstruct(original, m, [op(m, "y")], ctx).get("y")!;
  assert.equal(ctx.diagnostics.length, 1);
  assert.match(ctx.diagnostics[0].message, /op "y": 2 calibration rows for 5 unknowns/);
  assert.ok(Number.isFinite(fit.errorAfter) && fit.errorAfter <= fit.errorBefore);
  assert.ok([...op(m, "y").operand(1)!.constant!.data].every((v) => Number.isFinite(Number(v))));
});

Deno.test("reconstruct refits a padded, strided Conv exactly (all positions sampled), bias through the BN mean", () => {
  const text = (w: number[]) =>
    parseModule(`module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,2,5,5]) -> (%y) {
  %w = const f32[3,2,3,3] dense<[${w.join(", ")}]>
  %g = const f32[3] dense<1.0>
  %z = const f32[3] dense<[0.5, 0.0, -0.5]>
  %v = const f32[3] dense<1.0>
  %c = Conv(%x, %w) {pads = [1, 1, 1, 1], strides = [2, 2]} : f32[N,3,3,3]
  %y = BatchNormalization(%c, %g, %z, %z, %v) : f32[N,3,3,3]
  return %y
}
}`);
  const original = text(uniform(54, 21));
  const m = text(uniform(54, 22));
  const x = float32Tensor([8, 2, 5, 5], uniform(400, 23));
  const ctx = testPassContext({ module: m, calibration: { x } });
  reconstruct(original, m, [op(m, "c")], ctx, { ridge: 1e-12 });
  assert.ok(relError(interpret(m, { x }).y, interpret(original, { x }).y) < 1e-5);
});

Deno.test("recalibrateBn sets each BN's statistics to the batch mean and unbiased variance, batch by batch", () => {
  const m = parseModule(`module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,1,1,2]) -> (%y) {
  %one = const f32[1] dense<1.0>
  %z = const f32[1] dense<0.0>
  %y = BatchNormalization(%x, %one, %z, %z, %one) : f32[N,1,1,2]
  return %y
}
}`);
  const x = float32Tensor([3, 1, 1, 2], [1, 2, 3, 4, 5, 6]);
  recalibrateBn(m, testPassContext({ module: m, calibration: { x } }), 2);
  const bn = m.graph.ops[0];
  assert.ok(Math.abs(Number(bn.operand(3)!.constant!.data[0]) - 3.5) < 1e-6);
  assert.ok(Math.abs(Number(bn.operand(4)!.constant!.data[0]) - 3.5) < 1e-5);
});

Deno.test("reconstruct with calibration data that does not fit the input: one error line naming the input", () => {
  const original = mlp(uniform(16, 3), uniform(12, 5));
  const m = cloneModule(original);
  const x = float32Tensor([2, 3], uniform(6, 13));
  const ctx = testPassContext({ module: m, calibration: { x } });
  assert.equal(reconstruct(original, m, [op(m, "y")], ctx).size, 0);
  assert.equal(ctx.diagnostics.length, 1);
  assert.equal(ctx.diagnostics[0].severity, "error");
  assert.match(ctx.diagnostics[0].message, /input "x" must have shape \[N,4\], found \[2,3\]/);
});

Deno.test("svd with data refits both factors: (nearly) exact on inputs that span as many directions as the rank", () => {
  const original = mlp(uniform(16, 3).map(Math.abs), uniform(12, 5));
  const m = cloneModule(original);
  // Inputs on a 1-D line: after h (rank 1) and the Relu the hidden values lie on a line too, so rank-1 factors of
  // both layers can reproduce the outputs once each factor is refit (the first to the projected target).
  const t = uniform(32, 9).map(Math.abs);
  const x = float32Tensor([32, 4], t.flatMap((v) => [v, 2 * v, v, 0.5 * v]));
  const ctx = testPassContext({ module: m, calibration: { x }, pass: "svd" });
  // The weight SVD (data-aware, the default with data, would already be nearly exact here): the refit must recover.
  const options = { ...defaultOptions(svdOptions), rank: 1, keepLast: false, dataAware: false };
  assert.equal(svdPass.run(m, options, ctx), true);
  const refit = ctx.stats.refit as Record<string, { "error-before": number; "error-after": number }>;
  assert.deepEqual(Object.keys(refit).sort(), ["h", "h.svd", "y", "y.svd"]);
  assert.equal(ctx.stats.recovery, "reconstruct");
  const e = relError(interpret(m, { x }).y, interpret(original, { x }).y);
  // Exact but for the default ridge (1e-2 of the mean input energy, toward the current weights).
  assert.ok(e < 0.02, `${e} ${JSON.stringify(refit)}`);
  assert.ok(refit.y["error-after"] < 0.05 * refit.y["error-before"]);
});

Deno.test("rankInputChannels drops the channels the refit output does not need: a redundant pair goes first", () => {
  // y = x0 + x1 + x3 (two outputs: the sum and twice it) with x2 = x0 + x1: {x2, x3} reproduce y exactly, while any
  // 2 channels out of {x0, x1, x3} cannot; the weights on x0 and x1 are the largest, x2's is zero.
  const m = parseModule(`module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,4]) -> (%y) {
  %w = const f32[2,4] dense<[1.0, 1.0, 0.0, 1.0, 2.0, 2.0, 0.0, 2.0]>
  %y = Gemm(%x, %w) {transB = 1} : f32[N,2]
  return %y
}
}`);
  const t = uniform(3 * 40, 17);
  const rows = Array.from({ length: 40 }, (_, i) => [t[3 * i], t[3 * i + 1], t[3 * i] + t[3 * i + 1], t[3 * i + 2]]);
  const ctx = testPassContext({ module: m, calibration: { x: float32Tensor([40, 4], rows.flat()) } });
  const ranking = rankInputChannels(m, m.graph.ops[0], 4, 2, ctx, { ridge: 1e-10 })!;
  assert.deepEqual([...ranking.order].sort(), [0, 1]);
  assert.ok(ranking.loss[1] < 1e-6, `loss ${ranking.loss}`);
  // Down to one channel: the loss grows, never shrinks; without data there is no ranking.
  const all = rankInputChannels(m, m.graph.ops[0], 4, 1, ctx, { ridge: 1e-10 })!;
  assert.equal(all.order.length, 3);
  assert.ok(all.loss[2] > 0.1 && all.loss[1] <= all.loss[2], `loss ${all.loss}`);
  assert.equal(rankInputChannels(m, m.graph.ops[0], 4, 2, testPassContext({ module: m })), null);
});

Deno.test("eliminateChannels drops whole blocks: the exact loss of each step on orthogonal inputs", () => {
  // X^T X = I (4 unknowns: 3 blocks of 1, then the bias), Y has energy 9, 4, 1 on channels 0, 1, 2: each step drops
  // the weakest channel and loses exactly its energy (ridge ~ 0).
  const xtx = new Float64Array(16);
  for (let i = 0; i < 4; i++) xtx[i * 4 + i] = 1;
  const xty = new Float64Array([3, 2, 1, 0]);
  const r = eliminateChannels({ xtx, xty, yy: 14, rows: 4, k: 4, out: 1 }, 1, 0, 1e-12);
  assert.deepEqual(r.order, [2, 1, 0]);
  r.loss.forEach((l, i) => assert.ok(Math.abs(l - [1, 5, 14][i] / 14) < 1e-9, `loss ${r.loss}`));
});

Deno.test("rankInputChannels with a reference reads the target there and the inputs in the module", () => {
  // The module's y reads x0 and x1 only (dropping x2 and x3 loses nothing of its own output); the reference's op of
  // the same name reads x2 and x3 only: against it, x0 and x1 go at no loss (the only exact choice).
  const gemm = (w: string) =>
    parseModule(`module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[N,4]) -> (%y) {
  %w = const f32[1,4] dense<${w}>
  %y = Gemm(%x, %w) {transB = 1} : f32[N,1]
  return %y
}
}`);
  const m = gemm("[1.0, 2.0, 0.0, 0.0]");
  const reference = gemm("[0.0, 0.0, 3.0, -1.0]");
  const ctx = testPassContext({ module: m, calibration: { x: float32Tensor([40, 4], uniform(160, 5)) } });
  const own = rankInputChannels(m, m.graph.ops[0], 4, 2, ctx, { ridge: 1e-10 })!;
  assert.deepEqual([...own.order].sort(), [2, 3]);
  const against = rankInputChannels(m, m.graph.ops[0], 4, 2, ctx, { ridge: 1e-10, reference })!;
  assert.deepEqual([...against.order].sort(), [0, 1]);
  assert.ok(against.loss[1] < 1e-6, `loss ${against.loss}`);
  // Keeping x2 only (down to one channel) loses the x3 part: 1 / (9 + 1) of the output energy, up to sampling.
  const one = rankInputChannels(m, m.graph.ops[0], 4, 1, ctx, { ridge: 1e-10, reference })!;
  assert.equal(one.order[2], 3);
  assert.ok(Math.abs(one.loss[2] - 0.1) < 0.05, `loss ${one.loss}`);
});

Deno.test("a layer with more unknowns than a fit takes on is neither refit nor ranked, with a note naming it", () => {
  const original = mlp(uniform(16, 3), uniform(12, 5));
  const m = mlp(uniform(16, 3), uniform(12, 6));
  const before = [...op(m, "y").operand(1)!.constant!.data];
  const x = float32Tensor([40, 4], uniform(160, 13));
  const ctx = testPassContext({ module: m, calibration: { x } });
  // y has 4 weights and a bias per output: 5 unknowns.
  assert.equal(reconstruct(original, m, [op(m, "y")], ctx, { maxUnknowns: 4 }).size, 0);
  assert.deepEqual([...op(m, "y").operand(1)!.constant!.data], before);
  assert.equal(rankInputChannels(m, op(m, "y"), 4, 2, ctx, { maxUnknowns: 4 }), null);
  assert.deepEqual(ctx.diagnostics.map((d) => `${d.severity}: ${d.message}`), [
    'note: op "y": 5 unknowns per output exceed the 4 a least-squares fit takes on; not refit',
    'note: op "y": 5 unknowns per output exceed the 4 a least-squares fit takes on; its kept channels are chosen by |gamma|',
  ]);
  // At the limit both run.
  assert.equal(reconstruct(original, m, [op(m, "y")], ctx, { maxUnknowns: 5 }).size, 1);
  assert.notEqual(rankInputChannels(m, op(m, "y"), 4, 2, ctx, { maxUnknowns: 5 }), null);
});
