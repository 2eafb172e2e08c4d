import assert from "node:assert/strict";
import { interpret } from "../ir/interpreter.ts";
import { parseModule } from "../ir/parser.ts";
import { float32Tensor, type Tensor } from "../ir/tensor.ts";
import { verifyModule } from "../ir/verifier.ts";
import { builtinPasses } from "./builtin.ts";
import { runPipeline } from "./manager.ts";
import { maskSelectOptions, maskSelectPass } from "./mask_select.ts";
import { defaultOptions } from "./options.ts";
import { passLookup } from "./pass.ts";
import { parsePipeline } from "./pipeline.ts";
import { testPassContext } from "./testing.ts";

const DEFAULTS = defaultOptions(maskSelectOptions);

/** conv(2->3) - Relu - Mul(mask) - `middle` - consumer; weights from a fixed sequence. */
function net(mask: readonly number[], middle: string, consumer: string, outShape: string): string {
  const w1 = Array.from({ length: 3 * 2 * 9 }, (_, i) => Math.sin(i * 1.7).toFixed(3)).join(", ");
  const b1 = "[0.1, -0.2, 0.3]";
  return `module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[2,2,4,4]) -> (%y) {
  %w1 = const f32[3,2,3,3] dense<[${w1}]>
  %b1 = const f32[3] dense<${b1}>
  %mask = const f32[1,3,1,1] dense<[${mask.join(", ")}]>
  %c1 = Conv(%x, %w1, %b1) {pads = [1, 1, 1, 1]} : f32[2,3,4,4]
  %r = Relu(%c1) : f32[2,3,4,4]
  %k = Mul(%r, %mask) : f32[2,3,4,4]
${middle}
${consumer}
  return %y
}
}`.replace("OUT", outShape);
}

const W2 = `  %w2 = const f32[2,3,3,3] dense<[${
  Array.from({ length: 54 }, (_, i) => Math.cos(i).toFixed(3)).join(", ")
}]>`;
const INPUT: Tensor = float32Tensor([2, 2, 4, 4], Float32Array.from({ length: 64 }, (_, i) => Math.sin(i * 0.37)));

async function run(
  text: string,
  pipeline: string,
): Promise<{ before: Float32Array; after: Float32Array; logs: string[]; text: string }> {
  const m = parseModule(text);
  const before = interpret(m, { x: INPUT }).y.data as Float32Array;
  const registry = passLookup(builtinPasses);
  const logs: string[] = [];
  await runPipeline(m, parsePipeline(pipeline, registry), {
    registry,
    verifyEach: true,
    onLog: (_pass: string, l: string) => logs.push(l),
  });
  verifyModule(m);
  const after = interpret(m, { x: INPUT }).y.data as Float32Array;
  return { before, after, logs, text: m.graph.ops.map((op) => op.type).join(",") };
}

function assertClose(a: Float32Array, b: Float32Array): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-4, `${i}: ${a[i]} vs ${b[i]}`);
}

Deno.test("mask-select folds a positive mask back through Relu into the conv, exactly", async () => {
  const r = await run(
    net(
      [0.5, 2, 0.25],
      "  %p = MaxPool(%k) {kernel_shape = [2, 2], strides = [2, 2]} : f32[2,3,2,2]",
      `${W2}\n  %y = Conv(%p, %w2) {pads = [1, 1, 1, 1]} : f32[2,2,2,2]`,
      "",
    ),
    "mask-select",
  );
  assert.equal(r.text, "Conv,Relu,MaxPool,Conv");
  assertClose(r.before, r.after);
});

Deno.test("mask-select folds a negative mask after Relu forward into the next conv's input channels", async () => {
  const r = await run(
    net(
      [0.5, -2, 0.25],
      "  %p = Identity(%k) : f32[2,3,4,4]",
      `${W2}\n  %y = Conv(%p, %w2) {pads = [1, 1, 1, 1]} : f32[2,2,4,4]`,
      "",
    ),
    "mask-select",
  );
  assert.equal(r.text, "Conv,Relu,Identity,Conv");
  assertClose(r.before, r.after);
});

Deno.test("mask-select leaves a negative mask between Relu and MaxPool, saying why", async () => {
  const r = await run(
    net(
      [0.5, -2, 0.25],
      "  %p = MaxPool(%k) {kernel_shape = [2, 2], strides = [2, 2]} : f32[2,3,2,2]",
      `${W2}\n  %y = Conv(%p, %w2) {pads = [1, 1, 1, 1]} : f32[2,2,2,2]`,
      "",
    ),
    "mask-select",
  );
  assert.equal(r.text, "Conv,Relu,Mul,MaxPool,Conv");
  assert.ok(r.logs.some((l) => l.includes('mask "k" stays') && l.includes("negative entries")), r.logs.join("\n"));
  assertClose(r.before, r.after);
});

Deno.test("mask-select folds a negative mask forward through Flatten into the Gemm's feature blocks", async () => {
  const wf = Array.from({ length: 4 * 48 }, (_, i) => Math.sin(i * 0.3).toFixed(3)).join(", ");
  const r = await run(
    net(
      [0.5, -2, 0.25],
      "  %f = Flatten(%k) {axis = 1} : f32[2,48]",
      `  %wf = const f32[4,48] dense<[${wf}]>\n  %y = Gemm(%f, %wf) {transB = 1} : f32[2,4]`,
      "",
    ),
    "mask-select",
  );
  assert.equal(r.text, "Conv,Relu,Flatten,Gemm");
  assertClose(r.before, r.after);
});

Deno.test("mask-select removes channels whose |mask| is under the threshold from the producer, mask and consumer", () => {
  const m = parseModule(
    net(
      [0.5, 1e-6, 0.25],
      "  %p = Identity(%k) : f32[2,3,4,4]",
      `${W2}\n  %y = Conv(%p, %w2) {pads = [1, 1, 1, 1]} : f32[2,2,4,4]`,
      "",
    ),
  );
  const before = interpret(m, { x: INPUT }).y.data as Float32Array;
  const ctx = testPassContext({ module: m });
  assert.equal(maskSelectPass.run(m, DEFAULTS, ctx), true);
  verifyModule(m);
  assert.equal(ctx.stats["channels-removed"], 1);
  assert.equal(ctx.stats["masks-folded-back"], 1);
  assert.deepEqual(m.graph.ops.find((op) => op.name === "c1")!.operand(1)!.constant!.shape, [2, 2, 3, 3]);
  assert.deepEqual(m.graph.ops.find((op) => op.name === "y")!.operand(1)!.constant!.shape, [2, 2, 3, 3]);
  const after = interpret(m, { x: INPUT }).y.data as Float32Array;
  for (let i = 0; i < after.length; i++) assert.ok(Math.abs(after[i] - before[i]) < 1e-4);
});

Deno.test("mask-select ratio removes the lowest |mask| globally", () => {
  const m = parseModule(
    net(
      [0.5, 0.1, 0.25],
      "  %p = Identity(%k) : f32[2,3,4,4]",
      `${W2}\n  %y = Conv(%p, %w2) {pads = [1, 1, 1, 1]} : f32[2,2,4,4]`,
      "",
    ),
  );
  const ctx = testPassContext({ module: m });
  maskSelectPass.run(m, { ...DEFAULTS, ratio: 0.34 }, ctx);
  assert.equal(ctx.stats["channels-after"], 2);
  assert.equal(ctx.stats["threshold"], 0.25);
});

Deno.test("mask-select without mask layers or calibration data fails with one line saying what it needs", async () => {
  const registry = passLookup(builtinPasses);
  const text = net(
    [1, 1, 1],
    "  %p = Identity(%k) : f32[2,3,4,4]",
    `${W2}\n  %y = Conv(%p, %w2) {pads = [1, 1, 1, 1]} : f32[2,2,4,4]`,
    "",
  )
    .replace("%k = Mul(%r, %mask)", "%k = Add(%r, %mask)");
  await assert.rejects(runPipeline(parseModule(text), parsePipeline("mask-select", registry), { registry }), {
    message: 'pass "mask-select" failed: mask-select needs mask layers (a Mul of conv channels by a per-channel ' +
      "constant [1,C,1,1]) or calibration data (--calib) to select channels by LASSO; the module has no mask layer " +
      "and none was given",
  });
  await assert.rejects(
    runPipeline(parseModule(text), parsePipeline("mask-select{mode=data}", registry), { registry }),
    {
      message: 'pass "mask-select" failed: mask-select mode=data needs calibration data (--calib, or calibration in ' +
        "compile())",
    },
  );
});

Deno.test("mask-select options out of range are rejected with the range", () => {
  const registry = passLookup(builtinPasses);
  const message = (pipeline: string): string => {
    try {
      parsePipeline(pipeline, registry);
    } catch (e) {
      return (e as Error).message.split("\n")[0];
    }
    return "accepted";
  };
  assert.equal(
    message("mask-select{threshold=0}"),
    'Cannot configure pass "mask-select": option "threshold" must be a number in (0, inf), found "0"',
  );
  assert.equal(
    message("mask-select{ratio=1}"),
    'Cannot configure pass "mask-select": option "ratio" must be a number in [0, 1), found "1"',
  );
  assert.equal(
    message("mask-select{mode=lasso}"),
    'Cannot configure pass "mask-select": option "mode" must be one of auto, mask, data, found "lasso"',
  );
});
