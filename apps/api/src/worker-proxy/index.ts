// The API's worker side (contract §5): registry, worker choice, forwarding, usage, tenant limits.
export type { Db } from './db.js';
export {
  DESCRIPTOR_HEADER,
  DescriptorSigner,
  signDescriptor,
  verifyDescriptor,
  type AdapterDescriptor,
  type AdapterTarget,
  type DescriptorStorage,
} from './descriptor.js';
export { HeartbeatError, heartbeatBody, parseHeartbeat, type HeartbeatBody } from './heartbeat-schema.js';
export { WorkerRegistry, type BaseModelRecord, type RegistryOptions, type WorkerRecord } from './registry.js';
export { leastLoaded, pickWorkers, preferResident, rendezvousScore } from './rendezvous.js';
export { Router, type ForwardRequest, type RouterOptions, type Usage } from './router.js';
export {
  DEFAULT_WORKER_TIMEOUTS,
  WorkerTimeoutError,
  workerHttpClient,
  type WorkerPost,
  type WorkerResponse,
  type WorkerTimeouts,
} from './worker-http.js';
export { TenantLimits, type LimitOptions, type Limited, type Slot } from './tenant-limits.js';
export { prepareRequest, type PreparedRequest, type WorkerBodyCheck } from './wire.js';
export { UsageRecorder, type UsageEvent, type UsageRecorderOptions } from './usage-recorder.js';
