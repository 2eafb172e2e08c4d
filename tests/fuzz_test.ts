/**
 * A bounded, seeded slice of the fuzzer (`tests/fuzz.ts`) in CI: mutated models and side inputs through `compile()`
 * and the CLI must give a clean one-line error or a valid, deterministic result; never an engine message, a hang, a
 * partial output or a modified input. `FUZZ_SEED` picks another seed; `deno task fuzz` runs long.
 */
import assert from "node:assert/strict";
import { runCliFuzz, runFuzz } from "./fuzz_runner.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 2026);

Deno.test(`fuzz: 1,000 mutated models and side inputs through compile() (seed ${SEED})`, async () => {
  const result = await runFuzz({ seed: SEED, cases: 1000 });
  console.log(result.summary);
  assert.deepEqual(result.defects, []);
  assert.ok(result.counts.compiled > 30 && result.counts.error > 30, "the mutations reach both outcomes");
});

Deno.test(`fuzz: 44 CLI runs over links, shared paths and special files (seed ${SEED})`, async () => {
  const result = await runCliFuzz({ seed: SEED, cases: 44 });
  console.log(result.summary);
  assert.deepEqual(result.defects, []);
});
