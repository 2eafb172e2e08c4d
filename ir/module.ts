/**
 * The top-level unit: one graph plus the model-level facts ONNX carries
 * (opset imports, producer, metadata) and anything else kept for export.
 * @module
 */
import { Graph, isDefaultDomain } from "./graph.ts";

/** A model: its main graph, opset imports and metadata. */
export class Module {
  /** The main graph. */
  graph: Graph;
  /** Opset version per domain (`""` is the default ONNX domain). */
  readonly opsets: Map<string, number>;
  /** ONNX IR version of the source (or the one to write). */
  irVersion: number;
  /** Producer name. */
  producerName = "";
  /** Producer version. */
  producerVersion = "";
  /** Model domain. */
  domain = "";
  /** Model version. */
  modelVersion = 0;
  /** Doc string. */
  docString = "";
  /** Metadata key/value pairs, in order. */
  readonly metadata: Map<string, string> = new Map();
  /** Source-format fields the IR does not model (ONNX model-local functions, training info), kept verbatim. */
  extra: Record<string, unknown> = {};

  /**
   * Create a module.
   *
   * @example Build an empty module
   * ```ts
   * import assert from "node:assert/strict";
   * import { Module } from "./module.ts";
   * const m = new Module();
   * assert.equal(m.opset(), 13);
   * ```
   */
  constructor(graph: Graph = new Graph(), opsets: Iterable<[string, number]> = [["", 13]], irVersion = 7) {
    this.graph = graph;
    this.opsets = new Map(opsets);
    this.irVersion = irVersion;
  }

  /** Opset version of `domain` (default domain when omitted); 1 when not imported. */
  opset(domain = ""): number {
    return this.opsets.get(isDefaultDomain(domain) ? "" : domain) ?? 1;
  }
}
