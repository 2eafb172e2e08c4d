/**
 * Block floating point (BFP) number formats and rounding: the one definition
 * of the numbers that the `bfp` and `fixed` passes, the interpreter's golden
 * model and every target reproduce bit for bit. Decisions and sources: `shared/docs/formats.md` (BFP section)
 * and the OCP Microscaling (MX) v1.0 spec §6.3 (blocks of 32, MXINT8).
 *
 * Exact formulas. `L` = mantissa bits including the sign (2..16), `E` =
 * exponent field bits (2..8), `bias = 2^(E-1) - 1`, `maxM = 2^(L-1) - 1`.
 *
 * - Value of element i of a block: `x_i ≈ m_i · 2^(e - (L-2))`, integers
 *   `|m_i| <= maxM` (symmetric: `-2^(L-1)` is never produced).
 * - Shared exponent (`exponentRule: "floor"`, the default and the MX rule):
 *   `e = floor(log2(max_i |x_i|))`, computed exactly from the float's exponent
 *   bits (not `Math.log2`, which rounds near powers of two). Then the scaled
 *   block maximum lies in `[2^(L-2), 2^(L-1))`, so it can round past `maxM`
 *   and is clamped (MX behaviour, at most one value of the block's magnitude).
 *   `"never-clamp"`: `e = floor(log2 max) + 1` when `max / 2^(e-(L-2)) > maxM`;
 *   the scaled maximum is then below `2^(L-2) <= maxM`, so in every rounding
 *   mode no element is clamped (at the cost of one bit of resolution).
 * - Exponent range: stored exponents (unbiased, as in `exponents` below) lie in
 *   `[-bias, bias]`, i.e. biased codes `0 .. 2^E - 2`; the all-ones code is
 *   reserved (E8M0 uses it for NaN). With E = 5: `[-15, 15]`; with E = 8
 *   `[-127, 127]` (MX's E8M0 range). A block whose `e` is below `-bias` keeps
 *   `-bias` and its mantissas are rounded at that step, so values under half a
 *   step flush to zero in nearest-even (gradual underflow, counted in
 *   `underflowBlocks`). A block whose `e` is above `bias` gets `bias` and every
 *   mantissa past `maxM` saturates to `±maxM` (counted in `overflowBlocks` and
 *   `saturated`). An all-zero block gets `e = -bias` and zero mantissas.
 * - Mantissas: `m_i = clamp(round(x_i · 2^-(e-(L-2))), -maxM, maxM)`; the
 *   product is exact in float64, so the only rounding is `round`, with one mode
 *   for every right shift: `nearest-even` (default; ties to even, as ONNX
 *   `Round`/`QuantizeLinear` and MX), `toward-zero`, `toward-positive`,
 *   `toward-negative`, `stochastic` (round up with probability equal to the
 *   dropped fraction, compared against a 32-bit uniform draw from a seeded
 *   splitmix32 stream; one draw per element in memory order).
 * - Dequantize: `m · 2^(e-(L-2))`, exact in float32 for L <= 16, E <= 8.
 * - Integer dot product of a weight block (`ew`) and an input block (`ex`):
 *   `S = Σ m_w,k · m_x,k`, summed exactly (guard bits), then saturated once to
 *   the two's-complement range of an `A`-bit accumulator `[-2^(A-1), 2^(A-1)-1]`;
 *   the result is `S · 2^(ew + ex - 2(L-2))`. Products need `2L-1` bits.
 *   Saturating once (not after every addition) makes the result independent of
 *   the summation order, so every target may use its own loop order.
 * - Layer accumulation (a lowered Conv/Gemm output `y` over a reduction of
 *   length `K` split into block products `S_j`, each exact with unit
 *   `2^u_j`, `u_j = ew_j + ex_j - 2(L-2)`, and a float bias `b`): with
 *   `W = bitLength(K · maxM²)` (the worst-case product sum's width) the bias
 *   gets the unit `u_b = floorLog2(|b|) + 1 - W` (none for `b = 0`), and the
 *   accumulator's unit is `u_acc = max(max_j u_j, u_b) - g` with
 *   `g = max(0, A - 2 - W)` guard bits ({@linkcode accumulatorGuardBits}): the
 *   products and the bias each fit in `A - 2` magnitude bits, so their sum
 *   cannot overflow (it saturates only when `A < W + 2`). A bias far larger
 *   than the products (a dead channel's BN shift) thus costs precision, not
 *   saturation.
 *   Each `S_j · 2^(u_j - u_acc)` is exact when `u_j >= u_acc` and otherwise
 *   rounded with the format's rounding; the bias is aligned to `u_acc` with
 *   {@linkcode alignToExponent}; the terms are summed exactly and saturated
 *   once to `A` bits; `y = float32(acc · 2^u_acc)` (nearest-even: the output
 *   conversion). Taps in the zero padding count as all-zero blocks (`e = -bias`).
 *   With one block per weight row and per input sample every term is exact.
 * - Bias alignment to an accumulator exponent `eacc`:
 *   `b_int = round(b · 2^-eacc)` with the format's rounding mode, saturated to
 *   the accumulator width (for an integer bias `b_m · 2^eb` the same formula is
 *   a left shift or a rounding right shift by `eacc - eb`).
 * - NaN and ±Inf have no BFP form: quantization rejects them, naming the
 *   tensor and the element.
 * - Fixed point is the same arithmetic with the exponent of a tensor chosen
 *   at compile time (`staticExponent`): one block per sample whose exponent
 *   is not computed from the data; elements past `maxM` saturate (counted).
 * - Partitions of `Y[N,M] = W[N,K]·X[K,M]`: `per-channel` (a block per weight
 *   row, a block per input tensor per sample; the textbook's scheme, Song et
 *   al. AAAI 2018) and `mx` (blocks of 32 along K for both; with L = 8, E = 8
 *   this is OCP MXINT8).
 * @module
 */
/** How each right shift (scaled value to integer) rounds. */
export type BfpRounding = "nearest-even" | "toward-zero" | "toward-positive" | "toward-negative" | "stochastic";

/** How the shared exponent is chosen from the block maximum (see the module header). */
export type BfpExponentRule = "floor" | "never-clamp";

/** The rounding modes, in a fixed order. */
export const BFP_ROUNDINGS: readonly BfpRounding[] = [
  "nearest-even",
  "toward-zero",
  "toward-positive",
  "toward-negative",
  "stochastic",
];

/** A complete BFP number format: widths plus the rounding and overflow policies. */
export interface BfpFormat {
  /** Mantissa width `L` in bits, sign included (2..16; default 8). */
  readonly mantissaBits: number;
  /** Shared exponent field width `E` in bits (2..8; default 5, bias 15). */
  readonly exponentBits: number;
  /** Rounding of every right shift (default `nearest-even`). */
  readonly rounding: BfpRounding;
  /** Exponent choice (default `floor`: the MX rule, the block maximum may be clamped). */
  readonly exponentRule: BfpExponentRule;
  /** Seed of the stochastic-rounding stream (default 0); the same seed gives the same result. */
  readonly seed: number;
}

/**
 * Build and validate a format; omitted fields take the defaults (e5m8,
 * nearest-even, floor rule, seed 0).
 *
 * @throws {RangeError} When a width is outside its range, not an integer, or a
 *   rounding mode or exponent rule is unknown.
 * @example The default and an MXINT8-like format
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat, exponentRange } from "./format.ts";
 * assert.equal(bfpFormat().mantissaBits, 8);
 * assert.deepEqual(exponentRange(bfpFormat({ exponentBits: 8 })), { bias: 127, min: -127, max: 127 });
 * ```
 */
export function bfpFormat(options: Partial<BfpFormat> = {}): BfpFormat {
  const format: BfpFormat = {
    mantissaBits: options.mantissaBits ?? 8,
    exponentBits: options.exponentBits ?? 5,
    rounding: options.rounding ?? "nearest-even",
    exponentRule: options.exponentRule ?? "floor",
    seed: options.seed ?? 0,
  };
  checkInteger("mantissaBits", format.mantissaBits, 2, 16);
  checkInteger("exponentBits", format.exponentBits, 2, 8);
  if (!BFP_ROUNDINGS.includes(format.rounding)) {
    throw new RangeError(`BFP rounding must be one of ${BFP_ROUNDINGS.join(", ")}, found "${format.rounding}"`);
  }
  if (format.exponentRule !== "floor" && format.exponentRule !== "never-clamp") {
    throw new RangeError(`BFP exponentRule must be "floor" or "never-clamp", found "${format.exponentRule}"`);
  }
  if (!Number.isInteger(format.seed)) throw new RangeError(`BFP seed must be an integer, found ${format.seed}`);
  return format;
}

function checkInteger(what: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`BFP ${what} must be an integer in [${min}, ${max}], found ${value}`);
  }
}

/**
 * The exponent field's bias and the range of stored (unbiased) exponents:
 * `bias = 2^(E-1) - 1`, `min = -bias`, `max = bias`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat, exponentRange } from "./format.ts";
 * assert.deepEqual(exponentRange(bfpFormat()), { bias: 15, min: -15, max: 15 });
 * ```
 */
export function exponentRange(format: BfpFormat): { bias: number; min: number; max: number } {
  const bias = (1 << (format.exponentBits - 1)) - 1;
  return { bias, min: -bias, max: bias };
}

/** The largest mantissa magnitude, `2^(L-1) - 1`. */
export function maxMantissa(format: BfpFormat): number {
  return (1 << (format.mantissaBits - 1)) - 1;
}

// ---------------------------------------------------------------------------
// Exact float helpers (one shared scratch view: no allocation per call).

const scratch = new Float64Array(1);
const scratchWords = new Uint32Array(scratch.buffer);
/** Index of the high 32-bit word of a float64 (1 on little-endian hosts). */
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;
const TWO_POW_64 = 18446744073709551616;
/** 2^52 + 2^51: adding and subtracting it rounds |s| < 2^51 to an integer, ties to even (IEEE default mode). */
export const RNE_MAGIC = 6755399441055744;
const TWO_POW_NEG_32 = 1 / 4294967296;
/** 2^k for k in [-160, 160] at index k + 160: the per-block scale without touching the scratch view. */
export const POW2_OFFSET = 160;
/** The table of {@linkcode POW2_OFFSET}. */
export const POW2 = Float64Array.from({ length: 2 * POW2_OFFSET + 1 }, (_, i) => pow2(i - POW2_OFFSET));

/**
 * `floor(log2(a))` for a finite `a > 0`, exact: the float64 exponent field
 * (subnormals are first scaled by 2^64, which is exact).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { floorLog2 } from "./format.ts";
 * assert.equal(floorLog2(8), 3);
 * assert.equal(floorLog2(8 - 2 ** -50), 2); // Math.log2 rounds this to 3
 * assert.equal(floorLog2(Number.MIN_VALUE), -1074);
 * ```
 */
export function floorLog2(a: number): number {
  scratch[0] = a;
  const biased = (scratchWords[HI] >>> 20) & 0x7ff;
  if (biased !== 0) return biased - 1023;
  scratch[0] = a * TWO_POW_64;
  return ((scratchWords[HI] >>> 20) & 0x7ff) - 1023 - 64;
}

/** Exactly `2^n` for an integer `n` in [-1022, 1023] (built from the bits). */
export function pow2(n: number): number {
  scratchWords[HI] = (n + 1023) << 20;
  scratchWords[1 - HI] = 0;
  return scratch[0];
}

/**
 * A seeded 32-bit generator (splitmix32): `next()` returns an unsigned 32-bit
 * integer. The stochastic rounding mode draws from it.
 */
export interface BfpRng {
  /** The next 32-bit unsigned draw. */
  next(): number;
}

/**
 * splitmix32 (the 32-bit variant of Steele et al.'s SplitMix, with the
 * `murmur3` finalizer constants): same seed, same stream.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { splitmix32 } from "./format.ts";
 * const a = splitmix32(7), b = splitmix32(7);
 * assert.equal(a.next(), b.next());
 * ```
 */
export function splitmix32(seed: number): BfpRng {
  let state = seed | 0;
  return {
    next(): number {
      state = (state + 0x9e3779b9) | 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    },
  };
}

/**
 * Round an exactly scaled value to an integer with one of the modes. `s` may
 * be any finite float64; the result is an integer-valued number (not clamped).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { roundScaled } from "./format.ts";
 * assert.equal(roundScaled(2.5, "nearest-even"), 2);
 * assert.equal(roundScaled(-2.5, "toward-zero"), -2);
 * assert.equal(roundScaled(-2.5, "toward-negative"), -3);
 * ```
 */
export function roundScaled(s: number, mode: BfpRounding, rng?: BfpRng): number {
  if (mode === "stochastic") {
    if (rng === undefined) throw new Error("stochastic BFP rounding needs a random stream (BfpRng)");
    const u = rng.next() * TWO_POW_NEG_32; // drawn even for exact values: one draw per rounding, always
    const r = Math.floor(s);
    return u < s - r ? r + 1 : r; // s - r is exact below 2^52 and 0 above
  }
  if (Math.abs(s) >= 4503599627370496) return s; // >= 2^52: already an integer
  switch (mode) {
    case "nearest-even": {
      const r = Math.floor(s);
      const d = s - r; // exact below 2^52
      return d > 0.5 || (d === 0.5 && r % 2 !== 0) ? r + 1 : r;
    }
    case "toward-zero":
      return Math.trunc(s);
    case "toward-positive":
      return Math.ceil(s);
    case "toward-negative":
      return Math.floor(s);
  }
}

// ---------------------------------------------------------------------------
// Storage and the accumulator.

/** Storage dtype of BFP mantissas: `i8` up to 8 bits, else `i16`. */
export function bfpStorage(mantissaBits: number): "i8" | "i16" {
  return mantissaBits <= 8 ? "i8" : "i16";
}

/** A typed array for `n` mantissas of `format`: Int8Array for L <= 8, else Int16Array. */
export function mantissaArray(format: BfpFormat, n: number): Int8Array | Int16Array {
  return format.mantissaBits <= 8 ? new Int8Array(n) : new Int16Array(n);
}

/**
 * Accumulator widths, in bits: the accumulator is a float64 holding integers,
 * exact up to 2^53; 53 bits cover `2L - 1 + log2 K` for every layer up to
 * K = 2^22 at L = 16.
 */
export const ACCUMULATOR_BITS: { readonly min: number; readonly max: number } = { min: 8, max: 53 };

/**
 * The two's-complement range of an `A`-bit accumulator, `[-2^(A-1), 2^(A-1) - 1]`.
 *
 * @throws {RangeError} When `A` is outside {@linkcode ACCUMULATOR_BITS}.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { accumulatorRange } from "./format.ts";
 * assert.deepEqual(accumulatorRange(16), { min: -32768, max: 32767 });
 * ```
 */
export function accumulatorRange(bits: number): { min: number; max: number } {
  checkInteger("accumulatorBits", bits, ACCUMULATOR_BITS.min, ACCUMULATOR_BITS.max);
  return { min: -(2 ** (bits - 1)), max: 2 ** (bits - 1) - 1 };
}

/** `W = bitLength(K · maxM²)`: the width of the worst-case sum of `K` mantissa products. */
export function productBits(format: BfpFormat, reduction: number): number {
  const maxM = maxMantissa(format);
  return floorLog2(Math.max(1, reduction) * maxM * maxM) + 1;
}

/**
 * Guard bits of a layer's accumulator: `g = max(0, A - 2 - bitLength(K · maxM²))`,
 * the left shift that still lets the worst-case sum of `K` products, and a bias
 * of the same width, fit in `A - 1` magnitude bits. Block products are aligned
 * to `u_acc = max(max_j u_j, u_b) - g`, so blocks with smaller exponents keep
 * `g` more bits before rounding (module header).
 *
 * @example e5m8 with a 32-bit accumulator over K = 576 (3x3x64)
 * ```ts
 * import assert from "node:assert/strict";
 * import { accumulatorGuardBits, bfpFormat } from "./format.ts";
 * assert.equal(accumulatorGuardBits(bfpFormat(), 576, 32), 6); // 576 · 127² < 2^24: W = 24
 * assert.equal(accumulatorGuardBits(bfpFormat(), 576, 16), 0); // may saturate
 * ```
 */
export function accumulatorGuardBits(format: BfpFormat, reduction: number, accumulatorBits: number): number {
  accumulatorRange(accumulatorBits);
  return Math.max(0, accumulatorBits - 2 - productBits(format, reduction));
}

/**
 * Align a value `v · 2^valueExponent` to the unit `2^targetExponent` of an
 * accumulator: `round(v · 2^(valueExponent - targetExponent))` with the
 * format's rounding mode, saturated to the accumulator width. For a float bias
 * pass `valueExponent = 0`; for an integer bias mantissa pass its exponent
 * (then this is a left shift, or a rounding right shift). The scaling is exact.
 *
 * @param rng Stream for stochastic rounding (default: a fresh stream from the format's seed).
 * @throws {Error} When `v` is not finite.
 * @example Bias 0.3 at the accumulator exponent -12
 * ```ts
 * import assert from "node:assert/strict";
 * import { alignToExponent, bfpFormat } from "./format.ts";
 * assert.deepEqual(alignToExponent(0.3, 0, -12, bfpFormat(), 32), { value: 1229, saturated: false }); // 1228.8
 * ```
 */
export function alignToExponent(
  v: number,
  valueExponent: number,
  targetExponent: number,
  format: BfpFormat,
  accumulatorBits = 32,
  rng?: BfpRng,
): { value: number; saturated: boolean } {
  const { min: lo, max: hi } = accumulatorRange(accumulatorBits);
  if (!Number.isFinite(v)) throw new Error(`BFP bias alignment: value ${v} is not finite`);
  let scaled = 0;
  if (v !== 0) {
    const shift = valueExponent - targetExponent;
    const resultLog2 = floorLog2(Math.abs(v)) + shift;
    if (resultLog2 > 1000) scaled = v > 0 ? Infinity : -Infinity;
    else if (resultLog2 < -60) scaled = v > 0 ? Number.MIN_VALUE : -Number.MIN_VALUE; // |.| < 2^-59: sign is all that matters
    else {
      // Power-of-two steps toward a result in [2^-60, 2^1001): every intermediate is normal or scaled up, so exact.
      scaled = v;
      let s = shift;
      for (; s > 1000; s -= 1000) scaled *= pow2(1000);
      for (; s < -1000; s += 1000) scaled *= pow2(-1000);
      scaled *= pow2(s);
    }
  }
  if (scaled === Infinity || scaled > hi) return { value: hi, saturated: true };
  if (scaled === -Infinity || scaled < lo) return { value: lo, saturated: true };
  const stream = format.rounding === "stochastic" ? (rng ?? splitmix32(format.seed)) : undefined;
  const r = roundScaled(scaled, format.rounding, stream);
  if (r > hi) return { value: hi, saturated: true };
  if (r < lo) return { value: lo, saturated: true };
  return { value: r, saturated: false };
}
