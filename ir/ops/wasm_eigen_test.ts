import assert from "node:assert/strict";
import { mulberry32 } from "../../tests/tensor_compare.ts";
import { type EigenKernels, eigenKernels, scalarEigenKernels } from "./wasm_eigen.ts";

/** Both kernel sets over the same random memory contents (the first 4096 doubles). */
function pair(seed: number): { simd: EigenKernels; scalar: EigenKernels; heaps: () => [Float64Array, Float64Array] } {
  const simd = eigenKernels();
  const scalar = scalarEigenKernels();
  const uniform = mulberry32(seed), random = () => 2 * uniform() - 1; // ir/ tests import nothing from passes/
  const data = Float64Array.from({ length: 4096 }, () => random());
  new Float64Array(simd.memory.buffer, 0, 4096).set(data);
  new Float64Array(scalar.memory.buffer, 0, 4096).set(data);
  return {
    simd,
    scalar,
    heaps: () => [new Float64Array(simd.memory.buffer, 0, 4096), new Float64Array(scalar.memory.buffer, 0, 4096)],
  };
}

Deno.test("eigen kernels: SIMD rotations, rank-2 updates and axpy equal the scalar ones bit for bit; sums within rounding", () => {
  for (const len of [1, 2, 7, 64, 101]) {
    const { simd, scalar, heaps } = pair(len);
    // Odd element offsets (unaligned v128 accesses) and every tail.
    const [x, y, z] = [8 * 3, 8 * 700, 8 * 1401];
    for (const k of [simd, scalar]) {
      k.rank2Row(x, y, z, 0.3, -1.7, len);
      k.axpy(y, z, -0.25, len);
    }
    assert.deepEqual(...heaps());
    const dots = [simd, scalar].map((k) => k.dot(x, y, len));
    const symvs = [simd, scalar].map((k) => k.symvRow(x, y, z, 0.9, len));
    assert.deepEqual(...heaps()); // the e update is elementwise
    let bound = 0;
    const [h] = heaps();
    for (let i = 0; i < len; i++) bound += Math.abs(h[x / 8 + i] * h[y / 8 + i]);
    assert.ok(Math.abs(dots[0] - dots[1]) <= len * 2 ** -52 * bound, `dot, length ${len}`);
    assert.ok(Math.abs(symvs[0] - symvs[1]) <= len * 2 ** -52 * bound + 1e-300, `symvRow, length ${len}`);
  }
  // Rotations: 3 triples (row offset, c, s) at doubles 3000.., on a 20 x 10 matrix at double 100.
  const { simd, scalar, heaps } = pair(5);
  for (const k of [simd, scalar]) {
    const h = new Float64Array(k.memory.buffer, 0, 4096);
    h.set([8 * 10 * 3, 0.6, 0.8, 8 * 10 * 2, Math.SQRT1_2, -Math.SQRT1_2, 8 * 10 * 17, 1, 0], 3000);
    k.rotate(8 * 100, 8 * 10, 8 * 3000, 3, 5);
  }
  assert.deepEqual(...heaps());
});
