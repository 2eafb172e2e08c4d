/**
 * Channel rules of the built-in ops ({@linkcode OpDef.channels}): how each op
 * carries channels (axis 1) from operands to results, for structured pruning.
 * The op definitions in this folder name these rules; the channel-groups
 * analysis and the `prune` pass only read the {@linkcode ChannelMapping} kinds.
 * @module
 */
import { attr } from "../attributes.ts";
import { isConstant, Op, Value } from "../graph.ts";
import type { ChannelContext, ChannelKeep, ChannelMapping, ChannelParam } from "../op_def.ts";
import { addConstant, eraseConstantIfUnused, eraseOp, replaceConstant, replaceOp } from "../rewriter.ts";
import { int64Tensor } from "../tensor.ts";
import { isTensorType } from "../types.ts";
import { intValues } from "./common.ts";

/** Static shape of a value, or null. */
function shapeOf(v: Value | null): readonly (number | string)[] | null {
  return v !== null && isTensorType(v.type) && v.type.shape !== null ? v.type.shape : null;
}

/** Results after the first must be unused (Dropout's mask, BN's training statistics, MaxPool's indices). */
function extraResultsUsed(op: Op): string | null {
  const used = op.results.slice(1).find((r) => !r.isDead);
  return used ? `result "${used.name}" is used` : null;
}

/** Whether `v` is an omitted operand or a constant. */
function isConst(v: Value | null): boolean {
  return v === null || isConstant(v);
}

/** Constant integer contents of operand `i`, or null. */
function constInts(op: Op, i: number): number[] | null {
  const v = op.operand(i);
  return v !== null && isConstant(v) ? intValues(v.constant) : null;
}

/** Local channel indices `[0, n)`. */
function all(n: number): number[] {
  return [...Array(n).keys()];
}

/**
 * Elementwise ops with numpy broadcasting, and every unary op that maps
 * channel `c` to channel `c` (activations, Identity, pooling, Clip with
 * constant bounds): every operand whose (trailing-aligned) channel axis has
 * the result's channel count shares the result's channels; operands that
 * broadcast over it (size 1, or too low a rank) are uniform; constants with
 * the channel axis are per-channel parameters. A squeeze-and-excitation gate
 * (`x * s` with `s: [N,C,1,1]`) and SiLU written as `x * sigmoid(x)` are
 * coupled elementwise products.
 */
export function sameChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  const y = op.results[0];
  const ys = shapeOf(y);
  if (ys === null) return "result shape unknown";
  const extra = extraResultsUsed(op);
  if (extra !== null) return extra;
  if (ys.length < 2) {
    return op.operands.some((v) => ctx.channelsOf(v) !== null) ? "reduces channels away" : { kind: "none" };
  }
  const cy = ys[1];
  if (typeof cy !== "number") return "channel count unknown";
  const operands: number[] = [];
  const params: ChannelParam[] = [];
  for (let i = 0; i < op.operands.length; i++) {
    const v = op.operand(i);
    if (v === null) continue;
    const s = shapeOf(v);
    if (s === null) return `operand ${i} shape unknown`;
    const ci = s.length - (ys.length - 1);
    const c = ci >= 0 ? s[ci] : 1;
    if (c === 1) continue;
    if (c !== cy) return `operand ${i} has ${c} channels, the result ${cy}`;
    if (isConstant(v)) params.push({ operand: i, axis: ci });
    else if (s.length !== ys.length) return `operand ${i} broadcasts channels from rank ${s.length}`;
    else operands.push(i);
  }
  if (operands.length === 0) return "its channels come from a constant";
  return { kind: "same", operands, results: [0], params };
}

/**
 * Reductions: channels pass when the reduced axes leave axis 1 in place
 * (`ReduceMean` over spatial axes, with or without `keepdims`).
 */
export function reduceChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  const x = op.operand(0);
  const s = shapeOf(x);
  if (s === null || ctx.channelsOf(x) === null) return ctx.channelsOf(x) === null ? { kind: "none" } : "shape unknown";
  const fromOperand = op.operand(1) !== null;
  let axes = fromOperand ? constInts(op, 1) : op.ints("axes")?.slice() ?? [];
  if (axes === null) return "axes not constant";
  axes = axes.map((a) => (a < 0 ? a + s.length : a));
  if (axes.length === 0 && !(op.int("noop_with_empty_axes", 0) === 1)) return "reduces every axis, channels included";
  if (axes.includes(1)) return "reduces over the channel axis";
  if (axes.includes(0) && op.int("keepdims", 1) === 0) return "moves the channel axis";
  return { kind: "same", operands: [0], results: [0] };
}

/** BatchNormalization and InstanceNormalization: channelwise, with `[C]` parameters in `params`. */
export function normChannels(params: readonly number[]): (op: Op, ctx: ChannelContext) => ChannelMapping | string {
  return (op, ctx) => {
    const cx = ctx.channelsOf(op.operand(0));
    if (cx === null || cx !== ctx.channelsOf(op.results[0])) return "shapes unknown";
    const extra = extraResultsUsed(op);
    if (extra !== null) return `training outputs used (${extra})`;
    if (!params.every((i) => isConst(op.operand(i)))) return "parameters not constant";
    return { kind: "same", operands: [0], results: [0], params: params.map((operand) => ({ operand, axis: 0 })) };
  };
}

/**
 * Conv: group 1 is a linear map (weights OIHW: axis 1 reads the input
 * channels, axis 0 and the bias make the output channels); depthwise
 * (group = C_in = C_out) is channelwise and updates `group`; other groups are
 * a grouped linear map whose in-group positions are pruned alike in every
 * group (see {@linkcode ChannelMapping}).
 */
export function convChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  const cx = ctx.channelsOf(op.operand(0));
  const cy = ctx.channelsOf(op.results[0]);
  if (cx === null || cy === null) return "shapes unknown";
  if (!isConst(op.operand(1)) || !isConst(op.operand(2))) return "weights not constant";
  const group = op.int("group", 1)!;
  const bias = op.operand(2) !== null ? [{ operand: 2, axis: 0 }] : [];
  if (group === 1) {
    return { kind: "linear", inputs: [{ operand: 1, axis: 1 }], outputs: [{ operand: 1, axis: 0 }, ...bias] };
  }
  if (group === cx && cx === cy) {
    return {
      kind: "same",
      operands: [0],
      results: [0],
      params: [{ operand: 1, axis: 0 }, ...bias],
      resize(keep: ChannelKeep): void {
        const kept = keep(op.results[0]);
        if (kept !== null) op.attributes.set("group", attr.int(kept.length));
      },
    };
  }
  if (cx % group !== 0 || cy % group !== 0) return `group ${group} does not divide the channels`;
  return {
    kind: "linear",
    inputs: [{ operand: 1, axis: 1 }],
    outputs: [{ operand: 1, axis: 0 }, ...bias],
    groups: group,
  };
}

/** Gemm (`A * op(B) + C`, B constant): a linear map from A's features to the result's. */
export function gemmChannels(op: Op): ChannelMapping | string {
  const a = shapeOf(op.operand(0));
  const b = op.operand(1);
  const bs = shapeOf(b);
  if (op.flag("transA") || a?.length !== 2 || !isConst(b) || bs?.length !== 2 || !isConst(op.operand(2))) {
    return "needs a rank-2 input and constant rank-2 weights";
  }
  const transB = op.flag("transB");
  const outputs: ChannelParam[] = [{ operand: 1, axis: transB ? 0 : 1 }];
  const n = bs[transB ? 0 : 1];
  const c = shapeOf(op.operand(2));
  if (c !== null && c.length > 0 && c[c.length - 1] === n && c.slice(0, -1).every((d) => d === 1)) {
    outputs.push({ operand: 2, axis: c.length - 1 });
  }
  return { kind: "linear", inputs: [{ operand: 1, axis: transB ? 1 : 0 }], outputs };
}

/** MatMul of a rank-2 input by a constant rank-2 matrix. */
export function matmulChannels(op: Op): ChannelMapping | string {
  const a = shapeOf(op.operand(0));
  const b = op.operand(1);
  if (a?.length !== 2 || !isConst(b) || shapeOf(b)?.length !== 2) {
    return "needs a rank-2 input and constant rank-2 weights";
  }
  return { kind: "linear", inputs: [{ operand: 1, axis: 0 }], outputs: [{ operand: 1, axis: 1 }] };
}

/** Flatten on axis 1: channels become blocks of `H*W` features. */
export function flattenChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  const x = op.operand(0);
  const s = shapeOf(x);
  if (ctx.channelsOf(x) === null) return { kind: "none" };
  if (op.int("axis", 1) !== 1) return "only a flatten on axis 1 passes channels";
  return featureView(s!);
}

function featureView(s: readonly (number | string)[]): ChannelMapping | string {
  if (s.length === 2) return { kind: "same", operands: [0], results: [0] };
  const spatial = s.slice(2);
  if (!spatial.every((d) => typeof d === "number")) return "spatial size unknown";
  return { kind: "flatten", features: (spatial as number[]).reduce((a, b) => a * b, 1) };
}

/**
 * Reshape: a flatten to `[N, C*H*W]` (target `[0|1|-1, -1]`), or the first of
 * a channel shuffle `Reshape [N,G,C/G,H,W] -> Transpose(0,2,1,3,4) ->
 * Reshape [N,C,H,W]` (ShuffleNet), which permutes channels by a known
 * permutation. When pruning changes the shuffle's channels, the three ops
 * become one `Gather(axis=1)` of the permuted kept channels.
 */
export function reshapeChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  const x = op.operand(0);
  const s = shapeOf(x);
  const cx = ctx.channelsOf(x);
  if (cx === null || s === null) return { kind: "none" };
  const target = constInts(op, 1);
  if (target !== null && target.length === 2 && target[1] === -1 && target[0] >= -1 && target[0] <= 1) {
    return featureView(s);
  }
  return shuffle(op, cx) ?? "only a flatten to [N, C*H*W] or a channel shuffle passes channels";
}

/** The channel-shuffle pattern starting at `first`, or null. */
function shuffle(first: Op, c: number): ChannelMapping | null {
  const x = first.operand(0)!;
  const xs = shapeOf(x)!;
  const mid = shapeOf(first.results[0]);
  const u1 = first.results[0].uses;
  if (mid === null || mid.length !== xs.length + 1 || u1.length !== 1 || u1[0].op.type !== "Transpose") return null;
  const [g, k] = [mid[1], mid[2]];
  if (typeof g !== "number" || typeof k !== "number" || g * k !== c || mid[0] !== xs[0]) return null;
  if (!xs.slice(2).every((d, i) => d === mid[i + 3])) return null;
  const t = u1[0].op;
  const perm = t.ints("perm");
  if (perm === undefined || perm.some((p, i) => p !== (i === 1 ? 2 : i === 2 ? 1 : i))) return null;
  const u2 = t.results[0].uses;
  if (u2.length !== 1 || u2[0].op.type !== "Reshape" || u2[0].index !== 0) return null;
  const last = u2[0].op;
  const out = last.results[0];
  const os = shapeOf(out);
  if (os === null || os.length !== xs.length || !os.every((d, i) => d === xs[i])) return null;
  // Output channel i*G + j is input channel j*K + i.
  const channelPerm = all(c).map((o) => (o % g) * k + Math.floor(o / g));
  return {
    kind: "permute",
    to: out,
    perm: channelPerm,
    through: [t, last],
    resize(keep: ChannelKeep): void {
      const indices = permutedKept(channelPerm, keep(x), keep(out));
      const consts = [first.operand(1), last.operand(1)];
      const idx = addConstant(last.graph!, `${first.name}.shuffle`, int64Tensor(indices));
      const gather = new Op({
        name: last.name,
        type: "Gather",
        operands: [x, idx],
        results: [new Value(out.name, out.type)],
        attributes: [["axis", attr.int(1)]],
      });
      replaceOp(last, gather);
      eraseOp(t);
      eraseOp(first);
      for (const v of consts) eraseConstantIfUnused(v);
    },
  };
}

/** New indices of a channel permutation `perm` after its input kept `inKept` and its output `outKept`. */
function permutedKept(
  perm: readonly number[],
  inKept: readonly number[] | null,
  outKept: readonly number[] | null,
): number[] {
  const position = new Map((inKept ?? all(perm.length)).map((c, i) => [c, i]));
  return (outKept ?? all(perm.length)).map((o) => {
    const p = position.get(perm[o]);
    if (p === undefined) throw new Error(`channel ${perm[o]} was pruned from a permutation's input but not its output`);
    return p;
  });
}

/** Concat on axis 1: operand `i` is the result's channels at the sum of the earlier operands' counts. */
export function concatChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  const y = op.results[0];
  const cy = ctx.channelsOf(y);
  if (cy === null) return op.operands.some((v) => ctx.channelsOf(v) !== null) ? "shapes unknown" : { kind: "none" };
  const rank = shapeOf(y)!.length;
  const axis = op.int("axis", 0)!;
  if (axis !== 1 && axis !== 1 - rank) return "concatenation not on the channel axis (use same-channel rules)";
  const links = [];
  let offset = 0;
  for (const v of op.operands) {
    const c = ctx.channelsOf(v);
    if (c === null) return "concatenates a constant or an operand of unknown channels";
    links.push({ from: v!, to: y, offset });
    offset += c;
  }
  return { kind: "offsets", links };
}

/** Split on axis 1: result `r` is the input's channels at the sum of the earlier results' counts; sizes follow. */
export function splitChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  const x = op.operand(0);
  const cx = ctx.channelsOf(x);
  if (cx === null) return { kind: "none" };
  const rank = shapeOf(x)!.length;
  const axis = op.int("axis", 0)!;
  if (axis !== 1 && axis !== 1 - rank) return "split not on the channel axis";
  if (op.operand(1) !== null && !isConstant(op.operand(1))) return "split sizes not constant";
  const links = [];
  let offset = 0;
  for (const r of op.results) {
    const c = ctx.channelsOf(r);
    if (c === null) return "result shapes unknown";
    links.push({ from: r, to: x!, offset });
    offset += c;
  }
  const opset = ctx.opset;
  return {
    kind: "offsets",
    links,
    resize(keep: ChannelKeep): void {
      const sizes = op.results.map((r) => keep(r)?.length ?? ctx.channelsOf(r)!);
      if (opset < 13) op.attributes.set("split", attr.ints(sizes));
      else {
        op.attributes.delete("num_outputs");
        const t = int64Tensor(sizes);
        if (op.operand(1) !== null) replaceConstant(op, 1, t);
        else op.setOptionalOperand(1, addConstant(op.graph!, `${op.name}.split`, t));
      }
    },
  };
}

/** Slice: a constant unit-step slice of axis 1 maps the result to an offset of the input; other slices pass channels. */
export function sliceChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  const x = op.operand(0);
  const cx = ctx.channelsOf(x);
  if (cx === null) return { kind: "none" };
  const sl = channelSlice(op, cx);
  if (sl === null || ctx.channelsOf(op.results[0]) === null) return "only a constant unit-step slice passes channels";
  const k = sl.axes.indexOf(1);
  if (k < 0) return { kind: "same", operands: [0], results: [0] };
  return {
    kind: "offsets",
    links: [{ from: op.results[0], to: x!, offset: sl.start }],
    resize(keep: ChannelKeep): void {
      const kept = keep(x!);
      if (kept === null) return;
      const below = (v: number): number => kept.filter((i) => i < v).length;
      const starts = constInts(op, 1)!;
      const ends = constInts(op, 2)!;
      starts[k] = below(sl.start);
      ends[k] = below(sl.end);
      replaceConstant(op, 1, int64Tensor(starts));
      replaceConstant(op, 2, int64Tensor(ends));
    },
  };
}

/** A Slice with constant unit-step parameters: its bounds on axis 1 (clamped to `channels`) and the axes it slices. */
export function channelSlice(op: Op, channels: number): { start: number; end: number; axes: number[] } | null {
  const s = constInts(op, 1);
  const e = constInts(op, 2);
  if (s === null || e === null || (op.operand(3) && !constInts(op, 3)) || (op.operand(4) && !constInts(op, 4))) {
    return null;
  }
  const rank = shapeOf(op.operand(0))?.length ?? 0;
  const axes = (constInts(op, 3) ?? s.map((_, i) => i)).map((a) => (a < 0 ? a + rank : a));
  if (constInts(op, 4)?.some((x) => x !== 1)) return null;
  const i = axes.indexOf(1);
  if (i < 0) return { start: 0, end: channels, axes };
  const clamp = (v: number): number => Math.max(0, Math.min(channels, v < 0 ? v + channels : v));
  return { start: clamp(s[i]), end: clamp(e[i]), axes };
}

/**
 * Gather on axis 1 with constant 1-D indices: a permutation of every channel
 * (other than the identity) permutes them; any other index list is a channel
 * selection, a producer of new channels that keeps its input whole (the
 * channel selection layer of network slimming).
 */
export function gatherChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  const x = op.operand(0);
  const cx = ctx.channelsOf(x);
  if (cx === null) return { kind: "none" };
  const rank = shapeOf(x)!.length;
  const axis = op.int("axis", 0)!;
  const idxShape = shapeOf(op.operand(1));
  const idx = constInts(op, 1);
  if ((axis !== 1 && axis !== 1 - rank) || idx === null || idxShape?.length !== 1) {
    return "gather not a constant channel selection";
  }
  const norm = idx.map((i) => (i < 0 ? i + cx : i));
  const seen = new Set(norm);
  const permutation = norm.length === cx && seen.size === cx && norm.every((i) => i >= 0 && i < cx);
  if (permutation && norm.some((v, i) => v !== i)) {
    return {
      kind: "permute",
      to: op.results[0],
      perm: norm,
      resize(keep: ChannelKeep): void {
        replaceConstant(op, 1, int64Tensor(permutedKept(norm, keep(x!), keep(op.results[0]))));
      },
    };
  }
  return {
    kind: "select",
    resize(keep: ChannelKeep): void {
      const kept = keep(op.results[0]);
      if (kept !== null) replaceConstant(op, 1, int64Tensor(kept.map((i) => norm[i])));
    },
  };
}

/** Transpose that leaves axes 0 and 1 in place. */
export function transposeChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  if (ctx.channelsOf(op.operand(0)) === null) return { kind: "none" };
  const perm = op.ints("perm");
  if (perm === undefined || perm[0] !== 0 || perm[1] !== 1) return "moves the channel axis";
  return { kind: "same", operands: [0], results: [0] };
}

/** Squeeze and Unsqueeze of axes after the channel axis. */
export function squeezeChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  const x = op.operand(0);
  if (ctx.channelsOf(x) === null) return { kind: "none" };
  const axes = op.operand(1) !== null ? constInts(op, 1) : op.ints("axes")?.slice() ?? null;
  if (axes === null) return "axes not constant";
  const rank = op.type === "Squeeze" ? shapeOf(x)!.length : shapeOf(op.results[0])?.length ?? 0;
  if (axes.length === 0 || !axes.every((a) => (a < 0 ? a + rank : a) >= 2)) return "moves the channel axis";
  return { kind: "same", operands: [0], results: [0] };
}

/** Shape reads the channel count: a barrier unless the shape arithmetic is folded first. */
export function shapeChannels(op: Op, ctx: ChannelContext): ChannelMapping | string {
  if (ctx.channelsOf(op.operand(0)) === null) return { kind: "none" };
  return "reads the channel count (run canonicalize first to fold static shape arithmetic)";
}
