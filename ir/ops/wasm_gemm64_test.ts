import assert from "node:assert/strict";
import { mulberry32 } from "../../tests/tensor_compare.ts";
import { setThreadCount, startWorkers, threadCount, workerPartCount } from "../parallel.ts";
import type { FloatArray, GemmArgs } from "./gemm_kernel.ts";
import { float64GemmKernel, gemm64 } from "./wasm_gemm64.ts";

/**
 * The order the kernel promises, replayed in JavaScript: per element a running float64 sum in order of k within
 * each slice of 256, the slices' sums added in order, then `alpha s + beta c`.
 */
function replay(g: GemmArgs): void {
  const { m, n, k, a, b, c } = g;
  const [ta, tb] = [g.transA ?? false, g.transB ?? false];
  const lda = g.lda ?? (ta ? m : k), ldb = g.ldb ?? (tb ? k : n), ldc = g.ldc ?? n;
  const [ao, bo, co] = [g.aOffset ?? 0, g.bOffset ?? 0, g.cOffset ?? 0];
  const [alpha, beta] = [g.alpha ?? 1, g.beta ?? 0];
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p0 = 0; p0 < k; p0 += 256) {
        let t = 0;
        for (let p = p0; p < Math.min(k, p0 + 256); p++) {
          t += a[ao + (ta ? p * lda + i : i * lda + p)] * b[bo + (tb ? j * ldb + p : p * ldb + j)];
        }
        s = p0 === 0 ? t : s + t;
      }
      const o = co + i * ldc + j;
      c[o] = beta === 0 ? alpha * s : alpha * s + beta * c[o];
    }
  }
}

function filled(length: number, seed: number, f32 = false): FloatArray {
  const uniform = mulberry32(seed), random = () => 2 * uniform() - 1; // ir/ tests import nothing from passes/
  const x = f32 ? new Float32Array(length) : new Float64Array(length);
  for (let i = 0; i < length; i++) x[i] = random();
  return x;
}

/** Shapes over the tile edges (6 x 4), the reduction slice (256) and the C block, with every option. */
const CASES: { m: number; n: number; k: number; extra?: Partial<GemmArgs>; f32?: boolean }[] = [
  { m: 1, n: 1, k: 1 },
  { m: 7, n: 5, k: 3 },
  { m: 13, n: 9, k: 300 },
  { m: 6, n: 4, k: 513, extra: { transA: true } },
  { m: 25, n: 11, k: 257, extra: { transB: true, alpha: -0.5, beta: 2 } },
  { m: 130, n: 3, k: 40, extra: { transA: true, transB: true, beta: 1 } },
  { m: 9, n: 2100, k: 20 },
  { m: 17, n: 10, k: 31, extra: { aOffset: 5, lda: 40, bOffset: 3, ldb: 12, cOffset: 2, ldc: 14, beta: -1 } },
  { m: 20, n: 30, k: 270, f32: true },
];

function operands(c: (typeof CASES)[number], seed: number): GemmArgs {
  const { m, n, k } = c;
  const e = c.extra ?? {};
  const [ta, tb] = [e.transA ?? false, e.transB ?? false];
  const lda = e.lda ?? (ta ? m : k), ldb = e.ldb ?? (tb ? k : n), ldc = e.ldc ?? n;
  const a = filled((e.aOffset ?? 0) + lda * (ta ? k : m), seed, c.f32);
  const b = filled((e.bOffset ?? 0) + ldb * (tb ? n : k), seed + 1, c.f32);
  const out = filled((e.cOffset ?? 0) + ldc * m + 3, seed + 2);
  return { m, n, k, a, b, c: out, ...e };
}

Deno.test("gemm64() without fusion matches the replayed summation order bit for bit (edges, transposes, offsets, scales)", () => {
  for (const [i, c] of CASES.entries()) {
    const g = operands(c, 10 * i);
    const want = { ...g, c: g.c.slice() };
    replay(want);
    gemm64(g, false);
    assert.deepEqual(g.c, want.c, `case ${i}: ${c.m}x${c.n}x${c.k}`);
  }
});

Deno.test("gemm64() with relaxed-SIMD fusion: exact on float32 inputs (exact products), within the float64 bound otherwise", () => {
  assert.equal(float64GemmKernel(), "wasm-simd-fma"); // Deno 2.9.6's V8 on x64 validates f64x2.relaxed_madd
  for (const [i, c] of CASES.entries()) {
    const g = operands({ ...c, f32: true }, 10 * i);
    const want = { ...g, c: g.c.slice() };
    replay(want);
    gemm64(g, true);
    assert.deepEqual(g.c, want.c, `float32 case ${i}`);
  }
  const { m, n, k } = { m: 31, n: 17, k: 600 };
  const g = operands({ m, n, k }, 5);
  const want = { ...g, c: g.c.slice() };
  replay(want);
  gemm64(g, true);
  // |fl(sum) - sum| <= k eps sum |a||b| per element (Higham, Theorem 3.1), for both orders.
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let bound = 0;
      for (let p = 0; p < k; p++) bound += Math.abs(g.a[i * k + p] * g.b[p * n + j]);
      assert.ok(Math.abs(g.c[i * n + j] - want.c[i * n + j]) <= 2 * k * 2 ** -53 * bound);
    }
  }
});

Deno.test("gemm64() gives bit-identical results with 1 and 2 threads, the workers computing parts", async () => {
  const before = threadCount();
  try {
    const shapes: [number, number, number, Partial<GemmArgs>][] = [
      [300, 200, 400, {}],
      [90, 700, 300, { transA: true, transB: true, beta: 0.5 }],
    ];
    for (const [m, n, k, extra] of shapes) {
      const results: FloatArray[] = [];
      for (const count of [1, 2]) {
        setThreadCount(count);
        if (count === 2) assert.equal(await startWorkers(), 1);
        const g = operands({ m, n, k, extra }, 99);
        const parts = workerPartCount();
        gemm64(g);
        // The calling thread may take every part while the worker sleeps (a busy machine): repeat until it has not.
        for (let tries = 0; count === 2 && tries < 50 && workerPartCount() === parts; tries++) {
          const again = operands({ m, n, k, extra }, 99);
          gemm64(again);
          assert.deepEqual(again.c, g.c);
        }
        if (count === 2) assert.ok(workerPartCount() > parts, "a worker computed a part");
        results.push(g.c);
      }
      assert.deepEqual(results[0], results[1]);
      const want = operands({ m, n, k, extra }, 99);
      gemm64(want, false);
      let err = 0;
      for (let i = 0; i < want.c.length; i++) err = Math.max(err, Math.abs(want.c[i] - results[0][i]));
      assert.ok(err < 1e-12, `fused vs unfused: ${err}`);
    }
  } finally {
    setThreadCount(before);
  }
});

Deno.test("gemm64() on empty shapes only scales C", () => {
  const c = new Float64Array([1, 2, 3, 4]);
  gemm64({ m: 2, n: 2, k: 0, a: new Float64Array(0), b: new Float64Array(0), c, beta: 2 });
  assert.deepEqual([...c], [2, 4, 6, 8]);
  gemm64({ m: 2, n: 2, k: 0, a: new Float64Array(0), b: new Float64Array(0), c });
  assert.deepEqual([...c], [0, 0, 0, 0]);
});
