/**
 * `readOnnxFile`: large main-graph weights in buffers of their own, the rest of the model as a skeleton protobuf;
 * importing the two gives the module the plain bytes give, and files the scanner cannot split are read whole.
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { compile } from "../driver/compile.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnx, importOnnxFile } from "../ir/onnx/import.ts";
import { readOnnxFile } from "../ir/onnx/model_file.ts";
import { type IModelProto, type ITensorProto, onnx, withUnknownFields } from "../ir/onnx/proto.ts";

const f32Type = (dims: number[]) => ({
  tensorType: { elemType: 1, shape: { dim: dims.map((dimValue) => ({ dimValue })) } },
});

/** `n` float32 values as raw bytes, `offset` + i * 0.25. */
function raw(n: number, offset: number): Uint8Array {
  return new Uint8Array(Float32Array.from({ length: n }, (_, i) => offset + i * 0.25).buffer);
}

/**
 * IR 3 (an initializer that is also an input), weights from 1 to 8192 floats (either side of the 4 KiB split),
 * a weight in typed fields, an unknown TensorProto field on each side of raw_data, a Constant op's tensor and a
 * sparse initializer (both stay in the skeleton).
 */
function modelProto(): IModelProto {
  const initializer: ITensorProto[] = [1, 1023, 1024, 1025, 8192].map((n, i) => ({
    name: `w${i}`,
    dataType: 1,
    dims: [n],
    rawData: raw(n, i),
  }));
  initializer.push({ name: "typed", dataType: 1, dims: [3], floatData: [1, 2, 3] });
  initializer.push(withUnknownFields({ name: "odd", dataType: 1, dims: [2048], rawData: raw(2048, 9) }, [
    { tag: (20 << 3) | 0, value: { low: 5, high: 0 } },
  ]));
  const inputs = initializer.map((t) => ({ name: t.name!, type: f32Type(t.dims as number[]) }));
  return {
    irVersion: 3,
    opsetImport: [{ domain: "", version: 13 }],
    producerName: "model-file-test",
    graph: {
      name: "g",
      initializer,
      sparseInitializer: [{
        dims: [4096],
        values: { name: "s", dataType: 1, dims: [2048], rawData: raw(2048, 7) },
        indices: { dataType: 7, dims: [2048], int64Data: Array.from({ length: 2048 }, (_, i) => i * 2) },
      }],
      input: [{ name: "x", type: f32Type([8192]) }, ...inputs.slice(0, 2)],
      node: [
        {
          name: "k",
          opType: "Constant",
          output: ["k"],
          attribute: [{ name: "value", type: 4, t: { dataType: 1, dims: [2048], rawData: raw(2048, 3) } }],
        },
        { name: "add", opType: "Add", input: ["x", "w4"], output: ["y"] },
        // A negative int64 is a 10-byte varint: copied as written, it must not stop the split.
        { name: "flat", opType: "Flatten", input: ["x"], output: ["f"], attribute: [{ name: "axis", type: 2, i: -1 }] },
      ],
      output: [{ name: "y", type: f32Type([8192]) }, { name: "k" }, { name: "s" }, ...inputs.slice(0, 5), inputs[6]],
    },
  };
}

function writeTemp(bytes: Uint8Array): string {
  const dir = Deno.makeTempDirSync();
  const path = join(dir, "model.onnx");
  Deno.writeFileSync(path, bytes);
  return path;
}

const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

Deno.test("readOnnxFile: weights of 4 KiB or more in buffers of their own, the same module as the plain bytes", () => {
  const bytes = onnx.ModelProto.encode(modelProto()).finish();
  const path = writeTemp(bytes);
  const file = readOnnxFile(path);
  assert.equal(file.sha256, sha256(bytes));
  assert.ok(file.bytes.byteLength < bytes.byteLength / 2, "the skeleton leaves the large weights out");
  // w2 (1024 floats, 4096 bytes), w3, w4 and "odd" are split; w0, w1, "typed" stay in the skeleton.
  assert.deepEqual(file.initializerData.map((d) => d?.byteLength), [
    undefined,
    undefined,
    4096,
    4100,
    32768,
    undefined,
    8192,
  ]);
  const module = importOnnx(file.bytes, { initializerData: file.initializerData });
  assert.deepEqual(file.initializerData, Array(7).fill(undefined), "the importer took every weight out of the array");
  for (const name of ["w2", "w3", "w4", "odd"]) {
    const v = module.graph.constants.find((c) => c.name === name) ?? module.graph.inputs.find((c) => c.name === name)!;
    const data = v.constant!.data as Float32Array;
    assert.equal(data.buffer.byteLength, data.byteLength, `${name} owns its buffer`);
  }
  assert.deepEqual(exportOnnx(module), exportOnnx(importOnnx(bytes)));
  assert.deepEqual(exportOnnx(importOnnxFile(path)), exportOnnx(importOnnx(bytes)));
  Deno.removeSync(path, { recursive: true });
});

Deno.test("readOnnxFile reads whole what it cannot split, and import reports on it as on the plain bytes", () => {
  const good = onnx.ModelProto.encode(modelProto()).finish();
  const graphAgain = onnx.ModelProto.encode({ graph: { name: "again" } }).finish();
  const rawAgain = onnx.ModelProto.encode({
    graph: { name: "g", initializer: [{ name: "w", dataType: 1, dims: [1024], rawData: raw(1024, 0) }] },
  }).finish();
  // raw_data (field 9) once more at the end of the initializer: rebuild the graph and model lengths around it.
  const tensor = onnx.TensorProto.encode({ name: "w", dataType: 1, dims: [1024], rawData: raw(1024, 0) }).finish();
  const twice = new Uint8Array([...tensor, 0x4a, 0x80, 0x20, ...raw(1024, 1)]);
  const graph = new Uint8Array([0x2a, ...varint(twice.length), ...twice]);
  const repeatedRaw = new Uint8Array([0x3a, ...varint(graph.length), ...graph]);
  const cases: [string, Uint8Array][] = [
    ["truncated", good.subarray(0, good.length - 100)],
    ["not protobuf", new TextEncoder().encode("hello, this is not a model")],
    ["empty", new Uint8Array(0)],
    ["graph twice", new Uint8Array([...good, ...graphAgain])],
    ["raw_data twice", repeatedRaw],
    ["fine", rawAgain],
  ];
  for (const [what, bytes] of cases) {
    const path = writeTemp(bytes);
    const file = readOnnxFile(path);
    assert.equal(file.sha256, sha256(bytes), what);
    if (what === "fine") assert.equal(file.initializerData.length, 1, what);
    else assert.deepEqual([file.bytes, file.initializerData], [new Uint8Array(bytes), []], `${what}: read whole`);
    const outcome = (f: () => unknown): string => {
      try {
        return exportOnnx(f() as ReturnType<typeof importOnnx>).join(",");
      } catch (e) {
        return (e as Error).message;
      }
    };
    assert.equal(
      outcome(() => importOnnx(file.bytes, { initializerData: file.initializerData })),
      outcome(() => importOnnx(bytes)),
      what,
    );
    Deno.removeSync(path, { recursive: true });
  }
});

function varint(n: number): number[] {
  const out: number[] = [];
  for (; n >= 0x80; n >>>= 7) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return out;
}

Deno.test("compile() of a readOnnxFile model gives the artifacts and report of its bytes", async () => {
  const m = modelProto();
  m.irVersion = 8;
  m.graph!.input = [{ name: "x", type: f32Type([1, 8192]) }];
  m.graph!.output = [{ name: "y", type: f32Type([1, 8192]) }];
  delete m.graph!.sparseInitializer;
  m.graph!.node = [m.graph!.node![1]];
  const bytes = onnx.ModelProto.encode(m).finish();
  const path = writeTemp(bytes);
  const options = { passes: "canonicalize,dce", target: "c" };
  const split = await compile(readOnnxFile(path), options);
  const plain = await compile(new Uint8Array(bytes), options);
  assert.deepEqual(split.artifacts, plain.artifacts);
  assert.ok(new TextDecoder().decode(split.artifacts.get("model.h")).includes(`input SHA-256 ${sha256(bytes)}`));
  Deno.removeSync(path, { recursive: true });
});
