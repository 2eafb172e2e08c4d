/**
 * Op attributes: a plain tagged union mirroring ONNX `AttributeProto`.
 * Ints are JS numbers (ONNX int64 values beyond 2^53 are clamped on import).
 * @module
 */
import type { Tensor } from "./tensor.ts";
import type { Graph } from "./graph.ts";
import type { Type } from "./types.ts";

/** One attribute value. `opaque` carries kinds the IR does not model (sparse tensors), verbatim. */
export type Attribute =
  | { readonly kind: "int"; readonly value: number }
  | { readonly kind: "float"; readonly value: number }
  | { readonly kind: "string"; readonly value: string }
  | { readonly kind: "tensor"; readonly value: Tensor }
  | { readonly kind: "graph"; readonly value: Graph }
  | { readonly kind: "type"; readonly value: Type }
  | { readonly kind: "ints"; readonly value: readonly number[] }
  | { readonly kind: "floats"; readonly value: readonly number[] }
  | { readonly kind: "strings"; readonly value: readonly string[] }
  | { readonly kind: "tensors"; readonly value: readonly Tensor[] }
  | { readonly kind: "graphs"; readonly value: readonly Graph[] }
  | { readonly kind: "types"; readonly value: readonly Type[] }
  | { readonly kind: "ref"; readonly value: string; readonly refKind: string }
  | { readonly kind: "opaque"; readonly value: unknown; readonly refKind: string };

/** The kind tags of {@linkcode Attribute}. */
export type AttributeKind = Attribute["kind"];

/** Attribute constructors: `attr.int(1)`, `attr.ints([1, 1])`, ... */
export const attr = {
  /** An int attribute. */
  int: (value: number): Attribute => ({ kind: "int", value }),
  /** A float attribute. */
  float: (value: number): Attribute => ({ kind: "float", value }),
  /** A string attribute. */
  string: (value: string): Attribute => ({ kind: "string", value }),
  /** A tensor attribute. */
  tensor: (value: Tensor): Attribute => ({ kind: "tensor", value }),
  /** An ints attribute. */
  ints: (value: readonly number[]): Attribute => ({ kind: "ints", value: [...value] }),
  /** A floats attribute. */
  floats: (value: readonly number[]): Attribute => ({ kind: "floats", value: [...value] }),
  /** A strings attribute. */
  strings: (value: readonly string[]): Attribute => ({ kind: "strings", value: [...value] }),
};
