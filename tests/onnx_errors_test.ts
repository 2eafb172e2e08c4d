/**
 * Bad input to the ONNX importer and exporter: each failure is one line that
 * says what is wrong and where, and garbage never hangs the decoder.
 */
import assert from "node:assert/strict";
import { Graph, Op, Value } from "../ir/graph.ts";
import { Module } from "../ir/module.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnx, importOnnxFile } from "../ir/onnx/import.ts";
import { type IGraphProto, onnx } from "../ir/onnx/proto.ts";
import { readTensorProto, tensorFromProto } from "../ir/onnx/tensor_proto.ts";
import { tensorType } from "../ir/types.ts";
import { BACKEND_DATA_DIR, backendDataAvailable } from "./onnx_backend.ts";

const PREFIX = "Cannot import ONNX model: ";

/** Encode a model around `graph` (opset 13). */
function model(graph: IGraphProto): Uint8Array {
  return onnx.ModelProto.encode({ irVersion: 8, opsetImport: [{ domain: "", version: 13 }], graph }).finish();
}

const f32x4 = { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 4 }] } } };

/** The message of what `fn` throws (fails when it does not throw). */
function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail("expected an error");
}

/** A small deterministic PRNG (LCG) for garbage inputs. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
}

/** Offsets where each top-level protobuf field of `bytes` ends (wire format: tag varint, then payload). */
function topLevelFieldEnds(bytes: Uint8Array): number[] {
  let pos = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0;; shift += 7) {
      const b = bytes[pos++];
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return value;
    }
  };
  const ends: number[] = [];
  while (pos < bytes.length) {
    const wire = varint() & 7;
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 2) {
      const length = varint();
      pos += length;
    } else if (wire === 5) pos += 4;
    else throw new Error(`unexpected wire type ${wire}`);
    ends.push(pos);
  }
  return ends;
}

Deno.test("importOnnx rejects a PNG file as not an ONNX model", () => {
  const png = new Uint8Array([
    0x89,
    0x50,
    0x4e,
    0x47,
    0x0d,
    0x0a,
    0x1a,
    0x0a,
    0,
    0,
    0,
    13,
    0x49,
    0x48,
    0x44,
    0x52,
    0,
    0,
    0,
    1,
    0,
    0,
    0,
    1,
    8,
    6,
    0,
    0,
    0,
  ]);
  assert.equal(
    messageOf(() => importOnnx(png)),
    `${PREFIX}not an ONNX model, or the file is corrupt or truncated (a field at byte 24 claims 8 bytes, but only 5 remain)`,
  );
});

Deno.test("importOnnx rejects an empty file: the model has no graph", () => {
  assert.equal(
    messageOf(() => importOnnx(new Uint8Array(0))),
    `${PREFIX}the model has no graph (is this an ONNX file?)`,
  );
});

Deno.test("importOnnx rejects 2000 random byte strings with one-line errors, without hanging", () => {
  const random = lcg(7);
  for (let trial = 0; trial < 2000; trial++) {
    const bytes = new Uint8Array(1 + Math.floor(random() * 300)).map(() => Math.floor(random() * 256));
    const message = messageOf(() => importOnnx(bytes));
    assert.match(
      message,
      /^Cannot import ONNX model: (not an ONNX model, or the file is corrupt or truncated|the model)/,
    );
    assert.ok(!message.includes("\n"), message);
  }
});

Deno.test("importOnnx rejects every truncation of a real model except at top-level field boundaries", () => {
  const bytes = model({
    name: "g",
    input: [{ name: "x", type: f32x4 }],
    initializer: [{ name: "w", dataType: 1, dims: [4], rawData: new Uint8Array(16) }],
    node: [{ name: "add", opType: "Add", input: ["x", "w"], output: ["y"] }],
    output: [{ name: "y", type: f32x4 }],
  });
  const boundaries = topLevelFieldEnds(bytes);
  const accepted: number[] = [];
  for (let cut = 0; cut < bytes.length; cut++) {
    let message: string | null = null;
    try {
      importOnnx(bytes.subarray(0, cut));
      accepted.push(cut);
    } catch (e) {
      message = (e as Error).message;
    }
    if (message !== null) assert.ok(message.startsWith(PREFIX) && !message.includes("\n"), message);
  }
  // The cut that drops the trailing opset_import leaves a well-formed model whose Add is in a domain it does
  // not import, which the ONNX checker refuses too.
  assert.deepEqual(accepted, []);
  assert.equal(
    messageOf(() => importOnnx(bytes.subarray(0, boundaries[boundaries.length - 2]))),
    `${PREFIX}node "add" (Add) is in domain "", which opset_import does not list (it lists none)`,
  );
  assert.match(
    messageOf(() => importOnnx(bytes.subarray(0, bytes.length >> 1))),
    /^Cannot import ONNX model: not an ONNX model, or the file is corrupt or truncated \(a field at byte \d+ claims \d+ bytes, but only \d+ remain\)$/,
  );
});

Deno.test({
  name: "importOnnx rejects a truncated backend-test model (test_conv_with_strides_padding)",
  ignore: !backendDataAvailable(),
  fn() {
    const bytes = Deno.readFileSync(`${BACKEND_DATA_DIR}/node/test_conv_with_strides_padding/model.onnx`);
    assert.equal(importOnnx(bytes).graph.ops[0].type, "Conv");
    for (const cut of [1, 20, bytes.length >> 1, bytes.length - 30]) {
      assert.match(
        messageOf(() => importOnnx(bytes.subarray(0, cut))),
        /^Cannot import ONNX model: not an ONNX model, or the file is corrupt or truncated \(a field at byte \d+ claims \d+ bytes, but only \d+ remain\)$/,
      );
    }
  },
});

Deno.test("importOnnx names the node and value used before its definition", () => {
  const bytes = model({
    name: "g",
    input: [{ name: "x", type: f32x4 }],
    node: [
      { name: "second", opType: "Relu", input: ["t"], output: ["y"] },
      { name: "first", opType: "Neg", input: ["x"], output: ["t"] },
    ],
    output: [{ name: "y" }],
  });
  assert.equal(messageOf(() => importOnnx(bytes)), `${PREFIX}node "second" (Relu) uses value "t" before it is defined`);
});

Deno.test("importOnnx names the node and a value defined nowhere; unnamed nodes get generated names", () => {
  const bytes = model({
    name: "g",
    input: [{ name: "x", type: f32x4 }],
    node: [{ opType: "Add", input: ["x", "ghost"], output: ["y"] }],
    output: [{ name: "y" }],
  });
  assert.equal(
    messageOf(() => importOnnx(bytes)),
    `${PREFIX}node "Add_0" (Add) uses value "ghost", which is not defined`,
  );
});

Deno.test("importOnnx rejects a value defined twice: two nodes, two initializers, two inputs", () => {
  const twoNodes = model({
    name: "g",
    input: [{ name: "x", type: f32x4 }],
    node: [
      { name: "n1", opType: "Relu", input: ["x"], output: ["y"] },
      { name: "n2", opType: "Neg", input: ["x"], output: ["y"] },
    ],
    output: [{ name: "y" }],
  });
  assert.equal(messageOf(() => importOnnx(twoNodes)), `${PREFIX}node "n2" (Neg) defines value "y" twice in graph "g"`);
  const nodeOverInput = model({
    name: "g",
    input: [{ name: "x", type: f32x4 }],
    node: [{ name: "n1", opType: "Relu", input: ["x"], output: ["x"] }],
    output: [{ name: "x" }],
  });
  assert.equal(
    messageOf(() => importOnnx(nodeOverInput)),
    `${PREFIX}node "n1" (Relu) defines value "x" twice in graph "g"`,
  );
  const w = { name: "w", dataType: 1, dims: [1], floatData: [1] };
  const twoInitializers = model({ name: "g", initializer: [w, w], output: [{ name: "w" }] });
  assert.equal(messageOf(() => importOnnx(twoInitializers)), `${PREFIX}initializer "w" is defined twice in graph "g"`);
  const twoInputs = model({ name: "g", input: [{ name: "x" }, { name: "x" }], output: [{ name: "x" }] });
  assert.equal(
    messageOf(() => importOnnx(twoInputs)),
    `${PREFIX}graph input "x" defines value "x" twice in graph "g"`,
  );
});

Deno.test("importOnnx rejects an undefined graph output, naming graph and value", () => {
  const bytes = model({ name: "g", input: [{ name: "x", type: f32x4 }], output: [{ name: "z" }] });
  assert.equal(messageOf(() => importOnnx(bytes)), `${PREFIX}output "z" of graph "g" is not defined`);
});

Deno.test("importOnnx reports a subgraph's undefined value with the node holding it", () => {
  const bytes = model({
    name: "g",
    input: [{ name: "c", type: { tensorType: { elemType: 9, shape: { dim: [] } } } }],
    node: [{
      name: "branch",
      opType: "If",
      input: ["c"],
      output: ["y"],
      attribute: [
        {
          name: "then_branch",
          type: onnx.AttributeProto.AttributeType.GRAPH,
          g: {
            name: "then",
            node: [{ name: "inner", opType: "Neg", input: ["nowhere"], output: ["t"] }],
            output: [{ name: "t" }],
          },
        },
      ],
    }],
    output: [{ name: "y" }],
  });
  assert.equal(
    messageOf(() => importOnnx(bytes)),
    `${PREFIX}node "inner" (Neg) uses value "nowhere", which is not defined`,
  );
});

Deno.test("importOnnx reports bad initializers naming the tensor", () => {
  const short = model({
    name: "g",
    initializer: [{ name: "w", dataType: 1, dims: [2, 2], floatData: [1, 2, 3] }],
    output: [{ name: "w" }],
  });
  assert.equal(messageOf(() => importOnnx(short)), `${PREFIX}tensor "w": shape [2,2] (f32) needs 4 elements, found 3`);
  const unknown = model({ name: "g", initializer: [{ name: "w", dataType: 99, dims: [1] }], output: [{ name: "w" }] });
  assert.equal(messageOf(() => importOnnx(unknown)), `${PREFIX}tensor "w": unknown ONNX data type 99`);
  const ragged = model({
    name: "g",
    initializer: [{ name: "w", dataType: 1, dims: [1], rawData: new Uint8Array(3) }],
    output: [{ name: "w" }],
  });
  assert.equal(
    messageOf(() => importOnnx(ragged)),
    `${PREFIX}tensor "w": 3 bytes is not a whole number of f32 elements`,
  );
});

Deno.test("importOnnx needs a model folder for external data", () => {
  const bytes = model({
    name: "g",
    initializer: [{
      name: "w",
      dataType: 1,
      dims: [1],
      dataLocation: 1,
      externalData: [{ key: "location", value: "w.bin" }],
    }],
    output: [{ name: "w" }],
  });
  assert.equal(
    messageOf(() => importOnnx(bytes)),
    `${PREFIX}tensor "w": external data "w.bin" needs the model folder (baseDir)`,
  );
  const files = new Map([["w.bin", new Uint8Array(new Float32Array([2.5]).buffer)]]);
  const read = (path: string): Uint8Array => files.get(path) ?? assert.fail(path);
  assert.deepEqual([...importOnnx(bytes, { readFile: read }).graph.constants[0].constant!.data], [2.5]);
  const tooShort = model({
    name: "g",
    initializer: [{
      name: "w",
      dataType: 1,
      dims: [1],
      dataLocation: 1,
      externalData: [{ key: "location", value: "w.bin" }, { key: "offset", value: "2" }, { key: "length", value: "4" }],
    }],
    output: [{ name: "w" }],
  });
  assert.equal(
    messageOf(() => importOnnx(tooShort, { readFile: read })),
    `${PREFIX}tensor "w": external data "w.bin" has 4 bytes, needs 2+4`,
  );
});

Deno.test("importOnnxFile reports an unreadable path", () => {
  assert.match(
    messageOf(() => importOnnxFile("/nonexistent/model.onnx")),
    /^Cannot import ONNX model: cannot read "\/nonexistent\/model\.onnx": No such file or directory/,
  );
});

Deno.test("readTensorProto and tensorFromProto reject bad tensors with one-line messages", () => {
  assert.match(
    messageOf(() => readTensorProto(new Uint8Array([0x0a, 0xff]))),
    /^Cannot read TensorProto: corrupt or truncated protobuf \(a field at byte \d+ claims \d+ bytes, but only \d+ remain\)$/,
  );
  assert.equal(
    messageOf(() => tensorFromProto({ name: "s", dataType: 8, dims: [1], rawData: new Uint8Array(1) })),
    'tensor "s": string tensors cannot use raw_data',
  );
  assert.equal(
    messageOf(() => tensorFromProto({ dataType: 1, dims: [1], segment: { begin: 0, end: 1 } })),
    "unnamed tensor: segmented tensors are not supported",
  );
});

Deno.test("exportOnnx refuses element types ONNX cannot express, naming the value", () => {
  const g = new Graph("g");
  const x = g.addInput(new Value("x", tensorType("f32", [4])));
  const q = g.addOp(
    new Op({
      name: "q",
      type: "Identity",
      operands: [x],
      results: [new Value("xq", tensorType({ kind: "bfp", mantissa: 8, exponent: 5, block: 16 }, [4]))],
    }),
  );
  g.outputs.push(q.result);
  assert.equal(
    messageOf(() => exportOnnx(new Module(g))),
    'Cannot export ONNX model: value "xq" has element type bfp<mantissa=8, exponent=5, block=16>, which ONNX cannot represent; lower it first',
  );
});
