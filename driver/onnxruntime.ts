/**
 * onnxruntime-node as the independent reference: our tensors in, our tensors
 * out. The native addon is loaded on first use, so importing the library needs
 * no FFI permission.
 * @module
 */
import type * as Ort from "onnxruntime-node";
import type { Tensor, TensorData } from "../ir/tensor.ts";
import type { DType } from "../ir/types.ts";

/** onnxruntime's element type names, by our dtype (the ones onnxruntime-node feeds and returns). */
export const ORT_TYPES: Readonly<Partial<Record<DType, Ort.Tensor.Type>>> = {
  f32: "float32",
  f64: "float64",
  f16: "float16",
  i8: "int8",
  i16: "int16",
  i32: "int32",
  i64: "int64",
  u8: "uint8",
  u16: "uint16",
  u32: "uint32",
  u64: "uint64",
  bool: "bool",
  string: "string",
};

/** Our dtype of an onnxruntime element type name, if we have one. */
export function dtypeOfOrt(type: string): DType | undefined {
  return (Object.keys(ORT_TYPES) as DType[]).find((d) => ORT_TYPES[d] === type);
}

/** The onnxruntime-node module, loaded once on first use. */
export function loadOnnxruntime(): Promise<typeof Ort> {
  return import("onnxruntime-node");
}

/** An onnxruntime tensor over a tensor's data (no copy). */
export function toOrtTensor(ort: typeof Ort, t: Tensor): Ort.Tensor {
  const type = ORT_TYPES[t.dtype];
  if (type === undefined) throw new Error(`onnxruntime cannot take ${t.dtype} tensors`);
  // deno-lint-ignore no-explicit-any
  return new ort.Tensor(type, t.data as any, [...t.shape]);
}

/** A tensor over an onnxruntime tensor's data (no copy). */
export function fromOrtTensor(t: Ort.Tensor): Tensor {
  const dtype = dtypeOfOrt(t.type);
  if (dtype === undefined) throw new Error(`onnxruntime returned a ${t.type} tensor, which the IR cannot hold`);
  return { dtype, shape: [...t.dims], data: t.data as TensorData };
}

/**
 * Run an ONNX model (bytes, or a file path for a model with external data
 * beside it) in onnxruntime-node on named inputs; the session is released when
 * done, also on error.
 *
 * @example Run a one-op model
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { Module } from "../ir/module.ts";
 * import { exportOnnx } from "../ir/onnx/export.ts";
 * import { runOnnxruntime } from "./onnxruntime.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [3] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] })).result);
 * g.outputs[0].type = { elem: "f32", shape: [3] };
 * const { y } = await runOnnxruntime(exportOnnx(new Module(g)), {
 *   x: { dtype: "f32", shape: [3], data: new Float32Array([-1, 0, 2]) },
 * });
 * assert.deepEqual([...y.data], [0, 0, 2]);
 * ```
 */
export async function runOnnxruntime(
  model: Uint8Array | string,
  feeds: Readonly<Record<string, Tensor>>,
): Promise<Record<string, Tensor>> {
  const ort = await loadOnnxruntime();
  // Errors only: onnxruntime warns about every old-opset model, which is not news to a caller.
  const options = { logSeverityLevel: 3 } as const;
  const session = typeof model === "string"
    ? await ort.InferenceSession.create(model, options)
    : await ort.InferenceSession.create(model, options);
  try {
    const ortFeeds: Record<string, Ort.Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = toOrtTensor(ort, t);
    const out = await session.run(ortFeeds);
    return Object.fromEntries(Object.entries(out).map(([name, t]) => [name, fromOrtTensor(t)]));
  } finally {
    await session.release();
  }
}
