/**
 * cnnc: a model-compression compiler for CNNs. Import a trained network from
 * ONNX into an MLIR-like graph IR, run composable passes over it, and emit
 * deployable artifacts; or use the IR directly: inspect, rewrite, run and
 * export it. This module is the public API; it only re-exports.
 *
 * @example Compile a model in a build script (no file system needed)
 * ```ts
 * import assert from "node:assert/strict";
 * import { compile, exportOnnx, Graph, Module, Op, Value } from "./mod.ts";
 *
 * // y = Relu(Identity(x)), built in memory and serialised as ONNX.
 * const g = new Graph("tiny");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4] }));
 * const id = g.addOp(new Op({ name: "id", type: "Identity", operands: [x], results: [new Value("t")] }));
 * g.outputs.push(g.addOp(new Op({ name: "relu", type: "Relu", operands: [id.result], results: [new Value("y")] })).result);
 *
 * const { artifacts, report } = await compile(exportOnnx(new Module(g)), {
 *   passes: "canonicalize,dce",
 *   target: "onnx",
 *   modelName: "tiny",
 * });
 * assert.deepEqual([...artifacts.keys()], ["tiny.onnx"]);
 * assert.deepEqual(report.passes.map((p) => p.name), ["canonicalize", "dce"]);
 * ```
 *
 * @example Import, check, run and export a model
 * ```ts
 * import assert from "node:assert/strict";
 * import { costOf, exportOnnx, Graph, importOnnx, inferShapes, interpret, Module, Op, Value, verifyModule } from "./mod.ts";
 *
 * const g = new Graph("tiny");
 * const x = g.addInput(new Value("x", { elem: "f32", shape: ["N", 4] }));
 * g.outputs.push(g.addOp(new Op({ name: "relu", type: "Relu", operands: [x], results: [new Value("y")] })).result);
 *
 * const module = importOnnx(exportOnnx(new Module(g)));
 * inferShapes(module);
 * verifyModule(module);
 * assert.equal(costOf(module).totals.params, 0);
 * const { y } = interpret(module, { x: { dtype: "f32", shape: [1, 4], data: new Float32Array([-1, 2, -3, 4]) } });
 * assert.deepEqual([...y.data], [0, 2, 0, 4]);
 * ```
 *
 * @module
 */

// ---- IR: modules, graphs, ops and values, types, tensors, attributes, op definitions, rewrites, kernels ----
export type { Attribute, AttributeKind } from "./ir/attributes.ts";
export { attr } from "./ir/attributes.ts";
export type { CostOptions, CostReport, CostTotals, CsrSize, LayerCost, SparseCost } from "./ir/cost.ts";
export { costOf, csrBytes } from "./ir/cost.ts";
export { Graph, isConstant, isDefaultDomain, Op, type Use, Value } from "./ir/graph.ts";
export { Module } from "./ir/module.ts";
export type {
  ChannelContext,
  ChannelKeep,
  ChannelMapping,
  ChannelParam,
  InferContext,
  KernelContext,
  OpDef,
} from "./ir/op_def.ts";
export { OpRegistry } from "./ir/op_def.ts";
export { builtinOps } from "./ir/builtin_ops.ts";
export { intValues, opError } from "./ir/ops/common.ts";
export type { Epilogue, GemmArgs } from "./ir/ops/gemm_kernel.ts";
export { gemm } from "./ir/ops/gemm_kernel.ts";
export { releasePool, setArenaLimit, setThreadCount, startWorkers, threadCount } from "./ir/parallel.ts";
export type { ParseOptions } from "./ir/parser.ts";
export { collectTensors, parseGraph, parseModule } from "./ir/parser.ts";
export type { PrintOptions } from "./ir/printer.ts";
export { printGraph, printModule } from "./ir/printer.ts";
export {
  addConstant,
  cloneGraph,
  cloneModule,
  cloneOp,
  eraseConstantIfUnused,
  eraseOp,
  eraseValue,
  insertAfter,
  insertBefore,
  renameValue,
  replaceAllUsesWith,
  replaceConstant,
  replaceOp,
} from "./ir/rewriter.ts";
export type { ReplaceOpOptions } from "./ir/rewriter.ts";
export { subgraphsOf } from "./ir/rewriter.ts";
export type { FoldedConstants, InferShapesOptions } from "./ir/shape.ts";
export { inferShapes } from "./ir/shape.ts";
export type { InlinedWeightOps } from "./ir/normalize.ts";
export { inlineWeightOps } from "./ir/normalize.ts";
export { escapeControl, oneLine, quote } from "./ir/quote.ts";
export type { Tensor, TensorData } from "./ir/tensor.ts";
export { float32Tensor, fromFloat64, int64Tensor, shapeSize, tensor, toFloat64, zeros } from "./ir/tensor.ts";
export type { BfpType, Dim, DType, ElementType, FixedType, OpaqueType, TensorType, Type } from "./ir/types.ts";
export { elementTypeToString, FLOAT_DTYPES, isTensorType, tensorType, typeToString } from "./ir/types.ts";
export type { VerifyDiagnostic, VerifyOptions } from "./ir/verifier.ts";
export { verifyModule, verifyModuleDiagnostics } from "./ir/verifier.ts";

// ---- Interpreter: reference semantics of every op ----
export type { InterpretOptions } from "./ir/interpreter.ts";
export { interpret, Interpreter } from "./ir/interpreter.ts";

// ---- ONNX I/O ----
export type { ExportOptions, ExternalDataOptions } from "./ir/onnx/export.ts";
export { exportOnnx, exportOnnxFiles } from "./ir/onnx/export.ts";
export type { ImportOptions } from "./ir/onnx/import.ts";
export { importOnnx } from "./ir/onnx/import.ts";
export type { OnnxFile } from "./ir/onnx/model_file.ts";
export { readOnnxFile } from "./ir/onnx/model_file.ts";
export type { ByteSource, TensorProtoOptions } from "./ir/onnx/tensor_proto.ts";
export { readTensorProto } from "./ir/onnx/tensor_proto.ts";

// ---- Passes: the pass interface, options, pipelines, the pass manager, the built-in passes and analyses ----
export type {
  BoolOption,
  EnumOption,
  IntOption,
  ListOption,
  NumberOption,
  OptionDefault,
  OptionSchema,
  OptionSpec,
  OptionValue,
  OptionValues,
  StringOption,
} from "./passes/options.ts";
export type { Analysis, Diagnostic, Pass, PassContext, PassLookup, Severity, StatValue } from "./passes/pass.ts";
export { definePass, passLookup } from "./passes/pass.ts";
export type { TestPassContext, TestPassContextOptions } from "./passes/testing.ts";
export { testPassContext } from "./passes/testing.ts";
export type { Configurable, ElementKind, ParsedElement, PipelineStep } from "./passes/pipeline.ts";
export { parseElement, parsePipeline, PipelineError, printPipeline } from "./passes/pipeline.ts";
export type { AnalysisTiming, Instrumentation, PassRecord, RunPipelineOptions } from "./passes/manager.ts";
export { PassError, runPipeline } from "./passes/manager.ts";
export { builtinPasses } from "./passes/builtin.ts";
export { canonicalizeOptions, canonicalizePass } from "./passes/canonicalize.ts";
export type { DeadCodeCounts } from "./passes/dce.ts";
export { dceOptions, dcePass, eliminateDeadCode } from "./passes/dce.ts";
export { foldBnOptions, foldBnPass } from "./passes/fold_bn.ts";
export { svdOptions, svdPass } from "./passes/svd.ts";
export type { FloatArray, RandomizedSvdOptions, Svd } from "./passes/linalg.ts";
export { exactSvd, randomizedSvd, truncatedSvd } from "./passes/linalg.ts";
export { pruneOptions, prunePass } from "./passes/prune.ts";
export { fcCorrOptions, fcCorrPass } from "./passes/fc_corr.ts";
export { maskSelectOptions, maskSelectPass } from "./passes/mask_select.ts";
export type {
  ChannelBarrier,
  ChannelConsumer,
  ChannelGroup,
  ChannelGroupsResult,
  ChannelMember,
  ChannelProducer,
  ChannelValue,
} from "./passes/analysis/channel_groups.ts";
export { channelGroups, channelGroupsAnalysis } from "./passes/analysis/channel_groups.ts";

// ---- Targets ----
export type { Artifacts, Target, TargetContext } from "./targets/target.ts";
export { defineTarget } from "./targets/target.ts";
export { builtinTargets } from "./targets/builtin.ts";
export { onnxTarget, onnxTargetOptions } from "./targets/onnx/onnx_target.ts";
export { C_FORMAT_VERSION, C_GENERATOR, cIdentifier, cTarget, cTargetOptions } from "./targets/c/c_target.ts";
export type { CLayout, CodegenOptions, CSparse, CSparseLayer, GeneratedC } from "./targets/c/codegen.ts";
export { C_ARENA_ALIGN, generateC } from "./targets/c/codegen.ts";
export type { BufferRequest, MemoryPlan } from "./targets/c/memory_plan.ts";
export { planMemory } from "./targets/c/memory_plan.ts";
export { bram18Blocks, FPGA_GENERATOR, fpgaTarget, fpgaTargetOptions } from "./targets/fpga/fpga_target.ts";
export type {
  DescriptorKey,
  FpgaBias,
  FpgaDescriptor,
  FpgaImage,
  FpgaImageFormat,
  FpgaLayerKind,
  FpgaLayerRecord,
  FpgaLayout,
  FpgaSegment,
  FpgaWeights,
  SegmentKind,
} from "./targets/fpga/image.ts";
export { DESCRIPTOR_KEYS, fpgaCrc32, OPCODES, readFpgaImage } from "./targets/fpga/image.ts";

// Block floating point and fixed point: the numbers, the layer plans every target reads, the golden kernel.
export type { BfpExponentRule, BfpFormat, BfpRng, BfpRounding } from "./ir/bfp/format.ts";
export {
  ACCUMULATOR_BITS,
  BFP_ROUNDINGS,
  bfpFormat,
  bfpStorage,
  exponentRange,
  maxMantissa,
  roundScaled,
  splitmix32,
} from "./ir/bfp/format.ts";
export type { ActivationBlocking, BfpBlocking, BfpTensor } from "./ir/bfp/quantize.ts";
export {
  activationExponentShape,
  dequantizeActivations,
  dequantizeBfp,
  dequantizeWeights,
  quantizeActivations,
  quantizeBfp,
  quantizeWeights,
  staticExponentFor,
  weightExponentShape,
} from "./ir/bfp/quantize.ts";
export type { BfpAccumulatorPlan, BfpBiasPlan, BfpLayerPlan, BfpQuantizePlan, BfpWeightPlan } from "./ir/bfp/plan.ts";
export {
  BFP_DOMAIN,
  bfpLayerGeometry,
  bfpLayerPlan,
  bfpLayerResultType,
  bfpQuantizePlan,
  NO_BIAS_UNIT,
} from "./ir/bfp/plan.ts";
export type { BfpActivation, BfpLayerResult } from "./ir/bfp/kernel.ts";
export { bfpLayer } from "./ir/bfp/kernel.ts";
export { bfpOps, runBfpQuantize } from "./ir/bfp/ops.ts";
export type { WindowGeometry } from "./ir/ops/conv_kernels.ts";
export { bfpOptions, bfpPass } from "./passes/bfp.ts";
export { FIXED_EXPONENT_BITS, fixedOptions, fixedPass } from "./passes/fixed.ts";
export type { OpsetUpgrade } from "./ir/onnx/opset_upgrade.ts";
export { MAX_UPGRADE_OPSET, upgradeOpset } from "./ir/onnx/opset_upgrade.ts";

// ---- Driver: compile(), its report, the registry and plugins, evaluation and .npy data ----
export type { CompileOptions, CompileResult, EvaluationData } from "./driver/compile.ts";
export { compile, DataError, defaultRegistry } from "./driver/compile.ts";
export type {
  AccuracyReport,
  ArtifactInfo,
  CompileReport,
  LayerRow,
  LayerSide,
  ModelInfo,
  PassReport,
  StageTimings,
  TargetDiagnostic,
  TargetInfo,
} from "./driver/report.ts";
export { REPORT_VERSION } from "./driver/report.ts";
export { renderReportHtml } from "./driver/report_html.ts";
export type { Plugin } from "./driver/registry.ts";
export { PLUGIN_API_VERSION, Registry } from "./driver/registry.ts";
export type { EvaluateOptions, EvaluationResult } from "./driver/evaluate.ts";
export { evaluate, evaluateOnnx, EvaluationError } from "./driver/evaluate.ts";
export { runOnnxruntime } from "./driver/onnxruntime.ts";
export type { ArtifactVerifyOptions, PassSqnr, VerifyCheck, VerifyReport } from "./driver/verify.ts";
export { checkVerified, VERIFY_TOLERANCES, verifyArtifacts, VerifyError } from "./driver/verify.ts";
export type { BudgetLimits, BudgetPoint, BudgetReport, BudgetSearchOptions } from "./driver/budget.ts";
export { BUDGET_GRID, BudgetError, parseBudget, searchBudget } from "./driver/budget.ts";
export { readNpy, writeNpy } from "./data/npy.ts";
