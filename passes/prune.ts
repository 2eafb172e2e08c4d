/**
 * `prune`: network slimming (Liu et al. 2017). Channels whose BatchNormalization
 * scale |gamma| falls under one global threshold are removed physically from
 * every op the channel-groups analysis couples them with; the result is a
 * thinner dense graph, not masks.
 * @module
 */
import { attr } from "../ir/attributes.ts";
import { type Graph, isConstant, Op, Value } from "../ir/graph.ts";
import type { Module } from "../ir/module.ts";
import { costOf } from "../ir/cost.ts";
import { interpret } from "../ir/interpreter.ts";
import { intValues } from "../ir/ops/common.ts";
import { addConstant, eraseConstantIfUnused, insertBefore, replaceConstant, replaceOp } from "../ir/rewriter.ts";
import { inferShapes } from "../ir/shape.ts";
import { fromFloat64, int64Tensor, type Tensor, toFloat64 } from "../ir/tensor.ts";
import { type ChannelGroup, channelGroups, channelGroupsAnalysis, channelSlice } from "./analysis/channel_groups.ts";
import { isTensorType } from "../ir/types.ts";
import type { OptionValues } from "./options.ts";
import { definePass, type Pass, type PassContext } from "./pass.ts";

/** Options of `prune`. */
export const pruneOptions = {
  ratio: {
    kind: "number",
    default: 0.5,
    min: 0,
    max: 1,
    exclusiveMax: true,
    doc: "Fraction of scored channels to prune (global |gamma| percentile); ignored when threshold is given",
  },
  threshold: {
    kind: "number",
    optional: true,
    min: 0,
    exclusiveMin: true,
    doc: "Absolute |gamma| cut: prune channels scoring below it; overrides ratio",
  },
  minChannels: {
    kind: "number",
    default: 1,
    min: 0,
    exclusiveMin: true,
    doc: "Channels every group keeps: a count when >= 1, a fraction of the group when < 1",
  },
  score: {
    kind: "enum",
    values: ["max", "sum", "mean"],
    default: "max",
    doc: "How the |gamma| of several BatchNormalizations on one coupled channel combine",
  },
  scope: {
    kind: "enum",
    values: ["conv", "all"],
    default: "conv",
    doc: "Prune channels produced by convolutions only (the paper's recipe) or also Gemm/MatMul features",
  },
  compensate: {
    kind: "bool",
    default: true,
    doc: "Fold the constant act(beta) a pruned channel still emits into the consumers' bias",
  },
  recalibrateBn: {
    kind: "bool",
    default: false,
    doc: "After pruning, re-estimate every BatchNormalization's mean/variance on the calibration data",
  },
} as const;

/** Values of {@linkcode pruneOptions}. */
export type PruneOptionValues = OptionValues<typeof pruneOptions>;

/**
 * `prune`: BN-scale channel pruning (network slimming), dependency-aware.
 *
 * 1. Groups of coupled channels come from {@linkcode channelGroupsAnalysis}.
 *    A group whose BatchNormalizations all sit on single-use values (conv ->
 *    BN -> act -> consumer) is pruned as a whole. A group with a shared value
 *    under a BN (pre-activation ResNet/DenseNet: the BN reads a value other
 *    ops also read) or with a barrier gets the paper's channel selection: a
 *    `Gather(axis=1)` is inserted before each of its BNs, so the branch from
 *    the selection to its consumers becomes its own group and the shared
 *    producers stay intact. Selections that end up keeping every channel are
 *    removed again.
 * 2. A channel's score is |gamma| of the BNs on it, combined by `score`.
 *    One global threshold: the `ratio` percentile of all scores (keep iff
 *    score >= sorted[floor(ratio*N)], the reference implementation's rule), or
 *    `threshold` when given. Every group keeps `min-channels` (its best ones).
 * 3. Pruned channels disappear from producers (Conv filters, Gemm rows,
 *    Gather indices), BN entries, per-channel constants, depthwise convs
 *    (`group` updated), Split sizes / Slice bounds, and consumers' input
 *    channels (the `H*W` feature block of each channel after Flatten).
 * 4. `compensate`: with gamma ~ 0 a pruned channel emits the constant `beta`
 *    after its BN; that constant is pushed through the pass-through ops to the
 *    consumer and folded into its bias (`sum_k W[o,c,k] * v_c`); a bias-less
 *    Conv consumer followed only by a BN takes it in that BN's mean instead
 *    (`BN(z + d)` with mean `m` is `BN(z)` with mean `m - d`), so no
 *    parameter is added. Exact for Gemm; for a padded Conv consumer the
 *    border positions differ.
 * 5. `recalibrate-bn`: BN running statistics re-estimated on calibration data
 *    (batch mean, unbiased variance), in graph order.
 *
 * @example Prune half the channels of a conv chain
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../ir/parser.ts";
 * import { defaultOptions } from "./options.ts";
 * import { prunePass } from "./prune.ts";
 * import { testPassContext } from "./testing.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[1,1,2,2]) -> (%y) {
 *   %w1 = const f32[2,1,1,1] dense<1.0>
 *   %gamma = const f32[2] dense<[0.0, 1.0]>
 *   %z = const f32[2] dense<0.0>
 *   %one = const f32[2] dense<1.0>
 *   %w2 = const f32[1,2,1,1] dense<1.0>
 *   %c1 = Conv(%x, %w1) : f32[1,2,2,2]
 *   %bn = BatchNormalization(%c1, %gamma, %z, %z, %one) : f32[1,2,2,2]
 *   %y = Conv(%bn, %w2) : f32[1,1,2,2]
 *   return %y
 * }
 * }`);
 * const ctx = testPassContext({ module: m });
 * const options = { ...defaultOptions(prunePass.options), ratio: 0.5 };
 * assert.equal(await prunePass.run(m, options, ctx), true);
 * assert.deepEqual(m.graph.ops.find((op) => op.name === "c1")!.operand(1)!.type, { elem: "f32", shape: [1, 1, 1, 1] });
 * assert.equal(ctx.stats["channels-after"], 1);
 * ```
 */
export const prunePass: Pass<typeof pruneOptions> = definePass({
  name: "prune",
  summary: "Remove channels with small BatchNormalization |gamma| (network slimming), dependency-aware",
  options: pruneOptions,
  run(module, options, ctx): boolean {
    return prune(module, options, ctx);
  },
});

/** A group chosen for pruning: its scores and the channels it keeps. */
interface Plan {
  readonly group: ChannelGroup;
  readonly scores: Float64Array;
  kept: number[];
}

function prune(module: Module, options: PruneOptionValues, ctx: PassContext): boolean {
  const graph = module.graph;
  if (!graph.ops.some((op) => op.type === "BatchNormalization")) {
    ctx.emit("note", "nothing to prune: no BatchNormalization");
    return false;
  }
  inferShapes(module, { registry: ctx.ops, strict: false });
  const before = costOf(module, { registry: ctx.ops }).totals;
  const inScope = (g: ChannelGroup): boolean =>
    options.scope === "all" || g.producers.every((p) => p.kind === "conv" || p.kind === "gather");

  // 1. Channel selection before the BNs of shared (or blocked) groups.
  const first = ctx.analysis(channelGroupsAnalysis);
  const selections: Op[] = [];
  for (const g of first.groups) {
    if (g.bns.length === 0 || !inScope(g)) continue;
    const shared = g.bns.some((b) => b.op.operand(0)!.uses.length > 1);
    if (g.prunable && !shared) continue;
    for (const b of g.bns) selections.push(insertSelection(graph, b.op));
  }
  const analysis = selections.length > 0 ? channelGroups(module) : first;

  // 2. Scores and the global threshold.
  const plans: Plan[] = [];
  for (const g of analysis.groups) {
    if (!g.prunable || g.bns.length === 0 || !inScope(g)) continue;
    plans.push({ group: g, scores: scoreGroup(g, options.score), kept: [] });
  }
  const all = plans.flatMap((p) => [...p.scores].filter((s) => Number.isFinite(s))).sort((a, b) => a - b);
  const threshold = options.threshold !== undefined
    ? options.threshold
    : all.length === 0
    ? Infinity
    : all[Math.min(all.length - 1, Math.floor(options.ratio * all.length))];
  let pruned = 0;
  for (const p of plans) {
    const { size } = p.group;
    const minKeep = Math.min(
      size,
      options.minChannels >= 1 ? Math.floor(options.minChannels) : Math.max(1, Math.ceil(options.minChannels * size)),
    );
    const keep = new Uint8Array(size);
    let count = 0;
    for (let c = 0; c < size; c++) {
      if (!(p.scores[c] < threshold)) keep[c] = 1, count++;
    }
    if (count < minKeep) {
      const order = [...p.scores.keys()].sort((a, b) => p.scores[b] - p.scores[a]);
      for (const c of order) if (count < minKeep && !keep[c]) keep[c] = 1, count++;
      ctx.log(`group of ${producerNames(p.group)} keeps ${minKeep} channel(s) (min-channels)`);
    }
    p.kept = [...keep.keys()].filter((c) => keep[c]);
    pruned += size - count;
  }

  // 3. Rewrite, compensating first (it reads the original weights).
  const layers: Record<string, { before: number; after: number }> = {};
  for (const p of plans) {
    for (const pr of p.group.producers) {
      layers[pr.op.name] = { before: pr.size, after: keptIn(p.kept, pr.offset, pr.size).length };
    }
    if (p.kept.length === p.group.size) continue;
    if (options.compensate) compensate(p);
    applyPlan(p);
  }
  let selectionsKept = 0;
  for (const s of selections) {
    const idx = intValues(s.operand(1)!.constant!);
    const c = dims(s.operand(0)!)[1];
    if (idx.length === c && idx.every((v, i) => v === i)) removeSelection(s);
    else selectionsKept++;
  }
  inferShapes(module, { registry: ctx.ops, strict: false });
  if (options.recalibrateBn) {
    if (ctx.calibration === null) {
      ctx.emit(
        "warning",
        "recalibrate-bn needs calibration data (--calib): BatchNormalization statistics left as trained",
      );
    } else recalibrateBn(module, ctx);
  }
  const after = costOf(module, { registry: ctx.ops }).totals;

  const barriers = analysis.barriers.filter((b) => analysis.groups[b.group].bns.length > 0)
    .map((b) => `${b.op}: ${b.reason}`);
  ctx.stat("threshold", Number.isFinite(threshold) ? threshold : null);
  ctx.stat("channels-before", all.length);
  ctx.stat("channels-after", all.length - pruned);
  ctx.stat("channels-pruned", pruned);
  ctx.stat("channel-selections", selectionsKept);
  ctx.stat("layers", layers);
  ctx.stat("params-before", before.params);
  ctx.stat("params-after", after.params);
  ctx.stat("macs-before", before.macs);
  ctx.stat("macs-after", after.macs);
  ctx.stat("gamma-histogram", gammaHistogram(all, threshold));
  ctx.stat("barriers", barriers);
  ctx.stat("bn-recalibrated", options.recalibrateBn && ctx.calibration !== null);
  ctx.log(`threshold ${threshold}: ${pruned} of ${all.length} channels pruned`);
  if (pruned === 0) ctx.emit("note", nothingPrunedReason(plans.length, all, threshold, barriers));
  return pruned > 0 || selectionsKept > 0;
}

/** Why a run pruned no channel, in one line. */
function nothingPrunedReason(
  groups: number,
  scores: readonly number[],
  threshold: number,
  barriers: readonly string[],
): string {
  const blocked = barriers.length === 0
    ? ""
    : `; ${barriers.length} barrier(s), first ${barriers[0]}${barriers.length > 1 ? ", ..." : ""}`;
  if (groups === 0) return `nothing pruned: no channel group with a BatchNormalization can be pruned${blocked}`;
  if (scores.length === 0 || !(scores[0] < threshold)) {
    const lowest = scores[0] ?? "none";
    return `nothing pruned: no channel scores below the threshold ${threshold} (lowest ${lowest})${blocked}`;
  }
  return `nothing pruned: min-channels keeps every channel below the threshold ${threshold}${blocked}`;
}

/** Static dimensions of a value whose type the analysis already checked. */
function dims(v: Value): number[] {
  return isTensorType(v.type) ? v.type.shape as number[] : [];
}

function producerNames(g: ChannelGroup): string {
  return g.producers.map((p) => `"${p.op.name}"`).join(", ");
}

/** Insert an identity `Gather(x, [0..C), axis=1)` before `bn`, feeding it. */
function insertSelection(graph: Graph, bn: Op): Op {
  const x = bn.operand(0)!;
  const c = dims(x)[1];
  const idx = addConstant(graph, `${bn.name}.select`, int64Tensor([...Array(c).keys()]));
  const out = new Value(graph.freshName(`${x.name}.select`), x.type);
  const gather = new Op({
    name: out.name,
    type: "Gather",
    operands: [x, idx],
    results: [out],
    attributes: [["axis", attr.int(1)]],
  });
  insertBefore(bn, gather);
  bn.setOperand(0, out);
  return gather;
}

function removeSelection(gather: Op): void {
  const idx = gather.operand(1)!;
  replaceOp(gather, [gather.operand(0)!], { names: "outputs" });
  eraseConstantIfUnused(idx);
}

/** Per-channel score: |gamma| of the group's BNs, combined; NaN where no BN covers a channel. */
function scoreGroup(g: ChannelGroup, how: PruneOptionValues["score"]): Float64Array {
  const scores = new Float64Array(g.size).fill(NaN);
  const counts = new Uint32Array(g.size);
  for (const b of g.bns) {
    const gamma = toFloat64(b.op.operand(1)!.constant!);
    for (let i = 0; i < b.size; i++) {
      const c = b.offset + i;
      const s = Math.abs(gamma[i]);
      const prev = counts[c] === 0 ? (how === "max" ? -Infinity : 0) : scores[c];
      scores[c] = how === "max" ? Math.max(prev, s) : prev + s;
      counts[c]++;
    }
  }
  if (how === "mean") { for (let c = 0; c < g.size; c++) if (counts[c] > 0) scores[c] /= counts[c]; }
  return scores;
}

/** Local indices of kept group channels within `[offset, offset + size)`. */
function keptIn(kept: readonly number[], offset: number, size: number): number[] {
  const out: number[] = [];
  for (const c of kept) if (c >= offset && c < offset + size) out.push(c - offset);
  return out;
}

/** Take blocks `idx` (each `block` wide) along `axis` of `t`. */
export function takeChannels(t: Tensor, axis: number, idx: readonly number[], block = 1): Tensor {
  const shape = [...t.shape];
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1) * block;
  const span = shape[axis] / block;
  shape[axis] = idx.length * block;
  const src = t.data as Float32Array;
  const Ctor = src.constructor as new (n: number) => Float32Array;
  const out = new Ctor(outer * idx.length * inner);
  let o = 0;
  for (let a = 0; a < outer; a++) {
    const base = a * span * inner;
    for (const i of idx) {
      out.set(src.subarray(base + i * inner, base + (i + 1) * inner), o);
      o += inner;
    }
  }
  return { dtype: t.dtype, shape, data: out };
}

/**
 * Replace constant operand `i` of `op` by `t`; the old one is erased when unused, and the thinner tensor takes
 * over its name, so reports and IR dumps still say `conv1.weight`. A bias that was absent is named `<op>.bias`.
 */
function setConstant(op: Op, i: number, t: Tensor): void {
  replaceConstant(op, i, t, op.operand(i) === null ? { name: `${op.name}.bias` } : {});
}

function sliceOperand(op: Op, i: number, axis: number, idx: readonly number[], block = 1): void {
  const v = op.operand(i);
  if (v === null || v.constant === null) return;
  setConstant(op, i, takeChannels(v.constant, axis, idx, block));
}

/** Remove the group's pruned channels from every op that carries them. */
function applyPlan(p: Plan): void {
  for (const pr of p.group.producers) {
    const idx = keptIn(p.kept, pr.offset, pr.size);
    const op = pr.op;
    if (pr.kind === "conv") {
      sliceOperand(op, 1, 0, idx);
      sliceOperand(op, 2, 0, idx);
    } else if (pr.kind === "gemm") {
      sliceOperand(op, 1, op.flag("transB") ? 0 : 1, idx);
      const c = op.operand(2)?.constant;
      if (c && c.shape.length > 0 && c.shape[c.shape.length - 1] === pr.size) {
        sliceOperand(op, 2, c.shape.length - 1, idx);
      }
    } else if (pr.kind === "matmul") {
      sliceOperand(op, 1, 1, idx);
    } else {
      const all = intValues(op.operand(1)!.constant!);
      setConstant(op, 1, int64Tensor(idx.map((i) => all[i])));
    }
  }
  for (const m of p.group.members) {
    const idx = keptIn(p.kept, m.offset, m.size);
    const op = m.op;
    if (m.role === "bn") { for (let i = 1; i <= 4; i++) sliceOperand(op, i, 0, idx); }
    else if (m.role === "depthwise") {
      sliceOperand(op, 1, 0, idx);
      sliceOperand(op, 2, 0, idx);
      op.attributes.set("group", attr.int(idx.length));
    } else if (m.role === "param") {
      const c = op.operand(m.paramOperand!)!.constant!;
      const rank = dims(op.result).length;
      sliceOperand(op, m.paramOperand!, c.shape.length - (rank - 1), idx);
    } else if (m.role === "split") {
      const sizes: number[] = [];
      let off = m.offset;
      for (const r of op.results) {
        const n = dims(r)[1];
        sizes.push(keptIn(p.kept, off, n).length);
        off += n;
      }
      if (op.operand(1)) setConstant(op, 1, int64Tensor(sizes));
      else op.attributes.set("split", attr.ints(sizes));
    } else if (m.role === "slice") {
      const sl = channelSlice(op, m.size)!;
      const below = (v: number): number => idx.filter((i) => i < v).length;
      const k = sl.axes.indexOf(1);
      if (k >= 0) {
        const starts = intValues(op.operand(1)!.constant!);
        const ends = intValues(op.operand(2)!.constant!);
        starts[k] = below(sl.start);
        ends[k] = below(sl.end);
        setConstant(op, 1, int64Tensor(starts));
        setConstant(op, 2, int64Tensor(ends));
      }
    }
  }
  for (const c of p.group.consumers) {
    const idx = keptIn(p.kept, c.offset, c.size);
    const op = c.op;
    if (op.type === "Conv") sliceOperand(op, 1, 1, idx);
    else if (op.type === "Gemm") sliceOperand(op, 1, op.flag("transB") ? 1 : 0, idx, c.featuresPerChannel);
    else sliceOperand(op, 1, 0, idx, c.featuresPerChannel);
  }
}

/** The value a consumer reads the group through (the Flatten input for a feature view). */
function groupInput(p: Plan, consumer: Op): Value {
  const x = p.group.values.find((v) => v.value === consumer.operand(0));
  return x ? x.value : consumer.operand(0)!.producer!.operand(0)!;
}

/**
 * The constant each channel of the group's values holds when its channel is
 * pruned (gamma ~ 0: the BN emits beta), pushed through the pass-through ops;
 * NaN where unknown. Then add the pruned channels' contribution to the consumers' bias.
 */
function compensate(p: Plan): void {
  const vecs = new Map<Value, Float64Array>();
  const channels = (v: Value): number => dims(v)[1];
  const get = (v: Value | null): Float64Array => (v && vecs.get(v)) ?? new Float64Array(v ? channels(v) : 0).fill(NaN);
  for (const { value } of p.group.values) {
    const op = value.producer;
    if (op === null) continue;
    const n = channels(value);
    let out = new Float64Array(n).fill(NaN);
    const x = get(op.operand(0));
    const f = (fn: (v: number) => number): void => {
      for (let c = 0; c < n; c++) out[c] = fn(x[c]);
    };
    switch (op.type) {
      case "BatchNormalization": {
        const [s, b, m, v] = [1, 2, 3, 4].map((i) => toFloat64(op.operand(i)!.constant!));
        const eps = op.float("epsilon", 1e-5);
        for (let c = 0; c < n; c++) {
          out[c] = Number.isNaN(x[c]) ? b[c] : s[c] * (x[c] - m[c]) / Math.sqrt(v[c] + eps) + b[c];
        }
        break;
      }
      case "Relu":
        f((v) => Math.max(0, v));
        break;
      case "LeakyRelu": {
        const a = op.float("alpha", 0.01);
        f((v) => (v >= 0 ? v : a * v));
        break;
      }
      case "Sigmoid":
        f((v) => 1 / (1 + Math.exp(-v)));
        break;
      case "Tanh":
        f(Math.tanh);
        break;
      case "Clip": {
        const lo = op.operand(1)?.constant ? toFloat64(op.operand(1)!.constant!)[0] : op.float("min", -Infinity);
        const hi = op.operand(2)?.constant ? toFloat64(op.operand(2)!.constant!)[0] : op.float("max", Infinity);
        f((v) => Math.min(hi, Math.max(lo, v)));
        break;
      }
      case "Identity":
      case "Dropout":
      case "MaxPool":
      case "AveragePool":
      case "GlobalAveragePool":
      case "GlobalMaxPool":
      case "Flatten":
      case "Reshape":
        // A constant map stays constant under pooling (up to padded borders).
        out = x.slice();
        break;
      case "Conv": {
        if (p.group.producers.some((pr) => pr.op === op)) break;
        const w = toFloat64(op.operand(1)!.constant!);
        const b = op.operand(2)?.constant ? toFloat64(op.operand(2)!.constant!) : null;
        const k = w.length / n;
        for (let c = 0; c < n; c++) {
          let s = 0;
          for (let j = 0; j < k; j++) s += w[c * k + j];
          out[c] = x[c] * s + (b ? b[c] : 0);
        }
        break;
      }
      case "Concat": {
        let off = 0;
        for (const v of op.operands) {
          out.set(get(v), off);
          off += channels(v!);
        }
        break;
      }
      case "Add":
      case "Sum":
      case "Mul":
      case "Sub":
      case "Div": {
        const cst = op.operands.find(isConstant);
        if (cst === undefined) {
          out.fill(0);
          for (const v of op.operands) {
            const o = get(v);
            for (let c = 0; c < n; c++) out[c] += o[c];
          }
          break;
        }
        const k = toFloat64(cst.constant!);
        const data = get(op.operands.find((v) => v !== cst)!);
        const first = op.operand(0) === cst;
        for (let c = 0; c < n; c++) {
          const kc = k.length === 1 ? k[0] : k[c];
          const [a, b] = first ? [kc, data[c]] : [data[c], kc];
          out[c] = op.type === "Mul" ? a * b : op.type === "Div" ? a / b : op.type === "Sub" ? a - b : a + b;
        }
        break;
      }
      case "Split":
      case "Slice": {
        const at = p.group.values.find((v) => v.value === value)!.offset;
        const src = p.group.values.find((v) => v.value === op.operand(0))!.offset;
        out = x.slice(at - src, at - src + n);
        break;
      }
    }
    vecs.set(value, out);
  }
  const prunedSet = new Uint8Array(p.group.size).fill(1);
  for (const c of p.kept) prunedSet[c] = 0;
  for (const c of p.group.consumers) {
    const op = c.op;
    if (op.type === "MatMul") continue; // no bias to fold into
    const v = get(groupInput(p, op));
    const w = op.operand(1)!.constant!;
    // Read f32/f64 weights in place: a float64 copy of a VGG-16 fc1 weight alone would be 800 MB.
    const wd = w.dtype === "f32" || w.dtype === "f64" ? w.data as Float32Array | Float64Array : toFloat64(w);
    const out = op.type === "Conv" ? w.shape[0] : op.flag("transB") ? w.shape[0] : w.shape[1];
    const delta = new Float64Array(out);
    let any = false;
    for (let i = 0; i < c.size; i++) {
      if (!prunedSet[c.offset + i] || !Number.isFinite(v[i]) || v[i] === 0) continue;
      any = true;
      if (op.type === "Conv") {
        const cin = w.shape[1];
        const k = wd.length / (out * cin);
        for (let o = 0; o < out; o++) {
          let s = 0;
          for (let j = 0; j < k; j++) s += wd[(o * cin + i) * k + j];
          delta[o] += s * v[i];
        }
      } else {
        const fpc = c.featuresPerChannel;
        const transB = op.flag("transB");
        const feats = transB ? w.shape[1] : w.shape[0];
        for (let o = 0; o < out; o++) {
          let s = 0;
          for (let j = i * fpc; j < (i + 1) * fpc; j++) s += transB ? wd[o * feats + j] : wd[j * out + o];
          delta[o] += s * v[i] * op.float("alpha", 1);
        }
      }
    }
    if (!any) continue;
    const bias = op.operand(2);
    const next = op.result.uses.length === 1 ? op.result.uses[0] : null;
    if (
      op.type === "Conv" && !bias && next?.op.type === "BatchNormalization" && next.index === 0 && !op.result.isDead
    ) {
      // BN(x + d) with mean m equals BN(x) with mean m - d: no new bias tensor, so the parameter count stays the paper's.
      const bn = next.op;
      const mean = toFloat64(bn.operand(3)!.constant!);
      for (let o = 0; o < out; o++) mean[o] -= delta[o];
      setConstant(bn, 3, fromFloat64(bn.operand(3)!.constant!.dtype, [out], mean));
    } else if (op.type === "Conv") {
      const b = bias?.constant ? toFloat64(bias.constant) : new Float64Array(out);
      for (let o = 0; o < out; o++) b[o] += delta[o];
      setConstant(op, 2, fromFloat64(w.dtype, [out], b));
    } else {
      const beta = op.float("beta", 1);
      if (bias?.constant && bias.constant.data.length === out && beta !== 0) {
        const b = toFloat64(bias.constant);
        for (let o = 0; o < out; o++) b[o] += delta[o] / beta;
        setConstant(op, 2, fromFloat64(bias.constant.dtype, bias.constant.shape, b));
      } else if (!bias) {
        setConstant(op, 2, fromFloat64(w.dtype, [out], delta));
        op.attributes.set("beta", attr.float(1));
      }
    }
  }
}

/** Re-estimate each BN's mean and (unbiased) variance on the calibration batch, in graph order. */
function recalibrateBn(module: Module, ctx: PassContext): void {
  const graph = module.graph;
  for (const bn of graph.ops.filter((op) => op.type === "BatchNormalization")) {
    const x = bn.operand(0)!;
    const t = interpret(module, ctx.calibration!, { registry: ctx.ops, probes: [x] })[x.name];
    const [n, c] = t.shape;
    const inner = t.shape.slice(2).reduce((a, b) => a * b, 1);
    const d = toFloat64(t);
    const mean = new Float64Array(c);
    const variance = new Float64Array(c);
    const count = n * inner;
    for (let b = 0; b < n; b++) {
      for (let ch = 0; ch < c; ch++) {
        const base = (b * c + ch) * inner;
        for (let i = 0; i < inner; i++) mean[ch] += d[base + i];
      }
    }
    for (let ch = 0; ch < c; ch++) mean[ch] /= count;
    for (let b = 0; b < n; b++) {
      for (let ch = 0; ch < c; ch++) {
        const base = (b * c + ch) * inner;
        for (let i = 0; i < inner; i++) variance[ch] += (d[base + i] - mean[ch]) ** 2;
      }
    }
    for (let ch = 0; ch < c; ch++) variance[ch] /= Math.max(1, count - 1);
    const dtype = bn.operand(3)!.constant!.dtype;
    setConstant(bn, 3, fromFloat64(dtype, [c], mean));
    setConstant(bn, 4, fromFloat64(dtype, [c], variance));
  }
}

/** |gamma| histogram over log10 bins, with the threshold, for the report to draw. */
function gammaHistogram(sorted: readonly number[], threshold: number): Record<string, number[] | number | null> {
  const floor = 1e-8;
  const logs = sorted.map((s) => Math.log10(Math.max(floor, s)));
  const lo = Math.floor(logs[0] ?? -8);
  const hi = Math.max(lo + 1, Math.ceil(logs[logs.length - 1] ?? 0));
  const bins = (hi - lo) * 2;
  const counts = new Array(bins).fill(0);
  for (const l of logs) counts[Math.min(bins - 1, Math.floor((l - lo) * 2))]++;
  const edges = [...Array(bins + 1).keys()].map((i) => 10 ** (lo + i / 2));
  return { edges, counts, threshold: Number.isFinite(threshold) ? threshold : null };
}
