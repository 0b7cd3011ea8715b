// loraplex-api commands: `keys create --admin` prints a working platform admin key once and stores
// only its hash; bad invocations say what is wrong.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey } from '../src/auth/keys.js';
import { runCommand } from '../src/commands.js';
import { openDatabase } from '../src/db/client.js';
import { apiKeys } from '../src/db/schema.js';
import { call, makeTestApp, tempDirStore } from './helpers/setup.js';

describe('loraplex-api commands', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lpx-cli-'));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('keys create --admin prints a key that works as the platform admin', async () => {
    const lines: string[] = [];
    await runCommand(['keys', 'create', '--admin'], { LORAPLEX_DATA_DIR: dataDir }, (l) => lines.push(l));
    const key = /lpx_[0-9a-f]{8}_[0-9a-f]{32}/.exec(lines.join('\n'))?.[0];
    expect(key).toBeDefined();
    const db = await openDatabase({ dataDir: join(dataDir, 'pg') });
    const store = await tempDirStore();
    try {
      const [row] = await db.db
        .select()
        .from(apiKeys)
        .where(eq(apiKeys.hash, hashKey(key!)));
      expect(row).toMatchObject({ tenantId: null, scopes: ['admin'] });
      const t = makeTestApp(db.db, store.store, { adminKey: undefined as never });
      expect((await call(t.app, 'POST', '/v1/tenants', { key: key!, json: { name: 'from-cli' } })).status).toBe(201);
    } finally {
      await db.close();
      await store.cleanup();
    }
  });

  it('refuses bad invocations with the usage', async () => {
    await expect(runCommand(['keys', 'create'], { LORAPLEX_DATA_DIR: dataDir })).rejects.toThrow(/keys create --admin/);
    await expect(runCommand(['stack'], { LORAPLEX_DATA_DIR: dataDir })).rejects.toThrow(/--model/);
    await expect(runCommand(['serve'], { PORT: 'abc' })).rejects.toThrow(/PORT must be an integer/);
    await expect(runCommand(['launch'])).rejects.toThrow(/unknown command launch/);
  });
});
