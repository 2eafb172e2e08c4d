/**
 * Tensor helpers for tests: comparison by the ONNX backend test's rule (|a - b| <=
 * atol + rtol * |b|, NaN equals NaN, exact for integers, booleans and strings) and
 * seeded inputs.
 * @module
 */
import { type Tensor, tensor, toFloat64 } from "../ir/tensor.ts";

/** Tolerances of {@linkcode compareTensors}. */
export interface Tolerance {
  /** Relative tolerance. */
  rtol: number;
  /** Absolute tolerance. */
  atol: number;
}

/** Default tolerance: ONNX backend test's rtol with a float32-friendly atol. */
export const BACKEND_TOLERANCE: Tolerance = { rtol: 1e-3, atol: 1e-5 };

/** Null when `actual` matches `expected`, else a one-line description of the first difference. */
export function compareTensors(actual: Tensor, expected: Tensor, tol: Tolerance = BACKEND_TOLERANCE): string | null {
  if (actual.dtype !== expected.dtype) return `dtype ${actual.dtype}, expected ${expected.dtype}`;
  if (actual.shape.join(",") !== expected.shape.join(",")) {
    return `shape [${actual.shape}], expected [${expected.shape}]`;
  }
  if (Array.isArray(expected.data) || !["f32", "f64", "f16", "bf16"].includes(expected.dtype)) {
    const a = actual.data as ArrayLike<unknown>;
    const e = expected.data as ArrayLike<unknown>;
    for (let i = 0; i < e.length; i++) {
      if (a[i] !== e[i]) return `element ${i} is ${a[i]}, expected ${e[i]}`;
    }
    return null;
  }
  const a = toFloat64(actual);
  const e = toFloat64(expected);
  for (let i = 0; i < e.length; i++) {
    if (Number.isNaN(e[i]) && Number.isNaN(a[i])) continue;
    if (a[i] === e[i]) continue;
    if (!(Math.abs(a[i] - e[i]) <= tol.atol + tol.rtol * Math.abs(e[i]))) {
      return `element ${i} is ${a[i]}, expected ${e[i]}`;
    }
  }
  return null;
}

/** Deterministic inputs in [0, 1) from a small LCG (tests must not depend on Math.random). */
export function randomInput(shape: readonly number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 32;
  }
  return tensor("f32", shape, data);
}

/**
 * A seeded generator of uniform numbers in [0, 1) (mulberry32), so random tests reproduce (tests must not depend on
 * Math.random). `2 * next() - 1` gives [-1, 1).
 */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
