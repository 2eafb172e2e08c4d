/**
 * The ONNX target: its files, external data layout and determinism, and its
 * output checked by independent references on real models, through compile():
 * `onnx.checker.check_model(full_check=True)` from Debian python3-onnx and
 * onnxruntime-node outputs equal to the interpreter's on the input model.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { compile } from "../../driver/compile.ts";
import { runOnnxruntime } from "../../driver/onnxruntime.ts";
import { attr, type Attribute } from "../../ir/attributes.ts";
import { Graph, Op, Value } from "../../ir/graph.ts";
import { interpret } from "../../ir/interpreter.ts";
import { Module } from "../../ir/module.ts";
import { exportOnnx } from "../../ir/onnx/export.ts";
import { importOnnx } from "../../ir/onnx/import.ts";
import { printModule } from "../../ir/printer.ts";
import { inferShapes } from "../../ir/shape.ts";
import { float32Tensor, type Tensor } from "../../ir/tensor.ts";
import { isTensorType } from "../../ir/types.ts";
import { BACKEND_DATA_DIR, backendDataAvailable, loadDataSets } from "../../tests/onnx_backend.ts";
import { onnxChecker, onnxStructureProblems } from "../../tests/onnx_checks.ts";
import { compareTensors, randomInput } from "../../tests/tensor_compare.ts";
import type { Artifacts, TargetContext } from "../target.ts";
import { onnxTarget } from "./onnx_target.ts";

const PYTHON = "/usr/bin/python3";
const MODELS_DIR = new URL("../../examples/models/", import.meta.url).pathname;
// "fold-bn" without dce leaves dead ops in the module (defect 16): the target must not export them.
const PIPELINES = ["", "fold-bn", "fold-bn,canonicalize,dce"];
/**
 * Used when the project's trained models are not there yet: CNN layers from the ONNX backend data
 * (none at opset 6, whose BatchNormalization and Gemm onnxruntime 1.30 no longer implements).
 */
const BACKEND_MODELS = [
  "pytorch-converted/test_Conv2d",
  "pytorch-converted/test_Conv2d_depthwise_padded",
  "pytorch-converted/test_MaxPool2d",
  "node/test_conv_with_strides_padding",
  "node/test_batchnorm_example",
  "node/test_gemm_all_attributes",
];

/**
 * Checks a model file with the checker of the installed onnx; prints `OK`, or `SKIP <why>` when the
 * model's IR version or default-domain opset is newer than that checker knows (onnx 1.12: IR 8, opset 17).
 */
const CHECKER = `
import sys, onnx
from onnx import checker, defs
m = onnx.load(sys.argv[1])
opset = max([o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] or [0])
if m.ir_version > onnx.IR_VERSION or opset > defs.onnx_opset_version():
    print(f"SKIP IR version {m.ir_version} / opset {opset}: the checker of onnx {onnx.__version__} knows IR <= {onnx.IR_VERSION}, opset <= {defs.onnx_opset_version()}")
else:
    checker.check_model(m, full_check=True)
    print("OK")
`;

async function pythonOnnxAvailable(): Promise<boolean> {
  try {
    const out = await new Deno.Command(PYTHON, { args: ["-c", "import onnx.checker"], stdout: "null", stderr: "null" })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

const hasChecker = await pythonOnnxAvailable();
if (!hasChecker) {
  console.warn(`onnx.checker tests skipped: ${PYTHON} cannot import onnx; install the Debian package python3-onnx`);
}

/** Write artifacts to a fresh folder and run the checker on the model; returns "OK" or the skip note. */
async function checkModel(artifacts: Artifacts, modelFile: string): Promise<string> {
  const dir = await Deno.makeTempDir();
  try {
    for (const [name, bytes] of artifacts) await Deno.writeFile(join(dir, name), bytes);
    const out = await new Deno.Command(PYTHON, { args: ["-c", CHECKER, join(dir, modelFile)] }).output();
    const text = new TextDecoder();
    assert.ok(out.success, `onnx.checker rejected ${modelFile}:\n${text.decode(out.stderr).trim().split("\n").pop()}`);
    return text.decode(out.stdout).trim();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

interface ModelCase {
  label: string;
  bytes: Uint8Array;
  feeds: Record<string, Tensor>;
}

function modelCases(): ModelCase[] {
  const trained = existsSync(MODELS_DIR) ? readdirSync(MODELS_DIR).filter((f) => f.endsWith(".onnx")).sort() : [];
  if (trained.length > 0) {
    return trained.map((file) => {
      const bytes = Deno.readFileSync(join(MODELS_DIR, file));
      const module = importOnnx(bytes);
      inferShapes(module);
      const feeds: Record<string, Tensor> = {};
      module.graph.inputs.filter((v) => v.constant === null).forEach((v, i) => {
        assert.ok(isTensorType(v.type) && v.type.shape !== null, `input ${v.name} of ${file} has a shape`);
        feeds[v.name] = randomInput(v.type.shape.map((d) => (typeof d === "number" ? d : 2)), 11 + i);
      });
      return { label: file, bytes, feeds };
    });
  }
  console.warn(`no trained models in ${MODELS_DIR}: the ONNX target is checked on ONNX backend models`);
  if (!backendDataAvailable()) return [];
  return BACKEND_MODELS.map((name) => {
    const dir = join(BACKEND_DATA_DIR, name);
    const bytes = Deno.readFileSync(join(dir, "model.onnx"));
    const module = importOnnx(bytes);
    const [data] = loadDataSets(dir);
    const inputs = module.graph.inputs.filter((v) => v.constant === null);
    const feeds = Object.fromEntries(inputs.map((v, i) => [v.name, data.inputs[i]]));
    return { label: name, bytes, feeds };
  });
}

for (const { label, bytes, feeds } of modelCases()) {
  for (const passes of PIPELINES) {
    Deno.test(`onnxTarget output passes onnx.checker and runs in onnxruntime like the interpreter: ${label}, passes "${passes}"`, async () => {
      const expected = interpret(importOnnx(bytes), feeds);
      const { artifacts } = await compile(bytes, { passes, modelName: "out" });
      assert.deepEqual([...artifacts.keys()], ["out.onnx"]);
      const emitted = artifacts.get("out.onnx")!;
      assert.deepEqual(onnxStructureProblems(emitted), []);
      if (hasChecker) {
        const verdict = await checkModel(artifacts, "out.onnx");
        if (verdict !== "OK") console.warn(`${label}: ${verdict}`);
      }
      const ours = interpret(importOnnx(emitted), feeds);
      const reference = await runOnnxruntime(emitted, feeds);
      assert.deepEqual(Object.keys(reference).sort(), Object.keys(expected).sort());
      for (const [name, t] of Object.entries(reference)) {
        assert.equal(compareTensors(t, expected[name], { rtol: 1e-4, atol: 1e-4 }), null, `onnxruntime output ${name}`);
        assert.equal(compareTensors(ours[name], expected[name], { rtol: 1e-4, atol: 1e-4 }), null, `output ${name}`);
      }
    });
  }
}

/** x[1,3,8,8] -> Conv(8 filters 3x3, 864 weight bytes) -> Relu -> Flatten -> Gemm(512x10, 20 KB) -> y, at `opset`. */
function smallCnn(opset = 13): Module {
  const g = new Graph("small_cnn");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 3, 8, 8] }));
  const fill = (n: number, seed: number): Float32Array => randomInput([n], seed).data as Float32Array;
  const w = g.addConstant("conv.w", float32Tensor([8, 3, 3, 3], fill(216, 1)), { elem: "f32", shape: [8, 3, 3, 3] });
  const b = g.addConstant("conv.b", float32Tensor([8], fill(8, 2)), { elem: "f32", shape: [8] });
  const fcW = g.addConstant("fc.w", float32Tensor([10, 512], fill(5120, 3)), { elem: "f32", shape: [10, 512] });
  const conv = g.addOp(
    new Op({
      name: "conv",
      type: "Conv",
      operands: [x, w, b],
      results: [new Value("conv.y")],
      attributes: [["pads", attr.ints([1, 1, 1, 1])], ["kernel_shape", attr.ints([3, 3])]],
    }),
  );
  const relu = g.addOp(new Op({ name: "relu", type: "Relu", operands: [conv.result], results: [new Value("r")] }));
  const flat = g.addOp(new Op({ name: "flat", type: "Flatten", operands: [relu.result], results: [new Value("f")] }));
  const fc = g.addOp(
    new Op({
      name: "fc",
      type: "Gemm",
      operands: [flat.result, fcW],
      results: [new Value("y")],
      attributes: [["transB", attr.int(1)]],
    }),
  );
  g.outputs.push(fc.result);
  const module = new Module(g, [["", opset]], 8);
  inferShapes(module);
  return module;
}

const context: TargetContext = { modelName: "cnn", emit: () => {} };

Deno.test("onnxTarget writes <model>.onnx that imports back to the same IR", async () => {
  const module = smallCnn();
  const artifacts = await onnxTarget.emit(module, { externalData: false, threshold: 1024 }, context);
  assert.deepEqual([...artifacts.keys()], ["cnn.onnx"]);
  const back = importOnnx(artifacts.get("cnn.onnx")!);
  inferShapes(back);
  assert.equal(printModule(back), printModule(module));
});

Deno.test("onnxTarget with external-data moves weights of at least threshold bytes to <model>.onnx.data", async () => {
  const module = smallCnn();
  const artifacts = await onnxTarget.emit(module, { externalData: true, threshold: 1024 }, context);
  assert.deepEqual([...artifacts.keys()], ["cnn.onnx", "cnn.onnx.data"]);
  const side = artifacts.get("cnn.onnx.data")!;
  // conv.w (864 bytes) and conv.b (32 bytes) stay inline; fc.w (20480 bytes) moves, at offset 0.
  assert.equal(side.byteLength, 5120 * 4);
  const fcW = module.graph.constants.find((v) => v.name === "fc.w")!.constant!;
  assert.deepEqual(new Float32Array(side.slice().buffer), fcW.data);
  const back = importOnnx(artifacts.get("cnn.onnx")!, {
    baseDir: "/artifacts",
    readFile: (path) => {
      assert.equal(path, "/artifacts/cnn.onnx.data");
      return side;
    },
  });
  inferShapes(back);
  assert.equal(printModule(back), printModule(module));

  const all = await onnxTarget.emit(module, { externalData: true, threshold: 1 }, context);
  // In constant order at 64-byte aligned offsets: conv.w at 0 (864 bytes), conv.b at 896, fc.w at 960.
  assert.equal(all.get("cnn.onnx.data")!.byteLength, 960 + 20480);
});

Deno.test("onnxTarget with external-data writes no side file when no weight reaches the threshold", async () => {
  const artifacts = await onnxTarget.emit(smallCnn(), { externalData: true, threshold: 1 << 20 }, context);
  assert.deepEqual([...artifacts.keys()], ["cnn.onnx"]);
  const inline = await onnxTarget.emit(smallCnn(), { externalData: false, threshold: 1024 }, context);
  assert.deepEqual(artifacts.get("cnn.onnx"), inline.get("cnn.onnx"));
});

Deno.test("onnxTarget output runs in onnxruntime with external data beside it", async () => {
  const module = smallCnn();
  const feeds = { x: randomInput([2, 3, 8, 8], 5) };
  const expected = interpret(module, feeds);
  const artifacts = await onnxTarget.emit(module, { externalData: true, threshold: 1024 }, context);
  const dir = await Deno.makeTempDir();
  try {
    for (const [name, bytes] of artifacts) await Deno.writeFile(join(dir, name), bytes);
    const got = await runOnnxruntime(join(dir, "cnn.onnx"), feeds);
    assert.equal(compareTensors(got.y, expected.y, { rtol: 1e-4, atol: 1e-4 }), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  if (hasChecker) assert.equal(await checkModel(artifacts, "cnn.onnx"), "OK");
});

Deno.test("onnxTarget output is byte-identical from run to run", async () => {
  const options = { externalData: true, threshold: 1024 };
  const a = await onnxTarget.emit(smallCnn(), options, context);
  const b = await onnxTarget.emit(smallCnn(), options, context);
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [name, bytes] of a) assert.deepEqual(b.get(name), bytes, name);
});

Deno.test("onnxTarget keeps the module's opsets, including ones a pass raised", async () => {
  const module = smallCnn(11);
  const read = async (): Promise<[string, number][]> => {
    const artifacts = await onnxTarget.emit(module, { externalData: false, threshold: 1024 }, context);
    return [...importOnnx(artifacts.get("cnn.onnx")!).opsets];
  };
  assert.deepEqual(await read(), [["", 11]]);
  module.opsets.set("", 13);
  module.opsets.set("com.example", 1);
  assert.deepEqual(await read(), [["", 13], ["com.example", 1]]);
});

/** Build a graph op by op: `add(name, type, operands, attributes)` returns the op's result, named like the op. */
function builder(g: Graph) {
  let seed = 100;
  const constant = (name: string, shape: number[], scale = 0.5): Value =>
    g.addConstant(
      name,
      float32Tensor(shape, Float32Array.from(randomInput(shape, seed++).data as Float32Array, (v) => v * scale)),
      { elem: "f32", shape },
    );
  const add = (name: string, type: string, operands: Value[], attributes: [string, Attribute][] = []): Value =>
    g.addOp(new Op({ name, type, operands, results: [new Value(name)], attributes })).result;
  return { constant, add };
}

/**
 * x[1,4,6,6] -> conv -> BatchNormalization -> relu -> y, and a dead branch x -> dead_conv -> dead_relu plus an
 * unused constant: what a model cut at an inner layer looks like.
 */
function deadBranchModel(): Uint8Array {
  const g = new Graph("dead_branch");
  const { constant, add } = builder(g);
  const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 4, 6, 6] }));
  const pads: [string, Attribute] = ["pads", attr.ints([1, 1, 1, 1])];
  const conv = add("conv", "Conv", [x, constant("w", [8, 4, 3, 3])], [pads]);
  const bn = add("bn", "BatchNormalization", [
    conv,
    constant("gamma", [8]),
    constant("beta", [8]),
    constant("mean", [8]),
    g.addConstant("var", float32Tensor([8], new Float32Array(8).fill(0.8)), { elem: "f32", shape: [8] }),
  ]);
  g.outputs.push(add("relu", "Relu", [bn]));
  add("dead_relu", "Relu", [add("dead_conv", "Conv", [x, constant("dead_w", [2, 4, 3, 3])], [pads])]);
  constant("unused", [3]);
  return exportOnnx(new Module(g, [["", 13]]));
}

Deno.test("onnxTarget exports only what reaches the outputs, and leaves the compiled module as it was (defect 16)", async () => {
  const bytes = deadBranchModel();
  const feeds = { x: randomInput([1, 4, 6, 6], 3) };
  for (const passes of ["", "fold-bn", "fold-bn,bfp"]) {
    const { artifacts, module } = await compile(bytes, { passes, modelName: "out" });
    const emitted = artifacts.get("out.onnx")!;
    assert.deepEqual(onnxStructureProblems(emitted), [], passes);
    const names = importOnnx(emitted).graph.ops.map((op) => op.name);
    assert.ok(!names.some((n) => n.startsWith("dead")), `${passes}: ${names}`);
    // The module compile() returns still has the dead branch: the target exported a copy.
    assert.ok(module.graph.ops.some((op) => op.name === "dead_relu"), passes);
    if (hasChecker && !passes.includes("bfp")) assert.equal(await onnxChecker(emitted), "OK");
    const expected = interpret(module, feeds).relu;
    const got = (await runOnnxruntime(emitted, feeds)).relu;
    assert.equal(compareTensors(got, expected, { rtol: 1e-4, atol: 1e-4 }), null, passes);
  }
});

/**
 * x[1,8,5,5] read by a depthwise and a pointwise conv (two Quantize ops of x under scheme=mx: their channel groups
 * differ), with ops already named like the names bfp and its ONNX form generate: `x.bfp` (the Quantize),
 * `x.bfp.1`, `dw.wm.dequantize` (the weights' DequantizeLinear) and `x.bfp.quantize` (fixed point's QuantizeLinear).
 */
function collidingNamesModel(): Uint8Array {
  const g = new Graph("names");
  const { constant, add } = builder(g);
  const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 8, 5, 5] }));
  const relu = add("x.bfp", "Relu", [x]);
  const dw = add("dw", "Conv", [relu, constant("dw_w", [8, 1, 3, 3])], [
    ["group", attr.int(8)],
    ["pads", attr.ints([1, 1, 1, 1])],
  ]);
  const pw = add("pw", "Conv", [relu, constant("pw_w", [8, 8, 1, 1])]);
  const sum = add("x.bfp.1", "Add", [dw, pw]);
  const a = add("dw.wm.dequantize", "Relu", [sum]);
  g.outputs.push(add("x.bfp.quantize", "Sigmoid", [a]));
  return exportOnnx(new Module(g, [["", 13]]));
}

Deno.test("bfp and its ONNX form give generated ops fresh names, even where ops already have them (defect 15)", async () => {
  const bytes = collidingNamesModel();
  const feeds = { x: randomInput([1, 8, 5, 5], 4) };
  const cases = ["bfp{scheme=mx,block=4}", "bfp", "fixed"];
  for (const passes of cases) {
    const { artifacts, module } = await compile(bytes, { passes, modelName: "out", calibration: feeds });
    const names = module.graph.ops.map((op) => op.name);
    assert.equal(new Set(names).size, names.length, `${passes}: ${names}`);
    const emitted = artifacts.get("out.onnx")!;
    assert.deepEqual(onnxStructureProblems(emitted), [], passes);
    const expected = interpret(module, feeds)["x.bfp.quantize"];
    const got = (await runOnnxruntime(emitted, feeds))["x.bfp.quantize"];
    assert.equal(compareTensors(got, expected, { rtol: 1e-4, atol: 1e-5 }), null, passes);
  }
});

Deno.test("onnxTarget renames a node whose name an earlier node has, with a warning", async () => {
  const g = new Graph("g");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [4] }));
  const a = g.addOp(new Op({ name: "n", type: "Relu", operands: [x], results: [new Value("a")] }));
  const b = g.addOp(new Op({ name: "n", type: "Neg", operands: [a.result], results: [new Value("b")] }));
  g.outputs.push(g.addOp(new Op({ name: "n.1", type: "Abs", operands: [b.result], results: [new Value("y")] })).result);
  const warnings: string[] = [];
  const artifacts = await onnxTarget.emit(new Module(g, [["", 13]]), { externalData: false, threshold: 1024 }, {
    modelName: "m",
    emit: (_severity, message) => warnings.push(message),
  });
  const emitted = artifacts.get("m.onnx")!;
  assert.deepEqual(importOnnx(emitted).graph.ops.map((op) => op.name), ["n", "n.2", "n.1"]);
  assert.deepEqual(warnings, [
    'two nodes are named "n"; the Neg one is exported as "n.2" (ONNX node names must be unique)',
  ]);
  assert.deepEqual(g.ops.map((op) => op.name), ["n", "n", "n.1"]);
  const y = (await runOnnxruntime(emitted, { x: float32Tensor([4], [1, -2, 3, -4]) })).y;
  assert.deepEqual([...y.data], [1, 0, 3, 0]);
});
