/**
 * The textual form of the IR: one op per line in MLIR's style, deterministic,
 * and read back by `parser.ts` (`print(parse(t)) === t`). The grammar below is
 * the contract between the two files.
 *
 * ```
 * module  := "module" "opsets" "{" (STRING ":" INT ("," STRING ":" INT)*)? "}" "ir_version" INT
 *            ("producer" STRING STRING)? ("domain" STRING)? ("model_version" INT)?
 *            ("metadata" "{" (STRING ":" STRING ("," STRING ":" STRING)*)? "}")? ("doc" STRING)?
 *            "{" graph "}"
 * graph   := "graph" SYMBOL "(" (input ("," input)*)? ")" "->" "(" (VALUE ("," VALUE)*)? ")"
 *            ("doc" STRING)? "{" const* op* "return" (VALUE ("," VALUE)*)? "}"
 * input   := VALUE ":" type ("=" tensor)?          "= tensor": the input's default (ONNX initializer)
 * const   := VALUE "=" "const" type tensor
 * op      := (result ("," result)* "=")? OPTYPE "(" (operand ("," operand)*)? ")"
 *            ("{" KEY "=" attr ("," KEY "=" attr)* "}")? (":" type ("," type)*)?   one type per result
 *            ("name" STRING)? ("doc" STRING)?
 * result  := VALUE | "_"                           "_": an omitted optional output (empty name)
 * operand := VALUE | "_"                           "_": an omitted optional input
 * type    := "?" | "opaque" "<" STRING ">" | elem "[" ("*" | (dim ("," dim)*)?) "]"
 * elem    := "f32" | "i64" | ... (types.ts DType) | "bfp" "<" "mantissa" "=" INT "," "exponent" "=" INT ","
 *            "block" "=" INT ">" | "fixed" "<" "bits" "=" INT "," "frac" "=" INT ">"
 * dim     := INT | "?" | IDENT | STRING            symbols bare when identifiers (types.ts dimToString)
 * tensor  := data (":" type)?                      ": type" required in attributes; elsewhere only when
 *                                                  the data's dtype/shape differ from the declared type
 * data    := "dense" "<" (scalar | "[" (scalar ("," scalar)*)? "]") ">"     one scalar = splat
 *          | "hash" "<" STRING ">"                 summary: tensorHash (16 hex digits of SHA-256)
 * scalar  := INT | FLOAT | "true" | "false" | STRING
 * attr    := INT | FLOAT | STRING | tensor | graph | type | "ref" "<" STRING "," IDENT ">"
 *          | "opaque_attr" "<" STRING ">" | "[" attr ("," attr)* "]"      list kind from its first item
 *          | ("ints" | "floats" | "strings" | "tensors" | "graphs" | "types") "[" "]"   typed empty list
 * ```
 *
 * Lexical rules: `VALUE` is `%` plus a bare name (`[A-Za-z0-9$._-]+`, MLIR's
 * suffix-id) or a JSON string (`%"layer1.0/conv1:0"`); `SYMBOL` is `@` plus the
 * same; `STRING` is a JSON string; `KEY` is an identifier or a JSON string;
 * `OPTYPE` is `Type`, `domain.Type` (dotted identifiers: the last segment is the
 * type) or a JSON string `"domain::Type"` when either part is not an identifier.
 * `FLOAT` always shows a `.`, an exponent, `nan` or `inf`, so `1.0` is a float
 * and `1` an int. `//` starts a comment to the end of the line; whitespace and
 * newlines are not significant to the parser.
 *
 * Scoping (as ONNX): a graph sees its own values defined so far and those its
 * enclosing graphs defined before the op holding it; a name may not be defined
 * twice in that chain, but sibling subgraphs (then/else) may reuse names.
 *
 * Choices: attributes are sorted by key; float32 values (attributes, f32/f16/bf16
 * data) print as the shortest decimal that reads back to the same float32, f64
 * data as JavaScript's shortest round-trip form; NaN payloads are not kept.
 * Tensor data is flat, row-major; complex data lists its interleaved (re, im)
 * storage, packed 4-bit and 8-bit float types their raw bytes. A tensor whose
 * elements are all equal prints as a splat (`dense<0.0>`) at any size; others
 * with more than `constantLimit` elements print as `hash<"...">` unless
 * `fullConstants` is set. The parser resolves a summary from its `constants`
 * map or else makes a zero-filled placeholder that {@linkcode placeholderHash}
 * recognises and that prints back as the same summary. An op's name is printed
 * (`name "Conv_0"`) only when it differs from its first result's name. Doc
 * strings of the module, graphs and ops print as `doc "..."`. Not printed: value
 * doc strings, the `extra` fields (source-format data kept for export), the
 * `proto` of opaque types and the payload of `opaque` attributes; a domain
 * spelled `ai.onnx` reads back as `""` (the same domain).
 * @module
 */
import type { Attribute } from "./attributes.ts";
import { type Graph, isDefaultDomain, type Op } from "./graph.ts";
import type { Module } from "./module.ts";
import { bfloat16ToFloat, halfToFloat, shapeSize, type Tensor, tensorHash } from "./tensor.ts";
import { isTensorType, sameShape, type Type, typeToString } from "./types.ts";

/** Options of {@linkcode printModule} and {@linkcode printGraph}. */
export interface PrintOptions {
  /** Print every constant in full, whatever its size (default false). */
  fullConstants?: boolean;
  /** Largest element count printed inline; bigger non-splat tensors print as `hash<...>` (default 16). */
  constantLimit?: number;
}

/** Tensors the parser made for `hash<...>` summaries it could not resolve, with their hash. */
const placeholders = new WeakMap<Tensor, string>();

/**
 * Mark `t` as a stand-in (zero-filled) for the summarised tensor with content
 * hash `hash`; the printer prints it back as that summary. Used by the parser.
 */
export function markPlaceholder(t: Tensor, hash: string): void {
  placeholders.set(t, hash);
}

/**
 * The summary hash when `t` is a placeholder the parser created for an unresolved
 * `hash<...>` constant (its data are zeros, not the real weights), else undefined.
 *
 * @example Check a parsed constant
 * ```ts
 * import assert from "node:assert/strict";
 * import { zeros } from "./tensor.ts";
 * import { placeholderHash } from "./printer.ts";
 * assert.equal(placeholderHash(zeros("f32", [2])), undefined);
 * ```
 */
export function placeholderHash(t: Tensor): string | undefined {
  return placeholders.get(t);
}

const BARE_NAME = /^[A-Za-z0-9$._-]+$/;
const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const DOTTED = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;

/**
 * Print a module.
 *
 * @param module The module.
 * @param options Constant printing options.
 * @returns The text, ending in a newline.
 *
 * @example Print a one-op module
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "./graph.ts";
 * import { Module } from "./module.ts";
 * import { printModule } from "./printer.ts";
 * const g = new Graph("main");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4] }));
 * const relu = g.addOp(new Op({ name: "y", type: "Relu", operands: [x], results: [new Value("y", x.type)] }));
 * g.outputs.push(relu.result);
 * assert.equal(
 *   printModule(new Module(g)),
 *   [
 *     'module opsets {"": 13} ir_version 7 {',
 *     "graph @main(%x: f32[N,4]) -> (%y) {",
 *     "  %y = Relu(%x) : f32[N,4]",
 *     "  return %y",
 *     "}",
 *     "}",
 *     "",
 *   ].join("\n"),
 * );
 * ```
 */
export function printModule(module: Module, options: PrintOptions = {}): string {
  const head = ["module", "opsets", printMap(module.opsets, String), "ir_version", String(module.irVersion)];
  if (module.producerName !== "" || module.producerVersion !== "") {
    head.push("producer", JSON.stringify(module.producerName), JSON.stringify(module.producerVersion));
  }
  if (module.domain !== "") head.push("domain", JSON.stringify(module.domain));
  if (module.modelVersion !== 0) head.push("model_version", String(module.modelVersion));
  if (module.metadata.size > 0) head.push("metadata", printMap(module.metadata, (v) => JSON.stringify(v)));
  if (module.docString !== "") head.push("doc", JSON.stringify(module.docString));
  return `${head.join(" ")} {\n${printGraph(module.graph, options)}}\n`;
}

/**
 * Print a graph on its own (the `graph` production), ending in a newline.
 *
 * @example Print an empty graph
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph } from "./graph.ts";
 * import { printGraph } from "./printer.ts";
 * assert.equal(printGraph(new Graph("g")), "graph @g() -> () {\n  return\n}\n");
 * ```
 */
export function printGraph(graph: Graph, options: PrintOptions = {}): string {
  const lines: string[] = [];
  new Printer(options).graph(graph, "", lines);
  return lines.join("\n") + "\n";
}

/** Text of a value reference: `%name`, or `%"quoted name"` when not a bare name. */
export function valueRef(name: string): string {
  return "%" + (BARE_NAME.test(name) ? name : JSON.stringify(name));
}

/** Text of a graph symbol: `@name` or `@"quoted name"`. */
function symbolRef(name: string): string {
  return "@" + (BARE_NAME.test(name) ? name : JSON.stringify(name));
}

/**
 * Shortest decimal text that reads back (through `Math.fround`) to the same
 * float32 as `x`; always shows a `.` or an exponent so it reads as a float.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatFloat32 } from "./printer.ts";
 * assert.equal(formatFloat32(Math.fround(0.1)), "0.1");
 * assert.equal(formatFloat32(1), "1.0");
 * ```
 */
export function formatFloat32(x: number): string {
  const special = formatSpecial(x);
  if (special !== null) return special;
  const f = Math.fround(x);
  // Find the fewest significant digits that read back to f (9 always do). Trained
  // weights mostly need 8 or 9, so test 8 and 7 first, then bisect below 7. In
  // every case the answer's one-digit-shorter neighbour was tested and failed.
  let text = f.toPrecision(8);
  if (Math.fround(Number(text)) !== f) {
    text = f.toPrecision(9);
  } else {
    const seven = f.toPrecision(7);
    if (Math.fround(Number(seven)) === f) {
      text = seven;
      let lo = 1;
      let hi = 7;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        const candidate = f.toPrecision(mid);
        if (Math.fround(Number(candidate)) === f) {
          hi = mid;
          text = candidate;
        } else {
          lo = mid + 1;
        }
      }
    }
  }
  return floatLooking(String(Number(text)));
}

/** Shortest round-trip text of a float64, always float-looking. */
function formatFloat64(x: number): string {
  return formatSpecial(x) ?? floatLooking(String(x));
}

function formatSpecial(x: number): string | null {
  if (Number.isNaN(x)) return "nan";
  if (x === Infinity) return "inf";
  if (x === -Infinity) return "-inf";
  if (Object.is(x, -0)) return "-0.0";
  return null;
}

function floatLooking(text: string): string {
  return /[.e]/.test(text) ? text : text + ".0";
}

function printMap<V>(map: ReadonlyMap<string, V>, value: (v: V) => string): string {
  return "{" + [...map].map(([k, v]) => `${JSON.stringify(k)}: ${value(v)}`).join(", ") + "}";
}

/** Text of a type, `?` for unknown. */
function printType(type: Type | null): string {
  return type === null ? "?" : typeToString(type);
}

/** Text of an op type: `Conv`, `com.microsoft.Foo`, or `"domain::Type"` for unusual names. */
function printOpType(op: Op): string {
  const domain = isDefaultDomain(op.domain) ? "" : op.domain;
  if (IDENT.test(op.type) && (domain === "" || DOTTED.test(domain))) {
    return domain === "" ? op.type : `${domain}.${op.type}`;
  }
  return JSON.stringify(`${domain}::${op.type}`);
}

/** One element of a tensor's storage as text. */
function elementText(t: Tensor, i: number): string {
  const d = t.data;
  switch (t.dtype) {
    case "f32":
    case "c64":
      return formatFloat32((d as Float32Array)[i]);
    case "f64":
    case "c128":
      return formatFloat64((d as Float64Array)[i]);
    case "f16":
      return formatFloat32(halfToFloat((d as Uint16Array)[i]));
    case "bf16":
      return formatFloat32(bfloat16ToFloat((d as Uint16Array)[i]));
    case "bool":
      return (d as Uint8Array)[i] !== 0 ? "true" : "false";
    case "string":
      return JSON.stringify((d as string[])[i]);
    default:
      return String(d[i]);
  }
}

class Printer {
  readonly #full: boolean;
  readonly #limit: number;

  constructor(options: PrintOptions) {
    this.#full = options.fullConstants ?? false;
    this.#limit = options.constantLimit ?? 16;
  }

  /** Print `graph` with its header continuing the current line; body at `indent` + 2. */
  graph(graph: Graph, indent: string, lines: string[], prefix = ""): void {
    const inner = indent + "  ";
    const inputs = graph.inputs.map((v) => {
      const base = `${valueRef(v.name)}: ${printType(v.type)}`;
      return v.constant === null ? base : `${base} = ${this.tensor(v.constant, v.type)}`;
    });
    const doc = graph.docString === "" ? "" : ` doc ${JSON.stringify(graph.docString)}`;
    const outputs = graph.outputs.map((v) => valueRef(v.name)).join(", ");
    lines.push(`${prefix}graph ${symbolRef(graph.name)}(${inputs.join(", ")}) -> (${outputs})${doc} {`);
    for (const c of graph.constants) {
      lines.push(`${inner}${valueRef(c.name)} = const ${printType(c.type)} ${this.tensor(c.constant!, c.type)}`);
    }
    for (const op of graph.ops) this.op(op, inner, lines);
    lines.push(`${inner}return` + (graph.outputs.length > 0 ? " " + outputs : ""));
    lines.push(`${indent}}`);
  }

  op(op: Op, indent: string, lines: string[]): void {
    let head = indent;
    if (op.results.length > 0) {
      head += op.results.map((r) => (r.name === "" ? "_" : valueRef(r.name))).join(", ") + " = ";
    }
    head += `${printOpType(op)}(${op.operands.map((v) => (v === null ? "_" : valueRef(v.name))).join(", ")})`;
    // Attributes may hold graphs spanning several lines: build the op's text as a
    // list of lines whose last one is still open, then append the trailing clauses.
    const out = [head];
    const keys = [...op.attributes.keys()].sort();
    if (keys.length > 0) {
      out[out.length - 1] += " {";
      keys.forEach((key, i) => {
        const name = IDENT.test(key) ? key : JSON.stringify(key);
        out[out.length - 1] += `${i > 0 ? ", " : ""}${name} = `;
        this.attribute(op.attributes.get(key)!, indent, out);
      });
      out[out.length - 1] += "}";
    }
    let tail = "";
    if (op.results.length > 0) tail += " : " + op.results.map((r) => printType(r.type)).join(", ");
    const defaultName = op.results[0]?.name ?? "";
    if (op.name !== defaultName) tail += ` name ${JSON.stringify(op.name)}`;
    if (op.docString !== "") tail += ` doc ${JSON.stringify(op.docString)}`;
    out[out.length - 1] += tail;
    lines.push(...out);
  }

  /** Append attribute `a` to the open last line of `out` (graphs add lines). */
  attribute(a: Attribute, indent: string, out: string[]): void {
    const append = (s: string): void => {
      out[out.length - 1] += s;
    };
    switch (a.kind) {
      case "int":
        return append(String(a.value));
      case "float":
        return append(formatFloat32(a.value));
      case "string":
        return append(JSON.stringify(a.value));
      case "tensor":
        return append(this.typedTensor(a.value));
      case "type":
        return append(printType(a.value));
      case "ref":
        return append(`ref<${JSON.stringify(a.value)}, ${a.refKind}>`);
      case "opaque":
        return append(`opaque_attr<${JSON.stringify(a.refKind)}>`);
      case "graph":
        return this.nestedGraph(a.value, indent, out);
      case "ints":
      case "floats":
      case "strings":
      case "tensors":
      case "types":
      case "graphs": {
        if (a.value.length === 0) return append(`${a.kind}[]`);
        append("[");
        a.value.forEach((item, i) => {
          if (i > 0) append(", ");
          if (a.kind === "graphs") this.nestedGraph(item as Graph, indent, out);
          else if (a.kind === "ints") append(String(item));
          else if (a.kind === "floats") append(formatFloat32(item as number));
          else if (a.kind === "strings") append(JSON.stringify(item));
          else if (a.kind === "tensors") append(this.typedTensor(item as Tensor));
          else append(printType(item as Type));
        });
        return append("]");
      }
    }
  }

  nestedGraph(graph: Graph, indent: string, out: string[]): void {
    const lines: string[] = [];
    this.graph(graph, indent, lines, out.pop());
    out.push(...lines);
  }

  /** A tensor literal followed by its type (attributes carry no other type). */
  typedTensor(t: Tensor): string {
    return `${this.literal(t)} : ${t.dtype}[${t.shape.join(",")}]`;
  }

  /** A tensor literal in a context of declared type `type`; adds `: type` when the data's own type differs. */
  tensor(t: Tensor, type: Type | null): string {
    const matches = isTensorType(type) && type.elem === t.dtype && sameShape(type.shape, t.shape);
    return matches ? this.literal(t) : this.typedTensor(t);
  }

  literal(t: Tensor): string {
    const hash = placeholders.get(t);
    if (hash !== undefined) return `hash<${JSON.stringify(hash)}>`;
    const n = t.data.length;
    if (n === 0) return "dense<[]>";
    if (isSplat(t)) return `dense<${elementText(t, 0)}>`;
    if (!this.#full && shapeSize(t.shape) > this.#limit) return `hash<${JSON.stringify(tensorHash(t))}>`;
    const items = new Array<string>(n);
    for (let i = 0; i < n; i++) items[i] = elementText(t, i);
    return `dense<[${items.join(", ")}]>`;
  }
}

/** True when every storage element equals the first (NaN equals NaN, -0 differs from 0). */
function isSplat(t: Tensor): boolean {
  const d = t.data;
  // Complex and packed 4-bit storage does not hold one element per array slot: always list it.
  if (t.dtype === "c64" || t.dtype === "c128" || t.dtype === "i4" || t.dtype === "u4" || t.dtype === "f4e2m1") {
    return false;
  }
  const first = d[0];
  for (let i = 1; i < d.length; i++) if (!Object.is(d[i], first)) return false;
  return true;
}
