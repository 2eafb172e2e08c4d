/**
 * The static memory plan of the C target: every intermediate tensor gets an
 * offset in the caller's arena from its lifetime (the steps from the op that
 * writes it to the last op that reads it, both inclusive), and tensors whose
 * lifetimes do not overlap share memory.
 *
 * Placement is greedy by size (largest first; ties by earlier start, then
 * name): each buffer goes at the lowest aligned offset where it overlaps no
 * already placed buffer that is live at the same time. The plan states the
 * two reference figures it is judged by: the naive arena (every tensor its
 * own memory) and the lower bound (the largest total of the tensors live at
 * one step, each rounded up to the alignment), which no plan can beat.
 * @module
 */

/** One tensor to place. */
export interface BufferRequest {
  /** A unique name (the IR value's). */
  readonly name: string;
  /** Size in bytes (> 0). */
  readonly bytes: number;
  /** Step of the op that writes it. */
  readonly start: number;
  /** Step of the last op that reads it (>= start). */
  readonly end: number;
}

/** Where each tensor lives, and how good that is. */
export interface MemoryPlan {
  /** Offset in bytes of each request, by name (a multiple of the alignment). */
  readonly offsets: ReadonlyMap<string, number>;
  /** Arena size in bytes (a multiple of the alignment). */
  readonly arenaBytes: number;
  /** The sum of every tensor's aligned size: the arena without reuse. */
  readonly naiveBytes: number;
  /** The largest sum of aligned sizes of tensors live at one step. */
  readonly lowerBound: number;
}

const roundUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * Plan the arena for `requests`.
 *
 * @param alignment Every offset and size is rounded up to this (bytes, a power of two).
 * @throws {Error} For a request with no bytes, a lifetime that ends before it starts, or a repeated name.
 * @example Three tensors of a chain: the first and the third share memory
 * ```ts
 * import assert from "node:assert/strict";
 * import { planMemory } from "./memory_plan.ts";
 * const plan = planMemory([
 *   { name: "a", bytes: 64, start: 0, end: 1 },
 *   { name: "b", bytes: 32, start: 1, end: 2 },
 *   { name: "c", bytes: 64, start: 2, end: 3 },
 * ], 16);
 * assert.deepEqual([plan.arenaBytes, plan.lowerBound, plan.naiveBytes], [96, 96, 160]);
 * assert.equal(plan.offsets.get("a"), plan.offsets.get("c"));
 * ```
 */
export function planMemory(requests: readonly BufferRequest[], alignment: number): MemoryPlan {
  const names = new Set<string>();
  for (const r of requests) {
    if (!(r.bytes > 0)) throw new Error(`memory plan: tensor "${r.name}" has ${r.bytes} bytes`);
    if (!(r.end >= r.start)) throw new Error(`memory plan: tensor "${r.name}" ends (${r.end}) before it starts`);
    if (names.has(r.name)) throw new Error(`memory plan: tensor "${r.name}" is requested twice`);
    names.add(r.name);
  }
  const sized = requests.map((r) => ({ ...r, size: roundUp(r.bytes, alignment) }));
  const order = [...sized].sort((a, b) =>
    b.size - a.size || a.start - b.start || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  );
  const placed: { start: number; end: number; offset: number; size: number }[] = [];
  const offsets = new Map<string, number>();
  let arenaBytes = 0;
  for (const r of order) {
    // Live at the same time: the intervals overlap. Try offset 0, then the end of each such buffer, lowest first.
    const conflicts = placed.filter((p) => p.start <= r.end && r.start <= p.end).sort((a, b) => a.offset - b.offset);
    let offset = 0;
    for (const p of conflicts) {
      if (offset + r.size <= p.offset) break;
      offset = Math.max(offset, p.offset + p.size);
    }
    placed.push({ start: r.start, end: r.end, offset, size: r.size });
    offsets.set(r.name, offset);
    arenaBytes = Math.max(arenaBytes, offset + r.size);
  }
  // Lower bound: the live total at each step where a tensor starts (the total only grows at starts).
  let lowerBound = 0;
  for (const s of new Set(sized.map((r) => r.start))) {
    let live = 0;
    for (const r of sized) if (r.start <= s && s <= r.end) live += r.size;
    lowerBound = Math.max(lowerBound, live);
  }
  const naiveBytes = sized.reduce((sum, r) => sum + r.size, 0);
  return {
    offsets: new Map([...offsets].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    arenaBytes,
    naiveBytes,
    lowerBound,
  };
}
