import assert from "node:assert/strict";
import { type BfpFormat, bfpFormat, splitmix32 } from "./format.ts";
import { type BfpBlocking, quantizeBfp } from "./quantize.ts";

/** Float32 values whose blocks span many octaves, with zeros, subnormals and values on rounding ties. */
function awkwardValues(n: number, seed: number): Float32Array {
  const rng = splitmix32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = rng.next() / 4294967296;
    const sign = rng.next() & 1 ? -1 : 1;
    const kind = rng.next() % 16;
    if (kind === 0) out[i] = 0;
    else if (kind === 1) out[i] = sign * 1e-40; // subnormal
    else if (kind === 2) out[i] = sign * (1 + (rng.next() % 64) / 64) * 2 ** ((rng.next() % 10) - 5); // ties
    else if (kind === 3) out[i] = sign * 1.9999; // rounds past maxM: clamped
    else out[i] = sign * u * 2 ** ((rng.next() % 20) - 10);
  }
  return out;
}

Deno.test("float32 quantization (SIMD for long blocks) matches the float64 path bit for bit", () => {
  const cases: [BfpFormat, BfpBlocking, number][] = [
    [bfpFormat(), { length: 4608, block: 0 }, 6], // per-channel rows of VGG's 3x3x512
    [bfpFormat(), { length: 100, block: 0 }, 40], // 96 in SIMD and a tail of 4
    [bfpFormat(), { length: 40000, block: 0 }, 2], // longer than one staged chunk
    [bfpFormat(), { length: 256, block: 64 }, 20],
    [bfpFormat(), { length: 64, block: 32 }, 20], // short blocks stay in JavaScript
    [bfpFormat({ mantissaBits: 4 }), { length: 512, block: 0 }, 8],
    [bfpFormat({ exponentBits: 8 }), { length: 1024, block: 0 }, 8], // scales beyond float32 fall back
    [bfpFormat({ exponentBits: 3 }), { length: 128, block: 0 }, 16], // exponents clamp: overflow and underflow
    [bfpFormat({ exponentRule: "never-clamp" }), { length: 300, block: 0 }, 10],
  ];
  cases.forEach(([format, blocking, rows], k) => {
    const values = awkwardValues(blocking.length * rows, 100 + k);
    // Tiny rows exercise underflowing exponents, huge ones overflowing ones.
    for (let r = 0; r < rows; r += 3) values.subarray(r * blocking.length, (r + 1) * blocking.length).fill(3e-7);
    if (rows > 1) values[blocking.length] = 70000;
    const fast = quantizeBfp(values, format, blocking, "w");
    const reference = quantizeBfp(Float64Array.from(values), format, blocking, "w");
    const what = `case ${k}: ${JSON.stringify(blocking)}`;
    assert.deepEqual(fast.exponents, reference.exponents, what);
    assert.deepEqual(fast.mantissas, reference.mantissas, what);
    assert.equal(fast.saturated, reference.saturated, what);
    assert.equal(fast.overflowBlocks, reference.overflowBlocks, what);
    assert.equal(fast.underflowBlocks, reference.underflowBlocks, what);
  });
});

Deno.test("float32 quantization with a static exponent matches the float64 path", () => {
  const values = awkwardValues(4 * 512, 7);
  for (const e of [-3, 0, 2]) {
    const fast = quantizeBfp(values, bfpFormat(), { length: 512, block: 0 }, "w", e);
    const reference = quantizeBfp(Float64Array.from(values), bfpFormat(), { length: 512, block: 0 }, "w", e);
    assert.deepEqual(fast.mantissas, reference.mantissas);
    assert.equal(fast.saturated, reference.saturated);
    assert.equal(fast.overflowBlocks, reference.overflowBlocks);
  }
});

Deno.test("a NaN in a long float32 block is reported by index", () => {
  const values = new Float32Array(4608).fill(0.5);
  values[4000] = NaN;
  assert.throws(
    () => quantizeBfp(values, bfpFormat(), { length: 4608, block: 0 }, "w"),
    { message: 'BFP quantization of tensor "w": element 4000 is NaN (only finite values have a BFP form)' },
  );
});
