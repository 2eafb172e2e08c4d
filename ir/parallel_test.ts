import assert from "node:assert/strict";
import { claimPart, Control, runParts } from "./parallel.ts";

/**
 * Run a script that starts the pool and multiplies on 2 threads in a fresh `deno run` with `flags`; its output.
 * The process must exit by itself: the idle worker is unref'd.
 */
async function runScript(flags: string[]): Promise<{ code: number; out: string }> {
  const gemmUrl = new URL("./ops/gemm_kernel.ts", import.meta.url).href;
  const parallelUrl = new URL("./parallel.ts", import.meta.url).href;
  const script = `
    import { gemm } from "${gemmUrl}";
    import { setThreadCount, startWorkers } from "${parallelUrl}";
    setThreadCount(2);
    const ready = await startWorkers();
    const [m, n, k] = [256, 64, 256];
    const a = new Float32Array(m * k).fill(0.5), b = new Float32Array(k * n).fill(2), c = new Float32Array(m * n);
    gemm({ m, n, k, a, b, c });
    console.log(ready, c.every((x) => x === k) ? "ok" : "wrong");
  `;
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/pool_script.ts`;
    await Deno.writeTextFile(path, script);
    const command = new Deno.Command(Deno.execPath(), { args: ["run", "--quiet", ...flags, path], stderr: "inherit" });
    const { code, stdout } = await command.output();
    return { code, out: new TextDecoder().decode(stdout).trim() };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a process using the pool exits by itself, with read permission (as compile.ts's -P) or none", async () => {
  // With read access (deno.json's default permission set grants it) the worker starts.
  assert.deepEqual(await runScript(["--allow-read"]), { code: 0, out: "1 ok" });
  // Without it the worker cannot load its module: everything runs on the calling thread, no error.
  assert.deepEqual(await runScript([]), { code: 0, out: "0 ok" });
});

Deno.test("claimPart() refuses a part of a closed job", () => {
  const control = new Int32Array(new SharedArrayBuffer(4 * (Control.status + 4)));
  control[Control.parts] = 3;
  control[Control.claim] = (7 << 16) | 0xffff; // closed while the next job's words are written
  assert.equal(claimPart(control, 7), -1);
  control[Control.claim] = 7 << 16;
  assert.equal(claimPart(control, 6), -1);
  assert.deepEqual([claimPart(control, 7), claimPart(control, 7), claimPart(control, 7), claimPart(control, 7)], [
    0,
    1,
    2,
    -1,
  ]);
});

Deno.test("runParts() checks its limits with a clear message", () => {
  assert.throws(
    () => runParts({ id: 0, run: () => {} }, [], 0, () => {}),
    /a parallel job has 1 to 64 parts and at most 64 parameters/,
  );
});
