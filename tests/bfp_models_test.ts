/**
 * The `bfp` pass on every trained model of the project: e5m8 nearest-even
 * top-1 on the 2,000 MNIST test images in the bit-exact interpreter, against
 * float; and the emitted ONNX (blocked DequantizeLinear + fake-quant
 * functions, opset 21) in onnxruntime-node against the interpreter.
 * @module
 */
import assert from "node:assert/strict";
import { readNpyFile } from "../data/npy.ts";
import { compile } from "../driver/compile.ts";
import { evaluate, evaluateOnnx } from "../driver/evaluate.ts";
import { runOnnxruntime } from "../driver/onnxruntime.ts";
import { Interpreter } from "../ir/interpreter.ts";
import { importOnnxFile } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import { tensor } from "../ir/tensor.ts";
import { BFP_DOMAIN, bfpLayerPlan } from "../ir/bfp/plan.ts";
import { readFpgaImage } from "../targets/fpga/image.ts";

const MODELS = decodeURIComponent(new URL("../examples/models/", import.meta.url).pathname);
const testX = readNpyFile(`${MODELS}mnist_test_x.npy`);
const testY = readNpyFile(`${MODELS}mnist_test_y.npy`);
const calibX = readNpyFile(`${MODELS}mnist_calib_x.npy`);
const FILES = [...Deno.readDirSync(MODELS)].map((e) => e.name).filter((n) => n.endsWith(".onnx")).sort();
const PIPELINE = "fold-bn,canonicalize,dce,bfp";

Deno.test("bfp e5m8 keeps top-1 within 0.5 points of float on every trained model; onnxruntime agrees", async () => {
  assert.ok(FILES.length >= 8, `found ${FILES.length} models`);
  const rows: string[] = [];
  for (const file of FILES) {
    const float = importOnnxFile(`${MODELS}${file}`);
    inferShapes(float);
    const before = evaluate(float, testX, testY).accuracy;
    const result = await compile(Deno.readFileSync(`${MODELS}${file}`), {
      passes: PIPELINE,
      calibration: { input: calibX },
      modelName: "m",
    });
    const after = evaluate(result.module, testX, testY).accuracy;
    const bytes = result.artifacts.get("m.onnx")!;
    const ortAccuracy = (await evaluateOnnx(bytes, testX, testY)).accuracy;
    // Bit-exact interpreter vs onnxruntime's float evaluation of the same numbers, on 100 images.
    const batch = tensor("f32", [100, ...testX.shape.slice(1)], (testX.data as Float32Array).subarray(0, 100 * 784));
    const ours = new Interpreter(result.module).run({ input: batch });
    const name = result.module.graph.outputs[0].name;
    const theirs = (await runOnnxruntime(bytes, { input: batch }))[name];
    let maxDiff = 0, maxLogit = 0;
    for (let i = 0; i < theirs.data.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(Number(theirs.data[i]) - Number(ours[name].data[i])));
      maxLogit = Math.max(maxLogit, Math.abs(Number(ours[name].data[i])));
    }
    rows.push(
      `${file.padEnd(28)} float ${(100 * before).toFixed(2)}%  bfp ${(100 * after).toFixed(2)}%  ` +
        `ort ${(100 * ortAccuracy).toFixed(2)}%  max |logit diff| ${maxDiff.toExponential(2)} (max |logit| ${
          maxLogit.toFixed(1)
        })`,
    );
    assert.ok(Math.abs(after - before) <= 0.005, `${file}: ${before} -> ${after}`);
    assert.ok(Math.abs(ortAccuracy - after) <= 0.002, `${file}: interpreter ${after} vs onnxruntime ${ortAccuracy}`);
    // onnxruntime sums in float where the golden model aligns integers: ~1 ulp per layer output, which now and then
    // moves the next layer's mantissa by one step (one step of a per-sample block is coarse), so logits of deep nets
    // (mobilenet, resnet_preact) drift by up to ~0.4%; the others agree to ~1e-7.
    assert.ok(maxDiff <= 1e-2 * Math.max(1, maxLogit), `${file}: logits differ by ${maxDiff}`);
  }
  console.log(rows.join("\n"));
});

Deno.test("fixed{bits=16} keeps top-1 within 0.3 points of float on every trained model; onnxruntime's Q/DQ agrees", async () => {
  const rows: string[] = [];
  for (const file of FILES) {
    const result = await compile(Deno.readFileSync(`${MODELS}${file}`), {
      passes: "fold-bn,canonicalize,dce,fixed",
      calibration: { input: calibX },
      evaluation: { inputs: testX, labels: testY },
      modelName: "m",
    });
    const { before, after } = result.report.accuracy!;
    const bytes = result.artifacts.get("m.onnx")!;
    const ortAccuracy = (await evaluateOnnx(bytes, testX, testY)).accuracy;
    assert.ok(result.module.graph.ops.some((op) => op.qualifiedType === "ai.bfp.Quantize"));
    rows.push(
      `${file.padEnd(28)} float ${(100 * before).toFixed(2)}%  fixed16 ${(100 * after).toFixed(2)}%  ` +
        `ort ${(100 * ortAccuracy).toFixed(2)}%`,
    );
    assert.ok(Math.abs(after - before) <= 0.003, `${file}: ${before} -> ${after}`);
    assert.ok(Math.abs(ortAccuracy - after) <= 0.001, `${file}: interpreter ${after} vs onnxruntime ${ortAccuracy}`);
  }
  console.log(rows.join("\n"));
});

Deno.test("bfp and fixed fold BatchNormalization first (as fold-bn), unless fold-bn=false", async () => {
  const { printModule } = await import("../ir/printer.ts");
  const bytes = Deno.readFileSync(`${MODELS}vgg_dense.onnx`);
  const run = async (passes: string) => (await compile(bytes, { passes, modelName: "m" }));
  const types = (r: { module: { graph: { ops: { type: string }[] } } }) => r.module.graph.ops.map((op) => op.type);
  const implicit = await run("bfp"), explicit = await run("fold-bn,bfp");
  assert.ok(!types(implicit).includes("BatchNormalization"));
  assert.equal(printModule(implicit.module), printModule(explicit.module));
  assert.equal(implicit.report.passes[0].stats["bn-folded"], 6);
  assert.equal(explicit.report.passes[1].stats["bn-folded"], undefined); // nothing left to fold
  assert.ok(types(await run("bfp{fold-bn=false}")).includes("BatchNormalization"));
  const calibrated = await compile(bytes, { passes: "fixed", modelName: "m", calibration: { input: calibX } });
  assert.ok(!types(calibrated).includes("BatchNormalization"));
});

Deno.test("bfp mixed precision: the fpga image packs each layer at its own width; other format mixes fail in one line", async () => {
  const calibration = tensor(
    "f32",
    [16, ...calibX.shape.slice(1)],
    (calibX.data as Float32Array).subarray(0, 16 * 784),
  );
  const model = Deno.readFileSync(`${MODELS}mlp.onnx`);
  const mixed = await compile(model, {
    passes: "fold-bn,canonicalize,dce,bfp{avg-mantissa=7.5}",
    target: "fpga",
    calibration: { input: calibration },
    modelName: "m",
  });
  const widths = mixed.module.graph.ops.filter((op) => op.domain === BFP_DOMAIN && op.type === "Gemm")
    .map((op) => bfpLayerPlan(op).format.mantissaBits);
  assert.ok(new Set(widths).size > 1, `widths ${widths}`);
  const image = readFpgaImage(mixed.artifacts.get("m.fpga.bin")!);
  assert.deepEqual(image.layers.filter((l) => l.weights !== null).map((l) => l.descriptor.mantissaBits![0]), widths);
  assert.deepEqual(image.segments.filter((s) => s.kind === "mantissas").map((s) => s.elementBits), widths);
  assert.equal(image.format.mantissaBits, Math.max(...widths));
  assert.equal(new DataView(mixed.artifacts.get("m.fpga.bin")!.buffer).getUint32(12, true) & 64, 64);
  // Each layer's mantissas come back as lowered (the packing at its own width round-trips).
  const lowered = mixed.module.graph.ops.filter((op) => op.domain === BFP_DOMAIN && op.type === "Gemm");
  image.layers.filter((l) => l.weights !== null).forEach((l, i) => {
    assert.deepEqual([...l.weights!.mantissas], [...bfpLayerPlan(lowered[i]).weights.mantissas], l.name);
  });
  const uniform = await compile(model, { passes: "fold-bn,canonicalize,dce,bfp", target: "fpga", modelName: "m" });
  assert.equal(new DataView(uniform.artifacts.get("m.fpga.bin")!.buffer).getUint32(12, true) & 64, 0);
  // Rounding still has to agree: the first Gemm toward zero, the rest nearest-even.
  const first = uniform.module.graph.ops.find((op) => op.type === "Gemm" && op.domain === BFP_DOMAIN)!.name;
  await assert.rejects(
    compile(model, {
      passes: `fold-bn,canonicalize,dce,bfp{skip=[${first}]},bfp{rounding=toward-zero}`,
      target: "fpga",
      modelName: "m",
    }),
    /^Error: target "fpga" failed: op "[^"]+" \(ai\.bfp\.Gemm\) has another number format than "[^"]+": the layers of one FPGA image share exponent bits, rounding, exponent rule and seed \(mantissa widths may differ\)$/,
  );
});
