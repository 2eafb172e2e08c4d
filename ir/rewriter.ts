/**
 * The mutation API of the IR. Every change goes through these functions so
 * use lists stay exact: no rewrite can leave a use of an erased value behind.
 * @module
 */
import type { Attribute } from "./attributes.ts";
import { Graph, Op, Value } from "./graph.ts";
import { Module } from "./module.ts";
import type { Tensor } from "./tensor.ts";
import type { Type } from "./types.ts";

/**
 * Make every use of `from` (and its graph-output slots) use `to` instead.
 *
 * @example Bypass an Identity
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "./graph.ts";
 * import { eraseOp, replaceAllUsesWith } from "./rewriter.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x"));
 * const id = g.addOp(new Op({ name: "id", type: "Identity", operands: [x], results: [new Value("y")] }));
 * const relu = g.addOp(new Op({ name: "r", type: "Relu", operands: [id.result], results: [new Value("z")] }));
 * replaceAllUsesWith(id.result, x);
 * eraseOp(id);
 * assert.equal(relu.operand(0), x);
 * ```
 */
export function replaceAllUsesWith(from: Value, to: Value): void {
  if (from === to) return;
  for (const use of [...from.uses]) use.op.setOperand(use.index, to);
  for (let g: Graph | null = from.graph; g !== null; g = g.parentGraph) {
    for (let i = 0; i < g.outputs.length; i++) if (g.outputs[i] === from) g.outputs[i] = to;
  }
}

/**
 * Remove `op` from its graph. Refuses when a result is still used or is a graph output.
 *
 * @throws {Error} Naming the op and the live value.
 */
export function eraseOp(op: Op): void {
  for (const r of op.results) {
    if (r.uses.length > 0) {
      throw new Error(`cannot erase op "${op.name}": result "${r.name}" is still used by "${r.uses[0].op.name}"`);
    }
    if (op.graph?.outputs.includes(r)) {
      throw new Error(`cannot erase op "${op.name}": result "${r.name}" is a graph output`);
    }
  }
  op.dropOperands();
  for (const a of op.attributes.values()) for (const sub of subgraphsOf(a)) dropAllUses(sub);
  op.graph?._detach(op);
}

/** Remove an unused constant or graph input. */
export function eraseValue(value: Value): void {
  if (value.uses.length > 0) {
    throw new Error(`cannot erase value "${value.name}": still used by "${value.uses[0].op.name}"`);
  }
  if (value.producer !== null) throw new Error(`value "${value.name}" is an op result; erase its op instead`);
  if (value.graph?.outputs.includes(value)) {
    throw new Error(`cannot erase value "${value.name}": it is a graph output`);
  }
  value.graph?._removeValue(value);
}

/**
 * Rename `value` to `name`, which must be free in its graph and the enclosing
 * graphs (for example after erasing the op that held it): how a rewrite keeps
 * a graph output's name when it bypasses the op that produced it.
 *
 * @throws {Error} When the name is taken or the value belongs to no graph.
 *
 * @example Rename a value, then fail to take a used name
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Value } from "./graph.ts";
 * import { renameValue } from "./rewriter.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x"));
 * g.addInput(new Value("y"));
 * renameValue(x, "input");
 * assert.ok(g.hasName("input") && !g.hasName("x"));
 * assert.throws(() => renameValue(x, "y"), { message: 'cannot rename value "input" to "y": the name is taken' });
 * ```
 */
export function renameValue(value: Value, name: string): void {
  const g = value.graph;
  if (g === null) throw new Error(`cannot rename value "${value.name}": it belongs to no graph`);
  if (name === value.name) return;
  if (g.freshName(name) !== name) {
    throw new Error(`cannot rename value "${value.name}" to "${name}": the name is taken`);
  }
  g._rename(value, name);
}

/** Insert `op` right before `anchor` in the anchor's graph. */
export function insertBefore(anchor: Op, op: Op): Op {
  const g = graphOf(anchor);
  return g.addOp(op, g.ops.indexOf(anchor));
}

/** Insert `op` right after `anchor` in the anchor's graph. */
export function insertAfter(anchor: Op, op: Op): Op {
  const g = graphOf(anchor);
  return g.addOp(op, g.ops.indexOf(anchor) + 1);
}

/** Add a constant to `graph` under a fresh name derived from `base`. */
export function addConstant(graph: Graph, base: string, data: Tensor): Value {
  const type: Type = { elem: data.dtype, shape: [...data.shape] };
  return graph.addConstant(graph.freshName(base), data, type);
}

/** Subgraphs held by an attribute. */
export function subgraphsOf(a: Attribute): readonly Graph[] {
  if (a.kind === "graph") return [a.value];
  if (a.kind === "graphs") return a.value;
  return [];
}

function dropAllUses(graph: Graph): void {
  for (const op of graph.ops) {
    op.dropOperands();
    for (const a of op.attributes.values()) for (const sub of subgraphsOf(a)) dropAllUses(sub);
  }
}

function graphOf(op: Op): Graph {
  if (op.graph === null) throw new Error(`op "${op.name}" is not in a graph`);
  return op.graph;
}

/**
 * Deep-copy a module. Constant tensors are shared (they are treated as immutable:
 * passes replace constants rather than writing into them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module } from "./module.ts";
 * import { cloneModule } from "./rewriter.ts";
 * const m = new Module();
 * assert.notEqual(cloneModule(m).graph, m.graph);
 * ```
 */
export function cloneModule(module: Module): Module {
  const copy = new Module(cloneGraph(module.graph, new Map()), module.opsets, module.irVersion);
  copy.producerName = module.producerName;
  copy.producerVersion = module.producerVersion;
  copy.domain = module.domain;
  copy.modelVersion = module.modelVersion;
  copy.docString = module.docString;
  for (const [k, v] of module.metadata) copy.metadata.set(k, v);
  copy.extra = { ...module.extra };
  return copy;
}

/**
 * Deep-copy a graph; `mapping` translates values of enclosing graphs (for
 * subgraphs) and receives the new value of every copied value.
 */
export function cloneGraph(graph: Graph, mapping: Map<Value, Value>): Graph {
  const copy = new Graph(graph.name);
  copy.docString = graph.docString;
  copy.extra = { ...graph.extra };
  const fresh = (v: Value): Value => {
    const n = new Value(v.name, v.type);
    n.docString = v.docString;
    mapping.set(v, n);
    return n;
  };
  for (const v of graph.inputs) {
    const n = fresh(v);
    n.constant = v.constant;
    copy.addInput(n);
  }
  for (const v of graph.constants) {
    const n = copy.addConstant(v.name, v.constant!, v.type!);
    n.docString = v.docString;
    mapping.set(v, n);
  }
  for (const op of graph.ops) copy.addOp(cloneOp(op, mapping));
  for (const v of graph.outputs) copy.outputs.push(mapping.get(v) ?? v);
  return copy;
}

/** Copy an op, translating operands through `mapping` and registering its new results there. */
export function cloneOp(op: Op, mapping: Map<Value, Value>): Op {
  const results = op.results.map((r) => {
    const n = new Value(r.name, r.type);
    n.docString = r.docString;
    mapping.set(r, n);
    return n;
  });
  const attributes: [string, Attribute][] = [];
  const copy = new Op({
    name: op.name,
    type: op.type,
    domain: op.domain,
    operands: op.operands.map((v) => (v === null ? null : mapping.get(v) ?? v)),
    results,
  });
  for (const [k, a] of op.attributes) {
    if (a.kind === "graph") {
      const g = cloneGraph(a.value, mapping);
      g.parentOp = copy;
      attributes.push([k, { kind: "graph", value: g }]);
    } else if (a.kind === "graphs") {
      const gs = a.value.map((sub) => {
        const g = cloneGraph(sub, mapping);
        g.parentOp = copy;
        return g;
      });
      attributes.push([k, { kind: "graphs", value: gs }]);
    } else {
      attributes.push([k, a]);
    }
  }
  for (const [k, a] of attributes) copy.attributes.set(k, a);
  copy.docString = op.docString;
  copy.extra = { ...op.extra };
  return copy;
}
