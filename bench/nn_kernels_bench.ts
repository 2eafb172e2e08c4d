/**
 * The interpreter's neural-network kernels (Conv, Gemm, MaxPool) on VGG-sized
 * layers with a batch of 100 MNIST-shaped images, each beside onnxruntime-node
 * (one thread) on the same one-op model, in the same run so the ratio survives
 * a noisy machine. Run: `deno bench -A bench/nn_kernels_bench.ts`.
 */
import * as ort from "onnxruntime-node";
import { attr, type Attribute } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { Interpreter } from "../ir/interpreter.ts";
import { Module } from "../ir/module.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { float32Tensor, type Tensor } from "../ir/tensor.ts";
import { tensorType } from "../ir/types.ts";

const BATCH = 100;

function values(n: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (((i * 2654435761) % 1000) / 1000 - 0.5) * scale;
  return out;
}

/** A one-op module over input `x` with float32 constants (weights) as further operands. */
function oneOp(type: string, x: number[], constants: number[][], attributes: [string, Attribute][]): Module {
  const g = new Graph();
  const operands = [g.addInput(new Value("x", tensorType("f32", x)))];
  constants.forEach((shape, i) => {
    const n = shape.reduce((a, b) => a * b, 1);
    operands.push(g.addConstant(`c${i}`, float32Tensor(shape, values(n, 0.2)), tensorType("f32", shape)));
  });
  const op = g.addOp(new Op({ name: "op", type, operands, results: [new Value("y")], attributes }));
  g.outputs.push(op.result);
  return new Module(g, [["", 13]]);
}

/** Register the interpreter and onnxruntime on `module` as one bench group. */
async function pair(group: string, module: Module, x: number[]): Promise<void> {
  const input: Tensor = float32Tensor(x, values(x.reduce((a, b) => a * b, 1), 2));
  const interpreter = new Interpreter(module);
  const session = await ort.InferenceSession.create(exportOnnx(module), {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
  });
  const feed = { x: new ort.Tensor("float32", input.data as Float32Array, x) };
  Deno.bench({ name: `interpreter ${group}`, group, baseline: true, fn: () => void interpreter.run({ x: input }) });
  Deno.bench({ name: `onnxruntime ${group}`, group, fn: async () => void await session.run(feed) });
}

const pad1 = ["pads", attr.ints([1, 1, 1, 1])] as [string, Attribute];

// 16 -> 16 channels, 3x3, 28x28: 180.6 M MACs per batch of 100.
await pair("conv3x3 16-16 28x28", oneOp("Conv", [BATCH, 16, 28, 28], [[16, 16, 3, 3], [16]], [pad1]), [
  BATCH,
  16,
  28,
  28,
]);
// 32 -> 32 channels, 3x3, 14x14: 180.6 M MACs per batch.
await pair("conv3x3 32-32 14x14", oneOp("Conv", [BATCH, 32, 14, 14], [[32, 32, 3, 3], [32]], [pad1]), [
  BATCH,
  32,
  14,
  14,
]);
// Depthwise 3x3 over 64 channels at 14x14.
await pair(
  "depthwise3x3 64 14x14",
  oneOp("Conv", [BATCH, 64, 14, 14], [[64, 1, 3, 3]], [pad1, ["group", attr.int(64)]]),
  [BATCH, 64, 14, 14],
);
// The first fully connected layer of the small VGG: 576 -> 128.
await pair("gemm 576-128", oneOp("Gemm", [BATCH, 576], [[128, 576], [128]], [["transB", attr.int(1)]]), [
  BATCH,
  576,
]);
await pair(
  "maxpool2x2 16x28x28",
  oneOp("MaxPool", [BATCH, 16, 28, 28], [], [["kernel_shape", attr.ints([2, 2])], ["strides", attr.ints([2, 2])]]),
  [BATCH, 16, 28, 28],
);
