// The database handle the routing modules are written against. A real server (node-postgres) and
// PGlite expose the same drizzle query builder. The shared declaration lives in src/db/client.ts
// (contract §5); this one is kept identical until the lead points the routing modules at it.
import type { NodePgDatabase } from 'drizzle-orm/node-postgres';
import type { PgliteDatabase } from 'drizzle-orm/pglite';
import type * as schema from '../db/schema.js';

export type Db = NodePgDatabase<typeof schema> | PgliteDatabase<typeof schema>;
