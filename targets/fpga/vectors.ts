/**
 * Golden test vectors of the FPGA target (option `vectors=N`): what one BFP
 * processing element consumes and must produce, per lowered Conv/Gemm layer,
 * for the first N calibration samples. The interpreter runs once with probes
 * on every layer's Quantize results (its input mantissas and exponents), then
 * {@linkcode bfpLayer} with `integers` gives each output's saturated integer
 * accumulator and unit (`y = acc · 2^unit`).
 *
 * Per sample `n`, selected output position `p` and channel group `g`:
 * - patch: the im2col patch of `K = Cg · taps` input mantissas in the layout's
 *   K order (`ohwi`: `k = t·Cg + c`; `oihw`: `k = c·taps + t`, as the packed
 *   weights), zero in the padding;
 * - patch exponents: the input block exponents the patch reads, in the order of
 *   a weight row's exponents (`[1]` for one block per sample; `[taps, nb]`
 *   (`ohwi`) or `[nb, taps]` (`oihw`) for blocks of B channels), `-bias` in the padding;
 * - golden: the accumulator and the unit of every output channel `o`.
 *
 * Positions are capped (`vector-positions`): all when there are at most that
 * many, else `floor(i · M / cap)` for `i < cap` (evenly spread over the `M`
 * positions, the first included).
 * @module
 */
import { exponentRange } from "../../ir/bfp/format.ts";
import { bfpLayer } from "../../ir/bfp/kernel.ts";
import type { BfpLayerPlan } from "../../ir/bfp/plan.ts";
import { sampleExponentIndex } from "../../ir/bfp/quantize.ts";
import { Interpreter } from "../../ir/interpreter.ts";
import type { Module } from "../../ir/module.ts";
import { unflatten } from "../../ir/ops/conv_kernels.ts";
import { shapeSize, type Tensor, tensor } from "../../ir/tensor.ts";
import type { FpgaLayout } from "./image.ts";

/** The golden vectors of one lowered layer. */
export interface LayerVectors {
  /** Samples (the first of the calibration set). */
  readonly samples: number;
  /** Output positions per sample in the layer (1 for a Gemm). */
  readonly totalPositions: number;
  /** The selected output positions (flat, row-major over the output's spatial shape). */
  readonly positions: Int32Array;
  /** Channel groups. */
  readonly groups: number;
  /** Reduction length per output. */
  readonly reduction: number;
  /** Exponents per patch (a weight row's exponent count). */
  readonly patchExponentCount: number;
  /** Output channels. */
  readonly outChannels: number;
  /** Patch mantissas `[samples, positions, groups, K]`. */
  readonly patches: Int8Array | Int16Array;
  /** Patch exponents (unbiased) `[samples, positions, groups, patchExponentCount]`. */
  readonly patchExponents: Int8Array;
  /** Saturated accumulators (exact integers) `[samples, positions, O]`. */
  readonly accumulators: Float64Array;
  /** Accumulator units `[samples, positions, O]`. */
  readonly units: Int32Array;
  /** `acc · 2^unit` as the interpreter's float32 output, `[samples, positions, O]`. */
  readonly outputs: Float32Array;
}

/**
 * The selected positions of a layer: all up to `cap`, else `floor(i · total / cap)`.
 *
 * @example Positions spread evenly
 * ```ts
 * import assert from "node:assert/strict";
 * import { selectPositions } from "./vectors.ts";
 * assert.deepEqual([...selectPositions(10, 4)], [0, 2, 5, 7]);
 * assert.deepEqual([...selectPositions(3, 4)], [0, 1, 2]);
 * ```
 */
export function selectPositions(total: number, cap: number): Int32Array {
  if (total <= cap) return Int32Array.from({ length: total }, (_, i) => i);
  return Int32Array.from({ length: cap }, (_, i) => Math.floor((i * total) / cap));
}

/** The first `n` samples of each calibration input (axis 0). */
function firstSamples(inputs: Readonly<Record<string, Tensor>>, n: number): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(inputs)) {
    const per = shapeSize(t.shape.slice(1));
    const data = t.data;
    if (Array.isArray(data)) throw new Error(`vectors: calibration input "${name}" is a string tensor`);
    out[name] = tensor(t.dtype, [n, ...t.shape.slice(1)], data.slice(0, n * per) as typeof data);
  }
  return out;
}

/**
 * The golden vectors of every lowered layer (module header), parallel to `plans` (null for glue).
 *
 * @throws {Error} When the calibration set is empty.
 * @example A glue-only plan list has no vectors
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { goldenVectors } from "./vectors.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 2] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] })).result);
 * const calib = { x: float32Tensor([1, 2], [1, -1]) };
 * assert.deepEqual(goldenVectors(new Module(g), [null], calib, 1, 8, "ohwi"), [null]);
 * ```
 */
export function goldenVectors(
  module: Module,
  plans: readonly (BfpLayerPlan | null)[],
  calibration: Readonly<Record<string, Tensor>>,
  samples: number,
  positionCap: number,
  layout: FpgaLayout,
): (LayerVectors | null)[] {
  const available = Math.min(...Object.values(calibration).map((t) => t.shape[0] ?? 0));
  if (!(available >= 1)) throw new Error("vectors: the calibration set has no sample");
  const n = Math.min(samples, available);
  const probes = plans.flatMap((p) => (p === null ? [] : [p.input.op.results[0], p.input.op.results[1], p.op.result]));
  const values = new Interpreter(module, { probes }).run(firstSamples(calibration, n));
  return plans.map((plan) => {
    if (plan === null) return null;
    const xm = values[plan.input.op.results[0].name], xe = values[plan.input.op.results[1].name];
    const y = values[plan.op.result.name];
    return layerVectors(plan, xm, xe, y, positionCap, layout);
  });
}

function layerVectors(
  plan: BfpLayerPlan,
  xmT: Tensor,
  xeT: Tensor,
  yT: Tensor,
  positionCap: number,
  layout: FpgaLayout,
): LayerVectors {
  const xm = xmT.data as Int8Array | Int16Array, xe = xeT.data as Int8Array;
  const { integers } = bfpLayer(plan, { mantissas: xm, exponents: xe, shape: xmT.shape }, { integers: true });
  const g = plan.geometry!;
  const samples = xmT.shape[0];
  const C = plan.inChannels, O = plan.outChannels, G = plan.group, cg = C / G;
  const taps = shapeSize(g.kernel), total = shapeSize(g.outShape), inSize = shapeSize(g.inShape);
  const K = plan.reduction, block = plan.weights.block;
  const nb = block === 0 ? 1 : Math.ceil(cg / block);
  const nbe = block === 0 ? 1 : nb * taps;
  const eMin = exponentRange(plan.format).min;
  const positions = selectPositions(total, positionCap);
  const P = positions.length;
  const rank = g.kernel.length;
  const tap = new Array<number>(rank).fill(0), pos = new Array<number>(rank).fill(0);
  // Input spatial index of (tap, selected position), -1 in the padding.
  const at = new Int32Array(taps * P);
  for (let t = 0; t < taps; t++) {
    unflatten(t, g.kernel, tap);
    for (let i = 0; i < P; i++) {
      unflatten(positions[i], g.outShape, pos);
      let index = 0;
      for (let d = 0; d < rank; d++) {
        const a = pos[d] * g.strides[d] + tap[d] * g.dilations[d] - g.padsBegin[d];
        if (a < 0 || a >= g.inShape[d]) {
          index = -1;
          break;
        }
        index = index * g.inShape[d] + a;
      }
      at[t * P + i] = index;
    }
  }
  const patches = xm instanceof Int8Array ? new Int8Array(samples * P * G * K) : new Int16Array(samples * P * G * K);
  const patchExponents = new Int8Array(samples * P * G * nbe);
  const accumulators = new Float64Array(samples * P * O), units = new Int32Array(samples * P * O);
  const outputs = new Float32Array(samples * P * O);
  const yData = yT.data as Float32Array;
  for (let n = 0; n < samples; n++) {
    for (let i = 0; i < P; i++) {
      for (let gi = 0; gi < G; gi++) {
        const base = ((n * P + i) * G + gi) * K;
        for (let c = 0; c < cg; c++) {
          const src = (n * C + gi * cg + c) * inSize;
          for (let t = 0; t < taps; t++) {
            const a = at[t * P + i];
            const k = layout === "ohwi" ? t * cg + c : c * taps + t;
            patches[base + k] = a < 0 ? 0 : xm[src + a];
          }
        }
        const eBase = ((n * P + i) * G + gi) * nbe;
        if (block === 0) patchExponents[eBase] = xe[sampleExponentIndex(plan.input.blocking, n, gi)];
        else {
          for (let j = 0; j < nb; j++) {
            for (let t = 0; t < taps; t++) {
              const a = at[t * P + i];
              const e = layout === "ohwi" ? t * nb + j : j * taps + t;
              patchExponents[eBase + e] = a < 0 ? eMin : xe[((n * G + gi) * nb + j) * inSize + a];
            }
          }
        }
      }
      for (let o = 0; o < O; o++) {
        const from = (n * O + o) * total + positions[i], to = (n * P + i) * O + o;
        accumulators[to] = integers!.accumulators[from];
        units[to] = integers!.units[from];
        outputs[to] = yData[from];
      }
    }
  }
  return {
    samples,
    totalPositions: total,
    positions,
    groups: G,
    reduction: K,
    patchExponentCount: nbe,
    outChannels: O,
    patches,
    patchExponents,
    accumulators,
    units,
    outputs,
  };
}

/**
 * Hex words of `bits` bits (two's complement), one per line, for `$readmemh`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hexLines } from "./vectors.ts";
 * assert.equal(hexLines([1, -1], 8), "01\nff\n");
 * assert.equal(hexLines([-2], 64), "fffffffffffffffe\n");
 * ```
 */
export function hexLines(values: ArrayLike<number>, bits: number): string {
  const digits = Math.ceil(bits / 4), mask = (1n << BigInt(bits)) - 1n;
  let out = "";
  for (let i = 0; i < values.length; i++) {
    out += (BigInt(values[i]) & mask).toString(16).padStart(digits, "0") + "\n";
  }
  return out;
}

/**
 * A layer's `params.vh` for the testbench (`rtl/tb_layer.v` includes it): one
 * `localparam` per integer and one `` `define `` per file name.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { paramsVh } from "./vectors.ts";
 * assert.equal(paramsVh("fc", { L: 8 }, { WMEM: "m.mem" }),
 *   '// layer "fc" (generated by cnnc; do not edit)\nlocalparam L = 8;\n`define WMEM "m.mem"\n');
 * ```
 */
export function paramsVh(
  layer: string,
  numbers: Readonly<Record<string, number>>,
  files: Readonly<Record<string, string>>,
): string {
  let out = `// layer ${JSON.stringify(layer)} (generated by cnnc; do not edit)\n`;
  for (const [k, v] of Object.entries(numbers)) out += `localparam ${k} = ${v < 0 ? `-${-v}` : v};\n`;
  for (const [k, v] of Object.entries(files)) out += `\`define ${k} ${JSON.stringify(v)}\n`;
  return out;
}
