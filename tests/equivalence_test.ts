/**
 * Semantics of the utility passes on real models: `fold-bn,canonicalize,dce`
 * must leave the interpreter's outputs unchanged (rtol 1e-4, atol 1e-5) on the
 * project's trained models and on the ONNX backend models the interpreter runs.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Registry } from "../driver/registry.ts";
import { Interpreter } from "../ir/interpreter.ts";
import type { Module } from "../ir/module.ts";
import { importOnnxFile } from "../ir/onnx/import.ts";
import { cloneModule } from "../ir/rewriter.ts";
import { fromFloat64, type Tensor } from "../ir/tensor.ts";
import { isTensorType } from "../ir/types.ts";
import { builtinPasses } from "../passes/builtin.ts";
import { runPipeline } from "../passes/manager.ts";
import type { StatValue } from "../passes/pass.ts";
import { parsePipeline } from "../passes/pipeline.ts";
import { BACKEND_SKIP_MESSAGE, backendDataAvailable, listBackendCases, loadDataSets } from "./onnx_backend.ts";
import { compareTensors, mulberry32, type Tolerance } from "./tensor_compare.ts";

const PIPELINE = "fold-bn,canonicalize,dce";
const TOLERANCE: Tolerance = { rtol: 1e-4, atol: 1e-5 };
const MODELS_DIR = new URL("../examples/models/", import.meta.url);
/** Node-suite cases are checked when they hold an op these passes rewrite. */
const NODE_OPS_OF_INTEREST: ReadonlySet<string> = new Set([
  "BatchNormalization",
  "Identity",
  "Dropout",
  "Constant",
  "Shape",
  "Size",
  "Reshape",
]);

/** One model to check, with the inputs to run it on. */
interface Subject {
  readonly name: string;
  readonly path: string;
  /** Inputs by graph input name; null to draw seeded random ones. */
  readonly inputs: (module: Module) => Record<string, Tensor> | null;
}

/** What checking one model found. */
type Outcome =
  | {
    readonly kind: "checked";
    readonly opsBefore: number;
    readonly opsAfter: number;
    readonly bnAfter: number;
    readonly stats: Record<string, StatValue>;
  }
  | { readonly kind: "skipped"; readonly reason: string };

function exampleModels(): Subject[] {
  let names: string[];
  try {
    names = [...Deno.readDirSync(MODELS_DIR)].map((e) => e.name).filter((n) => n.endsWith(".onnx")).sort();
  } catch {
    return [];
  }
  return names.map((n) => ({ name: n, path: new URL(n, MODELS_DIR).pathname, inputs: () => null }));
}

function backendModels(): Subject[] {
  const out: Subject[] = [];
  for (const c of listBackendCases()) {
    if (c.suite === "node" || c.suite === "simple") {
      let types: string[];
      try {
        types = importOnnxFile(join(c.dir, "model.onnx")).graph.ops.map((op) => op.type);
      } catch {
        continue;
      }
      if (!types.some((t) => NODE_OPS_OF_INTEREST.has(t))) continue;
    }
    out.push({
      name: `${c.suite}/${c.name}`,
      path: join(c.dir, "model.onnx"),
      inputs(module) {
        const sets = loadDataSets(c.dir);
        const fed = module.graph.inputs.filter((v) => v.constant === null);
        if (sets.length === 0 || sets[0].inputs.length !== fed.length) return null;
        return Object.fromEntries(fed.map((v, i) => [v.name, sets[0].inputs[i]]));
      },
    });
  }
  return out;
}

/** Seeded inputs for every fed graph input: batch (any symbolic dimension) 2, floats in [0, 1), integers 0. */
function randomInputs(module: Module, seed: number): Record<string, Tensor> {
  const next = mulberry32(seed);
  const inputs: Record<string, Tensor> = {};
  for (const v of module.graph.inputs) {
    if (v.constant !== null || !isTensorType(v.type) || v.type.shape === null || typeof v.type.elem !== "string") {
      continue;
    }
    const shape = v.type.shape.map((d) => (typeof d === "number" ? d : 2));
    const count = shape.reduce((a, b) => a * b, 1);
    const float = ["f32", "f64", "f16", "bf16"].includes(v.type.elem);
    inputs[v.name] = fromFloat64(v.type.elem, shape, Array.from({ length: count }, () => (float ? next() : 0)));
  }
  return inputs;
}

async function check(subject: Subject, seed: number): Promise<Outcome> {
  let module: Module;
  let reference: Interpreter;
  let inputs: Record<string, Tensor>;
  try {
    // As exported (Constant ops kept), so that canonicalize's folding of them is what is checked.
    module = importOnnxFile(subject.path, { keepWeightOps: true });
    reference = new Interpreter(cloneModule(module));
    inputs = subject.inputs(module) ?? randomInputs(module, seed);
  } catch (e) {
    return { kind: "skipped", reason: (e as Error).message.split("\n")[0] };
  }
  let before: Record<string, Tensor>;
  try {
    before = reference.run(inputs);
  } catch (e) {
    return { kind: "skipped", reason: `reference run: ${(e as Error).message.split("\n")[0]}` };
  }
  const opsBefore = module.graph.ops.length;
  const registry = new Registry();
  for (const p of builtinPasses) registry.addPass(p);
  let stats: Record<string, StatValue>;
  try {
    const records = await runPipeline(module, parsePipeline(PIPELINE, registry), { registry });
    stats = Object.assign({}, ...records.map((r) => r.stats));
  } catch (e) {
    const message = (e as Error).message;
    // Models the verifier rejects as imported are the importer's and verifier's business, not these passes'.
    if (message.startsWith("the IR is invalid before the first pass")) return { kind: "skipped", reason: message };
    throw new Error(`${subject.name}: ${message}`);
  }
  const after = new Interpreter(module).run(inputs);
  assert.deepEqual(Object.keys(after), Object.keys(before), `${subject.name}: output names`);
  for (const [name, expected] of Object.entries(before)) {
    const problem = compareTensors(after[name], expected, TOLERANCE);
    assert.equal(problem, null, `${subject.name}: output "${name}": ${problem}`);
  }
  const opsAfter = module.graph.ops.length;
  assert.ok(opsAfter <= opsBefore, `${subject.name}: ${opsBefore} ops became ${opsAfter}`);
  const bnAfter = module.graph.ops.filter((op) => op.type === "BatchNormalization").length;
  // Every BatchNormalization left is one fold-bn reported as not folded.
  assert.equal(bnAfter, stats["bn-not-folded"], `${subject.name}: BatchNormalization count after the pipeline`);
  return { kind: "checked", opsBefore, opsAfter, bnAfter, stats };
}

async function checkAll(subjects: readonly Subject[]): Promise<Map<string, Outcome>> {
  const outcomes = new Map<string, Outcome>();
  let seed = 1;
  for (const s of subjects) outcomes.set(s.name, await check(s, seed++));
  const checked = [...outcomes.values()].filter((o) => o.kind === "checked").length;
  const skipped = [...outcomes].filter(([, o]) => o.kind === "skipped");
  console.log(`${PIPELINE}: ${checked} models checked, ${skipped.length} skipped (no kernel or reference failure)`);
  return outcomes;
}

Deno.test({
  name: `${PIPELINE} keeps the interpreter outputs of the trained example models`,
  ignore: exampleModels().length === 0,
  async fn() {
    const outcomes = await checkAll(exampleModels());
    for (const [name, o] of outcomes) {
      assert.equal(o.kind, "checked", `${name}: ${o.kind === "skipped" ? o.reason : ""}`);
      if (o.kind !== "checked") continue;
      console.log(
        `  ${name}: ${o.opsBefore} -> ${o.opsAfter} ops, bn-folded ${o.stats["bn-folded"]}, ` +
          `not folded ${JSON.stringify(o.stats["bn-not-folded-reasons"])}`,
      );
      if (name.startsWith("vgg") || name.startsWith("mobilenet")) {
        // Conv -> BN -> ReLU throughout (MobileNet's depthwise convs too): every BN folds.
        assert.equal(o.bnAfter, 0, `${name}: BatchNormalization left after fold-bn`);
        assert.ok(o.opsAfter < o.opsBefore, `${name}: op count did not drop`);
      }
      if (name.startsWith("resnet_preact")) {
        // Pre-activation blocks put BN before the conv: those stay; a BN right after a conv folds.
        const reasons = o.stats["bn-not-folded-reasons"] as Record<string, number>;
        assert.ok(reasons["input-not-conv-gemm-matmul"] > 0 && (o.stats["bn-folded"] as number) > 0, name);
      }
    }
  },
});

Deno.test({
  name: `${PIPELINE} keeps the interpreter outputs of the ONNX backend models it can run`,
  ignore: !backendDataAvailable(),
  async fn() {
    const outcomes = await checkAll(backendModels());
    const checked = [...outcomes].filter(([, o]) => o.kind === "checked");
    // The pytorch suites and the BN/Identity/Dropout/shape node cases the interpreter runs.
    assert.ok(checked.length >= 100, `only ${checked.length} backend models checked`);
    const changed = checked.filter(([, o]) => o.kind === "checked" && o.opsAfter < o.opsBefore).map(([n]) => n);
    for (const name of ["pytorch-operator/test_operator_addconstant", "pytorch-converted/test_PixelShuffle"]) {
      assert.ok(changed.includes(name), `${name}: its Constant ops were not folded`);
    }
    for (const name of ["test_BatchNorm1d_3d_input_eval", "test_BatchNorm2d_eval", "test_BatchNorm3d_eval"]) {
      assert.equal(outcomes.get(`pytorch-converted/${name}`)?.kind, "checked", `pytorch-converted/${name}`);
    }
    assert.ok(changed.includes("pytorch-operator/test_operator_addconstant"), "Constant was not folded");
  },
});

if (!backendDataAvailable()) console.warn(BACKEND_SKIP_MESSAGE);
