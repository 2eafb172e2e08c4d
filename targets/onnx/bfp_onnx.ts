/**
 * BFP-lowered modules (ops of domain `ai.bfp`) as standard ONNX that
 * onnxruntime runs: weights become integer initializers behind
 * `DequantizeLinear` with power-of-two scales, each `ai.bfp.Quantize` becomes a
 * call of a model-local function that fake-quantizes exactly (standard ops,
 * opset 21), and `ai.bfp.Conv`/`Gemm` become the float `Conv`/`Gemm` of the
 * dequantized operands, all read from layer plans (`ir/bfp/plan.ts`). Formulas: `ir/bfp/format.ts`; decisions:
 * `shared/docs/formats.md` ("BFP in ONNX").
 * @module
 */
import { attr, type Attribute } from "../../ir/attributes.ts";
import { type BfpFormat, exponentRange, maxMantissa } from "../../ir/bfp/format.ts";
import {
  BFP_DOMAIN,
  type BfpLayerPlan,
  bfpLayerPlan,
  type BfpQuantizePlan,
  bfpQuantizePlan,
} from "../../ir/bfp/plan.ts";
import { type Graph, Op, Value } from "../../ir/graph.ts";
import type { Module } from "../../ir/module.ts";
import type onnxProto from "onnx-proto";
import { upgradeOpset } from "../../ir/onnx/opset_upgrade.ts";
import { type IAttributeProto, type INodeProto, onnx } from "../../ir/onnx/proto.ts";
import { tensorToProto } from "../../ir/onnx/tensor_proto.ts";
import { opError } from "../../ir/ops/common.ts";
import {
  addConstant,
  cloneModule,
  eraseOp,
  eraseValue,
  insertBefore,
  renameValue,
  replaceOp,
  subgraphsOf,
} from "../../ir/rewriter.ts";
import { int64Tensor, type Tensor, tensor } from "../../ir/tensor.ts";
import { isTensorType, ONNX_DTYPE_CODES } from "../../ir/types.ts";

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

/**
 * The model-local function name for a Quantize plan, e.g. `Quantize_m8_e5_b0_g1_nearest_even_floor`
 * (`..._s3` for a static exponent of 3, `..._sm3` for -3; `..._am1` for channel axis -1, `..._a2` for 2).
 */
function functionName(plan: BfpQuantizePlan): string {
  const { mantissaBits: m, exponentBits: e, rounding, exponentRule } = plan.format;
  const words = `${rounding}_${exponentRule}`.replaceAll("-", "_");
  const signed = (k: number): string => `${k < 0 ? "m" : ""}${Math.abs(k)}`;
  const s = plan.staticExponent, axis = plan.blocking.axis;
  const fixed = s === null ? "" : `_s${signed(s)}`;
  const channels = axis === 1 ? "" : `_a${signed(axis)}`;
  return `Quantize_m${m}_e${e}_b${plan.blocking.block}_g${plan.blocking.group}_${words}${fixed}${channels}`;
}

/** A layer's weights as legalization dequantizes them. */
interface DequantizedWeights {
  /** The exponents that go with the mantissas. */
  readonly we: Value;
  /** `DequantizeLinear` of the mantissas, once a layer needed it. */
  w: Value | null;
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
    const dequantized = new Map<Value, DequantizedWeights>();
    for (const op of [...graph.ops]) {
      if (op.domain !== BFP_DOMAIN || this.existingFunctions.has(op.type)) continue;
      switch (op.type) {
        case "Quantize":
          this.lowerQuantize(graph, op, fakeQuant);
          break;
        case "Conv":
        case "Gemm":
          this.lowerLayer(graph, op, fakeQuant, dequantized);
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
    for (const { we } of dequantized.values()) if (we.isDead) eraseValue(we);
    for (const v of graph.values()) {
      if (isTensorType(v.type) && typeof v.type.elem === "object") {
        const where = v.producer !== null ? ` (result of op "${v.producer.name}" (${v.producer.type}))` : "";
        throw new Error(`value "${v.name}"${where} has a ${v.type.elem.kind} type, which ONNX cannot represent`);
      }
    }
  }

  lowerQuantize(graph: Graph, op: Op, fakeQuant: Map<Value, Value>): void {
    const plan = bfpQuantizePlan(op);
    const { format, blocking, staticExponent } = plan;
    if (format.rounding === "stochastic") {
      throw opError(
        op,
        "stochastic rounding cannot be expressed in ONNX (no standard op draws the seeded splitmix32 stream); " +
          "choose a deterministic rounding mode for ONNX export",
      );
    }
    const x = op.operand(0), xm = op.results[0];
    if (x === null || xm === undefined) throw opError(op, "needs an input X and a mantissa result");
    const shape = isTensorType(x.type) ? x.type.shape : null;
    const fq = new Value(graph.freshName(`${xm.name}.fq`), { elem: "f32", shape });
    let via: string;
    if (staticExponent !== null && format.rounding === "nearest-even") {
      via = "QuantizeLinear";
      this.fixedPoint(graph, op, plan, x, fq);
    } else {
      const name = functionName(plan);
      if (!this.functions.has(name)) this.functions.set(name, quantizeFunction(name, plan));
      insertBefore(op, new Op({ name: op.name, type: name, domain: BFP_DOMAIN, operands: [x], results: [fq] }));
      via = `${BFP_DOMAIN}.${name}`;
    }
    fakeQuant.set(xm, fq);
    this.record(x.name, {
      role: "activation",
      mantissa_bits: format.mantissaBits,
      exponent_bits: format.exponentBits,
      block: blocking.block,
      group: blocking.group,
      axis: blocking.axis,
      rounding: format.rounding,
      exponent_rule: format.exponentRule,
      ...(staticExponent === null ? {} : { static_exponent: staticExponent }),
      function: via,
    }, format);
  }

  /**
   * Fixed point with nearest-even: `QuantizeLinear(s)`, `DequantizeLinear(s)`, then `Clip(±maxM·s)`, with the
   * power-of-two step `s = 2^(e-(L-2))` (int8 storage up to 8 bits, else int16). The Clip comes last: it makes the
   * range symmetric and L bits wide, and onnxruntime's QDQ transformers rewrite a Clip placed before QuantizeLinear
   * (on a fixed-point ResNet that moved logits by up to 3.3 and changed 2 of 500 predictions).
   */
  fixedPoint(graph: Graph, op: Op, plan: BfpQuantizePlan, x: Value, fq: Value): void {
    const { format, staticExponent } = plan;
    const L = format.mantissaBits;
    const step = 2 ** (staticExponent! - (L - 2));
    const limit = maxMantissa(format) * step;
    const storage = L <= 8 ? "i8" : "i16";
    const base = op.name;
    const scalar = (suffix: string, t: Tensor): Value => addConstant(graph, graph.freshName(`${base}.${suffix}`), t);
    const lo = scalar("min", tensor("f32", [], new Float32Array([-limit])));
    const hi = scalar("max", tensor("f32", [], new Float32Array([limit])));
    const scale = scalar("scale", tensor("f32", [], new Float32Array([step])));
    const zero = scalar("zero_point", tensor(storage, [], storage === "i8" ? new Int8Array(1) : new Int16Array(1)));
    const type = isTensorType(x.type) ? x.type.shape : null;
    const q = new Value(graph.freshName(`${base}.q`), { elem: storage, shape: type });
    const dq = new Value(graph.freshName(`${base}.dq`), { elem: "f32", shape: type });
    const add = (name: string, opType: string, operands: Value[], result: Value): void => {
      this.created.add(
        insertBefore(op, new Op({ name: graph.freshOpName(name), type: opType, operands, results: [result] })),
      );
    };
    add(`${base}.quantize`, "QuantizeLinear", [x, scale, zero], q);
    add(`${base}.dequantize`, "DequantizeLinear", [q, scale, zero], dq);
    add(`${base}.clip`, "Clip", [dq, lo, hi], fq);
  }

  lowerLayer(graph: Graph, op: Op, fakeQuant: Map<Value, Value>, dequantized: Map<Value, DequantizedWeights>): void {
    const plan = bfpLayerPlan(op);
    const { mantissaValue: wm, exponentValue: we } = plan.weights;
    const fq = fakeQuant.get(plan.input.op.results[0]);
    if (fq === undefined) {
      throw opError(op, `its ${BFP_DOMAIN}.Quantize "${plan.input.op.name}" is not in the same graph`);
    }
    let dq = dequantized.get(wm);
    if (dq === undefined) {
      dq = { we, w: null };
      dequantized.set(wm, dq);
    } else if (dq.we !== we) {
      throw opError(
        op,
        `weight mantissas "${wm.name}" are used with two exponent tensors ("${dq.we.name}", "${we.name}")`,
      );
    }
    this.accumulators.add(plan.accumulator.bits);
    const y = op.result;
    const result = new Value(graph.freshName(`${y.name}.f32`), y.type);
    result.docString = y.docString;
    const bias = plan.bias === null ? [] : [plan.bias.value];
    dq.w ??= this.dequantizeWeights(graph, plan);
    // A Gemm whose rows are the samples of a [..., K] input (Quantize axis -1): Gemm on the rows as a matrix, between
    // two Reshapes. Not MatMul: onnxruntime 1.30 (extended optimizations) fuses DequantizeLinear + MatMul into a
    // lower-precision kernel (relative error 3.6e-3 on a one-layer test, 0 with optimizations disabled).
    if (plan.kind === "gemm" && plan.input.blocking.axis !== 1) {
      this.batchedGemm(graph, op, plan, fq, dq.w, result);
      replaceOp(op, [result]);
      return;
    }
    const attributes: [string, Attribute][] = op.type === "Conv"
      ? [...plan.windowAttributes]
      : [["transB", attr.int(1)]];
    this.created.add(
      insertBefore(
        op,
        new Op({ name: op.name, type: op.type, operands: [fq, dq.w, ...bias], results: [result], attributes }),
      ),
    );
    replaceOp(op, [result]);
  }

  /**
   * `[..., K]` rows through `Gemm(rows, w, b, transB=1)`: `Reshape(fq, [-1, K])` before, `Reshape` to the input's
   * leading dimensions and `O` after (taken from the input's shape at run time, so a dynamic batch works).
   */
  batchedGemm(graph: Graph, op: Op, plan: BfpLayerPlan, fq: Value, w: Value, result: Value): void {
    const base = op.name;
    const add = (suffix: string | null, type: string, operands: Value[], attributes: [string, Attribute][] = []) => {
      const y = suffix === null ? result : new Value(graph.freshName(`${result.name}.${suffix}`), null);
      // The Gemm keeps the layer's name (it replaces the op); every other node gets a fresh one.
      const name = graph.freshOpName(`${base}.${suffix ?? "out"}`);
      this.created.add(insertBefore(op, new Op({ name, type, operands, results: [y], attributes })));
      return y;
    };
    const ints = (suffix: string, values: number[]): Value =>
      addConstant(graph, graph.freshName(`${base}.${suffix}`), int64Tensor(values));
    const shape = add("shape", "Shape", [fq]);
    const lead = add("lead", "Slice", [shape, ints("zero", [0]), ints("minus_one", [-1])]);
    const outShape = add("out_shape", "Concat", [lead, ints("out_channels", [plan.outChannels])], [[
      "axis",
      attr.int(0),
    ]]);
    const rows = add("rows", "Reshape", [fq, ints("rows_shape", [-1, plan.inChannels])]);
    const bias = plan.bias === null ? [] : [plan.bias.value];
    const y = new Value(graph.freshName(`${result.name}.gemm`), null);
    this.created.add(
      insertBefore(
        op,
        new Op({
          name: base,
          type: "Gemm",
          operands: [rows, w, ...bias],
          results: [y],
          attributes: [["transB", attr.int(1)]],
        }),
      ),
    );
    add(null, "Reshape", [y, outShape]);
  }

  /** `DequantizeLinear(wm, 2^(we - (L-2)))`: per-axis (axis 0) for block 0, blocked along axis 1 otherwise. */
  dequantizeWeights(graph: Graph, plan: BfpLayerPlan): Value {
    const { format, weights } = plan;
    const { mantissaValue: wm, exponentValue: we, exponents: e, shape, block } = plan.weights;
    const L = format.mantissaBits;
    const scales = Float32Array.from(e, (x) => 2 ** (x - (L - 2))); // >= 2^-141: exact in float32 (subnormal at worst)
    // The mantissas keep their initializer; only the type changes from bfp<...> to its integer storage.
    wm.type = { elem: wm.constant!.dtype, shape: [...shape] };
    const scale = addConstant(graph, `${wm.name}.scale`, tensor("f32", [...weights.exponentShape], scales));
    const attributes: [string, Attribute][] = block === 0
      ? [["axis", attr.int(0)]]
      : [["axis", attr.int(1)], ["block_size", attr.int(block)]];
    const w = new Value(graph.freshName(`${wm.name}.dq`), { elem: "f32", shape: [...shape] });
    const dq = new Op({
      name: graph.freshOpName(`${wm.name}.dequantize`),
      type: "DequantizeLinear",
      operands: [wm, scale],
      results: [w],
      attributes,
    });
    this.created.add(insertBefore(plan.op, dq));
    this.record(wm.name, {
      role: "weight",
      mantissa_bits: L,
      exponent_bits: format.exponentBits,
      block,
      axis: block === 0 ? 0 : 1,
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
function quantizeFunction(name: string, plan: BfpQuantizePlan): IFunctionProto {
  const b = new BodyBuilder();
  const { format, staticExponent } = plan;
  const { block, group } = plan.blocking;
  const L = format.mantissaBits;
  const maxM = maxMantissa(format);
  const { min: eMin, max: eMax } = exponentRange(format);
  const table = staticExponent !== null ? "" : b.constant(
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
  // `xv` is x as [N, C, ...spatial]: x itself for channel axis 1, else [samples, C, positions] around the axis.
  let xv = "x", viewShape = shape;
  const axis = plan.blocking.axis;
  if (axis !== 1) {
    const end = axis === -1 ? 2 ** 62 : axis + 1;
    const before = b.node("Slice", [shape, b.i64("axis_zero", [0]), b.i64("axis_start", [axis])], "sample_dims");
    const samples = b.node("ReduceProd", [before], "samples", [{ name: "keepdims", type: AttrType.INT, i: 1 }]);
    const channels = b.node("Slice", [shape, b.i64("axis_start", [axis]), b.i64("axis_end", [end])], "view_channels");
    const view = b.node("Concat", [samples, channels, b.i64("positions", [-1])], "view_shape", [axisAttr(0)]);
    xv = b.node("Reshape", ["x", view], "x_view");
    viewShape = b.node("Shape", [xv], "x_view_shape");
  }
  let restore: (y: string) => string;
  if (block === 0) {
    // One block per sample: [N, everything else] (`0` copies N, so a dynamic batch keeps working); per sample and group:
    // [N, G, the group's channels and positions].
    xb = b.node("Reshape", [xv, b.i64("rows_shape", group === 1 ? [0, -1] : [0, group, -1])], "x_rows");
    reduceAxis = group === 1 ? 1 : 2;
    restore = (y) => b.node("Reshape", [y, shape], "y");
  } else {
    // Blocks of B channels inside each of G groups: [N, G, Cg, S] zero-padded to [N, G, nb·B, S], seen as [N, G, nb, B, S].
    const zero = b.i64("zero", [0]), minusOne = b.i64("minus_one", [-1]), g = b.i64("groups", [group]);
    const bs = b.i64("block", [block]);
    const c = b.node("Slice", [viewShape, b.i64("one", [1]), b.i64("two", [2])], "channels");
    const cg = b.node("Div", [c, g], "group_channels");
    const nb = b.node("Div", [b.node("Add", [cg, b.i64("block_minus_one", [block - 1])], "cg_up"), bs], "blocks");
    const padded = b.node("Mul", [nb, bs], "padded_channels");
    const pad = b.node("Sub", [padded, cg], "pad_channels");
    const x4 = b.node("Reshape", [xv, b.node("Concat", [zero, g, cg, minusOne], "shape4", [axisAttr(0)])], "x4");
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
  let step: string, mantissaLimit: string;
  if (staticExponent !== null) {
    // Fixed point: the step is a constant power of two.
    step = b.f32("step", 2 ** (staticExponent - (L - 2)));
    mantissaLimit = b.f32("max_mantissa", maxM);
  } else {
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
    mantissaLimit = b.f32("max_mantissa", maxM);
    if (format.exponentRule === "never-clamp") {
      // One more when the scaled maximum (unrounded, as ir/bfp/quantize.ts) exceeds maxM; maxM·2^k is exact.
      const limit = b.node("Mul", [b.pow2(table, e, stepOffset, "step_floor"), mantissaLimit], "limit");
      e = b.node("Add", [e, b.cast(b.node("Greater", [amax, limit], "bump_bool"), FLOAT, "bump")], "e4");
    }
    e = b.node("Clip", [e, b.f32("e_min", eMin), b.f32("e_max", eMax)], "e");
    step = b.pow2(table, e, stepOffset, "step");
  }
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
  const clamped = b.node("Clip", [r, b.f32("min_mantissa", -maxM), mantissaLimit], "mantissa");
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
        block === 0
          ? group === 1 ? "one block per sample" : `one block per sample and group (${group} groups)`
          : `blocks of ${block} channels in ${group} group(s)`
      }, ` +
      `rounding ${format.rounding}, exponent rule ${format.exponentRule}`,
  };
}

function axisAttr(axis: number): IAttributeProto {
  return { name: "axis", type: AttrType.INT, i: axis };
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
 *   `dequantizeBfp(quantizeBfp(x))` of `ir/bfp/quantize.ts`. A fixed-point Quantize
 *   (static exponent) with nearest-even becomes `QuantizeLinear`,
 *   `DequantizeLinear` with the power-of-two step as scale, then `Clip`.
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
  upgradeOpset(copy.graph, { from, to: BFP_ONNX_OPSET, skip: legalizer.created, purpose: "BFP export" });
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
