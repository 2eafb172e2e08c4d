import assert from "node:assert/strict";
import { attr, type Attribute } from "../attributes.ts";
import { Graph, Op, Value } from "../graph.ts";
import { interpret } from "../interpreter.ts";
import { Module } from "../module.ts";
import { inferShapes } from "../shape.ts";
import { float32Tensor, floatToBfloat16, floatToHalf, int64Tensor, type Tensor, tensor } from "../tensor.ts";
import { type Dim, type TensorType, tensorType } from "../types.ts";
import { tensorOps } from "./tensor.ts";

type Attrs = Record<string, Attribute>;

/** Run one op through the interpreter on graph inputs (null = omitted operand). */
function run(type: string, inputs: (Tensor | null)[], attrs: Attrs = {}, opset = 13, results = 1): Tensor[] {
  const g = new Graph();
  const feeds: Record<string, Tensor> = {};
  const operands = inputs.map((t, i) => {
    if (t === null) return null;
    feeds[`in${i}`] = t;
    return g.addInput(new Value(`in${i}`, tensorType(t.dtype, t.shape)));
  });
  const op = g.addOp(
    new Op({
      name: "t",
      type,
      operands,
      results: Array.from({ length: results }, (_, i) => new Value(`out${i}`)),
      attributes: Object.entries(attrs),
    }),
  );
  g.outputs.push(...op.results);
  const out = interpret(new Module(g, [["", opset]]), feeds);
  return op.results.map((r) => out[r.name]);
}

/** Infer one op's result types: tensors become constants, types become graph inputs. */
function infer(
  type: string,
  operands: (Tensor | TensorType | null)[],
  attrs: Attrs = {},
  opset = 13,
  results = 1,
): (TensorType | null)[] {
  const g = new Graph();
  const values = operands.map((o, i) => {
    if (o === null) return null;
    if ("data" in o) return g.addConstant(`c${i}`, o, tensorType(o.dtype, o.shape));
    return g.addInput(new Value(`in${i}`, o));
  });
  const op = g.addOp(
    new Op({
      name: "t",
      type,
      operands: values,
      results: Array.from({ length: results }, (_, i) => new Value(`out${i}`)),
      attributes: Object.entries(attrs),
    }),
  );
  inferShapes(new Module(g, [["", opset]]));
  return op.results.map((r) => r.type as TensorType | null);
}

const f32 = float32Tensor;
const i64 = (values: number[], shape?: number[]): Tensor => int64Tensor(values, shape);
const values = (t: Tensor): unknown[] => Array.from(t.data as ArrayLike<unknown>);
const t32 = (shape: Dim[]): TensorType => tensorType("f32", shape);
/** An int64 tensor from bigints, for values beyond 2^53 (they reach the kernels as ±9.223372036854776e18). */
const i64big = (v: bigint[]): Tensor => tensor("i64", [v.length], BigInt64Array.from(v));
const MAX = i64big([2n ** 63n - 1n]);
const MIN = i64big([-(2n ** 63n)]);

/** Naive reference: element at multi-index `idx` of a row-major array. */
function at(data: ArrayLike<unknown>, shape: readonly number[], idx: readonly number[]): unknown {
  let p = 0;
  for (let i = 0; i < shape.length; i++) p = p * shape[i] + idx[i];
  return data[p];
}

function permutations(n: number): number[][] {
  if (n === 1) return [[0]];
  return permutations(n - 1).flatMap((p) =>
    Array.from({ length: n }, (_, i) => [...p.slice(0, i), n - 1, ...p.slice(i)])
  );
}

function iota(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

Deno.test("tensorOps defines every op of the family once", () => {
  const types = tensorOps.map((d) => d.type);
  assert.equal(new Set(types).size, types.length);
  for (const t of ["Identity", "Reshape", "Slice", "Pad", "Cast", "Gather", "Split", "Shape", "Constant"]) {
    assert.ok(types.includes(t), t);
  }
});

// --- Identity, Dropout -------------------------------------------------------

Deno.test("Identity returns its operand", () => {
  const x = f32([2], [1, 2]);
  assert.equal(run("Identity", [x])[0], x);
  assert.deepEqual(infer("Identity", [t32(["N", 2])]), [t32(["N", 2])]);
});

Deno.test("Dropout is the identity at inference with an all-true mask", () => {
  const x = f32([3], [1, -2, 3]);
  const [y, mask] = run("Dropout", [x, f32([], [0.5]), tensor("bool", [], Uint8Array.of(0))], {}, 13, 2);
  assert.deepEqual(values(y), [1, -2, 3]);
  assert.equal(mask.dtype, "bool");
  assert.deepEqual(values(mask), [1, 1, 1]);
  // Before opset 10 the mask had the data's type.
  const [, oldMask] = run("Dropout", [x], { ratio: attr.float(0.3) }, 7, 2);
  assert.equal(oldMask.dtype, "f32");
  assert.deepEqual(infer("Dropout", [t32(["N", 3])], {}, 13, 2), [t32(["N", 3]), tensorType("bool", ["N", 3])]);
});

Deno.test("Dropout rejects training_mode=true unless the ratio is 0", () => {
  const x = f32([2], [1, 2]);
  const on = tensor("bool", [], Uint8Array.of(1));
  assert.throws(
    () => run("Dropout", [x, f32([], [0.5]), on], {}, 13, 2),
    { message: 'op "t" (Dropout): training_mode=true (random dropout, ratio 0.5) is not supported' },
  );
  assert.deepEqual(values(run("Dropout", [x, f32([], [0]), on], {}, 13, 2)[0]), [1, 2]);
});

// --- Constant, ConstantOfShape, Shape, Size -----------------------------------

Deno.test("Constant reads every value_* attribute form", () => {
  const cases: [Attrs, string, number[], unknown[]][] = [
    [{ value: attr.tensor(f32([2], [1.5, 2])) }, "f32", [2], [1.5, 2]],
    [{ value_float: attr.float(0.25) }, "f32", [], [0.25]],
    [{ value_floats: attr.floats([1, 2, 3]) }, "f32", [3], [1, 2, 3]],
    [{ value_int: attr.int(7) }, "i64", [], [7n]],
    [{ value_ints: attr.ints([4, -1]) }, "i64", [2], [4n, -1n]],
    [{ value_string: attr.string("hi") }, "string", [], ["hi"]],
    [{ value_strings: attr.strings(["a", "b"]) }, "string", [2], ["a", "b"]],
  ];
  for (const [attrs, dtype, shape, data] of cases) {
    const [t] = run("Constant", [], attrs);
    assert.equal(t.dtype, dtype);
    assert.deepEqual(t.shape, shape);
    assert.deepEqual(values(t), data);
    assert.deepEqual(infer("Constant", [], attrs), [tensorType(t.dtype, shape)]);
  }
});

Deno.test("Constant rejects sparse_value and a missing value", () => {
  const sparse: Attrs = { sparse_value: { kind: "opaque", value: {}, refKind: "sparse_tensor" } };
  assert.throws(() => infer("Constant", [], sparse), {
    message: 'op "t" (Constant): sparse_value constants are not supported; store the tensor densely',
  });
  assert.throws(() => run("Constant", [], {}), {
    message: 'op "t" (Constant): needs one of the attributes value, value_float(s), value_int(s), value_string(s)',
  });
});

Deno.test("Constant folds through inferShapes and feeds a Reshape", () => {
  const g = new Graph();
  const x = g.addInput(new Value("x", t32([2, 6])));
  const c = g.addOp(
    new Op({
      name: "c",
      type: "Constant",
      results: [new Value("c")],
      attributes: [["value_ints", attr.ints([3, -1])]],
    }),
  );
  const r = g.addOp(new Op({ name: "r", type: "Reshape", operands: [x, c.result], results: [new Value("y")] }));
  const folded = inferShapes(new Module(g));
  assert.deepEqual(values(folded.get(c.result)!), [3n, -1n]);
  assert.deepEqual(r.result.type, t32([3, 4]));
});

Deno.test("ConstantOfShape fills the value attribute's dtype", () => {
  const [t] = run("ConstantOfShape", [i64([2, 2])], { value: attr.tensor(i64([7], [1])) });
  assert.equal(t.dtype, "i64");
  assert.deepEqual(values(t), [7n, 7n, 7n, 7n]);
  const [z] = run("ConstantOfShape", [i64([3])]);
  assert.equal(z.dtype, "f32");
  assert.deepEqual(values(z), [0, 0, 0]);
  assert.throws(() => run("ConstantOfShape", [i64([2, -1])]), {
    message: 'op "t" (ConstantOfShape): shape [2,-1] has a negative dimension',
  });
});

Deno.test("ConstantOfShape takes a symbolic shape from a Shape op", () => {
  const g = new Graph();
  const x = g.addInput(new Value("x", t32(["N", 3])));
  const s = g.addOp(new Op({ name: "s", type: "Shape", operands: [x], results: [new Value("s")] }));
  const c = g.addOp(new Op({ name: "c", type: "ConstantOfShape", operands: [s.result], results: [new Value("c")] }));
  inferShapes(new Module(g));
  assert.deepEqual(s.result.type, tensorType("i64", [2]));
  assert.deepEqual(c.result.type, t32(["N", 3]));
});

Deno.test("Shape honours opset 15 start and end", () => {
  const x = f32([2, 3, 4, 5], new Float32Array(120));
  assert.deepEqual(values(run("Shape", [x])[0]), [2n, 3n, 4n, 5n]);
  assert.deepEqual(values(run("Shape", [x], { start: attr.int(1), end: attr.int(-1) }, 15)[0]), [3n, 4n]);
  assert.deepEqual(values(run("Shape", [x], { start: attr.int(-1) }, 15)[0]), [5n]);
  assert.deepEqual(values(run("Shape", [x], { start: attr.int(-10), end: attr.int(10) }, 15)[0]), [2n, 3n, 4n, 5n]);
  assert.deepEqual(values(run("Shape", [x], { start: attr.int(3), end: attr.int(1) }, 15)[0]), []);
  // Before opset 15 the attributes do not exist.
  assert.deepEqual(values(run("Shape", [x], { start: attr.int(1) }, 13)[0]), [2n, 3n, 4n, 5n]);
  assert.deepEqual(infer("Shape", [t32(["N", 3, 4])], { start: attr.int(1) }, 15), [tensorType("i64", [2])]);
});

Deno.test("Size counts elements", () => {
  const [s] = run("Size", [f32([2, 3], new Float32Array(6))]);
  assert.deepEqual(s.shape, []);
  assert.deepEqual(values(s), [6n]);
});

// --- Cast, CastLike ------------------------------------------------------------

const to = (code: number): Attrs => ({ to: attr.int(code) });
const FLOAT = 1, INT32 = 6, INT64 = 7, STRING = 8, BOOL = 9, FLOAT16 = 10, DOUBLE = 11, UINT8 = 2, BFLOAT16 = 16;

Deno.test("Cast float to integers truncates toward zero", () => {
  const x = f32([5], [-1.7, -0.5, 0.5, 2.9, 3]);
  assert.deepEqual(values(run("Cast", [x], to(INT32))[0]), [-1, 0, 0, 2, 3]);
  assert.deepEqual(values(run("Cast", [x], to(INT64))[0]), [-1n, 0n, 0n, 2n, 3n]);
  assert.deepEqual(values(run("Cast", [f32([2], [255.9, 256])], to(UINT8))[0]), [255, 0]);
});

Deno.test("Cast converts between f16, bf16, f32, f64 and bool", () => {
  const x = f32([4], [1, -2.5, 0.1, 65504]);
  const [h] = run("Cast", [x], to(FLOAT16));
  assert.equal(h.dtype, "f16");
  assert.deepEqual(values(h), [0x3c00, 0xc100, floatToHalf(0.1), 0x7bff]);
  assert.deepEqual(values(run("Cast", [h], to(FLOAT))[0]), [1, -2.5, Math.fround(0.0999755859375), 65504]);
  // bfloat16 rounds to nearest even, as onnxruntime does: 0.48033667 -> 0.48046875.
  const [b] = run("Cast", [f32([1], [0.48033667])], to(BFLOAT16));
  assert.deepEqual(values(b), [floatToBfloat16(0.48046875)]);
  assert.deepEqual(values(run("Cast", [b], to(DOUBLE))[0]), [0.48046875]);
  assert.deepEqual(values(run("Cast", [f32([3], [0, -0.5, NaN])], to(BOOL))[0]), [0, 1, 1]);
});

Deno.test("Cast keeps int64 exact and wraps narrower integers", () => {
  const big = tensor("i64", [2], BigInt64Array.of(2n ** 40n + 1n, -3n));
  assert.deepEqual(values(run("Cast", [big], to(INT32))[0]), [1, -3]);
  const [u] = run("Cast", [tensor("i32", [1], Int32Array.of(-1))], to(INT64));
  assert.deepEqual(values(u), [-1n]);
});

Deno.test("Cast to and from string", () => {
  const [s] = run("Cast", [f32([4], [0.039187793, 1, NaN, -Infinity])], to(STRING));
  assert.deepEqual(values(s), ["0.039187793", "1", "NaN", "-INF"]);
  const strings = tensor("string", [5], ["1.5", "1e-2", "+INF", "nan", "-inf"]);
  assert.deepEqual(values(run("Cast", [strings], to(FLOAT))[0]), [1.5, Math.fround(0.01), Infinity, NaN, -Infinity]);
});

Deno.test("Cast rejects float8 targets", () => {
  assert.throws(() => run("Cast", [f32([1], [1])], to(17)), {
    message: 'op "t" (Cast): casting f32 to f8e4m3fn is not supported (8-bit and 4-bit floats have no kernels)',
  });
  assert.throws(() => infer("Cast", [t32([1])], to(99)), {
    message: 'op "t" (Cast): attribute "to" is 99, not an ONNX data type',
  });
});

Deno.test("Cast and CastLike infer the target type and keep shape values", () => {
  assert.deepEqual(infer("Cast", [t32(["N", 2])], to(FLOAT16)), [tensorType("f16", ["N", 2])]);
  assert.deepEqual(infer("CastLike", [t32(["N"]), tensorType("i8", [1])]), [tensorType("i8", ["N"])]);
  const [y] = run("CastLike", [f32([2], [1.9, -1.9]), tensor("i8", [1], Int8Array.of(0))]);
  assert.equal(y.dtype, "i8");
  assert.deepEqual(values(y), [1, -1]);
});

// --- Reshape, Flatten, Squeeze, Unsqueeze ----------------------------------------

Deno.test("Reshape copies 0 dims and infers -1", () => {
  const x = f32([2, 3, 4], iota(24));
  const [y] = run("Reshape", [x, i64([0, -1])]);
  assert.deepEqual(y.shape, [2, 12]);
  assert.equal(y.data, x.data);
  assert.deepEqual(infer("Reshape", [t32(["N", 3, 4]), i64([0, -1])]), [t32(["N", 12])]);
  assert.deepEqual(infer("Reshape", [t32(["N", 3, 4]), i64([-1, 6])]), [t32(["N*2", 6])]);
  assert.deepEqual(infer("Reshape", [t32(["N", 3]), i64([-1, 2])]), [t32(["?", 2])]);
});

Deno.test("Reshape with allowzero=1 keeps a literal 0", () => {
  const [y] = run("Reshape", [f32([0, 3], []), i64([3, 0])], { allowzero: attr.int(1) }, 14);
  assert.deepEqual(y.shape, [3, 0]);
  assert.throws(() => run("Reshape", [f32([0, 3], []), i64([0, -1])], { allowzero: attr.int(1) }, 14), {
    message: 'op "t" (Reshape): shape [0,-1] has both 0 and -1 while allowzero=1',
  });
});

Deno.test("Reshape before opset 5 reads the shape attribute", () => {
  const [y] = run("Reshape", [f32([6], iota(6))], { shape: attr.ints([3, 2]) }, 4);
  assert.deepEqual(y.shape, [3, 2]);
  assert.deepEqual(infer("Reshape", [t32([6])], { shape: attr.ints([-1, 3]) }, 1), [t32([2, 3])]);
});

Deno.test("Reshape rejects incompatible sizes", () => {
  assert.throws(() => run("Reshape", [f32([6], iota(6)), i64([4, 2])]), {
    message: 'op "t" (Reshape): cannot reshape [6] to [4,2]: 6 elements against 8',
  });
  assert.throws(() => infer("Reshape", [t32([7]), i64([-1, 2])]), {
    message: 'op "t" (Reshape): cannot reshape [7] to [-1,2]: 7 elements do not divide into 2',
  });
  assert.throws(() => infer("Reshape", [t32([8]), i64([-1, -1])]), {
    message: 'op "t" (Reshape): shape [-1,-1] has more than one -1',
  });
});

Deno.test("Flatten splits at the axis, negative axes included", () => {
  const x = f32([2, 3, 4], iota(24));
  assert.deepEqual(run("Flatten", [x])[0].shape, [2, 12]);
  assert.deepEqual(run("Flatten", [x], { axis: attr.int(0) })[0].shape, [1, 24]);
  assert.deepEqual(run("Flatten", [x], { axis: attr.int(-1) }, 11)[0].shape, [6, 4]);
  assert.deepEqual(run("Flatten", [x], { axis: attr.int(3) })[0].shape, [24, 1]);
  assert.deepEqual(infer("Flatten", [t32(["N", 64, 7, 7])]), [t32(["N", 3136])]);
  assert.throws(() => infer("Flatten", [t32([2, 3])], { axis: attr.int(3) }), {
    message: 'op "t" (Flatten): axis 3 is out of range for rank 2',
  });
});

Deno.test("Squeeze and Unsqueeze take axes as an attribute before opset 13 and an input from 13", () => {
  const x = f32([1, 3, 1], [1, 2, 3]);
  assert.deepEqual(run("Squeeze", [x], { axes: attr.ints([0]) }, 11)[0].shape, [3, 1]);
  assert.deepEqual(run("Squeeze", [x, i64([-1])], {}, 13)[0].shape, [1, 3]);
  assert.deepEqual(run("Squeeze", [x], {}, 13)[0].shape, [3]);
  const y = f32([3], [1, 2, 3]);
  assert.deepEqual(run("Unsqueeze", [y], { axes: attr.ints([0, 2]) }, 11)[0].shape, [1, 3, 1]);
  assert.deepEqual(run("Unsqueeze", [y, i64([-1, 0])], {}, 13)[0].shape, [1, 3, 1]);
  assert.deepEqual(infer("Unsqueeze", [t32(["N", 4]), i64([1])]), [t32(["N", 1, 4])]);
  assert.deepEqual(infer("Squeeze", [t32(["N", 1, 4]), i64([1])]), [t32(["N", 4])]);
});

Deno.test("Squeeze and Unsqueeze report bad axes", () => {
  assert.throws(() => run("Squeeze", [f32([2, 1], [1, 2]), i64([0])]), {
    message: 'op "t" (Squeeze): cannot squeeze axis 0 of [2,1]: its size is 2, not 1',
  });
  assert.throws(() => infer("Unsqueeze", [t32([2]), i64([3])]), {
    message: 'op "t" (Unsqueeze): axis 3 is out of range for rank 2',
  });
  assert.throws(() => infer("Unsqueeze", [t32([2]), i64([0, -3])]), {
    message: 'op "t" (Unsqueeze): axes [0,-3] repeat an axis',
  });
});

// --- Transpose, DepthToSpace, SpaceToDepth ---------------------------------------

Deno.test("Transpose defaults to reversing the axes", () => {
  const [y] = run("Transpose", [f32([2, 3], [1, 2, 3, 4, 5, 6])]);
  assert.deepEqual(y.shape, [3, 2]);
  assert.deepEqual(values(y), [1, 4, 2, 5, 3, 6]);
  assert.deepEqual(infer("Transpose", [t32(["N", 3, 8])], { perm: attr.ints([0, 2, 1]) }), [t32(["N", 8, 3])]);
});

Deno.test("Transpose matches a naive reference for every rank-4 permutation and several dtypes", () => {
  const shape = [2, 3, 4, 5];
  const n = 120;
  const inputs: Tensor[] = [
    f32(shape, iota(n)),
    tensor("i64", shape, BigInt64Array.from(iota(n), BigInt)),
    tensor("string", shape, iota(n).map(String)),
    tensor("f16", shape, Uint16Array.from(iota(n))),
  ];
  for (const x of inputs) {
    for (const perm of permutations(4)) {
      const [y] = run("Transpose", [x], { perm: attr.ints(perm) });
      const outShape = perm.map((a) => shape[a]);
      assert.deepEqual(y.shape, outShape);
      const got = values(y);
      let k = 0;
      for (let a = 0; a < outShape[0]; a++) {
        for (let b = 0; b < outShape[1]; b++) {
          for (let c = 0; c < outShape[2]; c++) {
            for (let d = 0; d < outShape[3]; d++) {
              const idx = [0, 0, 0, 0];
              [a, b, c, d].forEach((v, i) => (idx[perm[i]] = v));
              assert.equal(got[k++], at(x.data as ArrayLike<unknown>, shape, idx), `${x.dtype} perm ${perm}`);
            }
          }
        }
      }
    }
  }
});

Deno.test("Transpose moves complex and packed 4-bit elements whole", () => {
  const c = tensor("c64", [2, 2], Float32Array.of(1, 10, 2, 20, 3, 30, 4, 40));
  assert.deepEqual(values(run("Transpose", [c])[0]), [1, 10, 3, 30, 2, 20, 4, 40]);
  // i4 [[1,2,3],[4,5,6]] packs low nibble first: bytes 0x21, 0x43, 0x65.
  const q = tensor("i4", [2, 3], Uint8Array.of(0x21, 0x43, 0x65));
  const [t] = run("Transpose", [q]);
  assert.deepEqual(values(t), [0x41, 0x52, 0x63]); // [[1,4],[2,5],[3,6]]
});

Deno.test("Transpose rejects a bad perm", () => {
  assert.throws(() => infer("Transpose", [t32([2, 3])], { perm: attr.ints([0, 0]) }), {
    message: 'op "t" (Transpose): perm [0,0] is not a permutation of 2 axes',
  });
});

Deno.test("DepthToSpace in DCR and CRD modes, and SpaceToDepth inverts DCR", () => {
  // ONNX spec example: x = arange(48).reshape(1, 8, 2, 3), blocksize 2.
  const x = f32([1, 8, 2, 3], iota(48));
  const [dcr] = run("DepthToSpace", [x], { blocksize: attr.int(2) });
  assert.deepEqual(dcr.shape, [1, 2, 4, 6]);
  assert.deepEqual(values(dcr).slice(0, 12), [0, 12, 1, 13, 2, 14, 24, 36, 25, 37, 26, 38]);
  const [crd] = run("DepthToSpace", [x], { blocksize: attr.int(2), mode: attr.string("CRD") });
  assert.deepEqual(values(crd).slice(0, 12), [0, 6, 1, 7, 2, 8, 12, 18, 13, 19, 14, 20]);
  const [back] = run("SpaceToDepth", [dcr], { blocksize: attr.int(2) });
  assert.deepEqual(back.shape, [1, 8, 2, 3]);
  assert.deepEqual(values(back), iota(48));
  assert.deepEqual(infer("DepthToSpace", [t32(["N", 8, 2, 3])], { blocksize: attr.int(2) }), [t32(["N", 2, 4, 6])]);
  assert.throws(() => infer("SpaceToDepth", [t32([1, 1, 3, 4])], { blocksize: attr.int(2) }), {
    message: 'op "t" (SpaceToDepth): height 3 is not divisible by 2',
  });
});

// --- Concat, Split ------------------------------------------------------------------

Deno.test("Concat joins along an axis, negative axes included", () => {
  const a = f32([2, 1], [1, 2]);
  const b = f32([2, 2], [3, 4, 5, 6]);
  assert.deepEqual(values(run("Concat", [a, b], { axis: attr.int(1) })[0]), [1, 3, 4, 2, 5, 6]);
  assert.deepEqual(values(run("Concat", [a, b], { axis: attr.int(-1) })[0]), [1, 3, 4, 2, 5, 6]);
  const [s] = run("Concat", [tensor("string", [1], ["x"]), tensor("string", [2], ["y", "z"])], { axis: attr.int(0) });
  assert.deepEqual(values(s), ["x", "y", "z"]);
  assert.deepEqual(infer("Concat", [t32(["N", 2]), t32(["N", 3])], { axis: attr.int(1) }), [t32(["N", 5])]);
  assert.deepEqual(infer("Concat", [t32(["N", 2]), t32([4, 2])], { axis: attr.int(0) }), [t32(["?", 2])]);
});

Deno.test("Concat copies long runs of float32 blocks in order", () => {
  const a = f32([3, 40], iota(120));
  const b = f32([3, 20], iota(60).map((v) => 1000 + v));
  const [y] = run("Concat", [a, b], { axis: attr.int(1) });
  for (let r = 0; r < 3; r++) {
    assert.deepEqual(values(y).slice(r * 60, r * 60 + 40), iota(40).map((c) => r * 40 + c));
    assert.deepEqual(values(y).slice(r * 60 + 40, r * 60 + 60), iota(20).map((c) => 1000 + r * 20 + c));
  }
});

Deno.test("Concat rejects mismatched shapes", () => {
  assert.throws(() => infer("Concat", [t32([2, 3]), t32([2, 4])], { axis: attr.int(0) }), {
    message: 'op "t" (Concat): cannot concatenate [2,3] with [2,4] along axis 0',
  });
  assert.throws(() => run("Concat", [f32([2], [1, 2]), f32([1, 1], [3])], { axis: attr.int(0) }), {
    message: 'op "t" (Concat): cannot concatenate [2] with [1,1]',
  });
  assert.throws(() => infer("Concat", [t32([2]), t32([2])], { axis: attr.int(1) }), {
    message: 'op "t" (Concat): axis 1 is out of range for rank 1',
  });
});

Deno.test("Split reads split as an attribute before opset 13 and an input from 13", () => {
  const x = f32([2, 5], iota(10));
  const old = run("Split", [x], { axis: attr.int(1), split: attr.ints([2, 3]) }, 11, 2);
  assert.deepEqual(values(old[0]), [0, 1, 5, 6]);
  assert.deepEqual(values(old[1]), [2, 3, 4, 7, 8, 9]);
  const now = run("Split", [x, i64([4, 1])], { axis: attr.int(-1) }, 13, 2);
  assert.deepEqual(values(now[1]), [4, 9]);
  assert.deepEqual(infer("Split", [t32(["N", 5]), i64([2, 3])], { axis: attr.int(1) }, 13, 2), [
    t32(["N", 2]),
    t32(["N", 3]),
  ]);
});

Deno.test("Split divides equally, with a smaller last part from opset 18", () => {
  const x = f32([6], iota(6));
  assert.deepEqual(run("Split", [x], {}, 13, 3).map((t) => values(t)), [[0, 1], [2, 3], [4, 5]]);
  const y = f32([7], iota(7));
  const parts = run("Split", [y], { num_outputs: attr.int(3) }, 18, 3);
  assert.deepEqual(parts.map((t) => t.shape[0]), [3, 3, 1]);
  assert.throws(() => run("Split", [y], {}, 13, 3), {
    message: 'op "t" (Split): axis size 7 does not split into 3 equal parts',
  });
  assert.throws(() => run("Split", [y, i64([3, 3])], {}, 13, 2), {
    message: 'op "t" (Split): split [3,3] does not add up to the axis size 7',
  });
});

// --- Slice ------------------------------------------------------------------------

Deno.test("Slice before opset 10 reads starts/ends/axes attributes", () => {
  const x = f32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]);
  const [y] = run("Slice", [x], { starts: attr.ints([0, 1]), ends: attr.ints([-1, 1000]) }, 9);
  assert.deepEqual(y.shape, [1, 3]);
  assert.deepEqual(values(y), [2, 3, 4]);
  const [z] = run("Slice", [x], { starts: attr.ints([1]), ends: attr.ints([3]), axes: attr.ints([1]) }, 1);
  // int64 attributes beyond 2^53 arrive as the nearest double.
  const [w] = run("Slice", [x], {
    starts: attr.ints([-1]),
    ends: attr.ints([9223372036854775807]),
    axes: attr.ints([1]),
  }, 9);
  assert.deepEqual(values(w), [4, 8]);
  assert.deepEqual(values(z), [2, 3, 6, 7]);
});

Deno.test("Slice from opset 10 takes inputs, steps and negative axes", () => {
  const x = f32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]);
  // ONNX spec example 1: starts [1,0], ends [2,3], steps [1,2] -> [[5,7]].
  const [y] = run("Slice", [x, i64([1, 0]), i64([2, 3]), i64([0, 1]), i64([1, 2])]);
  assert.deepEqual(values(y), [5, 7]);
  const [z] = run("Slice", [x, i64([1]), i64([3]), i64([-1]), null]);
  assert.deepEqual(values(z), [2, 3, 6, 7]);
});

Deno.test("Slice with negative steps and INT64_MAX/INT64_MIN ends", () => {
  const x = f32([5], [0, 1, 2, 3, 4]);
  assert.deepEqual(values(run("Slice", [x, MAX, MIN, i64([0]), i64([-1])])[0]), [
    4,
    3,
    2,
    1,
    0,
  ]);
  assert.deepEqual(values(run("Slice", [x, i64([-2]), i64([0]), i64([0]), i64([-2])])[0]), [3, 1]);
  assert.deepEqual(values(run("Slice", [x, i64([1]), MAX])[0]), [1, 2, 3, 4]);
  assert.deepEqual(values(run("Slice", [x, i64([10]), i64([20])])[0]), []);
  const m = f32([2, 3], [1, 2, 3, 4, 5, 6]);
  const [r] = run("Slice", [m, i64([-1, -1]), i64big([-(2n ** 63n), -(2n ** 63n)]), i64([0, 1]), i64([-1, -1])]);
  assert.deepEqual(values(r), [6, 5, 4, 3, 2, 1]);
  assert.throws(() => run("Slice", [x, i64([0]), i64([2]), i64([0]), i64([0])]), {
    message: 'op "t" (Slice): slice step cannot be 0',
  });
});

Deno.test("Slice infers static counts and keeps whole symbolic axes", () => {
  assert.deepEqual(infer("Slice", [t32(["N", 10]), i64([0, 2]), i64big([2n ** 63n - 1n, -1n]), i64([0, 1])]), [
    t32(["N", 7]),
  ]);
  assert.deepEqual(infer("Slice", [t32(["N", 10]), i64([1]), i64([3]), i64([0])]), [t32(["?", 10])]);
  assert.deepEqual(infer("Slice", [t32([10]), i64([9]), MIN, i64([0]), i64([-3])]), [t32([4])]);
});

// --- Gather family ------------------------------------------------------------------

Deno.test("Gather picks along an axis with negative indices", () => {
  const x = f32([3, 2], [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(values(run("Gather", [x, i64([-1, 0])])[0]), [5, 6, 1, 2]);
  const [y] = run("Gather", [x, i64([1, 0, 1, 1], [2, 2])], { axis: attr.int(1) });
  assert.deepEqual(y.shape, [3, 2, 2]);
  assert.deepEqual(values(y), [2, 1, 2, 2, 4, 3, 4, 4, 6, 5, 6, 6]);
  const [s] = run("Gather", [x, i64([2], [])]);
  assert.deepEqual(s.shape, [2]);
  assert.deepEqual(values(s), [5, 6]);
  assert.deepEqual(infer("Gather", [t32(["N", 8]), tensorType("i64", [3, 4])], { axis: attr.int(1) }), [
    t32(["N", 3, 4]),
  ]);
  assert.throws(() => run("Gather", [x, i64([3])]), {
    message: 'op "t" (Gather): index 3 is out of range for a dimension of size 3',
  });
});

Deno.test("GatherElements follows the index along its axis", () => {
  const x = f32([2, 2], [1, 2, 3, 4]);
  const [y] = run("GatherElements", [x, i64([0, 0, 1, 0], [2, 2])], { axis: attr.int(1) });
  assert.deepEqual(values(y), [1, 1, 4, 3]);
  const [z] = run("GatherElements", [f32([3, 3], iota(9)), i64([1, 2, 0, -1, 0, 0], [2, 3])]);
  assert.deepEqual(values(z), [3, 7, 2, 6, 1, 2]);
});

Deno.test("GatherND with batch_dims and ScatterND with reductions", () => {
  const x = tensor("i32", [2, 2], Int32Array.of(0, 1, 2, 3));
  assert.deepEqual(values(run("GatherND", [x, i64([0, 0, 1, 1], [2, 2])])[0]), [0, 3]);
  assert.deepEqual(values(run("GatherND", [x, i64([1, 0], [2, 1])])[0]), [2, 3, 0, 1]);
  const b = tensor("i32", [2, 2, 2], Int32Array.from(iota(8)));
  const [g] = run("GatherND", [b, i64([1, 0], [2, 1])], { batch_dims: attr.int(1) });
  assert.deepEqual(g.shape, [2, 2]);
  assert.deepEqual(values(g), [2, 3, 4, 5]);
  const data = f32([4], [1, 2, 3, 4]);
  assert.deepEqual(values(run("ScatterND", [data, i64([1, 3], [2, 1]), f32([2], [9, 10])])[0]), [1, 9, 3, 10]);
  const [add] = run("ScatterND", [data, i64([1, 1], [2, 1]), f32([2], [5, 5])], { reduction: attr.string("add") }, 16);
  assert.deepEqual(values(add), [1, 12, 3, 4]);
  assert.deepEqual(values(data), [1, 2, 3, 4]);
});

Deno.test("ScatterElements writes along an axis, with reductions from opset 16", () => {
  const data = f32([1, 5], [1, 2, 3, 4, 5]);
  const [y] = run("ScatterElements", [data, i64([1, -2], [1, 2]), f32([1, 2], [10, 20])], { axis: attr.int(1) });
  assert.deepEqual(values(y), [1, 10, 3, 20, 5]);
  const add = { reduction: attr.string("add") };
  const [z] = run("ScatterElements", [f32([3], [0, 0, 0]), i64([0, 0]), f32([2], [1, 2])], add, 16);
  assert.deepEqual(values(z), [3, 0, 0]);
  assert.throws(() => run("ScatterElements", [data, i64([0], [1, 1]), f32([2], [1, 2])]), {
    message: 'op "t" (ScatterElements): updates [2] must have the shape of indices [1,1]',
  });
});

// --- Expand, Tile, Pad, Range ---------------------------------------------------------

Deno.test("Expand broadcasts to the shape operand", () => {
  const [y] = run("Expand", [f32([3, 1], [1, 2, 3]), i64([2, 1, 2])]);
  assert.deepEqual(y.shape, [2, 3, 2]);
  assert.deepEqual(values(y), [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
  assert.throws(() => run("Expand", [f32([3], [1, 2, 3]), i64([2])]), {
    message: 'op "t" (Expand): cannot broadcast shapes [3] and [2]',
  });
});

Deno.test("Tile repeats along each axis", () => {
  const [y] = run("Tile", [f32([2, 2], [1, 2, 3, 4]), i64([2, 3])]);
  assert.deepEqual(y.shape, [4, 6]);
  assert.deepEqual(values(y).slice(0, 12), [1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]);
  assert.deepEqual(values(y).slice(12), [1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]);
  assert.deepEqual(infer("Tile", [t32(["N", 2]), i64([1, 3])]), [t32(["N", 6])]);
  assert.throws(() => infer("Tile", [t32([2]), i64([1, 2])]), {
    message: 'op "t" (Tile): repeats [1,2] must be 1 non-negative counts',
  });
});

Deno.test("Pad in constant, reflect and edge modes (ONNX spec examples)", () => {
  const x = f32([3, 2], [1.0, 1.2, 2.3, 3.4, 4.5, 5.7]);
  const pads = i64([0, 2, 0, 0]);
  const [c] = run("Pad", [x, pads, f32([], [0.5])], {}, 11);
  assert.deepEqual(values(c), [0.5, 0.5, 1.0, 1.2, 0.5, 0.5, 2.3, 3.4, 0.5, 0.5, 4.5, 5.7].map(Math.fround));
  const [r] = run("Pad", [x, pads], { mode: attr.string("reflect") }, 11);
  assert.deepEqual(values(r), [1.0, 1.2, 1.0, 1.2, 2.3, 3.4, 2.3, 3.4, 4.5, 5.7, 4.5, 5.7].map(Math.fround));
  const [e] = run("Pad", [x, pads], { mode: attr.string("edge") }, 11);
  assert.deepEqual(values(e), [1.0, 1.0, 1.0, 1.2, 2.3, 2.3, 2.3, 3.4, 4.5, 4.5, 4.5, 5.7].map(Math.fround));
});

Deno.test("Pad reads attributes before opset 11, axes from opset 18, and crops with negative pads", () => {
  const x = f32([2, 2], [1, 2, 3, 4]);
  const [a] = run("Pad", [x], { pads: attr.ints([1, 0, 0, 0]), value: attr.float(9) }, 2);
  assert.deepEqual(values(a), [9, 9, 1, 2, 3, 4]);
  const [b] = run("Pad", [x], { paddings: attr.ints([0, 1, 0, 0]) }, 1);
  assert.deepEqual(values(b), [0, 1, 2, 0, 3, 4]);
  const [c] = run("Pad", [x, i64([1, 1]), null, i64([-1])], {}, 18);
  assert.deepEqual(c.shape, [2, 4]);
  assert.deepEqual(values(c), [0, 1, 2, 0, 0, 3, 4, 0]);
  const [d] = run("Pad", [f32([1, 4], [1, 2, 3, 4]), i64([0, -1, 0, 1])], { mode: attr.string("reflect") }, 13);
  assert.deepEqual(values(d), [2, 3, 4, 3]);
  assert.deepEqual(infer("Pad", [t32(["N", 3, 4, 4]), i64([0, 0, 1, 1, 0, 0, 1, 1])]), [t32(["N", 3, 6, 6])]);
  assert.throws(() => infer("Pad", [t32([2, 2]), i64([1, 1])]), {
    message: 'op "t" (Pad): pads [1,1] must hold 4 values (begin and end per axis)',
  });
});

Deno.test("Range counts ceil((limit - start) / delta) elements", () => {
  const [a] = run("Range", [f32([], [1]), f32([], [2]), f32([], [0.25])]);
  assert.deepEqual(values(a), [1, 1.25, 1.5, 1.75]);
  const [b] = run("Range", [i64([10], []), i64([4], []), i64([-3], [])]);
  assert.deepEqual(values(b), [10n, 7n]);
  assert.deepEqual(infer("Range", [i64([0], []), i64([5], []), i64([2], [])]), [tensorType("i64", [3])]);
});

// --- TopK, NonZero, EyeLike, Trilu -------------------------------------------------------

Deno.test("TopK returns sorted values and indices, lower index first on ties", () => {
  const x = f32([2, 4], [1, 3, 3, 2, 0, -1, 5, 5]);
  const [v, i] = run("TopK", [x, i64([2])], {}, 11, 2);
  assert.deepEqual(values(v), [3, 3, 5, 5]);
  assert.deepEqual(values(i), [1n, 2n, 2n, 3n]);
  const [s, j] = run("TopK", [x, i64([1])], { largest: attr.int(0), axis: attr.int(0) }, 11, 2);
  assert.deepEqual(values(s), [0, -1, 3, 2]);
  assert.deepEqual(values(j), [1n, 1n, 0n, 0n]);
});

Deno.test("NonZero, EyeLike and Trilu", () => {
  const [nz] = run("NonZero", [f32([2, 2], [1, 0, 1, 1])]);
  assert.deepEqual(nz.shape, [2, 3]);
  assert.deepEqual(values(nz), [0n, 1n, 1n, 0n, 0n, 1n]);
  const [eye] = run("EyeLike", [f32([2, 3], new Float32Array(6))], { k: attr.int(1), dtype: attr.int(INT32) });
  assert.equal(eye.dtype, "i32");
  assert.deepEqual(values(eye), [0, 1, 0, 0, 0, 1]);
  const m = f32([3, 3], iota(9).map((v) => v + 1));
  assert.deepEqual(values(run("Trilu", [m])[0]), [1, 2, 3, 0, 5, 6, 0, 0, 9]);
  assert.deepEqual(values(run("Trilu", [m, i64([-1], [])], { upper: attr.int(0) })[0]), [0, 0, 0, 4, 0, 0, 7, 8, 0]);
});

// --- Resize, Upsample ------------------------------------------------------------------------

Deno.test("Upsample (opset 9) and Resize nearest repeat pixels", () => {
  const x = f32([1, 1, 2, 2], [1, 2, 3, 4]);
  const [u] = run("Upsample", [x, f32([4], [1, 1, 2, 2])], { mode: attr.string("nearest") }, 9);
  assert.deepEqual(u.shape, [1, 1, 4, 4]);
  assert.deepEqual(values(u), [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
  const [r] = run("Resize", [x, null, f32([4], [1, 1, 2, 2])], {}, 13);
  assert.deepEqual(values(r), values(u));
  const [old] = run("Upsample", [x], { scales: attr.floats([1, 1, 1, 2]) }, 7);
  assert.deepEqual(values(old), [1, 1, 2, 2, 3, 3, 4, 4]);
});

Deno.test("Resize nearest_mode decides ties at half-pixel positions", () => {
  // sizes [3] from 4: x_ori = (x + 0.5) / 0.75 - 0.5 = 0.17, 1.5, 2.83.
  const x = f32([4], [10, 20, 30, 40]);
  const sizes = i64([3]);
  assert.deepEqual(values(run("Resize", [x, null, null, sizes])[0]), [10, 20, 40]);
  const ceil = { nearest_mode: attr.string("round_prefer_ceil") };
  assert.deepEqual(values(run("Resize", [x, null, null, sizes], ceil)[0]), [10, 30, 40]);
});

Deno.test("Resize linear in half_pixel, align_corners and tf_crop_and_resize modes", () => {
  const x = f32([2], [1, 3]);
  const linear = { mode: attr.string("linear") };
  // x_ori = (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25; the ends repeat the edge.
  assert.deepEqual(values(run("Resize", [x, null, f32([1], [2])], linear)[0]), [1, 1.5, 2.5, 3]);
  const corners = { ...linear, coordinate_transformation_mode: attr.string("align_corners") };
  assert.deepEqual(values(run("Resize", [x, null, null, i64([3])], corners)[0]), [1, 2, 3]);
  const crop = {
    ...linear,
    coordinate_transformation_mode: attr.string("tf_crop_and_resize"),
    extrapolation_value: attr.float(9),
  };
  // roi [0.5, 1.5] over 3 points: x_ori = 1, 2, 3 and 3 lies outside.
  const [c] = run("Resize", [f32([3], [1, 2, 3]), f32([2], [0.5, 1.5]), null, i64([3])], crop);
  assert.deepEqual(values(c), [2, 3, 9]);
});

Deno.test("Resize infers the output shape and rejects bad operands", () => {
  const scales = f32([4], [1, 1, 2, 2]);
  assert.deepEqual(infer("Resize", [t32(["N", 3, 8, 8]), null, scales]), [t32(["N", 3, 16, 16])]);
  assert.deepEqual(infer("Resize", [t32(["N", 3, 8, 8]), null, null, i64([1, 3, 5, 5])]), [t32([1, 3, 5, 5])]);
  assert.throws(() => infer("Resize", [t32([1, 3, 8, 8]), null, f32([2], [2, 2])]), {
    message: 'op "t" (Resize): scales has 2 values for 4 axes',
  });
  assert.throws(() => run("Resize", [f32([2], [1, 2]), null, f32([1], [2])], { mode: attr.string("area") }), {
    message: 'op "t" (Resize): unknown mode "area"',
  });
});

// --- Shape-value propagation ----------------------------------------------------------------

/** x f32[N,64,7,7] -> Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])), as PyTorch exports flatten. */
function flattenChain(opset: number): { module: Module; reshape: Op } {
  const g = new Graph();
  const x = g.addInput(new Value("x", t32(["N", 64, 7, 7])));
  const zero = g.addConstant("zero", i64([0], []), tensorType("i64", []));
  const minus1 = g.addConstant("minus1", i64([-1]), tensorType("i64", [1]));
  const add = (name: string, type: string, operands: Value[], attrs: [string, Attribute][] = []): Op =>
    g.addOp(new Op({ name, type, operands, results: [new Value(name)], attributes: attrs }));
  const shape = add("shape", "Shape", [x]);
  const batch = add("batch", "Gather", [shape.result, zero], [["axis", attr.int(0)]]);
  const unsq = opset >= 13
    ? add("unsq", "Unsqueeze", [batch.result, g.addConstant("axes", i64([0]), tensorType("i64", [1]))])
    : add("unsq", "Unsqueeze", [batch.result], [["axes", attr.ints([0])]]);
  const cat = add("cat", "Concat", [unsq.result, minus1], [["axis", attr.int(0)]]);
  const reshape = add("reshape", "Reshape", [x, cat.result]);
  g.outputs.push(reshape.result);
  return { module: new Module(g, [["", opset]]), reshape };
}

Deno.test("the PyTorch Shape -> Gather -> Unsqueeze -> Concat -> Reshape chain infers [N,3136]", () => {
  for (const opset of [11, 13]) {
    const { module, reshape } = flattenChain(opset);
    inferShapes(module);
    assert.deepEqual(reshape.result.type, t32(["N", 3136]), `opset ${opset}`);
    const x = f32([2, 64, 7, 7], new Float32Array(2 * 3136));
    const { reshape: y } = interpret(module, { x });
    assert.deepEqual(y.shape, [2, 3136]);
  }
});

Deno.test("shape values flow through Slice, Cast and Identity", () => {
  const g = new Graph();
  const x = g.addInput(new Value("x", t32(["N", 3, 32, 32])));
  const add = (name: string, type: string, operands: (Value | null)[], attrs: [string, Attribute][] = []): Op =>
    g.addOp(new Op({ name, type, operands, results: [new Value(name)], attributes: attrs }));
  const c = (name: string, v: number[]): Value => g.addConstant(name, i64(v), tensorType("i64", [v.length]));
  const shape = add("shape", "Shape", [x]);
  const head = add("head", "Slice", [shape.result, c("s", [0]), c("e", [2])]);
  const cast = add("cast", "Cast", [head.result], [["to", attr.int(INT64)]]);
  const id = add("id", "Identity", [cast.result]);
  const cat = add("cat", "Concat", [id.result, c("rest", [-1])], [["axis", attr.int(0)]]);
  const r = add("r", "Reshape", [x, cat.result]);
  inferShapes(new Module(g));
  assert.deepEqual(r.result.type, t32(["N", 3, 1024]));
});

Deno.test("Expand takes a symbolic target from a shape value", () => {
  const g = new Graph();
  const x = g.addInput(new Value("x", t32(["N", 4])));
  const b = g.addInput(new Value("b", t32([1, 4])));
  const s = g.addOp(new Op({ name: "s", type: "Shape", operands: [x], results: [new Value("s")] }));
  const e = g.addOp(new Op({ name: "e", type: "Expand", operands: [b, s.result], results: [new Value("e")] }));
  inferShapes(new Module(g));
  assert.deepEqual(e.result.type, t32(["N", 4]));
});
