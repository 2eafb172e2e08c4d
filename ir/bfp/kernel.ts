/**
 * The bit-exact integer kernel of a lowered Conv/Gemm: the golden model that
 * the C and FPGA targets reproduce. It runs a {@linkcode BfpLayerPlan}
 * (`plan.ts` states the rule) on one input's mantissas and exponents: exact
 * block products (float32 or float64 GEMMs of integer mantissas, exact by
 * construction), each aligned to the output's accumulator unit, the bias
 * aligned with the format's rounding, one saturation to `A` bits. Results are
 * independent of the order of summation.
 * @module
 */
import { unflatten, type WindowGeometry } from "../ops/conv_kernels.ts";
import { type FloatArray, gemm } from "../ops/gemm_kernel.ts";
import { shapeSize } from "../tensor.ts";
import { alignToExponent, exponentRange, maxMantissa, pow2, RNE_MAGIC, roundScaled, splitmix32 } from "./format.ts";
import { bfpLayerGeometry, type BfpLayerPlan, NO_BIAS_UNIT } from "./plan.ts";

/** A BFP activation as the kernel reads it (the layout of `quantizeActivations`). */
export interface BfpActivation {
  /** Mantissas `[N, C, ...spatial]` (a Gemm: `[..., K]`, every row a sample). */
  readonly mantissas: Int8Array | Int16Array;
  /** Exponents of the input's blocking. */
  readonly exponents: Int8Array;
  /** The shape of the mantissas. */
  readonly shape: readonly number[];
}

/** What {@linkcode bfpLayer} computes. */
export interface BfpLayerResult {
  /** `acc · 2^u_acc` per output, exact (before the conversion to float32), row-major in {@linkcode shape}. */
  readonly y: Float64Array;
  /** `[N, O, ...outShape]` (a Gemm: `[..., O]`). */
  readonly shape: number[];
  /** Outputs whose accumulator saturated. */
  readonly saturations: number;
  /**
   * With `integers`: the saturated accumulator of every output, an exact integer, and its unit `u_acc`, so
   * `y = accumulators · 2^units` (what an integer datapath computes; golden vectors for hardware).
   */
  readonly integers?: { readonly accumulators: Float64Array; readonly units: Int32Array };
}

/** Scratch buffers reused across calls (the interpreter is synchronous). */
let colScratch = new Float32Array(0);
let col64Scratch = new Float64Array(0);
let sumScratch = new Float32Array(0);

function f32Scratch(n: number): Float32Array {
  if (colScratch.length < n) colScratch = new Float32Array(n);
  return colScratch;
}

function f64Scratch(n: number): Float64Array {
  if (col64Scratch.length < n) col64Scratch = new Float64Array(n);
  return col64Scratch;
}

/**
 * For each kernel tap `t` and output position `p`: the flat spatial index of
 * the input it reads, or -1 in the padding. `[T, M]` row-major.
 */
function tapIndex(g: WindowGeometry): Int32Array {
  const rank = g.kernel.length;
  const taps = shapeSize(g.kernel), positions = shapeSize(g.outShape);
  const table = new Int32Array(taps * positions);
  const tap = new Array<number>(rank).fill(0), pos = new Array<number>(rank).fill(0);
  for (let t = 0; t < taps; t++) {
    unflatten(t, g.kernel, tap);
    for (let p = 0; p < positions; p++) {
      unflatten(p, g.outShape, pos);
      let index = 0;
      for (let d = 0; d < rank; d++) {
        const at = pos[d] * g.strides[d] + tap[d] * g.dilations[d] - g.padsBegin[d];
        if (at < 0 || at >= g.inShape[d]) {
          index = -1;
          break;
        }
        index = index * g.inShape[d] + at;
      }
      table[t * positions + p] = index;
    }
  }
  return table;
}

/** 2^k for the accumulator's units (k within about ±400). */
const UNIT_OFFSET = 600;
const UNIT = Float64Array.from({ length: 2 * UNIT_OFFSET + 1 }, (_, i) => pow2(i - UNIT_OFFSET));

/**
 * Run a lowered layer's plan on one input (the interpreter's kernel, and what
 * the error analysis reads): the exact accumulator values before the
 * conversion to float32, with the number of saturated outputs.
 *
 * @throws {Error} Naming the op when the input does not fit the layer.
 * @example y = 1·2 + 0.5·4 + bias 0.25 through a one-output Gemm
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../graph.ts";
 * import { tensor } from "../tensor.ts";
 * import { bfpLayer } from "./kernel.ts";
 * import { bfpLayerPlan } from "./plan.ts";
 * const g = new Graph();
 * const bfp = { kind: "bfp", mantissa: 8, exponent: 5, block: 0 } as const;
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 2] }));
 * const q = g.addOp(new Op({ name: "q", type: "Quantize", domain: "ai.bfp", operands: [x],
 *   results: [new Value("xm", { elem: bfp, shape: [1, 2] }), new Value("xe")] }));
 * const wm = g.addConstant("wm", tensor("i8", [1, 2], new Int8Array([32, 64])), { elem: bfp, shape: [1, 2] }); // [2, 4]
 * const we = g.addConstant("we", tensor("i8", [1], new Int8Array([2])), { elem: "i8", shape: [1] });
 * const b = g.addConstant("b", tensor("f32", [1], new Float32Array([0.25])), { elem: "f32", shape: [1] });
 * const fc = g.addOp(new Op({ name: "fc", type: "Gemm", domain: "ai.bfp", operands: [...q.results, wm, we, b],
 *   results: [new Value("y")] }));
 * const x8 = { mantissas: new Int8Array([64, 32]), exponents: new Int8Array([0]), shape: [1, 2] }; // [1, 0.5]
 * assert.deepEqual([...bfpLayer(bfpLayerPlan(fc), x8).y], [4.25]);
 * const { integers } = bfpLayer(bfpLayerPlan(fc), x8, { integers: true });
 * assert.deepEqual([integers!.accumulators[0] * 2 ** integers!.units[0]], [4.25]);
 * ```
 */
export function bfpLayer(
  plan: BfpLayerPlan,
  x: BfpActivation,
  options: { readonly integers?: boolean } = {},
): BfpLayerResult {
  const { geometry: g, outShape } = bfpLayerGeometry(plan, x.shape);
  const { format, group, inChannels: c, outChannels: o } = plan;
  const { mantissas: xm, exponents: xe } = x;
  const { mantissas: wm, exponents: we, block } = plan.weights;
  const bias = plan.bias === null ? null : plan.bias.values;
  // A Gemm's rows are its samples (`[..., K]` is `[rows, K]`); a Conv's samples are axis 0.
  const batch = plan.kind === "gemm" ? shapeSize(x.shape.slice(0, -1)) : x.shape[0];
  const L = format.mantissaBits;
  const { min: eMin } = exponentRange(format);
  const cg = c / group, og = o / group;
  const taps = shapeSize(g.kernel), positions = shapeSize(g.outShape), inSize = shapeSize(g.inShape);
  const { guardBits: guard, max: hi, min: lo, bits: accumulatorBits } = plan.accumulator;
  const maxM = maxMantissa(format);
  const rng = format.rounding === "stochastic" ? splitmix32(format.seed) : undefined;
  const table = tapIndex(g);
  const y = new Float64Array(batch * o * positions);
  const integers = options.integers === true
    ? { accumulators: new Float64Array(y.length), units: new Int32Array(y.length) }
    : undefined;
  const acc = new Float64Array(og * positions);
  const unitMax = new Int32Array(og * positions);
  let saturations = 0;
  // Chunks of the reduction axis whose products share one exponent pair per (output channel, position).
  const blocksPerGroup = block === 0 ? 1 : Math.ceil(cg / block);
  const chunkChannels = block === 0 ? cg : block;
  const chunkTaps = block === 0 ? taps : 1;
  const chunks = block === 0 ? 1 : blocksPerGroup * taps;
  const maxRows = chunkChannels * chunkTaps;
  // Exact in float32 when every partial sum is an integer below 2^24; else split the rows or use float64.
  const exactRows = Math.floor((2 ** 24 - 1) / (maxM * maxM));
  const useF32 = exactRows >= 16;
  const rowsPerGemm = useF32 ? Math.min(maxRows, exactRows) : maxRows;
  const exUnit = new Int32Array(positions);
  const products = new Float64Array(og * positions);
  // The weight rows of every (group, chunk) as a GEMM operand, gathered once for the whole batch.
  const weightChunks: FloatArray[] = [];
  for (let gi = 0; gi < group; gi++) {
    for (let ch = 0; ch < chunks; ch++) {
      const j = block === 0 ? 0 : Math.floor(ch / taps), t = block === 0 ? 0 : ch % taps;
      const c0 = j * chunkChannels, c1 = Math.min(cg, c0 + chunkChannels);
      const rows = (c1 - c0) * chunkTaps;
      const chunk = useF32 ? new Float32Array(og * rows) : new Float64Array(og * rows);
      let r = 0;
      for (let ci = c0; ci < c1; ci++) {
        for (let tt = block === 0 ? 0 : t; tt < (block === 0 ? taps : t + 1); tt++, r++) {
          for (let oi = 0; oi < og; oi++) chunk[oi * rows + r] = wm[((gi * og + oi) * cg + ci) * taps + tt];
        }
      }
      weightChunks.push(chunk);
    }
  }
  const biasUnit = plan.bias === null ? new Int32Array(o).fill(NO_BIAS_UNIT) : plan.bias.units;
  for (let n = 0; n < batch; n++) {
    for (let gi = 0; gi < group; gi++) {
      acc.fill(0);
      // Pass 1: the largest block unit of each output, starting from its bias's unit.
      for (let oi = 0; oi < og; oi++) unitMax.fill(biasUnit[gi * og + oi], oi * positions, (oi + 1) * positions);
      for (let ch = 0; ch < chunks; ch++) {
        const j = block === 0 ? 0 : Math.floor(ch / taps), t = block === 0 ? 0 : ch % taps;
        inputUnits(exUnit, n, gi, j, t);
        for (let oi = 0; oi < og; oi++) {
          const ew = weightExponent(gi * og + oi, j, t);
          const row = oi * positions;
          for (let p = 0; p < positions; p++) {
            const u = ew + exUnit[p];
            if (u > unitMax[row + p]) unitMax[row + p] = u;
          }
        }
      }
      // Pass 2: block products, aligned and summed exactly.
      for (let ch = 0; ch < chunks; ch++) {
        const j = block === 0 ? 0 : Math.floor(ch / taps), t = block === 0 ? 0 : ch % taps;
        const c0 = j * chunkChannels, c1 = Math.min(cg, c0 + chunkChannels);
        const rows = (c1 - c0) * chunkTaps;
        const s = blockProducts(n, gi, c0, c1, t, rows, weightChunks[gi * chunks + ch]);
        inputUnits(exUnit, n, gi, j, t);
        for (let oi = 0; oi < og; oi++) {
          const ew = weightExponent(gi * og + oi, j, t);
          const row = oi * positions;
          for (let p = 0; p < positions; p++) {
            const shift = ew + exUnit[p] - unitMax[row + p] + guard;
            let v = s[row + p] * UNIT[UNIT_OFFSET + shift];
            if (shift < 0 && v !== 0) {
              v = format.rounding === "nearest-even"
                ? (v + RNE_MAGIC) - RNE_MAGIC
                : roundScaled(v, format.rounding, rng);
            }
            acc[row + p] += v;
          }
        }
      }
      // Bias, one saturation, output units.
      for (let oi = 0; oi < og; oi++) {
        const b = bias === null ? 0 : bias[gi * og + oi];
        const row = oi * positions;
        const out = (n * o + gi * og + oi) * positions;
        let lastUnit = NaN, biasInt = 0;
        for (let p = 0; p < positions; p++) {
          const unit = unitMax[row + p] - guard;
          if (b !== 0 && unit !== lastUnit) {
            biasInt = alignToExponent(b, 0, unit, format, accumulatorBits, rng).value;
            lastUnit = unit;
          }
          let a = acc[row + p] + biasInt;
          if (a > hi) (a = hi), saturations++;
          else if (a < lo) (a = lo), saturations++;
          y[out + p] = a * UNIT[UNIT_OFFSET + unit];
          if (integers !== undefined) (integers.accumulators[out + p] = a), (integers.units[out + p] = unit);
        }
      }
    }
  }
  return integers === undefined ? { y, shape: outShape, saturations } : { y, shape: outShape, saturations, integers };

  /** Units `ex - (L-2)` of the input block read by chunk (j, t) at each output position. */
  function inputUnits(out: Int32Array, n: number, gi: number, j: number, t: number): void {
    if (block === 0) {
      out.fill(xe[n] - (L - 2));
      return;
    }
    const blocksPerPosition = group * blocksPerGroup;
    const base = (n * blocksPerPosition + gi * blocksPerGroup + j) * inSize;
    for (let p = 0; p < positions; p++) {
      const at = table[t * positions + p];
      out[p] = (at < 0 ? eMin : xe[base + at]) - (L - 2);
    }
  }

  /** Unit `ew - (L-2)` of output channel `oc`'s weight block (j, t). */
  function weightExponent(oc: number, j: number, t: number): number {
    return (block === 0 ? we[oc] : we[(oc * blocksPerGroup + j) * taps + t]) - (L - 2);
  }

  /**
   * `S[oi, p] = Σ_rows wm · xm` over channels c0..c1 of group gi (all taps when
   * block = 0, tap t otherwise), exact, as `[og, positions]`.
   */
  function blockProducts(
    n: number,
    gi: number,
    c0: number,
    c1: number,
    t: number,
    rows: number,
    wChunk: FloatArray,
  ): FloatArray {
    const cols = useF32 ? f32Scratch(rows * positions) : f64Scratch(rows * positions);
    const xBase = (n * c + gi * cg) * inSize;
    let r = 0;
    for (let ci = c0; ci < c1; ci++) {
      for (let tt = block === 0 ? 0 : t; tt < (block === 0 ? taps : t + 1); tt++, r++) {
        const src = xBase + ci * inSize;
        const dst = r * positions;
        for (let p = 0; p < positions; p++) {
          const at = table[tt * positions + p];
          cols[dst + p] = at < 0 ? 0 : xm[src + at];
        }
      }
    }
    const out = products;
    if (!useF32) {
      gemm({ m: og, n: positions, k: rows, a: wChunk, b: cols, c: out });
      return out;
    }
    out.fill(0);
    if (sumScratch.length < og * positions) sumScratch = new Float32Array(og * positions);
    for (let r0 = 0; r0 < rows; r0 += rowsPerGemm) {
      const len = Math.min(rowsPerGemm, rows - r0);
      gemm({
        m: og,
        n: positions,
        k: len,
        a: wChunk,
        aOffset: r0,
        lda: rows,
        b: cols,
        bOffset: r0 * positions,
        c: sumScratch,
      });
      for (let i = 0; i < og * positions; i++) out[i] += sumScratch[i];
    }
    return out;
  }
}
