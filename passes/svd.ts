/**
 * `svd`: low-rank decomposition of fully connected and convolution layers.
 * Each chosen layer becomes two dense layers whose parameter and compute cut
 * are the same, with the rank picked per layer (rank, energy, speedup) or
 * globally (budget), optionally minimizing the output error on calibration data.
 * @module
 */
import { attr } from "../ir/attributes.ts";
import { isConstant, isDefaultDomain, Op, Value } from "../ir/graph.ts";
import { Interpreter } from "../ir/interpreter.ts";
import type { Module } from "../ir/module.ts";
import type { OpRegistry } from "../ir/op_def.ts";
import { gemm } from "../ir/ops/gemm_kernel.ts";
import { addConstant, cloneModule, eraseConstantIfUnused, insertBefore } from "../ir/rewriter.ts";
import {
  expectedChannels,
  foldIntoBias,
  recalibrateBn,
  reconstruct,
  refitStats,
  type RefitTarget,
  ridgeSolve,
} from "./analysis/recovery.ts";
import type { OptionValues } from "./options.ts";
import { fromFloat64, type Tensor, toFloat64 } from "../ir/tensor.ts";
import { type Dim, FLOAT_DTYPES, isTensorType, type TensorType } from "../ir/types.ts";
import {
  cholesky,
  estimateEnergyFraction,
  type FloatArray,
  gramSpectrum,
  growingSvd,
  randomizedSvd,
  solveLowerRight,
  type Svd,
  truncate,
} from "./linalg.ts";
import { definePass, type Pass, type PassContext, type StatValue } from "./pass.ts";

/** Options of `svd`. */
export const svdOptions = {
  rank: {
    kind: "int",
    optional: true,
    min: 1,
    doc: "Keep N singular values per layer (capped at full rank); overrides energy",
  },
  energy: {
    kind: "number",
    default: 0.9,
    min: 0,
    max: 1,
    exclusiveMin: true,
    doc: "Keep the fewest singular values holding this fraction of the squared spectrum (per layer)",
  },
  speedup: {
    kind: "number",
    optional: true,
    min: 1,
    doc: "Per-layer MACs reduction factor; overrides energy",
  },
  budget: {
    kind: "number",
    optional: true,
    min: 0,
    max: 1,
    exclusiveMin: true,
    doc: "Global fraction of the decomposable layers' params (or MACs) to keep; overrides energy",
  },
  budgetMetric: { kind: "enum", values: ["params", "macs"], default: "params", doc: "What `budget` counts" },
  mode: {
    kind: "enum",
    values: ["channel", "spatial"],
    default: "channel",
    doc: "Conv factorization: k basis filters + 1x1 conv, or Kh x 1 then 1 x Kw convs",
  },
  large: {
    kind: "enum",
    values: ["estimate", "exact"],
    default: "estimate",
    doc: "Energy rule on a layer whose smaller side is over 1024: `estimate` first estimates (stochastic Lanczos, " +
      "a few passes over the weight) the energy its largest useful rank holds and leaves the layer whole when that " +
      "is under 1 - 0.5 (1 - energy) (fast; may leave whole a layer the exact rule factors for a few percent); " +
      "`exact` grows the basis until it holds the target or provably cannot (the exact rule's decision; minutes " +
      "on a 4096 x 25088 layer)",
  },
  skip: { kind: "list", default: [], doc: "Op names left alone" },
  keepLast: { kind: "bool", default: true, doc: "Leave the last FC/Conv layer (the classifier) alone" },
  dataAware: {
    kind: "bool",
    optional: true,
    doc: "Whiten by the calibration input covariance so the factors minimize output error (default: when data is " +
      "given and the rank comes from rank, speedup or budget; energy then counts output energy)",
  },
  biasCorrect: {
    kind: "bool",
    default: true,
    doc: "Without data: add (W - W_k) E[x] to the bias, E[x] from the BatchNormalization statistics before the layer",
  },
  reconstruct: {
    kind: "bool",
    optional: true,
    doc: "Refit each second factor to the original layer's outputs on the calibration data, sequentially, by ridge " +
      "least squares (default: when data is given)",
  },
  recalibrateBn: {
    kind: "bool",
    optional: true,
    doc: "Re-estimate every BatchNormalization's statistics on the calibration data (default: when data is given " +
      "and no layer was refit)",
  },
} as const;

/** Factorization kinds. */
type LayerKind = "gemm" | "matmul" | "conv-channel" | "conv-spatial";

/**
 * One decomposable layer, as a matrix `M (rows x cols)` to factor as `P Q`
 * (`P: rows x k`, `Q: k x cols`). For FC and channel mode `M` is the weight as
 * outputs x inputs; for spatial mode `M[(c,y),(o,x)] = W[o,c,y,x]` (Jaderberg
 * et al. 2014, scheme 2).
 */
interface Layer {
  readonly op: Op;
  readonly kind: LayerKind;
  readonly rows: number;
  readonly cols: number;
  /** `M` in the weight's precision: a view of a float32 (or float64) weight where its layout is M's, else a copy. */
  readonly matrix: FloatArray;
  readonly weight: Value;
  readonly params: number;
  readonly macs: number;
  readonly paramsPerRank: number;
  readonly macsPerRank: number;
  /** Largest rank whose factorization is cheaper in both params and MACs (0: never). */
  readonly maxUsefulRank: number;
}

/** A layer's decomposition input: the matrix to factor (whitened when data-aware) and its SVD. */
interface Spectral {
  readonly layer: Layer;
  /** Singular values known, descending: all of them, or the leading ones (large layers). */
  readonly spectrum: Float64Array;
  /** The leading k singular triplets (k at most the spectrum's length). */
  readonly triplets: (k: number) => Svd;
  /** Total squared spectrum of the (whitened) matrix. */
  readonly energy: number;
  /** Lower Cholesky factor of the input covariance (data-aware), else null. */
  readonly whitening: Float64Array | null;
  /** Input covariance `X^T X` over calibration rows (no damping), else null. */
  readonly covariance: Float64Array | null;
}

/**
 * `svd`: replace FC layers (Gemm with any `transA`/`transB`/`alpha`/`beta`,
 * MatMul by a constant 2-D weight) and groups=1 Conv layers by two layers of
 * rank `k` from a truncated SVD of the weight.
 *
 * - FC `W (m x n)` (outputs x inputs): `(k x n)` then `(m x k)`, bias on the second.
 * - Conv `mode=channel`: `k` filters `Cin x Kh x Kw` (with the original strides,
 *   pads, dilations) then a 1x1 conv `Cout x k` with the bias.
 * - Conv `mode=spatial` (2-D): `Kh x 1` conv with `k` outputs (vertical stride,
 *   pads and dilation) then `1 x Kw` conv (horizontal ones) with the bias; exact
 *   at full rank because zero padding splits per axis.
 *
 * Rank: `rank=N`, else `speedup=s` (MACs / s per layer), else `budget=b` (keep
 * a fraction b of the total params or MACs of the decomposable layers, greedily
 * removing the singular value that loses the least relative energy per unit
 * saved), else `energy=e`. A layer is left alone when rank `k` is not cheaper
 * than the layer (`k (m + n) >= m n` for FC), when named in `skip`, when it is
 * the last FC/Conv and `keep-last`, or when its weights hold NaN or Inf (a
 * warning names it). With calibration inputs (`data-aware`, on by default
 * then unless the rank comes from `energy`, whose fraction would count output
 * energy), the SVD is of `W L` where `L L^T = X^T X + eps I` (X: the layer's
 * input rows or conv patches), so truncation minimizes `||(W - W') X^T||`
 * (SVD-LLM / Yu et al.), and `budget` compares layers by that output error;
 * spatial mode stays weight-based. The inputs are those of the network before
 * the pass; the sequential refit afterwards absorbs the compounding.
 *
 * Statistics: `layers-decomposed`, `params-before`/`params-after`,
 * `macs-before`/`macs-after` (decomposable layers), and `layers`: per layer
 * `rank`, `params`/`macs` before and after, `weight-error` (relative
 * Frobenius), `output-error` (relative, over calibration inputs, when given and
 * not spatial), `spectrum` (first 64 singular values) and `energy-total`.
 *
 * @example Factor a rank-1 Gemm exactly
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseModule } from "../ir/parser.ts";
 * import { defaultOptions } from "./options.ts";
 * import { svdOptions, svdPass } from "./svd.ts";
 * import { testPassContext } from "./testing.ts";
 * const m = parseModule(`module opsets {"": 13} ir_version 7 {
 * graph @g(%x: f32[N,4]) -> (%y) {
 *   %w = const f32[4,4] dense<[1.0, 2.0, 3.0, 4.0, 2.0, 4.0, 6.0, 8.0, 3.0, 6.0, 9.0, 12.0, 4.0, 8.0, 12.0, 16.0]>
 *   %y = Gemm(%x, %w) {transB = 1} : f32[N,4]
 *   return %y
 * }
 * }`);
 * const ctx = testPassContext();
 * assert.equal(svdPass.run(m, { ...defaultOptions(svdOptions), keepLast: false }, ctx), true);
 * assert.deepEqual(m.graph.ops.map((op) => op.type), ["Gemm", "Gemm"]);
 * ```
 */
export const svdPass: Pass<typeof svdOptions> = definePass({
  name: "svd",
  summary: "Low-rank (truncated SVD) decomposition of FC and Conv layers",
  options: svdOptions,
  run(module, options, ctx): boolean {
    const graph = module.graph;
    const selectors = [options.rank, options.speedup, options.budget].filter((x) => x !== undefined);
    if (selectors.length > 1) {
      ctx.emit("error", "give at most one of rank, speedup and budget (energy is used when none is given)");
      return false;
    }
    const skip = new Set(options.skip);
    const found = collectLayers(module, options.mode, (message) => ctx.log(message));
    for (const name of skip) {
      if (!graph.ops.some((op) => op.name === name)) ctx.emit("warning", `skip names no op: "${name}"`);
    }
    let layers = found.filter((l) => !skip.has(l.op.name));
    if (options.keepLast && found.length > 0) {
      const last = found[found.length - 1].op;
      layers = layers.filter((l) => l.op !== last);
      ctx.log(`keeping the last layer "${last.name}" (keep-last=true)`);
    }
    layers = layers.filter((l) => {
      if (l.matrix.every(Number.isFinite)) return true;
      ctx.emit("warning", `op "${l.op.name}" (${l.op.type}): weights hold NaN or Inf; layer left alone`, l.op);
      return false;
    });

    let covariances = new Map<Op, Float64Array>();
    if (ctx.calibration !== null) {
      const wanted = layers.filter((l) => l.kind !== "conv-spatial");
      covariances = inputCovariances(module, wanted, ctx.calibration, ctx);
    } else if (options.dataAware === true) {
      ctx.emit("warning", "data-aware=true needs calibration inputs; using the weight SVD");
    }

    // Ranks each selection rule wants before the SVD (rank, speedup): only that many triplets are computed.
    const fixedRank = (l: Layer): number | null => {
      if (options.rank !== undefined) return Math.min(options.rank, Math.min(l.rows, l.cols));
      if (options.speedup !== undefined) return Math.max(1, Math.floor(l.macs / options.speedup / l.macsPerRank));
      return null;
    };
    const spectra: Spectral[] = [];
    for (const layer of layers) {
      if (layer.maxUsefulRank < 1) {
        ctx.log(`op "${layer.op.name}": no rank is cheaper than the layer`);
        continue;
      }
      const fixed = fixedRank(layer);
      if (fixed !== null && fixed > layer.maxUsefulRank) {
        ctx.log(`op "${layer.op.name}": rank ${fixed} is not cheaper than the layer (at most ${layer.maxUsefulRank})`);
        continue;
      }
      const covariance = covariances.get(layer.op) ?? null;
      // By default only where the rank comes from rank, speedup or budget: the energy rule on the whitened spectrum
      // would count output energy, a far smaller rank for the same number (measured: the pipeline
      // prune{ratio=0.7},svd{energy=0.9},bfp{mantissa=6} on vgg_sparse fell from 97.65% to 23.05%).
      const whiten = covariance !== null && (options.dataAware ?? (fixed !== null || options.budget !== undefined));
      const whitenWith = whiten ? covariance : null;
      spectra.push(spectralOf(layer, fixed, whitenWith, covariance, options.energy, options.budget, options.large));
    }

    const ranks = new Map<Spectral, number>();
    if (options.budget !== undefined) {
      for (const [sp, k] of budgetRanks(spectra, options.budget, options.budgetMetric)) ranks.set(sp, k);
    } else {
      for (const sp of spectra) ranks.set(sp, fixedRank(sp.layer) ?? energyRank(sp, options.energy));
    }

    const perLayer: Record<string, StatValue> = {};
    let decomposed = 0;
    const totals = { paramsBefore: 0, paramsAfter: 0, macsBefore: 0, macsAfter: 0 };
    for (const l of found) {
      totals.paramsBefore += l.params;
      totals.macsBefore += l.macs;
    }
    // With data, the module before the rewrite is the reference the second factors are refit to.
    const original = ctx.calibration !== null && options.reconstruct !== false ? cloneModule(module) : null;
    const rewritten = new Set<Op>();
    for (const sp of spectra) {
      const k = ranks.get(sp) ?? 0;
      const l = sp.layer;
      if (k < 1 || k > l.maxUsefulRank) {
        ctx.log(`op "${l.op.name}": rank ${k} is not cheaper than the layer; left alone`);
        continue;
      }
      const { p, q } = factors(sp, k);
      const weightError = relativeWeightError(l, p, q, k, sp);
      const outputError = sp.covariance === null ? null : relativeOutputError(l, p, q, k, sp.covariance);
      const shift = options.biasCorrect && ctx.calibration === null
        ? biasShift(l, p, q, k, ctx.ops, module.opset(""))
        : null;
      rewrite(l, p, q, k, module.opset(""));
      if (shift !== null) foldIntoBias(l.op, shift);
      rewritten.add(l.op);
      decomposed++;
      perLayer[l.op.name] = {
        kind: l.kind,
        rank: k,
        "full-rank": Math.min(l.rows, l.cols),
        "params-before": l.params,
        "params-after": k * l.paramsPerRank,
        "macs-before": l.macs,
        "macs-after": k * l.macsPerRank,
        "weight-error": weightError,
        "output-error": outputError,
        "data-aware": sp.whitening !== null,
        "bias-corrected": shift !== null,
        "energy-total": sp.energy,
        spectrum: [...sp.spectrum.slice(0, 64)],
      };
      ctx.log(`op "${l.op.name}": rank ${k} of ${Math.min(l.rows, l.cols)}, weight error ${weightError.toFixed(4)}`);
    }
    for (const l of found) {
      const entry = perLayer[l.op.name] as Record<string, number> | undefined;
      totals.paramsAfter += entry === undefined ? l.params : entry["params-after"];
      totals.macsAfter += entry === undefined ? l.macs : entry["macs-after"];
    }
    if (decomposed === 0) {
      ctx.emit(
        "note",
        found.length === 0
          ? "nothing decomposed: no Conv, Gemm or MatMul with a constant float weight"
          : `nothing decomposed: ${found.length} candidate layer(s), ${found.length - layers.length} skipped ` +
            `(skip, keep-last, non-finite weights), ${layers.length} with no rank that is cheaper and meets the ` +
            "selection rule (see the log)",
      );
    }
    ctx.stat("recovery", recoverFactors(original, module, [...rewritten], options, ctx));
    ctx.stat("layers-decomposed", decomposed);
    ctx.stat("params-before", totals.paramsBefore);
    ctx.stat("params-after", totals.paramsAfter);
    ctx.stat("macs-before", totals.macsBefore);
    ctx.stat("macs-after", totals.macsAfter);
    ctx.stat("layers", perLayer);
    return decomposed > 0;
  },
});

function staticShape(v: Value | null): number[] | null {
  const t = v?.type ?? null;
  if (!isTensorType(t) || t.shape === null) return null;
  return t.shape.map((d: Dim) => (typeof d === "number" ? d : 1));
}

/**
 * A weight's elements as stored: its own float32 or float64 array (no copy: the layers of a pass are
 * collected at once, and a float64 copy of each was the pass's main memory cost), else widened to float64.
 */
function storedValues(w: Tensor): FloatArray {
  return w.data instanceof Float32Array || w.data instanceof Float64Array ? w.data : toFloat64(w);
}

/** A matrix of `length` elements that holds `values`' elements exactly (float32 stays float32). */
function sameKind(values: FloatArray, length: number): FloatArray {
  return values instanceof Float32Array ? new Float32Array(length) : new Float64Array(length);
}

/**
 * Every FC and groups=1 Conv with a constant float weight, in graph order, each matrix `M` a view of the
 * weight where the layout allows (Gemm with transB and alpha 1, channel-mode Conv), else a copy in the
 * weight's precision (float64 when scaled by alpha).
 */
function collectLayers(module: Module, mode: string, log: (message: string) => void): Layer[] {
  const graph = module.graph;
  const layers: Layer[] = [];
  for (const op of graph.ops) {
    if (!isDefaultDomain(op.domain)) continue;
    if (op.type !== "Gemm" && op.type !== "MatMul" && op.type !== "Conv") continue;
    const weight = op.operand(1);
    if (!isConstant(weight)) continue;
    const w = weight.constant;
    if (!FLOAT_DTYPES.has(w.dtype)) continue;
    const values = storedValues(w);
    if (op.type === "Gemm" || op.type === "MatMul") {
      if (w.shape.length !== 2) continue;
      const transB = op.type === "Gemm" && op.flag("transB");
      const alpha = op.type === "Gemm" ? op.float("alpha", 1)! : 1;
      const [m, n] = transB ? [w.shape[0], w.shape[1]] : [w.shape[1], w.shape[0]];
      // M = alpha op(B)^T: outputs x inputs (the weight itself with transB and alpha 1).
      let matrix = values;
      if (!transB || alpha !== 1) {
        matrix = alpha === 1 ? sameKind(values, m * n) : new Float64Array(m * n);
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) matrix[i * n + j] = alpha * (transB ? values[i * n + j] : values[j * m + i]);
        }
      }
      const out = staticShape(op.result);
      const batch = out === null ? 1 : out.slice(0, -1).reduce((a, b) => a * b, 1);
      layers.push(layerOf(op, op.type === "Gemm" ? "gemm" : "matmul", m, n, matrix, weight, m * n * batch, batch));
      continue;
    }
    if (op.int("group", 1) !== 1 || w.shape.length < 3) continue;
    const [cout, cin] = w.shape;
    const kernel = w.shape.slice(2);
    const kernelSize = kernel.reduce((a, b) => a * b, 1);
    const out = staticShape(op.result);
    const outSpatial = out === null ? 1 : out.slice(2).reduce((a, b) => a * b, 1);
    if (mode === "channel") {
      const n = cin * kernelSize;
      layers.push(layerOf(op, "conv-channel", cout, n, values, weight, cout * n * outSpatial, outSpatial));
      continue;
    }
    const autoPad = op.string("auto_pad", "NOTSET");
    if (kernel.length !== 2 || (autoPad !== "NOTSET" && autoPad !== "VALID")) {
      log(`op "${op.name}": spatial mode needs a 2-D conv with explicit pads; left alone`);
      continue;
    }
    const [kh, kw] = kernel;
    const rows = cin * kh;
    const cols = cout * kw;
    const matrix = sameKind(values, rows * cols);
    for (let o = 0; o < cout; o++) {
      for (let c = 0; c < cin; c++) {
        for (let y = 0; y < kh; y++) {
          for (let x = 0; x < kw; x++) {
            matrix[(c * kh + y) * cols + o * kw + x] = values[((o * cin + c) * kh + y) * kw + x];
          }
        }
      }
    }
    const inShape = staticShape(op.operand(0));
    const hOut = out === null ? 1 : out[2];
    const wOut = out === null ? 1 : out[3];
    const wIn = inShape === null ? wOut : inShape[3];
    const macs = cout * cin * kh * kw * hOut * wOut;
    const macsPerRank = cin * kh * hOut * wIn + cout * kw * hOut * wOut;
    layers.push({
      op,
      kind: "conv-spatial",
      rows,
      cols,
      matrix,
      weight,
      params: rows * cols,
      macs,
      paramsPerRank: rows + cols,
      macsPerRank,
      maxUsefulRank: maxUseful(rows * cols, rows + cols, macs, macsPerRank, Math.min(rows, cols)),
    });
  }
  return layers;
}

function layerOf(
  op: Op,
  kind: LayerKind,
  rows: number,
  cols: number,
  matrix: FloatArray,
  weight: Value,
  macs: number,
  macsScale: number,
): Layer {
  const paramsPerRank = rows + cols;
  const macsPerRank = (rows + cols) * macsScale;
  return {
    op,
    kind,
    rows,
    cols,
    matrix,
    weight,
    params: rows * cols,
    macs,
    paramsPerRank,
    macsPerRank,
    maxUsefulRank: maxUseful(rows * cols, paramsPerRank, macs, macsPerRank, Math.min(rows, cols)),
  };
}

/**
 * Data-free bias correction: the expected output shift `(M - P Q) E[x]` of a factorized layer, with `E[x]` per
 * input channel from the BatchNormalization statistics before it ({@linkcode expectedChannels}); null where they
 * do not reach the layer (or for MatMul and transA, which have no bias to take it).
 */
function biasShift(
  l: Layer,
  p: Float64Array,
  q: Float64Array,
  k: number,
  ops: OpRegistry,
  opset: number,
): Float64Array | null {
  if (l.kind === "matmul" || l.kind === "conv-spatial" || (l.kind === "gemm" && l.op.flag("transA"))) return null;
  let x = l.op.operand(0)!;
  if (l.kind === "gemm" && x.producer?.type === "Flatten") x = x.producer.operand(0)!;
  const mean = expectedChannels(x, ops, opset);
  if (mean === null || l.cols % mean.length !== 0) return null;
  const per = l.cols / mean.length;
  // (M - P Q) e = M e - P (Q e), e the mean spread over the columns: O((rows + k) cols), not O(rows cols k).
  const e = Float64Array.from({ length: l.cols }, (_, j) => mean[Math.floor(j / per)]);
  const qe = new Float64Array(k);
  for (let r = 0; r < k; r++) for (let j = 0; j < l.cols; j++) qe[r] += q[r * l.cols + j] * e[j];
  const shift = new Float64Array(l.rows);
  for (let o = 0; o < l.rows; o++) {
    let t = 0;
    for (let j = 0; j < l.cols; j++) t += l.matrix[o * l.cols + j] * e[j];
    for (let r = 0; r < k; r++) t -= p[o * k + r] * qe[r];
    shift[o] = t;
  }
  return shift;
}

/**
 * The first factor's target: the intermediate that the second factor (weights `P`, bias `b`) maps closest to the
 * original output `y`, `(P^T P)^-1 P^T (y - b)`; null for a second factor of another shape (spatial mode).
 */
function projectedTarget(second: Op): RefitTarget | null {
  const w = second.operand(1)?.constant;
  if (!w || (second.type === "Gemm" && !second.flag("transB"))) return null;
  if (second.type === "Conv" && w.shape.slice(2).some((d) => d !== 1)) return null;
  const [out, k] = w.shape;
  const p = toFloat64(w);
  const bias = second.operand(2)?.constant;
  const scale = second.type === "Gemm" ? second.float("beta", 1)! : 1;
  const b = bias && bias.data.length === out ? toFloat64(bias).map((v) => v * scale) : new Float64Array(out);
  const ptp = new Float64Array(k * k);
  gemm({ m: k, n: k, k: out, a: p, transA: true, b: p, c: ptp });
  const pt = new Float64Array(k * out);
  for (let o = 0; o < out; o++) for (let r = 0; r < k; r++) pt[r * out + o] = p[o * k + r];
  const g = ridgeSolve(ptp, pt, k, out, 1e-9); // k x out
  return {
    name: second.name,
    width: out,
    map: (y, count) => {
      const z = new Float64Array(count * k);
      for (let row = 0; row < count; row++) {
        for (let r = 0; r < k; r++) {
          let acc = 0;
          for (let o = 0; o < out; o++) acc += g[r * out + o] * (y[row * out + o] - b[o]);
          z[row * k + r] = acc;
        }
      }
      return z;
    },
  };
}

/** The refit of the second factors and BN re-estimation with data (each on by default then); what ran. */
function recoverFactors(
  original: Module | null,
  module: Module,
  layers: readonly Op[],
  options: OptionValues<typeof svdOptions>,
  ctx: PassContext,
): string {
  if (ctx.calibration === null) {
    for (const name of ["reconstruct", "recalibrate-bn"] as const) {
      if (options[name === "reconstruct" ? "reconstruct" : "recalibrateBn"] === true) {
        ctx.emit("warning", `${name} needs calibration data (--calib); skipped`);
      }
    }
    return options.biasCorrect ? "bias-correct" : "none";
  }
  const ran: string[] = [];
  if (original !== null && layers.length > 0) {
    const targets = new Map<Op, RefitTarget>();
    for (const op of layers) {
      const first = op.operand(0)?.producer;
      const target = first ? projectedTarget(op) : null;
      if (first && target !== null) targets.set(first, target);
    }
    const all = [...targets.keys(), ...layers];
    ctx.stat("refit", refitStats(reconstruct(original, module, all, ctx, { targets })));
    ran.push("reconstruct");
  }
  if (
    (options.recalibrateBn === true || (options.recalibrateBn === undefined && !ran.includes("reconstruct"))) &&
    layers.length > 0 &&
    module.graph.ops.some((op) => op.type === "BatchNormalization")
  ) {
    recalibrateBn(module, ctx);
    ran.push("recalibrate-bn");
  }
  return ran.length > 0 ? ran.join(",") : "none";
}

/** Largest k with `k * perRank < total` for both params and MACs (and k at most the full rank). */
function maxUseful(params: number, paramsPerRank: number, macs: number, macsPerRank: number, full: number): number {
  const byParams = Math.ceil(params / paramsPerRank) - 1;
  const byMacs = Math.ceil(macs / macsPerRank) - 1;
  return Math.max(0, Math.min(full, byParams, byMacs));
}

/** Smaller side up to which the Gram matrix's eigenvectors give the triplets (about 9 n^3 flops). */
const GRAM_VECTORS_LIMIT = 512;
/** Smaller side up to which the Gram matrix's eigenvalues give the whole spectrum (about 4/3 n^3 flops; 9 n^3 more to factor). */
const GRAM_VALUES_LIMIT = 1024;
/**
 * Share of the allowed energy loss `1 - energy` that a large layer's best
 * useful rank must leave unused for the layer to be grown (option
 * `large=estimate`, the default; `large=exact` always grows): one whose best
 * useful rank is estimated ({@linkcode estimateEnergyFraction}, error about
 * 0.003 on random layers) to hold less than `1 - (1 - GROWTH_LAG) (1 - energy)`
 * is left alone without growing. Such a layer is one the exact rule skips or
 * factors at nearly its largest useful rank (saving a few percent of it), where
 * the grown basis often ends short anyway (at 1024 x 3136, energy=0.9, the
 * best useful rank holds 0.912 and the growth ends short) and a near-full
 * growth costs minutes on a VGG-16 classifier layer (random 4096 x 25088: the
 * best useful rank, 3521, holds about 0.935; the exact rule would keep about
 * 3270 for 7% fewer parameters). A factored layer's rank is never below the
 * exact rule's (the grown basis holds the target).
 */
const GROWTH_LAG = 0.5;

/**
 * Spectrum of the (whitened) layer matrix and its triplets on demand: exact
 * from the Gram matrix when the smaller side is at most 1024 (eigenvectors
 * computed at once up to 512, where nearly every layer is factored), else the
 * leading values of a randomized SVD with as many triplets as the selection
 * rule needs (energy: grown by blocks until they hold the target, so the rank
 * picked is never below the exact rule's; none when no useful rank holds it or
 * the estimate says the growth cannot reach it, see {@linkcode GROWTH_LAG}).
 */
function spectralOf(
  layer: Layer,
  fixed: number | null,
  whitenWith: Float64Array | null,
  covariance: Float64Array | null,
  energyTarget: number,
  budget: number | undefined,
  large: "estimate" | "exact" = "estimate",
): Spectral {
  const { rows, cols } = layer;
  let matrix = layer.matrix;
  let whitening: Float64Array | null = null;
  if (whitenWith !== null) {
    // C + eps I with eps relative to the mean diagonal: keeps L invertible for dead inputs.
    const c = new Float64Array(whitenWith);
    let trace = 0;
    for (let i = 0; i < cols; i++) trace += c[i * cols + i];
    const eps = Math.max(1e-6 * (trace / cols), 1e-12);
    for (let i = 0; i < cols; i++) c[i * cols + i] += eps;
    whitening = cholesky(c, cols);
    const mw = new Float64Array(rows * cols);
    gemm({ m: rows, n: cols, k: cols, a: matrix, b: whitening, c: mw });
    matrix = mw;
  }
  let energy = 0;
  for (let i = 0; i < matrix.length; i++) energy += matrix[i] * matrix[i];
  const full = Math.min(rows, cols);
  if (full <= GRAM_VECTORS_LIMIT) {
    // Exact spectrum and triplets from the small side's Gram matrix (see gramSpectrum for the error bound).
    const { s, triplets } = gramSpectrum(matrix, rows, cols);
    return { layer, spectrum: s, triplets: lastOf(triplets), energy, whitening, covariance };
  }
  if (full <= GRAM_VALUES_LIMIT) {
    // Exact spectrum (eigenvalues alone); the eigenvectors only for a layer the rule factors.
    const { s, triplets } = gramSpectrum(matrix, rows, cols, false);
    return { layer, spectrum: s, triplets: lastOf(triplets), energy, whitening, covariance };
  }
  const a32 = matrix instanceof Float32Array ? matrix : Float32Array.from(matrix);
  let svd: Svd;
  if (fixed !== null) {
    svd = randomizedSvd(a32, rows, cols, fixed);
  } else if (budget !== undefined) {
    svd = randomizedSvd(a32, rows, cols, Math.min(layer.maxUsefulRank, 512));
  } else {
    // Energy on a large layer (large=estimate): first an estimate of what the best useful rank holds (a few
    // passes over A); only a layer it leaves within reach gets the basis grown by blocks until it holds the
    // target (null: no useful rank does).
    const reachable = large === "exact" ||
      estimateEnergyFraction(a32, rows, cols, layer.maxUsefulRank) >= 1 - (1 - GROWTH_LAG) * (1 - energyTarget);
    const grown = reachable ? growingSvd(a32, rows, cols, layer.maxUsefulRank, energyTarget * energy) : null;
    if (grown === null) {
      const none = (): Svd => {
        throw new Error("no triplets: no useful rank holds the energy target");
      };
      return { layer, spectrum: new Float64Array(0), triplets: none, energy, whitening, covariance };
    }
    svd = grown;
  }
  const known = svd;
  return { layer, spectrum: svd.s, triplets: (k) => truncate(known, k), energy, whitening, covariance };
}

/**
 * The last triplets asked of any layer: the factors and the weight error ask for the same k in turn. One slot
 * for all layers, so a pass holds one layer's triplets (float64, as large as its factors) rather than every layer's.
 */
let lastTriplets: { of: (k: number) => Svd; svd: Svd } | null = null;

/** `triplets` answering a repeated question from {@linkcode lastTriplets}. */
function lastOf(triplets: (k: number) => Svd): (k: number) => Svd {
  const cached = (k: number): Svd => {
    if (lastTriplets !== null && lastTriplets.of === cached && lastTriplets.svd.k === k) return lastTriplets.svd;
    lastTriplets = { of: cached, svd: triplets(k) };
    return lastTriplets.svd;
  };
  return cached;
}

/** Fewest singular values whose squares reach `target` of the total energy (full rank + 1 when never). */
function energyRank(sp: Spectral, target: number): number {
  let kept = 0;
  const s = sp.spectrum;
  for (let k = 0; k < s.length; k++) {
    kept += s[k] * s[k];
    // A tiny tolerance so that energy=1 keeps exactly the numerically non-zero spectrum.
    if (kept >= target * sp.energy * (1 - 1e-12)) return k + 1;
  }
  return Math.min(sp.layer.rows, sp.layer.cols) + 1;
}

/**
 * Global budget: start every layer unfactored and repeatedly take the step
 * (unfactored → largest useful rank, or rank k → k-1) that loses the least
 * relative energy per unit of cost saved, until the total cost is at most
 * `budget` times the original. Returns each layer's rank (0: unfactored).
 */
function budgetRanks(spectra: readonly Spectral[], budget: number, metric: string): Map<Spectral, number> {
  const cost = (sp: Spectral, k: number): number => {
    const l = sp.layer;
    if (k === 0) return metric === "macs" ? l.macs : l.params;
    return k * (metric === "macs" ? l.macsPerRank : l.paramsPerRank);
  };
  const ranks = new Map<Spectral, number>();
  let total = 0;
  let original = 0;
  const prefix = new Map<Spectral, Float64Array>();
  for (const sp of spectra) {
    ranks.set(sp, 0);
    total += cost(sp, 0);
    original += cost(sp, 0);
    const s = sp.spectrum;
    const p = new Float64Array(s.length + 1);
    for (let i = 0; i < s.length; i++) p[i + 1] = p[i] + s[i] * s[i];
    prefix.set(sp, p);
  }
  const target = budget * original;
  while (total > target) {
    let best: Spectral | null = null;
    let bestRatio = Infinity;
    let bestNext = 0;
    for (const sp of spectra) {
      const k = ranks.get(sp)!;
      const p = prefix.get(sp)!;
      const next = k === 0 ? Math.min(sp.layer.maxUsefulRank, sp.spectrum.length) : k - 1;
      if (next < 1) continue;
      const kept = (r: number): number => (r === 0 ? sp.energy : p[Math.min(r, p.length - 1)]);
      const lost = (kept(k) - kept(next)) / Math.max(sp.energy, 1e-300);
      const saved = cost(sp, k) - cost(sp, next);
      if (saved <= 0) continue;
      const ratio = Math.max(lost, 0) / saved;
      if (ratio < bestRatio) {
        bestRatio = ratio;
        best = sp;
        bestNext = next;
      }
    }
    if (best === null) break;
    total += cost(best, bestNext) - cost(best, ranks.get(best)!);
    ranks.set(best, bestNext);
  }
  return ranks;
}

/** `P = U sqrt(S)` (rows x k) and `Q = sqrt(S) V^T L^{-1}` (k x cols; no `L^{-1}` without whitening). */
function factors(sp: Spectral, k: number): { p: Float64Array; q: Float64Array } {
  const { rows, cols } = sp.layer;
  const svd = sp.triplets(k);
  const p = new Float64Array(rows * k);
  let q: Float64Array = new Float64Array(k * cols);
  for (let j = 0; j < k; j++) {
    const r = Math.sqrt(svd.s[j]);
    for (let i = 0; i < rows; i++) p[i * k + j] = svd.u[i * svd.k + j] * r;
    for (let i = 0; i < cols; i++) q[j * cols + i] = svd.vt[j * cols + i] * r;
  }
  if (sp.whitening !== null) q = solveLowerRight(q, k, sp.whitening, cols);
  return { p, q };
}

/** `||M - P Q||_F / ||M||_F`, from the spectrum when the SVD is of M itself, else explicitly. */
function relativeWeightError(l: Layer, p: Float64Array, q: Float64Array, k: number, sp: Spectral): number {
  let norm = 0;
  for (let i = 0; i < l.matrix.length; i++) norm += l.matrix[i] * l.matrix[i];
  if (norm === 0) return 0;
  if (sp.whitening === null) {
    let kept = 0;
    // The values of the triplets the factors came from: ||M||^2 - their sum is the exact error of that projection.
    const s = sp.triplets(k).s;
    for (let i = 0; i < k; i++) kept += s[i] * s[i];
    return Math.sqrt(Math.max(0, norm - kept) / norm);
  }
  const d = Float64Array.from(l.matrix);
  gemm({ m: l.rows, n: l.cols, k, a: p, b: q, c: d, alpha: -1, beta: 1 });
  let err = 0;
  for (let i = 0; i < d.length; i++) err += d[i] * d[i];
  return Math.sqrt(err / norm);
}

/** `sqrt(tr(D C D^T) / tr(M C M^T))` with `D = M - P Q`: relative output error over the calibration rows. */
function relativeOutputError(l: Layer, p: Float64Array, q: Float64Array, k: number, c: Float64Array): number {
  const n = l.cols;
  const d = Float64Array.from(l.matrix);
  gemm({ m: l.rows, n, k, a: p, b: q, c: d, alpha: -1, beta: 1 });
  const quad = (x: FloatArray): number => {
    const xc = new Float64Array(l.rows * n);
    gemm({ m: l.rows, n, k: n, a: x, b: c, c: xc });
    let t = 0;
    for (let i = 0; i < xc.length; i++) t += xc[i] * x[i];
    return t;
  };
  const base = quad(l.matrix);
  return base <= 0 ? 0 : Math.sqrt(Math.max(0, quad(d)) / base);
}

/** Rows sampled from each conv layer's patches: enough for a covariance, bounded in cost. */
const MAX_PATCHES = 8192;

/**
 * `X^T X` of each layer's inputs over the calibration data: FC input rows
 * (`op(A)`), or conv patches laid out as the weight's `Cin x Kh x Kw`.
 */
function inputCovariances(
  module: Module,
  layers: readonly Layer[],
  calibration: Readonly<Record<string, Tensor>>,
  ctx: PassContext,
): Map<Op, Float64Array> {
  const result = new Map<Op, Float64Array>();
  if (layers.length === 0) return result;
  const probes = layers.map((l) => l.op.operand(0)!);
  let activations: Record<string, Tensor>;
  try {
    activations = new Interpreter(module, { registry: ctx.ops, probes }).run(calibration);
  } catch (e) {
    ctx.emit("warning", `calibration run failed (${e instanceof Error ? e.message : e}); no output errors`);
    return result;
  }
  for (const l of layers) {
    const x = activations[l.op.operand(0)!.name];
    if (x === undefined) continue;
    const rowsOf = l.kind === "conv-channel" ? convPatches(l.op, x, l.weight.constant!.shape) : fcRows(l.op, x, l.cols);
    if (rowsOf === null) {
      ctx.log(`op "${l.op.name}": input layout not supported for calibration statistics`);
      continue;
    }
    const { data, count } = rowsOf;
    const c = new Float64Array(l.cols * l.cols);
    gemm({ m: l.cols, n: l.cols, k: count, a: data, transA: true, b: data, c });
    result.set(l.op, c);
  }
  return result;
}

/** FC input rows `op(A)` (count x n). */
function fcRows(op: Op, x: Tensor, n: number): { data: Float64Array; count: number } | null {
  const values = toFloat64(x);
  if (op.type === "Gemm" && op.flag("transA")) {
    if (x.shape.length !== 2 || x.shape[0] !== n) return null;
    const count = x.shape[1];
    const data = new Float64Array(count * n);
    for (let i = 0; i < n; i++) for (let r = 0; r < count; r++) data[r * n + i] = values[i * count + r];
    return { data, count };
  }
  if (x.shape[x.shape.length - 1] !== n) return null;
  return { data: values, count: values.length / n };
}

/** Patches of a 2-D conv input (sampled up to MAX_PATCHES), each laid out `Cin x Kh x Kw`. */
function convPatches(op: Op, x: Tensor, wShape: readonly number[]): { data: Float64Array; count: number } | null {
  const autoPad = op.string("auto_pad", "NOTSET");
  if (x.shape.length !== 4 || wShape.length !== 4 || (autoPad !== "NOTSET" && autoPad !== "VALID")) return null;
  const [batch, cin, h, w] = x.shape;
  const [, , kh, kw] = wShape;
  const [sh, sw] = op.ints("strides", [1, 1])!;
  const [dh, dw] = op.ints("dilations", [1, 1])!;
  const [pt, pl, pb, pr] = autoPad === "VALID" ? [0, 0, 0, 0] : op.ints("pads", [0, 0, 0, 0])!;
  const hOut = Math.floor((h + pt + pb - dh * (kh - 1) - 1) / sh) + 1;
  const wOut = Math.floor((w + pl + pr - dw * (kw - 1) - 1) / sw) + 1;
  const total = batch * hOut * wOut;
  const step = Math.max(1, Math.ceil(total / MAX_PATCHES));
  const count = Math.ceil(total / step);
  const n = cin * kh * kw;
  const values = toFloat64(x);
  const data = new Float64Array(count * n);
  let row = 0;
  for (let idx = 0; idx < total; idx += step, row++) {
    const b = Math.floor(idx / (hOut * wOut));
    const i = Math.floor(idx / wOut) % hOut;
    const j = idx % wOut;
    let col = 0;
    for (let c = 0; c < cin; c++) {
      for (let y = 0; y < kh; y++) {
        const yy = i * sh + y * dh - pt;
        for (let xk = 0; xk < kw; xk++, col++) {
          const xx = j * sw + xk * dw - pl;
          data[row * n + col] = yy >= 0 && yy < h && xx >= 0 && xx < w ? values[((b * cin + c) * h + yy) * w + xx] : 0;
        }
      }
    }
  }
  return { data, count: row };
}

function withDim(type: TensorType | null, axis: number, size: number): TensorType | null {
  if (type === null || type.shape === null) return null;
  const shape = [...type.shape];
  shape[axis < 0 ? shape.length + axis : axis] = size;
  return { elem: type.elem, shape };
}

/**
 * Replace the layer by its two factors: a new op computing the rank-k
 * intermediate is inserted before it, and the layer itself becomes the second
 * factor (keeping its name, result and bias).
 */
function rewrite(l: Layer, p: Float64Array, q: Float64Array, k: number, opset: number): void {
  const op = l.op;
  const graph = op.graph!;
  const dtype = l.weight.constant!.dtype;
  const input = op.operand(0)!;
  const base = op.name === "" ? l.weight.name : op.name;
  const resultType = isTensorType(op.result.type) ? op.result.type : null;
  let first: Op;
  const mid = (type: TensorType | null): Value => new Value(graph.freshName(`${op.result.name}.svd`), type);
  if (l.kind === "gemm") {
    const transA = op.flag("transA");
    const v = addConstant(graph, `${base}.svd.v`, fromFloat64(dtype, [k, l.cols], q));
    const u = addConstant(graph, `${base}.svd.u`, fromFloat64(dtype, [l.rows, k], p));
    // Before opset 11 Gemm's C is required: the first factor gets a zero bias there.
    const zero = opset < 11
      ? [addConstant(graph, `${base}.svd.zero`, fromFloat64(dtype, [k], new Float64Array(k)))]
      : [];
    first = new Op({
      name: graph.freshOpName(`${base}.svd`),
      type: "Gemm",
      operands: [input, v, ...zero],
      results: [mid(withDim(resultType, 1, k))],
      attributes: transA ? [["transA", attr.int(1)], ["transB", attr.int(1)]] : [["transB", attr.int(1)]],
    });
    insertBefore(op, first);
    op.setOperand(0, first.result);
    op.setOperand(1, u);
    op.attributes.delete("transA");
    op.attributes.delete("alpha");
    op.attributes.set("transB", attr.int(1));
  } else if (l.kind === "matmul") {
    const vt = new Float64Array(l.cols * k);
    for (let i = 0; i < k; i++) for (let j = 0; j < l.cols; j++) vt[j * k + i] = q[i * l.cols + j];
    const ut = new Float64Array(k * l.rows);
    for (let i = 0; i < l.rows; i++) for (let j = 0; j < k; j++) ut[j * l.rows + i] = p[i * k + j];
    const v = addConstant(graph, `${base}.svd.v`, fromFloat64(dtype, [l.cols, k], vt));
    const u = addConstant(graph, `${base}.svd.u`, fromFloat64(dtype, [k, l.rows], ut));
    first = new Op({
      name: graph.freshOpName(`${base}.svd`),
      type: "MatMul",
      operands: [input, v],
      results: [mid(withDim(resultType, -1, k))],
    });
    insertBefore(op, first);
    op.setOperand(0, first.result);
    op.setOperand(1, u);
  } else if (l.kind === "conv-channel") {
    const wShape = l.weight.constant!.shape;
    const spatialRank = wShape.length - 2;
    const v = addConstant(graph, `${base}.svd.v`, fromFloat64(dtype, [k, ...wShape.slice(1)], q));
    const u = addConstant(graph, `${base}.svd.u`, fromFloat64(dtype, [l.rows, k, ...Array(spatialRank).fill(1)], p));
    first = new Op({
      name: graph.freshOpName(`${base}.svd`),
      type: "Conv",
      operands: [input, v],
      results: [mid(withDim(resultType, 1, k))],
      attributes: [...op.attributes].filter(([name]) => name !== "group"),
    });
    insertBefore(op, first);
    op.setOperand(0, first.result);
    op.setOperand(1, u);
    op.attributes.delete("auto_pad");
    op.attributes.delete("group");
    const ones = Array(spatialRank).fill(1);
    for (const name of ["kernel_shape", "strides", "dilations"]) op.attributes.set(name, attr.ints(ones));
    op.attributes.set("pads", attr.ints(Array(2 * spatialRank).fill(0)));
  } else {
    const [cout, cin, kh, kw] = l.weight.constant!.shape;
    const [sh, sw] = op.ints("strides", [1, 1])!;
    const [dh, dw] = op.ints("dilations", [1, 1])!;
    const valid = op.string("auto_pad", "NOTSET") === "VALID";
    const [pt, pl, pb, pr] = valid ? [0, 0, 0, 0] : op.ints("pads", [0, 0, 0, 0])!;
    // V[k, c, y, 0] = P[(c, y), k]; H[o, k, 0, x] = Q[k, (o, x)].
    const vData = new Float64Array(k * cin * kh);
    for (let r = 0; r < k; r++) {
      for (let c = 0; c < cin; c++) {
        for (let y = 0; y < kh; y++) vData[(r * cin + c) * kh + y] = p[(c * kh + y) * k + r];
      }
    }
    const hData = new Float64Array(cout * k * kw);
    for (let o = 0; o < cout; o++) {
      for (let r = 0; r < k; r++) for (let x = 0; x < kw; x++) hData[(o * k + r) * kw + x] = q[r * l.cols + o * kw + x];
    }
    const v = addConstant(graph, `${base}.svd.v`, fromFloat64(dtype, [k, cin, kh, 1], vData));
    const h = addConstant(graph, `${base}.svd.u`, fromFloat64(dtype, [cout, k, 1, kw], hData));
    const inType = isTensorType(input.type) ? input.type : null;
    let midType: TensorType | null = withDim(resultType, 1, k);
    if (midType !== null && inType !== null && inType.shape !== null) {
      midType = { elem: midType.elem, shape: [...midType.shape!.slice(0, 3), inType.shape[3]] };
    } else midType = null;
    first = new Op({
      name: graph.freshOpName(`${base}.svd`),
      type: "Conv",
      operands: [input, v],
      results: [mid(midType)],
      attributes: [
        ["kernel_shape", attr.ints([kh, 1])],
        ["strides", attr.ints([sh, 1])],
        ["pads", attr.ints([pt, 0, pb, 0])],
        ["dilations", attr.ints([dh, 1])],
      ],
    });
    insertBefore(op, first);
    op.setOperand(0, first.result);
    op.setOperand(1, h);
    op.attributes.delete("auto_pad");
    op.attributes.delete("group");
    const second: [string, number[]][] = [
      ["kernel_shape", [1, kw]],
      ["strides", [1, sw]],
      ["pads", [0, pl, 0, pr]],
      ["dilations", [1, dw]],
    ];
    for (const [name, value] of second) op.attributes.set(name, attr.ints(value));
  }
  eraseConstantIfUnused(l.weight);
}

/**
 * Factor one op at rank `k` without any cost check (full rank included): the
 * building block of the pass, exported for tests and tools that want an exact
 * re-parameterization. Shapes must be inferred (`inferShapes`) first.
 *
 * @returns The relative weight error of the factorization.
 * @throws {Error} When the op is not a decomposable FC or groups=1 Conv with a constant float weight.
 */
export function factorizeOp(module: Module, op: Op, k: number, mode: "channel" | "spatial" = "channel"): number {
  const layer = collectLayers(module, mode, () => {}).find((l) => l.op === op);
  if (layer === undefined) {
    throw new Error(`op "${op.name}" (${op.type}): not a decomposable FC or groups=1 Conv with a constant weight`);
  }
  k = Math.max(1, Math.min(k, Math.min(layer.rows, layer.cols)));
  const sp = spectralOf(layer, k, null, null, 1, 1);
  const { p, q } = factors(sp, k);
  const error = relativeWeightError(layer, p, q, k, sp);
  rewrite(layer, p, q, k, module.opset(""));
  return error;
}
