/**
 * Elementwise ops: arithmetic with broadcasting, activations, comparisons, reductions and softmax.
 * @module
 */
import type { OpDef } from "../op_def.ts";

/** Definitions of this family. */
export const elementwiseOps: OpDef[] = [];
