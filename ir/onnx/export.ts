/**
 * IR {@linkcode Module} to ONNX `ModelProto` bytes. Deterministic (the same
 * module gives the same bytes), initializers as little-endian `raw_data` or as
 * external data in a side file, subgraphs written recursively with captured
 * outer values referenced by name.
 * @module
 */
import { basename, dirname, join } from "node:path";
import type { Attribute } from "../attributes.ts";
import type { Graph, Op, Value } from "../graph.ts";
import type { Module } from "../module.ts";
import type { Tensor } from "../tensor.ts";
import { elementTypeToString, isTensorType, ONNX_DTYPE_CODES, type Type } from "../types.ts";
import {
  type IAttributeProto,
  type IGraphProto,
  type IModelProto,
  type INodeProto,
  type ISparseTensorProto,
  type ITypeProto,
  type IValueInfoProto,
  onnx,
  type TensorProto,
  type UnknownField,
  utf8Bytes,
  withUnknownFields,
} from "./proto.ts";
import { resolveExternalPath, tensorToProto } from "./tensor_proto.ts";

/** Where large initializers go when written as ONNX external data. */
export interface ExternalDataOptions {
  /** Side file name, relative to the model file (e.g. `model.onnx.data`). */
  location: string;
  /** Initializers of at least this many bytes go to the side file (default 1024). */
  threshold?: number;
  /** Offsets in the side file are multiples of this (default 64), so readers get aligned views. */
  alignment?: number;
}

/** Options of {@linkcode exportOnnxFiles} and {@linkcode saveOnnx}. */
export interface ExportOptions {
  /** File name of the model in the returned map (default `model.onnx`; {@linkcode saveOnnx} uses its path's). */
  modelName?: string;
  /** Write large initializers to a side file instead of inside the model. */
  externalData?: ExternalDataOptions;
}

const PREFIX = "Cannot export ONNX model: ";
const AttrType = onnx.AttributeProto.AttributeType;
const EXTERNAL = 1;

/** Collects initializers bound for the external data file and their offsets. */
class ExternalWriter {
  readonly chunks: { offset: number; bytes: Uint8Array }[] = [];
  size = 0;
  constructor(readonly options: Required<ExternalDataOptions>) {}

  /** Move `proto`'s raw data to the side file when it is large enough. */
  place(proto: TensorProto, tensor: Tensor): void {
    const bytes = proto.rawData;
    if (Array.isArray(tensor.data) || bytes.byteLength < this.options.threshold) return;
    const align = this.options.alignment;
    const offset = Math.ceil(this.size / align) * align;
    this.chunks.push({ offset, bytes });
    this.size = offset + bytes.byteLength;
    delete (proto as { rawData?: Uint8Array }).rawData;
    proto.dataLocation = EXTERNAL;
    proto.externalData = [
      { key: "location", value: this.options.location },
      { key: "offset", value: String(offset) },
      { key: "length", value: String(bytes.byteLength) },
    ];
  }

  /** The side file's bytes. */
  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    for (const { offset, bytes } of this.chunks) out.set(bytes, offset);
    return out;
  }
}

/** An ONNX `TypeProto` for an IR type; throws for element types ONNX cannot express. */
function typeToProto(type: Type, what: string): ITypeProto {
  if (!isTensorType(type)) {
    if (type.proto === undefined) {
      throw new Error(`${PREFIX}${what} has opaque type ${type.description} with no ONNX form`);
    }
    return type.proto as ITypeProto;
  }
  if (typeof type.elem !== "string") {
    throw new Error(
      `${PREFIX}${what} has element type ${
        elementTypeToString(type.elem)
      }, which ONNX cannot represent; lower it first`,
    );
  }
  const tensorType: NonNullable<ITypeProto["tensorType"]> = { elemType: ONNX_DTYPE_CODES[type.elem] };
  if (type.shape !== null) {
    tensorType.shape = {
      dim: type.shape.map((d) => typeof d === "number" ? { dimValue: d } : d === "?" ? {} : { dimParam: d }),
    };
  }
  return { tensorType };
}

/** Fields of the ONNX message a value came from that the schema does not know (kept by the importer). */
function valueUnknownFields(graph: Graph, key: string, name: string): readonly UnknownField[] | undefined {
  return (graph.extra[key] as Map<string, readonly UnknownField[]> | undefined)?.get(name);
}

function valueInfo(v: Value, graph: Graph): IValueInfoProto {
  const info: IValueInfoProto = { name: v.name };
  if (v.type !== null) info.type = typeToProto(v.type, `value "${v.name}"`);
  if (v.docString !== "") info.docString = v.docString;
  return withUnknownFields(info, valueUnknownFields(graph, "valueInfoUnknownFields", v.name));
}

/** Result indices the importer created for omitted ONNX outputs, still unused (so written as `""`). */
function omittedResults(op: Op): Set<number> {
  const omitted = op.extra.omittedResults as number[] | undefined;
  if (omitted === undefined) return new Set();
  return new Set(omitted.filter((k) => op.results[k] !== undefined && op.results[k].isDead));
}

class Exporter {
  constructor(readonly external: ExternalWriter | null) {}

  initializer(name: string, t: Tensor, graph: Graph): TensorProto {
    const proto = tensorToProto(name, t);
    this.external?.place(proto, t);
    return withUnknownFields(proto, valueUnknownFields(graph, "initializerUnknownFields", name));
  }

  graph(graph: Graph): IGraphProto {
    const proto: IGraphProto = { name: graph.name };
    const sparse = (graph.extra.sparseInitializers ?? []) as ISparseTensorProto[];
    const sparseNames = new Set(sparse.map((s) => s.values?.name ?? ""));
    const nodes: INodeProto[] = [];
    const valueInfos: IValueInfoProto[] = [];
    const outputs = new Set(graph.outputs);
    for (const op of graph.ops) {
      const omitted = omittedResults(op);
      nodes.push(this.node(op, omitted));
      op.results.forEach((r, k) => {
        if (r.type !== null && !omitted.has(k) && !outputs.has(r)) valueInfos.push(valueInfo(r, graph));
      });
    }
    proto.node = nodes;
    const initializers: TensorProto[] = [];
    for (const v of graph.inputs) {
      if (v.constant !== null) initializers.push(this.initializer(v.name, v.constant, graph));
    }
    for (const v of graph.constants) {
      if (!sparseNames.has(v.name)) initializers.push(this.initializer(v.name, v.constant!, graph));
    }
    proto.initializer = initializers;
    if (graph.docString !== "") proto.docString = graph.docString;
    proto.input = graph.inputs.map((v) => valueInfo(v, graph));
    proto.output = graph.outputs.map((v) => valueInfo(v, graph));
    if (valueInfos.length > 0) proto.valueInfo = valueInfos;
    if (graph.extra.quantizationAnnotation !== undefined) {
      proto.quantizationAnnotation = graph.extra.quantizationAnnotation as IGraphProto["quantizationAnnotation"];
    }
    if (sparse.length > 0) proto.sparseInitializer = sparse;
    return withUnknownFields(proto, graph.extra.unknownFields as UnknownField[] | undefined);
  }

  node(op: Op, omitted: Set<number>): INodeProto {
    const node: INodeProto = {
      input: op.operands.map((v) => v === null ? "" : v.name),
      output: op.results.map((v, k) => omitted.has(k) ? "" : v.name),
    };
    // An importer-generated name is written back as the original empty name.
    if (op.name !== "" && op.name !== op.extra.generatedName) node.name = op.name;
    node.opType = op.type;
    if (op.attributes.size > 0) {
      node.attribute = [...op.attributes].map(([name, a]) => this.attribute(name, a, op));
    }
    if (op.docString !== "") node.docString = op.docString;
    if (op.domain !== "") node.domain = op.domain;
    return withUnknownFields(node, op.extra.unknownFields as UnknownField[] | undefined);
  }

  attribute(name: string, a: Attribute, op: Op): IAttributeProto {
    const what = `op "${op.name}" (${op.type}) attribute "${name}"`;
    switch (a.kind) {
      case "int":
        return { name, type: AttrType.INT, i: a.value };
      case "float":
        return { name, type: AttrType.FLOAT, f: a.value };
      case "string":
        return { name, type: AttrType.STRING, s: utf8Bytes(a.value) };
      case "tensor":
        return { name, type: AttrType.TENSOR, t: tensorToProto("", a.value) };
      case "graph":
        return { name, type: AttrType.GRAPH, g: this.graph(a.value) };
      case "type":
        return { name, type: AttrType.TYPE_PROTO, tp: typeToProto(a.value, what) };
      case "ints":
        return { name, type: AttrType.INTS, ints: [...a.value] };
      case "floats":
        return { name, type: AttrType.FLOATS, floats: [...a.value] };
      case "strings":
        return { name, type: AttrType.STRINGS, strings: a.value.map(utf8Bytes) };
      case "tensors":
        return { name, type: AttrType.TENSORS, tensors: a.value.map((t) => tensorToProto("", t)) };
      case "graphs":
        return { name, type: AttrType.GRAPHS, graphs: a.value.map((g) => this.graph(g)) };
      case "types":
        return { name, type: AttrType.TYPE_PROTOS, typeProtos: a.value.map((t) => typeToProto(t, what)) };
      case "ref":
        return { name, refAttrName: a.value, type: attrTypeCode(a.refKind, what) };
      case "opaque":
        if (a.refKind === "SPARSE_TENSOR") {
          return { name, type: AttrType.SPARSE_TENSOR, sparseTensor: a.value as ISparseTensorProto };
        }
        if (a.refKind === "SPARSE_TENSORS") {
          return { name, type: AttrType.SPARSE_TENSORS, sparseTensors: a.value as ISparseTensorProto[] };
        }
        throw new Error(`${PREFIX}${what} is an opaque ${a.refKind} with no ONNX form`);
    }
  }
}

function attrTypeCode(kind: string, what: string): number {
  const code = (AttrType as unknown as Record<string, number>)[kind];
  if (typeof code !== "number") throw new Error(`${PREFIX}${what} refers to unknown attribute type ${kind}`);
  return code;
}

function modelProto(module: Module, exporter: Exporter): IModelProto {
  // Before IR 4 every initializer had to be a graph input too: weights that are plain constants (from Constant ops
  // of an IR 3 model, or added by passes) need IR 4, which changed nothing else.
  const irVersion = module.irVersion < 4 && module.graph.constants.length > 0 ? 4 : module.irVersion;
  const model: IModelProto = { irVersion };
  model.opsetImport = [...module.opsets].map(([domain, version]) => ({ domain, version }));
  if (module.producerName !== "") model.producerName = module.producerName;
  if (module.producerVersion !== "") model.producerVersion = module.producerVersion;
  if (module.domain !== "") model.domain = module.domain;
  if (module.modelVersion !== 0) model.modelVersion = module.modelVersion;
  if (module.docString !== "") model.docString = module.docString;
  model.graph = exporter.graph(module.graph);
  if (module.metadata.size > 0) {
    model.metadataProps = [...module.metadata].map(([key, value]) => ({ key, value }));
  }
  if (module.extra.trainingInfo !== undefined) {
    model.trainingInfo = module.extra.trainingInfo as IModelProto["trainingInfo"];
  }
  if (module.extra.functions !== undefined) model.functions = module.extra.functions as IModelProto["functions"];
  return withUnknownFields(model, module.extra.unknownFields as UnknownField[] | undefined);
}

function encode(model: IModelProto): Uint8Array {
  const out = onnx.ModelProto.encode(model).finish();
  // protobufjs returns a Node Buffer (possibly a pool slice); hand out a plain view of it.
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Encode a module as ONNX model bytes, every initializer inside the model as `raw_data`.
 *
 * Models over 2 GiB cannot be one protobuf; use {@linkcode exportOnnxFiles} with external data.
 *
 * @throws {Error} `Cannot export ONNX model: ...` for types ONNX cannot express
 *   (block floating point, fixed point) and opaque values without an ONNX form.
 *
 * @example Round trip through bytes
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../graph.ts";
 * import { Module } from "../module.ts";
 * import { tensorType } from "../types.ts";
 * import { exportOnnx, importOnnx } from "./mod.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", tensorType("f32", [4])));
 * const relu = g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] }));
 * g.outputs.push(relu.result);
 * const bytes = exportOnnx(new Module(g));
 * assert.equal(importOnnx(bytes).graph.ops[0].name, "r");
 * ```
 */
export function exportOnnx(module: Module): Uint8Array {
  return encode(modelProto(module, new Exporter(null)));
}

/**
 * Encode a module as files: the model and, with `externalData`, the side file
 * holding initializers of at least `threshold` bytes. Needs no file system.
 *
 * @returns File name to bytes: `modelName` (default `model.onnx`) and the external data location.
 *
 * @example Split weights into a side file
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../graph.ts";
 * import { Module } from "../module.ts";
 * import { tensorType } from "../types.ts";
 * import { exportOnnxFiles } from "./mod.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", tensorType("f32", [256])));
 * const w = g.addConstant("w", { dtype: "f32", shape: [256], data: new Float32Array(256) }, tensorType("f32", [256]));
 * const add = g.addOp(new Op({ name: "a", type: "Add", operands: [x, w], results: [new Value("y")] }));
 * g.outputs.push(add.result);
 * const files = exportOnnxFiles(new Module(g), { externalData: { location: "w.bin" } });
 * assert.deepEqual([...files.keys()], ["model.onnx", "w.bin"]);
 * assert.equal(files.get("w.bin")!.byteLength, 1024);
 * ```
 */
export function exportOnnxFiles(module: Module, options: ExportOptions = {}): Map<string, Uint8Array> {
  const modelName = options.modelName ?? "model.onnx";
  const files = new Map<string, Uint8Array>();
  if (options.externalData === undefined) {
    files.set(modelName, exportOnnx(module));
    return files;
  }
  const { location, threshold = 1024, alignment = 64 } = options.externalData;
  try {
    resolveExternalPath("", location, undefined);
  } catch (e) {
    throw new Error(PREFIX + (e as Error).message.replace("unnamed tensor: ", ""));
  }
  if (location === modelName) throw new Error(`${PREFIX}external data location "${location}" is the model file`);
  const external = new ExternalWriter({ location, threshold, alignment: Math.max(1, alignment) });
  files.set(modelName, encode(modelProto(module, new Exporter(external))));
  files.set(location, external.finish());
  return files;
}

/**
 * Write `bytes` to `path` in 64 MiB chunks: on large models this is 2-3x faster than
 * `Deno.writeFileSync`, which copies the whole buffer first. With `createNew`, fail if the file exists.
 */
export function writeFileBytes(path: string, bytes: Uint8Array, options: { createNew?: boolean } = {}): void {
  const file = Deno.openSync(
    path,
    options.createNew === true ? { write: true, createNew: true } : { write: true, create: true, truncate: true },
  );
  try {
    const chunk = 64 << 20;
    for (let offset = 0; offset < bytes.byteLength;) {
      offset += file.writeSync(bytes.subarray(offset, Math.min(bytes.byteLength, offset + chunk)));
    }
  } finally {
    file.close();
  }
}

/**
 * Write a module to `path` (and its external data file beside it, when asked).
 *
 * @throws {Error} `Cannot export ONNX model: ...` as {@linkcode exportOnnx}, or when a file cannot be written.
 */
export function saveOnnx(module: Module, path: string, options: Omit<ExportOptions, "modelName"> = {}): void {
  const dir = dirname(path);
  for (const [name, bytes] of exportOnnxFiles(module, { ...options, modelName: basename(path) })) {
    try {
      writeFileBytes(join(dir, name), bytes);
    } catch (e) {
      throw new Error(`${PREFIX}cannot write "${join(dir, name)}": ${(e as Error).message}`);
    }
  }
}
