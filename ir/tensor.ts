/**
 * Tensors: a dtype, a static shape and a typed array in row-major (C) order.
 * Constants, interpreter values and `.npy` data all use this one record.
 * @module
 */
import { createHash } from "node:crypto";
import type { DType } from "./types.ts";

/** Storage of a tensor's elements; see {@linkcode Tensor} for which dtype uses which array. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | string[];

/**
 * A dense tensor in row-major order.
 *
 * Storage by dtype: `f32` Float32Array, `f64` Float64Array, `f16`/`bf16` Uint16Array
 * (raw bits), `i8` Int8Array, `i16` Int16Array, `i32` Int32Array, `i64` BigInt64Array,
 * `u8`/`bool` Uint8Array, `u16` Uint16Array, `u32` Uint32Array, `u64` BigUint64Array,
 * `string` string[], `c64`/`c128` interleaved Float32Array/Float64Array, and the
 * 8-bit float and packed 4-bit types as raw bytes in a Uint8Array.
 */
export interface Tensor {
  /** Element type. */
  readonly dtype: DType;
  /** Static dimensions; `[]` is a scalar. */
  readonly shape: readonly number[];
  /** Elements in row-major order. */
  readonly data: TensorData;
}

/** Number of elements of a static shape. */
export function shapeSize(shape: readonly number[]): number {
  let size = 1;
  for (const d of shape) size *= d;
  return size;
}

/** Bytes per element of the typed array backing `dtype` (0 for strings). */
export function storageBytes(dtype: DType): number {
  switch (dtype) {
    case "f64":
    case "i64":
    case "u64":
      return 8;
    case "f32":
    case "i32":
    case "u32":
      return 4;
    case "f16":
    case "bf16":
    case "i16":
    case "u16":
      return 2;
    case "c64":
      return 4;
    case "c128":
      return 8;
    case "string":
      return 0;
    default:
      return 1;
  }
}

/** Typed-array elements per tensor element (2 for complex, 0.5 for packed 4-bit). */
function storagePerElement(dtype: DType): number {
  if (dtype === "c64" || dtype === "c128") return 2;
  if (dtype === "i4" || dtype === "u4" || dtype === "f4e2m1") return 0.5;
  return 1;
}

/** Length of the backing array for `count` elements of `dtype`. */
export function storageLength(dtype: DType, count: number): number {
  return Math.ceil(count * storagePerElement(dtype));
}

/**
 * Allocate zeroed storage for `count` elements of `dtype`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { allocData } from "./tensor.ts";
 * assert.ok(allocData("i64", 3) instanceof BigInt64Array);
 * ```
 */
export function allocData(dtype: DType, count: number): TensorData {
  const n = storageLength(dtype, count);
  switch (dtype) {
    case "f32":
    case "c64":
      return new Float32Array(n);
    case "f64":
    case "c128":
      return new Float64Array(n);
    case "i8":
      return new Int8Array(n);
    case "i16":
      return new Int16Array(n);
    case "i32":
      return new Int32Array(n);
    case "i64":
      return new BigInt64Array(n);
    case "u16":
    case "f16":
    case "bf16":
      return new Uint16Array(n);
    case "u32":
      return new Uint32Array(n);
    case "u64":
      return new BigUint64Array(n);
    case "string":
      return new Array<string>(n).fill("");
    default:
      return new Uint8Array(n);
  }
}

/**
 * A zero-filled tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { zeros } from "./tensor.ts";
 * assert.equal(zeros("f32", [2, 3]).data.length, 6);
 * ```
 */
export function zeros(dtype: DType, shape: readonly number[]): Tensor {
  return { dtype, shape: [...shape], data: allocData(dtype, shapeSize(shape)) };
}

/**
 * A tensor over existing data, checked for length.
 *
 * @throws {RangeError} When the data length does not match the shape.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "./tensor.ts";
 * const t = tensor("f32", [2], new Float32Array([1, 2]));
 * assert.deepEqual(t.shape, [2]);
 * ```
 */
export function tensor(dtype: DType, shape: readonly number[], data: TensorData): Tensor {
  const expected = storageLength(dtype, shapeSize(shape));
  if (data.length !== expected) {
    throw new RangeError(
      `tensor of shape [${shape.join(",")}] (${dtype}) needs ${expected} elements, found ${data.length}`,
    );
  }
  return { dtype, shape: [...shape], data };
}

/** Little-endian bytes of a tensor's storage (strings are not byte-backed and throw). */
export function tensorBytes(t: Tensor): Uint8Array {
  if (Array.isArray(t.data)) throw new TypeError("string tensors have no raw byte form");
  const data = t.data as Exclude<TensorData, string[]>;
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Typed storage for `dtype` over little-endian `bytes`: a view when the bytes are
 * aligned for the element size (no copy), a copy otherwise.
 */
export function dataFromBytes(dtype: DType, bytes: Uint8Array): Exclude<TensorData, string[]> {
  const width = storageBytes(dtype);
  if (width === 0) throw new TypeError("string tensors have no raw byte form");
  if (bytes.byteLength % width !== 0) {
    throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  // new Uint8Array(bytes) copies even for a Node Buffer, whose slice() is a view.
  const aligned = bytes.byteOffset % width === 0 ? bytes : new Uint8Array(bytes);
  const { buffer, byteOffset, byteLength } = aligned;
  const n = byteLength / width;
  switch (dtype) {
    case "f32":
    case "c64":
      return new Float32Array(buffer, byteOffset, n);
    case "f64":
    case "c128":
      return new Float64Array(buffer, byteOffset, n);
    case "i8":
      return new Int8Array(buffer, byteOffset, n);
    case "i16":
      return new Int16Array(buffer, byteOffset, n);
    case "i32":
      return new Int32Array(buffer, byteOffset, n);
    case "i64":
      return new BigInt64Array(buffer, byteOffset, n);
    case "u16":
    case "f16":
    case "bf16":
      return new Uint16Array(buffer, byteOffset, n);
    case "u32":
      return new Uint32Array(buffer, byteOffset, n);
    case "u64":
      return new BigUint64Array(buffer, byteOffset, n);
    default:
      return new Uint8Array(buffer, byteOffset, n);
  }
}

/** Short content hash (first 16 hex digits of SHA-256 over dtype, shape and bytes). */
export function tensorHash(t: Tensor): string {
  const h = createHash("sha256");
  h.update(`${t.dtype}[${t.shape.join(",")}]`);
  if (Array.isArray(t.data)) h.update(JSON.stringify(t.data));
  else h.update(tensorBytes(t));
  return h.digest("hex").slice(0, 16);
}

/** Storage size of a tensor in bytes (strings: UTF-8 length). */
export function tensorByteLength(t: Tensor): number {
  if (Array.isArray(t.data)) {
    return t.data.reduce((n, s) => n + new TextEncoder().encode(s).length, 0);
  }
  return (t.data as Exclude<TensorData, string[]>).byteLength;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half-precision bits to a number. */
export function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** A number to IEEE half-precision bits, rounding to nearest even. */
export function floatToHalf(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m;
  }
  const rest = mant & 0x1fff;
  let m = mant >>> 13;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

/** bfloat16 bits to a number. */
export function bfloat16ToFloat(bits: number): number {
  u32Scratch[0] = bits << 16;
  return f32Scratch[0];
}

/** A number to bfloat16 bits, rounding to nearest even (NaN stays NaN). */
export function floatToBfloat16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  if (Number.isNaN(value)) return 0x7fc0;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Elements of a numeric tensor as float64 numbers (f16/bf16 decoded, i64 converted).
 *
 * @throws {TypeError} For string, complex, 8-bit float and packed 4-bit tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, toFloat64 } from "./tensor.ts";
 * const t = tensor("i64", [2], new BigInt64Array([1n, -2n]));
 * assert.deepEqual([...toFloat64(t)], [1, -2]);
 * ```
 */
export function toFloat64(t: Tensor): Float64Array {
  const n = t.data.length;
  const out = new Float64Array(n);
  const d = t.data;
  switch (t.dtype) {
    case "f16":
      for (let i = 0; i < n; i++) out[i] = halfToFloat((d as Uint16Array)[i]);
      return out;
    case "bf16":
      for (let i = 0; i < n; i++) out[i] = bfloat16ToFloat((d as Uint16Array)[i]);
      return out;
    case "i64":
    case "u64":
      for (let i = 0; i < n; i++) out[i] = Number((d as BigInt64Array)[i]);
      return out;
    case "string":
    case "c64":
    case "c128":
    case "i4":
    case "u4":
    case "f4e2m1":
    case "f8e4m3fn":
    case "f8e4m3fnuz":
    case "f8e5m2":
    case "f8e5m2fnuz":
      throw new Error(`cannot read ${t.dtype} elements as numbers`);
    default:
      out.set(d as Float32Array);
      return out;
  }
}

/**
 * A tensor of `dtype` from float64 numbers, converting as ONNX `Cast` does
 * (round to nearest even for f16/bf16/f32, truncation toward zero for integers,
 * wrapping modulo 2^bits, NaN and infinities to 0; non-zero is true for bool).
 */
export function fromFloat64(dtype: DType, shape: readonly number[], values: ArrayLike<number>): Tensor {
  const n = values.length;
  const out = allocData(dtype, n);
  switch (dtype) {
    case "f16":
      for (let i = 0; i < n; i++) (out as Uint16Array)[i] = floatToHalf(values[i]);
      break;
    case "bf16":
      for (let i = 0; i < n; i++) (out as Uint16Array)[i] = floatToBfloat16(values[i]);
      break;
    case "i64":
      for (let i = 0; i < n; i++) {
        const v = values[i];
        (out as BigInt64Array)[i] = Number.isFinite(v) ? BigInt.asIntN(64, BigInt(Math.trunc(v))) : 0n;
      }
      break;
    case "u64":
      for (let i = 0; i < n; i++) {
        const v = values[i];
        (out as BigUint64Array)[i] = Number.isFinite(v) ? BigInt.asUintN(64, BigInt(Math.trunc(v))) : 0n;
      }
      break;
    case "bool":
      for (let i = 0; i < n; i++) (out as Uint8Array)[i] = values[i] !== 0 ? 1 : 0;
      break;
    case "f32":
    case "f64":
    case "i8":
    case "i16":
    case "i32":
    case "u8":
    case "u16":
    case "u32":
      // Typed-array stores round floats to nearest even and truncate integers toward zero,
      // wrapping modulo 2^bits (NaN and +-Inf become 0).
      (out as Float32Array).set(values);
      break;
    default:
      throw new Error(`cannot write numbers as ${dtype} elements`);
  }
  return { dtype, shape: [...shape], data: out };
}

/** A scalar-or-vector tensor of int64 values (shape `[values.length]`). */
export function int64Tensor(values: readonly number[], shape: readonly number[] = [values.length]): Tensor {
  return tensor("i64", shape, BigInt64Array.from(values, (v) => BigInt(v)));
}

/** A float32 tensor from numbers. */
export function float32Tensor(shape: readonly number[], values: ArrayLike<number>): Tensor {
  return tensor("f32", shape, Float32Array.from(values));
}
