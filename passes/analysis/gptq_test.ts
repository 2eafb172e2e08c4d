/** GPTQ weight rounding: its Gram matrices against convolutions run by the interpreter, its rounding on the grid, its gain. */
import assert from "node:assert/strict";
import type { Attribute } from "../../ir/attributes.ts";
import { bfpFormat } from "../../ir/bfp/format.ts";
import { dequantizeWeights, quantizeWeights } from "../../ir/bfp/quantize.ts";
import { builtinOps } from "../../ir/builtin_ops.ts";
import { Graph, Op, Value } from "../../ir/graph.ts";
import { Interpreter } from "../../ir/interpreter.ts";
import { Module } from "../../ir/module.ts";
import { float32Tensor, type Tensor } from "../../ir/tensor.ts";
import { mulberry32 } from "../../tests/tensor_compare.ts";
import { gptqRound, inputGram } from "./gptq.ts";

const ints = (value: number[]): Attribute => ({ kind: "ints", value });

/** A Conv with these attributes and weights, run by the interpreter on `x`. */
function runConv(attributes: [string, Attribute][], x: Tensor, w: Tensor): Tensor {
  const g = new Graph("g");
  const xv = g.addInput(new Value("x", { elem: "f32", shape: [...x.shape] }));
  const wv = g.addConstant("w", w, { elem: "f32", shape: [...w.shape] });
  g.outputs.push(
    g.addOp(new Op({ name: "c", type: "Conv", operands: [xv, wv], results: [new Value("y")], attributes }))
      .result,
  );
  return new Interpreter(new Module(g), { registry: builtinOps }).run({ x }).y;
}

Deno.test("inputGram: a grouped, strided, padded, dilated Conv's patches, as the interpreter's Conv reads them", () => {
  const random = mulberry32(3);
  const attributes: [string, Attribute][] = [
    ["group", { kind: "int", value: 2 }],
    ["strides", ints([2, 1])],
    ["pads", ints([1, 2, 0, 1])],
    ["dilations", ints([1, 2])],
  ];
  const weightShape = [4, 3, 2, 3]; // 2 groups of 3 input channels, 2 outputs each
  const op = new Op({ name: "c", type: "Conv", operands: [], results: [new Value("y")], attributes });
  // Two chunks of samples, as a calibration run gives them.
  const chunks = [[2, 6, 7, 8], [1, 6, 7, 8]].map((s) =>
    float32Tensor(s, Float32Array.from({ length: s.reduce((a, b) => a * b) }, () => random() * 2 - 1))
  );
  const grams = inputGram({ op, kind: "conv", weightShape, group: 2 }, chunks)!;
  const k = 18;
  for (let g = 0; g < 2; g++) {
    // Column j of group g's patches: the output of a one-hot filter at j, in the group's first output channel.
    const columns = Array.from({ length: k }, (_, j) => {
      const w = new Float32Array(4 * k);
      w[2 * g * k + j] = 1;
      return chunks.flatMap((x) => {
        const y = runConv(attributes, x, float32Tensor(weightShape, w));
        const [n, , ...spatial] = y.shape, plane = spatial.reduce((a, b) => a * b);
        return Array.from(
          { length: n },
          (_, i) => [...y.data.slice((i * 4 + 2 * g) * plane, (i * 4 + 2 * g + 1) * plane)],
        )
          .flat() as number[];
      });
    });
    for (let a = 0; a < k; a++) {
      for (let b = 0; b < k; b++) {
        const want = columns[a].reduce((s, v, i) => s + v * columns[b][i], 0);
        // Float32 products: within float32 rounding of the sum of magnitudes.
        const scale = columns[a].reduce((s, v, i) => s + Math.abs(v * columns[b][i]), 0);
        assert.ok(Math.abs(grams[g][a * k + b] - want) <= 1e-6 * scale + 1e-30, `group ${g} [${a}, ${b}]`);
      }
    }
  }
});

/** Rows of K correlated inputs (a few shared factors plus a little noise of their own). */
function correlatedRows(count: number, k: number, seed: number): Float32Array {
  const random = mulberry32(seed);
  const mix = mulberry32(99); // the same factor loadings for every call
  const loadings = Array.from({ length: 3 * k }, () => mix() * 2 - 1);
  const out = new Float32Array(count * k);
  for (let r = 0; r < count; r++) {
    const f = [0, 1, 2].map(() => random() * 2 - 1);
    for (let j = 0; j < k; j++) {
      out[r * k + j] = f[0] * loadings[j] + f[1] * loadings[k + j] + f[2] * loadings[2 * k + j] + 0.05 * random();
    }
  }
  return out;
}

/** `‖(W − Q) X‖² / ‖W X‖²` in dB (negated: the output SQNR) over rows of X. */
function outputSqnr(w: Float32Array, q: Float32Array, o: number, x: Float32Array, k: number): number {
  let signal = 0, noise = 0;
  for (let r = 0; r < x.length / k; r++) {
    for (let i = 0; i < o; i++) {
      let y = 0, e = 0;
      for (let j = 0; j < k; j++) {
        [y, e] = [y + w[i * k + j] * x[r * k + j], e + (w[i * k + j] - q[i * k + j]) * x[r * k + j]];
      }
      [signal, noise] = [signal + y * y, noise + e * e];
    }
  }
  return 10 * Math.log10(signal / noise);
}

Deno.test("gptqRound: on the nearest rounding's grid, and well above it in output SQNR on held-out correlated inputs", () => {
  const o = 6, k = 24;
  const random = mulberry32(5);
  const weight = Float32Array.from({ length: o * k }, () => random() * 2 - 1);
  const op = new Op({ name: "fc", type: "Gemm", operands: [], results: [new Value("y")] });
  const calibration = correlatedRows(400, k, 1), heldOut = correlatedRows(400, k, 2);
  const grams = inputGram({ op, kind: "gemm", weightShape: [o, k], group: 1 }, [float32Tensor([400, k], calibration)])!;
  // Per row (block 0) and in MX blocks of 8 input channels.
  for (const block of [0, 8]) {
    const format = bfpFormat({ mantissaBits: 5 });
    const q = gptqRound(weight, [o, k], 1, grams, format, block);
    const requantized = quantizeWeights(q, [o, k], format, block);
    assert.deepEqual(dequantizeWeights(requantized.mantissas, requantized.exponents, [o, k], format, block), q);
    const nearest = quantizeWeights(weight, [o, k], format, block);
    const rounded = dequantizeWeights(nearest.mantissas, nearest.exponents, [o, k], format, block);
    const gain = outputSqnr(weight, q, o, heldOut, k) - outputSqnr(weight, rounded, o, heldOut, k);
    assert.ok(gain > 6, `block ${block}: ${gain.toFixed(2)} dB`);
  }
});

Deno.test("gptqRound: each group is fitted on its own Gram matrix, and a dead input keeps nearest rounding", () => {
  const format = bfpFormat({ mantissaBits: 3 });
  // Group 0: two inputs that always agree (w0 + w1 is what counts); group 1: the second input never varies.
  const grams = [Float64Array.of(1, 1, 1, 1), Float64Array.of(1, 0, 0, 0)];
  const q = gptqRound(Float32Array.of(1.3, 1.3, 1.3, 1.3), [2, 2], 2, grams, format, 0);
  assert.deepEqual([...q], [1.5, 1, 1.5, 1.5]);
});
