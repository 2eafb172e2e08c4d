/**
 * `--budget weight-bytes=16KB,macs=2M,arena=32KB`: search the pipeline's parameters (prune ratio, SVD energy, BFP
 * mantissa bits, fixed-point bits, fc-corr threshold, mask-select ratio) for the setting that fits every limit with
 * the least loss: top-1 accuracy on the evaluation data when given, else the output SQNR against the original model
 * on the calibration data. The grid is fixed and walked in order, so the same inputs give the same choice.
 * @module
 */
import { costOf } from "../ir/cost.ts";
import type { Module } from "../ir/module.ts";
import type { OpRegistry } from "../ir/op_def.ts";
import { cloneModule } from "../ir/rewriter.ts";
import type { Tensor } from "../ir/tensor.ts";
import { sqnr } from "../passes/analysis/bfp_error.ts";
import { runPipeline } from "../passes/manager.ts";
import type { PassLookup } from "../passes/pass.ts";
import { type PipelineStep, printPipeline } from "../passes/pipeline.ts";
import { Interpreter } from "../ir/interpreter.ts";
import { evaluate } from "./evaluate.ts";
import { concatBatches, dbFigure, firstSamples, modelBatches } from "./verify.ts";

/** Limits of a budget; each one given must hold. */
export interface BudgetLimits {
  /** Weight bytes after the pipeline (the cost model's `weightBytes`). */
  readonly weightBytes?: number;
  /** MACs of a batch-1 run. */
  readonly macs?: number;
  /** Activation memory: the C target's arena, for other targets the peak bytes of live activations. */
  readonly arenaBytes?: number;
}

/** One explored setting: a point of the frontier (`weightBytes` against `loss`). */
export interface BudgetPoint {
  /** The canonical pipeline of this setting. */
  readonly pipeline: string;
  /** The searched parameters, `pass.option` to value (`{ "prune.ratio": 0.5, "bfp.mantissa": 8 }`). */
  readonly settings: Readonly<Record<string, number>>;
  /** Weight bytes after the pipeline. */
  readonly weightBytes: number;
  /** MACs after the pipeline (null when symbolic dimensions leave them unknown). */
  readonly macs: number | null;
  /** Activation bytes (see {@linkcode BudgetLimits.arenaBytes}). */
  readonly arenaBytes: number;
  /** True when every limit holds. */
  readonly fits: boolean;
  /** Top-1 accuracy (a fraction) when the objective is accuracy and the point was evaluated, else null. */
  readonly accuracy: number | null;
  /** Output SQNR in dB against the original model when the objective is SQNR and the point was evaluated. */
  readonly sqnrDb: number | "inf" | null;
  /** True for the pipeline as written (before the search). */
  readonly handWritten: boolean;
}

/**
 * The `budget` entry of the report. For a chart: `points` as (x = `weightBytes`, y = `accuracy` or `sqnrDb` per
 * `objective`), `fits` and evaluated (y not null) marking them, `chosen` and `handWritten` indices into `points`.
 */
export interface BudgetReport {
  /** The limits searched for. */
  readonly limits: BudgetLimits;
  /** What the loss is measured by. */
  readonly objective: "accuracy" | "sqnr";
  /** Samples the objective ran on. */
  readonly samples: number;
  /** Every setting explored, in grid order. */
  readonly points: readonly BudgetPoint[];
  /** Index of the chosen point in `points`. */
  readonly chosen: number;
  /** Index of the pipeline as written, or -1 when the search changed its structure. */
  readonly handWritten: number;
  /** The chosen pipeline in canonical form: rerun it with `--passes` to skip the search. */
  readonly pipeline: string;
}

/** The values searched per pass option, in order (the pipeline's own value is added). */
export const BUDGET_GRID: Readonly<Record<string, { readonly option: string; readonly values: readonly number[] }>> = {
  prune: { option: "ratio", values: [0.3, 0.4, 0.5, 0.6, 0.7] },
  svd: { option: "energy", values: [0.8, 0.9, 0.95] },
  bfp: { option: "mantissa", values: [4, 6, 8] },
  fixed: { option: "bits", values: [6, 8, 12] },
  "fc-corr": { option: "threshold", values: [0.05, 0.1, 0.2] },
  "mask-select": { option: "ratio", values: [0.3, 0.5, 0.7] },
};

/** Options that replace the searched one when the pipeline gives them (`prune{threshold=...}` is not searched). */
const OVERRIDING: Readonly<Record<string, readonly string[]>> = {
  prune: ["threshold"],
  svd: ["rank", "speedup", "budget"],
  "fc-corr": ["ratio"],
};

/** A budget that cannot be parsed or met; one line. */
export class BudgetError extends Error {
  /** `"BudgetError"`. */
  override readonly name = "BudgetError";
}

const LIMIT_KEYS: Readonly<Record<string, keyof BudgetLimits>> = {
  "weight-bytes": "weightBytes",
  macs: "macs",
  arena: "arenaBytes",
};

const SUFFIXES: Readonly<Record<string, number>> = {
  "": 1,
  K: 1e3,
  KB: 1e3,
  KI: 1024,
  KIB: 1024,
  M: 1e6,
  MB: 1e6,
  MI: 2 ** 20,
  MIB: 2 ** 20,
  G: 1e9,
  GB: 1e9,
};

/**
 * Parse `weight-bytes=64KB,macs=2M,arena=32KB` (one limit or several). Suffixes: `K`/`KB` = 1000, `Ki`/`KiB` = 1024,
 * `M`/`MB` = 10^6, `Mi`/`MiB` = 2^20, `G`/`GB` = 10^9 (case-insensitive).
 *
 * @throws {BudgetError} One line naming the part that is not `NAME=AMOUNT`, an unknown name or a repeated one.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseBudget } from "./budget.ts";
 * assert.deepEqual(parseBudget("weight-bytes=16KB, macs=2M"), { weightBytes: 16000, macs: 2000000 });
 * assert.deepEqual(parseBudget("arena=32KiB"), { arenaBytes: 32768 });
 * assert.throws(() => parseBudget("flash=1K"), /unknown limit "flash"/);
 * ```
 */
export function parseBudget(text: string): BudgetLimits {
  const limits: Record<string, number> = {};
  const parts = text.split(",").map((p) => p.trim());
  if (parts.every((p) => p === "")) throw new BudgetError("budget: expected NAME=AMOUNT, e.g. weight-bytes=64KB");
  for (const part of parts) {
    const m = /^([a-z-]+)\s*=\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)$/.exec(part);
    if (m === null) {
      throw new BudgetError(`budget: ${JSON.stringify(part)} is not NAME=AMOUNT (e.g. weight-bytes=64KB, macs=2M)`);
    }
    const key = LIMIT_KEYS[m[1]];
    if (key === undefined) {
      throw new BudgetError(
        `budget: unknown limit ${JSON.stringify(m[1])} (expected ${Object.keys(LIMIT_KEYS).join(", ")})`,
      );
    }
    const scale = SUFFIXES[m[3].toUpperCase()];
    if (scale === undefined) {
      throw new BudgetError(
        `budget: unknown unit ${JSON.stringify(m[3])} in ${JSON.stringify(part)} (K, Ki, M, Mi, G)`,
      );
    }
    if (key in limits) throw new BudgetError(`budget: ${m[1]} is given twice`);
    limits[key] = Math.floor(Number(m[2]) * scale);
  }
  return limits;
}

/** Options of {@linkcode searchBudget}. */
export interface BudgetSearchOptions {
  /** The limits. */
  readonly limits: BudgetLimits;
  /** Passes and op definitions. */
  readonly registry: PassLookup;
  /**
   * The activation memory the target needs for a module (the C target's arena), or null where it states none; the
   * cost model's peak bytes of live activations are used then. Default: always null.
   */
  readonly arenaBytes?: (module: Module) => Promise<number | null>;
  /** Calibration inputs by graph input name (the SQNR objective, and passes that need data). */
  readonly calibration: Readonly<Record<string, Tensor>> | null;
  /** Labelled data: the objective becomes top-1 accuracy. */
  readonly evaluation?: { readonly inputs: Tensor; readonly labels: Tensor };
  /** Fitting settings whose loss is measured, largest first by weight bytes (default 8; the pipeline as written is
   * measured too when it fits). */
  readonly evaluations?: number;
  /** Values to search per pass (default {@linkcode BUDGET_GRID}). */
  readonly grid?: typeof BUDGET_GRID;
}

/** Calibration samples of the SQNR objective. */
const SQNR_SAMPLES = 64;

/** A leaf of the search: its steps, searched values and costs (its module is not kept: the grid may be large). */
interface Candidate {
  steps: PipelineStep[];
  settings: Record<string, number>;
  pipeline: string;
  weightBytes: number;
  macs: number | null;
  arenaBytes: number;
  fits: boolean;
}

/**
 * Search the settings of `steps` for `limits` (module header) and return the frontier with the choice. `module` (an
 * imported, shape-inferred model) is not changed. Every grid point is costed; the `evaluations` fitting points with
 * the most weight bytes (the least compressed, which tend to lose least), and the pipeline as written, get their loss
 * measured; the chosen one has the least loss (ties: fewer weight bytes, then grid order).
 *
 * @throws {BudgetError} When no point fits (naming the smallest found), the pipeline has no searchable pass, or the
 *   objective has no data.
 */
export async function searchBudget(
  module: Module,
  steps: readonly PipelineStep[],
  options: BudgetSearchOptions,
): Promise<BudgetReport> {
  const grid = options.grid ?? BUDGET_GRID;
  const ops = options.registry.ops;
  const searched = steps.filter((s) => grid[s.pass.name] !== undefined && !overridden(s));
  if (searched.length === 0) {
    throw new BudgetError(
      `budget: the pipeline ${JSON.stringify(printPipeline(steps))} has no searchable pass ` +
        `(${Object.keys(grid).join(", ")}); give one with --passes`,
    );
  }
  const objective = options.evaluation !== undefined ? "accuracy" : "sqnr";
  if (objective === "sqnr" && options.calibration === null) {
    throw new BudgetError("budget: needs evaluation data (--eval) or calibration data (--calib) to measure the loss");
  }

  const l = options.limits;
  const cost = async (m: Module, done: PipelineStep[], settings: Record<string, number>): Promise<Candidate> => {
    const totals = costOf(m, { registry: ops }).totals;
    const arenaBytes = (await options.arenaBytes?.(m)) ?? totals.peakActivationBytes;
    const fits = (l.weightBytes === undefined || totals.weightBytes <= l.weightBytes) &&
      (l.macs === undefined || (totals.macs !== null && totals.macs <= l.macs)) &&
      (l.arenaBytes === undefined || arenaBytes <= l.arenaBytes);
    return {
      steps: done,
      settings,
      pipeline: printPipeline(done),
      weightBytes: totals.weightBytes,
      macs: totals.macs,
      arenaBytes,
      fits,
    };
  };
  // Every setting runs with the calibration data, as the chosen pipeline will: with data, prune, svd and mask-select
  // refit, bfp/fixed correct biases and choose blocks, so a point measured without it would not be the one printed.
  const run = async (m: Module, step: PipelineStep): Promise<void> => {
    await runPipeline(m, [step], { registry: options.registry, calibration: options.calibration });
  };

  // Depth first over the steps, each level's module cloned from its parent's, so a shared prefix runs once.
  const measured: Candidate[] = [];
  const expand = async (at: number, base: Module, done: PipelineStep[], settings: Record<string, number>) => {
    if (at === steps.length) {
      measured.push(await cost(base, done, settings));
      return;
    }
    for (const step of variants(steps[at], grid)) {
      const module = cloneModule(base);
      await run(module, step);
      const g = grid[step.pass.name];
      const next = g === undefined || overridden(step)
        ? settings
        : { ...settings, [`${step.pass.name}.${g.option}`]: step.options[g.option] as number };
      await expand(at + 1, module, [...done, step], next);
    }
  };
  await expand(0, module, [], {});

  const handText = printPipeline(steps);
  const fitting = measured.map((m, i) => ({ m, i })).filter(({ m }) => m.fits);
  if (fitting.length === 0) {
    const smallest = [...measured].sort((a, b) => a.weightBytes - b.weightBytes)[0];
    throw new BudgetError(
      `budget: no setting of ${measured.length} explored fits ${limitText(options.limits)}; the smallest has ` +
        `${smallest.weightBytes} weight bytes, ${smallest.macs ?? "?"} MACs, ${smallest.arenaBytes} activation bytes ` +
        `(${smallest.pipeline})`,
    );
  }
  const toMeasure = new Set(
    [...fitting].sort((a, b) => b.m.weightBytes - a.m.weightBytes || a.i - b.i).slice(0, options.evaluations ?? 8)
      .map(({ i }) => i),
  );
  const hand = measured.findIndex((m) => m.pipeline === handText);
  if (hand >= 0 && measured[hand].fits) toMeasure.add(hand);

  const loss = lossFunction(module, options, objective);
  const points: BudgetPoint[] = [];
  for (const [i, m] of measured.entries()) {
    let value: number | null = null;
    if (toMeasure.has(i)) {
      const compressed = cloneModule(module);
      for (const step of m.steps) await run(compressed, step);
      value = loss.of(compressed);
    }
    points.push({
      pipeline: m.pipeline,
      settings: m.settings,
      weightBytes: m.weightBytes,
      macs: m.macs,
      arenaBytes: m.arenaBytes,
      fits: m.fits,
      accuracy: objective === "accuracy" ? value : null,
      sqnrDb: objective === "sqnr" && value !== null ? dbFigure(value) : null,
      handWritten: i === hand,
    });
  }
  const score = (p: BudgetPoint): number =>
    objective === "accuracy" ? p.accuracy! : p.sqnrDb === "inf" ? Infinity : p.sqnrDb as number;
  let chosen = -1;
  points.forEach((p, i) => {
    if (!p.fits || (p.accuracy === null && p.sqnrDb === null)) return;
    if (chosen < 0) chosen = i;
    else {
      const best = points[chosen];
      if (score(p) > score(best) || (score(p) === score(best) && p.weightBytes < best.weightBytes)) chosen = i;
    }
  });
  return {
    limits: options.limits,
    objective,
    samples: loss.samples,
    points,
    chosen,
    handWritten: hand,
    pipeline: points[chosen].pipeline,
  };
}

function overridden(step: PipelineStep): boolean {
  return (OVERRIDING[step.pass.name] ?? []).some((o) => step.options[o] !== undefined);
}

/** The step with each searched value (the step's own first, then the grid's others in order). */
function variants(step: PipelineStep, grid: typeof BUDGET_GRID): PipelineStep[] {
  const g = grid[step.pass.name];
  if (g === undefined || overridden(step)) return [step];
  const own = step.options[g.option] as number;
  const values = [...g.values, own].filter((v, i, all) => all.indexOf(v) === i).sort((a, b) => a - b);
  return values.map((v) => (v === own ? step : { pass: step.pass, options: { ...step.options, [g.option]: v } }));
}

function limitText(l: BudgetLimits): string {
  const parts = [
    l.weightBytes === undefined ? null : `weight-bytes<=${l.weightBytes}`,
    l.macs === undefined ? null : `macs<=${l.macs}`,
    l.arenaBytes === undefined ? null : `arena<=${l.arenaBytes}`,
  ];
  return parts.filter((p) => p !== null).join(", ");
}

/** Accuracy on the evaluation data, or output SQNR (dB) against `original` on the first calibration samples. */
function lossFunction(
  original: Module,
  options: BudgetSearchOptions,
  objective: "accuracy" | "sqnr",
): { of(module: Module): number; samples: number } {
  const ops: OpRegistry = options.registry.ops;
  if (objective === "accuracy") {
    const { inputs, labels } = options.evaluation!;
    return { of: (m) => evaluate(m, inputs, labels, { registry: ops }).accuracy, samples: inputs.shape[0] };
  }
  const feeds = firstSamples(options.calibration!, SQNR_SAMPLES);
  const outputs = (m: Module): number[] => {
    const interpreter = new Interpreter(m, { registry: ops });
    const values = concatBatches(modelBatches(m, feeds).map((f) => interpreter.run(f)));
    return m.graph.outputs.flatMap((v) => [...(values[v.name].data as Float32Array)]);
  };
  const reference = outputs(original);
  return {
    of: (m) => sqnr(reference, outputs(m)),
    samples: Math.min(...Object.values(feeds).map((t) => t.shape[0])),
  };
}
