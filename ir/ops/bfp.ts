/**
 * The BFP-lowered ops (domain `ai.bfp`, version 1) and their bit-exact
 * integer kernels: the golden model the C and FPGA targets reproduce. The
 * numbers are defined once in `ir/bfp.ts` (module header); this file applies
 * them to layers.
 *
 * A BFP tensor is two values: mantissas typed `bfp<mantissa=L, exponent=E,
 * block=B>[shape]` (stored as `i8` for L <= 8, else `i16`) and the shared
 * exponents as `i8` (unbiased, in `[-bias, bias]`). Blocking:
 * - weights `[O, Cg, kh, kw]` of a Conv: `B = 0` one block per output channel
 *   (exponents `[O]`); `B > 0` blocks of B input channels at each tap
 *   (exponents `[O, ceil(Cg/B), kh, kw]`). Gemm weights are rows `[O, K]`:
 *   `[O]` or `[O, ceil(K/B)]`.
 * - activations `[N, C, ...spatial]` from {@linkcode quantizeActivations}:
 *   `B = 0` one block per sample (exponents `[N]`); `B > 0` blocks of B along
 *   the channel axis within each of `group` channel groups, at every spatial
 *   position (exponents `[N, group·ceil(Cg/B), ...spatial]`).
 *
 * Ops:
 * - `Quantize(x) -> (xm, xe)`: attributes `mantissa`, `exponent`, `block`,
 *   `group`, `rounding`, `exponent_rule`, `seed`.
 * - `Conv(xm, xe, wm, we, b?) -> y: f32` with ONNX Conv's window attributes plus
 *   `accumulator` (bits), `rounding`, `seed`.
 * - `Gemm(xm[N, K], xe, wm[O, K], we, b?[O]) -> y: f32[N, O]` (`y = x·wᵀ + b`)
 *   with `accumulator`, `rounding`, `seed`.
 * @module
 */
import {
  accumulatorGuardBits,
  alignToExponent,
  type BfpFormat,
  bfpFormat,
  type BfpRounding,
  exponentRange,
  floorLog2,
  maxMantissa,
  pow2,
  productBits,
  quantizeBfp,
  roundScaled,
  splitmix32,
} from "../bfp.ts";
import type { Op } from "../graph.ts";
import type { InferContext, OpDef } from "../op_def.ts";
import { shapeSize, type Tensor, tensor } from "../tensor.ts";
import type { BfpType, Dim, TensorType } from "../types.ts";
import { isStatic, opError } from "./common.ts";
import type { WindowGeometry } from "./conv_kernels.ts";
import { type FloatArray, gemm } from "./gemm_kernel.ts";
import { convShape, geometryOf } from "./nn.ts";

/** The domain of the lowered ops. */
export const BFP_DOMAIN = "ai.bfp";

/** Storage dtype of BFP mantissas: `i8` up to 8 bits, else `i16`. */
export function bfpStorage(mantissaBits: number): "i8" | "i16" {
  return mantissaBits <= 8 ? "i8" : "i16";
}

/** The element type of a BFP value, or null for any other type. */
export function bfpElement(type: TensorType | null | undefined): BfpType | null {
  const elem = type?.elem;
  return typeof elem === "object" && elem.kind === "bfp" ? elem : null;
}

// ---------------------------------------------------------------------------
// Quantize

/** How an activation tensor `[N, C, ...spatial]` is cut into blocks. */
export interface ActivationBlocking {
  /** Channels per block along axis 1; 0 = one block per sample. */
  readonly block: number;
  /** Channel groups (blocks never straddle a group); default 1. */
  readonly group?: number;
}

/** Shape of the exponents of an activation of `shape` under `blocking`. */
export function activationExponentShape<D extends Dim>(shape: readonly D[], blocking: ActivationBlocking): Dim[] {
  if (blocking.block === 0) return [shape[0]];
  const group = blocking.group ?? 1;
  const c = shape[1];
  const perGroup = typeof c === "number" ? Math.ceil(c / group / blocking.block) : "?";
  return [shape[0], typeof perGroup === "number" ? group * perGroup : "?", ...shape.slice(2)];
}

/**
 * Quantize an activation `[N, C, ...spatial]` to BFP (the `Quantize` op's
 * kernel): `quantizeBfp` of `ir/bfp.ts` per block. For `block > 0` the blocks
 * run along the channel axis, so the tensor is quantized in `[N, spatial,
 * group, Cg]` order (the stochastic stream is drawn in that order).
 *
 * @throws {Error} For NaN/Inf elements (naming `name`) or channels not divisible by `group`.
 * @example One block per sample
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "../bfp.ts";
 * import { quantizeActivations } from "./bfp.ts";
 * const q = quantizeActivations(new Float32Array([1, 3, 0.5, 0.25]), [2, 2], bfpFormat(), { block: 0 }, "x");
 * assert.deepEqual([...q.exponents], [1, -1]);
 * assert.deepEqual([...q.mantissas], [32, 96, 64, 32]);
 * ```
 */
export function quantizeActivations(
  x: Float32Array | Float64Array,
  shape: readonly number[],
  format: BfpFormat,
  blocking: ActivationBlocking,
  name: string,
): { mantissas: Int8Array | Int16Array; exponents: Int8Array; saturated: number } {
  const n = shape[0], c = shape[1] ?? 1;
  const spatial = shapeSize(shape.slice(2));
  if (blocking.block === 0) {
    const q = quantizeBfp(x, format, { length: n === 0 ? 0 : x.length / n, block: 0 }, name);
    return { mantissas: q.mantissas, exponents: Int8Array.from(q.exponents), saturated: q.saturated };
  }
  const group = blocking.group ?? 1;
  if (c % group !== 0) throw new Error(`${c} channels of "${name}" are not divisible into ${group} groups`);
  const cg = c / group;
  // [N, C, S] -> [N, S, C] so that each group's channels are contiguous rows of Cg.
  const t = x instanceof Float32Array ? new Float32Array(x.length) : new Float64Array(x.length);
  for (let i = 0; i < n; i++) {
    const base = i * c * spatial;
    for (let ch = 0; ch < c; ch++) {
      const src = base + ch * spatial;
      for (let s = 0; s < spatial; s++) t[base + s * c + ch] = x[src + s];
    }
  }
  const q = quantizeBfp(t, format, { length: cg, block: blocking.block }, name);
  const mantissas = format.mantissaBits <= 8 ? new Int8Array(x.length) : new Int16Array(x.length);
  for (let i = 0; i < n; i++) {
    const base = i * c * spatial;
    for (let ch = 0; ch < c; ch++) {
      const dst = base + ch * spatial;
      for (let s = 0; s < spatial; s++) mantissas[dst + s] = q.mantissas[base + s * c + ch];
    }
  }
  // Exponents [N, S, G, nb] -> [N, G·nb, S].
  const nb = q.blocksPerRow, blocksPerPosition = group * nb;
  const exponents = new Int8Array(n * blocksPerPosition * spatial);
  for (let i = 0; i < n; i++) {
    for (let s = 0; s < spatial; s++) {
      const src = (i * spatial + s) * blocksPerPosition;
      for (let j = 0; j < blocksPerPosition; j++) {
        exponents[(i * blocksPerPosition + j) * spatial + s] = q.exponents[src + j];
      }
    }
  }
  return { mantissas, exponents, saturated: q.saturated };
}

/** The format a `Quantize` op's attributes describe. */
export function quantizeFormat(op: Op): BfpFormat {
  try {
    return bfpFormat({
      mantissaBits: op.int("mantissa", 8),
      exponentBits: op.int("exponent", 5),
      rounding: op.string("rounding", "nearest-even") as BfpRounding,
      exponentRule: op.string("exponent_rule", "floor") as BfpFormat["exponentRule"],
      seed: op.int("seed", 0),
    });
  } catch (e) {
    throw opError(op, (e as Error).message);
  }
}

/** The activation blocking a `Quantize` op's attributes describe (checked). */
export function quantizeBlocking(op: Op): ActivationBlocking {
  const block = op.int("block", 0), group = op.int("group", 1);
  if (!Number.isInteger(block) || block < 0) throw opError(op, `block must be a non-negative integer, found ${block}`);
  if (!Number.isInteger(group) || group < 1) throw opError(op, `group must be a positive integer, found ${group}`);
  return { block, group };
}

function inferQuantize(op: Op, ctx: InferContext): (TensorType | null)[] {
  const format = quantizeFormat(op);
  const blocking = quantizeBlocking(op);
  const x = ctx.types[0];
  if (x === null || x === undefined) return [null, null];
  if (x.elem !== "f32") throw opError(op, `X must be f32, found ${typeof x.elem === "string" ? x.elem : "bfp"}`);
  const mType: TensorType = {
    elem: { kind: "bfp", mantissa: format.mantissaBits, exponent: format.exponentBits, block: blocking.block },
    shape: x.shape,
  };
  if (x.shape === null) return [mType, { elem: "i8", shape: null }];
  if (x.shape.length < 2) throw opError(op, `X must have rank >= 2 ([N, C, ...]), found rank ${x.shape.length}`);
  const c = x.shape[1];
  if (blocking.block > 0 && typeof c === "number" && c % blocking.group! !== 0) {
    throw opError(op, `${c} channels are not divisible into ${blocking.group} groups`);
  }
  return [mType, { elem: "i8", shape: activationExponentShape(x.shape, blocking) }];
}

function interpretQuantize(op: Op, inputs: readonly (Tensor | null)[]): Tensor[] {
  const x = inputs[0];
  if (x === null || x === undefined || x.dtype !== "f32") throw opError(op, "X must be an f32 tensor");
  const format = quantizeFormat(op);
  const blocking = quantizeBlocking(op);
  const name = op.operand(0)?.name ?? "X";
  const q = quantizeActivations(x.data as Float32Array, x.shape, format, blocking, name);
  return [
    tensor(bfpStorage(format.mantissaBits), x.shape, q.mantissas),
    tensor("i8", activationExponentShape(x.shape, blocking) as number[], q.exponents),
  ];
}

/**
 * Quantize float weights offline: `[O, Cg, ...kernel]` (or `[O, K]`) with one
 * block per output channel (`block = 0`, exponents `[O]`) or blocks of `block`
 * input channels at each tap (exponents `[O, ceil(Cg/block), ...kernel]`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "../bfp.ts";
 * import { quantizeWeights } from "./bfp.ts";
 * const q = quantizeWeights(new Float32Array([1, 2, 0.5, 0.25]), [2, 2], bfpFormat(), 1);
 * assert.deepEqual(q.exponentShape, [2, 2]);
 * assert.deepEqual([...q.exponents], [0, 1, -1, -2]);
 * ```
 */
export function quantizeWeights(
  w: Float32Array,
  shape: readonly number[],
  format: BfpFormat,
  block: number,
  name = "W",
): { mantissas: Int8Array | Int16Array; exponents: Int8Array; exponentShape: number[]; saturated: number } {
  const o = shape[0], cg = shape[1], kernel = shape.slice(2), taps = shapeSize(kernel);
  if (block === 0) {
    const q = quantizeBfp(w, format, { length: cg * taps, block: 0 }, name);
    return {
      mantissas: q.mantissas,
      exponents: Int8Array.from(q.exponents),
      exponentShape: [o],
      saturated: q.saturated,
    };
  }
  // As activations: the output channels play the batch, the taps the spatial positions.
  const q = quantizeActivations(w, shape, format, { block }, name);
  return {
    mantissas: q.mantissas,
    exponents: q.exponents,
    exponentShape: activationExponentShape(shape, { block }) as number[],
    saturated: q.saturated,
  };
}

/** Float values of BFP weights from {@linkcode quantizeWeights}' layout. */
export function dequantizeWeights(
  mantissas: Int8Array | Int16Array,
  exponents: Int8Array,
  shape: readonly number[],
  format: BfpFormat,
  block: number,
): Float32Array {
  return dequantizeActivations({ mantissas, exponents }, shape, format, { block });
}

/** Float values of a BFP activation from {@linkcode quantizeActivations}' layout. */
export function dequantizeActivations(
  q: { mantissas: Int8Array | Int16Array; exponents: Int8Array },
  shape: readonly number[],
  format: BfpFormat,
  blocking: ActivationBlocking,
): Float32Array {
  const n = shape[0], c = shape[1] ?? 1, spatial = shapeSize(shape.slice(2));
  const out = new Float32Array(q.mantissas.length);
  const L = format.mantissaBits;
  if (blocking.block === 0) {
    const per = n === 0 ? 0 : out.length / n;
    for (let i = 0; i < out.length; i++) out[i] = q.mantissas[i] * pow2(q.exponents[Math.floor(i / per)] - (L - 2));
    return out;
  }
  const group = blocking.group ?? 1, cg = c / group, nb = Math.ceil(cg / blocking.block);
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      const g = Math.floor(ch / cg), j = Math.floor((ch % cg) / blocking.block);
      const eBase = (i * group * nb + g * nb + j) * spatial, base = (i * c + ch) * spatial;
      for (let s = 0; s < spatial; s++) out[base + s] = q.mantissas[base + s] * pow2(q.exponents[eBase + s] - (L - 2));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// The layer kernel

/** Operands and sizes of {@linkcode bfpLayer}. */
export interface BfpLayerArgs {
  /** Input mantissas `[N, C, ...inShape]`. */
  readonly xm: Int8Array | Int16Array;
  /** Input exponents (see the module header for the layout). */
  readonly xe: Int8Array;
  /** Weight mantissas `[O, Cg, ...kernel]` (Gemm: `[O, K]`). */
  readonly wm: Int8Array | Int16Array;
  /** Weight exponents. */
  readonly we: Int8Array;
  /** Float bias per output channel, or null. */
  readonly bias: Float32Array | Float64Array | null;
  /** Samples N. */
  readonly batch: number;
  /** Input channels C (Gemm: K). */
  readonly inChannels: number;
  /** Output channels O. */
  readonly outChannels: number;
  /** Channel groups. */
  readonly group: number;
  /** Window geometry; all spatial lists empty for a Gemm. */
  readonly geometry: WindowGeometry;
  /** Number format (mantissa/exponent widths, rounding, seed). */
  readonly format: BfpFormat;
  /** Channels per block; 0 = one block per weight row and per input sample. */
  readonly block: number;
  /** Accumulator width A in bits (8..53). */
  readonly accumulatorBits: number;
}

/** What {@linkcode bfpLayer} computes. */
export interface BfpLayerResult {
  /** `acc · 2^u_acc` per output, exact (before the conversion to float32), `[N, O, ...outShape]`. */
  readonly y: Float64Array;
  /** Outputs whose accumulator saturated. */
  readonly saturations: number;
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
    unravel(t, g.kernel, tap);
    for (let p = 0; p < positions; p++) {
      unravel(p, g.outShape, pos);
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

function unravel(i: number, shape: readonly number[], out: number[]): void {
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
}

/** 2^k for the accumulator's units (k within about ±400). */
const UNIT_OFFSET = 600;
const UNIT = Float64Array.from({ length: 2 * UNIT_OFFSET + 1 }, (_, i) => pow2(i - UNIT_OFFSET));
/** 2^52 + 2^51: adding and subtracting it rounds |v| < 2^51 to an integer, ties to even. */
const RNE_MAGIC = 6755399441055744;

/**
 * The bit-exact integer Conv/Gemm of `ir/bfp.ts`'s "layer accumulation":
 * exact block products (float32 or float64 GEMMs of integer mantissas, exact by
 * construction), each aligned to the output's accumulator unit, the bias
 * aligned with the format's rounding, one saturation to `A` bits. Results are
 * independent of the order of summation.
 *
 * @example A 1x1 "Gemm": y = 1·2 + 0.5·4 + bias 0.25
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "../bfp.ts";
 * import { bfpLayer } from "./bfp.ts";
 * const r = bfpLayer({
 *   xm: new Int8Array([64, 32]), xe: new Int8Array([0]), // x = [1, 0.5]
 *   wm: new Int8Array([32, 64]), we: new Int8Array([2]), // w = [2, 4]
 *   bias: new Float32Array([0.25]), batch: 1, inChannels: 2, outChannels: 1, group: 1,
 *   geometry: { inShape: [], outShape: [], kernel: [], strides: [], dilations: [], padsBegin: [] },
 *   format: bfpFormat(), block: 0, accumulatorBits: 32,
 * });
 * assert.deepEqual([...r.y], [4.25]);
 * ```
 */
export function bfpLayer(args: BfpLayerArgs): BfpLayerResult {
  const { xm, xe, wm, we, bias, batch, inChannels: c, outChannels: o, group, geometry: g, format, block } = args;
  const L = format.mantissaBits;
  const { min: eMin } = exponentRange(format);
  const cg = c / group, og = o / group;
  const taps = shapeSize(g.kernel), positions = shapeSize(g.outShape), inSize = shapeSize(g.inShape);
  const k = cg * taps;
  const guard = accumulatorGuardBits(format, k, args.accumulatorBits);
  const hi = 2 ** (args.accumulatorBits - 1) - 1, lo = -(2 ** (args.accumulatorBits - 1));
  const maxM = maxMantissa(format);
  const rng = format.rounding === "stochastic" ? splitmix32(format.seed) : undefined;
  const table = tapIndex(g);
  const y = new Float64Array(batch * o * positions);
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
  const width = productBits(format, k);
  const biasUnit = Int32Array.from({ length: o }, (_, oc) => {
    const b = bias === null ? 0 : bias[oc];
    return b === 0 || !Number.isFinite(b) ? -0x7fffffff : floorLog2(Math.abs(b)) + 1 - width;
  });
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
            biasInt = alignToExponent(b, 0, unit, format, { accumulatorBits: args.accumulatorBits }, rng).value;
            lastUnit = unit;
          }
          let a = acc[row + p] + biasInt;
          if (a > hi) (a = hi), saturations++;
          else if (a < lo) (a = lo), saturations++;
          y[out + p] = a * UNIT[UNIT_OFFSET + unit];
        }
      }
    }
  }
  return { y, saturations };

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

// ---------------------------------------------------------------------------
// Op definitions

function accumulatorAttr(op: Op): number {
  const bits = op.int("accumulator", 32);
  if (!Number.isInteger(bits) || bits < 8 || bits > 53) {
    throw opError(op, `accumulator must be an integer in [8, 53] bits, found ${bits}`);
  }
  return bits;
}

/** The layer format from the operand types, checked for agreement. */
function layerFormat(op: Op, xm: TensorType | null, wm: TensorType | null): { format: BfpFormat; block: number } {
  const x = bfpElement(xm), w = bfpElement(wm);
  if (xm !== null && x === null) throw opError(op, "XM must be a bfp tensor (the mantissas from ai.bfp.Quantize)");
  if (wm !== null && w === null) throw opError(op, "WM must be a bfp tensor (BFP weight mantissas)");
  if (x !== null && w !== null && (x.mantissa !== w.mantissa || x.exponent !== w.exponent || x.block !== w.block)) {
    const text = (t: BfpType): string => `bfp<mantissa=${t.mantissa}, exponent=${t.exponent}, block=${t.block}>`;
    throw opError(op, `XM is ${text(x)} but WM is ${text(w)}: both operands need one format`);
  }
  const t = x ?? w;
  const rounding = op.string("rounding", "nearest-even") as BfpRounding;
  try {
    return {
      format: bfpFormat({
        mantissaBits: t?.mantissa ?? 8,
        exponentBits: t?.exponent ?? 5,
        rounding,
        seed: op.int("seed", 0),
      }),
      block: t?.block ?? 0,
    };
  } catch (e) {
    throw opError(op, (e as Error).message);
  }
}

function inferBfpConv(op: Op, ctx: InferContext): (TensorType | null)[] {
  const [xm, , wm, , b] = ctx.types;
  layerFormat(op, xm ?? null, wm ?? null);
  accumulatorAttr(op);
  if (!xm || !wm || xm.shape === null || wm.shape === null) return [{ elem: "f32", shape: null }];
  return [{ elem: "f32", shape: convShape(op, xm.shape, wm.shape, b?.shape ?? null).out }];
}

/**
 * Run a lowered `ai.bfp.Conv` or `ai.bfp.Gemm` on operand tensors and return
 * the exact accumulator values (before the conversion to float32) with the
 * saturation count: what the interpreter runs, and what error analysis reads.
 *
 * @throws {Error} Naming the op when operands are missing or inconsistent.
 */
export function bfpLayerOf(op: Op, inputs: readonly (Tensor | null)[]): BfpLayerResult & { shape: number[] } {
  const [xm, xe, wm, we] = inputs;
  const b = inputs[4] ?? null;
  if (!xm || !xe || !wm || !we) throw opError(op, "needs XM, XE, WM and WE");
  const { format, block } = layerFormat(op, opType(op, 0), opType(op, 2));
  const common = {
    xm: xm.data as Int8Array,
    xe: xe.data as Int8Array,
    wm: wm.data as Int8Array,
    we: we.data as Int8Array,
    bias: b === null ? null : (b.data as Float32Array),
    format,
    block,
    accumulatorBits: accumulatorAttr(op),
  };
  if (op.type === "Gemm") {
    const [n, k] = xm.shape, o = wm.shape[0];
    if (xm.shape.length !== 2 || wm.shape[1] !== k) {
      throw opError(op, `XM [${xm.shape}] and WM [${wm.shape}] do not make a matrix product`);
    }
    const r = bfpLayer({ ...common, batch: n, inChannels: k, outChannels: o, group: 1, geometry: NO_WINDOW });
    return { ...r, shape: [n, o] };
  }
  const { out, attrs, window } = convShape(op, xm.shape, wm.shape, b?.shape ?? null);
  const r = bfpLayer({
    ...common,
    batch: xm.shape[0],
    inChannels: xm.shape[1],
    outChannels: wm.shape[0],
    group: op.int("group", 1),
    geometry: geometryOf(xm.shape.slice(2), window!, attrs!),
  });
  return { ...r, shape: out as number[] };
}

/** A Gemm's "window": no spatial axes. */
const NO_WINDOW: WindowGeometry = { inShape: [], outShape: [], kernel: [], strides: [], dilations: [], padsBegin: [] };

function interpretBfpLayer(op: Op, inputs: readonly (Tensor | null)[]): Tensor[] {
  const r = bfpLayerOf(op, inputs);
  return [tensor("f32", r.shape, Float32Array.from(r.y))];
}

function inferBfpGemm(op: Op, ctx: InferContext): (TensorType | null)[] {
  const [xm, , wm, , b] = ctx.types;
  layerFormat(op, xm ?? null, wm ?? null);
  accumulatorAttr(op);
  if (!xm || !wm || xm.shape === null || wm.shape === null) return [{ elem: "f32", shape: null }];
  if (xm.shape.length !== 2 || wm.shape.length !== 2) {
    throw opError(op, `XM and WM must be matrices, found ranks ${xm.shape.length} and ${wm.shape.length}`);
  }
  const [k1, k2] = [xm.shape[1], wm.shape[1]];
  if (typeof k1 === "number" && typeof k2 === "number" && k1 !== k2) {
    throw opError(op, `XM has ${k1} columns but WM rows have ${k2}`);
  }
  if (b && b.shape !== null && (b.shape.length !== 1 || (isStatic(b.shape) && b.shape[0] !== wm.shape[0]))) {
    throw opError(op, `B must have shape [${wm.shape[0]}], found [${b.shape.join(",")}]`);
  }
  return [{ elem: "f32", shape: [xm.shape[0], wm.shape[0]] }];
}

function opType(op: Op, i: number): TensorType | null {
  const t = op.operand(i)?.type;
  return t !== null && t !== undefined && "elem" in t ? t : null;
}

function macsBfp(_op: Op, operands: readonly (TensorType | null)[], results: readonly (TensorType | null)[]): number {
  const w = operands[2]?.shape, y = results[0]?.shape;
  if (!w || !y || !isStatic(w)) return 0;
  let perOutput = shapeSize(w.slice(1));
  let outputs = 1;
  for (const d of y) outputs *= typeof d === "number" ? d : 1;
  if (y.length === 2) perOutput = w[1]; // Gemm: one MAC per weight per sample
  return outputs * perOutput;
}

/**
 * The `ai.bfp` op definitions: `Quantize`, `Conv`, `Gemm` (module header).
 *
 * @example Quantize an activation in the interpreter
 * ```ts
 * import assert from "node:assert/strict";
 * import { attr } from "../attributes.ts";
 * import { Graph, Op, Value } from "../graph.ts";
 * import { interpret } from "../interpreter.ts";
 * import { Module } from "../module.ts";
 * import { float32Tensor } from "../tensor.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 2] }));
 * const q = g.addOp(new Op({
 *   name: "q", type: "Quantize", domain: "ai.bfp", operands: [x],
 *   results: [new Value("xm"), new Value("xe")], attributes: [["mantissa", attr.int(4)]],
 * }));
 * g.outputs.push(...q.results);
 * const out = interpret(new Module(g, [["", 13], ["ai.bfp", 1]]), { x: float32Tensor([1, 2], [0.3, -1]) });
 * assert.deepEqual([...out.xm.data, ...out.xe.data], [1, -4, 0]); // steps of 2^-2
 * ```
 */
export const bfpOps: OpDef[] = [
  { type: "Quantize", domain: BFP_DOMAIN, infer: inferQuantize, interpret: interpretQuantize },
  { type: "Conv", domain: BFP_DOMAIN, infer: inferBfpConv, interpret: interpretBfpLayer, macs: macsBfp },
  { type: "Gemm", domain: BFP_DOMAIN, infer: inferBfpGemm, interpret: interpretBfpLayer, macs: macsBfp },
];
