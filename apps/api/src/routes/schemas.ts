// The zod schemas of the public API: request validation and the OpenAPI document come from these.
import { z } from '@hono/zod-openapi';

export const ErrorSchema = z
  .object({ error: z.object({ message: z.string(), type: z.string(), code: z.string() }) })
  .openapi('Error');

const errorResponse = (description: string) => ({ content: { 'application/json': { schema: ErrorSchema } }, description });

/** The error responses every authenticated route may give. */
export const authErrors = {
  400: errorResponse('Invalid request'),
  401: errorResponse('Missing, unknown or revoked API key'),
  403: errorResponse('The key lacks the scope this route needs'),
} as const;

export const errors = {
  404: errorResponse('Not found (also: another tenant\'s resource)'),
  409: errorResponse('Conflict'),
  413: errorResponse('Payload too large'),
  422: errorResponse('Adapter invalid'),
  429: errorResponse('Rate limited (Retry-After)'),
  503: errorResponse('Overloaded or a dependency unreachable (Retry-After)'),
} as const;

export const jsonBody = <T extends z.ZodType>(schema: T, description?: string) => ({
  required: true,
  content: { 'application/json': { schema } },
  ...(description ? { description } : {}),
});

export const jsonResponse = <T extends z.ZodType>(schema: T, description: string) => ({ content: { 'application/json': { schema } }, description });

export const ScopeSchema = z.enum(['inference', 'adapters:write', 'admin']);

export const TenantSchema = z
  .object({ id: z.string(), object: z.literal('tenant'), name: z.string(), created_at: z.string() })
  .openapi('Tenant');

export const CreateTenantSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$/, 'a tenant name is 1-128 letters, digits, spaces or . _ - characters').openapi({ example: 'acme' }),
});

export const ApiKeySchema = z
  .object({
    id: z.string(),
    object: z.literal('api_key'),
    prefix: z.string(),
    name: z.string().nullable(),
    scopes: z.array(ScopeSchema),
    tenant_id: z.string().nullable(),
    created_at: z.string(),
    revoked_at: z.string().nullable(),
    last_used_at: z.string().nullable(),
  })
  .openapi('ApiKey');

export const CreatedKeySchema = ApiKeySchema.omit({ revoked_at: true, last_used_at: true })
  .extend({ key: z.string().openapi({ description: 'The key itself: shown only in this response' }) })
  .openapi('CreatedApiKey');

export const CreateKeySchema = z.strictObject({
  name: z.string().min(1).max(128).optional(),
  scopes: z
    .array(ScopeSchema)
    .min(1)
    .refine((s) => new Set(s).size === s.length, 'scopes must not repeat')
    .optional()
    .openapi({ description: "default ['inference', 'adapters:write']" }),
  tenant_id: z.string().optional().openapi({ description: 'required for the platform admin' }),
});

export const AdapterSchema = z
  .object({
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
    status: z.enum(['ready', 'failed', 'uploading']),
    failure_reason: z.string().nullable(),
    created_at: z.string(),
  })
  .openapi('Adapter');

export const DeletedSchema = (object: string) => z.object({ id: z.string(), object: z.literal(object), deleted: z.literal(true) });

export const listOf = <T extends z.ZodType>(item: T) => z.object({ object: z.literal('list'), data: z.array(item) });

export const CreateUploadSchema = z.strictObject({
  name: z.string(),
  base_model: z.string().optional(),
  files: z.array(z.strictObject({ name: z.string(), size: z.number().int().min(0) })).min(1).max(8),
});

export const UploadSchema = z
  .object({
    upload_id: z.string(),
    expires_at: z.string(),
    files: z.array(z.object({ name: z.string(), part_size: z.number().int(), parts: z.array(z.object({ part_number: z.number().int(), url: z.string() })) })),
  })
  .openapi('Upload');

export const CompleteUploadSchema = z.strictObject({
  files: z
    .array(z.strictObject({ name: z.string(), parts: z.array(z.strictObject({ part_number: z.number().int().min(1).max(10_000), etag: z.string().min(1).max(256) })).min(1).max(10_000) }))
    .min(1)
    .max(8),
});

export const ModelSchema = z
  .object({ id: z.string(), object: z.literal('model'), created: z.number().int(), owned_by: z.string(), root: z.string(), parent: z.string().nullable() })
  .openapi('Model');

export const UsageRowSchema = z
  .object({
    adapter: z.string().nullable(),
    base_model: z.string(),
    period_start: z.string(),
    requests: z.number().int(),
    prompt_tokens: z.number().int(),
    completion_tokens: z.number().int(),
    avg_latency_ms: z.number(),
  })
  .openapi('UsageRow');
