/**
 * Neural-network ops: convolution, pooling, normalization, Gemm and MatMul,
 * each with shape inference, a reference kernel and a MAC count. Kernels live
 * in `conv_kernels.ts` and `gemm_kernel.ts`.
 *
 * MACs count one multiply-accumulate per weight tap per output (Conv:
 * `prod(kernel) * Cin/group * Cout * prod(outSpatial)`, Gemm/MatMul: `M*K*N`)
 * times the batch; a symbolic batch counts as 1. Normalization and pooling ops
 * have no weights to multiply by and count 0.
 * @module
 */
import { convChannels, gemmChannels, matmulChannels, normChannels, sameChannels } from "./channels.ts";
import type { Op } from "../graph.ts";
import type { InferContext, KernelContext, OpDef } from "../op_def.ts";
import { fromFloat64, shapeSize, type Tensor, tensor, toFloat64 } from "../tensor.ts";
import type { Dim, DType, TensorType } from "../types.ts";
import { broadcastShapes, dimProduct, isStatic, opError } from "./common.ts";
import {
  averagePool,
  convolve,
  convolveTranspose,
  dotRows,
  maxPool,
  type NumberArray,
  type WindowGeometry,
} from "./conv_kernels.ts";
import { type FloatArray, gemm } from "./gemm_kernel.ts";

// ---------------------------------------------------------------------------
// Element types and float views

/** The storage a kernel computes in: float32 for f32/f16/bf16, float64 otherwise (f64, integers). */
function floatData(op: Op, t: Tensor, what: string): FloatArray {
  switch (t.dtype) {
    case "f32":
      return t.data as Float32Array;
    case "f64":
      return t.data as Float64Array;
    case "f16":
    case "bf16":
      return Float32Array.from(toFloat64(t));
    case "i8":
    case "i16":
    case "i32":
    case "i64":
    case "u8":
    case "u16":
    case "u32":
    case "u64":
      return toFloat64(t);
    default:
      throw opError(op, `${what} has element type ${t.dtype}, which this op does not support`);
  }
}

/** Zeroed compute storage matching `dtype` (see {@linkcode floatData}). */
function floatStorage(dtype: DType, n: number): FloatArray {
  return dtype === "f32" || dtype === "f16" || dtype === "bf16" ? new Float32Array(n) : new Float64Array(n);
}

/**
 * Compute storage matching `dtype` for a kernel that writes every element:
 * recycled by the interpreter when it can (contents unspecified), else zeroed.
 */
function resultStorage(ctx: KernelContext, dtype: DType, n: number): FloatArray {
  if (ctx.alloc === undefined) return floatStorage(dtype, n);
  return ctx.alloc(dtype === "f64" ? "f64" : "f32", n) as FloatArray;
}

/** A result tensor of `dtype` from compute storage (converting back for f16, bf16 and integers). */
function floatResult(dtype: DType, shape: readonly number[], data: FloatArray): Tensor {
  if ((dtype === "f32" && data instanceof Float32Array) || (dtype === "f64" && data instanceof Float64Array)) {
    return tensor(dtype, shape, data);
  }
  return fromFloat64(dtype, shape, data);
}

/** Operand `i` as a tensor; throws naming the op when a required operand is missing. */
function required(op: Op, inputs: readonly (Tensor | null)[], i: number, what: string): Tensor {
  const t = inputs[i];
  if (t === null || t === undefined) throw opError(op, `missing required input ${what}`);
  return t;
}

function shapeText(shape: readonly Dim[]): string {
  return `[${shape.join(",")}]`;
}

/** The tensor type of operand `i`, null when omitted or unknown. */
function operandType(ctx: InferContext, i: number): TensorType | null {
  return ctx.types[i] ?? null;
}

/** Two operands must share a plain element type (parametric compressed types are not compared). */
function checkSameElem(op: Op, a: TensorType | null, b: TensorType | null, what: string): void {
  if (a === null || b === null || typeof a.elem !== "string" || typeof b.elem !== "string") return;
  if (a.elem !== b.elem) throw opError(op, `${what} must have the element type of X (${a.elem}), found ${b.elem}`);
}

// ---------------------------------------------------------------------------
// Window attributes (Conv, ConvTranspose, pools)

/** Sliding-window attributes after defaults, for `rank` spatial axes. */
export interface WindowAttrs {
  kernel: number[];
  strides: number[];
  dilations: number[];
  /** ONNX layout: `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`. */
  pads: number[];
  autoPad: string;
  ceilMode: boolean;
}

function intsOfLength(op: Op, name: string, rank: number, fallback: number): number[] {
  const v = op.ints(name);
  if (v === undefined) return new Array<number>(rank).fill(fallback);
  if (v.length !== rank) {
    throw opError(op, `attribute "${name}" must have ${rank} values (one per spatial axis), found ${v.length}`);
  }
  return [...v];
}

/** Read and check strides, dilations, pads, auto_pad and ceil_mode for `kernel` over `rank` spatial axes. */
function windowAttrs(op: Op, kernel: readonly number[]): WindowAttrs {
  const rank = kernel.length;
  const strides = intsOfLength(op, "strides", rank, 1);
  const dilations = intsOfLength(op, "dilations", rank, 1);
  const autoPad = op.string("auto_pad", "NOTSET");
  if (!["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"].includes(autoPad)) {
    throw opError(op, `auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, found "${autoPad}"`);
  }
  let pads = new Array<number>(2 * rank).fill(0);
  const given = op.ints("pads");
  if (given !== undefined) {
    if (given.length !== 2 * rank) {
      throw opError(
        op,
        `attribute "pads" must have ${2 * rank} values (begin and end per spatial axis), found ${given.length}`,
      );
    }
    if (autoPad === "NOTSET") pads = [...given];
  }
  if (kernel.some((k) => !(k >= 1))) throw opError(op, `kernel_shape must be positive, found ${shapeText(kernel)}`);
  if (strides.some((s) => !(s >= 1))) throw opError(op, `strides must be positive, found ${shapeText(strides)}`);
  if (dilations.some((d) => !(d >= 1))) throw opError(op, `dilations must be positive, found ${shapeText(dilations)}`);
  if (pads.some((p) => p < 0)) throw opError(op, `pads must not be negative, found ${shapeText(pads)}`);
  return { kernel: [...kernel], strides, dilations, pads, autoPad, ceilMode: op.int("ceil_mode", 0) === 1 };
}

/** Spatial output sizes and resolved pads; unknown (`"?"`) where an input size is symbolic. */
export interface WindowShape {
  out: Dim[];
  padsBegin: number[];
  padsEnd: number[];
}

/**
 * Output size per axis, following the ONNX Conv/Pool formulas:
 * `floor((in + padBegin + padEnd - dilation*(k-1) - 1) / stride + 1)` (ceil with
 * `ceil_mode`, dropping a last window that would start in the end padding, as
 * PyTorch and onnxruntime do), `ceil(in / stride)` for SAME_* with the
 * total padding split evenly and the odd one at the end (UPPER) or the
 * beginning (LOWER).
 */
function windowShape(op: Op, inDims: readonly Dim[], a: WindowAttrs): WindowShape {
  const rank = a.kernel.length;
  const out: Dim[] = [];
  const padsBegin = a.pads.slice(0, rank);
  const padsEnd = a.pads.slice(rank);
  for (let d = 0; d < rank; d++) {
    const size = inDims[d];
    const span = a.dilations[d] * (a.kernel[d] - 1) + 1;
    if (typeof size !== "number") {
      out.push("?");
      continue;
    }
    if (a.autoPad === "SAME_UPPER" || a.autoPad === "SAME_LOWER") {
      const o = Math.ceil(size / a.strides[d]);
      const total = Math.max(0, (o - 1) * a.strides[d] + span - size);
      const small = Math.floor(total / 2);
      padsBegin[d] = a.autoPad === "SAME_UPPER" ? small : total - small;
      padsEnd[d] = total - padsBegin[d];
      out.push(o);
      continue;
    }
    const padded = size + padsBegin[d] + padsEnd[d];
    if (padded < span) {
      const window = `window of ${span} (kernel ${a.kernel[d]}, dilation ${a.dilations[d]})`;
      throw opError(
        op,
        `${window} does not fit spatial axis ${d} of size ${size} with pads ${padsBegin[d]}+${padsEnd[d]}`,
      );
    }
    let o = (a.ceilMode ? Math.ceil((padded - span) / a.strides[d]) : Math.floor((padded - span) / a.strides[d])) + 1;
    if (a.ceilMode && (o - 1) * a.strides[d] >= size + padsBegin[d]) o--;
    out.push(o);
  }
  return { out, padsBegin, padsEnd };
}

/** The kernel geometry of a window op once the input's spatial sizes are known. */
export function geometryOf(inShape: readonly number[], shape: WindowShape, a: WindowAttrs): WindowGeometry {
  return {
    inShape,
    outShape: shape.out as number[],
    kernel: a.kernel,
    strides: a.strides,
    dilations: a.dilations,
    padsBegin: shape.padsBegin,
  };
}

/**
 * The kernel geometry of a Conv for static input and weight shapes (what a code generator loops over).
 *
 * @throws {Error} Naming the op, for bad window attributes or shapes.
 */
export function convGeometry(op: Op, x: readonly number[], w: readonly number[]): WindowGeometry {
  const { attrs, window } = convShape(op, x, w, null);
  if (attrs === null || window === null) throw opError(op, "the kernel shape is unknown");
  return geometryOf(x.slice(2), window, attrs);
}

/**
 * The window geometry of a MaxPool/AveragePool for a static input shape, with the end pads (AveragePool's
 * `count_include_pad` counts them).
 *
 * @throws {Error} Naming the op, for bad window attributes or shapes.
 */
export function poolGeometry(op: Op, x: readonly number[]): { geometry: WindowGeometry; padsEnd: number[] } {
  const { attrs, window } = poolShape(op, x);
  return { geometry: geometryOf(x.slice(2), window, attrs), padsEnd: window.padsEnd };
}

/** X must have rank >= 3 (`[N, C, spatial...]`). */
function checkSpatialInput(op: Op, shape: readonly Dim[], what = "X"): void {
  if (shape.length < 3) {
    throw opError(op, `${what} must have rank >= 3 ([N, C, spatial...]), found ${shapeText(shape)}`);
  }
}

// ---------------------------------------------------------------------------
// Conv

/** Kernel sizes of a Conv/ConvTranspose: the `kernel_shape` attribute, checked against W's spatial dims. */
function convKernel(op: Op, w: readonly Dim[], rank: number): number[] | null {
  const attr = op.ints("kernel_shape");
  const fromW = w.slice(2);
  if (attr !== undefined) {
    if (attr.length !== rank) {
      throw opError(op, `kernel_shape must have ${rank} values (one per spatial axis), found ${attr.length}`);
    }
    fromW.forEach((d, i) => {
      if (typeof d === "number" && d !== attr[i]) {
        throw opError(op, `kernel_shape ${shapeText(attr)} does not match W's spatial dims ${shapeText(fromW)}`);
      }
    });
    return [...attr];
  }
  return isStatic(fromW) ? [...fromW] : null;
}

/** A Conv's result shape with its window attributes and resolved pads (null when the kernel is unknown). */
export interface ConvShape {
  out: Dim[];
  attrs: WindowAttrs | null;
  window: WindowShape | null;
}

/** Check a Conv's operands and compute its result shape. */
export function convShape(op: Op, x: readonly Dim[], w: readonly Dim[], bias: readonly Dim[] | null): ConvShape {
  checkSpatialInput(op, x);
  if (w.length !== x.length) {
    throw opError(op, `W must have the rank of X (${x.length}), found ${shapeText(w)} for X ${shapeText(x)}`);
  }
  const group = op.int("group", 1);
  if (!(group >= 1)) throw opError(op, `group must be positive, found ${group}`);
  const [cin, cout, wcin] = [x[1], w[0], w[1]];
  if (typeof cin === "number" && typeof wcin === "number" && cin !== wcin * group) {
    const expected = `expected W.shape[1] * group = ${wcin * group}`;
    throw opError(op, `input channels ${cin} do not match W ${shapeText(w)} with group ${group} (${expected})`);
  }
  if (typeof cout === "number" && cout % group !== 0) {
    throw opError(op, `output channels ${cout} (W.shape[0]) are not divisible by group ${group}`);
  }
  if (
    bias !== null &&
    (bias.length !== 1 || (typeof bias[0] === "number" && typeof cout === "number" && bias[0] !== cout))
  ) {
    throw opError(op, `B must have shape [${cout}] (one bias per output channel), found ${shapeText(bias)}`);
  }
  const rank = x.length - 2;
  const kernel = convKernel(op, w, rank);
  if (kernel === null) return { out: [x[0], cout, ...new Array<Dim>(rank).fill("?")], attrs: null, window: null };
  const attrs = windowAttrs(op, kernel);
  const window = windowShape(op, x.slice(2), attrs);
  return { out: [x[0], cout, ...window.out], attrs, window };
}

/** Shape inference of Conv and ConvTranspose: the element type of X, the shape from `shapeOf`. */
function inferConvLike(
  shapeOf: (op: Op, x: readonly Dim[], w: readonly Dim[], b: readonly Dim[] | null) => { out: Dim[] },
): (op: Op, ctx: InferContext) => (TensorType | null)[] {
  return (op, ctx) => {
    const x = operandType(ctx, 0);
    const w = operandType(ctx, 1);
    const b = operandType(ctx, 2);
    checkSameElem(op, x, w, "W");
    if (x === null) return [null];
    if (x.shape === null || w === null || w.shape === null) return [{ elem: x.elem, shape: null }];
    return [{ elem: x.elem, shape: shapeOf(op, x.shape, w.shape, b?.shape ?? null).out }];
  };
}

function interpretConv(op: Op, inputs: readonly (Tensor | null)[], ctx: KernelContext): Tensor[] {
  return interpretConvClamped(op, inputs, ctx, null);
}

/**
 * A Conv whose result is clamped to `[lo, hi]` as it is written (`t = x < lo ? lo : x`, then `t > hi ? hi : t`):
 * a Conv followed by Relu (`[0, Infinity]`) or Clip in one pass, the same numbers as the two ops.
 *
 * @param op The Conv.
 * @param inputs Its operands.
 * @param ctx The interpreter's context.
 * @param clamp The bounds, or null for a plain Conv.
 * @returns The clamped result.
 *
 * @example Conv then Relu on a 1x1 kernel
 * ```ts
 * import assert from "node:assert/strict";
 * import { Op, Value } from "../graph.ts";
 * import { float32Tensor } from "../tensor.ts";
 * import { interpretConvClamped } from "./nn.ts";
 * const op = new Op({ name: "c", type: "Conv", operands: [new Value("x"), new Value("w")], results: [new Value("y")] });
 * const x = float32Tensor([1, 1, 1, 3], [1, -2, 3]);
 * const [y] = interpretConvClamped(op, [x, float32Tensor([1, 1, 1, 1], [2])], { opset: 13 }, [0, Infinity]);
 * assert.deepEqual([...y.data], [2, 0, 6]);
 * ```
 */
export function interpretConvClamped(
  op: Op,
  inputs: readonly (Tensor | null)[],
  ctx: KernelContext,
  clamp: readonly [number, number] | null,
): Tensor[] {
  const xt = required(op, inputs, 0, "X");
  const wt = required(op, inputs, 1, "W");
  const bt = inputs[2] ?? null;
  const { out, attrs, window } = convShape(op, xt.shape, wt.shape, bt?.shape ?? null);
  const outShape = out as number[];
  const x = floatData(op, xt, "X");
  const y = resultStorage(ctx, xt.dtype, shapeSize(outShape));
  const w = sameStorage(floatData(op, wt, "W"), x);
  convolve({
    x,
    w,
    // A module's weights are never written: their packed form can be kept between runs.
    constantWeights: wt === op.operands[1]?.constant && w === wt.data,
    bias: bt === null ? null : sameStorage(floatData(op, bt, "B"), x),
    y,
    batch: xt.shape[0],
    inChannels: xt.shape[1],
    outChannels: wt.shape[0],
    group: op.int("group", 1),
    ...geometryOf(xt.shape.slice(2), window!, attrs!),
    ...(clamp === null ? {} : { clamp }),
  });
  return [floatResult(xt.dtype, outShape, y)];
}

/** `data` in the storage type of `like` (weights of another precision than X are converted once). */
function sameStorage(data: FloatArray, like: FloatArray): FloatArray {
  if (data instanceof Float32Array === like instanceof Float32Array) return data;
  return like instanceof Float32Array ? Float32Array.from(data) : Float64Array.from(data);
}

/** Static size of a dim for MAC counting: a symbolic dim (the batch) counts as 1. */
function countDim(d: Dim | undefined): number {
  return typeof d === "number" ? d : 1;
}

function countProduct(dims: readonly Dim[]): number {
  let p = 1;
  for (const d of dims) p *= countDim(d);
  return p;
}

function macsConv(_op: Op, operands: readonly (TensorType | null)[], results: readonly (TensorType | null)[]): number {
  const x = operands[0]?.shape;
  const w = operands[1]?.shape;
  const y = results[0]?.shape;
  if (!x || !w || !y || !isStatic(w) || !isStatic(y.slice(1))) return 0;
  // Per output element: one MAC per weight tap of its group, prod(kernel) * Cin/group = prod(W.shape[1:]).
  return countDim(y[0]) * shapeSize(w.slice(1)) * countProduct(y.slice(1));
}

// ---------------------------------------------------------------------------
// ConvTranspose

interface ConvTransposeShape {
  out: Dim[];
  geometry: WindowGeometry | null;
}

/**
 * Output shape and pads of ConvTranspose (ONNX opset 11):
 * `out = stride*(in-1) + output_padding + dilation*(k-1) + 1 - padBegin - padEnd`;
 * with `output_shape` (or SAME_*, which asks for `in * stride`) the total padding
 * is derived and split as the spec says: the odd one at the end for SAME_UPPER,
 * at the beginning otherwise (a negative total, an output larger than the full
 * result, leaves the extra rows at the end).
 */
function convTransposeShape(
  op: Op,
  x: readonly Dim[],
  w: readonly Dim[],
  bias: readonly Dim[] | null,
): ConvTransposeShape {
  checkSpatialInput(op, x);
  if (w.length !== x.length) {
    throw opError(op, `W must have the rank of X (${x.length}), found ${shapeText(w)} for X ${shapeText(x)}`);
  }
  const group = op.int("group", 1);
  if (!(group >= 1)) throw opError(op, `group must be positive, found ${group}`);
  const [cin, wcin, wcout] = [x[1], w[0], w[1]];
  if (typeof cin === "number" && typeof wcin === "number" && cin !== wcin) {
    throw opError(op, `input channels ${cin} do not match W ${shapeText(w)} (expected W.shape[0] = ${cin})`);
  }
  if (typeof wcin === "number" && wcin % group !== 0) {
    throw opError(op, `input channels ${wcin} (W.shape[0]) are not divisible by group ${group}`);
  }
  const cout: Dim = typeof wcout === "number" ? wcout * group : "?";
  if (
    bias !== null &&
    (bias.length !== 1 || (typeof bias[0] === "number" && typeof cout === "number" && bias[0] !== cout))
  ) {
    throw opError(op, `B must have shape [${cout}] (one bias per output channel), found ${shapeText(bias)}`);
  }
  const rank = x.length - 2;
  const kernel = convKernel(op, w, rank);
  if (kernel === null) return { out: [x[0], cout, ...new Array<Dim>(rank).fill("?")], geometry: null };
  const a = windowAttrs(op, kernel);
  const outputPadding = intsOfLength(op, "output_padding", rank, 0);
  let outputShape = op.ints("output_shape");
  if (outputShape !== undefined) {
    if (outputShape.length === rank + 2) outputShape = outputShape.slice(2);
    if (outputShape.length !== rank) {
      throw opError(op, `output_shape must have ${rank} values (one per spatial axis), found ${outputShape.length}`);
    }
  }
  const inDims = x.slice(2);
  const out: Dim[] = [];
  const padsBegin = a.pads.slice(0, rank);
  for (let d = 0; d < rank; d++) {
    const size = inDims[d];
    if (typeof size !== "number") {
      out.push(outputShape?.[d] ?? "?");
      continue;
    }
    const full = a.strides[d] * (size - 1) + outputPadding[d] + a.dilations[d] * (a.kernel[d] - 1) + 1;
    const wanted = outputShape?.[d] ??
      (a.autoPad === "SAME_UPPER" || a.autoPad === "SAME_LOWER" ? size * a.strides[d] : null);
    if (wanted === null) {
      const o = full - a.pads[d] - a.pads[d + rank];
      if (o < 1) throw opError(op, `output spatial axis ${d} would have size ${o}`);
      out.push(o);
      continue;
    }
    const total = Math.max(0, full - wanted);
    padsBegin[d] = a.autoPad === "SAME_UPPER" ? Math.floor(total / 2) : total - Math.floor(total / 2);
    out.push(wanted);
  }
  const geometry = isStatic(inDims) && isStatic(out)
    ? { inShape: inDims, outShape: out, kernel, strides: a.strides, dilations: a.dilations, padsBegin }
    : null;
  return { out: [x[0], cout, ...out], geometry };
}

function interpretConvTranspose(op: Op, inputs: readonly (Tensor | null)[]): Tensor[] {
  const xt = required(op, inputs, 0, "X");
  const wt = required(op, inputs, 1, "W");
  const bt = inputs[2] ?? null;
  const { out, geometry } = convTransposeShape(op, xt.shape, wt.shape, bt?.shape ?? null);
  const outShape = out as number[];
  const x = floatData(op, xt, "X");
  const y = floatStorage(xt.dtype, shapeSize(outShape));
  convolveTranspose({
    x,
    w: sameStorage(floatData(op, wt, "W"), x),
    bias: bt === null ? null : sameStorage(floatData(op, bt, "B"), x),
    y,
    batch: xt.shape[0],
    inChannels: xt.shape[1],
    outChannels: outShape[1],
    group: op.int("group", 1),
    ...geometry!,
  });
  return [floatResult(xt.dtype, outShape, y)];
}

function macsConvTranspose(
  _op: Op,
  operands: readonly (TensorType | null)[],
  _results: readonly (TensorType | null)[],
): number {
  const x = operands[0]?.shape;
  const w = operands[1]?.shape;
  if (!x || !w || !isStatic(w) || !isStatic(x.slice(1))) return 0;
  // Every input element is multiplied by each of its group's Cout/group * prod(kernel) weights.
  return countDim(x[0]) * countProduct(x.slice(1)) * shapeSize(w.slice(1));
}

// ---------------------------------------------------------------------------
// Pools

function poolKernel(op: Op, rank: number): number[] {
  const kernel = op.ints("kernel_shape");
  if (kernel === undefined) throw opError(op, `missing required attribute "kernel_shape"`);
  if (kernel.length !== rank) {
    throw opError(op, `kernel_shape must have ${rank} values (one per spatial axis of X), found ${kernel.length}`);
  }
  return [...kernel];
}

function poolShape(op: Op, x: readonly Dim[]): { out: Dim[]; attrs: WindowAttrs; window: WindowShape } {
  checkSpatialInput(op, x);
  const attrs = windowAttrs(op, poolKernel(op, x.length - 2));
  const window = windowShape(op, x.slice(2), attrs);
  return { out: [x[0], x[1], ...window.out], attrs, window };
}

function inferMaxPool(op: Op, ctx: InferContext): (TensorType | null)[] {
  const x = operandType(ctx, 0);
  if (x === null) return [null, null];
  if (x.shape === null) return [{ elem: x.elem, shape: null }, { elem: "i64", shape: null }];
  const out = poolShape(op, x.shape).out;
  return [{ elem: x.elem, shape: out }, { elem: "i64", shape: out }];
}

function inferAveragePool(op: Op, ctx: InferContext): (TensorType | null)[] {
  const x = operandType(ctx, 0);
  if (x === null) return [null];
  if (x.shape === null) return [{ elem: x.elem, shape: null }];
  return [{ elem: x.elem, shape: poolShape(op, x.shape).out }];
}

/** Integer dtypes whose storage MaxPool reads as stored (ONNX MaxPool takes int8 and uint8 since opset 12). */
const POOLED_AS_STORED = new Set<DType>(["i8", "u8", "i16", "u16", "i32", "u32"]);

/** Element storage a pool reads: integers as stored, floats via {@linkcode floatData}. */
function poolData(op: Op, t: Tensor): NumberArray {
  return POOLED_AS_STORED.has(t.dtype) ? t.data as NumberArray : floatData(op, t, "X");
}

/** True when result `i` of `op` is consumed (a use or a graph output). */
function resultUsed(op: Op, i: number): boolean {
  const r = op.results[i];
  if (r === undefined || r.name === "") return false;
  return r.uses.length > 0 || (r.graph?.outputs.includes(r) ?? false);
}

function interpretMaxPool(op: Op, inputs: readonly (Tensor | null)[], ctx: KernelContext): Tensor[] {
  const xt = required(op, inputs, 0, "X");
  const { out, attrs, window } = poolShape(op, xt.shape);
  const outShape = out as number[];
  const x = poolData(op, xt);
  const integer = !(x instanceof Float32Array || x instanceof Float64Array);
  const y = integer
    ? new (x.constructor as new (n: number) => NumberArray)(shapeSize(outShape))
    : resultStorage(ctx, xt.dtype, shapeSize(outShape));
  const wantIndices = op.results.length > 1;
  const indices = wantIndices ? new BigInt64Array(shapeSize(outShape)) : undefined;
  maxPool(
    { x, y, planes: xt.shape[0] * xt.shape[1], ...geometryOf(xt.shape.slice(2), window, attrs) },
    { indices, storageOrder: op.int("storage_order", 0) },
  );
  const result = integer
    ? tensor(xt.dtype, outShape, y as Exclude<NumberArray, FloatArray>)
    : floatResult(xt.dtype, outShape, y as FloatArray);
  return indices === undefined ? [result] : [result, tensor("i64", outShape, indices)];
}

function interpretAveragePool(op: Op, inputs: readonly (Tensor | null)[], ctx: KernelContext): Tensor[] {
  const xt = required(op, inputs, 0, "X");
  const { out, attrs, window } = poolShape(op, xt.shape);
  const outShape = out as number[];
  const x = floatData(op, xt, "X");
  const y = resultStorage(ctx, xt.dtype, shapeSize(outShape));
  averagePool(
    { x, y, planes: xt.shape[0] * xt.shape[1], ...geometryOf(xt.shape.slice(2), window, attrs) },
    { countIncludePad: op.flag("count_include_pad"), padsEnd: window.padsEnd },
  );
  return [floatResult(xt.dtype, outShape, y)];
}

function inferGlobalPool(op: Op, ctx: InferContext): (TensorType | null)[] {
  const x = operandType(ctx, 0);
  if (x === null) return [null];
  if (x.shape === null) return [{ elem: x.elem, shape: null }];
  checkSpatialInput(op, x.shape);
  return [{ elem: x.elem, shape: [x.shape[0], x.shape[1], ...x.shape.slice(2).map(() => 1)] }];
}

function globalPool(
  op: Op,
  inputs: readonly (Tensor | null)[],
  ctx: KernelContext,
  mode: "max" | "average",
): Tensor[] {
  const xt = required(op, inputs, 0, "X");
  checkSpatialInput(op, xt.shape);
  const x = floatData(op, xt, "X");
  const planes = xt.shape[0] * xt.shape[1];
  const plane = shapeSize(xt.shape.slice(2));
  const y = resultStorage(ctx, xt.dtype, planes);
  for (let p = 0; p < planes; p++) {
    const off = p * plane;
    if (mode === "max") {
      let best = -Infinity;
      for (let i = 0; i < plane; i++) if (x[off + i] > best || Number.isNaN(x[off + i])) best = x[off + i];
      y[p] = best;
    } else {
      // Four float64 partial sums (elements i mod 4), then the rest: a quarter of the dependent additions.
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      const whole = plane - (plane % 4);
      for (let i = off; i < off + whole; i += 4) s0 += x[i], s1 += x[i + 1], s2 += x[i + 2], s3 += x[i + 3];
      let sum = (s0 + s1) + (s2 + s3);
      for (let i = off + whole; i < off + plane; i++) sum += x[i];
      y[p] = sum / plane;
    }
  }
  return [floatResult(xt.dtype, [xt.shape[0], xt.shape[1], ...xt.shape.slice(2).map(() => 1)], y)];
}

// ---------------------------------------------------------------------------
// Normalization

function checkChannelParam(op: Op, shape: readonly Dim[] | null, channels: Dim, what: string): void {
  if (shape === null) return;
  if (shape.length !== 1 || (typeof shape[0] === "number" && typeof channels === "number" && shape[0] !== channels)) {
    throw opError(op, `${what} must have shape [${channels}] (one value per channel), found ${shapeText(shape)}`);
  }
}

/** Old BatchNormalization (opset < 9) with `spatial = 0` has per-activation parameters `[C, spatial...]`. */
function perActivation(op: Op, opset: number): boolean {
  return opset < 9 && op.int("spatial", 1) === 0;
}

/** Names of BatchNormalization's optional outputs in `opset`. */
function batchNormExtraOutputs(opset: number): string[] {
  return opset >= 14 ? ["running_mean", "running_var"] : ["mean", "var", "saved_mean", "saved_var"];
}

function inferBatchNorm(op: Op, ctx: InferContext): (TensorType | null)[] {
  const x = operandType(ctx, 0);
  if (x === null) return [null];
  const channels: Dim = x.shape?.[1] ?? "?";
  if (x.shape !== null && x.shape.length < 2) {
    throw opError(op, `X must have rank >= 2 ([N, C, ...]), found ${shapeText(x.shape)}`);
  }
  const names = ["scale", "B", "mean", "var"];
  for (let i = 1; i <= 4; i++) {
    const t = operandType(ctx, i);
    if (t === null || x.shape === null) continue;
    if (perActivation(op, ctx.opset)) {
      const expected = x.shape.slice(1);
      const size = t.shape === null ? null : dimProduct(t.shape);
      const want = dimProduct(expected);
      if (typeof size === "number" && typeof want === "number" && size !== want && size !== channels) {
        throw opError(
          op,
          `${names[i - 1]} must have shape ${shapeText(expected)} (spatial = 0), found ${shapeText(t.shape!)}`,
        );
      }
    } else {
      checkChannelParam(op, t.shape, channels, names[i - 1]);
    }
  }
  const stat: TensorType = { elem: operandType(ctx, 3)?.elem ?? x.elem, shape: [channels] };
  return [x, ...op.results.slice(1).map(() => stat)];
}

function interpretBatchNorm(op: Op, inputs: readonly (Tensor | null)[], ctx: KernelContext): Tensor[] {
  if (ctx.opset >= 14 && op.flag("training_mode")) {
    throw opError(
      op,
      "training_mode = 1 is not supported: the interpreter runs BatchNormalization in inference mode only",
    );
  }
  const extras = batchNormExtraOutputs(ctx.opset);
  for (let i = 1; i < op.results.length; i++) {
    if (resultUsed(op, i)) {
      const output = extras[i - 1] ?? String(i);
      const why = "the interpreter runs BatchNormalization in inference mode only";
      throw opError(op, `output ${output} is only produced in training mode; ${why}`);
    }
  }
  const xt = required(op, inputs, 0, "X");
  const names = ["scale", "B", "mean", "var"];
  const params = [1, 2, 3, 4].map((i) => toFloat64(required(op, inputs, i, names[i - 1])));
  if (xt.shape.length < 2) throw opError(op, `X must have rank >= 2 ([N, C, ...]), found ${shapeText(xt.shape)}`);
  const [batch, channels] = xt.shape;
  const plane = shapeSize(xt.shape.slice(2));
  const epsilon = op.float("epsilon", 1e-5);
  // Per activation (old spatial = 0) parameters cover one whole sample; per channel ones, one plane.
  const perElement = params[0].length === channels * plane && params[0].length !== channels;
  const count = perElement ? channels * plane : channels;
  params.forEach((p, i) => {
    if (p.length !== count) {
      throw opError(op, `${names[i]} must have ${count} elements for X ${shapeText(xt.shape)}, found ${p.length}`);
    }
  });
  // y = (x - mean) / sqrt(var + epsilon) * scale + B = x * a + b with a, b folded per parameter.
  const a = new Float64Array(count);
  const b = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    a[i] = params[0][i] / Math.sqrt(params[3][i] + epsilon);
    b[i] = params[1][i] - params[2][i] * a[i];
  }
  const x = floatData(op, xt, "X");
  const y = ctx.reusable?.(0) === true && (xt.dtype === "f32" || xt.dtype === "f64")
    ? x
    : resultStorage(ctx, xt.dtype, x.length);
  for (let n = 0; n < batch; n++) {
    for (let c = 0; c < channels; c++) {
      const off = (n * channels + c) * plane;
      if (perElement) {
        const p0 = c * plane;
        for (let i = 0; i < plane; i++) y[off + i] = x[off + i] * a[p0 + i] + b[p0 + i];
      } else {
        const ac = a[c], bc = b[c];
        for (let i = 0; i < plane; i++) y[off + i] = x[off + i] * ac + bc;
      }
    }
  }
  return [floatResult(xt.dtype, xt.shape, y)];
}

function inferInstanceNorm(op: Op, ctx: InferContext): (TensorType | null)[] {
  const x = operandType(ctx, 0);
  if (x === null) return [null];
  if (x.shape !== null) {
    checkSpatialInput(op, x.shape, "input");
    checkChannelParam(op, operandType(ctx, 1)?.shape ?? null, x.shape[1], "scale");
    checkChannelParam(op, operandType(ctx, 2)?.shape ?? null, x.shape[1], "B");
  }
  return [x];
}

function interpretInstanceNorm(op: Op, inputs: readonly (Tensor | null)[]): Tensor[] {
  const xt = required(op, inputs, 0, "input");
  checkSpatialInput(op, xt.shape, "input");
  const scale = toFloat64(required(op, inputs, 1, "scale"));
  const bias = toFloat64(required(op, inputs, 2, "B"));
  const [batch, channels] = xt.shape;
  checkChannelParam(op, [scale.length], channels, "scale");
  checkChannelParam(op, [bias.length], channels, "B");
  const plane = shapeSize(xt.shape.slice(2));
  const epsilon = op.float("epsilon", 1e-5);
  const x = floatData(op, xt, "input");
  const y = floatStorage(xt.dtype, x.length);
  for (let n = 0; n < batch; n++) {
    for (let c = 0; c < channels; c++) {
      const off = (n * channels + c) * plane;
      let sum = 0;
      for (let i = 0; i < plane; i++) sum += x[off + i];
      const mean = sum / plane;
      let sq = 0;
      for (let i = 0; i < plane; i++) sq += (x[off + i] - mean) ** 2;
      const a = scale[c] / Math.sqrt(sq / plane + epsilon);
      const b = bias[c] - mean * a;
      for (let i = 0; i < plane; i++) y[off + i] = x[off + i] * a + b;
    }
  }
  return [floatResult(xt.dtype, xt.shape, y)];
}

function lrnSize(op: Op): number {
  const size = op.int("size");
  if (size === undefined) throw opError(op, `missing required attribute "size"`);
  if (!(size >= 1)) throw opError(op, `size must be positive, found ${size}`);
  return size;
}

function inferLrn(op: Op, ctx: InferContext): (TensorType | null)[] {
  lrnSize(op);
  const x = operandType(ctx, 0);
  if (x?.shape != null && x.shape.length < 3) {
    throw opError(op, `X must have rank >= 3 ([N, C, spatial...]), found ${shapeText(x.shape)}`);
  }
  return [x];
}

/**
 * LRN (ONNX): `y = x / (bias + alpha / size * square_sum)^beta`, the square sum
 * over channels `c - floor((size-1)/2) .. c + ceil((size-1)/2)`.
 */
function interpretLrn(op: Op, inputs: readonly (Tensor | null)[]): Tensor[] {
  const size = lrnSize(op);
  const xt = required(op, inputs, 0, "X");
  const alpha = op.float("alpha", 1e-4);
  const beta = op.float("beta", 0.75);
  const bias = op.float("bias", 1);
  const [batch, channels] = xt.shape;
  const plane = shapeSize(xt.shape.slice(2));
  const x = floatData(op, xt, "X");
  const y = floatStorage(xt.dtype, x.length);
  const before = Math.floor((size - 1) / 2);
  const after = Math.ceil((size - 1) / 2);
  for (let n = 0; n < batch; n++) {
    for (let c = 0; c < channels; c++) {
      const lo = Math.max(0, c - before);
      const hi = Math.min(channels - 1, c + after);
      const off = (n * channels + c) * plane;
      for (let i = 0; i < plane; i++) {
        let sq = 0;
        for (let k = lo; k <= hi; k++) {
          const v = x[(n * channels + k) * plane + i];
          sq += v * v;
        }
        y[off + i] = x[off + i] / (bias + (alpha / size) * sq) ** beta;
      }
    }
  }
  return [floatResult(xt.dtype, xt.shape, y)];
}

// ---------------------------------------------------------------------------
// Gemm and MatMul

interface GemmShape {
  m: Dim;
  k: Dim;
  n: Dim;
}

function gemmShape(op: Op, a: readonly Dim[], b: readonly Dim[], c: readonly Dim[] | null): GemmShape {
  if (a.length !== 2) throw opError(op, `A must be a matrix (rank 2), found ${shapeText(a)}`);
  if (b.length !== 2) throw opError(op, `B must be a matrix (rank 2), found ${shapeText(b)}`);
  const transA = op.flag("transA");
  const transB = op.flag("transB");
  const [m, ka] = transA ? [a[1], a[0]] : [a[0], a[1]];
  const [kb, n] = transB ? [b[1], b[0]] : [b[0], b[1]];
  if (typeof ka === "number" && typeof kb === "number" && ka !== kb) {
    const operands = `op(A) is ${shapeText([m, ka])} and op(B) is ${shapeText([kb, n])}`;
    throw opError(op, `inner dimensions differ: ${operands} (transA=${+transA}, transB=${+transB})`);
  }
  if (c !== null) {
    // C broadcasts unidirectionally to [M, N].
    const padded = [...new Array<Dim>(Math.max(0, 2 - c.length)).fill(1), ...c];
    const ok = c.length <= 2 && [m, n].every((d, i) => {
      const e = padded[i];
      return e === 1 || typeof e !== "number" || typeof d !== "number" || e === d;
    });
    if (!ok) throw opError(op, `C of shape ${shapeText(c)} does not broadcast to [${m},${n}]`);
  }
  return { m, k: typeof ka === "number" ? ka : kb, n };
}

function inferGemm(op: Op, ctx: InferContext): (TensorType | null)[] {
  const a = operandType(ctx, 0);
  const b = operandType(ctx, 1);
  checkSameElem(op, a, b, "B");
  if (a === null) return [null];
  if (a.shape === null || b === null || b.shape === null) return [{ elem: a.elem, shape: null }];
  const { m, n } = gemmShape(op, a.shape, b.shape, operandType(ctx, 2)?.shape ?? null);
  return [{ elem: a.elem, shape: [m, n] }];
}

/** Gemm: `Y = alpha * op(A) * op(B) + beta * C` with C broadcast to `[M, N]`. */
function interpretGemm(op: Op, inputs: readonly (Tensor | null)[], ctx: KernelContext): Tensor[] {
  const at = required(op, inputs, 0, "A");
  const bt = required(op, inputs, 1, "B");
  const ct = inputs[2] ?? null;
  const { m, k, n } = gemmShape(op, at.shape, bt.shape, ct?.shape ?? null) as { m: number; k: number; n: number };
  const a = floatData(op, at, "A");
  const y = resultStorage(ctx, at.dtype, m * n);
  const beta = op.float("beta", 1);
  if (ct !== null && beta !== 0) {
    const c = toFloat64(ct);
    const cm = ct.shape.length === 2 ? ct.shape[0] : 1;
    const cn = ct.shape.length >= 1 ? ct.shape[ct.shape.length - 1] : 1;
    for (let i = 0; i < m; i++) {
      const row = (cm === 1 ? 0 : i) * cn;
      for (let j = 0; j < n; j++) y[i * n + j] = c[row + (cn === 1 ? 0 : j)];
    }
  }
  const alpha = op.float("alpha", 1);
  if (m === 1 && op.flag("transB")) {
    // One row against B stored [N, K] (a Linear layer on one sample): dot products, no packing.
    const b = sameStorage(floatData(op, bt, "B"), a);
    const dots = a instanceof Float32Array ? new Float32Array(n) : new Float64Array(n);
    dotRows({ a: b, aOffset: 0, rows: n, k, x: a, xOffset: 0, y: dots, yOffset: 0, yStride: 1 });
    const keep = ct !== null ? beta : 0;
    for (let j = 0; j < n; j++) y[j] = alpha * dots[j] + (keep === 0 ? 0 : keep * y[j]);
    return [floatResult(at.dtype, [m, n], y)];
  }
  gemm({
    m,
    n,
    k,
    a,
    transA: op.flag("transA"),
    b: sameStorage(floatData(op, bt, "B"), a),
    transB: op.flag("transB"),
    c: y,
    alpha,
    beta: ct !== null ? beta : 0,
  });
  return [floatResult(at.dtype, [m, n], y)];
}

function macsGemm(op: Op, operands: readonly (TensorType | null)[]): number {
  const a = operands[0]?.shape;
  const b = operands[1]?.shape;
  if (!a || !b) return 0;
  const { m, k, n } = gemmShape(op, a, b, null);
  return countDim(m) * countDim(k) * countDim(n);
}

interface MatMulShape {
  /** Broadcast batch dims. */
  batch: Dim[];
  m: Dim;
  k: Dim;
  n: Dim;
  /** Result shape (1-D operands' unit dims removed). */
  out: Dim[];
}

/**
 * numpy.matmul shapes: 1-D A is `[1, K]`, 1-D B is `[K, 1]` (the unit dim dropped
 * from the result), batch dims broadcast.
 */
function matmulShape(op: Op, a: readonly Dim[], b: readonly Dim[]): MatMulShape {
  if (a.length === 0 || b.length === 0) {
    throw opError(op, `operands must have rank >= 1, found ${shapeText(a)} and ${shapeText(b)}`);
  }
  const a2 = a.length === 1 ? [1, a[0]] : a;
  const b2 = b.length === 1 ? [b[0], 1] : b;
  const [m, ka] = a2.slice(-2);
  const [kb, n] = b2.slice(-2);
  if (typeof ka === "number" && typeof kb === "number" && ka !== kb) {
    throw opError(op, `inner dimensions differ: A is ${shapeText(a)} and B is ${shapeText(b)}`);
  }
  const batch = broadcastShapes(op, [a2.slice(0, -2), b2.slice(0, -2)]);
  const out = [...batch, ...(a.length === 1 ? [] : [m]), ...(b.length === 1 ? [] : [n])];
  return { batch, m, k: typeof ka === "number" ? ka : kb, n, out };
}

function inferMatMul(op: Op, ctx: InferContext): (TensorType | null)[] {
  const a = operandType(ctx, 0);
  const b = operandType(ctx, 1);
  checkSameElem(op, a, b, "B");
  if (a === null) return [null];
  if (a.shape === null || b === null || b.shape === null) return [{ elem: a.elem, shape: null }];
  return [{ elem: a.elem, shape: matmulShape(op, a.shape, b.shape).out }];
}

/** Element offsets of each broadcast batch index into an operand with batch dims `dims`. */
function batchOffsets(batch: readonly number[], dims: readonly number[], matrix: number): Float64Array {
  const count = shapeSize(batch);
  const offsets = new Float64Array(count);
  const padded = [...new Array<number>(batch.length - dims.length).fill(1), ...dims];
  const idx = new Array<number>(batch.length).fill(0);
  for (let i = 0; i < count; i++) {
    let off = 0;
    for (let d = 0; d < batch.length; d++) off = off * padded[d] + (padded[d] === 1 ? 0 : idx[d]);
    offsets[i] = off * matrix;
    for (let d = batch.length - 1; d >= 0; d--) {
      if (++idx[d] < batch[d]) break;
      idx[d] = 0;
    }
  }
  return offsets;
}

function interpretMatMul(op: Op, inputs: readonly (Tensor | null)[]): Tensor[] {
  const at = required(op, inputs, 0, "A");
  const bt = required(op, inputs, 1, "B");
  const s = matmulShape(op, at.shape, bt.shape);
  const [m, k, n] = [s.m, s.k, s.n] as number[];
  const batch = s.batch as number[];
  const a = floatData(op, at, "A");
  const b = sameStorage(floatData(op, bt, "B"), a);
  const y = floatStorage(at.dtype, shapeSize(batch) * m * n);
  const aBatch = at.shape.length <= 2 ? [] : at.shape.slice(0, -2);
  const bBatch = bt.shape.length <= 2 ? [] : bt.shape.slice(0, -2);
  if (bBatch.length === 0 || shapeSize(bBatch) === 1 && shapeSize(aBatch) === shapeSize(batch)) {
    // A shared B: the batch folds into M, one GEMM.
    gemm({ m: shapeSize(batch) * m, n, k, a, b, c: y });
  } else {
    const aOffsets = batchOffsets(batch, aBatch, m * k);
    const bOffsets = batchOffsets(batch, bBatch, k * n);
    for (let i = 0; i < aOffsets.length; i++) {
      gemm({ m, n, k, a, aOffset: aOffsets[i], b, bOffset: bOffsets[i], c: y, cOffset: i * m * n });
    }
  }
  return [floatResult(at.dtype, s.out as number[], y)];
}

function macsMatMul(op: Op, operands: readonly (TensorType | null)[]): number {
  const a = operands[0]?.shape;
  const b = operands[1]?.shape;
  if (!a || !b) return 0;
  const s = matmulShape(op, a, b);
  return countProduct(s.batch) * countDim(s.m) * countDim(s.k) * countDim(s.n);
}

// ---------------------------------------------------------------------------
// Definitions

/**
 * Definitions of this family: Conv, ConvTranspose, MaxPool, AveragePool,
 * GlobalAveragePool, GlobalMaxPool, BatchNormalization (inference mode),
 * InstanceNormalization, LRN, Gemm and MatMul.
 *
 * @example Infer a Conv's result type with a symbolic batch
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../graph.ts";
 * import { Module } from "../module.ts";
 * import { inferShapes } from "../shape.ts";
 * import { attr } from "../attributes.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 3, 32, 32] }));
 * const w = g.addInput(new Value("w", { elem: "f32", shape: [16, 3, 3, 3] }));
 * const conv = g.addOp(new Op({
 *   name: "conv1", type: "Conv", operands: [x, w], results: [new Value("y")],
 *   attributes: [["pads", attr.ints([1, 1, 1, 1])], ["strides", attr.ints([2, 2])]],
 * }));
 * inferShapes(new Module(g));
 * assert.deepEqual(conv.result.type, { elem: "f32", shape: ["N", 16, 16, 16] });
 * ```
 */
export const nnOps: OpDef[] = [
  { type: "Conv", infer: inferConvLike(convShape), interpret: interpretConv, macs: macsConv, channels: convChannels },
  {
    type: "ConvTranspose",
    infer: inferConvLike(convTransposeShape),
    interpret: interpretConvTranspose,
    macs: macsConvTranspose,
  },
  { type: "MaxPool", infer: inferMaxPool, interpret: interpretMaxPool, channels: sameChannels },
  { type: "AveragePool", infer: inferAveragePool, interpret: interpretAveragePool, channels: sameChannels },
  {
    type: "GlobalAveragePool",
    infer: inferGlobalPool,
    interpret: (op, inputs, ctx) => globalPool(op, inputs, ctx, "average"),
    channels: sameChannels,
  },
  {
    type: "GlobalMaxPool",
    infer: inferGlobalPool,
    interpret: (op, inputs, ctx) => globalPool(op, inputs, ctx, "max"),
    channels: sameChannels,
  },
  {
    type: "BatchNormalization",
    infer: inferBatchNorm,
    interpret: interpretBatchNorm,
    channels: normChannels([1, 2, 3, 4]),
  },
  {
    type: "InstanceNormalization",
    infer: inferInstanceNorm,
    interpret: interpretInstanceNorm,
    channels: normChannels([1, 2]),
  },
  { type: "LRN", infer: inferLrn, interpret: interpretLrn },
  { type: "Gemm", infer: inferGemm, interpret: interpretGemm, macs: macsGemm, channels: gemmChannels },
  { type: "MatMul", infer: inferMatMul, interpret: interpretMatMul, macs: macsMatMul, channels: matmulChannels },
];
