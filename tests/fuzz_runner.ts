/**
 * Runs fuzz cases: `compile()` cases in a worker watched for hangs, CLI cases
 * as subprocesses in scratch folders, and every emitted ONNX model through
 * onnxruntime's loader (in a subprocess, so a crash is caught) and, where
 * Debian's `python3-onnx` is installed, `onnx.checker`.
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { writeNpy } from "../data/npy.ts";
import {
  calibrationTensor,
  type FuzzCase,
  makeCase,
  messageDefect,
  SEED_INPUTS,
  seedModels,
  type SideInputs,
} from "./fuzz.ts";
import type { FuzzJob, FuzzVerdict } from "./fuzz_worker.ts";
import { mulberry32 } from "./tensor_compare.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Options of {@linkcode runFuzz}. */
export interface FuzzOptions {
  seed: number;
  cases: number;
  /** A case still running after this long is a hang (default 60 s). */
  caseTimeoutMs?: number;
  onProgress?: (done: number, total: number) => void;
}

/** What a run found. */
export interface FuzzResult {
  /** One line per defect, with the case's seed, index and mutations so it can be replayed. */
  defects: string[];
  /** Cases by outcome. */
  counts: Record<string, number>;
  summary: string;
}

/** Run `cases` compile() cases of the run `seed` in a worker, then check what they emitted. */
export async function runFuzz(options: FuzzOptions): Promise<FuzzResult> {
  const timeout = options.caseTimeoutMs ?? 60_000;
  const emittedDir = Deno.makeTempDirSync({ prefix: "fuzz_emitted_" });
  const seeds = seedModels();
  const defects: string[] = [];
  const counts: Record<string, number> = { compiled: 0, error: 0, defect: 0, hang: 0 };
  try {
    let next = 0;
    while (next < options.cases) {
      next = await runWorker({ seed: options.seed, from: next, to: options.cases, emittedDir }, timeout, (v) => {
        counts[v.outcome]++;
        if (v.outcome === "defect") {
          defects.push(`seed ${options.seed} case ${v.index} [${v.description}]: ${v.detail}`);
        }
        options.onProgress?.(v.index + 1, options.cases);
      }, (index, why) => {
        counts.hang++;
        defects.push(
          `seed ${options.seed} case ${index} [${makeCase(seeds, options.seed, index).description}]: ${why}`,
        );
      });
    }
    defects.push(...await checkEmitted(emittedDir, options.seed));
  } finally {
    Deno.removeSync(emittedDir, { recursive: true });
  }
  const summary = `fuzz seed ${options.seed}: ${options.cases} cases, ${counts.compiled} compiled, ` +
    `${counts.error} clean errors, ${counts.defect} defects, ${counts.hang} hangs`;
  return { defects, counts, summary };
}

/**
 * Run the job in a child process (`fuzz_worker.ts`, memory capped at 4 GiB) until it finishes, a case hangs or the
 * child dies (out of memory, a crash); returns the index to resume from, past the case that stopped it.
 */
async function runWorker(
  job: FuzzJob,
  timeoutMs: number,
  onVerdict: (v: FuzzVerdict) => void,
  onHang: (index: number, why: string) => void,
): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--max-old-space-size=4096", new URL("./fuzz_worker.ts", import.meta.url).pathname],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(job) + "\n"));
  await writer.close();
  let current = job.from;
  let started = performance.now();
  let hung = false;
  const watchdog = setInterval(() => {
    if (performance.now() - started > timeoutMs) {
      hung = true;
      child.kill("SIGKILL");
    }
  }, 250);
  let done = false;
  let pending = "";
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) {
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        continue; // something in compile() printed to stdout
      }
      if ("start" in message) {
        current = message.start;
        started = performance.now();
      } else if ("verdict" in message) onVerdict(message.verdict);
      else if ("done" in message) done = true;
    }
  }
  const status = await child.status;
  clearInterval(watchdog);
  if (done) return job.to;
  onHang(
    current,
    hung
      ? `still running after ${timeoutMs} ms`
      : `the process died (exit ${status.code}, signal ${status.signal}; out of memory?)`,
  );
  return current + 1;
}

/**
 * Load every emitted ONNX model in onnxruntime (in a subprocess, so a crash is caught) and, when python3-onnx is
 * present, `onnx.checker`. A defect is an emitted model refused where its input (`input.onnx` beside it) is
 * accepted: the compiler must never turn a valid model into an invalid one.
 */
async function checkEmitted(dir: string, seed: number): Promise<string[]> {
  const cases = [...Deno.readDirSync(dir)].map((e) => join(dir, e.name)).sort();
  const pairs = cases.flatMap((c) =>
    [...Deno.readDirSync(c)].filter((f) => f.name.endsWith(".onnx") && f.name !== "input.onnx")
      .map((f) => [join(c, "input.onnx"), join(c, f.name)] as const)
  );
  if (pairs.length === 0) return [];
  const files = pairs.flat();
  const caseOf = (path: string) => `seed ${seed} ${path.split("/").at(-2)}`;
  const defects: string[] = [];
  const refusedBy = (tool: string, verdicts: Map<string, string>) => {
    for (const [input, emitted] of pairs) {
      const why = verdicts.get(emitted);
      if (why !== undefined && !verdicts.has(input)) {
        defects.push(`${caseOf(emitted)}: ${tool} refuses the emitted model (not its input): ${why.slice(0, 300)}`);
      }
    }
  };
  const ortVerdicts = new Map<string, string>();
  // One loader process for all files; when a file crashes it, the rest are loaded by a fresh one.
  for (let from = 0; from < files.length;) {
    const ort = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, "--ort-load", ...files.slice(from)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const lines = new TextDecoder().decode(ort.stdout).split("\n").filter((l) => /^(ok|fail) /.test(l));
    for (const [path, why] of failures(lines)) ortVerdicts.set(path, why);
    if (ort.success) break;
    const crashed = files[from + lines.length];
    ortVerdicts.set(crashed, `onnxruntime crashed loading it (exit ${ort.code}, signal ${ort.signal})`);
    from += lines.length + 1;
  }
  refusedBy("onnxruntime", ortVerdicts);
  // Models of an IR newer than the installed checker's (Debian's onnx 1.12 knows IR 8) are left to onnxruntime.
  const script = "import onnx,sys\nfor p in sys.argv[1:]:\n" +
    "  try:\n" +
    "    if onnx.load(p, load_external_data=False).ir_version > onnx.IR_VERSION: continue\n" +
    "    onnx.checker.check_model(p, full_check=True)\n" +
    "  except Exception as e: print('fail', p + ': ' + (str(e).splitlines() or [''])[0])\n";
  try {
    const py = await new Deno.Command("/usr/bin/python3", { args: ["-c", script, ...files], stdout: "piped" })
      .output();
    if (py.success) refusedBy("onnx.checker", failures(new TextDecoder().decode(py.stdout).split("\n")));
  } catch { /* no python3 */ }
  return defects;
}

/** `fail PATH: why` lines as a map from path to why. */
function failures(lines: readonly string[]): Map<string, string> {
  return new Map(
    lines.filter((l) => l.startsWith("fail ")).map((l) => {
      const [path, ...why] = l.slice(5).split(": ");
      return [path, why.join(": ")];
    }),
  );
}

// ---------------------------------------------------------------------------
// CLI cases.

/** A way of calling the CLI that has broken it before: links, shared paths, special files. */
const CLI_SCENARIOS = [
  "plain",
  "out-is-link-to-model-folder",
  "model-is-link-into-out",
  "report-is-artifact",
  "report-is-folder",
  "report-empty",
  "model-fifo",
  "calib-fifo",
  "model-dev-zero",
  "calib",
  "out-is-file",
] as const;

/** Run `cases` CLI cases (each a subprocess in a scratch folder) and check exit, stderr and the files left. */
export async function runCliFuzz(options: { seed: number; cases: number; timeoutMs?: number }): Promise<FuzzResult> {
  const seeds = seedModels();
  const defects: string[] = [];
  const counts: Record<string, number> = { compiled: 0, error: 0, defect: 0, hang: 0 };
  for (let index = 0; index < options.cases; index++) {
    const rng = mulberry32(options.seed * 7919 + index);
    const scenario = CLI_SCENARIOS[index % CLI_SCENARIOS.length];
    // Most CLI cases compile a model that works, so the output paths are really written; the rest are mutated.
    const c = rng() < 0.7 ? cleanCase(seeds, rng) : makeCase(seeds, options.seed + 1_000_003, index);
    const found = await runCliCase(c.model, c.side, scenario, rng() < 0.5, options.timeoutMs ?? 60_000);
    counts[found.outcome]++;
    if (found.defect !== null) {
      defects.push(`cli seed ${options.seed} case ${index} ${scenario} [${c.description}]: ${found.defect}`);
    }
  }
  const summary = `cli fuzz seed ${options.seed}: ${options.cases} cases, ${counts.compiled} compiled, ` +
    `${counts.error} clean errors, ${counts.defect} defects, ${counts.hang} hangs`;
  return { defects, counts, summary };
}

/** An unmutated hand-built seed with a pipeline and target that compile it. */
function cleanCase(
  seeds: ReadonlyMap<string, Uint8Array>,
  rng: () => number,
): Pick<FuzzCase, "model" | "side" | "description"> {
  const name = ["cnn", "paddle", "mlp"][Math.floor(rng() * 3)];
  const [input, sample] = SEED_INPUTS[name];
  const passes = ["", "prune{ratio=0.3}", "fold-bn,canonicalize,dce", "bfp", "svd{energy=0.9}"][Math.floor(rng() * 5)];
  const target = ["onnx", "onnx{external-data=true,threshold=64}", "c"][Math.floor(rng() * 3)];
  const side: SideInputs = { passes, target, calibration: { dtype: "f32", shape: [4, ...sample] } };
  if (name === "paddle") side.inputShapes = { [input]: [1, ...sample] };
  return { model: seeds.get(name)!, side, description: `${name} (unmutated)` };
}

/** Every file under `dir` with its bytes (links as `-> target`), for before/after comparison. */
function snapshot(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of Deno.readDirSync(d)) {
      const p = join(d, e.name);
      if (e.isSymlink) files.set(p, `-> ${Deno.readLinkSync(p)}`);
      else if (e.isDirectory) walk(p);
      else if (e.isFile) files.set(p, createHash("sha256").update(Deno.readFileSync(p)).digest("hex"));
      else files.set(p, "(special)");
    }
  };
  walk(dir);
  return files;
}

async function runCliCase(
  model: Uint8Array,
  side: SideInputs,
  scenario: typeof CLI_SCENARIOS[number],
  withReport: boolean,
  timeoutMs: number,
): Promise<{ outcome: "compiled" | "error" | "defect" | "hang"; defect: string | null }> {
  const dir = Deno.makeTempDirSync({ prefix: "fuzz_cli_" });
  try {
    const inDir = join(dir, "in"), outDir = join(dir, "out");
    Deno.mkdirSync(inDir);
    Deno.mkdirSync(outDir);
    Deno.writeFileSync(join(outDir, "keep.txt"), new TextEncoder().encode("an earlier build's file\n"));
    Deno.writeFileSync(join(outDir, "m.onnx"), new TextEncoder().encode("an earlier build's model\n"));
    let modelPath = join(inDir, "m.onnx");
    Deno.writeFileSync(modelPath, model);
    let out = outDir;
    const extra: string[] = [];
    if (scenario === "out-is-link-to-model-folder") {
      Deno.symlinkSync(inDir, join(dir, "link"));
      out = join(dir, "link");
    } else if (scenario === "model-is-link-into-out") {
      Deno.writeFileSync(join(outDir, "m.onnx"), model);
      Deno.removeSync(modelPath);
      modelPath = join(inDir, "m.onnx");
      Deno.symlinkSync(join(outDir, "m.onnx"), modelPath);
    } else if (scenario === "model-fifo" || scenario === "calib-fifo") {
      const fifo = join(inDir, "pipe");
      await new Deno.Command("mkfifo", { args: [fifo] }).output();
      if (scenario === "model-fifo") modelPath = fifo;
      else extra.push("--calib", fifo);
    } else if (scenario === "model-dev-zero") modelPath = "/dev/zero";
    else if (scenario === "out-is-file") out = join(outDir, "keep.txt");
    if (scenario === "calib" && side.calibration) {
      Deno.writeFileSync(join(inDir, "calib.npy"), writeNpy(calibrationTensor(side.calibration)));
      extra.push("--calib", join(inDir, "calib.npy"));
    }
    if (scenario === "report-is-artifact") extra.push("--report", join(out, "m.onnx"));
    else if (scenario === "report-is-folder") extra.push("--report", inDir);
    else if (scenario === "report-empty") extra.push("--report", "");
    else if (withReport) extra.push("--report", join(outDir, "report.json"));
    const before = snapshot(dir);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        "--quiet",
        join(ROOT, "compile.ts"),
        modelPath,
        "--passes",
        side.passes,
        "--target",
        side.target,
        "--out",
        out,
        "--quiet",
        ...Object.entries(side.inputShapes ?? {}).flatMap(([name, dims]) => ["--input-shape", `${name}=${dims}`]),
        ...extra,
      ],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const result = await child.output();
    clearTimeout(timer);
    if (result.signal === "SIGKILL") return { outcome: "hang", defect: `still running after ${timeoutMs} ms` };
    const after = snapshot(dir);
    const inputsKept = [...before].filter(([p]) => !p.startsWith(outDir + "/") || p.endsWith("keep.txt"))
      .every(([p, bytes]) => after.get(p) === bytes);
    const leftovers = [...after.keys()].filter((p) => !before.has(p) && /\.tmp$|\.tmp\b/.test(p));
    if (leftovers.length > 0) return { outcome: "defect", defect: `temporary files left: ${leftovers.join(", ")}` };
    const modelKept = modelPath === "/dev/zero" || !Deno.statSync(modelPath).isFile ||
      sameBytes(Deno.readFileSync(modelPath), model);
    if (!inputsKept || !modelKept) return { outcome: "defect", defect: "an input or an unrelated file was modified" };
    const stderr = new TextDecoder().decode(result.stderr).split("\n")
      .filter((l) => l !== "");
    if (result.code === 0) return { outcome: "compiled", defect: null };
    const unchanged = before.size === after.size && [...before].every(([p, b]) => after.get(p) === b);
    if (!unchanged) return { outcome: "defect", defect: "a failed run changed the output folder" };
    if (stderr.length === 0 || !stderr[0].startsWith("compile: error: ")) {
      return {
        outcome: "defect",
        defect: `stderr does not start with one error line: ${stderr.join(" | ").slice(0, 300)}`,
      };
    }
    if (stderr.length > 3) return { outcome: "defect", defect: `${stderr.length} lines of stderr` };
    const defect = messageDefect(stderr[0]);
    return defect === null
      ? { outcome: "error", defect: null }
      : { outcome: "defect", defect: `${defect}: ${stderr[0].slice(0, 300)}` };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** `--ort-load FILE...`: create (and release) an onnxruntime session per file, printing `ok`/`fail` lines. */
async function ortLoad(files: string[]): Promise<void> {
  const { loadOnnxruntime } = await import("../driver/onnxruntime.ts");
  const ort = await loadOnnxruntime();
  for (const file of files) {
    try {
      const session = await ort.InferenceSession.create(file, { logSeverityLevel: 4 });
      await session.release();
      console.log(`ok ${file}`);
    } catch (e) {
      console.log(`fail ${file}: ${String((e as Error).message).split("\n")[0]}`);
    }
  }
}

// ---------------------------------------------------------------------------
// The long run: `deno task fuzz` (and the loader subprocess).

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seed: { type: "string", default: "1" },
      cases: { type: "string", default: "1000" },
      "cli-cases": { type: "string", default: "50" },
      "case-timeout": { type: "string", default: "60" },
      replay: { type: "string" },
    },
  });
  const seed = Number(values.seed);
  if (values.replay !== undefined) {
    // One case in this process: its model goes to fuzz-case-N.onnx, its side inputs and verdict to stdout.
    const c = makeCase(seedModels(), seed, Number(values.replay));
    Deno.writeFileSync(`fuzz-case-${c.index}.onnx`, c.model);
    console.log(JSON.stringify({ description: c.description, side: c.side }, null, 2));
    const { runCase } = await import("./fuzz_worker.ts");
    console.log(await runCase(c, Deno.makeTempDirSync({ prefix: "fuzz_replay_" })));
    return;
  }
  const result = await runFuzz({
    seed,
    cases: Number(values.cases),
    caseTimeoutMs: 1000 * Number(values["case-timeout"]),
    onProgress: (done, total) => Deno.stderr.writeSync(new TextEncoder().encode(`\r${done}/${total}`)),
  });
  console.log(`\n${result.summary}`);
  for (const d of result.defects) console.log(`DEFECT ${d}`);
  const cli = await runCliFuzz({ seed, cases: Number(values["cli-cases"]) });
  console.log(cli.summary);
  for (const d of cli.defects) console.log(`DEFECT ${d}`);
  if (result.defects.length + cli.defects.length > 0) Deno.exit(1);
}

if (import.meta.main) {
  if (Deno.args[0] === "--ort-load") await ortLoad(Deno.args.slice(1));
  else await main();
}
