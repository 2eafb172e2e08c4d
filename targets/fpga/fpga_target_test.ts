/**
 * The FPGA target end to end on the bundled trained models: plan -> image ->
 * reader returns the plans' integers exactly for several packings, the
 * mantissas equal the ONNX target's integer initializers, every CRC and the
 * alignment hold, a flipped byte is rejected naming its segment, companions
 * parse back to the image's words, and bad input is one line naming the op or option.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { readNpy } from "../../data/npy.ts";
import { compile, type CompileResult } from "../../driver/compile.ts";
import { bfpLayerPlan } from "../../ir/bfp/plan.ts";
import { BFP_DOMAIN } from "../../ir/bfp/plan.ts";
import type { Module } from "../../ir/module.ts";
import { importOnnx } from "../../ir/onnx/import.ts";
import { onnxTarget } from "../onnx/onnx_target.ts";
import type { TargetContext } from "../target.ts";
import { hexWords } from "./companions.ts";
import { FPGA_GENERATOR, fpgaTarget } from "./fpga_target.ts";
import { FPGA_SEGMENT_ALIGNMENT, fpgaCrc32, readFpgaImage } from "./image.ts";

const MODELS = new URL("../../examples/models/", import.meta.url).pathname;
const CALIB = readNpy(Deno.readFileSync(join(MODELS, "mnist_calib_x.npy")));
const ROUND_TRIP_MODELS = ["mlp", "vgg_dense", "vgg_sparse", "mobilenet", "resnet_preact", "densenet"];

type Options = Parameters<typeof fpgaTarget.emit>[1];
const DEFAULTS: Options = {
  pe: 4,
  simd: 8,
  wordBits: 64,
  layout: "ohwi",
  vectors: 0,
  vectorPositions: 64,
  companions: ["coe", "mif", "mem", "manifest"],
};
const PACKINGS: Partial<Options>[] = [
  {},
  { pe: 3, simd: 5, wordBits: 32, layout: "oihw" }, // padding everywhere, fold words straddle memory words
  { pe: 1, simd: 1, wordBits: 16 },
  { pe: 16, simd: 7, wordBits: 36, layout: "ohwi" },
];

function context(diagnostics: string[] = []): TargetContext {
  return { modelName: "m", emit: (severity, message) => diagnostics.push(`${severity}: ${message}`) };
}

const compiled = new Map<string, Promise<CompileResult>>();
function build(model: string, passes: string, target = "fpga"): Promise<CompileResult> {
  const key = `${model}|${passes}|${target}`;
  if (!compiled.has(key)) {
    compiled.set(
      key,
      compile(Deno.readFileSync(join(MODELS, `${model}.onnx`)), {
        passes,
        target,
        modelName: model,
        calibration: CALIB,
      }),
    );
  }
  return compiled.get(key)!;
}

/** The image's integers equal `bfpLayerPlan` of each lowered op of the module. */
function assertPlansRoundTrip(module: Module, image: Uint8Array, what: string): void {
  const read = readFpgaImage(image);
  const lowered = module.graph.ops.filter((op) => op.domain === BFP_DOMAIN && op.type !== "Quantize");
  const withWeights = read.layers.filter((l) => l.weights !== null);
  assert.deepEqual(withWeights.map((l) => l.name), lowered.map((op) => op.name), what);
  for (const layer of withWeights) {
    const plan = bfpLayerPlan(lowered.find((op) => op.name === layer.name)!);
    const w = layer.weights!;
    assert.deepEqual(w.shape, plan.weights.shape, `${what} ${layer.name} shape`);
    assert.deepEqual(w.exponentShape, plan.weights.exponentShape, `${what} ${layer.name} exponent shape`);
    assert.equal(w.block, plan.weights.block);
    assert.deepEqual(w.mantissas, plan.weights.mantissas, `${what} ${layer.name} mantissas`);
    assert.deepEqual(w.exponents, plan.weights.exponents, `${what} ${layer.name} exponents`);
    assert.equal(layer.bias === null, plan.bias === null);
    if (plan.bias !== null) {
      assert.deepEqual(layer.bias!.values, plan.bias.values, `${what} ${layer.name} bias`);
      assert.deepEqual(layer.bias!.units, plan.bias.units, `${what} ${layer.name} bias units`);
      for (const m of layer.bias!.significands) assert.ok(Math.abs(m) < 2 ** 24, "25-bit signed significand");
    }
    assert.equal(layer.descriptor.accumulatorBits![0], plan.accumulator.bits);
    assert.equal(layer.descriptor.guardBits![0], plan.accumulator.guardBits);
    assert.equal(layer.descriptor.productBits![0], plan.accumulator.productBits);
    assert.deepEqual(
      layer.descriptor.staticExponent ?? null,
      plan.input.staticExponent === null ? null : [
        plan.input.staticExponent,
      ],
    );
  }
}

for (
  const [passes, models] of [
    ["fold-bn,canonicalize,dce,bfp", ROUND_TRIP_MODELS],
    ["fold-bn,canonicalize,dce,fixed", ["mlp", "vgg_dense", "resnet_preact"]],
    ["fold-bn,canonicalize,dce,bfp{scheme=mx,block=8}", ["vgg_dense", "densenet"]],
  ] as const
) {
  Deno.test(`fpga round trip: ${passes} on ${models.join(", ")}, four packings`, async () => {
    for (const model of models) {
      const { module, artifacts } = await build(model, passes);
      assertPlansRoundTrip(module, artifacts.get(`${model}.fpga.bin`)!, `${model} default`);
      for (const packing of PACKINGS.slice(1)) {
        const files = await fpgaTarget.emit(module, { ...DEFAULTS, ...packing, companions: [] }, context());
        assert.deepEqual([...files.keys()], ["m.fpga.bin"]);
        assertPlansRoundTrip(module, files.get("m.fpga.bin")!, `${model} ${JSON.stringify(packing)}`);
      }
    }
  });
}

Deno.test("fpga mantissas equal the int8/int16 initializers the onnx target emits", async () => {
  for (const passes of ["fold-bn,canonicalize,dce,bfp", "fold-bn,canonicalize,dce,fixed"]) {
    const { module, artifacts } = await build("vgg_dense", passes);
    const onnx = importOnnx(
      (await onnxTarget.emit(module, { externalData: false, threshold: 1024 }, context()))
        .get("m.onnx")!,
    );
    const initializers = new Map(onnx.graph.constants.map((v) => [v.name, v.constant!]));
    for (const v of onnx.graph.inputs) if (v.constant !== null) initializers.set(v.name, v.constant);
    const read = readFpgaImage(artifacts.get("vgg_dense.fpga.bin")!);
    let checked = 0;
    for (const layer of read.layers.filter((l) => l.weights !== null)) {
      const op = module.graph.ops.find((o) => o.name === layer.name)!;
      const t = initializers.get(bfpLayerPlan(op).weights.mantissaValue.name);
      assert.ok(t !== undefined, `initializer of ${layer.name}`);
      assert.ok(t.dtype === "i8" || t.dtype === "i16", t.dtype);
      assert.deepEqual(t.shape, layer.weights!.shape);
      assert.deepEqual([...(t.data as Int8Array)], [...layer.weights!.mantissas], layer.name);
      checked++;
    }
    assert.equal(checked, 7);
  }
});

Deno.test("fpga image: CRC-32 check value, 4096-byte alignment, zero padding", async () => {
  assert.equal(fpgaCrc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  const pipeline = "fold-bn,canonicalize,dce,bfp{precision=uniform}";
  const bytes = (await build("vgg_dense", pipeline)).artifacts.get("vgg_dense.fpga.bin")!;
  const image = readFpgaImage(bytes);
  assert.equal(bytes.length % FPGA_SEGMENT_ALIGNMENT, 0);
  const used = new Uint8Array(bytes.length);
  used.fill(1, 0, 64 + 48 * image.segments.length);
  for (const s of image.segments) {
    assert.equal(s.offset % FPGA_SEGMENT_ALIGNMENT, 0, `segment offset ${s.offset}`);
    assert.equal(fpgaCrc32(bytes.subarray(s.offset, s.offset + s.size)), s.crc32);
    used.fill(1, s.offset, s.offset + s.size);
  }
  for (let i = 0; i < bytes.length; i++) if (!used[i]) assert.equal(bytes[i], 0, `padding byte ${i}`);
  assert.equal(image.format.mantissaBits, 8);
  assert.equal(image.exponentBias, 15);
  assert.equal(image.format.rounding, "nearest-even");
});

Deno.test("fpga image: a flipped byte in the header, the table or any segment is rejected naming it", async () => {
  const { artifacts } = await build("mlp", "fold-bn,canonicalize,dce,bfp");
  const bytes = artifacts.get("mlp.fpga.bin")!;
  const image = readFpgaImage(bytes);
  const flipped = (at: number): Uint8Array => {
    const copy = bytes.slice();
    copy[at] ^= 0x10;
    return copy;
  };
  for (const at of [0, 9, 16, 24, 44, 60]) {
    assert.throws(() => readFpgaImage(flipped(at)), /FPGA image: .*(header|magic)/, `header byte ${at}`);
  }
  assert.throws(() => readFpgaImage(flipped(64 + 17)), /segment table CRC-32 mismatch/);
  image.segments.forEach((s, i) => {
    const name = image.layers[s.layer].name;
    // A corrupted descriptor cannot name its own layer; every other segment's message does.
    const label = s.kind === "descriptor" ? "" : ` "${name}"`;
    const pattern = new RegExp(`segment ${i} \\(${s.kind} of layer ${s.layer}${label}\\) CRC-32 mismatch`);
    for (const at of [s.offset, s.offset + s.size - 1]) {
      assert.throws(() => readFpgaImage(flipped(at)), (e: Error) => pattern.test(e.message), `${s.kind} ${i}`);
    }
  });
  const last = image.segments[image.segments.length - 1];
  assert.throws(() => readFpgaImage(flipped(last.offset + last.size)), /payload CRC-32 mismatch/);
  assert.throws(() => readFpgaImage(bytes.subarray(0, bytes.length - 1)), /header sizes do not match/);
});

/** Words of a `.coe` file. */
function parseCoe(text: string): string[] {
  assert.match(text, /^memory_initialization_radix=16;\nmemory_initialization_vector=\n/);
  const vector = text.split("memory_initialization_vector=")[1].trim();
  assert.ok(vector.endsWith(";"));
  return vector.slice(0, -1).split(",").map((w) => w.trim());
}

/** Words of a `.mif` file, checking WIDTH, DEPTH and consecutive addresses. */
function parseMif(text: string, width: number): string[] {
  assert.match(text, new RegExp(`^WIDTH=${width};$`, "m"));
  assert.match(text, /^ADDRESS_RADIX=UNS;$/m);
  assert.match(text, /^DATA_RADIX=HEX;$/m);
  const depth = Number(/^DEPTH=(\d+);$/m.exec(text)![1]);
  const body = text.split("CONTENT BEGIN\n")[1];
  assert.ok(body.endsWith("END;\n"));
  const words = body.slice(0, -"END;\n".length).trim().split("\n").filter((l) => l !== "").map((line, i) => {
    const [, addr, word] = /^\s*(\d+) : ([0-9a-f]+);$/.exec(line)!;
    assert.equal(Number(addr), i);
    return word;
  });
  assert.equal(words.length, depth);
  return words;
}

/** Words of a `$readmemh` file at their `@addr` addresses. */
function parseMem(text: string): string[] {
  const words: string[] = [];
  let at = 0;
  for (const line of text.split("\n").filter((l) => l !== "")) {
    if (line.startsWith("@")) at = parseInt(line.slice(1), 16);
    else words[at++] = line;
  }
  return words;
}

Deno.test("fpga companions parse back to the image's words; the manifest lists every segment", async () => {
  const { artifacts, report } = await build("vgg_dense", "fold-bn,canonicalize,dce,bfp");
  const bytes = artifacts.get("vgg_dense.fpga.bin")!;
  const image = readFpgaImage(bytes);
  const manifest = JSON.parse(new TextDecoder().decode(artifacts.get("vgg_dense.manifest.json")!));
  assert.equal(manifest.generator, FPGA_GENERATOR);
  assert.equal(manifest.pipeline, report.pipeline);
  assert.match(manifest.inputSha256, /^[0-9a-f]{64}$/);
  const segments = manifest.layers.flatMap((l: { segments: unknown[] }) => l.segments);
  assert.equal(segments.length, image.segments.length);
  let files = 0;
  image.segments.forEach((s, i) => {
    const m = segments[i];
    assert.deepEqual([m.offset, m.bytes, parseInt(m.crc32, 16), m.wordBits], [s.offset, s.size, s.crc32, s.wordBits]);
    if (s.kind === "descriptor") return;
    const words = hexWords(bytes.subarray(s.offset, s.offset + s.size), s.wordBits);
    assert.equal(words.length, s.words);
    const layer = manifest.layers[s.layer];
    const file = (ext: string): string =>
      new TextDecoder().decode(artifacts.get(layer.companions.find((c: string) => c.endsWith(`.${s.kind}.${ext}`)))!);
    assert.deepEqual(parseCoe(file("coe")), words);
    assert.deepEqual(parseMif(file("mif"), s.wordBits), words);
    assert.deepEqual(parseMem(file("mem")), words);
    files += 3;
  });
  assert.equal(files, 7 * 3 * 3);
  assert.equal(artifacts.size, 2 + files);
});

Deno.test("fpga output is byte-identical run to run", async () => {
  const a = await build("mobilenet", "fold-bn,canonicalize,dce,bfp");
  const b = await compile(Deno.readFileSync(join(MODELS, "mobilenet.onnx")), {
    passes: "fold-bn,canonicalize,dce,bfp",
    target: "fpga",
    modelName: "mobilenet",
    calibration: CALIB, // as build() gives it: with data, bfp corrects biases and chooses blocks
  });
  assert.deepEqual([...a.artifacts.keys()], [...b.artifacts.keys()]);
  // Compared as hashes: a failing deepEqual of two large byte arrays renders a diff of every byte.
  const digest = (bytes: Uint8Array | undefined) =>
    bytes === undefined ? "" : createHash("sha256").update(bytes).digest("hex");
  for (const [name, bytes] of a.artifacts) assert.equal(digest(bytes), digest(b.artifacts.get(name)), name);
});

Deno.test("fpga estimates: cycles = ceil(O/PE)*ceil(K/SIMD)*positions, BRAM18 and DSP, with totals", async () => {
  const { report, module } = await build("vgg_dense", "fold-bn,canonicalize,dce,bfp");
  const est = report.target.stats!.estimates as {
    layers: { layer: string; cycles: number; bram18: number; dsp: number }[];
    totals: { cycles: number; bram18: number; dsp: number };
  };
  const lowered = module.graph.ops.filter((op) => op.domain === BFP_DOMAIN && op.type !== "Quantize");
  assert.equal(est.layers.length, lowered.length);
  for (const op of lowered) {
    const plan = bfpLayerPlan(op);
    const e = est.layers.find((l) => l.layer === op.name)!;
    const positions = plan.geometry!.outShape.reduce((a, d) => a * d, 1);
    assert.equal(e.cycles, Math.ceil(plan.outChannels / 4) * Math.ceil(plan.reduction / 8) * positions);
    assert.equal(e.dsp, 32);
    assert.ok(e.bram18 >= 1);
  }
  assert.equal(est.totals.cycles, est.layers.reduce((a, l) => a + l.cycles, 0));
  assert.equal(est.totals.dsp, 32 * lowered.length);
  assert.ok(report.target.diagnostics.some((d) => d.severity === "note" && /cycles per sample/.test(d.message)));
  // The first conv has K = 1*3*3 = 9: simd 8 pads it, and says so.
  assert.ok(report.target.diagnostics.some((d) => d.severity === "warning" && /padded with zeros/.test(d.message)));
});

Deno.test("fpga bad input: float layer, unsupported op, word-bits, companions; one line, nothing emitted", async () => {
  const reject = async (model: string, passes: string, target: string, pattern: RegExp) => {
    await assert.rejects(
      () =>
        compile(Deno.readFileSync(join(MODELS, `${model}.onnx`)), {
          passes,
          target,
          modelName: model,
          calibration: CALIB,
        }),
      (e: Error) => {
        assert.match(e.message, pattern);
        assert.equal(e.message.split("\n").length, 1, e.message);
        return true;
      },
    );
  };
  await reject(
    "mlp",
    "canonicalize",
    "fpga",
    /target "fpga" failed: op "[^"]+" \((Gemm|MatMul)\) is still float: run bfp \(or fixed\) first/,
  );
  await reject("masknet", "fold-bn,canonicalize,dce,bfp", "fpga", /unsupported op Mul "[^"]+" in the FPGA image/);
  await reject(
    "mlp",
    "fold-bn,canonicalize,dce,bfp{precision=uniform}",
    "fpga{word-bits=4}",
    /word-bits=4 is below the mantissa width of 8 bits/,
  );
  await reject(
    "mlp",
    "fold-bn,canonicalize,dce,bfp",
    "fpga{companions=[coe,vhdl]}",
    /option companions: unknown companion "vhdl"/,
  );
});

Deno.test("FPGA_GENERATOR carries the package version of deno.json", () => {
  const { version } = JSON.parse(Deno.readTextFileSync(new URL("../../deno.json", import.meta.url)));
  assert.ok(FPGA_GENERATOR.includes(` ${version} `), FPGA_GENERATOR);
});
