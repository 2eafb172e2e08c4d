/**
 * The registry of passes, targets and op definitions a compilation uses, and
 * the plugin record third parties hand it. Built-ins and plugins register the
 * same way; a name defined twice is an error naming both sources.
 * @module
 */
import type { OpDef, OpRegistry } from "../ir/op_def.ts";
import { builtinOps } from "../ir/builtin_ops.ts";
import type { OptionSchema } from "../passes/options.ts";
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
    if (prior) throw new Error(`pass "${pass.name}" is defined twice: by ${prior.source} and by ${source}`);
    checkName("pass", pass.name, source);
    this.#passes.set(pass.name, { pass, source });
  }

  /** Add a target; `source` names where it comes from in a clash message. */
  addTarget(target: Target<OptionSchema>, source = "built-in"): void {
    const prior = this.#targets.get(target.name);
    if (prior) throw new Error(`target "${target.name}" is defined twice: by ${prior.source} and by ${source}`);
    checkName("target", target.name, source);
    this.#targets.set(target.name, { target, source });
  }

  /**
   * Add everything a plugin brings.
   *
   * @throws {Error} For a wrong API version, an empty plugin, or a name clash (naming both sources).
   */
  addPlugin(plugin: Plugin, source = `plugin "${plugin.name}"`): void {
    if (plugin.apiVersion !== PLUGIN_API_VERSION) {
      throw new Error(
        `${source} targets plugin API ${plugin.apiVersion}; this compiler implements ${PLUGIN_API_VERSION}`,
      );
    }
    const count = (plugin.passes?.length ?? 0) + (plugin.targets?.length ?? 0) + (plugin.ops?.length ?? 0);
    if (count === 0) throw new Error(`${source} contributes no passes, targets or ops`);
    for (const p of plugin.passes ?? []) this.addPass(p, source);
    for (const t of plugin.targets ?? []) this.addTarget(t, source);
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
    throw new Error(`${what} name "${name}" (from ${source}) must be kebab-case: [a-z][a-z0-9-]*`);
  }
}
