/**
 * Typed options shared by passes and targets: a schema of named options with
 * kinds, defaults, ranges and docs, and the checked values a pipeline resolves
 * to. Keys are camelCase in code and kebab-case in pipelines.
 * @module
 */
import { escapeControl, quote } from "../ir/quote.ts";

/**
 * How an option gets its value when a pipeline does not give it: from `default`,
 * or, with `optional: true`, not at all (the value is `undefined` and the
 * canonical pipeline leaves the option out).
 */
export type OptionDefault<T> =
  | {
    /** Value when the option is not given. */
    readonly default: T;
    /** Not optional. */
    readonly optional?: false;
  }
  | {
    /** The option has no value unless given. */
    readonly optional: true;
    /** Optional options have no default. */
    readonly default?: undefined;
  };

/** A number option (`ratio=0.6`). */
export type NumberOption = OptionDefault<number> & {
  /** Discriminant. */
  readonly kind: "number";
  /** Smallest allowed value. */
  readonly min?: number;
  /** Largest allowed value. */
  readonly max?: number;
  /** When true, `min` itself is not allowed. */
  readonly exclusiveMin?: boolean;
  /** When true, `max` itself is not allowed. */
  readonly exclusiveMax?: boolean;
  /** One line for `--list-passes`. */
  readonly doc: string;
};

/** An integer option (`mantissa=8`). */
export type IntOption = OptionDefault<number> & {
  /** Discriminant. */
  readonly kind: "int";
  /** Smallest allowed value. */
  readonly min?: number;
  /** Largest allowed value. */
  readonly max?: number;
  /** One line for `--list-passes`. */
  readonly doc: string;
};

/** A boolean option (`data-aware=true`). */
export type BoolOption = OptionDefault<boolean> & {
  /** Discriminant. */
  readonly kind: "bool";
  /** One line for `--list-passes`. */
  readonly doc: string;
};

/** One of a fixed set of words (`mode=channel`). */
export type EnumOption = OptionDefault<string> & {
  /** Discriminant. */
  readonly kind: "enum";
  /** Allowed words. */
  readonly values: readonly string[];
  /** One line for `--list-passes`. */
  readonly doc: string;
};

/** Free text (`prefix=fc`). */
export type StringOption = OptionDefault<string> & {
  /** Discriminant. */
  readonly kind: "string";
  /** One line for `--list-passes`. */
  readonly doc: string;
};

/** A list of words (`skip=[fc3,conv1]`). */
export type ListOption = OptionDefault<readonly string[]> & {
  /** Discriminant. */
  readonly kind: "list";
  /** One line for `--list-passes`. */
  readonly doc: string;
};

/** The declaration of one option. */
export type OptionSpec = NumberOption | IntOption | BoolOption | EnumOption | StringOption | ListOption;

/** Options by camelCase key. */
export type OptionSchema = Readonly<Record<string, OptionSpec>>;

/** The value type of one option declaration; `undefined` is a value of an optional option. */
export type OptionValue<O extends OptionSpec> =
  | (O extends NumberOption | IntOption ? number
    : O extends BoolOption ? boolean
    : O extends ListOption ? readonly string[]
    : O extends EnumOption ? O["values"][number]
    : string)
  | (O extends { readonly optional: true } ? undefined : never);

/** Resolved option values of a schema. */
export type OptionValues<S extends OptionSchema> = { readonly [K in keyof S]: OptionValue<S[K]> };

/** The raw value of an option as written in a pipeline: a word or a bracketed list of words. */
export type RawOptionValue = string | readonly string[];

/** `minChannels` → `min-channels`. */
export function kebabCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `min-channels` → `minChannels`. */
export function camelCase(key: string): string {
  return key.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/**
 * Default values of every option of a schema; an optional option is present with the value `undefined`.
 *
 * @example Defaults of a schema with an optional option
 * ```ts
 * import assert from "node:assert/strict";
 * import { defaultOptions } from "./options.ts";
 * const options = defaultOptions({
 *   energy: { kind: "number", default: 0.9, doc: "Energy kept" },
 *   rank: { kind: "int", optional: true, min: 1, doc: "Fixed rank" },
 * });
 * assert.deepEqual(options, { energy: 0.9, rank: undefined });
 * ```
 */
export function defaultOptions<S extends OptionSchema>(schema: S): OptionValues<S> {
  const out: Record<string, unknown> = {};
  for (const [k, spec] of Object.entries(schema)) out[k] = spec.optional ? undefined : spec.default;
  return out as OptionValues<S>;
}

/** The valid range of an option, as written in error messages: `[0, 0.95]`, `(0, 1]`, `one of a, b`. */
export function describeRange(spec: OptionSpec): string {
  switch (spec.kind) {
    case "number":
    case "int": {
      if (spec.min === undefined && spec.max === undefined) return spec.kind === "int" ? "an integer" : "a number";
      const lo = spec.min === undefined
        ? "(-inf"
        : `${spec.kind === "number" && spec.exclusiveMin ? "(" : "["}${spec.min}`;
      const hi = spec.max === undefined
        ? "inf)"
        : `${spec.max}${spec.kind === "number" && spec.exclusiveMax ? ")" : "]"}`;
      return `${spec.kind === "int" ? "an integer" : "a number"} in ${lo}, ${hi}`;
    }
    case "bool":
      return "true or false";
    case "enum":
      return `one of ${spec.values.join(", ")}`;
    case "string":
      return "text";
    case "list":
      return "a list [a,b,...]";
  }
}

/**
 * Check and convert one raw option value.
 *
 * @returns The typed value, or an error message (without the option's name).
 */
export function parseOptionValue(spec: OptionSpec, raw: RawOptionValue): { value: unknown } | { error: string } {
  const list = typeof raw === "string" ? "" : raw.join(",");
  const found = typeof raw === "string"
    ? quote(raw)
    : `[${escapeControl(list.slice(0, 80))}${list.length > 80 ? `... (${list.length} characters)` : ""}]`;
  const bad = (): { error: string } => ({ error: `must be ${describeRange(spec)}, found ${found}` });
  if (spec.kind === "list") return { value: typeof raw === "string" ? (raw === "" ? [] : [raw]) : [...raw] };
  if (typeof raw !== "string") return bad();
  switch (spec.kind) {
    case "number":
    case "int": {
      const x = raw.trim() === "" ? NaN : Number(raw);
      if (!Number.isFinite(x) || (spec.kind === "int" && !Number.isInteger(x))) return bad();
      if (spec.min !== undefined && (x < spec.min || (spec.kind === "number" && spec.exclusiveMin && x === spec.min))) {
        return bad();
      }
      if (spec.max !== undefined && (x > spec.max || (spec.kind === "number" && spec.exclusiveMax && x === spec.max))) {
        return bad();
      }
      return { value: x };
    }
    case "bool":
      return raw === "true" ? { value: true } : raw === "false" ? { value: false } : bad();
    case "enum":
      return spec.values.includes(raw) ? { value: raw } : bad();
    case "string":
      return { value: raw };
  }
}
