/**
 * `OpDef`: everything the IR knows about one op type (shape inference,
 * reference semantics, cost), in one record per type. Families of ops live
 * in `ops/`; a registry maps `domain` + `type` to the record.
 * @module
 */
import { isDefaultDomain, type Op, type Value } from "./graph.ts";
import type { Tensor, TensorData } from "./tensor.ts";
import type { Dim, DType, TensorType } from "./types.ts";

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
  /**
   * Whether the kernel may overwrite operand `index`'s storage with its result:
   * true when the interpreter drops that value after this op and no other live
   * value, input, constant or attribute shares the storage. Absent outside the
   * interpreter (never reuse then).
   */
  readonly reusable?: (index: number) => boolean;
  /**
   * Storage for `n` elements of `dtype`, possibly recycled from a value the
   * interpreter has dropped: its contents are unspecified, so only a kernel
   * that writes every element may ask. Absent outside the interpreter.
   */
  readonly alloc?: (dtype: DType, n: number) => TensorData;
}

/**
 * A constant operand one of whose axes runs over a channel space: pruning a
 * channel removes that slice of it (a Conv weight's axis 0 for its output
 * channels, a BatchNormalization scale's axis 0, a per-channel Mul constant).
 */
export interface ChannelParam {
  /** Operand index of the constant. */
  readonly operand: number;
  /** Axis of the constant that runs over the channels. */
  readonly axis: number;
}

/**
 * Which channels of a value survive pruning: its kept local channel indices
 * (axis 1), or null when it lost none or carries no channels. Handed to
 * {@linkcode ChannelMapping.resize}.
 */
export type ChannelKeep = (value: Value) => readonly number[] | null;

/**
 * How an op carries channels (axis 1 of its operands and results), the answer
 * of {@linkcode OpDef.channels}. Structured pruning (the channel-groups
 * analysis and the `prune` pass) only knows these kinds, never op types:
 *
 * - `same`: the listed operands and results share channels one to one
 *   (elementwise ops with broadcasting, BatchNormalization, pooling,
 *   reductions over other axes, depthwise convolution); operands not listed
 *   are constants or broadcast over the channel axis. `params` follow the
 *   shared channels.
 * - `linear`: a linear map (Conv, Gemm, MatMul) reads operand 0's channels
 *   (the `inputs` params run over them) and makes result 0's channels anew
 *   (the `outputs` params). With `groups > 1`, input channel `k*G+j` feeds only
 *   group `k`, so channel `j` of every group is pruned together on each side
 *   and the groups stay equal.
 * - `offsets`: channel `j` of `from` is channel `offset + j` of `to` for each
 *   link (Concat, Split, Slice on the channel axis).
 * - `permute`: channel `j` of `to` is channel `perm[j]` of operand 0 (a
 *   channel shuffle; `through` lists the other ops of a multi-op pattern,
 *   which the analysis then skips).
 * - `select`: result 0's channels are a selection of operand 0's, which stays
 *   whole (a constant-index Gather: a producer of new channels).
 * - `flatten`: result 0 is operand 0 seen as `[N, C*features]` features.
 * - `none`: channel-carrying operands are read in full and results carry no
 *   channels (a barrier only where the op reads channels it would lose).
 *
 * `resize`, when given, updates what the kinds above do not cover
 * (attributes such as `group` or Split sizes, index operands) after pruning.
 */
export type ChannelMapping =
  & (
    | {
      /** Operands and results share channels one to one. */
      readonly kind: "same";
      /** Operand indices whose axis 1 is the shared channel space. */
      readonly operands: readonly number[];
      /** Result indices whose axis 1 is the shared channel space. */
      readonly results: readonly number[];
      /** Constants indexed by the shared channels. */
      readonly params?: readonly ChannelParam[];
    }
    | {
      /** A linear map from operand 0's channels to result 0's. */
      readonly kind: "linear";
      /** Constants whose axis runs over operand 0's channels (per group when grouped). */
      readonly inputs: readonly ChannelParam[];
      /** Constants whose axis runs over result 0's channels. */
      readonly outputs: readonly ChannelParam[];
      /** Channel groups (1 when absent). */
      readonly groups?: number;
    }
    | {
      /** Slices of channel spaces. */
      readonly kind: "offsets";
      /** Channel `j` of `from` is channel `offset + j` of `to`. */
      readonly links: readonly { readonly from: Value; readonly to: Value; readonly offset: number }[];
    }
    | {
      /** A channel permutation. */
      readonly kind: "permute";
      /** The value whose channel `j` is operand 0's channel `perm[j]` (result 0, or the end of the pattern). */
      readonly to: Value;
      /** Operand-0 channel of each channel of `to`. */
      readonly perm: readonly number[];
      /** The pattern's other ops, skipped by the analysis. */
      readonly through?: readonly Op[];
    }
    | {
      /** A channel selection: result 0's channels are new, operand 0 stays whole. */
      readonly kind: "select";
    }
    | {
      /** A view of channels as features. */
      readonly kind: "flatten";
      /** Features per channel (`H*W`). */
      readonly features: number;
    }
    | {
      /** Carries no channels. */
      readonly kind: "none";
    }
  )
  & {
    /** Update attributes and index operands after pruning (see {@linkcode ChannelKeep}). */
    readonly resize?: (keep: ChannelKeep) => void;
  };

/** What a channel rule knows besides the op. */
export interface ChannelContext {
  /** Opset version of the op's domain in the module. */
  readonly opset: number;
  /** Channels (axis 1, static) of a value, or null when it has none or they are unknown; null for constants. */
  channelsOf(value: Value | null): number | null;
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
  /**
   * Channel rule for structured pruning: how channels (axis 1) map from
   * operands to results ({@linkcode ChannelMapping}), or a one-line reason why
   * this op blocks them. Types are inferred when it is called. Absent means
   * the op is a barrier ("has no channel rule").
   */
  channels?(op: Op, ctx: ChannelContext): ChannelMapping | string;
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
