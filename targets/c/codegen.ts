/**
 * C code generation: a module with static shapes (batch 1) becomes one C99
 * translation unit and its header. Each op becomes a call of a runtime
 * kernel (`runtime.ts`) with a `static const` parameter struct; constants
 * become `const` arrays (flash); every intermediate tensor gets an offset in
 * the caller's arena from the static memory plan (`memory_plan.ts`). Shape
 * ops (Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout) are aliases
 * and cost no memory or time; elementwise functions run in place when their
 * input dies there. A float Gemm/MatMul whose weights hold zeros (after
 * `fc-corr`, say) stores them in CSR where that is smaller than dense
 * (`csrBytes` of `ir/cost.ts`, the report's rule; option `sparse=never`
 * keeps them dense) and runs `cnnc_dense_csr_f32`.
 * @module
 */
import { BFP_DOMAIN, bfpLayerGeometry, bfpLayerPlan, bfpMantissaStorage, bfpQuantizePlan } from "../../ir/bfp/plan.ts";
import { bfpStorage, exponentRange } from "../../ir/bfp/format.ts";
import { activationView } from "../../ir/bfp/quantize.ts";
import { isConstant, isDefaultDomain, type Op, type Value } from "../../ir/graph.ts";
import type { Module } from "../../ir/module.ts";
import { convGeometry, poolGeometry } from "../../ir/ops/nn.ts";
import { as2d, type WindowGeometry } from "../../ir/ops/conv_kernels.ts";
import { csrBytes } from "../../ir/cost.ts";
import { shapeSize, type Tensor, toFloat64 } from "../../ir/tensor.ts";
import { isTensorType } from "../../ir/types.ts";
import { TextBytes } from "../text_bytes.ts";
import { float32Parts } from "../fpga/image.ts";
import { type MemoryPlan, planMemory } from "./memory_plan.ts";
import { runtimeFor } from "./runtime.ts";
import { crc32 as zlibCrc32 } from "node:zlib";

/** Order of a Conv's weights in flash: ONNX's OIHW, or OHWI (CMSIS-NN: channels innermost). */
export type CLayout = "oihw" | "ohwi";

/** What the generator needs besides the module. */
export interface CodegenOptions {
  /** The C identifier of the model (`vgg_slim` gives `vgg_slim_run`, `VGG_SLIM_ARENA_SIZE`). */
  readonly identifier: string;
  /** Weight layout of Conv layers. */
  readonly layout: CLayout;
  /** Also emit `<id>_run_int8(const int8_t *input, int32_t exponent, float *output, void *arena)`. */
  readonly int8Input: boolean;
  /** Lines for the files' opening comment (provenance). */
  readonly provenance: readonly string[];
  /** Generator name and version (`GENERATOR` macro). */
  readonly generator: string;
  /**
   * `auto`: a float Gemm/MatMul's weights are stored in CSR where that is
   * smaller than dense (`csrBytes` of `ir/cost.ts`, as the report counts);
   * `never`: always dense. Default `auto`.
   */
  readonly sparse?: CSparse;
}

/** Whether float FC weights may be stored in CSR (`auto`: where smaller) or never. */
export type CSparse = "auto" | "never";

/** A float FC layer whose weights the C stores in CSR. */
export interface CSparseLayer {
  /** The op's name. */
  readonly layer: string;
  /** Weight rows (outputs, O) as stored. */
  readonly rows: number;
  /** Weight columns (inputs, K) as stored. */
  readonly cols: number;
  /** Weights that are not zero (either sign): the values stored. */
  readonly nonzeros: number;
  /** Bytes of the dense float array it replaces. */
  readonly denseBytes: number;
  /** Bytes of values, column indices and row pointers. */
  readonly csrBytes: number;
  /** Bits of a column index (8, 16 or 32: `uint8_t`, `uint16_t`, `uint32_t`). */
  readonly indexBits: number;
  /** Bits of a row pointer (8, 16 or 32). */
  readonly pointerBits: number;
}

/** The generated files and the figures the report states. */
export interface GeneratedC {
  /** Text of `<id>.h`. */
  readonly header: string;
  /** `<id>.c` as UTF-8 bytes (the kernels it uses included): a large model's source outgrows a JavaScript string. */
  readonly source: Uint8Array;
  /** Elements of the input (batch 1). */
  readonly inputSize: number;
  /** Elements of the output (batch 1). */
  readonly outputSize: number;
  /** Arena bytes, with the naive sum and the lower bound of the plan (the int8 input buffer excluded). */
  readonly memory: MemoryPlan & { readonly totalBytes: number };
  /** Every arena tensor as planned: IR value name, steps it lives over, bytes and offset (for the report's timeline). */
  readonly buffers: readonly { tensor: string; start: number; end: number; bytes: number; offset: number }[];
  /** Bytes of the constant arrays (weights, exponents, biases, tables), and their CRC-32 in emission order. */
  readonly weightBytes: number;
  /** zlib CRC-32 of the constant arrays' bytes in emission order (`<ID>_WEIGHTS_CRC32`). */
  readonly weightsCrc32: number;
  /** Ops that became kernel calls (aliases excluded). */
  readonly layerCount: number;
  /** Kernels used. */
  readonly kernels: readonly string[];
  /** True when every op is reproduced bit for bit (integer layers and exactly ordered float glue). */
  readonly exact: boolean;
  /** One-line description of the numbers (`bfp e5m8 nearest-even`, `float32`). */
  readonly numbers: string;
  /** FC layers whose weights are stored in CSR (`cnnc_dense_csr_f32`), in graph order. */
  readonly sparseLayers: readonly CSparseLayer[];
}

/** Arena and weight alignment in bytes. */
export const C_ARENA_ALIGN = 16;

/** Ops whose C kernels equal the interpreter's results bit for bit. */
const EXACT_OPS = new Set([
  "Relu",
  "LeakyRelu",
  "Clip",
  "Abs",
  "Neg",
  "Sqrt",
  "MaxPool",
  "AveragePool",
  "GlobalAveragePool",
  "GlobalMaxPool",
  "BatchNormalization",
  "Add",
  "Sub",
  "Mul",
  "Div",
  "Max",
  "Min",
  "Concat",
  "Flatten",
  "Reshape",
  "Squeeze",
  "Unsqueeze",
  "Identity",
  "Dropout",
]);

const ALIAS_OPS = new Set(["Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"]);

const UNARY: Readonly<Record<string, string>> = {
  Relu: "CNNC_RELU",
  LeakyRelu: "CNNC_LEAKY_RELU",
  Clip: "CNNC_CLIP",
  Sigmoid: "CNNC_SIGMOID",
  Tanh: "CNNC_TANH",
  Abs: "CNNC_ABS",
  Neg: "CNNC_NEG",
  Sqrt: "CNNC_SQRT",
  Exp: "CNNC_EXP",
  HardSigmoid: "CNNC_HARD_SIGMOID",
  HardSwish: "CNNC_HARD_SWISH",
};

const BINARY: Readonly<Record<string, string>> = {
  Add: "CNNC_ADD",
  Sub: "CNNC_SUB",
  Mul: "CNNC_MUL",
  Div: "CNNC_DIV",
  Max: "CNNC_MAX",
  Min: "CNNC_MIN",
};

const ROUNDING_MACRO: Readonly<Record<string, string>> = {
  "nearest-even": "CNNC_NEAREST_EVEN",
  "toward-zero": "CNNC_TOWARD_ZERO",
  "toward-positive": "CNNC_TOWARD_POSITIVE",
  "toward-negative": "CNNC_TOWARD_NEGATIVE",
};

const SUPPORTED = [
  "ai.bfp Quantize/Conv/Gemm",
  "Conv",
  "Gemm",
  "MatMul",
  "BatchNormalization",
  "MaxPool",
  "AveragePool",
  "GlobalAveragePool",
  "GlobalMaxPool",
  "Concat",
  "Softmax",
  ...Object.keys(BINARY),
  ...Object.keys(UNARY),
  ...ALIAS_OPS,
];

type CType = "float" | "int8_t" | "int16_t";

const C_BYTES: Record<CType, number> = { float: 4, int8_t: 1, int16_t: 2 };

/** An op's C: statements that name tensors through `ref`, filled in once the arena is planned. */
interface Step {
  readonly op: Op;
  readonly reads: readonly Value[];
  readonly writes: readonly Value[];
  readonly code: (ref: (v: Value) => string) => string[];
}

function opError(op: Op, message: string): Error {
  return new Error(`op "${op.name}" (${op.qualifiedType}): ${message}`);
}

/** The static shape of a value (after shape inference at batch 1). */
function shapeOf(v: Value): number[] {
  const t = v.type;
  if (t === null || !isTensorType(t) || t.shape === null || t.shape.some((d) => typeof d !== "number")) {
    throw new Error(`value "${v.name}" has no static shape for the C target`);
  }
  return t.shape as number[];
}

function ctypeOf(v: Value): CType {
  const t = v.type;
  if (t === null || !isTensorType(t)) throw new Error(`value "${v.name}" is not a tensor`);
  const elem = t.elem;
  if (elem === "f32") return "float";
  if (elem === "i8") return "int8_t";
  const storage = bfpMantissaStorage(t);
  if (storage !== null) return storage === "i8" ? "int8_t" : "int16_t";
  throw new Error(`value "${v.name}" has element type ${JSON.stringify(elem)}, which the C target does not hold`);
}

/** A constant's tensor: an initializer, or the result of a `Constant` op. */
function constantOf(v: Value | null): Tensor | null {
  if (v === null) return null;
  if (isConstant(v)) return v.constant;
  const p = v.producer;
  if (p !== null && p.type === "Constant" && isDefaultDomain(p.domain)) return p.tensor("value") ?? null;
  return null;
}

/** A C float literal that reads back as exactly `v` (a float32). */
function floatLiteral(v: number): string {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? "(0.0f / 0.0f)" : v > 0 ? "HUGE_VALF" : "(-HUGE_VALF)";
  if (Object.is(v, -0)) return "-0.0f";
  const s = String(Math.fround(v));
  return `${/[.e]/.test(s) ? s : `${s}.0`}f`;
}

/** A C double literal that reads back as exactly `v`. */
function doubleLiteral(v: number): string {
  if (!Number.isFinite(v)) throw new Error(`the C target cannot hold the constant ${v}`);
  if (Object.is(v, -0)) return "-0.0";
  const s = String(v);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

function int64Literal(v: number): string {
  return `INT64_C(${v})`;
}

/** Array initializer lines, `perLine` numbers each (`    1, 2, 3,`), written into `out`. */
function writeInitializer(
  out: TextBytes,
  values: ArrayLike<number>,
  format: ((v: number) => string) | null,
  perLine: number,
): void {
  for (let i = 0; i < values.length; i += perLine) {
    out.text(i === 0 ? "    " : "\n    ");
    const end = Math.min(values.length, i + perLine);
    for (let j = i; j < end; j++) {
      if (format === null) out.int(values[j]);
      else out.text(format(values[j]));
      out.text(j + 1 < end ? ", " : ",");
    }
  }
}

/** Bytes of a constant array as stored (little-endian), for the weight CRC. */
function storedBytes(type: string, values: ArrayLike<number>): Uint8Array {
  const n = values.length;
  const view = type === "double"
    ? new Float64Array(n)
    : type === "float"
    ? new Float32Array(n)
    : type === "int32_t"
    ? new Int32Array(n)
    : type === "int16_t"
    ? new Int16Array(n)
    : type === "uint32_t"
    ? new Uint32Array(n)
    : type === "uint16_t"
    ? new Uint16Array(n)
    : type === "uint8_t"
    ? new Uint8Array(n)
    : new Int8Array(n);
  for (let i = 0; i < n; i++) view[i] = values[i];
  return new Uint8Array(view.buffer);
}

/**
 * Generate the C of a module whose values all have static shapes with batch 1
 * (the C target prepares it).
 *
 * @throws {Error} One line naming the first op the C target has no kernel for, and why.
 */
export function generateC(module: Module, options: CodegenOptions): GeneratedC {
  const graph = module.graph;
  const id = options.identifier, ID = id.toUpperCase();
  const inputs = graph.inputs.filter((v) => !isConstant(v));
  if (inputs.length !== 1 || graph.outputs.length !== 1) {
    throw new Error(
      `the C target runs models with one input and one output; this one has ${inputs.length} input(s) ` +
        `(${inputs.map((v) => v.name).join(", ")}) and ${graph.outputs.length} output(s) ` +
        `(${graph.outputs.map((v) => v.name).join(", ")})`,
    );
  }
  const input = inputs[0], output = graph.outputs[0];
  if (ctypeOf(input) !== "float" || ctypeOf(output) !== "float") {
    throw new Error(`the C target needs a float32 input and output ("${input.name}", "${output.name}")`);
  }

  // Constant arrays, emitted once each, as bytes (a large model's arrays are hundreds of MB of text).
  const arrays = new TextBytes();
  let crc = 0;
  let weightBytes = 0;
  const arrayNames = new Set<string>();
  const constantArrays = new Map<Value, string>();
  const cName = (base: string): string => {
    let name = base.replace(/[^A-Za-z0-9_]/g, "_").replace(/^([0-9])/, "_$1").slice(0, 60);
    name = `w_${name}`;
    let n = name, k = 1;
    while (arrayNames.has(n)) n = `${name}_${k++}`;
    arrayNames.add(n);
    return n;
  };
  const addArray = (base: string, type: string, values: ArrayLike<number>, comment: string): string => {
    const name = cName(base);
    const format = type === "float" ? floatLiteral : type === "double" ? doubleLiteral : null;
    const perLine = type === "float" || type === "double" ? 6 : 16;
    const bytes = storedBytes(type, values);
    crc = zlibCrc32(bytes, crc);
    weightBytes += bytes.length;
    if (arrays.length > 0) arrays.text("\n\n");
    arrays.text(`/* ${comment} */\nstatic const ${type} ${name}[${Math.max(1, values.length)}] ${ID}_ALIGNED = {\n`);
    if (values.length === 0) arrays.text("    0,");
    else writeInitializer(arrays, values, format, perLine);
    arrays.text("\n};");
    return name;
  };
  const floatConstant = (v: Value, t: Tensor): string => {
    let name = constantArrays.get(v);
    if (name === undefined) {
      if (t.dtype !== "f32") throw new Error(`constant "${v.name}" is ${t.dtype}; the C target's float ops need f32`);
      name = addArray(v.name, "float", t.data as Float32Array, `${v.name}: f32[${t.shape.join(", ")}]`);
      constantArrays.set(v, name);
    }
    return name;
  };
  const params: string[] = [];
  const paramNames = new Set<string>();
  const addParams = (base: string, type: string, fields: string): string => {
    let name = `p_${base.replace(/[^A-Za-z0-9_]/g, "_").slice(0, 60)}`;
    for (let k = 1; paramNames.has(name); k++) name = `p_${base.replace(/[^A-Za-z0-9_]/g, "_").slice(0, 60)}_${k}`;
    paramNames.add(name);
    params.push(`static const ${type} ${name} = {${fields}};`);
    return name;
  };

  const kernels = new Set<string>(["status"]);
  const sparseLayers: CSparseLayer[] = [];
  const steps: Step[] = [];
  const alias = new Map<Value, Value>();
  const inPlace = new Set<Op>();
  let exact = true;
  const numbers = new Set<string>();

  const floatOperand = (op: Op, i: number): Value => {
    const v = op.operands[i];
    if (v === null || v === undefined) throw opError(op, `operand ${i} is missing`);
    if (ctypeOf(v) !== "float") throw opError(op, `operand ${i} ("${v.name}") is not float32`);
    return v;
  };
  /** A reference to an operand: its constant array, or its tensor in the arena (filled in later). */
  const operandRef = (op: Op, i: number, ref: (v: Value) => string): string => {
    const v = floatOperand(op, i);
    const t = constantOf(v);
    return t !== null ? floatConstant(v, t) : ref(v);
  };
  const dynamicReads = (op: Op, indices: readonly number[]): Value[] =>
    indices.map((i) => op.operands[i]).filter((v): v is Value =>
      v !== null && v !== undefined && constantOf(v) === null
    );

  for (const op of graph.ops) {
    if ([...op.attributes.values()].some((a) => a.kind === "graph" || a.kind === "graphs")) {
      throw opError(op, "ops with subgraphs (If, Loop, Scan) have no C kernel");
    }
    const type = op.type;
    if (op.domain === BFP_DOMAIN) {
      lowerBfp(op);
      continue;
    }
    if (!isDefaultDomain(op.domain)) throw unsupported(op);
    if (type === "Constant") continue;
    if (!EXACT_OPS.has(type)) exact = false;
    if (ALIAS_OPS.has(type)) {
      const x = op.operands[0];
      if (x === null || x === undefined) throw opError(op, "operand 0 is missing");
      if (op.results.slice(1).some((r) => r.uses.length > 0 || graph.outputs.includes(r))) {
        throw opError(op, "only its first result can be used in the C target");
      }
      alias.set(op.results[0], x);
      continue;
    }
    if (type in UNARY) lowerUnary(op);
    else if (type in BINARY) lowerBinary(op);
    else if (type === "Conv") lowerConv(op);
    else if (type === "Gemm" || type === "MatMul") lowerDense(op);
    else if (type === "MaxPool" || type === "AveragePool") lowerPool(op);
    else if (type === "GlobalAveragePool" || type === "GlobalMaxPool") lowerGlobalPool(op);
    else if (type === "BatchNormalization") lowerBatchNorm(op);
    else if (type === "Concat") lowerConcat(op);
    else if (type === "Softmax") lowerSoftmax(op);
    else throw unsupported(op);
  }
  if (numbers.size === 0) numbers.add("float32");

  // Storage: alias roots, in-place runs, lifetimes, the arena plan.
  const rootOf = (v: Value): Value => {
    let r = v;
    while (alias.has(r)) r = alias.get(r)!;
    return r;
  };
  const isArena = (v: Value): boolean => v !== input && constantOf(v) === null;
  const lastRead = new Map<Value, number>();
  steps.forEach((s, i) => {
    for (const v of s.reads) lastRead.set(rootOf(v), i);
  });
  const outputRoot = (): Value => rootOf(output);
  steps.forEach((s, i) => {
    if (!inPlace.has(s.op)) return;
    const x = rootOf(s.reads[0]);
    if (isArena(x) && lastRead.get(x) === i && x !== outputRoot() && C_BYTES[ctypeOf(x)] === 4) {
      const y = s.writes[0];
      alias.set(y, x);
      let end = i;
      steps.forEach((t, j) => {
        if (t.reads.some((r) => rootOf(r) === x)) end = Math.max(end, j);
      });
      lastRead.set(x, end);
    }
  });
  // The tensor the graph output views is computed straight into the caller's output buffer.
  const direct = isArena(outputRoot()) && ctypeOf(outputRoot()) === "float" ? outputRoot() : null;
  const requests = new Map<Value, { start: number; end: number; bytes: number }>();
  steps.forEach((s, i) => {
    for (const v of s.writes) {
      const r = rootOf(v);
      if (!isArena(r) || r === direct) continue;
      if (!requests.has(r)) requests.set(r, { start: i, end: i, bytes: shapeSize(shapeOf(r)) * C_BYTES[ctypeOf(r)] });
    }
  });
  for (const [r, req] of requests) {
    req.end = Math.max(req.end, lastRead.get(r) ?? req.start);
  }
  const names = new Map<Value, string>();
  [...requests.keys()].forEach((v, i) => names.set(v, `t${i}`));
  const plan = planMemory(
    [...requests].map(([v, r]) => ({ name: names.get(v)!, bytes: r.bytes, start: r.start, end: r.end })),
    C_ARENA_ALIGN,
  );
  const inputSize = shapeSize(shapeOf(input)), outputSize = shapeSize(shapeOf(output));
  const int8Offset = plan.arenaBytes;
  const totalBytes = plan.arenaBytes +
    (options.int8Input ? Math.ceil((inputSize * 4) / C_ARENA_ALIGN) * C_ARENA_ALIGN : 0);

  const ref = (v: Value): string => {
    const r = rootOf(v);
    const t = constantOf(r);
    const ctype = ctypeOf(v);
    if (r === input) return "input";
    if (r === direct) return "output";
    if (t !== null) return floatConstant(r, t);
    const offset = plan.offsets.get(names.get(r)!);
    if (offset === undefined) throw new Error(`C target: tensor "${r.name}" has no place in the arena`);
    return `((${ctype} *)(arena + ${offset}))`;
  };

  // The body.
  const body: string[] = [];
  for (const s of steps) {
    body.push(`    /* ${s.op.name.replace(/\*\//g, "* /")}: ${s.op.qualifiedType} */`);
    for (const line of s.code(ref)) body.push(`    ${line}`);
  }
  if (direct === null) body.push(`    memcpy(output, ${ref(output)}, ${outputSize} * sizeof(float));`);

  const runtime = runtimeFor(kernels);
  crc >>>= 0;
  const comment = (lines: readonly string[]): string =>
    `/*\n${lines.map((l) => ` * ${l.replace(/\*\//g, "* /")}`.trimEnd()).join("\n")}\n */`;
  const banner = [
    `Generated by ${options.generator}: do not edit.`,
    ...options.provenance,
    `Input "${input.name}": float32 [${shapeOf(input).join(", ")}]; output "${output.name}": float32 [${
      shapeOf(output).join(", ")
    }].`,
    `Numbers: ${[...numbers].join("; ")}${exact ? " (bit-exact with the compiler's interpreter)" : ""}.`,
  ];
  const header = [
    comment([`${id}.h`, ...banner]),
    `#ifndef ${ID}_H`,
    `#define ${ID}_H`,
    "",
    "#include <stdint.h>",
    "",
    "#ifdef __cplusplus",
    'extern "C" {',
    "#endif",
    "",
    `#define ${ID}_FORMAT_VERSION 1`,
    `#define ${ID}_GENERATOR "${options.generator}"`,
    `#define ${ID}_NUMBERS "${[...numbers].join("; ")}"`,
    `#define ${ID}_INPUT_SIZE ${inputSize}`,
    `#define ${ID}_OUTPUT_SIZE ${outputSize}`,
    `#define ${ID}_INPUT_BYTES (${ID}_INPUT_SIZE * 4)`,
    `#define ${ID}_OUTPUT_BYTES (${ID}_OUTPUT_SIZE * 4)`,
    `#define ${ID}_ARENA_SIZE ${totalBytes}`,
    `#define ${ID}_ARENA_ALIGN ${C_ARENA_ALIGN}`,
    `#define ${ID}_WEIGHT_BYTES ${weightBytes}`,
    `#define ${ID}_WEIGHTS_CRC32 0x${crc.toString(16).padStart(8, "0")}u`,
    `#define ${ID}_LAYER_COUNT ${steps.length}`,
    "",
    "/* Status codes of the run functions. */",
    `#define ${ID}_OK 0`,
    `#define ${ID}_ERR_NULL (-1)      /* a null pointer */`,
    `#define ${ID}_ERR_ALIGN (-2)     /* the arena is not ${ID}_ARENA_ALIGN-aligned */`,
    `#define ${ID}_ERR_NONFINITE (-3) /* a NaN or infinity reached a block-floating-point layer */`,
    `#define ${ID}_ERR_EXPONENT (-4)  /* the int8 input's exponent is outside [-126, 127] */`,
    "",
    "/* Placement of the constant arrays: define before compiling the .c to override. */",
    `#ifndef ${ID}_WEIGHT_ALIGN`,
    `#define ${ID}_WEIGHT_ALIGN ${C_ARENA_ALIGN}`,
    "#endif",
    `#ifndef ${ID}_WEIGHT_SECTION`,
    `#define ${ID}_WEIGHT_SECTION /* e.g. __attribute__((section(".extflash"))) */`,
    "#endif",
    "",
    "/*",
    ` * Run the model on one sample: input holds ${ID}_INPUT_SIZE floats, output receives ${ID}_OUTPUT_SIZE;`,
    ` * arena is ${ID}_ARENA_SIZE bytes of scratch aligned to ${ID}_ARENA_ALIGN, owned by the caller (not null,`,
    " * even when the size is 0). The three buffers must not overlap.",
    ` * Returns ${ID}_OK (0) or a negative status.`,
    " */",
    `int ${id}_run(const float *input, float *output, void *arena);`,
    ...(options.int8Input
      ? [
        "",
        `/* The same on integer samples: input[i] * 2^exponent is the model's input element i. */`,
        `int ${id}_run_int8(const int8_t *input, int32_t exponent, float *output, void *arena);`,
      ]
      : []),
    "",
    "#ifdef __cplusplus",
    "}",
    "#endif",
    "",
    `#endif /* ${ID}_H */`,
    "",
  ].join("\n");

  const opening = [
    comment([`${id}.c`, ...banner]),
    `#include "${id}.h"`,
    "",
    "#include <stddef.h>",
    "#include <stdint.h>",
    "#include <string.h>",
    ...(runtime.math ? ["#include <math.h>"] : []),
    "",
    "#if defined(__GNUC__) || defined(__clang__)",
    `#define ${ID}_ALIGNED __attribute__((aligned(${ID}_WEIGHT_ALIGN))) ${ID}_WEIGHT_SECTION`,
    "#else",
    `#define ${ID}_ALIGNED ${ID}_WEIGHT_SECTION`,
    "#endif",
    "",
    "/* ---- runtime ---- */",
    "",
    runtime.text,
    "",
    "/* ---- constants ---- */",
    "",
    "",
  ].join("\n");
  const closing = [
    "",
    "",
    "/* ---- layers ---- */",
    "",
    params.join("\n"),
    "",
    "/* ---- the network ---- */",
    "",
    `static int ${id}_body(const float *input, float *output, uint8_t *arena)`,
    "{",
    ...(steps.some((s) => s.op.domain === BFP_DOMAIN && s.op.type === "Quantize") ? ["    int status;"] : []),
    ...(plan.arenaBytes === 0 ? ["    (void)arena;"] : []),
    ...body,
    "    return CNNC_OK;",
    "}",
    "",
    `int ${id}_run(const float *input, float *output, void *arena)`,
    "{",
    "    if (input == NULL || output == NULL || arena == NULL) return CNNC_ERR_NULL;",
    `    if (((uintptr_t)arena & (${ID}_ARENA_ALIGN - 1)) != 0) return CNNC_ERR_ALIGN;`,
    `    return ${id}_body(input, output, (uint8_t *)arena);`,
    "}",
    ...(options.int8Input
      ? [
        "",
        `int ${id}_run_int8(const int8_t *input, int32_t exponent, float *output, void *arena)`,
        "{",
        `    float *x = (float *)((uint8_t *)arena + ${int8Offset});`,
        "    uint32_t bits;",
        "    float scale;",
        "    int32_t i;",
        "    if (input == NULL || output == NULL || arena == NULL) return CNNC_ERR_NULL;",
        `    if (((uintptr_t)arena & (${ID}_ARENA_ALIGN - 1)) != 0) return CNNC_ERR_ALIGN;`,
        `    if (exponent < -126 || exponent > 127) return ${ID}_ERR_EXPONENT;`,
        "    bits = (uint32_t)(exponent + 127) << 23;",
        "    memcpy(&scale, &bits, sizeof scale);",
        `    for (i = 0; i < ${inputSize}; i++) x[i] = (float)input[i] * scale;`,
        `    return ${id}_body(x, output, (uint8_t *)arena);`,
        "}",
      ]
      : []),
    "",
  ].join("\n");
  const source = new TextBytes().text(opening).append(arrays).text(closing).bytes();

  return {
    header,
    source,
    inputSize,
    outputSize,
    memory: { ...plan, totalBytes },
    buffers: [...requests].map(([v, r]) => ({ tensor: v.name, ...r, offset: plan.offsets.get(names.get(v)!)! })),
    weightBytes,
    weightsCrc32: crc,
    layerCount: steps.length,
    kernels: [...kernels].sort(),
    exact,
    numbers: [...numbers].join("; "),
    sparseLayers,
  };

  // ---- lowering of each op family -------------------------------------------------------------

  function unsupported(op: Op): Error {
    return new Error(
      `unsupported op ${op.qualifiedType} "${op.name}" in the C target (kernels: ${SUPPORTED.join(", ")})`,
    );
  }

  function lowerBfp(op: Op): void {
    if (op.type === "Quantize") {
      const q = bfpQuantizePlan(op);
      const { format } = q;
      if (format.rounding === "stochastic") {
        throw opError(op, "stochastic rounding has no bit-exact C form; use another rounding in bfp/fixed");
      }
      const x = op.operands[0];
      if (x === null || x === undefined || ctypeOf(x) !== "float") throw opError(op, "its input must be float32");
      // [samples, C, ...spatial] around the channel axis: one sample at batch 1, the rows of a batched Gemm's input.
      const view = activationView(shapeOf(x), q.blocking);
      const samples = view[0], channels = view[1] ?? 1, spatial = shapeSize(view.slice(2));
      const group = q.blocking.group, cg = channels / group;
      const block = q.blocking.block === 0 ? 0 : Math.min(q.blocking.block, cg);
      const nb = block === 0 ? 1 : Math.ceil(cg / block);
      const { min, max } = exponentRange(format);
      const storage = bfpStorage(format.mantissaBits);
      kernels.add(`bfp_quantize_${storage}`);
      numbers.add(
        q.staticExponent === null
          ? `bfp e${format.exponentBits}m${format.mantissaBits} ${format.rounding}`
          : `fixed ${format.mantissaBits}-bit ${format.rounding}`,
      );
      const p = addParams(
        op.name,
        "cnnc_quantize_t",
        [
          channels,
          spatial,
          group,
          block,
          nb,
          format.mantissaBits,
          min,
          max,
          format.exponentRule === "never-clamp" ? 1 : 0,
          ROUNDING_MACRO[format.rounding],
          q.staticExponent === null ? 0 : 1,
          q.staticExponent ?? 0,
        ].join(", "),
      );
      const [xm, xe] = op.results;
      const perSample = channels * spatial, exponentsPerSample = block === 0 ? group : group * nb * spatial;
      steps.push({
        op,
        reads: [x],
        writes: [xm, xe],
        code: (ref) =>
          samples === 1
            ? [
              `status = cnnc_quantize_${storage}(${ref(x)}, ${ref(xm)}, ${ref(xe)}, &${p});`,
              "if (status != CNNC_OK) return status;",
            ]
            : [
              `for (int32_t r = 0; r < ${samples}; r++) {`,
              `    status = cnnc_quantize_${storage}(${ref(x)} + r * ${perSample}, ${ref(xm)} + r * ${perSample}, ` +
              `${ref(xe)} + r * ${exponentsPerSample}, &${p});`,
              "    if (status != CNNC_OK) return status;",
              "}",
            ],
      });
      return;
    }
    if (op.type !== "Conv" && op.type !== "Gemm") throw unsupported(op);
    const plan = bfpLayerPlan(op);
    const { format, weights } = plan;
    if (format.rounding === "stochastic") {
      throw opError(op, "stochastic rounding has no bit-exact C form; use another rounding in bfp/fixed");
    }
    const [xmV, xeV] = [op.operands[0]!, op.operands[1]!];
    const xShape = shapeOf(xmV);
    const { geometry } = bfpLayerGeometry(plan, xShape);
    const g = planar(op, geometry);
    const O = plan.outChannels, cg = plan.inChannels / plan.group;
    const block = weights.block === 0 ? 0 : Math.min(weights.block, cg);
    const nb = block === 0 ? 1 : Math.ceil(cg / block);
    const [kh, kw] = [g.kernel[0], g.kernel[1]];
    const storage = format.mantissaBits <= 8 ? "i8" : "i16";
    const mtype = storage === "i8" ? "int8_t" : "int16_t";
    kernels.add(`bfp_layer_${storage}`);
    // Mantissas [O, Cg, KH, KW] (OIHW) or [O, KH, KW, Cg]; exponents [O], or [O, nb, KH, KW] / [O, KH, KW, nb].
    const ohwi = options.layout === "ohwi" && plan.kind === "conv";
    const wm = ohwi ? toOhwi(weights.mantissas, O, cg, kh * kw) : weights.mantissas;
    const we = block !== 0 && ohwi ? toOhwi(weights.exponents, O, nb, kh * kw) : weights.exponents;
    const wStrides = ohwi ? [kh * kw * cg, 1, kw * cg, cg] : [cg * kh * kw, kh * kw, kw, 1];
    const eStrides = block === 0
      ? [1, 0, 0, 0]
      : ohwi
      ? [kh * kw * nb, 1, kw * nb, nb]
      : [nb * kh * kw, kh * kw, kw, 1];
    const layout = ohwi ? "OHWI" : plan.kind === "conv" ? "OIHW" : "[O, K]";
    const wmName = addArray(`${op.name}_mantissas`, mtype, wm, `${op.name}: mantissas ${layout} [${weights.shape}]`);
    const weName = addArray(`${op.name}_exponents`, "int8_t", we, `${op.name}: block exponents`);
    let biasFields = "NULL, NULL, NULL";
    if (plan.bias !== null) {
      const sig = new Int32Array(O), exp = new Int16Array(O);
      for (let o = 0; o < O; o++) [sig[o], exp[o]] = float32Parts(plan.bias.values[o]);
      biasFields = [
        addArray(`${op.name}_bias_significands`, "int32_t", sig, `${op.name}: bias = significand * 2^exponent`),
        addArray(`${op.name}_bias_exponents`, "int16_t", exp, `${op.name}: bias exponents`),
        addArray(`${op.name}_bias_units`, "int32_t", plan.bias.units, `${op.name}: bias units u_b`),
      ].join(", ");
    }
    const { min } = exponentRange(format);
    const p = addParams(
      op.name,
      "cnnc_layer_t",
      windowFields(g, plan.inChannels, O, [
        plan.group,
        block,
        nb,
        block === 0 && plan.input.blocking.group > 1 ? 1 : 0,
        format.mantissaBits,
        min,
        plan.accumulator.guardBits,
        ROUNDING_MACRO[format.rounding],
        int64Literal(plan.accumulator.min),
        int64Literal(plan.accumulator.max),
        ...wStrides,
        ...eStrides,
        biasFields,
      ]),
    );
    const y = op.results[0];
    // A Gemm's rows (a batched MatMul's leading dimensions) are samples: the one-sample kernel once per row.
    const rows = plan.kind === "gemm" ? shapeSize(xShape.slice(0, -1)) : 1;
    const exponentsPerRow = block === 0 ? plan.input.blocking.group : nb;
    steps.push({
      op,
      reads: [xmV, xeV],
      writes: [y],
      code: (ref) =>
        rows === 1 ? [`cnnc_layer_${storage}(${ref(xmV)}, ${ref(xeV)}, ${wmName}, ${weName}, ${ref(y)}, &${p});`] : [
          `for (int32_t r = 0; r < ${rows}; r++) {`,
          `    cnnc_layer_${storage}(${ref(xmV)} + r * ${plan.inChannels}, ${ref(xeV)} + r * ${exponentsPerRow}, ` +
          `${wmName}, ${weName}, ${ref(y)} + r * ${O}, &${p});`,
          "}",
        ],
    });
  }

  function lowerUnary(op: Op): void {
    const x = floatOperand(op, 0);
    const y = op.results[0];
    let alpha = 0, beta = 0;
    if (op.type === "LeakyRelu") alpha = op.float("alpha", 0.01);
    if (op.type === "HardSigmoid") (alpha = op.float("alpha", 0.2)), (beta = op.float("beta", 0.5));
    if (op.type === "Clip") {
      const bound = (i: number, attr: string, fallback: number): number => {
        const v = op.operands[i];
        if (v !== null && v !== undefined) {
          const t = constantOf(v);
          if (t === null) throw opError(op, `its ${attr} bound must be a constant`);
          return toFloat64(t)[0];
        }
        return op.float(attr, fallback);
      };
      alpha = bound(1, "min", -Infinity);
      beta = bound(2, "max", Infinity);
    }
    kernels.add("unary");
    inPlace.add(op);
    const n = shapeSize(shapeOf(y));
    steps.push({
      op,
      reads: [x],
      writes: [y],
      code: (ref) => [
        `cnnc_unary(${ref(x)}, ${ref(y)}, ${n}, ${UNARY[op.type]}, ${floatLiteral(alpha)}, ${floatLiteral(beta)});`,
      ],
    });
  }

  function lowerBinary(op: Op): void {
    if (op.operands.length !== 2) throw opError(op, `the C target takes 2 operands, found ${op.operands.length}`);
    const y = op.results[0];
    const shape = shapeOf(y);
    const strides = [0, 1].map((i) => {
      const s = shapeOf(floatOperand(op, i));
      const aligned = [...new Array<number>(shape.length - s.length).fill(1), ...s];
      const own: number[] = new Array(shape.length).fill(0);
      let stride = 1;
      for (let d = shape.length - 1; d >= 0; d--) {
        own[d] = aligned[d] === 1 && shape[d] !== 1 ? 0 : stride;
        stride *= aligned[d];
      }
      return own;
    });
    if (shape.length > 8) throw opError(op, `rank ${shape.length} is above the C kernel's 8`);
    const rank = Math.max(1, shape.length);
    const dims = shape.length === 0 ? [1] : shape;
    const [sa, sb] = shape.length === 0 ? [[0], [0]] : strides;
    const base = op.name;
    const shapeName = addArray(`${base}_shape`, "int32_t", dims, `${base}: output shape`);
    const aName = addArray(`${base}_a_strides`, "int32_t", sa, `${base}: strides of A`);
    const bName = addArray(`${base}_b_strides`, "int32_t", sb, `${base}: strides of B`);
    kernels.add("binary");
    steps.push({
      op,
      reads: dynamicReads(op, [0, 1]),
      writes: [y],
      code: (ref) => [
        `cnnc_binary(${operandRef(op, 0, ref)}, ${operandRef(op, 1, ref)}, ${ref(y)}, ${BINARY[op.type]}, ${rank}, ` +
        `${shapeName}, ${aName}, ${bName});`,
      ],
    });
  }

  /** The fields cnnc_window_t and cnnc_layer_t share (sizes, kernel, strides, dilations, leading pads), then `extra`. */
  function windowFields(
    g: WindowGeometry,
    channels: number,
    outChannels: number,
    extra: readonly (number | string)[],
  ): string {
    return [
      channels,
      g.inShape[0],
      g.inShape[1],
      outChannels,
      g.outShape[0],
      g.outShape[1],
      g.kernel[0],
      g.kernel[1],
      g.strides[0],
      g.strides[1],
      g.dilations[0],
      g.dilations[1],
      g.padsBegin[0],
      g.padsBegin[1],
      ...extra,
    ].join(", ");
  }

  function lowerConv(op: Op): void {
    const x = floatOperand(op, 0);
    const w = constantOf(op.operands[1] ?? null);
    if (w === null || w.dtype !== "f32") throw opError(op, "its weights must be a float32 constant");
    const bias = op.operands[2] ? constantOf(op.operands[2]) : null;
    if (op.operands[2] && (bias === null || bias.dtype !== "f32")) {
      throw opError(op, "its bias must be a float32 constant");
    }
    const xShape = shapeOf(x);
    const g = planar(op, convGeometry(op, xShape, w.shape));
    const O = w.shape[0], cg = w.shape[1], group = op.int("group", 1);
    const [kh, kw] = [g.kernel[0], g.kernel[1]];
    const ohwi = options.layout === "ohwi";
    const wv = w.data as Float32Array;
    const stored = ohwi ? toOhwi(wv, O, cg, kh * kw) : wv;
    const wStrides = ohwi ? [kh * kw * cg, 1, kw * cg, cg] : [cg * kh * kw, kh * kw, kw, 1];
    const wName = addArray(
      `${op.name}_weights`,
      "float",
      stored,
      `${op.name}: weights ${ohwi ? "OHWI" : "OIHW"} [${w.shape}]`,
    );
    const bName = bias === null
      ? "NULL"
      : addArray(`${op.name}_bias`, "float", bias.data as Float32Array, `${op.name}: bias`);
    kernels.add("conv_f32");
    const p = addParams(op.name, "cnnc_window_t", windowFields(g, xShape[1], O, [group, ...wStrides]));
    const y = op.results[0];
    steps.push({
      op,
      reads: [x],
      writes: [y],
      code: (ref) => [`cnnc_conv_f32(${ref(x)}, ${wName}, ${bName}, ${ref(y)}, &${p});`],
    });
  }

  function lowerDense(op: Op): void {
    const x = floatOperand(op, 0);
    const b = constantOf(op.operands[1] ?? null);
    if (b === null || b.dtype !== "f32" || b.shape.length !== 2) {
      throw opError(op, "its second operand must be a 2-D float32 constant (the weights)");
    }
    const xShape = shapeOf(x);
    const transB = op.type === "Gemm" && op.flag("transB");
    if (op.type === "Gemm" && op.flag("transA")) {
      throw opError(op, "transA = 1 has no C kernel; run canonicalize");
    }
    const [K, O] = transB ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
    const rows = shapeSize(xShape) / K;
    if (xShape[xShape.length - 1] !== K) throw opError(op, `input [${xShape}] does not match weights [${b.shape}]`);
    const alpha = op.type === "Gemm" ? op.float("alpha", 1) : 1;
    const beta = op.type === "Gemm" ? op.float("beta", 1) : 1;
    const bv = b.data as Float32Array;
    const weights = new Float32Array(O * K);
    for (let o = 0; o < O; o++) {
      for (let k = 0; k < K; k++) weights[o * K + k] = alpha * (transB ? bv[o * K + k] : bv[k * O + o]);
    }
    let biasName = "NULL";
    const c = op.type === "Gemm" ? op.operands[2] ?? null : null;
    if (c !== null) {
      const t = constantOf(c);
      if (t === null || t.dtype !== "f32" || !(t.data.length === O || t.data.length === 1)) {
        throw opError(op, `its C operand must be a float32 constant of ${O} (or 1) values`);
      }
      const cv = toFloat64(t);
      const bias = Float32Array.from({ length: O }, (_, o) => beta * cv[cv.length === 1 ? 0 : o]);
      biasName = addArray(`${op.name}_bias`, "float", bias, `${op.name}: bias`);
    }
    const y = op.results[0];
    let nonzeros = 0;
    for (let i = 0; i < weights.length; i++) if (weights[i] !== 0) nonzeros++;
    const csr = csrBytes(O, K, nonzeros, 32);
    if ((options.sparse ?? "auto") === "auto" && csr.bytes < weights.length * 4) {
      const values = new Float32Array(nonzeros), columns = new Uint32Array(nonzeros);
      const rowPtr = new Uint32Array(O + 1);
      let n = 0;
      for (let o = 0; o < O; o++) {
        for (let k = 0; k < K; k++) {
          if (weights[o * K + k] !== 0) {
            values[n] = weights[o * K + k];
            columns[n++] = k;
          }
        }
        rowPtr[o + 1] = n;
      }
      const shape = `[O=${O}, K=${K}], ${nonzeros} non-zero`;
      const vName = addArray(`${op.name}_values`, "float", values, `${op.name}: CSR values of weights ${shape}`);
      const colName = addArray(`${op.name}_columns`, `uint${csr.indexBits}_t`, columns, `${op.name}: CSR columns`);
      const pName = addArray(`${op.name}_row_ptr`, `uint${csr.pointerBits}_t`, rowPtr, `${op.name}: CSR row pointers`);
      const p = addParams(
        op.name,
        "cnnc_csr_t",
        `${vName}, ${colName}, ${pName}, ${csr.indexBits}, ${csr.pointerBits}`,
      );
      sparseLayers.push({
        layer: op.name,
        rows: O,
        cols: K,
        nonzeros,
        denseBytes: weights.length * 4,
        csrBytes: csr.bytes,
        indexBits: csr.indexBits,
        pointerBits: csr.pointerBits,
      });
      kernels.add("dense_csr_f32");
      steps.push({
        op,
        reads: [x],
        writes: [y],
        code: (ref) => [`cnnc_dense_csr_f32(${ref(x)}, &${p}, ${biasName}, ${ref(y)}, ${rows}, ${K}, ${O});`],
      });
      return;
    }
    const wName = addArray(`${op.name}_weights`, "float", weights, `${op.name}: weights [O=${O}, K=${K}]`);
    kernels.add("dense_f32");
    steps.push({
      op,
      reads: [x],
      writes: [y],
      code: (ref) => [`cnnc_dense_f32(${ref(x)}, ${wName}, ${biasName}, ${ref(y)}, ${rows}, ${K}, ${O});`],
    });
  }

  function lowerPool(op: Op): void {
    const x = floatOperand(op, 0);
    if (op.results.slice(1).some((r) => r.uses.length > 0 || graph.outputs.includes(r))) {
      throw opError(op, "its Indices output has no C kernel");
    }
    const xShape = shapeOf(x);
    const { geometry, padsEnd } = poolGeometry(op, xShape);
    const g = planar(op, geometry);
    const channels = xShape[0] * xShape[1];
    const p = addParams(op.name, "cnnc_window_t", windowFields(g, channels, channels, [1, 0, 0, 0, 0]));
    const y = op.results[0];
    if (op.type === "MaxPool") {
      kernels.add("max_pool");
      steps.push({ op, reads: [x], writes: [y], code: (ref) => [`cnnc_max_pool(${ref(x)}, ${ref(y)}, &${p});`] });
      return;
    }
    const includePad = op.flag("count_include_pad");
    const ends = geometry.inShape.length === 1 ? [0, padsEnd[0]] : padsEnd;
    const counts = [0, 1].map((d) => {
      const t = new Int32Array(g.outShape[d]);
      for (let o = 0; o < g.outShape[d]; o++) {
        for (let k = 0; k < g.kernel[d]; k++) {
          const i = o * g.strides[d] - g.padsBegin[d] + k * g.dilations[d];
          const lo = includePad ? -g.padsBegin[d] : 0, hi = includePad ? g.inShape[d] + ends[d] : g.inShape[d];
          if (i >= lo && i < hi) t[o]++;
        }
      }
      return addArray(`${op.name}_count_${d === 0 ? "h" : "w"}`, "int32_t", t, `${op.name}: taps counted`);
    });
    kernels.add("average_pool");
    steps.push({
      op,
      reads: [x],
      writes: [y],
      code: (ref) => [`cnnc_average_pool(${ref(x)}, ${ref(y)}, &${p}, ${counts[0]}, ${counts[1]});`],
    });
  }

  function lowerGlobalPool(op: Op): void {
    const x = floatOperand(op, 0);
    const s = shapeOf(x);
    const y = op.results[0];
    const kernel = op.type === "GlobalAveragePool" ? "global_average_pool" : "global_max_pool";
    const fn = `cnnc_${kernel}`;
    kernels.add(kernel);
    steps.push({
      op,
      reads: [x],
      writes: [y],
      code: (ref) => [`${fn}(${ref(x)}, ${ref(y)}, ${s[0] * s[1]}, ${shapeSize(s.slice(2))});`],
    });
  }

  function lowerBatchNorm(op: Op): void {
    const x = floatOperand(op, 0);
    if (op.results.slice(1).some((r) => r.uses.length > 0 || graph.outputs.includes(r))) {
      throw opError(op, "only its inference output has a C kernel");
    }
    const params = [1, 2, 3, 4].map((i) => {
      const t = constantOf(op.operands[i] ?? null);
      if (t === null) throw opError(op, `its parameter ${i} must be a constant`);
      return toFloat64(t);
    });
    const s = shapeOf(x);
    const channels = s[1];
    if (params.some((p) => p.length !== channels)) {
      throw opError(op, "per-activation parameters (old spatial = 0) have no C kernel");
    }
    const epsilon = op.float("epsilon", 1e-5);
    // The interpreter's folding, in float64: a = scale / sqrt(var + eps), b = B - mean * a.
    const a = new Float64Array(channels), b = new Float64Array(channels);
    for (let c = 0; c < channels; c++) {
      a[c] = params[0][c] / Math.sqrt(params[3][c] + epsilon);
      b[c] = params[1][c] - params[2][c] * a[c];
    }
    const aName = addArray(`${op.name}_scale`, "double", a, `${op.name}: scale / sqrt(var + eps)`);
    const bName = addArray(`${op.name}_shift`, "double", b, `${op.name}: B - mean * scale / sqrt(var + eps)`);
    kernels.add("affine");
    inPlace.add(op);
    const y = op.results[0];
    steps.push({
      op,
      reads: [x],
      writes: [y],
      code: (ref) => [
        `cnnc_affine(${ref(x)}, ${ref(y)}, ${aName}, ${bName}, ${s[0] * channels}, ${shapeSize(s.slice(2))});`,
      ],
    });
  }

  function lowerConcat(op: Op): void {
    const y = op.results[0];
    const shape = shapeOf(y);
    let axis = op.int("axis", 1);
    if (axis < 0) axis += shape.length;
    const outer = shapeSize(shape.slice(0, axis)), inner = shapeSize(shape.slice(axis + 1));
    const row = shape[axis] * inner;
    const parts: { i: number; chunk: number; offset: number }[] = [];
    let offset = 0;
    op.operands.forEach((v, i) => {
      if (v === null) return;
      const chunk = shapeOf(floatOperand(op, i))[axis] * inner;
      parts.push({ i, chunk, offset });
      offset += chunk;
    });
    kernels.add("concat");
    steps.push({
      op,
      reads: dynamicReads(op, parts.map((p) => p.i)),
      writes: [y],
      code: (ref) =>
        parts.map((p) =>
          `cnnc_concat_part(${operandRef(op, p.i, ref)}, ${ref(y)}, ${outer}, ${p.chunk}, ${row}, ${p.offset});`
        ),
    });
  }

  function lowerSoftmax(op: Op): void {
    const x = floatOperand(op, 0);
    const s = shapeOf(x);
    const opset = module.opset(op.domain);
    let axis = op.int("axis", opset >= 13 ? -1 : 1);
    if (axis < 0) axis += s.length;
    if (opset >= 13 && axis !== s.length - 1) throw opError(op, `axis ${axis} is not the last axis; no C kernel`);
    const n = shapeSize(s.slice(axis)), rows = shapeSize(s.slice(0, axis));
    kernels.add("softmax");
    const y = op.results[0];
    steps.push({ op, reads: [x], writes: [y], code: (ref) => [`cnnc_softmax(${ref(x)}, ${ref(y)}, ${rows}, ${n});`] });
  }
}

/** A window geometry as 2-D (a 1-D window gets a leading axis of 1); other ranks have no C kernel. */
function planar(op: Op, g: WindowGeometry): WindowGeometry {
  const rank = g.inShape.length;
  if (rank === 2) return g;
  if (rank === 0) {
    return { inShape: [1, 1], outShape: [1, 1], kernel: [1, 1], strides: [1, 1], dilations: [1, 1], padsBegin: [0, 0] };
  }
  if (rank === 1) return as2d(g);
  throw opError(op, `${rank}-D windows have no C kernel (1-D and 2-D only)`);
}

/** `[O, C, T]` to `[O, T, C]`. */
function toOhwi<T extends Int8Array | Int16Array | Float32Array>(v: T, o: number, c: number, taps: number): T {
  const out = new (v.constructor as new (n: number) => T)(v.length);
  for (let i = 0; i < o; i++) {
    for (let j = 0; j < c; j++) {
      for (let t = 0; t < taps; t++) out[(i * taps + t) * c + j] = v[(i * c + j) * taps + t];
    }
  }
  return out;
}
