/**
 * Textual pass pipelines (`prune{ratio=0.6,min-channels=4},svd{energy=0.95},bfp`):
 * parsed against a {@linkcode PassLookup} into steps whose options are checked
 * and completed with defaults, and printed back in one canonical form. One
 * element, `name{key=value,...}`, is also how a target and its options are
 * written ({@linkcode parseElement}). Errors are one line plus the text with a
 * caret under the offending column.
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
 * Whitespace is allowed around elements, names, braces, brackets, `=` and
 * commas (`onnx { external-data = true }`). `{}` and `[]` are accepted (no
 * options, empty list).
 * Inside quotes a backslash takes the next character literally (`"a\"b"`).
 * @module
 */
import {
  defaultOptions,
  kebabCase,
  type OptionSchema,
  type OptionSpec,
  type OptionValues,
  parseOptionValue,
  type RawOptionValue,
} from "./options.ts";
import type { Pass, PassLookup } from "./pass.ts";
import { escapeControl, quote } from "../ir/quote.ts";

/** One pass of a pipeline with its resolved options. */
export interface PipelineStep {
  /** The pass. */
  readonly pass: Pass;
  /**
   * Option values by camelCase key: every key of the pass's schema, checked,
   * defaults filled in (`undefined` for an optional option not given).
   */
  readonly options: OptionValues<OptionSchema>;
}

/** What an element names: a pass or a target, each a name with an option schema. */
export interface Configurable {
  /** Name written in the text (`prune`, `onnx`). */
  readonly name: string;
  /** Option declarations by camelCase key. */
  readonly options: OptionSchema;
}

/** One parsed `name{key=value,...}`: what it names and its resolved options. */
export interface ParsedElement<T extends Configurable> {
  /** The pass or target the name refers to. */
  readonly item: T;
  /** Every option of its schema, checked, defaults filled in (`undefined` for an optional option not given). */
  readonly options: OptionValues<T["options"]>;
}

/** What an element names, as its error messages say it. */
export type ElementKind = "pass" | "target";

/**
 * A pipeline that does not parse or configure. `message` is one line; `caret`
 * holds the two lines that show where: the pipeline and a `^` under the column.
 */
export class PipelineError extends Error {
  /** The pipeline text as given. */
  readonly pipeline: string;
  /** 1-based column of the offending token (one past the end for a missing token). */
  readonly column: number;
  /**
   * The pipeline and a caret line under {@linkcode PipelineError.column}: whitespace shown as spaces, other control
   * characters escaped, and a pipeline longer than {@linkcode CARET_WIDTH} cut to a window around the column.
   */
  readonly caret: string;

  /** Create the error for `pipeline` at 1-based `column`. */
  constructor(message: string, pipeline: string, column: number) {
    super(message);
    this.name = "PipelineError";
    this.pipeline = pipeline;
    this.column = column;
    this.caret = caretLines(pipeline, column);
  }
}

/** Characters of the pipeline a caret shows at most. */
const CARET_WIDTH = 100;

function caretLines(pipeline: string, column: number): string {
  // A window of CARET_WIDTH characters (UTF-16 units, as `column` counts) with the column near its middle.
  const end = Math.min(pipeline.length, Math.max(column - 1 + CARET_WIDTH / 2, CARET_WIDTH));
  const start = Math.max(0, end - CARET_WIDTH);
  const show = (text: string): string => escapeControl(text.replace(/\s/g, " "));
  const before = (start > 0 ? "..." : "") + show(pipeline.slice(start, column - 1));
  const line = (start > 0 ? "..." : "") + show(pipeline.slice(start, end)) + (end < pipeline.length ? "..." : "");
  return `${line}\n${" ".repeat(before.length)}^`;
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
 * const lookup = passLookup([definePass({
 *   name: "prune",
 *   summary: "Remove channels",
 *   options: {
 *     ratio: { kind: "number", default: 0.5, min: 0, max: 1, exclusiveMax: true, doc: "Fraction removed" },
 *     minChannels: { kind: "int", default: 4, min: 1, doc: "Channels kept at least" },
 *     threshold: { kind: "number", optional: true, min: 0, doc: "Absolute cut; overrides ratio" },
 *   },
 *   run: () => false,
 * })]);
 * const steps = parsePipeline("prune{ratio=0.6}", lookup);
 * assert.deepEqual(steps[0].options, { ratio: 0.6, minChannels: 4, threshold: undefined });
 * assert.equal(printPipeline(steps), "prune{ratio=0.6,min-channels=4}");
 * assert.equal(printPipeline(parsePipeline("prune{threshold=0.1}", lookup)), "prune{ratio=0.5,min-channels=4,threshold=0.1}");
 * assert.throws(() => parsePipeline("prun", lookup), (e: unknown) => {
 *   assert.ok(e instanceof PipelineError);
 *   assert.equal(e.message, 'Cannot parse pipeline: unknown pass "prun" (did you mean "prune"?)');
 *   assert.equal(e.caret, "prun\n^");
 *   return true;
 * });
 * ```
 */
export function parsePipeline(text: string, lookup: PassLookup): PipelineStep[] {
  const parser = new ElementParser(text, "pass", (name) => lookup.pass(name), () => lookup.passes().map((p) => p.name));
  return parser.pipeline().map(({ item, options }) => ({ pass: item, options }));
}

/**
 * Parse one element, `name` or `name{key=value,...}` in the pipeline grammar,
 * against `candidates`: how `--target onnx{external-data=true}` is read. Blank
 * text around the element is allowed; anything else after it is an error.
 *
 * @param text The element.
 * @param candidates What the name may refer to.
 * @param what `"pass"` or `"target"`: the word the error messages use.
 * @returns The item named and its options, checked, defaults filled in.
 * @throws {PipelineError} For bad syntax or a list (`Cannot parse target: ...`), an unknown
 *   name (with the closest known one), or an unknown, repeated or out-of-range option
 *   (`Cannot configure target "onnx": ...`).
 *
 * @example Parse a target with options
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseElement, PipelineError } from "./pipeline.ts";
 * const onnx = {
 *   name: "onnx",
 *   options: { externalData: { kind: "bool", default: false, doc: "Weights in a side file" } },
 * } as const;
 * const { item, options } = parseElement("onnx{external-data=true}", [onnx], "target");
 * assert.equal(item, onnx);
 * assert.deepEqual(options, { externalData: true });
 * assert.throws(() => parseElement("onx", [onnx], "target"), (e: unknown) => {
 *   assert.ok(e instanceof PipelineError);
 *   assert.equal(e.message, 'Cannot parse target: unknown target "onx" (did you mean "onnx"?)');
 *   return true;
 * });
 * ```
 */
export function parseElement<T extends Configurable>(
  text: string,
  candidates: readonly T[],
  what: ElementKind,
): ParsedElement<T> {
  const byName = new Map(candidates.map((c) => [c.name, c]));
  return new ElementParser(text, what, (name) => byName.get(name), () => candidates.map((c) => c.name)).single();
}

/**
 * Print steps as the canonical pipeline: every option in schema order with its
 * value, lists as `[a,b]`, text quoted only when it must be. `parsePipeline` of
 * the result gives the same steps. An option missing from a step prints its
 * default; an optional option without a value is left out.
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
 *     seed: { kind: "int", optional: true, doc: "Stochastic rounding seed" },
 *     skip: { kind: "list", default: [], doc: "Ops left alone" },
 *   },
 *   run: () => false,
 * });
 * assert.equal(printPipeline([{ pass: bfp, options: { mantissa: 6, skip: ["fc3", "a b"] } }]), 'bfp{mantissa=6,skip=[fc3,"a b"]}');
 * assert.equal(printPipeline([{ pass: bfp, options: { seed: 3 } }]), "bfp{mantissa=8,seed=3,skip=[]}");
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
  const options: string[] = [];
  for (const [key, spec] of Object.entries(step.pass.options)) {
    const value = step.options[key] ?? spec.default;
    if (value !== undefined) options.push(`${kebabCase(key)}=${printValue(spec, value)}`);
  }
  return options.length === 0 ? step.pass.name : `${step.pass.name}{${options.join(",")}}`;
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

/** The words error messages use for each kind of element: the text's name and the plural. */
const WORDS: Readonly<Record<ElementKind, { readonly text: string; readonly plural: string }>> = {
  pass: { text: "pipeline", plural: "passes" },
  target: { text: "target", plural: "targets" },
};

/** A recursive-descent parser over a pipeline or a single element; `pos` is a 0-based index. */
class ElementParser<T extends Configurable> {
  readonly #text: string;
  readonly #what: ElementKind;
  readonly #find: (name: string) => T | undefined;
  readonly #known: () => readonly string[];
  #pos = 0;

  constructor(text: string, what: ElementKind, find: (name: string) => T | undefined, known: () => readonly string[]) {
    this.#text = text;
    this.#what = what;
    this.#find = find;
    this.#known = known;
  }

  /** `element ("," element)*`, or nothing. */
  pipeline(): ParsedElement<T>[] {
    const elements: ParsedElement<T>[] = [];
    this.#skipSpace();
    if (this.#atEnd()) return elements;
    for (;;) {
      elements.push(this.#element(elements.length === 0));
      this.#skipSpace();
      if (this.#atEnd()) return elements;
      const c = this.#peek();
      if (c === "}" || c === "]") this.#syntax(this.#pos, `unbalanced "${c}"`);
      if (c !== ",") {
        const previous = elements[elements.length - 1].item.name;
        this.#syntax(this.#pos, `expected "," after ${this.#what} ${quote(previous)}, found ${this.#found()}`);
      }
      const comma = this.#pos++;
      this.#skipSpace();
      if (this.#atEnd()) this.#syntax(comma, "trailing comma");
    }
  }

  /** Exactly one element, blank text around it allowed. */
  single(): ParsedElement<T> {
    this.#skipSpace();
    const element = this.#element(true);
    this.#skipSpace();
    if (this.#atEnd()) return element;
    const c = this.#peek();
    if (c === ",") this.#syntax(this.#pos, `expected one ${this.#what}, found a list`);
    if (c === "}" || c === "]") this.#syntax(this.#pos, `unbalanced "${c}"`);
    return this.#syntax(
      this.#pos,
      `expected the end of the ${WORDS[this.#what].text} after ${this.#what} ${
        quote(element.item.name)
      }, found ${this.#found()}`,
    );
  }

  #element(first: boolean): ParsedElement<T> {
    const start = this.#pos;
    const name = this.#word();
    const what = this.#what;
    if (name === "") {
      const c = this.#peek();
      if (c === ",") this.#syntax(start, first ? "empty element before the first comma" : "empty element (two commas)");
      if (c === "{") this.#syntax(start, `expected a ${what} name before "{"`);
      if (c === "}" || c === "]") this.#syntax(start, `unbalanced "${c}"`);
      const list = this.#atEnd() ? `; ${this.#knownList()}` : "";
      this.#syntax(start, `expected a ${what} name, found ${this.#found()}${list}`);
    }
    const item = this.#find(name);
    if (item === undefined) this.#syntax(start, this.#unknownName(name));
    const afterName = this.#pos;
    this.#skipSpace();
    if (this.#peek() !== "{") {
      this.#pos = afterName;
      return { item, options: defaultOptions(item.options) };
    }
    return { item, options: this.#options(item) };
  }

  #unknownName(name: string): string {
    const guess = closestName(name, this.#known());
    if (guess !== undefined) return `unknown ${this.#what} ${quote(name)} (did you mean ${quote(guess)}?)`;
    return `unknown ${this.#what} ${quote(name)}; ${this.#knownList()}`;
  }

  /** `passes are: a, b` (or `no passes are registered`). */
  #knownList(): string {
    const known = this.#known();
    const plural = WORDS[this.#what].plural;
    return known.length === 0 ? `no ${plural} are registered` : `${plural} are: ${known.join(", ")}`;
  }

  /** `{ key=value ... }` at `#pos`; returns the complete option record. */
  #options(item: T): OptionValues<T["options"]> {
    const open = this.#pos++;
    const schema = item.options;
    const byKebab = new Map(Object.keys(schema).map((k) => [kebabCase(k), k]));
    // Every value below is checked against its spec by parseOptionValue.
    const options = { ...defaultOptions(schema) } as Record<string, unknown>;
    const done = (): OptionValues<T["options"]> => options as OptionValues<T["options"]>;
    const given = new Set<string>();
    const unclosed = (): never =>
      this.#syntax(open, `unbalanced "{": the options of ${quote(item.name)} are not closed`);
    this.#skipSpace();
    if (this.#peek() === "}") {
      this.#pos++;
      return done();
    }
    for (;;) {
      const keyStart = this.#pos;
      const key = this.#word();
      if (key === "") {
        if (this.#atEnd()) unclosed();
        const c = this.#peek();
        if (c === ",") this.#syntax(keyStart, `empty option in the options of ${quote(item.name)}`);
        this.#syntax(keyStart, `expected an option of ${quote(item.name)}, found ${this.#found()}`);
      }
      const camelKey = byKebab.get(key);
      if (camelKey === undefined) this.#configure(item, keyStart, this.#unknownOption(key, [...byKebab.keys()]));
      if (given.has(camelKey)) this.#configure(item, keyStart, `option ${quote(key)} is given twice`);
      given.add(camelKey);
      this.#skipSpace();
      if (this.#peek() !== "=") {
        this.#syntax(this.#pos, `expected "=" after option ${quote(key)}, found ${this.#found()}`);
      }
      this.#pos++;
      this.#skipSpace();
      const valueStart = this.#pos;
      const raw = this.#value(item, key);
      const parsed = parseOptionValue(schema[camelKey], raw);
      if ("error" in parsed) this.#configure(item, valueStart, `option ${quote(key)} ${parsed.error}`);
      options[camelKey] = parsed.value;
      const spaced = this.#skipSpace();
      const c = this.#peek();
      if (c === "}") {
        this.#pos++;
        return done();
      }
      if (c === ",") {
        const comma = this.#pos++;
        this.#skipSpace();
        if (this.#peek() === "}") this.#syntax(comma, `trailing comma in the options of ${quote(item.name)}`);
        continue;
      }
      if (this.#atEnd()) unclosed();
      if (c === "]") this.#syntax(this.#pos, 'unbalanced "]"');
      if (!spaced) {
        this.#syntax(this.#pos, `expected "," or "}" after the value of option ${quote(key)}, found ${this.#found()}`);
      }
    }
  }

  #unknownOption(key: string, keys: readonly string[]): string {
    if (keys.length === 0) return `unknown option ${quote(key)}; it takes no options`;
    const guess = closestName(key, keys);
    const hint = guess === undefined ? "" : ` (did you mean ${quote(guess)}?)`;
    return `unknown option ${quote(key)}${hint}; options are: ${keys.join(", ")}`;
  }

  /** A bare word, quoted text or bracketed list. */
  #value(item: T, key: string): RawOptionValue {
    const c = this.#peek();
    if (c === "[") return this.#list(item, key);
    if (c === '"') return this.#quoted();
    const start = this.#pos;
    const bare = this.#bare();
    if (bare === "") {
      if (c === "]") this.#syntax(start, 'unbalanced "]"');
      this.#syntax(start, `missing value for option ${quote(key)} of ${quote(item.name)}`);
    }
    return bare;
  }

  #list(item: T, key: string): string[] {
    const open = this.#pos++;
    const items: string[] = [];
    const unclosed = (): never => this.#syntax(open, `unbalanced "[": the list of option ${quote(key)} is not closed`);
    this.#skipSpace();
    if (this.#peek() === "]") {
      this.#pos++;
      return items;
    }
    for (;;) {
      const start = this.#pos;
      const c = this.#peek();
      if (c === "[") this.#syntax(start, `lists cannot be nested (option ${quote(key)} of ${quote(item.name)})`);
      const element = c === '"' ? this.#quoted() : this.#bare();
      if (c !== '"' && element === "") {
        if (this.#atEnd() || c === "}") unclosed();
        if (c === ",") this.#syntax(start, `empty element in the list of option ${quote(key)}`);
        this.#syntax(start, `expected a list element, found ${this.#found()}`);
      }
      items.push(element);
      this.#skipSpace();
      const next = this.#peek();
      if (next === "]") {
        this.#pos++;
        return items;
      }
      if (next === ",") {
        const comma = this.#pos++;
        this.#skipSpace();
        if (this.#peek() === "]") this.#syntax(comma, `trailing comma in the list of option ${quote(key)}`);
        continue;
      }
      if (this.#atEnd() || next === "}") unclosed();
      this.#syntax(this.#pos, `expected "," or "]" in the list of option ${quote(key)}, found ${this.#found()}`);
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
    return this.#atEnd() ? `the end of the ${WORDS[this.#what].text}` : JSON.stringify(this.#peek());
  }

  #syntax(index: number, message: string): never {
    throw new PipelineError(`Cannot parse ${WORDS[this.#what].text}: ${message}`, this.#text, index + 1);
  }

  #configure(item: T, index: number, message: string): never {
    throw new PipelineError(`Cannot configure ${this.#what} ${quote(item.name)}: ${message}`, this.#text, index + 1);
  }
}
