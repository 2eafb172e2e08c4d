/**
 * The pass interface: a named, configurable, in-place transformation of a
 * module. Passes do no I/O; they report through their {@linkcode PassContext}
 * (statistics for the report, diagnostics naming ops, log lines).
 * @module
 */
import type { Op } from "../ir/graph.ts";
import type { Module } from "../ir/module.ts";
import type { OpRegistry } from "../ir/op_def.ts";
import { builtinOps } from "../ir/builtin_ops.ts";
import type { Tensor } from "../ir/tensor.ts";
import type { OptionSchema, OptionValues } from "./options.ts";

/** A statistic value: plain JSON (numbers, strings, booleans, arrays and records of them). */
export type StatValue = number | string | boolean | null | readonly StatValue[] | { readonly [key: string]: StatValue };

/** Severity of a diagnostic. */
export type Severity = "error" | "warning" | "note";

/** A problem or remark a pass reports, naming the op it is about. */
export interface Diagnostic {
  /** How bad it is; an `error` fails the pipeline after the pass returns. */
  readonly severity: Severity;
  /** One line. */
  readonly message: string;
  /** Name of the op it is about, if any. */
  readonly op?: string;
  /** Name of the pass that reported it. */
  readonly pass: string;
}

/**
 * A cached, lazily computed fact about a module (for example channel groups).
 * The pass manager drops cached analyses after a pass that reports a change.
 */
export interface Analysis<T> {
  /** Name shown in timings. */
  readonly name: string;
  /** Compute the fact from the module. */
  compute(module: Module): T;
}

/** What a pass gets besides its module and options. */
export interface PassContext {
  /** Op definitions in effect (built-ins plus plugins'). */
  readonly ops: OpRegistry;
  /** Calibration inputs by graph input name, when the user gave some. */
  readonly calibration: Readonly<Record<string, Tensor>> | null;
  /** Record a statistic for the report (`channels-removed`, `rank`, ...). */
  stat(name: string, value: StatValue): void;
  /** Report a diagnostic, naming the op when there is one. */
  emit(severity: Severity, message: string, op?: Op): void;
  /** A progress or detail line (shown with `--verbose`, never required reading). */
  log(message: string): void;
  /** The result of an analysis, computed once per unchanged module. */
  analysis<T>(analysis: Analysis<T>): T;
}

/** A named, configurable, in-place transformation of a module. */
export interface Pass<S extends OptionSchema = OptionSchema> {
  /** Kebab-case name used in pipelines (`fold-bn`). */
  readonly name: string;
  /** One line for `--list-passes`. */
  readonly summary: string;
  /** Option declarations by camelCase key; pipelines spell keys in kebab-case. */
  readonly options: S;
  /** Transform `module` in place; return true when anything changed. */
  run(module: Module, options: OptionValues<S>, ctx: PassContext): boolean | Promise<boolean>;
}

/**
 * Declare a pass, keeping its option types (an identity function).
 *
 * @example A pass that counts ops
 * ```ts
 * import assert from "node:assert/strict";
 * import { definePass } from "./pass.ts";
 * const countOps = definePass({
 *   name: "count-ops",
 *   summary: "Record the number of ops",
 *   options: { min: { kind: "int", default: 0, min: 0, doc: "Ignored" } },
 *   run(module, { min }, ctx) {
 *     ctx.stat("ops", Math.max(min, module.graph.ops.length));
 *     return false;
 *   },
 * });
 * assert.equal(countOps.name, "count-ops");
 * ```
 */
export function definePass<S extends OptionSchema>(pass: Pass<S>): Pass<S> {
  return pass;
}

/**
 * Where the passes layer looks passes and op definitions up: what
 * `parsePipeline` and `runPipeline` need from a registry. The driver's
 * `Registry` implements it; {@linkcode passLookup} makes one from a list.
 */
export interface PassLookup {
  /** The pass called `name`, if any. */
  pass(name: string): Pass | undefined;
  /** Every pass, for "did you mean" and the list in an unknown-pass message. */
  passes(): readonly Pass[];
  /** Op definitions the passes and the verifier use. */
  readonly ops: OpRegistry;
}

/**
 * A {@linkcode PassLookup} over a fixed list of passes.
 *
 * @param passes The passes, looked up by name.
 * @param ops Op definitions (default: a copy of the built-in ones).
 * @throws {Error} When two passes share a name.
 *
 * @example Look a pass up
 * ```ts
 * import assert from "node:assert/strict";
 * import { definePass, passLookup } from "./pass.ts";
 * const dce = definePass({ name: "dce", summary: "Remove dead ops", options: {}, run: () => false });
 * const lookup = passLookup([dce]);
 * assert.equal(lookup.pass("dce"), dce);
 * assert.equal(lookup.pass("cse"), undefined);
 * ```
 */
export function passLookup(passes: readonly Pass[], ops: OpRegistry = builtinOps.clone()): PassLookup {
  const byName = new Map<string, Pass>();
  for (const p of passes) {
    if (byName.has(p.name)) throw new Error(`pass "${p.name}" is given twice`);
    byName.set(p.name, p);
  }
  const sorted = [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  return { pass: (name) => byName.get(name), passes: () => sorted, ops };
}
