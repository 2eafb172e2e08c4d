/**
 * Top-1 accuracy of a classifier on a labelled data set, through the reference
 * interpreter (for a module) or through onnxruntime-node (for an ONNX artifact),
 * batched along the first axis. This is how compression is judged.
 * @module
 */
import { Interpreter } from "../ir/interpreter.ts";
import type { Module } from "../ir/module.ts";
import type { OpRegistry } from "../ir/op_def.ts";
import { shapeSize, type Tensor, type TensorData, toFloat64 } from "../ir/tensor.ts";
import { dtypeOfOrt, fromOrtTensor, loadOnnxruntime, ORT_TYPES, toOrtTensor } from "./onnxruntime.ts";
import { type Dim, elementTypeToString, isTensorType } from "../ir/types.ts";
import { quote } from "../ir/quote.ts";

/** Options of {@linkcode evaluate} and {@linkcode evaluateOnnx}. */
export interface EvaluateOptions {
  /** Images per run (default 100); a model with a fixed batch dimension uses that instead. */
  batchSize?: number;
  /** Op definitions for the interpreter (default: the built-ins); ignored by {@linkcode evaluateOnnx}. */
  registry?: OpRegistry;
  /** Called after each batch with the samples scored so far and the total (for a progress line). */
  onProgress?: (done: number, total: number) => void;
}

/** Top-1 accuracy over a data set. */
export interface EvaluationResult {
  /** `correct / total`, a fraction in [0, 1]. */
  accuracy: number;
  /** Samples whose highest-scoring class is the label. */
  correct: number;
  /** Samples evaluated. */
  total: number;
}

/**
 * A data set that does not fit the model (or a model that cannot be scored): the message is
 * `Cannot evaluate: ` and the {@linkcode EvaluationError.reason}.
 */
export class EvaluationError extends Error {
  /** What is wrong, without the `Cannot evaluate: ` prefix (`labels must be i64 or i32, found f32`). */
  readonly reason: string;

  /** An error for `reason`. */
  constructor(reason: string) {
    super(`Cannot evaluate: ${reason}`);
    this.name = "EvaluationError";
    this.reason = reason;
  }
}

/** The input a data set is fed to: its name, element type and shape (first axis = batch). */
export interface ModelInput {
  /** Graph input name. */
  name: string;
  /** Element type it takes (`f32`). */
  dtype: string;
  /** Its shape, `null` when unknown; the first axis is the samples. */
  shape: readonly Dim[] | null;
}

/**
 * Top-1 accuracy of `module` on `inputs` (first axis: samples) against `labels`,
 * through the reference interpreter. The interpreter is prepared once and run
 * per batch on zero-copy slices of `inputs`; the model's first graph input (that
 * has no default) gets the batch, and the predicted class is the argmax over the
 * last axis of the first graph output (ties: the lowest index, as `numpy.argmax`).
 *
 * @param module A classifier.
 * @param inputs Samples, e.g. f32 `[N,1,28,28]`.
 * @param labels Class indices, i64 or i32 `[N]`.
 * @throws {EvaluationError} One line starting `Cannot evaluate: ` when the counts of
 *   inputs and labels differ, the inputs do not match the model input's dtype or
 *   shape (naming it), the labels are not integers or not in [0, classes), or the
 *   output has no class axis.
 *
 * @example Accuracy of a one-op "classifier"
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { Module } from "../ir/module.ts";
 * import { evaluate } from "./evaluate.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 3] }));
 * g.outputs.push(g.addOp(new Op({ name: "relu", type: "Relu", operands: [x], results: [new Value("y")] })).result);
 * const inputs = { dtype: "f32" as const, shape: [2, 3], data: new Float32Array([0, 5, 1, 9, 0, 0]) };
 * const labels = { dtype: "i64" as const, shape: [2], data: new BigInt64Array([1n, 2n]) };
 * assert.deepEqual(evaluate(new Module(g), inputs, labels), { accuracy: 0.5, correct: 1, total: 2 });
 * ```
 */
export function evaluate(
  module: Module,
  inputs: Tensor,
  labels: Tensor,
  options: EvaluateOptions = {},
): EvaluationResult {
  const graph = module.graph;
  const feeds = graph.inputs.filter((v) => v.constant === null);
  if (feeds.length === 0) throw new EvaluationError("the model has no graph input to feed");
  if (feeds.length > 1) {
    throw new EvaluationError(
      `the model has ${feeds.length} inputs without defaults (${
        feeds.map((v) => `"${v.name}"`).join(", ")
      }); only one can take the data set`,
    );
  }
  if (graph.outputs.length === 0) throw new EvaluationError("the model has no graph output");
  const input = feeds[0];
  const type = isTensorType(input.type) ? input.type : null;
  const target: ModelInput = {
    name: input.name,
    dtype: type === null ? inputs.dtype : elementTypeToString(type.elem),
    shape: type?.shape ?? null,
  };
  const interpreter = new Interpreter(module, { registry: options.registry });
  const outputName = graph.outputs[0].name;
  const counts = tally(target, inputs, labels, options.batchSize);
  const total = inputs.shape[0];
  for (const batch of counts.batches()) {
    counts.score(interpreter.run({ [input.name]: batch.batch })[outputName], batch);
    options.onProgress?.(batch.first + batch.count, total);
  }
  return counts.result();
}

/**
 * Top-1 accuracy of an ONNX model through onnxruntime-node, batched and scored
 * exactly as {@linkcode evaluate} does (the independent reference for it). The
 * session is released when done, also on error.
 *
 * @param modelBytes A serialised ONNX model.
 * @param inputs Samples, e.g. f32 `[N,1,28,28]`.
 * @param labels Class indices, i64 or i32 `[N]`.
 * @throws {Error} As {@linkcode evaluate}; onnxruntime's own errors pass through.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exportOnnx } from "../ir/onnx/export.ts";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { Module } from "../ir/module.ts";
 * import { evaluateOnnx } from "./evaluate.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 3] }));
 * const y = g.addOp(new Op({ name: "relu", type: "Relu", operands: [x], results: [new Value("y")] })).result;
 * y.type = { elem: "f32", shape: ["N", 3] };
 * g.outputs.push(y);
 * const inputs = { dtype: "f32" as const, shape: [2, 3], data: new Float32Array([0, 5, 1, 9, 0, 0]) };
 * const labels = { dtype: "i32" as const, shape: [2], data: new Int32Array([1, 0]) };
 * const result = await evaluateOnnx(exportOnnx(new Module(g)), inputs, labels);
 * assert.equal(result.accuracy, 1);
 * ```
 */
export async function evaluateOnnx(
  modelBytes: Uint8Array,
  inputs: Tensor,
  labels: Tensor,
  options: EvaluateOptions = {},
): Promise<EvaluationResult> {
  // Loaded on first use so that importing the library does not load onnxruntime's native addon.
  const ort = await loadOnnxruntime();
  const session = await ort.InferenceSession.create(modelBytes);
  try {
    const meta = session.inputMetadata;
    if (meta.length !== 1) {
      throw new EvaluationError(
        `the model has ${meta.length} inputs (${
          session.inputNames.map((n) => `"${n}"`).join(", ")
        }); only one can take the data set`,
      );
    }
    const first = meta[0];
    const target: ModelInput = first.isTensor
      ? {
        name: first.name,
        dtype: dtypeOfOrt(first.type) ?? first.type,
        shape: first.shape.length === 0 ? null : first.shape.map((d) => (typeof d === "number" && d < 0 ? "?" : d)),
      }
      : { name: first.name, dtype: inputs.dtype, shape: null };
    const counts = tally(target, inputs, labels, options.batchSize);
    if (ORT_TYPES[inputs.dtype] === undefined) {
      throw new EvaluationError(`onnxruntime cannot take ${inputs.dtype} inputs`);
    }
    const outputName = session.outputNames[0];
    for (const batch of counts.batches()) {
      const out = (await session.run({ [target.name]: toOrtTensor(ort, batch.batch) }))[outputName];
      if (dtypeOfOrt(out.type) === undefined || Array.isArray(out.data)) {
        throw new EvaluationError(`output "${outputName}" is ${out.type}, not numeric scores`);
      }
      counts.score(fromOrtTensor(out), batch);
    }
    return counts.result();
  } finally {
    await session.release();
  }
}

/** One batch: the slice fed to the model and which samples it holds. */
interface Batch {
  /** Samples `first .. first + count - 1`, zero-padded to the model's fixed batch size if it has one. */
  batch: Tensor;
  /** Index of the batch's first sample. */
  first: number;
  /** Real samples in the batch. */
  count: number;
}

/** Batches of a checked data set and the top-1 tally over them. */
interface Tally {
  /** The batches in order. */
  batches(): Generator<Batch>;
  /** Count the hits of one batch from the model's first output. */
  score(out: Tensor, batch: Batch): void;
  /** The result so far. */
  result(): EvaluationResult;
}

/**
 * Check the data set against the model input, and slice batches along the
 * first axis (views, no copy; the last batch is zero-padded only when the model's
 * batch dimension is fixed) for {@linkcode evaluate} and {@linkcode evaluateOnnx}.
 */
function tally(target: ModelInput, inputs: Tensor, labels: Tensor, batchSizeOption: number | undefined): Tally {
  if (inputs.shape.length === 0) throw new EvaluationError("inputs are a scalar, expected [N, ...] samples");
  const labelOf = labelReader(labels);
  const total = inputs.shape[0];
  if (labels.shape[0] !== total) throw new EvaluationError(`${total} inputs but ${labels.shape[0]} labels`);
  if (total === 0) throw new EvaluationError("the data set is empty");
  checkInput(target, inputs);
  const fixedBatch = target.shape !== null && typeof target.shape[0] === "number" ? target.shape[0] : null;
  const batchSize = fixedBatch ?? batchSizeOption ?? 100;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new EvaluationError(`batch size must be a positive integer, found ${batchSize}`);
  }
  const sampleSize = shapeSize(inputs.shape.slice(1));
  const data = inputs.data as Exclude<TensorData, string[]>;
  let correct = 0;
  return {
    *batches(): Generator<Batch> {
      for (let first = 0; first < total; first += batchSize) {
        const count = Math.min(batchSize, total - first);
        let slice = data.subarray(first * sampleSize, (first + count) * sampleSize);
        const rows = fixedBatch ?? count;
        if (rows > count) {
          const padded = new (slice.constructor as new (n: number) => typeof slice)(rows * sampleSize);
          (padded as Float32Array).set(slice as Float32Array);
          slice = padded;
        }
        yield { batch: { dtype: inputs.dtype, shape: [rows, ...inputs.shape.slice(1)], data: slice }, first, count };
      }
    },
    score(out: Tensor, { first, count }: Batch): void {
      const classes = out.shape[out.shape.length - 1] ?? 0;
      const rows = classes === 0 ? 0 : shapeSize(out.shape) / classes;
      if (out.shape.length === 0 || rows < count) {
        throw new EvaluationError(
          `the first output has shape [${out.shape.join(",")}], expected [${count}, classes]`,
        );
      }
      const scores = out.data instanceof Float32Array || out.data instanceof Float64Array ? out.data : toFloat64(out);
      for (let r = 0; r < count; r++) {
        // argmax with ties to the lowest index, as numpy.argmax and torch.argmax on CPU
        let best = 0;
        let bestScore = scores[r * classes];
        for (let c = 1; c < classes; c++) {
          const s = scores[r * classes + c];
          if (s > bestScore) {
            bestScore = s;
            best = c;
          }
        }
        const label = labelOf(first + r);
        if (!(label >= 0 && label < classes)) {
          throw new EvaluationError(
            `label ${label} of sample ${first + r} is outside [0, ${classes}): the model scores ${classes} classes`,
          );
        }
        if (best === label) correct++;
      }
    },
    result: (): EvaluationResult => ({ accuracy: correct / total, correct, total }),
  };
}

/** Class index of sample `i`, from i64 or i32 labels of shape `[N]`. */
function labelReader(labels: Tensor): (i: number) => number {
  if (labels.shape.length !== 1) {
    throw new EvaluationError(`labels must have shape [N], found [${labels.shape.join(",")}]`);
  }
  if (labels.dtype === "i64") {
    const d = labels.data as BigInt64Array;
    return (i) => Number(d[i]);
  }
  if (labels.dtype === "i32") {
    const d = labels.data as Int32Array;
    return (i) => d[i];
  }
  throw new EvaluationError(`labels must be i64 or i32, found ${labels.dtype}`);
}

/**
 * Why `samples` cannot feed `input`, or `undefined` when they can: they must have its element type and every static
 * dimension of its shape but the first (the samples; a fixed batch size is met by batching). Used for evaluation and
 * calibration data alike.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { samplesMismatch } from "./evaluate.ts";
 * const input = { name: "x", dtype: "f32", shape: ["N", 4] };
 * assert.equal(samplesMismatch(input, { dtype: "f32", shape: [7, 4], data: new Float32Array(28) }), undefined);
 * assert.equal(samplesMismatch(input, { dtype: "f32", shape: [4], data: new Float32Array(4) }),
 *   'input "x" must have shape [N,4] (first axis: the samples), found [4]');
 * ```
 */
export function samplesMismatch(input: ModelInput, samples: Tensor): string | undefined {
  const name = quote(input.name);
  if (input.dtype !== samples.dtype) return `input ${name} must be ${input.dtype}, found ${samples.dtype}`;
  const shape = input.shape;
  if (shape === null) return undefined;
  const matches = shape.length === samples.shape.length &&
    shape.every((d, i) => i === 0 || typeof d !== "number" || d === samples.shape[i]);
  if (matches) return undefined;
  const axis = shape.length === samples.shape.length + 1 ? " (first axis: the samples)" : "";
  return `input ${name} must have shape [${shape.join(",")}]${axis}, found [${samples.shape.join(",")}]`;
}

/** Inputs must match the model input (see {@linkcode samplesMismatch}). */
function checkInput(target: ModelInput, inputs: Tensor): void {
  const problem = samplesMismatch(target, inputs);
  if (problem !== undefined) throw new EvaluationError(problem);
}
