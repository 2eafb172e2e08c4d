/**
 * Mixed-precision width choice: the knapsack's unit rounding never costs the budget it was given; the measured
 * output sensitivity equals the brute-force figure.
 */
import assert from "node:assert/strict";
import { bfpFormat } from "../../ir/bfp/format.ts";
import {
  dequantizeActivations,
  dequantizeWeights,
  quantizeActivations,
  quantizeWeights,
} from "../../ir/bfp/quantize.ts";
import { builtinOps } from "../../ir/builtin_ops.ts";
import { Graph, Op, Value } from "../../ir/graph.ts";
import { Interpreter } from "../../ir/interpreter.ts";
import { Module } from "../../ir/module.ts";
import { inferShapes } from "../../ir/shape.ts";
import { float32Tensor, shapeSize, type Tensor, tensor } from "../../ir/tensor.ts";
import { mulberry32 } from "../../tests/tensor_compare.ts";
import { chooseWidths, measuredOutputNsr } from "./bfp_precision.ts";

const WIDTHS = [4, 5, 6, 7, 8, 9, 10, 11, 12];
// An MLP's three layers (weights 200,960 / 32,896 / 1,290) with NSR proportional to the weight count: one width
// everywhere is the exact optimum at an integer average (equal marginal NSR per bit).
const COST = [200_960, 32_896, 1_290];
const NSR = COST.map((c) => WIDTHS.map((w) => c * 4 ** -w));
const average = (chosen: number[]): number =>
  chosen.reduce((s, i, l) => s + COST[l] * WIDTHS[i], 0) / COST.reduce((a, b) => a + b, 0);

Deno.test("chooseWidths: one width everywhere stays on offer at an integer average despite the unit rounding", () => {
  for (const bits of [5, 6, 8, 11]) {
    const chosen = chooseWidths(NSR, COST, WIDTHS, { averageBits: bits, targetNsr: 0 });
    assert.deepEqual(chosen.map((i) => WIDTHS[i]), [bits, bits, bits], `average ${bits}`);
  }
});

Deno.test("chooseWidths: the exact average never exceeds the budget, and beats one width everywhere", () => {
  // Every fractional budget: within it, and never worse than the best single width that fits.
  for (let bits = 4; bits <= 12; bits += 0.37) {
    const c = chooseWidths(NSR, COST, WIDTHS, { averageBits: bits, targetNsr: 0 });
    assert.ok(average(c) <= bits + 1e-12, `${bits}: ${average(c)}`);
    const uniform = WIDTHS.filter((w) => w <= bits).at(-1)!;
    const sum = (ch: number[]): number => ch.reduce((s, i, l) => s + NSR[l][i], 0);
    assert.ok(sum(c) <= sum(COST.map(() => WIDTHS.indexOf(uniform))) * (1 + 1e-12), `${bits}`);
  }
});

Deno.test("chooseWidths: with a target, the cheapest choice that reaches it and truly fits", () => {
  const target = NSR.reduce((s, row) => s + row[WIDTHS.indexOf(8)], 0); // exactly 8 bits everywhere
  const chosen = chooseWidths(NSR, COST, WIDTHS, { averageBits: 0, targetNsr: target * 1.000001 });
  assert.deepEqual(chosen.map((i) => WIDTHS[i]), [8, 8, 8]);
  // Within an average too small for the target: the least NSR there.
  const capped = chooseWidths(NSR, COST, WIDTHS, { averageBits: 6, targetNsr: target });
  assert.deepEqual(capped.map((i) => WIDTHS[i]), [6, 6, 6]);
});

Deno.test("measuredOutputNsr: each layer's share equals the output NSR of the model with only that layer converted", () => {
  // x -> c1 (3x3) -> Relu -> c2 (1x1) -> y, and the Relu's output as a second graph output (computed before c2, so
  // c2's conversion leaves it exact): the forked run must count it as signal without noise.
  const random = mulberry32(7);
  const values = (n: number) => Float32Array.from({ length: n }, () => random() * 2 - 1);
  const g = new Graph("g");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [2, 4, 5, 5] }));
  const conv = (name: string, input: Value, shape: number[], pads: number) => {
    const w = g.addConstant(`${name}_w`, float32Tensor(shape, values(shapeSize(shape))), { elem: "f32", shape });
    return g.addOp(
      new Op({
        name,
        type: "Conv",
        operands: [input, w],
        results: [new Value(`${name}_y`)],
        attributes: [["pads", { kind: "ints", value: [pads, pads, pads, pads] }]],
      }),
    );
  };
  const c1 = conv("c1", x, [6, 4, 3, 3], 1);
  const relu = g.addOp(new Op({ name: "r", type: "Relu", operands: [c1.result], results: [new Value("h")] }));
  const c2 = conv("c2", relu.result, [3, 6, 1, 1], 0);
  g.outputs.push(relu.result, c2.result);
  const module = new Module(g);
  inferShapes(module);
  const feeds = { x: float32Tensor([2, 4, 5, 5], values(200)) };
  const format = bfpFormat({ mantissaBits: 3 });
  const layers = [c1, c2].map((op) => {
    const w = op.operand(1)!.constant!;
    return {
      op,
      kind: "conv" as const,
      weight: w.data as Float32Array,
      weightShape: [...w.shape],
      group: 1,
      axis: 1,
      format,
      block: 0,
    };
  });
  const converted = (t: Tensor): Float32Array => {
    const q = quantizeWeights(t.data as Float32Array, t.shape, format, 0);
    return dequantizeWeights(q.mantissas, q.exponents, t.shape, format, 0);
  };
  const nsrOf = (out: Record<string, Tensor>, reference: Record<string, Tensor>): number => {
    let signal = 0, noise = 0;
    for (const name of ["h", "c2_y"]) {
      const a = reference[name].data as Float32Array, b = out[name].data as Float32Array;
      a.forEach((v, i) => [signal, noise] = [signal + v * v, noise + (v - b[i]) ** 2]);
    }
    return noise / signal;
  };
  const reference = new Interpreter(module).run(feeds);
  // Brute force: the model with one layer's weights replaced, or with its input (the graph input) converted.
  const withWeights = (op: Op): number => {
    const w = op.operand(1)!, original = w.constant!;
    w.constant = tensor("f32", original.shape, converted(original));
    try {
      return nsrOf(new Interpreter(module).run(feeds), reference);
    } finally {
      w.constant = original;
    }
  };
  const blocking = { block: 0, group: 1, axis: 1 };
  const xq = quantizeActivations(feeds.x.data as Float32Array, feeds.x.shape, format, blocking, "X");
  const convertedX = tensor("f32", feeds.x.shape, dequantizeActivations(xq, feeds.x.shape, format, blocking));
  const inputNsr = nsrOf(new Interpreter(module).run({ x: convertedX }), reference);
  const close = (got: number, want: number) => assert.ok(Math.abs(got - want) <= 1e-9 * want, `${got} vs ${want}`);
  const weights = measuredOutputNsr(module, layers, feeds, builtinOps, false, "weights");
  close(weights[0], withWeights(c1));
  close(weights[1], withWeights(c2));
  assert.ok(weights[0] > 0 && weights[1] > 0);
  close(measuredOutputNsr(module, layers, feeds, builtinOps, false, "input")[0], inputNsr);
});
