/**
 * `prune`: network slimming (Liu et al. 2017). Channels whose BatchNormalization
 * scale |gamma| falls under one global threshold are removed physically from
 * every op the channel-groups analysis couples them with; the result is a
 * thinner dense graph, not masks.
 * @module
 */
import { attr } from "../ir/attributes.ts";
import { type Graph, Op, Value } from "../ir/graph.ts";
import type { Module } from "../ir/module.ts";
import { costOf, type CostTotals } from "../ir/cost.ts";
import { intValues } from "../ir/ops/common.ts";
import { addConstant, cloneModule, eraseConstantIfUnused, insertBefore, replaceOp } from "../ir/rewriter.ts";
import { inferShapes } from "../ir/shape.ts";
import { fromFloat64, int64Tensor, type Tensor, toFloat64 } from "../ir/tensor.ts";
import type { ChannelKeep, OpRegistry } from "../ir/op_def.ts";
import { type ChannelGroup, channelGroups, type ChannelGroupsResult } from "./analysis/channel_groups.ts";
import { isTensorType } from "../ir/types.ts";
import type { OptionValues } from "./options.ts";
import { definePass, type Pass, type PassContext } from "./pass.ts";
import {
  expectedActivation,
  foldIntoBias,
  type LayerRefit,
  rankInputChannels,
  recalibrateBn,
  reconstruct,
  refitStats,
  setConstantOf,
} from "./analysis/recovery.ts";

export { foldIntoBias };

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
  layerCap: {
    kind: "number",
    optional: true,
    min: 0,
    max: 1,
    exclusiveMin: true,
    doc: "Largest fraction of one group's channels pruned; with ratio, the channels a capped group keeps go from " +
      "the next-lowest |gamma| elsewhere, so the total stays the ratio's",
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
  compensation: {
    kind: "enum",
    values: ["expected", "beta"],
    default: "expected",
    doc: "What a pruned channel emits: E[act(BN)] with BN ~ N(beta, gamma^2), or act(beta) (the gamma -> 0 limit)",
  },
  select: {
    kind: "enum",
    values: ["auto", "gamma", "data"],
    default: "auto",
    doc: "Which channels of a layer go: the lowest |gamma| (network slimming), or with data the ones whose removal " +
      "its consumer's refit output loses least (greedy least squares; per-layer counts still from the |gamma| " +
      "threshold); auto: data when calibration data is given",
  },
  sequential: {
    kind: "bool",
    default: true,
    doc: "With data-chosen channels and reconstruct: choose each group's channels and refit its consumer one group " +
      "at a time, in graph order, on the inputs the already-pruned network produces (false: choose every group on " +
      "the original network first, then refit)",
  },
  recalibrateBn: {
    kind: "bool",
    optional: true,
    doc: "Re-estimate every BatchNormalization's mean/variance on the calibration data (default: when data is given " +
      "and no layer was refit)",
  },
  reconstruct: {
    kind: "bool",
    optional: true,
    doc: "Refit each consumer of pruned channels to the original outputs on the calibration data, sequentially, " +
      "by ridge least squares (default: when data is given)",
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
 *    `Gather(axis=1)` is inserted before each of its BNs (also for the output
 *    channels of a grouped conv, which otherwise go only as whole units), so the branch from
 *    the selection to its consumers becomes its own group and the shared
 *    producers stay intact. Selections that end up keeping every channel are
 *    removed again.
 * 2. A channel's score is |gamma| of the BNs on it, combined by `score`.
 *    One global threshold: the `ratio` percentile of all scores (keep iff
 *    score >= sorted[floor(ratio*N)], the reference implementation's rule), or
 *    `threshold` when given. Every group keeps `min-channels` (its best ones).
 *    `layer-cap=f`: no group loses more than a fraction f of its channels
 *    (with `ratio`, the next-lowest scores elsewhere go instead, so the total
 *    stays the ratio's). With calibration data (`select=auto`, or
 *    `select=data`) a group whose only consumer is a groups=1 Conv or a Gemm
 *    keeps as many channels as the scores said, but the ones a greedy
 *    least-squares elimination on that consumer's output picks (ThiNet /
 *    He et al. 2017; `rankInputChannels`). With `reconstruct` (the default
 *    with data) and `sequential` (default) the groups go one at a time in
 *    graph order of their consumers: each group's channels are chosen on the
 *    inputs the already-pruned and refit network produces, against the
 *    consumer's output in the original network, removed, and the consumer
 *    refit at once (`sequential=false`: every group is chosen on the original
 *    network, last layer first, then all are removed and refit). The report's
 *    `selection` (`gamma`, `data`, `data-sequential`: chosen and refit one
 *    group at a time) says which rule ran.
 * 3. Pruned channels disappear from every op the groups cover, as each
 *    op's channel rule (`OpDef.channels`) says: the constants its
 *    mapping lists are sliced (Conv filters and input channels, Gemm rows and
 *    the `H*W` feature block of each channel after Flatten, BN entries,
 *    per-channel constants, SE gate rows), and the rule's `resize` updates the
 *    rest (depthwise `group`, Split sizes, Slice bounds, Gather indices; a
 *    channel shuffle whose channels change becomes one `Gather(axis=1)`).
 *    Channel `j` of every group of a grouped conv goes only with the others,
 *    so the groups stay equal. Run `canonicalize` first: a `Shape` that reads
 *    a channel count is a barrier until static shape arithmetic is folded.
 * 4. `compensate`: with gamma ~ 0 a pruned channel emits the constant `beta`
 *    after its BN; that constant is pushed through the group's ops by their
 *    own `interpret` (on `[1, C, s, s]` constants, read at the centre) and the
 *    consumer's contribution, again from its own kernel, is folded into its
 *    bias; a bias-less Conv consumer followed only by a BN takes it in that
 *    BN's mean instead (`BN(z + d)` with mean `m` is `BN(z)` with mean
 *    `m - d`), so no parameter is added. Exact for Gemm; for a padded Conv
 *    consumer the border positions differ; a value that also depends on the
 *    input (an SE gate times a pruned channel) is not constant and is not
 *    compensated.
 * 5. With data, `reconstruct`: each consumer of pruned channels is refit by
 *    ridge least squares to its original output, in graph order on what the
 *    already-refit network computes (`reconstruct` in `passes/analysis/recovery.ts`);
 *    `recalibrate-bn`: BN running statistics re-estimated on calibration data
 *    (batch mean, unbiased variance), in graph order (default: only when no
 *    layer was refit). The report's `recovery` says which ran.
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
  const first = channelGroups(module, ctx.ops);
  const selections: Op[] = [];
  for (const g of first.groups) {
    if (g.bns.length === 0 || !inScope(g)) continue;
    const shared = g.bns.some((b) => b.op.operand(0)!.uses.length > 1);
    // The output channels of a grouped conv go only as whole units (channel j of every group); a selection before
    // their BNs lets the BN and the layers after it lose single channels while the grouped conv stays whole.
    const tiedOutput = g.producers.some((p) => {
      const m = first.mappings.get(p.op);
      return m?.kind === "linear" && (m.groups ?? 1) > 1;
    });
    if (g.prunable && !shared && !tiedOutput) continue;
    for (const b of g.bns) selections.push(insertSelection(graph, b.op));
  }
  const analysis = selections.length > 0 ? channelGroups(module, ctx.ops) : first;

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
  const capped = cappedRemoval(plans, threshold, options.layerCap, options.threshold === undefined);
  for (const p of plans) {
    const { size } = p.group;
    const minKeep = Math.min(
      size,
      options.minChannels >= 1 ? Math.floor(options.minChannels) : Math.max(1, Math.ceil(options.minChannels * size)),
    );
    const keep = new Uint8Array(size);
    let count = 0;
    const removed = capped?.get(p);
    for (let c = 0; c < size; c++) {
      if (removed ? !removed[c] : !(p.scores[c] < threshold)) keep[c] = 1;
    }
    // A unit (channel j of every group of a grouped conv) goes only as a whole.
    const units = p.group.units;
    if (units !== null) {
      for (let c = 0; c < size; c++) if (keep[c]) keep[units[c]] = 1;
      for (let c = 0; c < size; c++) if (keep[units[c]]) keep[c] = 1;
    }
    for (let c = 0; c < size; c++) count += keep[c];
    if (count < minKeep) {
      const order = [...p.scores.keys()].sort((a, b) => p.scores[b] - p.scores[a]);
      for (const c of order) {
        if (count >= minKeep || keep[c]) continue;
        for (let d = 0; d < size; d++) if (d === c || (units !== null && units[d] === units[c])) keep[d] = 1;
        count = keep.reduce((a, b) => a + b, 0);
      }
      ctx.log(`group of ${producerNames(p.group)} keeps ${minKeep} channel(s) (min-channels)`);
    }
    p.kept = [...keep.keys()].filter((c) => keep[c]);
  }

  const byData = options.select === "data" || (options.select === "auto" && ctx.calibration !== null);
  if (options.select === "data" && ctx.calibration === null) {
    ctx.emit("warning", "select=data needs calibration data (--calib): channels chosen by |gamma|");
  }
  // With data, the module before the pass is the reference the consumers are refit to.
  const original = ctx.calibration !== null && options.reconstruct !== false ? cloneModule(module) : null;
  const sequential = byData && original !== null && options.sequential;
  let bySelection = 0;
  let fits: Map<string, LayerRefit> | null = null;
  if (sequential) {
    ({ chosen: bySelection, fits } = pruneSequentially(module, original, plans, options, ctx));
  } else if (byData) {
    bySelection = selectByData(module, plans, analysis, ctx);
  }
  const pruned = plans.reduce((n, p) => n + p.group.size - p.kept.length, 0);
  ctx.stat("selection", bySelection === 0 ? "gamma" : sequential ? "data-sequential" : "data");
  ctx.stat("layers-selected-by-data", bySelection);

  // 3. Rewrite, compensating first (it reads the original weights); the sequential path has done both already.
  const refit = plans.filter((p) => p.kept.length < p.group.size).flatMap((p) => p.group.consumers.map((c) => c.op));
  const layers: Record<string, { before: number; after: number }> = {};
  const outputs = new Map<Op, number[]>();
  for (const p of plans) {
    for (const pr of p.group.producers) {
      const at = analysis.groupOf(pr.op.results[0])!;
      const kept = keptOf(p.kept, at.channels);
      layers[pr.op.name] = { before: pr.size, after: kept.length };
      if (kept.length < pr.size) outputs.set(pr.op, kept);
    }
    if (!sequential && p.kept.length < p.group.size && options.compensate) {
      compensate(p, analysis, ctx.ops, module.opset(), options.compensation === "expected");
    }
  }
  if (!sequential) removeChannels(plans, analysis, ctx.ops, module.opset());
  let selectionsKept = 0;
  for (const s of selections) {
    const idx = intValues(s.operand(1)!.constant!);
    const c = dims(s.operand(0)!)[1];
    if (idx.length === c && idx.every((v, i) => v === i)) removeSelection(s);
    else selectionsKept++;
  }
  inferShapes(module, { registry: ctx.ops, strict: false });
  if (!sequential && original !== null && refit.length > 0) {
    fits = reconstruct(original, module, refit, ctx, { outputs });
  }
  recover(module, fits, options, ctx);
  const after = costOf(module, { registry: ctx.ops }).totals;

  const barriers = analysis.barriers.filter((b) => analysis.groups[b.group].bns.length > 0)
    .map((b) => `${b.op}: ${b.reason}`);
  ctx.stat("threshold", Number.isFinite(threshold) ? threshold : null);
  ctx.stat("channels-before", all.length);
  ctx.stat("channels-after", all.length - pruned);
  ctx.stat("channels-pruned", pruned);
  ctx.stat("channel-selections", selectionsKept);
  ctx.stat("layers", layers);
  statCostChange(ctx, before, after);
  ctx.stat("gamma-histogram", gammaHistogram(all, threshold));
  ctx.stat("barriers", barriers);
  ctx.log(`threshold ${threshold}: ${pruned} of ${all.length} channels pruned`);
  if (pruned === 0) ctx.emit("note", nothingPrunedReason(plans.length, all, threshold, barriers));
  return pruned > 0 || selectionsKept > 0;
}

/**
 * `select=data`: in each group with one consumer a least-squares refit understands (a groups=1 Conv or a Gemm,
 * directly or after Flatten), the channels {@linkcode rankInputChannels} drops first on the calibration data go,
 * as many as the |gamma| threshold said. Groups without such a consumer keep the |gamma| choice. Returns how many
 * groups data chose.
 */
function selectByData(
  module: Module,
  plans: readonly Plan[],
  analysis: ChannelGroupsResult,
  ctx: PassContext,
): number {
  let chosen = 0;
  const order = new Map(module.graph.ops.map((op, i) => [op, i]));
  const last = (p: Plan): number => Math.max(...p.group.consumers.map((c) => order.get(c.op) ?? -1));
  const producing = new Map(plans.flatMap((p) => p.group.producers.map((pr) => [pr.op, p] as const)));
  // Last layer first: a consumer that also loses output channels needs to reproduce only the ones it keeps.
  for (const p of [...plans].sort((a, b) => last(b) - last(a))) {
    const kept = keptByData(module, p, analysis, (op) => keptOutputs(op, analysis, producing.get(op)), ctx);
    if (kept === null) continue;
    p.kept = kept;
    chosen++;
  }
  return chosen;
}

/**
 * Local output channels of `op` the group `next` (the plan of the group `op` produces, if any) keeps; undefined for
 * all of them.
 */
function keptOutputs(op: Op, analysis: ChannelGroupsResult, next: Plan | undefined): number[] | undefined {
  const y = next === undefined ? null : analysis.groupOf(op.results[0]);
  if (y === null) return undefined;
  const kept = new Set(next!.kept);
  return [...y.channels.keys()].filter((j) => kept.has(y.channels[j]));
}

/**
 * The channels of `p`'s group to keep, chosen by {@linkcode rankInputChannels} on its one consumer (a groups=1 Conv
 * or a Gemm, directly or after Flatten), `only` its outputs `outputsOf` lists; with `reference`, against the output
 * of that consumer there. Null where the group has no such consumer or nothing to prune.
 */
function keptByData(
  module: Module,
  p: Plan,
  analysis: ChannelGroupsResult,
  outputsOf: (op: Op) => readonly number[] | undefined,
  ctx: PassContext,
  reference?: Module,
): number[] | null {
  const g = p.group;
  if (p.kept.length === g.size || g.units !== null || g.consumers.length !== 1) return null;
  const op = g.consumers[0].op;
  const x = op.operand(0);
  if (x === null || (op.type !== "Conv" && op.type !== "Gemm")) return null;
  const at = analysis.groupOf(analysis.groupOf(x) === null ? analysis.viewOf(x)?.source ?? x : x);
  if (at === null || at.group !== g || at.channels.length !== g.size) return null;
  const ranking = rankInputChannels(module, op, g.size, p.kept.length, ctx, { only: outputsOf(op), reference });
  if (ranking === null) return null;
  const gone = new Set(ranking.order.map((j) => at.channels[j]));
  ctx.log(`group of ${producerNames(g)}: the ${g.size - gone.size} of ${g.size} channels kept chosen by data`);
  return [...Array(g.size).keys()].filter((c) => !gone.has(c));
}

/**
 * Data-driven pruning one group at a time, in graph order of the groups' consumers: each group's channels are chosen
 * ({@linkcode keptByData}) on the inputs the already-pruned and refit network produces, against the output of the
 * consumer in `original`, then removed (with compensation), and the consumer refit at once on those inputs, so
 * neither the choice nor the refit of a later layer assumes the earlier layers are still whole. Each plan's `kept`
 * is updated; returns how many groups data chose and the refits.
 */
function pruneSequentially(
  module: Module,
  original: Module,
  plans: readonly Plan[],
  options: PruneOptionValues,
  ctx: PassContext,
): { chosen: number; fits: Map<string, LayerRefit> } {
  const order = new Map(module.graph.ops.map((op, i) => [op, i]));
  const first = (p: Plan): number => Math.min(...p.group.consumers.map((c) => order.get(c.op) ?? Infinity));
  const producing = new Map(plans.flatMap((p) => p.group.producers.map((pr) => [pr.op, p] as const)));
  // Per op whose output channels are already removed, the original channel of each one left.
  const outputs = new Map<Op, number[]>();
  const done = new Set<Plan>();
  const fits = new Map<string, LayerRefit>();
  let chosen = 0;
  for (const p of [...plans].sort((a, b) => first(a) - first(b))) {
    done.add(p);
    if (p.kept.length === p.group.size) continue;
    const analysis = channelGroups(module, ctx.ops);
    const producer = p.group.producers[0].op;
    const group = analysis.groups.find((g) => g.producers[0]?.op === producer && g.size === p.group.size);
    if (group === undefined) {
      ctx.emit("warning", `group of ${producerNames(p.group)} changed while pruning others: kept whole`, producer);
      p.kept = [...Array(p.group.size).keys()];
      continue;
    }
    const step: Plan = { group, scores: p.scores, kept: p.kept };
    const outputsOf = (op: Op): readonly number[] | undefined => {
      const next = producing.get(op);
      const local = outputs.has(op) || next === undefined || done.has(next)
        ? undefined
        : keptOutputs(op, analysis, next);
      const was = outputs.get(op);
      return was === undefined ? local : (local ?? [...was.keys()]).map((j) => was[j]);
    };
    const kept = keptByData(module, step, analysis, outputsOf, ctx, original);
    if (kept !== null) {
      step.kept = p.kept = kept;
      chosen++;
    }
    for (const pr of group.producers) {
      const local = keptOf(step.kept, analysis.groupOf(pr.op.results[0])!.channels);
      const was = outputs.get(pr.op);
      if (local.length < pr.size) outputs.set(pr.op, was === undefined ? local : local.map((j) => was[j]));
    }
    if (options.compensate) compensate(step, analysis, ctx.ops, module.opset(), options.compensation === "expected");
    removeChannels([step], analysis, ctx.ops, module.opset());
    inferShapes(module, { registry: ctx.ops, strict: false });
    const consumers = group.consumers.map((c) => c.op);
    for (const [name, fit] of reconstruct(original, module, consumers, ctx, { outputs })) fits.set(name, fit);
  }
  return { chosen, fits };
}

/**
 * `layer-cap`: which channels each group loses when no group may lose more than `cap` of its channels. The lowest
 * scores go first, skipping a group at its cap; with `redistribute` (ratio mode) as many channels go as the global
 * threshold removes, else only those under it. Null without a cap.
 */
function cappedRemoval(
  plans: readonly Plan[],
  threshold: number,
  cap: number | undefined,
  redistribute: boolean,
): Map<Plan, Uint8Array> | null {
  if (cap === undefined) return null;
  const candidates = plans.flatMap((p) => [...p.scores.keys()].map((c) => ({ p, c, score: p.scores[c] })))
    .filter((x) => Number.isFinite(x.score))
    .sort((a, b) => a.score - b.score);
  let budget = candidates.filter((x) => x.score < threshold).length;
  const removed = new Map(plans.map((p) => [p, new Uint8Array(p.group.size)]));
  const count = new Map(plans.map((p) => [p, 0]));
  for (const { p, c, score } of candidates) {
    if (budget === 0 || (!redistribute && !(score < threshold))) break;
    if (count.get(p)! + 1 > Math.floor(cap * p.group.size)) continue;
    removed.get(p)![c] = 1;
    count.set(p, count.get(p)! + 1);
    budget--;
  }
  return removed;
}

/** Record `params-before/after` and `macs-before/after` from the cost totals around a channel removal. */
export function statCostChange(ctx: PassContext, before: CostTotals, after: CostTotals): void {
  ctx.stat("params-before", before.params);
  ctx.stat("params-after", after.params);
  ctx.stat("macs-before", before.macs);
  ctx.stat("macs-after", after.macs);
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
      const c = b.channels[i];
      const s = Math.abs(gamma[i]);
      const prev = counts[c] === 0 ? (how === "max" ? -Infinity : 0) : scores[c];
      scores[c] = how === "max" ? Math.max(prev, s) : prev + s;
      counts[c]++;
    }
  }
  if (how === "mean") { for (let c = 0; c < g.size; c++) if (counts[c] > 0) scores[c] /= counts[c]; }
  return scores;
}

/** Local indices `j` whose group channel `channels[j]` is kept. */
function keptOf(kept: readonly number[], channels: readonly number[]): number[] {
  const set = new Set(kept);
  const out: number[] = [];
  for (let j = 0; j < channels.length; j++) if (set.has(channels[j])) out.push(j);
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
  setConstantOf(op, i, t);
}

function sliceOperand(op: Op, i: number, axis: number, idx: readonly number[], block = 1): void {
  const v = op.operand(i);
  if (v === null || v.constant === null) return;
  setConstant(op, i, takeChannels(v.constant, axis, idx, block));
}

/** The channels of one group that stay: the group's channel indices, ascending. */
export interface ChannelSelection {
  /** The group, from the analysis handed to {@linkcode removeChannels}. */
  readonly group: ChannelGroup;
  /** Kept group channels; the others are removed. */
  readonly kept: readonly number[];
}

/**
 * Remove the channels each selection does not keep from every op that carries
 * them, as each op's channel rule says: slice the constants its mapping lists
 * (producer filters and biases, BN entries, per-channel constants such as a
 * mask `Mul`, consumer input channels or `H*W` feature blocks), then let the
 * rule `resize` what else depends on the channel counts. The mechanism of
 * `prune`, shared with `mask-select`; `analysis` must describe the module as
 * it is (shapes inferred), and shapes must be inferred again afterwards.
 */
export function removeChannels(
  selections: Iterable<ChannelSelection>,
  analysis: ChannelGroupsResult,
  ops: OpRegistry,
  opset: number,
): void {
  const kept = new Map<Value, number[]>();
  for (const p of selections) {
    if (p.kept.length === p.group.size) continue;
    for (const v of p.group.values) {
      const local = keptOf(p.kept, v.channels);
      if (local.length < v.channels.length) kept.set(v.value, local);
    }
  }
  if (kept.size === 0) return;
  const keep: ChannelKeep = (v) => kept.get(analysis.viewOf(v)?.source ?? v) ?? null;
  const early: ((keep: ChannelKeep) => void)[] = [];
  const late: ((keep: ChannelKeep) => void)[] = [];
  const channelsOf = (v: Value | null): number | null => {
    const t = v?.type;
    return v && v.constant === null && isTensorType(t) && typeof t.shape?.[1] === "number" ? t.shape[1] : null;
  };
  for (let [op, m] of analysis.mappings) {
    if (m.kind === "linear") {
      // Compensation may have given the op a bias since the analysis ran: ask its rule again.
      const fresh = ops.get(op)?.channels?.(op, { opset, channelsOf });
      if (typeof fresh === "object" && fresh.kind === "linear") m = fresh;
    }
    const touched = op.operands.some((v) => v !== null && keep(v) !== null) ||
      op.results.some((r) => keep(r) !== null) || (m.kind === "permute" && keep(m.to) !== null);
    if (!touched) continue;
    if (m.kind === "same") {
      const shared = [...m.operands.map((i) => op.operand(i)!), ...m.results.map((i) => op.results[i])];
      const k = shared.map(keep).find((k) => k !== null);
      if (k) { for (const p of m.params ?? []) sliceOperand(op, p.operand, p.axis, k); }
    } else if (m.kind === "linear") {
      const x = op.operand(0)!;
      const kx = keep(x);
      if (kx !== null) {
        const groups = m.groups ?? 1;
        const per = dims(x)[1] / groups;
        // Ties keep the same in-group positions in every group: the weight's input axis holds one group's worth.
        const idx = groups > 1 ? kx.filter((j) => j < per) : kx;
        for (const p of m.inputs) sliceOperand(op, p.operand, p.axis, idx, analysis.viewOf(x)?.features ?? 1);
      }
      const ky = keep(op.results[0]);
      if (ky !== null) {
        const cy = dims(op.results[0])[1];
        for (const p of m.outputs) {
          if (op.operand(p.operand)?.constant?.shape[p.axis] === cy) sliceOperand(op, p.operand, p.axis, ky);
        }
      }
    }
    if (m.resize) (m.kind === "permute" ? late : early).push(m.resize);
  }
  // A permutation's rewrite may replace values (a shuffle becomes a Gather): it runs after every other lookup.
  for (const resize of [...early, ...late]) resize(keep);
}

/**
 * A value of the group as an interpreter input: `[1, C, s...]` with each channel's constant, spatial dims capped,
 * or the flattened `[1, C*block]` features when `block > 0`.
 */
function channelTensor(v: Value, vec: ArrayLike<number>, cap: number, block = 0): Tensor {
  const t = v.type;
  const elem = isTensorType(t) && (t.elem === "f64" || t.elem === "f16" || t.elem === "bf16") ? t.elem : "f32";
  const shape = isTensorType(t) && t.shape !== null ? t.shape : [1, vec.length];
  const spatial = shape.slice(2).map((d) => (typeof d === "number" ? Math.min(d, cap) : 1));
  const inner = block > 0 ? block : spatial.reduce((a, b) => a * b, 1);
  const data = new Float64Array(vec.length * inner);
  for (let c = 0; c < vec.length; c++) data.fill(vec[c], c * inner, (c + 1) * inner);
  return fromFloat64(elem, block > 0 ? [1, vec.length * block] : [1, vec.length, ...spatial], data);
}

/** Each channel's value at the centre of `t` (`[1, C, s...]`): the interior of a padded window. */
function centre(t: Tensor): Float64Array {
  const [, c, ...spatial] = t.shape;
  const d = toFloat64(t);
  const out = new Float64Array(c ?? 0).fill(NaN);
  if (spatial.some((s) => s === 0)) return out;
  let offset = 0;
  for (const s of spatial) offset = offset * s + (s >> 1);
  const inner = spatial.reduce((a, b) => a * b, 1);
  for (let k = 0; k < out.length; k++) out[k] = d[k * inner + offset];
  return out;
}

/** Run `op`'s own kernel on `inputs`, capped spatial sizes first, the real ones if that fails; null if it cannot. */
function evaluate(
  op: Op,
  ops: OpRegistry,
  opset: number,
  inputsAt: (cap: number) => (Tensor | null)[] | null,
): Tensor[] | null {
  const def = ops.get(op);
  if (def?.interpret === undefined) return null;
  for (const cap of [8, Infinity]) {
    const inputs = inputsAt(cap);
    if (inputs === null) return null;
    try {
      return def.interpret(op, inputs, { opset });
    } catch {
      // A window larger than the capped map: try the real size.
    }
  }
  return null;
}

/**
 * The constant each channel of the group's values holds when its channel is
 * pruned (gamma ~ 0: a BN emits beta), pushed through the group's ops by
 * their own `interpret` on `[1, C, s...]` constants; NaN where unknown (the
 * output of a producer, a value read from outside the group). Then the pruned
 * channels' contribution to each consumer, again from its own kernel, is
 * folded into its bias.
 */
function compensate(
  p: Plan,
  analysis: ChannelGroupsResult,
  ops: OpRegistry,
  opset: number,
  expected: boolean,
): void {
  const g = p.group;
  const pruned = new Uint8Array(g.size).fill(1);
  for (const c of p.kept) pruned[c] = 0;
  const vecs = new Map<Value, Float64Array>();
  const producers = new Set(g.producers.map((pr) => pr.op));
  const bns = new Set(g.bns.map((b) => b.op));
  const permutes = new Map<Value, { from: Value; perm: readonly number[] }>();
  for (const [op, m] of analysis.mappings) {
    if (m.kind === "permute") permutes.set(m.to, { from: op.operand(0)!, perm: m.perm });
  }
  const results = new Map<Op, Tensor[] | null>();
  // Per-channel standard deviation of a pruned BN's output (|gamma|), for `compensation=expected`.
  const spreads = new Map<Value, Float64Array>();
  // Per-channel variance of what a pruned channel emits, for the BN after each consumer (`compensation=expected`).
  const variances = new Map<Value, Float64Array>();
  for (const { value, channels } of g.values) {
    const n = channels.length;
    let out: Float64Array = new Float64Array(n).fill(NaN);
    const op = value.producer;
    const perm = permutes.get(value);
    if (perm !== undefined) {
      const from = vecs.get(perm.from);
      if (from) out = Float64Array.from(perm.perm, (c) => from[c]);
    } else if (op !== null && !producers.has(op) && analysis.mappings.has(op)) {
      if (!results.has(op)) {
        results.set(
          op,
          evaluate(op, ops, opset, (cap) => {
            const inputs: (Tensor | null)[] = [];
            for (let i = 0; i < op.operands.length; i++) {
              const v = op.operand(i);
              if (v === null || v.constant !== null) {
                inputs.push(v?.constant ?? null);
                continue;
              }
              let vec = vecs.get(v);
              if (vec === undefined) return null;
              if (i === 0 && bns.has(op)) {
                // A pruned BN input is unknown, but gamma ~ 0 makes the output beta whatever it is: feed the mean.
                const mean = toFloat64(op.operand(3)!.constant!);
                vec = vec.map((x, c) => (Number.isNaN(x) ? mean[c] : x));
              }
              inputs.push(channelTensor(v, vec, cap));
            }
            return inputs;
          }),
        );
      }
      const r = results.get(op);
      const t = r?.[op.results.indexOf(value)];
      if (t && t.shape[1] === n) out = centre(t);
      const live = op.operands.filter((v) => v !== null && v.constant === null);
      const spread = live.length === 1 ? spreads.get(live[0]!) : undefined;
      const mean = live.length === 1 ? vecs.get(live[0]!) : undefined;
      if (spread !== undefined && mean !== undefined && mean.length === n && op.results.length === 1) {
        // An activation of a pruned BN output ~ N(beta, gamma^2): its mean, not its value at the mean.
        const at = (x: Float64Array): Float64Array | null => {
          const at = evaluate(
            op,
            ops,
            opset,
            (cap) =>
              op.operands.map((v) => (v !== null && v === live[0] ? channelTensor(v, x, cap) : v?.constant ?? null)),
          );
          return at?.[0] && at[0].shape[1] === n ? centre(at[0]) : null;
        };
        out = expectedActivation(op, mean, spread, at);
        const square = expectedActivation(op, mean, spread, (x) => at(x)?.map((y) => y * y) ?? null, false);
        variances.set(value, square.map((q, c) => Math.max(0, q - out[c] * out[c])));
      }
      if (bns.has(op) && expected && value === op.results[0]) {
        const gamma = toFloat64(op.operand(1)!.constant!);
        if (gamma.length === n) {
          spreads.set(value, gamma.map(Math.abs));
          variances.set(value, gamma.map((g) => g * g));
        }
      }
      const carried = live.length === 1 && POOLING.has(op.type) ? variances.get(live[0]!) : undefined;
      if (carried !== undefined && carried.length === n) variances.set(value, carried);
    }
    vecs.set(value, out);
  }
  for (const c of g.consumers) {
    const op = c.op;
    if (op.type === "MatMul" || op.operand(1)?.constant == null) continue; // no bias to fold into
    const source = analysis.groupOf(op.operand(0)!) === null ? analysis.viewOf(op.operand(0)!)?.source : op.operand(0)!;
    if (source === undefined) continue;
    const at = analysis.groupOf(source);
    const v = vecs.get(source);
    if (at === null || v === undefined) continue;
    const u = Float64Array.from(at.channels, (ch, j) => (pruned[ch] && Number.isFinite(v[j]) ? v[j] : 0));
    if (u.every((x) => x === 0)) continue;
    const w = op.operand(1)!.constant!;
    const kernel = w.shape.slice(2);
    const dil = op.ints("dilations") ?? kernel.map(() => 1);
    const span = Math.max(1, ...kernel.map((k, i) => (k - 1) * (dil[i] ?? 1) + 1));
    const r = evaluate(op, ops, opset, (cap) => {
      const x = source !== op.operand(0)
        ? channelTensor(source, u, 1, c.featuresPerChannel)
        : channelTensor(source, u, Math.min(cap, 2 * span + 1));
      return [x, w, null];
    });
    if (r === null) continue;
    const delta = centre(r[0]);
    if (!delta.every(Number.isFinite)) continue;
    const lost = variances.get(source);
    if (lost !== undefined) {
      removeVariance(op, Float64Array.from(lost, (x, j) => (pruned[at.channels[j]] ? x : 0)), c.featuresPerChannel);
    }
    foldIntoBias(op, delta);
  }
}

/** Ops over the positions of one channel: a channel's variance is carried through them (an approximation). */
const POOLING = new Set(["MaxPool", "AveragePool", "Identity", "Dropout"]);

/**
 * The variance the pruned channels (variance `lost` per input channel) added to each output of the consumer `op`,
 * `sum_c lost_c sum_k W[o,c,k]^2` (inputs taken as independent), is taken out of the running variance of the BN
 * that reads `op`'s output, so that BN still normalizes what remains (data-free BN re-estimation).
 */
function removeVariance(op: Op, lost: Float64Array, features: number): void {
  let next = op.result.uses.length === 1 ? op.result.uses[0] : null;
  const selection = next?.op.type === "Gather" ? next.op : null;
  if (selection !== null && selection.result.uses.length === 1) {
    // A channel selection prune put before the BN, still keeping every channel in order.
    const idx = intValues(selection.operand(1)!.constant!);
    if (idx.every((v, i) => v === i)) next = selection.result.uses[0];
  }
  if (next?.op.type !== "BatchNormalization" || next.index !== 0 || (op.int("group", 1) ?? 1) !== 1) return;
  const bn = next.op;
  const w = toFloat64(op.operand(1)!.constant!);
  const shape = op.operand(1)!.constant!.shape;
  const transB = op.type === "Gemm" && op.flag("transB");
  const [out, width] = op.type === "Gemm" && !transB ? [shape[1], shape[0]] : [shape[0], w.length / shape[0]];
  const per = op.type === "Gemm" ? Math.max(1, features) : width / lost.length;
  if (!Number.isInteger(per) || per * lost.length !== width) return;
  const variance = toFloat64(bn.operand(4)!.constant!);
  if (variance.length !== out) return;
  for (let o = 0; o < out; o++) {
    let v = 0;
    for (let i = 0; i < width; i++) {
      const wi = op.type === "Gemm" && !transB ? w[i * out + o] : w[o * width + i];
      v += lost[Math.floor(i / per)] * wi * wi;
    }
    variance[o] = Math.max(0.01 * variance[o], variance[o] - v);
  }
  setConstant(bn, 4, fromFloat64(bn.operand(4)!.constant!.dtype, [out], variance));
}

/**
 * The data-driven recovery after the rewrite: the report of the refit of the consumers of pruned channels
 * (`reconstruct`, already run: `fits`), then BN re-estimation (`recalibrate-bn`); each on by default when calibration
 * data is given.
 */
function recover(
  module: Module,
  fits: ReadonlyMap<string, LayerRefit> | null,
  options: PruneOptionValues,
  ctx: PassContext,
): void {
  const ran: string[] = [];
  if (ctx.calibration === null) {
    for (const name of ["recalibrate-bn", "reconstruct"] as const) {
      if (options[name === "reconstruct" ? "reconstruct" : "recalibrateBn"] === true) {
        ctx.emit(
          "warning",
          `${name} needs calibration data (--calib): ${
            name === "reconstruct" ? "layers not refit" : "BatchNormalization statistics left as trained"
          }`,
        );
      }
    }
  } else {
    if (fits !== null) {
      ctx.stat("refit", refitStats(fits));
      ran.push("reconstruct");
    }
    // After a refit the layers reproduce the original outputs, which the trained statistics describe better than
    // 256 samples do (measured: mobilenet 50% 96.95% as trained, 96.25% re-estimated).
    if (options.recalibrateBn === true || (options.recalibrateBn === undefined && fits === null)) {
      recalibrateBn(module, ctx);
      ran.push("recalibrate-bn");
    }
  }
  ctx.stat("bn-recalibrated", ran.includes("recalibrate-bn"));
  ctx.stat(
    "recovery",
    ran.length > 0 ? ran.join(",") : options.compensate ? `compensate=${options.compensation}` : "none",
  );
}

/** |gamma| (or |mask|) histogram over log10 bins, two per decade, with the threshold, for the report to draw. */
export function gammaHistogram(sorted: readonly number[], threshold: number): Record<string, number[] | number | null> {
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
