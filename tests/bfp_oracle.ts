/**
 * Independent BFP oracles for the tests: a block-by-block integer dot product
 * written from the definition (`ir/bfp/format.ts` header), block ranges, and
 * the chapter's partition-cost counts, which the kernel tests and the pass
 * tests compare the compiler against. Not part of the library.
 * @module
 */
import { accumulatorRange, type BfpFormat } from "../ir/bfp/format.ts";
import type { BfpBlocking, BfpTensor } from "../ir/bfp/quantize.ts";

/**
 * First element index and element count of block `b` (row-major block index).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "../ir/bfp/format.ts";
 * import { quantizeBfp } from "../ir/bfp/quantize.ts";
 * import { blockRange } from "./bfp_oracle.ts";
 * const q = quantizeBfp(new Float32Array(10), bfpFormat(), { length: 5, block: 2 }, "x");
 * assert.deepEqual(blockRange(q, 2), { start: 4, count: 1 }); // the short last block of row 0
 * assert.deepEqual(blockRange(q, 3), { start: 5, count: 2 });
 * ```
 */
export function blockRange(q: BfpTensor, b: number): { start: number; count: number } {
  if (!Number.isInteger(b) || b < 0 || b >= q.exponents.length) {
    throw new RangeError(`BFP block index must be an integer in [0, ${q.exponents.length}), found ${b}`);
  }
  const row = Math.floor(b / q.blocksPerRow), j = b % q.blocksPerRow;
  const start = row * q.length + j * q.block;
  return { start, count: Math.min(q.block, q.length - j * q.block) };
}

/** An integer accumulator value and the exponent of its unit: the real value is `sum · 2^exponent`. */
export interface BfpDotResult {
  /** The accumulated integer (exact; within the accumulator's range). */
  readonly sum: number;
  /** `ew + ex - 2(L-2)`. */
  readonly exponent: number;
  /** 1 when the exact sum left the accumulator's range and was saturated, else 0. */
  readonly saturations: number;
}

/**
 * Bit-exact integer dot product of block `wBlock` of `w` and block `xBlock` of
 * `x`: `S = Σ m_w,k · m_x,k` summed exactly, then saturated once to the
 * accumulator's range, with exponent `ew + ex - 2(L-2)`. Products are exact (at
 * most 2L-1 bits) and so is the float64 sum (blocks are far shorter than 2^22).
 *
 * @throws {RangeError} When the formats' mantissa widths or the block lengths differ.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "../ir/bfp/format.ts";
 * import { quantizeBfp } from "../ir/bfp/quantize.ts";
 * import { bfpDot } from "./bfp_oracle.ts";
 * const f = bfpFormat();
 * const w = quantizeBfp(new Float32Array([1, 2]), f, { length: 2, block: 0 }, "w"); // e=1, m=[32,64]
 * const x = quantizeBfp(new Float32Array([0.5, 0.5]), f, { length: 2, block: 0 }, "x"); // e=-1, m=[64,64]
 * const y = bfpDot(w, 0, x, 0);
 * assert.deepEqual(y, { sum: 6144, exponent: -12, saturations: 0 }); // 6144 · 2^-12 = 1.5
 * ```
 */
export function bfpDot(
  w: BfpTensor,
  wBlock: number,
  x: BfpTensor,
  xBlock: number,
  accumulatorBits = 32,
): BfpDotResult {
  const L = w.format.mantissaBits;
  if (x.format.mantissaBits !== L) {
    throw new RangeError(`BFP dot product needs equal mantissa widths, found ${L} and ${x.format.mantissaBits}`);
  }
  const wr = blockRange(w, wBlock), xr = blockRange(x, xBlock);
  if (wr.count !== xr.count) {
    throw new RangeError(`BFP dot product needs blocks of equal length, found ${wr.count} and ${xr.count}`);
  }
  const exponent = w.exponents[wBlock] + x.exponents[xBlock] - 2 * (L - 2);
  const wm = w.mantissas, xm = x.mantissas, n = wr.count;
  const { min: lo, max: hi } = accumulatorRange(accumulatorBits);
  let s = 0;
  for (let k = 0; k < n; k++) s += wm[wr.start + k] * xm[xr.start + k]; // |s| <= n · 2^30 < 2^53: exact
  if (s > hi) return { sum: hi, exponent, saturations: 1 };
  if (s < lo) return { sum: lo, exponent, saturations: 1 };
  return { sum: s, exponent, saturations: 0 };
}

// ---------------------------------------------------------------------------
// Partition schemes and their cost.

/**
 * Block partitions of a layer's matrix product `Y[N, M] = W[N, K] · X[K, M]`
 * (N output channels, K = Cin·kh·kw reduction length, M = Hout·Wout output
 * positions per sample; a Gemm has M = 1):
 * - `per-channel` (the chapter's cheap scheme): one weight block per output
 *   channel (a row of W, K elements) and one input block per tensor per sample
 *   (all K·M elements). One exponent add per output; no alignment.
 * - `mx` (Microscaling style): blocks of `block` elements along K for both W's
 *   rows and X's columns. Each output sums ceil(K/block) block products, each
 *   aligned to a common exponent.
 */
export type BfpScheme = "per-channel" | "mx";

/** A layer's matrix-product shape, per sample. */
export interface BfpLayerShape {
  /** Output channels N. */
  readonly outChannels: number;
  /** Reduction length K = Cin·kh·kw (Cin for Gemm/MatMul). */
  readonly reduction: number;
  /** Output positions per sample M = Hout·Wout (1 for Gemm). */
  readonly positions: number;
}

/**
 * The shape of a Conv layer lowered to a matrix product (im2col).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { convLayerShape } from "./bfp_oracle.ts";
 * assert.deepEqual(convLayerShape({ cin: 3, cout: 64, kh: 3, kw: 3, hout: 224, wout: 224, group: 1 }),
 *   { outChannels: 64, reduction: 27, positions: 50176 });
 * ```
 */
export function convLayerShape(
  conv: { cin: number; cout: number; kh: number; kw: number; hout: number; wout: number; group: number },
): BfpLayerShape {
  return {
    outChannels: conv.cout,
    reduction: (conv.cin / conv.group) * conv.kh * conv.kw,
    positions: conv.hout * conv.wout,
  };
}

/**
 * Blocking of the weights `W[N, K]` (rows along K) or of the inputs of one
 * sample given as `X^T[M, K]` (im2col rows, K innermost) under a scheme.
 * For `per-channel` inputs the whole sample is one block (`length = M·K`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { schemeBlocking } from "./bfp_oracle.ts";
 * const layer = { outChannels: 64, reduction: 576, positions: 196 };
 * assert.deepEqual(schemeBlocking("per-channel", "input", layer, 32), { length: 112896, block: 0 });
 * assert.deepEqual(schemeBlocking("mx", "weight", layer, 32), { length: 576, block: 32 });
 * ```
 */
export function schemeBlocking(
  scheme: BfpScheme,
  role: "weight" | "input",
  layer: BfpLayerShape,
  block = 32,
): BfpBlocking {
  checkScheme(scheme, block);
  if (scheme === "mx") return { length: layer.reduction, block };
  return role === "weight"
    ? { length: layer.reduction, block: 0 }
    : { length: layer.reduction * layer.positions, block: 0 };
}

function checkScheme(scheme: BfpScheme, block: number): void {
  if (scheme !== "per-channel" && scheme !== "mx") {
    throw new RangeError(`BFP scheme must be "per-channel" or "mx", found "${scheme}"`);
  }
  if (!Number.isInteger(block) || block < 1) {
    throw new RangeError(`BFP block must be a positive integer, found ${block}`);
  }
}

/** What a layer's BFP partition costs (per sample for the input side). */
export interface BfpPartitionCost {
  /** Weight blocks (formatted once, offline). */
  readonly weightBlocks: number;
  /** Input blocks per sample (formatted at run time). */
  readonly inputBlocks: number;
  /** Block-formatting operations per sample at run time (max search + exponent + shift per input block). */
  readonly runtimeFormattingOps: number;
  /** Block-formatting operations of the whole layer (weights offline + inputs per sample). */
  readonly formattingOps: number;
  /** Exponent storage of the weights, bits (`weightBlocks · E`). */
  readonly weightExponentBits: number;
  /** Exponent storage of one sample's inputs, bits (`inputBlocks · E`). */
  readonly inputExponentBits: number;
  /** Exponent additions per sample (one per block product: `N · M · ceil(K / block)`, or `N · M`). */
  readonly exponentAdds: number;
  /** Partial sums aligned to a common exponent per sample (`N · M · (ceil(K / block) - 1)` for mx, 0 otherwise). */
  readonly alignments: number;
}

/**
 * Count the block-formatting operations and exponent storage of one layer
 * under a scheme (the chapter's cost comparison).
 *
 * @example VGG-16's conv5_1 (512x512x3x3 on 14x14)
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "../ir/bfp/format.ts";
 * import { partitionCost } from "./bfp_oracle.ts";
 * const layer = { outChannels: 512, reduction: 4608, positions: 196 };
 * assert.equal(partitionCost("per-channel", layer, bfpFormat()).weightExponentBits, 512 * 5);
 * assert.equal(partitionCost("mx", layer, bfpFormat(), 32).inputBlocks, 196 * 144);
 * ```
 */
export function partitionCost(
  scheme: BfpScheme,
  layer: BfpLayerShape,
  format: BfpFormat,
  block = 32,
): BfpPartitionCost {
  checkScheme(scheme, block);
  const { outChannels: n, reduction: k, positions: m } = layer;
  for (const [what, v] of [["outChannels", n], ["reduction", k], ["positions", m]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`BFP layer ${what} must be a positive integer, found ${v}`);
  }
  const perK = scheme === "mx" ? Math.ceil(k / block) : 1;
  const weightBlocks = n * perK;
  const inputBlocks = scheme === "mx" ? m * perK : 1;
  return {
    weightBlocks,
    inputBlocks,
    runtimeFormattingOps: inputBlocks,
    formattingOps: weightBlocks + inputBlocks,
    weightExponentBits: weightBlocks * format.exponentBits,
    inputExponentBits: inputBlocks * format.exponentBits,
    exponentAdds: n * m * perK,
    alignments: n * m * (perK - 1),
  };
}
