/**
 * Dense linear algebra for low-rank decomposition, the big products on the
 * GEMM kernels (float32 SIMD, float64 SIMD `ir/ops/wasm_gemm64.ts`): exact spectrum and triplets from the small side's Gram matrix
 * and a float64 symmetric eigensolver (layers up to about 1024 on their small
 * side), randomized truncated SVD (Halko, Martinsson and Tropp 2011,
 * Algorithms 4.4 and 5.1) at a given rank and grown by blocks to an energy
 * target (randQB_EI) for larger ones, QR by Cholesky-QR2 (Gram-Schmidt as the
 * fallback), Cholesky, and the reference dense SVD (ml-matrix's Golub-Kahan)
 * the fast paths are tested against. Matrices are row-major typed arrays.
 * @module
 */
import { Matrix, SingularValueDecomposition } from "ml-matrix";
import { type FloatArray, gemm } from "../ir/ops/gemm_kernel.ts";
import { type EigenKernels, eigenKernels } from "../ir/ops/wasm_eigen.ts";

export type { FloatArray } from "../ir/ops/gemm_kernel.ts";

/** A thin SVD `A ≈ U diag(s) Vt`, row-major: `u` is `m x k`, `vt` is `k x n`, `s` descending. */
export interface Svd {
  /** Rows of A. */
  readonly m: number;
  /** Columns of A. */
  readonly n: number;
  /** Singular triplets kept. */
  readonly k: number;
  /** Left singular vectors, `m x k` row-major. */
  readonly u: Float64Array;
  /** Singular values, descending. */
  readonly s: Float64Array;
  /** Right singular vectors, `k x n` row-major. */
  readonly vt: Float64Array;
}

/** Options of {@linkcode randomizedSvd}. */
export interface RandomizedSvdOptions {
  /** Extra sketch columns beyond `k` (default 10). */
  oversample?: number;
  /** Power (subspace) iterations, each re-orthonormalized (default 2). */
  powerIterations?: number;
  /** PRNG seed of the Gaussian sketch (default 1). */
  seed?: number;
}

/**
 * Exact thin SVD of an `m x n` row-major matrix (all `min(m, n)` triplets).
 * Cost O(m n min(m, n)) in JavaScript: meant for layers up to about 1000 x 1000.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exactSvd } from "./linalg.ts";
 * const { s } = exactSvd(new Float64Array([3, 0, 0, 4]), 2, 2);
 * assert.deepEqual([...s].map((x) => Math.round(x * 1e9) / 1e9), [4, 3]);
 * ```
 */
export function exactSvd(a: ArrayLike<number>, m: number, n: number): Svd {
  const k = Math.min(m, n);
  // ml-matrix's Golub-Kahan wants m >= n; decompose the transpose otherwise (A^T = V S U^T).
  const transposed = m < n;
  const rows = transposed ? n : m;
  const cols = transposed ? m : n;
  const mat = new Matrix(rows, cols);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      if (transposed) mat.set(j, i, a[i * n + j]);
      else mat.set(i, j, a[i * n + j]);
    }
  }
  const svd = new SingularValueDecomposition(mat, { autoTranspose: false, computeLeftSingularVectors: true });
  const left = svd.leftSingularVectors;
  const right = svd.rightSingularVectors;
  const sv = svd.diagonal;
  const order = [...Array(k).keys()].sort((x, y) => sv[y] - sv[x]);
  const u = new Float64Array(m * k);
  const vt = new Float64Array(k * n);
  const s = new Float64Array(k);
  order.forEach((src, dst) => {
    s[dst] = Math.max(0, sv[src]);
    const uu = transposed ? right : left;
    const vv = transposed ? left : right;
    for (let i = 0; i < m; i++) u[i * k + dst] = uu.get(i, src);
    for (let j = 0; j < n; j++) vt[dst * n + j] = vv.get(j, src);
  });
  return { m, n, k, u, s, vt };
}

/**
 * Seeded standard normal generator (mulberry32 uniform + Box-Muller), so a
 * randomized decomposition is reproducible run to run.
 */
export function gaussianSource(seed: number): () => number {
  let state = seed >>> 0;
  let spare = NaN;
  const uniform = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return () => {
    if (!Number.isNaN(spare)) {
      const v = spare;
      spare = NaN;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const theta = 2 * Math.PI * uniform();
    spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  };
}

/**
 * Orthonormalize the columns of the `m x l` row-major matrix `y`: `Y = Q R`,
 * `Q` in `y`'s precision (float32 or float64), `R` float64 upper triangular.
 * First by {@linkcode choleskyQr} (products on the GEMM kernel); where that
 * fails (Y numerically rank deficient), by classical Gram-Schmidt applied twice
 * in float64 ("twice is enough", Giraud et al. 2005), where a column in the
 * span of the previous ones is replaced by a fresh random direction and gets a
 * zero diagonal in R.
 *
 * @returns `q` (`m x l` row-major) and `r` (`l x l` upper triangular, row-major).
 */
export function orthonormalize(y: FloatArray, m: number, l: number, seed = 7): { q: FloatArray; r: Float64Array } {
  return choleskyQr(y, m, l) ?? gramSchmidt(y, m, l, seed, y instanceof Float32Array);
}

/** Twice-iterated classical Gram-Schmidt in float64 with random continuation past dependent columns. */
function gramSchmidt(
  y: ArrayLike<number>,
  m: number,
  l: number,
  seed: number,
  f32: boolean,
): { q: FloatArray; r: Float64Array } {
  // Column-major work copy: each column contiguous for the dot products and updates.
  const cols = new Float64Array(m * l);
  for (let i = 0; i < m; i++) for (let j = 0; j < l; j++) cols[j * m + i] = y[i * l + j];
  const r = new Float64Array(l * l);
  const coef = new Float64Array(l);
  const random = gaussianSource(seed);
  for (let j = 0; j < l; j++) {
    const off = j * m;
    let norm0 = 0;
    for (let i = 0; i < m; i++) norm0 += cols[off + i] * cols[off + i];
    norm0 = Math.sqrt(norm0);
    let replaced = false;
    for (let attempt = 0; attempt < 3; attempt++) {
      for (let pass = 0; pass < 2; pass++) {
        for (let p = 0; p < j; p++) {
          const po = p * m;
          let d = 0;
          for (let i = 0; i < m; i++) d += cols[po + i] * cols[off + i];
          coef[p] = d;
        }
        for (let p = 0; p < j; p++) {
          const po = p * m;
          const d = coef[p];
          for (let i = 0; i < m; i++) cols[off + i] -= d * cols[po + i];
          if (!replaced) r[p * l + j] += d;
        }
      }
      let norm = 0;
      for (let i = 0; i < m; i++) norm += cols[off + i] * cols[off + i];
      norm = Math.sqrt(norm);
      if (norm > 1e-10 * Math.max(norm0, 1e-300) && norm > 1e-300) {
        if (!replaced) r[j * l + j] = norm;
        const inv = 1 / norm;
        for (let i = 0; i < m; i++) cols[off + i] *= inv;
        break;
      }
      // Dependent column: continue the basis with a random direction (R keeps the zero diagonal).
      replaced = true;
      for (let i = 0; i < m; i++) cols[off + i] = random();
      norm0 = Math.sqrt(m);
    }
  }
  const q = f32 ? new Float32Array(m * l) : new Float64Array(m * l);
  for (let j = 0; j < l; j++) for (let i = 0; i < m; i++) q[i * l + j] = cols[j * m + i];
  return { q, r };
}

/**
 * CholeskyQR2 (Yamamoto et al. 2015) of the `m x l` row-major matrix `y`
 * (`m >= l`): twice `G = Y^T Y = L L^T`, `Y <- Y L^-T`, the Gram matrix and the
 * triangular update on the GEMM kernel (float32 SIMD for float32 `y`: Q is then
 * orthonormal to float32 precision, about 1e-6). When the first Cholesky fails
 * (condition number beyond about `ε^-1/2`), a shifted first pass
 * `G + s I` with `s = 11 (m l + l (l + 1)) ε ||Y||_F^2` (Fukaya et al. 2020,
 * shifted CholeskyQR3) brings it within reach of the two plain passes.
 *
 * @returns `Y = Q R` with `R` upper triangular (float64), or null when Y is
 * numerically rank deficient (a later Cholesky fails too).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { choleskyQr } from "./linalg.ts";
 * const { q, r } = choleskyQr(new Float64Array([3, 1, 4, 1, 0, 1]), 3, 2)!;
 * assert.ok(Math.abs(q[0] * q[1] + q[2] * q[3] + q[4] * q[5]) < 1e-12);
 * assert.ok(Math.abs(r[0] - 5) < 1e-12); // norm of the first column (3, 4, 0)
 * ```
 */
export function choleskyQr(y: FloatArray, m: number, l: number): { q: FloatArray; r: Float64Array } | null {
  const f32 = y instanceof Float32Array;
  const make = (len: number): FloatArray => (f32 ? new Float32Array(len) : new Float64Array(len));
  const g = make(l * l);
  const r = new Float64Array(l * l);
  for (let i = 0; i < l; i++) r[i * l + i] = 1;
  const eps = f32 ? 2 ** -24 : 2 ** -53;
  let q = y;
  let shift = 0;
  for (let pass = 0; pass < (shift > 0 ? 3 : 2); pass++) {
    gemm({ m: l, n: l, k: m, a: q, transA: true, b: q, c: g });
    const gram = Float64Array.from(g);
    const shifted = pass === 0 && shift > 0;
    if (shifted) { for (let i = 0; i < l; i++) gram[i * l + i] += shift; }
    const lower = wellConditionedCholesky(gram, l, 100 * eps);
    if (lower === null && pass === 0 && shift === 0) {
      // Too ill-conditioned for plain CholeskyQR2: shift the first pass and take two plain ones after.
      let fro = 0;
      for (let i = 0; i < l; i++) fro += gram[i * l + i];
      shift = 11 * (m * l + l * (l + 1)) * eps * fro;
      pass--;
      continue;
    }
    if (lower === null) return null;
    // Q <- Q L^-T, R <- L^T R.
    const inv = lowerInverse(lower, l);
    const next = make(m * l);
    gemm({ m, n: l, k: l, a: q, b: f32 ? Float32Array.from(inv) : inv, transB: true, c: next });
    q = next;
    const rr = new Float64Array(l * l);
    gemm({ m: l, n: l, k: l, a: lower, transA: true, b: r, c: rr });
    r.set(rr);
  }
  for (let i = 0; i < q.length; i++) if (!Number.isFinite(q[i])) return null;
  return { q, r };
}

/**
 * Cholesky factor of the Gram matrix `g`, or null when a pivot is not positive
 * or below `tol` times its diagonal entry (a column nearly in the span of the previous ones).
 */
function wellConditionedCholesky(g: Float64Array, n: number, tol: number): Float64Array | null {
  let lower: Float64Array;
  try {
    lower = cholesky(g, n);
  } catch {
    return null;
  }
  for (let j = 0; j < n; j++) if (!(lower[j * n + j] ** 2 > tol * g[j * n + j])) return null;
  return lower;
}

/** Inverse of a lower triangular `n x n` row-major matrix (lower triangular), by forward substitution. */
function lowerInverse(l: Float64Array, n: number): Float64Array {
  const x = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    x[j * n + j] = 1 / l[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let p = j; p < i; p++) s -= l[i * n + p] * x[p * n + j];
      x[i * n + j] = s / l[i * n + i];
    }
  }
  return x;
}

/**
 * Randomized truncated SVD of an `m x n` row-major matrix: the top `k`
 * triplets. A Gaussian sketch `Y = A Ω` (`l = k + oversample` columns) and
 * `powerIterations` rounds of `Y = A (A^T Q)` (orthonormalized after each
 * product, Halko et al. Algorithm 4.4) give a basis `Q` of A's dominant range;
 * then `B^T = A^T Q` is factored as `Q2 R` and the small `l x l` matrix R gets
 * an SVD from its Gram matrix ({@linkcode gramSpectrum}): `A ≈ Q B = (Q V_R) S (Q2 U_R)^T`.
 * The large products and the Cholesky-QR run on the GEMM kernel (WASM SIMD
 * float32 when `a` is a Float32Array, Q then orthonormal to float32 precision);
 * R and its SVD are float64.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { randomizedSvd } from "./linalg.ts";
 * const a = new Float32Array(40 * 30);
 * for (let i = 0; i < 40; i++) for (let j = 0; j < 30; j++) a[i * 30 + j] = (i + 1) * (j % 3 === 0 ? 1 : 0.5);
 * const { s } = randomizedSvd(a, 40, 30, 2);
 * assert.ok(s[1] / s[0] < 1e-5); // rank one
 * ```
 */
export function randomizedSvd(
  a: FloatArray,
  m: number,
  n: number,
  k: number,
  options: RandomizedSvdOptions = {},
): Svd {
  const minDim = Math.min(m, n);
  k = Math.max(1, Math.min(k, minDim));
  const l = Math.min(minDim, k + (options.oversample ?? 10));
  const iterations = options.powerIterations ?? 2;
  const f32 = a instanceof Float32Array;
  const make = (len: number): FloatArray => (f32 ? new Float32Array(len) : new Float64Array(len));
  const random = gaussianSource(options.seed ?? 1);
  const omega = make(n * l);
  for (let i = 0; i < omega.length; i++) omega[i] = random();
  // Y = A Ω (m x l).
  const y = make(m * l);
  gemm({ m, n: l, k: n, a, b: omega, c: y });
  let q = orthonormalize(y, m, l).q;
  const z = make(n * l);
  for (let it = 0; it < iterations; it++) {
    // Z = A^T Q (n x l), orthonormalized; Y = A Z, orthonormalized.
    gemm({ m: n, n: l, k: m, a, transA: true, b: q, c: z });
    const qz = orthonormalize(z, n, l, 11 + it).q;
    gemm({ m, n: l, k: n, a, b: qz, c: y });
    q = orthonormalize(y, m, l, 23 + it).q;
  }
  // B^T = A^T Q (n x l) = Q2 R.
  gemm({ m: n, n: l, k: m, a, transA: true, b: q, c: z });
  return svdOfQb(q, l, z, m, n, l, k);
}

/**
 * The leading `k` triplets of `A ≈ Q B` from `Q` (`m x l` orthonormal columns,
 * row stride `ldq`) and `B^T` (`n x l`): `B^T = Q2 R`, and `R = Ur S Vr^T` gives
 * `B = Vr S (Q2 Ur)^T`, so `A ≈ (Q Vr) S (Q2 Ur)^T`. Products in the operands'
 * precision (float32: SIMD kernel), R's SVD in float64 from its Gram matrix.
 */
function svdOfQb(q: FloatArray, ldq: number, bt: FloatArray, m: number, n: number, l: number, k: number): Svd {
  const f32 = bt instanceof Float32Array;
  const { q: q2, r } = orthonormalize(bt, n, l, 31);
  const small = gramSpectrum(r, l, l).triplets(l);
  const narrow = (x: Float64Array): FloatArray => (f32 ? Float32Array.from(x) : x);
  // Q Vr: Vr = small.vt^T (l x l), its first k columns.
  const u = f32 ? new Float32Array(m * k) : new Float64Array(m * k);
  gemm({ m, n: k, k: l, a: q, lda: ldq, b: narrow(small.vt), ldb: l, transB: true, c: u });
  // (Q2 Ur)^T = Ur^T Q2^T: k x n.
  const vt = f32 ? new Float32Array(k * n) : new Float64Array(k * n);
  gemm({ m: k, n, k: l, a: narrow(small.u), lda: l, transA: true, b: q2, ldb: l, transB: true, c: vt });
  const wide = (x: FloatArray): Float64Array => (x instanceof Float64Array ? x : Float64Array.from(x));
  return { m, n, k, u: wide(u), s: small.s.slice(0, k), vt: wide(vt) };
}

/**
 * Cholesky factor `L` (lower triangular, row-major) of a symmetric positive
 * definite `n x n` matrix: `C = L L^T`.
 *
 * @throws {Error} When C is not positive definite (a pivot is not positive).
 */
export function cholesky(c: ArrayLike<number>, n: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = c[j * n + j];
    for (let p = 0; p < j; p++) d -= l[j * n + p] * l[j * n + p];
    if (!(d > 0)) throw new Error(`matrix is not positive definite (pivot ${j} is ${d})`);
    const ljj = Math.sqrt(d);
    l[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = c[i * n + j];
      for (let p = 0; p < j; p++) s -= l[i * n + p] * l[j * n + p];
      l[i * n + j] = s / ljj;
    }
  }
  return l;
}

/**
 * Solve `L L^T X = B` in place for `B (n x m)`, row-major, given the Cholesky factor `L (n x n)` from
 * {@linkcode cholesky}: forward then back substitution, column by column of `B`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cholesky, solveCholesky } from "./linalg.ts";
 * const x = solveCholesky(cholesky([4, 2, 2, 3], 2), new Float64Array([6, 5]), 2, 1);
 * assert.deepEqual([...x].map((v) => Math.round(v * 1e9) / 1e9), [1, 1]);
 * ```
 */
export function solveCholesky(l: Float64Array, b: Float64Array, n: number, m: number): Float64Array {
  for (let col = 0; col < m; col++) {
    for (let i = 0; i < n; i++) {
      let s = b[i * m + col];
      for (let k = 0; k < i; k++) s -= l[i * n + k] * b[k * m + col];
      b[i * m + col] = s / l[i * n + i];
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = b[i * m + col];
      for (let k = i + 1; k < n; k++) s -= l[k * n + i] * b[k * m + col];
      b[i * m + col] = s / l[i * n + i];
    }
  }
  return b;
}

/**
 * Solve `X L = B` for X, with L lower triangular `n x n` and B `rows x n`
 * (row-major): X = B L^{-1}, used to undo the whitening of a factor.
 */
export function solveLowerRight(b: Float64Array, rows: number, l: Float64Array, n: number): Float64Array {
  const x = new Float64Array(b);
  // Row r: x L = b  =>  for j from n-1 down: x_j = (b_j - sum_{i>j} x_i L[i][j]) / L[j][j].
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    for (let j = n - 1; j >= 0; j--) {
      let s = x[o + j];
      for (let i = j + 1; i < n; i++) s -= x[o + i] * l[i * n + j];
      x[o + j] = s / l[j * n + j];
    }
  }
  return x;
}

/** Smaller side up to which {@linkcode truncatedSvd} takes exact triplets from the Gram matrix. */
const GRAM_TRIPLETS_LIMIT = 1024;
/** Smallest `s_k / s_1` for Gram-matrix triplets in {@linkcode truncatedSvd} (below: the dense SVD). */
const GRAM_TRIPLETS_RANGE = 1e-3;

/**
 * Truncated SVD with the method chosen by size: exact when the matrix is small
 * (`m * n <= exactLimit` or `min(m, n) <= 256`) or `k >= min(m, n) / 2`,
 * randomized otherwise. Exact triplets come from the small side's Gram matrix
 * ({@linkcode gramSpectrum}, many times faster than the dense SVD) when that
 * side is at most 1024 and `s_k >= 1e-3 s_1`: each value is then within about
 * `min(m, n) ε s_1^2 / s_i <= 1e-10 s_1` of the dense SVD's, the vectors
 * orthonormal to about `ε (s_1 / s_k)^2 <= 1e-10`, and `U_k S_k V_k^T` the
 * optimal rank-k approximation; otherwise (values near zero, whose vectors the
 * Gram matrix cannot resolve) by {@linkcode exactSvd}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { truncatedSvd } from "./linalg.ts";
 * const { s } = truncatedSvd(new Float64Array([3, 0, 0, 0, 4, 0]), 2, 3, 1);
 * assert.ok(Math.abs(s[0] - 4) < 1e-12);
 * ```
 */
export function truncatedSvd(a: FloatArray, m: number, n: number, k: number, exactLimit = 1 << 20): Svd {
  const small = Math.min(m, n);
  k = Math.max(1, Math.min(k, small));
  if (m * n <= exactLimit || small <= 256 || k >= small / 2) {
    if (small <= GRAM_TRIPLETS_LIMIT) {
      const spectrum = gramSpectrum(a, m, n, false);
      if (spectrum.s[k - 1] >= GRAM_TRIPLETS_RANGE * spectrum.s[0]) return spectrum.triplets(k);
    }
    const full = exactSvd(a, m, n);
    return k >= full.k ? full : truncate(full, k);
  }
  return randomizedSvd(a, m, n, k);
}

/** The first `k` triplets of an SVD. */
export function truncate(svd: Svd, k: number): Svd {
  const { m, n } = svd;
  k = Math.min(k, svd.k);
  const u = new Float64Array(m * k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) u[i * k + j] = svd.u[i * svd.k + j];
  return { m, n, k, u, s: svd.s.slice(0, k), vt: svd.vt.slice(0, k * n) };
}

/** Eigen-decomposition of a symmetric matrix: `C = W^T diag(values) W`. */
export interface SymmetricEigen {
  /** Eigenvalues, descending. */
  readonly values: Float64Array;
  /** Eigenvectors as the rows of an `n x n` row-major matrix (row i belongs to `values[i]`); empty when not asked for. */
  readonly vectors: Float64Array;
}

/**
 * Eigenvalues (descending) and, unless `vectors` is false, orthonormal
 * eigenvectors of a symmetric `n x n` row-major matrix, in float64:
 * Householder tridiagonalization then implicit QL with Wilkinson shifts
 * (EISPACK tred2/tql2, as in JAMA), with the transforms stored so that every
 * inner loop runs along a contiguous row, on the f64x2 loops of
 * `ir/ops/wasm_eigen.ts`; the QL rotations are recorded and applied to the
 * vectors in batches, a slice of columns at a time (each column sees them in
 * the same order, so the result is that of applying them one by one). Only
 * the lower triangle is read.
 * Each eigenvector's largest-magnitude component is positive (a fixed sign).
 * Backward stable: each eigenvalue is within a few `n ε ||C||_2` of the exact one.
 * Cost about `4/3 n^3` flops for the values alone, about `9 n^3` with the vectors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { symmetricEigen } from "./linalg.ts";
 * const { values, vectors } = symmetricEigen(new Float64Array([2, 1, 1, 2]), 2);
 * assert.deepEqual([...values].map((x) => Math.round(x * 1e9) / 1e9), [3, 1]);
 * assert.ok(Math.abs(Math.abs(vectors[0]) - Math.SQRT1_2) < 1e-12); // (1, 1) / sqrt(2)
 * ```
 */
export function symmetricEigen(c: ArrayLike<number>, n: number, vectors = true): SymmetricEigen {
  const ws = eigenWorkspace(n);
  const { w, d } = ws;
  // w[j * n + k] holds V[k][j] of EISPACK's V (initially C, symmetric): V's columns are w's rows.
  for (let j = 0; j < n; j++) for (let k = j; k < n; k++) w[j * n + k] = c[k * n + j];
  tridiagonalize(ws, n, vectors);
  tridiagonalQl(ws, n, vectors);
  const order = [...d.keys()].sort((x, y) => d[y] - d[x]);
  const values = Float64Array.from(order, (i) => d[i]);
  if (!vectors) return { values, vectors: new Float64Array(0) };
  const out = new Float64Array(n * n);
  order.forEach((src, dst) => {
    // Sign convention: the largest-magnitude component (first on ties) is positive.
    const row = w.subarray(src * n, src * n + n);
    let big = 0;
    for (let k = 1; k < n; k++) if (Math.abs(row[k]) > Math.abs(row[big])) big = k;
    const sign = row[big] < 0 ? -1 : 1;
    for (let k = 0; k < n; k++) out[dst * n + k] = sign * row[k];
  });
  return { values, vectors: out };
}

/** Plane rotations of the QL iteration recorded before they are applied to the vectors, per batch. */
const ROTATION_BATCH = 4096;
/** Columns of V's rows rotated per pass over a batch (even): 32 doubles of every row stay in cache. */
const ROTATION_COLUMNS = 32;

/**
 * The eigensolver's working arrays in the kernels' memory: `w` (`n x n`), `d`, `e` (`n`) and the recorded
 * rotations (`ROTATION_BATCH` triples), with their byte addresses.
 */
interface EigenWorkspace {
  kernels: EigenKernels;
  w: Float64Array;
  d: Float64Array;
  e: Float64Array;
  rots: Float64Array;
  /** Byte addresses of w, d, e and rots. */
  at: { w: number; d: number; e: number; rots: number };
  /** Rotations recorded in `rots` and not yet applied, and room for them (at least one sweep's, `n - 1`). */
  pending: number;
  capacity: number;
}

function eigenWorkspace(n: number): EigenWorkspace {
  const kernels = eigenKernels();
  const capacity = Math.max(ROTATION_BATCH, n);
  const at = { w: 0, d: 8 * n * n, e: 8 * (n * n + n), rots: 8 * (n * n + 2 * n) };
  const bytes = at.rots + 8 * 3 * capacity;
  const memory = kernels.memory;
  if (memory.buffer.byteLength < bytes) memory.grow(Math.ceil((bytes - memory.buffer.byteLength) / 65536));
  const view = (byte: number, length: number): Float64Array => new Float64Array(memory.buffer, byte, length);
  const ws = { kernels, w: view(at.w, n * n), d: view(at.d, n), e: view(at.e, n), at, pending: 0, capacity };
  return { ...ws, rots: view(at.rots, 3 * capacity) };
}

/**
 * EISPACK tred2 on the transposed storage `w` (lower triangle of V in w's upper triangle), its row
 * operations (the symmetric matrix-vector product, the rank-2 update, the accumulation of the transforms)
 * on the SIMD kernels.
 */
function tridiagonalize(ws: EigenWorkspace, n: number, vectors: boolean): void {
  const { w, d, e, kernels: kn, at } = ws;
  const wAt = (row: number, col: number): number => at.w + 8 * (row * n + col);
  for (let j = 0; j < n; j++) d[j] = w[j * n + n - 1];
  for (let i = n - 1; i > 0; i--) {
    let scale = 0;
    let h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]);
    if (scale === 0) {
      e[i] = d[i - 1];
      for (let j = 0; j < i; j++) {
        d[j] = w[j * n + i - 1];
        w[j * n + i] = 0;
        w[i * n + j] = 0;
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      let f = d[i - 1];
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      e.fill(0, 0, i);
      for (let j = 0; j < i; j++) {
        f = d[j];
        w[i * n + j] = f;
        const rest = kn.symvRow(wAt(j, j + 1), at.d + 8 * (j + 1), at.e + 8 * (j + 1), f, i - j - 1);
        e[j] += w[j * n + j] * f + rest;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] -= hh * d[j];
      for (let j = 0; j < i; j++) {
        kn.rank2Row(wAt(j, j), at.e + 8 * j, at.d + 8 * j, d[j], e[j], i - j);
        d[j] = w[j * n + i - 1];
        w[j * n + i] = 0;
      }
    }
    d[i] = h;
  }
  if (vectors) {
    // Accumulate the Householder transforms into V.
    for (let i = 0; i < n - 1; i++) {
      w[i * n + n - 1] = w[i * n + i];
      w[i * n + i] = 1;
      const h = d[i + 1];
      const next = (i + 1) * n;
      if (h !== 0) {
        for (let k = 0; k <= i; k++) d[k] = w[next + k] / h;
        for (let j = 0; j <= i; j++) kn.axpy(wAt(j, 0), at.d, -kn.dot(wAt(i + 1, 0), wAt(j, 0), i + 1), i + 1);
      }
      w.fill(0, next, next + i + 1);
    }
  }
  for (let j = 0; j < n; j++) {
    // The accumulation parked the diagonal in V's last row; without it the diagonal is still in place.
    d[j] = vectors ? w[j * n + n - 1] : w[j * n + j];
    w[j * n + n - 1] = 0;
  }
  if (vectors) w[(n - 1) * n + n - 1] = 1;
  e[0] = 0;
}

/**
 * Apply the recorded rotations to V's rows, a slice of {@linkcode ROTATION_COLUMNS} columns at a time
 * (the rows' slices stay in cache across the batch); each column sees the rotations in recorded order,
 * as if they had been applied one by one.
 */
function applyRotations(ws: EigenWorkspace, n: number): void {
  const { w, rots, kernels: kn, at } = ws;
  const count = ws.pending;
  if (count === 0) return;
  const even = n - (n % 2);
  for (let col = 0; col < even; col += ROTATION_COLUMNS) {
    kn.rotate(at.w + 8 * col, 8 * n, at.rots, count, Math.min(ROTATION_COLUMNS, even - col) / 2);
  }
  if (even < n) {
    for (let r = 0; r < count; r++) {
      const a = rots[3 * r] / 8 + even;
      const [c, s] = [rots[3 * r + 1], rots[3 * r + 2]];
      const t = w[a + n];
      w[a + n] = s * w[a] + c * t;
      w[a] = c * w[a] - s * t;
    }
  }
  ws.pending = 0;
}

/** EISPACK tql2: eigenvalues of the tridiagonal (d, e) into d, the rotations recorded and applied to w's rows in batches. */
function tridiagonalQl(ws: EigenWorkspace, n: number, vectors: boolean): void {
  const { d, e, rots } = ws;
  for (let i = 1; i < n; i++) e[i - 1] = e[i];
  if (n > 0) e[n - 1] = 0;
  let f = 0;
  let tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n - 1 && Math.abs(e[m]) > eps * tst1) m++;
    if (m > l) {
      let iterations = 0;
      do {
        if (++iterations > 60) throw new Error(`symmetric eigensolver did not converge (eigenvalue ${l} of ${n})`);
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e[l]);
        let r = Math.hypot(p, 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1;
        let c2 = c;
        let c3 = c;
        const el1 = e[l + 1];
        let s = 0;
        let s2 = 0;
        if (vectors && ws.pending + (m - l) > ws.capacity) applyRotations(ws, n);
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = Math.hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          if (vectors) {
            const at = 3 * ws.pending++;
            rots[at] = 8 * i * n;
            rots[at + 1] = c;
            rots[at + 2] = s;
          }
        }
        p = -s * s2 * c3 * el1 * e[l] / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0;
  }
  if (vectors) applyRotations(ws, n);
}

/** All singular values of a matrix and its leading singular triplets on demand. */
export interface Spectrum {
  /** All `min(m, n)` singular values, descending. */
  readonly s: Float64Array;
  /** The leading `k` singular triplets. */
  triplets(k: number): Svd;
}

/**
 * Singular values of an `m x n` row-major matrix from the eigenvalues of its
 * Gram matrix on the small side (`A A^T` when `m <= n`, else `A^T A`), formed
 * on the GEMM kernel and decomposed by {@linkcode symmetricEigen}, all in
 * float64. Cost about `min^2 max + 9 min^3` flops instead of a dense SVD's
 * `O(m n min)` with a much larger constant: meant for a small side up to about 512.
 *
 * Error bound (Weyl): each `s_i^2` is within about `min(m, n) ε s_1^2` of the
 * exact value (ε = 2^-53), so energy fractions are exact to about 1e-12 and
 * `s_i` has relative error about `min ε (s_1 / s_i)^2` (below 1e-9 for
 * `s_i > 1e-3 s_1` at `min = 512`). The triplets `u_i`, `v_i = A^T u_i / s_i`
 * (for `m <= n`) make `U_k S_k V_k^T = U_k U_k^T A` an exact projection of A,
 * so a rank-k factorization from them loses only the tail energy; `v_i` is
 * orthonormal to about `ε (s_1 / s_i)^2`.
 *
 * With `vectors = false` only the eigenvalues are computed at once (about
 * `4/3 min^3`), the eigenvectors on the first call of `triplets`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gramSpectrum } from "./linalg.ts";
 * const spectrum = gramSpectrum(new Float64Array([3, 0, 0, 0, 4, 0]), 2, 3);
 * assert.deepEqual([...spectrum.s].map((x) => Math.round(x * 1e9) / 1e9), [4, 3]);
 * assert.equal(spectrum.triplets(1).vt[1], 1); // v_1 = e_2 (up to sign)
 * ```
 */
export function gramSpectrum(a: FloatArray, m: number, n: number, vectors = true): Spectrum {
  const wide = m <= n;
  const small = wide ? m : n;
  const g = new Float64Array(small * small);
  // Upper block triangle of the Gram matrix only (it is symmetric), in blocks of rows.
  const block = 128;
  for (let i0 = 0; i0 < small; i0 += block) {
    const rows = Math.min(block, small - i0);
    const cols = small - i0;
    const c = { c: g, cOffset: i0 * small + i0, ldc: small, float64Accumulation: true };
    if (wide) {
      gemm({ m: rows, n: cols, k: n, a, aOffset: i0 * n, lda: n, b: a, bOffset: i0 * n, ldb: n, transB: true, ...c });
    } else gemm({ m: rows, n: cols, k: m, a, aOffset: i0, lda: n, transA: true, b: a, bOffset: i0, ldb: n, ...c });
  }
  for (let i = 0; i < small; i++) for (let j = 0; j < i; j++) g[i * small + j] = g[j * small + i];
  let eig = symmetricEigen(g, small, vectors);
  // The Gram matrix is kept only while its eigenvectors are still to be computed (a pass holds many spectra).
  let gram: Float64Array | null = vectors ? null : g;
  const s = eig.values.map((v) => Math.sqrt(Math.max(v, 0)));
  const triplets = (k: number): Svd => {
    k = Math.max(1, Math.min(k, small));
    if (gram !== null) {
      eig = symmetricEigen(gram, small);
      gram = null;
    }
    const big = wide ? n : m;
    // W (k x small): the eigenvectors; other side O = W op(A) (k x big) in float64, row i divided by s_i.
    const w = eig.vectors.subarray(0, k * small);
    const other = new Float64Array(k * big);
    if (wide) gemm({ m: k, n, k: m, a: w, b: a, c: other });
    else gemm({ m: k, n: m, k: n, a: w, b: a, transB: true, c: other });
    const sk = s.slice(0, k);
    for (let i = 0; i < k; i++) {
      let scale = sk[i];
      if (!(scale > 0)) {
        // Numerically zero eigenvalue: its own norm (0 leaves the row zero).
        let t = 0;
        for (let j = 0; j < big; j++) t += other[i * big + j] ** 2;
        scale = sk[i] = Math.sqrt(t);
      }
      if (scale > 0) { for (let j = 0; j < big; j++) other[i * big + j] /= scale; }
    }
    // Vectors as rows; the Svd wants U as columns (m x k).
    const transpose = (x: Float64Array, rows: number, cols: number): Float64Array => {
      const t = new Float64Array(rows * cols);
      for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = x[i * cols + j];
      return t;
    };
    return wide
      ? { m, n, k, u: transpose(w.slice(), k, m), s: sk, vt: other }
      : { m, n, k, u: transpose(other, k, m), s: sk, vt: w.slice() };
  };
  return { s, triplets };
}

/** Options of {@linkcode growingSvd}. */
export interface GrowingSvdOptions {
  /** Columns added to the basis per step (default 64). */
  block?: number;
  /** Power (subspace) iterations per block, on the deflated matrix (default 2). */
  powerIterations?: number;
  /** PRNG seed of the Gaussian sketches (default 1). */
  seed?: number;
  /** Safety factor on the estimated σ_1^2 of the residual in the early stop (default 1.5). */
  boundMargin?: number;
}

/**
 * Leading singular triplets of an `m x n` row-major matrix, grown by blocks
 * until they hold `target` squared Frobenius norm (energy) or `maxRank` is
 * reached: a blocked randomized QB factorization with an energy stopping rule
 * (Yu, Gu and Li 2018, randQB_EI, with power iterations on the deflated
 * matrix `A - Q B`). Each block is a Gaussian sketch of `A - Q B`, refined by
 * `powerIterations` and orthonormalized against the basis so far; B grows by
 * `Q_i^T A`. Since Q is orthonormal, `||A - Q B||_F^2 = ||A||_F^2 - ||B||_F^2`
 * exactly: the energy held is known at every step without any SVD, and is a
 * lower bound on what the best rank-K approximation holds. The SVD of the final
 * `B` (K x n) gives the triplets, whose values never exceed the exact ones, so
 * a rank chosen from them by an energy rule is never below the exact rule's.
 *
 * @returns The K triplets found (K a multiple of the block, or `maxRank`), or
 * null when `maxRank` columns hold less than `target` (no SVD is computed then).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { growingSvd } from "./linalg.ts";
 * const a = new Float32Array(60 * 50);
 * for (let i = 0; i < 60; i++) for (let j = 0; j < 50; j++) a[i * 50 + j] = (i % 7) * (j % 5) + (i === j ? 0.1 : 0);
 * const svd = growingSvd(a, 60, 50, 40, 0.99 * a.reduce((t, x) => t + x * x, 0), { block: 8 })!;
 * assert.equal(svd.k, 8); // the rank-one term holds 99% after one block
 * assert.equal(growingSvd(a, 60, 50, 1, 1e9), null);
 * ```
 */
export function growingSvd(
  a: FloatArray,
  m: number,
  n: number,
  maxRank: number,
  target: number,
  options: GrowingSvdOptions = {},
): Svd | null {
  maxRank = Math.max(1, Math.min(maxRank, m, n));
  const blockSize = Math.max(1, options.block ?? 64);
  const iterations = options.powerIterations ?? 2;
  const f32 = a instanceof Float32Array;
  const make = (len: number): FloatArray => (f32 ? new Float32Array(len) : new Float64Array(len));
  const random = gaussianSource(options.seed ?? 1);
  const margin = options.boundMargin ?? 1.5;
  const ld = maxRank;
  const q = make(m * ld); // basis columns 0..K-1, row stride ld
  const b = make(maxRank * n); // B's rows 0..K-1
  let k = 0;
  let held = 0;
  // x (rows x w) -= basis (rows x k) times (basisT^T x): `basis` is Q (m side) or B^T (n side, stored as B).
  const deflate = (x: FloatArray, w: number, side: "m" | "n", coef: FloatArray): void => {
    if (k === 0) return;
    if (side === "m") gemm({ m, n: w, k, a: q, lda: ld, b: coef, c: x, alpha: -1, beta: 1 });
    else gemm({ m: n, n: w, k, a: b, transA: true, b: coef, c: x, alpha: -1, beta: 1 });
  };
  // Q_i orthonormal and orthogonal to Q: project out Q twice (with re-orthonormalization).
  const orthogonalToBasis = (y: FloatArray, w: number, seed: number): FloatArray => {
    let yi = orthonormalize(y, m, w, seed).q;
    if (k === 0) return yi;
    const c = make(k * w);
    for (let pass = 0; pass < 2; pass++) {
      gemm({ m: k, n: w, k: m, a: q, lda: ld, transA: true, b: yi, c });
      gemm({ m, n: w, k, a: q, lda: ld, b: c, c: yi, alpha: -1, beta: 1 });
      yi = orthonormalize(yi, m, w, seed + pass + 1).q;
    }
    return yi;
  };
  while (k < maxRank) {
    const w = Math.min(blockSize, maxRank - k);
    const omega = make(n * w);
    for (let i = 0; i < omega.length; i++) omega[i] = random();
    // Y = (A - Q B) Ω.
    const y = make(m * w);
    gemm({ m, n: w, k: n, a, b: omega, c: y });
    const bo = make(k * w);
    if (k > 0) gemm({ m: k, n: w, k: n, a: b, b: omega, c: bo });
    deflate(y, w, "m", bo);
    let qi = orthogonalToBasis(y, w, 41 + k);
    for (let it = 0; it < iterations; it++) {
      // Z = (A - Q B)^T Q_i = A^T Q_i (Q_i is orthogonal to Q); Y = (A - Q B) orth(Z).
      const z = make(n * w);
      gemm({ m: n, n: w, k: m, a, transA: true, b: qi, c: z });
      const qz = orthonormalize(z, n, w, 43 + k + it).q;
      gemm({ m, n: w, k: n, a, b: qz, c: y });
      if (k > 0) gemm({ m: k, n: w, k: n, a: b, b: qz, c: bo });
      deflate(y, w, "m", bo);
      qi = orthogonalToBasis(y, w, 47 + k + it);
    }
    // B_i = Q_i^T A (w x n), appended; Q_i appended as columns.
    gemm({ m: w, n, k: m, a: qi, transA: true, b: a, c: b, cOffset: k * n });
    for (let i = k * n; i < (k + w) * n; i++) held += b[i] * b[i];
    for (let i = 0; i < m; i++) for (let j = 0; j < w; j++) q[i * ld + k + j] = qi[i * w + j];
    k += w;
    if (held >= target) break;
    if (k < maxRank && unreachable(b, k - w, w, n, held, maxRank - k, target, margin)) return null;
  }
  if (held < target) return null;
  const bt = make(n * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) bt[j * k + i] = b[i * n + j];
  return svdOfQb(q, ld, bt, m, n, k, k);
}

/**
 * Whether growing the basis by `rest` more columns cannot reach `target`:
 * any extension of an orthonormal basis Q by `rest` columns orthogonal to it
 * holds at most `held + rest * σ_1(A - Q Q^T A)^2` (Ky Fan). σ_1 of the
 * residual before the last block is estimated by the largest singular value of
 * that block's rows of B (`w x n` from row `row`), a Ritz value of the power
 * iteration on the residual (never above σ_1, close to it), times `margin` on
 * the square; the residual after the block has no larger σ_1.
 */
function unreachable(
  b: FloatArray,
  row: number,
  w: number,
  n: number,
  held: number,
  rest: number,
  target: number,
  margin: number,
): boolean {
  const g = new Float64Array(w * w);
  const rows = { a: b, aOffset: row * n, lda: n, b, bOffset: row * n, ldb: n };
  gemm({ m: w, n: w, k: n, ...rows, transB: true, c: g, float64Accumulation: true });
  const top = Math.max(0, symmetricEigen(g, w, false).values[0]);
  return held + rest * margin * top < target;
}

/** Options of {@linkcode estimateEnergyFraction}. */
export interface EnergyEstimateOptions {
  /** Random probe vectors, run as one block (default 8). */
  probes?: number;
  /** Lanczos steps per probe (default 40). */
  steps?: number;
  /** PRNG seed of the probes (default 3). */
  seed?: number;
}

/**
 * Estimated fraction of the squared Frobenius norm of an `m x n` row-major
 * matrix held by its top `r` singular values, by stochastic Lanczos
 * quadrature (Ubaru, Chen and Saad 2017) on the small side's Gram matrix:
 * Lanczos from `probes` random unit vectors (full reorthogonalization) gives
 * Gauss quadrature nodes (Ritz values) and weights (squared first components
 * of the Ritz vectors) of the spectral measure, and their mixture stands in for
 * the spectrum: the top `r` eigenvalues' count is taken from the largest nodes
 * down. Cost `2 probes steps` products of A with a vector (plus
 * `O(steps^2 min(m, n) probes)`), a few passes over A, against a
 * full-rank randomized SVD's hundreds. An estimate, not a bound: its error is
 * about `sqrt(2 / (probes min(m, n)))` from the probes (Hutchinson) plus the
 * quadrature's resolution of the count at the cut (about `1 / (steps probes)`
 * of the dimension); deterministic for a given seed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { estimateEnergyFraction } from "./linalg.ts";
 * // Singular values 100, 1, 1, 1 (diagonal): the top one holds 10000/10003 of the energy.
 * const a = new Float64Array(16);
 * [100, 1, 1, 1].forEach((s, i) => (a[i * 4 + i] = s));
 * assert.ok(estimateEnergyFraction(a, 4, 4, 1) > 0.999);
 * assert.ok(estimateEnergyFraction(a, 4, 4, 1) <= 1);
 * ```
 */
export function estimateEnergyFraction(
  a: FloatArray,
  m: number,
  n: number,
  r: number,
  options: EnergyEstimateOptions = {},
): number {
  const dim = Math.min(m, n);
  if (r >= dim) return 1;
  if (r <= 0) return 0;
  const p = Math.max(1, options.probes ?? 8);
  const steps = Math.max(1, Math.min(dim, options.steps ?? 40));
  const f32 = a instanceof Float32Array;
  const random = gaussianSource(options.seed ?? 3);
  const wide = m <= n;
  const x = f32 ? new Float32Array(Math.max(m, n) * p) : new Float64Array(Math.max(m, n) * p);
  const y = f32 ? new Float32Array(dim * p) : new Float64Array(dim * p);
  // Lanczos vectors (dim x p each, probe c in column c) and the tridiagonals, per probe.
  const basis: Float64Array[] = [];
  const alpha: number[][] = Array.from({ length: p }, () => []);
  const beta: number[][] = Array.from({ length: p }, () => []);
  const live = new Array<boolean>(p).fill(true);
  let v = new Float64Array(dim * p);
  for (let i = 0; i < v.length; i++) v[i] = random();
  const normalize = (z: Float64Array, c: number): number => {
    let t = 0;
    for (let i = 0; i < dim; i++) t += z[i * p + c] ** 2;
    const norm = Math.sqrt(t);
    if (norm > 0) { for (let i = 0; i < dim; i++) z[i * p + c] /= norm; }
    return norm;
  };
  for (let c = 0; c < p; c++) normalize(v, c);
  for (let j = 0; j < steps; j++) {
    basis.push(v);
    // w = G v, G = A A^T (m <= n) or A^T A.
    const vin = f32 ? Float32Array.from(v) : v;
    if (wide) {
      gemm({ m: n, n: p, k: m, a, transA: true, b: vin, c: x });
      gemm({ m, n: p, k: n, a, b: x, c: y });
    } else {
      gemm({ m, n: p, k: n, a, b: vin, c: x });
      gemm({ m: n, n: p, k: m, a, transA: true, b: x, c: y });
    }
    const w = Float64Array.from(y);
    for (let c = 0; c < p; c++) {
      if (!live[c]) continue;
      let d = 0;
      for (let i = 0; i < dim; i++) d += v[i * p + c] * w[i * p + c];
      alpha[c].push(d);
      // Full reorthogonalization, twice, against every Lanczos vector so far.
      for (let pass = 0; pass < 2; pass++) {
        for (const u of basis) {
          let t = 0;
          for (let i = 0; i < dim; i++) t += u[i * p + c] * w[i * p + c];
          for (let i = 0; i < dim; i++) w[i * p + c] -= t * u[i * p + c];
        }
      }
      const b = normalize(w, c);
      // An invariant subspace: this probe's quadrature is exact with the steps so far.
      if (!(b > 1e-12 * Math.max(Math.abs(d), 1e-300)) || j === steps - 1) live[c] = false;
      else beta[c].push(b);
    }
    if (!live.some((l) => l)) break;
    v = w;
  }
  // Quadrature atoms (node, share of the dimension) of all probes; total energy from the same atoms.
  const atoms: { node: number; share: number }[] = [];
  for (let c = 0; c < p; c++) {
    const s = alpha[c].length;
    const t = new Float64Array(s * s);
    for (let i = 0; i < s; i++) {
      t[i * s + i] = alpha[c][i];
      if (i + 1 < s) t[i * s + i + 1] = t[(i + 1) * s + i] = beta[c][i];
    }
    const { values, vectors } = symmetricEigen(t, s);
    for (let k = 0; k < s; k++) atoms.push({ node: Math.max(0, values[k]), share: vectors[k * s] ** 2 / p });
  }
  atoms.sort((u, w) => w.node - u.node);
  let count = 0;
  let top = 0;
  let total = 0;
  for (const { node, share } of atoms) {
    const mass = share * dim;
    total += mass * node;
    const take = Math.max(0, Math.min(mass, r - count));
    top += take * node;
    count += take;
  }
  return total > 0 ? Math.min(1, top / total) : 1;
}
