/**
 * The ONNX target: writes the compiled module back as an ONNX model
 * (`<model>.onnx`), optionally with large weights in a side file
 * (`<model>.onnx.data`, ONNX external data). Opset imports are written as the
 * module holds them: the input's, raised only by passes that introduce newer ops.
 * A BFP-lowered module (ops of domain `ai.bfp`) is first legalized to standard
 * ONNX at opset 21 (`bfp_onnx.ts`). What is written is a copy holding only
 * what reaches the outputs, with one name per node (onnxruntime refuses two
 * nodes of one name, and has crashed on dead nodes of BFP models).
 * @module
 */
import type { Graph } from "../../ir/graph.ts";
import type { Module } from "../../ir/module.ts";
import { exportOnnxFiles } from "../../ir/onnx/export.ts";
import { cloneModule, subgraphsOf } from "../../ir/rewriter.ts";
import { eliminateDeadCode } from "../../passes/dce.ts";
import { type Artifacts, defineTarget, type Target, type TargetContext } from "../target.ts";
import { containsBfpOps, legalizeBfp } from "./bfp_onnx.ts";

/** Options of the `onnx` target. */
export const onnxTargetOptions = {
  externalData: {
    kind: "bool",
    default: false,
    doc: "Store initializers of at least `threshold` bytes in <model>.onnx.data (ONNX external data)",
  },
  threshold: {
    kind: "int",
    default: 1024,
    min: 1,
    doc: "Smallest initializer, in bytes, moved to the external data file",
  },
} as const;

/**
 * `onnx`: the module as an ONNX `ModelProto`, byte-identical for the same
 * module. With `external-data=true` the initializers of at least `threshold`
 * bytes go to `<model>.onnx.data` at 64-byte aligned offsets; when none is
 * that large, no side file is written.
 *
 * @example Emit a one-op model
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { onnxTarget } from "./onnx_target.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [4] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] })).result);
 * const artifacts = await onnxTarget.emit(new Module(g), { externalData: false, threshold: 1024 }, {
 *   modelName: "tiny",
 *   emit: () => {},
 * });
 * assert.deepEqual([...artifacts.keys()], ["tiny.onnx"]);
 * ```
 */
export const onnxTarget: Target<typeof onnxTargetOptions> = defineTarget({
  name: "onnx",
  summary: "ONNX model (<model>.onnx, large weights optionally in <model>.onnx.data)",
  options: onnxTargetOptions,
  emit(input, { externalData, threshold }, ctx): Artifacts {
    const modelName = `${ctx.modelName}.onnx`;
    const module = exportedModule(input, ctx);
    if (!externalData) return exportOnnxFiles(module, { modelName });
    const location = `${modelName}.data`;
    const files = exportOnnxFiles(module, { modelName, externalData: { location, threshold } });
    // No initializer reached the threshold: the model references no side file, so writing an empty one would only mislead.
    if (files.get(location)?.byteLength === 0) files.delete(location);
    return files;
  },
});

/**
 * The module as the ONNX target writes it, a copy (`input` is not changed):
 * dead ops and unused constants removed (`dce`'s {@linkcode eliminateDeadCode},
 * before and after BFP legalization), then any op name that repeats an
 * earlier one renamed `name.1`, `name.2`, ... with a warning: passes name the
 * ops they create with {@linkcode Graph.freshOpName}, so a rename means that a
 * pass or the input model broke that rule.
 *
 * @example A dead op is not exported
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../../ir/graph.ts";
 * import { Module } from "../../ir/module.ts";
 * import { exportedModule } from "./onnx_target.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [4] }));
 * g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [x], results: [new Value("y")] })).result);
 * g.addOp(new Op({ name: "dead", type: "Neg", operands: [x], results: [new Value("n")] }));
 * const out = exportedModule(new Module(g), { modelName: "m", emit: () => {} });
 * assert.deepEqual(out.graph.ops.map((op) => op.name), ["r"]);
 * assert.equal(g.ops.length, 2);
 * ```
 */
export function exportedModule(input: Module, ctx: TargetContext): Module {
  const live = cloneModule(input);
  eliminateDeadCode(live.graph);
  const module = containsBfpOps(live) ? legalizeBfp(live) : live;
  eliminateDeadCode(module.graph);
  uniqueOpNames(module.graph, new Set(), ctx);
  return module;
}

/** Rename, in place, every op whose non-empty name an earlier op of the graph or of an enclosing graph has. */
function uniqueOpNames(graph: Graph, enclosing: ReadonlySet<string>, ctx: TargetContext): void {
  const seen = new Set(enclosing);
  for (const op of graph.ops) {
    if (op.name !== "" && seen.has(op.name)) {
      let name = op.name;
      for (let i = 1; seen.has(name) || graph.ops.some((o) => o !== op && o.name === name); i++) {
        name = `${op.name}.${i}`;
      }
      ctx.emit(
        "warning",
        `two nodes are named "${op.name}"; the ${op.type} one is exported as "${name}" (ONNX node names must be unique)`,
      );
      op.name = name;
    }
    seen.add(op.name);
  }
  for (const op of graph.ops) {
    for (const a of op.attributes.values()) for (const sub of subgraphsOf(a)) uniqueOpNames(sub, seen, ctx);
  }
}
