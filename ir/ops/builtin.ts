/**
 * The built-in op definitions: every family of `ops/` in one registry.
 * @module
 */
import { OpRegistry } from "../op_def.ts";
import { bfpOps } from "../bfp/ops.ts";
import { elementwiseOps } from "./elementwise.ts";
import { nnOps } from "./nn.ts";
import { tensorOps } from "./tensor.ts";

/** Registry of the op types the IR models (shape inference, interpreter, cost). */
export const builtinOps: OpRegistry = new OpRegistry([...nnOps, ...elementwiseOps, ...tensorOps, ...bfpOps]);
