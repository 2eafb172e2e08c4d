import assert from "node:assert/strict";
import { Graph } from "./graph.ts";
import { Module } from "./module.ts";
import { collectTensors, parseGraph, parseModule } from "./parser.ts";
import { placeholderHash, printModule } from "./printer.ts";
import { float32Tensor, tensorHash } from "./tensor.ts";

const HEADER = 'module opsets {"": 13} ir_version 7 {\n';

/** A module text around graph body lines. */
function moduleText(signature: string, body: string[], ret: string): string {
  return `${HEADER}graph @g${signature} {\n${body.map((l) => `  ${l}\n`).join("")}  return${ret}\n}\n}\n`;
}

function parseError(text: string): string {
  try {
    parseModule(text);
  } catch (e) {
    assert.ok(e instanceof SyntaxError, `expected a SyntaxError, got ${e}`);
    return e.message;
  }
  throw new Error("parse succeeded");
}

Deno.test("parseModule() builds use lists, omitted operands and results through the graph API", () => {
  const m = parseModule(moduleText(
    "(%x: f32[N,4], %m: f32[]) -> (%y, %z)",
    ["%y, _ = Dropout(%x, _, _) : f32[N,4], ?", "%z = Clip(%x, _, %m) : f32[N,4]"],
    " %y, %z",
  ));
  const [x, max] = m.graph.inputs;
  const [dropout, clip] = m.graph.ops;
  assert.deepEqual(dropout.operands, [x, null, null]);
  assert.equal(dropout.results[1].name, "");
  assert.equal(dropout.results[1].type, null);
  assert.deepEqual(clip.operands, [x, null, max]);
  assert.deepEqual(x.uses.map((u) => [u.op, u.index]), [[dropout, 0], [clip, 0]]);
  assert.deepEqual(max.uses.map((u) => [u.op.name, u.index]), [["z", 2]]);
  assert.equal(dropout.name, "y"); // no name clause: the first result's name
  assert.equal(dropout.graph, m.graph);
  assert.deepEqual(m.graph.outputs, [dropout.results[0], clip.result]);
});

Deno.test("parseModule() links subgraphs to their op and records uses of captured outer values", () => {
  const text = Deno.readTextFileSync(new URL("../tests/golden/ir/if_capture.ir", import.meta.url));
  const m = parseModule(text);
  const x = m.graph.inputs[1];
  const [ifOp, loop] = m.graph.ops;
  const then = ifOp.attributes.get("then_branch");
  assert.equal(then?.kind, "graph");
  const branch = (then as { value: Graph }).value;
  assert.equal(branch.parentOp, ifOp);
  assert.equal(branch.parentGraph, m.graph);
  assert.equal(branch.ops[0].operand(0), x);
  const body = (loop.attributes.get("body") as { value: Graph }).value;
  assert.equal(body.inputs.length, 3);
  assert.equal(body.outputs[0], body.inputs[1]);
  // %x is read by both branches' ops and the loop body, each use recorded on the outer value.
  assert.deepEqual(x.uses.map((u) => u.op.graph?.name), ["else_branch", "then_branch", "body"]);
});

Deno.test("parseModule() reports a syntax error with line, column, expected and found", () => {
  const text = moduleText("(%x: f32[2]) -> (%y)", ["%y = Add(%x %x) : f32[2]"], " %y");
  assert.equal(parseError(text), 'Cannot parse IR at 3:15: expected "," or ")" but found %x');
  const text2 = moduleText("(%x: f32[2], %z: f32[2]) -> (%y)", ["%y = Relu(%x, %z,) : f32[2]"], " %y");
  assert.equal(parseError(text2), 'Cannot parse IR at 3:20: expected an operand (%name or _) but found ")"');
  assert.equal(
    parseError('module opsets {"": 13} ir_version 7 {\ngraph @g(%x: f32[2] -> () {\n'),
    'Cannot parse IR at 2:21: expected "," or ")" but found "->"',
  );
  assert.equal(
    parseError(HEADER + "graph @g() -> () {\n  return\n}\n"),
    'Cannot parse IR at 5:1: expected "}" but found end of input',
  );
  assert.equal(
    parseError(HEADER + "graph @g() -> () {\n  return\n}\n}\n}"),
    'Cannot parse IR at 6:1: expected end of input but found "}"',
  );
});

Deno.test("parseModule() reports a use of an undefined value and a use before definition", () => {
  const text = moduleText("(%x: f32[2]) -> (%y)", ["%y = Relu(%foo) : f32[2]"], " %y");
  assert.equal(parseError(text), "Cannot parse IR at 3:13: use of undefined value %foo");
  const late = moduleText("(%x: f32[2]) -> (%z)", ["%y = Relu(%z) : f32[2]", "%z = Relu(%x) : f32[2]"], " %z");
  assert.equal(parseError(late), "Cannot parse IR at 3:13: use of undefined value %z");
  const output = moduleText("(%x: f32[2]) -> (%nope)", [], " %nope");
  assert.equal(parseError(output), "Cannot parse IR at 3:10: use of undefined value %nope");
});

Deno.test("parseModule() refuses redefinitions, including shadowing an outer value in a subgraph", () => {
  const text = moduleText("(%x: f32[2]) -> (%x)", ["%x = Relu(%x) : f32[2]"], " %x");
  assert.equal(parseError(text), "Cannot parse IR at 3:3: redefinition of value %x (first defined at 2:10)");
  const constant = moduleText("(%x: f32[2]) -> (%x)", ["%x = const f32[] dense<1.0>"], " %x");
  assert.equal(parseError(constant), "Cannot parse IR at 3:3: redefinition of value %x (first defined at 2:10)");
  const shadow = moduleText(
    "(%c: bool[], %x: f32[2]) -> (%y)",
    ["%y = If(%c) {then_branch = graph @t() -> (%x) {", "  %x = Relu(%x) : f32[2]", "  return %x", "}} : f32[2]"],
    " %y",
  );
  assert.equal(parseError(shadow), "Cannot parse IR at 4:5: redefinition of value %x (first defined at 2:22)");
  // Sibling subgraphs are separate scopes: both may define %r.
  const siblings = moduleText(
    "(%c: bool[], %x: f32[2]) -> (%y)",
    [
      "%y = If(%c) {else_branch = graph @e() -> (%r) {",
      "  %r = Neg(%x) : f32[2]",
      "  return %r",
      "}, then_branch = graph @t() -> (%r) {",
      "  %r = Relu(%x) : f32[2]",
      "  return %r",
      "}} : f32[2]",
    ],
    " %y",
  );
  assert.equal(printModule(parseModule(siblings)), siblings);
});

Deno.test("parseModule() reports bad types", () => {
  const dtype = moduleText("(%x: f33[2]) -> ()", [], "");
  assert.equal(parseError(dtype), 'Cannot parse IR at 2:14: unknown element type "f33"');
  const dim = moduleText("(%x: f32[2.5]) -> ()", [], "");
  assert.equal(parseError(dim), 'Cannot parse IR at 2:18: expected a dimension but found "2.5"');
  const bfp = moduleText("(%x: bfp<mantissa=8, block=16>[2]) -> ()", [], "");
  assert.equal(parseError(bfp), 'Cannot parse IR at 2:30: expected "exponent" but found "block"');
  const count = moduleText("(%x: f32[2]) -> (%y)", ["%y = Relu(%x) : f32[2], f32[2]"], " %y");
  assert.equal(parseError(count), "Cannot parse IR at 4:3: expected 1 result types but found 2");
});

Deno.test("parseModule() reports bad tensor literals", () => {
  const short = moduleText("() -> (%w)", ["%w = const f32[3] dense<[1.0, 2.0]>"], " %w");
  assert.equal(parseError(short), "Cannot parse IR at 3:21: dense literal has 2 elements but f32[3] needs 3");
  const range = moduleText("() -> (%w)", ["%w = const i8[2] dense<[1, 300]>"], " %w");
  assert.equal(parseError(range), "Cannot parse IR at 3:30: 300 is out of range for i8");
  const notInt = moduleText("() -> (%w)", ["%w = const i64[] dense<1.5>"], " %w");
  assert.equal(parseError(notInt), 'Cannot parse IR at 3:26: expected an integer but found "1.5"');
  const symbolic = moduleText("() -> (%w)", ["%w = const f32[N] dense<0.0>"], " %w");
  assert.equal(
    parseError(symbolic),
    "Cannot parse IR at 3:21: tensor data need a plain element type and a static shape, found f32[N] (add `: f32[2,3]`)",
  );
  const packed = moduleText("() -> (%w)", ["%w = const i4[4] dense<3>"], " %w");
  assert.equal(
    parseError(packed),
    "Cannot parse IR at 3:26: i4 data are listed by storage element: write dense<[...]>",
  );
  const untyped = moduleText("(%x: f32[1]) -> (%y)", ["%y = Foo(%x) {t = dense<[1.0]>} : ?"], " %y");
  assert.equal(parseError(untyped), 'Cannot parse IR at 3:33: expected ":" but found "}"');
});

Deno.test("parseModule() reports other malformed input in one line", () => {
  const list = moduleText("(%x: f32[1]) -> (%y)", ["%y = Foo(%x) {a = []} : ?"], " %y");
  assert.equal(
    parseError(list),
    "Cannot parse IR at 3:22: an empty list needs its kind: write ints[], floats[], strings[], ...",
  );
  const mixed = moduleText("(%x: f32[1]) -> (%y)", ["%y = Foo(%x) {a = [1, 2.5]} : ?"], " %y");
  assert.equal(parseError(mixed), 'Cannot parse IR at 3:25: expected an integer but found "2.5"');
  const dup = moduleText("(%x: f32[1]) -> (%y)", ["%y = Foo(%x) {a = 1, a = 2} : ?"], " %y");
  assert.equal(parseError(dup), 'Cannot parse IR at 3:24: duplicate attribute "a"');
  const string = moduleText("(%x: f32[1]) -> (%y)", ['%y = Foo(%x) {a = "open} : ?'], " %y");
  assert.equal(parseError(string), "Cannot parse IR at 3:21: unterminated string");
  const char = moduleText("(%x: f32[1]) -> (%y)", ["%y = Foo(%x) ; : ?"], " %y");
  assert.equal(parseError(char), 'Cannot parse IR at 3:16: unexpected character ";"');
  const mismatch = moduleText("(%x: f32[1]) -> (%x)", ["%y = Neg(%x) : ?"], " %y");
  assert.equal(
    parseError(mismatch),
    "Cannot parse IR at 4:3: graph @g declares outputs (%x) but returns (%y)",
  );
  assert.equal(parseError("graph @g() -> () {}"), 'Cannot parse IR at 1:1: expected "module" but found "graph"');
});

Deno.test("parseModule() resolves hash summaries from a tensor map and checks their hashes", () => {
  const g = new Graph("g");
  const data = float32Tensor([20], Array.from({ length: 20 }, (_, i) => i / 4));
  g.outputs.push(g.addConstant("w", data, { elem: "f32", shape: [20] }));
  const m = new Module(g);
  const text = printModule(m);
  assert.ok(text.includes(`hash<"${tensorHash(data)}">`));

  const resolved = parseModule(text, { constants: collectTensors(m) });
  assert.equal(resolved.graph.constants[0].constant, data);
  assert.equal(placeholderHash(data), undefined);

  // Without data the constant is a marked zero placeholder that prints back as the same summary.
  const placeholder = parseModule(text);
  const t = placeholder.graph.constants[0].constant!;
  assert.deepEqual([...t.data], new Array(20).fill(0));
  assert.equal(placeholderHash(t), tensorHash(data));
  assert.equal(printModule(placeholder), text);
  assert.ok(printModule(placeholder, { fullConstants: true }).includes(`hash<"${tensorHash(data)}">`));

  const other = float32Tensor([20], new Array(20).fill(0).map((_, i) => i));
  assert.equal(
    parseError2(text, new Map([["w", other]])),
    `Cannot parse IR at 3:22: constant "w" has hash "${tensorHash(data)}" but the supplied tensor's is "${
      tensorHash(other)
    }"`,
  );
  assert.equal(
    parseError2(text, new Map([["w", float32Tensor([2], [1, 2])]])),
    'Cannot parse IR at 3:22: constant "w" is f32[20] but the supplied one is f32[2]',
  );
});

function parseError2(text: string, constants: Map<string, ReturnType<typeof float32Tensor>>): string {
  assert.throws(() => parseModule(text, { constants }), SyntaxError);
  try {
    parseModule(text, { constants });
  } catch (e) {
    return (e as Error).message;
  }
  return "";
}

Deno.test("collectTensors() keys by hash, so sibling subgraphs may reuse a constant name", () => {
  const w = (offset: number) => `dense<[${Array.from({ length: 20 }, (_, i) => `${i + offset}.0`).join(", ")}]>`;
  const full = moduleText(
    "(%c: bool[]) -> (%y)",
    [
      "%y = If(%c) {else_branch = graph @e() -> (%w) {",
      `  %w = const f32[20] ${w(0)}`,
      "  return %w",
      "}, then_branch = graph @t() -> (%w) {",
      `  %w = const f32[20] ${w(100)}`,
      "  return %w",
      "}} : f32[20]",
    ],
    " %y",
  );
  const m = parseModule(full);
  assert.equal(printModule(m, { fullConstants: true }), full);
  const summary = printModule(m);
  assert.equal((summary.match(/hash</g) ?? []).length, 2);
  assert.equal(printModule(parseModule(summary, { constants: collectTensors(m) }), { fullConstants: true }), full);
});

Deno.test("parseModule() resolves summarised attribute tensors by hash", () => {
  const big = float32Tensor([17], Array.from({ length: 17 }, (_, i) => i));
  const text = moduleText(
    "(%x: f32[17]) -> (%y)",
    [`%y = Add(%x, %c) : f32[17]`, `%c = Constant() {value = hash<"${tensorHash(big)}"> : f32[17]} : f32[17]`]
      .reverse(),
    " %y",
  );
  const m = parseModule(text, { constants: new Map([[tensorHash(big), big]]) });
  assert.equal(m.graph.ops[0].tensor("value"), big);
  assert.equal(printModule(m), text);
});

Deno.test("parseModule() reads values back exactly: floats as float32, i64 beyond 2^53, f16 bits", () => {
  const text = moduleText(
    "() -> (%a, %b, %c)",
    [
      "%a = const i64[2] dense<[9007199254740993, -9223372036854775808]>",
      "%b = const f16[3] dense<[0.33325195, 65504.0, -0.0]>",
      "%c = Foo() {f = 0.1, fs = [0.3, 1e-45]} : ?",
    ],
    " %a, %b, %c",
  );
  const m = parseModule(text);
  assert.deepEqual([...(m.graph.constants[0].constant!.data as BigInt64Array)], [9007199254740993n, -(2n ** 63n)]);
  assert.deepEqual([...(m.graph.constants[1].constant!.data as Uint16Array)], [0x3555, 0x7bff, 0x8000]);
  const foo = m.graph.ops[0];
  assert.equal(foo.float("f"), Math.fround(0.1));
  assert.deepEqual(foo.floats("fs"), [Math.fround(0.3), Math.fround(1e-45)]);
  assert.equal(printModule(m), text);
});

Deno.test("parseModule() skips // comments and accepts free layout", () => {
  const text = "// RUN: dce\n" + HEADER.replace(" {", "\n{ // header\n") +
    "graph @g(%x: f32[1]) -> (%y) {\n  %y =\n    Neg( %x ) // negate\n    : f32[1]\n  return %y\n}\n}\n";
  const m = parseModule(text);
  assert.equal(printModule(m), moduleText("(%x: f32[1]) -> (%y)", ["%y = Neg(%x) : f32[1]"], " %y"));
});

Deno.test("parseGraph() parses a lone graph and refuses trailing text", () => {
  const g = parseGraph("graph @g(%a: f32[2]) -> (%b) {\n  %b = Neg(%a) : f32[2]\n  return %b\n}\n");
  assert.equal(g.name, "g");
  assert.equal(g.ops[0].operand(0), g.inputs[0]);
  assert.throws(() => parseGraph("graph @g() -> () {\n  return\n}\n}"), {
    message: 'Cannot parse IR at 4:1: expected end of input but found "}"',
  });
});
