import assert from "node:assert/strict";
import { attr } from "./attributes.ts";
import { Graph, Op, Value } from "./graph.ts";
import { Module } from "./module.ts";
import { parseModule } from "./parser.ts";
import { formatFloat32, markPlaceholder, placeholderHash, printGraph, printModule, valueRef } from "./printer.ts";
import { float32Tensor, int64Tensor, tensor, tensorHash, zeros } from "./tensor.ts";
import { type Dim, tensorType } from "./types.ts";

const f32 = (...shape: Dim[]) => tensorType("f32", shape);

/** Deterministic, exactly representable weights: (i mod 7) / 8 - 0.375. */
function weights(shape: number[]) {
  const n = shape.reduce((a, b) => a * b, 1);
  return float32Tensor(shape, Array.from({ length: n }, (_, i) => (i % 7) / 8 - 0.375));
}

/** The module of tests/golden/ir/vgg_tiny.ir, built through the graph API. */
function vggTiny(): Module {
  const g = new Graph("vgg_tiny");
  const input = g.addInput(new Value("input", f32("N", 1, 28, 28)));
  const c = (name: string, t: ReturnType<typeof weights>) => g.addConstant(name, t, f32(...t.shape));
  const w1 = c("conv1.weight", weights([16, 1, 3, 3]));
  const b1 = c("conv1.bias", zeros("f32", [16]));
  const w2 = c("conv2.weight", weights([32, 16, 3, 3]));
  const b2 = c("conv2.bias", zeros("f32", [32]));
  const wf = c("fc.weight", weights([10, 32]));
  const bf = c("fc.bias", float32Tensor([10], [0.1, -0.1, 0.2, -0.2, 0.3, -0.3, 0.4, -0.4, 0.5, -0.5]));
  let x = input;
  const op = (
    type: string,
    name: string,
    operands: Value[],
    shape: Dim[],
    attrs: [string, ReturnType<typeof attr.int>][] = [],
  ) => {
    x = g.addOp(new Op({ name, type, operands, results: [new Value(name, f32(...shape))], attributes: attrs })).result;
    return x;
  };
  const conv = [["kernel_shape", attr.ints([3, 3])], ["pads", attr.ints([1, 1, 1, 1])]] as [
    string,
    ReturnType<typeof attr.int>,
  ][];
  op("Conv", "conv1", [x, w1, b1], ["N", 16, 28, 28], conv);
  op("Relu", "relu1", [x], ["N", 16, 28, 28]);
  op("MaxPool", "pool1", [x], ["N", 16, 14, 14], [["strides", attr.ints([2, 2])], ["kernel_shape", attr.ints([2, 2])]]);
  op("Conv", "conv2", [x, w2, b2], ["N", 32, 14, 14], conv);
  op("Relu", "relu2", [x], ["N", 32, 14, 14]);
  op("GlobalAveragePool", "gap", [x], ["N", 32, 1, 1]);
  op("Flatten", "flat", [x], ["N", 32], [["axis", attr.int(1)]]);
  op("Gemm", "logits", [x, wf, bf], ["N", 10], [["transB", attr.int(1)]]);
  g.outputs.push(x);
  const m = new Module(g, [["", 13]], 7);
  m.producerName = "cnnc-test";
  return m;
}

function golden(name: string): string {
  const text = Deno.readTextFileSync(new URL(`../tests/golden/ir/${name}`, import.meta.url));
  return text.replace(/^(\/\/.*\n)+/, "");
}

Deno.test("printModule() prints a VGG-like module exactly as its golden file", () => {
  assert.equal(printModule(vggTiny()), golden("vgg_tiny.ir"));
});

Deno.test("printModule() summarises large constants by content hash, and prints them in full when asked", () => {
  const m = vggTiny();
  const w = m.graph.constants.find((v) => v.name === "fc.weight")!;
  const summary = printModule(m);
  assert.ok(summary.includes(`%fc.weight = const f32[10,32] hash<"${tensorHash(w.constant!)}">`));
  // 16 elements is the default limit: 10 print inline.
  assert.ok(
    summary.includes("%fc.bias = const f32[10] dense<[0.1, -0.1, 0.2, -0.2, 0.3, -0.3, 0.4, -0.4, 0.5, -0.5]>"),
  );
  // An all-equal tensor is a splat at any size.
  assert.ok(summary.includes("%conv2.bias = const f32[32] dense<0.0>"));
  const full = printModule(m, { fullConstants: true });
  const line = full.split("\n").find((l) => l.includes("%fc.weight ="))!;
  assert.match(line, /^ {2}%fc\.weight = const f32\[10,32\] dense<\[-0\.375, -0\.25, -0\.125, 0\.0, 0\.125, /);
  assert.equal(line.match(/dense<\[(.*)\]>$/)![1].split(", ").length, 320);
  // A raised limit prints the 320-element weight in full too; a lowered one summarises fc.bias.
  assert.ok(printModule(m, { constantLimit: 320 }).includes(line));
  assert.ok(printModule(m, { constantLimit: 9 }).includes(`%fc.bias = const f32[10] hash<"`));
});

Deno.test("printModule() prints a parser placeholder as its summary even with fullConstants", () => {
  const g = new Graph("g");
  const t = zeros("f32", [4, 8]);
  markPlaceholder(t, "0123456789abcdef");
  g.outputs.push(g.addConstant("w", t, f32(4, 8)));
  assert.equal(placeholderHash(t), "0123456789abcdef");
  assert.ok(printGraph(g, { fullConstants: true }).includes('%w = const f32[4,8] hash<"0123456789abcdef">'));
});

Deno.test("printModule() adds the data's own type when a constant's declared type differs", () => {
  const g = new Graph("g");
  const data = tensor("i8", [2, 2], new Int8Array([1, -2, 3, -4]));
  g.outputs.push(g.addConstant("q", data, tensorType({ kind: "bfp", mantissa: 8, exponent: 5, block: 2 }, [2, 2])));
  g.outputs.push(g.addConstant("p", int64Tensor([1, 2]), tensorType("i64", [2])));
  const text = printGraph(g);
  assert.ok(text.includes("%q = const bfp<mantissa=8, exponent=5, block=2>[2,2] dense<[1, -2, 3, -4]> : i8[2,2]"));
  assert.ok(text.includes("%p = const i64[2] dense<[1, 2]>\n"));
});

Deno.test("printGraph() sorts attributes, names ops only when needed and qualifies domains", () => {
  const g = new Graph("g");
  const x = g.addInput(new Value("x", null));
  const attrsA: [string, ReturnType<typeof attr.int>][] = [["b", attr.int(1)], ["a", attr.float(0.5)]];
  g.addOp(new Op({ name: "y", type: "Foo", operands: [x], results: [new Value("y")], attributes: attrsA }));
  g.addOp(new Op({ name: "n", type: "Foo", domain: "com.ms", operands: [x, null], results: [new Value("z")] }));
  g.addOp(new Op({ name: "", type: "Sink", domain: "odd domain", operands: [x] }));
  g.addOp(new Op({ name: "w", type: "Two", operands: [], results: [new Value(""), new Value("w2")] }));
  assert.equal(
    printGraph(g),
    [
      "graph @g(%x: ?) -> () {",
      "  %y = Foo(%x) {a = 0.5, b = 1} : ?",
      '  %z = com.ms.Foo(%x, _) : ? name "n"',
      '  "odd domain::Sink"(%x)',
      '  _, %w2 = Two() : ?, ? name "w"',
      "  return",
      "}",
      "",
    ].join("\n"),
  );
});

Deno.test("printGraph() indents nested graphs under their op", () => {
  const outer = new Graph("outer");
  const c = outer.addInput(new Value("c", tensorType("bool", [])));
  const branch = (name: string, type: string) => {
    const b = new Graph(name);
    b.outputs.push(
      b.addOp(new Op({ name: `${name}.out`, type, operands: [c], results: [new Value(`${name}.out`)] })).result,
    );
    return b;
  };
  const then = branch("then", "Not");
  const other = branch("else", "Identity");
  const op = outer.addOp(
    new Op({
      name: "if",
      type: "If",
      operands: [c],
      results: [new Value("if", tensorType("bool", []))],
      attributes: [["then_branch", { kind: "graph", value: then }], ["else_branch", { kind: "graph", value: other }]],
    }),
  );
  then.parentOp = op;
  other.parentOp = op;
  outer.outputs.push(op.result);
  assert.equal(
    printGraph(outer),
    [
      "graph @outer(%c: bool[]) -> (%if) {",
      "  %if = If(%c) {else_branch = graph @else() -> (%else.out) {",
      "    %else.out = Identity(%c) : ?",
      "    return %else.out",
      "  }, then_branch = graph @then() -> (%then.out) {",
      "    %then.out = Not(%c) : ?",
      "    return %then.out",
      "  }} : bool[]",
      "  return %if",
      "}",
      "",
    ].join("\n"),
  );
});

Deno.test("valueRef() quotes names that are not MLIR suffix ids", () => {
  assert.equal(valueRef("conv1.weight"), "%conv1.weight");
  assert.equal(valueRef("185"), "%185");
  assert.equal(valueRef("a-b_$c"), "%a-b_$c");
  assert.equal(valueRef("layer1.0/conv1:0"), '%"layer1.0/conv1:0"');
  assert.equal(valueRef("onnx::Conv_5"), '%"onnx::Conv_5"');
  assert.equal(valueRef(""), '%""');
});

Deno.test("formatFloat32() prints special values and always looks like a float", () => {
  assert.equal(formatFloat32(NaN), "nan");
  assert.equal(formatFloat32(Infinity), "inf");
  assert.equal(formatFloat32(-Infinity), "-inf");
  assert.equal(formatFloat32(-0), "-0.0");
  assert.equal(formatFloat32(0), "0.0");
  assert.equal(formatFloat32(16777216), "16777216.0");
  assert.equal(formatFloat32(Math.fround(1e-5)), "0.00001");
  assert.equal(formatFloat32(Math.fround(3.4028234663852886e38)), "3.4028235e+38");
  assert.equal(formatFloat32(Math.fround(1e-45)), "1e-45");
  assert.equal(formatFloat32(0.1), "0.1"); // a double is printed as its float32
});

Deno.test("formatFloat32() is the shortest text that reads back to the same float32 (seeded property)", () => {
  const bits = new Uint32Array(1);
  const view = new Float32Array(bits.buffer);
  let seed = 12345;
  for (let i = 0; i < 20000; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    bits[0] = seed ^ (seed << 7);
    const x = view[0];
    if (!Number.isFinite(x)) continue;
    const text = formatFloat32(x);
    assert.equal(Math.fround(Number(text)), x, `${text} for ${x}`);
    const digits = text.replace(/^-/, "").replace(/e.*$/, "").replace(".", "").replace(/^0+/, "").replace(/0+$/, "");
    if (digits.length > 1) {
      // One significant digit fewer must not read back to x.
      const shorter = Number(x.toPrecision(digits.length - 1));
      assert.notEqual(Math.fround(shorter), x, `${text} is not shortest for ${x}`);
    }
  }
});

Deno.test("formatFloat32() finds short forms of decimal-looking values (seeded property)", () => {
  let seed = 7;
  for (let i = 0; i < 20000; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const digits = 1 + (seed % 7);
    const decimal = Number(((seed >>> 3) / 2 ** 29 - 0.5).toPrecision(digits)) * 10 ** ((seed % 13) - 6);
    const x = Math.fround(decimal);
    const text = formatFloat32(x);
    assert.equal(Math.fround(Number(text)), x);
    // The decimal we started from has `digits` significant digits and reads back to x: never print more.
    const significant = text.replace(/^-/, "").replace(/e.*$/, "").replace(".", "").replace(/^0+/, "").replace(
      /0+$/,
      "",
    );
    assert.ok(significant.length <= digits, `${text} for ${decimal}`);
  }
});

Deno.test("printModule() output is deterministic and independent of attribute insertion order", () => {
  const build = (order: [string, ReturnType<typeof attr.int>][]) => {
    const g = new Graph("g");
    const x = g.addInput(new Value("x", f32(1)));
    g.outputs.push(
      g.addOp(new Op({ name: "y", type: "T", operands: [x], results: [new Value("y")], attributes: order })).result,
    );
    return printModule(new Module(g));
  };
  const a: [string, ReturnType<typeof attr.int>][] = [["z", attr.int(1)], ["m", attr.string("s")], [
    "a",
    attr.floats([1, 2]),
  ]];
  assert.equal(build(a), build([...a].reverse()));
  assert.ok(build(a).includes('{a = [1.0, 2.0], m = "s", z = 1}'));
});

Deno.test("printModule() keeps module facts that the parser reads back", () => {
  const m = vggTiny();
  m.opsets.set("com.microsoft", 1);
  m.irVersion = 8;
  m.producerVersion = "1.2";
  m.domain = "org.x";
  m.modelVersion = 4;
  m.metadata.set("k", "v\n");
  m.docString = "doc";
  const text = printModule(m);
  assert.ok(text.startsWith(
    'module opsets {"": 13, "com.microsoft": 1} ir_version 8 producer "cnnc-test" "1.2" domain "org.x" model_version 4 metadata {"k": "v\\n"} doc "doc" {\n',
  ));
  const back = parseModule(text);
  assert.deepEqual([...back.opsets], [["", 13], ["com.microsoft", 1]]);
  assert.deepEqual(
    [back.irVersion, back.producerName, back.producerVersion, back.domain, back.modelVersion, back.docString],
    [8, "cnnc-test", "1.2", "org.x", 4, "doc"],
  );
  assert.deepEqual([...back.metadata], [["k", "v\n"]]);
});
