import assert from "node:assert/strict";
import { Graph, Op, Value } from "./graph.ts";
import { Module } from "./module.ts";
import {
  addConstant,
  cloneModule,
  eraseOp,
  eraseValue,
  insertAfter,
  insertBefore,
  replaceAllUsesWith,
} from "./rewriter.ts";
import { float32Tensor } from "./tensor.ts";

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
