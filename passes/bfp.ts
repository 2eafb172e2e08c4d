/**
 * `bfp`: lower Conv, Gemm and MatMul layers to block floating point. Weights
 * become BFP constants offline (mantissas typed `bfp<...>` + `i8` exponents),
 * each lowered layer's input gets an `ai.bfp.Quantize` that computes its
 * exponents at run time, and the layer becomes `ai.bfp.Conv`/`ai.bfp.Gemm`,
 * whose bit-exact integer kernel (`ir/bfp/kernel.ts`) is the golden model.
 * A MatMul on `[..., K]` activations with a constant `[K, O]` weight (a
 * channels-last Linear on `[N, H, W, C]`, a transformer's on `[N, T, C]`)
 * becomes an `ai.bfp.Gemm` whose rows are its samples, blocked along K.
 *
 * Outputs return to float32: the ops between two lowered layers (ReLU,
 * pooling, BatchNormalization, Add, Concat, ...) are float ops, and the next
 * layer's `Quantize` re-blocks its input exactly as re-blocking the output
 * would (leading-one detect on the block maximum, rounding shift, clamp), so
 * an output kept in BFP would only move that step, not remove it.
 * @module
 */
import { attr, type Attribute } from "../ir/attributes.ts";
import {
  ACCUMULATOR_BITS,
  BFP_ROUNDINGS,
  type BfpExponentRule,
  type BfpFormat,
  bfpFormat,
  bfpStorage,
  exponentRange,
  productBits,
} from "../ir/bfp/format.ts";
import { BFP_DOMAIN, bfpElementType, bfpLayerPlan } from "../ir/bfp/plan.ts";
import { dequantizeWeights, quantizeWeights } from "../ir/bfp/quantize.ts";
import { type Graph, Op, Value } from "../ir/graph.ts";
import { Module } from "../ir/module.ts";
import { cloneGraph, eraseConstantIfUnused, insertBefore, replaceConstant } from "../ir/rewriter.ts";
import { shapeSize, type Tensor, tensor, toFloat64 } from "../ir/tensor.ts";
import { isTensorType, type TensorType } from "../ir/types.ts";
import {
  ChannelErrorSum,
  CHUNK_SAMPLES,
  ChunkedRun,
  db,
  layerErrorStats,
  PowerSum,
  sampleFeeds,
} from "./analysis/bfp_error.ts";
import {
  blocksPay,
  chooseWidths,
  conversionNsr,
  expectedClipped,
  inputBlocking,
  measuredOutputNsr,
  type PrecisionLayer,
  withMantissa,
} from "./analysis/bfp_precision.ts";
import { GPTQ_MAX_COLUMNS, GPTQ_MIN_ROWS_PER_COLUMN, gptqRound, gramColumns, inputGram } from "./analysis/gptq.ts";
import { foldBatchNorms } from "./fold_bn.ts";
import { definePass, type Pass, type PassContext, type StatValue } from "./pass.ts";

/** Options of `bfp`. */
export const bfpOptions = {
  mantissa: { kind: "int", default: 8, min: 2, max: 16, doc: "Mantissa bits, sign included" },
  exponent: { kind: "int", default: 5, min: 2, max: 8, doc: "Shared exponent bits (bias 2^(E-1)-1)" },
  rounding: {
    kind: "enum",
    values: BFP_ROUNDINGS,
    default: "nearest-even",
    doc: "Rounding of every right shift (quantization, bias alignment, accumulator alignment)",
  },
  exponentRule: {
    kind: "enum",
    values: ["floor", "never-clamp"],
    default: "floor",
    doc: "floor(log2 max) (MX; the block maximum may be clamped) or one higher when it would be",
  },
  seed: { kind: "int", default: 0, min: 0, doc: "Seed of stochastic rounding" },
  scheme: {
    kind: "enum",
    values: ["auto", "per-channel", "mx"],
    default: "auto",
    doc: "per-channel: a block per weight row and per input sample; mx: blocks of `block` input channels; " +
      "auto: mx on the layers where calibration data shows the blocks pay for their exponents, else per-channel",
  },
  block: { kind: "int", default: 32, min: 1, doc: "Channels per block with scheme=mx (and where auto picks blocks)" },
  precision: {
    kind: "enum",
    values: ["auto", "uniform"],
    default: "auto",
    doc: "auto: with calibration data, mixed precision averaging `mantissa` bits (widths from its measured noise, " +
      "as avg-mantissa=mantissa), without data every layer at `mantissa`; uniform: every layer at `mantissa`",
  },
  avgMantissa: {
    kind: "number",
    optional: true,
    min: 2,
    max: 16,
    doc: "Mixed precision (needs calibration): per-layer widths whose weight-weighted average is at most this",
  },
  targetSqnr: {
    kind: "number",
    optional: true,
    min: 0,
    doc: "Mixed precision (needs calibration): the narrowest widths whose predicted output SQNR (dB) reaches this",
  },
  sensitivitySamples: {
    kind: "int",
    default: 8,
    min: 0,
    doc: "Mixed precision: calibration samples (the first ones) on which each layer's effect on the model output " +
      "is measured (the layers after it run once per layer); 0 models the output noise as the sum of the layers' " +
      "conversion noise",
  },
  mantissaMin: { kind: "int", default: 4, min: 2, max: 16, doc: "Narrowest width mixed precision may choose" },
  mantissaMax: { kind: "int", default: 12, min: 2, max: 16, doc: "Widest width mixed precision may choose" },
  gptq: {
    kind: "bool",
    default: true,
    doc: "With calibration data, round each layer's weights by GPTQ: column by column, each rounding error fed into " +
      "the columns not yet rounded as the calibration inputs correlate, to minimize the layer's output error (same " +
      "grid as nearest rounding; layers with more than 4,096 weights per output keep nearest rounding)",
  },
  biasCorrect: {
    kind: "bool",
    default: true,
    doc: "With calibration data, add each layer's mean output error per channel (float model minus lowered " +
      "model, layer by layer) to its bias before the bias is aligned, if corrections fitted on the first half of " +
      "the samples raise the output SQNR on the second (needs 2 samples)",
  },
  accumulator: {
    kind: "int",
    default: 32,
    min: ACCUMULATOR_BITS.min,
    max: ACCUMULATOR_BITS.max,
    doc: "Accumulator bits (saturating)",
  },
  ops: { kind: "list", default: ["Conv", "Gemm", "MatMul"], doc: "Op types to lower" },
  skip: { kind: "list", default: [], doc: "Op names left in float" },
  keepLast: { kind: "bool", default: false, doc: "Leave the last lowered-able layer (the classifier) in float" },
  foldBn: {
    kind: "bool",
    default: true,
    doc: "Fold BatchNormalization into the preceding Conv/Gemm/MatMul first (as fold-bn), so the layers absorb it",
  },
} as const;

/** A layer a lowering pass can lower: its float weights as rows `[O, ...]` and the op's geometry. */
export interface Candidate {
  /** The float layer. */
  readonly op: Op;
  /** What it becomes. */
  readonly kind: "conv" | "gemm";
  /** Its input (`[N, C, ...spatial]` for a Conv, `[..., K]` for a Gemm/MatMul, whose rows are samples). */
  readonly x: Value;
  /** Weights `[O, Cg, ...kernel]` (Conv) or `[O, K]` (Gemm/MatMul, transposes and alpha applied). */
  readonly weight: Float32Array;
  /** The shape of {@linkcode weight}. */
  readonly weightShape: number[];
  /** Bias `[O]` (beta applied), or null. */
  readonly bias: Float32Array | null;
  /** Channel groups. */
  readonly group: number;
}

const SUPPORTED: readonly string[] = bfpOptions.ops.default;

/**
 * Lower the chosen layers to BFP (module header). With calibration inputs
 * the report gets, per layer, the SQNR of the four stages of the error model
 * (input conversion, weight conversion, multiply-accumulate, output
 * conversion), the predicted output SQNR from the first two, and the SQNR of
 * the layer's output inside the fully lowered model.
 *
 * @example Lower a Gemm
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { Module } from "../ir/module.ts";
 * import { builtinOps } from "../ir/builtin_ops.ts";
 * import { float32Tensor } from "../ir/tensor.ts";
 * import { defaultOptions } from "./options.ts";
 * import { bfpOptions, bfpPass } from "./bfp.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4] }));
 * const w = g.addConstant("w", float32Tensor([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]), { elem: "f32", shape: [2, 4] });
 * g.outputs.push(g.addOp(new Op({ name: "fc", type: "Gemm", operands: [x, w], results: [new Value("y")],
 *   attributes: [["transB", { kind: "int", value: 1 }]] })).result);
 * const ctx = { ops: builtinOps, calibration: null, stat: () => {}, emit: () => {}, log: () => {},
 *   analysis: () => { throw new Error("unused"); } };
 * assert.equal(bfpPass.run(new Module(g), defaultOptions(bfpOptions), ctx), true);
 * assert.deepEqual(g.ops.map((op) => op.qualifiedType), ["ai.bfp.Quantize", "ai.bfp.Gemm"]);
 * ```
 */
export const bfpPass: Pass<typeof bfpOptions> = definePass({
  name: "bfp",
  summary: "Lower Conv/Gemm/MatMul to block floating point (bit-exact integer golden model)",
  options: bfpOptions,
  run(module, options, ctx): boolean {
    const format = bfpFormat({
      mantissaBits: options.mantissa,
      exponentBits: options.exponent,
      rounding: options.rounding,
      exponentRule: options.exponentRule as BfpExponentRule,
      seed: options.seed,
    });
    if (options.mantissaMin > options.mantissaMax) {
      throw new Error(`mantissa-min=${options.mantissaMin} is above mantissa-max=${options.mantissaMax}`);
    }
    const explicit = options.avgMantissa !== undefined || options.targetSqnr !== undefined;
    if (explicit && options.precision === "uniform") {
      throw new Error(
        `precision=uniform conflicts with ${options.avgMantissa !== undefined ? "avg-mantissa" : "target-sqnr"}`,
      );
    }
    // precision=auto with data: mixed widths averaging `mantissa`, offered widths that include it.
    const byDefault = !explicit && options.precision === "auto" && ctx.calibration !== null;
    const mixed = explicit || byDefault;
    const widthRange = byDefault
      ? {
        avgMantissa: options.mantissa,
        mantissaMin: Math.min(options.mantissaMin, options.mantissa),
        mantissaMax: Math.max(options.mantissaMax, options.mantissa),
      }
      : {};
    const block = options.scheme === "mx" ? options.block : 0;
    const folded = options.foldBn && foldBeforeLowering(module, ctx);
    const layers = chooseLayers(module.graph, options, "bfp", ctx);
    if (layers.length === 0) return folded;
    if (explicit && ctx.calibration === null) {
      ctx.emit(
        "warning",
        `avg-mantissa and target-sqnr need calibration data (--calib); every layer gets mantissa=${format.mantissaBits}`,
      );
    }
    const twin = ctx.calibration === null ? null : floatTwin(module, format);
    const choice = twin === null
      ? null
      : chooseFormats(layers, twin, format, { ...options, ...widthRange, mixed }, ctx, module);
    // Without data, the expected input of a layer behind a BatchNormalization (data-free bias correction).
    const expectedInputs = new Map<Value, Float64Array>();
    if (options.biasCorrect && ctx.calibration === null) {
      for (const { x } of layers) {
        const mean = expectedInput(x);
        if (mean !== null) expectedInputs.set(x, mean);
      }
    }
    // GPTQ on each layer's Gram matrix, in its chosen format; the Gram matrices go as soon as they are used.
    const rounded = new Map<Op, Float32Array>();
    for (const layer of choice === null ? [] : layers) {
      const grams = choice!.grams.get(layer.op), chosen = choice!.formats.get(layer.op)!;
      if (grams === undefined) continue;
      rounded.set(
        layer.op,
        gptqRound(layer.weight, layer.weightShape, layer.group, grams, chosen.format, chosen.block),
      );
      choice!.grams.delete(layer.op);
    }
    const lowered = lowerLayers(
      module,
      layers,
      {
        format,
        block,
        accumulator: options.accumulator,
        formats: choice?.formats,
        rounded: options.gptq && choice !== null ? rounded : undefined,
        biasCorrect: options.biasCorrect,
        expectedInputs,
      },
      choice === null ? null : twin,
      ctx,
    );
    ctx.stat("layers-lowered", layers.length);
    const widths = [...new Set(layers.map((l) => choice?.formats.get(l.op)?.format.mantissaBits ?? 0))];
    ctx.stat(
      "format",
      `e${format.exponentBits}m${
        choice !== null && mixed ? widths.sort((a, b) => a - b).join("/") : format.mantissaBits
      } ` +
        format.rounding,
    );
    ctx.stat(
      "precision",
      !mixed || choice === null
        ? "uniform"
        : byDefault
        ? `mixed, averaging ${options.mantissa} bits (the default with calibration data; precision=uniform turns it off)`
        : "mixed",
    );
    const blocked = choice === null ? 0 : layers.filter((l) => choice.formats.get(l.op)!.block !== 0).length;
    ctx.stat(
      "scheme",
      options.scheme === "auto"
        ? `auto: ${blocked} of ${layers.length} layers in blocks of ${options.block}, the rest per-channel`
        : block === 0
        ? "per-channel"
        : `mx, blocks of ${block}`,
    );
    if (choice !== null) {
      ctx.stat("mantissa-average", Math.round(choice.averageBits * 100) / 100);
      ctx.stat("predicted-output-sqnr-db", db(-10 * Math.log10(choice.predictedNsr)));
    }
    if (lowered.outputSqnr !== null) ctx.stat("output-sqnr-db", db(lowered.outputSqnr));
    if (options.gptq && choice !== null) {
      const over = layers.length - rounded.size;
      ctx.stat(
        "gptq",
        over === 0
          ? `${rounded.size} of ${layers.length} layers`
          : `${rounded.size} of ${layers.length} layers (the rest have more than ${GPTQ_MAX_COLUMNS} weights per ` +
            `output, or fewer than ${GPTQ_MIN_ROWS_PER_COLUMN} calibration rows per weight)`,
      );
    }
    if (lowered.biasCorrected > 0) ctx.stat("bias-corrected", lowered.biasCorrected);
    if (lowered.dataFree > 0) ctx.stat("bias-corrected-data-free", lowered.dataFree);
    ctx.stat("weight-exponent-bits", lowered.weightExponentBits);
    ctx.stat("layers", lowered.layers);
    return true;
  },
});

/**
 * The expected value per channel of `x` when a BatchNormalization with
 * constant scale and bias produces it, directly or through a ReLU or a Clip
 * with constant bounds: its output is taken as N(beta, gamma²) per channel
 * (the input normalized by the running statistics), clipped in closed form
 * (`analysis/bfp_precision.ts`). Null for any other producer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { float32Tensor } from "../ir/tensor.ts";
 * import { expectedInput } from "./bfp.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 2] }));
 * const c = (n: string, v: number[]) => g.addConstant(n, float32Tensor([2], v), { elem: "f32", shape: [2] });
 * const bn = g.addOp(new Op({ name: "bn", type: "BatchNormalization", results: [new Value("b")],
 *   operands: [x, c("gamma", [0, 0]), c("beta", [-1, 2]), c("mean", [0, 0]), c("var", [1, 1])] }));
 * const relu = g.addOp(new Op({ name: "r", type: "Relu", operands: [bn.result], results: [new Value("y")] }));
 * assert.deepEqual([...expectedInput(relu.result)!], [0, 2]);
 * ```
 */
export function expectedInput(x: Value): Float64Array | null {
  let v: Value | null = x, lo = -Infinity, hi = Infinity;
  const act = v.producer;
  if (act !== null && act.domain === "" && (act.type === "Relu" || act.type === "Clip")) {
    if (act.type === "Relu") lo = 0;
    else {
      const bound = (i: number, name: string, fallback: number): number | null => {
        const operand = act.operand(i);
        if (operand === null) return act.float(name, fallback) ?? fallback;
        return operand.constant === null ? null : toFloat64(operand.constant)[0];
      };
      const [a, b] = [bound(1, "min", -Infinity), bound(2, "max", Infinity)];
      if (a === null || b === null) return null;
      [lo, hi] = [a, b];
    }
    v = act.operand(0);
  }
  const bn = v?.producer ?? null;
  if (bn === null || bn.type !== "BatchNormalization" || bn.domain !== "") return null;
  const gamma = bn.operand(1)?.constant, beta = bn.operand(2)?.constant;
  if (!gamma || !beta) return null;
  const g = toFloat64(gamma);
  return Float64Array.from(toFloat64(beta), (mu, c) => expectedClipped(mu, Math.abs(g[c]), lo, hi));
}

/**
 * The bias shift that cancels a layer's expected output error from its weight
 * conversion, `-Σ (Wq - W)·E[x]` per output channel, for an input whose
 * expected value per channel is `mean`; null when `mean` does not have one
 * value per input channel (a Gemm behind a Flatten).
 */
function expectedShift(layer: Candidate, wq: Float32Array, mean: Float64Array): Float64Array | null {
  const o = layer.weightShape[0], cg = layer.weightShape[1];
  if (mean.length !== cg * layer.group) return null;
  const per = layer.weight.length / o, taps = per / cg, perGroup = o / layer.group;
  const shift = new Float64Array(o);
  for (let i = 0; i < o; i++) {
    const first = Math.floor(i / perGroup) * cg;
    let s = 0;
    for (let j = 0; j < per; j++) {
      s += (wq[i * per + j] - layer.weight[i * per + j]) * mean[first + Math.floor(j / taps)];
    }
    shift[i] = -s;
  }
  return shift;
}

/**
 * `fold-bn` before lowering: a BatchNormalization after a layer becomes part of its weights, so the lowered layers
 * absorb it (and an integer target gets no float glue for it). Records `bn-folded` when it folded any.
 */
export function foldBeforeLowering(module: Module, ctx: PassContext): boolean {
  const { folded } = foldBatchNorms(module, ctx.log);
  if (folded > 0) ctx.stat("bn-folded", folded);
  return folded > 0;
}

/** The options `bfp` and `fixed` share: which layers to lower. */
export interface LayerChoice {
  /** Op types to lower. */
  readonly ops: readonly string[];
  /** Op names left in float. */
  readonly skip: readonly string[];
  /** Leave the last lowerable layer in float. */
  readonly keepLast: boolean;
}

/**
 * The layers a lowering pass lowers: ops of the chosen types with constant
 * float32 weights, less the skipped ones (and the last with `keepLast`); warns
 * about option values that name nothing.
 */
export function chooseLayers(graph: Graph, options: LayerChoice, pass: string, ctx: PassContext): Candidate[] {
  for (const t of options.ops) {
    if (!SUPPORTED.includes(t)) {
      ctx.emit("warning", `ops names "${t}", which ${pass} cannot lower (it lowers Conv, Gemm, MatMul)`);
    }
  }
  const skip = new Set(options.skip);
  for (const name of skip) {
    if (!graph.ops.some((op) => op.name === name)) ctx.emit("warning", `skip names no op: "${name}"`);
  }
  const wanted = new Set(options.ops);
  const found = graph.ops.filter((op) => wanted.has(op.type) && op.domain === "");
  let layers = found.map((op) => candidateOf(op, ctx)).filter((c): c is Candidate => c !== null);
  if (options.keepLast && layers.length > 0) {
    const last = layers[layers.length - 1].op;
    ctx.log(`keeping the last layer "${last.name}" in float (keep-last=true)`);
    layers = layers.filter((l) => l.op !== last);
  }
  layers = layers.filter((l) => !skip.has(l.op.name));
  if (layers.length === 0) {
    ctx.emit(
      "note",
      found.length === 0
        ? `nothing lowered: no ${options.ops.join("/")} op in the graph`
        : `nothing lowered: ${found.length} ${options.ops.join("/")} op(s), none with constant float32 weights ` +
          "that is not skipped (the log says why each stays in float)",
    );
  }
  return layers;
}

/** How {@linkcode lowerLayers} formats a model. */
export interface LoweringSpec {
  /** The number format of every lowered layer. */
  readonly format: BfpFormat;
  /** Input channels per block (activations and weights); 0 = one block per weight row and per input sample. */
  readonly block: number;
  /** Accumulator bits. */
  readonly accumulator: number;
  /**
   * Fixed point: the compile-time exponent of each lowered layer's input tensor (every layer's input must have
   * one); absent for BFP, whose exponents are computed at run time.
   */
  readonly staticExponents?: ReadonlyMap<Value, number>;
  /** Fixed point: one exponent for a whole weight tensor instead of one per output channel. */
  readonly perTensorWeights?: boolean;
  /** Per layer: a format and blocking other than {@linkcode format} and {@linkcode block} (mixed precision). */
  readonly formats?: ReadonlyMap<Op, LayerFormat>;
  /**
   * Per layer: float weights already on the layer's grid (GPTQ, `analysis/gptq.ts`), stored instead of the nearest
   * rounding of its weights. Given (even empty) when GPTQ ran: each layer's statistics then say `weight-rounding`.
   */
  readonly rounded?: ReadonlyMap<Op, Float32Array>;
  /** With calibration data, correct each layer's bias by its mean output error per channel. */
  readonly biasCorrect?: boolean;
  /**
   * Without calibration data: the expected value per input channel of the layers whose input has one (from the
   * BatchNormalization before them); their bias absorbs the expected error of the weight conversion.
   */
  readonly expectedInputs?: ReadonlyMap<Value, Float64Array>;
}

/** One lowered layer's number format and blocking. */
export interface LayerFormat {
  /** Its number format. */
  readonly format: BfpFormat;
  /** Input channels per block; 0 = one block per weight row and per input sample. */
  readonly block: number;
}

/** What {@linkcode chooseFormats} chose, and the output SQNR its model predicts. */
export interface FormatChoice {
  /** Format and blocking per layer. */
  readonly formats: Map<Op, LayerFormat>;
  /** Mantissa width averaged over the layers' weights. */
  readonly averageBits: number;
  /** The summed NSR of the layers' input and weight conversions (`analysis/bfp_precision.ts`). */
  readonly predictedNsr: number;
  /** With `gptq`: per layer within {@linkcode GPTQ_MAX_COLUMNS}, the Gram matrices of its calibration inputs. */
  readonly grams: Map<Op, Float64Array[]>;
}

/**
 * The float model beside the one a pass lowers: a copy made before lowering
 * (sharing its constants), and each value's copy there. With calibration data
 * it runs beside the lowered model, chunk by chunk of samples
 * (`analysis/bfp_error.ts`'s `ChunkedRun`), so that no run holds more than
 * the activations of the layer it is at.
 */
export interface FloatTwin {
  /** The float model. */
  readonly module: Module;
  /** Each value of the model before lowering: its copy in {@linkcode module}. */
  readonly values: ReadonlyMap<Value, Value>;
  /**
   * Calibration samples per chunk: {@linkcode CHUNK_SAMPLES}, or all of them with stochastic rounding, whose
   * random stream runs through a whole tensor.
   */
  readonly chunk: number;
}

/** A {@linkcode FloatTwin} of `module` as it is now, for layers in `format`. */
export function floatTwin(module: Module, format: BfpFormat): FloatTwin {
  const values = new Map<Value, Value>();
  const copy = new Module(cloneGraph(module.graph, values), module.opsets, module.irVersion);
  return { module: copy, values, chunk: format.rounding === "stochastic" ? Infinity : CHUNK_SAMPLES };
}

/**
 * Run the float model on `feeds` and call `visit` at each of `layers` with
 * its input and output, chunk by chunk of samples (the only layer whose
 * activations are held then); returns the run, ended, for its outputs.
 */
export function forEachLayer(
  twin: FloatTwin,
  layers: readonly Candidate[],
  feeds: Readonly<Record<string, Tensor>>,
  ctx: PassContext,
  visit: (layer: Candidate, x: readonly Tensor[], y: readonly Tensor[]) => void,
): ChunkedRun {
  const byTwin = new Map(layers.map((l) => [twin.values.get(l.op.result)!.producer!, l]));
  const run = new ChunkedRun(twin.module, feeds, twin.chunk, ctx.ops);
  for (let op = run.next(); op !== null; op = run.next()) {
    const layer = byTwin.get(op);
    if (layer === undefined) {
      run.step();
      continue;
    }
    const x = [...Array(run.chunks).keys()].map((c) => run.args(c)[0]!);
    const y = run.computeAll();
    visit(layer, x, y.map((r) => r[0]));
    y.forEach((r, c) => run.store(c, r));
    run.done();
  }
  return run;
}

/**
 * Blocking and mantissa width per layer from the float calibration activations
 * (`analysis/bfp_precision.ts`), measured on one run of the float model, one
 * layer at a time: with `scheme` auto, blocks of `block` channels where they
 * pay for their exponents; with `mixed`, widths in `[mantissaMin,
 * mantissaMax]` under `avgMantissa` and `targetSqnr`. Null when the float
 * model does not run on the calibration data (warned).
 */
export function chooseFormats(
  layers: readonly Candidate[],
  twin: FloatTwin,
  format: BfpFormat,
  options: {
    scheme: string;
    block: number;
    mixed: boolean;
    avgMantissa?: number;
    targetSqnr?: number;
    mantissaMin: number;
    mantissaMax: number;
    sensitivitySamples?: number;
    biasCorrect?: boolean;
    accumulator: number;
    gptq?: boolean;
  },
  ctx: PassContext,
  module?: Module,
): FormatChoice | null {
  const formats = new Map<Op, LayerFormat>();
  const grams = new Map<Op, Float64Array[]>();
  const widths: number[] = [];
  for (let m = options.mantissaMin; m <= options.mantissaMax; m++) widths.push(m);
  // Per layer, as its float input goes by: its blocking and its conversion NSR per candidate width.
  const byOp = new Map<Op, { layer: Candidate; block: number; nsr: number[] }>();
  try {
    forEachLayer(twin, layers, ctx.calibration!, ctx, (layer, x) => {
      const input: PrecisionLayer = { ...layer, x, axis: axisOf(layer) };
      let block = options.scheme === "mx" ? options.block : 0;
      if (options.scheme === "auto") {
        const perSample = conversionNsr(input, format, 0), blocked = conversionNsr(input, format, options.block);
        if (blocksPay(perSample, blocked, format.exponentBits, options.block, layer.weightShape[1])) {
          block = options.block;
        }
      }
      const nsr = (options.mixed ? widths : [format.mantissaBits]).map((m) =>
        conversionNsr(input, withMantissa(format, m), block)
      );
      byOp.set(layer.op, { layer, block, nsr });
      const gram = options.gptq === true && gramColumns(layer) <= GPTQ_MAX_COLUMNS ? inputGram(layer, x) : null;
      if (gram !== null) grams.set(layer.op, gram);
    });
  } catch (e) {
    ctx.emit("warning", `calibration run failed (${e instanceof Error ? e.message : e}); no error analysis`);
    return null;
  }
  const measured = layers.map((l) => byOp.get(l.op)!);
  // The unmasked NSR at each width (the sensitivity measurement's reference), before saturating widths go.
  const conversion = measured.map(({ nsr }) => [...nsr]);
  const nsr = measured.map(({ nsr }) => nsr);
  // A width whose products could saturate the accumulator is not offered (the warning `lower` gives at one width).
  if (options.mixed) {
    measured.forEach(({ layer }, l) => {
      const reduction = layer.weight.length / layer.weightShape[0];
      widths.forEach((m, i) => {
        if (productBits(withMantissa(format, m), reduction) + 2 > options.accumulator) nsr[l][i] = Infinity;
      });
    });
  }
  const samples = options.sensitivitySamples ?? 0;
  if (options.mixed && samples > 0 && module !== undefined && ctx.calibration !== null) {
    // Measured two bits below the base width (within the range): where the layers that saturate their noise away at
    // the base width (a HardSigmoid gate) start to pass it on, and still where the noise is small.
    const probeBits = Math.min(options.mantissaMax, Math.max(options.mantissaMin, format.mantissaBits - 2));
    const local = conversion.map((row) => row[probeBits - options.mantissaMin]);
    const gains = outputGains(module, measured, local, format, probeBits, samples, options.biasCorrect === true, ctx);
    nsr.forEach((row, l) => row.forEach((v, i) => row[i] = v * gains[l]));
  }
  const cost = layers.map((l) => l.weight.length);
  const chosen = options.mixed
    ? chooseWidths(nsr, cost, widths, {
      averageBits: options.avgMantissa ?? 0,
      targetNsr: options.targetSqnr === undefined ? 0 : 10 ** (-options.targetSqnr / 10),
    })
    : layers.map(() => 0);
  let bits = 0, predictedNsr = 0;
  measured.forEach(({ layer, block }, l) => {
    const m = options.mixed ? widths[chosen[l]] : format.mantissaBits;
    formats.set(layer.op, { format: withMantissa(format, m), block });
    bits += m * cost[l];
    predictedNsr += nsr[l][chosen[l]];
    if (options.mixed) ctx.log(`op "${layer.op.name}": ${m}-bit mantissas, blocks of ${block || "a sample"}`);
  });
  return { formats, averageBits: bits / cost.reduce((a, b) => a + b, 0), predictedNsr, grams };
}

/**
 * Per layer, how much the model's output NSR exceeds the layer's conversion NSR when only that layer is converted
 * (`measuredOutputNsr` on the first `samples` calibration samples, at `probeBits`): the factor that turns the
 * conversion NSR per width into the layer's share of the output noise. 1 where it cannot be measured (warned).
 */
function outputGains(
  module: Module,
  measured: readonly { layer: Candidate; block: number }[],
  local: readonly number[],
  format: BfpFormat,
  probeBits: number,
  samples: number,
  biasCorrect: boolean,
  ctx: PassContext,
): number[] {
  const feeds = sampleFeeds(ctx.calibration!, 0, samples);
  const probeFormat = withMantissa(format, probeBits);
  const layers = measured.map(({ layer, block }) => ({ ...layer, axis: axisOf(layer), format: probeFormat, block }));
  let outputNsr: number[];
  try {
    outputNsr = measuredOutputNsr(module, layers, feeds, ctx.ops, biasCorrect);
  } catch (e) {
    ctx.emit(
      "warning",
      `sensitivity run failed (${e instanceof Error ? e.message : e}); output noise modelled as a sum`,
    );
    return measured.map(() => 1);
  }
  return measured.map(({ layer }, l) => {
    const gain = local[l] === 0 ? 1 : outputNsr[l] / local[l];
    ctx.log(
      `op "${layer.op.name}": output NSR ${outputNsr[l].toExponential(2)} alone, ${
        gain.toExponential(2)
      }x its conversion's`,
    );
    return gain;
  });
}

/** The channel axis of a layer's input: a Gemm on `[..., K]` rows blocks the last axis. */
function axisOf(layer: Candidate): number {
  const rank = (layer.x.type as TensorType).shape!.length;
  return layer.kind === "gemm" && rank > 2 ? -1 : 1;
}

/**
 * Lower `layers` to `ai.bfp` ops as `spec` says; returns the statistics per
 * layer (with the four-stage error analysis and the in-model SQNR when
 * `twin`, the float model before lowering, is given with calibration data) and the weight exponent bits in total.
 */
export function lowerLayers(
  module: Module,
  layers: readonly Candidate[],
  spec: LoweringSpec,
  twin: FloatTwin | null,
  ctx: PassContext,
): {
  layers: Record<string, StatValue>;
  weightExponentBits: number;
  outputSqnr: number | null;
  biasCorrected: number;
  dataFree: number;
} {
  const graph = module.graph;
  const perLayer: Record<string, LayerStats> = {};
  const quantizers = new Map<string, Op>();
  let exponentBits = 0;
  for (const layer of layers) {
    const stats = lower(graph, layer, spec, quantizers, ctx);
    exponentBits += stats["weight-exponent-bits"] as number;
    perLayer[layer.op.name] = stats;
  }
  module.opsets.set(BFP_DOMAIN, 1);
  let outputSqnr: number | null = null, biasCorrected = 0;
  if (ctx.calibration !== null && twin !== null) {
    const correct = spec.biasCorrect === true && correctionHoldsOut(module, layers, twin, ctx);
    const run = correctAndMeasure(module, layers, twin, correct, ctx);
    if (run !== null) {
      for (const [name, s] of run.layers) Object.assign(perLayer[name], s);
      outputSqnr = run.outputSqnr;
      biasCorrected = run.corrected;
    }
    // Each layer alone on its float input, with the bias it now has.
    forEachLayer(twin, layers, ctx.calibration, ctx, (layer, x, y) => {
      const analysis = analyze(layer, x, y, ctx);
      if (analysis !== null) Object.assign(perLayer[layer.op.name], analysis);
    });
  }
  const dataFree = Object.values(perLayer).filter((s) => s["bias-corrected-data-free"] === true).length;
  return { layers: perLayer, weightExponentBits: exponentBits, outputSqnr, biasCorrected, dataFree };
}

/**
 * Run the lowered model on the calibration data once, layer by layer in graph
 * order, beside the float model (`twin`), chunk by chunk of samples: each
 * lowered layer's output is compared with the float model's
 * (`sqnr-in-model-db`, errors of the layers before it accumulated) and, with
 * `biasCorrect`, the mean difference per output channel is added to its bias
 * (`sqnr-before-correction-db` records the figure before) and the layer runs
 * again, so the layers after it see the corrected output. The bias stays a
 * float32 constant that the plan aligns like any other, so every target
 * computes with the corrected bias bit for bit. Only the activations of the
 * layer at hand are held, in both models. The lowered model runs on the first
 * `samples` samples (all by default), the float model on all of them (the
 * float Gemm's bits depend on its row count: `ChunkedRun`), whose outputs
 * are returned, chunk by chunk. Null when the run fails (warned).
 */
function correctAndMeasure(
  module: Module,
  layers: readonly Candidate[],
  twin: FloatTwin,
  biasCorrect: boolean,
  ctx: PassContext,
  samples = Infinity,
): {
  layers: Map<string, LayerStats>;
  outputSqnr: number | null;
  corrected: number;
  floatOutputs: Tensor[][];
} | null {
  const graph = module.graph;
  const byOp = new Map(layers.map((l) => [l.op, l]));
  const stats = new Map<string, LayerStats>();
  const calibration = ctx.calibration!;
  let corrected = 0, outputSqnr: number | null = null, floatOutputs: Tensor[][];
  try {
    const lowered = new ChunkedRun(module, sampleFeeds(calibration, 0, samples), twin.chunk, ctx.ops);
    const float = new ChunkedRun(twin.module, calibration, twin.chunk, ctx.ops, samples);
    for (let op = lowered.next(); op !== null; op = lowered.next()) {
      const layer = byOp.get(op);
      if (layer === undefined) {
        lowered.step();
        continue;
      }
      const floatOp = twin.values.get(op.result)!.producer!;
      float.finish(floatOp);
      const ref = float.values(floatOp.results[0]);
      const s: LayerStats = {};
      // Without a correction the first run's results are kept; with one, they only feed the statistics.
      const before = new PowerSum(), error = biasCorrect ? new ChannelErrorSum(layer.kind === "gemm") : null;
      for (let c = 0; c < lowered.chunks; c++) {
        const y = lowered.compute(c);
        before.add(toFloat64(ref[c]), toFloat64(y[0]));
        if (error !== null) error.add(ref[c], y[0]);
        else lowered.store(c, y);
      }
      if (error !== null) {
        const shift = error.mean();
        const old = op.operand(4)?.constant;
        const base = old === null || old === undefined ? null : toFloat64(old);
        const bias = tensor("f32", [shift.length], Float32Array.from(shift, (d, c) => (base?.[c] ?? 0) + d));
        replaceConstant(op, 4, bias, old === undefined || old === null ? { name: `${op.name}.bias` } : {});
        const after = new PowerSum();
        for (let c = 0; c < lowered.chunks; c++) {
          const y = lowered.compute(c);
          after.add(toFloat64(ref[c]), toFloat64(y[0]));
          lowered.store(c, y);
        }
        s["sqnr-before-correction-db"] = db(before.sqnr());
        s["sqnr-in-model-db"] = db(after.sqnr());
        corrected++;
      } else {
        s["sqnr-in-model-db"] = db(before.sqnr());
      }
      lowered.done();
      stats.set(op.name, s);
    }
    float.finish();
    floatOutputs = graph.outputs.map((v) => float.values(twin.values.get(v)!));
    const ratio = modelSqnr(floatOutputs.map((f, i) => [f.slice(0, lowered.chunks), lowered.values(graph.outputs[i])]));
    outputSqnr = ratio === null ? null : 10 * Math.log10(ratio);
  } catch (e) {
    ctx.emit("warning", `lowered calibration run failed (${e instanceof Error ? e.message : e})`);
    return null;
  }
  return { layers: stats, outputSqnr, corrected, floatOutputs };
}

/**
 * The SQNR of a model's outputs, each given as its float and its lowered
 * tensors chunk by chunk, over the float32 ones (as a ratio, not in dB); null
 * when none is float32.
 */
function modelSqnr(outputs: readonly (readonly [readonly Tensor[], readonly Tensor[]])[]): number | null {
  let signal = 0, noise = 0, measured = false;
  for (const [float, lowered] of outputs) {
    float.forEach((a, c) => {
      if (a.dtype !== "f32") return;
      measured = true;
      const r = a.data as Float32Array, q = lowered[c].data as Float32Array;
      for (let i = 0; i < r.length; i++) {
        signal += r[i] * r[i];
        noise += (r[i] - q[i]) ** 2;
      }
    });
  }
  return !measured ? null : noise === 0 ? Infinity : signal / noise;
}

/**
 * Whether bias correction earns its place on this model: the corrections are
 * fitted (as {@linkcode correctAndMeasure} does) on the first half of the
 * calibration samples and kept only if they raise the model's output SQNR on
 * the second half; the biases are restored either way (the caller refits on
 * all samples). A small calibration set otherwise overfits: PaddleOCR's
 * classifier gained 5 dB on its 8 calibration images and lost 1.6 dB on test
 * images. Refused (noted) with fewer than two samples.
 */
function correctionHoldsOut(
  module: Module,
  layers: readonly Candidate[],
  twin: FloatTwin,
  ctx: PassContext,
): boolean {
  const calibration = ctx.calibration!;
  const samples = Math.min(...Object.values(calibration).map((t) => t.shape[0]));
  if (samples < 2) {
    ctx.emit("note", "bias correction needs at least 2 calibration samples (one half fits, the other checks); skipped");
    return false;
  }
  const half = Math.floor(samples / 2);
  const checkOutputs = (): Tensor[][] => {
    const run = new ChunkedRun(module, sampleFeeds(calibration, half, samples), twin.chunk, ctx.ops);
    run.finish();
    return module.graph.outputs.map((v) => run.values(v));
  };
  const originals = layers.map((l) => l.op.operand(4)?.constant ?? null);
  try {
    const before = checkOutputs();
    const fit = correctAndMeasure(module, layers, twin, true, ctx, half);
    if (fit === null) return false;
    // The float outputs of the held-out samples: the chunks after the fitted ones, from the float run on all.
    const reference = fit.floatOutputs.map((f) => f.slice(f.length - (before[0]?.length ?? 0)));
    const outputSqnr = (lowered: Tensor[][]): number => modelSqnr(lowered.map((l, i) => [reference[i], l])) ?? Infinity;
    const without = outputSqnr(before);
    const corrected = outputSqnr(checkOutputs());
    const keep = corrected > without;
    ctx.stat(
      "bias-correction-check",
      `${keep ? "kept" : "refused"}: output SQNR on held-out calibration samples ${db(10 * Math.log10(without))} dB ` +
        `without, ${db(10 * Math.log10(corrected))} dB with a correction fitted on the others`,
    );
    return keep;
  } catch (e) {
    ctx.emit("warning", `bias correction check failed (${e instanceof Error ? e.message : e}); no bias correction`);
    return false;
  } finally {
    layers.forEach(({ op }, i) => {
      const original = originals[i];
      if (original !== null) replaceConstant(op, 4, original);
      else if (op.operands.length > 4) {
        const added = op.operand(4);
        op.truncateOperands(4);
        eraseConstantIfUnused(added);
      }
    });
  }
}

/** A Conv/Gemm/MatMul with constant float32 weights and a float32 input of known channels, else null (logged). */
function candidateOf(op: Op, ctx: PassContext): Candidate | null {
  const x = op.operand(0), w = op.operand(1);
  const skip = (why: string): null => {
    ctx.log(`op "${op.name}" (${op.type}) stays in float: ${why}`);
    return null;
  };
  if (x === null || w === null) return skip("missing operands");
  if (!isTensorType(x.type) || x.type.elem !== "f32" || x.type.shape === null) {
    return skip("input is not f32 of known rank");
  }
  if (w.constant === null || w.constant.dtype !== "f32") return skip("weights are not a float32 constant");
  const wt = w.constant;
  // Read as float32 where it is: a float64 copy of a large FC weight (VGG-16's fc1) is the pipeline's memory peak.
  const data = wt.data as Float32Array;
  if (!data.every(Number.isFinite)) {
    ctx.emit("warning", `op "${op.name}" (${op.type}): weights hold NaN or Inf; layer left in float`, op);
    return null;
  }
  const biasOf = (v: Value | null, scale: number, o: number): Float32Array | null | undefined => {
    if (v === null) return null;
    if (v.constant === null || v.constant.dtype !== "f32" || shapeSize(v.constant.shape) !== o) return undefined;
    return Float32Array.from(toFloat64(v.constant), (b) => b * scale);
  };
  if (op.type === "Conv") {
    if (x.type.shape.length < 3 || typeof x.type.shape[1] !== "number") return skip("input channels unknown");
    const bias = biasOf(op.operand(2), 1, wt.shape[0]);
    if (bias === undefined) return skip("bias is not a float32 constant");
    return {
      op,
      kind: "conv",
      x,
      weight: data, // read only: candidates of every layer live at once, copies would hold a second model
      weightShape: [...wt.shape],
      bias,
      group: op.int("group", 1),
    };
  }
  if (wt.shape.length !== 2) {
    return skip(`weights of rank ${wt.shape.length} (a batched MatMul); only a 2-D [K, O] weight is lowered`);
  }
  if (x.type.shape.length < 2) return skip("input of rank 1 (a vector); inputs [..., K] of rank >= 2 are lowered");
  if (op.type === "Gemm" && x.type.shape.length !== 2) return skip("Gemm input is not a matrix");
  if (op.type === "Gemm" && op.flag("transA")) return skip("transA=1");
  const transB = op.type === "Gemm" && op.flag("transB");
  const alpha = op.type === "Gemm" ? op.float("alpha", 1) : 1;
  const [o, k] = transB ? wt.shape : [wt.shape[1], wt.shape[0]];
  const weight = new Float32Array(o * k);
  for (let i = 0; i < o; i++) {
    for (let j = 0; j < k; j++) weight[i * k + j] = alpha * data[transB ? i * k + j : j * o + i];
  }
  const bias = op.type === "Gemm" ? biasOf(op.operand(2), op.float("beta", 1), o) : null;
  if (bias === undefined) return skip("C is not a float32 constant with one value per output");
  return { op, kind: "gemm", x, weight, weightShape: [o, k], bias, group: 1 };
}

/** The layer's statistics (always) and, with calibration, its error analysis. */
type LayerStats = Record<string, StatValue>;

function lower(
  graph: Graph,
  layer: Candidate,
  spec: LoweringSpec,
  quantizers: Map<string, Op>,
  ctx: PassContext,
): LayerStats {
  const { format, block } = spec.formats?.get(layer.op) ?? spec;
  const accumulator = spec.accumulator;
  const { op, x } = layer;
  const name = op.name || op.result.name;
  const reduction = shapeSize(layer.weightShape.slice(1));
  const needed = productBits(format, reduction) + 2;
  if (needed > accumulator) {
    ctx.emit(
      "warning",
      `op "${op.name}" (${op.type}): a ${accumulator}-bit accumulator may saturate: ${reduction} products of ` +
        `${format.mantissaBits}-bit mantissas need ${needed} bits`,
      op,
    );
  }
  const weight = spec.rounded?.get(op) ?? layer.weight;
  const q = quantizeWeights(weight, layer.weightShape, format, block, "W", spec.perTensorWeights === true);
  const elem = bfpElementType(format, block);
  const wm = graph.addConstant(
    graph.freshName(`${name}.wm`),
    tensor(bfpStorage(format.mantissaBits), layer.weightShape, q.mantissas),
    { elem, shape: layer.weightShape },
  );
  const we = graph.addConstant(graph.freshName(`${name}.we`), tensor("i8", q.exponentShape, q.exponents), {
    elem: "i8",
    shape: q.exponentShape,
  });
  const o = layer.weightShape[0];
  const mean = spec.expectedInputs?.get(x);
  const shift = mean === undefined
    ? null
    : expectedShift(layer, dequantizeWeights(q.mantissas, q.exponents, layer.weightShape, format, block), mean);
  const biasValues = shift === null ? layer.bias : Float32Array.from(shift, (d, i) => (layer.bias?.[i] ?? 0) + d);
  // A Conv's bias is used as it is; a Gemm's gets beta folded in (candidateOf), a shifted one is new: new constants.
  const bias = biasValues === null
    ? null
    : layer.kind === "conv" && shift === null
    ? op.operand(2)
    : graph.addConstant(graph.freshName(`${name}.bias`), tensor("f32", [o], biasValues), { elem: "f32", shape: [o] });
  // One Quantize per (input, blocking): layers reading the same tensor the same way share it. A Gemm on [..., K]
  // blocks the last axis: every row is a sample.
  // Fixed point's one exponent per tensor needs no groups; else as the error analysis blocked it.
  const rank = (x.type as TensorType).shape!.length;
  const axis = layer.kind === "gemm" && rank > 2 ? -1 : 1;
  const group = spec.staticExponents === undefined ? inputBlocking({ group: layer.group, axis }, block).group : 1;
  const key = `${x.name}|${format.mantissaBits}|${block}|${group}|${axis}`;
  const staticExponent = spec.staticExponents?.get(x);
  if (spec.staticExponents !== undefined && staticExponent === undefined) {
    throw new Error(`internal: no static exponent for the input "${x.name}" of op "${op.name}"`);
  }
  let quantize = quantizers.get(key);
  if (quantize === undefined) {
    const xType = x.type as TensorType;
    quantize = new Op({
      name: graph.freshOpName(`${x.name}.bfp`),
      type: "Quantize",
      domain: BFP_DOMAIN,
      operands: [x],
      results: [
        new Value(graph.freshName(`${x.name}.xm`), { elem, shape: xType.shape }),
        new Value(graph.freshName(`${x.name}.xe`), null),
      ],
      attributes: [
        ["mantissa", attr.int(format.mantissaBits)],
        ["exponent", attr.int(format.exponentBits)],
        ["block", attr.int(block)],
        ["group", attr.int(group)],
        ...(axis === 1 ? [] : [["axis", attr.int(axis)] as [string, Attribute]]),
        ["rounding", attr.string(format.rounding)],
        ["exponent_rule", attr.string(format.exponentRule)],
        ...(format.rounding === "stochastic" ? [["seed", attr.int(format.seed)] as [string, Attribute]] : []),
        ...(staticExponent === undefined ? [] : [["static_exponent", attr.int(staticExponent)] as [string, Attribute]]),
      ],
    });
    insertBefore(op, quantize);
    quantizers.set(key, quantize);
  }
  // The op becomes its lowered form in place: its result (and name) stay, so every use and graph output holds.
  const old = op.operands.filter((v): v is Value => v !== null);
  op.dropOperands();
  for (const v of [quantize.results[0], quantize.results[1], wm, we, bias]) op.addOperand(v ?? null);
  if (bias === null) op.truncateOperands(4);
  const keep = layer.kind === "conv" ? ["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"] : [];
  for (const k of [...op.attributes.keys()]) if (!keep.includes(k)) op.attributes.delete(k);
  op.type = layer.kind === "conv" ? "Conv" : "Gemm";
  op.domain = BFP_DOMAIN;
  op.attributes.set("accumulator", attr.int(accumulator));
  op.attributes.set("rounding", attr.string(format.rounding));
  if (format.rounding === "stochastic") op.attributes.set("seed", attr.int(format.seed));
  for (const v of old) eraseConstantIfUnused(v);
  const { bias: exponentBias } = exponentRange(format);
  return {
    kind: layer.kind,
    mantissa: format.mantissaBits,
    block,
    "weight-blocks": q.exponents.length,
    "weight-exponent-bits": q.exponents.length * format.exponentBits,
    "weight-mantissa-bits": q.mantissas.length * format.mantissaBits,
    "weight-saturated": q.saturated,
    "exponent-bias": exponentBias,
    // Where GPTQ ran: which layers it fitted (the rest keep nearest rounding).
    ...(spec.rounded === undefined ? {} : { "weight-rounding": spec.rounded.has(op) ? "gptq" : "nearest" }),
    ...(shift === null ? {} : { "bias-corrected-data-free": true }),
    ...(staticExponent === undefined ? {} : {
      "input-exponent": staticExponent,
      "input-frac-bits": format.mantissaBits - 2 - staticExponent,
    }),
  };
}

/** The four-stage error analysis of one lowered layer on its float input and output (`analysis/bfp_error.ts`). */
function analyze(layer: Candidate, x: readonly Tensor[], y: readonly Tensor[], ctx: PassContext): LayerStats | null {
  if (x.some((t) => t.dtype !== "f32")) return null;
  try {
    return layerErrorStats(bfpLayerPlan(layer.op), x, y, layer.weight);
  } catch (e) {
    ctx.log(`op "${layer.op.name}": no error analysis (${e instanceof Error ? e.message : e})`);
    return null;
  }
}
