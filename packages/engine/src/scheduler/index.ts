export { Scheduler, type SchedulerHooks, type SchedulerOptions, type KvUsage, type StepFn } from './scheduler.js';
export {
  ScheduledSequence,
  type FinishReason,
  type SampledToken,
  type SequenceSpec,
  type AcceptResult,
} from './sequence.js';
export { AdapterQueues, BASE_KEY, type Queued } from './queue.js';
export { buildBatch, type Batch, type BatchBlocks } from './batcher.js';
export {
  chooseAdmissions,
  secureDecodeBlocks,
  outstandingPrefill,
  tokenFinish,
  watermarkBlocks,
  type AdmissionInput,
} from './admission.js';
export { loadedAdaptersGate, type AdapterGate } from './gate.js';
