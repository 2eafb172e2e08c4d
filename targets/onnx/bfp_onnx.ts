/**
 * BFP-lowered modules (ops of domain `ai.bfp`) as standard ONNX that
 * onnxruntime runs: weights become integer initializers behind
 * `DequantizeLinear` with power-of-two scales, each `ai.bfp.Quantize` becomes a
 * call of a model-local function that fake-quantizes exactly (standard ops,
 * opset 21), and `ai.bfp.Conv`/`Gemm` become the float `Conv`/`Gemm` of the
 * dequantized operands. Formulas: `ir/bfp.ts`; decisions:
 * `shared/docs/formats.md` ("BFP in ONNX").
 * @module
 */
import { attr, type Attribute } from "../../ir/attributes.ts";
import { type BfpFormat, bfpFormat, exponentRange } from "../../ir/bfp.ts";
import { type Graph, Op, Value } from "../../ir/graph.ts";
import type { Module } from "../../ir/module.ts";
import type onnxProto from "onnx-proto";
import { type IAttributeProto, type INodeProto, onnx } from "../../ir/onnx/proto.ts";
import { tensorToProto } from "../../ir/onnx/tensor_proto.ts";
import { BFP_DOMAIN, bfpElement, quantizeBlocking, quantizeFormat } from "../../ir/ops/bfp.ts";
import { opError } from "../../ir/ops/common.ts";
import {
  addConstant,
  cloneModule,
  eraseOp,
  eraseValue,
  insertBefore,
  renameValue,
  subgraphsOf,
} from "../../ir/rewriter.ts";
import { int64Tensor, type Tensor, tensor } from "../../ir/tensor.ts";
import { type BfpType, isTensorType, ONNX_DTYPE_CODES } from "../../ir/types.ts";

/** Default-domain opset of a legalized BFP model (blocked `DequantizeLinear` needs 21). */
export const BFP_ONNX_OPSET = 21;
/** IR version of a legalized BFP model (onnxruntime 1.19 to 1.22 reject 11 and newer). */
export const BFP_ONNX_IR_VERSION = 10;
/** Version of the `bfp.*` metadata written by {@linkcode legalizeBfp}. */
export const BFP_ONNX_METADATA_VERSION = 1;
/** The `bfp.generator` metadata value. */
export const BFP_ONNX_GENERATOR = "@cnnc/compiler onnx target, ai.bfp legalization 1";

/** ONNX `FunctionProto` fields (model-local functions). */
type IFunctionProto = onnxProto.onnx.IFunctionProto;

const AttrType = onnx.AttributeProto.AttributeType;
const FLOAT = ONNX_DTYPE_CODES.f32;
const INT64 = ONNX_DTYPE_CODES.i64;
/** Attributes of `ai.bfp.Conv`/`Gemm` that describe the integer kernel, which the float op does not model. */
const KERNEL_ATTRIBUTES = new Set(["accumulator", "rounding", "seed"]);
const CONV_ATTRIBUTES = new Set(["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"]);

/**
 * True when the module (or a subgraph) holds an op of domain `ai.bfp` other
 * than a call of one of its model-local functions, i.e. when
 * {@linkcode legalizeBfp} is needed before ONNX export.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module } from "../../ir/module.ts";
 * import { containsBfpOps } from "./bfp_onnx.ts";
 * assert.equal(containsBfpOps(new Module()), false);
 * ```
 */
export function containsBfpOps(module: Module): boolean {
  const functions = bfpFunctionNames(module);
  const visit = (graph: Graph): boolean =>
    graph.ops.some((op) =>
      (op.domain === BFP_DOMAIN && !functions.has(op.type)) ||
      [...op.attributes.values()].some((a) => subgraphsOf(a).some(visit))
    );
  return visit(module.graph);
}

/** Names of the module's model-local functions in domain `ai.bfp` (calls of them are already legal ONNX). */
function bfpFunctionNames(module: Module): Set<string> {
  const functions = (module.extra.functions ?? []) as IFunctionProto[];
  return new Set(functions.filter((f) => f.domain === BFP_DOMAIN).map((f) => f.name ?? ""));
}

/** What one `ai.bfp.Quantize` computes: the attributes that select its function. */
interface QuantizeSpec {
  readonly format: BfpFormat;
  readonly block: number;
  readonly group: number;
}

/** The model-local function name for a Quantize attribute set, e.g. `Quantize_m8_e5_b0_g1_nearest_even_floor`. */
function functionName(spec: QuantizeSpec): string {
  const { mantissaBits: m, exponentBits: e, rounding, exponentRule } = spec.format;
  const words = `${rounding}_${exponentRule}`.replaceAll("-", "_");
  return `Quantize_m${m}_e${e}_b${spec.block}_g${spec.group}_${words}`;
}

/** One entry of the `bfp.blocking` metadata. */
type BlockingRecord = Record<string, string | number>;

/** State of one legalization run. */
class Legalizer {
  constructor(readonly existingFunctions: ReadonlySet<string>) {}

  /** Function name to its proto, in first-use order. */
  readonly functions = new Map<string, IFunctionProto>();
  /** Tensor name to how it is blocked. */
  readonly blocking = new Map<string, BlockingRecord>();
  readonly formats = new Map<string, BfpFormat>();
  readonly accumulators = new Set<number>();
  /** Ops this legalization created, already in opset-21 form. */
  readonly created = new Set<Op>();

  lowerGraph(graph: Graph): void {
    for (const op of [...graph.ops]) {
      for (const a of op.attributes.values()) for (const g of subgraphsOf(a)) this.lowerGraph(g);
    }
    const fakeQuant = new Map<Value, Value>();
    const dequantized = new Map<Value, { we: Value; w: Value }>();
    const exponents = new Set<Value>();
    for (const op of [...graph.ops]) {
      if (op.domain !== BFP_DOMAIN || this.existingFunctions.has(op.type)) continue;
      switch (op.type) {
        case "Quantize":
          this.lowerQuantize(graph, op, fakeQuant);
          break;
        case "Conv":
        case "Gemm":
          this.lowerLayer(graph, op, fakeQuant, dequantized, exponents);
          break;
        default:
          throw opError(op, `unknown ${BFP_DOMAIN} op; only Quantize, Conv and Gemm have an ONNX form`);
      }
    }
    // Quantize results now stand for their fake-quantized float; their names go to the function calls' results.
    for (const [xm, fq] of fakeQuant) {
      const quantize = xm.producer!;
      const xe = quantize.results[1];
      checkUnused(xm, quantize, "mantissas");
      if (xe !== undefined) checkUnused(xe, quantize, "exponents");
      eraseOp(quantize);
      renameValue(fq, xm.name);
    }
    for (const we of exponents) if (we.isDead) eraseValue(we);
    for (const v of graph.values()) {
      if (isTensorType(v.type) && typeof v.type.elem === "object") {
        const where = v.producer !== null ? ` (result of op "${v.producer.name}" (${v.producer.type}))` : "";
        throw new Error(`value "${v.name}"${where} has a ${v.type.elem.kind} type, which ONNX cannot represent`);
      }
    }
  }

  lowerQuantize(graph: Graph, op: Op, fakeQuant: Map<Value, Value>): void {
    const spec = quantizeSpec(op);
    const x = op.operand(0), xm = op.results[0];
    if (x === null || xm === undefined) throw opError(op, "needs an input X and a mantissa result");
    const name = functionName(spec);
    if (!this.functions.has(name)) this.functions.set(name, quantizeFunction(name, spec));
    const shape = isTensorType(x.type) ? x.type.shape : null;
    const fq = new Value(graph.freshName(`${xm.name}.fq`), { elem: "f32", shape });
    insertBefore(op, new Op({ name: op.name, type: name, domain: BFP_DOMAIN, operands: [x], results: [fq] }));
    fakeQuant.set(xm, fq);
    this.record(x.name, {
      role: "activation",
      mantissa_bits: spec.format.mantissaBits,
      exponent_bits: spec.format.exponentBits,
      block: spec.block,
      group: spec.group,
      axis: 1,
      rounding: spec.format.rounding,
      exponent_rule: spec.format.exponentRule,
      function: `${BFP_DOMAIN}.${name}`,
    }, spec.format);
  }

  lowerLayer(
    graph: Graph,
    op: Op,
    fakeQuant: Map<Value, Value>,
    dequantized: Map<Value, { we: Value; w: Value }>,
    exponents: Set<Value>,
  ): void {
    const [xm, xe, wm, we] = [0, 1, 2, 3].map((i) => op.operand(i));
    const bias = op.operand(4);
    const fq = xm === null ? undefined : fakeQuant.get(xm);
    if (fq === undefined || xe !== xm!.producer!.results[1]) {
      throw opError(op, `inputs 0 and 1 must be the mantissas and exponents of one ${BFP_DOMAIN}.Quantize`);
    }
    if (wm === null || we === null) throw opError(op, "needs weight mantissas and exponents (inputs 2 and 3)");
    let dq = dequantized.get(wm);
    if (dq === undefined) {
      dq = { we, w: this.dequantizeWeights(graph, op, wm, we) };
      dequantized.set(wm, dq);
    } else if (dq.we !== we) {
      throw opError(
        op,
        `weight mantissas "${wm.name}" are used with two exponent tensors ("${dq.we.name}", "${we.name}")`,
      );
    }
    const w = dq.w;
    exponents.add(we);
    for (const name of op.attributes.keys()) {
      if (KERNEL_ATTRIBUTES.has(name)) continue;
      if (op.type === "Conv" && CONV_ATTRIBUTES.has(name)) continue;
      throw opError(op, `attribute "${name}" has no ONNX ${op.type} form`);
    }
    this.accumulators.add(op.int("accumulator", 32));
    const y = op.result;
    const attributes: [string, Attribute][] = op.type === "Conv"
      ? [...op.attributes].filter(([name]) => CONV_ATTRIBUTES.has(name))
      : [["transB", attr.int(1)]];
    const operands = bias === null ? [fq, w] : [fq, w, bias];
    const result = new Value(graph.freshName(`${y.name}.f32`), y.type);
    result.docString = y.docString;
    this.created.add(
      insertBefore(op, new Op({ name: op.name, type: op.type, operands, results: [result], attributes })),
    );
    for (const use of [...y.uses]) use.op.setOperand(use.index, result);
    for (let i = 0; i < graph.outputs.length; i++) if (graph.outputs[i] === y) graph.outputs[i] = result;
    eraseOp(op);
    renameValue(result, y.name);
  }

  /** `DequantizeLinear(wm, 2^(we - (L-2)))`: per-axis (axis 0) for block 0, blocked along axis 1 otherwise. */
  dequantizeWeights(graph: Graph, op: Op, wm: Value, we: Value): Value {
    const elem = bfpElementOf(wm);
    if (elem === null) throw opError(op, `weight mantissas "${wm.name}" must have a bfp type`);
    const mantissas = wm.constant, exps = we.constant;
    if (mantissas === null || exps === null) {
      throw opError(op, `weights "${wm.name}" and "${we.name}" must be constants (ONNX initializers)`);
    }
    const storage = elem.mantissa <= 8 ? "i8" : "i16";
    if (mantissas.dtype !== storage) {
      throw opError(op, `weight mantissas "${wm.name}" (${elem.mantissa} bits) must be stored as ${storage}`);
    }
    if (exps.dtype !== "i8") throw opError(op, `weight exponents "${we.name}" must be i8, found ${exps.dtype}`);
    const shape = mantissas.shape;
    const o = shape[0];
    const expected = elem.block === 0 ? [o] : [o, Math.ceil(shape[1] / elem.block), ...shape.slice(2)];
    if (shape.length < 2 || exps.shape.join(",") !== expected.join(",")) {
      throw opError(
        op,
        `weight exponents "${we.name}" must have shape [${expected.join(",")}] for mantissas [${shape.join(",")}] ` +
          `with block ${elem.block}, found [${exps.shape.join(",")}]`,
      );
    }
    const format = bfpFormat({ mantissaBits: elem.mantissa, exponentBits: elem.exponent });
    const { min, max } = exponentRange(format);
    const e = exps.data as Int8Array;
    const scales = new Float32Array(e.length);
    for (let i = 0; i < e.length; i++) {
      if (e[i] < min || e[i] > max) {
        throw opError(op, `weight exponent ${e[i]} of "${we.name}" (element ${i}) is outside [${min}, ${max}]`);
      }
      scales[i] = 2 ** (e[i] - (elem.mantissa - 2)); // >= 2^-141: exact in float32 (subnormal at worst)
    }
    // The mantissas keep their initializer; only the type changes from bfp<...> to its integer storage.
    wm.type = { elem: storage, shape: [...shape] };
    const scale = addConstant(graph, `${wm.name}.scale`, tensor("f32", exps.shape, scales));
    const attributes: [string, Attribute][] = elem.block === 0
      ? [["axis", attr.int(0)]]
      : [["axis", attr.int(1)], ["block_size", attr.int(elem.block)]];
    const w = new Value(graph.freshName(`${wm.name}.dq`), { elem: "f32", shape: [...shape] });
    const dq = new Op({
      name: graph.freshName(`${wm.name}.dequantize`),
      type: "DequantizeLinear",
      operands: [wm, scale],
      results: [w],
      attributes,
    });
    this.created.add(insertBefore(op, dq));
    this.record(wm.name, {
      role: "weight",
      mantissa_bits: elem.mantissa,
      exponent_bits: elem.exponent,
      block: elem.block,
      axis: elem.block === 0 ? 0 : 1,
      exponents: we.name,
    }, format);
    return w;
  }

  record(tensorName: string, entry: BlockingRecord, format: BfpFormat): void {
    this.blocking.set(tensorName, entry);
    this.formats.set(tensorName, format);
  }

  /** `bfp.*` metadata: the format (distinct values joined by `,` if layers differ) and the blocking per tensor. */
  metadata(): [string, string][] {
    const distinct = (f: (entry: BlockingRecord) => string | number | undefined): string =>
      [...new Set([...this.blocking.values()].map(f).filter((v) => v !== undefined))].join(",");
    return [
      ["bfp.version", String(BFP_ONNX_METADATA_VERSION)],
      ["bfp.mantissa_bits", distinct((b) => b.mantissa_bits)],
      ["bfp.exponent_bits", distinct((b) => b.exponent_bits)],
      ["bfp.exponent_bias", [...new Set([...this.formats.values()].map((f) => exponentRange(f).bias))].join(",")],
      ["bfp.rounding", distinct((b) => b.rounding)],
      ["bfp.exponent_rule", distinct((b) => b.exponent_rule)],
      ["bfp.overflow", "saturate"],
      ["bfp.accumulator_bits", [...this.accumulators].join(",")],
      ["bfp.blocking", JSON.stringify(Object.fromEntries(this.blocking))],
      ["bfp.generator", BFP_ONNX_GENERATOR],
    ];
  }
}

function bfpElementOf(v: Value): BfpType | null {
  return isTensorType(v.type) ? bfpElement(v.type) : null;
}

function quantizeSpec(op: Op): QuantizeSpec {
  if (op.string("rounding", "nearest-even") === "stochastic") {
    throw opError(
      op,
      "stochastic rounding cannot be expressed in ONNX (no standard op draws the seeded splitmix32 stream); " +
        "choose a deterministic rounding mode for ONNX export",
    );
  }
  const { block, group } = quantizeBlocking(op);
  return { format: quantizeFormat(op), block, group: block === 0 ? 1 : group! };
}

/** Throw when a Quantize result is still used (or returned) after the lowered layers stopped using it. */
function checkUnused(v: Value, quantize: Op, what: string): void {
  const user = v.uses[0]?.op;
  if (user !== undefined) {
    throw opError(
      user,
      `uses the BFP ${what} "${v.name}" of op "${quantize.name}" (${quantize.type}), which have no ONNX form; ` +
        `only ${BFP_DOMAIN}.Conv and ${BFP_DOMAIN}.Gemm may consume them`,
    );
  }
  if (!v.isDead) {
    throw opError(quantize, `its BFP ${what} "${v.name}" are a graph output, which ONNX cannot represent`);
  }
}

// ---------------------------------------------------------------------------
// The fake-quantization function (standard ops only).

/** Powers of two `2^k`, k in [POW2_MIN, POW2_MAX], as float32 (2^128 and 2^129 are Infinity). */
const POW2_MIN = -141, POW2_MAX = 129;
/** Smallest normal float32: Log of anything smaller is clamped there by vectorized log kernels. */
const MIN_NORMAL = 2 ** -126;

/** Builds a function body node by node with fresh local names. */
class BodyBuilder {
  readonly nodes: INodeProto[] = [];
  readonly #constants = new Set<string>();

  /** A `Constant` node holding `t` (once per name: callers give equal names to equal values); returns its output name. */
  constant(name: string, t: Tensor): string {
    if (this.#constants.has(name)) return name;
    this.#constants.add(name);
    this.nodes.push({
      output: [name],
      opType: "Constant",
      attribute: [{ name: "value", type: AttrType.TENSOR, t: tensorToProto("", t) }],
    });
    return name;
  }

  f32(name: string, value: number): string {
    return this.constant(name, tensor("f32", [], new Float32Array([value])));
  }

  i64(name: string, values: readonly number[]): string {
    return this.constant(name, int64Tensor(values));
  }

  /** A node of `opType` writing `output`. */
  node(opType: string, inputs: readonly string[], output: string, attribute: IAttributeProto[] = []): string {
    const node: INodeProto = { input: [...inputs], output: [output], opType };
    if (attribute.length > 0) node.attribute = attribute;
    this.nodes.push(node);
    return output;
  }

  cast(input: string, to: number, output: string): string {
    return this.node("Cast", [input], output, [{ name: "to", type: AttrType.INT, i: to }]);
  }

  /** `2^k` for float `k` (an exact integer) by lookup: exact, unlike `Pow`, whatever the runtime's pow. */
  pow2(table: string, k: string, offset: string, output: string): string {
    const index = this.cast(this.node("Add", [k, offset], `${output}_k`), INT64, `${output}_index`);
    return this.node("Gather", [table, index], output);
  }
}

/**
 * The FunctionProto of one Quantize attribute set: input `x` (f32 `[N, C,
 * ...]`), output `y`, the BFP value of every element as float32 (what
 * `dequantizeBfp(quantizeBfp(x))` gives), per the blocking of the issue-6
 * contract. Exponents are exact: `Floor(Log(m) / ln 2)` is corrected by
 * comparing with exact powers of two from a table.
 */
function quantizeFunction(name: string, spec: QuantizeSpec): IFunctionProto {
  const b = new BodyBuilder();
  const { format, block, group } = spec;
  const L = format.mantissaBits;
  const maxM = (1 << (L - 1)) - 1;
  const { min: eMin, max: eMax } = exponentRange(format);
  const table = b.constant(
    "pow2_table",
    tensor(
      "f32",
      [POW2_MAX - POW2_MIN + 1],
      Float32Array.from({ length: POW2_MAX - POW2_MIN + 1 }, (_, i) => 2 ** (i + POW2_MIN)),
    ),
  );
  // Blocks: `xb` holds every block along one axis (`reduceAxis`), so the scale broadcasts back over it.
  let xb: string, reduceAxis: number;
  const shape = b.node("Shape", ["x"], "x_shape");
  let restore: (y: string) => string;
  if (block === 0) {
    // One block per sample: [N, everything else]; `0` copies N, so a dynamic batch keeps working.
    xb = b.node("Reshape", ["x", b.i64("rows_shape", [0, -1])], "x_rows");
    reduceAxis = 1;
    restore = (y) => b.node("Reshape", [y, shape], "y");
  } else {
    // Blocks of B channels inside each of G groups: [N, G, Cg, S] zero-padded to [N, G, nb·B, S], seen as [N, G, nb, B, S].
    const zero = b.i64("zero", [0]), minusOne = b.i64("minus_one", [-1]), g = b.i64("groups", [group]);
    const bs = b.i64("block", [block]);
    const c = b.node("Slice", [shape, b.i64("one", [1]), b.i64("two", [2])], "channels");
    const cg = b.node("Div", [c, g], "group_channels");
    const nb = b.node("Div", [b.node("Add", [cg, b.i64("block_minus_one", [block - 1])], "cg_up"), bs], "blocks");
    const padded = b.node("Mul", [nb, bs], "padded_channels");
    const pad = b.node("Sub", [padded, cg], "pad_channels");
    const x4 = b.node("Reshape", ["x", b.node("Concat", [zero, g, cg, minusOne], "shape4", [axisAttr(0)])], "x4");
    const pads = b.node("Concat", [b.i64("zeros6", [0, 0, 0, 0, 0, 0]), pad, zero], "pads", [axisAttr(0)]);
    const xp = b.node("Pad", [x4, pads], "x_padded");
    xb = b.node("Reshape", [xp, b.node("Concat", [zero, g, nb, bs, minusOne], "shape5", [axisAttr(0)])], "x_blocks");
    reduceAxis = 3;
    restore = (y) => {
      const y4 = b.node("Reshape", [y, b.node("Concat", [zero, g, padded, minusOne], "shape4p", [axisAttr(0)])], "y4");
      const cut = b.node("Slice", [y4, zero, cg, b.i64("axis2", [2])], "y4_cut");
      return b.node("Reshape", [cut, shape], "y");
    };
  }
  const amax = b.node(
    "ReduceMax",
    [b.node("Abs", [xb], "x_abs"), b.i64("reduce_axes", [reduceAxis])],
    "amax",
    [{ name: "keepdims", type: AttrType.INT, i: 1 }],
  );
  // e = floor(log2 amax), exactly: Log's rounding near powers of two is fixed by exact comparisons.
  const offset = (k: number): string => b.f32(`offset_${k < 0 ? "m" : ""}${Math.abs(k)}`, k - POW2_MIN);
  const tiny = b.f32("min_normal", MIN_NORMAL);
  const m = b.node("Max", [amax, tiny], "m");
  const log2 = b.node("Div", [b.node("Log", [m], "ln_m"), b.f32("ln2", Math.LN2)], "log2_m");
  const e0 = b.node("Clip", [b.node("Floor", [log2], "e0_raw"), b.f32("e0_min", -127), b.f32("e0_max", 128)], "e0");
  const up = b.cast(b.node("GreaterOrEqual", [m, b.pow2(table, e0, offset(1), "p1")], "up_bool"), FLOAT, "up");
  const e1 = b.node("Add", [e0, up], "e1");
  const down = b.cast(b.node("Greater", [b.pow2(table, e1, offset(0), "p0"), m], "down_bool"), FLOAT, "down");
  const e2 = b.node("Sub", [e1, down], "e2");
  // Below 2^-126 (subnormal or zero) floor(log2) is at most -127: only E = 8 (min -127) can tell.
  const sub = b.cast(b.node("Less", [amax, tiny], "subnormal_bool"), FLOAT, "subnormal");
  let e = b.node("Sub", [e2, sub], "e3");
  const stepOffset = offset(-(L - 2));
  const maxMantissa = b.f32("max_mantissa", maxM);
  if (format.exponentRule === "never-clamp") {
    // One more when the scaled maximum (unrounded, as ir/bfp.ts) exceeds maxM; maxM·2^k is exact.
    const limit = b.node("Mul", [b.pow2(table, e, stepOffset, "step_floor"), maxMantissa], "limit");
    e = b.node("Add", [e, b.cast(b.node("Greater", [amax, limit], "bump_bool"), FLOAT, "bump")], "e4");
  }
  e = b.node("Clip", [e, b.f32("e_min", eMin), b.f32("e_max", eMax)], "e");
  const step = b.pow2(table, e, stepOffset, "step");
  // Mantissas: round(x / step), exact division by a power of two; then clamp to ±maxM and scale back.
  const q = b.node("Div", [xb, step], "q");
  const zeroF = b.f32("zero_f", 0);
  let r: string;
  let whenZero = zeroF;
  switch (format.rounding) {
    case "nearest-even":
      r = b.node("Round", [q], "r_raw"); // ONNX Round: halves to even
      break;
    case "toward-positive":
      r = b.node("Ceil", [q], "r_raw");
      // A quotient that underflowed to 0 (tiny x, huge step) still rounds up to 1 when x > 0.
      whenZero = b.node("Where", [b.node("Greater", [xb, zeroF], "x_pos"), b.f32("one_f", 1), zeroF], "r_zero");
      break;
    case "toward-negative":
      r = b.node("Floor", [q], "r_raw");
      whenZero = b.node("Where", [b.node("Less", [xb, zeroF], "x_neg"), b.f32("minus_one_f", -1), zeroF], "r_zero");
      break;
    case "toward-zero":
      r = b.node(
        "Mul",
        [b.node("Sign", [q], "q_sign"), b.node("Floor", [b.node("Abs", [q], "q_abs")], "q_floor")],
        "r_raw",
      );
      break;
    case "stochastic":
      throw new Error("internal: stochastic rounding reached the ONNX function builder");
  }
  // Zero mantissas as +0 (Round(-0.3) is -0), so values equal dequantizeBfp's bit for bit.
  r = b.node("Where", [b.node("Equal", [r, zeroF], "r_is_zero"), whenZero, r], "r");
  const clamped = b.node("Clip", [r, b.f32("min_mantissa", -maxM), maxMantissa], "mantissa");
  restore(b.node("Mul", [clamped, step], "y_blocks"));
  return {
    name,
    domain: BFP_DOMAIN,
    input: ["x"],
    output: ["y"],
    node: b.nodes,
    opsetImport: [{ domain: "", version: BFP_ONNX_OPSET }],
    docString: `BFP fake quantization (ir/bfp.ts): mantissa ${L} bits, exponent ${format.exponentBits} bits ` +
      `(range [${eMin}, ${eMax}]), ${
        block === 0 ? "one block per sample" : `blocks of ${block} channels in ${group} group(s)`
      }, ` +
      `rounding ${format.rounding}, exponent rule ${format.exponentRule}`,
  };
}

function axisAttr(axis: number): IAttributeProto {
  return { name: "axis", type: AttrType.INT, i: axis };
}

// ---------------------------------------------------------------------------
// Default-domain ops from the module's opset to 21.

/**
 * Every version (`since_version`) of the default-domain ops up to opset 21:
 * ONNX 1.12's schemas (opsets 1..17, from `onnx.defs.get_all_schemas_with_history`)
 * plus the ONNX Changelog for opsets 18..21. Only ops with more than one version.
 */
const OP_VERSIONS: Readonly<Record<string, readonly number[]>> = parseVersions(
  "Abs:1,6,13 Add:1,6,7,13,14 And:1,7 ArgMax:1,11,12,13 ArgMin:1,11,12,13 AveragePool:1,7,10,11,19 " +
    "BatchNormalization:1,6,7,9,14,15 Cast:1,6,9,13,19,21 CastLike:15,19,21 Ceil:1,6,13 Clip:1,6,11,12,13 " +
    "Compress:9,11 Concat:1,4,11,13 Constant:1,9,11,12,13,19,21 ConstantOfShape:9,20,21 Conv:1,11 " +
    "ConvTranspose:1,11 CumSum:11,14 DFT:17,20 DepthToSpace:1,11,13 DequantizeLinear:10,13,19,21 Div:1,6,7,13,14 " +
    "Dropout:1,6,7,10,12,13 Elu:1,6 Equal:1,7,11,13,19 Erf:9,13 Exp:1,6,13 Expand:8,13 Flatten:1,9,11,13,21 " +
    "Floor:1,6,13 GRU:1,3,7,14 Gather:1,11,13 GatherElements:11,13 GatherND:11,12,13 Gemm:1,6,7,9,11,13 " +
    "GlobalLpPool:1,2 Greater:1,7,9,13 GreaterOrEqual:12,16 GridSample:16,20 GroupNormalization:18,21 " +
    "HardSigmoid:1,6 Hardmax:1,11,13 Identity:1,13,14,16,19,21 If:1,11,13,16,19,21 InstanceNormalization:1,6 " +
    "IsInf:10,20 IsNaN:9,13,20 LRN:1,13 LSTM:1,7,14 LeakyRelu:1,6,16 Less:1,7,9,13 LessOrEqual:12,16 Log:1,6,13 " +
    "LogSoftmax:1,11,13 Loop:1,11,13,16,19,21 LpPool:1,2,11,18 MatMul:1,9,13 Max:1,6,8,12,13 " +
    "MaxPool:1,8,10,11,12 MaxUnpool:9,11 Mean:1,6,8,13 MeanVarianceNormalization:9,13 Min:1,6,8,12,13 " +
    "Mod:10,13 Mul:1,6,7,13,14 Neg:1,6,13 NegativeLogLikelihoodLoss:12,13 NonMaxSuppression:10,11 NonZero:9,13 " +
    "OneHot:9,11 OptionalGetElement:15,18 OptionalHasElement:15,18 Or:1,7 PRelu:1,6,7,9,16 " +
    "Pad:1,2,11,13,18,19,21 Pow:1,7,12,13,15 QLinearMatMul:10,21 QuantizeLinear:10,13,19,21 RNN:1,7,14 " +
    "Reciprocal:1,6,13 ReduceL1:1,11,13,18 ReduceL2:1,11,13,18 ReduceLogSum:1,11,13,18 " +
    "ReduceLogSumExp:1,11,13,18 ReduceMax:1,11,12,13,18,20 ReduceMean:1,11,13,18 ReduceMin:1,11,12,13,18,20 " +
    "ReduceProd:1,11,13,18 ReduceSum:1,11,13 ReduceSumSquare:1,11,13,18 Relu:1,6,13,14 Reshape:1,5,13,14,19,21 " +
    "Resize:10,11,13,18,19 RoiAlign:10,16 Scan:8,9,11,16,19,21 Scatter:9,11 ScatterElements:11,13,16,18 " +
    "ScatterND:11,13,16,18 Selu:1,6 Shape:1,13,15,19,21 Sigmoid:1,6,13 Sign:9,13 Size:1,13,19,21 " +
    "Slice:1,10,11,13 Softmax:1,11,13 SoftmaxCrossEntropyLoss:12,13 SpaceToDepth:1,13 Split:1,2,11,13,18 " +
    "Sqrt:1,6,13 Squeeze:1,11,13,21 Sub:1,6,7,13,14 Sum:1,6,8,13 Tanh:1,6,13 Tile:1,6,13 TopK:1,10,11 " +
    "Transpose:1,13,21 Unsqueeze:1,11,13,21 Upsample:1,7,9,10 Where:9,16 Xor:1,7",
);

function parseVersions(text: string): Record<string, number[]> {
  return Object.fromEntries(
    text.split(" ").map((entry) => {
      const [op, versions] = entry.split(":");
      return [op, versions.split(",").map(Number)];
    }),
  );
}

/** Version changes (`Op-version`) from opset 8 on that only add types, attributes or inputs with defaults keeping the old behaviour. */
const COMPATIBLE = new Set(
  (
    "Max-8 Mean-8 Min-8 Sum-8 MaxPool-8 " +
    "Cast-9 Constant-9 Flatten-9 Gemm-9 Greater-9 Less-9 MatMul-9 PRelu-9 " +
    "AveragePool-10 Dropout-10 MaxPool-10 " +
    "ArgMax-11 ArgMin-11 AveragePool-11 Compress-11 Concat-11 Constant-11 Conv-11 ConvTranspose-11 " +
    "DepthToSpace-11 Equal-11 Flatten-11 Gather-11 Gemm-11 Hardmax-11 If-11 LogSoftmax-11 Loop-11 LpPool-11 " +
    "MaxPool-11 MaxUnpool-11 NonMaxSuppression-11 OneHot-11 ReduceL1-11 ReduceL2-11 ReduceLogSum-11 " +
    "ReduceLogSumExp-11 ReduceMax-11 ReduceMean-11 ReduceMin-11 ReduceProd-11 ReduceSum-11 ReduceSumSquare-11 " +
    "Scan-11 Slice-11 Softmax-11 Split-11 Squeeze-11 TopK-11 Unsqueeze-11 " +
    "ArgMax-12 ArgMin-12 Clip-12 Constant-12 GatherND-12 Max-12 MaxPool-12 Min-12 Pow-12 ReduceMax-12 ReduceMin-12 " +
    "Abs-13 Add-13 ArgMax-13 ArgMin-13 Cast-13 Ceil-13 Clip-13 Concat-13 Constant-13 DepthToSpace-13 " +
    "DequantizeLinear-13 Div-13 Dropout-13 Equal-13 Erf-13 Exp-13 Expand-13 Flatten-13 Floor-13 Gather-13 " +
    "GatherElements-13 GatherND-13 Gemm-13 Greater-13 Identity-13 If-13 IsNaN-13 LRN-13 Less-13 Log-13 Loop-13 " +
    "MatMul-13 Max-13 Mean-13 MeanVarianceNormalization-13 Min-13 Mod-13 Mul-13 Neg-13 " +
    "NegativeLogLikelihoodLoss-13 NonZero-13 Pad-13 Pow-13 QuantizeLinear-13 Reciprocal-13 ReduceL1-13 " +
    "ReduceL2-13 ReduceLogSum-13 ReduceLogSumExp-13 ReduceMax-13 ReduceMean-13 ReduceMin-13 ReduceProd-13 " +
    "ReduceSumSquare-13 Relu-13 Reshape-13 ScatterElements-13 ScatterND-13 Shape-13 Sigmoid-13 Sign-13 Size-13 " +
    "Slice-13 SoftmaxCrossEntropyLoss-13 SpaceToDepth-13 Sqrt-13 Sub-13 Sum-13 Tanh-13 Tile-13 Transpose-13 " +
    "Add-14 BatchNormalization-14 CumSum-14 Div-14 GRU-14 Identity-14 LSTM-14 Mul-14 RNN-14 Relu-14 Reshape-14 " +
    "Sub-14 BatchNormalization-15 Pow-15 Shape-15 " +
    "GreaterOrEqual-16 Identity-16 If-16 LeakyRelu-16 LessOrEqual-16 Loop-16 PRelu-16 Scan-16 " +
    "ScatterElements-16 ScatterND-16 Where-16 " +
    "LpPool-18 OptionalGetElement-18 OptionalHasElement-18 Pad-18 Resize-18 ScatterElements-18 ScatterND-18 " +
    "AveragePool-19 Cast-19 CastLike-19 Constant-19 DequantizeLinear-19 Equal-19 Identity-19 If-19 Loop-19 " +
    "Pad-19 QuantizeLinear-19 Reshape-19 Resize-19 Scan-19 Shape-19 Size-19 " +
    "ConstantOfShape-20 IsInf-20 IsNaN-20 ReduceMax-20 ReduceMin-20 " +
    "Cast-21 CastLike-21 Constant-21 ConstantOfShape-21 DequantizeLinear-21 Flatten-21 Identity-21 If-21 " +
    "Loop-21 Pad-21 QLinearMatMul-21 QuantizeLinear-21 Reshape-21 Scan-21 Shape-21 Size-21 Squeeze-21 " +
    "Transpose-21 Unsqueeze-21"
  ).split(" "),
);

/** Rewrites an op across one version change; may replace the op (returns nothing either way). */
type Adapter = (op: Op, graph: Graph) => void;

const REDUCE_AXES_TO_INPUT: Adapter = (op, graph) => attributeToInput(op, graph, "axes", 1);

/** Version changes with a rewrite (the others outside {@linkcode COMPATIBLE} are refused). */
const ADAPTERS: Readonly<Record<string, Adapter>> = {
  // Opset 18 (13 for ReduceSum) moved `axes` from an attribute to the optional second input.
  ...Object.fromEntries(
    ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd"]
      .concat(["ReduceSumSquare"]).map((t) => [`${t}-18`, REDUCE_AXES_TO_INPUT]),
  ),
  "ReduceSum-13": REDUCE_AXES_TO_INPUT,
  "Squeeze-13": (op, graph) => attributeToInput(op, graph, "axes", 1),
  "Unsqueeze-13": (op, graph) => attributeToInput(op, graph, "axes", 1),
  "Split-13": (op, graph) => attributeToInput(op, graph, "split", 1),
  // Split-18: "Either input 'split' or the attribute 'num_outputs' should be specified, but not both."
  "Split-18": (op) => {
    if (op.operand(1) === null) op.attributes.set("num_outputs", attr.int(op.results.length));
  },
  "Slice-10": (op, graph) => {
    for (const [name, index] of [["starts", 1], ["ends", 2], ["axes", 3]] as const) {
      attributeToInput(op, graph, name, index);
    }
  },
  "TopK-10": (op, graph) => attributeToInput(op, graph, "k", 1),
  "Pad-11": (op, graph) => {
    attributeToInput(op, graph, "pads", 1);
    scalarAttributeToInput(op, graph, "value", 2);
  },
  "Clip-11": (op, graph) => {
    const min = op.float("min"), max = op.float("max");
    op.attributes.delete("min");
    op.attributes.delete("max");
    if (min !== undefined) setOperand(op, 1, addConstant(graph, `${op.name}.min`, scalarLike(op, min)));
    if (max !== undefined) setOperand(op, 2, addConstant(graph, `${op.name}.max`, scalarLike(op, max)));
  },
  "Dropout-12": (op, graph) => scalarAttributeToInput(op, graph, "ratio", 1),
  "BatchNormalization-9": (op) => {
    if (op.int("spatial", 1) !== 1) throw opError(op, "spatial=0 was removed in opset 9 and has no opset 21 form");
    op.attributes.delete("spatial");
  },
  "Softmax-13": softmaxAxis,
  "LogSoftmax-13": softmaxAxis,
  "Hardmax-13": softmaxAxis,
  "Resize-13": (op) => {
    if (op.string("coordinate_transformation_mode", "half_pixel") === "tf_half_pixel_for_nn") {
      throw opError(op, 'coordinate_transformation_mode "tf_half_pixel_for_nn" was removed in opset 13');
    }
  },
  // RoiAlign-16 added coordinate_transformation_mode with default half_pixel; the old behaviour is output_half_pixel.
  "RoiAlign-16": (op) => {
    if (op.attr("coordinate_transformation_mode") === undefined) {
      op.attributes.set("coordinate_transformation_mode", attr.string("output_half_pixel"));
    }
  },
  // GridSample-20 renamed the modes "bilinear" and "bicubic" to "linear" and "cubic".
  "GridSample-20": (op) => {
    const mode = op.string("mode", "bilinear");
    const renamed = mode === "bilinear" ? "linear" : mode === "bicubic" ? "cubic" : mode;
    op.attributes.set("mode", attr.string(renamed));
  },
};

/** Why a version change is refused, where the reason is known. */
const INCOMPATIBLE: Readonly<Record<string, string>> = {
  "Resize-11": "its inputs and coordinate transformation changed in opset 11",
  "Scan-9": "its batch axis and sequence_lens input were removed in opset 9",
  "DFT-20": "its axis attribute became an input with another default in opset 20",
  "GroupNormalization-21": "its scale and bias changed from per group to per channel in opset 21",
};

/** Ops that opset 21 no longer has (deprecated), whatever the model's opset. */
const DEPRECATED: Readonly<Record<string, string>> = {
  Scatter: "it was deprecated in opset 11 (ScatterElements replaces it)",
  Upsample: "it was deprecated in opset 10 (Resize replaces it)",
};

/** Move int list (or int) attribute `name` to operand `index` as an int64 constant. */
function attributeToInput(op: Op, graph: Graph, name: string, index: number): void {
  const a = op.attr(name);
  if (a === undefined) return;
  op.attributes.delete(name);
  if (a.kind !== "ints" && a.kind !== "int") throw opError(op, `attribute "${name}" must be ints, found ${a.kind}`);
  const values = a.kind === "ints" ? a.value : [a.value];
  setOperand(op, index, addConstant(graph, `${op.name || op.type}.${name}`, int64Tensor(values)));
}

/** Move float attribute `name` to operand `index` as a scalar of the input's element type. */
function scalarAttributeToInput(op: Op, graph: Graph, name: string, index: number): void {
  const value = op.float(name);
  if (value === undefined) return;
  op.attributes.delete(name);
  setOperand(op, index, addConstant(graph, `${op.name || op.type}.${name}`, scalarLike(op, value)));
}

/** A scalar of operand 0's float dtype (f32 when unknown). */
function scalarLike(op: Op, value: number): Tensor {
  const type = op.operand(0)?.type;
  const elem = isTensorType(type) ? type.elem : "f32";
  if (elem === "f32") return tensor("f32", [], new Float32Array([value]));
  if (elem === "f64") return tensor("f64", [], new Float64Array([value]));
  throw opError(op, `cannot move a scalar attribute to an input for element type ${JSON.stringify(elem)}`);
}

function setOperand(op: Op, index: number, value: Value): void {
  while (op.operands.length < index) op.addOperand(null);
  if (op.operands.length === index) op.addOperand(value);
  else op.setOperand(index, value);
}

/**
 * Softmax, LogSoftmax and Hardmax before opset 13 flatten the input to 2-D at
 * `axis` (default 1) and normalize each row; from 13 on they normalize along
 * one axis (default -1). Same thing when `axis` is the last axis; otherwise
 * Flatten, normalize along axis 1, Reshape back.
 */
function softmaxAxis(op: Op, graph: Graph): void {
  const x = op.operand(0);
  if (x === null) throw opError(op, "needs an input");
  const rank = isTensorType(x.type) ? x.type.shape?.length : undefined;
  const axis = op.int("axis", 1);
  if (axis === -1 || (rank !== undefined && axis === rank - 1)) {
    op.attributes.set("axis", attr.int(axis)); // explicit: the default changed from 1 to -1
    return;
  }
  // Flatten takes negative axes too, so this form needs no rank.
  const base = op.name || op.type;
  const flat = new Value(graph.freshName(`${base}.flat`), null);
  insertBefore(
    op,
    new Op({
      name: `${base}.flatten`,
      type: "Flatten",
      operands: [x],
      results: [flat],
      attributes: [["axis", attr.int(axis)]],
    }),
  );
  const shape = new Value(graph.freshName(`${base}.shape`), { elem: "i64", shape: rank === undefined ? null : [rank] });
  insertBefore(op, new Op({ name: `${base}.shape`, type: "Shape", operands: [x], results: [shape] }));
  const y = op.result;
  const rows = new Value(graph.freshName(`${base}.rows`), null);
  insertBefore(
    op,
    new Op({ name: base, type: op.type, operands: [flat], results: [rows], attributes: [["axis", attr.int(1)]] }),
  );
  const reshaped = new Value(graph.freshName(`${y.name}.reshaped`), y.type);
  insertBefore(op, new Op({ name: `${base}.reshape`, type: "Reshape", operands: [rows, shape], results: [reshaped] }));
  for (const use of [...y.uses]) use.op.setOperand(use.index, reshaped);
  for (let i = 0; i < graph.outputs.length; i++) if (graph.outputs[i] === y) graph.outputs[i] = reshaped;
  eraseOp(op);
  renameValue(reshaped, y.name);
}

/**
 * Rewrite every default-domain op of `graph` (and subgraphs) from opset `from`
 * to {@linkcode BFP_ONNX_OPSET}, except `skip` (ops written in opset-21 form).
 */
function upgradeGraph(graph: Graph, from: number, skip: ReadonlySet<Op>): void {
  for (const op of [...graph.ops]) {
    for (const a of op.attributes.values()) for (const g of subgraphsOf(a)) upgradeGraph(g, from, skip);
    if ((op.domain !== "" && op.domain !== "ai.onnx") || skip.has(op)) continue;
    const deprecated = DEPRECATED[op.type];
    if (deprecated !== undefined) {
      throw opError(op, `${deprecated}; it has no opset ${BFP_ONNX_OPSET} form for BFP export`);
    }
    const versions = OP_VERSIONS[op.type];
    if (versions === undefined) continue; // one version only: unchanged since it was introduced
    for (const v of versions) {
      if (v <= from || v > BFP_ONNX_OPSET || v === versions[0]) continue;
      const key = `${op.type}-${v}`;
      if (COMPATIBLE.has(key)) continue;
      const adapter = ADAPTERS[key];
      if (adapter !== undefined) {
        adapter(op, graph);
        if (op.graph === null) break; // replaced: the replacement is already in opset 21 form
        continue;
      }
      const why = INCOMPATIBLE[key] ?? `its definition changed in opset ${v} in a way this export does not convert`;
      throw opError(op, `${why}; the model's opset ${from} cannot be raised to ${BFP_ONNX_OPSET} for BFP export`);
    }
  }
}

// ---------------------------------------------------------------------------

/**
 * Legalize a BFP-lowered module for standard ONNX (opset 21, IR version 10),
 * returning a new module; `module` is not changed.
 *
 * - Weight mantissas (`bfp<...>` constants stored as i8/i16) stay integer
 *   initializers feeding `DequantizeLinear` with float32 power-of-two scales
 *   `2^(e-(L-2))` from the i8 exponents: `axis=0` for one block per output
 *   channel, `axis=1, block_size=B` for blocks of B input channels.
 * - Each `ai.bfp.Quantize` becomes a call of a model-local function (domain
 *   `ai.bfp`, one per attribute set, e.g. `Quantize_m8_e5_b0_g1_nearest_even_floor`)
 *   whose output is the BFP value of its input as float32, exactly as
 *   `dequantizeBfp(quantizeBfp(x))` of `ir/bfp.ts`.
 * - `ai.bfp.Conv` becomes `Conv` (same window attributes), `ai.bfp.Gemm`
 *   becomes `Gemm(x, w, b, transB=1)`: float accumulation, so outputs equal
 *   the bit-exact integer kernel up to float rounding (and its saturation).
 * - Default-domain ops are rewritten for opset 21 (attributes that became
 *   inputs, Split's `num_outputs`, Softmax's axis, ...).
 * - `metadata_props` get `bfp.*` keys: version, mantissa/exponent bits,
 *   bias, rounding, exponent rule, overflow policy, accumulator bits, blocking
 *   per tensor (JSON) and the generator.
 *
 * @throws {Error} Naming the op for stochastic rounding (no ONNX form), BFP
 *   results used outside the lowered layers, non-constant weights, default-domain
 *   ops whose definition changed incompatibly before opset 21, or a module whose
 *   default opset is newer than 21.
 * @example Lower a per-sample Quantize feeding a Gemm
 * ```ts
 * import assert from "node:assert/strict";
 * import { attr } from "../../ir/attributes.ts";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { tensor } from "../../ir/tensor.ts";
 * import { legalizeBfp } from "./bfp_onnx.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 2] }));
 * const bfp = { kind: "bfp", mantissa: 8, exponent: 5, block: 0 } as const;
 * const wm = g.addConstant("wm", tensor("i8", [1, 2], new Int8Array([64, -32])), { elem: bfp, shape: [1, 2] });
 * const we = g.addConstant("we", tensor("i8", [1], new Int8Array([0])), { elem: "i8", shape: [1] });
 * const q = g.addOp(new Op({
 *   name: "q", type: "Quantize", domain: "ai.bfp", operands: [x],
 *   results: [new Value("xm", { elem: bfp, shape: ["N", 2] }), new Value("xe", { elem: "i8", shape: ["N"] })],
 *   attributes: [["mantissa", attr.int(8)], ["exponent", attr.int(5)]],
 * }));
 * const fc = g.addOp(new Op({
 *   name: "fc", type: "Gemm", domain: "ai.bfp", operands: [q.results[0], q.results[1], wm, we],
 *   results: [new Value("y", { elem: "f32", shape: ["N", 1] })],
 * }));
 * g.outputs.push(fc.result);
 * const m = legalizeBfp(new Module(g, [["", 13], ["ai.bfp", 1]]));
 * assert.deepEqual(m.graph.ops.map((op) => op.type), ["Quantize_m8_e5_b0_g1_nearest_even_floor", "DequantizeLinear", "Gemm"]);
 * assert.deepEqual([...m.opsets], [["", 21], ["ai.bfp", 1]]);
 * ```
 */
export function legalizeBfp(module: Module): Module {
  const from = module.opset("");
  if (from > BFP_ONNX_OPSET) {
    throw new Error(
      `Cannot export BFP model: its default opset ${from} is newer than ${BFP_ONNX_OPSET}, the opset of BFP export`,
    );
  }
  const bfpVersion = module.opsets.get(BFP_DOMAIN);
  if (bfpVersion !== undefined && bfpVersion !== 1) {
    throw new Error(`Cannot export BFP model: opset ${BFP_DOMAIN} version ${bfpVersion} is unknown (expected 1)`);
  }
  const copy = cloneModule(module);
  const existing = (module.extra.functions ?? []) as IFunctionProto[];
  const legalizer = new Legalizer(bfpFunctionNames(module));
  legalizer.lowerGraph(copy.graph);
  upgradeGraph(copy.graph, from, legalizer.created);
  const opsets = [...copy.opsets].filter(([domain]) => domain !== "" && domain !== "ai.onnx" && domain !== BFP_DOMAIN);
  copy.opsets.clear();
  copy.opsets.set("", BFP_ONNX_OPSET);
  const functions = [...existing, ...legalizer.functions.values()];
  if (functions.some((f) => f.domain === BFP_DOMAIN)) copy.opsets.set(BFP_DOMAIN, 1);
  for (const [domain, version] of opsets) copy.opsets.set(domain, version);
  copy.irVersion = BFP_ONNX_IR_VERSION;
  for (const f of existing) {
    if (f.domain === BFP_DOMAIN && legalizer.functions.has(f.name ?? "")) {
      throw new Error(`Cannot export BFP model: it already has a function ${BFP_DOMAIN}.${f.name}`);
    }
  }
  if (legalizer.functions.size > 0) copy.extra.functions = functions;
  if (legalizer.blocking.size > 0) { for (const [key, value] of legalizer.metadata()) copy.metadata.set(key, value); }
  return copy;
}
