// Figures of the C target (issue 13): Cortex-M4 sizes (arm-none-eabi-size), arena against its lower bound, -Os code,
// host time per image against the interpreter on the same module. Usage: deno run -A bench/c_target_table.ts [models...]
import { join } from "node:path";
import { readNpy } from "../data/npy.ts";
import { compile } from "../driver/compile.ts";
import { Interpreter } from "../ir/interpreter.ts";
import { mcuSim } from "../targets/c/mcu_sim.ts";

const MODELS = new URL("../examples/models/", import.meta.url).pathname;
const X = readNpy(Deno.readFileSync(join(MODELS, "mnist_test_x.npy")));
const models = Deno.args.length > 0
  ? Deno.args
  : ["mlp", "vgg_dense", "vgg_sparse", "vgg_sparse_slim50_ref", "mobilenet", "resnet_preact", "densenet", "masknet"];
const sh = async (cmd: string, args: string[], cwd: string) => {
  const r = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!r.success) throw new Error(new TextDecoder().decode(r.stderr));
  return new TextDecoder().decode(r.stdout);
};
const M4 = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-std=c99"];
function sections(out: string): Record<string, number> {
  const s: Record<string, number> = {};
  for (const line of out.split("\n")) {
    const m = /^(\.\S+)\s+(\d+)/.exec(line);
    if (m) s[m[1]] = (s[m[1]] ?? 0) + Number(m[2]);
  }
  return s;
}
for (const model of models) {
  for (const passes of ["", "bfp", "prune,svd,bfp"]) {
    if (passes === "prune,svd,bfp" && model !== "vgg_sparse") continue;
    const res = await compile(Deno.readFileSync(join(MODELS, `${model}.onnx`)), {
      passes,
      target: "c{vectors=500}",
      modelName: model,
      calibration: X,
      verifyEach: false,
    });
    const dir = await Deno.makeTempDir();
    for (const [n, b] of res.artifacts) await Deno.writeFile(join(dir, n), b);
    const man = JSON.parse(await Deno.readTextFile(join(dir, `${model}.manifest.json`)));
    const host = await mcuSim(dir, { cortexM4: false });
    const m4 = await mcuSim(dir, { samples: 20, timeoutMs: 600_000 });
    const os = sections(
      await sh("arm-none-eabi-gcc", [...M4, "-Os", "-c", `${model}.c`, "-o", "os.o"], dir).then(() =>
        sh("arm-none-eabi-size", ["-A", "os.o"], dir)
      ),
    );
    const o2 = sections(
      await sh("arm-none-eabi-gcc", [...M4, "-O2", "-c", `${model}.c`, "-o", "o2.o"], dir).then(() =>
        sh("arm-none-eabi-size", ["-A", "o2.o"], dir)
      ),
    );
    // Interpreter: batch 2000 throughput and batch-1 latency (100 images), same module the C came from.
    const interp = new Interpreter(res.module);
    const inName = res.module.graph.inputs[0].name;
    const X500 = { ...X, shape: [500, 1, 28, 28], data: (X.data as Float32Array).subarray(0, 500 * 784) };
    let t = performance.now();
    interp.run({ [inName]: X500 });
    const batchMs = (performance.now() - t) / 500;
    t = performance.now();
    for (let i = 0; i < 50; i++) {
      interp.run({
        [inName]: { ...X, shape: [1, 1, 28, 28], data: (X.data as Float32Array).subarray(i * 784, (i + 1) * 784) },
      });
    }
    const oneMs = (performance.now() - t) / 50;
    console.log(JSON.stringify({
      model,
      passes: passes || "(float)",
      exact: man.exact,
      ok: host.ok && m4.ok,
      m4ModelFlash: m4.modelObject!.flash,
      m4ModelRam: m4.modelObject!.ram,
      arena: man.memory.plannedBytes,
      lowerBound: man.memory.lowerBound,
      naive: man.memory.naiveBytes,
      weightBytes: man.weightBytes,
      o2Text: o2[".text"],
      o2Rodata: o2[".rodata"] ?? 0,
      osText: os[".text"],
      osRodata: os[".rodata"] ?? 0,
      elfFlash: m4.elf!.flash,
      elfRam: m4.elf!.ram,
      hostMsPerImage: +(host.host.wallMs / 500).toFixed(4),
      interpBatchMsPerImage: +batchMs.toFixed(4),
      interpBatch1Ms: +oneMs.toFixed(4),
      qemuSecondsPer20: +(m4.cortexM4!.wallMs / 1000).toFixed(2),
    }));
    await Deno.remove(dir, { recursive: true });
  }
}
