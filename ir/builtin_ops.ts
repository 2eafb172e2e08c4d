/**
 * The built-in op definitions: every family of `ops/` and the `ai.bfp` ops of
 * `bfp/` in one registry. It sits above both folders, so `ops/` <- `bfp/` <-
 * this file stays one-way.
 * @module
 */
import { bfpOps } from "./bfp/ops.ts";
import { OpRegistry } from "./op_def.ts";
import { elementwiseOps } from "./ops/elementwise.ts";
import { nnOps } from "./ops/nn.ts";
import { tensorOps } from "./ops/tensor.ts";

/** Registry of the op types the IR models (shape inference, interpreter, cost). */
export const builtinOps: OpRegistry = new OpRegistry([...nnOps, ...elementwiseOps, ...tensorOps, ...bfpOps]);
