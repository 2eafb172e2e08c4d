/**
 * `prune` on reduced-width torchvision architectures (tests/fixtures/zoo/,
 * made by export.py there; no torch needed to run this): 30% of every BN's
 * channels get gamma = beta = 0, `canonicalize,prune{threshold=1e-6}` must
 * report no barrier, remove zeroed channels and keep the interpreter's outputs;
 * onnxruntime must run the pruned model with the same outputs.
 * @module
 */
import assert from "node:assert/strict";
import * as ort from "onnxruntime-node";
import { interpret } from "../ir/interpreter.ts";
import { exportOnnx } from "../ir/onnx/export.ts";
import { zooRun } from "./prune_zoo.ts";

const ZOO = decodeURIComponent(new URL("./fixtures/zoo/", import.meta.url).pathname);

/**
 * Zeroed channels each fixture must lose at least. Fewer than all of them: a channel that several BNs score (a
 * residual stream, a ShuffleNet half, channel j of every group of a grouped conv) goes only when every one of its
 * BNs was zeroed, and the zeroing is independent per BN.
 */
const MIN_REMOVED: Record<string, number> = {
  densenet: 70,
  efficientnet_b0: 150,
  googlenet: 53,
  mobilenet_v2: 230,
  mobilenet_v3_small: 130,
  regnet_y: 70,
  resnet18: 60,
  resnext: 110,
  shufflenet_v2: 100,
};

for (const [name, minRemoved] of Object.entries(MIN_REMOVED)) {
  Deno.test(`prune: ${name} loses zeroed channels with no barrier, outputs unchanged, onnxruntime agrees`, async () => {
    const r = await zooRun(name, Deno.readFileSync(`${ZOO}${name}.onnx`));
    assert.deepEqual(r.barriers, []);
    assert.ok(r.removed >= minRemoved, `${name}: removed ${r.removed} of ${r.zeroed} zeroed channels`);
    assert.ok(r.removed <= r.zeroed, `${name}: removed ${r.removed} channels but zeroed only ${r.zeroed}`);
    assert.ok(r.maxDiff <= 1e-5 * Math.max(1, r.maxAbs), `${name}: outputs moved by ${r.maxDiff}`);
    const bytes = exportOnnx(r.module);
    const inName = r.module.graph.inputs[0].name;
    const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
    try {
      const x = r.input;
      const out = await session.run({ [inName]: new ort.Tensor("float32", x.data as Float32Array, [...x.shape]) });
      const theirs = out[session.outputNames[0]].data as Float32Array;
      const ours = interpret(r.module, { [inName]: x })[r.module.graph.outputs[0].name].data as Float32Array;
      let d = 0;
      for (let i = 0; i < ours.length; i++) {
        d = Math.max(d, Math.abs(ours[i] - theirs[i]), Math.abs(r.reference[i] - theirs[i]));
      }
      assert.ok(d <= 1e-4 * Math.max(1, r.maxAbs), `${name}: onnxruntime differs by ${d}`);
    } finally {
      await session.release();
    }
  });
}

Deno.test("prune: with the zeroed channels chosen per coupled unit, every one of them goes, outputs unchanged", async () => {
  for (const name of Object.keys(MIN_REMOVED)) {
    const r = await zooRun(name, Deno.readFileSync(`${ZOO}${name}.onnx`), undefined, true);
    assert.deepEqual(r.barriers, []);
    assert.ok(r.zeroed > 0);
    assert.equal(r.removed, r.zeroed, `${name}: removed ${r.removed} of ${r.zeroed}`);
    assert.ok(r.maxDiff <= 1e-5 * Math.max(1, r.maxAbs), `${name}: outputs moved by ${r.maxDiff}`);
  }
});
