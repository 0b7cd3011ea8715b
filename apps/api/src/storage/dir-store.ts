// The embedded object store: files under a local directory. Multipart uploads keep their parts in
// <root>/.uploads/<upload_id>/ until completed; presigned part URLs point at the API itself
// (PUT /v1/uploads/parts/<token>), the token being an HMAC-signed, expiring (key, upload, part).
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ApiError, badRequest, notFound, tooLarge } from '../errors.js';
import type { DescriptorStorage } from '../ports.js';
import {
  checkKey,
  type CompletedPart,
  type ObjectStore,
  type PresignPartOptions,
  type StoredObject,
} from './object-store.js';

interface PartToken {
  k: string;
  u: string;
  p: number;
  m: number;
  exp: number;
}

const UPLOAD_ID = /^[a-f0-9]{32}$/;

export class DirStore implements ObjectStore {
  readonly kind = 'dir' as const;
  readonly root: string;

  /** `secret` signs part URLs (the worker secret or a random per-process one). */
  constructor(
    root: string,
    private readonly secret: string,
  ) {
    this.root = resolve(root);
  }

  private path(key: string): string {
    return join(this.root, checkKey(key));
  }

  private uploadDir(uploadId: string): string {
    if (!UPLOAD_ID.test(uploadId)) throw notFound('no such upload', 'upload_not_found');
    return join(this.root, '.uploads', uploadId);
  }

  async put(key: string, body: Readable | Buffer, _size: number): Promise<void> {
    const dest = this.path(key);
    await mkdir(dirname(dest), { recursive: true });
    const tmp = `${dest}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : body, createWriteStream(tmp));
      await rename(tmp, dest);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  async get(key: string): Promise<Readable> {
    const p = this.path(key);
    await stat(p); // a missing object fails here, not on the first read
    return createReadStream(p);
  }

  async list(prefix: string): Promise<string[]> {
    return (await this.listObjects(prefix)).map((o) => o.key);
  }

  async listObjects(prefix: string): Promise<StoredObject[]> {
    const base = this.path(prefix.replace(/\/+$/, ''));
    const out: StoredObject[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return;
        throw e;
      }
      for (const ent of entries) {
        const p = join(dir, ent.name);
        if (ent.isDirectory()) await walk(p);
        else {
          // A temp file renamed or removed since readdir is simply not listed.
          const st = await stat(p).catch(() => undefined);
          if (st) out.push({ key: relative(this.root, p).split(sep).join('/'), modifiedAt: st.mtime });
        }
      }
    };
    await walk(base);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(prefix: string): Promise<void> {
    await rm(this.path(prefix.replace(/\/+$/, '')), { recursive: true, force: true });
    // Leave no empty tenant directory behind an adapter's removal.
    let dir = dirname(this.path(prefix.replace(/\/+$/, '')));
    while (dir.startsWith(this.root + sep)) {
      try {
        const left = await readdir(dir);
        if (left.length > 0) break;
        await rm(dir, { recursive: true });
      } catch {
        break;
      }
      dir = dirname(dir);
    }
  }

  async createMultipart(key: string): Promise<string> {
    checkKey(key);
    const uploadId = randomBytes(16).toString('hex');
    await mkdir(this.uploadDir(uploadId), { recursive: true });
    return uploadId;
  }

  private sign(payload: string): string {
    return createHmac('sha256', this.secret).update(`dir-part:${payload}`).digest('base64url');
  }

  async presignPart(o: PresignPartOptions): Promise<string> {
    const tok: PartToken = {
      k: checkKey(o.key),
      u: o.uploadId,
      p: o.partNumber,
      m: o.maxBytes,
      exp: Math.floor(Date.now() / 1000) + o.expiresInS,
    };
    const payload = Buffer.from(JSON.stringify(tok)).toString('base64url');
    return `${o.origin}/v1/uploads/parts/${payload}.${this.sign(payload)}`;
  }

  /** Verifies a part token (signature, expiry) and what it names. */
  verifyPartToken(token: string): PartToken {
    const [payload, sig, extra] = token.split('.');
    const denied = new ApiError(403, 'invalid_upload_url', 'the upload URL is invalid or has expired');
    if (!payload || !sig || extra !== undefined) throw denied;
    const want = Buffer.from(this.sign(payload));
    const got = Buffer.from(sig);
    if (want.length !== got.length || !timingSafeEqual(want, got)) throw denied;
    let tok: PartToken;
    try {
      tok = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as PartToken;
    } catch {
      throw denied;
    }
    if (typeof tok.exp !== 'number' || tok.exp < Date.now() / 1000) throw denied;
    return tok;
  }

  /** PUT of a part to a presigned URL: stores the bytes, returns the ETag (md5, as S3). */
  async acceptPart(token: string, body: Readable, contentLength: number | undefined): Promise<string> {
    const tok = this.verifyPartToken(token);
    const dir = this.uploadDir(tok.u);
    try {
      await stat(dir);
    } catch {
      throw notFound('no such upload (completed, aborted or expired)', 'upload_not_found');
    }
    if (contentLength !== undefined && contentLength > tok.m) throw tooLarge(`a part may hold at most ${tok.m} bytes`);
    const md5 = createHash('md5');
    let n = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        n += chunk.length;
        if (n > tok.m) return cb(tooLarge(`a part may hold at most ${tok.m} bytes`));
        md5.update(chunk);
        cb(null, chunk);
      },
    });
    const dest = join(dir, `${tok.p}`);
    const tmp = `${dest}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await pipeline(body, meter, createWriteStream(tmp));
      const etag = `"${md5.digest('hex')}"`;
      await rename(tmp, `${dest}.${etag.slice(1, -1)}`);
      // One stored copy per part number: a re-upload replaces the earlier one.
      for (const f of await readdir(dir))
        if (f.startsWith(`${tok.p}.`) && f !== `${tok.p}.${etag.slice(1, -1)}`) await rm(join(dir, f), { force: true });
      return etag;
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  async completeMultipart(key: string, uploadId: string, parts: CompletedPart[]): Promise<void> {
    const dir = this.uploadDir(uploadId);
    const dest = this.path(key);
    await mkdir(dirname(dest), { recursive: true });
    const tmp = `${dest}.${randomBytes(6).toString('hex')}.tmp`;
    const ordered = [...parts].sort((a, b) => a.partNumber - b.partNumber);
    const files: string[] = [];
    for (const p of ordered) {
      const f = join(dir, `${p.partNumber}.${p.etag.replace(/"/g, '')}`);
      try {
        await stat(f);
      } catch {
        throw badRequest(
          `part ${p.partNumber} of ${key.split('/').pop()} was not uploaded or its ETag differs`,
          'invalid_part',
        );
      }
      files.push(f);
    }
    try {
      const ws = createWriteStream(tmp);
      for (const f of files) await pipeline(createReadStream(f), ws, { end: false });
      await new Promise<void>((res, rej) => ws.end((err?: Error | null) => (err ? rej(err) : res())));
      await rename(tmp, dest);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    await rm(dir, { recursive: true, force: true });
  }

  async abortMultipart(_key: string, uploadId: string): Promise<void> {
    await rm(this.uploadDir(uploadId), { recursive: true, force: true });
  }

  descriptorStorage(storageKey: string): DescriptorStorage {
    return { kind: 'dir', path: this.path(storageKey.replace(/\/+$/, '')) };
  }
}
