/**
 * Fixed point beside dynamic BFP at 8 and 16 bits on every trained model of
 * `examples/models` (the `fixed` issue's closing table): top-1 on the 2,000
 * MNIST test images in the bit-exact interpreter and, for the ONNX the `onnx`
 * target emits, in onnxruntime-node; the output SQNR of the fully lowered
 * model on the calibration set (`sqnr-in-model-db` of the last layer). Every
 * configuration goes through {@linkcode compile} with the 256 calibration
 * images, after `fold-bn,canonicalize,dce`.
 *
 *   deno run -A bench/fixed_table.ts
 * @module
 */
import { readNpyFile } from "../data/npy.ts";
import { compile } from "../driver/compile.ts";
import { evaluateOnnx } from "../driver/evaluate.ts";
import type { StatValue } from "../passes/pass.ts";

const MODELS = new URL("../examples/models/", import.meta.url);
const CONFIGS: readonly { label: string; passes: string }[] = [
  { label: "bfp e5m8", passes: "bfp" },
  { label: "fixed 8", passes: "fixed{bits=8,accumulator=32}" },
  { label: "bfp e8m16", passes: "bfp{mantissa=16,exponent=8,accumulator=53}" },
  { label: "fixed 16", passes: "fixed" },
];

const testX = readNpyFile(new URL("mnist_test_x.npy", MODELS).pathname);
const testY = readNpyFile(new URL("mnist_test_y.npy", MODELS).pathname);
const calibX = readNpyFile(new URL("mnist_calib_x.npy", MODELS).pathname);
const files = [...Deno.readDirSync(MODELS)].map((e) => e.name).filter((n) => n.endsWith(".onnx")).sort();

const rows: string[] = [
  `| model | float | ${CONFIGS.map((c) => `${c.label} (ort; SQNR)`).join(" | ")} |`,
  `| --- | ---: | ${CONFIGS.map(() => "---:").join(" | ")} |`,
];
for (const file of files) {
  const bytes = Deno.readFileSync(new URL(file, MODELS));
  const cells: string[] = [];
  let float = 0;
  for (const { passes } of CONFIGS) {
    const result = await compile(bytes, {
      passes: `fold-bn,canonicalize,dce,${passes}`,
      calibration: { input: calibX },
      evaluation: { inputs: testX, labels: testY },
      modelName: "m",
    });
    float = result.report.accuracy!.before;
    const ours = result.report.accuracy!.after;
    const ort = (await evaluateOnnx(result.artifacts.get("m.onnx")!, testX, testY)).accuracy;
    const layers = result.report.passes.at(-1)!.stats.layers as Record<string, Record<string, StatValue>>;
    const last = Object.values(layers).at(-1)!["sqnr-in-model-db"];
    cells.push(`${pct(ours)} (${pct(ort)}; ${typeof last === "number" ? last.toFixed(1) : last} dB)`);
    console.error(`${file} ${passes}: ${pct(ours)}`);
  }
  rows.push(`| ${file.replace(".onnx", "")} | ${pct(float)} | ${cells.join(" | ")} |`);
}
console.log(rows.join("\n"));

function pct(v: number): string {
  return `${(100 * v).toFixed(2)}%`;
}
