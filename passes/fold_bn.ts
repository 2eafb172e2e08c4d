/**
 * `fold-bn`: fold an inference BatchNormalization into the Conv, Gemm or
 * MatMul that produces its input, so the network runs one op where it ran two
 * (the usual deployment step after training with batch norm).
 * @module
 */
import { attr } from "../ir/attributes.ts";
import { isConstant, isDefaultDomain, Op, Value } from "../ir/graph.ts";
import type { Module } from "../ir/module.ts";
import { addConstant, eraseConstantIfUnused, replaceConstant, replaceOp } from "../ir/rewriter.ts";
import { fromFloat64, type Tensor, toFloat64 } from "../ir/tensor.ts";
import { FLOAT_DTYPES, isTensorType } from "../ir/types.ts";
import { definePass, type Pass } from "./pass.ts";

/** Options of `fold-bn` (none). */
export const foldBnOptions: Record<string, never> = {};

/** Why one BatchNormalization was left alone (the keys of the `bn-not-folded-reasons` statistic). */
type Reason =
  | "input-not-conv-gemm-matmul"
  | "input-has-other-users"
  | "training-mode"
  | "training-outputs-used"
  | "per-activation"
  | "params-not-constant"
  | "weights-not-constant"
  | "unsupported-dtype"
  | "channel-mismatch"
  | "gemm-bias-shape"
  | "matmul-rank";

/** The per-channel affine map of an inference BatchNormalization: `y = scale * x + shift`. */
interface ChannelAffine {
  /** `gamma / sqrt(var + epsilon)` per channel. */
  readonly scale: Float64Array;
  /** `beta - mean * scale` per channel. */
  readonly shift: Float64Array;
}

/**
 * `fold-bn`: fold each inference `BatchNormalization` into the op producing its input.
 *
 * With `s = gamma / sqrt(var + epsilon)` per channel (ONNX BatchNormalization:
 * `y = (x - mean) / sqrt(var + epsilon) * scale + B`), the cases handled are:
 * - `Conv` (any `group`, with or without bias): weights `OIHW` are scaled per
 *   output channel `o`, `W'[o] = s[o] * W[o]`, and the bias becomes
 *   `b'[o] = beta[o] + (b[o] - mean[o]) * s[o]` (`b = 0` when absent);
 * - `Gemm` (`transB` 0 or 1, any `alpha`/`beta`): the columns of `op(B)` are
 *   scaled per output feature and `C` becomes `s * (beta * C - mean) + B_bn` of
 *   shape `[N]` with `beta = 1` (C must be absent or broadcast along the batch:
 *   shape `[]`, `[1]`, `[N]`, `[1,1]` or `[1,N]`);
 * - `MatMul` of a rank-2 input by a constant `[K,N]` weight: rewritten as a
 *   `Gemm` with the scaled weight and the folded bias.
 *
 * Preconditions, each checked (a BatchNormalization that fails one is left in
 * place and counted in `bn-not-folded`, with per-reason counts in
 * `bn-not-folded-reasons`): the producer's result has exactly one use, the
 * BatchNormalization's `X`; weights, bias and the four BN parameters are
 * constants (not graph inputs, which callers may override); BN is in inference
 * mode (`training_mode = 0`, `is_test = 1` before opset 7) with its optional
 * training outputs unused and per-channel parameters (not `spatial = 0`); the
 * parameter count equals the producer's output channels (Conv axis 1, Gemm /
 * MatMul features on a 2-D `[N, F]` result). A BatchNormalization that feeds a
 * Conv (pre-activation networks) is never folded forward: with zero padding
 * the shift would reach the padded border, which changes the result.
 *
 * Constants are never written into: new weights get derived names
 * (`conv1.weight.folded`), so a weight shared by two convs keeps its other
 * users' values. Constants left unused by a fold are erased. The folded op
 * keeps its name and result name, except that a BN result that was a graph
 * output keeps its name. Only the main graph is rewritten.
 * Statistics: `bn-folded`, `bn-not-folded`, `bn-not-folded-reasons`.
 *
 * @example Fold a BatchNormalization into a Conv
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../ir/parser.ts";
 * import { foldBnPass } from "./fold_bn.ts";
 * import { testPassContext } from "./testing.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[1,1,2,2]) -> (%y) {
 *   %w = const f32[1,1,1,1] dense<2.0>
 *   %gamma = const f32[1] dense<3.0>
 *   %beta = const f32[1] dense<1.0>
 *   %mean = const f32[1] dense<0.5>
 *   %var = const f32[1] dense<1.0>
 *   %c = Conv(%x, %w) : f32[1,1,2,2]
 *   %y = BatchNormalization(%c, %gamma, %beta, %mean, %var) {epsilon = 0.0} : f32[1,1,2,2]
 *   return %y
 * }
 * }`);
 * const ctx = testPassContext();
 * assert.equal(foldBnPass.run(m, {}, ctx), true);
 * assert.deepEqual(m.graph.ops.map((op) => op.type), ["Conv"]);
 * assert.equal(m.graph.outputs[0].name, "y");
 * assert.equal(ctx.stats["bn-folded"], 1);
 * ```
 */
export const foldBnPass: Pass<typeof foldBnOptions> = definePass({
  name: "fold-bn",
  summary: "Fold inference BatchNormalization into the preceding Conv, Gemm or MatMul",
  options: foldBnOptions,
  run(module, _options, ctx): boolean {
    const { folded, reasons } = foldBatchNorms(module, ctx.log);
    ctx.stat("bn-folded", folded);
    ctx.stat("bn-not-folded", Object.values(reasons).reduce((a, b) => a + b, 0));
    ctx.stat("bn-not-folded-reasons", reasons);
    return folded > 0;
  },
});

/**
 * Fold every foldable inference BatchNormalization of the module's graph
 * (what `fold-bn` does; `bfp` and `fixed` call it before lowering). Returns
 * how many were folded and, by reason, how many were not; `log` hears each
 * one left.
 */
export function foldBatchNorms(
  module: Module,
  log: (message: string) => void = () => {},
): { folded: number; reasons: Record<string, number> } {
  const graph = module.graph;
  let folded = 0;
  const reasons: Record<string, number> = {};
  for (const bn of [...graph.ops]) {
    if (bn.type !== "BatchNormalization" || !isDefaultDomain(bn.domain) || bn.graph !== graph) continue;
    const reason = foldOne(module, bn);
    if (reason === null) {
      folded++;
    } else {
      reasons[reason] = (reasons[reason] ?? 0) + 1;
      log(`op "${bn.name}" (BatchNormalization) not folded: ${reason}`);
    }
  }
  return { folded, reasons };
}

/** Fold one BatchNormalization, or say why not (nothing is changed then). */
function foldOne(module: Module, bn: Op): Reason | null {
  const graph = bn.graph!;
  const opset = module.opset("");
  if (opset >= 14 ? bn.int("training_mode", 0) !== 0 : opset < 7 && bn.int("is_test", 0) !== 1) return "training-mode";
  if (bn.results.slice(1).some((r) => !r.isDead)) return "training-outputs-used";
  if (opset < 9 && bn.int("spatial", 1) === 0) return "per-activation";
  const x = bn.operand(0);
  const producer = x?.producer ?? null;
  if (x === null || producer === null || !isDefaultDomain(producer.domain) || producer.graph !== graph) {
    return "input-not-conv-gemm-matmul";
  }
  if (producer.type !== "Conv" && producer.type !== "Gemm" && producer.type !== "MatMul") {
    return "input-not-conv-gemm-matmul";
  }
  if (x.uses.length !== 1 || graph.outputs.includes(x)) return "input-has-other-users";
  const params = [1, 2, 3, 4].map((i) => bn.operand(i));
  if (!params.every(isConstant)) return "params-not-constant";
  const tensors = params.map((p) => p!.constant!);
  if (!tensors.every((t) => FLOAT_DTYPES.has(t.dtype))) return "unsupported-dtype";
  const [gamma, beta, mean, variance] = tensors.map(toFloat64);
  const channels = gamma.length;
  if (![beta, mean, variance].every((p) => p.length === channels)) return "channel-mismatch";
  const affine = channelAffine(gamma, beta, mean, variance, bn.float("epsilon", 1e-5));

  let folded: Op | Reason;
  if (producer.type === "Conv") folded = foldIntoConv(producer, affine);
  else if (producer.type === "Gemm") folded = foldIntoGemm(module, producer, affine);
  else folded = foldIntoMatMul(producer, bn, affine);
  if (typeof folded === "string") return folded;

  // The folded op now computes BN's result: route BN's users (and output slots, with their names) to it.
  replaceOp(bn, [folded.result], { names: "outputs" });
  for (const p of params) eraseConstantIfUnused(p);
  return null;
}

function channelAffine(
  gamma: Float64Array,
  beta: Float64Array,
  mean: Float64Array,
  variance: Float64Array,
  epsilon: number,
): ChannelAffine {
  const scale = new Float64Array(gamma.length);
  const shift = new Float64Array(gamma.length);
  for (let c = 0; c < gamma.length; c++) {
    scale[c] = gamma[c] / Math.sqrt(variance[c] + epsilon);
    shift[c] = beta[c] - mean[c] * scale[c];
  }
  return { scale, shift };
}

/** `W'[o] = s[o] W[o]` (OIHW: output channel is the outer axis), `b'[o] = s[o] b[o] + shift[o]`. */
function foldIntoConv(conv: Op, affine: ChannelAffine): Op | Reason {
  const weight = conv.operand(1);
  const bias = conv.operand(2);
  if (!isConstant(weight) || (bias !== null && !isConstant(bias))) return "weights-not-constant";
  const w = weight.constant!;
  if (!FLOAT_DTYPES.has(w.dtype) || (bias !== null && bias.constant!.dtype !== w.dtype)) return "unsupported-dtype";
  const outChannels = w.shape[0];
  if (w.shape.length < 3 || outChannels !== affine.scale.length) return "channel-mismatch";
  if (bias !== null && bias.constant!.data.length !== outChannels) return "channel-mismatch";

  const scaled = workingCopy(w);
  const perChannel = scaled.length / outChannels;
  for (let o = 0; o < outChannels; o++) {
    const s = affine.scale[o];
    const end = (o + 1) * perChannel;
    for (let i = o * perChannel; i < end; i++) scaled[i] *= s;
  }
  const b = bias === null ? new Float64Array(outChannels) : toFloat64(bias.constant!);
  for (let o = 0; o < outChannels; o++) b[o] = affine.scale[o] * b[o] + affine.shift[o];

  const biasName = `${biasBase(weight, bias)}.folded`;
  replaceConstant(conv, 1, fromWorkingCopy(w, scaled), { name: `${weight.name}.folded` });
  replaceConstant(conv, 2, fromFloat64(w.dtype, [outChannels], b), { name: biasName });
  return conv;
}

/**
 * Gemm `Y = alpha op(A) op(B) + beta C`: scale column `n` of `op(B)` by `s[n]`
 * and set `C' = s (beta C - mean) + B_bn = s beta C + shift` with `beta = 1`.
 */
function foldIntoGemm(module: Module, gemm: Op, affine: ChannelAffine): Op | Reason {
  const weight = gemm.operand(1);
  const bias = gemm.operand(2);
  if (!isConstant(weight) || (bias !== null && !isConstant(bias))) return "weights-not-constant";
  const w = weight.constant!;
  if (!FLOAT_DTYPES.has(w.dtype) || (bias !== null && bias.constant!.dtype !== w.dtype)) return "unsupported-dtype";
  if (w.shape.length !== 2) return "channel-mismatch";
  const transB = gemm.flag("transB");
  const features = transB ? w.shape[0] : w.shape[1];
  if (features !== affine.scale.length) return "channel-mismatch";
  const c = bias === null ? null : bias.constant!;
  if (c !== null && !broadcastsAlongBatch(c, features)) return "gemm-bias-shape";

  const scaled = scaleFeatures(w, transB, affine.scale);
  const beta = gemm.float("beta", 1);
  const cValues = c === null ? null : toFloat64(c);
  const b = new Float64Array(features);
  for (let n = 0; n < features; n++) {
    const cn = cValues === null ? 0 : cValues[cValues.length === 1 ? 0 : n];
    b[n] = affine.scale[n] * beta * cn + affine.shift[n];
  }
  const biasName = `${biasBase(weight, bias)}.folded`;
  replaceConstant(gemm, 1, scaled, { name: `${weight.name}.folded` });
  replaceConstant(gemm, 2, fromFloat64(w.dtype, [features], b), { name: biasName });
  gemm.attributes.set("beta", attr.float(1));
  // Before opset 7 Gemm broadcasts C only when asked to.
  if (module.opset("") < 7) gemm.attributes.set("broadcast", attr.int(1));
  return gemm;
}

/** MatMul `A[M,K] x W[K,N]` followed by BN over N becomes `Gemm(A, s W, shift)`. */
function foldIntoMatMul(matmul: Op, bn: Op, affine: ChannelAffine): Op | Reason {
  const a = matmul.operand(0);
  const weight = matmul.operand(1);
  if (!isConstant(weight)) return "weights-not-constant";
  const w = weight.constant!;
  // Only the 2-D case is a Gemm, and only there is BN's channel axis (1) the feature axis.
  const aType = a?.type ?? null;
  if (!isTensorType(aType) || aType.shape === null || aType.shape.length !== 2 || w.shape.length !== 2) {
    return "matmul-rank";
  }
  if (!FLOAT_DTYPES.has(w.dtype)) return "unsupported-dtype";
  if (w.shape[1] !== affine.scale.length) return "channel-mismatch";

  const graph = matmul.graph!;
  const newWeight = addConstant(graph, `${weight.name}.folded`, scaleFeatures(w, false, affine.scale));
  const newBias = addConstant(
    graph,
    `${biasBase(weight, null)}.folded`,
    fromFloat64(w.dtype, [w.shape[1]], affine.shift),
  );
  const gemm = new Op({
    name: matmul.name,
    type: "Gemm",
    operands: [a, newWeight, newBias],
    results: [new Value(matmul.result.name, bn.result.type)],
  });
  replaceOp(matmul, gemm);
  eraseConstantIfUnused(weight);
  return gemm;
}

/** True when `c` broadcasts to `[M, features]` without depending on the row: `[]`, `[1]`, `[F]`, `[1,1]`, `[1,F]`. */
function broadcastsAlongBatch(c: Tensor, features: number): boolean {
  if (c.shape.length > 2 || (c.shape.length === 2 && c.shape[0] !== 1)) return false;
  const last = c.shape.length === 0 ? 1 : c.shape[c.shape.length - 1];
  return last === 1 || last === features;
}

/** Copy of a `[K,N]` (or `[N,K]` when transposed) weight with feature `n` scaled by `scale[n]`. */
function scaleFeatures(w: Tensor, transposed: boolean, scale: Float64Array): Tensor {
  const values = workingCopy(w);
  const [rows, cols] = w.shape;
  for (let r = 0; r < rows; r++) {
    const row = r * cols;
    if (transposed) {
      const s = scale[r];
      for (let k = 0; k < cols; k++) values[row + k] *= s;
    } else {
      for (let n = 0; n < cols; n++) values[row + n] *= scale[n];
    }
  }
  return fromWorkingCopy(w, values);
}

/**
 * A copy of a float weight to scale in place: float32 stays float32 (`x[i] *= s` then rounds each product once, as
 * converting a float64 copy back would), so folding a large layer holds no float64 copy; other types go through
 * float64.
 */
function workingCopy(w: Tensor): Float32Array | Float64Array {
  return w.dtype === "f32" ? (w.data as Float32Array).slice() : toFloat64(w);
}

/** The tensor of {@linkcode workingCopy}'s scaled values, of `w`'s dtype and shape. */
function fromWorkingCopy(w: Tensor, values: Float32Array | Float64Array): Tensor {
  return values instanceof Float32Array
    ? { dtype: "f32", shape: [...w.shape], data: values }
    : fromFloat64(w.dtype, w.shape, values);
}

/** Base name of the folded bias: the old bias's, else the weight's with `weight` read as `bias`. */
function biasBase(weight: Value, bias: Value | null): string {
  if (bias !== null) return bias.name;
  return /weight$/.test(weight.name) ? weight.name.replace(/weight$/, "bias") : `${weight.name}.bias`;
}
