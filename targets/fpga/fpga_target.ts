/**
 * The FPGA target: a fixed-point/BFP weight image (`<model>.fpga.bin`, format
 * in `image.ts`) that a sequencer can run the network from, its memory
 * initialization companions (`.coe`, `.mif`, `.mem` per layer and segment)
 * and `<model>.manifest.json`, plus per-layer estimates (cycles, BRAM18, DSP).
 * @module
 */
import type { StatValue } from "../../passes/pass.ts";
import { type Artifacts, defineTarget, type Target } from "../target.ts";
import { coeFile, memFile, mifFile } from "./companions.ts";
import {
  foldGeometry,
  FPGA_IMAGE_VERSION,
  type FpgaLayout,
  type FpgaSegment,
  SEGMENT_KINDS,
  writeFpgaImage,
} from "./image.ts";
import { legalizeFpga } from "./legalize.ts";
import type { BfpLayerPlan } from "../../ir/bfp/plan.ts";
import { writeNpy } from "../../data/npy.ts";
import { BFP_ROUNDINGS } from "../../ir/bfp/format.ts";
import { tensor } from "../../ir/tensor.ts";
import { goldenVectors, hexLines, type LayerVectors, paramsVh } from "./vectors.ts";

/** Generator string in the manifest (the package version; a test keeps it equal to deno.json's). */
export const FPGA_GENERATOR = "@cnnc/compiler 0.1.0 fpga target";

/** The companion kinds of the `companions` option. */
export const FPGA_COMPANIONS: readonly string[] = ["coe", "mif", "mem", "manifest"];

/**
 * Options of the `fpga` target. Defaults: `pe=4, simd=8` (32 multipliers per
 * layer: small enough for the bundled MNIST nets on a small device, and
 * dividing the 8/16/32/64-channel layers of typical CNNs, so only the first
 * layer pads); `word-bits=64` (a 64-bit AXI data bus; a fold word of 4·8·8 bits is 4 words).
 */
export const fpgaTargetOptions = {
  pe: { kind: "int", default: 4, min: 1, max: 65535, doc: "Processing elements: output channels per fold word" },
  simd: { kind: "int", default: 8, min: 1, max: 65535, doc: "SIMD lanes: reduction elements per PE per fold word" },
  wordBits: {
    kind: "int",
    default: 64,
    min: 1,
    max: 65535,
    doc: "Memory word width in bits (at least the mantissa width); fold words are split into words of this width",
  },
  layout: {
    kind: "enum",
    values: ["ohwi", "oihw"],
    default: "ohwi",
    doc: "Order of the reduction axis: ohwi (taps outer, channels inner, as sliding windows read) or oihw (ONNX)",
  },
  vectors: {
    kind: "int",
    default: 0,
    min: 0,
    max: 65535,
    doc: "Golden test vectors for the first N calibration samples (needs --calib): PE input patches and " +
      "expected accumulators per layer, as .mem and .npy, with a params.vh for rtl/tb_layer.v",
  },
  vectorPositions: {
    kind: "int",
    default: 64,
    min: 1,
    max: 1 << 20,
    doc: "Output positions per sample in the golden vectors (evenly spread; all when the layer has fewer)",
  },
  companions: {
    kind: "list",
    default: ["coe", "mif", "mem", "manifest"],
    doc: "Companion files: coe (Xilinx), mif (Intel), mem ($readmemh), manifest (JSON)",
  },
} as const;

/** BRAM18 aspect ratios (depth x width) of a 7-series/UltraScale RAMB18 in simple dual-port mode. */
const BRAM18_SHAPES: readonly [number, number][] = [[512, 36], [1024, 18], [2048, 9], [4096, 4], [8192, 2], [16384, 1]];

/**
 * BRAM18 blocks for a memory of `depth` words of `width` bits: the cheapest
 * aspect ratio, `min over (d, w) of ceil(width / w) · ceil(depth / d)`
 * (512x36 ... 16384x1); 0 for an empty memory.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bram18Blocks } from "./fpga_target.ts";
 * assert.equal(bram18Blocks(512, 64), 2); // two 512x36
 * assert.equal(bram18Blocks(1024, 8), 1); // 2048x9
 * assert.equal(bram18Blocks(0, 64), 0);
 * ```
 */
export function bram18Blocks(depth: number, width: number): number {
  if (depth === 0 || width === 0) return 0;
  return Math.min(...BRAM18_SHAPES.map(([d, w]) => Math.ceil(width / w) * Math.ceil(depth / d)));
}

/** The estimate of one Conv/Gemm layer. */
interface LayerEstimate {
  readonly [key: string]: StatValue;
  readonly layer: string;
  readonly cycles: number;
  readonly bram18: number;
  readonly dsp: number;
}

const sanitize = (name: string): string => name.replace(/[^A-Za-z0-9_.-]/g, "_");

/**
 * `fpga`: the image, companions and manifest of a lowered module
 * (`fold-bn,canonicalize,dce,bfp` or `fixed`). Estimates per Conv/Gemm layer,
 * for batch 1: `cycles = ceil(O/PE) · ceil(K/SIMD) · outputPositions`
 * (one fold word per cycle; output positions are the output's spatial size, 1
 * for a Gemm); `bram18` = {@linkcode bram18Blocks} of the mantissa memory
 * (`words x word-bits`), the exponent memory (`blocks x 8`) and the bias memory
 * (`3·O x 32`); `dsp = PE · SIMD` (one DSP slice per multiplier; INT8 packing of
 * two multipliers per DSP48E2 would halve it). They go to the report's
 * `target.stats.estimates`, a note, and the manifest.
 *
 * @example Bad options and float layers are one line each
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { float32Tensor } from "../../ir/tensor.ts";
 * import { fpgaTarget } from "./fpga_target.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 2] }));
 * const w = g.addConstant("w", float32Tensor([2, 2], [1, 2, 3, 4]), { elem: "f32", shape: [2, 2] });
 * g.outputs.push(g.addOp(new Op({ name: "fc", type: "Gemm", operands: [x, w], results: [new Value("y")] })).result);
 * const options = { pe: 4, simd: 8, wordBits: 64, layout: "ohwi" as const, vectors: 0, vectorPositions: 64,
 *   companions: [] };
 * await assert.rejects(async () => await fpgaTarget.emit(new Module(g), options, { modelName: "m", emit: () => {} }),
 *   /op "fc" \(Gemm\) is still float: run bfp \(or fixed\) first/);
 * ```
 */
export const fpgaTarget: Target<typeof fpgaTargetOptions> = defineTarget({
  name: "fpga",
  summary: "FPGA weight image (<model>.fpga.bin) with .coe/.mif/.mem companions and <model>.manifest.json",
  exclusive: /\.fpga\.bin$/,
  options: fpgaTargetOptions,
  emit(module, options, ctx): Artifacts {
    const { pe, simd, wordBits } = options;
    const layout = options.layout as FpgaLayout;
    for (const c of options.companions) {
      if (!FPGA_COMPANIONS.includes(c)) {
        throw new Error(`option companions: unknown companion "${c}" (expected some of ${FPGA_COMPANIONS.join(", ")})`);
      }
    }
    const network = legalizeFpga(module, layout, pe, simd);
    const { format } = network;
    if (wordBits < format.mantissaBits) {
      throw new Error(`option word-bits=${wordBits} is below the mantissa width of ${format.mantissaBits} bits`);
    }
    const written = writeFpgaImage(
      network.layers,
      {
        mantissaBits: format.mantissaBits,
        exponentBits: format.exponentBits,
        rounding: format.rounding,
        neverClamp: format.exponentRule === "never-clamp",
        seed: format.seed,
        hasBfp: network.hasBfp,
        hasFixed: network.hasFixed,
      },
      { pe, simd, wordBits, layout },
      network.tensors.length,
    );

    const artifacts: Artifacts = new Map([[`${ctx.modelName}.fpga.bin`, written.bytes]]);
    let vectors: (LayerVectors | null)[] | null = null;
    if (options.vectors > 0) {
      if (ctx.calibration === undefined) {
        throw new Error(`option vectors=${options.vectors} needs calibration inputs: compile with --calib FILE.npy`);
      }
      if (!options.companions.includes("mem")) {
        throw new Error("option vectors needs the mem companion (the testbench reads the weight .mem files)");
      }
      vectors = goldenVectors(module, network.plans, ctx.calibration, options.vectors, options.vectorPositions, layout);
    }
    const encoder = new TextEncoder();
    const estimates: LayerEstimate[] = [];
    const manifestLayers: StatValue[] = [];
    network.layers.forEach((layer, index) => {
      const segments = written.segments.map((s, i) => ({ s, i })).filter(({ s }) => s.layer === index);
      const plan = network.plans[index];
      const prefix = `${ctx.modelName}.${String(index).padStart(2, "0")}_${sanitize(layer.name)}`;
      const companions: string[] = [];
      let estimate: LayerEstimate | null = null;
      let layerVectors: StatValue = null;
      if (plan !== null) {
        const O = plan.outChannels, K = plan.reduction;
        if (O % pe !== 0 || K % simd !== 0) {
          ctx.emit(
            "warning",
            `layer "${layer.name}": pe=${pe}, simd=${simd} do not divide O=${O}, K=${K}; ` +
              `padded with zeros to ${Math.ceil(O / pe) * pe} x ${
                Math.ceil(K / simd) * simd
              } (recorded in the descriptor)`,
          );
        }
        const g = foldGeometry(O, K, plan.format.mantissaBits, { pe, simd, wordBits });
        const positions = (plan.geometry?.outShape ?? []).reduce((a, d) => a * d, 1);
        const memory = (kind: string): FpgaSegment | undefined => segments.find(({ s }) => s.kind === kind)?.s;
        const exps = memory("exponents"), bias = memory("bias");
        estimate = {
          layer: layer.name,
          cycles: g.neuronFolds * g.synapseFolds * positions,
          bram18: bram18Blocks(g.words, wordBits) + bram18Blocks(exps?.words ?? 0, 8) +
            bram18Blocks(bias?.words ?? 0, 32),
          dsp: pe * simd,
        };
        estimates.push(estimate);
        for (const { s, i } of segments) {
          if (s.kind === "descriptor") continue;
          const bytes = written.contents[i];
          const block = s.kind === "mantissas"
            ? g.synapseFolds * g.wordsPerFold
            : s.kind === "exponents"
            ? s.columns
            : 3;
          const files: [string, () => Uint8Array][] = [
            ["coe", () => coeFile(bytes, s.wordBits)],
            ["mif", () => mifFile(bytes, s.wordBits)],
            ["mem", () => memFile(bytes, s.wordBits, Math.max(1, block))],
          ];
          for (const [ext, file] of files) {
            if (!options.companions.includes(ext)) continue;
            const name = `${prefix}.${s.kind}.${ext}`;
            artifacts.set(name, file());
            companions.push(name);
          }
        }
        const v = vectors?.[index] ?? null;
        if (v !== null) {
          layerVectors = emitVectors(artifacts, prefix, layer.name, plan, v, {
            L: plan.format.mantissaBits,
            PE: pe,
            SIMD: simd,
            WB: wordBits,
            WPF: g.wordsPerFold,
            NF: g.neuronFolds,
            SF: g.synapseFolds,
            WWORDS: g.words,
            LAYOUT: layout === "ohwi" ? 0 : 1,
            ROUND: BFP_ROUNDINGS.indexOf(format.rounding),
            EBIAS: (1 << (format.exponentBits - 1)) - 1,
          });
        }
      }
      manifestLayers.push({
        index,
        name: layer.name,
        kind: layer.kind,
        descriptor: Object.fromEntries(Object.entries(layer.descriptor).map(([k, v]) => [k, [...v!]])),
        segments: segments.map(({ s, i }) => ({
          index: i,
          kind: s.kind,
          offset: s.offset,
          bytes: s.size,
          crc32: `0x${s.crc32.toString(16).padStart(8, "0")}`,
          wordBits: s.wordBits,
          elementBits: s.elementBits,
          words: s.words,
          elements: s.elements,
          rows: s.rows,
          columns: s.columns,
          block: s.block,
          padded: s.padded,
          elementLayout: elementLayout(s, layout),
        })),
        companions,
        estimate,
        ...(vectors === null ? {} : { vectors: layerVectors }),
      });
    });
    const totals = {
      cycles: estimates.reduce((a, e) => a + e.cycles, 0),
      bram18: estimates.reduce((a, e) => a + e.bram18, 0),
      dsp: estimates.reduce((a, e) => a + e.dsp, 0),
    };
    const estimateStat = {
      formula: "cycles = ceil(O/PE) * ceil(K/SIMD) * outputPositions; bram18 = cheapest 512x36..16384x1 tiling of " +
        "each memory; dsp = PE * SIMD",
      layers: estimates,
      totals,
    };
    ctx.stat?.("estimates", estimateStat);
    ctx.stat?.("image-bytes", written.bytes.length);
    ctx.stat?.(
      "segments",
      written.segments.map((s) => ({
        layer: network.layers[s.layer].name,
        kind: s.kind,
        offset: s.offset,
        bytes: s.size,
      })),
    );
    ctx.emit(
      "note",
      `estimates (pe=${pe}, simd=${simd}, word-bits=${wordBits}): ${totals.cycles} cycles per sample, ` +
        `${totals.bram18} BRAM18, ${totals.dsp} DSP over ${estimates.length} layers`,
    );
    if (options.companions.includes("manifest")) {
      const manifest = {
        format: "cnnc-fpga-image",
        version: FPGA_IMAGE_VERSION,
        generator: FPGA_GENERATOR,
        model: ctx.modelName,
        inputSha256: ctx.inputSha256 ?? null,
        pipeline: ctx.pipeline ?? null,
        image: {
          file: `${ctx.modelName}.fpga.bin`,
          bytes: written.bytes.length,
          payloadCrc32: `0x${new DataView(written.bytes.buffer).getUint32(44, true).toString(16).padStart(8, "0")}`,
        },
        numberFormat: { ...format, exponentBias: (1 << (format.exponentBits - 1)) - 1 },
        packing: { pe, simd, wordBits, layout },
        tensors: network.tensors,
        layers: manifestLayers,
        estimates: estimateStat,
        ...(vectors === null ? {} : {
          vectors: {
            samples: Math.min(options.vectors, ...Object.values(ctx.calibration!).map((t) => t.shape[0])),
            positionsPerSample: options.vectorPositions,
            selection: "per layer: every output position when it has at most vector-positions, else " +
              "floor(i * M / vector-positions) for i < vector-positions (M positions, evenly spread)",
            files: "per lowered layer: <prefix>.vectors.{patches,patch_exponents,acc,units}.{mem,npy}, " +
              "<prefix>.params.vh; patches [samples, positions, groups, K] (K in layout order), patch exponents " +
              "[samples, positions, groups, blocks] (-bias in the padding), acc (i64) and units (i32) " +
              "[samples, positions, O]; y = acc * 2^unit",
          },
        }),
      };
      artifacts.set(`${ctx.modelName}.manifest.json`, encoder.encode(JSON.stringify(manifest, null, 2) + "\n"));
    }
    return artifacts;
  },
});

function elementLayout(s: FpgaSegment, layout: FpgaLayout): string {
  switch (s.kind) {
    case "descriptor":
      return "i32 words: key | count << 16, then count i32 values";
    case "mantissas":
      return `W[O=${s.rows}, K=${s.columns}] (K in ${layout} order) in fold words (nf, sf), sf inner; element ` +
        `e = p*${s.simd} + s of a fold word (W[nf*${s.pe}+p, sf*${s.simd}+s]) at bits [${s.elementBits}*e+` +
        `${s.elementBits - 1} : ${s.elementBits}*e]; fold word = ${
          Math.ceil((s.pe * s.simd * s.elementBits) / s.wordBits)
        } words`;
    case "exponents":
      return s.block === 0
        ? "i8 per output channel (unbiased)"
        : `i8 per block of ${s.block} input channels at each tap (unbiased), [O, ${
          layout === "ohwi" ? "kh, kw, nb" : "nb, kh, kw"
        }]`;
    case "bias":
      return "3 i32 words per output channel: significand bm, exponent be (b = bm * 2^be), bias unit u_b";
  }
  return SEGMENT_KINDS.join(",");
}

/** Write one layer's vector files and `params.vh`; returns its manifest entry. */
function emitVectors(
  artifacts: Artifacts,
  prefix: string,
  name: string,
  plan: BfpLayerPlan,
  v: LayerVectors,
  packing: Readonly<Record<string, number>>,
): StatValue {
  const encoder = new TextEncoder();
  const S = v.samples, P = v.positions.length, G = v.groups, K = v.reduction, O = v.outChannels;
  const L = packing.L;
  const files: Record<string, { mem: string; npy: string }> = {};
  const add = (kind: string, mem: string, npy: Uint8Array): void => {
    const base = `${prefix}.vectors.${kind}`;
    artifacts.set(`${base}.mem`, encoder.encode(mem));
    artifacts.set(`${base}.npy`, npy);
    files[kind] = { mem: `${base}.mem`, npy: `${base}.npy` };
  };
  add(
    "patches",
    hexLines(v.patches, L),
    writeNpy(tensor(v.patches instanceof Int8Array ? "i8" : "i16", [S, P, G, K], v.patches)),
  );
  add(
    "patch_exponents",
    hexLines(v.patchExponents, 8),
    writeNpy(tensor("i8", [S, P, G, v.patchExponentCount], v.patchExponents)),
  );
  add(
    "acc",
    hexLines(v.accumulators, 64),
    writeNpy(tensor("i64", [S, P, O], BigInt64Array.from(v.accumulators, (a) => BigInt(a)))),
  );
  add("units", hexLines(v.units, 32), writeNpy(tensor("i32", [S, P, O], v.units)));
  const w = plan.weights, geometry = plan.geometry!;
  const taps = geometry.kernel.reduce((a, k) => a * k, 1), cg = plan.inChannels / plan.group;
  const numbers = {
    ...packing,
    A: plan.accumulator.bits,
    GUARD: plan.accumulator.guardBits,
    WPROD: plan.accumulator.productBits,
    K,
    O,
    CG: cg,
    TAPS: taps,
    WBLOCK: w.block,
    NB: w.block === 0 ? 1 : Math.ceil(cg / w.block),
    NBE: v.patchExponentCount,
    GROUPS: G,
    OG: O / G,
    S,
    P,
    HAS_BIAS: plan.bias === null ? 0 : 1,
  };
  const vh = paramsVh(name, numbers, {
    WMEM: `${prefix}.mantissas.mem`,
    EMEM: `${prefix}.exponents.mem`,
    BMEM: plan.bias === null ? "" : `${prefix}.bias.mem`,
    XMEM: files.patches.mem,
    XEMEM: files.patch_exponents.mem,
    ACCMEM: files.acc.mem,
    UNITMEM: files.units.mem,
  });
  artifacts.set(`${prefix}.params.vh`, encoder.encode(vh));
  return {
    samples: S,
    totalPositions: v.totalPositions,
    positions: [...v.positions],
    outputs: S * P * O,
    params: `${prefix}.params.vh`,
    files,
  };
}
