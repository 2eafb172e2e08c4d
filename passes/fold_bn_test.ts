import assert from "node:assert/strict";
import type { Attribute } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { interpret } from "../ir/interpreter.ts";
import { Module } from "../ir/module.ts";
import { cloneModule } from "../ir/rewriter.ts";
import { float32Tensor, type Tensor } from "../ir/tensor.ts";
import { builtinPasses } from "./builtin.ts";
import { runPipeline } from "./manager.ts";
import { passLookup, type StatValue } from "./pass.ts";
import { parsePipeline } from "./pipeline.ts";

/** Deterministic uniform numbers in [lo, hi) (mulberry32). */
function randoms(seed: number): (count: number, lo?: number, hi?: number) => number[] {
  let s = seed >>> 0;
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return (count, lo = -1, hi = 1) => Array.from({ length: count }, () => lo + (hi - lo) * next());
}

const rand = randoms(7);

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function constant(g: Graph, name: string, shape: number[], values = rand(size(shape))): Value {
  return g.addConstant(name, float32Tensor(shape, values), { elem: "f32", shape });
}

function addOp(
  g: Graph,
  type: string,
  name: string,
  operands: (Value | null)[],
  attributes: [string, Attribute][] = [],
): Op {
  return g.addOp(new Op({ name, type, operands, results: [new Value(name)], attributes }));
}

/** BatchNormalization over `x` with random inference parameters for `channels` channels. */
function batchNorm(g: Graph, name: string, x: Value, channels: number, attributes: [string, Attribute][] = []): Op {
  const params = [
    constant(g, `${name}.scale`, [channels], rand(channels, 0.5, 1.5)),
    constant(g, `${name}.bias`, [channels]),
    constant(g, `${name}.mean`, [channels]),
    constant(g, `${name}.var`, [channels], rand(channels, 0.5, 1.5)),
  ];
  return addOp(g, "BatchNormalization", name, [x, ...params], [
    ["epsilon", { kind: "float", value: 1e-3 }],
    ...attributes,
  ]);
}

async function run(module: Module, pipeline: string): Promise<Record<string, StatValue>> {
  const registry = passLookup(builtinPasses);
  const records = await runPipeline(module, parsePipeline(pipeline, registry), { registry });
  return records[0].stats;
}

/** Run `pipeline` on `module` and check the interpreter gives the same outputs before and after. */
async function runChecked(
  module: Module,
  inputs: Record<string, Tensor>,
  pipeline = "fold-bn",
): Promise<Record<string, StatValue>> {
  const before = interpret(cloneModule(module), inputs);
  const stats = await run(module, pipeline);
  const after = interpret(module, inputs);
  assert.deepEqual(Object.keys(after), Object.keys(before));
  for (const [name, expected] of Object.entries(before)) {
    const actual = after[name];
    assert.deepEqual(actual.shape, expected.shape);
    for (let i = 0; i < expected.data.length; i++) {
      const e = expected.data[i] as number;
      const a = actual.data[i] as number;
      assert.ok(Math.abs(a - e) <= 1e-5 + 1e-4 * Math.abs(e), `${name}[${i}]: ${a} vs ${e}`);
    }
  }
  return stats;
}

function convBnModule(
  options: { bias: boolean; group: number; inChannels: number; outChannels: number },
): { module: Module; input: Tensor } {
  const { bias, group, inChannels, outChannels } = options;
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [2, inChannels, 5, 5] }));
  const w = constant(g, "conv1.weight", [outChannels, inChannels / group, 3, 3]);
  const b = bias ? constant(g, "conv1.bias", [outChannels]) : null;
  const conv = addOp(g, "Conv", "conv1", b === null ? [x, w] : [x, w, b], [
    ["group", { kind: "int", value: group }],
    ["pads", { kind: "ints", value: [1, 1, 1, 1] }],
  ]);
  const bn = batchNorm(g, "bn1", conv.result, outChannels);
  const relu = addOp(g, "Relu", "relu1", [bn.result]);
  g.outputs.push(relu.result);
  return { module: new Module(g), input: float32Tensor([2, inChannels, 5, 5], rand(2 * inChannels * 25)) };
}

for (const bias of [true, false]) {
  Deno.test(`fold-bn folds BatchNormalization into a Conv ${bias ? "with" : "without"} bias`, async () => {
    const { module, input } = convBnModule({ bias, group: 1, inChannels: 3, outChannels: 4 });
    const stats = await runChecked(module, { x: input });
    assert.deepEqual(stats, { "bn-folded": 1, "bn-not-folded": 0, "bn-not-folded-reasons": {} });
    const g = module.graph;
    assert.deepEqual(g.ops.map((op) => op.type), ["Conv", "Relu"]);
    assert.deepEqual(g.ops[0].operands.map((v) => v?.name), ["x", "conv1.weight.folded", "conv1.bias.folded"]);
    // The old weights and the BN parameters were used by nothing else: they are gone.
    assert.deepEqual(g.constants.map((c) => c.name), ["conv1.weight.folded", "conv1.bias.folded"]);
    assert.equal(g.ops[1].operand(0), g.ops[0].result);
    assert.equal(g.ops[0].result.name, "conv1");
  });
}

for (const [label, group, inChannels, outChannels] of [["grouped", 2, 4, 6], ["depthwise", 4, 4, 4]] as const) {
  Deno.test(`fold-bn folds BatchNormalization into a ${label} Conv (group=${group})`, async () => {
    const { module, input } = convBnModule({ bias: true, group, inChannels, outChannels });
    const stats = await runChecked(module, { x: input });
    assert.equal(stats["bn-folded"], 1);
    assert.deepEqual(module.graph.ops.map((op) => op.type), ["Conv", "Relu"]);
    assert.equal(module.graph.ops[0].int("group"), group);
  });
}

function gemmBnModule(transB: number, withC: boolean): { module: Module; input: Tensor } {
  const g = new Graph("mlp");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 6] }));
  const w = constant(g, "fc.weight", transB === 1 ? [5, 6] : [6, 5]);
  const c = withC ? constant(g, "fc.bias", [5]) : null;
  const gemm = addOp(g, "Gemm", "fc", c === null ? [x, w] : [x, w, c], [
    ["transB", { kind: "int", value: transB }],
    ["alpha", { kind: "float", value: 0.5 }],
    ["beta", { kind: "float", value: 2 }],
  ]);
  const bn = batchNorm(g, "bn", gemm.result, 5);
  g.outputs.push(bn.result);
  return { module: new Module(g), input: float32Tensor([3, 6], rand(18)) };
}

for (const transB of [0, 1]) {
  for (const withC of [true, false]) {
    Deno.test(`fold-bn folds BatchNormalization into a Gemm (transB=${transB}, ${withC ? "with" : "no"} C)`, async () => {
      const { module, input } = gemmBnModule(transB, withC);
      const stats = await runChecked(module, { x: input });
      assert.equal(stats["bn-folded"], 1);
      const g = module.graph;
      assert.deepEqual(g.ops.map((op) => op.type), ["Gemm"]);
      assert.equal(g.ops[0].float("beta"), 1);
      assert.equal(g.ops[0].float("alpha"), 0.5);
      assert.deepEqual(g.ops[0].operand(2)?.constant?.shape, [5]);
      assert.equal(g.ops[0].operand(2)?.name, "fc.bias.folded");
      // The BN result was the graph output: the Gemm's result took over its name.
      assert.equal(g.outputs[0], g.ops[0].result);
      assert.equal(g.outputs[0].name, "bn");
    });
  }
}

Deno.test("fold-bn leaves a Gemm whose C depends on the row alone", async () => {
  const g = new Graph("mlp");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [3, 6] }));
  const gemm = addOp(g, "Gemm", "fc", [x, constant(g, "w", [6, 5]), constant(g, "c", [3, 1])]);
  g.outputs.push(batchNorm(g, "bn", gemm.result, 5).result);
  const stats = await runChecked(new Module(g), { x: float32Tensor([3, 6], rand(18)) });
  assert.deepEqual(stats["bn-not-folded-reasons"], { "gemm-bias-shape": 1 });
});

Deno.test("fold-bn turns MatMul by a constant followed by BatchNormalization into one Gemm", async () => {
  const g = new Graph("mlp");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 6] }));
  const mm = addOp(g, "MatMul", "mm", [x, constant(g, "proj.weight", [6, 4])]);
  const bn = batchNorm(g, "bn", mm.result, 4);
  g.outputs.push(addOp(g, "Relu", "out", [bn.result]).result);
  const module = new Module(g);
  const stats = await runChecked(module, { x: float32Tensor([2, 6], rand(12)) });
  assert.equal(stats["bn-folded"], 1);
  assert.deepEqual(g.ops.map((op) => `${op.type} ${op.result.name}`), ["Gemm mm", "Relu out"]);
  assert.deepEqual(g.ops[0].operands.map((v) => v?.name), ["x", "proj.weight.folded", "proj.bias.folded"]);
});

Deno.test("fold-bn leaves a batched (rank-3) MatMul: BN's channel axis is not the feature axis", async () => {
  const g = new Graph("seq");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [2, 4, 6] }));
  const mm = addOp(g, "MatMul", "mm", [x, constant(g, "w", [6, 4])]);
  g.outputs.push(batchNorm(g, "bn", mm.result, 4).result);
  const stats = await runChecked(new Module(g), { x: float32Tensor([2, 4, 6], rand(48)) });
  assert.deepEqual(stats["bn-not-folded-reasons"], { "matmul-rank": 1 });
});

Deno.test("fold-bn copies a weight shared by two convs instead of writing into it", async () => {
  const g = new Graph("shared");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 2, 4, 4] }));
  const w = constant(g, "shared.weight", [3, 2, 1, 1]);
  const original = Float32Array.from(w.constant!.data as Float32Array);
  const sharedData = w.constant!.data;
  const c1 = addOp(g, "Conv", "conv_a", [x, w]);
  const c2 = addOp(g, "Conv", "conv_b", [x, w]);
  const plain = addOp(g, "Conv", "conv_c", [x, w]);
  const bn1 = batchNorm(g, "bn_a", c1.result, 3);
  const bn2 = batchNorm(g, "bn_b", c2.result, 3);
  const sum = addOp(g, "Add", "sum", [bn1.result, bn2.result]);
  g.outputs.push(addOp(g, "Add", "out", [sum.result, plain.result]).result);
  const stats = await runChecked(new Module(g), { x: float32Tensor([1, 2, 4, 4], rand(32)) });
  assert.equal(stats["bn-folded"], 2);
  assert.equal(w.constant!.data, sharedData);
  assert.deepEqual(w.constant!.data, original);
  assert.equal(plain.operand(1), w);
  assert.deepEqual([c1.operand(1)?.name, c2.operand(1)?.name], ["shared.weight.folded", "shared.weight.folded.1"]);
  assert.ok(g.constants.includes(w));
});

Deno.test("fold-bn does not fold a BatchNormalization that precedes a Conv", async () => {
  const g = new Graph("preact");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 3, 4, 4] }));
  const bn = batchNorm(g, "bn", x, 3);
  const conv = addOp(g, "Conv", "conv", [bn.result, constant(g, "w", [2, 3, 3, 3])], [
    ["pads", { kind: "ints", value: [1, 1, 1, 1] }],
  ]);
  g.outputs.push(conv.result);
  const messages: string[] = [];
  const registry = passLookup(builtinPasses);
  const [record] = await runPipeline(new Module(g), parsePipeline("fold-bn", registry), {
    registry,
    onLog: (_pass, message) => messages.push(message),
  });
  assert.equal(record.changed, false);
  assert.deepEqual(record.stats, {
    "bn-folded": 0,
    "bn-not-folded": 1,
    "bn-not-folded-reasons": { "input-not-conv-gemm-matmul": 1 },
  });
  assert.deepEqual(messages, ['op "bn" (BatchNormalization) not folded: input-not-conv-gemm-matmul']);
  assert.deepEqual(g.ops.map((op) => op.type), ["BatchNormalization", "Conv"]);
});

Deno.test("fold-bn does not fold when the Conv result has another user", async () => {
  const { module, input } = convBnModule({ bias: true, group: 1, inChannels: 3, outChannels: 4 });
  const g = module.graph;
  const conv = g.ops[0];
  g.outputs.push(addOp(g, "Sigmoid", "side", [conv.result]).result);
  const stats = await runChecked(module, { x: input });
  assert.deepEqual(stats["bn-not-folded-reasons"], { "input-has-other-users": 1 });
  assert.deepEqual(g.ops.map((op) => op.type), ["Conv", "BatchNormalization", "Relu", "Sigmoid"]);
});

Deno.test("fold-bn does not fold a BatchNormalization whose parameters are graph inputs", async () => {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 2, 3, 3] }));
  const scale = g.addInput(new Value("scale", { elem: "f32", shape: [2] }));
  const conv = addOp(g, "Conv", "conv", [x, constant(g, "w", [2, 2, 1, 1])]);
  const rest = ["b", "m", "v"].map((n) => constant(g, n, [2], rand(2, 0.5, 1)));
  g.outputs.push(addOp(g, "BatchNormalization", "bn", [conv.result, scale, ...rest]).result);
  const stats = await runChecked(new Module(g), {
    x: float32Tensor([1, 2, 3, 3], rand(18)),
    scale: float32Tensor([2], [1, 2]),
  });
  assert.deepEqual(stats["bn-not-folded-reasons"], { "params-not-constant": 1 });
});

Deno.test("fold-bn does not fold a training-mode BatchNormalization (opset 14)", async () => {
  const { module } = convBnModule({ bias: true, group: 1, inChannels: 3, outChannels: 4 });
  const opset14 = new Module(module.graph, [["", 14]]);
  module.graph.ops[1].attributes.set("training_mode", { kind: "int", value: 1 });
  const stats = await run(opset14, "fold-bn");
  assert.deepEqual(stats["bn-not-folded-reasons"], { "training-mode": 1 });
  assert.equal(opset14.graph.ops.length, 3);
});

Deno.test("fold-bn does not fold a per-activation BatchNormalization (spatial = 0, opset 7)", async () => {
  const g = new Graph("old");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 2, 1, 1] }));
  const conv = addOp(g, "Conv", "conv", [x, constant(g, "w", [2, 2, 1, 1])]);
  g.outputs.push(batchNorm(g, "bn", conv.result, 2, [["spatial", { kind: "int", value: 0 }]]).result);
  const stats = await run(new Module(g, [["", 7]]), "fold-bn");
  assert.deepEqual(stats["bn-not-folded-reasons"], { "per-activation": 1 });
});
