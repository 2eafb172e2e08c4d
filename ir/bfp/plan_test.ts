import assert from "node:assert/strict";
import { attr } from "../attributes.ts";
import { Graph, Op, Value } from "../graph.ts";
import { Module } from "../module.ts";
import { insertBefore } from "../rewriter.ts";
import { inferShapes } from "../shape.ts";
import { tensor } from "../tensor.ts";
import { verifyModuleDiagnostics } from "../verifier.ts";
import { bfpLayerPlan, NO_BIAS_UNIT } from "./plan.ts";

const BFP8 = { kind: "bfp", mantissa: 8, exponent: 5, block: 0 } as const;

/** x[N,3] -> Quantize -> Gemm(3 -> 2) with a bias; the parts a test breaks. */
function gemmModule() {
  const g = new Graph("g");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 3] }));
  const q = g.addOp(
    new Op({
      name: "q",
      type: "Quantize",
      domain: "ai.bfp",
      operands: [x],
      results: [new Value("xm"), new Value("xe")],
      attributes: [["mantissa", attr.int(8)], ["exponent", attr.int(5)]],
    }),
  );
  const wm = g.addConstant("wm", tensor("i8", [2, 3], new Int8Array([64, -32, 1, 0, 127, -127])), {
    elem: BFP8,
    shape: [2, 3],
  });
  const we = g.addConstant("we", tensor("i8", [2], new Int8Array([0, -3])), { elem: "i8", shape: [2] });
  const b = g.addConstant("b", tensor("f32", [2], new Float32Array([0.75, 0])), { elem: "f32", shape: [2] });
  const fc = g.addOp(
    new Op({
      name: "fc",
      type: "Gemm",
      domain: "ai.bfp",
      operands: [q.results[0], q.results[1], wm, we, b],
      results: [new Value("y")],
      attributes: [["accumulator", attr.int(32)]],
    }),
  );
  g.outputs.push(fc.result);
  const m = new Module(g, [["", 13], ["ai.bfp", 1]]);
  return { g, m, q, fc, wm, we, b, x };
}

function messages(m: Module): string[] {
  try {
    inferShapes(m);
  } catch {
    // the verifier reports the same problem with the op's name
  }
  return verifyModuleDiagnostics(m).map((d) => d.message);
}

Deno.test("bfpLayerPlan() gathers format, blocking, weights, bias units and the accumulator rule once", () => {
  const { m, fc } = gemmModule();
  inferShapes(m);
  assert.deepEqual(verifyModuleDiagnostics(m), []);
  const plan = bfpLayerPlan(fc);
  assert.equal(plan.kind, "gemm");
  assert.equal(plan.input.op.name, "q");
  assert.deepEqual(plan.input.blocking, { block: 0, group: 1, axis: 1 });
  assert.equal(plan.input.staticExponent, null);
  assert.deepEqual([plan.format.mantissaBits, plan.format.exponentBits, plan.format.rounding], [8, 5, "nearest-even"]);
  assert.deepEqual([plan.inChannels, plan.outChannels, plan.group, plan.reduction], [3, 2, 1, 3]);
  assert.deepEqual(plan.weights.exponentShape, [2]);
  // W = bitLength(3 · 127²) = 16; g = 32 - 2 - 16.
  assert.deepEqual(plan.accumulator, { bits: 32, min: -(2 ** 31), max: 2 ** 31 - 1, productBits: 16, guardBits: 14 });
  // u_b = floorLog2(0.75) + 1 - 16 = -16; a zero bias has no unit.
  assert.deepEqual([...plan.bias!.units], [-16, NO_BIAS_UNIT]);
  assert.deepEqual(plan.geometry, { inShape: [], outShape: [], kernel: [], strides: [], dilations: [], padsBegin: [] });
});

Deno.test("a malformed ai.bfp layer fails verification with one line naming the op and the inconsistency", () => {
  const cases: [string, (p: ReturnType<typeof gemmModule>) => void, string][] = [
    [
      "missing exponent operand",
      ({ fc }) => fc.truncateOperands(3),
      'op "fc" (Gemm): needs XM, XE, WM and WE (mantissas and exponents of the input and of the weights)',
    ],
    [
      "exponents of another Quantize",
      ({ fc, x }) => {
        const q2 = insertBefore(
          fc,
          new Op({
            name: "q2",
            type: "Quantize",
            domain: "ai.bfp",
            operands: [x],
            results: [new Value("m2"), new Value("e2")],
          }),
        );
        fc.setOperand(1, q2.results[1]);
      },
      'op "fc" (Gemm): XM and XE must be the mantissas and exponents of one ai.bfp.Quantize',
    ],
    [
      "mismatched weight exponent shape",
      ({ fc, g }) =>
        fc.setOperand(3, g.addConstant("we3", tensor("i8", [3], new Int8Array(3)), { elem: "i8", shape: [3] })),
      'op "fc" (Gemm): weight exponents "we3" must have shape [2] for mantissas [2,3] with block 0, found [3]',
    ],
    [
      "a mantissa width the element type contradicts",
      ({ wm }) => (wm.type = { elem: { ...BFP8, mantissa: 6 }, shape: [2, 3] }),
      'op "fc" (Gemm): weight mantissas "wm" is bfp<mantissa=6, exponent=5, block=0>, but its format is ' +
      "bfp<mantissa=8, exponent=5, block=0>",
    ],
    [
      "accumulator outside 8..53",
      ({ fc }) => fc.attributes.set("accumulator", attr.int(60)),
      'op "fc" (Gemm): accumulator must be an integer in [8, 53] bits, found 60',
    ],
    [
      "rounding that disagrees with the Quantize",
      ({ fc }) => fc.attributes.set("rounding", attr.string("toward-zero")),
      'op "fc" (Gemm): rounding toward-zero (seed 0) disagrees with its Quantize "q" (nearest-even, seed 0): ' +
      "every shift of a layer rounds one way",
    ],
    [
      "an unknown attribute",
      ({ fc }) => fc.attributes.set("pads", attr.ints([1, 1])),
      'op "fc" (Gemm): has an unknown attribute "pads" (ai.bfp.Gemm takes accumulator, rounding, seed)',
    ],
    [
      "weight exponent outside the field",
      ({ fc, g }) =>
        fc.setOperand(3, g.addConstant("weBig", tensor("i8", [2], new Int8Array([0, 16])), { elem: "i8", shape: [2] })),
      'op "fc" (Gemm): weight exponent 16 of "weBig" (element 1) is outside [-15, 15]',
    ],
    [
      "non-constant weights",
      ({ fc, g }) => fc.setOperand(2, g.addInput(new Value("wIn", { elem: BFP8, shape: [2, 3] }))),
      'op "fc" (Gemm): weights "wIn" and "we" must be constants (BFP weights are formatted offline)',
    ],
    [
      "a bias of the wrong length",
      ({ fc, g }) =>
        fc.setOperand(4, g.addConstant("b3", tensor("f32", [3], new Float32Array(3)), { elem: "f32", shape: [3] })),
      'op "fc" (Gemm): B "b3" must be an f32 constant of shape [2]',
    ],
    [
      "Quantize with the samples' axis as channel axis",
      ({ q }) => q.attributes.set("axis", attr.int(0)),
      'op "q" (Quantize): axis must be a nonzero integer (the channel axis; the samples come before it), found 0',
    ],
    [
      "a batched Gemm whose Quantize blocks axis 1, not its rows",
      ({ x }) => (x.type = { elem: "f32", shape: ["N", 5, 3] }),
      'op "fc" (Gemm): its Quantize "q" blocks axis 1 of the rank-3 input; the layer reduces axis 2 (the last)',
    ],
    [
      "one exponent per sample and group, for a layer of other groups",
      ({ q }) => q.attributes.set("group", attr.int(3)),
      'op "fc" (Gemm): its Quantize "q" blocks channels in 3 group(s), the layer has 1',
    ],
    [
      "groups that do not divide the channels (one block per sample and group)",
      ({ q }) => q.attributes.set("group", attr.int(2)),
      'op "q" (Quantize): 3 channels are not divisible into 2 groups',
    ],
    [
      "Quantize with a bad mantissa width",
      ({ q }) => q.attributes.set("mantissa", attr.int(17)),
      'op "q" (Quantize): BFP mantissaBits must be an integer in [2, 16], found 17',
    ],
  ];
  for (const [what, breakIt, expected] of cases) {
    const parts = gemmModule();
    breakIt(parts);
    const found = messages(parts.m);
    assert.ok(
      found.includes(expected),
      `${what}: expected ${JSON.stringify(expected)}, found ${JSON.stringify(found)}`,
    );
    for (const message of found) assert.ok(!message.includes("\n"), `${what}: one line, found ${message}`);
  }
});

Deno.test("only ir/bfp/plan.ts reads ai.bfp attributes and bfp element types", async () => {
  // The attribute names only the ai.bfp ops have, read through Op's typed getters, and the bfp element type's fields.
  const attributeRead =
    /\.(int|string|float|ints)\(\s*"(accumulator|exponent_rule|static_exponent|mantissa|exponent|seed|rounding|block)"/;
  const typeRead = /elem\.kind === "bfp"|kind !== "bfp"|\.elem\.mantissa|elem\.block\b/;
  const root = new URL("../../", import.meta.url);
  // The type system itself (printer, parser, types) defines bfp<...>; plan.ts is the one reader for layers.
  const allowed = new Set(["ir/bfp/plan.ts", "ir/types.ts", "ir/printer.ts", "ir/parser.ts"]);
  const offenders: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for await (const entry of Deno.readDir(new URL(dir, root))) {
      const path = `${dir}${entry.name}`;
      if (entry.isDirectory) {
        if (!["node_modules", ".git", "tests", "examples"].includes(entry.name)) await walk(`${path}/`);
      } else if (path.endsWith(".ts") && !path.endsWith("_test.ts") && !allowed.has(path)) {
        const text = await Deno.readTextFile(new URL(path, root));
        text.split("\n").forEach((line, i) => {
          const code = !/^\s*(\*|\/\/)/.test(line); // doc examples may show the attributes
          if (code && (attributeRead.test(line) || typeRead.test(line))) {
            offenders.push(`${path}:${i + 1}: ${line.trim()}`);
          }
        });
      }
    }
  };
  await walk("");
  assert.deepEqual(offenders, []);
});
