// The worker as a library: what the CLI, the benchmark scripts and in-process tests start. Everything
// else is internal (tests import modules by path).
export { createWorker, type Worker, type WorkerOptions } from './worker.js';
export { startWorker, type RunningWorker } from './serve.js';
