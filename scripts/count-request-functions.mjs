// Counts the functions of loraplex's own code that one warm request passes through, from the SDK's
// client.generate to the native step and back: the API, a worker and the SDK run in this one process
// (the worker over real HTTP, as in production), V8's precise coverage is reset just before one
// warm request and read just after it, and every function of our packages' dist/ files whose call
// count grew is counted ("named": those with a name, i.e. declared functions, methods and named
// arrows; the rest are inline callbacks). Functions of dependencies (hono, zod, pg, ...) and native
// C++ are not counted.
// "Warm": the adapter is resident in an engine slot and the worker is known to the API.
//
//   node scripts/count-request-functions.mjs [--list]
//
// Background timers (heartbeats every 2 s, sweeps) are pushed out of the measured window.
import { Session } from 'node:inspector/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, relative } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = resolve(import.meta.dirname, '..');
const load = (p) => import(pathToFileURL(join(root, p)).href);
const api = await load('apps/api/dist/index.js');
const worker = await load('apps/worker/dist/index.js');
const sdk = await load('packages/sdk/dist/index.js');

const fixtures = join(root, 'packages/engine/test/fixtures/hf-tiny/llama');
const dataDir = mkdtempSync(join(tmpdir(), 'lpx-count-'));
const adminKey = 'count-admin-key';
const workerSecret = 'count-worker-secret-0123456789abcdef';

const server = await api.startApiServer(api.defaultConfig({ dataDir, port: 0, adminKey, workerSecret }));
const w = await worker.startWorker({
  model: join(fixtures, 'base'),
  servedModelName: 'tiny-llama',
  backend: 'cpu',
  threads: 1,
  port: 0,
  apiUrl: server.url,
  workerSecret,
  heartbeatInterval: 3600,
});
const admin = new sdk.Loraplex({ baseURL: server.url, apiKey: adminKey });
const tenant = await admin.tenants.create('count');
const key = await admin.keys.create({ tenantId: tenant.id });
const client = new sdk.Loraplex({ baseURL: server.url, apiKey: key.key });
for (let i = 0; i < 100; i++) {
  if ((await client.models.list()).length > 0) break;
  await new Promise((r) => setTimeout(r, 50)); // the worker's first heartbeat registers the base model
}
const adapter = await client.adapters.upload(join(fixtures, 'adapters/lora_all_r8'), {
  name: 'a1',
  baseModel: 'tiny-llama',
});
const ask = () => client.generate('The license', { adapterId: adapter.id, maxTokens: 4, temperature: 0 });
await ask(); // cold: loads the adapter into a slot
await ask(); // warm, and every lazily created path exists

const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.startPreciseCoverage', { callCount: true, detailed: false });
await session.post('Profiler.takePreciseCoverage'); // resets the counts
await ask();
const { result } = await session.post('Profiler.takePreciseCoverage');
await session.post('Profiler.stopPreciseCoverage');

const ours = (url) =>
  url.startsWith('file://') && /\/(apps|packages)\/[^/]+\/dist\//.test(url) && !url.includes('/node_modules/');
const called = [];
let named = 0;
for (const script of result) {
  if (!ours(script.url)) continue;
  const file = relative(root, new URL(script.url).pathname);
  for (const fn of script.functions) {
    // The first range is the function's whole extent; its count is how often it was called.
    if (fn.ranges[0].count > 0 && fn.functionName !== '') {
      called.push(`${file} ${fn.functionName}`);
      named++;
    } else if (fn.ranges[0].count > 0 && fn.ranges[0].startOffset !== 0)
      called.push(`${file} (anonymous@${fn.ranges[0].startOffset})`);
  }
}
const byPackage = new Map();
for (const c of called) {
  const pkg = c.split('/').slice(0, 2).join('/');
  byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + 1);
}
if (process.argv.includes('--list')) for (const c of called.sort()) console.log(c);
console.log(JSON.stringify({ functions: called.length, named, byPackage: Object.fromEntries([...byPackage].sort()) }));

await w.drain();
await server.close(5000);
rmSync(dataDir, { recursive: true, force: true });
process.exit(0);
