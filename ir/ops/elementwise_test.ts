import assert from "node:assert/strict";
import { attr, type Attribute } from "../attributes.ts";
import { Op, Value } from "../graph.ts";
import type { InferContext } from "../op_def.ts";
import { float32Tensor, floatToHalf, halfToFloat, int64Tensor, type Tensor, tensor } from "../tensor.ts";
import type { Dim, TensorType } from "../types.ts";
import { elementwiseOps } from "./elementwise.ts";

const defs = new Map(elementwiseOps.map((d) => [d.type, d]));

function def(type: string) {
  const d = defs.get(type);
  if (d === undefined) throw new Error(`no OpDef for ${type}`);
  return d;
}

/** An op named "n" with `operands` placeholder operands (null where omitted). */
function makeOp(type: string, operands: number | readonly boolean[], attrs: Record<string, Attribute> = {}): Op {
  const present = typeof operands === "number" ? new Array<boolean>(operands).fill(true) : operands;
  return new Op({
    name: "n",
    type,
    operands: present.map((p, i) => (p ? new Value(`in${i}`) : null)),
    results: [new Value("out")],
    attributes: Object.entries(attrs),
  });
}

function run(
  type: string,
  inputs: readonly (Tensor | null)[],
  attrs: Record<string, Attribute> = {},
  opset = 17,
): Tensor {
  const op = makeOp(type, inputs.map((t) => t !== null), attrs);
  return def(type).interpret!(op, inputs, { opset })[0];
}

function infer(
  type: string,
  types: readonly (TensorType | null)[],
  attrs: Record<string, Attribute> = {},
  extra: Partial<InferContext> = {},
): TensorType | null {
  const op = makeOp(type, types.length, attrs);
  const ctx: InferContext = {
    opset: 17,
    types,
    constants: types.map(() => null),
    shapeValues: types.map(() => null),
    ...extra,
  };
  return def(type).infer!(op, ctx)[0];
}

function shapeValue(type: string, values: readonly (readonly Dim[] | null)[], constants?: (Tensor | null)[]) {
  const op = makeOp(type, values.length);
  return def(type).shapeValue!(op, {
    opset: 17,
    types: values.map(() => null),
    constants: constants ?? values.map(() => null),
    shapeValues: values,
  });
}

const f32 = (shape: number[], values: number[]): Tensor => float32Tensor(shape, values);
const i32 = (shape: number[], values: number[]): Tensor => tensor("i32", shape, Int32Array.from(values));
const bool = (shape: number[], values: number[]): Tensor => tensor("bool", shape, Uint8Array.from(values));
const f16 = (shape: number[], values: number[]): Tensor =>
  tensor("f16", shape, Uint16Array.from(values, (v) => floatToHalf(v)));

function close(actual: Tensor, expected: readonly number[], tol = 1e-6): void {
  const values = actual.dtype === "f16"
    ? Array.from(actual.data as Uint16Array, halfToFloat)
    : Array.from(actual.data as ArrayLike<number>);
  assert.equal(values.length, expected.length, `length ${values.length}, expected ${expected.length}`);
  values.forEach((v, i) => {
    const e = expected[i];
    if (Number.isNaN(e)) assert.ok(Number.isNaN(v), `element ${i} is ${v}, expected NaN`);
    else assert.ok(Math.abs(v - e) <= tol * Math.max(1, Math.abs(e)), `element ${i} is ${v}, expected ${e}`);
  });
}

const values = (t: Tensor): unknown[] => Array.from(t.data as ArrayLike<unknown>);

// --- Broadcasting arithmetic ------------------------------------------------

Deno.test("Add adds same-shape f32 tensors", () => {
  const y = run("Add", [f32([2, 2], [1, 2, 3, 4]), f32([2, 2], [10, 20, 30, 40])]);
  assert.equal(y.dtype, "f32");
  assert.deepEqual(y.shape, [2, 2]);
  assert.deepEqual(values(y), [11, 22, 33, 44]);
});

Deno.test("Add broadcasts a scalar, a lower-rank operand and size-1 dims", () => {
  assert.deepEqual(values(run("Add", [f32([], [100]), f32([2, 2], [1, 2, 3, 4])])), [101, 102, 103, 104]);
  const row = run("Add", [f32([2, 3], [0, 0, 0, 10, 10, 10]), f32([3], [1, 2, 3])]);
  assert.deepEqual(row.shape, [2, 3]);
  assert.deepEqual(values(row), [1, 2, 3, 11, 12, 13]);
  const outer = run("Sub", [f32([2, 1], [10, 20]), f32([1, 3], [1, 2, 3])]);
  assert.deepEqual(outer.shape, [2, 3]);
  assert.deepEqual(values(outer), [9, 8, 7, 19, 18, 17]);
});

Deno.test("Add broadcasts a per-channel bias over NCHW", () => {
  const x = f32([1, 2, 2, 2], [0, 1, 2, 3, 4, 5, 6, 7]);
  const y = run("Add", [x, f32([2, 1, 1], [100, 200])]);
  assert.deepEqual(y.shape, [1, 2, 2, 2]);
  assert.deepEqual(values(y), [100, 101, 102, 103, 204, 205, 206, 207]);
  // Broadcast in the middle dimension: [2,1,2] against [2,3,2].
  const mid = run("Mul", [f32([2, 1, 2], [1, 2, 3, 4]), f32([2, 3, 2], Array.from({ length: 12 }, () => 1))]);
  assert.deepEqual(values(mid), [1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]);
});

Deno.test("Add of an empty tensor gives an empty result", () => {
  const y = run("Add", [f32([0, 3], []), f32([3], [1, 2, 3])]);
  assert.deepEqual(y.shape, [0, 3]);
  assert.equal(y.data.length, 0);
});

Deno.test("Div truncates integer quotients toward zero and Mul wraps 32-bit products", () => {
  assert.deepEqual(values(run("Div", [i32([4], [-7, 7, 7, -8]), i32([4], [2, -2, 2, 3])])), [-3, -3, 3, -2]);
  assert.deepEqual(values(run("Mul", [i32([2], [65536, -3]), i32([2], [65536, 5])])), [0, -15]);
  const u8 = tensor("u8", [2], Uint8Array.from([200, 5]));
  const sum = run("Add", [u8, tensor("u8", [2], Uint8Array.from([100, 6]))]);
  assert.equal(sum.dtype, "u8");
  assert.deepEqual(values(sum), [44, 11]);
});

Deno.test("i64 arithmetic is exact BigInt math", () => {
  const big = 2n ** 53n + 1n;
  const y = run("Add", [tensor("i64", [2], BigInt64Array.from([big, 2n ** 62n])), int64Tensor([1, 2 ** 62])]);
  assert.equal(y.dtype, "i64");
  assert.deepEqual(values(y), [big + 1n, -(2n ** 63n)]); // wraps like int64
  assert.deepEqual(values(run("Div", [int64Tensor([-7, 9]), int64Tensor([2, 0])])), [-3n, 0n]);
  assert.deepEqual(values(run("Mul", [int64Tensor([6], []), int64Tensor([7])])), [42n]);
});

Deno.test("f16 arithmetic computes in f32 and rounds back to f16", () => {
  const y = run("Add", [f16([3], [1, 1, 1]), f16([3], [2 ** -10, 2 ** -11, 3 * 2 ** -11])]);
  assert.equal(y.dtype, "f16");
  // 1 + 2^-10 is exact in f16; 1 + 2^-11 and 1 + 3*2^-11 are ties that round to the even mantissa.
  assert.deepEqual(values(y), [0x3c01, 0x3c00, 0x3c02]);
  assert.equal(halfToFloat(0x3c02), 1 + 2 ** -9);
  close(run("Sigmoid", [f16([1], [0])]), [0.5]);
});

Deno.test("Pow takes an exponent of another dtype and keeps the base dtype", () => {
  const y = run("Pow", [f32([3], [2, 3, 4]), int64Tensor([2, 3, -1])]);
  assert.equal(y.dtype, "f32");
  assert.deepEqual(values(y), [4, 27, 0.25]);
  assert.deepEqual(values(run("Pow", [i32([3], [2, 3, 2]), f32([3], [3, 2, -1])])), [8, 9, 0]);
  assert.deepEqual(values(run("Pow", [int64Tensor([3, -2]), int64Tensor([39, 3])])), [3n ** 39n, -8n]);
});

Deno.test("Mod follows the divisor's sign with fmod=0 and the dividend's with fmod=1", () => {
  const a = i32([4], [-4, 7, 4, -7]);
  const b = i32([4], [3, -3, 3, -3]);
  assert.deepEqual(values(run("Mod", [a, b])), [2, -2, 1, -1]);
  assert.deepEqual(values(run("Mod", [a, b], { fmod: attr.int(1) })), [-1, 1, 1, -1]);
  close(run("Mod", [f32([2], [-4.5, 5.5]), f32([2], [2, 2])], { fmod: attr.int(1) }), [-0.5, 1.5]);
  assert.deepEqual(values(run("Mod", [int64Tensor([-4, 7]), int64Tensor([3, -3])])), [2n, -2n]);
});

Deno.test("Max, Min, Sum and Mean fold any number of broadcast operands", () => {
  const a = f32([2], [1, 5]);
  const b = f32([2, 1], [3, 0]);
  const c = f32([], [2]);
  assert.deepEqual(values(run("Max", [a, b, c])), [3, 5, 2, 5]);
  assert.deepEqual(values(run("Min", [a, b, c])), [1, 2, 0, 0]);
  assert.deepEqual(values(run("Sum", [a, b, c])), [6, 10, 3, 7]);
  assert.deepEqual(values(run("Mean", [a, b, c])), [2, 10 / 3, 1, 7 / 3].map(Math.fround));
  assert.deepEqual(values(run("Sum", [a])), [1, 5]);
  assert.ok(Number.isNaN((run("Max", [f32([1], [NaN]), f32([1], [1])]).data as Float32Array)[0]));
  assert.deepEqual(values(run("Max", [int64Tensor([-5, 9]), int64Tensor([3, 2])])), [3n, 9n]);
});

Deno.test("PRelu broadcasts the slope; before opset 7 a 1-D slope is per channel", () => {
  const x = f32([1, 2, 2], [-1, 2, -3, 4]);
  assert.deepEqual(values(run("PRelu", [x, f32([1], [0.5])])), [-0.5, 2, -1.5, 4]);
  assert.deepEqual(values(run("PRelu", [x, f32([2, 1], [0.5, 2])])), [-0.5, 2, -6, 4]);
  assert.deepEqual(values(run("PRelu", [x, f32([2], [0.5, 2])], {}, 6)), [-0.5, 2, -6, 4]);
  assert.deepEqual(values(run("PRelu", [x, f32([2], [0.5, 2])], {}, 16)), [-0.5, 2, -1.5, 4]);
});

Deno.test("Add before opset 7 aligns B at `axis` when broadcast=1", () => {
  const a = f32([2, 3], [0, 0, 0, 0, 0, 0]);
  const y = run("Add", [a, f32([2], [1, 2])], { broadcast: attr.int(1), axis: attr.int(0) }, 6);
  assert.deepEqual(values(y), [1, 1, 1, 2, 2, 2]);
  assert.deepEqual(
    infer("Add", [{ elem: "f32", shape: [2, 3] }, { elem: "f32", shape: [2] }], {
      broadcast: attr.int(1),
      axis: attr.int(0),
    }, { opset: 6 }),
    { elem: "f32", shape: [2, 3] },
  );
});

// --- Comparisons, logic, Where -------------------------------------------------

Deno.test("comparisons give bool results", () => {
  const a = f32([3], [1, 2, 3]);
  const b = f32([], [2]);
  const cases: [string, number[]][] = [
    ["Equal", [0, 1, 0]],
    ["Less", [1, 0, 0]],
    ["LessOrEqual", [1, 1, 0]],
    ["Greater", [0, 0, 1]],
    ["GreaterOrEqual", [0, 1, 1]],
  ];
  for (const [type, expected] of cases) {
    const y = run(type, [a, b]);
    assert.equal(y.dtype, "bool", type);
    assert.deepEqual(values(y), expected, type);
  }
  assert.deepEqual(values(run("Less", [int64Tensor([-1, 2 ** 40]), int64Tensor([0, 2 ** 40])])), [1, 0]);
  assert.deepEqual(values(run("Equal", [bool([2], [1, 0]), bool([2], [1, 1])])), [1, 0]);
  assert.deepEqual(infer("Less", [{ elem: "f32", shape: ["N", 1] }, { elem: "f32", shape: [4] }]), {
    elem: "bool",
    shape: ["N", 4],
  });
});

Deno.test("And, Or, Xor and Not work on bool and reject other dtypes", () => {
  const a = bool([4], [0, 0, 1, 1]);
  const b = bool([4], [0, 1, 0, 1]);
  assert.deepEqual(values(run("And", [a, b])), [0, 0, 0, 1]);
  assert.deepEqual(values(run("Or", [a, b])), [0, 1, 1, 1]);
  assert.deepEqual(values(run("Xor", [a, b])), [0, 1, 1, 0]);
  assert.deepEqual(values(run("Xor", [a, bool([], [1])])), [1, 1, 0, 0]);
  assert.deepEqual(values(run("Not", [a])), [1, 1, 0, 0]);
  assert.throws(() => run("And", [f32([1], [1]), f32([1], [1])]), {
    message: 'op "n" (And): not defined for f32 operands',
  });
});

Deno.test("BitShift shifts unsigned integers", () => {
  const x = tensor("u8", [3], Uint8Array.from([1, 16, 255]));
  const s = tensor("u8", [3], Uint8Array.from([1, 2, 4]));
  assert.deepEqual(values(run("BitShift", [x, s], { direction: attr.string("LEFT") })), [2, 64, 240]);
  assert.deepEqual(values(run("BitShift", [x, s], { direction: attr.string("RIGHT") })), [0, 4, 15]);
  const big = tensor("u64", [1], BigUint64Array.from([1n]));
  assert.deepEqual(
    values(run("BitShift", [big, tensor("u64", [1], BigUint64Array.from([63n]))], {
      direction: attr.string("LEFT"),
    })),
    [2n ** 63n],
  );
  assert.throws(() => run("BitShift", [x, s], { direction: attr.string("UP") }), {
    message: 'op "n" (BitShift): direction must be "LEFT" or "RIGHT", found "UP"',
  });
  assert.throws(() => run("BitShift", [i32([1], [1]), i32([1], [1])], { direction: attr.string("LEFT") }), {
    message: 'op "n" (BitShift): not defined for i32 operands',
  });
});

Deno.test("Where picks from broadcast operands of any dtype", () => {
  const cond = bool([2, 1], [1, 0]);
  const y = run("Where", [cond, f32([2], [1, 2]), f32([], [9])]);
  assert.deepEqual(y.shape, [2, 2]);
  assert.deepEqual(values(y), [1, 2, 9, 9]);
  const ints = run("Where", [bool([2], [0, 1]), int64Tensor([1, 2]), int64Tensor([-1, -2])]);
  assert.deepEqual(values(ints), [-1n, 2n]);
  const strings = run("Where", [bool([2], [1, 0]), tensor("string", [2], ["a", "b"]), tensor("string", [], ["z"])]);
  assert.deepEqual(values(strings), ["a", "z"]);
  assert.throws(() => run("Where", [f32([1], [1]), f32([1], [1]), f32([1], [2])]), {
    message: 'op "n" (Where): condition must be bool, found f32',
  });
  assert.deepEqual(
    infer("Where", [{ elem: "bool", shape: ["N", 1] }, { elem: "i64", shape: [3] }, { elem: "i64", shape: [] }]),
    { elem: "i64", shape: ["N", 3] },
  );
});

// --- Unary ops ----------------------------------------------------------------

Deno.test("activations match hand-computed values", () => {
  const x = f32([5], [-2, -0.5, 0, 0.5, 3]);
  const sig = (v: number) => 1 / (1 + Math.exp(-v));
  const cases: [string, Record<string, Attribute>, number[]][] = [
    ["Relu", {}, [0, 0, 0, 0.5, 3]],
    ["LeakyRelu", {}, [-0.02, -0.005, 0, 0.5, 3]],
    ["LeakyRelu", { alpha: attr.float(0.1) }, [-0.2, -0.05, 0, 0.5, 3]],
    ["Elu", { alpha: attr.float(2) }, [2 * (Math.exp(-2) - 1), 2 * (Math.exp(-0.5) - 1), 0, 0.5, 3]],
    [
      "Selu",
      {},
      [-2, -0.5, 0, 0.5, 3].map((v) => 1.0507009873554805 * (v > 0 ? v : 1.6732632423543772 * Math.expm1(v))),
    ],
    ["Celu", { alpha: attr.float(2) }, [2 * Math.expm1(-1), 2 * Math.expm1(-0.25), 0, 0.5, 3]],
    ["Sigmoid", {}, [-2, -0.5, 0, 0.5, 3].map(sig)],
    ["HardSigmoid", {}, [0.1, 0.4, 0.5, 0.6, 1]],
    ["HardSigmoid", { alpha: attr.float(0.5), beta: attr.float(0.25) }, [0, 0, 0.25, 0.5, 1]],
    ["HardSwish", {}, [-2 * (1 / 6), -0.5 * (0.5 - 0.5 / 6), 0, 0.5 * (0.5 + 0.5 / 6), 3]],
    ["Tanh", {}, [-2, -0.5, 0, 0.5, 3].map(Math.tanh)],
    ["Softplus", {}, [-2, -0.5, 0, 0.5, 3].map((v) => Math.log(1 + Math.exp(v)))],
    ["Softsign", {}, [-2 / 3, -1 / 3, 0, 1 / 3, 0.75]],
    ["ThresholdedRelu", { alpha: attr.float(0.4) }, [0, 0, 0, 0.5, 3]],
    ["Shrink", { lambd: attr.float(1), bias: attr.float(0.5) }, [-1.5, 0, 0, 0, 2.5]],
    ["Gelu", {}, [-0.04550026389635842, -0.15426876936299344, 0, 0.34573123063700656, 2.995950393043261]],
    [
      "Gelu",
      { approximate: attr.string("tanh") },
      [-2, -0.5, 0, 0.5, 3].map((v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)))),
    ],
  ];
  for (const [type, attrs, expected] of cases) {
    const y = run(type, [x], attrs);
    assert.equal(y.dtype, "f32", type);
    close(y, expected.map(Math.fround), 2e-7);
  }
});

Deno.test("Sigmoid and Softplus stay finite at large magnitudes", () => {
  close(run("Sigmoid", [f32([2], [-1000, 1000])]), [0, 1]);
  close(run("Softplus", [f32([2], [-1000, 1000])]), [0, 1000]);
});

Deno.test("math functions match hand-computed values", () => {
  const x = tensor("f64", [3], Float64Array.from([0.25, 1, 4]));
  const cases: [string, number[]][] = [
    ["Exp", [Math.exp(0.25), Math.E, Math.exp(4)]],
    ["Log", [Math.log(0.25), 0, Math.log(4)]],
    ["Sqrt", [0.5, 1, 2]],
    ["Reciprocal", [4, 1, 0.25]],
    ["Neg", [-0.25, -1, -4]],
    ["Sin", [Math.sin(0.25), Math.sin(1), Math.sin(4)]],
    ["Cos", [Math.cos(0.25), Math.cos(1), Math.cos(4)]],
    // erf reference values from Abramowitz & Stegun table 7.1 / mpmath.
    ["Erf", [0.2763263901682369, 0.8427007929497149, 0.9999999845827421]],
  ];
  for (const [type, expected] of cases) {
    const y = run(type, [x]);
    assert.equal(y.dtype, "f64", type);
    close(y, expected, 1e-15);
  }
  close(run("Erf", [tensor("f64", [4], Float64Array.from([-0.5, 1.1, 2, 1e-30]))]), [
    -0.5204998778130465,
    0.8802050695740817,
    0.9953222650189527,
    1.1283791670955126e-30,
  ], 1e-15);
});

Deno.test("Round rounds halves to even; Floor, Ceil and Sign", () => {
  const x = f32([8], [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6]);
  assert.deepEqual(values(run("Round", [x])), [0, 2, 2, -0, -2, -2, 2, -3]);
  assert.deepEqual(values(run("Floor", [x])), [0, 1, 2, -1, -2, -3, 2, -3]);
  assert.deepEqual(values(run("Ceil", [x])), [1, 2, 3, -0, -1, -2, 3, -2]);
  assert.deepEqual(values(run("Sign", [f32([3], [-3, 0, 2])])), [-1, 0, 1]);
  assert.deepEqual(values(run("Sign", [int64Tensor([-3, 0, 2])])), [-1n, 0n, 1n]);
});

Deno.test("integer unary ops keep their dtype", () => {
  assert.deepEqual(values(run("Abs", [i32([2], [-3, 4])])), [3, 4]);
  assert.deepEqual(values(run("Neg", [int64Tensor([5, -(2 ** 60)])])), [-5n, 2n ** 60n]);
  assert.deepEqual(values(run("Relu", [tensor("i8", [2], Int8Array.from([-5, 5]))])), [0, 5]);
  assert.throws(() => run("Exp", [i32([1], [1])]), { message: 'op "n" (Exp): not defined for i32 operands' });
  assert.throws(() => run("Relu", [bool([1], [1])]), { message: 'op "n" (Relu): not defined for bool operands' });
});

Deno.test("IsNaN and IsInf give bool results; IsInf honours detect_negative/positive", () => {
  const x = f32([4], [NaN, Infinity, -Infinity, 1]);
  assert.deepEqual(values(run("IsNaN", [x])), [1, 0, 0, 0]);
  assert.equal(run("IsNaN", [x]).dtype, "bool");
  assert.deepEqual(values(run("IsInf", [x])), [0, 1, 1, 0]);
  assert.deepEqual(values(run("IsInf", [x], { detect_negative: attr.int(0) })), [0, 1, 0, 0]);
  assert.deepEqual(values(run("IsInf", [x], { detect_positive: attr.int(0) })), [0, 0, 1, 0]);
  assert.deepEqual(infer("IsNaN", [{ elem: "f16", shape: [2] }]), { elem: "bool", shape: [2] });
});

Deno.test("Gelu rejects an unknown approximation", () => {
  assert.throws(() => run("Gelu", [f32([1], [1])], { approximate: attr.string("fast") }), {
    message: 'op "n" (Gelu): approximate must be "none" or "tanh", found "fast"',
  });
});

// --- Clip -------------------------------------------------------------------------

Deno.test("Clip before opset 11 takes min/max attributes", () => {
  const x = f32([4], [-3, -1, 1, 3]);
  assert.deepEqual(values(run("Clip", [x], { min: attr.float(-2), max: attr.float(2) }, 6)), [-2, -1, 1, 2]);
  assert.deepEqual(values(run("Clip", [x], { max: attr.float(0) }, 6)), [-3, -1, 0, 0]);
});

Deno.test("Clip from opset 11 takes optional min/max operands", () => {
  const x = f32([5], [-3, -1, 1, 3, NaN]);
  const y = run("Clip", [x, f32([], [-2]), f32([], [2])], {}, 13);
  close(y, [-2, -1, 1, 2, NaN]);
  close(run("Clip", [x, null, f32([], [0])], {}, 13), [-3, -1, 0, 0, NaN]);
  close(run("Clip", [x, f32([], [0])], {}, 13), [0, 0, 1, 3, NaN]);
  // min > max: every element becomes max, as min(max(x, lo), hi) does.
  close(run("Clip", [x, f32([], [5]), f32([], [4])], {}, 13), [4, 4, 4, 4, NaN]);
  const i8 = tensor("i8", [3], Int8Array.from([-100, 0, 100]));
  const i8Bound = (v: number) => tensor("i8", [], Int8Array.from([v]));
  assert.deepEqual(values(run("Clip", [i8, i8Bound(-10), i8Bound(10)], {}, 13)), [-10, 0, 10]);
  const big = run("Clip", [int64Tensor([-(2 ** 60), 5]), int64Tensor([0], [])], {}, 13);
  assert.deepEqual(values(big), [0n, 5n]);
});

Deno.test("Clip rejects non-scalar bounds and bounds of another dtype", () => {
  assert.throws(() => run("Clip", [f32([2], [1, 2]), f32([2], [0, 0])], {}, 13), {
    message: 'op "n" (Clip): min must be a single value, found shape [2]',
  });
  assert.throws(() => run("Clip", [f32([2], [1, 2]), int64Tensor([0], [])], {}, 13), {
    message: 'op "n" (Clip): bounds must be f32 like the input, found i64',
  });
});

// --- Softmax family ---------------------------------------------------------------

const softmaxOf = (xs: number[]) => {
  const m = Math.max(...xs);
  const e = xs.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
};

Deno.test("Softmax from opset 13 normalises along axis (default -1)", () => {
  const x = f32([2, 2], [1, 2, 3, 5]);
  close(run("Softmax", [x], {}, 13), [...softmaxOf([1, 2]), ...softmaxOf([3, 5])]);
  const col = run("Softmax", [x], { axis: attr.int(0) }, 13);
  const [a, b] = [softmaxOf([1, 3]), softmaxOf([2, 5])];
  close(col, [a[0], b[0], a[1], b[1]]);
});

Deno.test("Softmax before opset 13 coerces the input to 2-D at axis (default 1)", () => {
  const x = f32([2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]);
  // Default axis 1: each batch row of 4 elements is normalised together.
  close(run("Softmax", [x], {}, 11), [...softmaxOf([1, 2, 3, 4]), ...softmaxOf([5, 6, 7, 8])]);
  // The same op at opset 13 normalises pairs only.
  close(run("Softmax", [x], {}, 13), [1, 2, 3, 4].flatMap((k) => softmaxOf([2 * k - 1, 2 * k])));
  // axis 0 flattens everything into one row.
  close(run("Softmax", [x], { axis: attr.int(0) }, 11), softmaxOf([1, 2, 3, 4, 5, 6, 7, 8]));
  close(run("LogSoftmax", [x], {}, 11), [...softmaxOf([1, 2, 3, 4]), ...softmaxOf([5, 6, 7, 8])].map(Math.log), 1e-5);
});

Deno.test("LogSoftmax is stable for large inputs and Hardmax picks the first maximum", () => {
  close(run("LogSoftmax", [f32([2], [1000, 1000])]), [-Math.LN2, -Math.LN2]);
  assert.deepEqual(values(run("Hardmax", [f32([2, 3], [1, 3, 3, 0, -1, -2])])), [0, 1, 0, 1, 0, 0]);
  assert.deepEqual(values(run("Hardmax", [f32([2, 3], [1, 3, 3, 0, -1, -2])], { axis: attr.int(0) })), [
    1,
    1,
    1,
    0,
    0,
    0,
  ]);
});

Deno.test("Softmax rejects an out-of-range axis naming the op", () => {
  assert.throws(() => run("Softmax", [f32([2], [1, 2])], { axis: attr.int(1) }, 13), {
    message: 'op "n" (Softmax): axis 1 is out of range for rank 1',
  });
  assert.throws(() => infer("Softmax", [{ elem: "f32", shape: [2, 2] }], { axis: attr.int(-3) }), {
    message: 'op "n" (Softmax): axis -3 is out of range for rank 2',
  });
});

// --- Reductions ---------------------------------------------------------------

const x234 = f32([2, 3, 4], Array.from({ length: 24 }, (_, i) => i + 1));

Deno.test("ReduceSum takes axes as an operand, with keepdims and noop_with_empty_axes", () => {
  const kept = run("ReduceSum", [x234, int64Tensor([1])], {}, 13);
  assert.deepEqual(kept.shape, [2, 1, 4]);
  assert.deepEqual(values(kept), [15, 18, 21, 24, 51, 54, 57, 60]);
  const dropped = run("ReduceSum", [x234, int64Tensor([0, -1])], { keepdims: attr.int(0) }, 13);
  assert.deepEqual(dropped.shape, [3]);
  assert.deepEqual(values(dropped), [68, 100, 132]);
  const all = run("ReduceSum", [x234, null], { keepdims: attr.int(0) }, 13);
  assert.deepEqual(all.shape, []);
  assert.deepEqual(values(all), [300]);
  const none = run("ReduceSum", [x234, int64Tensor([])], { noop_with_empty_axes: attr.int(1) }, 13);
  assert.deepEqual(none.shape, [2, 3, 4]);
  assert.deepEqual(values(none), values(x234));
});

Deno.test("reductions take axes as an attribute before opset 18", () => {
  const x = f32([2, 2], [1, -2, 3, 4]);
  const axes = { axes: attr.ints([1]) };
  const cases: [string, number[]][] = [
    ["ReduceMean", [-0.5, 3.5]],
    ["ReduceMax", [1, 4]],
    ["ReduceMin", [-2, 3]],
    ["ReduceProd", [-2, 12]],
    ["ReduceL1", [3, 7]],
    ["ReduceL2", [Math.sqrt(5), 5]],
    ["ReduceSumSquare", [5, 25]],
    ["ReduceLogSum", [NaN, Math.log(7)]],
    ["ReduceLogSumExp", [Math.log(Math.exp(1) + Math.exp(-2)), Math.log(Math.exp(3) + Math.exp(4))]],
  ];
  for (const [type, expected] of cases) {
    const y = run(type, [x], axes, 13);
    assert.deepEqual(y.shape, [2, 1], type);
    close(y, expected.map(Math.fround), 1e-6);
  }
  // ...and as an operand from opset 18.
  close(run("ReduceMax", [x, int64Tensor([0])], { keepdims: attr.int(0) }, 18), [3, 4]);
});

Deno.test("ReduceLogSumExp is stable for large inputs and integer reductions stay exact", () => {
  close(run("ReduceLogSumExp", [f32([2], [1000, 1000])], { keepdims: attr.int(0) }), [1000 + Math.LN2]);
  const big = tensor("i64", [2], BigInt64Array.from([2n ** 53n, 1n]));
  assert.deepEqual(values(run("ReduceSum", [big, null], {}, 13)), [2n ** 53n + 1n]);
  assert.deepEqual(values(run("ReduceMean", [i32([2, 2], [1, 2, -3, -4])], { axes: attr.ints([1]) }, 13)), [1, -3]);
  assert.deepEqual(values(run("ReduceMax", [int64Tensor([-5, -7]), null], {}, 18)), [-5n]);
});

Deno.test("ArgMax and ArgMin give i64 indices with keepdims and select_last_index", () => {
  const x = f32([2, 3], [1, 3, 3, 2, 0, 2]);
  const first = run("ArgMax", [x], { axis: attr.int(1) });
  assert.equal(first.dtype, "i64");
  assert.deepEqual(first.shape, [2, 1]);
  assert.deepEqual(values(first), [1n, 0n]);
  const last = run("ArgMax", [x], { axis: attr.int(1), select_last_index: attr.int(1), keepdims: attr.int(0) });
  assert.deepEqual(last.shape, [2]);
  assert.deepEqual(values(last), [2n, 2n]);
  assert.deepEqual(values(run("ArgMin", [x])), [0n, 1n, 1n]);
  assert.deepEqual(values(run("ArgMin", [x], { axis: attr.int(-1), select_last_index: attr.int(1) })), [0n, 1n]);
});

Deno.test("reduction inference handles attribute, constant and unknown axes", () => {
  const t: TensorType = { elem: "f32", shape: ["N", 3, 4, 4] };
  assert.deepEqual(infer("ReduceMean", [t], { axes: attr.ints([2, 3]) }), { elem: "f32", shape: ["N", 3, 1, 1] });
  assert.deepEqual(infer("ReduceMean", [t], { axes: attr.ints([-1]), keepdims: attr.int(0) }), {
    elem: "f32",
    shape: ["N", 3, 4],
  });
  const axesType: TensorType = { elem: "i64", shape: [2] };
  const withAxes = infer("ReduceSum", [t, axesType], {}, { constants: [null, int64Tensor([1, 2])] });
  assert.deepEqual(withAxes, { elem: "f32", shape: ["N", 1, 1, 4] });
  assert.deepEqual(infer("ReduceSum", [t, axesType]), { elem: "f32", shape: ["?", "?", "?", "?"] });
  assert.deepEqual(infer("ReduceSum", [t, axesType], { keepdims: attr.int(0) }), { elem: "f32", shape: ["?", "?"] });
  assert.deepEqual(infer("ReduceSum", [t]), { elem: "f32", shape: [1, 1, 1, 1] });
  assert.deepEqual(infer("ArgMax", [t], { axis: attr.int(1), keepdims: attr.int(0) }), {
    elem: "i64",
    shape: ["N", 4, 4],
  });
  assert.throws(() => infer("ReduceMax", [t], { axes: attr.ints([4]) }), {
    message: 'op "n" (ReduceMax): axis 4 is out of range for rank 4',
  });
});

// --- Inference, shape values, errors, cost ----------------------------------------

Deno.test("binary inference broadcasts symbolic shapes and keeps the element type", () => {
  assert.deepEqual(
    infer("Add", [{ elem: "f32", shape: ["N", 3, 32, 32] }, { elem: "f32", shape: [3, 1, 1] }]),
    { elem: "f32", shape: ["N", 3, 32, 32] },
  );
  assert.deepEqual(infer("Mul", [{ elem: "f16", shape: ["N", 1] }, { elem: "f16", shape: [1, "M"] }]), {
    elem: "f16",
    shape: ["N", "M"],
  });
  assert.deepEqual(infer("Sum", [{ elem: "f32", shape: [2] }, { elem: "f32", shape: [3, 1] }, null]), {
    elem: "f32",
    shape: null,
  });
  assert.deepEqual(infer("Pow", [{ elem: "f32", shape: [2, 2] }, { elem: "i64", shape: [] }]), {
    elem: "f32",
    shape: [2, 2],
  });
});

Deno.test("incompatible operands are errors naming the op", () => {
  assert.throws(() => infer("Add", [{ elem: "f32", shape: [2, 3] }, { elem: "f32", shape: [4] }]), {
    message: 'op "n" (Add): cannot broadcast shapes [2,3] and [4]',
  });
  assert.throws(() => infer("Equal", [{ elem: "f32", shape: [2] }, { elem: "i64", shape: [2] }]), {
    message: 'op "n" (Equal): operand types f32 and i64 differ',
  });
  assert.throws(() => infer("Sub", [{ elem: "f32", shape: [2] }]), {
    message: 'op "n" (Sub): expects 2 operands, found 1',
  });
  assert.throws(() => run("Add", [f32([2], [1, 2]), f32([3], [1, 2, 3])]), {
    message: 'op "n" (Add): cannot broadcast shapes [2] and [3]',
  });
  assert.throws(() => run("Mul", [f32([1], [1]), int64Tensor([1])]), {
    message: 'op "n" (Mul): operand dtypes f32 and i64 differ',
  });
  assert.throws(() => run("Add", [f32([1], [1]), null]), { message: 'op "n" (Add): operand 1 is missing' });
  assert.throws(() => run("Add", [tensor("string", [1], ["a"]), tensor("string", [1], ["b"])]), {
    message: 'op "n" (Add): not defined for string operands',
  });
});

Deno.test("shape arithmetic propagates symbolic dimensions", () => {
  assert.deepEqual(shapeValue("Mul", [["N"], [3136]]), ["N*3136"]);
  assert.deepEqual(shapeValue("Div", [["N*3136"], [3136]]), ["N"]);
  assert.deepEqual(shapeValue("Div", [[shapeValue("Mul", [["N*64"], [49]])![0]], [64]]), ["N*49"]);
  assert.deepEqual(shapeValue("Div", [["N*6"], ["N*4"]]), ["?"]);
  assert.deepEqual(shapeValue("Div", [[12, "N"], [4]]), [3, "?"]);
  assert.deepEqual(shapeValue("Add", [["N", 4], [0, 1]]), ["N", 5]);
  assert.deepEqual(shapeValue("Sub", [["N", 4], ["N", 1]]), [0, 3]);
  assert.deepEqual(shapeValue("Mul", [["N", 2], [-1]]), ["?", -2]);
  assert.deepEqual(shapeValue("Add", [["N"], null]), null);
  assert.deepEqual(shapeValue("Max", [[1, "N"], [2, "N"]]), [2, "N"]);
});

Deno.test("Equal and Where evaluate PyTorch's Where(Equal(shape, -1), ones, shape)", () => {
  const shape: Dim[] = ["N", -1, 4];
  const isMinus = shapeValue("Equal", [shape, [-1]]);
  assert.deepEqual(isMinus, [0, 1, 0]);
  assert.deepEqual(shapeValue("Where", [isMinus, [1], shape]), ["N", 1, 4]);
  assert.deepEqual(shapeValue("Equal", [["N", 4], [2]]), ["?", 0]);
  // A bool constant condition works too.
  assert.deepEqual(shapeValue("Where", [null, [7, 7], ["N", 3]], [bool([2], [0, 1]), null, null]), ["N", 7]);
  // An unknown condition keeps only elements where both branches agree.
  assert.deepEqual(shapeValue("Where", [["?", "?"], [1, 3], ["N", 3]]), ["?", 3]);
});

Deno.test("every elementwise op counts 0 MACs", () => {
  for (const d of elementwiseOps) {
    assert.equal(d.macs?.(makeOp(d.type, 1), [{ elem: "f32", shape: [64, 64] }], []), 0, d.type);
  }
});

Deno.test("elementwiseOps defines each op type once", () => {
  const types = elementwiseOps.map((d) => d.type);
  assert.equal(new Set(types).size, types.length);
  for (const t of ["Add", "Where", "Softmax", "ReduceLogSumExp", "ArgMin", "Clip", "Gelu", "BitShift"]) {
    assert.ok(defs.has(t), t);
  }
});

Deno.test("float32 Sigmoid (WebAssembly SIMD) is within 1e-6 relative of the float64 formula", () => {
  // 40003 values: several SIMD chunks and a tail of 3; special values first.
  const n = 40003;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (i / n - 0.5) * 200 + (i % 13) * 1e-3;
  x.set([NaN, -0, 0, Infinity, -Infinity, -87.5, -86.9, 88.8, 1e-30, -1e-30, 0.5, -0.5]);
  const y = run("Sigmoid", [tensor("f32", [n], x)]);
  for (let i = 0; i < n; i++) {
    const v = x[i];
    const want = v >= 0 ? 1 / (1 + Math.exp(-v)) : Math.exp(v) / (1 + Math.exp(v));
    const got = y.data[i] as number;
    if (Number.isNaN(v)) assert.ok(Number.isNaN(got), `sigmoid(NaN) is ${got}`);
    else assert.ok(Math.abs(got - want) <= 1e-6 * want + 1e-37, `sigmoid(${v}) = ${got}, want ${want}`);
  }
  assert.deepEqual([...(y.data as Float32Array).subarray(0, 5)], [NaN, 0.5, 0.5, 1, 0]);
});
