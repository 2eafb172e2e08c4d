/** Mixed-precision width choice: the knapsack's unit rounding never costs the budget it was given. */
import assert from "node:assert/strict";
import { chooseWidths } from "./bfp_precision.ts";

const WIDTHS = [4, 5, 6, 7, 8, 9, 10, 11, 12];
// An MLP's three layers (weights 200,960 / 32,896 / 1,290) with NSR proportional to the weight count: one width
// everywhere is the exact optimum at an integer average (equal marginal NSR per bit).
const COST = [200_960, 32_896, 1_290];
const NSR = COST.map((c) => WIDTHS.map((w) => c * 4 ** -w));
const average = (chosen: number[]): number =>
  chosen.reduce((s, i, l) => s + COST[l] * WIDTHS[i], 0) / COST.reduce((a, b) => a + b, 0);

Deno.test("chooseWidths: one width everywhere stays on offer at an integer average despite the unit rounding", () => {
  for (const bits of [5, 6, 8, 11]) {
    const chosen = chooseWidths(NSR, COST, WIDTHS, { averageBits: bits, targetNsr: 0 });
    assert.deepEqual(chosen.map((i) => WIDTHS[i]), [bits, bits, bits], `average ${bits}`);
  }
});

Deno.test("chooseWidths: the exact average never exceeds the budget, and beats one width everywhere", () => {
  // Every fractional budget: within it, and never worse than the best single width that fits.
  for (let bits = 4; bits <= 12; bits += 0.37) {
    const c = chooseWidths(NSR, COST, WIDTHS, { averageBits: bits, targetNsr: 0 });
    assert.ok(average(c) <= bits + 1e-12, `${bits}: ${average(c)}`);
    const uniform = WIDTHS.filter((w) => w <= bits).at(-1)!;
    const sum = (ch: number[]): number => ch.reduce((s, i, l) => s + NSR[l][i], 0);
    assert.ok(sum(c) <= sum(COST.map(() => WIDTHS.indexOf(uniform))) * (1 + 1e-12), `${bits}`);
  }
});

Deno.test("chooseWidths: with a target, the cheapest choice that reaches it and truly fits", () => {
  const target = NSR.reduce((s, row) => s + row[WIDTHS.indexOf(8)], 0); // exactly 8 bits everywhere
  const chosen = chooseWidths(NSR, COST, WIDTHS, { averageBits: 0, targetNsr: target * 1.000001 });
  assert.deepEqual(chosen.map((i) => WIDTHS[i]), [8, 8, 8]);
  // Within an average too small for the target: the least NSR there.
  const capped = chooseWidths(NSR, COST, WIDTHS, { averageBits: 6, targetNsr: target });
  assert.deepEqual(capped.map((i) => WIDTHS[i]), [6, 6, 6]);
});
