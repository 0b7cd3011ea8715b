export { Loraplex, type ClientOptions } from './client.js';
export { Adapters, type UploadFile, type UploadOptions, type UploadProgress } from './adapters.js';
export * from './errors.js';
export type * from './types.js';
