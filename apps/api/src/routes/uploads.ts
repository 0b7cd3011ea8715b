// Presigned multipart uploads: start, complete, abort; and, for the embedded store, the PUT target
// of its part URLs (the URL's signed token is the authorization).
import { Readable } from 'node:stream';
import { createRoute, z } from '@hono/zod-openapi';
import { adapterJson } from '../adapters/catalog.js';
import { requireScope, tenantOf } from '../auth/middleware.js';
import { notFound } from '../errors.js';
import type { App, Services } from '../services.js';
import { DirStore } from '../storage/dir-store.js';
import {
  AdapterSchema,
  authErrors,
  CompleteUploadSchema,
  CreateUploadSchema,
  errors,
  jsonBody,
  jsonResponse,
  UploadSchema,
} from './schemas.js';

const security = [{ bearer: [] }];
const writers = requireScope(['adapters:write'], { tenant: true });

/** The API's origin as the client reached it, unless configured. */
function originOf(url: string, configured: string | undefined): string {
  return configured ?? new URL(url).origin;
}

export function registerUploadRoutes(app: App, s: Services): void {
  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/adapters/uploads',
      tags: ['adapters'],
      summary: 'Start a presigned multipart upload',
      security,
      middleware: writers,
      request: { body: jsonBody(CreateUploadSchema) },
      responses: { 201: jsonResponse(UploadSchema, 'Part URLs to PUT the files to'), ...authErrors, 413: errors[413] },
    }),
    async (c) => {
      const out = await s.uploads.create(
        tenantOf(c.get('principal')),
        c.req.valid('json'),
        originOf(c.req.url, s.config.publicUrl),
      );
      return c.json(out as z.infer<typeof UploadSchema>, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/adapters/uploads/{id}/complete',
      tags: ['adapters'],
      summary: 'Complete an upload: assemble, validate, record',
      security,
      middleware: writers,
      request: { params: z.object({ id: z.string() }), body: jsonBody(CompleteUploadSchema) },
      responses: {
        201: jsonResponse(AdapterSchema, 'The adapter, validated and ready'),
        ...authErrors,
        404: errors[404],
        422: errors[422],
      },
    }),
    async (c) => {
      const row = await s.uploads.complete(tenantOf(c.get('principal')), c.req.valid('param').id, c.req.valid('json'));
      return c.json(adapterJson(row) as z.infer<typeof AdapterSchema>, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/adapters/uploads/{id}',
      tags: ['adapters'],
      summary: 'Abort an upload',
      security,
      middleware: writers,
      request: { params: z.object({ id: z.string() }) },
      responses: {
        200: jsonResponse(
          z.object({ id: z.string(), object: z.literal('upload'), deleted: z.literal(true) }),
          'Aborted',
        ),
        ...authErrors,
        404: errors[404],
      },
    }),
    async (c) => {
      const { id } = c.req.valid('param');
      await s.uploads.abort(tenantOf(c.get('principal')), id);
      return c.json({ id, object: 'upload' as const, deleted: true as const }, 200);
    },
  );

  app.openAPIRegistry.registerPath({
    method: 'put',
    path: '/v1/uploads/parts/{token}',
    tags: ['adapters'],
    summary: 'Upload one part (the URL from POST /v1/adapters/uploads; embedded store only)',
    description:
      'The token in the URL is the authorization (signed, expiring). With S3 storage, part URLs point at the bucket instead.',
    request: {
      params: z.object({ token: z.string() }),
      body: {
        required: true,
        content: { 'application/octet-stream': { schema: z.string().openapi({ format: 'binary' }) } },
      },
    },
    responses: {
      200: { description: 'Stored; the ETag header is what completion needs' },
      403: { description: 'Invalid or expired URL' },
      413: errors[413],
    },
  });
  // The embedded store's presigned part URLs. S3 part URLs point at the bucket instead.
  app.put('/v1/uploads/parts/:token', async (c) => {
    if (!(s.store instanceof DirStore)) throw notFound('not found');
    const raw = c.req.raw.body;
    const body = raw
      ? Readable.fromWeb(raw as import('node:stream/web').ReadableStream<Uint8Array>)
      : Readable.from([]);
    const len = c.req.header('content-length');
    const etag = await s.store.acceptPart(c.req.param('token'), body, len === undefined ? undefined : Number(len));
    return c.body(null, 200, { ETag: etag });
  });
}
