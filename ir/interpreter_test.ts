import assert from "node:assert/strict";
import type { Attribute } from "./attributes.ts";
import { Graph, Op, Value } from "./graph.ts";
import { interpret, Interpreter } from "./interpreter.ts";
import { Module } from "./module.ts";
import { builtinOps } from "./builtin_ops.ts";
import { OpRegistry } from "./op_def.ts";
import { float32Tensor } from "./tensor.ts";
import { inferShapes } from "./shape.ts";
import { releasePool, setThreadCount, startWorkers, threadCount, workerPartCount } from "./parallel.ts";
import { mulberry32 } from "../tests/tensor_compare.ts";

/** `y = Relu(Neg(x) + w)`, with the intermediate values to probe. */
function net(): { m: Module; x: Value; w: Value; t: Value; s: Value } {
  const g = new Graph();
  const x = g.addInput(new Value("x", { elem: "f32", shape: [3] }));
  const w = g.addConstant("w", float32Tensor([3], [1, 1, 1]), { elem: "f32", shape: [3] });
  const t = g.addOp(new Op({ name: "n", type: "Neg", operands: [x], results: [new Value("t")] })).result;
  const s = g.addOp(new Op({ name: "a", type: "Add", operands: [t, w], results: [new Value("s")] })).result;
  g.outputs.push(g.addOp(new Op({ name: "r", type: "Relu", operands: [s], results: [new Value("y")] })).result);
  return { m: new Module(g), x, w, t, s };
}

Deno.test("probes return intermediate values, inputs and constants without editing graph.outputs", () => {
  const { m, x, w, t, s } = net();
  const run = new Interpreter(m, { probes: [t, s, x, w] });
  for (const input of [[1, 2, -3], [0, 0, 0]]) {
    const out = run.run({ x: float32Tensor([3], input) });
    assert.deepEqual(Object.keys(out), ["y", "t", "s", "x", "w"]);
    assert.deepEqual([...out.t.data], input.map((v) => -v));
    assert.deepEqual([...out.s.data], input.map((v) => 1 - v));
    assert.deepEqual([...out.w.data], [1, 1, 1]);
  }
  assert.deepEqual(m.graph.outputs.map((v) => v.name), ["y"]);
  const { y, t: probed } = interpret(m, { x: float32Tensor([3], [2, 0, -2]) }, { probes: [t] });
  assert.deepEqual([...y.data], [0, 1, 3]);
  assert.deepEqual([...probed.data], [-2, -0, 2]);
});

Deno.test("a probe that is also a graph output is returned once", () => {
  const { m } = net();
  const y = m.graph.outputs[0];
  assert.deepEqual(Object.keys(new Interpreter(m, { probes: [y] }).run({ x: float32Tensor([3], [1, 2, 3]) })), ["y"]);
});

Deno.test("a probe outside the main graph is refused by name", () => {
  const { m } = net();
  const stray = new Graph("other").addInput(new Value("z"));
  assert.throws(() => new Interpreter(m, { probes: [stray] }), { message: 'probe "z" is not a value of graph "main"' });
});

/** Built-in ops, with Neg recording the storage of each result it makes. */
function recordingNeg(made: ArrayBufferLike[]): OpRegistry {
  const neg = builtinOps.get({ type: "Neg", domain: "" })!;
  const registry = new OpRegistry(builtinOps.all().filter((d) => d !== neg));
  registry.add({
    ...neg,
    interpret(op, inputs, ctx) {
      const out = neg.interpret!(op, inputs, ctx);
      made.push((out[0].data as Float32Array).buffer);
      return out;
    },
  });
  return registry;
}

Deno.test("an elementwise op writes its result into an operand that dies there, never into inputs or constants", () => {
  const { m } = net();
  const made: ArrayBufferLike[] = [];
  const x = float32Tensor([3], [1, 2, -3]);
  const w = m.graph.constants[0].constant!;
  const run = new Interpreter(m, { registry: recordingNeg(made) });
  for (let k = 0; k < 2; k++) {
    const { y } = run.run({ x });
    assert.deepEqual([...y.data], [0, 0, 4]);
    // Neg's result died at Add, whose result died at Relu: one storage for all three.
    assert.equal((y.data as Float32Array).buffer, made[k]);
  }
  assert.deepEqual([...x.data], [1, 2, -3]);
  assert.deepEqual([...w.data], [1, 1, 1]);
});

Deno.test("storage shared with a live value, an attribute or a probe is not overwritten", () => {
  const g = new Graph();
  const x = g.addInput(new Value("x", { elem: "f32", shape: [2, 2] }));
  const shape = g.addConstant("shape", { dtype: "i64", shape: [1], data: new BigInt64Array([4n]) }, {
    elem: "i64",
    shape: [1],
  });
  const t = g.addOp(new Op({ name: "n", type: "Neg", operands: [x], results: [new Value("t")] })).result;
  // r views t's storage and dies at Relu while t lives on to Add.
  const r = g.addOp(new Op({ name: "v", type: "Reshape", operands: [t, shape], results: [new Value("r")] })).result;
  const u = g.addOp(new Op({ name: "u", type: "Relu", operands: [r], results: [new Value("u")] })).result;
  const c = g.addOp(
    new Op({
      name: "c",
      type: "Constant",
      operands: [],
      results: [new Value("c")],
      attributes: [["value", { kind: "tensor", value: float32Tensor([2, 2], [1, 2, 3, 4]) }]],
    }),
  ).result;
  const e = g.addOp(new Op({ name: "e", type: "Neg", operands: [c], results: [new Value("e")] })).result;
  const s = g.addOp(new Op({ name: "s", type: "Add", operands: [t, e], results: [new Value("s")] })).result;
  g.outputs.push(u, s);
  const run = new Interpreter(new Module(g));
  for (let k = 0; k < 2; k++) {
    const out = run.run({ x: float32Tensor([2, 2], [1, -2, 3, -4]) });
    assert.deepEqual([...out.u.data], [0, 2, 0, 4]);
    assert.deepEqual([...out.s.data], [-2, 0, -6, 0]);
  }
});

Deno.test("a kernel that writes every element gets the storage of a value dropped earlier in the run", () => {
  const g = new Graph();
  const x = g.addInput(new Value("x", { elem: "f32", shape: [1, 1, 2, 2] }));
  const t = g.addOp(new Op({ name: "n", type: "Neg", operands: [x], results: [new Value("t")] })).result;
  const unit: [string, Attribute] = ["kernel_shape", { kind: "ints", value: [1, 1] }];
  const m = g.addOp(
    new Op({ name: "m", type: "MaxPool", operands: [t], results: [new Value("m")], attributes: [unit] }),
  );
  // t is dropped after MaxPool: AveragePool's result reuses its storage, whose old contents must not show.
  const y = g.addOp(
    new Op({ name: "a", type: "AveragePool", operands: [m.result], results: [new Value("y")], attributes: [unit] }),
  );
  g.outputs.push(y.result);
  const made: ArrayBufferLike[] = [];
  const run = new Interpreter(new Module(g), { registry: recordingNeg(made) });
  for (let k = 0; k < 2; k++) {
    const out = run.run({ x: float32Tensor([1, 1, 2, 2], [1 + k, -2, 3, -4]) }).y;
    assert.deepEqual([...out.data], [-1 - k, 2, -3, 4]);
    assert.equal((out.data as Float32Array).buffer, made[k]);
  }
});

Deno.test("stopAtProbes runs only up to the probes and returns only them", () => {
  const { m, t } = net();
  let ran = 0;
  // Count kernel calls: the ops after the probe must not run.
  const registry = new OpRegistry(
    builtinOps.all().map((def) =>
      def.interpret === undefined
        ? def
        : { ...def, interpret: (op, inputs, c) => (ran++, def.interpret!(op, inputs, c)) }
    ),
  );
  const out = new Interpreter(m, { probes: [t], stopAtProbes: true, registry }).run({
    x: float32Tensor([3], [1, -2, 3]),
  });
  assert.deepEqual(Object.keys(out), ["t"]);
  assert.deepEqual([...out.t.data], [-1, 2, -3]);
  assert.equal(ran, 1);
});

/** Conv (+ bias) into Relu or Clip, over a plain, a depthwise strided, a pointwise and a one-position conv. */
function convChain(): Module {
  const rnd = mulberry32(41);
  const g = new Graph();
  const f32 = (shape: number[]) =>
    float32Tensor(shape, Array.from({ length: shape.reduce((a, b) => a * b) }, () => rnd() * 2 - 1));
  const constant = (name: string, shape: number[]) => g.addConstant(name, f32(shape), { elem: "f32", shape });
  const scalar = (name: string, v: number) => g.addConstant(name, float32Tensor([], [v]), { elem: "f32", shape: [] });
  let x = g.addInput(new Value("x", { elem: "f32", shape: [2, 32, 30, 30] }));
  const layer = (
    name: string,
    w: number[],
    attrs: [string, Attribute][],
    bias: boolean,
    act: "Relu" | "Clip" | "ClipMax",
  ) => {
    const operands = [x, constant(`${name}_w`, w), ...(bias ? [constant(`${name}_b`, [w[0]])] : [])];
    const c = g.addOp(
      new Op({ name, type: "Conv", operands, results: [new Value(`${name}_y`)], attributes: new Map(attrs) }),
    );
    const bounds = act === "Relu"
      ? []
      : act === "Clip"
      ? [scalar(`${name}_lo`, 0), scalar(`${name}_hi`, 0.5)]
      : [null, scalar(`${name}_hi`, 0.25)];
    x = g.addOp(
      new Op({
        name: `${name}_a`,
        type: act === "Relu" ? "Relu" : "Clip",
        operands: [c.result, ...bounds],
        results: [new Value(`${name}_z`)],
      }),
    ).result;
  };
  const ints = (v: number[]): Attribute => ({ kind: "ints", value: v });
  layer("c1", [64, 32, 3, 3], [["pads", ints([1, 1, 1, 1])]], true, "Relu"); // large enough for the worker pool
  layer(
    "dw",
    [64, 1, 3, 3],
    [["group", { kind: "int", value: 64 }], ["strides", ints([2, 2])], ["pads", ints([1, 1, 1, 1])]],
    true,
    "Clip",
  );
  layer("pw", [24, 64, 1, 1], [], false, "ClipMax");
  layer("head", [10, 24, 15, 15], [], true, "Relu"); // one output position: dot products
  g.outputs.push(x);
  const m = new Module(g);
  inferShapes(m);
  return m;
}

Deno.test("Conv fused with the Relu or Clip after it gives the same bits as the two ops, on 1 and 2 threads", async () => {
  const m = convChain();
  const rnd = mulberry32(42);
  const x = float32Tensor([2, 32, 30, 30], Array.from({ length: 2 * 32 * 900 }, () => rnd() * 2 - 1));
  // A registry whose Relu and Clip are copies of the built-ins: nothing fuses.
  const registry = new OpRegistry(builtinOps.all().map((d) => (d.type === "Relu" || d.type === "Clip" ? { ...d } : d)));
  const plain = new Interpreter(m, { registry });
  assert.equal(plain.fusedOps, 0);
  const want = plain.run({ x }).head_z;
  const fused = new Interpreter(m);
  assert.equal(fused.fusedOps, 4);
  const before = threadCount();
  try {
    for (const threads of [1, 2]) {
      setThreadCount(threads);
      if (threads === 2) assert.equal(await startWorkers(), 1);
      const parts = workerPartCount();
      // With 2 threads, repeat until the worker has computed part of a product (the caller may take every part).
      for (let tries = 0; tries < 50; tries++) {
        assert.deepEqual(fused.run({ x }).head_z, want, `${threads} threads`);
        if (threads === 1 || workerPartCount() > parts) break;
      }
      if (threads === 2) assert.ok(workerPartCount() > parts, "the worker computed no part");
    }
  } finally {
    setThreadCount(before);
    releasePool();
  }
  // A probe on a Conv's result keeps that Conv and its Relu apart.
  const probed = new Interpreter(m, { probes: [m.graph.ops[0].result] });
  assert.equal(probed.fusedOps, 3);
  assert.deepEqual(probed.run({ x }).head_z, want);
});

Deno.test("Sigmoid then Mul by its operand (SiLU) fused gives the same bits as the two ops", () => {
  const rnd = mulberry32(43);
  const n = 2 * 16384 + 7; // several SIMD chunks and a tail of 3
  const g = new Graph();
  let x = g.addInput(new Value("x", { elem: "f32", shape: [n] }));
  for (const [name, swap] of [["a", false], ["b", true]] as const) {
    const s = g.addOp(new Op({ name: `${name}_s`, type: "Sigmoid", operands: [x], results: [new Value(`${name}_t`)] }));
    const operands = swap ? [s.result, x] : [x, s.result];
    x = g.addOp(new Op({ name: `${name}_m`, type: "Mul", operands, results: [new Value(`${name}_y`)] })).result;
  }
  g.outputs.push(x);
  const m = new Module(g);
  inferShapes(m);
  const input = float32Tensor([n], Array.from({ length: n }, () => (rnd() * 2 - 1) * 20));
  const registry = new OpRegistry(builtinOps.all().map((d) => (d.type === "Mul" ? { ...d } : d)));
  const plain = new Interpreter(m, { registry });
  const fused = new Interpreter(m);
  assert.deepEqual([plain.fusedOps, fused.fusedOps], [0, 2]);
  assert.deepEqual(fused.run({ x: input }).b_y, plain.run({ x: input }).b_y);
});

Deno.test("hard-swish written as Add, Clip, Mul, Div (or Mul) fused gives the same bits as the four ops", () => {
  const rnd = mulberry32(44);
  const n = 4099;
  const g = new Graph();
  const x = g.addInput(new Value("x", { elem: "f32", shape: [1, n] }));
  const scalar = (name: string, v: number, shape: number[] = []) =>
    g.addConstant(name, float32Tensor(shape, [v]), { elem: "f32", shape });
  const op = (name: string, type: string, operands: Value[], attributes: [string, Attribute][] = []) =>
    g.addOp(new Op({ name, type, operands, results: [new Value(`${name}_y`)], attributes })).result;
  // Four spellings: constant first or second, Clip bounds as operands (opset 13), Relu, a multiply by 1/6 at the end.
  let v = x;
  const chains: Value[] = [];
  for (
    const [k, constantFirst, divide] of [[0, false, true], [1, true, false], [2, false, false], [
      3,
      true,
      true,
    ]] as const
  ) {
    const three = scalar(`three${k}`, 3, k === 2 ? [1, 1] : []);
    const a = op(`add${k}`, "Add", constantFirst ? [three, v] : [v, three]);
    const c = k === 3
      ? op(`relu${k}`, "Relu", [a])
      : op(`clip${k}`, "Clip", [a, scalar(`lo${k}`, 0), scalar(`hi${k}`, 6)]);
    const m = op(`mul${k}`, "Mul", constantFirst ? [c, v] : [v, c]);
    const s = scalar(`six${k}`, divide ? 6 : 1 / 6);
    v = op(`end${k}`, divide ? "Div" : "Mul", divide || !constantFirst ? [m, s] : [s, m]);
    chains.push(v);
  }
  // x is read again at the end: the first chain may not overwrite it.
  g.outputs.push(op("sum", "Add", [v, x]));
  const m = new Module(g, [["", 13]]);
  inferShapes(m);
  const values = Array.from({ length: n }, () => (rnd() * 2 - 1) * 8);
  values.splice(0, 9, NaN, Infinity, -Infinity, -0, 0, -3, 3, 2 ** -140, 1e30); // specials, the bounds, a subnormal
  const input = float32Tensor([1, n], values);
  const registry = new OpRegistry(builtinOps.all().map((d) => (d.type === "Div" || d.type === "Mul" ? { ...d } : d)));
  const plain = new Interpreter(m, { registry });
  const fused = new Interpreter(m);
  assert.deepEqual([plain.fusedOps, fused.fusedOps], [0, 12]);
  const want = plain.run({ x: input }).sum_y;
  assert.deepEqual(fused.run({ x: input }).sum_y, want);
  assert.deepEqual(input.data, Float32Array.from(values), "the input is left as it was");
  // A probe inside a chain keeps that chain apart; the others still fuse.
  const probed = new Interpreter(m, { probes: [chains[0].producer!.operands[0]!] });
  assert.equal(probed.fusedOps, 9);
  assert.deepEqual(probed.run({ x: input }).sum_y, want);
});
