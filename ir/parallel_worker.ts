/**
 * The body of a worker of the pool in `parallel.ts`: sleep until a job is
 * posted, claim its parts until none is left, run each with the job's task.
 * @module
 */
import { parentPort, workerData } from "node:worker_threads";
import { gemmPartTask } from "./ops/gemm_kernel.ts";
import { gemm64PartTask } from "./ops/wasm_gemm64.ts";
import { claimPart, Control, type ParallelTask, type PoolChannels } from "./parallel.ts";

/** Every task a worker can run, by id. */
const TASKS: ParallelTask[] = [gemmPartTask, gemm64PartTask];

const { control: controlBuffer, params: paramsBuffer, arena } = workerData as PoolChannels;
const control = new Int32Array(controlBuffer);
const params = new Float64Array(paramsBuffer);
Atomics.add(control, Control.ready, 1);
Atomics.notify(control, Control.ready);
parentPort?.postMessage("ready");
// A job posted while this worker started is joined if it still has parts left.
for (let seen = Atomics.load(control, Control.generation);; seen = Atomics.load(control, Control.generation)) {
  for (let part = claimPart(control, seen); part >= 0; part = claimPart(control, seen)) {
    const task = TASKS.find((t) => t.id === Atomics.load(control, Control.task));
    let status = 2;
    try {
      if (task !== undefined) {
        task.run(part, params, arena);
        status = 1;
      }
    } catch {
      // status 2: the calling thread recomputes the part and meets the error itself.
    }
    Atomics.store(control, Control.status + part, status);
    Atomics.add(control, Control.done, 1);
    Atomics.notify(control, Control.done);
  }
  Atomics.wait(control, Control.generation, seen);
}
