/**
 * The interpreter against onnxruntime-node on the project's trained CNNs
 * (examples/models/): same inputs, outputs equal within float32 tolerance,
 * and the exported model runs in onnxruntime with the same outputs.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { interpret } from "../ir/interpreter.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import { type Tensor, tensor } from "../ir/tensor.ts";
import { isTensorType } from "../ir/types.ts";
import { compareTensors } from "./tensor_compare.ts";

const MODELS_DIR = new URL("../examples/models/", import.meta.url).pathname;
const models = existsSync(MODELS_DIR) ? readdirSync(MODELS_DIR).filter((f) => f.endsWith(".onnx")).sort() : [];

/** Deterministic pseudo-random inputs in [0, 1) (a small LCG: the test must not depend on Math.random). */
function randomInput(shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 32;
  }
  return tensor("f32", shape, data);
}

async function runOrt(bytes: Uint8Array, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [k, t] of Object.entries(feeds)) {
      ortFeeds[k] = new ort.Tensor("float32", t.data as Float32Array, [...t.shape]);
    }
    const out = await session.run(ortFeeds);
    return Object.fromEntries(
      Object.entries(out).map(([k, t]) => [k, tensor("f32", [...t.dims], t.data as Float32Array)]),
    );
  } finally {
    await session.release();
  }
}

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
    for (const reference of [await runOrt(bytes, feeds), await runOrt(exportOnnx(module), feeds)]) {
      for (const [name, expected] of Object.entries(reference)) {
        assert.equal(compareTensors(ours[name], expected, { rtol: 1e-4, atol: 1e-4 }), null, `output ${name}`);
      }
    }
  });
}
