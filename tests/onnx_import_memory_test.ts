/**
 * Weights on import are views over the model bytes, never copies, when the caller lets the importer align them in
 * place (`overwriteInput`); without it the bytes are never written. Both imports give the same module.
 * @module
 */
import assert from "node:assert/strict";
import onnxProto from "onnx-proto";
import { Graph, Op, Value } from "../ir/graph.ts";
import { Module } from "../ir/module.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { readTensorProto, tensorToProto } from "../ir/onnx/tensor_proto.ts";
import { allocData, type Tensor } from "../ir/tensor.ts";
import type { DType } from "../ir/types.ts";

const { onnx } = onnxProto;

/** A chain of Adds over constants of several dtypes and sizes, so that some land at misaligned offsets. */
function modelBytes(): Uint8Array {
  const g = new Graph("g");
  let x = g.addInput(new Value("x", { elem: "f32", shape: [1] }));
  const sizes = [1, 3, 31, 32, 33, 100, 257, 1000, 4099];
  const dtypes: DType[] = ["f32", "f16", "i32", "i64", "f64", "u8"];
  let k = 0;
  for (const dtype of dtypes) {
    for (const n of sizes) {
      const data = allocData(dtype, n) as Float64Array;
      for (let i = 0; i < n; i++) {
        (data as unknown as { [i: number]: number | bigint })[i] = dtype === "i64"
          ? BigInt(i * 7 - 5)
          : (i * 37 + k) % 251;
      }
      const c = g.addConstant(`c${k++}.${dtype}`, { dtype, shape: [n], data }, { elem: dtype, shape: [n] });
      if (dtype !== "f32") continue;
      const add = g.addOp(new Op({ name: `add${k}`, type: "Add", operands: [x, c], results: [new Value(`y${k}`)] }));
      x = add.result;
    }
  }
  g.outputs.push(x);
  return exportOnnx(new Module(g, [["", 13]], 8));
}

/** Whether `t`'s storage lies inside `bytes` (a view, not a copy). */
function isViewOver(t: Tensor, bytes: Uint8Array): boolean {
  const data = t.data as Float32Array;
  return data.buffer === bytes.buffer && data.byteOffset >= bytes.byteOffset &&
    data.byteOffset + data.byteLength <= bytes.byteOffset + bytes.byteLength;
}

Deno.test("import never writes into the model bytes unless told to, and copies misaligned weights then", () => {
  const bytes = modelBytes();
  const pristine = bytes.slice();
  const module = importOnnx(bytes);
  assert.deepEqual(bytes, pristine);
  const copied = module.graph.constants.filter((v) => !isViewOver(v.constant!, bytes));
  // The test means something only if some weights sit at offsets their dtype cannot view.
  assert.ok(copied.some((v) => v.constant!.dtype === "f32" && v.constant!.data.length > 32), "a misaligned f32 weight");
});

Deno.test("overwriteInput: weights of 2 bytes or more per element and over 32 elements are views, values unchanged", () => {
  const bytes = modelBytes();
  const reference = importOnnx(bytes.slice());
  const work = bytes.slice();
  const module = importOnnx(work, { overwriteInput: true });
  for (const v of module.graph.constants) {
    const t = v.constant!;
    const expected = reference.graph.constants.find((r) => r.name === v.name)!.constant!;
    assert.deepEqual(t, expected, v.name);
    // The header a raw_data moves over is its tag and length (2+ bytes): always room for f32 and f16; for 8-byte
    // elements once the length needs 3 varint bytes or the shift is small.
    if (t.data.length > 32 && t.dtype !== "i64" && t.dtype !== "f64") assert.ok(isViewOver(t, work), v.name);
  }
  assert.notDeepEqual(work, bytes, "some weights were moved");
  assert.deepEqual(exportOnnx(module), exportOnnx(reference));
});

Deno.test("overwriteInput keeps sparse initializers, written back from their protos, intact", () => {
  // The graph name's length shifts the values' raw_data through every offset modulo 4.
  let moved = false;
  for (let pad = 0; pad < 4; pad++) {
    const values = new Float32Array(40).map((_, i) => i + 0.5);
    const bytes = onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: "", version: 13 }],
      graph: {
        name: "g".repeat(pad + 1),
        sparseInitializer: [{
          dims: [80],
          values: { name: "s", dataType: 1, dims: [40], rawData: new Uint8Array(values.buffer) },
          indices: { dataType: 7, dims: [40], int64Data: [...values.keys()].map((i) => i * 2) },
        }],
        output: [{ name: "s" }],
      },
    }).finish();
    const plain = new Uint8Array(bytes);
    const reference = exportOnnx(importOnnx(plain.slice()));
    const work = plain.slice();
    const module = importOnnx(work, { overwriteInput: true });
    assert.deepEqual(exportOnnx(module), reference, `pad ${pad}`);
    moved ||= work.some((b, i) => b !== plain[i]);
  }
  assert.ok(moved, "some pad left the values misaligned, and they were moved");
});

Deno.test("a TensorProto read alone is not aligned in place (no alignWithin)", () => {
  const t = { dtype: "f32" as const, shape: [64], data: new Float32Array(64).fill(1.5) };
  const encoded = onnx.TensorProto.encode(tensorToProto("w", t)).finish();
  const bytes = new Uint8Array(encoded.byteLength + 1);
  bytes.set(encoded, 1); // offset 1: misaligned for f32 whatever the header
  const pristine = bytes.slice();
  assert.deepEqual(readTensorProto(bytes.subarray(1)), t);
  assert.deepEqual(bytes, pristine);
});
