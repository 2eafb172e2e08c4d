/**
 * The zero-channel test of `prune` on torchvision architectures (issue 15):
 * 30% of every BatchNormalization's channels get gamma = beta = 0, then
 * `canonicalize,prune{threshold=1e-6}` must remove them and leave the
 * interpreter's outputs unchanged. Shared by tests/prune_zoo_test.ts (small
 * committed fixtures) and `deno run -A tests/prune_zoo.ts DIR` (full-width
 * exports from tests/fixtures/zoo/export.py --full DIR), which prints a table.
 * @module
 */
import { defaultRegistry } from "../driver/compile.ts";
import { interpret } from "../ir/interpreter.ts";
import type { Module } from "../ir/module.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { replaceConstant } from "../ir/rewriter.ts";
import { inferShapes } from "../ir/shape.ts";
import { fromFloat64, type Tensor, tensor, toFloat64 } from "../ir/tensor.ts";
import { isTensorType } from "../ir/types.ts";
import { type PassRecord, runPipeline } from "../passes/manager.ts";
import { channelGroups } from "../passes/analysis/channel_groups.ts";
import { parsePipeline } from "../passes/pipeline.ts";

/** A seeded uniform generator in [0, 1) (mulberry32). */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Total BN channels of `m`. */
export function bnChannels(m: Module): number {
  let n = 0;
  for (const op of m.graph.ops) if (op.type === "BatchNormalization") n += op.operand(1)!.constant!.data.length;
  return n;
}

/**
 * Give `round(0.3 * C)` channels of every BN (chosen at random) gamma = beta = 0; returns how many.
 * A BN constant shared by several BNs is copied first.
 */
export function zeroChannels(m: Module, fraction = 0.3, seed = 1): number {
  const rand = random(seed);
  let zeroed = 0;
  for (const op of m.graph.ops) {
    if (op.type !== "BatchNormalization") continue;
    const gamma = toFloat64(op.operand(1)!.constant!);
    const beta = toFloat64(op.operand(2)!.constant!);
    const c = gamma.length;
    const order = [...Array(c).keys()].map((i) => ({ i, r: rand() })).sort((a, b) => a.r - b.r);
    const k = Math.round(fraction * c);
    for (let j = 0; j < k; j++) gamma[order[j].i] = beta[order[j].i] = 0;
    zeroed += k;
    replaceConstant(op, 1, fromFloat64(op.operand(1)!.constant!.dtype, [c], gamma), { name: `${op.name}.gamma0` });
    replaceConstant(op, 2, fromFloat64(op.operand(2)!.constant!.dtype, [c], beta), { name: `${op.name}.beta0` });
  }
  return zeroed;
}

/**
 * Coupling-aware zeroing: in every channel group that BNs score, `round(fraction * units)` units (a channel, or
 * channel j of every group of a grouped conv) chosen at random get gamma = beta = 0 in every BN of the group, so
 * every zeroed channel is removable. Returns how many BN channels were zeroed.
 */
export function zeroCoupledChannels(m: Module, fraction = 0.3, seed = 1): number {
  const rand = random(seed);
  const updates = new Map<Module["graph"]["ops"][number], { gamma: Float64Array; beta: Float64Array }>();
  for (const g of channelGroups(m).groups) {
    if (g.bns.length === 0 || !g.prunable) continue;
    const units = [...new Set(g.units ?? [...Array(g.size).keys()])].map((u) => ({ u, r: rand() }));
    units.sort((a, b) => a.r - b.r);
    const chosen = new Set(units.slice(0, Math.round(fraction * units.length)).map((x) => x.u));
    for (const b of g.bns) {
      const u = updates.get(b.op) ?? {
        gamma: toFloat64(b.op.operand(1)!.constant!),
        beta: toFloat64(b.op.operand(2)!.constant!),
      };
      updates.set(b.op, u);
      b.channels.forEach((c, i) => {
        if (chosen.has(g.units?.[c] ?? c)) u.gamma[i] = u.beta[i] = 0;
      });
    }
  }
  let zeroed = 0;
  for (const [op, { gamma, beta }] of updates) {
    zeroed += gamma.filter((v) => v === 0).length;
    replaceConstant(op, 1, fromFloat64(op.operand(1)!.constant!.dtype, [gamma.length], gamma), {
      name: `${op.name}.gamma0`,
    });
    replaceConstant(op, 2, fromFloat64(op.operand(2)!.constant!.dtype, [beta.length], beta), {
      name: `${op.name}.beta0`,
    });
  }
  return zeroed;
}

/** A seeded random input for the model's first input. */
export function randomInput(m: Module, seed = 2): Tensor {
  const t = m.graph.inputs[0].type;
  if (!isTensorType(t) || t.shape === null) throw new Error("input shape unknown");
  const shape = t.shape.map((d) => (typeof d === "number" ? d : 1));
  const rand = random(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return tensor("f32", shape, Float32Array.from({ length: n }, () => rand() * 2 - 1));
}

/** What one zero-channel run found. */
export interface ZooResult {
  /** Model name. */
  name: string;
  /** BN channels before and after. */
  channelsBefore: number;
  channelsAfter: number;
  /** Channels zeroed, and how many of them were removed. */
  zeroed: number;
  removed: number;
  /** Barriers the pass reported (`op: reason`). */
  barriers: string[];
  /** Milliseconds the prune pass took. */
  pruneMs: number;
  /** Largest |before - after| of the outputs, and the largest |before|. */
  maxDiff: number;
  maxAbs: number;
  /** The pruned module and the input used. */
  module: Module;
  input: Tensor;
  /** Outputs of the original model on `input`. */
  reference: Float32Array;
  record: PassRecord;
}

/** Zero 30% of every BN's channels of the model in `bytes`, prune at threshold 1e-6, compare outputs. */
export async function zooRun(
  name: string,
  bytes: Uint8Array,
  pipeline = "canonicalize,prune{threshold=1e-6}",
  coupled = false,
): Promise<ZooResult> {
  const registry = defaultRegistry();
  const m = importOnnx(bytes);
  if (coupled) await runPipeline(m, parsePipeline("canonicalize", registry), { registry, verifyEach: false });
  inferShapes(m, { registry: registry.ops, strict: false });
  const zeroed = coupled ? zeroCoupledChannels(m) : zeroChannels(m);
  const channelsBefore = bnChannels(m);
  const input = randomInput(m);
  const inName = m.graph.inputs[0].name;
  const outName = m.graph.outputs[0].name;
  const reference = interpret(m, { [inName]: input }, { registry: registry.ops })[outName].data as Float32Array;
  const records = await runPipeline(m, parsePipeline(pipeline, registry), { registry, verifyEach: false });
  const record = records[records.length - 1];
  const after = interpret(m, { [inName]: input }, { registry: registry.ops })[outName].data as Float32Array;
  let maxDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < after.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(after[i] - reference[i]));
    maxAbs = Math.max(maxAbs, Math.abs(reference[i]));
  }
  if (after.length !== reference.length) maxDiff = Infinity;
  const channelsAfter = bnChannels(m);
  return {
    name,
    channelsBefore,
    channelsAfter,
    zeroed,
    removed: channelsBefore - channelsAfter,
    barriers: (record.stats.barriers as string[] | undefined) ?? [],
    pruneMs: record.ms,
    maxDiff,
    maxAbs,
    module: m,
    input,
    reference,
    record,
  };
}

if (import.meta.main) {
  const coupled = Deno.args.includes("--coupled");
  const args = Deno.args.filter((a) => a !== "--coupled");
  const dir = args[0] ?? decodeURIComponent(new URL("./fixtures/zoo/", import.meta.url).pathname);
  const only = args.slice(1);
  console.log("| model | BN channels | zeroed | removed | barriers | prune ms | max |diff| (max |y|) |");
  console.log("|---|---|---|---|---|---|---|");
  for (const entry of [...Deno.readDirSync(dir)].sort((a, b) => a.name.localeCompare(b.name))) {
    if (!entry.name.endsWith(".onnx")) continue;
    const name = entry.name.replace(/\.onnx$/, "");
    if (only.length > 0 && !only.includes(name)) continue;
    const r = await zooRun(name, Deno.readFileSync(`${dir}/${entry.name}`), undefined, coupled);
    console.log(
      `| ${name} | ${r.channelsBefore} | ${r.zeroed} | ${r.removed} | ${r.barriers.length} | ${
        r.pruneMs.toFixed(0)
      } | ${r.maxDiff.toExponential(1)} (${r.maxAbs.toExponential(1)}) |`,
    );
    for (const b of r.barriers.slice(0, 5)) console.log(`    barrier ${b}`);
  }
}
