/**
 * The C target on the bundled trained models: the emitted files compile with
 * `gcc -std=c99 -Wall -Wextra -Werror -pedantic -O2 -ffp-contract=off`, and the
 * harness's outputs on the whole MNIST test set equal the interpreter's bit for
 * bit for BFP and fixed-point builds and within 1e-5 relative for float builds;
 * the variants (fixed point, MX blocks with OHWI weights, 12-bit mantissas,
 * every rounding) on a subset; `prune,svd,bfp` on the bundled model is
 * interpreter = host = Cortex-M4 in qemu; a probe program checks the status
 * codes, that the model writes nothing past its arena and leaves its input
 * alone, and that the int8-input entry point equals the float one; the files
 * are byte-identical run to run; bad input is one line; `fc-corr` weights are
 * stored in CSR, smaller than dense and within 1e-5 of the interpreter.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readNpy } from "../../data/npy.ts";
import { compile, type CompileResult } from "../../driver/compile.ts";
import { attr } from "../../ir/attributes.ts";
import { Graph, isConstant, Op, Value } from "../../ir/graph.ts";
import { Interpreter } from "../../ir/interpreter.ts";
import { addConstant } from "../../ir/rewriter.ts";
import { Module } from "../../ir/module.ts";
import { exportOnnx } from "../../ir/onnx/export.ts";
import { float32Tensor, type Tensor } from "../../ir/tensor.ts";
import { mulberry32 } from "../../tests/tensor_compare.ts";
import { HOST_CFLAGS, mcuSim } from "./mcu_sim.ts";

const MODELS = new URL("../../examples/models/", import.meta.url).pathname;
const TEST_X = readNpy(Deno.readFileSync(join(MODELS, "mnist_test_x.npy")));
/** Every trained model of the project. */
const TRAINED = [
  "mlp",
  "vgg_dense",
  "vgg_sparse",
  "vgg_sparse_slim50_ref",
  "mobilenet",
  "resnet_preact",
  "densenet",
  "masknet",
];

async function probe(cmd: string, args: string[]): Promise<boolean> {
  try {
    return (await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output()).success;
  } catch {
    return false;
  }
}
const gcc = await probe("gcc", ["--version"]);
const m4 = await probe("arm-none-eabi-gcc", ["--version"]) && await probe("qemu-system-arm", ["--version"]);
if (!gcc) console.log("c_target_test: gcc not found, compiled-C checks skipped (install the Debian package gcc)");
if (gcc && !m4) {
  console.log(
    "c_target_test: arm-none-eabi-gcc or qemu-system-arm not found, the Cortex-M4 check is skipped " +
      "(install the Debian packages gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm)",
  );
}

/** The first n test images (calibration of `fixed` and the golden vectors' inputs). */
function firstImages(n: number): Tensor {
  return { ...TEST_X, shape: [n, ...TEST_X.shape.slice(1)], data: (TEST_X.data as Float32Array).subarray(0, n * 784) };
}

function build(model: string, passes: string, target: string, calibration: Tensor): Promise<CompileResult> {
  return compile(Deno.readFileSync(join(MODELS, `${model}.onnx`)), {
    passes,
    target,
    modelName: model,
    calibration,
    verifyEach: false,
  });
}

/** The artifacts in a fresh temporary folder. */
async function written(result: CompileResult): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "cnnc-c-test-" });
  for (const [name, bytes] of result.artifacts) await Deno.writeFile(join(dir, name), bytes);
  return dir;
}

/** Emit `model` with `passes`, run the first `samples` test images through the host build, compare. */
async function checkHost(model: string, passes: string, targetOptions: string, samples: number, exact: boolean) {
  const result = await build(model, passes, `c{vectors=${samples}${targetOptions}}`, firstImages(samples));
  const manifest = JSON.parse(new TextDecoder().decode(result.artifacts.get(`${model}.manifest.json`)));
  assert.equal(manifest.exact, exact, `${model} ${passes}: exact`);
  const m = manifest.memory;
  assert.ok(m.lowerBound <= m.plannedBytes && m.plannedBytes <= m.naiveBytes, JSON.stringify(m));
  const dir = await written(result);
  try {
    // A hang guard, not a speed check: 2,000 images on a machine shared with other test files can pass 2 minutes.
    const r = await mcuSim(dir, { cortexM4: false, timeoutMs: 600_000 });
    assert.equal(r.host.error, null);
    assert.equal(r.samples, samples);
    assert.equal(r.exact, exact);
    assert.equal(r.host.mismatches, 0, `${model} ${passes}: ${r.host.firstMismatch}`);
    assert.ok(r.ok);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

for (const model of TRAINED) {
  Deno.test({
    name: `c on ${model}: float within 1e-5 and bfp bit-exact on the 2,000 test images (gcc -O2)`,
    ignore: !gcc,
    async fn() {
      await checkHost(model, "", "", 2000, false);
      await checkHost(model, "bfp", "", 2000, true);
    },
  });
}

const VARIANTS: [string, string, string][] = [
  ["fixed", ",layout=ohwi", "mlp vgg_dense resnet_preact densenet"],
  ["fixed{bits=8,weights=per-tensor,rounding=toward-negative,headroom=1}", "", "vgg_sparse mobilenet"],
  ["bfp{scheme=mx,block=8,rounding=toward-zero}", ",layout=ohwi", "vgg_dense mobilenet densenet"],
  ["bfp{mantissa=12,exponent=6,rounding=toward-positive,exponent-rule=never-clamp}", "", "resnet_preact masknet"],
  ["bfp{mantissa=4,exponent=4,accumulator=16}", ",layout=ohwi", "vgg_sparse"],
  ["bfp{avg-mantissa=7,mantissa-min=5,mantissa-max=10}", "", "vgg_dense mobilenet"],
];
for (const [passes, options, models] of VARIANTS) {
  Deno.test({
    name: `c bit-exact with ${passes}${options} on ${models.replaceAll(" ", ", ")} (200 test images)`,
    ignore: !gcc,
    async fn() {
      for (const model of models.split(" ")) await checkHost(model, passes, options, 200, true);
    },
  });
}

Deno.test({
  name: "c cross-target: interpreter = host C = Cortex-M4 C in qemu for prune,svd,bfp on vgg_sparse (100 images)",
  ignore: !m4,
  async fn() {
    const dir = await written(await build("vgg_sparse", "prune,svd,bfp", "c{vectors=100}", firstImages(100)));
    try {
      const r = await mcuSim(dir);
      assert.equal(r.exact, true);
      assert.deepEqual([r.host.mismatches, r.cortexM4!.mismatches, r.cortexM4!.mismatchesVsHost], [0, 0, 0]);
      assert.equal(r.cortexM4!.samples, 100);
      assert.ok(r.ok);
      assert.ok(r.modelObject!.flash > 0 && r.modelObject!.ram === 0, "weights in flash, no static RAM");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** A C program that checks one emitted model's interface on the test images (see the module header). */
function probeProgram(id: string, nonFiniteStatus: number | null): string {
  const ID = id.toUpperCase();
  return `#include "${id}.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define GUARD 64
static unsigned char arena[${ID}_ARENA_SIZE + GUARD + ${ID}_ARENA_ALIGN] __attribute__((aligned(${ID}_ARENA_ALIGN)));
static float x[${ID}_INPUT_SIZE], kept[${ID}_INPUT_SIZE], xq[${ID}_INPUT_SIZE], y[${ID}_OUTPUT_SIZE], y8[${ID}_OUTPUT_SIZE];
static int8_t q[${ID}_INPUT_SIZE];
#define FAIL(...) do { printf(__VA_ARGS__); printf("\\n"); return 1; } while (0)
int main(int argc, char **argv) {
  FILE *in;
  long n = 0, i, limit = argc > 2 ? atol(argv[2]) : 0;
  (void)argc;
  if (${id}_run(NULL, y, arena) != ${ID}_ERR_NULL) FAIL("null input accepted");
  if (${id}_run(x, NULL, arena) != ${ID}_ERR_NULL) FAIL("null output accepted");
  if (${id}_run(x, y, NULL) != ${ID}_ERR_NULL) FAIL("null arena accepted");
  if (${id}_run(x, y, arena + 1) != ${ID}_ERR_ALIGN) FAIL("misaligned arena accepted");
  if (${id}_run_int8(q, 200, y, arena) != ${ID}_ERR_EXPONENT) FAIL("exponent 200 accepted");
  if (${id}_run_int8(q, -7, y, arena + 4) != ${ID}_ERR_ALIGN) FAIL("int8: misaligned arena accepted");
  in = fopen(argv[1], "rb");
  if (in == NULL) FAIL("cannot open %s", argv[1]);
  while (n < limit && fread(x, sizeof x, 1, in) == 1) {
    memset(arena + ${ID}_ARENA_SIZE, 0xa5, GUARD);
    memcpy(kept, x, sizeof x);
    if (${id}_run(x, y, arena) != 0) FAIL("sample %ld: status", n);
    if (memcmp(kept, x, sizeof x) != 0) FAIL("sample %ld: the input was changed", n);
    for (i = 0; i < GUARD; i++) if (arena[${ID}_ARENA_SIZE + i] != 0xa5) FAIL("sample %ld: wrote past the arena", n);
    for (i = 0; i < ${ID}_INPUT_SIZE; i++) {
      long v = lround(x[i] * 128.0f);
      q[i] = (int8_t)(v > 127 ? 127 : v);
      xq[i] = (float)q[i] / 128.0f;
    }
    if (${id}_run(xq, y, arena) != 0 || ${id}_run_int8(q, -7, y8, arena) != 0) FAIL("sample %ld: status", n);
    if (memcmp(y, y8, sizeof y) != 0) FAIL("sample %ld: run_int8 differs from run", n);
    n++;
  }
  fclose(in);
  if (n != limit) FAIL("read %ld of %ld samples", n, limit);
${
    nonFiniteStatus === null ? "" : `  x[0] = NAN;
  if (${id}_run(x, y, arena) != ${nonFiniteStatus}) FAIL("a NaN input gave status %d", ${id}_run(x, y, arena));
`
  }  printf("probe ok %ld\\n", n);
  return 0;
}
`;
}

async function runProbe(model: string, passes: string, nonFiniteStatus: number | null): Promise<void> {
  const samples = 50;
  const result = await build(model, passes, "c{int8-input=true}", firstImages(samples));
  const dir = await written(result);
  try {
    await Deno.writeTextFile(join(dir, "probe.c"), probeProgram(model, nonFiniteStatus));
    const x = new Float32Array((TEST_X.data as Float32Array).buffer, 0, samples * 784);
    await Deno.writeFile(join(dir, "x.bin"), new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
    const cc = await new Deno.Command("gcc", {
      args: [...HOST_CFLAGS, "-I", dir, join(dir, "probe.c"), join(dir, `${model}.c`), "-o", join(dir, "probe"), "-lm"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
    const run = await new Deno.Command(join(dir, "probe"), { args: [join(dir, "x.bin"), String(samples)] }).output();
    assert.equal(new TextDecoder().decode(run.stdout), `probe ok ${samples}\n`);
    assert.ok(run.success);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "c probe: status codes, nothing written past the arena, input untouched, run_int8 = run (bfp, float)",
  ignore: !gcc,
  async fn() {
    await runProbe("vgg_sparse", "prune,svd,bfp", -3);
    await runProbe("resnet_preact", "", null);
  },
});

Deno.test("c files: include guard, extern C, stdint types, no malloc/stdio/time, byte-identical reruns", async () => {
  const [a, b] = await Promise.all([0, 1].map(() => build("mlp", "bfp", "c{layout=ohwi}", firstImages(16))));
  assert.deepEqual([...a.artifacts.keys()], ["mlp.h", "mlp.c", "mlp.manifest.json"]);
  for (const [name, bytes] of a.artifacts) assert.deepEqual(b.artifacts.get(name), bytes, `${name} differs`);
  const header = new TextDecoder().decode(a.artifacts.get("mlp.h"));
  const source = new TextDecoder().decode(a.artifacts.get("mlp.c"));
  assert.match(header, /#ifndef MLP_H\n#define MLP_H\n/);
  assert.match(header, /#ifdef __cplusplus\nextern "C" \{\n#endif/);
  assert.match(header, /int mlp_run\(const float \*input, float \*output, void \*arena\);/);
  for (
    const macro of ["ARENA_SIZE", "ARENA_ALIGN", "INPUT_SIZE 784", "OUTPUT_SIZE 10", "WEIGHT_BYTES", "WEIGHTS_CRC32"]
  ) {
    assert.match(header, new RegExp(`#define MLP_${macro}`), macro);
  }
  assert.match(header, /#define MLP_FORMAT_VERSION 1\n#define MLP_GENERATOR "@cnnc\/compiler \d+\.\d+\.\d+ c target"/);
  assert.deepEqual(
    [...source.matchAll(/#include (\S+)/g)].map((m) => m[1]),
    ['"mlp.h"', "<stddef.h>", "<stdint.h>", "<string.h>", "<math.h>"],
  );
  assert.doesNotMatch(source, /malloc|free\(|printf|FILE|time\(|__DATE__|__TIME__/);
  assert.match(source, /#define MLP_ALIGNED __attribute__\(\(aligned\(MLP_WEIGHT_ALIGN\)\)\) MLP_WEIGHT_SECTION\n/);
  assert.match(source, /\nstatic const int8_t \w+_mantissas\[\d+\] MLP_ALIGNED = \{\n/);
});

/** One Conv (then a MaxPool and an AveragePool) with the geometry given, random weights, as ONNX. */
function convModel(seed: number): { onnx: Uint8Array; input: Tensor; what: string } {
  const next = mulberry32(seed), pick = (n: number) => Math.floor(next() * n);
  const group = [1, 2, 4][pick(3)], c = group * (1 + pick(3)), o = group * (1 + pick(3));
  const [kh, kw] = [1 + pick(4), 1 + pick(4)],
    [sh, sw] = [1 + pick(3), 1 + pick(3)],
    [dh, dw] = [1 + pick(2), 1 + pick(2)];
  const pads = [pick(3), pick(3), pick(3), pick(3)];
  const [h, w] = [(kh - 1) * dh + 1 + pick(9), (kw - 1) * dw + 1 + pick(9)];
  const g = new Graph("conv");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", c, h, w] }));
  const weights = Array.from({ length: o * (c / group) * kh * kw }, () => 2 * next() - 1);
  const wv = addConstant(g, "w", float32Tensor([o, c / group, kh, kw], weights));
  const bv = addConstant(g, "b", float32Tensor([o], Array.from({ length: o }, () => next() - 0.5)));
  const conv = g.addOp(
    new Op({
      name: "conv",
      type: "Conv",
      operands: [x, wv, bv],
      results: [new Value("c")],
      attributes: [
        ["group", attr.int(group)],
        ["strides", attr.ints([sh, sw])],
        ["dilations", attr.ints([dh, dw])],
        ["pads", attr.ints(pads)],
        ["kernel_shape", attr.ints([kh, kw])],
      ],
    }),
  );
  const pool = (name: string, type: string, operand: Value) =>
    g.addOp(
      new Op({
        name,
        type,
        operands: [operand],
        results: [new Value(`${name}_y`)],
        attributes: [["kernel_shape", attr.ints([2, 2])], ["pads", attr.ints([1, 0, 1, 1])], [
          "strides",
          attr.ints([1, 2]),
        ]],
      }),
    ).result;
  g.outputs.push(pool("avg", "AveragePool", pool("max", "MaxPool", conv.result)));
  const n = 8, data = Float32Array.from({ length: n * c * h * w }, () => 4 * next() - 2);
  return {
    onnx: exportOnnx(new Module(g)),
    input: { dtype: "f32", shape: [n, c, h, w], data },
    what: `x ${c}x${h}x${w}, ${o} outputs, group ${group}, kernel ${kh}x${kw}, stride ${sh}x${sw}, ` +
      `dilation ${dh}x${dw}, pads ${pads}`,
  };
}

Deno.test({
  name: "c geometry: random Conv strides, dilations, pads and groups, float and bfp, equal the interpreter",
  ignore: !gcc,
  async fn() {
    for (let seed = 1; seed <= 12; seed++) {
      const { onnx, input, what } = convModel(seed);
      for (const [passes, exact] of [["", false], ["bfp", true], ["bfp{scheme=mx,block=2}", true]] as const) {
        const result = await compile(onnx, { passes, target: "c{vectors=8}", modelName: "conv", calibration: input });
        const dir = await written(result);
        try {
          const r = await mcuSim(dir, { cortexM4: false });
          assert.equal(r.exact, exact);
          assert.ok(r.ok, `${what} ${passes}: ${r.host.error ?? r.host.firstMismatch}`);
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
      }
    }
  },
});

Deno.test("c names: a model name that is no C identifier is sanitized and the report says the name used", async () => {
  const g = new Graph("net");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4] }));
  g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] })).result);
  const r = await compile(exportOnnx(new Module(g)), { target: "c", modelName: "VGG-slim.v2" });
  assert.deepEqual([...r.artifacts.keys()], ["vgg_slim_v2.h", "vgg_slim_v2.c", "vgg_slim_v2.manifest.json"]);
  assert.match(new TextDecoder().decode(r.artifacts.get("vgg_slim_v2.h")), /int vgg_slim_v2_run\(/);
  const json = JSON.stringify(r.report);
  assert.match(json, /model name \\"VGG-slim\.v2\\" is not a C identifier: the C names use \\"vgg_slim_v2\\"/);
  assert.match(json, /"identifier":"vgg_slim_v2"/);
});

Deno.test("c bad input: an op with no kernel, a symbolic non-batch dimension, vectors without --calib", async () => {
  const model = (shape: (string | number)[], type: string, attrs: Record<string, number[]> = {}) => {
    const g = new Graph("net");
    const x = g.addInput(new Value("x", { elem: "f32", shape }));
    const op = new Op({ name: "node7", type, operands: [x], results: [new Value("y")] });
    for (const [k, v] of Object.entries(attrs)) op.attributes.set(k, { kind: "ints", value: v });
    g.outputs.push(g.addOp(op).result);
    return exportOnnx(new Module(g));
  };
  await assert.rejects(
    () => compile(model(["N", 3, 4], "Transpose", { perm: [0, 2, 1] }), { target: "c" }),
    /^Error: .*unsupported op Transpose "node7" in the C target \(kernels: /,
  );
  await assert.rejects(
    () => compile(model(["N", "C", 4], "Relu"), { target: "c" }),
    /input "x" has the symbolic dimension "C" at axis 1: the C target needs a fixed shape/,
  );
  await assert.rejects(
    () => compile(model(["N", 4], "Relu"), { target: "c{vectors=4}" }),
    /vectors=4 needs calibration inputs: compile with --calib FILE\.npy/,
  );
});

/** `mlp` through `fc-corr{threshold=0.2}` calibrated on the calibration set, with the c target's `options`. */
function buildCorrMlp(options: string): Promise<CompileResult> {
  const calibration = readNpy(Deno.readFileSync(join(MODELS, "mnist_calib_x.npy")));
  return compile(Deno.readFileSync(join(MODELS, "mlp.onnx")), {
    passes: "fc-corr{threshold=0.2}",
    target: `c{${options}}`,
    modelName: "mlp",
    calibration,
    verifyEach: false,
  });
}

const manifestOf = (r: CompileResult, id: string) =>
  JSON.parse(new TextDecoder().decode(r.artifacts.get(`${id}.manifest.json`)));

Deno.test({
  name: "c sparse: fc-corr's FC weights in CSR, smaller than dense and within 1e-5 of the interpreter (300 images)",
  ignore: !gcc,
  async fn() {
    const sparse = await buildCorrMlp("sparse=auto");
    const dense = await buildCorrMlp("sparse=never");
    const [ms, md] = [manifestOf(sparse, "mlp"), manifestOf(dense, "mlp")];
    const source = new TextDecoder().decode(sparse.artifacts.get("mlp.c"));
    assert.equal(ms.sparse, "auto");
    assert.ok(ms.kernels.includes("dense_csr_f32") && !md.kernels.includes("dense_csr_f32"), ms.kernels.join());
    assert.deepEqual(md.sparseLayers, []);
    assert.ok(ms.sparseLayers.length >= 1, "a layer in CSR");
    for (const l of ms.sparseLayers) {
      assert.ok(l.csrBytes < l.denseBytes && l.nonzeros < l.rows * l.cols, JSON.stringify(l));
      assert.match(source, new RegExp(`static const uint${l.indexBits}_t w_\\w+_columns\\[${l.nonzeros}\\]`));
      assert.match(source, new RegExp(`static const uint${l.pointerBits}_t w_\\w+_row_ptr\\[${l.rows + 1}\\]`));
    }
    assert.match(source, /cnnc_dense_csr_f32\(input, &p_/);
    // The weight section shrinks by exactly the dense minus the CSR bytes of the sparse layers.
    const saved = ms.sparseLayers.reduce(
      (s: number, l: { denseBytes: number; csrBytes: number }) => s + l.denseBytes - l.csrBytes,
      0,
    );
    assert.equal(md.weightBytes - ms.weightBytes, saved);
    assert.ok(sparse.artifacts.get("mlp.c")!.length < dense.artifacts.get("mlp.c")!.length);
    assert.deepEqual(sparse.report.target?.stats?.["sparse-layers"], ms.sparseLayers);

    // Golden vectors: the first 300 test images through the interpreter on the compiled module.
    const samples = 300;
    const x = firstImages(samples);
    const input = sparse.module.graph.inputs.find((v) => !isConstant(v))!;
    const y = new Interpreter(sparse.module).run({ [input.name]: x })[sparse.module.graph.outputs[0].name];
    const bytes = (t: Tensor) => new Uint8Array(Float32Array.from(t.data as Float32Array).buffer);
    const dir = await written(sparse);
    try {
      await Deno.writeFile(join(dir, "mlp.vectors.input.bin"), bytes(x));
      await Deno.writeFile(join(dir, "mlp.vectors.output.bin"), bytes(y));
      const vectors = {
        count: samples,
        inputs: "mlp.vectors.input.bin",
        outputs: "mlp.vectors.output.bin",
        exact: false,
        tolerance: 1e-5,
      };
      await Deno.writeTextFile(join(dir, "mlp.manifest.json"), JSON.stringify({ ...ms, vectors }));
      const r = await mcuSim(dir, { cortexM4: m4 });
      assert.equal(r.host.error, null);
      assert.equal(r.samples, samples);
      assert.equal(r.host.mismatches, 0, r.host.firstMismatch ?? "");
      if (m4) assert.equal(r.cortexM4!.mismatches, 0);
      if (m4) assert.ok(r.modelObject!.ram === 0, "CSR arrays in flash, no static RAM");
      assert.ok(r.ok);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("c sparse: a dense model emits no CSR kernel", async () => {
  const r = await build("mlp", "", "c", firstImages(1));
  const source = new TextDecoder().decode(r.artifacts.get("mlp.c"));
  assert.deepEqual(manifestOf(r, "mlp").sparseLayers, []);
  assert.ok(!source.includes("csr"), "no CSR arrays or kernel");
  assert.ok(source.includes("cnnc_dense_f32("));
});
