/**
 * Runs fuzz cases through `compile()` in a child process, so the runner can
 * stop a case that hangs or survive one that crashes: prints `{ start }` before
 * each case and `{ verdict }` after, one JSON line each.
 * @module
 */
import { join } from "node:path";
import { compile, type CompileOptions } from "../driver/compile.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { calibrationTensor, type FuzzCase, makeCase, messageDefect, seedModels } from "./fuzz.ts";

/** What the runner asks of the worker: cases `from` (inclusive) to `to` (exclusive) of the run `seed`. */
export interface FuzzJob {
  seed: number;
  from: number;
  to: number;
  /** Folder where each compiled case's ONNX artifacts are written, for the loader checks after the run. */
  emittedDir: string;
}

/** The outcome of one case. */
export interface FuzzVerdict {
  index: number;
  outcome: "compiled" | "error" | "defect";
  /** The error message, or the defect. */
  detail: string;
  description: string;
}

const ENGINE_ERRORS = new Set(["TypeError", "RangeError", "ReferenceError", "SyntaxError", "EvalError", "URIError"]);

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Run one case through `compile()` and judge what came back; compiled ONNX artifacts go under `emittedDir`. */
export async function runCase(c: FuzzCase, emittedDir: string): Promise<FuzzVerdict> {
  const verdict = (outcome: FuzzVerdict["outcome"], detail: string): FuzzVerdict => ({
    index: c.index,
    outcome,
    detail,
    description: c.description,
  });
  const input = Uint8Array.from(c.model); // a copy even if the bytes are a Node Buffer
  const options: CompileOptions = { passes: c.side.passes, target: c.side.target, modelName: "m" };
  if (c.side.inputShapes) options.inputShapes = c.side.inputShapes;
  if (c.side.calibration) options.calibration = calibrationTensor(c.side.calibration);
  let result;
  try {
    result = await compile(c.model, options);
  } catch (e) {
    if (!sameBytes(input, c.model)) return verdict("defect", "compile() modified the input bytes");
    if (!(e instanceof Error)) return verdict("defect", `threw a non-Error: ${String(e).slice(0, 200)}`);
    if (ENGINE_ERRORS.has(e.name)) return verdict("defect", `${e.name}: ${e.message.slice(0, 300)}`);
    const defect = messageDefect(e.message);
    return defect === null ? verdict("error", e.message) : verdict("defect", `${defect}: ${e.message.slice(0, 300)}`);
  }
  if (!sameBytes(input, c.model)) return verdict("defect", "compile() modified the input bytes");
  if (!(result.artifacts instanceof Map) || result.artifacts.size === 0) return verdict("defect", "no artifacts");
  for (const [name, bytes] of result.artifacts) {
    if (!(bytes instanceof Uint8Array)) return verdict("defect", `artifact ${name} is not bytes`);
    if (name.split("/").some((p) => p === "" || p === "." || p === "..") || name.includes("\0")) {
      return verdict("defect", `artifact name ${JSON.stringify(name)} leaves the output folder`);
    }
  }
  try {
    JSON.stringify(result.report);
  } catch (e) {
    return verdict("defect", `report is not JSON: ${(e as Error).message}`);
  }
  const onnxFiles = [...result.artifacts.keys()].filter((n) => n.endsWith(".onnx"));
  if (result.report.target.name === "onnx") {
    const dir = join(emittedDir, `case-${c.index}`);
    Deno.mkdirSync(dir, { recursive: true });
    for (const [name, bytes] of result.artifacts) Deno.writeFileSync(join(dir, name), bytes);
    Deno.writeFileSync(join(dir, "input.onnx"), c.model);
    for (const name of onnxFiles) {
      try {
        importOnnx(result.artifacts.get(name)!, { baseDir: dir });
      } catch (e) {
        return verdict("defect", `emitted ${name} does not re-import: ${(e as Error).message.slice(0, 300)}`);
      }
    }
  }
  if (c.index % 10 === 0) {
    const again = await compile(c.model, options);
    for (const [name, bytes] of result.artifacts) {
      const other = again.artifacts.get(name);
      if (other === undefined || !sameBytes(bytes, other)) {
        return verdict("defect", `artifact ${name} not deterministic`);
      }
    }
  }
  return verdict("compiled", [...result.artifacts.keys()].join(","));
}

/** Read the job from standard input, then print one JSON line per event on standard output. */
async function main(): Promise<void> {
  const job: FuzzJob = JSON.parse(await new Response(Deno.stdin.readable).text());
  const seeds = seedModels();
  const say = (message: unknown) => Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(message) + "\n"));
  for (let index = job.from; index < job.to; index++) {
    say({ start: index });
    say({ verdict: await runCase(makeCase(seeds, job.seed, index), job.emittedDir) });
  }
  say({ done: true });
}

if (import.meta.main) await main();
