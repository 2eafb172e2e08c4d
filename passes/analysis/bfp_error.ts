/**
 * The four-stage error analysis of BFP and fixed-point layers (input
 * conversion, weight conversion, multiply-accumulate, output conversion), read
 * from layer plans on float calibration activations, and the SQNR of each
 * layer's output inside the fully lowered model.
 * @module
 */
import { bfpLayer } from "../../ir/bfp/kernel.ts";
import type { BfpLayerPlan } from "../../ir/bfp/plan.ts";
import { dequantizeActivations, dequantizeWeights, quantizeActivations } from "../../ir/bfp/quantize.ts";
import type { Op, Value } from "../../ir/graph.ts";
import { Interpreter } from "../../ir/interpreter.ts";
import type { Module } from "../../ir/module.ts";
import type { OpRegistry } from "../../ir/op_def.ts";
import { type Tensor, toFloat64 } from "../../ir/tensor.ts";
import type { StatValue } from "../pass.ts";

/**
 * 10·log10(signal / noise) in dB (Infinity when exact).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sqnr } from "./bfp_error.ts";
 * assert.equal(sqnr([1, 1], [1, 1]), Infinity);
 * assert.equal(sqnr([10, 0], [9, 0]), 20);
 * ```
 */
export function sqnr(reference: ArrayLike<number>, approx: ArrayLike<number>): number {
  return new PowerSum().add(reference, approx).sqnr();
}

/**
 * Signal and noise power summed over parts of two tensors in order (the
 * samples of a calibration set, chunk after chunk): the same sums, bit for
 * bit, as one pass over the whole tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PowerSum, sqnr } from "./bfp_error.ts";
 * const s = new PowerSum().add([10], [9]).add([0, 3], [0, 3]);
 * assert.equal(s.sqnr(), sqnr([10, 0, 3], [9, 0, 3]));
 * ```
 */
export class PowerSum {
  /** Σ reference². */
  signal = 0;
  /** Σ (reference - approx)². */
  noise = 0;

  /** Add one part. */
  add(reference: ArrayLike<number>, approx: ArrayLike<number>): this {
    let signal = this.signal, noise = this.noise;
    for (let i = 0; i < reference.length; i++) {
      signal += reference[i] * reference[i];
      const d = reference[i] - approx[i];
      noise += d * d;
    }
    [this.signal, this.noise] = [signal, noise];
    return this;
  }

  /** 10·log10(signal / noise) in dB (Infinity when exact). */
  sqnr(): number {
    return this.noise === 0 ? Infinity : 10 * Math.log10(this.signal / this.noise);
  }

  /** noise / signal (0 without signal). */
  nsr(): number {
    return this.signal === 0 ? 0 : this.noise / this.signal;
  }
}

/** A dB figure for a report: two decimals, `"inf"` when exact. */
export function db(v: number): StatValue {
  return Number.isFinite(v) ? Math.round(v * 100) / 100 : "inf";
}

/** Run the module on `feeds` and return the tensors of `values` (graph outputs or not). */
export function runWithProbes(
  module: Module,
  values: readonly Value[],
  feeds: Readonly<Record<string, Tensor>>,
  ops: OpRegistry,
): Map<Value, Tensor> {
  const out = new Interpreter(module, { registry: ops, probes: values }).run(feeds);
  return new Map(values.map((v) => [v, out[v.name]]));
}

/**
 * What {@linkcode runSequential} calls after each op: its operand tensors, its
 * results, and `rerun`, which runs the op again (after a change to it, such as
 * a corrected bias) on given operand tensors. It returns the results the later
 * ops read (or nothing to keep `results`).
 */
export type AfterOp = (
  op: Op,
  args: readonly (Tensor | null)[],
  results: Tensor[],
  rerun: (args: readonly (Tensor | null)[]) => Tensor[],
) => Tensor[] | void;

/**
 * Run the module on `feeds` op by op in graph order, as the interpreter does
 * (each value freed after its last use, so only live activations are held),
 * calling `after` once per op: how a pass adjusts each layer on the
 * activations that the already-adjusted layers before it produce, in one run.
 *
 * @throws {Error} Naming an op without a reference kernel, a missing input, or the op that failed.
 * @example Double every Neg's result on its way through
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { builtinOps } from "../../ir/builtin_ops.ts";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { runSequential } from "./bfp_error.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1] }));
 * const n = g.addOp(new Op({ name: "n", type: "Neg", operands: [x], results: [new Value("t")] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [n.result], results: [new Value("y")] })).result);
 * const seen: number[] = [];
 * runSequential(new Module(g), { x: float32Tensor([1], [-2]) }, builtinOps, (op, _args, results) => {
 *   seen.push(results[0].data[0] as number);
 *   if (op.name === "n") return [float32Tensor([1], [4])];
 * });
 * assert.deepEqual(seen, [2, 4]);
 * ```
 */
export function runSequential(
  module: Module,
  feeds: Readonly<Record<string, Tensor>>,
  ops: OpRegistry,
  after: AfterOp,
): void {
  new SequentialRun(module, feeds, ops).finish(after);
}

/**
 * A {@linkcode runSequential} run that its caller steps op by op and can
 * fork: a fork holds the same live activations (shared, never written) and
 * goes on independently, so a change to one op can be tried on the rest of
 * the graph without running the ops before it again.
 *
 * @example Try a doubled Neg on the rest of the graph, then go on unchanged
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { builtinOps } from "../../ir/builtin_ops.ts";
 * import { float32Tensor, type Tensor } from "../../ir/tensor.ts";
 * import { type AfterOp, SequentialRun } from "./bfp_error.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1] }));
 * const n = g.addOp(new Op({ name: "n", type: "Neg", operands: [x], results: [new Value("t")] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [n.result], results: [new Value("y")] })).result);
 * const run = new SequentialRun(new Module(g), { x: float32Tensor([1], [-2]) }, builtinOps);
 * const seen: number[] = [];
 * const record: AfterOp = (op: Op, _args, results: Tensor[]) => {
 *   if (op.name === "r") seen.push(results[0].data[0] as number);
 * };
 * run.fork().finish((op, args, results, rerun) => {
 *   if (op.name !== "n") return record(op, args, results, rerun);
 *   return [float32Tensor([1], [2 * (results[0].data[0] as number)])];
 * });
 * run.finish(record);
 * assert.deepEqual(seen, [4, 2]);
 * ```
 */
export class SequentialRun {
  readonly #module: Module;
  readonly #ops: OpRegistry;
  /** Per value, the index of the last op that reads it. */
  readonly #lastUse: ReadonlyMap<Value, number>;
  readonly #env: Map<Value, Tensor>;
  #index = 0;

  /**
   * A run of `module` on `feeds`, before its first op.
   *
   * @throws {Error} Naming a missing input.
   */
  constructor(module: Module, feeds: Readonly<Record<string, Tensor>>, ops: OpRegistry);
  /** A fork (internal). */
  constructor(module: Module, from: SequentialRun, ops: OpRegistry);
  constructor(module: Module, feeds: Readonly<Record<string, Tensor>> | SequentialRun, ops: OpRegistry) {
    this.#module = module;
    this.#ops = ops;
    if (feeds instanceof SequentialRun) {
      this.#lastUse = feeds.#lastUse;
      this.#env = new Map(feeds.#env);
      this.#index = feeds.#index;
      return;
    }
    const lastUse = new Map<Value, number>();
    module.graph.ops.forEach((op, i) => {
      for (const v of op.operands) if (v !== null && v.producer !== null) lastUse.set(v, i);
    });
    this.#lastUse = lastUse;
    this.#env = new Map();
    for (const v of module.graph.inputs) {
      const t = feeds[v.name] ?? v.constant;
      if (t === undefined || t === null) throw new Error(`missing input "${v.name}"`);
      this.#env.set(v, t);
    }
  }

  /** The op the next {@linkcode step} runs, or null at the end. */
  get next(): Op | null {
    return this.#module.graph.ops[this.#index] ?? null;
  }

  /** Another run from here on, with the same live activations. */
  fork(): SequentialRun {
    return new SequentialRun(this.#module, this, this.#ops);
  }

  /**
   * Run the next op, calling `after` (if given) with its operands and results; frees the values it reads last.
   *
   * @throws {Error} Naming an op without a reference kernel, or the op that failed.
   */
  step(after?: AfterOp): void {
    const op = this.next;
    if (op === null) return;
    const kernel = this.#ops.get(op)?.interpret;
    if (kernel === undefined) throw new Error(`op "${op.name}" (${op.qualifiedType}) has no reference implementation`);
    const rerun = (args: readonly (Tensor | null)[]): Tensor[] => {
      try {
        return kernel(op, args, { opset: this.#module.opset(op.domain) });
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        throw new Error(msg.startsWith(`op "${op.name}"`) ? msg : `op "${op.name}" (${op.type}): ${msg}`);
      }
    };
    const args = op.operands.map((v) => v === null ? null : this.#env.get(v) ?? v.constant ?? null);
    const computed = rerun(args);
    const results = after?.(op, args, computed, rerun) ?? computed;
    op.results.forEach((r, k) => {
      if (results[k] !== undefined) this.#env.set(r, results[k]);
    });
    for (const v of op.operands) if (v !== null && this.#lastUse.get(v) === this.#index) this.#env.delete(v);
    this.#index++;
  }

  /** Run the remaining ops ({@linkcode step}). */
  finish(after?: AfterOp): void {
    while (this.next !== null) this.step(after);
  }
}

/**
 * Calibration samples per chunk of a {@linkcode ChunkedRun}: a layer's
 * activations for every sample are held (a consumer needs the whole layer
 * before it can go on), but each op frees its operands chunk by chunk, so a
 * value and its successor overlap by one chunk, not by the whole set.
 */
export const CHUNK_SAMPLES = 8;

/**
 * A run of a module on calibration samples in chunks of `chunk` samples, op
 * by op in graph order (as {@linkcode runSequential}), that its caller drives:
 * {@linkcode next} names the op about to run, {@linkcode compute} runs it on one
 * chunk, {@linkcode store} keeps a chunk's results and frees that chunk of
 * every operand used for the last time, {@linkcode done} moves on. Two runs
 * of two modules (the float model and the lowered one) go side by side, so
 * neither holds more than the live activations of the op it is at: the
 * memory of one layer of the network, not of all of them.
 *
 * Every op is assumed to treat its samples (axis 0; a Gemm's rows)
 * independently, as the passes that run halves of the calibration set
 * already assume. The float Gemm and MatMul kernels do, but not bit for bit:
 * their path depends on the row count (dot products for one row, SIMD blocks
 * of rows), so {@linkcode step} runs them on all samples at once (their
 * operands are small in a CNN: after the pooling, one row per sample); every
 * other kernel gives the same bits for a chunk as for the whole set.
 *
 * @example A Relu then a Neg, in chunks of one sample
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { builtinOps } from "../../ir/builtin_ops.ts";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { ChunkedRun } from "./bfp_error.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 1] }));
 * const r = g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("t")] }));
 * g.outputs.push(g.addOp(new Op({ name: "n", type: "Neg", operands: [r.result], results: [new Value("y")] })).result);
 * const run = new ChunkedRun(new Module(g), { x: float32Tensor([2, 1], [-2, 3]) }, 1, builtinOps);
 * run.finish();
 * assert.deepEqual(run.values(g.outputs[0]).map((t) => t.data[0]), [-0, -3]);
 * ```
 */
export class ChunkedRun {
  /** How many chunks the samples make. */
  readonly chunks: number;
  readonly #module: Module;
  readonly #ops: OpRegistry;
  readonly #env = new Map<Value, (Tensor | null)[]>();
  readonly #lastUse = new Map<Value, number>();
  readonly #kept: Set<Value>;
  #next = 0;

  /**
   * A run of `module` on `feeds` (samples on axis 0), `chunk` samples at a time; with `split`, the chunks start
   * again at that sample, so the chunks of samples `[0, split)` and `[split, N)` are each those of a run on them.
   * The graph outputs and the values in `keep` are held to the end ({@linkcode values}, {@linkcode joined}).
   */
  constructor(
    module: Module,
    feeds: Readonly<Record<string, Tensor>>,
    chunk: number,
    ops: OpRegistry,
    split = 0,
    keep: readonly Value[] = [],
  ) {
    const graph = module.graph;
    [this.#module, this.#ops] = [module, ops];
    const given = Math.min(...graph.inputs.map((v) => feeds[v.name]?.shape[0] ?? Infinity));
    const samples = given === Infinity ? 0 : given;
    const ranges: [number, number][] = [];
    for (const [from, to] of [[0, Math.min(split, samples)], [Math.min(split, samples), samples]]) {
      for (let start = from; start < to; start += Math.max(1, chunk)) ranges.push([start, Math.min(to, start + chunk)]);
    }
    if (ranges.length === 0) ranges.push([0, samples]);
    this.chunks = ranges.length;
    for (const v of graph.inputs) {
      const t = feeds[v.name] ?? v.constant;
      if (t === undefined || t === null) throw new Error(`missing input "${v.name}"`);
      this.#env.set(v, ranges.map(([a, b]) => feeds[v.name] === undefined ? t : sampleRange(t, a, b)));
    }
    graph.ops.forEach((op, i) => {
      for (const v of op.operands) if (v !== null && v.producer !== null) this.#lastUse.set(v, i);
    });
    this.#kept = new Set([...graph.outputs, ...keep]);
  }

  /** The op about to run, or null at the end. */
  next(): Op | null {
    return this.#module.graph.ops[this.#next] ?? null;
  }

  /** The operand tensors of the next op on chunk `c`. */
  args(c: number): (Tensor | null)[] {
    const op = this.next()!;
    return op.operands.map((v) => {
      if (v === null) return null;
      const t = this.#env.get(v)?.[c] ?? v.constant;
      if (t === null || t === undefined) {
        throw new Error(`op "${op.name}" (${op.type}): operand "${v.name}" has no value`);
      }
      return t;
    });
  }

  /** Run the next op on chunk `c` (on `args`, by default its operands): its results, not yet stored. */
  compute(c: number, args: readonly (Tensor | null)[] = this.args(c)): Tensor[] {
    const op = this.next()!;
    const kernel = this.#ops.get(op)?.interpret;
    if (kernel === undefined) throw new Error(`op "${op.name}" (${op.qualifiedType}) has no reference implementation`);
    try {
      return kernel(op, args, { opset: this.#module.opset(op.domain) });
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      throw new Error(msg.startsWith(`op "${op.name}"`) ? msg : `op "${op.name}" (${op.type}): ${msg}`);
    }
  }

  /** Keep the next op's results on chunk `c`, and free chunk `c` of the operands it used last. */
  store(c: number, results: readonly Tensor[]): void {
    const op = this.next()!;
    op.results.forEach((r, k) => {
      if (results[k] === undefined || (!this.#lastUse.has(r) && !this.#kept.has(r))) return;
      let parts = this.#env.get(r);
      if (parts === undefined) this.#env.set(r, parts = new Array(this.chunks).fill(null));
      parts[c] = results[k];
    });
    for (const v of op.operands) {
      if (v === null || this.#kept.has(v) || this.#lastUse.get(v) !== this.#next) continue;
      const parts = this.#env.get(v);
      if (parts !== undefined) parts[c] = null;
    }
  }

  /** Move on to the op after the next one. */
  done(): void {
    this.#next++;
  }

  /**
   * The next op's results on every chunk, not yet stored: a float Gemm or MatMul on all samples at once (its rows
   * split back into chunks), any other op chunk by chunk. Stored as they come when `store` is true.
   */
  computeAll(store = false): Tensor[][] {
    const op = this.next()!;
    const out: Tensor[][] = [];
    if (this.chunks > 1 && op.domain === "" && (op.type === "Gemm" || op.type === "MatMul")) {
      const args = [...Array(this.chunks).keys()].map((c) => this.args(c));
      const joined = args[0].map((t, i) => t === null || args[1][i] === t ? t : concatSamples(args.map((a) => a[i]!)));
      const whole = this.compute(0, joined);
      let start = 0;
      for (const a of args) {
        const n = a[0]!.shape[0];
        out.push(whole.map((t) => sampleRange(t, start, start + n)));
        start += n;
      }
      if (store) out.forEach((r, c) => this.store(c, r));
      return out;
    }
    for (let c = 0; c < this.chunks; c++) {
      out.push(this.compute(c));
      if (store) this.store(c, out[c]);
    }
    return out;
  }

  /** Run the next op on every chunk, storing as it goes. */
  step(): void {
    this.computeAll(true);
    this.done();
  }

  /** Run every op up to and including `op` (to the end when null). */
  finish(op: Op | null = null): void {
    const graph = this.#module.graph;
    const end = op === null ? graph.ops.length : graph.ops.indexOf(op) + 1;
    if (end === 0) throw new Error(`internal: op "${op!.name}" is not in the run's graph`);
    while (this.#next < end) this.step();
  }

  /** The tensors of a value, chunk by chunk (a graph output at the end, or a value not yet freed). */
  values(v: Value): Tensor[] {
    const parts = this.#env.get(v);
    if (parts === undefined || parts.some((t) => t === null)) throw new Error(`internal: "${v.name}" is not held`);
    return parts as Tensor[];
  }

  /** The tensor of a value on all samples: its chunks joined along axis 0. */
  joined(v: Value): Tensor {
    const parts = this.values(v);
    return parts.length === 1 ? parts[0] : concatSamples(parts);
  }
}

/** Tensors joined along axis 0 (chunks of samples). */
function concatSamples(parts: readonly Tensor[]): Tensor {
  const first = parts[0];
  const data = new (first.data.constructor as Float32ArrayConstructor)(parts.reduce((n, t) => n + t.data.length, 0));
  let at = 0;
  for (const t of parts) {
    data.set(t.data as Float32Array, at);
    at += t.data.length;
  }
  return { dtype: first.dtype, shape: [parts.reduce((n, t) => n + t.shape[0], 0), ...first.shape.slice(1)], data };
}

/**
 * The mean of `reference - approx` per channel over samples and positions:
 * channels on axis 1 (`[N, C, ...spatial]`, `channelsLast` false) or on the
 * last axis (`[..., C]`). Bias correction adds it to a layer's bias.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { meanChannelError } from "./bfp_error.ts";
 * const ref = float32Tensor([2, 2], [1, 2, 3, 4]), approx = float32Tensor([2, 2], [0, 2, 2, 5]);
 * assert.deepEqual([...meanChannelError(ref, approx, true)], [1, -0.5]);
 * ```
 */
export function meanChannelError(reference: Tensor, approx: Tensor, channelsLast: boolean): Float64Array {
  return new ChannelErrorSum(channelsLast).add(reference, approx).mean();
}

/**
 * {@linkcode meanChannelError} over parts of two tensors (chunks of samples, in
 * order): the same sums, bit for bit, as over the whole tensors.
 */
export class ChannelErrorSum {
  #sum: Float64Array | null = null;
  #count = 0;

  /** Channels on the last axis (`[..., C]`) rather than axis 1. */
  constructor(readonly channelsLast: boolean) {}

  /** Add one part. */
  add(reference: Tensor, approx: Tensor): this {
    const shape = reference.shape;
    const c = this.channelsLast ? shape[shape.length - 1] : shape[1];
    const inner = this.channelsLast ? 1 : shape.slice(2).reduce((a, b) => a * b, 1);
    const sum = this.#sum ??= new Float64Array(c);
    const a = reference.data, b = approx.data;
    for (let i = 0; i < a.length; i++) sum[Math.floor(i / inner) % c] += Number(a[i]) - Number(b[i]);
    this.#count += a.length;
    return this;
  }

  /** The mean per channel of what was added. */
  mean(): Float64Array {
    const sum = this.#sum ?? new Float64Array(0);
    const count = this.#count / sum.length;
    return sum.map((s) => s / count);
  }
}

/**
 * The four-stage analysis of one lowered layer on its float input `x` and the
 * float layer's output `y` (both from the calibration run before lowering),
 * with the float weights `weight` the plan's mantissas approximate.
 *
 * Stats: `sqnr-input-db`, `sqnr-weight-db` (the conversions), `sqnr-mac-db`
 * (the exact accumulator values), `sqnr-output-db` (after the float32
 * conversion), `sqnr-predicted-db` (from the first two, assuming independent
 * errors), `saturations` and `input-blocks-per-sample`; for fixed point also
 * `input-saturated` (elements clamped by the static exponent).
 *
 * @throws {Error} When the input does not fit the layer.
 */
export function layerErrorStats(
  plan: BfpLayerPlan,
  x: Tensor | readonly Tensor[],
  y: Tensor | readonly Tensor[],
  weight: Float32Array,
): Record<string, StatValue> {
  const { format, blocking, staticExponent } = plan.input;
  const name = plan.input.op.operand(0)?.name ?? "X";
  // The same sums over chunks of samples as over the whole tensors (the blocks never span samples).
  const xs = Array.isArray(x) ? x : [x as Tensor], ys = Array.isArray(y) ? y : [y as Tensor];
  const input = new PowerSum(), mac = new PowerSum(), output = new PowerSum();
  let saturations = 0, blocks = 0, samples = 0, saturated = 0;
  xs.forEach((xc, c) => {
    const xq = quantizeActivations(
      xc.data as Float32Array,
      xc.shape,
      format,
      blocking,
      name,
      staticExponent ?? undefined,
    );
    input.add(xc.data as Float32Array, dequantizeActivations(xq, xc.shape, format, blocking));
    const r = bfpLayer(plan, { mantissas: xq.mantissas, exponents: xq.exponents, shape: xc.shape });
    const ref = toFloat64(ys[c]);
    mac.add(ref, r.y);
    output.add(ref, Float32Array.from(r.y));
    saturations += r.saturations;
    blocks += xq.exponents.length;
    samples += xc.shape[0];
    saturated += xq.saturated;
  });
  const w = plan.weights;
  const wDeq = dequantizeWeights(w.mantissas, w.exponents, w.shape, format, w.block);
  const sIn = input.sqnr(), sW = sqnr(weight, wDeq);
  const predicted = -10 * Math.log10(10 ** (-sIn / 10) + 10 ** (-sW / 10));
  return {
    "sqnr-input-db": db(sIn),
    "sqnr-weight-db": db(sW),
    "sqnr-mac-db": db(mac.sqnr()),
    "sqnr-output-db": db(output.sqnr()),
    "sqnr-predicted-db": db(predicted),
    "saturations": saturations,
    "input-blocks-per-sample": blocks / Math.max(1, samples),
    // Fixed point: calibration elements past the static exponent's range (none unless headroom is cut short).
    ...(staticExponent === null ? {} : { "input-saturated": saturated }),
  };
}

/**
 * Per-channel bias correction that has to earn its place: the mean error per
 * channel ({@linkcode meanChannelError}) fitted on one half of the samples
 * (axis 0) must lower the squared error on the other half, both ways round
 * (two-fold cross-validation, summed); then it is refitted on all samples and
 * returned. Null when it does not lower the held-out error, or with fewer than
 * two samples (nothing to hold out): a small calibration set must not
 * overfit the bias.
 *
 * @example A constant offset is kept, noise around zero is not
 * ```ts
 * import assert from "node:assert/strict";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { heldOutChannelShift } from "./bfp_error.ts";
 * const ref = float32Tensor([4, 1], [1, 2, 3, 4]);
 * assert.deepEqual([...heldOutChannelShift(ref, float32Tensor([4, 1], [0.5, 1.5, 2.5, 3.5]), true)!], [0.5]);
 * assert.equal(heldOutChannelShift(ref, float32Tensor([4, 1], [1.5, 1.5, 2.5, 3.5]), true), null);
 * ```
 */
export function heldOutChannelShift(reference: Tensor, approx: Tensor, channelsLast: boolean): Float64Array | null {
  const n = reference.shape[0];
  if (n < 2) return null;
  const half = Math.floor(n / 2);
  const first = [sampleRange(reference, 0, half), sampleRange(approx, 0, half)] as const;
  const second = [sampleRange(reference, half, n), sampleRange(approx, half, n)] as const;
  const fitFirst = meanChannelError(first[0], first[1], channelsLast);
  const fitSecond = meanChannelError(second[0], second[1], channelsLast);
  const none = new Float64Array(fitFirst.length);
  const heldOut = shiftedNoise(second[0], second[1], fitFirst, channelsLast) +
    shiftedNoise(first[0], first[1], fitSecond, channelsLast);
  const uncorrected = shiftedNoise(second[0], second[1], none, channelsLast) +
    shiftedNoise(first[0], first[1], none, channelsLast);
  return heldOut < uncorrected ? meanChannelError(reference, approx, channelsLast) : null;
}

/** Samples `[start, end)` (axis 0) of every input, sharing their storage. */
export function sampleFeeds(
  inputs: Readonly<Record<string, Tensor>>,
  start: number,
  end: number,
): Record<string, Tensor> {
  return Object.fromEntries(
    Object.entries(inputs).map(([k, t]) => [k, sampleRange(t, Math.min(start, t.shape[0]), Math.min(end, t.shape[0]))]),
  );
}

/** Samples `[start, end)` of a tensor (axis 0), sharing its storage. */
export function sampleRange(t: Tensor, start: number, end: number): Tensor {
  const inner = t.shape[0] === 0 ? 0 : t.data.length / t.shape[0];
  const data = (t.data as Float32Array).subarray(start * inner, end * inner);
  return { dtype: t.dtype, shape: [end - start, ...t.shape.slice(1)], data };
}

/** Σ (reference - approx - shift[c])² over every element, channel c as in {@linkcode meanChannelError}. */
function shiftedNoise(reference: Tensor, approx: Tensor, shift: Float64Array, channelsLast: boolean): number {
  const shape = reference.shape, c = shift.length;
  const inner = channelsLast ? 1 : shape.slice(2).reduce((a, b) => a * b, 1);
  const a = reference.data, b = approx.data;
  let noise = 0;
  for (let i = 0; i < a.length; i++) noise += (Number(a[i]) - Number(b[i]) - shift[Math.floor(i / inner) % c]) ** 2;
  return noise;
}
