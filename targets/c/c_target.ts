/**
 * The C target for microcontrollers: `<model>.h` and `<model>.c`, C99 with
 * `<stdint.h>` types, no malloc, no stdio and no timestamps, running the
 * compiled module on one sample in a caller-owned arena
 * (`int <model>_run(const float *input, float *output, void *arena)`), bit for
 * bit as the interpreter for BFP and fixed-point layers; a
 * `<model>.manifest.json`; and with `vectors=N`, golden test vectors (the
 * first N calibration inputs and the interpreter's outputs) that
 * `deno task mcu-sim OUTDIR` checks on the host and on a Cortex-M4 in qemu.
 * @module
 */
import { Interpreter } from "../../ir/interpreter.ts";
import type { Module } from "../../ir/module.ts";
import { cloneModule } from "../../ir/rewriter.ts";
import { inferShapes } from "../../ir/shape.ts";
import { isConstant } from "../../ir/graph.ts";
import { shapeSize, type Tensor } from "../../ir/tensor.ts";
import { isTensorType } from "../../ir/types.ts";
import { type Artifacts, defineTarget, type Target, type TargetContext } from "../target.ts";
import { C_ARENA_ALIGN, type CLayout, type CSparse, generateC } from "./codegen.ts";

/** Generator name and version in the files and the manifest (the package version; a test keeps it equal). */
export const C_GENERATOR = "@cnnc/compiler 0.1.0 c target";

/** Version of the manifest and of the emitted interface. */
export const C_FORMAT_VERSION = 1;

/** Options of the `c` target. */
export const cTargetOptions = {
  layout: {
    kind: "enum",
    values: ["oihw", "ohwi"],
    default: "oihw",
    doc: "Conv weight layout in flash: oihw (ONNX) or ohwi (CMSIS-NN, channels innermost)",
  },
  int8Input: {
    kind: "bool",
    default: false,
    doc: "Also emit <model>_run_int8(const int8_t *input, int32_t exponent, ...) for sensors that deliver integers",
  },
  sparse: {
    kind: "enum",
    values: ["auto", "never"],
    default: "auto",
    doc: "Float FC (Gemm/MatMul) weights: auto stores them in CSR where smaller than dense (as the report counts " +
      "sparse bytes), never keeps them dense",
  },
  vectors: {
    kind: "int",
    default: 0,
    min: 0,
    max: 1 << 20,
    doc: "Golden test vectors: the first N calibration inputs (needs --calib) and the interpreter's outputs, " +
      "for deno task mcu-sim",
  },
} as const;

const C_KEYWORDS = new Set(
  ("auto break case char const continue default do double else enum extern float for goto if inline int long " +
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while " +
    "_Bool _Complex _Imaginary main").split(" "),
);

/**
 * The C identifier made from an artifact name: characters outside
 * `[A-Za-z0-9_]` become `_`, a leading digit or a keyword gets a `m_` prefix,
 * and it is lowercased so that `<ID>` macros and `<id>_run` agree.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cIdentifier } from "./c_target.ts";
 * assert.equal(cIdentifier("vgg_slim"), "vgg_slim");
 * assert.equal(cIdentifier("ResNet-18.v2"), "resnet_18_v2");
 * assert.equal(cIdentifier("3d"), "m_3d");
 * ```
 */
export function cIdentifier(name: string): string {
  let id = name.toLowerCase().replace(/[^a-z0-9_]/g, "_");
  if (id === "" || /^[0-9]/.test(id) || C_KEYWORDS.has(id) || /^_[A-Z_]/.test(id)) id = `m_${id}`;
  return id;
}

/**
 * A copy of `module` with batch 1 and every shape inferred; other symbolic
 * dimensions are refused, naming the input.
 */
function staticCopy(module: Module): Module {
  const copy = cloneModule(module);
  for (const v of copy.graph.inputs) {
    if (isConstant(v)) continue;
    const t = v.type;
    if (t === null || !isTensorType(t) || t.shape === null) {
      throw new Error(`input "${v.name}" has no known shape: the C target needs a fixed input shape`);
    }
    const shape = t.shape.map((d, i) => (i === 0 && typeof d !== "number" ? 1 : d));
    const symbolic = shape.findIndex((d) => typeof d !== "number");
    if (symbolic >= 0) {
      throw new Error(
        `input "${v.name}" has the symbolic dimension "${shape[symbolic]}" at axis ${symbolic}: the C target needs ` +
          "a fixed shape (all but the batch axis); re-export the model with a static input shape",
      );
    }
    if (shape[0] !== 1) {
      throw new Error(`input "${v.name}" has batch ${shape[0]}: the C target runs one sample; export it with batch 1`);
    }
    v.type = { elem: t.elem, shape };
  }
  inferShapes(copy);
  return copy;
}

/** The first `n` samples of a calibration tensor as little-endian float32 bytes. */
function sampleBytes(t: Tensor, n: number, what: string): Uint8Array {
  if (t.dtype !== "f32") throw new Error(`vectors: the ${what} are ${t.dtype}, expected f32`);
  const per = shapeSize(t.shape.slice(1));
  const data = (t.data as Float32Array).slice(0, n * per);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * `c`: a C99 header and source for microcontrollers (see the module header).
 *
 * @example A model with no passes compiles to float C
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Module, Op, Value } from "../../mod.ts";
 * import { cTarget } from "./c_target.ts";
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y", { elem: "f32", shape: ["N", 4] })] })).result);
 * const files = await cTarget.emit(new Module(g), { layout: "oihw", int8Input: false, sparse: "auto", vectors: 0 },
 *   { modelName: "tiny", emit() {} });
 * assert.deepEqual([...files.keys()], ["tiny.h", "tiny.c", "tiny.manifest.json"]);
 * assert.match(new TextDecoder().decode(files.get("tiny.h")), /int tiny_run\(const float \*input, float \*output, void \*arena\);/);
 * ```
 */
export const cTarget: Target<typeof cTargetOptions> = defineTarget({
  name: "c",
  summary: "C99 header and source for MCUs (<model>.h, <model>.c): bit-exact BFP/fixed-point integer kernels, " +
    "float kernels, a static arena",
  options: cTargetOptions,
  emit(module, options, ctx: TargetContext): Artifacts {
    const identifier = cIdentifier(ctx.modelName);
    if (identifier !== ctx.modelName) {
      ctx.emit(
        "note",
        `model name "${ctx.modelName}" is not a C identifier: the C names use "${identifier}" ` +
          `(${identifier}_run, ${identifier.toUpperCase()}_ARENA_SIZE)`,
      );
    }
    const prepared = staticCopy(module);
    const provenance = [
      `Model: ${ctx.modelName}${ctx.inputSha256 === undefined ? "" : ` (input SHA-256 ${ctx.inputSha256})`}.`,
      ...(ctx.pipeline === undefined ? [] : [`Pipeline: ${ctx.pipeline === "" ? "(none)" : ctx.pipeline}.`]),
      `Weights: ${options.layout === "ohwi" ? "OHWI" : "OIHW"}.`,
    ];
    const c = generateC(prepared, {
      identifier,
      layout: options.layout as CLayout,
      int8Input: options.int8Input,
      provenance,
      generator: C_GENERATOR,
      sparse: options.sparse as CSparse,
    });
    const encoder = new TextEncoder();
    const artifacts: Artifacts = new Map([
      [`${identifier}.h`, encoder.encode(c.header)],
      [`${identifier}.c`, c.source],
    ]);

    let vectors: Record<string, unknown> | null = null;
    if (options.vectors > 0) {
      if (ctx.calibration === undefined) {
        throw new Error(`option vectors=${options.vectors} needs calibration inputs: compile with --calib FILE.npy`);
      }
      const input = module.graph.inputs.find((v) => !isConstant(v))!;
      const x = ctx.calibration[input.name] ?? Object.values(ctx.calibration)[0];
      const available = x?.shape[0] ?? 0;
      if (!(available >= 1)) throw new Error("vectors: the calibration set has no sample");
      const n = Math.min(options.vectors, available);
      if (shapeSize(x.shape.slice(1)) !== c.inputSize) {
        throw new Error(
          `vectors: calibration samples of shape [${
            x.shape.slice(1)
          }] do not match the input's ${c.inputSize} elements`,
        );
      }
      const per = shapeSize(x.shape.slice(1));
      const batch: Tensor = { ...x, shape: [n, ...x.shape.slice(1)], data: (x.data as Float32Array).slice(0, n * per) };
      const outputName = module.graph.outputs[0].name;
      const y = new Interpreter(module).run({ [input.name]: batch })[outputName];
      const base = `${identifier}.vectors`;
      artifacts.set(`${base}.input.bin`, sampleBytes(batch, n, "calibration inputs"));
      artifacts.set(`${base}.output.bin`, sampleBytes(y, n, "outputs"));
      vectors = {
        count: n,
        inputs: `${base}.input.bin`,
        outputs: `${base}.output.bin`,
        exact: c.exact,
        tolerance: 1e-5,
      };
      if (n < options.vectors) ctx.emit("warning", `vectors=${options.vectors}: the calibration set has ${n} samples`);
    }

    const memory = {
      arenaBytes: c.memory.totalBytes,
      plannedBytes: c.memory.arenaBytes,
      naiveBytes: c.memory.naiveBytes,
      lowerBound: c.memory.lowerBound,
    };
    ctx.stat?.("identifier", identifier);
    ctx.stat?.("memory", memory);
    ctx.stat?.("arena-buffers", c.buffers.map((b) => ({ ...b })));
    ctx.stat?.("weight-bytes", c.weightBytes);
    ctx.stat?.("layers", c.layerCount);
    ctx.stat?.("kernels", [...c.kernels]);
    ctx.stat?.("exact", c.exact);
    ctx.stat?.("numbers", c.numbers);
    ctx.stat?.("sparse-layers", c.sparseLayers.map((l) => ({ ...l })));
    ctx.emit(
      "note",
      `arena ${c.memory.totalBytes} B (lower bound ${c.memory.lowerBound} B, without reuse ${c.memory.naiveBytes} B), ` +
        `weights ${c.weightBytes} B${
          c.sparseLayers.length === 0 ? "" : ` (${c.sparseLayers.length} FC layer(s) in CSR)`
        }, ${c.layerCount} layer${c.layerCount === 1 ? "" : "s"}, ${c.numbers}`,
    );
    const manifest = {
      format: "cnnc-c",
      version: C_FORMAT_VERSION,
      generator: C_GENERATOR,
      model: ctx.modelName,
      identifier,
      macroPrefix: identifier.toUpperCase(),
      header: `${identifier}.h`,
      sources: [`${identifier}.c`],
      inputSize: c.inputSize,
      outputSize: c.outputSize,
      arenaBytes: c.memory.totalBytes,
      arenaAlign: C_ARENA_ALIGN,
      memory,
      weightBytes: c.weightBytes,
      weightsCrc32: `0x${c.weightsCrc32.toString(16).padStart(8, "0")}`,
      layout: options.layout,
      int8Input: options.int8Input,
      numbers: c.numbers,
      exact: c.exact,
      kernels: c.kernels,
      sparse: options.sparse,
      sparseLayers: c.sparseLayers,
      pipeline: ctx.pipeline ?? null,
      inputSha256: ctx.inputSha256 ?? null,
      vectors,
    };
    artifacts.set(`${identifier}.manifest.json`, encoder.encode(JSON.stringify(manifest, null, 2) + "\n"));
    return artifacts;
  },
});
