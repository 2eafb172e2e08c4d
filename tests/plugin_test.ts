/**
 * The plugin path through compile(): the example plugin `examples/custom_pass.ts`
 * (`clip-to-relu`) on models with Clip in both ONNX forms, outputs unchanged in
 * the interpreter and onnxruntime, and the plugin errors (wrong API version,
 * empty plugin, clashing names) with their messages.
 */
import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { compile } from "../driver/compile.ts";
import { type Plugin, PLUGIN_API_VERSION } from "../driver/registry.ts";
import { attr } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { interpret } from "../ir/interpreter.ts";
import { Module } from "../ir/module.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { float32Tensor, type Tensor, tensor } from "../ir/tensor.ts";
import { definePass } from "../passes/pass.ts";
import { PipelineError } from "../passes/pipeline.ts";
import { defineTarget } from "../targets/target.ts";
import { clipToReluPass, plugin } from "../examples/custom_pass.ts";
import { compareTensors } from "./tensor_compare.ts";

const F32_MAX = 3.4028234663852886e38;

/** Inputs spread over [-8, 8) so every Clip bound is crossed. */
function input(seed: number): Tensor {
  const data = new Float32Array(2 * 4 * 5);
  let s = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = (s / 2 ** 32) * 16 - 8;
  }
  return tensor("f32", [2, 4, 5], data);
}

/** A chain of Clips (each feeding the next) over x[2,4,5]; `bounds` builds each Clip's bounds. */
function clipChain(opset: number, clips: ((g: Graph, op: Op) => void)[]): Uint8Array {
  const g = new Graph("clips");
  let v = g.addInput(new Value("x", { elem: "f32", shape: [2, 4, 5] }));
  clips.forEach((setBounds, i) => {
    const op = new Op({ name: `clip${i}`, type: "Clip", operands: [v], results: [new Value(`y${i}`)] });
    setBounds(g, op);
    v = g.addOp(op).result;
  });
  g.outputs.push(v);
  return exportOnnx(new Module(g, [["", opset]], 8));
}

const scalar = (g: Graph, name: string, x: number): Value =>
  g.addConstant(name, float32Tensor([], [x]), { elem: "f32", shape: [] });

/** Clip-13 (bounds as operands): which become Relu by default is in each comment. */
const OPSET13 = clipChain(13, [
  (g, op) => op.addOperand(scalar(g, "zero", 0)), // min 0, no max: Relu
  (g, op) => [scalar(g, "lo1", 0), scalar(g, "six", 6)].forEach((v) => op.addOperand(v)), // ReLU6: kept
  (g, op) => [scalar(g, "lo2", 0), scalar(g, "inf", Infinity)].forEach((v) => op.addOperand(v)), // max +inf: Relu
  (g, op) => [null, scalar(g, "hi3", 6)].forEach((v) => op.addOperand(v)), // no min: kept
  (g, op) => op.addOperand(scalar(g, "small", 0.001)), // min 0.001 (as f32, a little more): kept unless min-tolerance allows it
  (g, op) => {
    // min from a Constant op, max at f32's largest finite value: Relu.
    const c = g.addOp(
      new Op({
        name: "zero_op",
        type: "Constant",
        results: [new Value("zero_op.out")],
        attributes: [["value", attr.tensor(float32Tensor([], [0]))]],
      }),
    );
    [c.result, scalar(g, "fmax", F32_MAX)].forEach((v) => op.addOperand(v));
  },
]);

/** Clip-6 (bounds as attributes). */
const OPSET10 = clipChain(10, [
  (_g, op) => op.attributes.set("min", attr.float(0)), // Relu
  (_g, op) => [["min", 0], ["max", 6]].forEach(([k, v]) => op.attributes.set(k as string, attr.float(v as number))), // kept
  (_g, op) => op.attributes.set("max", attr.float(3)), // kept: no lower bound
  (_g, op) =>
    [["min", 0], ["max", F32_MAX]].forEach(([k, v]) => op.attributes.set(k as string, attr.float(v as number))), // Relu
]);

async function runOrt(bytes: Uint8Array, x: Tensor): Promise<Tensor> {
  const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
  try {
    const out = await session.run({ x: new ort.Tensor("float32", x.data as Float32Array, [...x.shape]) });
    const y = Object.values(out)[0];
    return tensor("f32", [...y.dims], y.data as Float32Array);
  } finally {
    await session.release();
  }
}

function countOps(bytes: Uint8Array, type: string): number {
  return importOnnx(bytes).graph.ops.filter((op) => op.type === type).length;
}

for (
  const [label, model, replaced, kept] of [["Clip-13 operand", OPSET13, 3, 3], [
    "Clip-6 attribute",
    OPSET10,
    2,
    2,
  ]] as const
) {
  Deno.test(`clip-to-relu through compile() on ${label} bounds: Relu where equivalent, outputs unchanged`, async () => {
    const { artifacts, report } = await compile(model, { passes: "clip-to-relu,dce", plugins: [plugin] });
    const out = artifacts.get("model.onnx")!;
    assert.equal(countOps(out, "Relu"), countOps(model, "Relu") + replaced);
    assert.equal(countOps(out, "Clip"), kept);
    assert.equal(report.pipeline, "clip-to-relu{min-tolerance=0},dce");
    assert.deepEqual(report.passes[0].stats, { "clips-replaced": replaced, "clips-kept": kept });
    assert.equal(report.passes[0].changed, true);

    for (const seed of [1, 2]) {
      const x = input(seed);
      const expected = interpret(importOnnx(model), { x });
      const [name] = Object.keys(expected);
      assert.equal(compareTensors(interpret(importOnnx(out), { x })[name], expected[name], { rtol: 0, atol: 0 }), null);
      assert.equal(compareTensors(await runOrt(out, x), expected[name], { rtol: 0, atol: 0 }), null, "onnxruntime");
    }
  });
}

Deno.test("clip-to-relu keeps the op's name and result, and dce then drops the unused bounds", async () => {
  const { artifacts, report } = await compile(OPSET13, { passes: "clip-to-relu,dce", plugins: [plugin] });
  const module = importOnnx(artifacts.get("model.onnx")!);
  const relus = module.graph.ops.filter((op) => op.type === "Relu");
  assert.deepEqual(relus.map((op) => [op.name, op.result.name, op.operands.length]), [
    ["clip0", "y0", 1],
    ["clip2", "y2", 1],
    ["clip5", "y5", 1],
  ]);
  assert.equal(module.graph.outputs[0].name, "y5");
  // zero, lo2, inf, fmax and the Constant op's value (an initializer since the import turns weights in Constant ops
  // into initializers) are no longer used.
  assert.deepEqual(report.passes[1].stats, { "ops-removed": 0, "constants-removed": 5 });
  assert.ok(!module.graph.constants.some((v) => ["zero", "lo2", "inf", "fmax"].includes(v.name)));
});

Deno.test("clip-to-relu min-tolerance also rewrites a lower bound that close to 0, moving outputs by at most that", async () => {
  const { artifacts, report } = await compile(OPSET13, {
    passes: "clip-to-relu{min-tolerance=0.002}",
    plugins: [plugin],
  });
  assert.deepEqual(report.passes[0].stats, { "clips-replaced": 4, "clips-kept": 2 });
  assert.equal(report.pipeline, "clip-to-relu{min-tolerance=0.002}");
  const x = input(3);
  const expected = interpret(importOnnx(OPSET13), { x }).y5;
  const got = interpret(importOnnx(artifacts.get("model.onnx")!), { x }).y5;
  assert.equal(compareTensors(got, expected, { rtol: 0, atol: 0.002 }), null);
  assert.notEqual(compareTensors(got, expected, { rtol: 0, atol: 0 }), null, "the tolerance did change outputs");
});

Deno.test("clip-to-relu leaves Clips alone when Relu would not be equivalent or legal", async () => {
  const g = new Graph("kept");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [3] }));
  const lo = g.addInput(new Value("lo", { elem: "f32", shape: [] })); // a runtime bound
  const n = g.addInput(new Value("n", { elem: "i32", shape: [3] }));
  const a = g.addOp(new Op({ name: "runtime_min", type: "Clip", operands: [x, lo], results: [new Value("a")] }));
  const zero = g.addConstant("izero", { dtype: "i32", shape: [], data: new Int32Array([0]) }, {
    elem: "i32",
    shape: [],
  });
  const b = g.addOp(new Op({ name: "int_clip", type: "Clip", operands: [n, zero], results: [new Value("b")] }));
  g.outputs.push(a.result, b.result);
  const logs: string[] = [];
  const { report } = await compile(exportOnnx(new Module(g, [["", 13]], 8)), {
    passes: "clip-to-relu",
    plugins: [plugin],
    onLog: (_pass, line) => logs.push(line),
  });
  assert.deepEqual(report.passes[0].stats, { "clips-replaced": 0, "clips-kept": 2 });
  assert.equal(report.passes[0].changed, false);
  assert.deepEqual(logs, [
    'kept op "runtime_min": its lower bound is not a constant',
    'kept op "int_clip": Relu-13 does not accept i32',
  ]);
  // From opset 14 Relu takes signed integers, so the same int Clip becomes a Relu.
  const { report: r14 } = await compile(exportOnnx(new Module(g, [["", 14]], 8)), {
    passes: "clip-to-relu",
    plugins: [plugin],
  });
  assert.deepEqual(r14.passes[0].stats, { "clips-replaced": 1, "clips-kept": 1 });
});

Deno.test("clip-to-relu is an unknown pass without its plugin, and checks its option", async () => {
  await assert.rejects(compile(OPSET13, { passes: "clip-to-relu" }), (e: unknown) => {
    assert.ok(e instanceof PipelineError);
    assert.match(e.message, /^Cannot parse pipeline: unknown pass "clip-to-relu"; passes are: .*dce/);
    return true;
  });
  await assert.rejects(compile(OPSET13, { passes: "clip-to-relu{min-tolerance=-1}", plugins: [plugin] }), {
    message: 'Cannot configure pass "clip-to-relu": option "min-tolerance" must be a number in [0, inf), found "-1"',
  });
});

Deno.test("compile() rejects a plugin for another API version", async () => {
  const future: Plugin = { ...plugin, name: "future", apiVersion: PLUGIN_API_VERSION + 1 };
  await assert.rejects(compile(OPSET13, { plugins: [future] }), {
    message: `plugin "future" targets plugin API ${
      PLUGIN_API_VERSION + 1
    }; this compiler implements ${PLUGIN_API_VERSION}`,
  });
});

Deno.test("compile() rejects a plugin that contributes nothing", async () => {
  await assert.rejects(compile(OPSET13, { plugins: [{ name: "empty", apiVersion: PLUGIN_API_VERSION, passes: [] }] }), {
    message: 'plugin "empty" contributes no passes, targets or ops',
  });
});

Deno.test("compile() rejects a plugin pass whose name clashes, naming both sources", async () => {
  const dce = definePass({ name: "dce", summary: "Another dce", options: {}, run: () => false });
  await assert.rejects(
    compile(OPSET13, { plugins: [{ name: "mine", apiVersion: PLUGIN_API_VERSION, passes: [dce] }] }),
    {
      message: 'pass "dce" is defined twice: by built-in and by plugin "mine"',
    },
  );
  const copy: Plugin = { name: "copy", apiVersion: PLUGIN_API_VERSION, passes: [clipToReluPass] };
  await assert.rejects(compile(OPSET13, { plugins: [plugin, copy] }), {
    message: 'pass "clip-to-relu" is defined twice: by plugin "clip-to-relu" and by plugin "copy"',
  });
});

Deno.test("compile() rejects a plugin target whose name is not a pipeline word", async () => {
  const target = defineTarget({ name: "c.mcu", summary: "Bad name", options: {}, emit: () => new Map() });
  await assert.rejects(
    compile(OPSET13, { plugins: [{ name: "mine", apiVersion: PLUGIN_API_VERSION, targets: [target] }] }),
    { message: 'target name "c.mcu" (from plugin "mine") must be kebab-case: [a-z][a-z0-9-]*' },
  );
});

Deno.test("compile() rejects plugin records of the wrong shape, naming the plugin and the field", async () => {
  const v = PLUGIN_API_VERSION;
  const run = () => false;
  const cases: [unknown, string][] = [
    [null, "plugin is null; expected { name, apiVersion, passes, targets, ops }"],
    ["clip", 'plugin is a string ("clip"); expected { name, apiVersion, passes, targets, ops }'],
    [{}, 'plugin: field "name" must be a non-empty string, found nothing'],
    [{ name: "p" }, 'plugin "p" targets plugin API nothing; this compiler implements 1'],
    [
      { name: "p", apiVersion: v, passes: "prune" },
      'plugin "p": field "passes" must be an array, found a string ("prune")',
    ],
    [{ name: "p", apiVersion: v, targets: {} }, 'plugin "p": field "targets" must be an array, found an object'],
    [
      { name: "p", apiVersion: v, passes: [null] },
      'plugin "p": passes[0] is null; expected { name, summary, options, run }',
    ],
    [
      { name: "p", apiVersion: v, passes: [{ name: "q", summary: "", options: null, run }] },
      'plugin "p": passes[0] ("q"): field "options" must be an object of option declarations, found null',
    ],
    [
      { name: "p", apiVersion: v, passes: [{ name: "q", summary: "", options: {} }] },
      'plugin "p": passes[0] ("q"): field "run" must be a function, found nothing',
    ],
    [
      {
        name: "p",
        apiVersion: v,
        passes: [{ name: "q", summary: "", options: { n: { kind: "float", doc: "" } }, run }],
      },
      'plugin "p": passes[0] ("q"): option "n": unknown kind "float"; kinds are: number, int, bool, enum, string, list',
    ],
    [
      { name: "p", apiVersion: v, passes: [{ name: "q", summary: "", options: { n: { kind: "int", doc: "" } }, run }] },
      'plugin "p": passes[0] ("q"): option "n": field "default" must be an integer, found nothing (or declare it optional: true)',
    ],
    [
      { name: "p", apiVersion: v, targets: [{ name: "t", summary: "", options: {}, emit: "x" }] },
      'plugin "p": targets[0] ("t"): field "emit" must be a function, found a string ("x")',
    ],
    [
      { name: "p", apiVersion: v, ops: [{}] },
      'plugin "p": ops[0] must be an op definition with a "type", found an object',
    ],
  ];
  for (const [record, message] of cases) {
    await assert.rejects(compile(OPSET13, { plugins: [record as Plugin] }), { message }, message);
  }
});

Deno.test("compile() rejects a plugin target whose emit returns a plain object, naming the target", async () => {
  const target = {
    name: "obj",
    summary: "Returns an object",
    options: {},
    emit: () => ({ "m.bin": new Uint8Array(1) }),
  };
  await assert.rejects(
    compile(OPSET13, {
      plugins: [{ name: "p", apiVersion: PLUGIN_API_VERSION, targets: [target as never] }],
      target: "obj",
    }),
    { message: 'target "obj" returned a plain object from emit(); expected a Map of file name to Uint8Array' },
  );
});
