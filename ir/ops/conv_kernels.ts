/**
 * Convolution and pooling kernels of the interpreter on NC(D)HW float arrays:
 * convolution by im2col + {@linkcode gemm} (a direct loop for depthwise),
 * transposed convolution by GEMM + col2im, max and average pooling. 2-D has
 * fast paths; other ranks go through a general N-D path.
 * @module
 */
import { lazyWasm } from "./common.ts";
import { type FloatArray, gemm, gemmIm2colF32, im2colF32, matVecF32 } from "./gemm_kernel.ts";
import { DEPTHWISE_HEADER, DEPTHWISE_TAP_OFFSETS, depthwiseModuleBytes } from "./wasm_depthwise.ts";

/** Where a sliding window visits along each spatial axis (ONNX Conv/Pool attributes, pads resolved). */
export interface WindowGeometry {
  /** Spatial input sizes (`[H, W]` for 2-D). */
  inShape: readonly number[];
  /** Spatial output sizes. */
  outShape: readonly number[];
  /** Window (kernel) sizes. */
  kernel: readonly number[];
  /** Step between windows. */
  strides: readonly number[];
  /** Step between window taps. */
  dilations: readonly number[];
  /** Implicit padding before each axis (the window of output 0 starts at `-padsBegin`). */
  padsBegin: readonly number[];
}

/** Operands and sizes of {@linkcode convolve}. */
export interface ConvArgs extends WindowGeometry {
  /** Input, `[batch, inChannels, ...inShape]`. */
  x: FloatArray;
  /** Weights, `[outChannels, inChannels / group, ...kernel]` (OIHW; IOHW for {@linkcode convolveTranspose}). */
  w: FloatArray;
  /** Per-output-channel bias, or null. */
  bias: FloatArray | null;
  /** Output, `[batch, outChannels, ...outShape]`; fully overwritten. */
  y: FloatArray;
  /** Batch size. */
  batch: number;
  /** Input channels. */
  inChannels: number;
  /** Output channels. */
  outChannels: number;
  /** Channel groups (`inChannels` for depthwise convolution). */
  group: number;
  /**
   * Bounds `[lo, hi]` each output is clamped to after the bias (`t = v < lo ? lo : v`, then `t > hi ? hi : t`, as Clip; NaN kept): a
   * following Relu (`[0, Infinity]`) or Clip computed in the same pass. Default: none.
   */
  clamp?: readonly [number, number];
  /** `w` is never written while it is alive (a model's weights): the GEMM may keep it packed between calls. */
  constantWeights?: boolean;
}

/** Elements of the im2col / col2im scratch matrix per GEMM call; larger images are processed in column chunks. */
const COL_BUDGET = 1 << 18;

let colF32 = new Float32Array(0);
let colF64 = new Float64Array(0);

/** Scratch of at least `n` elements of the same storage type as `like`, reused across calls. */
function scratchLike(like: FloatArray, n: number): FloatArray {
  if (like instanceof Float32Array) {
    if (colF32.length < n) colF32 = new Float32Array(n);
    return colF32;
  }
  if (colF64.length < n) colF64 = new Float64Array(n);
  return colF64;
}

function product(dims: readonly number[]): number {
  let p = 1;
  for (const d of dims) p *= d;
  return p;
}

/** A 1-D geometry as 2-D with a unit height, so 1-D shares the 2-D fast paths. */
export function as2d(g: WindowGeometry): WindowGeometry {
  if (g.inShape.length !== 1) return g;
  return {
    inShape: [1, g.inShape[0]],
    outShape: [1, g.outShape[0]],
    kernel: [1, g.kernel[0]],
    strides: [1, g.strides[0]],
    dilations: [1, g.dilations[0]],
    padsBegin: [0, g.padsBegin[0]],
  };
}

/**
 * ONNX Conv on float storage: `y[n, oc] = bias[oc] + sum over the group's input
 * channels and kernel taps of w * x` (zero padding). Depthwise 2-D convolution
 * (one input channel per group) runs a direct loop; everything else is im2col
 * followed by one GEMM per image, group and column chunk.
 *
 * @param args Operands, sizes and window geometry.
 *
 * @example A 1x1 input channel, 2x2 kernel of ones over a 3x3 image
 * ```ts
 * import assert from "node:assert/strict";
 * import { convolve } from "./conv_kernels.ts";
 * const y = new Float32Array(4);
 * convolve({
 *   x: new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9]), w: new Float32Array([1, 1, 1, 1]), bias: null, y,
 *   batch: 1, inChannels: 1, outChannels: 1, group: 1,
 *   inShape: [3, 3], outShape: [2, 2], kernel: [2, 2], strides: [1, 1], dilations: [1, 1], padsBegin: [0, 0],
 * });
 * assert.deepEqual([...y], [12, 16, 24, 28]);
 * ```
 */
export function convolve(args: ConvArgs): void {
  const geom = as2d(args);
  const { x, w, y, batch, inChannels, outChannels, group } = args;
  const spatialIn = product(geom.inShape);
  const spatialOut = product(geom.outShape);
  const kernelSize = product(geom.kernel);
  const cinG = inChannels / group;
  const coutG = outChannels / group;
  const kg = cinG * kernelSize;
  const [lo, hi] = args.clamp ?? [-Infinity, Infinity];
  if (geom.inShape.length === 2 && cinG === 1 && group > 1) {
    depthwise2d(args, geom);
  } else {
    const pointwise = kernelSize === 1 && geom.strides.every((s) => s === 1) && geom.padsBegin.every((p) => p === 0);
    const chunk = Math.max(1, Math.min(spatialOut, Math.floor(COL_BUDGET / Math.max(1, kg))));
    const col = pointwise ? x : scratchLike(x, kg * chunk);
    for (let n = 0; n < batch; n++) {
      for (let g = 0; g < group; g++) {
        const xOff = (n * inChannels + g * cinG) * spatialIn;
        const yOff = (n * outChannels + g * coutG) * spatialOut;
        if (!pointwise && spatialOut > 1 && im2colGemm(args, geom, xOff, g, yOff, lo, hi)) continue;
        for (let p0 = 0; p0 < spatialOut; p0 += chunk) {
          const len = Math.min(chunk, spatialOut - p0);
          if (len === 1 && spatialOut === 1) {
            // One output position (1x1 feature maps: squeeze-excite, classifier heads): dot products, no packing.
            const b = pointwise ? x : col;
            if (!pointwise) im2col(x, xOff, cinG, geom, p0, len, col);
            dotRows({
              a: w,
              aOffset: g * coutG * kg,
              rows: coutG,
              k: kg,
              x: b,
              xOffset: pointwise ? xOff : 0,
              y,
              yOffset: yOff,
              yStride: 1,
            });
            continue;
          }
          // Bias and clamp applied as the GEMM writes its result.
          const epilogue = { bias: args.bias, biasOffset: g * coutG, lo, hi };
          const constantA = args.constantWeights ?? false;
          if (pointwise) {
            gemm({
              m: coutG,
              n: len,
              k: kg,
              a: w,
              aOffset: g * coutG * kg,
              b: x,
              bOffset: xOff + p0,
              ldb: spatialIn,
              c: y,
              cOffset: yOff + p0,
              ldc: spatialOut,
              epilogue,
              constantA,
            });
            continue;
          }
          im2col(x, xOff, cinG, geom, p0, len, col);
          gemm({
            m: coutG,
            n: len,
            k: kg,
            a: w,
            aOffset: g * coutG * kg,
            b: col,
            c: y,
            cOffset: yOff + p0,
            ldc: spatialOut,
            epilogue,
            constantA,
          });
        }
      }
      if (spatialOut === 1) {
        // The dot products' image: bias and clamp now, while it is in cache.
        const off = n * outChannels;
        if (args.bias !== null) addChannelBias(y, args.bias, off, outChannels, 1);
        clampValues(y, off, outChannels, lo, hi);
      }
    }
  }
}

/**
 * One image and group of a float32 2-D convolution as one GEMM whose B, the im2col matrix, is made in wasm memory
 * slice by slice ({@linkcode gemmIm2colF32}); false (nothing done) where that does not apply.
 */
function im2colGemm(
  args: ConvArgs,
  geom: WindowGeometry,
  xOff: number,
  g: number,
  yOff: number,
  lo: number,
  hi: number,
): boolean {
  const { x, w, y } = args;
  if (geom.inShape.length !== 2 || !(x instanceof Float32Array && w instanceof Float32Array)) return false;
  if (!(y instanceof Float32Array)) return false;
  const cinG = args.inChannels / args.group;
  const coutG = args.outChannels / args.group;
  const kg = cinG * geom.kernel[0] * geom.kernel[1];
  return gemmIm2colF32({
    m: coutG,
    n: geom.outShape[0] * geom.outShape[1],
    k: kg,
    a: w,
    aOffset: g * coutG * kg,
    c: y,
    cOffset: yOff,
    epilogue: { bias: args.bias, biasOffset: g * coutG, lo, hi },
    constantA: args.constantWeights ?? false,
    im2col: { ...geom, x, xOffset: xOff, channels: cinG, p0: 0 },
  });
}

/** `y[off..off+count]` clamped to `[lo, hi]` in place (as Clip: `t = v < lo ? lo : v`, then `t > hi ? hi : t`). */
function clampValues(y: FloatArray, off: number, count: number, lo: number, hi: number): void {
  if (lo === -Infinity && hi === Infinity) return;
  for (let i = off; i < off + count; i++) {
    const v = y[i];
    const t = v < lo ? lo : v;
    y[i] = t > hi ? hi : t;
  }
}

/** Operands of {@linkcode dotRows}. */
export interface DotRowsArgs {
  /** Row-major matrix storage, `rows x k` from `aOffset`. */
  a: FloatArray;
  /** Index of the matrix's first element. */
  aOffset: number;
  /** Rows of the matrix (results). */
  rows: number;
  /** Row length. */
  k: number;
  /** Vector of `k` contiguous elements from `xOffset`. */
  x: FloatArray;
  /** Index of the vector's first element. */
  xOffset: number;
  /** Results: `y[yOffset + r * yStride]` for each row `r`, overwritten. */
  y: FloatArray;
  /** Index of the first result. */
  yOffset: number;
  /** Distance between results. */
  yStride: number;
}

/**
 * Matrix times vector, `y[r] = sum over i of a[r, i] * x[i]`: the shape of a
 * convolution with one output position or a Gemm with one row, where packing
 * for the blocked {@linkcode gemm} costs as much as the products. All float32:
 * summed in float32 by WebAssembly SIMD ({@linkcode matVecF32}, like the
 * float32 GEMM); otherwise accumulated in float64 in order of `i`.
 *
 * @param args Operands and layout.
 *
 * @example A 2x3 matrix times a vector
 * ```ts
 * import assert from "node:assert/strict";
 * import { dotRows } from "./conv_kernels.ts";
 * const y = new Float32Array(2);
 * dotRows({ a: new Float32Array([1, 2, 3, 4, 5, 6]), aOffset: 0, rows: 2, k: 3, x: new Float32Array([1, 0, -1]), xOffset: 0, y, yOffset: 0, yStride: 1 });
 * assert.deepEqual([...y], [-2, -2]);
 * ```
 */
export function dotRows(args: DotRowsArgs): void {
  const { a, aOffset, rows, k, x, xOffset, y, yOffset, yStride } = args;
  if (a instanceof Float32Array && x instanceof Float32Array && y instanceof Float32Array) {
    if (dotScratch.length < rows) dotScratch = new Float32Array(rows);
    if (matVecF32(a, aOffset, rows, k, x, xOffset, dotScratch)) {
      for (let r = 0; r < rows; r++) y[yOffset + r * yStride] = dotScratch[r];
      return;
    }
  }
  for (let r = 0; r < rows; r++) {
    const row = aOffset + r * k;
    let s0 = 0;
    for (let i = 0; i < k; i++) s0 += a[row + i] * x[xOffset + i];
    y[yOffset + r * yStride] = s0;
  }
}

let dotScratch = new Float32Array(0);

/** `y[c, i] += bias[c]` over `channels` planes of `plane` elements from `yOff`. */
function addChannelBias(y: FloatArray, bias: FloatArray, yOff: number, channels: number, plane: number): void {
  for (let c = 0; c < channels; c++) {
    const b = bias[c];
    if (b === 0) continue;
    const off = yOff + c * plane;
    for (let i = 0; i < plane; i++) y[off + i] += b;
  }
}

/** First output index `o` in `[0, outLen]` whose tap `o * stride + offset` is not before the input start. */
function firstInside(offset: number, stride: number, outLen: number): number {
  return offset >= 0 ? 0 : Math.min(outLen, Math.ceil(-offset / stride));
}

/** One past the last output index `o < outLen` whose tap `o * stride + offset` lies in `[0, inLen)`; at least `lo`. */
function endInside(offset: number, stride: number, inLen: number, outLen: number, lo: number): number {
  const end = offset > inLen - 1 ? 0 : Math.min(outLen, Math.floor((inLen - 1 - offset) / stride) + 1);
  return Math.max(lo, end);
}

/**
 * Columns `p0..p0+len` of the im2col matrix of one image and group: row
 * `(c * KH + ky) * KW + kx`, column = output position, value = the input tap
 * (0 in padding). Other spatial ranks than 2 go through {@linkcode im2colNd}.
 */
function im2col(
  x: FloatArray,
  xOff: number,
  channels: number,
  g: WindowGeometry,
  p0: number,
  len: number,
  col: FloatArray,
): void {
  if (g.inShape.length !== 2) return im2colNd(x, xOff, channels, g, p0, len, col);
  if (
    x instanceof Float32Array && col instanceof Float32Array &&
    im2colF32({ ...g, x, xOffset: xOff, channels, p0 }, len, col, 0)
  ) {
    return;
  }
  const [H, W] = g.inShape;
  const Wo = g.outShape[1];
  const [KH, KW] = g.kernel;
  const [sh, sw] = g.strides;
  const [dh, dw] = g.dilations;
  const [ph, pw] = g.padsBegin;
  let dst = 0;
  for (let c = 0; c < channels; c++) {
    const plane = xOff + c * H * W;
    for (let ky = 0; ky < KH; ky++) {
      for (let kx = 0; kx < KW; kx++) {
        let oh = Math.floor(p0 / Wo);
        let ow = p0 - oh * Wo;
        let left = len;
        while (left > 0) {
          const seg = Math.min(Wo - ow, left);
          const ih = oh * sh - ph + ky * dh;
          if (ih < 0 || ih >= H) {
            col.fill(0, dst, dst + seg);
          } else {
            // Taps of this row segment: iw = (ow + t) * sw + base.
            const base = ow * sw - pw + kx * dw;
            const lo = firstInside(base, sw, seg);
            const hi = endInside(base, sw, W, seg, lo);
            const src = plane + ih * W + base;
            for (let t = 0; t < lo; t++) col[dst + t] = 0;
            if (sw === 1) { for (let t = lo; t < hi; t++) col[dst + t] = x[src + t]; }
            else for (let t = lo; t < hi; t++) col[dst + t] = x[src + t * sw];
            for (let t = hi; t < seg; t++) col[dst + t] = 0;
          }
          dst += seg;
          left -= seg;
          oh++;
          ow = 0;
        }
      }
    }
  }
}

/** Row-major index `i` as coordinates of `shape`, written into `out`. */
export function unflatten(i: number, shape: readonly number[], out: number[]): void {
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
}

/** Offset of the input tap of output position `pos` and kernel tap `tap`, or -1 in padding. */
function tapOffset(g: WindowGeometry, pos: readonly number[], tap: readonly number[]): number {
  let off = 0;
  for (let d = 0; d < pos.length; d++) {
    const i = pos[d] * g.strides[d] - g.padsBegin[d] + tap[d] * g.dilations[d];
    if (i < 0 || i >= g.inShape[d]) return -1;
    off = off * g.inShape[d] + i;
  }
  return off;
}

/** {@linkcode im2col} for any spatial rank (slower: per-element index arithmetic). */
function im2colNd(
  x: FloatArray,
  xOff: number,
  channels: number,
  g: WindowGeometry,
  p0: number,
  len: number,
  col: FloatArray,
): void {
  const rank = g.inShape.length;
  const kernelSize = product(g.kernel);
  const spatialIn = product(g.inShape);
  const tap = new Array<number>(rank).fill(0);
  const pos = new Array<number>(rank).fill(0);
  let dst = 0;
  for (let c = 0; c < channels; c++) {
    for (let k = 0; k < kernelSize; k++) {
      unflatten(k, g.kernel, tap);
      for (let p = p0; p < p0 + len; p++) {
        unflatten(p, g.outShape, pos);
        const off = tapOffset(g, pos, tap);
        col[dst++] = off < 0 ? 0 : x[xOff + c * spatialIn + off];
      }
    }
  }
}

/**
 * Depthwise 2-D convolution: output channel `oc` reads input channel
 * `floor(oc / multiplier)` only. Each input plane is first copied into a
 * zero-bordered float64 scratch plane, so every window lies inside it and the
 * loops need no bounds tests; each output is `bias + sum of w * x` over the
 * taps in row-major order, accumulated in float64 (padding adds exact zeros).
 * 3x3 and 5x5 windows have unrolled loops.
 */
function depthwise2d(args: ConvArgs, g: WindowGeometry): void {
  const { x, w, y, batch, inChannels, outChannels } = args;
  const [H, W] = g.inShape;
  const [Ho, Wo] = g.outShape;
  const [KH, KW] = g.kernel;
  const [sh, sw] = g.strides;
  const [dh, dw] = g.dilations;
  const [ph, pw] = g.padsBegin;
  const multiplier = outChannels / inChannels;
  if (x instanceof Float32Array && y instanceof Float32Array && KH * KW <= SIMD_MAX_TAPS) {
    const simd = simdDepthwise();
    if (simd !== null) return depthwise2dSimd(args, g, simd);
  }
  // The padded plane covers every tap: input row ih is scratch row ih + ph.
  const Hp = Math.max(H + ph, (Ho - 1) * sh + (KH - 1) * dh + 1);
  const Wp = Math.max(W + pw, (Wo - 1) * sw + (KW - 1) * dw + 1);
  if (paddedPlane.length < Hp * Wp) paddedPlane = new Float64Array(Hp * Wp);
  const xp = paddedPlane;
  xp.fill(0, 0, Hp * Wp);
  for (let n = 0; n < batch; n++) {
    for (let ic = 0; ic < inChannels; ic++) {
      const xPlane = (n * inChannels + ic) * H * W;
      for (let ih = 0; ih < H; ih++) {
        const dst = (ih + ph) * Wp + pw;
        const src = xPlane + ih * W;
        for (let iw = 0; iw < W; iw++) xp[dst + iw] = x[src + iw];
      }
      for (let m = 0; m < multiplier; m++) {
        const oc = ic * multiplier + m;
        const plane: DepthwisePlane = {
          xp,
          Wp,
          w,
          wOff: oc * KH * KW,
          bias: args.bias === null ? 0 : args.bias[oc],
          y,
          yOff: (n * outChannels + oc) * Ho * Wo,
          Ho,
          Wo,
          sh,
          sw,
          dh,
          dw,
        };
        if (KH === 3 && KW === 3) depthwisePlane3x3(plane);
        else if (KH === 5 && KW === 5) depthwisePlane5x5(plane);
        else depthwisePlaneAny(plane, KH, KW);
        clampValues(y, plane.yOff, Ho * Wo, ...(args.clamp ?? [-Infinity, Infinity]));
      }
    }
  }
}

let paddedPlane = new Float64Array(0);

/** The SIMD depthwise kernel: its memory and the one function (see {@linkcode depthwiseModuleBytes}). */
interface SimdDepthwise {
  memory: WebAssembly.Memory;
  depthwise: () => void;
}

/** Most taps of the SIMD depthwise kernel (their byte offsets sit between the header and the data). */
const SIMD_MAX_TAPS = 256;

const simdDepthwise = lazyWasm(depthwiseModuleBytes, (exports): SimdDepthwise => ({
  memory: exports.memory as WebAssembly.Memory,
  depthwise: exports.depthwise as () => void,
}));

/**
 * Depthwise float32 convolution in WebAssembly SIMD (one call per image; see
 * `wasm_depthwise.ts`): four adjacent outputs accumulate in float32 lanes,
 * `bias + sum of w * x` over the taps in row-major order (the float64 path's
 * order, in float32 arithmetic). The zero-bordered input plane is staged split
 * into `sw` column phases (padded column `c` at index `c / sw` of phase
 * `c mod sw`), so that with any stride and dilation a tap's four lanes are
 * adjacent floats of one phase.
 */
function depthwise2dSimd(args: ConvArgs, g: WindowGeometry, simd: SimdDepthwise): void {
  const { x, w, y, batch, inChannels, outChannels } = args;
  const [H, W] = g.inShape;
  const [Ho, Wo] = g.outShape;
  const [KH, KW] = g.kernel;
  const [sh, sw] = g.strides;
  const [dh, dw] = g.dilations;
  const [ph, pw] = g.padsBegin;
  const taps = KH * KW;
  const Wo4 = Math.ceil(Wo / 4) * 4; // the last lanes of a row read the border and are dropped
  const Hp = Math.max(H + ph, (Ho - 1) * sh + (KH - 1) * dh + 1);
  // Phase rows hold every index an output reads (ow + kx dw / sw for ow < Wo4); with sw = 1 the whole input row too.
  const Wq = Math.max(Wo4 + Math.floor(((KW - 1) * dw) / sw), sw === 1 ? W + pw : 0);
  const phaseFloats = Hp * Wq;
  // Memory in floats after the header and tap offsets: weights, bias, image, planes, result.
  const align = (floats: number): number => Math.ceil(floats / 4) * 4;
  const weightBase = align(DEPTHWISE_TAP_OFFSETS / 4 + SIMD_MAX_TAPS);
  const biasBase = weightBase + align(outChannels * taps);
  const inBase = biasBase + align(outChannels);
  const planeBase = inBase + align(inChannels * H * W);
  const outBase = planeBase + align(sw * phaseFloats);
  const bytes = 4 * (outBase + outChannels * Ho * Wo + 4);
  if (simd.memory.buffer.byteLength < bytes) {
    simd.memory.grow(Math.ceil((bytes - simd.memory.buffer.byteLength) / 65536));
  }
  const heap = new Float32Array(simd.memory.buffer);
  const header = new Int32Array(simd.memory.buffer, 0, DEPTHWISE_TAP_OFFSETS / 4 + taps);
  const fields: Record<(typeof DEPTHWISE_HEADER)[number], number> = {
    channels: inChannels,
    multiplier: outChannels / inChannels,
    H,
    W,
    columns: Math.max(0, Math.min(W, Wq * sw - pw)),
    sw,
    phase0: pw % sw,
    index0: Math.floor(pw / sw),
    padTop: ph,
    Wq,
    phaseBytes: 4 * phaseFloats,
    Ho,
    Wo,
    Wo4,
    rowBytes: 4 * sh * Wq,
    tapBytes: 4 * taps,
    inBase: 4 * inBase,
    planeBase: 4 * planeBase,
    outBase: 4 * outBase,
    weightBase: 4 * weightBase,
    biasBase: 4 * biasBase,
    lo: 0,
    hi: 0,
  };
  DEPTHWISE_HEADER.forEach((field, i) => header[i] = fields[field]);
  // The clamp bounds are float32 bits in their header fields.
  const bounds = new Float32Array(simd.memory.buffer, 0, DEPTHWISE_HEADER.length);
  [bounds[DEPTHWISE_HEADER.indexOf("lo")], bounds[DEPTHWISE_HEADER.indexOf("hi")]] = args.clamp ??
    [-Infinity, Infinity];
  for (let ky = 0; ky < KH; ky++) {
    for (let kx = 0; kx < KW; kx++) {
      const c = kx * dw;
      header[DEPTHWISE_TAP_OFFSETS / 4 + ky * KW + kx] = 4 *
        ((c % sw) * phaseFloats + ky * dh * Wq + Math.floor(c / sw));
    }
  }
  heap.set(w.subarray(0, outChannels * taps), weightBase);
  if (args.bias === null) heap.fill(0, biasBase, biasBase + outChannels);
  else heap.set(args.bias.subarray(0, outChannels), biasBase);
  heap.fill(0, planeBase, planeBase + sw * phaseFloats);
  const image = inChannels * H * W, result = outChannels * Ho * Wo;
  for (let n = 0; n < batch; n++) {
    heap.set(x.subarray(n * image, (n + 1) * image), inBase);
    simd.depthwise();
    (y as Float32Array).set(heap.subarray(outBase, outBase + result), n * result);
  }
}

/** One output plane of a depthwise convolution over a padded float64 input plane. */
interface DepthwisePlane {
  xp: Float64Array;
  Wp: number;
  w: FloatArray;
  wOff: number;
  bias: number;
  y: FloatArray;
  yOff: number;
  Ho: number;
  Wo: number;
  sh: number;
  sw: number;
  dh: number;
  dw: number;
}

function depthwisePlaneAny(p: DepthwisePlane, KH: number, KW: number): void {
  const { xp, Wp, w, wOff, bias, y, yOff, Ho, Wo, sh, sw, dh, dw } = p;
  for (let oh = 0; oh < Ho; oh++) {
    const row = yOff + oh * Wo;
    for (let ow = 0; ow < Wo; ow++) {
      let acc = bias;
      for (let ky = 0; ky < KH; ky++) {
        const src = (oh * sh + ky * dh) * Wp + ow * sw;
        const wk = wOff + ky * KW;
        for (let kx = 0; kx < KW; kx++) acc += w[wk + kx] * xp[src + kx * dw];
      }
      y[row + ow] = acc;
    }
  }
}

function depthwisePlane3x3(p: DepthwisePlane): void {
  const { xp, Wp, w, wOff, bias, y, yOff, Ho, Wo, sh, sw, dh, dw } = p;
  const w0 = w[wOff], w1 = w[wOff + 1], w2 = w[wOff + 2];
  const w3 = w[wOff + 3], w4 = w[wOff + 4], w5 = w[wOff + 5];
  const w6 = w[wOff + 6], w7 = w[wOff + 7], w8 = w[wOff + 8];
  const d1 = dw, d2 = 2 * dw;
  for (let oh = 0; oh < Ho; oh++) {
    const row = yOff + oh * Wo;
    const r0 = oh * sh * Wp, r1 = r0 + dh * Wp, r2 = r1 + dh * Wp;
    for (let ow = 0, c = 0; ow < Wo; ow++, c += sw) {
      y[row + ow] = bias + w0 * xp[r0 + c] + w1 * xp[r0 + c + d1] + w2 * xp[r0 + c + d2] +
        w3 * xp[r1 + c] + w4 * xp[r1 + c + d1] + w5 * xp[r1 + c + d2] +
        w6 * xp[r2 + c] + w7 * xp[r2 + c + d1] + w8 * xp[r2 + c + d2];
    }
  }
}

function depthwisePlane5x5(p: DepthwisePlane): void {
  const { xp, Wp, w, wOff, bias, y, yOff, Ho, Wo, sh, sw, dh, dw } = p;
  const d1 = dw, d2 = 2 * dw, d3 = 3 * dw, d4 = 4 * dw;
  const k0 = w[wOff], k1 = w[wOff + 1], k2 = w[wOff + 2], k3 = w[wOff + 3], k4 = w[wOff + 4];
  const k5 = w[wOff + 5], k6 = w[wOff + 6], k7 = w[wOff + 7], k8 = w[wOff + 8], k9 = w[wOff + 9];
  const k10 = w[wOff + 10], k11 = w[wOff + 11], k12 = w[wOff + 12], k13 = w[wOff + 13], k14 = w[wOff + 14];
  const k15 = w[wOff + 15], k16 = w[wOff + 16], k17 = w[wOff + 17], k18 = w[wOff + 18], k19 = w[wOff + 19];
  const k20 = w[wOff + 20], k21 = w[wOff + 21], k22 = w[wOff + 22], k23 = w[wOff + 23], k24 = w[wOff + 24];
  for (let oh = 0; oh < Ho; oh++) {
    const row = yOff + oh * Wo;
    const r0 = oh * sh * Wp, r1 = r0 + dh * Wp, r2 = r1 + dh * Wp, r3 = r2 + dh * Wp, r4 = r3 + dh * Wp;
    for (let ow = 0, c = 0; ow < Wo; ow++, c += sw) {
      let acc = bias + k0 * xp[r0 + c] + k1 * xp[r0 + c + d1] + k2 * xp[r0 + c + d2] + k3 * xp[r0 + c + d3] +
        k4 * xp[r0 + c + d4];
      acc = acc + k5 * xp[r1 + c] + k6 * xp[r1 + c + d1] + k7 * xp[r1 + c + d2] + k8 * xp[r1 + c + d3] +
        k9 * xp[r1 + c + d4];
      acc = acc + k10 * xp[r2 + c] + k11 * xp[r2 + c + d1] + k12 * xp[r2 + c + d2] + k13 * xp[r2 + c + d3] +
        k14 * xp[r2 + c + d4];
      acc = acc + k15 * xp[r3 + c] + k16 * xp[r3 + c + d1] + k17 * xp[r3 + c + d2] + k18 * xp[r3 + c + d3] +
        k19 * xp[r3 + c + d4];
      y[row + ow] = acc + k20 * xp[r4 + c] + k21 * xp[r4 + c + d1] + k22 * xp[r4 + c + d2] + k23 * xp[r4 + c + d3] +
        k24 * xp[r4 + c + d4];
    }
  }
}

/**
 * Operands and sizes of {@linkcode convolveTranspose}: those of a convolution,
 * with weights `[inChannels, outChannels / group, ...kernel]` (IOHW) and the
 * geometry seen from the output (`outShape` is the larger).
 */
export type ConvTransposeArgs = ConvArgs;

/**
 * ONNX ConvTranspose on float storage: every input element scatters
 * `x * w[ic, oc, tap]` to output position `in * stride - padBegin + tap * dilation`
 * (the adjoint of Conv). Computed as `col = W^T X` by GEMM, then col2im.
 *
 * @param args Operands, sizes and geometry (`padsBegin` already resolved from output_shape/auto_pad).
 *
 * @example Stride-2 upsampling of one pixel with a 2x2 kernel
 * ```ts
 * import assert from "node:assert/strict";
 * import { convolveTranspose } from "./conv_kernels.ts";
 * const y = new Float32Array(4);
 * convolveTranspose({
 *   x: new Float32Array([2]), w: new Float32Array([1, 2, 3, 4]), bias: null, y,
 *   batch: 1, inChannels: 1, outChannels: 1, group: 1,
 *   inShape: [1, 1], outShape: [2, 2], kernel: [2, 2], strides: [2, 2], dilations: [1, 1], padsBegin: [0, 0],
 * });
 * assert.deepEqual([...y], [2, 4, 6, 8]);
 * ```
 */
export function convolveTranspose(args: ConvTransposeArgs): void {
  const { x, w, y, batch, inChannels, outChannels, group } = args;
  const spatialIn = product(args.inShape);
  const spatialOut = product(args.outShape);
  const kernelSize = product(args.kernel);
  const cinG = inChannels / group;
  const coutG = outChannels / group;
  const rows = coutG * kernelSize;
  const chunk = Math.max(1, Math.min(spatialIn, Math.floor(COL_BUDGET / Math.max(1, rows))));
  const col = scratchLike(x, rows * chunk);
  y.fill(0);
  for (let n = 0; n < batch; n++) {
    for (let g = 0; g < group; g++) {
      const xOff = (n * inChannels + g * cinG) * spatialIn;
      const yOff = (n * outChannels + g * coutG) * spatialOut;
      for (let p0 = 0; p0 < spatialIn; p0 += chunk) {
        const len = Math.min(chunk, spatialIn - p0);
        // col[(oc, tap), p] = sum over ic of W[ic, oc, tap] * X[ic, p]: W_g is stored cinG x rows.
        gemm({
          m: rows,
          n: len,
          k: cinG,
          a: w,
          aOffset: g * cinG * rows,
          lda: rows,
          transA: true,
          b: x,
          bOffset: xOff + p0,
          ldb: spatialIn,
          c: col,
        });
        col2im(col, coutG, args, p0, len, y, yOff);
      }
    }
  }
  if (args.bias !== null) {
    for (let n = 0; n < batch; n++) addChannelBias(y, args.bias, n * outChannels * spatialOut, outChannels, spatialOut);
  }
}

/** Scatter-add columns `p0..p0+len` (input positions) of `col` into the output planes at `yOff`. */
function col2im(
  col: FloatArray,
  channels: number,
  g: WindowGeometry,
  p0: number,
  len: number,
  y: FloatArray,
  yOff: number,
): void {
  const rank = g.inShape.length;
  const kernelSize = product(g.kernel);
  const spatialOut = product(g.outShape);
  const tap = new Array<number>(rank).fill(0);
  const pos = new Array<number>(rank).fill(0);
  let src = 0;
  for (let c = 0; c < channels; c++) {
    const plane = yOff + c * spatialOut;
    for (let k = 0; k < kernelSize; k++) {
      unflatten(k, g.kernel, tap);
      for (let p = p0; p < p0 + len; p++, src++) {
        unflatten(p, g.inShape, pos);
        let off = 0;
        for (let d = 0; d < rank; d++) {
          const o = pos[d] * g.strides[d] - g.padsBegin[d] + tap[d] * g.dilations[d];
          if (o < 0 || o >= g.outShape[d]) {
            off = -1;
            break;
          }
          off = off * g.outShape[d] + o;
        }
        if (off >= 0) y[plane + off] += col[src];
      }
    }
  }
}

/** Numeric element storage the pooling kernels read (no 64-bit integers). */
export type NumberArray = FloatArray | Int8Array | Uint8Array | Int16Array | Uint16Array | Int32Array | Uint32Array;

/** Operands and sizes of {@linkcode maxPool} and {@linkcode averagePool}. */
export interface PoolArgs extends WindowGeometry {
  /** Input, `[planes, ...inShape]` (planes = batch x channels). */
  x: NumberArray;
  /** Output, `[planes, ...outShape]`; fully overwritten. */
  y: NumberArray;
  /** Batch x channels. */
  planes: number;
}

/** Options of {@linkcode maxPool}. */
export interface MaxPoolOptions {
  /** When given, receives the flat input index of each maximum (ONNX MaxPool `Indices`). */
  indices?: BigInt64Array;
  /** ONNX `storage_order`: 0 row-major indices, 1 column-major (spatial axes reversed). */
  storageOrder?: number;
}

/** A max-pooling window's sizes, steps and input row length. */
interface PoolWindow {
  W: number;
  KH: number;
  KW: number;
  sw: number;
  dh: number;
  dw: number;
}

/**
 * Outputs `colLo..colHi` of one output row whose windows lie inside the input (no bounds tests): `y[yRow + ow]` is
 * the maximum of the taps from `x[base + ow * sw]`, the first tap starting it (`v > best` keeps a NaN only there).
 */
function maxRowInterior(
  x: NumberArray,
  base: number,
  y: NumberArray,
  yRow: number,
  colLo: number,
  colHi: number,
  p: PoolWindow,
): void {
  const { W, KH, KW, sw, dh, dw } = p;
  for (let ow = colLo; ow < colHi; ow++) {
    const start = base + ow * sw;
    let best = x[start];
    for (let ky = 0; ky < KH; ky++) {
      const row = start + ky * dh * W;
      for (let kx = 0; kx < KW; kx++) {
        const v = x[row + kx * dw];
        if (v > best) best = v;
      }
    }
    y[yRow + ow] = best;
  }
}

/** {@linkcode maxRowInterior} for 3x3 windows, the taps unrolled (the same comparisons in the same order). */
function maxRowInterior3x3(
  x: NumberArray,
  base: number,
  y: NumberArray,
  yRow: number,
  colLo: number,
  colHi: number,
  p: PoolWindow,
): void {
  const { W, sw, dh, dw } = p;
  const [r1, r2, c1, c2] = [dh * W, 2 * dh * W, dw, 2 * dw];
  for (let ow = colLo; ow < colHi; ow++) {
    const s = base + ow * sw;
    let best = x[s];
    let v = x[s + c1];
    best = v > best ? v : best;
    v = x[s + c2];
    best = v > best ? v : best;
    v = x[s + r1];
    best = v > best ? v : best;
    v = x[s + r1 + c1];
    best = v > best ? v : best;
    v = x[s + r1 + c2];
    best = v > best ? v : best;
    v = x[s + r2];
    best = v > best ? v : best;
    v = x[s + r2 + c1];
    best = v > best ? v : best;
    v = x[s + r2 + c2];
    best = v > best ? v : best;
    y[yRow + ow] = best;
  }
}

/**
 * ONNX MaxPool: the largest input tap of each window; padding never wins (it
 * is -infinity). With `indices`, also the flat index of the (first) maximum
 * over `[planes, ...inShape]`, as ONNX defines `Indices`.
 *
 * @param args Operands, sizes and geometry.
 * @param options Indices output and its storage order.
 *
 * @example 2x2 max pooling with stride 2
 * ```ts
 * import assert from "node:assert/strict";
 * import { maxPool } from "./conv_kernels.ts";
 * const y = new Float32Array(1);
 * maxPool({
 *   x: new Float32Array([1, 5, 3, 2]), y, planes: 1,
 *   inShape: [2, 2], outShape: [1, 1], kernel: [2, 2], strides: [2, 2], dilations: [1, 1], padsBegin: [0, 0],
 * });
 * assert.deepEqual([...y], [5]);
 * ```
 */
export function maxPool(args: PoolArgs, options: MaxPoolOptions = {}): void {
  const g = as2d(args);
  const { x, y, planes } = args;
  const indices = options.indices ?? null;
  const columnMajor = (options.storageOrder ?? 0) === 1;
  const spatialIn = product(g.inShape);
  const spatialOut = product(g.outShape);
  if (g.inShape.length === 2) {
    const [H, W] = g.inShape;
    const [Ho, Wo] = g.outShape;
    const [KH, KW] = g.kernel;
    const [sh, sw] = g.strides;
    const [dh, dw] = g.dilations;
    const [ph, pw] = g.padsBegin;
    // Outputs whose window lies inside the input: rows [rowLo, rowHi), columns [colLo, colHi).
    const rowLo = firstInside(-ph, sh, Ho), rowHi = Math.max(rowLo, endInside(-ph + (KH - 1) * dh, sh, H, Ho, rowLo));
    const colLo = firstInside(-pw, sw, Wo), colHi = Math.max(colLo, endInside(-pw + (KW - 1) * dw, sw, W, Wo, colLo));
    for (let c = 0; c < planes; c++) {
      const xPlane = c * spatialIn;
      const yPlane = c * spatialOut;
      for (let oh = 0; oh < Ho; oh++) {
        const h0 = oh * sh - ph;
        const inside = indices === null && oh >= rowLo && oh < rowHi;
        for (let ow = 0; ow < Wo; ow++) {
          const w0 = ow * sw - pw;
          if (inside && ow === colLo && colHi > colLo) {
            const base = xPlane + h0 * W - pw;
            const window = { W, KH, KW, sw, dh, dw };
            if (KH === 3 && KW === 3) maxRowInterior3x3(x, base, y, yPlane + oh * Wo, colLo, colHi, window);
            else maxRowInterior(x, base, y, yPlane + oh * Wo, colLo, colHi, window);
            ow = colHi - 1;
            continue;
          }
          let best = -Infinity;
          let arg = -1;
          for (let ky = 0; ky < KH; ky++) {
            const ih = h0 + ky * dh;
            if (ih < 0 || ih >= H) continue;
            for (let kx = 0; kx < KW; kx++) {
              const iw = w0 + kx * dw;
              if (iw < 0 || iw >= W) continue;
              const v = x[xPlane + ih * W + iw];
              if (v > best || arg < 0) {
                best = v;
                arg = columnMajor ? iw * H + ih : ih * W + iw;
              }
            }
          }
          y[yPlane + oh * Wo + ow] = best;
          if (indices !== null) indices[yPlane + oh * Wo + ow] = BigInt(xPlane + arg);
        }
      }
    }
    return;
  }
  const rank = g.inShape.length;
  const kernelSize = product(g.kernel);
  const tap = new Array<number>(rank).fill(0);
  const pos = new Array<number>(rank).fill(0);
  for (let c = 0; c < planes; c++) {
    for (let p = 0; p < spatialOut; p++) {
      unflatten(p, g.outShape, pos);
      let best = -Infinity;
      let arg = -1;
      for (let k = 0; k < kernelSize; k++) {
        unflatten(k, g.kernel, tap);
        const off = tapOffset(g, pos, tap);
        if (off < 0) continue;
        const v = x[c * spatialIn + off];
        if (v > best || arg < 0) {
          best = v;
          arg = columnMajor ? columnMajorIndex(g, pos, tap) : off;
        }
      }
      y[c * spatialOut + p] = best;
      if (indices !== null) indices[c * spatialOut + p] = BigInt(c * spatialIn + arg);
    }
  }
}

/** Flat index of a tap with the spatial axes in reversed (column-major) order. */
function columnMajorIndex(g: WindowGeometry, pos: readonly number[], tap: readonly number[]): number {
  let off = 0;
  for (let d = pos.length - 1; d >= 0; d--) {
    off = off * g.inShape[d] + pos[d] * g.strides[d] - g.padsBegin[d] + tap[d] * g.dilations[d];
  }
  return off;
}

/** Options of {@linkcode averagePool}. */
export interface AveragePoolOptions {
  /** ONNX `count_include_pad`: divide by the taps inside the padded input, not only the real ones. */
  countIncludePad?: boolean;
  /** ONNX end pads, needed for `countIncludePad` (a window's overhang past them never counts). */
  padsEnd?: readonly number[];
}

/**
 * ONNX AveragePool: the mean of each window's taps inside the input, or with
 * `countIncludePad` inside the padded input (`[-padBegin, in + padEnd)`; taps a
 * ceil-mode window has beyond that never count, as in onnxruntime).
 *
 * @param args Operands, sizes and geometry.
 * @param options Padding count mode.
 *
 * @example 2x2 average pooling
 * ```ts
 * import assert from "node:assert/strict";
 * import { averagePool } from "./conv_kernels.ts";
 * const y = new Float32Array(1);
 * averagePool({
 *   x: new Float32Array([1, 5, 3, 3]), y, planes: 1,
 *   inShape: [2, 2], outShape: [1, 1], kernel: [2, 2], strides: [2, 2], dilations: [1, 1], padsBegin: [0, 0],
 * });
 * assert.deepEqual([...y], [3]);
 * ```
 */
export function averagePool(args: PoolArgs, options: AveragePoolOptions = {}): void {
  const g = as2d(args);
  const { x, y, planes } = args;
  const rank = g.inShape.length;
  const includePad = options.countIncludePad ?? false;
  const padsEnd = options.padsEnd === undefined
    ? new Array<number>(rank).fill(0)
    : rank === args.inShape.length
    ? options.padsEnd
    : [0, options.padsEnd[0]];
  // Per axis and output index: the first and last+1 kernel taps that count (separable), and which taps read input.
  const counted: Int32Array[] = [];
  for (let d = 0; d < rank; d++) {
    const t = new Int32Array(g.outShape[d]);
    for (let o = 0; o < g.outShape[d]; o++) {
      let n = 0;
      for (let k = 0; k < g.kernel[d]; k++) {
        const i = o * g.strides[d] - g.padsBegin[d] + k * g.dilations[d];
        const lo = includePad ? -g.padsBegin[d] : 0;
        const hi = includePad ? g.inShape[d] + padsEnd[d] : g.inShape[d];
        if (i >= lo && i < hi) n++;
      }
      t[o] = n;
    }
    counted.push(t);
  }
  const spatialIn = product(g.inShape);
  const spatialOut = product(g.outShape);
  if (rank === 2) {
    const [H, W] = g.inShape;
    const [Ho, Wo] = g.outShape;
    const [KH, KW] = g.kernel;
    const [sh, sw] = g.strides;
    const [dh, dw] = g.dilations;
    const [ph, pw] = g.padsBegin;
    const [countH, countW] = counted;
    for (let c = 0; c < planes; c++) {
      const xPlane = c * spatialIn;
      const yPlane = c * spatialOut;
      for (let oh = 0; oh < Ho; oh++) {
        const h0 = oh * sh - ph;
        for (let ow = 0; ow < Wo; ow++) {
          const w0 = ow * sw - pw;
          let sum = 0;
          for (let ky = 0; ky < KH; ky++) {
            const ih = h0 + ky * dh;
            if (ih < 0 || ih >= H) continue;
            for (let kx = 0; kx < KW; kx++) {
              const iw = w0 + kx * dw;
              if (iw >= 0 && iw < W) sum += x[xPlane + ih * W + iw];
            }
          }
          y[yPlane + oh * Wo + ow] = sum / (countH[oh] * countW[ow]);
        }
      }
    }
    return;
  }
  const kernelSize = product(g.kernel);
  const tap = new Array<number>(rank).fill(0);
  const pos = new Array<number>(rank).fill(0);
  for (let c = 0; c < planes; c++) {
    for (let p = 0; p < spatialOut; p++) {
      unflatten(p, g.outShape, pos);
      let sum = 0;
      for (let k = 0; k < kernelSize; k++) {
        unflatten(k, g.kernel, tap);
        const off = tapOffset(g, pos, tap);
        if (off >= 0) sum += x[c * spatialIn + off];
      }
      let count = 1;
      for (let d = 0; d < rank; d++) count *= counted[d][pos[d]];
      y[c * spatialOut + p] = sum / count;
    }
  }
}
