/**
 * BFP legalization for ONNX, checked by onnxruntime-node against independent
 * references: `quantizeBfp`/`dequantizeBfp` of `ir/bfp/quantize.ts` per block for the
 * fake-quantized activations (bit for bit), and the interpreter's float Conv/Gemm
 * of the dequantized operands for the layer outputs.
 */
import assert from "node:assert/strict";
import { runOnnxruntime } from "../../driver/onnxruntime.ts";
import { attr, type Attribute } from "../../ir/attributes.ts";
import { type BfpExponentRule, type BfpFormat, bfpFormat, type BfpRounding } from "../../ir/bfp/format.ts";
import { dequantizeBfp, quantizeBfp } from "../../ir/bfp/quantize.ts";
import { Graph, Op, Value } from "../../ir/graph.ts";
import { interpret } from "../../ir/interpreter.ts";
import { Module } from "../../ir/module.ts";
import { exportOnnx } from "../../ir/onnx/export.ts";
import { importOnnx } from "../../ir/onnx/import.ts";
import { printModule } from "../../ir/printer.ts";
import { shapeSize, type Tensor, tensor } from "../../ir/tensor.ts";
import type { Dim, TensorType } from "../../ir/types.ts";
import type { TargetContext } from "../target.ts";
import { onnxStructureProblems } from "../../tests/onnx_checks.ts";
import { containsBfpOps, legalizeBfp } from "./bfp_onnx.ts";
import { onnxTarget } from "./onnx_target.ts";

const CTX: TargetContext = { modelName: "bfp", emit: () => {} };

/** A BFP format as the ops' attributes give it. */
interface Fmt {
  readonly mantissa: number;
  readonly exponent: number;
  readonly block: number;
  readonly rounding?: BfpRounding;
  readonly rule?: BfpExponentRule;
}

function formatOf(f: Fmt): BfpFormat {
  return bfpFormat({
    mantissaBits: f.mantissa,
    exponentBits: f.exponent,
    rounding: f.rounding ?? "nearest-even",
    exponentRule: f.rule ?? "floor",
  });
}

function bfpElem(f: Fmt): TensorType["elem"] {
  return { kind: "bfp", mantissa: f.mantissa, exponent: f.exponent, block: f.block };
}

/** Reference fake quantization of an activation `[N, C, ...S]` per the issue-6 blocking. */
function fakeQuantRef(x: Float32Array, shape: readonly number[], f: Fmt, group = 1): Float32Array {
  const format = formatOf(f);
  const n = shape[0], c = shape[1], s = shapeSize(shape.slice(2));
  // One block per sample, or per sample and group: a contiguous run of the group's channel planes.
  if (f.block === 0) return dequantizeBfp(quantizeBfp(x, format, { length: x.length / n / group, block: 0 }, "x"));
  // [N, C, S] -> [N, S, C]: each group's Cg channels become a row blocked along its length.
  const t = new Float32Array(x.length);
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) for (let p = 0; p < s; p++) t[(i * s + p) * c + ch] = x[(i * c + ch) * s + p];
  }
  const d = dequantizeBfp(quantizeBfp(t, format, { length: c / group, block: f.block }, "x"));
  const out = new Float32Array(x.length);
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) for (let p = 0; p < s; p++) out[(i * c + ch) * s + p] = d[(i * s + p) * c + ch];
  }
  return out;
}

/** BFP weights `[O, Cg, ...kernel]` (or `[O, K]`): mantissas, exponents in the contract's layout, dequantized values. */
function quantizeWeights(w: Float32Array, shape: readonly number[], f: Fmt) {
  const format = formatOf({ ...f, rounding: "nearest-even", rule: "floor" });
  const o = shape[0], cg = shape[1], taps = shapeSize(shape.slice(2));
  if (f.block === 0) {
    const q = quantizeBfp(w, format, { length: w.length / o, block: 0 }, "w");
    return { wm: q.mantissas, we: Int8Array.from(q.exponents), weShape: [o], dq: dequantizeBfp(q) };
  }
  const t = new Float32Array(w.length);
  for (let i = 0; i < o; i++) {
    for (let c = 0; c < cg; c++) for (let k = 0; k < taps; k++) t[(i * taps + k) * cg + c] = w[(i * cg + c) * taps + k];
  }
  const q = quantizeBfp(t, format, { length: cg, block: f.block }, "w");
  const dqt = dequantizeBfp(q);
  const nb = q.blocksPerRow;
  const wm = f.mantissa <= 8 ? new Int8Array(w.length) : new Int16Array(w.length);
  const dq = new Float32Array(w.length);
  const we = new Int8Array(o * nb * taps);
  for (let i = 0; i < o; i++) {
    for (let c = 0; c < cg; c++) {
      for (let k = 0; k < taps; k++) {
        wm[(i * cg + c) * taps + k] = q.mantissas[(i * taps + k) * cg + c];
        dq[(i * cg + c) * taps + k] = dqt[(i * taps + k) * cg + c];
      }
    }
    for (let j = 0; j < nb; j++) {
      for (let k = 0; k < taps; k++) we[(i * nb + j) * taps + k] = q.exponents[(i * taps + k) * nb + j];
    }
  }
  return { wm, we, weShape: [o, nb, ...shape.slice(2)], dq };
}

/** Deterministic values in [-scale, scale) (a linear congruential stream). */
function values(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 * 2 - 1) * scale;
  }
  return out;
}

/** Builds a graph of ai.bfp ops by hand, keeping the float data a reference needs. */
class BfpBuilder {
  readonly graph = new Graph("g");
  /** Dequantized weights and float bias of each layer, by op name. */
  readonly layers = new Map<string, { w: Tensor; b: Tensor | null; attributes: [string, Attribute][] }>();

  input(name: string, shape: readonly Dim[]): Value {
    return this.graph.addInput(new Value(name, { elem: "f32", shape }));
  }

  /** A Quantize of `x`; `axis` -1 blocks the rows of `[..., K]` (a batched Gemm's input). */
  quantize(name: string, x: Value, f: Fmt, group = 1, axis = 1): [Value, Value] {
    const shape = (x.type as TensorType).shape!;
    const a = axis < 0 ? shape.length + axis : axis;
    const c = shape[a] as number;
    const eShape = f.block === 0
      ? [...shape.slice(0, a), ...(group === 1 ? [] : [group])]
      : [...shape.slice(0, a), group * Math.ceil(c / group / f.block), ...shape.slice(a + 1)];
    const op = this.graph.addOp(
      new Op({
        name,
        type: "Quantize",
        domain: "ai.bfp",
        operands: [x],
        results: [
          new Value(`${name}.xm`, { elem: bfpElem(f), shape }),
          new Value(`${name}.xe`, { elem: "i8", shape: eShape }),
        ],
        attributes: [
          ["mantissa", attr.int(f.mantissa)],
          ["exponent", attr.int(f.exponent)],
          ["block", attr.int(f.block)],
          ["group", attr.int(group)],
          ["rounding", attr.string(f.rounding ?? "nearest-even")],
          ["exponent_rule", attr.string(f.rule ?? "floor")],
          ...(axis === 1 ? [] : [["axis", attr.int(axis)] as [string, Attribute]]),
        ],
      }),
    );
    return [op.results[0], op.results[1]];
  }

  /** An ai.bfp.Conv (OIHW weights `w`) or, for a 2-D `wShape`, an ai.bfp.Gemm. */
  layer(
    name: string,
    [xm, xe]: [Value, Value],
    w: Float32Array,
    wShape: number[],
    bias: Float32Array | null,
    f: Fmt,
    yShape: Dim[],
    convAttributes: [string, Attribute][] = [],
  ): Value {
    const q = quantizeWeights(w, wShape, f);
    const g = this.graph;
    const wm = g.addConstant(`${name}.wm`, tensor(f.mantissa <= 8 ? "i8" : "i16", wShape, q.wm), {
      elem: bfpElem(f),
      shape: wShape,
    });
    const we = g.addConstant(`${name}.we`, tensor("i8", q.weShape, q.we), { elem: "i8", shape: q.weShape });
    const b = bias === null ? null : g.addConstant(`${name}.b`, tensor("f32", [bias.length], bias), {
      elem: "f32",
      shape: [bias.length],
    });
    const gemm = wShape.length === 2;
    const op = g.addOp(
      new Op({
        name,
        type: gemm ? "Gemm" : "Conv",
        domain: "ai.bfp",
        operands: b === null ? [xm, xe, wm, we] : [xm, xe, wm, we, b],
        results: [new Value(name, { elem: "f32", shape: yShape })],
        attributes: [
          ...convAttributes,
          ["accumulator", attr.int(32)],
          ["rounding", attr.string(f.rounding ?? "nearest-even")],
        ],
      }),
    );
    this.layers.set(name, {
      w: tensor("f32", wShape, q.dq),
      b: bias === null ? null : tensor("f32", [bias.length], bias),
      attributes: gemm ? [["transB", attr.int(1)]] : convAttributes,
    });
    return op.result;
  }

  module(outputs: Value[], opset = 13): Module {
    this.graph.outputs.push(...outputs);
    return new Module(this.graph, [["", opset], ["ai.bfp", 1]]);
  }

  /** The float layer `name` on `x` (the interpreter on a one-op standard module). */
  floatLayer(name: string, x: Tensor): Float32Array {
    const { w, b, attributes } = this.layers.get(name)!;
    const g = new Graph("ref");
    const xv = g.addInput(new Value("x", { elem: "f32", shape: x.shape }));
    const wv = g.addConstant("w", w, { elem: "f32", shape: w.shape });
    const operands = [xv, wv];
    if (b !== null) operands.push(g.addConstant("b", b, { elem: "f32", shape: b.shape }));
    const type = w.shape.length === 2 ? "Gemm" : "Conv";
    g.outputs.push(g.addOp(new Op({ name: "ref", type, operands, results: [new Value("y")], attributes })).result);
    return interpret(new Module(g, [["", 13]]), { x }).y.data as Float32Array;
  }
}

/** Legalize, expose the named fake-quantized values as extra outputs, and run in onnxruntime. */
async function runWithFakeQuant(
  module: Module,
  feeds: Record<string, Tensor>,
  fakeQuant: string[],
): Promise<Record<string, Tensor>> {
  const legal = legalizeBfp(module);
  for (const name of fakeQuant) {
    const v = [...legal.graph.values()].find((v) => v.name === name);
    assert.ok(v !== undefined, `no value ${name}`);
    legal.graph.outputs.push(v);
  }
  const files = await onnxTarget.emit(legal, { externalData: false, threshold: 1024 }, CTX);
  assert.deepEqual(onnxStructureProblems(files.get("bfp.onnx")!), []);
  return runOnnxruntime(files.get("bfp.onnx")!, feeds);
}

/** Same bits (so +0 and -0 differ), with the first mismatch in the message. */
function assertSameBits(actual: Tensor, expected: Float32Array, what: string): void {
  const a = new Uint32Array((actual.data as Float32Array).slice().buffer);
  const e = new Uint32Array(expected.slice().buffer);
  assert.equal(a.length, e.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== e[i]) {
      assert.fail(`${what}: element ${i} is ${(actual.data as Float32Array)[i]}, expected ${expected[i]}`);
    }
  }
}

/** Max |a - b| and that over max |b|. */
function difference(actual: Tensor, expected: Float32Array): { abs: number; rel: number } {
  const a = actual.data as Float32Array;
  assert.equal(a.length, expected.length);
  let abs = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    abs = Math.max(abs, Math.abs(a[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return { abs, rel: scale === 0 ? abs : abs / scale };
}

function assertClose(actual: Tensor, expected: Float32Array, what: string): { abs: number; rel: number } {
  const d = difference(actual, expected);
  assert.ok(d.rel <= 1e-5, `${what}: max abs difference ${d.abs}, relative ${d.rel}`);
  return d;
}

const below = (v: number): number => v * (1 - 2 ** -24); // the float32 just below a power of two

/** Rows of 8 values that exercise exponents, ties, clamps and underflow. */
const SPECIAL_ROWS: readonly number[][] = [
  [1, 0.5, -2, 4, 0.25, -0.125, 8, 1], // exact powers of two
  [below(8), below(1), -below(4), below(0.5), 3, -5, 0.1, 7.5], // just below powers of two
  [1, 2.5 * 2 ** -6, 3.5 * 2 ** -6, -2.5 * 2 ** -6, -3.5 * 2 ** -6, 1.5 * 2 ** -6, -0.5 * 2 ** -6, 0.5 * 2 ** -6], // L=8 ties
  [1.75, 1.25, -1.25, 0.75, -0.75, 0.25, 1.5, -0.25], // L=3 ties
  [1 + 3 * 2 ** -15, 1 + 2 ** -15, -(1 + 2 ** -15), 0.5 + 2 ** -15, 1.5, -(2 ** -15), 2 ** -16, 3 * 2 ** -16], // L=16 ties
  [1.995, -1.99, 1, 0.25, -1.999, 0, 0, 0], // the maximum rounds past maxM
  [0, 0, 0, 0, 0, 0, 0, 0], // all zero
  [2 ** -20, 3 * 2 ** -23, -(2 ** -22), 5 * 2 ** -24, 2 ** -30, -7 * 2 ** -25, 1e-7, -1e-8], // exponent clamped up
  [2 ** 20, -3 * 2 ** 18, 1e6, -65504, 1, 0.5, 2 ** 17, 123456], // exponent clamped down, saturates
  [2 ** -130, -(2 ** -149), 1.5 * 2 ** -127, below(2 ** -126), 2 ** -140, 0, -(2 ** -128), 2 ** -149], // subnormal
  [2 ** 100, 2 ** -149, -(2 ** -149), 1e-30, -1e-30, 2 ** 90, -1, 1], // quotients that underflow to zero
  [...values(8, 7, 3)],
];

const ROUNDINGS: readonly BfpRounding[] = ["nearest-even", "toward-zero", "toward-positive", "toward-negative"];

Deno.test("legalizeBfp() fake-quantizes bit for bit in every rounding mode and exponent rule", async () => {
  const rows = SPECIAL_ROWS.length;
  const x = tensor("f32", [rows, 8], Float32Array.from(SPECIAL_ROWS.flat()));
  const b = new BfpBuilder();
  const xv = b.input("x", ["N", 8]);
  const cases: { name: string; f: Fmt }[] = [];
  const formats: Fmt[] = [
    { mantissa: 8, exponent: 5, block: 0 },
    { mantissa: 8, exponent: 8, block: 3 }, // 8 channels in blocks of 3: zero padding inside the function
    { mantissa: 16, exponent: 8, block: 0 },
    { mantissa: 3, exponent: 4, block: 3 },
  ];
  for (const base of formats) {
    for (const rounding of ROUNDINGS) {
      for (const rule of ["floor", "never-clamp"] as const) {
        const name = `q${cases.length}`;
        cases.push({ name, f: { ...base, rounding, rule } });
        b.quantize(name, xv, { ...base, rounding, rule }); // results unused: the function alone
      }
    }
  }
  const module = b.module([]);
  const out = await runWithFakeQuant(module, { x }, cases.map((c) => `${c.name}.xm`));
  for (const { name, f } of cases) {
    assertSameBits(out[`${name}.xm`], fakeQuantRef(x.data as Float32Array, x.shape, f), `${name} ${JSON.stringify(f)}`);
  }
  // One function per attribute set, named after it.
  const legal = legalizeBfp(module);
  const functions = legal.extra.functions as { name: string }[];
  assert.equal(functions.length, cases.length);
  assert.equal(functions[0].name, "Quantize_m8_e5_b0_g1_nearest_even_floor");
  assert.equal(functions[3].name, "Quantize_m8_e5_b0_g1_toward_zero_never_clamp");
});

Deno.test("legalizeBfp() fixed point: QuantizeLinear/DequantizeLinear for nearest-even, a function otherwise, bit exact", async () => {
  const rows = SPECIAL_ROWS.length;
  const x = tensor("f32", [rows, 8], Float32Array.from(SPECIAL_ROWS.flat()));
  const b = new BfpBuilder();
  const xv = b.input("x", ["N", 8]);
  const cases: { name: string; f: Fmt; e: number }[] = [];
  for (const mantissa of [3, 8, 12, 16]) {
    for (const rounding of ROUNDINGS) {
      for (const e of [-10, 0, 3, 17]) {
        const name = `q${cases.length}`;
        const f: Fmt = { mantissa, exponent: 8, block: 0, rounding };
        const [xm] = b.quantize(name, xv, f);
        xm.producer!.attributes.set("static_exponent", attr.int(e));
        cases.push({ name, f, e });
      }
    }
  }
  const module = b.module([]);
  const out = await runWithFakeQuant(module, { x }, cases.map((c) => `${c.name}.xm`));
  for (const { name, f, e } of cases) {
    const ref = dequantizeBfp(quantizeBfp(x.data as Float32Array, formatOf(f), { length: 8, block: 0 }, "x", e));
    assertSameBits(out[`${name}.xm`], ref, `${name} ${JSON.stringify(f)} e=${e}`);
  }
  const legal = legalizeBfp(module);
  const types = legal.graph.ops.map((op) => op.type);
  assert.equal(types.filter((t) => t === "QuantizeLinear").length, 4 * 4); // nearest-even: 4 widths x 4 exponents
  assert.ok(types.includes("Quantize_m8_e8_b0_g1_toward_zero_floor_s3"));
  assert.ok(types.includes("Quantize_m8_e8_b0_g1_toward_zero_floor_sm10"));
  const blocking = JSON.parse(legal.metadata.get("bfp.blocking")!);
  assert.equal(blocking.x.static_exponent, 17); // the last Quantize of x wins the record
});

Deno.test("legalizeBfp() computes exact exponents at and just below every power of two", async () => {
  // Row k: maximum 2^k, or the float32 just below it, for every normal exponent (and the smallest subnormals).
  const data: number[] = [];
  for (let k = -149; k <= 127; k++) {
    data.push(2 ** k, 2 ** k / 3);
    if (k > -126) data.push(-below(2 ** k), 2 ** k / 5);
  }
  const x = tensor("f32", [data.length / 2, 2], Float32Array.from(data));
  const b = new BfpBuilder();
  const xv = b.input("x", ["N", 2]);
  const formats: Fmt[] = [
    { mantissa: 8, exponent: 8, block: 0 },
    { mantissa: 8, exponent: 8, block: 0, rule: "never-clamp" },
    { mantissa: 5, exponent: 8, block: 1, rounding: "toward-positive" },
  ];
  formats.forEach((f, i) => b.quantize(`q${i}`, xv, f));
  const out = await runWithFakeQuant(b.module([]), { x }, formats.map((_, i) => `q${i}.xm`));
  formats.forEach((f, i) => assertSameBits(out[`q${i}.xm`], fakeQuantRef(x.data as Float32Array, x.shape, f), `q${i}`));
});

Deno.test("legalizeBfp() per-channel Conv and Gemm match the float layers of the dequantized operands", async () => {
  const f: Fmt = { mantissa: 8, exponent: 5, block: 0 };
  const b = new BfpBuilder();
  const x = b.input("x", ["N", 4, 7, 7]);
  const convAttrs: [string, Attribute][] = [
    ["kernel_shape", attr.ints([3, 3])],
    ["strides", attr.ints([2, 2])],
    ["pads", attr.ints([1, 0, 1, 1])],
  ];
  const conv = b.layer("conv", b.quantize("xq", x, f), values(6 * 4 * 9, 1), [6, 4, 3, 3], values(6, 2), f, [
    "N",
    6,
    4,
    3,
  ], convAttrs);
  const flat = b.graph.addOp(
    new Op({
      name: "flat",
      type: "Flatten",
      operands: [conv],
      results: [new Value("flat", { elem: "f32", shape: ["N", 72] })],
    }),
  ).result;
  const y = b.layer("fc", b.quantize("fq", flat, f), values(5 * 72, 3, 0.1), [5, 72], values(5, 4), f, ["N", 5]);
  const module = b.module([y, conv]);
  for (const n of [1, 3]) { // dynamic batch: one model, two batch sizes
    const input = values(n * 4 * 49, 5 + n, 4);
    if (n === 3) input.fill(0, 49 * 4, 2 * 49 * 4); // an all-zero sample
    const xt = tensor("f32", [n, 4, 7, 7], input);
    const out = await runWithFakeQuant(module, { x: xt }, ["xq.xm", "fq.xm"]);
    const xq = fakeQuantRef(input, xt.shape, f);
    assertSameBits(out["xq.xm"], xq, "conv input");
    assertClose(out.conv, b.floatLayer("conv", tensor("f32", xt.shape, xq)), "conv");
    // The Gemm's input is onnxruntime's own conv output, so its fake quantization is compared bit for bit too.
    const fq = fakeQuantRef(out.conv.data as Float32Array, [n, 72], f);
    assertSameBits(out["fq.xm"], fq, "gemm input");
    assertClose(out.fc, b.floatLayer("fc", tensor("f32", [n, 72], fq)), "fc");
  }
});

Deno.test("legalizeBfp() blocked Conv with groups, dilation and channels not divisible by the block", async () => {
  const f: Fmt = { mantissa: 6, exponent: 5, block: 4 };
  const b = new BfpBuilder();
  const x = b.input("x", ["N", 10, 6, 5]);
  const convAttrs: [string, Attribute][] = [
    ["group", attr.int(2)],
    ["kernel_shape", attr.ints([3, 2])],
    ["dilations", attr.ints([2, 1])],
    ["pads", attr.ints([2, 1, 2, 0])],
    ["strides", attr.ints([1, 2])],
  ];
  // Cg = 5 channels per group in blocks of 4: exponents [N, 2·2, 6, 5] and weights [4, 2, 3, 2].
  const conv = b.layer("conv", b.quantize("xq", x, f, 2), values(4 * 5 * 6, 11), [4, 5, 3, 2], null, f, [
    "N",
    4,
    6,
    3,
  ], convAttrs);
  const g16: Fmt = { mantissa: 12, exponent: 8, block: 4 }; // i16 mantissas, blocked DequantizeLinear
  const flat = b.graph.addOp(
    new Op({
      name: "flat",
      type: "Flatten",
      operands: [conv],
      results: [new Value("flat", { elem: "f32", shape: ["N", 72] })],
    }),
  ).result;
  const y = b.layer("fc", b.quantize("fq", flat, g16), values(3 * 72, 12), [3, 72], values(3, 13), g16, ["N", 3]);
  const module = b.module([y, conv]);
  const input = values(2 * 10 * 30, 14, 2);
  input.fill(0, 30, 60); // channel 1 of sample 0 is zero
  const xt = tensor("f32", [2, 10, 6, 5], input);
  const out = await runWithFakeQuant(module, { x: xt }, ["xq.xm", "fq.xm"]);
  const xq = fakeQuantRef(input, xt.shape, f, 2);
  assertSameBits(out["xq.xm"], xq, "conv input");
  assertClose(out.conv, b.floatLayer("conv", tensor("f32", xt.shape, xq)), "conv");
  const fq = fakeQuantRef(out.conv.data as Float32Array, [2, 72], g16);
  assertSameBits(out["fq.xm"], fq, "gemm input");
  assertClose(out.fc, b.floatLayer("fc", tensor("f32", [2, 72], fq)), "fc");

  const legal = legalizeBfp(module);
  const dq = legal.graph.ops.filter((op) => op.type === "DequantizeLinear");
  assert.deepEqual(dq.map((op) => [op.int("axis"), op.int("block_size")]), [[1, 4], [1, 4]]);
  assert.deepEqual(dq.map((op) => op.operand(1)!.constant!.shape), [[4, 2, 3, 2], [3, 18]]);
  assert.deepEqual(dq.map((op) => op.operand(0)!.constant!.dtype), ["i8", "i16"]);
});

Deno.test("legalizeBfp() a depthwise Conv whose input has one exponent per sample and channel plane", async () => {
  const f: Fmt = { mantissa: 8, exponent: 5, block: 0 };
  const b = new BfpBuilder();
  const x = b.input("x", ["N", 4, 5, 5]);
  const convAttrs: [string, Attribute][] = [["group", attr.int(4)], ["kernel_shape", attr.ints([3, 3])], [
    "pads",
    attr.ints([1, 1, 1, 1]),
  ]];
  const y = b.layer("dw", b.quantize("xq", x, f, 4), values(4 * 9, 21), [4, 1, 3, 3], values(4, 22), f, [
    "N",
    4,
    5,
    5,
  ], convAttrs);
  const module = b.module([y]);
  const input = values(2 * 4 * 25, 23, 2);
  // Channel planes of very different scales: one exponent per sample would flush the quiet ones.
  for (let i = 0; i < input.length; i++) input[i] *= 2 ** (3 * (Math.floor(i / 25) % 4) - 6);
  const xt = tensor("f32", [2, 4, 5, 5], input);
  const out = await runWithFakeQuant(module, { x: xt }, ["xq.xm"]);
  const xq = fakeQuantRef(input, xt.shape, f, 4);
  assertSameBits(out["xq.xm"], xq, "depthwise input");
  assert.notDeepEqual([...xq], [...fakeQuantRef(input, xt.shape, f)], "the planes' exponents differ from the sample's");
  assertClose(out.dw, b.floatLayer("dw", tensor("f32", xt.shape, xq)), "dw");
  // The interpreter's bit-exact layer on the same input.
  assertClose(out.dw, interpret(module, { x: xt }).dw.data as Float32Array, "dw against the interpreter");
});

Deno.test("legalizeBfp() writes power-of-two scales, opset 21, IR 10 and the format metadata", () => {
  const f: Fmt = { mantissa: 8, exponent: 5, block: 0 };
  const b = new BfpBuilder();
  const x = b.input("x", ["N", 3]);
  const y = b.layer("fc", b.quantize("xq", x, f), Float32Array.from([1, -0.5, 0.25, 3, 0.75, 0.125]), [2, 3], null, f, [
    "N",
    2,
  ]);
  const module = b.module([y]);
  const before = printModule(module);
  const legal = legalizeBfp(module);
  assert.equal(printModule(module), before, "the argument is unchanged");
  assert.equal(containsBfpOps(module), true);
  assert.equal(containsBfpOps(legal), false);
  assert.deepEqual([...legal.opsets], [["", 21], ["ai.bfp", 1]]);
  assert.equal(legal.irVersion, 10);
  const dq = legal.graph.ops.find((op) => op.type === "DequantizeLinear")!;
  assert.equal(dq.int("axis"), 0);
  assert.deepEqual([...(dq.operand(1)!.constant!.data as Float32Array)], [2 ** -6, 2 ** -5]); // e = 0 and 1, L-2 = 6
  assert.deepEqual([...legal.graph.constants.map((c) => c.name)], ["fc.wm", "fc.wm.scale"]); // exponents dropped
  const gemm = legal.graph.ops.find((op) => op.type === "Gemm")!;
  assert.equal(gemm.int("transB"), 1);
  assert.equal(gemm.attributes.size, 1);
  assert.deepEqual(Object.fromEntries(legal.metadata), {
    "bfp.version": "1",
    "bfp.mantissa_bits": "8",
    "bfp.exponent_bits": "5",
    "bfp.exponent_bias": "15",
    "bfp.rounding": "nearest-even",
    "bfp.exponent_rule": "floor",
    "bfp.overflow": "saturate",
    "bfp.accumulator_bits": "32",
    "bfp.blocking": JSON.stringify({
      x: {
        role: "activation",
        mantissa_bits: 8,
        exponent_bits: 5,
        block: 0,
        group: 1,
        axis: 1,
        rounding: "nearest-even",
        exponent_rule: "floor",
        function: "ai.bfp.Quantize_m8_e5_b0_g1_nearest_even_floor",
      },
      "fc.wm": { role: "weight", mantissa_bits: 8, exponent_bits: 5, block: 0, axis: 0, exponents: "fc.we" },
    }),
    "bfp.generator": "@cnnc/compiler onnx target, ai.bfp legalization 1",
  });
});

Deno.test("onnx target: a BFP model is byte-identical across emits and legalization is idempotent", async () => {
  const f: Fmt = { mantissa: 8, exponent: 5, block: 2, rounding: "toward-zero" };
  const build = (): Module => {
    const b = new BfpBuilder();
    const x = b.input("x", ["N", 4, 3, 3]);
    const conv = b.layer("conv", b.quantize("xq", x, f), values(2 * 4 * 4, 21), [2, 4, 2, 2], values(2, 22), f, [
      "N",
      2,
      2,
      2,
    ], [["kernel_shape", attr.ints([2, 2])]]);
    return b.module([conv]);
  };
  const emit = async (m: Module) =>
    (await onnxTarget.emit(m, { externalData: false, threshold: 1024 }, CTX)).get("bfp.onnx")!;
  const first = await emit(build()), second = await emit(build());
  assert.deepEqual(first, second);
  assert.deepEqual(exportOnnx(legalizeBfp(legalizeBfp(build()))), first);
  // The written model reads back with its functions and metadata.
  const back = importOnnx(first);
  assert.deepEqual([...back.opsets], [["", 21], ["ai.bfp", 1]]);
  assert.equal(back.irVersion, 10);
  assert.equal(back.metadata.get("bfp.rounding"), "toward-zero");
  assert.deepEqual(back.graph.ops.map((op) => op.qualifiedType), [
    "ai.bfp.Quantize_m8_e5_b2_g1_toward_zero_floor",
    "DequantizeLinear",
    "Conv",
  ]);
});

Deno.test("legalizeBfp() raises the model's opset to 21, rewriting ops whose signature changed", async () => {
  const f: Fmt = { mantissa: 8, exponent: 5, block: 0 };
  const b = new BfpBuilder();
  const g = b.graph;
  const x = b.input("x", ["N", 3, 4, 4]);
  const conv = b.layer("conv", b.quantize("xq", x, f), values(6 * 3 * 9, 31), [6, 3, 3, 3], values(6, 32), f, [
    "N",
    6,
    4,
    4,
  ], [["kernel_shape", attr.ints([3, 3])], ["pads", attr.ints([1, 1, 1, 1])]]);
  const op = (type: string, operands: Value[], results: string[], attributes: [string, Attribute][] = []): Value[] =>
    g.addOp(new Op({ name: results[0], type, operands, results: results.map((r) => new Value(r)), attributes }))
      .results;
  const [mean] = op("ReduceMean", [conv], ["mean"], [["axes", attr.ints([2, 3])], ["keepdims", attr.int(1)]]);
  const [sq] = op("Squeeze", [mean], ["sq"], [["axes", attr.ints([2, 3])]]);
  const [a, c] = op("Split", [sq], ["a", "c"], [["axis", attr.int(1)], ["split", attr.ints([2, 4])]]);
  const [h1, h2] = op("Split", [conv], ["h1", "h2"], [["axis", attr.int(1)]]);
  const [sum] = op("ReduceSum", [h1], ["sum"], [["axes", attr.ints([1])], ["keepdims", attr.int(0)]]);
  const [max] = op("ReduceMax", [h2], ["max"], [["keepdims", attr.int(0)]]);
  const [l2] = op("ReduceL2", [h2], ["l2"], [["axes", attr.ints([-1])]]);
  const [un] = op("Unsqueeze", [a], ["un"], [["axes", attr.ints([0])]]);
  const [dropped] = op("Dropout", [c], ["dropped"], [["ratio", attr.float(0.25)]]);
  dropped.type = { elem: "f32", shape: ["N", 4] }; // a known rank: Softmax only needs its axis made explicit
  const [soft] = op("Softmax", [dropped], ["soft"]); // rank 2, default axis 1: the last axis
  const [soft4] = op("Softmax", [conv], ["soft4"]); // rank 4, axis 1: flattens [N, 6·4·4]
  const module = b.module([un, soft, sum, max, l2, soft4], 11);
  const xt = tensor("f32", [2, 3, 4, 4], values(2 * 48, 33, 2));
  const expected = interpret(module, { x: xt }); // the interpreter runs ai.bfp ops and opset-11 semantics
  const files = await onnxTarget.emit(module, { externalData: false, threshold: 1024 }, CTX);
  const out = await runOnnxruntime(files.get("bfp.onnx")!, { x: xt });
  for (const name of ["un", "soft", "sum", "max", "l2", "soft4"]) {
    assert.deepEqual(out[name].shape, expected[name].shape, name);
    assertClose(out[name], expected[name].data as Float32Array, name);
  }
  const legal = legalizeBfp(module);
  const byName = (n: string) => legal.graph.ops.find((o) => o.name === n)!;
  assert.equal(byName("mean").attr("axes"), undefined);
  assert.deepEqual([...(byName("mean").operand(1)!.constant!.data as BigInt64Array)], [2n, 3n]);
  assert.equal(byName("h1").int("num_outputs"), 2);
  assert.equal(byName("a").int("num_outputs"), undefined);
  assert.equal(byName("soft").int("axis"), 1);
  assert.equal(byName("soft").operand(0), byName("dropped").result);
  assert.deepEqual(legal.graph.ops.filter((o) => o.name.startsWith("soft4")).map((o) => o.type), [
    "Flatten",
    "Shape",
    "Softmax",
    "Reshape",
  ]);
});

Deno.test("legalizeBfp() refuses what ONNX cannot express, naming the op", () => {
  const f: Fmt = { mantissa: 8, exponent: 5, block: 0 };
  const build = (opts: { rounding?: BfpRounding; opset?: number; leak?: boolean; extra?: (g: Graph) => void }) => {
    const b = new BfpBuilder();
    const x = b.input("x", ["N", 3]);
    const xq = b.quantize("xq", x, { ...f, rounding: opts.rounding });
    const y = b.layer("fc", xq, values(6, 41), [2, 3], null, f, ["N", 2]);
    const outputs = [y];
    if (opts.leak) {
      outputs.push(
        b.graph.addOp(new Op({ name: "leak", type: "Cast", operands: [xq[1]], results: [new Value("e32")] })).result,
      );
    }
    opts.extra?.(b.graph);
    return b.module(outputs, opts.opset);
  };
  assert.throws(() => legalizeBfp(build({ rounding: "stochastic" })), {
    message: 'op "xq" (Quantize): stochastic rounding cannot be expressed in ONNX (no standard op draws the seeded ' +
      "splitmix32 stream); choose a deterministic rounding mode for ONNX export",
  });
  assert.throws(() => legalizeBfp(build({ leak: true })), {
    message: 'op "leak" (Cast): uses the BFP exponents "xq.xe" of op "xq" (Quantize), which have no ONNX form; ' +
      "only ai.bfp.Conv and ai.bfp.Gemm may consume them",
  });
  const resize = (g: Graph) => {
    const x = g.inputs[0];
    g.addOp(new Op({ name: "r", type: "Resize", operands: [x, x], results: [new Value("r")] }));
  };
  assert.throws(() => legalizeBfp(build({ opset: 10, extra: resize })), {
    message: 'op "r" (Resize): its inputs and coordinate transformation changed in opset 11; ' +
      "the model's opset 10 cannot be raised to 21 for BFP export",
  });
  const groupNorm = (g: Graph) => {
    g.addOp(new Op({ name: "gn", type: "GroupNormalization", operands: [g.inputs[0]], results: [new Value("gn")] }));
  };
  assert.throws(() => legalizeBfp(build({ opset: 18, extra: groupNorm })), {
    message: 'op "gn" (GroupNormalization): its scale and bias changed from per group to per channel in opset 21; ' +
      "the model's opset 18 cannot be raised to 21 for BFP export",
  });
  const addOld = (g: Graph) => {
    g.addOp(new Op({ name: "add", type: "Add", operands: [g.inputs[0], g.inputs[0]], results: [new Value("s")] }));
  };
  assert.throws(() => legalizeBfp(build({ opset: 6, extra: addOld })), {
    message: 'op "add" (Add): its definition changed in opset 7 in a way this export does not convert; ' +
      "the model's opset 6 cannot be raised to 21 for BFP export",
  });
  const upsample = (g: Graph) => {
    g.addOp(new Op({ name: "up", type: "Upsample", operands: [g.inputs[0], g.inputs[0]], results: [new Value("u")] }));
  };
  assert.throws(() => legalizeBfp(build({ opset: 13, extra: upsample })), {
    message:
      'op "up" (Upsample): it was deprecated in opset 10 (Resize replaces it); it has no opset 21 form for BFP export',
  });
  assert.throws(() => legalizeBfp(build({ opset: 22 })), {
    message: "Cannot export BFP model: its default opset 22 is newer than 21, the opset of BFP export",
  });
});

Deno.test("onnxruntime's float layers agree with the interpreter's bit-exact BFP kernels on one lowered layer", async () => {
  // One layer each, so the comparison measures accumulation only (a second Quantize could move a value that
  // lies on a rounding boundary by one mantissa step: the float and integer sums differ in the last bit).
  const cases: {
    f: Fmt;
    group: number;
    w: number[];
    attributes: [string, Attribute][];
    y: Dim[];
    rows?: number[];
  }[] = [
    {
      f: { mantissa: 8, exponent: 5, block: 0 },
      group: 1,
      w: [6, 4, 3, 3],
      attributes: [["pads", attr.ints([1, 1, 1, 1])]],
      y: ["N", 6, 5, 5],
    },
    {
      f: { mantissa: 8, exponent: 8, block: 4 },
      group: 2,
      w: [4, 5, 3, 3],
      attributes: [["group", attr.int(2)], ["strides", attr.ints([2, 2])]],
      y: ["N", 4, 2, 2],
    },
    { f: { mantissa: 8, exponent: 5, block: 0 }, group: 1, w: [7, 20], attributes: [], y: ["N", 7] },
    { f: { mantissa: 10, exponent: 6, block: 8 }, group: 1, w: [7, 20], attributes: [], y: ["N", 7] },
    // Batched Gemms (a MatMul on [N, T, K] and [N, H, W, K]): rows are samples, a Gemm between two Reshapes.
    { f: { mantissa: 8, exponent: 5, block: 0 }, group: 1, w: [7, 20], attributes: [], y: ["N", 4, 7], rows: [4] },
    {
      f: { mantissa: 8, exponent: 8, block: 8 },
      group: 1,
      w: [7, 20],
      attributes: [],
      y: ["N", 2, 3, 7],
      rows: [2, 3],
    },
  ];
  for (const [i, c] of cases.entries()) {
    const b = new BfpBuilder();
    const inShape = c.w.length === 2 ? [3, ...c.rows ?? [], c.w[1]] : [3, c.w[1] * c.group, 5, 5];
    const x = b.input("x", ["N", ...inShape.slice(1)]);
    const o = c.w[0];
    const y = b.layer(
      "layer",
      b.quantize("xq", x, c.f, c.group, c.rows === undefined ? 1 : -1),
      values(shapeSize(c.w), 50 + i),
      c.w,
      values(o, 60 + i),
      c.f,
      c.y,
      [
        ...(c.w.length === 4 ? [["kernel_shape", attr.ints([3, 3])] as [string, Attribute]] : []),
        ...c.attributes,
      ],
    );
    const module = b.module([y]);
    const xt = tensor("f32", inShape, values(shapeSize(inShape), 70 + i, 3));
    const expected = interpret(module, { x: xt }).layer.data as Float32Array;
    const files = await onnxTarget.emit(module, { externalData: false, threshold: 1024 }, CTX);
    assert.deepEqual(onnxStructureProblems(files.get("bfp.onnx")!), []);
    const out = await runOnnxruntime(files.get("bfp.onnx")!, { x: xt });
    assert.deepEqual(out.layer.shape, [3, ...(c.y.slice(1) as number[])]);
    assertClose(out.layer, expected, `case ${i}`);
    if (c.rows !== undefined) {
      const ops = importOnnx(files.get("bfp.onnx")!).graph.ops.map((op) => op.type);
      assert.deepEqual(ops.slice(1), ["DequantizeLinear", "Shape", "Slice", "Concat", "Reshape", "Gemm", "Reshape"]);
    }
  }
});

Deno.test("legalizeBfp() fake-quantizes the rows of a [..., K] tensor (channel axis -1) bit for bit", async () => {
  const rows = SPECIAL_ROWS.length;
  const flat = Float32Array.from(SPECIAL_ROWS.flat());
  const b = new BfpBuilder();
  const xv = b.input("x", ["N", "T", 8]);
  const formats: Fmt[] = [
    { mantissa: 8, exponent: 5, block: 0 },
    { mantissa: 8, exponent: 8, block: 3 },
    { mantissa: 4, exponent: 5, block: 0, rounding: "toward-zero", rule: "never-clamp" },
  ];
  formats.forEach((f, i) => b.quantize(`q${i}`, xv, f, 1, -1));
  const module = b.module([]);
  const x = tensor("f32", [1, rows, 8], flat);
  const out = await runWithFakeQuant(module, { x }, formats.map((_, i) => `q${i}.xm`));
  for (const [i, f] of formats.entries()) {
    assertSameBits(out[`q${i}.xm`], fakeQuantRef(flat, [rows, 8], f), `q${i} ${JSON.stringify(f)}`);
    assert.deepEqual(out[`q${i}.xm`].shape, [1, rows, 8]);
  }
  const legal = legalizeBfp(module);
  assert.deepEqual((legal.extra.functions as { name: string }[]).map((f) => f.name), [
    "Quantize_m8_e5_b0_g1_nearest_even_floor_am1",
    "Quantize_m8_e8_b3_g1_nearest_even_floor_am1",
    "Quantize_m4_e5_b0_g1_toward_zero_never_clamp_am1",
  ]);
  assert.equal(JSON.parse(legal.metadata.get("bfp.blocking")!).x.axis, -1);
});
