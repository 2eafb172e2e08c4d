/**
 * `ChannelGroups`: which channels of a CNN must be removed together (DepGraph
 * on ONNX). Channel spaces of values are joined with a weighted union-find: a
 * link says "channel j of value a is channel j + d of value b", so Concat,
 * Split and Slice (offset links), Add/Sum (offset 0) and pass-through ops fall
 * out of one rule. Passes choose indices; this module only says what is coupled.
 * @module
 */
import { isConstant, isDefaultDomain, type Op, type Value } from "../../ir/graph.ts";
import type { Module } from "../../ir/module.ts";
import { intValues } from "../../ir/ops/common.ts";
import { isTensorType } from "../../ir/types.ts";
import type { Analysis } from "../pass.ts";

/** An op whose output channels are the group's channels `[offset, offset + size)`. */
export interface ChannelProducer {
  /** The producing op. */
  readonly op: Op;
  /** `conv` (out-channels, weight axis 0), `gemm`/`matmul` (out-features), `gather` (a channel selection). */
  readonly kind: "conv" | "gemm" | "matmul" | "gather";
  /** First group channel it produces. */
  readonly offset: number;
  /** Channels it produces. */
  readonly size: number;
}

/** An op that reads the group's channels `[offset, offset + size)` as input channels or features. */
export interface ChannelConsumer {
  /** The consuming op (Conv with group 1, Gemm, MatMul). */
  readonly op: Op;
  /** Operand index read (0). */
  readonly operand: number;
  /** First group channel it reads. */
  readonly offset: number;
  /** Channels it reads. */
  readonly size: number;
  /** Input features per channel: `H*W` after Flatten/Reshape into Gemm/MatMul, else 1. */
  readonly featuresPerChannel: number;
}

/** A pass-through op whose per-channel parameters or attributes follow the group's channels. */
export interface ChannelMember {
  /** The op. */
  readonly op: Op;
  /** How it carries channels (what pruning must adjust). */
  readonly role: "bn" | "depthwise" | "param" | "split" | "slice" | "elementwise" | "concat" | "add";
  /** First group channel of its channel-carrying input. */
  readonly offset: number;
  /** Channels of that input. */
  readonly size: number;
  /** For `param`: operand index of the per-channel constant. */
  readonly paramOperand?: number;
}

/** Why the channels of a group were kept whole. */
export interface ChannelBarrier {
  /** Name of the op (or value, for graph inputs and outputs) that blocked. */
  readonly op: string;
  /** One line. */
  readonly reason: string;
  /** Index of the group in {@linkcode ChannelGroupsResult.groups}. */
  readonly group: number;
}

/** A set of coupled channels: removing channel k removes it from every member. */
export interface ChannelGroup {
  /** Index in the result. */
  readonly id: number;
  /** Channels in the group. */
  readonly size: number;
  /** Values carrying the group's channels on axis 1, with their first channel. */
  readonly values: readonly { readonly value: Value; readonly offset: number }[];
  /** Ops producing the channels. */
  readonly producers: readonly ChannelProducer[];
  /** Ops reading them as input channels or features. */
  readonly consumers: readonly ChannelConsumer[];
  /** Pass-through ops that must be adjusted. */
  readonly members: readonly ChannelMember[];
  /** BatchNormalization ops on the group's channels (their |gamma| scores the channels). */
  readonly bns: readonly ChannelMember[];
  /** True when no barrier touches the group and it has a producer. */
  readonly prunable: boolean;
}

/** The result of {@linkcode channelGroups}. */
export interface ChannelGroupsResult {
  /** Groups, in order of their first value in the graph. */
  readonly groups: readonly ChannelGroup[];
  /** Every barrier found. */
  readonly barriers: readonly ChannelBarrier[];
  /** Group and first channel of a value, or null when it carries no channels. */
  groupOf(value: Value): { readonly group: ChannelGroup; readonly offset: number } | null;
}

/** Unary ops that map each channel to itself (elementwise or spatial pooling). */
const PASS_THROUGH: ReadonlySet<string> = new Set([
  "Relu",
  "LeakyRelu",
  "Clip",
  "Sigmoid",
  "HardSigmoid",
  "HardSwish",
  "Tanh",
  "Elu",
  "Selu",
  "Softplus",
  "Identity",
  "Dropout",
  "Neg",
  "Abs",
  "MaxPool",
  "AveragePool",
  "GlobalAveragePool",
  "GlobalMaxPool",
  "LpPool",
]);

/** Elementwise binary ops that may scale or shift channels by a broadcast constant. */
const BINARY: ReadonlySet<string> = new Set(["Mul", "Add", "Sub", "Div"]);

interface Link {
  parent: Value;
  delta: number;
}

/**
 * Find the groups of coupled channels of the main graph (types must be
 * inferred). Channels of a value are its axis 1; graph inputs and outputs are
 * barriers, as is any op this function cannot see through (named in
 * `barriers`).
 *
 * @example A conv chain is one group from `c1` to `c2`
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../../ir/parser.ts";
 * import { channelGroups } from "./channel_groups.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[1,1,4,4]) -> (%y) {
 *   %w1 = const f32[2,1,1,1] dense<1.0>
 *   %w2 = const f32[1,2,1,1] dense<1.0>
 *   %c1 = Conv(%x, %w1) : f32[1,2,4,4]
 *   %r = Relu(%c1) : f32[1,2,4,4]
 *   %y = Conv(%r, %w2) : f32[1,1,4,4] name "c2"
 *   return %y
 * }
 * }`);
 * const { groups } = channelGroups(m);
 * const g = groups.find((g) => g.producers.some((p) => p.op.name === "c1"))!;
 * assert.equal(g.size, 2);
 * assert.deepEqual(g.consumers.map((c) => c.op.name), ["c2"]);
 * assert.equal(g.prunable, true);
 * ```
 */
export function channelGroups(module: Module): ChannelGroupsResult {
  const graph = module.graph;
  const link = new Map<Value, Link>();
  const extent = new Map<Value, number>();
  const conflicts = new Map<Value, string>();

  const channelsOf = (v: Value | null): number | null => {
    if (v === null || isConstant(v)) return null;
    const t = v.type;
    if (!isTensorType(t) || t.shape === null || t.shape.length < 2) return null;
    const c = t.shape[1];
    return typeof c === "number" ? c : null;
  };
  const node = (v: Value): void => {
    if (!extent.has(v) && !link.has(v)) extent.set(v, channelsOf(v) ?? 0);
  };
  const find = (v: Value): { root: Value; offset: number } => {
    node(v);
    let offset = 0;
    let r = v;
    for (let l = link.get(r); l !== undefined; l = link.get(r)) {
      offset += l.delta;
      r = l.parent;
    }
    return { root: r, offset };
  };
  /** Channel j of `a` is channel j + d of `b`. */
  const unite = (a: Value, b: Value, d: number, op: Op): void => {
    const fa = find(a);
    const fb = find(b);
    const delta = d + fb.offset - fa.offset;
    if (fa.root === fb.root) {
      if (delta !== 0) conflicts.set(fa.root, `op "${op.name}" (${op.type}) maps channels two ways`);
      return;
    }
    const [child, parent, dd] = delta >= 0 ? [fa.root, fb.root, delta] : [fb.root, fa.root, -delta];
    link.set(child, { parent, delta: dd });
    extent.set(parent, Math.max(extent.get(parent)!, dd + extent.get(child)!));
    extent.delete(child);
    const c = conflicts.get(child);
    if (c !== undefined) conflicts.set(parent, c);
  };

  type Pending<T> = { value: Value; local: number; item: Omit<T, "offset"> };
  const producers: Pending<ChannelProducer>[] = [];
  const consumers: Pending<ChannelConsumer>[] = [];
  const members: Pending<ChannelMember>[] = [];
  const barriers: { value: Value; op: string; reason: string }[] = [];
  /** Flatten/Reshape results that view a channel value as features (their readers are recorded on the input). */
  const views = new Set<Value>();
  const bar = (v: Value | null, op: Op | string, reason: string): void => {
    if (v === null || channelsOf(v) === null) return;
    node(v);
    barriers.push({ value: v, op: typeof op === "string" ? op : op.name, reason });
  };
  /** An omitted operand or a constant. */
  const isConst = (v: Value | null): boolean => v === null || isConstant(v);
  const barAll = (op: Op, reason: string): void => {
    for (const v of op.operands) bar(v, op, reason);
    for (const r of op.results) bar(r, op, reason);
  };
  const deadExtras = (op: Op): boolean => op.results.slice(1).every((r) => r.isDead);

  for (const v of graph.inputs) bar(v, v.name, "graph input");
  for (const op of graph.ops) {
    if (!isDefaultDomain(op.domain)) {
      barAll(op, `op "${op.name}" (${op.qualifiedType}) has no channel rule`);
      continue;
    }
    const x = op.operand(0);
    const cx = channelsOf(x);
    const y = op.results[0] ?? null;
    const cy = channelsOf(y);
    const what = `op "${op.name}" (${op.type})`;
    switch (op.type) {
      case "Conv": {
        const group = op.int("group", 1);
        if (cx === null || cy === null || !isConst(op.operand(1)) || !isConst(op.operand(2))) {
          barAll(op, `${what}: weights not constant or shapes unknown`);
        } else if (group === 1) {
          consumers.push({ value: x!, local: 0, item: { op, operand: 0, size: cx, featuresPerChannel: 1 } });
          node(y!);
          producers.push({ value: y!, local: 0, item: { op, kind: "conv", size: cy } });
        } else if (group === cx && cx === cy) {
          members.push({ value: x!, local: 0, item: { op, role: "depthwise", size: cx } });
          unite(y!, x!, 0, op);
        } else {
          barAll(op, `${what}: grouped conv (group ${group}) is not depthwise`);
        }
        break;
      }
      case "Gemm":
      case "MatMul": {
        const w = op.operand(1);
        const wt = w?.type;
        const ok = isConst(w) && isConst(op.operand(2)) && isTensorType(wt) && wt.shape?.length === 2 &&
          !op.flag("transA") && isTensorType(x?.type) && x.type.shape?.length === 2;
        if (!ok) {
          barAll(op, `${what}: needs a rank-2 input and constant rank-2 weights`);
          break;
        }
        if (cx !== null && !views.has(x!)) {
          consumers.push({ value: x!, local: 0, item: { op, operand: 0, size: cx, featuresPerChannel: 1 } });
        }
        if (cy !== null) {
          node(y!);
          producers.push({ value: y!, local: 0, item: { op, kind: op.type === "Gemm" ? "gemm" : "matmul", size: cy } });
        }
        break;
      }
      case "Flatten":
      case "Reshape": {
        const t = x?.type;
        const rank = isTensorType(t) ? t.shape?.length ?? 0 : 0;
        const viewOk = op.type === "Flatten" ? op.int("axis", 1) === 1 : reshapeToFeatures(op);
        if (cx === null) break;
        if (!viewOk || !isTensorType(t)) {
          barAll(op, `${what}: only a flatten to [N, C*H*W] passes channels`);
          break;
        }
        const spatial = t.shape!.slice(2);
        if (!spatial.every((d) => typeof d === "number")) {
          barAll(op, `${what}: spatial size unknown`);
          break;
        }
        const fpc = (spatial as number[]).reduce((a, b) => a * b, 1);
        if (rank === 2) {
          unite(y!, x!, 0, op);
          break;
        }
        views.add(y!);
        for (const use of y!.uses) {
          const u = use.op;
          if ((u.type === "Gemm" || u.type === "MatMul") && use.index === 0) {
            consumers.push({ value: x!, local: 0, item: { op: u, operand: 0, size: cx, featuresPerChannel: fpc } });
          } else {
            bar(x, u, `op "${u.name}" (${u.type}) reads flattened features`);
          }
        }
        if (graph.outputs.includes(y!)) bar(x, y!.name, "flattened graph output");
        break;
      }
      case "BatchNormalization":
        if (cx === null || cy === null || !deadExtras(op) || ![1, 2, 3, 4].every((i) => isConst(op.operand(i)))) {
          barAll(op, `${what}: training outputs used or parameters not constant`);
          break;
        }
        members.push({ value: x!, local: 0, item: { op, role: "bn", size: cx } });
        unite(y!, x!, 0, op);
        break;
      case "Concat": {
        const axis = op.int("axis", 0);
        const rank = isTensorType(y?.type) ? y.type.shape?.length ?? 0 : 0;
        const sizes = op.operands.map(channelsOf);
        if (cy === null || (axis !== 1 && axis !== 1 - rank) || sizes.some((s) => s === null)) {
          barAll(op, `${what}: concatenation not on the channel axis`);
          break;
        }
        let off = 0;
        op.operands.forEach((v, i) => {
          unite(v!, y!, off, op);
          off += sizes[i]!;
        });
        members.push({ value: y!, local: 0, item: { op, role: "concat", size: cy } });
        break;
      }
      case "Split": {
        const axis = op.int("axis", 0);
        if (cx === null || axis !== 1 || op.results.some((r) => channelsOf(r) === null)) {
          barAll(op, `${what}: split not on the channel axis`);
          break;
        }
        let off = 0;
        for (const r of op.results) {
          unite(r, x!, off, op);
          off += channelsOf(r)!;
        }
        members.push({ value: x!, local: 0, item: { op, role: "split", size: cx } });
        break;
      }
      case "Slice": {
        const sl = channelSlice(op, cx);
        if (cx === null || cy === null || sl === null) {
          barAll(op, `${what}: only a constant unit-step slice on the channel axis passes channels`);
          break;
        }
        if (sl.axes.includes(1)) unite(y!, x!, sl.start, op);
        else unite(y!, x!, 0, op);
        members.push({ value: x!, local: 0, item: { op, role: "slice", size: cx } });
        break;
      }
      case "Gather": {
        const idx = op.operand(1);
        if (
          cx !== null && cy !== null && op.int("axis", 0) === 1 && isConst(idx) && idx!.constant!.shape.length === 1
        ) {
          bar(x, op, `${what}: a channel selection keeps its input whole`);
          node(y!);
          producers.push({ value: y!, local: 0, item: { op, kind: "gather", size: cy } });
        } else barAll(op, `${what}: gather not a constant channel selection`);
        break;
      }
      case "Sum":
      case "Add":
      case "Mul":
      case "Sub":
      case "Div": {
        if (cy === null) {
          barAll(op, `${what}: shapes unknown`);
          break;
        }
        const data = op.operands.filter((v) => !isConst(v));
        const consts = op.operands.map((v, i) => ({ v, i })).filter(({ v }) => isConst(v));
        if (data.length === 1 && consts.length === 1 && BINARY.has(op.type)) {
          const c = perChannel(consts[0].v!, cy, isTensorType(y!.type) ? y!.type.shape!.length : 0);
          if (
            c === null || channelsOf(data[0]) !== cy || (op.type !== "Mul" && op.type !== "Add" && consts[0].i === 0)
          ) {
            barAll(op, `${what}: constant operand not per-channel`);
            break;
          }
          unite(y!, data[0]!, 0, op);
          members.push({
            value: data[0]!,
            local: 0,
            item: c
              ? { op, role: "param", size: cy, paramOperand: consts[0].i }
              : { op, role: "elementwise", size: cy },
          });
        } else if (consts.length === 0 && (op.type === "Add" || op.type === "Sum") && sameShapes(op)) {
          for (const v of op.operands) unite(v!, y!, 0, op);
          members.push({ value: y!, local: 0, item: { op, role: "add", size: cy } });
        } else {
          barAll(op, `${what}: operands do not share channels one to one`);
        }
        break;
      }
      default:
        if (
          PASS_THROUGH.has(op.type) && cx !== null && cx === cy && deadExtras(op) && op.operands.slice(1).every(isConst)
        ) {
          unite(y!, x!, 0, op);
          members.push({ value: x!, local: 0, item: { op, role: "elementwise", size: cx } });
        } else {
          barAll(op, `${what} has no channel rule`);
        }
    }
  }
  for (const v of graph.outputs) bar(v, v.name, "graph output");

  // Build groups from the roots.
  type Mutable = {
    id: number;
    size: number;
    values: { value: Value; offset: number }[];
    producers: ChannelProducer[];
    consumers: ChannelConsumer[];
    members: ChannelMember[];
    bns: ChannelMember[];
    prunable: boolean;
  };
  const groups: Mutable[] = [];
  const byRoot = new Map<Value, Mutable>();
  const place = new Map<Value, { group: Mutable; offset: number }>();
  const all = [...graph.inputs, ...graph.ops.flatMap((op) => op.results)].filter((v) => extent.has(v) || link.has(v));
  for (const v of all) {
    const { root, offset } = find(v);
    let g = byRoot.get(root);
    if (g === undefined) {
      g = {
        id: groups.length,
        size: extent.get(root)!,
        values: [],
        producers: [],
        consumers: [],
        members: [],
        bns: [],
        prunable: true,
      };
      byRoot.set(root, g);
      groups.push(g);
    }
    g.values.push({ value: v, offset });
    place.set(v, { group: g, offset });
  }
  const locate = (v: Value): { group: Mutable; offset: number } | undefined => place.get(v);
  for (const p of producers) {
    const at = locate(p.value);
    if (at) at.group.producers.push({ ...p.item, offset: at.offset + p.local } as ChannelProducer);
  }
  for (const c of consumers) {
    const at = locate(c.value);
    if (at) at.group.consumers.push({ ...c.item, offset: at.offset + c.local } as ChannelConsumer);
  }
  for (const m of members) {
    const at = locate(m.value);
    if (!at) continue;
    const item = { ...m.item, offset: at.offset + m.local } as ChannelMember;
    at.group.members.push(item);
    if (item.role === "bn") at.group.bns.push(item);
  }
  const barrierList: ChannelBarrier[] = [];
  for (const b of barriers) {
    const at = locate(b.value);
    if (!at) continue;
    at.group.prunable = false;
    barrierList.push({ op: b.op, reason: b.reason, group: at.group.id });
  }
  for (const [root, reason] of conflicts) {
    const g = byRoot.get(find(root).root);
    if (g === undefined) continue;
    g.prunable = false;
    barrierList.push({ op: reason.split('"')[1], reason, group: g.id });
  }
  for (const g of groups) if (g.producers.length === 0) g.prunable = false;
  return {
    groups,
    barriers: barrierList,
    groupOf(value: Value): { group: ChannelGroup; offset: number } | null {
      return place.get(value) ?? null;
    },
  };
}

/**
 * The channel-groups analysis, for `ctx.analysis(channelGroupsAnalysis)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module } from "../../ir/module.ts";
 * import { channelGroupsAnalysis } from "./channel_groups.ts";
 * assert.equal(channelGroupsAnalysis.compute(new Module()).groups.length, 0);
 * ```
 */
export const channelGroupsAnalysis: Analysis<ChannelGroupsResult> = {
  name: "channel-groups",
  compute: channelGroups,
};

/**
 * Whether `c` broadcasts per channel against a rank-`rank` value with `channels`
 * channels: true when it has a channel dimension (`[C,1,1]`, `[1,C,1,1]`, `[C]`
 * for rank 2), false when it is uniform (scalar or all ones), null otherwise.
 */
function perChannel(c: Value, channels: number, rank: number): boolean | null {
  const shape = c.constant!.shape;
  if (shape.every((d) => d === 1)) return false;
  if (shape.length > rank) return null;
  // Align trailing dimensions (numpy broadcasting); the channel axis 1 sits at
  // position shape.length - (rank - 1) of the constant.
  const ci = shape.length - (rank - 1);
  if (ci < 0) return null;
  return shape.every((d, i) => (i === ci ? d === channels : d === 1)) ? true : null;
}

function sameShapes(op: Op): boolean {
  const shapes = op.operands.map((v) => (isTensorType(v?.type) ? JSON.stringify(v.type.shape) : "?"));
  return shapes.every((s) => s === shapes[0] && s !== "?" && s !== "null");
}

/** Reshape with a constant target `[0|1|-1, -1]`: a flatten to features. */
function reshapeToFeatures(op: Op): boolean {
  const s = op.operand(1);
  if (s === null || s.constant === null) return false;
  const dims = intValues(s.constant);
  return dims.length === 2 && dims[1] === -1 && dims[0] >= -1 && dims[0] <= 1;
}

/** A Slice with constant unit-step parameters: its start on axis 1 and the axes it slices. */
export function channelSlice(op: Op, channels: number | null): { start: number; end: number; axes: number[] } | null {
  if (channels === null) return null;
  const starts = op.operand(1)?.constant;
  const ends = op.operand(2)?.constant;
  const axesT = op.operand(3)?.constant;
  const steps = op.operand(4)?.constant;
  if (!starts || !ends || (op.operand(3) && !axesT) || (op.operand(4) && !steps)) return null;
  const s = intValues(starts);
  const e = intValues(ends);
  const axes = axesT ? intValues(axesT) : s.map((_, i) => i);
  if (steps && intValues(steps).some((x) => x !== 1)) return null;
  const i = axes.indexOf(1);
  if (i < 0) return { start: 0, end: channels, axes };
  const clamp = (v: number): number => Math.max(0, Math.min(channels, v < 0 ? v + channels : v));
  return { start: clamp(s[i]), end: clamp(e[i]), axes };
}
