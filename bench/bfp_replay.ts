/**
 * Process replay for BFP refactors: hashes of everything a change that should
 * not change behaviour must keep byte-identical (printed IR, pass statistics
 * and diagnostics, interpreter outputs on 100 test images, the emitted ONNX and
 * its report), for every trained model under six BFP pipelines. Run it on a
 * checkout before and after the change and diff the two outputs:
 *
 *   deno run -A --config OLD/deno.json bench/bfp_replay.ts OLD > before.txt
 *   deno run -A --config NEW/deno.json bench/bfp_replay.ts NEW > after.txt
 *   diff before.txt after.txt
 *
 * It imports the compiler from the checkout given as its argument, so the same
 * script measures both. About 12 minutes on 2 idle cores.
 * @module
 */
import { createHash } from "node:crypto";
const root = Deno.args[0];
const { compile } = await import(`${root}/driver/compile.ts`);
const { readNpyFile } = await import(`${root}/data/npy.ts`);
const { Interpreter } = await import(`${root}/ir/interpreter.ts`);
const { printModule } = await import(`${root}/ir/printer.ts`);
const { tensor } = await import(`${root}/ir/tensor.ts`);
const MODELS = `${root}/examples/models/`;
const testX = readNpyFile(`${MODELS}mnist_test_x.npy`);
const calibX = readNpyFile(`${MODELS}mnist_calib_x.npy`);
const files = [...Deno.readDirSync(MODELS)].map((e) => e.name).filter((n) => n.endsWith(".onnx")).sort();
const configs = [
  "fold-bn,canonicalize,dce,bfp",
  "fold-bn,canonicalize,dce,bfp{scheme=mx,block=8}",
  "fold-bn,canonicalize,dce,bfp{mantissa=4,rounding=toward-zero,accumulator=16}",
  "fold-bn,canonicalize,dce,bfp{mantissa=12,exponent=8,exponent-rule=never-clamp,rounding=toward-negative}",
  "fold-bn,canonicalize,dce,bfp{rounding=stochastic,seed=3,scheme=mx,block=4}",
  "bfp",
];
const h = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex").slice(0, 16);
const batch = tensor("f32", [100, ...testX.shape.slice(1)], (testX.data as Float32Array).subarray(0, 100 * 784));
const { defaultRegistry } = await import(`${root}/driver/compile.ts`);
const { importOnnx } = await import(`${root}/ir/onnx/import.ts`);
const { inferShapes } = await import(`${root}/ir/shape.ts`);
const { parsePipeline } = await import(`${root}/passes/pipeline.ts`);
const { runPipeline } = await import(`${root}/passes/manager.ts`);
for (const file of files) {
  for (const passes of configs) {
    let line = `${file} ${passes}`;
    try {
      const bytes = Deno.readFileSync(`${MODELS}${file}`);
      const registry = defaultRegistry();
      const module = importOnnx(bytes);
      inferShapes(module, { registry: registry.ops });
      const records = await runPipeline(module, parsePipeline(passes, registry), {
        registry,
        calibration: { input: calibX },
      });
      inferShapes(module, { registry: registry.ops });
      const ir = printModule(module);
      const out = new Interpreter(module).run({ input: batch });
      const outs = Object.keys(out).sort().map((k) => h(new Uint8Array(out[k].data.buffer)));
      const stats = JSON.stringify(
        records.map((p: { stats: unknown; diagnostics: unknown }) => [p.stats, p.diagnostics]),
      );
      line += ` ir ${h(ir)} stats ${h(stats)} out ${outs.join(",")}`;
      const r = await compile(bytes, { passes, calibration: { input: calibX }, modelName: "m" }).catch((e: Error) => ({
        error: e.message,
      }));
      line += "error" in r
        ? ` onnx-error ${r.error}`
        : ` onnx ${h(r.artifacts.get("m.onnx"))} report ${
          h(JSON.stringify(r.report.passes.map((p: { stats: unknown }) => p.stats)))
        }`;
    } catch (e) {
      line += ` error ${(e as Error).message}`;
    }
    console.log(line);
  }
}
