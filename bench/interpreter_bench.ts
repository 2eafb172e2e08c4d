/**
 * The reference interpreter beside onnxruntime-node on the project's VGG
 * (examples/models/vgg_dense.onnx), batch 100 of MNIST-shaped inputs, in the
 * same run so the ratio survives a noisy machine.
 *
 *   deno bench -A bench/interpreter_bench.ts
 */
import * as ort from "onnxruntime-node";
import { Interpreter } from "../ir/interpreter.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import { tensor } from "../ir/tensor.ts";

const MODEL = new URL("../examples/models/vgg_dense.onnx", import.meta.url).pathname;
const BATCH = 100;
const bytes = Deno.readFileSync(MODEL);
const module = importOnnx(bytes);
inferShapes(module);
const inputName = module.graph.inputs[0].name;
const data = new Float32Array(BATCH * 28 * 28);
for (let i = 0; i < data.length; i++) data[i] = ((i * 2654435761) % 1000) / 1000;
const interpreter = new Interpreter(module);
const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
const ortInput = new ort.Tensor("float32", data, [BATCH, 1, 28, 28]);

Deno.bench({
  name: `interpreter, VGG batch ${BATCH}`,
  group: "vgg",
  baseline: true,
  fn() {
    interpreter.run({ [inputName]: tensor("f32", [BATCH, 1, 28, 28], data) });
  },
});

Deno.bench({
  name: `onnxruntime-node (1 thread), VGG batch ${BATCH}`,
  group: "vgg",
  async fn() {
    await session.run({ [inputName]: ortInput });
  },
});
