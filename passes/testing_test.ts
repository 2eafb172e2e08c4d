import assert from "node:assert/strict";
import { parseModule } from "../ir/parser.ts";
import { OpRegistry } from "../ir/op_def.ts";
import { builtinOps } from "../ir/builtin_ops.ts";
import { float32Tensor } from "../ir/tensor.ts";
import type { Analysis } from "./pass.ts";
import { testPassContext } from "./testing.ts";

const MODULE = `module opsets {"": 13} ir_version 7 {
graph @g(%x: f32[2]) -> (%y) {
  %y = Relu(%x) : f32[2]
  return %y
}
}`;

Deno.test("testPassContext() defaults to the built-in ops, no calibration and empty records", () => {
  const ctx = testPassContext();
  assert.equal(ctx.ops, builtinOps);
  assert.equal(ctx.calibration, null);
  assert.deepEqual([ctx.stats, ctx.diagnostics, ctx.logs, ctx.analyses], [{}, [], [], []]);
});

Deno.test("testPassContext() records stats (last wins), diagnostics with and without an op, and logs", () => {
  const m = parseModule(MODULE);
  const ops = new OpRegistry();
  const calibration = { x: float32Tensor([1, 2], [1, 2]) };
  const ctx = testPassContext({ ops, calibration, pass: "p" });
  assert.equal(ctx.ops, ops);
  assert.equal(ctx.calibration, calibration);
  ctx.stat("n", 1);
  ctx.stat("n", 2);
  ctx.stat("layers", { a: [1, "x"] });
  ctx.emit("error", "broken", m.graph.ops[0]);
  ctx.emit("note", "fine");
  ctx.log("one");
  ctx.log("two");
  assert.deepEqual(ctx.stats, { n: 2, layers: { a: [1, "x"] } });
  assert.deepEqual(ctx.diagnostics, [
    { severity: "error", message: "broken", op: "y", pass: "p" },
    { severity: "note", message: "fine", pass: "p" },
  ]);
  assert.deepEqual(ctx.logs, ["one", "two"]);
});

Deno.test("testPassContext() computes each analysis once on the given module", () => {
  const m = parseModule(MODULE);
  let calls = 0;
  const opCount: Analysis<number> = {
    name: "op-count",
    compute: (module) => (calls++, module.graph.ops.length),
  };
  const ctx = testPassContext({ module: m });
  assert.equal(ctx.analysis(opCount), 1);
  assert.equal(ctx.analysis(opCount), 1);
  assert.equal(calls, 1);
  assert.deepEqual(ctx.analyses, ["op-count"]);
});

Deno.test("testPassContext() without a module names the analysis that needs one", () => {
  const analysis: Analysis<number> = { name: "channel-groups", compute: () => 0 };
  assert.throws(() => testPassContext().analysis(analysis), {
    message: 'testPassContext(): analysis "channel-groups" needs the module: pass { module }',
  });
});
