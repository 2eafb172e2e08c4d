/**
 * Intermediate tensors on the calibration data, for the data-aware passes (`fc-corr`, `mask-select`): one run,
 * a chunk of samples at a time, that holds the values asked for and the live activations of one op (never the
 * whole network's for every sample), and one error diagnostic naming the pass when the run fails.
 * @module
 */
import type { Value } from "../../ir/graph.ts";
import type { Module } from "../../ir/module.ts";
import type { Tensor } from "../../ir/tensor.ts";
import type { PassContext } from "../pass.ts";
import { CHUNK_SAMPLES, ChunkedRun } from "./bfp_error.ts";

/**
 * Run `ctx.calibration` through `module` and return the tensors of `values`; null, after an error diagnostic
 * saying why, when there is no calibration data or the run fails. The run goes op by op over chunks of
 * {@linkcode CHUNK_SAMPLES} samples (`ChunkedRun`: the same bits as one run on all of them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../../ir/parser.ts";
 * import { testPassContext } from "../testing.ts";
 * import { probeCalibration } from "./calibration.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[N,2]) -> (%y) {
 *   %t = Relu(%x) : f32[N,2]
 *   %y = Neg(%t) : f32[N,2]
 *   return %y
 * }
 * }`);
 * const x = { dtype: "f32" as const, shape: [1, 2], data: new Float32Array([-1, 2]) };
 * const ctx = testPassContext({ module: m, calibration: { x } });
 * const t = m.graph.ops[0].result;
 * assert.deepEqual([...probeCalibration(m, [t], ctx, "demo")!.get(t)!.data], [0, 2]);
 * ```
 */
export function probeCalibration(
  module: Module,
  values: readonly Value[],
  ctx: PassContext,
  pass: string,
): Map<Value, Tensor> | null {
  if (ctx.calibration === null) {
    ctx.emit("error", `${pass} needs calibration data (--calib, or calibration in compile())`);
    return null;
  }
  try {
    const run = new ChunkedRun(module, ctx.calibration, CHUNK_SAMPLES, ctx.ops, 0, values);
    run.finish();
    return new Map(values.map((v) => [v, run.joined(v)]));
  } catch (e) {
    ctx.emit("error", `${pass} could not run the calibration data: ${e instanceof Error ? e.message : e}`);
    return null;
  }
}
