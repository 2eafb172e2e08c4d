/**
 * A seeded fuzzer for `compile()` and the CLI: it mutates small models
 * structurally (nodes, attributes, initializers, types, opsets, names) and at
 * the byte level, together with the side inputs (pipeline, target, input
 * shapes, calibration data), and checks the promises of the definition of
 * done: a clean one-line error or a valid result, never an engine message, a
 * hang, a partial output or a modified input. `deno task fuzz` runs it long;
 * `tests/fuzz_test.ts` runs a bounded slice in CI.
 *
 * ```
 * deno task fuzz --seed 7 --cases 5000 --cli-cases 200
 * ```
 * @module
 */
import { join } from "node:path";
import { type INodeProto, type ITensorProto, onnx } from "../ir/onnx/proto.ts";
import { allocData, type Tensor } from "../ir/tensor.ts";
import type { DType } from "../ir/types.ts";
import { mulberry32 } from "./tensor_compare.ts";

type Rng = () => number;
type ModelMsg = InstanceType<typeof onnx.ModelProto>;
type NodeMsg = InstanceType<typeof onnx.NodeProto>;
type TensorFields = ITensorProto;

const ROOT = new URL("..", import.meta.url).pathname;

/** Generous bounds a clean error line must keep. */
export const MAX_MESSAGE_CHARS = 2000;

/** Wording that betrays an engine error escaping as a message, not a message written for a user. */
const ENGINE_WORDING = [
  /\b(TypeError|RangeError|ReferenceError|SyntaxError|InternalError)\b/,
  /Cannot read propert/,
  /Cannot set propert/,
  /is not a function/,
  /is not iterable/,
  /is not a constructor/,
  /(of|is) (undefined|null)\b/,
  /Maximum call stack/,
  /out of bounds/,
  /Invalid (typed )?array length/,
  /Invalid array buffer length/,
  /Array buffer allocation failed/,
  /dangling use/,
  /index out of range/,
  /\bunreachable\b/,
  /\bNaN dimension/,
  /--allow-/,
];

/** Why an error message breaks the one-clean-line promise, or null when it keeps it. */
export function messageDefect(message: string): string | null {
  if (message.length === 0) return "empty message";
  if (/[\n\r]/.test(message)) return "message spans several lines";
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x08\x0b-\x1f\x7f]/.test(message)) return "message holds control characters";
  if (message.length > MAX_MESSAGE_CHARS) return `message of ${message.length} characters`;
  const engine = ENGINE_WORDING.find((re) => re.test(message));
  return engine === undefined ? null : `engine wording (${engine.source})`;
}

// ---------------------------------------------------------------------------
// Seed models, written as an exporter would (onnx-proto messages, not our IR).

const F32 = 1, I64 = 7;

function floats(rng: Rng, n: number, scale = 0.5, offset = 0): number[] {
  return Array.from({ length: n }, () => offset + scale * (2 * rng() - 1));
}

function f32Tensor(name: string, dims: number[], values: number[]): TensorFields {
  return { name, dims, dataType: F32, rawData: new Uint8Array(new Float32Array(values).buffer) };
}

function valueInfo(name: string, dims: (number | string)[], elemType = F32) {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

const ints = (name: string, values: number[]) => ({ name, type: 7, ints: values });
const int = (name: string, value: number) => ({ name, type: 2, i: value });

/**
 * A small CNN in the PyTorch exporter's style: Conv+BN+Relu twice with a
 * residual Add, MaxPool, a Concat, global pooling, Flatten and a Gemm head.
 * With `constants`, weights are `Constant` nodes and the head's bias goes
 * through an `Identity` (Paddle2ONNX / tf2onnx style), and H, W are symbolic.
 */
function cnnSeed(seed: number, constants: boolean): Uint8Array {
  const rng = mulberry32(seed);
  const inits: TensorFields[] = [];
  const nodes: INodeProto[] = [];
  const weight = (name: string, dims: number[], values: number[]): string => {
    const t = f32Tensor(name, dims, values);
    if (constants) {
      nodes.push({
        name: `${name}.const`,
        opType: "Constant",
        output: [name],
        attribute: [{ name: "value", type: 4, t }],
      });
    } else inits.push(t);
    return name;
  };
  const convBn = (i: number, x: string, cin: number, cout: number, stride: number): string => {
    const w = weight(`conv${i}.w`, [cout, cin, 3, 3], floats(rng, cout * cin * 9, 0.4));
    const b = weight(`conv${i}.b`, [cout], floats(rng, cout, 0.1));
    nodes.push({
      name: `conv${i}`,
      opType: "Conv",
      input: [x, w, b],
      output: [`c${i}`],
      attribute: [ints("pads", [1, 1, 1, 1]), ints("strides", [stride, stride]), ints("kernel_shape", [3, 3])],
    });
    const bn = ["scale", "bias", "mean", "var"].map((k, j) =>
      weight(`bn${i}.${k}`, [cout], floats(rng, cout, j === 0 || j === 3 ? 0.5 : 0.2, j === 0 || j === 3 ? 1 : 0))
    );
    nodes.push({ name: `bn${i}`, opType: "BatchNormalization", input: [`c${i}`, ...bn], output: [`n${i}`] });
    nodes.push({ name: `relu${i}`, opType: "Relu", input: [`n${i}`], output: [`r${i}`] });
    return `r${i}`;
  };
  const a = convBn(1, "x", 3, 8, 2);
  const b = convBn(2, a, 8, 8, 1);
  nodes.push({ name: "add", opType: "Add", input: [a, b], output: ["s"] });
  nodes.push({
    name: "pool",
    opType: "MaxPool",
    input: ["s"],
    output: ["p"],
    attribute: [ints("kernel_shape", [2, 2]), ints("strides", [2, 2])],
  });
  const c = convBn(3, "p", 8, 8, 1);
  nodes.push({ name: "cat", opType: "Concat", input: ["p", c], output: ["cat"], attribute: [int("axis", 1)] });
  nodes.push({ name: "gap", opType: "GlobalAveragePool", input: ["cat"], output: ["g"] });
  nodes.push({ name: "flatten", opType: "Flatten", input: ["g"], output: ["f"], attribute: [int("axis", 1)] });
  const fw = weight("fc.w", [4, 16], floats(rng, 64));
  let fb = weight("fc.b", [4], floats(rng, 4, 0.1));
  if (constants) {
    nodes.push({ name: "fc.b.alias", opType: "Identity", input: [fb], output: ["fc.b.shared"] });
    fb = "fc.b.shared";
  }
  nodes.push({
    name: "fc",
    opType: "Gemm",
    input: ["f", fw, fb],
    output: ["logits"],
    attribute: [int("transB", 1)],
  });
  nodes.push({ name: "softmax", opType: "Softmax", input: ["logits"], output: ["y"], attribute: [int("axis", 1)] });
  return onnx.ModelProto.encode({
    irVersion: 8,
    producerName: constants ? "paddle-style" : "pytorch-style",
    opsetImport: [{ domain: "", version: 13 }],
    graph: {
      name: "cnn",
      node: nodes,
      initializer: inits,
      input: [valueInfo("x", constants ? ["N", 3, "H", "W"] : ["N", 3, 16, 16])],
      output: [valueInfo("y", ["N", 4])],
    },
  }).finish();
}

/** An MLP with MatMul+Add layers, a Reshape by a constant shape and an If whose branches both return the logits. */
function mlpSeed(seed: number): Uint8Array {
  const rng = mulberry32(seed);
  const branch = (name: string, op: string) => ({
    name,
    node: [{ name: `${name}.op`, opType: op, input: ["h2"], output: [`${name}.y`] }],
    output: [valueInfo(`${name}.y`, ["N", 6])],
  });
  return onnx.ModelProto.encode({
    irVersion: 8,
    opsetImport: [{ domain: "", version: 13 }],
    graph: {
      name: "mlp",
      node: [
        { name: "reshape", opType: "Reshape", input: ["x", "shape"], output: ["x2"] },
        { name: "mm1", opType: "MatMul", input: ["x2", "w1"], output: ["m1"] },
        { name: "add1", opType: "Add", input: ["m1", "b1"], output: ["h1"] },
        { name: "relu1", opType: "Relu", input: ["h1"], output: ["a1"] },
        { name: "mm2", opType: "MatMul", input: ["a1", "w2"], output: ["m2"] },
        { name: "add2", opType: "Add", input: ["m2", "b2"], output: ["h2"] },
        {
          name: "if",
          opType: "If",
          input: ["cond"],
          output: ["y"],
          attribute: [
            { name: "then_branch", type: 5, g: branch("then", "Relu") },
            { name: "else_branch", type: 5, g: branch("else", "Identity") },
          ],
        },
      ],
      initializer: [
        { name: "shape", dims: [2], dataType: I64, int64Data: [-1, 16] },
        f32Tensor("w1", [16, 12], floats(rng, 192)),
        f32Tensor("b1", [12], floats(rng, 12, 0.1)),
        f32Tensor("w2", [12, 6], floats(rng, 72)),
        f32Tensor("b2", [6], floats(rng, 6, 0.1)),
        { name: "cond", dims: [], dataType: 9, int32Data: [1] },
      ],
      input: [valueInfo("x", ["N", 4, 4])],
      output: [valueInfo("y", ["N", 6])],
    },
  }).finish();
}

/** The seed models, by name: hand-built ones and two of the project's trained exports. */
export function seedModels(): Map<string, Uint8Array> {
  // protobufjs encodes into Node Buffers, whose slice() is a view: the mutations copy plain Uint8Arrays.
  const seeds = new Map<string, Uint8Array>([
    ["cnn", new Uint8Array(cnnSeed(1, false))],
    ["paddle", new Uint8Array(cnnSeed(2, true))],
    ["mlp", new Uint8Array(mlpSeed(3))],
  ]);
  for (const name of ["densenet", "mobilenet"]) {
    seeds.set(name, Deno.readFileSync(join(ROOT, "examples/models", `${name}.onnx`)));
  }
  return seeds;
}

// ---------------------------------------------------------------------------
// Mutations.

const INTERESTING_INTS = [0, 1, 2, 3, -1, -2, 7, 2 ** 31 - 1, -(2 ** 31), 2 ** 32, 2 ** 53 - 1, 1e6];
const OP_TYPES = ["", "Conv", "Gemm", "MatMul", "Relu", "Add", "Concat", "Reshape", "If", "Loop", "Foo", "Identity"];
const DOMAINS = ["", "ai.onnx", "com.microsoft", "x.unknown", "ai.onnx.ml"];
const NAMES = ["", "x", "y", "a\nb", "a\x1b[31mred", "n".repeat(5000), "../../etc/passwd", "nul\x00name"];

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[Math.floor(rng() * items.length)];
}

function nodesOf(model: ModelMsg): NodeMsg[] {
  const all: NodeMsg[] = [];
  const walk = (nodes: NodeMsg[] | null | undefined) => {
    for (const n of nodes ?? []) {
      all.push(n);
      for (const a of n.attribute ?? []) {
        if (a.g) walk(a.g.node as NodeMsg[]);
        for (const g of a.graphs ?? []) walk(g.node as NodeMsg[]);
      }
    }
  };
  walk(model.graph?.node as NodeMsg[]);
  return all;
}

/** A structural mutation: changes `model` in place and says what it did. */
type Mutation = (model: ModelMsg, rng: Rng) => string;

const STRUCTURAL: Record<string, Mutation> = {
  "node.delete": (m, rng) => {
    const nodes = m.graph!.node!;
    const i = Math.floor(rng() * nodes.length);
    return `deleted node ${nodes.splice(i, 1)[0]?.name}`;
  },
  "node.duplicate": (m, rng) => {
    const nodes = m.graph!.node!;
    const i = Math.floor(rng() * nodes.length);
    nodes.splice(i, 0, onnx.NodeProto.decode(onnx.NodeProto.encode(nodes[i]).finish()));
    return `duplicated node ${i}`;
  },
  "node.input": (m, rng) => {
    const n = pick(rng, nodesOf(m));
    const inputs = n.input ?? [];
    const all = nodesOf(m).flatMap((o) => o.output ?? []);
    const choice = rng() < 0.5 ? pick(rng, [...all, "", "missing"]) : pick(rng, NAMES);
    if (inputs.length === 0 || rng() < 0.2) inputs.push(choice);
    else inputs[Math.floor(rng() * inputs.length)] = choice;
    n.input = inputs;
    return `input of ${n.name} now ${JSON.stringify(choice.slice(0, 20))}`;
  },
  "node.output": (m, rng) => {
    const n = pick(rng, nodesOf(m));
    const outs = n.output ?? [];
    if (rng() < 0.5 && outs.length > 0) outs.pop();
    else outs.push(pick(rng, ["x", "y", "extra", ...NAMES]));
    n.output = outs;
    return `outputs of ${n.name} changed`;
  },
  "node.opType": (m, rng) => {
    const n = pick(rng, nodesOf(m));
    n.opType = pick(rng, OP_TYPES);
    return `op type of ${n.name} now ${n.opType}`;
  },
  "node.domain": (m, rng) => {
    const n = pick(rng, nodesOf(m));
    n.domain = pick(rng, DOMAINS);
    return `domain of ${n.name} now ${n.domain}`;
  },
  "node.name": (m, rng) => {
    const nodes = nodesOf(m);
    const n = pick(rng, nodes);
    n.name = rng() < 0.5 ? pick(rng, nodes).name : pick(rng, NAMES);
    return "renamed a node";
  },
  "attr.value": (m, rng) => {
    const withAttrs = nodesOf(m).filter((n) => (n.attribute ?? []).length > 0);
    if (withAttrs.length === 0) return "no attribute";
    const a = pick(rng, pick(rng, withAttrs).attribute!);
    if (a.type === 2) a.i = pick(rng, INTERESTING_INTS);
    else if (a.type === 7) {
      a.ints = Array.from({ length: Math.floor(rng() * 6) }, () => pick(rng, INTERESTING_INTS));
    } else if (a.type === 1) a.f = pick(rng, [NaN, Infinity, -1, 0, 1e30]);
    else a.type = pick(rng, [0, 1, 2, 3, 4, 5, 6, 7, 8, 99]) as never;
    return `attribute ${a.name} changed`;
  },
  "attr.add": (m, rng) => {
    const n = pick(rng, nodesOf(m));
    const existing = n.attribute ?? [];
    const name = rng() < 0.5 && existing.length > 0 ? pick(rng, existing).name : pick(rng, [
      "transA",
      "transB",
      "group",
      "axis",
      "bogus",
      "else_branch",
      "pads",
    ]);
    const kind = pick(rng, [2, 7, 1, 3]);
    n.attribute = [...existing, { name, type: kind, i: pick(rng, INTERESTING_INTS), ints: [1, -1], f: 2 }];
    return `attribute ${name} added to ${n.name}`;
  },
  "attr.drop": (m, rng) => {
    const n = pick(rng, nodesOf(m));
    if ((n.attribute ?? []).length > 0) n.attribute!.splice(Math.floor(rng() * n.attribute!.length), 1);
    return `attribute dropped from ${n.name}`;
  },
  "init.dims": (m, rng) => {
    const inits = m.graph!.initializer ?? [];
    if (inits.length === 0) return "no initializer";
    const t = pick(rng, inits);
    const dims = [...(t.dims ?? [])].map(Number);
    if (rng() < 0.3) dims.push(pick(rng, [1, 2, 0]));
    else if (dims.length > 0) dims[Math.floor(rng() * dims.length)] = pick(rng, [-1, 0, 1, 3, 2 ** 31, 2 ** 40]);
    t.dims = dims;
    return `dims of ${t.name} now ${dims}`;
  },
  "init.dtype": (m, rng) => {
    const inits = m.graph!.initializer ?? [];
    if (inits.length === 0) return "no initializer";
    const t = pick(rng, inits);
    t.dataType = Math.floor(rng() * 27) - 1;
    return `dtype of ${t.name} now ${t.dataType}`;
  },
  "init.data": (m, rng) => {
    const inits = m.graph!.initializer ?? [];
    if (inits.length === 0) return "no initializer";
    const t = pick(rng, inits);
    const raw = t.rawData ?? new Uint8Array();
    const choice = Math.floor(rng() * 3);
    if (choice === 0) t.rawData = raw.slice(0, Math.floor(rng() * raw.length));
    else if (choice === 1) t.rawData = new Uint8Array(new Float32Array([NaN, Infinity, -Infinity, 1e38]).buffer);
    else {
      t.dataLocation = 1;
      t.externalData = [
        { key: "location", value: pick(rng, ["weights.bin", "../x", "/dev/zero", "/etc/passwd", "", "a\nb"]) },
        { key: "offset", value: pick(rng, ["0", "-1", "8", "99999999999", "x"]) },
        { key: "length", value: pick(rng, ["4", "-4", "100000000000", ""]) },
      ];
      t.rawData = new Uint8Array();
    }
    return `data of ${t.name} changed (${choice})`;
  },
  "init.sparse": (m, rng) => {
    const inits = m.graph!.initializer ?? [];
    if (inits.length === 0) return "no initializer";
    const t = inits.splice(Math.floor(rng() * inits.length), 1)[0];
    const dims = (t.dims ?? []).map(Number);
    const n = dims.reduce((a, b) => a * b, 1);
    const count = Math.max(1, Math.min(4, n));
    const indices = Array.from({ length: count }, () => pick(rng, [0, 1, n - 1, n, n + 7, -1]));
    m.graph!.sparseInitializer = [...(m.graph!.sparseInitializer ?? []), {
      dims: rng() < 0.2 ? [-4] : dims,
      values: f32Tensor(t.name ?? "", [count], floats(rng, count)),
      indices: { name: `${t.name}.idx`, dims: [count], dataType: I64, int64Data: indices },
    }];
    return `${t.name} made sparse`;
  },
  "graph.input": (m, rng) => {
    const inputs = m.graph!.input ?? [];
    if (inputs.length === 0 || rng() < 0.1) {
      m.graph!.input = [...inputs, valueInfo(pick(rng, NAMES), [1, 2])];
      return "input added";
    }
    const v = pick(rng, inputs);
    const dims = v.type?.tensorType?.shape?.dim ?? [];
    const roll = rng();
    if (roll < 0.2) v.type = { sequenceType: { elemType: v.type } };
    else if (roll < 0.4 && v.type?.tensorType) v.type.tensorType.elemType = pick(rng, [0, 2, 7, 8, 11, 16, 40]);
    else if (dims.length > 0) {
      const d = dims[Math.floor(rng() * dims.length)];
      if (rng() < 0.5) {
        d.dimValue = pick(rng, [0, -1, 1, 2, 5, 2 ** 31]);
        d.dimParam = "";
      } else d.dimParam = pick(rng, ["N", "H", "a\nb", ""]);
    }
    return `input ${v.name} retyped`;
  },
  "graph.output": (m, rng) => {
    const outputs = m.graph!.output ?? [];
    if (rng() < 0.3 && outputs.length > 0) outputs.pop();
    else outputs.push(valueInfo(pick(rng, ["missing", "x", "c1", "shape", "y"]), ["N"]));
    return "outputs changed";
  },
  "opset": (m, rng) => {
    const opsets = m.opsetImport ?? [];
    const choice = Math.floor(rng() * 3);
    if (choice === 0 && opsets.length > 0) opsets[0].version = pick(rng, [-1, 0, 1, 6, 7, 11, 13, 18, 21, 10000]);
    else if (choice === 1) opsets.splice(0, 1);
    else opsets.push({ domain: pick(rng, DOMAINS), version: pick(rng, [1, 13, -3]) });
    m.opsetImport = opsets;
    return "opsets changed";
  },
  "model.irVersion": (m, rng) => {
    m.irVersion = pick(rng, [0, 1, 3, 7, 10, 11, 99, -1]);
    return `ir_version ${m.irVersion}`;
  },
};

/** `bytes` as a protobuf varint. */
function varint(n: number): number[] {
  const out: number[] = [];
  for (; n >= 0x80; n = Math.floor(n / 128)) out.push((n % 128) | 0x80);
  out.push(n);
  return out;
}

/** A length-delimited protobuf field. */
function field(fieldNumber: number, payload: Uint8Array): Uint8Array {
  return concat(new Uint8Array([...varint(fieldNumber * 8 + 2), ...varint(payload.length)]), payload);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
}

/**
 * Add to the model's graph a chain of `depth` nested Ifs (each then-branch holds the next If). protobufjs encodes
 * recursively and overflows the stack long before such depths, so the nesting is framed by hand, inside out.
 */
const BOOL_SCALAR = { tensorType: { elemType: 9, shape: { dim: [] } } };

function nestIfChain(model: Uint8Array, depth: number): Uint8Array {
  const message = onnx.ModelProto.decode(model);
  const leaf = onnx.GraphProto.encode({
    name: "leaf",
    node: [{ opType: "Identity", input: ["cond.nest"], output: ["leaf.y"] }],
    output: [{ name: "leaf.y", type: BOOL_SCALAR }],
  }).finish();
  const branch = (name: string, graph: Uint8Array) =>
    field(5, concat(onnx.AttributeProto.encode({ name, type: 5 }).finish(), field(6, graph)));
  const ifNode = (i: number, inner: Uint8Array) =>
    concat(
      onnx.NodeProto.encode({ name: `nest${i}`, opType: "If", input: ["cond.nest"], output: [`nest${i}.y`] }).finish(),
      branch("then_branch", inner),
      branch("else_branch", leaf),
    );
  let graph = leaf;
  for (let i = 0; i < depth - 1; i++) {
    graph = concat(
      onnx.GraphProto.encode({ name: `g${i}`, output: [{ name: `nest${i}.y`, type: BOOL_SCALAR }] }).finish(),
      field(1, ifNode(i, graph)),
    );
  }
  const main = message.graph ?? onnx.GraphProto.create();
  main.initializer = [...(main.initializer ?? []), { name: "cond.nest", dims: [], dataType: 9, int32Data: [1] }];
  main.output = [...(main.output ?? []), { name: `nest${depth - 1}.y`, type: BOOL_SCALAR }];
  const mainBytes = concat(onnx.GraphProto.encode(main).finish(), field(1, ifNode(depth - 1, graph)));
  message.graph = null;
  return concat(onnx.ModelProto.encode(message).finish(), field(7, mainBytes)); // concat copies into a Uint8Array
}

const BYTE_LEVEL: Record<string, (bytes: Uint8Array, rng: Rng) => Uint8Array> = {
  "bytes.nest-if": (b, rng) => {
    try {
      return nestIfChain(b, pick(rng, [2, 40, 400, 3000]));
    } catch {
      return b; // not a model any more
    }
  },
  "bytes.flip": (b, rng) => {
    const out = b.slice();
    for (let k = 1 + Math.floor(rng() * 8); k > 0; k--) out[Math.floor(rng() * out.length)] ^= 1 << (rng() * 8);
    return out;
  },
  "bytes.truncate": (b, rng) => b.slice(0, Math.floor(rng() * b.length)),
  "bytes.insert": (b, rng) => {
    const at = Math.floor(rng() * b.length);
    const junk = Uint8Array.from({ length: 1 + Math.floor(rng() * 16) }, () => Math.floor(rng() * 256));
    return new Uint8Array([...b.subarray(0, at), ...junk, ...b.subarray(at)]);
  },
  "bytes.varint": (b, rng) => {
    // A length or tag varint blown up to 10 bytes of 0xff: huge lengths and field numbers.
    const at = Math.floor(rng() * b.length);
    return new Uint8Array([...b.subarray(0, at), ...new Array(9).fill(0xff), 0x01, ...b.subarray(at + 1)]);
  },
};

// ---------------------------------------------------------------------------
// Side inputs.

const PIPELINES = [
  "",
  "prune",
  "prune{ratio=0.5}",
  "prune{threshold=1e-6}",
  "svd{energy=0.9}",
  "svd{rank=2}",
  "bfp",
  "bfp{scheme=mx,block=8}",
  "bfp{mantissa=4,rounding=stochastic,seed=3}",
  "fixed",
  "fold-bn,canonicalize,dce",
  "prune{ratio=0.3},svd{energy=0.95},bfp",
  "canonicalize,dce,bfp{keep-last=true}",
  "canonicalize,prune{ratio=0.5}",
  "fc-corr{threshold=0.2}",
  "fc-corr{granularity=neuron,merge-threshold=0.9}",
  "mask-select{mode=data,ratio=0.3}",
  "mask-select",
];
const BAD_PIPELINES = [
  "prun",
  "prune{ratio=2}",
  "prune{ratio=NaN}",
  "svd{energy=}",
  "bfp{mantissa=1e309}",
  "prune,,svd",
  "{",
  "x".repeat(100000),
  "bfp{skip=[a\nb]}",
  "prune{ratio=0.5",
  "svd{rank=-1}",
  "prune{\x1b[2J=1}",
];
const TARGETS = ["onnx", "onnx{external-data=true,threshold=64}", " onnx { external-data = true } ", "c", "fpga"];
const BAD_TARGETS = ["", "onnxx", "c{bogus=1}", "fpga{", "t".repeat(5000)];

/** The side inputs of one case, as plain data (a worker receives it). */
export interface SideInputs {
  passes: string;
  target: string;
  inputShapes?: Record<string, number[]>;
  /** Calibration samples to generate: dtype, shape. */
  calibration?: { dtype: "f32" | "i64" | "f64"; shape: number[] };
}

/** Each seed's input and a sample shape that fits it (the first axis: samples). */
export const SEED_INPUTS: Readonly<Record<string, readonly [string, readonly number[]]>> = {
  cnn: ["x", [3, 16, 16]],
  paddle: ["x", [3, 24, 40]],
  mlp: ["x", [4, 4]],
  densenet: ["input", [1, 28, 28]],
  mobilenet: ["input", [1, 28, 28]],
};

/** Side inputs for a case of `seedName`: mostly ones that fit it, sometimes ones that do not. */
function sideInputs(rng: Rng, seedName: string): SideInputs {
  const fits = rng() < 0.75;
  const passes = rng() < 0.85 ? pick(rng, PIPELINES) : pick(rng, BAD_PIPELINES);
  // c and fpga need lowered layers (fpga) or static shapes: mostly after a lowering pass.
  const lowered = /bfp|fixed/.test(passes);
  const target = rng() < 0.1
    ? pick(rng, BAD_TARGETS)
    : pick(rng, lowered ? TARGETS : TARGETS.filter((t) => !t.startsWith("fpga")));
  const side: SideInputs = { passes, target };
  const [input, sample] = SEED_INPUTS[seedName];
  if (rng() < 0.3 || (seedName === "paddle" && fits)) {
    side.inputShapes = fits
      ? { [input]: [1 + Math.floor(rng() * 2), ...sample] }
      : { [pick(rng, [input, "nope"])]: pick(rng, [[2, 3, 16, 16], [1, 3, 48, 64], [1, 4, 4], [2, 3, 0, 8], [1, 3]]) };
  }
  if (rng() < 0.4 || (passes.includes("fixed") && fits)) {
    side.calibration = fits ? { dtype: "f32", shape: [4, ...sample] } : {
      dtype: pick(rng, ["f32", "f32", "i64", "f64"] as const),
      shape: pick(rng, [[4, 3, 16, 16], [0, 3, 16, 16], [3, 16, 16], [4, 1, 16, 16], [4, 4, 4], [2, 3, 48, 64]]),
    };
  }
  return side;
}

/** The calibration tensor `spec` asks for: deterministic values in [-1, 1) (ones for integers). */
export function calibrationTensor(spec: { dtype: DType; shape: number[] }): Tensor {
  const count = spec.shape.reduce((a, b) => a * b, 1);
  const data = allocData(spec.dtype, count);
  if (data instanceof BigInt64Array) data.fill(1n);
  else for (let i = 0; i < count; i++) (data as Float32Array)[i] = ((i * 7919) % 200) / 100 - 1;
  return { dtype: spec.dtype, shape: spec.shape, data };
}

// ---------------------------------------------------------------------------
// Cases.

/** One fuzz case: a model (mutated from a seed) and side inputs. */
export interface FuzzCase {
  /** Seed of the generator that made it; `makeCase(seed, index)` makes it again. */
  seed: number;
  /** Index within the run. */
  index: number;
  /** What was done, for the report. */
  description: string;
  /** The model bytes. */
  model: Uint8Array;
  /** Pipeline, target and data. */
  side: SideInputs;
}

/** The `index`-th case of the run seeded with `seed` (reproducible on its own). */
export function makeCase(seeds: ReadonlyMap<string, Uint8Array>, seed: number, index: number): FuzzCase {
  const rng = mulberry32((seed * 0x9e3779b1 + index * 0x85ebca6b) >>> 0);
  // The hand-built seeds are small and fast; the trained exports come up one case in five.
  const names = [...seeds.keys()];
  const seedName = rng() < 0.8 ? pick(rng, names.slice(0, 3)) : pick(rng, names.slice(3));
  let model = seeds.get(seedName)!;
  const done: string[] = [seedName];
  const rounds = rng() < 0.25 ? 0 : 1 + Math.floor(rng() * rng() * 3);
  for (let r = 0; r < rounds; r++) {
    if (rng() < 0.25) {
      const name = pick(rng, Object.keys(BYTE_LEVEL));
      model = BYTE_LEVEL[name](model, rng);
      done.push(name);
      continue;
    }
    let message: ModelMsg;
    try {
      message = onnx.ModelProto.decode(model) as ModelMsg;
    } catch {
      break; // a byte mutation already broke the framing
    }
    const name = pick(rng, Object.keys(STRUCTURAL));
    const what = STRUCTURAL[name](message, rng);
    model = new Uint8Array(onnx.ModelProto.encode(message).finish());
    done.push(`${name}: ${what.slice(0, 80)}`);
  }
  return { seed, index, description: done.join("; "), model, side: sideInputs(rng, seedName) };
}
