/**
 * Names and text as error messages echo them: control characters escaped so a
 * message stays one line and sends nothing to the terminal, and length capped so
 * a huge name cannot flood it. Every layer quotes user-given names this way.
 * @module
 */

/** C0 and C1 controls, DEL, and the Unicode line and paragraph separators. */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const SHORT: Readonly<Record<string, string>> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * `text` with every control character written as an escape (`\n`, `\t`, `\x1b`,
 * `\u2028`), so that printing it writes one line and no terminal control sequence.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { escapeControl } from "./quote.ts";
 * assert.equal(escapeControl("a\nb\x1b[31m"), "a\\nb\\x1b[31m");
 * ```
 */
export function escapeControl(text: string): string {
  return text.replace(CONTROL, (c) => {
    const code = c.charCodeAt(0);
    return SHORT[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16)}`);
  });
}

/**
 * `text` in double quotes for a message: `"` and `\` escaped, control characters
 * escaped as {@linkcode escapeControl} does, and a text longer than `max`
 * characters cut, saying how long it was.
 *
 * @param text A name or value given by a user, a model or a plugin.
 * @param max Characters kept at most (default 80).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { quote } from "./quote.ts";
 * assert.equal(quote("conv1"), '"conv1"');
 * assert.equal(quote('a"b\nc'), '"a\\"b\\nc"');
 * assert.equal(quote("x".repeat(100_000), 4), '"xxxx"... (100000 characters)');
 * ```
 */
export function quote(text: string, max = 80): string {
  const cut = text.length > max;
  const shown = escapeControl((cut ? text.slice(0, max) : text).replace(/["\\]/g, "\\$&"));
  return cut ? `"${shown}"... (${text.length} characters)` : `"${shown}"`;
}

/**
 * `message` as one bounded line: control characters escaped as {@linkcode escapeControl} does, and a message longer
 * than `max` characters cut, saying how much was left out. The CLI prints every error this way and `compile()`
 * throws its errors this way.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { oneLine } from "./quote.ts";
 * assert.equal(oneLine("bad\nname"), "bad\\nname");
 * assert.equal(oneLine("x".repeat(12), 10), "xxxxxxxxxx... (2 more characters)");
 * ```
 */
export function oneLine(message: string, max = 1000): string {
  const escaped = escapeControl(message);
  return escaped.length <= max ? escaped : `${escaped.slice(0, max)}... (${escaped.length - max} more characters)`;
}
