/**
 * The proof of issue 3: for every committed model in examples/models/, top-1
 * accuracy on the committed 2,000-image MNIST test set through the interpreter,
 * through onnxruntime-node and as PyTorch measured it at training time
 * (results.json) agree within 0.1 percentage points; and the interpreter's
 * logits match onnxruntime's on the first batch.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { readNpyFile } from "../data/npy.ts";
import { evaluate, evaluateOnnx, type EvaluationResult } from "../driver/evaluate.ts";
import { Interpreter } from "../ir/interpreter.ts";
import { importOnnx } from "../ir/onnx/import.ts";
import type { Tensor } from "../ir/tensor.ts";

const MODELS_DIR = new URL("../examples/models/", import.meta.url).pathname;
/** 0.1 percentage points, as a fraction (two images of 2,000 are 0.1 pp). */
const TOLERANCE = 0.001;
/** Float32 logits of two float32 implementations (different summation orders) differ by rounding only. */
const LOGIT_TOLERANCE = 1e-3;
const BATCH = 100;

const files = existsSync(MODELS_DIR) ? readdirSync(MODELS_DIR).filter((f) => f.endsWith(".onnx")).sort() : [];
if (files.length === 0) console.warn(`${MODELS_DIR} holds no .onnx models: the accuracy proof is skipped`);

/**
 * PyTorch's test accuracy per ONNX file, from results.json: every object with a
 * `file` naming an `.onnx` gets the `pytorch_test_accuracy` beside it; a file
 * nested in a record that has only variant accuracies (`vgg_sparse_slim50_ref`
 * under `prune_50`) gets the one measured on the exported weights: the script
 * exports the thin net before fine-tuning it, so `..._no_finetune`.
 */
function pytorchAccuracies(results: unknown): Map<string, number> {
  const found = new Map<string, number>();
  const accuracyIn = (o: Record<string, unknown>): number | undefined => {
    if (typeof o.pytorch_test_accuracy === "number") return o.pytorch_test_accuracy;
    const keys = Object.keys(o).filter((k) => /accuracy/.test(k) && typeof o[k] === "number");
    const chosen = keys.length === 1 ? keys[0] : keys.find((k) => /no_finetune/.test(k));
    return chosen === undefined ? undefined : o[chosen] as number;
  };
  const walk = (o: unknown, parent: Record<string, unknown> | null): void => {
    if (o === null || typeof o !== "object") return;
    if (Array.isArray(o)) return o.forEach((x) => walk(x, parent));
    const rec = o as Record<string, unknown>;
    if (typeof rec.file === "string" && rec.file.endsWith(".onnx")) {
      const acc = accuracyIn(rec) ?? (parent === null ? undefined : accuracyIn(parent));
      if (acc !== undefined) found.set(rec.file, acc);
    }
    for (const v of Object.values(rec)) walk(v, rec);
  };
  walk(results, null);
  return found;
}

/** Max |a - b| over two float32 tensors of the same shape. */
function maxAbsDiff(a: Tensor, b: ort.Tensor): number {
  assert.deepEqual([...a.shape], [...b.dims]);
  const x = a.data as Float32Array, y = b.data as Float32Array;
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
  return worst;
}

const pct = (r: number): string => `${(100 * r).toFixed(2)}%`;

Deno.test({
  name: "interpreter, onnxruntime and PyTorch accuracy agree within 0.1 pp on every committed model",
  ignore: files.length === 0,
  async fn() {
    const results = JSON.parse(Deno.readTextFileSync(join(MODELS_DIR, "results.json")));
    const pytorch = pytorchAccuracies(results);
    const inputs = readNpyFile(join(MODELS_DIR, "mnist_test_x.npy"));
    const labels = readNpyFile(join(MODELS_DIR, "mnist_test_y.npy"));
    assert.deepEqual(inputs.shape, [2000, 1, 28, 28]);
    assert.equal(inputs.dtype, "f32");
    assert.deepEqual(labels.shape, [2000]);
    const firstBatch: Tensor = {
      ...inputs,
      shape: [BATCH, 1, 28, 28],
      data: (inputs.data as Float32Array).subarray(0, BATCH * 784),
    };

    const rows: string[][] = [];
    const problems: string[] = [...pytorch.keys()].filter((f) => !files.includes(f))
      .map((f) => `${f}: named in results.json but not in examples/models/`);
    for (const file of files) {
      const reference = pytorch.get(file);
      if (reference === undefined) {
        problems.push(`${file}: results.json records no PyTorch accuracy for it`);
        continue;
      }
      const bytes = Deno.readFileSync(join(MODELS_DIR, file));
      const module = importOnnx(bytes);
      let t0 = performance.now();
      const ours: EvaluationResult = evaluate(module, inputs, labels, { batchSize: BATCH });
      const interpreterSeconds = (performance.now() - t0) / 1000;
      t0 = performance.now();
      const theirs = await evaluateOnnx(bytes, inputs, labels, { batchSize: BATCH });
      const ortSeconds = (performance.now() - t0) / 1000;

      // Logits of the first batch, side by side.
      const input = module.graph.inputs.find((v) => v.constant === null)!;
      const output = module.graph.outputs[0].name;
      const logits = new Interpreter(module).run({ [input.name]: firstBatch })[output];
      const session = await ort.InferenceSession.create(bytes);
      let diff: number;
      try {
        const fed = new ort.Tensor("float32", firstBatch.data as Float32Array, [...firstBatch.shape]);
        diff = maxAbsDiff(logits, (await session.run({ [input.name]: fed }))[output]);
      } finally {
        await session.release();
      }

      rows.push([
        file,
        pct(reference),
        pct(ours.accuracy),
        pct(theirs.accuracy),
        diff.toExponential(1),
        interpreterSeconds.toFixed(2),
        ortSeconds.toFixed(2),
      ]);
      assert.equal(ours.total, 2000);
      for (const [what, acc] of [["interpreter", ours.accuracy], ["onnxruntime", theirs.accuracy]] as const) {
        if (Math.abs(acc - reference) > TOLERANCE + 1e-12) {
          problems.push(`${file}: ${what} ${pct(acc)} vs PyTorch ${pct(reference)} (more than 0.1 pp apart)`);
        }
      }
      if (Math.abs(ours.accuracy - theirs.accuracy) > TOLERANCE + 1e-12) {
        problems.push(`${file}: interpreter ${pct(ours.accuracy)} vs onnxruntime ${pct(theirs.accuracy)}`);
      }
      if (!(diff <= LOGIT_TOLERANCE)) problems.push(`${file}: first-batch logits differ by up to ${diff}`);
    }

    const header = ["model", "PyTorch", "interpreter", "onnxruntime", "max|Δlogit|", "interp s", "ort s"];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (r: string[]): string =>
      r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
    console.log(`\nTop-1 accuracy on ${labels.shape[0]} MNIST test images (batch ${BATCH})`);
    console.log([line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n"));
    assert.deepEqual(problems, []);
    assert.ok(rows.length > 0);
  },
});

Deno.test("pytorchAccuracies() reads per-model and nested reference accuracies", () => {
  const found = pytorchAccuracies({
    models: {
      a: { pytorch_test_accuracy: 0.9, file: "a.onnx" },
      b: {
        pytorch_test_accuracy: 0.8,
        file: "b.onnx",
        ref: {
          prune_50: {
            pytorch_test_accuracy_no_finetune: 0.5,
            pytorch_test_accuracy_finetuned: 0.95,
            onnx: { file: "b50.onnx" },
          },
        },
      },
      c: { file: "c.onnx" },
    },
  });
  assert.deepEqual([...found], [["a.onnx", 0.9], ["b.onnx", 0.8], ["b50.onnx", 0.5]]);
});
