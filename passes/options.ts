/**
 * Typed options shared by passes and targets: a schema of named options with
 * kinds, defaults, ranges and docs, and the checked values a pipeline resolves
 * to. Keys are camelCase in code and kebab-case in pipelines.
 * @module
 */

/** A number option (`ratio=0.6`). */
export interface NumberOption {
  /** Discriminant. */
  readonly kind: "number";
  /** Value when the option is not given. */
  readonly default: number;
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
}

/** An integer option (`mantissa=8`). */
export interface IntOption {
  /** Discriminant. */
  readonly kind: "int";
  /** Value when the option is not given. */
  readonly default: number;
  /** Smallest allowed value. */
  readonly min?: number;
  /** Largest allowed value. */
  readonly max?: number;
  /** One line for `--list-passes`. */
  readonly doc: string;
}

/** A boolean option (`data-aware=true`). */
export interface BoolOption {
  /** Discriminant. */
  readonly kind: "bool";
  /** Value when the option is not given. */
  readonly default: boolean;
  /** One line for `--list-passes`. */
  readonly doc: string;
}

/** One of a fixed set of words (`mode=channel`). */
export interface EnumOption {
  /** Discriminant. */
  readonly kind: "enum";
  /** Allowed words. */
  readonly values: readonly string[];
  /** Value when the option is not given. */
  readonly default: string;
  /** One line for `--list-passes`. */
  readonly doc: string;
}

/** Free text (`prefix=fc`). */
export interface StringOption {
  /** Discriminant. */
  readonly kind: "string";
  /** Value when the option is not given. */
  readonly default: string;
  /** One line for `--list-passes`. */
  readonly doc: string;
}

/** A list of words (`skip=[fc3,conv1]`). */
export interface ListOption {
  /** Discriminant. */
  readonly kind: "list";
  /** Value when the option is not given. */
  readonly default: readonly string[];
  /** One line for `--list-passes`. */
  readonly doc: string;
}

/** The declaration of one option. */
export type OptionSpec = NumberOption | IntOption | BoolOption | EnumOption | StringOption | ListOption;

/** Options by camelCase key. */
export type OptionSchema = Readonly<Record<string, OptionSpec>>;

/** The value type of one option declaration. */
export type OptionValue<O extends OptionSpec> = O extends NumberOption | IntOption ? number
  : O extends BoolOption ? boolean
  : O extends ListOption ? readonly string[]
  : O extends EnumOption ? O["values"][number]
  : string;

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

/** Default values of every option of a schema. */
export function defaultOptions<S extends OptionSchema>(schema: S): OptionValues<S> {
  const out: Record<string, unknown> = {};
  for (const [k, spec] of Object.entries(schema)) out[k] = spec.default;
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
  const bad = (): { error: string } => ({
    error: `must be ${describeRange(spec)}, found ${
      typeof raw === "string" ? JSON.stringify(raw) : `[${raw.join(",")}]`
    }`,
  });
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
