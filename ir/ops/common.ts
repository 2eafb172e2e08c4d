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

/** Product of two dimensions; symbolic when either is (`"N*3136"`). */
export function dimMul(a: Dim, b: Dim): Dim {
  if (typeof a === "number" && typeof b === "number") return a * b;
  if (a === 1) return b;
  if (b === 1) return a;
  if (a === "?" || b === "?") return "?";
  return `${a}*${b}`;
}

/** Product of dimensions (1 for none). */
export function dimProduct(dims: readonly Dim[]): Dim {
  return dims.reduce<Dim>((p, d) => dimMul(p, d), 1);
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
