/**
 * The WebAssembly SIMD depthwise convolution of `conv_kernels.ts`: one call
 * per image stages every input channel into zero-bordered planes and sums
 * four adjacent outputs per f32x4, for any stride and dilation, so a layer of
 * many small planes costs one call instead of one per plane.
 * @module
 */

import {
  ADD,
  BR_IF_0,
  doWhile,
  EQ,
  f32Load,
  f32Store,
  F32X4_ADD,
  F32X4_MUL,
  F32X4_PMAX,
  F32X4_PMIN,
  F32X4_SPLAT,
  get,
  I32,
  i32,
  i32Load,
  ifElse,
  ifThen,
  load32Splat,
  loadV128,
  LT_U,
  MEMORY_COPY,
  MUL,
  set,
  SHL,
  storeV128,
  SUB,
  tee,
  V128,
  wasmModule,
} from "./wasm_encode.ts";

/**
 * Fields of the header at byte 0 of the kernel's memory (one i32 each), which
 * the caller fills before a call: sizes in floats unless named bytes or base
 * (a byte address).
 */
export const DEPTHWISE_HEADER = [
  "channels", // input channels
  "multiplier", // output channels per input channel
  "H",
  "W",
  "columns", // input columns staged (those some output reads)
  "sw", // horizontal stride: the number of column phases
  "phase0", // phase of input column 0: padBegin mod sw
  "index0", // its index in the phase row: floor(padBegin / sw)
  "padTop", // plane row of input row 0
  "Wq", // floats per phase row
  "phaseBytes", // bytes per phase plane
  "Ho",
  "Wo",
  "Wo4", // Wo rounded up to 4
  "rowBytes", // bytes between the plane rows of successive output rows: sh * Wq * 4
  "tapBytes", // 4 * taps
  "inBase", // the image, channels x H x W
  "planeBase", // the phase planes (zero where nothing is staged)
  "outBase", // the result, outChannels x Ho x Wo (and 3 floats of slack)
  "weightBase", // outChannels x taps, row-major taps
  "biasBase", // outChannels
  "lo", // float32 bits: lower clamp bound (-Infinity for none)
  "hi", // float32 bits: upper clamp bound (Infinity for none)
] as const;
/** Byte address of the taps' byte offsets within the phase planes (i32, one per tap, after the header). */
export const DEPTHWISE_TAP_OFFSETS = 4 * DEPTHWISE_HEADER.length;

/**
 * The module: memory and `depthwise()`, which for the image and geometry the
 * header describes writes, per output channel `oc` (of input channel
 * `oc / multiplier`) and position, `bias[oc] + sum over taps t of w[oc, t] *
 * plane[oh * rowBytes + 16 (ow / 4) + offset[t]]` in float32, the taps in
 * order, each product rounded then added (no fused multiply-add), then clamped
 * to the header's `[lo, hi]` as Clip does (`t = v < lo ? lo : v`, then `t > hi ? hi : t`). Input column
 * `iw` is staged at phase `(iw + padBegin) mod sw`, index `(iw + padBegin) /
 * sw` of plane row `ih + padTop`.
 *
 * @returns The module's bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { depthwiseModuleBytes } from "./wasm_depthwise.ts";
 * assert.ok(WebAssembly.validate(depthwiseModuleBytes()));
 * ```
 */
export function depthwiseModuleBytes(): Uint8Array<ArrayBuffer> {
  const h = Object.fromEntries(DEPTHWISE_HEADER.map((field, i) => [field, i])) as Record<
    (typeof DEPTHWISE_HEADER)[number],
    number
  >;
  const work = DEPTHWISE_HEADER.length;
  const [ic, m, ih, iw, src, row, phase, index, bias, oh, ow, t, xRow, xPtr, yPtr, wPtr] = [
    ...Array(16).keys(),
  ].map((i) => work + i);
  const [acc, vBias, vLo, vHi] = [work + 16, work + 17, work + 18, work + 19];
  const addTo = (
    local: number,
    ...amount: number[][]
  ): number[] => [...get(local), ...amount.flat(), ADD, ...set(local)];
  const next = (local: number, by: number[], bound: number): number[] => [
    ...get(local),
    ...by,
    ADD,
    ...tee(local),
    ...get(bound),
    LT_U,
    ...BR_IF_0,
  ];
  // deno-fmt-ignore
  const body = [
    ...DEPTHWISE_HEADER.map((_, i) => [...i32(0), ...i32Load(4 * i), ...set(i)]),
    i32(4 * h.lo), f32Load(0), F32X4_SPLAT, set(vLo), i32(4 * h.hi), f32Load(0), F32X4_SPLAT, set(vHi),
    get(h.inBase), set(src), get(h.weightBase), set(wPtr), get(h.biasBase), set(bias), get(h.outBase), set(yPtr),
    i32(0), set(ic),
    doWhile( // input channels
      i32(0), set(ih),
      doWhile( // stage its rows
        get(ih), get(h.padTop), [ADD], get(h.Wq), [MUL], i32(2), [SHL], get(h.planeBase), [ADD], set(row),
        get(h.sw), i32(1), [EQ],
        ifElse(
          [[...get(row), ...get(h.index0), ...i32(2), SHL, ADD, ...get(src), ...get(h.W), ...i32(2), SHL, ...MEMORY_COPY]],
          [
            get(h.columns),
            ifThen(
              i32(0), set(iw), get(h.phase0), set(phase), get(h.index0), set(index),
              doWhile(
                get(row), get(phase), get(h.phaseBytes), [MUL], [ADD], get(index), i32(2), [SHL], [ADD],
                get(src), get(iw), i32(2), [SHL], [ADD], f32Load(0), f32Store(0),
                addTo(phase, i32(1)),
                get(phase), get(h.sw), [EQ],
                ifThen(i32(0), set(phase), addTo(index, i32(1))),
                next(iw, i32(1), h.columns),
              ),
            ),
          ],
        ),
        addTo(src, get(h.W), i32(2), [SHL]),
        next(ih, i32(1), h.H),
      ),
      i32(0), set(m),
      doWhile( // its output channels
        get(bias), f32Load(0), F32X4_SPLAT, set(vBias), addTo(bias, i32(4)),
        get(h.planeBase), set(xRow),
        i32(0), set(oh),
        doWhile( // output rows
          get(xRow), set(xPtr),
          i32(0), set(ow),
          doWhile( // four outputs at a time
            get(vBias), set(acc),
            i32(0), set(t),
            doWhile( // taps: acc += plane[xPtr + offset[t]] * splat(w[t])
              get(acc),
              get(xPtr), get(t), i32Load(DEPTHWISE_TAP_OFFSETS), [ADD], loadV128(0),
              get(wPtr), get(t), [ADD], load32Splat(0),
              F32X4_MUL, F32X4_ADD, set(acc),
              next(t, i32(4), h.tapBytes),
            ),
            // clamp: v < lo ? lo : v, then v > hi ? hi : v (pmax, pmin: NaN kept, as in JavaScript)
            get(yPtr), get(acc), get(vLo), F32X4_PMAX, get(vHi), F32X4_PMIN, storeV128(0),
            addTo(yPtr, i32(16)), addTo(xPtr, i32(16)),
            next(ow, i32(4), h.Wo4),
          ),
          // The next row starts Wo floats after this one (the lanes past Wo are overwritten by it).
          get(yPtr), get(h.Wo4), get(h.Wo), [SUB], i32(2), [SHL], [SUB], set(yPtr),
          addTo(xRow, get(h.rowBytes)),
          next(oh, i32(1), h.Ho),
        ),
        addTo(wPtr, get(h.tapBytes)),
        next(m, i32(1), h.multiplier),
      ),
      next(ic, i32(1), h.channels),
    ),
  ];
  return wasmModule([{
    name: "depthwise",
    params: [],
    locals: [...new Array(work + 16).fill(I32), V128, V128, V128, V128],
    body: body.flat(),
  }]);
}
