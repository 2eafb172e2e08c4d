/**
 * Truncated SVD speed and accuracy: our randomized SVD (passes/linalg.ts) on a
 * 4096x4096 and a 25088x4096 (VGG-16 fc6) float32 matrix with a decaying
 * spectrum, at ranks 64 and 256, next to numpy's `linalg.svd(full_matrices=False)`
 * of the same matrices in the same run (bench/svd_numpy.py, Debian python3-numpy),
 * which also gives the optimal truncation error. Run:
 * `deno run -A bench/svd_bench.ts [--small]` (`--small`: 4096x4096 only).
 * The matrices go to numpy as .npy files in `$TMPDIR/cnnc_svd_bench/`.
 */
import { join } from "node:path";
import { writeNpy } from "../data/npy.ts";
import { gemm } from "../ir/ops/gemm_kernel.ts";
import { gaussianSource, randomizedSvd } from "../passes/linalg.ts";

const PYTHON = "/usr/bin/python3";
const DIR = join(Deno.env.get("TMPDIR") ?? "/tmp", "cnnc_svd_bench");
const RANKS = [64, 256];

/** `A = X diag(d) Y + noise`: X (m x 512), Y (512 x n) Gaussian, d_j = exp(-j / 64), noise 1e-3 Gaussian. */
function decayingMatrix(m: number, n: number, seed: number): Float32Array {
  const p = 512;
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

/** `||A - U S Vt||_F / ||A||_F` with float32 products. */
function reconstructionError(a: Float32Array, m: number, n: number, svd: ReturnType<typeof randomizedSvd>): number {
  const k = svd.k;
  const us = new Float32Array(m * k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) us[i * k + j] = svd.u[i * k + j] * svd.s[j];
  const d = Float32Array.from(a);
  gemm({ m, n, k, a: us, b: Float32Array.from(svd.vt), c: d, alpha: -1, beta: 1 });
  let num = 0;
  let den = 0;
  for (let i = 0; i < d.length; i++) {
    num += d[i] * d[i];
    den += a[i] * a[i];
  }
  return Math.sqrt(num / den);
}

interface NumpyResult {
  seconds: number;
  optimal: Record<string, number>;
}

async function numpySvd(path: string): Promise<NumpyResult> {
  const script = new URL("./svd_numpy.py", import.meta.url).pathname;
  const out = await new Deno.Command(PYTHON, { args: [script, path, ...RANKS.map(String)], stdout: "piped" }).output();
  if (!out.success) throw new Error(`numpy reference failed (${PYTHON} ${script})`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

const shapes: [number, number][] = Deno.args.includes("--small") ? [[4096, 4096]] : [[4096, 4096], [25088, 4096]];
await Deno.mkdir(DIR, { recursive: true });
console.log("| matrix | rank | ours (s) | numpy full SVD (s) | numpy / ours | our error | optimal error | ratio |");
console.log("|---|---|---|---|---|---|---|---|");
for (const [m, n] of shapes) {
  const a = decayingMatrix(m, n, m + n);
  const path = join(DIR, `a_${m}x${n}.npy`);
  await Deno.writeFile(path, writeNpy({ dtype: "f32", shape: [m, n], data: a }));
  const reference = await numpySvd(path);
  for (const k of RANKS) {
    const t0 = performance.now();
    const svd = randomizedSvd(a, m, n, k);
    const seconds = (performance.now() - t0) / 1000;
    const error = reconstructionError(a, m, n, svd);
    const optimal = reference.optimal[String(k)];
    console.log(
      `| ${m}x${n} | ${k} | ${seconds.toFixed(2)} | ${reference.seconds.toFixed(2)} | ${
        (reference.seconds / seconds).toFixed(1)
      } | ${error.toExponential(4)} | ${optimal.toExponential(4)} | ${(error / optimal).toFixed(4)} |`,
    );
  }
  await Deno.remove(path);
}
