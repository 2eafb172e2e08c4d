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
import { as2d, unflatten, type WindowGeometry } from "../ops/conv_kernels.ts";
import {
  float32GemmKernel,
  type FloatArray,
  gemm,
  gemmIm2colF32,
  im2colF32,
  type Im2colSource,
} from "../ops/gemm_kernel.ts";
import { gemm64 } from "../ops/wasm_gemm64.ts";
import { shapeSize } from "../tensor.ts";
import { alignToExponent, exponentRange, maxMantissa, pow2, RNE_MAGIC, roundScaled, splitmix32 } from "./format.ts";
import { bfpLayerGeometry, type BfpLayerPlan, NO_BIAS_UNIT } from "./plan.ts";
import { sampleExponentIndex } from "./quantize.ts";

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
let sumScratch = new Float32Array(0);

function f32Scratch(n: number): Float32Array {
  if (colScratch.length < n) colScratch = new Float32Array(n);
  return colScratch;
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
  const { exponents: we, block } = plan.weights;
  const bias = plan.bias === null ? null : plan.bias.values;
  // A Gemm's rows are its samples (`[..., K]` is `[rows, K]`): the loops below see them as the output positions of one
  // sample, so each chunk of the reduction is one GEMM over all rows. A Conv's samples are axis 0.
  const isGemm = plan.kind === "gemm";
  const batch = isGemm ? 1 : x.shape[0];
  const positions = isGemm ? shapeSize(x.shape.slice(0, -1)) : shapeSize(g.outShape);
  const L = format.mantissaBits;
  const { min: eMin } = exponentRange(format);
  const cg = c / group, og = o / group;
  const taps = shapeSize(g.kernel), inSize = shapeSize(g.inShape);
  // Output (sample n, channel oc, position p) is y[yStart(n, oc) + p * yStride]: `[N, O, positions]`, or `[rows, O]`.
  const yStride = isGemm ? o : 1;
  const yStart = (n: number, oc: number): number => isGemm ? oc : (n * o + oc) * positions;
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
  const useF32 = exactRows >= 16; // else float64 GEMMs (of float32 operands, exact either way)
  const rowsPerGemm = useF32 ? Math.min(maxRows, exactRows) : maxRows;
  const exUnit = new Int32Array(positions);
  let columnsOf = -1; // the sample and group whose im2col matrix colScratch holds
  // A 2-D geometry (1-D as a unit height) whose im2col matrix WebAssembly makes; null: gathered in JavaScript.
  const g2 = as2d(g);
  const planar = !isGemm && g2.inShape.length === 2 && float32GemmKernel() === "wasm-simd" ? g2 : null;
  const products = new Float64Array(og * positions);
  // A Conv with one exponent per sample and per weight row: each (sample, group)'s products are one integer GEMM,
  // made by the WebAssembly im2col/GEMM kernels (null where they do not apply: then the general path below).
  const dense = block === 0 && !isGemm ? denseProducts(plan, x, g, exactRows) : null;
  const weightChunks = dense === null ? weightChunksOf(plan.weights, group, taps) : [];
  const biasUnit = plan.bias === null ? new Int32Array(o).fill(NO_BIAS_UNIT) : plan.bias.units;
  const nearest = format.rounding === "nearest-even";
  const aligned = new Map<number, number>(); // unit -> the channel's bias aligned to it
  for (let n = 0; n < batch; n++) {
    for (let gi = 0; gi < group; gi++) {
      if (dense !== null && rng === undefined) {
        denseOutputs(n, gi, dense(n, gi));
        continue;
      }
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
        const s = dense !== null ? dense(n, gi) : blockProducts(n, gi, c0, t, rows, weightChunks[gi * chunks + ch]);
        inputUnits(exUnit, n, gi, j, t);
        for (let oi = 0; oi < og; oi++) {
          const ew = weightExponent(gi * og + oi, j, t) + guard;
          const row = oi * positions;
          for (let p = 0; p < positions; p++) {
            const product = s[row + p];
            if (product === 0) continue; // adds nothing, rounds nothing
            const shift = ew + exUnit[p] - unitMax[row + p];
            let v = product * UNIT[UNIT_OFFSET + shift];
            if (shift < 0) v = nearest ? (v + RNE_MAGIC) - RNE_MAGIC : roundScaled(v, format.rounding, rng);
            acc[row + p] += v;
          }
        }
      }
      // Bias, one saturation, output units.
      for (let oi = 0; oi < og; oi++) {
        const b = bias === null ? 0 : bias[gi * og + oi];
        const row = oi * positions;
        const out = yStart(n, gi * og + oi);
        let lastUnit = NaN, biasInt = 0;
        aligned.clear();
        for (let p = 0; p < positions; p++) {
          const unit = unitMax[row + p] - guard;
          if (b !== 0 && unit !== lastUnit) {
            // Without random draws the aligned bias depends on the unit alone: aligned once per unit and channel.
            const known = rng === undefined ? aligned.get(unit) : undefined;
            biasInt = known ?? alignToExponent(b, 0, unit, format, accumulatorBits, rng).value;
            if (known === undefined && rng === undefined) aligned.set(unit, biasInt);
            lastUnit = unit;
          }
          let a = acc[row + p] + biasInt;
          if (a > hi) (a = hi), saturations++;
          else if (a < lo) (a = lo), saturations++;
          const at = out + p * yStride;
          y[at] = a * UNIT[UNIT_OFFSET + unit];
          if (integers !== undefined) (integers.accumulators[at] = a), (integers.units[at] = unit);
        }
      }
    }
  }
  return integers === undefined ? { y, shape: outShape, saturations } : { y, shape: outShape, saturations, integers };

  /**
   * The rule for one sample and group when every output of a channel has the same units (one input exponent per
   * sample, one weight exponent per row) and the rounding draws no random numbers: the two passes and the bias step
   * above in one sweep per output channel, with the same arithmetic.
   */
  function denseOutputs(n: number, gi: number, s: Float64Array): void {
    const xUnit = xe[sampleExponentIndex(plan.input.blocking, n, gi)] - (L - 2);
    for (let oi = 0; oi < og; oi++) {
      const oc = gi * og + oi;
      const u = we[oc] - (L - 2) + xUnit;
      const top = Math.max(u, biasUnit[oc]);
      const shift = u - top + guard, unit = top - guard;
      const scale = UNIT[UNIT_OFFSET + shift], outScale = UNIT[UNIT_OFFSET + unit];
      const b = bias === null ? 0 : bias[oc];
      const biasInt = b === 0 ? 0 : alignToExponent(b, 0, unit, format, accumulatorBits).value;
      const row = oi * positions, out = (n * o + oc) * positions;
      for (let p = 0; p < positions; p++) {
        let v = s[row + p] * scale;
        if (shift < 0 && v !== 0) v = nearest ? (v + RNE_MAGIC) - RNE_MAGIC : roundScaled(v, format.rounding);
        let a = (0 + v) + biasInt; // 0 + v: an accumulator starts at +0, as in the general path
        if (a > hi) (a = hi), saturations++;
        else if (a < lo) (a = lo), saturations++;
        y[out + p] = a * outScale;
        if (integers !== undefined) (integers.accumulators[out + p] = a), (integers.units[out + p] = unit);
      }
    }
  }

  /** Units `ex - (L-2)` of the input block read by chunk (j, t) at each output position. */
  function inputUnits(out: Int32Array, n: number, gi: number, j: number, t: number): void {
    if (isGemm) {
      for (let p = 0; p < positions; p++) out[p] = xe[p * blocksPerGroup + j] - (L - 2);
      return;
    }
    if (block === 0) {
      out.fill(xe[sampleExponentIndex(plan.input.blocking, n, gi)] - (L - 2));
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
   * The im2col matrix of sample `n`, group `gi` as float32 (exact: mantissas are below 2^15), `[cg · taps,
   * positions]` with row `ci · taps + t`, made once per sample and group (by WebAssembly where it applies).
   */
  function columns(n: number, gi: number): Float32Array {
    if (columnsOf === n * group + gi) return colScratch;
    columnsOf = n * group + gi;
    if (isGemm) {
      const rows = f32Scratch(positions * c);
      rows.set(xm.subarray(0, positions * c));
      return rows;
    }
    const cols = f32Scratch(cg * taps * positions);
    const xBase = (n * c + gi * cg) * inSize;
    if (planar !== null) {
      const image = imageOf(cg * inSize);
      image.set(xm.subarray(xBase, xBase + cg * inSize));
      im2colF32({ ...planar, x: image, xOffset: 0, channels: cg, p0: 0 }, positions, cols, 0);
      return cols;
    }
    for (let r = 0; r < cg * taps; r++) {
      const src = xBase + Math.floor(r / taps) * inSize, tap = (r % taps) * positions, dst = r * positions;
      for (let p = 0; p < positions; p++) {
        const at = table[tap + p];
        cols[dst + p] = at < 0 ? 0 : xm[src + at];
      }
    }
    return cols;
  }

  /**
   * `S[oi, p] = Σ_rows wm · xm` over channels c0..c1 of group gi (all taps when
   * block = 0, tap t otherwise), exact, as `[og, positions]`: the chunk's rows of
   * the im2col matrix are evenly spaced (every `taps`-th row from `c0 · taps + t`).
   */
  function blockProducts(
    n: number,
    gi: number,
    c0: number,
    t: number,
    rows: number,
    wChunk: FloatArray,
  ): FloatArray {
    const b = columns(n, gi);
    // A Gemm's B is its rows transposed (`[rows, K]`, the chunk from column c0).
    const transB = isGemm;
    const bOffset = isGemm ? c0 : block === 0 ? 0 : (c0 * taps + t) * positions;
    const ldb = isGemm ? c : block === 0 ? positions : taps * positions;
    const step = isGemm ? 1 : ldb; // between the chunk's rows of B
    const out = products;
    if (!useF32) {
      gemm({ m: og, n: positions, k: rows, a: wChunk, b, bOffset, ldb, transB, c: out });
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
        b,
        bOffset: bOffset + r0 * step,
        ldb,
        transB,
        c: sumScratch,
      });
      for (let i = 0; i < og * positions; i++) out[i] += sumScratch[i];
    }
    return out;
  }
}

/**
 * Float32 copies of weight mantissas (exact), per mantissa array, made on a layer's first run and kept while its
 * weights live: a stable GEMM operand (whose packing the GEMM keeps), not converted again for every batch.
 */
const floatWeights = new WeakMap<Int8Array | Int16Array, Float32Array>();
const floatChunks = new WeakMap<Int8Array | Int16Array, Float32Array[]>();

function weightsAsFloat32(wm: Int8Array | Int16Array): Float32Array {
  let f = floatWeights.get(wm);
  if (f === undefined) floatWeights.set(wm, f = new Float32Array(wm));
  return f;
}

/**
 * The weight rows of every (group, chunk) as a GEMM operand `[og, rows]`, in the order the layer's loops visit
 * chunks: for `block = 0` one chunk per group (the group's rows as stored), else chunk `(j, t)` holds the weights of
 * channel block `j` at tap `t`.
 */
function weightChunksOf(weights: BfpLayerPlan["weights"], group: number, taps: number): Float32Array[] {
  const { mantissas: wm, block } = weights;
  const known = floatChunks.get(wm);
  if (known !== undefined) return known;
  const o = weights.shape[0], og = o / group, cg = wm.length / (o * taps);
  const chunks: Float32Array[] = [];
  if (block === 0) {
    const whole = weightsAsFloat32(wm);
    for (let gi = 0; gi < group; gi++) chunks.push(whole.subarray(gi * og * cg * taps, (gi + 1) * og * cg * taps));
  } else {
    const perGroup = Math.ceil(cg / block) * taps;
    const rowsOf = (j: number): number => Math.min(cg, (j + 1) * block) - j * block;
    for (let gi = 0; gi < group; gi++) {
      for (let ch = 0; ch < perGroup; ch++) chunks.push(new Float32Array(og * rowsOf(Math.floor(ch / taps))));
      // One pass over the stored weights (OIHW): weight (oi, ci, t) is row ci - c0 of chunk (ci / block, t).
      for (let oi = 0, at = gi * og * cg * taps; oi < og; oi++) {
        for (let ci = 0; ci < cg; ci++) {
          const j = Math.floor(ci / block), r = ci - j * block, first = gi * perGroup + j * taps, rows = rowsOf(j);
          for (let t = 0; t < taps; t++, at++) chunks[first + t][oi * rows + r] = wm[at];
        }
      }
    }
  }
  floatChunks.set(wm, chunks);
  return chunks;
}

/** Shortest run of the reduction worth a float32 GEMM of its own; wider mantissas take one float64 GEMM instead. */
const MIN_FLOAT32_RUN = 64;
/** Columns of the im2col matrix made per float64 GEMM call (bounds the scratch). */
const COLUMN_BUDGET = 1 << 20;
let imageScratch = new Float32Array(0);

/** The float32 staging of one sample's group of input channels (at least `n` floats), reused across calls. */
function imageOf(n: number): Float32Array {
  if (imageScratch.length < n) imageScratch = new Float32Array(n);
  return imageScratch;
}
let columnScratch = new Float32Array(0);
let productScratch = new Float64Array(0);
let partialScratch = new Float32Array(0);

/**
 * The block products of a layer with one exponent per sample and per weight row (`block = 0`): for sample `n` and
 * group `gi`, `S[oi, p] = Σ wm · xm` over all of the group's channels and taps as `[og, positions]`, exact — float32
 * GEMMs over runs of whole channels of at most `exactRows` reduction rows (each partial sum an integer below 2^24)
 * added in float64, or one float64 GEMM when such runs would be short (mantissas of 10 bits and more); B, the im2col
 * matrix, made by WebAssembly. Null where the kernels do not apply (no WebAssembly SIMD, convolutions of more than
 * two spatial axes): the caller then takes the general path.
 */
function denseProducts(
  plan: BfpLayerPlan,
  x: BfpActivation,
  geometry: WindowGeometry,
  exactRows: number,
): ((n: number, gi: number) => Float64Array) | null {
  const { mantissas: xm } = x;
  const wm = plan.weights.mantissas;
  const { group, inChannels: c, outChannels: o } = plan;
  const cg = c / group, og = o / group;
  if (float32GemmKernel() !== "wasm-simd") return null;
  const g = as2d(geometry);
  if (g.inShape.length !== 2) return null;
  const taps = g.kernel[0] * g.kernel[1], positions = g.outShape[0] * g.outShape[1];
  const inSize = g.inShape[0] * g.inShape[1];
  const rows = cg * taps;
  const w = weightsAsFloat32(wm);
  const perRun = Math.floor(exactRows / taps); // whole channels per float32 GEMM
  if (productScratch.length < og * positions) productScratch = new Float64Array(og * positions);
  const image = imageOf(cg * inSize), s = productScratch.subarray(0, og * positions);
  const source = (channels: number, xOffset: number, p0: number): Im2colSource => ({
    ...g,
    x: image,
    xOffset,
    channels,
    p0,
  });
  return (n, gi) => {
    const xBase = (n * c + gi * cg) * inSize;
    image.set(xm.subarray(xBase, xBase + cg * inSize));
    const aOffset = gi * og * rows;
    if (perRun * taps >= MIN_FLOAT32_RUN) {
      if (partialScratch.length < og * positions) partialScratch = new Float32Array(og * positions);
      const partial = partialScratch;
      for (let c0 = 0; c0 < cg; c0 += perRun) {
        const channels = Math.min(perRun, cg - c0);
        const im2col = source(channels, c0 * inSize, 0);
        const args = { m: og, n: positions, k: channels * taps, a: w, aOffset: aOffset + c0 * taps, lda: rows };
        gemmIm2colF32({ ...args, c: partial, constantA: true, im2col });
        if (c0 === 0) { for (let i = 0; i < s.length; i++) s[i] = partial[i]; }
        else for (let i = 0; i < s.length; i++) s[i] += partial[i];
      }
      return s;
    }
    // Wide mantissas: the im2col matrix in column runs, each multiplied exactly in float64.
    const chunk = Math.max(1, Math.min(positions, Math.floor(COLUMN_BUDGET / rows)));
    if (columnScratch.length < rows * chunk) columnScratch = new Float32Array(rows * chunk);
    for (let p0 = 0; p0 < positions; p0 += chunk) {
      const len = Math.min(chunk, positions - p0);
      im2colF32(source(cg, 0, p0), len, columnScratch, 0);
      gemm64({ m: og, n: len, k: rows, a: w, aOffset, lda: rows, b: columnScratch, c: s, cOffset: p0, ldc: positions });
    }
    return s;
  };
}
