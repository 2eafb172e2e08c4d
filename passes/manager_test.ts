import assert from "node:assert/strict";
import { Graph, Op, Value } from "../ir/graph.ts";
import { Module } from "../ir/module.ts";
import { printModule } from "../ir/printer.ts";
import { eraseOp, replaceAllUsesWith } from "../ir/rewriter.ts";
import { float32Tensor } from "../ir/tensor.ts";
import { tensorType } from "../ir/types.ts";
import { PassError, type PassRecord, runPipeline, type RunPipelineOptions } from "./manager.ts";
import { type Analysis, definePass, type Pass, type PassLookup, passLookup } from "./pass.ts";
import { parsePipeline, type PipelineStep } from "./pipeline.ts";

/** `graph @main(%x: f32[1,4]) -> (%z)` with `%y = Relu(%x)`, `%z = Neg(%y)`. */
function smallModule(): Module {
  const g = new Graph("main");
  const f32x4 = tensorType("f32", [1, 4]);
  const x = g.addInput(new Value("x", f32x4));
  const relu = g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y", f32x4)] }));
  const neg = g.addOp(new Op({ name: "n", type: "Neg", operands: [relu.result], results: [new Value("z", f32x4)] }));
  g.outputs.push(neg.result);
  return new Module(g);
}

function opNamed(module: Module, name: string): Op {
  const op = module.graph.ops.find((o) => o.name === name);
  assert.ok(op, `no op "${name}"`);
  return op;
}

/** Counts how often it is computed; its value is the op count. */
let opCountComputations = 0;
const opCount: Analysis<{ ops: number }> = {
  name: "op-count",
  compute(module) {
    opCountComputations++;
    return { ops: module.graph.ops.length };
  },
};

const testPasses: readonly Pass[] = [
  definePass({
    name: "count",
    summary: "Records statistics and a note",
    options: { label: { kind: "string", default: "ops", doc: "Statistic name" } },
    run(module, { label }, ctx) {
      ctx.stat(label, module.graph.ops.length);
      ctx.stat("names", module.graph.ops.map((o) => o.name));
      ctx.stat("names", module.graph.ops.map((o) => o.type)); // the last value wins
      ctx.emit("warning", "looks odd", module.graph.ops[0]);
      ctx.emit("note", "a remark");
      ctx.log(`saw ${module.graph.ops.length} ops`);
      return false;
    },
  }),
  definePass({
    name: "use-analysis",
    summary: "Reads an analysis twice",
    options: { change: { kind: "bool", default: false, doc: "Report a change" } },
    run(_module, { change }, ctx) {
      const a = ctx.analysis(opCount);
      assert.equal(ctx.analysis(opCount), a);
      ctx.stat("ops", a.ops);
      return change;
    },
  }),
  definePass({
    name: "remove-neg",
    summary: "Bypasses and erases every Neg (a legal change)",
    options: {},
    run(module) {
      const negs = module.graph.ops.filter((o) => o.type === "Neg");
      for (const op of negs) {
        replaceAllUsesWith(op.result, op.operand(0)!);
        eraseOp(op);
      }
      return negs.length > 0;
    },
  }),
  definePass({
    name: "add-untyped",
    summary: "Appends an op whose result has no type yet (inference fills it)",
    options: {},
    run(module) {
      const g = module.graph;
      const abs = g.addOp(new Op({ name: "a", type: "Abs", operands: [g.outputs[0]], results: [new Value("w")] }));
      g.outputs[0] = abs.result;
      return true;
    },
  }),
  definePass({
    name: "detach-relu",
    summary: "Takes the Relu out of the op list while Neg still uses it (illegal)",
    options: {},
    run(module) {
      module.graph._detach(opNamed(module, "r"));
      return true;
    },
  }),
  definePass({
    name: "retype",
    summary: "Declares the Relu's result i64 (wrong)",
    options: {},
    run(module) {
      opNamed(module, "r").result.type = tensorType("i64", [1, 4]);
      return true;
    },
  }),
  definePass({
    name: "reject",
    summary: "Emits two errors",
    options: {},
    run(module, _options, ctx) {
      ctx.emit("warning", "first a warning");
      ctx.emit("error", "cannot handle this", opNamed(module, "n"));
      ctx.emit("error", "nor this");
      return false;
    },
  }),
  definePass({
    name: "boom",
    summary: "Throws",
    options: {},
    run() {
      throw new RangeError("kaboom\nsecond line");
    },
  }),
  definePass({
    name: "forgetful",
    summary: "Returns nothing",
    options: {},
    run: (() => undefined) as unknown as () => boolean,
  }),
  definePass({
    name: "slow",
    summary: "Awaits before answering",
    options: { ms: { kind: "int", default: 5, min: 0, doc: "Delay" } },
    async run(_module, { ms }, ctx) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      ctx.stat("calibrated", ctx.calibration !== null && "x" in ctx.calibration);
      ctx.stat("knows-relu", ctx.ops.get({ type: "Relu", domain: "" }) !== undefined);
      return false;
    },
  }),
];

function testRegistry(): PassLookup {
  return passLookup(testPasses);
}

async function run(
  module: Module,
  pipeline: string,
  options: Partial<RunPipelineOptions> = {},
): Promise<PassRecord[]> {
  const registry = testRegistry();
  return await runPipeline(module, parsePipeline(pipeline, registry), { registry, ...options });
}

/** The PassError a pipeline fails with. */
async function failure(
  module: Module,
  pipeline: string,
  options: Partial<RunPipelineOptions> = {},
): Promise<PassError> {
  try {
    await run(module, pipeline, options);
  } catch (e) {
    assert.ok(e instanceof PassError, `expected a PassError, got ${e}`);
    return e;
  }
  assert.fail(`"${pipeline}" did not fail`);
}

Deno.test("runPipeline() records statistics, diagnostics, timing and the canonical step", async () => {
  const logs: string[] = [];
  const records = await run(smallModule(), "count{label=op-total},remove-neg", {
    onLog: (pass, message) => logs.push(`${pass}: ${message}`),
  });
  assert.equal(records.length, 2);
  const [count, remove] = records;
  assert.equal(count.name, "count");
  assert.equal(count.pipeline, "count{label=op-total}");
  assert.equal(count.changed, false);
  assert.deepEqual(count.stats, { "op-total": 2, names: ["Relu", "Neg"] });
  assert.deepEqual(count.diagnostics, [
    { severity: "warning", message: "looks odd", op: "r", pass: "count" },
    { severity: "note", message: "a remark", pass: "count" },
  ]);
  assert.deepEqual(logs, ["count: saw 2 ops"]);
  assert.equal(remove.pipeline, "remove-neg");
  assert.equal(remove.changed, true);
  for (const r of records) assert.ok(typeof r.ms === "number" && r.ms >= 0 && Number.isFinite(r.ms));
});

Deno.test("runPipeline() awaits async passes and times them", async () => {
  const records = await run(smallModule(), "slow{ms=20}", { calibration: { x: float32Tensor([1, 4], [1, 2, 3, 4]) } });
  assert.ok(records[0].ms >= 15, `ms = ${records[0].ms}`);
  assert.deepEqual(records[0].stats, { calibrated: true, "knows-relu": true });
  const uncalibrated = await run(smallModule(), "slow{ms=0}");
  assert.equal(uncalibrated[0].stats.calibrated, false);
});

Deno.test("runPipeline() caches an analysis until a pass reports a change", async () => {
  opCountComputations = 0;
  const records = await run(
    smallModule(),
    "use-analysis,use-analysis,use-analysis{change=true},use-analysis,remove-neg,use-analysis",
  );
  // Computed by the first pass, reused by the next two, dropped after the change, computed again,
  // dropped again after remove-neg, and computed on the smaller module.
  assert.equal(opCountComputations, 3);
  assert.deepEqual(records.map((r) => r.analyses.map((a) => a.name)), [
    ["op-count"],
    [],
    [],
    ["op-count"],
    [],
    ["op-count"],
  ]);
  assert.deepEqual(records.map((r) => r.stats.ops ?? null), [2, 2, 2, 2, null, 1]);
  assert.ok(records[0].analyses[0].ms >= 0);
});

Deno.test("runPipeline() infers types of new results after a pass", async () => {
  const module = smallModule();
  await run(module, "add-untyped");
  assert.deepEqual(opNamed(module, "a").result.type, tensorType("f32", [1, 4]));
});

Deno.test("runPipeline() fails a pass that leaves a use of an op it took out", async () => {
  const e = await failure(smallModule(), "detach-relu");
  assert.equal(e.pass, "detach-relu");
  assert.equal(e.step, "detach-relu");
  assert.equal(
    e.message,
    'pass "detach-relu" broke the IR: op "n" (Neg): operand #0 %y is not defined in graph @main or an enclosing graph ' +
      "(and 1 more problem)",
  );
});

Deno.test("runPipeline() fails a pass that declares a wrong result type, naming the op", async () => {
  const e = await failure(smallModule(), "retype");
  assert.equal(
    e.message,
    'pass "retype" broke the IR: op "r" (Relu): result "y" is declared i64[1,4] but its operands give f32[1,4]',
  );
});

Deno.test("runPipeline() does not verify when verifyEach is false", async () => {
  const module = smallModule();
  const records = await run(module, "retype", { verifyEach: false });
  assert.equal(records[0].changed, true);
  assert.deepEqual(opNamed(module, "r").result.type, tensorType("i64", [1, 4]));
});

Deno.test("runPipeline() refuses a module that is invalid before the first pass", async () => {
  const module = smallModule();
  opNamed(module, "n").result.type = tensorType("i32", [1, 4]);
  await assert.rejects(() => run(module, "count"), {
    message:
      'the IR is invalid before the first pass: op "n" (Neg): result "z" is declared i32[1,4] but its operands give f32[1,4]',
  });
  // Nothing to run, nothing to check.
  assert.deepEqual(await run(module, ""), []);
});

Deno.test("runPipeline() turns error diagnostics into a PassError naming the op", async () => {
  const e = await failure(smallModule(), "count,reject");
  assert.equal(e.message, 'pass "reject" failed: op "n" (Neg): cannot handle this (and 1 more error)');
  assert.deepEqual(e.diagnostics.map((d) => [d.severity, d.op ?? null, d.message]), [
    ["warning", null, "first a warning"],
    ["error", "n", "cannot handle this"],
    ["error", null, "nor this"],
  ]);
});

Deno.test("runPipeline() wraps a throwing pass in a PassError naming it", async () => {
  const failed: string[] = [];
  const after: string[] = [];
  const e = await failure(smallModule(), "count,boom,count", {
    instrument: {
      afterPass: (record) => after.push(record.name),
      afterPassFailed: (step, error) => failed.push(`${step.pass.name}: ${error.message}`),
    },
  });
  assert.equal(e.message, 'pass "boom" failed: kaboom');
  assert.ok(e.cause instanceof RangeError);
  assert.equal(e.pass, "boom");
  assert.deepEqual(failed, ['boom: pass "boom" failed: kaboom']);
  assert.deepEqual(after, ["count"]); // the pipeline stops at the failure
});

Deno.test("runPipeline() rejects a pass that returns no boolean", async () => {
  const e = await failure(smallModule(), "forgetful");
  assert.equal(e.message, 'pass "forgetful" failed: run() returned undefined, expected true or false');
});

Deno.test("runPipeline() calls instrumentation hooks in order", async () => {
  const events: string[] = [];
  const module = smallModule();
  await run(module, "count,remove-neg", {
    instrument: {
      beforePass: (step: PipelineStep, m) => events.push(`before ${step.pass.name} ${m.graph.ops.length}`),
      afterPass: (record, m) => events.push(`after ${record.name} ${record.changed} ${m.graph.ops.length}`),
    },
  });
  assert.deepEqual(events, ["before count 2", "after count false 2", "before remove-neg 2", "after remove-neg true 1"]);
});

Deno.test("runPipeline() prints the IR before and after the chosen passes with headers", async () => {
  const dumps: [string, string][] = [];
  const module = smallModule();
  const before = printModule(module);
  await run(module, "count,remove-neg,count{label=n}", {
    printIrBefore: ["remove-neg"],
    printIrAfter: ["count"],
    onIr: (header, ir) => dumps.push([header, ir]),
  });
  const after = printModule(module);
  assert.notEqual(before, after);
  assert.deepEqual(dumps, [
    ["// ----- IR after count{label=ops} -----", before],
    ["// ----- IR before remove-neg -----", before],
    ["// ----- IR after count{label=n} -----", after],
  ]);
});

Deno.test("runPipeline() prints the IR after every pass or after changes only", async () => {
  const headers = async (options: Partial<RunPipelineOptions>): Promise<string[]> => {
    const out: string[] = [];
    await run(smallModule(), "count,remove-neg,use-analysis", { ...options, onIr: (h) => out.push(h) });
    return out;
  };
  assert.deepEqual(await headers({ printIrAfter: "all" }), [
    "// ----- IR after count{label=ops} -----",
    "// ----- IR after remove-neg -----",
    "// ----- IR after use-analysis{change=false} -----",
  ]);
  assert.deepEqual(await headers({ printIrBefore: "all" }), [
    "// ----- IR before count{label=ops} -----",
    "// ----- IR before remove-neg -----",
    "// ----- IR before use-analysis{change=false} -----",
  ]);
  assert.deepEqual(await headers({ printIrAfterChange: true }), ["// ----- IR after remove-neg -----"]);
  assert.deepEqual(await headers({}), []);
});

Deno.test("runPipeline() prints the IR after a failed pass when asked", async () => {
  const dumps: string[] = [];
  await failure(smallModule(), "retype", { printIrAfterFailure: true, onIr: (h, ir) => dumps.push(h, ir) });
  assert.equal(dumps[0], "// ----- IR after retype failed -----");
  assert.match(dumps[1], /%y = Relu\(%x\) : i64\[1,4\]/);
});

Deno.test("runPipeline() rejects IR dump options naming unknown passes", async () => {
  await assert.rejects(() => run(smallModule(), "count", { printIrAfter: ["cuont"] }), {
    message: 'printIrAfter: unknown pass "cuont" (did you mean "count"?)',
  });
  await assert.rejects(() => run(smallModule(), "count", { printIrBefore: ["zzz"] }), {
    message: 'printIrBefore: unknown pass "zzz"',
  });
});
