/**
 * `prune{ratio=0.5}` on a synthetic VGG-16 (13 conv + BN + ReLU, 5 max-pools,
 * 3 FC layers; 224x224x3 input; 138M parameters) built in memory with the IR
 * API (`buildVgg16` of `scale_bench.ts`). Records the pass's time and the process's peak resident memory.
 *
 *   deno bench -A bench/prune_bench.ts     (timing over a few runs)
 *   deno run -A bench/prune_bench.ts       (one run: time, peak RSS, params/MACs before and after)
 * @module
 */
import { defaultRegistry } from "../driver/compile.ts";
import type { Module } from "../ir/module.ts";
import { type PassRecord, runPipeline } from "../passes/manager.ts";
import { parsePipeline } from "../passes/pipeline.ts";
import { buildVgg16 } from "./scale_bench.ts";

const registry = defaultRegistry();
const steps = parsePipeline("prune{ratio=0.5}", registry);

/** Peak resident set size of this process so far (Linux VmHWM), in bytes; falls back to the current RSS. */
function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return Deno.memoryUsage().rss;
}

async function pruneOnce(m: Module): Promise<PassRecord> {
  const [rec] = await runPipeline(m, steps, { registry, verifyEach: false });
  return rec;
}

Deno.bench({
  name: "prune{ratio=0.5}, synthetic VGG-16 (138M params, 224x224)",
  n: 3,
  warmup: 1,
  async fn(b) {
    const m = buildVgg16();
    b.start();
    await pruneOnce(m);
    b.end();
  },
});

if (import.meta.main) {
  const m = buildVgg16();
  const rssBuilt = Deno.memoryUsage().rss;
  const peakBuilt = peakRss();
  const t0 = performance.now();
  const rec = await pruneOnce(m);
  const ms = performance.now() - t0;
  const mb = (n: number): string => `${(n / 2 ** 20).toFixed(0)} MiB`;
  console.log(`prune{ratio=0.5} on synthetic VGG-16: ${ms.toFixed(0)} ms`);
  console.log(
    `params ${rec.stats["params-before"]} -> ${rec.stats["params-after"]}, MACs ${rec.stats["macs-before"]} -> ${
      rec.stats["macs-after"]
    }`,
  );
  console.log(
    `channels ${rec.stats["channels-before"]} -> ${rec.stats["channels-after"]}, threshold ${rec.stats.threshold}`,
  );
  console.log(
    `RSS after build ${mb(rssBuilt)} (peak ${mb(peakBuilt)}); after prune ${mb(Deno.memoryUsage().rss)}, peak ${
      mb(peakRss())
    }`,
  );
}
