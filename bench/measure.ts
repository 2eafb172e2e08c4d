/**
 * What the benchmarks share: CPU time of this process and the median of repeated runs.
 * @module
 */
import process from "node:process";

/** CPU milliseconds this process has used (all threads: workers' and onnxruntime's too). */
export function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/** The median of `xs` (the upper one of an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
