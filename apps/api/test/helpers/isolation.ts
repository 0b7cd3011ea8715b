// The tenant-isolation probes: every route a tenant can call with a foreign identifier in it, and
// the comparison of each answer with the answer for an identifier of the same kind that never
// existed. Only the identifier itself is normalised, so any other difference (status, error type,
// code, message wording, headers that carry data) is a difference an attacker could read.
import { randomBytes } from 'node:crypto';

export interface Probe {
  label: string;
  method: string;
  path: string;
  json?: unknown;
}

export interface Answer {
  status: number;
  contentType: string | null;
  text: string;
  /** Response headers other than the ones every response varies in (date, lengths, timing). */
  headers: Record<string, string>;
}

const hex = (bytes: number): string => randomBytes(bytes).toString('hex');

/** An identifier of the same kind as `ref` that never existed (same prefix, same shape). */
export function neverExisting(ref: string): string {
  const replaceIds = (s: string): string =>
    s.replace(/\b(tn|ad|key|up)_[a-f0-9]+/g, (_m, p: string) => `${p}_${hex(p === 'ad' || p === 'up' ? 12 : 8)}`);
  if (/\b(tn|ad|key|up)_[a-f0-9]+/.test(ref)) return replaceIds(ref);
  const at = ref.lastIndexOf('@');
  return at > 0 ? `nx-${hex(6)}${ref.slice(at)}` : `nx-${hex(6)}`;
}

const enc = encodeURIComponent;

/** Every route a tenant can name a resource in, with `ref` in that place. */
export function probesFor(ref: string, baseModel: string): Probe[] {
  const prompt = 'The license';
  return [
    { label: 'GET adapter', method: 'GET', path: `/v1/adapters/${enc(ref)}` },
    { label: 'DELETE adapter', method: 'DELETE', path: `/v1/adapters/${enc(ref)}` },
    {
      label: 'completions',
      method: 'POST',
      path: '/v1/completions',
      json: { model: ref, prompt, max_tokens: 2, temperature: 0 },
    },
    {
      label: 'completions stream',
      method: 'POST',
      path: '/v1/completions',
      json: { model: ref, prompt, max_tokens: 2, stream: true },
    },
    {
      label: 'chat',
      method: 'POST',
      path: '/v1/chat/completions',
      json: { model: ref, messages: [{ role: 'user', content: prompt }], max_tokens: 2 },
    },
    {
      label: 'chat stream',
      method: 'POST',
      path: '/v1/chat/completions',
      json: { model: ref, messages: [{ role: 'user', content: prompt }], max_tokens: 2, stream: true },
    },
    {
      label: 'generate',
      method: 'POST',
      path: '/generate',
      json: { inputs: prompt, parameters: { adapter_id: ref, max_new_tokens: 2 } },
    },
    {
      label: 'generate_stream',
      method: 'POST',
      path: '/generate_stream',
      json: { inputs: prompt, parameters: { adapter_id: ref, max_new_tokens: 2 } },
    },
    // The adapter named where the other API family names it: a worker must never see it unresolved.
    {
      label: 'generate with model field',
      method: 'POST',
      path: '/generate',
      json: { inputs: prompt, model: ref, parameters: { max_new_tokens: 2 } },
    },
    {
      label: 'generate_stream with model field',
      method: 'POST',
      path: '/generate_stream',
      json: { inputs: prompt, model: ref, parameters: { max_new_tokens: 2 } },
    },
    {
      label: 'completions with adapter_id',
      method: 'POST',
      path: '/v1/completions',
      json: { model: baseModel, prompt, max_tokens: 2, parameters: { adapter_id: ref } },
    },
    { label: 'usage filtered by adapter', method: 'GET', path: `/v1/usage?group_by=adapter&adapter=${enc(ref)}` },
    { label: 'list keys of tenant', method: 'GET', path: `/v1/keys?tenant_id=${enc(ref)}` },
    { label: 'create key for tenant', method: 'POST', path: '/v1/keys', json: { tenant_id: ref } },
    { label: 'revoke key', method: 'DELETE', path: `/v1/keys/${enc(ref)}` },
    {
      label: 'complete upload',
      method: 'POST',
      path: `/v1/adapters/uploads/${enc(ref)}/complete`,
      json: { files: [{ name: 'adapter_config.json', parts: [{ part_number: 1, etag: 'x' }] }] },
    },
    { label: 'abort upload', method: 'DELETE', path: `/v1/adapters/uploads/${enc(ref)}` },
    // The embedded store's part target, with the identifier where its signed token goes.
    { label: 'PUT upload part', method: 'PUT', path: `/v1/uploads/parts/${enc(ref)}` },
  ];
}

const VOLATILE_HEADERS = new Set([
  'date',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'x-request-id',
]);

export async function send(baseUrl: string, key: string, p: Probe): Promise<Answer> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}` };
  if (p.json !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(baseUrl + p.path, {
    method: p.method,
    headers,
    ...(p.json !== undefined ? { body: JSON.stringify(p.json) } : {}),
  });
  const text = await res.text();
  const kept: Record<string, string> = {};
  res.headers.forEach((v, k) => {
    if (!VOLATILE_HEADERS.has(k)) kept[k] = v;
  });
  return { status: res.status, contentType: res.headers.get('content-type'), text, headers: kept };
}

/** The answer with `ref` (as sent, URL-encoded, JSON-escaped) replaced by a placeholder. */
export function normalise(a: Answer, ref: string): Answer {
  const forms = [...new Set([ref, encodeURIComponent(ref), JSON.stringify(ref).slice(1, -1)])].sort(
    (x, y) => y.length - x.length,
  );
  const strip = (s: string): string => forms.reduce((acc, f) => acc.split(f).join('<REF>'), s);
  return {
    status: a.status,
    contentType: a.contentType,
    text: strip(a.text),
    headers: Object.fromEntries(Object.entries(a.headers).map(([k, v]) => [k, strip(v)])),
  };
}

/** Which of `secrets` occur in the answer's body or headers. */
export function leaked(a: Answer, secrets: string[]): string[] {
  const all = `${a.text}\n${Object.values(a.headers).join('\n')}`;
  return secrets.filter((s) => all.includes(s));
}
