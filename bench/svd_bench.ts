/**
 * The float64 GEMM kernel (`wasm_gemm64.ts`) against the JavaScript float64
 * kernel it replaced, per CPU second; SVD speed and accuracy against numpy in the same run (bench/svd_numpy.py,
 * numpy on OpenBLAS, timed in its own process): our randomized SVD next to
 * numpy's randomized SVD with the same algorithm (oversampling 10, 2 power
 * iterations with QR, float32) on a 4096x4096 matrix at rank 256; our exact
 * spectrum and triplets from the Gram matrix (`gramSpectrum`) next to
 * `numpy.linalg.svd` (float64) and to numpy's Gram + `numpy.linalg.eigh` on
 * layer-sized matrices; the energy rule on a large layer by `growingSvd`
 * next to the former restart-at-doubled-rank loop. Matrices have a decaying
 * spectrum plus noise.
 * Times are medians of `--repeats` runs (default 3). Run, OpenBLAS on one thread:
 *
 * `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 deno run -A bench/svd_bench.ts`
 *
 * `--threads=N` sets our threads (default 1; pair it with `OPENBLAS_NUM_THREADS=N`).
 * `--old` adds the former dense JavaScript SVD (`exactSvd`, ml-matrix) on the
 * layer-sized matrices and times `truncatedSvd` against it on small ones (slow). The matrices go to numpy as .npy files in
 * `$TMPDIR/cnnc_svd_bench/`.
 */
import { join } from "node:path";
import process from "node:process";
import { writeNpy } from "../data/npy.ts";
import { gemm } from "../ir/ops/gemm_kernel.ts";
import { setThreadCount } from "../ir/parallel.ts";
import { float64GemmKernel, gemm64 } from "../ir/ops/wasm_gemm64.ts";
import { exactSvd, gaussianSource, gramSpectrum, growingSvd, randomizedSvd, truncatedSvd } from "../passes/linalg.ts";

const PYTHON = "/usr/bin/python3";
const DIR = join(Deno.env.get("TMPDIR") ?? "/tmp", "cnnc_svd_bench");
const flag = (name: string): string | undefined => Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
const REPEATS = Number(flag("repeats") ?? 3);
const OLD = Deno.args.includes("--old");
/** Our threads (`--threads=N`, default 1, beside OpenBLAS's `OPENBLAS_NUM_THREADS`). */
const THREADS = Number(flag("threads") ?? 1);
setThreadCount(THREADS);

/** `A = X diag(d) Y + noise`: X (m x p), Y (p x n) Gaussian, d_j = exp(-j / 64), noise 1e-3 Gaussian. */
function decayingMatrix(m: number, n: number, seed: number): Float32Array {
  const p = Math.min(512, m, n);
  const random = gaussianSource(seed);
  const x = new Float32Array(m * p);
  for (let i = 0; i < m; i++) for (let j = 0; j < p; j++) x[i * p + j] = random() * Math.exp(-j / 64) / Math.sqrt(p);
  const y = new Float32Array(p * n);
  for (let i = 0; i < y.length; i++) y[i] = random() / Math.sqrt(n);
  const a = new Float32Array(m * n);
  for (let i = 0; i < a.length; i++) a[i] = 1e-3 * random() / Math.sqrt(n);
  gemm({ m, n, k: p, a: x, b: y, c: a, beta: 1 });
  return a;
}

interface NumpyRun {
  blas: string[];
  threads: string | null;
  results: Record<string, { seconds: number[]; s: number[] }>;
}

async function numpy(a: Float32Array, m: number, n: number, tasks: string[]): Promise<NumpyRun> {
  const path = join(DIR, `a_${m}x${n}.npy`);
  await Deno.writeFile(path, writeNpy({ dtype: "f32", shape: [m, n], data: a }));
  const script = new URL("./svd_numpy.py", import.meta.url).pathname;
  const args = [script, path, String(REPEATS), ...tasks];
  const out = await new Deno.Command(PYTHON, { args, stdout: "piped" }).output();
  await Deno.remove(path);
  if (!out.success) throw new Error(`numpy reference failed (${PYTHON} ${script})`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

/** Median seconds of `REPEATS` calls and the last result. */
function timed<T>(f: () => T): { seconds: number; result: T } {
  const seconds: number[] = [];
  let result: T;
  for (let r = 0; r < REPEATS; r++) {
    const t0 = performance.now();
    result = f();
    seconds.push((performance.now() - t0) / 1000);
  }
  return { seconds: median(seconds), result: result! };
}

/** Relative Frobenius error of the best projection onto the triplets found: `sqrt(1 - sum s_i^2 / ||A||^2)`. */
function projectionError(s: ArrayLike<number>, energy: number): number {
  let kept = 0;
  for (let i = 0; i < s.length; i++) kept += s[i] * s[i];
  return Math.sqrt(Math.max(0, 1 - kept / energy));
}

/** Largest `|s_i - r_i| / r_1`, and largest `|s_i - r_i| / r_i` over `r_i >= 1e-3 r_1`. */
function valueErrors(s: ArrayLike<number>, r: number[]): { abs: number; rel: number } {
  let abs = 0;
  let rel = 0;
  for (let i = 0; i < r.length; i++) {
    const d = Math.abs(s[i] - r[i]);
    abs = Math.max(abs, d / r[0]);
    if (r[i] >= 1e-3 * r[0]) rel = Math.max(rel, d / r[i]);
  }
  return { abs, rel };
}

await Deno.mkdir(DIR, { recursive: true });
const sec = (x: number): string => x.toFixed(3);
let blas = "";

console.log(
  `Float64 GEMM (square), GFLOP per CPU second, best of ${REPEATS}: ${float64GemmKernel()} vs the JavaScript kernel:\n`,
);
console.log("| size | wasm_gemm64 | JS float64 (gemm_kernel) | ratio |");
console.log("|---|---|---|---|");
for (const size of [256, 512, 1024]) {
  const random = gaussianSource(size);
  const [a, b] = [0, 1].map(() => Float64Array.from({ length: size * size }, random));
  const c = new Float64Array(size * size);
  const cpuSeconds = (f: () => void): number => {
    let best = Infinity;
    for (let r = 0; r < REPEATS; r++) {
      const t0 = process.cpuUsage();
      f();
      const t = process.cpuUsage(t0);
      best = Math.min(best, (t.user + t.system) / 1e6);
    }
    return best;
  };
  const flop = 2 * size ** 3 / 1e9;
  const ours = flop / cpuSeconds(() => gemm64({ m: size, n: size, k: size, a, b, c }));
  const js = flop / cpuSeconds(() => gemm({ m: size, n: size, k: size, a, b, c }));
  console.log(`| ${size} | ${ours.toFixed(1)} | ${js.toFixed(1)} | ${(ours / js).toFixed(1)}x |`);
}

console.log("\nRandomized SVD (oversample 10, 2 power iterations), float32 input:\n");
console.log("| matrix | rank | ours (s) | numpy same algorithm (s) | ours / numpy | our error | numpy error |");
console.log("|---|---|---|---|---|---|---|");
for (const [m, n, k] of [[4096, 4096, 256]]) {
  const a = decayingMatrix(m, n, m + n);
  let energy = 0;
  for (const v of a) energy += v * v;
  const ours = timed(() => randomizedSvd(a, m, n, k));
  const ref = await numpy(a, m, n, [`rsvd:${k}`]);
  blas = `${ref.blas.join(", ")}, OPENBLAS_NUM_THREADS=${ref.threads}`;
  const theirs = ref.results[`rsvd:${k}`];
  const t = median(theirs.seconds);
  console.log(
    `| ${m}x${n} | ${k} | ${sec(ours.seconds)} | ${sec(t)} | ${(ours.seconds / t).toFixed(1)}x | ${
      projectionError(ours.result.s, energy).toExponential(4)
    } | ${projectionError(theirs.s, energy).toExponential(4)} |`,
  );
}

console.log("\nEnergy rule (keep 0.9 of the squared spectrum) on a large layer, at most 2048 kept:\n");
console.log("| matrix | growingSvd (s) | rank | former doubling (s) | rank | former / growing |");
console.log("|---|---|---|---|---|---|");
for (const [m, n] of [[4096, 4096]]) {
  const a = decayingMatrix(m, n, m + n + 1);
  let energy = 0;
  for (const v of a) energy += v * v;
  const target = 0.9 * energy;
  const rankOf = (s: ArrayLike<number>): number => {
    let kept = 0;
    for (let i = 0; i < s.length; i++) if ((kept += s[i] * s[i]) >= target) return i + 1;
    return Infinity;
  };
  const grown = timed(() => growingSvd(a, m, n, 2048, target)!);
  // The rule before growingSvd: randomized SVDs at ranks 64, 128, ... until one holds the target.
  const doubled = timed(() => {
    for (let k = 64;; k *= 2) {
      const svd = randomizedSvd(a, m, n, Math.min(k, 2048));
      if (svd.s.reduce((t, v) => t + v * v, 0) >= target || k >= 2048) return svd;
    }
  });
  console.log(
    `| ${m}x${n} | ${sec(grown.seconds)} | ${rankOf(grown.result.s)} | ${sec(doubled.seconds)} | ${
      rankOf(doubled.result.s)
    } | ${(doubled.seconds / grown.seconds).toFixed(1)}x |`,
  );
}

console.log("\nExact SVD of layer-sized matrices (all triplets), float32 input, float64 work:\n");
const old = OLD ? " old exactSvd (s) |" : "";
console.log(
  `| matrix | ours: Gram + eig (s) | ours: values only (s) |${old} numpy svd (s) | numpy Gram + eigh (s) |` +
    " ours / numpy svd | ours / numpy eigh | max abs error / s_1 | max rel error (s_i >= 1e-3 s_1) |",
);
console.log(`|---|---|---|${OLD ? "---|" : ""}---|---|---|---|---|---|`);
for (const [m, n] of [[512, 4608], [256, 2304], [2048, 512]]) {
  const a = decayingMatrix(m, n, m + n);
  const full = timed(() => {
    const spectrum = gramSpectrum(a, m, n);
    return spectrum.triplets(Math.min(m, n));
  });
  const values = timed(() => gramSpectrum(a, m, n, false).s);
  const dense = OLD ? ` ${sec(timed(() => exactSvd(a, m, n)).seconds)} |` : "";
  const ref = await numpy(a, m, n, ["svd", "gram"]);
  const tSvd = median(ref.results.svd.seconds);
  const tGram = median(ref.results.gram.seconds);
  const err = valueErrors(full.result.s, ref.results.svd.s);
  console.log(
    `| ${m}x${n} | ${sec(full.seconds)} | ${sec(values.seconds)} |${dense} ${sec(tSvd)} | ${sec(tGram)} | ${
      (full.seconds / tSvd).toFixed(1)
    }x | ${(full.seconds / tGram).toFixed(1)}x | ${err.abs.toExponential(2)} | ${err.rel.toExponential(2)} |`,
  );
}
if (OLD) {
  console.log(
    "\ntruncatedSvd (k = min / 10) on small matrices, float64: Gram-matrix triplets vs the former dense exactSvd:\n",
  );
  console.log("| matrix | k | truncatedSvd (s) | exactSvd (s) | exactSvd / truncatedSvd |");
  console.log("|---|---|---|---|---|");
  for (const [m, n] of [[300, 500], [600, 800]]) {
    const a = Float64Array.from(decayingMatrix(m, n, m + n));
    const k = Math.min(m, n) / 10;
    const ours = timed(() => truncatedSvd(a, m, n, k)).seconds;
    const dense = timed(() => exactSvd(a, m, n)).seconds;
    console.log(`| ${m}x${n} | ${k} | ${sec(ours)} | ${sec(dense)} | ${(dense / ours).toFixed(1)}x |`);
  }
}
console.log(`\nnumpy BLAS: ${blas}; ours: ${THREADS} thread(s). Medians of ${REPEATS} runs.`);
