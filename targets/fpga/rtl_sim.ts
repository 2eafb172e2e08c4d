/**
 * `deno task rtl-sim OUTDIR`: simulate the FPGA target's processing element
 * (`rtl/bfp_pe.v`, driven by `rtl/tb_layer.v`) with Icarus Verilog on the
 * golden vectors of every lowered layer in a folder written by
 * `--target fpga{vectors=N}` with `--calib`, and check every accumulator and
 * unit. Exit status 0 only when every output matches; 1 on a mismatch; 2 when
 * the folder or the tools are not usable (one line saying why).
 * @module
 */
import { join } from "node:path";

/** One layer's simulation. */
export interface RtlLayerResult {
  /** Layer index in the image. */
  readonly index: number;
  /** The op's name. */
  readonly name: string;
  /** Outputs compared. */
  readonly outputs: number;
  /** Outputs whose accumulator or unit differ. */
  readonly mismatches: number;
  /** Simulated clock cycles. */
  readonly cycles: number;
  /** Wall time of iverilog and vvp, in milliseconds. */
  readonly wallMs: number;
  /** True when vvp exited 0 and nothing differs. */
  readonly ok: boolean;
  /** The simulator's output lines (mismatches, errors). */
  readonly log: string;
}

/** What {@linkcode rtlSim} found. */
export interface RtlSimResult {
  /** The model name of the manifest. */
  readonly model: string;
  /** Every layer with vectors, in order. */
  readonly layers: readonly RtlLayerResult[];
  /** True when every layer matched. */
  readonly ok: boolean;
}

/** An error of the setup (no vectors, no iverilog): one line, exit status 2. */
export class RtlSimSetupError extends Error {
  override readonly name = "RtlSimSetupError";
}

interface ManifestLayer {
  readonly index: number;
  readonly name: string;
  readonly vectors?: { readonly params: string } | null;
}

const RTL_FILES = ["tb_layer.v", "bfp_pe.v"];

async function run(cmd: string, args: string[], cwd: string): Promise<{ code: number; out: string }> {
  try {
    const { code, stdout, stderr } = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
      .output();
    const dec = new TextDecoder();
    return { code, out: dec.decode(stdout) + dec.decode(stderr) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new RtlSimSetupError(
        `${cmd} not found: install Icarus Verilog (Debian/Ubuntu package iverilog: apt-get install iverilog)`,
      );
    }
    throw e;
  }
}

/**
 * Simulate every layer with golden vectors in `outDir` (module header).
 *
 * @param log Receives one line per layer as it finishes.
 * @throws {RtlSimSetupError} When the folder has no manifest or no vectors, the rounding is stochastic, or
 *   iverilog/vvp are missing.
 * @example A folder without a manifest is one line
 * ```ts
 * import assert from "node:assert/strict";
 * import { rtlSim } from "./rtl_sim.ts";
 * const dir = await Deno.makeTempDir();
 * await assert.rejects(() => rtlSim(dir), /no <model>\.manifest\.json in/);
 * await Deno.remove(dir);
 * ```
 */
export async function rtlSim(outDir: string, log: (line: string) => void = () => {}): Promise<RtlSimResult> {
  const manifests: string[] = [];
  try {
    for await (const e of Deno.readDir(outDir)) {
      if (e.isFile && e.name.endsWith(".manifest.json")) manifests.push(e.name);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new RtlSimSetupError(`folder ${outDir} does not exist`);
    throw e;
  }
  if (manifests.length !== 1) {
    throw new RtlSimSetupError(
      manifests.length === 0
        ? `no <model>.manifest.json in ${outDir}: emit with --target fpga{vectors=N} and --calib`
        : `several manifests in ${outDir} (${manifests.sort().join(", ")}): give a folder of one model`,
    );
  }
  const manifest = JSON.parse(await Deno.readTextFile(join(outDir, manifests[0])));
  const layers = (manifest.layers as ManifestLayer[]).filter((l) => l.vectors !== undefined && l.vectors !== null);
  if (manifest.vectors === undefined || layers.length === 0) {
    throw new RtlSimSetupError(`no golden vectors in ${outDir}: emit with vectors=N and --calib`);
  }
  if (manifest.numberFormat?.rounding === "stochastic") {
    throw new RtlSimSetupError(
      "rounding stochastic is not implemented by rtl/bfp_pe.v (nearest-even, toward-zero, toward-positive, " +
        "toward-negative are)",
    );
  }
  const tmp = await Deno.makeTempDir({ prefix: "cnnc-rtl-" });
  try {
    const sources: string[] = [];
    for (const f of RTL_FILES) {
      const text = await (await fetch(new URL(`./rtl/${f}`, import.meta.url))).text();
      await Deno.writeTextFile(join(tmp, f), text);
      sources.push(join(tmp, f));
    }
    await run("iverilog", ["-V"], tmp);
    const results: RtlLayerResult[] = [];
    for (const layer of layers) {
      const inc = join(tmp, `layer${layer.index}`);
      await Deno.mkdir(inc);
      await Deno.copyFile(join(outDir, layer.vectors!.params), join(inc, "params.vh"));
      const started = performance.now();
      const vvpFile = join(inc, "tb.vvp");
      const built = await run("iverilog", ["-g2005", "-I", inc, "-o", vvpFile, ...sources], outDir);
      let code = built.code, out = built.out;
      if (code === 0) ({ code, out } = await run("vvp", ["-n", vvpFile], outDir));
      const wallMs = performance.now() - started;
      const m = /RESULT outputs=(\d+) mismatches=(\d+) cycles=(\d+)/.exec(out);
      const outputs = m === null ? 0 : Number(m[1]), mismatches = m === null ? -1 : Number(m[2]);
      const cycles = m === null ? 0 : Number(m[3]);
      const ok = code === 0 && m !== null && mismatches === 0 && outputs > 0;
      const r = { index: layer.index, name: layer.name, outputs, mismatches, cycles, wallMs, ok, log: out.trim() };
      results.push(r);
      log(layerLine(r));
    }
    return { model: manifest.model, layers: results, ok: results.every((r) => r.ok) };
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

/** The line printed per layer. */
function layerLine(r: RtlLayerResult): string {
  const what = `layer ${r.index} ${JSON.stringify(r.name)}`;
  if (r.mismatches < 0) return `${what}: FAILED (no result from the simulator): ${r.log.split("\n")[0]}`;
  return `${what}: ${r.outputs} outputs checked, ${r.mismatches} mismatches, ${r.cycles} cycles, ` +
    `${(r.wallMs / 1000).toFixed(2)} s${r.ok ? "" : ` FAILED\n${r.log}`}`;
}

if (import.meta.main) {
  const dir = Deno.args[0];
  if (dir === undefined || Deno.args.length !== 1) {
    console.error("usage: deno task rtl-sim OUTDIR (a folder written by --target fpga{vectors=N} with --calib)");
    Deno.exit(2);
  }
  try {
    const result = await rtlSim(dir, (line) => console.log(line));
    const failed = result.layers.filter((r) => !r.ok);
    const total = result.layers.reduce((a, r) => a + r.outputs, 0);
    if (failed.length === 0) console.log(`rtl-sim: ${result.layers.length} layers, all ${total} outputs match`);
    else {console.error(`rtl-sim: ${failed.length} layers differ: ${
        failed.map((r) => JSON.stringify(r.name)).join(", ")
      }`);}
    Deno.exit(failed.length === 0 ? 0 : 1);
  } catch (e) {
    if (e instanceof RtlSimSetupError) {
      console.error(`rtl-sim: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
