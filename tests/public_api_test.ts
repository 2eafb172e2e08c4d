/**
 * The public API is the list of names `mod.ts` exports, kept here so that a
 * change to it is deliberate (onnx-ir's public API test, after PyTorch's
 * `test_public_bindings`). A name added to or removed from `mod.ts` fails this
 * test until the lists below say the same; review such a change as an API change.
 * @module
 */
import assert from "node:assert/strict";
import * as mod from "../mod.ts";

const MOD_PATH = new URL("../mod.ts", import.meta.url);

/** Names `mod.ts` exports as values (functions, classes, constants), sorted. */
const EXPECTED_VALUES: readonly string[] = [
  "ACCUMULATOR_BITS",
  "BFP_DOMAIN",
  "BFP_ROUNDINGS",
  "C_ARENA_ALIGN",
  "C_FORMAT_VERSION",
  "C_GENERATOR",
  "DESCRIPTOR_KEYS",
  "DataError",
  "EvaluationError",
  "FIXED_EXPONENT_BITS",
  "FLOAT_DTYPES",
  "FPGA_GENERATOR",
  "Graph",
  "Interpreter",
  "MAX_UPGRADE_OPSET",
  "Module",
  "NO_BIAS_UNIT",
  "OPCODES",
  "Op",
  "OpRegistry",
  "PLUGIN_API_VERSION",
  "PassError",
  "PipelineError",
  "REPORT_VERSION",
  "Registry",
  "Value",
  "activationExponentShape",
  "addConstant",
  "attr",
  "bfpFormat",
  "bfpLayer",
  "bfpLayerGeometry",
  "bfpLayerPlan",
  "bfpLayerResultType",
  "bfpOps",
  "bfpOptions",
  "bfpPass",
  "bfpQuantizePlan",
  "bfpStorage",
  "bram18Blocks",
  "builtinOps",
  "builtinPasses",
  "builtinTargets",
  "cIdentifier",
  "cTarget",
  "cTargetOptions",
  "canonicalizeOptions",
  "canonicalizePass",
  "channelGroups",
  "channelGroupsAnalysis",
  "cloneGraph",
  "cloneModule",
  "cloneOp",
  "collectTensors",
  "compile",
  "costOf",
  "csrBytes",
  "dceOptions",
  "dcePass",
  "defaultRegistry",
  "definePass",
  "defineTarget",
  "dequantizeActivations",
  "dequantizeBfp",
  "dequantizeWeights",
  "elementTypeToString",
  "eliminateDeadCode",
  "eraseConstantIfUnused",
  "eraseOp",
  "eraseValue",
  "escapeControl",
  "evaluate",
  "evaluateOnnx",
  "exactSvd",
  "exponentRange",
  "exportOnnx",
  "exportOnnxFiles",
  "fcCorrOptions",
  "fcCorrPass",
  "fixedOptions",
  "fixedPass",
  "float32Tensor",
  "foldBnOptions",
  "foldBnPass",
  "fpgaCrc32",
  "fpgaTarget",
  "fpgaTargetOptions",
  "fromFloat64",
  "gemm",
  "generateC",
  "importOnnx",
  "inferShapes",
  "inlineWeightOps",
  "insertAfter",
  "insertBefore",
  "int64Tensor",
  "intValues",
  "interpret",
  "isConstant",
  "isDefaultDomain",
  "isTensorType",
  "maxMantissa",
  "oneLine",
  "onnxTarget",
  "onnxTargetOptions",
  "opError",
  "parseElement",
  "parseGraph",
  "parseModule",
  "parsePipeline",
  "passLookup",
  "planMemory",
  "printGraph",
  "printModule",
  "printPipeline",
  "pruneOptions",
  "prunePass",
  "quantizeActivations",
  "quantizeBfp",
  "quantizeWeights",
  "quote",
  "randomizedSvd",
  "readFpgaImage",
  "readNpy",
  "readTensorProto",
  "renameValue",
  "replaceAllUsesWith",
  "replaceConstant",
  "replaceOp",
  "roundScaled",
  "runBfpQuantize",
  "runOnnxruntime",
  "runPipeline",
  "shapeSize",
  "splitmix32",
  "staticExponentFor",
  "subgraphsOf",
  "svdOptions",
  "svdPass",
  "tensor",
  "tensorType",
  "testPassContext",
  "toFloat64",
  "truncatedSvd",
  "typeToString",
  "upgradeOpset",
  "verifyModule",
  "verifyModuleDiagnostics",
  "weightExponentShape",
  "writeNpy",
  "zeros",
];

/** Names `mod.ts` exports as types only (interfaces and type aliases), sorted. */
const EXPECTED_TYPES: readonly string[] = [
  "AccuracyReport",
  "ActivationBlocking",
  "Analysis",
  "AnalysisTiming",
  "ArtifactInfo",
  "Artifacts",
  "Attribute",
  "AttributeKind",
  "BfpAccumulatorPlan",
  "BfpActivation",
  "BfpBiasPlan",
  "BfpBlocking",
  "BfpExponentRule",
  "BfpFormat",
  "BfpLayerPlan",
  "BfpLayerResult",
  "BfpQuantizePlan",
  "BfpRng",
  "BfpRounding",
  "BfpTensor",
  "BfpType",
  "BfpWeightPlan",
  "BoolOption",
  "BufferRequest",
  "ByteSource",
  "CLayout",
  "CSparse",
  "CSparseLayer",
  "ChannelBarrier",
  "ChannelConsumer",
  "ChannelContext",
  "ChannelGroup",
  "ChannelGroupsResult",
  "ChannelKeep",
  "ChannelMapping",
  "ChannelMember",
  "ChannelParam",
  "ChannelProducer",
  "ChannelValue",
  "CodegenOptions",
  "CompileOptions",
  "CompileReport",
  "CompileResult",
  "Configurable",
  "CostOptions",
  "CostReport",
  "CostTotals",
  "CsrSize",
  "DType",
  "DeadCodeCounts",
  "DescriptorKey",
  "Diagnostic",
  "Dim",
  "ElementKind",
  "ElementType",
  "EnumOption",
  "EvaluateOptions",
  "EvaluationData",
  "EvaluationResult",
  "ExportOptions",
  "ExternalDataOptions",
  "FixedType",
  "FloatArray",
  "FoldedConstants",
  "FpgaBias",
  "FpgaDescriptor",
  "FpgaImage",
  "FpgaImageFormat",
  "FpgaLayerKind",
  "FpgaLayerRecord",
  "FpgaLayout",
  "FpgaSegment",
  "FpgaWeights",
  "GemmArgs",
  "GeneratedC",
  "ImportOptions",
  "InferContext",
  "InferShapesOptions",
  "InlinedWeightOps",
  "Instrumentation",
  "IntOption",
  "InterpretOptions",
  "KernelContext",
  "LayerCost",
  "LayerRow",
  "LayerSide",
  "ListOption",
  "MemoryPlan",
  "ModelInfo",
  "NumberOption",
  "OpDef",
  "OpaqueType",
  "OpsetUpgrade",
  "OptionDefault",
  "OptionSchema",
  "OptionSpec",
  "OptionValue",
  "OptionValues",
  "ParseOptions",
  "ParsedElement",
  "Pass",
  "PassContext",
  "PassLookup",
  "PassRecord",
  "PassReport",
  "PipelineStep",
  "Plugin",
  "PrintOptions",
  "RandomizedSvdOptions",
  "ReplaceOpOptions",
  "RunPipelineOptions",
  "SegmentKind",
  "Severity",
  "SparseCost",
  "StageTimings",
  "StatValue",
  "StringOption",
  "Svd",
  "Target",
  "TargetContext",
  "TargetDiagnostic",
  "TargetInfo",
  "Tensor",
  "TensorData",
  "TensorProtoOptions",
  "TensorType",
  "TestPassContext",
  "TestPassContextOptions",
  "Type",
  "Use",
  "VerifyDiagnostic",
  "VerifyOptions",
  "WindowGeometry",
];

/** The names of `export { ... } from` and `export type { ... } from` statements, split into values and types. */
function declaredExports(source: string): { values: string[]; types: string[] } {
  const values: string[] = [];
  const types: string[] = [];
  for (const [, typeOnly, list] of source.matchAll(/^export (type )?\{([^}]*)\} from "[^"]+";$/gm)) {
    for (const item of list.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
      const isType = typeOnly !== undefined || item.startsWith("type ");
      const name = item.replace(/^type /, "").split(/ as /).pop()!;
      (isType ? types : values).push(name);
    }
  }
  return { values: values.sort(), types: types.sort() };
}

/** The lines of `source` outside comments that are not part of an `export ... from` statement. */
function nonReexportLines(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const statements = code.replace(/^export (type )?\{[^}]*\} from "[^"]+";$/gm, "");
  return statements.split("\n").map((l) => l.trim()).filter((l) => l !== "");
}

/** What changed between an expected and an actual list, for the failure message. */
function difference(expected: readonly string[], actual: readonly string[]): string {
  const added = actual.filter((n) => !expected.includes(n));
  const removed = expected.filter((n) => !actual.includes(n));
  return `added: [${added.join(", ")}], removed: [${removed.join(", ")}] ` +
    "(if deliberate, update the expected list in tests/public_api_test.ts)";
}

Deno.test("mod.ts only re-exports", () => {
  assert.deepEqual(nonReexportLines(Deno.readTextFileSync(MOD_PATH)), []);
});

Deno.test("mod.ts exports exactly the expected values", () => {
  const actual = Object.keys(mod).sort();
  assert.deepEqual(actual, EXPECTED_VALUES, difference(EXPECTED_VALUES, actual));
  // The statements of mod.ts name the same values, so the type list below is read the same way.
  assert.deepEqual(declaredExports(Deno.readTextFileSync(MOD_PATH)).values, actual);
});

Deno.test("mod.ts exports exactly the expected types", () => {
  const actual = declaredExports(Deno.readTextFileSync(MOD_PATH)).types;
  assert.deepEqual(actual, EXPECTED_TYPES, difference(EXPECTED_TYPES, actual));
});

Deno.test("the expected lists are sorted and disjoint", () => {
  assert.deepEqual(EXPECTED_VALUES, [...EXPECTED_VALUES].sort());
  assert.deepEqual(EXPECTED_TYPES, [...EXPECTED_TYPES].sort());
  assert.deepEqual(EXPECTED_VALUES.filter((n) => EXPECTED_TYPES.includes(n)), []);
});
