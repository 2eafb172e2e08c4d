import assert from "node:assert/strict";
import type { Attribute } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { interpret } from "../ir/interpreter.ts";
import { Module } from "../ir/module.ts";
import { cloneModule } from "../ir/rewriter.ts";
import { float32Tensor, int64Tensor, type Tensor, tensor } from "../ir/tensor.ts";
import type { Dim } from "../ir/types.ts";
import { builtinPasses } from "./builtin.ts";
import { runPipeline } from "./manager.ts";
import { passLookup, type StatValue } from "./pass.ts";
import { parsePipeline } from "./pipeline.ts";

function addOp(
  g: Graph,
  type: string,
  name: string,
  operands: (Value | null)[],
  attributes: [string, Attribute][] = [],
  results = 1,
): Op {
  const values = Array.from({ length: results }, (_, i) => new Value(i === 0 ? name : `${name}.${i}`));
  return g.addOp(new Op({ name, type, operands, results: values, attributes }));
}

function int64s(g: Graph, name: string, values: number[]): Value {
  return g.addConstant(name, int64Tensor(values), { elem: "i64", shape: [values.length] });
}

function ramp(shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return float32Tensor(shape, Array.from({ length: n }, (_, i) => Math.sin(i + 1)));
}

async function canonicalize(module: Module, pipeline = "canonicalize"): Promise<Record<string, StatValue>> {
  const registry = passLookup(builtinPasses);
  const [record] = await runPipeline(module, parsePipeline(pipeline, registry), { registry });
  return record.stats;
}

/** Canonicalize, checking that outputs are bit-identical before and after on each input set. */
async function canonicalizeChecked(
  module: Module,
  inputSets: Record<string, Tensor>[],
  pipeline = "canonicalize",
): Promise<Record<string, StatValue>> {
  const reference = cloneModule(module);
  const stats = await canonicalize(module, pipeline);
  for (const inputs of inputSets) assert.deepEqual(interpret(module, inputs), interpret(reference, inputs));
  return stats;
}

const opTypes = (g: Graph): string[] => g.ops.map((op) => op.type);

Deno.test("canonicalize bypasses an Identity between two ops", async () => {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [3] }));
  const relu = addOp(g, "Relu", "relu", [x]);
  const id = addOp(g, "Identity", "id", [relu.result]);
  const neg = addOp(g, "Neg", "neg", [id.result]);
  g.outputs.push(neg.result);
  const stats = await canonicalizeChecked(new Module(g), [{ x: ramp([3]) }]);
  assert.equal(stats["identities-removed"], 1);
  assert.deepEqual(opTypes(g), ["Relu", "Neg"]);
  assert.equal(neg.operand(0), relu.result);
});

Deno.test("canonicalize removes an Identity that is a graph output by renaming its input to the output's name", async () => {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [3] }));
  const relu = addOp(g, "Relu", "relu", [x]);
  const sig = addOp(g, "Sigmoid", "sig", [relu.result]);
  g.outputs.push(addOp(g, "Identity", "logits", [relu.result]).result, sig.result);
  const stats = await canonicalizeChecked(new Module(g), [{ x: ramp([3]) }]);
  assert.equal(stats["identities-removed"], 1);
  assert.deepEqual(opTypes(g), ["Relu", "Sigmoid"]);
  assert.deepEqual(g.outputs.map((v) => v.name), ["logits", "sig"]);
  assert.equal(g.outputs[0], relu.result);
  assert.equal(sig.operand(0), relu.result);
  assert.ok(g.hasName("logits") && !g.hasName("relu"));
});

Deno.test("canonicalize keeps an Identity whose result names a graph output it cannot rename into", async () => {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [3] }));
  const relu = addOp(g, "Relu", "relu", [x]);
  // The input itself is a graph input; and an op result that is already an output under another name.
  g.outputs.push(addOp(g, "Identity", "copy_of_x", [x]).result);
  g.outputs.push(relu.result, addOp(g, "Identity", "copy_of_relu", [relu.result]).result);
  const stats = await canonicalizeChecked(new Module(g), [{ x: ramp([3]) }]);
  assert.equal(stats["identities-removed"], 0);
  assert.deepEqual(opTypes(g), ["Relu", "Identity", "Identity"]);
  assert.deepEqual(g.outputs.map((v) => v.name), ["copy_of_x", "relu", "copy_of_relu"]);
});

function dropoutModule(opset: number, dropoutOperands: (g: Graph, x: Value) => (Value | null)[], useMask: boolean) {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [2, 3] }));
  const relu = addOp(g, "Relu", "relu", [x]);
  const drop = addOp(g, "Dropout", "drop", dropoutOperands(g, relu.result), [], 2);
  g.outputs.push(addOp(g, "Neg", "out", [drop.result]).result);
  if (useMask) g.outputs.push(drop.results[1]);
  return new Module(g, [["", opset]]);
}

Deno.test("canonicalize removes an inference Dropout whose mask is unused", async () => {
  const m = dropoutModule(
    13,
    (g, x) => [x, g.addConstant("ratio", float32Tensor([], [0.3]), { elem: "f32", shape: [] })],
    false,
  );
  const stats = await canonicalizeChecked(m, [{ x: ramp([2, 3]) }]);
  assert.equal(stats["dropouts-removed"], 1);
  assert.deepEqual(opTypes(m.graph), ["Relu", "Neg"]);
  // The ratio constant went with it.
  assert.deepEqual(m.graph.constants, []);
});

Deno.test("canonicalize removes a Dropout whose training_mode is a constant false", async () => {
  const m = dropoutModule(13, (g, x) => {
    const off = g.addConstant("training", tensor("bool", [], Uint8Array.of(0)), { elem: "bool", shape: [] });
    return [x, null, off];
  }, false);
  assert.equal((await canonicalizeChecked(m, [{ x: ramp([2, 3]) }]))["dropouts-removed"], 1);
});

Deno.test("canonicalize keeps a Dropout whose mask is used, or whose mode is not a constant false", async () => {
  const withMask = dropoutModule(13, (_g, x) => [x], true);
  assert.equal((await canonicalize(withMask))["dropouts-removed"], 0);
  assert.deepEqual(opTypes(withMask.graph), ["Relu", "Dropout", "Neg"]);

  const training = dropoutModule(13, (g, x) => {
    const on = g.addConstant("training", tensor("bool", [], Uint8Array.of(1)), { elem: "bool", shape: [] });
    return [x, null, on];
  }, false);
  assert.equal((await canonicalize(training))["dropouts-removed"], 0);

  const fed = dropoutModule(13, (g, x) => {
    const mode = g.addInput(new Value("mode", { elem: "bool", shape: [] }));
    return [x, null, mode];
  }, false);
  assert.equal((await canonicalize(fed))["dropouts-removed"], 0);
  assert.deepEqual(opTypes(fed.graph), ["Relu", "Dropout", "Neg"]);
});

Deno.test("canonicalize turns Constant ops into graph constants of the same name", async () => {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [3] }));
  const c = addOp(g, "Constant", "two", [], [["value", { kind: "tensor", value: float32Tensor([3], [2, 2, 3]) }]]);
  g.outputs.push(addOp(g, "Mul", "out", [x, c.result]).result);
  const stats = await canonicalizeChecked(new Module(g), [{ x: ramp([3]) }]);
  assert.equal(stats["constants-folded"], 1);
  assert.deepEqual(opTypes(g), ["Mul"]);
  assert.deepEqual(g.constants.map((v) => v.name), ["two"]);
  assert.equal(g.ops[0].operand(1), g.constants[0]);
});

/** PyTorch's `x.view(x.size(0), -1)`: Shape -> Gather(0) -> Unsqueeze -> Concat([n, -1]) -> Reshape. */
function flattenChain(inputShape: Dim[], opset = 13): { module: Module; reshape: Op } {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: inputShape }));
  const relu = addOp(g, "Relu", "relu", [x]);
  const shape = addOp(g, "Shape", "shape", [relu.result]);
  const batch = addOp(g, "Gather", "batch", [
    shape.result,
    g.addConstant("zero", int64Tensor([0], []), { elem: "i64", shape: [] }),
  ]);
  const unsq = addOp(g, "Unsqueeze", "batch_1d", [batch.result, int64s(g, "axes", [0])]);
  const target = addOp(g, "Concat", "target", [unsq.result, int64s(g, "minus_one", [-1])], [["axis", {
    kind: "int",
    value: 0,
  }]]);
  const reshape = addOp(g, "Reshape", "flat", [relu.result, target.result]);
  g.outputs.push(reshape.result);
  return { module: new Module(g, [["", opset]]), reshape };
}

Deno.test("canonicalize folds a static PyTorch flatten chain into a constant Reshape shape", async () => {
  const { module, reshape } = flattenChain([2, 4, 3, 3]);
  const stats = await canonicalizeChecked(module, [{ x: ramp([2, 4, 3, 3]) }]);
  assert.deepEqual(opTypes(module.graph), ["Relu", "Reshape"]);
  assert.equal(stats["constants-folded"], 4);
  const shape = reshape.operand(1)!;
  assert.equal(shape.name, "target");
  assert.deepEqual([...(shape.constant!.data as BigInt64Array)], [2n, -1n]);
  assert.deepEqual(module.graph.constants, [shape]);
});

Deno.test("canonicalize keeps a symbolic batch symbolic: the flatten target becomes [0, -1]", async () => {
  const { module, reshape } = flattenChain(["N", 4, 3, 3]);
  const stats = await canonicalizeChecked(module, [{ x: ramp([2, 4, 3, 3]) }, { x: ramp([5, 4, 3, 3]) }]);
  assert.equal(stats["constants-folded"], 0);
  assert.equal(stats["reshape-shapes-folded"], 1);
  assert.deepEqual(opTypes(module.graph), ["Relu", "Reshape"]);
  assert.deepEqual([...(reshape.operand(1)!.constant!.data as BigInt64Array)], [0n, -1n]);
  assert.deepEqual(reshape.result.type, { elem: "f32", shape: ["N", 36] });
});

Deno.test("canonicalize folds the static part of a symbolic-batch shape computation", async () => {
  // x.view(x.size(0), x.size(1) * x.size(2) * x.size(3)) with a symbolic batch.
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4, 3, 3] }));
  const shape = addOp(g, "Shape", "shape", [x]);
  const dim = (i: number): Op => {
    const gathered = addOp(g, "Gather", `dim${i}`, [
      shape.result,
      g.addConstant(`i${i}`, int64Tensor([i], []), { elem: "i64", shape: [] }),
    ]);
    return addOp(g, "Unsqueeze", `dim${i}_1d`, [gathered.result, int64s(g, `axes${i}`, [0])]);
  };
  const [d0, d1, d2, d3] = [0, 1, 2, 3].map(dim);
  const features = addOp(g, "Mul", "features", [addOp(g, "Mul", "hw", [d2.result, d3.result]).result, d1.result]);
  const target = addOp(g, "Concat", "target", [d0.result, features.result], [["axis", { kind: "int", value: 0 }]]);
  const reshape = addOp(g, "Reshape", "flat", [x, target.result]);
  g.outputs.push(reshape.result);
  const stats = await canonicalizeChecked(new Module(g), [{ x: ramp([3, 4, 3, 3]) }]);
  assert.deepEqual(opTypes(g), ["Reshape"]);
  assert.deepEqual([...(reshape.operand(1)!.constant!.data as BigInt64Array)], [0n, 36n]);
  // dim1..dim3 (Gather, Unsqueeze each), hw and features are static; dim0 and the Concat are not.
  assert.equal(stats["constants-folded"], 8);
});

Deno.test("canonicalize does not rewrite a symbolic Reshape shape when allowzero = 1", async () => {
  const { module, reshape } = flattenChain(["N", 4, 3, 3], 14);
  reshape.attributes.set("allowzero", { kind: "int", value: 1 });
  const stats = await canonicalizeChecked(module, [{ x: ramp([2, 4, 3, 3]) }]);
  assert.equal(stats["reshape-shapes-folded"], 0);
  assert.equal(reshape.operand(1)?.producer?.type, "Concat");
});

Deno.test("canonicalize folds ops over constants only up to fold-limit elements, never a graph output", async () => {
  const build = (): Graph => {
    const g = new Graph("net");
    const x = g.addInput(new Value("x", { elem: "f32", shape: [40, 40] }));
    const a = g.addConstant("a", ramp([40, 40]), { elem: "f32", shape: [40, 40] });
    const sum = addOp(g, "Add", "sum", [a, a]);
    const out = addOp(g, "Mul", "out", [x, sum.result]);
    const twice = addOp(g, "Add", "twice", [
      g.addConstant("one", float32Tensor([1], [1]), { elem: "f32", shape: [1] }),
      g.addConstant("b", float32Tensor([1], [1]), { elem: "f32", shape: [1] }),
    ]);
    g.outputs.push(out.result, twice.result);
    return g;
  };
  const small = build();
  await canonicalizeChecked(new Module(small), [{ x: ramp([40, 40]) }]);
  assert.deepEqual(opTypes(small), ["Add", "Mul", "Add"]);

  const large = build();
  const stats = await canonicalizeChecked(new Module(large), [{ x: ramp([40, 40]) }], "canonicalize{fold-limit=1600}");
  assert.equal(stats["constants-folded"], 1);
  assert.deepEqual(opTypes(large), ["Mul", "Add"]);
  assert.deepEqual(large.constants.map((c) => c.name), ["one", "b", "sum"]);
});
