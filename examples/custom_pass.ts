/**
 * An example plugin: a third-party pass, `clip-to-relu`, that rewrites
 * `Clip(x, min=0)` with no upper bound into `Relu(x)`. Load it with
 * `deno run --allow-read --allow-write compile.ts model.onnx --plugin ./examples/custom_pass.ts --passes clip-to-relu,dce`
 * or hand {@linkcode plugin} to `compile()`.
 * @module
 */
// In another project: import { ... } from "jsr:@cnnc/compiler";
import {
  definePass,
  elementTypeToString,
  isTensorType,
  type Module,
  Op,
  type Pass,
  type Plugin,
  PLUGIN_API_VERSION,
  replaceOp,
  type Tensor,
  toFloat64,
  Value,
} from "../mod.ts";

/** Options of `clip-to-relu`. */
export const clipToReluOptions = {
  minTolerance: {
    kind: "number",
    default: 0,
    min: 0,
    doc: "Also rewrite Clips whose lower bound is within this of 0 (outputs then move by at most this much)",
  },
} as const;

/** Largest finite value per floating element type: a `max` at or above it bounds nothing a finite input reaches. */
const LARGEST_FINITE: Readonly<Record<string, number>> = {
  f16: 65504,
  bf16: 3.3895313892515355e38,
  f32: 3.4028234663852886e38,
  f64: Number.MAX_VALUE,
};

/** Element types Relu accepts: float, double, float16 (Relu-6); bfloat16 and signed integers too from Relu-14. */
function reluAccepts(elem: string, opset: number): boolean {
  if (elem === "f32" || elem === "f64" || elem === "f16") return true;
  return opset >= 14 && ["bf16", "i8", "i16", "i32", "i64"].includes(elem);
}

/** The single number held by a bound operand: an initializer or a `Constant` op's value; undefined when not constant. */
function constantBound(v: Value): number | undefined {
  let t: Tensor | null | undefined = v.constant;
  const producer = v.producer;
  if (t === null && producer !== null && producer.type === "Constant" && producer.domain === "") {
    t = producer.tensor("value");
    const f = producer.float("value_float");
    if (t === undefined && f !== undefined) return f;
  }
  if (t === null || t === undefined || t.data.length !== 1 || Array.isArray(t.data)) return undefined;
  return toFloat64(t)[0];
}

/**
 * Why `clip` cannot become a Relu, or null when it can. `lower`/`upper` are
 * the bounds: numbers, `undefined` when absent, NaN when not a constant.
 */
function keepReason(
  elem: string,
  lower: number | undefined,
  upper: number | undefined,
  tolerance: number,
): string | null {
  if (lower === undefined) return "it has no lower bound";
  if (Number.isNaN(lower)) return "its lower bound is not a constant";
  if (Math.abs(lower) > tolerance) return `its lower bound is ${lower}`;
  if (upper === undefined || upper === Infinity) return null;
  if (Number.isNaN(upper)) return "its upper bound is not a constant";
  // A bound at the type's largest finite value only differs from none at +inf inputs; ONNX Clip-6's default is it.
  if (upper >= (LARGEST_FINITE[elem] ?? Infinity)) return null;
  return `its upper bound is ${upper}`;
}

/** The bounds of a Clip in the form its opset uses: attributes before Clip-11, optional operands from 11. */
function clipBounds(op: Op, opset: number): { lower: number | undefined; upper: number | undefined } {
  if (opset < 11) {
    // Clip-6: `min` and `max` are float attributes; an absent max defaults to the largest float.
    return { lower: op.float("min"), upper: op.float("max") };
  }
  const operand = (i: number): number | undefined => {
    const v = op.operand(i);
    // An empty name is an omitted optional input (ONNX IR spec); the importer gives null.
    return v === null ? undefined : constantBound(v) ?? NaN;
  };
  return { lower: operand(1), upper: operand(2) };
}

/**
 * `clip-to-relu`: `Clip(x, min=0)` with no upper bound (absent, +inf or the
 * element type's largest finite value) becomes `Relu(x)`, keeping the op's
 * name and result. Handles both forms ONNX has had: bounds as attributes
 * (Clip-6 to Clip-10) and as optional scalar operands (Clip-11 on), where
 * they must be initializers or `Constant` outputs. Only element types Relu
 * accepts at the module's opset are rewritten; Clip before opset 6 is left
 * alone. Bound constants left unused are for `dce` to remove.
 *
 * Statistics: `clips-replaced`, `clips-kept`.
 *
 * @example Rewrite a ReLU spelled as a Clip, through compile()
 * ```ts
 * import assert from "node:assert/strict";
 * import { attr, compile, exportOnnx, Graph, importOnnx, Module, Op, Value } from "../mod.ts";
 * import { plugin } from "./custom_pass.ts";
 *
 * // y = Clip(x, min=0) in the Clip-6 attribute form (opset 10).
 * const g = new Graph();
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [4] }));
 * const clip = new Op({ name: "c", type: "Clip", operands: [x], results: [new Value("y")] });
 * clip.attributes.set("min", attr.float(0));
 * g.outputs.push(g.addOp(clip).result);
 *
 * const { artifacts, report } = await compile(exportOnnx(new Module(g, [["", 10]])), {
 *   passes: "clip-to-relu",
 *   plugins: [plugin],
 * });
 * assert.deepEqual(report.passes[0].stats, { "clips-replaced": 1, "clips-kept": 0 });
 * assert.equal(importOnnx(artifacts.get("model.onnx")!).graph.ops[0].type, "Relu");
 * ```
 */
export const clipToReluPass: Pass<typeof clipToReluOptions> = definePass({
  name: "clip-to-relu",
  summary: "Rewrite Clip(x, min=0) without an upper bound into Relu(x)",
  options: clipToReluOptions,
  run(module: Module, { minTolerance }, ctx): boolean {
    const opset = module.opset("");
    let replaced = 0;
    let kept = 0;
    for (const op of [...module.graph.ops]) {
      if (op.type !== "Clip" || op.domain !== "") continue;
      const input = op.operand(0);
      const elem = input !== null && isTensorType(input.type) ? elementTypeToString(input.type.elem) : null;
      let reason: string | null;
      if (opset < 6) reason = `Clip-${opset} (legacy consumed_inputs form) is not handled`;
      else if (elem === null) reason = "its input type is unknown";
      else if (!reluAccepts(elem, opset)) reason = `Relu-${opset} does not accept ${elem}`;
      else {
        const { lower, upper } = clipBounds(op, opset);
        reason = keepReason(elem, lower, upper, minTolerance);
      }
      if (reason !== null) {
        kept++;
        ctx.log(`kept op "${op.name}": ${reason}`);
        continue;
      }
      // The Relu takes over the Clip's uses and graph-output slots, and the op and result keep their names,
      // so graph outputs and the report's per-layer table keep them too.
      const y = op.result;
      replaceOp(op, new Op({ name: op.name, type: "Relu", operands: [input], results: [new Value(y.name, y.type)] }));
      replaced++;
    }
    ctx.stat("clips-replaced", replaced);
    ctx.stat("clips-kept", kept);
    return replaced > 0;
  },
});

/** The plugin record `--plugin ./examples/custom_pass.ts` and `compile({ plugins })` take. */
export const plugin: Plugin = {
  name: "clip-to-relu",
  apiVersion: PLUGIN_API_VERSION,
  passes: [clipToReluPass],
};
