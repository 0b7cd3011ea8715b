// The zod schemas of the public API: request validation and the OpenAPI document come from these.
// The resources and bodies are declared once in @loraplex/protocol; here they get their OpenAPI
// names, examples and descriptions (importing @hono/zod-openapi gives every zod schema .openapi()).
import { z } from '@hono/zod-openapi';
import {
  adapter,
  apiError,
  apiKey,
  completeUpload,
  createdKey,
  createKey,
  createTenant,
  createUpload,
  deleted,
  listOf,
  model,
  scope,
  tenant,
  upload,
  usageRow,
} from '@loraplex/protocol';

/**
 * `schema.openapi(...)` for a schema of @loraplex/protocol. zod 4 copies methods onto each schema as
 * it is built, so one built before @hono/zod-openapi extended zod (whichever module loaded first)
 * lacks .openapi(); the method on the prototype works on it all the same.
 */
export function openapi<T extends z.ZodType>(
  schema: T,
  ...args: [refId: string] | [metadata: Record<string, unknown>]
): T {
  return (z.ZodType.prototype.openapi as (...a: unknown[]) => T).apply(schema, args);
}

export const ErrorSchema = openapi(apiError, 'Error');

const errorResponse = (description: string) => ({
  content: { 'application/json': { schema: ErrorSchema } },
  description,
});

/** The error responses every authenticated route may give. */
export const authErrors = {
  400: errorResponse('Invalid request'),
  401: errorResponse('Missing, unknown or revoked API key'),
  403: errorResponse('The key lacks the scope this route needs'),
} as const;

export const errors = {
  404: errorResponse("Not found (also: another tenant's resource)"),
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

export const jsonResponse = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { 'application/json': { schema } },
  description,
});

export { listOf };

export const ScopeSchema = scope;

export const TenantSchema = openapi(tenant, 'Tenant');

export const CreateTenantSchema = createTenant.extend({ name: openapi(createTenant.shape.name, { example: 'acme' }) });

export const ApiKeySchema = openapi(apiKey, 'ApiKey');

export const CreatedKeySchema = openapi(
  createdKey.extend({
    key: openapi(createdKey.shape.key, { description: 'The key itself: shown only in this response' }),
  }),
  'CreatedApiKey',
);

export const CreateKeySchema = createKey.extend({
  scopes: openapi(createKey.shape.scopes, { description: "default ['inference', 'adapters:write']" }),
  tenant_id: openapi(createKey.shape.tenant_id, { description: 'required for the platform admin' }),
});

export const AdapterSchema = openapi(adapter, 'Adapter');

export const DeletedSchema = deleted;

export const CreateUploadSchema = createUpload;

export const UploadSchema = openapi(upload, 'Upload');

export const CompleteUploadSchema = completeUpload;

export const ModelSchema = openapi(model, 'Model');

export const UsageRowSchema = openapi(usageRow, 'UsageRow');
