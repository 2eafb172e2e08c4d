/**
 * BFP quantization throughput: `quantizeBfp` (ir/bfp/quantize.ts, e5m8, nearest-even)
 * on 100 MB of float32 weights (5426 rows of 4608 = VGG-16's 512x512x3x3 row
 * length), per-channel rows and MX blocks of 32, next to a vectorized numpy
 * implementation of the same formula in the same run (bench/bfp_numpy.py,
 * Debian python3-numpy), whose mantissas and exponents must agree bit for bit.
 * Both sides report the best of 5 runs, in wall-clock time and in CPU time (the
 * fairer figure on a loaded machine). Run:
 * `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 deno bench -A bench/bfp_bench.ts`
 * (the table prints first).
 * The input goes to numpy as .npy files in `$TMPDIR/cnnc_bfp_bench/`.
 * @module
 */
import { join } from "node:path";
import process from "node:process";
import { readNpyFile, writeNpy } from "../data/npy.ts";
import { bfpFormat, splitmix32 } from "../ir/bfp/format.ts";
import { type BfpBlocking, quantizeBfp } from "../ir/bfp/quantize.ts";

const PYTHON = "/usr/bin/python3";
const DIR = join(Deno.env.get("TMPDIR") ?? "/tmp", "cnnc_bfp_bench");
const ROW = 4608;
const ROWS = 5426; // 25,003,008 values = 100.0 MB
const FORMAT = bfpFormat();
const SCHEMES: [string, BfpBlocking][] = [["per-channel rows of 4608", { length: ROW, block: 0 }], [
  "mx blocks of 32",
  { length: ROW, block: 32 },
]];

/** Gaussian weights whose per-row standard deviation spans 4 octaves (as trained conv layers do). */
function weights(seed: number): Float32Array {
  const rng = splitmix32(seed);
  const out = new Float32Array(ROW * ROWS);
  for (let r = 0; r < ROWS; r++) {
    const sigma = 0.01 * 2 ** (4 * rng.next() / 4294967296);
    for (let i = r * ROW; i < (r + 1) * ROW; i += 2) {
      const u = (rng.next() + 1) / 4294967297, v = rng.next() / 4294967296;
      const radius = sigma * Math.sqrt(-2 * Math.log(u));
      out[i] = radius * Math.cos(2 * Math.PI * v);
      out[i + 1] = radius * Math.sin(2 * Math.PI * v);
    }
  }
  return out;
}

interface NumpyResult {
  seconds: number;
  megabytesPerSecond: number;
  cpuSeconds: number;
}

/** CPU seconds this process has used. */
function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

async function numpyQuantize(input: string, blocking: BfpBlocking, out: string): Promise<NumpyResult> {
  const script = new URL("./bfp_numpy.py", import.meta.url).pathname;
  const args = [script, input, FORMAT.mantissaBits, FORMAT.exponentBits, blocking.length, blocking.block, out, 5];
  const result = await new Deno.Command(PYTHON, { args: args.map(String), stdout: "piped" }).output();
  if (!result.success) throw new Error(`numpy reference failed (${PYTHON} ${script})`);
  return JSON.parse(new TextDecoder().decode(result.stdout));
}

function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

const values = weights(2026);
const megabytes = values.byteLength / 1e6;
await Deno.mkdir(DIR, { recursive: true });
const input = join(DIR, "weights.npy");
await Deno.writeFile(input, writeNpy({ dtype: "f32", shape: [values.length], data: values }));
console.log(
  `| ${
    megabytes.toFixed(1)
  } MB float32, e5m8 RNE | ours (MB/s) | numpy (MB/s) | ours / numpy | ours / numpy, CPU time | bit-exact |`,
);
console.log("|---|---|---|---|---|---|");
for (const [label, blocking] of SCHEMES) {
  const out = join(DIR, `q_${blocking.block}`);
  const numpy = await numpyQuantize(input, blocking, out);
  let best = Infinity, bestCpu = Infinity;
  let q = quantizeBfp(values, FORMAT, blocking, "weights");
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now(), c0 = cpuSeconds();
    q = quantizeBfp(values, FORMAT, blocking, "weights");
    best = Math.min(best, (performance.now() - t0) / 1000);
    bestCpu = Math.min(bestCpu, cpuSeconds() - c0);
  }
  const mantissaDiff = firstDifference(q.mantissas, readNpyFile(`${out}_mantissas.npy`).data as Int8Array);
  const exponentDiff = firstDifference(q.exponents, readNpyFile(`${out}_exponents.npy`).data as Int16Array);
  const exact = mantissaDiff === -1 && exponentDiff === -1;
  const ours = megabytes / best;
  console.log(
    `| ${label} | ${ours.toFixed(0)} | ${numpy.megabytesPerSecond.toFixed(0)} | ${
      (ours / numpy.megabytesPerSecond).toFixed(2)
    } | ${(numpy.cpuSeconds / bestCpu).toFixed(2)} | ${
      exact ? `yes (${q.mantissas.length} mantissas, ${q.exponents.length} exponents)` : "NO"
    } |`,
  );
  if (!exact) throw new Error(`ours and numpy differ: mantissa ${mantissaDiff}, exponent ${exponentDiff}`);
  await Deno.remove(`${out}_mantissas.npy`);
  await Deno.remove(`${out}_exponents.npy`);
}
await Deno.remove(input);

for (const [label, blocking] of SCHEMES) {
  Deno.bench(`quantizeBfp 100 MB, ${label}`, { n: 3, warmup: 1 }, () => {
    quantizeBfp(values, FORMAT, blocking, "weights");
  });
}
