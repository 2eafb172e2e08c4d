/**
 * Neural-network ops: convolution, pooling, normalization, Gemm and MatMul.
 * @module
 */
import type { OpDef } from "../op_def.ts";

/** Definitions of this family. */
export const nnOps: OpDef[] = [];
