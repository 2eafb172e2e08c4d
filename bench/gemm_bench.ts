/**
 * Float32 GEMM throughput (GFLOP/s, median of interleaved repetitions) at
 * square sizes and at convolution/fully-connected layer shapes: the previous
 * kernel (a copy given with `--old`), this kernel on 1 and 2 threads, and
 * numpy (OpenBLAS) on 1 and 2 threads, all in the same run so the ratios
 * survive a noisy machine. On a shared machine every variant is also given
 * per CPU second (process CPU time, all threads: what the kernel does while
 * it runs, less skewed by other processes than the wall clock; for 2 threads,
 * near the 1-thread figure means little work added by sharing). Run (the previous kernel from git):
 *
 *     git show 9cb112e:ir/ops/gemm_kernel.ts > /tmp/gemm_old.ts
 *     env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE deno run -A bench/gemm_bench.ts --old /tmp/gemm_old.ts
 *
 * `--reps N` sets the repetitions (default 5), `--shapes M,N,K;...` the shapes.
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { gemm, type GemmArgs } from "../ir/ops/gemm_kernel.ts";
import { setThreadCount, startWorkers } from "../ir/parallel.ts";
import { median } from "./measure.ts";

const PYTHON = "/usr/bin/python3";
const { values: flags } = parseArgs({
  args: Deno.args,
  options: { old: { type: "string" }, reps: { type: "string", default: "5" }, shapes: { type: "string" } },
});
const reps = Number(flags.reps);
const shapes: [number, number, number][] = flags.shapes
  ? flags.shapes.split(";").map((s) => s.split(",").map(Number) as [number, number, number])
  : [[256, 256, 256], [512, 512, 512], [1024, 1024, 1024], [2048, 2048, 2048], [3136, 64, 576], [64, 3136, 576], [
    49,
    512,
    4608,
  ]];
const key = ([m, n, k]: number[]): string => `${m}x${n}x${k}`;

interface Anchor {
  blas: string;
  seconds: Record<string, number>;
  cpu_seconds: Record<string, number>;
}

/** numpy's median seconds per shape with OPENBLAS_NUM_THREADS=threads (the two variables that slow it removed). */
async function numpySeconds(threads: number): Promise<Anchor> {
  const env = Deno.env.toObject();
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  env.OPENBLAS_NUM_THREADS = String(threads);
  const script = new URL("./gemm_numpy.py", import.meta.url).pathname;
  const args = [script, String(reps), ...shapes.map((s) => s.join(","))];
  const { code, stdout, stderr } = await new Deno.Command(PYTHON, { args, env, clearEnv: true }).output();
  if (code !== 0) throw new Error(`gemm_numpy.py failed: ${new TextDecoder().decode(stderr)}`);
  return JSON.parse(new TextDecoder().decode(stdout));
}

type Gemm = (args: GemmArgs) => void;
const oldGemm: Gemm | null = flags.old ? (await import(new URL(flags.old, `file://${Deno.cwd()}/`).href)).gemm : null;
const workers = await startWorkers();
const variants: [string, Gemm, number][] = [
  ...(oldGemm ? [["old", oldGemm, 1] as [string, Gemm, number]] : []),
  ["new 1t", gemm, 1],
  ["new 2t", gemm, 2],
];

const numpy1 = await numpySeconds(1);
const ours: Record<string, Record<string, number>> = {};
const oursCpu: Record<string, Record<string, number>> = {};
for (const [m, n, k] of shapes) {
  const a = Float32Array.from({ length: m * k }, (_, i) => ((i * 2654435761) % 1000) / 500 - 1);
  const b = Float32Array.from({ length: k * n }, (_, i) => ((i * 40503) % 1000) / 500 - 1);
  const c = new Float32Array(m * n);
  const times = variants.map((): number[] => []);
  const cpuTimes = variants.map((): number[] => []);
  for (let rep = -1; rep < reps; rep++) { // rep -1 warms up; variants interleave so drift hits all alike
    variants.forEach(([, f, threads], v) => {
      setThreadCount(threads);
      const [t0, cpu0] = [performance.now(), process.cpuUsage()];
      f({ m, n, k, a, b, c });
      const cpu = process.cpuUsage(cpu0);
      if (rep >= 0) times[v].push((performance.now() - t0) / 1e3), cpuTimes[v].push((cpu.user + cpu.system) / 1e6);
    });
  }
  ours[key([m, n, k])] = Object.fromEntries(variants.map(([name], v) => [name, median(times[v])]));
  oursCpu[key([m, n, k])] = Object.fromEntries(variants.map(([name], v) => [name, median(cpuTimes[v])]));
}
const numpy2 = await numpySeconds(2);

const gflops = (shape: number[], seconds: number): string =>
  (2 * shape[0] * shape[1] * shape[2] / seconds / 1e9).toFixed(1);
console.log(`numpy BLAS: ${numpy1.blas}; workers ready: ${workers}; ${reps} reps, GFLOP/s (median)`);
const names = [...variants.map(([name]) => name), "numpy 1t", "numpy 2t"];
const cpuNames = names;
console.log(
  ["M x N x K", ...names, "new1t/np1t", "new2t/np2t", "new2t/new1t", ...cpuNames.map((x) => `${x} per CPU s`)].join(
    " | ",
  ),
);
for (const shape of shapes) {
  const s: Record<string, number> = {
    ...ours[key(shape)],
    "numpy 1t": numpy1.seconds[key(shape)],
    "numpy 2t": numpy2.seconds[key(shape)],
  };
  const cpu: Record<string, number> = {
    ...oursCpu[key(shape)],
    "numpy 1t": numpy1.cpu_seconds[key(shape)],
    "numpy 2t": numpy2.cpu_seconds[key(shape)],
  };
  const ratio = (x: string, y: string): string => (s[y] / s[x]).toFixed(2);
  console.log(
    [
      key(shape),
      ...names.map((name) => gflops(shape, s[name])),
      ratio("new 1t", "numpy 1t"),
      ratio("new 2t", "numpy 2t"),
      ratio("new 2t", "new 1t"),
      ...cpuNames.map((name) => gflops(shape, cpu[name])),
    ].join(" | "),
  );
}
