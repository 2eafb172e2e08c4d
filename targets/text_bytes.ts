/**
 * Large text artifacts (C sources, memory initialization files) built as
 * UTF-8 bytes from the start: numbers are written digit by digit into
 * fixed-size chunks, so a 300 MB C file never exists as a JavaScript string
 * (V8 caps a string at about 512 MB) nor as arrays of per-number strings, and
 * the final copy releases each chunk as it goes.
 * @module
 */

const CHUNK = 1 << 20;
const DIGITS = new TextEncoder().encode("0123456789abcdef");

/**
 * Appends text and numbers as UTF-8 bytes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TextBytes } from "./text_bytes.ts";
 * const t = new TextBytes().text("x = ").int(-120).text(", 0x").hex(0xab, 4).text("\n");
 * assert.equal(new TextDecoder().decode(t.bytes()), "x = -120, 0x00ab\n");
 * ```
 */
export class TextBytes {
  #done: Uint8Array[] = [];
  #chunk = new Uint8Array(CHUNK);
  #at = 0;
  #length = 0;
  readonly #encoder = new TextEncoder();

  /** Bytes written so far. */
  get length(): number {
    return this.#length;
  }

  /** Append `s` as UTF-8. */
  text(s: string): this {
    // Short ASCII strings (separators, literals) byte by byte: encodeInto costs more than the copy.
    if (s.length <= 32) {
      this.#room(s.length);
      const at = this.#at;
      let i = 0;
      for (; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        this.#chunk[at + i] = c;
      }
      if (i === s.length) {
        this.#at += i;
        this.#length += i;
        return this;
      }
    }
    let rest = s;
    while (rest.length > 0) {
      const { read, written } = this.#encoder.encodeInto(rest, this.#chunk.subarray(this.#at));
      this.#at += written;
      this.#length += written;
      if (read === rest.length) break;
      rest = rest.slice(read);
      // A character that did not fit (or a chunk with no room left): start a new chunk.
      this.#flush(Math.max(CHUNK, 4 * Math.min(rest.length, CHUNK)));
    }
    return this;
  }

  /** Append the decimal digits of the integer `v` (a leading `-` when negative). */
  int(v: number): this {
    if (!Number.isSafeInteger(v)) return this.text(String(v));
    this.#room(17);
    if (v < 0) {
      this.#chunk[this.#at++] = 45;
      this.#length++;
      v = -v;
    }
    let end = this.#at + 1;
    for (let x = v; x >= 10; x = Math.floor(x / 10)) end++;
    const count = end - this.#at;
    for (let i = end - 1; i >= this.#at; i--) {
      const q = Math.floor(v / 10);
      this.#chunk[i] = 48 + (v - 10 * q);
      v = q;
    }
    this.#at = end;
    this.#length += count;
    return this;
  }

  /** Append the low `4 * digits` bits of the non-negative integer `v` as `digits` lowercase hex digits. */
  hex(v: number, digits: number): this {
    this.#room(digits);
    for (let i = digits - 1; i >= 0; i--) {
      this.#chunk[this.#at + i] = DIGITS[v % 16];
      v = Math.floor(v / 16);
    }
    this.#at += digits;
    this.#length += digits;
    return this;
  }

  /** Append the hex digits of a little-endian word of `bytes[at .. at + wordBytes)`, most significant first. */
  hexWord(bytes: Uint8Array, at: number, wordBytes: number, digits: number): this {
    this.#room(digits);
    let i = this.#at + digits - 1;
    for (let b = 0; b < wordBytes && i >= this.#at; b++) {
      const byte = bytes[at + b];
      this.#chunk[i--] = DIGITS[byte & 15];
      if (i >= this.#at) this.#chunk[i--] = DIGITS[byte >> 4];
    }
    this.#at += digits;
    this.#length += digits;
    return this;
  }

  /** Append another builder's bytes, leaving it empty. */
  append(other: TextBytes): this {
    this.#flush(CHUNK);
    other.#flush(0);
    this.#done.push(...other.#done);
    this.#length += other.#length;
    other.#done = [];
    other.#length = 0;
    return this;
  }

  /** The bytes written, as one array; the builder is empty afterwards. */
  bytes(): Uint8Array {
    this.#flush(0);
    const out = new Uint8Array(this.#length);
    let at = 0;
    for (let i = 0; i < this.#done.length; i++) {
      out.set(this.#done[i], at);
      at += this.#done[i].length;
      this.#done[i] = EMPTY; // released as the copy goes
    }
    this.#done = [];
    this.#chunk = new Uint8Array(CHUNK);
    this.#length = 0;
    return out;
  }

  #room(n: number): void {
    if (this.#at + n > this.#chunk.length) this.#flush(CHUNK);
  }

  /** Close the current chunk and start one of `size` bytes. */
  #flush(size: number): void {
    if (this.#at > 0) this.#done.push(this.#chunk.subarray(0, this.#at));
    this.#chunk = new Uint8Array(size);
    this.#at = 0;
  }
}

const EMPTY = new Uint8Array(0);
