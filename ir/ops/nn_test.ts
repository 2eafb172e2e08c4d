import assert from "node:assert/strict";
import { attr, type Attribute } from "../attributes.ts";
import { costOf } from "../cost.ts";
import { Graph, Op, Value } from "../graph.ts";
import { interpret } from "../interpreter.ts";
import { Module } from "../module.ts";
import { inferShapes } from "../shape.ts";
import { float32Tensor, fromFloat64, type Tensor, tensor, toFloat64 } from "../tensor.ts";
import type { Dim, DType, TensorType } from "../types.ts";
import { nnOps } from "./nn.ts";
import { convolve, maxPool } from "./conv_kernels.ts";
import * as ort from "onnxruntime-node";
import { exportOnnx } from "../onnx/export.ts";
import { mulberry32 } from "../../tests/tensor_compare.ts";

interface BuildOptions {
  opset?: number;
  /** Number of results (default 1). */
  results?: number;
  /** Results that are graph outputs (default: all). */
  outputs?: number[];
}

/** A one-op module: operands are graph inputs `in0..`, results `out0..`, the op is named "n1". */
function build(
  type: string,
  operands: readonly TensorType[],
  attributes: [string, Attribute][] = [],
  options: BuildOptions = {},
): { module: Module; op: Op } {
  const g = new Graph();
  const values = operands.map((t, i) => g.addInput(new Value(`in${i}`, t)));
  const results = Array.from({ length: options.results ?? 1 }, (_, i) => new Value(`out${i}`));
  const op = g.addOp(new Op({ name: "n1", type, operands: values, results, attributes }));
  for (const i of options.outputs ?? results.map((_, i) => i)) g.outputs.push(results[i]);
  return { module: new Module(g, [["", options.opset ?? 13]]), op };
}

/** Result types inferred for one op over operand types. */
function infer(
  type: string,
  operands: readonly TensorType[],
  attributes: [string, Attribute][] = [],
  options: BuildOptions = {},
): (Dim[] | null)[] {
  const { module, op } = build(type, operands, attributes, options);
  inferShapes(module);
  return op.results.map((r) => (r.type !== null && "shape" in r.type ? [...r.type.shape!] : null));
}

/** Run one op on tensors; also checks that shape inference predicted each result's shape and dtype. */
function run(
  type: string,
  inputs: readonly Tensor[],
  attributes: [string, Attribute][] = [],
  options: BuildOptions = {},
): Tensor[] {
  const { module, op } = build(type, inputs.map((t) => ({ elem: t.dtype, shape: t.shape })), attributes, options);
  inferShapes(module);
  const out = interpret(module, Object.fromEntries(inputs.map((t, i) => [`in${i}`, t])));
  return module.graph.outputs.map((v) => {
    const t = out[v.name];
    const inferred = op.results.find((r) => r === v)!.type as TensorType;
    assert.deepEqual(t.shape, inferred.shape, `${type}: inferred shape`);
    assert.equal(t.dtype, inferred.elem, `${type}: inferred dtype`);
    return t;
  });
}

function f32(shape: number[], values?: ArrayLike<number>): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return float32Tensor(shape, values ?? Array.from({ length: n }, (_, i) => i + 1));
}

function assertClose(actual: Tensor, shape: number[], expected: readonly number[], tolerance = 1e-5): void {
  assert.deepEqual(actual.shape, shape);
  const got = [...toFloat64(actual)];
  assert.equal(got.length, expected.length);
  got.forEach((v, i) => {
    assert.ok(
      Math.abs(v - expected[i]) <= tolerance * (1 + Math.abs(expected[i])),
      `element ${i}: ${got} vs ${expected}`,
    );
  });
}

const ints = (name: string, v: number[]): [string, Attribute] => [name, attr.ints(v)];
const int = (name: string, v: number): [string, Attribute] => [name, attr.int(v)];
const float = (name: string, v: number): [string, Attribute] => [name, attr.float(v)];
const str = (name: string, v: string): [string, Attribute] => [name, attr.string(v)];
const t = (shape: Dim[], elem: DType = "f32"): TensorType => ({ elem, shape });

// ---------------------------------------------------------------------------
// Conv

Deno.test("Conv interpret() computes a 2x2 window over a 3x3 image, with bias", () => {
  const [y] = run("Conv", [f32([1, 1, 3, 3]), f32([1, 1, 2, 2], [1, 1, 1, 1]), f32([1], [0.5])]);
  assertClose(y, [1, 1, 2, 2], [12.5, 16.5, 24.5, 28.5]);
});

Deno.test("Conv interpret() honours pads and strides", () => {
  // out(oh, ow) = x[2oh-1][2ow-1] + 2 x[2oh+1][2ow+1], zero outside the 3x3 image.
  const w = f32([1, 1, 3, 3], [1, 0, 0, 0, 0, 0, 0, 0, 2]);
  const [y] = run("Conv", [f32([1, 1, 3, 3]), w], [ints("pads", [1, 1, 1, 1]), ints("strides", [2, 2])]);
  assertClose(y, [1, 1, 2, 2], [10, 0, 0, 5]);
});

Deno.test("Conv interpret() honours dilations", () => {
  // out(i, j) = x[i][j] + 2 x[i][j+2] + 3 x[i+2][j] + 4 x[i+2][j+2] with x[r][c] = 4r + c + 1.
  const [y] = run("Conv", [f32([1, 1, 4, 4]), f32([1, 1, 2, 2], [1, 2, 3, 4])], [ints("dilations", [2, 2])]);
  assertClose(y, [1, 1, 2, 2], [78, 88, 118, 128]);
});

Deno.test("Conv interpret() splits asymmetric SAME padding as auto_pad says", () => {
  // 4x4 image, 3x3 kernel of ones, stride 2: 2x2 outputs and one pad row/column, at the end (UPPER) or start (LOWER).
  const inputs = [f32([1, 1, 4, 4]), f32([1, 1, 3, 3], new Array(9).fill(1))];
  const [upper] = run("Conv", inputs, [str("auto_pad", "SAME_UPPER"), ints("strides", [2, 2])]);
  assertClose(upper, [1, 1, 2, 2], [54, 45, 72, 54]);
  const [lower] = run("Conv", inputs, [str("auto_pad", "SAME_LOWER"), ints("strides", [2, 2])]);
  assertClose(lower, [1, 1, 2, 2], [14, 30, 57, 99]);
  const [valid] = run("Conv", inputs, [str("auto_pad", "VALID"), ints("pads", [5, 5, 5, 5])]);
  assertClose(valid, [1, 1, 2, 2], [54, 63, 90, 99]);
});

Deno.test("Conv interpret() runs depthwise convolution, with a channel multiplier", () => {
  // Channel 0 is x, channel 1 is 10x; kernel [[1, 0], [0, 1]] per output channel, scaled by the channel index + 1.
  const x = f32([1, 2, 2, 2], [1, 2, 3, 4, 10, 20, 30, 40]);
  const w = f32([2, 1, 2, 2], [1, 0, 0, 1, 2, 0, 0, 2]);
  const [y] = run("Conv", [x, w, f32([2], [0, 1])], [int("group", 2), ints("pads", [0, 0, 1, 1])]);
  // Channel 0: [1+4, 2, 3, 4]; channel 1: 2 * [10+40, 20, 30, 40] + 1.
  assertClose(y, [1, 2, 2, 2], [5, 2, 3, 4, 101, 41, 61, 81]);
  // Multiplier 2: output channels 0, 1 read input channel 0; 2, 3 read channel 1.
  const w2 = f32([4, 1, 1, 1], [1, 2, 3, 4]);
  const [y2] = run("Conv", [x, w2], [int("group", 2), ints("strides", [2, 2])]);
  assertClose(y2, [1, 4, 1, 1], [1, 2, 30, 40]);
});

Deno.test("Conv interpret() keeps groups apart", () => {
  // Four input channels of constants 1..4, two groups: output 0 sums channels 0-1, output 1 sums channels 2-3 (x10).
  const x = f32([1, 4, 1, 1], [1, 2, 3, 4]);
  const w = f32([2, 2, 1, 1], [1, 1, 10, 10]);
  const [y] = run("Conv", [x, w], [int("group", 2)]);
  assertClose(y, [1, 2, 1, 1], [3, 70]);
});

Deno.test("Conv interpret() handles 1-D and 3-D inputs and batches", () => {
  const [y1] = run("Conv", [f32([2, 1, 5], [1, 2, 3, 4, 5, 5, 4, 3, 2, 1]), f32([1, 1, 2], [1, -1])], [
    ints("strides", [2]),
  ]);
  assertClose(y1, [2, 1, 2], [-1, -1, 1, 1]);
  const [y3] = run("Conv", [f32([1, 1, 2, 2, 3]), f32([2, 1, 2, 2, 2], new Array(16).fill(1)), f32([2], [0, 100])]);
  // Window sums of x = 1..12 over the 2x2x2 blocks starting at depth 0, column 0 and 1.
  assertClose(y3, [1, 2, 1, 1, 2], [48, 56, 148, 156]);
});

Deno.test("Conv interpret() computes float16 and float64 in their own types", () => {
  const x = fromFloat64("f16", [1, 1, 2, 2], [1, 2, 3, 4]);
  const w = fromFloat64("f16", [1, 1, 2, 2], [0.5, 0.5, 0.5, 0.5]);
  const [y] = run("Conv", [x, w]);
  assert.equal(y.dtype, "f16");
  assertClose(y, [1, 1, 1, 1], [5]);
  const x64 = tensor("f64", [1, 1, 1, 2], new Float64Array([0.1, 0.2]));
  const w64 = tensor("f64", [1, 1, 1, 2], new Float64Array([1, 1]));
  const [y64] = run("Conv", [x64, w64]);
  assert.equal(y64.dtype, "f64");
  assert.equal((y64.data as Float64Array)[0], 0.1 + 0.2);
});

Deno.test("Conv infer() keeps a symbolic batch and computes spatial sizes", () => {
  const attrs = [ints("pads", [1, 1, 1, 1]), ints("strides", [2, 2])];
  assert.deepEqual(infer("Conv", [t(["N", 3, 32, 31]), t([16, 3, 3, 3])], attrs), [["N", 16, 16, 16]]);
  // A symbolic spatial size gives an unknown output size.
  assert.deepEqual(infer("Conv", [t(["N", 3, "H", 32]), t([16, 3, 3, 3])]), [["N", 16, "?", 30]]);
  assert.deepEqual(
    infer("Conv", [t([1, 3, 9, 9]), t([8, 3, 3, 3])], [str("auto_pad", "SAME_UPPER"), ints("strides", [2, 2])]),
    [[1, 8, 5, 5]],
  );
});

Deno.test("Conv infer() names the op and the problem for inconsistent operands", () => {
  const bad = (operands: TensorType[], attrs: [string, Attribute][], message: RegExp) =>
    assert.throws(() => infer("Conv", operands, attrs), message);
  bad(
    [t([1, 4, 8, 8]), t([8, 3, 3, 3])],
    [],
    /op "n1" \(Conv\): input channels 4 do not match W \[8,3,3,3\] with group 1/,
  );
  bad(
    [t([1, 4, 8, 8]), t([6, 1, 3, 3])],
    [int("group", 4)],
    /output channels 6 \(W.shape\[0\]\) are not divisible by group 4/,
  );
  bad(
    [t([1, 3, 8, 8]), t([8, 3, 3, 3])],
    [ints("kernel_shape", [5, 5])],
    /kernel_shape \[5,5\] does not match W's spatial dims \[3,3\]/,
  );
  bad([t([1, 3, 8, 8]), t([8, 3, 3])], [], /W must have the rank of X \(4\), found \[8,3,3\]/);
  bad([t([3, 8]), t([8, 3])], [], /X must have rank >= 3/);
  bad([t([1, 3, 8, 8]), t([8, 3, 3, 3]), t([4])], [], /B must have shape \[8\]/);
  bad([t([1, 3, 8, 8]), t([8, 3, 3, 3])], [ints("pads", [1, 1])], /attribute "pads" must have 4 values/);
  bad([t([1, 3, 8, 8]), t([8, 3, 3, 3])], [ints("strides", [0, 1])], /strides must be positive, found \[0,1\]/);
  bad(
    [t([1, 3, 8, 8]), t([8, 3, 3, 3])],
    [str("auto_pad", "SAME")],
    /auto_pad must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, found "SAME"/,
  );
  bad(
    [t([1, 3, 2, 8]), t([8, 3, 3, 3])],
    [],
    /window of 3 \(kernel 3, dilation 1\) does not fit spatial axis 0 of size 2/,
  );
  bad([t([1, 3, 8, 8]), t([8, 3, 3, 3], "f64")], [], /W must have the element type of X \(f32\), found f64/);
});

Deno.test("Conv macs() counts kernel taps x Cin/group x Cout x output size, batch 1 when symbolic", () => {
  const { module } = build("Conv", [t(["N", 3, 32, 32]), t([16, 3, 3, 3])], [ints("pads", [1, 1, 1, 1])]);
  inferShapes(module);
  assert.equal(costOf(module).totals.macs, 3 * 3 * 3 * 16 * 32 * 32);
  const grouped = build("Conv", [t([2, 8, 10, 10]), t([8, 2, 3, 3])], [int("group", 4)]);
  inferShapes(grouped.module);
  const def = nnOps.find((d) => d.type === "Conv")!;
  const op = grouped.op;
  const types = op.operands.map((v) => v!.type as TensorType);
  assert.equal(def.macs!(op, types, [op.result.type as TensorType]), 2 * 3 * 3 * 2 * 8 * 8 * 8);
});

// ---------------------------------------------------------------------------
// ConvTranspose

Deno.test("ConvTranspose interpret() scatters each input through the kernel", () => {
  const [y] = run("ConvTranspose", [f32([1, 1, 2, 2]), f32([1, 1, 2, 2], [1, 1, 1, 1])]);
  assertClose(y, [1, 1, 3, 3], [1, 3, 2, 4, 10, 6, 3, 7, 4]);
  // Stride 2 places non-overlapping copies; pads crop the result; bias is added everywhere.
  const [s] = run("ConvTranspose", [f32([1, 1, 1, 2], [1, 10]), f32([1, 1, 1, 2], [1, 2]), f32([1], [0.5])], [
    ints("strides", [1, 2]),
    ints("pads", [0, 1, 0, 0]),
  ]);
  assertClose(s, [1, 1, 1, 3], [2.5, 10.5, 20.5]);
});

Deno.test("ConvTranspose interpret() handles groups, dilations and output_padding", () => {
  // Two groups of one channel; W per group [1, 1, 2] with dilation 2: y[o] gets x[i] w[k] at o = i + 2k.
  const x = f32([1, 2, 2], [1, 2, 3, 4]);
  const w = f32([2, 1, 2], [1, 10, 1, 100]);
  const [y] = run("ConvTranspose", [x, w], [int("group", 2), ints("dilations", [2]), ints("output_padding", [1])]);
  assertClose(y, [1, 2, 5], [1, 2, 10, 20, 0, 3, 4, 300, 400, 0]);
});

Deno.test("ConvTranspose infer() follows output_shape and SAME padding", () => {
  const x = t(["N", 4, 3, 3]);
  const w = t([4, 2, 3, 3]);
  assert.deepEqual(infer("ConvTranspose", [x, w], [ints("strides", [2, 2])]), [["N", 2, 7, 7]]);
  assert.deepEqual(
    infer("ConvTranspose", [x, w], [
      ints("strides", [2, 2]),
      ints("output_padding", [1, 0]),
      ints("pads", [1, 1, 1, 1]),
    ]),
    [["N", 2, 6, 5]],
  );
  assert.deepEqual(infer("ConvTranspose", [x, w], [ints("strides", [2, 2]), str("auto_pad", "SAME_UPPER")]), [[
    "N",
    2,
    6,
    6,
  ]]);
  assert.deepEqual(infer("ConvTranspose", [x, w], [ints("output_shape", [8, 6]), ints("strides", [2, 2])]), [[
    "N",
    2,
    8,
    6,
  ]]);
  assert.deepEqual(infer("ConvTranspose", [x, w], [int("group", 2)]), [["N", 4, 5, 5]]);
  assert.throws(
    () => infer("ConvTranspose", [t([1, 3, 3, 3]), w]),
    /op "n1" \(ConvTranspose\): input channels 3 do not match W \[4,2,3,3\] \(expected W.shape\[0\] = 3\)/,
  );
});

Deno.test("ConvTranspose interpret() puts the odd SAME_UPPER pad at the end", () => {
  // 3 inputs, kernel 3, stride 2: the full result has 7 positions, SAME wants 6, so one is cropped at the end.
  const [y] = run("ConvTranspose", [f32([1, 1, 3], [1, 2, 3]), f32([1, 1, 3], [1, 1, 1])], [
    ints("strides", [2]),
    str("auto_pad", "SAME_UPPER"),
  ]);
  assertClose(y, [1, 1, 6], [1, 1, 3, 2, 5, 3]);
  const [lower] = run("ConvTranspose", [f32([1, 1, 3], [1, 2, 3]), f32([1, 1, 3], [1, 1, 1])], [
    ints("strides", [2]),
    str("auto_pad", "SAME_LOWER"),
  ]);
  assertClose(lower, [1, 1, 6], [1, 3, 2, 5, 3, 3]);
});

Deno.test("ConvTranspose macs() counts every input element times its group's weights", () => {
  const { module } = build("ConvTranspose", [t(["N", 4, 3, 3]), t([4, 2, 3, 3])], [ints("strides", [2, 2])]);
  inferShapes(module);
  assert.equal(costOf(module).totals.macs, 4 * 3 * 3 * 2 * 3 * 3);
});

// ---------------------------------------------------------------------------
// Pools

Deno.test("MaxPool interpret() takes window maxima with strides, pads and dilations", () => {
  const [y] = run("MaxPool", [f32([1, 1, 4, 4])], [ints("kernel_shape", [2, 2]), ints("strides", [2, 2])]);
  assertClose(y, [1, 1, 2, 2], [6, 8, 14, 16]);
  const [padded] = run("MaxPool", [f32([1, 1, 2, 2], [-1, -2, -3, -4])], [
    ints("kernel_shape", [2, 2]),
    ints("pads", [1, 1, 1, 1]),
  ]);
  // Padding never wins, even against negative values.
  assertClose(padded, [1, 1, 3, 3], [-1, -1, -2, -1, -1, -2, -3, -3, -4]);
  const [dilated] = run("MaxPool", [f32([1, 1, 4, 4])], [ints("kernel_shape", [2, 2]), ints("dilations", [2, 2])]);
  assertClose(dilated, [1, 1, 2, 2], [11, 12, 15, 16]);
});

Deno.test("MaxPool interpret() adds partial windows with ceil_mode, but none starting in the end padding", () => {
  const x = f32([1, 1, 3, 3]);
  const [floor] = run("MaxPool", [x], [ints("kernel_shape", [2, 2]), ints("strides", [2, 2])]);
  assertClose(floor, [1, 1, 1, 1], [5]);
  const [ceil] = run("MaxPool", [x], [ints("kernel_shape", [2, 2]), ints("strides", [2, 2]), int("ceil_mode", 1)]);
  assertClose(ceil, [1, 1, 2, 2], [5, 6, 8, 9]);
  // Input 4 padded to 5 at the end: ceil((5 - 2) / 2) + 1 = 3 windows, but the third would start in the padding.
  const attrs = [ints("kernel_shape", [2]), ints("strides", [2]), ints("pads", [0, 1]), int("ceil_mode", 1)];
  assert.deepEqual(infer("MaxPool", [t(["N", 3, 4])], attrs, { results: 2 }), [["N", 3, 2], ["N", 3, 2]]);
});

Deno.test("MaxPool interpret() returns flat Indices in row- or column-major order", () => {
  // Two planes of 2x3; the maximum of plane 1 is at (1, 2).
  const x = f32([1, 2, 2, 3], [1, 9, 2, 3, 4, 5, 0, 0, 0, 0, 0, 7]);
  const attrs = [ints("kernel_shape", [2, 3])];
  const [y, indices] = run("MaxPool", [x], attrs, { results: 2 });
  assertClose(y, [1, 2, 1, 1], [9, 7]);
  assert.deepEqual([...(indices.data as BigInt64Array)], [1n, 11n]);
  const [, columnMajor] = run("MaxPool", [x], [...attrs, int("storage_order", 1)], { results: 2 });
  // Column-major within a plane: (h, w) -> w * H + h, so (0, 1) -> 2 and (1, 2) -> 5, plus the plane offset 6.
  assert.deepEqual([...(columnMajor.data as BigInt64Array)], [2n, 11n]);
});

Deno.test("MaxPool interpret() pools uint8 and 1-D/3-D inputs", () => {
  const [y] = run("MaxPool", [tensor("u8", [1, 1, 4], new Uint8Array([3, 250, 7, 1]))], [
    ints("kernel_shape", [2]),
    ints("strides", [2]),
  ]);
  assert.equal(y.dtype, "u8");
  assert.deepEqual([...(y.data as Uint8Array)], [250, 7]);
  const [y3] = run("MaxPool", [f32([1, 1, 2, 2, 2])], [ints("kernel_shape", [1, 2, 2])]);
  assertClose(y3, [1, 1, 2, 1, 1], [4, 8]);
});

Deno.test("MaxPool infer() computes SAME_UPPER sizes and rejects bad attributes", () => {
  const same = [ints("kernel_shape", [3, 3]), ints("strides", [2, 2]), str("auto_pad", "SAME_UPPER")];
  assert.deepEqual(infer("MaxPool", [t(["N", 8, 5, 5])], same), [["N", 8, 3, 3]]);
  assert.throws(
    () => infer("MaxPool", [t([1, 1, 4, 4])]),
    /op "n1" \(MaxPool\): missing required attribute "kernel_shape"/,
  );
  assert.throws(
    () => infer("MaxPool", [t([1, 1, 4, 4])], [ints("kernel_shape", [2])]),
    /op "n1" \(MaxPool\): kernel_shape must have 2 values \(one per spatial axis of X\), found 1/,
  );
  assert.throws(
    () => infer("MaxPool", [t([1, 1, 4, 4])], [ints("kernel_shape", [2, 2]), ints("pads", [0, 0, -1, 0])]),
    /pads must not be negative, found \[0,0,-1,0\]/,
  );
});

Deno.test("AveragePool interpret() divides by real taps, or by padded taps with count_include_pad", () => {
  const x = f32([1, 1, 2, 2]);
  const attrs = [ints("kernel_shape", [2, 2]), ints("pads", [1, 1, 1, 1])];
  const [exclude] = run("AveragePool", [x], attrs);
  assertClose(exclude, [1, 1, 3, 3], [1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4]);
  const [include] = run("AveragePool", [x], [...attrs, int("count_include_pad", 1)]);
  assertClose(include, [1, 1, 3, 3], [0.25, 0.75, 0.5, 1, 2.5, 1.5, 0.75, 1.75, 1]);
});

Deno.test("AveragePool interpret() averages partial ceil_mode windows over their real taps", () => {
  const attrs = [ints("kernel_shape", [2, 2]), ints("strides", [2, 2]), int("ceil_mode", 1)];
  const [y] = run("AveragePool", [f32([1, 1, 3, 3])], attrs);
  assertClose(y, [1, 1, 2, 2], [3, 4.5, 7.5, 9]);
  // The overhang past the (zero) end padding does not count even with count_include_pad (onnxruntime's rule).
  const [included] = run("AveragePool", [f32([1, 1, 3, 3])], [...attrs, int("count_include_pad", 1)]);
  assertClose(included, [1, 1, 2, 2], [3, 4.5, 7.5, 9]);
});

Deno.test("AveragePool interpret() pools 1-D and 3-D inputs", () => {
  const [y1] = run("AveragePool", [f32([1, 2, 3], [1, 2, 3, 4, 5, 6])], [ints("kernel_shape", [2])]);
  assertClose(y1, [1, 2, 2], [1.5, 2.5, 4.5, 5.5]);
  const [y3] = run("AveragePool", [f32([1, 1, 2, 2, 2])], [ints("kernel_shape", [2, 2, 2])]);
  assertClose(y3, [1, 1, 1, 1, 1], [4.5]);
});

Deno.test("GlobalAveragePool (four partial sums) is within float64 rounding of the sequential mean", () => {
  const rnd = mulberry32(13);
  for (const [h, w] of [[1, 1], [1, 3], [2, 2], [3, 5], [7, 7], [13, 11]]) {
    const values = Array.from({ length: 3 * h * w }, () => rnd() * 2 - 1);
    const [y] = run("GlobalAveragePool", [fromFloat64("f64", [1, 3, h, w], values)]);
    for (let c = 0; c < 3; c++) {
      const plane = values.slice(c * h * w, (c + 1) * h * w);
      const [sum, magnitude] = plane.reduce(([s, m], v) => [s + v, m + Math.abs(v)], [0, 0]);
      const got = y.data[c] as number;
      assert.ok(Math.abs(got - sum / (h * w)) <= 1e-15 * magnitude, `${h}x${w} channel ${c}: ${got}`);
    }
  }
});

Deno.test("GlobalAveragePool and GlobalMaxPool interpret() reduce every spatial axis", () => {
  const x = f32([1, 2, 2, 2], [1, 2, 3, 4, -1, -2, -3, -8]);
  assertClose(run("GlobalAveragePool", [x])[0], [1, 2, 1, 1], [2.5, -3.5]);
  assertClose(run("GlobalMaxPool", [x])[0], [1, 2, 1, 1], [4, -1]);
  assert.deepEqual(infer("GlobalAveragePool", [t(["N", 64, 7, 7, 7])]), [["N", 64, 1, 1, 1]]);
  assert.throws(() => infer("GlobalMaxPool", [t([2, 3])]), /op "n1" \(GlobalMaxPool\): X must have rank >= 3/);
});

// ---------------------------------------------------------------------------
// Normalization

Deno.test("BatchNormalization interpret() normalizes per channel with running statistics", () => {
  const inputs = [f32([1, 2, 1, 2]), f32([2], [1, 2]), f32([2], [0, 1]), f32([2], [1, 2]), f32([2], [4, 1])];
  const [y] = run("BatchNormalization", inputs, [float("epsilon", 0)], { opset: 15 });
  // Channel 0: (x - 1) / 2; channel 1: (x - 2) * 2 + 1.
  assertClose(y, [1, 2, 1, 2], [0, 0.5, 3, 5]);
  const [eps] = run("BatchNormalization", inputs, [float("epsilon", 5)], { opset: 9 });
  assertClose(eps, [1, 2, 1, 2], [0, 1 / 3, 1 / Math.sqrt(6) * 2 + 1, 2 / Math.sqrt(6) * 2 + 1]);
});

Deno.test("BatchNormalization interpret() supports per-activation parameters of opset 7 with spatial = 0", () => {
  // Parameters of shape [C, W] = [2, 2]: each activation has its own scale and mean.
  const param = (values: number[]) => f32([2, 2], values);
  const x = f32([1, 2, 2], [2, 4, 6, 8]);
  const inputs = [x, param([1, 2, 3, 4]), param([0, 0, 0, 0]), param([1, 2, 3, 4]), param([1, 1, 1, 1])];
  const [y] = run("BatchNormalization", inputs, [float("epsilon", 0), int("spatial", 0)], { opset: 7 });
  assertClose(y, [1, 2, 2], [1, 4, 9, 16]);
});

Deno.test("BatchNormalization refuses training mode and training-only outputs", () => {
  const inputs = [f32([1, 2, 1, 2]), f32([2]), f32([2]), f32([2]), f32([2])];
  assert.throws(
    () => run("BatchNormalization", inputs, [int("training_mode", 1)], { opset: 15, results: 3 }),
    /op "n1" \(BatchNormalization\): training_mode = 1 is not supported: the interpreter runs BatchNormalization in/,
  );
  assert.throws(
    () => run("BatchNormalization", inputs, [], { opset: 9, results: 3 }),
    /op "n1" \(BatchNormalization\): output mean is only produced in training mode/,
  );
  // Declared but unused extra outputs are fine.
  const [y] = run("BatchNormalization", inputs, [], { opset: 9, results: 3, outputs: [0] });
  assert.deepEqual(y.shape, [1, 2, 1, 2]);
});

Deno.test("BatchNormalization infer() checks parameter shapes", () => {
  assert.deepEqual(infer("BatchNormalization", [t(["N", 3, 8, 8]), t([3]), t([3]), t([3]), t([3])]), [["N", 3, 8, 8]]);
  assert.throws(
    () => infer("BatchNormalization", [t(["N", 3, 8, 8]), t([4]), t([3]), t([3]), t([3])]),
    /op "n1" \(BatchNormalization\): scale must have shape \[3\] \(one value per channel\), found \[4\]/,
  );
});

Deno.test("InstanceNormalization interpret() normalizes each sample and channel over its spatial axes", () => {
  const x = f32([1, 2, 1, 4], [1, 2, 3, 4, 5, 5, 5, 5]);
  const [y] = run("InstanceNormalization", [x, f32([2], [2, 1]), f32([2], [1, 7])], [float("epsilon", 0)]);
  const s = 1 / Math.sqrt(1.25);
  // A constant channel has variance 0: with epsilon 0 it divides 0 by 0.
  const expected = [-1.5 * s * 2 + 1, -0.5 * s * 2 + 1, 0.5 * s * 2 + 1, 1.5 * s * 2 + 1];
  assertClose({ ...y, shape: [4], data: (y.data as Float32Array).slice(0, 4) }, [4], expected);
  const [eps] = run("InstanceNormalization", [x, f32([2], [2, 1]), f32([2], [1, 7])]);
  assertClose({ ...eps, shape: [4], data: (eps.data as Float32Array).slice(4) }, [4], [7, 7, 7, 7]);
  assert.throws(
    () => infer("InstanceNormalization", [t([1, 2, 4]), t([3]), t([2])]),
    /op "n1" \(InstanceNormalization\): scale must have shape \[2\]/,
  );
});

Deno.test("LRN interpret() sums squares over the asymmetric channel window", () => {
  const x = f32([1, 3, 1, 1], [1, 2, 3]);
  // size 3: channels c-1..c+1; alpha / size = 1, beta = 1, bias = 1.
  const [y] = run("LRN", [x], [int("size", 3), float("alpha", 3), float("beta", 1)]);
  assertClose(y, [1, 3, 1, 1], [1 / 6, 2 / 15, 3 / 14]);
  // size 2: channels c..c+1 (floor((size-1)/2) = 0 before, ceil = 1 after).
  const [y2] = run("LRN", [x], [int("size", 2), float("alpha", 2), float("beta", 1)]);
  assertClose(y2, [1, 3, 1, 1], [1 / 6, 2 / 14, 3 / 10]);
  assert.throws(() => infer("LRN", [t([1, 3, 4, 4])]), /op "n1" \(LRN\): missing required attribute "size"/);
});

Deno.test("normalization and pooling ops count no MACs", () => {
  const x = t([1, 3, 8, 8]);
  for (
    const [type, attrs, operands] of [
      ["BatchNormalization", [], [x, t([3]), t([3]), t([3]), t([3])]],
      ["MaxPool", [ints("kernel_shape", [2, 2])], [x]],
      ["AveragePool", [ints("kernel_shape", [2, 2])], [x]],
      ["GlobalAveragePool", [], [x]],
      ["LRN", [int("size", 3)], [x]],
    ] as [string, [string, Attribute][], TensorType[]][]
  ) {
    const { module } = build(type, operands, attrs);
    inferShapes(module);
    assert.equal(costOf(module).totals.macs, 0, type);
  }
});

// ---------------------------------------------------------------------------
// Gemm and MatMul

Deno.test("Gemm interpret() multiplies with transposes, alpha, beta and a broadcast C", () => {
  const a = f32([2, 3]);
  const b = f32([3, 2], [1, 0, 0, 1, 1, 1]);
  assertClose(run("Gemm", [a, b])[0], [2, 2], [4, 5, 10, 11]);
  assertClose(run("Gemm", [a, b, f32([2], [10, 20])])[0], [2, 2], [14, 25, 20, 31]);
  assertClose(run("Gemm", [a, b, f32([2, 1], [10, 20])])[0], [2, 2], [14, 15, 30, 31]);
  assertClose(run("Gemm", [a, b, f32([], [1])], [float("alpha", 2), float("beta", 3)])[0], [2, 2], [11, 13, 23, 25]);
  // op(A) = A^T of a 3x2, op(B) = B^T of a 2x3: the same product.
  const at = f32([3, 2], [1, 4, 2, 5, 3, 6]);
  const bt = f32([2, 3], [1, 0, 1, 0, 1, 1]);
  assertClose(run("Gemm", [at, bt], [int("transA", 1), int("transB", 1)])[0], [2, 2], [4, 5, 10, 11]);
  // beta = 0 ignores C entirely.
  assertClose(run("Gemm", [a, b, f32([2], [NaN, NaN])], [float("beta", 0)])[0], [2, 2], [4, 5, 10, 11]);
});

Deno.test("Gemm infer() checks inner and C dimensions", () => {
  assert.deepEqual(infer("Gemm", [t(["N", 576]), t([128, 576]), t([128])], [int("transB", 1)]), [["N", 128]]);
  assert.throws(
    () => infer("Gemm", [t(["N", 576]), t([128, 576])]),
    /op "n1" \(Gemm\): inner dimensions differ: op\(A\) is \[N,576\] and op\(B\) is \[128,576\] \(transA=0, transB=0\)/,
  );
  assert.throws(
    () => infer("Gemm", [t([2, 3]), t([3, 4]), t([3])]),
    /op "n1" \(Gemm\): C of shape \[3\] does not broadcast to \[2,4\]/,
  );
  assert.throws(
    () => infer("Gemm", [t([2, 3, 1]), t([3, 4])]),
    /op "n1" \(Gemm\): A must be a matrix \(rank 2\), found \[2,3,1\]/,
  );
});

Deno.test("Gemm macs() is M*K*N with a symbolic M counted as 1", () => {
  const { module } = build("Gemm", [t(["N", 576]), t([128, 576]), t([128])], [int("transB", 1)]);
  inferShapes(module);
  assert.equal(costOf(module).totals.macs, 576 * 128);
});

Deno.test("MatMul interpret() follows numpy.matmul for 1-D operands and batch broadcasting", () => {
  const dot = run("MatMul", [f32([3]), f32([3], [1, 1, 1])])[0];
  assertClose(dot, [], [6]);
  assertClose(run("MatMul", [f32([2]), f32([2, 3])])[0], [3], [9, 12, 15]);
  assertClose(run("MatMul", [f32([2, 2]), f32([2], [1, -1])])[0], [2], [-1, -1]);
  // [2,1,1,2] x [3,2,1] -> [2,3,1,1]: batch (2,1) broadcasts against (3).
  const y = run("MatMul", [f32([2, 1, 1, 2]), f32([3, 2, 1], [1, 0, 0, 1, 1, 1])])[0];
  assertClose(y, [2, 3, 1, 1], [1, 2, 3, 3, 4, 7]);
  // A batched A with a shared 2-D B folds into one GEMM.
  assertClose(run("MatMul", [f32([2, 2, 2]), f32([2, 1], [1, 1])])[0], [2, 2, 1], [3, 7, 11, 15]);
});

Deno.test("MatMul infer() broadcasts symbolic batches and checks the inner dimension", () => {
  assert.deepEqual(infer("MatMul", [t(["N", 4, 3]), t([3, 5])]), [["N", 4, 5]]);
  assert.deepEqual(infer("MatMul", [t([3]), t(["B", 3, 5])]), [["B", 5]]);
  assert.throws(
    () => infer("MatMul", [t([2, 4, 3]), t([4, 5])]),
    /op "n1" \(MatMul\): inner dimensions differ: A is \[2,4,3\] and B is \[4,5\]/,
  );
  assert.throws(() => infer("MatMul", [t([2, 4, 3]), t([3, 3, 5])]), /op "n1" \(MatMul\): cannot broadcast/);
});

Deno.test("MatMul macs() multiplies the batch into M*K*N", () => {
  const { module } = build("MatMul", [t([2, 3, 4, 5]), t([5, 6])]);
  inferShapes(module);
  assert.equal(costOf(module).totals.macs, 2 * 3 * 4 * 5 * 6);
});

Deno.test("Gemm and MatMul interpret() run integer inputs exactly", () => {
  const a = tensor("i64", [1, 2], new BigInt64Array([3n, 4n]));
  const b = tensor("i64", [2, 1], new BigInt64Array([5n, 6n]));
  const [y] = run("MatMul", [a, b]);
  assert.equal(y.dtype, "i64");
  assert.deepEqual([...(y.data as BigInt64Array)], [39n]);
});

// ---------------------------------------------------------------------------
// Against onnxruntime: seeded random configurations

/** One op to run on both sides. */
interface Case {
  type: string;
  inputs: Tensor[];
  attrs: [string, Attribute][];
  results: number;
}

/**
 * A random Conv, ConvTranspose, MaxPool, AveragePool, Gemm or MatMul with its
 * inputs. Explicit pads only: for SAME padding with dilations, or a stride
 * larger than the window, onnxruntime departs from the ONNX spec.
 */
function randomCase(rnd: () => number): Case {
  const between = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)];
  const tensorOf = (shape: number[]) =>
    f32(shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rnd() * 2 - 1));
  const rank = pick([1, 2, 2, 3]);
  const kernel = Array.from({ length: rank }, () => between(1, 3));
  const dilations = kernel.map(() => pick([1, 1, 2]));
  const spatial = kernel.map((k, i) => (k - 1) * dilations[i] + between(1, rank === 3 ? 3 : 8));
  const strides = kernel.map(() => between(1, 3));
  const pads = [...kernel, ...kernel].map((k) => between(0, k - 1));
  const window: [string, Attribute][] = [ints("kernel_shape", kernel), ints("strides", strides), ints("pads", pads)];
  const batch = between(1, 2);
  switch (pick(["Conv", "Conv", "ConvTranspose", "MaxPool", "AveragePool", "Gemm", "MatMul"])) {
    case "Conv": {
      const group = pick([1, 1, 2, 3]);
      const depthwise = rnd() < 0.3;
      const cin = depthwise ? group : group * between(1, 3);
      const cout = group * between(1, 3);
      const inputs = [tensorOf([batch, cin, ...spatial]), tensorOf([cout, cin / group, ...kernel])];
      if (rnd() < 0.5) inputs.push(tensorOf([cout]));
      return {
        type: "Conv",
        inputs,
        attrs: [...window, ints("dilations", dilations), int("group", group)],
        results: 1,
      };
    }
    case "ConvTranspose": {
      const group = pick([1, 2]);
      const cin = group * between(1, 2);
      const coutG = between(1, 2);
      const outputPadding = strides.map((s, i) => between(0, Math.min(s, dilations[i]) - 1));
      const inputs = [tensorOf([batch, cin, ...spatial]), tensorOf([cin, coutG, ...kernel])];
      if (rnd() < 0.5) inputs.push(tensorOf([coutG * group]));
      const attrs = [
        ...window,
        ints("dilations", dilations),
        int("group", group),
        ints("output_padding", outputPadding),
      ];
      return { type: "ConvTranspose", inputs, attrs, results: 1 };
    }
    case "MaxPool": {
      const attrs = [
        ...window,
        ints("dilations", dilations),
        int("ceil_mode", between(0, 1)),
        int("storage_order", between(0, 1)),
      ];
      return { type: "MaxPool", inputs: [tensorOf([batch, 2, ...spatial])], attrs, results: between(1, 2) };
    }
    case "AveragePool": {
      const attrs = [...window, int("ceil_mode", between(0, 1)), int("count_include_pad", between(0, 1))];
      return { type: "AveragePool", inputs: [tensorOf([batch, 2, ...spatial])], attrs, results: 1 };
    }
    case "Gemm": {
      const [m, k, n] = [between(1, 9), between(1, 9), between(1, 9)];
      const [transA, transB] = [between(0, 1), between(0, 1)];
      const inputs = [tensorOf(transA ? [k, m] : [m, k]), tensorOf(transB ? [n, k] : [k, n])];
      const c = pick([null, [n], [m, n], [1], [m, 1], []]);
      if (c !== null) inputs.push(tensorOf(c));
      const attrs = [
        int("transA", transA),
        int("transB", transB),
        float("alpha", pick([1, 0.5])),
        float("beta", pick([1, 2])),
      ];
      return { type: "Gemm", inputs, attrs, results: 1 };
    }
    default: {
      const [a, b] = pick([[[3], [3]], [[3], [3, 4]], [[2, 5, 3], [3, 4]], [[5, 3], [2, 3, 4]], [[2, 1, 2, 3], [
        3,
        3,
        4,
      ]], [[4], [2, 4, 3]]]);
      return { type: "MatMul", inputs: [tensorOf(a), tensorOf(b)], attrs: [], results: 1 };
    }
  }
}

/** Depthwise convolutions: the direct kernel's 3x3, 5x5 and general paths and their padding. */
function depthwiseCases(rnd: () => number): Case[] {
  const tensorOf = (shape: number[]) =>
    f32(shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rnd() * 2 - 1));
  return [
    { x: [2, 4, 9, 11], m: 1, attrs: [ints("pads", [1, 1, 1, 1])] },
    { x: [1, 4, 9, 11], m: 1, attrs: [ints("pads", [0, 1, 1, 0]), ints("strides", [2, 2])] },
    { x: [1, 3, 10, 10], m: 2, attrs: [ints("pads", [2, 2, 2, 2]), ints("dilations", [2, 2])] },
    { x: [1, 2, 2, 2], m: 1, attrs: [ints("pads", [1, 1, 1, 1])] },
    { x: [1, 2, 7, 3], m: 3, attrs: [ints("strides", [1, 2])] },
    { x: [1, 3, 9, 8], m: 1, k: [5, 5], attrs: [ints("pads", [2, 2, 2, 2])] },
    { x: [2, 2, 11, 9], m: 2, k: [5, 5], attrs: [ints("pads", [1, 2, 3, 0]), ints("strides", [2, 2])] },
    { x: [1, 3, 6, 12], m: 1, k: [5, 5], attrs: [ints("pads", [4, 4, 4, 4]), ints("dilations", [2, 1])] },
    { x: [1, 2, 8, 8], m: 1, k: [2, 4], attrs: [ints("pads", [1, 0, 0, 3]), ints("strides", [3, 1])] },
    { x: [1, 4, 5, 7], m: 1, k: [7, 7], attrs: [ints("pads", [3, 3, 3, 3])] },
  ].map(({ x, m, k, attrs }) => ({
    type: "Conv",
    inputs: [tensorOf(x), tensorOf([x[1] * m, 1, ...(k ?? [3, 3])]), tensorOf([x[1] * m])],
    attrs: [...attrs, int("group", x[1])],
    results: 1,
  }));
}

Deno.test("nn ops interpret() agree with onnxruntime on depthwise and 100 random configurations", async () => {
  const rnd = mulberry32(20261122);
  const cases = [...depthwiseCases(rnd), ...Array.from({ length: 100 }, () => randomCase(rnd))];
  for (const [i, c] of cases.entries()) {
    // Opset 12: MaxPool with dilations and storage_order, AveragePool with ceil_mode.
    const ours = run(c.type, c.inputs, c.attrs, { opset: 12, results: c.results });
    const { module } = build(c.type, c.inputs.map((x) => ({ elem: x.dtype, shape: x.shape })), c.attrs, {
      opset: 12,
      results: c.results,
    });
    const session = await ort.InferenceSession.create(exportOnnx(module), { logSeverityLevel: 3 });
    const feeds = Object.fromEntries(
      c.inputs.map((x, k) => [`in${k}`, new ort.Tensor("float32", x.data as Float32Array, x.shape as number[])]),
    );
    const theirs = await session.run(feeds);
    const shapes = c.inputs.map((x) => `[${x.shape}]`).join(" ");
    const what = `case ${i}: ${c.type} ${shapes} ${JSON.stringify(c.attrs.map(([k, a]) => [k, a.value]))}`;
    ours.forEach((y, r) => {
      const ref = theirs[`out${r}`];
      assert.deepEqual(y.shape, ref.dims, `${what}: shape of output ${r}`);
      const expected = Array.from(ref.data as ArrayLike<number | bigint>, Number);
      assertClose(y, [...ref.dims], expected, 1e-4);
    });
  }
});

Deno.test("Gemm of one row and Conv to one output position match a float64 reference", () => {
  const rnd = mulberry32(11);
  const f64 = (shape: number[]) =>
    fromFloat64("f64", shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rnd() * 2 - 1));
  const close = (got: Tensor, want: number[], what: string) =>
    want.forEach((v, i) => assert.ok(Math.abs((got.data[i] as number) - v) <= 1e-12, `${what}[${i}]`));
  // Gemm: A [1, 300] x B^T with B [7, 300], C [7], alpha 0.5, beta 2.
  const [a, b, c] = [f64([1, 300]), f64([7, 300]), f64([7])];
  const [y] = run("Gemm", [a, b, c], [int("transB", 1), float("alpha", 0.5), float("beta", 2)]);
  const want = Array.from({ length: 7 }, (_, j) => {
    let s = 0;
    for (let i = 0; i < 300; i++) s += (a.data[i] as number) * (b.data[j * 300 + i] as number);
    return 0.5 * s + 2 * (c.data[j] as number);
  });
  close(y, want, "Gemm");
  // Conv: x [2, 6, 3, 3], w [4, 3, 3, 3], group 2, no padding: one output position per image.
  const [x, w, bias] = [f64([2, 6, 3, 3]), f64([4, 3, 3, 3]), f64([4])];
  const [z] = run("Conv", [x, w, bias], [int("group", 2)]);
  assert.deepEqual(z.shape, [2, 4, 1, 1]);
  const expected: number[] = [];
  for (let n = 0; n < 2; n++) {
    for (let oc = 0; oc < 4; oc++) {
      let s = bias.data[oc] as number;
      const g = Math.floor(oc / 2);
      for (let i = 0; i < 27; i++) s += (w.data[oc * 27 + i] as number) * (x.data[(n * 6 + g * 3) * 9 + i] as number);
      expected.push(s);
    }
  }
  close(z, expected, "Conv");
  // Pointwise on a 1x1 map (squeeze-excite): x [1, 8, 1, 1], w [5, 8, 1, 1], no bias.
  const [p, q] = [f64([1, 8, 1, 1]), f64([5, 8, 1, 1])];
  const [r] = run("Conv", [p, q]);
  const pointwise = Array.from({ length: 5 }, (_, oc) => {
    let s = 0;
    for (let i = 0; i < 8; i++) s += (q.data[oc * 8 + i] as number) * (p.data[i] as number);
    return s;
  });
  close(r, pointwise, "pointwise Conv");
});

Deno.test("float32 Gemm of one row and Conv to one output position are within float32 rounding of float64", () => {
  const rnd = mulberry32(12);
  const f32 = (shape: number[]) =>
    fromFloat64("f32", shape, Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rnd() * 2 - 1));
  /** Each result within 1e-6 of the sum of its terms' magnitudes (float32 sums of up to ~1000 terms). */
  const close = (got: Tensor, want: number[], scale: number[], what: string) =>
    want.forEach((v, i) =>
      assert.ok(Math.abs((got.data[i] as number) - v) <= 1e-6 * scale[i], `${what}[${i}]: ${got.data[i]} vs ${v}`)
    );
  // Gemm: A [1, 1001] x B^T with B [9, 1001], C [9], alpha 0.5, beta 2.
  const [a, b, c] = [f32([1, 1001]), f32([9, 1001]), f32([9])];
  const [y] = run("Gemm", [a, b, c], [int("transB", 1), float("alpha", 0.5), float("beta", 2)]);
  const sum = (j: number, abs: boolean) => {
    let s = 0;
    for (let i = 0; i < 1001; i++) {
      const t = (a.data[i] as number) * (b.data[j * 1001 + i] as number);
      s += abs ? Math.abs(t) : t;
    }
    return s;
  };
  const want = Array.from({ length: 9 }, (_, j) => 0.5 * sum(j, false) + 2 * (c.data[j] as number));
  close(y, want, want.map((_, j) => 0.5 * sum(j, true) + 2), "Gemm");
  // Pointwise on a 1x1 map (squeeze-excite): x [1, 300, 1, 1], w [7, 300, 1, 1], bias [7].
  const [p, q, bias] = [f32([1, 300, 1, 1]), f32([7, 300, 1, 1]), f32([7])];
  const [r] = run("Conv", [p, q, bias]);
  const terms = (oc: number) =>
    Array.from({ length: 300 }, (_, i) => (q.data[oc * 300 + i] as number) * (p.data[i] as number));
  const pointwise = Array.from({ length: 7 }, (_, oc) => terms(oc).reduce((s, t) => s + t, bias.data[oc] as number));
  const magnitude = Array.from({ length: 7 }, (_, oc) => terms(oc).reduce((s, t) => s + Math.abs(t), 1));
  close(r, pointwise, magnitude, "pointwise Conv");
});

/** A depthwise convolution's operands (`ConvArgs` with `group = inChannels`). */
type DepthwiseArgs = Parameters<typeof convolve>[0];

/** Per output, the float64 sum `bias + w * x` over the taps inside the input, and the sum of the terms' magnitudes. */
function depthwiseReference(a: DepthwiseArgs): { sums: number[]; magnitudes: number[] } {
  const { inShape, outShape, kernel, strides, dilations, padsBegin } = a;
  const multiplier = a.outChannels / a.inChannels;
  const sums: number[] = [], magnitudes: number[] = [];
  for (let n = 0; n < a.batch; n++) {
    for (let oc = 0; oc < a.outChannels; oc++) {
      const plane = (n * a.inChannels + Math.floor(oc / multiplier)) * inShape[0] * inShape[1];
      for (let oh = 0; oh < outShape[0]; oh++) {
        for (let ow = 0; ow < outShape[1]; ow++) {
          let sum = a.bias === null ? 0 : a.bias[oc];
          let magnitude = Math.abs(sum);
          for (let ky = 0; ky < kernel[0]; ky++) {
            for (let kx = 0; kx < kernel[1]; kx++) {
              const ih = oh * strides[0] - padsBegin[0] + ky * dilations[0];
              const iw = ow * strides[1] - padsBegin[1] + kx * dilations[1];
              if (ih < 0 || ih >= inShape[0] || iw < 0 || iw >= inShape[1]) continue;
              const term = a.w[(oc * kernel[0] + ky) * kernel[1] + kx] * a.x[plane + ih * inShape[1] + iw];
              sum += term;
              magnitude += Math.abs(term);
            }
          }
          sums.push(sum);
          magnitudes.push(magnitude);
        }
      }
    }
  }
  return { sums, magnitudes };
}

/** Random depthwise convolutions: `shape` picks the kernel, strides, dilations and spatial sizes of each. */
function randomDepthwise(
  seed: number,
  count: number,
  storage: "f32" | "f64",
  shape: (
    between: (lo: number, hi: number) => number,
  ) => Pick<DepthwiseArgs, "inShape" | "kernel" | "strides" | "dilations" | "padsBegin">,
): DepthwiseArgs[] {
  const rnd = mulberry32(seed);
  const between = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  return Array.from({ length: count }, (_, c) => {
    const g = shape(between);
    const outShape = g.inShape.map((n, d) =>
      Math.floor((n + 2 * g.padsBegin[d] - (g.kernel[d] - 1) * g.dilations[d] - 1) / g.strides[d]) + 1
    );
    const [batch, channels, multiplier] = [between(1, 2), between(1, 4), between(1, 2)];
    const random = (n: number) => {
      const values = Array.from({ length: n }, () => rnd() * 2 - 1);
      return storage === "f32" ? Float32Array.from(values) : Float64Array.from(values);
    };
    const outChannels = channels * multiplier;
    return {
      ...g,
      outShape,
      x: random(batch * channels * g.inShape[0] * g.inShape[1]),
      w: random(outChannels * g.kernel[0] * g.kernel[1]),
      bias: c % 2 === 0 ? null : random(outChannels),
      y: storage === "f32"
        ? new Float32Array(batch * outChannels * outShape[0] * outShape[1])
        : new Float64Array(batch * outChannels * outShape[0] * outShape[1]),
      batch,
      inChannels: channels,
      outChannels,
      group: channels,
    };
  });
}

Deno.test("depthwise convolution matches a float64 sum over the taps inside the input", () => {
  const cases = randomDepthwise(7, 60, "f64", (between) => {
    const kernel = [between(1, 5), between(1, 5)];
    const dilations = [between(1, 2), between(1, 2)];
    return {
      kernel,
      dilations,
      strides: [between(1, 3), between(1, 3)],
      padsBegin: kernel.map((k) => between(0, k - 1)),
      inShape: kernel.map((k, d) => (k - 1) * dilations[d] + between(1, 9)),
    };
  });
  cases.forEach((a, c) => {
    convolve(a);
    depthwiseReference(a).sums.forEach((want, i) => assert.ok(Math.abs(a.y[i] - want) <= 1e-12, `case ${c} at ${i}`));
  });
});

Deno.test("float32 depthwise convolution on wide rows (WebAssembly SIMD) is within float32 rounding of a float64 sum", () => {
  const cases = randomDepthwise(23, 12, "f32", (between) => {
    const kernel = [between(1, 7), between(1, 7)];
    return {
      kernel,
      dilations: [1, 1],
      strides: [1, 1],
      padsBegin: kernel.map((k) => between(0, k - 1)),
      inShape: [between(kernel[0], 12), between(20, 45)],
    };
  });
  cases.forEach((a, c) => {
    convolve(a);
    const { sums, magnitudes } = depthwiseReference(a);
    sums.forEach((want, i) => assert.ok(Math.abs(a.y[i] - want) <= 1e-6 * magnitudes[i] + 1e-7, `case ${c} at ${i}`));
  });
});

Deno.test("float32 depthwise convolution (any stride, dilation, width) equals its float32 order replayed, bit for bit", () => {
  const cases = randomDepthwise(29, 40, "f32", (between) => {
    const kernel = [between(1, 5), between(1, 5)];
    const dilations = [between(1, 2), between(1, 2)];
    return {
      kernel,
      dilations,
      strides: [between(1, 3), between(1, 3)],
      padsBegin: kernel.map((k) => between(0, k - 1)),
      inShape: kernel.map((k, d) => (k - 1) * dilations[d] + between(1, 30)),
    };
  });
  const f = Math.fround;
  // One channel is a plain convolution (GEMM, another order): those cases are left out.
  cases.filter((a) => a.group > 1).forEach((a, c) => {
    convolve(a);
    // bias, then each tap's product (0 in the padding) added in row-major order, float32 roundings throughout.
    const [H, W] = a.inShape, [Ho, Wo] = a.outShape, [KH, KW] = a.kernel;
    const multiplier = a.outChannels / a.inChannels;
    let i = 0;
    for (let n = 0; n < a.batch; n++) {
      for (let oc = 0; oc < a.outChannels; oc++) {
        const plane = (n * a.inChannels + Math.floor(oc / multiplier)) * H * W;
        for (let oh = 0; oh < Ho; oh++) {
          for (let ow = 0; ow < Wo; ow++, i++) {
            let acc = a.bias === null ? 0 : a.bias[oc];
            for (let ky = 0; ky < KH; ky++) {
              for (let kx = 0; kx < KW; kx++) {
                const ih = oh * a.strides[0] - a.padsBegin[0] + ky * a.dilations[0];
                const iw = ow * a.strides[1] - a.padsBegin[1] + kx * a.dilations[1];
                const v = ih >= 0 && ih < H && iw >= 0 && iw < W ? a.x[plane + ih * W + iw] : 0;
                acc = f(acc + f(a.w[oc * KH * KW + ky * KW + kx] * v));
              }
            }
            assert.equal(a.y[i], acc, `case ${c} at ${i}`);
          }
        }
      }
    }
  });
});

Deno.test("max pooling gives the same maxima with and without indices (inside windows skip the bounds tests)", () => {
  const rnd = mulberry32(31);
  const between = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  for (let c = 0; c < 40; c++) {
    const kernel = [between(1, 4), between(1, 4)];
    const strides = [between(1, 3), between(1, 3)];
    const dilations = [between(1, 2), between(1, 2)];
    const padsBegin = kernel.map((k) => between(0, k - 1));
    const inShape = kernel.map((k, d) => (k - 1) * dilations[d] + between(1, 12));
    const outShape = inShape.map((n, d) =>
      Math.floor((n + 2 * padsBegin[d] - (kernel[d] - 1) * dilations[d] - 1) / strides[d]) + 1
    );
    const planes = between(1, 3);
    const x = Float32Array.from({ length: planes * inShape[0] * inShape[1] }, () => (rnd() < 0.05 ? NaN : rnd()));
    const geometry = { planes, inShape, outShape, kernel, strides, dilations, padsBegin };
    const fast = new Float32Array(planes * outShape[0] * outShape[1]);
    const slow = new Float32Array(fast.length);
    maxPool({ ...geometry, x, y: fast });
    maxPool({ ...geometry, x, y: slow }, { indices: new BigInt64Array(fast.length) });
    assert.deepEqual(fast, slow, `case ${c}: ${JSON.stringify(geometry)}`);
  }
});
