/**
 * ONNX import/export throughput on synthetic 100 MB and 500 MB models (chains
 * of 3x3 Conv + Relu with float32 weights, one Gemm head), next to Debian
 * python3-onnx's `onnx.load` / `onnx.save` on the same files
 * (`bench/onnx_io_reference.py`). Run: `deno bench -A bench/onnx_io_bench.ts`.
 * The models are written once to `$TMPDIR/cnnc_onnx_io_bench/`.
 */
import { join } from "node:path";
import { attr } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { Module } from "../ir/module.ts";
import { exportOnnx, saveOnnx } from "../ir/onnx/export.ts";
import { importOnnx, importOnnxFile } from "../ir/onnx/import.ts";
import { tensorType } from "../ir/types.ts";

const PYTHON = "/usr/bin/python3";
const DIR = join(Deno.env.get("TMPDIR") ?? "/tmp", "cnnc_onnx_io_bench");
const CHANNELS = 256;
/** One 3x3 conv weight: 256*256*9 float32 = 2.36 MB. */
const CONV_BYTES = CHANNELS * CHANNELS * 9 * 4;

/** A Conv/Relu chain with about `megabytes` MB of weights. All layers share one weight buffer (export copies it). */
function syntheticModel(megabytes: number): Module {
  const g = new Graph("synthetic");
  const weight = new Float32Array(CHANNELS * CHANNELS * 9);
  for (let i = 0; i < weight.length; i++) weight[i] = ((i * 2654435761) % 1000) / 1e5 - 0.005;
  const bias = new Float32Array(CHANNELS).fill(0.01);
  let x = g.addInput(new Value("input", tensorType("f32", [1, CHANNELS, 8, 8])));
  const layers = Math.round((megabytes * 1e6) / CONV_BYTES);
  for (let i = 0; i < layers; i++) {
    const w = g.addConstant(
      `conv${i}.weight`,
      { dtype: "f32", shape: [CHANNELS, CHANNELS, 3, 3], data: weight },
      tensorType("f32", [CHANNELS, CHANNELS, 3, 3]),
    );
    const b = g.addConstant(
      `conv${i}.bias`,
      { dtype: "f32", shape: [CHANNELS], data: bias },
      tensorType("f32", [CHANNELS]),
    );
    const conv = g.addOp(
      new Op({
        name: `conv${i}`,
        type: "Conv",
        operands: [x, w, b],
        results: [new Value(`conv${i}.out`, tensorType("f32", [1, CHANNELS, 8, 8]))],
        attributes: [["kernel_shape", attr.ints([3, 3])], ["pads", attr.ints([1, 1, 1, 1])]],
      }),
    );
    const relu = g.addOp(
      new Op({ name: `relu${i}`, type: "Relu", operands: [conv.result], results: [new Value(`relu${i}.out`)] }),
    );
    x = relu.result;
  }
  const flat = g.addOp(new Op({ name: "flatten", type: "Flatten", operands: [x], results: [new Value("flat")] }));
  const fc = g.addConstant(
    "fc.weight",
    { dtype: "f32", shape: [10, CHANNELS * 64], data: new Float32Array(10 * CHANNELS * 64).fill(0.001) },
    tensorType("f32", [10, CHANNELS * 64]),
  );
  const gemm = g.addOp(
    new Op({
      name: "fc",
      type: "Gemm",
      operands: [flat.result, fc],
      results: [new Value("logits", tensorType("f32", [1, 10]))],
      attributes: [["transB", attr.int(1)]],
    }),
  );
  g.outputs.push(gemm.result);
  return new Module(g, [["", 13]], 8);
}

/** Path of the synthetic model of `megabytes` MB, written on first use. */
function modelFile(megabytes: number): string {
  const path = join(DIR, `conv_chain_${megabytes}mb.onnx`);
  try {
    Deno.statSync(path);
  } catch {
    Deno.mkdirSync(DIR, { recursive: true });
    saveOnnx(syntheticModel(megabytes), path);
  }
  return path;
}

const sizes = [100, 500];
const files = new Map(sizes.map((mb) => [mb, modelFile(mb)]));
const megabytesOf = (path: string): number => Deno.statSync(path).size / 1e6;

/** Best time per benchmark name, for the MB/s table printed at the end. */
const best = new Map<string, { seconds: number; megabytes: number }>();
function timed(name: string, megabytes: number, fn: () => void): void {
  const start = performance.now();
  fn();
  const seconds = (performance.now() - start) / 1000;
  const prev = best.get(name);
  if (prev === undefined || seconds < prev.seconds) best.set(name, { seconds, megabytes });
}

for (const [mb, path] of files) {
  const size = megabytesOf(path);
  const bytes = Deno.readFileSync(path);
  const module = importOnnx(bytes);
  const out = join(DIR, `saved_${mb}mb.onnx`);
  const n = mb >= 500 ? 3 : 8;
  Deno.bench(`importOnnx ${mb} MB (decode bytes in memory)`, { group: `import ${mb}`, n, warmup: 1 }, () => {
    timed(`import ${mb} MB: decode`, size, () => importOnnx(bytes));
  });
  Deno.bench(`importOnnxFile ${mb} MB (read file + decode)`, { group: `import ${mb}`, n, warmup: 1 }, () => {
    timed(`import ${mb} MB: read + decode`, size, () => importOnnxFile(path));
  });
  Deno.bench(`exportOnnx ${mb} MB (encode to bytes)`, { group: `export ${mb}`, n, warmup: 1 }, () => {
    timed(`export ${mb} MB: encode`, size, () => exportOnnx(module));
  });
  Deno.bench(`saveOnnx ${mb} MB (encode + write file)`, { group: `export ${mb}`, n, warmup: 1 }, () => {
    timed(`export ${mb} MB: encode + write`, size, () => saveOnnx(module, out));
  });
}

/** python3-onnx's throughput on the same files, or null when it is not installed. */
function reference(): Record<string, Record<string, number>> | null {
  const script = new URL("./onnx_io_reference.py", import.meta.url).pathname;
  try {
    const out = new Deno.Command(PYTHON, { args: [script, "--repeat", "3", ...files.values()], stderr: "inherit" })
      .outputSync();
    return out.success ? JSON.parse(new TextDecoder().decode(out.stdout)) : null;
  } catch {
    return null;
  }
}

globalThis.addEventListener("unload", () => {
  const ref = reference();
  const rows: string[] = [];
  const mbps = (s: { seconds: number; megabytes: number } | undefined): string =>
    s === undefined ? "-" : (s.megabytes / s.seconds).toFixed(0);
  for (const [mb, path] of files) {
    const r = ref?.[path];
    const py = (key: string): string => r?.[key] === undefined ? "n/a" : r[key].toFixed(0);
    rows.push(
      `${mb} MB  decode ${mbps(best.get(`import ${mb} MB: decode`))} (python parse ${py("parse_mbps")})` +
        `  read+decode ${mbps(best.get(`import ${mb} MB: read + decode`))} (onnx.load ${py("load_mbps")})` +
        `  encode ${mbps(best.get(`export ${mb} MB: encode`))} (python serialize ${py("serialize_mbps")})` +
        `  encode+write ${mbps(best.get(`export ${mb} MB: encode + write`))} (onnx.save ${py("save_mbps")})`,
    );
  }
  console.log(`\nONNX I/O throughput, MB/s (best run; python3-onnx in parentheses${ref ? "" : ": not installed"}):`);
  for (const row of rows) console.log(row);
  try {
    for (const mb of sizes) Deno.removeSync(join(DIR, `saved_${mb}mb.onnx`));
  } catch {
    // Nothing saved (benchmarks filtered out).
  }
});
