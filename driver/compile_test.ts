/**
 * compile(): bytes in and out with no file access, deterministic artifacts,
 * the report's shape and numbers, every error path's message, the debugging
 * hooks, and the round trip on real models with onnxruntime as the reference.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { runOnnxruntime } from "./onnxruntime.ts";
import { attr } from "../ir/attributes.ts";
import { costOf } from "../ir/cost.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { interpret } from "../ir/interpreter.ts";
import { Module } from "../ir/module.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import { float32Tensor, type Tensor, tensor } from "../ir/tensor.ts";
import { isTensorType } from "../ir/types.ts";
import { PassError } from "../passes/manager.ts";
import { definePass } from "../passes/pass.ts";
import { PipelineError } from "../passes/pipeline.ts";
import { defineTarget } from "../targets/target.ts";
import { compareTensors } from "../tests/tensor_compare.ts";
import { compile, type CompileOptions, DataError, defaultRegistry } from "./compile.ts";
import type { CompileReport } from "./report.ts";

const MODELS_DIR = new URL("../examples/models/", import.meta.url).pathname;
const trainedModels = existsSync(MODELS_DIR) ? readdirSync(MODELS_DIR).filter((f) => f.endsWith(".onnx")).sort() : [];

/** Deterministic values in [0, 1) from a small LCG (tests must not depend on Math.random). */
function lcg(n: number, seed: number): Float32Array {
  const data = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 32;
  }
  return data;
}

function constant(g: Graph, name: string, shape: number[], data: Float32Array): Value {
  return g.addConstant(name, float32Tensor(shape, data), { elem: "f32", shape });
}

/**
 * A small classifier in the shape PyTorch exports: input[N,3,8,8] -> Conv(4) -> BatchNormalization ->
 * Relu -> Identity -> GlobalAveragePool -> Flatten -> Gemm(10) -> logits, opset 13.
 */
function smallCnnBytes(): Uint8Array {
  const g = new Graph("small_cnn");
  const x = g.addInput(new Value("input", { elem: "f32", shape: ["N", 3, 8, 8] }));
  const conv = g.addOp(
    new Op({
      name: "conv1",
      type: "Conv",
      operands: [x, constant(g, "conv1.weight", [4, 3, 3, 3], lcg(108, 1).map((v) => v - 0.5))],
      results: [new Value("conv1.out")],
      attributes: [["kernel_shape", attr.ints([3, 3])], ["pads", attr.ints([1, 1, 1, 1])]],
    }),
  );
  const bn = g.addOp(
    new Op({
      name: "bn1",
      type: "BatchNormalization",
      operands: [
        conv.result,
        constant(g, "bn1.weight", [4], lcg(4, 2).map((v) => v + 0.5)),
        constant(g, "bn1.bias", [4], lcg(4, 3)),
        constant(g, "bn1.running_mean", [4], lcg(4, 4)),
        constant(g, "bn1.running_var", [4], lcg(4, 5).map((v) => v + 0.1)),
      ],
      results: [new Value("bn1.out")],
      attributes: [["epsilon", attr.float(1e-5)]],
    }),
  );
  const relu = g.addOp(new Op({ name: "relu1", type: "Relu", operands: [bn.result], results: [new Value("r1")] }));
  const id = g.addOp(new Op({ name: "id", type: "Identity", operands: [relu.result], results: [new Value("i1")] }));
  const pool = g.addOp(
    new Op({ name: "pool", type: "GlobalAveragePool", operands: [id.result], results: [new Value("p")] }),
  );
  const flat = g.addOp(new Op({ name: "flat", type: "Flatten", operands: [pool.result], results: [new Value("f")] }));
  const fc = g.addOp(
    new Op({
      name: "fc",
      type: "Gemm",
      operands: [flat.result, constant(g, "fc.weight", [10, 4], lcg(40, 6)), constant(g, "fc.bias", [10], lcg(10, 7))],
      results: [new Value("logits")],
      attributes: [["transB", attr.int(1)]],
    }),
  );
  g.outputs.push(fc.result);
  const module = new Module(g, [["", 13]], 8);
  module.producerName = "unit-test";
  module.producerVersion = "1.0";
  return exportOnnx(module);
}

const SMALL_CNN = smallCnnBytes();

/** Random feeds for every graph input, symbolic dimensions set to 2. */
function feedsFor(bytes: Uint8Array): Record<string, Tensor> {
  const module = importOnnx(bytes);
  inferShapes(module);
  const feeds: Record<string, Tensor> = {};
  module.graph.inputs.filter((v) => v.constant === null).forEach((v, i) => {
    assert.ok(isTensorType(v.type) && v.type.shape !== null, `input ${v.name} has a shape`);
    const shape = v.type.shape.map((d) => (typeof d === "number" ? d : 2));
    feeds[v.name] = tensor("f32", shape, lcg(shape.reduce((a, b) => a * b, 1), 21 + i));
  });
  return feeds;
}

/** The report without its timings (the only fields allowed to differ between runs). */
function withoutTimings(report: CompileReport): unknown {
  return { ...report, timings: null, passes: report.passes.map((p) => ({ ...p, ms: 0, analyses: [] })) };
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function assertRejects(options: CompileOptions, message: string | RegExp, model = SMALL_CNN): Promise<Error> {
  let error: unknown = null;
  try {
    await compile(model, options);
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof Error, "compile() should have thrown");
  if (typeof message === "string") assert.equal(error.message, message);
  else assert.match(error.message, message);
  assert.ok(!error.message.includes("\n"), `one-line message, got:\n${error.message}`);
  return error;
}

Deno.test("compile() runs with no permissions at all: it touches no file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = join(dir, "no_permissions.ts");
    await Deno.writeTextFile(
      script,
      `import { compile } from ${JSON.stringify(new URL("./compile.ts", import.meta.url).href)};
const bytes = new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer());
const { artifacts, report } = await compile(bytes, { passes: "fold-bn,canonicalize,dce", modelName: "cnn" });
console.log(JSON.stringify({ names: [...artifacts.keys()], artifacts: report.artifacts }));
`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--quiet", "--config", new URL("../deno.json", import.meta.url).pathname, script],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(SMALL_CNN);
    await writer.close();
    const out = await child.output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    const printed = JSON.parse(new TextDecoder().decode(out.stdout));
    const local = await compile(SMALL_CNN, { passes: "fold-bn,canonicalize,dce", modelName: "cnn" });
    assert.deepEqual(printed, { names: ["cnn.onnx"], artifacts: local.report.artifacts });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compile() output is byte-identical from run to run, and so is the report but for timings", async () => {
  const options = { passes: "fold-bn,canonicalize,dce", target: "onnx{external-data=true,threshold=64}" };
  const a = await compile(SMALL_CNN, options);
  const b = await compile(SMALL_CNN, options);
  assert.deepEqual([...a.artifacts.keys()], ["model.onnx", "model.onnx.data"]);
  assert.deepEqual(a.artifacts, b.artifacts);
  assert.deepEqual(withoutTimings(a.report), withoutTimings(b.report));
  assert.deepEqual(JSON.parse(JSON.stringify(a.report)), a.report, "the report is plain JSON");
});

Deno.test("compile() never writes into the model bytes; with overwriteInput it gives the same artifacts", async () => {
  const options = { passes: "prune{ratio=0.5},fold-bn,canonicalize,dce,svd{energy=0.9},bfp", target: "c" };
  const bytes = SMALL_CNN.slice();
  const kept = await compile(bytes, options);
  assert.deepEqual(bytes, SMALL_CNN, "the passes wrote into weights viewing the input");
  const work = SMALL_CNN.slice();
  const moved = await compile(work, { ...options, importOptions: { overwriteInput: true } });
  assert.notDeepEqual(work, SMALL_CNN, "some weight was misaligned and moved (else this test checks nothing)");
  assert.deepEqual(moved.artifacts, kept.artifacts);
  assert.deepEqual(withoutTimings(moved.report), withoutTimings(kept.report));
  // The provenance hash is of the model as given, taken before the importer moves anything.
  const header = new TextDecoder().decode(moved.artifacts.get("model.h"));
  assert.ok(header.includes(`input SHA-256 ${await sha256(SMALL_CNN)}`), header.slice(0, 400));
});

Deno.test("compile() reports pipeline, passes, totals, layers and artifacts", async () => {
  const { artifacts, report, module } = await compile(SMALL_CNN, {
    passes: "fold-bn, canonicalize,dce",
    modelName: "cnn",
  });
  assert.equal(report.version, 2);
  assert.deepEqual(report.model, { name: "cnn", producer: "unit-test 1.0", opsets: { "ai.onnx": 13 } });
  assert.equal(report.pipeline, "fold-bn,canonicalize{fold-limit=1024},dce");
  assert.deepEqual(report.target, {
    name: "onnx",
    options: { "external-data": false, threshold: 1024 },
    diagnostics: [],
  });

  assert.deepEqual(report.passes.map((p) => [p.name, p.pipeline, p.changed]), [
    ["fold-bn", "fold-bn", true],
    ["canonicalize", "canonicalize{fold-limit=1024}", true],
    ["dce", "dce", false],
  ]);
  for (const p of report.passes) assert.ok(typeof p.ms === "number" && p.ms >= 0, `${p.name} has a time`);
  assert.equal(report.passes[0].stats["bn-folded"], 1);
  assert.equal(report.passes[1].stats["identities-removed"], 1);

  // Conv 4x3x3x3 (108) + Gemm 10x4+10 (50) + BN 4x4 (16) before; the BN's 16 are folded into a conv bias of 4.
  assert.deepEqual(
    {
      params: report.totals.before.params,
      macs: report.totals.before.macs,
      weightBytes: report.totals.before.weightBytes,
    },
    { params: 174, macs: 108 * 64 + 40, weightBytes: 696 },
  );
  assert.deepEqual(
    {
      params: report.totals.after.params,
      macs: report.totals.after.macs,
      weightBytes: report.totals.after.weightBytes,
    },
    { params: 162, macs: 108 * 64 + 40, weightBytes: 648 },
  );
  assert.deepEqual(report.totals.after, costOf(module).totals);
  assert.ok(report.totals.before.peakActivationBytes > 0);

  assert.deepEqual(report.layers.map((l) => [l.name, l.type, l.before?.params ?? null, l.after?.params ?? null]), [
    ["conv1", "Conv", 108, 112],
    ["bn1", "BatchNormalization", 16, null],
    ["fc", "Gemm", 50, 50],
  ]);

  assert.equal(report.artifacts.length, 1);
  const bytes = artifacts.get("cnn.onnx")!;
  assert.deepEqual(report.artifacts[0], { name: "cnn.onnx", bytes: bytes.byteLength, sha256: await sha256(bytes) });
  for (const t of ["importMs", "passesMs", "emitMs", "totalMs"] as const) assert.ok(report.timings[t] >= 0, t);
  assert.equal(report.accuracy, undefined);
});

Deno.test("compile() with no passes and default target writes model.onnx with the same IR", async () => {
  const { artifacts, report } = await compile(SMALL_CNN);
  assert.deepEqual([...artifacts.keys()], ["model.onnx"]);
  assert.equal(report.pipeline, "");
  assert.deepEqual(report.passes, []);
  assert.deepEqual(report.totals.after, report.totals.before);
  assert.ok(report.layers.every((l) => JSON.stringify(l.before) === JSON.stringify(l.after)));
  const feeds = feedsFor(SMALL_CNN);
  const expected = interpret(importOnnx(SMALL_CNN), feeds);
  assert.equal(
    compareTensors(interpret(importOnnx(artifacts.get("model.onnx")!), feeds).logits, expected.logits),
    null,
  );
});

for (const file of trainedModels.length > 0 ? trainedModels : ["(in-memory small CNN)"]) {
  for (const passes of ["", "fold-bn,canonicalize,dce"]) {
    Deno.test(`compile() round trip of ${file} with passes "${passes}": onnxruntime equals the interpreter`, async () => {
      const bytes = trainedModels.length > 0 ? Deno.readFileSync(join(MODELS_DIR, file)) : SMALL_CNN;
      const feeds = feedsFor(bytes);
      const expected = interpret(importOnnx(bytes), feeds);
      const { artifacts, report } = await compile(bytes, { passes, modelName: "m" });
      const emitted = artifacts.get("m.onnx")!;
      const reference = await runOnnxruntime(emitted, feeds);
      const ours = interpret(importOnnx(emitted), feeds);
      for (const [name, t] of Object.entries(expected)) {
        assert.equal(
          compareTensors(reference[name], t, { rtol: 1e-4, atol: 1e-4 }),
          null,
          `onnxruntime output ${name}`,
        );
        assert.equal(compareTensors(ours[name], t, { rtol: 1e-4, atol: 1e-4 }), null, `interpreter output ${name}`);
      }
      if (passes !== "") {
        assert.ok(report.totals.after.params <= report.totals.before.params);
        const bnBefore = importOnnx(bytes).graph.ops.filter((op) => op.type === "BatchNormalization").length;
        const bnAfter = importOnnx(emitted).graph.ops.filter((op) => op.type === "BatchNormalization").length;
        assert.equal(bnBefore - bnAfter, report.passes[0].stats["bn-folded"]);
      }
    });
  }
}

Deno.test("compile() target options use the pipeline's brace syntax", async () => {
  const { artifacts, report } = await compile(SMALL_CNN, { target: "onnx{external-data=true threshold=100}" });
  assert.deepEqual([...artifacts.keys()], ["model.onnx", "model.onnx.data"]);
  assert.deepEqual(report.target.options, { "external-data": true, threshold: 100 });
  // conv1.weight (432 bytes) and fc.weight (160) reach 100 bytes; aligned to 64: 0..432, 448..608.
  assert.equal(artifacts.get("model.onnx.data")!.byteLength, 608);
  assert.deepEqual(report.artifacts.map((a) => a.name), ["model.onnx", "model.onnx.data"]);
});

Deno.test("compile() rejects a bad pipeline with a PipelineError before decoding the model", async () => {
  const error = await assertRejects(
    { passes: "fold-bn,dcee" },
    'Cannot parse pipeline: unknown pass "dcee" (did you mean "dce"?)',
    new Uint8Array([1, 2, 3]),
  );
  assert.ok(error instanceof PipelineError);
  assert.equal(error.caret, "fold-bn,dcee\n        ^");
  await assertRejects(
    { passes: "canonicalize{fold-limit=x}" },
    /^Cannot configure pass "canonicalize": option "fold-limit" must be/,
  );
});

Deno.test("compile() rejects an unknown target with a PipelineError, suggesting the closest name", async () => {
  const error = await assertRejects(
    { target: "onx{threshold=1}" },
    'Cannot parse target: unknown target "onx" (did you mean "onnx"?)',
  );
  assert.ok(error instanceof PipelineError);
  assert.equal(error.caret, "onx{threshold=1}\n^");
  await assertRejects({ target: "tflite" }, 'Cannot parse target: unknown target "tflite"; targets are: c, fpga, onnx');
  await assertRejects(
    { target: "" },
    "Cannot parse target: expected a target name, found the end of the target; targets are: c, fpga, onnx",
  );
});

Deno.test("compile() rejects bad target options with a PipelineError naming the target", async () => {
  const error = await assertRejects(
    { target: "onnx{threshold=0}" },
    'Cannot configure target "onnx": option "threshold" must be an integer in [1, inf), found "0"',
  );
  assert.ok(error instanceof PipelineError);
  assert.equal(error.caret, "onnx{threshold=0}\n               ^");
  await assertRejects(
    { target: "onnx{external-data=yes}" },
    /^Cannot configure target "onnx": option "external-data" must be true or false/,
  );
  await assertRejects({ target: "onnx{size=1}" }, /^Cannot configure target "onnx": unknown option "size"/);
  await assertRejects({ target: "onnx{threshold=1" }, /^Cannot parse target: unbalanced "\{"/);
  const list = await assertRejects(
    { target: "onnx{threshold=1},c" },
    "Cannot parse target: expected one target, found a list",
  );
  assert.equal((list as PipelineError).caret, "onnx{threshold=1},c\n                 ^");
});

Deno.test("compile() rejects corrupt and truncated model bytes in one line", async () => {
  await assertRejects(
    {},
    /^Cannot import ONNX model: (not an ONNX model|the model has no graph)/,
    new TextEncoder().encode("not a model"),
  );
  await assertRejects({}, /^Cannot import ONNX model: /, SMALL_CNN.subarray(0, SMALL_CNN.length >> 1));
  await assertRejects({}, "Cannot import ONNX model: the model has no graph (is this an ONNX file?)", new Uint8Array());
});

Deno.test("compile() rejects a model name that is not a plain file name", async () => {
  const message = "modelName must be a plain file name without folders or control characters, found";
  await assertRejects({ modelName: "../evil" }, `${message} "../evil" (it has a folder separator)`);
  await assertRejects({ modelName: "" }, `${message} "" (it is empty)`);
  await assertRejects({ modelName: ".." }, `${message} ".." (it has a ".." part)`);
  await assertRejects({ modelName: "a\0b" }, `${message} "a\\x00b" (it has a control character)`);
  await assertRejects({ modelName: "a\nb" }, `${message} "a\\nb" (it has a control character)`);
  await assertRejects({ modelName: "a\\b" }, `${message} "a\\\\b" (it has a backslash)`);
  await assertRejects({ modelName: "x".repeat(300) }, new RegExp(`^${message} "x{80}"\\.\\.\\. \\(300 characters\\)`));
});

/** A registry whose target "emitter" returns what `emit` gives. */
function emitterRegistry(emit: () => unknown): ReturnType<typeof defaultRegistry> {
  const registry = defaultRegistry();
  registry.addTarget(defineTarget({ name: "emitter", summary: "Returns anything", options: {}, emit: emit as never }));
  return registry;
}

Deno.test("compile() rejects artifact names that would leave the output folder, naming the target and the name", async () => {
  const bytes = new Uint8Array(1);
  const cases: [string, string][] = [
    ["../../x", 'it has a ".." part'],
    ["/etc/passwd", "it is an absolute path"],
    ["C:/x", "it is an absolute path"],
    ["a\\b", "it has a backslash"],
    ["a\0b", "it has a control character"],
    ["a/./b", 'it has a "." part'],
    ["a//b", "it has an empty part"],
    ["", "it is empty"],
  ];
  for (const [name, problem] of cases) {
    const registry = emitterRegistry(() => new Map([[name, bytes]]));
    await assertRejects(
      { registry, target: "emitter" },
      `target "emitter" returned artifact ${JSON.stringify(name).replace("\\u0000", "\\x00")}: ${problem}; ` +
        'expected a relative path of file names separated by "/"',
    );
  }
  // Subfolders are allowed, but not a name that is both a file and a folder.
  const nested = await compile(SMALL_CNN, {
    registry: emitterRegistry(() => new Map([["weights/fc.bin", bytes], ["m.json", bytes]])),
    target: "emitter",
  });
  assert.deepEqual([...nested.artifacts.keys()], ["weights/fc.bin", "m.json"]);
  await assertRejects(
    { registry: emitterRegistry(() => new Map([["a", bytes], ["a/b", bytes]])), target: "emitter" },
    'target "emitter" returned artifacts "a" and "a/b": "a" cannot be both a file and a folder',
  );
});

Deno.test("compile() rejects what a target's emit returns unless it is a Map of names to bytes", async () => {
  const expect = (value: unknown, message: string) =>
    assertRejects(
      { registry: emitterRegistry(() => value), target: "emitter" },
      `target "emitter" returned ${message}`,
    );
  await expect(
    { "m.onnx": new Uint8Array(1) },
    "a plain object from emit(); expected a Map of file name to Uint8Array",
  );
  await expect(undefined, "undefined from emit(); expected a Map of file name to Uint8Array");
  await expect([["m.onnx", new Uint8Array(1)]], "an array from emit(); expected a Map of file name to Uint8Array");
  await expect(new Map([["m.onnx", "text"]]), 'artifact "m.onnx" as a string; expected a Uint8Array');
  await expect(new Map([["m.onnx", [1, 2]]]), 'artifact "m.onnx" as an array; expected a Uint8Array');
  await expect(new Map([[1, new Uint8Array(1)]]), "an artifact named by a number; expected a file name (a string)");
});

Deno.test("compile() rejects calibration data that does not fit the model input, naming the option", async () => {
  const seen = {};
  const expect = (calibration: CompileOptions["calibration"], message: string) =>
    assertRejects({ passes: "probe", registry: probeRegistry(seen), calibration }, `calibration: ${message}`);
  await expect(tensor("i64", [2, 3, 8, 8], new BigInt64Array(384)), 'input "input" must be f32, found i64');
  await expect(
    tensor("f32", [3, 8, 8], lcg(192, 1)),
    'input "input" must have shape [N,3,8,8] (first axis: the samples), found [3,8,8]',
  );
  await expect(tensor("f32", [2, 1, 8, 8], lcg(128, 1)), 'input "input" must have shape [N,3,8,8], found [2,1,8,8]');
  await expect(
    tensor("f32", [0, 3, 8, 8], new Float32Array(0)),
    'no samples for input "input" (shape [0,3,8,8]); expected at least one',
  );
  await expect(
    tensor("f32", [], new Float32Array(1)),
    'input "input" takes samples along the first axis, found a scalar',
  );
  const error = await assertRejects(
    { calibration: { input: tensor("f64", [1, 3, 8, 8], new Float64Array(192)) } },
    'calibration: input "input" must be f32, found f64',
  );
  assert.ok(error instanceof DataError && error.option === "calibration");
});

Deno.test("compile() rejects evaluation labels outside [0, classes), naming the option", async () => {
  const inputs = tensor("f32", [3, 3, 8, 8], lcg(3 * 192, 31));
  for (const label of [10n, -1n]) {
    const error = await assertRejects(
      { evaluation: { inputs, labels: tensor("i64", [3], new BigInt64Array([0n, 1n, label])) } },
      `evaluation: label ${label} of sample 2 is outside [0, 10): the model scores 10 classes`,
    );
    assert.ok(error instanceof DataError && error.option === "evaluation");
  }
  await assertRejects(
    {
      evaluation: {
        inputs: tensor("f32", [3, 3, 4, 4], lcg(3 * 48, 1)),
        labels: tensor("i32", [3], new Int32Array(3)),
      },
    },
    'evaluation: input "input" must have shape [N,3,8,8], found [3,3,4,4]',
  );
});

Deno.test("compile() rejects plugins together with a registry", async () => {
  const plugin = {
    name: "p",
    apiVersion: 1,
    passes: [definePass({ name: "p", summary: "", options: {}, run: () => false })],
  };
  await assertRejects(
    { registry: defaultRegistry(), plugins: [plugin] },
    "compile(): give plugins or registry, not both (add the plugins with registry.addPlugin)",
  );
});

/** A registry with a pass that records what it saw, and one that breaks the IR. */
function probeRegistry(seen: { calibration?: unknown }): ReturnType<typeof defaultRegistry> {
  const registry = defaultRegistry();
  registry.addPass(definePass({
    name: "probe",
    summary: "Record the calibration data",
    options: {},
    run(_module, _options, ctx) {
      seen.calibration = ctx.calibration;
      ctx.log("probed");
      ctx.emit("warning", "just so you know");
      return false;
    },
  }));
  registry.addPass(definePass({
    name: "break-ir",
    summary: "Make the graph return a value it does not define",
    options: {},
    run(module) {
      module.graph.outputs[0] = new Value("nowhere");
      return true;
    },
  }));
  return registry;
}

Deno.test("compile() hands calibration data to passes, a lone tensor going to the first input", async () => {
  const seen: { calibration?: unknown } = {};
  const sample = tensor("f32", [1, 3, 8, 8], lcg(192, 9));
  const { report } = await compile(SMALL_CNN, { passes: "probe", registry: probeRegistry(seen), calibration: sample });
  assert.deepEqual(seen.calibration, { input: sample });
  assert.deepEqual(report.passes[0].diagnostics, [{ severity: "warning", message: "just so you know", pass: "probe" }]);
  await assertRejects(
    { passes: "probe", registry: probeRegistry(seen), calibration: { image: sample } },
    'calibration: "image" is not a graph input; inputs are: "input"',
  );
});

Deno.test("compile() passes IR dumps, logs and instrumentation through", async () => {
  const dumps: string[] = [];
  const logs: string[] = [];
  const events: string[] = [];
  await compile(SMALL_CNN, {
    passes: "probe,dce",
    registry: probeRegistry({}),
    printIrAfter: ["dce"],
    onIr: (header, ir) => dumps.push(`${header}|${ir.split("\n")[0]}`),
    onLog: (pass, message) => logs.push(`${pass}: ${message}`),
    instrument: {
      beforePass: (step) => events.push(`before ${step.pass.name}`),
      afterPass: (record) => events.push(`after ${record.name}`),
    },
  });
  assert.equal(dumps.length, 1);
  assert.match(dumps[0], /^\/\/ ----- IR after dce -----\|module opsets \{"": 13\}/);
  assert.deepEqual(logs, ["probe: probed"]);
  assert.deepEqual(events, ["before probe", "after probe", "before dce", "after dce"]);
});

Deno.test("compile() names the pass that broke the IR, or verifies once at the end without verifyEach", async () => {
  const error = await assertRejects(
    { passes: "break-ir", registry: probeRegistry({}) },
    /^pass "break-ir" broke the IR: .*nowhere/,
  );
  assert.ok(error instanceof PassError);
  await assertRejects(
    { passes: "break-ir", registry: probeRegistry({}), verifyEach: false },
    /^the IR is invalid after the pipeline: .*nowhere/,
  );
});

Deno.test("compile() reports a failing target in one line and keeps its warnings", async () => {
  const registry = defaultRegistry();
  registry.addTarget(defineTarget({
    name: "boom",
    summary: "Always fails",
    options: {},
    emit() {
      throw new Error("no space left\nsecond line");
    },
  }));
  registry.addTarget(defineTarget({
    name: "picky",
    summary: "Fails through a diagnostic",
    options: {},
    emit(_module, _options, ctx) {
      ctx.emit("error", "weights too large");
      ctx.emit("error", "and too many");
      return new Map();
    },
  }));
  registry.addTarget(defineTarget({
    name: "chatty",
    summary: "Warns",
    options: {},
    emit(_module, _options, ctx) {
      ctx.emit("warning", "approximated softmax");
      return new Map([[`${ctx.modelName}.txt`, new Uint8Array([1])]]);
    },
  }));
  await assertRejects({ registry, target: "boom" }, 'target "boom" failed: no space left');
  await assertRejects({ registry, target: "picky" }, 'target "picky" failed: weights too large (and 1 more error)');
  const { report } = await compile(SMALL_CNN, { registry, target: "chatty" });
  assert.deepEqual(report.target.diagnostics, [{ severity: "warning", message: "approximated softmax" }]);
  assert.deepEqual(report.artifacts.map((a) => a.name), ["model.txt"]);
});

Deno.test("compile() measures accuracy before and after when given a labelled data set", async () => {
  const inputs = tensor("f32", [6, 3, 8, 8], lcg(6 * 192, 31));
  const predicted = interpret(importOnnx(SMALL_CNN), { input: inputs }).logits.data as Float32Array;
  // Label each sample with its predicted class, except the last two: accuracy 4/6 before and after.
  const labels = new BigInt64Array(6);
  for (let i = 0; i < 6; i++) {
    const row = [...predicted.subarray(i * 10, i * 10 + 10)];
    const best = row.indexOf(Math.max(...row));
    labels[i] = BigInt(i < 4 ? best : (best + 1) % 10);
  }
  const { report } = await compile(SMALL_CNN, {
    passes: "fold-bn,canonicalize,dce",
    evaluation: { inputs, labels: tensor("i64", [6], labels), batchSize: 4 },
  });
  assert.deepEqual(report.accuracy, { before: 4 / 6, after: 4 / 6, samples: 6 });
});
