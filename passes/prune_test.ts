import assert from "node:assert/strict";
import type { Module } from "../ir/module.ts";
import { interpret } from "../ir/interpreter.ts";
import { parseModule } from "../ir/parser.ts";
import { cloneModule } from "../ir/rewriter.ts";
import { float32Tensor, type Tensor } from "../ir/tensor.ts";
import { builtinPasses } from "./builtin.ts";
import { type PassRecord, runPipeline } from "./manager.ts";
import { passLookup } from "./pass.ts";
import { parsePipeline, printPipeline } from "./pipeline.ts";
import { takeChannels } from "./prune.ts";

const registry = passLookup(builtinPasses);

function parse(input: string, body: string, outputs = "%y"): Module {
  return parseModule(`module opsets {"": 13} ir_version 7 {
graph @g(%x: ${input}) -> (${outputs}) {
${body}
  return ${outputs}
}
}`);
}

async function prune(
  m: Module,
  pipeline: string,
  calibration: Record<string, Tensor> | null = null,
): Promise<PassRecord> {
  const [record] = await runPipeline(m, parsePipeline(pipeline, registry), { registry, calibration });
  return record;
}

function input(shape: number[], seed = 1): Tensor {
  let s = seed;
  const n = shape.reduce((a, b) => a * b, 1);
  return float32Tensor(shape, Array.from({ length: n }, () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1));
}

function maxDiff(a: Tensor, b: Tensor): number {
  assert.deepEqual(a.shape, b.shape);
  let d = 0;
  for (let i = 0; i < a.data.length; i++) d = Math.max(d, Math.abs((a.data[i] as number) - (b.data[i] as number)));
  return d;
}

function op(m: Module, name: string) {
  const o = m.graph.ops.find((o) => o.name === name);
  assert.ok(o, `no op ${name}`);
  return o;
}

const vals = (n: number, f: (i: number) => number): string =>
  `[${Array.from({ length: n }, (_, i) => f(i).toFixed(4)).join(", ")}]`;

/** conv(2->4) -> BN (gamma 0 on channels 1 and 3) -> relu -> maxpool -> 1x1 conv(4->3). */
const CHAIN = `
  %w1 = const f32[4,2,3,3] dense<${vals(72, (i) => Math.sin(i))}>
  %gamma = const f32[4] dense<[1.0, 0.0, 0.5, 0.0]>
  %beta = const f32[4] dense<[0.1, 0.7, -0.2, 0.3]>
  %mean = const f32[4] dense<[0.0, 0.5, 0.1, -0.1]>
  %var = const f32[4] dense<[1.0, 2.0, 0.5, 1.0]>
  %w2 = const f32[3,4,1,1] dense<${vals(12, (i) => Math.cos(i))}>
  %b2 = const f32[3] dense<[0.0, 1.0, 2.0]>
  %c1 = Conv(%x, %w1) {pads = [1, 1, 1, 1]} : f32[2,4,4,4]
  %bn = BatchNormalization(%c1, %gamma, %beta, %mean, %var) : f32[2,4,4,4]
  %r = Relu(%bn) : f32[2,4,4,4]
  %p = MaxPool(%r) {kernel_shape = [2, 2], strides = [2, 2]} : f32[2,4,2,2]
  %y = Conv(%p, %w2, %b2) : f32[2,3,2,2] name "c2"`;

Deno.test("prune removes zero-gamma channels of a conv chain and keeps the output exact with compensation", async () => {
  const m = parse("f32[2,2,4,4]", CHAIN);
  const x = input([2, 2, 4, 4]);
  const want = interpret(m, { x }).y;
  const rec = await prune(m, "prune{ratio=0.5}");
  assert.equal(rec.changed, true);
  assert.deepEqual(op(m, "c1").operand(1)!.constant!.shape, [2, 2, 3, 3]);
  assert.deepEqual(op(m, "bn").operand(1)!.constant!.data, new Float32Array([1, 0.5]));
  assert.deepEqual(op(m, "c2").operand(1)!.constant!.shape, [3, 2, 1, 1]);
  assert.deepEqual(rec.stats.layers, { c1: { before: 4, after: 2 } });
  assert.equal(rec.stats.threshold, 0.5);
  assert.equal(rec.stats["channels-pruned"], 2);
  // gamma = 0 makes the pruned channels exactly relu(beta): folding them into c2's bias is exact.
  assert.ok(maxDiff(interpret(m, { x }).y, want) < 1e-5);
});

Deno.test("prune without compensation drops act(beta) and changes the output", async () => {
  const m = parse("f32[2,2,4,4]", CHAIN);
  const x = input([2, 2, 4, 4]);
  const want = interpret(m, { x }).y;
  await prune(m, "prune{ratio=0.5,compensate=false}");
  // relu(0.7) * w2[:,1] + relu(0.3) * w2[:,3] is missing.
  assert.ok(maxDiff(interpret(m, { x }).y, want) > 0.1);
});

Deno.test("prune removes the H*W feature block of each pruned channel from a Gemm after Flatten", async () => {
  const m = parse(
    "f32[2,2,2,2]",
    `
  %w1 = const f32[3,2,1,1] dense<[1.0, -1.0, 0.5, 0.5, 2.0, 1.0]>
  %gamma = const f32[3] dense<[1.0, 0.0, 2.0]>
  %beta = const f32[3] dense<[0.1, 0.4, -0.2]>
  %mean = const f32[3] dense<0.0>
  %var = const f32[3] dense<1.0>
  %fw = const f32[12,5] dense<${vals(60, (i) => Math.sin(i * 0.7))}>
  %c1 = Conv(%x, %w1) : f32[2,3,2,2]
  %bn = BatchNormalization(%c1, %gamma, %beta, %mean, %var) : f32[2,3,2,2]
  %r = Relu(%bn) : f32[2,3,2,2]
  %f = Flatten(%r) {axis = 1} : f32[2,12]
  %y = Gemm(%f, %fw) {alpha = 0.5} : f32[2,5] name "fc"`,
  );
  const x = input([2, 2, 2, 2]);
  const want = interpret(m, { x }).y;
  const fw = m.graph.constants.find((v) => v.name === "fw")!.constant!;
  await prune(m, "prune{ratio=0.34}");
  const fc = op(m, "fc");
  // transB = 0: features are rows; channel 1 owned rows 4..7.
  assert.deepEqual(fc.operand(1)!.constant!.data, takeChannels(fw, 0, [0, 2], 4).data);
  assert.equal(fc.operand(2)!.constant!.shape[0], 5);
  assert.ok(maxDiff(interpret(m, { x }).y, want) < 1e-5);
});

Deno.test("prune updates a depthwise conv's weights and group count", async () => {
  const m = parse(
    "f32[1,2,3,3]",
    `
  %w1 = const f32[4,2,1,1] dense<${vals(8, (i) => 1 + i)}>
  %g1 = const f32[4] dense<[1.0, 0.0, 1.0, 0.0]>
  %beta = const f32[4] dense<[0.5, 0.5, 0.5, 0.5]>
  %mean = const f32[4] dense<0.0>
  %var = const f32[4] dense<1.0>
  %dw = const f32[4,1,1,1] dense<[1.0, 2.0, 3.0, 4.0]>
  %g2 = const f32[4] dense<[1.0, 0.0, 1.0, 0.0]>
  %w2 = const f32[1,4,1,1] dense<[1.0, 1.0, 1.0, 1.0]>
  %c1 = Conv(%x, %w1) : f32[1,4,3,3]
  %bn1 = BatchNormalization(%c1, %g1, %beta, %mean, %var) : f32[1,4,3,3]
  %d = Conv(%bn1, %dw) {group = 4} : f32[1,4,3,3]
  %bn2 = BatchNormalization(%d, %g2, %beta, %mean, %var) : f32[1,4,3,3]
  %y = Conv(%bn2, %w2) : f32[1,1,3,3] name "c2"`,
  );
  const x = input([1, 2, 3, 3]);
  const want = interpret(m, { x }).y;
  await prune(m, "prune{ratio=0.5}");
  assert.equal(op(m, "d").int("group"), 2);
  assert.deepEqual(op(m, "d").operand(1)!.constant!.data, new Float32Array([1, 3]));
  assert.ok(maxDiff(interpret(m, { x }).y, want) < 1e-5);
});

/** Pre-activation residual block: the stream value feeds both the BN branch and the Add. */
const PREACT = `
  %w0 = const f32[3,2,1,1] dense<${vals(6, (i) => i - 2)}>
  %gamma = const f32[3] dense<[1.0, 0.0, 0.5]>
  %beta = const f32[3] dense<[0.2, 0.6, -0.3]>
  %mean = const f32[3] dense<0.0>
  %var = const f32[3] dense<1.0>
  %w1 = const f32[3,3,1,1] dense<${vals(9, (i) => Math.sin(i))}>
  %stem = Conv(%x, %w0) : f32[1,3,2,2]
  %bn = BatchNormalization(%stem, %gamma, %beta, %mean, %var) : f32[1,3,2,2]
  %r = Relu(%bn) : f32[1,3,2,2]
  %c1 = Conv(%r, %w1) : f32[1,3,2,2]
  %y = Add(%c1, %stem) : f32[1,3,2,2]`;

Deno.test("prune selects channels at the consumer of a pre-activation BN and keeps the shared producer", async () => {
  const m = parse("f32[1,2,2,2]", PREACT);
  const x = input([1, 2, 2, 2]);
  const want = interpret(m, { x }).y;
  const rec = await prune(m, "prune{ratio=0.34}");
  assert.equal(rec.stats["channel-selections"], 1);
  const gather = m.graph.ops.find((o) => o.type === "Gather")!;
  assert.equal(gather.operand(0)!.name, "stem");
  assert.deepEqual([...gather.operand(1)!.constant!.data], [0n, 2n]);
  assert.deepEqual(op(m, "stem").operand(1)!.constant!.shape, [3, 2, 1, 1]);
  assert.deepEqual(op(m, "c1").operand(1)!.constant!.shape, [3, 2, 1, 1]);
  assert.ok(maxDiff(interpret(m, { x }).y, want) < 1e-5);
});

Deno.test("prune selects channels after a Concat (DenseNet) and removes selections that keep everything", async () => {
  const m = parse(
    "f32[1,2,2,2]",
    `
  %w0 = const f32[2,2,1,1] dense<[1.0, 0.0, 0.0, 1.0]>
  %w1 = const f32[2,4,1,1] dense<${vals(8, (i) => Math.cos(i))}>
  %g4 = const f32[4] dense<[0.0, 1.0, 1.0, 1.0]>
  %g2 = const f32[2] dense<[1.0, 1.0]>
  %b4 = const f32[4] dense<0.25>
  %b2 = const f32[2] dense<0.0>
  %m4 = const f32[4] dense<0.0>
  %v4 = const f32[4] dense<1.0>
  %m2 = const f32[2] dense<0.0>
  %v2 = const f32[2] dense<1.0>
  %stem = Conv(%x, %w0) : f32[1,2,2,2]
  %bn0 = BatchNormalization(%stem, %g2, %b2, %m2, %v2) : f32[1,2,2,2]
  %cat = Concat(%stem, %bn0) {axis = 1} : f32[1,4,2,2]
  %bn = BatchNormalization(%cat, %g4, %b4, %m4, %v4) : f32[1,4,2,2]
  %y = Conv(%bn, %w1) : f32[1,2,2,2] name "c1"`,
  );
  const x = input([1, 2, 2, 2]);
  const want = interpret(m, { x }).y;
  const rec = await prune(m, "prune{ratio=0.25}");
  const gathers = m.graph.ops.filter((o) => o.type === "Gather");
  assert.deepEqual(gathers.map((g) => [...g.operand(1)!.constant!.data]), [[1n, 2n, 3n]]);
  assert.equal(rec.stats["channel-selections"], 1);
  assert.ok(maxDiff(interpret(m, { x }).y, want) < 1e-5);
});

Deno.test("prune keeps min-channels per group, as a count or a fraction", async () => {
  for (const [mc, kept] of [["3", 3], ["0.75", 3], ["1", 1]] as const) {
    const m = parse("f32[2,2,4,4]", CHAIN);
    await prune(m, `prune{ratio=0.99,min-channels=${mc}}`);
    assert.equal(op(m, "c1").operand(1)!.constant!.shape[0], kept, `min-channels=${mc}`);
  }
});

Deno.test("prune with an absolute threshold prunes channels below it", async () => {
  const m = parse("f32[2,2,4,4]", CHAIN);
  const rec = await prune(m, "prune{threshold=0.75}");
  assert.equal(rec.stats.threshold, 0.75);
  assert.equal(op(m, "c1").operand(1)!.constant!.shape[0], 1);
});

Deno.test("prune scope=all also prunes Gemm features scored by a BatchNormalization", async () => {
  const body = `
  %fw1 = const f32[4,3] dense<${vals(12, (i) => i)}>
  %gamma = const f32[4] dense<[1.0, 0.0, 1.0, 0.0]>
  %z = const f32[4] dense<0.0>
  %one = const f32[4] dense<1.0>
  %fw2 = const f32[2,4] dense<1.0>
  %h = Gemm(%x, %fw1) {transB = 1} : f32[1,4] name "fc1"
  %bn = BatchNormalization(%h, %gamma, %z, %z, %one) : f32[1,4]
  %y = Gemm(%bn, %fw2) {transB = 1} : f32[1,2] name "fc2"`;
  const conv = parse("f32[1,3]", body);
  assert.equal((await prune(conv, "prune")).changed, false);
  const all = parse("f32[1,3]", body);
  await prune(all, "prune{scope=all}");
  assert.deepEqual(op(all, "fc1").operand(1)!.constant!.shape, [2, 3]);
  assert.deepEqual(op(all, "fc2").operand(1)!.constant!.shape, [2, 2]);
});

Deno.test("prune score=sum and score=max rank coupled channels differently", async () => {
  // Two BNs on one group: channel 0 scores (0.5, 0.5), channel 1 (0.9, 0.0).
  const body = `
  %w1 = const f32[2,1,1,1] dense<1.0>
  %ga = const f32[2] dense<[0.5, 0.9]>
  %gb = const f32[2] dense<[0.5, 0.0]>
  %z = const f32[2] dense<0.0>
  %one = const f32[2] dense<1.0>
  %w2 = const f32[1,2,1,1] dense<1.0>
  %c1 = Conv(%x, %w1) : f32[1,2,1,1]
  %bn1 = BatchNormalization(%c1, %ga, %z, %z, %one) : f32[1,2,1,1]
  %r = Relu(%bn1) : f32[1,2,1,1]
  %bn2 = BatchNormalization(%r, %gb, %z, %z, %one) : f32[1,2,1,1]
  %y = Conv(%bn2, %w2) : f32[1,1,1,1] name "c2"`;
  const max = parse("f32[1,1,1,1]", body);
  await prune(max, "prune{ratio=0.5,score=max}");
  assert.deepEqual([...op(max, "bn1").operand(1)!.constant!.data], [Math.fround(0.9)]);
  const sum = parse("f32[1,1,1,1]", body);
  await prune(sum, "prune{ratio=0.5,score=sum}");
  assert.deepEqual([...sum.graph.ops.find((o) => o.name === "bn1")!.operand(1)!.constant!.data], [0.5]);
});

Deno.test("prune keeps channels that reach a graph output and reports the barrier", async () => {
  const m = parse(
    "f32[1,1,1,1]",
    `
  %w1 = const f32[2,1,1,1] dense<1.0>
  %g = const f32[2] dense<[0.0, 1.0]>
  %z = const f32[2] dense<0.0>
  %one = const f32[2] dense<1.0>
  %c1 = Conv(%x, %w1) : f32[1,2,1,1]
  %y = BatchNormalization(%c1, %g, %z, %z, %one) : f32[1,2,1,1]`,
  );
  const rec = await prune(m, "prune");
  assert.equal(rec.changed, false);
  assert.deepEqual(rec.stats.barriers, ["y: graph output"]);
  assert.equal(m.graph.ops.some((o) => o.type === "Gather"), false);
});

Deno.test("prune on a model without BatchNormalization reports nothing to prune", async () => {
  const m = parse("f32[1,2]", `  %y = Relu(%x) : f32[1,2]`);
  const rec = await prune(m, "prune");
  assert.equal(rec.changed, false);
  assert.deepEqual(rec.diagnostics.map((d) => [d.severity, d.message]), [[
    "note",
    "nothing to prune: no BatchNormalization",
  ]]);
});

Deno.test("prune rejects options out of range with the valid range", () => {
  assert.throws(() => parsePipeline("prune{ratio=1}", registry), {
    message:
      'Cannot parse pipeline: Cannot configure pass "prune": option "ratio" must be a number in [0, 1), found "1"'
        .replace("Cannot parse pipeline: ", ""),
  });
  assert.throws(() => parsePipeline("prune{min-channels=0}", registry), {
    message: 'Cannot configure pass "prune": option "min-channels" must be a number in (0, inf), found "0"',
  });
  assert.throws(() => parsePipeline("prune{score=median}", registry), /option "score" must be one of/);
  assert.throws(() => parsePipeline("prune{threshold=0}", registry), {
    message: 'Cannot configure pass "prune": option "threshold" must be a number in (0, inf), found "0"',
  });
});

Deno.test("prune threshold is optional: unset by default and left out of the canonical pipeline", () => {
  const [step] = parsePipeline("prune", registry);
  assert.equal(step.options.threshold, undefined);
  assert.equal(
    printPipeline([step]),
    "prune{ratio=0.5,min-channels=1,score=max,scope=conv,compensate=true,compensation=expected,select=auto,sequential=true}",
  );
  assert.equal(printPipeline(parsePipeline("prune{threshold=0.25}", registry)).includes(",threshold=0.25,"), true);
});

Deno.test("prune recalibrate-bn re-estimates BN statistics on calibration data, and warns without it", async () => {
  const m = parse("f32[2,2,4,4]", CHAIN);
  const warn = await prune(cloneModule(m), "prune{recalibrate-bn=true}");
  assert.deepEqual(warn.diagnostics.map((d) => d.severity), ["warning"]);
  assert.match(warn.diagnostics[0].message, /recalibrate-bn needs calibration data/);
  const x = input([2, 2, 4, 4], 7);
  const rec = await prune(m, "prune{recalibrate-bn=true}", { x });
  assert.equal(rec.stats["bn-recalibrated"], true);
  // After recalibration the BN input has mean = running mean on the calibration batch.
  const c1 = interpret(m, { x }).y; // sanity: still runs
  assert.equal(c1.shape[1], 3);
  const mean = op(m, "bn").operand(3)!.constant!.data as Float32Array;
  m.graph.outputs.push(op(m, "c1").result);
  const act = interpret(m, { x }).c1;
  let s = 0;
  for (let n = 0; n < 2; n++) for (let i = 0; i < 16; i++) s += act.data[n * 32 + i] as number;
  assert.ok(Math.abs(mean[0] - s / 32) < 1e-5);
});

Deno.test("prune slices per-channel Mul/Add constants on the group and folds them into the compensation", async () => {
  const m = parse(
    "f32[1,2,2,2]",
    `
  %w1 = const f32[3,2,1,1] dense<${vals(6, (i) => i - 2.5)}>
  %gamma = const f32[3] dense<[1.0, 0.0, 1.0]>
  %beta = const f32[3] dense<[0.0, 0.8, 0.0]>
  %z = const f32[3] dense<0.0>
  %one = const f32[3] dense<1.0>
  %scale = const f32[1,3,1,1] dense<[2.0, 3.0, 4.0]>
  %shift = const f32[3,1,1] dense<[0.5, -0.5, 1.0]>
  %w2 = const f32[1,3,1,1] dense<[1.0, 1.0, 1.0]>
  %c1 = Conv(%x, %w1) : f32[1,3,2,2]
  %bn = BatchNormalization(%c1, %gamma, %beta, %z, %one) : f32[1,3,2,2]
  %m = Mul(%bn, %scale) : f32[1,3,2,2]
  %a = Add(%shift, %m) : f32[1,3,2,2]
  %y = Conv(%a, %w2) : f32[1,1,2,2] name "c2"`,
  );
  const x = input([1, 2, 2, 2]);
  const want = interpret(m, { x }).y;
  await prune(m, "prune{ratio=0.34}");
  assert.deepEqual([...op(m, "m").operand(1)!.constant!.data], [2, 4]);
  assert.deepEqual(op(m, "a").operand(0)!.constant!.shape, [2, 1, 1]);
  // Channel 1 emits 0.8 * 3 - 0.5 = 1.9 everywhere: c2 gets it as a bias.
  const bias = op(m, "c2").operand(2)!.constant!.data as Float32Array;
  assert.equal(bias.length, 1);
  assert.ok(Math.abs(bias[0] - 1.9) < 1e-6);
  assert.ok(maxDiff(interpret(m, { x }).y, want) < 1e-5);
});

Deno.test("prune reports a |gamma| histogram with the threshold marked", async () => {
  const m = parse("f32[2,2,4,4]", CHAIN);
  const rec = await prune(m, "prune{ratio=0.5}");
  const h = rec.stats["gamma-histogram"] as { edges: number[]; counts: number[]; threshold: number };
  assert.equal(h.threshold, 0.5);
  assert.equal(h.edges.length, h.counts.length + 1);
  // |gamma| = 1, 0, 0.5, 0: the zeros land in the lowest bin (floor 1e-8), the others above 0.1.
  assert.equal(h.counts.reduce((a, b) => a + b, 0), 4);
  assert.equal(h.counts[0], 2);
  assert.equal(h.edges[0], 1e-8);
});

/** x -> c1 (2 channels) -> BN(gamma, beta) -> act -> c2 (sums both channels); channel 0 has the smaller |gamma|. */
function gaussianChannel(act: string, gamma0: number, beta0: number): Module {
  return parse(
    "f32[N,1,3,3]",
    `  %w1 = const f32[2,1,1,1] dense<1.0>
  %gamma = const f32[2] dense<[${gamma0}, 4.0]>
  %beta = const f32[2] dense<[${beta0}, 0.0]>
  %z = const f32[2] dense<0.0>
  %one = const f32[2] dense<1.0>
  %w2 = const f32[1,2,1,1] dense<1.0>
  %b2 = const f32[1] dense<0.0>
  %c1 = Conv(%x, %w1) : f32[N,2,3,3]
  %bn = BatchNormalization(%c1, %gamma, %beta, %z, %one) : f32[N,2,3,3]
  %a = ${act}(%bn) : f32[N,2,3,3]
  %y = Conv(%a, %w2, %b2) : f32[N,1,3,3]`,
  );
}

Deno.test("prune compensates a pruned channel by E[act(N(beta, gamma^2))]: closed form for Relu", async () => {
  const [g, b] = [0.5, 0.3];
  const m = gaussianChannel("Relu", g, b);
  await prune(m, "prune{ratio=0.5}");
  const bias = Number(m.graph.ops.find((op) => op.name === "y")!.operand(2)!.constant!.data[0]);
  // beta Phi(beta/g) + g phi(beta/g), Phi(0.6) = 0.7257469, phi(0.6) = 0.3332246.
  assert.ok(Math.abs(bias - (b * 0.7257469 + g * 0.3332246)) < 1e-5, `bias ${bias}`);
  // The old rule, act(beta), is the gamma -> 0 limit.
  const old = gaussianChannel("Relu", g, b);
  await prune(old, "prune{ratio=0.5,compensation=beta}");
  assert.ok(Math.abs(Number(old.graph.ops.find((op) => op.name === "y")!.operand(2)!.constant!.data[0]) - b) < 1e-6);
});

Deno.test("prune's expected compensation: Monte Carlo agrees for Relu, Sigmoid and LeakyRelu (quadrature)", async () => {
  const [g, b] = [0.8, -0.2];
  let s = 12345;
  const normal = (): number => {
    const u = ((s = (s * 16807) % 2147483647) + 1) / 2147483648;
    const v = ((s = (s * 16807) % 2147483647) + 1) / 2147483648;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  const draws = Array.from({ length: 200000 }, () => b + g * normal());
  const fns: Record<string, (x: number) => number> = {
    Relu: (x) => Math.max(0, x),
    Sigmoid: (x) => 1 / (1 + Math.exp(-x)),
    LeakyRelu: (x) => (x < 0 ? 0.01 * x : x),
  };
  for (const [act, f] of Object.entries(fns)) {
    const m = gaussianChannel(act, g, b);
    await prune(m, "prune{ratio=0.5}");
    const bias = Number(m.graph.ops.find((op) => op.name === "y")!.operand(2)!.constant!.data[0]);
    const mc = draws.reduce((acc, x) => acc + f(x), 0) / draws.length;
    assert.ok(Math.abs(bias - mc) < 5e-3, `${act}: ${bias} vs Monte Carlo ${mc}`);
  }
});

Deno.test("prune takes a pruned channel's variance out of the BN after its consumer (data-free)", async () => {
  const m = parse(
    "f32[N,1,3,3]",
    `  %w1 = const f32[2,1,1,1] dense<1.0>
  %gamma = const f32[2] dense<[0.5, 4.0]>
  %beta = const f32[2] dense<[0.3, 0.0]>
  %z = const f32[2] dense<0.0>
  %one = const f32[2] dense<1.0>
  %w2 = const f32[1,2,1,1] dense<[2.0, 1.0]>
  %g2 = const f32[1] dense<1.0>
  %z2 = const f32[1] dense<0.0>
  %v2 = const f32[1] dense<10.0>
  %c1 = Conv(%x, %w1) : f32[N,2,3,3]
  %bn = BatchNormalization(%c1, %gamma, %beta, %z, %one) : f32[N,2,3,3]
  %c2 = Conv(%bn, %w2) : f32[N,1,3,3]
  %y = BatchNormalization(%c2, %g2, %z2, %z2, %v2) : f32[N,1,3,3]`,
  );
  await prune(m, "prune{ratio=0.5}");
  const bn2 = m.graph.ops.find((op) => op.name === "y")!;
  // Var of 2 * N(0.3, 0.5^2) is 1; its mean 0.6 becomes c2's bias (a selection sits before the output BN here).
  assert.ok(Math.abs(Number(bn2.operand(4)!.constant!.data[0]) - 9) < 1e-5);
  const c2 = m.graph.ops.find((op) => op.name === "c2")!;
  assert.ok(Math.abs(Number(c2.operand(2)!.constant!.data[0]) - 0.6) < 1e-6);
  const old = parse("f32[N,1,3,3]", "  %y = Relu(%x) : f32[N,1,3,3]");
  assert.equal((await prune(old, "prune{compensation=beta}")).changed, false);
});

Deno.test("prune select=data keeps the channels the consumer needs, where |gamma| would keep the wrong ones", async () => {
  // c1 copies the four input channels (inputs >= 0, so the Relu passes them). The 3x3 consumer reads only ch2 and
  // ch3, but those have the smaller |gamma|: ratio 0.5 by |gamma| keeps ch0 and ch1.
  const w2 = [...input([2, 4, 3, 3], 7).data].map((v, i) => (Math.floor(i / 9) % 4 < 2 ? 0 : Number(v)));
  const model = () =>
    parse(
      "f32[N,4,5,5]",
      `  %w1 = const f32[4,4,1,1] dense<[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]>
  %gamma = const f32[4] dense<[1.0, 1.0, 0.5, 0.6]>
  %z = const f32[4] dense<0.0>
  %one = const f32[4] dense<1.0>
  %w2 = const f32[2,4,3,3] dense<[${w2.join(", ")}]>
  %c1 = Conv(%x, %w1) : f32[N,4,5,5]
  %bn = BatchNormalization(%c1, %gamma, %z, %z, %one) : f32[N,4,5,5]
  %r = Relu(%bn) : f32[N,4,5,5]
  %y = Conv(%r, %w2) {pads = [1, 1, 1, 1]} : f32[N,2,5,5]`,
    );
  const x = float32Tensor([8, 4, 5, 5], [...input([8, 4, 5, 5], 3).data].map((v) => Math.abs(Number(v))));
  const reference = interpret(model(), { x }).y;
  const kept = async (select: string): Promise<{ channels: number; diff: number; stats: PassRecord["stats"] }> => {
    const m = model();
    const r = await prune(
      m,
      `prune{ratio=0.5,select=${select},compensate=false,reconstruct=false,recalibrate-bn=false}`,
      { x },
    );
    const w = m.graph.ops.find((op) => op.name === "c1")!.operand(1)!.constant!;
    return { channels: w.shape[0], diff: maxDiff(interpret(m, { x }).y, reference), stats: r.stats };
  };
  const data = await kept("data");
  assert.equal(data.channels, 2);
  assert.ok(data.diff < 1e-5, `select=data: max difference ${data.diff}`);
  assert.equal(data.stats.selection, "data");
  const gamma = await kept("gamma");
  assert.equal(gamma.channels, 2);
  assert.ok(gamma.diff > 0.1, `select=gamma: max difference ${gamma.diff}`);
  assert.equal(gamma.stats.selection, "gamma");
  // auto: data with calibration data, |gamma| without.
  assert.equal((await kept("auto")).stats.selection, "data");
  const free = model();
  assert.equal((await prune(free, "prune{ratio=0.5}")).stats.selection, "gamma");
  const warned = await prune(model(), "prune{ratio=0.5,select=data}");
  assert.match(warned.diagnostics[0].message, /^select=data needs calibration data/);
});

Deno.test("prune layer-cap: no group loses more than the cap, and with ratio the total removed stays the same", async () => {
  // Group c1 has all the small |gamma|: ratio 0.5 puts all 4 under the threshold, and min-channels keeps one;
  // layer-cap=0.5 lets it lose 2, and the next-lowest |gamma| (c2's 1.0 and 2.0) go instead: 4 in all.
  const model = () =>
    parse(
      "f32[N,1,3,3]",
      `  %w1 = const f32[4,1,1,1] dense<[1.0, 2.0, 3.0, 4.0]>
  %g1 = const f32[4] dense<[0.1, 0.2, 0.3, 0.4]>
  %g2 = const f32[4] dense<[1.0, 2.0, 3.0, 4.0]>
  %z = const f32[4] dense<0.0>
  %one = const f32[4] dense<1.0>
  %w2 = const f32[4,4,1,1] dense<1.0>
  %w3 = const f32[1,4,1,1] dense<1.0>
  %c1 = Conv(%x, %w1) : f32[N,4,3,3]
  %b1 = BatchNormalization(%c1, %g1, %z, %z, %one) : f32[N,4,3,3]
  %r1 = Relu(%b1) : f32[N,4,3,3]
  %c2 = Conv(%r1, %w2) : f32[N,4,3,3]
  %b2 = BatchNormalization(%c2, %g2, %z, %z, %one) : f32[N,4,3,3]
  %r2 = Relu(%b2) : f32[N,4,3,3]
  %y = Conv(%r2, %w3) : f32[N,1,3,3]`,
    );
  const width = (m: Module, name: string) => m.graph.ops.find((op) => op.name === name)!.operand(1)!.constant!.shape[0];
  const plain = model();
  const r0 = await prune(plain, "prune{ratio=0.5}");
  assert.deepEqual([width(plain, "c1"), width(plain, "c2"), r0.stats["channels-pruned"]], [1, 4, 3]);
  const capped = model();
  const r1 = await prune(capped, "prune{ratio=0.5,layer-cap=0.5}");
  assert.deepEqual([width(capped, "c1"), width(capped, "c2"), r1.stats["channels-pruned"]], [2, 2, 4]);
  // The kept channels of c1 are its two largest |gamma| (0.3, 0.4): the BN after it holds just those.
  const gamma = capped.graph.ops.find((op) => op.name === "b1")!.operand(1)!.constant!.data;
  assert.deepEqual([...gamma].map((v) => Math.round(Number(v) * 10) / 10), [0.3, 0.4]);
  // With threshold, a capped group keeps the rest; nothing is redistributed.
  const cut = model();
  await prune(cut, "prune{threshold=0.35,layer-cap=0.5}");
  assert.deepEqual([width(cut, "c1"), width(cut, "c2")], [2, 4]);
});

Deno.test("prune chooses channels sequentially, on the already-pruned network: exact where the original's choice is not", async () => {
  // x: the 8 sign patterns of 3 channels (orthogonal, zero mean), so least squares is exact arithmetic. c1 copies x;
  // |gamma| makes each group lose one channel (0.5 in the first, 0.6 in the second). The first group loses a2 = x2
  // either way (c2's outputs lose least without it). On the original network the second group then loses b2
  // (y = 2 b0 - 2 b1 - 0.6 b2 = 5.2 x0 + 4 x1 loses least without it), but once a2 is gone b1 = -0.5 x2 is zero and
  // y is exactly 2 b0 - 0.6 b2 on what the pruned network computes: the sequential choice drops b1 and is exact.
  const model = () =>
    parse(
      "f32[N,3,1,1]",
      `  %w1 = const f32[3,3,1,1] dense<[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]>
  %ga = const f32[3] dense<[1.0, 1.0, 0.5]>
  %gb = const f32[3] dense<[1.0, 1.0, 0.6]>
  %z = const f32[3] dense<0.0>
  %one = const f32[3] dense<1.0>
  %w2 = const f32[3,3,1,1] dense<[2.0, 2.0, -1.0, 0.0, 0.0, -1.0, -2.0, 0.0, 0.0]>
  %w3 = const f32[1,3,1,1] dense<[2.0, -2.0, -1.0]>
  %a = Conv(%x, %w1) : f32[N,3,1,1] name "c1"
  %an = BatchNormalization(%a, %ga, %z, %z, %one) : f32[N,3,1,1]
  %b = Conv(%an, %w2) : f32[N,3,1,1] name "c2"
  %bn = BatchNormalization(%b, %gb, %z, %z, %one) : f32[N,3,1,1]
  %y = Conv(%bn, %w3) : f32[N,1,1,1] name "c3"`,
    );
  const signs = Array.from({ length: 24 }, (_, i) => ((Math.floor(i / 3) >> (2 - (i % 3))) & 1 ? 1 : -1));
  const x = float32Tensor([8, 3, 1, 1], signs);
  const reference = interpret(model(), { x }).y;
  const run = async (sequential: boolean) => {
    const m = model();
    const r = await prune(m, `prune{ratio=0.34,compensate=false,sequential=${sequential}}`, { x });
    // c2's filters, as rows of its (pruned) weights over the kept inputs: which of b0, b1, b2 are left.
    const w2 = m.graph.ops.find((op) => op.name === "c2")!.operand(1)!.constant!;
    const gb = m.graph.ops.find((op) => op.type === "BatchNormalization" && op.operand(0)!.producer?.name === "c2")!;
    const gamma = [...gb.operand(1)!.constant!.data].map((v) => Math.round(Number(v) * 10) / 10);
    return { shape: w2.shape, gamma, diff: maxDiff(interpret(m, { x }).y, reference), stats: r.stats };
  };
  const seq = await run(true);
  assert.deepEqual(seq.shape, [2, 2, 1, 1]);
  assert.deepEqual(seq.gamma, [1.0, 0.6], "sequential: b0 and b2 kept");
  assert.ok(seq.diff < 1e-3, `sequential: max difference ${seq.diff}`);
  assert.equal(seq.stats.selection, "data-sequential");
  assert.equal(seq.stats.recovery, "reconstruct");
  const independent = await run(false);
  assert.deepEqual(independent.gamma, [1.0, 1.0], "on the original network: b0 and b1 kept");
  // What is lost: 0.6 (x0 - x1), 1.2 at its largest.
  assert.ok(Math.abs(independent.diff - 1.2) < 0.05, `independent: max difference ${independent.diff}`);
  assert.equal(independent.stats.selection, "data");
  assert.equal(independent.stats.recovery, "reconstruct");
});
