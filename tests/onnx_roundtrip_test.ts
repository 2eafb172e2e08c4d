/**
 * ONNX import/export against the ONNX backend test data (Debian `libonnx-testdata`):
 * every model round-trips structurally and idempotently, onnxruntime gives the
 * expected outputs on the re-exported model wherever it does on the original,
 * and `onnx.checker` (Debian `python3-onnx`) accepts the re-exports.
 * Also external data: writing, reading back, and refusing paths outside the model folder.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { Graph, Op, Value } from "../ir/graph.ts";
import { Module } from "../ir/module.ts";
import { exportOnnx, exportOnnxFiles, saveOnnx } from "../ir/onnx/export.ts";
import { importOnnx, importOnnxFile } from "../ir/onnx/import.ts";
import {
  has,
  type IAttributeProto,
  type IGraphProto,
  int64ToNumber,
  type ITensorProto,
  type ITypeProto,
  type ModelProto,
  onnx,
  utf8,
} from "../ir/onnx/proto.ts";
import { tensorFromProto, tensorToProto } from "../ir/onnx/tensor_proto.ts";
import { type Tensor, tensorBytes, tensorHash, toFloat64 } from "../ir/tensor.ts";
import type { DType } from "../ir/types.ts";
import { tensorType } from "../ir/types.ts";
import { ORT_TYPES } from "../driver/onnxruntime.ts";
import {
  BACKEND_SKIP_MESSAGE,
  type BackendCase,
  backendDataAvailable,
  listBackendCases,
  loadDataSets,
} from "./onnx_backend.ts";

const PYTHON = "/usr/bin/python3";
const haveData = backendDataAvailable();
if (!haveData) console.warn(`onnx_roundtrip_test: skipped: ${BACKEND_SKIP_MESSAGE}`);

/** Original bytes, first export and the module of each backend case, computed once for all tests. */
interface RoundTrip {
  c: BackendCase;
  original: Uint8Array;
  exported: Uint8Array;
}

let cached: { trips: RoundTrip[]; failures: string[] } | null = null;

function roundTrips(): { trips: RoundTrip[]; failures: string[] } {
  if (cached !== null) return cached;
  const trips: RoundTrip[] = [];
  const failures: string[] = [];
  for (const c of listBackendCases()) {
    try {
      const original = Deno.readFileSync(join(c.dir, "model.onnx"));
      const exported = exportOnnx(importOnnx(original, { baseDir: c.dir, keepWeightOps: true }));
      trips.push({ c, original, exported });
    } catch (e) {
      failures.push(`${c.suite}/${c.name}: ${(e as Error).message}`);
    }
  }
  return cached = { trips, failures };
}

// ---------------------------------------------------------------------------
// Structural summary of a decoded ModelProto, independent of the IR, so that a
// mistake shared by importer and exporter still shows up against the original.

function typeSummary(tp: ITypeProto | null | undefined): unknown {
  if (!tp) return null;
  if (tp.tensorType) {
    const shape = tp.tensorType.shape;
    return {
      tensor: tp.tensorType.elemType ?? 0,
      shape: shape
        ? (shape.dim ?? []).map((d) => has(d, "dimValue") ? int64ToNumber(d.dimValue) : d.dimParam ?? "?")
        : null,
    };
  }
  if (tp.sequenceType) return { seq: typeSummary(tp.sequenceType.elemType) };
  if (tp.optionalType) return { optional: typeSummary(tp.optionalType.elemType) };
  if (tp.mapType) return { map: tp.mapType.keyType, value: typeSummary(tp.mapType.valueType) };
  if (tp.sparseTensorType) return { sparse: tp.sparseTensorType.elemType };
  return null;
}

function tensorSummary(t: ITensorProto): string {
  const x = tensorFromProto(t);
  return `${x.dtype}[${x.shape.join(",")}]#${tensorHash(x)}`;
}

function attributeSummary(a: IAttributeProto): unknown {
  const T = onnx.AttributeProto.AttributeType;
  switch (a.type) {
    case T.FLOAT:
      return a.f ?? 0;
    case T.INT:
      return int64ToNumber(a.i);
    case T.STRING:
      return utf8(a.s);
    case T.TENSOR:
      return tensorSummary(a.t ?? {});
    case T.GRAPH:
      return graphSummary(a.g ?? {});
    case T.FLOATS:
      return [...(a.floats ?? [])];
    case T.INTS:
      return (a.ints ?? []).map(int64ToNumber);
    case T.STRINGS:
      return (a.strings ?? []).map(utf8);
    case T.TENSORS:
      return (a.tensors ?? []).map(tensorSummary);
    case T.GRAPHS:
      return (a.graphs ?? []).map(graphSummary);
    case T.TYPE_PROTO:
      return typeSummary(a.tp);
    case T.SPARSE_TENSOR:
      return JSON.stringify(onnx.SparseTensorProto.toObject(onnx.SparseTensorProto.fromObject(a.sparseTensor ?? {})));
    default:
      return { type: a.type, ref: a.refAttrName };
  }
}

interface GraphSummary {
  name: string;
  nodes: unknown[];
  initializers: Record<string, string>;
  inputs: unknown[];
  outputs: string[];
  outputTypes: Record<string, unknown>;
  /** Types of node outputs named in value_info or in the outputs. */
  types: Record<string, unknown>;
}

function graphSummary(g: IGraphProto): GraphSummary {
  const nodes = (g.node ?? []).map((n) => ({
    name: n.name ?? "",
    op: `${n.domain ?? ""}:${n.opType}`,
    input: n.input ?? [],
    output: n.output ?? [],
    doc: n.docString ?? "",
    attributes: (n.attribute ?? []).map((a) => [a.name, attributeSummary(a)]),
  }));
  const initializers: Record<string, string> = {};
  for (const t of g.initializer ?? []) initializers[t.name ?? ""] = tensorSummary(t);
  const nodeOutputs = new Set((g.node ?? []).flatMap((n) => n.output ?? []));
  const types: Record<string, unknown> = {};
  const outputTypes: Record<string, unknown> = {};
  for (const vi of g.output ?? []) if (vi.type) outputTypes[vi.name ?? ""] = typeSummary(vi.type);
  for (const vi of [...(g.valueInfo ?? []), ...(g.output ?? [])]) {
    if (nodeOutputs.has(vi.name ?? "") && vi.type) types[vi.name ?? ""] = typeSummary(vi.type);
  }
  return {
    name: g.name ?? "",
    nodes,
    initializers,
    inputs: (g.input ?? []).map((vi) => [vi.name, typeSummary(vi.type)]),
    outputs: (g.output ?? []).map((vi) => vi.name ?? ""),
    outputTypes,
    types,
  };
}

function modelSummary(m: ModelProto): unknown {
  return {
    irVersion: int64ToNumber(m.irVersion),
    opsets: (m.opsetImport ?? []).map((o) => [o.domain === "ai.onnx" ? "" : o.domain ?? "", int64ToNumber(o.version)]),
    producer: [m.producerName ?? "", m.producerVersion ?? "", m.domain ?? "", int64ToNumber(m.modelVersion)],
    doc: m.docString ?? "",
    metadata: (m.metadataProps ?? []).map((p) => [p.key, p.value]),
    functions: (m.functions ?? []).map((f) =>
      JSON.stringify(onnx.FunctionProto.toObject(onnx.FunctionProto.fromObject(f)))
    ),
    graph: graphSummary(m.graph ?? {}),
  };
}

/** Differences between the original and re-exported summaries; types only where the original has them. */
function compareSummaries(original: unknown, exported: unknown, path: string, out: string[]): void {
  if (out.length > 5) return;
  if (typeof original !== "object" || original === null || typeof exported !== "object" || exported === null) {
    const same = Number.isNaN(original) ? Number.isNaN(exported) : original === exported;
    if (!same) out.push(`${path}: ${JSON.stringify(original)} became ${JSON.stringify(exported)}`);
    return;
  }
  const a = original as Record<string, unknown>;
  const b = exported as Record<string, unknown>;
  if (Array.isArray(a) !== Array.isArray(b) || (Array.isArray(a) && a.length !== (b as unknown as unknown[]).length)) {
    out.push(`${path}: ${JSON.stringify(a).slice(0, 200)} became ${JSON.stringify(b).slice(0, 200)}`);
    return;
  }
  for (const key of Object.keys(a)) compareSummaries(a[key], b[key], `${path}.${key}`, out);
  // Re-exports may add types the original lacked (from value_info), never drop or change them.
  const extraAllowed = path.endsWith(".types") || path.endsWith(".outputTypes");
  if (!extraAllowed && Object.keys(b).length !== Object.keys(a).length) {
    out.push(`${path}: keys ${Object.keys(a)} became ${Object.keys(b)}`);
  }
}

Deno.test({
  name: "importOnnx/exportOnnx round-trip every backend model: idempotent bytes, same structure",
  ignore: !haveData,
  fn() {
    const { trips, failures } = roundTrips();
    const total = listBackendCases().length;
    let idempotent = 0;
    let sameStructure = 0;
    const problems = [...failures];
    for (const { c, original, exported } of trips) {
      const again = exportOnnx(importOnnx(exported, { keepWeightOps: true }));
      if (again.byteLength === exported.byteLength && again.every((b, i) => b === exported[i])) idempotent++;
      else problems.push(`${c.suite}/${c.name}: re-export of the re-import differs from the first export`);
      const diffs: string[] = [];
      compareSummaries(
        modelSummary(onnx.ModelProto.decode(original)),
        modelSummary(onnx.ModelProto.decode(exported)),
        "model",
        diffs,
      );
      if (diffs.length === 0) sameStructure++;
      else problems.push(`${c.suite}/${c.name}: ${diffs.join("; ")}`);
    }
    console.log(
      `imported ${trips.length}/${total}, exported ${trips.length}, idempotent ${idempotent}, ` +
        `same structure ${sameStructure}`,
    );
    assert.deepEqual(problems, []);
    assert.equal(total, 1072, "the ONNX 1.12 backend data has 1072 cases in 4 suites");
    assert.equal(idempotent, total);
    assert.equal(sameStructure, total);
  },
});

// ---------------------------------------------------------------------------
// onnxruntime on originals and re-exports.

// onnxruntime-node 1.30's native binding cannot read a Float16Array (Deno has one: "not enough space:
// expected 24, got 0"), so let onnxruntime-common's one-time typed-array check pick Uint16Array for float16.
const float16Array = Object.getOwnPropertyDescriptor(globalThis, "Float16Array");
if (float16Array !== undefined) {
  delete (globalThis as Record<string, unknown>).Float16Array;
  new ort.Tensor("float32", new Float32Array(1), [1]);
  Object.defineProperty(globalThis, "Float16Array", float16Array);
}

const DTYPE_OF_ORT = new Map(Object.entries(ORT_TYPES).map(([d, o]) => [o, d as DType]));

function toOrt(t: Tensor): ort.Tensor {
  const type = ORT_TYPES[t.dtype];
  if (type === undefined) throw new Error(`onnxruntime-node has no ${t.dtype} tensors`);
  return new ort.Tensor(type, t.data as ort.Tensor.DataType, [...t.shape]);
}

/** numpy.testing.assert_allclose as the ONNX backend tests use it (NaNs equal), with rtol 1e-3 and atol 1e-5. */
function mismatch(expected: Tensor, actual: ort.Tensor): string | null {
  const dtype = DTYPE_OF_ORT.get(actual.type);
  if (dtype !== expected.dtype) return `type ${actual.type}, expected ${expected.dtype}`;
  if (actual.dims.join(",") !== expected.shape.join(",")) return `shape [${actual.dims}], expected [${expected.shape}]`;
  const got: Tensor = { dtype, shape: [...actual.dims], data: actual.data as Tensor["data"] };
  if (dtype === "string" || dtype === "i64" || dtype === "u64") {
    for (let i = 0; i < expected.data.length; i++) {
      if (expected.data[i] !== got.data[i]) return `element ${i}: ${got.data[i]}, expected ${expected.data[i]}`;
    }
    return null;
  }
  const a = toFloat64(got);
  const b = toFloat64(expected);
  for (let i = 0; i < b.length; i++) {
    if (Number.isNaN(a[i]) && Number.isNaN(b[i])) continue;
    if (a[i] === b[i]) continue;
    if (!(Math.abs(a[i] - b[i]) <= 1e-5 + 1e-3 * Math.abs(b[i]))) return `element ${i}: ${a[i]}, expected ${b[i]}`;
  }
  return null;
}

type Outcome = { ok: true } | { ok: false; why: string };

async function runCase(model: Uint8Array, sets: ReturnType<typeof loadDataSets>): Promise<Outcome> {
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(model, { logSeverityLevel: 4 });
  } catch (e) {
    return { ok: false, why: `session: ${String(e).split("\n")[0]}` };
  }
  try {
    for (const set of sets) {
      const feeds: Record<string, ort.Tensor> = {};
      session.inputNames.forEach((name, k) => {
        if (set.inputs[k] !== undefined) feeds[name] = toOrt(set.inputs[k]);
      });
      const results = await session.run(feeds);
      for (let k = 0; k < set.outputs.length; k++) {
        const why = mismatch(set.outputs[k], results[session.outputNames[k]]);
        if (why !== null) return { ok: false, why: `output ${k}: ${why}` };
      }
    }
    return { ok: true };
  } catch (e) {
    return { ok: false, why: String(e).split("\n")[0] };
  } finally {
    await session.release();
  }
}

Deno.test({
  name: "onnxruntime passes every re-exported backend model whose original it passes",
  ignore: !haveData,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const { trips } = roundTrips();
    let passOriginal = 0;
    let passExport = 0;
    const regressions: string[] = [];
    for (const { c, original, exported } of trips) {
      let sets;
      try {
        sets = loadDataSets(c.dir);
      } catch {
        continue; // sequence/optional data: onnxruntime-node cannot feed it either
      }
      if ((await runCase(original, sets)).ok === false) continue;
      passOriginal++;
      const again = await runCase(exported, sets);
      if (again.ok) passExport++;
      else regressions.push(`${c.suite}/${c.name}: ${again.why}`);
    }
    console.log(
      `imported ${trips.length}/${listBackendCases().length}, exported ${trips.length}, ` +
        `ORT passes original ${passOriginal}, ORT passes re-export ${passExport}`,
    );
    assert.deepEqual(regressions, []);
    assert.equal(passExport, passOriginal);
    // Guards against a vacuous pass (e.g. every session failing to start).
    assert.ok(passOriginal > 900, `only ${passOriginal} originals pass onnxruntime`);
  },
});

// ---------------------------------------------------------------------------
// onnx.checker on re-exports.

const CHECKER = `
import json, sys, onnx
res = []
for orig, new in json.load(sys.stdin):
    r = []
    for p in (orig, new):
        try:
            onnx.checker.check_model(onnx.load(p), full_check=True)
            r.append(None)
        except Exception as e:
            r.append(str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
    res.append(r)
print(json.dumps(res))
`;

function havePythonOnnx(): boolean {
  try {
    return new Deno.Command(PYTHON, { args: ["-c", "import onnx"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "onnx.checker accepts every re-exported backend model whose original it accepts",
  ignore: !haveData,
  async fn() {
    if (!havePythonOnnx()) {
      console.warn(`skipped: ${PYTHON} cannot import onnx: install the Debian package python3-onnx`);
      return;
    }
    const { trips } = roundTrips();
    const dir = Deno.makeTempDirSync({ prefix: "onnx_checker_" });
    let results: [string | null, string | null][];
    const pairs = trips.map(({ c, exported }, i) => {
      const path = join(dir, `${i}.onnx`);
      Deno.writeFileSync(path, exported);
      return [join(c.dir, "model.onnx"), path];
    });
    try {
      const child = new Deno.Command(PYTHON, { args: ["-c", CHECKER], stdin: "piped", stdout: "piped" }).spawn();
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(JSON.stringify(pairs)));
      await writer.close();
      const out = await child.output();
      assert.ok(out.success, "the checker script failed");
      results = JSON.parse(new TextDecoder().decode(out.stdout));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
    let passOriginal = 0;
    let passExport = 0;
    const regressions: string[] = [];
    results.forEach(([original, exported], i) => {
      if (original !== null) return;
      passOriginal++;
      if (exported === null) passExport++;
      else regressions.push(`${trips[i].c.suite}/${trips[i].c.name}: ${exported}`);
    });
    console.log(`onnx.checker passes original ${passOriginal}/${trips.length}, re-export ${passExport}`);
    assert.deepEqual(regressions, []);
    assert.ok(passOriginal > 900, `only ${passOriginal} originals pass onnx.checker`);
  },
});

// ---------------------------------------------------------------------------
// External data.

function bigModel(): Module {
  const g = new Graph("big");
  const x = g.addInput(new Value("x", tensorType("f32", [1, 1000])));
  const w1 = new Float32Array(1000 * 500).map((_, i) => Math.sin(i));
  const w2 = new Float32Array(500 * 10).map((_, i) => Math.cos(i));
  const b = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const c1 = g.addConstant("w1", { dtype: "f32", shape: [1000, 500], data: w1 }, tensorType("f32", [1000, 500]));
  const c2 = g.addConstant("w2", { dtype: "f32", shape: [500, 10], data: w2 }, tensorType("f32", [500, 10]));
  const cb = g.addConstant("b", { dtype: "f32", shape: [10], data: b }, tensorType("f32", [10]));
  const h = g.addOp(new Op({ name: "mm1", type: "MatMul", operands: [x, c1], results: [new Value("h")] }));
  const y = g.addOp(
    new Op({ name: "gemm2", type: "Gemm", operands: [h.result, c2, cb], results: [new Value("y")] }),
  );
  y.result.type = tensorType("f32", [1, 10]);
  g.outputs.push(y.result);
  return new Module(g, [["", 13]], 8);
}

Deno.test("exportOnnxFiles/saveOnnx write external data that importOnnxFile reads back equal", async () => {
  const module = bigModel();
  const files = exportOnnxFiles(module, { externalData: { location: "weights.bin", threshold: 1024 } });
  assert.deepEqual([...files.keys()], ["model.onnx", "weights.bin"]);
  // w1 (2 MB) and w2 (20 kB) go out, the 40-byte bias stays inside; offsets are 64-byte aligned.
  assert.equal(files.get("weights.bin")!.byteLength, 2_000_000 + 20_000);
  assert.ok(files.get("model.onnx")!.byteLength < 2000);

  const dir = Deno.makeTempDirSync({ prefix: "onnx_external_" });
  try {
    saveOnnx(module, join(dir, "net.onnx"), { externalData: { location: "net.onnx.data" } });
    const back = importOnnxFile(join(dir, "net.onnx"));
    for (const name of ["w1", "w2", "b"]) {
      const a = module.graph.constants.find((v) => v.name === name)!.constant!;
      const b = back.graph.constants.find((v) => v.name === name)!.constant!;
      assert.deepEqual(b.shape, a.shape);
      assert.deepEqual(tensorBytes(b), tensorBytes(a), name);
    }
    // Each tensor reads its own range of the side file, once: w1's storage is those bytes, not the whole file.
    const w1 = back.graph.constants.find((v) => v.name === "w1")!.constant!.data as Float32Array;
    assert.equal(w1.buffer.byteLength, 2_000_000);
    // onnxruntime loads the pair from disk and computes the same as with inline weights.
    const feeds = { x: new ort.Tensor("float32", new Float32Array(1000).fill(0.5), [1, 1000]) };
    const fromDisk = await ort.InferenceSession.create(join(dir, "net.onnx"), { logSeverityLevel: 4 });
    const inline = await ort.InferenceSession.create(exportOnnx(module), { logSeverityLevel: 4 });
    const a = (await fromDisk.run(feeds)).y.data as Float32Array;
    const b = (await inline.run(feeds)).y.data as Float32Array;
    assert.deepEqual([...a], [...b]);
    await fromDisk.release();
    await inline.release();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** A one-initializer model whose tensor `w` lives at external `location`. */
function modelWithExternal(location: string): Uint8Array {
  return onnx.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: "", version: 13 }],
    graph: {
      name: "g",
      initializer: [{
        name: "w",
        dataType: 1,
        dims: [2],
        dataLocation: 1,
        externalData: [{ key: "location", value: location }],
      }],
      node: [{ opType: "Identity", input: ["w"], output: ["y"] }],
      output: [{ name: "y" }],
    },
  }).finish();
}

Deno.test("importOnnx refuses external data paths outside the model folder, naming tensor and path", () => {
  const dir = Deno.makeTempDirSync({ prefix: "onnx_evil_" });
  try {
    Deno.writeFileSync(join(dir, "ok.bin"), new Uint8Array(new Float32Array([1, 2]).buffer));
    assert.deepEqual([...importOnnx(modelWithExternal("ok.bin"), { baseDir: dir }).graph.constants[0].constant!.data], [
      1,
      2,
    ]);
    assert.throws(
      () => importOnnx(modelWithExternal("../evil.bin"), { baseDir: dir }),
      {
        message:
          'Cannot import ONNX model: tensor "w": external data location "../evil.bin" points outside the model folder',
      },
    );
    assert.throws(
      () => importOnnx(modelWithExternal("sub/../../evil.bin"), { baseDir: dir }),
      /tensor "w": external data location "sub\/\.\.\/\.\.\/evil\.bin" points outside the model folder/,
    );
    assert.throws(
      () => importOnnx(modelWithExternal("/etc/passwd"), { baseDir: dir }),
      {
        message:
          'Cannot import ONNX model: tensor "w": external data location "/etc/passwd" is an absolute path; it must be relative to the model folder',
      },
    );
    Deno.symlinkSync("/etc/hostname", join(dir, "link.bin"));
    assert.throws(
      () => importOnnx(modelWithExternal("link.bin"), { baseDir: dir }),
      {
        message: `Cannot import ONNX model: tensor "w": cannot read external data "${dir}/link.bin": ` +
          'it resolves to "/etc/hostname", outside the model folder',
      },
    );
    assert.throws(
      () => importOnnx(modelWithExternal("missing.bin"), { baseDir: dir }),
      /^Error: Cannot import ONNX model: tensor "w": cannot read external data ".*missing\.bin": /,
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// Import semantics on hand-built models.

function encodeModel(graph: IGraphProto, irVersion = 8): Uint8Array {
  return onnx.ModelProto.encode({ irVersion, opsetImport: [{ domain: "", version: 13 }], graph }).finish();
}

const f32x4 = { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 4 }] } } };

Deno.test("importOnnx links subgraph ops to values of the enclosing graph (MLIR-style capture)", () => {
  const bytes = encodeModel({
    name: "g",
    input: [{ name: "c", type: { tensorType: { elemType: 9, shape: { dim: [] } } } }, { name: "x", type: f32x4 }],
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
            node: [{ name: "neg", opType: "Neg", input: ["x"], output: ["t"] }],
            output: [{ name: "t" }],
          },
        },
        {
          name: "else_branch",
          type: onnx.AttributeProto.AttributeType.GRAPH,
          g: { name: "else", output: [{ name: "x" }] },
        },
      ],
    }],
    output: [{ name: "y", type: f32x4 }],
  });
  const m = importOnnx(bytes);
  const x = m.graph.inputs[1];
  const branch = m.graph.ops[0];
  const then = branch.attr("then_branch");
  const otherwise = branch.attr("else_branch");
  assert.ok(then?.kind === "graph" && otherwise?.kind === "graph");
  assert.equal(then.value.parentOp, branch);
  assert.equal(then.value.ops[0].operand(0), x);
  assert.deepEqual(x.uses.map((u) => u.op.name), ["neg"]);
  assert.equal(otherwise.value.outputs[0], x, "an else branch may return an outer value directly");
  assert.deepEqual(exportOnnx(importOnnx(exportOnnx(m))), exportOnnx(m));
});

Deno.test("importOnnx keeps omitted inputs as null operands and omitted outputs as unused placeholders", () => {
  const bytes = encodeModel({
    name: "g",
    input: [{ name: "x", type: f32x4 }],
    node: [
      { opType: "Dropout", input: ["x", "", ""], output: ["y", ""] },
      { opType: "Dropout", input: ["y"], output: ["z", ""] },
    ],
    output: [{ name: "z" }],
  });
  const m = importOnnx(bytes);
  const [first, second] = m.graph.ops;
  assert.deepEqual(first.operands.map((v) => v?.name ?? null), ["x", null, null]);
  assert.equal(first.results.length, 2);
  assert.equal(first.results[1].name, "Dropout_0.unused1");
  assert.deepEqual(first.extra, { generatedName: "Dropout_0", omittedResults: [1] });
  assert.equal(second.name, "Dropout_1");
  const again = onnx.ModelProto.decode(exportOnnx(m)).graph!.node!;
  assert.deepEqual(again.map((n) => [n.name, n.input, n.output]), [
    ["", ["x", "", ""], ["y", ""]],
    ["", ["y"], ["z", ""]],
  ]);
});

Deno.test("importOnnx models IR 3 initializers listed as inputs as inputs with default values", () => {
  const w = { name: "w", dataType: 1, dims: [4], floatData: [1, 2, 3, 4] };
  const k = { name: "k", dataType: 7, dims: [1], int64Data: [3] };
  const bytes = encodeModel({
    name: "g",
    input: [{ name: "x", type: f32x4 }, { name: "w", type: f32x4 }],
    initializer: [w, k],
    node: [{ name: "add", opType: "Add", input: ["x", "w"], output: ["y"] }],
    output: [{ name: "y" }, { name: "k" }],
  }, 3);
  const m = importOnnx(bytes);
  assert.deepEqual(m.graph.inputs.map((v) => [v.name, v.constant === null]), [["x", true], ["w", false]]);
  assert.deepEqual([...m.graph.inputs[1].constant!.data], [1, 2, 3, 4]);
  assert.deepEqual(m.graph.constants.map((v) => v.name), ["k"]);
  assert.deepEqual([...m.graph.constants[0].constant!.data], [3n]);
  const back = onnx.ModelProto.decode(exportOnnx(m));
  // `k` is an initializer that is not an input, which IR 3 forbids: the export says IR 4, which allows it.
  assert.equal(int64ToNumber(back.irVersion), 4);
  assert.deepEqual(back.graph!.input!.map((vi) => vi.name), ["x", "w"]);
  assert.deepEqual(back.graph!.initializer!.map((t) => t.name), ["w", "k"]);
});

Deno.test("importOnnx keeps model metadata, opsets, value_info types and symbolic dims", () => {
  const bytes = onnx.ModelProto.encode({
    irVersion: 7,
    producerName: "p",
    producerVersion: "1.2",
    domain: "org.example",
    modelVersion: 5,
    docString: "doc",
    metadataProps: [{ key: "author", value: "me" }],
    opsetImport: [{ domain: "ai.onnx", version: 11 }, { domain: "com.microsoft", version: 1 }],
    graph: {
      name: "g",
      input: [{ name: "x", type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: "N" }, {}] } } } }],
      node: [
        { name: "a", opType: "Relu", input: ["x"], output: ["t"] },
        { name: "b", opType: "Neg", input: ["t"], output: ["y"] },
      ],
      valueInfo: [{
        name: "t",
        type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: "N" }, { dimValue: 3 }] } } },
      }],
      output: [{ name: "y", type: { tensorType: { elemType: 1 } } }],
    },
  }).finish();
  const m = importOnnx(bytes);
  assert.deepEqual([...m.opsets], [["", 11], ["com.microsoft", 1]]);
  assert.deepEqual(
    [m.producerName, m.producerVersion, m.domain, m.modelVersion, m.docString],
    ["p", "1.2", "org.example", 5, "doc"],
  );
  assert.deepEqual([...m.metadata], [["author", "me"]]);
  assert.deepEqual(m.graph.inputs[0].type, tensorType("f32", ["N", "?"]));
  assert.deepEqual(m.graph.ops[0].result.type, tensorType("f32", ["N", 3]));
  assert.deepEqual(m.graph.outputs[0].type, tensorType("f32", null));
  const back = onnx.ModelProto.decode(exportOnnx(m));
  assert.deepEqual(back.graph!.valueInfo!.map((vi) => vi.name), ["t"]);
  assert.equal(back.graph!.output![0].type!.tensorType!.shape, null, "unranked stays without shape");
});

Deno.test("importOnnx keeps raw_data weights as views over the model bytes when aligned", () => {
  const weights = new Float32Array(1024).map((_, i) => i);
  const m = new Module(new Graph("g"), [["", 13]], 8);
  const w = m.graph.addConstant("w", { dtype: "f32", shape: [1024], data: weights }, tensorType("f32", [1024]));
  m.graph.outputs.push(w);
  const bytes = exportOnnx(m);
  const back = importOnnx(bytes).graph.constants[0].constant!.data as Float32Array;
  assert.deepEqual(back, weights);
  // Shift the model by 0..3 bytes: exactly the aligned placements give a view.
  let views = 0;
  for (let shift = 0; shift < 4; shift++) {
    const padded = new Uint8Array(bytes.byteLength + shift);
    padded.set(bytes, shift);
    const data = importOnnx(padded.subarray(shift)).graph.constants[0].constant!.data as Float32Array;
    assert.deepEqual(data, weights);
    if (data.buffer === padded.buffer) views++;
  }
  assert.equal(views, 1);
});

Deno.test("tensorFromProto decodes every typed field per onnx.proto; tensorToProto round-trips via raw_data", () => {
  const cases: [ITensorProto, unknown[]][] = [
    [{ dataType: 1, dims: [2], floatData: [1.5, -2] }, [1.5, -2]],
    [{ dataType: 11, dims: [2], doubleData: [1e300, -0.5] }, [1e300, -0.5]],
    [{ dataType: 10, dims: [2], int32Data: [0x3c00, 0xc000] }, [0x3c00, 0xc000]],
    [{ dataType: 16, dims: [1], int32Data: [0x3f80] }, [0x3f80]],
    [{ dataType: 3, dims: [2], int32Data: [-128, 127] }, [-128, 127]],
    [{ dataType: 2, dims: [2], int32Data: [0, 255] }, [0, 255]],
    [{ dataType: 5, dims: [1], int32Data: [-300] }, [-300]],
    [{ dataType: 4, dims: [1], int32Data: [65535] }, [65535]],
    [{ dataType: 6, dims: [1], int32Data: [-7] }, [-7]],
    [{ dataType: 9, dims: [3], int32Data: [1, 0, 1] }, [1, 0, 1]],
    [{ dataType: 7, dims: [2], int64Data: [-5, 2 ** 40] }, [-5n, 2n ** 40n]],
    [{ dataType: 12, dims: [1], uint64Data: [4000000000] }, [4000000000]],
    [{ dataType: 13, dims: [1], uint64Data: [2 ** 50] }, [2n ** 50n]],
    [{ dataType: 8, dims: [2], stringData: [new TextEncoder().encode("héllo"), new Uint8Array()] }, ["héllo", ""]],
    [{ dataType: 14, dims: [1], floatData: [1, 2] }, [1, 2]],
    [{ dataType: 1, dims: [0] }, []],
  ];
  for (const [proto, expected] of cases) {
    const t = tensorFromProto(proto);
    assert.deepEqual([...t.data], expected, `dtype ${proto.dataType}`);
    const again = tensorFromProto(onnx.TensorProto.decode(onnx.TensorProto.encode(tensorToProto("t", t)).finish()));
    assert.deepEqual(again, { ...t, data: again.data }, `dtype ${proto.dataType}`);
    assert.deepEqual([...again.data], expected, `dtype ${proto.dataType} after raw_data round trip`);
  }
});

Deno.test("importOnnx densifies sparse initializers into constants; exportOnnx writes the sparse proto back", async () => {
  const bytes = encodeModel({
    name: "g",
    sparseInitializer: [{
      values: { name: "s", dataType: 1, dims: [2], floatData: [5, 7] },
      indices: { dataType: 7, dims: [2], int64Data: [1, 3] },
      dims: [4],
    }],
    node: [{ name: "id", opType: "Identity", input: ["s"], output: ["y"] }],
    output: [{ name: "y", type: f32x4 }],
  });
  const m = importOnnx(bytes);
  assert.deepEqual([...m.graph.constants[0].constant!.data], [0, 5, 0, 7]);
  const exported = exportOnnx(m);
  const graph = onnx.ModelProto.decode(exported).graph!;
  assert.deepEqual(graph.initializer, []);
  assert.equal(graph.sparseInitializer!.length, 1);
  const session = await ort.InferenceSession.create(exported, { logSeverityLevel: 4 });
  assert.deepEqual([...(await session.run({})).y.data as Float32Array], [0, 5, 0, 7]);
  await session.release();
});
