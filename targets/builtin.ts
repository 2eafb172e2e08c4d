/**
 * The targets that ship with the compiler, in the order `--list-targets` shows them.
 * @module
 */
import type { OptionSchema } from "../passes/options.ts";
import { cTarget } from "./c/c_target.ts";
import { fpgaTarget } from "./fpga/fpga_target.ts";
import { onnxTarget } from "./onnx/onnx_target.ts";
import type { Target } from "./target.ts";

/** Every built-in target. */
export const builtinTargets: readonly Target<OptionSchema>[] = [onnxTarget, cTarget, fpgaTarget];
