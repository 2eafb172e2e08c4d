/**
 * The one dense matrix-multiply kernel of the interpreter (Gemm, MatMul, the
 * im2col convolutions, and passes such as SVD): a BLIS-style blocked GEMM on
 * row-major typed arrays with packed panels. Float32 runs a WebAssembly SIMD
 * micro-kernel (6x8 tile, fused multiply-add where relaxed SIMD is available,
 * float32 accumulation as in onnxruntime; see `wasm_gemm.ts`); float64, and
 * float32 on request, the float64 WebAssembly SIMD kernel of `wasm_gemm64.ts`,
 * or without WebAssembly SIMD a JavaScript 4x4 micro-kernel accumulating in float64.
 * @module
 */

import { arenaLimitBytes, MAX_PARTS, parallelArena, type ParallelTask, runParts, threadCount } from "../parallel.ts";
import type { WindowGeometry } from "./conv_kernels.ts";
import { gemmModuleBytes, TILE_COLUMNS } from "./wasm_gemm.ts";
import { float64GemmKernel, gemm64 } from "./wasm_gemm64.ts";

/** Element storage the kernel reads and writes. */
export type FloatArray = Float32Array | Float64Array;

/** Operands of {@linkcode gemm}: `C = alpha * op(A) * op(B) + beta * C`, all row-major. */
export interface GemmArgs {
  /** Rows of `op(A)` and `C`. */
  m: number;
  /** Columns of `op(B)` and `C`. */
  n: number;
  /** Columns of `op(A)`, rows of `op(B)` (the reduction length). */
  k: number;
  /** Storage of A: `m x k` row-major, or `k x m` when `transA`. */
  a: FloatArray;
  /** Index of A's first element in `a` (default 0). */
  aOffset?: number;
  /** Distance between A's stored rows (default: its stored column count). */
  lda?: number;
  /** Use A transposed: A is stored `k x m`. */
  transA?: boolean;
  /** Storage of B: `k x n` row-major, or `n x k` when `transB`. */
  b: FloatArray;
  /** Index of B's first element in `b` (default 0). */
  bOffset?: number;
  /** Distance between B's stored rows (default: its stored column count). */
  ldb?: number;
  /** Use B transposed: B is stored `n x k`. */
  transB?: boolean;
  /** Storage of C, `m x n` row-major; read when `beta` is not 0, always written. */
  c: FloatArray;
  /** Index of C's first element in `c` (default 0). */
  cOffset?: number;
  /** Distance between C's rows (default `n`). */
  ldc?: number;
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Scale of the previous C (default 0: C is overwritten, whatever it held, NaN included). */
  beta?: number;
  /**
   * Accumulate in float64 even when all operands are float32 (slower: the
   * JavaScript kernel instead of WebAssembly SIMD). Float64 operands always do.
   */
  float64Accumulation?: boolean;
  /**
   * Applied to each element of C last: `C[i, j] = clamp(alpha * op(A) op(B) + beta * C + bias[i])` (a convolution's
   * bias and Relu or Clip; float32 C rounds the sum with the bias before clamping).
   */
  epilogue?: Epilogue;
  /**
   * A's storage is never written while it is alive (a model's weights): the float32 SIMD kernel then keeps A's
   * packed panels between calls, keyed by the array, offset and shape (at most {@linkcode PACKED_A_CACHE_FLOATS}
   * floats; see {@linkcode releasePackedA}). Results are the same as without it.
   */
  constantA?: boolean;
}

/** Per-row bias and clamping of {@linkcode GemmArgs.epilogue}. */
export interface Epilogue {
  /** Added to row `i` of C: `bias[biasOffset + i]`; null for none. */
  bias: FloatArray | null;
  /** Index of row 0's bias. */
  biasOffset: number;
  /** Lower bound (`v < lo ? lo : v`: NaN stays); -Infinity for none. */
  lo: number;
  /** Upper bound (`v > hi ? hi : v`); Infinity for none. */
  hi: number;
}

/** Register tile: rows of A and columns of B per micro-kernel call. */
const MR = 4;
const NR = 4;
/** Cache blocks: reduction slice, rows of A and columns of B packed at once. */
const KC = 256;
const MC = 128;
const NC = 2048;

// Packed panels are float64: the micro-kernel reads them without conversion and
// accumulates in float64 (exact products of float32 inputs), grown on demand and
// reused across calls (the interpreter is synchronous).
let packA = new Float64Array(0);
let packB = new Float64Array(0);
const edgeTile = new Float64Array(MR * NR);

/**
 * General matrix multiply `C = alpha * op(A) * op(B) + beta * C` on row-major
 * float32 or float64 storage with offsets and leading dimensions, so callers
 * can multiply sub-matrices (one group of a convolution, one image of a batch)
 * in place.
 *
 * Precision: when A, B and C are all Float32Array the product is accumulated
 * in float32 by a WebAssembly SIMD kernel (like onnxruntime's MLAS; about 8x
 * the JavaScript kernel): per element, a float32 running sum in order of k
 * within each slice of 256 (fused multiply-add where the runtime has relaxed
 * SIMD, as Deno on x64 does), the slices added in order; otherwise, or with `float64Accumulation`, products and
 * sums are float64 within each slice of 256 along `k` (`wasm_gemm64.ts`'s `gemm64`, then the epilogue; the
 * JavaScript kernel where WebAssembly SIMD is unavailable). C must not overlap A or B.
 *
 * Threads: a large product is split into fixed parts of whole rows
 * (or columns) of C shared with the worker pool of `ir/parallel.ts` (see
 * {@linkcode setThreadCount}); each element is summed in the same order
 * whichever thread computes it, so results are bit-identical for any count.
 *
 * @param args Shapes, operands and scales.
 *
 * @example Multiply a 2x3 by a 3x2 matrix
 * ```ts
 * import assert from "node:assert/strict";
 * import { gemm } from "./gemm_kernel.ts";
 * const a = new Float32Array([1, 2, 3, 4, 5, 6]);
 * const b = new Float32Array([1, 0, 0, 1, 1, 1]);
 * const c = new Float32Array(4);
 * gemm({ m: 2, n: 2, k: 3, a, b, c });
 * assert.deepEqual([...c], [4, 5, 10, 11]);
 * ```
 */
export function gemm(args: GemmArgs): void {
  const { m, n, k, a, b, c } = args;
  const p: Problem = {
    ...gemmProblem(args),
    epi: args.epilogue ?? null,
    constA: args.constantA ?? false,
    im2col: null,
  };
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || p.alpha === 0) {
    scaleC(c, p.cOff, p.ldc, m, n, p.beta);
    applyEpilogue(p, 0, m, 0, n);
    return;
  }
  const allF32 = a instanceof Float32Array && b instanceof Float32Array && c instanceof Float32Array;
  const simd = allF32 && !(args.float64Accumulation ?? false) ? simdKernel() : null;
  if (simd === null && float64GemmKernel() !== "js") {
    gemm64(args);
    applyEpilogue(p, 0, m, 0, n);
    return;
  }
  if (gemmParallel(p, simd !== null)) return;
  if (simd === null) gemmScalar(p);
  else gemmSimd(p, simd);
}

/**
 * Float32 matrix times vector, `y[r] = sum over i of a[aOffset + r * k + i] * x[xOffset + i]` for `rows` contiguous
 * rows, summed in float32 by WebAssembly SIMD (eight partial sums; see `dotsCode` in `wasm_gemm.ts` for the order):
 * a convolution with one output position, a Gemm of one row. Returns false (nothing written) where WebAssembly SIMD
 * is unavailable.
 *
 * @param a Matrix storage.
 * @param aOffset Index of its first element.
 * @param rows Rows (results).
 * @param k Row length.
 * @param x Vector storage.
 * @param xOffset Index of its first element.
 * @param y Results, `y[0..rows]` overwritten.
 * @returns Whether the products were computed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { matVecF32 } from "./gemm_kernel.ts";
 * const y = new Float32Array(2);
 * assert.ok(matVecF32(new Float32Array([1, 2, 3, 4, 5, 6]), 0, 2, 3, new Float32Array([1, 0, -1]), 0, y));
 * assert.deepEqual([...y], [-2, -2]);
 * ```
 */
export function matVecF32(
  a: Float32Array,
  aOffset: number,
  rows: number,
  k: number,
  x: Float32Array,
  xOffset: number,
  y: Float32Array,
): boolean {
  const s = simdKernel();
  if (s === null) return false;
  if (rows <= 0) return true;
  // Wasm memory in floats: the vector, the rows, the results.
  const [xBase, aBase] = [0, roundUp(k, 4)];
  const yBase = aBase + roundUp(rows * k, 4);
  reserveScratch(s, (yBase + rows) * 4);
  s.heap.set(x.subarray(xOffset, xOffset + k), xBase);
  s.heap.set(a.subarray(aOffset, aOffset + rows * k), aBase);
  s.dots(rows, k, aBase * 4, xBase * 4, yBase * 4);
  y.set(s.heap.subarray(yBase, yBase + rows));
  return true;
}

/** A GEMM call with its defaults applied: the float32 and float64 kernels' common description. */
export interface GemmProblem {
  m: number;
  n: number;
  k: number;
  a: FloatArray;
  aOff: number;
  lda: number;
  transA: boolean;
  b: FloatArray;
  bOff: number;
  ldb: number;
  transB: boolean;
  c: FloatArray;
  cOff: number;
  ldc: number;
  alpha: number;
  beta: number;
}

/** `args` with the defaults of {@linkcode GemmArgs} applied. */
export function gemmProblem(args: GemmArgs): GemmProblem {
  const { m, n, k, a, b, c } = args;
  const transA = args.transA ?? false, transB = args.transB ?? false;
  return {
    m,
    n,
    k,
    a,
    aOff: args.aOffset ?? 0,
    lda: args.lda ?? (transA ? m : k),
    transA,
    b,
    bOff: args.bOffset ?? 0,
    ldb: args.ldb ?? (transB ? k : n),
    transB,
    c,
    cOff: args.cOffset ?? 0,
    ldc: args.ldc ?? n,
    alpha: args.alpha ?? 1,
    beta: args.beta ?? 0,
  };
}

/** The float32 kernel's problem: the epilogue, whether A is constant, and B made by im2col. */
interface Problem extends GemmProblem {
  epi: Epilogue | null;
  /** A's storage never changes (see {@linkcode GemmArgs.constantA}). */
  constA: boolean;
  /** B is this im2col matrix, made slice by slice in wasm memory (`b` unused), or null. */
  im2col: Im2colSource | null;
}

/** Rows `i0..i1` x columns `j0..j1` of C given the epilogue (bias, clamp) in place, when there is one. */
function applyEpilogue(q: Problem, i0: number, i1: number, j0: number, j1: number): void {
  if (q.epi === null) return;
  for (let i = i0; i < i1; i++) {
    const at = q.cOff + i * q.ldc;
    finishRow(q.c, at + j0, q.c, at + j0, j1 - j0, q.epi, i);
  }
}

/**
 * `c[dst + j] = clamp(src[from + j] + bias of row)` for `count` elements: the one pass that adds a row's bias and
 * clamps, where the row is copied or already stands (`c === src`).
 */
function finishRow(
  c: FloatArray,
  dst: number,
  src: FloatArray,
  from: number,
  count: number,
  epi: Epilogue,
  row: number,
): void {
  const b = epi.bias === null ? 0 : epi.bias[epi.biasOffset + row];
  const { lo, hi } = epi;
  if (b === 0) {
    // No bias (a zero bias is not added either: -0 stays -0, as without a bias pass).
    for (let j = 0; j < count; j++) {
      const v = src[from + j];
      const t = v < lo ? lo : v;
      c[dst + j] = t > hi ? hi : t;
    }
  } else if (c instanceof Float32Array) {
    // The biased sum rounded to float32 before clamping, as a bias pass over float32 storage would.
    for (let j = 0; j < count; j++) {
      const v = Math.fround(src[from + j] + b);
      const t = v < lo ? lo : v;
      c[dst + j] = t > hi ? hi : t;
    }
  } else {
    for (let j = 0; j < count; j++) {
      const v = src[from + j] + b;
      const t = v < lo ? lo : v;
      c[dst + j] = t > hi ? hi : t;
    }
  }
}

/** The JavaScript path: float64 packs and a 4x4 float64 register tile. */
function gemmScalar(q: Problem): void {
  gemmScalarProduct(q);
  applyEpilogue(q, 0, q.m, 0, q.n);
}

function gemmScalarProduct(q: Problem): void {
  const { m, n, k, a, aOff, lda, transA, b, bOff, ldb, transB, c, cOff, ldc, alpha, beta } = q;
  const kcMax = Math.min(KC, k);
  const ncMax = Math.min(NC, Math.ceil(n / NR) * NR);
  if (packB.length < kcMax * ncMax) packB = new Float64Array(kcMax * ncMax);
  for (let jc = 0; jc < n; jc += NC) {
    const nc = Math.min(NC, n - jc);
    for (let pc = 0; pc < k; pc += KC) {
      const kc = Math.min(KC, k - pc);
      const betaNow = pc === 0 ? beta : 1;
      packPanelsB(packB, 0, b, bOff, ldb, transB, pc, jc, kc, nc);
      for (let ic = 0; ic < m; ic += MC) {
        const mc = Math.min(MC, m - ic);
        packPanelsA(a, aOff, lda, transA, ic, pc, mc, kc);
        for (let jr = 0; jr < nc; jr += NR) {
          const nr = Math.min(NR, nc - jr);
          for (let ir = 0; ir < mc; ir += MR) {
            const mr = Math.min(MR, mc - ir);
            microKernel(kc, ir * kc, jr * kc, c, cOff + (ic + ir) * ldc + jc + jr, ldc, mr, nr, alpha, betaNow);
          }
        }
      }
    }
  }
}

/** `C = beta * C` (beta 0 writes zeros, so NaN in C does not survive). */
export function scaleC(c: FloatArray, cOff: number, ldc: number, m: number, n: number, beta: number): void {
  for (let i = 0; i < m; i++) {
    const row = cOff + i * ldc;
    if (beta === 0) c.fill(0, row, row + n);
    else if (beta !== 1) { for (let j = 0; j < n; j++) c[row + j] *= beta; }
  }
}

/** Pack rows `ic..ic+mc` x reduction `pc..pc+kc` of op(A) into MR-row panels, k-major, zero-padded. */
function packPanelsA(
  a: FloatArray,
  aOff: number,
  lda: number,
  transA: boolean,
  ic: number,
  pc: number,
  mc: number,
  kc: number,
): void {
  if (packA.length < Math.ceil(mc / MR) * MR * kc) packA = new Float64Array(Math.ceil(mc / MR) * MR * kc);
  const pa = packA;
  for (let ir = 0; ir < mc; ir += MR) {
    const base = ir * kc;
    for (let ii = 0; ii < MR; ii++) {
      const i = ic + ir + ii;
      if (ir + ii >= mc) {
        for (let p = 0; p < kc; p++) pa[base + p * MR + ii] = 0;
      } else if (transA) {
        let src = aOff + pc * lda + i;
        for (let p = 0; p < kc; p++, src += lda) pa[base + p * MR + ii] = a[src];
      } else {
        const src = aOff + i * lda + pc;
        for (let p = 0; p < kc; p++) pa[base + p * MR + ii] = a[src + p];
      }
    }
  }
}

/**
 * Pack reduction `pc..pc+kc` x columns `jc..jc+nc` of op(B) into `dst` from `dstBase` as 4-column panels, k-major,
 * zero-padded to whole panels (the float64 scalar kernel's and `wasm_gemm64.ts`'s layout).
 */
export function packPanelsB(
  dst: Float64Array,
  dstBase: number,
  b: FloatArray,
  bOff: number,
  ldb: number,
  transB: boolean,
  pc: number,
  jc: number,
  kc: number,
  nc: number,
): void {
  const pb = dst;
  for (let jr = 0; jr < nc; jr += NR) {
    const base = dstBase + jr * kc;
    const nr = Math.min(NR, nc - jr);
    if (transB) {
      for (let jj = 0; jj < NR; jj++) {
        if (jj >= nr) {
          for (let p = 0; p < kc; p++) pb[base + p * NR + jj] = 0;
          continue;
        }
        const src = bOff + (jc + jr + jj) * ldb + pc;
        for (let p = 0; p < kc; p++) pb[base + p * NR + jj] = b[src + p];
      }
    } else if (nr === NR) {
      let src = bOff + pc * ldb + jc + jr;
      for (let p = 0, dst = base; p < kc; p++, src += ldb, dst += NR) {
        pb[dst] = b[src];
        pb[dst + 1] = b[src + 1];
        pb[dst + 2] = b[src + 2];
        pb[dst + 3] = b[src + 3];
      }
    } else {
      let src = bOff + pc * ldb + jc + jr;
      for (let p = 0, dst = base; p < kc; p++, src += ldb, dst += NR) {
        for (let jj = 0; jj < NR; jj++) pb[dst + jj] = jj < nr ? b[src + jj] : 0;
      }
    }
  }
}

/** One MR x NR tile of C from packed panels: 16 float64 accumulators held in registers. */
function microKernel(
  kc: number,
  aIdx: number,
  bIdx: number,
  c: FloatArray,
  cIdx: number,
  ldc: number,
  mr: number,
  nr: number,
  alpha: number,
  beta: number,
): void {
  const pa = packA;
  const pb = packB;
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  let ai = aIdx;
  let bi = bIdx;
  for (let p = 0; p < kc; p++, ai += MR, bi += NR) {
    const b0 = pb[bi], b1 = pb[bi + 1], b2 = pb[bi + 2], b3 = pb[bi + 3];
    let av = pa[ai];
    c00 += av * b0, c01 += av * b1, c02 += av * b2, c03 += av * b3;
    av = pa[ai + 1];
    c10 += av * b0, c11 += av * b1, c12 += av * b2, c13 += av * b3;
    av = pa[ai + 2];
    c20 += av * b0, c21 += av * b1, c22 += av * b2, c23 += av * b3;
    av = pa[ai + 3];
    c30 += av * b0, c31 += av * b1, c32 += av * b2, c33 += av * b3;
  }
  if (mr === MR && nr === NR && alpha === 1 && beta === 0) {
    let o = cIdx;
    c[o] = c00, c[o + 1] = c01, c[o + 2] = c02, c[o + 3] = c03, o += ldc;
    c[o] = c10, c[o + 1] = c11, c[o + 2] = c12, c[o + 3] = c13, o += ldc;
    c[o] = c20, c[o + 1] = c21, c[o + 2] = c22, c[o + 3] = c23, o += ldc;
    c[o] = c30, c[o + 1] = c31, c[o + 2] = c32, c[o + 3] = c33;
    return;
  }
  const t = edgeTile;
  t[0] = c00, t[1] = c01, t[2] = c02, t[3] = c03, t[4] = c10, t[5] = c11, t[6] = c12, t[7] = c13;
  t[8] = c20, t[9] = c21, t[10] = c22, t[11] = c23, t[12] = c30, t[13] = c31, t[14] = c32, t[15] = c33;
  for (let ii = 0; ii < mr; ii++) {
    const row = cIdx + ii * ldc;
    for (let jj = 0; jj < nr; jj++) {
      const v = alpha * t[ii * NR + jj];
      c[row + jj] = beta === 0 ? v : beta * c[row + jj] + v;
    }
  }
}

// ---------------------------------------------------------------------------
// WebAssembly SIMD path (float32)

/** Columns of the SIMD kernel's register tile (its rows are {@linkcode SimdKernel.rows}). */
const SC = TILE_COLUMNS;
/**
 * Reduction slice (the float32 sums restart per slice: part of the summation order), rows of A per block (a packed
 * 120 x 256 block, 120 KiB, stays in the L2 cache), and the float32 elements of C kept in wasm memory per column block.
 */
const SKC = 256;
const SMC = 120;
const C_BLOCK = 1 << 20;
/** Columns of B packed at once (256 x 256 floats: 256 KiB, beside the A block within a 512 KiB L2 cache). */
const SNB = 256;
/** Most floats of packed A held at once (32 MiB); a taller A is multiplied in blocks of rows. */
const A_PACK_MAX = 1 << 23;

/** A packing function of the kernel module: `(kc, count, srcPtr, ldsrcBytes, dstPtr)`. */
type Pack = (kc: number, count: number, src: number, ldsrc: number, dst: number) => void;

/** The instantiated SIMD kernel and a float32 view of its memory (renewed when the memory grows). */
interface SimdKernel {
  /** Rows of the register tile. */
  rows: number;
  /** Whether the tile is summed by fused multiply-add (relaxed SIMD). */
  fused: boolean;
  memory: WebAssembly.Memory;
  heap: Float32Array;
  /** `(mc, nc, kc, aPtr, bPtr, cPtr, ldcBytes, accumulate)`; see {@linkcode gemmModuleBytes}. */
  block: (
    mc: number,
    nc: number,
    kc: number,
    a: number,
    b: number,
    c: number,
    ldc: number,
    acc: number,
    epilogue: number,
  ) => void;
  /** `(kc, nc, srcPtr, ldsrcBytes, dstPtr)`: `kc` rows of B into 8-column panels. */
  packB: Pack;
  /** `(kc, nc, srcPtr, ldsrcBytes, dstPtr)`: `nc` rows of B^T into 8-column panels. */
  packBT: Pack;
  /** `(kc, mc, srcPtr, ldsrcBytes, dstPtr)`: `mc` rows of A into {@linkcode rows}-row panels. */
  packA: Pack;
  /** `(kc, mc, srcPtr, ldsrcBytes, dstPtr)`: `kc` rows of A^T into {@linkcode rows}-row panels. */
  packAT: Pack;
  /** `(rows, k, aPtr, xPtr, yPtr)`: float32 dot products of contiguous rows with one vector. */
  dots: (rows: number, k: number, a: number, x: number, y: number) => void;
  /** `(src, dst, oh, ow, cols, H, W, Wo, sh, sw, ihOff, iwOff)`: one row of an im2col matrix; see `wasm_gemm.ts`. */
  im2colRow: (...args: number[]) => void;
}

/** Instantiated on first use; null without WebAssembly SIMD (the JavaScript kernel then serves float32 too). */
let simdInstance: SimdKernel | null | undefined;

function simdKernel(): SimdKernel | null {
  if (simdInstance === undefined) simdInstance = createSimd();
  return simdInstance;
}

/**
 * Which kernel multiplies float32 matrices in this runtime: `"wasm-simd"`, or
 * `"js"` where WebAssembly SIMD is unavailable.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { float32GemmKernel } from "./gemm_kernel.ts";
 * assert.ok(["wasm-simd", "js"].includes(float32GemmKernel()));
 * ```
 */
export function float32GemmKernel(): "wasm-simd" | "js" {
  return simdKernel() === null ? "js" : "wasm-simd";
}

/** Rows of the register tile: 6 x 8 (12 accumulators) measured 42 GFLOP/s in L1 here, 4 x 8 37 (both fused). */
const SIMD_ROWS = 6;

function createSimd(): SimdKernel | null {
  const rows = SIMD_ROWS;
  // Fused multiply-add (relaxed SIMD, on x64 with FMA one instruction for two) where the runtime has it.
  for (const fused of [true, false]) {
    const bytes = gemmModuleBytes(rows, fused);
    if (!WebAssembly.validate(bytes)) continue;
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
    const memory = instance.exports.memory as WebAssembly.Memory;
    const block = instance.exports.block as SimdKernel["block"];
    const [packB, packBT, packA, packAT] = ["packB", "packBT", "packA", "packAT"].map((f) =>
      instance.exports[f] as Pack
    );
    const dots = instance.exports.dots as SimdKernel["dots"];
    const im2colRow = instance.exports.im2colRow as SimdKernel["im2colRow"];
    const heap = new Float32Array(memory.buffer);
    return { rows, fused, memory, heap, block, packB, packBT, packA, packAT, dots, im2colRow };
  }
  return null;
}

const roundUp = (x: number, to: number): number => Math.ceil(x / to) * to;

/** Float32 GEMM through the SIMD block kernel: C is accumulated in wasm memory per column block, then scaled out. */
function gemmSimd(q: Problem, s: SimdKernel): void {
  const { m, n, k, b, bOff, ldb, transB, c, cOff, ldc, alpha, beta } = q;
  const SR = s.rows;
  const mPad = roundUp(m, SR);
  if (mPad * k > A_PACK_MAX && m > SMC) {
    // Blocks of whole rows of C: each element's sum is the same.
    const rows = Math.max(SMC, Math.floor(A_PACK_MAX / k / SMC) * SMC);
    for (let lo = 0; lo < m; lo += rows) gemmSimd(subProblem(q, true, lo, Math.min(m, lo + rows)), s);
    return;
  }
  const ncBlock = Math.max(SC, Math.min(roundUp(n, SC), Math.floor(C_BLOCK / mPad / SC) * SC));
  const kcMax = Math.min(SKC, k);
  const nbMax = Math.min(SNB, ncBlock);
  // Wasm memory, in floats: all of op(A) packed (slice pc..pc+kc at mPad * pc; a cached constant A lies above the
  // scratch instead), op(A) as stored for packing; a slice of op(B) as stored, one chunk of it packed; C's column
  // block; the epilogue.
  const aPacked = 0;
  const aRaw = aPacked + (q.constA ? 0 : mPad * k);
  const bRaw = aRaw + (q.transA ? kcMax * mPad : Math.min(SMC, mPad) * k);
  const bPacked = bRaw + kcMax * ncBlock;
  const cBase = bPacked + kcMax * nbMax;
  // Bias and clamp given by the kernel as it stores the last slice: per block of SMC rows, [lo, hi, bias...].
  const inKernel = q.epi !== null && alpha === 1 && beta === 0;
  const epiBase = cBase + mPad * ncBlock;
  const epiStride = SMC + 2;
  // The im2col source's image, when B is made from it.
  const xRaw = epiBase + (inKernel ? Math.ceil(m / SMC) * epiStride : 0);
  const bytes = (xRaw + (q.im2col === null ? 0 : imageFloats(q.im2col))) * 4;
  reserveScratch(s, bytes);
  const aAt = q.constA ? cachedPackedA(q, s, aRaw) : aPacked;
  const heap = s.heap;
  if (inKernel) {
    const { bias, biasOffset, lo, hi } = q.epi!;
    for (let ic = 0; ic < m; ic += SMC) {
      const at = epiBase + (ic / SMC) * epiStride;
      heap[at] = lo, heap[at + 1] = hi;
      for (let i = 0; i < SMC; i++) heap[at + 2 + i] = bias === null || ic + i >= m ? 0 : bias[biasOffset + ic + i];
    }
  }
  if (!q.constA) packSimdA(q, s, aRaw, aPacked);
  if (q.im2col !== null) {
    heap.set(q.im2col.x.subarray(q.im2col.xOffset, q.im2col.xOffset + imageFloats(q.im2col)), xRaw);
  }
  for (let jc = 0; jc < n; jc += ncBlock) {
    const nc = Math.min(ncBlock, n - jc);
    const ncPad = roundUp(nc, SC);
    for (let pc = 0; pc < k; pc += SKC) {
      const kc = Math.min(SKC, k - pc);
      // The slice of op(B) as stored, zero padded: kc rows of ncPad floats, or ncPad rows of B^T of kc floats.
      const ld = transB ? kc : ncPad;
      if (transB) {
        stageRows(heap, bRaw, b, bOff + jc * ldb + pc, ldb, nc, kc, ld);
        heap.fill(0, bRaw + nc * ld, bRaw + ncPad * ld);
      } else {
        if (q.im2col === null) stageRows(heap, bRaw, b, bOff + pc * ldb + jc, ldb, kc, nc, ld);
        else im2colRows(s, q.im2col, xRaw, pc, kc, jc, nc, bRaw, ld);
        if (nc < ncPad) { for (let p = 0; p < kc; p++) heap.fill(0, bRaw + p * ld + nc, bRaw + (p + 1) * ld); }
      }
      // In chunks of columns small enough that packing and multiplying stay in the L2 cache.
      for (let jb = 0; jb < nc; jb += SNB) {
        const nbPad = roundUp(Math.min(SNB, nc - jb), SC);
        const src = (bRaw + (transB ? jb * ld : jb)) * 4;
        (transB ? s.packBT : s.packB)(kc, nbPad, src, ld * 4, bPacked * 4);
        for (let ic = 0; ic < m; ic += SMC) {
          const mcPad = roundUp(Math.min(SMC, m - ic), SR);
          const aPtr = (aAt + mPad * pc + ic * kc) * 4;
          const cPtr = (cBase + ic * ncPad + jb) * 4;
          const epi = inKernel && pc + kc === k ? (epiBase + (ic / SMC) * epiStride) * 4 : 0;
          s.block(mcPad, nbPad, kc, aPtr, bPacked * 4, cPtr, ncPad * 4, pc > 0 ? 1 : 0, epi);
        }
      }
    }
    for (let i = 0; i < m; i++) {
      const dst = cOff + i * ldc + jc;
      storeScaled(c, dst, heap, cBase + i * ncPad, nc, alpha, beta);
      if (q.epi !== null && !inKernel) finishRow(c, dst, c, dst, nc, q.epi, i);
    }
  }
}

/** Wasm memory of at least `bytes`, the view renewed when it grows. */
function ensureMemory(s: SimdKernel, bytes: number): void {
  if (s.memory.buffer.byteLength < bytes) {
    s.memory.grow(Math.ceil((bytes - s.memory.buffer.byteLength) / 65536));
    s.heap = new Float32Array(s.memory.buffer);
  }
}

/** Most floats of packed constant A kept in wasm memory between calls (128 MiB). */
export const PACKED_A_CACHE_FLOATS: number = 1 << 25;

/**
 * Packed constant A (see {@linkcode GemmArgs.constantA}) above the scratch of a call: per array, the float offset
 * of each packing by `aOffset, m, k, lda, transA`. Entries are appended from `base` (floats) to `top`; when the
 * scratch outgrows `base`, or the cache would exceed its bound, it is emptied and filled again.
 */
const packedCache = {
  base: 0,
  top: 0,
  entries: new WeakMap<FloatArray, Map<string, number>>(),
};

function clearPackedCache(base: number): void {
  packedCache.base = base;
  packedCache.top = base;
  packedCache.entries = new WeakMap();
}

/** Scratch of `bytes` at the start of wasm memory: packed constants held above it move (the cache is emptied). */
function reserveScratch(s: SimdKernel, bytes: number): void {
  if (bytes > packedCache.base * 4) clearPackedCache(Math.ceil(bytes / 65536) * 16384);
  ensureMemory(s, bytes);
}

/** Float offset in wasm memory of op(A) packed as `packSimdA` packs it, packed now (staged at `raw`) if not cached. */
function cachedPackedA(q: Problem, s: SimdKernel, raw: number): number {
  const floats = roundUp(q.m, s.rows) * q.k;
  const key = `${q.aOff},${q.m},${q.k},${q.lda},${+q.transA}`;
  const hit = packedCache.entries.get(q.a)?.get(key);
  if (hit !== undefined) return hit;
  if (packedCache.top + floats - packedCache.base > PACKED_A_CACHE_FLOATS) clearPackedCache(packedCache.base);
  const at = packedCache.top;
  ensureMemory(s, (at + floats) * 4);
  packSimdA(q, s, raw, at);
  packedCache.top = at + floats;
  let perArray = packedCache.entries.get(q.a);
  if (perArray === undefined) packedCache.entries.set(q.a, perArray = new Map());
  perArray.set(key, at);
  return at;
}

/**
 * Forget the packed constant matrices kept between {@linkcode gemm} calls (see {@linkcode GemmArgs.constantA}) and
 * the WebAssembly memory holding them, which the next float32 call allocates afresh.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gemm, releasePackedA } from "./gemm_kernel.ts";
 * const c = new Float32Array(1);
 * gemm({ m: 1, n: 1, k: 1, a: new Float32Array([2]), b: new Float32Array([3]), c, constantA: true });
 * releasePackedA();
 * assert.deepEqual([...c], [6]);
 * ```
 */
export function releasePackedA(): void {
  clearPackedCache(0);
  if (simdInstance) simdInstance = undefined;
}

/** B of {@linkcode gemmIm2colF32}: the im2col matrix of one image's channels (2-D), never stored. */
export interface Im2colSource extends WindowGeometry {
  /** Input storage, `[channels, ...inShape]` from `xOffset`. */
  x: Float32Array;
  /** Index of the first channel's first element. */
  xOffset: number;
  /** Input channels: B has `channels * kernel[0] * kernel[1]` rows, row `(c * KH + ky) * KW + kx`. */
  channels: number;
  /** Output position (row-major over `outShape`) of B's column 0. */
  p0: number;
}

const imageFloats = (src: Im2colSource): number => src.channels * src.inShape[0] * src.inShape[1];

/**
 * Rows `r0..r0+rows` of the im2col matrix, columns `j0..j0+cols`, to wasm memory at `dst` (floats, row stride `ld`),
 * from the image staged at `xAt`: one call of the kernel's `im2colRow` per row.
 */
function im2colRows(
  s: SimdKernel,
  src: Im2colSource,
  xAt: number,
  r0: number,
  rows: number,
  j0: number,
  cols: number,
  dst: number,
  ld: number,
): void {
  const [H, W] = src.inShape;
  const Wo = src.outShape[1];
  const [KH, KW] = src.kernel;
  const [sh, sw] = src.strides;
  const [dh, dw] = src.dilations;
  const [ph, pw] = src.padsBegin;
  const q0 = src.p0 + j0;
  const oh = Math.floor(q0 / Wo);
  const ow = q0 - oh * Wo;
  for (let r = r0; r < r0 + rows; r++) {
    const c = Math.floor(r / (KH * KW));
    const ky = Math.floor((r - c * KH * KW) / KW);
    const kx = r - (c * KH + ky) * KW;
    const from = (xAt + c * H * W) * 4;
    s.im2colRow(from, (dst + (r - r0) * ld) * 4, oh, ow, cols, H, W, Wo, sh, sw, ky * dh - ph, kx * dw - pw);
  }
}

/** Operands of {@linkcode gemmIm2colF32}: a float32 {@linkcode GemmArgs} whose B is an im2col matrix. */
export type Im2colGemmArgs = Omit<GemmArgs, "a" | "b" | "bOffset" | "ldb" | "transB" | "c" | "float64Accumulation"> & {
  /** Storage of A (`m x k`, or `k x m` when `transA`). */
  a: Float32Array;
  /** Storage of C. */
  c: Float32Array;
  /** B, `k x n`: columns `p0..p0+n` of this source's im2col matrix (`k` its row count). */
  im2col: Im2colSource;
};

/**
 * {@linkcode gemm} on float32 operands whose B is the im2col matrix of an
 * image (a convolution), each slice of B made by WebAssembly straight into the
 * kernel's staging area instead of stored and copied: the same products in
 * the same order as `gemm` on the stored matrix, so bit-identical to it.
 * Shared with the worker pool as `gemm` would share it, the image (not B)
 * staged for the workers. Returns false (nothing done) where WebAssembly SIMD
 * is unavailable; the caller then stores B and calls `gemm`.
 *
 * @param args Shapes and operands.
 * @returns Whether C was computed.
 *
 * @example A 1-channel 3x3 image, 2x2 kernel of ones
 * ```ts
 * import assert from "node:assert/strict";
 * import { gemmIm2colF32 } from "./gemm_kernel.ts";
 * const c = new Float32Array(4);
 * const im2col = {
 *   x: new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9]), xOffset: 0, channels: 1, p0: 0,
 *   inShape: [3, 3], outShape: [2, 2], kernel: [2, 2], strides: [1, 1], dilations: [1, 1], padsBegin: [0, 0],
 * };
 * if (gemmIm2colF32({ m: 1, n: 4, k: 4, a: new Float32Array([1, 1, 1, 1]), c, im2col })) {
 *   assert.deepEqual([...c], [12, 16, 24, 28]);
 * }
 * ```
 */
export function gemmIm2colF32(args: Im2colGemmArgs): boolean {
  const { m, n, k } = args;
  const s = simdKernel();
  if (s === null) return false;
  const transA = args.transA ?? false;
  const q: Problem = {
    m,
    n,
    k,
    a: args.a,
    aOff: args.aOffset ?? 0,
    lda: args.lda ?? (transA ? m : k),
    transA,
    b: args.c, // unused: B comes from im2col
    bOff: 0,
    ldb: n,
    transB: false,
    c: args.c,
    cOff: args.cOffset ?? 0,
    ldc: args.ldc ?? n,
    alpha: args.alpha ?? 1,
    beta: args.beta ?? 0,
    epi: args.epilogue ?? null,
    constA: args.constantA ?? false,
    im2col: args.im2col,
  };
  if (m > 0 && n > 0 && !gemmParallel(q, true)) gemmSimd(q, s);
  return true;
}

/**
 * Columns `p0..p0+len` of the im2col matrix of `src` (float32, 2-D), made by
 * WebAssembly, to `out` from `outOffset` (row-major, `len` per row). Returns
 * false (nothing written) where WebAssembly SIMD is unavailable.
 *
 * @param src The image and window geometry (`src.p0`: the first column).
 * @param len Columns.
 * @param out Destination storage.
 * @param outOffset Index of the first element written.
 * @returns Whether the matrix was written.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { im2colF32 } from "./gemm_kernel.ts";
 * const out = new Float32Array(4);
 * const src = {
 *   x: new Float32Array([1, 2, 3]), xOffset: 0, channels: 1, p0: 0,
 *   inShape: [1, 3], outShape: [1, 4], kernel: [1, 1], strides: [1, 1], dilations: [1, 1], padsBegin: [0, 1],
 * };
 * if (im2colF32(src, 4, out, 0)) assert.deepEqual([...out], [0, 1, 2, 3]);
 * ```
 */
export function im2colF32(src: Im2colSource, len: number, out: Float32Array, outOffset: number): boolean {
  const s = simdKernel();
  if (s === null) return false;
  const rows = src.channels * src.kernel[0] * src.kernel[1];
  const image = imageFloats(src);
  reserveScratch(s, (image + rows * len) * 4);
  s.heap.set(src.x.subarray(src.xOffset, src.xOffset + image), 0);
  im2colRows(s, src, 0, 0, rows, 0, len, image, len);
  out.set(s.heap.subarray(image, image + rows * len), outOffset);
  return true;
}

/**
 * All of op(A) packed into the kernel's panels at `packed` (floats): reduction slice `pc..pc+kc` at
 * `packed + mPad * pc`, panels of {@linkcode SimdKernel.rows} rows in it. Staged as stored at `raw` first: A in
 * blocks of up to SMC whole rows (zero rows up to a multiple of the panel), A^T one slice of rows at a time (zero
 * columns up to `mPad`).
 */
function packSimdA(q: Problem, s: SimdKernel, raw: number, packed: number): void {
  const { m, k, a, aOff, lda, transA } = q;
  const heap = s.heap;
  const mPad = roundUp(m, s.rows);
  if (transA) {
    for (let pc = 0; pc < k; pc += SKC) {
      const kc = Math.min(SKC, k - pc);
      stageRows(heap, raw, a, aOff + pc * lda, lda, kc, m, mPad);
      if (m < mPad) { for (let p = 0; p < kc; p++) heap.fill(0, raw + p * mPad + m, raw + (p + 1) * mPad); }
      s.packAT(kc, mPad, raw * 4, mPad * 4, (packed + mPad * pc) * 4);
    }
    return;
  }
  for (let ic = 0; ic < m; ic += SMC) {
    const mc = Math.min(SMC, m - ic);
    const mcPad = roundUp(mc, s.rows);
    stageRows(heap, raw, a, aOff + ic * lda, lda, mc, k);
    heap.fill(0, raw + mc * k, raw + mcPad * k);
    for (let pc = 0; pc < k; pc += SKC) {
      const kc = Math.min(SKC, k - pc);
      s.packA(kc, mcPad, (raw + pc) * 4, k * 4, (packed + mPad * pc + ic * kc) * 4);
    }
  }
}

/** `c[dst..dst+count] = alpha * sum + beta * c` for float32 sums (the one rounding of a float32 result to C). */
function storeScaled(
  c: FloatArray,
  dst: number,
  sums: Float32Array,
  src: number,
  count: number,
  alpha: number,
  beta: number,
): void {
  if (beta === 0) {
    if (alpha === 1) c.set(sums.subarray(src, src + count), dst);
    else for (let j = 0; j < count; j++) c[dst + j] = alpha * sums[src + j];
  } else {
    for (let j = 0; j < count; j++) c[dst + j] = alpha * sums[src + j] + beta * c[dst + j];
  }
}

/** Below this many multiply-adds a float32 GEMM stays on the calling thread (staging and waking a worker cost). */
const PARALLEL_MIN_MACS = 1 << 21;
/**
 * Fewest multiply-adds per staged float for a parallel GEMM: copying operands for a worker must be cheap beside
 * the product (a matrix-vector product, which moves as many floats as it multiplies, stays on one thread).
 */
const PARALLEL_MIN_MACS_PER_FLOAT = 32;
/** Parts per thread: more than one lets a thread that finishes early (on a busy machine) take over the rest. */
const PARTS_PER_THREAD = 2;

/** Whether an `m x k` by `k x n` product is worth sharing with the worker pool (and a pool is configured). */
function worthSplitting(m: number, n: number, k: number): boolean {
  const staged = m * k + k * n + m * n;
  return threadCount() >= 2 && m * n * k >= PARALLEL_MIN_MACS && m * n * k >= PARALLEL_MIN_MACS_PER_FLOAT * staged;
}

/** `[lo, hi)` of part `part` of `extent` rows (or columns) of C, cut at whole tiles of `unit`. */
export function partRange(part: number, parts: number, extent: number, unit: number): [number, number] {
  const tiles = Math.ceil(extent / unit);
  return [
    Math.floor((part * tiles) / parts) * unit,
    Math.min(extent, Math.floor(((part + 1) * tiles) / parts) * unit),
  ];
}

/** Rows `lo..hi` of C (or columns, unless `byRows`) as a problem of their own over the same storage. */
export function subGemm<P extends GemmProblem>(q: P, byRows: boolean, lo: number, hi: number): P {
  if (byRows) return { ...q, m: hi - lo, aOff: q.aOff + (q.transA ? lo : lo * q.lda), cOff: q.cOff + lo * q.ldc };
  return { ...q, n: hi - lo, bOff: q.bOff + (q.transB ? lo * q.ldb : lo), cOff: q.cOff + lo };
}

/** {@linkcode subGemm} with the epilogue's bias and the im2col source moved along. */
function subProblem(q: Problem, byRows: boolean, lo: number, hi: number): Problem {
  const sub = subGemm(q, byRows, lo, hi);
  if (byRows) return { ...sub, epi: q.epi === null ? null : { ...q.epi, biasOffset: q.epi.biasOffset + lo } };
  return { ...sub, im2col: q.im2col === null ? null : { ...q.im2col, p0: q.im2col.p0 + lo } };
}

/**
 * Copy `rows x cols` stored with row stride `ld` from `src` at `srcOff` to rows of stride `dstLd` (default `cols`)
 * in `dst` at `dstOff`: one copy when both are contiguous.
 */
function stageRows(
  dst: FloatArray,
  dstOff: number,
  src: FloatArray,
  srcOff: number,
  ld: number,
  rows: number,
  cols: number,
  dstLd = cols,
): void {
  if (ld === cols && dstLd === cols) dst.set(src.subarray(srcOff, srcOff + rows * cols), dstOff);
  else {
    for (let r = 0; r < rows; r++) dst.set(src.subarray(srcOff + r * ld, srcOff + r * ld + cols), dstOff + r * dstLd);
  }
}

/** Byte size of the elements of `x`: 4 for float32, 8 for float64. */
const elementBytes = (x: FloatArray): number => x.BYTES_PER_ELEMENT;
const roundUp8 = (bytes: number): number => Math.ceil(bytes / 8) * 8;

/** Index in a staged problem's parameters of the im2col flag and geometry (see {@linkcode im2colParams}). */
const IM2COL_PARAMS = 17;

/** `[1, channels, H, W, Ho, Wo, KH, KW, sh, sw, dh, dw, ph, pw, p0]`, or `[0]` without a source. */
function im2colParams(src: Im2colSource | null): number[] {
  if (src === null) return [0];
  const g = [src.inShape, src.outShape, src.kernel, src.strides, src.dilations, src.padsBegin].flat();
  return [1, src.channels, ...g, src.p0];
}

/** Layout of a problem staged densely in a worker arena: op(A), op(B) as stored, then C (`m x n`), each in its own type. */
interface Staging {
  /**
   * `[m, n, k, transA, transB, byRows, parts, unit, alpha, beta, simd, aBytes, bBytes, cBytes, epilogue, lo, hi]`,
   * then {@linkcode im2colParams}.
   */
  params: number[];
  problem: Problem;
}

function staging(params: number[] | Float64Array, arena: SharedArrayBuffer): Staging {
  const [m, n, k, transA, transB, , , , alpha, beta, , aBytes, bBytes, cBytes, epilogue, lo, hi] = params;
  const view = (bytes: number, offset: number, length: number): FloatArray =>
    bytes === 8 ? new Float64Array(arena, offset, length) : new Float32Array(arena, offset, length);
  const bOffset = roundUp8(m * k * aBytes);
  // B staged as its im2col source's image (float32), when it has one.
  const [hasIm2col, channels, H, W, Ho, Wo, KH, KW, sh, sw, dh, dw, ph, pw, p0] = params.slice(IM2COL_PARAMS);
  const bFloats = hasIm2col === 1 ? channels * H * W : k * n;
  const cOffset = bOffset + roundUp8(bFloats * bBytes);
  const problem: Problem = {
    m,
    n,
    k,
    a: view(aBytes, 0, m * k),
    aOff: 0,
    lda: transA ? m : k,
    transA: transA === 1,
    b: view(bBytes, bOffset, bFloats),
    bOff: 0,
    ldb: transB ? k : n,
    transB: transB === 1,
    c: view(cBytes, cOffset, m * n),
    cOff: 0,
    ldc: n,
    alpha,
    beta,
    // The epilogue's bias (one per row of C) is staged after C.
    epi: epilogue === 1 ? { bias: view(cBytes, cOffset + roundUp8(m * n * cBytes), m), biasOffset: 0, lo, hi } : null,
    // The arena is staged afresh per call: nothing to keep.
    constA: false,
    im2col: hasIm2col !== 1 ? null : {
      x: new Float32Array(arena, bOffset, bFloats),
      xOffset: 0,
      channels,
      inShape: [H, W],
      outShape: [Ho, Wo],
      kernel: [KH, KW],
      strides: [sh, sw],
      dilations: [dh, dw],
      padsBegin: [ph, pw],
      p0,
    },
  };
  return { params: [...params], problem };
}

/** The kernel a part runs with: the SIMD kernel, or the JavaScript float64 one. */
function runPart(q: Problem, simd: boolean, byRows: boolean, lo: number, hi: number): void {
  if (hi <= lo) return;
  const sub = subProblem(q, byRows, lo, hi);
  if (!simd) return gemmScalar(sub);
  const s = simdKernel();
  if (s === null) throw new Error("gemm worker: WebAssembly SIMD is unavailable");
  gemmSimd(sub, s);
}

/**
 * The worker side of a parallel GEMM: part `part` of the problem staged in
 * the arena (see `gemmParallel`), computed with the same kernel, scales and
 * summation order as on the calling thread, written to the staged C.
 *
 * @example Part 1 of 2 (rows 4..8) of an 8x1x1 float64 product staged by hand
 * ```ts
 * import assert from "node:assert/strict";
 * import { gemmPartTask } from "./gemm_kernel.ts";
 * const arena = new SharedArrayBuffer(8 * (8 + 1 + 8));
 * const f = new Float64Array(arena);
 * f.fill(2, 0, 8); // A: 8x1
 * f[8] = 3; // B: 1x1
 * // [m, n, k, transA, transB, byRows, parts, unit, alpha, beta, simd, aBytes, bBytes, cBytes]
 * gemmPartTask.run(1, new Float64Array([8, 1, 1, 0, 0, 1, 2, 4, 1, 0, 0, 8, 8, 8]), arena);
 * assert.deepEqual([...f.subarray(9)], [0, 0, 0, 0, 6, 6, 6, 6]);
 * ```
 */
export const gemmPartTask: ParallelTask = {
  id: 0,
  run(part: number, params: Float64Array, arena: SharedArrayBuffer): void {
    const { problem: q } = staging(params, arena);
    const [byRows, parts, unit, simd] = [params[5] === 1, params[6], params[7], params[10] === 1];
    const [lo, hi] = partRange(part, parts, byRows ? q.m : q.n, unit);
    runPart(q, simd, byRows, lo, hi);
  },
};

/**
 * A GEMM split over the worker pool, or false (nothing done) when the problem
 * is too small, too lopsided to pay for staging, or no worker is available.
 * Operands (and C, when `beta` is not 0) are staged once in the shared arena
 * in their own types; the calling thread computes its parts straight on the
 * caller's arrays, workers on the arena, whose C parts are then copied back.
 */
function gemmParallel(q: Problem, simd: boolean): boolean {
  const { m, n, k } = q;
  const threads = threadCount();
  if (!worthSplitting(m, n, k)) return false;
  const byRows = m >= n;
  const unit = byRows ? (simd ? SIMD_ROWS : MR) : (simd ? SC : NR);
  const parts = Math.min(Math.ceil((byRows ? m : n) / unit), threads * PARTS_PER_THREAD, MAX_PARTS);
  if (parts < 2) return false;
  const src = q.im2col;
  const [aBytes, bBytes, cBytes] = [elementBytes(q.a), src === null ? elementBytes(q.b) : 4, elementBytes(q.c)];
  const extent = byRows ? m : n;
  const epiBytes = q.epi === null ? 0 : m * cBytes;
  const bFloats = src === null ? k * n : imageFloats(src);
  const bytes = roundUp8(m * k * aBytes) + roundUp8(bFloats * bBytes) + roundUp8(m * n * cBytes) + epiBytes;
  const limit = arenaLimitBytes();
  if (bytes > limit) {
    if (src !== null) return false; // the image is not split in slabs: one thread
    // Slabs of whole rows (or columns) of C whose staging fits the arena, each shared out in turn.
    const shared = byRows ? k * n * bBytes : m * k * aBytes;
    const perLine = byRows ? k * aBytes + n * cBytes + (q.epi === null ? 0 : cBytes) : k * bBytes + m * cBytes;
    const lines = Math.floor((limit - shared - 16) / perLine / unit) * unit;
    if (lines < 2 * unit) return false;
    for (let lo = 0; lo < extent; lo += lines) {
      const hi = Math.min(extent, lo + lines);
      if (!gemmParallel(subProblem(q, byRows, lo, hi), simd)) runPart(q, simd, byRows, lo, hi);
    }
    return true;
  }
  const epi = q.epi;
  const params = [m, n, k, +q.transA, +q.transB, +byRows, parts, unit, q.alpha, q.beta, +simd, aBytes, bBytes, cBytes];
  params.push(epi === null ? 0 : 1, epi?.lo ?? 0, epi?.hi ?? 0, ...im2colParams(src));
  const arena = parallelArena(bytes);
  if (arena === null) return false;
  const t = staging(params, arena).problem;
  stageRows(t.a, 0, q.a, q.aOff, q.lda, q.transA ? k : m, q.transA ? m : k);
  if (src !== null) t.b.set(src.x.subarray(src.xOffset, src.xOffset + bFloats));
  else stageRows(t.b, 0, q.b, q.bOff, q.ldb, q.transB ? n : k, q.transB ? k : n);
  if (q.beta !== 0) stageRows(t.c, 0, q.c, q.cOff, q.ldc, m, n);
  if (epi !== null) {
    if (epi.bias === null) t.epi!.bias!.fill(0);
    else t.epi!.bias!.set(epi.bias.subarray(epi.biasOffset, epi.biasOffset + m));
  }
  const byWorker = runParts(gemmPartTask, params, parts, (part) => {
    const [lo, hi] = partRange(part, parts, extent, unit);
    runPart(q, simd, byRows, lo, hi);
  });
  for (let part = 0; part < parts; part++) {
    if (!byWorker[part]) continue;
    const [lo, hi] = partRange(part, parts, extent, unit);
    const [i0, i1, j0, j1] = byRows ? [lo, hi, 0, n] : [0, m, lo, hi];
    for (let i = i0; i < i1; i++) q.c.set(t.c.subarray(i * n + j0, i * n + j1), q.cOff + i * q.ldc + j0);
  }
  return true;
}
