/**
 * ONNX import and export: `importOnnx` / `exportOnnx` for whole models,
 * `tensorFromProto` / `tensorToProto` / `readTensorProto` for tensors.
 * @module
 */
export { importOnnx, importOnnxFile, type ImportOptions, importType } from "./import.ts";
export {
  exportOnnx,
  exportOnnxFiles,
  type ExportOptions,
  type ExternalDataOptions,
  saveOnnx,
  writeFileBytes,
} from "./export.ts";
export {
  type ByteSource,
  fileByteSource,
  readFileBytes,
  readTensorProto,
  resolveExternalPath,
  tensorFromProto,
  type TensorProtoOptions,
  tensorToProto,
} from "./tensor_proto.ts";
export type { ITensorProto, ITypeProto, TensorProto } from "./proto.ts";
