// Adapter routes: one-request uploads (archive or multipart form, streamed to disk), list, get and
// delete. Everything is scoped to the caller's tenant; another tenant's adapter is "not found".
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { adapterJson, checkAdapterName, parseRef, adapterNotFound } from '../adapters/catalog.js';
import { requireScope, tenantOf, type AuthEnv } from '../auth/middleware.js';
import { ApiError, badRequest } from '../errors.js';
import type { ArchiveFormat } from '../ports.js';
import type { App, Services } from '../services.js';
import { ByteLimit } from '../uploads/byte-limit.js';
import { receiveForm } from '../uploads/form-files.js';
import { asApiError, checkNotBaseModelName, resolveBaseModel } from '../uploads/ingest.js';
import { AdapterSchema, authErrors, DeletedSchema, ErrorSchema, errors, jsonResponse, listOf } from './schemas.js';

const security = [{ bearer: [] }];
const readers = requireScope(['inference', 'adapters:write'], { tenant: true });
const writers = requireScope(['adapters:write'], { tenant: true });

function uploadFormat(contentType: string): ArchiveFormat | 'form' | undefined {
  const ct = contentType.split(';')[0]!.trim().toLowerCase();
  if (ct === 'multipart/form-data') return 'form';
  if (ct === 'application/zip' || ct === 'application/x-zip-compressed') return 'zip';
  if (
    ct === 'application/gzip' ||
    ct === 'application/x-gzip' ||
    ct === 'application/x-tar+gzip' ||
    ct === 'application/x-gtar'
  )
    return 'tar.gz';
  if (ct === 'application/x-tar') return 'tar';
  return undefined;
}

/** POST /v1/adapters: the body streams through a byte limit into a temp directory, then is ingested. */
async function uploadAdapter(c: Context<AuthEnv>, s: Services): Promise<Response> {
  const tenantId = tenantOf(c.get('principal'));
  const format = uploadFormat(c.req.header('content-type') ?? '');
  if (!format)
    throw new ApiError(
      415,
      'unsupported_media_type',
      'send application/zip, application/gzip (tar.gz), application/x-tar or multipart/form-data',
    );
  const allowed = new Set(['name', 'base_model']);
  for (const k of Object.keys(c.req.query()))
    if (!allowed.has(k)) throw badRequest(`unknown query parameter ${JSON.stringify(k)}`);
  const qName = c.req.query('name');
  const qBase = c.req.query('base_model');
  if (format !== 'form' && qName === undefined) throw badRequest('name is required (?name=NAME)', 'missing_name');
  if (qName !== undefined) await checkNotBaseModelName(s.routing.registry, checkAdapterName(qName));
  if (qBase !== undefined || format !== 'form') await resolveBaseModel(s.routing.registry, qBase); // fail before reading the body

  const max = s.config.upload.maxUploadBytes;
  const declared = Number(c.req.header('content-length'));
  if (Number.isFinite(declared) && declared > max)
    throw new ApiError(413, 'payload_too_large', `the upload is larger than the limit of ${max} bytes`);
  const raw = c.req.raw.body;
  if (!raw) throw badRequest('the request has no body', 'empty_body');
  const limit = new ByteLimit(max);
  // Errors reach the consumer (and limit.exceeded); this listener only keeps a late one from being unhandled.
  limit.on('error', () => undefined);
  const source = Readable.fromWeb(raw as import('node:stream/web').ReadableStream<Uint8Array>);
  pipeline(source, limit).catch(() => undefined);
  const body = limit;
  let tooLarge = false;

  try {
    const row = await s.ingest.ingest(tenantId, async (dir) => {
      if (format === 'form') {
        const form = await receiveForm(body, c.req.header('content-type')!, dir, max);
        const name = form.fields.name ?? qName;
        if (name === undefined) throw badRequest('name is required (a form field or ?name=NAME)', 'missing_name');
        if (form.fields.name !== undefined && qName !== undefined && form.fields.name !== qName)
          throw badRequest('name is given twice, differently');
        return { name: checkAdapterName(name), baseModel: form.fields.base_model ?? qBase };
      }
      try {
        await s.validation.extractArchive(body, format, dir, {
          maxFiles: s.config.upload.maxFiles,
          maxUncompressedBytes: max,
        });
      } catch (e) {
        throw asApiError(e);
      }
      return { name: qName!, baseModel: qBase };
    });
    return c.json(adapterJson(row), 201);
  } catch (e) {
    tooLarge = limit.exceeded || (e instanceof ApiError && e.status === 413);
    // The rest of an oversized upload is not read: the connection closes after the 413, so the
    // client stops sending instead of pushing the remainder into a socket nobody drains.
    if (tooLarge)
      throw new ApiError(413, 'payload_too_large', (limit.exceeded ? limit.error() : (e as Error)).message, {
        connection: 'close',
      });
    throw e;
  } finally {
    // Drain what nobody read of a small refused body (keep-alive), but stop an oversized upload at once.
    if (tooLarge) body.destroy(limit.error());
    else if (!body.destroyed) body.resume();
  }
}

export function registerAdapterRoutes(app: App, s: Services): void {
  app.post('/v1/adapters', writers, (c) => uploadAdapter(c, s));
  app.openAPIRegistry.registerPath({
    method: 'post',
    path: '/v1/adapters',
    tags: ['adapters'],
    security,
    summary: 'Upload an adapter in one streamed request',
    description:
      'A zip, tar.gz or tar of the PEFT adapter directory, or a multipart form with fields name, base_model and files adapter_config.json, adapter_model.safetensors or adapter_model.bin (optional tokenizer_config.json). Uploading an existing name creates its next version.',
    request: {
      query: z.object({ name: z.string().optional(), base_model: z.string().optional() }),
      body: {
        required: true,
        content: {
          'application/zip': { schema: z.string().openapi({ format: 'binary' }) },
          'application/gzip': { schema: z.string().openapi({ format: 'binary' }) },
          'application/x-tar': { schema: z.string().openapi({ format: 'binary' }) },
          'multipart/form-data': {
            schema: z.object({
              name: z.string(),
              base_model: z.string().optional(),
              'adapter_config.json': z.string().openapi({ format: 'binary' }),
              'adapter_model.safetensors': z.string().openapi({ format: 'binary' }),
            }),
          },
        },
      },
    },
    responses: {
      201: jsonResponse(AdapterSchema, 'The adapter, validated and ready'),
      ...authErrors,
      413: errors[413],
      415: { content: { 'application/json': { schema: ErrorSchema } }, description: 'Unsupported content type' },
      422: errors[422],
    },
  });

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/adapters',
      tags: ['adapters'],
      summary: "List the tenant's adapters",
      security,
      middleware: readers,
      responses: { 200: jsonResponse(listOf(AdapterSchema), 'Adapters, every version'), ...authErrors },
    }),
    async (c) => {
      const rows = await s.catalog.list(tenantOf(c.get('principal')));
      return c.json({ object: 'list' as const, data: rows.map(adapterJson) as z.infer<typeof AdapterSchema>[] }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/adapters/{ref}',
      tags: ['adapters'],
      summary: 'Get an adapter by name (latest ready), name@version or id',
      security,
      middleware: readers,
      request: { params: z.object({ ref: z.string() }) },
      responses: { 200: jsonResponse(AdapterSchema, 'The adapter'), ...authErrors, 404: errors[404] },
    }),
    async (c) => {
      const row = await s.catalog.get(tenantOf(c.get('principal')), c.req.valid('param').ref);
      return c.json(adapterJson(row) as z.infer<typeof AdapterSchema>, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/adapters/{ref}',
      tags: ['adapters'],
      summary: 'Delete an adapter: a name deletes every version, name@version or id one',
      security,
      middleware: writers,
      request: { params: z.object({ ref: z.string() }) },
      responses: { 200: jsonResponse(DeletedSchema('adapter'), 'Deleted'), ...authErrors, 404: errors[404] },
    }),
    async (c) => {
      const tenantId = tenantOf(c.get('principal'));
      const refText = c.req.valid('param').ref;
      const ref = parseRef(refText);
      const rows = ref ? await s.catalog.find(tenantId, ref) : [];
      if (rows.length === 0) throw adapterNotFound(refText);
      // Open presigned uploads first (their parts live outside the adapter's prefix); then the rows,
      // so nothing can resolve the adapter; then the files (the orphan sweeper retries a failure).
      await s.uploads.abortForAdapters(
        tenantId,
        rows.map((r) => r.id),
      );
      await s.catalog.deleteRows(
        tenantId,
        rows.map((r) => r.id),
      );
      for (const r of rows)
        await s.store
          .delete(r.storageKey)
          .catch((e: Error) => console.warn(`[api] could not remove ${r.storageKey} (the sweeper will): ${e.message}`));
      return c.json({ id: rows[0]!.id, object: 'adapter' as const, deleted: true as const }, 200);
    },
  );
}
