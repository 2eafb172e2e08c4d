/**
 * Memory initialization files from a segment's word stream (the bytes the
 * image holds, cut into `ceil(word-bits/8)`-byte little-endian words): Xilinx
 * `.coe`, Intel `.mif` and Verilog `$readmemh` `.mem`. Words are written in
 * hex, most significant digit first, `ceil(word-bits/4)` digits.
 * @module
 */
import { TextBytes } from "../text_bytes.ts";

/**
 * Write each memory word of a word stream into `out` as hex digits, between the text `before(i)` and `after(i)` give
 * for word `i` (bytes, not strings per word: a large layer has tens of millions of words).
 */
function writeWords(
  out: TextBytes,
  bytes: Uint8Array,
  wordBits: number,
  before: (i: number) => string,
  after: (i: number, last: boolean) => string,
): TextBytes {
  const wordBytes = Math.ceil(wordBits / 8), digits = Math.ceil(wordBits / 4);
  const count = Math.ceil(bytes.length / wordBytes);
  for (let i = 0; i < count; i++) {
    const lead = before(i);
    if (lead !== "") out.text(lead);
    out.hexWord(bytes, i * wordBytes, wordBytes, digits).text(after(i, i === count - 1));
  }
  return out;
}

/** The memory words of a word stream as hex strings. */
export function hexWords(bytes: Uint8Array, wordBits: number): string[] {
  const text = new TextDecoder().decode(writeWords(new TextBytes(), bytes, wordBits, () => "", () => "\n").bytes());
  return text === "" ? [] : text.slice(0, -1).split("\n");
}

/**
 * Xilinx COE: `memory_initialization_radix=16;`, then `memory_initialization_vector=` and the words, comma-separated,
 * `;` after the last.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { coeFile } from "./companions.ts";
 * assert.equal(new TextDecoder().decode(coeFile(new Uint8Array([1, 0xab]), 8)), "memory_initialization_radix=16;\nmemory_initialization_vector=\n01,\nab;\n");
 * ```
 */
export function coeFile(bytes: Uint8Array, wordBits: number): Uint8Array {
  const out = new TextBytes().text("memory_initialization_radix=16;\nmemory_initialization_vector=\n");
  if (bytes.length === 0) out.text(";\n");
  return writeWords(out, bytes, wordBits, () => "", (_, last) => last ? ";\n" : ",\n").bytes();
}

/**
 * Intel MIF: `WIDTH`, `DEPTH`, unsigned decimal addresses, hex data.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mifFile } from "./companions.ts";
 * assert.match(new TextDecoder().decode(mifFile(new Uint8Array([1, 2]), 16)), /WIDTH=16;\nDEPTH=1;\n.*CONTENT BEGIN\n  0 : 0201;\nEND;\n$/s);
 * ```
 */
export function mifFile(bytes: Uint8Array, wordBits: number): Uint8Array {
  const depth = Math.ceil(bytes.length / Math.ceil(wordBits / 8));
  const out = new TextBytes().text(
    `WIDTH=${wordBits};\nDEPTH=${depth};\n\nADDRESS_RADIX=UNS;\nDATA_RADIX=HEX;\n\nCONTENT BEGIN\n`,
  );
  return writeWords(out, bytes, wordBits, (i) => `  ${i} : `, () => ";\n").text("END;\n").bytes();
}

/**
 * Verilog `$readmemh`: an `@addr` marker (hex word address) at the start and every `wordsPerLine` words, then the
 * words one per line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { memFile } from "./companions.ts";
 * assert.equal(new TextDecoder().decode(memFile(new Uint8Array([1, 2, 3]), 8, 2)), "@0\n01\n02\n@2\n03\n");
 * ```
 */
export function memFile(bytes: Uint8Array, wordBits: number, wordsPerBlock: number): Uint8Array {
  const marker = (i: number) => i % wordsPerBlock === 0 ? `@${i.toString(16)}\n` : "";
  return writeWords(new TextBytes(), bytes, wordBits, marker, () => "\n").bytes();
}
