/**
 * `bfp` and `fixed` on MatMul layers of rank-3 and rank-4 activations (issue
 * 14): a channels-last block (Conv, Transpose to NHWC, MatMul [C, 4C], Gelu,
 * MatMul [4C, C], Transpose back, as ConvNeXt's) and a transformer MLP on
 * `[N, T, C]`. Every row of K inputs is one sample, as a Gemm's rows. Checked:
 * the layers lowered, the bit-exact interpreter against float (SQNR), the
 * emitted ONNX in onnxruntime against the interpreter, the C target bit for
 * bit on the host (gcc), and the FPGA target's one-line refusal.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { compile, type CompileResult } from "../driver/compile.ts";
import { runOnnxruntime } from "../driver/onnxruntime.ts";
import { attr, type Attribute } from "../ir/attributes.ts";
import { Graph, Op, Value } from "../ir/graph.ts";
import { interpret } from "../ir/interpreter.ts";
import { Module } from "../ir/module.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { float32Tensor, type Tensor, toFloat64 } from "../ir/tensor.ts";
import { mcuSim } from "../targets/c/mcu_sim.ts";
import { onnxStructureProblems } from "./onnx_checks.ts";
import { randomInput } from "./tensor_compare.ts";

/** A graph builder whose ops are named like their results. */
function builder(name: string) {
  const g = new Graph(name);
  let seed = 1;
  const constant = (n: string, shape: number[], scale: number): Value => {
    const t = randomInput(shape, seed++);
    return g.addConstant(n, float32Tensor(shape, Float32Array.from(t.data as Float32Array, (v) => v * scale)), {
      elem: "f32",
      shape,
    });
  };
  const add = (n: string, type: string, operands: Value[], attributes: [string, Attribute][] = []): Value =>
    g.addOp(new Op({ name: n, type, operands, results: [new Value(n)], attributes })).result;
  return { g, constant, add };
}

/** x[N, 8, 6, 6] -> Conv 3x3 -> NHWC -> MatMul [8, 32] + b -> Gelu -> MatMul [32, 8] + b -> NCHW -> + Conv. */
function channelsLast(): Uint8Array {
  const { g, constant, add } = builder("channels_last");
  const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 8, 6, 6] }));
  const conv = add("conv", "Conv", [x, constant("conv.w", [8, 8, 3, 3], 0.3), constant("conv.b", [8], 0.1)], [
    ["pads", attr.ints([1, 1, 1, 1])],
  ]);
  const nhwc = add("nhwc", "Transpose", [conv], [["perm", attr.ints([0, 2, 3, 1])]]);
  const fc1 = add("fc1.bias", "Add", [
    add("fc1", "MatMul", [nhwc, constant("fc1.w", [8, 32], 0.4)]),
    constant("b1", [32], 0.1),
  ]);
  const gelu = add("gelu", "Gelu", [fc1]);
  const fc2 = add("fc2.bias", "Add", [
    add("fc2", "MatMul", [gelu, constant("fc2.w", [32, 8], 0.3)]),
    constant("b2", [8], 0.1),
  ]);
  const nchw = add("nchw", "Transpose", [fc2], [["perm", attr.ints([0, 3, 1, 2])]]);
  g.outputs.push(add("y", "Add", [nchw, conv]));
  return exportOnnx(new Module(g, [["", 20]]));
}

/**
 * x[batch, 6, 16] -> MatMul [16, 48] + b -> Relu -> MatMul [48, 16] + b -> + x; with `batchedWeights`, a second
 * output MatMul(x, w[1, 16, 4]) whose 3-D weight stays in float.
 */
function transformerMlp(batch: number | string, batchedWeights: boolean): Uint8Array {
  const { g, constant, add } = builder("mlp");
  const x = g.addInput(new Value("x", { elem: "f32", shape: [batch, 6, 16] }));
  const fc1 = add("fc1.bias", "Add", [
    add("fc1", "MatMul", [x, constant("fc1.w", [16, 48], 0.3)]),
    constant("b1", [48], 0.1),
  ]);
  const relu = add("relu", "Relu", [fc1]);
  const fc2 = add("fc2.bias", "Add", [
    add("fc2", "MatMul", [relu, constant("fc2.w", [48, 16], 0.2)]),
    constant("b2", [16], 0.1),
  ]);
  g.outputs.push(add("y", "Add", [fc2, x]));
  if (batchedWeights) g.outputs.push(add("side", "MatMul", [x, constant("side.w", [1, 16, 4], 0.3)]));
  return exportOnnx(new Module(g, [["", 17]]));
}

function sqnrDb(reference: Tensor, actual: Tensor): number {
  const a = toFloat64(reference), b = toFloat64(actual);
  let signal = 0, noise = 0;
  for (let i = 0; i < a.length; i++) (signal += a[i] ** 2), (noise += (a[i] - b[i]) ** 2);
  return 10 * Math.log10(signal / noise);
}

function maxAbs(t: Tensor): number {
  return toFloat64(t).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
}

const PIPELINES = ["bfp", "bfp{scheme=mx,block=4}", "fixed", "fixed{bits=8}"];

const MODELS: { label: string; bytes: Uint8Array; feeds: Record<string, Tensor>; layers: number }[] = [
  { label: "channels-last block", bytes: channelsLast(), feeds: { x: randomInput([2, 8, 6, 6], 7) }, layers: 3 },
  { label: "transformer MLP", bytes: transformerMlp("N", true), feeds: { x: randomInput([3, 6, 16], 8) }, layers: 2 },
];

for (const { label, bytes, feeds, layers } of MODELS) {
  Deno.test(`bfp and fixed lower the MatMuls of a ${label}; onnxruntime runs the emitted model like the interpreter`, async () => {
    const float = await compile(bytes, { modelName: "m" });
    const outputs = float.module.graph.outputs.map((v) => v.name);
    const expected = interpret(float.module, feeds);
    const rows: string[] = [];
    for (const passes of PIPELINES) {
      const logs: string[] = [];
      const result = await compile(bytes, {
        passes,
        modelName: "m",
        calibration: feeds,
        onLog: (_pass, message) => logs.push(message),
      });
      const stats = result.report.passes[0].stats;
      assert.equal(stats["layers-lowered"], layers, `${passes}: ${logs.join("; ")}`);
      // The Reshape, Gemm, Reshape of a batched layer are named afresh: no repeated name for the target to fix.
      assert.deepEqual(result.report.target.diagnostics, [], passes);
      const kinds = Object.values(stats.layers as Record<string, Record<string, unknown>>).map((l) => l.kind);
      assert.equal(kinds.filter((k) => k === "gemm").length, 2, passes);
      // The error analysis runs on the batched layers too (calibration given).
      const fc1 = (stats.layers as Record<string, Record<string, unknown>>).fc1;
      for (const key of ["sqnr-input-db", "sqnr-mac-db", "sqnr-in-model-db"]) {
        assert.ok(Number(fc1[key]) > 20, `${passes}: fc1 ${key} = ${fc1[key]}`);
      }
      if (outputs.includes("side")) {
        assert.ok(
          logs.includes(
            'op "side" (MatMul) stays in float: weights of rank 3 (a batched MatMul); only a 2-D [K, O] weight is lowered',
          ),
          logs.join("\n"),
        );
      }
      const ours = interpret(result.module, feeds);
      const y = outputs[0];
      const sqnr = sqnrDb(expected[y], ours[y]);
      const floor = passes.includes("bits=8") || passes === "bfp" ? 25 : 30;
      assert.ok(sqnr > floor, `${passes}: SQNR ${sqnr.toFixed(1)} dB`);
      const emitted = result.artifacts.get("m.onnx")!;
      assert.deepEqual(onnxStructureProblems(emitted), [], passes);
      const theirs = await runOnnxruntime(emitted, feeds);
      for (const name of outputs) {
        // onnxruntime sums in float where the golden model aligns integers: last-bit differences (16-bit fixed).
        const diff = toFloat64(theirs[name]).reduce(
          (m, v, i) => Math.max(m, Math.abs(v - Number(ours[name].data[i]))),
          0,
        );
        assert.ok(diff <= 1e-4 * Math.max(1, maxAbs(ours[name])), `${passes}, ${name}: differs by ${diff}`);
        if (name === y) {
          rows.push(
            `${label}, ${passes.padEnd(24)} SQNR vs float ${sqnr.toFixed(1)} dB, max |onnxruntime - interpreter| ` +
              `${diff.toExponential(2)} (max |y| ${maxAbs(ours[name]).toFixed(2)})`,
          );
        }
      }
    }
    console.log(rows.join("\n"));
  });
}

async function hasGcc(): Promise<boolean> {
  try {
    return (await new Deno.Command("gcc", { args: ["--version"], stdout: "null", stderr: "null" }).output()).success;
  } catch {
    return false;
  }
}

async function hostRun(result: CompileResult): Promise<Awaited<ReturnType<typeof mcuSim>>> {
  const dir = await Deno.makeTempDir({ prefix: "cnnc-batched-" });
  try {
    for (const [name, bytes] of result.artifacts) await Deno.writeFile(join(dir, name), bytes);
    return await mcuSim(dir, { cortexM4: false });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "c target: a transformer MLP on [1, T, C] is bit-exact with the interpreter, per-channel and mx (gcc)",
  ignore: !(await hasGcc()),
  async fn() {
    const bytes = transformerMlp("N", false);
    const calibration = { x: randomInput([6, 6, 16], 9) };
    for (const passes of ["bfp", "bfp{scheme=mx,block=4}", "fixed{bits=12}"]) {
      const result = await compile(bytes, { passes, target: "c{vectors=6}", modelName: "mlp", calibration });
      const r = await hostRun(result);
      assert.equal(r.host.error, null, passes);
      assert.equal(r.exact, true, passes);
      assert.deepEqual([r.samples, r.host.mismatches], [6, 0], `${passes}: ${r.host.firstMismatch}`);
    }
  },
});

Deno.test("fpga target: a batched Gemm is refused in one line naming the op", async () => {
  await assert.rejects(
    compile(transformerMlp(1, false), { passes: "bfp", target: "fpga", modelName: "mlp" }),
    {
      message:
        'target "fpga" failed: op "fc1" (ai.bfp.Gemm): its input [1,6,16] has rows [1,6] (a batched MatMul); the FPGA image\'s ' +
        "Gemm reads one sample [1, K] (the c and onnx targets run it)",
    },
  );
});
