// Presigned multipart uploads for large adapters: the client declares its files, PUTs the parts
// straight to the object store (S3 presigned UploadPart URLs, or the API itself on the embedded
// store), then completes. Completion assembles the objects, validates a downloaded copy, and marks
// the adapter ready; a failure removes the objects and marks the adapter failed with the reason.
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { and, eq, inArray, lt } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { adapters, uploadSessions } from '../db/schema.js';
import { ApiError, badRequest, notFound, tooLarge } from '../errors.js';
import { newAdapterId, newUploadId } from '../ids.js';
import type { ObjectStore } from '../storage/object-store.js';
import { checkAdapterName, type AdapterCatalog, type AdapterRow } from '../adapters/catalog.js';
import type { WorkerRegistryPort } from '../ports.js';
import { ADAPTER_FILE_NAMES } from './form-files.js';
import { adapterPrefix, type AdapterIngest, checkNotBaseModelName, resolveBaseModel } from './ingest.js';

const MAX_PARTS = 10_000;

export interface CreateUploadBody {
  name: string;
  base_model?: string | undefined;
  files: Array<{ name: string; size: number }>;
}

export interface CompleteUploadBody {
  files: Array<{ name: string; parts: Array<{ part_number: number; etag: string }> }>;
}

export interface PresignedDeps {
  db: Db;
  catalog: AdapterCatalog;
  store: ObjectStore;
  ingest: AdapterIngest;
  registry: WorkerRegistryPort;
  maxAdapterBytes: number;
  partSize: number;
  ttlS: number;
}

type Session = typeof uploadSessions.$inferSelect;

const uploadNotFound = (): ApiError => notFound('upload not found (completed, aborted or expired)', 'upload_not_found');

const SWEEP_EVERY_MS = 60_000;

export class PresignedUploads {
  private lastSweep = 0;

  constructor(private readonly d: PresignedDeps) {}

  /** Aborts every expired upload (its parts, session and adapter row); run now and then on create, and by the sweeper. */
  async sweepExpired(now = Date.now()): Promise<number> {
    this.lastSweep = Date.now();
    const expired = await this.d.db
      .select()
      .from(uploadSessions)
      .where(lt(uploadSessions.expiresAt, new Date(now)));
    for (const s of expired)
      await this.abort(s.tenantId, s.id).catch((e: Error) =>
        console.warn(`[api] could not remove expired upload ${s.id}: ${e.message}`),
      );
    return expired.length;
  }

  async create(tenantId: string, body: CreateUploadBody, origin: string): Promise<Record<string, unknown>> {
    if (Date.now() - this.lastSweep > SWEEP_EVERY_MS) void this.sweepExpired().catch(() => undefined);
    const name = checkAdapterName(body.name);
    const base = await resolveBaseModel(this.d.registry, body.base_model);
    await checkNotBaseModelName(this.d.registry, name);
    const seen = new Set<string>();
    let total = 0;
    for (const f of body.files) {
      if (!ADAPTER_FILE_NAMES.has(f.name))
        throw badRequest(
          `unexpected file ${JSON.stringify(f.name)}: send adapter_config.json, adapter_model.safetensors or adapter_model.bin, and optionally tokenizer_config.json`,
          'unexpected_file',
        );
      if (seen.has(f.name)) throw badRequest(`file ${f.name} is listed twice`, 'duplicate_file');
      seen.add(f.name);
      total += f.size;
    }
    if (!seen.has('adapter_config.json')) throw badRequest('files must include adapter_config.json', 'missing_file');
    if (!seen.has('adapter_model.safetensors') && !seen.has('adapter_model.bin'))
      throw badRequest('files must include adapter_model.safetensors or adapter_model.bin', 'missing_file');
    if (total > this.d.maxAdapterBytes)
      throw tooLarge(`the adapter's files total ${total} bytes, over the limit of ${this.d.maxAdapterBytes}`);

    const id = newAdapterId();
    const prefix = adapterPrefix(tenantId, id);
    const row = await this.d.catalog.insertNextVersion({
      id,
      tenantId,
      name,
      baseModel: base.id,
      status: 'uploading',
      storageKey: prefix,
    });
    const expiresAt = new Date(Date.now() + this.d.ttlS * 1000);
    const started: Array<{ name: string; size: number; partSize: number; parts: number; uploadId: string }> = [];
    try {
      for (const f of body.files) {
        const partSize = Math.max(this.d.partSize, Math.ceil(f.size / MAX_PARTS));
        const parts = Math.max(1, Math.ceil(f.size / partSize));
        started.push({
          name: f.name,
          size: f.size,
          partSize,
          parts,
          uploadId: await this.d.store.createMultipart(prefix + f.name),
        });
      }
      const uploadId = newUploadId();
      await this.d.db
        .insert(uploadSessions)
        .values({ id: uploadId, tenantId, adapterId: row.id, files: started, expiresAt });
      const files = [];
      for (const f of started) {
        const parts = [];
        for (let p = 1; p <= f.parts; p++) {
          const url = await this.d.store.presignPart({
            key: prefix + f.name,
            uploadId: f.uploadId,
            partNumber: p,
            expiresInS: this.d.ttlS,
            maxBytes: f.partSize,
            origin,
          });
          parts.push({ part_number: p, url });
        }
        files.push({ name: f.name, part_size: f.partSize, parts });
      }
      return { upload_id: uploadId, expires_at: expiresAt.toISOString(), files };
    } catch (e) {
      await this.discard(prefix, started);
      await this.d.catalog.deleteRows(tenantId, [row.id]);
      throw e;
    }
  }

  private async session(tenantId: string, uploadId: string): Promise<Session> {
    const [s] = await this.d.db
      .select()
      .from(uploadSessions)
      .where(and(eq(uploadSessions.tenantId, tenantId), eq(uploadSessions.id, uploadId)));
    if (!s) throw uploadNotFound();
    if (s.expiresAt.getTime() < Date.now()) {
      await this.abort(tenantId, uploadId);
      throw uploadNotFound();
    }
    return s;
  }

  private async discard(prefix: string, files: Array<{ name: string; uploadId: string }>): Promise<void> {
    for (const f of files) await this.d.store.abortMultipart(prefix + f.name, f.uploadId).catch(() => undefined);
    await this.d.store
      .delete(prefix)
      .catch((e: Error) => console.warn(`[api] could not remove ${prefix}: ${e.message}`));
  }

  async complete(tenantId: string, uploadId: string, body: CompleteUploadBody): Promise<AdapterRow> {
    const s = await this.session(tenantId, uploadId);
    const [row] = await this.d.db
      .select()
      .from(adapters)
      .where(and(eq(adapters.tenantId, tenantId), eq(adapters.id, s.adapterId)));
    if (!row) throw uploadNotFound();
    const declared = new Map(s.files.map((f) => [f.name, f]));
    const given = new Map(body.files.map((f) => [f.name, f]));
    if (given.size !== body.files.length) throw badRequest('a file is listed twice', 'duplicate_file');
    for (const name of given.keys())
      if (!declared.has(name))
        throw badRequest(`file ${JSON.stringify(name)} is not part of this upload`, 'unexpected_file');
    for (const f of s.files) {
      const parts = given.get(f.name)?.parts;
      if (!parts) throw badRequest(`file ${f.name} is missing from the completion`, 'missing_file');
      const numbers = parts.map((p) => p.part_number).sort((a, b) => a - b);
      if (numbers.length !== f.parts || numbers.some((n, i) => n !== i + 1))
        throw badRequest(`file ${f.name} needs parts 1..${f.parts}, each once`, 'invalid_part');
    }

    const dir = await this.d.ingest.tempDir();
    try {
      for (const f of s.files) {
        const parts = given.get(f.name)!.parts.map((p) => ({ partNumber: p.part_number, etag: p.etag }));
        await this.d.store.completeMultipart(row.storageKey + f.name, f.uploadId, parts);
      }
      // Validate what the store holds, not what the client says it sent.
      for (const f of s.files) {
        await pipeline(await this.d.store.get(row.storageKey + f.name), createWriteStream(join(dir, f.name)));
      }
      const base = await resolveBaseModel(this.d.registry, row.baseModel);
      const v = await this.d.ingest.validate(dir, base);
      for (const f of v.files) {
        const want = declared.get(f.name)?.size;
        if (want !== undefined && want !== f.size)
          throw new ApiError(422, 'adapter_invalid', `${f.name} is ${f.size} bytes, but ${want} were declared`);
      }
      // Files the validator did not keep are not part of the adapter.
      for (const f of s.files)
        if (!v.files.some((x) => x.name === f.name)) await this.d.store.delete(row.storageKey + f.name);
      const [ready] = await this.d.db
        .update(adapters)
        .set({
          status: 'ready',
          rank: v.rank,
          alpha: v.alpha,
          targetModules: v.targetModules,
          sizeBytes: v.sizeBytes,
          sha256: v.sha256,
          files: v.files,
          failureReason: null,
        })
        .where(eq(adapters.id, row.id))
        .returning();
      await this.d.db.delete(uploadSessions).where(eq(uploadSessions.id, s.id));
      return ready!;
    } catch (e) {
      await this.discard(row.storageKey, s.files);
      await this.d.db.delete(uploadSessions).where(eq(uploadSessions.id, s.id));
      const reason = e instanceof Error ? e.message : String(e);
      await this.d.db
        .update(adapters)
        .set({ status: 'failed', failureReason: reason.slice(0, 2000) })
        .where(eq(adapters.id, row.id));
      throw e;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Aborts the open uploads of adapters about to be deleted: their multipart uploads (and parts)
   * and sessions. An object store failure throws, so the deletion fails and can be retried rather
   * than leaving parts that nothing refers to any more.
   */
  async abortForAdapters(tenantId: string, adapterIds: string[]): Promise<void> {
    if (adapterIds.length === 0) return;
    const open = await this.d.db
      .select()
      .from(uploadSessions)
      .where(and(eq(uploadSessions.tenantId, tenantId), inArray(uploadSessions.adapterId, adapterIds)));
    for (const s of open) {
      const [row] = await this.d.db.select().from(adapters).where(eq(adapters.id, s.adapterId));
      if (row) for (const f of s.files) await this.d.store.abortMultipart(row.storageKey + f.name, f.uploadId);
      await this.d.db.delete(uploadSessions).where(eq(uploadSessions.id, s.id));
    }
  }

  async abort(tenantId: string, uploadId: string): Promise<void> {
    const [s] = await this.d.db
      .select()
      .from(uploadSessions)
      .where(and(eq(uploadSessions.tenantId, tenantId), eq(uploadSessions.id, uploadId)));
    if (!s) throw uploadNotFound();
    const [row] = await this.d.db.select().from(adapters).where(eq(adapters.id, s.adapterId));
    if (row) await this.discard(row.storageKey, s.files);
    await this.d.db.delete(uploadSessions).where(eq(uploadSessions.id, s.id));
    if (row && row.status === 'uploading') await this.d.catalog.deleteRows(tenantId, [row.id]);
  }
}
