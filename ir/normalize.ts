/**
 * Weights as passes expect them, whatever the exporter wrote: Paddle2ONNX,
 * tf2onnx and older exporters hold weights in `Constant` ops, and PyTorch
 * shares an initializer between layers through `Identity` ops. The importer
 * runs {@linkcode inlineWeightOps} so that every pass and the cost model see
 * such weights as the graph constants they are.
 * @module
 */
import { builtinOps } from "./builtin_ops.ts";
import { type Graph, isConstant, isDefaultDomain, type Op } from "./graph.ts";
import type { OpRegistry } from "./op_def.ts";
import { addConstant, replaceOp } from "./rewriter.ts";

/** What {@linkcode inlineWeightOps} changed. */
export interface InlinedWeightOps {
  /** `Constant` ops that became graph constants. */
  constants: number;
  /** `Identity` ops of a constant that were bypassed. */
  identities: number;
}

/**
 * Rewrite `graph` (not its subgraphs) so weights are graph constants: a
 * `Constant` op of the default domain becomes a constant of its result's
 * name, and the users of an `Identity` of a constant read the constant. A
 * result that is a graph output keeps its op (the model's interface is not
 * changed), and a `Constant` the kernel cannot read (`sparse_value`, no
 * value) is left for the verifier and interpreter to report.
 *
 * @example A Constant weight and its Identity alias become one initializer
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "./parser.ts";
 * import { inlineWeightOps } from "./normalize.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[2]) -> (%y) {
 *   %w = Constant() {value = dense<[1.0, 2.0]> : f32[2]} : f32[2]
 *   %v = Identity(%w) : f32[2]
 *   %y = Mul(%x, %v) : f32[2]
 *   return %y
 * }
 * }`);
 * assert.deepEqual(inlineWeightOps(m.graph), { constants: 1, identities: 1 });
 * assert.deepEqual(m.graph.ops.map((op) => op.type), ["Mul"]);
 * assert.deepEqual(m.graph.constants.map((c) => c.name), ["w"]);
 * ```
 */
export function inlineWeightOps(graph: Graph, registry: OpRegistry = builtinOps): InlinedWeightOps {
  const counts = { constants: 0, identities: 0 };
  const isOutput = (op: Op): boolean => op.results.some((r) => graph.outputs.includes(r));
  for (const op of [...graph.ops]) {
    if (!isDefaultDomain(op.domain) || isOutput(op)) continue;
    if (op.type === "Constant" && op.operands.length === 0 && op.results.length === 1) {
      const tensor = constantTensor(op, registry);
      if (tensor === null) continue;
      replaceOp(op, [addConstant(graph, `${op.result.name}.value`, tensor)]);
      counts.constants++;
    } else if (op.type === "Identity" && op.results.length === 1 && isConstant(op.operand(0))) {
      replaceOp(op, [op.operand(0)!], { names: "outputs" });
      counts.identities++;
    }
  }
  return counts;
}

/** The tensor a Constant op holds, or null when its kernel refuses it. */
function constantTensor(op: Op, registry: OpRegistry) {
  try {
    return registry.get(op)?.interpret?.(op, [], { opset: 1 })[0] ?? null;
  } catch {
    return null;
  }
}
