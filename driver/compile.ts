/**
 * The library entry point for build scripts: `compile(bytes, { passes, target })`
 * imports an ONNX model, runs a pass pipeline, emits the target's artifacts and
 * reports what changed. Bytes in, bytes and a JSON report out: no file is read
 * or written (unless `importOptions` points at external data).
 * @module
 */
import { costOf } from "../ir/cost.ts";
import type { Module } from "../ir/module.ts";
import type { Value } from "../ir/graph.ts";
import { importOnnx, type ImportOptions } from "../ir/onnx/import.ts";
import type { OnnxFile } from "../ir/onnx/model_file.ts";
import { inferShapes } from "../ir/shape.ts";
import type { Tensor } from "../ir/tensor.ts";
import { elementTypeToString, isTensorType, tensorType, typeToString } from "../ir/types.ts";
import { verifyModule } from "../ir/verifier.ts";
import { builtinPasses } from "../passes/builtin.ts";
import { runPipeline, type RunPipelineOptions } from "../passes/manager.ts";
import { kebabCase, type OptionSchema, type OptionValues } from "../passes/options.ts";
import type { Severity, StatValue } from "../passes/pass.ts";
import { parseElement, parsePipeline, printPipeline } from "../passes/pipeline.ts";
import { builtinTargets } from "../targets/builtin.ts";
import type { Artifacts, Target } from "../targets/target.ts";
import { evaluate, EvaluationError, type EvaluationResult, type ModelInput, samplesMismatch } from "./evaluate.ts";
import { oneLine, quote } from "../ir/quote.ts";
import { type Plugin, Registry } from "./registry.ts";
import { buildReport, type CompileReport, sha256Hex, type TargetDiagnostic } from "./report.ts";
import { type BudgetLimits, type BudgetReport, parseBudget, searchBudget } from "./budget.ts";
import { checkVerified, type PassSqnr, passSqnrTracker, verifyArtifacts } from "./verify.ts";
import { renderReportHtml } from "./report_html.ts";

/** A labelled data set to measure top-1 accuracy on, before and after the pipeline. */
export interface EvaluationData {
  /** Samples, first axis the batch (e.g. f32 `[N,1,28,28]`). */
  inputs: Tensor;
  /** Class indices, i64 or i32 `[N]`. */
  labels: Tensor;
  /** Samples per interpreter run (default: the evaluator's). */
  batchSize?: number;
}

/**
 * Options of {@linkcode compile}. The debugging options (`verifyEach`,
 * `printIrBefore`/`After`, `onIr`, `onLog`, `instrument`, ...) are the pass
 * manager's and are passed through; with `verifyEach: false` the IR is
 * verified once, at the end.
 */
export interface CompileOptions extends Omit<RunPipelineOptions, "registry" | "calibration"> {
  /** Pass pipeline, e.g. `fold-bn,canonicalize,dce` (default `""`: no passes). */
  passes?: string;
  /**
   * Target name, optionally with options in the pipeline's brace syntax
   * (`onnx{external-data=true,threshold=4096}`); default `onnx`.
   */
  target?: string;
  /** Base name of the artifacts (`<modelName>.onnx`); a plain file name, default `model`. */
  modelName?: string;
  /** Plugins added to a fresh {@linkcode defaultRegistry} (not together with `registry`). */
  plugins?: readonly Plugin[];
  /** Registry of passes, targets and ops to use instead of {@linkcode defaultRegistry}. */
  registry?: Registry;
  /** Calibration inputs for data-aware passes: by graph input name, or one tensor for the first graph input. */
  calibration?: Readonly<Record<string, Tensor>> | Tensor;
  /** Measure top-1 accuracy (reference interpreter) before and after the pipeline; recorded in `report.accuracy`. */
  evaluation?: EvaluationData;
  /** Progress of long work outside the passes (evaluation), one short line at a time; passes report through `onLog`. */
  onProgress?: (message: string) => void;
  /** How to import the model; `baseDir` lets the importer read external data files beside it. */
  importOptions?: ImportOptions;
  /**
   * Static shapes for graph inputs, by name (`{ x: [1, 3, 48, 192] }`): their symbolic dimensions (`N`, `H`, `W`)
   * take these values, in every input that uses the same symbol, before shape inference, so costs are counted and
   * targets see static shapes. The emitted model declares them. Dimensions that are numbers in the model must match.
   */
  inputShapes?: Readonly<Record<string, readonly number[]>>;
  /**
   * After emitting, run the artifacts in their runtimes (onnxruntime, host gcc, the FPGA image reader and iverilog)
   * on the evaluation inputs, else the calibration inputs, and compare them with the interpreter
   * (`driver/verify.ts`); the table goes into `report.verify`, and a mismatch beyond the target's tolerance throws a
   * `VerifyError` naming the artifact and the first differing output. Needs permission to run programs and load
   * onnxruntime.
   */
  verify?: boolean | { readonly samples?: number; readonly rtl?: boolean };
  /**
   * After every pass, the output SQNR against the original model on the calibration inputs (first 32 samples) goes
   * into `report.passSqnr` (default: on with `verify` when calibration data is given).
   */
  sqnrEach?: boolean;
  /**
   * Compress to fit: `weight-bytes=16KB,macs=2M,arena=32KB` (or the parsed limits). The settings of `passes` (prune
   * ratio, SVD energy, BFP mantissa, ...) are searched for the one that fits with the least loss (accuracy on
   * `evaluation` when given, else output SQNR on `calibration`; `driver/budget.ts`), and that pipeline runs;
   * `report.budget` holds the frontier explored and `report.pipeline` the choice.
   */
  budget?: string | BudgetLimits;
}

/**
 * Calibration or evaluation data that does not fit the model (wrong element type or shape, no samples, labels out
 * of range). The message is `calibration: ...` or `evaluation: ...`; a caller that read the data from a file can name
 * the file with {@linkcode DataError.option} and {@linkcode DataError.reason}.
 */
export class DataError extends Error {
  /** The option of {@linkcode CompileOptions} holding the data. */
  readonly option: "calibration" | "evaluation";
  /** What is wrong, without the option's name. */
  readonly reason: string;

  /** An error about `option`'s data. */
  constructor(option: "calibration" | "evaluation", reason: string) {
    super(`${option}: ${reason}`);
    this.name = "DataError";
    this.option = option;
    this.reason = reason;
  }
}

/** What {@linkcode compile} produces. */
export interface CompileResult {
  /** Artifacts by file name (relative, `/`-separated); writing them is the caller's job. */
  artifacts: Artifacts;
  /** The report (plain JSON). */
  report: CompileReport;
  /** The report as a self-contained HTML page (UTF-8, {@linkcode renderReportHtml}): what `--report x.html` writes. */
  reportHtml: Uint8Array;
  /** The compiled module, for inspection (`printModule`, `interpret`). */
  module: Module;
}

/**
 * A fresh registry holding the built-in passes and targets and a copy of the
 * built-in op definitions; adding plugins to it changes no other registry.
 *
 * @example List the built-in targets
 * ```ts
 * import assert from "node:assert/strict";
 * import { defaultRegistry } from "./compile.ts";
 * assert.ok(defaultRegistry().targets().some((t) => t.name === "onnx"));
 * ```
 */
export function defaultRegistry(): Registry {
  const registry = new Registry();
  for (const pass of builtinPasses) registry.addPass(pass);
  for (const target of builtinTargets) registry.addTarget(target);
  return registry;
}

/**
 * Compile an ONNX model: import it, infer shapes and verify it, run the pass
 * pipeline, emit the target's artifacts and report cost before and after.
 * Touches no file: bytes in, artifacts (bytes by file name) and a plain-JSON
 * report out, byte-identical from run to run. The pipeline and target are
 * checked before the model is decoded, so a typo fails fast.
 *
 * @param model The ONNX model's bytes, or a model file as `readOnnxFile` reads it (large weights in buffers of their
 *   own, so each is freed once a pass replaces it).
 * @param options Pipeline, target, plugins and debugging hooks.
 * @returns Artifacts, report and the compiled module.
 * @throws {PipelineError} For a bad pipeline or target: bad syntax, an unknown name
 *   (`Cannot parse target: unknown target "x" (did you mean "onnx"?)`) or a bad option
 *   (one-line message; `.caret` shows where).
 * @throws {DataError} For `calibration` or `evaluation` data that does not fit the model input (element
 *   type, shape, no samples) or labels outside `[0, classes)`: `calibration: input "x" must be f32, found f64`.
 * @throws {Error} One line, for a corrupt model (`Cannot import ONNX model: ...`), an invalid
 *   model (naming the op), a bad `modelName`, a failing pass (`pass "x" failed: ...`, a `PassError`), a
 *   failing target (`target "onnx" failed: ...`), or a target returning something other than a Map of
 *   relative `/`-separated file names (no `..`, absolute parts, backslashes or control characters) to bytes.
 *
 * @example Fold BatchNormalization and emit ONNX
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { Module } from "../ir/module.ts";
 * import { exportOnnx } from "../ir/onnx/export.ts";
 * import { compile } from "./compile.ts";
 * const g = new Graph("tiny");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 4] }));
 * const id = g.addOp(new Op({ name: "id", type: "Identity", operands: [x], results: [new Value("t")] }));
 * g.outputs.push(g.addOp(new Op({ name: "relu", type: "Relu", operands: [id.result], results: [new Value("y")] })).result);
 *
 * const { artifacts, report } = await compile(exportOnnx(new Module(g)), { passes: "canonicalize,dce", modelName: "tiny" });
 * assert.deepEqual([...artifacts.keys()], ["tiny.onnx"]);
 * assert.deepEqual(report.passes.map((p) => p.name), ["canonicalize", "dce"]);
 * assert.equal(report.totals.after.params, 0);
 * ```
 */
export async function compile(model: Uint8Array | OnnxFile, options: CompileOptions = {}): Promise<CompileResult> {
  try {
    return await compileModel(model, options);
  } catch (e) {
    // Whatever a pass, target or plugin wrote, the caller gets one bounded line (the error keeps its class).
    if (e instanceof Error) e.message = oneLine(e.message);
    throw e;
  }
}

async function compileModel(model: Uint8Array | OnnxFile, options: CompileOptions): Promise<CompileResult> {
  const started = performance.now();
  const registry = resolveRegistry(options);
  const modelName = options.modelName ?? "model";
  const nameProblem = typeof modelName === "string"
    ? pathProblem(modelName, false)
    : `it is ${describeValue(modelName)}`;
  if (nameProblem !== undefined) {
    const found = typeof modelName === "string" ? `${quote(modelName)} (${nameProblem})` : describeValue(modelName);
    throw new Error(`modelName must be a plain file name without folders or control characters, found ${found}`);
  }
  let steps = parsePipeline(options.passes ?? "", registry);
  const limits = typeof options.budget === "string" ? parseBudget(options.budget) : options.budget;
  const { item: target, options: targetOptions } = parseElement(options.target ?? "onnx", registry.targets(), "target");

  // Hashed first: with `importOptions.overwriteInput` the importer may move weights within `model`.
  const inputSha256 = model instanceof Uint8Array ? sha256Hex(model) : model.sha256;
  const module = model instanceof Uint8Array
    ? importOnnx(model, options.importOptions)
    : importOnnx(model.bytes, { ...options.importOptions, initializerData: model.initializerData });
  if (options.inputShapes !== undefined) setInputShapes(module, options.inputShapes);
  inferShapes(module, { registry: registry.ops });
  verifyModule(module, { registry: registry.ops });
  const imported = performance.now();
  const before = costOf(module, { registry: registry.ops });
  const opsetsBefore = opsetRecord(module);
  const calibration = resolveCalibration(module, options.calibration);
  const evaluateModule = (phase: "before" | "after"): EvaluationResult | undefined => {
    const data = options.evaluation;
    if (data === undefined) return undefined;
    if (!isTensor(data.inputs) || !isTensor(data.labels)) {
      throw new DataError("evaluation", "expected { inputs, labels } tensors");
    }
    try {
      const onProgress = options.onProgress === undefined
        ? undefined
        : (done: number, total: number) => options.onProgress!(`accuracy ${phase}: ${done} of ${total} samples`);
      return evaluate(module, data.inputs, data.labels, {
        registry: registry.ops,
        batchSize: data.batchSize,
        onProgress,
      });
    } catch (e) {
      throw e instanceof EvaluationError ? new DataError("evaluation", e.reason) : e;
    }
  };
  const accuracyBefore = evaluateModule("before");
  let budget: BudgetReport | null = null;
  if (limits !== undefined) {
    budget = await searchBudget(module, steps, {
      limits,
      registry,
      calibration,
      evaluation: options.evaluation,
      // The arena is what the target states for the compressed module (the C target's `memory.arenaBytes`).
      arenaBytes: async (compressed) => {
        if (limits.arenaBytes === undefined) return null;
        try {
          const noVectors = "vectors" in targetOptions ? { ...targetOptions, vectors: 0 } : targetOptions;
          const { stats } = await emitArtifacts(target, noVectors, compressed, modelName, {
            pipeline: "",
            inputSha256: "",
          });
          const arena = (stats.memory as { arenaBytes?: unknown } | undefined)?.arenaBytes;
          return typeof arena === "number" ? arena : null;
        } catch {
          return null; // A setting the target cannot take is costed by the cost model.
        }
      },
    });
    steps = parsePipeline(budget.pipeline, registry);
  }

  const verify = options.verify === undefined || options.verify === false
    ? null
    : options.verify === true
    ? {}
    : options.verify;
  const sqnrTracker = (options.sqnrEach ?? (verify !== null && calibration !== null)) && steps.length > 0
    ? passSqnrTracker(module, calibration, registry.ops)
    : null;

  const passesStart = performance.now();
  const records = await runPipeline(module, steps, {
    registry,
    calibration,
    verifyEach: options.verifyEach,
    printIrBefore: options.printIrBefore,
    printIrAfter: options.printIrAfter,
    printIrAfterChange: options.printIrAfterChange,
    printIrAfterFailure: options.printIrAfterFailure,
    onIr: options.onIr,
    onLog: options.onLog,
    instrument: sqnrTracker === null ? options.instrument : {
      ...options.instrument,
      afterPass(record, module) {
        sqnrTracker.afterPass(record, module);
        options.instrument?.afterPass?.(record, module);
      },
    },
  });
  if (steps.length > 0) {
    // Costs need the result types; with verifyEach on, runPipeline has just done both.
    inferShapes(module, { registry: registry.ops });
    if (options.verifyEach === false) verifyAfterPipeline(module, registry);
  }
  const passesMs = performance.now() - passesStart;
  const after = costOf(module, { registry: registry.ops });
  const accuracyAfter = evaluateModule("after");

  const emitStart = performance.now();
  const pipeline = printPipeline(steps);
  const provenance = { pipeline, inputSha256 };
  const { artifacts, diagnostics, stats } = await emitArtifacts(target, targetOptions, module, modelName, {
    ...provenance,
    ...(calibration === null ? {} : { calibration }),
  });
  const emitMs = performance.now() - emitStart;

  const report = buildReport({
    model: {
      name: modelName,
      producer: `${module.producerName} ${module.producerVersion}`.trim(),
      opsets: opsetsBefore,
    },
    pipeline,
    target: {
      name: target.name,
      options: Object.fromEntries(
        Object.entries(targetOptions).filter(([, v]) => v !== undefined).map(([k, v]) => [kebabCase(k), v]),
      ),
      diagnostics,
      stats,
    },
    passes: records,
    before,
    after,
    artifacts,
    timings: { importMs: imported - started, passesMs, emitMs, totalMs: performance.now() - started },
    accuracy: accuracyBefore === undefined || accuracyAfter === undefined
      ? undefined
      : { before: accuracyBefore, after: accuracyAfter },
  });
  const verified = verify === null ? null : checkVerified(
    await verifyArtifacts(module, artifacts, {
      target: target.name,
      targetOptions: report.target.options,
      modelName,
      ...verifyInputs(module, options.evaluation, calibration),
      samples: verify.samples,
      rtl: verify.rtl,
      registry: registry.ops,
      // An FPGA image emitted without vectors is simulated with one sample's, emitted again for the check only.
      withVectors: target.name === "fpga" && calibration !== null
        ? async () =>
          (await emitArtifacts(target, { ...targetOptions, vectors: 1 }, module, modelName, {
            ...provenance,
            calibration,
          })).artifacts
        : undefined,
    }),
  );
  const full: CompileReport = {
    ...report,
    ...(sqnrTracker === null ? {} : { passSqnr: sqnrTracker.records as PassSqnr[] }),
    ...(verified === null ? {} : { verify: verified }),
    ...(budget === null ? {} : { budget }),
  };
  return { artifacts, report: full, reportHtml: new TextEncoder().encode(renderReportHtml(full)), module };
}

/** The inputs `verify` runs: the evaluation set's (fed to the first graph input), else the calibration set. */
function verifyInputs(
  module: Module,
  evaluation: EvaluationData | undefined,
  calibration: Readonly<Record<string, Tensor>> | null,
): { inputs: Readonly<Record<string, Tensor>>; inputsFrom: string } {
  const feed = module.graph.inputs.find((v) => v.constant === null);
  if (evaluation !== undefined && feed !== undefined) {
    return { inputs: { [feed.name]: evaluation.inputs }, inputsFrom: "evaluation" };
  }
  if (calibration !== null) return { inputs: calibration, inputsFrom: "calibration" };
  throw new Error("verify needs inputs to run the artifacts on: give calibration or evaluation data (--calib, --eval)");
}

function resolveRegistry(options: CompileOptions): Registry {
  if (options.registry !== undefined) {
    if (options.plugins !== undefined && options.plugins.length > 0) {
      throw new TypeError("compile(): give plugins or registry, not both (add the plugins with registry.addPlugin)");
    }
    return options.registry;
  }
  const registry = defaultRegistry();
  for (const plugin of options.plugins ?? []) registry.addPlugin(plugin);
  return registry;
}

/** Opset per domain, the default domain spelled `ai.onnx`, sorted by domain. */
function opsetRecord(module: Module): Record<string, number> {
  const entries = [...module.opsets].map(([d, v]): [string, number] => [d === "" ? "ai.onnx" : d, v]);
  return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * Calibration tensors by graph input name, each checked against its input: the element type, at least one sample
 * along the first axis and every static dimension after it ({@linkcode samplesMismatch}).
 */
function resolveCalibration(
  module: Module,
  calibration: CompileOptions["calibration"],
): Readonly<Record<string, Tensor>> | null {
  if (calibration === undefined) return null;
  const feeds = module.graph.inputs.filter((v) => v.constant === null);
  if (typeof calibration !== "object" || calibration === null) {
    throw new DataError("calibration", `expected a tensor or tensors by input name, found ${calibration}`);
  }
  let byName: Readonly<Record<string, unknown>>;
  if (isTensor(calibration)) {
    if (feeds.length === 0) throw new DataError("calibration", "the model has no graph input to feed");
    byName = { [feeds[0].name]: calibration };
  } else {
    byName = calibration;
  }
  for (const [name, samples] of Object.entries(byName)) {
    const input = feeds.find((v) => v.name === name);
    if (input === undefined) {
      const inputs = feeds.map((v) => quote(v.name)).join(", ") || "(none)";
      throw new DataError("calibration", `${quote(name)} is not a graph input; inputs are: ${inputs}`);
    }
    if (!isTensor(samples)) throw new DataError("calibration", `input ${quote(name)}: expected a tensor`);
    const problem = samples.shape.length === 0
      ? `input ${quote(name)} takes samples along the first axis, found a scalar`
      : samples.shape[0] === 0
      ? `no samples for input ${quote(name)} (shape [${samples.shape.join(",")}]); expected at least one`
      : samplesMismatch(modelInput(input, samples), samples);
    if (problem !== undefined) throw new DataError("calibration", problem);
  }
  return byName as Readonly<Record<string, Tensor>>;
}

/** A graph input as the data checks see it (a type the model does not declare takes the samples' own). */
function modelInput(input: Value, samples: Tensor): ModelInput {
  const type = isTensorType(input.type) ? input.type : null;
  return {
    name: input.name,
    dtype: type === null ? samples.dtype : elementTypeToString(type.elem),
    shape: type?.shape ?? null,
  };
}

/**
 * Give graph inputs the static shapes of `shapes`: each symbol takes its value in every input. Throws one line
 * naming the input for an unknown name, a rank or dimension that disagrees with the model, or a bad dimension.
 */
function setInputShapes(module: Module, shapes: Readonly<Record<string, readonly number[]>>): void {
  const inputs = module.graph.inputs.filter((v) => v.constant === null);
  const bindings = new Map<string, number>();
  for (const [name, dims] of Object.entries(shapes)) {
    const input = inputs.find((v) => v.name === name);
    if (input === undefined) {
      throw new Error(
        `inputShapes: ${JSON.stringify(name)} is not a graph input; inputs are: ${
          inputs.map((v) => v.name).join(", ") || "(none)"
        }`,
      );
    }
    const what = `inputShapes: input ${JSON.stringify(name)}`;
    if (!Array.isArray(dims) || dims.some((d) => !Number.isSafeInteger(d) || d < 1)) {
      throw new Error(`${what}: dimensions must be positive integers, found ${JSON.stringify(dims)}`);
    }
    const type = input.type;
    if (!isTensorType(type)) throw new Error(`${what} is not a tensor`);
    const declared = type.shape ?? dims;
    if (declared.length !== dims.length) {
      throw new Error(`${what} has rank ${declared.length} (${typeToString(type)}), found ${dims.length} dimensions`);
    }
    declared.forEach((d, i) => {
      const bound = typeof d === "string" && d !== "?" ? bindings.get(d) : undefined;
      if ((typeof d === "number" && d !== dims[i]) || (bound !== undefined && bound !== dims[i])) {
        const was = typeof d === "number" ? `is ${d} in the model` : `${d} is ${bound} in another input`;
        throw new Error(`${what}: dimension ${i} ${was}, found ${dims[i]}`);
      }
      if (typeof d === "string" && d !== "?") bindings.set(d, dims[i]);
    });
    input.type = tensorType(type.elem, dims);
  }
  for (const input of inputs) {
    if (!isTensorType(input.type) || input.type.shape === null) continue;
    const shape = input.type.shape.map((d) => (typeof d === "string" ? bindings.get(d) ?? d : d));
    input.type = tensorType(input.type.elem, shape);
  }
}

function isTensor(x: unknown): x is Tensor {
  return typeof x === "object" && x !== null && "dtype" in x && "shape" in x && "data" in x;
}

function verifyAfterPipeline(module: Module, registry: Registry): void {
  try {
    verifyModule(module, { registry: registry.ops });
  } catch (e) {
    throw new Error(`the IR is invalid after the pipeline: ${(e as Error).message}`);
  }
}

async function emitArtifacts(
  target: Target,
  options: OptionValues<OptionSchema>,
  module: Module,
  modelName: string,
  provenance: { pipeline: string; inputSha256: string; calibration?: Readonly<Record<string, Tensor>> },
): Promise<{ artifacts: Artifacts; diagnostics: TargetDiagnostic[]; stats: Record<string, StatValue> }> {
  const errors: string[] = [];
  const diagnostics: TargetDiagnostic[] = [];
  const stats: Record<string, StatValue> = {};
  let artifacts: unknown;
  try {
    artifacts = await target.emit(module, options, {
      modelName,
      ...provenance,
      emit(severity: Severity, message: string) {
        if (severity === "error") errors.push(message);
        else diagnostics.push({ severity, message });
      },
      stat(name: string, value: StatValue) {
        stats[name] = value;
      },
    });
  } catch (e) {
    throw new Error(`target "${target.name}" failed: ${String((e as Error).message ?? e).split("\n")[0]}`, {
      cause: e,
    });
  }
  if (errors.length > 0) {
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more error${errors.length > 2 ? "s" : ""})` : "";
    throw new Error(`target "${target.name}" failed: ${errors[0]}${more}`);
  }
  checkArtifacts(target.name, artifacts);
  return { artifacts, diagnostics, stats };
}

/**
 * What a target's `emit` returns must be a Map from artifact name to bytes, each name a relative path of file names
 * separated by `/` (built-in targets emit plain file names; a subfolder such as `weights/fc1.bin` is allowed), so
 * that a caller writing them into a folder writes nothing outside it. No name may be both a file and a folder.
 */
function checkArtifacts(targetName: string, artifacts: unknown): asserts artifacts is Artifacts {
  const from = `target ${quote(targetName)}`;
  if (!(artifacts instanceof Map)) {
    throw new Error(
      `${from} returned ${describeValue(artifacts)} from emit(); expected a Map of file name to Uint8Array`,
    );
  }
  const folders = new Map<string, string>();
  for (const [name, bytes] of artifacts as Map<unknown, unknown>) {
    if (typeof name !== "string") {
      throw new Error(`${from} returned an artifact named by ${describeValue(name)}; expected a file name (a string)`);
    }
    const problem = pathProblem(name, true);
    if (problem !== undefined) {
      throw new Error(
        `${from} returned artifact ${quote(name)}: ${problem}; expected a relative path of file names separated by "/"`,
      );
    }
    if (!(bytes instanceof Uint8Array)) {
      throw new Error(`${from} returned artifact ${quote(name)} as ${describeValue(bytes)}; expected a Uint8Array`);
    }
    const parts = name.split("/");
    for (let i = 1; i < parts.length; i++) folders.set(parts.slice(0, i).join("/"), name);
  }
  for (const [folder, inside] of folders) {
    if (artifacts.has(folder)) {
      throw new Error(
        `${from} returned artifacts ${quote(folder)} and ${quote(inside)}: ${quote(folder)} cannot be both a file ` +
          "and a folder",
      );
    }
  }
}

/**
 * Why `name` is not a safe relative path (with `folders`: file names separated by `/`; without: one file name), or
 * `undefined`: no empty, `.` or `..` part, nothing absolute, no backslash or control character, parts of at most
 * 255 bytes.
 */
function pathProblem(name: string, folders: boolean): string | undefined {
  if (name === "") return "it is empty";
  if (name.startsWith("/") || /^[A-Za-z]:/.test(name)) return "it is an absolute path";
  if (name.includes("\\")) return "it has a backslash";
  // deno-lint-ignore no-control-regex -- control characters are what is refused
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(name)) return "it has a control character";
  const parts = name.split("/");
  if (!folders && parts.length > 1) return "it has a folder separator";
  for (const part of parts) {
    if (part === "" || part === "." || part === "..") {
      return `it has ${part === "" ? "an empty" : `a ${quote(part)}`} part`;
    }
    if (new TextEncoder().encode(part).length > 255) return "it has a part longer than 255 bytes";
  }
  return undefined;
}

/** `null`, `an array`, `a plain object`, `a Set`, `a string`: what a value is, for a message. */
function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") {
    const proto = Object.getPrototypeOf(value);
    return proto === null || proto === Object.prototype ? "a plain object" : `a ${proto.constructor?.name ?? "object"}`;
  }
  return typeof value === "undefined" ? "undefined" : `a ${typeof value}`;
}
