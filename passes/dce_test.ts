import assert from "node:assert/strict";
import { Graph, Op, Value } from "../ir/graph.ts";
import { interpret } from "../ir/interpreter.ts";
import { Module } from "../ir/module.ts";
import { parseModule } from "../ir/parser.ts";
import { cloneModule } from "../ir/rewriter.ts";
import { float32Tensor } from "../ir/tensor.ts";
import { builtinPasses } from "./builtin.ts";
import { runPipeline } from "./manager.ts";
import type { PassRecord } from "./manager.ts";
import { passLookup } from "./pass.ts";
import { parsePipeline } from "./pipeline.ts";

async function runDce(module: Module): Promise<PassRecord> {
  const registry = passLookup(builtinPasses);
  const [record] = await runPipeline(module, parsePipeline("dce", registry), { registry });
  return record;
}

function unary(g: Graph, type: string, name: string, ...operands: Value[]): Op {
  return g.addOp(new Op({ name, type, operands, results: [new Value(name)] }));
}

Deno.test("dce removes dead chains transitively, with the constants only they used", async () => {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [4] }));
  const unusedInput = g.addInput(new Value("unused", { elem: "f32", shape: [4] }));
  const k = g.addConstant("k", float32Tensor([4], [1, 2, 3, 4]), { elem: "f32", shape: [4] });
  const shared = g.addConstant("shared", float32Tensor([4], [1, 1, 1, 1]), { elem: "f32", shape: [4] });
  g.addConstant("orphan", float32Tensor([1], [0]), { elem: "f32", shape: [1] });
  const live = unary(g, "Add", "live", x, shared);
  const a = unary(g, "Mul", "a", x, k);
  const b = unary(g, "Add", "b", a.result, shared);
  unary(g, "Relu", "c", b.result);
  const out = unary(g, "Neg", "out", live.result);
  g.outputs.push(out.result);
  const module = new Module(g);
  const input = { x: float32Tensor([4], [1, -2, 3, -4]), unused: float32Tensor([4], [0, 0, 0, 0]) };
  const before = interpret(cloneModule(module), input);

  const record = await runDce(module);
  assert.equal(record.changed, true);
  assert.deepEqual(record.stats, { "ops-removed": 3, "constants-removed": 2 });
  assert.deepEqual(g.ops.map((op) => op.name), ["live", "out"]);
  assert.deepEqual(g.constants.map((c) => c.name), ["shared"]);
  // Graph inputs are the model's interface: an unused one stays.
  assert.deepEqual(g.inputs, [x, unusedInput]);
  assert.deepEqual(interpret(module, input), before);
});

Deno.test("dce keeps an op when any one of its results is used, and outputs that nothing else uses", async () => {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [4] }));
  const split = g.addOp(
    new Op({
      name: "split",
      type: "Split",
      operands: [x],
      results: [new Value("lo"), new Value("hi")],
      attributes: [["axis", { kind: "int", value: 0 }]],
    }),
  );
  const relu = unary(g, "Relu", "relu", split.results[1]);
  const c = g.addConstant("c", float32Tensor([1], [3]), { elem: "f32", shape: [1] });
  g.outputs.push(relu.result, c);
  const record = await runDce(new Module(g));
  assert.equal(record.changed, false);
  assert.deepEqual(record.stats, { "ops-removed": 0, "constants-removed": 0 });
  assert.deepEqual(g.ops.map((op) => op.name), ["split", "relu"]);
  assert.deepEqual(g.constants, [c]);
});

Deno.test("dce cleans subgraphs of live ops and frees the outer values only a dead body op used", async () => {
  const module = parseModule(`module opsets {"": 13} ir_version 7 {
graph @main(%cond: bool[], %x: f32[2]) -> (%y) {
  %k = const f32[2] dense<[1.0, 2.0]>
  %scaled = Mul(%x, %k) : f32[2]
  %y = If(%cond) {else_branch = graph @else() -> (%e) {
    %e = Neg(%x) : f32[2]
    return %e
  }, then_branch = graph @then() -> (%t) {
    %dead = Relu(%scaled) : f32[2]
    %t = Abs(%x) : f32[2]
    return %t
  }} : f32[2]
  return %y
}
}
`);
  const record = await runDce(module);
  // Inside the then-branch Relu is dead; then Mul outside lost its only user, then the constant k.
  assert.deepEqual(record.stats, { "ops-removed": 2, "constants-removed": 1 });
  const g = module.graph;
  assert.deepEqual(g.ops.map((op) => op.name), ["y"]);
  const then = g.ops[0].attr("then_branch");
  assert.equal(then?.kind, "graph");
  assert.deepEqual(then.kind === "graph" ? then.value.ops.map((op) => op.name) : [], ["t"]);
  assert.deepEqual(g.constants, []);
});
