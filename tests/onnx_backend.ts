/**
 * The ONNX backend test data (Debian package `libonnx-testdata`, ONNX 1.12):
 * listing cases and reading their input/output tensors. Shared by the ONNX
 * import/export tests and the interpreter tests.
 * @module
 */
import { join } from "node:path";
import { type IValueInfoProto, type ModelProto, onnx } from "../ir/onnx/proto.ts";
import { readTensorProto } from "../ir/onnx/tensor_proto.ts";
import type { Tensor } from "../ir/tensor.ts";

/** Where Debian's `libonnx-testdata` installs the backend test cases. */
export const BACKEND_DATA_DIR = "/usr/share/libonnx-testdata/data";

/** The four suites of the backend test data. */
export const BACKEND_SUITES: readonly string[] = ["node", "pytorch-converted", "pytorch-operator", "simple"];

/** Why backend tests are skipped when the data is missing. */
export const BACKEND_SKIP_MESSAGE =
  `ONNX backend test data not found at ${BACKEND_DATA_DIR}: install the Debian package libonnx-testdata`;

/** One backend test case: its folder holds `model.onnx` and `test_data_set_*`. */
export interface BackendCase {
  /** Case name, e.g. `test_conv_with_strides_padding`. */
  name: string;
  /** Suite: `node`, `pytorch-converted`, `pytorch-operator` or `simple`. */
  suite: string;
  /** Absolute folder of the case. */
  dir: string;
}

/** One data set: the model's inputs and expected outputs, in order. */
export interface BackendDataSet {
  /** `input_0.pb`, `input_1.pb`, ... */
  inputs: Tensor[];
  /** `output_0.pb`, `output_1.pb`, ... */
  outputs: Tensor[];
}

function isDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** True when the backend test data is installed. */
export function backendDataAvailable(): boolean {
  return isDir(join(BACKEND_DATA_DIR, "node"));
}

const byName = (a: string, b: string): number => a < b ? -1 : a > b ? 1 : 0;

/** Every case with a `model.onnx`, over all four suites, sorted by suite then name. */
export function listBackendCases(): BackendCase[] {
  const cases: BackendCase[] = [];
  for (const suite of BACKEND_SUITES) {
    const root = join(BACKEND_DATA_DIR, suite);
    if (!isDir(root)) continue;
    const names = [...Deno.readDirSync(root)].filter((e) => e.isDirectory).map((e) => e.name).sort(byName);
    for (const name of names) {
      const dir = join(root, name);
      try {
        if (Deno.statSync(join(dir, "model.onnx")).isFile) cases.push({ name, suite, dir });
      } catch {
        // A folder without a model is not a case.
      }
    }
  }
  return cases;
}

/** Files `prefix_K.pb` of a folder, ordered by K numerically. */
function numbered(dir: string, prefix: string): string[] {
  const pattern = new RegExp(`^${prefix}_(\\d+)\\.pb$`);
  return [...Deno.readDirSync(dir)]
    .map((e) => ({ name: e.name, m: pattern.exec(e.name) }))
    .filter((e) => e.m !== null)
    .sort((a, b) => Number(a.m![1]) - Number(b.m![1]))
    .map((e) => join(dir, e.name));
}

/**
 * The kind of each fed input and each output of a case's model (`tensor`, `sequence`,
 * `optional`, `map`, ...): data files of non-tensor kinds are not `TensorProto`s.
 */
function ioKinds(dir: string): { inputs: string[]; outputs: string[] } {
  let model: ModelProto;
  try {
    model = onnx.ModelProto.decode(Deno.readFileSync(join(dir, "model.onnx")));
  } catch {
    return { inputs: [], outputs: [] };
  }
  const graph = model.graph;
  const initializers = new Set((graph?.initializer ?? []).map((t) => t.name));
  const kind = (vi: IValueInfoProto): string => {
    const type = vi.type as Record<string, unknown> | null | undefined;
    if (!type) return "tensor";
    for (const k of ["tensorType", "sequenceType", "mapType", "optionalType", "sparseTensorType"]) {
      if (Object.hasOwn(type, k)) return k.replace("Type", "").replace("Tensor", "_tensor");
    }
    return "tensor";
  };
  return {
    inputs: (graph?.input ?? []).filter((vi) => !initializers.has(vi.name ?? "")).map(kind),
    outputs: (graph?.output ?? []).map(kind),
  };
}

/**
 * Read every `test_data_set_N` of a case (N in numeric order), each with its
 * `input_K.pb` and `output_K.pb` tensors in numeric K order.
 *
 * @throws {Error} Naming the file, for data that is not a `TensorProto`: the
 *   model's input or output K is a sequence, optional or map (ONNX `SequenceProto` /
 *   `OptionalProto` data, which this harness does not read), or the file is corrupt.
 */
export function loadDataSets(dir: string): BackendDataSet[] {
  const kinds = ioKinds(dir);
  const sets = [...Deno.readDirSync(dir)]
    .map((e) => ({ name: e.name, m: /^test_data_set_(\d+)$/.exec(e.name), isDir: e.isDirectory }))
    .filter((e) => e.m !== null && e.isDir)
    .sort((a, b) => Number(a.m![1]) - Number(b.m![1]));
  return sets.map(({ name }) => {
    const setDir = join(dir, name);
    const read = (which: "input" | "output") => (path: string, k: number): Tensor => {
      const kind = (which === "input" ? kinds.inputs : kinds.outputs)[k] ?? "tensor";
      if (kind !== "tensor") {
        throw new Error(
          `${path}: ${which} ${k} is ${/^[aeiou]/.test(kind) ? "an" : "a"} ${kind}, not a tensor; not supported`,
        );
      }
      try {
        return readTensorProto(Deno.readFileSync(path));
      } catch (e) {
        throw new Error(`${path}: ${(e as Error).message}`);
      }
    };
    return {
      inputs: numbered(setDir, "input").map(read("input")),
      outputs: numbered(setDir, "output").map(read("output")),
    };
  });
}
