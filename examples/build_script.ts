/**
 * Embedding the compiler in a build script: read a trained model, compile it
 * with a pipeline, write the artifacts and the JSON report where the build
 * wants them, and print the before/after totals. compile() itself does no I/O;
 * everything touching files is here, in the script.
 *
 *   deno run -A examples/build_script.ts [MODEL.onnx] [OUT_DIR]
 *
 * MODEL defaults to examples/models/vgg_sparse.onnx, OUT_DIR to ./build.
 * @module
 */
import { basename, join, resolve } from "node:path";
// In another project: import { compile } from "jsr:@cnnc/compiler";
import { compile } from "../driver/compile.ts";

const PIPELINE = "fold-bn,canonicalize,dce";

async function main(args: string[]): Promise<void> {
  const modelPath = args[0] ?? new URL("./models/vgg_sparse.onnx", import.meta.url).pathname;
  const outDir = args[1] ?? "build";
  const name = basename(modelPath).replace(/\.onnx$/, "");

  const { artifacts, report } = await compile(await Deno.readFile(modelPath), {
    passes: PIPELINE,
    target: "onnx",
    modelName: name,
  });

  await Deno.mkdir(outDir, { recursive: true });
  for (const [file, bytes] of artifacts) {
    const path = join(outDir, file);
    if (resolve(path) === resolve(modelPath)) throw new Error(`refusing to overwrite the input model ${modelPath}`);
    await Deno.writeFile(path, bytes);
  }
  const reportPath = join(outDir, `${name}.report.json`);
  await Deno.writeTextFile(reportPath, `${JSON.stringify(report, null, 2)}\n`);

  const { before, after } = report.totals;
  const row = (label: string, b: number, a: number): string =>
    `${label.padEnd(14)}${String(b).padStart(14)}${String(a).padStart(14)}${
      (a === 0 ? "-" : `${(b / a).toFixed(2)}x`).padStart(10)
    }`;
  console.log(`${name}: ${report.pipeline} -> ${report.target.name}`);
  console.log(`${"".padEnd(14)}${"before".padStart(14)}${"after".padStart(14)}${"ratio".padStart(10)}`);
  console.log(row("params", before.params, after.params));
  console.log(row("MACs", before.macs, after.macs));
  console.log(row("weight bytes", before.weightBytes, after.weightBytes));
  for (const a of report.artifacts) console.log(`wrote ${join(outDir, a.name)} (${a.bytes} bytes)`);
  console.log(`wrote ${reportPath}`);
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`build_script: error: ${(e as Error).message.split("\n")[0]}`);
    Deno.exit(1);
  }
}
