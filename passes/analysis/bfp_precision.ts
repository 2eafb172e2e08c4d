/**
 * Blocking and mantissa width per lowered layer, chosen from calibration
 * data: the noise-to-signal ratio (NSR, noise power over signal power) of
 * converting each layer's float input and weights to BFP is measured for
 * each candidate, and the layer's output NSR is modelled as their sum. Layer
 * NSRs add up through the network to first order, so the model's output
 * SQNR is predicted as `-10·log10(Σ NSR)`; that prediction drives
 * mixed precision, and the report states it beside the measured figure.
 * @module
 */
import { type BfpFormat, bfpFormat } from "../../ir/bfp/format.ts";
import {
  type ActivationBlocking,
  dequantizeActivations,
  dequantizeWeights,
  quantizeActivations,
  quantizeWeights,
} from "../../ir/bfp/quantize.ts";
import type { Op } from "../../ir/graph.ts";
import type { Module } from "../../ir/module.ts";
import type { OpRegistry } from "../../ir/op_def.ts";
import { shapeSize, type Tensor, tensor } from "../../ir/tensor.ts";
import { heldOutChannelShift, PowerSum, runWithProbes, SequentialRun } from "./bfp_error.ts";

/** What the choice needs of one layer: its float input on the calibration data, its weights and geometry. */
export interface PrecisionLayer {
  /** The layer's float input `[N, C, ...]` (or `[..., K]` for a Gemm on rows), whole or in chunks of samples. */
  readonly x: Tensor | readonly Tensor[];
  /** Weights `[O, Cg, ...kernel]` or `[O, K]`. */
  readonly weight: Float32Array;
  /** The shape of {@linkcode weight}. */
  readonly weightShape: readonly number[];
  /** Channel groups. */
  readonly group: number;
  /** The activation's channel axis: 1, or -1 for a Gemm whose rows are samples. */
  readonly axis: number;
}

/**
 * The blocking of a layer's input for `block` input channels per block (0: one block per sample and channel group of
 * the layer, so a depthwise layer's input gets one exponent per channel plane).
 */
export function inputBlocking(layer: { group: number; axis: number }, block: number): Required<ActivationBlocking> {
  return { block, group: layer.group, axis: layer.axis };
}

/**
 * The NSR of a layer's output predicted from the conversion of its input and
 * weights to `format` with `block` channels per block (0: per channel), as
 * the sum of the two conversions' NSRs (independent errors).
 *
 * @example Wider mantissas convert with less noise
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "../../ir/bfp/format.ts";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { conversionNsr } from "./bfp_precision.ts";
 * const layer = { x: float32Tensor([1, 4], [0.1, -3, 0.7, 2]), weight: Float32Array.of(1, 0.3, -0.02, 5),
 *   weightShape: [1, 4], group: 1, axis: 1 };
 * const at = (m: number) => conversionNsr(layer, bfpFormat({ mantissaBits: m }), 0);
 * assert.ok(at(4) > at(8) && at(8) > at(12) && at(12) > 0);
 * ```
 */
export function conversionNsr(layer: PrecisionLayer, format: BfpFormat, block: number): number {
  const blocking = inputBlocking(layer, block);
  // Chunk by chunk, the same sums as over the whole input (blocks never span samples).
  const input = new PowerSum();
  for (const t of Array.isArray(layer.x) ? layer.x : [layer.x as Tensor]) {
    const x = t.data as Float32Array;
    input.add(
      x,
      dequantizeActivations(quantizeActivations(x, t.shape, format, blocking, "X"), t.shape, format, blocking),
    );
  }
  const xNsr = input.nsr();
  const wq = quantizeWeights(layer.weight, layer.weightShape, format, block);
  const wNsr = new PowerSum()
    .add(layer.weight, dequantizeWeights(wq.mantissas, wq.exponents, layer.weightShape, format, block)).nsr();
  return xNsr + wNsr;
}

/** The format with another mantissa width. */
export function withMantissa(format: BfpFormat, mantissaBits: number): BfpFormat {
  return bfpFormat({ ...format, mantissaBits });
}

/**
 * `true` when blocks of `block` channels pay for their exponents on this
 * layer: their SQNR gain over one exponent per sample exceeds what the extra
 * exponent bits would buy as mantissa bits (6.02 dB per bit, `E / min(block,
 * Cg)` exponent bits per element).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { blocksPay } from "./bfp_precision.ts";
 * assert.equal(blocksPay(1e-3, 1e-4, 5, 32, 64), true); // 10 dB for 0.16 bit
 * assert.equal(blocksPay(1e-3, 1e-4, 5, 32, 1), false); // a depthwise layer: 10 dB for 5 bits
 * ```
 */
export function blocksPay(
  perSampleNsr: number,
  blockedNsr: number,
  exponentBits: number,
  block: number,
  channelsPerGroup: number,
): boolean {
  if (blockedNsr === 0) return perSampleNsr > 0;
  const gainDb = 10 * Math.log10(perSampleNsr / blockedNsr);
  return gainDb > 6.02 * exponentBits / Math.min(block, channelsPerGroup);
}

/** What {@linkcode chooseWidths} aims for. */
export interface WidthBudget {
  /** The largest weighted average width allowed (0: no limit). */
  readonly averageBits: number;
  /** Stop once the summed NSR is at most this (0: go on while the average allows). */
  readonly targetNsr: number;
}

/** Budget units of {@linkcode chooseWidths}' knapsack: each layer's cost is rounded up to 1/UNITS of the most. */
const UNITS = 20000;

/**
 * Mixed precision: one width per layer out of `widths` (ascending), a
 * knapsack solved exactly by dynamic programming over the cost, counted in
 * whole units of at least 1/{@linkcode UNITS} of the largest possible cost
 * (each layer's cost rounded up; a choice is taken only where its exact
 * average is within the budget, so one width everywhere at an integer average
 * is always on offer and the average never exceeds the budget). With
 * `budget.averageBits`, the least summed NSR whose cost-weighted average
 * width is at most it; with `budget.targetNsr`, the least cost whose summed
 * NSR reaches it (within the average when both are given; the least NSR
 * there when the target cannot be reached). Deterministic: ties go to the
 * narrower width of the later layer.
 *
 * @param nsr `nsr[l][i]`: layer `l`'s NSR at `widths[i]`.
 * @param cost Each layer's weight of the average (its weight count).
 * @returns The index into `widths` chosen per layer.
 * @example The layer that gains most gets the bits
 * ```ts
 * import assert from "node:assert/strict";
 * import { chooseWidths } from "./bfp_precision.ts";
 * const nsr = [[1e-2, 2.5e-3, 6e-4], [1e-4, 2.5e-5, 6e-6]];
 * assert.deepEqual(chooseWidths(nsr, [1, 1], [4, 5, 6], { averageBits: 5, targetNsr: 0 }), [2, 0]);
 * assert.deepEqual(chooseWidths(nsr, [1, 1], [4, 5, 6], { averageBits: 0, targetNsr: 3e-3 }), [1, 0]);
 * ```
 */
export function chooseWidths(
  nsr: readonly (readonly number[])[],
  cost: readonly number[],
  widths: readonly number[],
  budget: WidthBudget,
): number[] {
  const totalCost = cost.reduce((a, b) => a + b, 0);
  const most = totalCost * widths[widths.length - 1];
  // Costs are whole numbers (weight counts times widths): exact while the most fits in UNITS.
  const unit = Math.max(1, Math.ceil(most / UNITS));
  const units = cost.map((c) => widths.map((w) => Math.ceil((c * w) / unit)));
  const top = Math.ceil(most / unit);
  // Rounding each layer up costs less than a unit per layer: a budget of the exact cost plus one unit per layer
  // holds every assignment that truly fits (one width everywhere at an integer average included); those that do
  // not truly fit are skipped below.
  const exact = budget.averageBits > 0 ? budget.averageBits * totalCost : Infinity;
  const cap = Math.min(top, exact === Infinity ? top : Math.floor(exact / unit) + nsr.length);
  // best[b]: the least NSR of the layers so far within b units; choice[l][b]: layer l's width there.
  let best = new Float64Array(cap + 1);
  const choice = nsr.map(() => new Int8Array(cap + 1).fill(-1));
  nsr.forEach((row, l) => {
    const next = new Float64Array(cap + 1).fill(Infinity);
    for (let b = 0; b <= cap; b++) {
      for (let i = 0; i < widths.length; i++) {
        const u = units[l][i];
        if (u > b || best[b - u] === Infinity) continue;
        const v = best[b - u] + row[i];
        if (v < next[b]) [next[b], choice[l][b]] = [v, i];
      }
    }
    best = next;
  });
  const backtrack = (b: number): number[] => {
    const chosen = nsr.map(() => 0);
    for (let l = nsr.length - 1; l >= 0; l--) {
      chosen[l] = choice[l][b];
      b -= units[l][chosen[l]];
    }
    return chosen;
  };
  const fits = (chosen: readonly number[]): boolean =>
    chosen.reduce((sum, i, l) => sum + cost[l] * widths[i], 0) <= exact;
  // Budgets tried in order, the first whose choice truly fits wins: with a target, the cheapest that reaches it
  // and those above; then (no target, or none of those fits) the least NSR within the largest budget, downwards.
  const order: number[] = [];
  let below = cap;
  const reach = budget.targetNsr > 0 ? best.findIndex((v) => v <= budget.targetNsr) : -1;
  if (reach >= 0) {
    for (let b = reach; b <= cap; b++) order.push(b);
    below = reach - 1;
  }
  for (let b = below; b >= 0; b--) order.push(b);
  for (const b of order) {
    if (best[b] === Infinity) break; // the narrowest widths do not fit in less
    const chosen = backtrack(b);
    if (fits(chosen)) return chosen;
  }
  return nsr.map(() => 0); // the narrowest widths do not fit: nothing to choose
}

/** erf(x) to 1.5e-7 (Abramowitz and Stegun 7.1.26). */
function erf(x: number): number {
  const t = 1 / (1 + 0.3275911 * Math.abs(x));
  const y = 1 - t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))) *
      Math.exp(-x * x);
  return x < 0 ? -y : y;
}

/** E[max(0, z)] for z ~ N(mu, sigma²). */
function expectedRelu(mu: number, sigma: number): number {
  if (sigma === 0) return Math.max(0, mu);
  const t = mu / sigma;
  return mu * 0.5 * (1 + erf(t / Math.SQRT2)) + sigma * Math.exp(-0.5 * t * t) / Math.sqrt(2 * Math.PI);
}

/**
 * The expected value of `clip(z, lo, hi)` for z ~ N(mu, sigma²) (`lo`/`hi`
 * may be infinite: ReLU is `[0, ∞)`, identity `(-∞, ∞)`), in closed form:
 * how a BatchNormalization's `beta`/`gamma` predict the mean input of the
 * layer after it when no calibration data is given.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { expectedClipped } from "./bfp_precision.ts";
 * assert.equal(expectedClipped(0.5, 0, -Infinity, Infinity), 0.5);
 * assert.ok(Math.abs(expectedClipped(0, 1, 0, Infinity) - 1 / Math.sqrt(2 * Math.PI)) < 1e-7);
 * assert.equal(expectedClipped(9, 0, 0, 6), 6);
 * ```
 */
export function expectedClipped(mu: number, sigma: number, lo: number, hi: number): number {
  const above = (t: number): number => t === Infinity ? 0 : expectedRelu(mu - t, sigma); // E[max(0, z - t)]
  if (lo === -Infinity) return mu - (hi === Infinity ? 0 : above(hi));
  return lo + above(lo) - above(hi);
}

/** A layer whose output sensitivity {@linkcode measuredOutputNsr} measures. */
export interface SensitivityLayer extends Omit<PrecisionLayer, "x"> {
  /** The float layer (Conv, Gemm or MatMul) in the module. */
  readonly op: Op;
  /** `conv` or `gemm` (weights `[O, K]` with transposes and alpha applied). */
  readonly kind: "conv" | "gemm";
  /** The format its input and weights get. */
  readonly format: BfpFormat;
  /** Its blocking (0: per channel). */
  readonly block: number;
}

/**
 * The NSR of the model's outputs when only one layer is converted (its input
 * and its weights to its format and blocking, or only one of them as `convert`
 * says; every other layer in float),
 * per layer, measured on `feeds`: how much of the output noise each layer's
 * conversion causes, amplification by the layers after it included. With
 * `biasCorrect` the layer's mean output error per channel is taken out first
 * where the held-out check keeps it, as the lowered model's bias correction does. One float run of the model,
 * forked at each layer to run the ops after it (the layer converted): the ops before a layer are not run again,
 * but the later ones run once per layer, so callers pass few samples.
 *
 * A layer's conversion NSR alone misjudges this by orders of magnitude: a
 * depthwise 3x3 filter whose output is near zero on flat regions turns a
 * 0.4% weight error into a large relative output shift (PaddleOCR's detector:
 * its second layer alone takes the output to 12 dB, 41 dB after bias
 * correction), and an early layer's noise is amplified by every layer after it.
 *
 * @throws {Error} Naming the op that failed to run.
 */
export function measuredOutputNsr(
  module: Module,
  layers: readonly SensitivityLayer[],
  feeds: Readonly<Record<string, Tensor>>,
  ops: OpRegistry,
  biasCorrect: boolean,
  convert: "both" | "input" | "weights" = "both",
): number[] {
  const outputs = module.graph.outputs;
  const reference = runWithProbes(module, outputs, feeds, ops);
  let signal = 0;
  for (const v of outputs) {
    const a = reference.get(v)!;
    if (a.dtype === "f32") { for (let i = 0; i < a.data.length; i++) signal += (a.data[i] as number) ** 2; }
  }
  const byOp = new Map<Op, number[]>();
  layers.forEach((layer, l) => byOp.set(layer.op, [...byOp.get(layer.op) ?? [], l]));
  const result = layers.map(() => 0);
  // One float run walks the graph; at each layer a fork runs the rest with that layer converted (the ops before it
  // give what the float run gave). The outputs computed before the layer carry no noise.
  const run = new SequentialRun(module, feeds, ops);
  for (let op = run.next; op !== null; op = run.next) {
    for (const l of byOp.get(op) ?? []) {
      let noise = 0;
      run.fork().finish((o, args, results, rerun) => {
        const out = o === op ? convertedRun(layers[l], args, results, rerun, biasCorrect, convert) : results;
        o.results.forEach((r, k) => {
          const a = reference.get(r);
          if (a === undefined || a.dtype !== "f32") return; // not a graph output, or not float
          for (let i = 0; i < a.data.length; i++) noise += ((a.data[i] as number) - (out[k].data[i] as number)) ** 2;
        });
        return out;
      });
      result[l] = signal === 0 ? 0 : noise / signal;
    }
    run.step();
  }
  return result;
}

/** The layer's results with its input and/or weights converted (and its mean channel shift taken out). */
function convertedRun(
  layer: SensitivityLayer,
  args: readonly (Tensor | null)[],
  results: Tensor[],
  rerun: (args: readonly (Tensor | null)[]) => Tensor[],
  biasCorrect: boolean,
  convert: "both" | "input" | "weights",
): Tensor[] {
  const converted = [...args];
  const x = args[0]!;
  if (convert !== "weights") {
    const blocking = inputBlocking(layer, layer.block);
    const xq = quantizeActivations(x.data as Float32Array, x.shape, layer.format, blocking, "X");
    converted[0] = tensor("f32", x.shape, dequantizeActivations(xq, x.shape, layer.format, blocking));
  }
  if (convert !== "input") {
    const wq = quantizeWeights(layer.weight, layer.weightShape, layer.format, layer.block);
    const w = dequantizeWeights(wq.mantissas, wq.exponents, layer.weightShape, layer.format, layer.block);
    converted[1] = weightOperand(layer, w, args[1]!);
  }
  const out = rerun(converted);
  const channelsLast = layer.kind === "gemm";
  const shift = biasCorrect ? heldOutChannelShift(results[0], out[0], channelsLast) : null;
  return shift === null ? out : [shiftChannels(out[0], shift, channelsLast)];
}

/** Weights `[O, K]` (or `[O, Cg, ...kernel]`) back in the layout and scale of the op's weight operand. */
function weightOperand(layer: SensitivityLayer, w: Float32Array, original: Tensor): Tensor {
  const op = layer.op;
  if (layer.kind === "conv") return tensor("f32", original.shape, w);
  const alpha = op.type === "Gemm" ? op.float("alpha", 1) : 1;
  const transposed = op.type === "MatMul" || !op.flag("transB");
  const [o, k] = layer.weightShape;
  const data = new Float32Array(o * k);
  for (let i = 0; i < o; i++) {
    for (let j = 0; j < k; j++) data[transposed ? j * o + i : i * k + j] = w[i * k + j] / alpha;
  }
  return tensor("f32", original.shape, data);
}

/** `y` plus `shift[c]` on every element of channel c (axis 1, or the last axis with `channelsLast`). */
function shiftChannels(y: Tensor, shift: Float64Array, channelsLast: boolean): Tensor {
  const data = Float32Array.from(y.data as Float32Array);
  const c = shift.length;
  const inner = channelsLast ? 1 : shapeSize(y.shape.slice(2));
  for (let i = 0; i < data.length; i++) data[i] += shift[Math.floor(i / inner) % c];
  return tensor("f32", y.shape, data);
}
