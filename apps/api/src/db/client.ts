// Opens the API's database: a Postgres server through node-postgres when a URL is given, else
// embedded PGlite in a data directory. Both are driven through the same drizzle query builder, and
// the migrations in apps/api/drizzle are applied at open.
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { drizzle as drizzlePg, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { migrate as migratePg } from 'drizzle-orm/node-postgres/migrator';
import { drizzle as drizzlePglite, type PgliteDatabase } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import pg from 'pg';
import * as schema from './schema.js';

export type Db = NodePgDatabase<typeof schema> | PgliteDatabase<typeof schema>;

export type DatabaseTarget = { databaseUrl: string } | { dataDir: string };

export interface OpenDatabase {
  db: Db;
  /** 'pg' or 'pglite', for messages. */
  kind: 'pg' | 'pglite';
  close(): Promise<void>;
}

/** apps/api/drizzle, from src/db (tsx, vitest) and from dist/db (built). */
export const MIGRATIONS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../drizzle');

export async function openDatabase(target: DatabaseTarget): Promise<OpenDatabase> {
  if ('databaseUrl' in target) {
    const pool = new pg.Pool({ connectionString: target.databaseUrl, max: 10, connectionTimeoutMillis: 5000 });
    // An idle client losing its connection (Postgres restarting) must not crash the process.
    pool.on('error', (err) => console.warn(`[api] postgres connection lost: ${err.message}`));
    const db = drizzlePg(pool, { schema });
    try {
      await migratePg(db, { migrationsFolder: MIGRATIONS_DIR });
    } catch (e) {
      await pool.end();
      throw e;
    }
    return { db, kind: 'pg', close: () => pool.end() };
  }
  const dir = resolve(target.dataDir);
  await mkdir(dir, { recursive: true });
  const client = new PGlite(dir);
  const db = drizzlePglite(client, { schema });
  try {
    await migratePglite(db, { migrationsFolder: MIGRATIONS_DIR });
  } catch (e) {
    await client.close();
    throw e;
  }
  return { db, kind: 'pglite', close: () => client.close() };
}
