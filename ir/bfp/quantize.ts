/**
 * BFP tensors: quantize and dequantize blocks (formulas in `format.ts`), and
 * the layouts of the two kinds of tensor a lowered layer reads: activations
 * `[N, C, ...spatial]` blocked per sample or along channels, and weights
 * `[O, Cg, ...kernel]` (or `[O, K]`) blocked per output channel or along
 * input channels at each tap.
 * @module
 */
import {
  type BfpFormat,
  exponentRange,
  floorLog2,
  mantissaArray,
  maxMantissa,
  POW2,
  pow2,
  POW2_OFFSET,
  RNE_MAGIC,
  roundScaled,
  splitmix32,
} from "./format.ts";
import { lazyWasm } from "../ops/common.ts";
import { shapeSize } from "../tensor.ts";
import type { Dim } from "../types.ts";

const f32Scratch = new Float32Array(1);
const f32Bits = new Int32Array(f32Scratch.buffer);

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

/**
 * Quantize values to BFP blocks (formulas in the module header).
 *
 * @param values The tensor, flat, row-major; rows of `blocking.length` elements.
 * @param format From {@linkcode bfpFormat}.
 * @param blocking How rows are cut into blocks.
 * @param name The tensor's name, quoted in errors.
 * @param staticExponent Fixed point: every block takes this exponent instead
 *   of one computed from its maximum (elements past `maxM` saturate, counted;
 *   a block whose maximum would need a larger exponent counts as overflowed).
 * @throws {RangeError} When the length is not a multiple of the row length or the blocking is invalid.
 * @throws {Error} `BFP quantization of tensor "name": element i is NaN` (or `Infinity`).
 * @example Per-row blocks of an 8-bit mantissa
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "./format.ts";
 * import { dequantizeBfp, quantizeBfp } from "./quantize.ts";
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
  staticExponent?: number,
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
  const simd = bits !== undefined && mantissas instanceof Int8Array ? simdRounding() : null;
  let saturated = 0, overflowBlocks = 0, underflowBlocks = 0;
  for (let row = 0, b = 0; row < rows; row++) {
    const rowStart = row * length;
    for (let j = 0; j < blocksPerRow; j++, b++) {
      const start = rowStart + j * block;
      const end = Math.min(start + block, rowStart + length);
      let amax = 0, floorLog2Max = 0;
      // A block that fits wasm memory is copied there once for both passes.
      const staged = simd !== null && end - start >= SIMD_MIN_BLOCK && end - start <= SIMD_CHUNK;
      const wide = (end - start) & ~15;
      if (staged) simd.values.set(values.subarray(start, end));
      if (bits !== undefined) {
        // float32: the magnitude's bit pattern orders like the magnitude; >= 0x7f800000 is Inf or NaN.
        const maxBits = staged
          ? Math.max(simd.maxBits(wide), maxMagnitudeBits(bits, start + wide, end))
          : maxMagnitudeBits(bits, start, end);
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
      if (staticExponent !== undefined) {
        e = staticExponent;
        // The fast rounding below needs |x·scale| < 2^(L-1); past that the block saturates anyway.
        overflow = amax !== 0 && floorLog2Max > e;
        if (overflow) overflowBlocks++;
      } else if (amax !== 0) {
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
        if (simd === null || end - start < SIMD_MIN_BLOCK || scale < 2 ** -126 || scale > 2 ** 127) {
          saturated += roundNearestEven(values, start, end, scale, maxM, mantissas);
        } else if (staged) {
          saturated += simd.round(wide, scale, maxM);
          mantissas.set(simd.mantissas.subarray(0, wide), start);
          saturated += roundNearestEven(values, start + wide, end, scale, maxM, mantissas);
        } else {
          saturated += roundNearestEvenSimd(
            simd,
            values as Float32Array,
            start,
            end,
            scale,
            maxM,
            mantissas as Int8Array,
          );
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

/** The largest `bits[i] & 0x7fffffff` over `[start, end)`: float32 magnitudes' patterns order like the magnitudes. */
function maxMagnitudeBits(bits: Int32Array, start: number, end: number): number {
  let max0 = 0, max1 = 0;
  let i = start;
  // Two running maxima halve the dependency chain.
  for (; i + 1 < end; i += 2) {
    const a = bits[i] & 0x7fffffff, b = bits[i + 1] & 0x7fffffff;
    if (a > max0) max0 = a;
    if (b > max1) max1 = b;
  }
  if (i < end && (bits[i] & 0x7fffffff) > max0) max0 = bits[i] & 0x7fffffff;
  return max0 > max1 ? max0 : max1;
}

/**
 * `mantissas[i] = clamp(roundHalfEven(values[i] * scale), ±maxM)` over `[start, end)`
 * for `|values[i] * scale| < 2^51` (the magic-number rounding); returns how many were clamped.
 * Its own function so the JIT specializes it to the storage types of the hot caller.
 */
function roundNearestEven(
  values: Float32Array | Float64Array,
  start: number,
  end: number,
  scale: number,
  maxM: number,
  mantissas: Int8Array | Int16Array,
): number {
  const magic = RNE_MAGIC;
  let clamped = 0;
  for (let i = start; i < end; i++) {
    const m = (values[i] * scale + magic) - magic;
    if (m > maxM || m < -maxM) {
      mantissas[i] = m > maxM ? maxM : -maxM;
      clamped++;
    } else mantissas[i] = m;
  }
  return clamped;
}

/** Blocks shorter than this round in JavaScript (copying into wasm memory would cost more than it saves). */
const SIMD_MIN_BLOCK = 64;
/** Elements per chunk staged in wasm memory: float32 inputs at byte 0, int8 mantissas at byte `4 * SIMD_CHUNK`. */
const SIMD_CHUNK = 16384;

/** The WebAssembly SIMD rounding kernel over its memory (see {@linkcode simdRoundingBytes}). */
interface SimdRounding {
  values: Float32Array;
  mantissas: Int8Array;
  round: (n: number, scale: number, maxM: number) => number;
  maxBits: (n: number) => number;
}

/** The SIMD kernel, compiled on first use; null where WebAssembly SIMD is unavailable. */
const simdRounding = lazyWasm(simdRoundingBytes, (exports): SimdRounding => {
  const memory = exports.memory as WebAssembly.Memory;
  return {
    values: new Float32Array(memory.buffer, 0, SIMD_CHUNK),
    mantissas: new Int8Array(memory.buffer, 4 * SIMD_CHUNK, SIMD_CHUNK),
    round: exports.round as SimdRounding["round"],
    maxBits: exports.maxBits as SimdRounding["maxBits"],
  };
});

/**
 * {@linkcode roundNearestEven} for float32 values and int8 mantissas, 16 at a
 * time in WebAssembly SIMD: the float32 product by a power of two is exact (a
 * product below 2^-126 rounds to 0 either way) and `f32x4.nearest` rounds half
 * to even, so the mantissas are those of the float64 path bit for bit.
 */
function roundNearestEvenSimd(
  simd: SimdRounding,
  values: Float32Array,
  start: number,
  end: number,
  scale: number,
  maxM: number,
  mantissas: Int8Array,
): number {
  let clamped = 0;
  for (let at = start; at < end; at += SIMD_CHUNK) {
    const n = Math.min(SIMD_CHUNK, end - at) & ~15;
    if (n === 0) break;
    simd.values.set(values.subarray(at, at + n));
    clamped += simd.round(n, scale, maxM);
    mantissas.set(simd.mantissas.subarray(0, n), at);
  }
  const tail = start + ((end - start) & ~15);
  return clamped + roundNearestEven(values, tail, end, scale, maxM, mantissas);
}

/**
 * The module: memory of 2 pages (exported as `memory`) and `round(n, scale,
 * maxM) -> clamped`, which for `n` (a positive multiple of 16) float32 values
 * at byte 0 writes `clamp(nearest(x * scale), ±maxM)` as int8 at byte
 * `4 * SIMD_CHUNK` and returns how many were clamped; and `maxBits(n)`, the
 * largest `bits & 0x7fffffff` of the first `n` (a multiple of 16) values.
 */
function simdRoundingBytes(): Uint8Array<ArrayBuffer> {
  const simd = (op: number): number[] => (op < 0x80 ? [0xfd, op] : [0xfd, (op & 0x7f) | 0x80, op >> 7]);
  const get = (i: number): number[] => [0x20, i];
  const set = (i: number): number[] => [0x21, i];
  const LOAD = [0xfd, 0x00, 4]; // v128.load align 16, then the offset
  const STORE_AT_DST = [0xfd, 0x0b, 4, 0x80, 0x80, 0x04]; // v128.store align 16, offset 65536 = 4 * SIMD_CHUNK
  if (4 * SIMD_CHUNK !== 65536) throw new Error("the SIMD rounding kernel's store offset is encoded for 65536");
  // round(n, scale, maxM): params 0-2; locals i (3), count (4), vScale (5), vMax (6), vMin (7), four lanes (8-11).
  const [n, scale, maxM, i, count, vScale, vMax, vMin] = [0, 1, 2, 3, 4, 5, 6, 7];
  const lanes = [8, 9, 10, 11];
  // deno-fmt-ignore
  const round = [
    2, 1, 0x7f, 8, 0x7b, // locals: 1 i32, 8 v128
    ...get(scale), ...simd(0x13), ...set(vScale), // f32x4.splat
    ...get(maxM), ...simd(0x11), ...set(vMax), // i32x4.splat
    0x41, 0, ...get(maxM), 0x6b, ...simd(0x11), ...set(vMin), // splat(0 - maxM)
    0x03, 0x40, // loop over 16 values
    ...lanes.flatMap((lane, k) => [
      ...get(i), 0x41, 2, 0x74, ...LOAD, 16 * k, // v128.load at (i << 2) + 16k
      ...get(vScale), ...simd(0xe6), ...simd(0x6a), ...simd(0xf8), // f32x4.mul, f32x4.nearest, i32x4.trunc_sat_f32x4_s
      ...set(lane),
      ...get(count), ...get(lane), ...get(vMax), ...simd(0x3b), ...simd(0xb1), // count -= (lane > maxM)
      ...get(lane), ...get(vMin), ...simd(0x39), ...simd(0xb1), ...set(count), // count -= (lane < -maxM)
      ...get(lane), ...get(vMax), ...simd(0xb6), ...get(vMin), ...simd(0xb8), ...set(lane), // i32x4.min_s, max_s
    ]),
    ...get(i), // i8x16 of the four lanes, narrowed with signed saturation, stored at dst + i
    ...get(lanes[0]), ...get(lanes[1]), ...simd(0x85), ...get(lanes[2]), ...get(lanes[3]), ...simd(0x85), ...simd(0x65),
    ...STORE_AT_DST,
    ...get(i), 0x41, 16, 0x6a, 0x22, i, ...get(n), 0x49, 0x0d, 0, // i += 16; br_if i < n (unsigned)
    0x0b, // end loop
    ...[0, 1, 2, 3].flatMap((lane) => [...get(count), ...simd(0x1b), lane]), 0x6a, 0x6a, 0x6a, // sum of the lanes
    0x0b,
  ];
  // maxBits(n): param 0; locals i (1), mask (2), max (3), three i32 (4-6) for the lanes.
  // deno-fmt-ignore
  const maxBits = [
    3, 1, 0x7f, 2, 0x7b, 3, 0x7f,
    0x41, 0xff, 0xff, 0xff, 0xff, 0x07, ...simd(0x11), ...set(2), // splat(0x7fffffff)
    0x03, 0x40, // loop over 4 values: max = i32x4.max_s(max, load & mask)
    ...get(3), ...get(1), 0x41, 2, 0x74, ...LOAD, 0, ...get(2), ...simd(0x4e), ...simd(0xb8), ...set(3),
    ...get(1), 0x41, 4, 0x6a, 0x22, 1, ...get(0), 0x49, 0x0d, 0, // i += 4; br_if i < n
    0x0b,
    ...[0, 1, 2, 3].flatMap((lane) => [...get(3), ...simd(0x1b), lane]),
    ...set(1), ...set(6), ...set(4), ...set(5), // lanes 3, 2, 1, 0
    ...get(1), ...get(6), ...get(1), ...get(6), 0x4a, 0x1b, // select(l3, l2, l3 > l2)
    ...get(4), ...get(5), ...get(4), ...get(5), 0x4a, 0x1b, // select(l1, l0, l1 > l0)
    ...set(4), ...set(1), ...get(1), ...get(4), ...get(1), ...get(4), 0x4a, 0x1b,
    0x0b,
  ];
  // Unsigned LEB128 of the sizes here, all below 2^14.
  const uleb = (size: number): number[] => (size < 0x80 ? [size] : [(size & 0x7f) | 0x80, size >> 7]);
  const section = (id: number, bytes: number[]): number[] => [id, ...uleb(bytes.length), ...bytes];
  const exportName = (s: string): number[] => [s.length, ...[...s].map((c) => c.charCodeAt(0))];
  // deno-fmt-ignore
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, [2, 0x60, 3, 0x7f, 0x7d, 0x7f, 1, 0x7f, 0x60, 1, 0x7f, 1, 0x7f]), // (i32, f32, i32) -> i32; (i32) -> i32
    ...section(3, [2, 0, 1]),
    ...section(5, [1, 0x00, 2]), // memory: 2 pages
    ...section(7, [3, ...exportName("memory"), 0x02, 0, ...exportName("round"), 0x00, 0, ...exportName("maxBits"), 0x00, 1]),
    ...section(10, [2, ...uleb(round.length), ...round, ...uleb(maxBits.length), ...maxBits]),
  ]);
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
 * import { bfpFormat } from "./format.ts";
 * import { dequantizeBfp, quantizeBfp } from "./quantize.ts";
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

// ---------------------------------------------------------------------------
// Activations and weights.

/** How an activation tensor `[N, C, ...spatial]` is cut into blocks. */
export interface ActivationBlocking {
  /** Channels per block along the channel axis; 0 = one block per sample (and group). */
  readonly block: number;
  /**
   * Channel groups (blocks never straddle a group); default 1. With `block` 0, one block per sample and group: the
   * group's channels at every position (a depthwise layer's input gets one exponent per channel plane).
   */
  readonly group?: number;
  /**
   * The channel axis (negative counts from the end); default 1, `[N, C, ...spatial]`. The axes before it are the
   * samples, those after it the spatial positions: `-1` makes every row of a `[..., K]` tensor a sample, as a
   * batched MatMul's rows (`[N, T, K]`: N·T samples of K channels).
   */
  readonly axis?: number;
}

/**
 * The channel axis of `blocking` for a tensor of `rank` (at least 2): its `axis` with a negative one counted from the
 * end.
 *
 * @throws {RangeError} When the axis is not in `[-rank, rank)`, or is 0 (the samples come before the channels).
 */
export function channelAxis(rank: number, blocking: ActivationBlocking): number {
  const axis = blocking.axis ?? 1;
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(axis) || a < 1 || a >= rank) {
    throw new RangeError(`channel axis ${axis} does not fit a tensor of rank ${rank} (it needs an axis in 1..rank-1)`);
  }
  return a;
}

/**
 * `shape` as `[samples, C, ...spatial]` around its channel axis: the axes before it multiplied into one (what the
 * quantizer, the kernel and the targets index).
 *
 * @example A channels-last activation `[N, H, W, C]`
 * ```ts
 * import assert from "node:assert/strict";
 * import { activationView } from "./quantize.ts";
 * assert.deepEqual(activationView([2, 7, 7, 96], { block: 0, axis: -1 }), [98, 96]);
 * assert.deepEqual(activationView([2, 96, 7, 7], { block: 0 }), [2, 96, 7, 7]);
 * ```
 */
export function activationView(shape: readonly number[], blocking: ActivationBlocking): number[] {
  if (shape.length < 2) return [...shape];
  const a = channelAxis(shape.length, blocking);
  return [shapeSize(shape.slice(0, a)), ...shape.slice(a)];
}

/**
 * Shape of the exponents of an activation of `shape` under `blocking`: `[...samples]` (one block per sample),
 * `[...samples, G]` (one per sample and group) or `[...samples, G·nb, ...spatial]`.
 */
export function activationExponentShape<D extends Dim>(shape: readonly D[], blocking: ActivationBlocking): Dim[] {
  const a = shape.length < 2 ? 1 : channelAxis(shape.length, blocking);
  const groups = blocking.group ?? 1;
  if (blocking.block === 0) return groups === 1 ? shape.slice(0, a) : [...shape.slice(0, a), groups];
  const group = blocking.group ?? 1;
  const c = shape[a];
  const perGroup = typeof c === "number" ? Math.ceil(c / group / blocking.block) : "?";
  return [...shape.slice(0, a), typeof perGroup === "number" ? group * perGroup : "?", ...shape.slice(a + 1)];
}

/**
 * With one block per sample (`block` 0): the index of sample `n`'s exponent for channel group `gi` in
 * {@linkcode quantizeActivations}' exponents (`[N]`, or `[N, G]` with groups).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sampleExponentIndex } from "./quantize.ts";
 * assert.equal(sampleExponentIndex({ block: 0 }, 3, 5), 3);
 * assert.equal(sampleExponentIndex({ block: 0, group: 8 }, 3, 5), 29);
 * ```
 */
export function sampleExponentIndex(blocking: ActivationBlocking, n: number, gi: number): number {
  const groups = blocking.group ?? 1;
  return groups === 1 ? n : n * groups + gi;
}

/**
 * Quantize an activation `[N, C, ...spatial]` (or any shape seen that way by
 * {@linkcode activationView}) to BFP (the `Quantize` op's
 * kernel): {@linkcode quantizeBfp} per block. For `block > 0` the blocks
 * run along the channel axis, so the tensor is quantized in `[N, spatial,
 * group, Cg]` order (the stochastic stream is drawn in that order).
 *
 * @param staticExponent Fixed point (one block per sample only): the compile-time exponent of every sample.
 * @throws {Error} For NaN/Inf elements (naming `name`) or channels not divisible by `group`.
 * @example One block per sample
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "./format.ts";
 * import { quantizeActivations } from "./quantize.ts";
 * const q = quantizeActivations(new Float32Array([1, 3, 0.5, 0.25]), [2, 2], bfpFormat(), { block: 0 }, "x");
 * assert.deepEqual([...q.exponents], [1, -1]);
 * assert.deepEqual([...q.mantissas], [32, 96, 64, 32]);
 * ```
 * @example One block per sample and group: a loud channel leaves the quiet one its own exponent
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "./format.ts";
 * import { quantizeActivations } from "./quantize.ts";
 * const x = new Float32Array([100, 90, 0.3, 0.2]); // [1 sample, 2 channels, 2 positions]
 * const q = quantizeActivations(x, [1, 2, 2], bfpFormat(), { block: 0, group: 2 }, "x");
 * assert.deepEqual([...q.exponents], [6, -2]);
 * assert.deepEqual([...q.mantissas], [100, 90, 77, 51]);
 * const whole = quantizeActivations(x, [1, 2, 2], bfpFormat(), { block: 0 }, "x");
 * assert.deepEqual([...whole.mantissas], [100, 90, 0, 0]); // one exponent: the quiet channel flushes to zero
 * ```
 */
export function quantizeActivations(
  x: Float32Array | Float64Array,
  shape: readonly number[],
  format: BfpFormat,
  blocking: ActivationBlocking,
  name: string,
  staticExponent?: number,
): { mantissas: Int8Array | Int16Array; exponents: Int8Array; saturated: number } {
  const view = activationView(shape, blocking);
  const n = view[0], c = view[1] ?? 1;
  const spatial = shapeSize(view.slice(2));
  const group = blocking.group ?? 1;
  if (c % group !== 0) throw new Error(`${c} channels of "${name}" are not divisible into ${group} groups`);
  if (blocking.block === 0) {
    // Each (sample, group) is a contiguous run of its channels' planes: one block each.
    const length = n === 0 ? 0 : x.length / (n * group);
    const q = quantizeBfp(x, format, { length, block: 0 }, name, staticExponent);
    return { mantissas: q.mantissas, exponents: Int8Array.from(q.exponents), saturated: q.saturated };
  }
  if (staticExponent !== undefined) throw new Error(`a static exponent needs one block per sample ("${name}")`);
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

/**
 * Quantize float weights offline: `[O, Cg, ...kernel]` (or `[O, K]`) with one
 * block per output channel (`block = 0`, exponents `[O]`) or blocks of `block`
 * input channels at each tap (exponents `[O, ceil(Cg/block), ...kernel]`).
 * With `perTensor` (fixed point, `block = 0` only) every output channel gets
 * the exponent of the whole tensor's maximum (still stored per channel).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "./format.ts";
 * import { quantizeWeights } from "./quantize.ts";
 * const q = quantizeWeights(new Float32Array([1, 2, 0.5, 0.25]), [2, 2], bfpFormat(), 1);
 * assert.deepEqual(q.exponentShape, [2, 2]);
 * assert.deepEqual([...q.exponents], [0, 1, -1, -2]);
 * const t = quantizeWeights(new Float32Array([1, 2, 0.5, 0.25]), [2, 2], bfpFormat(), 0, "W", true);
 * assert.deepEqual([...t.exponents], [1, 1]);
 * ```
 */
export function quantizeWeights(
  w: Float32Array,
  shape: readonly number[],
  format: BfpFormat,
  block: number,
  name = "W",
  perTensor = false,
): { mantissas: Int8Array | Int16Array; exponents: Int8Array; exponentShape: number[]; saturated: number } {
  const cg = shape[1], taps = shapeSize(shape.slice(2));
  if (perTensor && block !== 0) throw new Error(`per-tensor weights "${name}" need block 0, found block ${block}`);
  if (block === 0) {
    const tensorExponent = perTensor
      ? quantizeBfp(w, format, { length: w.length, block: 0 }, name).exponents[0]
      : undefined;
    const q = quantizeBfp(w, format, { length: cg * taps, block: 0 }, name, tensorExponent);
    return {
      mantissas: q.mantissas,
      exponents: Int8Array.from(q.exponents),
      exponentShape: weightExponentShape(shape, 0),
      saturated: q.saturated,
    };
  }
  // As activations: the output channels play the batch, the taps the spatial positions.
  const q = quantizeActivations(w, shape, format, { block }, name);
  return {
    mantissas: q.mantissas,
    exponents: q.exponents,
    exponentShape: weightExponentShape(shape, block),
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
  const view = activationView(shape, blocking);
  const n = view[0], c = view[1] ?? 1, spatial = shapeSize(view.slice(2));
  const out = new Float32Array(q.mantissas.length);
  const L = format.mantissaBits;
  const group = blocking.group ?? 1;
  if (blocking.block === 0) {
    const per = n === 0 ? 0 : out.length / (n * group);
    for (let i = 0; i < out.length; i++) out[i] = q.mantissas[i] * pow2(q.exponents[Math.floor(i / per)] - (L - 2));
    return out;
  }
  const cg = c / group, nb = Math.ceil(cg / blocking.block);
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      const g = Math.floor(ch / cg), j = Math.floor((ch % cg) / blocking.block);
      const eBase = (i * group * nb + g * nb + j) * spatial, base = (i * c + ch) * spatial;
      for (let s = 0; s < spatial; s++) out[base + s] = q.mantissas[base + s] * pow2(q.exponents[eBase + s] - (L - 2));
    }
  }
  return out;
}

/**
 * Shape of the exponents of weights `[O, Cg, ...kernel]` (or `[O, K]`) with
 * `block` input channels per block: `[O]` for one block per output channel,
 * else `[O, ceil(Cg/block), ...kernel]`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { weightExponentShape } from "./quantize.ts";
 * assert.deepEqual(weightExponentShape([64, 30, 3, 3], 0), [64]);
 * assert.deepEqual(weightExponentShape([64, 30, 3, 3], 16), [64, 2, 3, 3]);
 * ```
 */
export function weightExponentShape(shape: readonly number[], block: number): number[] {
  return block === 0 ? [shape[0]] : [shape[0], Math.ceil(shape[1] / block), ...shape.slice(2)];
}

/**
 * The static (fixed-point) exponent for a tensor whose largest magnitude is
 * `amax`: the smallest `e` whose scaled maximum `amax · 2^-(e-(L-2))` is at
 * most `maxM` before rounding (`floor(log2 amax)`, one more when it is not:
 * the never-clamp rule, so no rounding mode clamps it),
 * plus `headroom` integer bits for inputs larger than the calibration's,
 * clamped to the exponent range. An all-zero tensor gets the minimum.
 *
 * @example 16-bit fixed point for values up to 5.3: e = 3, so the step is 2^(3-14) (Q4.11)
 * ```ts
 * import assert from "node:assert/strict";
 * import { bfpFormat } from "./format.ts";
 * import { staticExponentFor } from "./quantize.ts";
 * const f = bfpFormat({ mantissaBits: 16, exponentBits: 8 });
 * assert.equal(staticExponentFor(5.3, f), 2);
 * assert.equal(staticExponentFor(7.9999, f), 3); // 7.9999 · 2^12 > 32767
 * assert.equal(staticExponentFor(5.3, f, 2), 4);
 * ```
 */
export function staticExponentFor(amax: number, format: BfpFormat, headroom = 0): number {
  const { min, max } = exponentRange(format);
  if (!(amax > 0)) return min;
  if (!Number.isFinite(amax)) throw new Error(`a static exponent needs a finite maximum, found ${amax}`);
  let e = floorLog2(amax);
  if (e >= min - 1 && e <= max && amax * pow2(format.mantissaBits - 2 - e) > maxMantissa(format)) e++;
  return Math.min(max, Math.max(min, e + headroom));
}
