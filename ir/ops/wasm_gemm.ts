/**
 * The WebAssembly SIMD micro-kernel of {@link ./gemm_kernel.ts}, emitted as
 * bytes (binary format, WebAssembly core spec §5) so no toolchain or `.wasm`
 * file is needed: a register tile of `rows x 8` float32 accumulators over packed
 * panels, with relaxed-SIMD fused multiply-add where the runtime validates it.
 * @module
 */

/** Columns of the register tile: two f32x4 vectors. */
export const TILE_COLUMNS = 8;
/** Row stride of the A block in floats: the kernel reads row `r` at a constant offset `r * A_ROW_STRIDE * 4`. */
export const A_ROW_STRIDE = 256;

// A few encodings, enough for the one kernel below.
const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    const byte = n & 0x7f;
    n >>>= 7;
    out.push(n === 0 ? byte : byte | 0x80);
  } while (n !== 0);
  return out;
};
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const name = (s: string): number[] => vec([...s].map((ch) => [ch.charCodeAt(0)]));
const I32 = 0x7f;
const V128 = 0x7b;
const get = (i: number): number[] => [0x20, ...uleb(i)];
const set = (i: number): number[] => [0x21, ...uleb(i)];
const tee = (i: number): number[] => [0x22, ...uleb(i)];
/** i32.const for 0 <= n < 64 (one-byte signed LEB128). */
const i32 = (n: number): number[] => [0x41, n];
const ADD = 0x6a, SUB = 0x6b, MUL = 0x6c, SHL = 0x74, LT_U = 0x49, BR_IF_0 = [0x0d, 0];
const simdOp = (op: number, ...imm: number[]): number[] => [0xfd, ...uleb(op), ...imm];
const loadV128 = (offset: number): number[] => simdOp(0x00, 4, ...uleb(offset));
const storeV128 = (offset: number): number[] => simdOp(0x0b, 4, ...uleb(offset));
const load32Splat = (offset: number): number[] => simdOp(0x09, 2, ...uleb(offset));
const F32X4_ADD = simdOp(0xe4);
const F32X4_MUL = simdOp(0xe6);
/** `f32x4.relaxed_madd(a, b, c) = a * b + c`, fused or not as the hardware does it (relaxed SIMD proposal). */
const F32X4_RELAXED_MADD = simdOp(0x105);
const ZERO_V128 = [0xfd, 0x0c, ...new Array<number>(16).fill(0)];
/** `loop ... end` whose body ends in its own `br_if 0` (a do-while). */
const doWhile = (...body: number[][]): number[] => [0x03, 0x40, ...body.flat(), 0x0b];
const ifThen = (...body: number[][]): number[] => [0x04, 0x40, ...body.flat(), 0x0b];

/**
 * The kernel module: one exported memory,
 * `packB(kc, nc, src, ldsrc, dst)`, which copies `kc` rows of `nc` floats
 * (row stride `ldsrc` bytes from `src`) into 8-column panels, k-major, at
 * `dst`, `packBT(kc, nc, src, dst)`, the same from `nc` rows of B^T of `kc`
 * floats (row stride {@linkcode A_ROW_STRIDE}), and
 * `block(mc, nc, kc, a, b, c, ldc, accumulate)`, which for every
 * `rows`-row panel of the A block (`a`, row-major with row stride
 * {@linkcode A_ROW_STRIDE}, `kc <= A_ROW_STRIDE`) and 8-column panel of packed
 * B (`b`) sums the `rows x 8` product over `kc` into f32x4 registers (in
 * order of k, one rounding per step: fused multiply-add when `fused`, else
 * multiply then add) and stores it to C (`c`, row stride `ldc` bytes), added
 * to what C held when `accumulate` is 1. `mc` and `nc` are multiples of `rows`
 * and 8, all counts positive, pointers in bytes.
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
  const [mc, nc, kc, a, b, c, ldc, accumulate] = [0, 1, 2, 3, 4, 5, 6, 7];
  const [ir, jr, p, ap, bp, cp] = [8, 9, 10, 11, 12, 13];
  const rowIndex = [...Array(rows).keys()];
  // Row r: acc[2r] holds columns 0-3, acc[2r+1] columns 4-7.
  const acc = [...Array(2 * rows).keys()].map((i) => 14 + i);
  const [b0, b1, av] = [14 + 2 * rows, 15 + 2 * rows, 16 + 2 * rows];
  const madd = (sum: number, bv: number): number[] =>
    fused
      ? [...get(av), ...get(bv), ...get(sum), ...F32X4_RELAXED_MADD, ...set(sum)]
      : [...get(sum), ...get(av), ...get(bv), ...F32X4_MUL, ...F32X4_ADD, ...set(sum)];
  // Wasm stack code, one source line per expression; loops are do-whiles (every count is positive).
  // deno-fmt-ignore
  const body = [
    i32(0), set(jr),
    doWhile( // for jr over 8-column panels
      i32(0), set(ir),
      doWhile( // for ir over row panels
        get(a), get(ir), i32(10), [SHL], [ADD], set(ap), // a + ir * A_ROW_STRIDE * 4
        get(b), get(jr), get(kc), [MUL], i32(2), [SHL], [ADD], set(bp),
        ...acc.map((r) => [...ZERO_V128, ...set(r)]),
        get(kc), set(p),
        doWhile( // for p over the reduction: acc[row] += splat(a[p][row]) * b[p][0..7]
          get(bp), loadV128(0), set(b0),
          get(bp), loadV128(16), set(b1),
          ...rowIndex.map((r) => [
            ...get(ap), ...load32Splat(4 * A_ROW_STRIDE * r), ...set(av),
            ...madd(acc[2 * r], b0), ...madd(acc[2 * r + 1], b1),
          ]),
          get(ap), i32(4), [ADD], set(ap),
          get(bp), i32(32), [ADD], set(bp),
          get(p), i32(1), [SUB], tee(p), BR_IF_0,
        ),
        get(c), get(ir), get(ldc), [MUL], [ADD], get(jr), i32(2), [SHL], [ADD], set(cp),
        ...rowIndex.map((r) => [ // store row r, added to C's old value when accumulating
          ...get(accumulate),
          ...ifThen(
            get(acc[2 * r]), get(cp), loadV128(0), F32X4_ADD, set(acc[2 * r]),
            get(acc[2 * r + 1]), get(cp), loadV128(16), F32X4_ADD, set(acc[2 * r + 1]),
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
  const code = [...vec([[6, I32], [2 * rows + 3, V128]]), ...body.flat(), 0x0b];
  // packB(kc, nc, src, ldsrc, dst): for jr over 8-column panels, for p over rows: two f32x4 copied.
  const [pkc, pnc, psrc, plds, pdst, pjr, pp, prow] = [0, 1, 2, 3, 4, 5, 6, 7];
  // deno-fmt-ignore
  const packBody = [
    i32(0), set(pjr),
    doWhile(
      get(psrc), get(pjr), i32(2), [SHL], [ADD], set(prow),
      get(pkc), set(pp),
      doWhile(
        get(pdst), get(prow), loadV128(0), storeV128(0),
        get(pdst), get(prow), loadV128(16), storeV128(16),
        get(pdst), i32(32), [ADD], set(pdst),
        get(prow), get(plds), [ADD], set(prow),
        get(pp), i32(1), [SUB], tee(pp), BR_IF_0,
      ),
      get(pjr), i32(TILE_COLUMNS), [ADD], tee(pjr), get(pnc), [LT_U], BR_IF_0,
    ),
  ];
  const packCode = [...vec([[3, I32]]), ...packBody.flat(), 0x0b];
  // packBT(kc, nc, src, dst): rows of B^T (one per column of B, stride A_ROW_STRIDE floats) into 8-column panels.
  const [tkc, tnc, tsrc, tdst, tjr, tp, trow] = [0, 1, 2, 3, 4, 5, 6];
  const F32_LOAD = (offset: number): number[] => [0x2a, 2, ...uleb(offset)];
  const F32_STORE = (offset: number): number[] => [0x38, 2, ...uleb(offset)];
  // deno-fmt-ignore
  const transposeBody = [
    i32(0), set(tjr),
    doWhile(
      get(tsrc), get(tjr), i32(10), [SHL], [ADD], set(trow), // src + jr * A_ROW_STRIDE * 4
      get(tkc), set(tp),
      doWhile(
        ...[...Array(TILE_COLUMNS).keys()].map((jj) => [
          ...get(tdst), ...get(trow), ...F32_LOAD(4 * A_ROW_STRIDE * jj), ...F32_STORE(4 * jj),
        ]),
        get(tdst), i32(32), [ADD], set(tdst),
        get(trow), i32(4), [ADD], set(trow),
        get(tp), i32(1), [SUB], tee(tp), BR_IF_0,
      ),
      get(tjr), i32(TILE_COLUMNS), [ADD], tee(tjr), get(tnc), [LT_U], BR_IF_0,
    ),
  ];
  const transposeCode = [...vec([[3, I32]]), ...transposeBody.flat(), 0x0b];
  // deno-fmt-ignore
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, vec([
      [0x60, ...vec(new Array(8).fill([I32])), 0], // type 0: (i32 x 8) -> ()
      [0x60, ...vec(new Array(5).fill([I32])), 0], // type 1: (i32 x 5) -> ()
      [0x60, ...vec(new Array(4).fill([I32])), 0], // type 2: (i32 x 4) -> ()
    ])),
    ...section(3, vec([[0], [1], [2]])), // functions: block, packB, packBT
    ...section(5, vec([[0x00, 1]])), // memory: 1 page, no maximum
    ...section(7, vec([
      [...name("memory"), 0x02, 0],
      [...name("block"), 0x00, 0],
      [...name("packB"), 0x00, 1],
      [...name("packBT"), 0x00, 2],
    ])),
    ...section(10, vec([
      [...uleb(code.length), ...code],
      [...uleb(packCode.length), ...packCode],
      [...uleb(transposeCode.length), ...transposeCode],
    ])),
  ]); // deno-fmt-ignore
}
