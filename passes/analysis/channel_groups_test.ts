import assert from "node:assert/strict";
import { builtinOps } from "../../ir/builtin_ops.ts";
import { parseModule } from "../../ir/parser.ts";
import { inferShapes } from "../../ir/shape.ts";
import { type ChannelGroup, channelGroups, type ChannelGroupsResult } from "./channel_groups.ts";

/** Parse a graph body (consts + ops) over `%x: f32[1,2,4,4]` and infer shapes. */
function analyse(body: string, input = "f32[1,2,4,4]", outputs = "%y"): ChannelGroupsResult {
  const m = parseModule(`module opsets {"": 13} ir_version 7 {
graph @g(%x: ${input}) -> (${outputs}) {
${body}
  return ${outputs}
}
}`);
  inferShapes(m, { strict: false });
  return channelGroups(m);
}

function groupOfProducer(r: ChannelGroupsResult, name: string): ChannelGroup {
  const g = r.groups.find((g) => g.producers.some((p) => p.op.name === name));
  assert.ok(g, `no group produced by ${name}`);
  return g;
}

const W = (o: number, i: number, k = 1): string => `const f32[${o},${i},${k},${k}] dense<0.5>`;

Deno.test("channelGroups() follows conv -> BN -> relu -> pool -> conv as one group", () => {
  const r = analyse(`
  %w1 = ${W(3, 2)}
  %w2 = ${W(1, 3)}
  %s = const f32[3] dense<1.0>
  %c1 = Conv(%x, %w1) : f32[1,3,4,4]
  %bn = BatchNormalization(%c1, %s, %s, %s, %s) : f32[1,3,4,4]
  %r = Relu(%bn) : f32[1,3,4,4]
  %p = MaxPool(%r) {kernel_shape = [2, 2], strides = [2, 2]} : f32[1,3,2,2]
  %y = Conv(%p, %w2) : f32[1,1,2,2] name "c2"`);
  const g = groupOfProducer(r, "c1");
  assert.equal(g.size, 3);
  assert.equal(g.prunable, true);
  assert.deepEqual(g.consumers.map((c) => [c.op.name, c.offset, c.featuresPerChannel]), [["c2", 0, 1]]);
  assert.deepEqual(g.bns.map((b) => b.op.name), ["bn"]);
  assert.deepEqual(g.values.map((v) => v.value.name), ["c1", "bn", "r", "p"]);
  // The last conv's output is a graph output: a barrier naming it.
  const out = groupOfProducer(r, "c2");
  assert.equal(out.prunable, false);
  assert.ok(r.barriers.some((b) => b.op === "y" && b.reason === "graph output" && b.group === out.id));
});

Deno.test("channelGroups() maps channel c to features c*H*W.. after Flatten into Gemm", () => {
  const r = analyse(
    `
  %w1 = ${W(3, 2)}
  %fw = const f32[5,48] dense<0.1>
  %c1 = Conv(%x, %w1) : f32[1,3,4,4]
  %f = Flatten(%c1) {axis = 1} : f32[1,48]
  %y = Gemm(%f, %fw) {transB = 1} : f32[1,5] name "fc"`,
  );
  const g = groupOfProducer(r, "c1");
  assert.deepEqual(g.consumers.map((c) => [c.op.name, c.featuresPerChannel]), [["fc", 16]]);
  assert.equal(g.prunable, true);
  assert.equal(groupOfProducer(r, "fc").size, 5);
});

Deno.test("channelGroups() couples depthwise conv input and output channels", () => {
  const r = analyse(`
  %w1 = ${W(4, 2)}
  %dw = const f32[4,1,3,3] dense<0.1>
  %w2 = ${W(1, 4)}
  %c1 = Conv(%x, %w1) : f32[1,4,4,4]
  %d = Conv(%c1, %dw) {group = 4, pads = [1, 1, 1, 1]} : f32[1,4,4,4]
  %y = Conv(%d, %w2) : f32[1,1,4,4] name "c2"`);
  const g = groupOfProducer(r, "c1");
  assert.deepEqual(g.members.filter((m) => m.role === "param" && m.op.type === "Conv").map((m) => m.op.name), ["d"]);
  assert.deepEqual(g.consumers.map((c) => c.op.name), ["c2"]);
});

Deno.test("channelGroups() joins residual Add operands into one group", () => {
  const r = analyse(`
  %w1 = ${W(3, 2)}
  %w2 = ${W(3, 3)}
  %w3 = ${W(1, 3)}
  %c1 = Conv(%x, %w1) : f32[1,3,4,4]
  %c2 = Conv(%c1, %w2) : f32[1,3,4,4]
  %a = Add(%c2, %c1) : f32[1,3,4,4]
  %y = Conv(%a, %w3) : f32[1,1,4,4] name "c3"`);
  const g = groupOfProducer(r, "c1");
  assert.deepEqual(g.producers.map((p) => p.op.name).sort(), ["c1", "c2"]);
  assert.deepEqual(g.consumers.map((c) => c.op.name).sort(), ["c2", "c3"]);
  assert.equal(g.prunable, true);
});

Deno.test("channelGroups() gives each Concat operand its slice of the output's channels", () => {
  const r = analyse(`
  %w1 = ${W(3, 2)}
  %w2 = ${W(2, 3)}
  %w3 = ${W(1, 5)}
  %c1 = Conv(%x, %w1) : f32[1,3,4,4]
  %c2 = Conv(%c1, %w2) : f32[1,2,4,4]
  %cat = Concat(%c1, %c2) {axis = 1} : f32[1,5,4,4]
  %y = Conv(%cat, %w3) : f32[1,1,4,4] name "c3"`);
  const g = groupOfProducer(r, "c1");
  assert.equal(g.size, 5);
  assert.deepEqual(g.producers.map((p) => [p.op.name, p.offset, p.size]), [["c1", 0, 3], ["c2", 3, 2]]);
  assert.deepEqual(g.consumers.map((c) => [c.op.name, c.offset, c.size]), [["c2", 0, 3], ["c3", 0, 5]]);
});

Deno.test("channelGroups() maps Split and Slice outputs to offsets of their input", () => {
  const r = analyse(
    `
  %w1 = ${W(4, 2)}
  %sp = const i64[2] dense<[1, 3]>
  %st = const i64[1] dense<[1]>
  %en = const i64[1] dense<[3]>
  %ax = const i64[1] dense<[1]>
  %c1 = Conv(%x, %w1) : f32[1,4,4,4]
  %y, %z = Split(%c1, %sp) {axis = 1} : f32[1,1,4,4], f32[1,3,4,4]
  %s = Slice(%c1, %st, %en, %ax) : f32[1,2,4,4]`,
    "f32[1,2,4,4]",
    "%y, %z, %s",
  );
  const g = groupOfProducer(r, "c1");
  const at = (n: string): number => g.values.find((v) => v.value.name === n)!.offset;
  assert.deepEqual([at("y"), at("z"), at("s")], [0, 1, 1]);
  assert.equal(g.prunable, false); // outputs
});

Deno.test("channelGroups() passes per-channel Mul constants and records them as params", () => {
  const r = analyse(`
  %w1 = ${W(3, 2)}
  %w2 = ${W(1, 3)}
  %mask = const f32[1,3,1,1] dense<[1.0, 0.0, 1.0]>
  %c1 = Conv(%x, %w1) : f32[1,3,4,4]
  %m = Mul(%c1, %mask) : f32[1,3,4,4]
  %y = Conv(%m, %w2) : f32[1,1,4,4] name "c2"`);
  const g = groupOfProducer(r, "c1");
  assert.deepEqual(g.members.map((m) => [m.op.name, m.role, m.paramOperand]), [["m", "param", 1]]);
  assert.equal(g.prunable, true);
});

Deno.test("channelGroups() reports the op that blocks a group and keeps it whole", () => {
  const r = analyse(`
  %w1 = ${W(4, 2)}
  %w2 = ${W(1, 4)}
  %c1 = Conv(%x, %w1) : f32[1,4,4,4]
  %t = LRN(%c1) {size = 3} : f32[1,4,4,4]
  %y = Conv(%t, %w2) : f32[1,1,4,4] name "c2"`);
  const g = groupOfProducer(r, "c1");
  assert.equal(g.prunable, false);
  assert.deepEqual(r.barriers.filter((b) => b.group === g.id).map((b) => [b.op, b.reason]), [
    ["t", 'op "t" (LRN) has no channel rule'],
  ]);
});

Deno.test("channelGroups() treats a Concat reusing one operand twice as a conflict", () => {
  const r = analyse(`
  %w1 = ${W(2, 2)}
  %w2 = ${W(1, 4)}
  %c1 = Conv(%x, %w1) : f32[1,2,4,4]
  %cat = Concat(%c1, %c1) {axis = 1} : f32[1,4,4,4]
  %y = Conv(%cat, %w2) : f32[1,1,4,4] name "c2"`);
  const g = groupOfProducer(r, "c1");
  assert.equal(g.prunable, false);
  assert.ok(r.barriers.some((b) => b.group === g.id && b.reason === 'op "cat" (Concat) maps channels two ways'));
});

Deno.test("channelGroups() ties channel j of every group of a grouped conv (input and output sides apart)", () => {
  const r = analyse(`
  %w1 = ${W(4, 2)}
  %wg = const f32[6,2,1,1] dense<1.0>
  %w3 = ${W(1, 6)}
  %c1 = Conv(%x, %w1) : f32[1,4,4,4]
  %g = Conv(%c1, %wg) {group = 2} : f32[1,6,4,4]
  %y = Conv(%g, %w3) : f32[1,1,4,4]`);
  const input = groupOfProducer(r, "c1");
  assert.equal(input.prunable, true);
  assert.deepEqual(input.units, [0, 1, 0, 1]);
  const output = groupOfProducer(r, "g");
  assert.deepEqual(output.units, [0, 1, 2, 0, 1, 2]);
  assert.deepEqual(input.consumers.map((c) => c.op.name), ["g"]);
});

Deno.test("channelGroups() couples a squeeze-and-excitation gate and x * sigmoid(x) with the gated channels", () => {
  const r = analyse(
    `
  %w1 = ${W(4, 2)}
  %fc1 = ${W(2, 4)}
  %fc2 = ${W(4, 2)}
  %w3 = ${W(1, 4)}
  %c1 = Conv(%x, %w1) : f32[1,4,4,4]
  %s = Sigmoid(%c1) : f32[1,4,4,4]
  %silu = Mul(%c1, %s) : f32[1,4,4,4]
  %gap = ReduceMean(%silu) {axes = [2, 3], keepdims = 1} : f32[1,4,1,1]
  %q = Conv(%gap, %fc1) : f32[1,2,1,1] name "fc1"
  %e = Conv(%q, %fc2) : f32[1,4,1,1] name "fc2"
  %gate = HardSigmoid(%e) : f32[1,4,1,1]
  %se = Mul(%silu, %gate) : f32[1,4,4,4]
  %y = Conv(%se, %w3) : f32[1,1,4,4] name "c3"`,
  );
  const g = groupOfProducer(r, "c1");
  assert.equal(g.prunable, true);
  assert.deepEqual(g.producers.map((p) => p.op.name).sort(), ["c1", "fc2"]);
  assert.deepEqual(g.consumers.map((c) => c.op.name).sort(), ["c3", "fc1"]);
  assert.deepEqual(r.barriers.map((b) => b.op), ["x", "y"]); // only the graph input and output
});

Deno.test("channelGroups() carries a channel shuffle as a permutation", () => {
  const r = analyse(
    `
  %w1 = ${W(4, 2)}
  %w2 = ${W(1, 4)}
  %s1 = const i64[5] dense<[1, 2, 2, 4, 4]>
  %s2 = const i64[4] dense<[1, 4, 4, 4]>
  %c1 = Conv(%x, %w1) : f32[1,4,4,4]
  %r1 = Reshape(%c1, %s1) : f32[1,2,2,4,4]
  %t = Transpose(%r1) {perm = [0, 2, 1, 3, 4]} : f32[1,2,2,4,4]
  %sh = Reshape(%t, %s2) : f32[1,4,4,4]
  %y = Conv(%sh, %w2) : f32[1,1,4,4] name "c2"`,
  );
  const g = groupOfProducer(r, "c1");
  assert.equal(g.prunable, true);
  assert.deepEqual(g.values.map((v) => [v.value.name, v.channels]), [["c1", [0, 1, 2, 3]], ["sh", [0, 2, 1, 3]]]);
});

Deno.test("channelGroups() follows a plugin op's own channel rule, and names a plugin op without one", () => {
  const text = (domainOp: string): string =>
    `module opsets {"": 13, "my": 1} ir_version 7 {
graph @g(%x: f32[1,2,4,4]) -> (%y) {
  %w1 = ${W(3, 2)}
  %w2 = ${W(1, 3)}
  %c1 = Conv(%x, %w1) : f32[1,3,4,4]
  %a = my.${domainOp}(%c1) : f32[1,3,4,4]
  %y = Conv(%a, %w2) : f32[1,1,4,4]
  return %y
}
}`;
  const registry = builtinOps.clone();
  registry.add({
    type: "Swish",
    domain: "my",
    infer: (_op, ctx) => [ctx.types[0]],
    channels: () => ({ kind: "same", operands: [0], results: [0] }),
  });
  const withRule = parseModule(text("Swish"));
  inferShapes(withRule, { registry, strict: false });
  assert.equal(groupOfProducer(channelGroups(withRule, registry), "c1").prunable, true);
  const without = parseModule(text("Mystery"));
  inferShapes(without, { registry, strict: false });
  const r = channelGroups(without, registry);
  assert.equal(groupOfProducer(r, "c1").prunable, false);
  assert.ok(r.barriers.some((b) => b.reason === 'op "a" (my.Mystery) has no channel rule'));
});
