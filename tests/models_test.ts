/**
 * The interpreter against onnxruntime-node on the project's trained CNNs
 * (examples/models/): same inputs, outputs equal within float32 tolerance,
 * and the exported model runs in onnxruntime with the same outputs.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { interpret } from "../ir/interpreter.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import type { Tensor } from "../ir/tensor.ts";
import { runOnnxruntime } from "../driver/onnxruntime.ts";
import { isTensorType } from "../ir/types.ts";
import { compareTensors, randomInput } from "./tensor_compare.ts";

const MODELS_DIR = new URL("../examples/models/", import.meta.url).pathname;
const models = existsSync(MODELS_DIR) ? readdirSync(MODELS_DIR).filter((f) => f.endsWith(".onnx")).sort() : [];

for (const file of models) {
  Deno.test(`interpret() equals onnxruntime on ${file}, before and after export`, async () => {
    const bytes = Deno.readFileSync(join(MODELS_DIR, file));
    const module = importOnnx(bytes);
    inferShapes(module);
    const feeds: Record<string, Tensor> = {};
    module.graph.inputs.filter((v) => v.constant === null).forEach((v, i) => {
      assert.ok(isTensorType(v.type) && v.type.shape !== null, `input ${v.name} has a shape`);
      const shape = v.type.shape.map((d) => (typeof d === "number" ? d : 8)); // batch of 8
      feeds[v.name] = randomInput(shape, 17 + i);
    });
    const ours = interpret(module, feeds);
    for (const reference of [await runOnnxruntime(bytes, feeds), await runOnnxruntime(exportOnnx(module), feeds)]) {
      for (const [name, expected] of Object.entries(reference)) {
        assert.equal(compareTensors(ours[name], expected, { rtol: 1e-4, atol: 1e-4 }), null, `output ${name}`);
      }
    }
  });
}
