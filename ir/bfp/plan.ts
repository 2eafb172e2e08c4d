/**
 * The lowered-layer plan: everything a target needs to run one `ai.bfp` layer
 * bit for bit, read and checked once. This module is the only reader of
 * `ai.bfp` attributes and `bfp<...>` element types; the kernel, the op
 * definitions, the error analysis and every target read plans.
 *
 * Ops (domain `ai.bfp`, version 1). A BFP tensor is two values: mantissas
 * typed `bfp<mantissa=L, exponent=E, block=B>[shape]` (stored as `i8` for
 * L <= 8, else `i16`) and the shared exponents as `i8` (unbiased, in
 * `[-bias, bias]`); layouts in `quantize.ts`.
 * - `Quantize(x) -> (xm, xe)`: attributes `mantissa`, `exponent`, `block`,
 *   `group`, `axis` (the channel axis, default 1; `-1` for a batched Gemm's
 *   rows), `rounding`, `exponent_rule`, `seed`, and `static_exponent` for
 *   fixed point (the exponent of every sample, chosen at compile time).
 * - `Conv(xm, xe, wm, we, b?) -> y: f32` with ONNX Conv's window attributes plus
 *   `accumulator` (bits), `rounding`, `seed` (which must agree with the
 *   Quantize that produces `xm` and `xe`).
 * - `Gemm(xm[..., K], xe, wm[O, K], we, b?[O]) -> y: f32[..., O]` (`y = x·wᵀ + b`)
 *   with `accumulator`, `rounding`, `seed`: every row of K inputs is one
 *   sample (a Linear layer on `[N, T, K]` or channels-last `[N, H, W, K]`
 *   activations), so its Quantize blocks the last axis (`axis` -1, or 1 for a
 *   matrix).
 *
 * The layer rule (`format.ts` header, "layer accumulation"), as a plan states
 * it: a block product `S_j` has the unit `u_j = ew_j + ex_j - 2(L-2)`; the
 * accumulator of one output has the unit `u_acc = max(max_j u_j, u_b) - g`
 * with the bias unit `u_b` of its channel ({@linkcode BfpBiasPlan.units},
 * {@linkcode NO_BIAS_UNIT} without a bias) and `g` guard bits
 * ({@linkcode BfpAccumulatorPlan.guardBits}); products with `u_j < u_acc` are
 * shifted right with the format's rounding, the bias is aligned to `u_acc`
 * with the same rounding, the exact sum saturates once to `A` bits, and
 * `y = float32(acc · 2^u_acc)`. Taps in the zero padding read all-zero blocks
 * with exponent `-bias`.
 * @module
 */
import type { Attribute } from "../attributes.ts";
import type { Op, Value } from "../graph.ts";
import { opError } from "../ops/common.ts";
import type { WindowGeometry } from "../ops/conv_kernels.ts";
import { convShape, geometryOf } from "../ops/nn.ts";
import { shapeSize } from "../tensor.ts";
import type { BfpType, Dim, TensorType } from "../types.ts";
import {
  ACCUMULATOR_BITS,
  accumulatorGuardBits,
  accumulatorRange,
  type BfpExponentRule,
  type BfpFormat,
  bfpFormat,
  type BfpRounding,
  bfpStorage,
  exponentRange,
  floorLog2,
  productBits,
} from "./format.ts";
import { type ActivationBlocking, weightExponentShape } from "./quantize.ts";

/** The domain of the lowered ops. */
export const BFP_DOMAIN = "ai.bfp";

/** The bias unit of a channel without a bias (below every block unit). */
export const NO_BIAS_UNIT: number = -0x7fffffff;

/** What one `ai.bfp.Quantize` computes. */
export interface BfpQuantizePlan {
  /** The op. */
  readonly op: Op;
  /** Number format: widths, rounding, exponent rule, seed. */
  readonly format: BfpFormat;
  /**
   * Blocking of the activation: with `block` 0 and `group` G > 1, one block per sample and group; `axis` as the
   * attribute says (negative from the end).
   */
  readonly blocking: Required<ActivationBlocking>;
  /** Fixed point: the compile-time exponent of every sample (then `block` is 0); null for BFP. */
  readonly staticExponent: number | null;
}

/** A lowered layer's weights: offline BFP constants. */
export interface BfpWeightPlan {
  /** The mantissa constant (`bfp<...>`, stored `i8`/`i16`). */
  readonly mantissaValue: Value;
  /** The exponent constant (`i8`). */
  readonly exponentValue: Value;
  /** Mantissas, row-major in {@linkcode shape} (ONNX's OIHW for a Conv, `[O, K]` for a Gemm). */
  readonly mantissas: Int8Array | Int16Array;
  /** Unbiased exponents, row-major in {@linkcode exponentShape}. */
  readonly exponents: Int8Array;
  /** `[O, Cg, ...kernel]` (Conv) or `[O, K]` (Gemm). */
  readonly shape: readonly number[];
  /** `[O]` for one block per output channel, else `[O, ceil(Cg/block), ...kernel]`. */
  readonly exponentShape: readonly number[];
  /** Input channels per block; 0 = one block per output channel (all of `Cg·kh·kw`). */
  readonly block: number;
}

/** A lowered layer's bias: float values and the unit each takes in the accumulator rule. */
export interface BfpBiasPlan {
  /** The bias constant. */
  readonly value: Value;
  /** One float32 bias per output channel. */
  readonly values: Float32Array;
  /** `u_b = floorLog2(|b|) + 1 - W` per output channel, {@linkcode NO_BIAS_UNIT} for `b = 0`. */
  readonly units: Int32Array;
}

/** A lowered layer's accumulator. */
export interface BfpAccumulatorPlan {
  /** Width `A` in bits (8..53), two's complement, saturating once per output. */
  readonly bits: number;
  /** Smallest value, `-2^(A-1)`. */
  readonly min: number;
  /** Largest value, `2^(A-1) - 1`. */
  readonly max: number;
  /** `W = bitLength(K · maxM²)`: the width of the worst-case product sum. */
  readonly productBits: number;
  /** `g = max(0, A - 2 - W)`. */
  readonly guardBits: number;
}

/** Everything needed to run one `ai.bfp.Conv`/`ai.bfp.Gemm` bit for bit. */
export interface BfpLayerPlan {
  /** The op. */
  readonly op: Op;
  /** `conv` or `gemm` (a Gemm is a Conv without spatial axes). */
  readonly kind: "conv" | "gemm";
  /** The number format, from the input's Quantize (the layer's `rounding` and `seed` agree with it). */
  readonly format: BfpFormat;
  /** The Quantize that produces the mantissas and exponents the layer reads. */
  readonly input: BfpQuantizePlan;
  /** Weight mantissas and exponents. */
  readonly weights: BfpWeightPlan;
  /** The bias, or null. */
  readonly bias: BfpBiasPlan | null;
  /** Accumulator width, product width and guard bits. */
  readonly accumulator: BfpAccumulatorPlan;
  /** Input channels C (a Gemm's K). */
  readonly inChannels: number;
  /** Output channels O. */
  readonly outChannels: number;
  /** Channel groups (1 for a Gemm). */
  readonly group: number;
  /** Reduction length per output, `K = Cg · kh · kw`. */
  readonly reduction: number;
  /** Window geometry for the input type's spatial shape; null when it is not static. A Gemm has empty lists. */
  readonly geometry: WindowGeometry | null;
  /** The ONNX Conv window attributes the layer carries (`pads`, `strides`, ...), for targets that emit a float Conv. */
  readonly windowAttributes: readonly [string, Attribute][];
}

/** Attributes of the lowered layers: the integer kernel's, and a Conv's ONNX window. */
const KERNEL_ATTRIBUTES = ["accumulator", "rounding", "seed"];
const WINDOW_ATTRIBUTES = ["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"];

/** A Gemm's "window": no spatial axes. */
const NO_WINDOW: WindowGeometry = { inShape: [], outShape: [], kernel: [], strides: [], dilations: [], padsBegin: [] };

/**
 * Read and check an `ai.bfp.Quantize` op.
 *
 * @throws {Error} Naming the op, for a bad format, blocking or static exponent, or a mantissa result whose type
 *   contradicts the attributes.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { attr } from "../attributes.ts";
 * import { Op, Value } from "../graph.ts";
 * import { bfpQuantizePlan } from "./plan.ts";
 * const q = new Op({ name: "q", type: "Quantize", domain: "ai.bfp", operands: [new Value("x")],
 *   results: [new Value("xm"), new Value("xe")], attributes: [["mantissa", attr.int(6)], ["block", attr.int(16)]] });
 * const plan = bfpQuantizePlan(q);
 * assert.deepEqual([plan.format.mantissaBits, plan.blocking.block, plan.staticExponent], [6, 16, null]);
 * ```
 */
export function bfpQuantizePlan(op: Op): BfpQuantizePlan {
  if (op.domain !== BFP_DOMAIN || op.type !== "Quantize") throw opError(op, `is not a ${BFP_DOMAIN}.Quantize`);
  let format: BfpFormat;
  try {
    format = bfpFormat({
      mantissaBits: op.int("mantissa", 8),
      exponentBits: op.int("exponent", 5),
      rounding: op.string("rounding", "nearest-even") as BfpRounding,
      exponentRule: op.string("exponent_rule", "floor") as BfpExponentRule,
      seed: op.int("seed", 0),
    });
  } catch (e) {
    throw opError(op, (e as Error).message);
  }
  const block = op.int("block", 0), group = op.int("group", 1), axis = op.int("axis", 1);
  if (!Number.isInteger(block) || block < 0) throw opError(op, `block must be a non-negative integer, found ${block}`);
  if (!Number.isInteger(group) || group < 1) throw opError(op, `group must be a positive integer, found ${group}`);
  if (!Number.isInteger(axis) || axis === 0) {
    throw opError(op, `axis must be a nonzero integer (the channel axis; the samples come before it), found ${axis}`);
  }
  const fixed = op.int("static_exponent");
  let staticExponent: number | null = null;
  if (fixed !== undefined) {
    const { min, max } = exponentRange(format);
    if (!Number.isInteger(fixed) || fixed < min || fixed > max) {
      throw opError(
        op,
        `static_exponent must be an integer in [${min}, ${max}] (exponent ${format.exponentBits} bits), found ${fixed}`,
      );
    }
    if (block !== 0) throw opError(op, `static_exponent (fixed point) needs block 0, found block ${block}`);
    staticExponent = fixed;
  }
  const xm = op.results[0];
  if (xm !== undefined) checkElement(op, "its mantissa result", xm, format, block);
  return { op, format, blocking: { block, group, axis }, staticExponent };
}

/**
 * Read and check an `ai.bfp.Conv` or `ai.bfp.Gemm`: its operands must be the
 * two results of one `ai.bfp.Quantize`, constant weight mantissas and
 * exponents of the same format and blocking, and an optional float32
 * constant bias with one value per output channel.
 *
 * @throws {Error} One line naming the op and the inconsistency (the verifier reports it).
 * @example A Gemm of one output over two inputs
 * ```ts
 * import assert from "node:assert/strict";
 * import { attr } from "../attributes.ts";
 * import { Graph, Op, Value } from "../graph.ts";
 * import { tensor } from "../tensor.ts";
 * import { bfpLayerPlan } from "./plan.ts";
 * const g = new Graph();
 * const bfp = { kind: "bfp", mantissa: 8, exponent: 5, block: 0 } as const;
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 2] }));
 * const q = g.addOp(new Op({ name: "q", type: "Quantize", domain: "ai.bfp", operands: [x],
 *   results: [new Value("xm", { elem: bfp, shape: ["N", 2] }), new Value("xe")] }));
 * const wm = g.addConstant("wm", tensor("i8", [1, 2], new Int8Array([64, -32])), { elem: bfp, shape: [1, 2] });
 * const we = g.addConstant("we", tensor("i8", [1], new Int8Array([0])), { elem: "i8", shape: [1] });
 * const fc = g.addOp(new Op({ name: "fc", type: "Gemm", domain: "ai.bfp",
 *   operands: [...q.results, wm, we], results: [new Value("y")], attributes: [["accumulator", attr.int(24)]] }));
 * const plan = bfpLayerPlan(fc);
 * assert.deepEqual([plan.kind, plan.reduction, plan.accumulator.productBits, plan.accumulator.guardBits], ["gemm", 2, 15, 7]);
 * ```
 */
export function bfpLayerPlan(op: Op): BfpLayerPlan {
  if (op.domain !== BFP_DOMAIN || (op.type !== "Conv" && op.type !== "Gemm")) {
    throw opError(op, `is not a ${BFP_DOMAIN}.Conv or ${BFP_DOMAIN}.Gemm`);
  }
  const kind = op.type === "Conv" ? "conv" : "gemm";
  for (const name of op.attributes.keys()) {
    if (!KERNEL_ATTRIBUTES.includes(name) && !(kind === "conv" && WINDOW_ATTRIBUTES.includes(name))) {
      throw opError(
        op,
        `has an unknown attribute "${name}" (${BFP_DOMAIN}.${op.type} takes ${
          [...KERNEL_ATTRIBUTES, ...(kind === "conv" ? WINDOW_ATTRIBUTES : [])].join(", ")
        })`,
      );
    }
  }
  const [xm, xe, wm, we] = [0, 1, 2, 3].map((i) => op.operand(i));
  if (xm === null || xe === null || wm === null || we === null) {
    throw opError(op, "needs XM, XE, WM and WE (mantissas and exponents of the input and of the weights)");
  }
  if (op.operands.length > 5) throw opError(op, `takes at most 5 operands, found ${op.operands.length}`);
  const quantize = xm.producer;
  if (
    quantize === null || quantize.domain !== BFP_DOMAIN || quantize.type !== "Quantize" ||
    quantize.results[0] !== xm || quantize.results[1] !== xe
  ) {
    throw opError(op, `XM and XE must be the mantissas and exponents of one ${BFP_DOMAIN}.Quantize`);
  }
  const input = bfpQuantizePlan(quantize);
  const format = input.format;
  const rounding = op.string("rounding", "nearest-even"), seed = op.int("seed", 0);
  if (rounding !== format.rounding || seed !== format.seed) {
    throw opError(
      op,
      `rounding ${rounding} (seed ${seed}) disagrees with its Quantize "${quantize.name}" ` +
        `(${format.rounding}, seed ${format.seed}): every shift of a layer rounds one way`,
    );
  }
  const bits = op.int("accumulator", 32);
  if (!Number.isInteger(bits) || bits < ACCUMULATOR_BITS.min || bits > ACCUMULATOR_BITS.max) {
    throw opError(
      op,
      `accumulator must be an integer in [${ACCUMULATOR_BITS.min}, ${ACCUMULATOR_BITS.max}] bits, found ${bits}`,
    );
  }
  const weights = weightPlan(op, wm, we, input);
  const shape = weights.shape;
  const outChannels = shape[0];
  const group = kind === "conv" ? op.int("group", 1) : 1;
  if (!Number.isInteger(group) || group < 1 || outChannels % group !== 0) {
    throw opError(op, `group ${group} must be a positive divisor of the ${outChannels} output channels`);
  }
  // Blocks along channels follow the layer's groups; one block per sample may also span them all (group 1).
  if (input.blocking.group !== group && (input.blocking.block > 0 || input.blocking.group !== 1)) {
    throw opError(
      op,
      `its Quantize "${quantize.name}" blocks channels in ${input.blocking.group} group(s), the layer has ${group}`,
    );
  }
  const inChannels = shape[1] * group;
  const reduction = shapeSize(shape.slice(1));
  const xType = tensorTypeOf(xm);
  if (kind === "gemm" && shape.length !== 2) throw opError(op, `WM must be a matrix [O, K], found [${shape}]`);
  if (kind === "conv" && shape.length < 3) throw opError(op, `WM must be [O, Cg, ...kernel], found [${shape}]`);
  let geometry: WindowGeometry | null = null;
  if (xType !== null && xType.shape !== null) {
    const xShape = xType.shape;
    if (kind === "gemm") {
      if (xShape.length < 2) throw opError(op, `XM must have rank >= 2 ([..., K]), found rank ${xShape.length}`);
      const k = xShape[xShape.length - 1];
      if (typeof k === "number" && k !== inChannels) {
        throw opError(op, `XM has ${k} columns but WM rows have ${inChannels}`);
      }
      geometry = NO_WINDOW;
    } else {
      const spatial = xShape.slice(2);
      const g = layerGeometryOf(op, xShape, shape);
      geometry = spatial.every((d) => typeof d === "number") ? g : null;
    }
    checkChannelAxis(op, kind, input, xShape.length);
  }
  const accumulator: BfpAccumulatorPlan = {
    bits,
    ...accumulatorRange(bits),
    productBits: productBits(format, reduction),
    guardBits: accumulatorGuardBits(format, reduction, bits),
  };
  const b = op.operand(4);
  const bias = b === null ? null : biasPlan(op, b, outChannels, accumulator.productBits);
  const windowAttributes = [...op.attributes].filter(([name]) => WINDOW_ATTRIBUTES.includes(name));
  return {
    op,
    kind,
    format,
    input,
    weights,
    bias,
    accumulator,
    inChannels,
    outChannels,
    group,
    reduction,
    geometry,
    windowAttributes,
  };
}

/**
 * The window geometry of a plan's layer for an input of `shape` (`[N, C, ...spatial]`, static spatial sizes) and
 * the output shape: what the kernel runs, whatever the input type said.
 *
 * @throws {Error} Naming the op when the input does not fit the layer.
 */
export function bfpLayerGeometry(
  plan: BfpLayerPlan,
  shape: readonly number[],
): { geometry: WindowGeometry; outShape: number[] } {
  const { op, weights } = plan;
  if (shape.length >= 2) checkChannelAxis(op, plan.kind, plan.input, shape.length);
  if (plan.kind === "gemm") {
    if (shape.length < 2 || shape[shape.length - 1] !== plan.inChannels) {
      throw opError(op, `XM [${shape}] and WM [${weights.shape}] do not make a matrix product`);
    }
    return { geometry: NO_WINDOW, outShape: [...shape.slice(0, -1), plan.outChannels] };
  }
  if (shape[1] !== plan.inChannels) {
    throw opError(
      op,
      `XM has ${shape[1]} channels, WM [${weights.shape}] with group ${plan.group} needs ${plan.inChannels}`,
    );
  }
  const geometry = layerGeometryOf(op, shape, weights.shape);
  return { geometry, outShape: [shape[0], plan.outChannels, ...geometry.outShape] };
}

/**
 * The result type of a lowered layer for an input of type `x`: f32 `[N, O, ...out]` (Conv) or `[..., O]` (Gemm).
 */
export function bfpLayerResultType(plan: BfpLayerPlan, x: TensorType | null): TensorType {
  if (x === null || x.shape === null) return { elem: "f32", shape: null };
  const { op, weights } = plan;
  if (plan.kind === "gemm") return { elem: "f32", shape: [...x.shape.slice(0, -1), plan.outChannels] };
  const b = plan.bias === null ? null : [plan.outChannels];
  return { elem: "f32", shape: convShape(op, x.shape, weights.shape, b).out };
}

/**
 * A layer's Quantize must block what the layer reduces: a Conv's channel axis 1, a Gemm's last axis (its rows are
 * the samples).
 */
function checkChannelAxis(op: Op, kind: "conv" | "gemm", input: BfpQuantizePlan, rank: number): void {
  const axis = input.blocking.axis;
  const expected = kind === "conv" ? 1 : rank - 1;
  const normalized = axis < 0 ? axis + rank : axis;
  if (normalized !== expected) {
    throw opError(
      op,
      `its Quantize "${input.op.name}" blocks axis ${axis} of the rank-${rank} input; ` +
        `the layer reduces axis ${expected} (${kind === "conv" ? "channels" : "the last"})`,
    );
  }
}

function layerGeometryOf(op: Op, x: readonly Dim[], w: readonly number[]): WindowGeometry {
  const { window, attrs } = convShape(op, x, w, null);
  if (window === null || attrs === null) throw opError(op, "needs a known kernel shape");
  return geometryOf(x.slice(2) as number[], window, attrs);
}

function weightPlan(op: Op, wm: Value, we: Value, input: BfpQuantizePlan): BfpWeightPlan {
  const format = input.format;
  const mantissas = wm.constant, exponents = we.constant;
  if (mantissas === null || exponents === null) {
    throw opError(op, `weights "${wm.name}" and "${we.name}" must be constants (BFP weights are formatted offline)`);
  }
  const block = input.blocking.block;
  checkElement(op, `weight mantissas "${wm.name}"`, wm, format, block);
  const storage = bfpStorage(format.mantissaBits);
  if (mantissas.dtype !== storage) {
    throw opError(
      op,
      `weight mantissas "${wm.name}" (${format.mantissaBits} bits) must be stored as ${storage}, found ${mantissas.dtype}`,
    );
  }
  if (exponents.dtype !== "i8") throw opError(op, `weight exponents "${we.name}" must be i8, found ${exponents.dtype}`);
  const shape = mantissas.shape;
  if (shape.length < 2) throw opError(op, `weight mantissas "${wm.name}" must have rank >= 2, found [${shape}]`);
  const exponentShape = weightExponentShape(shape, block);
  if (exponents.shape.join(",") !== exponentShape.join(",")) {
    throw opError(
      op,
      `weight exponents "${we.name}" must have shape [${exponentShape}] for mantissas [${shape}] with block ` +
        `${block}, found [${exponents.shape}]`,
    );
  }
  const e = exponents.data as Int8Array;
  const { min, max } = exponentRange(format);
  for (let i = 0; i < e.length; i++) {
    if (e[i] < min || e[i] > max) {
      throw opError(op, `weight exponent ${e[i]} of "${we.name}" (element ${i}) is outside [${min}, ${max}]`);
    }
  }
  return {
    mantissaValue: wm,
    exponentValue: we,
    mantissas: mantissas.data as Int8Array | Int16Array,
    exponents: e,
    shape,
    exponentShape,
    block,
  };
}

function biasPlan(op: Op, b: Value, outChannels: number, width: number): BfpBiasPlan {
  const t = b.constant;
  if (t === null || t.dtype !== "f32" || shapeSize(t.shape) !== outChannels || t.shape.length !== 1) {
    throw opError(op, `B "${b.name}" must be an f32 constant of shape [${outChannels}]`);
  }
  const values = t.data as Float32Array;
  const units = new Int32Array(outChannels);
  for (let oc = 0; oc < outChannels; oc++) {
    const v = values[oc];
    if (!Number.isFinite(v)) {
      throw opError(op, `bias ${oc} of "${b.name}" is ${v} (only finite values have a BFP form)`);
    }
    units[oc] = v === 0 ? NO_BIAS_UNIT : floorLog2(Math.abs(v)) + 1 - width;
  }
  return { value: b, values, units };
}

function tensorTypeOf(v: Value): TensorType | null {
  const t = v.type;
  return t !== null && "elem" in t ? t : null;
}

/** The BFP element type of a value, or null (no type yet); throws when it has another element type. */
function checkElement(op: Op, what: string, v: Value, format: BfpFormat, block: number): BfpType | null {
  const type = tensorTypeOf(v);
  if (type === null) return null;
  const elem = type.elem;
  const expected = `bfp<mantissa=${format.mantissaBits}, exponent=${format.exponentBits}, block=${block}>`;
  if (typeof elem !== "object" || elem.kind !== "bfp") {
    throw opError(op, `${what} must have type ${expected}, found ${typeof elem === "string" ? elem : elem.kind}`);
  }
  if (elem.mantissa !== format.mantissaBits || elem.exponent !== format.exponentBits || elem.block !== block) {
    const found = `bfp<mantissa=${elem.mantissa}, exponent=${elem.exponent}, block=${elem.block}>`;
    throw opError(op, `${what} is ${found}, but its format is ${expected}`);
  }
  return elem;
}

/** Element type of the mantissas of a format and blocking (what the `bfp` pass writes). */
export function bfpElementType(format: BfpFormat, block: number): BfpType {
  return { kind: "bfp", mantissa: format.mantissaBits, exponent: format.exponentBits, block };
}

/**
 * How the mantissas of a block-floating-point tensor are stored (`i8` up to 8 bits, else `i16`), or null when
 * `type`'s elements are not bfp: what a target allocates for a lowered layer's operand.
 */
export function bfpMantissaStorage(type: TensorType): "i8" | "i16" | null {
  const elem = type.elem;
  return typeof elem === "object" && elem.kind === "bfp" ? bfpStorage(elem.mantissa) : null;
}
