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
/** i32.const for 0 <= n < 2^31 (signed LEB128). */
const i32 = (n: number): number[] => {
  const out = [0x41];
  for (; n >= 64; n >>>= 7) out.push((n & 0x7f) | 0x80);
  return [...out, n];
};
const ADD = 0x6a,
  SUB = 0x6b,
  MUL = 0x6c,
  DIV_U = 0x6e,
  REM_U = 0x70,
  AND = 0x71,
  SHL = 0x74,
  SHR_U = 0x76,
  LT_U = 0x49,
  BR_IF_0 = [0x0d, 0];
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

const F32_LOAD = (offset: number): number[] => [0x2a, 2, ...uleb(offset)];
const F32_STORE = (offset: number): number[] => [0x38, 2, ...uleb(offset)];

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
          get(to), get(from), F32_LOAD(0), F32_STORE(0),
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
            : [...Array(width).keys()].map((e) => [...get(dst), ...get(from), ...F32_LOAD(4 * e), ...F32_STORE(4 * e)])),
          get(dst), i32(4 * width), [ADD], set(dst),
          get(from), get(ldsrc), [ADD], set(from),
          get(p), i32(1), [SUB], tee(p), BR_IF_0,
        ),
        get(line), i32(width), [ADD], tee(line), get(count), [LT_U], BR_IF_0,
      ),
    ];
  return [...vec([[4, I32]]), ...body.flat(), 0x0b];
}

/**
 * The kernel module: one exported memory, four packing functions
 * `(kc, count, src, ldsrc, dst)` (pointers and the row stride `ldsrc` in
 * bytes; see `packCode`): `packB` (`kc` rows of B into 8-column panels),
 * `packBT` (`count` rows of B^T), `packA` (`count` rows of A into `rows`-row
 * panels), `packAT` (`kc` rows of A^T); and
 * `block(mc, nc, kc, a, b, c, ldc, accumulate)`, which for every
 * `rows`-row panel of packed A (`a`, panel `i` at `a + i * kc` floats) and
 * 8-column panel of packed B (`b`) sums the `rows x 8` product over `kc` into
 * f32x4 registers (in order of k, one rounding per step: fused multiply-add
 * when `fused`, else multiply then add; four steps per pass of the loop) and
 * stores it to C (`c`, row stride `ldc` bytes), added to what C held when
 * `accumulate` is 1. `mc` and `nc` are multiples of `rows` and 8, all counts
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
  // deno-fmt-ignore
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, vec([
      [0x60, ...vec(new Array(8).fill([I32])), 0], // type 0: (i32 x 8) -> ()
      [0x60, ...vec(new Array(5).fill([I32])), 0], // type 1: (i32 x 5) -> ()
    ])),
    ...section(3, vec([[0], [1], [1], [1], [1]])), // functions: block, packB, packBT, packA, packAT
    ...section(5, vec([[0x00, 1]])), // memory: 1 page, no maximum
    ...section(7, vec([
      [...name("memory"), 0x02, 0],
      [...name("block"), 0x00, 0],
      [...name("packB"), 0x00, 1],
      [...name("packBT"), 0x00, 2],
      [...name("packA"), 0x00, 3],
      [...name("packAT"), 0x00, 4],
    ])),
    ...section(10, vec([
      [...uleb(code.length), ...code],
      ...[[TILE_COLUMNS, false], [TILE_COLUMNS, true], [rows, true], [rows, false]].map(([width, transpose]) => {
        const code = packCode(width as number, transpose as boolean);
        return [...uleb(code.length), ...code];
      }),
    ])),
  ]); // deno-fmt-ignore
}
