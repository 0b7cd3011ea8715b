// The API's Postgres schema (drizzle-orm). Migrations are generated from this file by drizzle-kit
// into apps/api/drizzle and applied at start, on a real server (pg) and on PGlite alike.
import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  boolean,
  index,
  integer,
  jsonb,
  pgTable,
  real,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core';

export const tenants = pgTable('tenants', {
  id: text('id').primaryKey(), // tn_<hex>
  name: text('name').notNull().unique(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

export type Scope = 'inference' | 'adapters:write' | 'admin';

export const apiKeys = pgTable('api_keys', {
  id: text('id').primaryKey(), // key_<hex>
  /** null: the platform admin (manages tenants and every key). */
  tenantId: text('tenant_id').references(() => tenants.id, { onDelete: 'cascade' }),
  name: text('name'),
  /** The 8 characters shown in lists (lpx_<prefix>_...). */
  prefix: text('prefix').notNull().unique(),
  /** sha256 hex of the whole key; the key itself is never stored. */
  hash: text('hash').notNull().unique(),
  scopes: text('scopes').array().notNull().$type<Scope[]>(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  revokedAt: timestamp('revoked_at', { withTimezone: true }),
  lastUsedAt: timestamp('last_used_at', { withTimezone: true }),
});

/** Base models, as reported by worker heartbeats (config.json verbatim): uploads are validated against them. */
export const baseModels = pgTable('base_models', {
  id: text('id').primaryKey(), // the workers' served model name
  config: jsonb('config').notNull().$type<Record<string, unknown>>(),
  maxLoraRank: integer('max_lora_rank').notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

export interface StoredFile {
  name: string;
  size: number;
  sha256: string;
}

export type AdapterStatus = 'uploading' | 'ready' | 'failed';

export const adapters = pgTable(
  'adapters',
  {
    id: text('id').primaryKey(), // ad_<hex>
    tenantId: text('tenant_id')
      .notNull()
      .references(() => tenants.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    version: integer('version').notNull(),
    baseModel: text('base_model').notNull(),
    status: text('status').notNull().$type<AdapterStatus>(),
    failureReason: text('failure_reason'),
    rank: integer('rank'),
    alpha: real('alpha'),
    targetModules: text('target_modules').array().$type<string[]>(),
    sizeBytes: bigint('size_bytes', { mode: 'number' }),
    /** sha256 over the files' sha256 lines ("<sha256>  <name>\n", sorted by name). */
    sha256: text('sha256'),
    /** Object-store prefix (S3) or directory (embedded) holding the files, chosen by the API. */
    storageKey: text('storage_key').notNull(),
    files: jsonb('files').$type<StoredFile[]>(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('adapters_tenant_name_version').on(t.tenantId, t.name, t.version),
    index('adapters_tenant').on(t.tenantId),
  ],
);

/** A presigned multipart upload in progress (S3 upload ids per file). */
export const uploadSessions = pgTable('upload_sessions', {
  id: text('id').primaryKey(), // up_<hex>
  tenantId: text('tenant_id')
    .notNull()
    .references(() => tenants.id, { onDelete: 'cascade' }),
  adapterId: text('adapter_id')
    .notNull()
    .references(() => adapters.id, { onDelete: 'cascade' }),
  files: jsonb('files')
    .notNull()
    .$type<Array<{ name: string; size: number; partSize: number; parts: number; uploadId: string }>>(),
  expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

export interface WorkerCapacity {
  adapter_slots: number;
  host_adapters: number;
  kv_blocks: number;
  max_batch_tokens: number;
}
export interface WorkerLoad {
  running: number;
  waiting: number;
  kv_free_blocks: number;
}

export const workers = pgTable('workers', {
  id: text('id').primaryKey(),
  url: text('url').notNull(),
  baseModel: text('base_model').notNull(),
  capacity: jsonb('capacity').notNull().$type<WorkerCapacity>(),
  load: jsonb('load').notNull().$type<WorkerLoad>(),
  /** In an engine slot or the host-memory tier (what the column always held). */
  residentAdapters: text('resident_adapters').array().notNull().$type<string[]>(),
  /** In an engine slot: served without a load (routing affinity prefers these). */
  slotAdapters: text('slot_adapters')
    .array()
    .notNull()
    .default(sql`'{}'::text[]`)
    .$type<string[]>(),
  draining: boolean('draining').notNull().default(false),
  lastHeartbeat: timestamp('last_heartbeat', { withTimezone: true }).notNull().defaultNow(),
});

export const usageEvents = pgTable(
  'usage_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    tenantId: text('tenant_id')
      .notNull()
      .references(() => tenants.id, { onDelete: 'cascade' }),
    /** null for the base model. Kept after the adapter is deleted (usage is history). */
    adapterId: text('adapter_id'),
    adapterRef: text('adapter_ref'),
    baseModel: text('base_model').notNull(),
    route: text('route').notNull(),
    status: integer('status').notNull(),
    promptTokens: integer('prompt_tokens').notNull(),
    completionTokens: integer('completion_tokens').notNull(),
    latencyMs: real('latency_ms').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true })
      .notNull()
      .default(sql`now()`),
  },
  (t) => [index('usage_tenant_time').on(t.tenantId, t.createdAt)],
);
