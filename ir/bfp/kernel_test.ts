import assert from "node:assert/strict";
import { attr } from "../attributes.ts";
import { Graph, Op, Value } from "../graph.ts";
import { interpret } from "../interpreter.ts";
import { Module } from "../module.ts";
import { inferShapes } from "../shape.ts";
import { float32Tensor, tensor } from "../tensor.ts";
import { verifyModuleDiagnostics } from "../verifier.ts";
import {
  accumulatorGuardBits,
  alignToExponent,
  type BfpFormat,
  bfpFormat,
  bfpStorage,
  exponentRange,
  maxMantissa,
  roundScaled,
  splitmix32,
} from "./format.ts";
import { bfpLayer } from "./kernel.ts";
import { type BfpLayerPlan, bfpLayerPlan } from "./plan.ts";
import { activationExponentShape, quantizeActivations, quantizeBfp } from "./quantize.ts";

function gaussian(n: number, seed: number, sigma = 1): Float32Array {
  const rng = splitmix32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = (rng.next() + 1) / 4294967297, v = rng.next() / 4294967296;
    out[i] = sigma * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

interface Case {
  n: number;
  c: number;
  o: number;
  group: number;
  h: number;
  w: number;
  k: number;
  stride: number;
  pad: number;
  dilation: number;
}

/**
 * The layer rule of ir/bfp/format.ts written out naively, output by output, block by
 * block (no GEMM, no tap tables, no chunking): the independent reference. With `block` 0 the input has one exponent
 * per sample, or per sample and group where `inputGroups` is the layer's group count.
 */
function naiveLayer(
  cs: Case,
  x: { mantissas: Int8Array | Int16Array; exponents: Int8Array },
  w: { mantissas: Int8Array | Int16Array; exponents: Int8Array },
  bias: Float32Array,
  format: BfpFormat,
  block: number,
  accBits: number,
  inputGroups = 1,
): Float64Array {
  const { n, c, o, group, h, w: wd, k, stride, pad, dilation } = cs;
  const L = format.mantissaBits, eMin = exponentRange(format).min;
  const cg = c / group, og = o / group;
  const ho = Math.floor((h + 2 * pad - dilation * (k - 1) - 1) / stride) + 1;
  const wo = Math.floor((wd + 2 * pad - dilation * (k - 1) - 1) / stride) + 1;
  const nb = block === 0 ? 1 : Math.ceil(cg / block);
  const guard = accumulatorGuardBits(format, cg * k * k, accBits);
  const hi = 2 ** (accBits - 1) - 1;
  const y = new Float64Array(n * o * ho * wo);
  for (let ni = 0; ni < n; ni++) {
    for (let oc = 0; oc < o; oc++) {
      const gi = Math.floor(oc / og);
      for (let oy = 0; oy < ho; oy++) {
        for (let ox = 0; ox < wo; ox++) {
          // Blocks: (j, tap) for mx, one for per-channel. Each: exact sum and unit.
          const terms: { s: number; u: number }[] = [];
          for (let j = 0; j < nb; j++) {
            for (let t = 0; t < (block === 0 ? 1 : k * k); t++) {
              let s = 0, xExp = block === 0 ? x.exponents[ni * inputGroups + (inputGroups === 1 ? 0 : gi)] : eMin;
              const ty = block === 0 ? 0 : Math.floor(t / k), tx = block === 0 ? 0 : t % k;
              if (block > 0) {
                const iy = oy * stride + ty * dilation - pad, ix = ox * stride + tx * dilation - pad;
                if (iy >= 0 && iy < h && ix >= 0 && ix < wd) {
                  xExp = x.exponents[((ni * group * nb + gi * nb + j) * h + iy) * wd + ix];
                }
              }
              const wExp = block === 0 ? w.exponents[oc] : w.exponents[(oc * nb + j) * k * k + t];
              const cFrom = block === 0 ? 0 : j * block, cTo = block === 0 ? cg : Math.min(cg, (j + 1) * block);
              for (let ci = cFrom; ci < cTo; ci++) {
                for (let t2 = 0; t2 < k * k; t2++) {
                  if (block > 0 && t2 !== t) continue;
                  const ky = Math.floor(t2 / k), kx = t2 % k;
                  const iy = oy * stride + ky * dilation - pad, ix = ox * stride + kx * dilation - pad;
                  if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                  s += w.mantissas[((oc * cg + ci) * k + ky) * k + kx] *
                    x.mantissas[((ni * c + gi * cg + ci) * h + iy) * wd + ix];
                }
              }
              terms.push({ s, u: wExp + xExp - 2 * (L - 2) });
            }
          }
          const width = Math.floor(Math.log2(cg * k * k * maxMantissa(format) ** 2)) + 1;
          const biasUnit = bias[oc] === 0 ? -Infinity : Math.floor(Math.log2(Math.abs(bias[oc]))) + 1 - width;
          const uAcc = Math.max(biasUnit, ...terms.map((t) => t.u)) - guard;
          let acc = 0;
          for (const { s, u } of terms) {
            const v = s * 2 ** (u - uAcc);
            acc += u >= uAcc ? v : roundScaled(v, format.rounding);
          }
          acc += alignToExponent(bias[oc], 0, uAcc, format, accBits).value;
          acc = Math.min(hi, Math.max(-hi - 1, acc));
          y[((ni * o + oc) * ho + oy) * wo + ox] = acc * 2 ** uAcc;
        }
      }
    }
  }
  return y;
}

function weightsOf(cs: Case, wv: Float32Array, format: BfpFormat, block: number) {
  const cg = cs.c / cs.group, taps = cs.k * cs.k;
  if (block === 0) {
    const q = quantizeBfp(wv, format, { length: cg * taps, block: 0 }, "w");
    return { mantissas: q.mantissas, exponents: Int8Array.from(q.exponents) };
  }
  // Blocks of channels at each tap: quantize [O, taps, Cg] rows, then back to OIHW.
  const t = new Float32Array(wv.length);
  for (let oc = 0; oc < cs.o; oc++) {
    for (let ci = 0; ci < cg; ci++) {
      for (let tp = 0; tp < taps; tp++) t[(oc * taps + tp) * cg + ci] = wv[(oc * cg + ci) * taps + tp];
    }
  }
  const q = quantizeBfp(t, format, { length: cg, block }, "w");
  const mantissas = new Int8Array(wv.length);
  for (let oc = 0; oc < cs.o; oc++) {
    for (let ci = 0; ci < cg; ci++) {
      for (let tp = 0; tp < taps; tp++) mantissas[(oc * cg + ci) * taps + tp] = q.mantissas[(oc * taps + tp) * cg + ci];
    }
  }
  const nb = q.blocksPerRow;
  const exponents = new Int8Array(cs.o * nb * taps);
  for (let oc = 0; oc < cs.o; oc++) {
    for (let tp = 0; tp < taps; tp++) {
      for (let j = 0; j < nb; j++) exponents[(oc * nb + j) * taps + tp] = q.exponents[(oc * taps + tp) * nb + j];
    }
  }
  return { mantissas, exponents };
}

/**
 * The plan of a Conv of `cs` over the given BFP weights: a graph holding an
 * `ai.bfp.Quantize` and an `ai.bfp.Conv` with constant operands, read back by
 * `bfpLayerPlan` (as the interpreter does).
 */
function convPlan(
  cs: Case,
  w: { mantissas: Int8Array | Int16Array; exponents: Int8Array },
  bias: Float32Array | null,
  format: BfpFormat,
  block: number,
  accBits: number,
  staticExponent?: number,
  inputGroup = block === 0 ? 1 : cs.group,
): BfpLayerPlan {
  const g = new Graph("g");
  const elem = { kind: "bfp", mantissa: format.mantissaBits, exponent: format.exponentBits, block } as const;
  const x = g.addInput(new Value("x", { elem: "f32", shape: [cs.n, cs.c, cs.h, cs.w] }));
  const wShape = [cs.o, cs.c / cs.group, cs.k, cs.k];
  const eShape = block === 0 ? [cs.o] : [cs.o, Math.ceil(cs.c / cs.group / block), cs.k, cs.k];
  const wm = g.addConstant("wm", tensor(bfpStorage(format.mantissaBits), wShape, w.mantissas), { elem, shape: wShape });
  const we = g.addConstant("we", tensor("i8", eShape, w.exponents), { elem: "i8", shape: eShape });
  const b = bias === null ? null : g.addConstant("b", tensor("f32", [cs.o], bias), { elem: "f32", shape: [cs.o] });
  const policy: [string, ReturnType<typeof attr.int>][] = [
    ["rounding", attr.string(format.rounding)],
    ...(format.seed !== 0 ? [["seed", attr.int(format.seed)] as [string, ReturnType<typeof attr.int>]] : []),
  ];
  const q = g.addOp(
    new Op({
      name: "q",
      type: "Quantize",
      domain: "ai.bfp",
      operands: [x],
      results: [new Value("xm", { elem, shape: [cs.n, cs.c, cs.h, cs.w] }), new Value("xe")],
      attributes: [
        ["mantissa", attr.int(format.mantissaBits)],
        ["exponent", attr.int(format.exponentBits)],
        ["block", attr.int(block)],
        ["group", attr.int(inputGroup)],
        ...policy,
        ...(staticExponent === undefined
          ? []
          : [["static_exponent", attr.int(staticExponent)] as [string, ReturnType<typeof attr.int>]]),
      ],
    }),
  );
  const conv = g.addOp(
    new Op({
      name: "conv",
      type: "Conv",
      domain: "ai.bfp",
      operands: [q.results[0], q.results[1], wm, we, b],
      results: [new Value("y")],
      attributes: [
        ["group", attr.int(cs.group)],
        ["pads", attr.ints([cs.pad, cs.pad, cs.pad, cs.pad])],
        ["strides", attr.ints([cs.stride, cs.stride])],
        ["dilations", attr.ints([cs.dilation, cs.dilation])],
        ["accumulator", attr.int(accBits)],
        ...policy,
      ],
    }),
  );
  if (b === null) conv.truncateOperands(4);
  return bfpLayerPlan(conv);
}

const CASES: Case[] = [
  { n: 2, c: 5, o: 4, group: 1, h: 6, w: 7, k: 3, stride: 1, pad: 1, dilation: 1 },
  { n: 1, c: 6, o: 6, group: 3, h: 7, w: 5, k: 3, stride: 2, pad: 2, dilation: 2 },
  { n: 2, c: 4, o: 4, group: 4, h: 5, w: 5, k: 3, stride: 1, pad: 1, dilation: 1 }, // depthwise
  { n: 1, c: 40, o: 3, group: 1, h: 4, w: 4, k: 1, stride: 1, pad: 0, dilation: 1 },
  // 1,089 products per output: more than an exact float32 sum of 8-bit products holds (1,040), so summed in runs.
  { n: 2, c: 121, o: 3, group: 1, h: 4, w: 3, k: 3, stride: 1, pad: 1, dilation: 1 },
];

Deno.test("bfpLayer() equals the naive block-by-block rule for per-sample, per-group and channel blocks, every rounding", () => {
  let checked = 0;
  for (const [ci, cs] of CASES.entries()) {
    const xv = gaussian(cs.n * cs.c * cs.h * cs.w, 10 + ci, 2);
    for (let i = 0; i < xv.length; i += 7) xv[i] = 0; // zeros, and whole zero blocks in narrow layers
    // Channels of very different scales: a per-group exponent differs from the sample's.
    for (let i = 0; i < xv.length; i++) xv[i] *= 2 ** (Math.floor(i / (cs.h * cs.w)) % cs.c % 5 - 2);
    const wv = gaussian(cs.o * (cs.c / cs.group) * cs.k * cs.k, 20 + ci, 0.1);
    const bias = gaussian(cs.o, 30 + ci, 0.5);
    // [block, the Quantize's groups]: one exponent per sample, per sample and group, blocks of channels in groups.
    for (const [block, inputGroup] of [[0, 1], [0, cs.group], [2, cs.group], [32, cs.group]]) {
      for (const rounding of ["nearest-even", "toward-zero", "toward-positive", "toward-negative"] as const) {
        for (const [L, accBits] of [[8, 32], [6, 14], [12, 40]]) {
          const format = bfpFormat({ mantissaBits: L, rounding });
          const blocking = { block, group: inputGroup };
          const x = quantizeActivations(xv, [cs.n, cs.c, cs.h, cs.w], format, blocking, "x");
          assert.equal(x.exponents.length, block === 0 ? cs.n * inputGroup : x.exponents.length);
          const w = weightsOf(cs, wv, format, block);
          const plan = convPlan(cs, w, bias, format, block, accBits, undefined, inputGroup);
          const r = bfpLayer(plan, { ...x, shape: [cs.n, cs.c, cs.h, cs.w] });
          const ref = naiveLayer(cs, x, w, bias, format, block, accBits, block === 0 ? inputGroup : 1);
          const what = `case ${ci} block ${block} groups ${inputGroup} ${rounding} L=${L} A=${accBits}`;
          assert.deepEqual([...r.y], [...ref], what);
          checked++;
        }
      }
    }
  }
  assert.equal(checked, CASES.length * 4 * 4 * 3);
});

Deno.test("bfpLayer() with one block per row and sample is the exact dot product of the dequantized operands", () => {
  // A wide accumulator: no saturation, and with per-channel blocks every term is exact.
  const cs: Case = { n: 2, c: 8, o: 5, group: 1, h: 5, w: 5, k: 3, stride: 1, pad: 1, dilation: 1 };
  const format = bfpFormat();
  const x = quantizeActivations(gaussian(2 * 8 * 25, 1), [2, 8, 5, 5], format, { block: 0 }, "x");
  const w = weightsOf(cs, gaussian(5 * 8 * 9, 2, 0.2), format, 0);
  const bias = new Float32Array(5); // zero bias: no bias rounding either
  const r = bfpLayer(convPlan(cs, w, bias, format, 0, 53), { ...x, shape: [2, 8, 5, 5] });
  assert.equal(r.saturations, 0);
  // Float64 conv of the dequantized values: every product and partial sum is exact here (few bits).
  const ref = naiveLayer(cs, x, w, bias, format, 0, 53);
  for (let i = 0; i < ref.length; i++) {
    const ni = Math.floor(i / (5 * 25)), oc = Math.floor(i / 25) % 5, p = i % 25, oy = Math.floor(p / 5), ox = p % 5;
    let s = 0;
    for (let ci = 0; ci < 8; ci++) {
      for (let ky = 0; ky < 3; ky++) {
        for (let kx = 0; kx < 3; kx++) {
          const iy = oy + ky - 1, ix = ox + kx - 1;
          if (iy < 0 || iy >= 5 || ix < 0 || ix >= 5) continue;
          s += w.mantissas[((oc * 8 + ci) * 3 + ky) * 3 + kx] * 2 ** (w.exponents[oc] - 6) *
            x.mantissas[((ni * 8 + ci) * 5 + iy) * 5 + ix] * 2 ** (x.exponents[ni] - 6);
        }
      }
    }
    assert.equal(r.y[i], s);
  }
});

Deno.test("bfpLayer() saturates a narrow accumulator once per output and counts it", () => {
  // K = 64 products of 127·127 (all positive) need 21 bits; a 16-bit accumulator saturates every output.
  const format = bfpFormat();
  const ones = new Int8Array(64).fill(127);
  const cs: Case = { n: 1, c: 64, o: 1, group: 1, h: 1, w: 1, k: 1, stride: 1, pad: 0, dilation: 1 };
  const plan = convPlan(cs, { mantissas: ones, exponents: new Int8Array([0]) }, null, format, 0, 16);
  const r = bfpLayer(plan, { mantissas: ones, exponents: new Int8Array([0]), shape: [1, 64, 1, 1] });
  assert.equal(r.saturations, 1);
  assert.deepEqual([...r.y], [32767 * 2 ** -12]);
});

Deno.test("ai.bfp Quantize -> Conv runs in the interpreter, verifies, and tracks the float conv", () => {
  const g = new Graph("g");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4, 6, 6] }));
  const format = bfpFormat();
  const cs: Case = { n: 1, c: 4, o: 3, group: 1, h: 6, w: 6, k: 3, stride: 1, pad: 1, dilation: 1 };
  const wv = gaussian(3 * 4 * 9, 5, 0.2);
  const wq = weightsOf(cs, wv, format, 2);
  const bfp = { kind: "bfp", mantissa: 8, exponent: 5, block: 2 } as const;
  const wm = g.addConstant("wm", tensor("i8", [3, 4, 3, 3], wq.mantissas), { elem: bfp, shape: [3, 4, 3, 3] });
  const we = g.addConstant("we", tensor("i8", [3, 2, 3, 3], wq.exponents), { elem: "i8", shape: [3, 2, 3, 3] });
  const b = g.addConstant("b", float32Tensor([3], [0.1, -0.2, 0.3]), { elem: "f32", shape: [3] });
  const q = g.addOp(
    new Op({
      name: "q",
      type: "Quantize",
      domain: "ai.bfp",
      operands: [x],
      results: [new Value("xm"), new Value("xe")],
      attributes: [["block", attr.int(2)]],
    }),
  );
  const conv = g.addOp(
    new Op({
      name: "conv",
      type: "Conv",
      domain: "ai.bfp",
      operands: [q.results[0], q.results[1], wm, we, b],
      results: [new Value("y")],
      attributes: [["pads", attr.ints([1, 1, 1, 1])]],
    }),
  );
  g.outputs.push(conv.result);
  const m = new Module(g, [["", 13], ["ai.bfp", 1]]);
  inferShapes(m);
  assert.deepEqual(verifyModuleDiagnostics(m), []);
  assert.deepEqual(q.results[1].type, { elem: "i8", shape: ["N", 2, 6, 6] });
  assert.deepEqual(conv.result.type, { elem: "f32", shape: ["N", 3, 6, 6] });
  const xv = gaussian(2 * 4 * 36, 6);
  const y = interpret(m, { x: float32Tensor([2, 4, 6, 6], xv) }).y;
  // Against the float conv of the unquantized operands: e5m8 with blocks of 2 keeps ~40 dB.
  const ref = new Float64Array(2 * 3 * 36);
  for (let ni = 0; ni < 2; ni++) {
    for (let oc = 0; oc < 3; oc++) {
      for (let p = 0; p < 36; p++) {
        let s = [0.1, -0.2, 0.3][oc];
        for (let ci = 0; ci < 4; ci++) {
          for (let t = 0; t < 9; t++) {
            const iy = Math.floor(p / 6) + Math.floor(t / 3) - 1, ix = (p % 6) + (t % 3) - 1;
            if (iy >= 0 && iy < 6 && ix >= 0 && ix < 6) {
              s += wv[(oc * 4 + ci) * 9 + t] * xv[((ni * 4 + ci) * 6 + iy) * 6 + ix];
            }
          }
        }
        ref[(ni * 3 + oc) * 36 + p] = s;
      }
    }
  }
  let signal = 0, noise = 0;
  for (let i = 0; i < ref.length; i++) (signal += ref[i] ** 2), (noise += (ref[i] - (y.data[i] as number)) ** 2);
  const sqnr = 10 * Math.log10(signal / noise);
  assert.ok(sqnr > 35 && sqnr < 60, `SQNR ${sqnr.toFixed(1)} dB`);
});

Deno.test("quantizeActivations() blocks channels within groups at each position", () => {
  const format = bfpFormat();
  // [1, 4, 1, 2] with 2 groups of 2 channels, blocks of 1 (every element its own exponent) and of 2.
  const x = new Float32Array([1, 2, 4, 8, 0.5, 0.25, 3, 6]);
  const per = quantizeActivations(x, [1, 4, 1, 2], format, { block: 1, group: 2 }, "x");
  assert.deepEqual([...per.exponents], [0, 1, 2, 3, -1, -2, 1, 2]);
  assert.deepEqual(activationExponentShape([1, 4, 1, 2], { block: 1, group: 2 }), [1, 4, 1, 2]);
  const pairs = quantizeActivations(x, [1, 4, 1, 2], format, { block: 2, group: 2 }, "x");
  // Group 0 holds channels 0-1: positions (1, 4) -> e 2, (2, 8) -> e 3; group 1: (0.5, 3) -> 1, (0.25, 6) -> 2.
  assert.deepEqual([...pairs.exponents], [2, 3, 1, 2]);
  assert.throws(() => quantizeActivations(x, [1, 4, 1, 2], format, { block: 2, group: 3 }, "x"), {
    message: '4 channels of "x" are not divisible into 3 groups',
  });
  const bad = new Float32Array([1, NaN]);
  assert.throws(() => quantizeActivations(bad, [1, 2], format, { block: 0 }, "act"), /tensor "act": element 1 is NaN/);
});

/** Fixed point written from the definition: one compile-time exponent, round, clamp (no BFP code). */
function naiveFixed(x: Float32Array, e: number, L: number, rounding: string): Int16Array {
  const step = 2 ** (e - (L - 2)), maxM = 2 ** (L - 1) - 1;
  return Int16Array.from(x, (v) => {
    const s = v / step;
    const r = rounding === "toward-zero"
      ? Math.trunc(s)
      : rounding === "toward-positive"
      ? Math.ceil(s)
      : rounding === "toward-negative"
      ? Math.floor(s)
      : s - Math.floor(s) === 0.5
      ? (Math.floor(s) % 2 === 0 ? Math.floor(s) : Math.floor(s) + 1)
      : Math.round(s);
    return Math.max(-maxM, Math.min(maxM, r));
  });
}

Deno.test("fixed point (static exponents) equals the naive rule on the BFP kernel's configurations, saturating", () => {
  let checked = 0, saturatedSomewhere = false;
  for (const [ci, cs] of CASES.entries()) {
    const xv = gaussian(cs.n * cs.c * cs.h * cs.w, 10 + ci, 2);
    const wv = gaussian(cs.o * (cs.c / cs.group) * cs.k * cs.k, 20 + ci, 0.1);
    const bias = gaussian(cs.o, 30 + ci, 0.5);
    for (const rounding of ["nearest-even", "toward-zero", "toward-positive", "toward-negative"] as const) {
      for (const [L, accBits] of [[8, 32], [16, 48], [12, 40]]) {
        const format = bfpFormat({ mantissaBits: L, exponentBits: 8, rounding });
        const amax = xv.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        // The calibrated exponent, and one bit short of it: the largest inputs then saturate.
        for (const e of [Math.floor(Math.log2(amax)) + 1, Math.floor(Math.log2(amax)) - 1]) {
          const x = quantizeActivations(xv, [cs.n, cs.c, cs.h, cs.w], format, { block: 0 }, "x", e);
          const expected = naiveFixed(xv, e, L, rounding);
          assert.deepEqual([...x.mantissas], [...expected], `case ${ci} ${rounding} L=${L} e=${e}: mantissas`);
          assert.deepEqual([...x.exponents], new Array(cs.n).fill(e));
          if (x.saturated > 0) saturatedSomewhere = true;
          const w = weightsOf(cs, wv, format, 0);
          const plan = convPlan(cs, w, bias, format, 0, accBits, e);
          assert.equal(plan.input.staticExponent, e);
          const r = bfpLayer(plan, { ...x, shape: [cs.n, cs.c, cs.h, cs.w] });
          const ref = naiveLayer(cs, x, w, bias, format, 0, accBits);
          assert.deepEqual([...r.y], [...ref], `case ${ci} ${rounding} L=${L} A=${accBits} e=${e}`);
          checked++;
        }
      }
    }
  }
  assert.equal(checked, CASES.length * 4 * 3 * 2);
  assert.ok(saturatedSomewhere, "the short exponent saturates the largest inputs");
});

Deno.test("ai.bfp Quantize with static_exponent runs in the interpreter and the verifier names bad values", () => {
  const g = new Graph("g");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [2, 3] }));
  const q = g.addOp(
    new Op({
      name: "q",
      type: "Quantize",
      domain: "ai.bfp",
      operands: [x],
      results: [new Value("xm"), new Value("xe")],
      attributes: [["mantissa", attr.int(8)], ["exponent", attr.int(8)], ["static_exponent", attr.int(0)]],
    }),
  );
  g.outputs.push(...q.results);
  const m = new Module(g, [["", 13], ["ai.bfp", 1]]);
  inferShapes(m);
  assert.deepEqual(verifyModuleDiagnostics(m), []);
  // Step 2^-6: 0.5 -> 32, 3 saturates to 127 (1.98), -0.01 -> -1 (nearest-even of -0.64).
  const out = interpret(m, { x: float32Tensor([2, 3], [0.5, 3, -0.01, 0, 1, -2]) });
  assert.deepEqual([...out.xm.data], [32, 127, -1, 0, 64, -127]);
  assert.deepEqual([...out.xe.data], [0, 0]);
  q.attributes.set("static_exponent", attr.int(200));
  assert.deepEqual(verifyModuleDiagnostics(m).map((d) => d.message), [
    'op "q" (Quantize): static_exponent must be an integer in [-127, 127] (exponent 8 bits), found 200',
  ]);
  q.attributes.set("static_exponent", attr.int(1));
  q.attributes.set("block", attr.int(4));
  assert.match(verifyModuleDiagnostics(m)[0].message, /static_exponent \(fixed point\) needs block 0, found block 4/);
});

Deno.test("bfpLayer() integers: saturated integer accumulators and their units reproduce every output", () => {
  const cs = CASES[1];
  const format = bfpFormat({ mantissaBits: 6 });
  const xv = gaussian(cs.n * cs.c * cs.h * cs.w, 3, 2);
  const x = quantizeActivations(xv, [cs.n, cs.c, cs.h, cs.w], format, { block: 2, group: cs.group }, "x");
  const w = weightsOf(cs, gaussian(cs.o * (cs.c / cs.group) * cs.k * cs.k, 4, 0.1), format, 2);
  const plan = convPlan(cs, w, gaussian(cs.o, 5, 0.5), format, 2, 14);
  const r = bfpLayer(plan, { ...x, shape: [cs.n, cs.c, cs.h, cs.w] }, { integers: true });
  const { accumulators, units } = r.integers!;
  let saturated = 0;
  for (let i = 0; i < r.y.length; i++) {
    assert.ok(Number.isInteger(accumulators[i]), `output ${i}: ${accumulators[i]}`);
    assert.ok(accumulators[i] >= plan.accumulator.min && accumulators[i] <= plan.accumulator.max);
    if (accumulators[i] === plan.accumulator.min || accumulators[i] === plan.accumulator.max) saturated++;
    assert.equal(accumulators[i] * 2 ** units[i], r.y[i]);
  }
  assert.equal(saturated, r.saturations);
  assert.equal(bfpLayer(plan, { ...x, shape: [cs.n, cs.c, cs.h, cs.w] }).integers, undefined);
});

/** x[...lead, K] -> Quantize(axis) -> Gemm(K -> O, bias): the batched layer of a channels-last MatMul. */
function batchedGemm(lead: number[], k: number, o: number, block: number, axis: number, infer = true) {
  const format = bfpFormat();
  const bfp = { kind: "bfp", mantissa: 8, exponent: 5, block } as const;
  const g = new Graph("g");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [...lead, k] }));
  const q = g.addOp(
    new Op({
      name: "q",
      type: "Quantize",
      domain: "ai.bfp",
      operands: [x],
      results: [new Value("xm"), new Value("xe")],
      attributes: [["block", attr.int(block)], ["axis", attr.int(axis)]],
    }),
  );
  const wq = quantizeBfp(gaussian(o * k, 7, 0.3), format, { length: k, block }, "w");
  const nb = block === 0 ? 1 : Math.ceil(k / block);
  const wm = g.addConstant("wm", tensor("i8", [o, k], wq.mantissas), { elem: bfp, shape: [o, k] });
  const weShape = block === 0 ? [o] : [o, nb];
  const we = g.addConstant("we", tensor("i8", weShape, Int8Array.from(wq.exponents)), { elem: "i8", shape: weShape });
  const b = g.addConstant("b", float32Tensor([o], gaussian(o, 8)), { elem: "f32", shape: [o] });
  const fc = g.addOp(
    new Op({
      name: "fc",
      type: "Gemm",
      domain: "ai.bfp",
      operands: [...q.results, wm, we, b],
      results: [new Value("y")],
    }),
  );
  g.outputs.push(fc.result, q.results[1]);
  const m = new Module(g, [["", 13], ["ai.bfp", 1]]);
  if (infer) inferShapes(m);
  return m;
}

Deno.test("a Gemm on [..., K] treats every row as a sample: bit-identical to the same rows as a matrix", () => {
  for (const block of [0, 4]) {
    const data = gaussian(2 * 3 * 10, 5, 3);
    const batched = batchedGemm([2, 3], 10, 6, block, -1);
    assert.deepEqual(verifyModuleDiagnostics(batched), []);
    const y3 = interpret(batched, { x: float32Tensor([2, 3, 10], data) });
    const y2 = interpret(batchedGemm([6], 10, 6, block, 1), { x: float32Tensor([6, 10], data) });
    assert.deepEqual(y3.y.shape, [2, 3, 6]);
    assert.deepEqual(y3.xe.shape, block === 0 ? [2, 3] : [2, 3, 3]);
    assert.deepEqual(batched.graph.outputs.map((v) => v.type), [
      { elem: "f32", shape: [2, 3, 6] },
      { elem: "i8", shape: block === 0 ? [2, 3] : [2, 3, 3] },
    ]);
    assert.deepEqual([...y3.y.data], [...y2.y.data], `block ${block}`);
    assert.deepEqual([...y3.xe.data], [...y2.xe.data], `block ${block}`);
    // One row alone gives the same outputs: rows do not share exponents.
    const row = interpret(batchedGemm([1], 10, 6, block, 1), { x: float32Tensor([1, 10], data.slice(40, 50)) });
    assert.deepEqual([...row.y.data], [...y3.y.data].slice(24, 30), `block ${block}`);
  }
  assert.deepEqual(activationExponentShape(["N", 7, 7, 96], { block: 32, axis: -1 }), ["N", 7, 7, 3]);
  assert.deepEqual(activationExponentShape(["N", 7, 7, 96], { block: 0, axis: -1 }), ["N", 7, 7]);
  assert.throws(() => activationExponentShape([2, 3], { block: 0, axis: 2 }), {
    message: "channel axis 2 does not fit a tensor of rank 2 (it needs an axis in 1..rank-1)",
  });
  // A batched Gemm reading a Quantize of axis 1 blocks the wrong axis: shape inference names both ops.
  assert.throws(() => inferShapes(batchedGemm([2, 3], 10, 6, 0, 1, false)), {
    message: 'op "fc" (Gemm): its Quantize "q" blocks axis 1 of the rank-3 input; the layer reduces axis 2 (the last)',
  });
});

/** The plan of an `ai.bfp.Gemm` `[n, k] -> [n, o]` over the given BFP weights (`[o, k]`, exponents `[o]` or `[o, blocks]`). */
function gemmPlan(
  k: number,
  o: number,
  w: { mantissas: Int8Array | Int16Array; exponents: Int8Array },
  bias: Float32Array,
  format: BfpFormat,
  block: number,
  accBits: number,
): BfpLayerPlan {
  const g = new Graph("g");
  const elem = { kind: "bfp", mantissa: format.mantissaBits, exponent: format.exponentBits, block } as const;
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", k] }));
  const rounding: [string, ReturnType<typeof attr.string>] = ["rounding", attr.string(format.rounding)];
  const q = g.addOp(
    new Op({
      name: "q",
      type: "Quantize",
      domain: "ai.bfp",
      operands: [x],
      results: [new Value("xm", { elem, shape: ["N", k] }), new Value("xe")],
      attributes: [["mantissa", attr.int(format.mantissaBits)], ["block", attr.int(block)], rounding],
    }),
  );
  const eShape = block === 0 ? [o] : [o, Math.ceil(k / block)];
  const wm = g.addConstant("wm", tensor(bfpStorage(format.mantissaBits), [o, k], w.mantissas), { elem, shape: [o, k] });
  const we = g.addConstant("we", tensor("i8", eShape, w.exponents), { elem: "i8", shape: eShape });
  const b = g.addConstant("b", tensor("f32", [o], bias), { elem: "f32", shape: [o] });
  const fc = g.addOp(
    new Op({
      name: "fc",
      type: "Gemm",
      domain: "ai.bfp",
      operands: [...q.results, wm, we, b],
      results: [new Value("y")],
      attributes: [["accumulator", attr.int(accBits)], rounding],
    }),
  );
  return bfpLayerPlan(fc);
}

Deno.test("a Gemm's rows, multiplied as one matrix, equal each row as a 1x1 Conv and the naive rule", () => {
  // K = 1,100: more 8-bit products per output than one exact float32 sum holds (1,040), so summed in runs.
  const cs: Case = { n: 5, c: 1100, o: 3, group: 1, h: 1, w: 1, k: 1, stride: 1, pad: 0, dilation: 1 };
  const xv = gaussian(cs.n * cs.c, 41, 2);
  for (let i = 0; i < 40; i++) xv[3 * cs.c + 100 + i] = 0; // a row with zero blocks
  const wv = gaussian(cs.o * cs.c, 42, 0.1), bias = gaussian(cs.o, 43, 0.5);
  let checked = 0;
  for (const block of [0, 4, 32]) {
    for (const rounding of ["nearest-even", "toward-zero", "toward-negative"] as const) {
      for (const [L, accBits] of [[8, 32], [6, 14], [12, 48]]) {
        const format = bfpFormat({ mantissaBits: L, rounding });
        const x = quantizeActivations(xv, [cs.n, cs.c, 1, 1], format, { block }, "x");
        const w = weightsOf(cs, wv, format, block);
        const asConv = bfpLayer(convPlan(cs, w, bias, format, block, accBits), { ...x, shape: [cs.n, cs.c, 1, 1] });
        const asGemm = bfpLayer(gemmPlan(cs.c, cs.o, w, bias, format, block, accBits), { ...x, shape: [cs.n, cs.c] });
        const what = `block ${block} ${rounding} L=${L} A=${accBits}`;
        assert.deepEqual(asGemm.shape, [cs.n, cs.o]);
        assert.deepEqual([...asGemm.y], [...asConv.y], what);
        assert.equal(asGemm.saturations, asConv.saturations, what);
        assert.deepEqual([...asGemm.y], [...naiveLayer(cs, x, w, bias, format, block, accBits)], what);
        checked++;
      }
    }
  }
  assert.equal(checked, 27);
});
