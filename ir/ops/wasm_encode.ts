/**
 * A few WebAssembly binary encodings (core spec §5, SIMD and relaxed-SIMD
 * proposals) for the kernels emitted as bytes by `wasm_gemm64.ts` and
 * `wasm_eigen.ts`: no toolchain or `.wasm` file is needed.
 * @module
 */

/** Unsigned LEB128. */
export const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    const byte = n & 0x7f;
    n >>>= 7;
    out.push(n === 0 ? byte : byte | 0x80);
  } while (n !== 0);
  return out;
};
/** A module section: id, byte length, body. */
export const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
/** A vector: count, then the items. */
export const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
/** A name (ASCII). */
export const name = (s: string): number[] => vec([...s].map((ch) => [ch.charCodeAt(0)]));
/** Value types. */
export const I32 = 0x7f, F64 = 0x7c, V128 = 0x7b;
/** local.get / local.set / local.tee. */
export const get = (i: number): number[] => [0x20, ...uleb(i)];
export const set = (i: number): number[] => [0x21, ...uleb(i)];
export const tee = (i: number): number[] => [0x22, ...uleb(i)];
/** i32.const for 0 <= n < 64 (one-byte signed LEB128). */
export const i32 = (n: number): number[] => [0x41, n];
/** i32 arithmetic and the branch back to a loop's start. */
export const ADD = 0x6a, SUB = 0x6b, MUL = 0x6c, AND = 0x71, SHL = 0x74, SHR_U = 0x76, LT_U = 0x49;
export const BR_IF_0 = [0x0d, 0];
/** Scalar f64: load and store (8-byte aligned memarg), arithmetic, and i32.trunc_f64_u. */
export const f64Load = (offset: number): number[] => [0x2b, 3, ...uleb(offset)];
export const f64Store = (offset: number): number[] => [0x39, 3, ...uleb(offset)];
export const F64_ADD = 0xa0, F64_SUB = 0xa1, F64_MUL = 0xa2, I32_TRUNC_F64_U = 0xab;
/** A SIMD instruction. */
export const simdOp = (op: number, ...imm: number[]): number[] => [0xfd, ...uleb(op), ...imm];
export const loadV128 = (offset: number): number[] => simdOp(0x00, 4, ...uleb(offset));
export const storeV128 = (offset: number): number[] => simdOp(0x0b, 4, ...uleb(offset));
export const load64Splat = (offset: number): number[] => simdOp(0x0a, 3, ...uleb(offset));
export const F64X2_SPLAT = simdOp(0x14);
export const f64x2Lane = (lane: number): number[] => simdOp(0x21, lane);
export const F64X2_ADD = simdOp(0xf0);
export const F64X2_SUB = simdOp(0xf1);
export const F64X2_MUL = simdOp(0xf2);
/** `f64x2.relaxed_madd(a, b, c) = a * b + c`, fused or not as the hardware does it (relaxed SIMD proposal). */
export const F64X2_RELAXED_MADD = simdOp(0x107);
export const ZERO_V128 = [0xfd, 0x0c, ...new Array<number>(16).fill(0)];
/** `loop ... end` whose body ends in its own `br_if 0` (a do-while). */
export const doWhile = (...body: number[][]): number[] => [0x03, 0x40, ...body.flat(), 0x0b];
/** `if ... end` on the value on the stack, no result. */
export const ifThen = (...body: number[][]): number[] => [0x04, 0x40, ...body.flat(), 0x0b];
