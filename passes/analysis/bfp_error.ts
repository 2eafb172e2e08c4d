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
import type { Value } from "../../ir/graph.ts";
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
