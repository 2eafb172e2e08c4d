/**
 * Weight rounding that sees the calibration data (GPTQ: Frantar et al.,
 * "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
 * Transformers", ICLR 2023, after Optimal Brain Quantization). A layer's
 * weights are rounded to their BFP grid one input column at a time; each
 * rounding error is fed forward into the columns not yet rounded, weighted by
 * how the calibration inputs correlate, so the layer's output error `‖(W −
 * Q) X‖²` is minimized column by column instead of `‖W − Q‖²` element by
 * element. The grid (each block's shared exponent) is the one nearest rounding
 * gives, so the result is exactly representable in the layer's format and the
 * lowered model stays bit-exact; only which mantissas are stored changes.
 *
 * Where inputs are strongly correlated (a 1x1 convolution after a HardSwish,
 * neighbouring taps of a 3x3 window) this removes most of the output error of
 * nearest rounding: on PaddleOCR's recognizer at 7-bit mantissas, the own
 * output of a 1x1 layer (weights alone converted) goes from 32-34 dB to
 * 45-49 dB SQNR on held-out images.
 * @module
 */
import { type BfpFormat, maxMantissa, roundScaled } from "../../ir/bfp/format.ts";
import { dequantizeWeights, quantizeWeights } from "../../ir/bfp/quantize.ts";
import type { Op } from "../../ir/graph.ts";
import { convGeometry } from "../../ir/ops/nn.ts";
import { gemm } from "../../ir/ops/gemm_kernel.ts";
import type { Tensor } from "../../ir/tensor.ts";
import { cholesky } from "../linalg.ts";

/** Most columns (`Cg·kernel`, or K of a Gemm) a layer may have for the fit: its `K²` Gram matrix and `K³` factorization. */
export const GPTQ_MAX_COLUMNS = 4096;

/** Rows (samples times output positions) sampled per column of the Gram matrix, at least 4,096 in all. */
const ROWS_PER_COLUMN = 8;

/**
 * Fewest rows per column for the fit: with fewer (a squeeze-and-excitation layer sees one row per image) the Gram
 * matrix is nearly singular, and GPTQ would push the rounding error into directions the calibration data happens not
 * to use but other inputs do.
 */
export const GPTQ_MIN_ROWS_PER_COLUMN = 2;

/** Ridge added to the Gram matrix's diagonal, as a fraction of its mean (GPTQ's dampening). */
const DAMPENING = 0.01;

/** The geometry of a layer whose inputs the Gram matrix is taken over. */
export interface GramLayer {
  /** The float Conv, Gemm or MatMul (a Conv's window attributes are read from it). */
  readonly op: Op;
  /** `conv` (input `[N, C, ...spatial]`) or `gemm` (input rows `[..., K]`). */
  readonly kind: "conv" | "gemm";
  /** Weights `[O, Cg, ...kernel]` or `[O, K]`. */
  readonly weightShape: readonly number[];
  /** Channel groups. */
  readonly group: number;
}

/** The columns per group of a layer's weight rows (`Cg·kernel`, or K). */
export function gramColumns(layer: GramLayer): number {
  return layer.weightShape.slice(1).reduce((a, b) => a * b, 1);
}

/**
 * Per channel group, the Gram matrix `Σ x xᵀ` (`K x K`, float64) of the layer's input
 * patches (a Conv's window at each output position, channels then taps, as
 * its weight rows are laid out; zeros in the padding) or input rows (a
 * Gemm/MatMul), over the calibration inputs given chunk by chunk. When there
 * are more than `max(4096, 8·K)` rows, that many are drawn at random (seeded:
 * the same rows every run), so a VGG-16's 224x224 layers cost a few thousand
 * rows, not millions. Null when there are fewer than {@linkcode GPTQ_MIN_ROWS_PER_COLUMN} rows per column.
 *
 * @example The Gram matrix of a Gemm's rows
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { inputGram } from "./gptq.ts";
 * const op = new Op({ name: "fc", type: "Gemm", operands: [], results: [new Value("y")] });
 * const x = float32Tensor([4, 2], [1, 2, 3, 4, 0, 1, 1, 0]);
 * const [h] = inputGram({ op, kind: "gemm", weightShape: [5, 2], group: 1 }, [x])!;
 * assert.deepEqual([...h], [11, 14, 14, 21]);
 * assert.equal(inputGram({ op, kind: "gemm", weightShape: [5, 4], group: 1 }, [x]), null); // 2 rows of 4
 * ```
 */
export function inputGram(layer: GramLayer, chunks: readonly Tensor[]): Float64Array[] | null {
  const k = gramColumns(layer);
  const source = layer.kind === "gemm" ? gemmRows(chunks, k) : convPatches(layer, chunks);
  if (source.count < GPTQ_MIN_ROWS_PER_COLUMN * k) return null;
  const grams = Array.from({ length: layer.group }, () => new Float64Array(k * k));
  const keep = Math.max(4096, ROWS_PER_COLUMN * k) / source.count;
  let state = 0x9e3779b9;
  const draw = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  // Batches of rows multiplied in float32 by the SIMD kernel (each sum over at most 256 rows), added up in float64.
  const batch = 256;
  const rows = Array.from({ length: layer.group }, () => new Float32Array(batch * k));
  const product = k <= 16 ? null : new Float32Array(k * k);
  let filled = 0;
  const flush = (): void => {
    if (filled === 0) return;
    grams.forEach((h, g) => {
      if (product === null) return accumulateSmall(h, rows[g], filled, k);
      gemm({ m: k, n: k, k: filled, a: rows[g], transA: true, b: rows[g], c: product });
      for (let i = 0; i < h.length; i++) h[i] += product[i];
    });
    filled = 0;
  };
  for (let r = 0; r < source.count; r++) {
    if (keep < 1 && draw() >= keep) continue;
    for (let g = 0; g < layer.group; g++) source.row(r, g, rows[g].subarray(filled * k, (filled + 1) * k));
    if (++filled === batch) flush();
  }
  flush();
  return grams;
}

/** `h += Σ rows rowsᵀ` for a few columns, without the GEMM's packing. */
function accumulateSmall(h: Float64Array, rows: Float32Array, count: number, k: number): void {
  for (let r = 0; r < count; r++) {
    const o = r * k;
    for (let a = 0; a < k; a++) {
      const va = rows[o + a];
      if (va === 0) continue;
      for (let b = 0; b < k; b++) h[a * k + b] += va * rows[o + b];
    }
  }
}

/** Rows of a layer's input, one per sample (or output position), readable one group at a time. */
interface RowSource {
  readonly count: number;
  row(r: number, group: number, out: Float32Array): void;
}

/**
 * Rows numbered across chunks of `rowsPer(t)` rows each: `locate(r)` gives the chunk of row r and its index there
 * (cheap when rows are asked for in order).
 */
function chunkRows(chunks: readonly Tensor[], rowsPer: (t: Tensor) => number) {
  const starts: number[] = [];
  let count = 0;
  for (const t of chunks) {
    starts.push(count);
    count += rowsPer(t);
  }
  let chunk = 0;
  return {
    count,
    locate(r: number): [number, number] {
      while (chunk + 1 < chunks.length && r >= starts[chunk + 1]) chunk++;
      while (r < starts[chunk]) chunk--;
      return [chunk, r - starts[chunk]];
    },
  };
}

function gemmRows(chunks: readonly Tensor[], k: number): RowSource {
  const rows = chunkRows(chunks, (t) => t.data.length / k);
  return {
    count: rows.count,
    row(r, _group, out) {
      const [chunk, local] = rows.locate(r);
      const data = chunks[chunk].data as Float32Array, at = local * k;
      for (let j = 0; j < k; j++) out[j] = data[at + j];
    },
  };
}

function convPatches(layer: GramLayer, chunks: readonly Tensor[]): RowSource {
  const shape = chunks[0].shape;
  const g = convGeometry(layer.op, shape, layer.weightShape);
  const spatialIn = g.inShape.reduce((a, b) => a * b, 1);
  const positions = g.outShape.reduce((a, b) => a * b, 1);
  const taps = g.kernel.reduce((a, b) => a * b, 1);
  const cg = layer.weightShape[1], channels = shape[1];
  const rank = g.inShape.length;
  const rows = chunkRows(chunks, (t) => t.shape[0] * positions);
  const pos = new Array<number>(rank), tap = new Array<number>(rank);
  // For the current row: per tap, the input offset within a plane, or -1 in the padding.
  const offsets = new Int32Array(taps);
  let current = -1, chunk = 0, n = 0;
  return {
    count: rows.count,
    row(r, group, out) {
      if (r !== current) {
        current = r;
        let local;
        [chunk, local] = rows.locate(r);
        n = Math.floor(local / positions);
        let p = local - n * positions;
        for (let d = rank - 1; d >= 0; d--) {
          pos[d] = p % g.outShape[d];
          p = Math.floor(p / g.outShape[d]);
        }
        for (let t = 0; t < taps; t++) {
          let rest = t;
          for (let d = rank - 1; d >= 0; d--) {
            tap[d] = rest % g.kernel[d];
            rest = Math.floor(rest / g.kernel[d]);
          }
          let off = 0;
          for (let d = 0; d < rank && off >= 0; d++) {
            const i = pos[d] * g.strides[d] - g.padsBegin[d] + tap[d] * g.dilations[d];
            off = i < 0 || i >= g.inShape[d] ? -1 : off * g.inShape[d] + i;
          }
          offsets[t] = off;
        }
      }
      const data = chunks[chunk].data as Float32Array;
      for (let c = 0; c < cg; c++) {
        const plane = (n * channels + group * cg + c) * spatialIn;
        for (let t = 0; t < taps; t++) out[c * taps + t] = offsets[t] < 0 ? 0 : data[plane + offsets[t]];
      }
    },
  };
}

/**
 * The layer's weights rounded to `format` with `block` (as `quantizeWeights`
 * lays them out) by GPTQ against the Gram matrices of its inputs (one per
 * channel group, from {@linkcode inputGram}): float values on the grid that
 * nearest rounding of `weight` uses, so quantizing the result again is exact.
 * Inputs that never vary (a zero diagonal) keep nearest rounding.
 *
 * @example Two inputs that always agree: the output sees only w0 + w1
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "../../ir/bfp/format.ts";
 * import { gptqRound } from "./gptq.ts";
 * // On a grid of 0.5, nearest rounding makes both 1.5 (sum 3, off by 0.4); GPTQ takes 1.5 and 1 (off by 0.1).
 * const q = gptqRound(Float32Array.of(1.3, 1.3), [1, 2], 1, [Float64Array.of(1, 1, 1, 1)], bfpFormat({ mantissaBits: 3 }), 0);
 * assert.deepEqual([...q], [1.5, 1]);
 * ```
 */
export function gptqRound(
  weight: Float32Array,
  weightShape: readonly number[],
  group: number,
  grams: readonly Float64Array[],
  format: BfpFormat,
  block: number,
): Float32Array {
  const o = weightShape[0], k = weight.length / o, og = o / group;
  // Each element's grid step: its block's exponent, as nearest rounding chooses it.
  const nearest = quantizeWeights(weight, weightShape, format, block);
  const ones = new Int16Array(weight.length).fill(1);
  const step = dequantizeWeights(ones, nearest.exponents, weightShape, format, block);
  const limit = maxMantissa(format);
  const out = new Float32Array(weight.length);
  const error = new Float64Array(k);
  for (let g = 0; g < group; g++) {
    const a = feedback(grams[g], k);
    for (let r = g * og; r < (g + 1) * og; r++) {
      for (let t = 0; t < k; t++) {
        // The weight plus the earlier columns' rounding errors, as much as its input correlates with theirs.
        let shift = 0;
        for (let i = 0; i < t; i++) shift += a[t * k + i] * error[i];
        const v = weight[r * k + t] + shift / a[t * k + t], s = step[r * k + t];
        const q = Math.max(-limit, Math.min(limit, roundScaled(v / s, "nearest-even"))) * s;
        out[r * k + t] = q;
        error[t] = weight[r * k + t] - q;
      }
    }
  }
  return out;
}

/**
 * GPTQ's error feedback from one Cholesky factorization: with `H + λI = V Vᵀ`, V upper triangular, column t of the
 * fit takes `w_t + Σ_{i<t} V[i][t]·(w_i − q_i) / V[t][t]` to be rounded, which is GPTQ's sequential update by the
 * upper Cholesky factor `U = V⁻¹` of `(H + λI)⁻¹`, without forming the inverse. Returns `Vᵀ` (row t: `V[i][t]` for
 * `i <= t`). Dead inputs (zero diagonal) get a unit diagonal and no coupling: nearest rounding, no feedback.
 */
function feedback(gram: Float64Array, k: number): Float64Array {
  const h = Float64Array.from(gram);
  let mean = 0;
  for (let j = 0; j < k; j++) mean += h[j * k + j];
  mean /= k;
  for (let j = 0; j < k; j++) {
    if (h[j * k + j] === 0) {
      for (let t = 0; t < k; t++) h[j * k + t] = h[t * k + j] = 0;
      h[j * k + j] = 1;
    } else h[j * k + j] += DAMPENING * mean;
  }
  // V = J M J with M the (lower) Cholesky factor of the reversed matrix J H J; Vᵀ[t][i] = M[k-1-i][k-1-t].
  const reversed = new Float64Array(k * k);
  for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) reversed[a * k + b] = h[(k - 1 - a) * k + (k - 1 - b)];
  const m = cholesky(reversed, k);
  const vt = new Float64Array(k * k);
  for (let t = 0; t < k; t++) for (let i = 0; i <= t; i++) vt[t * k + i] = m[(k - 1 - i) * k + (k - 1 - t)];
  return vt;
}
