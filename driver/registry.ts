/**
 * The registry of passes, targets and op definitions a compilation uses, and
 * the plugin record third parties hand it. Built-ins and plugins register the
 * same way; a name defined twice is an error naming both sources.
 * @module
 */
import type { OpDef, OpRegistry } from "../ir/op_def.ts";
import { builtinOps } from "../ir/builtin_ops.ts";
import type { OptionSchema, OptionSpec } from "../passes/options.ts";
import { quote } from "../ir/quote.ts";
import type { Pass, PassLookup } from "../passes/pass.ts";
import type { Target } from "../targets/target.ts";

/** The plugin API version this compiler implements. */
export const PLUGIN_API_VERSION = 1;

/**
 * A bundle of passes, targets and op definitions, as data. A plugin file
 * exports one as `plugin` (or as its default export).
 */
export interface Plugin {
  /** Plugin name, used in error messages. */
  readonly name: string;
  /** Must equal {@linkcode PLUGIN_API_VERSION}. */
  readonly apiVersion: number;
  /** Passes it adds. */
  readonly passes?: readonly Pass<OptionSchema>[];
  /** Targets it adds. */
  readonly targets?: readonly Target<OptionSchema>[];
  /** Op definitions it adds (shape inference, interpreter kernels, cost of custom ops). */
  readonly ops?: readonly OpDef[];
}

/** Passes, targets and ops by name, each remembering where it came from; the passes layer reads it as a `PassLookup`. */
export class Registry implements PassLookup {
  readonly #passes = new Map<string, { pass: Pass<OptionSchema>; source: string }>();
  readonly #targets = new Map<string, { target: Target<OptionSchema>; source: string }>();
  /** Op definitions in effect. */
  readonly ops: OpRegistry;

  /** An empty registry over `ops` (default: a copy of the built-in op definitions). */
  constructor(ops: OpRegistry = builtinOps.clone()) {
    this.ops = ops;
  }

  /** Add a pass; `source` names where it comes from in a clash message. */
  addPass(pass: Pass<OptionSchema>, source = "built-in"): void {
    const prior = this.#passes.get(pass.name);
    if (prior) throw new Error(`pass ${quote(pass.name)} is defined twice: by ${prior.source} and by ${source}`);
    checkName("pass", pass.name, source);
    this.#passes.set(pass.name, { pass, source });
  }

  /** Add a target; `source` names where it comes from in a clash message. */
  addTarget(target: Target<OptionSchema>, source = "built-in"): void {
    const prior = this.#targets.get(target.name);
    if (prior) throw new Error(`target ${quote(target.name)} is defined twice: by ${prior.source} and by ${source}`);
    checkName("target", target.name, source);
    this.#targets.set(target.name, { target, source });
  }

  /**
   * Add everything a plugin brings.
   *
   * @throws {Error} For a record of the wrong shape (naming the plugin and the field: `plugin "x": passes[0]
   *   ("p"): field "options" must be an object of option declarations, found null`), a wrong API version, an empty
   *   plugin, or a name clash (naming both sources).
   */
  addPlugin(plugin: Plugin, source?: string): void {
    const record = plugin as unknown;
    if (typeof record !== "object" || record === null || Array.isArray(record)) {
      throw new Error(
        `${source ?? "plugin"} is ${describe(record)}; expected { name, apiVersion, passes, targets, ops }`,
      );
    }
    const from = source ?? (typeof plugin.name === "string" ? `plugin ${quote(plugin.name)}` : "plugin");
    if (typeof plugin.name !== "string" || plugin.name === "") {
      throw new Error(`${from}: field "name" must be a non-empty string, found ${describe(plugin.name)}`);
    }
    if (plugin.apiVersion !== PLUGIN_API_VERSION) {
      throw new Error(
        `${from} targets plugin API ${
          typeof plugin.apiVersion === "number" ? plugin.apiVersion : describe(plugin.apiVersion)
        }; this compiler implements ${PLUGIN_API_VERSION}`,
      );
    }
    for (const field of ["passes", "targets", "ops"] as const) {
      const list = plugin[field];
      if (list !== undefined && !Array.isArray(list)) {
        throw new Error(`${from}: field "${field}" must be an array, found ${describe(list)}`);
      }
    }
    const count = (plugin.passes?.length ?? 0) + (plugin.targets?.length ?? 0) + (plugin.ops?.length ?? 0);
    if (count === 0) throw new Error(`${from} contributes no passes, targets or ops`);
    plugin.passes?.forEach((p, i) => checkRecord(`${from}: passes[${i}]`, p, "run"));
    plugin.targets?.forEach((t, i) => checkRecord(`${from}: targets[${i}]`, t, "emit"));
    plugin.ops?.forEach((d, i) => {
      if (typeof d !== "object" || d === null || typeof d.type !== "string" || d.type === "") {
        throw new Error(`${from}: ops[${i}] must be an op definition with a "type", found ${describe(d)}`);
      }
    });
    for (const p of plugin.passes ?? []) this.addPass(p, from);
    for (const t of plugin.targets ?? []) this.addTarget(t, from);
    for (const d of plugin.ops ?? []) this.ops.add(d);
  }

  /** The pass called `name`, if any. */
  pass(name: string): Pass<OptionSchema> | undefined {
    return this.#passes.get(name)?.pass;
  }

  /** The target called `name`, if any. */
  target(name: string): Target<OptionSchema> | undefined {
    return this.#targets.get(name)?.target;
  }

  /** Every pass, sorted by name. */
  passes(): Pass<OptionSchema>[] {
    return [...this.#passes.values()].map((e) => e.pass).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Every target, sorted by name. */
  targets(): Target<OptionSchema>[] {
    return [...this.#targets.values()].map((e) => e.target).sort((a, b) => a.name.localeCompare(b.name));
  }
}

/** Pass and target names are words of the pipeline grammar. */
function checkName(what: "pass" | "target", name: string, source: string): void {
  if (!/^[a-z][a-z0-9-]*$/.test(name)) {
    throw new Error(`${what} name ${quote(name)} (from ${source}) must be kebab-case: [a-z][a-z0-9-]*`);
  }
}

const OPTION_VALUE: Readonly<Record<OptionSpec["kind"], string>> = {
  number: "number",
  int: "number",
  bool: "boolean",
  enum: "string",
  string: "string",
  list: "object",
};

const DEFAULT_WORDS: Readonly<Record<OptionSpec["kind"], string>> = {
  number: "a number",
  int: "an integer",
  bool: "true or false",
  enum: "one of its values",
  string: "a string",
  list: "an array of words",
};

/**
 * A pass or target record as a plugin hands it: a name, a summary, option declarations of known kinds with
 * defaults of their kind, and its `run` or `emit` function. `at` names it in messages (`plugin "x": passes[0]`).
 */
function checkRecord(at: string, record: unknown, method: "run" | "emit"): void {
  if (typeof record !== "object" || record === null) {
    throw new Error(`${at} is ${describe(record)}; expected { name, summary, options, ${method} }`);
  }
  const r = record as Record<string, unknown>;
  if (typeof r.name !== "string") throw new Error(`${at}: field "name" must be a string, found ${describe(r.name)}`);
  const it = `${at} (${quote(r.name)})`;
  if (typeof r.summary !== "string") {
    throw new Error(`${it}: field "summary" must be a string, found ${describe(r.summary)}`);
  }
  if (typeof r[method] !== "function") {
    throw new Error(`${it}: field "${method}" must be a function, found ${describe(r[method])}`);
  }
  const options = r.options;
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new Error(`${it}: field "options" must be an object of option declarations, found ${describe(options)}`);
  }
  for (const [key, spec] of Object.entries(options)) {
    const option = `${it}: option ${quote(key)}`;
    if (!/^[a-z][A-Za-z0-9]*$/.test(key)) throw new Error(`${option}: keys must be camelCase words`);
    if (typeof spec !== "object" || spec === null) {
      throw new Error(`${option} must be a declaration { kind, default, doc }, found ${describe(spec)}`);
    }
    const s = spec as Record<string, unknown>;
    if (typeof s.kind !== "string" || !(s.kind in OPTION_VALUE)) {
      throw new Error(
        `${option}: unknown kind ${typeof s.kind === "string" ? quote(s.kind) : describe(s.kind)}; kinds are: ${
          Object.keys(OPTION_VALUE).join(", ")
        }`,
      );
    }
    if (typeof s.doc !== "string") throw new Error(`${option}: field "doc" must be a string, found ${describe(s.doc)}`);
    if (s.kind === "enum" && (!Array.isArray(s.values) || s.values.some((v) => typeof v !== "string"))) {
      throw new Error(`${option}: field "values" must be an array of words, found ${describe(s.values)}`);
    }
    if (s.optional === true) continue;
    const kind = s.kind as OptionSpec["kind"];
    const ok = typeof s.default === OPTION_VALUE[kind] && s.default !== null &&
      (kind !== "list" || (Array.isArray(s.default) && s.default.every((v) => typeof v === "string"))) &&
      (kind !== "int" || Number.isInteger(s.default)) &&
      (kind !== "enum" || (s.values as string[]).includes(s.default as string));
    if (!ok) {
      throw new Error(
        `${option}: field "default" must be ${DEFAULT_WORDS[kind]}, found ${
          describe(s.default)
        } (or declare it optional: true)`,
      );
    }
  }
}

/** What a value is, for a message: `null`, `an array`, `a string ("x")`, `a number (3)`, `an object`. */
function describe(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "nothing";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return `a string (${quote(value, 40)})`;
  if (typeof value === "number" || typeof value === "boolean") return `a ${typeof value} (${value})`;
  return typeof value === "object" ? "an object" : `a ${typeof value}`;
}
