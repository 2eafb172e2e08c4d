/**
 * ONNX `ModelProto` bytes to an IR {@linkcode Module}. Names, attributes, types
 * and metadata are kept so that `exportOnnx(importOnnx(bytes))` writes the same
 * model back, except that weights held in `Constant` ops or aliased through
 * `Identity` ops become initializers (see `ImportOptions.keepWeightOps`);
 * weights stay views over the input bytes. Subgraph (If/Loop/Scan)
 * ops use values of enclosing graphs directly, as MLIR regions do.
 *
 * Fields newer than the ONNX 1.10.2 schema are kept undecoded and written back
 * (see `proto.ts`). The model is checked as `onnx.checker` checks it where the IR
 * would otherwise carry nonsense: domains must be imported, default-domain ops and
 * their attributes must exist at the model's opset, attributes appear once,
 * If/Loop/Scan bodies have the spec's arity, sparse initializers are well formed.
 *
 * Limitations: `denotation`s, attribute doc strings and `value_info` entries
 * naming no value of their graph are dropped; unknown fields of a value's
 * `ValueInfoProto` or initializer are kept by name and lost when a pass renames it.
 * @module
 */
import { dirname } from "node:path";
import { ONNX_OPSET_KNOWN, type OnnxOpSchema, onnxOpSchema } from "./onnx_ops.ts";
import { quote } from "../quote.ts";
import { inlineWeightOps } from "../normalize.ts";
import type { Attribute } from "../attributes.ts";
import { Graph, isDefaultDomain, Op, Value } from "../graph.ts";
import { Module } from "../module.ts";
import { shapeSize, type Tensor } from "../tensor.ts";
import { dtypeFromOnnx, isTensorType, tensorType, type Type, typeToString } from "../types.ts";
import {
  decodeProblem,
  has,
  type IAttributeProto,
  type IDimension,
  type IGraphProto,
  type INodeProto,
  int64ToNumber,
  type ISparseTensorProto,
  type ITensorProto,
  type ITypeProto,
  type ModelProto,
  onnx,
  ProtoNestingError,
  type UnknownField,
  unknownFieldsOf,
  utf8,
} from "./proto.ts";
import { type OnnxFile, readOnnxFile } from "./model_file.ts";
import {
  type ByteSource,
  fileByteSource,
  folderReader,
  tensorFromProto,
  type TensorProtoOptions,
} from "./tensor_proto.ts";

/** Options of {@linkcode importOnnx}. */
export interface ImportOptions {
  /** Folder of the model file, for tensors stored as external data. */
  baseDir?: string;
  /**
   * Opens an external data file: a `Uint8Array` of its contents, or a {@linkcode ByteSource} that reads only the
   * ranges tensors ask for. By default regular files in `baseDir` are read so ({@linkcode fileByteSource}), and
   * files whose real path leaves `baseDir` are refused. Each file is opened once per import.
   */
  readFile?: (path: string) => ByteSource;
  /**
   * Keep `Constant` ops and `Identity` ops of initializers as they are; by default the main graph's become
   * initializers, so passes and the cost model see every weight ({@linkcode inlineWeightOps}).
   */
  keepWeightOps?: boolean;
  /**
   * Let the importer overwrite `bytes` so that every weight is a view over them, none a copy: a `raw_data` whose
   * offset is not a multiple of its element size is moved back over its own (decoded) field header. Afterwards
   * `bytes` are no longer a valid ONNX model; set this only when nothing else reads them (a file read just for the
   * import). Default false: `bytes` are never written, and misaligned weights are copied.
   */
  overwriteInput?: boolean;
  /**
   * `raw_data` of the main graph's initializers by position, for bytes whose own `raw_data` of those initializers
   * are empty ({@linkcode readOnnxFile}); each entry is taken out of the array (set to `undefined`) as it is used.
   */
  initializerData?: (Uint8Array | undefined)[];
}

const PREFIX = "Cannot import ONNX model: ";

/** An import failure; its message already carries {@linkcode PREFIX}. */
class ImportError extends Error {
  constructor(message: string) {
    super(PREFIX + message);
  }
}

const AttrType = onnx.AttributeProto.AttributeType;

/**
 * Keep the fields of `message` that the ONNX 1.10 schema does not know (IR 10's `metadata_props`,
 * `overload`, ...) in `extra[key]` of the IR object made from it; the exporter writes them back.
 */
function keepUnknownFields(message: object, extra: Record<string, unknown>, key = "unknownFields"): void {
  const fields = unknownFieldsOf(message);
  if (fields.length > 0) extra[key] = fields;
}

/** Unknown fields of `ValueInfoProto`s and initializer `TensorProto`s, by value name (values have no `extra`). */
function keepValueUnknownFields(message: { name?: string | null }, extra: Record<string, unknown>, key: string): void {
  const fields = unknownFieldsOf(message);
  if (fields.length === 0) return;
  const byName = (extra[key] ??= new Map()) as Map<string, readonly UnknownField[]>;
  byName.set(message.name ?? "", fields);
}

/** ONNX name of an attribute type code (`FLOAT`, `INTS`, ...). */
function attrTypeName(code: number): string {
  return (AttrType as unknown as Record<number, string>)[code] ?? `type ${code}`;
}

/** ONNX models from IR version 1/2 may leave `AttributeProto.type` unset; infer it from the field that is set. */
function inferAttrType(a: IAttributeProto): number {
  if (a.floats?.length) return AttrType.FLOATS;
  if (a.ints?.length) return AttrType.INTS;
  if (a.strings?.length) return AttrType.STRINGS;
  if (a.tensors?.length) return AttrType.TENSORS;
  if (a.graphs?.length) return AttrType.GRAPHS;
  if (has(a, "f")) return AttrType.FLOAT;
  if (has(a, "i")) return AttrType.INT;
  if (has(a, "s")) return AttrType.STRING;
  if (has(a, "t")) return AttrType.TENSOR;
  if (has(a, "g")) return AttrType.GRAPH;
  return AttrType.UNDEFINED;
}

function dtypeName(code: number): string {
  try {
    return dtypeFromOnnx(code);
  } catch {
    return `dtype${code}`;
  }
}

/** Short text of a `TypeProto` the IR does not model. */
function describeType(tp: ITypeProto | null | undefined): string {
  if (!tp) return "?";
  if (has(tp, "tensorType")) {
    const t = importType(tp);
    return t === null ? "tensor<?>" : typeToString(t);
  }
  if (has(tp, "sequenceType")) return `seq<${describeType(tp.sequenceType!.elemType)}>`;
  if (has(tp, "mapType")) {
    return `map<${dtypeName(tp.mapType!.keyType ?? 0)},${describeType(tp.mapType!.valueType)}>`;
  }
  if (has(tp, "optionalType")) return `optional<${describeType(tp.optionalType!.elemType)}>`;
  if (has(tp, "sparseTensorType")) {
    const st = tp.sparseTensorType!;
    const dims = has(st, "shape") ? (st.shape!.dim ?? []).map(dimFromProto).join(",") : "*";
    return `sparse<${dtypeName(st.elemType ?? 0)}[${dims}]>`;
  }
  return "?";
}

function dimFromProto(d: IDimension): number | string {
  // dim_value and dim_param are a oneof: when a writer set both, the later field on the wire (dim_param, field 2)
  // wins, as onnxruntime reads it. An empty dim_param names nothing: the dimension is unknown.
  if (has(d, "dimParam")) return d.dimParam === "" ? "?" : d.dimParam!;
  if (has(d, "dimValue")) return int64ToNumber(d.dimValue);
  return "?";
}

/**
 * An ONNX `TypeProto` as an IR type: tensors become {@linkcode TensorType}s, other
 * kinds an opaque type keeping the proto; null when no type is given.
 * The result is a `TensorType` for `tensor_type`.
 */
export function importType(tp: ITypeProto | null | undefined): Type | null {
  if (!tp) return null;
  if (has(tp, "tensorType")) {
    const tt = tp.tensorType!;
    const code = tt.elemType ?? 0;
    let elem;
    try {
      elem = dtypeFromOnnx(code);
    } catch {
      return { kind: "opaque", description: `tensor<${dtypeName(code)}>`, proto: tp };
    }
    const shape = has(tt, "shape") ? (tt.shape!.dim ?? []).map(dimFromProto) : null;
    return tensorType(elem, shape);
  }
  if (has(tp, "sequenceType") || has(tp, "mapType") || has(tp, "optionalType") || has(tp, "sparseTensorType")) {
    return { kind: "opaque", description: describeType(tp), proto: tp };
  }
  return null;
}

/** Lexical scope of value names: a graph's own values, then its enclosing graphs'. */
interface Scope {
  readonly values: Map<string, Value>;
  readonly parent: Scope | null;
}

function lookup(scope: Scope | null, name: string): Value | undefined {
  for (let s = scope; s !== null; s = s.parent) {
    const v = s.values.get(name);
    if (v !== undefined) return v;
  }
  return undefined;
}

/**
 * A sparse initializer as a dense tensor (the IR has no sparse constants; the proto is kept for export).
 * Checks what onnx.proto's `SparseTensorProto` asks: 1-D values, int64 indices of shape [NNZ] (linear) or
 * [NNZ, rank] (coordinates), each within the dense shape, in strictly increasing order as the ONNX checker wants.
 */
function densifySparse(sparse: ISparseTensorProto, options: TensorProtoOptions): Tensor {
  const dims = (sparse.dims ?? []).map(int64ToNumber);
  if (dims.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new Error(`bad dimensions [${dims.join(",")}]`);
  const values = tensorFromProto(sparse.values ?? {}, options);
  const indices = tensorFromProto(sparse.indices ?? { dataType: 7 }, options);
  if (Array.isArray(values.data)) throw new Error("string sparse tensors are not supported");
  if (values.shape.length !== 1) throw new Error(`values must be 1-D, found shape [${values.shape.join(",")}]`);
  if (indices.dtype !== "i64") throw new Error(`indices must be i64, found ${indices.dtype}`);
  const nnz = values.shape[0];
  const rank = dims.length;
  const linear = indices.shape.length === 1 && indices.shape[0] === nnz;
  if (!linear && !(indices.shape.length === 2 && indices.shape[0] === nnz && indices.shape[1] === rank)) {
    throw new Error(
      `indices have shape [${
        indices.shape.join(",")
      }], expected [${nnz}] or [${nnz},${rank}] for ${nnz} values of a rank-${rank} tensor`,
    );
  }
  const size = shapeSize(dims);
  const width = values.data.BYTES_PER_ELEMENT;
  let out: Uint8Array;
  try {
    out = new Uint8Array(size * width);
  } catch {
    throw new Error(`dense shape [${dims.join(",")}] needs ${size * width} bytes, more than can be allocated`);
  }
  const src = new Uint8Array(values.data.buffer, values.data.byteOffset, values.data.byteLength);
  const idx = indices.data as BigInt64Array;
  let previous = -1;
  for (let k = 0; k < nnz; k++) {
    let flat = 0;
    if (linear) flat = Number(idx[k]);
    else {
      for (let r = 0; r < rank; r++) {
        const i = Number(idx[k * rank + r]);
        if (i < 0 || i >= dims[r]) {
          throw new Error(
            `index [${[...idx.subarray(k * rank, (k + 1) * rank)].join(",")}] of value ${k} is outside the shape [${
              dims.join(",")
            }]`,
          );
        }
        flat = flat * dims[r] + i;
      }
    }
    if (flat < 0 || flat >= size) throw new Error(`index ${flat} of value ${k} is outside [0, ${size})`);
    if (flat <= previous) {
      throw new Error(`index ${flat} of value ${k} does not follow index ${previous}: indices must increase`);
    }
    previous = flat;
    out.set(src.subarray(k * width, (k + 1) * width), flat * width);
  }
  return tensorFromProto({ dataType: sparse.values?.dataType, dims, rawData: out });
}

class Importer {
  /** Every value name in the model, so generated names collide with none. */
  readonly #valueNames = new Set<string>();
  /** Every node name in the model. */
  readonly #opNames = new Set<string>();
  readonly #tensorOptions: TensorProtoOptions;
  readonly #initializerData: (Uint8Array | undefined)[] | undefined;

  /** Opset version per imported domain (`ai.onnx` as `""`). */
  readonly #opsets: ReadonlyMap<string, number>;

  constructor(model: ModelProto, opsets: ReadonlyMap<string, number>, options: ImportOptions, bytes: Uint8Array) {
    this.#opsets = opsets;
    this.#initializerData = options.initializerData;
    const cache = new Map<string, ByteSource>();
    const read = options.readFile ?? (options.baseDir === undefined ? fileByteSource : folderReader(options.baseDir));
    // Without a folder or a reader there is nothing to read from; tensorFromProto then says so.
    const readable = options.baseDir !== undefined || options.readFile !== undefined;
    this.#tensorOptions = {
      baseDir: options.baseDir,
      readFile: readable
        ? (path) => {
          let file = cache.get(path);
          if (file === undefined) cache.set(path, file = read(path));
          return file;
        }
        : undefined,
      alignWithin: options.overwriteInput === true ? bytes : undefined,
    };
    this.#collectNames(model.graph!);
  }

  #collectNames(g: IGraphProto): void {
    for (const vi of g.input ?? []) this.#valueNames.add(vi.name ?? "");
    for (const t of g.initializer ?? []) this.#valueNames.add(t.name ?? "");
    for (const n of g.node ?? []) {
      this.#opNames.add(n.name ?? "");
      for (const name of n.output ?? []) this.#valueNames.add(name);
      for (const a of n.attribute ?? []) {
        if (a.g) this.#collectNames(a.g);
        for (const sub of a.graphs ?? []) this.#collectNames(sub);
      }
    }
  }

  #fresh(names: Set<string>, base: string): string {
    let name = base;
    for (let i = 1; names.has(name); i++) name = `${base}.${i}`;
    names.add(name);
    return name;
  }

  /** Decode a tensor; `where` prefixes errors about tensors that are not initializers (which name themselves). */
  tensor(proto: ITensorProto, where?: string): Tensor {
    try {
      return tensorFromProto(proto, this.#tensorOptions);
    } catch (e) {
      throw new ImportError(where === undefined ? (e as Error).message : `${where}: ${(e as Error).message}`);
    }
  }

  importGraph(proto: IGraphProto, parentScope: Scope | null, parentOp: Op | null): Graph {
    const graph = new Graph(proto.name ?? "");
    graph.parentOp = parentOp;
    graph.docString = proto.docString ?? "";
    keepUnknownFields(proto, graph.extra);
    const scope: Scope = { values: new Map(), parent: parentScope };
    const where = graphLabel(graph);
    const define = (v: Value, what: string): void => {
      if (scope.values.has(v.name)) throw new ImportError(`${what} defines value "${v.name}" twice in ${where}`);
      scope.values.set(v.name, v);
    };

    const initializers = new Map<string, ITensorProto>();
    const split = parentOp === null ? this.#initializerData : undefined;
    for (const [i, t] of (proto.initializer ?? []).entries()) {
      const raw = split?.[i];
      if (raw !== undefined) {
        t.rawData = raw;
        split![i] = undefined; // the tensor views it now; the caller's array keeps no weight alive
      }
      const name = t.name ?? "";
      if (initializers.has(name)) throw new ImportError(`initializer "${name}" is defined twice in ${where}`);
      initializers.set(name, t);
      keepValueUnknownFields(t, graph.extra, "initializerUnknownFields");
    }
    // IR < 4 lists every initializer among the inputs; such an input is modelled as an input whose
    // `constant` holds its default value (ONNX IR spec, "Graphs": initializers as input defaults).
    for (const vi of proto.input ?? []) {
      const v = new Value(vi.name ?? "", importType(vi.type));
      v.docString = vi.docString ?? "";
      keepValueUnknownFields(vi, graph.extra, "valueInfoUnknownFields");
      const init = initializers.get(v.name);
      if (init !== undefined) v.constant = this.tensor(init);
      define(v, `graph input "${v.name}"`);
      graph.addInput(v);
    }
    for (const [name, t] of initializers) {
      if (scope.values.has(name)) continue;
      const data = this.tensor(t);
      define(graph.addConstant(name, data, tensorType(data.dtype, data.shape)), `initializer "${name}"`);
    }
    if (proto.sparseInitializer?.length) {
      graph.extra.sparseInitializers = proto.sparseInitializer;
      for (const s of proto.sparseInitializer) {
        const name = s.values?.name ?? "";
        let data: Tensor;
        try {
          data = densifySparse(s, this.#tensorOptions);
        } catch (e) {
          throw new ImportError(`sparse initializer "${name}": ${(e as Error).message.replace(PREFIX, "")}`);
        }
        define(graph.addConstant(name, data, tensorType(data.dtype, data.shape)), `sparse initializer "${name}"`);
      }
    }
    if (proto.quantizationAnnotation?.length) graph.extra.quantizationAnnotation = proto.quantizationAnnotation;

    const nodes = proto.node ?? [];
    for (let i = 0; i < nodes.length; i++) this.#importNode(nodes[i], nodes, graph, scope, define);

    for (const vi of proto.output ?? []) {
      const name = vi.name ?? "";
      const v = lookup(scope, name);
      if (v === undefined) throw new ImportError(`output "${name}" of ${where} is not defined`);
      const type = importType(vi.type);
      if (type !== null && (v.graph === graph || v.type === null)) v.type = type;
      if (vi.docString) v.docString = vi.docString;
      keepValueUnknownFields(vi, graph.extra, "valueInfoUnknownFields");
      graph.outputs.push(v);
    }
    for (const vi of proto.valueInfo ?? []) {
      const v = scope.values.get(vi.name ?? "");
      if (v === undefined) continue;
      if (v.type === null) v.type = importType(vi.type);
      if (vi.docString && v.docString === "") v.docString = vi.docString;
      keepValueUnknownFields(vi, graph.extra, "valueInfoUnknownFields");
    }
    return graph;
  }

  #importNode(
    node: INodeProto,
    nodes: readonly INodeProto[],
    graph: Graph,
    scope: Scope,
    define: (v: Value, what: string) => void,
  ): void {
    const type = node.opType ?? "";
    if (type === "") {
      const which = node.name ? `node ${quote(node.name)}` : `node #${graph.ops.length}`;
      throw new ImportError(`${which} of ${graphLabel(graph)} has an empty op_type`);
    }
    let name = node.name ?? "";
    const generated = name === "";
    if (generated) name = this.#fresh(this.#opNames, `${type}_${graph.ops.length}`);
    const label = `node ${quote(name)} (${quote(type).slice(1, -1)})`;
    // ONNX IR, "Names Within a Graph": node names are a namespace, unique per graph; onnxruntime refuses repeats.
    if (!generated && graph.ops.some((op) => op.name === name)) {
      throw new ImportError(`${label}: ${graphLabel(graph)} has another node of this name (node names must be unique)`);
    }
    const domain = node.domain ?? "";
    const opset = this.#opsets.get(isDefaultDomain(domain) ? "" : domain);
    if (opset === undefined) {
      const imported = [...this.#opsets.keys()].map((d) => `"${d}"`).join(", ") || "none";
      throw new ImportError(
        `${label} is in domain "${domain}", which opset_import does not list (it lists ${imported})`,
      );
    }
    const schema = isDefaultDomain(domain) && opset <= ONNX_OPSET_KNOWN ? onnxOpSchema(type, opset) : undefined;
    if (schema === null) {
      throw new ImportError(`${label}: ONNX opset ${opset} has no operator ${quote(type).slice(1, -1)}`);
    }
    const operands = (node.input ?? []).map((input) => {
      if (input === "") return null; // an omitted optional input (ONNX IR spec, "Optional Inputs and Outputs")
      const v = lookup(scope, input);
      if (v !== undefined) return v;
      const later = nodes.some((n) => n.output?.includes(input));
      throw new ImportError(
        later
          ? `${label} uses value ${quote(input)} before it is defined`
          : `${label} uses value ${quote(input)}, which is not defined`,
      );
    });
    if (schema !== undefined) checkSignature(schema, `${type} of opset ${opset}`, operands, node, label);
    const omitted: number[] = [];
    const results = (node.output ?? []).map((output, k) => {
      if (output !== "") return new Value(output);
      omitted.push(k);
      return new Value(this.#fresh(this.#valueNames, `${name}.unused${k}`));
    });
    // "ai.onnx" is the default domain by another name; one spelling keeps opset_import and the checker in agreement.
    const op = new Op({ name, type, domain: isDefaultDomain(domain) ? "" : domain, operands, results });
    if (generated) op.extra.generatedName = name;
    if (omitted.length > 0) op.extra.omittedResults = omitted;
    op.docString = node.docString ?? "";
    keepUnknownFields(node, op.extra);
    graph.addOp(op);
    for (const a of node.attribute ?? []) {
      const attrName = a.name ?? "";
      // Checked before decoding: a second subgraph would be imported over the first one's uses.
      if (op.attributes.has(attrName)) throw new ImportError(`${label} has attribute ${quote(attrName)} twice`);
      if (schema !== undefined) checkAttribute(schema, `${type} of opset ${opset}`, a, label);
      op.attributes.set(attrName, this.#attribute(a, op, scope, label));
    }
    const missing = schema?.required.find((a) => !op.attributes.has(a));
    if (missing !== undefined) throw new ImportError(`${label} lacks attribute "${missing}", which ${type} requires`);
    if (isDefaultDomain(domain)) checkSubgraphArity(op, node, opset, label);
    // Results become visible only after the attributes: a subgraph cannot see its own op's results.
    for (const r of results) define(r, label);
  }

  #attribute(a: IAttributeProto, op: Op, scope: Scope, label: string): Attribute {
    const where = `${label} attribute "${a.name}"`;
    let type = a.type ?? AttrType.UNDEFINED;
    if (a.refAttrName) return { kind: "ref", value: a.refAttrName, refKind: attrTypeName(type) };
    if (type === AttrType.UNDEFINED) type = inferAttrType(a);
    switch (type) {
      case AttrType.FLOAT:
        return { kind: "float", value: a.f ?? 0 };
      case AttrType.INT:
        return { kind: "int", value: int64ToNumber(a.i) };
      case AttrType.STRING:
        return { kind: "string", value: utf8(a.s) };
      case AttrType.TENSOR:
        return { kind: "tensor", value: this.tensor(a.t ?? {}, where) };
      case AttrType.GRAPH:
        return { kind: "graph", value: this.importGraph(a.g ?? {}, scope, op) };
      case AttrType.SPARSE_TENSOR:
        return { kind: "opaque", value: a.sparseTensor, refKind: "SPARSE_TENSOR" };
      case AttrType.TYPE_PROTO:
        return { kind: "type", value: importTypeOrOpaque(a.tp) };
      case AttrType.FLOATS:
        return { kind: "floats", value: [...(a.floats ?? [])] };
      case AttrType.INTS:
        return { kind: "ints", value: (a.ints ?? []).map(int64ToNumber) };
      case AttrType.STRINGS:
        return { kind: "strings", value: (a.strings ?? []).map(utf8) };
      case AttrType.TENSORS:
        return { kind: "tensors", value: (a.tensors ?? []).map((t) => this.tensor(t, where)) };
      case AttrType.GRAPHS:
        return { kind: "graphs", value: (a.graphs ?? []).map((g) => this.importGraph(g, scope, op)) };
      case AttrType.SPARSE_TENSORS:
        return { kind: "opaque", value: a.sparseTensors ?? [], refKind: "SPARSE_TENSORS" };
      case AttrType.TYPE_PROTOS:
        return { kind: "types", value: (a.typeProtos ?? []).map(importTypeOrOpaque) };
      default:
        throw new ImportError(`${where} has unknown attribute type ${type}`);
    }
  }
}

/**
 * The input and output counts the ONNX spec asks of If, Loop and Scan bodies
 * (Operators.md): If branches give one output per If output; a Loop body takes
 * (iteration, condition, N carried) and gives (condition, N carried, K scan outputs);
 * a Scan body takes N states and M scan inputs and gives N states and K scan outputs
 * (Scan-8 has a leading `sequence_lens` operand the body does not see).
 */
/**
 * Refuse a default-domain node whose input or output count its schema does not allow, or that feeds a sequence,
 * map or optional value to an input that takes tensors only (`onnx.checker` and onnxruntime refuse both).
 */
function checkSignature(
  schema: OnnxOpSchema,
  what: string,
  operands: readonly (Value | null)[],
  node: INodeProto,
  label: string,
): void {
  const range = (min: number, max: number) =>
    min === max ? `${min}` : max === Infinity ? `${min} or more` : `${min} to ${max}`;
  const outputs = (node.output ?? []).length;
  if (operands.length < schema.minInputs || operands.length > schema.maxInputs) {
    throw new ImportError(
      `${label} has ${operands.length} inputs; ${what} takes ${range(schema.minInputs, schema.maxInputs)}`,
    );
  }
  if (outputs < schema.minOutputs || outputs > schema.maxOutputs) {
    throw new ImportError(
      `${label} has ${outputs} outputs; ${what} gives ${range(schema.minOutputs, schema.maxOutputs)}`,
    );
  }
  operands.forEach((v, i) => {
    if (v === null || v.type === null || isTensorType(v.type) || schema.takesNonTensor(i)) return;
    throw new ImportError(
      `${label}: input #${i} ${quote(v.name)} is a ${v.type.description}; ${what} takes a tensor there`,
    );
  });
}

/** Refuse an attribute the op's schema does not define, or one of another type (`onnx.checker` refuses both). */
function checkAttribute(schema: OnnxOpSchema, what: string, a: IAttributeProto, label: string): void {
  const name = a.name ?? "";
  const expected = schema.attributes.get(name);
  if (expected === undefined) {
    const known = schema.attributes.size === 0 ? "none" : [...schema.attributes.keys()].join(", ");
    throw new ImportError(`${label} has attribute ${quote(name)}, which ${what} does not define (it has: ${known})`);
  }
  if (a.refAttrName) return; // a function body's reference, typed by the caller
  const type = a.type || inferAttrType(a);
  const found = ATTRIBUTE_TYPE_NAMES[type] ?? `type ${type}`;
  if (found !== expected) {
    throw new ImportError(`${label}: attribute ${quote(name)} of ${what} must be ${expected}, found ${found}`);
  }
}

/** `AttributeProto.AttributeType` codes by the names the schema table uses. */
const ATTRIBUTE_TYPE_NAMES: Readonly<Record<number, string>> = {
  [AttrType.FLOAT]: "float",
  [AttrType.INT]: "int",
  [AttrType.STRING]: "string",
  [AttrType.TENSOR]: "tensor",
  [AttrType.GRAPH]: "graph",
  [AttrType.FLOATS]: "floats",
  [AttrType.INTS]: "ints",
  [AttrType.STRINGS]: "strings",
  [AttrType.TENSORS]: "tensors",
  [AttrType.GRAPHS]: "graphs",
  [AttrType.SPARSE_TENSOR]: "sparse_tensor",
  [AttrType.SPARSE_TENSORS]: "sparse_tensors",
  [AttrType.TYPE_PROTO]: "type_proto",
  [AttrType.TYPE_PROTOS]: "type_protos",
};

function checkSubgraphArity(op: Op, node: INodeProto, opset: number, label: string): void {
  const inputs = (node.input ?? []).length;
  const outputs = (node.output ?? []).length;
  const expect = (attribute: string, wantInputs: number | null, wantOutputs: number, why: string): void => {
    const body = op.attributes.get(attribute);
    if (body?.kind !== "graph") return;
    const g = body.value;
    const badInputs = wantInputs !== null && g.inputs.length !== wantInputs;
    if (!badInputs && g.outputs.length === wantOutputs) return;
    const found = badInputs ? `${g.inputs.length} inputs` : `${g.outputs.length} outputs`;
    const wanted = badInputs ? `${wantInputs} inputs` : `${wantOutputs} outputs`;
    throw new ImportError(`${label}: ${attribute} has ${found}, expected ${wanted} (${why})`);
  };
  switch (op.type) {
    case "If":
      for (const branch of ["then_branch", "else_branch"]) expect(branch, null, outputs, `one per If output`);
      break;
    case "Loop":
      expect(
        "body",
        inputs,
        1 + outputs,
        `iteration number, condition and ${Math.max(0, inputs - 2)} loop-carried values in; ` +
          `condition, loop-carried values and scan outputs out, for a Loop with ${inputs} inputs and ${outputs} outputs`,
      );
      break;
    case "Scan": {
      const scanned = opset < 9 ? inputs - 1 : inputs;
      expect("body", scanned, outputs, `one per Scan state and scan input in, one per Scan output out`);
      break;
    }
  }
}

function importTypeOrOpaque(tp: ITypeProto | null | undefined): Type {
  return importType(tp) ?? { kind: "opaque", description: "?", proto: tp ?? {} };
}

function graphLabel(graph: Graph): string {
  return graph.parentOp === null ? `graph "${graph.name}"` : `subgraph "${graph.name}" of ${opLabel(graph.parentOp)}`;
}

function opLabel(op: Op): string {
  return `node "${op.name}" (${op.type})`;
}

/**
 * Decode ONNX model bytes into a module.
 *
 * Initializers become typed-array views over `bytes` where alignment allows (everywhere with
 * `options.overwriteInput`), so keep `bytes` unmodified while the module lives.
 *
 * @param bytes Contents of a `.onnx` file.
 * @param options Folder for external data.
 * @returns The module.
 * @throws {Error} One line starting `Cannot import ONNX model:` for bytes that are not
 *   an ONNX model, messages nested deeper than protobuf allows, a model without a graph,
 *   a value used before its definition or defined twice, external data outside the model
 *   folder, not a regular file or too short, a node ONNX's checker would refuse (empty
 *   op_type, domain not imported, op or attribute unknown at the opset, repeated attribute,
 *   subgraph of the wrong arity) or a malformed sparse initializer; each names the node,
 *   attribute, tensor or file.
 *
 * @example Import a model built with the protobuf classes
 * ```ts
 * import assert from "node:assert/strict";
 * import onnxProto from "onnx-proto";
 * import { importOnnx } from "./import.ts";
 * const { onnx } = onnxProto;
 * const bytes = onnx.ModelProto.encode({
 *   irVersion: 8,
 *   opsetImport: [{ domain: "", version: 13 }],
 *   graph: {
 *     name: "g",
 *     input: [{ name: "x", type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 4 }] } } } }],
 *     output: [{ name: "y" }],
 *     node: [{ opType: "Relu", input: ["x"], output: ["y"] }],
 *   },
 * }).finish();
 * const m = importOnnx(bytes);
 * assert.equal(m.graph.ops[0].type, "Relu");
 * assert.equal(m.graph.outputs[0].producer, m.graph.ops[0]);
 * ```
 */
export function importOnnx(bytes: Uint8Array, options: ImportOptions = {}): Module {
  let model: ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (e) {
    if (e instanceof ProtoNestingError) throw new ImportError(e.describe());
    throw new ImportError(`not an ONNX model, or the file is corrupt or truncated (${decodeProblem(e, bytes)})`);
  }
  if (!has(model, "graph")) throw new ImportError("the model has no graph (is this an ONNX file?)");
  try {
    const opsets: [string, number][] = (model.opsetImport ?? []).map((o) => [
      o.domain === "ai.onnx" ? "" : o.domain ?? "",
      int64ToNumber(o.version),
    ]);
    for (const [domain, version] of opsets) {
      if (version < 1) {
        throw new ImportError(`opset_import gives domain "${domain}" version ${version}, expected 1 or more`);
      }
    }
    const importer = new Importer(model, new Map(opsets), options, bytes);
    const graph = importer.importGraph(model.graph!, null, null);
    // onnxruntime refuses such a model, and nothing of it could be computed.
    if (graph.outputs.length === 0) throw new ImportError(`graph ${quote(graph.name)} has no outputs`);
    if (options.keepWeightOps !== true) inlineWeightOps(graph);
    const module = new Module(graph, opsets, int64ToNumber(model.irVersion));
    module.producerName = model.producerName ?? "";
    module.producerVersion = model.producerVersion ?? "";
    module.domain = model.domain ?? "";
    module.modelVersion = int64ToNumber(model.modelVersion);
    module.docString = model.docString ?? "";
    keepUnknownFields(model, module.extra);
    for (const entry of model.metadataProps ?? []) module.metadata.set(entry.key ?? "", entry.value ?? "");
    if (model.functions?.length) module.extra.functions = model.functions;
    if (model.trainingInfo?.length) module.extra.trainingInfo = model.trainingInfo;
    return module;
  } catch (e) {
    if (e instanceof ImportError) throw e;
    throw new ImportError((e as Error).message);
  }
}

/**
 * Read and import a `.onnx` file; external data is looked up beside it, `options` as for {@linkcode importOnnx}.
 *
 * @throws {Error} `Cannot import ONNX model: cannot read "path": ...` when the file cannot be read.
 */
export function importOnnxFile(
  path: string,
  options: Omit<ImportOptions, "baseDir" | "initializerData"> = {},
): Module {
  let file: OnnxFile;
  try {
    file = readOnnxFile(path);
  } catch (e) {
    throw new ImportError(`cannot read ${quote(path)}: ${(e as Error).message}`);
  }
  // Large weights come in buffers of their own; the bytes were read for this import alone, so the small ones left in
  // them may be aligned there instead of copied.
  const { bytes, initializerData } = file;
  return importOnnx(bytes, { overwriteInput: true, ...options, initializerData, baseDir: dirname(path) });
}
