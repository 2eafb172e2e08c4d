/**
 * `ChannelGroups`: which channels of a CNN must be removed together (DepGraph
 * on ONNX). Each op says how it carries channels through its
 * {@linkcode OpDef.channels} rule; this module joins the channel spaces of
 * values with a union-find whose links are channel maps ("channel j of value a
 * is channel map[j] of value b"): offsets for Concat/Split/Slice, the identity
 * for elementwise ops, a permutation for a channel shuffle. Passes choose
 * indices; this module only says what is coupled.
 * @module
 */
import { builtinOps } from "../../ir/builtin_ops.ts";
import { isConstant, type Op, type Value } from "../../ir/graph.ts";
import type { Module } from "../../ir/module.ts";
import type { ChannelContext, ChannelMapping, OpDef, OpRegistry } from "../../ir/op_def.ts";
import { isTensorType } from "../../ir/types.ts";
import type { Analysis } from "../pass.ts";

export { channelSlice } from "../../ir/ops/channels.ts";

/** An op whose output channels are the group's channels `[offset, offset + size)`. */
export interface ChannelProducer {
  /** The producing op. */
  readonly op: Op;
  /** `conv` (Conv or another op with a `linear` rule), `gemm`/`matmul` (out-features), `gather` (a channel selection). */
  readonly kind: "conv" | "gemm" | "matmul" | "gather";
  /** First group channel it produces. */
  readonly offset: number;
  /** Channels it produces. */
  readonly size: number;
  /** Group channel of each of its channels (see {@linkcode ChannelValue.channels}). */
  readonly channels: readonly number[];
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
  /** Group channel of each of its channels (see {@linkcode ChannelValue.channels}). */
  readonly channels: readonly number[];
}

/** A pass-through op whose per-channel parameters or attributes follow the group's channels. */
export interface ChannelMember {
  /** The op. */
  readonly op: Op;
  /** How it carries channels: `bn`, `param` (per-channel constants), `elementwise`, `offsets` (Concat/Split/Slice), `permute`. */
  readonly role: "bn" | "param" | "elementwise" | "offsets" | "permute";
  /** First group channel of its channel-carrying input. */
  readonly offset: number;
  /** Channels of that input. */
  readonly size: number;
  /** For `param`: operand index of the (first) per-channel constant. */
  readonly paramOperand?: number;
  /** Group channel of each of its channels (see {@linkcode ChannelValue.channels}). */
  readonly channels: readonly number[];
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

/** A value carrying some of a group's channels on axis 1. */
export interface ChannelValue {
  /** The value. */
  readonly value: Value;
  /** Group channel of its channel 0 (its first channel when they are contiguous). */
  readonly offset: number;
  /** Group channel of each of its channels. */
  readonly channels: readonly number[];
}

/** A set of coupled channels: removing channel k removes it from every member. */
export interface ChannelGroup {
  /** Index in the result. */
  readonly id: number;
  /** Channels in the group. */
  readonly size: number;
  /** Values carrying the group's channels on axis 1, in graph order. */
  readonly values: readonly ChannelValue[];
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
  /**
   * Channels that can only be removed together (channel `j` of every group of a
   * grouped convolution): the representative of each channel's unit, or null
   * when every channel is its own unit.
   */
  readonly units: readonly number[] | null;
}

/** The result of {@linkcode channelGroups}. */
export interface ChannelGroupsResult {
  /** Groups, in order of their first value in the graph. */
  readonly groups: readonly ChannelGroup[];
  /** Every barrier found. */
  readonly barriers: readonly ChannelBarrier[];
  /** Group and channels of a value, or null when it carries no channels. */
  groupOf(
    value: Value,
  ): { readonly group: ChannelGroup; readonly offset: number; readonly channels: readonly number[] } | null;
  /** The channel mapping of each op whose rule applied (ops covered by another op's pattern are absent). */
  readonly mappings: ReadonlyMap<Op, ChannelMapping>;
  /** The flattened value a view result reads, with its features per channel. */
  viewOf(value: Value): { readonly source: Value; readonly features: number } | null;
}

/** A union-find link: channel j of the child is channel `map[j]` of `parent`. */
interface Link {
  parent: Value;
  map: Int32Array;
}

/** What a rule said about one op, kept for the passes. */
type Mapped = { readonly op: Op; readonly mapping: ChannelMapping };

/**
 * Find the groups of coupled channels of the main graph (types must be
 * inferred). Channels of a value are its axis 1; each op's
 * {@linkcode OpDef.channels} rule in `registry` says how it carries them.
 * Graph inputs and outputs are barriers, as is every op without a rule or
 * whose rule refuses it (named in `barriers`).
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
export function channelGroups(module: Module, registry: OpRegistry = builtinOps): ChannelGroupsResult {
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
  /** Root of `v` and the root channel of each channel of `v` (its own channels, or the root's extent for a root). */
  const find = (v: Value): { root: Value; map: Int32Array } => {
    node(v);
    const l = link.get(v);
    if (l === undefined) return { root: v, map: Int32Array.from({ length: extent.get(v)! }, (_, i) => i) };
    const up = find(l.parent);
    const map = l.map.map((c) => up.map[c]);
    link.set(v, { parent: up.root, map }); // path compression
    return { root: up.root, map };
  };
  /** Channel j of `a` is channel `map[j]` of `b`. */
  const unite = (a: Value, b: Value, map: ArrayLike<number>, op: Op): void => {
    const fa = find(a);
    const fb = find(b);
    const conflict = (): void => {
      conflicts.set(fb.root, `op "${op.name}" (${op.type}) maps channels two ways`);
    };
    if (fa.root === fb.root) {
      for (let j = 0; j < map.length; j++) if (fa.map[j] !== fb.map[map[j]]) return conflict();
      return;
    }
    // Merge root A under root B: A's channels reached through `a` go where `map` says, the rest to new channels.
    const size = extent.get(fa.root)!;
    const toB = new Int32Array(size).fill(-1);
    const taken = new Set<number>();
    for (let j = 0; j < map.length; j++) {
      const ra = fa.map[j];
      const rb = fb.map[map[j]];
      if ((toB[ra] !== -1 && toB[ra] !== rb) || (toB[ra] === -1 && taken.has(rb))) return conflict();
      toB[ra] = rb;
      taken.add(rb);
    }
    // Channels of A not reached through `a` keep their place relative to it when it is a shift (the old concat of
    // a concat: [x, f1] inside [x, f1, f2]); otherwise they become new channels of B.
    let next = extent.get(fb.root)!;
    const shifts = new Set<number>();
    for (let r = 0; r < size; r++) if (toB[r] !== -1) shifts.add(toB[r] - r);
    const [shift] = shifts;
    if (shifts.size === 1) {
      for (let r = 0; r < size; r++) {
        if (toB[r] !== -1 || r + shift < 0 || taken.has(r + shift)) continue;
        toB[r] = r + shift;
        taken.add(r + shift);
        next = Math.max(next, r + shift + 1);
      }
    }
    for (let r = 0; r < size; r++) if (toB[r] === -1) toB[r] = next++;
    link.set(fa.root, { parent: fb.root, map: toB });
    extent.set(fb.root, next);
    extent.delete(fa.root);
    const c = conflicts.get(fa.root);
    if (c !== undefined) conflicts.set(fb.root, c);
  };
  const identity = (n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => i);

  type Pending<T> = { value: Value; item: Omit<T, "offset" | "channels"> };
  const producers: Pending<ChannelProducer>[] = [];
  const consumers: Pending<ChannelConsumer>[] = [];
  const members: Pending<ChannelMember>[] = [];
  const barriers: { value: Value; op: string; reason: string }[] = [];
  const ties: { value: Value; a: number; b: number }[] = [];
  const mapped: Mapped[] = [];
  /** Flatten/Reshape results that view a channel value as features. */
  const views = new Map<Value, { source: Value; features: number }>();
  const covered = new Set<Op>();
  const bar = (v: Value | null, op: Op | string, reason: string): void => {
    if (v === null) return;
    const view = views.get(v);
    if (view !== undefined) v = view.source;
    if (channelsOf(v) === null) return;
    node(v);
    barriers.push({ value: v, op: typeof op === "string" ? op : op.name, reason });
  };
  const barAll = (op: Op, reason: string): void => {
    for (const v of op.operands) bar(v, op, reason);
    for (const r of op.results) bar(r, op, reason);
  };
  const ctx = (op: Op): ChannelContext => ({
    opset: module.opset(op.domain),
    channelsOf,
  });

  for (const v of graph.inputs) bar(v, v.name, "graph input");
  for (const op of graph.ops) {
    if (covered.has(op)) continue;
    const what = `op "${op.name}" (${op.qualifiedType})`;
    const def: OpDef | undefined = registry.get(op);
    if (def?.channels === undefined) {
      barAll(op, `${what} has no channel rule`);
      continue;
    }
    let m: ChannelMapping | string;
    try {
      m = def.channels(op, ctx(op));
    } catch (e) {
      m = e instanceof Error ? e.message : String(e);
    }
    if (typeof m === "string") {
      barAll(op, `${what}: ${m}`);
      continue;
    }
    // A flattened view may only flow into a linear map's input, or through a parameter-free channelwise op.
    const viewIn = op.operands.map((v) => (v === null ? undefined : views.get(v)));
    const passesView = m.kind === "same" && (m.params ?? []).length === 0 && m.operands.length === 1 &&
      viewIn[m.operands[0]] !== undefined && viewIn.filter((v) => v !== undefined).length === 1;
    const readsView = m.kind === "linear" && viewIn[0] !== undefined && (m.groups ?? 1) === 1;
    if (!passesView && !readsView && viewIn.some((v) => v !== undefined)) {
      op.operands.forEach((v, i) => viewIn[i] && bar(v, op, `${what} reads flattened features`));
      barAll(op, `${what} reads flattened features`);
      continue;
    }
    if (passesView && m.kind === "same") {
      for (const r of m.results) views.set(op.results[r], viewIn[m.operands[0]]!);
      mapped.push({ op, mapping: m });
      continue;
    }
    mapped.push({ op, mapping: m });
    switch (m.kind) {
      case "same": {
        const shared = [...m.operands.map((i) => op.operand(i)!), ...m.results.map((i) => op.results[i])];
        const anchor = shared[0];
        const n = channelsOf(anchor)!;
        for (const v of shared.slice(1)) unite(v, anchor, identity(n), op);
        const params = m.params ?? [];
        const role = op.type === "BatchNormalization" ? "bn" : params.length > 0 ? "param" : "elementwise";
        members.push({
          value: anchor,
          item: { op, role, size: n, ...(params.length > 0 ? { paramOperand: params[0].operand } : {}) },
        });
        break;
      }
      case "linear": {
        const x = op.operand(0);
        const view = x === null ? undefined : views.get(x);
        const source = view?.source ?? x;
        const cx = channelsOf(source);
        if (cx !== null) {
          consumers.push({
            value: source!,
            item: { op, operand: 0, size: cx, featuresPerChannel: view?.features ?? 1 },
          });
        }
        const y = op.results[0];
        const cy = channelsOf(y);
        if (cy !== null) {
          node(y);
          const kind = op.type === "Gemm" ? "gemm" : op.type === "MatMul" ? "matmul" : "conv";
          producers.push({ value: y, item: { op, kind, size: cy } });
        }
        const groups = m.groups ?? 1;
        for (const [v, c] of [[source, cx], [y, cy]] as const) {
          if (groups === 1 || v === null || c === null) continue;
          const per = c / groups;
          for (let k = 1; k < groups; k++) for (let j = 0; j < per; j++) ties.push({ value: v, a: j, b: k * per + j });
        }
        break;
      }
      case "offsets":
        for (const l of m.links) unite(l.from, l.to, identity(channelsOf(l.from)!).map((j) => j + l.offset), op);
        members.push({ value: op.operand(0)!, item: { op, role: "offsets", size: channelsOf(op.operand(0))! } });
        break;
      case "permute":
        unite(m.to, op.operand(0)!, m.perm, op);
        for (const t of m.through ?? []) covered.add(t);
        members.push({ value: op.operand(0)!, item: { op, role: "permute", size: m.perm.length } });
        break;
      case "select": {
        const y = op.results[0];
        bar(op.operand(0), op, `${what}: a channel selection keeps its input whole`);
        node(y);
        producers.push({ value: y, item: { op, kind: "gather", size: channelsOf(y)! } });
        break;
      }
      case "flatten":
        views.set(op.results[0], { source: op.operand(0)!, features: m.features });
        break;
      case "none":
        for (const v of op.operands) if (channelsOf(v) !== null) bar(v, op, `${what} reads every channel`);
        break;
    }
  }
  for (const v of graph.outputs) bar(v, v.name, views.has(v) ? "flattened graph output" : "graph output");

  // Build groups from the roots.
  type Mutable = {
    id: number;
    size: number;
    values: ChannelValue[];
    producers: ChannelProducer[];
    consumers: ChannelConsumer[];
    members: ChannelMember[];
    bns: ChannelMember[];
    prunable: boolean;
    units: number[] | null;
  };
  const groups: Mutable[] = [];
  const byRoot = new Map<Value, Mutable>();
  const place = new Map<Value, { group: Mutable; offset: number; channels: readonly number[] }>();
  const all = [...graph.inputs, ...graph.ops.flatMap((op) => op.results)].filter((v) => extent.has(v) || link.has(v));
  for (const v of all) {
    const { root, map } = find(v);
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
        units: null,
      };
      byRoot.set(root, g);
      groups.push(g);
    }
    const channels = [...map.subarray(0, channelsOf(v) ?? 0)];
    const at = { group: g, offset: channels[0] ?? 0, channels };
    g.values.push({ value: v, offset: at.offset, channels });
    place.set(v, at);
  }
  const locate = (v: Value): { group: Mutable; offset: number; channels: readonly number[] } | undefined =>
    place.get(v);
  for (const p of producers) {
    const at = locate(p.value);
    if (at) at.group.producers.push({ ...p.item, offset: at.offset, channels: at.channels } as ChannelProducer);
  }
  for (const c of consumers) {
    const at = locate(c.value);
    if (at) at.group.consumers.push({ ...c.item, offset: at.offset, channels: at.channels } as ChannelConsumer);
  }
  for (const m of members) {
    const at = locate(m.value);
    if (!at) continue;
    const item = { ...m.item, offset: at.offset, channels: at.channels } as ChannelMember;
    at.group.members.push(item);
    if (item.role === "bn") at.group.bns.push(item);
  }
  for (const t of ties) {
    const at = locate(t.value);
    if (!at) continue;
    const g = at.group;
    g.units ??= [...Array(g.size).keys()];
    const rep = (c: number): number => {
      while (g.units![c] !== c) c = g.units![c] = g.units![g.units![c]];
      return c;
    };
    const [ra, rb] = [rep(at.channels[t.a]), rep(at.channels[t.b])];
    if (ra !== rb) g.units[Math.max(ra, rb)] = Math.min(ra, rb);
  }
  for (const g of groups) {
    if (g.units === null) continue;
    for (let c = 0; c < g.size; c++) {
      let r = c;
      while (g.units[r] !== r) r = g.units[r];
      g.units[c] = r;
    }
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
  const mappings = new Map(mapped.map(({ op, mapping }) => [op, mapping]));
  return {
    groups,
    barriers: barrierList,
    mappings,
    groupOf(value: Value): { group: ChannelGroup; offset: number; channels: readonly number[] } | null {
      return place.get(value) ?? null;
    },
    viewOf(value: Value): { source: Value; features: number } | null {
      return views.get(value) ?? null;
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
