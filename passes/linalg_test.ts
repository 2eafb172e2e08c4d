import assert from "node:assert/strict";
import {
  cholesky,
  choleskyQr,
  estimateEnergyFraction,
  exactSvd,
  gaussianSource,
  gramSpectrum,
  growingSvd,
  orthonormalize,
  randomizedSvd,
  solveLowerRight,
  type Svd,
  symmetricEigen,
  truncatedSvd,
} from "./linalg.ts";

function randomMatrix(m: number, n: number, seed: number): Float64Array {
  const r = gaussianSource(seed);
  return Float64Array.from({ length: m * n }, r);
}

/** `||A - U_k S_k V_k^T||_F^2` for the first `k` triplets of `svd` (all by default). */
function squaredError(a: ArrayLike<number>, svd: Svd, k = svd.k): number {
  const { m, n } = svd;
  let err = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let v = 0;
      for (let p = 0; p < k; p++) v += svd.u[i * svd.k + p] * svd.s[p] * svd.vt[p * n + j];
      err += (a[i * n + j] - v) ** 2;
    }
  }
  return err;
}

/** `max |A - U S Vt|` and the largest deviation of `U^T U` and `V^T V` from the identity. */
function check(a: ArrayLike<number>, svd: Svd): { recon: number; orth: number } {
  const { m, n, k, u, s, vt } = svd;
  let recon = 0;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let v = 0;
      for (let p = 0; p < k; p++) v += u[i * k + p] * s[p] * vt[p * n + j];
      recon = Math.max(recon, Math.abs(v - a[i * n + j]));
    }
  }
  let orth = 0;
  for (let p = 0; p < k; p++) {
    for (let q = 0; q < k; q++) {
      let du = 0;
      let dv = 0;
      for (let i = 0; i < m; i++) du += u[i * k + p] * u[i * k + q];
      for (let j = 0; j < n; j++) dv += vt[p * n + j] * vt[q * n + j];
      const id = p === q ? 1 : 0;
      orth = Math.max(orth, Math.abs(du - id), Math.abs(dv - id));
    }
  }
  return { recon, orth };
}

Deno.test("exactSvd() reconstructs tall and wide matrices with orthonormal factors and sorted values", () => {
  for (const [m, n] of [[9, 5], [5, 9], [6, 6]]) {
    const a = randomMatrix(m, n, m * 10 + n);
    const svd = exactSvd(a, m, n);
    assert.equal(svd.k, Math.min(m, n));
    const { recon, orth } = check(a, svd);
    assert.ok(recon < 1e-12 && orth < 1e-12, `${m}x${n}: ${recon} ${orth}`);
    for (let i = 1; i < svd.k; i++) assert.ok(svd.s[i - 1] >= svd.s[i]);
  }
});

/** `m x n` matrix of rank `r` with singular values 2^-i (i < r). */
function lowRank(m: number, n: number, r: number, seed: number): { a: Float64Array; s: number[] } {
  const qu = orthonormalize(randomMatrix(m, r, seed), m, r).q;
  const qv = orthonormalize(randomMatrix(n, r, seed + 1), n, r).q;
  const s = Array.from({ length: r }, (_, i) => 2 ** -i);
  const a = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let v = 0;
      for (let p = 0; p < r; p++) v += qu[i * r + p] * s[p] * qv[j * r + p];
      a[i * n + j] = v;
    }
  }
  return { a, s };
}

Deno.test("randomizedSvd() recovers the spectrum and factors of a low-rank matrix (float64 and float32)", () => {
  const { a, s } = lowRank(300, 200, 8, 5);
  const svd = randomizedSvd(a, 300, 200, 8);
  assert.equal(svd.k, 8);
  s.forEach((v, i) => assert.ok(Math.abs(svd.s[i] - v) < 1e-10, `s${i}: ${svd.s[i]} vs ${v}`));
  const { recon, orth } = check(a, svd);
  assert.ok(recon < 1e-10 && orth < 1e-10, `${recon} ${orth}`);
  const svd32 = randomizedSvd(Float32Array.from(a), 300, 200, 8);
  s.forEach((v, i) => assert.ok(Math.abs(svd32.s[i] - v) < 1e-5, `f32 s${i}: ${svd32.s[i]} vs ${v}`));
});

Deno.test("randomizedSvd() on a full-rank matrix is close to the optimal truncation and reproducible", () => {
  const m = 200;
  const n = 150;
  // Decaying spectrum: A = X diag(0.9^j) Y.
  const x = randomMatrix(m, n, 9);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) x[i * n + j] *= 0.9 ** j;
  const y = randomMatrix(n, n, 10);
  const a = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < n; p++) {
      const xv = x[i * n + p];
      for (let j = 0; j < n; j++) a[i * n + j] += xv * y[p * n + j];
    }
  }
  const exact = exactSvd(a, m, n);
  const k = 10;
  const approx = randomizedSvd(a, m, n, k);
  const tail = (s: Float64Array, from: number): number => s.slice(from).reduce((t, v) => t + v * v, 0);
  const optimal = Math.sqrt(tail(exact.s, k));
  const err = squaredError(a, approx, k);
  assert.ok(Math.sqrt(err) < 1.01 * optimal, `${Math.sqrt(err)} vs optimal ${optimal}`);
  assert.deepEqual(randomizedSvd(a, m, n, k).s, approx.s);
});

Deno.test("truncatedSvd() takes Gram-matrix triplets as exact as the dense SVD's, and the dense SVD for values near zero", () => {
  for (const [m, n, k] of [[120, 90, 12], [60, 150, 40]]) {
    const a = randomMatrix(m, n, m + n);
    const exact = exactSvd(a, m, n);
    const svd = truncatedSvd(a, m, n, k);
    const s1 = exact.s[0];
    assert.equal(svd.k, k);
    svd.s.forEach((v, i) =>
      assert.ok(Math.abs(v - exact.s[i]) <= 1e-10 * s1, `${m}x${n} s${i}: ${v} vs ${exact.s[i]}`)
    );
    // The optimal rank-k approximation (its error is the exact tail) with orthonormal factors.
    const { orth } = check(a, svd);
    assert.ok(orth < 1e-10, `${m}x${n}: orthogonality ${orth}`);
    const err = squaredError(a, svd, k);
    const tail = exact.s.slice(k).reduce((t, v) => t + v * v, 0);
    assert.ok(Math.abs(err - tail) <= 1e-10 * s1 * s1, `${m}x${n}: ${err} vs ${tail}`);
  }
  // Rank 3, k = 6: s_4..s_6 are rounding noise, whose vectors only the dense SVD resolves (orthonormal).
  const x = randomMatrix(40, 3, 1);
  const y = randomMatrix(3, 30, 2);
  const low = new Float64Array(40 * 30);
  for (let i = 0; i < 40; i++) {
    for (let p = 0; p < 3; p++) for (let j = 0; j < 30; j++) low[i * 30 + j] += x[i * 3 + p] * y[p * 30 + j];
  }
  const svd = truncatedSvd(low, 40, 30, 6);
  assert.deepEqual(svd.s, exactSvd(low, 40, 30).s.slice(0, 6));
  assert.ok(check(low, svd).orth < 1e-12);
});

Deno.test("orthonormalize() gives Q R = Y and continues the basis past dependent columns", () => {
  const m = 7;
  const y = randomMatrix(m, 3, 3);
  for (let i = 0; i < m; i++) y[i * 3 + 2] = 2 * y[i * 3] - y[i * 3 + 1]; // third column dependent
  const zero = Float64Array.from(y);
  for (let i = 0; i < m; i++) zero[i * 3 + 2] = 0; // third column zero: Cholesky-QR gives up, Gram-Schmidt continues
  assert.equal(choleskyQr(zero, m, 3), null);
  for (const [input, r22] of [[y, 1e-12], [zero, 0]] as const) {
    const { q, r } = orthonormalize(input, m, 3);
    for (let p = 0; p < 3; p++) {
      for (let s = 0; s < 3; s++) {
        let d = 0;
        for (let i = 0; i < m; i++) d += q[i * 3 + p] * q[i * 3 + s];
        assert.ok(Math.abs(d - (p === s ? 1 : 0)) < 1e-12);
      }
    }
    assert.ok(Math.abs(r[2 * 3 + 2]) <= r22, `r22 = ${r[2 * 3 + 2]}`);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < 3; j++) {
        let v = 0;
        for (let p = 0; p <= j; p++) v += q[i * 3 + p] * r[p * 3 + j];
        assert.ok(Math.abs(v - input[i * 3 + j]) < 1e-12);
      }
    }
  }
});

Deno.test("choleskyQr() orthonormalizes ill-conditioned columns (shifted first pass) in float64 and float32", () => {
  const m = 300;
  const l = 20;
  for (const [cond, f32] of [[1e3, false], [1e12, false], [1e3, true], [1e6, true]] as const) {
    // Y = X diag(cond^-j/(l-1)): condition number about cond.
    const y = randomMatrix(m, l, 12);
    for (let i = 0; i < m; i++) for (let j = 0; j < l; j++) y[i * l + j] *= cond ** (-j / (l - 1));
    const input = f32 ? Float32Array.from(y) : y;
    const { q, r } = choleskyQr(input, m, l)!;
    const tol = f32 ? 1e-5 : 1e-13;
    let orth = 0;
    for (let p = 0; p < l; p++) {
      for (let s = 0; s < l; s++) {
        let d = 0;
        for (let i = 0; i < m; i++) d += q[i * l + p] * q[i * l + s];
        orth = Math.max(orth, Math.abs(d - (p === s ? 1 : 0)));
      }
    }
    assert.ok(orth < tol, `cond ${cond} f32 ${f32}: orthogonality ${orth}`);
    let recon = 0;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < l; j++) {
        let v = 0;
        for (let p = 0; p <= j; p++) v += q[i * l + p] * r[p * l + j];
        recon = Math.max(recon, Math.abs(v - input[i * l + j]));
      }
    }
    assert.ok(recon < tol, `cond ${cond} f32 ${f32}: |QR - Y| ${recon}`);
  }
});

Deno.test("cholesky() factors an SPD matrix, solveLowerRight() undoes it, and a non-SPD matrix is refused", () => {
  const n = 5;
  const b = randomMatrix(n, n, 4);
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) for (let p = 0; p < n; p++) c[i * n + j] += b[i * n + p] * b[j * n + p];
    c[i * n + i] += 0.1;
  }
  const l = cholesky(c, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let v = 0;
      for (let p = 0; p < n; p++) v += l[i * n + p] * l[j * n + p];
      assert.ok(Math.abs(v - c[i * n + j]) < 1e-12);
    }
  }
  // X L = B  with B = Z L: X must be Z.
  const z = randomMatrix(2, n, 6);
  const zl = new Float64Array(2 * n);
  for (let r = 0; r < 2; r++) {
    for (let j = 0; j < n; j++) for (let p = 0; p < n; p++) zl[r * n + j] += z[r * n + p] * l[p * n + j];
  }
  const x = solveLowerRight(zl, 2, l, n);
  x.forEach((v, i) => assert.ok(Math.abs(v - z[i]) < 1e-12));
  assert.throws(() => cholesky(new Float64Array([1, 2, 2, 1]), 2), {
    message: "matrix is not positive definite (pivot 1 is -3)",
  });
});

Deno.test("symmetricEigen() matches the squared singular values of B when C = B B^T, with orthonormal vectors", () => {
  for (const n of [1, 2, 7, 40]) {
    const b = randomMatrix(n, n, 20 + n);
    const c = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) for (let p = 0; p < n; p++) c[i * n + j] += b[i * n + p] * b[j * n + p];
    }
    const { values, vectors } = symmetricEigen(c, n);
    const s = exactSvd(b, n, n).s;
    const top = values[0];
    values.forEach((v, i) =>
      assert.ok(Math.abs(v - s[i] ** 2) < 1e-13 * top, `n ${n} value ${i}: ${v} vs ${s[i] ** 2}`)
    );
    const only = symmetricEigen(c, n, false).values;
    only.forEach((v, i) => assert.ok(Math.abs(v - values[i]) < 1e-13 * top, `n ${n}: values alone ${i}`));
    for (let i = 0; i < n; i++) {
      for (let a = 0; a < n; a++) {
        let cv = 0;
        for (let k = 0; k < n; k++) cv += c[a * n + k] * vectors[i * n + k];
        assert.ok(Math.abs(cv - values[i] * vectors[i * n + a]) < 1e-12 * top, `n ${n}: residual`);
      }
      for (let j = 0; j < n; j++) {
        let d = 0;
        for (let k = 0; k < n; k++) d += vectors[i * n + k] * vectors[j * n + k];
        assert.ok(Math.abs(d - (i === j ? 1 : 0)) < 1e-12, `n ${n}: orthogonality`);
      }
    }
  }
});

Deno.test("gramSpectrum() gives exactSvd's singular values and optimal truncations (wide, tall, float32, rank deficient)", () => {
  const cases: [number, number, boolean, number][] = [[30, 70, false, 30], [70, 30, false, 30], [30, 70, true, 30], [
    50,
    40,
    false,
    6,
  ]];
  for (const [m, n, f32, rank] of cases) {
    // A = X diag(0.8^j) Y with `rank` terms.
    const x = randomMatrix(m, rank, m);
    const y = randomMatrix(rank, n, n);
    const a64 = new Float64Array(m * n);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < rank; p++) {
        for (let j = 0; j < n; j++) a64[i * n + j] += x[i * rank + p] * 0.8 ** p * y[p * n + j];
      }
    }
    const a = f32 ? Float32Array.from(a64) : a64;
    const exact = exactSvd(a, m, n);
    const spectrum = gramSpectrum(a, m, n);
    const s1 = exact.s[0];
    const label = `${m}x${n} f32=${f32} rank ${rank}`;
    spectrum.s.forEach((v, i) => assert.ok(Math.abs(v * v - exact.s[i] ** 2) < 1e-12 * s1 * s1, `${label} s${i}`));
    // Eigenvalues alone first, eigenvectors on demand: the same triplets.
    assert.deepEqual(gramSpectrum(a, m, n, false).triplets(5), spectrum.triplets(5));
    for (const k of [1, 5, Math.min(m, n)]) {
      const svd = spectrum.triplets(k);
      assert.equal(svd.k, k);
      // Relative error of the rank-k reconstruction equals the optimal (exact SVD tail) one.
      const err = squaredError(a, svd, k);
      const tail = exact.s.slice(k).reduce((t, v) => t + v * v, 0);
      assert.ok(
        Math.abs(Math.sqrt(err) - Math.sqrt(tail)) < 1e-9 * s1,
        `${label} k ${k}: ${Math.sqrt(err)} vs ${Math.sqrt(tail)}`,
      );
      // V orthogonality degrades like ε (s_1 / s_k)^2: checked on the leading triplets.
      if (k <= 5) assert.ok(check(a, svd).orth < 1e-9, `${label} k ${k}: orthogonality`);
    }
  }
});

Deno.test("growingSvd() stops at the energy target with values below the exact ones, and the exact error", () => {
  const m = 160;
  const n = 120;
  // Decaying spectrum: A = X diag(0.93^j) Y.
  const x = randomMatrix(m, n, 31);
  const y = randomMatrix(n, n, 32);
  const a = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < n; p++) {
      const xv = x[i * n + p] * 0.93 ** p;
      for (let j = 0; j < n; j++) a[i * n + j] += xv * y[p * n + j];
    }
  }
  const energy = a.reduce((t, v) => t + v * v, 0);
  const exact = exactSvd(a, m, n);
  const rankOf = (s: ArrayLike<number>, target: number): number => {
    let kept = 0;
    for (let i = 0; i < s.length; i++) if ((kept += s[i] * s[i]) >= target * energy) return i + 1;
    return Infinity;
  };
  for (const input of [a, Float32Array.from(a)]) {
    const tol = input instanceof Float32Array ? 1e-5 : 1e-10;
    const svd = growingSvd(input, m, n, 100, 0.95 * energy, { block: 8 })!;
    assert.equal(svd.k % 8, 0);
    const held = svd.s.reduce((t, v) => t + v * v, 0);
    assert.ok(held >= 0.95 * energy * (1 - tol), `held ${held}`);
    // Values never above the exact ones (up to rounding), and the leading ones close.
    svd.s.forEach((v, i) => assert.ok(v <= exact.s[i] * (1 + tol), `s${i}: ${v} > ${exact.s[i]}`));
    for (let i = 0; i < 10; i++) assert.ok(Math.abs(svd.s[i] - exact.s[i]) < 1e-3 * exact.s[i], `s${i}`);
    const rank = rankOf(svd.s, 0.95);
    const exactRank = rankOf(exact.s, 0.95);
    assert.ok(rank >= exactRank && rank <= exactRank + 2, `rank ${rank} vs exact ${exactRank}`);
    // ||A - U S Vt||^2 = ||A||^2 - sum s^2 (Q orthonormal), and U, V orthonormal.
    const { recon, orth } = check(input, svd);
    assert.ok(orth < 100 * tol, `orthogonality ${orth}`);
    const err = squaredError(input, svd);
    assert.ok(Math.abs(err - (energy - held)) < 100 * tol * energy, `${err} vs ${energy - held} (max ${recon})`);
    assert.deepEqual(growingSvd(input, m, n, 100, 0.95 * energy, { block: 8 })!.s, svd.s);
    assert.equal(growingSvd(input, m, n, 10, 0.95 * energy, { block: 8 }), null);
  }
});

/** Exact fraction of the energy in the top r singular values (from the exact SVD). */
function topFraction(s: ArrayLike<number>, r: number): number {
  let top = 0;
  let total = 0;
  for (let i = 0; i < s.length; i++) {
    total += s[i] * s[i];
    if (i < r) top += s[i] * s[i];
  }
  return top / total;
}

Deno.test("estimateEnergyFraction() is close to the exact top-r energy on flat and decaying spectra", () => {
  const m = 96;
  const n = 160;
  const flat = randomMatrix(m, n, 51);
  const decaying = flat.map((v, i) => v * 0.95 ** Math.floor(i / n));
  for (const a of [flat, decaying]) {
    const exact = exactSvd(a, m, n).s;
    for (const r of [10, 48, 59, 90]) {
      for (const input of [a, Float32Array.from(a)]) {
        const est = estimateEnergyFraction(input, m, n, r);
        assert.ok(Math.abs(est - topFraction(exact, r)) < 0.02, `r=${r}: ${est} vs ${topFraction(exact, r)}`);
      }
    }
    // The transpose has the same spectrum; full rank holds everything; deterministic.
    const t = new Float64Array(m * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j];
    assert.ok(Math.abs(estimateEnergyFraction(t, n, m, 48) - topFraction(exact, 48)) < 0.02);
    assert.equal(estimateEnergyFraction(a, m, n, m), 1);
    assert.equal(estimateEnergyFraction(a, m, n, 48), estimateEnergyFraction(a, m, n, 48));
  }
});

Deno.test("growingSvd() stops early on a flat spectrum no useful rank can reach, agreeing with the exact rule", () => {
  // Flat spectrum: the best 50 of 120 singular values hold far less than 90% of the energy.
  const m = 150;
  const n = 120;
  const a = randomMatrix(m, n, 61);
  const energy = a.reduce((t, v) => t + v * v, 0);
  const exact = exactSvd(a, m, n).s;
  assert.ok(topFraction(exact, 50) < 0.9);
  assert.equal(growingSvd(a, m, n, 50, 0.9 * energy, { block: 8 }), null);
  // The early stop answers like the full growth (margin so large the stop never fires).
  assert.equal(growingSvd(a, m, n, 50, 0.9 * energy, { block: 8, boundMargin: 1e9 }), null);
  // Decaying spectrum: same answer (and rank at or above the exact one) with and without the stop.
  const d = a.map((v, i) => v * 0.9 ** (i % n));
  const de = d.reduce((t, v) => t + v * v, 0);
  const dExact = exactSvd(d, m, n).s;
  const fast = growingSvd(d, m, n, 50, 0.9 * de, { block: 8 })!;
  const slow = growingSvd(d, m, n, 50, 0.9 * de, { block: 8, boundMargin: 1e9 })!;
  assert.deepEqual(fast.s, slow.s);
  // The stop is live: with no room granted beyond the held energy, growth ends after the first block.
  assert.ok(fast.k > 8);
  assert.equal(growingSvd(d, m, n, 50, 0.9 * de, { block: 8, boundMargin: 0 }), null);
  const rankOf = (s: ArrayLike<number>): number => {
    let kept = 0;
    for (let i = 0; i < s.length; i++) if ((kept += s[i] * s[i]) >= 0.9 * de) return i + 1;
    return Infinity;
  };
  assert.ok(rankOf(fast.s) >= rankOf(dExact) && rankOf(fast.s) <= rankOf(dExact) + 1);
});

Deno.test("gramSpectrum() keeps its stated bound at a size that batches the rotations: |s_i^2 - exact| <= min(m, n) ε s_1^2", () => {
  // Odd small side (the rotations' scalar column), a decaying spectrum plus noise, vs ml-matrix's Golub-Kahan SVD.
  const [m, n] = [301, 420];
  const x = randomMatrix(m, 40, 1);
  const y = randomMatrix(40, n, 2);
  const a = randomMatrix(m, n, 3).map((v) => 1e-3 * v);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < 40; p++) for (let j = 0; j < n; j++) a[i * n + j] += x[i * 40 + p] * 0.9 ** p * y[p * n + j];
  }
  const exact = exactSvd(a, m, n).s;
  const spectrum = gramSpectrum(a, m, n);
  const bound = Math.min(m, n) * 2 ** -53 * exact[0] ** 2;
  let worst = 0;
  spectrum.s.forEach((v, i) => (worst = Math.max(worst, Math.abs(v * v - exact[i] ** 2))));
  assert.ok(worst <= bound, `worst ${worst / exact[0] ** 2} s_1^2, bound ${bound / exact[0] ** 2} s_1^2`);
  // The vectors: a rank-40 truncation loses only the tail (an exact projection).
  const svd = spectrum.triplets(40);
  const tail = exact.slice(40).reduce((t, v) => t + v * v, 0);
  const err = squaredError(a, svd);
  assert.ok(Math.abs(err - tail) <= 1e-10 * exact[0] ** 2, `${err} vs ${tail}`);
  assert.ok(check(a, svd).orth < 1e-10);
});
