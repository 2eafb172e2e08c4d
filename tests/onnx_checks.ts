/**
 * Structural checks of emitted ONNX models for tests, cheap enough to run on
 * every model a test writes: unique node names (onnxruntime refuses a model
 * with two nodes of one name), every node input defined before it is read,
 * and no dead node (one whose outputs reach no graph output). The checker of
 * Debian's python3-onnx (1.12) knows IR <= 8 and opset <= 17, so it cannot
 * judge BFP models (opset 21); these checks cover what it would have caught
 * of the defects seen so far.
 * @module
 */
import { type IGraphProto, onnx } from "../ir/onnx/proto.ts";

/**
 * The structural problems of an ONNX model (main graph and subgraphs), one
 * line each; empty when there are none.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { onnx } from "../ir/onnx/proto.ts";
 * import { onnxStructureProblems } from "./onnx_checks.ts";
 * const bytes = onnx.ModelProto.encode({
 *   graph: {
 *     input: [{ name: "x" }],
 *     output: [{ name: "y" }],
 *     node: [
 *       { name: "a", opType: "Relu", input: ["x"], output: ["y"] },
 *       { name: "a", opType: "Neg", input: ["x"], output: ["z"] },
 *     ],
 *   },
 * }).finish();
 * assert.deepEqual(onnxStructureProblems(bytes), [
 *   'main graph: two nodes are named "a"',
 *   'main graph: node "a" (Neg) is dead: no output reaches a graph output',
 * ]);
 * ```
 */
export function onnxStructureProblems(bytes: Uint8Array): string[] {
  const model = onnx.ModelProto.decode(bytes);
  const problems: string[] = [];
  checkGraph(model.graph ?? {}, "main graph", new Set(), problems);
  return problems;
}

function checkGraph(graph: IGraphProto, where: string, outer: ReadonlySet<string>, problems: string[]): void {
  const nodes = graph.node ?? [];
  const defined = new Set(outer);
  for (const v of graph.input ?? []) defined.add(v.name ?? "");
  for (const t of graph.initializer ?? []) defined.add(t.name ?? "");
  defined.add("");
  const names = new Set<string>();
  for (const node of nodes) {
    const name = node.name ?? "";
    if (name !== "" && names.has(name)) problems.push(`${where}: two nodes are named "${name}"`);
    names.add(name);
    for (const input of node.input ?? []) {
      if (!defined.has(input)) {
        problems.push(`${where}: node "${name}" (${node.opType}) reads "${input}" before it is defined`);
      }
    }
    for (const a of node.attribute ?? []) {
      for (const sub of [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]) {
        checkGraph(sub, `subgraph "${sub.name}" of node "${name}"`, defined, problems);
      }
    }
    for (const output of node.output ?? []) defined.add(output);
  }
  // Liveness backwards from the outputs; a subgraph's reads of outer values keep them alive.
  const live = new Set((graph.output ?? []).map((v) => v.name ?? ""));
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    if (!(node.output ?? []).some((o) => live.has(o))) {
      problems.push(`${where}: node "${node.name ?? ""}" (${node.opType}) is dead: no output reaches a graph output`);
      continue;
    }
    for (const input of node.input ?? []) live.add(input);
    for (const a of node.attribute ?? []) {
      for (const sub of [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]) {
        for (const name of outerReads(sub)) live.add(name);
      }
    }
  }
}

/** Every name a subgraph's nodes read (a superset of its reads of outer values: enough for liveness). */
function outerReads(graph: IGraphProto): string[] {
  return (graph.node ?? []).flatMap((n) => [
    ...(n.input ?? []),
    ...(n.attribute ?? []).flatMap((a) => [...(a.g ? [a.g] : []), ...(a.graphs ?? [])].flatMap(outerReads)),
  ]);
}

const PYTHON = "/usr/bin/python3";

/**
 * Checks a model file with the checker of the installed onnx (`full_check=True`); prints `OK`, or `SKIP <why>` when
 * the model's IR version or default-domain opset is newer than that checker knows (onnx 1.12: IR 8, opset 17).
 */
const CHECKER = `
import sys, onnx
from onnx import checker, defs
m = onnx.load_from_string(sys.stdin.buffer.read())
opset = max([o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] or [0])
if m.ir_version > onnx.IR_VERSION or opset > defs.onnx_opset_version():
    print(f"SKIP IR version {m.ir_version} / opset {opset}: the checker of onnx {onnx.__version__} knows IR <= {onnx.IR_VERSION}, opset <= {defs.onnx_opset_version()}")
else:
    checker.check_model(m, full_check=True)
    print("OK")
`;

/** True when Debian's python3 can import onnx (the package python3-onnx). */
export async function onnxCheckerAvailable(): Promise<boolean> {
  try {
    const out = await new Deno.Command(PYTHON, { args: ["-c", "import onnx.checker"], stdout: "null", stderr: "null" })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

/**
 * Run `onnx.checker.check_model(full_check=True)` on a self-contained model: `"OK"`, or `"SKIP ..."` when the
 * checker is too old for the model.
 *
 * @throws {Error} With the checker's last line when it rejects the model.
 */
export async function onnxChecker(bytes: Uint8Array): Promise<string> {
  const child = new Deno.Command(PYTHON, { args: ["-c", CHECKER], stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn();
  const writer = child.stdin.getWriter();
  await writer.write(bytes);
  await writer.close();
  const out = await child.output();
  const text = new TextDecoder();
  if (!out.success) {
    throw new Error(`onnx.checker rejected the model: ${text.decode(out.stderr).trim().split("\n").pop()}`);
  }
  return text.decode(out.stdout).trim();
}
