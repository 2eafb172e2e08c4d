import assert from "node:assert/strict";
import { evaluate, evaluateOnnx, type EvaluationResult } from "./evaluate.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { Module } from "../ir/module.ts";
import { OpRegistry } from "../ir/op_def.ts";
import { builtinOps } from "../ir/builtin_ops.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { inferShapes } from "../ir/shape.ts";
import type { Tensor } from "../ir/tensor.ts";
import type { Dim } from "../ir/types.ts";

/** A "classifier" whose scores are its input: y = Relu(x), x of shape `shape` ([batch, classes]). */
function reluClassifier(shape: Dim[] = ["N", 4], extraInput = false): Module {
  const g = new Graph("relu_classifier");
  const x = g.addInput(new Value("x", { elem: "f32", shape }));
  if (extraInput) g.addInput(new Value("mask", { elem: "f32", shape }));
  g.outputs.push(g.addOp(new Op({ name: "relu", type: "Relu", operands: [x], results: [new Value("y")] })).result);
  const m = new Module(g);
  inferShapes(m);
  return m;
}

/** Seven samples of four classes; the argmax of each row is `ARGMAX` (row 5 ties between 1 and 3: lowest wins). */
const SCORES = [
  [0.9, 0.1, 0, 0],
  [0, 2, 1, 0],
  [0, 0, 0, 3],
  [-1, -2, 0.5, -3],
  [0, 0, 0, 7],
  [0, 4, 0, 4],
  [1, 0, 0, 0],
];
const ARGMAX = [0, 1, 3, 2, 3, 1, 0];
const INPUTS: Tensor = { dtype: "f32", shape: [7, 4], data: Float32Array.from(SCORES.flat()) };
/** Labels matching ARGMAX except samples 2 and 6: 5 of 7 correct. */
const LABELS: Tensor = { dtype: "i64", shape: [7], data: BigInt64Array.from([0, 1, 2, 2, 3, 1, 2], BigInt) };
const EXPECTED: EvaluationResult = { accuracy: 5 / 7, correct: 5, total: 7 };

Deno.test("evaluate() counts top-1 hits with ties going to the lowest class, for any batch size", () => {
  assert.deepEqual(ARGMAX.filter((c, i) => c === Number(LABELS.data[i])).length, 5);
  for (const batchSize of [undefined, 1, 3, 7, 100]) {
    assert.deepEqual(evaluate(reluClassifier(), INPUTS, LABELS, { batchSize }), EXPECTED, `batch ${batchSize}`);
  }
  const i32: Tensor = { dtype: "i32", shape: [7], data: Int32Array.from(ARGMAX) };
  assert.deepEqual(evaluate(reluClassifier(), INPUTS, i32), { accuracy: 1, correct: 7, total: 7 });
});

Deno.test("evaluate() pads the last batch for a model with a fixed batch size and scores only real samples", () => {
  // Batch fixed at 3: batches of 3, 3 and 1 (+2 zero rows whose argmax, 0, must not be counted).
  assert.deepEqual(evaluate(reluClassifier([3, 4]), INPUTS, LABELS, { batchSize: 5 }), EXPECTED);
});

Deno.test("evaluate() reports its progress after each batch, the fixed batch's padding not counted", () => {
  const calls: [number, number][] = [];
  const onProgress = (done: number, total: number) => calls.push([done, total]);
  assert.deepEqual(evaluate(reluClassifier(), INPUTS, LABELS, { batchSize: 3, onProgress }), EXPECTED);
  assert.deepEqual(calls, [[3, 7], [6, 7], [7, 7]]);
  calls.length = 0;
  evaluate(reluClassifier([4, 4]), INPUTS, LABELS, { onProgress });
  assert.deepEqual(calls, [[4, 7], [7, 7]]);
});

Deno.test("evaluate() uses the given op registry", () => {
  // A registry whose Relu returns all zeros: every argmax is class 0.
  const zeroRelu = new OpRegistry(builtinOps.all().filter((d) => d.type !== "Relu"));
  zeroRelu.add({
    type: "Relu",
    interpret: (_op, [x]) => [{ dtype: "f32", shape: x!.shape, data: new Float32Array(x!.data.length) }],
  });
  const labels: Tensor = { dtype: "i32", shape: [7], data: new Int32Array([0, 0, 0, 1, 1, 1, 1]) };
  assert.deepEqual(evaluate(reluClassifier(), INPUTS, labels, { registry: zeroRelu }), {
    accuracy: 3 / 7,
    correct: 3,
    total: 7,
  });
});

Deno.test("evaluateOnnx() agrees with evaluate() through onnxruntime, for dynamic and fixed batch sizes", async () => {
  for (const shape of [["N", 4], [3, 4]] as Dim[][]) {
    const bytes = exportOnnx(reluClassifier(shape));
    for (const batchSize of [undefined, 2]) {
      assert.deepEqual(await evaluateOnnx(bytes, INPUTS, LABELS, { batchSize }), EXPECTED, `[${shape}] ${batchSize}`);
    }
  }
});

/** Every bad data set, with the message both evaluate() and evaluateOnnx() give. */
const BAD_DATA: [string, Tensor, Tensor, string][] = [
  ["count mismatch", INPUTS, { ...LABELS, shape: [6], data: LABELS.data.slice(0, 6) }, "7 inputs but 6 labels"],
  [
    "wrong sample shape",
    { dtype: "f32", shape: [7, 2, 2], data: INPUTS.data },
    LABELS,
    'input "x" must have shape [N,4], found [7,2,2]',
  ],
  [
    "wrong class count",
    { dtype: "f32", shape: [14, 2], data: INPUTS.data },
    { ...LABELS, shape: [14], data: new BigInt64Array(14) },
    'input "x" must have shape [N,4], found [14,2]',
  ],
  [
    "wrong dtype",
    { dtype: "f64", shape: [7, 4], data: Float64Array.from(SCORES.flat()) },
    LABELS,
    'input "x" must be f32, found f64',
  ],
  [
    "float labels",
    INPUTS,
    { dtype: "f32", shape: [7], data: new Float32Array(7) },
    "labels must be i64 or i32, found f32",
  ],
  ["label rank", INPUTS, { dtype: "i64", shape: [7, 1], data: LABELS.data }, "labels must have shape [N], found [7,1]"],
  [
    "scalar inputs",
    { dtype: "f32", shape: [], data: new Float32Array(1) },
    LABELS,
    "inputs are a scalar, expected [N, ...] samples",
  ],
  [
    "label past the classes",
    INPUTS,
    { dtype: "i64", shape: [7], data: BigInt64Array.from([0, 1, 2, 2, 3, 1, 4], BigInt) },
    "label 4 of sample 6 is outside [0, 4): the model scores 4 classes",
  ],
  [
    "negative label",
    INPUTS,
    { dtype: "i32", shape: [7], data: Int32Array.from([0, -1, 2, 2, 3, 1, 0]) },
    "label -1 of sample 1 is outside [0, 4): the model scores 4 classes",
  ],
  [
    "empty",
    { dtype: "f32", shape: [0, 4], data: new Float32Array(0) },
    { dtype: "i64", shape: [0], data: new BigInt64Array(0) },
    "the data set is empty",
  ],
];

Deno.test("evaluate() and evaluateOnnx() reject bad data sets with one line naming the problem", async () => {
  const module = reluClassifier();
  const bytes = exportOnnx(module);
  for (const [what, inputs, labels, message] of BAD_DATA) {
    assert.throws(() => evaluate(module, inputs, labels), { message: `Cannot evaluate: ${message}` }, what);
    await assert.rejects(evaluateOnnx(bytes, inputs, labels), { message: `Cannot evaluate: ${message}` }, what);
  }
  for (const batchSize of [0, 2.5]) {
    const message = `Cannot evaluate: batch size must be a positive integer, found ${batchSize}`;
    assert.throws(() => evaluate(module, INPUTS, LABELS, { batchSize }), { message });
    await assert.rejects(evaluateOnnx(bytes, INPUTS, LABELS, { batchSize }), { message });
  }
});

Deno.test("evaluate() and evaluateOnnx() reject a model with two inputs to feed", async () => {
  const module = reluClassifier(["N", 4], true);
  assert.throws(() => evaluate(module, INPUTS, LABELS), {
    message: 'Cannot evaluate: the model has 2 inputs without defaults ("x", "mask"); only one can take the data set',
  });
  await assert.rejects(evaluateOnnx(exportOnnx(module), INPUTS, LABELS), {
    message: 'Cannot evaluate: the model has 2 inputs ("x", "mask"); only one can take the data set',
  });
});

Deno.test("evaluate() rejects a first output too small to hold one score row per sample", () => {
  // ReduceMax over the class axis leaves [N] (one "class" per row): fine; over both axes leaves a scalar.
  const g = new Graph();
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4] }));
  g.outputs.push(
    g.addOp(new Op({ name: "max", type: "ReduceMax", operands: [x], results: [new Value("m")] }))
      .result,
  );
  assert.throws(() => evaluate(new Module(g), INPUTS, LABELS, { batchSize: 3 }), {
    message: "Cannot evaluate: the first output has shape [1,1], expected [3, classes]",
  });
});
