/**
 * The reference interpreter: runs a module's graph op by op on typed arrays
 * through each {@linkcode OpDef}'s `interpret` kernel. It says what a graph
 * computes; passes are checked against it before and after.
 * @module
 */
import type { Attribute } from "./attributes.ts";
import type { Graph, Op, Value } from "./graph.ts";
import type { Module } from "./module.ts";
import type { KernelContext, OpDef, OpRegistry } from "./op_def.ts";
import { builtinOps } from "./builtin_ops.ts";
import { hardSwishChain, silu } from "./ops/elementwise.ts";
import { interpretConvClamped } from "./ops/nn.ts";
import { allocData, type Tensor, type TensorData } from "./tensor.ts";
import { type Dim, type DType, elementTypeToString, isTensorType } from "./types.ts";

/** Options of {@linkcode interpret} and {@linkcode Interpreter}. */
export interface InterpretOptions {
  /** Op definitions (default: the built-ins). */
  registry?: OpRegistry;
  /**
   * Values of the main graph (op results, inputs or constants) to return beside
   * the graph outputs, by name: how a pass reads intermediate activations
   * without editing `graph.outputs`.
   */
  probes?: readonly Value[];
  /**
   * Stop as soon as every probe is computed and return only the probes: how a pass reads one layer's input
   * without running (or holding) the rest of the network.
   */
  stopAtProbes?: boolean;
}

/** A reference kernel, as an {@linkcode OpDef} declares it. */
type Kernel = NonNullable<OpDef["interpret"]>;

/**
 * A prepared run of one module: kernels resolved and value lifetimes computed
 * once, so repeated runs (evaluation over many batches) pay only for the math.
 */
export class Interpreter {
  readonly #module: Module;
  readonly #probes: readonly Value[];
  /** With `stopAtProbes`: the step after which every probe is computed, else the last step. */
  readonly #last: number;
  readonly #stop: boolean;
  /** Per op: its kernel, and the results it sets (a Conv fused with the Relu or Clip after it sets the latter's). */
  readonly #steps: { op: Op; run: Kernel; opset: number; results: readonly Value[]; skip: boolean }[];
  /** For each step, the values whose last use it is (freed after it runs). */
  readonly #release: Value[][];
  /** Storage of constants and tensor attributes (subgraphs included), which kernels never overwrite. */
  readonly #pinned = new Set<ArrayBufferLike>();

  /**
   * Prepare `module` for running.
   *
   * @throws {Error} Naming the first op that has no reference kernel, or a probe that is not a value of the main graph.
   *
   * @example Read an intermediate value
   * ```ts
   * import assert from "node:assert/strict";
   * import { Graph, Op, Value } from "./graph.ts";
   * import { Module } from "./module.ts";
   * import { Interpreter } from "./interpreter.ts";
   * import { float32Tensor } from "./tensor.ts";
   * const g = new Graph();
   * const x = g.addInput(new Value("x", { elem: "f32", shape: [2] }));
   * const neg = g.addOp(new Op({ name: "n", type: "Neg", operands: [x], results: [new Value("t")] }));
   * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [neg.result], results: [new Value("y")] })).result);
   * const run = new Interpreter(new Module(g), { probes: [neg.result] });
   * const { t, y } = run.run({ x: float32Tensor([2], [1, -2]) });
   * assert.deepEqual([...t.data], [-1, 2]);
   * assert.deepEqual([...y.data], [0, 2]);
   * assert.deepEqual(g.outputs.map((v) => v.name), ["y"]);
   * ```
   */
  constructor(module: Module, options: InterpretOptions = {}) {
    const registry = options.registry ?? builtinOps;
    this.#module = module;
    const graph = module.graph;
    this.#probes = [...(options.probes ?? [])];
    for (const v of this.#probes) {
      if (v.graph !== graph) throw new Error(`probe "${v.name}" is not a value of graph "${graph.name}"`);
    }
    this.#steps = graph.ops.map((op) => {
      const run = registry.get(op)?.interpret;
      if (run === undefined) {
        throw new Error(`op "${op.name}" (${op.qualifiedType}) has no reference implementation in the interpreter`);
      }
      return { op, run, opset: module.opset(op.domain), results: op.results, skip: false };
    });
    const lastUse = new Map<Value, number>();
    graph.ops.forEach((op, i) => {
      for (const v of op.operands) if (v !== null && v.producer !== null) lastUse.set(v, i);
    });
    this.#release = graph.ops.map(() => []);
    const producers = this.#probes.map((v) => (v.producer === null ? -1 : graph.ops.indexOf(v.producer)));
    this.#stop = options.stopAtProbes ?? false;
    this.#last = this.#stop ? Math.max(-1, ...producers) : graph.ops.length - 1;
    const kept = new Set([...graph.outputs, ...this.#probes]);
    for (const [v, i] of lastUse) if (!kept.has(v)) this.#release[i].push(v);
    fuseSteps(this.#steps, this.#release, kept, registry);
    pinGraph(graph, this.#pinned);
  }

  /** How many ops run fused into the op before them (a Relu or Clip after a Conv, a Mul after a Sigmoid). */
  get fusedOps(): number {
    return this.#steps.filter((s) => s.skip).length;
  }

  /**
   * Run the graph on named inputs.
   *
   * @returns Tensors by name: the graph outputs, then the probes (only the probes with `stopAtProbes`).
   * @throws {Error} For a missing or mistyped input (naming it), or an op that fails (naming the op).
   */
  run(inputs: Readonly<Record<string, Tensor>>): Record<string, Tensor> {
    const graph: Graph = this.#module.graph;
    const env = new Map<Value, Tensor>();
    // Live values per kernel-made storage: an operand dying at an op may lend its storage to the result
    // only when it is the sole holder and the storage is not the caller's or the module's.
    const holders = new Map<ArrayBufferLike, number>();
    const pinned = new Set(this.#pinned);
    // Storage of dropped values by dtype and length, handed to kernels that overwrite all of it (within this run).
    const pool = new Map<string, TensorData[]>();
    const alloc = (dtype: DType, n: number): TensorData => pool.get(`${dtype}:${n}`)?.pop() ?? allocData(dtype, n);
    const symbols = new Map<string, number>();
    for (const v of graph.inputs) {
      const t = inputs[v.name] ?? v.constant;
      if (t === undefined || t === null) throw new Error(`missing input "${v.name}"`);
      checkInput(v, t, symbols);
      env.set(v, t);
      const storage = storageOf(t);
      if (storage !== null) pinned.add(storage);
    }
    for (const v of graph.constants) env.set(v, v.constant!);
    for (let i = 0; i <= this.#last; i++) {
      const { op, run, opset, results, skip } = this.#steps[i];
      if (skip) continue;
      const release = this.#release[i];
      const reusable = (index: number): boolean => {
        const v = op.operands[index];
        if (v === null || v === undefined || !release.includes(v)) return false;
        const storage = storageOf(env.get(v));
        return storage !== null && !pinned.has(storage) && holders.get(storage) === 1;
      };
      const ctx: KernelContext = { opset, reusable, alloc };
      const args = op.operands.map((v) => {
        if (v === null) return null;
        const t = env.get(v);
        if (t === undefined) throw new Error(`op "${op.name}" (${op.type}): operand "${v.name}" has no value`);
        return t;
      });
      let out: Tensor[];
      try {
        out = run(op, args, ctx);
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        throw new Error(msg.startsWith(`op "${op.name}"`) ? msg : `op "${op.name}" (${op.type}): ${msg}`);
      }
      results.forEach((r, k) => {
        if (out[k] === undefined) return;
        env.set(r, out[k]);
        const storage = storageOf(out[k]);
        if (storage !== null) holders.set(storage, (holders.get(storage) ?? 0) + 1);
      });
      for (const v of release) {
        const t = env.get(v);
        const storage = storageOf(t);
        env.delete(v);
        if (storage === null || !holders.has(storage)) continue;
        const left = holders.get(storage)! - 1;
        holders.set(storage, left);
        const data = t!.data as ArrayBufferView;
        if (left > 0 || pinned.has(storage) || data.byteOffset !== 0 || data.byteLength !== storage.byteLength) {
          continue;
        }
        const key = `${t!.dtype}:${t!.data.length}`;
        const free = pool.get(key);
        if (free === undefined) pool.set(key, [t!.data]);
        else free.push(t!.data);
      }
    }
    const result: Record<string, Tensor> = {};
    for (const v of this.#stop ? [] : graph.outputs) {
      const t = env.get(v);
      if (t === undefined) throw new Error(`graph output "${v.name}" was not computed`);
      result[v.name] = t;
    }
    for (const v of this.#probes) {
      const t = env.get(v);
      if (t === undefined) throw new Error(`probe "${v.name}" was not computed`);
      result[v.name] = t;
    }
    return result;
  }
}

/** The storage a tensor's elements live in (null for strings). */
type Step = { op: Op; run: Kernel; opset: number; results: readonly Value[]; skip: boolean };

/**
 * Fuse adjacent built-in ops into one step that computes the last op's result in one pass, the same numbers as the
 * ops and fewer tensors: a Conv whose one use is a Relu, or a Clip with constant bounds (clamped as it is written), a
 * float32 Sigmoid whose one use is a Mul by the Sigmoid's operand (SiLU), and float32 hard-swish written as four ops
 * (`Add` of a constant, `Clip`, `Mul` by the Add's operand, `Div` or `Mul` by a constant; {@linkcode hardSwishAt}).
 * The intermediate results must be neither kept nor probes. The later ops' steps are skipped; what they released is
 * released by the first's.
 */
function fuseSteps(steps: Step[], release: Value[][], kept: Set<Value>, registry: OpRegistry): void {
  const builtin = (op: Op): boolean => registry.get(op) === builtinOps.get(op) && op.domain === "";
  for (let i = 0; i + 3 < steps.length; i++) {
    const chain = hardSwishAt(steps, i, kept, builtin);
    if (chain === null) continue;
    const x = chain.x;
    steps[i] = {
      ...steps[i],
      run: (_op, inputs, ctx) => {
        const t = inputs[x]!;
        // In place when x dies here (element i reads only x[i]).
        const out = ctx.reusable?.(x) === true ? t.data as Float32Array : undefined;
        return [hardSwishChain(t, chain, ctx.alloc, out)];
      },
      results: steps[i + 3].op.results,
    };
    for (let k = 1; k <= 3; k++) {
      steps[i + k] = { ...steps[i + k], skip: true };
      release[i].push(...release[i + k]);
      release[i + k] = [];
    }
    i += 3;
  }
  for (let i = 0; i + 1 < steps.length; i++) {
    if (steps[i].skip || steps[i + 1].skip) continue;
    const [first, next] = [steps[i].op, steps[i + 1].op];
    if (!builtin(first) || !builtin(next) || first.results.length !== 1) continue;
    const r = first.results[0];
    if (kept.has(r) || r.uses.length !== 1 || r.uses[0].op !== next) continue;
    let run: Kernel | null = null;
    if (first.type === "Conv" && r.uses[0].index === 0) {
      const clamp = clampOf(next, steps[i + 1].opset);
      if (clamp !== null) run = (op, inputs, ctx) => interpretConvClamped(op, inputs, ctx, clamp);
    } else if (first.type === "Sigmoid" && next.type === "Mul" && dtypeOf(r) === "f32") {
      const x = first.operands[0];
      const [a, b] = next.operands;
      if ((a === x && b === r) || (a === r && b === x)) run = (_op, inputs, ctx) => [silu(inputs[0]!, ctx.alloc)];
    }
    if (run === null) continue;
    steps[i] = { ...steps[i], run, results: next.results };
    steps[i + 1] = { ...steps[i + 1], skip: true };
    release[i].push(...release[i + 1]);
    release[i + 1] = [];
  }
}

/** A float32 hard-swish chain starting at step `i`: the Add's operand index of x and the chain's constants. */
interface HardSwishChain {
  readonly x: number;
  readonly add: number;
  readonly lo: number;
  readonly hi: number;
  readonly scale: number;
  readonly divide: boolean;
}

/**
 * Steps `i..i+3` as hard-swish (`x · clip(x + a, lo, hi) / s`, as PaddlePaddle and older PyTorch exporters write it):
 * `Add(x, a)`, a Relu or Clip with constant bounds of its result, `Mul` of x and that, `Div` by `s` or `Mul` by it,
 * all float32, `a` and `s` single-element constants of rank at most x's, each intermediate used once by the next op
 * and neither kept nor a probe. Null otherwise.
 */
function hardSwishAt(
  steps: readonly Step[],
  i: number,
  kept: Set<Value>,
  builtin: (op: Op) => boolean,
): HardSwishChain | null {
  const ops = [0, 1, 2, 3].map((k) => steps[i + k].op);
  const [add, clip, mul, last] = ops;
  if (add.type !== "Add" || mul.type !== "Mul" || (last.type !== "Div" && last.type !== "Mul")) return null;
  if (!ops.every(builtin) || steps.slice(i, i + 4).some((s) => s.skip || s.opset < 7)) return null;
  for (let k = 0; k < 3; k++) {
    const r = ops[k].results;
    if (r.length !== 1 || kept.has(r[0]) || r[0].uses.length !== 1 || r[0].uses[0].op !== ops[k + 1]) return null;
  }
  const x0 = add.operands[0], x1 = add.operands[1];
  const rank = (v: Value | null | undefined): number | null => {
    const type = v?.type ?? null;
    return type !== null && isTensorType(type) && type.shape !== null ? type.shape.length : null;
  };
  // A single float32 constant that broadcasts into x's shape (a graph input's default could be replaced).
  const scalar = (v: Value | null | undefined, x: Value | null | undefined): number | null => {
    const t = v?.constant ?? null;
    if (t === null || v!.graph?.inputs.includes(v!) || t.dtype !== "f32" || t.data.length !== 1) return null;
    const r = rank(x);
    return r !== null && t.shape.length <= r ? Number(t.data[0]) : null;
  };
  const x = scalar(x1, x0) !== null ? 0 : scalar(x0, x1) !== null ? 1 : -1;
  if (x < 0) return null;
  const xv = add.operands[x]!;
  if (dtypeOf(xv) !== "f32" || dtypeOf(add.results[0]) !== "f32" || clip.operands[0] !== add.results[0]) return null;
  const clamp = clampOf(clip, steps[i + 1].opset);
  const [m0, m1] = mul.operands, c = clip.results[0], m = mul.results[0];
  if (clamp === null || !((m0 === xv && m1 === c) || (m0 === c && m1 === xv))) return null;
  const [l0, l1] = last.operands;
  const scale = last.type === "Div"
    ? l0 === m ? scalar(l1, xv) : null
    : l0 === m
    ? scalar(l1, xv)
    : l1 === m
    ? scalar(l0, xv)
    : null;
  if (scale === null) return null;
  return { x, add: scalar(add.operands[1 - x], xv)!, lo: clamp[0], hi: clamp[1], scale, divide: last.type === "Div" };
}

/** The element type of a value's tensor type, or null. */
function dtypeOf(v: Value | null | undefined): string | null {
  const type = v?.type ?? null;
  return type !== null && isTensorType(type) ? elementTypeToString(type.elem) : null;
}

/** The bounds a Relu or Clip (float32 or float64, constant bounds) applies, or null when it is not one. */
function clampOf(op: Op, opset: number): [number, number] | null {
  const dtype = dtypeOf(op.results[0]);
  if (dtype !== "f32" && dtype !== "f64") return null;
  if (op.type === "Relu" && op.operands.length === 1) return [0, Infinity];
  if (op.type !== "Clip") return null;
  if (opset < 11) return [op.float("min", -Infinity), op.float("max", Infinity)];
  const bound = (index: number, none: number): number | null => {
    const v = op.operands[index];
    if (v === null || v === undefined) return none;
    // A constant of the same type (an input's default could be replaced by the caller).
    const t = v.constant;
    if (t === null || v.graph?.inputs.includes(v) || t.data.length !== 1 || t.dtype !== dtype) return null;
    return Number(t.data[0]);
  };
  const [lo, hi] = [bound(1, -Infinity), bound(2, Infinity)];
  return lo === null || hi === null ? null : [lo, hi];
}

function storageOf(t: Tensor | undefined): ArrayBufferLike | null {
  return t === undefined || Array.isArray(t.data) ? null : (t.data as ArrayBufferView).buffer;
}

/** Add the storage of `graph`'s constants and of every tensor attribute, subgraphs included, to `pinned`. */
function pinGraph(graph: Graph, pinned: Set<ArrayBufferLike>): void {
  const pinTensor = (t: Tensor): void => {
    const storage = storageOf(t);
    if (storage !== null) pinned.add(storage);
  };
  for (const v of graph.constants) if (v.constant !== null && v.constant !== undefined) pinTensor(v.constant);
  for (const v of graph.inputs) if (v.constant !== null && v.constant !== undefined) pinTensor(v.constant);
  const pinAttribute = (a: Attribute): void => {
    if (a.kind === "tensor") pinTensor(a.value);
    else if (a.kind === "tensors") a.value.forEach(pinTensor);
    else if (a.kind === "graph") pinGraph(a.value, pinned);
    else if (a.kind === "graphs") { for (const g of a.value) pinGraph(g, pinned); }
  };
  for (const op of graph.ops) for (const a of op.attributes.values()) pinAttribute(a);
}

function checkInput(v: Value, t: Tensor, symbols: Map<string, number>): void {
  if (!isTensorType(v.type)) return;
  const elem = elementTypeToString(v.type.elem);
  if (elem !== t.dtype) throw new Error(`input "${v.name}" must be ${elem}, found ${t.dtype}`);
  const shape: readonly Dim[] | null = v.type.shape;
  if (shape === null) return;
  const bad = (): Error =>
    new Error(`input "${v.name}" must have shape [${shape.join(",")}], found [${t.shape.join(",")}]`);
  if (shape.length !== t.shape.length) throw bad();
  shape.forEach((d, i) => {
    if (typeof d === "number") {
      if (d !== t.shape[i]) throw bad();
    } else if (d !== "?") {
      const bound = symbols.get(d);
      if (bound === undefined) symbols.set(d, t.shape[i]);
      else if (bound !== t.shape[i]) throw bad();
    }
  });
}

/**
 * Run `module` on named inputs with the reference interpreter.
 *
 * @param module The module to run.
 * @param inputs Tensors by graph input name.
 * @param options Op definitions, and values to probe beside the outputs.
 * @returns Tensors by graph output name, then by probe name.
 *
 * @example Run a one-op graph
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "./graph.ts";
 * import { Module } from "./module.ts";
 * import { interpret } from "./interpreter.ts";
 * import { float32Tensor } from "./tensor.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [3] }));
 * const relu = g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] }));
 * g.outputs.push(relu.result);
 * const { y } = interpret(new Module(g), { x: float32Tensor([3], [-1, 0, 2]) });
 * assert.deepEqual([...y.data], [0, 0, 2]);
 * ```
 */
export function interpret(
  module: Module,
  inputs: Readonly<Record<string, Tensor>>,
  options: InterpretOptions = {},
): Record<string, Tensor> {
  return new Interpreter(module, options).run(inputs);
}
