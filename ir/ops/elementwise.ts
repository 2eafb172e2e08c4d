/**
 * Elementwise ops: arithmetic and logic with numpy broadcasting, activations,
 * comparisons, softmax and reductions. Kernels run on the tensors' typed arrays:
 * f16/bf16 are computed in f32 and rounded back, i64/u64 with BigInt math.
 * Every op here counts as 0 MACs in the cost model (`macs` returns 0): only
 * multiply-accumulate-bound ops (Conv, Gemm, MatMul) are costed.
 * @module
 */
import type { Op } from "../graph.ts";
import type { InferContext, KernelContext, OpDef } from "../op_def.ts";
import {
  allocData,
  bfloat16ToFloat,
  floatToBfloat16,
  floatToHalf,
  halfToFloat,
  shapeSize,
  type Tensor,
  tensor,
  type TensorData,
  toFloat64,
} from "../tensor.ts";
import {
  type Dim,
  type DType,
  type ElementType,
  elementTypeToString,
  sameElementType,
  type TensorType,
} from "../types.ts";
import { reduceChannels, sameChannels } from "./channels.ts";
import { I32, V128, wasmModule } from "./wasm_encode.ts";
import {
  broadcastShapes,
  dimMul,
  dimQuotient,
  intValues,
  lazyWasm,
  normalizeAxis,
  opError,
  stridesOf,
} from "./common.ts";

// ---------------------------------------------------------------------------
// Element storage and dtype classes

/** Storage of number-valued elements (floats, small integers, bool). */
type NumArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | Uint8Array
  | Uint16Array
  | Uint32Array;
/** Storage of 64-bit integers. */
type BigArray = BigInt64Array | BigUint64Array;
/** Any numeric storage. */
type Elems = NumArray | BigArray;
/** Writable indexed storage of `T` (typed arrays and `string[]`). */
type Indexed<T> = { [i: number]: T };

/**
 * How a dtype is computed: `float` (f32/f64; f16/bf16 widened to f32), `int`
 * (8 to 32-bit integers in their own typed arrays, which wrap on store), `big`
 * (i64/u64 as BigInt) or `bool` (0/1 bytes).
 */
type Domain = "float" | "int" | "big" | "bool";

const NUMERIC: readonly Domain[] = ["float", "int", "big"];
const FLOAT: readonly Domain[] = ["float"];

function domainOf(dtype: DType): Domain | null {
  switch (dtype) {
    case "f32":
    case "f64":
    case "f16":
    case "bf16":
      return "float";
    case "i8":
    case "i16":
    case "i32":
    case "u8":
    case "u16":
    case "u32":
      return "int";
    case "i64":
    case "u64":
      return "big";
    case "bool":
      return "bool";
    default:
      return null;
  }
}

/** The dtype whose storage kernels compute in: halves widen to f32. */
function computeDtype(dtype: DType): DType {
  return dtype === "f16" || dtype === "bf16" ? "f32" : dtype;
}

/** Number-valued elements of `t` (halves decoded into a new Float32Array; others are the storage itself). */
function numbers(t: Tensor): NumArray {
  if (t.dtype === "f16" || t.dtype === "bf16") {
    const bits = t.data as Uint16Array;
    const decode = t.dtype === "f16" ? halfToFloat : bfloat16ToFloat;
    const out = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) out[i] = decode(bits[i]);
    return out;
  }
  return t.data as NumArray;
}

/** Elements of `t` as kernels read them (see {@linkcode numbers}). */
function elems(t: Tensor): Elems {
  return domainOf(t.dtype) === "big" ? (t.data as BigArray) : numbers(t);
}

/** A result tensor of `dtype` from storage computed in `computeDtype(dtype)` (halves are rounded back). */
function finish(dtype: DType, shape: readonly number[], data: TensorData): Tensor {
  if (dtype === "f16" || dtype === "bf16") {
    const values = data as Float32Array;
    const encode = dtype === "f16" ? floatToHalf : floatToBfloat16;
    const bits = new Uint16Array(values.length);
    for (let i = 0; i < values.length; i++) bits[i] = encode(values[i]);
    return tensor(dtype, shape, bits);
  }
  return tensor(dtype, shape, data);
}

/**
 * Storage for a result of `dtype` with `n` elements, all of which the kernel
 * writes: operand `index`'s own storage when the interpreter lets the kernel
 * overwrite it (same dtype and size, computed in place), else recycled or new
 * storage. In-place is safe for kernels whose element `i` reads only element
 * `i` of that operand.
 */
function resultStorage(ctx: KernelContext, index: number, operand: Tensor, dtype: DType, n: number): TensorData {
  const inPlace = operand.dtype === dtype && computeDtype(dtype) === dtype && operand.data.length === n &&
    ctx.reusable?.(index) === true;
  if (inPlace) return operand.data;
  return ctx.alloc?.(computeDtype(dtype), n) ?? allocData(computeDtype(dtype), n);
}

/** Operand `i`, which the op requires. */
function required(op: Op, inputs: readonly (Tensor | null)[], i: number): Tensor {
  const t = inputs[i];
  if (t === null || t === undefined) throw opError(op, `operand ${i} is missing`);
  return t;
}

/** The compute domain of `t`, checked against the domains `op` allows. */
function domainFor(op: Op, t: Tensor, allowed: readonly Domain[]): Domain {
  const d = domainOf(t.dtype);
  if (d === null || !allowed.includes(d)) throw opError(op, `not defined for ${t.dtype} operands`);
  return d;
}

/** Throws naming the op unless all operands share one dtype. */
function sameDtypes(op: Op, ts: readonly Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== ts[0].dtype) throw opError(op, `operand dtypes ${ts[0].dtype} and ${t.dtype} differ`);
  }
}

/** Elementwise ops have no multiply-accumulates in the cost model. */
const zeroMacs = (): number => 0;

// ---------------------------------------------------------------------------
// Broadcasting plan

/**
 * How to walk a broadcast result in runs: result dimensions of size 1 are
 * dropped and adjacent dimensions that every operand walks linearly are merged,
 * so same-shape operands are one run, a scalar operand is a stride-0 run, and a
 * `[C,1,1]` bias against `[N,C,H,W]` is `N*C` runs of `H*W`.
 */
interface BroadcastPlan {
  /** Result elements. */
  readonly size: number;
  /** Length of each innermost run. */
  readonly inner: number;
  /** Per operand, its stride along a run: 1, or 0 when broadcast. */
  readonly innerStrides: readonly number[];
  /** Extents of the merged outer dimensions, outermost first. */
  readonly outer: readonly number[];
  /** Per outer dimension, each operand's stride. */
  readonly outerStrides: readonly (readonly number[])[];
}

function planBroadcast(shapes: readonly (readonly number[])[], result: readonly number[]): BroadcastPlan {
  const rank = result.length;
  const full = shapes.map((s) => stridesOf(s));
  // Merged dimensions, innermost first.
  const extents: number[] = [];
  const strides: number[][] = [];
  for (let d = rank - 1; d >= 0; d--) {
    if (result[d] === 1) continue;
    const dimStrides = shapes.map((s, k) => {
      const sd = d - (rank - s.length);
      return sd < 0 || s[sd] === 1 ? 0 : full[k][sd];
    });
    const top = extents.length - 1;
    if (top >= 0 && dimStrides.every((st, k) => st === strides[top][k] * extents[top])) {
      extents[top] *= result[d];
    } else {
      extents.push(result[d]);
      strides.push(dimStrides);
    }
  }
  return {
    size: shapeSize(result),
    inner: extents.length > 0 ? extents[0] : 1,
    innerStrides: extents.length > 0 ? strides[0] : shapes.map(() => 0),
    outer: extents.slice(1).reverse(),
    outerStrides: strides.slice(1).reverse(),
  };
}

/**
 * Call `body` once per run with each operand's offset (an array reused across
 * calls) and the result offset; the body loops over `plan.inner` elements.
 */
function forEachRun(plan: BroadcastPlan, body: (offsets: readonly number[], resultOffset: number) => void): void {
  if (plan.size === 0) return;
  const operands = plan.innerStrides.length;
  const rank = plan.outer.length;
  const offsets = new Array<number>(operands).fill(0);
  const index = new Array<number>(rank).fill(0);
  for (let at = 0; at < plan.size; at += plan.inner) {
    body(offsets, at);
    for (let d = rank - 1; d >= 0; d--) {
      const st = plan.outerStrides[d];
      if (++index[d] < plan.outer[d]) {
        for (let k = 0; k < operands; k++) offsets[k] += st[k];
        break;
      }
      index[d] = 0;
      for (let k = 0; k < operands; k++) offsets[k] -= st[k] * (plan.outer[d] - 1);
    }
  }
}

/** A binary kernel over one run: `y[yi + j] = f(a[ai + j*as], b[bi + j*bs])` for `j < n`. */
type Run<A, Y = A> = (a: A, ai: number, as: number, b: A, bi: number, bs: number, y: Y, yi: number, n: number) => void;

/** Apply `run` to operands `a` and `b` broadcast to `yShape`. */
function runBroadcast<A, Y>(
  run: Run<A, Y>,
  a: A,
  aShape: readonly number[],
  b: A,
  bShape: readonly number[],
  y: Y,
  yShape: readonly number[],
): void {
  const plan = planBroadcast([aShape, bShape], yShape);
  const [as, bs] = plan.innerStrides;
  const n = plan.inner;
  forEachRun(plan, (o, yi) => run(a, o[0], as, b, o[1], bs, y, yi, n));
}

/** Copy `src` broadcast to `yShape` into `y` (any element storage). */
function expandInto(
  src: Indexed<unknown>,
  srcShape: readonly number[],
  y: Indexed<unknown>,
  yShape: readonly number[],
): void {
  const plan = planBroadcast([srcShape], yShape);
  const s = plan.innerStrides[0];
  const n = plan.inner;
  forEachRun(plan, (o, yi) => {
    const si = o[0];
    for (let j = 0; j < n; j++) y[yi + j] = src[si + j * s];
  });
}

// ---------------------------------------------------------------------------
// Binary arithmetic and logic

/** Kernels of one binary op per compute domain; a missing domain is unsupported. */
interface Kernels {
  readonly float?: Run<NumArray>;
  readonly int?: Run<NumArray>;
  readonly big?: Run<BigArray>;
  readonly bool?: Run<Uint8Array>;
}

/** A run computing `f` per element: for the rarely hot ops, where one call per element is acceptable. */
function numRun(f: (a: number, b: number) => number): Run<NumArray> {
  return (a, ai, as, b, bi, bs, y, yi, n) => {
    for (let j = 0; j < n; j++) y[yi + j] = f(a[ai + j * as], b[bi + j * bs]);
  };
}

/** {@linkcode numRun} for BigInt storage. */
function bigRun(f: (a: bigint, b: bigint) => bigint): Run<BigArray> {
  return (a, ai, as, b, bi, bs, y, yi, n) => {
    for (let j = 0; j < n; j++) y[yi + j] = f(a[ai + j * as], b[bi + j * bs]);
  };
}

// Hot float ops get their own loops so the JIT compiles each as a tight loop
// without a call per element. Integer storage truncates and wraps on store,
// which is ONNX's integer semantics for Add/Sub and truncating Div.
// Add and Mul, the hottest (residual sums, squeeze-excite scales, hard-swish), also have loops for runs of
// contiguous operands and of one operand against a scalar: the same products and sums, fewer index multiplies.
const addRun: Run<NumArray> = (a, ai, as, b, bi, bs, y, yi, n) => {
  if (as === 1 && bs === 1) { for (let j = 0; j < n; j++) y[yi + j] = a[ai + j] + b[bi + j]; }
  else if (as === 1 && bs === 0) {
    const t = b[bi];
    for (let j = 0; j < n; j++) y[yi + j] = a[ai + j] + t;
  } else for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] + b[bi + j * bs];
};
const subRun: Run<NumArray> = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] - b[bi + j * bs];
};
const mulRun: Run<NumArray> = (a, ai, as, b, bi, bs, y, yi, n) => {
  if (as === 1 && bs === 1) { for (let j = 0; j < n; j++) y[yi + j] = a[ai + j] * b[bi + j]; }
  else if (as === 1 && bs === 0) {
    const t = b[bi];
    for (let j = 0; j < n; j++) y[yi + j] = a[ai + j] * t;
  } else if (as === 0 && bs === 1) {
    const t = a[ai];
    for (let j = 0; j < n; j++) y[yi + j] = t * b[bi + j];
  } else for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] * b[bi + j * bs];
};
// A 32-bit integer product can exceed 2^53; Math.imul wraps exactly.
const imulRun: Run<NumArray> = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = Math.imul(a[ai + j * as], b[bi + j * bs]);
};
// For integers the quotient is truncated toward zero by the store; x/0 stores 0.
const divRun: Run<NumArray> = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] / b[bi + j * bs];
};
const maxRun: Run<NumArray> = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = Math.max(a[ai + j * as], b[bi + j * bs]);
};
const minRun: Run<NumArray> = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = Math.min(a[ai + j * as], b[bi + j * bs]);
};

const addBig = bigRun((a, b) => a + b);
const subBig = bigRun((a, b) => a - b);
const mulBig = bigRun((a, b) => a * b);
const divBig = bigRun((a, b) => (b === 0n ? 0n : a / b));
const maxBig = bigRun((a, b) => (a > b ? a : b));
const minBig = bigRun((a, b) => (a < b ? a : b));

/** Remainder with the sign of the divisor (Python `%`, ONNX Mod with fmod=0). */
function floorMod(a: number, b: number): number {
  const r = a % b;
  return r !== 0 && r < 0 !== b < 0 ? r + b : r;
}

function floorModBig(a: bigint, b: bigint): bigint {
  if (b === 0n) return 0n;
  const r = a % b;
  return r !== 0n && r < 0n !== b < 0n ? r + b : r;
}

/** `a ** b` wrapped to 64 bits by square-and-multiply; negative exponents give the integer part of `1 / a^|b|`. */
function powBig(a: bigint, b: bigint): bigint {
  if (b < 0n) {
    if (a === 1n) return 1n;
    if (a === -1n) return b % 2n === 0n ? 1n : -1n;
    return 0n;
  }
  let result = 1n;
  let base = BigInt.asIntN(64, a);
  for (let e = b; e > 0n; e >>= 1n) {
    if (e & 1n) result = BigInt.asIntN(64, result * base);
    base = BigInt.asIntN(64, base * base);
  }
  return result;
}

const bitwiseAnd: Run<Uint8Array> = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] & b[bi + j * bs];
};
const bitwiseOr: Run<Uint8Array> = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] | b[bi + j * bs];
};
const bitwiseXor: Run<Uint8Array> = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] ^ b[bi + j * bs];
};

/**
 * ONNX opsets before 7 broadcast only with `broadcast=1`, aligning B's
 * dimensions at `axis` of A (suffix alignment when `axis` is absent); give B
 * the shape that numpy broadcasting then treats the same way.
 */
function legacyShape(op: Op, opset: number, aShape: readonly Dim[], bShape: readonly Dim[]): readonly Dim[] {
  if (opset >= 7 || op.int("broadcast", 0) !== 1) return bShape;
  const axis = op.int("axis");
  if (axis === undefined) return bShape;
  const start = axis < 0 ? axis + aShape.length : axis;
  const trailing = aShape.length - start - bShape.length;
  if (start < 0 || trailing < 0) {
    throw opError(op, `cannot align shape [${bShape.join(",")}] at axis ${axis} of [${aShape.join(",")}]`);
  }
  return [...bShape, ...new Array<number>(trailing).fill(1)];
}

/** How operand B's shape is aligned with A's before numpy broadcasting. */
type Align = (op: Op, opset: number, aShape: readonly Dim[], bShape: readonly Dim[]) => readonly Dim[];

/** Combine `a` and `b` in domain `d` with `kernels` into `y` (all in compute storage). */
function combine(
  kernels: Kernels,
  d: Domain,
  a: Elems,
  aShape: readonly number[],
  b: Elems,
  bShape: readonly number[],
  y: Elems,
  yShape: readonly number[],
): void {
  switch (d) {
    case "big":
      return runBroadcast(kernels.big!, a as BigArray, aShape, b as BigArray, bShape, y as BigArray, yShape);
    case "bool":
      return runBroadcast(kernels.bool!, a as Uint8Array, aShape, b as Uint8Array, bShape, y as Uint8Array, yShape);
    default:
      return runBroadcast(kernels[d]!, a as NumArray, aShape, b as NumArray, bShape, y as NumArray, yShape);
  }
}

/** Domains `kernels` supports. */
function domainsOf(kernels: Kernels): Domain[] {
  return (["float", "int", "big", "bool"] as const).filter((d) => kernels[d] !== undefined);
}

/** Result type of ops whose operands share one element type and broadcast together. */
function inferBroadcast(
  op: Op,
  ctx: InferContext,
  count: number,
  resultElem?: ElementType,
  align: Align = legacyShape,
): (TensorType | null)[] {
  if (ctx.types.length < count) throw opError(op, `expects ${count} operands, found ${ctx.types.length}`);
  const types = ctx.types.slice(0, count);
  const known = types.filter((t): t is TensorType => t !== null);
  if (known.length === 0) return [resultElem === undefined ? null : { elem: resultElem, shape: null }];
  const elem = known[0].elem;
  for (const t of known) {
    if (!sameElementType(t.elem, elem)) {
      throw opError(op, `operand types ${elementTypeToString(elem)} and ${elementTypeToString(t.elem)} differ`);
    }
  }
  const shapes = types.map((t) => t?.shape ?? null);
  let shape: Dim[] | null = null;
  if (shapes.every((s) => s !== null)) {
    const aligned = count === 2 ? [shapes[0]!, align(op, ctx.opset, shapes[0]!, shapes[1]!)] : shapes;
    shape = broadcastShapes(op, aligned as Dim[][]);
  }
  return [{ elem: resultElem ?? elem, shape }];
}

/** Dimension arithmetic behind `shapeValue`: the result for one element pair, `"?"` when unknown. */
type DimFn = (a: Dim, b: Dim, op: Op) => Dim;

/**
 * Contents of a binary op's result from its operands' known contents, for
 * 0-D/1-D integer operands (shape arithmetic such as `Div(Mul(d0, d1), 4)`).
 */
function binaryShapeValue(f: DimFn): (op: Op, ctx: InferContext) => Dim[] | null {
  return (op, ctx) => {
    if (ctx.shapeValues.length !== 2) return null;
    const a = ctx.shapeValues[0];
    const b = ctx.shapeValues[1];
    if (a === null || a === undefined || b === null || b === undefined) return null;
    return zipDims(a, b, (x, y) => f(x, y, op));
  };
}

/** Apply `f` pairwise over 1-D dimension lists that broadcast (equal lengths, or one of length 1). */
function zipDims(a: readonly Dim[], b: readonly Dim[], f: (a: Dim, b: Dim) => Dim): Dim[] | null {
  const n = Math.max(a.length, b.length);
  if ((a.length !== n && a.length !== 1) || (b.length !== n && b.length !== 1)) return null;
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) out.push(f(a[a.length === 1 ? 0 : i], b[b.length === 1 ? 0 : i]));
  return out;
}

const dimAdd: DimFn = (a, b) => {
  if (typeof a === "number" && typeof b === "number") return a + b;
  return b === 0 ? a : a === 0 ? b : "?";
};

const dimSub: DimFn = (a, b) => {
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (b === 0) return a;
  return a === b && a !== "?" ? 0 : "?";
};

const dimTimes: DimFn = (a, b) => {
  if (a === 0 || b === 0) return 0;
  // A symbol times a negative number (a -1 sentinel) is not a dimension.
  if ((typeof a === "number" && a < 0) || (typeof b === "number" && b < 0)) {
    return typeof a === "number" && typeof b === "number" ? a * b : "?";
  }
  return dimMul(a, b);
};

/** Integer quotient of dimensions: exact for numbers, cancels symbolic factors (`N*3136 / 64 = N*49`). */
const dimDiv: DimFn = (a, b, op) => {
  if (typeof a === "number" && typeof b === "number") return b === 0 ? "?" : Math.trunc(a / b);
  if (b === 0 || (typeof a === "number" && a < 0) || (typeof b === "number" && b < 0)) return "?";
  try {
    return dimQuotient(op, [a], [b], () => "a shape value");
  } catch {
    // dimQuotient rejects sizes that do not divide (Reshape's rule); Div would truncate, unknown here.
    return "?";
  }
};

const dimMax: DimFn = (a, b) => (typeof a === "number" && typeof b === "number" ? Math.max(a, b) : a === b ? a : "?");
const dimMin: DimFn = (a, b) => (typeof a === "number" && typeof b === "number" ? Math.min(a, b) : a === b ? a : "?");

/** Equality of dimensions as 0/1; a symbolic dimension is never negative, so it differs from `-1`. */
const dimEqual: DimFn = (a, b) => {
  if (typeof a === "number" && typeof b === "number") return a === b ? 1 : 0;
  if (a === b && a !== "?") return 1;
  if ((typeof a === "number" && a < 0) || (typeof b === "number" && b < 0)) return 0;
  return "?";
};

/** A binary op whose result has the operands' dtype. */
function arithmetic(type: string, kernelsOf: (op: Op) => Kernels, dimFn?: DimFn, align: Align = legacyShape): OpDef {
  return {
    type,
    infer: (op, ctx) => inferBroadcast(op, ctx, 2, undefined, align),
    shapeValue: dimFn === undefined ? undefined : binaryShapeValue(dimFn),
    interpret(op, inputs, ctx) {
      const a = required(op, inputs, 0);
      const b = required(op, inputs, 1);
      sameDtypes(op, [a, b]);
      const kernels = kernelsOf(op);
      const d = domainFor(op, a, domainsOf(kernels));
      const bShape = align(op, ctx.opset, a.shape, b.shape) as number[];
      const shape = broadcastShapes(op, [a.shape, bShape]) as number[];
      const n = shapeSize(shape);
      // An operand of the result's size is walked in step with the result, so it can hold it.
      const y =
        (b.data.length === n && ctx.reusable?.(1) === true
          ? resultStorage(ctx, 1, b, a.dtype, n)
          : resultStorage(ctx, 0, a, a.dtype, n)) as Elems;
      combine(kernels, d, elems(a), a.shape, elems(b), bShape, y, shape);
      return [finish(a.dtype, shape, y)];
    },
    macs: zeroMacs,
    channels: sameChannels,
  };
}

/** Sum, Mean, Max, Min: any number of operands broadcast together, folded left to right. */
function variadic(type: string, kernels: Kernels, mean = false): OpDef {
  return {
    type,
    infer(op, ctx) {
      if (ctx.types.length === 0) throw opError(op, "expects at least one operand");
      return inferBroadcast(op, ctx, ctx.types.length);
    },
    interpret(op, inputs) {
      const ts = inputs.map((_, i) => required(op, inputs, i));
      if (ts.length === 0) throw opError(op, "expects at least one operand");
      sameDtypes(op, ts);
      const d = domainFor(op, ts[0], domainsOf(kernels));
      const shape = broadcastShapes(op, ts.map((t) => t.shape)) as number[];
      const acc = allocData(computeDtype(ts[0].dtype), shapeSize(shape)) as Elems;
      expandInto(elems(ts[0]), ts[0].shape, acc, shape);
      for (let k = 1; k < ts.length; k++) combine(kernels, d, acc, shape, elems(ts[k]), ts[k].shape, acc, shape);
      if (mean) {
        const values = acc as NumArray;
        for (let i = 0; i < values.length; i++) values[i] /= ts.length;
      }
      return [finish(ts[0].dtype, shape, acc)];
    },
    macs: zeroMacs,
    channels: sameChannels,
  };
}

// ---------------------------------------------------------------------------
// Comparisons and Where

type CompareRun = Run<Elems, Uint8Array>;

const equalRun: CompareRun = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] === b[bi + j * bs] ? 1 : 0;
};
const lessRun: CompareRun = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] < b[bi + j * bs] ? 1 : 0;
};
const lessOrEqualRun: CompareRun = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] <= b[bi + j * bs] ? 1 : 0;
};
const greaterRun: CompareRun = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] > b[bi + j * bs] ? 1 : 0;
};
const greaterOrEqualRun: CompareRun = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) y[yi + j] = a[ai + j * as] >= b[bi + j * bs] ? 1 : 0;
};

/** A comparison: operands of one dtype, a bool result. */
function comparison(type: string, run: CompareRun, domains: readonly Domain[], dimFn?: DimFn): OpDef {
  return {
    type,
    infer: (op, ctx) => inferBroadcast(op, ctx, 2, "bool"),
    shapeValue: dimFn === undefined ? undefined : binaryShapeValue(dimFn),
    interpret(op, inputs, ctx) {
      const a = required(op, inputs, 0);
      const b = required(op, inputs, 1);
      sameDtypes(op, [a, b]);
      domainFor(op, a, domains);
      const bShape = legacyShape(op, ctx.opset, a.shape, b.shape) as number[];
      const shape = broadcastShapes(op, [a.shape, bShape]) as number[];
      const y = new Uint8Array(shapeSize(shape));
      runBroadcast(run, elems(a), a.shape, elems(b), bShape, y, shape);
      return [tensor("bool", shape, y)];
    },
    macs: zeroMacs,
  };
}

/** Where(cond, x, y): elements of x where cond holds, else of y; the three broadcast together. */
const whereOp: OpDef = {
  type: "Where",
  infer(op, ctx) {
    if (ctx.types.length < 3) throw opError(op, `expects 3 operands, found ${ctx.types.length}`);
    const cond = ctx.types[0];
    if (cond !== null && cond.elem !== "bool") {
      throw opError(op, `condition must be bool, found ${elementTypeToString(cond.elem)}`);
    }
    const [value] = inferBroadcast(op, { ...ctx, types: ctx.types.slice(1) }, 2);
    if (value === null) return [null];
    const shapes = ctx.types.map((t) => t?.shape ?? null);
    const shape = shapes.every((s) => s !== null) ? broadcastShapes(op, shapes as Dim[][]) : null;
    return [{ elem: value.elem, shape }];
  },
  shapeValue(_op, ctx) {
    const cond = ctx.shapeValues[0] ?? boolValues(ctx.constants[0]);
    const x = ctx.shapeValues[1];
    const y = ctx.shapeValues[2];
    if (cond === null || x === null || y === null || x === undefined || y === undefined) return null;
    const picked = zipDims(x, y, (a, b) => (a === b ? a : "?"));
    const n = Math.max(cond.length, x.length, y.length);
    if (picked === null || (cond.length !== n && cond.length !== 1) || (picked.length !== n && picked.length !== 1)) {
      return null;
    }
    const out: Dim[] = [];
    for (let i = 0; i < n; i++) {
      const c = cond[cond.length === 1 ? 0 : i];
      const xi = x[x.length === 1 ? 0 : i];
      const yi = y[y.length === 1 ? 0 : i];
      out.push(c === 1 ? xi : c === 0 ? yi : picked[picked.length === 1 ? 0 : i]);
    }
    return out;
  },
  interpret(op, inputs) {
    const cond = required(op, inputs, 0);
    const x = required(op, inputs, 1);
    const y = required(op, inputs, 2);
    if (cond.dtype !== "bool") throw opError(op, `condition must be bool, found ${cond.dtype}`);
    sameDtypes(op, [x, y]);
    if (domainOf(x.dtype) === null && x.dtype !== "string") throw opError(op, `not defined for ${x.dtype} operands`);
    const shape = broadcastShapes(op, [cond.shape, x.shape, y.shape]) as number[];
    const out: TensorData = allocData(x.dtype, shapeSize(shape));
    const c = cond.data as Uint8Array;
    const xs: Indexed<unknown> = x.data;
    const ys: Indexed<unknown> = y.data;
    const outs: Indexed<unknown> = out;
    const plan = planBroadcast([cond.shape, x.shape, y.shape], shape);
    const [cs, xst, yst] = plan.innerStrides;
    const n = plan.inner;
    forEachRun(plan, (o, oi) => {
      const ci = o[0];
      const xi = o[1];
      const yi = o[2];
      for (let j = 0; j < n; j++) outs[oi + j] = c[ci + j * cs] ? xs[xi + j * xst] : ys[yi + j * yst];
    });
    return [tensor(x.dtype, shape, out)];
  },
  macs: zeroMacs,
};

/** Contents of a small bool constant as 0/1 dimensions. */
function boolValues(t: Tensor | null | undefined): Dim[] | null {
  if (t === null || t === undefined || t.dtype !== "bool" || t.shape.length > 1) return null;
  return Array.from(t.data as Uint8Array);
}

/** Pow: the exponent may have another numeric dtype; the result has the base's. */
const powOp: OpDef = {
  type: "Pow",
  infer(op, ctx) {
    if (ctx.types.length < 2) throw opError(op, `expects 2 operands, found ${ctx.types.length}`);
    const [base, exponent] = ctx.types;
    if (base === null) return [null];
    const shape = base.shape !== null && exponent?.shape
      ? broadcastShapes(op, [base.shape, legacyShape(op, ctx.opset, base.shape, exponent.shape)])
      : null;
    return [{ elem: base.elem, shape }];
  },
  interpret(op, inputs, ctx) {
    const a = required(op, inputs, 0);
    const b = required(op, inputs, 1);
    const d = domainFor(op, a, NUMERIC);
    domainFor(op, b, NUMERIC);
    const bShape = legacyShape(op, ctx.opset, a.shape, b.shape) as number[];
    const shape = broadcastShapes(op, [a.shape, bShape]) as number[];
    const y = allocData(computeDtype(a.dtype), shapeSize(shape)) as Elems;
    if (d === "big") {
      const exponent = b.dtype === "i64" || b.dtype === "u64"
        ? (b.data as BigArray)
        : BigInt64Array.from(toFloat64(b), (v) => BigInt(Math.trunc(v)));
      runBroadcast(bigRun(powBig), a.data as BigArray, a.shape, exponent, bShape, y as BigArray, shape);
    } else {
      // Integer results truncate toward zero on store, as C++ casts of std::pow do.
      const exponent = a.dtype === b.dtype ? numbers(b) : toFloat64(b);
      runBroadcast(numRun(Math.pow), numbers(a), a.shape, exponent, bShape, y as NumArray, shape);
    }
    return [finish(a.dtype, shape, y)];
  },
  macs: zeroMacs,
  channels: sameChannels,
};

/** BitShift on unsigned integers; `direction` is LEFT or RIGHT, bits shifted past the width give 0. */
function bitShiftKernels(op: Op): Kernels {
  const direction = op.string("direction", "");
  if (direction === "LEFT") {
    return {
      int: numRun((a, b) => (b >= 32 ? 0 : a << b)),
      big: bigRun((a, b) => (b >= 64n ? 0n : a << b)),
    };
  }
  if (direction === "RIGHT") {
    return {
      int: numRun((a, b) => (b >= 32 ? 0 : a >>> b)),
      big: bigRun((a, b) => (b >= 64n ? 0n : a >> b)),
    };
  }
  throw opError(op, `direction must be "LEFT" or "RIGHT", found "${direction}"`);
}

const bitShiftBase = arithmetic("BitShift", bitShiftKernels);
const bitShiftOp: OpDef = {
  ...bitShiftBase,
  interpret(op, inputs, ctx) {
    const x = required(op, inputs, 0);
    if (!x.dtype.startsWith("u")) throw opError(op, `not defined for ${x.dtype} operands`);
    return bitShiftBase.interpret!(op, inputs, ctx);
  },
  infer(op, ctx) {
    const [t] = inferBroadcast(op, ctx, 2);
    if (t !== null && typeof t.elem === "string" && !t.elem.startsWith("u")) {
      throw opError(op, `not defined for ${t.elem} operands`);
    }
    return [t];
  },
};

/** PRelu: `x < 0 ? slope * x : x`, with the slope broadcast to x. */
const preluRun: Run<NumArray> = (a, ai, as, b, bi, bs, y, yi, n) => {
  for (let j = 0; j < n; j++) {
    const x = a[ai + j * as];
    y[yi + j] = x < 0 ? x * b[bi + j * bs] : x;
  }
};

/**
 * Before opset 7 PRelu's slope is per channel: a 1-D slope of size C applies
 * along axis 1 (Caffe2 semantics, as PyTorch exported it), not along the last axis.
 */
const preluSlopeShape: Align = (_op, opset, xShape, slopeShape) => {
  if (opset >= 7 || slopeShape.length !== 1 || xShape.length < 2 || slopeShape[0] === 1) return slopeShape;
  return [slopeShape[0], ...new Array<number>(xShape.length - 2).fill(1)];
};

const preluKernels: Kernels = {
  float: preluRun,
  int: preluRun,
  big: bigRun((x, slope) => (x < 0n ? x * slope : x)),
};

const preluOp: OpDef = arithmetic("PRelu", () => preluKernels, undefined, preluSlopeShape);

function modKernels(op: Op): Kernels {
  const fmod = op.int("fmod", 0);
  if (fmod !== 0 && fmod !== 1) throw opError(op, `fmod must be 0 or 1, found ${fmod}`);
  if (fmod === 1) {
    // C fmod: the sign of the dividend, which JS `%` computes for numbers and BigInts.
    return {
      float: numRun((a, b) => a % b),
      int: numRun((a, b) => a % b),
      big: bigRun((a, b) => (b === 0n ? 0n : a % b)),
    };
  }
  // ONNX Mod: "If the input type is floating point, then fmod attribute must be set to 1" (onnxruntime refuses it).
  return { int: numRun(floorMod), big: bigRun(floorModBig) };
}

// ---------------------------------------------------------------------------
// Unary ops

/** A unary kernel over number storage: reads attributes from `op` once, then loops over `n` elements. */
type UnaryLoop = (op: Op, x: NumArray, y: NumArray, n: number) => void;

interface UnarySpec {
  readonly type: string;
  readonly domains: readonly Domain[];
  readonly loop: UnaryLoop;
  /** Kernel for i64/u64 elements, where `domains` includes `big`. */
  readonly big?: (x: bigint) => bigint;
  /** Result dtype when not the operand's (IsNaN, IsInf). */
  readonly result?: DType;
}

/** A loop applying `f` per element, for ops that are rarely hot (`f` is called per element). */
function mapLoop(f: (x: number) => number): UnaryLoop {
  return (_op, x, y, n) => {
    for (let i = 0; i < n; i++) y[i] = f(x[i]);
  };
}

function unary(spec: UnarySpec): OpDef {
  return {
    type: spec.type,
    infer(op, ctx) {
      if (ctx.types.length < 1) throw opError(op, "expects 1 operand, found 0");
      const t = ctx.types[0];
      if (t === null) return [null];
      return [{ elem: spec.result ?? t.elem, shape: t.shape }];
    },
    interpret(op, inputs, ctx) {
      const x = required(op, inputs, 0);
      const d = domainFor(op, x, spec.domains);
      const n = shapeSize(x.shape);
      if (d === "big") {
        const f = spec.big;
        if (f === undefined) throw opError(op, `not defined for ${x.dtype} operands`);
        const xs = x.data as BigArray;
        const ys = allocData(x.dtype, n) as BigArray;
        for (let i = 0; i < n; i++) ys[i] = f(xs[i]);
        return [tensor(x.dtype, x.shape, ys)];
      }
      const result = spec.result ?? x.dtype;
      const y = resultStorage(ctx, 0, x, result, n) as NumArray;
      spec.loop(op, numbers(x), y, n);
      return [finish(result, x.shape, y)];
    },
    macs: zeroMacs,
    channels: sameChannels,
  };
}

/** Round half to even (ONNX Round, numpy `round`): 2.5 -> 2, 3.5 -> 4, -2.5 -> -2. */
function roundHalfToEven(v: number): number {
  const r = Math.round(v); // rounds halves toward +infinity
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function softplus(v: number): number {
  // log(1 + e^v) without overflow for large v.
  return v > 0 ? v + Math.log1p(Math.exp(-v)) : Math.log1p(Math.exp(v));
}

const erfScratch = new Float64Array(1);
const erfWords = new Uint32Array(erfScratch.buffer);

/**
 * The error function, ported from FreeBSD msun `s_erf.c` (Sun Microsystems,
 * 1993; as in musl): rational approximations on [0, 0.84375), [0.84375, 1.25),
 * [1.25, 1/0.35), [1/0.35, 6), error below 1 ulp in float64.
 */
function erf(x: number): number {
  if (Number.isNaN(x)) return x;
  const ax = Math.abs(x);
  if (ax < 0.84375) {
    if (ax < 2 ** -28) return x + 0.128379167095512573896 * x;
    const z = x * x;
    const r = 1.28379167095512558561e-01 +
      z * (-3.25042107247001499370e-01 +
          z * (-2.84817495755985104766e-02 + z * (-5.77027029648944159157e-03 + z * -2.37630166566501626084e-05)));
    const s = 1 +
      z * (3.97917223959155352819e-01 +
          z * (6.50222499887672944485e-02 +
              z * (5.08130628187576562776e-03 + z * (1.32494738004321644526e-04 + z * -3.96022827877536812320e-06))));
    return x + x * (r / s);
  }
  let y: number;
  if (ax < 1.25) {
    const s = ax - 1;
    const p = -2.36211856075265944077e-03 +
      s * (4.14856118683748331666e-01 +
          s * (-3.72207876035701323847e-01 +
              s * (3.18346619901161753674e-01 +
                  s *
                    (-1.10894694282396677476e-01 +
                      s * (3.54783043256182359371e-02 + s * -2.16637559486879084300e-03)))));
    const q = 1 +
      s * (1.06420880400844228286e-01 +
          s * (5.40397917702171048937e-01 +
              s * (7.18286544141962662868e-02 +
                  s *
                    (1.26171219808761642112e-01 + s * (1.36370839120290507362e-02 + s * 1.19844998467991074170e-02)))));
    y = 8.45062911510467529297e-01 + p / q;
  } else if (ax < 6) {
    const s = 1 / (ax * ax);
    let r: number;
    let q: number;
    if (ax < 1 / 0.35) {
      r = -9.86494403484714822705e-03 +
        s * (-6.93858572707181764372e-01 +
            s * (-1.05586262253232909814e+01 +
                s * (-6.23753324503260060396e+01 +
                    s * (-1.62396669462573470355e+02 +
                        s *
                          (-1.84605092906711035994e+02 +
                            s * (-8.12874355063065934246e+01 + s * -9.81432934416914548592e+00))))));
      q = 1 +
        s * (1.96512716674392571292e+01 +
            s * (1.37657754143519042600e+02 +
                s * (4.34565877475229228821e+02 +
                    s * (6.45387271733267880336e+02 +
                        s * (4.29008140027567833386e+02 +
                            s *
                              (1.08635005541779435134e+02 +
                                s * (6.57024977031928170135e+00 + s * -6.04244152148580987438e-02)))))));
    } else {
      r = -9.86494292470009928597e-03 +
        s * (-7.99283237680523006574e-01 +
            s * (-1.77579549177547519889e+01 +
                s * (-1.60636384855821916062e+02 +
                    s *
                      (-6.37566443368389627722e+02 +
                        s * (-1.02509513161107724954e+03 + s * -4.83519191608651397019e+02)))));
      q = 1 +
        s * (3.03380607434824582924e+01 +
            s * (3.25792512996573918826e+02 +
                s * (1.53672958608443695994e+03 +
                    s * (3.19985821950859553908e+03 +
                        s *
                          (2.55305040643316442583e+03 +
                            s * (4.74528541206955367215e+02 + s * -2.24409524465858183362e+01))))));
    }
    // z is ax with the low 32 bits cleared, so z*z is exact and exp(-z*z) keeps full precision.
    erfScratch[0] = ax;
    erfWords[0] = 0;
    const z = erfScratch[0];
    y = 1 - (Math.exp(-z * z - 0.5625) * Math.exp((z - ax) * (z + ax) + r / q)) / ax;
  } else {
    y = 1;
  }
  return x < 0 ? -y : y;
}

/** Float32 values per call of the SIMD sigmoid (one 64 KiB page). */
const SIGMOID_CHUNK = 16384;

/**
 * The WebAssembly SIMD sigmoid: `sigmoid(n)` maps the first `n` (a multiple of 4) float32 values of its memory in
 * place; `silu(n)` the same to `x * sigmoid(x)` (the sigmoid rounded to float32, then the product).
 */
interface SimdSigmoid {
  values: Float32Array;
  sigmoid: (n: number) => void;
  silu: (n: number) => void;
}

/** The SIMD sigmoid, compiled on first use; null where WebAssembly SIMD is unavailable. */
const simdSigmoid = lazyWasm(sigmoidModuleBytes, (exports): SimdSigmoid => ({
  values: new Float32Array((exports.memory as WebAssembly.Memory).buffer, 0, SIGMOID_CHUNK),
  sigmoid: exports.sigmoid as SimdSigmoid["sigmoid"],
  silu: exports.silu as SimdSigmoid["silu"],
}));

/** `y = sigmoid(x)` (`times`: `x * sigmoid(x)`) over `n` float32 values: SIMD where available, JavaScript for the rest. */
function sigmoidF32(x: Float32Array, y: Float32Array, n: number, times: boolean): void {
  const simd = simdSigmoid();
  let i = 0;
  if (simd !== null) {
    // Float32 in WebAssembly SIMD, 4 lanes at a time (within 1e-6 relative of the float64 formula below).
    while (n - i >= 4) {
      const len = Math.min(SIGMOID_CHUNK, n - i) & ~3;
      simd.values.set(x.subarray(i, i + len));
      if (times) simd.silu(len);
      else simd.sigmoid(len);
      y.set(simd.values.subarray(0, len), i);
      i += len;
    }
  }
  for (; i < n; i++) {
    const v = x[i];
    const s = sigmoid64(v);
    y[i] = times ? v * Math.fround(s) : s;
  }
}

/** The float64 sigmoid: `1 / (1 + e^-v)`, or `e^v / (1 + e^v)` below 0 (no overflow). */
function sigmoid64(v: number): number {
  if (v >= 0) return 1 / (1 + Math.exp(-v));
  const e = Math.exp(v);
  return e / (1 + e);
}

/**
 * SiLU, `x * sigmoid(x)`, for float32 `x`: the numbers of a Sigmoid followed by a Mul of its operand by its result
 * (the sigmoid rounded to float32, then the product), in one pass without the sigmoid's tensor.
 *
 * @param x The operand.
 * @param alloc Storage for the result (the interpreter's pool), or a new array.
 * @returns `x * sigmoid(x)`, of x's shape.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { silu } from "./elementwise.ts";
 * import { float32Tensor } from "../tensor.ts";
 * const y = silu(float32Tensor([2], [0, 100]));
 * assert.deepEqual([...y.data], [0, 100]);
 * ```
 */
export function silu(x: Tensor, alloc?: (dtype: DType, n: number) => TensorData): Tensor {
  if (x.dtype !== "f32") throw new Error(`silu: expects f32, found ${x.dtype}`);
  const n = x.data.length;
  const y = (alloc?.("f32", n) ?? new Float32Array(n)) as Float32Array;
  sigmoidF32(x.data as Float32Array, y, n, true);
  return tensor("f32", x.shape, y);
}

/**
 * Hard-swish as exporters write it, four float32 ops in one pass: `Add(x, add)`, `Clip(lo, hi)`, `Mul` by x, then
 * `Div` by `scale` (or `Mul` by it), each result rounded to float32 as its op stores it, so the bits are the four
 * ops'. The Clip compares with its bounds as given (`t = v < lo ? lo : v`, then `t > hi ? hi : t`; NaN kept).
 *
 * @example x = 1: 1 · clip(4, 0, 6) / 6
 * ```ts
 * import assert from "node:assert/strict";
 * import { float32Tensor } from "../tensor.ts";
 * import { hardSwishChain } from "./elementwise.ts";
 * const y = hardSwishChain(float32Tensor([3], [1, -4, 5]), { add: 3, lo: 0, hi: 6, scale: 6, divide: true });
 * assert.deepEqual([...y.data], [Math.fround(4 / 6), -0, 5]); // -4 · 0 is -0, as the four ops give
 * ```
 */
export function hardSwishChain(
  x: Tensor,
  chain: { add: number; lo: number; hi: number; scale: number; divide: boolean },
  alloc?: (dtype: DType, n: number) => TensorData,
  out?: Float32Array,
): Tensor {
  if (x.dtype !== "f32") throw new Error(`hardSwishChain: expects f32, found ${x.dtype}`);
  const xs = x.data as Float32Array, n = xs.length;
  const y = out ?? (alloc?.("f32", n) ?? new Float32Array(n)) as Float32Array;
  const { add, lo, hi, scale } = chain;
  const f = Math.fround;
  if (chain.divide) {
    for (let i = 0; i < n; i++) {
      const v = xs[i];
      let t = f(v + add);
      t = t < lo ? lo : t;
      t = t > hi ? hi : t;
      y[i] = f(v * f(t)) / scale;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const v = xs[i];
      let t = f(v + add);
      t = t < lo ? lo : t;
      t = t > hi ? hi : t;
      y[i] = f(v * f(t)) * scale;
    }
  }
  return tensor("f32", x.shape, y);
}

/**
 * The module behind {@linkcode simdSigmoid}. Per lane, with `t = max(-|x|, -87)`:
 * `e = 2^k · p(r)` where `k = nearest(t · log2 e)`, `r = t - k ln2` (ln2 split
 * in two, Cody-Waite) and `p` the Taylor polynomial of `e^r` to degree 7
 * (truncation below 6e-9 for `|r| <= ln2/2`); then `1 / (1 + e)` for `x >= 0`
 * and `e / (1 + e)` below, as the float64 formula; `e` is 0 below -87 (where
 * it would be subnormal). NaN stays NaN.
 */
function sigmoidModuleBytes(): Uint8Array<ArrayBuffer> {
  const locals = [I32, ...new Array<number>(6).fill(V128)];
  return wasmModule([
    { name: "sigmoid", params: [I32], locals, body: sigmoidBody(false) },
    { name: "silu", params: [I32], locals, body: sigmoidBody(true) },
  ]);
}

/** The body of the sigmoid function (`times`: multiplied by x before the store). */
function sigmoidBody(times: boolean): number[] {
  const op = (code: number): number[] => (code < 0x80 ? [0xfd, code] : [0xfd, (code & 0x7f) | 0x80, code >> 7]);
  const f32 = (value: number): number[] => [0x43, ...new Uint8Array(Float32Array.of(value).buffer), ...op(0x13)];
  const [ADD, SUB, MUL, DIV, MAX, ABS, NEG, NEAREST, LT] = [0xe4, 0xe5, 0xe6, 0xe7, 0xe9, 0xe0, 0xe1, 0x6a, 0x43]
    .map(op);
  const [TRUNC_SAT, I32_ADD, I32_SHL, BITSELECT, ANDNOT] = [0xf8, 0xae, 0xab, 0x52, 0x4f].map(op);
  const [x, t, k, e, d, negAbs] = [2, 3, 4, 5, 6, 7]; // v128 locals; 0 is n, 1 the byte offset
  const get = (i: number): number[] => [0x20, i];
  const set = (i: number): number[] => [0x21, i];
  const horner = [1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1, 1]
    .flatMap((c, i) => (i === 0 ? f32(c) : [...get(t), ...MUL, ...f32(c), ...ADD]));
  // deno-fmt-ignore
  const body = [
    0x03, 0x40,
    ...get(1), 0xfd, 0x00, 4, 0, ...set(x), // x = load(offset)
    ...get(x), ...ABS, ...NEG, 0x22, negAbs, ...f32(-87), ...MAX, ...set(t), // t = max(-|x|, -87)
    ...get(t), ...f32(Math.LOG2E), ...MUL, ...NEAREST, ...set(k),
    ...get(t), ...get(k), ...f32(0.693359375), ...MUL, ...SUB, ...get(k), ...f32(-2.12194440e-4), ...MUL, ...SUB, ...set(t),
    ...horner, // p(r), r in t
    ...get(k), ...TRUNC_SAT, 0x41, 0xff, 0x00, ...op(0x11), ...I32_ADD, 0x41, 23, ...I32_SHL, // 2^k as float bits
    ...MUL, ...get(negAbs), ...f32(-87), ...LT, ...ANDNOT, ...set(e), // e = 0 where e^-|x| is below float32's normals
    ...f32(1), ...get(e), ...ADD, ...set(d), // d = 1 + e
    ...get(1), // store address
    ...get(e), ...get(d), ...DIV, // e / d for x < 0
    ...f32(1), ...get(d), ...DIV, // 1 / d for x >= 0
    ...get(x), ...f32(0), ...LT, ...BITSELECT,
    ...(times ? [...get(x), ...MUL] : []),
    0xfd, 0x0b, 4, 0,
    ...get(1), 0x41, 16, 0x6a, 0x22, 1, ...get(0), 0x41, 2, 0x74, 0x49, 0x0d, 0, // offset += 16; while offset < 4n
    0x0b,
  ];
  return body;
}

const SQRT_HALF = Math.SQRT1_2;
const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

const unarySpecs: UnarySpec[] = [
  {
    type: "Relu",
    domains: NUMERIC,
    loop(_op, x, y, n) {
      for (let i = 0; i < n; i++) {
        const v = x[i];
        y[i] = v < 0 ? 0 : v; // NaN propagates
      }
    },
    big: (v) => (v < 0n ? 0n : v),
  },
  {
    type: "LeakyRelu",
    domains: FLOAT,
    loop(op, x, y, n) {
      const alpha = op.float("alpha", 0.01);
      for (let i = 0; i < n; i++) {
        const v = x[i];
        y[i] = v < 0 ? alpha * v : v;
      }
    },
  },
  {
    type: "Elu",
    domains: FLOAT,
    loop(op, x, y, n) {
      const alpha = op.float("alpha", 1);
      for (let i = 0; i < n; i++) {
        const v = x[i];
        y[i] = v < 0 ? alpha * (Math.exp(v) - 1) : v;
      }
    },
  },
  {
    type: "Selu",
    domains: FLOAT,
    loop(op, x, y, n) {
      // Defaults are the float32 constants of the ONNX spec (Klambauer et al. 2017).
      const alpha = op.float("alpha", 1.67326319217681884765625);
      const gamma = op.float("gamma", 1.05070102214813232421875);
      for (let i = 0; i < n; i++) {
        const v = x[i];
        y[i] = v > 0 ? gamma * v : gamma * (alpha * Math.exp(v) - alpha);
      }
    },
  },
  {
    type: "Celu",
    domains: FLOAT,
    loop(op, x, y, n) {
      const alpha = op.float("alpha", 1);
      for (let i = 0; i < n; i++) {
        const v = x[i];
        y[i] = Math.max(0, v) + Math.min(0, alpha * (Math.exp(v / alpha) - 1));
      }
    },
  },
  {
    type: "Sigmoid",
    domains: FLOAT,
    loop(_op, x, y, n) {
      if (x instanceof Float32Array && y instanceof Float32Array) return sigmoidF32(x, y, n, false);
      for (let i = 0; i < n; i++) y[i] = sigmoid64(x[i]);
    },
  },
  {
    type: "HardSigmoid",
    domains: FLOAT,
    loop(op, x, y, n) {
      const alpha = op.float("alpha", 0.2);
      const beta = op.float("beta", 0.5);
      for (let i = 0; i < n; i++) y[i] = Math.max(0, Math.min(1, alpha * x[i] + beta));
    },
  },
  {
    type: "HardSwish",
    domains: FLOAT,
    loop(_op, x, y, n) {
      for (let i = 0; i < n; i++) {
        const v = x[i];
        y[i] = v * Math.max(0, Math.min(1, v / 6 + 0.5));
      }
    },
  },
  {
    type: "Tanh",
    domains: FLOAT,
    loop(_op, x, y, n) {
      for (let i = 0; i < n; i++) y[i] = Math.tanh(x[i]);
    },
  },
  { type: "Softplus", domains: FLOAT, loop: mapLoop(softplus) },
  { type: "Softsign", domains: FLOAT, loop: mapLoop((v) => v / (1 + Math.abs(v))) },
  { type: "Mish", domains: FLOAT, loop: mapLoop((v) => v * Math.tanh(softplus(v))) },
  {
    type: "Gelu",
    domains: FLOAT,
    loop(op, x, y, n) {
      const approximate = op.string("approximate", "none");
      if (approximate === "tanh") {
        for (let i = 0; i < n; i++) {
          const v = x[i];
          y[i] = 0.5 * v * (1 + Math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)));
        }
      } else if (approximate === "none") {
        for (let i = 0; i < n; i++) {
          const v = x[i];
          y[i] = 0.5 * v * (1 + erf(v * SQRT_HALF));
        }
      } else {
        throw opError(op, `approximate must be "none" or "tanh", found "${approximate}"`);
      }
    },
  },
  {
    type: "ThresholdedRelu",
    domains: FLOAT,
    loop(op, x, y, n) {
      const alpha = op.float("alpha", 1);
      for (let i = 0; i < n; i++) {
        const v = x[i];
        y[i] = v > alpha ? v : 0;
      }
    },
  },
  {
    type: "Shrink",
    domains: ["float", "int"],
    loop(op, x, y, n) {
      const bias = op.float("bias", 0);
      const lambd = op.float("lambd", 0.5);
      for (let i = 0; i < n; i++) {
        const v = x[i];
        y[i] = v < -lambd ? v + bias : v > lambd ? v - bias : 0;
      }
    },
  },
  {
    type: "Neg",
    domains: NUMERIC,
    loop(_op, x, y, n) {
      for (let i = 0; i < n; i++) y[i] = -x[i];
    },
    big: (v) => -v,
  },
  {
    type: "Abs",
    domains: NUMERIC,
    loop(_op, x, y, n) {
      for (let i = 0; i < n; i++) y[i] = Math.abs(x[i]);
    },
    big: (v) => (v < 0n ? -v : v),
  },
  {
    type: "Sign",
    domains: NUMERIC,
    loop: mapLoop((v) => (v > 0 ? 1 : v < 0 ? -1 : v)),
    big: (v) => (v > 0n ? 1n : v < 0n ? -1n : 0n),
  },
  {
    type: "Exp",
    domains: FLOAT,
    loop(_op, x, y, n) {
      for (let i = 0; i < n; i++) y[i] = Math.exp(x[i]);
    },
  },
  { type: "Log", domains: FLOAT, loop: mapLoop(Math.log) },
  {
    type: "Sqrt",
    domains: FLOAT,
    loop(_op, x, y, n) {
      for (let i = 0; i < n; i++) y[i] = Math.sqrt(x[i]);
    },
  },
  {
    type: "Reciprocal",
    domains: FLOAT,
    loop(_op, x, y, n) {
      for (let i = 0; i < n; i++) y[i] = 1 / x[i];
    },
  },
  { type: "Floor", domains: FLOAT, loop: mapLoop(Math.floor) },
  { type: "Ceil", domains: FLOAT, loop: mapLoop(Math.ceil) },
  { type: "Round", domains: FLOAT, loop: mapLoop(roundHalfToEven) },
  { type: "Erf", domains: ["float", "int"], loop: mapLoop(erf) },
  { type: "Sin", domains: FLOAT, loop: mapLoop(Math.sin) },
  { type: "Cos", domains: FLOAT, loop: mapLoop(Math.cos) },
  { type: "Tan", domains: FLOAT, loop: mapLoop(Math.tan) },
  { type: "Asin", domains: FLOAT, loop: mapLoop(Math.asin) },
  { type: "Acos", domains: FLOAT, loop: mapLoop(Math.acos) },
  { type: "Atan", domains: FLOAT, loop: mapLoop(Math.atan) },
  { type: "Sinh", domains: FLOAT, loop: mapLoop(Math.sinh) },
  { type: "Cosh", domains: FLOAT, loop: mapLoop(Math.cosh) },
  { type: "Asinh", domains: FLOAT, loop: mapLoop(Math.asinh) },
  { type: "Acosh", domains: FLOAT, loop: mapLoop(Math.acosh) },
  { type: "Atanh", domains: FLOAT, loop: mapLoop(Math.atanh) },
  { type: "IsNaN", domains: FLOAT, result: "bool", loop: mapLoop((v) => (Number.isNaN(v) ? 1 : 0)) },
  {
    type: "IsInf",
    domains: FLOAT,
    result: "bool",
    loop(op, x, y, n) {
      const negative = op.int("detect_negative", 1) !== 0;
      const positive = op.int("detect_positive", 1) !== 0;
      for (let i = 0; i < n; i++) {
        const v = x[i];
        y[i] = (positive && v === Infinity) || (negative && v === -Infinity) ? 1 : 0;
      }
    },
  },
  {
    type: "Not",
    domains: ["bool"],
    loop(_op, x, y, n) {
      for (let i = 0; i < n; i++) y[i] = x[i] ? 0 : 1;
    },
  },
];

// ---------------------------------------------------------------------------
// Clip

/** A single-element bound operand of Clip as a number (null when omitted). */
function clipBound(op: Op, t: Tensor | null | undefined, name: string): Tensor | null {
  if (t === null || t === undefined) return null;
  if (t.data.length !== 1) throw opError(op, `${name} must be a single value, found shape [${t.shape.join(",")}]`);
  return t;
}

/**
 * Clip: before opset 11 the bounds are float attributes `min`/`max`; from 11
 * they are optional scalar operands of the input's dtype. Like ONNX's
 * `min(max(x, lo), hi)`, `lo > hi` gives `hi` everywhere and NaN passes through.
 */
const clipOp: OpDef = {
  type: "Clip",
  infer(op, ctx) {
    if (ctx.types.length < 1) throw opError(op, "expects 1 operand, found 0");
    const t = ctx.types[0];
    return [t === null ? null : { elem: t.elem, shape: t.shape }];
  },
  interpret(op, inputs, ctx) {
    const x = required(op, inputs, 0);
    const d = domainFor(op, x, NUMERIC);
    const n = shapeSize(x.shape);
    const lo = ctx.opset < 11 ? null : clipBound(op, inputs[1], "min");
    const hi = ctx.opset < 11 ? null : clipBound(op, inputs[2], "max");
    for (const bound of [lo, hi]) {
      if (bound !== null && bound.dtype !== x.dtype) {
        throw opError(op, `bounds must be ${x.dtype} like the input, found ${bound.dtype}`);
      }
    }
    if (d === "big") {
      const xs = x.data as BigArray;
      const ys = allocData(x.dtype, n) as BigArray;
      const low = lo === null ? null : (lo.data as BigArray)[0];
      const high = hi === null ? null : (hi.data as BigArray)[0];
      for (let i = 0; i < n; i++) {
        let v = xs[i];
        if (low !== null && v < low) v = low;
        if (high !== null && v > high) v = high;
        ys[i] = v;
      }
      return [tensor(x.dtype, x.shape, ys)];
    }
    const low = lo !== null ? toFloat64(lo)[0] : ctx.opset < 11 ? op.float("min", -Infinity) : -Infinity;
    const high = hi !== null ? toFloat64(hi)[0] : ctx.opset < 11 ? op.float("max", Infinity) : Infinity;
    const xs = numbers(x);
    const ys = resultStorage(ctx, 0, x, x.dtype, n) as NumArray;
    for (let i = 0; i < n; i++) {
      const v = xs[i];
      const t = v < low ? low : v;
      ys[i] = t > high ? high : t;
    }
    return [finish(x.dtype, x.shape, ys)];
  },
  macs: zeroMacs,
  channels: sameChannels,
};

// ---------------------------------------------------------------------------
// Softmax, LogSoftmax, Hardmax

/**
 * The rows a softmax-like op normalises: `outer` groups of `len` elements at
 * stride `inner`. Before opset 13 the input is coerced to 2-D at `axis`
 * (default 1) and each flattened row `[axis:]` is normalised; from 13 only the
 * dimension `axis` (default -1) is.
 */
function softmaxRows(op: Op, shape: readonly number[], opset: number): { outer: number; len: number; inner: number } {
  const rank = shape.length;
  if (opset < 13) {
    const raw = op.int("axis", 1);
    const axis = raw < 0 ? raw + rank : raw;
    // The 2-D coercion accepts axis == rank (every row has one element).
    if (axis < 0 || axis > rank) throw opError(op, `axis ${raw} is out of range for rank ${rank}`);
    return { outer: shapeSize(shape.slice(0, axis)), len: shapeSize(shape.slice(axis)), inner: 1 };
  }
  const axis = normalizeAxis(op, op.int("axis", -1), rank);
  return { outer: shapeSize(shape.slice(0, axis)), len: shape[axis], inner: shapeSize(shape.slice(axis + 1)) };
}

type RowKernel = (x: NumArray, y: NumArray, base: number, len: number, stride: number) => void;

const softmaxRow: RowKernel = (x, y, base, len, stride) => {
  let max = -Infinity;
  for (let k = 0, i = base; k < len; k++, i += stride) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let k = 0, i = base; k < len; k++, i += stride) {
    const e = Math.exp(x[i] - max);
    y[i] = e;
    sum += e;
  }
  for (let k = 0, i = base; k < len; k++, i += stride) y[i] /= sum;
};

const logSoftmaxRow: RowKernel = (x, y, base, len, stride) => {
  let max = -Infinity;
  for (let k = 0, i = base; k < len; k++, i += stride) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let k = 0, i = base; k < len; k++, i += stride) sum += Math.exp(x[i] - max);
  const shift = max + Math.log(sum);
  for (let k = 0, i = base; k < len; k++, i += stride) y[i] = x[i] - shift;
};

/** One-hot of the first maximum of each row. */
const hardmaxRow: RowKernel = (x, y, base, len, stride) => {
  let best = base;
  for (let k = 1, i = base + stride; k < len; k++, i += stride) if (x[i] > x[best]) best = i;
  if (len > 0) y[best] = 1;
};

function softmaxLike(type: string, row: RowKernel): OpDef {
  return {
    type,
    infer(op, ctx) {
      const t = ctx.types[0];
      if (t === undefined || t === null) return [null];
      if (t.shape !== null) {
        const rank = t.shape.length;
        const raw = op.int("axis", ctx.opset < 13 ? 1 : -1);
        const limit = ctx.opset < 13 ? rank : rank - 1;
        if (raw < -rank || raw > limit) throw opError(op, `axis ${raw} is out of range for rank ${rank}`);
      }
      return [{ elem: t.elem, shape: t.shape }];
    },
    interpret(op, inputs, ctx) {
      const x = required(op, inputs, 0);
      domainFor(op, x, FLOAT);
      const { outer, len, inner } = softmaxRows(op, x.shape, ctx.opset);
      const xs = numbers(x);
      const ys = allocData(computeDtype(x.dtype), xs.length) as NumArray;
      for (let o = 0; o < outer; o++) {
        for (let i = 0; i < inner; i++) row(xs, ys, o * len * inner + i, len, inner);
      }
      return [finish(x.dtype, x.shape, ys)];
    },
    macs: zeroMacs,
  };
}

// ---------------------------------------------------------------------------
// Reductions

/** What a reduction accumulates per element. */
type Accumulation = "sum" | "sumAbs" | "sumSquare" | "prod" | "max" | "min" | "logSumExp";

interface ReduceSpec {
  readonly type: string;
  readonly accumulate: Accumulation;
  /** Result from the accumulator and the number of reduced elements. */
  readonly finish?: (acc: number, count: number) => number;
  /** BigInt result for i64/u64 (absent: computed through float64). */
  readonly finishBig?: (acc: bigint, count: bigint) => bigint;
  readonly domains: readonly Domain[];
}

/**
 * Axes to reduce, sorted and normalised, or null when they are not known: the
 * `axes` attribute (opsets before 18; before 13 for ReduceSum) or operand 1.
 * No axes means all of them, unless `noop_with_empty_axes` makes it none.
 */
function reduceAxes(op: Op, rank: number, axesOperand: readonly number[] | null, hasOperand: boolean): number[] | null {
  let axes = op.ints("axes");
  if (axes === undefined && hasOperand) {
    if (axesOperand === null) return null;
    axes = axesOperand;
  }
  if (axes === undefined || axes.length === 0) {
    return op.int("noop_with_empty_axes", 0) === 1 ? [] : Array.from({ length: rank }, (_, i) => i);
  }
  const normalized = [...new Set(axes.map((a) => normalizeAxis(op, a, rank)))];
  return normalized.sort((a, b) => a - b);
}

function reducedShape<D extends Dim>(shape: readonly D[], axes: readonly number[], keep: boolean): (D | 1)[] {
  const out: (D | 1)[] = [];
  shape.forEach((d, i) => {
    if (!axes.includes(i)) out.push(d);
    else if (keep) out.push(1);
  });
  return out;
}

function accumulateNumbers(
  kind: Accumulation,
  x: NumArray,
  shape: readonly number[],
  axes: readonly number[],
): Float64Array {
  const kept = reducedShape(shape, axes, true);
  const acc = new Float64Array(shapeSize(kept));
  const initial = kind === "prod"
    ? 1
    : kind === "max" || kind === "logSumExp"
    ? -Infinity
    : kind === "min"
    ? Infinity
    : 0;
  acc.fill(initial);
  const plan = planBroadcast([kept], shape);
  const s = plan.innerStrides[0];
  const n = plan.inner;
  const body = (o: readonly number[], xi: number): void => {
    const ai = o[0];
    switch (kind) {
      case "sum":
        for (let j = 0; j < n; j++) acc[ai + j * s] += x[xi + j];
        break;
      case "sumAbs":
        for (let j = 0; j < n; j++) acc[ai + j * s] += Math.abs(x[xi + j]);
        break;
      case "sumSquare":
        for (let j = 0; j < n; j++) acc[ai + j * s] += x[xi + j] * x[xi + j];
        break;
      case "prod":
        for (let j = 0; j < n; j++) acc[ai + j * s] *= x[xi + j];
        break;
      case "max":
      case "logSumExp":
        for (let j = 0; j < n; j++) acc[ai + j * s] = Math.max(acc[ai + j * s], x[xi + j]);
        break;
      case "min":
        for (let j = 0; j < n; j++) acc[ai + j * s] = Math.min(acc[ai + j * s], x[xi + j]);
        break;
    }
  };
  forEachRun(plan, body);
  if (kind === "logSumExp") {
    // log(sum(exp(x))) = m + log(sum(exp(x - m))) with m the row maximum (0 when infinite).
    const shift = acc.map((m) => (Number.isFinite(m) ? m : 0));
    const sums = new Float64Array(acc.length);
    forEachRun(plan, (o, xi) => {
      const ai = o[0];
      for (let j = 0; j < n; j++) sums[ai + j * s] += Math.exp(x[xi + j] - shift[ai + j * s]);
    });
    for (let i = 0; i < acc.length; i++) acc[i] = shift[i] + Math.log(sums[i]);
  }
  return acc;
}

function accumulateBig(
  kind: Accumulation,
  x: BigArray,
  dtype: DType,
  shape: readonly number[],
  axes: readonly number[],
): BigArray {
  const kept = reducedShape(shape, axes, true);
  const acc = allocData(dtype, shapeSize(kept)) as BigArray;
  const signed = dtype === "i64";
  const lowest = signed ? -(2n ** 63n) : 0n;
  const highest = signed ? 2n ** 63n - 1n : 2n ** 64n - 1n;
  acc.fill(kind === "prod" ? 1n : kind === "max" ? lowest : kind === "min" ? highest : 0n);
  const plan = planBroadcast([kept], shape);
  const s = plan.innerStrides[0];
  const n = plan.inner;
  forEachRun(plan, (o, xi) => {
    const ai = o[0];
    for (let j = 0; j < n; j++) {
      const v = x[xi + j];
      const k = ai + j * s;
      switch (kind) {
        case "sum":
          acc[k] += v;
          break;
        case "sumAbs":
          acc[k] += v < 0n ? -v : v;
          break;
        case "sumSquare":
          acc[k] += v * v;
          break;
        case "prod":
          acc[k] *= v;
          break;
        case "max":
          if (v > acc[k]) acc[k] = v;
          break;
        case "min":
          if (v < acc[k]) acc[k] = v;
          break;
      }
    }
  });
  return acc;
}

/** Axes of a reduction from what inference knows about operand 1. */
function knownAxes(ctx: InferContext): readonly number[] | null {
  const c = ctx.constants[1];
  if (c !== null && c !== undefined) return intValues(c);
  const v = ctx.shapeValues[1];
  if (v === null || v === undefined || !v.every((d) => typeof d === "number")) return null;
  return v as number[];
}

function reduction(spec: ReduceSpec): OpDef {
  return {
    type: spec.type,
    infer(op, ctx) {
      const t = ctx.types[0];
      if (t === undefined || t === null) return [null];
      if (t.shape === null) return [{ elem: t.elem, shape: null }];
      const keep = op.int("keepdims", 1) === 1;
      const hasOperand = ctx.types.length > 1 && op.operand(1) !== null;
      const axes = reduceAxes(op, t.shape.length, knownAxes(ctx), hasOperand);
      if (axes === null) {
        // Axes known only at run time: the rank still follows from keepdims and the count of axes.
        if (keep) return [{ elem: t.elem, shape: t.shape.map(() => "?") }];
        const count = ctx.types[1]?.shape;
        const dropped = count?.length === 1 && typeof count[0] === "number" && count[0] > 0 ? count[0] : null;
        const rank = t.shape.length - (dropped ?? t.shape.length + 1);
        return [{ elem: t.elem, shape: rank >= 0 ? new Array<Dim>(rank).fill("?") : null }];
      }
      return [{ elem: t.elem, shape: reducedShape(t.shape, axes, keep) }];
    },
    interpret(op, inputs) {
      const x = required(op, inputs, 0);
      const d = domainFor(op, x, spec.domains);
      const axesTensor = inputs[1] ?? null;
      const axes = reduceAxes(
        op,
        x.shape.length,
        axesTensor === null ? null : intValues(axesTensor),
        axesTensor !== null,
      )!;
      const shape = reducedShape(x.shape, axes, op.int("keepdims", 1) === 1);
      let count = 1;
      for (const a of axes) count *= x.shape[a];
      // i64/u64 stay exact in BigInt unless the result is irrational (L2, logs): those go through float64.
      if (
        d === "big" && spec.accumulate !== "logSumExp" && (spec.finish === undefined || spec.finishBig !== undefined)
      ) {
        const acc = accumulateBig(spec.accumulate, x.data as BigArray, x.dtype, x.shape, axes);
        if (spec.finishBig !== undefined) {
          const n = BigInt(count);
          for (let i = 0; i < acc.length; i++) acc[i] = spec.finishBig(acc[i], n);
        }
        return [tensor(x.dtype, shape, acc)];
      }
      const acc = accumulateNumbers(spec.accumulate, d === "big" ? toFloat64(x) : numbers(x), x.shape, axes);
      if (spec.finish !== undefined) { for (let i = 0; i < acc.length; i++) acc[i] = spec.finish(acc[i], count); }
      if (d === "big") {
        const out = allocData(x.dtype, acc.length) as BigArray;
        for (let i = 0; i < acc.length; i++) out[i] = BigInt(Math.trunc(acc[i]));
        return [tensor(x.dtype, shape, out)];
      }
      const out = allocData(computeDtype(x.dtype), acc.length) as NumArray;
      out.set(acc); // integer storage truncates (integer ReduceMean divides like C)
      return [finish(x.dtype, shape, out)];
    },
    macs: zeroMacs,
    channels: reduceChannels,
  };
}

const ALL: readonly Domain[] = ["float", "int", "big"];

const reduceSpecs: ReduceSpec[] = [
  { type: "ReduceSum", accumulate: "sum", domains: ALL },
  {
    type: "ReduceMean",
    accumulate: "sum",
    finish: (acc, count) => acc / count,
    finishBig: (acc, count) => (count === 0n ? 0n : acc / count),
    domains: ALL,
  },
  { type: "ReduceMax", accumulate: "max", domains: [...ALL, "bool"] },
  { type: "ReduceMin", accumulate: "min", domains: [...ALL, "bool"] },
  { type: "ReduceProd", accumulate: "prod", domains: ALL },
  { type: "ReduceL1", accumulate: "sumAbs", domains: ALL },
  { type: "ReduceL2", accumulate: "sumSquare", finish: (acc) => Math.sqrt(acc), domains: ALL },
  { type: "ReduceSumSquare", accumulate: "sumSquare", domains: ALL },
  { type: "ReduceLogSum", accumulate: "sum", finish: (acc) => Math.log(acc), domains: ALL },
  { type: "ReduceLogSumExp", accumulate: "logSumExp", domains: ALL },
];

/** ArgMax/ArgMin: i64 index of the first (or, with `select_last_index`, last) extremum along `axis`. */
function argExtremum(type: string, largest: boolean): OpDef {
  return {
    type,
    infer(op, ctx) {
      const t = ctx.types[0];
      if (t === undefined || t === null) return [null];
      if (t.shape === null) return [{ elem: "i64", shape: null }];
      const axis = normalizeAxis(op, op.int("axis", 0), t.shape.length);
      return [{ elem: "i64", shape: reducedShape(t.shape, [axis], op.int("keepdims", 1) === 1) }];
    },
    interpret(op, inputs) {
      const x = required(op, inputs, 0);
      domainFor(op, x, ALL);
      const axis = normalizeAxis(op, op.int("axis", 0), x.shape.length);
      const last = op.flag("select_last_index");
      const outer = shapeSize(x.shape.slice(0, axis));
      const len = x.shape[axis];
      const inner = shapeSize(x.shape.slice(axis + 1));
      if (len === 0) throw opError(op, `cannot take ${type} over an empty axis ${axis}`);
      const xs = elems(x);
      const out = new BigInt64Array(outer * inner);
      for (let o = 0; o < outer; o++) {
        for (let i = 0; i < inner; i++) {
          const base = o * len * inner + i;
          let best = 0;
          let bestValue = xs[base];
          for (let k = 1; k < len; k++) {
            const v = xs[base + k * inner];
            const better = largest ? v > bestValue || (last && v === bestValue) : v < bestValue ||
              (last && v === bestValue);
            if (better) {
              best = k;
              bestValue = v;
            }
          }
          out[o * inner + i] = BigInt(best);
        }
      }
      return [tensor("i64", reducedShape(x.shape, [axis], op.int("keepdims", 1) === 1), out)];
    },
    macs: zeroMacs,
  };
}

// ---------------------------------------------------------------------------
// The family

const sumKernels: Kernels = { float: addRun, int: addRun, big: addBig };
const maxKernels: Kernels = { float: maxRun, int: maxRun, big: maxBig };
const minKernels: Kernels = { float: minRun, int: minRun, big: minBig };

/**
 * Definitions of this family: arithmetic, logic and comparisons with numpy
 * broadcasting, activations, Clip, Softmax/LogSoftmax/Hardmax, reductions and
 * ArgMax/ArgMin, each with inference, shape-value propagation where it helps
 * shape chains, a reference kernel and 0 MACs.
 *
 * @example Run Add with broadcasting
 * ```ts
 * import assert from "node:assert/strict";
 * import { Op, Value } from "../graph.ts";
 * import { float32Tensor } from "../tensor.ts";
 * import { elementwiseOps } from "./elementwise.ts";
 * const add = elementwiseOps.find((d) => d.type === "Add")!;
 * const op = new Op({ name: "add", type: "Add", operands: [new Value("a"), new Value("b")], results: [new Value("y")] });
 * const a = float32Tensor([2, 2], [1, 2, 3, 4]);
 * const [y] = add.interpret!(op, [a, float32Tensor([2], [10, 20])], { opset: 17 });
 * assert.deepEqual([...y.data], [11, 22, 13, 24]);
 * ```
 */
export const elementwiseOps: OpDef[] = [
  arithmetic("Add", () => sumKernels, dimAdd),
  arithmetic("Sub", () => ({ float: subRun, int: subRun, big: subBig }), dimSub),
  arithmetic("Mul", () => ({ float: mulRun, int: imulRun, big: mulBig }), dimTimes),
  arithmetic("Div", () => ({ float: divRun, int: divRun, big: divBig }), dimDiv),
  arithmetic("Mod", modKernels),
  arithmetic("And", () => ({ bool: bitwiseAnd })),
  arithmetic("Or", () => ({ bool: bitwiseOr })),
  arithmetic("Xor", () => ({ bool: bitwiseXor })),
  powOp,
  bitShiftOp,
  preluOp,
  { ...variadic("Max", maxKernels), shapeValue: binaryShapeValue(dimMax) },
  { ...variadic("Min", minKernels), shapeValue: binaryShapeValue(dimMin) },
  variadic("Sum", sumKernels),
  variadic("Mean", { float: addRun }, true),
  comparison("Equal", equalRun, [...NUMERIC, "bool"], dimEqual),
  comparison("Less", lessRun, NUMERIC),
  comparison("LessOrEqual", lessOrEqualRun, NUMERIC),
  comparison("Greater", greaterRun, NUMERIC),
  comparison("GreaterOrEqual", greaterOrEqualRun, NUMERIC),
  whereOp,
  ...unarySpecs.map(unary),
  clipOp,
  softmaxLike("Softmax", softmaxRow),
  softmaxLike("LogSoftmax", logSoftmaxRow),
  softmaxLike("Hardmax", hardmaxRow),
  ...reduceSpecs.map(reduction),
  argExtremum("ArgMax", true),
  argExtremum("ArgMin", false),
];
