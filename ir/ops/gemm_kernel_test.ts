import assert from "node:assert/strict";
import {
  float32GemmKernel,
  gemm,
  type GemmArgs,
  gemmIm2colF32,
  im2colF32,
  type Im2colSource,
  matVecF32,
  releasePackedA,
} from "./gemm_kernel.ts";
import {
  ARENA_MAX_BYTES,
  releasePool,
  setArenaLimit,
  setThreadCount,
  startWorkers,
  threadCount,
  workerPartCount,
} from "../parallel.ts";
import { mulberry32 } from "../../tests/tensor_compare.ts";
import { convolve } from "./conv_kernels.ts";

/** Uniform in [-1, 1), reproducible. */
function random(seed: number): () => number {
  const next = mulberry32(seed);
  return () => 2 * next() - 1;
}

interface Case {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  alpha: number;
  beta: number;
}

/** Run one GEMM on padded, offset storage and return the largest error relative to a float64 reference. */
function check(c: Case, make: (n: number) => Float32Array | Float64Array, rnd: () => number, f64acc = false): number {
  const { m, n, k, transA, transB, alpha, beta } = c;
  const lda = (transA ? m : k) + 3;
  const ldb = (transB ? k : n) + 1;
  const ldc = n + 2;
  const fill = (len: number) => {
    const x = make(len);
    for (let i = 0; i < len; i++) x[i] = rnd();
    return x;
  };
  const a = fill(5 + lda * (transA ? k : m));
  const b = fill(7 + ldb * (transB ? n : k));
  const out = fill(2 + ldc * m + 4);
  const expected = Float64Array.from(out);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) {
        s += a[5 + (transA ? p * lda + i : i * lda + p)] * b[7 + (transB ? j * ldb + p : p * ldb + j)];
      }
      const at = 2 + i * ldc + j;
      expected[at] = alpha * s + (beta === 0 ? 0 : beta * out[at]);
    }
  }
  gemm({
    m,
    n,
    k,
    a,
    aOffset: 5,
    lda,
    transA,
    b,
    bOffset: 7,
    ldb,
    transB,
    c: out,
    cOffset: 2,
    ldc,
    alpha,
    beta,
    float64Accumulation: f64acc,
  });
  let err = 0;
  for (let i = 0; i < out.length; i++) {
    err = Math.max(err, Math.abs(out[i] - expected[i]) / (1 + Math.abs(expected[i])));
  }
  return err;
}

const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [3, 5, 7],
  [4, 8, 16],
  [5, 9, 300], // k over one 256 slice
  [17, 13, 2],
  [130, 6, 20], // m over one 128 row block
  [2, 2100, 3], // n over one 2048 column block
];

Deno.test("gemm() matches a float64 reference for float32 operands (SIMD kernel)", () => {
  const rnd = random(1);
  for (const [m, n, k] of SHAPES) {
    for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]]) {
      const err = check({ m, n, k, transA, transB, alpha: 0.5, beta: -2 }, (len) => new Float32Array(len), rnd);
      assert.ok(err < 1e-5, `m=${m} n=${n} k=${k} transA=${transA} transB=${transB}: error ${err}`);
    }
  }
});

Deno.test("gemm() matches a float64 reference for float64 operands to float64 precision", () => {
  const rnd = random(2);
  for (const [m, n, k] of SHAPES) {
    for (const [transA, transB] of [[false, false], [true, true]]) {
      const err = check({ m, n, k, transA, transB, alpha: 1, beta: 1 }, (len) => new Float64Array(len), rnd);
      assert.ok(err < 1e-12, `m=${m} n=${n} k=${k}: error ${err}`);
    }
  }
});

Deno.test("gemm() accumulates float32 operands in float64 on request", () => {
  const rnd = random(3);
  const err = check(
    { m: 9, n: 11, k: 700, transA: false, transB: true, alpha: 1, beta: 0 },
    (len) => new Float32Array(len),
    rnd,
    true,
  );
  assert.ok(err < 1e-6, `error ${err}`);
  // 1 + 1000 terms of 1e-8: each term is below half a float32 ulp of 1, so float32 accumulation loses those
  // added to the running 1 (the 255 others of its 256-long slice).
  const k = 1001;
  const a = new Float32Array(k).fill(1);
  const b = new Float32Array(k).fill(1e-8);
  b[0] = 1;
  const c = new Float32Array(1);
  gemm({ m: 1, n: 1, k, a, b, c });
  const exact = 1 + 1000 * Math.fround(1e-8);
  assert.ok(Math.abs(c[0] - exact) > 2e-6, `float32 accumulation gave ${c[0]}`);
  gemm({ m: 1, n: 1, k, a, b, c, float64Accumulation: true });
  assert.ok(Math.abs(c[0] - exact) < 3e-7, `float64 accumulation gave ${c[0]}`);
});

Deno.test("gemm() with beta 0 overwrites C, NaN included, and k = 0 only scales C", () => {
  const c = new Float32Array([NaN, NaN, NaN, NaN]);
  gemm({ m: 2, n: 2, k: 1, a: new Float32Array([1, 2]), b: new Float32Array([3, 4]), c });
  assert.deepEqual([...c], [3, 4, 6, 8]);
  gemm({ m: 2, n: 2, k: 0, a: new Float32Array(0), b: new Float32Array(0), c, beta: 0.5 });
  assert.deepEqual([...c], [1.5, 2, 3, 4]);
  gemm({ m: 2, n: 2, k: 0, a: new Float32Array(0), b: new Float32Array(0), c });
  assert.deepEqual([...c], [0, 0, 0, 0]);
});

Deno.test("gemm() leaves C outside the addressed block untouched", () => {
  const c = new Float64Array(12).fill(7);
  // 2x2 block at offset 1 with row stride 5 in a 12-element buffer.
  gemm({ m: 2, n: 2, k: 1, a: new Float64Array([1, 1]), b: new Float64Array([1, 1]), c, cOffset: 1, ldc: 5 });
  assert.deepEqual([...c], [7, 1, 1, 7, 7, 7, 1, 1, 7, 7, 7, 7]);
});

Deno.test("float32GemmKernel() uses WebAssembly SIMD in Deno", () => {
  assert.equal(float32GemmKernel(), "wasm-simd");
});

/**
 * The float32 SIMD kernel's sum for each element, replayed in JavaScript: within each slice of 256 along k
 * a float32 running sum, one rounding per step (`fused`: `round(a * b + s)`; else `round(round(a * b) + s)`),
 * then the slice sums added in float32 in order of k.
 */
function float32Replay(
  a: Float32Array,
  b: Float32Array,
  m: number,
  n: number,
  k: number,
  fused: boolean,
): Float32Array {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let total = 0;
      for (let p0 = 0; p0 < k; p0 += 256) {
        let s = 0;
        for (let p = p0; p < Math.min(k, p0 + 256); p++) {
          const product = a[i * k + p] * b[p * n + j]; // exact in float64: 24 + 24 significant bits
          s = Math.fround(fused ? product + s : Math.fround(product) + s);
        }
        total = p0 === 0 ? s : Math.fround(s + total);
      }
      out[i * n + j] = total;
    }
  }
  return out;
}

Deno.test("float32 gemm() equals its summation order replayed in JavaScript, bit for bit", () => {
  const rnd = random(4);
  const [m, n, k] = [13, 19, 600];
  const a = Float32Array.from({ length: m * k }, rnd);
  const b = Float32Array.from({ length: k * n }, rnd);
  const c = new Float32Array(m * n);
  gemm({ m, n, k, a, b, c });
  const fused = float32Replay(a, b, m, n, k, true);
  const unfused = float32Replay(a, b, m, n, k, false);
  assert.notDeepEqual(fused, unfused); // the shape tells the two roundings apart
  // Relaxed SIMD lets the runtime fuse or not; on x64 with FMA, V8 fuses.
  assert.ok(
    c.every((x, i) => x === fused[i]) || c.every((x, i) => x === unfused[i]),
    "float32 gemm() is neither the fused nor the unfused float32 sum in order of k",
  );
});

Deno.test("gemm() is bit-identical with 1 and 2 threads, split by rows or by columns, float32 and float64", async () => {
  const before = threadCount();
  setThreadCount(2);
  try {
    assert.equal(await startWorkers(), 1);
    const rnd = random(5);
    // [m, n, k, transA, transB, storage, float64Accumulation]: rows split (m >= n) and columns split, with
    // offsets, strides, alpha and beta; the SIMD kernel and the JavaScript one.
    const f32 = (length: number) => new Float32Array(length);
    const f64 = (length: number) => new Float64Array(length);
    const cases: [number, number, number, boolean, boolean, typeof f32 | typeof f64, boolean][] = [
      [301, 97, 263, false, true, f32, false],
      [45, 700, 400, true, false, f32, false],
      [150, 90, 300, true, true, f64, false],
      [64, 260, 270, false, false, f32, true],
      [500, 60, 200, false, false, f32, false], // staged in slabs: 4 * (500 * 260 + 200 * 60) bytes > the limit below
    ];
    for (const [m, n, k, transA, transB, make, float64Accumulation] of cases) {
      const lda = (transA ? m : k) + 3;
      const ldb = (transB ? k : n) + 1;
      const ldc = n + 2;
      const fill = (length: number) => make(length).map(rnd);
      const a = fill(5 + lda * (transA ? k : m));
      const b = fill(7 + ldb * (transB ? n : k));
      const c0 = fill(2 + ldc * m);
      const run = (threads: number): Float32Array | Float64Array => {
        setThreadCount(threads);
        const c = c0.slice();
        const args = { m, n, k, a, aOffset: 5, lda, transA, b, bOffset: 7, ldb, transB, ldc, alpha: 0.75, beta: -1.5 };
        gemm({ ...args, c, cOffset: 2, float64Accumulation });
        return c;
      };
      setArenaLimit(m === 500 ? 400_000 : ARENA_MAX_BYTES);
      const single = run(1);
      // The calling thread may take every part while the worker sleeps: repeat until the worker has computed some.
      const workerPartsBefore = workerPartCount();
      for (let tries = 0; tries < 50 && workerPartCount() === workerPartsBefore; tries++) {
        assert.deepEqual(run(2), single, `m=${m} n=${n} k=${k}`);
      }
      assert.ok(workerPartCount() > workerPartsBefore, `m=${m} n=${n} k=${k}: the worker computed no part`);
      assert.deepEqual(run(2), single);
    }
  } finally {
    setThreadCount(before);
    setArenaLimit(ARENA_MAX_BYTES);
    releasePool();
  }
});

/**
 * matVecF32's float32 order replayed in JavaScript: lanes `i mod 8` summed from zero over the first `8 floor(k / 8)`
 * elements (`fused`: one rounding per step), lanes `l` and `l + 4` added, then `(l0 + l1) + (l2 + l3)`, then the
 * remaining products (rounded, then added) in order.
 */
function matVecReplay(a: Float32Array, x: Float32Array, rows: number, k: number, fused: boolean): Float32Array {
  const f = Math.fround;
  return Float32Array.from({ length: rows }, (_, r) => {
    const lanes = new Array<number>(8).fill(0);
    const whole = k - (k % 8);
    for (let i = 0; i < whole; i++) {
      const product = a[r * k + i] * x[i];
      lanes[i % 8] = f(fused ? product + lanes[i % 8] : f(product) + lanes[i % 8]);
    }
    const l = [0, 1, 2, 3].map((j) => f(lanes[j] + lanes[j + 4]));
    let t = f(f(l[0] + l[1]) + f(l[2] + l[3]));
    for (let i = whole; i < k; i++) t = f(t + f(a[r * k + i] * x[i]));
    return t;
  });
}

Deno.test("matVecF32() equals its float32 summation order replayed in JavaScript, bit for bit", () => {
  const rnd = random(6);
  for (const [rows, k] of [[1, 3], [5, 8], [7, 100], [3, 1027]]) {
    const a = Float32Array.from({ length: 4 + rows * k }, rnd);
    const x = Float32Array.from({ length: 2 + k }, rnd);
    const y = new Float32Array(rows);
    assert.ok(matVecF32(a, 4, rows, k, x, 2, y));
    const [fused, unfused] = [true, false].map((f) => matVecReplay(a.subarray(4), x.subarray(2), rows, k, f));
    assert.ok(
      y.every((v, i) => v === fused[i]) || y.every((v, i) => v === unfused[i]),
      `rows=${rows} k=${k}: neither the fused nor the unfused float32 order`,
    );
  }
});

Deno.test("gemm() epilogue (row bias, clamp) equals the product followed by a bias pass and a Clip, bit for bit", async () => {
  const rnd = random(7);
  const before = threadCount();
  try {
    assert.equal(await startWorkers(), 1);
    // [m, n, k, alpha, beta, float64]: in the kernel (alpha 1, beta 0, float32), after the store, float64; sizes for
    // the worker pool too.
    const cases: [number, number, number, number, number, boolean][] = [
      [70, 300, 270, 1, 0, false],
      [300, 70, 270, 1, 0, false],
      [13, 19, 600, 1, 0, false],
      [70, 300, 270, 0.5, 2, false],
      [40, 50, 30, 1, 0, true],
    ];
    for (const [m, n, k, alpha, beta, float64] of cases) {
      const make = (length: number) => (float64 ? new Float64Array(length) : new Float32Array(length)).map(rnd);
      const [a, b, c0, bias] = [make(m * k), make(k * n), make(m * n), make(m + 3)];
      bias[5] = 0;
      const [lo, hi] = [-0.25, 0.5];
      const want = c0.slice();
      gemm({ m, n, k, a, b, c: want, alpha, beta });
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          const v = bias[3 + i] === 0 ? want[i * n + j] : want[i * n + j] + bias[3 + i]; // rounded by the store
          want[i * n + j] = v;
          const t = want[i * n + j] < lo ? lo : want[i * n + j];
          want[i * n + j] = t > hi ? hi : t;
        }
      }
      for (const threads of [1, 2]) {
        setThreadCount(threads);
        // With 2 threads and a product large enough to share, repeat until the worker has computed a part.
        const parts = workerPartCount();
        for (let tries = 0; tries < 50; tries++) {
          const c = c0.slice();
          gemm({ m, n, k, a, b, c, alpha, beta, epilogue: { bias, biasOffset: 3, lo, hi } });
          assert.deepEqual(c, want, `m=${m} n=${n} k=${k} alpha=${alpha} threads=${threads}`);
          if (threads === 1 || m * n * k < 1e6 || workerPartCount() > parts) break;
        }
        if (threads === 2 && m * n * k > 1e6) assert.ok(workerPartCount() > parts, "the worker computed no part");
      }
    }
  } finally {
    setThreadCount(before);
    releasePool();
  }
});

Deno.test("float32 gemm() with A too tall to pack at once (blocks of rows) equals the product in two halves", () => {
  const before = threadCount();
  setThreadCount(1);
  try {
    const rnd = random(8);
    // 4104 x 2049 floats of packed A exceed the 2^23 held at once: the kernel multiplies blocks of rows.
    const [m, n, k] = [4100, 9, 2049];
    const a = Float32Array.from({ length: m * k }, rnd);
    const b = Float32Array.from({ length: k * n }, rnd);
    const whole = new Float32Array(m * n);
    gemm({ m, n, k, a, b, c: whole, epilogue: { bias: null, biasOffset: 0, lo: -0.5, hi: Infinity } });
    const halves = new Float32Array(m * n);
    for (const lo of [0, m / 2]) {
      gemm({ m: m / 2, n, k, a, aOffset: lo * k, b, c: halves, cOffset: lo * n });
    }
    assert.deepEqual(whole, halves.map((v) => (v < -0.5 ? -0.5 : v)));
  } finally {
    setThreadCount(before);
  }
});

Deno.test("gemm() with constantA keeps A packed between calls and equals the uncached product bit for bit", () => {
  const rnd = random(11);
  const [m, n, k] = [13, 40, 300];
  const a = Float32Array.from({ length: 5 + m * k }, rnd);
  const at = Float32Array.from({ length: k * m }, rnd);
  const b = Float32Array.from({ length: k * n }, rnd);
  const cases: Omit<GemmArgs, "c">[] = [
    { m, n, k, a, aOffset: 5, b },
    { m: 6, n, k, a, aOffset: 5 + 7 * k, b }, // another block of the same array
    { m, n, k, a: at, transA: true, b, epilogue: { bias: a, biasOffset: 0, lo: -0.5, hi: 0.5 } },
  ];
  const product = (args: Omit<GemmArgs, "c">, constantA: boolean): Float32Array => {
    const c = new Float32Array(args.m * n);
    gemm({ ...args, c, constantA });
    return c;
  };
  releasePackedA();
  const want = cases.map((args) => product(args, false));
  for (let round = 0; round < 2; round++) {
    cases.forEach((args, i) => assert.deepEqual(product(args, true), want[i]));
    // A product with more scratch than before moves the cache (emptied, then filled again).
    const big = 300 * (round + 2);
    gemm({
      m: big,
      n: big,
      k: big,
      a: new Float32Array(big * big),
      b: new Float32Array(big * big),
      c: new Float32Array(big * big),
    });
  }
  // The cache is really used: A changed behind its back still gives the packed product, until released.
  cases.forEach((args) => product(args, true));
  a[5] += 1;
  assert.deepEqual(product(cases[0], true), want[0]);
  releasePackedA();
  const changed = product(cases[0], false);
  assert.notDeepEqual(changed, want[0]);
  assert.deepEqual(product(cases[0], true), changed);
});

/** Columns `p0..p0+len` of the 2-D im2col matrix of `channels` planes, by definition (0 outside the image). */
function naiveIm2col(src: Im2colSource, len: number): Float32Array {
  const [H, W] = src.inShape;
  const Wo = src.outShape[1];
  const [KH, KW] = src.kernel;
  const out = new Float32Array(src.channels * KH * KW * len);
  for (let c = 0, r = 0; c < src.channels; c++) {
    for (let ky = 0; ky < KH; ky++) {
      for (let kx = 0; kx < KW; kx++, r++) {
        for (let j = 0; j < len; j++) {
          const [oh, ow] = [Math.floor((src.p0 + j) / Wo), (src.p0 + j) % Wo];
          const ih = oh * src.strides[0] - src.padsBegin[0] + ky * src.dilations[0];
          const iw = ow * src.strides[1] - src.padsBegin[1] + kx * src.dilations[1];
          const inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
          out[r * len + j] = inside ? src.x[src.xOffset + (c * H + ih) * W + iw] : 0;
        }
      }
    }
  }
  return out;
}

/** 2-D windows: padding wider than the kernel reach, strides, dilations, 1-row images, K over one 256 slice. */
const im2colCases: Omit<Im2colSource, "x" | "xOffset">[] = [
  {
    channels: 3,
    inShape: [9, 11],
    outShape: [9, 11],
    kernel: [3, 3],
    strides: [1, 1],
    dilations: [1, 1],
    padsBegin: [1, 1],
    p0: 0,
  },
  {
    channels: 40,
    inShape: [14, 13],
    outShape: [7, 7],
    kernel: [3, 3],
    strides: [2, 2],
    dilations: [1, 1],
    padsBegin: [1, 1],
    p0: 0,
  },
  {
    channels: 2,
    inShape: [12, 10],
    outShape: [6, 3],
    kernel: [2, 3],
    strides: [2, 3],
    dilations: [2, 2],
    padsBegin: [2, 0],
    p0: 5,
  },
  {
    channels: 3,
    inShape: [20, 20],
    outShape: [10, 10],
    kernel: [7, 7],
    strides: [2, 2],
    dilations: [1, 1],
    padsBegin: [3, 3],
    p0: 0,
  },
  {
    channels: 1,
    inShape: [1, 8],
    outShape: [1, 12],
    kernel: [1, 3],
    strides: [1, 1],
    dilations: [1, 1],
    padsBegin: [0, 4],
    p0: 0,
  },
  {
    channels: 4,
    inShape: [30, 30],
    outShape: [30, 30],
    kernel: [3, 3],
    strides: [1, 1],
    dilations: [1, 1],
    padsBegin: [1, 1],
    p0: 0,
  },
];

Deno.test("im2colF32() equals the im2col matrix by definition", () => {
  const rnd = random(12);
  for (const g of im2colCases) {
    const src = {
      ...g,
      x: Float32Array.from({ length: 3 + g.channels * g.inShape[0] * g.inShape[1] }, rnd),
      xOffset: 3,
    };
    const len = g.outShape[0] * g.outShape[1] - g.p0;
    const want = naiveIm2col(src, len);
    const out = new Float32Array(want.length + 2).fill(NaN);
    assert.ok(im2colF32(src, len, out, 1));
    assert.deepEqual(out.subarray(1, 1 + want.length), want);
    assert.ok(Number.isNaN(out[0]) && Number.isNaN(out[want.length + 1]));
  }
});

Deno.test("gemmIm2colF32() equals gemm() on the stored im2col matrix bit for bit, on 1 thread", () => {
  const rnd = random(13);
  const before = threadCount();
  setThreadCount(1);
  try {
    for (const g of im2colCases) {
      const src = {
        ...g,
        x: Float32Array.from({ length: 3 + g.channels * g.inShape[0] * g.inShape[1] }, rnd),
        xOffset: 3,
      };
      const [n, k] = [g.outShape[0] * g.outShape[1] - g.p0, g.channels * g.kernel[0] * g.kernel[1]];
      const m = 7;
      const a = Float32Array.from({ length: 2 + m * k }, rnd);
      const bias = Float32Array.from({ length: m }, rnd);
      const epilogue = { bias, biasOffset: 0, lo: -1, hi: 1.5 };
      const want = new Float32Array(m * n);
      gemm({ m, n, k, a, aOffset: 2, b: naiveIm2col(src, n), c: want, epilogue });
      const c = new Float32Array(m * n);
      assert.ok(gemmIm2colF32({ m, n, k, a, aOffset: 2, c, epilogue, im2col: src }));
      assert.deepEqual(c, want);
    }
  } finally {
    setThreadCount(before);
  }
});

Deno.test("convolve() (float32, 2-D, im2col in the GEMM) is bit-identical on 1 thread and 2 (image staged for the worker)", async () => {
  const before = threadCount();
  setThreadCount(2);
  try {
    assert.equal(await startWorkers(), 1);
    const rnd = random(14);
    // Split by columns (output positions) and, stride 2, by rows (output channels).
    for (const [cin, cout, H, stride] of [[32, 64, 32, 1], [64, 128, 16, 2]]) {
      const Ho = H / stride;
      const x = Float32Array.from({ length: cin * H * H }, rnd);
      const w = Float32Array.from({ length: cout * cin * 9 }, rnd);
      const bias = Float32Array.from({ length: cout }, rnd);
      const geometry = {
        inShape: [H, H],
        outShape: [Ho, Ho],
        kernel: [3, 3],
        strides: [stride, stride],
        dilations: [1, 1],
        padsBegin: [1, 1],
      };
      const run = (threads: number): Float32Array => {
        setThreadCount(threads);
        const y = new Float32Array(cout * Ho * Ho);
        convolve({ x, w, bias, y, batch: 1, inChannels: cin, outChannels: cout, group: 1, ...geometry });
        return y;
      };
      const parts = workerPartCount();
      const single = run(1);
      assert.equal(workerPartCount(), parts);
      // The calling thread may take every part while the worker sleeps (a busy machine): repeat until it has not.
      for (let tries = 0; tries < 50 && workerPartCount() === parts; tries++) assert.deepEqual(run(2), single);
      assert.ok(workerPartCount() > parts, "the worker computed no part of the 2-thread convolution");
      // Both equal gemm() on the im2col matrix by definition.
      const want = new Float32Array(cout * Ho * Ho);
      const b = naiveIm2col({ ...geometry, x, xOffset: 0, channels: cin, p0: 0 }, Ho * Ho);
      setThreadCount(1);
      const epilogue = { bias, biasOffset: 0, lo: -Infinity, hi: Infinity };
      gemm({ m: cout, n: Ho * Ho, k: cin * 9, a: w, b, c: want, epilogue });
      assert.deepEqual(single, want);
    }
  } finally {
    setThreadCount(before);
    releasePool();
  }
});
