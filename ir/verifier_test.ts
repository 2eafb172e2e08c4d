import assert from "node:assert/strict";
import { Graph, Op, Value } from "./graph.ts";
import { Module } from "./module.ts";
import { type OpDef, OpRegistry } from "./op_def.ts";
import { opError } from "./ops/common.ts";
import { parseModule } from "./parser.ts";
import { eraseOp } from "./rewriter.ts";
import { float32Tensor } from "./tensor.ts";
import { type Dim, isTensorType, type TensorType, tensorType } from "./types.ts";
import { verifyModule, verifyModuleDiagnostics } from "./verifier.ts";

const f32 = (...shape: Dim[]) => tensorType("f32", shape);

/** Local op definitions, so these tests do not depend on the op families in `ops/`. */
const unary: OpDef = {
  type: "Relu",
  infer: (_op, ctx) => [ctx.types[0]],
};
const add: OpDef = {
  type: "Add",
  infer(op, ctx) {
    const [a, b] = ctx.types as TensorType[];
    if (a.shape!.length !== b.shape!.length || a.shape!.some((d, i) => d !== b.shape![i])) {
      throw opError(op, `operand shapes [${a.shape}] and [${b.shape}] differ`);
    }
    return [a];
  },
};
const registry = new OpRegistry([unary, add]);

/** x -> Relu(r1) -> Relu(r2) -> output. */
function chain(): { module: Module; g: Graph; x: Value; r1: Op; r2: Op } {
  const g = new Graph("main");
  const x = g.addInput(new Value("x", f32("N", 4)));
  const r1 = g.addOp(new Op({ name: "r1", type: "Relu", operands: [x], results: [new Value("y1", f32("N", 4))] }));
  const r2 = g.addOp(
    new Op({ name: "r2", type: "Relu", operands: [r1.result], results: [new Value("y2", f32("N", 4))] }),
  );
  g.outputs.push(r2.result);
  return { module: new Module(g), g, x, r1, r2 };
}

function messages(module: Module): string[] {
  return verifyModuleDiagnostics(module, { registry }).map((d) => d.message);
}

Deno.test("verifyModule() accepts a well-formed module and leaves its types alone", () => {
  const { module, r1 } = chain();
  r1.result.type = f32("N", "?"); // less precise than inference: compatible, and not refined in place
  verifyModule(module, { registry });
  assert.deepEqual(r1.result.type, f32("N", "?"));
});

Deno.test("verifyModule() reports an op that uses a result before its definition", () => {
  const { module, g, r2 } = chain();
  g.ops.splice(g.ops.indexOf(r2), 1);
  g.ops.unshift(r2);
  const problems = verifyModuleDiagnostics(module, { registry });
  assert.deepEqual(problems.map((p) => [p.op, p.message]), [
    [r2, 'op "r2" (Relu): operand #0 %y1 is used before its definition by op "r1"'],
  ]);
  assert.throws(() => verifyModule(module, { registry }), {
    message: 'op "r2" (Relu): operand #0 %y1 is used before its definition by op "r1"',
  });
});

Deno.test("verifyModule() reports an operand defined nowhere in scope", () => {
  const { module, r2 } = chain();
  r2.setOperand(0, new Value("ghost", f32("N", 4)));
  assert.deepEqual(messages(module), [
    'op "r2" (Relu): operand #0 %ghost is not defined in graph @main or an enclosing graph',
  ]);
});

Deno.test("verifyModule() reports a name defined twice", () => {
  const { module, g, r2 } = chain();
  r2.result.name = "y1";
  assert.deepEqual(messages(module), ['op "r2" (Relu): result %y1 redefines the name already defined by op "r1"']);
  g.addConstant("x", float32Tensor([1], [0]), f32(1));
  assert.deepEqual(messages(module), [
    "graph @main: a constant %x redefines the name already defined by a graph input",
    'op "r2" (Relu): result %y1 redefines the name already defined by op "r1"',
  ]);
  assert.throws(() => verifyModule(module, { registry }), {
    message: "graph @main: a constant %x redefines the name already defined by a graph input (and 1 more problem)",
  });
});

Deno.test("verifyModule() reports a dangling use left by removing an op without the rewriter", () => {
  const { module, g, x } = chain();
  const dead = new Op({ name: "dead", type: "Relu", operands: [x], results: [new Value("d", f32("N", 4))] });
  g.addOp(dead);
  verifyModule(module, { registry });
  g.ops.splice(g.ops.indexOf(dead), 1); // bypasses eraseOp, which would drop the operand uses
  assert.deepEqual(messages(module), [
    'op "dead" (Relu): uses %x but is not in the module (dangling use: erase ops through the rewriter)',
  ]);
  // The same removal through the rewriter leaves a clean module.
  const clean = chain();
  const op = clean.g.addOp(new Op({ name: "dead", type: "Relu", operands: [clean.x], results: [new Value("d")] }));
  eraseOp(op);
  verifyModule(clean.module, { registry });
});

Deno.test("verifyModule() reports use lists that disagree with operands", () => {
  const { module, x, r1 } = chain();
  x._removeUse(r1, 0);
  assert.deepEqual(messages(module), ['op "r1" (Relu): operand #0 %x is missing from that value\'s use list']);
  x._addUse(r1, 0);
  x._addUse(r1, 3);
  assert.deepEqual(messages(module), [
    'op "r1" (Relu): is recorded as a use of %x at operand #3, which holds another value',
  ]);
});

Deno.test("verifyModule() reports an undefined graph output and an op listed in the wrong graph", () => {
  const { module, g } = chain();
  g.outputs.push(new Value("nowhere"));
  assert.deepEqual(messages(module), ["graph @main: output %nowhere is not defined"]);
  g.outputs.pop();
  const stray = new Op({ name: "stray", type: "Relu", operands: [g.inputs[0]], results: [new Value("s")] });
  new Graph("other").addOp(stray);
  g.ops.push(stray);
  assert.deepEqual(messages(module), [
    'op "stray" (Relu): is listed in graph @main but belongs to graph @other',
    'op "stray" (Relu): %s is listed in graph @main but belongs to graph @other',
  ]);
});

Deno.test("verifyModule() reports a constant whose data disagree with its type", () => {
  const { module, g } = chain();
  g.addConstant("w", float32Tensor([3], [1, 2, 3]), f32(4));
  assert.deepEqual(messages(module), ["graph @main: constant %w is declared f32[4] but holds f32[3]"]);
});

Deno.test("verifyModule() reports a result type that disagrees with shape inference, naming the op", () => {
  const { module, r1, r2 } = chain();
  r2.result.type = f32("N", 5);
  const problems = verifyModuleDiagnostics(module, { registry });
  assert.equal(problems.length, 1);
  assert.equal(problems[0].op, r2);
  assert.equal(problems[0].message, 'op "r2" (Relu): result "y2" is declared f32[N,5] but its operands give f32[N,4]');
  r2.result.type = f32("N", 4);
  r1.result.type = tensorType("f16", ["N", 4]);
  assert.throws(() => verifyModule(module, { registry }), {
    message: 'op "r1" (Relu): result "y1" is declared f16[N,4] but its operands give f32[N,4]',
  });
  assert.ok(isTensorType(r1.result.type) && r1.result.type.elem === "f16", "the module is not modified");
});

Deno.test("verifyModule() reports an op whose operands are inconsistent for its OpDef", () => {
  const text = [
    'module opsets {"": 13} ir_version 7 {',
    "graph @main(%a: f32[2,3], %b: f32[3,2]) -> (%c) {",
    '  %c = Add(%a, %b) : f32[2,3] name "add_0"',
    "  return %c",
    "}",
    "}",
  ].join("\n");
  const m = parseModule(text);
  const problems = verifyModuleDiagnostics(m, { registry });
  assert.deepEqual(problems.map((p) => [p.op, p.message]), [
    [m.graph.ops[0], 'op "add_0" (Add): operand shapes [2,3] and [3,2] differ'],
  ]);
  // Ops without a definition are not type-checked.
  assert.deepEqual(verifyModuleDiagnostics(m, { registry: new OpRegistry() }), []);
});

Deno.test("verifyModule() checks subgraphs: outer values must be defined before the op holding them", () => {
  const text = [
    'module opsets {"": 13} ir_version 7 {',
    "graph @main(%c: bool[], %x: f32[2]) -> (%y) {",
    "  %y = If(%c) {then_branch = graph @then() -> (%t) {",
    "    %t = Relu(%x) : f32[2]",
    "    return %t",
    "  }} : f32[2]",
    "  %late = Relu(%x) : f32[2]",
    "  return %y",
    "}",
    "}",
  ].join("\n");
  const m = parseModule(text);
  verifyModule(m, { registry });
  const branch = m.graph.ops[0].attributes.get("then_branch")!.value as Graph;
  branch.ops[0].setOperand(0, m.graph.ops[1].result);
  assert.deepEqual(messages(m), [
    'op "t" (Relu): operand #0 %late is not defined in graph @then or an enclosing graph',
  ]);
  branch.ops[0].setOperand(0, m.graph.inputs[1]);
  branch.parentOp = null;
  assert.deepEqual(messages(m), ['op "y" (If): subgraph @then does not name this op as its parent']);
});
