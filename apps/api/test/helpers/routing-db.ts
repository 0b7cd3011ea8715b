// Databases for the routing tests: a fresh database with a random name on the real Postgres server
// (127.0.0.1:5432, trust auth) or an in-memory PGlite, both with the schema from src/db/schema.ts.
// Migrations come from apps/api/drizzle when it exists, else drizzle-kit generates them once into a
// temporary directory keyed by the schema's hash.
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import { migrate as migratePg } from 'drizzle-orm/node-postgres/migrator';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import pg from 'pg';
import * as schema from '../../src/db/schema.js';
import type { Db } from '../../src/worker-proxy/db.js';

export const API_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PG_HOST = '127.0.0.1';
export const PG_PORT = 5432;

export function migrationsDir(): string {
  const own = join(API_DIR, 'drizzle');
  if (existsSync(join(own, 'meta', '_journal.json'))) return own;
  const schemaFile = join(API_DIR, 'src', 'db', 'schema.ts');
  const hash = createHash('sha256').update(readFileSync(schemaFile)).digest('hex').slice(0, 16);
  const out = join(tmpdir(), `loraplex-routing-migrations-${hash}`);
  if (existsSync(join(out, 'meta', '_journal.json'))) return out;
  const kit = join(API_DIR, 'node_modules', '.bin', 'drizzle-kit');
  const r = spawnSync(kit, ['generate', '--dialect', 'postgresql', '--schema', schemaFile, '--out', out], {
    cwd: API_DIR,
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`drizzle-kit generate failed:\n${r.stdout}${r.stderr}`);
  return out;
}

export interface TestDb {
  db: Db;
  close(): Promise<void>;
}

export interface PgTestDb extends TestDb {
  name: string;
  pool: pg.Pool;
  /** A connection string for this database (optionally through another port, e.g. a proxy). */
  url(port?: number): string;
}

const adminUrl = `postgres://postgres@${PG_HOST}:${PG_PORT}/postgres`;

/** A new database on the real server; `port` lets the pool connect through a proxy. */
export async function openPgTestDb(opts: { port?: number; poolMax?: number } = {}): Promise<PgTestDb> {
  const name = `loraplex_routing_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = (port = PG_PORT): string => `postgres://postgres@${PG_HOST}:${port}/${name}`;
  const setup = new pg.Pool({ connectionString: url() });
  await migratePg(drizzlePg(setup, { schema }), { migrationsFolder: migrationsDir() });
  await setup.end();
  const pool = new pg.Pool({ connectionString: url(opts.port), max: opts.poolMax ?? 4, connectionTimeoutMillis: 1000 });
  // A connection torn down under an idle client must not crash the test process.
  pool.on('error', () => undefined);
  const db = drizzlePg(pool, { schema });
  return {
    db,
    name,
    pool,
    url,
    async close() {
      await pool.end().catch(() => undefined);
      const a = new pg.Client({ connectionString: adminUrl });
      await a.connect();
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

export async function openPgliteTestDb(): Promise<TestDb> {
  const client = new PGlite();
  const db = drizzlePglite(client, { schema });
  await migratePglite(db, { migrationsFolder: migrationsDir() });
  return { db, close: () => client.close() };
}

/** A tenant row (usage_events references tenants). */
export async function createTenant(db: Db, id = `tn_${randomBytes(8).toString('hex')}`): Promise<string> {
  await db.insert(schema.tenants).values({ id, name: `tenant-${id}` });
  return id;
}
