/**
 * Testing helpers for pass authors: a {@linkcode PassContext} that records
 * what a pass reports (statistics, diagnostics, log lines) for assertions,
 * so a pass can be unit-tested by calling its `run` directly.
 * @module
 */
import type { Module } from "../ir/module.ts";
import type { OpRegistry } from "../ir/op_def.ts";
import { builtinOps } from "../ir/builtin_ops.ts";
import type { Tensor } from "../ir/tensor.ts";
import type { Analysis, Diagnostic, PassContext, StatValue } from "./pass.ts";

/** Options of {@linkcode testPassContext}. */
export interface TestPassContextOptions {
  /** The module the pass runs on, which `analysis()` computes on; without it `analysis()` throws. */
  readonly module?: Module;
  /** Op definitions in effect (default: the built-in ops). */
  readonly ops?: OpRegistry;
  /** Calibration inputs by graph input name (default: none). */
  readonly calibration?: Readonly<Record<string, Tensor>> | null;
  /** Pass name recorded in each diagnostic (default `"test"`). */
  readonly pass?: string;
}

/** A {@linkcode PassContext} that keeps everything the pass reported. */
export interface TestPassContext extends PassContext {
  /** Statistics by name, last value wins (as in the report). */
  readonly stats: Record<string, StatValue>;
  /** Diagnostics in the order they were emitted, shaped as the pass manager records them. */
  readonly diagnostics: Diagnostic[];
  /** Log lines in order. */
  readonly logs: string[];
  /** Names of the analyses computed, in order; each is computed once and then cached. */
  readonly analyses: string[];
}

/**
 * A context for calling `pass.run(module, options, ctx)` in a test, without
 * the pass manager. It records statistics, diagnostics and log lines, and
 * computes analyses on `options.module`, caching each as the pass manager does
 * within one pass. It does not verify the IR, infer shapes or turn `error`
 * diagnostics into a failure: a test checks `ctx.diagnostics` itself, or runs
 * the pass through `runPipeline` for the whole behaviour.
 *
 * @param options The module for analyses, op definitions, calibration inputs and the pass name.
 * @returns A fresh context; use one per `run`.
 *
 * @example Check the statistics of a pass
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../ir/parser.ts";
 * import { dcePass } from "./dce.ts";
 * import { testPassContext } from "./testing.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[2]) -> (%y) {
 *   %dead = Neg(%x) : f32[2]
 *   %y = Relu(%x) : f32[2]
 *   return %y
 * }
 * }`);
 * const ctx = testPassContext();
 * assert.equal(dcePass.run(m, {}, ctx), true);
 * assert.deepEqual(ctx.stats, { "ops-removed": 1, "constants-removed": 0 });
 * ```
 *
 * @example Diagnostics and analyses
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../ir/parser.ts";
 * import { type Analysis, definePass } from "./pass.ts";
 * import { testPassContext } from "./testing.ts";
 * const reluCount: Analysis<number> = {
 *   name: "relu-count",
 *   compute: (module) => module.graph.ops.filter((op) => op.type === "Relu").length,
 * };
 * const noRelu = definePass({
 *   name: "no-relu",
 *   summary: "Warn about every Relu",
 *   options: {},
 *   run(module, _options, ctx) {
 *     ctx.stat("relus", ctx.analysis(reluCount));
 *     for (const op of module.graph.ops) if (op.type === "Relu") ctx.emit("warning", "found a Relu", op);
 *     return false;
 *   },
 * });
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[2]) -> (%y) {
 *   %y = Relu(%x) : f32[2]
 *   return %y
 * }
 * }`);
 * const ctx = testPassContext({ module: m, pass: "no-relu" });
 * assert.equal(noRelu.run(m, {}, ctx), false);
 * assert.deepEqual(ctx.stats, { relus: 1 });
 * assert.deepEqual(ctx.diagnostics, [{ severity: "warning", message: "found a Relu", op: "y", pass: "no-relu" }]);
 * assert.deepEqual(ctx.analyses, ["relu-count"]);
 * ```
 */
export function testPassContext(options: TestPassContextOptions = {}): TestPassContext {
  const pass = options.pass ?? "test";
  const cache = new Map<Analysis<unknown>, unknown>();
  const ctx: TestPassContext = {
    ops: options.ops ?? builtinOps,
    calibration: options.calibration ?? null,
    stats: {},
    diagnostics: [],
    logs: [],
    analyses: [],
    stat(name, value) {
      ctx.stats[name] = value;
    },
    emit(severity, message, op) {
      ctx.diagnostics.push(op === undefined ? { severity, message, pass } : { severity, message, op: op.name, pass });
    },
    log(message) {
      ctx.logs.push(message);
    },
    analysis<T>(analysis: Analysis<T>): T {
      if (cache.has(analysis)) return cache.get(analysis) as T;
      if (options.module === undefined) {
        throw new Error(`testPassContext(): analysis "${analysis.name}" needs the module: pass { module }`);
      }
      const result = analysis.compute(options.module);
      ctx.analyses.push(analysis.name);
      cache.set(analysis, result);
      return result;
    },
  };
  return ctx;
}
