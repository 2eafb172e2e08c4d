/**
 * `mask-select`: mask-layer kernel selection (background.md §2). Channels of
 * convolutions are chosen by trained mask layers (a per-channel `Mul` by a
 * constant), or, without masks, from calibration data by LASSO channel
 * selection and a least-squares refit (He et al. 2017); the rest are removed
 * through the channel groups, exactly as `prune` removes them.
 * @module
 */
import { costOf } from "../ir/cost.ts";
import { isConstant, isDefaultDomain, type Op, type Value } from "../ir/graph.ts";
import type { Module } from "../ir/module.ts";
import { gemm } from "../ir/ops/gemm_kernel.ts";
import { cloneModule, eraseConstantIfUnused, replaceConstant, replaceOp } from "../ir/rewriter.ts";
import { inferShapes } from "../ir/shape.ts";
import { fromFloat64, type Tensor, toFloat64 } from "../ir/tensor.ts";
import { FLOAT_DTYPES, isTensorType } from "../ir/types.ts";
import { type ChannelGroup, channelGroups, type ChannelGroupsResult } from "./analysis/channel_groups.ts";
import { cholesky, solveCholesky } from "./linalg.ts";
import type { OptionValues } from "./options.ts";
import { probeCalibration } from "./analysis/calibration.ts";
import { reconstruct, refitStats } from "./analysis/recovery.ts";
import { definePass, type Pass, type PassContext, type StatValue } from "./pass.ts";
import { type ChannelSelection, foldIntoBias, gammaHistogram, removeChannels, statCostChange } from "./prune.ts";

/** Options of `mask-select`. */
export const maskSelectOptions = {
  mode: {
    kind: "enum",
    values: ["auto", "mask", "data"],
    default: "auto",
    doc: "mask: trained mask layers choose; data: LASSO on calibration data; auto: mask layers if present, else data",
  },
  threshold: {
    kind: "number",
    optional: true,
    min: 0,
    exclusiveMin: true,
    doc: "mask: remove channels whose |mask| is below this (1e-3 when neither threshold nor ratio is given)",
  },
  ratio: {
    kind: "number",
    optional: true,
    min: 0,
    max: 1,
    exclusiveMax: true,
    doc: "mask: remove this fraction of all masked channels, lowest |mask| first; data: of each layer (default 0.5)",
  },
  minChannels: {
    kind: "number",
    default: 1,
    min: 0,
    exclusiveMin: true,
    doc: "Channels every group keeps: a count when >= 1, a fraction of the group when < 1",
  },
  fold: {
    kind: "bool",
    default: true,
    doc: "mask: fold the kept masks into the adjacent conv/BN/Gemm where exact, removing the Mul",
  },
  ridge: {
    kind: "number",
    default: 0.01,
    min: 0,
    doc: "data: ridge strength of the refit toward the original weights, relative to the mean input energy",
  },
  reconstruct: {
    kind: "bool",
    optional: true,
    doc: "mask: refit the layers that read removed channels to the original outputs on the calibration data " +
      "(sequential ridge least squares; default: when data is given)",
  },
  samples: {
    kind: "int",
    default: 4096,
    min: 16,
    doc: "data: output positions sampled per conv layer for the LASSO and the refit",
  },
} as const;

/** Values of {@linkcode maskSelectOptions}. */
export type MaskSelectOptionValues = OptionValues<typeof maskSelectOptions>;

/** Threshold used in mask mode when neither `threshold` nor `ratio` is given: the chapter's "near 0". */
const DEFAULT_MASK_THRESHOLD = 1e-3;

/**
 * `mask-select`: mask-layer kernel selection.
 *
 * `mode=mask`. A mask layer is a `Mul` of a value on conv channels by a
 * constant holding one scale per channel (`[1,C,1,1]`, `[C,1,1]`, or `[C]` on
 * a 2-D `[N,C]` value), as the chapter trains it (L1 penalty on the masks).
 * A channel's score is the largest |mask| over the masks on it; channels
 * scoring below `threshold` (or the lowest `ratio` of all masked channels:
 * keep iff score >= sorted[floor(ratio*N)]) are removed from every op of
 * their channel group, as `prune` removes them (producer filters, the mask
 * entries, the consumers' input channels or feature blocks). Every group
 * keeps `min-channels`. A removed channel's output is dropped: exact when its
 * mask is 0, and within |mask| times the activation otherwise.
 *
 * With `fold=true` each kept mask `m` is folded into a linear op, and the
 * `Mul` is removed:
 * - backward, into the op producing the masked value through single-use
 *   channelwise ops: a Conv's filters and bias (output axis), a
 *   BatchNormalization's gamma and beta, a Gemm's output rows and bias.
 *   AveragePool and GlobalAveragePool on the way are linear (any sign);
 *   Relu, LeakyRelu, MaxPool and GlobalMaxPool are only positively
 *   homogeneous (`f(m x) = m f(x)` for `m >= 0`), so they pass only masks
 *   with no negative entry;
 * - otherwise forward, into the op reading the masked value through
 *   single-use channelwise ops (same rules) and at most one Flatten: a Conv's
 *   input channels (zero padding stays zero under a scale; grouped convs
 *   included), a Gemm's input feature block of each channel, a MatMul's rows.
 *   A negative mask after a Relu thus goes forward into the next conv, but
 *   not through a MaxPool (`max` does not commute with a negative scale).
 * A mask that neither rule can fold stays, with the reason in the log.
 *
 * `mode=data` (He et al. 2017, "Channel Pruning for Accelerating Very Deep
 * Neural Networks", §3.2). For each prunable channel group produced by convs
 * and read by Conv or Gemm layers, in graph order: the consumers' inputs are
 * read from the calibration data on the network pruned so far (`X`) and on
 * the original network (`X0`); `samples` output positions are drawn
 * (deterministically). With `Z_c` the contribution of input channel `c` to
 * the consumers' outputs and `Y = X0 W^T` the original outputs, the LASSO
 * `min_b ||Y - sum_c b_c Z_c||^2 + lambda |b|_1` (columns normalized,
 * coordinate descent on the Gram matrix) is solved with `lambda` bisected
 * until at most `(1 - ratio) * C` channels remain (`floor(ratio*C)` removed,
 * `min-channels` kept). The kept weights and the bias are then refit by least
 * squares, `W' = argmin ||Y - X_K W'^T - d||^2 + alpha ||W' - W_K||^2`, in
 * closed form (Cholesky); `alpha = ridge * mean diag(X_K^T X_K)` pulls toward
 * the original weights where the calibration data say little. The bias
 * change `d` goes into the bias, or the mean of the BN after a bias-less
 * conv. Then the channels are removed through the channel groups.
 *
 * `mode=auto` uses mask layers when the module has some, else calibration
 * data; with neither the pass fails with one line saying what it needs.
 *
 * Statistics: `mode`, `channels-before`, `channels-after`,
 * `channels-removed`, `params-before`/`-after`, `macs-before`/`-after`,
 * `layers` (per producer: channels before/after); mask mode adds `threshold`,
 * `masks`, `masks-folded-back`, `masks-folded-forward`, `masks-kept`; data
 * mode adds `refits`: per reader, channels kept and the relative
 * reconstruction error on the sampled calibration rows after removal without
 * and with the refit (`error-dropped`, `error-refit`).
 *
 * @example Remove a channel whose mask is 0 and fold the other mask into the conv
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../ir/parser.ts";
 * import { defaultOptions } from "./options.ts";
 * import { maskSelectOptions, maskSelectPass } from "./mask_select.ts";
 * import { testPassContext } from "./testing.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[1,1,2,2]) -> (%y) {
 *   %w1 = const f32[2,1,1,1] dense<1.0>
 *   %mask = const f32[1,2,1,1] dense<[0.0, 2.0]>
 *   %w2 = const f32[1,2,1,1] dense<1.0>
 *   %c1 = Conv(%x, %w1) : f32[1,2,2,2]
 *   %r = Relu(%c1) : f32[1,2,2,2]
 *   %k = Mul(%r, %mask) : f32[1,2,2,2]
 *   %y = Conv(%k, %w2) : f32[1,1,2,2]
 *   return %y
 * }
 * }`);
 * const ctx = testPassContext({ module: m });
 * assert.equal(maskSelectPass.run(m, defaultOptions(maskSelectOptions), ctx), true);
 * assert.equal(m.graph.ops.some((op) => op.type === "Mul"), false);
 * assert.equal(ctx.stats["channels-after"], 1);
 * ```
 */
export const maskSelectPass: Pass<typeof maskSelectOptions> = definePass({
  name: "mask-select",
  summary: "Mask-layer kernel selection: remove conv channels by trained masks, or by LASSO on calibration data",
  options: maskSelectOptions,
  run(module, options, ctx): boolean {
    inferShapes(module, { registry: ctx.ops, strict: false });
    const masks = findMasks(module, channelGroups(module, ctx.ops));
    let mode = options.mode;
    if (mode === "auto") {
      if (masks.length > 0) mode = "mask";
      else if (ctx.calibration !== null) mode = "data";
      else {
        ctx.emit(
          "error",
          "mask-select needs mask layers (a Mul of conv channels by a per-channel constant [1,C,1,1]) or " +
            "calibration data (--calib) to select channels by LASSO; the module has no mask layer and none was given",
        );
        return false;
      }
    }
    if (mode === "mask") {
      if (masks.length === 0) {
        ctx.emit(
          "error",
          "mask-select mode=mask needs mask layers: a Mul of conv channels by a per-channel constant " +
            "([1,C,1,1], [C,1,1], or [C] on [N,C]); found none (mode=data selects from calibration data)",
        );
        return false;
      }
      return selectByMasks(module, options, ctx);
    }
    if (ctx.calibration === null) {
      ctx.emit("error", "mask-select mode=data needs calibration data (--calib, or calibration in compile())");
      return false;
    }
    if (options.threshold !== undefined) {
      ctx.emit("error", "mask-select: threshold applies to mode=mask; mode=data takes ratio (fraction of each layer)");
      return false;
    }
    return selectByData(module, options, ctx);
  },
});

// ---- Mask layers ----

/** A mask layer: `op = Mul(input, scale)` with one scale per channel of `input`. */
interface MaskLayer {
  readonly op: Op;
  readonly input: Value;
  readonly maskOperand: number;
  readonly scale: Float64Array;
}

/** Static shape of a value, or null. */
function shapeOf(v: Value | null): readonly (number | string)[] | null {
  return v !== null && isTensorType(v.type) && v.type.shape !== null ? v.type.shape : null;
}

/**
 * Mul ops scaling each channel (at least 2, or any count among `only`) of a
 * value on conv channels by a constant.
 */
function findMasks(module: Module, analysis: ChannelGroupsResult, only?: ReadonlySet<Op>): MaskLayer[] {
  const masks: MaskLayer[] = [];
  for (const op of module.graph.ops) {
    if (only !== undefined && !only.has(op)) continue;
    if (!isDefaultDomain(op.domain) || op.type !== "Mul" || op.operands.length !== 2) continue;
    const k = isConstant(op.operand(1)) ? 1 : isConstant(op.operand(0)) ? 0 : -1;
    if (k < 0) continue;
    const input = op.operand(1 - k)!;
    const mask = op.operand(k)!;
    if (isConstant(input) || !FLOAT_DTYPES.has(mask.constant!.dtype)) continue;
    const xs = shapeOf(input);
    const ys = shapeOf(op.result);
    if (xs === null || ys === null || xs.length < 2 || xs.length !== ys.length || typeof xs[1] !== "number") continue;
    const c = xs[1];
    const s = mask.constant!.shape;
    const ci = s.length - (xs.length - 1);
    if (
      (c < 2 && only === undefined) || s.length > xs.length || ci < 0 || s[ci] !== c ||
      s.some((d, i) => i !== ci && d !== 1)
    ) continue;
    const at = analysis.groupOf(input);
    // Once chosen, a mask stays one (a single-channel value links to no group).
    if (only === undefined && at === null) continue;
    if (only === undefined && !at!.group.producers.some((p) => p.kind === "conv")) continue;
    masks.push({ op, input, maskOperand: k, scale: toFloat64(mask.constant!) });
  }
  return masks;
}

function selectByMasks(module: Module, options: MaskSelectOptionValues, ctx: PassContext): boolean {
  const before = costOf(module, { registry: ctx.ops }).totals;
  const original = ctx.calibration !== null && options.reconstruct !== false ? cloneModule(module) : null;
  const analysis = channelGroups(module, ctx.ops);
  const masks = findMasks(module, analysis);
  // Scores: the largest |mask| on each group channel.
  const scores = new Map<ChannelGroup, Float64Array>();
  for (const mk of masks) {
    const at = analysis.groupOf(mk.input)!;
    let s = scores.get(at.group);
    if (s === undefined) scores.set(at.group, s = new Float64Array(at.group.size).fill(NaN));
    for (let j = 0; j < at.channels.length; j++) {
      const c = at.channels[j];
      s[c] = Number.isNaN(s[c]) ? Math.abs(mk.scale[j]) : Math.max(s[c], Math.abs(mk.scale[j]));
    }
  }
  for (const g of scores.keys()) {
    if (g.prunable) continue;
    const b = analysis.barriers.find((b) => b.group === g.id);
    ctx.log(`channels of ${producerNames(g)} are kept whole${b ? `: ${b.op}: ${b.reason}` : ""}; masks only folded`);
  }
  const prunable = [...scores].filter(([g]) => g.prunable);
  const all = prunable.flatMap(([, s]) => [...s].filter(Number.isFinite)).sort((a, b) => a - b);
  const threshold = options.threshold ??
    (options.ratio === undefined
      ? DEFAULT_MASK_THRESHOLD
      : all.length === 0
      ? Infinity
      : all[Math.min(all.length - 1, Math.floor(options.ratio * all.length))]);
  const selections: ChannelSelection[] = [];
  const layers: Record<string, StatValue> = {};
  let removed = 0;
  for (const [g, s] of prunable) {
    const kept = keepChannels(g, s, (c) => !(s[c] < threshold), options.minChannels, ctx);
    removed += g.size - kept.length;
    selections.push({ group: g, kept });
    const set = new Set(kept);
    for (const p of g.producers) {
      layers[p.op.name] = { before: p.size, after: p.channels.filter((c) => set.has(c)).length };
    }
  }
  const refit = selections.filter((x) => x.kept.length < x.group.size).flatMap((x) =>
    x.group.consumers.map((c) => c.op)
  );
  const outputs = new Map<Op, number[]>();
  for (const x of selections) {
    for (const p of x.group.producers) {
      const local = p.channels.flatMap((c, j) => (x.kept.includes(c) ? [j] : []));
      if (local.length < p.size) outputs.set(p.op, local);
    }
  }
  removeChannels(selections, analysis, ctx.ops, module.opset());
  inferShapes(module, { registry: ctx.ops, strict: false });
  // Refit before folding: the masks are still Mul ops, so each layer's output is the original one's, channels kept.
  if (original !== null && refit.length > 0) {
    ctx.stat("refit", refitStats(reconstruct(original, module, refit, ctx, { outputs })));
  }

  const folded = { back: 0, forward: 0, kept: 0 };
  if (options.fold) {
    const ops = new Set(masks.map((mk) => mk.op));
    for (const mk of findMasks(module, channelGroups(module, ctx.ops), ops)) {
      const how = foldMask(mk);
      if (typeof how === "string") {
        folded.kept++;
        ctx.log(`mask "${mk.op.name}" stays: ${how}`);
      } else folded[how.direction]++;
    }
    inferShapes(module, { registry: ctx.ops, strict: false });
  } else folded.kept = masks.length;
  const after = costOf(module, { registry: ctx.ops }).totals;
  ctx.stat("mode", "mask");
  ctx.stat("threshold", Number.isFinite(threshold) ? threshold : null);
  ctx.stat("masks", masks.length);
  ctx.stat("channels-before", all.length);
  ctx.stat("channels-after", all.length - removed);
  ctx.stat("channels-removed", removed);
  ctx.stat("masks-folded-back", folded.back);
  ctx.stat("masks-folded-forward", folded.forward);
  ctx.stat("masks-kept", folded.kept);
  ctx.stat("layers", layers);
  ctx.stat("mask-histogram", gammaHistogram(all, threshold));
  statCostChange(ctx, before, after);
  ctx.log(
    `threshold ${threshold}: ${removed} of ${all.length} masked channels removed; masks folded ` +
      `${folded.back} back, ${folded.forward} forward, ${folded.kept} kept`,
  );
  if (removed === 0) ctx.emit("note", `no channel removed: no |mask| below ${threshold} (lowest ${all[0] ?? "none"})`);
  return removed > 0 || folded.back + folded.forward > 0;
}

function producerNames(g: ChannelGroup): string {
  return g.producers.map((p) => `"${p.op.name}"`).join(", ");
}

/**
 * Group channels kept: those `keep` accepts, then the best-scoring ones up to
 * `min-channels`; channel `j` of every group of a grouped conv goes only as a whole.
 */
function keepChannels(
  g: ChannelGroup,
  scores: Float64Array,
  keep: (c: number) => boolean,
  minChannels: number,
  ctx: PassContext,
): number[] {
  const size = g.size;
  const minKeep = Math.min(
    size,
    minChannels >= 1 ? Math.floor(minChannels) : Math.max(1, Math.ceil(minChannels * size)),
  );
  const flags = Uint8Array.from({ length: size }, (_, c) => (keep(c) ? 1 : 0));
  const units = g.units;
  const spread = (): void => {
    if (units === null) return;
    for (let c = 0; c < size; c++) if (flags[c]) flags[units[c]] = 1;
    for (let c = 0; c < size; c++) if (flags[units[c]]) flags[c] = 1;
  };
  spread();
  keepOnePerProducer(g, flags, scores);
  spread();
  const count = (): number => flags.reduce((a, b) => a + b, 0);
  if (count() < minKeep) {
    const order = [...scores.keys()].sort((a, b) => (scores[b] || 0) - (scores[a] || 0));
    for (const c of order) {
      if (count() >= minKeep) break;
      flags[c] = 1;
      spread();
    }
    ctx.log(`group of ${producerNames(g)} keeps ${minKeep} channel(s) (min-channels)`);
  }
  return [...flags.keys()].filter((c) => flags[c]);
}

/**
 * Keep the best-scoring channel of every producer that would lose all of its own (set in `flags`): a group joined by a
 * Concat spans several producers, and a conv with no output channel is no model onnxruntime loads.
 */
function keepOnePerProducer(g: ChannelGroup, flags: Uint8Array, scores: ArrayLike<number>): void {
  for (const p of g.producers) {
    if (p.channels.length === 0 || p.channels.some((c) => flags[c])) continue;
    const best = p.channels.reduce((a, b) => ((scores[b] || 0) > (scores[a] || 0) ? b : a));
    flags[best] = 1;
  }
}

/** Channelwise ops a scale passes through with any sign (linear per channel). */
const LINEAR_CHANNELWISE = new Set(["AveragePool", "GlobalAveragePool", "Identity"]);
/** Channelwise ops a scale passes through only when no entry is negative: `f(m x) = m f(x)` for `m >= 0`. */
const POSITIVE_HOMOGENEOUS = new Set(["Relu", "LeakyRelu", "MaxPool", "GlobalMaxPool"]);

/** Where a mask folds: the op taking it, the ops between, and whether one of them needs `m >= 0`. */
interface FoldSite {
  readonly target: Op;
  readonly positiveOnly: boolean;
  /** Forward through a Flatten: input features per channel. */
  readonly features: number;
}

/** A channelwise op the scale may pass through from operand 0 to its only used result, or null. */
function passThrough(op: Op): "linear" | "positive" | null {
  if (!isDefaultDomain(op.domain) || op.results.slice(1).some((r) => !r.isDead)) return null;
  if (LINEAR_CHANNELWISE.has(op.type)) return "linear";
  if (POSITIVE_HOMOGENEOUS.has(op.type)) return "positive";
  return null;
}

/** Only `op` reads `v`, once, and `v` is no graph output. */
function onlyReader(v: Value, op: Op): boolean {
  return v.uses.length === 1 && v.uses[0].op === op && !op.graph!.outputs.includes(v);
}

/** The linear op producing `x` through single-use channelwise ops, or why there is none. */
function backwardSite(x: Value, mul: Op): FoldSite | string {
  let positiveOnly = false;
  let v = x;
  let reader = mul;
  for (;;) {
    if (!onlyReader(v, reader)) return `"${v.name}" is read by more than the mask`;
    const p = v.producer;
    if (p === null) return `"${v.name}" is a graph input`;
    const through = passThrough(p);
    if (through !== null && p.operand(0) !== null) {
      positiveOnly ||= through === "positive";
      reader = p;
      v = p.operand(0)!;
      continue;
    }
    const constants = p.operands.slice(1).every((w) => w === null || isConstant(w));
    if (isDefaultDomain(p.domain) && constants && p.results.slice(1).every((r) => r.isDead)) {
      if (p.type === "Conv" || p.type === "BatchNormalization") return { target: p, positiveOnly, features: 1 };
      if (p.type === "Gemm" && !p.flag("transA") && gemmBiasPerOutput(p)) {
        return { target: p, positiveOnly, features: 1 };
      }
    }
    return `"${p.name}" (${p.type}) is neither a channelwise op a scale passes nor a Conv/BN/Gemm`;
  }
}

/** A Gemm whose bias is absent or one value per output. */
function gemmBiasPerOutput(op: Op): boolean {
  const c = op.operand(2);
  if (c === null) return true;
  const s = shapeOf(op.result);
  return isConstant(c) && s !== null && c.constant.data.length === s[s.length - 1] &&
    c.constant.shape[c.constant.shape.length - 1] === s[s.length - 1];
}

/** The linear op reading `y` through single-use channelwise ops and at most one Flatten, or why there is none. */
function forwardSite(y: Value): FoldSite | string {
  let positiveOnly = false;
  let v = y;
  let features = 1;
  for (;;) {
    const graph = v.producer!.graph!;
    if (graph.outputs.includes(v)) return `"${v.name}" is a graph output`;
    if (v.uses.length !== 1) return `"${v.name}" has ${v.uses.length} readers`;
    const { op: u, index } = v.uses[0];
    if (index !== 0) return `"${u.name}" reads "${v.name}" as operand ${index}`;
    const through = features === 1 ? passThrough(u) : null;
    if (through !== null) {
      positiveOnly ||= through === "positive";
      v = u.results[0];
      continue;
    }
    const s = shapeOf(v);
    if (isDefaultDomain(u.domain) && u.type === "Flatten" && u.int("axis", 1) === 1 && features === 1 && s !== null) {
      const spatial = s.slice(2);
      if (!spatial.every((d) => typeof d === "number")) return `"${v.name}" has a symbolic spatial size`;
      features = (spatial as number[]).reduce((a, b) => a * b, 1);
      v = u.result;
      continue;
    }
    const w = u.operand(1);
    if (isDefaultDomain(u.domain) && isConstant(w) && u.operands.slice(2).every((b) => b === null || isConstant(b))) {
      if (u.type === "Conv" && features === 1) return { target: u, positiveOnly, features };
      if (u.type === "Gemm" && !u.flag("transA") && (features > 1 || s?.length === 2)) {
        return { target: u, positiveOnly, features };
      }
      if (u.type === "MatMul" && w.constant.shape.length === 2 && (features > 1 || s?.length === 2)) {
        return { target: u, positiveOnly, features };
      }
    }
    return `"${u.name}" (${u.type}) is neither a channelwise op a scale passes nor a Conv/Gemm/MatMul`;
  }
}

/** Multiply operand `i` of `op` elementwise by `factor(index)` (flat index into the constant). */
function scaleConstant(op: Op, i: number, factor: (index: number, shape: readonly number[]) => number): void {
  const t = op.operand(i)!.constant!;
  const d = toFloat64(t);
  for (let k = 0; k < d.length; k++) d[k] *= factor(k, t.shape);
  replaceConstant(op, i, fromFloat64(t.dtype, t.shape, d));
}

/**
 * Fold a mask into the op producing its input (backward) or reading its
 * output (forward) and remove the `Mul`; the reason when neither is exact.
 */
function foldMask(mk: MaskLayer): { direction: "back" | "forward" } | string {
  const m = mk.scale;
  const negative = m.some((x) => x < 0);
  const back = backwardSite(mk.input, mk.op);
  const fwd = forwardSite(mk.op.result);
  let direction: "back" | "forward";
  let site: FoldSite;
  if (typeof back !== "string" && !(back.positiveOnly && negative)) [direction, site] = ["back", back];
  else if (typeof fwd !== "string" && !(fwd.positiveOnly && negative)) [direction, site] = ["forward", fwd];
  else {
    const why = (s: FoldSite | string, where: string): string =>
      typeof s === "string" ? `${where}: ${s}` : `${where}: "${s.target.name}" is reached only through ops that ` +
        `need a non-negative scale (Relu/MaxPool), and the mask has negative entries`;
    return `${why(back, "backward")}; ${why(fwd, "forward")}`;
  }
  const op = site.target;
  const c = m.length;
  if (direction === "back") {
    if (op.type === "Conv") {
      scaleConstant(op, 1, (k, s) => m[Math.floor(k / (s.slice(1).reduce((a, b) => a * b, 1)))]);
      if (op.operand(2) !== null) scaleConstant(op, 2, (k) => m[k]);
    } else if (op.type === "BatchNormalization") {
      scaleConstant(op, 1, (k) => m[k]);
      scaleConstant(op, 2, (k) => m[k]);
    } else {
      // Gemm: output o is row o of B (transB) or column o.
      const transB = op.flag("transB");
      scaleConstant(op, 1, (k, s) => m[transB ? Math.floor(k / s[1]) : k % s[1]]);
      if (op.operand(2) !== null) scaleConstant(op, 2, (k) => m[k % c]);
    }
  } else if (op.type === "Conv") {
    // Weight [O, C/group, ...]: output o of group g reads input channel g*(C/group) + i.
    const group = op.int("group", 1);
    scaleConstant(op, 1, (k, s) => {
      const inner = s.slice(2).reduce((a, b) => a * b, 1);
      const o = Math.floor(k / (s[1] * inner));
      const i = Math.floor(k / inner) % s[1];
      return m[Math.floor(o / (s[0] / group)) * s[1] + i];
    });
  } else {
    // Gemm/MatMul: input feature f belongs to channel floor(f / features).
    const transB = op.type === "Gemm" && op.flag("transB");
    scaleConstant(op, 1, (k, s) => m[Math.floor((transB ? k % s[1] : Math.floor(k / s[1])) / site.features)]);
  }
  const mask = mk.op.operand(mk.maskOperand);
  replaceOp(mk.op, [mk.input], { names: "outputs" });
  eraseConstantIfUnused(mask);
  return { direction };
}

// ---- Calibration data: LASSO channel selection and least-squares refit ----

/** A layer reading a group's channels, as `rows x (C * block)` inputs times `W (outputs x C * block)`. */
interface Reader {
  readonly op: Op;
  readonly input: Value;
  /** Input channels (local). */
  readonly channels: number;
  /** Features per input channel: kernel positions, or `H*W` after Flatten. */
  readonly block: number;
  readonly outputs: number;
  /** Group channel of each local input channel. */
  readonly groupChannels: readonly number[];
}

/** Why a group's consumer cannot be handled, or the reader. */
function readerOf(op: Op, input: Value, groupChannels: readonly number[], features: number): Reader | string {
  const w = op.operand(1);
  if (!isConstant(w) || !FLOAT_DTYPES.has(w.constant.dtype)) return `"${op.name}" has no constant float weight`;
  if (op.type === "Conv") {
    if (op.int("group", 1) !== 1) return `"${op.name}" is a grouped conv`;
    if (op.string("auto_pad", "NOTSET") !== "NOTSET") return `"${op.name}" uses auto_pad`;
    const s = w.constant.shape;
    if (s.length !== 4) return `"${op.name}" is not a 2-D conv`;
    return { op, input, channels: s[1], block: s[2] * s[3], outputs: s[0], groupChannels };
  }
  if (op.type === "Gemm" && !op.flag("transA")) {
    const s = w.constant.shape;
    const [outputs, inputs] = op.flag("transB") ? s : [s[1], s[0]];
    return { op, input, channels: inputs / features, block: features, outputs, groupChannels };
  }
  return `"${op.name}" (${op.type}) is not a Conv or Gemm`;
}

/** The reader's weight as `W (outputs x C*block)` in float64, alpha applied. */
function readerWeight(r: Reader): Float64Array {
  const t = r.op.operand(1)!.constant!;
  const d = toFloat64(t);
  if (r.op.type === "Conv") return d;
  const alpha = r.op.float("alpha", 1);
  const n = r.channels * r.block;
  const w = new Float64Array(r.outputs * n);
  const transB = r.op.flag("transB");
  for (let o = 0; o < r.outputs; o++) {
    for (let f = 0; f < n; f++) w[o * n + f] = alpha * (transB ? d[o * n + f] : d[f * r.outputs + o]);
  }
  return w;
}

function storeReaderWeight(r: Reader, w: Float64Array): void {
  const t = r.op.operand(1)!.constant!;
  const n = r.channels * r.block;
  if (r.op.type === "Conv") {
    replaceConstant(r.op, 1, fromFloat64(t.dtype, t.shape, w));
    return;
  }
  const alpha = r.op.float("alpha", 1);
  const transB = r.op.flag("transB");
  const d = new Float64Array(w.length);
  for (let o = 0; o < r.outputs; o++) {
    for (let f = 0; f < n; f++) d[transB ? o * n + f : f * r.outputs + o] = w[o * n + f] / alpha;
  }
  replaceConstant(r.op, 1, fromFloat64(t.dtype, t.shape, d));
}

/**
 * Sampled input rows of a reader: conv patches (`channel * K + kernel
 * position`, zero padding) at `perImage` deterministic output positions per
 * image, or the feature rows of a Gemm.
 */
function sampleRows(r: Reader, x: Tensor, perImage: number): { rows: Float64Array; count: number } {
  const d = toFloat64(x);
  const width = r.channels * r.block;
  if (r.op.type !== "Conv") return { rows: d, count: d.length / width };
  const [n, c, h, wd] = x.shape;
  const [kh, kw] = r.op.operand(1)!.constant!.shape.slice(2);
  const strides = r.op.ints("strides") ?? [1, 1];
  const dil = r.op.ints("dilations") ?? [1, 1];
  const pads = r.op.ints("pads") ?? [0, 0, 0, 0];
  const ys = shapeOf(r.op.result)!;
  const [oh, ow] = [ys[2] as number, ys[3] as number];
  const per = Math.min(perImage, oh * ow);
  const rows = new Float64Array(n * per * width);
  let seed = 12345;
  const next = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296;
  let row = 0;
  for (let b = 0; b < n; b++) {
    for (let p = 0; p < per; p++) {
      const pos = per === oh * ow ? p : Math.floor(next() * oh * ow);
      const [py, px] = [Math.floor(pos / ow), pos % ow];
      const base = row * width;
      for (let ch = 0; ch < c; ch++) {
        for (let i = 0; i < kh; i++) {
          const iy = py * strides[0] - pads[0] + i * dil[0];
          if (iy < 0 || iy >= h) continue;
          for (let j = 0; j < kw; j++) {
            const ix = px * strides[1] - pads[1] + j * dil[1];
            if (ix < 0 || ix >= wd) continue;
            rows[base + ch * kh * kw + i * kw + j] = d[((b * c + ch) * h + iy) * wd + ix];
          }
        }
      }
      row++;
    }
  }
  return { rows, count: row };
}

/** `A^T B` for row-major `rows x a` and `rows x b`. */
function crossProduct(a: Float64Array, b: Float64Array, rows: number, na: number, nb: number): Float64Array {
  const c = new Float64Array(na * nb);
  gemm({ m: na, n: nb, k: rows, a, transA: true, b, c });
  return c;
}

/**
 * LASSO in Gram form, `min 1/2 b^T G b - q^T b + lambda |b|_1`, by cyclic
 * coordinate descent (`G` has unit diagonal where non-zero).
 */
function lasso(g: Float64Array, q: Float64Array, n: number, lambda: number, beta: Float64Array): Float64Array {
  for (let sweep = 0; sweep < 200; sweep++) {
    let change = 0;
    for (let c = 0; c < n; c++) {
      const gcc = g[c * n + c];
      if (gcc === 0) {
        beta[c] = 0;
        continue;
      }
      let r = q[c];
      for (let d = 0; d < n; d++) if (d !== c) r -= g[c * n + d] * beta[d];
      const next = Math.sign(r) * Math.max(0, Math.abs(r) - lambda) / gcc;
      change = Math.max(change, Math.abs(next - beta[c]));
      beta[c] = next;
    }
    if (change < 1e-9) break;
  }
  return beta;
}

/**
 * The `keep` channels chosen by the LASSO path: lambda bisected between the
 * smallest tried value with more than `keep` non-zeros and the largest with
 * at most `keep`; the selection at the latter, filled up by |b| at the former.
 */
function lassoSelect(g: Float64Array, q: Float64Array, n: number, keep: number): number[] {
  const norm = Float64Array.from({ length: n }, (_, c) => Math.sqrt(Math.max(0, g[c * n + c])));
  const gn = new Float64Array(n * n);
  const qn = new Float64Array(n);
  for (let c = 0; c < n; c++) {
    qn[c] = norm[c] === 0 ? 0 : q[c] / norm[c];
    for (let d = 0; d < n; d++) gn[c * n + d] = norm[c] === 0 || norm[d] === 0 ? 0 : g[c * n + d] / (norm[c] * norm[d]);
  }
  let lo = 0;
  let hi = Math.max(...qn.map(Math.abs)) + 1e-12;
  const nonzeros = (b: Float64Array): number[] => [...b.keys()].filter((c) => b[c] !== 0);
  let betaLo: Float64Array = lasso(gn, qn, n, lo, new Float64Array(n));
  let betaHi: Float64Array = new Float64Array(n);
  if (nonzeros(betaLo).length <= keep) betaHi = betaLo;
  else {
    for (let it = 0; it < 40; it++) {
      const mid = (lo + hi) / 2;
      const b = lasso(gn, qn, n, mid, Float64Array.from(betaLo));
      if (nonzeros(b).length > keep) [lo, betaLo] = [mid, b];
      else [hi, betaHi] = [mid, b];
      if (nonzeros(betaHi).length === keep) break;
    }
  }
  const chosen = new Set(nonzeros(betaHi));
  const rest = [...Array(n).keys()].filter((c) => !chosen.has(c))
    .sort((a, b) => Math.abs(betaLo[b]) - Math.abs(betaLo[a]) || norm[b] - norm[a]);
  for (const c of rest) {
    if (chosen.size >= keep) break;
    chosen.add(c);
  }
  return [...chosen].sort((a, b) => a - b);
}

/** Solve `(A) X = B` for symmetric positive definite `A (n x n)` and `B (n x m)`, by Cholesky. */
function solveSpd(a: Float64Array, b: Float64Array, n: number, m: number): Float64Array {
  return solveCholesky(cholesky(a, n), Float64Array.from(b), n, m);
}

/** A group to select from data, found again after each rewrite by its first producer. */
interface DataTarget {
  readonly anchor: Op;
}

function selectByData(module: Module, options: MaskSelectOptionValues, ctx: PassContext): boolean {
  const before = costOf(module, { registry: ctx.ops }).totals;
  const ratio = options.ratio ?? 0.5;
  const first = channelGroups(module, ctx.ops);
  const targets: DataTarget[] = [];
  const readersOf = (g: ChannelGroup, analysis: ChannelGroupsResult): Reader[] | string => {
    const readers: Reader[] = [];
    for (const c of g.consumers) {
      const input = c.op.operand(0)!;
      const r = readerOf(c.op, input, c.channels, c.featuresPerChannel);
      if (typeof r === "string") return r;
      if (analysis.viewOf(input) === null && c.featuresPerChannel !== 1) return `"${c.op.name}" reads a view`;
      readers.push(r);
    }
    return readers.length === 0 ? "no layer reads the channels" : readers;
  };
  for (const g of first.groups) {
    if (!g.producers.some((p) => p.kind === "conv")) continue;
    if (!g.prunable || !g.producers.every((p) => p.kind === "conv") || g.units !== null) {
      const b = first.barriers.find((b) => b.group === g.id);
      ctx.log(`channels of ${producerNames(g)} kept whole: ${b ? `${b.op}: ${b.reason}` : "not prunable"}`);
      continue;
    }
    const readers = readersOf(g, first);
    if (typeof readers === "string") {
      ctx.log(`channels of ${producerNames(g)} kept whole: ${readers}`);
      continue;
    }
    targets.push({ anchor: g.producers[0].op });
  }
  if (targets.length === 0) {
    ctx.emit("note", "nothing selected: no prunable conv channel group read only by Conv/Gemm layers (see the log)");
    return false;
  }
  // The original inputs of every reader, read once: the LASSO and the refit reconstruct the original outputs.
  const originalInputs = new Map<Op, Tensor>();
  {
    const readers = first.groups.flatMap((g) => g.consumers.map((c) => c.op));
    const got = probeCalibration(module, readers.map((op) => op.operand(0)!), ctx, "mask-select");
    if (got === null) return false;
    for (const op of readers) originalInputs.set(op, got.get(op.operand(0)!)!);
  }
  const layers: Record<string, StatValue> = {};
  const refits: Record<string, StatValue> = {};
  let channelsBefore = 0;
  let removed = 0;
  for (const t of targets) {
    const analysis = channelGroups(module, ctx.ops);
    const at = analysis.groupOf(t.anchor.results[0]);
    if (at === null || !at.group.prunable) continue;
    const g = at.group;
    const readers = readersOf(g, analysis);
    if (typeof readers === "string") continue;
    const current = probeCalibration(module, readers.map((r) => r.input), ctx, "mask-select");
    if (current === null) return removed > 0;
    const n = ctx.calibration![Object.keys(ctx.calibration!)[0]]?.shape[0] ?? 1;
    const perImage = Math.max(1, Math.ceil(options.samples / n));
    // Per reader: sampled rows now (X) and originally (X0), cross products, original outputs Y = X0 W^T.
    const gram = new Float64Array(g.size * g.size);
    const q = new Float64Array(g.size);
    const fits = readers.map((r) => {
      const width = r.channels * r.block;
      const x = sampleRows(r, current.get(r.input)!, perImage);
      const x0 = sampleRows(r, originalInputs.get(r.op)!, perImage);
      const w = readerWeight(r);
      const xx = crossProduct(x.rows, x.rows, x.count, width, width);
      const xx0 = crossProduct(x.rows, x0.rows, x.count, width, width);
      // M = W^T W (width x width): G[c,d] = sum of block (c,d) of XX ∘ M; q[c] = sum of row block c of XX0 ∘ M.
      const mw = crossProduct(w, w, r.outputs, width, width);
      const K = r.block;
      for (let a = 0; a < r.channels; a++) {
        const ga = r.groupChannels[a];
        for (let b = 0; b < r.channels; b++) {
          const gb = r.groupChannels[b];
          let s = 0;
          let s0 = 0;
          for (let i = 0; i < K; i++) {
            for (let j = 0; j < K; j++) {
              const k = (a * K + i) * width + b * K + j;
              s += xx[k] * mw[k];
              s0 += xx0[k] * mw[k];
            }
          }
          gram[ga * g.size + gb] += s;
          q[ga] += s0;
        }
      }
      return { r, x, x0, w, xx, xx0, width };
    });
    const minKeep = options.minChannels >= 1
      ? Math.floor(options.minChannels)
      : Math.max(1, Math.ceil(options.minChannels * g.size));
    const keep = Math.min(g.size, Math.max(minKeep, g.size - Math.floor(ratio * g.size)));
    const flags = new Uint8Array(g.size);
    for (const c of lassoSelect(gram, q, g.size, keep)) flags[c] = 1;
    const contribution = Float64Array.from({ length: g.size }, (_, c) => gram[c * g.size + c]);
    keepOnePerProducer(g, flags, contribution);
    const kept = [...flags.keys()].filter((c) => flags[c]);
    const keptSet = new Set(kept);
    channelsBefore += g.size;
    removed += g.size - kept.length;
    for (const p of g.producers) {
      layers[p.op.name] = { before: p.size, after: p.channels.filter((c) => keptSet.has(c)).length };
    }
    // Refit every reader on its kept features, with an intercept.
    for (const f of fits) {
      const { r, x, x0, w, xx, xx0, width } = f;
      const K = r.block;
      const feats: number[] = [];
      for (let a = 0; a < r.channels; a++) {
        if (keptSet.has(r.groupChannels[a])) { for (let i = 0; i < K; i++) feats.push(a * K + i); }
      }
      const p = feats.length;
      const dim = p + 1;
      const rows = x.count;
      const a = new Float64Array(dim * dim);
      const sums = new Float64Array(width);
      const sums0 = new Float64Array(width);
      for (let row = 0; row < rows; row++) {
        for (let k = 0; k < width; k++) {
          sums[k] += x.rows[row * width + k];
          sums0[k] += x0.rows[row * width + k];
        }
      }
      let trace = 0;
      for (let i = 0; i < p; i++) {
        for (let j = 0; j < p; j++) a[i * dim + j] = xx[feats[i] * width + feats[j]];
        a[i * dim + p] = a[p * dim + i] = sums[feats[i]];
        trace += a[i * dim + i];
      }
      a[p * dim + p] = rows;
      const alpha = Math.max(options.ridge * trace / Math.max(1, p), 1e-12 * (trace / Math.max(1, p) + 1));
      for (let i = 0; i < p; i++) a[i * dim + i] += alpha;
      // Right-hand side: X_K^T Y + alpha W_K^T, with Y = X0 W^T; intercept row: sum(Y).
      const rhs = new Float64Array(dim * r.outputs);
      for (let i = 0; i < p; i++) {
        const fi = feats[i];
        for (let o = 0; o < r.outputs; o++) {
          let s = 0;
          for (let k = 0; k < width; k++) s += xx0[fi * width + k] * w[o * width + k];
          rhs[i * r.outputs + o] = s + alpha * w[o * width + fi];
        }
      }
      for (let o = 0; o < r.outputs; o++) {
        let s = 0;
        for (let k = 0; k < width; k++) s += sums0[k] * w[o * width + k];
        rhs[p * r.outputs + o] = s;
      }
      let sol: Float64Array;
      try {
        sol = solveSpd(a, rhs, dim, r.outputs);
      } catch (e) {
        ctx.log(`"${r.op.name}": refit failed (${e instanceof Error ? e.message : e}); kept weights not refit`);
        continue;
      }
      const refit = new Float64Array(w.length);
      for (let i = 0; i < p; i++) {
        for (let o = 0; o < r.outputs; o++) refit[o * width + feats[i]] = sol[i * r.outputs + o];
      }
      const delta = Float64Array.from({ length: r.outputs }, (_, o) => sol[p * r.outputs + o]);
      const errors = reconstructionErrors(x, x0, w, refit, delta, feats, width, r.outputs);
      refits[r.op.name] = {
        kept: kept.length,
        of: g.size,
        "error-dropped": errors.dropped,
        "error-refit": errors.refit,
      };
      ctx.log(
        `"${r.op.name}": ${kept.length} of ${g.size} input channels kept; relative error ` +
          `${errors.dropped.toPrecision(3)} dropped, ${errors.refit.toPrecision(3)} refit`,
      );
      storeReaderWeight(r, refit);
      if (delta.some((d) => d !== 0)) foldIntoBias(r.op, delta);
    }
    // Fresh analysis: a bias added above changes the reader's channel rule.
    inferShapes(module, { registry: ctx.ops, strict: false });
    const fresh = channelGroups(module, ctx.ops);
    const group = fresh.groupOf(t.anchor.results[0])!.group;
    removeChannels([{ group, kept }], fresh, ctx.ops, module.opset());
    inferShapes(module, { registry: ctx.ops, strict: false });
  }
  const after = costOf(module, { registry: ctx.ops }).totals;
  ctx.stat("mode", "data");
  ctx.stat("channels-before", channelsBefore);
  ctx.stat("channels-after", channelsBefore - removed);
  ctx.stat("channels-removed", removed);
  ctx.stat("layers", layers);
  ctx.stat("refits", refits);
  statCostChange(ctx, before, after);
  ctx.log(`${removed} of ${channelsBefore} channels removed (LASSO per layer, ratio ${ratio})`);
  if (removed === 0) ctx.emit("note", `no channel removed at ratio ${ratio}`);
  return removed > 0;
}

/** Relative squared error `||Y - Yhat||^2 / ||Y - mean Y||^2` of dropping the channels, and of the refit. */
function reconstructionErrors(
  x: { rows: Float64Array; count: number },
  x0: { rows: Float64Array; count: number },
  w: Float64Array,
  refit: Float64Array,
  delta: Float64Array,
  feats: readonly number[],
  width: number,
  outputs: number,
): { dropped: number; refit: number } {
  const rows = x.count;
  const y = new Float64Array(rows * outputs);
  gemm({ m: rows, n: outputs, k: width, a: x0.rows, b: w, transB: true, c: y });
  const dropped = new Float64Array(w.length);
  for (const f of feats) for (let o = 0; o < outputs; o++) dropped[o * width + f] = w[o * width + f];
  const yd = new Float64Array(rows * outputs);
  gemm({ m: rows, n: outputs, k: width, a: x.rows, b: dropped, transB: true, c: yd });
  const yr = new Float64Array(rows * outputs);
  gemm({ m: rows, n: outputs, k: width, a: x.rows, b: refit, transB: true, c: yr });
  const mean = new Float64Array(outputs);
  for (let k = 0; k < y.length; k++) mean[k % outputs] += y[k] / rows;
  let total = 0, ed = 0, er = 0;
  for (let k = 0; k < y.length; k++) {
    const o = k % outputs;
    total += (y[k] - mean[o]) ** 2;
    ed += (y[k] - yd[k]) ** 2;
    er += (y[k] - yr[k] - delta[o]) ** 2;
  }
  return { dropped: total === 0 ? 0 : ed / total, refit: total === 0 ? 0 : er / total };
}
