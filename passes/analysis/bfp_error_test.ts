import assert from "node:assert/strict";
import { readNpyFile } from "../../data/npy.ts";
import { builtinOps } from "../../ir/builtin_ops.ts";
import { Interpreter } from "../../ir/interpreter.ts";
import { importOnnxFile } from "../../ir/onnx/import.ts";
import { tensor } from "../../ir/tensor.ts";
import { ChannelErrorSum, ChunkedRun, meanChannelError, sampleRange } from "./bfp_error.ts";

const MODELS = new URL("../../examples/models/", import.meta.url).pathname;

Deno.test("ChunkedRun gives the interpreter's bits in chunks of 3 of 7 samples and frees each value after its last use", () => {
  const module = importOnnxFile(`${MODELS}vgg_sparse.onnx`);
  const all = readNpyFile(`${MODELS}mnist_calib_x.npy`);
  const inner = all.data.length / all.shape[0];
  const x = tensor("f32", [7, ...all.shape.slice(1)], (all.data as Float32Array).slice(0, 7 * inner));
  const input = module.graph.inputs[0].name;
  const whole = new Interpreter(module, { registry: builtinOps }).run({ [input]: x });
  const run = new ChunkedRun(module, { [input]: x }, 3, builtinOps);
  assert.equal(run.chunks, 3);
  run.finish();
  for (const v of module.graph.outputs) {
    const parts = run.values(v);
    assert.deepEqual(parts.map((t) => t.shape[0]), [3, 3, 1]);
    const joined = new Float32Array(parts.reduce((n, t) => n + t.data.length, 0));
    let at = 0;
    for (const t of parts) joined.set(t.data as Float32Array, (at += t.data.length) - t.data.length);
    assert.deepEqual(joined, whole[v.name].data);
  }
  const intermediate = module.graph.ops[0].result;
  assert.throws(() => run.values(intermediate), /is not held/);
});

Deno.test("ChannelErrorSum over chunks equals meanChannelError over the whole, channels on axis 1 or last", () => {
  const ref = tensor("f32", [3, 2, 2], Float32Array.from({ length: 12 }, (_, i) => Math.sin(i) * 3));
  const approx = tensor("f32", [3, 2, 2], Float32Array.from({ length: 12 }, (_, i) => Math.cos(i)));
  for (const last of [false, true]) {
    const sum = new ChannelErrorSum(last);
    for (const [a, b] of [[0, 2], [2, 3]]) sum.add(sampleRange(ref, a, b), sampleRange(approx, a, b));
    assert.deepEqual(sum.mean(), meanChannelError(ref, approx, last));
  }
  // By hand, channels on the last axis: channel 0 holds elements 0, 2, ..., 10.
  const expected = [0, 1].map((c) => {
    let s = 0;
    for (let i = c; i < 12; i += 2) s += Math.fround(Math.sin(i) * 3) - Math.fround(Math.cos(i));
    return s / 6;
  });
  assert.deepEqual([...meanChannelError(ref, approx, true)], expected);
});
