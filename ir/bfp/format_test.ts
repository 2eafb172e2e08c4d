import assert from "node:assert/strict";
import { bfpDot, blockRange, convLayerShape, partitionCost, schemeBlocking } from "../../tests/bfp_oracle.ts";
import {
  alignToExponent,
  type BfpExponentRule,
  type BfpFormat,
  bfpFormat,
  type BfpRounding,
  exponentRange,
  floorLog2,
  roundScaled,
  splitmix32,
} from "./format.ts";
import { type BfpTensor, dequantizeBfp, quantizeBfp } from "./quantize.ts";

const DETERMINISTIC: BfpRounding[] = ["nearest-even", "toward-zero", "toward-positive", "toward-negative"];

/** Exact 2^n by repeated doubling/halving (plain float math, independent of the module's bit tricks). */
function slowPow2(n: number): number {
  let p = 1;
  for (let i = 0; i < n; i++) p *= 2;
  for (let i = 0; i > n; i--) p /= 2;
  return p;
}

/** Slow reference for one block: explicit search for floor(log2) and case analysis for rounding. */
function referenceBlock(
  xs: number[],
  L: number,
  E: number,
  mode: BfpRounding,
  rule: BfpExponentRule,
): { e: number; m: number[]; saturated: number } {
  const maxM = slowPow2(L - 1) - 1;
  const bias = slowPow2(E - 1) - 1;
  const amax = Math.max(...xs.map(Math.abs));
  if (amax === 0) return { e: -bias, m: xs.map(() => 0), saturated: 0 };
  let e = 0;
  while (slowPow2(e) > amax) e--;
  while (slowPow2(e + 1) <= amax) e++;
  if (rule === "never-clamp" && amax / slowPow2(e - (L - 2)) > maxM) e++;
  if (e < -bias) e = -bias;
  if (e > bias) e = bias;
  const step = slowPow2(e - (L - 2));
  let saturated = 0;
  const m = xs.map((x) => {
    const q = x / step;
    const lower = Math.floor(q);
    const frac = q - lower;
    let r: number;
    if (frac === 0) r = lower;
    else if (mode === "nearest-even") {
      r = frac < 0.5 ? lower : frac > 0.5 ? lower + 1 : lower % 2 === 0 ? lower : lower + 1;
    } else if (mode === "toward-zero") r = q > 0 ? lower : lower + 1;
    else if (mode === "toward-positive") r = lower + 1;
    else r = lower;
    if (Math.abs(r) > maxM) {
      saturated++;
      r = Math.sign(r) * maxM;
    }
    return r;
  });
  return { e, m, saturated };
}

/** Seeded standard normal samples (Box-Muller over splitmix32). */
function gaussian(n: number, seed: number, sigma = 1): Float64Array {
  const rng = splitmix32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = (rng.next() + 1) / 4294967297, v = rng.next() / 4294967296;
    out[i] = sigma * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

/** Step 2^(e-(L-2)) of the block holding element i. */
function stepOf(q: BfpTensor, i: number): number {
  const row = Math.floor(i / q.length), j = Math.floor((i % q.length) / q.block);
  return slowPow2(q.exponents[row * q.blocksPerRow + j] - (q.format.mantissaBits - 2));
}

Deno.test("quantizeBfp() matches the slow reference on every pair of a fine grid (L 2..5, E 2..3, all modes, both rules)", () => {
  const grid: number[] = [];
  for (let k = -64; k <= 64; k++) grid.push(k / 16);
  for (let k = -10; k <= 10; k++) if (k !== 0) grid.push(k * 0.37);
  const values = new Float64Array(grid.length * grid.length * 2);
  for (let a = 0, i = 0; a < grid.length; a++) {
    for (let b = 0; b < grid.length; b++, i += 2) (values[i] = grid[a]), (values[i + 1] = grid[b]);
  }
  let checked = 0, clamps = 0, flushes = 0, overflows = 0;
  for (let L = 2; L <= 5; L++) {
    for (let E = 2; E <= 3; E++) {
      for (const rounding of DETERMINISTIC) {
        for (const exponentRule of ["floor", "never-clamp"] as const) {
          const q = quantizeBfp(values, bfpFormat({ mantissaBits: L, exponentBits: E, rounding, exponentRule }), {
            length: 2,
            block: 0,
          }, "grid");
          let saturated = 0;
          for (let b = 0; b < values.length / 2; b++) {
            const ref = referenceBlock([values[2 * b], values[2 * b + 1]], L, E, rounding, exponentRule);
            const got = { e: q.exponents[b], m: [q.mantissas[2 * b], q.mantissas[2 * b + 1]] };
            if (got.e !== ref.e || got.m[0] !== ref.m[0] || got.m[1] !== ref.m[1]) {
              assert.fail(
                `L=${L} E=${E} ${rounding} ${exponentRule} block [${values[2 * b]}, ${values[2 * b + 1]}]: ` +
                  `got e=${got.e} m=${got.m}, expected e=${ref.e} m=${ref.m}`,
              );
            }
            saturated += ref.saturated;
            if (ref.saturated > 0 && ref.e < slowPow2(E - 1) - 1) clamps++;
            if (ref.e === -(slowPow2(E - 1) - 1) && ref.m.every((m) => m === 0) && values[2 * b] !== 0) flushes++;
            checked++;
          }
          assert.equal(q.saturated, saturated);
          overflows += q.overflowBlocks;
        }
      }
    }
  }
  assert.equal(checked, 64 * 149 * 149);
  // The grid really exercises the floor-rule clamp, the flush below the minimum and the overflow above the maximum.
  assert.ok(clamps > 0 && flushes > 0 && overflows > 0, `clamps ${clamps}, flushes ${flushes}, overflows ${overflows}`);
});

Deno.test("floorLog2() is exact next to powers of two and for subnormals, where Math.log2 rounds", () => {
  for (let n = -1074; n <= 1023; n++) {
    const p = n >= -1022 ? 2 ** n : Number.MIN_VALUE * 2 ** (n + 1074);
    assert.equal(floorLog2(p), n);
    if (n > -1022) assert.equal(floorLog2(p * (1 - 2 ** -53)), n - 1);
    if (n >= -1022 && n < 1023) assert.equal(floorLog2(p * (2 - 2 ** -52)), n);
  }
  assert.equal(Math.log2(8 * (1 - 2 ** -53)), 3); // why the bit extraction is needed
  assert.equal(floorLog2(8 * (1 - 2 ** -53)), 2);
});

Deno.test("quantizeBfp() with nearest-even errs by at most half a step on unsaturated elements (random blocks)", () => {
  for (
    const [L, blocking] of [[8, { length: 576, block: 32 }], [8, { length: 576, block: 0 }], [4, {
      length: 64,
      block: 16,
    }]] as const
  ) {
    const x = gaussian(576 * 64, L * 7 + blocking.block);
    const q = quantizeBfp(x, bfpFormat({ mantissaBits: L }), blocking, "x");
    const y = dequantizeBfp(q);
    const maxM = 2 ** (L - 1) - 1;
    let worst = 0;
    for (let i = 0; i < x.length; i++) {
      if (Math.abs(q.mantissas[i]) === maxM && Math.abs(x[i]) > maxM * stepOf(q, i)) continue; // clamped
      worst = Math.max(worst, Math.abs(y[i] - x[i]) / stepOf(q, i));
    }
    assert.ok(worst <= 0.5, `L=${L} block ${blocking.block}: worst error ${worst} steps`);
    assert.ok(worst > 0.49, `the bound is tight (worst ${worst})`);
    assert.equal(q.overflowBlocks + q.underflowBlocks, 0);
  }
});

Deno.test("quantizeBfp() mean error is ~0 for nearest-even and stochastic, while toward-zero shrinks magnitudes", () => {
  const x = gaussian(1 << 16, 11).map(Math.abs); // post-ReLU-like, positive
  // L = 8: steps small against the density's slope (at L = 4 a decreasing density biases nearest-even too).
  const maxM = 2 ** (8 - 1) - 1;
  /** Mean error in steps over unclamped elements, and mean |dequantized| / mean |x|. */
  const stats = (rounding: BfpRounding): { bias: number; shrink: number } => {
    const q = quantizeBfp(x, bfpFormat({ mantissaBits: 8, rounding, seed: 5 }), { length: 64, block: 32 }, "x");
    const y = dequantizeBfp(q);
    let err = 0, n = 0, sumX = 0, sumY = 0;
    for (let i = 0; i < x.length; i++) {
      sumX += x[i];
      sumY += y[i];
      if (q.mantissas[i] === maxM && x[i] > maxM * stepOf(q, i)) continue; // clamped by the floor rule
      err += (y[i] - x[i]) / stepOf(q, i);
      n++;
    }
    return { bias: err / n, shrink: sumY / sumX };
  };
  const rne = stats("nearest-even"), sr = stats("stochastic"), rz = stats("toward-zero");
  assert.ok(Math.abs(rne.bias) < 0.01, `nearest-even bias ${rne.bias} steps`);
  assert.ok(Math.abs(sr.bias) < 0.01, `stochastic bias ${sr.bias} steps`);
  assert.ok(Math.abs(rz.bias + 0.5) < 0.02, `toward-zero loses half a step on average (${rz.bias})`);
  assert.ok(rz.shrink < 0.99 && Math.abs(rne.shrink - 1) < 0.0005, `mean |x| shrinks: ${rz.shrink} vs ${rne.shrink}`);
  assert.ok(Math.abs(stats("toward-positive").bias - 0.5) < 0.02);
  assert.ok(Math.abs(stats("toward-negative").bias + 0.5) < 0.02);
});

Deno.test("quantizeBfp() stochastic rounding picks a neighbour with the right frequency, reproducibly per seed", () => {
  const x = new Float64Array(40000).fill(1.25); // with L=3, e=0: scaled 2.5... use one block per element
  const f = bfpFormat({ mantissaBits: 8, rounding: "stochastic", seed: 42 });
  // Block max 2 fixes e = 1 and step 2^-5; 1.25 + 2^-7 sits a quarter of a step above 1.25.
  const values = new Float64Array(x.length * 2);
  for (let i = 0; i < x.length; i++) (values[2 * i] = 2), (values[2 * i + 1] = 1.25 + 2 ** -7);
  const q = quantizeBfp(values, f, { length: 2, block: 0 }, "x");
  let ups = 0;
  for (let i = 0; i < x.length; i++) {
    const m = q.mantissas[2 * i + 1];
    assert.ok(m === 40 || m === 41, `neighbour of 40.25, got ${m}`);
    if (m === 41) ups++;
    assert.equal(q.mantissas[2 * i], 64); // exact values stay exact
  }
  assert.ok(Math.abs(ups / x.length - 0.25) < 0.01, `round-up frequency ${ups / x.length}`);
  assert.deepEqual(quantizeBfp(values, f, { length: 2, block: 0 }, "x").mantissas, q.mantissas);
  const other = quantizeBfp(values, bfpFormat({ ...f, seed: 43 }), { length: 2, block: 0 }, "x");
  assert.notDeepEqual(other.mantissas, q.mantissas);
});

Deno.test("quantizeBfp(dequantizeBfp(q)) gives q back (floor rule) and the same values (never-clamp), all modes", () => {
  const x = gaussian(4096, 3, 0.01);
  for (let i = 0; i < 64; i++) x[i] *= 1e-4; // first blocks underflow at E=5
  for (const rounding of [...DETERMINISTIC, "stochastic"] as const) {
    for (const L of [2, 5, 8, 12, 16]) {
      const floor = bfpFormat({ mantissaBits: L, rounding, seed: 9 });
      const q = quantizeBfp(x, floor, { length: 256, block: 32 }, "x");
      const again = quantizeBfp(dequantizeBfp(q), floor, { length: 256, block: 32 }, "x");
      assert.deepEqual(again.exponents, q.exponents, `${rounding} L=${L}`);
      assert.deepEqual(again.mantissas, q.mantissas, `${rounding} L=${L}`);
      const never = bfpFormat({ ...floor, exponentRule: "never-clamp" });
      const y = dequantizeBfp(quantizeBfp(x, never, { length: 256, block: 32 }, "x"));
      assert.deepEqual(dequantizeBfp(quantizeBfp(y, never, { length: 256, block: 32 }, "x")), y);
    }
  }
});

Deno.test("quantizeBfp() gives an all-zero block the minimum exponent and zero mantissas", () => {
  const q = quantizeBfp(new Float32Array([0, -0, 0, 0, 1, 0, 0, 0]), bfpFormat(), { length: 4, block: 0 }, "x");
  assert.deepEqual([...q.exponents], [-15, 0]);
  assert.deepEqual([...q.mantissas], [0, 0, 0, 0, 64, 0, 0, 0]);
  assert.equal(q.underflowBlocks, 0);
  assert.equal(q.saturated, 0);
});

Deno.test("quantizeBfp() keeps the minimum exponent below the range and flushes tiny values toward zero", () => {
  // E = 5: e >= -15, step 2^(-15-6) = 2^-21 ≈ 4.77e-7.
  const q = quantizeBfp(new Float32Array([1e-6, 1e-7, -3e-7, 1e-40]), bfpFormat(), { length: 4, block: 0 }, "x");
  assert.deepEqual([...q.exponents], [-15]);
  assert.deepEqual([...q.mantissas], [2, 0, -1, 0]); // 2.097, 0.21 (flushed), -0.63, a float32 subnormal
  assert.equal(q.underflowBlocks, 1);
  const mx = quantizeBfp(new Float32Array([1e-6]), bfpFormat({ exponentBits: 8 }), { length: 1, block: 0 }, "x");
  assert.deepEqual([mx.exponents[0], mx.mantissas[0]], [-20, 67]); // E8 reaches it: 1e-6 / 2^-26 = 67.1
});

Deno.test("quantizeBfp() saturates blocks above the exponent range and reports it", () => {
  const q = quantizeBfp(new Float64Array([1e6, -70000, 1000, 1]), bfpFormat(), { length: 2, block: 0 }, "x");
  assert.deepEqual([...q.exponents], [15, 9]);
  assert.deepEqual([...q.mantissas], [127, -127, 125, 0]); // step 2^9: 1e6 and 7e4 saturate
  assert.equal(q.overflowBlocks, 1);
  assert.equal(q.saturated, 2);
  const huge = quantizeBfp(new Float64Array([1e300, -1e300]), bfpFormat({ rounding: "stochastic" }), {
    length: 2,
    block: 0,
  }, "x");
  assert.deepEqual([...huge.mantissas], [127, -127]);
  assert.deepEqual([...dequantizeBfp(huge)], [127 * 2 ** 9, -127 * 2 ** 9]);
});

Deno.test("quantizeBfp() handles exact powers of two at the block max, the floor-rule clamp and never-clamp", () => {
  const f = bfpFormat();
  const pow = quantizeBfp(new Float64Array([4, -1, 0.0625, 0.03125, 0.09375]), f, { length: 5, block: 0 }, "x");
  assert.deepEqual([pow.exponents[0], ...pow.mantissas], [2, 64, -16, 1, 0, 2]); // 0.5 and 1.5 steps: ties to even
  const below = 4 - 2 ** -40; // floor(log2) = 1; scaled 127.99999 rounds to 128 and is clamped
  const clamp = quantizeBfp(new Float64Array([below, -1]), f, { length: 2, block: 0 }, "x");
  assert.deepEqual([clamp.exponents[0], ...clamp.mantissas, clamp.saturated], [1, 127, -32, 1]);
  const never = quantizeBfp(new Float64Array([below, -1]), bfpFormat({ exponentRule: "never-clamp" }), {
    length: 2,
    block: 0,
  }, "x");
  assert.deepEqual([never.exponents[0], ...never.mantissas, never.saturated], [2, 64, -16, 0]);
  // never-clamp raises only above maxM: 127.4 steps stays at e = 1 under the floor rule and under never-clamp alike.
  const fits = 127 * 2 ** -5;
  assert.deepEqual(
    [
      ...quantizeBfp(new Float64Array([fits]), bfpFormat({ exponentRule: "never-clamp" }), { length: 1, block: 0 }, "x")
        .exponents,
    ],
    [1],
  );
  // A negative maximum clamps the same way, and toward-negative clamps it even when nearest-even would not.
  const neg = quantizeBfp(new Float64Array([-(127.25 * 2 ** -5)]), bfpFormat({ rounding: "toward-negative" }), {
    length: 1,
    block: 0,
  }, "x");
  assert.deepEqual([neg.mantissas[0], neg.saturated], [-127, 1]);
});

Deno.test("quantizeBfp() rejects NaN and Inf naming the tensor and the element", () => {
  assert.throws(
    () => quantizeBfp(new Float32Array([1, NaN, 2]), bfpFormat(), { length: 3, block: 0 }, "conv1.weight"),
    { message: 'BFP quantization of tensor "conv1.weight": element 1 is NaN (only finite values have a BFP form)' },
  );
  assert.throws(
    () => quantizeBfp(new Float64Array([1, 2, 3, -Infinity]), bfpFormat(), { length: 2, block: 0 }, "x"),
    { message: 'BFP quantization of tensor "x": element 3 is -Infinity (only finite values have a BFP form)' },
  );
  assert.throws(
    () => quantizeBfp(new Float32Array([NaN]), bfpFormat(), { length: 1, block: 0 }, "first"),
    { message: /tensor "first": element 0 is NaN/ },
  );
});

Deno.test("bfpFormat() and quantizeBfp() reject bad parameters with RangeErrors that say what was expected", () => {
  assert.throws(() => bfpFormat({ mantissaBits: 1 }), {
    name: "RangeError",
    message: "BFP mantissaBits must be an integer in [2, 16], found 1",
  });
  assert.throws(() => bfpFormat({ mantissaBits: 17 }), { message: /mantissaBits .* found 17/ });
  assert.throws(() => bfpFormat({ exponentBits: 9 }), {
    message: "BFP exponentBits must be an integer in [2, 8], found 9",
  });
  assert.throws(() => bfpFormat({ rounding: "up" as BfpRounding }), {
    message: /rounding must be one of .* found "up"/,
  });
  assert.throws(() => bfpFormat({ exponentRule: "ceil" as BfpExponentRule }), {
    message: 'BFP exponentRule must be "floor" or "never-clamp", found "ceil"',
  });
  assert.throws(() => bfpFormat({ seed: 0.5 }), { message: "BFP seed must be an integer, found 0.5" });
  assert.throws(() => quantizeBfp(new Float32Array(5), bfpFormat(), { length: 2, block: 0 }, "w"), {
    message: 'BFP blocking of tensor "w": 5 elements are not whole rows of 2',
  });
  assert.throws(() => quantizeBfp(new Float32Array(4), bfpFormat(), { length: 2, block: -1 }, "w"), {
    message: /length and block must be non-negative integers, found length 2, block -1/,
  });
});

Deno.test("exponentRange() and the mantissa storage follow the format", () => {
  assert.deepEqual(exponentRange(bfpFormat({ exponentBits: 2 })), { bias: 1, min: -1, max: 1 });
  const f = new Float32Array([1, 2, 3]);
  assert.ok(
    quantizeBfp(f, bfpFormat({ mantissaBits: 8 }), { length: 3, block: 0 }, "x").mantissas instanceof Int8Array,
  );
  const wide = quantizeBfp(f, bfpFormat({ mantissaBits: 16 }), { length: 3, block: 0 }, "x");
  assert.ok(wide.mantissas instanceof Int16Array);
  assert.deepEqual([...wide.mantissas], [8192, 16384, 24576]);
  // Extremes of the widest format are exact in float32: (2^15-1)·2^(127-14) and 1·2^(-127-14).
  const big = quantizeBfp(new Float64Array([2 ** 128 - 2 ** 113]), bfpFormat({ mantissaBits: 16, exponentBits: 8 }), {
    length: 1,
    block: 0,
  }, "x");
  assert.deepEqual([...dequantizeBfp(big)], [2 ** 128 - 2 ** 113]);
  const tiny = quantizeBfp(new Float64Array([2 ** -141]), bfpFormat({ mantissaBits: 16, exponentBits: 8 }), {
    length: 1,
    block: 0,
  }, "x");
  assert.deepEqual([tiny.mantissas[0], dequantizeBfp(tiny)[0]], [1, 2 ** -141]);
});

Deno.test("roundScaled() rounds ties and non-ties per mode", () => {
  const cases: [number, number[]][] = [ // value: nearest-even, toward-zero, toward-positive, toward-negative
    [2.5, [2, 2, 3, 2]],
    [3.5, [4, 3, 4, 3]],
    [-2.5, [-2, -2, -2, -3]],
    [-3.5, [-4, -3, -3, -4]],
    [-0.25, [0, 0, 0, -1]],
    [7, [7, 7, 7, 7]],
    [2 ** 60 + 2 ** 9, [2 ** 60 + 2 ** 9, 2 ** 60 + 2 ** 9, 2 ** 60 + 2 ** 9, 2 ** 60 + 2 ** 9]],
  ];
  for (const [v, expected] of cases) {
    assert.deepEqual(DETERMINISTIC.map((mode) => roundScaled(v, mode) + 0), expected, `value ${v}`);
  }
  assert.throws(() => roundScaled(0.5, "stochastic"), { message: /stochastic BFP rounding needs a random stream/ });
});

/** Exact rational `n / 2^k` of a finite float (k >= 0 chosen large enough), as BigInt numerator for a fixed k. */
function toScaledBigInt(v: number, k: number): bigint {
  const s = v * 2 ** k;
  assert.ok(Number.isInteger(s), `${v} is not a multiple of 2^-${k}`);
  return BigInt(s);
}

Deno.test("bfpDot() equals the exact rational dot product of the dequantized blocks", () => {
  const f = bfpFormat();
  const w = quantizeBfp(gaussian(64 * 96, 21, 0.05), f, { length: 96, block: 32 }, "w");
  const x = quantizeBfp(gaussian(16 * 96, 22, 3), f, { length: 96, block: 32 }, "x");
  const wv = dequantizeBfp(w), xv = dequantizeBfp(x);
  const K = 60; // every value is a multiple of 2^-60 here, every product of 2^-120
  for (let wb = 0; wb < w.exponents.length; wb += 7) {
    for (let xb = 0; xb < x.exponents.length; xb += 5) {
      if (wb % 3 !== xb % 3) continue; // same block position along K
      const r = bfpDot(w, wb, x, xb);
      const wr = blockRange(w, wb), xr = blockRange(x, xb);
      let exact = 0n;
      for (let k = 0; k < wr.count; k++) {
        exact += toScaledBigInt(wv[wr.start + k], K) * toScaledBigInt(xv[xr.start + k], K);
      }
      assert.equal(r.saturations, 0);
      assert.equal(r.exponent, w.exponents[wb] + x.exponents[xb] - 12);
      assert.equal(BigInt(r.sum) * 2n ** BigInt(r.exponent + 2 * K), exact);
    }
  }
});

Deno.test("bfpDot() sums exactly and saturates a narrow accumulator once, whatever the order", () => {
  const f = bfpFormat();
  const a = new Float64Array(8).fill(127 / 64);
  for (let i = 3; i < 6; i++) a[i] = -127 / 64;
  const w = quantizeBfp(a, f, { length: 8, block: 0 }, "w"); // e = 0, m = ±127
  const x = quantizeBfp(new Float64Array(8).fill(127 / 64), f, { length: 8, block: 0 }, "x");
  // Partial sums reach 3 · 16129 = 48387, past 16 bits, but only the total (32258) is checked: no saturation,
  // where an adder saturating after every addition would end at 16638.
  assert.deepEqual(bfpDot(w, 0, x, 0, 16), { sum: 32258, exponent: -12, saturations: 0 });
  const all = quantizeBfp(new Float64Array(8).fill(127 / 64), f, { length: 8, block: 0 }, "a");
  assert.deepEqual(bfpDot(all, 0, x, 0, 16), { sum: 32767, exponent: -12, saturations: 1 });
  assert.deepEqual(bfpDot(w, 0, x, 0), { sum: 2 * 16129, exponent: -12, saturations: 0 }); // exact in 32 bits
  const cancel = quantizeBfp(
    new Float64Array([1, 1, -1, -1].map((v) => v * 127 / 64)),
    f,
    { length: 4, block: 0 },
    "c",
  );
  const ones = quantizeBfp(new Float64Array(4).fill(127 / 64), f, { length: 4, block: 0 }, "o");
  assert.deepEqual(bfpDot(cancel, 0, ones, 0, 8), { sum: 0, exponent: -12, saturations: 0 });
  const negative = quantizeBfp(new Float64Array(8).fill(-127 / 64), f, { length: 8, block: 0 }, "n");
  assert.deepEqual(bfpDot(negative, 0, x, 0, 16).sum, -32768);
  assert.throws(() => bfpDot(w, 0, x, 0, 54), {
    message: "BFP accumulatorBits must be an integer in [8, 53], found 54",
  });
  const short = quantizeBfp(new Float64Array(4), f, { length: 4, block: 0 }, "s");
  assert.throws(() => bfpDot(w, 0, short, 0), {
    message: "BFP dot product needs blocks of equal length, found 8 and 4",
  });
  const wide = quantizeBfp(new Float64Array(8), bfpFormat({ mantissaBits: 9 }), { length: 8, block: 0 }, "x");
  assert.throws(() => bfpDot(w, 0, wide, 0), { message: "BFP dot product needs equal mantissa widths, found 8 and 9" });
  assert.throws(() => bfpDot(w, 1, x, 0), { message: "BFP block index must be an integer in [0, 1), found 1" });
});

Deno.test("alignToExponent() shifts biases to the accumulator exponent with the format's rounding and saturates", () => {
  const mode = (rounding: BfpRounding): BfpFormat => bfpFormat({ rounding });
  // 2.5 units and -2.5 units of 2^-12: ties.
  const tie = 2.5 * 2 ** -12;
  assert.deepEqual(DETERMINISTIC.map((r) => alignToExponent(tie, 0, -12, mode(r)).value), [2, 2, 3, 2]);
  assert.deepEqual(DETERMINISTIC.map((r) => alignToExponent(-tie, 0, -12, mode(r)).value + 0), [-2, -2, -2, -3]);
  // Integer bias mantissas: a rounding right shift (5·2^-3 → units of 2^-1: 1.25) and an exact left shift.
  assert.deepEqual(DETERMINISTIC.map((r) => alignToExponent(5, -3, -1, mode(r)).value), [1, 1, 2, 1]);
  assert.deepEqual(alignToExponent(3, 2, 0, bfpFormat()), { value: 12, saturated: false });
  // Saturation at the accumulator width.
  assert.deepEqual(alignToExponent(1e6, 0, 0, bfpFormat(), 16), { value: 32767, saturated: true });
  assert.deepEqual(alignToExponent(-40000, 0, 0, bfpFormat(), 16), {
    value: -32768,
    saturated: true,
  });
  assert.deepEqual(alignToExponent(2 ** 1000, 0, -100, bfpFormat()), { value: 2 ** 31 - 1, saturated: true });
  // Extremes of the exponents stay exact: the tiniest float and a shift past 1023.
  assert.equal(alignToExponent(Number.MIN_VALUE, 0, 0, mode("toward-positive")).value, 1);
  assert.equal(alignToExponent(Number.MIN_VALUE, 0, 0, bfpFormat()).value, 0);
  assert.equal(alignToExponent(Number.MIN_VALUE, 1074 + 5, 0, bfpFormat()).value, 32);
  assert.equal(alignToExponent(3 * 2 ** 1020, -1100, -82, bfpFormat()).value, 3 * 2 ** 2);
  // Stochastic: reproducible from the stream.
  const f = bfpFormat({ rounding: "stochastic", seed: 1 });
  const a = splitmix32(3), b = splitmix32(3);
  for (let i = 0; i < 20; i++) {
    const v = alignToExponent(1.5, 0, 0, f, undefined, a).value;
    assert.ok(v === 1 || v === 2);
    assert.equal(alignToExponent(1.5, 0, 0, f, undefined, b).value, v);
  }
  assert.throws(() => alignToExponent(NaN, 0, 0, bfpFormat()), {
    message: "BFP bias alignment: value NaN is not finite",
  });
});

Deno.test("partitionCost() counts blocks, formatting operations and exponent bits of both schemes", () => {
  const layer = convLayerShape({ cin: 512, cout: 512, kh: 3, kw: 3, hout: 14, wout: 14, group: 1 });
  assert.deepEqual(layer, { outChannels: 512, reduction: 4608, positions: 196 });
  const f = bfpFormat();
  assert.deepEqual(partitionCost("per-channel", layer, f), {
    weightBlocks: 512,
    inputBlocks: 1,
    runtimeFormattingOps: 1,
    formattingOps: 513,
    weightExponentBits: 2560,
    inputExponentBits: 5,
    exponentAdds: 512 * 196,
    alignments: 0,
  });
  assert.deepEqual(partitionCost("mx", layer, bfpFormat({ exponentBits: 8 }), 32), {
    weightBlocks: 512 * 144,
    inputBlocks: 196 * 144,
    runtimeFormattingOps: 196 * 144,
    formattingOps: 512 * 144 + 196 * 144,
    weightExponentBits: 512 * 144 * 8,
    inputExponentBits: 196 * 144 * 8,
    exponentAdds: 512 * 196 * 144,
    alignments: 512 * 196 * 143,
  });
  // A partial last block counts as a block (K = 27, block 32 → 1; K = 33 → 2).
  assert.equal(partitionCost("mx", { outChannels: 1, reduction: 33, positions: 1 }, f).weightBlocks, 2);
  assert.equal(convLayerShape({ cin: 32, cout: 32, kh: 3, kw: 3, hout: 8, wout: 8, group: 32 }).reduction, 9);
  assert.throws(() => partitionCost("tile" as "mx", layer, f), {
    message: 'BFP scheme must be "per-channel" or "mx", found "tile"',
  });
  assert.throws(() => partitionCost("mx", layer, f, 0), { message: "BFP block must be a positive integer, found 0" });
  assert.throws(() => partitionCost("mx", { ...layer, positions: 0 }, f), {
    message: "BFP layer positions must be a positive integer, found 0",
  });
});

Deno.test("schemeBlocking() blocks weights and per-sample inputs so quantizeBfp() yields the counted blocks", () => {
  const layer = { outChannels: 4, reduction: 40, positions: 6 };
  const f = bfpFormat();
  for (const scheme of ["per-channel", "mx"] as const) {
    const cost = partitionCost(scheme, layer, f, 16);
    const w = quantizeBfp(gaussian(4 * 40, 1), f, schemeBlocking(scheme, "weight", layer, 16), "w");
    const x = quantizeBfp(gaussian(6 * 40, 2), f, schemeBlocking(scheme, "input", layer, 16), "x");
    assert.equal(w.exponents.length, cost.weightBlocks, scheme);
    assert.equal(x.exponents.length, cost.inputBlocks, scheme);
  }
});

Deno.test("quantizeBfp() gives float32 and float64 inputs identical results, float32 subnormals included", () => {
  const g = gaussian(8192, 77);
  const f32 = new Float32Array(g.length);
  for (let i = 0; i < g.length; i++) f32[i] = g[i] * 2 ** (((i >> 5) % 57) * 5 - 160); // blocks from 2^-160 to 2^120
  for (let i = 0; i < 32; i++) f32[64 + i] = 0;
  const f64 = Float64Array.from(f32);
  assert.ok(f32.some((v) => v !== 0 && Math.abs(v) < 2 ** -126), "some float32 subnormals");
  for (const format of [bfpFormat(), bfpFormat({ mantissaBits: 16, exponentBits: 8 })]) {
    for (const exponentRule of ["floor", "never-clamp"] as const) {
      const f = bfpFormat({ ...format, exponentRule });
      const a = quantizeBfp(f32, f, { length: 256, block: 32 }, "x");
      const b = quantizeBfp(f64, f, { length: 256, block: 32 }, "x");
      assert.deepEqual(a, b);
      assert.ok(a.underflowBlocks > 0 && (f.exponentBits === 8 || a.overflowBlocks > 0));
    }
  }
  // A block of float32 subnormals at E = 8, L = 16: e = floor(log2(1e-40)) = -133 is raised to -127, step 2^-141.
  const sub = quantizeBfp(new Float32Array([1e-40]), bfpFormat({ mantissaBits: 16, exponentBits: 8 }), {
    length: 1,
    block: 0,
  }, "x");
  assert.deepEqual([sub.exponents[0], sub.mantissas[0]], [-127, Math.round(Math.fround(1e-40) * 2 ** 141)]);
  assert.throws(() => quantizeBfp(new Float32Array([1, 2, Infinity]), bfpFormat(), { length: 3, block: 0 }, "a"), {
    message: 'BFP quantization of tensor "a": element 2 is Infinity (only finite values have a BFP form)',
  });
});

Deno.test("quantizeBfp() never-clamp stays exact at the ends of the float64 range", () => {
  const f = bfpFormat({ exponentRule: "never-clamp" });
  const tiny = quantizeBfp(new Float64Array([Number.MIN_VALUE, 0]), f, { length: 2, block: 0 }, "x");
  assert.deepEqual([tiny.exponents[0], ...tiny.mantissas, tiny.underflowBlocks], [-15, 0, 0, 1]);
  const huge = quantizeBfp(new Float64Array([Number.MAX_VALUE, -1]), f, { length: 2, block: 0 }, "x");
  assert.deepEqual([huge.exponents[0], ...huge.mantissas, huge.overflowBlocks], [15, 127, 0, 1]);
  // Raising past the top of the range saturates: 2^15 · 1.999 needs e = 16 under never-clamp.
  const top = quantizeBfp(new Float64Array([2 ** 15 * 1.999]), f, { length: 1, block: 0 }, "x");
  assert.deepEqual([top.exponents[0], top.mantissas[0], top.overflowBlocks, top.saturated], [15, 127, 1, 1]);
});
