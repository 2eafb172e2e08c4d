/**
 * Float64 GEMM on a WebAssembly SIMD micro-kernel (f64x2, relaxed-SIMD fused
 * multiply-add where the runtime validates it), for the linear algebra of the
 * passes (Gram matrices, QB factorizations, Cholesky-QR, projections). The
 * module is emitted as bytes (binary format, WebAssembly core spec §5); large
 * products are shared with the worker pool of `ir/parallel.ts`.
 * @module
 */
import { arenaLimitBytes, MAX_PARTS, parallelArena, type ParallelTask, runParts, threadCount } from "../parallel.ts";
import {
  type FloatArray,
  type GemmArgs,
  type GemmProblem,
  gemmProblem,
  packPanelsB,
  partRange,
  scaleC,
  subGemm,
} from "./gemm_kernel.ts";
import {
  ADD,
  BR_IF_0,
  doWhile,
  F64X2_ADD,
  F64X2_MUL,
  F64X2_RELAXED_MADD,
  get,
  I32,
  i32,
  ifThen,
  load64Splat,
  loadV128,
  LT_U,
  MUL,
  name,
  section,
  set,
  SHL,
  storeV128,
  SUB,
  tee,
  uleb,
  V128,
  vec,
  ZERO_V128,
} from "./wasm_encode.ts";

/** Rows and columns of the register tile: 6 rows x two f64x2 vectors (12 accumulators). */
export const TILE_ROWS = 6;
/** Columns of the register tile. */
export const TILE_COLUMNS = 4; // the panel width of packPanelsB
/** Row stride of the staged A block in doubles; also the longest reduction slice. */
export const ROW_STRIDE = 256;

/**
 * The kernel module: one exported memory and `block(mc, nc, kc, a, b, c, ldc,
 * accumulate)`, which for every 6-row panel of the A block (`a`, row-major,
 * row stride {@linkcode ROW_STRIDE} doubles, `kc <= ROW_STRIDE`) and 4-column
 * panel of packed B (`b`, k-major panels of 4 doubles) sums the `6 x 4`
 * product over `kc` in f64x2 registers (in order of k, one rounding per step:
 * fused multiply-add when `fused`, else multiply then add), starting from
 * zero, and stores it to C (`c`, row stride `ldc` bytes), added to what C
 * held (`C + sum`) when `accumulate` is 1.
 * `mc` and `nc` are positive multiples of 6 and 4; pointers in bytes.
 *
 * @param fused Use relaxed-SIMD `f64x2.relaxed_madd`.
 * @returns The module's bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gemm64ModuleBytes } from "./wasm_gemm64.ts";
 * assert.ok(WebAssembly.validate(gemm64ModuleBytes(false)));
 * ```
 */
export function gemm64ModuleBytes(fused: boolean): Uint8Array<ArrayBuffer> {
  const rows = TILE_ROWS;
  const [mc, nc, kc, a, b, c, ldc, accumulate] = [0, 1, 2, 3, 4, 5, 6, 7];
  const [ir, jr, p, ap, bp, cp] = [8, 9, 10, 11, 12, 13];
  const rowIndex = [...Array(rows).keys()];
  // Row r: acc[2r] holds columns 0-1, acc[2r+1] columns 2-3.
  const acc = [...Array(2 * rows).keys()].map((i) => 14 + i);
  const [b0, b1, av] = [14 + 2 * rows, 15 + 2 * rows, 16 + 2 * rows];
  const madd = (sum: number, bv: number): number[] =>
    fused
      ? [...get(av), ...get(bv), ...get(sum), ...F64X2_RELAXED_MADD, ...set(sum)]
      : [...get(sum), ...get(av), ...get(bv), ...F64X2_MUL, ...F64X2_ADD, ...set(sum)];
  const rowBytes = 8 * ROW_STRIDE;
  // Wasm stack code, one source line per expression; loops are do-whiles (every count is positive).
  // deno-fmt-ignore
  const body = [
    i32(0), set(jr),
    doWhile( // for jr over 4-column panels
      i32(0), set(ir),
      doWhile( // for ir over row panels
        get(a), get(ir), i32(11), [SHL], [ADD], set(ap), // a + ir * ROW_STRIDE * 8
        get(b), get(jr), get(kc), [MUL], i32(3), [SHL], [ADD], set(bp),
        ...acc.map((r) => [...ZERO_V128, ...set(r)]),
        get(kc), set(p),
        doWhile( // for p over the reduction: acc[row] += splat(a[row][p]) * b[p][0..3]
          get(bp), loadV128(0), set(b0),
          get(bp), loadV128(16), set(b1),
          ...rowIndex.map((r) => [
            ...get(ap), ...load64Splat(rowBytes * r), ...set(av),
            ...madd(acc[2 * r], b0), ...madd(acc[2 * r + 1], b1),
          ]),
          get(ap), i32(8), [ADD], set(ap),
          get(bp), i32(32), [ADD], set(bp),
          get(p), i32(1), [SUB], tee(p), BR_IF_0,
        ),
        get(c), get(ir), get(ldc), [MUL], [ADD], get(jr), i32(3), [SHL], [ADD], set(cp),
        ...rowIndex.map((r) => [ // store row r, the slice's sum added to C's when accumulating
          ...get(accumulate),
          ...ifThen(
            get(cp), loadV128(0), get(acc[2 * r]), F64X2_ADD, set(acc[2 * r]),
            get(cp), loadV128(16), get(acc[2 * r + 1]), F64X2_ADD, set(acc[2 * r + 1]),
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
    ...section(1, vec([[0x60, ...vec(new Array(8).fill([I32])), 0]])), // type 0: (i32 x 8) -> ()
    ...section(3, vec([[0]])), // function: block
    ...section(5, vec([[0x00, 1]])), // memory: 1 page, no maximum
    ...section(7, vec([[...name("memory"), 0x02, 0], [...name("block"), 0x00, 0]])),
    ...section(10, vec([[...uleb(code.length), ...code]])),
  ]); // deno-fmt-ignore
}

/** The instantiated kernel and a float64 view of its memory (renewed when the memory grows). */
interface Kernel64 {
  /** Whether the tile is summed by fused multiply-add (relaxed SIMD). */
  fused: boolean;
  memory: WebAssembly.Memory;
  heap: Float64Array;
  block: (mc: number, nc: number, kc: number, a: number, b: number, c: number, ldc: number, acc: number) => void;
}

/** Per thread (a worker instantiates its own), by kind: fused or not; null where WebAssembly SIMD is unavailable. */
const kernels = new Map<boolean, Kernel64 | null>();

function kernel(fused: boolean): Kernel64 | null {
  let k = kernels.get(fused);
  if (k === undefined) {
    const bytes = gemm64ModuleBytes(fused);
    k = null;
    if (WebAssembly.validate(bytes)) {
      const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
      const memory = instance.exports.memory as WebAssembly.Memory;
      k = { fused, memory, heap: new Float64Array(memory.buffer), block: instance.exports.block as Kernel64["block"] };
    }
    kernels.set(fused, k);
  }
  return k;
}

/** The kernel `gemm64` uses: fused where relaxed SIMD validates, else multiply then add, else none. */
function defaultKernel(): Kernel64 | null {
  return kernel(true) ?? kernel(false);
}

/**
 * Which kernel {@linkcode gemm64} runs here: `"wasm-simd-fma"` (relaxed-SIMD
 * fused multiply-add), `"wasm-simd"` (multiply then add) or `"js"` (no
 * WebAssembly SIMD: a plain JavaScript loop in the same order).
 *
 * @returns The kernel's name.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { float64GemmKernel } from "./wasm_gemm64.ts";
 * assert.ok(["wasm-simd-fma", "wasm-simd", "js"].includes(float64GemmKernel()));
 * ```
 */
export function float64GemmKernel(): "wasm-simd-fma" | "wasm-simd" | "js" {
  const k = defaultKernel();
  return k === null ? "js" : k.fused ? "wasm-simd-fma" : "wasm-simd";
}

/**
 * Rows of A staged per block call (a multiple of the tile's rows: 240 KB, in L2), doubles of C kept in wasm
 * memory, and most columns per block (the packed B slice: 4 MB).
 */
const MC = 120;
const C_BLOCK = 1 << 19;
const NC_MAX = 2048;

type Problem = GemmProblem;

const roundUp = (x: number, to: number): number => Math.ceil(x / to) * to;

/**
 * `C = alpha * op(A) * op(B) + beta * C` computed in float64 whatever the
 * operands' storage (float32 operands are widened exactly), on a WebAssembly
 * SIMD `6 x 4` register tile: per element of C, a float64 running sum in order
 * of k within each slice of {@linkcode ROW_STRIDE} (fused multiply-add where
 * relaxed SIMD is available, as in Deno on x64), the slices' sums added in
 * order (a long reduction, such as a Gram matrix of rows of 4608, then has an
 * error growing with the slice length, not with k), then
 * `alpha * sum + beta * C` rounded once into C. The same arguments
 * as the float32 kernel's {@link ./gemm_kernel.ts} `gemm`; C must not overlap
 * A or B. Large products are split into fixed parts of whole rows (or
 * columns) of C shared with the worker pool; each element is summed in the
 * same order whichever thread computes it, so results are bit-identical for
 * any thread count.
 *
 * @param args Shapes, operands and scales.
 * @param fused Override the kernel choice (tests): true needs relaxed SIMD, false multiplies then adds.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gemm64 } from "./wasm_gemm64.ts";
 * const c = new Float64Array(4);
 * gemm64({ m: 2, n: 2, k: 3, a: new Float64Array([1, 2, 3, 4, 5, 6]), b: new Float64Array([1, 0, 0, 1, 1, 1]), c });
 * assert.deepEqual([...c], [4, 5, 10, 11]);
 * ```
 */
export function gemm64(args: GemmArgs, fused?: boolean): void {
  const q = gemmProblem(args);
  const { m, n, k, c } = q;
  if (m <= 0 || n <= 0) return;
  const kind = fused === undefined ? (defaultKernel()?.fused ?? null) : (kernel(fused) === null ? null : fused);
  if (kind === null && fused !== undefined) {
    throw new Error(`gemm64: the ${fused ? "fused " : ""}kernel is unavailable`);
  }
  if (k <= 0 || q.alpha === 0) return scaleC(c, q.cOff, q.ldc, m, n, q.beta);
  if (kind === null) return gemmJs(q);
  if (!gemmParallel(q, kind)) gemmWasm(q, kernel(kind)!);
}

/** Without WebAssembly SIMD: the same per-element order (running sums per slice, added in order, scaled once). */
function gemmJs(q: Problem): void {
  const { m, n, k, a, aOff, lda, transA, b, bOff, ldb, transB, c, cOff, ldc, alpha, beta } = q;
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p0 = 0; p0 < k; p0 += ROW_STRIDE) {
        let t = 0;
        for (let p = p0; p < Math.min(k, p0 + ROW_STRIDE); p++) {
          t += a[aOff + (transA ? p * lda + i : i * lda + p)] * b[bOff + (transB ? j * ldb + p : p * ldb + j)];
        }
        s = p0 === 0 ? t : s + t;
      }
      const o = cOff + i * ldc + j;
      c[o] = beta === 0 ? alpha * s : alpha * s + beta * c[o];
    }
  }
}

/** The blocked product on the wasm kernel: C summed in wasm memory per column block, then scaled out. */
function gemmWasm(q: Problem, s: Kernel64): void {
  const { m, n, k, a, aOff, lda, transA, b, bOff, ldb, transB, c, cOff, ldc, alpha, beta } = q;
  const mPad = roundUp(m, TILE_ROWS);
  const ncBlock = Math.max(
    TILE_COLUMNS,
    Math.min(roundUp(n, TILE_COLUMNS), NC_MAX, roundUp(Math.floor(C_BLOCK / mPad), 4)),
  );
  const kcMax = Math.min(ROW_STRIDE, k);
  const aBase = 0;
  const bBase = Math.min(MC, mPad) * ROW_STRIDE;
  const cBase = bBase + kcMax * ncBlock;
  const bytes = (cBase + mPad * ncBlock) * 8;
  if (s.memory.buffer.byteLength < bytes) {
    s.memory.grow(Math.ceil((bytes - s.memory.buffer.byteLength) / 65536));
    s.heap = new Float64Array(s.memory.buffer);
  }
  const heap = s.heap;
  for (let jc = 0; jc < n; jc += ncBlock) {
    const nc = Math.min(ncBlock, n - jc);
    const ncPad = roundUp(nc, TILE_COLUMNS);
    for (let pc = 0; pc < k; pc += ROW_STRIDE) {
      const kc = Math.min(ROW_STRIDE, k - pc);
      packPanelsB(heap, bBase, b, bOff, ldb, transB, pc, jc, kc, nc);
      for (let ic = 0; ic < m; ic += MC) {
        const mc = Math.min(MC, m - ic);
        const mcPad = roundUp(mc, TILE_ROWS);
        stageA(heap, aBase, a, aOff, lda, transA, ic, pc, mc, mcPad, kc);
        s.block(mcPad, ncPad, kc, aBase * 8, bBase * 8, (cBase + ic * ncPad) * 8, ncPad * 8, pc > 0 ? 1 : 0);
      }
    }
    for (let i = 0; i < m; i++) {
      const dst = cOff + i * ldc + jc;
      const src = cBase + i * ncPad;
      if (beta === 0 && alpha === 1) c.set(heap.subarray(src, src + nc), dst);
      else if (beta === 0) { for (let j = 0; j < nc; j++) c[dst + j] = alpha * heap[src + j]; }
      else for (let j = 0; j < nc; j++) c[dst + j] = alpha * heap[src + j] + beta * c[dst + j];
    }
  }
}

/** Rows `ic..ic+mc` x reduction `pc..pc+kc` of op(A), row stride {@linkcode ROW_STRIDE}, zero rows up to `mcPad`. */
function stageA(
  heap: Float64Array,
  base: number,
  a: FloatArray,
  aOff: number,
  lda: number,
  transA: boolean,
  ic: number,
  pc: number,
  mc: number,
  mcPad: number,
  kc: number,
): void {
  if (transA) {
    for (let p = 0; p < kc; p++) {
      const src = aOff + (pc + p) * lda + ic;
      for (let i = 0, dst = base + p; i < mc; i++, dst += ROW_STRIDE) heap[dst] = a[src + i];
    }
  } else {
    for (let i = 0; i < mc; i++) {
      const src = aOff + (ic + i) * lda + pc;
      heap.set(a.subarray(src, src + kc), base + i * ROW_STRIDE);
    }
  }
  for (let i = mc; i < mcPad; i++) heap.fill(0, base + i * ROW_STRIDE, base + i * ROW_STRIDE + kc);
}

// ---------------------------------------------------------------------------
// Worker pool

/** Below this many multiply-adds a product stays on the calling thread (staging and waking a worker cost). */
const PARALLEL_MIN_MACS = 1 << 20;
/** Fewest multiply-adds per staged element: a matrix-vector product stays on one thread. */
const PARALLEL_MIN_MACS_PER_ELEMENT = 32;
/** Parts per thread: a thread that finishes early (on a busy machine) takes over the rest. */
const PARTS_PER_THREAD = 2;

const align8 = (bytes: number): number => Math.ceil(bytes / 8) * 8;

/**
 * The problem staged densely in the arena: op(A) and op(B) as stored (each in
 * its own element type), then C (float64, `m x n`). Params:
 * `[m, n, k, transA, transB, byRows, parts, alpha, beta, aBytes, bBytes, fused]`.
 */
function staged(params: ArrayLike<number>, arena: SharedArrayBuffer): Problem {
  const [m, n, k, transA, transB, , , alpha, beta, aBytes, bBytes] = Array.from(params);
  const view = (bytes: number, offset: number, length: number): FloatArray =>
    bytes === 8 ? new Float64Array(arena, offset, length) : new Float32Array(arena, offset, length);
  const bOffset = align8(m * k * aBytes);
  const cOffset = bOffset + align8(k * n * bBytes);
  return {
    m,
    n,
    k,
    a: view(aBytes, 0, m * k),
    aOff: 0,
    lda: transA ? m : k,
    transA: transA === 1,
    b: view(bBytes, bOffset, k * n),
    bOff: 0,
    ldb: transB ? k : n,
    transB: transB === 1,
    c: new Float64Array(arena, cOffset, m * n),
    cOff: 0,
    ldc: n,
    alpha,
    beta,
  };
}

/**
 * The worker side of a parallel {@linkcode gemm64}: part `part` of the
 * problem staged in the arena, computed with the same kernel and summation
 * order as on the calling thread, written to the staged C.
 *
 * @example Part 1 of 2 (rows 6..12) of a 12x1x1 product staged by hand
 * ```ts
 * import assert from "node:assert/strict";
 * import { gemm64PartTask } from "./wasm_gemm64.ts";
 * const arena = new SharedArrayBuffer(8 * (12 + 1 + 12));
 * const f = new Float64Array(arena);
 * f.fill(2, 0, 12); // A: 12x1
 * f[12] = 3; // B: 1x1
 * // [m, n, k, transA, transB, byRows, parts, alpha, beta, aBytes, bBytes, fused]
 * gemm64PartTask.run(1, new Float64Array([12, 1, 1, 0, 0, 1, 2, 1, 0, 8, 8, 0]), arena);
 * assert.deepEqual([...f.subarray(13)], [0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6]);
 * ```
 */
export const gemm64PartTask: ParallelTask = {
  id: 1,
  run(part: number, params: Float64Array, arena: SharedArrayBuffer): void {
    const q = staged(params, arena);
    const [byRows, parts, fused] = [params[5] === 1, params[6], params[11] === 1];
    const [lo, hi] = partRange(part, parts, byRows ? q.m : q.n, byRows ? TILE_ROWS : TILE_COLUMNS);
    const s = kernel(fused);
    if (s === null) throw new Error("gemm64 worker: WebAssembly SIMD is unavailable");
    if (hi > lo) gemmWasm(subGemm(q, byRows, lo, hi), s);
  },
};

/**
 * A product split over the worker pool, or false (nothing done) when it is too
 * small, too lopsided to pay for staging, too large for the arena, or no worker
 * is available. The calling thread computes its parts on the caller's arrays,
 * workers on the arena, whose C parts are then copied back.
 */
function gemmParallel(q: Problem, fused: boolean): boolean {
  const { m, n, k } = q;
  const threads = threadCount();
  const macs = m * n * k;
  if (threads < 2 || macs < PARALLEL_MIN_MACS || macs < PARALLEL_MIN_MACS_PER_ELEMENT * (m * k + k * n + m * n)) {
    return false;
  }
  const byRows = m >= n;
  const unit = byRows ? TILE_ROWS : TILE_COLUMNS;
  const extent = byRows ? m : n;
  const parts = Math.min(Math.ceil(extent / unit), threads * PARTS_PER_THREAD, MAX_PARTS);
  if (parts < 2) return false;
  const [aBytes, bBytes] = [q.a.BYTES_PER_ELEMENT, q.b.BYTES_PER_ELEMENT];
  const bytes = align8(m * k * aBytes) + align8(k * n * bBytes) + m * n * 8;
  if (bytes > arenaLimitBytes()) return false;
  const arena = parallelArena(bytes);
  if (arena === null) return false;
  const params = [m, n, k, +q.transA, +q.transB, +byRows, parts, q.alpha, q.beta, aBytes, bBytes, +fused];
  const t = staged(params, arena);
  const copy = (dst: FloatArray, src: FloatArray, off: number, ld: number, rows: number, cols: number): void => {
    for (let r = 0; r < rows; r++) dst.set(src.subarray(off + r * ld, off + r * ld + cols), r * cols);
  };
  copy(t.a, q.a, q.aOff, q.lda, q.transA ? k : m, q.transA ? m : k);
  copy(t.b, q.b, q.bOff, q.ldb, q.transB ? n : k, q.transB ? k : n);
  if (q.beta !== 0) copy(t.c, q.c, q.cOff, q.ldc, m, n);
  const s = kernel(fused)!;
  const byWorker = runParts(gemm64PartTask, params, parts, (part) => {
    const [lo, hi] = partRange(part, parts, extent, unit);
    if (hi > lo) gemmWasm(subGemm(q, byRows, lo, hi), s);
  });
  for (let part = 0; part < parts; part++) {
    if (!byWorker[part]) continue;
    const [lo, hi] = partRange(part, parts, extent, unit);
    const [i0, i1, j0, j1] = byRows ? [lo, hi, 0, n] : [0, m, lo, hi];
    for (let i = i0; i < i1; i++) q.c.set(t.c.subarray(i * n + j0, i * n + j1), q.cOff + i * q.ldc + j0);
  }
  return true;
}
