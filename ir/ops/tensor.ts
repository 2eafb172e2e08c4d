/**
 * Tensor-manipulation ops: shapes, slicing, joining, gathering, casting and constants.
 * @module
 */
import type { OpDef } from "../op_def.ts";

/** Definitions of this family. */
export const tensorOps: OpDef[] = [];
