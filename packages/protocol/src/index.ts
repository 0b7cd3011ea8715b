// @loraplex/protocol: the wire contracts between clients, the API and workers, each declared once as
// a zod schema with its inferred type. Depends on zod and node:crypto only.
export * from './body-limit.js';
export * from './descriptor.js';
export * from './errors.js';
export * from './finish.js';
export * from './heartbeat.js';
export * from './issues.js';
export * from './json-body.js';
export * from './fields.js';
export * from './lorax.js';
export * from './openai.js';
export * from './resources.js';
export * from './response-format.js';
export * from './signature.js';
