/**
 * The graph IR: SSA {@linkcode Value}s produced by {@linkcode Op}s in an
 * ordered {@linkcode Graph}. Use lists are kept by the graph's mutation API,
 * so no dangling use can be created through it (see `rewriter.ts`).
 * Subgraphs (If/Loop/Scan bodies) are graphs held in attributes; their ops may
 * use values of enclosing graphs directly, as MLIR regions do.
 * @module
 */
import type { Attribute } from "./attributes.ts";
import type { Tensor } from "./tensor.ts";
import type { Type } from "./types.ts";

/** One use of a value: operand `index` of `op`. */
export interface Use {
  /** The using op. */
  readonly op: Op;
  /** Operand position. */
  readonly index: number;
}

/**
 * An SSA value: a graph input, a constant (ONNX initializer) or an op result.
 * Exactly one of `producer`, `constant` or graph-input membership defines it.
 */
export class Value {
  /** Unique name within the module (the ONNX name when imported). */
  name: string;
  /** Tensor type (or an opaque carried type); null when unknown. */
  type: Type | null;
  /** The op that produces this value, if any. */
  producer: Op | null = null;
  /** Constant contents, for initializers. */
  constant: Tensor | null = null;
  /** Doc string carried from ONNX `ValueInfoProto`. */
  docString = "";
  /** The graph this value belongs to (set when added). */
  graph: Graph | null = null;
  readonly #uses: Use[] = [];

  /** Create a detached value. */
  constructor(name: string, type: Type | null = null) {
    this.name = name;
    this.type = type;
  }

  /** Current uses (read-only snapshot semantics: do not mutate while iterating a rewrite). */
  get uses(): readonly Use[] {
    return this.#uses;
  }

  /** Ops using this value, each once. */
  get users(): Op[] {
    return [...new Set(this.#uses.map((u) => u.op))];
  }

  /** True when no op uses the value and it is not a graph output. */
  get isDead(): boolean {
    return this.#uses.length === 0 && !(this.graph?.outputs.includes(this) ?? false);
  }

  /** @internal Record a use; called by {@linkcode Op} only. */
  _addUse(op: Op, index: number): void {
    this.#uses.push({ op, index });
  }

  /** @internal Drop a use; called by {@linkcode Op} only. */
  _removeUse(op: Op, index: number): void {
    const i = this.#uses.findIndex((u) => u.op === op && u.index === index);
    if (i < 0) throw new Error(`internal: value "${this.name}" has no use by "${op.name}" #${index}`);
    this.#uses.splice(i, 1);
  }
}

/**
 * An operation: `type` in `domain` (`""` is the default ONNX domain), operands
 * (null for an omitted optional input), results and attributes.
 */
export class Op {
  /** Name, unique within the module when imported from ONNX (may be empty there). */
  name: string;
  /** Op type, e.g. `"Conv"`. */
  type: string;
  /** Operator domain; `""` is ONNX's default `ai.onnx`. */
  domain: string;
  /** Attributes by name. */
  readonly attributes: Map<string, Attribute>;
  /** Results, in order. */
  readonly results: Value[];
  /** The graph holding this op. */
  graph: Graph | null = null;
  /** Doc string carried from ONNX. */
  docString = "";
  /** Source-format fields the IR does not model, kept for export (ONNX `overload`, `metadata_props`). */
  extra: Record<string, unknown> = {};
  readonly #operands: (Value | null)[] = [];

  /** Create a detached op; operands get their uses recorded immediately. */
  constructor(
    init: {
      name: string;
      type: string;
      domain?: string;
      operands?: readonly (Value | null)[];
      results?: readonly Value[];
      attributes?: Iterable<[string, Attribute]>;
    },
  ) {
    this.name = init.name;
    this.type = init.type;
    this.domain = init.domain ?? "";
    this.attributes = new Map(init.attributes ?? []);
    this.results = [...(init.results ?? [])];
    for (const r of this.results) r.producer = this;
    for (const v of init.operands ?? []) this.addOperand(v);
  }

  /** Operands in order (null for an omitted optional input). */
  get operands(): readonly (Value | null)[] {
    return this.#operands;
  }

  /** Operand `i`, or null when omitted or absent. */
  operand(i: number): Value | null {
    return this.#operands[i] ?? null;
  }

  /** Append an operand. */
  addOperand(value: Value | null): void {
    this.#operands.push(value);
    value?._addUse(this, this.#operands.length - 1);
  }

  /** Replace operand `i`, keeping use lists right. */
  setOperand(i: number, value: Value | null): void {
    if (i < 0 || i >= this.#operands.length) {
      throw new RangeError(`op "${this.name}" has no operand #${i}`);
    }
    this.#operands[i]?._removeUse(this, i);
    this.#operands[i] = value;
    value?._addUse(this, i);
  }

  /**
   * Set operand `i`, which may lie past the end: the operands in between become
   * omitted (null). How an optional input such as Conv's bias is given; setting
   * an absent operand to null changes nothing.
   *
   * @example Give a Conv a bias
   * ```ts
   * import assert from "node:assert/strict";
   * import { Op, Value } from "./graph.ts";
   * const x = new Value("x"), w = new Value("w"), b = new Value("b");
   * const conv = new Op({ name: "c", type: "Conv", operands: [x, w] });
   * conv.setOptionalOperand(2, b);
   * assert.deepEqual(conv.operands, [x, w, b]);
   * const clip = new Op({ name: "clip", type: "Clip", operands: [x] });
   * clip.setOptionalOperand(2, b);
   * assert.deepEqual(clip.operands, [x, null, b]);
   * ```
   */
  setOptionalOperand(i: number, value: Value | null): void {
    if (i < 0) throw new RangeError(`op "${this.name}" has no operand #${i}`);
    if (i < this.#operands.length) {
      this.setOperand(i, value);
    } else if (value !== null) {
      while (this.#operands.length < i) this.addOperand(null);
      this.addOperand(value);
    }
  }

  /** Remove trailing operands from `count` on. */
  truncateOperands(count: number): void {
    while (this.#operands.length > count) {
      const i = this.#operands.length - 1;
      this.#operands[i]?._removeUse(this, i);
      this.#operands.pop();
    }
  }

  /** Drop every operand use (used when erasing). */
  dropOperands(): void {
    this.truncateOperands(0);
  }

  /** Result 0 (most ops have exactly one). */
  get result(): Value {
    const r = this.results[0];
    if (r === undefined) throw new Error(`op "${this.name}" (${this.type}) has no results`);
    return r;
  }

  /** Qualified type: `Conv`, or `domain.Type` outside the default domain. */
  get qualifiedType(): string {
    return isDefaultDomain(this.domain) ? this.type : `${this.domain}.${this.type}`;
  }

  /** Attribute lookup. */
  attr(name: string): Attribute | undefined {
    return this.attributes.get(name);
  }

  /** Int attribute with a default; throws naming the op when present with another kind. */
  int(name: string, fallback: number): number;
  /** Int attribute, or undefined when absent. */
  int(name: string): number | undefined;
  int(name: string, fallback?: number): number | undefined {
    return this.#typed(name, "int", fallback) as number | undefined;
  }

  /**
   * An int attribute read as a flag, as the ONNX spec and onnxruntime read `transA`, `transB` and the like: any
   * nonzero value is true; `fallback` when absent.
   */
  flag(name: string, fallback = false): boolean {
    const v = this.int(name);
    return v === undefined ? fallback : v !== 0;
  }

  /** Float attribute with a default. */
  float(name: string, fallback: number): number;
  /** Float attribute, or undefined when absent. */
  float(name: string): number | undefined;
  float(name: string, fallback?: number): number | undefined {
    return this.#typed(name, "float", fallback) as number | undefined;
  }

  /** String attribute with a default. */
  string(name: string, fallback: string): string;
  /** String attribute, or undefined when absent. */
  string(name: string): string | undefined;
  string(name: string, fallback?: string): string | undefined {
    return this.#typed(name, "string", fallback) as string | undefined;
  }

  /** Ints attribute with a default. */
  ints(name: string, fallback: readonly number[]): readonly number[];
  /** Ints attribute, or undefined when absent. */
  ints(name: string): readonly number[] | undefined;
  ints(name: string, fallback?: readonly number[]): readonly number[] | undefined {
    return this.#typed(name, "ints", fallback) as readonly number[] | undefined;
  }

  /** Floats attribute, or undefined when absent. */
  floats(name: string): readonly number[] | undefined {
    return this.#typed(name, "floats", undefined) as readonly number[] | undefined;
  }

  /** Tensor attribute, or undefined when absent. */
  tensor(name: string): Tensor | undefined {
    return this.#typed(name, "tensor", undefined) as Tensor | undefined;
  }

  #typed(name: string, kind: Attribute["kind"], fallback: unknown): unknown {
    const a = this.attributes.get(name);
    if (a === undefined) return fallback;
    if (a.kind !== kind) {
      throw new Error(`op "${this.name}" (${this.type}): attribute "${name}" must be ${kind}, found ${a.kind}`);
    }
    return a.value;
  }
}

/**
 * An ordered list of ops over values, with inputs, constants and outputs.
 * Ops appear in a valid topological order (the verifier checks it).
 */
export class Graph {
  /** Graph name. */
  name: string;
  /** Graph inputs in order. */
  readonly inputs: Value[] = [];
  /** Graph outputs in order. */
  readonly outputs: Value[] = [];
  /** Constants (ONNX initializers), in import order. */
  readonly constants: Value[] = [];
  /** Ops in topological order. */
  readonly ops: Op[] = [];
  /** The op whose attribute holds this graph (subgraphs only). */
  parentOp: Op | null = null;
  /** Doc string carried from ONNX. */
  docString = "";
  /** Source-format fields the IR does not model (ONNX `quantization_annotation`, sparse initializers, `metadata_props`). */
  extra: Record<string, unknown> = {};
  readonly #names = new Set<string>();

  /** Create an empty graph. */
  constructor(name = "main") {
    this.name = name;
  }

  /** Add a graph input; `value.constant`, when set, is its default (an ONNX initializer of the same name). */
  addInput(value: Value): Value {
    this.#adopt(value);
    this.inputs.push(value);
    return value;
  }

  /** Add a constant value holding `data`. */
  addConstant(name: string, data: Tensor, type: Type): Value {
    const value = new Value(name, type);
    value.constant = data;
    this.#adopt(value);
    this.constants.push(value);
    return value;
  }

  /** Append an op at the end (or at `index`), adopting its results. */
  addOp(op: Op, index = this.ops.length): Op {
    if (op.graph !== null) throw new Error(`op "${op.name}" already belongs to a graph`);
    op.graph = this;
    for (const r of op.results) this.#adopt(r);
    this.ops.splice(index, 0, op);
    return op;
  }

  /** @internal Take an op out of the op list without touching uses. */
  _detach(op: Op): void {
    const i = this.ops.indexOf(op);
    if (i < 0) throw new Error(`op "${op.name}" is not in graph "${this.name}"`);
    this.ops.splice(i, 1);
    op.graph = null;
    for (const r of op.results) this.#names.delete(r.name);
  }

  /** @internal Forget a constant or input value. */
  _removeValue(value: Value): void {
    for (const list of [this.constants, this.inputs]) {
      const i = list.indexOf(value);
      if (i >= 0) list.splice(i, 1);
    }
    this.#names.delete(value.name);
    value.graph = null;
  }

  /** @internal Give `value` (of this graph) the free name `name`; called by the rewriter's `renameValue`. */
  _rename(value: Value, name: string): void {
    this.#names.delete(value.name);
    value.name = name;
    if (name !== "") this.#names.add(name);
  }

  /** True when `name` is taken by a value of this graph. */
  hasName(name: string): boolean {
    return this.#names.has(name);
  }

  /** Every value defined in this graph: inputs, constants, then op results in order. */
  *values(): Generator<Value> {
    yield* this.inputs;
    yield* this.constants;
    for (const op of this.ops) yield* op.results;
  }

  /** The enclosing graph, for subgraphs. */
  get parentGraph(): Graph | null {
    return this.parentOp?.graph ?? null;
  }

  /** True when `name` is taken in this graph or an enclosing one. */
  hasNameInScope(name: string): boolean {
    return this.#names.has(name) || (this.parentGraph?.hasNameInScope(name) ?? false);
  }

  /**
   * A fresh value name derived from `base` (`base`, `base.1`, `base.2`, ...),
   * unique across this graph and its enclosing graphs.
   */
  freshName(base: string): string {
    if (!this.hasNameInScope(base)) return base;
    for (let i = 1;; i++) if (!this.hasNameInScope(`${base}.${i}`)) return `${base}.${i}`;
  }

  /**
   * A fresh op name derived from `base` (`base`, `base.1`, `base.2`, ...) that no
   * op of this graph or of an enclosing graph has: {@linkcode Graph.freshName}
   * for ops. (Op names are not tracked like value names, so each call reads the
   * op lists.)
   *
   * @example Name a second op after the first
   * ```ts
   * import assert from "node:assert/strict";
   * import { Graph, Op } from "./graph.ts";
   * const g = new Graph();
   * g.addOp(new Op({ name: "fc.svd", type: "Gemm" }));
   * assert.equal(g.freshOpName("fc.svd"), "fc.svd.1");
   * assert.equal(g.freshOpName("fc"), "fc");
   * ```
   */
  freshOpName(base: string): string {
    const taken = new Set<string>();
    for (const op of this.ops) taken.add(op.name);
    for (let g = this.parentGraph; g !== null; g = g.parentGraph) for (const op of g.ops) taken.add(op.name);
    if (!taken.has(base)) return base;
    for (let i = 1;; i++) if (!taken.has(`${base}.${i}`)) return `${base}.${i}`;
  }

  #adopt(value: Value): void {
    value.graph = this;
    if (value.name !== "") this.#names.add(value.name);
  }
}

/**
 * True for ONNX's default operator domain, which models spell `""` or
 * `"ai.onnx"` (the importer keeps an op's domain as written; only opset imports
 * are normalized to `""`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isDefaultDomain } from "./graph.ts";
 * assert.ok(isDefaultDomain("") && isDefaultDomain("ai.onnx"));
 * assert.ok(!isDefaultDomain("com.microsoft"));
 * ```
 */
export function isDefaultDomain(domain: string): boolean {
  return domain === "" || domain === "ai.onnx";
}

/**
 * True when `value` is a constant in the compiler's sense: initializer data
 * that no caller can override. A graph input with a default (an ONNX
 * initializer that is also an input) is not one, nor is an op result. (The
 * guard narrows `value.constant` to a tensor where it holds, and leaves the
 * type alone where it does not.)
 *
 * @example An initializer is a constant; an input with a default is not
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, isConstant, Value } from "./graph.ts";
 * import { float32Tensor } from "./tensor.ts";
 * const g = new Graph();
 * const w = g.addConstant("w", float32Tensor([1], [2]), { elem: "f32", shape: [1] });
 * const x = new Value("x", { elem: "f32", shape: [1] });
 * x.constant = float32Tensor([1], [0]);
 * g.addInput(x);
 * assert.ok(isConstant(w));
 * assert.ok(!isConstant(x) && !isConstant(null));
 * ```
 */
export function isConstant(value: Value | null | undefined): value is Value & { constant: Tensor } {
  if (value === null || value === undefined || value.constant === null || value.producer !== null) return false;
  return !(value.graph?.inputs.includes(value) ?? false);
}
