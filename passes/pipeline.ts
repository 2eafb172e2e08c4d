/**
 * Textual pass pipelines (`prune{ratio=0.6,min-channels=4},svd{energy=0.95},bfp`):
 * parsed against a {@linkcode PassLookup} into steps whose options are checked and completed
 * with defaults, and printed back in one canonical form. Errors are one line
 * plus the pipeline with a caret under the offending column.
 *
 * Grammar (options may be separated by commas or spaces, so list values need brackets):
 *
 * ```
 * pipeline := ε | element ("," element)*
 * element  := name options?                    name, key := [a-z][a-z0-9-]*
 * options  := "{" option ((","|" ") option)* "}"
 * option   := key "=" value
 * value    := bare | '"' text '"' | "[" value ("," value)* "]"
 * ```
 *
 * Whitespace is allowed around elements, inside braces and brackets and before
 * `{`, but not around `=`. `{}` and `[]` are accepted (no options, empty list).
 * Inside quotes a backslash takes the next character literally (`"a\"b"`).
 * @module
 */
import { defaultOptions, kebabCase, type OptionSpec, parseOptionValue, type RawOptionValue } from "./options.ts";
import type { Pass, PassLookup } from "./pass.ts";

/** One pass of a pipeline with its resolved options. */
export interface PipelineStep {
  /** The pass. */
  readonly pass: Pass;
  /** Option values by camelCase key: every key of the pass's schema, checked, defaults filled in. */
  readonly options: Record<string, unknown>;
}

/**
 * A pipeline that does not parse or configure. `message` is one line; `caret`
 * holds the two lines that show where: the pipeline and a `^` under the column.
 */
export class PipelineError extends Error {
  /** The pipeline text as given. */
  readonly pipeline: string;
  /** 1-based column of the offending token (one past the end for a missing token). */
  readonly column: number;
  /** The pipeline (whitespace shown as spaces) and a caret line under {@linkcode PipelineError.column}. */
  readonly caret: string;

  /** Create the error for `pipeline` at 1-based `column`. */
  constructor(message: string, pipeline: string, column: number) {
    super(message);
    this.name = "PipelineError";
    this.pipeline = pipeline;
    this.column = column;
    this.caret = `${pipeline.replace(/\s/g, " ")}\n${" ".repeat(column - 1)}^`;
  }
}

/**
 * Parse a pipeline and resolve every pass and option against `lookup`.
 *
 * @param text The pipeline; empty (or blank) means no passes.
 * @param lookup Where pass names are looked up (a `Registry`, or {@linkcode passLookup}).
 * @returns One step per element, options complete.
 * @throws {PipelineError} For bad syntax (`Cannot parse pipeline: ...`), an unknown pass
 *   (with the closest known name), or an unknown, repeated or out-of-range option
 *   (`Cannot configure pass "prune": ...`).
 *
 * @example Parse and print a pipeline
 * ```ts
 * import assert from "node:assert/strict";
 * import { definePass, passLookup } from "./pass.ts";
 * import { parsePipeline, PipelineError, printPipeline } from "./pipeline.ts";
 * const registry = passLookup([definePass({
 *   name: "prune",
 *   summary: "Remove channels",
 *   options: {
 *     ratio: { kind: "number", default: 0.5, min: 0, max: 1, exclusiveMax: true, doc: "Fraction removed" },
 *     minChannels: { kind: "int", default: 4, min: 1, doc: "Channels kept at least" },
 *   },
 *   run: () => false,
 * })]);
 * const steps = parsePipeline("prune{ratio=0.6}", registry);
 * assert.deepEqual(steps[0].options, { ratio: 0.6, minChannels: 4 });
 * assert.equal(printPipeline(steps), "prune{ratio=0.6,min-channels=4}");
 * assert.throws(() => parsePipeline("prun", registry), (e: unknown) => {
 *   assert.ok(e instanceof PipelineError);
 *   assert.equal(e.message, 'Cannot parse pipeline: unknown pass "prun" (did you mean "prune"?)');
 *   assert.equal(e.caret, "prun\n^");
 *   return true;
 * });
 * ```
 */
export function parsePipeline(text: string, lookup: PassLookup): PipelineStep[] {
  return new PipelineParser(text, lookup).pipeline();
}

/**
 * Print steps as the canonical pipeline: every option in schema order with its
 * value, lists as `[a,b]`, text quoted only when it must be. `parsePipeline` of
 * the result gives the same steps. An option missing from a step prints its default.
 *
 * @example Print a step
 * ```ts
 * import assert from "node:assert/strict";
 * import { definePass } from "./pass.ts";
 * import { printPipeline } from "./pipeline.ts";
 * const bfp = definePass({
 *   name: "bfp",
 *   summary: "Block floating point",
 *   options: {
 *     mantissa: { kind: "int", default: 8, doc: "Mantissa bits" },
 *     skip: { kind: "list", default: [], doc: "Ops left alone" },
 *   },
 *   run: () => false,
 * });
 * assert.equal(printPipeline([{ pass: bfp, options: { mantissa: 6, skip: ["fc3", "a b"] } }]), 'bfp{mantissa=6,skip=[fc3,"a b"]}');
 * ```
 */
export function printPipeline(steps: readonly PipelineStep[]): string {
  return steps.map(printStep).join(",");
}

/**
 * The candidate closest to `name` by edit distance (adjacent swaps count as one
 * edit, case ignored), if it is close enough to be a likely typo.
 *
 * @example Suggest a pass name
 * ```ts
 * import assert from "node:assert/strict";
 * import { closestName } from "./pipeline.ts";
 * assert.equal(closestName("prun", ["dce", "prune"]), "prune");
 * assert.equal(closestName("xyz", ["dce", "prune"]), undefined);
 * ```
 */
export function closestName(name: string, candidates: Iterable<string>): string | undefined {
  // Allow roughly one edit per 2.5 characters (TypeScript's "did you mean" threshold), at least one.
  let bestDistance = Math.max(1, Math.floor(name.length * 0.4)) + 1;
  let best: string | undefined;
  for (const candidate of candidates) {
    const d = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  return best;
}

/** Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent transpositions. */
function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d = new Uint32Array(rows * cols);
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[(i - 1) * cols + j] + 1, d[i * cols + j - 1] + 1, d[(i - 1) * cols + j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        v = Math.min(v, d[(i - 2) * cols + j - 2] + 1);
      }
      d[i * cols + j] = v;
    }
  }
  return d[rows * cols - 1];
}

/** Characters of names and keys as scanned; validity is decided by the lookup, so `Prune` gets a suggestion. */
const WORD_CHAR = /[A-Za-z0-9_-]/;
/** Characters that end a bare value. */
const DELIMITER = /[\s,{}[\]"=]/;
/** Text that prints without quotes. */
const BARE = /^[^\s,{}[\]"=]+$/;

function printStep(step: PipelineStep): string {
  const keys = Object.keys(step.pass.options);
  if (keys.length === 0) return step.pass.name;
  const options = keys.map((key) => {
    const spec = step.pass.options[key];
    return `${kebabCase(key)}=${printValue(spec, step.options[key] ?? spec.default)}`;
  });
  return `${step.pass.name}{${options.join(",")}}`;
}

function printValue(spec: OptionSpec, value: unknown): string {
  switch (spec.kind) {
    case "number":
    case "int":
      // String(-0) is "0", which would parse back as +0.
      return Object.is(value, -0) ? "-0" : String(value);
    case "bool":
      return String(value);
    case "enum":
    case "string":
      return printText(String(value));
    case "list":
      return `[${(value as readonly string[]).map(printText).join(",")}]`;
  }
}

function printText(text: string): string {
  return BARE.test(text) ? text : `"${text.replace(/["\\]/g, "\\$&")}"`;
}

/** A recursive-descent parser over the pipeline text; `pos` is a 0-based index. */
class PipelineParser {
  readonly #text: string;
  readonly #lookup: PassLookup;
  #pos = 0;

  constructor(text: string, lookup: PassLookup) {
    this.#text = text;
    this.#lookup = lookup;
  }

  pipeline(): PipelineStep[] {
    const steps: PipelineStep[] = [];
    this.#skipSpace();
    if (this.#atEnd()) return steps;
    for (;;) {
      steps.push(this.#element(steps.length === 0));
      this.#skipSpace();
      if (this.#atEnd()) return steps;
      const c = this.#peek();
      if (c === "}" || c === "]") this.#syntax(this.#pos, `unbalanced "${c}"`);
      if (c !== ",") {
        const previous = steps[steps.length - 1].pass.name;
        this.#syntax(this.#pos, `expected "," after pass "${previous}", found ${this.#found()}`);
      }
      const comma = this.#pos++;
      this.#skipSpace();
      if (this.#atEnd()) this.#syntax(comma, "trailing comma");
    }
  }

  #element(first: boolean): PipelineStep {
    const start = this.#pos;
    const name = this.#word();
    if (name === "") {
      const c = this.#peek();
      if (c === ",") this.#syntax(start, first ? "empty element before the first comma" : "empty element (two commas)");
      if (c === "{") this.#syntax(start, 'expected a pass name before "{"');
      if (c === "}" || c === "]") this.#syntax(start, `unbalanced "${c}"`);
      this.#syntax(start, `expected a pass name, found ${this.#found()}`);
    }
    const pass = this.#lookup.pass(name);
    if (pass === undefined) this.#syntax(start, this.#unknownPass(name));
    const afterName = this.#pos;
    this.#skipSpace();
    if (this.#peek() !== "{") {
      this.#pos = afterName;
      return { pass, options: { ...defaultOptions(pass.options) } };
    }
    return { pass, options: this.#options(pass) };
  }

  #unknownPass(name: string): string {
    const known = this.#lookup.passes().map((p) => p.name);
    const guess = closestName(name, known);
    if (guess !== undefined) return `unknown pass "${name}" (did you mean "${guess}"?)`;
    return `unknown pass "${name}"; ${
      known.length === 0 ? "no passes are registered" : `passes are: ${known.join(", ")}`
    }`;
  }

  /** `{ key=value ... }` at `#pos`; returns the complete option record. */
  #options(pass: Pass): Record<string, unknown> {
    const open = this.#pos++;
    const schema = pass.options;
    const byKebab = new Map(Object.keys(schema).map((k) => [kebabCase(k), k]));
    const options: Record<string, unknown> = { ...defaultOptions(schema) };
    const given = new Set<string>();
    const unclosed = (): never => this.#syntax(open, `unbalanced "{": the options of "${pass.name}" are not closed`);
    this.#skipSpace();
    if (this.#peek() === "}") {
      this.#pos++;
      return options;
    }
    for (;;) {
      const keyStart = this.#pos;
      const key = this.#word();
      if (key === "") {
        if (this.#atEnd()) unclosed();
        const c = this.#peek();
        if (c === ",") this.#syntax(keyStart, `empty option in the options of "${pass.name}"`);
        this.#syntax(keyStart, `expected an option of "${pass.name}", found ${this.#found()}`);
      }
      const camelKey = byKebab.get(key);
      if (camelKey === undefined) this.#configure(pass, keyStart, this.#unknownOption(key, [...byKebab.keys()]));
      if (given.has(camelKey)) this.#configure(pass, keyStart, `option "${key}" is given twice`);
      given.add(camelKey);
      if (this.#peek() !== "=") this.#syntax(this.#pos, `expected "=" after option "${key}", found ${this.#found()}`);
      this.#pos++;
      const valueStart = this.#pos;
      const raw = this.#value(pass, key);
      const parsed = parseOptionValue(schema[camelKey], raw);
      if ("error" in parsed) this.#configure(pass, valueStart, `option "${key}" ${parsed.error}`);
      options[camelKey] = parsed.value;
      const spaced = this.#skipSpace();
      const c = this.#peek();
      if (c === "}") {
        this.#pos++;
        return options;
      }
      if (c === ",") {
        const comma = this.#pos++;
        this.#skipSpace();
        if (this.#peek() === "}") this.#syntax(comma, `trailing comma in the options of "${pass.name}"`);
        continue;
      }
      if (this.#atEnd()) unclosed();
      if (c === "]") this.#syntax(this.#pos, 'unbalanced "]"');
      if (!spaced) {
        this.#syntax(this.#pos, `expected "," or "}" after the value of option "${key}", found ${this.#found()}`);
      }
    }
  }

  #unknownOption(key: string, keys: readonly string[]): string {
    if (keys.length === 0) return `unknown option "${key}"; it takes no options`;
    const guess = closestName(key, keys);
    const hint = guess === undefined ? "" : ` (did you mean "${guess}"?)`;
    return `unknown option "${key}"${hint}; options are: ${keys.join(", ")}`;
  }

  /** A bare word, quoted text or bracketed list. */
  #value(pass: Pass, key: string): RawOptionValue {
    const c = this.#peek();
    if (c === "[") return this.#list(pass, key);
    if (c === '"') return this.#quoted();
    const start = this.#pos;
    const bare = this.#bare();
    if (bare === "") {
      if (c === "]") this.#syntax(start, 'unbalanced "]"');
      this.#syntax(start, `missing value for option "${key}" of "${pass.name}"`);
    }
    return bare;
  }

  #list(pass: Pass, key: string): string[] {
    const open = this.#pos++;
    const items: string[] = [];
    const unclosed = (): never => this.#syntax(open, `unbalanced "[": the list of option "${key}" is not closed`);
    this.#skipSpace();
    if (this.#peek() === "]") {
      this.#pos++;
      return items;
    }
    for (;;) {
      const start = this.#pos;
      const c = this.#peek();
      if (c === "[") this.#syntax(start, `lists cannot be nested (option "${key}" of "${pass.name}")`);
      const item = c === '"' ? this.#quoted() : this.#bare();
      if (c !== '"' && item === "") {
        if (this.#atEnd() || c === "}") unclosed();
        if (c === ",") this.#syntax(start, `empty element in the list of option "${key}"`);
        this.#syntax(start, `expected a list element, found ${this.#found()}`);
      }
      items.push(item);
      this.#skipSpace();
      const next = this.#peek();
      if (next === "]") {
        this.#pos++;
        return items;
      }
      if (next === ",") {
        const comma = this.#pos++;
        this.#skipSpace();
        if (this.#peek() === "]") this.#syntax(comma, `trailing comma in the list of option "${key}"`);
        continue;
      }
      if (this.#atEnd() || next === "}") unclosed();
      this.#syntax(this.#pos, `expected "," or "]" in the list of option "${key}", found ${this.#found()}`);
    }
  }

  #quoted(): string {
    const open = this.#pos++;
    let text = "";
    while (!this.#atEnd()) {
      const c = this.#text[this.#pos++];
      if (c === '"') return text;
      if (c === "\\" && !this.#atEnd()) text += this.#text[this.#pos++];
      else text += c;
    }
    return this.#syntax(open, "unterminated string");
  }

  #bare(): string {
    const start = this.#pos;
    while (!this.#atEnd() && !DELIMITER.test(this.#text[this.#pos])) this.#pos++;
    return this.#text.slice(start, this.#pos);
  }

  #word(): string {
    const start = this.#pos;
    while (!this.#atEnd() && WORD_CHAR.test(this.#text[this.#pos])) this.#pos++;
    return this.#text.slice(start, this.#pos);
  }

  /** Skip whitespace; true when there was some. */
  #skipSpace(): boolean {
    const start = this.#pos;
    while (!this.#atEnd() && /\s/.test(this.#text[this.#pos])) this.#pos++;
    return this.#pos > start;
  }

  #atEnd(): boolean {
    return this.#pos >= this.#text.length;
  }

  #peek(): string {
    return this.#text[this.#pos] ?? "";
  }

  #found(): string {
    return this.#atEnd() ? "the end of the pipeline" : JSON.stringify(this.#peek());
  }

  #syntax(index: number, message: string): never {
    throw new PipelineError(`Cannot parse pipeline: ${message}`, this.#text, index + 1);
  }

  #configure(pass: Pass, index: number, message: string): never {
    throw new PipelineError(`Cannot configure pass "${pass.name}": ${message}`, this.#text, index + 1);
  }
}
