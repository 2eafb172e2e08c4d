/**
 * Element types and tensor types of the IR: plain scalar dtypes (the ONNX set),
 * plus the parametric block-floating-point and fixed-point types that
 * compression passes introduce. Shapes mix static and symbolic dimensions.
 * @module
 */

/** Scalar element types, named as in MLIR (`f32`, `i64`, ...). Mirrors ONNX `TensorProto.DataType`. */
export type DType =
  | "f32"
  | "f64"
  | "f16"
  | "bf16"
  | "i4"
  | "i8"
  | "i16"
  | "i32"
  | "i64"
  | "u4"
  | "u8"
  | "u16"
  | "u32"
  | "u64"
  | "bool"
  | "string"
  | "c64"
  | "c128"
  | "f8e4m3fn"
  | "f8e4m3fnuz"
  | "f8e5m2"
  | "f8e5m2fnuz"
  | "f4e2m1";

/** Every dtype with its ONNX `TensorProto.DataType` code. */
export const ONNX_DTYPE_CODES: Readonly<Record<DType, number>> = {
  f32: 1,
  u8: 2,
  i8: 3,
  u16: 4,
  i16: 5,
  i32: 6,
  i64: 7,
  string: 8,
  bool: 9,
  f16: 10,
  f64: 11,
  u32: 12,
  u64: 13,
  c64: 14,
  c128: 15,
  bf16: 16,
  f8e4m3fn: 17,
  f8e4m3fnuz: 18,
  f8e5m2: 19,
  f8e5m2fnuz: 20,
  u4: 21,
  i4: 22,
  f4e2m1: 23,
};

const DTYPE_BY_CODE = new Map<number, DType>(
  Object.entries(ONNX_DTYPE_CODES).map(([k, v]) => [v, k as DType]),
);

/**
 * The dtype of an ONNX `TensorProto.DataType` code.
 *
 * @param code ONNX data type code (1 = FLOAT, 7 = INT64, ...).
 * @returns The dtype name.
 * @throws {RangeError} For codes the IR does not know.
 *
 * @example Map an ONNX code
 * ```ts
 * import assert from "node:assert/strict";
 * import { dtypeFromOnnx } from "./types.ts";
 * assert.equal(dtypeFromOnnx(1), "f32");
 * ```
 */
export function dtypeFromOnnx(code: number): DType {
  const dtype = DTYPE_BY_CODE.get(code);
  if (dtype === undefined) throw new RangeError(`unknown ONNX data type ${code}`);
  return dtype;
}

/** True for the dtypes the IR knows. */
export function isDType(name: string): name is DType {
  return Object.hasOwn(ONNX_DTYPE_CODES, name);
}

/**
 * The floating dtypes that kernels and passes compute with (decoded to float64
 * and stored back). The 8- and 4-bit float formats are storage types only and
 * are not in the set.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FLOAT_DTYPES } from "./types.ts";
 * assert.ok(FLOAT_DTYPES.has("bf16") && !FLOAT_DTYPES.has("i8") && !FLOAT_DTYPES.has("f8e4m3fn"));
 * ```
 */
export const FLOAT_DTYPES: ReadonlySet<DType> = new Set(["f16", "bf16", "f32", "f64"]);

/**
 * Block floating point: blocks of values share one exponent, each value keeps
 * a signed mantissa of `mantissa` bits (sign included). See shared formats doc.
 */
export interface BfpType {
  /** Discriminant. */
  readonly kind: "bfp";
  /** Mantissa width in bits, sign included. */
  readonly mantissa: number;
  /** Width of the shared exponent field in bits. */
  readonly exponent: number;
  /** Elements per block along the reduction axis; 0 means one block per row. */
  readonly block: number;
}

/** Signed fixed point with `bits` total bits of which `frac` are fractional. */
export interface FixedType {
  /** Discriminant. */
  readonly kind: "fixed";
  /** Total width in bits, sign included. */
  readonly bits: number;
  /** Fractional bits. */
  readonly frac: number;
}

/** What one tensor element is: a scalar dtype or a parametric number format. */
export type ElementType = DType | BfpType | FixedType;

/** A dimension: a static size or a symbolic name (`"N"`); `"?"` is unknown. */
export type Dim = number | string;

/** A tensor type: element type and shape; `shape` null means unranked. */
export interface TensorType {
  /** Element type. */
  readonly elem: ElementType;
  /** Dimensions, or null when even the rank is unknown. */
  readonly shape: readonly Dim[] | null;
}

/**
 * A type the IR carries without modelling it (ONNX sequences, maps, optionals,
 * sparse tensors). `proto` is the original type description, kept for export.
 */
export interface OpaqueType {
  /** Discriminant. */
  readonly kind: "opaque";
  /** Short human-readable description, e.g. `seq<f32>`. */
  readonly description: string;
  /** The source format's own description (ONNX `TypeProto`), kept verbatim. */
  readonly proto?: unknown;
}

/** The type of an SSA value. */
export type Type = TensorType | OpaqueType;

/** True when `type` is a tensor type. */
export function isTensorType(type: Type | undefined | null): type is TensorType {
  return type !== undefined && type !== null && !("kind" in type);
}

/**
 * Build a tensor type.
 *
 * @example Make a type
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensorType, typeToString } from "./types.ts";
 * assert.equal(typeToString(tensorType("f32", ["N", 3, 32, 32])), "f32[N,3,32,32]");
 * ```
 */
export function tensorType(elem: ElementType, shape: readonly Dim[] | null): TensorType {
  return { elem, shape };
}

/** Canonical text of an element type: `f32`, `bfp<mantissa=8, exponent=5, block=16>`, `fixed<bits=16, frac=8>`. */
export function elementTypeToString(elem: ElementType): string {
  if (typeof elem === "string") return elem;
  if (elem.kind === "bfp") {
    return `bfp<mantissa=${elem.mantissa}, exponent=${elem.exponent}, block=${elem.block}>`;
  }
  return `fixed<bits=${elem.bits}, frac=${elem.frac}>`;
}

/** True when two element types are the same. */
export function sameElementType(a: ElementType, b: ElementType): boolean {
  return elementTypeToString(a) === elementTypeToString(b);
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Text of a dimension: numbers as is, identifiers bare, other symbols quoted. */
export function dimToString(dim: Dim): string {
  if (typeof dim === "number" || dim === "?" || IDENT.test(dim)) return String(dim);
  return JSON.stringify(dim);
}

/**
 * Canonical text of a type: `f32[N,3,32,32]`, `f32[*]` (unranked), `f32[]` (scalar).
 */
export function typeToString(type: Type): string {
  if (!isTensorType(type)) return `opaque<${JSON.stringify(type.description)}>`;
  const shape = type.shape === null ? "*" : type.shape.map(dimToString).join(",");
  return `${elementTypeToString(type.elem)}[${shape}]`;
}

/** Number of elements of a static shape, or null if any dimension is symbolic. */
export function staticSize(shape: readonly Dim[] | null): number | null {
  if (shape === null) return null;
  let size = 1;
  for (const d of shape) {
    if (typeof d !== "number") return null;
    size *= d;
  }
  return size;
}

/** True when two shapes are equal dimension by dimension (symbols by name). */
export function sameShape(a: readonly Dim[] | null, b: readonly Dim[] | null): boolean {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Storage bits of one element (BFP: mantissa only; exponents are counted per block). */
export function elementBits(elem: ElementType): number {
  if (typeof elem !== "string") return elem.kind === "bfp" ? elem.mantissa : elem.bits;
  switch (elem) {
    case "bool":
    case "i8":
    case "u8":
    case "f8e4m3fn":
    case "f8e4m3fnuz":
    case "f8e5m2":
    case "f8e5m2fnuz":
      return 8;
    case "i4":
    case "u4":
    case "f4e2m1":
      return 4;
    case "f16":
    case "bf16":
    case "i16":
    case "u16":
      return 16;
    case "f32":
    case "i32":
    case "u32":
      return 32;
    case "f64":
    case "i64":
    case "u64":
    case "c64":
      return 64;
    case "c128":
      return 128;
    case "string":
      return 0;
  }
}
