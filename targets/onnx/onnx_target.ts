/**
 * The ONNX target: writes the compiled module back as an ONNX model
 * (`<model>.onnx`), optionally with large weights in a side file
 * (`<model>.onnx.data`, ONNX external data). Opset imports are written as the
 * module holds them: the input's, raised only by passes that introduce newer ops.
 * A BFP-lowered module (ops of domain `ai.bfp`) is first legalized to standard
 * ONNX at opset 21 (`bfp_onnx.ts`).
 * @module
 */
import { exportOnnxFiles } from "../../ir/onnx/export.ts";
import { type Artifacts, defineTarget, type Target } from "../target.ts";
import { containsBfpOps, legalizeBfp } from "./bfp_onnx.ts";

/** Options of the `onnx` target. */
export const onnxTargetOptions = {
  externalData: {
    kind: "bool",
    default: false,
    doc: "Store initializers of at least `threshold` bytes in <model>.onnx.data (ONNX external data)",
  },
  threshold: {
    kind: "int",
    default: 1024,
    min: 1,
    doc: "Smallest initializer, in bytes, moved to the external data file",
  },
} as const;

/**
 * `onnx`: the module as an ONNX `ModelProto`, byte-identical for the same
 * module. With `external-data=true` the initializers of at least `threshold`
 * bytes go to `<model>.onnx.data` at 64-byte aligned offsets; when none is
 * that large, no side file is written.
 *
 * @example Emit a one-op model
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { onnxTarget } from "./onnx_target.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [4] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] })).result);
 * const artifacts = await onnxTarget.emit(new Module(g), { externalData: false, threshold: 1024 }, {
 *   modelName: "tiny",
 *   emit: () => {},
 * });
 * assert.deepEqual([...artifacts.keys()], ["tiny.onnx"]);
 * ```
 */
export const onnxTarget: Target<typeof onnxTargetOptions> = defineTarget({
  name: "onnx",
  summary: "ONNX model (<model>.onnx, large weights optionally in <model>.onnx.data)",
  options: onnxTargetOptions,
  emit(input, { externalData, threshold }, ctx): Artifacts {
    const modelName = `${ctx.modelName}.onnx`;
    const module = containsBfpOps(input) ? legalizeBfp(input) : input;
    if (!externalData) return exportOnnxFiles(module, { modelName });
    const location = `${modelName}.data`;
    const files = exportOnnxFiles(module, { modelName, externalData: { location, threshold } });
    // No initializer reached the threshold: the model references no side file, so writing an empty one would only mislead.
    if (files.get(location)?.byteLength === 0) files.delete(location);
    return files;
  },
});
