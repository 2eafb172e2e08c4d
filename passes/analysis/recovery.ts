/**
 * Accuracy recovery from calibration data, shared by the structural passes (`prune`, `svd`): sequential
 * least-squares reconstruction of the layers a pass changed, against the original network's outputs.
 *
 * Memory: one layer's activations at a time, one batch of calibration samples at a time (the interpreter stops at
 * the value it is asked for); a Conv contributes a seeded sample of its output positions per image. Only the normal
 * equations `X^T X` (unknowns^2) and `X^T Y` (unknowns x outputs) are kept.
 * @module
 */
import type { Op, Value } from "../../ir/graph.ts";
import type { OpRegistry } from "../../ir/op_def.ts";
import { isTensorType } from "../../ir/types.ts";
import { Interpreter } from "../../ir/interpreter.ts";
import type { Module } from "../../ir/module.ts";
import { gemm } from "../../ir/ops/gemm_kernel.ts";
import { attr } from "../../ir/attributes.ts";
import { replaceConstant } from "../../ir/rewriter.ts";
import { fromFloat64, type Tensor, toFloat64 } from "../../ir/tensor.ts";
import { cholesky, solveCholesky } from "../linalg.ts";
import type { PassContext, StatValue } from "../pass.ts";

/** Options of {@linkcode reconstruct}. */
export interface ReconstructOptions {
  /** Output positions sampled per image for a Conv (default 64; all when the map is smaller), seeded. */
  positions?: number;
  /** Calibration samples per interpreter run (default 64). */
  batch?: number;
  /** Ridge `lambda` as a fraction of the mean diagonal of `X^T X` (default 1e-2), pulling toward the current weights. */
  ridge?: number;
  /** Seed of the position sampling (default 1). */
  seed?: number;
  /**
   * For a layer that also lost output channels: the original output channel of each of its channels (the target
   * is read there). A layer not listed keeps its outputs.
   */
  outputs?: ReadonlyMap<Op, readonly number[]>;
  /**
   * For a layer with no original of its own (the first factor of an SVD pair): the original op whose output
   * (`width` channels) is the reference, and how rows of it (`count x width`) map to this layer's target rows.
   */
  targets?: ReadonlyMap<Op, RefitTarget>;
  /** Most unknowns per output (weights and bias) of a fit (default {@linkcode MAX_REFIT_UNKNOWNS}). */
  maxUnknowns?: number;
}

/**
 * Most unknowns per output a refit or a data-driven channel choice takes on: the normal equations are `k^2` float64
 * (512 MiB at 8,192) and the choice keeps three of them, so a VGG-16's first fully connected layer (25,089 unknowns:
 * 5 GB each) is left as it is, with a note.
 */
export const MAX_REFIT_UNKNOWNS = 8192;

/** Whether `layer` is small enough to fit (else a note naming it and what was skipped). */
function withinUnknowns(layer: Linear, options: ReconstructOptions, ctx: PassContext, what: string): boolean {
  const limit = options.maxUnknowns ?? MAX_REFIT_UNKNOWNS;
  if (layer.n + 1 <= limit) return true;
  ctx.emit(
    "note",
    `op "${layer.op.name}": ${
      layer.n + 1
    } unknowns per output exceed the ${limit} a least-squares fit takes on; ${what}`,
    layer.op,
  );
  return false;
}

/** A derived refit target: see {@linkcode ReconstructOptions.targets}. */
export interface RefitTarget {
  /** Name of the op in the original module whose output is read. */
  readonly name: string;
  /** Its output channels. */
  readonly width: number;
  /** Rows of that output (`count x width`) to target rows of the layer (`count x` its outputs). */
  readonly map: (y: Float64Array, count: number) => Float64Array;
}

/** What the refit of one layer bought, relative output errors `||Y_hat - Y|| / ||Y||` on the sampled rows. */
export interface LayerRefit {
  /** Rows (samples times positions) the fit saw. */
  readonly rows: number;
  /** Unknowns per output channel (inputs times kernel, plus the bias). */
  readonly unknowns: number;
  /** Before the refit. */
  readonly errorBefore: number;
  /** After it (equal to before when the fit was not adopted). */
  readonly errorAfter: number;
}

/** A layer the least-squares refit understands: a groups=1 2-D Conv or a Gemm without transA. */
interface Linear {
  readonly op: Op;
  readonly kind: "conv" | "gemm";
  /** Outputs (channels). */
  readonly out: number;
  /** Weights per output (without the bias). */
  readonly n: number;
  /** The current weights and bias as the `(n + 1) x out` matrix `M` of `Y = [X 1] M`. */
  readonly current: Float64Array;
}

/**
 * Refit `layers` (ops of `module`, each a Conv or Gemm) one after the other in graph order so that each one's output
 * on `ctx.calibration` matches the output of the op of the same name in `original` (the module before the pass): a
 * ridge-regularized least-squares fit of its weights and bias on the inputs the already-refitted `module` produces
 * (sequential, so errors do not compound). A fit is adopted only when it lowers the error. Fewer rows than unknowns
 * give a warning naming the layer (the ridge keeps the fit defined); a layer of another kind (grouped Conv, MatMul)
 * is left alone with a note.
 *
 * @returns Per layer name, what the refit bought (also recorded by the caller's report).
 *
 * @example Refit a layer whose input channel was removed, against the original
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../../ir/parser.ts";
 * import { cloneModule } from "../../ir/rewriter.ts";
 * import { testPassContext } from "../testing.ts";
 * import { reconstruct } from "./recovery.ts";
 * const text = (w: string, k: number) => `module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[N,2]) -> (%y) {
 *   %w = const f32[1,${k}] dense<${w}>
 *   %y = Gemm(%x, %w) {transB = 1} : f32[N,1]
 *   return %y
 * }
 * }`;
 * const original = parseModule(text("[1.0, 2.0]", 2));
 * const m = parseModule(text("[1.0, 0.0]", 2));
 * const x = { dtype: "f32" as const, shape: [3, 2], data: new Float32Array([1, 1, 2, 2, 3, 3]) };
 * const ctx = testPassContext({ module: m, calibration: { x } });
 * const fit = reconstruct(original, m, [m.graph.ops[0]], ctx, { ridge: 1e-9 });
 * assert.ok(fit.get("y")!.errorAfter < 1e-3 && fit.get("y")!.errorBefore > 0.5);
 * ```
 */
export function reconstruct(
  original: Module,
  module: Module,
  layers: readonly Op[],
  ctx: PassContext,
  options: ReconstructOptions = {},
): Map<string, LayerRefit> {
  const out = new Map<string, LayerRefit>();
  const calibration = ctx.calibration;
  if (calibration === null) return out;
  const ridge = options.ridge ?? 1e-2;
  const names = new Map(original.graph.ops.map((op) => [op.name, op]));
  const order = new Map(module.graph.ops.map((op, i) => [op, i]));
  const sorted = [...new Set(layers)].filter((op) => order.has(op)).sort((a, b) => order.get(a)! - order.get(b)!);
  for (const [index, op] of sorted.entries()) {
    const derived = options.targets?.get(op);
    const target = names.get(derived?.name ?? op.name)?.results[0];
    const keep = options.outputs?.get(op) ?? null;
    const layer = linearOf(op, original, keep);
    if (target === undefined || layer === null) {
      ctx.log(`op "${op.name}": not refit (${target === undefined ? "no original op of that name" : "layout"})`);
      continue;
    }
    if (!withinUnknowns(layer, options, ctx, "not refit")) continue;
    const eq = normalEquations(module, op, layer, original, target, ctx, { ...options, derived, keep, index });
    if (eq === "error") return out;
    const { xtx, xty, yy, rows, k } = eq;
    if (rows === 0) {
      ctx.log(`op "${op.name}": not refit (input layout)`);
      continue;
    }
    if (rows < k) {
      ctx.emit(
        "warning",
        `op "${op.name}": ${rows} calibration rows for ${k} unknowns per output; the refit is ridge-regularized`,
        op,
      );
    }
    const solution = ridgeSolve(xtx, xty, k, layer.out, ridge, layer.current);
    const errorBefore = residual(layer.current, xtx, xty, yy, k, layer.out);
    const errorAfter = residual(solution, xtx, xty, yy, k, layer.out);
    const adopted = errorAfter < errorBefore;
    if (adopted) write(layer, solution);
    out.set(op.name, { rows, unknowns: k, errorBefore, errorAfter: adopted ? errorAfter : errorBefore });
    ctx.log(
      `op "${op.name}": refit on ${rows} rows, output error ${errorBefore.toFixed(4)} -> ${errorAfter.toFixed(4)}`,
    );
  }
  return out;
}

/** The normal equations of one layer's least-squares fit over the sampled calibration rows. */
export interface NormalEquations {
  /** `X^T X`, `k x k` (the last unknown is the bias). */
  readonly xtx: Float64Array;
  /** `X^T Y`, `k x out`. */
  readonly xty: Float64Array;
  /** `||Y||^2`. */
  readonly yy: number;
  /** Rows (samples times positions) seen. */
  readonly rows: number;
  /** Unknowns per output: the layer's weights per output plus the bias. */
  readonly k: number;
  /** Outputs. */
  readonly out: number;
}

/**
 * Accumulate the normal equations of `layer` (an op of `module`) over the calibration data: its inputs as `module`
 * computes them, its targets from `target` in `truth`, one batch at a time; "error" (reported) when a run fails.
 */
function normalEquations(
  module: Module,
  op: Op,
  layer: Linear,
  truth: Module,
  target: Value,
  ctx: PassContext,
  options: ReconstructOptions & { derived?: RefitTarget; keep: readonly number[] | null; index: number },
): NormalEquations | "error" {
  const calibration = ctx.calibration!;
  const { derived, keep } = options;
  const positions = options.positions ?? 64;
  const batchSize = options.batch ?? 64;
  const samples = Object.values(calibration)[0]?.shape[0] ?? 0;
  const k = layer.n + 1;
  const xtx = new Float64Array(k * k);
  const xty = new Float64Array(k * layer.out);
  let yy = 0;
  let rows = 0;
  const random = lcg((options.seed ?? 1) * 7919 + options.index);
  // The layer's own output as the target: one run gives both.
  const same = truth === module;
  const probe = new Interpreter(module, {
    registry: ctx.ops,
    probes: same ? [op.operand(0)!, target] : [op.operand(0)!],
    stopAtProbes: true,
  });
  const reference = same ? null : new Interpreter(truth, { registry: ctx.ops, probes: [target], stopAtProbes: true });
  for (let start = 0; start < samples; start += batchSize) {
    const feed = sliceSamples(calibration, start, Math.min(samples, start + batchSize));
    let x: Tensor;
    let y: Tensor;
    try {
      const r = probe.run(feed);
      x = r[op.operand(0)!.name];
      y = reference === null ? r[target.name] : reference.run(feed)[target.name];
    } catch (e) {
      ctx.emit("error", `refit could not run the calibration data: ${e instanceof Error ? e.message : e}`);
      return "error";
    }
    const view = derived === undefined ? layer : { ...layer, out: derived.width };
    const r = layer.kind === "conv" ? convRows(view, x, y, positions, random, keep) : gemmRows(view, x, y, keep);
    if (r === null) break;
    if (derived !== undefined) r.y = derived.map(r.y, r.count);
    gemm({ m: k, n: k, k: r.count, a: r.x, transA: true, b: r.x, c: xtx, beta: 1 });
    gemm({ m: k, n: layer.out, k: r.count, a: r.x, transA: true, b: r.y, c: xty, beta: 1 });
    for (const v of r.y) yy += v * v;
    rows += r.count;
  }
  return { xtx, xty, yy, rows, k, out: layer.out };
}

/** A layer's input channels in the order a data-driven selection drops them. */
export interface ChannelRanking {
  /** Channels (local to the op's input), first dropped first. */
  readonly order: readonly number[];
  /**
   * After dropping `order[0..j]`: the output energy lost, relative to `||Y||^2` (the increase of the squared
   * relative error of the refit layer).
   */
  readonly loss: readonly number[];
}

/**
 * Data-driven channel selection (as in ThiNet, Luo et al. 2017, and He et al. 2017, by least squares): rank the input
 * channels of `op` (a groups=1 Conv or a Gemm of `module`; input channel `c` owns `n / channels` consecutive weight
 * columns) by how little of the op's own output on the calibration data (`only`: just those output channels)
 * is lost when the op is refit without them. Greedy backward elimination down to `floor` channels, see
 * {@linkcode eliminateChannels}. With `reference` (the module before the pass) the inputs are still the ones `module`
 * produces but the target is the output of the op of the same name there (`only` then indexes that output): the
 * selection sees the errors of the layers already compressed. Null when there is no data or the op's layout is not
 * understood.
 */
export function rankInputChannels(
  module: Module,
  op: Op,
  channels: number,
  floor: number,
  ctx: PassContext,
  options: ReconstructOptions & { only?: readonly number[]; reference?: Module } = {},
): ChannelRanking | null {
  const full = ctx.calibration === null ? null : linearOf(op, module, null);
  if (full === null || full.n % channels !== 0) return null;
  const keep = options.only ?? null;
  const layer = keep === null ? full : { ...full, out: keep.length };
  if (!withinUnknowns(layer, options, ctx, "its kept channels are chosen by |gamma|")) return null;
  const truth = options.reference ?? module;
  const target = truth === module ? op.results[0] : truth.graph.ops.find((o) => o.name === op.name)?.results[0];
  if (target === undefined) return null;
  const eq = normalEquations(module, op, layer, truth, target, ctx, { ...options, keep, index: 0 });
  if (eq === "error" || eq.rows === 0) return null;
  return eliminateChannels(eq, layer.n / channels, floor, options.ridge ?? 1e-2);
}

/**
 * Backward elimination of whole column blocks (`per` columns each; the last unknown, the bias, always stays) down
 * to `floor` blocks, on the ridge-regularized normal equations (`lambda` = `ridge` times the mean diagonal): each
 * step drops the block whose removal loses the least explained output, `tr(W_b^T (A^-1)_bb^-1 W_b)` with
 * `W = A^-1 X^T Y`, and updates `A^-1` and `W` by the block Schur complement.
 */
export function eliminateChannels(eq: NormalEquations, per: number, floor: number, ridge: number): ChannelRanking {
  const { k, out } = eq;
  const channels = (k - 1) / per;
  let trace = 0;
  for (let i = 0; i < k; i++) trace += eq.xtx[i * k + i];
  const lambda = Math.max(ridge * trace / k, 1e-12);
  const a = new Float64Array(eq.xtx);
  for (let i = 0; i < k; i++) a[i * k + i] += lambda;
  const identity = new Float64Array(k * k);
  for (let i = 0; i < k; i++) identity[i * k + i] = 1;
  const inv = solveCholesky(cholesky(a, k), identity, k, k);
  const w = new Float64Array(k * out);
  gemm({ m: k, n: out, k, a: inv, b: eq.xty, c: w });
  const active = new Uint8Array(channels).fill(1);
  const g = new Float64Array(per * per);
  const gw = new Float64Array(per * out);
  const order: number[] = [];
  const loss: number[] = [];
  let lost = 0;
  for (let left = channels; left > Math.max(0, floor); left--) {
    let best = -1;
    let bestLoss = Infinity;
    for (let c = 0; c < channels; c++) {
      if (!active[c]) continue;
      const l = blockLoss(inv, w, k, out, c * per, per, g, gw);
      if (l < bestLoss) [best, bestLoss] = [c, l];
    }
    // Schur complement without block `best`: inv -= T inv_b., w -= T w_b, with T^T = (inv_bb)^-1 inv_b.
    const b0 = best * per;
    const l = cholesky(blockOf(inv, k, b0, per), per);
    const invB = inv.slice(b0 * k, (b0 + per) * k);
    const wB = w.slice(b0 * out, (b0 + per) * out);
    const tt = solveCholesky(l, invB.slice(), per, k);
    gemm({ m: k, n: k, k: per, a: tt, transA: true, b: invB, c: inv, alpha: -1, beta: 1 });
    gemm({ m: k, n: out, k: per, a: tt, transA: true, b: wB, c: w, alpha: -1, beta: 1 });
    active[best] = 0;
    // The dropped block is decoupled: zero it so rounding never brings it back.
    for (let i = 0; i < k; i++) for (let j = b0; j < b0 + per; j++) inv[i * k + j] = inv[j * k + i] = 0;
    w.fill(0, b0 * out, (b0 + per) * out);
    lost += Math.max(0, bestLoss);
    order.push(best);
    loss.push(eq.yy > 0 ? lost / eq.yy : 0);
  }
  return { order, loss };
}

/** `inv[b0:b0+per, b0:b0+per]`. */
function blockOf(inv: Float64Array, k: number, b0: number, per: number): Float64Array {
  const m = new Float64Array(per * per);
  for (let i = 0; i < per; i++) for (let j = 0; j < per; j++) m[i * per + j] = inv[(b0 + i) * k + b0 + j];
  return m;
}

/** The explained output lost by dropping block `b0..b0+per`: `tr(W_b^T (inv_bb)^-1 W_b)`. */
function blockLoss(
  inv: Float64Array,
  w: Float64Array,
  k: number,
  out: number,
  b0: number,
  per: number,
  g: Float64Array,
  gw: Float64Array,
): number {
  g.set(blockOf(inv, k, b0, per));
  const wb = w.subarray(b0 * out, (b0 + per) * out);
  gw.set(solveCholesky(cholesky(g, per), new Float64Array(wb), per, out));
  let loss = 0;
  for (let i = 0; i < per * out; i++) loss += wb[i] * gw[i];
  return loss;
}

/** The report's entry for refits: per layer, rows, unknowns and the errors before and after. */
export function refitStats(fits: ReadonlyMap<string, LayerRefit>): Record<string, StatValue> {
  const stats: Record<string, StatValue> = {};
  for (const [name, f] of fits) {
    stats[name] = { rows: f.rows, unknowns: f.unknowns, "error-before": f.errorBefore, "error-after": f.errorAfter };
  }
  return stats;
}

/** Samples `[start, end)` of every calibration input (zero-copy views). */
function sliceSamples(inputs: Readonly<Record<string, Tensor>>, start: number, end: number): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(inputs)) {
    const inner = t.shape.slice(1).reduce((a, b) => a * b, 1);
    const data = (t.data as Float32Array).subarray(start * inner, end * inner);
    out[name] = { dtype: t.dtype, shape: [end - start, ...t.shape.slice(1)], data } as Tensor;
  }
  return out;
}

/** A seeded uniform source on [0, 1) (a 32-bit LCG): the position sample is the same on every run. */
function lcg(seed: number): () => number {
  let s = (seed >>> 0) || 1;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/**
 * The effective bias of `op`'s output: its own, or for a bias-less Conv read only by a BN, the shift a pass folded
 * into that BN's mean (original mean minus current), so a refit does not count a compensation twice.
 */
function effectiveBias(op: Op, out: number, original: Module, keep: readonly number[] | null): Float64Array {
  const bias = op.operand(2);
  if (bias?.constant) {
    const b = toFloat64(bias.constant);
    const scale = op.type === "Gemm" ? op.float("beta", 1)! : 1;
    return b.length === out ? b.map((v) => v * scale) : new Float64Array(out).fill(b[0] * scale);
  }
  const next = op.result.uses.length === 1 ? op.result.uses[0].op : null;
  const before = original.graph.ops.find((o) => o.name === next?.name && o.type === "BatchNormalization");
  if (op.type !== "Conv" || next?.type !== "BatchNormalization" || before === undefined) return new Float64Array(out);
  const now = toFloat64(next.operand(3)!.constant!);
  const all = toFloat64(before.operand(3)!.constant!);
  const was = keep === null ? all : Float64Array.from(keep, (c) => all[c]);
  return was.length === out ? was.map((m, o) => m - now[o]) : new Float64Array(out);
}

function linearOf(op: Op, original: Module, keep: readonly number[] | null): Linear | null {
  const w = op.operand(1)?.constant;
  if (!w || (op.type !== "Conv" && op.type !== "Gemm")) return null;
  const d = toFloat64(w);
  if (op.type === "Conv") {
    if (w.shape.length !== 4 || (op.int("group", 1) ?? 1) !== 1) return null;
    const autoPad = op.string("auto_pad", "NOTSET");
    if (autoPad !== "NOTSET" && autoPad !== "VALID") return null;
    const [out, cin, kh, kw] = w.shape;
    const n = cin * kh * kw;
    const current = new Float64Array((n + 1) * out);
    for (let o = 0; o < out; o++) for (let i = 0; i < n; i++) current[i * out + o] = d[o * n + i];
    current.set(effectiveBias(op, out, original, keep), n * out);
    return { op, kind: "conv", out, n, current };
  }
  if (op.flag("transA") || w.shape.length !== 2) return null;
  const transB = op.flag("transB");
  const [n, out] = transB ? [w.shape[1], w.shape[0]] : w.shape;
  const bias = op.operand(2)?.constant;
  if (bias && bias.data.length !== out) return null;
  const alpha = op.float("alpha", 1)!;
  const current = new Float64Array((n + 1) * out);
  for (let i = 0; i < n; i++) {
    for (let o = 0; o < out; o++) current[i * out + o] = alpha * (transB ? d[o * n + i] : d[i * out + o]);
  }
  current.set(effectiveBias(op, out, original, keep), n * out);
  return { op, kind: "gemm", out, n, current };
}

interface Rows {
  /** `count x (n + 1)`, the last column ones. */
  x: Float64Array;
  /** `count x out`. */
  y: Float64Array;
  count: number;
}

function gemmRows(l: Linear, x: Tensor, y: Tensor, keep: readonly number[] | null): Rows | null {
  if (x.shape.length !== 2 || x.shape[1] !== l.n || y.shape[0] !== x.shape[0]) return null;
  if (y.shape.length !== 2 || (keep ?? [...Array(y.shape[1]).keys()]).length !== l.out) return null;
  const count = x.shape[0];
  const k = l.n + 1;
  const xs = toFloat64(x);
  const rows = new Float64Array(count * k);
  for (let r = 0; r < count; r++) {
    rows.set(xs.subarray(r * l.n, (r + 1) * l.n), r * k);
    rows[r * k + l.n] = 1;
  }
  const ys = toFloat64(y);
  if (keep === null) return { x: rows, y: ys, count };
  const all = y.shape[1];
  const targets = new Float64Array(count * l.out);
  for (let r = 0; r < count; r++) for (let o = 0; o < l.out; o++) targets[r * l.out + o] = ys[r * all + keep[o]];
  return { x: rows, y: targets, count };
}

/** Patches (`Cin x Kh x Kw`, then 1) at sampled output positions of every image, and the targets there. */
function convRows(
  l: Linear,
  x: Tensor,
  y: Tensor,
  positions: number,
  random: () => number,
  keep: readonly number[] | null,
): Rows | null {
  const op = l.op;
  const [, , kh, kw] = op.operand(1)!.constant!.shape;
  if (x.shape.length !== 4 || y.shape.length !== 4 || (keep?.length ?? y.shape[1]) !== l.out) return null;
  const all = y.shape[1];
  const [batch, cin, h, w] = x.shape;
  const [, , hOut, wOut] = y.shape;
  const [sh, sw] = op.ints("strides", [1, 1])!;
  const [dh, dw] = op.ints("dilations", [1, 1])!;
  const valid = op.string("auto_pad", "NOTSET") === "VALID";
  const [pt, pl] = valid ? [0, 0] : op.ints("pads", [0, 0, 0, 0])!;
  const map = hOut * wOut;
  const per = Math.min(map, positions);
  const count = batch * per;
  const k = l.n + 1;
  const xs = toFloat64(x);
  const ys = toFloat64(y);
  const rows = new Float64Array(count * k);
  const targets = new Float64Array(count * l.out);
  let row = 0;
  for (let b = 0; b < batch; b++) {
    for (let s = 0; s < per; s++, row++) {
      const pos = per === map ? s : Math.floor(random() * map);
      const i = Math.floor(pos / wOut);
      const j = pos % wOut;
      let col = row * k;
      for (let c = 0; c < cin; c++) {
        for (let u = 0; u < kh; u++) {
          const yy = i * sh + u * dh - pt;
          for (let v = 0; v < kw; v++, col++) {
            const xx = j * sw + v * dw - pl;
            if (yy >= 0 && yy < h && xx >= 0 && xx < w) rows[col] = xs[((b * cin + c) * h + yy) * w + xx];
          }
        }
      }
      rows[col] = 1;
      for (let o = 0; o < l.out; o++) targets[row * l.out + o] = ys[(b * all + (keep?.[o] ?? o)) * map + pos];
    }
  }
  return { x: rows, y: targets, count };
}

/**
 * Solve `(X^T X + lambda I) M = X^T Y` by Cholesky, `lambda` = `ridge` times the mean diagonal (a tiny floor keeps an
 * all-zero input defined).
 */
export function ridgeSolve(
  xtx: Float64Array,
  xty: Float64Array,
  k: number,
  out: number,
  ridge: number,
  prior: Float64Array | null = null,
): Float64Array {
  let trace = 0;
  for (let i = 0; i < k; i++) trace += xtx[i * k + i];
  const lambda = Math.max(ridge * trace / k, 1e-12);
  const a = new Float64Array(xtx);
  for (let i = 0; i < k; i++) a[i * k + i] += lambda;
  const l = cholesky(a, k);
  const m = new Float64Array(xty);
  if (prior !== null) { for (let i = 0; i < k * out; i++) m[i] += lambda * prior[i]; }
  return solveCholesky(l, m, k, out);
}

/** `||[X 1] M - Y|| / ||Y||` from the normal equations: `tr(M^T A M) - 2 tr(M^T B) + ||Y||^2`. */
function residual(m: Float64Array, xtx: Float64Array, xty: Float64Array, yy: number, k: number, out: number): number {
  const am = new Float64Array(k * out);
  gemm({ m: k, n: out, k, a: xtx, b: m, c: am });
  let e = yy;
  for (let i = 0; i < k * out; i++) e += m[i] * am[i] - 2 * m[i] * xty[i];
  return yy > 0 ? Math.sqrt(Math.max(0, e) / yy) : 0;
}

/** Store `M` as the layer's weights and bias (the bias through the BN mean for a bias-less Conv before a BN). */
function write(l: Linear, m: Float64Array): void {
  const op = l.op;
  const wv = op.operand(1)!;
  const w = wv.constant!;
  const { n, out } = l;
  const d = new Float64Array(n * out);
  if (l.kind === "conv") {
    for (let o = 0; o < out; o++) for (let i = 0; i < n; i++) d[o * n + i] = m[i * out + o];
  } else {
    const transB = op.flag("transB");
    const alpha = op.float("alpha", 1)!;
    for (let i = 0; i < n; i++) {
      for (let o = 0; o < out; o++) d[transB ? o * n + i : i * out + o] = m[i * out + o] / alpha;
    }
  }
  const delta = m.slice(n * out).map((b, o) => b - l.current[n * out + o]);
  replaceConstant(op, 1, fromFloat64(w.dtype, w.shape, d));
  foldIntoBias(op, delta);
}

/**
 * Add `delta` (one value per output channel) to what `op` (Conv or Gemm)
 * computes: its bias, or the mean of the BN after a bias-less Conv.
 */
export function foldIntoBias(op: Op, delta: Float64Array): void {
  const out = delta.length;
  const w = op.operand(1)!.constant!;
  const bias = op.operand(2);
  const next = op.result.uses.length === 1 ? op.result.uses[0] : null;
  if (op.type === "Conv" && !bias && next?.op.type === "BatchNormalization" && next.index === 0) {
    // BN(x + d) with mean m equals BN(x) with mean m - d: no new bias tensor, so the parameter count stays the paper's.
    const bn = next.op;
    const mean = toFloat64(bn.operand(3)!.constant!);
    for (let o = 0; o < out; o++) mean[o] -= delta[o];
    setConstantOf(bn, 3, fromFloat64(bn.operand(3)!.constant!.dtype, [out], mean));
  } else if (op.type !== "Gemm") {
    const b = bias?.constant ? toFloat64(bias.constant) : new Float64Array(out);
    for (let o = 0; o < out; o++) b[o] += delta[o];
    setConstantOf(op, 2, fromFloat64(w.dtype, [out], b));
  } else {
    const beta = op.float("beta", 1)!;
    if (bias?.constant && bias.constant.data.length === out && beta !== 0) {
      const b = toFloat64(bias.constant);
      for (let o = 0; o < out; o++) b[o] += delta[o] / beta;
      setConstantOf(op, 2, fromFloat64(bias.constant.dtype, bias.constant.shape, b));
    } else if (!bias) {
      setConstantOf(op, 2, fromFloat64(w.dtype, [out], delta));
      op.attributes.set("beta", attr.float(1));
    }
  }
}

/** Replace constant operand `i` of `op`; a bias that was absent is named `<op>.bias`. */
export function setConstantOf(op: Op, i: number, t: Tensor): void {
  replaceConstant(op, i, t, op.operand(i) === null ? { name: `${op.name}.bias` } : {});
}

/**
 * Re-estimate each BN's mean and (unbiased) variance on the calibration data, in graph order (after a structural
 * change the statistics the BN was trained with no longer describe its input).
 */
export function recalibrateBn(module: Module, ctx: PassContext, batch = 64): void {
  const calibration = ctx.calibration!;
  const samples = Object.values(calibration)[0]?.shape[0] ?? 0;
  for (const bn of module.graph.ops.filter((op) => op.type === "BatchNormalization")) {
    const x = bn.operand(0)!;
    const run = new Interpreter(module, { registry: ctx.ops, probes: [x], stopAtProbes: true });
    let sum: Float64Array | null = null;
    let squares: Float64Array | null = null;
    let count = 0;
    for (let start = 0; start < samples; start += batch) {
      const t = run.run(sliceSamples(calibration, start, Math.min(samples, start + batch)))[x.name];
      const [n, c] = t.shape;
      const inner = t.shape.slice(2).reduce((a, b) => a * b, 1);
      const d = toFloat64(t);
      sum ??= new Float64Array(c);
      squares ??= new Float64Array(c);
      for (let b = 0; b < n; b++) {
        for (let ch = 0; ch < c; ch++) {
          const base = (b * c + ch) * inner;
          for (let i = 0; i < inner; i++) {
            sum[ch] += d[base + i];
            squares[ch] += d[base + i] * d[base + i];
          }
        }
      }
      count += n * inner;
    }
    if (sum === null || squares === null || count === 0) continue;
    const mean = sum.map((s) => s / count);
    const variance = squares.map((s, ch) => Math.max(0, s - count * mean[ch] * mean[ch]) / Math.max(1, count - 1));
    const dtype = bn.operand(3)!.constant!.dtype;
    setConstantOf(bn, 3, fromFloat64(dtype, [mean.length], mean));
    setConstantOf(bn, 4, fromFloat64(dtype, [variance.length], variance));
  }
}

/** Standard normal density. */
function phi(t: number): number {
  return Math.exp(-0.5 * t * t) / Math.sqrt(2 * Math.PI);
}

/** Standard normal distribution function (erfc after Numerical Recipes' `erfcc`, |error| < 1.2e-7). */
export function normalCdf(t: number): number {
  const z = Math.abs(t) / Math.SQRT2;
  const u = 1 / (1 + 0.5 * z);
  const erfc = u * Math.exp(
    -z * z - 1.26551223 + u * (1.00002368 + u * (0.37409196 + u * (0.09678418 + u * (-0.18628806 + u * (0.27886807 +
                          u * (-1.13520398 + u * (1.48851587 + u * (-0.82215223 + u * 0.17087277)))))))),
  );
  return t >= 0 ? 1 - 0.5 * erfc : 0.5 * erfc;
}

/** `E[clip(x, lo, hi)]` for `x ~ N(mu, s^2)` (the truncated normal's moments; `lo`/`hi` may be infinite). */
export function expectedClip(mu: number, s: number, lo: number, hi: number): number {
  if (!(s > 0)) return Math.min(hi, Math.max(lo, mu));
  const a = (lo - mu) / s;
  const b = (hi - mu) / s;
  const pa = Number.isFinite(a) ? normalCdf(a) : a < 0 ? 0 : 1;
  const pb = Number.isFinite(b) ? normalCdf(b) : b < 0 ? 0 : 1;
  const da = Number.isFinite(a) ? phi(a) : 0;
  const db = Number.isFinite(b) ? phi(b) : 0;
  const low = Number.isFinite(lo) ? lo * pa : 0;
  const high = Number.isFinite(hi) ? hi * (1 - pb) : 0;
  return low + high + mu * (pb - pa) + s * (da - db);
}

/** Nodes and weights of the quadrature for `E[f(t)]`, `t ~ N(0, 1)`: a fine grid on [-8, 8] weighted by the density. */
const QUADRATURE = (() => {
  const nodes: number[] = [];
  const weights: number[] = [];
  for (let i = -160; i <= 160; i++) {
    nodes.push(i / 20);
    weights.push(phi(i / 20) / 20);
  }
  const total = weights.reduce((a, b) => a + b, 0);
  return { nodes, weights: weights.map((w) => w / total) };
})();

/**
 * Per channel, `E[op(x)]` for `x_c ~ N(mean_c, spread_c^2)`: closed form for Relu, Clip and Identity, else by
 * quadrature over the op's own kernel (`at` evaluates it on one constant per channel; null when it cannot).
 */
export function expectedActivation(
  op: Op,
  mean: Float64Array,
  spread: Float64Array,
  at: (x: Float64Array) => Float64Array | null,
  closedForm = true,
): Float64Array {
  const n = mean.length;
  if (closedForm && (op.type === "Relu" || op.type === "Clip" || op.type === "Identity")) {
    let lo = -Infinity;
    let hi = Infinity;
    if (op.type === "Relu") lo = 0;
    if (op.type === "Clip") {
      const bound = (i: number, name: string, fallback: number): number => {
        const c = op.operand(i)?.constant;
        return c ? toFloat64(c)[0] : op.float(name, fallback)!;
      };
      lo = bound(1, "min", -Infinity);
      hi = bound(2, "max", Infinity);
    }
    return Float64Array.from(mean, (m, c) => expectedClip(m, spread[c], lo, hi));
  }
  const out = new Float64Array(n);
  const x = new Float64Array(n);
  for (let k = 0; k < QUADRATURE.nodes.length; k++) {
    for (let c = 0; c < n; c++) x[c] = mean[c] + spread[c] * QUADRATURE.nodes[k];
    const y = at(x);
    if (y === null) return at(mean) ?? new Float64Array(n).fill(NaN);
    for (let c = 0; c < n; c++) out[c] += QUADRATURE.weights[k] * y[c];
  }
  return out;
}

/** Ops that carry a channel's mean through unchanged (pooling over positions of one channel, identities). */
const MEAN_PRESERVING = new Set(["MaxPool", "AveragePool", "GlobalAveragePool", "Identity", "Dropout"]);

/**
 * Per-channel expected value of `v` without data, from the BatchNormalization above it: a BN output is taken as
 * `N(beta, gamma^2)` (its statistics describe its input), an activation of it has the mean
 * {@linkcode expectedActivation} gives, and pooling keeps a channel's mean (exact for averages, an
 * approximation for max-pooling); null when no BN statistics reach `v` that way.
 *
 * @example The mean of Relu(BN) with beta 0 and gamma 1 is 1/sqrt(2 pi)
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../../ir/parser.ts";
 * import { builtinOps } from "../../ir/builtin_ops.ts";
 * import { expectedChannels } from "./recovery.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[1,1,2,2]) -> (%y) {
 *   %z = const f32[1] dense<0.0>
 *   %one = const f32[1] dense<1.0>
 *   %b = BatchNormalization(%x, %one, %z, %z, %one) : f32[1,1,2,2]
 *   %y = Relu(%b) : f32[1,1,2,2]
 *   return %y
 * }
 * }`);
 * const mean = expectedChannels(m.graph.outputs[0], builtinOps, 13)!;
 * assert.ok(Math.abs(mean[0] - 1 / Math.sqrt(2 * Math.PI)) < 1e-6);
 * ```
 */
export function expectedChannels(v: Value, ops: OpRegistry, opset: number): Float64Array | null {
  const op = v.producer;
  if (op === null) return null;
  if (MEAN_PRESERVING.has(op.type)) return op.operand(0) ? expectedChannels(op.operand(0)!, ops, opset) : null;
  if (op.type === "BatchNormalization") return op.operand(2)?.constant ? toFloat64(op.operand(2)!.constant!) : null;
  const live = op.operands.filter((x) => x !== null && x.constant === null);
  const bn = live.length === 1 ? live[0]!.producer : null;
  if (bn?.type !== "BatchNormalization" || !bn.operand(1)?.constant || !bn.operand(2)?.constant) return null;
  const spread = toFloat64(bn.operand(1)!.constant!).map(Math.abs);
  const beta = toFloat64(bn.operand(2)!.constant!);
  const def = ops.get(op);
  const rank = isTensorType(v.type) && v.type.shape !== null ? v.type.shape.length : 2;
  const elem = isTensorType(v.type) && v.type.elem === "f64" ? "f64" : "f32";
  const mean = expectedActivation(op, beta, spread, (x) => {
    if (def?.interpret === undefined) return null;
    const t = fromFloat64(elem, [1, x.length, ...Array(Math.max(0, rank - 2)).fill(1)], x);
    try {
      const out = def.interpret(op, op.operands.map((o) => (o === live[0] ? t : o?.constant ?? null)), { opset })[0];
      return out && out.data.length === x.length ? toFloat64(out) : null;
    } catch {
      return null;
    }
  });
  return mean.every(Number.isFinite) ? mean : null;
}
