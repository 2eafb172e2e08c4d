/**
 * NumPy `.npy` files as {@linkcode Tensor}s: how users hand calibration and
 * evaluation data to the compiler. Format versions 1.0–3.0, C order; written
 * files are byte-identical to `numpy.save` (numpy ≥ 1.23 header padding).
 * Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
 * @module
 */
import { dataFromBytes, shapeSize, storageBytes, storageLength, type Tensor, type TensorData } from "../ir/tensor.ts";
import type { DType } from "../ir/types.ts";

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
/** numpy aligns the start of the data to 64 bytes (`ARRAY_ALIGN`). */
const ARRAY_ALIGN = 64;
/** numpy ≥ 1.23 pads the header so the first axis can grow to this many digits in place (`GROWTH_AXIS_MAX_DIGITS`). */
const GROWTH_AXIS_MAX_DIGITS = 21;

/** NumPy type codes (kind + item size, no byte-order character) and the dtype each maps to. */
const DTYPE_BY_CODE: Readonly<Record<string, DType>> = {
  f2: "f16",
  f4: "f32",
  f8: "f64",
  c8: "c64",
  c16: "c128",
  i1: "i8",
  i2: "i16",
  i4: "i32",
  i8: "i64",
  u1: "u8",
  u2: "u16",
  u4: "u32",
  u8: "u64",
  b1: "bool",
};

const CODE_BY_DTYPE = new Map<DType, string>(Object.entries(DTYPE_BY_CODE).map(([code, dtype]) => [dtype, code]));

/** Bytes per element of a NumPy type code (`c8` is one complex64 element: 8 bytes). */
function codeItemSize(code: string): number {
  return Number(code.slice(1));
}

function readError(name: string | undefined, message: string): Error {
  return new Error(`Cannot read .npy file${name !== undefined ? ` "${name}"` : ""}: ${message}`);
}

/**
 * Parse a `.npy` file.
 *
 * Accepts format versions 1.0, 2.0 and 3.0 (3.0: UTF-8 header), C order, and
 * the dtypes `<f2 <f4 <f8 <c8 <c16 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1`.
 * Big-endian data (`>f4`) is byte-swapped into a copy; little-endian data is
 * a zero-copy view of `bytes` when the data start is aligned for the element
 * size (numpy aligns it to 64 bytes, so a file read into a fresh buffer is).
 *
 * @param bytes The whole file.
 * @param name Shown in error messages (usually the path).
 * @returns The array as a tensor (`f16` as raw half bits, `bool` as 0/1 bytes).
 * @throws {Error} One line starting `Cannot read .npy file "name": ` for a bad
 *   magic or version, a malformed header, Fortran order, an unsupported dtype, or
 *   a file whose length does not match the header and shape.
 *
 * @example Read what writeNpy wrote
 * ```ts
 * import assert from "node:assert/strict";
 * import { readNpy, writeNpy } from "./npy.ts";
 * const bytes = writeNpy({ dtype: "i32", shape: [2, 2], data: new Int32Array([1, 2, 3, 4]) });
 * const t = readNpy(bytes);
 * assert.deepEqual(t.shape, [2, 2]);
 * assert.deepEqual([...t.data], [1, 2, 3, 4]);
 * ```
 */
export function readNpy(bytes: Uint8Array, name?: string): Tensor {
  const fail = (message: string): Error => readError(name, message);
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw fail(`not a NumPy file (expected the magic string "\\x93NUMPY", found ${describePrefix(bytes)})`);
  }
  const major = bytes[6], minor = bytes[7];
  if (!((major === 1 || major === 2 || major === 3) && minor === 0)) {
    throw fail(`unsupported format version ${major}.${minor} (expected 1.0, 2.0 or 3.0)`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lengthBytes = major === 1 ? 2 : 4;
  const prefix = 8 + lengthBytes;
  if (bytes.length < prefix) {
    throw fail(`file is ${bytes.length} bytes, too short for a version ${major}.0 header length field`);
  }
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const dataStart = prefix + headerLength;
  if (dataStart > bytes.length) {
    throw fail(`header needs ${headerLength} bytes after offset ${prefix}, found ${bytes.length - prefix}`);
  }
  // Versions 1.0 and 2.0 store the header as latin-1; 3.0 as UTF-8 (for non-latin-1 field names).
  const headerText = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.subarray(prefix, dataStart));
  const header = parseHeader(headerText, fail);

  const code = header.descr.slice(1);
  const order = header.descr[0];
  const dtype = Object.hasOwn(DTYPE_BY_CODE, code) && "<>|=".includes(order) ? DTYPE_BY_CODE[code] : undefined;
  if (dtype === undefined) {
    throw fail(`unsupported dtype '${header.descr}' (supported: ${supportedDescrs()})`);
  }
  if (header.fortranOrder) {
    throw fail("Fortran-order arrays are not supported (save a C-order array: numpy.ascontiguousarray)");
  }
  const itemSize = codeItemSize(code);
  const count = shapeSize(header.shape);
  const dataBytes = count * itemSize;
  const found = bytes.length - dataStart;
  if (found !== dataBytes) {
    throw fail(
      `shape ${pyRepr({ tuple: header.shape })} of '${header.descr}' needs ${dataBytes} data bytes, found ${found}` +
        (found < dataBytes ? " (file truncated)" : ""),
    );
  }
  const raw = bytes.subarray(dataStart);
  // '>' only matters for multi-byte elements; '|' and '=' (native, little-endian on every host we run on) do not.
  const bigEndian = order === ">" && itemSize > 1;
  const data = dataFromBytes(dtype, bigEndian ? byteSwapped(raw, storageBytes(dtype)) : raw);
  return { dtype, shape: header.shape, data };
}

/** A copy of `bytes` with every `width`-byte word reversed. */
function byteSwapped(bytes: Uint8Array, width: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += width) {
    for (let k = 0; k < width; k++) out[i + k] = bytes[i + width - 1 - k];
  }
  return out;
}

function describePrefix(bytes: Uint8Array): string {
  if (bytes.length === 0) return "an empty file";
  const shown = [...bytes.subarray(0, 6)].map((
    b,
  ) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`));
  return `"${shown.join("")}"${bytes.length < 10 ? ` in a ${bytes.length}-byte file` : ""}`;
}

function supportedDescrs(): string {
  return Object.keys(DTYPE_BY_CODE).map((c) => `${codeItemSize(c) === 1 ? "|" : "<"}${c}`).join(" ");
}

/** The three fields of a `.npy` header. */
interface NpyHeader {
  descr: string;
  fortranOrder: boolean;
  shape: number[];
}

/** A Python literal as far as `.npy` headers use them. */
type PyValue = string | number | boolean | null | PyValue[] | { tuple: PyValue[] } | Map<string, PyValue>;

/**
 * Parse the header dict: `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`
 * followed by padding spaces and a newline. A small parser for the Python literal
 * subset numpy writes (numpy itself uses `ast.literal_eval`); it also takes double
 * quotes, any whitespace and trailing commas, and Python 2 long suffixes (`3L`).
 */
/** Deepest bracket nesting of a header: numpy's own are 2 deep (a dict holding a tuple); structured dtypes nest more. */
const MAX_HEADER_NESTING = 32;

function parseHeader(text: string, fail: (message: string) => Error): NpyHeader {
  let pos = 0;
  const bad = (what: string, at: number | null = pos): Error =>
    fail(
      `malformed header (${what}${at === null ? "" : ` at offset ${at}`}): ${
        JSON.stringify(text.trimEnd().slice(0, 200))
      }`,
    );
  const skipSpace = (): void => {
    while (pos < text.length && " \t\r\n".includes(text[pos])) pos++;
  };
  const expect = (ch: string): void => {
    skipSpace();
    if (text[pos] !== ch) throw bad(`expected '${ch}'`);
    pos++;
  };
  /** Items up to `close`, separated by commas, a trailing comma allowed. */
  const items = <T>(close: string, item: () => T): { values: T[]; trailingComma: boolean } => {
    const values: T[] = [];
    let trailingComma = false;
    for (;;) {
      skipSpace();
      if (text[pos] === close) {
        pos++;
        return { values, trailingComma };
      }
      values.push(item());
      skipSpace();
      trailingComma = false;
      if (text[pos] === ",") {
        pos++;
        trailingComma = true;
      } else if (text[pos] !== close) {
        throw bad(`expected ',' or '${close}'`);
      }
    }
  };
  let depth = 0;
  const value = (): PyValue => {
    skipSpace();
    const ch = text[pos];
    if (ch === "'" || ch === '"') return str();
    if ("{([".includes(ch)) {
      if (depth === MAX_HEADER_NESTING) throw bad(`brackets nested deeper than ${MAX_HEADER_NESTING} levels`);
      depth++;
      try {
        return container(ch);
      } finally {
        depth--;
      }
    }
    const word = /^[A-Za-z_][A-Za-z0-9_]*|^[-+]?\d+[lL]?/.exec(text.slice(pos));
    if (word === null) throw bad("expected a value");
    pos += word[0].length;
    if (word[0] === "True") return true;
    if (word[0] === "False") return false;
    if (word[0] === "None") return null;
    if (/^[-+]?\d/.test(word[0])) return Number(word[0].replace(/[lL]$/, ""));
    throw bad(`unexpected name ${word[0]}`);
  };
  /** A dict, tuple or list opening with `ch` at `pos`. */
  const container = (ch: string): PyValue => {
    if (ch === "{") {
      pos++;
      const dict = new Map<string, PyValue>();
      items("}", () => {
        const key = value();
        if (typeof key !== "string") throw bad("expected a string key");
        expect(":");
        dict.set(key, value());
      });
      return dict;
    }
    if (ch === "(") {
      pos++;
      const { values, trailingComma } = items(")", value);
      // `(x)` is just x in Python; a one-element tuple needs the comma.
      return values.length === 1 && !trailingComma ? values[0] : { tuple: values };
    }
    pos++;
    return items("]", value).values;
  };
  const str = (): string => {
    const quote = text[pos++];
    let out = "";
    while (pos < text.length && text[pos] !== quote) {
      if (text[pos] === "\\") pos++;
      out += text[pos++];
    }
    if (pos >= text.length) throw bad("unterminated string");
    pos++;
    return out;
  };

  const dict = value();
  skipSpace();
  if (pos !== text.length) throw bad("unexpected text after the dict");
  if (!(dict instanceof Map)) throw bad("expected a dict", null);
  for (const key of ["descr", "fortran_order", "shape"]) {
    if (!dict.has(key)) throw fail(`header has no '${key}' key`);
  }
  for (const key of dict.keys()) {
    if (key !== "descr" && key !== "fortran_order" && key !== "shape") {
      throw fail(`header has an unexpected key '${key}'`);
    }
  }
  const descr = dict.get("descr");
  if (typeof descr !== "string") {
    throw fail(
      `unsupported dtype ${pyRepr(descr!)} (structured dtypes are not supported; expected one of ${supportedDescrs()})`,
    );
  }
  const fortranOrder = dict.get("fortran_order");
  if (typeof fortranOrder !== "boolean") {
    throw fail(`'fortran_order' must be True or False, found ${pyRepr(fortranOrder!)}`);
  }
  const shape = dict.get("shape")!;
  const dims = typeof shape === "object" && shape !== null && "tuple" in shape ? shape.tuple : null;
  if (dims === null || !dims.every((d) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0)) {
    throw fail(`'shape' must be a tuple of non-negative integers, found ${pyRepr(shape)}`);
  }
  return { descr, fortranOrder, shape: dims as number[] };
}

function pyRepr(v: PyValue): string {
  if (typeof v === "string") return `'${v}'`;
  if (typeof v === "boolean") return v ? "True" : "False";
  if (v === null) return "None";
  if (typeof v === "number") return String(v);
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`;
  if (v instanceof Map) return `{${[...v].map(([k, x]) => `'${k}': ${pyRepr(x)}`).join(", ")}}`;
  return v.tuple.length === 1 ? `(${pyRepr(v.tuple[0])},)` : `(${v.tuple.map(pyRepr).join(", ")})`;
}

/**
 * Serialise a tensor as a `.npy` file, byte-identical to what `numpy.save`
 * (numpy ≥ 1.23) writes for the same array: version 1.0 (2.0 when the header
 * exceeds 65,535 bytes), the header dict with sorted keys, padded with spaces
 * for in-place growth of the first axis and to a 64-byte boundary, ending in `\n`.
 *
 * @param t The tensor (`f16` as raw half bits, `bool` as 0/1 bytes).
 * @returns The file bytes.
 * @throws {Error} `Cannot write .npy file: ...` for dtypes NumPy has no
 *   equivalent for (bf16, string, 4- and 8-bit floats, packed 4-bit ints) or a
 *   data length that does not match the shape.
 *
 * @example Write a float32 matrix
 * ```ts
 * import assert from "node:assert/strict";
 * import { writeNpy } from "./npy.ts";
 * const bytes = writeNpy({ dtype: "f32", shape: [2, 3], data: new Float32Array(6) });
 * assert.equal(bytes.length, 128 + 24); // 128-byte header, 6 float32 values
 * assert.equal(new TextDecoder().decode(bytes.subarray(10, 60)), "{'descr': '<f4', 'fortran_order': False, 'shape': ");
 * ```
 */
export function writeNpy(t: Tensor): Uint8Array {
  const code = CODE_BY_DTYPE.get(t.dtype);
  if (code === undefined) throw new Error(`Cannot write .npy file: dtype ${t.dtype} has no NumPy equivalent`);
  const count = shapeSize(t.shape);
  if (Array.isArray(t.data) || t.data.length !== storageLength(t.dtype, count)) {
    throw new Error(
      `Cannot write .npy file: shape [${t.shape.join(",")}] (${t.dtype}) needs ${storageLength(t.dtype, count)} ` +
        `elements, found ${t.data.length}`,
    );
  }
  const data = t.data as Exclude<TensorData, string[]>;
  const descr = `${codeItemSize(code) === 1 ? "|" : "<"}${code}`;
  const shapeRepr = t.shape.length === 1 ? `(${t.shape[0]},)` : `(${t.shape.join(", ")})`;
  let dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeRepr}, }`;
  if (t.shape.length > 0) dict += " ".repeat(GROWTH_AXIS_MAX_DIGITS - String(t.shape[0]).length);
  // As numpy's _wrap_header: the header plus its newline is padded so the data starts on a 64-byte boundary.
  const headerBytes = new TextEncoder().encode(dict); // ASCII: every character is one byte
  let lengthBytes = 2;
  let padded = paddedHeaderLength(headerBytes.length, lengthBytes);
  if (padded > 0xffff) {
    lengthBytes = 4;
    padded = paddedHeaderLength(headerBytes.length, lengthBytes);
  }
  const dataStart = 8 + lengthBytes + padded;
  const out = new Uint8Array(dataStart + data.byteLength);
  out.set(MAGIC);
  out[6] = lengthBytes === 2 ? 1 : 2;
  out[7] = 0;
  const view = new DataView(out.buffer);
  if (lengthBytes === 2) view.setUint16(8, padded, true);
  else view.setUint32(8, padded, true);
  out.set(headerBytes, 8 + lengthBytes);
  out.fill(0x20, 8 + lengthBytes + headerBytes.length, dataStart - 1);
  out[dataStart - 1] = 0x0a;
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), dataStart);
  return out;
}

/** Header length after padding: `len + 1` (newline) plus numpy's `ARRAY_ALIGN - (total % ARRAY_ALIGN)` spaces (1 to 64). */
function paddedHeaderLength(dictLength: number, lengthBytes: number): number {
  const withNewline = dictLength + 1;
  return withNewline + ARRAY_ALIGN - ((8 + lengthBytes + withNewline) % ARRAY_ALIGN);
}

/**
 * Read a `.npy` file from disk; errors name the path.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readNpyFile, writeNpy } from "./npy.ts";
 * const path = Deno.makeTempFileSync({ suffix: ".npy" });
 * Deno.writeFileSync(path, writeNpy({ dtype: "u8", shape: [3], data: new Uint8Array([7, 8, 9]) }));
 * assert.deepEqual([...readNpyFile(path).data], [7, 8, 9]);
 * Deno.removeSync(path);
 * ```
 */
export function readNpyFile(path: string): Tensor {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (e) {
    throw readError(path, e instanceof Error ? e.message : String(e));
  }
  return readNpy(bytes, path);
}
