/**
 * Dead-code elimination: ops none of whose results reach a graph output, and
 * constants nothing uses. Shared with `canonicalize`, which cleans up after
 * its own rewrites with {@linkcode eliminateDeadCode}.
 * @module
 */
import type { Graph } from "../ir/graph.ts";
import { eraseOp, eraseValue, subgraphsOf } from "../ir/rewriter.ts";
import { definePass, type Pass } from "./pass.ts";

/** What {@linkcode eliminateDeadCode} removed. */
export interface DeadCodeCounts {
  /** Ops erased (subgraph ops included). */
  ops: number;
  /** Constants erased (subgraph constants included). */
  constants: number;
}

/**
 * Erase, in place, every op of `graph` whose results are all unused and not
 * graph outputs, transitively, then every unused constant. Subgraphs of live
 * ops (If/Loop/Scan bodies) are cleaned the same way, their outputs being
 * their roots; erasing an op drops the uses its subgraphs made of outer values.
 * Graph inputs are kept: they are the model's interface.
 *
 * ONNX inference ops have no side effects, so an op is kept only for its
 * results, whatever its domain; an op with no results at all is dead.
 *
 * @returns How many ops and constants were erased.
 *
 * @example Remove a chain nothing reads
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { eliminateDeadCode } from "./dce.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x"));
 * const a = g.addOp(new Op({ name: "a", type: "Relu", operands: [x], results: [new Value("a")] }));
 * g.addOp(new Op({ name: "b", type: "Neg", operands: [a.result], results: [new Value("b")] }));
 * assert.deepEqual(eliminateDeadCode(g), { ops: 2, constants: 0 });
 * assert.equal(g.ops.length, 0);
 * ```
 */
export function eliminateDeadCode(graph: Graph): DeadCodeCounts {
  const counts: DeadCodeCounts = { ops: 0, constants: 0 };
  sweep(graph, counts);
  return counts;
}

function sweep(graph: Graph, counts: DeadCodeCounts): void {
  const outputs = new Set(graph.outputs);
  // Reverse topological order: erasing a user first leaves its producers without uses,
  // so one sweep removes whole dead chains.
  for (let i = graph.ops.length - 1; i >= 0; i--) {
    const op = graph.ops[i];
    const live = op.results.some((r) => r.uses.length > 0 || outputs.has(r));
    if (!live) {
      eraseOp(op);
      counts.ops++;
      continue;
    }
    // Cleaning a body may free uses of values defined earlier in this graph; they come later in this sweep.
    for (const a of op.attributes.values()) for (const sub of subgraphsOf(a)) sweep(sub, counts);
  }
  for (const c of [...graph.constants]) {
    if (c.uses.length === 0 && !outputs.has(c)) {
      eraseValue(c);
      counts.constants++;
    }
  }
}

/** Options of `dce` (none). */
export const dceOptions: Record<string, never> = {};

/**
 * `dce`: remove ops whose results are all unused and not graph outputs
 * (transitively, subgraphs included) and unused constants. Graph inputs are
 * never removed. Statistics: `ops-removed`, `constants-removed`.
 */
export const dcePass: Pass<typeof dceOptions> = definePass({
  name: "dce",
  summary: "Remove ops whose results are never used, and unused constants",
  options: dceOptions,
  run(module, _options, ctx): boolean {
    const counts = eliminateDeadCode(module.graph);
    ctx.stat("ops-removed", counts.ops);
    ctx.stat("constants-removed", counts.constants);
    return counts.ops + counts.constants > 0;
  },
});
