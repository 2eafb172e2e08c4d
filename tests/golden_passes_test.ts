/**
 * Golden tests of passes. Every `tests/golden/<pass>/<case>.ir` starts with one
 * or more `// RUN: <pipeline>` lines (other `//` lines are comments), then the
 * input IR. Each RUN pipeline runs on a fresh parse of the input with the
 * default registry and `verifyEach`; the printed result must equal
 * `<case>.expected.ir` exactly (so every RUN line of a case must agree). A case
 * with `// ERROR: <substring>` instead expects every run to fail with a message
 * containing the substring, and has no expected file.
 * `deno task test:update` (`deno test -A -- --update`) rewrites the expected files.
 * (`tests/golden/ir/` holds textual-IR round-trip cases, not pass cases.)
 * @module
 */
import assert from "node:assert/strict";
import { defaultRegistry } from "../driver/compile.ts";
import { Registry } from "../driver/registry.ts";
import { Op, Value } from "../ir/graph.ts";
import { parseModule } from "../ir/parser.ts";
import { printModule } from "../ir/printer.ts";
import { eraseOp, replaceAllUsesWith } from "../ir/rewriter.ts";
import { runPipeline } from "../passes/manager.ts";
import { definePass } from "../passes/pass.ts";
import { parsePipeline } from "../passes/pipeline.ts";

const GOLDEN_DIR = decodeURIComponent(new URL("./golden/", import.meta.url).pathname);
const UPDATE = Deno.args.includes("--update");
/** Directories under `tests/golden/` that are not pass cases. */
const NOT_PASS_DIRS = new Set(["ir"]);

/** What the header of a golden file asks for. */
interface GoldenHeader {
  /** Pipelines of the `// RUN:` lines. */
  readonly runs: string[];
  /** Substring of the expected failure (`// ERROR:`), or null. */
  readonly error: string | null;
}

function readHeader(text: string): GoldenHeader {
  const runs: string[] = [];
  let error: string | null = null;
  for (const line of text.split("\n")) {
    if (!line.startsWith("//")) break;
    const run = /^\/\/\s*RUN:(.*)$/.exec(line);
    const err = /^\/\/\s*ERROR:(.*)$/.exec(line);
    if (run) runs.push(run[1].trim());
    if (err) error = err[1].trim();
  }
  return { runs, error };
}

/** The printed module after `pipeline`, or the error it failed with. */
async function runCase(
  input: string,
  pipeline: string,
  registry: Registry,
): Promise<{ ir: string } | { error: Error }> {
  try {
    const module = parseModule(input);
    await runPipeline(module, parsePipeline(pipeline, registry), { registry, onIr: () => {} });
    return { ir: printModule(module) };
  } catch (e) {
    return { error: e instanceof Error ? e : new Error(String(e)) };
  }
}

/** The result of checking one golden text. */
interface GoldenCheck {
  /** Problems other than a difference from the expected output. */
  readonly problems: string[];
  /** The output all RUN lines agree on (null for an ERROR case or when a run failed). */
  readonly output: string | null;
}

/** Run every RUN line of a golden text and check the ERROR expectation. */
async function checkGoldenText(text: string, registry: Registry): Promise<GoldenCheck> {
  const { runs, error } = readHeader(text);
  if (runs.length === 0) return { problems: ["no // RUN: line at the top"], output: null };
  const problems: string[] = [];
  const outputs: string[] = [];
  for (const pipeline of runs) {
    const result = await runCase(text, pipeline, registry);
    if (error !== null) {
      if ("ir" in result) problems.push(`RUN: ${pipeline}: expected an error containing "${error}", but it succeeded`);
      else if (!result.error.message.includes(error)) {
        problems.push(`RUN: ${pipeline}: expected an error containing "${error}", got: ${result.error.message}`);
      }
    } else if ("error" in result) {
      problems.push(`RUN: ${pipeline}: failed: ${result.error.message}`);
    } else {
      outputs.push(result.ir);
    }
  }
  if (error !== null || problems.length > 0) return { problems, output: null };
  const disagree = runs.filter((_, i) => outputs[i] !== outputs[0]);
  if (disagree.length > 0) {
    problems.push(`RUN lines give different IR: "${runs[0]}" and "${disagree[0]}" (one expected file per case)`);
    return { problems, output: null };
  }
  return { problems, output: outputs[0] };
}

/** Where two texts first differ, as two lines of context. */
function firstDifference(expected: string, actual: string): string {
  const e = expected.split("\n");
  const a = actual.split("\n");
  let i = 0;
  while (i < e.length && i < a.length && e[i] === a[i]) i++;
  return `line ${i + 1}:\n  expected: ${e[i] ?? "(end of file)"}\n  actual:   ${a[i] ?? "(end of file)"}`;
}

function readIfExists(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Check `<case>.ir` against `<case>.expected.ir`; with `update`, write the expected
 * file instead of reporting a difference. Returns the problems, none when it passes.
 */
async function checkGoldenFile(path: string, registry: Registry, update: boolean): Promise<string[]> {
  const expectedPath = path.replace(/\.ir$/, ".expected.ir");
  const expectedName = expectedPath.slice(expectedPath.lastIndexOf("/") + 1);
  const text = Deno.readTextFileSync(path);
  const { problems, output } = await checkGoldenText(text, registry);
  const expected = readIfExists(expectedPath);
  if (readHeader(text).error !== null) {
    if (expected !== null) problems.push(`an ERROR case has no expected output: delete ${expectedName}`);
    return problems;
  }
  if (output === null || output === expected) return problems;
  if (update) {
    Deno.writeTextFileSync(expectedPath, output);
    return problems;
  }
  const hint = "(run `deno task test:update` and review the diff)";
  if (expected === null) problems.push(`${expectedName} is missing ${hint}`);
  else problems.push(`output differs from ${expectedName} ${hint} at ${firstDifference(expected, output)}`);
  return problems;
}

/** Golden case files (`<pass>/<case>.ir`, not `.expected.ir`) under `dir`, sorted. */
function goldenCases(dir: string): string[] {
  const cases: string[] = [];
  for (const sub of Deno.readDirSync(dir)) {
    if (!sub.isDirectory || NOT_PASS_DIRS.has(sub.name)) continue;
    for (const f of Deno.readDirSync(`${dir}/${sub.name}`)) {
      if (f.isFile && f.name.endsWith(".ir") && !f.name.endsWith(".expected.ir")) cases.push(`${sub.name}/${f.name}`);
    }
  }
  return cases.sort();
}

/** Expected files whose case file is gone. */
function orphanExpectedFiles(dir: string): string[] {
  const orphans: string[] = [];
  for (const sub of Deno.readDirSync(dir)) {
    if (!sub.isDirectory || NOT_PASS_DIRS.has(sub.name)) continue;
    for (const f of Deno.readDirSync(`${dir}/${sub.name}`)) {
      const input = f.name.replace(/\.expected\.ir$/, ".ir");
      if (f.name.endsWith(".expected.ir") && readIfExists(`${dir}/${sub.name}/${input}`) === null) {
        orphans.push(`${sub.name}/${f.name}`);
      }
    }
  }
  return orphans.sort();
}

// ---- The golden cases of the built-in passes ----

const cases = goldenCases(GOLDEN_DIR);
const registry = defaultRegistry();

for (const name of cases) {
  Deno.test(`golden pass test tests/golden/${name}`, async () => {
    assert.deepEqual(await checkGoldenFile(`${GOLDEN_DIR}${name}`, registry, UPDATE), []);
  });
}

Deno.test("golden pass tests: every expected file has its case and every case directory names a pass", () => {
  console.log(`${cases.length} golden pass case${cases.length === 1 ? "" : "s"} checked${UPDATE ? " (updating)" : ""}`);
  assert.deepEqual(orphanExpectedFiles(GOLDEN_DIR), []);
  const unknown = [...new Set(cases.map((c) => c.slice(0, c.indexOf("/"))))].filter((d) => !registry.pass(d));
  assert.deepEqual(unknown, [], "directories under tests/golden/ are named after a registered pass");
});

// ---- Tests of the runner itself, with a test pass ----

const INPUT = [
  'module opsets {"": 13} ir_version 7 {',
  "graph @main(%x: f32[1,4]) -> (%z) {",
  "  %y = Neg(%x) : f32[1,4]",
  "  %z = Relu(%y) : f32[1,4]",
  "  return %z",
  "}",
  "}",
  "",
].join("\n");

const OUTPUT = [
  'module opsets {"": 13} ir_version 7 {',
  "graph @main(%x: f32[1,4]) -> (%z) {",
  "  %z = Relu(%x) : f32[1,4]",
  "  return %z",
  "}",
  "}",
  "",
].join("\n");

/** A registry with `erase-neg` (drops Neg ops, legal) and `break` (declares a Relu result i64, illegal). */
function runnerRegistry(): Registry {
  const r = new Registry();
  r.addPass(definePass({
    name: "erase-neg",
    summary: "Bypass Neg ops (test pass)",
    options: { keep: { kind: "bool", default: false, doc: "Do nothing" } },
    run(module, { keep }) {
      if (keep) return false;
      for (const op of module.graph.ops.filter((o) => o.type === "Neg")) {
        replaceAllUsesWith(op.result, op.operand(0)!);
        eraseOp(op);
      }
      return true;
    },
  }));
  r.addPass(definePass({
    name: "append-abs",
    summary: "Append an Abs (test pass)",
    options: {},
    run(module) {
      const g = module.graph;
      const abs = new Op({ name: "abs", type: "Abs", operands: [g.outputs[0]], results: [new Value("abs")] });
      g.addOp(abs);
      g.outputs[0] = abs.result;
      return true;
    },
  }));
  r.addPass(definePass({
    name: "break",
    summary: "Declare a wrong type (test pass)",
    options: {},
    run(module) {
      module.graph.ops[module.graph.ops.length - 1].result.type = { elem: "i64", shape: [1, 4] };
      return true;
    },
  }));
  return r;
}

Deno.test("checkGoldenText() runs every RUN line on a fresh input", async () => {
  const text = `// Drops the Neg.\n// RUN: erase-neg\n// RUN: erase-neg{keep=false},erase-neg\n${INPUT}`;
  assert.deepEqual(await checkGoldenText(text, runnerRegistry()), { problems: [], output: OUTPUT });
});

Deno.test("checkGoldenText() reports RUN lines that disagree, fail, or are missing", async () => {
  const r = runnerRegistry();
  assert.deepEqual(await checkGoldenText(`// RUN: erase-neg\n// RUN: erase-neg{keep=true}\n${INPUT}`, r), {
    problems: ['RUN lines give different IR: "erase-neg" and "erase-neg{keep=true}" (one expected file per case)'],
    output: null,
  });
  assert.deepEqual(await checkGoldenText(`// RUN: erase-neg,brake\n${INPUT}`, r), {
    problems: ['RUN: erase-neg,brake: failed: Cannot parse pipeline: unknown pass "brake" (did you mean "break"?)'],
    output: null,
  });
  assert.deepEqual(await checkGoldenText(`// no run line\n${INPUT}`, r), {
    problems: ["no // RUN: line at the top"],
    output: null,
  });
});

Deno.test("checkGoldenText() checks the ERROR substring of negative cases", async () => {
  const r = runnerRegistry();
  const broken = `// RUN: break\n// ERROR: pass "break" broke the IR: op "z" (Relu)\n${INPUT}`;
  assert.deepEqual(await checkGoldenText(broken, r), { problems: [], output: null });
  assert.deepEqual(await checkGoldenText(`// RUN: erase-neg\n// ERROR: broke\n${INPUT}`, r), {
    problems: ['RUN: erase-neg: expected an error containing "broke", but it succeeded'],
    output: null,
  });
  const wrong = await checkGoldenText(`// RUN: break\n// ERROR: something else\n${INPUT}`, r);
  assert.match(
    wrong.problems[0],
    /^RUN: break: expected an error containing "something else", got: pass "break" broke/,
  );
});

Deno.test("checkGoldenFile() compares with the expected file, and writes it when updating", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const r = runnerRegistry();
    const path = `${dir}/neg.ir`;
    const expectedPath = `${dir}/neg.expected.ir`;
    Deno.writeTextFileSync(path, `// RUN: erase-neg\n${INPUT}`);
    assert.deepEqual(await checkGoldenFile(path, r, false), [
      "neg.expected.ir is missing (run `deno task test:update` and review the diff)",
    ]);
    assert.deepEqual(await checkGoldenFile(path, r, true), []);
    assert.equal(Deno.readTextFileSync(expectedPath), OUTPUT);
    assert.deepEqual(await checkGoldenFile(path, r, false), []);

    Deno.writeTextFileSync(path, `// RUN: erase-neg,append-abs\n${INPUT}`);
    assert.deepEqual(await checkGoldenFile(path, r, false), [
      "output differs from neg.expected.ir (run `deno task test:update` and review the diff) at line 2:\n" +
      "  expected: graph @main(%x: f32[1,4]) -> (%z) {\n" +
      "  actual:   graph @main(%x: f32[1,4]) -> (%abs) {",
    ]);
    assert.equal(Deno.readTextFileSync(expectedPath), OUTPUT, "not rewritten without --update");

    // A negative case must not have an expected file.
    Deno.writeTextFileSync(path, `// RUN: break\n// ERROR: broke the IR\n${INPUT}`);
    assert.deepEqual(await checkGoldenFile(path, r, true), [
      "an ERROR case has no expected output: delete neg.expected.ir",
    ]);
    Deno.removeSync(expectedPath);
    assert.deepEqual(await checkGoldenFile(path, r, false), []);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
