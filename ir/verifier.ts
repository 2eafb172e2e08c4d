/**
 * Structural and type checks of a module, run between passes (`--verify-each`):
 * definition before use, one definition per name, use lists that match the
 * operands, defined graph outputs, and result types that agree with each op's
 * shape inference. Every message names the op (or graph) at fault.
 * @module
 */
import type { Graph, Op, Value } from "./graph.ts";
import type { Module } from "./module.ts";
import { type OpDef, OpRegistry } from "./op_def.ts";
import { builtinOps } from "./builtin_ops.ts";
import { opError } from "./ops/common.ts";
import { cloneModule, subgraphsOf } from "./rewriter.ts";
import { inferShapes } from "./shape.ts";
import { isDType, isTensorType, sameShape, typeToString } from "./types.ts";
import { valueRef } from "./printer.ts";

/** Options of {@linkcode verifyModule} and {@linkcode verifyModuleDiagnostics}. */
export interface VerifyOptions {
  /** Op definitions used for the type check (default: the built-ins). */
  registry?: OpRegistry;
}

/** One problem found by the verifier. */
export interface VerifyDiagnostic {
  /** The op at fault, or null for a problem of a graph (an undefined output, a bad constant). */
  readonly op: Op | null;
  /** The graph where the problem is. */
  readonly graph: Graph;
  /** One line naming the op or graph and the problem. */
  readonly message: string;
}

/**
 * Check `module` and throw on the first problem.
 *
 * @throws {Error} Whose message names the op and the problem, plus how many more problems there are.
 *
 * @example Catch a use before definition
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "./graph.ts";
 * import { Module } from "./module.ts";
 * import { verifyModule } from "./verifier.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x"));
 * const a = new Op({ name: "a", type: "Neg", operands: [x], results: [new Value("a")] });
 * const b = new Op({ name: "b", type: "Neg", operands: [a.result], results: [new Value("b")] });
 * g.addOp(b);
 * g.addOp(a);
 * g.outputs.push(b.result);
 * assert.throws(() => verifyModule(new Module(g)), {
 *   message: 'op "b" (Neg): operand #0 %a is used before its definition by op "a"',
 * });
 * ```
 */
export function verifyModule(module: Module, options: VerifyOptions = {}): void {
  const problems = verifyModuleDiagnostics(module, options);
  if (problems.length === 0) return;
  const rest = problems.length - 1;
  const more = rest > 0 ? ` (and ${rest} more problem${rest > 1 ? "s" : ""})` : "";
  throw new Error(problems[0].message + more);
}

/**
 * Every problem of `module`, in graph order. The type check runs only when the
 * structure is sound (shape inference over broken use lists says nothing useful)
 * and covers the main graph, as shape inference does.
 *
 * @example A clean module has no diagnostics
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module } from "./module.ts";
 * import { verifyModuleDiagnostics } from "./verifier.ts";
 * assert.deepEqual(verifyModuleDiagnostics(new Module()), []);
 * ```
 */
export function verifyModuleDiagnostics(module: Module, options: VerifyOptions = {}): VerifyDiagnostic[] {
  const walk = new StructureWalk(module.graph);
  walk.graph(module.graph, null);
  walk.checkUses();
  if (walk.problems.length > 0) return walk.problems;
  const typeProblem = checkTypes(module, options.registry ?? builtinOps);
  return typeProblem === null ? [] : [typeProblem];
}

/** Where a value comes from, for messages. */
function definer(v: Value): string {
  if (v.producer !== null) return `op "${v.producer.name}"`;
  return v.constant !== null && v.graph?.constants.includes(v) ? "a constant" : "a graph input";
}

/** Values visible in a graph at one point; subgraphs see their enclosing graphs' values (as in ONNX). */
interface Scope {
  readonly values: Set<Value>;
  readonly names: Map<string, Value>;
  readonly parent: Scope | null;
}

function visible(scope: Scope | null, v: Value): boolean {
  for (let s = scope; s !== null; s = s.parent) if (s.values.has(v)) return true;
  return false;
}

function named(scope: Scope | null, name: string): Value | undefined {
  for (let s = scope; s !== null; s = s.parent) {
    const v = s.names.get(name);
    if (v !== undefined) return v;
  }
  return undefined;
}

class StructureWalk {
  readonly problems: VerifyDiagnostic[] = [];
  /** Every op reached, with the graph listing it. */
  readonly #ops = new Map<Op, Graph>();
  /** Every value defined somewhere in the module. */
  readonly #defined = new Set<Value>();
  readonly #root: Graph;

  constructor(root: Graph) {
    this.#root = root;
  }

  #report(graph: Graph, op: Op | null, message: string): void {
    this.problems.push({ op, graph, message: op === null ? message : opError(op, message).message });
  }

  graph(graph: Graph, parent: Scope | null): void {
    const scope: Scope = { values: new Set(), names: new Map(), parent };
    const where = `graph @${graph.name}`;
    const define = (v: Value, op: Op | null): void => {
      if (this.#defined.has(v)) {
        this.#report(graph, op, `${valueRef(v.name)} is defined more than once (the same value object)`);
        return;
      }
      this.#defined.add(v);
      if (v.graph !== graph) {
        const owner = v.graph === null ? "no graph" : `graph @${v.graph.name}`;
        this.#report(graph, op, `${valueRef(v.name)} is listed in ${where} but belongs to ${owner}`);
      }
      if (v.name !== "") {
        const other = named(scope, v.name);
        if (other !== undefined) {
          const subject = op === null ? `${where}: ${definer(v)}` : "result";
          const message = `${subject} ${valueRef(v.name)} redefines the name already defined by ${definer(other)}`;
          this.#report(graph, op, message);
        }
        scope.names.set(v.name, v);
      }
      scope.values.add(v);
    };
    for (const v of graph.inputs) define(v, null);
    for (const v of graph.constants) {
      define(v, null);
      if (v.constant === null) {
        this.#report(graph, null, `${where}: constant ${valueRef(v.name)} has no data`);
      } else if (isTensorType(v.type) && typeof v.type.elem === "string" && isDType(v.type.elem)) {
        // Parametric element types (bfp, fixed) store their data in another dtype: only plain types must match.
        const t = v.constant;
        if (v.type.elem !== t.dtype || !sameShape(v.type.shape, t.shape)) {
          this.#report(
            graph,
            null,
            `${where}: constant ${valueRef(v.name)} is declared ${
              typeToString(v.type)
            } but holds ${t.dtype}[${t.shape}]`,
          );
        }
      }
    }
    const laterResults = new Map<Value, Op>();
    for (const op of graph.ops) for (const r of op.results) laterResults.set(r, op);
    for (const op of graph.ops) {
      if (this.#ops.has(op)) {
        this.#report(graph, op, `appears twice in the module (in graph @${this.#ops.get(op)!.name} and ${where})`);
        continue;
      }
      this.#ops.set(op, graph);
      if (op.graph !== graph) {
        const owner = op.graph === null ? "no graph" : `graph @${op.graph.name}`;
        this.#report(graph, op, `is listed in ${where} but belongs to ${owner}`);
      }
      op.operands.forEach((v, i) => {
        if (v === null || visible(scope, v)) return;
        const producer = laterResults.get(v);
        const message = producer !== undefined
          ? `operand #${i} ${valueRef(v.name)} is used before its definition by op "${producer.name}"`
          : `operand #${i} ${valueRef(v.name)} is not defined in ${where} or an enclosing graph`;
        this.#report(graph, op, message);
      });
      for (const a of op.attributes.values()) {
        for (const sub of subgraphsOf(a)) {
          if (sub.parentOp !== op) this.#report(graph, op, `subgraph @${sub.name} does not name this op as its parent`);
          this.graph(sub, scope);
        }
      }
      for (const r of op.results) {
        if (r.producer !== op) this.#report(graph, op, `result ${valueRef(r.name)} names another producer`);
        define(r, op);
      }
    }
    for (const v of graph.outputs) {
      if (!visible(scope, v)) {
        this.#report(graph, graph.parentOp, `${where}: output ${valueRef(v.name)} is not defined`);
      }
    }
  }

  /** Every operand slot is in its value's use list, and every use is an operand slot of an op in the module. */
  checkUses(): void {
    for (const [op, graph] of this.#ops) {
      op.operands.forEach((v, i) => {
        if (v === null) return;
        if (!v.uses.some((u) => u.op === op && u.index === i)) {
          this.#report(graph, op, `operand #${i} ${valueRef(v.name)} is missing from that value's use list`);
        }
      });
    }
    const values = new Set(this.#defined);
    for (const op of this.#ops.keys()) for (const v of op.operands) if (v !== null) values.add(v);
    for (const v of values) {
      for (const use of v.uses) {
        const graph = this.#ops.get(use.op);
        if (graph === undefined) {
          this.#report(
            v.graph ?? this.#root,
            use.op,
            `uses ${valueRef(v.name)} but is not in the module (dangling use: erase ops through the rewriter)`,
          );
        } else if (use.op.operands[use.index] !== v) {
          this.#report(
            graph,
            use.op,
            `is recorded as a use of ${valueRef(v.name)} at operand #${use.index}, which holds another value`,
          );
        }
      }
    }
  }
}

/**
 * Run shape inference in strict mode on a copy and report the first op whose
 * recorded result type disagrees with what its operands give (or whose operands
 * are inconsistent). The copy keeps the module untouched: inference refines types.
 */
function checkTypes(module: Module, registry: OpRegistry): VerifyDiagnostic | null {
  const copy = cloneModule(module);
  const original = new Map<Op, Op>();
  copy.graph.ops.forEach((op, i) => original.set(op, module.graph.ops[i]));
  let current = null as Op | null;
  // Record which op inference is at, so the diagnostic can point at the original op.
  const tracking = new OpRegistry(
    registry.all().map((def): OpDef => {
      const infer = def.infer;
      if (infer === undefined) return def;
      return {
        ...def,
        infer(op, ctx) {
          current = op;
          return infer.call(def, op, ctx);
        },
      };
    }),
  );
  try {
    inferShapes(copy, { registry: tracking, strict: true });
    return null;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    const op = current === null ? null : original.get(current) ?? null;
    return { op, graph: module.graph, message };
  }
}
