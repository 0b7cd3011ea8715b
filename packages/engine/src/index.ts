export { Engine } from './engine.js';
export type { EngineOptions, GenerateRequest, GenerateOutput, AdapterInfo } from './engine.js';
export { EngineError, type EngineErrorCode } from './errors.js';
export type { SamplingOptions, ResolvedSampling } from './sampling.js';
export { resolveSampling, usesPenalties } from './sampling.js';
export type { StepItem, StepItemResult, TopLogprob } from './step.js';
export type { FinishReason, TokenConstraint, TokenLogprob } from './generate.js';
export { BlockAllocator } from './kv-cache.js';
export {
  Scheduler,
  ScheduledSequence,
  AdapterQueues,
  BASE_KEY,
  buildBatch,
  chooseAdmissions,
  secureDecodeBlocks,
  outstandingPrefill,
  tokenFinish,
  watermarkBlocks,
  loadedAdaptersGate,
  type SchedulerHooks,
  type SchedulerOptions,
  type KvUsage,
  type StepFn,
  type SampledToken,
  type SequenceSpec,
  type AcceptResult,
  type Queued,
  type Batch,
  type BatchBlocks,
  type AdmissionInput,
  type AdapterGate,
} from './scheduler/index.js';
export { TextTokenizer, type ChatMessage } from './tokenizer.js';
// The file formats moved to @loraplex/formats; re-exported so the engine's public API is unchanged.
export {
  readModelConfig,
  parseModelConfig,
  type ModelConfig,
  readAdapterDir,
  readAdapterFiles,
  parseAdapterFiles,
  buildAdapter,
  loadAdapterDir,
  type AdapterFiles,
  type LoadedAdapter,
  parsePeftConfig,
  resolveAdapterModules,
  resolveAdapterModulesAsync,
  MODULES,
  type AsyncResolveOptions,
  type ResolvedModule,
  compilePyRegex,
  MAX_PATTERN_CHARS,
  MAX_PATTERN_REPEATS,
  type PyRegex,
  readSafetensorsHeader,
  writeSafetensors,
  encodeSafetensors,
  f32ToBf16,
  bf16ToF32,
  parseTorchCheckpoint,
} from '@loraplex/formats';
