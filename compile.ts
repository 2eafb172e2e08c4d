/**
 * The command line of the compiler: argument parsing, printing and writing
 * files. All compiler logic is in the library (`compile()` in driver/compile.ts).
 *
 *   deno run -P compile.ts [MODEL.onnx] --passes PIPELINE --target NAME [--out DIR] [--report FILE.json]
 *
 * @module
 */
import { basename, extname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { readNpyFile } from "./data/npy.ts";
import { compile, type CompileOptions, type CompileResult, defaultRegistry } from "./driver/compile.ts";
import type { Plugin, Registry } from "./driver/registry.ts";
import type { LayerRow } from "./driver/report.ts";
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

const USAGE = `Usage: deno run -P compile.ts [MODEL.onnx] [options]

Compiles a trained CNN: imports the ONNX model, runs a pass pipeline on the IR
and writes the target's artifacts. With no MODEL, compiles the bundled
examples/models/${basename(DEFAULT_MODEL)} with --passes ${BUNDLED.passes} --target ${BUNDLED.target}
and its calibration and test data (options given replace these defaults).

Options:
  --passes PIPELINE        passes to run, e.g. "fold-bn,canonicalize,dce" (default: none; see above)
  --target NAME            target, optionally with options: onnx{external-data=true} (default: onnx; see above)
  --out DIR                folder for the artifacts (default: ./out)
  --force                  write into a folder that holds a different image (fpga) of another build
  --report FILE.json       write the report (costs before/after, per-pass stats and times)
  --plugin FILE.ts         load a plugin module exporting \`plugin\` (repeatable)
  --input-shape NAME=DIMS  static shape of graph input NAME, e.g. x=1,3,48,192 (repeatable): its symbolic
                           dimensions take these values, so MACs are counted and targets get static shapes
  --calib FILE.npy         calibration inputs for data-aware passes
  --eval X.npy,Y.npy       measure top-1 accuracy before and after on inputs X and labels Y
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
      throw new CliError(`--input-shape takes NAME=DIMS with positive dimensions (x=1,3,48,192), found "${text}"`);
    }
    const name = text.slice(0, at);
    if (name in shapes) throw new CliError(`--input-shape gives input "${name}" twice`);
    shapes[name] = dims.map(Number);
  }
  return shapes;
}

/** Import a plugin module and take its `plugin` (or default) export. */
async function loadPlugin(path: string): Promise<Plugin> {
  let mod: Record<string, unknown>;
  try {
    mod = await import(pathToFileURL(resolve(path)).href);
  } catch (e) {
    throw new CliError(`cannot load plugin "${path}": ${String((e as Error).message ?? e).split("\n")[0]}`);
  }
  const plugin = (mod.plugin ?? mod.default) as Plugin | undefined;
  if (typeof plugin !== "object" || plugin === null || typeof plugin.name !== "string") {
    throw new CliError(`plugin "${path}" exports no plugin (expected \`export const plugin: Plugin = {...}\`)`);
  }
  return plugin;
}

function readTensorFile(path: string, what: string): Tensor {
  try {
    return readNpyFile(path);
  } catch (e) {
    throw new CliError(`${what}: ${(e as Error).message}`);
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
      registry.addPlugin(plugin, `plugin "${plugin.name}" (${args.plugins[i]})`);
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
  let modelBytes: Uint8Array;
  try {
    modelBytes = await Deno.readFile(args.model);
  } catch (e) {
    throw new CliError(`cannot read model "${args.model}": ${(e as Error).message}`);
  }
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
    importOptions: { baseDir: resolve(args.model, "..") },
    inputShapes: args.inputShapes,
    instrument: progress(args.quiet),
  };
  if (args.calib !== undefined) options.calibration = readTensorFile(args.calib, "--calib");
  if (args.eval !== undefined) {
    const files = args.eval.split(",");
    if (files.length !== 2) throw new CliError(`--eval takes X.npy,Y.npy (inputs and labels), found "${args.eval}"`);
    options.evaluation = { inputs: readTensorFile(files[0], "--eval"), labels: readTensorFile(files[1], "--eval") };
  }

  const result = await compile(modelBytes, options);
  if (!args.force) refuseForeignImages(args.out, registry.target(result.report.target.name)?.exclusive, result);
  const written = writeOutputs(args, result);
  if (!args.quiet) {
    console.log(summary(modelName, result));
    if (args.timing) console.log(timing(result));
    for (const path of written) console.log(`wrote ${path}`);
  }
}

/** Pass-by-pass progress on stderr, only when stderr is a terminal. */
function progress(quiet: boolean): CompileOptions["instrument"] {
  if (quiet || !Deno.stderr.isTerminal()) return undefined;
  const encoder = new TextEncoder();
  return {
    beforePass(step) {
      Deno.stderr.writeSync(encoder.encode(`\r\x1b[K  running ${step.pass.name}...`));
    },
    afterPass() {
      Deno.stderr.writeSync(encoder.encode("\r\x1b[K"));
    },
    afterPassFailed() {
      Deno.stderr.writeSync(encoder.encode("\r\x1b[K"));
    },
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
    throw new CliError(`--out ${out} holds ${why} (${path}); choose another folder or pass --force to replace it`);
  }
}

/**
 * Write every artifact (and the report) through a temporary file and a rename,
 * only after the whole compilation succeeded, never over the input model.
 */
function writeOutputs(args: Args, result: CompileResult): string[] {
  const targets: [string, Uint8Array][] = [...result.artifacts].map(([name, bytes]) => [join(args.out, name), bytes]);
  if (args.report !== undefined) {
    targets.push([args.report, new TextEncoder().encode(JSON.stringify(result.report, null, 2) + "\n")]);
  }
  const input = resolve(args.model);
  for (const [path] of targets) {
    if (resolve(path) === input) throw new CliError(`refusing to overwrite the input model "${args.model}"`);
  }
  const staged: [string, string][] = [];
  try {
    for (const [path, bytes] of targets) {
      Deno.mkdirSync(resolve(path, ".."), { recursive: true });
      const tmp = `${path}.${Deno.pid}.tmp`;
      staged.push([tmp, path]);
      Deno.writeFileSync(tmp, bytes);
    }
    for (const [tmp, path] of staged) Deno.renameSync(tmp, path);
  } catch (e) {
    for (const [tmp] of staged) {
      try {
        Deno.removeSync(tmp);
      } catch { /* already renamed or never written */ }
    }
    throw new CliError(`cannot write output: ${(e as Error).message}`);
  }
  return targets.map(([path]) => path);
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

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    const message = e instanceof Error ? e.message.split("\n")[0] : String(e);
    console.error(`compile: error: ${message}`);
    if (e instanceof PipelineError) console.error(e.caret);
    Deno.exit(1);
  }
}
