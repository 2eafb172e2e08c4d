/**
 * `TextBytes` against the plain string it replaces: the same UTF-8 bytes for
 * integers of every size and sign, hex words, text with multi-byte characters
 * falling across chunk boundaries, strings longer than a chunk, and appended
 * builders.
 * @module
 */
import assert from "node:assert/strict";
import { TextBytes } from "./text_bytes.ts";

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** Deterministic pseudo-random integers in [0, 2^32). */
function* lcg(seed: number): Generator<number> {
  let s = seed >>> 0;
  for (;;) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    yield s;
  }
}

Deno.test("integers, hex and text match the string they replace, across many chunks", () => {
  const out = new TextBytes();
  let expected = "";
  const random = lcg(7);
  const pieces: string[] = [];
  for (let i = 0; i < 400_000; i++) {
    const r = random.next().value!;
    const kind = r % 5;
    if (kind === 0) {
      const v = (r % 2 === 0 ? -1 : 1) * Math.floor(r / 7) * (r % 3 === 0 ? 2 ** 20 : 1);
      out.int(v);
      pieces.push(String(v));
    } else if (kind === 1) {
      out.hex(r & 0xffff, 4);
      pieces.push((r & 0xffff).toString(16).padStart(4, "0"));
    } else if (kind === 2) {
      out.text("µ€𝄞, ");
      pieces.push("µ€𝄞, ");
    } else if (kind === 3) {
      const v = [0, -1, 9, 10, 99, 100, -128, 127, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER][r % 10];
      out.int(v);
      pieces.push(String(v));
    } else {
      out.text("\n");
      pieces.push("\n");
    }
  }
  expected = pieces.join("");
  assert.equal(out.length, new TextEncoder().encode(expected).length);
  assert.ok(out.length > 2 << 20, "the test crosses at least two 1 MiB chunks");
  assert.equal(decode(out.bytes()), expected);
  assert.equal(out.length, 0, "bytes() empties the builder");
});

Deno.test("a string longer than a chunk, non-safe integers and appended builders", () => {
  const long = "ab€".repeat(700_000); // 4.9 MB of UTF-8
  const tail = new TextBytes().text("tail ").int(1e21).text(" ").int(-0).text(" ").int(2.5);
  const out = new TextBytes().text("head ").text(long).append(tail).text(" end");
  assert.equal(decode(out.bytes()), `head ${long}tail 1e+21 0 2.5 end`);
  assert.equal(tail.length, 0, "append() takes the other builder's bytes");
});

Deno.test("hexWord writes little-endian words most significant digit first", () => {
  const bytes = Uint8Array.of(0x34, 0x12, 0xcd, 0xab, 0x0f);
  const out = new TextBytes().hexWord(bytes, 0, 2, 4).text(" ").hexWord(bytes, 2, 2, 3).text(" ").hexWord(
    bytes,
    4,
    1,
    2,
  );
  assert.equal(decode(out.bytes()), "1234 bcd 0f");
});
