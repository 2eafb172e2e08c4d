/**
 * A few WebAssembly binary encodings (core spec §5, SIMD and relaxed SIMD),
 * enough for the kernels this folder emits as bytes (`wasm_gemm.ts`,
 * `wasm_depthwise.ts`, `wasm_gemm64.ts`, `wasm_eigen.ts`), and
 * {@linkcode wasmModule}, which assembles functions
 * over one exported memory into a module. Instructions are arrays of bytes;
 * a function body is their concatenation.
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
/** A vector: count, then the items. */
export const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
/** A module section: id, byte length, body. */
export const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
/** A name (ASCII). */
export const name = (s: string): number[] => vec([...s].map((ch) => [ch.charCodeAt(0)]));

/** Value types. */
export const I32 = 0x7f, F32 = 0x7d, F64 = 0x7c, V128 = 0x7b;
/** `local.get`, `local.set`, `local.tee`. */
export const get = (i: number): number[] => [0x20, ...uleb(i)];
export const set = (i: number): number[] => [0x21, ...uleb(i)];
export const tee = (i: number): number[] => [0x22, ...uleb(i)];
/** `i32.const` for 0 <= n < 2^31 (signed LEB128). */
export const i32 = (n: number): number[] => {
  const out = [0x41];
  for (; n >= 64; n >>>= 7) out.push((n & 0x7f) | 0x80);
  return [...out, n];
};
/** i32 arithmetic and comparison opcodes. */
export const ADD = 0x6a, SUB = 0x6b, MUL = 0x6c, DIV_U = 0x6e, REM_U = 0x70, AND = 0x71, SHL = 0x74, SHR_U = 0x76;
export const LT_U = 0x49, EQ = 0x46;
/** `br_if 0`: continue the innermost loop (or leave the innermost block). */
export const BR_IF_0 = [0x0d, 0];
/** Scalar memory access with a constant offset (natural alignment). */
export const i32Load = (offset: number): number[] => [0x28, 2, ...uleb(offset)];
export const f32Load = (offset: number): number[] => [0x2a, 2, ...uleb(offset)];
export const f32Store = (offset: number): number[] => [0x38, 2, ...uleb(offset)];
/** f32 arithmetic. */
export const F32_ADD = [0x92], F32_MUL = [0x94];
/** Scalar f64: load and store (8-byte aligned memarg), arithmetic opcodes, and i32.trunc_f64_u. */
export const f64Load = (offset: number): number[] => [0x2b, 3, ...uleb(offset)];
export const f64Store = (offset: number): number[] => [0x39, 3, ...uleb(offset)];
export const F64_ADD = 0xa0, F64_SUB = 0xa1, F64_MUL = 0xa2, I32_TRUNC_F64_U = 0xab;
/** `memory.copy` (bulk memory): `(dst, src, bytes)`. */
export const MEMORY_COPY = [0xfc, 10, 0, 0];
/** A SIMD instruction (prefix 0xfd). */
export const simdOp = (op: number, ...imm: number[]): number[] => [0xfd, ...uleb(op), ...imm];
export const loadV128 = (offset: number): number[] => simdOp(0x00, 4, ...uleb(offset));
export const storeV128 = (offset: number): number[] => simdOp(0x0b, 4, ...uleb(offset));
export const load32Splat = (offset: number): number[] => simdOp(0x09, 2, ...uleb(offset));
export const F32X4_SPLAT = simdOp(0x13);
export const F32X4_ADD = simdOp(0xe4);
export const F32X4_MUL = simdOp(0xe6);
/** `f32x4.pmin(a, b) = b < a ? b : a`, `f32x4.pmax(a, b) = a < b ? b : a` (lane-wise; NaN in `a` is kept). */
export const F32X4_PMIN = simdOp(0xea);
export const F32X4_PMAX = simdOp(0xeb);
export const f32x4ExtractLane = (lane: number): number[] => simdOp(0x1f, lane);
/** `f32x4.relaxed_madd(a, b, c) = a * b + c`, fused or not as the hardware does it (relaxed SIMD proposal). */
export const F32X4_RELAXED_MADD = simdOp(0x105);
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
/** `if ... end` on the i32 on the stack. */
export const ifThen = (...body: number[][]): number[] => [0x04, 0x40, ...body.flat(), 0x0b];
/** `if ... else ... end` on the i32 on the stack. */
export const ifElse = (then: number[][], otherwise: number[][]): number[] => [
  0x04,
  0x40,
  ...then.flat(),
  0x05,
  ...otherwise.flat(),
  0x0b,
];

/** One exported function of {@linkcode wasmModule}. */
export interface WasmFunction {
  /** Export name. */
  name: string;
  /** Parameter types (results: none). */
  params: number[];
  /** Types of the locals after the parameters, in order. */
  locals: number[];
  /** The instructions (without the final `end`). */
  body: number[];
}

/**
 * A module of `functions` (each exported under its name, no results) and one
 * exported memory `"memory"` of one page, grown by the caller.
 *
 * @param functions The functions.
 * @returns The module's bytes.
 *
 * @example A function that stores 7 at byte 0
 * ```ts
 * import assert from "node:assert/strict";
 * import { I32, i32, wasmModule } from "./wasm_encode.ts";
 * const bytes = wasmModule([{ name: "seven", params: [], locals: [], body: [...i32(0), ...i32(7), 0x36, 2, 0] }]);
 * const { exports } = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
 * (exports.seven as () => void)();
 * assert.equal(new Int32Array((exports.memory as WebAssembly.Memory).buffer)[0], 7);
 * assert.equal(I32, 0x7f);
 * ```
 */
export function wasmModule(functions: readonly WasmFunction[]): Uint8Array<ArrayBuffer> {
  const locals = (types: number[]): number[] => vec(types.map((t) => [1, t])); // one entry per local: simple, valid
  const code = functions.map((f) => {
    const body = [...locals(f.locals), ...f.body, 0x0b];
    return [...uleb(body.length), ...body];
  });
  // deno-fmt-ignore
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, vec(functions.map((f) => [0x60, ...vec(f.params.map((t) => [t])), 0]))), // one type per function
    ...section(3, vec(functions.map((_, i) => uleb(i)))),
    ...section(5, vec([[0x00, 1]])), // memory: 1 page, no maximum
    ...section(7, vec([[...name("memory"), 0x02, 0], ...functions.map((f, i) => [...name(f.name), 0x00, ...uleb(i)])])),
    ...section(10, vec(code)),
  ]);
}
