// The public API's resources (tenants, keys, adapters, uploads, models, usage) and the bodies that
// create them. The API adds its OpenAPI names and examples to these; the SDK's types come from them.
import { z } from 'zod';

export const scope = z.enum(['inference', 'adapters:write', 'admin']);
export type Scope = z.infer<typeof scope>;

/** The error body of every public API route (the OpenAI shape with a machine-readable string code). */
export const apiError = z.object({ error: z.object({ message: z.string(), type: z.string(), code: z.string() }) });
export type ApiErrorBody = z.infer<typeof apiError>;

export const tenant = z.object({
  id: z.string(),
  object: z.literal('tenant'),
  name: z.string(),
  created_at: z.string(),
});
export type Tenant = z.infer<typeof tenant>;

export const createTenant = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$/, 'a tenant name is 1-128 letters, digits, spaces or . _ - characters'),
});
export type CreateTenant = z.infer<typeof createTenant>;

export const apiKey = z.object({
  id: z.string(),
  object: z.literal('api_key'),
  prefix: z.string(),
  name: z.string().nullable(),
  scopes: z.array(scope),
  tenant_id: z.string().nullable(),
  created_at: z.string(),
  revoked_at: z.string().nullable(),
  last_used_at: z.string().nullable(),
});
export type ApiKey = z.infer<typeof apiKey>;

/** A key as created: the secret is shown only here. */
export const createdKey = apiKey.omit({ revoked_at: true, last_used_at: true }).extend({ key: z.string() });
export type CreatedKey = z.infer<typeof createdKey>;

export const createKey = z.strictObject({
  name: z.string().min(1).max(128).optional(),
  scopes: z
    .array(scope)
    .min(1)
    .refine((s) => new Set(s).size === s.length, 'scopes must not repeat')
    .optional(),
  tenant_id: z.string().optional(),
});
export type CreateKey = z.infer<typeof createKey>;

export const adapterStatus = z.enum(['ready', 'failed', 'uploading']);

export const adapter = z.object({
  id: z.string(),
  object: z.literal('adapter'),
  name: z.string(),
  version: z.number().int(),
  ref: z.string(),
  base_model: z.string(),
  rank: z.number().int().nullable(),
  alpha: z.number().nullable(),
  target_modules: z.array(z.string()).nullable(),
  size_bytes: z.number().int().nullable(),
  sha256: z.string().nullable(),
  status: adapterStatus,
  failure_reason: z.string().nullable(),
  created_at: z.string(),
});
export type Adapter = z.infer<typeof adapter>;

export const deleted = <O extends string>(object: O) =>
  z.object({ id: z.string(), object: z.literal(object), deleted: z.literal(true) });

export const listOf = <T extends z.ZodType>(item: T) => z.object({ object: z.literal('list'), data: z.array(item) });

export const createUpload = z.strictObject({
  name: z.string(),
  base_model: z.string().optional(),
  files: z
    .array(z.strictObject({ name: z.string(), size: z.number().int().min(0) }))
    .min(1)
    .max(8),
});
export type CreateUpload = z.infer<typeof createUpload>;

export const upload = z.object({
  upload_id: z.string(),
  expires_at: z.string(),
  files: z.array(
    z.object({
      name: z.string(),
      part_size: z.number().int(),
      parts: z.array(z.object({ part_number: z.number().int(), url: z.string() })),
    }),
  ),
});
export type Upload = z.infer<typeof upload>;

export const completeUpload = z.strictObject({
  files: z
    .array(
      z.strictObject({
        name: z.string(),
        parts: z
          .array(z.strictObject({ part_number: z.number().int().min(1).max(10_000), etag: z.string().min(1).max(256) }))
          .min(1)
          .max(10_000),
      }),
    )
    .min(1)
    .max(8),
});
export type CompleteUpload = z.infer<typeof completeUpload>;

export const model = z.object({
  id: z.string(),
  object: z.literal('model'),
  created: z.number().int(),
  owned_by: z.string(),
  root: z.string(),
  parent: z.string().nullable(),
});
export type Model = z.infer<typeof model>;

export const usageRow = z.object({
  adapter: z.string().nullable(),
  base_model: z.string(),
  period_start: z.string(),
  requests: z.number().int(),
  prompt_tokens: z.number().int(),
  completion_tokens: z.number().int(),
  avg_latency_ms: z.number(),
});
export type UsageRow = z.infer<typeof usageRow>;
