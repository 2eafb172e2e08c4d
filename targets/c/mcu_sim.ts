/**
 * `deno task mcu-sim OUTDIR [--samples N] [--report FILE.json]`: prove that the C99 model in a folder written by
 * `--target c{vectors=N}` with `--calib` runs correctly. The harness (`harness/harness.c`) runs the model on the
 * golden input vectors on the host (gcc) and on a Cortex-M4 with FPU under qemu (`-M mps2-an386`, newlib semihosting,
 * `harness/startup_m4.c`, `harness/mps2_an386.ld`); both must match the golden outputs, and the Cortex-M4 the host bit
 * for bit. `arm-none-eabi-size` gives the model object's flash and RAM. Everything is built in a temporary folder;
 * OUTDIR is only read. Exit status 0 only when everything matches; 1 on a mismatch or a failing run; 2 when the
 * folder, the emitted code or the tools are not usable (one line saying why). qemu does not model the DWT cycle
 * counter, so there are no cycle counts, only wall time.
 * @module
 */
import { isAbsolute, join, resolve } from "node:path";

/** gcc flags of the host build (model and harness). */
export const HOST_CFLAGS: readonly string[] = [
  "-std=c99",
  "-Wall",
  "-Wextra",
  "-Werror",
  "-pedantic",
  "-O2",
  "-ffp-contract=off",
];

/** arm-none-eabi-gcc flags of the Cortex-M4 build (model, harness and start-up). */
export const CORTEX_M4_CFLAGS: readonly string[] = [
  "-mcpu=cortex-m4",
  "-mthumb",
  "-mfloat-abi=hard",
  "-mfpu=fpv4-sp-d16",
  "-O2",
  "-std=c99",
  "-Wall",
  "-Wextra",
  "-Werror",
  "-pedantic",
  "-ffp-contract=off",
];

/** The qemu machine: ARM AN386, a Cortex-M4 with FPU on an MPS2 board. */
export const QEMU_MACHINE = "mps2-an386";

/** Options of {@linkcode mcuSim}. */
export interface McuSimOptions {
  /** Check only the first N samples of the vectors (default: all). */
  readonly samples?: number;
  /** False: only the host build (no arm-none-eabi toolchain or qemu needed, no sizes). Default true. */
  readonly cortexM4?: boolean;
  /** Limit of each harness run, host or qemu, in milliseconds (default 120 000). */
  readonly timeoutMs?: number;
  /** Receives one line per stage as it finishes. */
  readonly log?: (line: string) => void;
}

/** One run of the harness and its comparison. */
export interface McuRunResult {
  /** Samples run. */
  readonly samples: number;
  /** Output elements that differ from the golden outputs (exact or within the tolerance); -1 without outputs. */
  readonly mismatches: number;
  /** The first of them (`sample 0 output 3: got 0x… (…), want 0x… (…)`), or null. */
  readonly firstMismatch: string | null;
  /** Wall time of the run, in milliseconds. */
  readonly wallMs: number;
  /** Why the run gave no usable outputs (the harness's or the simulator's line), or null. */
  readonly error: string | null;
  /** True when the run succeeded and nothing differs. */
  readonly ok: boolean;
  /** The outputs' float32 bits `[samples, outputSize]` (the host run only), or null without outputs. */
  readonly outputs?: Uint32Array | null;
}

/** The Cortex-M4 run, compared with the golden outputs and with the host's. */
export interface McuCortexM4Result extends McuRunResult {
  /** Output elements whose bits differ from the host's; -1 when either gave no outputs. */
  readonly mismatchesVsHost: number;
  /** The first of them, or null. */
  readonly firstMismatchVsHost: string | null;
}

/** `arm-none-eabi-size` of an object or ELF file, in bytes. */
export interface McuSizes {
  /** Code and read-only data. */
  readonly text: number;
  /** Initialized data (in flash and copied to RAM). */
  readonly data: number;
  /** Zero-initialized data. */
  readonly bss: number;
  /** text + data. */
  readonly flash: number;
  /** data + bss. */
  readonly ram: number;
}

/** What {@linkcode mcuSim} found. */
export interface McuSimResult {
  /** The manifest's model name. */
  readonly model: string;
  /** Samples checked. */
  readonly samples: number;
  /** True: outputs must equal the golden bits; false: within {@linkcode McuSimResult.tolerance}. */
  readonly exact: boolean;
  /** Relative tolerance of the non-exact comparison. */
  readonly tolerance: number;
  /** The host run. */
  readonly host: McuRunResult;
  /** The Cortex-M4 run in qemu, or null when not asked for. */
  readonly cortexM4: McuCortexM4Result | null;
  /** The model's objects alone (Cortex-M4, -O2), or null without the Cortex-M4 build. */
  readonly modelObject: McuSizes | null;
  /** The whole harness ELF (model, harness, start-up, newlib), or null. */
  readonly elf: McuSizes | null;
  /** The model's arena (`<ID>_ARENA_SIZE`), in bytes. */
  readonly arenaBytes: number;
  /** The first line of `arm-none-eabi-gcc --version`, or null. */
  readonly armCompiler: string | null;
  /** True when every run succeeded and matched. */
  readonly ok: boolean;
}

/** An error of the setup (no vectors, a missing tool, emitted code that does not compile): one line, exit status 2. */
export class McuSimSetupError extends Error {
  override readonly name = "McuSimSetupError";
}

/** The fields of `<model>.manifest.json` that mcu-sim reads. */
interface CManifest {
  readonly model: string;
  readonly identifier: string;
  readonly macroPrefix: string;
  readonly header: string;
  readonly sources: readonly string[];
  readonly inputSize: number;
  readonly outputSize: number;
  readonly arenaBytes: number;
  readonly arenaAlign: number;
  readonly vectors: {
    readonly count: number;
    readonly inputs: string;
    readonly outputs: string;
    readonly exact: boolean;
    readonly tolerance: number;
  };
}

const PACKAGES: Record<string, string> = {
  "gcc": "gcc",
  "arm-none-eabi-gcc": "gcc-arm-none-eabi",
  "arm-none-eabi-size": "binutils-arm-none-eabi",
  "qemu-system-arm": "qemu-system-arm",
};

const HARNESS_FILES = ["harness.c", "startup_m4.c", "mps2_an386.ld"];

interface Ran {
  readonly code: number;
  readonly out: string;
  readonly timedOut: boolean;
  readonly wallMs: number;
}

async function run(cmd: string, args: readonly string[], cwd: string, timeoutMs = 0): Promise<Ran> {
  const abort = new AbortController();
  const timer = timeoutMs > 0 ? setTimeout(() => abort.abort(), timeoutMs) : undefined;
  const started = performance.now();
  try {
    const { code, stdout, stderr } = await new Deno.Command(cmd, {
      args: [...args],
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: abort.signal,
    }).output();
    const dec = new TextDecoder();
    const out = dec.decode(stdout) + dec.decode(stderr);
    return { code, out, timedOut: abort.signal.aborted, wallMs: performance.now() - started };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new McuSimSetupError(
        `${cmd} not found: install the Debian/Ubuntu package ${PACKAGES[cmd] ?? cmd}` +
          ` (apt-get install ${PACKAGES[cmd] ?? cmd})`,
      );
    }
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new McuSimSetupError(
        `cannot run ${cmd}: mcu-sim needs --allow-run without a list (the host harness runs from a temporary folder)`,
      );
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** The compiler's first error line (else its first line), without the temporary folder's path. */
function firstError(out: string, tmp: string): string {
  const lines = out.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const line = lines.find((l) => /\berror\b/i.test(l)) ?? lines[0] ?? "(no output)";
  return line.replaceAll(`${tmp}/`, "");
}

async function compile(cc: string, args: readonly string[], what: string, tmp: string): Promise<void> {
  const r = await run(cc, args, tmp);
  if (r.code === 0) return;
  if (cc.startsWith("arm-none-eabi") && /rdimon\.specs|(stdint|stdio|stddef|errno)\.h: No such file/.test(r.out)) {
    throw new McuSimSetupError(
      "newlib for arm-none-eabi not found: install the Debian/Ubuntu package libnewlib-arm-none-eabi " +
        "(apt-get install libnewlib-arm-none-eabi)",
    );
  }
  throw new McuSimSetupError(`${what} failed (${cc}): ${firstError(r.out, tmp)}`);
}

const C_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const FILE_NAME = /^[A-Za-z0-9_.+\-/]+$/;

/** Read and check the folder's C-target manifest. */
async function readManifest(dir: string): Promise<{ file: string; manifest: CManifest }> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (e.isFile && e.name.endsWith(".manifest.json")) names.push(e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new McuSimSetupError(`folder ${dir} does not exist`);
    throw e;
  }
  const found: { file: string; json: Record<string, unknown> }[] = [];
  for (const file of names.sort()) {
    let json: unknown;
    try {
      json = JSON.parse(await Deno.readTextFile(join(dir, file)));
    } catch (e) {
      throw new McuSimSetupError(`${file} is not JSON: ${(e as Error).message}`);
    }
    if (typeof json === "object" && json !== null && (json as { format?: unknown }).format === "cnnc-c") {
      found.push({ file, json: json as Record<string, unknown> });
    }
  }
  if (found.length !== 1) {
    throw new McuSimSetupError(
      found.length === 0
        ? `no <model>.manifest.json of format cnnc-c in ${dir}: emit with --target c{vectors=N} and --calib`
        : `several C-target manifests in ${dir} (${found.map((f) => f.file).join(", ")}): give a folder of one model`,
    );
  }
  const { file, json: m } = found[0];
  const bad = (field: string, expected: string): never => {
    throw new McuSimSetupError(`${file}: ${field} is ${JSON.stringify(m[field])}, expected ${expected}`);
  };
  if (m.version !== 1) bad("version", "1 (the version mcu-sim reads)");
  if (typeof m.identifier !== "string" || !C_IDENTIFIER.test(m.identifier)) bad("identifier", "a C identifier");
  if (typeof m.macroPrefix !== "string" || !C_IDENTIFIER.test(m.macroPrefix)) bad("macroPrefix", "a C identifier");
  if (typeof m.header !== "string" || !FILE_NAME.test(m.header)) bad("header", "a file name");
  const sources = m.sources;
  if (!Array.isArray(sources) || sources.length === 0 || !sources.every((s) => typeof s === "string")) {
    bad("sources", "a non-empty list of file names");
  }
  for (const field of ["inputSize", "outputSize"]) {
    if (!Number.isInteger(m[field]) || (m[field] as number) < 1) bad(field, "a positive integer");
  }
  if (!Number.isInteger(m.arenaBytes) || (m.arenaBytes as number) < 0) bad("arenaBytes", "a byte count");
  const align = m.arenaAlign as number;
  if (!Number.isInteger(align) || align < 1 || (align & (align - 1)) !== 0) bad("arenaAlign", "a power of two");
  const v = m.vectors as Record<string, unknown> | null | undefined;
  if (v === null || v === undefined) {
    throw new McuSimSetupError(
      `${file} has no golden vectors (vectors: null): re-emit with --target c{vectors=N} and --calib`,
    );
  }
  const vbad = (field: string, expected: string): never => {
    throw new McuSimSetupError(`${file}: vectors.${field} is ${JSON.stringify(v[field])}, expected ${expected}`);
  };
  if (!Number.isInteger(v.count) || (v.count as number) < 1) vbad("count", "a positive integer");
  if (typeof v.inputs !== "string") vbad("inputs", "a file name");
  if (typeof v.outputs !== "string") vbad("outputs", "a file name");
  if (typeof v.exact !== "boolean") vbad("exact", "true or false");
  if (v.exact === false && !(typeof v.tolerance === "number" && v.tolerance >= 0)) {
    vbad("tolerance", "a number >= 0 (vectors.exact is false)");
  }
  for (const f of [m.header as string, ...(sources as string[]), v.inputs as string, v.outputs as string]) {
    if (isAbsolute(f) || f.split("/").includes("..")) {
      throw new McuSimSetupError(`${file} names ${f}, expected a file inside ${dir}`);
    }
  }
  const manifest = { ...m, vectors: { ...v, tolerance: typeof v.tolerance === "number" ? v.tolerance : 0 } };
  return { file, manifest: manifest as unknown as CManifest };
}

async function readVectors(dir: string, name: string, floats: number, what: string): Promise<Uint32Array> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(join(dir, name));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new McuSimSetupError(`${what} ${name} named by the manifest is missing`);
    }
    throw e;
  }
  if (bytes.length !== floats * 4) {
    throw new McuSimSetupError(`${what} ${name} has ${bytes.length} bytes, expected ${floats * 4} (${floats} float32)`);
  }
  return littleEndianWords(bytes);
}

function littleEndianWords(bytes: Uint8Array): Uint32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const words = new Uint32Array(bytes.length >> 2);
  for (let i = 0; i < words.length; i++) words[i] = view.getUint32(4 * i, true);
  return words;
}

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
function bitsToFloat(bits: number): number {
  u32[0] = bits;
  return f32[0];
}

function describe(bits: number): string {
  return `0x${bits.toString(16).padStart(8, "0")} (${bitsToFloat(bits)})`;
}

/**
 * Compare outputs with reference outputs, `[samples, outputSize]` float32 bit patterns. Exact: the bits must be
 * equal. Otherwise a value matches when its bits equal the reference's (so equal infinities and NaNs match) or
 * `|a - b| <= tolerance * max(1, max |reference| of that sample)`, the maximum over the sample's finite values.
 */
export function compareOutputs(
  got: Uint32Array,
  want: Uint32Array,
  outputSize: number,
  rule: { readonly exact: boolean; readonly tolerance: number },
): { mismatches: number; first: string | null } {
  let mismatches = 0, first: string | null = null;
  for (let s = 0; s * outputSize < want.length; s++) {
    let scale = 1;
    if (!rule.exact) {
      for (let j = 0; j < outputSize; j++) {
        const w = Math.abs(bitsToFloat(want[s * outputSize + j]));
        if (Number.isFinite(w) && w > scale) scale = w;
      }
    }
    for (let j = 0; j < outputSize; j++) {
      const g = got[s * outputSize + j], w = want[s * outputSize + j];
      if (g === w) continue;
      if (!rule.exact && Math.abs(bitsToFloat(g) - bitsToFloat(w)) <= rule.tolerance * scale) continue;
      mismatches++;
      first ??= `sample ${s} output ${j}: got ${describe(g)}, want ${describe(w)}`;
    }
  }
  return { mismatches, first };
}

/** The harness's first line: the header's sizes, which must be the manifest's. */
function checkHarnessSizes(out: string, header: string, m: CManifest): void {
  const sizes = /cnnc-harness: input (\d+) output (\d+) arena (\d+) align (\d+)/.exec(out);
  if (sizes === null) return;
  const header4 = sizes.slice(1).map(Number);
  const manifest4 = [m.inputSize, m.outputSize, m.arenaBytes, m.arenaAlign];
  if (header4.some((n, i) => n !== manifest4[i])) {
    throw new McuSimSetupError(
      `${header} and the manifest disagree: input, output, arena, align are ${header4.join(", ")} in the header, ` +
        `${manifest4.join(", ")} in the manifest`,
    );
  }
}

/** Outputs of a finished harness run, or the reason there are none. */
async function harnessOutputs(
  r: Ran,
  file: string,
  floats: number,
  timeoutMs: number,
): Promise<{ words: Uint32Array | null; error: string | null }> {
  if (r.timedOut) return { words: null, error: `no exit within ${timeoutMs / 1000} s (timeout)` };
  if (r.code !== 0) {
    const lines = r.out.split("\n").map((l) => l.trim()).filter((l) => l !== "");
    const line = lines.find((l) => /^cnnc-(harness|startup): (?!input \d)/.test(l)) ?? lines.at(-1) ?? "";
    return { words: null, error: `exit status ${r.code}${line === "" ? "" : `: ${line}`}` };
  }
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(file);
  } catch {
    return { words: null, error: "no output file" };
  }
  if (bytes.length !== floats * 4) {
    return { words: null, error: `wrote ${bytes.length} bytes of outputs, expected ${floats * 4}` };
  }
  return { words: littleEndianWords(bytes), error: null };
}

function parseSize(out: string, what: string): McuSizes {
  let text = 0, data = 0, bss = 0, rows = 0;
  for (const line of out.split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+[0-9a-f]+\s/.exec(line);
    if (m === null) continue;
    text += Number(m[1]), data += Number(m[2]), bss += Number(m[3]), rows++;
  }
  if (rows === 0) throw new McuSimSetupError(`arm-none-eabi-size gave no sizes for ${what}: ${out.split("\n")[0]}`);
  return { text, data, bss, flash: text + data, ram: data + bss };
}

async function armSize(files: readonly string[], what: string, tmp: string): Promise<McuSizes> {
  const r = await run("arm-none-eabi-size", ["-B", ...files], tmp);
  if (r.code !== 0) throw new McuSimSetupError(`arm-none-eabi-size failed on ${what}: ${firstError(r.out, tmp)}`);
  return parseSize(r.out, what);
}

/**
 * Build the harness with the model of `dir` for the host and the Cortex-M4, run both on the golden vectors and
 * compare (module header).
 *
 * @throws {McuSimSetupError} When the folder has no C-target manifest or no vectors, a file is missing, the code
 *   does not compile or a tool is missing.
 * @example A folder without a manifest is one line
 * ```ts
 * import assert from "node:assert/strict";
 * import { mcuSim } from "./mcu_sim.ts";
 * const dir = await Deno.makeTempDir();
 * await assert.rejects(() => mcuSim(dir), /no <model>\.manifest\.json of format cnnc-c in/);
 * await Deno.remove(dir);
 * ```
 */
export async function mcuSim(dir: string, options: McuSimOptions = {}): Promise<McuSimResult> {
  const log = options.log ?? (() => {});
  const timeoutMs = options.timeoutMs ?? 120_000;
  const withM4 = options.cortexM4 ?? true;
  const { manifest: m } = await readManifest(dir);
  const v = m.vectors;
  const samples = options.samples ?? v.count;
  if (!Number.isInteger(samples) || samples < 1 || samples > v.count) {
    throw new McuSimSetupError(`--samples ${samples}: expected 1 to ${v.count} (the vectors' count)`);
  }
  const inputs = await readVectors(dir, v.inputs, v.count * m.inputSize, "input vectors");
  const golden = (await readVectors(dir, v.outputs, v.count * m.outputSize, "golden outputs"))
    .subarray(0, samples * m.outputSize);
  const src = resolve(dir);
  for (const f of [m.header, ...m.sources]) {
    try {
      await Deno.stat(join(src, f));
    } catch {
      throw new McuSimSetupError(`${f} named by the manifest is missing in ${dir}`);
    }
  }
  const rule = { exact: v.exact, tolerance: v.tolerance };
  const ruleText = v.exact ? "bit-exact" : `within ${v.tolerance} relative`;

  const tmp = await Deno.makeTempDir({ prefix: "cnnc-mcu-" });
  try {
    await run("gcc", ["--version"], tmp);
    let armCompiler: string | null = null;
    if (withM4) {
      armCompiler = (await run("arm-none-eabi-gcc", ["--version"], tmp)).out.split("\n")[0];
      await run("arm-none-eabi-size", ["--version"], tmp);
      await run("qemu-system-arm", ["--version"], tmp);
    }
    for (const f of HARNESS_FILES) {
      const text = await (await fetch(new URL(`./harness/${f}`, import.meta.url))).text();
      await Deno.writeTextFile(join(tmp, f), text);
    }
    const inputBytes = new Uint8Array(samples * m.inputSize * 4);
    const view = new DataView(inputBytes.buffer);
    for (let i = 0; i < samples * m.inputSize; i++) view.setUint32(4 * i, inputs[i], true);
    await Deno.writeFile(join(tmp, "input.bin"), inputBytes);
    const prefix = m.macroPrefix;
    const defines = [
      `-DCNNC_HEADER="${m.header}"`,
      `-DCNNC_RUN=${m.identifier}_run`,
      `-DCNNC_ARENA_SIZE=${prefix}_ARENA_SIZE`,
      `-DCNNC_ARENA_ALIGN=${prefix}_ARENA_ALIGN`,
      `-DCNNC_INPUT_SIZE=${prefix}_INPUT_SIZE`,
      `-DCNNC_OUTPUT_SIZE=${prefix}_OUTPUT_SIZE`,
    ];
    const include = [`-I${src}`];
    const floats = samples * m.outputSize;

    // Host.
    await Deno.mkdir(join(tmp, "host"));
    const hostObjects: string[] = [];
    for (const [i, s] of m.sources.entries()) {
      const obj = join(tmp, "host", `model${i}.o`);
      await compile("gcc", [...HOST_CFLAGS, ...include, "-c", join(src, s), "-o", obj], `host build of ${s}`, tmp);
      hostObjects.push(obj);
    }
    const hostHarness = join(tmp, "host", "harness.o");
    await compile(
      "gcc",
      [...HOST_CFLAGS, ...include, ...defines, "-c", join(tmp, "harness.c"), "-o", hostHarness],
      "host build of the harness",
      tmp,
    );
    const hostExe = join(tmp, "host", "harness");
    await compile("gcc", [hostHarness, ...hostObjects, "-o", hostExe, "-lm"], "host link", tmp);
    const hostRun = await run(hostExe, ["input.bin", "host.bin", String(samples)], tmp, timeoutMs);
    checkHarnessSizes(hostRun.out, m.header, m);
    const hostOut = await harnessOutputs(hostRun, join(tmp, "host.bin"), floats, timeoutMs);
    const hostCmp = hostOut.words === null ? null : compareOutputs(hostOut.words, golden, m.outputSize, rule);
    const host: McuRunResult = {
      samples,
      mismatches: hostCmp?.mismatches ?? -1,
      firstMismatch: hostCmp?.first ?? null,
      wallMs: hostRun.wallMs,
      error: hostOut.error,
      ok: hostCmp !== null && hostCmp.mismatches === 0,
      outputs: hostOut.words,
    };
    log(
      host.error !== null
        ? `host: FAILED: ${host.error}`
        : `host: ${samples} samples, ${host.mismatches} mismatches (${ruleText})` +
          (host.firstMismatch === null ? "" : ` FAILED: first at ${host.firstMismatch}`),
    );
    if (!withM4) {
      return {
        model: m.model,
        samples,
        ...rule,
        host,
        cortexM4: null,
        modelObject: null,
        elf: null,
        arenaBytes: m.arenaBytes,
        armCompiler,
        ok: host.ok,
      };
    }

    // Cortex-M4 in qemu.
    await Deno.mkdir(join(tmp, "m4"));
    const armObjects: string[] = [];
    for (const [i, s] of m.sources.entries()) {
      const obj = join(tmp, "m4", `model${i}.o`);
      await compile(
        "arm-none-eabi-gcc",
        [...CORTEX_M4_CFLAGS, ...include, "-c", join(src, s), "-o", obj],
        `Cortex-M4 build of ${s}`,
        tmp,
      );
      armObjects.push(obj);
    }
    const armHarness = join(tmp, "m4", "harness.o"), armStartup = join(tmp, "m4", "startup_m4.o");
    await compile(
      "arm-none-eabi-gcc",
      [...CORTEX_M4_CFLAGS, ...include, ...defines, "-c", join(tmp, "harness.c"), "-o", armHarness],
      "Cortex-M4 build of the harness",
      tmp,
    );
    await compile(
      "arm-none-eabi-gcc",
      [...CORTEX_M4_CFLAGS, "-c", join(tmp, "startup_m4.c"), "-o", armStartup],
      "Cortex-M4 build of the start-up code",
      tmp,
    );
    const elfFile = join(tmp, "m4", "harness.elf");
    await compile(
      "arm-none-eabi-gcc",
      [
        ...CORTEX_M4_CFLAGS.slice(0, 4),
        "--specs=rdimon.specs",
        "-nostartfiles",
        "-T",
        join(tmp, "mps2_an386.ld"),
        armStartup,
        armHarness,
        ...armObjects,
        "-lm",
        "-o",
        elfFile,
      ],
      "Cortex-M4 link",
      tmp,
    );
    const qemuRun = await run(
      "qemu-system-arm",
      [
        "-M",
        QEMU_MACHINE,
        "-nographic",
        "-monitor",
        "none",
        "-semihosting-config",
        `enable=on,target=native,arg=harness.elf,arg=input.bin,arg=m4.bin,arg=${samples}`,
        "-kernel",
        elfFile,
      ],
      tmp,
      timeoutMs,
    );
    const qemuProblem = qemuRun.out.split("\n").find((l) => l.startsWith("qemu-system-arm: "));
    if (qemuProblem !== undefined && !/cnnc-harness: input/.test(qemuRun.out)) {
      throw new McuSimSetupError(`qemu did not start the harness: ${qemuProblem}`);
    }
    checkHarnessSizes(qemuRun.out, m.header, m);
    const m4Out = await harnessOutputs(qemuRun, join(tmp, "m4.bin"), floats, timeoutMs);
    const m4Cmp = m4Out.words === null ? null : compareOutputs(m4Out.words, golden, m.outputSize, rule);
    const vsHost = m4Out.words === null || hostOut.words === null
      ? null
      : compareOutputs(m4Out.words, hostOut.words, m.outputSize, { exact: true, tolerance: 0 });
    const cortexM4: McuCortexM4Result = {
      samples,
      mismatches: m4Cmp?.mismatches ?? -1,
      firstMismatch: m4Cmp?.first ?? null,
      mismatchesVsHost: vsHost?.mismatches ?? -1,
      firstMismatchVsHost: vsHost?.first ?? null,
      wallMs: qemuRun.wallMs,
      error: m4Out.error,
      ok: m4Cmp !== null && m4Cmp.mismatches === 0 && vsHost !== null && vsHost.mismatches === 0,
    };
    const what = `cortex-m4 (qemu ${QEMU_MACHINE})`;
    if (cortexM4.error !== null) log(`${what}: FAILED: ${cortexM4.error}`);
    else {
      const firsts = [
        cortexM4.firstMismatchVsHost === null ? null : `first vs host at ${cortexM4.firstMismatchVsHost}`,
        cortexM4.firstMismatch === null ? null : `first vs golden at ${cortexM4.firstMismatch}`,
      ].filter((s) => s !== null);
      log(
        `${what}: ${samples} samples, ${vsHost === null ? "no host outputs to compare" : cortexM4.mismatchesVsHost} ` +
          `mismatches vs host, ${cortexM4.mismatches} vs golden (${ruleText}), ` +
          `${(cortexM4.wallMs / 1000).toFixed(2)} s${firsts.length === 0 ? "" : ` FAILED: ${firsts.join("; ")}`}`,
      );
    }

    const modelObject = await armSize(armObjects, "the model object", tmp);
    const elf = await armSize([elfFile], "the harness ELF", tmp);
    log(`size (model object, -O2): ${sizeText(modelObject)} + arena ${fmt(m.arenaBytes)} B`);
    log(`size (harness ELF: model, harness, start-up, newlib): ${sizeText(elf)}, arena included`);
    return {
      model: m.model,
      samples,
      ...rule,
      host,
      cortexM4,
      modelObject,
      elf,
      arenaBytes: m.arenaBytes,
      armCompiler,
      ok: host.ok && cortexM4.ok,
    };
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

const fmt = (n: number): string => n.toLocaleString("en-US");

function sizeText(s: McuSizes): string {
  return `flash ${fmt(s.flash)} B (text ${fmt(s.text)} + data ${fmt(s.data)}), ` +
    `RAM ${fmt(s.ram)} B (data ${fmt(s.data)} + bss ${fmt(s.bss)})`;
}

/** The `mcu` entry of the compiler's report. */
function reportEntry(r: McuSimResult): Record<string, unknown> {
  const run = (x: McuRunResult): Record<string, unknown> => ({
    samples: x.samples,
    mismatches: x.mismatches,
    firstMismatch: x.firstMismatch,
    error: x.error,
    wallSeconds: Math.round(x.wallMs) / 1000,
    ok: x.ok,
  });
  const sizes = (s: McuSizes | null): Record<string, unknown> | null =>
    s === null ? null : { textBytes: s.text, dataBytes: s.data, bssBytes: s.bss, flashBytes: s.flash, ramBytes: s.ram };
  return {
    samples: r.samples,
    exact: r.exact,
    tolerance: r.tolerance,
    host: { compiler: `gcc ${HOST_CFLAGS.join(" ")}`, ...run(r.host) },
    cortexM4: r.cortexM4 === null ? null : {
      machine: `qemu-system-arm -M ${QEMU_MACHINE}`,
      compiler: `arm-none-eabi-gcc ${CORTEX_M4_CFLAGS.join(" ")}`,
      compilerVersion: r.armCompiler,
      ...run(r.cortexM4),
      mismatchesVsHost: r.cortexM4.mismatchesVsHost,
      firstMismatchVsHost: r.cortexM4.firstMismatchVsHost,
    },
    modelObject: r.modelObject === null ? null : { ...sizes(r.modelObject), arenaBytes: r.arenaBytes },
    elf: sizes(r.elf),
    arenaBytes: r.arenaBytes,
    ok: r.ok,
  };
}

/**
 * Merge the result into the JSON report `file` as its top-level key `mcu` (replacing one there), through a
 * temporary file and a rename. A missing file is created.
 *
 * @throws {McuSimSetupError} When the file is not a JSON object.
 */
export async function writeMcuReport(file: string, result: McuSimResult): Promise<void> {
  let report: Record<string, unknown> = {};
  try {
    const json = JSON.parse(await Deno.readTextFile(file));
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new McuSimSetupError(`report ${file} is not a JSON object`);
    }
    report = json;
  } catch (e) {
    if (e instanceof SyntaxError) throw new McuSimSetupError(`report ${file} is not JSON: ${e.message}`);
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  report.mcu = reportEntry(result);
  const temp = `${file}.${Deno.pid}.tmp`;
  try {
    await Deno.writeTextFile(temp, JSON.stringify(report, null, 2) + "\n");
    await Deno.rename(temp, file);
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    throw new McuSimSetupError(`cannot write report ${file}: ${(e as Error).message}`);
  }
}

const USAGE = "usage: deno task mcu-sim OUTDIR [--samples N] [--report FILE.json] " +
  "(OUTDIR written by --target c{vectors=N} with --calib)";

if (import.meta.main) {
  let dir: string | undefined, samples: number | undefined, report: string | undefined, usage = false;
  for (let i = 0; i < Deno.args.length; i++) {
    const a = Deno.args[i];
    if (a === "--samples" && i + 1 < Deno.args.length) samples = Number(Deno.args[++i]);
    else if (a === "--report" && i + 1 < Deno.args.length) report = Deno.args[++i];
    else if (!a.startsWith("-") && dir === undefined) dir = a;
    else usage = true;
  }
  if (dir === undefined || usage) {
    console.error(USAGE);
    Deno.exit(2);
  }
  try {
    const result = await mcuSim(dir, { samples, log: (line) => console.log(line) });
    if (report !== undefined) await writeMcuReport(report, result);
    if (result.ok) {
      console.log(`mcu-sim: ${result.model} matches on the host and the Cortex-M4 (${result.samples} samples)`);
    } else {
      const failed = [result.host.ok ? null : "host", result.cortexM4?.ok === false ? "cortex-m4" : null];
      console.error(`mcu-sim: ${result.model} differs: ${failed.filter((s) => s !== null).join(", ")}`);
    }
    Deno.exit(result.ok ? 0 : 1);
  } catch (e) {
    if (e instanceof McuSimSetupError) {
      console.error(`mcu-sim: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
}
