import { gramSpectrum, gaussianSource, symmetricEigen } from "../passes/linalg.ts";
import { setThreadCount } from "../ir/parallel.ts";
setThreadCount(1);
for (const [m, n] of [[512, 4608], [2048, 512]]) {
  const r = gaussianSource(1);
  const a = Float32Array.from({ length: m * n }, () => r());
  let t = performance.now();
  const sp = gramSpectrum(a, m, n, false);
  const t1 = performance.now() - t;
  t = performance.now();
  const sp2 = gramSpectrum(a, m, n, true);
  const t2 = performance.now() - t;
  t = performance.now();
  sp2.triplets(Math.min(m, n));
  const t3 = performance.now() - t;
  const k = Math.min(m, n);
  const c = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j <= i; j++) c[i * k + j] = c[j * k + i] = r();
  t = performance.now(); symmetricEigen(c, k, false); const e1 = performance.now() - t;
  t = performance.now(); symmetricEigen(c, k, true); const e2 = performance.now() - t;
  console.log(m, n, "values", t1.toFixed(0), "vectors", t2.toFixed(0), "triplets", t3.toFixed(0), "eig values", e1.toFixed(0), "eig vectors", e2.toFixed(0), "ms");
}
