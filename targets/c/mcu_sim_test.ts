/**
 * mcu-sim on a hand-written model with the C target's interface (`testdata/tiny.h`, `tiny.c`) and vectors made here:
 * gcc and a Cortex-M4 in qemu match the golden outputs and each other bit for bit (a subnormal output included), one
 * flipped golden bit fails with exit status 1, the tolerance rule, the setup errors and the `mcu` report entry.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { compareOutputs, mcuSim, type McuSimOptions, type McuSimResult } from "./mcu_sim.ts";
import { mulberry32 } from "../../tests/tensor_compare.ts";

const TESTDATA = new URL("./testdata/", import.meta.url).pathname;
const SCRIPT = new URL("./mcu_sim.ts", import.meta.url).pathname;
const M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"];

async function probe(cmd: string, args: string[]): Promise<string | null> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return r.success ? new TextDecoder().decode(r.stdout).trim() : null;
  } catch {
    return null;
  }
}

const gcc = (await probe("gcc", ["--version"])) !== null;
const rdimon = await probe("arm-none-eabi-gcc", [...M4_FLAGS, "-print-file-name=rdimon.specs"]);
const qemu = (await probe("qemu-system-arm", ["--version"])) !== null;
/** The Cortex-M4 stage needs the toolchain, newlib and qemu. */
const m4 = rdimon !== null && rdimon.includes("/") && qemu;
if (!gcc) console.log("mcu_sim_test: gcc not found, C harness tests skipped (install the Debian package gcc)");
if (gcc && !m4) {
  const missing = [
    rdimon === null ? "gcc-arm-none-eabi" : null,
    rdimon !== null && !rdimon.includes("/") ? "libnewlib-arm-none-eabi" : null,
    qemu ? null : "qemu-system-arm",
  ].filter((p) => p !== null);
  console.log(`mcu_sim_test: Cortex-M4 stage skipped, host only (install the Debian packages ${missing.join(" ")})`);
}

// tiny.c's weights and biases, in the order they appear there (4 rows of 8, then 4).
const TINY_C = await Deno.readTextFile(join(TESTDATA, "tiny.c"));
const CONSTANTS = [...TINY_C.matchAll(/-?\d+\.\d+f/g)].map((m) => parseFloat(m[0]));
const INPUT_SIZE = 8, OUTPUT_SIZE = 5;

/** tiny_run in float32, in the C code's order of operations (no contraction). */
function tinyRun(x: Float32Array): Float32Array {
  const out = new Float32Array(OUTPUT_SIZE);
  for (let j = 0; j < 4; j++) {
    let acc = CONSTANTS[32 + j];
    for (let i = 0; i < INPUT_SIZE; i++) acc = Math.fround(acc + Math.fround(CONSTANTS[8 * j + i] * x[i]));
    out[j] = acc;
  }
  out[4] = Math.fround(out[0] * 2 ** -130);
  return out;
}

/** Uniform in [-1, 1), reproducible. */
function random(seed: number): () => number {
  const next = mulberry32(seed);
  return () => 2 * next() - 1;
}

function littleEndian(values: Float32Array): Uint8Array {
  const bytes = new Uint8Array(values.length * 4), view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setFloat32(4 * i, v, true));
  return bytes;
}

interface FixtureOptions {
  readonly count?: number;
  readonly exact?: boolean;
  readonly tolerance?: number;
  /** Edit the golden outputs before they are written. */
  readonly golden?: (outputs: Float32Array) => void;
  /** Edit tiny.c. */
  readonly source?: (text: string) => string;
  /** Replace manifest fields. */
  readonly manifest?: Record<string, unknown>;
}

/** A folder as `--target c{vectors=N}` writes it, with the tiny model. */
async function fixture(o: FixtureOptions = {}): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "cnnc-mcu-test-" });
  const count = o.count ?? 4;
  const next = random(7);
  const inputs = new Float32Array(count * INPUT_SIZE).map(() => next());
  const outputs = new Float32Array(count * OUTPUT_SIZE);
  for (let s = 0; s < count; s++) {
    outputs.set(tinyRun(inputs.subarray(s * INPUT_SIZE, (s + 1) * INPUT_SIZE)), s * OUTPUT_SIZE);
  }
  o.golden?.(outputs);
  await Deno.copyFile(join(TESTDATA, "tiny.h"), join(dir, "tiny.h"));
  await Deno.writeTextFile(join(dir, "tiny.c"), (o.source ?? ((t) => t))(TINY_C));
  await Deno.writeFile(join(dir, "tiny.vectors.input.bin"), littleEndian(inputs));
  await Deno.writeFile(join(dir, "tiny.vectors.output.bin"), littleEndian(outputs));
  const manifest = {
    format: "cnnc-c",
    version: 1,
    model: "tiny",
    identifier: "tiny",
    macroPrefix: "TINY",
    header: "tiny.h",
    sources: ["tiny.c"],
    inputSize: INPUT_SIZE,
    outputSize: OUTPUT_SIZE,
    arenaBytes: 16,
    arenaAlign: 8,
    vectors: {
      count,
      inputs: "tiny.vectors.input.bin",
      outputs: "tiny.vectors.output.bin",
      exact: o.exact ?? true,
      tolerance: o.tolerance ?? 1e-5,
    },
    ...o.manifest,
  };
  await Deno.writeTextFile(join(dir, "tiny.manifest.json"), JSON.stringify(manifest, null, 2));
  return dir;
}

async function withFixture(o: FixtureOptions, body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fixture(o);
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const sim = (dir: string, options: McuSimOptions = {}): Promise<McuSimResult> =>
  mcuSim(dir, { cortexM4: m4, ...options });

/** `deno task mcu-sim`, with the task's permissions. */
async function task(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-run", SCRIPT, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

async function listing(dir: string): Promise<string[]> {
  const files: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const info = await Deno.stat(join(dir, e.name));
    files.push(`${e.name} ${info.size} ${info.mtime?.getTime()}`);
  }
  return files.sort();
}

Deno.test("the fixture's golden outputs include a subnormal, which a flush-to-zero FPU would lose", async () => {
  assert.equal(CONSTANTS.length, 36);
  const outputs = tinyRun(new Float32Array([0.5, -0.25, 0.75, 0.125, -1, 0.5, 0.25, -0.5]));
  assert.ok(outputs[4] !== 0 && Math.abs(outputs[4]) < 2 ** -126, `${outputs[4]}`);
  await withFixture({}, async (dir) => {
    const golden = new DataView((await Deno.readFile(join(dir, "tiny.vectors.output.bin"))).buffer);
    for (let s = 0; s < 4; s++) assert.notEqual(golden.getFloat32((s * OUTPUT_SIZE + 4) * 4, true), 0);
  });
});

Deno.test("compareOutputs: exact compares bits; the tolerance is relative to max(1, max |golden| of the sample)", () => {
  const bits = (...v: number[]): Uint32Array => new Uint32Array(new Float32Array(v).buffer);
  const exact = { exact: true, tolerance: 0 }, loose = { exact: false, tolerance: 1e-3 };
  assert.deepEqual(compareOutputs(bits(1, -0), bits(1, -0), 2, exact), { mismatches: 0, first: null });
  assert.deepEqual(compareOutputs(bits(0), bits(-0), 1, exact), {
    mismatches: 1,
    first: "sample 0 output 0: got 0x00000000 (0), want 0x80000000 (0)",
  });
  // Sample 0 scales by 1 (absolute 1e-3), sample 1 by its largest |golden|, 100 (so 0.1).
  assert.equal(compareOutputs(bits(0.5009, 0.2, 100, 5.09), bits(0.5, 0.2, 100, 5), 2, loose).mismatches, 0);
  const off = compareOutputs(bits(0.5011, 0.2, 100, 5.2), bits(0.5, 0.2, 100, 5), 2, loose);
  assert.equal(off.mismatches, 2);
  assert.match(off.first!, /^sample 0 output 0: got 0x[0-9a-f]{8} \(0\.50\d+\), want 0x3f000000 \(0\.5\)$/);
  // Equal bits match (NaN, infinity); a NaN against a number does not.
  assert.equal(compareOutputs(bits(NaN, Infinity), bits(NaN, Infinity), 2, loose).mismatches, 0);
  assert.equal(compareOutputs(bits(NaN, 1), bits(1, 1), 2, loose).mismatches, 1);
});

Deno.test("mcu-sim: a folder without vectors, a missing vector file, a bad manifest are one-line setup errors", async () => {
  await withFixture({ manifest: { vectors: null } }, async (dir) => {
    await assert.rejects(
      () => mcuSim(dir),
      /^McuSimSetupError: tiny\.manifest\.json has no golden vectors \(vectors: null\): re-emit with --target c\{vectors=N\} and --calib$/,
    );
    const r = await task(dir);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^mcu-sim: tiny\.manifest\.json has no golden vectors \(vectors: null\): re-emit .*\n$/);
  });
  await withFixture({}, async (dir) => {
    await Deno.remove(join(dir, "tiny.vectors.input.bin"));
    await assert.rejects(() => mcuSim(dir), /input vectors tiny\.vectors\.input\.bin named by the manifest is missing/);
  });
  await withFixture({ manifest: { identifier: "tiny-net" } }, async (dir) => {
    await assert.rejects(() => mcuSim(dir), /tiny\.manifest\.json: identifier is "tiny-net", expected a C identifier/);
  });
  await withFixture({ manifest: { inputSize: 9 } }, async (dir) => {
    await assert.rejects(() => mcuSim(dir), /input vectors .* has 128 bytes, expected 144 \(36 float32\)/);
  });
  await withFixture({ manifest: { format: "cnnc-fpga" } }, async (dir) => {
    await assert.rejects(() => mcuSim(dir), /no <model>\.manifest\.json of format cnnc-c in .*--target c\{vectors=N\}/);
  });
  await withFixture({}, async (dir) => {
    await assert.rejects(() => mcuSim(dir, { samples: 5 }), /--samples 5: expected 1 to 4 \(the vectors' count\)/);
  });
});

Deno.test({
  name: "mcu-sim: tiny runs bit-exactly on the host and the Cortex-M4, OUTDIR untouched; sizes; --samples",
  ignore: !gcc,
  async fn() {
    await withFixture({}, async (dir) => {
      const before = await listing(dir);
      const lines: string[] = [];
      const r = await sim(dir, { log: (l) => lines.push(l) });
      assert.ok(r.ok, lines.join("\n"));
      assert.deepEqual(await listing(dir), before);
      assert.deepEqual([r.model, r.samples, r.exact, r.arenaBytes], ["tiny", 4, true, 16]);
      assert.deepEqual([r.host.mismatches, r.host.error], [0, null]);
      assert.equal(lines[0], "host: 4 samples, 0 mismatches (bit-exact)");
      if (!m4) return;
      assert.deepEqual([r.cortexM4!.mismatches, r.cortexM4!.mismatchesVsHost, r.cortexM4!.error], [0, 0, null]);
      assert.match(
        lines[1],
        /^cortex-m4 \(qemu mps2-an386\): 4 samples, 0 mismatches vs host, 0 vs golden \(bit-exact\), [\d.]+ s$/,
      );
      const o = r.modelObject!;
      assert.ok(o.text >= 36 * 4, `${o.text}`); // the weights are read-only data, counted in text
      assert.deepEqual([o.flash, o.ram], [o.text + o.data, o.data + o.bss]);
      assert.equal(
        lines[2],
        `size (model object, -O2): flash ${o.flash} B (text ${o.text} + data ${o.data}), ` +
          `RAM ${o.ram} B (data ${o.data} + bss ${o.bss}) + arena 16 B`,
      );
      assert.ok(r.elf!.flash > o.flash && r.elf!.ram >= 16);
      const two = await sim(dir, { samples: 2 });
      assert.ok(two.ok);
      assert.equal(two.cortexM4!.samples, 2);
    });
  },
});

Deno.test({
  name: "mcu-sim: one flipped golden bit is an exact mismatch on both; deno task mcu-sim exits 1",
  ignore: !gcc,
  async fn() {
    const flip = (g: Float32Array): void => {
      new Uint32Array(g.buffer)[1 * OUTPUT_SIZE + 2] ^= 1;
    };
    await withFixture({ golden: flip }, async (dir) => {
      const r = await sim(dir);
      assert.equal(r.ok, false);
      assert.equal(r.host.mismatches, 1);
      assert.match(r.host.firstMismatch!, /^sample 1 output 2: got 0x[0-9a-f]{8} \(.*\), want 0x[0-9a-f]{8} \(.*\)$/);
      if (m4) assert.deepEqual([r.cortexM4!.mismatches, r.cortexM4!.mismatchesVsHost], [1, 0]);
      if (!m4) return;
      const cli = await task(dir, "--samples", "3");
      assert.equal(cli.code, 1, cli.stderr);
      assert.match(cli.stdout, /^host: 3 samples, 1 mismatches \(bit-exact\) FAILED: first at sample 1 output 2: got /);
      assert.match(
        cli.stdout,
        /\ncortex-m4 \(qemu mps2-an386\): 3 samples, 0 mismatches vs host, 1 vs golden .* FAILED: /,
      );
      assert.equal(cli.stderr, "mcu-sim: tiny differs: host, cortex-m4\n");
    });
  },
});

Deno.test({
  name: "mcu-sim: tolerance mode accepts a relative error within the tolerance, rejects a larger one",
  ignore: !gcc,
  async fn() {
    const scale = (factor: number) => (g: Float32Array): void => {
      g[0] *= factor;
    };
    await withFixture({ exact: false, tolerance: 1e-5, golden: scale(1 + 1e-6) }, async (dir) => {
      const r = await sim(dir);
      assert.ok(r.ok, `${r.host.firstMismatch}`);
      assert.equal(r.exact, false);
      // Against the host the Cortex-M4 is still compared bit for bit.
      if (m4) assert.equal(r.cortexM4!.mismatchesVsHost, 0);
    });
    await withFixture({ exact: false, tolerance: 1e-5, golden: scale(1 + 1e-3) }, async (dir) => {
      const lines: string[] = [];
      const r = await sim(dir, { log: (l) => lines.push(l) });
      assert.equal(r.host.mismatches, 1);
      assert.match(
        lines[0],
        /^host: 4 samples, 1 mismatches \(within 0\.00001 relative\) FAILED: first at sample 0 output 0/,
      );
      if (m4) assert.equal(r.cortexM4!.mismatches, 1);
    });
  },
});

Deno.test({
  name: "mcu-sim: compile errors, a model accepting a null input, header and manifest disagreeing",
  ignore: !gcc,
  async fn() {
    await withFixture({ source: (t) => t.replace("int i, j;", "int i, j, unused;") }, async (dir) => {
      await assert.rejects(
        () => sim(dir),
        /^McuSimSetupError: host build of tiny\.c failed \(gcc\): .*tiny\.c:\d+:\d+: error: unused variable .unused./,
      );
    });
    const acceptsNull = (t: string): string =>
      t.replace("if (input == NULL || ", "if (input == NULL) return 0;\n  if (");
    await withFixture({ source: acceptsNull, count: 1 }, async (dir) => {
      const r = await sim(dir);
      assert.equal(r.ok, false);
      assert.match(r.host.error!, /^exit status 4: cnnc-harness: the model returned 0 for a null input pointer/);
      if (m4) assert.match(r.cortexM4!.error!, /^exit status 4: cnnc-harness: the model returned 0 for a null/);
    });
    await withFixture({ manifest: { arenaBytes: 32 } }, async (dir) => {
      await assert.rejects(
        () => sim(dir),
        /tiny\.h and the manifest disagree: input, output, arena, align are 8, 5, 16, 8 in the header, 8, 5, 32, 8 in/,
      );
    });
  },
});

Deno.test({
  name: "deno task mcu-sim --report: the mcu entry is merged into the compiler's report",
  ignore: !m4,
  async fn() {
    await withFixture({ count: 2 }, async (dir) => {
      const report = join(dir, "..", `${dir.split("/").at(-1)}.report.json`);
      await Deno.writeTextFile(report, JSON.stringify({ model: "tiny", mcu: { stale: true } }));
      try {
        const r = await task(dir, "--report", report);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /\nmcu-sim: tiny matches on the host and the Cortex-M4 \(2 samples\)\n$/);
        const json = JSON.parse(await Deno.readTextFile(report));
        assert.equal(json.model, "tiny");
        assert.equal(json.mcu.stale, undefined);
        assert.deepEqual([json.mcu.ok, json.mcu.samples, json.mcu.exact], [true, 2, true]);
        assert.deepEqual([json.mcu.cortexM4.mismatches, json.mcu.cortexM4.mismatchesVsHost], [0, 0]);
        const o = json.mcu.modelObject;
        assert.equal(o.flashBytes, o.textBytes + o.dataBytes);
        assert.equal(o.arenaBytes, 16);
      } finally {
        await Deno.remove(report);
      }
    });
  },
});
