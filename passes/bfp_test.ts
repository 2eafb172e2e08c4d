import assert from "node:assert/strict";
import { printModule } from "../ir/printer.ts";
import type { Attribute } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { interpret } from "../ir/interpreter.ts";
import { Module } from "../ir/module.ts";
import { builtinOps } from "../ir/builtin_ops.ts";
import { inferShapes } from "../ir/shape.ts";
import { float32Tensor, type Tensor } from "../ir/tensor.ts";
import { bfpOptions, bfpPass } from "./bfp.ts";
import { builtinPasses } from "./builtin.ts";
import { fixedOptions, fixedPass } from "./fixed.ts";
import { runPipeline } from "./manager.ts";
import { defaultOptions, type OptionValues } from "./options.ts";
import { type Diagnostic, type PassContext, passLookup, type StatValue } from "./pass.ts";
import { parsePipeline } from "./pipeline.ts";

function random(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 16807) % 2147483647;
    return s / 2147483647 - 0.5;
  };
}

function randomTensor(shape: number[], seed: number, scale = 1): Tensor {
  const r = random(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return float32Tensor(shape, Float32Array.from({ length: n }, () => scale * r()));
}

const ints = (value: number[]): Attribute => ({ kind: "ints", value });
const float = (value: number): Attribute => ({ kind: "float", value });

/** x[N,4,6,6] -> conv1 (3x3 pad 1) -> relu -> conv2 (1x1, also reading x? no) -> flatten -> fc (Gemm transB=0, alpha, beta) -> out(MatMul). */
function network(): Module {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4, 6, 6] }));
  const c = (name: string, t: Tensor): Value => g.addConstant(name, t, { elem: "f32", shape: [...t.shape] });
  const add = (name: string, type: string, operands: Value[], attributes: [string, Attribute][] = []): Value =>
    g.addOp(new Op({ name, type, operands, results: [new Value(name)], attributes })).result;
  const conv1 = add("conv1", "Conv", [x, c("w1", randomTensor([6, 4, 3, 3], 1, 0.5)), c("b1", randomTensor([6], 2))], [
    ["pads", ints([1, 1, 1, 1])],
  ]);
  // A second conv on the same input with the same blocking shares the first one's Quantize.
  const side = add("side", "Conv", [x, c("w2", randomTensor([6, 4, 1, 1], 3))]);
  const sum = add("sum", "Add", [add("relu", "Relu", [conv1]), side]);
  const flat = add("flat", "Flatten", [sum]);
  const fc = add("fc", "Gemm", [flat, c("wf", randomTensor([216, 10], 4, 0.1)), c("bf", randomTensor([10], 5))], [
    ["alpha", float(1.5)],
    ["beta", float(0.5)],
  ]);
  const out = add("out", "MatMul", [fc, c("wo", randomTensor([10, 3], 6))]);
  g.outputs.push(out);
  const m = new Module(g);
  inferShapes(m);
  return m;
}

function context(calibration: Record<string, Tensor> | null = null) {
  const stats: Record<string, StatValue> = {};
  const diagnostics: Diagnostic[] = [];
  const logs: string[] = [];
  const ctx: PassContext = {
    ops: builtinOps,
    calibration,
    stat: (k, v) => (stats[k] = v),
    emit: (severity, message) => diagnostics.push({ severity, message, op: null } as unknown as Diagnostic),
    log: (m) => logs.push(m),
    analysis: () => {
      throw new Error("no analyses here");
    },
  };
  return { ctx, stats, diagnostics, logs };
}

function options(over: Partial<OptionValues<typeof bfpOptions>> = {}): OptionValues<typeof bfpOptions> {
  return { ...defaultOptions(bfpOptions), ...over };
}

function sqnr(ref: Tensor, got: Tensor): number {
  let s = 0, n = 0;
  for (let i = 0; i < ref.data.length; i++) {
    s += Number(ref.data[i]) ** 2;
    n += (Number(ref.data[i]) - Number(got.data[i])) ** 2;
  }
  return 10 * Math.log10(s / n);
}

const INPUT = { x: randomTensor([3, 4, 6, 6], 9, 4) };

Deno.test("bfp lowers Conv, Gemm and MatMul, shares one Quantize per input, and tracks the float model", async () => {
  const reference = interpret(network(), INPUT).out;
  const m = network();
  const registry = passLookup(builtinPasses);
  await runPipeline(m, parsePipeline("bfp", registry), { registry }); // verify-each checks the lowered IR
  assert.deepEqual(m.graph.ops.map((op) => op.qualifiedType), [
    "ai.bfp.Quantize",
    "ai.bfp.Conv",
    "ai.bfp.Conv",
    "Relu",
    "Add",
    "Flatten",
    "ai.bfp.Quantize",
    "ai.bfp.Gemm",
    "ai.bfp.Quantize",
    "ai.bfp.Gemm",
  ]);
  assert.equal(m.opsets.get("ai.bfp"), 1);
  // Float weights are gone; BFP constants carry the format in their type.
  const names = m.graph.constants.map((v) => v.name);
  for (const gone of ["w1", "w2", "wf", "wo", "bf"]) assert.ok(!names.includes(gone), `${gone} still there`);
  assert.deepEqual(m.graph.constants.find((v) => v.name === "conv1.wm")?.type, {
    elem: { kind: "bfp", mantissa: 8, exponent: 5, block: 0 },
    shape: [6, 4, 3, 3],
  });
  const lowered = interpret(m, INPUT).out;
  const db = sqnr(reference, lowered);
  assert.ok(db > 30 && db < 60, `e5m8 output SQNR ${db.toFixed(1)} dB`);
  // 16-bit mantissas (and an accumulator wide enough for them): alpha/beta folding, transposes and biases are right.
  const wide = network();
  await runPipeline(wide, parsePipeline("bfp{mantissa=16,exponent=8,accumulator=53}", registry), { registry });
  const wideDb = sqnr(reference, interpret(wide, INPUT).out);
  assert.ok(wideDb > 80, `e8m16 output SQNR ${wideDb.toFixed(1)} dB`);
});

Deno.test("bfp with scheme=mx blocks channels (groups respected) and gains SQNR over per-channel at low precision", () => {
  const reference = interpret(network(), INPUT).out;
  const perChannel = network(), mx = network();
  bfpPass.run(perChannel, options({ mantissa: 4 }), context().ctx);
  bfpPass.run(mx, options({ mantissa: 4, scheme: "mx", block: 2 }), context().ctx);
  inferShapes(mx);
  const conv = mx.graph.ops.find((op) => op.name === "conv1")!;
  assert.deepEqual(conv.operand(1)!.type, { elem: "i8", shape: ["N", 2, 6, 6] });
  assert.deepEqual(conv.operand(3)!.constant!.shape, [6, 2, 3, 3]);
  const a = sqnr(reference, interpret(perChannel, INPUT).out), b = sqnr(reference, interpret(mx, INPUT).out);
  assert.ok(b > a + 3, `mx ${b.toFixed(1)} dB vs per-channel ${a.toFixed(1)} dB`);
});

Deno.test("bfp gives a depthwise layer's input one exponent per channel plane: a quiet channel keeps its precision", () => {
  const g = new Graph("dw");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4, 6, 6] }));
  const w = randomTensor([4, 1, 3, 3], 11);
  const y = g.addOp(
    new Op({
      name: "dw",
      type: "Conv",
      operands: [x, g.addConstant("w", w, { elem: "f32", shape: [4, 1, 3, 3] })],
      results: [new Value("y")],
      attributes: [["group", { kind: "int", value: 4 }], ["pads", ints([1, 1, 1, 1])]],
    }),
  ).result;
  g.outputs.push(y);
  const m = new Module(g);
  inferShapes(m);
  // Channel scales 10, 0.01, 1, 0.1: one exponent per sample would flush channel 1 to zero at 8 bits.
  const input = randomTensor([2, 4, 6, 6], 12);
  const data = input.data as Float32Array;
  for (let i = 0; i < data.length; i++) data[i] *= [10, 0.01, 1, 0.1][Math.floor(i / 36) % 4];
  const reference = interpret(m, { x: input }).y;
  bfpPass.run(m, options(), context().ctx);
  inferShapes(m);
  const quantize = m.graph.ops.find((op) => op.type === "Quantize")!;
  assert.equal(quantize.int("group"), 4);
  assert.deepEqual(quantize.results[1].type, { elem: "i8", shape: ["N", 4] });
  const lowered = interpret(m, { x: input }).y;
  const channel = (t: Tensor, c: number) =>
    float32Tensor(
      [2, 36],
      Float32Array.from({ length: 72 }, (_, i) => Number(t.data[(Math.floor(i / 36) * 4 + c) * 36 + i % 36])),
    );
  for (let c = 0; c < 4; c++) {
    const db = sqnr(channel(reference, c), channel(lowered, c));
    assert.ok(db > 35, `channel ${c}: ${db.toFixed(1)} dB`);
  }
});

Deno.test("bfp honours ops, skip and keep-last, and warns about names it cannot use", () => {
  const m = network();
  const { ctx, diagnostics, logs } = context();
  bfpPass.run(m, options({ ops: ["Conv", "Gemm", "Relu"], skip: ["side", "nothere"], keepLast: true }), ctx);
  const types = Object.fromEntries(m.graph.ops.map((op) => [op.name, op.qualifiedType]));
  assert.equal(types.conv1, "ai.bfp.Conv");
  assert.equal(types.side, "Conv");
  assert.equal(types.fc, "Gemm"); // the last Conv/Gemm of the graph: keep-last
  assert.equal(types.out, "MatMul"); // not in ops
  assert.deepEqual(diagnostics.map((d) => d.message), [
    'ops names "Relu", which bfp cannot lower (it lowers Conv, Gemm, MatMul)',
    'skip names no op: "nothere"',
  ]);
  assert.ok(logs.includes('keeping the last layer "fc" in float (keep-last=true)'));
});

Deno.test("bfp leaves layers with NaN weights or non-constant weights in float, naming them", () => {
  const m = network();
  (m.graph.constants.find((v) => v.name === "w2")!.constant!.data as Float32Array)[3] = NaN;
  const { ctx, diagnostics } = context();
  assert.equal(bfpPass.run(m, options(), ctx), true);
  assert.equal(m.graph.ops.find((op) => op.name === "side")!.qualifiedType, "Conv");
  assert.deepEqual(diagnostics.map((d) => d.message), [
    'op "side" (Conv): weights hold NaN or Inf; layer left in float',
  ]);
  const none = new Graph("g");
  const x = none.addInput(new Value("x", { elem: "f32", shape: [2, 3] }));
  const w = none.addInput(new Value("w", { elem: "f32", shape: [3, 3] }));
  none.outputs.push(
    none.addOp(new Op({ name: "mm", type: "MatMul", operands: [x, w], results: [new Value("y")] })).result,
  );
  const logs = context();
  assert.equal(bfpPass.run(new Module(none), options(), logs.ctx), false);
  assert.deepEqual(logs.logs, ['op "mm" (MatMul) stays in float: weights are not a float32 constant']);
});

Deno.test("bfp with calibration data reports the four-stage SQNR per layer, consistent with the mantissa width", () => {
  const calibration = { x: randomTensor([8, 4, 6, 6], 21, 4) };
  const result: Record<number, Record<string, Record<string, StatValue>>> = {};
  for (const mantissa of [6, 10]) {
    const { ctx, stats } = context(calibration);
    bfpPass.run(network(), options({ mantissa, precision: "uniform" }), ctx);
    result[mantissa] = stats.layers as Record<string, Record<string, StatValue>>;
    assert.equal(stats["layers-lowered"], 4);
    assert.equal(stats.format, `e5m${mantissa} nearest-even`);
  }
  for (const layer of ["conv1", "side", "fc", "out"]) {
    const lo = result[6][layer], hi = result[10][layer];
    for (const key of ["sqnr-input-db", "sqnr-weight-db", "sqnr-mac-db", "sqnr-output-db", "sqnr-in-model-db"]) {
      assert.equal(typeof lo[key], "number", `${layer} ${key}`);
      // Four more bits: about 24 dB more (6.02 dB per bit), with slack for small tensors.
      const gain = (hi[key] as number) - (lo[key] as number);
      assert.ok(gain > 15 && gain < 32, `${layer} ${key}: +${gain.toFixed(1)} dB`);
    }
    // The model of independent input and weight noise predicts the layer's output SQNR within a few dB.
    const predicted = lo["sqnr-predicted-db"] as number, measured = lo["sqnr-mac-db"] as number;
    assert.ok(Math.abs(predicted - measured) < 8, `${layer}: predicted ${predicted} vs measured ${measured}`);
    assert.equal(lo.saturations, 0);
  }
  // Errors accumulate through the model: the last layer's in-model SQNR is below its isolated one.
  assert.ok((result[6].out["sqnr-in-model-db"] as number) < (result[6].out["sqnr-mac-db"] as number));
});

Deno.test("bfp warns, per layer, when the accumulator is too narrow for the worst-case sum", () => {
  const { ctx, diagnostics } = context();
  bfpPass.run(network(), options({ mantissa: 16 }), ctx);
  assert.deepEqual(diagnostics.map((d) => d.message), [
    'op "conv1" (Conv): a 32-bit accumulator may saturate: 36 products of 16-bit mantissas need 38 bits',
    'op "side" (Conv): a 32-bit accumulator may saturate: 4 products of 16-bit mantissas need 34 bits',
    'op "fc" (Gemm): a 32-bit accumulator may saturate: 216 products of 16-bit mantissas need 40 bits',
    'op "out" (MatMul): a 32-bit accumulator may saturate: 10 products of 16-bit mantissas need 36 bits',
  ]);
});

Deno.test("bfp rejects option values outside their ranges with the option named", () => {
  const registry = passLookup(builtinPasses);
  assert.throws(() => parsePipeline("bfp{mantissa=1}", registry), /option "mantissa" must be an integer in \[2, 16\]/);
  assert.throws(() => parsePipeline("bfp{exponent=9}", registry), /option "exponent" must be an integer in \[2, 8\]/);
  assert.throws(() => parsePipeline("bfp{rounding=up}", registry), /option "rounding" must be one of/);
  assert.throws(
    () => parsePipeline("bfp{accumulator=64}", registry),
    /option "accumulator" must be an integer in \[8, 53\]/,
  );
  assert.throws(
    () => parsePipeline("bfp{scheme=mx,block=0}", registry),
    /option "block" must be an integer in \[1, inf\)/,
  );
});

function fixedOptionsWith(over: Partial<OptionValues<typeof fixedOptions>> = {}): OptionValues<typeof fixedOptions> {
  return { ...defaultOptions(fixedOptions), ...over };
}

/** floor(log2 |x|max) + 1 written plainly: the exponent whose 16-bit step never clamps the calibration maximum. */
function calibratedExponent(t: Tensor): number {
  const amax = Math.max(...Array.from(t.data as Float32Array, Math.abs));
  const e = Math.floor(Math.log2(amax));
  return amax / 2 ** (e - 14) > 32767 ? e + 1 : e;
}

Deno.test("fixed takes each activation's exponent from the calibration maximum, with headroom, and tracks float", async () => {
  const calibration = { x: randomTensor([8, 4, 6, 6], 21, 4) };
  const { ctx, stats } = context(calibration);
  const m = network();
  assert.equal(fixedPass.run(m, fixedOptionsWith(), ctx), true);
  inferShapes(m);
  const quantizers = m.graph.ops.filter((op) => op.type === "Quantize");
  assert.equal(quantizers.length, 3);
  assert.equal(quantizers[0].int("static_exponent"), calibratedExponent(calibration.x));
  assert.equal(stats.format, "fixed16 nearest-even");
  const layers = stats.layers as Record<string, Record<string, StatValue>>;
  assert.equal(layers.conv1["input-exponent"], calibratedExponent(calibration.x));
  assert.equal(layers.conv1["input-frac-bits"], 14 - calibratedExponent(calibration.x));
  assert.equal(layers.conv1["input-saturated"], 0); // the calibration maximum fits by construction
  assert.ok((layers.out["sqnr-in-model-db"] as number) > 60, `in-model ${layers.out["sqnr-in-model-db"]} dB`);
  // Headroom adds integer bits; the verifier accepts the module.
  const roomy = network();
  fixedPass.run(roomy, fixedOptionsWith({ headroom: 2 }), context(calibration).ctx);
  assert.equal(roomy.graph.ops[0].int("static_exponent"), calibratedExponent(calibration.x) + 2);
  const registry = passLookup(builtinPasses);
  await runPipeline(network(), parsePipeline("fixed{bits=8}", registry), { registry, calibration });
  // 16-bit fixed point is far closer to float than 8-bit BFP on the same data; 8-bit fixed is below 8-bit BFP.
  const reference = interpret(network(), INPUT).out;
  const run = (pass: typeof bfpPass | typeof fixedPass, opts: unknown): number => {
    const mm = network();
    (pass.run as (m: Module, o: unknown, c: PassContext) => boolean)(mm, opts, context(calibration).ctx);
    return sqnr(reference, interpret(mm, INPUT).out);
  };
  const fixed16 = run(fixedPass, fixedOptionsWith()), bfp8 = run(bfpPass, options());
  const fixed8 = run(fixedPass, fixedOptionsWith({ bits: 8, accumulator: 32 }));
  assert.ok(fixed16 > bfp8 + 20, `fixed16 ${fixed16.toFixed(1)} dB vs bfp8 ${bfp8.toFixed(1)} dB`);
  assert.ok(fixed8 < bfp8 + 3 && fixed8 > 20, `fixed8 ${fixed8.toFixed(1)} dB vs bfp8 ${bfp8.toFixed(1)} dB`);
});

Deno.test("fixed saturates inputs larger than the calibration's and gives per-tensor weights one exponent", () => {
  const calibration = { x: randomTensor([8, 4, 6, 6], 21, 1) };
  const m = network();
  fixedPass.run(m, fixedOptionsWith({ weights: "per-tensor" }), context(calibration).ctx);
  for (const op of m.graph.ops.filter((o) => o.domain === "ai.bfp" && o.type !== "Quantize")) {
    const exps = op.operand(3)!.constant!.data as Int8Array;
    assert.ok(exps.every((e) => e === exps[0]), `${op.name}: ${exps}`);
  }
  // Inputs 8x the calibration range: the first Quantize clamps the largest to +-32767 steps.
  inferShapes(m);
  const q = m.graph.ops[0];
  m.graph.outputs.push(q.results[0]);
  const out = interpret(m, { x: randomTensor([3, 4, 6, 6], 9, 8) });
  const mantissas = out[q.results[0].name].data as Int16Array;
  assert.ok(mantissas.includes(32767) && mantissas.includes(-32767), "saturated to +-maxM");
});

Deno.test("fixed needs calibration data and says so", () => {
  assert.throws(
    () => fixedPass.run(network(), fixedOptionsWith(), context().ctx),
    {
      message:
        "fixed needs calibration data to choose each activation's exponent (--calib, or calibration in compile())",
    },
  );
});

/** x[N,1] -> Gemm(w = [[1 + 2^-6], [3 + 2^-5]], b = [0.5, -1]): 4-bit mantissas round w to [1, 3] exactly. */
function knownErrorLayer(): Module {
  const g = new Graph("known");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 1] }));
  const w = g.addConstant("w", float32Tensor([2, 1], [1 + 2 ** -6, 3 + 2 ** -5]), { elem: "f32", shape: [2, 1] });
  const b = g.addConstant("b", float32Tensor([2], [0.5, -1]), { elem: "f32", shape: [2] });
  g.outputs.push(
    g.addOp(new Op({ name: "fc", type: "Gemm", operands: [x, w, b], results: [new Value("y")], attributes: [] }))
      .result,
  );
  g.ops[0].attributes.set("transB", { kind: "int", value: 1 });
  const m = new Module(g);
  inferShapes(m);
  return m;
}

Deno.test("bias correction adds the exact mean error per channel to the bias", () => {
  // Inputs 1, 2, 4 are exact in BFP; the weight errors are 2^-6 and 2^-5, so the mean errors are 7/3 times them.
  const calibration = { x: float32Tensor([3, 1], [1, 2, 4]) };
  const m = knownErrorLayer();
  const { ctx, stats } = context(calibration);
  bfpPass.run(m, options({ mantissa: 4 }), ctx);
  const fc = m.graph.ops.find((op) => op.name === "fc")!;
  assert.deepEqual(
    [...fc.operand(4)!.constant!.data],
    [Math.fround(0.5 + 7 * 2 ** -6 / 3), Math.fround(-1 + 7 * 2 ** -5 / 3)],
  );
  assert.equal(stats["bias-corrected"], 1);
  const layer = (stats.layers as Record<string, Record<string, StatValue>>).fc;
  assert.ok((layer["sqnr-in-model-db"] as number) > (layer["sqnr-before-correction-db"] as number) + 3);
  // Without correction the bias stays; the mean error is left.
  const plain = knownErrorLayer();
  bfpPass.run(plain, options({ mantissa: 4, biasCorrect: false }), context(calibration).ctx);
  assert.deepEqual([...plain.graph.ops.find((op) => op.name === "fc")!.operand(4)!.constant!.data], [0.5, -1]);
  // (tests/bfp_recovery_onnx_test.ts: the corrected bias in onnxruntime, bit for bit.)
});

Deno.test("bias correction is refused where it lowers the output SQNR on held-out samples, and with one sample", () => {
  // Errors +2^-6·x on channel 0: fitted on x = 4, the correction doubles the error of x = -4 (the held-out half).
  const refused = knownErrorLayer();
  const a = context({ x: float32Tensor([2, 1], [4, -4]) });
  bfpPass.run(refused, options({ mantissa: 4 }), a.ctx);
  assert.deepEqual([...refused.graph.ops.find((op) => op.name === "fc")!.operand(4)!.constant!.data], [0.5, -1]);
  assert.equal(a.stats["bias-corrected"], undefined);
  assert.match(a.stats["bias-correction-check"] as string, /^refused: output SQNR on held-out calibration samples /);
  // Fitted on x = 4, checked on x = 8: the same sign, kept, then refitted on both (mean error 6·2^-6, 6·2^-5).
  const kept = knownErrorLayer();
  const b = context({ x: float32Tensor([2, 1], [4, 8]) });
  bfpPass.run(kept, options({ mantissa: 4 }), b.ctx);
  assert.deepEqual(
    [...kept.graph.ops.find((op) => op.name === "fc")!.operand(4)!.constant!.data],
    [Math.fround(0.5 + 6 * 2 ** -6), Math.fround(-1 + 6 * 2 ** -5)],
  );
  assert.match(b.stats["bias-correction-check"] as string, /^kept: /);
  // One sample: nothing to hold out.
  const one = knownErrorLayer();
  const c = context({ x: float32Tensor([1, 1], [4]) });
  bfpPass.run(one, options({ mantissa: 4 }), c.ctx);
  assert.deepEqual([...one.graph.ops.find((op) => op.name === "fc")!.operand(4)!.constant!.data], [0.5, -1]);
  assert.deepEqual(c.diagnostics.map((d) => d.message), [
    "bias correction needs at least 2 calibration samples (one half fits, the other checks); skipped",
  ]);
});

Deno.test("fixed shares the bias correction of bfp", () => {
  // The known-error layer: the weight errors shift the output the same way on every sample, so the correction
  // fitted on the first half holds on the second and is kept.
  const calibration = { x: float32Tensor([3, 1], [1, 2, 4]) };
  const on = context(calibration), off = context(calibration);
  fixedPass.run(knownErrorLayer(), fixedOptionsWith({ bits: 4 }), on.ctx);
  fixedPass.run(knownErrorLayer(), fixedOptionsWith({ bits: 4, biasCorrect: false }), off.ctx);
  assert.equal(on.stats["bias-corrected"], 1);
  assert.match(on.stats["bias-correction-check"] as string, /^kept: /);
  assert.equal(off.stats["bias-corrected"], undefined);
  assert.ok((on.stats["output-sqnr-db"] as number) > (off.stats["output-sqnr-db"] as number));
});

Deno.test("mixed precision: deterministic widths that meet target-sqnr or avg-mantissa on the calibration data", () => {
  const calibration = { x: randomTensor([8, 4, 6, 6], 21, 4) };
  const widths = (stats: Record<string, StatValue>): number[] =>
    Object.values(stats.layers as Record<string, Record<string, StatValue>>).map((l) => l.mantissa as number);
  const run = (over: Partial<OptionValues<typeof bfpOptions>>) => {
    const m = network(), c = context(calibration);
    // The summed conversion noise as the model (sensitivity-samples=0), which the uniform runs also report.
    bfpPass.run(m, options({ scheme: "per-channel", biasCorrect: false, sensitivitySamples: 0, ...over }), c.ctx);
    return { m, stats: c.stats };
  };
  const a = run({ targetSqnr: 40 }), b = run({ targetSqnr: 40 });
  assert.deepEqual(widths(a.stats), widths(b.stats));
  assert.ok((a.stats["predicted-output-sqnr-db"] as number) >= 40);
  assert.ok((a.stats["output-sqnr-db"] as number) >= 40, `measured ${a.stats["output-sqnr-db"]} dB`);
  // Narrowest widths that reach it: one bit less everywhere misses it.
  const lower = run({ avgMantissa: (a.stats["mantissa-average"] as number) - 1 });
  assert.ok((lower.stats["predicted-output-sqnr-db"] as number) < 40);
  // The knapsack is exact: under an average of 6 bits, the predicted SQNR is at least that of 6 bits everywhere
  // (here they are the same choice); half a bit more buys a mix that the model predicts better.
  const six = run({ avgMantissa: 6 }), uniform = run({ mantissa: 6, precision: "uniform" });
  assert.ok((six.stats["predicted-output-sqnr-db"] as number) >= (uniform.stats["predicted-output-sqnr-db"] as number));
  const mixed = run({ avgMantissa: 6.5 });
  assert.ok((mixed.stats["mantissa-average"] as number) <= 6.5);
  assert.ok(new Set(widths(mixed.stats)).size > 1, `widths ${widths(mixed.stats)}`);
  assert.ok(
    (mixed.stats["predicted-output-sqnr-db"] as number) > (uniform.stats["predicted-output-sqnr-db"] as number) &&
      // The summed-NSR model is first order: measured, the mix is within 1 dB of 6 bits everywhere here.
      (mixed.stats["output-sqnr-db"] as number) > (uniform.stats["output-sqnr-db"] as number) - 1,
    `mixed ${mixed.stats["output-sqnr-db"]} vs uniform ${uniform.stats["output-sqnr-db"]}`,
  );
  // Each Quantize carries its layer's width, and the ONNX target runs the mix as the interpreter does.
  for (const op of mixed.m.graph.ops.filter((o) => o.type === "Quantize")) {
    const layer = op.results[0].users[0];
    assert.equal(
      op.int("mantissa"),
      (mixed.stats.layers as Record<string, Record<string, number>>)[layer.name].mantissa,
    );
  }
  // (tests/bfp_recovery_onnx_test.ts: onnxruntime runs a mix as the interpreter does.)
});

Deno.test("precision=auto: with data, mixed widths averaging `mantissa` (as avg-mantissa=mantissa); uniform otherwise", () => {
  const calibration = { x: randomTensor([8, 4, 6, 6], 21, 4) };
  const widths = (stats: Record<string, StatValue>): number[] =>
    Object.values(stats.layers as Record<string, Record<string, StatValue>>).map((l) => l.mantissa as number);
  const run = (over: Partial<OptionValues<typeof bfpOptions>>, data: Record<string, Tensor> | null = calibration) => {
    const m = network(), c = context(data);
    bfpPass.run(m, options({ scheme: "per-channel", ...over }), c.ctx);
    return { ir: printModule(m), stats: c.stats, diagnostics: c.diagnostics };
  };
  // The default with data is the mix avg-mantissa=mantissa chooses, bit for bit, and beats the uniform width.
  const auto = run({ mantissa: 7 }), explicit = run({ mantissa: 7, avgMantissa: 7 });
  assert.equal(auto.ir, explicit.ir);
  assert.match(auto.stats.precision as string, /^mixed, averaging 7 bits \(the default with calibration data;/);
  assert.equal(explicit.stats.precision, "mixed");
  assert.ok((auto.stats["mantissa-average"] as number) <= 7);
  assert.ok(new Set(widths(auto.stats)).size > 1, `widths ${widths(auto.stats)}`);
  const uniform = run({ mantissa: 7, precision: "uniform" });
  assert.equal(uniform.stats.precision, "uniform");
  assert.deepEqual(widths(uniform.stats), [7, 7, 7, 7]);
  assert.ok(
    (auto.stats["predicted-output-sqnr-db"] as number) > (uniform.stats["predicted-output-sqnr-db"] as number),
  );
  // The offered widths include `mantissa` even outside mantissa-min..mantissa-max: 3 bits average 3 bits.
  assert.deepEqual(widths(run({ mantissa: 3 }).stats), [3, 3, 3, 3]);
  // Without data: every layer at `mantissa`, no warning (avg-mantissa given explicitly warns).
  const none = run({ mantissa: 5 }, null);
  assert.equal(none.stats.precision, "uniform");
  assert.deepEqual(none.diagnostics, []);
  assert.match(run({ avgMantissa: 5 }, null).diagnostics[0].message, /avg-mantissa and target-sqnr need calibration/);
  // precision=uniform with avg-mantissa or target-sqnr is one error naming both.
  assert.throws(
    () => run({ precision: "uniform", avgMantissa: 6 }),
    /^Error: precision=uniform conflicts with avg-mantissa$/,
  );
  assert.throws(
    () => run({ precision: "uniform", targetSqnr: 30 }),
    /^Error: precision=uniform conflicts with target-sqnr$/,
  );
});

/** x[N,8] -> a (Gemm) -> ×scale, and x -> b (Gemm); y = Concat: a's noise reaches the output `scale`² times b's. */
function twoBranches(scale: number): Module {
  const g = new Graph("two");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 8] }));
  const c = (name: string, t: Tensor): Value => g.addConstant(name, t, { elem: "f32", shape: [...t.shape] });
  const add = (name: string, type: string, operands: Value[], attributes: [string, Attribute][] = []): Value =>
    g.addOp(new Op({ name, type, operands, results: [new Value(name)], attributes })).result;
  const transB: [string, Attribute] = ["transB", { kind: "int", value: 1 }];
  const a = add("a", "Gemm", [x, c("wa", randomTensor([8, 8], 3))], [transB]);
  const scaled = add("scaled", "Mul", [a, c("s", float32Tensor([], [scale]))]);
  const b = add("b", "Gemm", [x, c("wb", randomTensor([8, 8], 4))], [transB]);
  g.outputs.push(add("y", "Concat", [scaled, b], [["axis", { kind: "int", value: 1 }]]));
  const m = new Module(g);
  inferShapes(m);
  return m;
}

Deno.test("mixed precision gives the bits to the layer whose noise reaches the output (measured sensitivity)", () => {
  const calibration = { x: randomTensor([8, 8], 5, 4) };
  const run = (samples: number) => {
    const { ctx, stats } = context(calibration);
    const over = { avgMantissa: 6, mantissaMin: 4, mantissaMax: 8, sensitivitySamples: samples, biasCorrect: false };
    bfpPass.run(twoBranches(100), options({ scheme: "per-channel", ...over }), ctx);
    const layers = stats.layers as Record<string, Record<string, number>>;
    return { a: layers.a.mantissa, b: layers.b.mantissa, sqnr: stats["output-sqnr-db"] as number };
  };
  // Measured: a's noise is 10^4 times b's at the output, so a gets the widest width the average allows.
  const measured = run(8);
  assert.deepEqual([measured.a, measured.b], [8, 4]);
  // The summed conversion noise sees two alike layers and splits the bits evenly; the output is worse.
  const summed = run(0);
  assert.ok(Math.abs(summed.a - summed.b) <= 1, `summed: a ${summed.a}, b ${summed.b}`);
  assert.ok(measured.sqnr > summed.sqnr + 6, `measured ${measured.sqnr} dB vs summed ${summed.sqnr} dB`);
});

Deno.test("scheme=auto blocks only the layers where blocks pay; without calibration data it is per-channel", () => {
  const calibration = { x: randomTensor([8, 4, 6, 6], 21, 4) };
  const none = network();
  bfpPass.run(none, options(), context().ctx);
  assert.ok(none.graph.ops.filter((op) => op.type === "Quantize").every((op) => op.int("block") === 0));
  const { ctx, stats } = context(calibration);
  bfpPass.run(network(), options({ block: 2 }), ctx);
  assert.match(stats.scheme as string, /^auto: \d+ of 4 layers in blocks of 2, the rest per-channel$/);
});

Deno.test("without data, a layer behind BatchNormalization and ReLU absorbs its expected weight error in its bias", () => {
  // BN(gamma 0, beta [2, -1]) -> ReLU: the input is [2, 0] exactly; 4-bit weights [1 + 2^-6, 3 + 2^-5] round to
  // [1, 3], so the expected output error is -2^-6 * 2 and the bias rises by 2^-5.
  const g = new Graph("bn");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 2, 1, 1] }));
  const c = (name: string, t: Tensor): Value => g.addConstant(name, t, { elem: "f32", shape: [...t.shape] });
  const bn = g.addOp(
    new Op({
      name: "bn",
      type: "BatchNormalization",
      results: [new Value("b")],
      operands: [
        x,
        c("gamma", float32Tensor([2], [0, 0])),
        c("beta", float32Tensor([2], [2, -1])),
        c("mean", float32Tensor([2], [0, 0])),
        c("var", float32Tensor([2], [1, 1])),
      ],
    }),
  );
  const relu = g.addOp(new Op({ name: "relu", type: "Relu", operands: [bn.result], results: [new Value("r")] }));
  g.outputs.push(
    g.addOp(
      new Op({
        name: "conv",
        type: "Conv",
        results: [new Value("y")],
        operands: [
          relu.result,
          c("w", float32Tensor([1, 2, 1, 1], [1 + 2 ** -6, 3 + 2 ** -5])),
          c("bias", float32Tensor([1], [0.5])),
        ],
      }),
    ).result,
  );
  const m = new Module(g);
  inferShapes(m);
  const { ctx, stats } = context();
  bfpPass.run(m, options({ mantissa: 4 }), ctx);
  const conv = m.graph.ops.find((op) => op.name === "conv")!;
  assert.deepEqual([...conv.operand(4)!.constant!.data], [0.5 + 2 ** -5]);
  assert.equal(stats["bias-corrected-data-free"], 1);
  // The lowered layer now gives the float output on the expected input.
  const feeds = { x: float32Tensor([1, 2, 1, 1], [0, 0]) };
  assert.deepEqual([...interpret(m, feeds).y.data], [0.5 + 2 * (1 + 2 ** -6)]);
});

Deno.test("gptq: with data, the lowered weights follow the calibration inputs' correlation; too few rows keep nearest", () => {
  const k = 16, o = 6;
  // Rows of k inputs driven by two shared factors plus a little noise each: strongly correlated.
  const rows = (count: number, seed: number): Tensor => {
    const r = random(seed), loads = random(77);
    const load = Array.from({ length: 2 * k }, () => loads() * 2 - 1);
    return float32Tensor(
      [count, k],
      Float32Array.from({ length: count * k }, (_, i) => {
        const j = i % k;
        if (j === 0) [f0, f1] = [r() * 2 - 1, r() * 2 - 1];
        return f0 * load[j] + f1 * load[k + j] + 0.03 * r();
      }),
    );
  };
  let f0 = 0, f1 = 0;
  const layer = (): Module => {
    const g = new Graph("fc");
    const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", k] }));
    const w = g.addConstant("w", randomTensor([o, k], 31), { elem: "f32", shape: [o, k] });
    g.outputs.push(
      g.addOp(
        new Op({
          name: "fc",
          type: "Gemm",
          operands: [x, w],
          results: [new Value("y")],
          attributes: [["transB", { kind: "int", value: 1 }]],
        }),
      ).result,
    );
    const m = new Module(g);
    inferShapes(m);
    return m;
  };
  const heldOut = { x: rows(300, 2) };
  const reference = interpret(layer(), heldOut).y;
  const lowered = (calibration: Record<string, Tensor>, gptq: boolean) => {
    const { ctx, stats } = context(calibration);
    const m = layer();
    bfpPass.run(m, options({ precision: "uniform", mantissa: 5, biasCorrect: false, gptq }), ctx);
    return { sqnr: sqnr(reference, interpret(m, heldOut).y), stats, text: printModule(m) };
  };
  const calibration = { x: rows(300, 1) };
  // The inputs are converted too (their noise is the same either way): the weights gain more than this.
  const fitted = lowered(calibration, true), nearest = lowered(calibration, false);
  assert.equal(fitted.stats.gptq, "1 of 1 layers");
  assert.equal(nearest.stats.gptq, undefined);
  // Per layer, the report says how its weights were rounded (only where GPTQ ran).
  const rounding = (stats: Record<string, StatValue>) =>
    (stats.layers as Record<string, Record<string, StatValue>>).fc["weight-rounding"];
  assert.equal(rounding(fitted.stats), "gptq");
  assert.equal(rounding(nearest.stats), undefined);
  assert.ok(fitted.sqnr > nearest.sqnr + 2, `GPTQ ${fitted.sqnr.toFixed(2)} dB, nearest ${nearest.sqnr.toFixed(2)} dB`);
  // 20 rows for 16 inputs: the fit is not trusted, the weights are rounded to nearest.
  const few = { x: rows(20, 1) };
  const sparse = lowered(few, true);
  assert.match(String(sparse.stats.gptq), /^0 of 1 layers \(.*fewer than 2 calibration rows per weight/);
  assert.equal(rounding(sparse.stats), "nearest");
  assert.equal(sparse.text, lowered(few, false).text);
});
