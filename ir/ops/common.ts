/**
 * Helpers shared by the op families: axis normalisation, broadcasting,
 * symbolic dimension arithmetic, strides.
 * @module
 */
import type { Op } from "../graph.ts";
import type { Tensor } from "../tensor.ts";
import type { Dim } from "../types.ts";

/** An error about one op, prefixed with its name and type. */
export function opError(op: Op, message: string): Error {
  return new Error(`op "${op.name}" (${op.type}): ${message}`);
}

/** Resolve a possibly negative axis against `rank`; throws naming the op when out of range. */
export function normalizeAxis(op: Op, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw opError(op, `axis ${axis} is out of range for rank ${rank}`);
  return a;
}

/** Product of two dimensions; symbolic when either is, numeric factors collected (`"N*3136"`). */
export function dimMul(a: Dim, b: Dim): Dim {
  return dimProduct([a, b]);
}

/** A dimension as a numeric coefficient times symbols. */
interface DimFactors {
  coef: number;
  syms: string[];
}

/** Factors of a dimension (`"N*64"` → 64·N); null for `"?"`. */
function factorsOf(d: Dim): DimFactors | null {
  if (typeof d === "number") return { coef: d, syms: [] };
  const f: DimFactors = { coef: 1, syms: [] };
  for (const part of d.split("*")) {
    if (part === "?" || part === "") return null;
    if (/^\d+$/.test(part)) f.coef *= Number(part);
    else f.syms.push(part);
  }
  return f;
}

function factorsToDim(f: DimFactors): Dim {
  if (f.syms.length === 0) return f.coef;
  return f.coef === 1 ? f.syms.join("*") : `${f.syms.join("*")}*${f.coef}`;
}

/** Product of dimensions with numeric factors collected: `[N,64,7,7]` → `"N*3136"`. */
export function dimProduct(dims: readonly Dim[]): Dim {
  const f: DimFactors = { coef: 1, syms: [] };
  for (const d of dims) {
    const g = factorsOf(d);
    if (g === null) return "?";
    f.coef *= g.coef;
    f.syms.push(...g.syms);
  }
  return f.coef === 0 ? 0 : factorsToDim(f);
}

/**
 * `product(total) / product(known)`, cancelling symbols: `[N,64,7,7] / [N]` is 3136.
 * Returns `"?"` when symbols do not cancel, and throws when the static sizes cannot divide.
 */
export function dimQuotient(op: Op, total: readonly Dim[], known: readonly Dim[], what: () => string): Dim {
  const num = factorsOf(dimProduct(total));
  const den = factorsOf(dimProduct(known));
  if (num === null || den === null) return "?";
  for (const s of den.syms) {
    const i = num.syms.indexOf(s);
    if (i < 0) return "?";
    num.syms.splice(i, 1);
  }
  if (den.coef === 0) throw opError(op, `cannot infer the -1 dimension of ${what()}: other dimensions have size 0`);
  if (num.coef % den.coef !== 0) {
    if (num.syms.length > 0) return "?";
    throw opError(op, `cannot reshape ${what()}: ${num.coef} elements do not divide into ${den.coef}`);
  }
  return factorsToDim({ coef: num.coef / den.coef, syms: num.syms });
}

/**
 * Numpy-style broadcast of shapes. Symbolic dims broadcast against 1 and
 * against themselves; two different static sizes other than 1 throw.
 */
export function broadcastShapes(op: Op, shapes: readonly (readonly Dim[])[]): Dim[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let dim: Dim = 1;
    for (const s of shapes) {
      const d = s[s.length - rank + i];
      if (d === undefined || d === 1) continue;
      if (dim === 1 || dim === d) dim = d;
      else if (typeof dim === "number" && typeof d === "number") {
        throw opError(op, `cannot broadcast shapes ${shapes.map((x) => `[${x.join(",")}]`).join(" and ")}`);
      } else if (typeof dim !== "number") {
        // A symbol against a static size: the static size wins (the symbol must equal it or be 1).
        if (typeof d === "number") dim = d;
      }
    }
    out.push(dim);
  }
  return out;
}

/** Row-major strides of a static shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

/** Integer contents of an int32/int64 tensor as numbers. */
export function intValues(t: Tensor): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));
}

/** True when every dimension is a number. */
export function isStatic(shape: readonly Dim[]): shape is readonly number[] {
  return shape.every((d) => typeof d === "number");
}

/**
 * A lazily compiled WebAssembly kernel: the first call compiles `bytes()` and
 * hands the instance's exports to `wrap`; every call returns that, or null
 * where this runtime cannot compile the module (no SIMD), so callers keep a
 * JavaScript path.
 */
export function lazyWasm<T>(
  bytes: () => Uint8Array<ArrayBuffer>,
  wrap: (exports: WebAssembly.Exports) => T,
): () => T | null {
  let kernel: T | null | undefined;
  return () => {
    if (kernel !== undefined) return kernel;
    try {
      kernel = wrap(new WebAssembly.Instance(new WebAssembly.Module(bytes()), {}).exports);
    } catch {
      kernel = null;
    }
    return kernel;
  };
}
