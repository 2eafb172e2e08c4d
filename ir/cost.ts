/**
 * The cost model: parameters, multiply-accumulates and weight bytes per op and
 * in total, and the peak activation memory of a batch-1 run. MACs follow
 * background.md §6 (conv: Kh*Kw*Cin/groups*Cout*Hout*Wout; FC: in*out);
 * FLOPs are 2 x MACs and are not reported separately.
 * @module
 */
import type { Graph, Op, Value } from "./graph.ts";
import type { Module } from "./module.ts";
import type { OpRegistry } from "./op_def.ts";
import { builtinOps } from "./builtin_ops.ts";
import { type Dim, elementBits, isTensorType, type TensorType } from "./types.ts";

/** Cost of one op (a "layer" in reports). */
export interface LayerCost {
  /** Op name. */
  name: string;
  /** Qualified op type. */
  type: string;
  /** Elements of the floating-point (or BFP/fixed) constants the op reads. */
  params: number;
  /**
   * Multiply-accumulates of a batch-1 run; `null` when they depend on a dimension that is not known (a symbolic
   * height or width: see {@linkcode CostTotals.symbolicDims}).
   */
  macs: number | null;
  /** Storage bytes of those constants. */
  weightBytes: number;
}

/** Totals over a module. */
export interface CostTotals {
  /** Elements of all weight constants (each counted once even when shared). */
  params: number;
  /** Multiply-accumulates of a batch-1 run, over the layers whose MACs are known. */
  macs: number;
  /** Layers whose MACs are unknown (`LayerCost.macs` null); 0 when the total is complete. */
  unknownMacLayers: number;
  /**
   * The graph inputs' symbolic dimensions other than the batch (`x[2]=H`), which leave MACs unknown: give the
   * inputs static shapes (`inputShapes` of `compile()`, `--input-shape`) to count them.
   */
  symbolicDims: string[];
  /** Storage bytes of all weight constants. */
  weightBytes: number;
  /** Peak bytes of live activations during a batch-1 run in graph order (inputs and outputs included). */
  peakActivationBytes: number;
}

/** The cost report of a module. */
export interface CostReport {
  /** Totals. */
  totals: CostTotals;
  /** Per op, in graph order, for ops with parameters or MACs. */
  layers: LayerCost[];
}

/** Options of {@linkcode costOf}. */
export interface CostOptions {
  /** Op definitions (default: the built-ins). */
  registry?: OpRegistry;
}

/**
 * Compute the cost of `module` from the types recorded on its values (run
 * `inferShapes` first), for a batch-1 run: the batch (a symbolic first
 * dimension of a graph input, wherever it flows, and an unknown first
 * dimension of any value) counts as 1. Any other dimension that is not a
 * number (a symbolic height, or one shape inference could not compute) makes
 * the MACs of the layers that depend on it unknown (`null`), never a guess.
 *
 * @example Cost of a one-layer model
 * ```ts
 * import assert from "node:assert/strict";
 * import { costOf } from "./cost.ts";
 * import { Module } from "./module.ts";
 * assert.equal(costOf(new Module()).totals.params, 0);
 * ```
 */
export function costOf(module: Module, options: CostOptions = {}): CostReport {
  const registry = options.registry ?? builtinOps;
  const layers: LayerCost[] = [];
  const counted = new Set<Value>();
  const totals: CostTotals = {
    params: 0,
    macs: 0,
    unknownMacLayers: 0,
    symbolicDims: [],
    weightBytes: 0,
    peakActivationBytes: 0,
  };
  const dims = new DimCounter(module.graph);
  for (const op of module.graph.ops) {
    let params = 0;
    let weightBytes = 0;
    for (const v of op.operands) {
      if (v === null || !isWeight(v)) continue;
      const n = v.constant!.shape.reduce((a, b) => a * b, 1);
      const bytes = Math.ceil((n * elementBits((v.type as TensorType).elem)) / 8);
      params += n;
      weightBytes += bytes;
      if (!counted.has(v)) {
        counted.add(v);
        totals.params += n;
        totals.weightBytes += bytes;
      }
    }
    const def = registry.get(op);
    const operandTypes = op.operands.map((v) => (v !== null && isTensorType(v.type) ? dims.batchOne(v.type) : null));
    const resultTypes = op.results.map((v) => (isTensorType(v.type) ? dims.batchOne(v.type) : null));
    let macs: number | null = 0;
    try {
      macs = def?.macs?.(op, operandTypes, resultTypes) ?? 0;
    } catch {
      macs = 0; // Shapes the op's MACs formula cannot read: nothing counted.
    }
    // An unknown dimension is NaN in the types, so a count that depends on it is NaN.
    if (Number.isNaN(macs)) macs = null;
    if (macs === null) totals.unknownMacLayers++;
    else totals.macs += macs;
    if (params > 0 || macs !== 0) {
      layers.push({ name: op.name, type: op.qualifiedType, params, macs, weightBytes });
    }
  }
  totals.peakActivationBytes = peakActivationBytes(module.graph);
  if (totals.unknownMacLayers > 0) totals.symbolicDims = dims.symbolicInputDims();
  return { totals, layers };
}

/** A constant with a real-valued element type: a weight, as opposed to shape or index data. */
function isWeight(v: Value): boolean {
  if (v.constant === null || !isTensorType(v.type)) return false;
  const e = v.type.elem;
  return typeof e !== "string" || e === "f32" || e === "f16" || e === "bf16" || e === "f64" ||
    e.startsWith("f8") || e === "f4e2m1";
}

/** Dimensions as a batch-1 run counts them: numbers, the batch as 1, anything else unknown (NaN). */
class DimCounter {
  /** Symbolic first dimensions of the graph inputs: the batch. */
  readonly #batch: ReadonlySet<string>;
  readonly #graph: Graph;

  constructor(graph: Graph) {
    this.#graph = graph;
    this.#batch = new Set(
      graph.inputs.flatMap((v) => {
        const d = v.constant === null && isTensorType(v.type) ? v.type.shape?.[0] : undefined;
        return typeof d === "string" && d !== "?" ? [d] : [];
      }),
    );
  }

  /** `type` with the batch as 1 and every other non-numeric dimension as NaN. */
  batchOne(type: TensorType): TensorType {
    if (type.shape === null) return type;
    return { elem: type.elem, shape: type.shape.map((d, axis) => this.#count(d, axis)) };
  }

  #count(d: Dim, axis: number): number {
    if (typeof d === "number") return d;
    if (d === "?") return axis === 0 ? 1 : NaN;
    return d.split("*").reduce((p, f) => p * (/^\d+$/.test(f) ? Number(f) : this.#batch.has(f) ? 1 : NaN), 1);
  }

  /** `x[2]=H` for each graph input dimension after the first that is not a number. */
  symbolicInputDims(): string[] {
    return this.#graph.inputs.flatMap((v) => {
      if (v.constant !== null || !isTensorType(v.type) || v.type.shape === null) return [];
      return v.type.shape.flatMap((d, axis) => (axis > 0 && typeof d === "string" ? [`${v.name}[${axis}]=${d}`] : []));
    });
  }
}

function dimAtBatchOne(d: Dim): number {
  if (typeof d === "number") return d;
  return d.split("*").reduce((p, f) => p * (/^\d+$/.test(f) ? Number(f) : 1), 1);
}

function activationBytes(v: Value): number {
  if (!isTensorType(v.type) || v.type.shape === null) return 0;
  const n = v.type.shape.reduce<number>((p, d) => p * dimAtBatchOne(d), 1);
  return Math.ceil((n * elementBits(v.type.elem)) / 8);
}

/** Liveness walk: a value is live from its definition to its last use (graph outputs to the end). */
function peakActivationBytes(graph: Graph): number {
  const lastUse = new Map<Value, number>();
  graph.ops.forEach((op: Op, i) => {
    for (const v of op.operands) if (v !== null && v.constant === null) lastUse.set(v, i);
  });
  for (const v of graph.outputs) lastUse.set(v, graph.ops.length);
  let live = 0;
  for (const v of graph.inputs) if (v.constant === null) live += activationBytes(v);
  let peak = live;
  graph.ops.forEach((op, i) => {
    for (const r of op.results) live += activationBytes(r);
    peak = Math.max(peak, live);
    for (const v of new Set(op.operands)) {
      if (v !== null && v.constant === null && lastUse.get(v) === i) live -= activationBytes(v);
    }
    for (const r of op.results) if (!lastUse.has(r)) live -= activationBytes(r);
  });
  return peak;
}
