/**
 * The cost model: parameters, multiply-accumulates and weight bytes per op and
 * in total, and the peak activation memory of a batch-1 run. MACs follow
 * background.md §6 (conv: Kh*Kw*Cin/groups*Cout*Hout*Wout; FC: in*out);
 * FLOPs are 2 x MACs and are not reported separately. Weights that hold zeros
 * (from unstructured pruning) are also counted in CSR form.
 * @module
 */
import type { Graph, Op, Value } from "./graph.ts";
import type { Module } from "./module.ts";
import type { OpRegistry } from "./op_def.ts";
import { builtinOps } from "./builtin_ops.ts";
import type { Tensor } from "./tensor.ts";
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
  /** Present when the op's weight matrices (rank 2 or more) hold zeros: their count and CSR size. */
  sparse?: SparseCost;
}

/**
 * The weight matrices of one op stored in CSR (compressed sparse row): the
 * non-zero values, one column index per value and one row pointer per row plus
 * one. A tensor of rank above 2 is the matrix `shape[0] x (product of the rest)`
 * (Conv: `Cout x Cin*Kh*Kw`); a Gemm/MatMul weight is taken in its stored layout.
 */
export interface SparseCost {
  /** Elements of the weight matrices. */
  elements: number;
  /** Elements that are not zero. */
  nonzeros: number;
  /** CSR bytes: values, column indices and row pointers (see {@linkcode csrBytes}). */
  csrBytes: number;
  /** Bits of a column index (the widest over the op's matrices). */
  indexBits: number;
  /** Bits of a row pointer (the widest over the op's matrices). */
  pointerBits: number;
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
  /**
   * Storage bytes of all weight constants with each weight matrix that holds zeros counted as the smaller of
   * its dense and CSR bytes; equal to `weightBytes` when no weight is sparse.
   */
  sparseWeightBytes: number;
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
    sparseWeightBytes: 0,
    peakActivationBytes: 0,
  };
  const dims = new DimCounter(module.graph);
  for (const op of module.graph.ops) {
    let params = 0;
    let weightBytes = 0;
    let sparse: SparseCost | undefined;
    for (const v of op.operands) {
      if (v === null || !isWeight(v)) continue;
      const t = v.constant!;
      const n = t.shape.reduce((a, b) => a * b, 1);
      const bits = elementBits((v.type as TensorType).elem);
      const bytes = Math.ceil((n * bits) / 8);
      params += n;
      weightBytes += bytes;
      const nonzeros = t.shape.length >= 2 ? countNonzeros(t) : null;
      let csr: CsrSize | null = null;
      if (nonzeros !== null && nonzeros < n) {
        csr = csrBytes(t.shape[0], n / Math.max(1, t.shape[0]), nonzeros, bits);
        sparse = {
          elements: (sparse?.elements ?? 0) + n,
          nonzeros: (sparse?.nonzeros ?? 0) + nonzeros,
          csrBytes: (sparse?.csrBytes ?? 0) + csr.bytes,
          indexBits: Math.max(sparse?.indexBits ?? 0, csr.indexBits),
          pointerBits: Math.max(sparse?.pointerBits ?? 0, csr.pointerBits),
        };
      }
      if (!counted.has(v)) {
        counted.add(v);
        totals.params += n;
        totals.weightBytes += bytes;
        totals.sparseWeightBytes += csr === null ? bytes : Math.min(bytes, csr.bytes);
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
      const layer: LayerCost = { name: op.name, type: op.qualifiedType, params, macs, weightBytes };
      if (sparse !== undefined) layer.sparse = sparse;
      layers.push(layer);
    }
  }
  totals.peakActivationBytes = peakActivationBytes(module.graph);
  if (totals.unknownMacLayers > 0) totals.symbolicDims = dims.symbolicInputDims();
  return { totals, layers };
}

/** Size of a matrix in CSR form. */
export interface CsrSize {
  /** Values plus column indices plus row pointers, in bytes. */
  bytes: number;
  /** Bits of a column index: the narrowest of 8, 16, 32 that holds `cols - 1`. */
  indexBits: number;
  /** Bits of a row pointer: the narrowest of 8, 16, 32 that holds `nonzeros`. */
  pointerBits: number;
}

/**
 * Bytes of a `rows x cols` matrix with `nonzeros` non-zero values of
 * `valueBits` bits in CSR form: `nonzeros` values, `nonzeros` column indices
 * and `rows + 1` row pointers, each index type the narrowest of 8, 16 or 32
 * bits that holds its largest value.
 *
 * @example A 128 x 576 matrix at 10% density, f32 values
 * ```ts
 * import assert from "node:assert/strict";
 * import { csrBytes } from "./cost.ts";
 * const size = csrBytes(128, 576, 7373, 32);
 * assert.deepEqual(size, { bytes: 7373 * 4 + 7373 * 2 + 129 * 2, indexBits: 16, pointerBits: 16 });
 * ```
 */
export function csrBytes(rows: number, cols: number, nonzeros: number, valueBits: number): CsrSize {
  const width = (max: number): number => (max < 2 ** 8 ? 8 : max < 2 ** 16 ? 16 : 32);
  const indexBits = width(Math.max(0, cols - 1));
  const pointerBits = width(nonzeros);
  const bytes = Math.ceil((nonzeros * valueBits) / 8) + (nonzeros * indexBits) / 8 + ((rows + 1) * pointerBits) / 8;
  return { bytes, indexBits, pointerBits };
}

/** Elements that are not zero (either sign), or null for an element type read as dense. */
function countNonzeros(t: Tensor): number | null {
  const d = t.data;
  let n = 0;
  if (t.dtype === "f32" || t.dtype === "f64") {
    for (let i = 0; i < d.length; i++) if ((d as Float32Array)[i] !== 0) n++;
    return n;
  }
  if (t.dtype === "f16" || t.dtype === "bf16") {
    for (let i = 0; i < d.length; i++) if (((d as Uint16Array)[i] & 0x7fff) !== 0) n++;
    return n;
  }
  return null;
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
