/**
 * WebAssembly SIMD (f64x2) inner loops of the symmetric eigensolver in
 * `passes/linalg.ts`: the level-1/2 row operations of the Householder
 * tridiagonalization and the batched plane rotations of the QL iteration,
 * emitted as bytes. Operands live in the module's own memory ({@linkcode eigenKernels}).
 * @module
 */
import {
  ADD,
  AND,
  BR_IF_0,
  doWhile,
  F64,
  F64_ADD,
  F64_MUL,
  F64_SUB,
  f64Load,
  f64Store,
  F64X2_ADD,
  F64X2_MUL,
  F64X2_SPLAT,
  F64X2_SUB,
  f64x2Lane,
  get,
  I32,
  i32,
  I32_TRUNC_F64_U,
  ifThen,
  loadV128,
  name,
  section,
  set,
  SHR_U,
  storeV128,
  SUB,
  tee,
  uleb,
  V128,
  vec,
  ZERO_V128,
} from "./wasm_encode.ts";

const F64X2_REPLACE_LANE_0 = [0xfd, 0x22, 0];
/** `ptr += bytes` for each pointer local. */
const advance = (ptrs: number[], bytes: number): number[] =>
  ptrs.flatMap((p) => [...get(p), ...i32(bytes), ADD, ...set(p)]);

/**
 * `len` elements as `len >> 1` f64x2 steps (`pairs`, counting down in local `q`),
 * then one scalar step when `len` is odd; pointers advance by 16 per pair.
 */
function pairsThenTail(len: number, q: number, ptrs: number[], pair: number[][], tail: number[][]): number[] {
  return [
    ...get(len),
    ...i32(1),
    SHR_U,
    ...tee(q),
    ...ifThen(doWhile(...pair, advance(ptrs, 16), get(q), i32(1), [SUB], tee(q), BR_IF_0)),
    ...get(len),
    ...i32(1),
    AND,
    ...ifThen(...tail),
  ]; // deno-fmt-ignore
}

/** A function body: locals as `[count, type]` runs, then the code. */
const body = (locals: [number, number][], code: number[][]): number[] => {
  const bytes = [...vec(locals.map(([count, type]) => [...uleb(count), type])), ...code.flat(), 0x0b];
  return [...uleb(bytes.length), ...bytes];
};

/**
 * The module: memory and five functions, pointers in bytes, lengths in elements:
 * - `dot(x, y, len) -> f64`: `Σ x[k] y[k]` (two lanes summed separately, then added);
 * - `symvRow(x, d, e, f, len) -> f64`: `Σ x[k] d[k]`, and `e[k] += x[k] f`;
 * - `rank2Row(x, e, d, f, g, len)`: `x[k] -= f e[k] + g d[k]`;
 * - `axpy(y, x, alpha, len)`: `y[k] += alpha x[k]`;
 * - `rotate(w, ld, rots, count, pairs)`: for each of `count` rotations
 *   `(rowOffsetBytes, c, s)` (three f64 at `rots`), rows `a = w + rowOffset`
 *   and `b = a + ld` over `2 pairs` columns: `b = s a + c b`, `a = c a - s b`
 *   (the old values; the same operations as the scalar loop, no fusion).
 *
 * @returns The module's bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { eigenModuleBytes } from "./wasm_eigen.ts";
 * assert.ok(WebAssembly.validate(eigenModuleBytes()));
 * ```
 */
export function eigenModuleBytes(): Uint8Array<ArrayBuffer> {
  const lanesSum = (acc: number): number[] => [...get(acc), ...f64x2Lane(0), ...get(acc), ...f64x2Lane(1), F64_ADD];
  // dot(x0, y1, len2) -> f64; locals q3, acc4 (v128), s5 (f64).
  const dot = body([[1, I32], [1, V128], [1, F64]], [
    ZERO_V128,
    set(4),
    pairsThenTail(2, 3, [0, 1], [
      get(4),
      get(0),
      loadV128(0),
      get(1),
      loadV128(0),
      F64X2_MUL,
      F64X2_ADD,
      set(4),
    ], [
      lanesSum(4),
      get(0),
      f64Load(0),
      get(1),
      f64Load(0),
      [F64_MUL],
      [F64_ADD],
      set(5),
      ZERO_V128,
      get(5),
      F64X2_REPLACE_LANE_0,
      set(4), // acc = (s, 0): the tail joins lane 0
    ]),
    lanesSum(4),
  ]); // deno-fmt-ignore
  // symvRow(x0, d1, e2, f3 (f64), len4) -> f64; locals q5, acc6, fv7, xv8 (v128), t9 (f64).
  const symv = body([[1, I32], [3, V128], [1, F64]], [
    ZERO_V128, set(6), get(3), F64X2_SPLAT, set(7),
    pairsThenTail(4, 5, [0, 1, 2], [
      get(0), loadV128(0), set(8),
      get(6), get(8), get(1), loadV128(0), F64X2_MUL, F64X2_ADD, set(6),
      get(2), get(2), loadV128(0), get(8), get(7), F64X2_MUL, F64X2_ADD, storeV128(0),
    ], [
      get(0), f64Load(0), set(9),
      get(2), get(2), f64Load(0), get(9), get(3), [F64_MUL], [F64_ADD], f64Store(0),
      lanesSum(6), get(9), get(1), f64Load(0), [F64_MUL], [F64_ADD], set(9),
      ZERO_V128, get(9), F64X2_REPLACE_LANE_0, set(6),
    ]),
    lanesSum(6),
  ]); // deno-fmt-ignore
  // rank2Row(x0, e1, d2, f3, g4 (f64), len5); locals q6, fv7, gv8 (v128).
  const rank2 = body([[1, I32], [2, V128]], [
    get(3), F64X2_SPLAT, set(7), get(4), F64X2_SPLAT, set(8),
    pairsThenTail(5, 6, [0, 1, 2], [
      get(0), get(0), loadV128(0),
      get(7), get(1), loadV128(0), F64X2_MUL, get(8), get(2), loadV128(0), F64X2_MUL, F64X2_ADD,
      F64X2_SUB, storeV128(0),
    ], [
      get(0), get(0), f64Load(0),
      get(3), get(1), f64Load(0), [F64_MUL], get(4), get(2), f64Load(0), [F64_MUL], [F64_ADD],
      [F64_SUB], f64Store(0),
    ]),
  ]); // deno-fmt-ignore
  // axpy(y0, x1, alpha2 (f64), len3); locals q4, av5 (v128).
  const axpy = body([[1, I32], [1, V128]], [
    get(2), F64X2_SPLAT, set(5),
    pairsThenTail(3, 4, [0, 1], [
      get(0), get(0), loadV128(0), get(5), get(1), loadV128(0), F64X2_MUL, F64X2_ADD, storeV128(0),
    ], [
      get(0), get(0), f64Load(0), get(2), get(1), f64Load(0), [F64_MUL], [F64_ADD], f64Store(0),
    ]),
  ]); // deno-fmt-ignore
  // rotate(w0, ld1, rots2, count3, pairs4); locals a5, b6, q7 (i32), c8, s9, ta10, tb11 (v128).
  const rotate = body([[3, I32], [4, V128]], [
    doWhile(
      get(0), get(2), f64Load(0), [I32_TRUNC_F64_U], [ADD], tee(5), get(1), [ADD], set(6),
      get(2), f64Load(8), F64X2_SPLAT, set(8),
      get(2), f64Load(16), F64X2_SPLAT, set(9),
      get(4), set(7),
      doWhile(
        get(5), loadV128(0), set(10),
        get(6), loadV128(0), set(11),
        get(6), get(9), get(10), F64X2_MUL, get(8), get(11), F64X2_MUL, F64X2_ADD, storeV128(0),
        get(5), get(8), get(10), F64X2_MUL, get(9), get(11), F64X2_MUL, F64X2_SUB, storeV128(0),
        advance([5, 6], 16),
        get(7), i32(1), [SUB], tee(7), BR_IF_0,
      ),
      get(2), i32(24), [ADD], set(2),
      get(3), i32(1), [SUB], tee(3), BR_IF_0,
    ),
  ]); // deno-fmt-ignore
  const type = (params: number[], results: number[]): number[] => [0x60, ...vec(params.map((t) => [t])), ...vec(results.map((t) => [t]))];
  const fns = ["dot", "symvRow", "rank2Row", "axpy", "rotate"];
  // deno-fmt-ignore
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([
      type([I32, I32, I32], [F64]),
      type([I32, I32, I32, F64, I32], [F64]),
      type([I32, I32, I32, F64, F64, I32], []),
      type([I32, I32, F64, I32], []),
      type([I32, I32, I32, I32, I32], []),
    ])),
    ...section(3, vec([[0], [1], [2], [3], [4]])),
    ...section(5, vec([[0x00, 1]])),
    ...section(7, vec([[...name("memory"), 0x02, 0], ...fns.map((f, i) => [...name(f), 0x00, i])])),
    ...section(10, [...uleb(5), ...dot, ...symv, ...rank2, ...axpy, ...rotate]),
  ]);
}

/** The instantiated kernels (pointers in bytes into `memory`). */
export interface EigenKernels {
  /** The module's memory: operands are placed here by the caller. */
  memory: WebAssembly.Memory;
  /** `Σ x[k] y[k]`. */
  dot(x: number, y: number, len: number): number;
  /** `Σ x[k] d[k]`, and `e[k] += x[k] f`. */
  symvRow(x: number, d: number, e: number, f: number, len: number): number;
  /** `x[k] -= f e[k] + g d[k]`. */
  rank2Row(x: number, e: number, d: number, f: number, g: number, len: number): void;
  /** `y[k] += alpha x[k]`. */
  axpy(y: number, x: number, alpha: number, len: number): void;
  /** Plane rotations `(rowOffsetBytes, c, s)` on row pairs of `2 pairs` columns (see {@linkcode eigenModuleBytes}). */
  rotate(w: number, ld: number, rots: number, count: number, pairs: number): void;
}

/**
 * The same kernels in JavaScript (one lane: `dot` and `symvRow` sum in another order), for a runtime
 * without WebAssembly SIMD, and the reference the SIMD kernels are tested against.
 *
 * @returns Kernels over a memory of their own.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { scalarEigenKernels } from "./wasm_eigen.ts";
 * const k = scalarEigenKernels();
 * new Float64Array(k.memory.buffer, 0, 4).set([1, 2, 3, 4]);
 * assert.equal(k.dot(0, 16, 2), 1 * 3 + 2 * 4);
 * ```
 */
export function scalarEigenKernels(): EigenKernels {
  const memory = new WebAssembly.Memory({ initial: 1 });
  const heap = (): Float64Array => new Float64Array(memory.buffer);
  return {
    memory,
    dot(x, y, len) {
      const h = heap();
      let s = 0;
      for (let k = 0; k < len; k++) s += h[x / 8 + k] * h[y / 8 + k];
      return s;
    },
    symvRow(x, d, e, f, len) {
      const h = heap();
      let s = 0;
      for (let k = 0; k < len; k++) {
        s += h[x / 8 + k] * h[d / 8 + k];
        h[e / 8 + k] += h[x / 8 + k] * f;
      }
      return s;
    },
    rank2Row(x, e, d, f, g, len) {
      const h = heap();
      for (let k = 0; k < len; k++) h[x / 8 + k] -= f * h[e / 8 + k] + g * h[d / 8 + k];
    },
    axpy(y, x, alpha, len) {
      const h = heap();
      for (let k = 0; k < len; k++) h[y / 8 + k] += alpha * h[x / 8 + k];
    },
    rotate(w, ld, rots, count, pairs) {
      const h = heap();
      for (let r = 0; r < count; r++) {
        const [row, c, s] = [h[rots / 8 + 3 * r], h[rots / 8 + 3 * r + 1], h[rots / 8 + 3 * r + 2]];
        const a = (w + row) / 8;
        const b = a + ld / 8;
        for (let k = 0; k < 2 * pairs; k++) {
          const t = h[b + k];
          h[b + k] = s * h[a + k] + c * t;
          h[a + k] = c * h[a + k] - s * t;
        }
      }
    },
  };
}

let instance: EigenKernels | undefined;

/**
 * The kernels, instantiated once per thread ({@linkcode scalarEigenKernels} without WebAssembly SIMD).
 *
 * @returns The kernels.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { eigenKernels } from "./wasm_eigen.ts";
 * const k = eigenKernels();
 * const x = new Float64Array(k.memory.buffer, 0, 6);
 * x.set([1, 2, 3, 4, 5, 6]);
 * assert.equal(k.dot(0, 24, 3), 1 * 4 + 2 * 5 + 3 * 6);
 * ```
 */
export function eigenKernels(): EigenKernels {
  if (instance === undefined) {
    const bytes = eigenModuleBytes();
    if (WebAssembly.validate(bytes)) {
      const exports = new WebAssembly.Instance(new WebAssembly.Module(bytes), {}).exports;
      instance = {
        ...(exports as unknown as Omit<EigenKernels, "memory">),
        memory: exports.memory as WebAssembly.Memory,
      };
    } else instance = scalarEigenKernels();
  }
  return instance;
}
