/**
 * examples/build_script.ts run as a user would (`deno run -A`): it writes the
 * compiled model and the report, prints the totals of that report, and fails
 * in one line on a missing model.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { CompileReport } from "../driver/report.ts";
import { interpret } from "../ir/interpreter.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import { tensor } from "../ir/tensor.ts";
import { isTensorType } from "../ir/types.ts";
import { BACKEND_DATA_DIR } from "./onnx_backend.ts";
import { compareTensors } from "./tensor_compare.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const SCRIPT = join(ROOT, "examples/build_script.ts");
const VGG_SPARSE = join(ROOT, "examples/models/vgg_sparse.onnx");
const FALLBACK = join(BACKEND_DATA_DIR, "pytorch-converted/test_Conv2d/model.onnx");
const MODEL = existsSync(VGG_SPARSE) ? VGG_SPARSE : FALLBACK;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function buildScript(...args: string[]): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", SCRIPT, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array): string => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("examples/build_script.ts writes the compiled model and its report and prints the totals", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = join(dir, "net.onnx");
    await Deno.copyFile(MODEL, model);
    const out = join(dir, "out");
    const run = await buildScript(model, out);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, "");

    assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), ["net.onnx", "net.report.json"]);
    const report: CompileReport = JSON.parse(await Deno.readTextFile(join(out, "net.report.json")));
    assert.equal(report.pipeline, "fold-bn,canonicalize{fold-limit=1024},dce");
    assert.deepEqual(report.passes.map((p) => p.name), ["fold-bn", "canonicalize", "dce"]);
    const emitted = await Deno.readFile(join(out, "net.onnx"));
    assert.deepEqual(report.artifacts, [{
      name: "net.onnx",
      bytes: emitted.byteLength,
      sha256: await sha256(emitted),
    }]);

    const { before, after } = report.totals;
    const lines = run.stdout.trimEnd().split("\n");
    assert.equal(lines[0], "net: fold-bn,canonicalize{fold-limit=1024},dce -> onnx");
    assert.match(lines[1], /^\s+before\s+after\s+ratio$/);
    assert.deepEqual(lines[2].split(/\s+/).slice(0, 3), ["params", String(before.params), String(after.params)]);
    assert.deepEqual(lines[3].split(/\s+/).slice(0, 3), ["MACs", String(before.macs), String(after.macs)]);
    assert.deepEqual(lines[4].split(/\s+/).slice(0, 4), [
      "weight",
      "bytes",
      String(before.weightBytes),
      String(after.weightBytes),
    ]);
    assert.equal(lines[5], `wrote ${join(out, "net.onnx")} (${emitted.byteLength} bytes)`);
    assert.equal(lines[6], `wrote ${join(out, "net.report.json")}`);

    // The written model computes what the input model computes.
    const input = importOnnx(await Deno.readFile(model));
    const feeds = Object.fromEntries(
      input.graph.inputs.filter((v) => v.constant === null).map((v) => {
        assert.ok(isTensorType(v.type) && v.type.shape !== null);
        const shape = v.type.shape.map((d) => (typeof d === "number" ? d : 2));
        const n = shape.reduce((a, b) => a * b, 1);
        return [v.name, tensor("f32", shape, Float32Array.from({ length: n }, (_, i) => Math.sin(i)))];
      }),
    );
    const expected = interpret(input, feeds);
    const got = interpret(importOnnx(emitted), feeds);
    for (const [name, t] of Object.entries(expected)) {
      assert.equal(compareTensors(got[name], t, { rtol: 1e-4, atol: 1e-4 }), null, name);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/build_script.ts compiles examples/models/vgg_sparse.onnx by default", {
  ignore: !existsSync(VGG_SPARSE),
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", SCRIPT],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
    assert.ok(existsSync(join(dir, "build/vgg_sparse.onnx")));
    assert.ok(existsSync(join(dir, "build/vgg_sparse.report.json")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/build_script.ts fails in one line on a missing model", async () => {
  const run = await buildScript("/nonexistent/model.onnx", "/tmp/never-written");
  assert.equal(run.code, 1);
  assert.match(run.stderr.trimEnd(), /^build_script: error: [^\n]*\/nonexistent\/model\.onnx[^\n]*$/);
  assert.equal(run.stdout, "");
  assert.ok(!existsSync("/tmp/never-written"));
});
