// What the router changes in a request on its way to a worker, and reads back from the answer:
// the adapter field is rewritten to the adapter id (contract §1), and usage reporting is forced on
// (OpenAI stream_options.include_usage, LoRAX parameters.details) so every request can be metered;
// what the client did not ask for is removed again on the way back (sse-relay.ts).

export type Family = 'openai' | 'lorax';

export const OPENAI_PATHS = new Set(['/v1/completions', '/v1/chat/completions']);
export const LORAX_PATHS = new Set(['/generate', '/generate_stream', '/', '/tokenize']);

export function familyOf(path: string): Family {
  if (OPENAI_PATHS.has(path)) return 'openai';
  if (LORAX_PATHS.has(path)) return 'lorax';
  throw new Error(`the router does not forward ${path}`);
}

export interface PreparedRequest {
  family: Family;
  /** The client asked for a stream. */
  stream: boolean;
  /** The client asked for usage (OpenAI include_usage) or details (LoRAX) itself. */
  clientWantsUsage: boolean;
  /** The body sent to the worker. */
  json: string;
  /** Gives answers back the client's model name in place of the adapter id the worker saw; absent when they name the same. */
  restoreModel?: (text: string) => string;
}

/**
 * Checks the worker's body before usage reporting is forced on (e.g. against the worker's own schema):
 * throws to refuse the request.
 */
export type WorkerBodyCheck = (path: string, workerBody: Record<string, unknown>) => unknown;

/**
 * OpenAI answers name the model; the worker saw the adapter id, the client asked for its own name
 * (name or name@version). The id is [a-z0-9_] only and quotes inside JSON strings are escaped,
 * so the exact byte sequence "model":"<id>" can only be that field.
 */
function modelRestorer(adapterId: string | undefined, asked: unknown): ((text: string) => string) | undefined {
  if (adapterId === undefined || typeof asked !== 'string' || asked === adapterId) return undefined;
  const from = `"model":${JSON.stringify(adapterId)}`,
    to = `"model":${JSON.stringify(asked)}`;
  return (t) => (t.includes(from) ? t.replaceAll(from, to) : t);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The worker's body, built once: a shallow copy of the client's (which is left untouched) with the
 * adapter field set to the adapter id, or to the base model for base requests (a LoRAX
 * adapter_source, which only named where the client's adapter lives, removed), checked by `check`
 * if given, then usage forced on.
 */
export function prepareRequest(
  path: string,
  body: Record<string, unknown>,
  adapterId: string | undefined,
  baseModel: string,
  requestedModel?: string,
  check?: WorkerBodyCheck,
): PreparedRequest {
  const family = familyOf(path);
  const out: Record<string, unknown> = { ...body };
  if (family === 'openai') {
    out.model = adapterId ?? baseModel;
    check?.(path, out);
    const stream = body.stream === true;
    const so = isObject(body.stream_options) ? body.stream_options : undefined;
    const clientWantsUsage = stream ? so?.include_usage === true : true;
    if (stream) out.stream_options = { ...(so ?? {}), include_usage: true };
    const restoreModel = modelRestorer(adapterId, requestedModel ?? body.model);
    return { family, stream, clientWantsUsage, json: JSON.stringify(out), ...(restoreModel ? { restoreModel } : {}) };
  }
  const params: Record<string, unknown> = isObject(body.parameters) ? { ...body.parameters } : {};
  delete params.adapter_source;
  if (adapterId !== undefined) params.adapter_id = adapterId;
  else delete params.adapter_id;
  out.parameters = params;
  check?.(path, out);
  const stream = path === '/generate_stream' || (path === '/' && body.stream === true);
  const clientWantsUsage = params.details === true;
  // A stream reports its counts only in the last event's details; a single response carries them
  // in x-prompt-tokens / x-generated-tokens, so details (with every token listed) are not forced.
  if (stream) out.parameters = { ...params, details: true };
  return { family, stream, clientWantsUsage, json: JSON.stringify(out) };
}

export interface TokenCounts {
  promptTokens: number;
  completionTokens: number;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined);

function fromOpenAiUsage(u: unknown): TokenCounts | undefined {
  if (!isObject(u)) return undefined;
  const p = num(u.prompt_tokens),
    c = num(u.completion_tokens);
  return p !== undefined && c !== undefined ? { promptTokens: p, completionTokens: c } : undefined;
}

function fromLoraxDetails(d: unknown): TokenCounts | undefined {
  if (!isObject(d)) return undefined;
  const p = num(d.prompt_tokens),
    c = num(d.generated_tokens);
  return p !== undefined && c !== undefined ? { promptTokens: p, completionTokens: c } : undefined;
}

/** Token counts of a complete (non-streamed) worker answer, if it has them. */
export function usageOfBody(
  family: Family,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  text: string,
): TokenCounts | undefined {
  if (family === 'lorax') {
    // Number(undefined) is NaN; a repeated header (an array) counts only when it holds one value.
    const p = num(Number(headers['x-prompt-tokens'])),
      c = num(Number(headers['x-generated-tokens']));
    if (p !== undefined && c !== undefined) return { promptTokens: p, completionTokens: c };
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (family === 'openai') return isObject(body) ? fromOpenAiUsage(body.usage) : undefined;
  const one = Array.isArray(body) ? body[0] : body; // POST / answers [GenerateResponse]
  return isObject(one) ? fromLoraxDetails(one.details) : undefined;
}

/** Token counts carried by one parsed stream event (OpenAI usage chunk, LoRAX final details). */
export function usageOfEvent(family: Family, event: Record<string, unknown>): TokenCounts | undefined {
  return family === 'openai' ? fromOpenAiUsage(event.usage) : fromLoraxDetails(event.details);
}

export { isObject };
