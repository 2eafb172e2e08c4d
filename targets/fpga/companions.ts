/**
 * Memory initialization files from a segment's word stream (the bytes the
 * image holds, cut into `ceil(word-bits/8)`-byte little-endian words): Xilinx
 * `.coe`, Intel `.mif` and Verilog `$readmemh` `.mem`. Words are written in
 * hex, most significant digit first, `ceil(word-bits/4)` digits.
 * @module
 */

/** The memory words of a word stream as hex strings. */
export function hexWords(bytes: Uint8Array, wordBits: number): string[] {
  const wordBytes = Math.ceil(wordBits / 8), digits = Math.ceil(wordBits / 4);
  const words: string[] = [];
  for (let at = 0; at < bytes.length; at += wordBytes) {
    let h = "";
    for (let b = wordBytes - 1; b >= 0; b--) h += bytes[at + b].toString(16).padStart(2, "0");
    words.push(h.slice(h.length - digits));
  }
  return words;
}

/**
 * Xilinx COE: `memory_initialization_radix=16;`, then `memory_initialization_vector=` and the words, comma-separated,
 * `;` after the last.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { coeFile } from "./companions.ts";
 * assert.equal(coeFile(new Uint8Array([1, 0xab]), 8), "memory_initialization_radix=16;\nmemory_initialization_vector=\n01,\nab;\n");
 * ```
 */
export function coeFile(bytes: Uint8Array, wordBits: number): string {
  const words = hexWords(bytes, wordBits);
  return `memory_initialization_radix=16;\nmemory_initialization_vector=\n${words.join(",\n")};\n`;
}

/**
 * Intel MIF: `WIDTH`, `DEPTH`, unsigned decimal addresses, hex data.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mifFile } from "./companions.ts";
 * assert.match(mifFile(new Uint8Array([1, 2]), 16), /WIDTH=16;\nDEPTH=1;\n.*CONTENT BEGIN\n  0 : 0201;\nEND;\n$/s);
 * ```
 */
export function mifFile(bytes: Uint8Array, wordBits: number): string {
  const words = hexWords(bytes, wordBits);
  const body = words.map((w, i) => `  ${i} : ${w};`).join("\n");
  return `WIDTH=${wordBits};\nDEPTH=${words.length};\n\nADDRESS_RADIX=UNS;\nDATA_RADIX=HEX;\n\n` +
    `CONTENT BEGIN\n${body}${words.length > 0 ? "\n" : ""}END;\n`;
}

/**
 * Verilog `$readmemh`: an `@addr` marker (hex word address) at the start and every `wordsPerLine` words, then the
 * words one per line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { memFile } from "./companions.ts";
 * assert.equal(memFile(new Uint8Array([1, 2, 3]), 8, 2), "@0\n01\n02\n@2\n03\n");
 * ```
 */
export function memFile(bytes: Uint8Array, wordBits: number, wordsPerBlock: number): string {
  const words = hexWords(bytes, wordBits);
  const lines: string[] = [];
  words.forEach((w, i) => {
    if (i % wordsPerBlock === 0) lines.push(`@${i.toString(16)}`);
    lines.push(w);
  });
  return lines.map((l) => `${l}\n`).join("");
}
