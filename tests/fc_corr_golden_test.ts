/**
 * Golden tests of `fc-corr` that need calibration data, which the shared
 * runner (`golden_passes_test.ts`) does not feed: each
 * `tests/golden/fc-corr/calibrated/<case>.ir` has `// RUN: <pipeline>` lines
 * and one `// CALIB: <input> [dims] [values]` line per graph input; the printed
 * result of every RUN must equal `<case>.expected.ir` (`-- --update` rewrites it).
 * @module
 */
import assert from "node:assert/strict";
import { defaultRegistry } from "../driver/compile.ts";
import { parseModule } from "../ir/parser.ts";
import { printModule } from "../ir/printer.ts";
import { float32Tensor, type Tensor } from "../ir/tensor.ts";
import { runPipeline } from "../passes/manager.ts";
import { parsePipeline } from "../passes/pipeline.ts";

const DIR = decodeURIComponent(new URL("./golden/fc-corr/calibrated/", import.meta.url).pathname);
const UPDATE = Deno.args.includes("--update");
const registry = defaultRegistry();

function header(text: string): { runs: string[]; calibration: Record<string, Tensor> } {
  const runs: string[] = [];
  const calibration: Record<string, Tensor> = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith("//")) break;
    const run = /^\/\/\s*RUN:(.*)$/.exec(line);
    if (run) runs.push(run[1].trim());
    const calib = /^\/\/\s*CALIB:\s*(\S+)\s+(\[[^\]]*\])\s+(\[.*\])\s*$/.exec(line);
    if (calib) calibration[calib[1]] = float32Tensor(JSON.parse(calib[2]), JSON.parse(calib[3]));
  }
  return { runs, calibration };
}

const cases = [...Deno.readDirSync(DIR)].map((e) => e.name).filter((n) =>
  n.endsWith(".ir") && !n.endsWith(".expected.ir")
)
  .sort();

Deno.test("fc-corr calibrated golden cases exist", () => {
  assert.deepEqual(cases, ["connection.ir", "neuron.ir"]);
});

for (const name of cases) {
  Deno.test(`golden pass test tests/golden/fc-corr/calibrated/${name}`, async () => {
    const text = Deno.readTextFileSync(`${DIR}${name}`);
    const { runs, calibration } = header(text);
    assert.ok(runs.length > 0 && Object.keys(calibration).length > 0, "a // RUN: and a // CALIB: line");
    const expectedPath = `${DIR}${name.replace(/\.ir$/, ".expected.ir")}`;
    for (const pipeline of runs) {
      const module = parseModule(text);
      await runPipeline(module, parsePipeline(pipeline, registry), { registry, calibration, verifyEach: true });
      const actual = printModule(module);
      if (UPDATE) Deno.writeTextFileSync(expectedPath, actual);
      assert.equal(actual, Deno.readTextFileSync(expectedPath), `RUN: ${pipeline}`);
    }
  });
}
