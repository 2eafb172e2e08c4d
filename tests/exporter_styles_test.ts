/**
 * Models as other toolchains write them (issue 14): weights held in `Constant` ops (Paddle2ONNX, tf2onnx) or shared
 * through `Identity` ops (PyTorch), and symbolic spatial dimensions (`[N,3,H,W]`). Passes must see the weights
 * without a `canonicalize` first, and costs must not guess the unknown dimensions.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { compile, type CompileResult } from "../driver/compile.ts";
import { runOnnxruntime } from "../driver/onnxruntime.ts";
import { attr } from "../ir/attributes.ts";
import { costOf } from "../ir/cost.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { Module } from "../ir/module.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import { float32Tensor, type Tensor } from "../ir/tensor.ts";
import { compareTensors, mulberry32, randomInput } from "./tensor_compare.ts";
import { onnxChecker, onnxCheckerAvailable } from "./onnx_checks.ts";
import { onnx } from "../ir/onnx/proto.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CHANNELS = [3, 8, 16, 16];
const CLASSES = 4;

/**
 * A small classifier built the way Paddle2ONNX writes one: every weight a `Constant` op, an input of shape
 * `[N,3,H,W]`, three Conv+BatchNormalization+Relu stages (stride 2), global pooling and a Gemm head; the last conv
 * reads its bias through an `Identity`, as PyTorch shares initializers.
 */
function paddleStyleModel(): Uint8Array {
  const next = mulberry32(21);
  const values = (n: number, scale = 1, offset = 0) =>
    Array.from({ length: n }, () => offset + scale * (2 * next() - 1));
  const g = new Graph("cls");
  const weight = (name: string, t: Tensor): Value =>
    g.addOp(new Op({ name, type: "Constant", results: [new Value(name)], attributes: [["value", attr.tensor(t)]] }))
      .result;
  let x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 3, "H", "W"] }));
  for (let i = 1; i < CHANNELS.length; i++) {
    const [cin, cout] = [CHANNELS[i - 1], CHANNELS[i]];
    const w = weight(`conv${i}.w`, float32Tensor([cout, cin, 3, 3], values(cout * cin * 9, 0.4)));
    let b = weight(`conv${i}.b`, float32Tensor([cout], values(cout, 0.1)));
    if (i === CHANNELS.length - 1) {
      b = g.addOp(new Op({ name: `conv${i}.b.alias`, type: "Identity", operands: [b], results: [new Value(`b${i}`)] }))
        .result;
    }
    const conv = g.addOp(
      new Op({
        name: `conv${i}`,
        type: "Conv",
        operands: [x, w, b],
        results: [new Value(`c${i}`)],
        attributes: [["pads", attr.ints([1, 1, 1, 1])], ["strides", attr.ints([2, 2])]],
      }),
    );
    const bn = [values(cout, 0.5, 1), values(cout, 0.2), values(cout, 0.2), values(cout, 0.3, 1)].map((v, k) =>
      weight(`bn${i}.${["scale", "bias", "mean", "var"][k]}`, float32Tensor([cout], v))
    );
    const norm = g.addOp(
      new Op({
        name: `bn${i}`,
        type: "BatchNormalization",
        operands: [conv.result, ...bn],
        results: [new Value(`n${i}`)],
      }),
    );
    x = g.addOp(new Op({ name: `relu${i}`, type: "Relu", operands: [norm.result], results: [new Value(`r${i}`)] }))
      .result;
  }
  const pooled = g.addOp(new Op({ name: "gap", type: "GlobalAveragePool", operands: [x], results: [new Value("p")] }));
  const flat = g.addOp(
    new Op({ name: "flatten", type: "Flatten", operands: [pooled.result], results: [new Value("f")] }),
  );
  const c = CHANNELS.at(-1)!;
  const fw = weight("fc.w", float32Tensor([CLASSES, c], values(CLASSES * c)));
  const fb = weight("fc.b", float32Tensor([CLASSES], values(CLASSES, 0.1)));
  const fc = g.addOp(
    new Op({
      name: "fc",
      type: "Gemm",
      operands: [flat.result, fw, fb],
      results: [new Value("logits")],
      attributes: [["transB", attr.int(1)]],
    }),
  );
  g.outputs.push(
    g.addOp(new Op({ name: "softmax", type: "Softmax", operands: [fc.result], results: [new Value("y")] })).result,
  );
  return exportOnnx(new Module(g, [["", 13]]));
}

/** MACs of the model at a `[1,3,h,w]` input: each conv k*k*Cin*Cout per output pixel, then the Gemm. */
function expectedMacs(h: number, w: number): number {
  let macs = 0;
  for (let i = 1; i < CHANNELS.length; i++) {
    [h, w] = [Math.floor((h - 1) / 2) + 1, Math.floor((w - 1) / 2) + 1];
    macs += 9 * CHANNELS[i - 1] * CHANNELS[i] * h * w;
  }
  return macs + CHANNELS.at(-1)! * CLASSES;
}

const MODEL = paddleStyleModel();

Deno.test("import turns Constant weights and Identity aliases into initializers; costs count them", () => {
  const module = importOnnx(MODEL);
  assert.deepEqual(module.graph.ops.filter((op) => op.type === "Constant" || op.type === "Identity"), []);
  inferShapes(module);
  const params = CHANNELS.slice(1).reduce((n, c, i) => n + c * CHANNELS[i] * 9 + 5 * c, 0) + (CHANNELS.at(-1)! + 1) *
      CLASSES;
  assert.equal(costOf(module).totals.params, params);

  const kept = importOnnx(MODEL, { keepWeightOps: true });
  assert.equal(kept.graph.ops.filter((op) => op.type === "Constant").length, 3 * 6 + 2);
  assert.equal(kept.graph.ops.filter((op) => op.type === "Identity").length, 1);
});

Deno.test("symbolic H and W: conv MACs are unknown and named, never counted at 1; the Gemm's are counted", () => {
  const module = importOnnx(MODEL);
  inferShapes(module);
  const { totals, layers } = costOf(module);
  assert.deepEqual(layers.filter((l) => l.macs === null).map((l) => l.name), ["conv1", "conv2", "conv3"]);
  assert.equal(totals.unknownMacLayers, 3);
  assert.deepEqual(totals.symbolicDims, ["x[2]=H", "x[3]=W"]);
  assert.equal(layers.find((l) => l.name === "fc")!.macs, CHANNELS.at(-1)! * CLASSES);
});

async function compileAt(passes: string, shape = [1, 3, 48, 192]): Promise<CompileResult> {
  return await compile(MODEL, { passes, inputShapes: { x: shape }, modelName: "cls" });
}

Deno.test("inputShapes gives the real MACs, and the emitted model declares the shape and runs in onnxruntime", async () => {
  const { report, artifacts } = await compileAt("");
  assert.equal(report.totals.before.macs, expectedMacs(48, 192));
  assert.equal(report.totals.before.unknownMacLayers, 0);
  const x = randomInput([1, 3, 48, 192], 5);
  const emitted = artifacts.get("cls.onnx")!;
  assert.equal(compareTensors((await runOnnxruntime(emitted, { x })).y, (await runOnnxruntime(MODEL, { x })).y), null);
  assert.deepEqual(importOnnx(emitted).graph.inputs[0].type, { elem: "f32", shape: [1, 3, 48, 192] });
});

Deno.test("inputShapes errors name the input and what disagrees", async () => {
  const cases: [Record<string, number[]>, RegExp][] = [
    [{ z: [1, 3, 8, 8] }, /inputShapes: "z" is not a graph input; inputs are: x/],
    [{ x: [1, 3, 8] }, /input "x" has rank 4 \(f32\[N,3,H,W\]\), found 3 dimensions/],
    [{ x: [1, 4, 8, 8] }, /input "x": dimension 1 is 3 in the model, found 4/],
    [{ x: [1, 3, 0, 8] }, /dimensions must be positive integers/],
  ];
  for (const [inputShapes, message] of cases) {
    await assert.rejects(compile(MODEL, { inputShapes }), message);
  }
});

Deno.test("prune, svd and bfp compress the Paddle-style model without canonicalize; outputs agree with onnxruntime", async () => {
  const x = randomInput([2, 3, 48, 192], 9);
  for (
    const [passes, check] of [
      ["prune{ratio=0.3}", (s: Record<string, unknown>) => assert.ok((s["channels-pruned"] as number) > 0)],
      ["svd{energy=0.9}", (s: Record<string, unknown>) => assert.ok((s["layers-decomposed"] as number) > 0)],
      ["bfp", (s: Record<string, unknown>) => assert.equal(s["layers-lowered"], 4)],
    ] as const
  ) {
    const { report, artifacts, module } = await compileAt(passes, [2, 3, 48, 192]);
    check(report.passes[0].stats as Record<string, unknown>);
    assert.ok(report.passes[0].changed, passes);
    assert.ok(report.totals.after.weightBytes < report.totals.before.weightBytes, passes);
    const { interpret } = await import("../ir/interpreter.ts");
    const ours = interpret(module, { x }).y;
    const ort = (await runOnnxruntime(artifacts.get("cls.onnx")!, { x })).y;
    assert.equal(compareTensors(ours, ort, { rtol: 1e-4, atol: 1e-5 }), null, passes);
  }
});

Deno.test("the CLI: --input-shape gives the real MACs in the summary and the report; without it they are unknown", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const model = join(dir, "cls.onnx");
    Deno.writeFileSync(model, MODEL);
    const cli = async (...args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-read",
          "--allow-write",
          "--quiet",
          join(ROOT, "compile.ts"),
          model,
          "--out",
          join(dir, "out"),
          ...args,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr).split("\n").filter((l) => l);
      return { code: out.code, stdout: new TextDecoder().decode(out.stdout), stderr };
    };
    const shaped = await cli(
      "--passes",
      "prune{ratio=0.3},bfp",
      "--input-shape",
      "x=1,3,48,192",
      "--report",
      join(dir, "r.json"),
    );
    assert.equal(shaped.code, 0, shaped.stderr.join("\n"));
    const report = JSON.parse(Deno.readTextFileSync(join(dir, "r.json")));
    assert.equal(report.totals.before.macs, expectedMacs(48, 192));
    assert.ok(report.totals.after.macs < report.totals.before.macs);
    assert.match(shaped.stdout, new RegExp(`MACs +${expectedMacs(48, 192).toLocaleString("en-US")} -> `));
    assert.doesNotMatch(shaped.stdout, /unknown/);

    const symbolic = await cli("--passes", "prune{ratio=0.3}");
    assert.equal(symbolic.code, 0, symbolic.stderr.join("\n"));
    assert.match(
      symbolic.stdout,
      /MACs of 3 layer\(s\) before are unknown \(\?\): symbolic x\[2\]=H, x\[3\]=W; give --input-shape/,
    );

    const bad = await cli("--input-shape", "x=1,3,0,8");
    assert.equal(bad.code, 1);
    assert.deepEqual(bad.stderr, [
      'compile: error: --input-shape takes NAME=DIMS with positive dimensions (x=1,3,48,192), found "x=1,3,0,8"',
    ]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("an IR 3 model whose weights are Constant ops is written as IR 4 (initializers need not be inputs); the checker and onnxruntime accept it", async () => {
  const ir3 = onnx.ModelProto.decode(MODEL);
  ir3.irVersion = 3;
  const bytes = onnx.ModelProto.encode(ir3).finish();
  const { artifacts } = await compile(bytes, { modelName: "cls", inputShapes: { x: [1, 3, 16, 16] } });
  const emitted = artifacts.get("cls.onnx")!;
  assert.equal(Number(onnx.ModelProto.decode(emitted).irVersion), 4);
  if (await onnxCheckerAvailable()) assert.equal(await onnxChecker(emitted), "OK");
  const x = randomInput([1, 3, 16, 16], 3);
  assert.equal(compareTensors((await runOnnxruntime(emitted, { x })).y, (await runOnnxruntime(bytes, { x })).y), null);
});
