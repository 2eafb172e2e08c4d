/**
 * The target interface: turns a compiled module into named artifacts (file
 * name to bytes). Targets do no I/O; writing files is the caller's job.
 * @module
 */
import type { Module } from "../ir/module.ts";
import type { OptionSchema, OptionValues } from "../passes/options.ts";
import type { Severity, StatValue } from "../passes/pass.ts";
import type { Tensor } from "../ir/tensor.ts";

/** What a target gets besides its module and options. */
export interface TargetContext {
  /** Base name for artifacts, from the input model's file name (`vgg_sparse`). */
  readonly modelName: string;
  /** Report a diagnostic. */
  emit(severity: Severity, message: string): void;
  /** The canonical pipeline the module went through (`compile()` sets it), for targets that record provenance. */
  readonly pipeline?: string;
  /** SHA-256 (lowercase hex) of the input model's bytes, when the caller knows them (`compile()` sets it). */
  readonly inputSha256?: string;
  /** Record a structured result (estimates, sizes) in the report's `target.stats`; absent outside `compile()`. */
  stat?(name: string, value: StatValue): void;
  /** Calibration inputs by graph input name (`compile()` sets them from its `calibration` option), for golden vectors. */
  readonly calibration?: Readonly<Record<string, Tensor>>;
}

/** Artifacts by file name (relative, `/`-separated). */
export type Artifacts = Map<string, Uint8Array>;

/** A named emitter of deployable artifacts. */
export interface Target<S extends OptionSchema = OptionSchema> {
  /** Name used with `--target`. */
  readonly name: string;
  /** One line for `--list-targets`. */
  readonly summary: string;
  /** Option declarations by camelCase key. */
  readonly options: S;
  /**
   * Artifact names that identify one build (the FPGA image): a caller writing into a folder refuses to replace or sit
   * beside a different file of this pattern there, unless told to (the CLI's `--force`).
   */
  readonly exclusive?: RegExp;
  /** Produce the artifacts of `module`. */
  emit(module: Module, options: OptionValues<S>, ctx: TargetContext): Artifacts | Promise<Artifacts>;
}

/**
 * Declare a target, keeping its option types (an identity function).
 *
 * @example A target that emits the op count
 * ```ts
 * import assert from "node:assert/strict";
 * import { defineTarget } from "./target.ts";
 * const opCount = defineTarget({
 *   name: "op-count",
 *   summary: "Write the op count as text",
 *   options: {},
 *   emit: (module, _options, ctx) =>
 *     new Map([[`${ctx.modelName}.txt`, new TextEncoder().encode(String(module.graph.ops.length))]]),
 * });
 * assert.equal(opCount.name, "op-count");
 * ```
 */
export function defineTarget<S extends OptionSchema>(target: Target<S>): Target<S> {
  return target;
}
