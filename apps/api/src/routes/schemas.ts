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

export const ErrorSchema = apiError.openapi('Error');

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

export { listOf };

export const ScopeSchema = scope;

export const TenantSchema = tenant.openapi('Tenant');

export const CreateTenantSchema = createTenant.extend({ name: createTenant.shape.name.openapi({ example: 'acme' }) });

export const ApiKeySchema = apiKey.openapi('ApiKey');

export const CreatedKeySchema = createdKey
  .extend({ key: createdKey.shape.key.openapi({ description: 'The key itself: shown only in this response' }) })
  .openapi('CreatedApiKey');

export const CreateKeySchema = createKey.extend({
  scopes: createKey.shape.scopes.openapi({ description: "default ['inference', 'adapters:write']" }),
  tenant_id: createKey.shape.tenant_id.openapi({ description: 'required for the platform admin' }),
});

export const AdapterSchema = adapter.openapi('Adapter');

export const DeletedSchema = deleted;

export const CreateUploadSchema = createUpload;

export const UploadSchema = upload.openapi('Upload');

export const CompleteUploadSchema = completeUpload;

export const ModelSchema = model.openapi('Model');

export const UsageRowSchema = usageRow.openapi('UsageRow');
