/**
 * The FPGA weight image: one little-endian binary a sequencer loads to run a
 * lowered network (`ai.bfp` layers and the glue between them), written by
 * {@linkcode writeFpgaImage} and checked and decoded by {@linkcode readFpgaImage}.
 * Decisions: `shared/docs/formats.md` ("FPGA weight image").
 *
 * Layout, version 1 (every integer little-endian, every offset from byte 0):
 *
 * Header, 64 bytes:
 * | bytes | field |
 * |---|---|
 * | 0..7   | magic `CNNCFPGA` (ASCII) |
 * | 8..9   | u16 version (1) |
 * | 10..11 | u16 header size (64) |
 * | 12..15 | u32 flags: bits 0..2 rounding (index in `BFP_ROUNDINGS`: 0 nearest-even, 1 toward-zero, 2 toward-positive, 3 toward-negative, 4 stochastic); bit 3 exponent rule never-clamp; bit 4 some layer is BFP (data-dependent exponents); bit 5 some layer is fixed point (static exponent); bit 6 the layers' mantissa widths differ (mixed precision); bit 8 mantissa layout `oihw` (clear: `ohwi`) |
 * | 16     | u8 mantissa bits L (sign included): the widest layer's; each Conv/Gemm's own width is its descriptor's `mantissaBits` and its mantissa segment's element bits |
 * | 17     | u8 exponent bits E |
 * | 18..19 | u16 exponent bias `2^(E-1) - 1` (exponents are stored unbiased, as i8) |
 * | 20..21 | u16 segment entry size (48) |
 * | 22..23 | u16 reserved (0) |
 * | 24..27 | u32 segment count |
 * | 28..31 | u32 layer count |
 * | 32..35 | u32 segment table offset (64) |
 * | 36..39 | u32 payload offset (the first 4096-byte boundary after the table) |
 * | 40..43 | u32 payload size in bytes (to the end of the image, padding included) |
 * | 44..47 | u32 payload CRC-32 (every payload byte, padding included) |
 * | 48..51 | u32 tensor count (ids used by the descriptors) |
 * | 52..55 | u32 segment table CRC-32 |
 * | 56..59 | u32 stochastic-rounding seed (two's complement) |
 * | 60..63 | u32 header CRC-32 of bytes 0..59 |
 *
 * Segment table: one 48-byte entry per segment, layers in order, each layer's
 * segments in kind order (descriptor, then mantissas, exponents, bias for a
 * Conv/Gemm; a glue op has only a descriptor; a layer without bias has no bias segment):
 * | bytes | field |
 * |---|---|
 * | 0..3   | u32 layer index |
 * | 4..5   | u16 kind: 0 descriptor, 1 weight mantissas, 2 weight exponents, 3 bias |
 * | 6..7   | u16 flags: bit 0 zero padding was added because pe/simd do not divide O/K |
 * | 8..11  | u32 offset (a multiple of 4096) |
 * | 12..15 | u32 size in bytes (without the alignment padding that follows) |
 * | 16..19 | u32 CRC-32 of those bytes |
 * | 20..21 | u16 memory word width in bits (each word stored in `ceil(bits/8)` bytes, little-endian) |
 * | 22..23 | u16 element bits |
 * | 24..25 | u16 pe (mantissas; else 1) |
 * | 26..27 | u16 simd (mantissas; else 1) |
 * | 28..31 | u32 elements (logical, without padding) |
 * | 32..35 | u32 memory words |
 * | 36..39 | u32 rows: O (mantissas, exponents, bias), 0 for a descriptor |
 * | 40..43 | u32 columns: K (mantissas), exponents per row, 3 (bias words per channel), 0 for a descriptor |
 * | 44..47 | u32 weight block: input channels per exponent block, 0 = one block per output channel |
 *
 * Payload: every segment starts on a 4096-byte boundary (an AXI burst must not
 * cross 4 KB); the gaps and the tail up to the next boundary are zero.
 *
 * Segment contents:
 * - Descriptor (32-bit words): fields, each a word `key | count << 16` and
 *   `count` i32 values; keys in {@linkcode DESCRIPTOR_KEYS}, unknown keys are
 *   skipped by count, so fields can be added without a new version. A dynamic
 *   dimension is -1. Tensors are named by id: graph inputs first, then each
 *   layer's outputs in layer order.
 * - Weight mantissas, FINN-style: the matrix `W[O, K]` with K in the layout's
 *   order (`ohwi`: taps outer, channels inner, as FINN/hls4ml sliding windows
 *   read; `oihw`: as ONNX) is cut into `NF = ceil(O/PE)` neuron folds and
 *   `SF = ceil(K/SIMD)` synapse folds; fold word `(nf, sf)` (sf inner) holds
 *   element `e = p·SIMD + s`, the weight `W[nf·PE + p, sf·SIMD + s]` as an
 *   L-bit two's complement integer (L: the layer's mantissa width), at bits `[L·e + L-1 : L·e]`; rows past O and
 *   columns past K are zero. Each fold word is `ceil(PE·SIMD·L / word-bits)`
 *   memory words, word j holding bits `[word-bits·(j+1) - 1 : word-bits·j]`.
 * - Weight exponents: i8 words, unbiased, one per block: `[O]` (one block per
 *   output channel), or `[O, kh, kw, nb]` (`ohwi`) / `[O, nb, kh, kw]` (`oihw`)
 *   for blocks of B input channels at each tap, `nb = ceil(Cg/B)`.
 * - Bias: three i32 words per output channel: significand `bm` (25-bit signed)
 *   and exponent `be` with `float32 b = bm · 2^be` exactly (trailing zero bits
 *   stripped; 0 is `0, 0`), then the plan's bias unit `u_b` (`NO_BIAS_UNIT` for 0).
 *
 * Checks on read: magic, version, header CRC, table CRC, each segment's CRC,
 * then the payload CRC and zero padding; the first failure is one line naming the part.
 * @module
 */
import { crc32 } from "node:zlib";
import { BFP_ROUNDINGS, type BfpRounding } from "../../ir/bfp/format.ts";

/** The image's magic bytes. */
export const FPGA_IMAGE_MAGIC = "CNNCFPGA";
/** The image format version this module writes and reads. */
export const FPGA_IMAGE_VERSION = 1;
/** Every segment (and the payload) starts on a multiple of this. */
export const FPGA_SEGMENT_ALIGNMENT = 4096;

const HEADER_BYTES = 64;
const ENTRY_BYTES = 48;

/** What a segment holds. */
export type SegmentKind = "descriptor" | "mantissas" | "exponents" | "bias";
/** Segment kinds, by their code. */
export const SEGMENT_KINDS: readonly SegmentKind[] = ["descriptor", "mantissas", "exponents", "bias"];

/** Mantissa order along K: `ohwi` (taps outer, channels inner) or ONNX's `oihw`. */
export type FpgaLayout = "ohwi" | "oihw";

/** Descriptor field keys (the 16-bit codes of the descriptor segment). Codes are never reused. */
export const DESCRIPTOR_KEYS = {
  op: 1, // opcode, OPCODES
  inputs: 2, // tensor ids
  outputs: 3, // tensor ids
  inputRanks: 4, // rank of each input
  inputShapes: 5, // dims of every input, concatenated
  outputShape: 6,
  kernel: 7,
  strides: 8,
  dilations: 9,
  pads: 10, // begin per axis, then effective end per axis
  group: 11,
  mantissaBits: 12,
  exponentBits: 13,
  inputBlock: 14, // input channels per activation block, 0 = one block per sample (and group)
  inputBlockGroup: 15, // groups the blocks never straddle; with inputBlock 0 and more than 1: one block per group
  staticExponent: 16, // fixed point: the input's compile-time exponent
  accumulatorBits: 17,
  productBits: 18,
  guardBits: 19,
  rounding: 20,
  weightBlock: 21, // input channels per weight block, 0 = one per output channel
  weightExponentShape: 22, // in storage order
  layout: 23, // 0 ohwi, 1 oihw
  pe: 24,
  simd: 25,
  paddedRows: 26,
  paddedColumns: 27,
  outChannels: 28,
  reduction: 29,
  inChannels: 30,
  hasBias: 31,
  axis: 32,
  countIncludePad: 33,
  ceilMode: 34,
  scaleSignificands: 35, // BatchNormalization as y = a·x + c per channel: a = sig · 2^exp exactly (float32)
  scaleExponents: 36,
  shiftSignificands: 37,
  shiftExponents: 38,
  shape: 39, // Reshape target
  seed: 40,
  exponentRule: 41, // 0 floor, 1 never-clamp
  graphOutputs: 42, // indices of this layer's outputs that are graph outputs
  name: 43, // UTF-8 byte length, then the bytes packed 4 per word (little-endian)
  outputBits: 44, // reserved for requantized outputs (golden vectors)
} as const;

/** A descriptor field name. */
export type DescriptorKey = keyof typeof DESCRIPTOR_KEYS;

/** Opcodes of the `op` descriptor field. */
export const OPCODES = {
  conv: 1,
  gemm: 2,
  relu: 16,
  maxPool: 17,
  averagePool: 18,
  globalAveragePool: 19,
  add: 20,
  concat: 21,
  flatten: 22,
  reshape: 23,
  affine: 24,
} as const;

/** A layer kind (an opcode's name). */
export type FpgaLayerKind = keyof typeof OPCODES;

/** Integer fields of a descriptor, in order (the layer name is {@linkcode FpgaLayerRecord.name}). */
export type FpgaDescriptor = Readonly<Partial<Record<DescriptorKey, readonly number[]>>>;

/** A Conv/Gemm layer's integers, in plan order (OIHW or `[O, K]`). */
export interface FpgaWeights {
  /** Mantissas, row-major in {@linkcode shape}. */
  readonly mantissas: Int8Array | Int16Array;
  /** `[O, Cg, ...kernel]` or `[O, K]`. */
  readonly shape: readonly number[];
  /** Unbiased exponents, row-major in {@linkcode exponentShape} (plan order). */
  readonly exponents: Int8Array;
  /** `[O]` or `[O, nb, ...kernel]`. */
  readonly exponentShape: readonly number[];
  /** Input channels per block; 0 = one block per output channel. */
  readonly block: number;
}

/** A bias as exact integers: `b = significand · 2^exponent`, and the plan's bias unit. */
export interface FpgaBias {
  /** 25-bit signed significands. */
  readonly significands: Int32Array;
  /** Exponents (int16 range). */
  readonly exponents: Int32Array;
  /** The plan's bias units `u_b`. */
  readonly units: Int32Array;
  /** The float32 values `significand · 2^exponent`. */
  readonly values: Float32Array;
}

/** One layer as the writer takes it and the reader returns it. */
export interface FpgaLayerRecord {
  /** The op's name. */
  readonly name: string;
  /** Opcode name. */
  readonly kind: FpgaLayerKind;
  /** Integer descriptor fields (without `name`, which the writer adds). */
  readonly descriptor: FpgaDescriptor;
  /** Weights of a Conv/Gemm, else null. */
  readonly weights: FpgaWeights | null;
  /** Bias of a Conv/Gemm that has one, else null. */
  readonly bias: FpgaBias | null;
}

/** How the writer packs mantissas. */
export interface FpgaPacking {
  /** Output channels per fold word (processing elements). */
  readonly pe: number;
  /** Reduction elements per PE per fold word. */
  readonly simd: number;
  /** Memory word width in bits. */
  readonly wordBits: number;
  /** Order of K. */
  readonly layout: FpgaLayout;
}

/** The number format stated in the header. */
export interface FpgaImageFormat {
  /** Mantissa bits L. */
  readonly mantissaBits: number;
  /** Exponent bits E. */
  readonly exponentBits: number;
  /** Rounding of every shift. */
  readonly rounding: BfpRounding;
  /** True for the never-clamp exponent rule. */
  readonly neverClamp: boolean;
  /** Stochastic-rounding seed. */
  readonly seed: number;
  /** Some layer computes exponents from data (BFP). */
  readonly hasBfp: boolean;
  /** Some layer has a static exponent (fixed point). */
  readonly hasFixed: boolean;
}

/** One segment table entry. */
export interface FpgaSegment {
  /** Layer index. */
  readonly layer: number;
  /** What it holds. */
  readonly kind: SegmentKind;
  /** True when pe/simd padding was added. */
  readonly padded: boolean;
  /** Byte offset in the image (a multiple of 4096). */
  readonly offset: number;
  /** Bytes (without alignment padding). */
  readonly size: number;
  /** CRC-32 of the bytes. */
  readonly crc32: number;
  /** Memory word width in bits. */
  readonly wordBits: number;
  /** Element width in bits. */
  readonly elementBits: number;
  /** PE (1 unless mantissas). */
  readonly pe: number;
  /** SIMD (1 unless mantissas). */
  readonly simd: number;
  /** Logical elements. */
  readonly elements: number;
  /** Memory words. */
  readonly words: number;
  /** Rows (O), 0 for a descriptor. */
  readonly rows: number;
  /** Columns, 0 for a descriptor. */
  readonly columns: number;
  /** Weight block (input channels per exponent), 0 = per output channel. */
  readonly block: number;
}

/** A decoded image. */
export interface FpgaImage {
  /** Format version. */
  readonly version: number;
  /** The number format. */
  readonly format: FpgaImageFormat;
  /** Mantissa order along K. */
  readonly layout: FpgaLayout;
  /** Exponent bias `2^(E-1) - 1`. */
  readonly exponentBias: number;
  /** Number of tensor ids. */
  readonly tensorCount: number;
  /** Payload CRC-32. */
  readonly payloadCrc32: number;
  /** The segment table. */
  readonly segments: readonly FpgaSegment[];
  /** The layers, with integers back in plan order. */
  readonly layers: readonly FpgaLayerRecord[];
}

/** What {@linkcode writeFpgaImage} returns besides the bytes: the segments and each one's word stream. */
export interface FpgaImageWritten {
  /** The image. */
  readonly bytes: Uint8Array;
  /** The segment table as written. */
  readonly segments: readonly FpgaSegment[];
  /** Each segment's bytes (views into `bytes`), in table order. */
  readonly contents: readonly Uint8Array[];
}

const LAYOUT_CODES: Record<FpgaLayout, number> = { ohwi: 0, oihw: 1 };

/**
 * CRC-32 (zlib/IEEE, reflected polynomial 0xEDB88320) of `bytes`.
 *
 * @example The check value
 * ```ts
 * import assert from "node:assert/strict";
 * import { fpgaCrc32 } from "./image.ts";
 * assert.equal(fpgaCrc32(new TextEncoder().encode("123456789")), 0xcbf43926);
 * ```
 */
export function fpgaCrc32(bytes: Uint8Array): number {
  return crc32(bytes) >>> 0;
}

/** Fold geometry of a matrix `[O, K]` for a packing: folds, fold-word memory words and padded sizes. */
export function foldGeometry(
  rows: number,
  columns: number,
  elementBits: number,
  packing: Pick<FpgaPacking, "pe" | "simd" | "wordBits">,
): { neuronFolds: number; synapseFolds: number; wordsPerFold: number; words: number; wordBytes: number } {
  const neuronFolds = Math.ceil(rows / packing.pe), synapseFolds = Math.ceil(columns / packing.simd);
  const wordsPerFold = Math.ceil((packing.pe * packing.simd * elementBits) / packing.wordBits);
  return {
    neuronFolds,
    synapseFolds,
    wordsPerFold,
    words: neuronFolds * synapseFolds * wordsPerFold,
    wordBytes: Math.ceil(packing.wordBits / 8),
  };
}

/**
 * Pack a matrix `w[O, K]` (row-major, K in the order the hardware reads)
 * FINN-style into memory words (module header, "Weight mantissas").
 *
 * @example PE 2, SIMD 2, 4-bit elements in 8-bit words: fold word (0,0) holds W[0,0], W[0,1], W[1,0], W[1,1]
 * ```ts
 * import assert from "node:assert/strict";
 * import { packFolds } from "./image.ts";
 * const bytes = packFolds(new Int8Array([1, 2, 3, -1]), 2, 2, 4, { pe: 2, simd: 2, wordBits: 8 });
 * assert.deepEqual([...bytes], [0x21, 0xf3]);
 * ```
 */
export function packFolds(
  w: Int8Array | Int16Array,
  rows: number,
  columns: number,
  elementBits: number,
  packing: Pick<FpgaPacking, "pe" | "simd" | "wordBits">,
): Uint8Array {
  const { pe, simd, wordBits } = packing;
  const g = foldGeometry(rows, columns, elementBits, packing);
  const out = new Uint8Array(g.words * g.wordBytes);
  const mask = (1 << elementBits) - 1;
  for (let nf = 0; nf < g.neuronFolds; nf++) {
    for (let sf = 0; sf < g.synapseFolds; sf++) {
      const base = (nf * g.synapseFolds + sf) * g.wordsPerFold * g.wordBytes;
      for (let p = 0; p < pe; p++) {
        const o = nf * pe + p;
        if (o >= rows) break;
        for (let s = 0; s < simd; s++) {
          const k = sf * simd + s;
          if (k >= columns) break;
          const v = w[o * columns + k] & mask;
          const first = elementBits * (p * simd + s);
          for (let b = 0; b < elementBits; b++) {
            if (((v >> b) & 1) === 0) continue;
            const q = first + b, j = Math.floor(q / wordBits), r = q - j * wordBits;
            out[base + j * g.wordBytes + (r >> 3)] |= 1 << (r & 7);
          }
        }
      }
    }
  }
  return out;
}

/** The inverse of {@linkcode packFolds}: `[O, K]` row-major, sign-extended. */
export function unpackFolds(
  bytes: Uint8Array,
  rows: number,
  columns: number,
  elementBits: number,
  packing: Pick<FpgaPacking, "pe" | "simd" | "wordBits">,
): Int8Array | Int16Array {
  const { pe, simd, wordBits } = packing;
  const g = foldGeometry(rows, columns, elementBits, packing);
  const out = elementBits <= 8 ? new Int8Array(rows * columns) : new Int16Array(rows * columns);
  const sign = 1 << (elementBits - 1);
  for (let nf = 0; nf < g.neuronFolds; nf++) {
    for (let sf = 0; sf < g.synapseFolds; sf++) {
      const base = (nf * g.synapseFolds + sf) * g.wordsPerFold * g.wordBytes;
      for (let p = 0; p < pe; p++) {
        const o = nf * pe + p;
        if (o >= rows) break;
        for (let s = 0; s < simd; s++) {
          const k = sf * simd + s;
          if (k >= columns) break;
          const first = elementBits * (p * simd + s);
          let v = 0;
          for (let b = 0; b < elementBits; b++) {
            const q = first + b, j = Math.floor(q / wordBits), r = q - j * wordBits;
            if ((bytes[base + j * g.wordBytes + (r >> 3)] >> (r & 7)) & 1) v |= 1 << b;
          }
          out[o * columns + k] = v & sign ? v - 2 * sign : v;
        }
      }
    }
  }
  return out;
}

/** Kernel taps and per-row channel count of weights `[O, Cg, ...kernel]` (a Gemm: one tap of K channels). */
function rowGeometry(shape: readonly number[]): { cg: number; taps: number } {
  let taps = 1;
  for (let i = 2; i < shape.length; i++) taps *= shape[i];
  return { cg: shape[1], taps };
}

/** `[O, C, T]` (plan order) to `[O, T, C]` (ohwi), or back with `inverse`. */
function transposeRows<A extends Int8Array | Int16Array>(
  x: A,
  rows: number,
  c: number,
  taps: number,
  inverse: boolean,
): A {
  const out = new (x.constructor as { new (n: number): A })(x.length);
  for (let o = 0; o < rows; o++) {
    const base = o * c * taps;
    for (let ch = 0; ch < c; ch++) {
      for (let t = 0; t < taps; t++) {
        const plan = base + ch * taps + t, hw = base + t * c + ch;
        if (inverse) out[plan] = x[hw];
        else out[hw] = x[plan];
      }
    }
  }
  return out;
}

/**
 * The exact integer form of a float32: `v = significand · 2^exponent` with the
 * significand's trailing zero bits stripped (0 is `[0, 0]`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { float32Parts } from "./image.ts";
 * assert.deepEqual(float32Parts(-0.75), [-3, -2]);
 * assert.deepEqual(float32Parts(0), [0, 0]);
 * ```
 */
export function float32Parts(v: number): [number, number] {
  const f = new Float32Array([v]);
  const bits = new Uint32Array(f.buffer)[0];
  const negative = bits >>> 31 === 1, field = (bits >>> 23) & 0xff, fraction = bits & 0x7fffff;
  if (field === 0xff) throw new RangeError(`${v} has no integer form`);
  let m = field === 0 ? fraction : fraction | 0x800000;
  let e = field === 0 ? -149 : field - 150;
  if (m === 0) return [0, 0];
  while ((m & 1) === 0) {
    m >>>= 1;
    e++;
  }
  return [negative ? -m : m, e];
}

function encodeDescriptor(name: string, descriptor: FpgaDescriptor): Uint8Array {
  const words: number[] = [];
  const nameBytes = new TextEncoder().encode(name);
  const packedName = new Uint8Array(Math.ceil(nameBytes.length / 4) * 4);
  packedName.set(nameBytes);
  const nameWords = new Int32Array(packedName.buffer);
  const fields: [number, readonly number[]][] = [
    ...Object.entries(descriptor).map(([k, v]): [number, readonly number[]] => [
      DESCRIPTOR_KEYS[k as DescriptorKey],
      v!,
    ]),
    [DESCRIPTOR_KEYS.name, [nameBytes.length, ...nameWords]],
  ];
  for (const [key, values] of fields) {
    if (values.length > 0xffff) throw new RangeError(`descriptor field ${key} of "${name}" has too many values`);
    words.push(key | (values.length << 16));
    for (const v of values) {
      if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
        throw new RangeError(`descriptor field ${key} of "${name}" holds ${v}, not an i32`);
      }
      words.push(v);
    }
  }
  return new Uint8Array(Int32Array.from(words).buffer);
}

function decodeDescriptor(bytes: Uint8Array): { name: string; kind: FpgaLayerKind; descriptor: FpgaDescriptor } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const byCode = new Map(Object.entries(DESCRIPTOR_KEYS).map(([k, v]) => [v as number, k as DescriptorKey]));
  const descriptor: Partial<Record<DescriptorKey, number[]>> = {};
  let name = "";
  for (let at = 0; at + 4 <= bytes.length;) {
    const head = view.getUint32(at, true), key = head & 0xffff, count = head >>> 16;
    const values: number[] = [];
    for (let i = 0; i < count; i++) values.push(view.getInt32(at + 4 + 4 * i, true));
    at += 4 + 4 * count;
    const field = byCode.get(key);
    if (field === "name") {
      const packed = new Uint8Array(Int32Array.from(values.slice(1)).buffer);
      name = new TextDecoder().decode(packed.subarray(0, values[0]));
    } else if (field !== undefined) descriptor[field] = values;
  }
  const opcode = descriptor.op?.[0];
  const kind = (Object.entries(OPCODES).find(([, v]) => v === opcode)?.[0] ?? null) as FpgaLayerKind | null;
  if (kind === null) throw new Error(`FPGA image: layer "${name}" has an unknown opcode ${opcode}`);
  return { name, kind, descriptor };
}

interface PendingSegment {
  readonly entry: Omit<FpgaSegment, "offset" | "size" | "crc32">;
  readonly bytes: Uint8Array;
}

const align = (n: number): number => Math.ceil(n / FPGA_SEGMENT_ALIGNMENT) * FPGA_SEGMENT_ALIGNMENT;

/**
 * Write an image (module header) from layer records.
 *
 * @throws {RangeError} When `wordBits` is below the mantissa width (naming `word-bits`), or pe/simd are not positive.
 * @example One Gemm of two outputs over three inputs, read back
 * ```ts
 * import assert from "node:assert/strict";
 * import { readFpgaImage, writeFpgaImage } from "./image.ts";
 * const layer = {
 *   name: "fc", kind: "gemm" as const, descriptor: { op: [2], outChannels: [2], reduction: [3] },
 *   weights: { mantissas: new Int8Array([1, -2, 3, 4, 5, -6]), shape: [2, 3], exponents: new Int8Array([0, -1]),
 *     exponentShape: [2], block: 0 },
 *   bias: null,
 * };
 * const format = { mantissaBits: 8, exponentBits: 5, rounding: "nearest-even" as const, neverClamp: false, seed: 0,
 *   hasBfp: true, hasFixed: false };
 * const { bytes } = writeFpgaImage([layer], format, { pe: 2, simd: 2, wordBits: 64, layout: "ohwi" }, 2);
 * assert.equal(bytes.length % 4096, 0);
 * assert.deepEqual([...readFpgaImage(bytes).layers[0].weights!.mantissas], [1, -2, 3, 4, 5, -6]);
 * ```
 */
export function writeFpgaImage(
  layers: readonly FpgaLayerRecord[],
  format: FpgaImageFormat,
  packing: FpgaPacking,
  tensorCount: number,
): FpgaImageWritten {
  const widthOf = (layer: FpgaLayerRecord): number => layer.descriptor.mantissaBits?.[0] ?? format.mantissaBits;
  const L = Math.max(format.mantissaBits, ...layers.map(widthOf));
  if (!Number.isInteger(packing.wordBits) || packing.wordBits < L) {
    throw new RangeError(`word-bits ${packing.wordBits} is below the mantissa width of ${L} bits`);
  }
  const mixed = layers.some((layer) => layer.weights !== null && widthOf(layer) !== L);
  if (!(packing.pe >= 1 && packing.simd >= 1)) throw new RangeError("pe and simd must be positive");
  const pending: PendingSegment[] = [];
  const none = { pe: 1, simd: 1, rows: 0, columns: 0, block: 0, padded: false };
  layers.forEach((layer, index) => {
    const d = encodeDescriptor(layer.name, layer.descriptor);
    pending.push({
      entry: {
        ...none,
        layer: index,
        kind: "descriptor",
        wordBits: 32,
        elementBits: 32,
        elements: d.length / 4,
        words: d.length / 4,
      },
      bytes: d,
    });
    const w = layer.weights;
    if (w === null) return;
    const rows = w.shape[0], { cg, taps } = rowGeometry(w.shape), columns = cg * taps;
    const ordered = packing.layout === "ohwi" && taps > 1
      ? transposeRows(w.mantissas, rows, cg, taps, false)
      : w.mantissas;
    const width = widthOf(layer);
    const g = foldGeometry(rows, columns, width, packing);
    const padded = rows % packing.pe !== 0 || columns % packing.simd !== 0;
    pending.push({
      entry: {
        layer: index,
        kind: "mantissas",
        padded,
        wordBits: packing.wordBits,
        elementBits: width,
        pe: packing.pe,
        simd: packing.simd,
        elements: rows * columns,
        words: g.words,
        rows,
        columns,
        block: w.block,
      },
      bytes: packFolds(ordered, rows, columns, width, packing),
    });
    const perRow = w.exponents.length / rows;
    const eTaps = w.block === 0 ? 1 : taps, nb = perRow / eTaps;
    const exponents = packing.layout === "ohwi" && eTaps > 1
      ? transposeRows(w.exponents, rows, nb, eTaps, false)
      : w.exponents;
    pending.push({
      entry: {
        ...none,
        layer: index,
        kind: "exponents",
        wordBits: 8,
        elementBits: 8,
        elements: exponents.length,
        words: exponents.length,
        rows,
        columns: perRow,
        block: w.block,
      },
      bytes: new Uint8Array(exponents.buffer, exponents.byteOffset, exponents.byteLength).slice(),
    });
    const b = layer.bias;
    if (b === null) return;
    const words = new Int32Array(3 * rows);
    for (let o = 0; o < rows; o++) {
      words[3 * o] = b.significands[o];
      words[3 * o + 1] = b.exponents[o];
      words[3 * o + 2] = b.units[o];
    }
    pending.push({
      entry: {
        ...none,
        layer: index,
        kind: "bias",
        wordBits: 32,
        elementBits: 32,
        elements: rows,
        words: words.length,
        rows,
        columns: 3,
        block: w.block,
      },
      bytes: new Uint8Array(words.buffer),
    });
  });

  const payloadOffset = align(HEADER_BYTES + ENTRY_BYTES * pending.length);
  let at = payloadOffset;
  const segments: FpgaSegment[] = pending.map(({ entry, bytes }) => {
    const s = { ...entry, offset: at, size: bytes.length, crc32: fpgaCrc32(bytes) };
    at = align(at + Math.max(bytes.length, 1));
    return s;
  });
  const image = new Uint8Array(at);
  const view = new DataView(image.buffer);
  pending.forEach(({ bytes }, i) => image.set(bytes, segments[i].offset));
  segments.forEach((s, i) => {
    const o = HEADER_BYTES + i * ENTRY_BYTES;
    view.setUint32(o, s.layer, true);
    view.setUint16(o + 4, SEGMENT_KINDS.indexOf(s.kind), true);
    view.setUint16(o + 6, s.padded ? 1 : 0, true);
    view.setUint32(o + 8, s.offset, true);
    view.setUint32(o + 12, s.size, true);
    view.setUint32(o + 16, s.crc32, true);
    view.setUint16(o + 20, s.wordBits, true);
    view.setUint16(o + 22, s.elementBits, true);
    view.setUint16(o + 24, s.pe, true);
    view.setUint16(o + 26, s.simd, true);
    view.setUint32(o + 28, s.elements, true);
    view.setUint32(o + 32, s.words, true);
    view.setUint32(o + 36, s.rows, true);
    view.setUint32(o + 40, s.columns, true);
    view.setUint32(o + 44, s.block, true);
  });
  image.set(new TextEncoder().encode(FPGA_IMAGE_MAGIC), 0);
  view.setUint16(8, FPGA_IMAGE_VERSION, true);
  view.setUint16(10, HEADER_BYTES, true);
  const flags = BFP_ROUNDINGS.indexOf(format.rounding) | (format.neverClamp ? 8 : 0) | (format.hasBfp ? 16 : 0) |
    (format.hasFixed ? 32 : 0) | (mixed ? 64 : 0) | (LAYOUT_CODES[packing.layout] << 8);
  view.setUint32(12, flags, true);
  view.setUint8(16, L);
  view.setUint8(17, format.exponentBits);
  view.setUint16(18, (1 << (format.exponentBits - 1)) - 1, true);
  view.setUint16(20, ENTRY_BYTES, true);
  view.setUint32(24, segments.length, true);
  view.setUint32(28, layers.length, true);
  view.setUint32(32, HEADER_BYTES, true);
  view.setUint32(36, payloadOffset, true);
  view.setUint32(40, image.length - payloadOffset, true);
  view.setUint32(44, fpgaCrc32(image.subarray(payloadOffset)), true);
  view.setUint32(48, tensorCount, true);
  view.setUint32(52, fpgaCrc32(image.subarray(HEADER_BYTES, HEADER_BYTES + ENTRY_BYTES * segments.length)), true);
  view.setInt32(56, format.seed | 0, true);
  view.setUint32(60, fpgaCrc32(image.subarray(0, 60)), true);
  return { bytes: image, segments, contents: segments.map((s) => image.subarray(s.offset, s.offset + s.size)) };
}

/** A human name of a segment, for error messages: `segment 3 (mantissas of layer 1 "conv1")`. */
function segmentLabel(i: number, s: { kind: SegmentKind; layer: number }, names: readonly string[]): string {
  const name = names[s.layer];
  return `segment ${i} (${s.kind} of layer ${s.layer}${name === undefined ? "" : ` "${name}"`})`;
}

const hex = (n: number): string => `0x${(n >>> 0).toString(16).padStart(8, "0")}`;

/**
 * Check and decode an image: magic, version, header CRC, segment table CRC,
 * every segment's CRC, the payload CRC and zero padding; the layers come back
 * with their integers in plan order (OIHW or `[O, K]` mantissas, plan-order exponents).
 *
 * @throws {Error} One line naming the header, the segment table, the segment (kind, layer and name) or the payload.
 * @example A corrupted header is rejected
 * ```ts
 * import assert from "node:assert/strict";
 * import { readFpgaImage, writeFpgaImage } from "./image.ts";
 * const format = { mantissaBits: 8, exponentBits: 5, rounding: "nearest-even" as const, neverClamp: false, seed: 0,
 *   hasBfp: true, hasFixed: false };
 * const { bytes } = writeFpgaImage([], format, { pe: 1, simd: 1, wordBits: 8, layout: "ohwi" }, 0);
 * bytes[16] ^= 1;
 * assert.throws(() => readFpgaImage(bytes), /header CRC-32/);
 * ```
 */
export function readFpgaImage(bytes: Uint8Array): FpgaImage {
  if (bytes.length < HEADER_BYTES) throw new Error(`FPGA image: ${bytes.length} bytes is shorter than the header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = new TextDecoder().decode(bytes.subarray(0, 8));
  if (magic !== FPGA_IMAGE_MAGIC) throw new Error(`FPGA image: bad magic ${JSON.stringify(magic)} in the header`);
  const version = view.getUint16(8, true);
  if (version !== FPGA_IMAGE_VERSION) {
    throw new Error(`FPGA image: header version ${version}, this reader reads ${FPGA_IMAGE_VERSION}`);
  }
  const headerCrc = view.getUint32(60, true), headerActual = fpgaCrc32(bytes.subarray(0, 60));
  if (headerCrc !== headerActual) {
    throw new Error(`FPGA image: header CRC-32 mismatch (stored ${hex(headerCrc)}, computed ${hex(headerActual)})`);
  }
  const flags = view.getUint32(12, true);
  const count = view.getUint32(24, true), layerCount = view.getUint32(28, true);
  const tableOffset = view.getUint32(32, true), payloadOffset = view.getUint32(36, true);
  const payloadSize = view.getUint32(40, true);
  if (
    view.getUint16(20, true) !== ENTRY_BYTES || tableOffset + count * ENTRY_BYTES > payloadOffset ||
    payloadOffset + payloadSize !== bytes.length
  ) {
    throw new Error(`FPGA image: header sizes do not match the ${bytes.length} bytes of the image (truncated?)`);
  }
  const table = bytes.subarray(tableOffset, tableOffset + count * ENTRY_BYTES);
  const tableCrc = view.getUint32(52, true), tableActual = fpgaCrc32(table);
  if (tableCrc !== tableActual) {
    throw new Error(
      `FPGA image: segment table CRC-32 mismatch (stored ${hex(tableCrc)}, computed ${hex(tableActual)})`,
    );
  }
  const segments: FpgaSegment[] = [];
  for (let i = 0; i < count; i++) {
    const o = tableOffset + i * ENTRY_BYTES;
    const kind = SEGMENT_KINDS[view.getUint16(o + 4, true)];
    if (kind === undefined) throw new Error(`FPGA image: segment ${i} has an unknown kind in the segment table`);
    segments.push({
      layer: view.getUint32(o, true),
      kind,
      padded: (view.getUint16(o + 6, true) & 1) === 1,
      offset: view.getUint32(o + 8, true),
      size: view.getUint32(o + 12, true),
      crc32: view.getUint32(o + 16, true),
      wordBits: view.getUint16(o + 20, true),
      elementBits: view.getUint16(o + 22, true),
      pe: view.getUint16(o + 24, true),
      simd: view.getUint16(o + 26, true),
      elements: view.getUint32(o + 28, true),
      words: view.getUint32(o + 32, true),
      rows: view.getUint32(o + 36, true),
      columns: view.getUint32(o + 40, true),
      block: view.getUint32(o + 44, true),
    });
  }
  // Names first (descriptors are checked before they are decoded), so later errors can name the layer.
  const names: string[] = [];
  const contents = segments.map((s, i) => {
    if (s.offset % FPGA_SEGMENT_ALIGNMENT !== 0 || s.offset < payloadOffset || s.offset + s.size > bytes.length) {
      throw new Error(`FPGA image: ${segmentLabel(i, s, names)} lies outside the payload or off a 4096-byte boundary`);
    }
    const data = bytes.subarray(s.offset, s.offset + s.size);
    const actual = fpgaCrc32(data);
    if (actual !== s.crc32) {
      throw new Error(
        `FPGA image: ${segmentLabel(i, s, names)} CRC-32 mismatch (stored ${hex(s.crc32)}, computed ${hex(actual)})`,
      );
    }
    if (s.kind === "descriptor") names[s.layer] = decodeDescriptor(data).name;
    return data;
  });
  const payloadCrc = view.getUint32(44, true), payloadActual = fpgaCrc32(bytes.subarray(payloadOffset));
  if (payloadCrc !== payloadActual) {
    throw new Error(
      `FPGA image: payload CRC-32 mismatch (stored ${hex(payloadCrc)}, computed ${hex(payloadActual)}): ` +
        "the padding between segments is corrupted",
    );
  }
  const used = new Uint8Array(bytes.length);
  used.fill(1, 0, tableOffset + count * ENTRY_BYTES);
  for (const s of segments) used.fill(1, s.offset, s.offset + s.size);
  for (let i = 0; i < bytes.length; i++) {
    if (used[i] === 0 && bytes[i] !== 0) throw new Error(`FPGA image: padding byte at offset ${i} is not zero`);
  }

  const layout: FpgaLayout = (flags >> 8) & 1 ? "oihw" : "ohwi";
  const mantissaBits = view.getUint8(16);
  const layers: FpgaLayerRecord[] = [];
  for (let index = 0; index < layerCount; index++) {
    const parts = new Map<SegmentKind, { s: FpgaSegment; data: Uint8Array }>();
    segments.forEach((s, i) => {
      if (s.layer === index) parts.set(s.kind, { s, data: contents[i] });
    });
    const d = parts.get("descriptor");
    if (d === undefined) throw new Error(`FPGA image: layer ${index} has no descriptor segment`);
    const { name, kind, descriptor } = decodeDescriptor(d.data);
    const m = parts.get("mantissas"), e = parts.get("exponents"), b = parts.get("bias");
    let weights: FpgaWeights | null = null;
    if (m !== undefined && e !== undefined) {
      const rows = m.s.rows, columns = m.s.columns;
      const kernel = descriptor.kernel ?? [];
      const taps = kernel.reduce((a, k) => a * k, 1), cg = columns / taps;
      const width = descriptor.mantissaBits?.[0];
      if (width !== undefined && width !== m.s.elementBits) {
        throw new Error(
          `FPGA image: layer ${index} "${name}" states ${width}-bit mantissas but its mantissa segment holds ` +
            `${m.s.elementBits}-bit elements`,
        );
      }
      const packed = unpackFolds(m.data, rows, columns, m.s.elementBits, m.s);
      const mantissas = layout === "ohwi" && taps > 1 ? transposeRows(packed, rows, cg, taps, true) : packed;
      const stored = new Int8Array(e.data.slice().buffer);
      const eTaps = m.s.block === 0 ? 1 : taps, nb = e.s.columns / eTaps;
      const exponents = layout === "ohwi" && eTaps > 1 ? transposeRows(stored, rows, nb, eTaps, true) : stored;
      weights = {
        mantissas,
        shape: kind === "conv" ? [rows, cg, ...kernel] : [rows, columns],
        exponents,
        exponentShape: m.s.block === 0 ? [rows] : [rows, nb, ...kernel],
        block: m.s.block,
      };
    }
    let bias: FpgaBias | null = null;
    if (b !== undefined) {
      const words = new Int32Array(b.data.slice().buffer), rows = b.s.rows;
      const significands = new Int32Array(rows), exponents = new Int32Array(rows), units = new Int32Array(rows);
      const values = new Float32Array(rows);
      for (let o = 0; o < rows; o++) {
        significands[o] = words[3 * o];
        exponents[o] = words[3 * o + 1];
        units[o] = words[3 * o + 2];
        values[o] = significands[o] * 2 ** exponents[o];
      }
      bias = { significands, exponents, units, values };
    }
    layers.push({ name, kind, descriptor, weights, bias });
  }
  return {
    version,
    format: {
      mantissaBits,
      exponentBits: view.getUint8(17),
      rounding: BFP_ROUNDINGS[flags & 7],
      neverClamp: (flags & 8) !== 0,
      seed: view.getInt32(56, true),
      hasBfp: (flags & 16) !== 0,
      hasFixed: (flags & 32) !== 0,
    },
    layout,
    exponentBias: view.getUint16(18, true),
    tensorCount: view.getUint32(48, true),
    payloadCrc32: payloadCrc,
    segments,
    layers,
  };
}
