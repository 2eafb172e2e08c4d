import assert from "node:assert/strict";
import { Graph, isConstant, isDefaultDomain, Op, Value } from "./graph.ts";
import { Module } from "./module.ts";
import { printGraph } from "./printer.ts";
import {
  addConstant,
  cloneModule,
  eraseConstantIfUnused,
  eraseOp,
  eraseValue,
  insertAfter,
  insertBefore,
  replaceAllUsesWith,
  replaceConstant,
  replaceOp,
} from "./rewriter.ts";
import { float32Tensor } from "./tensor.ts";
import { verifyModuleDiagnostics } from "./verifier.ts";

function chain(): { g: Graph; x: Value; a: Op; b: Op } {
  const g = new Graph();
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4] }));
  const a = g.addOp(new Op({ name: "a", type: "Relu", operands: [x], results: [new Value("a")] }));
  const b = g.addOp(new Op({ name: "b", type: "Add", operands: [a.result, a.result], results: [new Value("b")] }));
  g.outputs.push(b.result);
  return { g, x, a, b };
}

Deno.test("Op records one use per operand slot", () => {
  const { a } = chain();
  assert.deepEqual(a.result.uses.map((u) => [u.op.name, u.index]), [["b", 0], ["b", 1]]);
  assert.deepEqual(a.result.users.map((o) => o.name), ["b"]);
});

Deno.test("setOperand() moves the use from the old value to the new", () => {
  const { x, a, b } = chain();
  b.setOperand(1, x);
  assert.deepEqual(a.result.uses.map((u) => u.index), [0]);
  assert.deepEqual(x.uses.map((u) => [u.op.name, u.index]), [["a", 0], ["b", 1]]);
});

Deno.test("replaceAllUsesWith() rewires operands and graph outputs", () => {
  const { g, x, a, b } = chain();
  replaceAllUsesWith(a.result, x);
  assert.equal(a.result.uses.length, 0);
  assert.equal(b.operand(0), x);
  replaceAllUsesWith(b.result, x);
  assert.equal(g.outputs[0], x);
});

Deno.test("eraseOp() refuses a live result and names it", () => {
  const { a, b } = chain();
  assert.throws(() => eraseOp(a), { message: 'cannot erase op "a": result "a" is still used by "b"' });
  assert.throws(() => eraseOp(b), { message: 'cannot erase op "b": result "b" is a graph output' });
});

Deno.test("eraseOp() drops operand uses so no dangling use remains", () => {
  const { g, x, a, b } = chain();
  g.outputs[0] = x;
  eraseOp(b);
  assert.equal(a.result.uses.length, 0);
  eraseOp(a);
  assert.equal(x.uses.length, 0);
  assert.deepEqual(g.ops, []);
});

Deno.test("eraseValue() removes unused constants only", () => {
  const { g, a } = chain();
  const w = addConstant(g, "w", float32Tensor([1], [2]));
  a.addOperand(w);
  assert.throws(() => eraseValue(w), { message: 'cannot erase value "w": still used by "a"' });
  a.truncateOperands(1);
  eraseValue(w);
  assert.deepEqual(g.constants, []);
});

Deno.test("insertBefore() and insertAfter() place ops next to the anchor", () => {
  const { g, x, a } = chain();
  insertBefore(a, new Op({ name: "pre", type: "Identity", operands: [x], results: [new Value("pre")] }));
  insertAfter(a, new Op({ name: "post", type: "Identity", operands: [x], results: [new Value("post")] }));
  assert.deepEqual(g.ops.map((o) => o.name), ["pre", "a", "post", "b"]);
});

Deno.test("freshName() derives unused names, also across enclosing graphs", () => {
  const { g } = chain();
  assert.equal(g.freshName("a"), "a.1");
  assert.equal(g.freshName("new"), "new");
  const sub = new Graph("body");
  sub.parentOp = g.ops[0];
  assert.equal(sub.freshName("x"), "x.1");
});

Deno.test("cloneModule() copies ops and values with their own use lists", () => {
  const { g } = chain();
  const m = new Module(g, [["", 17]], 8);
  m.metadata.set("k", "v");
  const c = cloneModule(m);
  assert.notEqual(c.graph.ops[0], g.ops[0]);
  assert.deepEqual(c.graph.ops.map((o) => o.name), ["a", "b"]);
  assert.equal(c.graph.ops[1].operand(0), c.graph.ops[0].result);
  assert.equal(c.graph.outputs[0], c.graph.ops[1].result);
  assert.equal(c.opset(), 17);
  assert.equal(c.metadata.get("k"), "v");
  assert.equal(g.ops[0].result.uses.length, 2, "the original keeps its uses");
});

Deno.test("Op attribute accessors check the kind and name the op", () => {
  const op = new Op({ name: "c", type: "Conv", attributes: [["group", { kind: "int", value: 2 }]] });
  assert.equal(op.int("group", 1), 2);
  assert.equal(op.int("missing", 7), 7);
  assert.throws(() => op.ints("group"), { message: 'op "c" (Conv): attribute "group" must be ints, found int' });
});

Deno.test("setOptionalOperand() sets, pads with omitted operands, and ignores an absent null", () => {
  const { x, a, b } = chain();
  b.setOptionalOperand(1, x);
  assert.deepEqual(b.operands, [a.result, x]);
  b.setOptionalOperand(3, a.result);
  assert.deepEqual(b.operands, [a.result, x, null, a.result]);
  assert.deepEqual(a.result.uses.map((u) => u.index), [0, 3]);
  b.setOptionalOperand(5, null);
  assert.equal(b.operands.length, 4);
  assert.throws(() => b.setOptionalOperand(-1, x), { message: 'op "b" has no operand #-1' });
});

Deno.test("replaceOp() by a new op: uses, output slots and names move; the op is inserted in place", () => {
  const { g, x, a, b } = chain();
  const neg = new Op({ name: "a", type: "Neg", operands: [x], results: [new Value("anything")] });
  replaceOp(a, neg);
  assert.deepEqual(g.ops.map((o) => o.type), ["Neg", "Add"]);
  assert.equal(neg.result.name, "a");
  assert.deepEqual(b.operands, [neg.result, neg.result]);
  assert.equal(a.graph, null);
  assert.equal(a.result.uses.length, 0);
  const sum = new Op({ name: "s", type: "Sum", operands: [x], results: [new Value("b")] });
  replaceOp(b, sum);
  assert.deepEqual(g.outputs, [sum.result]);
  assert.equal(g.freshName("b"), "b.1", "the name is registered");
  assert.deepEqual(verifyModuleDiagnostics(new Module(g)), []);
});

Deno.test("replaceOp() by an op already in the graph", () => {
  const { g, x, a, b } = chain();
  const neg = insertBefore(a, new Op({ name: "n", type: "Neg", operands: [x], results: [new Value("a.neg")] }));
  replaceOp(a, neg);
  assert.equal(neg.result.name, "a");
  assert.equal(b.operand(0), neg.result);
  assert.ok(!g.hasName("a.neg"));
});

Deno.test("replaceOp() by values: names all, or only those of graph outputs", () => {
  const { g, a, b } = chain();
  const c = addConstant(g, "c", float32Tensor([1], [1]));
  replaceOp(a, [c]);
  assert.equal(c.name, "a", "a new constant takes the name");
  assert.deepEqual(b.operands, [c, c]);

  const t = chain();
  const relu = insertBefore(t.b, new Op({ name: "r", type: "Relu", operands: [t.x], results: [new Value("r")] }));
  replaceOp(t.a, [relu.result], { names: "outputs" });
  assert.equal(relu.result.name, "r", "not an output: the value keeps its name");
  replaceOp(t.b, [relu.result], { names: "outputs" });
  assert.equal(relu.result.name, "b", "an output: its name is the interface");
  assert.deepEqual(t.g.outputs, [relu.result]);
  assert.equal(t.x.uses.length, 1);
});

Deno.test("replaceOp() leaves an unused extra result without replacement", () => {
  const g = new Graph();
  const x = g.addInput(new Value("x"));
  const drop = g.addOp(
    new Op({ name: "d", type: "Dropout", operands: [x], results: [new Value("y"), new Value("mask")] }),
  );
  const relu = g.addOp(new Op({ name: "r", type: "Relu", operands: [drop.result], results: [new Value("z")] }));
  g.outputs.push(relu.result);
  replaceOp(drop, [x], { names: "outputs" });
  assert.deepEqual(g.ops, [relu]);
  assert.equal(relu.operand(0), x);
  assert.ok(!g.hasName("mask"));
});

Deno.test("replaceOp() checks everything first and names what is wrong", () => {
  const { g, x, a, b } = chain();
  const before = printGraph(g);
  const c = addConstant(g, "c", float32Tensor([1], [1]));
  assert.throws(() => replaceOp(a, [c, c]), { message: 'cannot replace op "a": 2 replacements for 1 result(s)' });
  assert.throws(() => replaceOp(b, [x]), {
    message:
      'cannot replace op "b": value "x" cannot take the name "b": it is not an op result or constant of graph "main"',
  });
  g.outputs.push(a.result);
  assert.throws(() => replaceOp(b, [a.result]), {
    message: 'cannot replace op "b": value "a" cannot take the name "b": it is a graph output',
  });
  g.outputs.pop();
  assert.throws(() => replaceOp(a, [a.result]), { message: 'cannot replace op "a" by its own result "a"' });
  const two = g.addOp(
    new Op({ name: "two", type: "Split", operands: [x], results: [new Value("p"), new Value("q")] }),
  );
  const user = g.addOp(new Op({ name: "u", type: "Neg", operands: [two.results[1]], results: [new Value("u")] }));
  assert.throws(() => replaceOp(two, [c]), {
    message: 'cannot replace op "two": result "q" is used and has no replacement',
  });
  assert.throws(() => replaceOp(two, [c, c]), { message: 'cannot replace op "two": value "c" would take two names' });
  const other = new Graph("other");
  const elsewhere = other.addOp(new Op({ name: "e", type: "Neg", operands: [], results: [new Value("e")] }));
  assert.throws(() => replaceOp(a, elsewhere), {
    message: 'cannot replace op "a" by op "e": it is in another graph',
  });
  eraseOp(user);
  eraseOp(two);
  eraseValue(c);
  assert.equal(printGraph(g), before);
});

Deno.test("eraseConstantIfUnused() erases dead constants only", () => {
  const { g, x, a } = chain();
  const w = addConstant(g, "w", float32Tensor([1], [2]));
  a.addOperand(w);
  assert.equal(eraseConstantIfUnused(w), false, "used");
  a.truncateOperands(1);
  g.outputs.push(w);
  assert.equal(eraseConstantIfUnused(w), false, "a graph output");
  g.outputs.pop();
  x.constant = float32Tensor([1], [0]);
  assert.equal(eraseConstantIfUnused(x), false, "a graph input with a default");
  assert.equal(eraseConstantIfUnused(a.result), false, "an op result");
  assert.equal(eraseConstantIfUnused(null), false);
  assert.equal(eraseConstantIfUnused(w), true);
  assert.equal(eraseConstantIfUnused(w), false, "already erased");
  assert.deepEqual(g.constants, []);
});

Deno.test("replaceConstant() names the new constant after the old one unless told otherwise", () => {
  const g = new Graph();
  const x = g.addInput(new Value("x"));
  const w = addConstant(g, "w", float32Tensor([2], [1, 2]));
  const m1 = g.addOp(new Op({ name: "m1", type: "Mul", operands: [x, w], results: [new Value("y1")] }));
  const m2 = g.addOp(new Op({ name: "m2", type: "Mul", operands: [x, w], results: [new Value("y2")] }));
  const shared = replaceConstant(m1, 1, float32Tensor([1], [3]));
  assert.equal(shared.name, "w.1", "the old constant lives on in m2");
  const last = replaceConstant(m2, 1, float32Tensor([1], [4]));
  assert.equal(last.name, "w", "the old constant is gone: its name passes on");
  assert.deepEqual(g.constants, [shared, last]);
  const folded = replaceConstant(m2, 1, float32Tensor([1], [5]), { name: "w.folded" });
  assert.equal(folded.name, "w.folded");
  assert.deepEqual(g.constants, [shared, folded]);
  const bias = replaceConstant(m1, 2, float32Tensor([1], [0]));
  assert.equal(bias.name, "m1.2");
  assert.deepEqual(m1.operands, [x, shared, bias]);
  const input = g.addInput(new Value("k"));
  input.constant = float32Tensor([1], [1]);
  m1.setOperand(2, input);
  assert.equal(replaceConstant(m1, 2, float32Tensor([1], [2])).name, "k.1", "a graph input is never erased");
  assert.deepEqual(g.inputs, [x, input]);
});

Deno.test("freshOpName() derives unused op names across enclosing graphs", () => {
  const { g } = chain();
  assert.equal(g.freshOpName("a"), "a.1");
  g.addOp(new Op({ name: "a.1", type: "Neg" }));
  assert.equal(g.freshOpName("a"), "a.2");
  const sub = new Graph("body");
  sub.parentOp = g.ops[0];
  assert.equal(sub.freshOpName("b"), "b.1");
  assert.equal(sub.freshOpName("c"), "c");
});

Deno.test("isConstant() and isDefaultDomain()", () => {
  const { g, x, a } = chain();
  assert.ok(isConstant(addConstant(g, "w", float32Tensor([1], [2]))));
  assert.ok(!isConstant(x) && !isConstant(a.result) && !isConstant(null) && !isConstant(undefined));
  x.constant = float32Tensor([1], [0]);
  assert.ok(!isConstant(x), "an input with a default can be overridden");
  assert.ok(isDefaultDomain("") && isDefaultDomain("ai.onnx") && !isDefaultDomain("ai.bfp"));
  assert.equal(new Op({ name: "c", type: "Conv", domain: "ai.onnx" }).qualifiedType, "Conv");
});
