import assert from "node:assert/strict";
import { Graph, Op, Value } from "./graph.ts";
import { interpret, Interpreter } from "./interpreter.ts";
import { Module } from "./module.ts";
import { builtinOps } from "./builtin_ops.ts";
import { OpRegistry } from "./op_def.ts";
import { float32Tensor } from "./tensor.ts";

/** `y = Relu(Neg(x) + w)`, with the intermediate values to probe. */
function net(): { m: Module; x: Value; w: Value; t: Value; s: Value } {
  const g = new Graph();
  const x = g.addInput(new Value("x", { elem: "f32", shape: [3] }));
  const w = g.addConstant("w", float32Tensor([3], [1, 1, 1]), { elem: "f32", shape: [3] });
  const t = g.addOp(new Op({ name: "n", type: "Neg", operands: [x], results: [new Value("t")] })).result;
  const s = g.addOp(new Op({ name: "a", type: "Add", operands: [t, w], results: [new Value("s")] })).result;
  g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [s], results: [new Value("y")] })).result);
  return { m: new Module(g), x, w, t, s };
}

Deno.test("probes return intermediate values, inputs and constants without editing graph.outputs", () => {
  const { m, x, w, t, s } = net();
  const run = new Interpreter(m, { probes: [t, s, x, w] });
  for (const input of [[1, 2, -3], [0, 0, 0]]) {
    const out = run.run({ x: float32Tensor([3], input) });
    assert.deepEqual(Object.keys(out), ["y", "t", "s", "x", "w"]);
    assert.deepEqual([...out.t.data], input.map((v) => -v));
    assert.deepEqual([...out.s.data], input.map((v) => 1 - v));
    assert.deepEqual([...out.w.data], [1, 1, 1]);
  }
  assert.deepEqual(m.graph.outputs.map((v) => v.name), ["y"]);
  const { y, t: probed } = interpret(m, { x: float32Tensor([3], [2, 0, -2]) }, { probes: [t] });
  assert.deepEqual([...y.data], [0, 1, 3]);
  assert.deepEqual([...probed.data], [-2, -0, 2]);
});

Deno.test("a probe that is also a graph output is returned once", () => {
  const { m } = net();
  const y = m.graph.outputs[0];
  assert.deepEqual(Object.keys(new Interpreter(m, { probes: [y] }).run({ x: float32Tensor([3], [1, 2, 3]) })), ["y"]);
});

Deno.test("a probe outside the main graph is refused by name", () => {
  const { m } = net();
  const stray = new Graph("other").addInput(new Value("z"));
  assert.throws(() => new Interpreter(m, { probes: [stray] }), { message: 'probe "z" is not a value of graph "main"' });
});

Deno.test("stopAtProbes runs only up to the probes and returns only them", () => {
  const { m, t } = net();
  let ran = 0;
  // Count kernel calls: the ops after the probe must not run.
  const registry = new OpRegistry(
    builtinOps.all().map((def) =>
      def.interpret === undefined
        ? def
        : { ...def, interpret: (op, inputs, c) => (ran++, def.interpret!(op, inputs, c)) }
    ),
  );
  const out = new Interpreter(m, { probes: [t], stopAtProbes: true, registry }).run({
    x: float32Tensor([3], [1, -2, 3]),
  });
  assert.deepEqual(Object.keys(out), ["t"]);
  assert.deepEqual([...out.t.data], [-1, 2, -3]);
  assert.equal(ran, 1);
});
