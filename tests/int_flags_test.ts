/**
 * ONNX int flags are read as onnxruntime reads them.
 *
 * Gemm's `transA`/`transB` are flags: ONNX and onnxruntime read any nonzero value as true. The interpreter, shape
 * inference and the passes that read Gemm weights (fold-bn, svd, bfp, prune) must agree, or a pipeline silently
 * changes a model's outputs (issue 14, defect 1).
 */
import assert from "node:assert/strict";
import { runOnnxruntime } from "../driver/onnxruntime.ts";
import { attr, type Attribute } from "../ir/attributes.ts";
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
import { inferShapes } from "../ir/shape.ts";
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

/**
 * The other int flags, read as onnxruntime 1.30 reads them (measured: each op run with the flag at 0, 1, 2 and -1):
 * `count_include_pad`, `select_last_index`, `upper`, `exclude_outside` and `training_mode` are true when nonzero;
 * `ceil_mode`, `keepdims`, `noop_with_empty_axes`, `largest` and `allowzero` only when 1; `fmod` must be 0 or 1.
 * The interpreter must give onnxruntime's result (or both must refuse the model) for every value.
 */
interface FlagCase {
  op: string;
  flag: string;
  shape: number[];
  attributes?: [string, Attribute][];
  operands?: (g: Graph) => Value[];
  results?: number;
}

const i64 = (values: bigint[]): Tensor => ({ dtype: "i64", shape: [values.length], data: new BigInt64Array(values) });
const flagCases: FlagCase[] = [
  {
    op: "MaxPool",
    flag: "ceil_mode",
    shape: [1, 1, 5, 5],
    attributes: [["kernel_shape", attr.ints([2, 2])], ["strides", attr.ints([2, 2])]],
  },
  {
    op: "AveragePool",
    flag: "count_include_pad",
    shape: [1, 1, 5, 5],
    attributes: [["kernel_shape", attr.ints([3, 3])], ["pads", attr.ints([1, 1, 1, 1])]],
  },
  { op: "ReduceMean", flag: "keepdims", shape: [2, 3, 4], attributes: [["axes", attr.ints([1])]] },
  { op: "ArgMax", flag: "keepdims", shape: [2, 3, 4], attributes: [["axis", attr.int(1)]] },
  { op: "ArgMax", flag: "select_last_index", shape: [2, 3, 4], attributes: [["axis", attr.int(1)]] },
  { op: "Reshape", flag: "allowzero", shape: [2, 3, 4], operands: (g) => [addConstant(g, "s", i64([0n, 12n]))] },
  { op: "ReduceSum", flag: "noop_with_empty_axes", shape: [2, 3, 4] },
  { op: "TopK", flag: "largest", shape: [2, 5], operands: (g) => [addConstant(g, "k", i64([2n]))], results: 2 },
  { op: "Trilu", flag: "upper", shape: [4, 4] },
  { op: "Mod", flag: "fmod", shape: [2, 3], operands: (g) => [addConstant(g, "d", float32Tensor([1], [0.7]))] },
  {
    op: "Resize",
    flag: "exclude_outside",
    shape: [1, 1, 4, 4],
    attributes: [["mode", attr.string("cubic")]],
    operands: (
      g,
    ) => [addConstant(g, "roi", float32Tensor([0], [])), addConstant(g, "sc", float32Tensor([4], [1, 1, 0.6, 0.6]))],
  },
  {
    op: "BatchNormalization",
    flag: "training_mode",
    shape: [2, 3, 2, 2],
    operands: (g) => ["s", "b", "m", "v"].map((n) => addConstant(g, n, float32Tensor([3], [0.5, 1, 2]))),
  },
];

/** Its result, or undefined when it throws. */
async function settle<T>(run: () => T | Promise<T>): Promise<T | undefined> {
  try {
    return await run();
  } catch {
    return undefined;
  }
}

for (const c of flagCases) {
  Deno.test(`${c.op} ${c.flag} in {0, 1, 2, -1}: the interpreter agrees with onnxruntime`, async () => {
    const next = mulberry32(3);
    const x = float32Tensor(
      c.shape,
      Array.from({ length: c.shape.reduce((a, b) => a * b, 1) }, () => Math.round(16 * next() - 8) / 4),
    );
    const outcomes = new Set<string>();
    for (const value of [0, 1, 2, -1]) {
      const g = new Graph("flag");
      const operands = [g.addInput(new Value("x", { elem: "f32", shape: c.shape })), ...(c.operands?.(g) ?? [])];
      const op = g.addOp(
        new Op({
          name: "n",
          type: c.op,
          operands,
          results: Array.from({ length: c.results ?? 1 }, (_, i) => new Value(`y${i}`)),
          attributes: [...(c.attributes ?? []), [c.flag, attr.int(value)]],
        }),
      );
      g.outputs.push(op.results[0]);
      const bytes = exportOnnx(new Module(g, [["", 17]]));
      const ort = await settle(async () => (await runOnnxruntime(bytes, { x })).y0);
      const ours = await settle(() => {
        const module = importOnnx(bytes);
        inferShapes(module);
        return interpret(module, { x }).y0;
      });
      const where = `${c.flag}=${value}`;
      if (ort === undefined || ours === undefined) {
        assert.equal(ours, ort, `${where}: one of the two refused the model`);
        outcomes.add("refused");
        continue;
      }
      assert.equal(compareTensors(ours, ort, { rtol: 1e-5, atol: 1e-5 }), null, where);
      outcomes.add(JSON.stringify([ort.shape, Array.from(ort.data as ArrayLike<number | bigint>, Number)]));
    }
    assert.ok(outcomes.size > 1, `${c.flag} changes nothing in this case: the test would not see a misread flag`);
  });
}
