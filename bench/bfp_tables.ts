/**
 * The tables of the BFP issue's closing note, measured on the trained MNIST
 * fixtures of `examples/models` (see its README): test set `mnist_test_x.npy`
 * (2,000 images), calibration `mnist_calib_x.npy` (256 images), every model
 * compiled with `fold-bn,canonicalize,dce,bfp{...}` so BatchNormalization is
 * folded into the convolutions before lowering.
 *
 * 1. Every model with `bfp` defaults (e5m8 nearest-even, per-channel): float
 *    and BFP top-1 in the reference interpreter, and the BFP top-1 of the ONNX
 *    the `onnx` target emits, run in onnxruntime-node, with the largest logit
 *    difference between the two on the first 100 test images.
 * 2. Mantissa sweep 4..12 on `vgg_sparse` and `resnet_preact`.
 * 3. Rounding modes at mantissa 8 and 6 on `vgg_sparse`.
 * 4. Partition schemes (per-channel, MX blocks of 32, 16, 8) on `vgg_sparse` and `mobilenet`.
 * 5. `prune{ratio=0.5},fold-bn,canonicalize,dce,svd{energy=0.95},bfp` end to end on `vgg_sparse`.
 *
 * Every configuration goes through {@linkcode compile} (calibration given, the
 * `onnx` target), so the numbers are what the CLI reports: top-1 is the
 * report's `accuracy` where the float figure is needed too, else
 * {@linkcode evaluate} on the compiled module with the same op registry and
 * batch size, which is the call `compile` makes. SQNR figures are the `bfp`
 * pass's calibration statistics (`report.passes[].stats.layers`): "output
 * SQNR" is the last lowered layer's `sqnr-in-model-db` (the logits of the
 * fully lowered model against the float model, errors of all layers
 * accumulated), "mean layer SQNR" the mean over layers of `sqnr-output-db`
 * (each layer alone on its float input), "accumulator saturations" the sum
 * over layers of `saturations` (outputs whose 32-bit accumulator saturated,
 * each layer alone on the calibration set), "input blocks per image" the sum
 * over layers of `input-blocks-per-sample` (run-time block formatting per image;
 * a Quantize shared by two layers counts twice).
 *
 * A failing ONNX emission does not stop the run: the `onnx` target is wrapped
 * so that its error (worded as `compile` words it) lands in the table as
 * "n/a (ONNX emission unavailable: ...)" while the report is kept, instead
 * of compiling every model a second time. Configurations run on a pool of
 * workers (`--jobs`, default 2); identical configurations run once.
 *
 *   deno run -A bench/bfp_tables.ts [--quick] [--json FILE] [--jobs N]
 *
 * `--quick` evaluates on the first 500 test images. The tables go to stdout,
 * progress to stderr; `--json` writes the same figures (fractions, not
 * percentages; an exact SQNR is `"inf"`) and the Markdown. A full run takes
 * about 7 minutes on 2 idle cores (40 compilations; mobilenet with MX blocks
 * is the slowest), `--quick` about 3.5.
 * @module
 */
import { readNpyFile } from "../data/npy.ts";
import { compile } from "../driver/compile.ts";
import { evaluate, evaluateOnnx } from "../driver/evaluate.ts";
import { runOnnxruntime } from "../driver/onnxruntime.ts";
import { Registry } from "../driver/registry.ts";
import type { CompileReport } from "../driver/report.ts";
import { Interpreter } from "../ir/interpreter.ts";
import { BFP_DOMAIN } from "../ir/bfp/plan.ts";
import { shapeSize, type Tensor } from "../ir/tensor.ts";
import { builtinPasses } from "../passes/builtin.ts";
import type { StatValue } from "../passes/pass.ts";
import { builtinTargets } from "../targets/builtin.ts";
import { defineTarget } from "../targets/target.ts";

const MODELS_DIR = new URL("../examples/models/", import.meta.url);
const MODELS = [
  "vgg_sparse",
  "vgg_dense",
  "resnet_preact",
  "densenet",
  "mobilenet",
  "mlp",
  "masknet",
  "vgg_sparse_slim50_ref",
] as const;
const PREFIX = "fold-bn,canonicalize,dce";
const END_TO_END = "prune{ratio=0.5},fold-bn,canonicalize,dce,svd{energy=0.95}";
const QUICK_IMAGES = 500;
/** Images compared logit by logit between onnxruntime and the interpreter. */
const LOGIT_IMAGES = 100;
const WORKER_NAME = "bfp-tables-worker";

/** `bfp` options that differ from the defaults, in a fixed order (so equal configurations get equal pipelines). */
interface BfpConfig {
  mantissa?: number;
  rounding?: string;
  seed?: number;
  scheme?: "auto" | "per-channel" | "mx";
  block?: number;
}

const BFP_DEFAULTS: Required<BfpConfig> = {
  mantissa: 8,
  rounding: "nearest-even",
  seed: 0,
  scheme: "auto",
  block: 32,
};

/** The `bfp` step: `bfp` alone for the defaults, else `bfp{...}` with the non-default options. */
function bfpStep(config: BfpConfig): string {
  const parts: string[] = [];
  for (const key of Object.keys(BFP_DEFAULTS) as (keyof BfpConfig)[]) {
    const value = config[key];
    // `block` only means something with scheme=mx; leave it out otherwise so per-channel runs dedupe.
    if (key === "block" && config.scheme !== "mx") continue;
    if (value !== undefined && (value !== BFP_DEFAULTS[key] || key === "block")) parts.push(`${key}=${value}`);
  }
  return parts.length === 0 ? "bfp" : `bfp{${parts.join(",")}}`;
}

/** One compilation. */
interface Job {
  model: string;
  passes: string;
  /** Measure float top-1 as well (compile's `evaluation`). */
  float: boolean;
  /** Evaluate the emitted ONNX in onnxruntime and compare logits. */
  onnx: boolean;
}

/** What a worker sends back for a job. */
interface JobResult {
  key: string;
  report: CompileReport;
  floatTop1: number | null;
  top1: number;
  /** The emitted `<model>.onnx`, or why there is none. */
  onnx: { bytes: Uint8Array } | { error: string };
  /** Interpreter logits of the first {@linkcode LOGIT_IMAGES} test images (only for `onnx` jobs that emitted). */
  logits: Tensor | null;
  /** Name of the last lowered layer in graph order, or null when nothing was lowered. */
  lastLayer: string | null;
  /** The graph input the data set feeds and the output holding the logits. */
  io: { input: string; output: string };
  seconds: number;
}

const keyOf = (job: { model: string; passes: string }): string => `${job.model}|${job.passes}`;

interface Data {
  x: Tensor;
  y: Tensor;
  calib: Tensor;
}

function loadData(quick: boolean): Data {
  const path = (name: string): string => new URL(name, MODELS_DIR).pathname;
  const x = readNpyFile(path("mnist_test_x.npy"));
  const y = readNpyFile(path("mnist_test_y.npy"));
  const calib = readNpyFile(path("mnist_calib_x.npy"));
  return quick ? { x: firstRows(x, QUICK_IMAGES), y: firstRows(y, QUICK_IMAGES), calib } : { x, y, calib };
}

/** The first `n` samples of a tensor (a view). */
function firstRows(t: Tensor, n: number): Tensor {
  const rows = Math.min(n, t.shape[0]);
  const size = shapeSize(t.shape.slice(1));
  const data = t.data as Float32Array;
  return { dtype: t.dtype, shape: [rows, ...t.shape.slice(1)], data: data.subarray(0, rows * size) } as Tensor;
}

/**
 * The built-in passes and targets, with the `onnx` target's failure caught:
 * compile() would throw `target "onnx" failed: <first line>` after the whole
 * pipeline and evaluation; here the same words are recorded and no artifact
 * is returned, so the report survives.
 */
function registryCatchingOnnx(): { registry: Registry; failure: () => string | null } {
  const registry = new Registry();
  for (const pass of builtinPasses) registry.addPass(pass);
  let failure: string | null = null;
  for (const target of builtinTargets) {
    if (target.name !== "onnx") {
      registry.addTarget(target);
      continue;
    }
    registry.addTarget(defineTarget({
      ...target,
      async emit(module, options, ctx) {
        const errors: string[] = [];
        try {
          const artifacts = await target.emit(module, options, {
            ...ctx,
            emit(severity, message) {
              if (severity === "error") errors.push(message);
              else ctx.emit(severity, message);
            },
          });
          if (errors.length === 0) return artifacts;
          failure = `target "onnx" failed: ${errors[0]}`;
        } catch (e) {
          failure = `target "onnx" failed: ${String((e as Error).message ?? e).split("\n")[0]}`;
        }
        return new Map();
      },
    }));
  }
  return { registry, failure: () => failure };
}

async function runJob(job: Job, data: Data): Promise<JobResult> {
  const started = performance.now();
  const { registry, failure } = registryCatchingOnnx();
  const bytes = Deno.readFileSync(new URL(`${job.model}.onnx`, MODELS_DIR));
  const { report, module, artifacts } = await compile(bytes, {
    passes: job.passes,
    target: "onnx",
    modelName: job.model,
    registry,
    calibration: data.calib,
    evaluation: job.float ? { inputs: data.x, labels: data.y } : undefined,
  });
  // compile() evaluates exactly so: evaluate(module, inputs, labels, { registry: registry.ops, batchSize }).
  const top1 = report.accuracy?.after ?? evaluate(module, data.x, data.y, { registry: registry.ops }).accuracy;
  const model = artifacts.get(`${job.model}.onnx`);
  const io = {
    input: module.graph.inputs.find((v) => v.constant === null)!.name,
    output: module.graph.outputs[0].name,
  };
  let logits: Tensor | null = null;
  if (job.onnx && model !== undefined) {
    const out = new Interpreter(module, { registry: registry.ops }).run({
      [io.input]: firstRows(data.x, LOGIT_IMAGES),
    });
    logits = out[io.output];
  }
  const last = module.graph.ops.filter((op) => op.domain === BFP_DOMAIN && op.type !== "Quantize").at(-1);
  return {
    key: keyOf(job),
    report,
    floatTop1: report.accuracy?.before ?? null,
    top1,
    onnx: model !== undefined ? { bytes: model } : { error: failure() ?? "the onnx target wrote no .onnx file" },
    logits,
    lastLayer: last === undefined ? null : last.name,
    io,
    seconds: (performance.now() - started) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Worker side: load the data once, then run the jobs the main thread sends.

interface WorkerScope {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown): void;
}

function serveJobs(): void {
  const scope = globalThis as unknown as WorkerScope;
  let data: Data | null = null;
  scope.onmessage = async (e: MessageEvent) => {
    const msg = e.data as { quick: boolean } | { job: Job };
    if ("quick" in msg) {
      data = loadData(msg.quick);
      return;
    }
    try {
      scope.postMessage({ result: await runJob(msg.job, data!) });
    } catch (err) {
      scope.postMessage({ key: keyOf(msg.job), error: String((err as Error).stack ?? err) });
    }
  };
}

/** Run the jobs on `workers` workers (longest first), or in this thread when `workers` is 1. */
async function runAll(jobs: Job[], quick: boolean, workers: number, data: Data): Promise<Map<string, JobResult>> {
  const results = new Map<string, JobResult>();
  const queue = [...jobs].sort((a, b) => costEstimate(b) - costEstimate(a));
  const total = queue.length;
  const done = (r: JobResult): void => {
    results.set(r.key, r);
    progress(`[${results.size}/${total}] ${r.key}: ${r.seconds.toFixed(1)} s`);
  };
  if (workers <= 1) {
    for (const job of queue) done(await runJob(job, data));
    return results;
  }
  const pool = Array.from({ length: Math.min(workers, queue.length) }, () => {
    const worker = new Worker(import.meta.url, { type: "module", name: WORKER_NAME });
    worker.postMessage({ quick });
    return worker;
  });
  await Promise.all(pool.map((worker) =>
    new Promise<void>((resolve, reject) => {
      const next = (): void => {
        const job = queue.shift();
        if (job === undefined) {
          worker.terminate();
          resolve();
        } else worker.postMessage({ job });
      };
      worker.onmessage = (e: MessageEvent) => {
        const msg = e.data as { result: JobResult } | { key: string; error: string };
        if ("error" in msg) {
          for (const w of pool) w.terminate();
          reject(new Error(`${msg.key}: ${msg.error}`));
          return;
        }
        done(msg.result);
        next();
      };
      worker.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        for (const w of pool) w.terminate();
        reject(new Error(`worker failed: ${e.message}`));
      };
      next();
    })
  ));
  return results;
}

/** Relative run time, to start the long jobs first (measured on this machine: mobilenet with MX blocks is slowest). */
function costEstimate(job: Job): number {
  const base: Record<string, number> = { mobilenet: 2, resnet_preact: 3, densenet: 3, vgg_sparse: 1, vgg_dense: 1 };
  const mx = job.model === "mobilenet" && job.passes.includes("scheme=mx") ? 5 : 1;
  return (base[job.model] ?? 0.7) * mx * (job.float ? 1.6 : 1) + (job.passes.startsWith("prune") ? 0.5 : 0);
}

function progress(line: string): void {
  console.error(line);
}

// ---------------------------------------------------------------------------------------------------------------
// Main side: the jobs, then the tables.

const MANTISSAS = [4, 5, 6, 7, 8, 9, 10, 11, 12];
const ROUNDINGS = ["nearest-even", "toward-zero", "toward-positive", "toward-negative", "stochastic"];
const SCHEMES: { label: string; config: BfpConfig }[] = [
  { label: "per-channel", config: {} },
  { label: "mx, block 32", config: { scheme: "mx", block: 32 } },
  { label: "mx, block 16", config: { scheme: "mx", block: 16 } },
  { label: "mx, block 8", config: { scheme: "mx", block: 8 } },
];
const SWEEP_MODELS = ["vgg_sparse", "resnet_preact"];
const SCHEME_MODELS = ["vgg_sparse", "mobilenet"];
const ROUNDING_MANTISSAS = [8, 6];

const lowered = (config: BfpConfig): string => `${PREFIX},${bfpStep(config)}`;
const roundingConfig = (rounding: string, mantissa: number): BfpConfig =>
  rounding === "stochastic" ? { mantissa, rounding, seed: 1 } : { mantissa, rounding };

function plan(): Job[] {
  const jobs = new Map<string, Job>();
  const add = (model: string, passes: string, float = false, onnx = false): void => {
    const key = keyOf({ model, passes });
    const prior = jobs.get(key);
    jobs.set(key, { model, passes, float: float || (prior?.float ?? false), onnx: onnx || (prior?.onnx ?? false) });
  };
  for (const model of MODELS) add(model, lowered({}), true, true);
  for (const model of SWEEP_MODELS) for (const mantissa of MANTISSAS) add(model, lowered({ mantissa }));
  for (const mantissa of ROUNDING_MANTISSAS) {
    for (const rounding of ROUNDINGS) add("vgg_sparse", lowered(roundingConfig(rounding, mantissa)));
  }
  for (const model of SCHEME_MODELS) for (const { config } of SCHEMES) add(model, lowered(config));
  add("vgg_sparse", END_TO_END, true);
  add("vgg_sparse", `${END_TO_END},bfp`, true, true);
  return [...jobs.values()];
}

/** ONNX columns of a job: onnxruntime top-1 and max |logit difference|, or why not. */
interface OnnxCheck {
  top1: number | null;
  maxLogitDiff: number | null;
  note: string | null;
}

async function checkOnnx(result: JobResult, data: Data): Promise<OnnxCheck> {
  if (!("bytes" in result.onnx)) {
    return { top1: null, maxLogitDiff: null, note: `n/a (ONNX emission unavailable: ${result.onnx.error})` };
  }
  try {
    const { accuracy } = await evaluateOnnx(result.onnx.bytes, data.x, data.y);
    let maxLogitDiff: number | null = null;
    if (result.logits !== null) {
      const feeds = firstRows(data.x, LOGIT_IMAGES);
      const out = await runOnnxruntime(result.onnx.bytes, { [result.io.input]: feeds });
      const ort = (out[result.io.output] ?? Object.values(out)[0]).data as Float32Array;
      const ref = result.logits.data as Float32Array;
      maxLogitDiff = 0;
      for (let i = 0; i < ref.length; i++) maxLogitDiff = Math.max(maxLogitDiff, Math.abs(ort[i] - ref[i]));
    }
    return { top1: accuracy, maxLogitDiff, note: null };
  } catch (e) {
    return { top1: null, maxLogitDiff: null, note: `n/a (onnxruntime failed: ${(e as Error).message.split("\n")[0]})` };
  }
}

/** The `bfp` pass's record of a report. */
function bfpStats(report: CompileReport): Readonly<Record<string, StatValue>> | null {
  return report.passes.find((p) => p.name === "bfp")?.stats ?? null;
}

function layerStats(report: CompileReport): Record<string, Record<string, StatValue>> {
  return (bfpStats(report)?.layers ?? {}) as Record<string, Record<string, StatValue>>;
}

/** A dB statistic as a number (`"inf"` is +Infinity), or null when absent. */
function dbValue(v: StatValue | undefined): number | null {
  if (typeof v === "number") return v;
  if (v === "inf") return Infinity;
  return null;
}

/** SQNR figures of a lowered model (see the module header). */
function sqnrOf(result: JobResult): { output: number | null; meanLayer: number | null } {
  const layers = layerStats(result.report);
  const output = result.lastLayer === null ? null : dbValue(layers[result.lastLayer]?.["sqnr-in-model-db"]);
  const perLayer = Object.values(layers).map((l) => dbValue(l["sqnr-output-db"])).filter((v) => v !== null);
  const meanLayer = perLayer.length === 0 ? null : perLayer.reduce((a, b) => a + b, 0) / perLayer.length;
  return { output, meanLayer };
}

function sumLayerStat(report: CompileReport, name: string): number | null {
  const values = Object.values(layerStats(report)).map((l) => l[name]);
  if (values.length === 0 || values.some((v) => typeof v !== "number")) return null;
  return (values as number[]).reduce((a, b) => a + b, 0);
}

const pct = (v: number | null): string => (v === null ? "n/a" : `${(100 * v).toFixed(2)}%`);
const points = (after: number | null, before: number | null): string =>
  after === null || before === null
    ? "n/a"
    : `${after >= before ? "+" : "−"}${Math.abs(100 * (after - before)).toFixed(2)}`;
const dbText = (v: number | null): string => (v === null ? "n/a" : Number.isFinite(v) ? v.toFixed(2) : "inf");
const int = (v: number | null): string => (v === null ? "n/a" : v.toLocaleString("en-US"));
const escapeCell = (s: string): string => s.replaceAll("|", "\\|");

function markdownTable(header: string[], rows: string[][], align: ("l" | "r")[]): string {
  const line = (cells: string[]): string => `| ${cells.map(escapeCell).join(" | ")} |`;
  return [line(header), `| ${align.map((a) => (a === "r" ? "---:" : "---")).join(" | ")} |`, ...rows.map(line)].join(
    "\n",
  );
}

interface Options {
  quick: boolean;
  json: string | null;
  jobs: number;
}

function parseArgs(args: string[]): Options {
  const options: Options = { quick: false, json: null, jobs: 2 };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--quick") options.quick = true;
    else if (a === "--json" && i + 1 < args.length) options.json = args[++i];
    else if (a.startsWith("--json=")) options.json = a.slice("--json=".length);
    else if ((a === "--jobs" && i + 1 < args.length) || a.startsWith("--jobs=")) {
      const n = Number(a === "--jobs" ? args[++i] : a.slice("--jobs=".length));
      if (!Number.isInteger(n) || n < 1) throw new Error(`--jobs takes a positive integer, found ${n}`);
      options.jobs = n;
    } else throw new Error(`unknown argument "${a}"; usage: bfp_tables.ts [--quick] [--json FILE] [--jobs N]`);
  }
  return options;
}

async function main(): Promise<void> {
  let options: Options;
  try {
    options = parseArgs(Deno.args);
  } catch (e) {
    console.error(`bfp_tables: ${(e as Error).message}`);
    Deno.exit(2);
  }
  const started = performance.now();
  const data = loadData(options.quick);
  const images = data.x.shape[0];
  const jobs = plan();
  progress(`${jobs.length} compilations on ${options.jobs} worker(s), ${images} test images`);
  const results = await runAll(jobs, options.quick, options.jobs, data);
  const get = (model: string, passes: string): JobResult => results.get(keyOf({ model, passes }))!;
  const onnxChecks = new Map<string, OnnxCheck>();
  for (const job of jobs.filter((j) => j.onnx)) {
    onnxChecks.set(keyOf(job), await checkOnnx(get(job.model, job.passes), data));
  }
  const floatTop1 = (model: string): number | null => get(model, lowered({})).floatTop1;

  const sections: string[] = [];
  const json: Record<string, unknown> = {};

  // 1. Every model, bfp defaults.
  const t1 = MODELS.map((model) => {
    const r = get(model, lowered({}));
    const check = onnxChecks.get(keyOf({ model, passes: lowered({}) }))!;
    const stats = bfpStats(r.report);
    return {
      model,
      floatTop1: r.floatTop1,
      bfpTop1: r.top1,
      deltaPoints: r.floatTop1 === null ? null : Math.round(1e4 * (r.top1 - r.floatTop1)) / 100,
      layersLowered: typeof stats?.["layers-lowered"] === "number" ? stats["layers-lowered"] : null,
      outputSqnrDb: sqnrOf(r).output,
      onnxruntimeTop1: check.top1,
      maxLogitDiff: check.maxLogitDiff,
      onnxNote: check.note,
    };
  });
  json.models = t1;
  sections.push(
    `### 1. Every model, \`${lowered({})}\` (e5m8 nearest-even, per-channel)\n\n` +
      markdownTable(
        [
          "model",
          "float top-1 (interpreter)",
          "BFP top-1 (interpreter)",
          "change (points)",
          "layers lowered",
          "output SQNR (dB)",
          "BFP top-1 (onnxruntime, emitted ONNX)",
          `max |logit diff| ORT vs interpreter (${LOGIT_IMAGES} images)`,
        ],
        t1.map((row) => [
          row.model,
          pct(row.floatTop1),
          pct(row.bfpTop1),
          points(row.bfpTop1, row.floatTop1),
          int(row.layersLowered),
          dbText(row.outputSqnrDb),
          row.onnxNote ?? pct(row.onnxruntimeTop1),
          row.onnxNote !== null ? "n/a" : row.maxLogitDiff === null ? "n/a" : row.maxLogitDiff.toExponential(2),
        ]),
        ["l", "r", "r", "r", "r", "r", "l", "r"],
      ),
  );

  // 2. Mantissa sweep.
  const t2 = MANTISSAS.map((mantissa) => {
    const row: Record<string, unknown> = { mantissa };
    for (const model of SWEEP_MODELS) {
      const r = get(model, lowered({ mantissa }));
      const s = sqnrOf(r);
      row[model] = {
        top1: r.top1,
        outputSqnrDb: s.output,
        meanLayerSqnrDb: s.meanLayer,
        saturations: sumLayerStat(r.report, "saturations"),
      };
    }
    return row;
  });
  json.mantissa = t2;
  sections.push(
    `### 2. Mantissa sweep (e5, nearest-even, per-channel; float top-1: ${
      SWEEP_MODELS.map((m) => `${m} ${pct(floatTop1(m))}`).join(", ")
    })\n\n` +
      markdownTable(
        [
          "mantissa bits",
          ...SWEEP_MODELS.flatMap((m) => [
            `${m} top-1`,
            `${m} output SQNR (dB)`,
            `${m} mean layer SQNR (dB)`,
            `${m} accumulator saturations`,
          ]),
        ],
        MANTISSAS.map((mantissa) => [
          String(mantissa),
          ...SWEEP_MODELS.flatMap((model) => {
            const r = get(model, lowered({ mantissa }));
            const s = sqnrOf(r);
            return [pct(r.top1), dbText(s.output), dbText(s.meanLayer), int(sumLayerStat(r.report, "saturations"))];
          }),
        ]),
        ["r", ...SWEEP_MODELS.flatMap((): ("l" | "r")[] => ["r", "r", "r", "r"])],
      ),
  );

  // 3. Rounding modes.
  const t3 = ROUNDINGS.map((rounding) => {
    const row: Record<string, unknown> = { rounding: rounding === "stochastic" ? "stochastic (seed 1)" : rounding };
    for (const mantissa of ROUNDING_MANTISSAS) {
      const r = get("vgg_sparse", lowered(roundingConfig(rounding, mantissa)));
      row[`m${mantissa}`] = { top1: r.top1, outputSqnrDb: sqnrOf(r).output };
    }
    return row;
  });
  json.rounding = t3;
  sections.push(
    `### 3. Rounding modes on vgg_sparse (e5, per-channel; float top-1 ${pct(floatTop1("vgg_sparse"))})\n\n` +
      markdownTable(
        ["rounding", ...ROUNDING_MANTISSAS.flatMap((m) => [`m${m} top-1`, `m${m} output SQNR (dB)`])],
        ROUNDINGS.map((rounding) => [
          rounding === "stochastic" ? "stochastic (seed 1)" : rounding,
          ...ROUNDING_MANTISSAS.flatMap((mantissa) => {
            const r = get("vgg_sparse", lowered(roundingConfig(rounding, mantissa)));
            return [pct(r.top1), dbText(sqnrOf(r).output)];
          }),
        ]),
        ["l", "r", "r", "r", "r"],
      ),
  );

  // 4. Partition schemes.
  const t4 = SCHEME_MODELS.flatMap((model) =>
    SCHEMES.map(({ label, config }) => {
      const r = get(model, lowered(config));
      const exponentBits = bfpStats(r.report)?.["weight-exponent-bits"];
      return {
        model,
        scheme: label,
        pipeline: lowered(config),
        top1: r.top1,
        outputSqnrDb: sqnrOf(r).output,
        weightExponentBits: typeof exponentBits === "number" ? exponentBits : null,
        inputBlocksPerSample: sumLayerStat(r.report, "input-blocks-per-sample"),
      };
    })
  );
  json.schemes = t4;
  sections.push(
    `### 4. Partition schemes (e5m8 nearest-even; float top-1: ${
      SCHEME_MODELS.map((m) => `${m} ${pct(floatTop1(m))}`).join(", ")
    })\n\n` +
      markdownTable(
        [
          "model",
          "scheme",
          "top-1",
          "output SQNR (dB)",
          "weight exponent bits",
          "input blocks per image (sum over layers)",
        ],
        t4.map((row) => [
          row.model,
          row.scheme,
          pct(row.top1),
          dbText(row.outputSqnrDb),
          int(row.weightExponentBits),
          int(row.inputBlocksPerSample),
        ]),
        ["l", "l", "r", "r", "r", "r"],
      ),
  );

  // 5. End to end.
  const floatOnly = get("vgg_sparse", END_TO_END);
  const full = get("vgg_sparse", `${END_TO_END},bfp`);
  const fullCheck = onnxChecks.get(keyOf({ model: "vgg_sparse", passes: `${END_TO_END},bfp` }))!;
  const before = full.report.totals.before, mid = floatOnly.report.totals.after, after = full.report.totals.after;
  const t5 = {
    pipeline: `${END_TO_END},bfp`,
    params: { before: before.params, float: mid.params, after: after.params },
    macs: { before: before.macs, float: mid.macs, after: after.macs },
    weightBytes: { before: before.weightBytes, float: mid.weightBytes, after: after.weightBytes },
    top1: { before: full.floatTop1, float: floatOnly.top1, after: full.top1 },
    outputSqnrDb: sqnrOf(full).output,
    onnxruntimeTop1: fullCheck.top1,
    onnxNote: fullCheck.note,
  };
  json.endToEnd = t5;
  const trio = (v: { before: number | null; float: number | null; after: number | null }, f: typeof int) => [
    f(v.before),
    f(v.float),
    f(v.after),
  ];
  sections.push(
    `### 5. End to end on vgg_sparse: \`${END_TO_END},bfp\`\n\n` +
      markdownTable(
        ["", "input model (float)", "after prune + svd (float)", "after prune + svd + bfp"],
        [
          ["params", ...trio(t5.params, int)],
          ["MACs", ...trio(t5.macs, int)],
          ["weight bytes", ...trio(t5.weightBytes, int)],
          ["top-1 (interpreter)", ...trio(t5.top1, pct)],
          ["output SQNR of bfp (dB)", "", "", dbText(t5.outputSqnrDb)],
          ["top-1 (onnxruntime, emitted ONNX)", "", "", t5.onnxNote ?? pct(t5.onnxruntimeTop1)],
        ],
        ["l", "r", "r", "r"],
      ),
  );

  const wall = (performance.now() - started) / 1000;
  const footer = `${images} test images${options.quick ? " (--quick)" : ""}, calibration ${
    data.calib.shape[0]
  } images, ${jobs.length} compilations on ${options.jobs} worker(s), wall time ${wall.toFixed(1)} s.`;
  const markdown = `${sections.join("\n\n")}\n\n${footer}`;
  console.log(markdown);
  if (options.json !== null) {
    const doc = {
      images,
      calibrationImages: data.calib.shape[0],
      quick: options.quick,
      wallSeconds: Math.round(wall * 10) / 10,
      ...json,
      markdown,
    };
    const infinite = (_key: string, v: unknown): unknown => (v === Infinity ? "inf" : v);
    Deno.writeTextFileSync(options.json, JSON.stringify(doc, infinite, 2) + "\n");
  }
}

const inWorker = (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== undefined &&
  (globalThis as { name?: string }).name === WORKER_NAME;
if (inWorker) serveJobs();
else if (import.meta.main) await main();
