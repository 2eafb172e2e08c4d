/**
 * The compilation report: plain JSON recording what went in, the canonical
 * pipeline, each pass's time and statistics, cost totals and a per-layer table
 * before and after, and a digest of each artifact. Everything but the timings
 * is deterministic; the CLI's `--report` writes this same object.
 * @module
 */
import { createHash } from "node:crypto";
import type { CostReport, CostTotals, LayerCost, SparseCost } from "../ir/cost.ts";
import type { Diagnostic, Severity, StatValue } from "../passes/pass.ts";
import type { EvaluationResult } from "./evaluate.ts";
import type { BudgetReport } from "./budget.ts";
import type { PassSqnr, VerifyReport } from "./verify.ts";

/** Version of the report layout; bumped when a field changes meaning or disappears (2: per-layer MACs may be null, unknown). */
export const REPORT_VERSION = 2;

/** The input model. */
export interface ModelInfo {
  /** Base name the artifacts are named after (`vgg_sparse`). */
  readonly name: string;
  /** ONNX `producer_name` and `producer_version` (`pytorch 2.3.0`), empty when unknown. */
  readonly producer: string;
  /** Opset version per domain as imported (`ai.onnx` for the default domain). */
  readonly opsets: Readonly<Record<string, number>>;
}

/** One pass of the pipeline as it ran. */
export interface PassReport {
  /** Pass name (`fold-bn`). */
  readonly name: string;
  /** Canonical text of this step, every option spelled out (`prune{ratio=0.6,min-channels=4}`). */
  readonly pipeline: string;
  /** Wall time of the pass in milliseconds (verification excluded). */
  readonly ms: number;
  /** Whether the pass reported a change. */
  readonly changed: boolean;
  /** Statistics the pass recorded (`bn-folded: 13`). */
  readonly stats: Readonly<Record<string, StatValue>>;
  /** Warnings and notes the pass reported (errors fail the compilation instead). */
  readonly diagnostics: readonly Diagnostic[];
  /** Analyses the pass computed and their wall times, in order (cache hits are not listed). */
  readonly analyses: readonly { readonly name: string; readonly ms: number }[];
}

/** A warning or note from the target. */
export interface TargetDiagnostic {
  /** `warning` or `note` (an error fails the compilation instead). */
  readonly severity: Severity;
  /** One line. */
  readonly message: string;
}

/** The target that emitted the artifacts. */
export interface TargetInfo {
  /** Target name (`onnx`). */
  readonly name: string;
  /** Every option of the target, resolved, by kebab-case key. */
  readonly options: Readonly<Record<string, unknown>>;
  /** Warnings and notes the target reported. */
  readonly diagnostics: readonly TargetDiagnostic[];
  /** Structured results the target recorded (`TargetContext.stat`), present only when it recorded any. */
  readonly stats?: Readonly<Record<string, StatValue>>;
}

/** Cost of one layer on one side of the compilation. */
export interface LayerSide {
  /** Weight elements the op reads. */
  readonly params: number;
  /** Multiply-accumulates of a batch-1 run; null when they depend on a dimension that is not known. */
  readonly macs: number | null;
  /** Storage bytes of the op's weights. */
  readonly weightBytes: number;
  /** Non-zeros and CSR bytes of the op's weight matrices, present when they hold zeros. */
  readonly sparse?: SparseCost;
}

/**
 * A row of the per-layer table: one op (by name) with its cost before and
 * after the pipeline; `null` on the side where the layer does not exist
 * (removed by a pass, or created by one).
 */
export interface LayerRow {
  /** Op name. */
  readonly name: string;
  /** Op type after compilation (before, for a removed layer). */
  readonly type: string;
  /** Cost before the pipeline, or null for a layer a pass created. */
  readonly before: LayerSide | null;
  /** Cost after the pipeline, or null for a layer a pass removed. */
  readonly after: LayerSide | null;
}

/** One emitted artifact. */
export interface ArtifactInfo {
  /** File name (relative, `/`-separated). */
  readonly name: string;
  /** Size in bytes. */
  readonly bytes: number;
  /** SHA-256 of the contents, lower-case hex. */
  readonly sha256: string;
}

/** Wall times of the stages of a compilation, in milliseconds. */
export interface StageTimings {
  /** Decoding the model, shape inference and verification. */
  readonly importMs: number;
  /** The whole pipeline, verification between passes included. */
  readonly passesMs: number;
  /** The target's emit. */
  readonly emitMs: number;
  /** The whole compilation up to the report (cost model and evaluation included, artifact digests not). */
  readonly totalMs: number;
}

/** Top-1 accuracy before and after a compilation. */
export interface AccuracyReport {
  /** Fraction of samples classified correctly before the pipeline. */
  readonly before: number;
  /** Fraction of samples classified correctly after the pipeline. */
  readonly after: number;
  /** Number of labelled samples. */
  readonly samples: number;
}

/** The report of one compilation (plain JSON). */
export interface CompileReport {
  /** {@linkcode REPORT_VERSION}. */
  readonly version: number;
  /** The input model. */
  readonly model: ModelInfo;
  /** Canonical pipeline text: passes with every option, so the run can be reproduced. */
  readonly pipeline: string;
  /** The target and its resolved options. */
  readonly target: TargetInfo;
  /** One entry per pass, in pipeline order. */
  readonly passes: readonly PassReport[];
  /** Cost totals before and after the pipeline. */
  readonly totals: { readonly before: CostTotals; readonly after: CostTotals };
  /** Per-layer parameters, MACs and weight bytes, before and after, in graph order. */
  readonly layers: readonly LayerRow[];
  /** What the target emitted, in its order. */
  readonly artifacts: readonly ArtifactInfo[];
  /** Wall times of the stages (with `passes[].ms` and `passes[].analyses`, the only non-deterministic fields). */
  readonly timings: StageTimings;
  /**
   * Top-1 accuracy (fractions in [0, 1]) through the reference interpreter, before and after the
   * pipeline, on `samples` labelled inputs; present when the compilation was given a labelled data set.
   */
  readonly accuracy?: AccuracyReport;
  /** With `sqnrEach` (or `verify` and calibration data): the output SQNR against the original model after each pass. */
  readonly passSqnr?: readonly PassSqnr[];
  /** With `verify`: every artifact run in its runtime against the interpreter. */
  readonly verify?: VerifyReport;
  /** With `budget`: the settings explored (the frontier of weight bytes against loss) and the one chosen. */
  readonly budget?: BudgetReport;
}

/** What {@linkcode buildReport} assembles. */
export interface ReportParts {
  /** The input model. */
  model: ModelInfo;
  /** Canonical pipeline text. */
  pipeline: string;
  /** Target name and resolved options. */
  target: TargetInfo;
  /** The pass records, in order. */
  passes: readonly PassReport[];
  /** Cost of the module before the pipeline. */
  before: CostReport;
  /** Cost of the module after the pipeline. */
  after: CostReport;
  /** The artifacts, in the target's order. */
  artifacts: ReadonlyMap<string, Uint8Array>;
  /** Stage timings. */
  timings: StageTimings;
  /** Accuracy before and after, when measured. */
  accuracy?: { before: EvaluationResult; after: EvaluationResult };
}

/**
 * Assemble a report: copies the pass records into plain objects, merges the
 * per-layer costs and digests the artifacts.
 *
 * @example A report of an empty compilation
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildReport } from "./report.ts";
 * const totals = {
 *   params: 0, macs: 0, unknownMacLayers: 0, symbolicDims: [], weightBytes: 0, sparseWeightBytes: 0, peakActivationBytes: 0,
 * };
 * const none = { totals, layers: [] };
 * const report = buildReport({
 *   model: { name: "m", producer: "", opsets: { "ai.onnx": 13 } },
 *   pipeline: "",
 *   target: { name: "onnx", options: {}, diagnostics: [] },
 *   passes: [],
 *   before: none,
 *   after: none,
 *   artifacts: new Map([["m.onnx", new Uint8Array()]]),
 *   timings: { importMs: 0, passesMs: 0, emitMs: 0, totalMs: 0 },
 * });
 * assert.equal(report.artifacts[0].sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
 * ```
 */
export function buildReport(parts: ReportParts): CompileReport {
  const artifacts: ArtifactInfo[] = [];
  for (const [name, bytes] of parts.artifacts) {
    artifacts.push({ name, bytes: bytes.byteLength, sha256: sha256Hex(bytes) });
  }
  const report: CompileReport = {
    version: REPORT_VERSION,
    model: { name: parts.model.name, producer: parts.model.producer, opsets: { ...parts.model.opsets } },
    pipeline: parts.pipeline,
    target: {
      name: parts.target.name,
      options: { ...parts.target.options },
      diagnostics: parts.target.diagnostics.map((d) => ({ ...d })),
      ...(parts.target.stats === undefined || Object.keys(parts.target.stats).length === 0
        ? {}
        : { stats: { ...parts.target.stats } }),
    },
    passes: parts.passes.map((p) => ({
      name: p.name,
      pipeline: p.pipeline,
      ms: p.ms,
      changed: p.changed,
      stats: { ...p.stats },
      diagnostics: p.diagnostics.map((d) => ({ ...d })),
      analyses: p.analyses.map((a) => ({ name: a.name, ms: a.ms })),
    })),
    totals: { before: { ...parts.before.totals }, after: { ...parts.after.totals } },
    layers: mergeLayers(parts.before.layers, parts.after.layers),
    artifacts,
    timings: { ...parts.timings },
  };
  if (parts.accuracy === undefined) return report;
  const { before, after } = parts.accuracy;
  return { ...report, accuracy: { before: before.accuracy, after: after.accuracy, samples: before.total } };
}

/**
 * Join per-layer costs by op name into one table in graph order: layers that
 * exist on both sides get both, a removed layer keeps its place with
 * `after: null`, and a created layer (`before: null`) comes right before the
 * next layer that exists on both sides, so it follows the layer it replaced.
 *
 * @example A layer folded away and one replaced
 * ```ts
 * import assert from "node:assert/strict";
 * import { mergeLayers } from "./report.ts";
 * const conv = { name: "conv", type: "Conv", params: 10, macs: 100, weightBytes: 40 };
 * const fc = { name: "fc", type: "Gemm", params: 6, macs: 6, weightBytes: 24 };
 * const fcU = { name: "fc.u", type: "MatMul", params: 2, macs: 2, weightBytes: 8 };
 * const rows = mergeLayers([conv, fc], [conv, fcU]);
 * assert.deepEqual(rows.map((r) => [r.name, r.before !== null, r.after !== null]), [
 *   ["conv", true, true],
 *   ["fc", true, false],
 *   ["fc.u", false, true],
 * ]);
 * ```
 */
export function mergeLayers(before: readonly LayerCost[], after: readonly LayerCost[]): LayerRow[] {
  const side = (l: LayerCost): LayerSide => ({
    params: l.params,
    macs: l.macs,
    weightBytes: l.weightBytes,
    ...(l.sparse === undefined ? {} : { sparse: { ...l.sparse } }),
  });
  const beforeIndex = new Map<string, number>();
  before.forEach((l, i) => {
    if (!beforeIndex.has(l.name)) beforeIndex.set(l.name, i);
  });
  const matched = new Map<number, LayerCost>();
  // Layers created by passes, keyed by the before-index of the next matched layer (before.length: the end), so a
  // replacement (`fc` -> `fc.u`, `fc.v`) lands right after the layer it replaced.
  const created = new Map<number, LayerCost[]>();
  let pending: LayerCost[] = [];
  for (const l of after) {
    const i = beforeIndex.get(l.name);
    if (i !== undefined && !matched.has(i)) {
      matched.set(i, l);
      if (pending.length > 0) created.set(i, [...(created.get(i) ?? []), ...pending]);
      pending = [];
    } else {
      pending.push(l);
    }
  }
  if (pending.length > 0) created.set(before.length, pending);
  const rows: LayerRow[] = [];
  const pushCreated = (i: number): void => {
    for (const l of created.get(i) ?? []) rows.push({ name: l.name, type: l.type, before: null, after: side(l) });
  };
  before.forEach((l, i) => {
    pushCreated(i);
    const a = matched.get(i);
    rows.push({ name: l.name, type: a?.type ?? l.type, before: side(l), after: a === undefined ? null : side(a) });
  });
  pushCreated(before.length);
  return rows;
}

/**
 * SHA-256 of `bytes` in hex, hashed in 16 MiB views: `crypto.subtle.digest` copies its input first, which for a
 * large model or artifact is the compilation's memory peak.
 */
export function sha256Hex(bytes: Uint8Array): string {
  const hash = createHash("sha256");
  const chunk = 16 << 20;
  for (let offset = 0; offset < bytes.byteLength; offset += chunk) hash.update(bytes.subarray(offset, offset + chunk));
  return hash.digest("hex");
}
