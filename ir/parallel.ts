/**
 * A pool of worker threads sharing memory with the calling thread, for kernels
 * that split their output into a fixed list of parts (GEMM today; convolutions,
 * SVD products and evaluation batches can add a {@linkcode ParallelTask}).
 * Threads claim parts as they come free, so a part's result must not depend on
 * which thread computes it: results are then bit-identical for any thread count.
 * The caller blocks (`Atomics.wait`) and computes parts itself; workers are
 * unref'd, so an idle pool never keeps the process alive.
 * @module
 */
import { isMainThread, Worker } from "node:worker_threads";

/** Work a worker can do: compute part `part` of a job described by `params`, reading and writing `arena`. */
export interface ParallelTask {
  /** Index of the task in the worker's task list (`ir/parallel_worker.ts`). */
  id: number;
  /** Compute one part; the arena holds the job's inputs and receives its outputs. */
  run(part: number, params: Float64Array, arena: SharedArrayBuffer): void;
}

/** What a worker is started with. */
export interface PoolChannels {
  /** {@linkcode Control} words. */
  control: SharedArrayBuffer;
  /** Float64 parameters of the current job. */
  params: SharedArrayBuffer;
  /** Growable shared memory for the jobs' operands. */
  arena: SharedArrayBuffer;
}

/** Slots of the control words (Int32). */
export const Control = {
  /** Job generation; workers sleep on it. */
  generation: 0,
  /** `(generation & 0xffff) << 16 | next unclaimed part`: claims of a finished job fail. */
  claim: 1,
  /** Parts of the current job. */
  parts: 2,
  /** Parts finished. */
  done: 3,
  /** Task id of the current job. */
  task: 4,
  /** Workers that have loaded their tasks and wait for jobs. */
  ready: 5,
  /** Per part from here: 1 computed by a worker, 2 failed in a worker (the caller recomputes it). */
  status: 8,
} as const;

/** Most parts one job can have. */
export const MAX_PARTS = 64;
/** Most parameters one job can have. */
export const MAX_PARAMS = 64;
/**
 * Largest arena (it only grows, until {@linkcode releasePool}): jobs needing
 * more are cut into slabs by their caller, or run on the calling thread alone.
 */
export const ARENA_MAX_BYTES = 1 << 27;

/**
 * Threads that parallel kernels use (the calling thread included). Default: the
 * `CNNC_THREADS` environment variable when env access is granted, else the
 * available cores capped at 4; 1 inside a worker.
 */
let threads = defaultThreads();
let arenaLimit = ARENA_MAX_BYTES;
let pool: {
  workers: Worker[];
  /** Per worker: settles when it is ready or has failed. */
  started: Promise<void>[];
  control: Int32Array;
  params: Float64Array;
  arena: SharedArrayBuffer;
} | null = null;
/** Parts computed by workers since the process started. */
let workerParts = 0;
/** Set when a worker cannot start (no read permission for its module, for one): the pool stays single-threaded. */
let unavailable = false;

function defaultThreads(): number {
  if (!isMainThread) return 1; // a task running in a worker never starts a pool of its own
  const cores = Math.max(1, Math.min(4, navigator.hardwareConcurrency ?? 1));
  try {
    if (Deno.permissions.querySync({ name: "env", variable: "CNNC_THREADS" }).state !== "granted") return cores;
    const text = Deno.env.get("CNNC_THREADS");
    const n = Number(text);
    return text !== undefined && Number.isInteger(n) && n >= 1 ? n : cores;
  } catch {
    return cores;
  }
}

/**
 * The number of threads parallel kernels use, the calling thread included (1:
 * everything runs on the calling thread).
 *
 * @returns The configured count.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { threadCount } from "./parallel.ts";
 * assert.ok(threadCount() >= 1);
 * ```
 */
export function threadCount(): number {
  return threads;
}

/**
 * Set the number of threads parallel kernels use, the calling thread included.
 * Lowering it stops the workers not needed (one stays asleep at 1: see
 * {@linkcode releasePool}); results do not depend on it.
 *
 * @param count A positive integer.
 *
 * @example Run everything on the calling thread
 * ```ts
 * import assert from "node:assert/strict";
 * import { setThreadCount, threadCount } from "./parallel.ts";
 * const before = threadCount();
 * setThreadCount(1);
 * assert.equal(threadCount(), 1);
 * setThreadCount(before);
 * ```
 */
export function setThreadCount(count: number): void {
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(`thread count must be a positive integer, got ${count}`);
  }
  threads = count;
  if (pool !== null) {
    // One worker stays (asleep) at count 1, so switching between 1 and 2 threads costs no restart.
    pool.started.splice(Math.max(1, count - 1));
    for (const w of pool.workers.splice(Math.max(1, count - 1))) {
      void w.terminate();
      Atomics.sub(pool.control, Control.ready, 1);
    }
  }
}

/**
 * Bytes the shared arena may grow to (default and most:
 * {@linkcode ARENA_MAX_BYTES}); kernels stage larger jobs in slabs.
 *
 * @returns The limit.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ARENA_MAX_BYTES, arenaLimitBytes } from "./parallel.ts";
 * assert.ok(arenaLimitBytes() <= ARENA_MAX_BYTES);
 * ```
 */
export function arenaLimitBytes(): number {
  return arenaLimit;
}

/**
 * Limit the shared arena to `bytes` (at most {@linkcode ARENA_MAX_BYTES}),
 * for callers that watch their peak memory; an arena already larger keeps
 * its size until {@linkcode releasePool}.
 *
 * @param bytes The limit.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ARENA_MAX_BYTES, arenaLimitBytes, setArenaLimit } from "./parallel.ts";
 * setArenaLimit(1 << 20);
 * assert.equal(arenaLimitBytes(), 1 << 20);
 * setArenaLimit(ARENA_MAX_BYTES);
 * ```
 */
export function setArenaLimit(bytes: number): void {
  arenaLimit = Math.max(0, Math.min(ARENA_MAX_BYTES, Math.floor(bytes)));
}

/**
 * Stop all workers and drop the shared arena (its memory returns once
 * collected); the next parallel job starts them again.
 *
 * @example
 * ```ts
 * import { releasePool } from "./parallel.ts";
 * releasePool();
 * ```
 */
export function releasePool(): void {
  if (pool === null) return;
  for (const w of pool.workers) void w.terminate();
  pool = null;
}

/**
 * Start the workers now (they otherwise start on the first parallel job,
 * which runs on the calling thread alone until they are up) and resolve with
 * how many are ready once each has started or failed to.
 *
 * @returns Workers ready.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { startWorkers, threadCount } from "./parallel.ts";
 * assert.ok((await startWorkers()) <= threadCount() - 1);
 * ```
 */
export async function startWorkers(): Promise<number> {
  const p = threads > 1 && !unavailable ? startPool() : null;
  if (p === null) return 0;
  // Unref'd workers do not keep the event loop alive: hold them while waiting for their first message.
  for (const w of p.workers) w.ref();
  await Promise.all(p.started);
  for (const w of p.workers) w.unref();
  return Math.min(Atomics.load(p.control, Control.ready), p.workers.length);
}

/**
 * Parts of parallel jobs computed by workers since the process started (the
 * rest ran on the calling thread).
 *
 * @returns The count.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { workerPartCount } from "./parallel.ts";
 * assert.ok(workerPartCount() >= 0);
 * ```
 */
export function workerPartCount(): number {
  return workerParts;
}

/**
 * Shared memory of at least `bytes` that workers see, or null when the job
 * should run on the calling thread alone (one thread configured, workers
 * unavailable, or more than {@linkcode arenaLimitBytes}). Its contents are
 * the caller's until the next call.
 *
 * @param bytes Bytes the job needs.
 * @returns The arena, grown to at least `bytes`, or null.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parallelArena, threadCount } from "./parallel.ts";
 * const arena = parallelArena(1024);
 * assert.ok(threadCount() === 1 || arena === null || arena.byteLength >= 1024);
 * ```
 */
export function parallelArena(bytes: number): SharedArrayBuffer | null {
  if (threads < 2 || unavailable || bytes > arenaLimit) return null;
  const p = startPool();
  if (p === null) return null;
  if (p.arena.byteLength < bytes) p.arena.grow(Math.min(arenaLimit, Math.max(bytes, 2 * p.arena.byteLength)));
  return p.arena;
}

function startPool(): NonNullable<typeof pool> | null {
  if (pool === null) {
    const channels: PoolChannels = {
      control: new SharedArrayBuffer(4 * (Control.status + MAX_PARTS)),
      params: new SharedArrayBuffer(8 * MAX_PARAMS),
      arena: new SharedArrayBuffer(0, { maxByteLength: ARENA_MAX_BYTES }),
    };
    pool = {
      workers: [],
      started: [],
      control: new Int32Array(channels.control),
      params: new Float64Array(channels.params),
      arena: channels.arena,
    };
  }
  while (pool.workers.length < threads - 1 && !unavailable) {
    try {
      const channels: PoolChannels = {
        control: pool.control.buffer as SharedArrayBuffer,
        params: pool.params.buffer as SharedArrayBuffer,
        arena: pool.arena,
      };
      // `env: {}`: by default a worker gets a copy of the whole environment, which needs env access: without it Deno
      // would stop and ask in a terminal (and the workers read no variable).
      const worker = new Worker(new URL("./parallel_worker.ts", import.meta.url), { workerData: channels, env: {} });
      pool.started.push(
        new Promise((resolve) => {
          worker.once("message", () => resolve());
          // A worker that fails to load never claims a part; the calling thread then computes them all.
          worker.on("error", () => {
            unavailable = true;
            resolve();
          });
        }),
      );
      worker.unref();
      pool.workers.push(worker);
    } catch {
      // No permission to read the worker's module (a library user without --allow-read): stay single-threaded.
      unavailable = true;
    }
  }
  return unavailable && pool.workers.length === 0 ? null : pool;
}

/**
 * Run `parts` parts of a job on the pool and on the calling thread, and wait
 * for all of them. Workers run `task.run(part, params, arena)`; the calling
 * thread runs `onCaller(part)` (the same computation, which may read the
 * caller's own arrays instead of the arena).
 *
 * @param task What workers run.
 * @param params The job's parameters (at most {@linkcode MAX_PARAMS}).
 * @param parts Number of parts, 1 to {@linkcode MAX_PARTS}.
 * @param onCaller Compute one part on the calling thread.
 * @param useWorkers False runs every part on the calling thread (a job too small to share).
 * @returns Per part, whether a worker computed it (its result is in the arena).
 *
 * @example Without workers every part runs on the caller
 * ```ts
 * import assert from "node:assert/strict";
 * import { runParts } from "./parallel.ts";
 * const seen: number[] = [];
 * const byWorker = runParts({ id: -1, run: () => {} }, [], 3, (part) => seen.push(part), false);
 * assert.deepEqual(seen, [0, 1, 2]);
 * assert.deepEqual(byWorker, [false, false, false]);
 * ```
 */
export function runParts(
  task: ParallelTask,
  params: ArrayLike<number>,
  parts: number,
  onCaller: (part: number) => void,
  useWorkers = true,
): boolean[] {
  if (parts < 1 || parts > MAX_PARTS || params.length > MAX_PARAMS) {
    throw new RangeError(`a parallel job has 1 to ${MAX_PARTS} parts and at most ${MAX_PARAMS} parameters`);
  }
  const byWorker = new Array<boolean>(parts).fill(false);
  const p = useWorkers && threads > 1 && !unavailable ? startPool() : null;
  if (p === null) {
    for (let part = 0; part < parts; part++) onCaller(part);
    return byWorker;
  }
  const ctl = p.control;
  const generation = (Atomics.load(ctl, Control.generation) + 1) & 0xffff;
  // Close the previous job before rewriting its words: a late claim on it now fails (part 0xffff >= parts).
  Atomics.store(ctl, Control.claim, generation << 16 | 0xffff);
  p.params.set(params);
  Atomics.store(ctl, Control.parts, parts);
  Atomics.store(ctl, Control.done, 0);
  Atomics.store(ctl, Control.task, task.id);
  for (let part = 0; part < parts; part++) Atomics.store(ctl, Control.status + part, 0);
  Atomics.store(ctl, Control.claim, generation << 16);
  Atomics.store(ctl, Control.generation, generation);
  Atomics.notify(ctl, Control.generation);
  for (let part = claimPart(ctl, generation); part >= 0; part = claimPart(ctl, generation)) {
    onCaller(part);
    Atomics.add(ctl, Control.done, 1);
  }
  for (let done = Atomics.load(ctl, Control.done); done < parts; done = Atomics.load(ctl, Control.done)) {
    Atomics.wait(ctl, Control.done, done);
  }
  for (let part = 0; part < parts; part++) {
    const status = Atomics.load(ctl, Control.status + part);
    if (status === 2) onCaller(part); // failed in a worker: recompute here, so an error surfaces on the caller
    byWorker[part] = status === 1;
    if (status === 1) workerParts++;
  }
  return byWorker;
}

/**
 * Claim the next part of job `generation`, or -1 when none is left or the job
 * is over (a late worker must not take a part of the next job).
 *
 * @param control The control words.
 * @param generation The job's generation (16 bits).
 * @returns The claimed part, or -1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { claimPart, Control } from "./parallel.ts";
 * const control = new Int32Array(new SharedArrayBuffer(64));
 * control[Control.parts] = 2;
 * control[Control.claim] = 5 << 16;
 * assert.deepEqual([claimPart(control, 5), claimPart(control, 5), claimPart(control, 5)], [0, 1, -1]);
 * assert.equal(claimPart(control, 4), -1);
 * ```
 */
export function claimPart(control: Int32Array, generation: number): number {
  for (;;) {
    const word = Atomics.load(control, Control.claim);
    if (word >>> 16 !== generation) return -1;
    const part = word & 0xffff;
    if (part >= Atomics.load(control, Control.parts)) return -1;
    if (Atomics.compareExchange(control, Control.claim, word, word + 1) === word) return part;
  }
}
