/**
 * `OpDef`: everything the IR knows about one op type (shape inference,
 * reference semantics, cost), in one record per type. Families of ops live
 * in `ops/`; a registry maps `domain` + `type` to the record.
 * @module
 */
import { isDefaultDomain, type Op } from "./graph.ts";
import type { Tensor } from "./tensor.ts";
import type { Dim, TensorType } from "./types.ts";

/** What shape inference knows about an op's operands. */
export interface InferContext {
  /** Opset version of the op's domain in the module. */
  readonly opset: number;
  /** Operand types, null when omitted or unknown (or not a tensor). */
  readonly types: readonly (TensorType | null)[];
  /** Operand contents when constant (initializers, folded constants). */
  readonly constants: readonly (Tensor | null)[];
  /**
   * Known contents of small integer operands as dimensions, possibly symbolic:
   * what a `Shape` of `f32[N,3,32,32]` holds is `["N", 3, 32, 32]`. Lets
   * PyTorch's Shape/Gather/Concat/Reshape chains infer static result shapes.
   */
  readonly shapeValues: readonly (readonly Dim[] | null)[];
}

/** What the interpreter passes a kernel besides operands. */
export interface KernelContext {
  /** Opset version of the op's domain in the module. */
  readonly opset: number;
}

/** The definition of one op type. */
export interface OpDef {
  /** Op type, e.g. `"Conv"`. */
  readonly type: string;
  /** Domain; `""` (default) is ONNX's `ai.onnx`. */
  readonly domain?: string;
  /**
   * Result types from operand types and attributes; null entries where a
   * result's type cannot be known. Throws an `Error` naming the problem when the
   * operands are inconsistent (the verifier reports it with the op's name).
   */
  infer?(op: Op, ctx: InferContext): (TensorType | null)[];
  /** Contents of result 0 as dimensions, for shape-computing ops (see {@linkcode InferContext.shapeValues}). */
  shapeValue?(op: Op, ctx: InferContext): Dim[] | null;
  /** Reference semantics: result tensors from operand tensors (null for omitted optional operands). */
  interpret?(op: Op, inputs: readonly (Tensor | null)[], ctx: KernelContext): Tensor[];
  /** Multiply-accumulates of one run, from static operand and result types; absent means 0. */
  macs?(op: Op, operands: readonly (TensorType | null)[], results: readonly (TensorType | null)[]): number;
}

/** Key of an op type in a registry. */
function key(domain: string | undefined, type: string): string {
  const d = domain === undefined || isDefaultDomain(domain) ? "" : domain;
  return `${d}::${type}`;
}

/**
 * A set of op definitions. Built-ins come in {@linkcode builtinOps}; a plugin
 * adds its own into a copy.
 */
export class OpRegistry {
  readonly #defs = new Map<string, OpDef>();

  /** Create a registry holding `defs`. */
  constructor(defs: Iterable<OpDef> = []) {
    for (const d of defs) this.add(d);
  }

  /** Add a definition; a second one for the same type is an error. */
  add(def: OpDef): void {
    const k = key(def.domain, def.type);
    if (this.#defs.has(k)) throw new Error(`op ${def.domain ? def.domain + "." : ""}${def.type} is defined twice`);
    this.#defs.set(k, def);
  }

  /** The definition of `op`'s type, if any. */
  get(op: { type: string; domain: string }): OpDef | undefined {
    return this.#defs.get(key(op.domain, op.type));
  }

  /** Every definition. */
  all(): OpDef[] {
    return [...this.#defs.values()];
  }

  /** A copy that can be extended without touching this one. */
  clone(): OpRegistry {
    return new OpRegistry(this.#defs.values());
  }
}
