/**
 * The mutation API of the IR. Every change goes through these functions so
 * use lists stay exact: no rewrite can leave a use of an erased value behind.
 * @module
 */
import type { Attribute } from "./attributes.ts";
import { Graph, isConstant, Op, Value } from "./graph.ts";
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

/** Options of {@linkcode replaceOp}. */
export interface ReplaceOpOptions {
  /**
   * Which names of the old results the replacements take: `"all"` (the
   * default), or only `"outputs"`, the names of graph outputs, which are the
   * model's interface. Use `"outputs"` when the replacements are values that
   * already exist and keep their own names elsewhere (bypassing an Identity).
   */
  readonly names?: "all" | "outputs";
}

/**
 * Replace `op` by `replacement` (MLIR's `rewriter.replaceOp`): result `i` of
 * `op` hands its uses, its graph-output slots and its name (see
 * {@linkcode ReplaceOpOptions.names}) to result `i` of the replacement op, or
 * to value `i` of a list; then `op` is erased. A replacement op that belongs to
 * no graph yet is inserted right before `op`, and the names of its results that
 * take an old name do not matter. Results of `op` left without a replacement
 * must be unused.
 *
 * Every check is made before anything changes, so a throw leaves the graph as
 * it was.
 *
 * @throws {Error} When there are more replacements than results, a result
 * without a replacement is still used, or a value that must take a name is not
 * an op result or constant of `op`'s graph, is a graph output itself, or would
 * take two names.
 *
 * @example Replace a MatMul by a Gemm that keeps its result name
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "./graph.ts";
 * import { replaceOp } from "./rewriter.ts";
 * const g = new Graph();
 * const [a, b] = [g.addInput(new Value("a")), g.addInput(new Value("b"))];
 * const mm = g.addOp(new Op({ name: "mm", type: "MatMul", operands: [a, b], results: [new Value("y")] }));
 * g.outputs.push(mm.result);
 * const gemm = new Op({ name: "mm", type: "Gemm", operands: [a, b], results: [new Value("y")] });
 * replaceOp(mm, gemm);
 * assert.deepEqual(g.ops, [gemm]);
 * assert.equal(g.outputs[0], gemm.result);
 * assert.equal(gemm.result.name, "y");
 * ```
 *
 * @example Bypass an Identity whose result is a graph output
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "./graph.ts";
 * import { replaceOp } from "./rewriter.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x"));
 * const relu = g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("t")] }));
 * const id = g.addOp(new Op({ name: "id", type: "Identity", operands: [relu.result], results: [new Value("y")] }));
 * g.outputs.push(id.result);
 * replaceOp(id, [relu.result], { names: "outputs" });
 * assert.deepEqual(g.ops, [relu]);
 * assert.equal(g.outputs[0].name, "y");
 * ```
 */
export function replaceOp(op: Op, replacement: Op | readonly Value[], options: ReplaceOpOptions = {}): void {
  const graph = graphOf(op);
  const values = replacement instanceof Op ? replacement.results : replacement;
  const detached = replacement instanceof Op && replacement.graph === null;
  if (replacement instanceof Op && !detached && replacement.graph !== graph) {
    throw new Error(`cannot replace op "${op.name}" by op "${replacement.name}": it is in another graph`);
  }
  if (values.length > op.results.length) {
    throw new Error(
      `cannot replace op "${op.name}": ${values.length} replacements for ${op.results.length} result(s)`,
    );
  }
  const own = values.find((v) => v.producer === op);
  if (own !== undefined) throw new Error(`cannot replace op "${op.name}" by its own result "${own.name}"`);
  for (const r of op.results.slice(values.length)) {
    if (!r.isDead) throw new Error(`cannot replace op "${op.name}": result "${r.name}" is used and has no replacement`);
  }
  const names = options.names ?? "all";
  const renames: { value: Value; name: string }[] = [];
  op.results.forEach((r, i) => {
    if (i >= values.length || r.name === "") return;
    if (names === "outputs" && !graph.outputs.includes(r)) return;
    const v = values[i];
    if (!detached) {
      if (v.graph !== graph || graph.inputs.includes(v)) {
        throw new Error(
          `cannot replace op "${op.name}": value "${v.name}" cannot take the name "${r.name}": ` +
            `it is not an op result or constant of graph "${graph.name}"`,
        );
      }
      if (graph.outputs.includes(v)) {
        throw new Error(
          `cannot replace op "${op.name}": value "${v.name}" cannot take the name "${r.name}": it is a graph output`,
        );
      }
    }
    if (renames.some((x) => x.value === v)) {
      throw new Error(`cannot replace op "${op.name}": value "${v.name}" would take two names`);
    }
    renames.push({ value: v, name: r.name });
  });
  if (detached) {
    // Results that take an old name are adopted nameless, so they cannot clash with the names they replace.
    for (const { value } of renames) value.name = "";
    insertBefore(op, replacement);
  }
  values.forEach((v, i) => replaceAllUsesWith(op.results[i], v));
  eraseOp(op);
  for (const { value, name } of renames) renameValue(value, name);
}

/**
 * Erase `value` when it is a constant (see {@linkcode isConstant}) that no op
 * uses and that is no graph output; anything else is left alone. How a rewrite
 * drops the weight it just replaced, unless another op shares it.
 *
 * @returns True when the constant was erased.
 *
 * @example Erase a weight once its last user moved on
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "./graph.ts";
 * import { addConstant, eraseConstantIfUnused } from "./rewriter.ts";
 * import { float32Tensor } from "./tensor.ts";
 * const g = new Graph();
 * const w = addConstant(g, "w", float32Tensor([1], [2]));
 * const op = g.addOp(new Op({ name: "m", type: "Mul", operands: [w, w], results: [new Value("y")] }));
 * assert.equal(eraseConstantIfUnused(w), false);
 * op.dropOperands();
 * assert.equal(eraseConstantIfUnused(w), true);
 * assert.deepEqual(g.constants, []);
 * ```
 */
export function eraseConstantIfUnused(value: Value | null): boolean {
  if (!isConstant(value) || value.graph === null || !value.isDead) return false;
  eraseValue(value);
  return true;
}

/**
 * Give operand `index` of `op` a new constant holding `data`, and erase the old
 * constant when nothing else uses it ({@linkcode eraseConstantIfUnused}). The
 * operand may be absent (an optional input such as a bias): omitted operands
 * are padded in, as {@linkcode Op.setOptionalOperand} does.
 *
 * Naming: with `options.name`, the new constant gets a fresh name derived from
 * it and keeps it. Without, it is named after the old operand: `w.1` while the
 * old constant lives on (shared with another op, or a graph input), `w` once
 * the old one is erased, so reports and IR dumps keep saying `w`; an absent
 * operand gives `<op name>.<index>`.
 *
 * @returns The new constant.
 *
 * @example Swap a weight; the thinner tensor keeps the name
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "./graph.ts";
 * import { addConstant, replaceConstant } from "./rewriter.ts";
 * import { float32Tensor } from "./tensor.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x"));
 * const w = addConstant(g, "w", float32Tensor([2], [1, 2]));
 * const op = g.addOp(new Op({ name: "m", type: "Mul", operands: [x, w], results: [new Value("y")] }));
 * const w2 = replaceConstant(op, 1, float32Tensor([1], [3]));
 * assert.deepEqual(g.constants, [w2]);
 * assert.equal(w2.name, "w");
 * const b = replaceConstant(op, 3, float32Tensor([1], [0]), { name: "m.bias" });
 * assert.deepEqual(op.operands, [x, w2, null, b]);
 * assert.equal(b.name, "m.bias");
 * ```
 */
export function replaceConstant(op: Op, index: number, data: Tensor, options: { readonly name?: string } = {}): Value {
  const graph = graphOf(op);
  const old = op.operand(index);
  const fresh = addConstant(graph, options.name ?? old?.name ?? `${op.name || op.type}.${index}`, data);
  op.setOptionalOperand(index, fresh);
  const name = old?.name ?? "";
  // The new tensor takes over the name, unless the caller chose one.
  if (eraseConstantIfUnused(old) && options.name === undefined && name !== "") renameValue(fresh, name);
  return fresh;
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
