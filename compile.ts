/**
 * The command line of the compiler: argument parsing, printing and writing
 * files. All compiler logic is in the library (`compile()` in driver/compile.ts).
 *
 *   deno run --allow-read --allow-write compile.ts [MODEL.onnx] --passes PIPELINE --target NAME [--out DIR]
 *     [--report FILE.json|FILE.html]
 *
 * @module
 */
import { basename, extname, isAbsolute, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { readNpyFile } from "./data/npy.ts";
import { compile, type CompileOptions, type CompileResult, DataError, defaultRegistry } from "./driver/compile.ts";
import { fsReason, type ProtectedFile, writeFiles } from "./driver/write_files.ts";
import { folderReader } from "./ir/onnx/tensor_proto.ts";
import { type OnnxFile, readOnnxFile } from "./ir/onnx/model_file.ts";
import { escapeControl, oneLine, quote } from "./ir/quote.ts";
import type { Plugin, Registry } from "./driver/registry.ts";
import type { LayerRow } from "./driver/report.ts";
import type { BudgetPoint, BudgetReport } from "./driver/budget.ts";
import type { PassSqnr, VerifyReport } from "./driver/verify.ts";
import { describeRange, kebabCase, type OptionSchema } from "./passes/options.ts";
import { parsePipeline, PipelineError, printPipeline } from "./passes/pipeline.ts";
import type { Tensor } from "./ir/tensor.ts";

const DEFAULT_MODEL = new URL("./examples/models/vgg_sparse.onnx", import.meta.url).pathname;
/**
 * What `deno task compile` does with no MODEL: the product's main job on the bundled model, with its calibration and
 * test data (each default applies only where the option is not given).
 */
const BUNDLED = {
  passes: "prune,svd,bfp",
  target: "fpga{vectors=2}",
  calib: new URL("./examples/models/mnist_calib_x.npy", import.meta.url).pathname,
  eval: ["x", "y"].map((k) => new URL(`./examples/models/mnist_test_${k}.npy`, import.meta.url).pathname).join(","),
};

const USAGE = `Usage: deno run --allow-read --allow-write compile.ts [MODEL.onnx] [options]
   or: deno task compile [MODEL.onnx] [options]

Compiles a trained CNN: imports the ONNX model, runs a pass pipeline on the IR
and writes the target's artifacts. With no MODEL, compiles the bundled
examples/models/${basename(DEFAULT_MODEL)} with --passes ${BUNDLED.passes} --target ${BUNDLED.target}
and its calibration and test data (options given replace these defaults).

Options:
  --passes PIPELINE        passes to run, e.g. "fold-bn,canonicalize,dce" (default: none; see above)
  --target NAME            target, optionally with options: onnx{external-data=true} (default: onnx; see above)
  --out DIR                folder for the artifacts (default: ./out)
  --force                  write into a folder that holds a different image (fpga) of another build
  --report FILE.json       write the report (costs before/after, per-pass stats and times);
                           FILE.html writes it as a self-contained page with charts
  --plugin FILE.ts         load a plugin module exporting \`plugin\` (repeatable)
  --input-shape NAME=DIMS  static shape of graph input NAME, e.g. x=1,3,48,192 (repeatable): its symbolic
                           dimensions take these values, so MACs are counted and targets get static shapes
  --calib FILE.npy         calibration inputs for data-aware passes
  --eval X.npy,Y.npy       measure top-1 accuracy before and after on inputs X and labels Y
  --verify                 run every artifact in its runtime (onnxruntime, gcc, FPGA image reader, iverilog) on
                           the --eval (else --calib) inputs against the interpreter; a mismatch is an error.
                           Also records the output SQNR after every pass (needs -A: runs programs, onnxruntime)
  --sqnr-each              record the output SQNR against the original model after every pass (needs --calib)
  --budget LIMITS          compress to fit, e.g. weight-bytes=16KB,macs=2M,arena=32KB: search the settings of
                           --passes for the least loss (accuracy on --eval, else SQNR on --calib) and print the
                           chosen pipeline
  --print-ir-before NAME   print the IR before pass NAME, or "all" (repeatable)
  --print-ir-after NAME    print the IR after pass NAME, or "all" (repeatable)
  --print-ir-after-change  print the IR after every pass that changed it
  --no-verify-each         verify the IR once at the end instead of after every pass
  --timing                 print the time of each pass, slowest first
  --dump-pipeline          print the canonical pipeline (every option) and exit
  --list-passes            list the passes and their options
  --list-targets           list the targets and their options
  -q, --quiet              print nothing but errors
  -h, --help               show this help`;

/** A user-facing failure: printed as one line (plus a caret for pipelines), exit status 1. */
class CliError extends Error {}

/** Bytes an input file (model, data, plugin) may have: protobuf's limit on a serialised model. */
const MAX_INPUT_BYTES = 2 ** 31 - 1;

/**
 * Check that `path` is a regular file of at most {@linkcode MAX_INPUT_BYTES} before anything reads it: a FIFO would
 * block the read forever and a device such as /dev/zero would fill the memory.
 */
function checkInputFile(path: string, what: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    throw new CliError(`cannot read ${what} ${quote(path)}: ${fsReason(e)}`);
  }
  if (!info.isFile) {
    const kind = info.isDirectory
      ? "a folder"
      : info.isFifo
      ? "a FIFO"
      : info.isCharDevice || info.isBlockDevice
      ? "a device"
      : info.isSocket
      ? "a socket"
      : "not a regular file";
    throw new CliError(`cannot read ${what} ${quote(path)}: it is ${kind}; expected a regular file`);
  }
  if (info.size > MAX_INPUT_BYTES) {
    throw new CliError(
      `cannot read ${what} ${quote(path)}: it has ${info.size} bytes; at most ${MAX_INPUT_BYTES} are read`,
    );
  }
}

interface Args {
  model: string;
  passes: string;
  target: string;
  out: string;
  force: boolean;
  report?: string;
  plugins: string[];
  inputShapes: Record<string, number[]>;
  calib?: string;
  eval?: string;
  verify: boolean;
  sqnrEach: boolean;
  budget?: string;
  printIrBefore: string[];
  printIrAfter: string[];
  printIrAfterChange: boolean;
  verifyEach: boolean;
  timing: boolean;
  dumpPipeline: boolean;
  listPasses: boolean;
  listTargets: boolean;
  quiet: boolean;
  help: boolean;
}

function parseCommandLine(argv: string[]): Args {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        passes: { type: "string" },
        target: { type: "string" },
        out: { type: "string", default: "out" },
        force: { type: "boolean", default: false },
        report: { type: "string" },
        plugin: { type: "string", multiple: true, default: [] },
        "input-shape": { type: "string", multiple: true, default: [] },
        calib: { type: "string" },
        eval: { type: "string" },
        verify: { type: "boolean", default: false },
        "sqnr-each": { type: "boolean", default: false },
        budget: { type: "string" },
        "print-ir-before": { type: "string", multiple: true, default: [] },
        "print-ir-after": { type: "string", multiple: true, default: [] },
        "print-ir-after-change": { type: "boolean", default: false },
        "no-verify-each": { type: "boolean", default: false },
        timing: { type: "boolean", default: false },
        "dump-pipeline": { type: "boolean", default: false },
        "list-passes": { type: "boolean", default: false },
        "list-targets": { type: "boolean", default: false },
        quiet: { type: "boolean", short: "q", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    throw new CliError((e as Error).message.split("\n")[0]);
  }
  const { values: v, positionals } = parsed;
  if (positionals.length > 1) {
    throw new CliError(`expected at most one model, found ${positionals.length}: ${positionals.join(" ")}`);
  }
  for (
    const [flag, value] of [["MODEL", positionals[0]], ["--out", v.out], ["--report", v.report], ["--calib", v.calib], [
      "--eval",
      v.eval,
    ], ...v.plugin!.map((p) => ["--plugin", p])]
  ) {
    if (value === "") throw new CliError(`${flag} is empty; expected a path`);
  }
  const bundled = positionals.length === 0;
  return {
    model: positionals[0] ?? DEFAULT_MODEL,
    passes: v.passes ?? (bundled ? BUNDLED.passes : ""),
    target: v.target ?? (bundled ? BUNDLED.target : "onnx"),
    out: v.out!,
    force: v.force!,
    report: v.report,
    plugins: v.plugin!,
    inputShapes: parseInputShapes(v["input-shape"]!),
    calib: v.calib ?? (bundled ? BUNDLED.calib : undefined),
    eval: v.eval ?? (bundled ? BUNDLED.eval : undefined),
    verify: v.verify!,
    sqnrEach: v["sqnr-each"]!,
    budget: v.budget,
    printIrBefore: v["print-ir-before"]!,
    printIrAfter: v["print-ir-after"]!,
    printIrAfterChange: v["print-ir-after-change"]!,
    verifyEach: !v["no-verify-each"],
    timing: v.timing!,
    dumpPipeline: v["dump-pipeline"]!,
    listPasses: v["list-passes"]!,
    listTargets: v["list-targets"]!,
    quiet: v.quiet!,
    help: v.help!,
  };
}

/** `--input-shape x=1,3,48,192` (repeatable) as `{ x: [1, 3, 48, 192] }`. */
function parseInputShapes(texts: readonly string[]): Record<string, number[]> {
  const shapes: Record<string, number[]> = {};
  for (const text of texts) {
    const at = text.lastIndexOf("=");
    const dims = text.slice(at + 1).split(",").map((d) => d.trim());
    if (at <= 0 || dims.some((d) => !/^[1-9][0-9]{0,9}$/.test(d))) {
      throw new CliError(`--input-shape takes NAME=DIMS with positive dimensions (x=1,3,48,192), found ${quote(text)}`);
    }
    const name = text.slice(0, at);
    if (name in shapes) throw new CliError(`--input-shape gives input ${quote(name)} twice`);
    shapes[name] = dims.map(Number);
  }
  return shapes;
}

/** Import a plugin module and take its `plugin` (or default) export. */
async function loadPlugin(path: string): Promise<Plugin> {
  checkInputFile(path, "plugin");
  let mod: Record<string, unknown>;
  exitGuard.during = `plugin ${quote(path)} called Deno.exit() while loading`;
  try {
    mod = await import(pathToFileURL(resolve(path)).href);
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`cannot load plugin ${quote(path)}: ${(e as Error)?.message ?? e}`);
  } finally {
    exitGuard.during = "a plugin called Deno.exit() during the compilation";
  }
  const plugin = (mod.plugin ?? mod.default) as Plugin | undefined;
  if (typeof plugin !== "object" || plugin === null) {
    throw new CliError(`plugin ${quote(path)} exports no plugin (expected \`export const plugin: Plugin = {...}\`)`);
  }
  return plugin;
}

/**
 * While the CLI runs, `Deno.exit()` (and node's `process.exit()`, which calls it) throws instead of ending the
 * process, so a plugin cannot end the run silently with status 0; `during` says what was going on. The `unload`
 * handler in {@linkcode runCli} catches an exit that gets past this.
 */
const exitGuard = { during: "a plugin called Deno.exit() during the compilation", exit: Deno.exit };

function readTensorFile(path: string, what: string): Tensor {
  checkInputFile(path, `${what} file`);
  try {
    return readNpyFile(path);
  } catch (e) {
    throw new CliError(`${what} ${quote(path)}: ${(e as Error).message}`);
  }
}

/** `key=default  doc (range)`, or `key (optional)  doc (range)` for an option without a default. */
function optionLines(schema: OptionSchema): string[] {
  return Object.entries(schema).map(([key, spec]) => {
    const value = spec.optional ? " (optional)" : `=${JSON.stringify(spec.default)}`;
    return `      ${kebabCase(key)}${value}  ${spec.doc} (${describeRange(spec)})`;
  });
}

function listing(registry: Registry, kind: "passes" | "targets"): string {
  const items = kind === "passes" ? registry.passes() : registry.targets();
  return items.flatMap((p) => [`  ${p.name.padEnd(14)} ${p.summary}`, ...optionLines(p.options)]).join("\n");
}

async function main(argv: string[]): Promise<void> {
  const args = parseCommandLine(argv);
  if (args.help) {
    console.log(USAGE);
    return;
  }
  const plugins: Plugin[] = [];
  for (const path of args.plugins) plugins.push(await loadPlugin(path));
  const registry = defaultRegistry();
  for (const [i, plugin] of plugins.entries()) {
    try {
      const name = typeof plugin.name === "string" ? ` ${quote(plugin.name)}` : "";
      registry.addPlugin(plugin, `plugin${name} (${quote(args.plugins[i])})`);
    } catch (e) {
      throw new CliError((e as Error).message);
    }
  }
  if (args.listPasses || args.listTargets) {
    if (args.listPasses) console.log(`Passes:\n${listing(registry, "passes")}`);
    if (args.listTargets) console.log(`Targets:\n${listing(registry, "targets")}`);
    return;
  }

  if (args.dumpPipeline) {
    console.log(printPipeline(parsePipeline(args.passes, registry)));
    return;
  }

  const modelName = basename(args.model, extname(args.model));
  checkInputFile(args.model, "model");
  let model: OnnxFile;
  try {
    model = readOnnxFile(args.model);
  } catch (e) {
    throw new CliError(`cannot read model ${quote(args.model)}: ${fsReason(e)}`);
  }
  // Every file the compilation reads is an input no output may replace: the model, its external data, the data sets.
  const inputs: ProtectedFile[] = [{ path: args.model, label: "the input model" }];
  const readBeside = folderReader(resolve(args.model, ".."));
  const progress = progressLine(args.quiet);
  const options: CompileOptions = {
    passes: args.passes,
    target: args.target,
    modelName,
    registry,
    verifyEach: args.verifyEach,
    printIrBefore: args.printIrBefore.includes("all") ? "all" : args.printIrBefore,
    printIrAfter: args.printIrAfter.includes("all") ? "all" : args.printIrAfter,
    printIrAfterChange: args.printIrAfterChange,
    onIr: (header, ir) => console.log(`${header}\n${ir}`),
    importOptions: {
      baseDir: resolve(args.model, ".."),
      overwriteInput: true, // the model is read for this import alone: align small weights in it, do not copy them
      readFile(path) {
        checkInputFile(path, "external data file");
        inputs.push({ path, label: "the external data file" });
        return readBeside(path);
      },
    },
    inputShapes: args.inputShapes,
    instrument: progress.instrument,
    onLog: progress.onLog,
    onProgress: progress.onProgress,
    verify: args.verify,
    ...(args.sqnrEach ? { sqnrEach: true } : {}),
    budget: args.budget,
  };
  if (args.sqnrEach && args.calib === undefined) {
    throw new CliError("--sqnr-each needs --calib FILE.npy (the inputs the SQNR is measured on)");
  }
  if (args.calib !== undefined) {
    options.calibration = readTensorFile(args.calib, "--calib");
    inputs.push({ path: args.calib, label: "the --calib file" });
  }
  const evalFiles = args.eval?.split(",") ?? [];
  if (args.eval !== undefined) {
    if (evalFiles.length !== 2 || evalFiles.includes("")) {
      throw new CliError(`--eval takes X.npy,Y.npy (inputs and labels), found ${quote(args.eval)}`);
    }
    options.evaluation = {
      inputs: readTensorFile(evalFiles[0], "--eval"),
      labels: readTensorFile(evalFiles[1], "--eval"),
    };
    inputs.push(...evalFiles.map((path) => ({ path, label: "the --eval file" })));
  }
  inputs.push(...args.plugins.map((path) => ({ path, label: "the plugin" })));

  let result: CompileResult;
  try {
    result = await compile(model, options);
  } catch (e) {
    progress.clear();
    if (!(e instanceof DataError)) throw e;
    const flag = e.option === "calibration" ? `--calib ${quote(args.calib!)}` : `--eval ${quote(args.eval!)}`;
    throw new CliError(`${flag}: ${e.reason}`);
  }
  progress.clear();
  if (!args.force) refuseForeignImages(args.out, registry.target(result.report.target.name)?.exclusive, result);
  const written = writeOutputs(args, result, inputs);
  if (!args.quiet) {
    console.log(summary(modelName, result));
    if (result.report.budget !== undefined) console.log(budgetSummary(result.report.budget));
    if (result.report.passSqnr !== undefined) console.log(sqnrSummary(result.report.passSqnr));
    if (result.report.verify !== undefined) console.log(verifySummary(result.report.verify));
    if (args.timing) console.log(timing(result));
    for (const path of written) console.log(`wrote ${path}`);
  }
}

/** The budget search: the limits, points explored, the choice next to the pipeline as written. */
function budgetSummary(b: BudgetReport): string {
  const loss = (p: BudgetPoint): string =>
    b.objective === "accuracy"
      ? (p.accuracy === null ? "not measured" : `accuracy ${pct(p.accuracy)}`)
      : (p.sqnrDb === null ? "not measured" : `SQNR ${p.sqnrDb} dB`);
  const chosen = b.points[b.chosen];
  const lines = [
    `budget: ${b.points.length} settings explored, ${b.points.filter((p) => p.fits).length} fit; chosen ` +
    `(${fmt(chosen.weightBytes)} weight bytes, ${fmtMacs(chosen.macs)} MACs, ${fmt(chosen.arenaBytes)} activation ` +
    `bytes, ${loss(chosen)}):`,
    `  ${b.pipeline}`,
  ];
  if (b.handWritten >= 0) {
    const h = b.points[b.handWritten];
    lines.push(
      `  as written: ${fmt(h.weightBytes)} weight bytes, ${h.fits ? loss(h) : "does not fit"}`,
    );
  }
  return lines.join("\n");
}

/** Output SQNR against the original model after every pass. */
function sqnrSummary(records: readonly PassSqnr[]): string {
  return records.map((r) => `  SQNR after ${r.pass.padEnd(12)} ${r.sqnrDb === null ? "?" : r.sqnrDb} dB`).join("\n");
}

/** One line per verification check. */
function verifySummary(v: VerifyReport): string {
  return v.checks.map((c) => {
    const what = `verify ${c.runtime} ${c.artifact}`;
    if (c.skipped !== null) return `  ${what}: skipped (${c.skipped})`;
    const result = c.bitExact
      ? "bit-exact"
      : c.maxAbsError === null
      ? `${c.mismatches} mismatches`
      : `max abs error ${c.maxAbsError.toExponential(2)}, rel ${c.maxRelError!.toExponential(2)}, ` +
        `SQNR ${c.sqnrDb} dB (tolerance ${c.tolerance})`;
    const tools = Object.entries(c.tools).map(([k, v]) => `${k} ${v}`).join(", ");
    return `  ${what}: ${result}, ${fmt(c.compared)} values${
      c.samples > 0 ? ` of ${c.samples} samples` : ""
    } [${tools}]`;
  }).join("\n");
}

/** What the progress line hooks into, and how to wipe it. */
interface Progress {
  instrument?: CompileOptions["instrument"];
  onLog?: CompileOptions["onLog"];
  onProgress?: CompileOptions["onProgress"];
  clear(): void;
}

/**
 * Progress on stderr, one line redrawn in place: the pass running, its latest log line (each SVD layer, calibration
 * probes) and the evaluation's samples. Only when stderr is a terminal and without -q: pipes and logs get nothing.
 */
function progressLine(quiet: boolean): Progress {
  if (quiet || !Deno.stderr.isTerminal()) return { clear() {} };
  const encoder = new TextEncoder();
  let columns = 80;
  try {
    columns = Deno.consoleSize().columns || 80; // 0 under some pseudo-terminals
  } catch {
    // not a console after all: keep 80
  }
  let shown = false;
  const write = (text: string): void => {
    Deno.stderr.writeSync(encoder.encode(text));
  };
  const show = (text: string): void => {
    write(`\r\x1b[K${escapeControl(text).slice(0, Math.max(20, columns - 1))}`);
    shown = true;
  };
  const clear = (): void => {
    if (shown) write("\r\x1b[K");
    shown = false;
  };
  return {
    instrument: {
      beforePass: (step) => show(`  running ${step.pass.name}...`),
      afterPass: clear,
      afterPassFailed: clear,
    },
    onLog: (pass, message) => show(`  ${pass}: ${message}`),
    onProgress: (message) => show(`  ${message}`),
    clear,
  };
}

/**
 * Refuse a folder holding an image of another build (a file matching the target's `exclusive` pattern that this
 * compilation would not write byte for byte): replacing it, or adding a second image beside it, would leave whoever
 * loads the folder with the wrong weights.
 */
function refuseForeignImages(out: string, exclusive: RegExp | undefined, result: CompileResult): void {
  if (exclusive === undefined) return;
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(out)];
  } catch {
    return; // no folder yet
  }
  for (
    const entry of entries.filter((e) => e.isFile && exclusive.test(e.name)).sort((a, b) => a.name < b.name ? -1 : 1)
  ) {
    const path = join(out, entry.name);
    const ours = result.artifacts.get(entry.name);
    const existing = Deno.readFileSync(path);
    if (ours !== undefined && ours.length === existing.length && ours.every((b, i) => b === existing[i])) continue;
    const why = ours === undefined ? "another model's image" : "an image of a different build";
    throw new CliError(
      `--out ${quote(out)} holds ${why} (${quote(path)}); choose another folder or pass --force to replace it`,
    );
  }
}

/**
 * Write every artifact (and the report) all or nothing, only after the whole compilation succeeded, never over an
 * input (see `writeFiles`: every path is checked first, then the files are replaced together).
 */
function writeOutputs(args: Args, result: CompileResult, inputs: readonly ProtectedFile[]): string[] {
  const files = [...result.artifacts].map(([name, bytes]) => {
    const path = join(args.out, name);
    // compile() has checked the names; a name that still leaves --out is a bug, not a file to write.
    const rel = relative(args.out, path);
    if (rel === ".." || rel.startsWith("../") || isAbsolute(rel)) {
      throw new CliError(`artifact ${quote(name)} leaves --out`);
    }
    return { path, bytes, label: `artifact ${quote(name)}` };
  });
  if (args.report !== undefined) {
    // By extension: an HTML page for .html/.htm, the JSON report otherwise.
    const bytes = /\.html?$/i.test(args.report)
      ? result.reportHtml
      : new TextEncoder().encode(JSON.stringify(result.report, null, 2) + "\n");
    files.push({ path: args.report, bytes, label: "--report" });
  }
  try {
    writeFiles(files, { protect: inputs });
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  return files.map((f) => f.path);
}

const fmt = (n: number): string => n.toLocaleString("en-US");
const fmtMacs = (n: number | null): string => (n === null ? "?" : fmt(n));

function ratio(before: number, after: number): string {
  if (before === after) return "";
  return after === 0 ? "" : `${(before / after).toFixed(2)}x smaller`;
}

function summary(name: string, { report }: CompileResult): string {
  const rows = report.layers.map((l: LayerRow) => [
    l.name,
    l.type,
    l.before ? fmt(l.before.params) : "-",
    l.after ? fmt(l.after.params) : "-",
    l.before ? fmtMacs(l.before.macs) : "-",
    l.after ? fmtMacs(l.after.macs) : "-",
  ]);
  const header = ["layer", "op", "params", "after", "MACs", "after"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string =>
    "  " + r.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  const { before: b, after: a } = report.totals;
  const lines = [
    `${name}: ${report.pipeline === "" ? "no passes" : report.pipeline} -> ${report.target.name}`,
    line(header),
    ...rows.map(line),
    `  params       ${fmt(b.params)} -> ${fmt(a.params)}  ${ratio(b.params, a.params)}`,
    `  MACs         ${fmt(b.macs)} -> ${fmt(a.macs)}  ${ratio(b.macs, a.macs)}`,
    `  weight bytes ${fmt(b.weightBytes)} -> ${fmt(a.weightBytes)}  ${ratio(b.weightBytes, a.weightBytes)}`,
  ];
  if (a.sparseWeightBytes < a.weightBytes || b.sparseWeightBytes < b.weightBytes) {
    lines.push(
      `  sparse bytes ${fmt(b.sparseWeightBytes)} -> ${fmt(a.sparseWeightBytes)}  ` +
        `${ratio(b.sparseWeightBytes, a.sparseWeightBytes)} (matrices with zeros as CSR where smaller)`,
    );
  }
  for (const [side, t] of [["before", b], ["after", a]] as const) {
    if (t.unknownMacLayers === 0) continue;
    lines.push(
      `  MACs of ${t.unknownMacLayers} layer(s) ${side} are unknown (?): symbolic ${t.symbolicDims.join(", ")}; ` +
        "give --input-shape NAME=DIMS to count them",
    );
  }
  if (report.accuracy) {
    lines.push(`  accuracy     ${pct(report.accuracy.before)} -> ${pct(report.accuracy.after)}`);
  }
  for (const p of report.passes) lines.push(`  pass ${p.name.padEnd(14)} ${p.ms.toFixed(1)} ms`);
  for (const d of report.target.diagnostics) lines.push(`  ${report.target.name}: ${d.severity}: ${d.message}`);
  return lines.join("\n");
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

function timing({ report }: CompileResult): string {
  const rows = [...report.passes].sort((x, y) => y.ms - x.ms).map((p) =>
    `  ${p.ms.toFixed(2).padStart(10)} ms  ${p.name}`
  );
  const t = report.timings;
  return [
    "Timing (slowest first):",
    ...rows,
    `  import ${t.importMs.toFixed(1)} ms, passes ${t.passesMs.toFixed(1)} ms, emit ${t.emitMs.toFixed(1)} ms, ` +
    `total ${t.totalMs.toFixed(1)} ms`,
  ].join("\n");
}

/** Characters of an error line printed at most. */
const MAX_ERROR_CHARS = 1000;

/**
 * The lines printed for an error: `compile: error: MESSAGE` with every control character escaped (a newline in a
 * name cannot split the line, an escape sequence cannot reach the terminal) and at most
 * {@linkcode MAX_ERROR_CHARS} characters, plus the pipeline and caret of a pipeline error. Every error the CLI
 * reports, its own or the library's, goes through here.
 */
function errorLines(e: unknown): string[] {
  const shown = oneLine(e instanceof Error ? e.message : String(e), MAX_ERROR_CHARS);
  return [`compile: error: ${shown}`, ...(e instanceof PipelineError ? e.caret.split("\n") : [])];
}

/** Run the CLI: exit status 0, or 1 after printing {@linkcode errorLines}, whatever a plugin does. */
async function runCli(argv: string[]): Promise<void> {
  let done = false;
  const fail = (e: unknown): never => {
    for (const line of errorLines(e)) console.error(line);
    done = true;
    return exitGuard.exit(1);
  };
  // deno-lint-ignore no-explicit-any -- Deno.exit is read-only in the types, assignable at run time
  (Deno as any).exit = (code?: number): never => {
    throw new CliError(`${exitGuard.during} (status ${code ?? 0})`);
  };
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    fail(event.reason);
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    fail(event.error);
  });
  globalThis.addEventListener("unload", () => {
    if (done) return;
    console.error(`compile: error: ${exitGuard.during}`);
    Deno.exitCode = 1;
  });
  try {
    await main(argv);
  } catch (e) {
    fail(e);
  }
  done = true;
}

if (import.meta.main) await runCli(Deno.args);
