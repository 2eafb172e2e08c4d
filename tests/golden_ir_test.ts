/**
 * Round trips of the textual IR: every golden file in `tests/golden/ir/` prints
 * back exactly as read (leading `//` comment lines aside), and every ONNX backend
 * model imports, prints, parses and prints again to the same text.
 * @module
 */
import assert from "node:assert/strict";
import { importOnnxFile } from "../ir/onnx/import.ts";
import { OpRegistry } from "../ir/op_def.ts";
import type { Module } from "../ir/module.ts";
import { collectTensors, parseModule } from "../ir/parser.ts";
import { printModule } from "../ir/printer.ts";
import { verifyModuleDiagnostics } from "../ir/verifier.ts";
import { BACKEND_SKIP_MESSAGE, backendDataAvailable, listBackendCases } from "./onnx_backend.ts";

const GOLDEN_DIR = new URL("./golden/ir/", import.meta.url);

function goldenFiles(): string[] {
  return [...Deno.readDirSync(GOLDEN_DIR)].map((e) => e.name).filter((n) => n.endsWith(".ir")).sort();
}

Deno.test("the IR golden set covers the cases the textual format must handle", () => {
  const required = ["attributes.ir", "if_capture.ir", "names_and_results.ir", "number_formats.ir", "vgg_tiny.ir"];
  assert.deepEqual(required.filter((n) => !goldenFiles().includes(n)), []);
});

for (const name of goldenFiles()) {
  Deno.test(`printModule(parseModule(t)) === t for tests/golden/ir/${name}`, () => {
    const text = Deno.readTextFileSync(new URL(name, GOLDEN_DIR));
    const body = text.replace(/^(\/\/.*\n)+/, "");
    assert.ok(body.length < text.length, `${name} starts with a // comment saying what it covers`);
    const module = parseModule(text);
    assert.equal(printModule(module), body);
    // The goldens are structurally valid IR (types are not checked: some use made-up ops).
    assert.deepEqual(verifyModuleDiagnostics(module, { registry: new OpRegistry() }).map((d) => d.message), []);
  });
}

/** Every backend model the importer accepts (models it refuses are covered by its own tests). */
function importedBackendModels(): { name: string; module: Module }[] {
  const out: { name: string; module: Module }[] = [];
  for (const c of listBackendCases()) {
    try {
      out.push({ name: `${c.suite}/${c.name}`, module: importOnnxFile(`${c.dir}/model.onnx`) });
    } catch {
      continue;
    }
  }
  return out;
}

Deno.test({
  name: "printModule(parseModule(printModule(m))) === printModule(m) for every imported ONNX backend model",
  ignore: !backendDataAvailable(),
  fn() {
    const models = importedBackendModels();
    const failures: string[] = [];
    for (const { name, module } of models) {
      try {
        const full = printModule(module, { fullConstants: true });
        if (printModule(parseModule(full), { fullConstants: true }) !== full) failures.push(`${name}: reprint differs`);
        // Summaries resolve against the module's own tensors and print back in full identically.
        const summary = printModule(module);
        const resolved = parseModule(summary, { constants: collectTensors(module) });
        if (printModule(resolved, { fullConstants: true }) !== full) failures.push(`${name}: summary reprint differs`);
      } catch (e) {
        failures.push(`${name}: ${(e as Error).message}`);
      }
    }
    assert.deepEqual(failures, []);
    // 1072 cases in Debian's libonnx-testdata (ONNX 1.12); all import today.
    assert.ok(models.length >= 1000, `only ${models.length} models imported`);
  },
});

Deno.test({
  name: "verifyModuleDiagnostics() finds no problem in any imported ONNX backend model",
  ignore: !backendDataAvailable(),
  fn() {
    const problems: string[] = [];
    for (const { name, module } of importedBackendModels()) {
      for (const d of verifyModuleDiagnostics(module)) problems.push(`${name}: ${d.message}`);
    }
    assert.deepEqual(problems, []);
  },
});

if (!backendDataAvailable()) console.warn(BACKEND_SKIP_MESSAGE);
