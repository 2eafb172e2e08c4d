/**
 * `--verify`: run every emitted artifact through its real runtime on sample inputs and compare it with the reference
 * interpreter's outputs of the compiled module: the ONNX file in onnxruntime-node, the C files built with the host gcc
 * and run by the `mcu-sim` harness, the FPGA image through its reader (every integer against the module's layer plans)
 * and, when Icarus Verilog is installed and the image has golden vectors, the processing element's RTL simulation.
 * @module
 */
import { join } from "node:path";
import { Interpreter } from "../ir/interpreter.ts";
import type { Module } from "../ir/module.ts";
import type { OpRegistry } from "../ir/op_def.ts";
import { quote } from "../ir/quote.ts";
import { shapeSize, type Tensor, tensor } from "../ir/tensor.ts";
import { db, sqnr } from "../passes/analysis/bfp_error.ts";
import { compareOutputs, mcuSim, McuSimSetupError } from "../targets/c/mcu_sim.ts";
import { type FpgaLayerRecord, type FpgaLayout, readFpgaImage } from "../targets/fpga/image.ts";
import { legalizeFpga } from "../targets/fpga/legalize.ts";
import { rtlSim, RtlSimSetupError } from "../targets/fpga/rtl_sim.ts";
import type { Artifacts } from "../targets/target.ts";
import { loadOnnxruntime, runOnnxruntime } from "./onnxruntime.ts";

/**
 * Stated tolerances, relative to the largest |output| of each sample (at least 1): a value matches when its bits equal
 * the reference's or `|got - want| <= tolerance · max(1, max |want| of the sample)`.
 * - `onnx`: a float model in onnxruntime sums in another order than the interpreter (1e-4).
 * - `onnxQuantized`: a BFP or fixed-point model in onnxruntime computes each layer in float between its fake-quant
 *   functions; a float result that crosses a rounding boundary of the next `Quantize` flips a mantissa, and the flips
 *   can cascade. Measured: the trained MNIST models (vgg_sparse, mlp) differ by at most 1e-7 (BFP) and 8e-5 (fixed)
 *   of the sample's largest output, the torchvision fixtures at 32x32 by 5e-8; issue 18 reports 37 dB output SQNR
 *   (about 1.4% rms) on ImageNet ResNet-18, hence 0.05. A model that drifts more fails and says by how much.
 * - `cFloat`: the C target's float kernels (its manifest's 1e-5); its BFP/fixed-point builds must be bit-exact, as
 *   must the FPGA image and its RTL simulation.
 */
export const VERIFY_TOLERANCES: { readonly onnx: number; readonly onnxQuantized: number; readonly cFloat: number } = {
  onnx: 1e-4,
  onnxQuantized: 0.05,
  cFloat: 1e-5,
};

/** One artifact run through one runtime and compared with the interpreter. */
export interface VerifyCheck {
  /** The runtime: `onnxruntime`, `gcc (host)`, `fpga image reader`, `iverilog (rtl)`. */
  readonly runtime: string;
  /** The artifact checked. */
  readonly artifact: string;
  /** Tool names and versions (`{ "onnxruntime-node": "1.30.0" }`). */
  readonly tools: Readonly<Record<string, string>>;
  /** Samples run (0 for the image reader, which compares integers, not outputs). */
  readonly samples: number;
  /** Values compared (output elements, or integers of the image). */
  readonly compared: number;
  /** True when the target states bit-exact results. */
  readonly exact: boolean;
  /** The stated tolerance (see {@linkcode VERIFY_TOLERANCES}); 0 when exact. */
  readonly tolerance: number;
  /** True when every value compared was bit for bit equal. */
  readonly bitExact: boolean;
  /** Largest |got - want| (null where the runtime reports only mismatches). */
  readonly maxAbsError: number | null;
  /** Largest |got - want| over the sample's largest |want| (null as above). */
  readonly maxRelError: number | null;
  /** Output SQNR of the artifact against the interpreter in dB (`"inf"` when equal; null as above). */
  readonly sqnrDb: number | "inf" | null;
  /** Values beyond the tolerance. */
  readonly mismatches: number;
  /** The first of them (`output "logits" sample 0 output 3: got …, want …`), or null. */
  readonly firstMismatch: string | null;
  /** Why the check did not run (a missing tool), or null. */
  readonly skipped: string | null;
  /** True when it ran and nothing differs beyond the tolerance, or when it was skipped. */
  readonly ok: boolean;
}

/** The `verify` entry of the report: one table per target. */
export interface VerifyReport {
  /** The target whose artifacts were checked. */
  readonly target: string;
  /**
   * Where the inputs of the ONNX and C runs came from (`calibration` or `evaluation`); the RTL simulation runs the
   * FPGA target's golden vectors, made from the first calibration samples.
   */
  readonly inputs: string;
  /** The checks, in order. */
  readonly checks: readonly VerifyCheck[];
  /** True when every check that ran passed. */
  readonly ok: boolean;
}

/** An artifact differs from the interpreter beyond its target's tolerance; {@linkcode VerifyError.report} has the table. */
export class VerifyError extends Error {
  /** The whole verification. */
  readonly report: VerifyReport;

  /** The error for the first failing check of `report`. */
  constructor(message: string, report: VerifyReport) {
    super(message);
    this.name = "VerifyError";
    this.report = report;
  }
}

/** Options of {@linkcode verifyArtifacts}. */
export interface ArtifactVerifyOptions {
  /** The target that emitted the artifacts (`onnx`, `c`, `fpga`; others are not checked). */
  readonly target: string;
  /** The target's resolved options (the FPGA target's `pe`, `simd`, `layout`). */
  readonly targetOptions?: Readonly<Record<string, unknown>>;
  /** The artifacts' base name. */
  readonly modelName: string;
  /** Inputs by graph input name, samples along axis 0. */
  readonly inputs: Readonly<Record<string, Tensor>>;
  /** What the inputs are, for the report (default `calibration`). */
  readonly inputsFrom?: string;
  /** Samples to run (default 32; fewer when the inputs hold fewer). */
  readonly samples?: number;
  /** Op definitions of the interpreter. */
  readonly registry?: OpRegistry;
  /** Run the RTL simulation when iverilog is installed (default true). */
  readonly rtl?: boolean;
  /**
   * The FPGA target's artifacts emitted again with golden vectors, for the RTL simulation when `artifacts` has none
   * (their image must be byte-identical to the one checked).
   */
  readonly withVectors?: () => Promise<Artifacts>;
}

/**
 * Run the artifacts of `module` through their runtimes and compare (module header). Never throws for a mismatch:
 * the report says; {@linkcode checkVerified} turns a failed report into an error.
 *
 * @throws {Error} One line when a runtime cannot be started for a reason other than a missing tool (no permission to
 *   run programs or load onnxruntime, an artifact missing from the set, code that does not compile).
 * @example A float ONNX model in onnxruntime
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { Module } from "../ir/module.ts";
 * import { exportOnnx } from "../ir/onnx/export.ts";
 * import { float32Tensor } from "../ir/tensor.ts";
 * import { verifyArtifacts } from "./verify.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 3] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] })).result);
 * g.outputs[0].type = { elem: "f32", shape: ["N", 3] };
 * const module = new Module(g);
 * const artifacts = new Map([["m.onnx", exportOnnx(module)]]);
 * const inputs = { x: float32Tensor([2, 3], [-1, 0, 2, 3, -4, 5]) };
 * const report = await verifyArtifacts(module, artifacts, { target: "onnx", modelName: "m", inputs });
 * assert.equal(report.ok, true);
 * assert.equal(report.checks[0].bitExact, true);
 * ```
 */
export async function verifyArtifacts(
  module: Module,
  artifacts: Artifacts,
  options: ArtifactVerifyOptions,
): Promise<VerifyReport> {
  const feeds = firstSamples(options.inputs, options.samples ?? 32);
  const samples = Math.min(...Object.values(feeds).map((t) => t.shape[0]));
  const needReference = options.target === "onnx" || options.target === "c";
  const interpreter = new Interpreter(module, { registry: options.registry });
  const reference = needReference ? concatBatches(modelBatches(module, feeds).map((f) => interpreter.run(f))) : {};
  const outputs = module.graph.outputs.map((v) => v.name);
  const checks: VerifyCheck[] = [];
  if (options.target === "onnx") {
    checks.push(await verifyOnnx(module, artifacts, options.modelName, feeds, samples, reference, outputs));
  } else if (options.target === "c") {
    checks.push(await verifyC(artifacts, feeds, samples, reference[outputs[0]]));
  } else if (options.target === "fpga") {
    checks.push(...await verifyFpga(module, artifacts, options));
  } else {
    const base = { runtime: "none", artifact: [...artifacts.keys()][0] ?? "", samples: 0, exact: false, tolerance: 0 };
    checks.push(skipped(base, `no runtime is known for target ${quote(options.target)}`));
  }
  return {
    target: options.target,
    inputs: options.inputsFrom ?? "calibration",
    checks,
    ok: checks.every((c) => c.ok),
  };
}

/**
 * Throw a {@linkcode VerifyError} naming the first failing check's artifact and first differing output.
 *
 * @example A passing report is returned as it is
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkVerified } from "./verify.ts";
 * const report = { target: "onnx", inputs: "calibration", checks: [], ok: true };
 * assert.equal(checkVerified(report), report);
 * ```
 */
export function checkVerified(report: VerifyReport): VerifyReport {
  const failed = report.checks.find((c) => !c.ok);
  if (failed === undefined) return report;
  const rule = failed.exact ? "bit-exact" : `tolerance ${failed.tolerance} relative`;
  throw new VerifyError(
    `verify: ${quote(failed.artifact)} in ${failed.runtime} differs from the interpreter (${rule}): ` +
      `${failed.mismatches} mismatch${failed.mismatches === 1 ? "" : "es"}, first at ${failed.firstMismatch}`,
    report,
  );
}

/**
 * The first `n` samples of each input (views over the data).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { float32Tensor } from "../ir/tensor.ts";
 * import { firstSamples } from "./verify.ts";
 * assert.deepEqual(firstSamples({ x: float32Tensor([3, 1], [1, 2, 3]) }, 2).x.shape, [2, 1]);
 * ```
 */
export function firstSamples(inputs: Readonly<Record<string, Tensor>>, n: number): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(inputs)) {
    const count = Math.min(n, t.shape[0]);
    const per = shapeSize(t.shape.slice(1));
    if (Array.isArray(t.data)) throw new Error(`verify: input ${quote(name)} is a string tensor`);
    out[name] = tensor(t.dtype, [count, ...t.shape.slice(1)], t.data.subarray(0, count * per) as typeof t.data);
  }
  return out;
}

/**
 * `feeds` cut into batches of the model's fixed batch size (the first input's first dimension when it is a number,
 * e.g. 1), or one batch of all samples when that dimension is symbolic.
 *
 * @example A batch-1 model run sample by sample
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { Interpreter } from "../ir/interpreter.ts";
 * import { Module } from "../ir/module.ts";
 * import { float32Tensor } from "../ir/tensor.ts";
 * import { concatBatches, modelBatches } from "./verify.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 2] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] })).result);
 * const module = new Module(g);
 * const batches = modelBatches(module, { x: float32Tensor([2, 2], [1, -1, -2, 2]) });
 * assert.equal(batches.length, 2);
 * const { y } = concatBatches(batches.map((b) => new Interpreter(module).run(b)));
 * assert.deepEqual([...y.data], [1, 0, 0, 2]);
 * ```
 */
export function modelBatches(module: Module, feeds: Readonly<Record<string, Tensor>>): Record<string, Tensor>[] {
  const type = module.graph.inputs.find((v) => v.constant === null)?.type;
  const first = type !== undefined && type !== null && "shape" in type ? type.shape?.[0] : undefined;
  const samples = Math.min(...Object.values(feeds).map((t) => t.shape[0]));
  if (typeof first !== "number" || first === samples || first < 1) return [{ ...feeds }];
  const batches: Record<string, Tensor>[] = [];
  for (let at = 0; at + first <= samples; at += first) {
    const batch: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(feeds)) {
      const per = shapeSize(t.shape.slice(1));
      const data = t.data as Float32Array;
      batch[name] = tensor(t.dtype, [first, ...t.shape.slice(1)], data.subarray(at * per, (at + first) * per));
    }
    batches.push(batch);
  }
  return batches;
}

/** The outputs of several batches joined along axis 0 (one batch is returned as it is; no string tensors). */
export function concatBatches(parts: readonly Record<string, Tensor>[]): Record<string, Tensor> {
  if (parts.length === 1) return parts[0];
  const out: Record<string, Tensor> = {};
  for (const name of Object.keys(parts[0])) {
    const pieces = parts.map((p) => p[name].data as Float32Array);
    // The same typed array as the batches' (f32 scores, i64 indices, ...).
    const Typed = pieces[0].constructor as Float32ArrayConstructor;
    const data = new Typed(pieces.reduce((a, p) => a + p.length, 0));
    pieces.reduce((offset, p) => (data.set(p, offset), offset + p.length), 0);
    const rows = parts.reduce((a, p) => a + p[name].shape[0], 0);
    out[name] = tensor(parts[0][name].dtype, [rows, ...parts[0][name].shape.slice(1)], data);
  }
  return out;
}

/** The float32 bits of `t` (f32 only). */
function floatBits(t: Tensor, what: string): Uint32Array {
  if (!(t.data instanceof Float32Array)) throw new Error(`verify: ${what} is ${t.dtype}, expected f32`);
  return new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
}

/** A dB figure for the report: two decimals, `"inf"` when exact. */
export function dbFigure(v: number): number | "inf" {
  return db(v) as number | "inf";
}

/** Largest absolute and sample-relative error and SQNR of `got` against `want`, `[samples, size]`. */
function errorStats(
  got: Float32Array,
  want: Float32Array,
  size: number,
): { maxAbsError: number; maxRelError: number; sqnrDb: number | "inf" } {
  let maxAbs = 0, maxRel = 0;
  for (let s = 0; s * size < want.length; s++) {
    let scale = 0, worst = 0;
    for (let j = s * size; j < (s + 1) * size; j++) {
      scale = Math.max(scale, Math.abs(want[j]));
      if (got[j] !== want[j] && !(Number.isNaN(got[j]) && Number.isNaN(want[j]))) {
        worst = Math.max(worst, Math.abs(got[j] - want[j]));
      }
    }
    maxAbs = Math.max(maxAbs, worst);
    maxRel = Math.max(maxRel, worst === 0 ? 0 : scale === 0 ? Infinity : worst / scale);
  }
  return { maxAbsError: maxAbs, maxRelError: maxRel, sqnrDb: dbFigure(sqnr(want, got)) };
}

/** Compare every output by name; the first mismatch names its output. */
function compareNamed(
  got: Readonly<Record<string, Tensor>>,
  want: Readonly<Record<string, Tensor>>,
  outputs: readonly string[],
  samples: number,
  rule: { exact: boolean; tolerance: number },
): Pick<
  VerifyCheck,
  "compared" | "bitExact" | "maxAbsError" | "maxRelError" | "sqnrDb" | "mismatches" | "firstMismatch"
> {
  let compared = 0, mismatches = 0, bitExact = true, maxAbs = 0, maxRel = 0;
  let first: string | null = null;
  const allGot: number[] = [], allWant: number[] = [];
  for (const name of outputs) {
    const w = want[name], g = got[name];
    if (g === undefined) {
      mismatches++;
      first ??= `output ${quote(name)}: missing from the runtime's outputs`;
      continue;
    }
    if (g.shape.join() !== w.shape.join()) {
      mismatches++;
      first ??= `output ${quote(name)}: shape [${g.shape}], want [${w.shape}]`;
      continue;
    }
    if (!(w.data instanceof Float32Array) || !(g.data instanceof Float32Array)) {
      // Integer, boolean or string outputs (an argmax, a mask) must be equal.
      const gd = g.data as ArrayLike<unknown>, wd = w.data as ArrayLike<unknown>;
      compared += wd.length;
      for (let i = 0; i < wd.length; i++) {
        if (g.dtype === w.dtype && gd[i] === wd[i]) continue;
        mismatches++, bitExact = false;
        first ??= `output ${quote(name)} element ${i}: got ${g.dtype} ${gd[i]}, want ${w.dtype} ${wd[i]}`;
      }
      continue;
    }
    const size = shapeSize(w.shape) / Math.max(1, samples);
    const gb = floatBits(g, `output ${quote(name)}`), wb = floatBits(w, `output ${quote(name)}`);
    const cmp = compareOutputs(gb, wb, size, rule);
    compared += wb.length;
    mismatches += cmp.mismatches;
    if (cmp.first !== null) first ??= `output ${quote(name)} ${cmp.first}`;
    if (gb.some((b, i) => b !== wb[i])) bitExact = false;
    const stats = errorStats(g.data as Float32Array, w.data as Float32Array, size);
    maxAbs = Math.max(maxAbs, stats.maxAbsError);
    maxRel = Math.max(maxRel, stats.maxRelError);
    for (let i = 0; i < wb.length; i++) {
      allGot.push((g.data as Float32Array)[i]), allWant.push((w.data as Float32Array)[i]);
    }
  }
  return {
    compared,
    bitExact,
    maxAbsError: maxAbs,
    maxRelError: maxRel,
    sqnrDb: dbFigure(sqnr(allWant, allGot)),
    mismatches,
    firstMismatch: first,
  };
}

function artifact(artifacts: Artifacts, name: string, target: string): Uint8Array {
  const bytes = artifacts.get(name);
  if (bytes === undefined) throw new Error(`verify: the ${target} target emitted no ${quote(name)}`);
  return bytes;
}

/** True when the module computes in BFP or fixed point (onnxruntime runs it through fake-quant functions). */
function isQuantized(module: Module): boolean {
  return module.graph.ops.some((op) => op.domain === "ai.bfp");
}

async function verifyOnnx(
  module: Module,
  artifacts: Artifacts,
  modelName: string,
  feeds: Readonly<Record<string, Tensor>>,
  samples: number,
  reference: Readonly<Record<string, Tensor>>,
  outputs: readonly string[],
): Promise<VerifyCheck> {
  const name = `${modelName}.onnx`;
  const bytes = artifact(artifacts, name, "onnx");
  requirePermission("ffi", "load onnxruntime");
  const ort = await loadOnnxruntime();
  const version = ort.env.versions?.node ?? ort.env.versions?.common ?? "unknown";
  let got: Record<string, Tensor>;
  if ([...artifacts.keys()].some((k) => k !== name)) {
    // External data: onnxruntime reads it beside the model file.
    const dir = await writeTemp(artifacts, "cnnc-verify-onnx-");
    try {
      got = await runFor(name, () => runBatches(module, feeds, (f) => runOnnxruntime(join(dir, name), f)));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  } else {
    got = await runFor(name, () => runBatches(module, feeds, (f) => runOnnxruntime(bytes, f)));
  }
  const quantized = isQuantized(module);
  const rule = { exact: false, tolerance: quantized ? VERIFY_TOLERANCES.onnxQuantized : VERIFY_TOLERANCES.onnx };
  const cmp = compareNamed(got, reference, outputs, samples, rule);
  return {
    runtime: "onnxruntime",
    artifact: name,
    tools: { "onnxruntime-node": version },
    samples,
    ...rule,
    ...cmp,
    skipped: null,
    ok: cmp.mismatches === 0,
  };
}

async function runBatches(
  module: Module,
  feeds: Readonly<Record<string, Tensor>>,
  run: (feeds: Record<string, Tensor>) => Promise<Record<string, Tensor>>,
): Promise<Record<string, Tensor>> {
  const parts: Record<string, Tensor>[] = [];
  for (const batch of modelBatches(module, feeds)) parts.push(await run(batch));
  return concatBatches(parts);
}

async function runFor<T>(name: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    throw new Error(
      `verify: onnxruntime cannot run ${quote(name)}: ${String((e as Error).message ?? e).split("\n")[0]}`,
    );
  }
}

async function verifyC(
  artifacts: Artifacts,
  feeds: Readonly<Record<string, Tensor>>,
  samples: number,
  reference: Tensor,
): Promise<VerifyCheck> {
  const manifestName = [...artifacts.keys()].find((k) => k.endsWith(".manifest.json"));
  if (manifestName === undefined) throw new Error("verify: the c target emitted no <model>.manifest.json");
  const manifest = JSON.parse(new TextDecoder().decode(artifacts.get(manifestName)));
  const input = Object.values(feeds)[0];
  const exact = manifest.exact === true;
  const tolerance = exact ? 0 : VERIFY_TOLERANCES.cFloat;
  const gcc = await toolVersion("gcc", ["--version"]);
  const base = {
    runtime: "gcc (host)",
    artifact: String(manifest.sources?.[0] ?? manifestName),
    samples,
    exact,
    tolerance,
  };
  if (gcc === null) return skipped(base, "gcc not found (Debian package gcc)");
  const dir = await writeTemp(artifacts, "cnnc-verify-c-");
  try {
    // The harness reads the vectors the manifest names: ours, in this temporary copy only.
    const inputs = "verify.input.bin", outputs = "verify.output.bin";
    await Deno.writeFile(join(dir, inputs), littleEndian(input));
    await Deno.writeFile(join(dir, outputs), littleEndian(reference));
    manifest.vectors = { count: samples, inputs, outputs, exact, tolerance };
    await Deno.writeTextFile(join(dir, manifestName), JSON.stringify(manifest));
    let result;
    try {
      result = await mcuSim(dir, { cortexM4: false });
    } catch (e) {
      if (e instanceof McuSimSetupError) throw new Error(`verify: ${e.message}`);
      throw e;
    }
    const host = result.host;
    const size = shapeSize(reference.shape) / samples;
    const got = host.outputs == null
      ? null
      : new Float32Array(host.outputs.buffer, host.outputs.byteOffset, host.outputs.length);
    const stats = got === null ? null : errorStats(got, reference.data as Float32Array, size);
    return {
      ...base,
      tools: { gcc },
      compared: got === null ? 0 : got.length,
      bitExact: got !== null && floatBits(reference, "the reference").every((b, i) => b === host.outputs![i]),
      maxAbsError: stats?.maxAbsError ?? null,
      maxRelError: stats?.maxRelError ?? null,
      sqnrDb: stats?.sqnrDb ?? null,
      mismatches: host.error !== null ? 1 : host.mismatches,
      firstMismatch: host.error !== null ? `the harness: ${host.error}` : host.firstMismatch,
      skipped: null,
      ok: host.ok,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function verifyFpga(
  module: Module,
  artifacts: Artifacts,
  options: ArtifactVerifyOptions,
): Promise<VerifyCheck[]> {
  const name = `${options.modelName}.fpga.bin`;
  const bytes = artifact(artifacts, name, "fpga");
  const base = { artifact: name, samples: 0, exact: true, tolerance: 0 };
  const checks: VerifyCheck[] = [];
  let image;
  try {
    image = readFpgaImage(bytes);
  } catch (e) {
    checks.push(failed({ ...base, runtime: "fpga image reader", tools: {} }, (e as Error).message));
    return checks;
  }
  const o = options.targetOptions ?? {};
  const layout = (o.layout ?? image.layout) as FpgaLayout;
  const expected = legalizeFpga(module, layout, Number(o.pe ?? 4), Number(o.simd ?? 8)).layers;
  const cmp = compareImage(image.layers, expected);
  checks.push({
    ...base,
    runtime: "fpga image reader",
    tools: { "fpga image": `format version ${image.version}` },
    compared: cmp.compared,
    bitExact: cmp.first === null,
    maxAbsError: null,
    maxRelError: null,
    sqnrDb: null,
    mismatches: cmp.mismatches,
    firstMismatch: cmp.first,
    skipped: null,
    ok: cmp.first === null,
  });
  if (options.rtl === false) return checks;
  const rtlBase = { ...base, runtime: "iverilog (rtl)" };
  const iverilog = await toolVersion("iverilog", ["-V"]);
  const hasVectors = (a: Artifacts): boolean => [...a.keys()].some((k) => k.endsWith("params.vh"));
  let simulated = artifacts;
  if (iverilog !== null && !hasVectors(artifacts) && options.withVectors !== undefined) {
    try {
      simulated = await options.withVectors();
    } catch (e) {
      checks.push(skipped({ ...rtlBase, tools: { iverilog } }, `no golden vectors: ${(e as Error).message}`));
      return checks;
    }
    const again = simulated.get(name);
    if (again === undefined || again.length !== bytes.length || again.some((b, i) => b !== bytes[i])) {
      checks.push(failed({ ...rtlBase, tools: { iverilog } }, "the image emitted with vectors differs from the image"));
      return checks;
    }
  }
  if (iverilog === null) checks.push(skipped(rtlBase, "iverilog not found (Debian package iverilog)"));
  else if (!hasVectors(simulated)) {
    checks.push(skipped(rtlBase, "no golden vectors in the image's folder (emit with vectors=N and calibration)"));
  } else {
    const dir = await writeTemp(simulated, "cnnc-verify-fpga-");
    try {
      const sim = await rtlSim(dir);
      const bad = sim.layers.find((l) => !l.ok);
      const compared = sim.layers.reduce((a, l) => a + l.outputs, 0);
      const mismatches = sim.layers.reduce((a, l) => a + Math.max(0, l.mismatches), 0);
      checks.push({
        ...rtlBase,
        samples: simulated === artifacts ? Number(o.vectors ?? 0) : 1,
        tools: { iverilog },
        compared,
        bitExact: sim.ok,
        maxAbsError: null,
        maxRelError: null,
        sqnrDb: null,
        mismatches: bad !== undefined && mismatches === 0 ? 1 : mismatches,
        firstMismatch: bad === undefined
          ? null
          : `layer ${bad.index} ${quote(bad.name)}: ${bad.log.split("\n").find((l) => l.trim() !== "") ?? "failed"}`,
        skipped: null,
        ok: sim.ok,
      });
    } catch (e) {
      if (e instanceof RtlSimSetupError) checks.push(skipped(rtlBase, e.message));
      else throw e;
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  return checks;
}

/** Every descriptor field and integer of the image's layers against the module's legalized layers. */
function compareImage(
  got: readonly FpgaLayerRecord[],
  want: readonly FpgaLayerRecord[],
): { compared: number; mismatches: number; first: string | null } {
  let compared = 0, mismatches = 0;
  let first: string | null = null;
  const differ = (where: string, a: ArrayLike<number>, b: ArrayLike<number>): void => {
    compared += b.length;
    let n = Math.abs(a.length - b.length);
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      if (a[i] === b[i]) continue;
      n++;
      first ??= `${where}[${i}]: got ${a[i]}, want ${b[i]}`;
    }
    if (a.length !== b.length) first ??= `${where}: ${a.length} values, want ${b.length}`;
    mismatches += n;
  };
  if (got.length !== want.length) {
    return { compared: 0, mismatches: 1, first: `the image has ${got.length} layers, the module ${want.length}` };
  }
  want.forEach((w, i) => {
    const g = got[i];
    const at = `layer ${i} ${quote(w.name)}`;
    if (g.name !== w.name || g.kind !== w.kind) {
      mismatches++;
      first ??= `${at}: the image has ${g.kind} ${quote(g.name)}`;
      return;
    }
    for (const [key, values] of Object.entries(w.descriptor)) {
      differ(`${at} descriptor ${key}`, g.descriptor[key as keyof typeof g.descriptor] ?? [], values ?? []);
    }
    if (w.weights !== null) {
      differ(`${at} mantissas`, g.weights?.mantissas ?? [], w.weights.mantissas);
      differ(`${at} exponents`, g.weights?.exponents ?? [], w.weights.exponents);
    }
    if (w.bias !== null) {
      differ(`${at} bias significands`, g.bias?.significands ?? [], w.bias.significands);
      differ(`${at} bias exponents`, g.bias?.exponents ?? [], w.bias.exponents);
      differ(`${at} bias units`, g.bias?.units ?? [], w.bias.units);
    }
  });
  return { compared, mismatches, first };
}

type CheckBase = Pick<VerifyCheck, "runtime" | "artifact" | "samples" | "exact" | "tolerance"> & {
  tools?: Readonly<Record<string, string>>;
};

function skipped(base: CheckBase, why: string): VerifyCheck {
  return {
    tools: {},
    ...base,
    compared: 0,
    bitExact: false,
    maxAbsError: null,
    maxRelError: null,
    sqnrDb: null,
    mismatches: 0,
    firstMismatch: null,
    skipped: why,
    ok: true,
  };
}

function failed(base: CheckBase, why: string): VerifyCheck {
  return { ...skipped(base, why), skipped: null, mismatches: 1, firstMismatch: why, ok: false };
}

function requirePermission(name: "run" | "ffi", what: string): void {
  if (Deno.permissions.querySync({ name }).state !== "granted") {
    throw new Error(`verify: needs permission to ${what} (--allow-${name}; run the CLI with -A)`);
  }
}

/** The first line of `cmd args`, or null when the tool is not installed. */
async function toolVersion(cmd: string, args: string[]): Promise<string | null> {
  requirePermission("run", `run ${cmd}`);
  try {
    const { stdout, stderr } = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
    return text.split("\n")[0].trim();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** Write the artifacts into a new temporary folder (subfolders included) and return it. */
async function writeTemp(artifacts: Artifacts, prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  for (const [name, bytes] of artifacts) {
    const path = join(dir, name);
    const slash = name.lastIndexOf("/");
    if (slash > 0) await Deno.mkdir(join(dir, name.slice(0, slash)), { recursive: true });
    await Deno.writeFile(path, bytes);
  }
  return dir;
}

/** An f32 tensor's bytes, little-endian. */
function littleEndian(t: Tensor): Uint8Array {
  const bits = floatBits(t, "the vectors");
  const bytes = new Uint8Array(bits.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < bits.length; i++) view.setUint32(4 * i, bits[i], true);
  return bytes;
}

/** The output SQNR of the model after one pass, against the original model (`--verify-each`-style tracking). */
export interface PassSqnr {
  /** The pass's name. */
  readonly pass: string;
  /** Its canonical step. */
  readonly pipeline: string;
  /** SQNR of every graph output against the original model's, in dB (`"inf"`: unchanged; null: did not run). */
  readonly sqnrDb: number | "inf" | null;
  /** Calibration samples run. */
  readonly samples: number;
}

/** Samples the per-pass SQNR runs on. */
const SQNR_SAMPLES = 32;

/**
 * Pass instrumentation measuring, after every pass, the output SQNR of the module against its outputs before the
 * pipeline on the first {@linkcode SQNR_SAMPLES} calibration samples (all graph outputs together, in order).
 *
 * @example A pass that changes nothing keeps infinite SQNR
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../ir/graph.ts";
 * import { Module } from "../ir/module.ts";
 * import { float32Tensor } from "../ir/tensor.ts";
 * import { passSqnrTracker } from "./verify.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 2] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] })).result);
 * const module = new Module(g);
 * const tracker = passSqnrTracker(module, { x: float32Tensor([1, 2], [1, -1]) });
 * tracker.afterPass({ name: "dce", pipeline: "dce" }, module);
 * assert.deepEqual(tracker.records, [{ pass: "dce", pipeline: "dce", sqnrDb: "inf", samples: 1 }]);
 * ```
 */
export function passSqnrTracker(
  module: Module,
  calibration: Readonly<Record<string, Tensor>> | null,
  registry?: OpRegistry,
): { records: PassSqnr[]; afterPass(record: { name: string; pipeline: string }, module: Module): void } {
  const records: PassSqnr[] = [];
  const feeds = calibration === null ? null : firstSamples(calibration, SQNR_SAMPLES);
  const samples = feeds === null ? 0 : Math.min(...Object.values(feeds).map((t) => t.shape[0]));
  const outputsOf = (m: Module): number[] | null => {
    if (feeds === null) return null;
    try {
      const interpreter = new Interpreter(m, { registry });
      const values = concatBatches(modelBatches(m, feeds).map((f) => interpreter.run(f)));
      return m.graph.outputs.flatMap((v) => {
        const data = values[v.name]?.data;
        return data instanceof Float32Array || data instanceof Float64Array ? [...data] : [];
      });
    } catch {
      return null; // A module the interpreter cannot run mid-pipeline gets no figure, not a failed compilation.
    }
  };
  const reference = outputsOf(module);
  return {
    records,
    afterPass(record, after) {
      const got = reference === null ? null : outputsOf(after);
      records.push({
        pass: record.name,
        pipeline: record.pipeline,
        sqnrDb: got === null || got.length !== reference!.length ? null : dbFigure(sqnr(reference!, got)),
        samples,
      });
    },
  };
}
