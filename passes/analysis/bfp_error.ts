/**
 * The four-stage error analysis of BFP and fixed-point layers (input
 * conversion, weight conversion, multiply-accumulate, output conversion), read
 * from layer plans on float calibration activations, and the SQNR of each
 * layer's output inside the fully lowered model.
 * @module
 */
import { bfpLayer } from "../../ir/bfp/kernel.ts";
import type { BfpLayerPlan } from "../../ir/bfp/plan.ts";
import { dequantizeActivations, dequantizeWeights, quantizeActivations } from "../../ir/bfp/quantize.ts";
import type { Op, Value } from "../../ir/graph.ts";
import { Interpreter } from "../../ir/interpreter.ts";
import type { Module } from "../../ir/module.ts";
import type { OpRegistry } from "../../ir/op_def.ts";
import { type Tensor, toFloat64 } from "../../ir/tensor.ts";
import type { StatValue } from "../pass.ts";

/**
 * 10·log10(signal / noise) in dB (Infinity when exact).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sqnr } from "./bfp_error.ts";
 * assert.equal(sqnr([1, 1], [1, 1]), Infinity);
 * assert.equal(sqnr([10, 0], [9, 0]), 20);
 * ```
 */
export function sqnr(reference: ArrayLike<number>, approx: ArrayLike<number>): number {
  let signal = 0, noise = 0;
  for (let i = 0; i < reference.length; i++) {
    signal += reference[i] * reference[i];
    const d = reference[i] - approx[i];
    noise += d * d;
  }
  return noise === 0 ? Infinity : 10 * Math.log10(signal / noise);
}

/** A dB figure for a report: two decimals, `"inf"` when exact. */
export function db(v: number): StatValue {
  return Number.isFinite(v) ? Math.round(v * 100) / 100 : "inf";
}

/** Run the module on `feeds` and return the tensors of `values` (graph outputs or not). */
export function runWithProbes(
  module: Module,
  values: readonly Value[],
  feeds: Readonly<Record<string, Tensor>>,
  ops: OpRegistry,
): Map<Value, Tensor> {
  const out = new Interpreter(module, { registry: ops, probes: values }).run(feeds);
  return new Map(values.map((v) => [v, out[v.name]]));
}

/**
 * What {@linkcode runSequential} calls after each op: its operand tensors, its
 * results, and `rerun`, which runs the op again (after a change to it, such as
 * a corrected bias) on given operand tensors. It returns the results the later
 * ops read (or nothing to keep `results`).
 */
export type AfterOp = (
  op: Op,
  args: readonly (Tensor | null)[],
  results: Tensor[],
  rerun: (args: readonly (Tensor | null)[]) => Tensor[],
) => Tensor[] | void;

/**
 * Run the module on `feeds` op by op in graph order, as the interpreter does
 * (each value freed after its last use, so only live activations are held),
 * calling `after` once per op: how a pass adjusts each layer on the
 * activations that the already-adjusted layers before it produce, in one run.
 *
 * @throws {Error} Naming an op without a reference kernel, a missing input, or the op that failed.
 * @example Double every Neg's result on its way through
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { builtinOps } from "../../ir/builtin_ops.ts";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { runSequential } from "./bfp_error.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1] }));
 * const n = g.addOp(new Op({ name: "n", type: "Neg", operands: [x], results: [new Value("t")] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [n.result], results: [new Value("y")] })).result);
 * const seen: number[] = [];
 * runSequential(new Module(g), { x: float32Tensor([1], [-2]) }, builtinOps, (op, _args, results) => {
 *   seen.push(results[0].data[0] as number);
 *   if (op.name === "n") return [float32Tensor([1], [4])];
 * });
 * assert.deepEqual(seen, [2, 4]);
 * ```
 */
export function runSequential(
  module: Module,
  feeds: Readonly<Record<string, Tensor>>,
  ops: OpRegistry,
  after: AfterOp,
): void {
  const graph = module.graph;
  const lastUse = new Map<Value, number>();
  graph.ops.forEach((op, i) => {
    for (const v of op.operands) if (v !== null && v.producer !== null) lastUse.set(v, i);
  });
  const env = new Map<Value, Tensor>();
  for (const v of graph.inputs) {
    const t = feeds[v.name] ?? v.constant;
    if (t === undefined || t === null) throw new Error(`missing input "${v.name}"`);
    env.set(v, t);
  }
  graph.ops.forEach((op, i) => {
    const kernel = ops.get(op)?.interpret;
    if (kernel === undefined) throw new Error(`op "${op.name}" (${op.qualifiedType}) has no reference implementation`);
    const rerun = (args: readonly (Tensor | null)[]): Tensor[] => {
      try {
        return kernel(op, args, { opset: module.opset(op.domain) });
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        throw new Error(msg.startsWith(`op "${op.name}"`) ? msg : `op "${op.name}" (${op.type}): ${msg}`);
      }
    };
    const args = op.operands.map((v) => v === null ? null : env.get(v) ?? v.constant ?? null);
    const results = after(op, args, rerun(args), rerun) ?? [];
    op.results.forEach((r, k) => {
      if (results[k] !== undefined) env.set(r, results[k]);
    });
    for (const [v, last] of lastUse) if (last === i) env.delete(v);
  });
}

/**
 * The mean of `reference - approx` per channel over samples and positions:
 * channels on axis 1 (`[N, C, ...spatial]`, `channelsLast` false) or on the
 * last axis (`[..., C]`). Bias correction adds it to a layer's bias.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { meanChannelError } from "./bfp_error.ts";
 * const ref = float32Tensor([2, 2], [1, 2, 3, 4]), approx = float32Tensor([2, 2], [0, 2, 2, 5]);
 * assert.deepEqual([...meanChannelError(ref, approx, true)], [1, -0.5]);
 * ```
 */
export function meanChannelError(reference: Tensor, approx: Tensor, channelsLast: boolean): Float64Array {
  const shape = reference.shape;
  const c = channelsLast ? shape[shape.length - 1] : shape[1];
  const inner = channelsLast ? 1 : shape.slice(2).reduce((a, b) => a * b, 1);
  const sum = new Float64Array(c);
  const a = reference.data, b = approx.data;
  for (let i = 0; i < a.length; i++) sum[Math.floor(i / inner) % c] += Number(a[i]) - Number(b[i]);
  const count = a.length / c;
  return sum.map((s) => s / count);
}

/**
 * The four-stage analysis of one lowered layer on its float input `x` and the
 * float layer's output `y` (both from the calibration run before lowering),
 * with the float weights `weight` the plan's mantissas approximate.
 *
 * Stats: `sqnr-input-db`, `sqnr-weight-db` (the conversions), `sqnr-mac-db`
 * (the exact accumulator values), `sqnr-output-db` (after the float32
 * conversion), `sqnr-predicted-db` (from the first two, assuming independent
 * errors), `saturations` and `input-blocks-per-sample`; for fixed point also
 * `input-saturated` (elements clamped by the static exponent).
 *
 * @throws {Error} When the input does not fit the layer.
 */
export function layerErrorStats(
  plan: BfpLayerPlan,
  x: Tensor,
  y: Tensor,
  weight: Float32Array,
): Record<string, StatValue> {
  const { format, blocking, staticExponent } = plan.input;
  const name = plan.input.op.operand(0)?.name ?? "X";
  const xq = quantizeActivations(x.data as Float32Array, x.shape, format, blocking, name, staticExponent ?? undefined);
  const xDeq = dequantizeActivations(xq, x.shape, format, blocking);
  const w = plan.weights;
  const wDeq = dequantizeWeights(w.mantissas, w.exponents, w.shape, format, w.block);
  const r = bfpLayer(plan, { mantissas: xq.mantissas, exponents: xq.exponents, shape: x.shape });
  const ref = toFloat64(y);
  const sIn = sqnr(x.data as Float32Array, xDeq), sW = sqnr(weight, wDeq);
  const predicted = -10 * Math.log10(10 ** (-sIn / 10) + 10 ** (-sW / 10));
  return {
    "sqnr-input-db": db(sIn),
    "sqnr-weight-db": db(sW),
    "sqnr-mac-db": db(sqnr(ref, r.y)),
    "sqnr-output-db": db(sqnr(ref, Float32Array.from(r.y))),
    "sqnr-predicted-db": db(predicted),
    "saturations": r.saturations,
    "input-blocks-per-sample": xq.exponents.length / Math.max(1, x.shape[0]),
    // Fixed point: calibration elements past the static exponent's range (none unless headroom is cut short).
    ...(staticExponent === null ? {} : { "input-saturated": xq.saturated }),
  };
}

/**
 * Per-channel bias correction that has to earn its place: the mean error per
 * channel ({@linkcode meanChannelError}) fitted on one half of the samples
 * (axis 0) must lower the squared error on the other half, both ways round
 * (two-fold cross-validation, summed); then it is refitted on all samples and
 * returned. Null when it does not lower the held-out error, or with fewer than
 * two samples (nothing to hold out): a small calibration set must not
 * overfit the bias.
 *
 * @example A constant offset is kept, noise around zero is not
 * ```ts
 * import assert from "node:assert/strict";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { heldOutChannelShift } from "./bfp_error.ts";
 * const ref = float32Tensor([4, 1], [1, 2, 3, 4]);
 * assert.deepEqual([...heldOutChannelShift(ref, float32Tensor([4, 1], [0.5, 1.5, 2.5, 3.5]), true)!], [0.5]);
 * assert.equal(heldOutChannelShift(ref, float32Tensor([4, 1], [1.5, 1.5, 2.5, 3.5]), true), null);
 * ```
 */
export function heldOutChannelShift(reference: Tensor, approx: Tensor, channelsLast: boolean): Float64Array | null {
  const n = reference.shape[0];
  if (n < 2) return null;
  const half = Math.floor(n / 2);
  const first = [sampleRange(reference, 0, half), sampleRange(approx, 0, half)] as const;
  const second = [sampleRange(reference, half, n), sampleRange(approx, half, n)] as const;
  const fitFirst = meanChannelError(first[0], first[1], channelsLast);
  const fitSecond = meanChannelError(second[0], second[1], channelsLast);
  const none = new Float64Array(fitFirst.length);
  const heldOut = shiftedNoise(second[0], second[1], fitFirst, channelsLast) +
    shiftedNoise(first[0], first[1], fitSecond, channelsLast);
  const uncorrected = shiftedNoise(second[0], second[1], none, channelsLast) +
    shiftedNoise(first[0], first[1], none, channelsLast);
  return heldOut < uncorrected ? meanChannelError(reference, approx, channelsLast) : null;
}

/** Samples `[start, end)` (axis 0) of every input, sharing their storage. */
export function sampleFeeds(
  inputs: Readonly<Record<string, Tensor>>,
  start: number,
  end: number,
): Record<string, Tensor> {
  return Object.fromEntries(
    Object.entries(inputs).map(([k, t]) => [k, sampleRange(t, Math.min(start, t.shape[0]), Math.min(end, t.shape[0]))]),
  );
}

/** Samples `[start, end)` of a tensor (axis 0), sharing its storage. */
export function sampleRange(t: Tensor, start: number, end: number): Tensor {
  const inner = t.shape[0] === 0 ? 0 : t.data.length / t.shape[0];
  const data = (t.data as Float32Array).subarray(start * inner, end * inner);
  return { dtype: t.dtype, shape: [end - start, ...t.shape.slice(1)], data };
}

/** Σ (reference - approx - shift[c])² over every element, channel c as in {@linkcode meanChannelError}. */
function shiftedNoise(reference: Tensor, approx: Tensor, shift: Float64Array, channelsLast: boolean): number {
  const shape = reference.shape, c = shift.length;
  const inner = channelsLast ? 1 : shape.slice(2).reduce((a, b) => a * b, 1);
  const a = reference.data, b = approx.data;
  let noise = 0;
  for (let i = 0; i < a.length; i++) noise += (Number(a[i]) - Number(b[i]) - shift[Math.floor(i / inner) % c]) ** 2;
  return noise;
}
