/**
 * Reads the textual IR that `printer.ts` writes (the grammar is in that
 * file's header) back into a module, building it through the graph API so
 * use lists are right. Errors are one line: `Cannot parse IR at L:C: ...`.
 * @module
 */
import type { Attribute } from "./attributes.ts";
import { Graph, Op, Value } from "./graph.ts";
import { Module } from "./module.ts";
import { markPlaceholder, placeholderHash } from "./printer.ts";
import { subgraphsOf } from "./rewriter.ts";
import {
  allocData,
  floatToBfloat16,
  floatToHalf,
  shapeSize,
  storageLength,
  type Tensor,
  type TensorData,
  tensorHash,
} from "./tensor.ts";
import { type Dim, type DType, type ElementType, isDType, isTensorType, type Type, typeToString } from "./types.ts";

/** Options of {@linkcode parseModule} and {@linkcode parseGraph}. */
export interface ParseOptions {
  /**
   * Tensors for `hash<"...">` summaries, looked up by the constant's value name
   * (for `const` lines and input defaults) and then by the hash itself (any
   * summary, attributes included); {@linkcode collectTensors} builds such a map.
   * A found tensor must have the printed hash. A summary not found becomes a
   * zero-filled placeholder marked so the printer prints the same summary back
   * (see `placeholderHash` in `printer.ts`): the text keeps its meaning, but the
   * data are not the real weights.
   */
  constants?: ReadonlyMap<string, Tensor>;
}

/**
 * Parse a module printed by `printModule`.
 *
 * @param text The module text.
 * @param options Where to find the data of summarised constants.
 * @returns The module.
 * @throws {SyntaxError} `Cannot parse IR at L:C: expected ... but found ...`, or an undefined or redefined value.
 *
 * @example Round-trip a module
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "./parser.ts";
 * import { printModule } from "./printer.ts";
 * const text = [
 *   'module opsets {"": 13} ir_version 7 {',
 *   "graph @main(%x: f32[N,4]) -> (%y) {",
 *   "  %y = Relu(%x) : f32[N,4]",
 *   "  return %y",
 *   "}",
 *   "}",
 *   "",
 * ].join("\n");
 * const m = parseModule(text);
 * assert.equal(m.graph.ops[0].operand(0), m.graph.inputs[0]);
 * assert.equal(printModule(m), text);
 * assert.throws(() => parseModule(text.replace("Relu(%x)", "Relu(%z)")), {
 *   message: "Cannot parse IR at 3:13: use of undefined value %z",
 * });
 * ```
 */
export function parseModule(text: string, options: ParseOptions = {}): Module {
  const p = new Parser(text, options);
  const module = p.module();
  p.end();
  return module;
}

/**
 * Parse a lone graph printed by `printGraph`.
 *
 * @example Parse a graph
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseGraph } from "./parser.ts";
 * const g = parseGraph("graph @g(%a: f32[2]) -> (%a) {\n  return %a\n}\n");
 * assert.equal(g.outputs[0], g.inputs[0]);
 * ```
 */
export function parseGraph(text: string, options: ParseOptions = {}): Graph {
  const p = new Parser(text, options);
  const graph = p.graph(null);
  p.end();
  return graph;
}

/**
 * Every tensor of `module` (constants, input defaults and attribute tensors,
 * subgraphs included) keyed by its content hash, the key every `hash<"...">`
 * summary carries: the {@linkcode ParseOptions.constants} that reads a summarised
 * printout of `module` back with its data. (Value names are not used as keys:
 * sibling subgraphs may reuse a name.)
 *
 * @example Parse a summarised printout back with its data
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph } from "./graph.ts";
 * import { Module } from "./module.ts";
 * import { collectTensors, parseModule } from "./parser.ts";
 * import { printModule } from "./printer.ts";
 * import { float32Tensor } from "./tensor.ts";
 * const g = new Graph();
 * const data = float32Tensor([32], Array.from({ length: 32 }, (_, i) => i));
 * g.outputs.push(g.addConstant("w", data, { elem: "f32", shape: [32] }));
 * const m = new Module(g);
 * const back = parseModule(printModule(m), { constants: collectTensors(m) });
 * assert.equal(back.graph.constants[0].constant, data);
 * ```
 */
export function collectTensors(module: Module): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  const add = (t: Tensor): void => {
    out.set(placeholderHash(t) ?? tensorHash(t), t);
  };
  const visit = (graph: Graph): void => {
    for (const v of [...graph.inputs, ...graph.constants]) if (v.constant !== null) add(v.constant);
    for (const op of graph.ops) {
      for (const a of op.attributes.values()) {
        if (a.kind === "tensor") add(a.value);
        if (a.kind === "tensors") a.value.forEach(add);
        for (const sub of subgraphsOf(a)) visit(sub);
      }
    }
  };
  visit(module.graph);
  return out;
}

type TokenKind = "value" | "symbol" | "ident" | "number" | "string" | "punct" | "eof";

interface Token {
  readonly kind: TokenKind;
  /** Decoded text: the name for values and symbols, the contents for strings, else the source text. */
  readonly text: string;
  /** Source text, for messages. */
  readonly raw: string;
  readonly line: number;
  readonly col: number;
}

const NAME_CHAR = /[A-Za-z0-9$._-]/;
const IDENT_START = /[A-Za-z_]/;
const IDENT_CHAR = /[A-Za-z0-9_]/;
const NUMBER = /-?\d+(\.\d*)?([eE][+-]?\d+)?/y;
const PUNCT = "()[]{}<>,:=?*";
const INT = /^-?\d+$/;
const LIST_KINDS = new Set(["ints", "floats", "strings", "tensors", "graphs", "types"]);

interface LexMark {
  readonly pos: number;
  readonly line: number;
  readonly col: number;
  readonly ahead: readonly Token[];
}

/** A lazy tokenizer with lookahead; positions are 1-based line and column. */
class Lexer {
  readonly #src: string;
  #pos = 0;
  #line = 1;
  #col = 1;
  readonly #ahead: Token[] = [];

  constructor(src: string) {
    this.#src = src;
  }

  peek(k = 0): Token {
    while (this.#ahead.length <= k) this.#ahead.push(this.#scan());
    return this.#ahead[k];
  }

  next(): Token {
    const t = this.peek();
    this.#ahead.shift();
    return t;
  }

  /** The current position, lookahead included, to come back to with {@linkcode reset}. */
  mark(): LexMark {
    return { pos: this.#pos, line: this.#line, col: this.#col, ahead: [...this.#ahead] };
  }

  reset(m: LexMark): void {
    this.#pos = m.pos;
    this.#line = m.line;
    this.#col = m.col;
    this.#ahead.length = 0;
    this.#ahead.push(...m.ahead);
  }

  #fail(message: string): never {
    throw new SyntaxError(`Cannot parse IR at ${this.#line}:${this.#col}: ${message}`);
  }

  #advance(n: number): void {
    for (let i = 0; i < n; i++) {
      if (this.#src.charCodeAt(this.#pos++) === 10) {
        this.#line++;
        this.#col = 1;
      } else {
        this.#col++;
      }
    }
  }

  #skipSpace(): void {
    const s = this.#src;
    while (this.#pos < s.length) {
      const c = s[this.#pos];
      if (c === " " || c === "\n" || c === "\t" || c === "\r") this.#advance(1);
      else if (c === "/" && s[this.#pos + 1] === "/") {
        const end = s.indexOf("\n", this.#pos);
        this.#advance((end < 0 ? s.length : end) - this.#pos);
      } else break;
    }
  }

  #scan(): Token {
    this.#skipSpace();
    const s = this.#src;
    const line = this.#line;
    const col = this.#col;
    const start = this.#pos;
    const make = (kind: TokenKind, text: string): Token => {
      const raw = s.slice(start, this.#pos);
      return { kind, text, raw, line, col };
    };
    if (start >= s.length) return { kind: "eof", text: "", raw: "", line, col };
    const c = s[start];
    if (c === "%" || c === "@") {
      this.#advance(1);
      if (s[this.#pos] === '"') return make(c === "%" ? "value" : "symbol", this.#string());
      let end = this.#pos;
      while (end < s.length && NAME_CHAR.test(s[end])) end++;
      if (end === this.#pos) this.#fail(`expected a name after "${c}"`);
      const name = s.slice(this.#pos, end);
      this.#advance(end - this.#pos);
      return make(c === "%" ? "value" : "symbol", name);
    }
    if (c === '"') return make("string", this.#string());
    if (IDENT_START.test(c)) {
      let end = start + 1;
      for (;;) {
        while (end < s.length && IDENT_CHAR.test(s[end])) end++;
        // Dotted identifiers name domain-qualified op types (`com.microsoft.Foo`).
        if (s[end] === "." && end + 1 < s.length && IDENT_START.test(s[end + 1])) end += 2;
        else break;
      }
      this.#advance(end - start);
      return make("ident", s.slice(start, end));
    }
    if (c === "-" && s[start + 1] === ">") {
      this.#advance(2);
      return make("punct", "->");
    }
    if (c === "-" && s.startsWith("inf", start + 1)) {
      this.#advance(4);
      return make("number", "-inf");
    }
    NUMBER.lastIndex = start;
    const m = NUMBER.exec(s);
    if (m !== null) {
      this.#advance(m[0].length);
      return make("number", m[0]);
    }
    if (PUNCT.includes(c)) {
      this.#advance(1);
      return make("punct", c);
    }
    this.#fail(`unexpected character ${JSON.stringify(c)}`);
  }

  /** A JSON string starting at the current position; returns its value. */
  #string(): string {
    const s = this.#src;
    let end = this.#pos + 1;
    while (end < s.length && s[end] !== '"' && s[end] !== "\n") end += s[end] === "\\" ? 2 : 1;
    if (s[end] !== '"') this.#fail("unterminated string");
    const raw = s.slice(this.#pos, end + 1);
    let value: string;
    try {
      value = JSON.parse(raw);
    } catch {
      this.#fail(`invalid string ${raw}`);
    }
    this.#advance(end + 1 - this.#pos);
    return value;
  }
}

/** How a token reads in a message. */
function describe(t: Token): string {
  if (t.kind === "eof") return "end of input";
  if (t.kind === "value" || t.kind === "symbol") return t.raw;
  if (t.kind === "string") return `string ${t.raw}`;
  return JSON.stringify(t.raw);
}

interface Definition {
  readonly value: Value;
  readonly line: number;
  readonly col: number;
}

/** Names visible in one graph; subgraphs see their enclosing graphs' names (as in ONNX). */
class Scope {
  readonly names = new Map<string, Definition>();
  constructor(readonly parent: Scope | null) {}

  lookup(name: string): Definition | undefined {
    return this.names.get(name) ?? this.parent?.lookup(name);
  }
}

class Parser {
  readonly #lex: Lexer;
  readonly #constants: ReadonlyMap<string, Tensor> | undefined;

  constructor(text: string, options: ParseOptions) {
    this.#lex = new Lexer(text);
    this.#constants = options.constants;
  }

  // ----- token helpers -----

  #fail(at: Token, message: string): never {
    throw new SyntaxError(`Cannot parse IR at ${at.line}:${at.col}: ${message}`);
  }

  #is(text: string, k = 0): boolean {
    const t = this.#lex.peek(k);
    return (t.kind === "punct" || t.kind === "ident") && t.text === text;
  }

  #accept(text: string): boolean {
    if (!this.#is(text)) return false;
    this.#lex.next();
    return true;
  }

  #expect(text: string): Token {
    const t = this.#lex.peek();
    if (!this.#is(text)) this.#fail(t, `expected "${text}" but found ${describe(t)}`);
    return this.#lex.next();
  }

  /** The "," between list items, where the list could also have ended with `close`. */
  #separator(close: string): void {
    const t = this.#lex.peek();
    if (!this.#is(",")) this.#fail(t, `expected "," or "${close}" but found ${describe(t)}`);
    this.#lex.next();
  }

  #expectKind(kind: TokenKind, what: string): Token {
    const t = this.#lex.peek();
    if (t.kind !== kind) this.#fail(t, `expected ${what} but found ${describe(t)}`);
    return this.#lex.next();
  }

  #int(): number {
    const t = this.#lex.peek();
    if (t.kind !== "number" || !INT.test(t.text)) this.#fail(t, `expected an integer but found ${describe(t)}`);
    this.#lex.next();
    return Number(t.text);
  }

  #string(): string {
    return this.#expectKind("string", "a string").text;
  }

  end(): void {
    this.#expectKind("eof", "end of input");
  }

  // ----- module and graph -----

  module(): Module {
    this.#expect("module");
    this.#expect("opsets");
    const opsets = this.#map(() => this.#int());
    this.#expect("ir_version");
    const module = new Module(new Graph(), opsets, this.#int());
    if (this.#accept("producer")) {
      module.producerName = this.#string();
      module.producerVersion = this.#string();
    }
    if (this.#accept("domain")) module.domain = this.#string();
    if (this.#accept("model_version")) module.modelVersion = this.#int();
    if (this.#accept("metadata")) { for (const [k, v] of this.#map(() => this.#string())) module.metadata.set(k, v); }
    if (this.#accept("doc")) module.docString = this.#string();
    this.#expect("{");
    module.graph = this.graph(null);
    this.#expect("}");
    return module;
  }

  /** `{"key": value, ...}` with string keys, in order. */
  #map<V>(value: () => V): [string, V][] {
    this.#expect("{");
    const entries: [string, V][] = [];
    const seen = new Set<string>();
    while (!this.#is("}")) {
      if (entries.length > 0) this.#separator("}");
      const keyTok = this.#expectKind("string", "a string key");
      if (seen.has(keyTok.text)) this.#fail(keyTok, `duplicate key ${keyTok.raw}`);
      seen.add(keyTok.text);
      this.#expect(":");
      entries.push([keyTok.text, value()]);
    }
    this.#expect("}");
    return entries;
  }

  graph(parent: Scope | null): Graph {
    this.#expect("graph");
    const graph = new Graph(this.#expectKind("symbol", "a graph name (@name)").text);
    const scope = new Scope(parent);
    this.#expect("(");
    while (!this.#is(")")) {
      if (graph.inputs.length > 0) this.#separator(")");
      const nameTok = this.#expectKind("value", "a graph input (%name)");
      this.#expect(":");
      const value = new Value(nameTok.text, this.#typeOrUnknown());
      if (this.#accept("=")) value.constant = this.#tensor(value.type, nameTok.text);
      this.#define(scope, nameTok, value);
      graph.addInput(value);
    }
    this.#expect(")");
    this.#expect("->");
    const declared = this.#valueList("(", ")");
    if (this.#accept("doc")) graph.docString = this.#string();
    this.#expect("{");
    for (;;) {
      const t = this.#lex.peek();
      if (t.kind === "ident" && t.text === "return" && !this.#is("(", 1)) break;
      if (t.kind === "eof" || this.#is("}")) this.#fail(t, `expected "return" but found ${describe(t)}`);
      if (t.kind === "value" && this.#is("=", 1) && this.#is("const", 2) && !this.#is("(", 3)) {
        this.#constLine(graph, scope);
      } else this.#op(graph, scope);
    }
    const returnTok = this.#lex.next();
    const returned = this.#is("}") ? [] : this.#valueList(null, null);
    const names = (list: Token[]): string => list.map((t) => t.raw).join(", ");
    if (names(declared) !== names(returned)) {
      this.#fail(
        returnTok,
        `graph @${graph.name} declares outputs (${names(declared)}) but returns (${names(returned)})`,
      );
    }
    for (const t of returned) graph.outputs.push(this.#use(scope, t));
    this.#expect("}");
    return graph;
  }

  /** `%a, %b` (optionally bracketed by `open`/`close`), as tokens. */
  #valueList(open: string | null, close: string | null): Token[] {
    if (open !== null) this.#expect(open);
    const list: Token[] = [];
    if (close === null || !this.#is(close)) {
      do list.push(this.#expectKind("value", "a value (%name)")); while (this.#accept(","));
    }
    if (close !== null) this.#expect(close);
    return list;
  }

  #define(scope: Scope, at: Token, value: Value): void {
    const previous = scope.lookup(value.name);
    if (previous !== undefined) {
      this.#fail(at, `redefinition of value ${at.raw} (first defined at ${previous.line}:${previous.col})`);
    }
    scope.names.set(value.name, { value, line: at.line, col: at.col });
  }

  #use(scope: Scope, at: Token): Value {
    const d = scope.lookup(at.text);
    if (d === undefined) this.#fail(at, `use of undefined value ${at.raw}`);
    return d.value;
  }

  #constLine(graph: Graph, scope: Scope): void {
    const nameTok = this.#lex.next();
    this.#expect("=");
    this.#expect("const");
    const type = this.#typeOrUnknown();
    const data = this.#tensor(type, nameTok.text);
    const value = graph.addConstant(nameTok.text, data, type ?? { elem: data.dtype, shape: data.shape });
    value.type = type;
    this.#define(scope, nameTok, value);
  }

  #op(graph: Graph, scope: Scope): void {
    const resultToks: Token[] = [];
    const first = this.#lex.peek();
    if (first.kind === "value" || (first.kind === "ident" && first.text === "_")) {
      do {
        const t = this.#lex.peek();
        if (t.kind !== "value" && !(t.kind === "ident" && t.text === "_")) {
          this.#fail(t, `expected a result (%name or _) but found ${describe(t)}`);
        }
        resultToks.push(this.#lex.next());
      } while (this.#accept(","));
      this.#expect("=");
    }
    const typeTok = this.#lex.next();
    let domain = "";
    let type: string;
    if (typeTok.kind === "ident") {
      const dot = typeTok.text.lastIndexOf(".");
      domain = dot < 0 ? "" : typeTok.text.slice(0, dot);
      type = typeTok.text.slice(dot + 1);
    } else if (typeTok.kind === "string") {
      const sep = typeTok.text.lastIndexOf("::");
      domain = sep < 0 ? "" : typeTok.text.slice(0, sep);
      type = sep < 0 ? typeTok.text : typeTok.text.slice(sep + 2);
    } else {
      this.#fail(typeTok, `expected an op type but found ${describe(typeTok)}`);
    }
    this.#expect("(");
    const operands: (Value | null)[] = [];
    while (!this.#is(")")) {
      if (operands.length > 0) this.#separator(")");
      if (this.#accept("_")) operands.push(null);
      else operands.push(this.#use(scope, this.#expectKind("value", "an operand (%name or _)")));
    }
    this.#expect(")");
    const attributes: [string, Attribute][] = [];
    if (this.#accept("{")) {
      const seen = new Set<string>();
      do {
        const keyTok = this.#lex.next();
        if (keyTok.kind !== "ident" && keyTok.kind !== "string") {
          this.#fail(keyTok, `expected an attribute name but found ${describe(keyTok)}`);
        }
        if (seen.has(keyTok.text)) this.#fail(keyTok, `duplicate attribute "${keyTok.text}"`);
        seen.add(keyTok.text);
        this.#expect("=");
        attributes.push([keyTok.text, this.#attribute(scope)]);
      } while (this.#accept(","));
      this.#expect("}");
    }
    const types: (Type | null)[] = [];
    if (resultToks.length > 0) {
      this.#expect(":");
      do types.push(this.#typeOrUnknown()); while (this.#accept(","));
      if (types.length !== resultToks.length) {
        this.#fail(this.#lex.peek(), `expected ${resultToks.length} result types but found ${types.length}`);
      }
    }
    const results = resultToks.map((t, i) => new Value(t.kind === "value" ? t.text : "", types[i]));
    let name = results[0]?.name ?? "";
    if (this.#is("name") && this.#lex.peek(1).kind === "string") {
      this.#lex.next();
      name = this.#string();
    }
    const op = new Op({ name, type, domain, operands, results, attributes });
    if (this.#is("doc") && this.#lex.peek(1).kind === "string") {
      this.#lex.next();
      op.docString = this.#string();
    }
    for (const [, a] of attributes) for (const sub of subgraphsOf(a)) sub.parentOp = op;
    resultToks.forEach((t, i) => {
      if (t.kind === "value") this.#define(scope, t, results[i]);
    });
    graph.addOp(op);
  }

  // ----- attributes -----

  #attribute(scope: Scope): Attribute {
    const t = this.#lex.peek();
    if (t.kind === "number") {
      this.#lex.next();
      return isIntText(t.text) ? intAttr(t) : floatAttr(t);
    }
    if (t.kind === "string") return { kind: "string", value: this.#lex.next().text };
    if (this.#is("[")) return this.#list(scope);
    if (t.kind === "ident") {
      switch (t.text) {
        case "nan":
        case "inf":
          this.#lex.next();
          return floatAttr(t);
        case "dense":
        case "hash":
          return { kind: "tensor", value: this.#tensor(null, null) };
        case "graph":
          return { kind: "graph", value: this.graph(scope) };
        case "ref": {
          this.#lex.next();
          this.#expect("<");
          const value = this.#string();
          this.#expect(",");
          const refKind = this.#expectKind("ident", "an attribute kind").text;
          this.#expect(">");
          return { kind: "ref", value, refKind };
        }
        case "opaque_attr": {
          this.#lex.next();
          this.#expect("<");
          const refKind = this.#string();
          this.#expect(">");
          return { kind: "opaque", value: undefined, refKind };
        }
      }
      if (LIST_KINDS.has(t.text) && this.#is("[", 1)) {
        this.#lex.next();
        this.#expect("[");
        this.#expect("]");
        return { kind: t.text, value: [] } as Attribute;
      }
      return { kind: "type", value: this.#type() };
    }
    this.#fail(t, `expected an attribute value but found ${describe(t)}`);
  }

  #list(scope: Scope): Attribute {
    const open = this.#expect("[");
    const t = this.#lex.peek();
    if (this.#is("]")) this.#fail(t, "an empty list needs its kind: write ints[], floats[], strings[], ...");
    const elements = <T>(item: () => T): T[] => {
      const out: T[] = [];
      do out.push(item()); while (this.#accept(","));
      this.#expect("]");
      return out;
    };
    if (t.kind === "number" && isIntText(t.text)) return { kind: "ints", value: elements(() => this.#int()) };
    if (t.kind === "number" || (t.kind === "ident" && (t.text === "nan" || t.text === "inf"))) {
      return { kind: "floats", value: elements(() => this.#floatValue()) };
    }
    if (t.kind === "string") return { kind: "strings", value: elements(() => this.#string()) };
    if (this.#is("dense") || this.#is("hash")) {
      return { kind: "tensors", value: elements(() => this.#tensor(null, null)) };
    }
    if (this.#is("graph")) return { kind: "graphs", value: elements(() => this.graph(scope)) };
    if (t.kind === "ident" || this.#is("?")) return { kind: "types", value: elements(() => this.#type()) };
    this.#fail(open, `expected a list of attribute values but found ${describe(t)}`);
  }

  #floatValue(): number {
    const t = this.#lex.next();
    if (t.kind === "number" || (t.kind === "ident" && (t.text === "nan" || t.text === "inf"))) {
      return Math.fround(floatOf(t.text));
    }
    this.#fail(t, `expected a float but found ${describe(t)}`);
  }

  // ----- types -----

  #typeOrUnknown(): Type | null {
    return this.#accept("?") ? null : this.#type();
  }

  #type(): Type {
    const t = this.#lex.peek();
    if (t.kind !== "ident") this.#fail(t, `expected a type but found ${describe(t)}`);
    this.#lex.next();
    if (t.text === "opaque") {
      this.#expect("<");
      const description = this.#string();
      this.#expect(">");
      return { kind: "opaque", description };
    }
    let elem: ElementType;
    if (t.text === "bfp") {
      this.#expect("<");
      const mantissa = this.#param("mantissa");
      this.#expect(",");
      const exponent = this.#param("exponent");
      this.#expect(",");
      const block = this.#param("block");
      this.#expect(">");
      elem = { kind: "bfp", mantissa, exponent, block };
    } else if (t.text === "fixed") {
      this.#expect("<");
      const bits = this.#param("bits");
      this.#expect(",");
      const frac = this.#param("frac");
      this.#expect(">");
      elem = { kind: "fixed", bits, frac };
    } else if (isDType(t.text)) {
      elem = t.text;
    } else {
      this.#fail(t, `unknown element type "${t.text}"`);
    }
    this.#expect("[");
    if (this.#accept("*")) {
      this.#expect("]");
      return { elem, shape: null };
    }
    const shape: Dim[] = [];
    while (!this.#is("]")) {
      if (shape.length > 0) this.#separator("]");
      const d = this.#lex.next();
      if (d.kind === "number" && INT.test(d.text)) shape.push(Number(d.text));
      else if (d.kind === "ident" || d.kind === "string") shape.push(d.text);
      else if (d.kind === "punct" && d.text === "?") shape.push("?");
      else this.#fail(d, `expected a dimension but found ${describe(d)}`);
    }
    this.#expect("]");
    return { elem, shape };
  }

  #param(name: string): number {
    this.#expect(name);
    this.#expect("=");
    return this.#int();
  }

  // ----- tensors -----

  /**
   * A tensor literal. Its dtype and shape come from a `: type` suffix or, when
   * absent, from the declared `context` type; `key` names the constant for lookups.
   */
  #tensor(context: Type | null, key: string | null): Tensor {
    const start = this.#lex.peek();
    if (!this.#is("dense") && !this.#is("hash")) {
      this.#fail(start, `expected a tensor (dense<...> or hash<...>) but found ${describe(start)}`);
    }
    const form = this.#lex.next().text;
    this.#expect("<");
    // Elements are read twice: once here to check the syntax and count them, then,
    // once the type (which may follow the literal) is known, straight into the typed
    // array. Keeping a token per element instead costs more than the second scan.
    let body: LexMark | null = null;
    let count = 0;
    let splat: Token | null = null;
    let hash = "";
    if (form === "hash") hash = this.#string();
    else if (this.#accept("[")) {
      body = this.#lex.mark();
      while (!this.#is("]")) {
        if (count > 0) this.#separator("]");
        this.#lex.next();
        count++;
      }
      this.#expect("]");
    } else {
      splat = this.#lex.next();
    }
    this.#expect(">");
    let type: Type | null = context;
    let typeTok = start;
    if (key === null || this.#is(":")) {
      this.#expect(":");
      typeTok = this.#lex.peek();
      type = this.#type();
    }
    if (
      !isTensorType(type) || typeof type.elem !== "string" || type.shape === null ||
      !type.shape.every((d) => typeof d === "number" && d >= 0)
    ) {
      const found = type === null ? "?" : typeToString(type);
      this.#fail(
        typeTok,
        `tensor data need a plain element type and a static shape, found ${found} (add \`: f32[2,3]\`)`,
      );
    }
    const dtype = type.elem as DType;
    const shape = type.shape as number[];
    if (form === "hash") return this.#resolve(start, key, hash, dtype, shape);
    const length = storageLength(dtype, shapeSize(shape));
    const data = allocData(dtype, shapeSize(shape));
    if (splat !== null) {
      if (dtype === "c64" || dtype === "c128" || dtype === "i4" || dtype === "u4" || dtype === "f4e2m1") {
        this.#fail(splat, `${dtype} data are listed by storage element: write dense<[...]>`);
      }
      if (length > 0) {
        this.#store(data, dtype, 0, splat);
        (data as unknown as { fill(v: unknown): void }).fill(data[0]);
      }
    } else {
      if (count !== length) {
        this.#fail(start, `dense literal has ${count} elements but ${dtype}[${shape.join(",")}] needs ${length}`);
      }
      const after = this.#lex.mark();
      this.#lex.reset(body!);
      for (let i = 0; i < length; i++) {
        if (i > 0) this.#lex.next(); // the "," checked by the first scan
        this.#store(data, dtype, i, this.#lex.next());
      }
      this.#lex.reset(after);
    }
    return { dtype, shape, data };
  }

  #resolve(at: Token, key: string | null, hash: string, dtype: DType, shape: number[]): Tensor {
    const found = (key !== null ? this.#constants?.get(key) : undefined) ?? this.#constants?.get(hash);
    if (found === undefined) {
      const t: Tensor = { dtype, shape, data: allocData(dtype, shapeSize(shape)) };
      markPlaceholder(t, hash);
      return t;
    }
    const what = key !== null ? `constant ${JSON.stringify(key)}` : "attribute tensor";
    if (found.dtype !== dtype || found.shape.join(",") !== shape.join(",")) {
      this.#fail(at, `${what} is ${dtype}[${shape.join(",")}] but the supplied one is ${found.dtype}[${found.shape}]`);
    }
    const actual = placeholderHash(found) ?? tensorHash(found);
    if (actual !== hash) this.#fail(at, `${what} has hash "${hash}" but the supplied tensor's is "${actual}"`);
    return found;
  }

  #store(data: TensorData, dtype: DType, i: number, t: Token): void {
    switch (dtype) {
      case "f32":
      case "f64":
      case "c64":
      case "c128":
      case "f16":
      case "bf16": {
        if (t.kind !== "number" && !(t.kind === "ident" && (t.text === "nan" || t.text === "inf"))) {
          this.#fail(t, `expected a number but found ${describe(t)}`);
        }
        const x = floatOf(t.text);
        if (dtype === "f16") (data as Uint16Array)[i] = floatToHalf(x);
        else if (dtype === "bf16") (data as Uint16Array)[i] = floatToBfloat16(x);
        else (data as Float64Array)[i] = x;
        return;
      }
      case "bool":
        if (t.kind !== "ident" || (t.text !== "true" && t.text !== "false")) {
          this.#fail(t, `expected true or false but found ${describe(t)}`);
        }
        (data as Uint8Array)[i] = t.text === "true" ? 1 : 0;
        return;
      case "string":
        if (t.kind !== "string") this.#fail(t, `expected a string but found ${describe(t)}`);
        (data as string[])[i] = t.text;
        return;
    }
    if (t.kind !== "number" || !INT.test(t.text)) this.#fail(t, `expected an integer but found ${describe(t)}`);
    if (dtype === "i64" || dtype === "u64") {
      const big = BigInt(t.text);
      (data as BigInt64Array)[i] = big;
      if ((data as BigInt64Array)[i] !== big) this.#fail(t, `${t.text} is out of range for ${dtype}`);
    } else {
      const n = Number(t.text);
      (data as Int32Array)[i] = n;
      if ((data as Int32Array)[i] !== n) this.#fail(t, `${t.text} is out of range for ${dtype}`);
    }
  }
}

function isIntText(text: string): boolean {
  return INT.test(text);
}

function floatOf(text: string): number {
  if (text === "nan") return NaN;
  if (text === "inf") return Infinity;
  if (text === "-inf") return -Infinity;
  return Number(text);
}

function intAttr(t: Token): Attribute {
  return { kind: "int", value: Number(t.text) };
}

function floatAttr(t: Token): Attribute {
  return { kind: "float", value: Math.fround(floatOf(t.text)) };
}
