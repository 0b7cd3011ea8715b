// @loraplex/formats: the model and adapter file formats in plain TypeScript (no native addon), for
// the engine, the worker's adapter tiers and the API's upload validation alike.
export { EngineError, type EngineErrorCode } from './errors.js';
export { f16ToF32 } from './dtype.js';
export {
  readSafetensorsHeader,
  parseSafetensorsHeader,
  writeSafetensors,
  encodeSafetensors,
  f32ToBf16,
  bf16ToF32,
  DTYPE_BYTES,
  type SafetensorsDtype,
  type SafetensorsHeader,
  type TensorInfo,
  type TensorToWrite,
} from './safetensors.js';
export {
  readTorchCheckpoint,
  parseTorchCheckpoint,
  type CheckpointDtype,
  type CheckpointTensor,
} from './torch-checkpoint.js';
export { ZipArchive, type ZipEntry } from './zip-archive.js';
export { readModelConfig, parseModelConfig, ropeInvFreq, type Architecture, type ModelConfig } from './model-config.js';
export {
  parsePeftConfig,
  resolveAdapterModules,
  resolveAdapterModulesAsync,
  MODULES,
  type AsyncResolveOptions,
  type ModuleName,
  type PeftLoraConfig,
  type ResolveOptions,
  type ResolvedModule,
  MODULE_PARENT,
} from './peft-config.js';
export { compilePyRegex, MAX_PATTERN_CHARS, MAX_PATTERN_REPEATS, type PyRegex } from './py-regex.js';
export {
  readAdapterDir,
  readAdapterFiles,
  parseAdapterFiles,
  buildAdapter,
  loadAdapterDir,
  type AdapterFiles,
  type AdapterSpec,
  type AdapterTensor,
  type LoadedAdapter,
} from './adapter-files.js';
