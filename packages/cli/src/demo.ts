// The demo of `loraplex dev` without --model: the trained tiny Llama shipped in this package's
// demo-model/ (see its MANIFEST.md: the base echoes, adapter `upper` upper-cases, `reverse` reverses,
// `extract` writes JSON), a tenant named `demo` with a key, and the three adapters uploaded for it
// through the API's own upload path (validated like any tenant's). The key is kept in
// <data-dir>/demo.json (a local development directory) so that restarts reuse the tenant, key and
// adapters instead of adding versions.
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AuthenticationError, Loraplex } from '@loraplex/sdk';

/** The demo model's directory: <package>/demo-model (next to dist/ in the published package). */
export const DEMO_MODEL_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'demo-model');
export const DEMO_MODEL_DIR = join(DEMO_MODEL_ROOT, 'base');
export const DEMO_SERVED_NAME = 'loraplex-demo';
export const DEMO_TENANT = 'demo';
export const DEMO_ADAPTERS = ['upper', 'reverse', 'extract'] as const;

interface DemoState {
  tenantId: string;
  key: string;
}

export interface Demo {
  tenantId: string;
  key: string;
  /** name -> the ready version's ref (name@version). */
  adapters: Record<string, string>;
}

async function readState(file: string): Promise<DemoState | undefined> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as Partial<DemoState>;
    return typeof s.tenantId === 'string' && typeof s.key === 'string'
      ? { tenantId: s.tenantId, key: s.key }
      : undefined;
  } catch {
    return undefined;
  }
}

/** A key that still authenticates (false when revoked or from another database). */
async function keyWorks(url: string, key: string): Promise<boolean> {
  try {
    await new Loraplex({ baseURL: url, apiKey: key, maxRetries: 0 }).adapters.list();
    return true;
  } catch (e) {
    if (e instanceof AuthenticationError) return false;
    throw e;
  }
}

/**
 * Makes sure the demo tenant, its key and its three ready adapters exist on the API at `url`
 * (idempotent: a second call with the same data dir uploads nothing and creates no key).
 */
export async function ensureDemo(
  url: string,
  adminKey: string,
  dataDir: string,
  servedModelName: string = DEMO_SERVED_NAME,
): Promise<Demo> {
  const stateFile = join(dataDir, 'demo.json');
  const admin = new Loraplex({ baseURL: url, apiKey: adminKey, maxRetries: 0 });
  const kept = await readState(stateFile);
  let state: DemoState;
  if (kept && (await keyWorks(url, kept.key))) state = kept;
  else {
    const tenant =
      (await admin.tenants.list()).find((t) => t.name === DEMO_TENANT) ?? (await admin.tenants.create(DEMO_TENANT));
    const { key } = await admin.keys.create({
      name: 'demo',
      tenantId: tenant.id,
      scopes: ['inference', 'adapters:write'],
    });
    if (!key) throw new Error('the API returned no secret for the demo key');
    state = { tenantId: tenant.id, key };
    await mkdir(dataDir, { recursive: true });
    await writeFile(stateFile, JSON.stringify(state, null, 2), { mode: 0o600 });
  }
  const client = new Loraplex({ baseURL: url, apiKey: state.key, maxRetries: 0 });
  const have = new Map<string, string>();
  for (const a of await client.adapters.list()) {
    const prev = have.get(a.name);
    if (a.status === 'ready' && (!prev || Number(prev.split('@')[1]) < a.version)) have.set(a.name, a.ref);
  }
  const adapters: Record<string, string> = {};
  for (const name of DEMO_ADAPTERS) {
    const dir = join(DEMO_MODEL_ROOT, 'adapters', name);
    if (!have.has(name) && existsSync(dir)) {
      const a = await client.adapters.upload(dir, { name, baseModel: servedModelName });
      have.set(name, a.ref);
    }
    adapters[name] = have.get(name)!;
  }
  return { tenantId: state.tenantId, key: state.key, adapters };
}

/** What `loraplex dev` prints for the demo: the key and a request to paste. */
export function demoBanner(url: string, demo: Demo, servedModelName: string = DEMO_SERVED_NAME): string[] {
  const body = JSON.stringify({
    model: 'upper',
    messages: [{ role: 'user', content: 'hello world' }],
    max_tokens: 40,
    temperature: 0,
  });
  return [
    `demo tenant key (kept in the data dir's demo.json): ${demo.key}`,
    `demo adapters: ${Object.values(demo.adapters).join(', ')} (model ${servedModelName} echoes; see the README)`,
    'try:',
    `  curl -s ${url}/v1/chat/completions -H 'Authorization: Bearer ${demo.key}' \\`,
    `    -H 'Content-Type: application/json' -d '${body}'`,
  ];
}
