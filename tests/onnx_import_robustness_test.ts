/**
 * Models users bring and bad input (issue 14): fields of ONNX newer than the
 * 1.10 schema survive import and export; external data is read one range at a
 * time and only from regular files; nesting is bounded; sparse initializers,
 * repeated attributes, string shapes and ONNX-invalid nodes are refused with one
 * line naming the node, initializer or attribute. Verdicts on invalid models are
 * compared with `onnx.checker` (Debian `python3-onnx`).
 */
import assert from "node:assert/strict";
import { loadOnnxruntime } from "../driver/onnxruntime.ts";
import { join } from "node:path";
import { exportOnnx } from "../ir/onnx/export.ts";
import { importOnnx, importOnnxFile } from "../ir/onnx/import.ts";
import {
  type IGraphProto,
  type IModelProto,
  type INodeProto,
  MAX_MESSAGE_DEPTH,
  onnx,
  unknownFieldsOf,
} from "../ir/onnx/proto.ts";
import { parseModule } from "../ir/parser.ts";
import { printModule } from "../ir/printer.ts";
import { inferShapes } from "../ir/shape.ts";
import { verifyModule } from "../ir/verifier.ts";
import { readNpy } from "../data/npy.ts";

const PREFIX = "Cannot import ONNX model: ";
const PYTHON = "/usr/bin/python3";
const GRAPH = onnx.AttributeProto.AttributeType.GRAPH;

function havePythonOnnx(): boolean {
  try {
    return new Deno.Command(PYTHON, { args: ["-c", "import onnx.checker"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}
const pythonOnnx = havePythonOnnx();
if (!pythonOnnx) console.warn(`onnx.checker comparisons skipped: ${PYTHON} cannot import onnx; install python3-onnx`);

/** The message of what `fn` throws (fails when it does not throw). */
function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail("expected an error");
}

// ---------------------------------------------------------------------------
// Protobuf wire format by hand, independent of the decoder under test.

function varint(n: number): number[] {
  const out: number[] = [];
  for (; n > 127; n = Math.floor(n / 128)) out.push((n % 128) | 128);
  out.push(n);
  return out;
}

function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A length-delimited field: a string, bytes or an encoded message. */
function field(num: number, payload: Uint8Array | string): Uint8Array {
  const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  return cat(new Uint8Array([...varint((num << 3) | 2), ...varint(bytes.length)]), bytes);
}

/** A `StringStringEntryProto`. */
function entry(key: string, value: string): Uint8Array {
  return cat(field(1, key), field(2, value));
}

const f32 = (dims: number[]) => ({ tensorType: { elemType: 1, shape: { dim: dims.map((d) => ({ dimValue: d })) } } });

function encodeModel(model: IModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

function model(graph: IGraphProto, opsets: [string, number][] = [["", 13]]): Uint8Array {
  return encodeModel({ irVersion: 8, opsetImport: opsets.map(([domain, version]) => ({ domain, version })), graph });
}

// ---------------------------------------------------------------------------
// 1. IR 10 fields.

/**
 * An IR 10 model with the fields ONNX 1.16 added (numbers from onnx.proto): NodeProto `overload` (8) and
 * `metadata_props` (9), GraphProto `metadata_props` (16), ValueInfoProto `metadata_props` (4), TensorProto
 * `metadata_props` (16), FunctionProto `attribute_proto` (11), `value_info` (12), `overload` (13),
 * `metadata_props` (14); plus IR 11's ModelProto `configuration` (26) and a varint and a fixed32 field of no
 * ONNX version, for the other wire types.
 */
function ir10Model(): Uint8Array {
  const node = (n: INodeProto, ...extra: Uint8Array[]) => cat(onnx.NodeProto.encode(n).finish(), ...extra);
  const fn = cat(
    onnx.FunctionProto.encode({
      name: "f",
      domain: "local",
      input: ["a"],
      output: ["b"],
      node: [{ opType: "Relu", input: ["a"], output: ["b"] }],
      opsetImport: [{ domain: "", version: 13 }],
    }).finish(),
    field(11, onnx.AttributeProto.encode({ name: "alpha", type: 1, f: 0.5 }).finish()),
    field(12, onnx.ValueInfoProto.encode({ name: "a", type: f32([4]) }).finish()),
    field(13, "v1"),
    field(14, entry("fn_key", "fn_value")),
  );
  const graph = cat(
    onnx.GraphProto.encode({
      name: "g",
      initializer: [],
      output: [{ name: "y", type: f32([4]) }],
    }).finish(),
    field(
      11,
      cat(onnx.ValueInfoProto.encode({ name: "x", type: f32([4]) }).finish(), field(4, entry("input_key", "x"))),
    ),
    field(
      5,
      cat(
        onnx.TensorProto.encode({ name: "w", dataType: 1, dims: [4], rawData: new Uint8Array(16) }).finish(),
        field(16, entry("weight_key", "w")),
      ),
    ),
    field(
      1,
      node({ name: "add", opType: "Add", input: ["x", "w"], output: ["t"] }, field(9, entry("namespace", "l1"))),
    ),
    field(
      1,
      node(
        { name: "call", opType: "f", domain: "local", input: ["t"], output: ["y"] },
        field(8, "v1"),
        field(9, entry("source", "model.py:3")),
      ),
    ),
    field(16, entry("graph_key", "g")),
    new Uint8Array([...varint((99 << 3) | 0), ...varint(300)]),
    new Uint8Array([...varint((98 << 3) | 5), 1, 2, 3, 4]),
  );
  return cat(
    encodeModel({
      irVersion: 10,
      opsetImport: [{ domain: "", version: 13 }, { domain: "local", version: 1 }],
      functions: [],
    }),
    field(7, graph),
    field(25, fn),
    field(26, field(1, "config")),
  );
}

/**
 * Prints, as JSON, every message of a model file that holds fields the installed onnx does not know,
 * by a path of names, using protobuf's own unknown-field set: an oracle independent of our decoder.
 */
const UNKNOWN_FIELDS_SCRIPT = `
import json, sys, onnx
from google.protobuf.unknown_fields import UnknownFieldSet
def fields(m):
    out = []
    for f in UnknownFieldSet(m):
        d = f.data
        out.append([f.field_number, f.wire_type, d.hex() if isinstance(d, bytes) else d])
    return out
def graph(g, path, res):
    for kind in ("input", "output", "value_info", "initializer", "node"):
        for i, m in enumerate(getattr(g, kind)):
            key = f"{path}.{kind}[{m.name or i}]"
            if fields(m): res[key] = fields(m)
    if fields(g): res[path] = fields(g)
res = {}
for path in sys.argv[1:]:
    m = onnx.load(path)
    r = {}
    if fields(m): r["model"] = fields(m)
    graph(m.graph, "graph", r)
    for f in m.functions:
        if fields(f): r["function " + f.name] = fields(f)
    res[path] = r
    m.ir_version = min(m.ir_version, onnx.IR_VERSION)
    onnx.checker.check_model(m)
print(json.dumps(res))
`;

Deno.test("IR 10 fields (metadata_props, overload, FunctionProto value_info/attribute_proto) survive import and export", () => {
  const original = ir10Model();
  const exported = exportOnnx(importOnnx(original));
  // Our decoder on both sides: every message keeps its unknown fields, in the same messages.
  const summary = (bytes: Uint8Array) => {
    const m = onnx.ModelProto.decode(bytes);
    const g = m.graph!;
    const named = (list: { name?: string | null }[] | null | undefined) =>
      Object.fromEntries((list ?? []).map((x) => [x.name, unknownFieldsOf(x).map((f) => f.tag)]));
    return {
      model: unknownFieldsOf(m).map((f) => f.tag),
      graph: unknownFieldsOf(g).map((f) => f.tag),
      nodes: named(g.node),
      inputs: named(g.input),
      initializers: named(g.initializer),
      functions: named(m.functions),
    };
  };
  const before = summary(original);
  assert.deepEqual(before, {
    model: [(26 << 3) | 2],
    graph: [(16 << 3) | 2, (99 << 3) | 0, (98 << 3) | 5],
    nodes: { add: [(9 << 3) | 2], call: [(8 << 3) | 2, (9 << 3) | 2] },
    inputs: { x: [(4 << 3) | 2] },
    initializers: { w: [(16 << 3) | 2] },
    functions: { f: [(11 << 3) | 2, (12 << 3) | 2, (13 << 3) | 2, (14 << 3) | 2] },
  });
  assert.deepEqual(summary(exported), before);
  // Export of the export is the same bytes (nothing accumulates).
  assert.deepEqual([...exportOnnx(importOnnx(exported))], [...exported]);
});

Deno.test({
  name: "IR 10 fields: protobuf's own unknown-field sets agree before and after, and onnx.checker accepts the export",
  ignore: !pythonOnnx,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      const a = join(dir, "original.onnx");
      const b = join(dir, "exported.onnx");
      Deno.writeFileSync(a, ir10Model());
      Deno.writeFileSync(b, exportOnnx(importOnnx(ir10Model())));
      const out = new Deno.Command(PYTHON, { args: ["-c", UNKNOWN_FIELDS_SCRIPT, a, b] }).outputSync();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      const result = JSON.parse(new TextDecoder().decode(out.stdout));
      assert.deepEqual(result[b], result[a]);
      assert.deepEqual(result[a]["graph.node[call]"], [[8, 2, "7631"], [
        9,
        2,
        "0a06736f75726365120a6d6f64656c2e70793a33",
      ]]);
      assert.deepEqual(result[a]["graph"].slice(1), [[99, 0, 300], [98, 5, 0x04030201]]);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

// ---------------------------------------------------------------------------
// 2. External data: ranges, regular files only.

/** A model whose initializer `w` (f32[72], 288 bytes) is external data at `location`. */
function externalModel(location: string, offset: number, length: number | null): Uint8Array {
  const externalData = [{ key: "location", value: location }, { key: "offset", value: String(offset) }];
  if (length !== null) externalData.push({ key: "length", value: String(length) });
  return model({
    name: "g",
    initializer: [{ name: "w", dataType: 1, dims: [72], dataLocation: 1, externalData }],
    output: [{ name: "w" }],
  });
}

Deno.test("a 288-byte tensor at the end of a 5 GiB (sparse) file reads its 288 bytes only", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const size = 5 * 2 ** 30;
    const data = join(dir, "big.bin");
    Deno.writeFileSync(data, new Uint8Array(0));
    Deno.truncateSync(data, size);
    const file = Deno.openSync(data, { write: true });
    file.seekSync(size - 288, Deno.SeekMode.Start);
    file.writeSync(new Uint8Array(new Float32Array(72).map((_, i) => i + 0.5).buffer));
    file.close();
    Deno.writeFileSync(join(dir, "m.onnx"), externalModel("big.bin", size - 288, 288));
    const rss = Deno.memoryUsage().rss;
    const start = performance.now();
    const w = importOnnxFile(join(dir, "m.onnx")).graph.constants[0].constant!;
    const ms = performance.now() - start;
    const grew = Deno.memoryUsage().rss - rss;
    assert.deepEqual([...w.data].slice(0, 3), [0.5, 1.5, 2.5]);
    assert.equal((w.data as Float32Array).buffer.byteLength, 288);
    assert.ok(grew < 64 << 20, `resident memory grew by ${grew} bytes`);
    console.log(
      `5 GiB side file, 288-byte tensor: ${ms.toFixed(1)} ms, resident memory +${(grew / 2 ** 20).toFixed(1)} MiB`,
    );

    assert.equal(
      messageOf(() => importOnnx(externalModel("big.bin", size - 100, 288), { baseDir: dir })),
      `${PREFIX}tensor "w": external data "big.bin" has ${size} bytes, needs ${size - 100}+288`,
    );
    // Without a length the data runs to the end of the file: refused from the sizes, before reading 5 GiB.
    assert.equal(
      messageOf(() => importOnnx(externalModel("big.bin", 0, null), { baseDir: dir })),
      `${PREFIX}tensor "w": shape [72] (f32) needs 288 bytes, external data "big.bin" holds ${size} at offset 0`,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a FIFO or a folder as external data location is refused at once, naming tensor and file", async () => {
  const dir = Deno.makeTempDirSync();
  const fifo = join(dir, "pipe");
  const made = new Deno.Command("mkfifo", { args: [fifo] }).outputSync();
  assert.ok(made.success, "mkfifo failed");
  // Should the import open the FIFO, this writer unblocks it after 3 s, and the timing below fails.
  const unblock = new Deno.Command("sh", { args: ["-c", `sleep 3; : > "${fifo}"`] }).spawn();
  try {
    const start = performance.now();
    const message = messageOf(() => importOnnx(externalModel("pipe", 0, 288), { baseDir: dir }));
    assert.ok(performance.now() - start < 2000, "the import waited on the FIFO");
    assert.equal(
      message,
      `${PREFIX}tensor "w": cannot read external data "${dir}/pipe": it is a FIFO, not a regular file`,
    );
    Deno.mkdirSync(join(dir, "sub"));
    assert.equal(
      messageOf(() => importOnnx(externalModel("sub", 0, 288), { baseDir: dir })),
      `${PREFIX}tensor "w": cannot read external data "${dir}/sub": it is a directory, not a regular file`,
    );
  } finally {
    unblock.kill();
    await unblock.status;
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// 3. Deep nesting.

/** A model whose input `x` has a type of `depth` nested sequences. */
function nestedTypeModel(depth: number): Uint8Array {
  let type = onnx.TypeProto.encode({ tensorType: { elemType: 1 } }).finish();
  for (let i = 0; i < depth; i++) type = field(4, field(1, type)); // TypeProto.sequence_type.elem_type
  const input = cat(field(1, "x"), field(2, type));
  const graph = cat(field(2, "g"), field(11, input), field(12, onnx.ValueInfoProto.encode({ name: "x" }).finish()));
  return cat(encodeModel({ irVersion: 8, opsetImport: [{ domain: "", version: 13 }] }), field(7, graph));
}

/** A chain of `depth` If ops, each the then-branch of the one outside it (else: `c`), on boolean input `c`. */
function ifChainModel(depth: number): Uint8Array {
  const leaf = onnx.GraphProto.encode({ name: "leaf", node: [], output: [{ name: "c" }] }).finish();
  let g = leaf;
  for (let i = depth - 1; i >= 0; i--) {
    const branch = cat(field(1, "then_branch"), new Uint8Array([160, 1, GRAPH]), field(6, g));
    const otherwise = cat(field(1, "else_branch"), new Uint8Array([160, 1, GRAPH]), field(6, leaf));
    const node = cat(
      field(1, "c"),
      field(2, `y${i}`),
      field(3, `if${i}`),
      field(4, "If"),
      field(5, branch),
      field(5, otherwise),
    );
    g = cat(field(1, node), field(2, i === 0 ? "main" : `g${i}`));
    g = cat(g, field(12, onnx.ValueInfoProto.encode({ name: `y${i}` }).finish()));
  }
  const input = onnx.ValueInfoProto.encode({ name: "c", type: { tensorType: { elemType: 9, shape: { dim: [] } } } })
    .finish();
  return cat(
    encodeModel({ irVersion: 8, opsetImport: [{ domain: "", version: 13 }] }),
    field(7, cat(g, field(11, input))),
  );
}

Deno.test("10,000 nested sequence types and a 2,500-deep If chain are refused as nested too deep, not corrupt", () => {
  assert.equal(
    messageOf(() => importOnnx(nestedTypeModel(10_000))),
    `${PREFIX}messages nested deeper than ${MAX_MESSAGE_DEPTH} levels (graph depth 1, type depth 49) at value "x"; ` +
      "protobuf's own parsers refuse this too",
  );
  assert.equal(
    messageOf(() => importOnnx(ifChainModel(2500))),
    `${PREFIX}messages nested deeper than ${MAX_MESSAGE_DEPTH} levels (graph depth 34) at node "if32"; ` +
      "protobuf's own parsers refuse this too",
  );
});

Deno.test("the deepest If chain import accepts goes through printer, parser, verifier, shape inference and export", () => {
  let depth = 1;
  while (true) {
    try {
      importOnnx(ifChainModel(depth + 1));
      depth++;
    } catch {
      break;
    }
  }
  assert.equal(depth, 32);
  const module = importOnnx(ifChainModel(depth));
  verifyModule(module);
  inferShapes(module);
  const text = printModule(module);
  assert.equal(printModule(parseModule(text)), text);
  // Export writes the types inference found into each subgraph's outputs, three message levels deeper than
  // the input held them: two If levels fewer leave room for that.
  const shallower = importOnnx(ifChainModel(depth - 2));
  inferShapes(shallower);
  assert.deepEqual([...exportOnnx(importOnnx(exportOnnx(shallower)))], [...exportOnnx(shallower)]);
});

Deno.test("a .npy header of 100,000 brackets is refused as nested too deep", () => {
  const dict = "[".repeat(100_000);
  const header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${dict}}`;
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  const bytes = new Uint8Array(total);
  bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 2, 0]);
  new DataView(bytes.buffer).setUint32(8, total - 12, true);
  bytes.set(new TextEncoder().encode(header.padEnd(total - 13, " ") + "\n"), 12);
  assert.match(
    messageOf(() => readNpy(bytes, "deep.npy")),
    /^Cannot read \.npy file "deep\.npy": malformed header \(brackets nested deeper than 32 levels at offset 81\): /,
  );
});

// ---------------------------------------------------------------------------
// 4. Sparse initializers.

Deno.test("bad sparse initializers are refused naming the initializer", () => {
  const sparse = (dims: number[], indices: number[], indexDims: number[], values = [1, 2], indexType = 7) =>
    model({
      name: "g",
      sparseInitializer: [{
        dims,
        values: { name: "s", dataType: 1, dims: [values.length], floatData: values },
        indices: indexType === 7
          ? { dataType: 7, dims: indexDims, int64Data: indices }
          : { dataType: indexType, dims: indexDims, int32Data: indices },
      }],
      output: [{ name: "s" }],
    });
  const cases: [Uint8Array, string][] = [
    [sparse([4], [1, 4], [2]), "index 4 of value 1 is outside [0, 4)"],
    [sparse([4], [-1, 2], [2]), "index -1 of value 0 is outside [0, 4)"],
    [sparse([2, 2], [0, 0, 1, 2], [2, 2]), "index [1,2] of value 1 is outside the shape [2,2]"],
    [sparse([-4], [0, 1], [2]), "bad dimensions [-4]"],
    [sparse([4], [0, 1, 2], [3]), "indices have shape [3], expected [2] or [2,1] for 2 values of a rank-1 tensor"],
    [sparse([4], [2, 1], [2]), "index 1 of value 1 does not follow index 2: indices must increase"],
    [sparse([4], [0, 1], [2], [1, 2], 6), "indices must be i64, found i32"],
    [
      sparse([2 ** 40, 2 ** 10], [0, 1], [2]),
      "dense shape [1099511627776,1024] needs 4503599627370496 bytes, more than can be allocated",
    ],
  ];
  for (const [bytes, why] of cases) {
    assert.equal(messageOf(() => importOnnx(bytes)), `${PREFIX}sparse initializer "s": ${why}`);
  }
  const good = importOnnx(sparse([2, 2], [0, 1, 1, 1], [2, 2]));
  assert.deepEqual([...good.graph.constants[0].constant!.data], [0, 1, 0, 2]);
});

// ---------------------------------------------------------------------------
// 5. Repeated attributes; 6. string shapes.

Deno.test("a repeated attribute is refused naming node and attribute, subgraph or not", () => {
  const branch = { name: "b", node: [], output: [{ name: "c" }] };
  const ifTwice = model({
    name: "g",
    input: [{ name: "c", type: { tensorType: { elemType: 9, shape: { dim: [] } } } }],
    node: [{
      name: "if",
      opType: "If",
      input: ["c"],
      output: ["y"],
      attribute: [
        { name: "then_branch", type: GRAPH, g: branch },
        { name: "else_branch", type: GRAPH, g: branch },
        { name: "else_branch", type: GRAPH, g: branch },
      ],
    }],
    output: [{ name: "y" }],
  });
  assert.equal(messageOf(() => importOnnx(ifTwice)), `${PREFIX}node "if" (If) has attribute "else_branch" twice`);
  const alphaTwice = model({
    name: "g",
    input: [{ name: "x", type: f32([4]) }],
    node: [{
      name: "lr",
      opType: "LeakyRelu",
      input: ["x"],
      output: ["y"],
      attribute: [{ name: "alpha", type: 1, f: 0.1 }, { name: "alpha", type: 1, f: 0.2 }],
    }],
    output: [{ name: "y" }],
  });
  assert.equal(messageOf(() => importOnnx(alphaTwice)), `${PREFIX}node "lr" (LeakyRelu) has attribute "alpha" twice`);
});

Deno.test("a string tensor as Reshape's shape is an error naming the node, not NaN dimensions", () => {
  const bytes = model({
    name: "g",
    input: [{ name: "x", type: f32([2, 3]) }],
    initializer: [{
      name: "s",
      dataType: 8,
      dims: [2],
      stringData: ["3", "a"].map((t) => new TextEncoder().encode(t)),
    }],
    node: [{ name: "r", opType: "Reshape", input: ["x", "s"], output: ["y"] }],
    output: [{ name: "y" }],
  });
  const module = importOnnx(bytes);
  const expected = 'op "r" (Reshape): operand #1 "s" must be a tensor of i64 (ONNX Reshape), found string';
  assert.equal(messageOf(() => verifyModule(module)), expected);
  assert.equal(messageOf(() => inferShapes(module)), expected);
});

// ---------------------------------------------------------------------------
// 7. ONNX validity, against onnx.checker.

interface ValidityCase {
  name: string;
  bytes: Uint8Array;
  /** Our message, or null when the model is accepted. */
  message: string | null;
  /**
   * Which `onnx.checker.check_model` agrees: without (`plain`) or only with shape inference (`full`); or none, but
   * onnxruntime's loader does (`onnxruntime`: the ONNX IR spec forbids it, the checker does not look).
   */
  checker: "plain" | "full" | "onnxruntime";
}

const x4 = [{ name: "x", type: f32([4]) }];
const y4 = [{ name: "y", type: f32([4]) }];
const one = (node: INodeProto, opsets?: [string, number][]) =>
  model({ name: "g", input: x4, node: [node], output: y4 }, opsets);
const bool = { tensorType: { elemType: 9, shape: { dim: [] } } };

const VALIDITY_CASES: ValidityCase[] = [
  {
    name: "valid",
    bytes: one({ name: "n", opType: "Relu", input: ["x"], output: ["y"] }),
    message: null,
    checker: "plain",
  },
  {
    name: "empty op_type",
    bytes: one({ name: "n", opType: "", input: ["x"], output: ["y"] }),
    message: 'node "n" of graph "g" has an empty op_type',
    checker: "plain",
  },
  {
    name: "default domain not imported",
    bytes: one({ name: "n", opType: "Relu", input: ["x"], output: ["y"] }, [["custom", 1]]),
    message: 'node "n" (Relu) is in domain "", which opset_import does not list (it lists "custom")',
    checker: "plain",
  },
  {
    name: "custom domain not imported",
    bytes: one({ name: "n", opType: "Foo", domain: "custom", input: ["x"], output: ["y"] }),
    message: 'node "n" (Foo) is in domain "custom", which opset_import does not list (it lists "")',
    checker: "plain",
  },
  {
    name: "unknown op in an imported custom domain",
    bytes: one({ name: "n", opType: "Foo", domain: "custom", input: ["x"], output: ["y"] }, [["", 13], ["custom", 1]]),
    message: null,
    checker: "plain",
  },
  {
    name: "unknown op in the default domain",
    bytes: one({ name: "n", opType: "Foo", input: ["x"], output: ["y"] }),
    message: 'node "n" (Foo): ONNX opset 13 has no operator Foo',
    checker: "plain",
  },
  {
    name: "op newer than the opset",
    bytes: one({ name: "n", opType: "Gelu", input: ["x"], output: ["y"] }),
    message: 'node "n" (Gelu): ONNX opset 13 has no operator Gelu',
    checker: "plain",
  },
  {
    name: "unknown attribute",
    bytes: one({
      name: "n",
      opType: "Relu",
      input: ["x"],
      output: ["y"],
      attribute: [{ name: "alpha", type: 1, f: 1 }],
    }),
    message: 'node "n" (Relu) has attribute "alpha", which Relu of opset 13 does not define (it has: none)',
    checker: "plain",
  },
  {
    name: "attribute of another version",
    bytes: one({
      name: "n",
      opType: "Add",
      input: ["x", "x"],
      output: ["y"],
      attribute: [{ name: "broadcast", type: 2, i: 1 }],
    }),
    message: 'node "n" (Add) has attribute "broadcast", which Add of opset 13 does not define (it has: none)',
    checker: "plain",
  },
  {
    name: "negative opset version",
    bytes: one({ name: "n", opType: "Relu", input: ["x"], output: ["y"] }, [["", -1]]),
    message: 'opset_import gives domain "" version -1, expected 1 or more',
    checker: "plain",
  },
  {
    name: "repeated attribute",
    bytes: one({
      name: "n",
      opType: "LeakyRelu",
      input: ["x"],
      output: ["y"],
      attribute: [{ name: "alpha", type: 1, f: 1 }, { name: "alpha", type: 1, f: 2 }],
    }),
    message: 'node "n" (LeakyRelu) has attribute "alpha" twice',
    checker: "plain",
  },
  {
    name: "duplicate node names (the checker allows them)",
    bytes: model({
      name: "g",
      input: x4,
      node: [
        { name: "n", opType: "Relu", input: ["x"], output: ["t"] },
        { name: "n", opType: "Neg", input: ["t"], output: ["y"] },
      ],
      output: y4,
    }),
    message: 'node "n" (Neg): graph "g" has another node of this name (node names must be unique)',
    checker: "onnxruntime",
  },
  {
    name: "Add with three inputs",
    bytes: one({ name: "n", opType: "Add", input: ["x", "x", "x"], output: ["y"] }),
    message: 'node "n" (Add) has 3 inputs; Add of opset 13 takes 2',
    checker: "plain",
  },
  {
    name: "Relu with two outputs",
    bytes: one({ name: "n", opType: "Relu", input: ["x"], output: ["y", "z"] }),
    message: 'node "n" (Relu) has 2 outputs; Relu of opset 13 gives 1',
    checker: "plain",
  },
  {
    name: "an int attribute given as a string",
    bytes: one({
      name: "n",
      opType: "Softmax",
      input: ["x"],
      output: ["y"],
      attribute: [{ name: "axis", type: 3, s: new TextEncoder().encode("0") }],
    }),
    message: 'node "n" (Softmax): attribute "axis" of Softmax of opset 13 must be int, found string',
    checker: "plain",
  },
  {
    name: "Concat without its axis",
    bytes: one({ name: "n", opType: "Concat", input: ["x"], output: ["y"] }),
    message: 'node "n" (Concat) lacks attribute "axis", which Concat requires',
    checker: "full",
  },
  {
    name: "an op gone from the opset (Upsample at 13)",
    bytes: one({ name: "n", opType: "Upsample", input: ["x", "x"], output: ["y"] }),
    message: 'node "n" (Upsample): ONNX opset 13 has no operator Upsample',
    checker: "plain",
  },
  {
    name: "a sequence fed to Relu",
    bytes: model({
      name: "g",
      input: [{ name: "x", type: { sequenceType: { elemType: f32([4]) } } }],
      node: [{ name: "n", opType: "Relu", input: ["x"], output: ["y"] }],
      output: y4,
    }),
    message: 'node "n" (Relu): input #0 "x" is a seq<f32[4]>; Relu of opset 13 takes a tensor there',
    checker: "full",
  },
  {
    name: "If branches with two outputs for one",
    bytes: model({
      name: "g",
      input: [...x4, { name: "c", type: bool }],
      node: [{
        name: "if",
        opType: "If",
        input: ["c"],
        output: ["y"],
        attribute: [
          {
            name: "then_branch",
            type: GRAPH,
            g: {
              name: "then",
              node: [{ opType: "Relu", input: ["x"], output: ["a"] }],
              output: [{ name: "a", type: f32([4]) }],
            },
          },
          {
            name: "else_branch",
            type: GRAPH,
            g: {
              name: "else",
              node: [{ opType: "Neg", input: ["x"], output: ["b"] }, { opType: "Neg", input: ["x"], output: ["b2"] }],
              output: [{ name: "b", type: f32([4]) }, { name: "b2", type: f32([4]) }],
            },
          },
        ],
      }],
      output: y4,
    }),
    message: 'node "if" (If): else_branch has 2 outputs, expected 1 outputs (one per If output)',
    checker: "full",
  },
  {
    name: "Loop body without its carried value's output",
    bytes: model({
      name: "g",
      input: x4,
      node: [{
        name: "loop",
        opType: "Loop",
        input: ["", "", "x"],
        output: ["y"],
        attribute: [{
          name: "body",
          type: GRAPH,
          g: {
            name: "body",
            input: [
              { name: "i", type: { tensorType: { elemType: 7, shape: { dim: [] } } } },
              { name: "cond", type: bool },
              { name: "v", type: f32([4]) },
            ],
            node: [{ opType: "Identity", input: ["cond"], output: ["co"] }],
            output: [{ name: "co", type: bool }],
          },
        }],
      }],
      output: y4,
    }),
    message: 'node "loop" (Loop): body has 1 outputs, expected 2 outputs (iteration number, condition and 1 ' +
      "loop-carried values in; condition, loop-carried values and scan outputs out, for a Loop with 3 inputs and 1 outputs)",
    checker: "full",
  },
  {
    name: "Scan body with one input for two",
    bytes: model({
      name: "g",
      input: [...x4, { name: "z", type: f32([3, 4]) }],
      node: [{
        name: "scan",
        opType: "Scan",
        input: ["x", "z"],
        output: ["y"],
        attribute: [
          { name: "num_scan_inputs", type: 2, i: 1 },
          {
            name: "body",
            type: GRAPH,
            g: {
              name: "body",
              input: [{ name: "s", type: f32([4]) }],
              node: [{ opType: "Identity", input: ["s"], output: ["so"] }],
              output: [{ name: "so", type: f32([4]) }],
            },
          },
        ],
      }],
      output: y4,
    }),
    message: 'node "scan" (Scan): body has 1 inputs, expected 2 inputs (one per Scan state and scan input in, ' +
      "one per Scan output out)",
    checker: "full",
  },
];

Deno.test("what onnx.checker lets through but onnxruntime refuses is refused too", async () => {
  const ort = await loadOnnxruntime();
  for (const c of VALIDITY_CASES.filter((c) => c.checker === "onnxruntime")) {
    await assert.rejects(ort.InferenceSession.create(c.bytes, { logSeverityLevel: 4 }), c.name);
  }
});

Deno.test("ONNX-invalid nodes are refused naming the node; each verdict matches onnx.checker", () => {
  for (const c of VALIDITY_CASES) {
    let message: string | null = null;
    try {
      importOnnx(c.bytes);
    } catch (e) {
      message = (e as Error).message;
    }
    assert.equal(message, c.message === null ? null : PREFIX + c.message, c.name);
  }
  if (!pythonOnnx) return;
  const dir = Deno.makeTempDirSync();
  try {
    const paths = VALIDITY_CASES.map((c, i) => {
      const path = join(dir, `${i}.onnx`);
      Deno.writeFileSync(path, c.bytes);
      return [path, c.checker === "full"];
    });
    const script = `
import json, sys, onnx
out = []
for path, full in json.loads(sys.argv[1]):
    try:
        onnx.checker.check_model(onnx.load(path), full_check=full)
        out.append(None)
    except Exception as e:
        out.append(str(e).splitlines()[0][:200])
print(json.dumps(out))
`;
    const run = new Deno.Command(PYTHON, { args: ["-c", script, JSON.stringify(paths)] }).outputSync();
    assert.ok(run.success, new TextDecoder().decode(run.stderr));
    const verdicts: (string | null)[] = JSON.parse(new TextDecoder().decode(run.stdout));
    VALIDITY_CASES.forEach((c, i) => {
      if (c.checker === "onnxruntime") return;
      assert.equal(verdicts[i] === null, c.message === null, `${c.name}: checker says ${verdicts[i] ?? "valid"}`);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("an empty dim_param is an unknown dimension and wins over a dim_value before it (a oneof), exported as unknown", () => {
  const bytes = model({
    name: "g",
    input: [{
      name: "x",
      type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 0, dimParam: "" }, { dimValue: 4 }] } } },
    }],
    node: [{ name: "n", opType: "Relu", input: ["x"], output: ["y"] }],
    output: [{ name: "y" }],
  });
  const m = importOnnx(bytes);
  assert.deepEqual(m.graph.inputs[0].type, { elem: "f32", shape: ["?", 4] });
  const dims = onnx.ModelProto.decode(exportOnnx(m)).graph!.input![0].type!.tensorType!.shape!.dim!;
  assert.deepEqual(onnx.TensorShapeProto.Dimension.toObject(dims[0] as never), {});
});
