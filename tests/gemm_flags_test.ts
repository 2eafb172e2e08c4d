/**
 * Gemm's `transA`/`transB` are flags: ONNX and onnxruntime read any nonzero value as true. The interpreter, shape
 * inference and the passes that read Gemm weights (fold-bn, svd, bfp, prune) must agree, or a pipeline silently
 * changes a model's outputs (issue 14, defect 1).
 */
import assert from "node:assert/strict";
import { runOnnxruntime } from "../driver/onnxruntime.ts";
import { attr } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { interpret } from "../ir/interpreter.ts";
import { Module } from "../ir/module.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { addConstant } from "../ir/rewriter.ts";
import { float32Tensor, type Tensor } from "../ir/tensor.ts";
import { runPipeline } from "../passes/manager.ts";
import { parsePipeline } from "../passes/pipeline.ts";
import { builtinPasses } from "../passes/builtin.ts";
import { passLookup } from "../passes/pass.ts";
import { compareTensors, mulberry32 } from "./tensor_compare.ts";

/** x [N, 6] (or [6, N] with transA) -> Gemm(w, b) -> BatchNormalization -> y [N, 5]; w stored as transB asks. */
function gemmModel(transA: number, transB: number): Uint8Array {
  const next = mulberry32(7);
  const values = (n: number) => Array.from({ length: n }, () => 2 * next() - 1);
  const g = new Graph("gemm");
  const x = g.addInput(new Value("x", { elem: "f32", shape: transA !== 0 ? [6, 3] : [3, 6] }));
  const w = addConstant(g, "w", float32Tensor(transB !== 0 ? [5, 6] : [6, 5], values(30)));
  const b = addConstant(g, "b", float32Tensor([5], values(5)));
  const gemm = g.addOp(
    new Op({
      name: "fc",
      type: "Gemm",
      operands: [x, w, b],
      results: [new Value("h")],
      attributes: [["transA", attr.int(transA)], ["transB", attr.int(transB)], ["alpha", attr.float(0.75)]],
    }),
  );
  const bn = ["scale", "bias", "mean", "var"].map((n, i) =>
    addConstant(g, `bn.${n}`, float32Tensor([5], values(5).map((v) => (i === 3 ? 1 + Math.abs(v) : v))))
  );
  g.outputs.push(
    g.addOp(
      new Op({ name: "bn", type: "BatchNormalization", operands: [gemm.result, ...bn], results: [new Value("y")] }),
    )
      .result,
  );
  return exportOnnx(new Module(g));
}

function input(transA: number): Tensor {
  const next = mulberry32(11);
  return float32Tensor(transA !== 0 ? [6, 3] : [3, 6], Array.from({ length: 18 }, () => 2 * next() - 1));
}

for (const [transA, transB] of [[0, 2], [0, 7], [0, -1], [3, 0], [-5, 2 ** 31 - 1]]) {
  Deno.test(`Gemm transA=${transA} transB=${transB}: interpreter = onnxruntime, and passes keep the outputs`, async () => {
    const bytes = gemmModel(transA, transB);
    const x = input(transA);
    const ort = (await runOnnxruntime(bytes, { x })).y;
    const reference = interpret(importOnnx(bytes), { x }).y;
    assert.equal(compareTensors(reference, ort, { rtol: 1e-5, atol: 1e-6 }), null, "interpreter vs onnxruntime");
    for (const pipeline of ["fold-bn,canonicalize,dce", "svd{energy=1}", "fold-bn,bfp{mantissa=16}"]) {
      const module = importOnnx(bytes);
      const registry = passLookup(builtinPasses);
      await runPipeline(module, parsePipeline(pipeline, registry), { registry });
      const after = interpret(module, { x }).y;
      const tol = pipeline.includes("bfp") ? { rtol: 1e-3, atol: 1e-3 } : { rtol: 1e-4, atol: 1e-5 };
      assert.equal(compareTensors(after, reference, tol), null, pipeline);
    }
  });
}
