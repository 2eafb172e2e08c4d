/**
 * Read an `.onnx` file so that each large weight gets its own buffer: the main graph's initializer `raw_data` are
 * read straight from the file into exact-size arrays (aligned, so tensors view them without a copy) and the rest of
 * the model into a small "skeleton" protobuf in which those fields are empty. A weight a pass replaces is then freed
 * on its own, where views over one whole-file buffer would keep every original weight alive to the end.
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import { readFileBytes } from "./tensor_proto.ts";

/** A model file as {@linkcode readOnnxFile} reads it; {@linkcode importOnnx} takes `bytes` and `initializerData`. */
export interface OnnxFile {
  /** The model's protobuf, with the `raw_data` of `initializerData`'s initializers empty. */
  readonly bytes: Uint8Array;
  /**
   * `raw_data` of the main graph's initializers by position (`undefined`: left inside `bytes`); the importer takes
   * each out of this array as it uses it, so that the array holds no weight afterwards.
   */
  readonly initializerData: (Uint8Array | undefined)[];
  /** SHA-256 (hex) of the file's bytes. */
  readonly sha256: string;
}

/** `raw_data` of at least this many bytes get their own buffer; smaller ones stay in the skeleton. */
const OWN_BUFFER_BYTES = 4096;

/** ModelProto.graph, GraphProto.initializer, TensorProto.raw_data. */
const MODEL_GRAPH = 7, GRAPH_INITIALIZER = 5, TENSOR_RAW_DATA = 9;

/** The file does not have the shape the scanner splits; it is read whole and decoded as usual instead. */
class NotSplit extends Error {}

/** Reads a file front to back through a window, hashing every byte once, in order. */
class SequentialFile {
  readonly #file: Deno.FsFile;
  readonly #window = new Uint8Array(1 << 16);
  #next = 0;
  #end = 0;
  /** File offset of the next byte to read. */
  position = 0;

  constructor(path: string, readonly size: number, readonly hash: Hash) {
    this.#file = Deno.openSync(path);
  }

  close(): void {
    this.#file.close();
  }

  /** Read into `out` from the file itself, hashing what arrives. */
  #read(out: Uint8Array): number {
    const n = this.#file.readSync(out);
    if (n === null || n === 0) throw new NotSplit("the file ended early");
    this.hash.update(out.subarray(0, n));
    return n;
  }

  byte(): number {
    if (this.#next === this.#end) {
      this.#next = 0;
      this.#end = this.#read(this.#window.subarray(0, Math.min(this.#window.length, this.size - this.position)));
    }
    this.position++;
    return this.#window[this.#next++];
  }

  /** The next `n` bytes in a fresh array of exactly that size. */
  take(n: number): Uint8Array {
    if (n > this.size - this.position) throw new NotSplit("a field runs past the end of the file");
    const out = new Uint8Array(n);
    const buffered = Math.min(n, this.#end - this.#next);
    out.set(this.#window.subarray(this.#next, this.#next + buffered));
    this.#next += buffered;
    for (let offset = buffered; offset < n;) offset += this.#read(out.subarray(offset));
    this.position += n;
    return out;
  }

  /** A varint's value (exact below 2^53) and its bytes as written. */
  varint(): { value: number; bytes: Uint8Array } {
    const bytes: number[] = [];
    let value = 0;
    for (let scale = 1;; scale *= 128) {
      if (bytes.length === 10) throw new NotSplit("varint too long");
      const b = this.byte();
      bytes.push(b);
      value += (b & 0x7f) * scale;
      if (b < 0x80) break;
    }
    // A negative int64 field takes 10 bytes and is copied as written; only tags and lengths use the value, and
    // a length beyond the file stops the split where it is used.
    return { value, bytes: Uint8Array.from(bytes) };
  }
}

function varintBytes(n: number): Uint8Array {
  const out: number[] = [];
  for (; n >= 0x80; n = Math.floor(n / 0x80)) out.push((n % 0x80) | 0x80);
  out.push(n);
  return Uint8Array.from(out);
}

/** Protobuf message pieces in order, with their total length. */
class Pieces {
  readonly list: Uint8Array[] = [];
  length = 0;
  push(...pieces: Uint8Array[]): void {
    for (const p of pieces) {
      this.list.push(p);
      this.length += p.byteLength;
    }
  }
}

/** Copy the rest of a field whose tag was `tag` as it is written. */
function copyField(f: SequentialFile, tag: { value: number; bytes: Uint8Array }, out: Pieces): void {
  out.push(tag.bytes);
  switch (tag.value & 7) {
    case 0:
      out.push(f.varint().bytes);
      return;
    case 1:
      out.push(f.take(8));
      return;
    case 5:
      out.push(f.take(4));
      return;
    case 2: {
      const length = f.varint();
      out.push(length.bytes, f.take(length.value));
      return;
    }
    default:
      throw new NotSplit(`wire type ${tag.value & 7}`);
  }
}

/** The fields of a message of `length` bytes, each through `field` (which copies what it does not rewrite). */
function scanMessage(
  f: SequentialFile,
  length: number,
  field: (tag: { value: number; bytes: Uint8Array }, out: Pieces) => void,
): Pieces {
  const end = f.position + length;
  if (end > f.size) throw new NotSplit("a message runs past the end of the file");
  const out = new Pieces();
  while (f.position < end) field(f.varint(), out);
  if (f.position !== end) throw new NotSplit("a field runs past the end of its message");
  return out;
}

/** Append a length-delimited field holding `message`. */
function pushMessage(out: Pieces, tag: Uint8Array, message: Pieces): void {
  out.push(tag, varintBytes(message.length), ...message.list);
}

function scanTensor(f: SequentialFile, length: number): { pieces: Pieces; raw: Uint8Array | undefined } {
  let raw: Uint8Array | undefined;
  let rawFields = 0;
  const pieces = scanMessage(f, length, (tag, out) => {
    if (tag.value !== ((TENSOR_RAW_DATA << 3) | 2)) return copyField(f, tag, out);
    // A repeated raw_data is legal protobuf (the last wins) but nothing writes it: leave such files whole.
    if (++rawFields > 1) throw new NotSplit("raw_data appears twice");
    const size = f.varint();
    if (size.value < OWN_BUFFER_BYTES) return out.push(tag.bytes, size.bytes, f.take(size.value));
    raw = f.take(size.value);
    out.push(tag.bytes, varintBytes(0));
  });
  return { pieces, raw };
}

function scanModel(f: SequentialFile): { bytes: Uint8Array; initializerData: (Uint8Array | undefined)[] } {
  const initializerData: (Uint8Array | undefined)[] = [];
  let graphs = 0;
  const model = scanMessage(f, f.size, (tag, out) => {
    if (tag.value !== ((MODEL_GRAPH << 3) | 2)) return copyField(f, tag, out);
    // A second graph field would merge into the first: leave such files whole.
    if (++graphs > 1) throw new NotSplit("graph appears twice");
    const graph = scanMessage(f, f.varint().value, (tag, out) => {
      if (tag.value !== ((GRAPH_INITIALIZER << 3) | 2)) return copyField(f, tag, out);
      const { pieces, raw } = scanTensor(f, f.varint().value);
      initializerData.push(raw);
      pushMessage(out, tag.bytes, pieces);
    });
    pushMessage(out, tag.bytes, graph);
  });
  const bytes = new Uint8Array(model.length);
  let offset = 0;
  for (const piece of model.list) {
    bytes.set(piece, offset);
    offset += piece.byteLength;
  }
  return { bytes, initializerData };
}

/**
 * Read an ONNX model file with every main-graph initializer's `raw_data` of 4 KiB or more in its own exact-size
 * buffer (see the module doc). A file the scanner cannot split (not protobuf, truncated, or with a repeated graph or
 * `raw_data` field) is read whole, so {@linkcode importOnnx} reports on it as it would on the plain bytes.
 *
 * @throws {Error} The system's error when the file cannot be opened or read.
 *
 * @example Import a model file read this way
 * ```ts
 * import assert from "node:assert/strict";
 * import { Graph, Op, Value } from "../graph.ts";
 * import { Module } from "../module.ts";
 * import { saveOnnx } from "./export.ts";
 * import { importOnnx } from "./import.ts";
 * import { readOnnxFile } from "./model_file.ts";
 * const g = new Graph("g");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: [4096] }));
 * const w = g.addConstant("w", { dtype: "f32", shape: [4096], data: new Float32Array(4096).fill(2) }, { elem: "f32", shape: [4096] });
 * g.outputs.push(g.addOp(new Op({ name: "mul", type: "Mul", operands: [x, w], results: [new Value("y")] })).result);
 * const path = Deno.makeTempFileSync({ suffix: ".onnx" });
 * saveOnnx(new Module(g), path);
 * const file = readOnnxFile(path);
 * const m = importOnnx(file.bytes, { initializerData: file.initializerData });
 * const data = m.graph.constants[0].constant!.data as Float32Array;
 * assert.equal(data.buffer.byteLength, 4096 * 4); // its own buffer
 * assert.equal(file.initializerData[0], undefined); // taken by the importer
 * Deno.removeSync(path);
 * ```
 */
export function readOnnxFile(path: string): OnnxFile {
  const size = Deno.statSync(path).size;
  const hash = createHash("sha256");
  const f = new SequentialFile(path, size, hash);
  try {
    const { bytes, initializerData } = scanModel(f);
    return { bytes, initializerData, sha256: hash.digest("hex") };
  } catch (e) {
    if (!(e instanceof NotSplit)) throw e;
  } finally {
    f.close();
  }
  const bytes = readFileBytes(path);
  return { bytes, initializerData: [], sha256: createHash("sha256").update(bytes).digest("hex") };
}
