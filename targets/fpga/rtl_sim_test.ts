/**
 * Golden vectors and RTL simulation of the FPGA target: the vectors equal the
 * interpreter's layer outputs, reruns are byte-identical, and Icarus Verilog
 * runs `rtl/bfp_pe.v` on every lowered layer of a bundled conv net bit-exactly
 * (per-channel, MX blocks of 8, fixed point, non-default roundings, mixed mantissa widths), and on every layer of
 * a depthwise net (one input exponent per channel plane); a corrupted golden word or weight word fails naming the
 * layer.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readNpy } from "../../data/npy.ts";
import { compile, type CompileResult } from "../../driver/compile.ts";
import { BFP_DOMAIN, bfpLayerPlan } from "../../ir/bfp/plan.ts";
import { legalizeFpga } from "./legalize.ts";
import { rtlSim } from "./rtl_sim.ts";
import { goldenVectors } from "./vectors.ts";

const MODELS = new URL("../../examples/models/", import.meta.url).pathname;
const CALIB = readNpy(Deno.readFileSync(join(MODELS, "mnist_calib_x.npy")));
const MODEL = Deno.readFileSync(join(MODELS, "vgg_dense.onnx"));

let iverilog = true;
try {
  await new Deno.Command("iverilog", { args: ["-V"], stdout: "null", stderr: "null" }).output();
} catch {
  iverilog = false;
  console.log("rtl_sim_test: iverilog not found, RTL simulation tests skipped (install the Debian package iverilog)");
}

function build(passes: string, target: string, model = MODEL): Promise<CompileResult> {
  return compile(model, { passes, target, modelName: "vgg", calibration: CALIB });
}

async function writeOut(result: CompileResult): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "cnnc-rtl-test-" });
  for (const [name, bytes] of result.artifacts) await Deno.writeFile(join(dir, name), bytes);
  return dir;
}

const BASE = "fold-bn,canonicalize,dce";

Deno.test("golden vectors: acc * 2^unit is the interpreter's float output of each lowered layer", async () => {
  const { module } = await build(`${BASE},bfp{scheme=mx,block=8}`, "onnx");
  const network = legalizeFpga(module, "ohwi", 4, 8);
  const input = Object.fromEntries([[module.graph.inputs[0].name, CALIB]]);
  const vectors = goldenVectors(module, network.plans, input, 2, 5, "ohwi");
  let checked = 0;
  vectors.forEach((v, i) => {
    if (v === null) return assert.equal(network.plans[i], null);
    assert.equal(v.samples, 2);
    assert.ok(v.positions.length === Math.min(5, v.totalPositions));
    for (let j = 0; j < v.accumulators.length; j++) {
      assert.ok(Number.isInteger(v.accumulators[j]));
      assert.equal(Math.fround(v.accumulators[j] * 2 ** v.units[j]), v.outputs[j], `${network.layers[i].name} ${j}`);
      checked++;
    }
  });
  assert.ok(checked > 500, `${checked} outputs`);
  // The lowered layers and the vectors line up with the plans (only plan.ts reads ai.bfp attributes).
  const lowered = module.graph.ops.filter((op) => op.domain === BFP_DOMAIN && op.type !== "Quantize");
  assert.deepEqual(
    network.plans.filter((p) => p !== null).map((p) => p!.op.name),
    lowered.map((op) => bfpLayerPlan(op).op.name),
  );
});

Deno.test("vectors=N: files recorded in the manifest, byte-identical reruns, errors without --calib", async () => {
  const target = "fpga{vectors=1,vector-positions=3,companions=[mem,manifest]}";
  const a = await build(`${BASE},bfp`, target), b = await build(`${BASE},bfp`, target);
  assert.deepEqual([...a.artifacts.keys()], [...b.artifacts.keys()]);
  for (const [name, bytes] of a.artifacts) assert.deepEqual(bytes, b.artifacts.get(name), name);
  const manifest = JSON.parse(new TextDecoder().decode(a.artifacts.get("vgg.manifest.json")));
  assert.equal(manifest.vectors.samples, 1);
  assert.equal(manifest.vectors.positionsPerSample, 3);
  for (const layer of manifest.layers) {
    if (layer.vectors === null) continue;
    assert.ok(a.artifacts.has(layer.vectors.params));
    for (const f of Object.values(layer.vectors.files) as { mem: string; npy: string }[]) {
      assert.ok(a.artifacts.has(f.mem) && a.artifacts.has(f.npy), f.mem);
    }
  }
  await assert.rejects(
    () => compile(MODEL, { passes: `${BASE},bfp`, target: "fpga{vectors=2}", modelName: "vgg" }),
    /option vectors=2 needs calibration inputs: compile with --calib/,
  );
});

const CASES: [string, string][] = [
  ["bfp per-channel, nearest-even", `${BASE},bfp`],
  ["bfp mx block 8, toward-zero, oihw, pe/simd padding", `${BASE},bfp{scheme=mx,block=8,rounding=toward-zero}`],
  ["fixed, toward-negative", `${BASE},fixed{rounding=toward-negative}`],
  ["bfp mixed widths 5..10 (mixed precision)", `${BASE},bfp{avg-mantissa=7,mantissa-min=5,mantissa-max=10}`],
];

for (const [what, passes] of CASES) {
  Deno.test({
    name: `rtl-sim: every layer of vgg_dense matches (${what})`,
    ignore: !iverilog,
    async fn() {
      const layout = what.includes("oihw") ? "oihw" : "ohwi";
      const packing = what.includes("padding") ? "pe=3,simd=5," : "";
      const result = await build(passes, `fpga{vectors=2,vector-positions=4,${packing}layout=${layout}}`);
      const dir = await writeOut(result);
      try {
        const sim = await rtlSim(dir);
        assert.equal(sim.layers.length, 7);
        if (what.includes("mixed")) {
          const widths = result.module.graph.ops.filter((op) => op.domain === BFP_DOMAIN && op.type !== "Quantize")
            .map((op) => bfpLayerPlan(op).format.mantissaBits);
          assert.ok(new Set(widths).size > 1, `widths ${widths}`);
        }
        for (const r of sim.layers) {
          assert.ok(r.ok, `${r.name}: ${r.log}`);
          assert.ok(r.outputs > 0 && r.cycles > 0);
        }
        if (passes.endsWith(",bfp")) {
          // Negative: one golden accumulator word, then one weight word, corrupted.
          const layer = JSON.parse(await Deno.readTextFile(join(dir, "vgg.manifest.json"))).layers[2];
          const acc = join(dir, layer.vectors.files.acc.mem);
          const lines = (await Deno.readTextFile(acc)).split("\n");
          lines[3] = (BigInt(`0x${lines[3]}`) ^ 1n).toString(16).padStart(16, "0");
          await Deno.writeTextFile(acc, lines.join("\n"));
          const bad = await rtlSim(dir);
          assert.deepEqual(bad.layers.filter((r) => !r.ok).map((r) => r.name), [layer.name]);
          assert.match(bad.layers.find((r) => !r.ok)!.log, /MISMATCH sample=0 position=0 channel=3/);
          await Deno.writeTextFile(acc, lines.map((l, i) => (i === 3 ? "" : l)).join("\n")); // drop a word too
          const weights = join(dir, layer.companions.find((c: string) => c.endsWith(".mantissas.mem")));
          const w = (await Deno.readTextFile(weights)).split("\n");
          w[1] = w[1].replace(/^./, (d) => ((parseInt(d, 16) ^ 8).toString(16)));
          await Deno.writeTextFile(weights, w.join("\n"));
          assert.equal((await rtlSim(dir)).layers.find((r) => r.name === layer.name)!.ok, false);
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "rtl-sim: every layer of mobilenet matches (depthwise inputs with one exponent per sample and channel plane)",
  ignore: !iverilog,
  async fn() {
    const mobilenet = Deno.readFileSync(join(MODELS, "mobilenet.onnx"));
    const result = await build(`${BASE},bfp`, "fpga{vectors=1,vector-positions=4}", mobilenet);
    const plans = result.module.graph.ops.filter((op) => op.domain === BFP_DOMAIN && op.type !== "Quantize")
      .map((op) => bfpLayerPlan(op));
    const planes = plans.filter((p) => p.input.blocking.block === 0 && p.input.blocking.group > 1);
    assert.ok(planes.length > 0 && planes.every((p) => p.input.blocking.group === p.group), `${planes.length}`);
    const dir = await writeOut(result);
    try {
      const sim = await rtlSim(dir);
      assert.equal(sim.layers.length, plans.length);
      for (const r of sim.layers) assert.ok(r.ok && r.outputs > 0, `${r.name}: ${r.log}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "deno task rtl-sim: one line for a folder without vectors; exit 0 on a match",
  ignore: !iverilog,
  async fn() {
    const script = new URL("./rtl_sim.ts", import.meta.url).pathname;
    const task = (dir: string): Promise<Deno.CommandOutput> =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-read", "--allow-write", "--allow-run=iverilog,vvp", script, dir],
        stdout: "piped",
        stderr: "piped",
      }).output();
    const plain = await writeOut(await build(`${BASE},bfp`, "fpga"));
    try {
      const none = await task(plain);
      assert.equal(none.code, 2);
      assert.match(
        new TextDecoder().decode(none.stderr),
        /^rtl-sim: no golden vectors in .*: emit with vectors=N and --calib\n$/,
      );
    } finally {
      await Deno.remove(plain, { recursive: true });
    }
    const dir = await writeOut(
      await build(`${BASE},bfp{rounding=toward-positive}`, "fpga{vectors=1,vector-positions=2}"),
    );
    try {
      const ok = await task(dir);
      const out = new TextDecoder().decode(ok.stdout);
      assert.equal(ok.code, 0, out + new TextDecoder().decode(ok.stderr));
      assert.match(
        out,
        /layer 0 "\/features\/features.0\/Conv": \d+ outputs checked, 0 mismatches, \d+ cycles, [\d.]+ s\n/,
      );
      assert.match(out, /rtl-sim: 7 layers, all \d+ outputs match\n$/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
