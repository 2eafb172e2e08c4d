/**
 * The pass manager: runs pipeline steps over a module, giving each pass its
 * context (statistics, diagnostics, log, cached analyses), timing it, and
 * checking the IR after it (`verifyEach`). IR dumps and instrumentation hooks
 * live here, never in passes.
 * @module
 */
import type { Module } from "../ir/module.ts";
import type { OpRegistry } from "../ir/op_def.ts";
import { opError } from "../ir/ops/common.ts";
import { printModule } from "../ir/printer.ts";
import { inferShapes } from "../ir/shape.ts";
import type { Tensor } from "../ir/tensor.ts";
import { verifyModule } from "../ir/verifier.ts";
import type { Analysis, Diagnostic, PassContext, PassLookup, StatValue } from "./pass.ts";
import { closestName, type PipelineStep, printPipeline } from "./pipeline.ts";

/** Wall time of one analysis computed while a pass ran (cache hits are not listed). */
export interface AnalysisTiming {
  /** The analysis's name. */
  readonly name: string;
  /** Milliseconds spent computing it (also counted in the pass's time). */
  readonly ms: number;
}

/** What one pass did. */
export interface PassRecord {
  /** Pass name. */
  readonly name: string;
  /** Canonical text of this step (`prune{ratio=0.6,min-channels=4}`). */
  readonly pipeline: string;
  /** Wall time of the pass's `run`, analyses included, verification excluded. */
  readonly ms: number;
  /** Whether the pass reported a change. */
  readonly changed: boolean;
  /** Statistics the pass recorded (the last value given for each name). */
  readonly stats: Record<string, StatValue>;
  /** Warnings and notes the pass emitted (an error fails the pipeline instead). */
  readonly diagnostics: Diagnostic[];
  /** Analyses the pass computed, in order. */
  readonly analyses: readonly AnalysisTiming[];
}

/** Hooks called around every pass (MLIR's `PassInstrumentation`). */
export interface Instrumentation {
  /** Called before a pass runs. */
  beforePass?(step: PipelineStep, module: Module): void;
  /** Called after a pass succeeded and the IR verified. */
  afterPass?(record: PassRecord, module: Module): void;
  /** Called when a pass threw, emitted an error or broke the IR; `error` is the {@linkcode PassError} about to be thrown. */
  afterPassFailed?(step: PipelineStep, error: Error, module: Module): void;
}

/** Options of {@linkcode runPipeline}. */
export interface RunPipelineOptions {
  /** Passes and op definitions (a `Registry`, or `passLookup`); the passes and the verifier use its ops. */
  registry: PassLookup;
  /** Calibration inputs by graph input name, handed to passes. */
  calibration?: Readonly<Record<string, Tensor>> | null;
  /** Infer shapes and verify the module before the first pass and after each pass (default true). */
  verifyEach?: boolean;
  /** Print the IR before these passes (by name), or before every pass. */
  printIrBefore?: readonly string[] | "all";
  /** Print the IR after these passes (by name), or after every pass. */
  printIrAfter?: readonly string[] | "all";
  /** Also print the IR after every pass that reported a change. */
  printIrAfterChange?: boolean;
  /** Print the IR after a pass that failed (header `// ----- IR after x{...} failed -----`). */
  printIrAfterFailure?: boolean;
  /** Receives IR dumps (default: written to stderr). */
  onIr?: (header: string, ir: string) => void;
  /** Receives the log lines of passes (default: dropped). */
  onLog?: (pass: string, message: string) => void;
  /** Hooks around every pass. */
  instrument?: Instrumentation;
}

/** A pass failed: it threw, emitted an error diagnostic, returned no boolean, or left IR that does not verify. */
export class PassError extends Error {
  /** Name of the pass. */
  readonly pass: string;
  /** Canonical text of the failing step. */
  readonly step: string;
  /** Every diagnostic the pass emitted, errors included. */
  readonly diagnostics: readonly Diagnostic[];

  /** Create the error; `message` is one line. */
  constructor(message: string, step: PipelineStep, diagnostics: readonly Diagnostic[], options?: ErrorOptions) {
    super(message, options);
    this.name = "PassError";
    this.pass = step.pass.name;
    this.step = printPipeline([step]);
    this.diagnostics = diagnostics;
  }
}

/**
 * Run `steps` over `module` in place.
 *
 * @param module The module, changed by the passes.
 * @param steps Parsed pipeline steps.
 * @param options Lookup, verification, IR dumps, hooks.
 * @returns One record per pass, in order.
 * @throws {PassError} When a pass throws, emits an error diagnostic or breaks the IR
 *   (`pass "fold-bn" broke the IR: op "conv1" (Conv): ...`).
 * @throws {Error} When `verifyEach` is on and the module is invalid before the first
 *   pass, or a `printIr*` option names an unknown pass.
 *
 * @example Run a pass that records a statistic
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module } from "../ir/module.ts";
 * import { runPipeline } from "./manager.ts";
 * import { definePass, passLookup } from "./pass.ts";
 * import { parsePipeline } from "./pipeline.ts";
 * const registry = passLookup([definePass({
 *   name: "count-ops",
 *   summary: "Record the number of ops",
 *   options: {},
 *   run(module, _options, ctx) {
 *     ctx.stat("ops", module.graph.ops.length);
 *     return false;
 *   },
 * })]);
 * const records = await runPipeline(new Module(), parsePipeline("count-ops", registry), { registry });
 * assert.equal(records[0].pipeline, "count-ops");
 * assert.deepEqual(records[0].stats, { ops: 0 });
 * ```
 */
export async function runPipeline(
  module: Module,
  steps: readonly PipelineStep[],
  options: RunPipelineOptions,
): Promise<PassRecord[]> {
  const { registry, instrument } = options;
  const ops = registry.ops;
  const verifyEach = options.verifyEach ?? true;
  const onIr = options.onIr ?? ((header: string, ir: string) => console.error(`${header}\n${ir}`));
  const onLog = options.onLog ?? (() => {});
  const known = registry.passes().map((p) => p.name);
  const printBefore = passFilter(options.printIrBefore, "printIrBefore", known);
  const printAfter = passFilter(options.printIrAfter, "printIrAfter", known);
  const dump = (header: string): void => onIr(header, printModule(module));

  if (verifyEach && steps.length > 0) {
    const problem = checkIr(module, ops);
    if (problem !== null) throw new Error(`the IR is invalid before the first pass: ${problem}`);
  }

  // Analysis results stay valid until a pass reports a change.
  const analysisCache = new Map<Analysis<unknown>, unknown>();
  const records: PassRecord[] = [];
  for (const step of steps) {
    const name = step.pass.name;
    const text = printPipeline([step]);
    if (printBefore(name)) dump(`// ----- IR before ${text} -----`);
    instrument?.beforePass?.(step, module);

    const stats: Record<string, StatValue> = {};
    const diagnostics: Diagnostic[] = [];
    const errors: string[] = [];
    const analyses: AnalysisTiming[] = [];
    const ctx: PassContext = {
      ops,
      calibration: options.calibration ?? null,
      stat(statName, value) {
        stats[statName] = value;
      },
      emit(severity, message, op) {
        diagnostics.push(
          op === undefined ? { severity, message, pass: name } : { severity, message, op: op.name, pass: name },
        );
        if (severity === "error") errors.push(op === undefined ? message : opError(op, message).message);
      },
      log(message) {
        onLog(name, message);
      },
      analysis<T>(analysis: Analysis<T>): T {
        if (analysisCache.has(analysis)) return analysisCache.get(analysis) as T;
        const start = performance.now();
        const result = analysis.compute(module);
        analyses.push({ name: analysis.name, ms: performance.now() - start });
        analysisCache.set(analysis, result);
        return result;
      },
    };
    const fail = (message: string, cause?: unknown): PassError => {
      const error = new PassError(message, step, diagnostics, cause === undefined ? undefined : { cause });
      if (options.printIrAfterFailure) dump(`// ----- IR after ${text} failed -----`);
      instrument?.afterPassFailed?.(step, error, module);
      return error;
    };

    const start = performance.now();
    let changed: unknown;
    try {
      changed = await step.pass.run(module, step.options, ctx);
    } catch (e) {
      throw fail(`pass "${name}" failed: ${firstLine(e)}`, e);
    }
    const ms = performance.now() - start;
    if (errors.length > 0) {
      const more = errors.length > 1 ? ` (and ${errors.length - 1} more error${errors.length > 2 ? "s" : ""})` : "";
      throw fail(`pass "${name}" failed: ${errors[0]}${more}`);
    }
    if (typeof changed !== "boolean") {
      throw fail(`pass "${name}" failed: run() returned ${String(changed)}, expected true or false`);
    }
    if (changed) analysisCache.clear();
    if (verifyEach) {
      const problem = checkIr(module, ops);
      if (problem !== null) throw fail(`pass "${name}" broke the IR: ${problem}`);
    }

    const record: PassRecord = {
      name,
      pipeline: text,
      ms,
      changed,
      stats,
      diagnostics: diagnostics.filter((d) => d.severity !== "error"),
      analyses,
    };
    records.push(record);
    if (printAfter(name) || (options.printIrAfterChange && changed)) dump(`// ----- IR after ${text} -----`);
    instrument?.afterPass?.(record, module);
  }
  return records;
}

/**
 * Types refreshed by shape inference (passes may leave new results untyped),
 * then the verifier; the first problem, or null. A structural problem is
 * reported before an inference error it may have caused.
 */
function checkIr(module: Module, ops: OpRegistry): string | null {
  let inferError: unknown = null;
  try {
    inferShapes(module, { registry: ops });
  } catch (e) {
    inferError = e;
  }
  try {
    verifyModule(module, { registry: ops });
  } catch (e) {
    return firstLine(e);
  }
  return inferError === null ? null : firstLine(inferError);
}

/** A predicate on pass names for a `printIr*` option, checking that the names exist. */
function passFilter(
  names: readonly string[] | "all" | undefined,
  option: string,
  known: readonly string[],
): (name: string) => boolean {
  if (names === "all") return () => true;
  if (names === undefined || names.length === 0) return () => false;
  for (const n of names) {
    if (known.includes(n)) continue;
    const guess = closestName(n, known);
    throw new Error(`${option}: unknown pass "${n}"${guess === undefined ? "" : ` (did you mean "${guess}"?)`}`);
  }
  return (name) => names.includes(name);
}

function firstLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0];
}
