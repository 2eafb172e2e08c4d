/**
 * The WebAssembly SIMD micro-kernel of {@link ./gemm_kernel.ts}, emitted as
 * bytes (binary format, WebAssembly core spec §5) so no toolchain or `.wasm`
 * file is needed: a register tile of `rows x 8` float32 accumulators over packed
 * panels, with relaxed-SIMD fused multiply-add where the runtime validates it.
 * @module
 */

/** Columns of the register tile: two f32x4 vectors. */
export const TILE_COLUMNS = 8;
/** log2 of the reduction steps per pass of the kernel's inner loop (their offsets are immediates). */
const UNROLL_SHIFT = 2;

import {
  ADD,
  AND,
  BR_IF_0,
  DIV_U,
  doWhile,
  F32,
  F32_ADD,
  F32_MUL,
  f32Load,
  f32Store,
  F32X4_ADD,
  F32X4_MUL,
  F32X4_PMAX,
  F32X4_PMIN,
  F32X4_RELAXED_MADD,
  f32x4ExtractLane,
  get,
  I32,
  i32,
  ifElse,
  ifThen,
  load32Splat,
  loadV128,
  LT_U,
  MUL,
  REM_U,
  set,
  SHL,
  SHR_U,
  storeV128,
  SUB,
  tee,
  V128,
  wasmModule,
  ZERO_V128,
} from "./wasm_encode.ts";

/**
 * A packing function `(kc, count, src, ldsrc, dst)` into panels of `width`
 * lines, k-major (`dst[panel][p][line]`, `count` a multiple of `width`), from
 * `count` rows of `kc` floats (`transpose`: row stride `ldsrc` bytes, rows of
 * A or of B^T) or from `kc` rows of `count` floats (row stride `ldsrc`; rows
 * of B or of A^T), copied by f32x4 when `width` is a multiple of 4.
 */
function packCode(width: number, transpose: boolean): number[] {
  const [kc, count, src, ldsrc, dst, line, p, from, to] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  // deno-fmt-ignore
  const body = transpose
    ? [ // for each line: its kc floats to every width-th float of the panel
      i32(0), set(line),
      doWhile(
        get(src), get(line), get(ldsrc), [MUL], [ADD], set(from),
        // dst + ((line / width) * width * kc + line % width) * 4
        get(line), i32(width), [DIV_U], i32(width), [MUL], get(kc), [MUL],
        get(line), i32(width), [REM_U], [ADD], i32(2), [SHL], get(dst), [ADD], set(to),
        get(kc), set(p),
        doWhile(
          get(to), get(from), f32Load(0), f32Store(0),
          get(to), i32(4 * width), [ADD], set(to),
          get(from), i32(4), [ADD], set(from),
          get(p), i32(1), [SUB], tee(p), BR_IF_0,
        ),
        get(line), i32(1), [ADD], tee(line), get(count), [LT_U], BR_IF_0,
      ),
    ]
    : [ // for each panel: per step, width contiguous floats of one row
      i32(0), set(line),
      doWhile(
        get(src), get(line), i32(2), [SHL], [ADD], set(from),
        get(kc), set(p),
        doWhile(
          ...(width % 4 === 0
            ? [...Array(width / 4).keys()].map((v) => [...get(dst), ...get(from), ...loadV128(16 * v), ...storeV128(16 * v)])
            : [...Array(width).keys()].map((e) => [...get(dst), ...get(from), ...f32Load(4 * e), ...f32Store(4 * e)])),
          get(dst), i32(4 * width), [ADD], set(dst),
          get(from), get(ldsrc), [ADD], set(from),
          get(p), i32(1), [SUB], tee(p), BR_IF_0,
        ),
        get(line), i32(width), [ADD], tee(line), get(count), [LT_U], BR_IF_0,
      ),
    ];
  return body.flat();
}

/**
 * `dots(rows, k, a, x, y)`: `y[r] = sum over i of a[r * k + i] * x[i]` for
 * `rows` contiguous rows, in float32: lanes `i mod 8` summed in two f32x4
 * accumulators over the first `8 floor(k / 8)` elements (fused multiply-add
 * when `fused`), the eight lanes added as `((s0 + s4) + (s1 + s5)) + ((s2 + s6)
 * + (s3 + s7))`, then the last `k mod 8` products added in order (multiply,
 * then add). Pointers in bytes, `rows` positive.
 */
function dotsCode(fused: boolean): number[] {
  const [rows, k, a, x, y, r, i, ap, xp] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [s0, s1, t] = [9, 10, 11];
  const lane = (l: number): number[] => [...get(s0), ...f32x4ExtractLane(l)];
  const madd = (sum: number, offset: number): number[] =>
    fused
      ? [...get(ap), ...loadV128(offset), ...get(xp), ...loadV128(offset), ...get(sum), ...F32X4_RELAXED_MADD]
      : [...get(ap), ...loadV128(offset), ...get(xp), ...loadV128(offset), ...F32X4_MUL, ...get(sum), ...F32X4_ADD];
  // deno-fmt-ignore
  const body = [
    i32(0), set(r),
    get(a), set(ap),
    doWhile(
      ZERO_V128, set(s0), ZERO_V128, set(s1),
      get(x), set(xp),
      get(k), i32(3), [SHR_U], tee(i),
      ifThen(doWhile(
        madd(s0, 0), set(s0),
        madd(s1, 16), set(s1),
        get(ap), i32(32), [ADD], set(ap),
        get(xp), i32(32), [ADD], set(xp),
        get(i), i32(1), [SUB], tee(i), BR_IF_0,
      )),
      get(s0), get(s1), F32X4_ADD, set(s0),
      lane(0), lane(1), F32_ADD, lane(2), lane(3), F32_ADD, F32_ADD, set(t),
      get(k), i32(7), [AND], tee(i),
      ifThen(doWhile(
        get(t), get(ap), f32Load(0), get(xp), f32Load(0), F32_MUL, F32_ADD, set(t),
        get(ap), i32(4), [ADD], set(ap),
        get(xp), i32(4), [ADD], set(xp),
        get(i), i32(1), [SUB], tee(i), BR_IF_0,
      )),
      get(y), get(r), i32(2), [SHL], [ADD], get(t), f32Store(0),
      get(r), i32(1), [ADD], tee(r), get(rows), [LT_U], BR_IF_0,
    ),
  ];
  return body.flat();
}

/** `f32.const 0`. */
const F32_ZERO = [0x43, 0, 0, 0, 0];

/**
 * `im2colRow(src, dst, oh, ow, cols, H, W, Wo, sh, sw, ihOff, iwOff)`: one row
 * of a 2-D im2col matrix (one input channel and kernel tap), `cols` float32s
 * to `dst` for the output positions from `(oh, ow)` on in row-major order
 * (`Wo` per output row): the input `src[ih * W + iw]` at `ih = oh * sh + ihOff`,
 * `iw = ow * sw + iwOff`, or 0 where `(ih, iw)` lies outside `H x W` (zero
 * padding). Pointers in bytes, `cols` positive, offsets possibly negative.
 */
function im2colRowCode(): number[] {
  const [src, dst, oh, ow, cols, H, W, Wo, sh, sw, ihOff, iwOff] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  const [seg, ih, rowp, iw, end] = [12, 13, 14, 15, 16];
  // deno-fmt-ignore
  const body = [
    doWhile( // for each output row the columns touch: a segment of min(Wo - ow, cols) positions
      get(Wo), get(ow), [SUB], set(seg),
      get(cols), get(seg), [LT_U], ifThen(get(cols), set(seg)),
      get(dst), get(seg), i32(2), [SHL], [ADD], set(end),
      get(oh), get(sh), [MUL], get(ihOff), [ADD], tee(ih), get(H), [LT_U], // unsigned: a negative ih is outside too
      ifElse(
        [
          get(src), get(ih), get(W), [MUL], i32(2), [SHL], [ADD], set(rowp),
          get(ow), get(sw), [MUL], get(iwOff), [ADD], set(iw),
          doWhile(
            get(iw), get(W), [LT_U],
            ifElse(
              [get(dst), get(rowp), get(iw), i32(2), [SHL], [ADD], f32Load(0), f32Store(0)],
              [get(dst), F32_ZERO, f32Store(0)],
            ),
            get(iw), get(sw), [ADD], set(iw),
            get(dst), i32(4), [ADD], tee(dst), get(end), [LT_U], BR_IF_0,
          ),
        ],
        [doWhile(get(dst), F32_ZERO, f32Store(0), get(dst), i32(4), [ADD], tee(dst), get(end), [LT_U], BR_IF_0)],
      ),
      get(cols), get(seg), [SUB], set(cols),
      get(oh), i32(1), [ADD], set(oh),
      i32(0), set(ow),
      get(cols), BR_IF_0,
    ),
  ];
  return body.flat();
}

/**
 * The kernel module: one exported memory, `dots` (see `dotsCode`), four packing functions
 * `(kc, count, src, ldsrc, dst)` (pointers and the row stride `ldsrc` in
 * bytes; see `packCode`): `packB` (`kc` rows of B into 8-column panels),
 * `packBT` (`count` rows of B^T), `packA` (`count` rows of A into `rows`-row
 * panels), `packAT` (`kc` rows of A^T); `im2colRow` (see `im2colRowCode`); and
 * `block(mc, nc, kc, a, b, c, ldc, accumulate, epilogue)`, which for every
 * `rows`-row panel of packed A (`a`, panel `i` at `a + i * kc` floats) and
 * 8-column panel of packed B (`b`) sums the `rows x 8` product over `kc` into
 * f32x4 registers (in order of k, one rounding per step: fused multiply-add
 * when `fused`, else multiply then add; four steps per pass of the loop) and
 * stores it to C (`c`, row stride `ldc` bytes), added to what C held when
 * `accumulate` is 1, then, when `epilogue` (a byte address) is not 0, adds
 * `bias[i]` to row `i` and clamps as Clip does (`pmin(pmax(v, lo), hi)`) with
 * `[lo, hi, bias...]` the float32s at `epilogue` (bias indexed by the row in
 * the block). `mc` and `nc` are multiples of `rows` and 8, all counts
 * positive.
 *
 * @param rows Rows of the register tile (4 or 6: 2 * rows accumulators, two B
 *   vectors and one splat of A fit the 15 vector registers V8 allocates on x64).
 * @param fused Use relaxed-SIMD `f32x4.relaxed_madd`.
 * @returns The module's bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gemmModuleBytes } from "./wasm_gemm.ts";
 * assert.ok(WebAssembly.validate(gemmModuleBytes(4, false)));
 * ```
 */
export function gemmModuleBytes(rows: number, fused: boolean): Uint8Array<ArrayBuffer> {
  const [mc, nc, kc, a, b, c, ldc, accumulate, epilogue] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [ir, jr, p, ap, bp, cp] = [9, 10, 11, 12, 13, 14];
  const rowIndex = [...Array(rows).keys()];
  // Row r: acc[2r] holds columns 0-3, acc[2r+1] columns 4-7.
  const acc = [...Array(2 * rows).keys()].map((i) => 15 + i);
  const [b0, b1, av] = [15 + 2 * rows, 16 + 2 * rows, 17 + 2 * rows];
  const madd = (sum: number, bv: number): number[] =>
    fused
      ? [...get(av), ...get(bv), ...get(sum), ...F32X4_RELAXED_MADD, ...set(sum)]
      : [...get(sum), ...get(av), ...get(bv), ...F32X4_MUL, ...F32X4_ADD, ...set(sum)];
  /** Reduction step `u` of an unrolled pass: B at `bp + 32u`, A's column at `ap + 4 rows u` (immediate offsets). */
  const step = (u: number): number[] => [
    ...get(bp),
    ...loadV128(32 * u),
    ...set(b0),
    ...get(bp),
    ...loadV128(32 * u + 16),
    ...set(b1),
    ...rowIndex.flatMap((r) => [
      ...get(ap),
      ...load32Splat(4 * (rows * u + r)),
      ...set(av),
      ...madd(acc[2 * r], b0),
      ...madd(acc[2 * r + 1], b1),
    ]),
  ];
  // Wasm stack code, one source line per expression; loops are do-whiles (every count is positive).
  // deno-fmt-ignore
  const body = [
    i32(0), set(jr),
    doWhile( // for jr over 8-column panels
      i32(0), set(ir),
      doWhile( // for ir over row panels
        get(a), get(ir), get(kc), [MUL], i32(2), [SHL], [ADD], set(ap), // a + ir * kc * 4
        get(b), get(jr), get(kc), [MUL], i32(2), [SHL], [ADD], set(bp),
        ...acc.map((r) => [...ZERO_V128, ...set(r)]),
        // for p over the reduction: acc[row] += splat(a[p][row]) * b[p][0..7], UNROLL steps per pass, then the rest
        get(kc), i32(UNROLL_SHIFT), [SHR_U], tee(p),
        ifThen(doWhile(
          ...[...Array(1 << UNROLL_SHIFT).keys()].map(step),
          get(ap), i32((4 * rows) << UNROLL_SHIFT), [ADD], set(ap),
          get(bp), i32(32 << UNROLL_SHIFT), [ADD], set(bp),
          get(p), i32(1), [SUB], tee(p), BR_IF_0,
        )),
        get(kc), i32((1 << UNROLL_SHIFT) - 1), [AND], tee(p),
        ifThen(doWhile(
          step(0),
          get(ap), i32(4 * rows), [ADD], set(ap),
          get(bp), i32(32), [ADD], set(bp),
          get(p), i32(1), [SUB], tee(p), BR_IF_0,
        )),
        get(c), get(ir), get(ldc), [MUL], [ADD], get(jr), i32(2), [SHL], [ADD], set(cp),
        // The epilogue's bounds, when there is one (b0, b1 are free now).
        get(epilogue),
        ifThen(get(epilogue), load32Splat(0), set(b0), get(epilogue), load32Splat(4), set(b1)),
        ...rowIndex.map((r) => [ // store row r, added to C's old value when accumulating
          ...get(accumulate),
          ...ifThen(
            get(acc[2 * r]), get(cp), loadV128(0), F32X4_ADD, set(acc[2 * r]),
            get(acc[2 * r + 1]), get(cp), loadV128(16), F32X4_ADD, set(acc[2 * r + 1]),
          ),
          // Epilogue: + bias[ir + r], then clamped as Clip does: pmin(pmax(v, lo), hi).
          ...get(epilogue),
          ...ifThen(
            get(epilogue), get(ir), i32(2), [SHL], [ADD], load32Splat(8 + 4 * r), set(av),
            ...[acc[2 * r], acc[2 * r + 1]].map((x) => [
              ...get(x), ...get(av), ...F32X4_ADD, ...get(b0), ...F32X4_PMAX, ...get(b1), ...F32X4_PMIN, ...set(x),
            ]),
          ),
          ...get(cp), ...get(acc[2 * r]), ...storeV128(0),
          ...get(cp), ...get(acc[2 * r + 1]), ...storeV128(16),
          ...get(cp), ...get(ldc), ADD, ...set(cp),
        ]),
        get(ir), i32(rows), [ADD], tee(ir), get(mc), [LT_U], BR_IF_0,
      ),
      get(jr), i32(TILE_COLUMNS), [ADD], tee(jr), get(nc), [LT_U], BR_IF_0,
    ),
  ];
  const fiveI32 = [I32, I32, I32, I32, I32];
  const pack = (name: string, width: number, transpose: boolean) => ({
    name,
    params: fiveI32,
    locals: [I32, I32, I32, I32],
    body: packCode(width, transpose),
  });
  return wasmModule([
    {
      name: "block",
      params: new Array(9).fill(I32),
      locals: [...new Array(6).fill(I32), ...new Array(2 * rows + 3).fill(V128)],
      body: body.flat(),
    },
    pack("packB", TILE_COLUMNS, false),
    pack("packBT", TILE_COLUMNS, true),
    pack("packA", rows, true),
    pack("packAT", rows, false),
    { name: "dots", params: fiveI32, locals: [I32, I32, I32, I32, V128, V128, F32], body: dotsCode(fused) },
    { name: "im2colRow", params: new Array(12).fill(I32), locals: new Array(5).fill(I32), body: im2colRowCode() },
  ]);
}
