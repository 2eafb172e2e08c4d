/**
 * Raising a graph's default-domain opset: the version history of ONNX's ops
 * up to opset 21 and the rewrites across the changes that moved attributes to
 * inputs or changed defaults. Any pass or target that needs a newer opset
 * (the ONNX target's BFP export needs 21) uses it.
 * @module
 */
import { attr } from "../attributes.ts";
import { type Graph, isDefaultDomain, Op, Value } from "../graph.ts";
import { opError } from "../ops/common.ts";
import { addConstant, insertBefore, replaceOp, subgraphsOf } from "../rewriter.ts";
import { int64Tensor, type Tensor, tensor } from "../tensor.ts";
import { isTensorType } from "../types.ts";

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
    if (min !== undefined) op.setOptionalOperand(1, addConstant(graph, `${op.name}.min`, scalarLike(op, min)));
    if (max !== undefined) op.setOptionalOperand(2, addConstant(graph, `${op.name}.max`, scalarLike(op, max)));
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
  op.setOptionalOperand(index, addConstant(graph, `${op.name || op.type}.${name}`, int64Tensor(values)));
}

/** Move float attribute `name` to operand `index` as a scalar of the input's element type. */
function scalarAttributeToInput(op: Op, graph: Graph, name: string, index: number): void {
  const value = op.float(name);
  if (value === undefined) return;
  op.attributes.delete(name);
  op.setOptionalOperand(index, addConstant(graph, `${op.name || op.type}.${name}`, scalarLike(op, value)));
}

/** A scalar of operand 0's float dtype (f32 when unknown). */
function scalarLike(op: Op, value: number): Tensor {
  const type = op.operand(0)?.type;
  const elem = isTensorType(type) ? type.elem : "f32";
  if (elem === "f32") return tensor("f32", [], new Float32Array([value]));
  if (elem === "f64") return tensor("f64", [], new Float64Array([value]));
  throw opError(op, `cannot move a scalar attribute to an input for element type ${JSON.stringify(elem)}`);
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
  replaceOp(op, [reshaped]);
}

/** What {@linkcode upgradeOpset} raises, and why. */
export interface OpsetUpgrade {
  /** The graph's default-domain opset. */
  readonly from: number;
  /** The opset to raise it to ({@linkcode from} .. {@linkcode MAX_UPGRADE_OPSET}). */
  readonly to: number;
  /** Ops already written in the new opset's form, left alone. */
  readonly skip?: ReadonlySet<Op>;
  /** What the upgrade is for, quoted in errors (e.g. `BFP export`). */
  readonly purpose: string;
}

/** The newest opset {@linkcode upgradeOpset} knows. */
export const MAX_UPGRADE_OPSET = 21;

/**
 * Rewrite every default-domain op of `graph` (and subgraphs) from opset
 * `from` to `to`: attributes that became inputs, Split's `num_outputs`,
 * Softmax's axis, ... Version changes that only add types or defaulted
 * attributes are kept as they are; incompatible ones are refused.
 *
 * @throws {Error} Naming the op whose definition changed in a way this does not convert, or a deprecated op.
 * @example Raise a ReduceMean with an `axes` attribute from opset 13 to 18
 * ```ts
 * import assert from "node:assert/strict";
 * import { attr } from "../attributes.ts";
 * import { Graph, Op, Value } from "../graph.ts";
 * import { upgradeOpset } from "./opset_upgrade.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 4] }));
 * const op = g.addOp(new Op({ name: "m", type: "ReduceMean", operands: [x], results: [new Value("y")],
 *   attributes: [["axes", attr.ints([1])]] }));
 * g.outputs.push(op.result);
 * upgradeOpset(g, { from: 13, to: 18, purpose: "this example" });
 * assert.equal(g.ops[0].operands.length, 2); // axes became the second input
 * ```
 */
export function upgradeOpset(graph: Graph, upgrade: OpsetUpgrade): void {
  const { from, to, purpose } = upgrade;
  if (to > MAX_UPGRADE_OPSET) {
    throw new RangeError(`opset upgrade knows opsets up to ${MAX_UPGRADE_OPSET}, asked for ${to}`);
  }
  const skip = upgrade.skip ?? new Set<Op>();
  for (const op of [...graph.ops]) {
    for (const a of op.attributes.values()) for (const g of subgraphsOf(a)) upgradeOpset(g, upgrade);
    if (!isDefaultDomain(op.domain) || skip.has(op)) continue;
    const deprecated = DEPRECATED[op.type];
    if (deprecated !== undefined) {
      throw opError(op, `${deprecated}; it has no opset ${to} form for ${purpose}`);
    }
    const versions = OP_VERSIONS[op.type];
    if (versions === undefined) continue; // one version only: unchanged since it was introduced
    for (const v of versions) {
      if (v <= from || v > to || v === versions[0]) continue;
      const key = `${op.type}-${v}`;
      if (COMPATIBLE.has(key)) continue;
      const adapter = ADAPTERS[key];
      if (adapter !== undefined) {
        adapter(op, graph);
        if (op.graph === null) break; // replaced: the replacement is already in the new form
        continue;
      }
      const why = INCOMPATIBLE[key] ?? `its definition changed in opset ${v} in a way this export does not convert`;
      throw opError(op, `${why}; the model's opset ${from} cannot be raised to ${to} for ${purpose}`);
    }
  }
}
