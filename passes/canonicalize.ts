/**
 * `canonicalize`: the clean-up that makes exported graphs look the same
 * whatever the exporter: no Identity or inference Dropout, no `Constant` ops,
 * and PyTorch's static shape arithmetic (`Shape -> Gather -> Concat -> Reshape`)
 * folded into constants.
 * @module
 */
import { type Graph, isConstant, isDefaultDomain, type Op, type Value } from "../ir/graph.ts";
import type { Module } from "../ir/module.ts";
import type { InferContext, OpDef, OpRegistry } from "../ir/op_def.ts";
import { addConstant, replaceOp } from "../ir/rewriter.ts";
import { inferShapes } from "../ir/shape.ts";
import { fromFloat64, shapeSize, type Tensor } from "../ir/tensor.ts";
import { type Dim, isTensorType, type TensorType } from "../ir/types.ts";
import { eliminateDeadCode } from "./dce.ts";
import { definePass, type Pass } from "./pass.ts";

/** Options of `canonicalize`. */
export const canonicalizeOptions = {
  foldLimit: {
    kind: "int",
    default: 1024,
    min: 0,
    doc: "Largest result (elements) an op over constants is folded into; larger ones (weight arithmetic) stay ops",
  },
} as const;

/** Ops whose results are not a function of their operands: never evaluated at compile time. */
const NONDETERMINISTIC: ReadonlySet<string> = new Set([
  "RandomNormal",
  "RandomNormalLike",
  "RandomUniform",
  "RandomUniformLike",
  "Multinomial",
  "Bernoulli",
]);

/** Per-run state of one canonicalization of a module's main graph. */
interface Walk {
  readonly module: Module;
  readonly graph: Graph;
  readonly ops: OpRegistry;
  /** Known contents of small integer values as dimensions (what `OpDef.shapeValue` tracks). */
  readonly shapeValues: Map<Value, readonly Dim[]>;
  readonly foldLimit: number;
}

/**
 * `canonicalize`: rewrite the main graph into its canonical form, in one walk
 * in graph order, then erase what became dead (so no `dce` is needed after it).
 *
 * Cases:
 * - `Identity`, and `Dropout` in inference mode (opset ≥ 12: `training_mode`
 *   absent or a constant false; opset < 7: `is_test = 1`) whose `mask` result
 *   is unused, are bypassed: their users read the input directly. When the
 *   bypassed result is a graph output, the output keeps its name: the input is
 *   renamed when it is an op result that is not itself a graph output;
 *   otherwise (a graph input, a constant, an output twice) the op stays.
 * - `Constant` ops become graph constants of the same name.
 * - An op of the default domain whose operands are all constants, with a
 *   kernel and a deterministic result of at most `fold-limit` elements, is
 *   evaluated with its reference kernel (so results are exactly what the
 *   interpreter computes) and replaced by constants.
 * - An integer op whose contents shape inference knows exactly (`Shape` of a
 *   statically shaped value, `Gather` of a known dimension, `Concat` of those,
 *   ...) becomes a constant, even when its operands are not constants.
 * - A `Reshape` whose shape is computed but known up to dimensions copied from
 *   its input at the same position (PyTorch's `[N, -1]` where `N` is the batch
 *   of the reshaped tensor) gets a constant shape with `0` there (`[0, -1]`),
 *   which ONNX Reshape reads as "copy this dimension" (`allowzero = 0`), so a
 *   symbolic batch stays symbolic. Anything less certain stays computed.
 *
 * Graph outputs are never replaced by constants, graph inputs (even with an
 * initializer default) are never treated as constants, ops in other domains
 * and ops holding subgraphs are left alone, and only the main graph is
 * rewritten (dead code is also removed from subgraphs).
 * Statistics: `identities-removed`, `dropouts-removed`, `constants-folded`,
 * `reshape-shapes-folded`, `dead-ops-removed`, `dead-constants-removed`.
 *
 * @example Remove an Identity and fold a Shape
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../ir/parser.ts";
 * import { canonicalizePass } from "./canonicalize.ts";
 * import { testPassContext } from "./testing.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[2,3]) -> (%z) {
 *   %y = Identity(%x) : f32[2,3]
 *   %s = Shape(%y) : i64[2]
 *   %z = Reshape(%y, %s) : f32[2,3]
 *   return %z
 * }
 * }`);
 * const ctx = testPassContext();
 * assert.equal(canonicalizePass.run(m, { foldLimit: 1024 }, ctx), true);
 * assert.deepEqual(m.graph.ops.map((op) => op.type), ["Reshape"]);
 * assert.deepEqual(m.graph.constants.map((c) => c.name), ["s"]);
 * ```
 */
export const canonicalizePass: Pass<typeof canonicalizeOptions> = definePass({
  name: "canonicalize",
  summary: "Remove Identity and inference Dropout; fold Constant ops and static shape computations into constants",
  options: canonicalizeOptions,
  run(module, { foldLimit }, ctx): boolean {
    const graph = module.graph;
    inferShapes(module, { registry: ctx.ops });
    const walk: Walk = {
      module,
      graph,
      ops: ctx.ops,
      shapeValues: new Map(),
      foldLimit,
    };
    let identities = 0;
    let dropouts = 0;
    let folded = 0;
    let reshapes = 0;
    for (const op of [...graph.ops]) {
      if (op.graph !== graph) continue;
      if (onnxOp(op, "Identity")) {
        if (bypass(walk, op)) identities++;
        continue;
      }
      if (onnxOp(op, "Dropout")) {
        if (isInferenceDropout(walk, op) && bypass(walk, op)) {
          dropouts++;
          continue;
        }
      }
      if (fold(walk, op)) {
        folded++;
        continue;
      }
      if (onnxOp(op, "Reshape") && foldReshapeShape(walk, op)) reshapes++;
    }
    const dead = eliminateDeadCode(graph);
    ctx.stat("identities-removed", identities);
    ctx.stat("dropouts-removed", dropouts);
    ctx.stat("constants-folded", folded);
    ctx.stat("reshape-shapes-folded", reshapes);
    ctx.stat("dead-ops-removed", dead.ops);
    ctx.stat("dead-constants-removed", dead.constants);
    return identities + dropouts + folded + reshapes + dead.ops + dead.constants > 0;
  },
});

/** True for an op of ONNX's default domain (of type `type` when given). */
function onnxOp(op: Op, type?: string): boolean {
  return isDefaultDomain(op.domain) && (type === undefined || op.type === type);
}

function isOutput(walk: Walk, v: Value): boolean {
  return walk.graph.outputs.includes(v);
}

/**
 * Dropout is the identity in inference mode (ONNX Dropout: "If training_mode is
 * false ... the output Y will be the same as input"); its mask must be unused.
 */
function isInferenceDropout(walk: Walk, op: Op): boolean {
  const opset = walk.module.opset("");
  if (opset < 7 && op.int("is_test", 0) !== 1) return false;
  if (opset >= 12) {
    const training = op.operand(2);
    if (training !== null) {
      if (!isConstant(training)) return false;
      const t = training.constant!;
      if (t.data.length !== 1 || Number((t.data as ArrayLike<number>)[0]) !== 0) return false;
    }
  }
  return op.results.slice(1).every((r) => r.isDead);
}

/** Make the users of `op`'s result 0 read its operand 0 instead, and erase `op`. */
function bypass(walk: Walk, op: Op): boolean {
  const y = op.results[0];
  const x = op.operand(0);
  if (y === undefined || x === null || op.results.slice(1).some((r) => !r.isDead)) return false;
  // When y names a graph output, x must take over the name, which only an op result that is no output itself can.
  if (isOutput(walk, y) && (x.producer === null || x.producer.graph !== walk.graph || isOutput(walk, x))) return false;
  replaceOp(op, [x], { names: "outputs" });
  return true;
}

/** The shape-inference view of `op`'s operands, with this pass's notion of constants. */
function inferContext(walk: Walk, op: Op): InferContext {
  const types = op.operands.map((v) => (v !== null && isTensorType(v.type) ? v.type : null));
  const constants = op.operands.map((v) => (isConstant(v) ? v.constant : null));
  const shapeValues = op.operands.map((v, i) => {
    if (v === null) return null;
    const known = walk.shapeValues.get(v);
    if (known !== undefined) return known;
    const c = constants[i];
    if (c !== null && (c.dtype === "i64" || c.dtype === "i32") && c.shape.length <= 1 && c.data.length <= 64) {
      return Array.from(c.data as ArrayLike<number | bigint>, Number);
    }
    return null;
  });
  return { opset: walk.module.opset(op.domain), types, constants, shapeValues };
}

/** Replace `op` by constants when its results are known; record its shape value otherwise. */
function fold(walk: Walk, op: Op): boolean {
  const def = walk.ops.get(op);
  if (def === undefined || !onnxOp(op) || op.results.length === 0 || NONDETERMINISTIC.has(op.type)) return false;
  for (const a of op.attributes.values()) if (a.kind === "graph" || a.kind === "graphs") return false;
  const ctx = inferContext(walk, op);
  let dims: Dim[] | null = null;
  try {
    dims = def.shapeValue?.(op, ctx) ?? null;
  } catch {
    // Inconsistent operands: the verifier reports them; nothing to fold here.
  }
  if (dims !== null) walk.shapeValues.set(op.result, dims);
  if (op.results.some((r) => isOutput(walk, r))) return false;
  const values = evaluate(walk, op, def, ctx) ?? fromShapeValue(op, dims);
  if (values === null) return false;
  replaceByConstants(walk, op, values);
  return true;
}

/** Results of an op over constants, by its reference kernel, when small enough (any size for `Constant`). */
function evaluate(walk: Walk, op: Op, def: OpDef, ctx: InferContext): Tensor[] | null {
  if (def.interpret === undefined) return null;
  if (!op.operands.every((v, i) => v === null || ctx.constants[i] !== null)) return null;
  const isConstantOp = op.type === "Constant" && op.operands.length === 0;
  if (!isConstantOp) {
    for (const r of op.results) {
      const size = staticElements(r.type);
      if (size === null || size > walk.foldLimit) return null;
    }
  }
  let out: Tensor[];
  try {
    out = def.interpret(op, ctx.constants, { opset: ctx.opset });
  } catch {
    // A kernel error is the interpreter's to report, at run time; leave the op.
    return null;
  }
  return out.length >= op.results.length ? out : null;
}

function staticElements(type: Value["type"]): number | null {
  if (!isTensorType(type) || type.shape === null) return null;
  let n = 1;
  for (const d of type.shape) {
    if (typeof d !== "number") return null;
    n *= d;
  }
  return n;
}

/** An integer op's result from its exactly known contents (`Shape` of `f32[N,64,7,7]` sliced to `[64,7,7]`). */
function fromShapeValue(op: Op, dims: readonly Dim[] | null): Tensor[] | null {
  if (dims === null || op.results.slice(1).some((r) => !r.isDead)) return null;
  const type = op.result.type;
  if (!isTensorType(type) || (type.elem !== "i64" && type.elem !== "i32") || type.shape === null) return null;
  if (type.shape.length > 1 || !type.shape.every((d) => typeof d === "number")) return null;
  const shape = type.shape as number[];
  if (shapeSize(shape) !== dims.length || !dims.every((d) => typeof d === "number" && Number.isInteger(d))) {
    return null;
  }
  return [fromFloat64(type.elem, shape, dims as number[])];
}

/** Swap `op`'s results for constants carrying the same names, and erase `op`. */
function replaceByConstants(walk: Walk, op: Op, values: readonly Tensor[]): void {
  const constants = op.results.map((r, i) => {
    const c = addConstant(walk.graph, `${r.name}.folded`, values[i]);
    const dims = walk.shapeValues.get(r);
    if (dims !== undefined) walk.shapeValues.set(c, dims);
    return c;
  });
  replaceOp(op, constants);
}

/**
 * Give a Reshape a constant shape when its computed shape is known up to
 * dimensions copied from the input at the same position (written `0`).
 */
function foldReshapeShape(walk: Walk, op: Op): boolean {
  const data = op.operand(0);
  const shapeOperand = op.operand(1);
  if (data === null || shapeOperand === null || isConstant(shapeOperand)) return false;
  // allowzero = 1 (opset 14) makes 0 a real zero-size dimension: no copying then.
  if (op.int("allowzero", 0) !== 0) return false;
  const dims = walk.shapeValues.get(shapeOperand);
  const dataShape = isTensorType(data.type) ? (data.type as TensorType).shape : null;
  if (dims === undefined || dataShape === null) return false;
  const target: number[] = [];
  for (let i = 0; i < dims.length; i++) {
    const d = dims[i];
    if (typeof d === "number") {
      target.push(d);
    } else if (d !== "?" && !d.includes("?") && dataShape[i] === d) {
      target.push(0);
    } else {
      return false;
    }
  }
  const base = op.name !== "" ? op.name : op.result.name;
  const c = addConstant(walk.graph, `${base}.shape`, fromFloat64("i64", [target.length], target));
  op.setOperand(1, c);
  return true;
}
