// From files on disk to a ready adapter: validate (the validation port), copy the validated files to
// the object store, record the row. On any failure nothing is left behind: no row, no object.
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import { ApiError, badRequest } from '../errors.js';
import { newAdapterId } from '../ids.js';
import {
  isAdapterValidationError,
  type AdapterValidation,
  type BaseModelRecord,
  type ValidatedAdapter,
  type WorkerRegistryPort,
} from '../ports.js';
import type { ObjectStore } from '../storage/object-store.js';
import { AdapterCatalog, type AdapterRow } from '../adapters/catalog.js';

export interface IngestDeps {
  catalog: AdapterCatalog;
  store: ObjectStore;
  validation: AdapterValidation;
  registry: WorkerRegistryPort;
  /** Largest adapter (all files) in bytes. */
  maxAdapterBytes: number;
  /** Where uploads are spooled; default the OS temp directory. */
  tmpRoot?: string;
}

export const adapterPrefix = (tenantId: string, adapterId: string): string => `adapters/${tenantId}/${adapterId}/`;

/** The base model an upload is for: the named one, or the only one there is. */
export async function resolveBaseModel(
  registry: WorkerRegistryPort,
  requested: string | undefined,
): Promise<BaseModelRecord> {
  const models = await registry.baseModels();
  if (requested !== undefined) {
    const m = models.find((x) => x.id === requested);
    if (!m)
      throw badRequest(
        `unknown base model ${JSON.stringify(requested)}; served: ${models.map((x) => x.id).join(', ') || 'none yet'}`,
        'unknown_base_model',
      );
    return m;
  }
  if (models.length === 1) return models[0]!;
  if (models.length === 0)
    throw badRequest('no base model is registered yet: start a worker, then upload', 'no_base_model');
  throw badRequest(
    `base_model is required: several base models are served (${models.map((x) => x.id).join(', ')})`,
    'base_model_required',
  );
}

/** An adapter may not take a base model's name: `model: <name>` would be ambiguous in inference. */
export async function checkNotBaseModelName(registry: WorkerRegistryPort, name: string): Promise<void> {
  if ((await registry.baseModels()).some((m) => m.id === name))
    throw badRequest(
      `${JSON.stringify(name)} is the name of a base model; choose another adapter name`,
      'invalid_adapter_name',
    );
}

/** Validation errors keep their status and code; 422 is the contract's adapter_invalid. */
export function asApiError(e: unknown): unknown {
  if (isAdapterValidationError(e)) {
    const status = e.status === 400 || e.status === 413 || e.status === 422 ? e.status : 422;
    return new ApiError(
      status,
      status === 422 ? 'adapter_invalid' : status === 413 ? 'payload_too_large' : e.code,
      e.message,
    );
  }
  return e;
}

/**
 * The error with the upload's temp directory taken out of its message: a file in it is named by
 * its name alone, so no client sees the server's paths (an fs error, say, names the full path).
 */
export function withoutDir(e: unknown, dir: string): unknown {
  if (e instanceof Error && e.message.includes(dir))
    e.message = e.message.split(`${dir}${sep}`).join('').split(dir).join('the upload');
  return e;
}

export class AdapterIngest {
  constructor(private readonly d: IngestDeps) {}

  async tempDir(): Promise<string> {
    return mkdtemp(join(this.d.tmpRoot ?? tmpdir(), 'loraplex-upload-'));
  }

  async validate(dir: string, base: BaseModelRecord): Promise<ValidatedAdapter> {
    try {
      return await this.d.validation.validateAdapterFiles(dir, {
        modelConfig: base.config,
        maxRank: base.maxLoraRank,
        maxBytes: this.d.maxAdapterBytes,
      });
    } catch (e) {
      throw withoutDir(asApiError(e), dir);
    }
  }

  /**
   * Validates the files in `dir` and, when they pass, stores them and records the next version of
   * `name`. The directory is the caller's to remove.
   */
  async ingestDir(tenantId: string, name: string, base: BaseModelRecord, dir: string): Promise<AdapterRow> {
    const v = await this.validate(dir, base);
    const id = newAdapterId();
    const prefix = adapterPrefix(tenantId, id);
    try {
      for (const f of v.files) await this.d.store.put(prefix + f.name, createReadStream(join(dir, f.name)), f.size);
      return await this.d.catalog.insertNextVersion({
        id,
        tenantId,
        name,
        baseModel: base.id,
        status: 'ready',
        rank: v.rank,
        alpha: v.alpha,
        targetModules: v.targetModules,
        sizeBytes: v.sizeBytes,
        sha256: v.sha256,
        storageKey: prefix,
        files: v.files,
      });
    } catch (e) {
      await this.d.store
        .delete(prefix)
        .catch((err: Error) => console.warn(`[api] could not remove ${prefix} after a failed upload: ${err.message}`));
      throw e;
    }
  }

  /** Runs `fill` into a fresh temp directory, then ingests it; the directory is always removed. */
  async ingest(
    tenantId: string,
    fill: (dir: string) => Promise<{ name: string; baseModel?: string | undefined }>,
  ): Promise<AdapterRow> {
    const dir = await this.tempDir();
    try {
      const got = await fill(dir).catch((e: unknown) => {
        throw withoutDir(e, dir);
      });
      const base = await resolveBaseModel(this.d.registry, got.baseModel);
      await checkNotBaseModelName(this.d.registry, got.name);
      return await this.ingestDir(tenantId, got.name, base, dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}
