/**
 * Tensor-manipulation ops: shapes, slicing, joining, gathering, casting and constants.
 * They move data without arithmetic, so the kernels are generic over every storage
 * (typed arrays, `BigInt64Array`, `string[]`): most reduce to one strided-copy kernel
 * that copies the innermost contiguous run with `TypedArray.set`.
 * @module
 */
import {
  concatChannels,
  flattenChannels,
  gatherChannels,
  reshapeChannels,
  sameChannels,
  shapeChannels,
  sliceChannels,
  splitChannels,
  squeezeChannels,
  transposeChannels,
} from "./channels.ts";
import type { Op } from "../graph.ts";
import type { InferContext, OpDef } from "../op_def.ts";
import {
  allocData,
  bfloat16ToFloat,
  floatToBfloat16,
  floatToHalf,
  fromFloat64,
  halfToFloat,
  shapeSize,
  type Tensor,
  type TensorData,
  toFloat64,
} from "../tensor.ts";
import { type Dim, type DType, dtypeFromOnnx, type ElementType, FLOAT_DTYPES, type TensorType } from "../types.ts";
import {
  broadcastShapes,
  dimMul,
  dimProduct,
  dimQuotient,
  intValues,
  isStatic,
  normalizeAxis,
  opError,
  stridesOf,
} from "./common.ts";

// ---------------------------------------------------------------------------
// Storage: element slots, run copies and the strided-copy kernel.

/** Indexable storage of any dtype, for element-by-element copies. */
type Slots = { [index: number]: unknown };

/**
 * A tensor's storage seen as slots: `width` slots per element (2 for complex);
 * packed 4-bit types are unpacked to one byte per element.
 */
interface Elements {
  readonly data: TensorData;
  readonly width: number;
}

const PACKED: ReadonlySet<DType> = new Set(["i4", "u4", "f4e2m1"]);

/** Runs shorter than this are copied by a loop: `subarray` allocates a view. */
const RUN_MIN = 16;

function elementsOf(t: Tensor): Elements {
  if (t.dtype === "c64" || t.dtype === "c128") return { data: t.data, width: 2 };
  if (PACKED.has(t.dtype)) {
    // ONNX packs two 4-bit elements per byte, the first in the low nibble.
    const n = shapeSize(t.shape);
    const src = t.data as Uint8Array;
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = (src[i >> 1] >> ((i & 1) * 4)) & 0xf;
    return { data: out, width: 1 };
  }
  return { data: t.data, width: 1 };
}

function allocElements(dtype: DType, count: number): Elements {
  if (PACKED.has(dtype)) return { data: new Uint8Array(count), width: 1 };
  const width = dtype === "c64" || dtype === "c128" ? 2 : 1;
  return { data: allocData(dtype, count), width };
}

function toTensor(dtype: DType, shape: readonly number[], el: Elements): Tensor {
  if (!PACKED.has(dtype)) return { dtype, shape: [...shape], data: el.data };
  const src = el.data as Uint8Array;
  const out = new Uint8Array(Math.ceil(src.length / 2));
  for (let i = 0; i < src.length; i++) out[i >> 1] |= (src[i] & 0xf) << ((i & 1) * 4);
  return { dtype, shape: [...shape], data: out };
}

/** Copy `n` slots from `src[s..]` to `dst[d..]` (same storage kind). */
function copyRun(dst: TensorData, d: number, src: TensorData, s: number, n: number): void {
  if (n >= RUN_MIN && !Array.isArray(src)) {
    (dst as Float32Array).set((src as Float32Array).subarray(s, s + n), d);
    return;
  }
  const o = dst as Slots;
  const i = src as Slots;
  for (let k = 0; k < n; k++) o[d + k] = i[s + k];
}

/**
 * Copy a strided view of `src` into `dst` from `dstOffset` on, in row-major order
 * of `shape`: element `idx` comes from `src[offset + Σ idx[i]·strides[i]]` (slots).
 * Size-1 axes are dropped and axes that stay contiguous are merged, so the innermost
 * loop is a block copy whenever the view's last axis is contiguous. Returns the slot
 * count written.
 */
function stridedCopy(
  src: TensorData,
  offset: number,
  shape: readonly number[],
  strides: readonly number[],
  dst: TensorData,
  dstOffset: number,
): number {
  const dims: number[] = [];
  const steps: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    const n = shape[i];
    if (n === 0) return 0;
    if (n === 1) continue;
    const last = dims.length - 1;
    if (last >= 0 && steps[last] === n * strides[i]) {
      dims[last] *= n;
      steps[last] = strides[i];
    } else {
      dims.push(n);
      steps.push(strides[i]);
    }
  }
  const runLength = dims.pop() ?? 1;
  const runStep = steps.pop() ?? 1;
  const rank = dims.length;
  let outer = 1;
  for (const n of dims) outer *= n;
  const counter = new Int32Array(rank);
  const f32 = src instanceof Float32Array && dst instanceof Float32Array;
  let p = offset;
  let o = dstOffset;
  for (let it = 0; it < outer; it++) {
    if (runStep === 1) {
      copyRun(dst, o, src, p, runLength);
      o += runLength;
    } else if (f32) {
      // Monomorphic float32 loop: the hot path of Transpose over the last axis.
      const s32 = src as Float32Array;
      const d32 = dst as Float32Array;
      for (let k = 0, q = p; k < runLength; k++, q += runStep) d32[o++] = s32[q];
    } else {
      const s = src as Slots;
      const d = dst as Slots;
      for (let k = 0, q = p; k < runLength; k++, q += runStep) d[o++] = s[q];
    }
    for (let ax = rank - 1; ax >= 0; ax--) {
      p += steps[ax];
      if (++counter[ax] < dims[ax]) break;
      p -= steps[ax] * dims[ax];
      counter[ax] = 0;
    }
  }
  return outer * runLength;
}

/**
 * A new tensor of shape `outShape` holding the strided view (`viewShape`, `strides`
 * and `offset` in elements) of `t`; `viewShape` has the same element count as `outShape`.
 */
function viewCopy(
  t: Tensor,
  offset: number,
  viewShape: readonly number[],
  strides: readonly number[],
  outShape: readonly number[] = viewShape,
): Tensor {
  const src = elementsOf(t);
  const out = allocElements(t.dtype, shapeSize(outShape));
  const w = src.width;
  if (w === 1) stridedCopy(src.data, offset, viewShape, strides, out.data, 0);
  else stridedCopy(src.data, offset * w, [...viewShape, w], [...strides.map((s) => s * w), 1], out.data, 0);
  return toTensor(t.dtype, outShape, out);
}

/** Storage slot holding the number `value` in `dtype` (f16 bits, bigint, 0/1 for bool, ...). */
function slotOf(dtype: DType, value: number): unknown {
  if (dtype === "string") return String(value);
  return fromFloat64(dtype, [1], [value]).data[0];
}

function fillSlots(data: TensorData, value: unknown): void {
  (data as Float32Array).fill(value as number);
}

// ---------------------------------------------------------------------------
// Symbolic dimensions: a product of a numeric coefficient and named factors.

function shapeText(shape: readonly Dim[]): string {
  return `[${shape.join(",")}]`;
}

// ---------------------------------------------------------------------------
// Operand helpers.

/** Type of operand `i`, null when omitted or unknown. */
function typeAt(ctx: InferContext, i: number): TensorType | null {
  return ctx.types[i] ?? null;
}

/** Integer contents of operand `i` when known statically (constant or static shape value). */
function intsAt(ctx: InferContext, i: number): number[] | null {
  const c = ctx.constants[i] ?? null;
  if (c !== null) return intValues(c);
  const sv = ctx.shapeValues[i] ?? null;
  return sv !== null && isStatic(sv) ? [...sv] : null;
}

/** Contents of operand `i` as dimensions (symbolic allowed). */
function dimsAt(ctx: InferContext, i: number): Dim[] | null {
  const sv = ctx.shapeValues[i] ?? null;
  if (sv !== null) return [...sv];
  const c = ctx.constants[i] ?? null;
  return c !== null ? intValues(c) : null;
}

/** Integer contents of an optional operand tensor. */
function intsOf(t: Tensor | null | undefined): number[] | null {
  return t === null || t === undefined ? null : intValues(t);
}

function required(op: Op, t: Tensor | null | undefined, what: string): Tensor {
  if (t === null || t === undefined) throw opError(op, `missing ${what}`);
  return t;
}

function result(elem: ElementType, shape: readonly Dim[] | null): TensorType {
  return { elem, shape: shape === null ? null : [...shape] };
}

function dtypeAttr(op: Op, name: string): DType {
  const code = op.int(name);
  if (code === undefined) throw opError(op, `missing attribute "${name}"`);
  try {
    return dtypeFromOnnx(code);
  } catch {
    throw opError(op, `attribute "${name}" is ${code}, not an ONNX data type`);
  }
}

/** Normalise a list of axes for `rank`, rejecting duplicates. */
function normalizeAxes(op: Op, axes: readonly number[], rank: number): number[] {
  const out = axes.map((a) => normalizeAxis(op, a, rank));
  if (new Set(out).size !== out.length) throw opError(op, `axes [${axes.join(",")}] repeat an axis`);
  return out;
}

/** Numbers outside ±2^53 arrive from int64 attributes and tensors as huge doubles; clamp for index maths. */
function clampIndex(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

// ---------------------------------------------------------------------------
// Identity, Dropout, Constant, ConstantOfShape, Shape, Size.

const identity: OpDef = {
  type: "Identity",
  infer: (_op, ctx) => [typeAt(ctx, 0)],
  shapeValue: (_op, ctx) => dimsAt(ctx, 0),
  interpret: (_op, inputs) => [inputs[0]!],
  channels: sameChannels,
};

const dropout: OpDef = {
  type: "Dropout",
  infer(_op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null, null];
    // Opset 10 made the mask bool; before it had the data's type.
    return [t, result(ctx.opset >= 10 ? "bool" : t.elem, t.shape)];
  },
  shapeValue: (_op, ctx) => dimsAt(ctx, 0),
  interpret(op, inputs, ctx) {
    const x = inputs[0]!;
    const training = ctx.opset >= 12 && inputs[2] !== null && inputs[2] !== undefined &&
      (inputs[2].data as Uint8Array)[0] !== 0;
    if (training) {
      // Training mode draws a random mask; only the deterministic ratio 0 is an identity.
      const ratio = inputs[1] ? toFloat64(inputs[1])[0] : 0.5;
      if (ratio !== 0) throw opError(op, `training_mode=true (random dropout, ratio ${ratio}) is not supported`);
    }
    const maskType: DType = ctx.opset >= 10 ? "bool" : x.dtype;
    const mask = allocData(maskType, shapeSize(x.shape));
    fillSlots(mask, slotOf(maskType, 1));
    return [x, { dtype: maskType, shape: x.shape, data: mask }];
  },
  channels: sameChannels,
};

/** The tensor a Constant op holds, from whichever `value*` attribute it has. */
function constantValue(op: Op): Tensor {
  const a = op.attributes;
  if (a.has("sparse_value")) throw opError(op, "sparse_value constants are not supported; store the tensor densely");
  const v = op.tensor("value");
  if (v !== undefined) return v;
  const f = op.float("value_float");
  if (f !== undefined) return { dtype: "f32", shape: [], data: Float32Array.of(f) };
  const fs = op.floats("value_floats");
  if (fs !== undefined) return { dtype: "f32", shape: [fs.length], data: Float32Array.from(fs) };
  const i = op.int("value_int");
  if (i !== undefined) return { dtype: "i64", shape: [], data: BigInt64Array.of(BigInt(i)) };
  const is = op.ints("value_ints");
  if (is !== undefined) return { dtype: "i64", shape: [is.length], data: BigInt64Array.from(is, (x) => BigInt(x)) };
  const s = op.string("value_string");
  if (s !== undefined) return { dtype: "string", shape: [], data: [s] };
  const ss = a.get("value_strings");
  if (ss?.kind === "strings") return { dtype: "string", shape: [ss.value.length], data: [...ss.value] };
  throw opError(op, "needs one of the attributes value, value_float(s), value_int(s), value_string(s)");
}

/** Contents of a small integer tensor as dims (what shape inference tracks). */
function intContents(t: Tensor): Dim[] | null {
  if ((t.dtype === "i64" || t.dtype === "i32") && t.shape.length <= 1 && t.data.length <= 64) return intValues(t);
  return null;
}

const constant: OpDef = {
  type: "Constant",
  infer(op) {
    const t = constantValue(op);
    return [result(t.dtype, t.shape)];
  },
  shapeValue: (op) => intContents(constantValue(op)),
  interpret: (op) => [constantValue(op)],
};

function constantOfShapeValue(op: Op): Tensor {
  const v = op.tensor("value") ?? { dtype: "f32", shape: [1], data: new Float32Array(1) };
  if (shapeSize(v.shape) !== 1) throw opError(op, `value must hold one element, found [${v.shape.join(",")}]`);
  return v;
}

const constantOfShape: OpDef = {
  type: "ConstantOfShape",
  infer(op, ctx) {
    const elem = constantOfShapeValue(op).dtype;
    const dims = dimsAt(ctx, 0);
    if (dims !== null) return [result(elem, dims)];
    const n = typeAt(ctx, 0)?.shape?.[0];
    return [result(elem, typeof n === "number" ? new Array<Dim>(n).fill("?") : null)];
  },
  shapeValue(op, ctx) {
    const v = constantOfShapeValue(op);
    const dims = intsAt(ctx, 0);
    if (dims === null || dims.length !== 1 || dims[0] > 64) return null;
    const c = intContents(v);
    return c === null ? null : new Array<Dim>(dims[0]).fill(c[0]);
  },
  interpret(op, inputs) {
    const v = constantOfShapeValue(op);
    const shape = intValues(inputs[0]!);
    if (shape.some((d) => d < 0)) throw opError(op, `shape [${shape.join(",")}] has a negative dimension`);
    const el = allocElements(v.dtype, shapeSize(shape));
    const src = elementsOf(v);
    if (el.width === 1) fillSlots(el.data, (src.data as Slots)[0]);
    else for (let i = 0; i < el.data.length; i += el.width) copyRun(el.data, i, src.data, 0, el.width);
    return [toTensor(v.dtype, shape, el)];
  },
};

/** The `[start, end)` range of dims a Shape op reports (opset 15 `start`/`end`). */
function shapeRange(op: Op, rank: number, opset: number): [number, number] {
  if (opset < 15) return [0, rank];
  const fix = (v: number): number => clampIndex(v < 0 ? v + rank : v, 0, rank);
  const start = fix(op.int("start", 0));
  const end = fix(op.int("end", rank));
  return [start, Math.max(start, end)];
}

const shape: OpDef = {
  type: "Shape",
  infer(op, ctx) {
    const s = typeAt(ctx, 0)?.shape ?? null;
    if (s === null) return [result("i64", ["?"])];
    const [start, end] = shapeRange(op, s.length, ctx.opset);
    return [result("i64", [end - start])];
  },
  shapeValue(op, ctx) {
    const s = typeAt(ctx, 0)?.shape ?? null;
    if (s === null) return null;
    const [start, end] = shapeRange(op, s.length, ctx.opset);
    return s.slice(start, end);
  },
  interpret(op, inputs, ctx) {
    const x = inputs[0]!;
    const [start, end] = shapeRange(op, x.shape.length, ctx.opset);
    const dims = x.shape.slice(start, end);
    return [{ dtype: "i64", shape: [dims.length], data: BigInt64Array.from(dims, (d) => BigInt(d)) }];
  },
  channels: shapeChannels,
};

const size: OpDef = {
  type: "Size",
  infer: () => [result("i64", [])],
  shapeValue(_op, ctx) {
    const s = typeAt(ctx, 0)?.shape ?? null;
    return s === null ? null : [dimProduct(s)];
  },
  interpret: (
    _op,
    inputs,
  ) => [{ dtype: "i64", shape: [], data: BigInt64Array.of(BigInt(shapeSize(inputs[0]!.shape))) }],
};

// ---------------------------------------------------------------------------
// Cast and CastLike.

const FLOAT8: ReadonlySet<DType> = new Set(["f8e4m3fn", "f8e4m3fnuz", "f8e5m2", "f8e5m2fnuz", "f4e2m1"]);
const INT_DTYPES: ReadonlySet<DType> = new Set(["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"]);

/** Shortest decimal text that reads back as the same value after `round` (float32, half, ...). */
function formatFloat(v: number, round: (x: number) => number): string {
  // Spellings of the reserved literals that Cast from string accepts back.
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "INF";
  if (v === -Infinity) return "-INF";
  for (let p = 1; p < 17; p++) {
    const text = v.toPrecision(p);
    if (round(Number(text)) === v) return String(Number(text));
  }
  return String(v);
}

const roundHalf = (x: number): number => halfToFloat(floatToHalf(x));
const roundBfloat16 = (x: number): number => bfloat16ToFloat(floatToBfloat16(x));

function toStrings(t: Tensor): string[] {
  const n = t.data.length;
  const out = new Array<string>(n);
  const d = t.data as Slots;
  switch (t.dtype) {
    case "f32":
      for (let i = 0; i < n; i++) out[i] = formatFloat(d[i] as number, Math.fround);
      return out;
    case "f64":
      for (let i = 0; i < n; i++) out[i] = formatFloat(d[i] as number, (x) => x);
      return out;
    case "f16":
      for (let i = 0; i < n; i++) out[i] = formatFloat(halfToFloat(d[i] as number), roundHalf);
      return out;
    case "bf16":
      for (let i = 0; i < n; i++) out[i] = formatFloat(bfloat16ToFloat(d[i] as number), roundBfloat16);
      return out;
    default:
      // Integers and bool (stored as 0/1) print as plain integers.
      for (let i = 0; i < n; i++) out[i] = String(d[i]);
      return out;
  }
}

/** A number from Cast's string syntax: decimal or scientific, plus the literals NaN, INF, +INF, -INF (any case). */
function parseNumber(s: string): number {
  const t = s.trim().toLowerCase();
  if (t === "nan" || t === "+nan" || t === "-nan") return NaN;
  if (t === "inf" || t === "+inf" || t === "infinity" || t === "+infinity") return Infinity;
  if (t === "-inf" || t === "-infinity") return -Infinity;
  return t === "" ? NaN : Number(t);
}

/**
 * ONNX Cast between numeric types, bool and string: floats to integers truncate toward
 * zero and wrap modulo 2^bits like a C cast of the truncated value (NaN and ±Inf give 0),
 * floats round to nearest even, anything non-zero (NaN included) is true.
 */
function castTensor(op: Op, t: Tensor, to: DType): Tensor {
  if (FLOAT8.has(to) || FLOAT8.has(t.dtype)) {
    throw opError(op, `casting ${t.dtype} to ${to} is not supported (8-bit and 4-bit floats have no kernels)`);
  }
  for (const d of [to, t.dtype]) {
    if (d === "c64" || d === "c128" || d === "i4" || d === "u4") {
      throw opError(op, `casting to or from ${d} is not supported`);
    }
  }
  if (to === t.dtype) return t;
  const n = t.data.length;
  if (to === "string") return { dtype: "string", shape: t.shape, data: toStrings(t) };
  const out = allocData(to, n);
  if (t.dtype === "i64" || t.dtype === "u64") {
    // Keep 64-bit integers exact: convert as bigints unless the target is floating point.
    const src = t.data as BigInt64Array;
    if (to === "i64") { for (let i = 0; i < n; i++) (out as BigInt64Array)[i] = BigInt.asIntN(64, src[i]); }
    else if (to === "u64") { for (let i = 0; i < n; i++) (out as BigUint64Array)[i] = BigInt.asUintN(64, src[i]); }
    else if (to === "bool") { for (let i = 0; i < n; i++) (out as Uint8Array)[i] = src[i] !== 0n ? 1 : 0; }
    else if (INT_DTYPES.has(to)) {
      for (let i = 0; i < n; i++) (out as Int32Array)[i] = Number(BigInt.asIntN(32, src[i]));
    } else return fromFloat64(to, t.shape, toFloat64(t));
    return { dtype: to, shape: t.shape, data: out };
  }
  const values = t.dtype === "string" ? Float64Array.from(t.data as string[], parseNumber) : toFloat64(t);
  return fromFloat64(to, t.shape, values);
}

function castShapeValue(ctx: InferContext, to: DType | ElementType | undefined): Dim[] | null {
  return typeof to === "string" && INT_DTYPES.has(to) ? dimsAt(ctx, 0) : null;
}

const cast: OpDef = {
  type: "Cast",
  infer(op, ctx) {
    const to = dtypeAttr(op, "to");
    return [result(to, typeAt(ctx, 0)?.shape ?? null)];
  },
  shapeValue: (op, ctx) => castShapeValue(ctx, dtypeAttr(op, "to")),
  interpret: (op, inputs) => [castTensor(op, inputs[0]!, dtypeAttr(op, "to"))],
};

const castLike: OpDef = {
  type: "CastLike",
  infer(_op, ctx) {
    const like = typeAt(ctx, 1);
    if (like === null) return [null];
    return [result(like.elem, typeAt(ctx, 0)?.shape ?? null)];
  },
  shapeValue: (_op, ctx) => castShapeValue(ctx, typeAt(ctx, 1)?.elem),
  interpret: (op, inputs) => [castTensor(op, inputs[0]!, inputs[1]!.dtype)],
};

// ---------------------------------------------------------------------------
// Reshape, Flatten, Squeeze, Unsqueeze.

/** Reshape's target dims: 0 copies the input dim (unless `allowzero`), one -1 is inferred. */
function reshapeDims(op: Op, input: readonly Dim[] | null, target: readonly Dim[], allowZero: boolean): Dim[] {
  const what = (): string => `${input === null ? "?" : shapeText(input)} to ${shapeText(target)}`;
  let inferred = -1;
  if (allowZero && target.includes(0) && target.includes(-1)) {
    throw opError(op, `shape ${shapeText(target)} has both 0 and -1 while allowzero=1`);
  }
  const out = target.map((d, i): Dim => {
    if (d === -1) {
      if (inferred >= 0) throw opError(op, `shape ${shapeText(target)} has more than one -1`);
      inferred = i;
      return -1;
    }
    if (typeof d === "number" && d < -1) throw opError(op, `shape ${shapeText(target)} has a negative dimension`);
    if (d === 0 && !allowZero) {
      if (input === null) return "?";
      if (i >= input.length) {
        throw opError(op, `cannot copy dimension ${i} of ${what()}: the input has rank ${input.length}`);
      }
      return input[i];
    }
    return d;
  });
  if (inferred >= 0) {
    const known = out.filter((_, i) => i !== inferred);
    out[inferred] = input === null ? "?" : dimQuotient(op, input, known, what);
  } else if (input !== null && isStatic(input) && isStatic(out) && shapeSize(input) !== shapeSize(out)) {
    throw opError(op, `cannot reshape ${what()}: ${shapeSize(input)} elements against ${shapeSize(out)}`);
  }
  return out;
}

/** Reshape's target operand: the `shape` attribute before opset 5, input 1 since. */
function reshapeTarget(op: Op, opset: number, fromInput: () => Dim[] | null): Dim[] | null {
  if (opset < 5) {
    const s = op.ints("shape");
    if (s === undefined) throw opError(op, `missing attribute "shape"`);
    return [...s];
  }
  return fromInput();
}

const reshape: OpDef = {
  type: "Reshape",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    const target = reshapeTarget(op, ctx.opset, () => dimsAt(ctx, 1));
    if (target === null) {
      const n = typeAt(ctx, 1)?.shape?.[0];
      return [result(t.elem, typeof n === "number" ? new Array<Dim>(n).fill("?") : null)];
    }
    return [result(t.elem, reshapeDims(op, t.shape, target, op.int("allowzero", 0) === 1))];
  },
  shapeValue(op, ctx) {
    // A reshape of a shape vector to a vector or scalar keeps its contents.
    const target = reshapeTarget(op, ctx.opset, () => dimsAt(ctx, 1));
    return target !== null && target.length <= 1 ? dimsAt(ctx, 0) : null;
  },
  interpret(op, inputs, ctx) {
    const x = inputs[0]!;
    const target = reshapeTarget(op, ctx.opset, () => intValues(required(op, inputs[1], "shape operand")))!;
    const dims = reshapeDims(op, x.shape, target, op.int("allowzero", 0) === 1) as number[];
    return [{ dtype: x.dtype, shape: dims, data: x.data }];
  },
  channels: reshapeChannels,
};

function flattenAxis(op: Op, rank: number): number {
  const axis = op.int("axis", 1);
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a > rank) throw opError(op, `axis ${axis} is out of range for rank ${rank}`);
  return a;
}

const flatten: OpDef = {
  type: "Flatten",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    if (t.shape === null) return [result(t.elem, ["?", "?"])];
    const a = flattenAxis(op, t.shape.length);
    return [result(t.elem, [dimProduct(t.shape.slice(0, a)), dimProduct(t.shape.slice(a))])];
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    const a = flattenAxis(op, x.shape.length);
    return [{ dtype: x.dtype, shape: [shapeSize(x.shape.slice(0, a)), shapeSize(x.shape.slice(a))], data: x.data }];
  },
  channels: flattenChannels,
};

/** Axes of Squeeze/Unsqueeze: the `axes` attribute before opset 13, input 1 since. */
function axesOperand(op: Op, opset: number, fromInput: () => number[] | null): number[] | null {
  if (opset < 13) {
    const a = op.ints("axes");
    return a === undefined ? null : [...a];
  }
  return op.operand(1) === null ? null : fromInput();
}

function squeezeShape(op: Op, s: readonly Dim[], axes: number[] | null): Dim[] {
  if (axes === null) {
    // Without axes every size-1 dim goes; symbolic dims are assumed not to be 1.
    return s.filter((d) => d !== 1);
  }
  const drop = normalizeAxes(op, axes, s.length);
  for (const a of drop) {
    if (typeof s[a] === "number" && s[a] !== 1) {
      throw opError(op, `cannot squeeze axis ${a} of ${shapeText(s)}: its size is ${s[a]}, not 1`);
    }
  }
  return s.filter((_, i) => !drop.includes(i));
}

const squeeze: OpDef = {
  type: "Squeeze",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    const axes = axesOperand(op, ctx.opset, () => intsAt(ctx, 1));
    if (t.shape === null || (axes === null && op.operand(1) !== null)) return [result(t.elem, null)];
    return [result(t.elem, squeezeShape(op, t.shape, axes))];
  },
  shapeValue: (_op, ctx) => dimsAt(ctx, 0),
  interpret(op, inputs, ctx) {
    const x = inputs[0]!;
    const axes = axesOperand(op, ctx.opset, () => intsOf(inputs[1]));
    return [{ dtype: x.dtype, shape: squeezeShape(op, x.shape, axes) as number[], data: x.data }];
  },
  channels: squeezeChannels,
};

function unsqueezeShape(op: Op, s: readonly Dim[], axes: number[]): Dim[] {
  const rank = s.length + axes.length;
  const add = normalizeAxes(op, axes, rank);
  const out: Dim[] = [];
  let k = 0;
  for (let i = 0; i < rank; i++) out.push(add.includes(i) ? 1 : s[k++]);
  return out;
}

const unsqueeze: OpDef = {
  type: "Unsqueeze",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    const axes = axesOperand(op, ctx.opset, () => intsAt(ctx, 1));
    if (t.shape === null || axes === null) {
      if (axes === null && (ctx.opset < 13 || op.operand(1) === null)) throw opError(op, "needs axes");
      return [result(t.elem, null)];
    }
    return [result(t.elem, unsqueezeShape(op, t.shape, axes))];
  },
  shapeValue: (_op, ctx) => dimsAt(ctx, 0),
  interpret(op, inputs, ctx) {
    const x = inputs[0]!;
    const axes = axesOperand(op, ctx.opset, () => intsOf(inputs[1]));
    if (axes === null) throw opError(op, "needs axes");
    return [{ dtype: x.dtype, shape: unsqueezeShape(op, x.shape, axes) as number[], data: x.data }];
  },
  channels: squeezeChannels,
};

// ---------------------------------------------------------------------------
// Transpose, DepthToSpace, SpaceToDepth.

function transposePerm(op: Op, rank: number): number[] {
  const perm = op.ints("perm");
  if (perm === undefined) return Array.from({ length: rank }, (_, i) => rank - 1 - i);
  const p = perm.map((a) => (a < 0 ? a + rank : a));
  const sorted = [...p].sort((a, b) => a - b);
  if (p.length !== rank || sorted.some((a, i) => a !== i)) {
    throw opError(op, `perm [${perm.join(",")}] is not a permutation of ${rank} axes`);
  }
  return p;
}

/** Transpose as a strided view: output axis i walks input axis perm[i]. */
function transposeTensor(x: Tensor, perm: readonly number[]): Tensor {
  const strides = stridesOf(x.shape);
  const shape = perm.map((a) => x.shape[a]);
  return viewCopy(x, 0, shape, perm.map((a) => strides[a]));
}

const transpose: OpDef = {
  type: "Transpose",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    if (t.shape === null) return [result(t.elem, null)];
    return [result(t.elem, transposePerm(op, t.shape.length).map((a) => t.shape![a]))];
  },
  interpret: (op, inputs) => [transposeTensor(inputs[0]!, transposePerm(op, inputs[0]!.shape.length))],
  channels: transposeChannels,
};

function blockSize(op: Op): number {
  const b = op.int("blocksize");
  if (b === undefined || b < 1) throw opError(op, `needs a positive blocksize, found ${b}`);
  return b;
}

function rank4(op: Op, s: readonly Dim[]): void {
  if (s.length !== 4) throw opError(op, `expects a rank-4 NCHW input, found ${shapeText(s)}`);
}

/** Divide a dimension by `b`, throwing when a static size does not divide. */
function dimDiv(op: Op, d: Dim, b: number, what: string): Dim {
  if (typeof d !== "number") return b === 1 ? d : "?";
  if (d % b !== 0) throw opError(op, `${what} ${d} is not divisible by ${b}`);
  return d / b;
}

const depthToSpace: OpDef = {
  type: "DepthToSpace",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    if (t.shape === null) return [result(t.elem, ["?", "?", "?", "?"])];
    rank4(op, t.shape);
    const b = blockSize(op);
    const [n, c, h, w] = t.shape;
    return [result(t.elem, [n, dimDiv(op, c, b * b, "channels"), dimMul(h, b), dimMul(w, b)])];
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    rank4(op, x.shape);
    const b = blockSize(op);
    const [n, c, h, w] = x.shape;
    const oc = dimDiv(op, c, b * b, "channels") as number;
    const hw = h * w;
    const crd = op.string("mode", "DCR") === "CRD";
    // Output [n, c', h, b1, w, b2] read from input channel (b1·b + b2)·C' + c' (DCR) or c'·b² + b1·b + b2 (CRD).
    const strides = [c * hw, crd ? b * b * hw : hw, w, crd ? b * hw : b * oc * hw, 1, crd ? hw : oc * hw];
    return [viewCopy(x, 0, [n, oc, h, b, w, b], strides, [n, oc, h * b, w * b])];
  },
};

const spaceToDepth: OpDef = {
  type: "SpaceToDepth",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    if (t.shape === null) return [result(t.elem, ["?", "?", "?", "?"])];
    rank4(op, t.shape);
    const b = blockSize(op);
    const [n, c, h, w] = t.shape;
    return [result(t.elem, [n, dimMul(c, b * b), dimDiv(op, h, b, "height"), dimDiv(op, w, b, "width")])];
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    rank4(op, x.shape);
    const b = blockSize(op);
    const [n, c, h, w] = x.shape;
    const oh = dimDiv(op, h, b, "height") as number;
    const ow = dimDiv(op, w, b, "width") as number;
    // Output channel index is (b1·b + b2)·C + c over input [N, C, H/b, b1, W/b, b2].
    const viewShape = [n, b, b, c, oh, ow];
    const strides = [c * h * w, w, 1, h * w, b * w, b];
    return [viewCopy(x, 0, viewShape, strides, [n, c * b * b, oh, ow])];
  },
};

// ---------------------------------------------------------------------------
// Concat and Split.

function concatAxis(op: Op, opset: number, rank: number): number {
  const axis = op.int("axis") ?? (opset < 4 ? 1 : undefined);
  if (axis === undefined) throw opError(op, `missing attribute "axis"`);
  return normalizeAxis(op, axis, rank);
}

const concat: OpDef = {
  type: "Concat",
  infer(op, ctx) {
    const types = op.operands.map((_, i) => typeAt(ctx, i));
    const first = types.find((t) => t !== null);
    if (first === undefined || first === null) return [null];
    const ranked = types.filter((t): t is TensorType => t !== null && t.shape !== null);
    if (ranked.length === 0) return [result(first.elem, null)];
    const rank = ranked[0].shape!.length;
    const axis = concatAxis(op, ctx.opset, rank);
    const out: Dim[] = [...ranked[0].shape!];
    let total: number | null = 0;
    for (const t of types) {
      if (t === null || t.shape === null) {
        total = null;
        continue;
      }
      const s = t.shape;
      if (s.length !== rank) {
        throw opError(op, `cannot concatenate ${shapeText(ranked[0].shape!)} with ${shapeText(s)}`);
      }
      for (let i = 0; i < rank; i++) {
        if (i === axis) continue;
        const a = out[i];
        const b = s[i];
        if (typeof a === "number" && typeof b === "number" && a !== b) {
          throw opError(
            op,
            `cannot concatenate ${shapeText(ranked[0].shape!)} with ${shapeText(s)} along axis ${axis}`,
          );
        }
        if (typeof a !== "number" && typeof b === "number") out[i] = b;
      }
      const d = s[axis];
      total = total !== null && typeof d === "number" ? total + d : null;
    }
    out[axis] = total ?? "?";
    return [result(first.elem, out)];
  },
  shapeValue(_op, ctx) {
    const parts: Dim[] = [];
    for (let i = 0; i < ctx.types.length; i++) {
      const d = dimsAt(ctx, i);
      if (d === null) return null;
      parts.push(...d);
    }
    return parts;
  },
  interpret(op, inputs, ctx) {
    const xs = inputs.filter((t): t is Tensor => t !== null);
    const rank = xs[0].shape.length;
    const axis = concatAxis(op, ctx.opset, rank);
    const shape = [...xs[0].shape];
    shape[axis] = 0;
    for (const x of xs) {
      if (x.shape.length !== rank || x.shape.some((d, i) => i !== axis && d !== xs[0].shape[i])) {
        throw opError(op, `cannot concatenate [${xs[0].shape.join(",")}] with [${x.shape.join(",")}]`);
      }
      shape[axis] += x.shape[axis];
    }
    const dtype = xs[0].dtype;
    const out = allocElements(dtype, shapeSize(shape));
    const outer = shapeSize(shape.slice(0, axis));
    const parts = xs.map((x) => {
      const el = elementsOf(x);
      return { data: el.data, run: shapeSize(x.shape.slice(axis)) * el.width };
    });
    let o = 0;
    for (let i = 0; i < outer; i++) {
      for (const p of parts) {
        copyRun(out.data, o, p.data, i * p.run, p.run);
        o += p.run;
      }
    }
    return [toTensor(dtype, shape, out)];
  },
  channels: concatChannels,
};

/** Sizes of Split's parts along the axis: explicit (`split` attribute/input), or equal (opset 18: last smaller). */
function splitSizes(op: Op, opset: number, dim: number, explicit: number[] | null, count: number): number[] {
  if (explicit !== null) {
    if (explicit.length !== count) {
      throw opError(op, `split [${explicit.join(",")}] gives ${explicit.length} parts for ${count} results`);
    }
    const sum = explicit.reduce((a, b) => a + b, 0);
    if (sum !== dim || explicit.some((s) => s < 0)) {
      throw opError(op, `split [${explicit.join(",")}] does not add up to the axis size ${dim}`);
    }
    return explicit;
  }
  const n = opset >= 18 ? op.int("num_outputs", count) : count;
  if (n !== count) throw opError(op, `num_outputs is ${n} but the op has ${count} results`);
  if (dim % n === 0) return new Array<number>(n).fill(dim / n);
  if (opset < 18) throw opError(op, `axis size ${dim} does not split into ${n} equal parts`);
  // Opset 18: ceil(dim / n) per part, the last one smaller.
  const chunk = Math.ceil(dim / n);
  const last = dim - chunk * (n - 1);
  if (last <= 0) throw opError(op, `axis size ${dim} does not split into ${n} parts of ${chunk}`);
  return [...new Array<number>(n - 1).fill(chunk), last];
}

function splitExplicit(op: Op, opset: number, fromInput: () => number[] | null): number[] | null {
  if (opset < 13) {
    const s = op.ints("split");
    if (s !== undefined) return [...s];
    return opset < 2 && op.operand(1) !== null ? fromInput() : null;
  }
  return op.operand(1) === null ? null : fromInput();
}

/** Copy `count` planes from `start` along `axis` (all other axes whole). */
function sliceAxis(x: Tensor, axis: number, start: number, count: number): Tensor {
  const shape = [...x.shape];
  shape[axis] = count;
  const src = elementsOf(x);
  const out = allocElements(x.dtype, shapeSize(shape));
  const outer = shapeSize(x.shape.slice(0, axis));
  const plane = shapeSize(x.shape.slice(axis + 1)) * src.width;
  const inRun = x.shape[axis] * plane;
  const outRun = count * plane;
  for (let i = 0; i < outer; i++) copyRun(out.data, i * outRun, src.data, i * inRun + start * plane, outRun);
  return toTensor(x.dtype, shape, out);
}

const split: OpDef = {
  type: "Split",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    const count = op.results.length;
    if (t === null) return new Array(count).fill(null);
    if (t.shape === null) return new Array(count).fill(result(t.elem, null));
    const axis = normalizeAxis(op, op.int("axis", 0), t.shape.length);
    const dim = t.shape[axis];
    const explicit = splitExplicit(op, ctx.opset, () => intsAt(ctx, 1));
    const unknownSplit = explicit === null && (ctx.opset >= 13 || ctx.opset < 2) && op.operand(1) !== null;
    let sizes: Dim[];
    if (typeof dim === "number" && !unknownSplit) sizes = splitSizes(op, ctx.opset, dim, explicit, count);
    else if (explicit !== null) sizes = explicit;
    else sizes = new Array<Dim>(count).fill("?");
    return sizes.map((d) => {
      const s = [...t.shape!];
      s[axis] = d;
      return result(t.elem, s);
    });
  },
  interpret(op, inputs, ctx) {
    const x = inputs[0]!;
    const axis = normalizeAxis(op, op.int("axis", 0), x.shape.length);
    const explicit = splitExplicit(op, ctx.opset, () => intsOf(inputs[1]));
    const sizes = splitSizes(op, ctx.opset, x.shape[axis], explicit, op.results.length);
    let start = 0;
    return sizes.map((n) => {
      const part = sliceAxis(x, axis, start, n);
      start += n;
      return part;
    });
  },
  channels: splitChannels,
};

// ---------------------------------------------------------------------------
// Slice.

interface SliceArgs {
  starts: number[];
  ends: number[];
  axes: number[] | null;
  steps: number[] | null;
}

/** Slice's arguments: attributes before opset 10, inputs 1-4 since. Null when not known. */
function sliceArgs(op: Op, opset: number, read: (i: number) => number[] | null): SliceArgs | null {
  if (opset < 10) {
    const starts = op.ints("starts");
    const ends = op.ints("ends");
    if (starts === undefined || ends === undefined) throw opError(op, `needs attributes "starts" and "ends"`);
    const axes = op.ints("axes");
    return { starts: [...starts], ends: [...ends], axes: axes === undefined ? null : [...axes], steps: null };
  }
  const starts = read(1);
  const ends = read(2);
  const axes = op.operand(3) === null ? null : read(3);
  const steps = op.operand(4) === null ? null : read(4);
  if (starts === null || ends === null) return null;
  if ((op.operand(3) !== null && axes === null) || (op.operand(4) !== null && steps === null)) return null;
  return { starts, ends, axes, steps };
}

interface AxisSlice {
  start: number;
  step: number;
  count: number;
}

/** Effective start, step and count of each sliced axis, clamped as the ONNX Slice spec says. */
function sliceRanges(
  op: Op,
  rank: number,
  args: SliceArgs,
): { axes: number[]; ranges: (dim: number, i: number) => AxisSlice } {
  const n = args.starts.length;
  if (
    args.ends.length !== n || (args.axes !== null && args.axes.length !== n) ||
    (args.steps !== null && args.steps.length !== n)
  ) {
    throw opError(op, "starts, ends, axes and steps must have the same length");
  }
  const axes = normalizeAxes(op, args.axes ?? Array.from({ length: n }, (_, i) => i), rank);
  const ranges = (dim: number, i: number): AxisSlice => {
    const step = args.steps?.[i] ?? 1;
    if (step === 0) throw opError(op, "slice step cannot be 0");
    let start = args.starts[i];
    let end = args.ends[i];
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    if (step > 0) {
      start = clampIndex(start, 0, dim);
      end = clampIndex(end, 0, dim);
    } else {
      start = clampIndex(start, 0, dim - 1);
      end = clampIndex(end, -1, dim - 1);
    }
    const count = Math.max(0, Math.ceil((end - start) / step));
    return { start, step, count };
  };
  return { axes, ranges };
}

/** True when a slice argument keeps a whole (possibly symbolic) axis: start 0, step 1, end at or past any size. */
function keepsWholeAxis(args: SliceArgs, i: number): boolean {
  const step = args.steps?.[i] ?? 1;
  return step === 1 && args.starts[i] === 0 && args.ends[i] >= 2 ** 31 - 1;
}

const slice: OpDef = {
  type: "Slice",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    if (t.shape === null) return [result(t.elem, null)];
    const s = t.shape;
    const args = sliceArgs(op, ctx.opset, (i) => intsAt(ctx, i));
    if (args === null) {
      const axes = op.operand(3) === null ? null : intsAt(ctx, 3);
      if (axes === null) return [result(t.elem, s.map(() => "?"))];
      const ax = normalizeAxes(op, axes, s.length);
      return [result(t.elem, s.map((d, i) => (ax.includes(i) ? "?" : d)))];
    }
    const { axes, ranges } = sliceRanges(op, s.length, args);
    const out = [...s];
    axes.forEach((a, i) => {
      const d = s[a];
      if (typeof d === "number") out[a] = ranges(d, i).count;
      else out[a] = keepsWholeAxis(args, i) ? d : "?";
    });
    return [result(t.elem, out)];
  },
  shapeValue(op, ctx) {
    const values = dimsAt(ctx, 0);
    const args = sliceArgs(op, ctx.opset, (i) => intsAt(ctx, i));
    if (values === null || args === null || typeAt(ctx, 0)?.shape?.length !== 1) return null;
    const { axes, ranges } = sliceRanges(op, 1, args);
    if (axes.length === 0) return values;
    const { start, step, count } = ranges(values.length, 0);
    return Array.from({ length: count }, (_, k) => values[start + k * step]);
  },
  interpret(op, inputs, ctx) {
    const x = inputs[0]!;
    const args = sliceArgs(op, ctx.opset, (i) => intsOf(inputs[i]))!;
    const { axes, ranges } = sliceRanges(op, x.shape.length, args);
    const strides = stridesOf(x.shape);
    const shape = [...x.shape];
    const viewStrides = [...strides];
    let offset = 0;
    axes.forEach((a, i) => {
      const r = ranges(x.shape[a], i);
      shape[a] = r.count;
      viewStrides[a] = strides[a] * r.step;
      offset += r.start * strides[a];
    });
    return [viewCopy(x, offset, shape, viewStrides)];
  },
  channels: sliceChannels,
};

// ---------------------------------------------------------------------------
// Gather, GatherElements, GatherND, ScatterND.

/** Resolve a possibly negative index into `[0, dim)`; throws naming the op otherwise. */
function indexIn(op: Op, i: number, dim: number): number {
  const j = i < 0 ? i + dim : i;
  if (!(j >= 0 && j < dim)) throw opError(op, `index ${i} is out of range for a dimension of size ${dim}`);
  return j;
}

const gather: OpDef = {
  type: "Gather",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    const idx = typeAt(ctx, 1);
    if (t === null) return [null];
    if (t.shape === null || idx === null || idx.shape === null) return [result(t.elem, null)];
    const axis = normalizeAxis(op, op.int("axis", 0), t.shape.length);
    return [result(t.elem, [...t.shape.slice(0, axis), ...idx.shape, ...t.shape.slice(axis + 1)])];
  },
  shapeValue(op, ctx) {
    const values = dimsAt(ctx, 0);
    const idx = intsAt(ctx, 1);
    const idxRank = typeAt(ctx, 1)?.shape?.length ?? ctx.constants[1]?.shape.length;
    if (values === null || idx === null || idxRank === undefined || idxRank > 1) return null;
    if (op.int("axis", 0) !== 0 && op.int("axis", 0) !== -1) return null;
    return idx.map((i) => values[indexIn(op, i, values.length)]);
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    const indices = inputs[1]!;
    const axis = normalizeAxis(op, op.int("axis", 0), x.shape.length);
    const shape = [...x.shape.slice(0, axis), ...indices.shape, ...x.shape.slice(axis + 1)];
    const src = elementsOf(x);
    const out = allocElements(x.dtype, shapeSize(shape));
    const dim = x.shape[axis];
    const outer = shapeSize(x.shape.slice(0, axis));
    const run = shapeSize(x.shape.slice(axis + 1)) * src.width;
    const idx = Int32Array.from(intValues(indices), (i) => indexIn(op, i, dim));
    let o = 0;
    if (run === 1) {
      // Gathering along the last axis: one element per index, no run copies.
      const s = src.data as Slots;
      const d = out.data as Slots;
      for (let i = 0; i < outer; i++) {
        const base = i * dim;
        for (let k = 0; k < idx.length; k++) d[o++] = s[base + idx[k]];
      }
      return [toTensor(x.dtype, shape, out)];
    }
    for (let i = 0; i < outer; i++) {
      const base = i * dim;
      for (let k = 0; k < idx.length; k++) {
        copyRun(out.data, o, src.data, (base + idx[k]) * run, run);
        o += run;
      }
    }
    return [toTensor(x.dtype, shape, out)];
  },
  channels: gatherChannels,
};

/**
 * Element offsets into data of GatherElements/ScatterElements: position `k` of `indices`
 * addresses data at the same coordinates except along `axis`, where the index value goes.
 */
function elementOffsets(op: Op, data: readonly number[], indices: Tensor, axis: number): Float64Array {
  const rank = data.length;
  if (indices.shape.length !== rank) {
    throw opError(op, `indices [${indices.shape.join(",")}] must have the rank of data [${data.join(",")}]`);
  }
  const strides = stridesOf(data);
  const idx = intValues(indices);
  const dim = data[axis];
  const offsets = new Float64Array(idx.length);
  const counter = new Int32Array(rank);
  let p = 0;
  for (let k = 0; k < idx.length; k++) {
    offsets[k] = p + indexIn(op, idx[k], dim) * strides[axis];
    // Odometer over the indices' shape; the axis coordinate comes from the index instead.
    for (let a = rank - 1; a >= 0; a--) {
      const s = a === axis ? 0 : strides[a];
      p += s;
      if (++counter[a] < indices.shape[a]) break;
      p -= s * indices.shape[a];
      counter[a] = 0;
    }
  }
  return offsets;
}

const gatherElements: OpDef = {
  type: "GatherElements",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    const idx = typeAt(ctx, 1);
    if (t.shape !== null && idx?.shape != null && idx.shape.length !== t.shape.length) {
      throw opError(op, `indices ${shapeText(idx.shape)} must have the rank of data ${shapeText(t.shape)}`);
    }
    return [result(t.elem, idx?.shape ?? null)];
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    const indices = inputs[1]!;
    const axis = normalizeAxis(op, op.int("axis", 0), x.shape.length);
    const offsets = elementOffsets(op, x.shape, indices, axis);
    const src = elementsOf(x);
    const w = src.width;
    const out = allocElements(x.dtype, shapeSize(indices.shape));
    for (let k = 0; k < offsets.length; k++) copyRun(out.data, k * w, src.data, offsets[k] * w, w);
    return [toTensor(x.dtype, indices.shape, out)];
  },
};

/** ScatterElements (and its opset 9-10 name Scatter): data with updates written at GatherElements' positions. */
function scatterElementsKernel(op: Op, inputs: readonly (Tensor | null)[]): Tensor[] {
  const x = inputs[0]!;
  const indices = inputs[1]!;
  const updates = inputs[2]!;
  if (updates.shape.join(",") !== indices.shape.join(",")) {
    throw opError(
      op,
      `updates [${updates.shape.join(",")}] must have the shape of indices [${indices.shape.join(",")}]`,
    );
  }
  const axis = normalizeAxis(op, op.int("axis", 0), x.shape.length);
  const offsets = elementOffsets(op, x.shape, indices, axis);
  const src = elementsOf(x);
  const w = src.width;
  const out = allocElements(x.dtype, shapeSize(x.shape));
  copyRun(out.data, 0, src.data, 0, src.data.length);
  const upd = elementsOf(updates).data;
  const combine = reducer(op, x.dtype, op.string("reduction", "none"));
  const o = out.data as Slots;
  const u = upd as Slots;
  for (let k = 0; k < offsets.length; k++) {
    const at = offsets[k] * w;
    if (combine === null) copyRun(out.data, at, upd, k * w, w);
    else o[at] = combine(o[at], u[k]);
  }
  return [toTensor(x.dtype, x.shape, out)];
}

const scatterElements: OpDef = {
  type: "ScatterElements",
  infer: (_op, ctx) => [typeAt(ctx, 0)],
  interpret: scatterElementsKernel,
};

const scatter: OpDef = {
  type: "Scatter",
  infer: (_op, ctx) => [typeAt(ctx, 0)],
  interpret: scatterElementsKernel,
};

/** Geometry shared by GatherND and ScatterND: batches, index tuples and the slice each one selects. */
function ndGeometry(op: Op, data: readonly number[], indices: readonly number[], batchDims: number) {
  const q = indices[indices.length - 1];
  if (indices.length < 1 || q === undefined || q < 1 || batchDims + q > data.length) {
    throw opError(
      op,
      `indices [${indices.join(",")}] do not index data [${data.join(",")}] with batch_dims ${batchDims}`,
    );
  }
  for (let i = 0; i < batchDims; i++) {
    if (data[i] !== indices[i]) throw opError(op, `batch dimension ${i} differs: ${data[i]} vs ${indices[i]}`);
  }
  const batches = shapeSize(data.slice(0, batchDims));
  const tuples = shapeSize(indices.slice(batchDims, -1));
  const sliceShape = data.slice(batchDims + q);
  const sliceSize = shapeSize(sliceShape);
  const batchSize = shapeSize(data.slice(batchDims));
  const strides = stridesOf(data).slice(batchDims, batchDims + q);
  return { q, batches, tuples, sliceShape, sliceSize, batchSize, strides };
}

/** Element offsets of every index tuple of a GatherND/ScatterND (negative indices wrap). */
function ndOffsets(op: Op, data: readonly number[], indices: Tensor, batchDims: number) {
  const g = ndGeometry(op, data, indices.shape, batchDims);
  const idx = intValues(indices);
  const offsets = new Float64Array(g.batches * g.tuples);
  for (let b = 0, t = 0; b < g.batches; b++) {
    for (let k = 0; k < g.tuples; k++, t++) {
      let off = b * g.batchSize;
      for (let j = 0; j < g.q; j++) off += indexIn(op, idx[t * g.q + j], data[batchDims + j]) * g.strides[j];
      offsets[t] = off;
    }
  }
  return { ...g, offsets };
}

const gatherND: OpDef = {
  type: "GatherND",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    const idx = typeAt(ctx, 1)?.shape ?? null;
    if (t === null) return [null];
    const q = idx?.[idx.length - 1];
    if (t.shape === null || idx === null || typeof q !== "number") return [result(t.elem, null)];
    const b = op.int("batch_dims", 0);
    return [result(t.elem, [...idx.slice(0, -1), ...t.shape.slice(b + q)])];
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    const indices = inputs[1]!;
    const g = ndOffsets(op, x.shape, indices, op.int("batch_dims", 0));
    const shape = [...indices.shape.slice(0, -1), ...g.sliceShape];
    const src = elementsOf(x);
    const w = src.width;
    const out = allocElements(x.dtype, shapeSize(shape));
    const run = g.sliceSize * w;
    for (let t = 0; t < g.offsets.length; t++) copyRun(out.data, t * run, src.data, g.offsets[t] * w, run);
    return [toTensor(x.dtype, shape, out)];
  },
};

/** Combine two storage slots of `dtype` for ScatterND's `reduction` (opset 16: add, mul; 18: max, min). */
function reducer(op: Op, dtype: DType, mode: string): ((a: unknown, b: unknown) => unknown) | null {
  if (mode === "none") return null;
  if (
    dtype === "string" || dtype === "bool" || FLOAT8.has(dtype) || PACKED.has(dtype) || dtype === "c64" ||
    dtype === "c128"
  ) {
    throw opError(op, `reduction "${mode}" is not supported for ${dtype}`);
  }
  if (!["add", "mul", "max", "min"].includes(mode)) throw opError(op, `unknown reduction "${mode}"`);
  const f = (x: number, y: number): number =>
    mode === "add" ? x + y : mode === "mul" ? x * y : mode === "max" ? Math.max(x, y) : Math.min(x, y);
  if (dtype === "f16") return (a, b) => floatToHalf(f(halfToFloat(a as number), halfToFloat(b as number)));
  if (dtype === "bf16") return (a, b) => floatToBfloat16(f(bfloat16ToFloat(a as number), bfloat16ToFloat(b as number)));
  if (dtype === "i64" || dtype === "u64") {
    return (a, b) => {
      const x = a as bigint;
      const y = b as bigint;
      return mode === "add" ? x + y : mode === "mul" ? x * y : mode === "max" ? (x > y ? x : y) : (x < y ? x : y);
    };
  }
  return (a, b) => f(a as number, b as number);
}

const scatterND: OpDef = {
  type: "ScatterND",
  infer: (_op, ctx) => [typeAt(ctx, 0)],
  interpret(op, inputs) {
    const x = inputs[0]!;
    const indices = inputs[1]!;
    const updates = inputs[2]!;
    const g = ndOffsets(op, x.shape, indices, 0);
    const expected = [...indices.shape.slice(0, -1), ...g.sliceShape];
    if (expected.length !== updates.shape.length || expected.some((d, i) => d !== updates.shape[i])) {
      throw opError(op, `updates [${updates.shape.join(",")}] must have shape [${expected.join(",")}]`);
    }
    const src = elementsOf(x);
    const w = src.width;
    const out = allocElements(x.dtype, shapeSize(x.shape));
    copyRun(out.data, 0, src.data, 0, src.data.length);
    const upd = elementsOf(updates).data;
    const run = g.sliceSize * w;
    const combine = reducer(op, x.dtype, op.string("reduction", "none"));
    const o = out.data as Slots;
    const u = upd as Slots;
    for (let t = 0; t < g.offsets.length; t++) {
      const base = g.offsets[t] * w;
      if (combine === null) copyRun(out.data, base, upd, t * run, run);
      else for (let k = 0; k < run; k++) o[base + k] = combine(o[base + k], u[t * run + k]);
    }
    return [toTensor(x.dtype, x.shape, out)];
  },
};

// ---------------------------------------------------------------------------
// Expand, Tile, Pad, Range.

const expand: OpDef = {
  type: "Expand",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    const target = dimsAt(ctx, 1);
    if (t.shape === null || target === null) {
      const n = typeAt(ctx, 1)?.shape?.[0];
      if (t.shape === null || typeof n !== "number") return [result(t.elem, null)];
      return [result(t.elem, broadcastShapes(op, [t.shape, new Array<Dim>(n).fill("?")]))];
    }
    return [result(t.elem, broadcastShapes(op, [t.shape, target]))];
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    const target = intValues(inputs[1]!);
    const shape = broadcastShapes(op, [x.shape, target]) as number[];
    // Broadcast as a strided view: stride 0 along every expanded axis.
    const pad = shape.length - x.shape.length;
    const strides = stridesOf(x.shape);
    const viewStrides = shape.map((_, i) => (i < pad || x.shape[i - pad] === 1 ? 0 : strides[i - pad]));
    return [viewCopy(x, 0, shape, viewStrides)];
  },
};

function tileRepeats(op: Op, rank: number, repeats: number[]): number[] {
  if (repeats.length !== rank || repeats.some((r) => r < 0)) {
    throw opError(op, `repeats [${repeats.join(",")}] must be ${rank} non-negative counts`);
  }
  return repeats;
}

const tile: OpDef = {
  type: "Tile",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    if (t.shape === null) return [result(t.elem, null)];
    const repeats = intsAt(ctx, 1);
    if (repeats === null) return [result(t.elem, t.shape.map((d) => (d === 0 ? 0 : "?")))];
    const r = tileRepeats(op, t.shape.length, repeats);
    return [result(t.elem, t.shape.map((d, i) => dimMul(d, r[i])))];
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    const r = tileRepeats(op, x.shape.length, intValues(inputs[1]!));
    // Output axis i of size r·d is the view [r, d] with strides [0, stride_i].
    const strides = stridesOf(x.shape);
    const viewShape = x.shape.flatMap((d, i) => [r[i], d]);
    const viewStrides = strides.flatMap((s) => [0, s]);
    return [viewCopy(x, 0, viewShape, viewStrides, x.shape.map((d, i) => d * r[i]))];
  },
};

interface PadArgs {
  /** Begin and end pads per axis of the data (zeros for axes not listed). */
  begin: number[];
  end: number[];
  mode: string;
}

/** Pad's pads per axis: attributes `paddings`/`pads` before opset 11, inputs since (opset 18 adds `axes`). */
function padArgs(op: Op, opset: number, rank: number, read: (i: number) => number[] | null): PadArgs | null {
  const mode = op.string("mode", "constant");
  if (!["constant", "reflect", "edge", "wrap"].includes(mode)) throw opError(op, `unknown mode "${mode}"`);
  let pads: readonly number[] | null;
  let axes: number[] | null = null;
  if (opset < 11) {
    pads = op.ints(opset < 2 ? "paddings" : "pads") ?? null;
    if (pads === null) throw opError(op, `missing attribute "${opset < 2 ? "paddings" : "pads"}"`);
  } else {
    pads = read(1);
    if (opset >= 18 && op.operand(3) !== null) {
      axes = read(3);
      if (axes === null) return null;
    }
  }
  if (pads === null) return null;
  const axisList = axes === null ? Array.from({ length: rank }, (_, i) => i) : normalizeAxes(op, axes, rank);
  if (pads.length !== 2 * axisList.length) {
    throw opError(op, `pads [${pads.join(",")}] must hold ${2 * axisList.length} values (begin and end per axis)`);
  }
  const begin = new Array<number>(rank).fill(0);
  const end = new Array<number>(rank).fill(0);
  axisList.forEach((a, i) => {
    begin[a] = pads![i];
    end[a] = pads![i + axisList.length];
  });
  return { begin, end, mode };
}

/** Input coordinate of each output coordinate along one axis, -1 where the constant goes. */
function padMap(op: Op, dim: number, begin: number, end: number, mode: string): Int32Array {
  const n = dim + begin + end;
  if (n < 0) throw opError(op, `pads ${begin}, ${end} remove more than the axis size ${dim}`);
  const map = new Int32Array(n);
  for (let o = 0; o < n; o++) {
    let i = o - begin;
    if (i < 0 || i >= dim) {
      if (mode === "constant") i = -1;
      else if (dim === 0) throw opError(op, `mode "${mode}" cannot pad an axis of size 0`);
      else if (mode === "edge") i = i < 0 ? 0 : dim - 1;
      else if (mode === "wrap") i = ((i % dim) + dim) % dim;
      else if (dim === 1) i = 0;
      else {
        // Reflect without repeating the edge: period 2·(dim − 1), as numpy.pad's reflect.
        const period = 2 * (dim - 1);
        i = ((i % period) + period) % period;
        if (i >= dim) i = period - i;
      }
    }
    map[o] = i;
  }
  return map;
}

/**
 * Gather by per-axis index maps: output element `(i0, …, ik)` is input element
 * `(maps[0][i0], …, maps[k][ik])`; an entry of -1 leaves the output slot as it is
 * (Pad's constant, Resize's extrapolation value). The contiguous stretch of the last
 * axis is one block copy.
 */
function gatherByMaps(src: Elements, inShape: readonly number[], maps: readonly Int32Array[], out: Elements): void {
  const rank = inShape.length;
  const w = src.width;
  const shape = maps.map((m) => m.length);
  if (shapeSize(shape) === 0 || shapeSize(inShape) === 0) return;
  if (rank === 0) {
    copyRun(out.data, 0, src.data, 0, w);
    return;
  }
  const strides = stridesOf(inShape);
  const last = maps[rank - 1];
  let lo = 0;
  while (lo < last.length && last[lo] < 0) lo++;
  let hi = lo;
  while (hi < last.length && last[hi] >= 0 && last[hi] === last[lo] + (hi - lo)) hi++;
  const rows = shapeSize(shape.slice(0, -1));
  const rowLength = last.length * w;
  const counter = new Int32Array(rank - 1);
  const s = src.data as Slots;
  const d = out.data as Slots;
  for (let r = 0; r < rows; r++) {
    let p = 0;
    let inside = true;
    for (let a = 0; a < rank - 1; a++) {
      const i = maps[a][counter[a]];
      if (i < 0) inside = false;
      p += i * strides[a];
    }
    if (inside) {
      const o = r * rowLength;
      if (hi - lo > 1) copyRun(out.data, o + lo * w, src.data, (p + last[lo]) * w, (hi - lo) * w);
      for (let k = 0; k < last.length; k++) {
        if (last[k] < 0 || (k >= lo && k < hi && hi - lo > 1)) continue;
        if (w === 1) d[o + k] = s[p + last[k]];
        else copyRun(out.data, o + k * w, src.data, (p + last[k]) * w, w);
      }
    }
    for (let a = rank - 2; a >= 0; a--) {
      if (++counter[a] < shape[a]) break;
      counter[a] = 0;
    }
  }
}

const pad: OpDef = {
  type: "Pad",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    if (t.shape === null) return [result(t.elem, null)];
    const args = padArgs(op, ctx.opset, t.shape.length, (i) => intsAt(ctx, i));
    if (args === null) return [result(t.elem, t.shape.map(() => "?"))];
    return [
      result(
        t.elem,
        t.shape.map((d, i) => {
          const extra = args.begin[i] + args.end[i];
          if (typeof d !== "number") return extra === 0 ? d : "?";
          if (d + extra < 0) throw opError(op, `pads remove more than the size ${d} of axis ${i}`);
          return d + extra;
        }),
      ),
    ];
  },
  interpret(op, inputs, ctx) {
    const x = inputs[0]!;
    const rank = x.shape.length;
    const args = padArgs(op, ctx.opset, rank, (i) => intsOf(inputs[i]))!;
    const maps = x.shape.map((d, i) => padMap(op, d, args.begin[i], args.end[i], args.mode));
    const shape = maps.map((m) => m.length);
    const src = elementsOf(x);
    const w = src.width;
    const out = allocElements(x.dtype, shapeSize(shape));
    if (args.mode === "constant") {
      const cv = ctx.opset >= 11 ? inputs[2] ?? null : null;
      if (cv !== null && cv !== undefined && cv.data.length > 0) {
        const c = elementsOf(cv).data;
        if (w === 1) fillSlots(out.data, (c as Slots)[0]);
        else for (let i = 0; i < out.data.length; i += w) copyRun(out.data, i, c, 0, w);
      } else if (ctx.opset < 11) {
        const v = op.float("value", 0);
        if (v !== 0) fillSlots(out.data, slotOf(x.dtype, v));
      }
    }
    gatherByMaps(src, x.shape, maps, out);
    return [toTensor(x.dtype, shape, out)];
  },
};

/** Number of elements of `Range(start, limit, delta)`: max(ceil((limit − start) / delta), 0). */
function rangeLength(op: Op, start: number, limit: number, delta: number): number {
  if (delta === 0) throw opError(op, "delta cannot be 0");
  return Math.max(Math.ceil((limit - start) / delta), 0);
}

const range: OpDef = {
  type: "Range",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    const c = [0, 1, 2].map((i) => ctx.constants[i] ?? null);
    if (c.some((x) => x === null)) return [result(t.elem, ["?"])];
    const [start, limit, delta] = c.map((x) => toFloat64(x!)[0]);
    return [result(t.elem, [rangeLength(op, start, limit, delta)])];
  },
  interpret(op, inputs) {
    const [s, l, d] = inputs.map((t) => required(op, t, "operand"));
    if (s.dtype === "i64") {
      const [start, limit, delta] = [s, l, d].map((t) => (t.data as BigInt64Array)[0]);
      if (delta === 0n) throw opError(op, "delta cannot be 0");
      const diff = limit - start;
      // Ceiling division of bigints with either sign.
      let n = diff / delta;
      if (n * delta !== diff && (diff > 0n) === (delta > 0n)) n += 1n;
      const count = n > 0n ? Number(n) : 0;
      const out = new BigInt64Array(count);
      for (let i = 0; i < count; i++) out[i] = start + BigInt(i) * delta;
      return [{ dtype: "i64", shape: [count], data: out }];
    }
    const [start, limit, delta] = [s, l, d].map((t) => toFloat64(t)[0]);
    const count = rangeLength(op, start, limit, delta);
    const values = new Float64Array(count);
    for (let i = 0; i < count; i++) values[i] = start + i * delta;
    return [fromFloat64(s.dtype, [count], values)];
  },
};

// ---------------------------------------------------------------------------
// Resize and Upsample.

/** What a Resize/Upsample op reads besides X: roi, scales and sizes (null when absent or unknown). */
interface ResizeArgs {
  roi: number[] | null;
  scales: number[] | null;
  sizes: number[] | null;
  /** False when an operand is present but its contents are not known (inference only). */
  known: boolean;
}

const COORDINATE_MODES = [
  "half_pixel",
  "half_pixel_symmetric",
  "pytorch_half_pixel",
  "align_corners",
  "asymmetric",
  "tf_half_pixel_for_nn",
  "tf_crop_and_resize",
];

/**
 * Resize's operands by opset: Upsample-7 has a `scales` attribute, Upsample-9 and
 * Resize-10 an input 1, Resize-11+ inputs roi (1), scales (2) and sizes (3); an empty
 * tensor counts as absent.
 */
function resizeArgs(
  op: Op,
  opset: number,
  floats: (i: number) => number[] | null,
  ints: (i: number) => number[] | null,
): ResizeArgs {
  const nonEmpty = (v: number[] | null): number[] | null => (v !== null && v.length > 0 ? v : null);
  if (op.type === "Upsample" && opset < 9) {
    const s = op.floats("scales");
    if (s === undefined) throw opError(op, `missing attribute "scales"`);
    return { roi: null, scales: [...s], sizes: null, known: true };
  }
  if (op.type === "Upsample" || opset < 11) {
    const s = floats(1);
    return { roi: null, scales: s, sizes: null, known: s !== null };
  }
  const read = (i: number, f: (i: number) => number[] | null): [number[] | null, boolean] => {
    if (op.operand(i) === null) return [null, true];
    const v = f(i);
    return [nonEmpty(v), v !== null];
  };
  const [roi, roiKnown] = read(1, floats);
  const [scales, scalesKnown] = read(2, floats);
  const [sizes, sizesKnown] = read(3, ints);
  return { roi, scales, sizes, known: roiKnown && scalesKnown && sizesKnown };
}

interface ResizePlan {
  /** Output dims. */
  shape: Dim[];
  /** Scale per axis used by the coordinate transform (output / input for sizes). */
  scales: number[];
  /** Region of interest per axis, start and end (tf_crop_and_resize only). */
  roiStart: number[];
  roiEnd: number[];
}

/** Output shape and per-axis scales of a Resize (opset 18 `axes` and `keep_aspect_ratio_policy` included). */
function resizePlan(op: Op, opset: number, inShape: readonly Dim[], args: ResizeArgs): ResizePlan {
  const rank = inShape.length;
  const axes = opset >= 18 && op.ints("axes") !== undefined
    ? normalizeAxes(op, op.ints("axes")!, rank)
    : Array.from({ length: rank }, (_, i) => i);
  const crop = op.string("coordinate_transformation_mode", "half_pixel") === "tf_crop_and_resize";
  const roiStart = new Array<number>(rank).fill(0);
  const roiEnd = new Array<number>(rank).fill(1);
  if (crop && args.roi !== null) {
    if (args.roi.length !== 2 * axes.length) {
      throw opError(op, `roi has ${args.roi.length} values, expected ${2 * axes.length}`);
    }
    axes.forEach((a, k) => {
      roiStart[a] = args.roi![k];
      roiEnd[a] = args.roi![k + axes.length];
    });
  }
  const shape: Dim[] = [...inShape];
  const scales = new Array<number>(rank).fill(1);
  if (args.sizes !== null) {
    if (args.scales !== null) throw opError(op, "takes scales or sizes, not both");
    if (args.sizes.length !== axes.length) {
      throw opError(op, `sizes has ${args.sizes.length} values for ${axes.length} axes`);
    }
    const policy = opset >= 18 ? op.string("keep_aspect_ratio_policy", "stretch") : "stretch";
    if (policy !== "stretch") {
      // One scale for every listed axis: the largest that fits (not_larger) or the smallest that covers (not_smaller).
      const ratios = axes.map((a, k) => args.sizes![k] / (inShape[a] as number));
      const s = policy === "not_larger" ? Math.min(...ratios) : Math.max(...ratios);
      for (const a of axes) {
        scales[a] = s;
        const d = inShape[a];
        shape[a] = typeof d === "number" ? Math.round(s * d) : "?";
      }
    } else {
      axes.forEach((a, k) => {
        const d = inShape[a];
        shape[a] = args.sizes![k];
        scales[a] = typeof d === "number" ? args.sizes![k] / d : NaN;
      });
    }
  } else if (args.scales !== null) {
    if (args.scales.length !== axes.length) {
      throw opError(op, `scales has ${args.scales.length} values for ${axes.length} axes`);
    }
    axes.forEach((a, k) => {
      const s = args.scales![k];
      if (!(s > 0)) throw opError(op, `scale ${s} must be positive`);
      scales[a] = s;
      const d = inShape[a];
      // ONNX: output_dimension = floor(input_dimension * (roi_end - roi_start) * scale).
      if (typeof d === "number") shape[a] = Math.floor(d * (roiEnd[a] - roiStart[a]) * s);
      else shape[a] = s === 1 && !crop ? d : "?";
    });
  } else {
    throw opError(op, "needs scales or sizes");
  }
  return { shape, scales, roiStart, roiEnd };
}

/** Interpolation taps of one axis: `count` (input index, weight) pairs per output position. */
interface Taps {
  count: number;
  index: Int32Array;
  weight: Float64Array;
  /** 1 where the position falls outside the input (tf_crop_and_resize extrapolates there). */
  outside: Uint8Array;
}

/** Keys' cubic convolution weights of the 4 taps around a point at `ratio` past the second (ONNX reference). */
function cubicWeights(ratio: number, a: number, out: Float64Array, at: number): void {
  const r1 = ratio + 1;
  const q = 1 - ratio;
  const q1 = q + 1;
  out[at] = ((a * r1 - 5 * a) * r1 + 8 * a) * r1 - 4 * a;
  out[at + 1] = ((a + 2) * ratio - (a + 3)) * ratio * ratio + 1;
  out[at + 2] = ((a + 2) * q - (a + 3)) * q * q + 1;
  out[at + 3] = ((a * q1 - 5 * a) * q1 + 8 * a) * q1 - 4 * a;
}

/**
 * Taps of one axis, following the ONNX reference implementation: the coordinate
 * transform maps output x to input x_ori; neighbours outside the input repeat the edge
 * (or are dropped and the weights renormalised with `exclude_outside`).
 */
function resizeTaps(
  op: Op,
  opset: number,
  mode: string,
  inLen: number,
  outLen: number,
  scale: number,
  roiStart: number,
  roiEnd: number,
): Taps {
  const legacy = op.type === "Upsample" || opset < 11;
  const coord = legacy ? "asymmetric" : op.string("coordinate_transformation_mode", "half_pixel");
  if (!COORDINATE_MODES.includes(coord)) throw opError(op, `unknown coordinate_transformation_mode "${coord}"`);
  const nearestMode = op.string("nearest_mode", "round_prefer_floor");
  const a = op.float("cubic_coeff_a", -0.75);
  const exclude = op.flag("exclude_outside");
  const count = mode === "nearest" ? 1 : mode === "linear" ? 2 : 4;
  const index = new Int32Array(outLen * count);
  const weight = new Float64Array(outLen * count);
  const outside = new Uint8Array(outLen);
  for (let x = 0; x < outLen; x++) {
    let xo: number;
    switch (coord) {
      case "half_pixel":
        xo = (x + 0.5) / scale - 0.5;
        break;
      case "half_pixel_symmetric": {
        const adjustment = outLen / (scale * inLen);
        xo = (inLen / 2) * (1 - adjustment) + (x + 0.5) / scale - 0.5;
        break;
      }
      case "pytorch_half_pixel":
        xo = outLen > 1 ? (x + 0.5) / scale - 0.5 : 0;
        break;
      case "align_corners":
        xo = outLen === 1 ? 0 : (x * (inLen - 1)) / (outLen - 1);
        break;
      case "asymmetric":
        xo = x / scale;
        break;
      case "tf_half_pixel_for_nn":
        xo = (x + 0.5) / scale;
        break;
      default:
        xo = outLen > 1
          ? roiStart * (inLen - 1) + (x * (roiEnd - roiStart) * (inLen - 1)) / (outLen - 1)
          : 0.5 * (roiStart + roiEnd) * (inLen - 1);
        if (xo < 0 || xo > inLen - 1) outside[x] = 1;
    }
    const at = x * count;
    if (mode === "nearest") {
      let i: number;
      if (legacy) {
        // Upsample and Resize-10 had no nearest_mode: truncate, or round up when downsampling (as onnxruntime).
        i = scale < 1 ? Math.ceil(xo) : Math.trunc(xo);
      } else if (Number.isInteger(xo)) i = xo;
      else {
        const base = Math.floor(xo);
        const ratio = xo - base;
        const up = nearestMode === "round_prefer_floor"
          ? ratio > 0.5
          : nearestMode === "round_prefer_ceil"
          ? ratio >= 0.5
          : nearestMode === "ceil"
          ? true
          : nearestMode === "floor"
          ? false
          : (() => {
            throw opError(op, `unknown nearest_mode "${nearestMode}"`);
          })();
        i = base + (up ? 1 : 0);
      }
      index[at] = clampIndex(i, 0, inLen - 1);
      weight[at] = 1;
      continue;
    }
    // Neighbours: the `count` input points nearest x_ori, the left one preferred (ratio in (0, 1]).
    let base = Math.floor(xo);
    let ratio = xo - base;
    if (ratio === 0) {
      base -= 1;
      ratio = 1;
    }
    const first = count === 2 ? base : base - 1;
    if (count === 2) {
      weight[at] = 1 - ratio;
      weight[at + 1] = ratio;
    } else cubicWeights(ratio, a, weight, at);
    let sum = 0;
    for (let t = 0; t < count; t++) {
      const i = first + t;
      if (exclude && (i < 0 || i >= inLen)) weight[at + t] = 0;
      sum += weight[at + t];
      index[at + t] = clampIndex(i, 0, inLen - 1);
    }
    if (exclude && sum !== 0) { for (let t = 0; t < count; t++) weight[at + t] /= sum; }
  }
  return { count, index, weight, outside };
}

/** True when taps copy the input unchanged (same length, each output reads its own position). */
function identityTaps(taps: Taps, inLen: number): boolean {
  const outLen = taps.outside.length;
  if (outLen !== inLen) return false;
  for (let x = 0; x < outLen; x++) {
    if (taps.outside[x]) return false;
    let w = 0;
    for (let t = 0; t < taps.count; t++) {
      const k = x * taps.count + t;
      if (taps.weight[k] !== 0 && taps.index[k] !== x) return false;
      w += taps.weight[k];
    }
    if (w !== 1) return false;
  }
  return true;
}

function resizeInfer(op: Op, ctx: InferContext): (TensorType | null)[] {
  const t = typeAt(ctx, 0);
  if (t === null) return [null];
  if (t.shape === null) return [result(t.elem, null)];
  const floats = (i: number): number[] | null => {
    const c = ctx.constants[i] ?? null;
    return c === null ? null : Array.from(toFloat64(c));
  };
  const args = resizeArgs(op, ctx.opset, floats, (i) => intsAt(ctx, i));
  if (!args.known || (args.scales === null && args.sizes === null)) return [result(t.elem, t.shape.map(() => "?"))];
  return [result(t.elem, resizePlan(op, ctx.opset, t.shape, args).shape)];
}

function resizeInterpret(op: Op, inputs: readonly (Tensor | null)[], opset: number): Tensor[] {
  const x = inputs[0]!;
  const floats = (i: number): number[] | null => {
    const c = inputs[i] ?? null;
    return c === null ? null : Array.from(toFloat64(c));
  };
  const args = resizeArgs(op, opset, floats, (i) => intsOf(inputs[i]));
  const plan = resizePlan(op, opset, x.shape, args);
  const shape = plan.shape as number[];
  const mode = op.string("mode", "nearest");
  if (!["nearest", "linear", "cubic", "bilinear"].includes(mode)) throw opError(op, `unknown mode "${mode}"`);
  if (op.int("antialias", 0) !== 0) throw opError(op, "antialias=1 is not supported");
  const kind = mode === "bilinear" ? "linear" : mode;
  const taps = x.shape.map((d, a) =>
    resizeTaps(op, opset, kind, d, shape[a], plan.scales[a], plan.roiStart[a], plan.roiEnd[a])
  );
  const extrapolation = op.float("extrapolation_value", 0);
  const anyOutside = taps.some((t) => t.outside.includes(1));
  if (kind === "nearest") {
    const src = elementsOf(x);
    const out = allocElements(x.dtype, shapeSize(shape));
    if (anyOutside) fillSlots(out.data, slotOf(x.dtype, extrapolation));
    const maps = taps.map((t) => t.index.map((i, k) => (t.outside[k] ? -1 : i)));
    gatherByMaps(src, x.shape, maps, out);
    return [toTensor(x.dtype, shape, out)];
  }
  if (!FLOAT_DTYPES.has(x.dtype)) throw opError(op, `${kind} Resize of ${x.dtype} is not supported`);
  // Interpolation is separable: one 1-D pass per axis that changes, in float64.
  let data = toFloat64(x);
  const cur = [...x.shape];
  x.shape.forEach((inLen, a) => {
    const tp = taps[a];
    if (identityTaps(tp, inLen)) return;
    const outLen = shape[a];
    const outer = shapeSize(cur.slice(0, a));
    const inner = shapeSize(cur.slice(a + 1));
    const next = new Float64Array(outer * outLen * inner);
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < outLen; j++) {
        const dst = (o * outLen + j) * inner;
        for (let t = 0; t < tp.count; t++) {
          const w = tp.weight[j * tp.count + t];
          if (w === 0) continue;
          const src = (o * inLen + tp.index[j * tp.count + t]) * inner;
          for (let i = 0; i < inner; i++) next[dst + i] += w * data[src + i];
        }
      }
    }
    data = next;
    cur[a] = outLen;
  });
  if (anyOutside) {
    // tf_crop_and_resize: a point outside the input on any axis takes the extrapolation value.
    const strides = stridesOf(shape);
    for (let k = 0; k < data.length; k++) {
      let rest = k;
      for (let a = 0; a < shape.length; a++) {
        const c = Math.floor(rest / strides[a]);
        rest -= c * strides[a];
        if (taps[a].outside[c]) {
          data[k] = extrapolation;
          break;
        }
      }
    }
  }
  return [fromFloat64(x.dtype, shape, data)];
}

const resize: OpDef = {
  type: "Resize",
  infer: resizeInfer,
  interpret: (op, inputs, ctx) => resizeInterpret(op, inputs, ctx.opset),
};

const upsample: OpDef = {
  type: "Upsample",
  infer: resizeInfer,
  interpret: (op, inputs, ctx) => resizeInterpret(op, inputs, ctx.opset),
};

// ---------------------------------------------------------------------------
// TopK, NonZero, EyeLike, Trilu.

/** Per-element keys of a numeric tensor in a form `<` orders: numbers, or bigints for 64-bit integers. */
function sortKeys(op: Op, t: Tensor): ArrayLike<number | bigint> {
  if (t.dtype === "i64" || t.dtype === "u64") return t.data as BigInt64Array;
  try {
    return toFloat64(t);
  } catch {
    throw opError(op, `cannot order ${t.dtype} elements`);
  }
}

function topKCount(op: Op, opset: number, read: () => number[] | null): number | null {
  if (opset < 10) {
    const k = op.int("k");
    if (k === undefined) throw opError(op, `missing attribute "k"`);
    return k;
  }
  const k = read();
  return k === null ? null : k[0];
}

const topK: OpDef = {
  type: "TopK",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null, null];
    if (t.shape === null) return [result(t.elem, null), result("i64", null)];
    const axis = normalizeAxis(op, op.int("axis", -1), t.shape.length);
    const k = topKCount(op, ctx.opset, () => intsAt(ctx, 1));
    const s = [...t.shape];
    s[axis] = k ?? "?";
    return [result(t.elem, s), result("i64", s)];
  },
  interpret(op, inputs, ctx) {
    const x = inputs[0]!;
    const axis = normalizeAxis(op, op.int("axis", -1), x.shape.length);
    const k = topKCount(op, ctx.opset, () => intsOf(inputs[1]))!;
    const dim = x.shape[axis];
    if (k < 0 || k > dim) throw opError(op, `k = ${k} is out of range for an axis of size ${dim}`);
    const largest = op.int("largest", 1) === 1;
    const keys = sortKeys(op, x);
    const outer = shapeSize(x.shape.slice(0, axis));
    const inner = shapeSize(x.shape.slice(axis + 1));
    const shape = [...x.shape];
    shape[axis] = k;
    const values = allocElements(x.dtype, shapeSize(shape));
    const indices = new BigInt64Array(shapeSize(shape));
    const order = new Int32Array(dim);
    const src = x.data as Slots;
    const dst = values.data as Slots;
    let base = 0;
    // Ties keep the lower index first (ONNX TopK); NaN orders above every number.
    const cmp = (a: number, b: number): number => {
      const ka = keys[base + a * inner];
      const kb = keys[base + b * inner];
      if (ka !== kb) {
        const aNaN = ka !== ka;
        const bNaN = kb !== kb;
        if (aNaN !== bNaN) return (aNaN ? -1 : 1) * (largest ? 1 : -1);
        if (!aNaN) return (ka > kb ? -1 : 1) * (largest ? 1 : -1);
      }
      return a - b;
    };
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        base = o * dim * inner + i;
        for (let j = 0; j < dim; j++) order[j] = j;
        order.sort(cmp);
        for (let j = 0; j < k; j++) {
          const at = (o * k + j) * inner + i;
          dst[at] = src[base + order[j] * inner];
          indices[at] = BigInt(order[j]);
        }
      }
    }
    return [toTensor(x.dtype, shape, values), { dtype: "i64", shape, data: indices }];
  },
};

/** True where a storage slot holds a non-zero element (f16/bf16 by bits, so -0 is zero). */
function nonZeroTest(dtype: DType): (v: unknown) => boolean {
  if (dtype === "f16" || dtype === "bf16") return (v) => ((v as number) & 0x7fff) !== 0;
  if (dtype === "string") return (v) => v !== "";
  return (v) => v !== 0 && v !== 0n;
}

const nonZero: OpDef = {
  type: "NonZero",
  infer(_op, ctx) {
    const t = typeAt(ctx, 0);
    return [result("i64", [t?.shape?.length ?? "?", "?"])];
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    if (PACKED.has(x.dtype) || x.dtype === "c64" || x.dtype === "c128") {
      throw opError(op, `NonZero of ${x.dtype} is not supported`);
    }
    const rank = x.shape.length;
    const test = nonZeroTest(x.dtype);
    const d = x.data as Slots;
    const n = x.data.length;
    const hits: number[] = [];
    for (let i = 0; i < n; i++) if (test(d[i])) hits.push(i);
    const out = new BigInt64Array(rank * hits.length);
    const strides = stridesOf(x.shape);
    hits.forEach((flat, j) => {
      let rest = flat;
      for (let a = 0; a < rank; a++) {
        out[a * hits.length + j] = BigInt(Math.floor(rest / strides[a]));
        rest %= strides[a];
      }
    });
    return [{ dtype: "i64", shape: [rank, hits.length], data: out }];
  },
};

function eyeLikeType(op: Op, input: DType | ElementType): DType | ElementType {
  return op.int("dtype") === undefined ? input : dtypeAttr(op, "dtype");
}

const eyeLike: OpDef = {
  type: "EyeLike",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t === null) return [null];
    if (t.shape !== null && t.shape.length !== 2) {
      throw opError(op, `expects a rank-2 input, found ${shapeText(t.shape)}`);
    }
    return [result(eyeLikeType(op, t.elem), t.shape)];
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    if (x.shape.length !== 2) throw opError(op, `expects a rank-2 input, found [${x.shape.join(",")}]`);
    const dtype = eyeLikeType(op, x.dtype) as DType;
    const [rows, cols] = x.shape;
    const k = op.int("k", 0);
    const out = allocData(dtype, rows * cols);
    const one = slotOf(dtype, 1);
    for (let i = Math.max(0, -k); i < rows && i + k < cols; i++) (out as Slots)[i * cols + i + k] = one;
    return [{ dtype, shape: [rows, cols], data: out }];
  },
};

const trilu: OpDef = {
  type: "Trilu",
  infer(op, ctx) {
    const t = typeAt(ctx, 0);
    if (t !== null && t.shape !== null && t.shape.length < 2) {
      throw opError(op, `expects rank 2 or more, found ${shapeText(t.shape)}`);
    }
    return [t];
  },
  interpret(op, inputs) {
    const x = inputs[0]!;
    const rank = x.shape.length;
    if (rank < 2) throw opError(op, `expects rank 2 or more, found [${x.shape.join(",")}]`);
    const k = intsOf(inputs[1])?.[0] ?? 0;
    const upper = op.flag("upper", true);
    const rows = x.shape[rank - 2];
    const cols = x.shape[rank - 1];
    const src = elementsOf(x);
    const w = src.width;
    const out = allocElements(x.dtype, shapeSize(x.shape));
    const mats = shapeSize(x.shape.slice(0, -2));
    // Upper keeps j − i ≥ k, lower keeps j − i ≤ k; each row keeps one contiguous run.
    for (let m = 0; m < mats; m++) {
      for (let i = 0; i < rows; i++) {
        const from = upper ? clampIndex(i + k, 0, cols) : 0;
        const to = upper ? cols : clampIndex(i + k + 1, 0, cols);
        const row = (m * rows + i) * cols;
        if (to > from) copyRun(out.data, (row + from) * w, src.data, (row + from) * w, (to - from) * w);
      }
    }
    return [toTensor(x.dtype, x.shape, out)];
  },
};

/**
 * Definitions of this family: shape inference, shape values and reference kernels
 * (no MACs: these ops only move data).
 *
 * @example Transpose a matrix with the family's kernel
 * ```ts
 * import assert from "node:assert/strict";
 * import { Op } from "../graph.ts";
 * import { float32Tensor } from "../tensor.ts";
 * import { tensorOps } from "./tensor.ts";
 * const transpose = tensorOps.find((d) => d.type === "Transpose")!;
 * const op = new Op({ name: "t", type: "Transpose" });
 * const [y] = transpose.interpret!(op, [float32Tensor([2, 2], [1, 2, 3, 4])], { opset: 13 });
 * assert.deepEqual([...y.data], [1, 3, 2, 4]);
 * ```
 */
export const tensorOps: OpDef[] = [
  identity,
  dropout,
  constant,
  constantOfShape,
  shape,
  size,
  cast,
  castLike,
  reshape,
  flatten,
  squeeze,
  unsqueeze,
  transpose,
  depthToSpace,
  spaceToDepth,
  concat,
  split,
  slice,
  gather,
  gatherElements,
  gatherND,
  scatterND,
  scatterElements,
  scatter,
  expand,
  tile,
  pad,
  range,
  topK,
  nonZero,
  eyeLike,
  trilu,
  resize,
  upsample,
];
