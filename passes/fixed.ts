/**
 * `fixed`: lower Conv, Gemm and MatMul layers to fixed point. It is the `bfp`
 * lowering with every exponent known at compile time: each lowered layer's
 * input gets one static exponent per tensor, chosen from the calibration data
 * (the largest magnitude seen, plus optional headroom bits), and the weights
 * one exponent per output channel or per tensor. The ops are the same
 * `ai.bfp` ops (a Quantize with `static_exponent`), so the interpreter's
 * bit-exact kernel, the error analysis and every target serve both; inputs
 * larger than the calibration's saturate to `±(2^(bits-1) - 1)` steps.
 *
 * A pass of its own rather than a `bfp` option: it needs calibration data,
 * takes no block scheme, and its defaults differ (16 bits, a 48-bit
 * accumulator as in a DSP48 slice), so `--list-passes` states it plainly.
 * @module
 */
import { bfpFormat } from "../ir/bfp/format.ts";
import { staticExponentFor } from "../ir/bfp/quantize.ts";
import type { Value } from "../ir/graph.ts";
import { bfpOptions, chooseLayers, floatTwin, foldBeforeLowering, forEachLayer, lowerLayers } from "./bfp.ts";
import { db } from "./analysis/bfp_error.ts";
import { definePass, type Pass } from "./pass.ts";

/** Exponent field of fixed-point formats: it only bounds the static exponents (none is stored at run time). */
export const FIXED_EXPONENT_BITS = 8;

/** Options of `fixed`. */
export const fixedOptions = {
  bits: { kind: "int", default: 16, min: 2, max: 16, doc: "Bits per value, sign included (activations and weights)" },
  headroom: {
    kind: "int",
    default: 0,
    min: 0,
    max: 8,
    doc: "Integer bits above each activation's calibration maximum (room for larger inputs)",
  },
  weights: {
    kind: "enum",
    values: ["per-channel", "per-tensor"],
    default: "per-channel",
    doc: "One weight exponent per output channel, or one per weight tensor",
  },
  rounding: bfpOptions.rounding,
  seed: bfpOptions.seed,
  accumulator: { ...bfpOptions.accumulator, default: 48, doc: "Accumulator bits (saturating; 48 as a DSP48's)" },
  ops: bfpOptions.ops,
  skip: bfpOptions.skip,
  keepLast: bfpOptions.keepLast,
  foldBn: bfpOptions.foldBn,
  biasCorrect: bfpOptions.biasCorrect,
} as const;

/**
 * Lower the chosen layers to fixed point (module header). Needs calibration
 * inputs; the report gets, per layer, the static input exponent and its
 * Q format, and the four-stage error analysis of `bfp`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { Module } from "../ir/module.ts";
 * import { builtinOps } from "../ir/builtin_ops.ts";
 * import { float32Tensor } from "../ir/tensor.ts";
 * import { defaultOptions } from "./options.ts";
 * import { fixedOptions, fixedPass } from "./fixed.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 2] }));
 * const w = g.addConstant("w", float32Tensor([2, 2], [1, 2, 3, 4]), { elem: "f32", shape: [2, 2] });
 * g.outputs.push(g.addOp(new Op({ name: "fc", type: "MatMul", operands: [x, w], results: [new Value("y")] })).result);
 * const ctx = { ops: builtinOps, calibration: { x: float32Tensor([1, 2], [0.5, -3]) }, stat: () => {},
 *   emit: () => {}, log: () => {}, analysis: () => { throw new Error("unused"); } };
 * assert.equal(fixedPass.run(new Module(g), defaultOptions(fixedOptions), ctx), true);
 * assert.equal(g.ops[0].int("static_exponent"), 1); // |x| <= 3 < 2^2: Q2.13 in 16 bits
 * ```
 */
export const fixedPass: Pass<typeof fixedOptions> = definePass({
  name: "fixed",
  summary: "Lower Conv/Gemm/MatMul to fixed point with static exponents from calibration data",
  options: fixedOptions,
  run(module, options, ctx): boolean {
    if (ctx.calibration === null) {
      throw new Error(
        "fixed needs calibration data to choose each activation's exponent (--calib, or calibration in compile())",
      );
    }
    const format = bfpFormat({
      mantissaBits: options.bits,
      exponentBits: FIXED_EXPONENT_BITS,
      rounding: options.rounding,
      seed: options.seed,
    });
    const folded = options.foldBn && foldBeforeLowering(module, ctx);
    const layers = chooseLayers(module.graph, options, "fixed", ctx);
    if (layers.length === 0) return folded;
    // The static exponents from the largest magnitude of each layer's float input, one layer at a time.
    const twin = floatTwin(module, format);
    const amax = new Map<Value, number>();
    try {
      forEachLayer(twin, layers, ctx.calibration, ctx, ({ x }, chunks) => {
        let m = amax.get(x) ?? 0;
        for (const t of chunks) {
          const data = t.data as Float32Array;
          for (let i = 0; i < data.length; i++) m = Math.max(m, Math.abs(data[i]));
        }
        amax.set(x, m);
      });
    } catch (e) {
      // The exponents come from this run: without it there is nothing to lower with.
      throw new Error(`fixed could not run the calibration data: ${e instanceof Error ? e.message : e}`);
    }
    const staticExponents = new Map<Value, number>();
    for (const [x, m] of amax) staticExponents.set(x, staticExponentFor(m, format, options.headroom));
    const spec = {
      format,
      block: 0,
      accumulator: options.accumulator,
      staticExponents,
      perTensorWeights: options.weights === "per-tensor",
      biasCorrect: options.biasCorrect,
    };
    const lowered = lowerLayers(module, layers, spec, twin, ctx);
    ctx.stat("layers-lowered", layers.length);
    ctx.stat("format", `fixed${format.mantissaBits} ${format.rounding}`);
    ctx.stat("weights", options.weights);
    if (lowered.outputSqnr !== null) ctx.stat("output-sqnr-db", db(lowered.outputSqnr));
    if (lowered.biasCorrected > 0) ctx.stat("bias-corrected", lowered.biasCorrected);
    ctx.stat("weight-exponent-bits", lowered.weightExponentBits);
    ctx.stat("layers", lowered.layers);
    return true;
  },
});
