// @loraplex/worker/validation: what the API needs to refuse exactly what a worker refuses, without
// loading the worker itself: the body size limit, the bounded JSON parser and the request schemas of every route.
export { limitBodySize } from './body-limit.js';
export { JsonBodyError, MAX_BODY_BYTES, MAX_JSON_DEPTH, parseJsonText } from './json-body.js';
export { describeIssues } from './issues.js';
export { chatRequest, completionRequest, MAX_PROMPTS } from './openai-schemas.js';
export { loraxRequest } from './lorax-schemas.js';
