import assert from "node:assert/strict";
import { join } from "node:path";
import { readNpy, readNpyFile, writeNpy } from "./npy.ts";
import { allocData, shapeSize, type Tensor, type TensorData } from "../ir/tensor.ts";
import type { DType } from "../ir/types.ts";

/** Debian's python3 with python3-numpy (the `python3` on PATH may lack it). */
const PYTHON = "/usr/bin/python3";

function hasNumpy(): boolean {
  try {
    return new Deno.Command(PYTHON, { args: ["-c", "import numpy"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

const numpyMissing = !hasNumpy();
if (numpyMissing) console.warn(`${PYTHON} cannot import numpy: numpy interop tests skipped (install python3-numpy)`);

function python(code: string): string {
  const out = new Deno.Command(PYTHON, { args: ["-c", code] }).outputSync();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`python failed: ${new TextDecoder().decode(out.stderr)}`);
  return text;
}

/** Deterministic test values for a dtype: small signed or unsigned integers, halves for floats, 0/1 for bool. */
function sample(dtype: DType, shape: number[]): Tensor {
  const n = shapeSize(shape);
  const data = allocData(dtype, n) as Exclude<TensorData, string[]>;
  for (let i = 0; i < data.length; i++) {
    const v = (i * 37) % 23 - (dtype.startsWith("u") || dtype === "bool" ? 0 : 11);
    if (data instanceof BigInt64Array || data instanceof BigUint64Array) data[i] = BigInt(v);
    else if (dtype === "bool") data[i] = v % 2;
    else if (dtype === "f16") data[i] = [0x3c00, 0xb800, 0x0000, 0x4500, 0x8001][i % 5]; // 1, -0.5, 0, 5, -tiny
    else if (dtype === "f32" || dtype === "f64" || dtype === "c64" || dtype === "c128") data[i] = v / 2 + 0.25;
    else data[i] = v;
  }
  return { dtype, shape, data };
}

/** Every dtype readNpy/writeNpy support, with its numpy name. */
const NUMPY_NAMES: [DType, string][] = [
  ["f32", "float32"],
  ["f64", "float64"],
  ["i64", "int64"],
  ["i32", "int32"],
  ["u8", "uint8"],
  ["bool", "bool_"],
  ["i8", "int8"],
  ["i16", "int16"],
  ["u16", "uint16"],
  ["u32", "uint32"],
  ["u64", "uint64"],
  ["f16", "float16"],
  ["c64", "complex64"],
  ["c128", "complex128"],
];

const SHAPES: number[][] = [[2, 3], [5], [], [0], [3, 0, 2], [2, 1, 2, 3]];

Deno.test("writeNpy() then readNpy() round-trips every dtype and shape, including scalars and empty arrays", () => {
  for (const [dtype] of NUMPY_NAMES) {
    for (const shape of SHAPES) {
      const t = sample(dtype, shape);
      const back = readNpy(writeNpy(t));
      assert.equal(back.dtype, dtype);
      assert.deepEqual(back.shape, shape);
      assert.deepEqual([...back.data], [...t.data], `${dtype} [${shape}]`);
    }
  }
});

Deno.test("writeNpy() aligns the data to 64 bytes and ends the header with a newline", () => {
  for (const shape of SHAPES) {
    const bytes = writeNpy(sample("f32", shape));
    const headerLength = bytes[8] | (bytes[9] << 8);
    assert.equal((10 + headerLength) % 64, 0);
    assert.equal(bytes[10 + headerLength - 1], 0x0a);
  }
});

Deno.test("readNpy() returns a zero-copy view when the data is aligned, a copy when it is not", () => {
  const bytes = writeNpy(sample("f64", [4, 4]));
  const view = readNpy(bytes);
  assert.equal((view.data as Float64Array).buffer, bytes.buffer);
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  const unaligned = shifted.subarray(1);
  const copy = readNpy(unaligned);
  assert.notEqual((copy.data as Float64Array).buffer, shifted.buffer);
  assert.deepEqual([...copy.data], [...view.data]);
});

Deno.test({
  name: "writeNpy() output is byte-identical to numpy.save for every dtype and shape",
  ignore: numpyMissing,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      const cases: string[] = [];
      for (const [dtype, np] of NUMPY_NAMES) {
        for (const [k, shape] of SHAPES.entries()) {
          const file = join(dir, `${dtype}_${k}.npy`);
          Deno.writeFileSync(file, writeNpy(sample(dtype, shape)));
          cases.push(`(${JSON.stringify(file)}, numpy.${np}, ${JSON.stringify(shape)})`);
        }
      }
      // numpy loads our file, checks the dtype and shape, and saves the same array again for a byte comparison.
      python(`
import numpy
for path, dt, shape in [${cases.join(", ")}]:
    a = numpy.load(path)
    assert a.dtype == dt and list(a.shape) == shape, (path, a.dtype, a.shape)
    numpy.save(path + ".numpy.npy", a)
`);
      for (const [dtype] of NUMPY_NAMES) {
        for (const k of SHAPES.keys()) {
          const file = join(dir, `${dtype}_${k}.npy`);
          assert.deepEqual(Deno.readFileSync(`${file}.numpy.npy`), Deno.readFileSync(file), `${dtype} ${SHAPES[k]}`);
        }
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "numpy reads the values writeNpy() wrote, and readNpy() reads the values numpy.save wrote",
  ignore: numpyMissing,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      // Ours → numpy: numpy prints what it loaded.
      for (const [dtype, np] of NUMPY_NAMES) {
        const t = sample(dtype, [3, 4]);
        Deno.writeFileSync(join(dir, `${dtype}.npy`), writeNpy(t));
        const printed = python(`
import numpy, json
a = numpy.load(${JSON.stringify(join(dir, `${dtype}.npy`))})
assert a.dtype == numpy.${np}
v = a.view(numpy.uint16) if a.dtype == numpy.float16 else a.view(a.real.dtype) if a.dtype.kind == 'c' else a
print(json.dumps([int(x) if v.dtype.kind in 'iub' else float(x) for x in v.ravel()]))`);
        assert.deepEqual(JSON.parse(printed), [...t.data].map(Number), dtype);
      }
      // numpy → ours: numpy writes known values; negative and fractional ones where the dtype has them.
      python(`
import numpy
a = numpy.arange(-6, 6).reshape(3, 4)
for name in ${JSON.stringify(NUMPY_NAMES.map(([, np]) => np))}:
    dt = getattr(numpy, name)
    v = a if numpy.dtype(dt).kind in 'ifc' else numpy.abs(a) % (2 if dt is numpy.bool_ else 256)
    numpy.save(${
        JSON.stringify(dir)
      } + '/np_' + name + '.npy', (v / 2 if numpy.dtype(dt).kind in 'fc' else v).astype(dt))
`);
      for (const [dtype, np] of NUMPY_NAMES) {
        const t = readNpy(Deno.readFileSync(join(dir, `np_${np}.npy`)));
        assert.equal(t.dtype, dtype);
        assert.deepEqual(t.shape, [3, 4]);
        const ints = Array.from({ length: 12 }, (_, i) => i - 6);
        let expected: number[];
        if (dtype === "bool") expected = ints.map((v) => Math.abs(v) % 2 === 0 ? 0 : 1);
        else if (dtype.startsWith("u")) expected = ints.map((v) => Math.abs(v));
        else if (dtype === "f16") {
          expected = [0xc200, 0xc100, 0xc000, 0xbe00, 0xbc00, 0xb800, 0, 0x3800, 0x3c00, 0x3e00, 0x4000, 0x4100];
        } else if (dtype === "c64" || dtype === "c128") expected = ints.flatMap((v) => [v / 2, 0]);
        else if (dtype.startsWith("f")) expected = ints.map((v) => v / 2);
        else expected = ints;
        assert.deepEqual([...t.data].map(Number), expected, dtype);
        // And numpy.save's bytes survive a read/write cycle unchanged.
        assert.deepEqual(writeNpy(t), Deno.readFileSync(join(dir, `np_${np}.npy`)), dtype);
      }
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "readNpy() reads numpy's version 2.0 and 3.0 files and big-endian data (byte-swapped)",
  ignore: numpyMissing,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      python(`
import numpy
from numpy.lib import format
a = numpy.arange(6, dtype=numpy.float32).reshape(2, 3) - 2.5
for version in [(2, 0), (3, 0)]:
    with open(${JSON.stringify(dir)} + '/v%d.npy' % version[0], 'wb') as f:
        format.write_array(f, a, version=version)
numpy.save(${JSON.stringify(dir)} + '/be.npy', a.astype('>f4'))
numpy.save(${JSON.stringify(dir)} + '/be_i8.npy', numpy.array([1, -2, 2**40], dtype='>i8'))
`);
      for (const file of ["v2.npy", "v3.npy", "be.npy"]) {
        const bytes = Deno.readFileSync(join(dir, file));
        const t = readNpy(bytes, file);
        assert.equal(t.dtype, "f32");
        assert.deepEqual(t.shape, [2, 3]);
        assert.deepEqual([...t.data], [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], file);
      }
      assert.equal(Deno.readFileSync(join(dir, "v3.npy"))[6], 3);
      assert.deepEqual([...readNpy(Deno.readFileSync(join(dir, "be_i8.npy"))).data], [1n, -2n, 2n ** 40n]);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

/** A `.npy` file with a hand-written header (padded to 64 bytes as numpy does) and raw data bytes. */
function npyFile(header: string, data: Uint8Array = new Uint8Array(0), version = 1): Uint8Array {
  const text = new TextEncoder().encode(header); // UTF-8: only meaningful for version 3
  const lengthBytes = version === 1 ? 2 : 4;
  const padded = Math.ceil((8 + lengthBytes + text.length + 1) / 64) * 64 - 8 - lengthBytes;
  const out = new Uint8Array(8 + lengthBytes + padded + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const view = new DataView(out.buffer);
  if (lengthBytes === 2) view.setUint16(8, padded, true);
  else view.setUint32(8, padded, true);
  out.set(text, 8 + lengthBytes);
  out.fill(0x20, 8 + lengthBytes + text.length, 8 + lengthBytes + padded - 1);
  out[8 + lengthBytes + padded - 1] = 0x0a;
  out.set(data, 8 + lengthBytes + padded);
  return out;
}

const FOUR_F32 = new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer);

Deno.test("readNpy() parses headers in any key order, with double quotes, odd spacing, no trailing comma or 3L", () => {
  for (
    const header of [
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
      '{"shape":(2,2),"fortran_order":False,"descr":"<f4"}',
      "{ 'descr' : '<f4' ,\t'fortran_order' : False , 'shape' : ( 2 , 2 , ) , }",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 2L)}",
    ]
  ) {
    const t = readNpy(npyFile(header, FOUR_F32));
    assert.deepEqual(t.shape, [2, 2], header);
    assert.deepEqual([...t.data], [1, 2, 3, 4], header);
  }
  const utf8 = readNpy(npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", FOUR_F32, 3));
  assert.deepEqual(utf8.shape, [4]);
  const v2 = readNpy(npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", FOUR_F32, 2));
  assert.deepEqual([...v2.data], [1, 2, 3, 4]);
  // A 1-byte type may be written with any byte-order mark.
  assert.equal(readNpy(npyFile("{'descr': '<u1', 'fortran_order': False, 'shape': (16,), }", FOUR_F32)).dtype, "u8");
});

Deno.test("readNpy() rejects bad files with one line naming the file and the problem", () => {
  const header = (descr: string, shape: string, fortran = "False"): string =>
    `{'descr': '${descr}', 'fortran_order': ${fortran}, 'shape': ${shape}, }`;
  const good = npyFile(header("<f4", "(4,)"), FOUR_F32);
  const cases: [Uint8Array, string][] = [
    [new Uint8Array(0), `not a NumPy file (expected the magic string "\\x93NUMPY", found an empty file)`],
    [
      new TextEncoder().encode("PK\x03\x04 zip archive"),
      `not a NumPy file (expected the magic string "\\x93NUMPY", found "PK\\x03\\x04 z")`,
    ],
    [
      Uint8Array.from([...good.subarray(0, 6), 4, 0, ...good.subarray(8)]),
      "unsupported format version 4.0 (expected 1.0, 2.0 or 3.0)",
    ],
    [good.subarray(0, 100), "header needs 118 bytes after offset 10, found 90"],
    [
      npyFile(header("<f4", "(4,)"), FOUR_F32.subarray(0, 10)),
      "shape (4,) of '<f4' needs 16 data bytes, found 10 (file truncated)",
    ],
    [npyFile(header("<f4", "(3,)"), FOUR_F32), "shape (3,) of '<f4' needs 12 data bytes, found 16"],
    [
      npyFile(header("<f4", "(2, 2)", "True"), FOUR_F32),
      "Fortran-order arrays are not supported (save a C-order array: numpy.ascontiguousarray)",
    ],
    [
      npyFile(header("<U5", "(1,)"), FOUR_F32),
      "unsupported dtype '<U5' (supported: <f2 <f4 <f8 <c8 <c16 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1)",
    ],
    [
      npyFile(header("|O", "(1,)"), FOUR_F32),
      "unsupported dtype '|O' (supported: <f2 <f4 <f8 <c8 <c16 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1)",
    ],
    [
      npyFile("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (4,), }", FOUR_F32),
      "unsupported dtype [('x', '<f4')] (structured dtypes are not supported; expected one of <f2 <f4 <f8 <c8 <c16 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1)",
    ],
    [
      npyFile("{'descr': [('naïve', '<f4')], 'fortran_order': False, 'shape': (4,), }", FOUR_F32, 3),
      "unsupported dtype [('naïve', '<f4')] (structured dtypes are not supported; expected one of <f2 <f4 <f8 <c8 <c16 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1)",
    ],
    [npyFile(header("<f4", "(-1,)"), FOUR_F32), "'shape' must be a tuple of non-negative integers, found (-1,)"],
    [npyFile(header("<f4", "[4]"), FOUR_F32), "'shape' must be a tuple of non-negative integers, found [4]"],
    [npyFile(header("<f4", "(4,)", "0"), FOUR_F32), "'fortran_order' must be True or False, found 0"],
    [npyFile("{'descr': '<f4', 'shape': (4,)}", FOUR_F32), "header has no 'fortran_order' key"],
    [
      npyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", FOUR_F32),
      "header has an unexpected key 'x'",
    ],
    [
      npyFile("{'descr': '<f4', 'fortran_order': False 'shape': (4,)}", FOUR_F32),
      `malformed header (expected ',' or '}' at offset 40): "{'descr': '<f4', 'fortran_order': False 'shape': (4,)}"`,
    ],
    [
      npyFile("{'descr': '<f4', 'fortran_order': Fals, 'shape': (4,)}", FOUR_F32),
      `malformed header (unexpected name Fals at offset 38): "{'descr': '<f4', 'fortran_order': Fals, 'shape': (4,)}"`,
    ],
    [npyFile("{'descr: '<f4'}", FOUR_F32), `malformed header (expected ':' at offset 10): "{'descr: '<f4'}"`],
    [npyFile("'descr'", FOUR_F32), `malformed header (expected a dict): "'descr'"`],
    [
      npyFile("{'descr': '<f4'} junk", FOUR_F32),
      `malformed header (unexpected text after the dict at offset 17): "{'descr': '<f4'} junk"`,
    ],
  ];
  for (const [bytes, message] of cases) {
    assert.throws(() => readNpy(bytes, "x.npy"), { message: `Cannot read .npy file "x.npy": ${message}` });
  }
  // Without a name the prefix has none either.
  assert.throws(() => readNpy(new Uint8Array(0)), {
    message: `Cannot read .npy file: not a NumPy file (expected the magic string "\\x93NUMPY", found an empty file)`,
  });
});

Deno.test("readNpy() checks the header length field against a file that ends inside it", () => {
  const bytes = Uint8Array.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 2, 0, 0x40, 0]);
  assert.throws(() => readNpy(bytes, "short.npy"), {
    message: `Cannot read .npy file "short.npy": file is 10 bytes, too short for a version 2.0 header length field`,
  });
});

Deno.test("writeNpy() rejects dtypes numpy lacks and data that does not match the shape", () => {
  assert.throws(() => writeNpy({ dtype: "bf16", shape: [1], data: new Uint16Array(1) }), {
    message: "Cannot write .npy file: dtype bf16 has no NumPy equivalent",
  });
  assert.throws(() => writeNpy({ dtype: "string", shape: [1], data: ["a"] }), {
    message: "Cannot write .npy file: dtype string has no NumPy equivalent",
  });
  assert.throws(() => writeNpy({ dtype: "f32", shape: [2, 2], data: new Float32Array(3) }), {
    message: "Cannot write .npy file: shape [2,2] (f32) needs 4 elements, found 3",
  });
});

Deno.test("readNpyFile() names the path when the file is missing", () => {
  const path = join(Deno.makeTempDirSync(), "missing.npy");
  assert.throws(() => readNpyFile(path), (e: Error) => e.message.startsWith(`Cannot read .npy file "${path}": `));
});
