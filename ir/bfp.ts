/**
 * Block floating point (BFP) numerics: the one definition of the numbers that
 * the `bfp` pass, the interpreter's golden model and every target reproduce
 * bit for bit. Decisions and sources: `shared/docs/formats.md` (BFP section)
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
 * - Partitions of `Y[N,M] = W[N,K]·X[K,M]`: `per-channel` (a block per weight
 *   row, a block per input tensor per sample; the textbook's scheme, Song et
 *   al. AAAI 2018) and `mx` (blocks of 32 along K for both; with L = 8, E = 8
 *   this is OCP MXINT8). {@linkcode partitionCost} counts what each costs.
 * @module
 */
import type { BfpType } from "./types.ts";

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
 * import { bfpFormat, exponentRange } from "./bfp.ts";
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

/**
 * The format of an IR {@linkcode BfpType} (`mantissa`, `exponent`) with the
 * policies the type does not record (defaults as in {@linkcode bfpFormat}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormatOf } from "./bfp.ts";
 * const f = bfpFormatOf({ kind: "bfp", mantissa: 6, exponent: 8, block: 32 }, { rounding: "toward-zero" });
 * assert.deepEqual([f.mantissaBits, f.exponentBits, f.rounding], [6, 8, "toward-zero"]);
 * ```
 */
export function bfpFormatOf(
  type: BfpType,
  policy: Partial<Pick<BfpFormat, "rounding" | "exponentRule" | "seed">> = {},
): BfpFormat {
  return bfpFormat({ ...policy, mantissaBits: type.mantissa, exponentBits: type.exponent });
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
 * import { bfpFormat, exponentRange } from "./bfp.ts";
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
const RNE_MAGIC = 6755399441055744;
const TWO_POW_NEG_32 = 1 / 4294967296;
/** 2^k for k in [-160, 160] at index k + 160: the per-block scale without touching the scratch view. */
const POW2_OFFSET = 160;
const POW2 = Float64Array.from({ length: 2 * POW2_OFFSET + 1 }, (_, i) => pow2(i - POW2_OFFSET));
const f32Scratch = new Float32Array(1);
const f32Bits = new Int32Array(f32Scratch.buffer);

/**
 * `floor(log2(a))` for a finite `a > 0`, exact: the float64 exponent field
 * (subnormals are first scaled by 2^64, which is exact).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { floorLog2 } from "./bfp.ts";
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
 * import { splitmix32 } from "./bfp.ts";
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
 * import { roundScaled } from "./bfp.ts";
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
// Blocks and quantization.

/**
 * How a flat array is cut into blocks: it is a row-major matrix of rows of
 * `length` elements (the reduction axis innermost and contiguous); each row is
 * cut into blocks of `block` consecutive elements, `0` meaning one block per
 * row. The last block of a row is shorter when `block` does not divide
 * `length` (MX zero-pads it, which changes neither exponent nor mantissas).
 */
export interface BfpBlocking {
  /** Elements per row (the reduction axis). */
  readonly length: number;
  /** Elements per block along the row; 0 = the whole row. */
  readonly block: number;
}

/** A quantized tensor: exponents per block and mantissas per element, with what happened. */
export interface BfpTensor {
  /** The format it was quantized with. */
  readonly format: BfpFormat;
  /** Rows of `length` elements. */
  readonly rows: number;
  /** Elements per row. */
  readonly length: number;
  /** Elements per full block (`length` when blocking is per row). */
  readonly block: number;
  /** Blocks per row: `ceil(length / block)`. */
  readonly blocksPerRow: number;
  /** Unbiased shared exponents in `[-bias, bias]`, `[rows, blocksPerRow]` row-major (biased code = e + bias). */
  readonly exponents: Int16Array;
  /** Mantissas in `[-maxM, maxM]`, same order as the input; Int8Array when L <= 8, else Int16Array. */
  readonly mantissas: Int8Array | Int16Array;
  /** Elements whose rounded mantissa exceeded `maxM` and were clamped (floor-rule clamps and overflow). */
  readonly saturated: number;
  /** Blocks whose exponent exceeded the field's maximum and was saturated to it. */
  readonly overflowBlocks: number;
  /** Nonzero blocks whose exponent was below the field's minimum and was raised to it (mantissas flush). */
  readonly underflowBlocks: number;
}

/** Mantissa storage for a format: Int8Array for L <= 8, Int16Array otherwise. */
function mantissaArray(format: BfpFormat, n: number): Int8Array | Int16Array {
  return format.mantissaBits <= 8 ? new Int8Array(n) : new Int16Array(n);
}

/**
 * Quantize values to BFP blocks (formulas in the module header).
 *
 * @param values The tensor, flat, row-major; rows of `blocking.length` elements.
 * @param format From {@linkcode bfpFormat}.
 * @param blocking How rows are cut into blocks.
 * @param name The tensor's name, quoted in errors.
 * @throws {RangeError} When the length is not a multiple of the row length or the blocking is invalid.
 * @throws {Error} `BFP quantization of tensor "name": element i is NaN` (or `Infinity`).
 * @example Per-row blocks of an 8-bit mantissa
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat, dequantizeBfp, quantizeBfp } from "./bfp.ts";
 * const q = quantizeBfp(new Float32Array([1, -0.5, 0.25, 3]), bfpFormat(), { length: 4, block: 0 }, "w");
 * assert.deepEqual([...q.exponents], [1]); // floor(log2 3)
 * assert.deepEqual([...q.mantissas], [32, -16, 8, 96]); // step 2^(1-6)
 * assert.deepEqual([...dequantizeBfp(q)], [1, -0.5, 0.25, 3]);
 * ```
 */
export function quantizeBfp(
  values: Float32Array | Float64Array,
  format: BfpFormat,
  blocking: BfpBlocking,
  name: string,
): BfpTensor {
  const { length } = blocking;
  checkBlocking(blocking, values.length, name);
  const block = blocking.block === 0 ? length : Math.min(blocking.block, length);
  const rows = length === 0 ? 0 : values.length / length;
  const blocksPerRow = length === 0 ? 0 : Math.ceil(length / block);
  const exponents = new Int16Array(rows * blocksPerRow);
  const mantissas = mantissaArray(format, values.length);
  const L = format.mantissaBits;
  const maxM = maxMantissa(format);
  const { min: eMin, max: eMax } = exponentRange(format);
  const neverClamp = format.exponentRule === "never-clamp";
  const fastNearestEven = format.rounding === "nearest-even";
  const rng = format.rounding === "stochastic" ? splitmix32(format.seed) : undefined;
  const bits = values instanceof Float32Array
    ? new Int32Array(values.buffer, values.byteOffset, values.length)
    : undefined;
  let saturated = 0, overflowBlocks = 0, underflowBlocks = 0;
  for (let row = 0, b = 0; row < rows; row++) {
    const rowStart = row * length;
    for (let j = 0; j < blocksPerRow; j++, b++) {
      const start = rowStart + j * block;
      const end = Math.min(start + block, rowStart + length);
      let amax = 0, floorLog2Max = 0;
      if (bits !== undefined) {
        // float32: the magnitude's bit pattern orders like the magnitude; >= 0x7f800000 is Inf or NaN.
        let maxBits = 0;
        for (let i = start; i < end; i++) {
          const a = bits[i] & 0x7fffffff;
          if (a > maxBits) maxBits = a;
        }
        if (maxBits >= 0x7f800000) amax = Infinity;
        else if (maxBits !== 0) {
          // floor(log2) from the exponent field; a subnormal's from its leading one (2^-149 · bits).
          floorLog2Max = maxBits >= 0x800000 ? (maxBits >>> 23) - 127 : 31 - Math.clz32(maxBits) - 149;
          f32Bits[0] = maxBits;
          amax = f32Scratch[0];
        }
      } else {
        for (let i = start; i < end; i++) {
          const a = Math.abs(values[i]);
          if (a > amax) amax = a;
          else if (a !== a) throw nonFinite(name, i, values[i]);
        }
        if (amax !== 0 && amax !== Infinity) floorLog2Max = floorLog2(amax);
      }
      if (amax === Infinity) {
        const i = indexOfNonFinite(values, start, end);
        throw nonFinite(name, i, values[i]);
      }
      let e = eMin;
      let overflow = false;
      if (amax !== 0) {
        e = floorLog2Max;
        // Outside [eMin - 1, eMax] the range clamp below decides anyway (and pow2's argument stays in range).
        if (neverClamp && e >= eMin - 1 && e <= eMax && amax * pow2(L - 2 - e) > maxM) e++;
        if (e < eMin) {
          e = eMin;
          underflowBlocks++;
        } else if (e > eMax) {
          e = eMax;
          overflow = true;
          overflowBlocks++;
        }
      }
      exponents[b] = e;
      const scale = POW2[POW2_OFFSET + L - 2 - e]; // exact: e - (L-2) in [-141, 127]
      if (fastNearestEven && !overflow) {
        // |x·scale| < 2^(L-1) here (e >= floor(log2 amax)), so the magic-number rounding applies.
        for (let i = start; i < end; i++) {
          let m = (values[i] * scale + RNE_MAGIC) - RNE_MAGIC;
          if (m > maxM) (m = maxM), saturated++;
          else if (m < -maxM) (m = -maxM), saturated++;
          mantissas[i] = m;
        }
      } else {
        for (let i = start; i < end; i++) {
          let m = roundScaled(values[i] * scale, format.rounding, rng);
          if (m > maxM) (m = maxM), saturated++;
          else if (m < -maxM) (m = -maxM), saturated++;
          mantissas[i] = m;
        }
      }
    }
  }
  return {
    format,
    rows,
    length,
    block,
    blocksPerRow,
    exponents,
    mantissas,
    saturated,
    overflowBlocks,
    underflowBlocks,
  };
}

function checkBlocking(blocking: BfpBlocking, total: number, name: string): void {
  const { length, block } = blocking;
  if (!Number.isInteger(length) || length < 0 || !Number.isInteger(block) || block < 0) {
    throw new RangeError(
      `BFP blocking of tensor "${name}": length and block must be non-negative integers, found length ${length}, block ${block}`,
    );
  }
  if (length === 0 ? total !== 0 : total % length !== 0) {
    throw new RangeError(`BFP blocking of tensor "${name}": ${total} elements are not whole rows of ${length}`);
  }
}

function nonFinite(name: string, index: number, value: number): Error {
  return new Error(
    `BFP quantization of tensor "${name}": element ${index} is ${value} (only finite values have a BFP form)`,
  );
}

function indexOfNonFinite(values: Float32Array | Float64Array, start: number, end: number): number {
  for (let i = start; i < end; i++) if (!Number.isFinite(values[i])) return i;
  return start;
}

/**
 * Dequantize: `m · 2^(e-(L-2))` per element, exact in float32.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat, dequantizeBfp, quantizeBfp } from "./bfp.ts";
 * const q = quantizeBfp(new Float64Array([0.1, 0.2]), bfpFormat({ mantissaBits: 4 }), { length: 2, block: 0 }, "x");
 * assert.deepEqual([...dequantizeBfp(q)], [0.09375, 0.1875]); // steps of 2^(-3-2)
 * ```
 */
export function dequantizeBfp(q: BfpTensor): Float32Array {
  const out = new Float32Array(q.mantissas.length);
  const L = q.format.mantissaBits;
  for (let row = 0, b = 0; row < q.rows; row++) {
    const rowStart = row * q.length;
    for (let j = 0; j < q.blocksPerRow; j++, b++) {
      const start = rowStart + j * q.block;
      const end = Math.min(start + q.block, rowStart + q.length);
      const step = pow2(q.exponents[b] - (L - 2));
      for (let i = start; i < end; i++) out[i] = q.mantissas[i] * step;
    }
  }
  return out;
}

/**
 * First element index and element count of block `b` (row-major block index).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat, blockRange, quantizeBfp } from "./bfp.ts";
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

// ---------------------------------------------------------------------------
// Integer arithmetic.

/** Options of the integer kernels. */
export interface BfpAccumulatorOptions {
  /**
   * Two's-complement accumulator width in bits, 8..53 (default 32). The
   * accumulator is a float64 holding integers, exact up to 2^53; 53 bits cover
   * `2L - 1 + log2 K` for every layer up to K = 2^22 at L = 16.
   */
  readonly accumulatorBits?: number;
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

function accumulatorBits(options: BfpAccumulatorOptions | undefined): number {
  const bits = options?.accumulatorBits ?? 32;
  checkInteger("accumulatorBits", bits, 8, 53);
  return bits;
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
 * import { accumulatorGuardBits, bfpFormat } from "./bfp.ts";
 * assert.equal(accumulatorGuardBits(bfpFormat(), 576, 32), 6); // 576 · 127² < 2^24: W = 24
 * assert.equal(accumulatorGuardBits(bfpFormat(), 576, 16), 0); // may saturate
 * ```
 */
export function accumulatorGuardBits(format: BfpFormat, reduction: number, accumulatorBits: number): number {
  checkInteger("accumulatorBits", accumulatorBits, 8, 53);
  return Math.max(0, accumulatorBits - 2 - productBits(format, reduction));
}

/** `W = bitLength(K · maxM²)`: the width of the worst-case sum of `K` mantissa products. */
export function productBits(format: BfpFormat, reduction: number): number {
  const maxM = maxMantissa(format);
  return floorLog2(Math.max(1, reduction) * maxM * maxM) + 1;
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
 * import { bfpDot, bfpFormat, quantizeBfp } from "./bfp.ts";
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
  options?: BfpAccumulatorOptions,
): BfpDotResult {
  const bits = accumulatorBits(options);
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
  const hi = 2 ** (bits - 1) - 1, lo = -(2 ** (bits - 1));
  let s = 0;
  for (let k = 0; k < n; k++) s += wm[wr.start + k] * xm[xr.start + k]; // |s| <= n · 2^30 < 2^53: exact
  if (s > hi) return { sum: hi, exponent, saturations: 1 };
  if (s < lo) return { sum: lo, exponent, saturations: 1 };
  return { sum: s, exponent, saturations: 0 };
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
 * import { alignToExponent, bfpFormat } from "./bfp.ts";
 * assert.deepEqual(alignToExponent(0.3, 0, -12, bfpFormat()), { value: 1229, saturated: false }); // 1228.8
 * ```
 */
export function alignToExponent(
  v: number,
  valueExponent: number,
  targetExponent: number,
  format: BfpFormat,
  options?: BfpAccumulatorOptions,
  rng?: BfpRng,
): { value: number; saturated: boolean } {
  const bits = accumulatorBits(options);
  if (!Number.isFinite(v)) throw new Error(`BFP bias alignment: value ${v} is not finite`);
  const hi = 2 ** (bits - 1) - 1, lo = -(2 ** (bits - 1));
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
 * import { convLayerShape } from "./bfp.ts";
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
 * import { schemeBlocking } from "./bfp.ts";
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
 * import { bfpFormat, partitionCost } from "./bfp.ts";
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
