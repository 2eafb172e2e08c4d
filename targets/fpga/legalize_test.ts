/** Legalization for the FPGA image: what it refuses, one line naming the op. */
import assert from "node:assert/strict";
import { Graph, Op, Value } from "../../ir/graph.ts";
import { Module } from "../../ir/module.ts";
import { float32Tensor } from "../../ir/tensor.ts";
import { legalizeFpga } from "./legalize.ts";

function graphWith(type: string, extra: (g: Graph, x: Value) => Value[] = () => []): Module {
  const g = new Graph("g");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 2, 4, 4] }));
  const op = g.addOp(
    new Op({
      name: "n1",
      type,
      operands: [x, ...extra(g, x)],
      results: [new Value("y", { elem: "f32", shape: [1, 2, 4, 4] })],
    }),
  );
  g.outputs.push(op.result);
  return new Module(g);
}

Deno.test("legalizeFpga refuses a BatchNormalization it cannot state as a constant per-channel affine", () => {
  const params = (g: Graph, x: Value): Value[] => [
    g.addConstant("s", float32Tensor([2], [1, 2]), { elem: "f32", shape: [2] }),
    g.addConstant("b", float32Tensor([2], [0, 1]), { elem: "f32", shape: [2] }),
    x, // a mean computed at run time
    g.addConstant("v", float32Tensor([2], [1, 1]), { elem: "f32", shape: [2] }),
  ];
  assert.throws(
    () => legalizeFpga(graphWith("BatchNormalization", params), "ohwi", 4, 8),
    /^Error: op "n1" \(BatchNormalization\) is not a per-channel affine .*: fold it first: add fold-bn before bfp$/,
  );
});

Deno.test("legalizeFpga names unsupported ops, float layers and a module without lowered layers", () => {
  assert.throws(
    () => legalizeFpga(graphWith("Resize"), "ohwi", 4, 8),
    /^Error: unsupported op Resize "n1" in the FPGA image/,
  );
  const w = (
    g: Graph,
  ): Value[] => [g.addConstant("w", float32Tensor([2, 2, 1, 1], [1, 0, 0, 1]), { elem: "f32", shape: [2, 2, 1, 1] })];
  assert.throws(
    () => legalizeFpga(graphWith("Conv", w), "ohwi", 4, 8),
    /^Error: op "n1" \(Conv\) is still float: run bfp \(or fixed\) first$/,
  );
  assert.throws(() => legalizeFpga(graphWith("Relu"), "ohwi", 4, 8), /no lowered ai\.bfp Conv\/Gemm layer: run bfp/);
});
