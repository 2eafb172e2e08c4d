/**
 * Shape inference: walks a graph in order and gives every op result the type
 * its {@linkcode OpDef} infers, propagating constants and the contents of
 * small shape tensors so PyTorch-style `Shape -> Gather -> Concat -> Reshape`
 * chains end in static (or batch-symbolic) shapes.
 * @module
 */
import { type Graph, isDefaultDomain, type Op, type Value } from "./graph.ts";
import type { Module } from "./module.ts";
import type { InferContext, OpRegistry } from "./op_def.ts";
import { builtinOps } from "./builtin_ops.ts";
import { opError } from "./ops/common.ts";
import type { Tensor } from "./tensor.ts";
import { type Dim, isTensorType, sameElementType, sameShape, type TensorType, typeToString } from "./types.ts";

/** Options of {@linkcode inferShapes}. */
export interface InferShapesOptions {
  /** Op definitions (default: the built-ins). */
  registry?: OpRegistry;
  /**
   * When true (default), a result whose recorded type disagrees with the inferred
   * one is an error naming the op; when false the inferred type silently wins.
   */
  strict?: boolean;
}

/** Constants found while inferring (folded small subgraphs), by value. */
export type FoldedConstants = Map<Value, Tensor>;

/**
 * Operands that ONNX types as integer tensors, per default-domain op type: from the given opset on,
 * which operands must be int64 and which int32 or int64. Generated from onnx 1.12's `onnx.defs`
 * (input type constraints of exactly `tensor(int64)` or `tensor(int32), tensor(int64)`); the
 * opset-18 `axes` operands of the Reduce ops are added by hand. Ops read these contents as
 * dimensions, axes or indices, so another element type (a string shape) is an error naming the op.
 */
const INTEGER_OPERANDS: Readonly<Record<string, readonly [since: number, int64: number[], int32or64: number[]][]>> = {
  BlackmanWindow: [[17, [], [0]]],
  ConstantOfShape: [[9, [0], []]],
  CumSum: [[11, [], [1]]],
  DFT: [[17, [], [1]]],
  Expand: [[8, [1], []]],
  Gather: [[1, [], [1]]],
  GatherElements: [[11, [], [1]]],
  GatherND: [[11, [1], []]],
  HammingWindow: [[17, [], [0]]],
  HannWindow: [[17, [], [0]]],
  Loop: [[1, [0], []]],
  MaxUnpool: [[9, [1, 2], []]],
  MelWeightMatrix: [[17, [], [0, 1, 2]]],
  NegativeLogLikelihoodLoss: [[12, [], [1]]],
  NonMaxSuppression: [[10, [2], []]],
  Pad: [[1, [], []], [11, [1], []]],
  ReduceSum: [[1, [], []], [13, [1], []]],
  Reshape: [[1, [], []], [5, [1], []]],
  Resize: [[10, [], []], [11, [3], []]],
  ReverseSequence: [[10, [1], []]],
  RoiAlign: [[10, [2], []]],
  STFT: [[17, [], [1, 3]]],
  Scan: [[8, [0], []], [9, [], []]],
  Scatter: [[9, [], [1]]],
  ScatterElements: [[11, [], [1]]],
  ScatterND: [[11, [1], []]],
  SequenceAt: [[11, [], [1]]],
  SequenceErase: [[11, [], [1]]],
  SequenceInsert: [[11, [], [2]]],
  Slice: [[1, [], []], [10, [], [1, 2, 3, 4]]],
  SoftmaxCrossEntropyLoss: [[12, [], [1]]],
  Split: [[1, [], []], [13, [1], []]],
  SplitToSequence: [[11, [], [1]]],
  Squeeze: [[1, [], []], [13, [1], []]],
  Tile: [[1, [], []], [6, [1], []]],
  TopK: [[1, [], []], [10, [1], []]],
  Trilu: [[14, [1], []]],
  Unsqueeze: [[1, [], []], [13, [1], []]],
  ReduceL1: [[18, [1], []]],
  ReduceL2: [[18, [1], []]],
  ReduceLogSum: [[18, [1], []]],
  ReduceLogSumExp: [[18, [1], []]],
  ReduceMax: [[18, [1], []]],
  ReduceMean: [[18, [1], []]],
  ReduceMin: [[18, [1], []]],
  ReduceProd: [[18, [1], []]],
  ReduceSumSquare: [[18, [1], []]],
};

/** Throws, naming the op, when an operand ONNX types as an integer tensor has another element type. */
function checkIntegerOperands(op: Op, ctx: InferContext): void {
  if (!isDefaultDomain(op.domain)) return;
  const versions = INTEGER_OPERANDS[op.type];
  if (versions === undefined) return;
  let current: readonly [number, number[], number[]] | undefined;
  for (const v of versions) if (v[0] <= ctx.opset) current = v;
  if (current === undefined) return;
  const [, int64, int32or64] = current;
  for (const [indices, allowed] of [[int64, ["i64"]], [int32or64, ["i32", "i64"]]] as const) {
    for (const i of indices) {
      const elem = ctx.types[i]?.elem;
      if (elem === undefined || (allowed as readonly unknown[]).includes(elem)) continue;
      throw opError(
        op,
        `operand #${i} "${op.operands[i]!.name}" must be a tensor of ${allowed.join(" or ")} (ONNX ${op.type}), found ${
          typeof elem === "string" ? elem : typeToString({ elem, shape: null })
        }`,
      );
    }
  }
}

/** Operand element count up to which ops over constants are evaluated during inference. */
const FOLD_LIMIT = 1 << 16;

/**
 * Infer the type of every op result in `module` (in place) and return the
 * constants that shape inference could evaluate.
 *
 * @throws {Error} Naming the op whose operands are inconsistent.
 *
 * @example Infer a Relu's result type
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "./graph.ts";
 * import { Module } from "./module.ts";
 * import { inferShapes } from "./shape.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4] }));
 * const relu = g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] }));
 * inferShapes(new Module(g));
 * assert.deepEqual(relu.result.type, { elem: "f32", shape: ["N", 4] });
 * ```
 */
export function inferShapes(module: Module, options: InferShapesOptions = {}): FoldedConstants {
  const registry = options.registry ?? builtinOps;
  const folded: FoldedConstants = new Map();
  const shapeValues = new Map<Value, readonly Dim[]>();
  inferGraph(module, module.graph, registry, options.strict ?? true, folded, shapeValues);
  return folded;
}

function inferGraph(
  module: Module,
  graph: Graph,
  registry: OpRegistry,
  strict: boolean,
  folded: FoldedConstants,
  shapeValues: Map<Value, readonly Dim[]>,
): void {
  for (const op of graph.ops) {
    const def = registry.get(op);
    if (def?.infer === undefined) continue;
    const ctx = contextOf(module, op, folded, shapeValues);
    checkIntegerOperands(op, ctx);
    let types: (TensorType | null)[];
    try {
      types = def.infer(op, ctx);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      throw msg.startsWith(`op "${op.name}"`) ? e : opError(op, msg);
    }
    op.results.forEach((r, i) => {
      const t = types[i] ?? null;
      if (t === null) return;
      if (strict && isTensorType(r.type) && r.type.shape !== null && t.shape !== null && !compatible(r.type, t)) {
        throw opError(
          op,
          `result "${r.name}" is declared ${typeToString(r.type)} but its operands give ${typeToString(t)}`,
        );
      }
      r.type = refine(r.type, t);
    });
    const sv = def.shapeValue?.(op, ctx) ?? null;
    if (sv !== null) shapeValues.set(op.result, sv);
    if (def.interpret !== undefined && op.results.length > 0 && canFold(op, ctx)) {
      try {
        const out = def.interpret(op, ctx.constants as Tensor[], { opset: ctx.opset });
        op.results.forEach((r, i) => {
          if (out[i] !== undefined) folded.set(r, out[i]);
        });
      } catch {
        // Folding is an optimisation of inference only; the verifier and the interpreter report real errors.
      }
    }
  }
}

function contextOf(
  module: Module,
  op: Op,
  folded: FoldedConstants,
  shapeValues: Map<Value, readonly Dim[]>,
): InferContext {
  const types = op.operands.map((v) => (v !== null && isTensorType(v.type) ? v.type : null));
  const constants = op.operands.map((v) => (v === null ? null : v.constant ?? folded.get(v) ?? null));
  const values = op.operands.map((v, i) => {
    if (v === null) return null;
    const known = shapeValues.get(v);
    if (known !== undefined) return known;
    const c = constants[i];
    if (c !== null && (c.dtype === "i64" || c.dtype === "i32") && c.shape.length <= 1 && c.data.length <= 64) {
      return Array.from(c.data as ArrayLike<number | bigint>, Number);
    }
    return null;
  });
  return { opset: module.opset(op.domain), types, constants, shapeValues: values };
}

function canFold(op: Op, ctx: InferContext): boolean {
  if (op.type === "Constant" && op.operands.length === 0) return true;
  let elements = 0;
  for (let i = 0; i < op.operands.length; i++) {
    if (op.operands[i] === null) continue;
    const c = ctx.constants[i];
    if (c === null) return false;
    elements += c.data.length;
  }
  return op.operands.length > 0 && elements <= FOLD_LIMIT;
}

function compatible(a: TensorType, b: TensorType): boolean {
  if (!sameElementType(a.elem, b.elem)) return false;
  if (a.shape === null || b.shape === null) return true;
  if (a.shape.length !== b.shape.length) return false;
  return a.shape.every((d, i) => {
    const e = b.shape![i];
    return typeof d !== "number" || typeof e !== "number" || d === e;
  });
}

/** Keep the more informative of a recorded and an inferred type, per dimension. */
function refine(recorded: Value["type"], inferred: TensorType): TensorType {
  if (!isTensorType(recorded) || recorded.shape === null || inferred.shape === null) return inferred;
  if (sameShape(recorded.shape, inferred.shape)) return inferred;
  if (recorded.shape.length !== inferred.shape.length) return inferred;
  const shape = inferred.shape.map((d, i) => {
    const r = recorded.shape![i];
    if (typeof d === "number") return d;
    if (typeof r === "number") return r;
    return d === "?" || d.includes("*") ? r : d;
  });
  return { elem: inferred.elem, shape };
}
