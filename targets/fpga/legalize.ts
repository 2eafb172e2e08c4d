/**
 * What the FPGA image can hold, and the layer records for it: lowered
 * `ai.bfp` Conv/Gemm layers (read from their plans) with their Quantize ops
 * folded into the layer descriptors, and the glue an accelerator runs between
 * them (Relu, pools, residual Add, Concat, Flatten/Reshape, BatchNormalization
 * as a per-channel affine). Anything else is one error line naming the op.
 * @module
 */
import { BFP_ROUNDINGS, type BfpFormat } from "../../ir/bfp/format.ts";
import { BFP_DOMAIN, type BfpLayerPlan, bfpLayerPlan } from "../../ir/bfp/plan.ts";
import { isConstant, isDefaultDomain, type Op, type Value } from "../../ir/graph.ts";
import type { Module } from "../../ir/module.ts";
import { toFloat64 } from "../../ir/tensor.ts";
import { isTensorType } from "../../ir/types.ts";
import { float32Parts, type FpgaDescriptor, type FpgaLayerRecord, type FpgaLayout, OPCODES } from "./image.ts";

/** The glue ops the image describes, by ONNX type. */
const GLUE: Readonly<Record<string, keyof typeof OPCODES>> = {
  Relu: "relu",
  MaxPool: "maxPool",
  AveragePool: "averagePool",
  GlobalAveragePool: "globalAveragePool",
  Add: "add",
  Concat: "concat",
  Flatten: "flatten",
  Reshape: "reshape",
  BatchNormalization: "affine",
};

/** A legalized module: the layer records, their plans (Conv/Gemm) and the tensor ids. */
export interface FpgaNetwork {
  /** Layer records in graph order. */
  readonly layers: FpgaLayerRecord[];
  /** The plan of each Conv/Gemm record (null for glue), parallel to `layers`. */
  readonly plans: (BfpLayerPlan | null)[];
  /** Tensor names by id. */
  readonly tensors: string[];
  /**
   * The number format the lowered layers share (exponent bits, rounding, exponent rule, seed), with the widest
   * layer's mantissa bits: each layer's own width is its plan's.
   */
  readonly format: BfpFormat;
  /** Some layer is BFP / fixed point. */
  readonly hasBfp: boolean;
  /** Some layer has a static exponent. */
  readonly hasFixed: boolean;
}

/** The layout codes of the descriptor's `layout` field. */
const LAYOUT_CODE: Record<FpgaLayout, number> = { ohwi: 0, oihw: 1 };

function dims(v: Value | null): number[] | null {
  const t = v?.type ?? null;
  if (t === null || !isTensorType(t) || t.shape === null) return null;
  return t.shape.map((d) => (typeof d === "number" ? d : -1));
}

const unsupported = (op: Op): Error =>
  new Error(
    `unsupported op ${op.qualifiedType} "${op.name}" in the FPGA image (it holds lowered ai.bfp Conv/Gemm ` +
      "layers and Relu, MaxPool, AveragePool, GlobalAveragePool, Add, Concat, Flatten, Reshape, BatchNormalization)",
  );

/**
 * Check that `module` holds only what the image can describe and build its
 * layer records (descriptors and integers, in plan order).
 *
 * @param layout Order of K in the descriptors (`layout` field).
 * @param pe Processing elements, recorded with the padded sizes in each Conv/Gemm descriptor.
 * @param simd SIMD lanes per PE.
 * @throws {Error} One line naming the first op the image cannot hold and what to do.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { legalizeFpga } from "./legalize.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 4] }));
 * g.outputs.push(g.addOp(new Op({ name: "r1", type: "Resize", operands: [x], results: [new Value("y")] })).result);
 * assert.throws(() => legalizeFpga(new Module(g), "ohwi", 4, 8), /unsupported op Resize "r1"/);
 * ```
 */
export function legalizeFpga(module: Module, layout: FpgaLayout, pe: number, simd: number): FpgaNetwork {
  const graph = module.graph;
  const ids = new Map<Value, number>();
  const tensors: string[] = [];
  const idOf = (v: Value): number => {
    let id = ids.get(v);
    if (id === undefined) {
      id = tensors.length;
      ids.set(v, id);
      tensors.push(v.name);
    }
    return id;
  };
  for (const v of graph.inputs) if (v.constant === null) idOf(v);
  const layers: FpgaLayerRecord[] = [];
  const plans: (BfpLayerPlan | null)[] = [];
  let format: BfpFormat | null = null;
  let formatOwner = "";
  let hasBfp = false, hasFixed = false;
  const graphOutputs = (op: Op): number[] =>
    op.results.map((r, i) => (graph.outputs.includes(r) ? i : -1)).filter((i) => i >= 0);
  const shapes = (values: readonly Value[]): { inputRanks: number[]; inputShapes: number[] } => {
    const s = values.map((v) => dims(v) ?? []);
    return { inputRanks: s.map((d) => d.length), inputShapes: s.flat() };
  };

  for (const op of graph.ops) {
    if ([...op.attributes.values()].some((a) => a.kind === "graph" || a.kind === "graphs")) throw unsupported(op);
    if (op.domain === BFP_DOMAIN && op.type === "Quantize") {
      for (const r of op.results) {
        if (graph.outputs.includes(r) || r.users.some((u) => u.domain !== BFP_DOMAIN || u.type === "Quantize")) {
          throw new Error(
            `op "${op.name}" (ai.bfp.Quantize): its result "${r.name}" is used outside a lowered layer; ` +
              "the FPGA image folds each Quantize into the layer that reads it",
          );
        }
      }
      continue;
    }
    if (op.domain === BFP_DOMAIN && (op.type === "Conv" || op.type === "Gemm")) {
      const plan = bfpLayerPlan(op);
      const f = plan.format;
      if (format === null) [format, formatOwner] = [f, op.name];
      else if (
        f.exponentBits !== format.exponentBits || f.rounding !== format.rounding ||
        f.exponentRule !== format.exponentRule || f.seed !== format.seed
      ) {
        throw new Error(
          `op "${op.name}" (${op.qualifiedType}) has another number format than "${formatOwner}": ` +
            "the layers of one FPGA image share exponent bits, rounding, exponent rule and seed " +
            "(mantissa widths may differ)",
        );
      } else if (f.mantissaBits > format.mantissaBits) format = f;
      if (plan.input.staticExponent === null) hasBfp = true;
      else hasFixed = true;
      const x = plan.input.op.operands[0]!;
      const xShape = dims(x);
      if (plan.geometry === null || xShape === null || xShape.slice(1).some((d) => d < 0)) {
        throw new Error(`op "${op.name}" (${op.qualifiedType}) needs a static input shape for the FPGA image`);
      }
      if (plan.kind === "gemm" && xShape.length !== 2) {
        throw new Error(
          `op "${op.name}" (${op.qualifiedType}): its input [${xShape}] has rows [${xShape.slice(0, -1)}] ` +
            "(a batched MatMul); the FPGA image's Gemm reads one sample [1, K] (the c and onnx targets run it)",
        );
      }
      const g = plan.geometry;
      const padsEnd = g.kernel.map((k, d) =>
        (g.outShape[d] - 1) * g.strides[d] + (k - 1) * g.dilations[d] + 1 - g.inShape[d] - g.padsBegin[d]
      );
      const kernel = g.kernel;
      const w = plan.weights;
      const exponentShape = w.block === 0
        ? [...w.exponentShape]
        : layout === "ohwi"
        ? [w.exponentShape[0], ...kernel, w.exponentShape[1]]
        : [...w.exponentShape];
      const descriptor: FpgaDescriptor = {
        op: [plan.kind === "conv" ? OPCODES.conv : OPCODES.gemm],
        inputs: [idOf(x)],
        outputs: [idOf(op.result)],
        ...shapes([x]),
        outputShape: dims(op.result) ?? [],
        kernel,
        strides: g.strides,
        dilations: g.dilations,
        pads: [...g.padsBegin, ...padsEnd],
        group: [plan.group],
        mantissaBits: [f.mantissaBits],
        exponentBits: [f.exponentBits],
        inputBlock: [plan.input.blocking.block],
        inputBlockGroup: [plan.input.blocking.group],
        ...(plan.input.staticExponent === null ? {} : { staticExponent: [plan.input.staticExponent] }),
        accumulatorBits: [plan.accumulator.bits],
        productBits: [plan.accumulator.productBits],
        guardBits: [plan.accumulator.guardBits],
        rounding: [BFP_ROUNDINGS.indexOf(f.rounding)],
        exponentRule: [f.exponentRule === "floor" ? 0 : 1],
        seed: [f.seed | 0],
        weightBlock: [w.block],
        weightExponentShape: exponentShape,
        layout: [LAYOUT_CODE[layout]],
        pe: [pe],
        simd: [simd],
        outChannels: [plan.outChannels],
        reduction: [plan.reduction],
        inChannels: [plan.inChannels],
        paddedRows: [Math.ceil(plan.outChannels / pe) * pe],
        paddedColumns: [Math.ceil(plan.reduction / simd) * simd],
        hasBias: [plan.bias === null ? 0 : 1],
        graphOutputs: graphOutputs(op),
      };
      let bias = null;
      if (plan.bias !== null) {
        const n = plan.outChannels;
        const significands = new Int32Array(n), exponents = new Int32Array(n);
        for (let o = 0; o < n; o++) [significands[o], exponents[o]] = float32Parts(plan.bias.values[o]);
        bias = { significands, exponents, units: plan.bias.units, values: plan.bias.values };
      }
      layers.push({
        name: op.name,
        kind: plan.kind,
        descriptor,
        weights: {
          mantissas: w.mantissas,
          shape: w.shape,
          exponents: w.exponents,
          exponentShape: w.exponentShape,
          block: w.block,
        },
        bias,
      });
      plans.push(plan);
      continue;
    }
    if (isDefaultDomain(op.domain) && (op.type === "Conv" || op.type === "Gemm" || op.type === "MatMul")) {
      throw new Error(`op "${op.name}" (${op.type}) is still float: run bfp (or fixed) first`);
    }
    const kind = isDefaultDomain(op.domain) ? GLUE[op.type] : undefined;
    if (kind === undefined) throw unsupported(op);
    layers.push({
      name: op.name,
      kind,
      descriptor: glueDescriptor(op, kind, idOf, graphOutputs(op), shapes),
      weights: null,
      bias: null,
    });
    plans.push(null);
  }
  if (format === null) {
    throw new Error("the module has no lowered ai.bfp Conv/Gemm layer: run bfp (or fixed) before --target fpga");
  }
  return { layers, plans, tensors, format, hasBfp, hasFixed };
}

function glueDescriptor(
  op: Op,
  kind: keyof typeof OPCODES,
  idOf: (v: Value) => number,
  graphOutputs: number[],
  shapes: (values: readonly Value[]) => { inputRanks: number[]; inputShapes: number[] },
): FpgaDescriptor {
  const data = op.operands.filter((v): v is Value => v !== null && !isConstant(v));
  if (op.results.length !== 1) {
    throw new Error(`op "${op.name}" (${op.type}) has ${op.results.length} results; the FPGA image describes one`);
  }
  const out = op.result;
  const outputShape = dims(out);
  if (outputShape === null) throw new Error(`op "${op.name}" (${op.type}) has no known output shape`);
  const common = {
    op: [OPCODES[kind]],
    inputs: data.map(idOf),
    outputs: [idOf(out)],
    ...shapes(data),
    outputShape,
    graphOutputs,
  };
  const rank = (dims(data[0] ?? null)?.length ?? 2) - 2;
  switch (kind) {
    case "relu":
    case "globalAveragePool":
      if (data.length !== 1) throw unsupported(op);
      return common;
    case "add":
    case "concat": {
      if (op.operands.some((v) => v !== null && isConstant(v))) {
        throw new Error(`op "${op.name}" (${op.type}) has a constant operand; the FPGA image adds only feature maps`);
      }
      return kind === "concat" ? { ...common, axis: [op.int("axis", 1)] } : common;
    }
    case "flatten":
      return { ...common, axis: [op.int("axis", 1)] };
    case "reshape": {
      const shape = op.operands[1];
      if (!isConstant(shape)) throw new Error(`op "${op.name}" (Reshape) needs a constant shape for the FPGA image`);
      return {
        ...common,
        inputs: [idOf(op.operands[0]!)],
        ...shapes([op.operands[0]!]),
        shape: [...toFloat64(shape.constant)],
      };
    }
    case "maxPool":
    case "averagePool": {
      if (op.string("auto_pad", "NOTSET") !== "NOTSET") {
        throw new Error(
          `op "${op.name}" (${op.type}): auto_pad is not supported in the FPGA image; give explicit pads`,
        );
      }
      const ones = new Array<number>(rank).fill(1);
      return {
        ...common,
        kernel: op.ints("kernel_shape", []),
        strides: op.ints("strides", ones),
        dilations: op.ints("dilations", ones),
        pads: op.ints("pads", new Array<number>(2 * rank).fill(0)),
        ceilMode: [op.int("ceil_mode", 0) === 1 ? 1 : 0], // onnxruntime: only 1 is ceil
        ...(kind === "averagePool" ? { countIncludePad: [op.flag("count_include_pad") ? 1 : 0] } : {}),
      };
    }
    case "affine": {
      const params = op.operands.slice(1, 5);
      const channels = dims(data[0] ?? null)?.[1];
      const trained = op.flag("training_mode");
      if (
        trained || params.length !== 4 || !params.every((p) =>
          isConstant(p) && p.constant.shape.length === 1 &&
          p.constant.shape[0] === channels
        )
      ) {
        throw new Error(
          `op "${op.name}" (BatchNormalization) is not a per-channel affine with constant parameters: ` +
            "fold it first: add fold-bn before bfp",
        );
      }
      const [gamma, beta, mean, variance] = params.map((p) => toFloat64(p!.constant!));
      const epsilon = op.float("epsilon", 1e-5);
      const n = gamma.length;
      const scale = [new Array<number>(n), new Array<number>(n)], shift = [new Array<number>(n), new Array<number>(n)];
      for (let c = 0; c < n; c++) {
        // y = a·x + c with a = gamma / sqrt(var + eps), c = beta - mean·a (float64), each rounded once to float32.
        const a = gamma[c] / Math.sqrt(variance[c] + epsilon);
        [scale[0][c], scale[1][c]] = float32Parts(a);
        [shift[0][c], shift[1][c]] = float32Parts(beta[c] - mean[c] * a);
      }
      return {
        ...common,
        inputs: [idOf(data[0])],
        ...shapes([data[0]]),
        scaleSignificands: scale[0],
        scaleExponents: scale[1],
        shiftSignificands: shift[0],
        shiftExponents: shift[1],
      };
    }
    default:
      throw unsupported(op);
  }
}
