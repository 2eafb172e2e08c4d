/**
 * Dense linear algebra for low-rank decomposition: exact thin SVD (ml-matrix's
 * Golub-Kahan) for small matrices, randomized truncated SVD (Halko, Martinsson
 * and Tropp 2011, Algorithms 4.4 and 5.1) on the GEMM kernel for large ones,
 * QR by twice-iterated classical Gram-Schmidt, and Cholesky. Matrices are
 * row-major typed arrays.
 * @module
 */
import { Matrix, SingularValueDecomposition } from "ml-matrix";
import { type FloatArray, gemm } from "../ir/ops/gemm_kernel.ts";

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
 * Orthonormalize the columns of the `m x l` row-major matrix `y` in float64 by
 * classical Gram-Schmidt applied twice ("twice is enough", Giraud et al. 2005):
 * `Y = Q R`. A column that is (numerically) in the span of the previous ones is
 * replaced by a fresh random direction and gets a zero diagonal in R.
 *
 * @returns `q` (`m x l` row-major) and `r` (`l x l` upper triangular, row-major).
 */
export function orthonormalize(y: ArrayLike<number>, m: number, l: number, seed = 7): {
  q: Float64Array;
  r: Float64Array;
} {
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
  const q = new Float64Array(m * l);
  for (let j = 0; j < l; j++) for (let i = 0; i < m; i++) q[i * l + j] = cols[j * m + i];
  return { q, r };
}

/**
 * Randomized truncated SVD of an `m x n` row-major matrix: the top `k`
 * triplets. A Gaussian sketch `Y = A Ω` (`l = k + oversample` columns) and
 * `powerIterations` rounds of `Y = A (A^T Q)` (orthonormalized after each
 * product, Halko et al. Algorithm 4.4) give a basis `Q` of A's dominant range;
 * then `B^T = A^T Q` is factored as `Q2 R` and the small `l x l` matrix R gets
 * an exact SVD: `A ≈ Q B = (Q V_R) S (Q2 U_R)^T`. The large products run on the
 * float32 GEMM kernel (WASM SIMD) when `a` is a Float32Array; QR and the small
 * SVD are float64.
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
  const cast = (x: Float64Array): FloatArray => (f32 ? Float32Array.from(x) : x);
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
    gemm({ m: n, n: l, k: m, a, transA: true, b: cast(q), c: z });
    const qz = orthonormalize(z, n, l, 11 + it).q;
    gemm({ m, n: l, k: n, a, b: cast(qz), c: y });
    q = orthonormalize(y, m, l, 23 + it).q;
  }
  // B^T = A^T Q (n x l) = Q2 R.
  gemm({ m: n, n: l, k: m, a, transA: true, b: cast(q), c: z });
  const { q: q2, r } = orthonormalize(z, n, l, 31);
  // B = R^T Q2^T; R = Ur S Vr^T gives B = Vr S (Q2 Ur)^T, so A ≈ (Q Vr) S (Q2 Ur)^T.
  const small = exactSvd(r, l, l);
  // Q Vr: Vr = small.vt^T (l x l); take the first k columns.
  const u = new Float64Array(m * k);
  gemm({ m, n: k, k: l, a: q, b: small.vt, ldb: l, transB: true, c: u });
  // (Q2 Ur)^T = Ur^T Q2^T: k x n.
  const vt = new Float64Array(k * n);
  gemm({ m: k, n, k: l, a: small.u, lda: l, transA: true, b: q2, ldb: l, transB: true, c: vt });
  return { m, n, k, u, s: small.s.slice(0, k), vt };
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

/**
 * Truncated SVD with the method chosen by size: exact when the matrix is small
 * (`m * n <= exactLimit` or `min(m, n) <= 256`), randomized otherwise.
 */
export function truncatedSvd(a: FloatArray, m: number, n: number, k: number, exactLimit = 1 << 20): Svd {
  if (m * n <= exactLimit || Math.min(m, n) <= 256 || k >= Math.min(m, n) / 2) {
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
