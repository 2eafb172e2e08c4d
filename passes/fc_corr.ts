/**
 * `fc-corr`: correlation pruning of fully connected layers (background.md §3).
 * Over calibration data, each FC layer's connections between weakly correlated
 * input and output neurons are removed (a sparse weight matrix), or, with
 * `granularity=neuron`, output neurons that are linear functions of another
 * are merged into it (a dense, thinner layer).
 * @module
 */
import { csrBytes } from "../ir/cost.ts";
import { isConstant, isDefaultDomain, Op, Value } from "../ir/graph.ts";
import type { Module } from "../ir/module.ts";
import { gemm } from "../ir/ops/gemm_kernel.ts";
import { addConstant, insertAfter, renameValue, replaceAllUsesWith, replaceConstant } from "../ir/rewriter.ts";
import { fromFloat64, type Tensor, toFloat64 } from "../ir/tensor.ts";
import { elementBits, FLOAT_DTYPES, isTensorType } from "../ir/types.ts";
import { probeCalibration } from "./analysis/calibration.ts";
import { definePass, type Pass, type PassContext, type StatValue } from "./pass.ts";

/** Options of `fc-corr`. */
export const fcCorrOptions = {
  granularity: {
    kind: "enum",
    values: ["connection", "neuron"],
    default: "connection",
    doc: "Remove weakly correlated connections (sparse), or merge linearly dependent output neurons (dense)",
  },
  threshold: {
    kind: "number",
    default: 0.1,
    min: 0,
    max: 1,
    doc: "connection: remove connections whose input/output correlation |r| is below this",
  },
  ratio: {
    kind: "number",
    optional: true,
    min: 0,
    max: 1,
    exclusiveMax: true,
    doc: "connection: remove this fraction of each layer's connections, lowest |r| first; overrides threshold",
  },
  mergeThreshold: {
    kind: "number",
    default: 0.99,
    min: 0,
    max: 1,
    exclusiveMin: true,
    doc: "neuron: merge an output neuron into another when their correlation r (after the activation) is at least this",
  },
  biasCorrection: {
    kind: "bool",
    default: true,
    doc: "connection: add each removed connection's mean contribution over the calibration data to the bias",
  },
  skip: { kind: "list", default: [], doc: "Op names left alone" },
  keepLast: { kind: "bool", default: true, doc: "Leave the last FC layer (the classifier) alone" },
} as const;

/** Elementwise activations a neuron merge may look through (they act on each feature alone). */
const ELEMENTWISE = new Set([
  "Relu",
  "LeakyRelu",
  "Sigmoid",
  "Tanh",
  "Elu",
  "Selu",
  "Softplus",
  "HardSigmoid",
  "Identity",
]);

/**
 * An FC layer `Y = alpha * X W^T + bias` with its weight read as `W (outputs x
 * inputs)`: a Gemm (`transA=0`, any `transB`, `alpha`, `beta`, bias `C`) or a
 * MatMul by a constant 2-D weight.
 */
interface FcLayer {
  readonly op: Op;
  readonly weight: Value & { constant: Tensor };
  /** Output neurons. */
  readonly outputs: number;
  /** Input neurons. */
  readonly inputs: number;
  /** `W[o * inputs + i]`, in float64 (alpha not applied). */
  readonly w: Float64Array;
  readonly alpha: number;
}

/**
 * Correlation pruning of FC layers (module header). Needs calibration inputs:
 * without them the pass fails with one line saying so.
 *
 * `granularity=connection` (the chapter's method): one run of the calibration
 * data gives each FC layer's input activations `x_j` and pre-activation
 * outputs `y_i`; every connection whose Pearson correlation `|r(x_j, y_i)|` is
 * below `threshold` (or, with `ratio=p`, the fraction `p` of the layer's
 * connections with the lowest `|r|`) gets weight 0. An input or output that is
 * constant over the calibration data correlates with nothing (`r = 0`). With
 * `bias-correction=true` each removed weight's mean contribution
 * `alpha * W[i,j] * mean(x_j)` moves into the bias (a Gemm bias is added when
 * absent, a MatMul gets an Add), so the output keeps its calibration mean. The
 * result is a sparse weight matrix of the same shape: a target must store it
 * sparse (CSR) to save memory or time, so the statistics and the cost model
 * (`ir/cost.ts`) give its dense and CSR bytes.
 *
 * `granularity=neuron` (structured, beyond the chapter): for each FC layer
 * followed by another FC layer through a chain of single-use per-feature ops
 * (BatchNormalization on 2-D input, and the elementwise activations Relu,
 * LeakyRelu, Sigmoid, Tanh, Elu, Selu, Softplus, HardSigmoid, Identity), the
 * values `a` that the next layer reads are taken from the calibration data.
 * When `r(a_i, a_j) >= merge-threshold` (positively correlated: through a
 * ReLU a negative linear relation cannot hold on both sides of zero), neuron
 * `j` is merged into `i`: `a_j ≈ s a_i + t` by least squares,
 * `W_next[:, i] += s W_next[:, j]`, `t W_next[:, j]` goes into the next bias,
 * and row `j` of this layer (with its bias and BatchNormalization entries)
 * and column `j` of the next layer are removed. A neuron constant over the
 * calibration data (a dead ReLU) is removed the same way with `s = 0`. The
 * fit is on post-activation values, so it is exact whatever the activation
 * when the relation is exact; for ReLU with pre-activations `z_j = s z_i`,
 * `s > 0`, it holds for every input, not just the calibration data. Layers
 * are handled in graph order, each on a fresh calibration run of the network
 * as merged so far. The last layer's outputs are never merged (no FC reads
 * them); its columns follow the merges of the layer before, unless it is named
 * in `skip` (then the layer before is not merged).
 *
 * Layers named in `skip`, the last FC layer with `keep-last=true`, Gemm with
 * `transA=1` and layers with non-finite weights are left alone.
 *
 * Statistics (connection): `layers-pruned`, `connections`, `connections-removed`,
 * `dense-bytes`, `csr-bytes` (over the pruned layers) and `layers`: per layer
 * `inputs`, `outputs`, `connections`, `removed`, `density`, `cut` (the |r|
 * below which connections were removed; with `ratio`, the largest removed),
 * `bias-corrected`, `dense-bytes`, `csr-bytes` (the weight in its stored
 * layout, see `csrBytes` in `ir/cost.ts`), `csr-index-bits`, `csr-pointer-bits`.
 * Statistics (neuron): `layers-merged`, `neurons-removed`, `params-before`,
 * `params-after` and per layer `next`, `neurons-before`, `neurons-after`,
 * `merged`, `constant`, `params-before`, `params-after` (this layer and the
 * next) and the first 32 merges (`j -> i`, with `r`, `s`, `t`).
 *
 * @example Remove the connection from an input that does not move the output
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../ir/parser.ts";
 * import { float32Tensor } from "../ir/tensor.ts";
 * import { defaultOptions } from "./options.ts";
 * import { fcCorrOptions, fcCorrPass } from "./fc_corr.ts";
 * import { testPassContext } from "./testing.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[N,2]) -> (%y) {
 *   %w = const f32[1,2] dense<[1.0, 0.001]>
 *   %y = Gemm(%x, %w) {transB = 1} : f32[N,1]
 *   return %y
 * }
 * }`);
 * const calibration = { x: float32Tensor([4, 2], [0, 1, 1, 0, 2, 0, 3, 1]) };
 * const ctx = testPassContext({ calibration });
 * assert.equal(fcCorrPass.run(m, { ...defaultOptions(fcCorrOptions), keepLast: false }, ctx), true);
 * assert.equal(ctx.stats["connections-removed"], 1);
 * ```
 */
export const fcCorrPass: Pass<typeof fcCorrOptions> = definePass({
  name: "fc-corr",
  summary: "Correlation pruning of FC layers over calibration data (sparse connections or merged neurons)",
  options: fcCorrOptions,
  run(module, options, ctx): boolean {
    if (ctx.calibration === null) {
      ctx.emit(
        "error",
        "fc-corr needs calibration data to correlate each FC layer's inputs and outputs (--calib, or calibration " +
          "in compile())",
      );
      return false;
    }
    const skip = new Set(options.skip);
    for (const name of skip) {
      if (!module.graph.ops.some((op) => op.name === name)) ctx.emit("warning", `skip names no op: "${name}"`);
    }
    const all = collectFcLayers(module, (message) => ctx.log(message));
    const last = all.length > 0 ? all[all.length - 1].op : null;
    const chosen = all.filter((l) => {
      if (skip.has(l.op.name)) return false;
      if (options.keepLast && l.op === last) {
        ctx.log(`keeping the last FC layer "${l.op.name}" (keep-last=true)`);
        return false;
      }
      if (l.w.every(Number.isFinite)) return true;
      ctx.emit("warning", `op "${l.op.name}" (${l.op.type}): weights hold NaN or Inf; layer left alone`, l.op);
      return false;
    });
    if (options.granularity === "neuron") return mergeNeurons(module, chosen, options.mergeThreshold, skip, ctx);
    return pruneConnections(module, chosen, options, ctx);
  },
});

// ---- Layers ----

/** Every FC layer with a constant float 2-D weight, in graph order. */
function collectFcLayers(module: Module, log: (message: string) => void): FcLayer[] {
  const layers: FcLayer[] = [];
  for (const op of module.graph.ops) {
    if (!isDefaultDomain(op.domain) || (op.type !== "Gemm" && op.type !== "MatMul")) continue;
    const weight = op.operand(1);
    if (!isConstant(weight) || !FLOAT_DTYPES.has(weight.constant.dtype) || weight.constant.shape.length !== 2) continue;
    if (op.type === "Gemm" && op.flag("transA")) {
      log(`op "${op.name}": Gemm with transA=1 is not supported; left alone`);
      continue;
    }
    const transB = op.type === "Gemm" && op.flag("transB");
    const [outputs, inputs] = transB ? weight.constant.shape : [weight.constant.shape[1], weight.constant.shape[0]];
    const stored = toFloat64(weight.constant);
    const w = transB ? stored : transpose(stored, inputs, outputs);
    const alpha = op.type === "Gemm" ? op.float("alpha", 1) : 1;
    layers.push({ op, weight, outputs, inputs, w, alpha });
  }
  return layers;
}

function transpose(a: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c];
  return t;
}

/** Store `w (outputs x inputs)` as the layer's weight, in its layout and dtype, under the old name. */
function storeWeight(l: FcLayer, w: Float64Array, outputs: number, inputs: number): void {
  const transB = l.op.type === "Gemm" && l.op.flag("transB");
  const dtype = l.weight.constant.dtype;
  const data = transB
    ? fromFloat64(dtype, [outputs, inputs], w)
    : fromFloat64(dtype, [inputs, outputs], transpose(w, outputs, inputs));
  replaceConstant(l.op, 1, data);
}

/** Rows of an FC input or output tensor with `width` features on the last axis (count x width, float64). */
function rowsOf(t: Tensor, width: number): { data: Float64Array; count: number } | null {
  if (t.shape.length === 0 || t.shape[t.shape.length - 1] !== width) return null;
  const data = toFloat64(t);
  return { data, count: data.length / width };
}

/** Column means and standard deviations (population) of `count x width` rows. */
function columnStats(data: Float64Array, count: number, width: number): { mean: Float64Array; std: Float64Array } {
  const mean = new Float64Array(width);
  const std = new Float64Array(width);
  for (let r = 0; r < count; r++) for (let c = 0; c < width; c++) mean[c] += data[r * width + c];
  for (let c = 0; c < width; c++) mean[c] /= count;
  for (let r = 0; r < count; r++) {
    for (let c = 0; c < width; c++) {
      const d = data[r * width + c] - mean[c];
      std[c] += d * d;
    }
  }
  for (let c = 0; c < width; c++) {
    const s = Math.sqrt(std[c] / count);
    // A column constant up to rounding has no correlation with anything.
    std[c] = s <= 1e-9 * Math.max(1, Math.abs(mean[c])) ? 0 : s;
  }
  return { mean, std };
}

/** The rows minus their column means, divided by the standard deviation (0 for a constant column). */
function standardize(data: Float64Array, count: number, width: number, mean: Float64Array, std: Float64Array) {
  const z = new Float64Array(count * width);
  for (let r = 0; r < count; r++) {
    for (let c = 0; c < width; c++) z[r * width + c] = std[c] === 0 ? 0 : (data[r * width + c] - mean[c]) / std[c];
  }
  return z;
}

/** The effective bias of an FC layer grows by `delta` (length outputs); false when its bias cannot take it. */
function addToBias(l: FcLayer, delta: Float64Array, outputs: number): boolean {
  const op = l.op;
  const dtype = l.weight.constant.dtype;
  if (op.type === "Gemm") {
    const beta = op.float("beta", 1);
    const c = op.operand(2);
    if (c === null || beta === 0) {
      replaceConstant(op, 2, fromFloat64(dtype, [outputs], delta), { name: `${op.name || l.weight.name}.bias` });
      op.attributes.delete("beta");
      return true;
    }
    if (!isConstant(c) || !FLOAT_DTYPES.has(c.constant.dtype)) return false;
    const old = toFloat64(c.constant);
    const shape = c.constant.shape;
    const size = old.length;
    if (size !== 1 && size !== outputs) return false; // A per-row bias ([N, m]) is not a per-neuron one.
    if (size === outputs && shape[shape.length - 1] !== outputs) return false;
    const next = new Float64Array(outputs);
    for (let i = 0; i < outputs; i++) next[i] = old[size === 1 ? 0 : i] + delta[i] / beta;
    replaceConstant(op, 2, fromFloat64(c.constant.dtype, size === 1 ? [outputs] : shape, next));
    return true;
  }
  // MatMul: a following Add of a constant per-neuron bias takes it; else an Add is inserted.
  const users = op.result.users;
  const graph = op.graph!;
  if (users.length === 1 && users[0].type === "Add" && !graph.outputs.includes(op.result)) {
    const add = users[0];
    const k = add.operand(0) === op.result ? 1 : 0;
    const b = add.operand(k);
    if (isConstant(b) && FLOAT_DTYPES.has(b.constant.dtype) && b.constant.shape.length <= 2) {
      const old = toFloat64(b.constant);
      const shape = b.constant.shape;
      if (old.length === outputs && shape[shape.length - 1] === outputs) {
        const next = old.map((v, i) => v + delta[i]);
        replaceConstant(add, k, fromFloat64(b.constant.dtype, shape, next));
        return true;
      }
    }
  }
  const name = op.result.name;
  renameValue(op.result, graph.freshName(`${name}.matmul`));
  const bias = addConstant(graph, `${op.name || l.weight.name}.bias`, fromFloat64(dtype, [outputs], delta));
  const added = new Value(name, op.result.type);
  const add = new Op({
    name: graph.freshOpName(`${op.name || name}.bias`),
    type: "Add",
    operands: [],
    results: [added],
  });
  replaceAllUsesWith(op.result, added);
  add.addOperand(op.result);
  add.addOperand(bias);
  insertAfter(op, add);
  return true;
}

// ---- granularity=connection ----

function pruneConnections(
  module: Module,
  layers: readonly FcLayer[],
  options: { readonly threshold: number; readonly ratio: number | undefined; readonly biasCorrection: boolean },
  ctx: PassContext,
): boolean {
  if (layers.length === 0) {
    ctx.emit("note", "nothing pruned: no FC layer (Gemm, MatMul by a constant 2-D weight) left after skip/keep-last");
    ctx.stat("layers-pruned", 0);
    return false;
  }
  const values = layers.flatMap((l) => [l.op.operand(0)!, l.op.result]);
  const activations = probeCalibration(module, values, ctx, "fc-corr");
  if (activations === null) return false;
  const perLayer: Record<string, StatValue> = {};
  const totals = { connections: 0, removed: 0, dense: 0, csr: 0, pruned: 0 };
  for (const l of layers) {
    const x = rowsOf(activations.get(l.op.operand(0)!)!, l.inputs);
    const y = rowsOf(activations.get(l.op.result)!, l.outputs);
    if (x === null || y === null || x.count !== y.count || x.count < 2) {
      ctx.log(`op "${l.op.name}": calibration activations do not have the layer's layout (or fewer than 2 rows)`);
      continue;
    }
    if (!x.data.every(Number.isFinite) || !y.data.every(Number.isFinite)) {
      ctx.emit("warning", `op "${l.op.name}": calibration activations hold NaN or Inf; layer left alone`, l.op);
      continue;
    }
    const r = correlation(x.data, y.data, x.count, l.inputs, l.outputs);
    const { remove, cut } = weakConnections(r, options.threshold, options.ratio);
    const w = Float64Array.from(l.w);
    const delta = new Float64Array(l.outputs);
    const xMean = columnStats(x.data, x.count, l.inputs).mean;
    let removed = 0;
    for (let k = 0; k < r.length; k++) {
      if (remove[k] === 0 || w[k] === 0) continue;
      delta[Math.floor(k / l.inputs)] += l.alpha * w[k] * xMean[k % l.inputs];
      w[k] = 0;
      removed++;
    }
    if (removed === 0) {
      ctx.log(`op "${l.op.name}": no connection below |r| ${cut}`);
      continue;
    }
    storeWeight(l, w, l.outputs, l.inputs);
    let corrected = false;
    if (options.biasCorrection && delta.some((d) => d !== 0)) {
      corrected = addToBias(l, delta, l.outputs);
      if (!corrected) ctx.log(`op "${l.op.name}": bias is not a per-neuron constant; no bias correction`);
    }
    let nonzeros = 0;
    for (let k = 0; k < w.length; k++) if (w[k] !== 0) nonzeros++;
    const stored = l.op.operand(1)!.constant!;
    const valueBits = elementBits(stored.dtype);
    const denseBytes = Math.ceil((w.length * valueBits) / 8);
    const csr = csrBytes(stored.shape[0], stored.shape[1], nonzeros, valueBits);
    perLayer[l.op.name] = {
      inputs: l.inputs,
      outputs: l.outputs,
      connections: w.length,
      removed,
      density: nonzeros / w.length,
      cut,
      "bias-corrected": corrected,
      "dense-bytes": denseBytes,
      "csr-bytes": csr.bytes,
      "csr-index-bits": csr.indexBits,
      "csr-pointer-bits": csr.pointerBits,
      "abs-r-histogram": absHistogram(r),
    };
    ctx.log(
      `op "${l.op.name}": removed ${removed} of ${w.length} connections (|r| < ${cut.toPrecision(3)}), ` +
        `density ${(nonzeros / w.length).toFixed(3)}, ${denseBytes} B dense, ${csr.bytes} B CSR`,
    );
    totals.pruned++;
    totals.connections += w.length;
    totals.removed += removed;
    totals.dense += denseBytes;
    totals.csr += csr.bytes;
  }
  if (totals.pruned === 0) ctx.emit("note", "nothing pruned: no connection is weakly enough correlated (see the log)");
  ctx.stat("layers-pruned", totals.pruned);
  ctx.stat("connections", totals.connections);
  ctx.stat("connections-removed", totals.removed);
  ctx.stat("dense-bytes", totals.dense);
  ctx.stat("csr-bytes", totals.csr);
  ctx.stat("layers", perLayer);
  return totals.pruned > 0;
}

/** Pearson correlation `r[o * inputs + i]` of output `o` with input `i` over `count` rows. */
function correlation(x: Float64Array, y: Float64Array, count: number, inputs: number, outputs: number): Float64Array {
  const xs = columnStats(x, count, inputs);
  const ys = columnStats(y, count, outputs);
  const zx = standardize(x, count, inputs, xs.mean, xs.std);
  const zy = standardize(y, count, outputs, ys.mean, ys.std);
  const r = new Float64Array(outputs * inputs);
  gemm({ m: outputs, n: inputs, k: count, a: zy, transA: true, b: zx, c: r, alpha: 1 / count });
  for (let k = 0; k < r.length; k++) r[k] = Math.max(-1, Math.min(1, r[k]));
  return r;
}

/**
 * Which connections to remove: `|r| < threshold`, or with `ratio` the
 * `floor(ratio * count)` lowest `|r|` (ties in index order). `cut` is the
 * largest removed `|r|` (the threshold itself without `ratio`).
 */
function weakConnections(
  r: Float64Array,
  threshold: number,
  ratio: number | undefined,
): { remove: Uint8Array; cut: number } {
  const remove = new Uint8Array(r.length);
  if (ratio === undefined) {
    for (let k = 0; k < r.length; k++) if (Math.abs(r[k]) < threshold) remove[k] = 1;
    return { remove, cut: threshold };
  }
  const count = Math.floor(ratio * r.length);
  const order = Uint32Array.from(r.keys()).sort((a, b) => Math.abs(r[a]) - Math.abs(r[b]) || a - b);
  for (let q = 0; q < count; q++) remove[order[q]] = 1;
  return { remove, cut: count === 0 ? 0 : Math.abs(r[order[count - 1]]) };
}

// ---- granularity=neuron ----

/** The per-feature ops between an FC layer and the next FC layer, and that next layer. */
interface Chain {
  readonly ops: readonly Op[];
  readonly next: FcLayer;
}

/** The chain from `l` to the next FC layer, or a reason why there is none. */
function chainAfter(l: FcLayer, all: readonly FcLayer[]): Chain | string {
  const graph = l.op.graph!;
  const ops: Op[] = [];
  let v = l.op.result;
  for (;;) {
    if (graph.outputs.includes(v)) return `"${v.name}" is a graph output`;
    const users = v.users;
    if (users.length !== 1 || v.uses.length !== 1) return `"${v.name}" has ${v.uses.length} uses`;
    const user = users[0];
    const next = all.find((f) => f.op === user);
    if (next !== undefined) {
      if (user.operand(0) !== v) return `"${v.name}" is not the input of "${user.name}"`;
      if (next.inputs !== l.outputs) return `"${user.name}" reads ${next.inputs} features, not ${l.outputs}`;
      return { ops, next };
    }
    if (!isDefaultDomain(user.domain)) return `"${user.name}" (${user.qualifiedType}) is not a per-feature op`;
    if (ELEMENTWISE.has(user.type) && user.results.length === 1 && user.operand(0) === v) {
      ops.push(user);
      v = user.result;
      continue;
    }
    if (user.type === "BatchNormalization" && user.operand(0) === v && user.results.length === 1) {
      const t = v.type;
      const params = user.operands.slice(1);
      const ok = isTensorType(t) && t.shape !== null && t.shape.length === 2 &&
        params.length === 4 && params.every((p) => isConstant(p) && p.constant.shape.length === 1);
      if (!ok) return `"${user.name}" (BatchNormalization) is not over 2-D features with constant parameters`;
      ops.push(user);
      v = user.result;
      continue;
    }
    return `"${user.name}" (${user.type}) is not a supported per-feature op`;
  }
}

/** A neuron `removed` replaced by `s * kept + t` (kept = -1: the constant `t`). */
interface Merge {
  readonly removed: number;
  readonly kept: number;
  readonly r: number;
  readonly s: number;
  readonly t: number;
}

function mergeNeurons(
  module: Module,
  chosen: readonly FcLayer[],
  threshold: number,
  skip: ReadonlySet<string>,
  ctx: PassContext,
): boolean {
  const perLayer: Record<string, StatValue> = {};
  const totals = { merged: 0, removed: 0, before: 0, after: 0 };
  for (const first of chosen) {
    // Earlier merges replaced constants: read this layer and its successor afresh.
    const all = collectFcLayers(module, () => {});
    const l = all.find((f) => f.op === first.op)!;
    const chain = chainAfter(l, all);
    if (typeof chain === "string") {
      ctx.log(`op "${l.op.name}": no FC layer follows through per-feature ops (${chain}); left alone`);
      continue;
    }
    if (skip.has(chain.next.op.name)) {
      ctx.log(`op "${l.op.name}": the next layer "${chain.next.op.name}" is in skip; left alone`);
      continue;
    }
    const read = chain.next.op.operand(0)!;
    const activations = probeCalibration(module, [read], ctx, "fc-corr");
    if (activations === null) return totals.merged > 0;
    const a = rowsOf(activations.get(read)!, l.outputs);
    if (a === null || a.count < 2 || !a.data.every(Number.isFinite)) {
      ctx.log(`op "${l.op.name}": calibration activations unusable (layout, fewer than 2 rows, or NaN/Inf)`);
      continue;
    }
    const merges = chooseMerges(a.data, a.count, l.outputs, threshold);
    if (merges.length === 0) {
      ctx.log(`op "${l.op.name}": no pair with r >= ${threshold} and no constant neuron`);
      continue;
    }
    const paramsBefore = layerParams(l) + layerParams(chain.next);
    const applied = applyMerges(l, chain, merges, ctx);
    if (!applied) continue;
    const after = collectFcLayers(module, () => {});
    const l2 = after.find((f) => f.op === l.op)!;
    const n2 = after.find((f) => f.op === chain.next.op)!;
    const paramsAfter = layerParams(l2) + layerParams(n2);
    const constant = merges.filter((m) => m.kept < 0).length;
    perLayer[l.op.name] = {
      next: chain.next.op.name,
      "neurons-before": l.outputs,
      "neurons-after": l.outputs - merges.length,
      merged: merges.length - constant,
      constant,
      "params-before": paramsBefore,
      "params-after": paramsAfter,
      merges: merges.slice(0, 32).map((m) =>
        m.kept < 0
          ? `${m.removed} -> const (t=${m.t.toPrecision(4)})`
          : `${m.removed} -> ${m.kept} (r=${m.r.toFixed(4)}, s=${m.s.toPrecision(4)}, t=${m.t.toPrecision(4)})`
      ),
    };
    ctx.log(
      `op "${l.op.name}": ${l.outputs} -> ${l.outputs - merges.length} neurons ` +
        `(${merges.length - constant} merged, ${constant} constant)`,
    );
    totals.merged++;
    totals.removed += merges.length;
    totals.before += paramsBefore;
    totals.after += paramsAfter;
  }
  if (totals.merged === 0) {
    ctx.emit("note", `nothing merged: no FC layer with neurons correlated at r >= ${threshold} (see the log)`);
  }
  ctx.stat("layers-merged", totals.merged);
  ctx.stat("neurons-removed", totals.removed);
  ctx.stat("params-before", totals.before);
  ctx.stat("params-after", totals.after);
  ctx.stat("layers", perLayer);
  return totals.merged > 0;
}

/** Counts of |r| in 20 equal bins over [0, 1], for the report's correlation histogram. */
function absHistogram(r: ArrayLike<number>): number[] {
  const counts = new Array(20).fill(0);
  for (let k = 0; k < r.length; k++) if (Number.isFinite(r[k])) counts[Math.min(19, Math.floor(Math.abs(r[k]) * 20))]++;
  return counts;
}

/** Weight and bias elements of an FC layer. */
function layerParams(l: FcLayer): number {
  const c = l.op.type === "Gemm" ? l.op.operand(2) : null;
  return l.outputs * l.inputs + (isConstant(c) ? c.constant.data.length : 0);
}

/**
 * Greedy merges over the post-activation values `a (count x width)`: constant
 * neurons first, then pairs by descending r (r >= threshold); a neuron that
 * absorbed another is kept, one merged away absorbs nothing.
 */
function chooseMerges(a: Float64Array, count: number, width: number, threshold: number): Merge[] {
  const { mean, std } = columnStats(a, count, width);
  const merges: Merge[] = [];
  const role = new Int8Array(width); // 0 free, 1 kept (absorbed another), -1 removed
  for (let j = 0; j < width; j++) {
    if (std[j] !== 0) continue;
    merges.push({ removed: j, kept: -1, r: 1, s: 0, t: mean[j] });
    role[j] = -1;
  }
  const z = standardize(a, count, width, mean, std);
  const r = new Float64Array(width * width);
  gemm({ m: width, n: width, k: count, a: z, transA: true, b: z, c: r, alpha: 1 / count });
  const pairs: [number, number, number][] = [];
  for (let i = 0; i < width; i++) {
    if (role[i] < 0) continue;
    for (let j = i + 1; j < width; j++) {
      if (role[j] >= 0 && r[i * width + j] >= threshold) pairs.push([r[i * width + j], i, j]);
    }
  }
  pairs.sort((p, q) => q[0] - p[0] || p[1] - q[1] || p[2] - q[2]);
  for (const [rij, i, j] of pairs) {
    if (role[i] < 0 || role[j] < 0) continue;
    let keep = i, drop = j;
    if (role[j] === 1) {
      if (role[i] === 1) continue;
      [keep, drop] = [j, i];
    }
    // Least squares a_drop ≈ s a_keep + t: s = cov / var(keep) = r std(drop) / std(keep).
    const s = (rij * std[drop]) / std[keep];
    merges.push({ removed: drop, kept: keep, r: rij, s, t: mean[drop] - s * mean[keep] });
    role[keep] = 1;
    role[drop] = -1;
  }
  return merges;
}

/** Fold the merges into the next layer, then remove the merged rows and columns; false when a bias cannot take it. */
function applyMerges(l: FcLayer, chain: Chain, merges: readonly Merge[], ctx: PassContext): boolean {
  const next = chain.next;
  const m = l.outputs;
  const p = next.outputs;
  // The bias shapes must allow slicing before anything is changed.
  const c = l.op.type === "Gemm" ? l.op.operand(2) : null;
  if (c !== null && !(isConstant(c) && (c.constant.data.length === 1 || c.constant.data.length === m))) {
    ctx.log(`op "${l.op.name}": bias is not a per-neuron constant; left alone`);
    return false;
  }
  const wNext = Float64Array.from(next.w);
  const delta = new Float64Array(p);
  for (const mg of merges) {
    for (let o = 0; o < p; o++) {
      const wj = wNext[o * m + mg.removed];
      if (mg.kept >= 0) wNext[o * m + mg.kept] += mg.s * wj;
      delta[o] += next.alpha * mg.t * wj;
    }
  }
  const gone = new Set(merges.map((mg) => mg.removed));
  const kept = [...Array(m).keys()].filter((k) => !gone.has(k));
  const k = kept.length;
  // The next layer: columns kept.
  const wNextKept = new Float64Array(p * k);
  for (let o = 0; o < p; o++) for (let q = 0; q < k; q++) wNextKept[o * k + q] = wNext[o * m + kept[q]];
  if (delta.some((d) => d !== 0) && !addToBias(next, delta, p)) {
    ctx.log(`op "${next.op.name}": bias is not a per-neuron constant; "${l.op.name}" left alone`);
    return false;
  }
  storeWeight(next, wNextKept, p, k);
  // This layer: rows kept, bias sliced.
  const wKept = new Float64Array(k * l.inputs);
  for (let q = 0; q < k; q++) wKept.set(l.w.subarray(kept[q] * l.inputs, (kept[q] + 1) * l.inputs), q * l.inputs);
  storeWeight(l, wKept, k, l.inputs);
  if (isConstant(c) && c.constant.data.length === m) replaceConstant(l.op, 2, slice(c.constant, kept));
  for (const op of chain.ops) {
    if (op.type !== "BatchNormalization") continue;
    for (let i = 1; i <= 4; i++) replaceConstant(op, i, slice(op.operand(i)!.constant!, kept));
  }
  for (const v of [l.op.result, ...chain.ops.map((op) => op.result)]) {
    if (isTensorType(v.type) && v.type.shape !== null) {
      v.type = { elem: v.type.elem, shape: [...v.type.shape.slice(0, -1), k] };
    }
  }
  return true;
}

/** The entries `kept` of a 1-D tensor (or of the last axis of a `[1, m]` one). */
function slice(t: Tensor, kept: readonly number[]): Tensor {
  const values = toFloat64(t);
  const shape = [...t.shape.slice(0, -1), kept.length];
  return fromFloat64(t.dtype, shape, kept.map((q) => values[q]));
}
