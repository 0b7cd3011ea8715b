// client.adapters: upload (one streamed multipart request below `multipartThreshold`, presigned
// multipart part uploads above it), list, get, delete.
import { discard, json, send, type HttpOptions } from './http.js';
import type { Adapter } from './types.js';

export interface UploadFile {
  /** adapter_config.json, adapter_model.safetensors, adapter_model.bin or tokenizer_config.json */
  name: string;
  /** Contents, or (Node) a path to read from. */
  data: Blob | Uint8Array | string;
}

export interface UploadProgress {
  phase: 'uploading' | 'validating' | 'done';
  loaded: number;
  total: number;
}

export interface UploadOptions {
  name: string;
  baseModel?: string;
  onProgress?: (p: UploadProgress) => void;
  /** Bytes from which the presigned multipart path is used. Default 64 MiB. */
  multipartThreshold?: number;
  signal?: AbortSignal;
}

const ADAPTER_FILES = [
  'adapter_config.json',
  'adapter_model.safetensors',
  'adapter_model.bin',
  'tokenizer_config.json',
];

async function toBlob(data: Blob | Uint8Array | string): Promise<Blob> {
  if (typeof data !== 'string') return data instanceof Blob ? data : new Blob([data as Uint8Array<ArrayBuffer>]);
  // Node only: a file on disk, read as it is sent (never whole in memory).
  const fs = await import('node:fs');
  return fs.openAsBlob(data);
}

async function filesOf(input: string | UploadFile[]): Promise<Array<{ name: string; blob: Blob }>> {
  if (typeof input !== 'string')
    return Promise.all(input.map(async (f) => ({ name: f.name, blob: await toBlob(f.data) })));
  const [{ readdir }, { join }] = await Promise.all([import('node:fs/promises'), import('node:path')]);
  const names = (await readdir(input)).filter((n) => ADAPTER_FILES.includes(n)).sort();
  return Promise.all(names.map(async (name) => ({ name, blob: await toBlob(join(input, name)) })));
}

/** A multipart/form-data body streamed from the files, reporting bytes as the server reads them. */
function multipartBody(
  fields: Record<string, string>,
  files: Array<{ name: string; blob: Blob }>,
  onBytes: (n: number) => void,
): { body: ReadableStream<Uint8Array>; boundary: string } {
  const boundary = `loraplex${Math.random().toString(16).slice(2)}${Date.now().toString(16)}`;
  const enc = new TextEncoder();
  const pieces: Array<Uint8Array | Blob> = [];
  for (const [k, v] of Object.entries(fields))
    pieces.push(enc.encode(`--${boundary}\r\ncontent-disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
  for (const f of files) {
    pieces.push(
      enc.encode(
        `--${boundary}\r\ncontent-disposition: form-data; name="${f.name}"; filename="${f.name}"\r\ncontent-type: application/octet-stream\r\n\r\n`,
      ),
      f.blob,
      enc.encode('\r\n'),
    );
  }
  pieces.push(enc.encode(`--${boundary}--\r\n`));
  let i = 0;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  const body = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      for (;;) {
        if (reader) {
          const { value, done } = await reader.read();
          if (!done) {
            onBytes(value.byteLength);
            ctrl.enqueue(value);
            return;
          }
          reader = undefined;
        }
        const p = pieces[i++];
        if (p === undefined) {
          ctrl.close();
          return;
        }
        if (p instanceof Uint8Array) {
          ctrl.enqueue(p);
          return;
        }
        reader = p.stream().getReader() as ReadableStreamDefaultReader<Uint8Array>;
      }
    },
  });
  return { body, boundary };
}

export class Adapters {
  constructor(private readonly h: HttpOptions) {}

  /** Uploads a PEFT adapter directory (Node: a path) or its files; resolves once it is validated. */
  async upload(input: string | UploadFile[], o: UploadOptions): Promise<Adapter> {
    const files = await filesOf(input);
    const total = files.reduce((s, f) => s + f.blob.size, 0);
    const progress = (phase: UploadProgress['phase'], loaded: number): void => o.onProgress?.({ phase, loaded, total });
    const adapter =
      total >= (o.multipartThreshold ?? 64 * 2 ** 20)
        ? await this.uploadMultipart(files, total, o, progress)
        : await this.uploadDirect(files, o, progress);
    progress('done', total);
    return adapter;
  }

  private async uploadDirect(
    files: Array<{ name: string; blob: Blob }>,
    o: UploadOptions,
    progress: (phase: UploadProgress['phase'], loaded: number) => void,
  ): Promise<Adapter> {
    let loaded = 0;
    const fields: Record<string, string> = { name: o.name, ...(o.baseModel ? { base_model: o.baseModel } : {}) };
    const { body, boundary } = multipartBody(fields, files, (n) => progress('uploading', (loaded += n)));
    progress('uploading', 0);
    const res = await send(this.h, {
      path: '/v1/adapters',
      body,
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      maxRetries: 0,
      ...(o.signal ? { signal: o.signal } : {}),
    });
    return json<Adapter>(res);
  }

  private async uploadMultipart(
    files: Array<{ name: string; blob: Blob }>,
    total: number,
    o: UploadOptions,
    progress: (phase: UploadProgress['phase'], loaded: number) => void,
  ): Promise<Adapter> {
    const signal = o.signal ? { signal: o.signal } : {};
    const session = await json<{
      upload_id: string;
      files: Array<{ name: string; part_size: number; parts: Array<{ part_number: number; url: string }> }>;
    }>(
      await send(this.h, {
        path: '/v1/adapters/uploads',
        json: {
          name: o.name,
          ...(o.baseModel ? { base_model: o.baseModel } : {}),
          files: files.map((f) => ({ name: f.name, size: f.blob.size })),
        },
        ...signal,
      }),
    );
    try {
      let loaded = 0;
      progress('uploading', 0);
      const done: Array<{ name: string; parts: Array<{ part_number: number; etag: string }> }> = [];
      for (const f of session.files) {
        const blob = files.find((x) => x.name === f.name)!.blob;
        const parts: Array<{ part_number: number; etag: string }> = [];
        for (const p of f.parts) {
          const chunk = blob.slice((p.part_number - 1) * f.part_size, p.part_number * f.part_size);
          const res = await send(this.h, { method: 'PUT', path: '', url: p.url, body: chunk, ...signal });
          await discard(res);
          parts.push({ part_number: p.part_number, etag: res.headers.get('etag') ?? '' });
          progress('uploading', (loaded += chunk.size));
        }
        done.push({ name: f.name, parts });
      }
      progress('validating', total);
      return await json<Adapter>(
        await send(this.h, {
          path: `/v1/adapters/uploads/${encodeURIComponent(session.upload_id)}/complete`,
          json: { files: done },
          maxRetries: 0,
          ...signal,
        }),
      );
    } catch (e) {
      await send(this.h, {
        method: 'DELETE',
        path: `/v1/adapters/uploads/${encodeURIComponent(session.upload_id)}`,
        maxRetries: 0,
      }).then(discard, () => undefined);
      throw e;
    }
  }

  async list(): Promise<Adapter[]> {
    return (await json<{ data: Adapter[] }>(await send(this.h, { path: '/v1/adapters' }))).data;
  }

  /** `ref`: name (latest ready version), name@version, or id. */
  async get(ref: string): Promise<Adapter> {
    return json<Adapter>(await send(this.h, { path: `/v1/adapters/${encodeURIComponent(ref)}` }));
  }

  /** `name` deletes every version; `name@version` or an id deletes one. */
  async delete(ref: string): Promise<{ id: string; deleted: boolean }> {
    return json(await send(this.h, { method: 'DELETE', path: `/v1/adapters/${encodeURIComponent(ref)}` }));
  }
}
