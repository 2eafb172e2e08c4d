import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { costOf } from "./cost.ts";
import { Graph, Op, Value } from "./graph.ts";
import { Module } from "./module.ts";
import { importOnnx } from "./onnx/import.ts";
import { inferShapes } from "./shape.ts";
import { tensor, zeros } from "./tensor.ts";

/** x: f32[N,3,8,8] -> Conv(8 filters 3x3, pad 1, groups g) -> Relu -> Flatten -> Gemm(512 -> 10). */
function smallCnn(groups = 1): Module {
  const g = new Graph("cnn");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 3 * groups, 8, 8] }));
  const w = g.addConstant("w", zeros("f32", [8, 3, 3, 3]), { elem: "f32", shape: [8, 3, 3, 3] });
  const b = g.addConstant("b", zeros("f32", [8]), { elem: "f32", shape: [8] });
  const conv = g.addOp(
    new Op({
      name: "conv",
      type: "Conv",
      operands: [x, w, b],
      results: [new Value("c")],
      attributes: [["pads", { kind: "ints", value: [1, 1, 1, 1] }], ["group", { kind: "int", value: groups }]],
    }),
  );
  const relu = g.addOp(new Op({ name: "relu", type: "Relu", operands: [conv.result], results: [new Value("r")] }));
  const flat = g.addOp(new Op({ name: "flat", type: "Flatten", operands: [relu.result], results: [new Value("f")] }));
  const fw = g.addConstant("fw", zeros("f32", [10, 512]), { elem: "f32", shape: [10, 512] });
  const fb = g.addConstant("fb", tensor("f16", [10], new Uint16Array(10)), { elem: "f16", shape: [10] });
  const fc = g.addOp(
    new Op({
      name: "fc",
      type: "Gemm",
      operands: [flat.result, fw, fb],
      results: [new Value("y")],
      attributes: [["transB", { kind: "int", value: 1 }]],
    }),
  );
  g.outputs.push(fc.result);
  const m = new Module(g);
  inferShapes(m);
  return m;
}

Deno.test("costOf() counts conv and FC MACs by the textbook formulas at batch 1", () => {
  const { totals, layers } = costOf(smallCnn());
  // conv: Kh*Kw*Cin/groups*Cout*Hout*Wout = 3*3*3*8*8*8; FC: in*out = 512*10.
  assert.deepEqual(layers.map((l) => [l.name, l.params, l.macs]), [["conv", 224, 13824], ["fc", 5130, 5120]]);
  assert.equal(totals.macs, 13824 + 5120);
  assert.equal(totals.params, 224 + 5130);
  assert.equal(totals.weightBytes, 224 * 4 + 5120 * 4 + 10 * 2, "f16 bias counts 2 bytes an element");
});

Deno.test("costOf() divides conv MACs by the group count", () => {
  const grouped = costOf(smallCnn(2)).layers.find((l) => l.name === "conv")!;
  assert.equal(grouped.macs, 3 * 3 * (6 / 2) * 8 * 8 * 8);
});

Deno.test("costOf() finds the peak of live activations at batch 1", () => {
  // Live after each op: x+c = 2816 B, c+r = 4096 B, r+f = 4096 B (copies, not aliases), f+y = 2088 B.
  assert.equal(costOf(smallCnn()).totals.peakActivationBytes, 2048 + 2048);
});

Deno.test("costOf() counts a weight shared by two ops once in the totals", () => {
  const g = new Graph();
  const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 4] }));
  const w = g.addConstant("w", zeros("f32", [4, 4]), { elem: "f32", shape: [4, 4] });
  const a = g.addOp(new Op({ name: "a", type: "MatMul", operands: [x, w], results: [new Value("a")] }));
  const b = g.addOp(new Op({ name: "b", type: "MatMul", operands: [a.result, w], results: [new Value("b")] }));
  g.outputs.push(b.result);
  const m = new Module(g);
  inferShapes(m);
  const { totals, layers } = costOf(m);
  assert.equal(totals.params, 16);
  assert.deepEqual(layers.map((l) => l.params), [16, 16]);
  assert.equal(totals.macs, 32);
});

const RESULTS = new URL("../examples/models/results.json", import.meta.url).pathname;

Deno.test({
  name: "costOf() agrees with PyTorch's MAC count on every trained model",
  ignore: !existsSync(RESULTS),
  fn() {
    const results = JSON.parse(readFileSync(RESULTS, "utf8")).models as Record<string, { file: string; macs: number }>;
    let checked = 0;
    for (const { file, macs } of Object.values(results)) {
      const m = importOnnx(readFileSync(new URL(`../examples/models/${file}`, import.meta.url)));
      inferShapes(m);
      assert.equal(costOf(m).totals.macs, macs, file);
      checked++;
    }
    assert.ok(checked >= 7, `${checked} models checked`);
  },
});
