/**
 * The `ai.bfp` op definitions (`Quantize`, `Conv`, `Gemm`; `plan.ts` states
 * their operands and attributes): shape inference and the verifier's checks
 * through the plans, the interpreter through the quantizer and the kernel.
 * @module
 */
import type { Op } from "../graph.ts";
import type { InferContext, OpDef } from "../op_def.ts";
import { opError } from "../ops/common.ts";
import { isStatic } from "../ops/common.ts";
import { shapeSize, type Tensor, tensor } from "../tensor.ts";
import type { TensorType } from "../types.ts";
import { bfpStorage } from "./format.ts";
import { bfpLayer } from "./kernel.ts";
import {
  BFP_DOMAIN,
  bfpElementType,
  bfpLayerPlan,
  bfpLayerResultType,
  type BfpQuantizePlan,
  bfpQuantizePlan,
} from "./plan.ts";
import { activationExponentShape, channelAxis, quantizeActivations } from "./quantize.ts";

function inferQuantize(op: Op, ctx: InferContext): (TensorType | null)[] {
  const { format, blocking } = bfpQuantizePlan(op);
  const x = ctx.types[0];
  if (x === null || x === undefined) return [null, null];
  if (x.elem !== "f32") throw opError(op, `X must be f32, found ${typeof x.elem === "string" ? x.elem : "bfp"}`);
  const mType: TensorType = { elem: bfpElementType(format, blocking.block), shape: x.shape };
  if (x.shape === null) return [mType, { elem: "i8", shape: null }];
  if (x.shape.length < 2) throw opError(op, `X must have rank >= 2 ([N, C, ...]), found rank ${x.shape.length}`);
  let axis: number;
  try {
    axis = channelAxis(x.shape.length, blocking);
  } catch (e) {
    throw opError(op, (e as Error).message);
  }
  const c = x.shape[axis];
  if (typeof c === "number" && c % blocking.group !== 0) {
    throw opError(op, `${c} channels are not divisible into ${blocking.group} groups`);
  }
  return [mType, { elem: "i8", shape: activationExponentShape(x.shape, blocking) }];
}

/**
 * Quantize an f32 activation tensor as a Quantize plan says: mantissas and
 * exponents as tensors, with the count of saturated elements.
 *
 * @throws {Error} Naming the op for NaN/Inf elements or channels not divisible into the groups.
 */
export function runBfpQuantize(plan: BfpQuantizePlan, x: Tensor, name: string): {
  mantissas: Tensor;
  exponents: Tensor;
  saturated: number;
} {
  const { format, blocking, staticExponent } = plan;
  let q;
  try {
    q = quantizeActivations(x.data as Float32Array, x.shape, format, blocking, name, staticExponent ?? undefined);
  } catch (e) {
    throw opError(plan.op, (e as Error).message);
  }
  return {
    mantissas: tensor(bfpStorage(format.mantissaBits), x.shape, q.mantissas),
    exponents: tensor("i8", activationExponentShape(x.shape, blocking) as number[], q.exponents),
    saturated: q.saturated,
  };
}

function interpretQuantize(op: Op, inputs: readonly (Tensor | null)[]): Tensor[] {
  const x = inputs[0];
  if (x === null || x === undefined || x.dtype !== "f32") throw opError(op, "X must be an f32 tensor");
  const q = runBfpQuantize(bfpQuantizePlan(op), x, op.operand(0)?.name ?? "X");
  return [q.mantissas, q.exponents];
}

function inferLayer(op: Op, ctx: InferContext): (TensorType | null)[] {
  return [bfpLayerResultType(bfpLayerPlan(op), ctx.types[0] ?? null)];
}

function interpretLayer(op: Op, inputs: readonly (Tensor | null)[]): Tensor[] {
  const [xm, xe] = inputs;
  if (!xm || !xe) throw opError(op, "needs XM and XE");
  const r = bfpLayer(bfpLayerPlan(op), {
    mantissas: xm.data as Int8Array | Int16Array,
    exponents: xe.data as Int8Array,
    shape: xm.shape,
  });
  return [tensor("f32", r.shape, new Float32Array(r.y))];
}

function macsBfp(_op: Op, operands: readonly (TensorType | null)[], results: readonly (TensorType | null)[]): number {
  const w = operands[2]?.shape, y = results[0]?.shape;
  if (!w || !y || !isStatic(w)) return 0;
  let perOutput = shapeSize(w.slice(1));
  let outputs = 1;
  for (const d of y) outputs *= typeof d === "number" ? d : 1;
  if (y.length === 2) perOutput = w[1]; // Gemm: one MAC per weight per sample
  return outputs * perOutput;
}

/**
 * The `ai.bfp` op definitions: `Quantize`, `Conv`, `Gemm` (`plan.ts` header).
 *
 * @example Quantize an activation in the interpreter
 * ```ts
 * import assert from "node:assert/strict";
 * import { attr } from "../attributes.ts";
 * import { Graph, Op, Value } from "../graph.ts";
 * import { interpret } from "../interpreter.ts";
 * import { Module } from "../module.ts";
 * import { float32Tensor } from "../tensor.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 2] }));
 * const q = g.addOp(new Op({
 *   name: "q", type: "Quantize", domain: "ai.bfp", operands: [x],
 *   results: [new Value("xm"), new Value("xe")], attributes: [["mantissa", attr.int(4)]],
 * }));
 * g.outputs.push(...q.results);
 * const out = interpret(new Module(g, [["", 13], ["ai.bfp", 1]]), { x: float32Tensor([1, 2], [0.3, -1]) });
 * assert.deepEqual([...out.xm.data, ...out.xe.data], [1, -4, 0]); // steps of 2^-2
 * ```
 */
export const bfpOps: OpDef[] = [
  { type: "Quantize", domain: BFP_DOMAIN, infer: inferQuantize, interpret: interpretQuantize },
  { type: "Conv", domain: BFP_DOMAIN, infer: inferLayer, interpret: interpretLayer, macs: macsBfp },
  { type: "Gemm", domain: BFP_DOMAIN, infer: inferLayer, interpret: interpretLayer, macs: macsBfp },
];
